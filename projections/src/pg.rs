//! The metadata store on Postgres (sqlx): the same tables and contract as the SQLite store,
//! in a schema named after the deployment's namespace; each batch of entity events is applied
//! in one transaction together with the offsets it covers.

use crate::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

fn sql_err(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A pool that pings a connection only after it sat idle (sqlx pings on every acquire by
/// default: a round trip before each money statement).
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < Duration::from_secs(2) {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
}

/// Postgres-backed metadata store.
#[derive(Clone)]
pub struct PgMetadata {
    pub(crate) pool: PgPool,
    /// Holds' connections: generic plans (see `pg_money`).
    pub(crate) hold_pool: PgPool,
    /// Settlements' connections: generic plans, `synchronous_commit = off` (see `pg_money`).
    pub(crate) settle_pool: PgPool,
    /// The rate limits' connections: `synchronous_commit = off` (see `pg_limits`).
    pub(crate) limits_pool: PgPool,
    /// Postgres has row locks: no process-wide writer lock.
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl PgMetadata {
    /// Connects to `url`, creates schema `namespace` if needed and applies the tables in it.
    pub async fn open(url: &str, namespace: &str) -> StoreResult<Self> {
        crate::check_namespace(namespace)?;
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("postgres url: {e}")))?
            .options([("search_path", namespace)]);
        let pool = pool_options(8)
            .connect_with(opts.clone())
            .await
            .map_err(sql_err)?;
        let generic = opts
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let hold_pool = pool_options(4).connect_lazy_with(generic.clone());
        let settle_pool =
            pool_options(4).connect_lazy_with(generic.options([("synchronous_commit", "off")]));
        let limits_pool = pool_options(4)
            .connect_lazy_with(opts.clone().options([("synchronous_commit", "off")]));
        // Processes of one deployment start together: an advisory lock serializes their
        // migrations (concurrent CREATE … IF NOT EXISTS can still collide in Postgres).
        let prelude = format!(
            "SELECT pg_advisory_xact_lock(7261001); CREATE SCHEMA IF NOT EXISTS {namespace};"
        );
        if sql_impl::migrate(&pool, &prelude).await.map_err(sql_err)? {
            tracing::info!(
                "metadata tables (re)created; the metadata stage rebuilds them from the log"
            );
        }
        Ok(Self {
            pool,
            hold_pool,
            settle_pool,
            limits_pool,
            writer: None,
        })
    }

    /// Drops this namespace's schema (tests clean up after themselves with it).
    pub async fn drop_namespace(&self, namespace: &str) -> StoreResult<()> {
        crate::check_namespace(namespace)?;
        let ddl = format!("DROP SCHEMA IF EXISTS {namespace} CASCADE");
        sqlx::raw_sql(&ddl)
            .execute(&self.pool)
            .await
            .map_err(sql_err)?;
        Ok(())
    }
}

impl PgMetadata {
    /// How a write transaction starts (row locks are taken as it goes).
    pub(crate) const BEGIN_WRITE: &'static str = "BEGIN";
}

crate::sqlmeta::metadata_sql_impl!(PgMetadata, sqlx::Postgres, sqlx::postgres::PgRow);
crate::sessions::session_sql_impl!(PgMetadata);
crate::sqlmoney::money_sql_impl!(PgMetadata, sqlx::Postgres, sqlx_batches);
