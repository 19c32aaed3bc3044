//! The audit trail of the HTTP layer: every mutation (any method but GET and HEAD), every
//! execution, and every refused call (401, 402, 403, 429) on a route behind authentication
//! becomes an [`AuditRecord`]. Records go to a bounded channel and a background writer stores
//! them in batches, so a request never waits on the audit store; a full channel drops a record
//! and counts it (`tally_audit_dropped_total`) rather than slowing every caller.

use crate::Caller;
use axum::http::Method;
use projections::{AuditRecord, AuditStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CHANNEL: usize = 65_536;
const BATCH: usize = 1_000;

/// Where the HTTP layer sends audit records.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
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
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut tries = 0;
                while let Err(e) = store.append_audit(&batch).await {
                    tries += 1;
                    tracing::warn!(error = %e, rows = batch.len(), "cannot store audit records; retrying");
                    if tries == 10 {
                        metrics::counter!("tally_audit_dropped_total")
                            .increment(batch.len() as u64);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                batch.clear();
            }
        });
        (AuditSink { tx }, writer)
    }

    pub fn send(&self, r: AuditRecord) {
        if self.tx.try_send(r).is_err() {
            metrics::counter!("tally_audit_dropped_total").increment(1);
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
