//! The embedded metadata store on SQLite (sqlx): companies, users, API keys, websites,
//! reference data, settings and the metadata projection's offsets, each batch applied in one
//! transaction with its offsets. The SQL itself is shared with Postgres (`sqlmeta`).

use crate::{StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

fn sql_err(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// SQLite-backed metadata store.
#[derive(Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    /// SQLite has one writer at a time: write transactions take this first, so they queue
    /// here instead of colliding and sleeping in SQLite's busy handler.
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl SqliteMetadata {
    /// Opens (or creates) the database file at `path` and applies the schema.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // LIKE as in Postgres: case-sensitive (search compares lowercased text), and
            // without SQLite's per-character case folding.
            .pragma("case_sensitive_like", "true")
            // Reads (search scans the assets) come from memory, not a copy per page read.
            .pragma("cache_size", "-32768")
            .pragma("mmap_size", "268435456")
            .busy_timeout(Duration::from_secs(5));
        // A local file: nothing to ping before each use (sqlx's default).
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(sql_err)?;
        if sql_impl::migrate(&pool, "").await.map_err(sql_err)? {
            tracing::info!(
                "metadata tables (re)created; the metadata stage rebuilds them from the log"
            );
        }
        Ok(Self {
            pool,
            writer: Some(std::sync::Arc::new(tokio::sync::Mutex::new(()))),
        })
    }
}

crate::sqlmeta::metadata_sql_impl!(SqliteMetadata, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
crate::sessions::session_sql_impl!(SqliteMetadata);
crate::sqlmoney::money_sql_impl!(SqliteMetadata, sqlx::Sqlite);
