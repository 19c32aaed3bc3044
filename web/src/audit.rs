//! The audit trail of the HTTP layer: every mutation (any method but GET and HEAD), every
//! execution, and every refused call (401, 402, 403, 429) on a route behind authentication
//! becomes an [`AuditRecord`]. Records go to a bounded channel and a background writer stores
//! them in batches, so a request never waits on the audit store; a full channel drops a record
//! and counts it (`tally_audit_dropped_total`) rather than slowing every caller.
//!
//! The sink also counts every call made with an API key (used, or refused) in memory and adds
//! the counts to the store once a second: what `GET …/api-keys/{id}/stats` reads.

use crate::Caller;
use axum::http::Method;
use dashmap::DashMap;
use projections::{AuditRecord, AuditStore, KeyUse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CHANNEL: usize = 65_536;
const BATCH: usize = 1_000;
/// How often the key-use counts are added to the store.
const KEY_USE_FLUSH: Duration = Duration::from_secs(1);
/// How long the writer gathers records after the first of a batch: one insert (and one
/// durable commit) per this much time under steady traffic, instead of one per request
/// competing with the money path's commits.
const LINGER: Duration = Duration::from_millis(50);

/// Where the HTTP layer sends audit records.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
    key_uses: Arc<DashMap<i64, KeyUse>>,
}

/// Whether a call made with a key counts as a failed attempt of that key.
pub fn refused(status: u16) -> bool {
    matches!(status, 401 | 402 | 403 | 429)
}

/// Whether a call is audited: a mutation, an execution, or a refusal.
pub fn audited(method: &Method, path: &str, status: u16) -> bool {
    let mutation = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    mutation || path.starts_with("/analyze/") || matches!(status, 401 | 402 | 403 | 429)
}

/// The company named by a `/companies/{id}/…` path.
pub fn path_company(path: &str) -> Option<&str> {
    path.strip_prefix("/companies/")?
        .split('/')
        .next()
        .filter(|c| !c.is_empty())
}

/// The record of one call.
pub fn record(
    caller: Option<&Caller>,
    method: &Method,
    route: &str,
    path: &str,
    status: u16,
) -> AuditRecord {
    let company_id = caller.map(|c| c.company_id.clone());
    let target = path_company(path)
        .filter(|t| company_id.as_deref() != Some(*t))
        .map(str::to_string);
    AuditRecord {
        audit_id: uuid::Uuid::now_v7().simple().to_string(),
        at_ms: chrono::Utc::now().timestamp_millis(),
        request_id: crate::current_request_id(),
        company_id,
        target_company_id: target,
        user_id: caller.map(|c| c.user_id.clone()),
        api_key_id: caller.map(|c| c.api_key_id).filter(|id| *id > 0),
        action: format!("{method} {route}"),
        object: path.chars().take(512).collect(),
        status: i32::from(status),
        outcome: projections::audit::outcome(status).to_string(),
    }
}

impl AuditSink {
    /// The sink and its writer, which stores records until every sink is dropped, then
    /// flushes what is left.
    pub fn spawn(store: Arc<dyn AuditStore>) -> (AuditSink, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(CHANNEL);
        let key_uses: Arc<DashMap<i64, KeyUse>> = Arc::new(DashMap::new());
        let counts = key_uses.clone();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut tick = tokio::time::interval(KEY_USE_FLUSH);
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => {
                        if n == 0 {
                            break;
                        }
                        gather(&mut rx, &mut batch, LINGER).await;
                        store_records(store.as_ref(), &batch).await;
                        batch.clear();
                    }
                    _ = tick.tick() => store_key_uses(store.as_ref(), &counts).await,
                }
            }
            store_key_uses(store.as_ref(), &counts).await;
        });
        (AuditSink { tx, key_uses }, writer)
    }

    pub fn send(&self, r: AuditRecord) {
        if self.tx.try_send(r).is_err() {
            metrics::counter!("tally_audit_dropped_total").increment(1);
        }
    }

    /// Counts one call made with key `api_key_id` that answered `status`.
    pub fn count_key_use(&self, api_key_id: i64, status: u16) {
        let now = chrono::Utc::now().timestamp_millis();
        self.key_uses
            .entry(api_key_id)
            .or_insert_with(|| KeyUse {
                api_key_id,
                ..KeyUse::default()
            })
            .count(refused(status), now);
    }
}

/// Adds to `batch` what arrives within `linger` (until it is full or the channel closes).
async fn gather(
    rx: &mut mpsc::Receiver<AuditRecord>,
    batch: &mut Vec<AuditRecord>,
    linger: Duration,
) {
    let until = tokio::time::Instant::now() + linger;
    while batch.len() < BATCH {
        let room = BATCH - batch.len();
        match tokio::time::timeout_at(until, rx.recv_many(batch, room)).await {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Stores `batch`, retrying a failing store for a while before dropping (and counting) it.
async fn store_records(store: &dyn AuditStore, batch: &[AuditRecord]) {
    let mut tries = 0;
    while let Err(e) = store.append_audit(batch).await {
        tries += 1;
        tracing::warn!(error = %e, rows = batch.len(), "cannot store audit records; retrying");
        if tries == 10 {
            metrics::counter!("tally_audit_dropped_total").increment(batch.len() as u64);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
    }
}

/// Moves the counts gathered so far into the store; counts it cannot store go back into the
/// map, so a store outage delays them and loses none.
async fn store_key_uses(store: &dyn AuditStore, counts: &DashMap<i64, KeyUse>) {
    let ids: Vec<i64> = counts.iter().map(|e| *e.key()).collect();
    let taken: Vec<KeyUse> = ids
        .iter()
        .filter_map(|id| counts.remove(id).map(|(_, u)| u))
        .collect();
    if taken.is_empty() {
        return;
    }
    if let Err(e) = store.add_key_uses(&taken).await {
        tracing::warn!(error = %e, keys = taken.len(), "cannot store key use counts; keeping them");
        for u in taken {
            counts
                .entry(u.api_key_id)
                .or_insert_with(|| KeyUse {
                    api_key_id: u.api_key_id,
                    ..KeyUse::default()
                })
                .absorb(&u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_executions_and_refusals_are_audited() {
        assert!(audited(&Method::POST, "/companies/a/assets", 201));
        assert!(audited(&Method::DELETE, "/companies/a/users/u", 200));
        assert!(audited(&Method::GET, "/analyze/acme/assets/x", 200));
        assert!(audited(&Method::GET, "/companies/b", 403));
        assert!(audited(&Method::GET, "/companies/b", 401));
        assert!(!audited(&Method::GET, "/companies/a", 200));
        assert!(!audited(&Method::GET, "/companies/a/nothing", 404));
        assert_eq!(path_company("/companies/abc/assets"), Some("abc"));
        assert_eq!(path_company("/companies"), None);
        assert_eq!(path_company("/me"), None);
    }
}
