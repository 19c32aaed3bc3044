//! The schema registry: the one table that maps a schema id (as written in the Confluent wire
//! header) to its subject, version and `.avsc` text. Ids are never reused or renumbered.

use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::OnceLock;

/// One registered schema version.
#[derive(Debug, Clone, Copy)]
pub struct SchemaEntry {
    pub id: u32,
    pub subject: &'static str,
    pub version: u32,
    pub avsc: &'static str,
}

macro_rules! entry {
    ($id:expr, $subject:expr, $version:expr, $file:expr) => {
        SchemaEntry {
            id: $id,
            subject: $subject,
            version: $version,
            avsc: include_str!(concat!("../avro/", $file)),
        }
    };
}

/// Every schema Tally has ever written. The newest version of a subject is its reader schema.
pub const REGISTRY: &[SchemaEntry] = &[
    entry!(
        1,
        "tally.collect.CollectedEvent",
        1,
        "collected_event.v1.avsc"
    ),
    entry!(
        2,
        "tally.collect.CollectedEvent",
        2,
        "collected_event.v2.avsc"
    ),
    entry!(
        3,
        "tally.collect.EnrichedEvent",
        1,
        "enriched_event.v1.avsc"
    ),
    entry!(
        4,
        "tally.entities.WebsiteCreated",
        1,
        "website_created.v1.avsc"
    ),
    entry!(
        5,
        "tally.entities.WebsiteUpdated",
        1,
        "website_updated.v1.avsc"
    ),
    entry!(
        6,
        "tally.entities.WebsiteDeleted",
        1,
        "website_deleted.v1.avsc"
    ),
    entry!(7, "tally.entities.UserCreated", 1, "user_created.v1.avsc"),
    entry!(
        8,
        "tally.entities.ApiKeyCreated",
        1,
        "api_key_created.v1.avsc"
    ),
    entry!(
        9,
        "tally.entities.ApiKeyRevoked",
        1,
        "api_key_revoked.v1.avsc"
    ),
    entry!(10, "tally.ops.DeadLetter", 1, "dead_letter.v1.avsc"),
    entry!(
        11,
        "tally.entities.CompanyCreated",
        1,
        "company_created.v1.avsc"
    ),
    entry!(
        12,
        "tally.entities.CompanyUpdated",
        1,
        "company_updated.v1.avsc"
    ),
    entry!(
        13,
        "tally.entities.UserUpserted",
        1,
        "user_upserted.v1.avsc"
    ),
    entry!(
        14,
        "tally.entities.ApiKeyUpserted",
        1,
        "api_key_upserted.v1.avsc"
    ),
    entry!(
        15,
        "tally.entities.WebsiteCreated",
        2,
        "website_created.v2.avsc"
    ),
    entry!(
        16,
        "tally.entities.ConnectionUpserted",
        1,
        "connection_upserted.v1.avsc"
    ),
    entry!(
        17,
        "tally.entities.AssetUpserted",
        1,
        "asset_upserted.v1.avsc"
    ),
    entry!(18, "tally.entities.PriceSet", 1, "price_set.v1.avsc"),
    entry!(19, "tally.usage.UsageRecorded", 1, "usage_recorded.v1.avsc"),
    entry!(
        20,
        "tally.billing.LedgerEntryPosted",
        1,
        "ledger_entry_posted.v1.avsc"
    ),
    entry!(
        21,
        "tally.entities.FavoriteUpserted",
        1,
        "favorite_upserted.v1.avsc"
    ),
    entry!(22, "tally.entities.DiscountSet", 1, "discount_set.v1.avsc"),
    entry!(23, "tally.entities.PriceEnded", 1, "price_ended.v1.avsc"),
    entry!(
        24,
        "tally.entities.SubscriptionSet",
        1,
        "subscription_set.v1.avsc"
    ),
    entry!(25, "tally.usage.UsageRecorded", 2, "usage_recorded.v2.avsc"),
    entry!(
        26,
        "tally.entities.ApiKeyUpserted",
        2,
        "api_key_upserted.v2.avsc"
    ),
    entry!(
        27,
        "tally.entities.CompanyCreated",
        2,
        "company_created.v2.avsc"
    ),
    entry!(
        28,
        "tally.entities.AlertUpserted",
        1,
        "alert_upserted.v1.avsc"
    ),
    entry!(
        29,
        "tally.alerts.AlertTriggered",
        1,
        "alert_triggered.v1.avsc"
    ),
    entry!(
        30,
        "tally.entities.SubscriptionSet",
        2,
        "subscription_set.v2.avsc"
    ),
    entry!(
        31,
        "tally.entities.EndpointUpserted",
        1,
        "endpoint_upserted.v1.avsc"
    ),
    entry!(
        32,
        "tally.entities.SiteObjectUpserted",
        1,
        "site_object_upserted.v1.avsc"
    ),
];

struct Parsed {
    by_id: HashMap<u32, (SchemaEntry, Schema)>,
    newest: HashMap<&'static str, u32>,
}

fn parsed() -> &'static Parsed {
    static PARSED: OnceLock<Parsed> = OnceLock::new();
    PARSED.get_or_init(|| {
        // Keep decoders from allocating huge buffers when a length prefix is garbage.
        let _ = apache_avro::util::max_allocation_bytes(4 * 1024 * 1024);
        let mut by_id = HashMap::new();
        let mut newest: HashMap<&'static str, u32> = HashMap::new();
        for e in REGISTRY {
            // The registry is compiled in and covered by tests: a bad file is a build defect.
            #[allow(clippy::expect_used)]
            let schema = Schema::parse_str(e.avsc).expect("registered schema parses");
            by_id.insert(e.id, (*e, schema));
            let cur = newest.entry(e.subject).or_insert(e.id);
            if by_id[cur].0.version < e.version {
                *cur = e.id;
            }
        }
        Parsed { by_id, newest }
    })
}

/// The schema registered under `id`, if any.
pub fn schema_by_id(id: u32) -> Option<&'static Schema> {
    parsed().by_id.get(&id).map(|(_, s)| s)
}

pub(crate) fn entry_by_id(id: u32) -> Option<&'static SchemaEntry> {
    parsed().by_id.get(&id).map(|(e, _)| e)
}

/// The id of the newest version of `subject`.
pub(crate) fn newest_id(subject: &str) -> Option<u32> {
    parsed().newest.get(subject).copied()
}
