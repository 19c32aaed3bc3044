//! Projection stores: narrow traits (analytics writes apart from reads; metadata writes apart
//! from reads), the embedded backends (DuckDB for analytics, SQLite for metadata) and the
//! conformance suites every backend must pass.

pub mod alert_store;
pub mod analytics;
pub mod audit;
#[cfg(feature = "clickhouse")]
mod ch;
#[cfg(feature = "clickhouse")]
mod ch_goals;
#[cfg(feature = "clickhouse")]
mod ch_rollup;
#[cfg(feature = "clickhouse")]
mod ch_sessions;
#[cfg(feature = "clickhouse")]
mod ch_usage;
pub mod conformance;
mod duck;
mod duck_goals;
mod duck_rollup;
mod duck_sessions;
mod duck_usage;
pub mod execution_stats;
pub mod group_commit;
pub mod limits;
pub mod metadata;
pub mod money;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "postgres")]
mod pg_limits;
#[cfg(feature = "postgres")]
mod pg_money;
pub mod reference;
pub mod rollup;
pub mod seller;
pub mod sessions;
mod sqlalerts;
mod sqlite;
mod sqlite_money;
mod sqlite_outbox;
mod sqlmeta;
mod sqlmoney;
pub mod usage;

pub use analytics::*;
pub use audit::{AuditRecord, AuditStore, KeyUse};
#[cfg(feature = "clickhouse")]
pub use ch::ClickHouseAnalytics;
pub use duck::DuckAnalytics;
pub use metadata::*;
pub use money::*;
#[cfg(feature = "postgres")]
pub use pg::PgMetadata;
pub use sessions::{SessionOwner, SessionStore};
pub use sqlite::SqliteMetadata;
pub use usage::{UsageCount, UsageQuery, UsageReport, UsageRow, UsageStore, UsageTotals};

/// A projection's own record of how far it has applied a topic partition. Stored in the same
/// transaction as the rows it covers, so a restart resumes exactly where the store stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: u32,
    pub next_offset: u64,
}

/// Errors from any store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("invalid query: {0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A namespace names a Postgres schema and a ClickHouse database and is spliced into DDL, so
/// it is held to `[a-z_][a-z0-9_]*`, at most 48 characters.
pub fn check_namespace(ns: &str) -> StoreResult<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 48
        && ns.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "namespace {ns:?} must match [a-z_][a-z0-9_]* (at most 48 characters)"
        )))
    }
}
