//! The audit log: one row per mutation and per refused call (who, which company, what, on
//! which object, the outcome, the request id, when). Durable, written by the HTTP layer
//! directly (not a projection of the log: a refused call puts nothing on the log).

use crate::StoreResult;
use async_trait::async_trait;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub audit_id: String,
    pub at_ms: i64,
    pub request_id: Option<String>,
    /// The caller's company (none when the caller could not be identified).
    pub company_id: Option<String>,
    /// The company named in the path, when it is another one.
    pub target_company_id: Option<String>,
    pub user_id: Option<String>,
    pub api_key_id: Option<i64>,
    /// `POST /companies/{company_id}/assets`: the method and the route's template.
    pub action: String,
    /// The path as called (the object acted on).
    pub object: String,
    pub status: i32,
    /// `ok`, `refused` (401, 403, 402, 429) or `failed` (any other error).
    pub outcome: String,
}

/// The outcome of an HTTP status, as the audit log names it.
pub fn outcome(status: u16) -> &'static str {
    match status {
        s if s < 400 => "ok",
        401 | 402 | 403 | 429 => "refused",
        _ => "failed",
    }
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, rows: &[AuditRecord]) -> StoreResult<()>;
    /// Rows of `company_id` (as the caller's or the target company), newest first, and the
    /// total.
    async fn audit_log(
        &self,
        company_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<AuditRecord>, u64)>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(super::outcome(201), "ok");
        assert_eq!(super::outcome(403), "refused");
        assert_eq!(super::outcome(402), "refused");
        assert_eq!(super::outcome(404), "failed");
        assert_eq!(super::outcome(500), "failed");
    }
}
