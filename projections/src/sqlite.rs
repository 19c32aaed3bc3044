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
    /// Stops the background checkpoints when the last clone of the store is dropped.
    _checkpoints: std::sync::Arc<Checkpoints>,
}

struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            // No checkpoint inside a commit (a few milliseconds, now and then, on a request's
            // path): a background task checkpoints instead (see `checkpoint_every`).
            .pragma("wal_autocheckpoint", "0")
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
        let checkpoints = checkpoint_every(pool.clone(), CHECKPOINT_INTERVAL);
        Ok(Self {
            pool,
            writer: Some(std::sync::Arc::new(tokio::sync::Mutex::new(()))),
            _checkpoints: std::sync::Arc::new(Checkpoints(checkpoints)),
        })
    }
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints the write-ahead log off the request path (PASSIVE: it never waits for, nor
/// blocks, readers and writers), until the store is dropped.
fn checkpoint_every(pool: sqlx::SqlitePool, every: Duration) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
        }
    })
    .abort_handle()
}

crate::sqlmeta::metadata_sql_impl!(SqliteMetadata, sqlx::Sqlite, sqlx::sqlite::SqliteRow);
crate::sessions::session_sql_impl!(SqliteMetadata);
crate::sqlmoney::money_sql_impl!(SqliteMetadata, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MoneyStore;

    /// Commits never checkpoint (`wal_autocheckpoint = 0`), so the database file only grows
    /// when the background task copies the log back into it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_task_checkpoints_the_write_ahead_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let store = SqliteMetadata::open(&path).await.expect("open");
        tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
        let before = std::fs::metadata(&path).expect("db").len();
        for i in 0..300 {
            let key = format!("k{i}");
            store
                .top_up("c", 1, Some("test"), &key, "h", i)
                .await
                .expect("top up");
        }
        let wal = std::fs::metadata(dir.path().join("m.db-wal"))
            .expect("wal")
            .len();
        assert!(wal > 0, "the writes are in the log");
        let mut grew = false;
        for _ in 0..40 {
            tokio::time::sleep(CHECKPOINT_INTERVAL / 2).await;
            if std::fs::metadata(&path).expect("db").len() > before {
                grew = true;
                break;
            }
        }
        assert!(grew, "the log was copied back into the database file");
    }
}
