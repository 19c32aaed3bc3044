//! What the alerts stage and the notifier keep, in the durable metadata tables (never rebuilt
//! from the log): each rule's firings, once per (rule, window), which are also the in-app
//! notifications; the webhook deliveries of each firing with their attempts; and the stage's
//! offsets. A batch's firings, their deliveries, their `AlertTriggered` outbox records and
//! the offsets after the batch commit in one transaction, so a redelivered record fires
//! nothing twice and nothing fired is lost.

use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;

/// A rule that fired, as the stage found it: the record to publish (its `firing_id` is
/// assigned when it is stored) and where to deliver it besides in-app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFiring {
    /// With `alert_id`, `window` is the dedup key.
    pub record: schemas::AlertTriggered,
    pub webhook_url: Option<String>,
}

/// A firing as stored: an in-app notification of its rule's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub record: schemas::AlertTriggered,
    pub read_at_ms: Option<i64>,
}

/// One webhook delivery of a firing (its id is what receivers deduplicate on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub delivery_id: String,
    pub firing_id: String,
    pub alert_id: String,
    pub url: String,
    /// `pending`, `delivered` or `dead` (retries ran out: the dead-letter record).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: i64,
    },
    /// Try again at `retry_at_ms`.
    Failed {
        status: Option<i64>,
        error: String,
        retry_at_ms: i64,
    },
    /// No more tries: the delivery is kept as dead.
    Dead {
        status: Option<i64>,
        error: String,
    },
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    /// The offsets the stage `stage` stored with its last batch.
    async fn alert_offsets(&self, stage: &str) -> StoreResult<Vec<StoredOffset>>;
    /// Stores the firings not stored before (by rule and window), a delivery for each new one
    /// with a webhook, an `AlertTriggered` outbox record for each new one, and `offsets`, in
    /// one transaction. Returns the firings that were new.
    async fn record_firings(
        &self,
        stage: &str,
        firings: &[NewFiring],
        offsets: &[StoredOffset],
    ) -> StoreResult<Vec<Firing>>;
    /// A user's notifications, newest first, with how many there are and how many are unread.
    async fn notifications(
        &self,
        user_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<Firing>, u64, u64)>;
    /// Marks a notification of `user_id` read; `false` if it has no such notification.
    async fn mark_read(&self, user_id: &str, firing_id: &str, at_ms: i64) -> StoreResult<bool>;
    /// A rule's firings, newest first.
    async fn firings_of(&self, alert_id: &str) -> StoreResult<Vec<Firing>>;
    /// A rule's webhook deliveries, newest first.
    async fn deliveries_of(&self, alert_id: &str) -> StoreResult<Vec<Delivery>>;
    /// Claims up to `limit` deliveries due at `now_ms` for `lease_ms` (another notifier takes a
    /// claim over once it lapses), with the firing each carries.
    async fn claim_deliveries(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<(Delivery, Firing)>>;
    /// Records one attempt of a claimed delivery.
    async fn record_attempt(
        &self,
        delivery_id: &str,
        attempt: &Attempt,
        now_ms: i64,
    ) -> StoreResult<()>;
}
