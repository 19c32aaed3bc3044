//! Encoder and decoder for the Confluent wire format: magic byte `0`, a 4-byte big-endian schema
//! id from the registry, then the Avro binary datum. Decoding resolves the writer's schema
//! against the newest reader schema of the same subject, so old records stay readable.

use crate::events::*;
use crate::registry::{entry_by_id, newest_id, schema_by_id};
use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value};
use serde::{de::DeserializeOwned, Serialize};

const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record shorter than the 5-byte wire header")]
    TooShort,
    #[error("unknown magic byte {0}")]
    BadMagic(u8),
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    #[error("schema id {id} is a {found}, expected a {expected}")]
    WrongSubject {
        id: u32,
        found: &'static str,
        expected: &'static str,
    },
    #[error("avro: {0}")]
    Avro(String),
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(e.to_string())
    }
}

/// A type that travels on a topic, registered under one subject.
pub trait WireRecord: Serialize + DeserializeOwned {
    const SUBJECT: &'static str;

    /// Writes the datum for the newest schema directly, if the type has a direct encoder.
    fn write_fast(&self, _out: &mut Vec<u8>) -> bool {
        false
    }

    /// Reads a datum written with the newest schema directly, if the type has a direct decoder.
    fn read_fast(_datum: &[u8]) -> Option<Result<Self, CodecError>> {
        None
    }
}

macro_rules! wire {
    ($t:ty, $subject:expr) => {
        impl WireRecord for $t {
            const SUBJECT: &'static str = $subject;
        }
    };
    ($t:ty, $subject:expr, fast) => {
        impl WireRecord for $t {
            const SUBJECT: &'static str = $subject;

            fn write_fast(&self, out: &mut Vec<u8>) -> bool {
                self.write_avro(out);
                true
            }

            fn read_fast(datum: &[u8]) -> Option<Result<Self, CodecError>> {
                let mut r = crate::fast::Reader::new(datum);
                Some(Self::read_avro(&mut r).and_then(|v| r.finish().map(|_| v)))
            }
        }
    };
}
wire!(CollectedEvent, "tally.collect.CollectedEvent", fast);
wire!(EnrichedEvent, "tally.collect.EnrichedEvent", fast);
wire!(WebsiteCreated, "tally.entities.WebsiteCreated");
wire!(WebsiteUpdated, "tally.entities.WebsiteUpdated");
wire!(WebsiteDeleted, "tally.entities.WebsiteDeleted");
wire!(UserCreated, "tally.entities.UserCreated");
wire!(ApiKeyCreated, "tally.entities.ApiKeyCreated");
wire!(ApiKeyRevoked, "tally.entities.ApiKeyRevoked");
wire!(CompanyCreated, "tally.entities.CompanyCreated");
wire!(CompanyUpdated, "tally.entities.CompanyUpdated");
wire!(UserUpserted, "tally.entities.UserUpserted");
wire!(ApiKeyUpserted, "tally.entities.ApiKeyUpserted");
wire!(ConnectionUpserted, "tally.entities.ConnectionUpserted");
wire!(AssetUpserted, "tally.entities.AssetUpserted");
wire!(PriceSet, "tally.entities.PriceSet");
wire!(FavoriteUpserted, "tally.entities.FavoriteUpserted");
wire!(DiscountSet, "tally.entities.DiscountSet");
wire!(PriceEnded, "tally.entities.PriceEnded");
wire!(SubscriptionSet, "tally.entities.SubscriptionSet");
wire!(AlertUpserted, "tally.entities.AlertUpserted");
wire!(EndpointUpserted, "tally.entities.EndpointUpserted");
wire!(SiteObjectUpserted, "tally.entities.SiteObjectUpserted");
wire!(AlertTriggered, "tally.alerts.AlertTriggered");
wire!(UsageRecorded, "tally.usage.UsageRecorded", fast);
wire!(LedgerEntryPosted, "tally.billing.LedgerEntryPosted", fast);
wire!(DeadLetter, "tally.ops.DeadLetter");

/// Encodes `value` with the newest schema of its subject.
pub fn encode<T: WireRecord>(value: &T) -> Result<Vec<u8>, CodecError> {
    let id = newest_id(T::SUBJECT).ok_or(CodecError::UnknownSchema(0))?;
    let mut out = Vec::with_capacity(256);
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    if value.write_fast(&mut out) {
        return Ok(out);
    }
    encode_with(id, value)
}

/// Encodes `value` with the schema registered under `id` (tests use it to write old versions).
pub fn encode_with<T: Serialize>(id: u32, value: &T) -> Result<Vec<u8>, CodecError> {
    let schema = schema_by_id(id).ok_or(CodecError::UnknownSchema(id))?;
    let datum = to_avro_datum(schema, to_value(value)?)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Reads the wire header, returning the schema id and the Avro datum.
fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort);
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Decodes a record of type `T`, resolving an older writer schema to the newest reader schema.
pub fn decode<T: WireRecord>(bytes: &[u8]) -> Result<T, CodecError> {
    let (id, datum) = split_header(bytes)?;
    let entry = entry_by_id(id).ok_or(CodecError::UnknownSchema(id))?;
    if entry.subject != T::SUBJECT {
        return Err(CodecError::WrongSubject {
            id,
            found: entry.subject,
            expected: T::SUBJECT,
        });
    }
    decode_datum(id, datum)
}

fn decode_datum<T: WireRecord>(writer_id: u32, mut datum: &[u8]) -> Result<T, CodecError> {
    let writer = schema_by_id(writer_id).ok_or(CodecError::UnknownSchema(writer_id))?;
    let reader_id = newest_id(T::SUBJECT).ok_or(CodecError::UnknownSchema(writer_id))?;
    if writer_id == reader_id {
        if let Some(decoded) = T::read_fast(datum) {
            return decoded;
        }
    }
    let reader = schema_by_id(reader_id).ok_or(CodecError::UnknownSchema(reader_id))?;
    let reader = (reader_id != writer_id).then_some(reader);
    let value = from_avro_datum(writer, &mut datum, reader)?;
    if !datum.is_empty() {
        return Err(CodecError::Avro(format!(
            "{} trailing bytes after the datum",
            datum.len()
        )));
    }
    Ok(from_value::<T>(&value)?)
}

/// Encodes an entity event with its own schema id.
pub fn encode_entity(event: &EntityEvent) -> Result<Vec<u8>, CodecError> {
    match event {
        EntityEvent::WebsiteCreated(e) => encode(e),
        EntityEvent::WebsiteUpdated(e) => encode(e),
        EntityEvent::WebsiteDeleted(e) => encode(e),
        EntityEvent::UserCreated(e) => encode(e),
        EntityEvent::ApiKeyCreated(e) => encode(e),
        EntityEvent::ApiKeyRevoked(e) => encode(e),
        EntityEvent::CompanyCreated(e) => encode(e),
        EntityEvent::CompanyUpdated(e) => encode(e),
        EntityEvent::UserUpserted(e) => encode(e),
        EntityEvent::ApiKeyUpserted(e) => encode(e),
        EntityEvent::ConnectionUpserted(e) => encode(e),
        EntityEvent::AssetUpserted(e) => encode(e),
        EntityEvent::PriceSet(e) => encode(e),
        EntityEvent::FavoriteUpserted(e) => encode(e),
        EntityEvent::DiscountSet(e) => encode(e),
        EntityEvent::PriceEnded(e) => encode(e),
        EntityEvent::SubscriptionSet(e) => encode(e),
        EntityEvent::AlertUpserted(e) => encode(e),
        EntityEvent::EndpointUpserted(e) => encode(e),
        EntityEvent::SiteObjectUpserted(e) => encode(e),
    }
}

/// Decodes any entity event, dispatching on the subject of the writer's schema id.
pub fn decode_entity(bytes: &[u8]) -> Result<EntityEvent, CodecError> {
    let (id, datum) = split_header(bytes)?;
    let entry = entry_by_id(id).ok_or(CodecError::UnknownSchema(id))?;
    Ok(match entry.subject {
        WebsiteCreated::SUBJECT => EntityEvent::WebsiteCreated(decode_datum(id, datum)?),
        WebsiteUpdated::SUBJECT => EntityEvent::WebsiteUpdated(decode_datum(id, datum)?),
        WebsiteDeleted::SUBJECT => EntityEvent::WebsiteDeleted(decode_datum(id, datum)?),
        UserCreated::SUBJECT => EntityEvent::UserCreated(decode_datum(id, datum)?),
        ApiKeyCreated::SUBJECT => EntityEvent::ApiKeyCreated(decode_datum(id, datum)?),
        ApiKeyRevoked::SUBJECT => EntityEvent::ApiKeyRevoked(decode_datum(id, datum)?),
        CompanyCreated::SUBJECT => EntityEvent::CompanyCreated(decode_datum(id, datum)?),
        CompanyUpdated::SUBJECT => EntityEvent::CompanyUpdated(decode_datum(id, datum)?),
        UserUpserted::SUBJECT => EntityEvent::UserUpserted(decode_datum(id, datum)?),
        ApiKeyUpserted::SUBJECT => EntityEvent::ApiKeyUpserted(decode_datum(id, datum)?),
        ConnectionUpserted::SUBJECT => EntityEvent::ConnectionUpserted(decode_datum(id, datum)?),
        AssetUpserted::SUBJECT => EntityEvent::AssetUpserted(decode_datum(id, datum)?),
        PriceSet::SUBJECT => EntityEvent::PriceSet(decode_datum(id, datum)?),
        FavoriteUpserted::SUBJECT => EntityEvent::FavoriteUpserted(decode_datum(id, datum)?),
        DiscountSet::SUBJECT => EntityEvent::DiscountSet(decode_datum(id, datum)?),
        PriceEnded::SUBJECT => EntityEvent::PriceEnded(decode_datum(id, datum)?),
        SubscriptionSet::SUBJECT => EntityEvent::SubscriptionSet(decode_datum(id, datum)?),
        AlertUpserted::SUBJECT => EntityEvent::AlertUpserted(decode_datum(id, datum)?),
        EndpointUpserted::SUBJECT => EntityEvent::EndpointUpserted(decode_datum(id, datum)?),
        SiteObjectUpserted::SUBJECT => EntityEvent::SiteObjectUpserted(decode_datum(id, datum)?),
        other => {
            return Err(CodecError::WrongSubject {
                id,
                found: other,
                expected: "tally.entities.*",
            })
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::REGISTRY;

    fn sample() -> CollectedEvent {
        CollectedEvent {
            event_id: "0190-test".into(),
            website_id: "site-1".into(),
            received_at_ms: 1_700_000_000_000,
            timestamp_ms: 1_700_000_000_000,
            event_type: "pageview".into(),
            url: "https://example.com/pricing?utm_source=x".into(),
            referrer: Some("https://google.com/".into()),
            event_data: Some(r#"{"plan":"pro"}"#.into()),
            utm_term: Some("t".into()),
            visitor_id: "0123456789abcdef".into(),
            country: Some("DE".into()),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_collected_and_header() {
        let e = sample();
        let bytes = encode(&e).unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
            2
        );
        assert_eq!(decode::<CollectedEvent>(&bytes).unwrap(), e);
    }

    #[test]
    fn round_trip_every_entity_event() {
        let events = vec![
            EntityEvent::WebsiteCreated(WebsiteCreated {
                id: "w".into(),
                name: "n".into(),
                domain: "d.com".into(),
                timezone: "UTC".into(),
                created_at_ms: 1,
                company_id: None,
            }),
            EntityEvent::WebsiteUpdated(WebsiteUpdated {
                id: "w".into(),
                name: None,
                domain: Some("e.com".into()),
                timezone: None,
                updated_at_ms: 2,
            }),
            EntityEvent::WebsiteDeleted(WebsiteDeleted {
                id: "w".into(),
                deleted_at_ms: 3,
            }),
            EntityEvent::UserCreated(UserCreated {
                id: "u".into(),
                username: "admin".into(),
                password_hash: "h".into(),
                role: "admin".into(),
                created_at_ms: 4,
            }),
            EntityEvent::ApiKeyCreated(ApiKeyCreated {
                id: "k".into(),
                user_id: "u".into(),
                name: "ci".into(),
                key_hash: "ab".into(),
                key_last4: "1234".into(),
                created_at_ms: 5,
            }),
            EntityEvent::ApiKeyRevoked(ApiKeyRevoked {
                id: "k".into(),
                revoked_at_ms: 6,
            }),
            EntityEvent::CompanyCreated(CompanyCreated {
                event_id: "e1".into(),
                company: crate::testenv::company("c", "acme"),
                admin: crate::testenv::user("u", "c", "a@acme.io"),
                admin_key: crate::testenv::api_key("k", "u", "c"),
            }),
            EntityEvent::CompanyUpdated(CompanyUpdated {
                event_id: "e2".into(),
                company: CompanyState {
                    description: Some("d".into()),
                    industry_id: Some(31),
                    ..crate::testenv::company("c", "acme")
                },
            }),
            EntityEvent::UserUpserted(UserUpserted {
                event_id: "e3".into(),
                user: crate::testenv::user("u2", "c", "b@acme.io"),
            }),
            EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
                event_id: "e4".into(),
                key: ApiKeyState {
                    expires_at_ms: Some(9),
                    revocation_reason: Some("leaked".into()),
                    mode: "test".into(),
                    ..crate::testenv::api_key("k2", "u2", "c")
                },
            }),
            EntityEvent::ConnectionUpserted(ConnectionUpserted {
                event_id: "e5".into(),
                connection: crate::testenv::connection("cn", "c", "u"),
            }),
            EntityEvent::AssetUpserted(AssetUpserted {
                event_id: "e6".into(),
                asset: AssetState {
                    tags: vec!["retail".into(), "weekly".into()],
                    timeout_ms: Some(500),
                    ..crate::testenv::asset("a", "c", "cn", "sales-by-region")
                },
            }),
            EntityEvent::PriceSet(PriceSet {
                event_id: "e7".into(),
                aph_id: "p".into(),
                company_id: "c".into(),
                asset_id: "a".into(),
                price_usd: 0.25,
                credits: 25,
                set_at_ms: 7,
            }),
            EntityEvent::SubscriptionSet(SubscriptionSet {
                event_id: "e11".into(),
                company_id: "c".into(),
                plan_id: "professional".into(),
                period_start_ms: 9,
                monthly_requests: Some(500),
            }),
            EntityEvent::PriceEnded(PriceEnded {
                event_id: "e10".into(),
                aph_id: "p".into(),
                company_id: "c".into(),
                asset_id: "a".into(),
                ended_at_ms: 8,
            }),
            EntityEvent::DiscountSet(DiscountSet {
                event_id: "e9".into(),
                discount_id: "d".into(),
                company_id: "c".into(),
                asset_id: "a".into(),
                percent: Some(20.0),
                amount_credits: None,
                starts_at_ms: 1,
                ends_at_ms: Some(9),
                buyer_company_id: Some("b".into()),
                set_at_ms: 2,
            }),
            EntityEvent::FavoriteUpserted(FavoriteUpserted {
                event_id: "e8".into(),
                favorite: FavoriteState {
                    id: "f".into(),
                    company_id: "c".into(),
                    user_id: "u".into(),
                    asset_id: "a".into(),
                    notes: Some("weekly".into()),
                    category: None,
                    priority: 2,
                    deleted: false,
                    created_at_ms: 8,
                    updated_at_ms: 8,
                },
            }),
            EntityEvent::AlertUpserted(AlertUpserted {
                event_id: "e10".into(),
                alert: AlertState {
                    id: "al".into(),
                    company_id: "c".into(),
                    user_id: "u".into(),
                    asset_id: None,
                    kind: "low_balance".into(),
                    name: Some("running low".into()),
                    threshold_credits: Some(100),
                    failing_percent: None,
                    window_minutes: None,
                    min_executions: None,
                    webhook_url: Some("https://example.com/hook".into()),
                    webhook_secret_sealed: Some("sealed".into()),
                    is_active: true,
                    deleted: false,
                    created_at_ms: 9,
                    updated_at_ms: 9,
                },
            }),
            EntityEvent::EndpointUpserted(EndpointUpserted {
                event_id: "e11".into(),
                endpoint: EndpointState {
                    id: "ep".into(),
                    company_id: "c".into(),
                    user_id: "u".into(),
                    connection_id: "cn".into(),
                    name: "Orders".into(),
                    slug: "orders".into(),
                    spec_json: "{}".into(),
                    version: 1,
                    deleted: false,
                    created_at_ms: 10,
                    updated_at_ms: 10,
                },
            }),
            EntityEvent::SiteObjectUpserted(SiteObjectUpserted {
                event_id: "e12".into(),
                object: SiteObjectState {
                    id: "g1".into(),
                    kind: "goal".into(),
                    website_id: "w".into(),
                    company_id: "c".into(),
                    public_key: None,
                    body_json: r#"{"name":"Signup"}"#.into(),
                    deleted: false,
                    created_at_ms: 11,
                    updated_at_ms: 11,
                },
            }),
        ];
        for e in events {
            let bytes = encode_entity(&e).unwrap();
            assert_eq!(decode_entity(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn a_v1_usage_record_reads_with_no_seller_share() {
        #[derive(serde::Serialize)]
        struct UsageV1<'a> {
            execution_id: &'a str,
            buyer_company_id: &'a str,
            seller_company_id: &'a str,
            asset_id: &'a str,
            api_key_id: i64,
            user_id: &'a str,
            credits: i64,
            rows: i64,
            duration_ms: f64,
            status: &'a str,
            mode: &'a str,
            at_ms: i64,
        }
        let old = UsageV1 {
            execution_id: "x",
            buyer_company_id: "b",
            seller_company_id: "s",
            asset_id: "a",
            api_key_id: 3,
            user_id: "u",
            credits: 25,
            rows: 1,
            duration_ms: 1.5,
            status: "succeeded",
            mode: "live",
            at_ms: 9,
        };
        let u = decode::<UsageRecorded>(&encode_with(19, &old).unwrap()).unwrap();
        assert_eq!((u.credits, u.seller_credits, u.at_ms), (25, 0, 9));
    }

    #[test]
    fn a_key_written_before_modes_reads_as_live() {
        let mut key = ApiKeyUpserted {
            event_id: "e".into(),
            key: crate::testenv::api_key("k", "u", "c"),
        };
        key.key.mode = "test".into();
        // The v1 writer had no `mode`: drop it from the value before writing with schema 14.
        let apache_avro::types::Value::Record(mut fields) = to_value(&key).unwrap() else {
            panic!("a record")
        };
        if let Some((_, apache_avro::types::Value::Record(k))) =
            fields.iter_mut().find(|(n, _)| n == "key")
        {
            k.retain(|(n, _)| n != "mode");
        }
        let datum = to_avro_datum(
            schema_by_id(14).unwrap(),
            apache_avro::types::Value::Record(fields),
        )
        .unwrap();
        let mut bytes = vec![MAGIC];
        bytes.extend_from_slice(&14u32.to_be_bytes());
        bytes.extend_from_slice(&datum);
        let back = decode::<ApiKeyUpserted>(&bytes).unwrap();
        assert_eq!(back.key.mode, "live");
        assert_eq!(back.key.key_hash, key.key.key_hash);
    }

    #[test]
    fn usage_and_ledger_records_round_trip() {
        let u = UsageRecorded {
            execution_id: "x".into(),
            buyer_company_id: "b".into(),
            seller_company_id: "s".into(),
            asset_id: "a".into(),
            api_key_id: 3,
            user_id: "u".into(),
            credits: 25,
            seller_credits: 20,
            rows: 1,
            duration_ms: 1.5,
            status: "succeeded".into(),
            mode: "live".into(),
            at_ms: 9,
        };
        assert_eq!(decode::<UsageRecorded>(&encode(&u).unwrap()).unwrap(), u);
        let l = LedgerEntryPosted {
            entry_id: "e".into(),
            company_id: "b".into(),
            kind: "debit".into(),
            credits: -25,
            balance_after: 75,
            execution_id: Some("x".into()),
            counterparty_company_id: Some("s".into()),
            at_ms: 9,
        };
        assert_eq!(
            decode::<LedgerEntryPosted>(&encode(&l).unwrap()).unwrap(),
            l
        );
    }

    #[test]
    fn dead_letter_round_trip_keeps_bytes() {
        let d = DeadLetter {
            topic: "t".into(),
            partition: 3,
            offset: 9,
            consumer: "enrich".into(),
            reason: "bad".into(),
            key: vec![1, 2, 3],
            value: vec![0, 255, 7],
            failed_at_ms: 10,
        };
        assert_eq!(decode::<DeadLetter>(&encode(&d).unwrap()).unwrap(), d);
    }

    #[test]
    fn old_writer_schema_is_read_by_newest_reader() {
        // A v1 record (no utm_term/utm_content) decodes with v2 defaults filled in.
        let mut v1 = sample();
        v1.utm_term = None;
        v1.utm_content = None;
        #[derive(serde::Serialize)]
        struct V1<'a> {
            event_id: &'a str,
            website_id: &'a str,
            received_at_ms: i64,
            timestamp_ms: i64,
            event_type: &'a str,
            url: &'a str,
            referrer: Option<&'a str>,
            screen: Option<&'a str>,
            language: Option<&'a str>,
            event_name: Option<&'a str>,
            event_data: Option<&'a str>,
            utm_source: Option<&'a str>,
            utm_medium: Option<&'a str>,
            utm_campaign: Option<&'a str>,
            visitor_id: &'a str,
            user_agent: Option<&'a str>,
            country: Option<&'a str>,
            region: Option<&'a str>,
            city: Option<&'a str>,
        }
        let old = V1 {
            event_id: &v1.event_id,
            website_id: &v1.website_id,
            received_at_ms: v1.received_at_ms,
            timestamp_ms: v1.timestamp_ms,
            event_type: &v1.event_type,
            url: &v1.url,
            referrer: v1.referrer.as_deref(),
            screen: None,
            language: None,
            event_name: None,
            event_data: v1.event_data.as_deref(),
            utm_source: None,
            utm_medium: None,
            utm_campaign: None,
            visitor_id: &v1.visitor_id,
            user_agent: None,
            country: v1.country.as_deref(),
            region: None,
            city: None,
        };
        let bytes = encode_with(1, &old).unwrap();
        assert_eq!(bytes[4], 1);
        assert_eq!(decode::<CollectedEvent>(&bytes).unwrap(), v1);
    }

    #[test]
    fn every_newer_version_can_read_every_older_one() {
        use apache_avro::schema_compatibility::SchemaCompatibility;
        for newer in REGISTRY {
            for older in REGISTRY
                .iter()
                .filter(|o| o.subject == newer.subject && o.version < newer.version)
            {
                let w = schema_by_id(older.id).unwrap();
                let r = schema_by_id(newer.id).unwrap();
                assert!(
                    SchemaCompatibility::can_read(w, r).is_ok(),
                    "{} v{} cannot read v{}",
                    newer.subject,
                    newer.version,
                    older.version
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(&sample()).unwrap();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        assert!(decode::<CollectedEvent>(&[]).is_err());
        assert!(decode::<CollectedEvent>(&[1, 0, 0, 0, 2]).is_err());
        assert!(decode::<CollectedEvent>(&[0, 0, 0, 0, 99]).is_err());
        assert!(
            decode::<EnrichedEvent>(&good).is_err(),
            "wrong subject must be refused"
        );
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && buf.len() >= 5 {
                // Keep a valid header so the Avro decoder itself is exercised.
                buf[..5].copy_from_slice(&good[..5]);
            }
            if round % 3 == 0 {
                // Flip bytes of a valid record.
                buf = good.clone();
                let i = (next() as usize) % buf.len();
                buf[i] ^= next() as u8 | 1;
            }
            let _ = decode::<CollectedEvent>(&buf);
            let _ = decode_entity(&buf);
        }
    }
}
