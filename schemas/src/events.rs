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
#[derive(Debug, Clone, PartialEq)]
pub enum EntityEvent {
    WebsiteCreated(WebsiteCreated),
    WebsiteUpdated(WebsiteUpdated),
    WebsiteDeleted(WebsiteDeleted),
    UserCreated(UserCreated),
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyRevoked(ApiKeyRevoked),
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
