//! The metadata projection's contract: websites, users, API keys and settings, with a writer
//! that applies entity events together with their offsets and a reader for the HTTP side.

use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use schemas::EntityEvent;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Website {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub timezone: String,
    pub created_at_ms: i64,
}

/// An API key as listed (never the secret, never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub key_last4: String,
    pub created_at_ms: i64,
}

/// Who an active key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: String,
    pub user_id: String,
}

/// Applies entity events. Idempotent: re-applying an event changes nothing.
#[async_trait]
pub trait MetadataWriter: Send + Sync {
    /// Applies `events` and stores `offsets` in one transaction.
    async fn apply(
        &self,
        consumer: &str,
        events: &[EntityEvent],
        offsets: &[StoredOffset],
    ) -> StoreResult<()>;
    async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>>;
}

/// Reads for the HTTP side.
#[async_trait]
pub trait MetadataReader: Send + Sync {
    /// A live (not deleted) website.
    async fn website(&self, id: &str) -> StoreResult<Option<Website>>;
    async fn websites(&self) -> StoreResult<Vec<Website>>;
    async fn user_count(&self) -> StoreResult<u64>;
    /// The owner of an active (not revoked) key, by the key's SHA-256 hex.
    async fn key_by_hash(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>>;
    async fn keys(&self) -> StoreResult<Vec<ApiKeyInfo>>;
    /// Next offset `consumer` has applied for `topic`/`partition` (0 if none).
    async fn applied_offset(&self, consumer: &str, topic: &str, partition: u32)
        -> StoreResult<u64>;
    /// Returns the stored value of setting `name`, storing `candidate` first if it had none
    /// (so every process of a deployment agrees on, e.g., the visitor-id secret).
    async fn setting_or_init(&self, name: &str, candidate: &str) -> StoreResult<String>;
}
