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

/// How often one API key was used, and refused, since the last flush (or in total, when read
/// back). Counts add up across processes; the times keep the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyUse {
    pub api_key_id: i64,
    /// Calls authenticated with the key.
    pub uses: i64,
    /// Calls with the key that were refused: by its role or company (403), its balance (402),
    /// a limit (429), or because the key was expired, deactivated or revoked (401).
    pub failures: i64,
    pub last_used_ms: Option<i64>,
    pub last_failed_ms: Option<i64>,
}

impl KeyUse {
    /// Counts one call at `at_ms`.
    pub fn count(&mut self, refused: bool, at_ms: i64) {
        if refused {
            self.failures += 1;
            self.last_failed_ms = self.last_failed_ms.max(Some(at_ms));
        } else {
            self.uses += 1;
            self.last_used_ms = self.last_used_ms.max(Some(at_ms));
        }
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &KeyUse) {
        self.uses += other.uses;
        self.failures += other.failures;
        self.last_used_ms = self.last_used_ms.max(other.last_used_ms);
        self.last_failed_ms = self.last_failed_ms.max(other.last_failed_ms);
    }
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Adds the counts of `uses` to each key's totals.
    async fn add_key_uses(&self, uses: &[KeyUse]) -> StoreResult<()>;
    /// A key's totals (zero if it was never presented).
    async fn key_uses(&self, api_key_id: i64) -> StoreResult<KeyUse>;
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

    #[test]
    fn key_use_counts_calls_and_keeps_the_latest_times() {
        let mut u = super::KeyUse::default();
        u.count(false, 5);
        u.count(false, 3);
        u.count(true, 4);
        assert_eq!((u.uses, u.failures), (2, 1));
        assert_eq!((u.last_used_ms, u.last_failed_ms), (Some(5), Some(4)));
    }
}
