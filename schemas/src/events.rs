//! Rust types for every event on Tally's topics. Field names match the `.avsc` files exactly.

use serde::{Deserialize, Serialize};

/// An event accepted by `POST /api/collect`. IP-derived fields are computed at the edge so the
/// raw IP address never reaches the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CollectedEvent {
    pub event_id: String,
    pub website_id: String,
    pub received_at_ms: i64,
    pub timestamp_ms: i64,
    pub event_type: String,
    pub url: String,
    pub referrer: Option<String>,
    pub screen: Option<String>,
    pub language: Option<String>,
    pub event_name: Option<String>,
    /// JSON object, serialized.
    pub event_data: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub visitor_id: String,
    pub user_agent: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
}

/// A collected event after enrichment: parsed page, referrer domain, UTM, user agent, bot flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EnrichedEvent {
    pub event_id: String,
    pub website_id: String,
    pub received_at_ms: i64,
    pub timestamp_ms: i64,
    pub event_type: String,
    pub url: String,
    pub page: String,
    pub hostname: Option<String>,
    pub referrer: Option<String>,
    pub referrer_domain: Option<String>,
    pub screen: Option<String>,
    pub language: Option<String>,
    pub event_name: Option<String>,
    pub event_data: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub device_type: Option<String>,
    pub visitor_id: String,
    pub is_bot: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebsiteCreated {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub timezone: String,
    pub created_at_ms: i64,
    /// The owning company (v2). Websites from v1 events belong to the operator's company.
    #[serde(default)]
    pub company_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebsiteUpdated {
    pub id: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub timezone: Option<String>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebsiteDeleted {
    pub id: String,
    pub deleted_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreated {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_last4: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub id: String,
    pub revoked_at_ms: i64,
}

/// A company's whole state, as carried by the company events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyState {
    pub id: String,
    pub handle: String,
    pub domain: String,
    pub name: String,
    pub description: Option<String>,
    pub industry_id: Option<i32>,
    pub country_id: Option<i32>,
    /// The seller's share of revenue in basis points (8,500 = 85 %): integers, no float drift.
    pub vendor_share_bp: i32,
    pub partnership_type: Option<String>,
    pub accepted_eula: bool,
    pub is_operator: bool,
    pub timezone: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A user's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: String,
    pub company_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub role_id: i32,
    pub function_id: Option<i32>,
    /// `ACTIVE`, `PENDING`, `INACTIVE` or `BANNED`.
    pub status: String,
    pub timezone: String,
    pub marketing_opt_out: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An API key's whole state (the SHA-256 of the secret, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyState {
    /// The aggregate id; the integer `api_key_id` clients see is assigned by the projection in
    /// log order, so a replay assigns the same numbers.
    pub id: String,
    pub user_id: String,
    pub company_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_last4: String,
    /// `analytics`, `mcp` or `endpoint`.
    pub key_type: String,
    pub role_id: i32,
    pub is_system_generated: bool,
    pub endpoint_id: Option<String>,
    pub expires_at_ms: Option<i64>,
    /// False once deleted (deactivated) or revoked.
    pub active: bool,
    pub revoked_at_ms: Option<i64>,
    pub revoked_by: Option<String>,
    pub revocation_reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// `live` or `test` (since v2 of the events that carry a key; older keys are live). A
    /// test key's executions are never charged, return at most 10 rows and are metered apart.
    #[serde(default = "live_mode")]
    pub mode: String,
}

fn live_mode() -> String {
    "live".into()
}

/// A tenant company created together with its first admin and the admin's key. One event, so
/// the projection accepts or rejects the three together (a taken handle, domain or e-mail
/// rejects all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyCreated {
    pub event_id: String,
    pub company: CompanyState,
    pub admin: UserState,
    pub admin_key: ApiKeyState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyUpdated {
    pub event_id: String,
    pub company: CompanyState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpserted {
    pub event_id: String,
    pub user: UserState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyUpserted {
    pub event_id: String,
    pub key: ApiKeyState,
}

/// A connection to a seller's database. The credentials are sealed (AES-256-GCM, bound to the
/// connection id) before they reach the log: they are never on a topic in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub engine_id: i32,
    pub name: String,
    pub description: Option<String>,
    pub credential_type: String,
    pub provider_domain: Option<String>,
    pub credentials_sealed: String,
    pub verified_usage_ability: bool,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionUpserted {
    pub event_id: String,
    pub connection: ConnectionState,
}

/// An analytics asset: one read-only query over a connection, executed in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetState {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub connection_id: String,
    pub name: String,
    /// Unique per company; the `{asset_slug}` of `/analyze/{company_handle}/assets/{asset_slug}`.
    pub slug: String,
    pub description: Option<String>,
    /// `CALCULATION`, `VISUALIZATION` or `DATA`.
    pub asset_type: String,
    /// `PRIVATE` or `SHARED`.
    pub visibility: String,
    pub sell_in_marketplace: bool,
    pub allow_params: bool,
    /// `MANUAL` or `AUTOMATIC`.
    pub source: String,
    pub require_customization: bool,
    pub accept_terms: bool,
    pub industry_id: Option<i32>,
    pub auc_id: Option<i32>,
    pub tags: Vec<String>,
    pub sql_logic: String,
    /// The declared parameters, as a JSON list of `{name, type, required, default, allowed}`.
    pub params_json: String,
    /// The contract's other fields (chart settings, coverage, limits …) as a JSON object.
    pub extra_json: String,
    pub cached: bool,
    pub timeout_ms: Option<i32>,
    /// Goes up with every change (the result cache and prices key on it).
    pub version: i32,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetUpserted {
    pub event_id: String,
    pub asset: AssetState,
}

/// A data endpoint: one table of one of the company's connections exposed as a paginated
/// API. The contract's fields (columns with filters and aggregations, access method, limits,
/// export settings …) are kept as a JSON object in `spec_json`; the ingest routes own their
/// shape. Prices and usage key on the endpoint's id as they do on an asset's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub connection_id: String,
    pub name: String,
    /// Unique per company.
    pub slug: String,
    pub spec_json: String,
    /// Goes up with every change.
    pub version: i32,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointUpserted {
    pub event_id: String,
    pub endpoint: EndpointState,
}

/// A new price for an asset; it ends the one in force (price history is a type 2 dimension).
/// `credits` is the price in whole credits, fixed when the price is set (USD × credits per
/// USD, rounded up), so every charge under it is the same integer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceSet {
    pub event_id: String,
    pub aph_id: String,
    pub company_id: String,
    pub asset_id: String,
    pub price_usd: f64,
    pub credits: i64,
    pub set_at_ms: i64,
}

/// A company's subscription, set by the operator: plan `plan_id` from `period_start_ms`, which
/// also starts its monthly periods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSet {
    pub event_id: String,
    pub company_id: String,
    pub plan_id: String,
    pub period_start_ms: i64,
    /// The operator's own monthly allocation for this company instead of the plan's (v2; a
    /// v1 record has none).
    #[serde(default)]
    pub monthly_requests: Option<i64>,
}

/// The price `aph_id` of an asset ends without a successor: from `ended_at_ms` the asset has no
/// price in force (not for sale). Ending a price that has already ended changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceEnded {
    pub event_id: String,
    pub aph_id: String,
    pub company_id: String,
    pub asset_id: String,
    pub ended_at_ms: i64,
}

/// A discount on an asset's price in force: a percentage or an amount in credits off, from
/// `starts_at_ms` until `ends_at_ms` (open-ended when none), for every buyer or one company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscountSet {
    pub event_id: String,
    pub discount_id: String,
    pub company_id: String,
    pub asset_id: String,
    pub percent: Option<f64>,
    pub amount_credits: Option<i64>,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    pub buyer_company_id: Option<String>,
    pub set_at_ms: i64,
}

/// One execution, charged or not, as committed by the money path (on `tally.usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecorded {
    pub execution_id: String,
    pub buyer_company_id: String,
    pub seller_company_id: String,
    pub asset_id: String,
    pub api_key_id: i64,
    pub user_id: String,
    /// Credits finally charged (0 for a failed or free execution).
    pub credits: i64,
    /// The seller's share of `credits` (since v2; a v1 record reads as 0).
    #[serde(default)]
    pub seller_credits: i64,
    pub rows: i64,
    pub duration_ms: f64,
    /// `succeeded` or `failed`.
    pub status: String,
    /// `live` or `test` (an execution with a test key).
    pub mode: String,
    pub at_ms: i64,
}

/// One ledger row, as committed (on `tally.billing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntryPosted {
    pub entry_id: String,
    pub company_id: String,
    /// `topup`, `debit`, `seller_credit`, `platform_fee` or `refund`.
    pub kind: String,
    pub credits: i64,
    pub balance_after: i64,
    pub execution_id: Option<String>,
    pub counterparty_company_id: Option<String>,
    pub at_ms: i64,
}

/// A user's favorite asset. The integer `favorite_id` clients see is assigned by the
/// projection in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FavoriteState {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub asset_id: String,
    pub notes: Option<String>,
    pub category: Option<String>,
    pub priority: i32,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FavoriteUpserted {
    pub event_id: String,
    pub favorite: FavoriteState,
}

/// A user's alert rule: what it watches (`kind` with its own fields), where it is delivered
/// besides in-app (`webhook_url`, signed with a secret kept sealed under Tally's secret key),
/// and whether it is on. The integer `alert_id` clients see is assigned by the projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub asset_id: Option<String>,
    /// `quota`, `low_balance`, `price_changed`, `asset_updated` or `executions_failing`.
    pub kind: String,
    pub name: Option<String>,
    /// `low_balance`: fires when the balance falls below this many credits.
    pub threshold_credits: Option<i64>,
    /// `executions_failing`: the failed share, the window and the fewest executions in it.
    pub failing_percent: Option<i32>,
    pub window_minutes: Option<i32>,
    pub min_executions: Option<i64>,
    pub webhook_url: Option<String>,
    pub webhook_secret_sealed: Option<String>,
    pub is_active: bool,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertUpserted {
    pub event_id: String,
    pub alert: AlertState,
}

/// A website's own object (a goal, funnel, link, pixel, share or report): its kind, the site
/// and company it belongs to, the key it is reached by in public routes (a link's slug, a
/// pixel's key, a share's id), and the kind's own fields as JSON (the web layer owns their
/// types and validation). Deleting writes `deleted: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteObjectState {
    pub id: String,
    pub kind: String,
    pub website_id: String,
    pub company_id: String,
    pub public_key: Option<String>,
    pub body_json: String,
    pub deleted: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteObjectUpserted {
    pub event_id: String,
    pub object: SiteObjectState,
}

/// An alert rule fired for one window (`window` is the dedup key with the rule), on
/// `tally.alerts`, keyed by company id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTriggered {
    pub firing_id: String,
    pub alert_id: String,
    pub alert_number: i64,
    pub company_id: String,
    pub user_id: String,
    pub asset_id: Option<String>,
    pub kind: String,
    pub window: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A record some consumer could not decode or apply, parked for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub consumer: String,
    pub reason: String,
    #[serde(with = "serde_bytes_compat")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes_compat")]
    pub value: Vec<u8>,
    pub failed_at_ms: i64,
}

/// Every event on the entities topic; the schema id in the wire header says which one it is.
// `CompanyCreated` (a company, its admin and key) is the large one. Entity events are decoded
// one at a time into batches of at most 1,000, so boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum EntityEvent {
    WebsiteCreated(WebsiteCreated),
    WebsiteUpdated(WebsiteUpdated),
    WebsiteDeleted(WebsiteDeleted),
    UserCreated(UserCreated),
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyRevoked(ApiKeyRevoked),
    CompanyCreated(CompanyCreated),
    CompanyUpdated(CompanyUpdated),
    UserUpserted(UserUpserted),
    ApiKeyUpserted(ApiKeyUpserted),
    ConnectionUpserted(ConnectionUpserted),
    AssetUpserted(AssetUpserted),
    PriceSet(PriceSet),
    FavoriteUpserted(FavoriteUpserted),
    DiscountSet(DiscountSet),
    PriceEnded(PriceEnded),
    SubscriptionSet(SubscriptionSet),
    AlertUpserted(AlertUpserted),
    EndpointUpserted(EndpointUpserted),
    SiteObjectUpserted(SiteObjectUpserted),
}

impl EntityEvent {
    /// The aggregate id, used as the record key so one aggregate's events stay in order.
    pub fn aggregate_id(&self) -> &str {
        match self {
            Self::WebsiteCreated(e) => &e.id,
            Self::WebsiteUpdated(e) => &e.id,
            Self::WebsiteDeleted(e) => &e.id,
            Self::UserCreated(e) => &e.id,
            Self::ApiKeyCreated(e) => &e.id,
            Self::ApiKeyRevoked(e) => &e.id,
            Self::CompanyCreated(e) => &e.company.id,
            Self::CompanyUpdated(e) => &e.company.id,
            Self::UserUpserted(e) => &e.user.id,
            Self::ApiKeyUpserted(e) => &e.key.id,
            Self::ConnectionUpserted(e) => &e.connection.id,
            Self::AssetUpserted(e) => &e.asset.id,
            Self::PriceSet(e) => &e.asset_id,
            Self::FavoriteUpserted(e) => &e.favorite.id,
            Self::DiscountSet(e) => &e.asset_id,
            Self::PriceEnded(e) => &e.asset_id,
            Self::SubscriptionSet(e) => &e.company_id,
            Self::AlertUpserted(e) => &e.alert.id,
            Self::EndpointUpserted(e) => &e.endpoint.id,
            Self::SiteObjectUpserted(e) => &e.object.id,
        }
    }

    /// The id of this event, for the state-carrying events that have one: the projection
    /// records a rejection (a taken handle, say) under it, and the command reads it back.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Self::CompanyCreated(e) => Some(&e.event_id),
            Self::CompanyUpdated(e) => Some(&e.event_id),
            Self::UserUpserted(e) => Some(&e.event_id),
            Self::ApiKeyUpserted(e) => Some(&e.event_id),
            Self::ConnectionUpserted(e) => Some(&e.event_id),
            Self::AssetUpserted(e) => Some(&e.event_id),
            Self::PriceSet(e) => Some(&e.event_id),
            Self::FavoriteUpserted(e) => Some(&e.event_id),
            Self::DiscountSet(e) => Some(&e.event_id),
            Self::PriceEnded(e) => Some(&e.event_id),
            Self::SubscriptionSet(e) => Some(&e.event_id),
            Self::AlertUpserted(e) => Some(&e.event_id),
            Self::EndpointUpserted(e) => Some(&e.event_id),
            Self::SiteObjectUpserted(e) => Some(&e.event_id),
            _ => None,
        }
    }
}

/// Avro `bytes` through serde: apache-avro maps `bytes` to a serde byte buffer.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}
