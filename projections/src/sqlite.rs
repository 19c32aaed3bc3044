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
    /// Runs each batch of holds or settlements as one transaction (see `sqlite_money`).
    money: std::sync::Arc<crate::sqlite_money::MoneyThread>,
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
        let writer = Some(std::sync::Arc::new(tokio::sync::Mutex::new(())));
        let money = crate::sqlite_money::MoneyThread::open(path, writer.clone())?;
        let checkpoints = checkpoint_every(
            pool.clone(),
            CHECKPOINT_INTERVAL,
            writer.clone(),
            WAL_RESTART_FRAMES,
        );
        Ok(Self {
            pool,
            writer,
            _checkpoints: std::sync::Arc::new(Checkpoints(checkpoints)),
            money: std::sync::Arc::new(money),
        })
    }

    /// Write transactions take the write lock at their start: a deferred one that read first
    /// can fail to upgrade (`SQLITE_BUSY`, no busy wait) once a checkpoint restarted the log.
    pub(crate) const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    // The money path's hot calls go to the money writer, which batches whatever is waiting
    // (so this store needs no `GroupCommit` in front of it); so do the outbox relay's, which
    // then never hold the writer turn across sqlx hand-offs.

    pub(crate) async fn commit_holds(
        &self,
        holds: &[crate::Hold],
    ) -> StoreResult<Vec<crate::HoldOutcome>> {
        self.money.hold_batch(holds).await
    }

    pub(crate) async fn commit_settles(&self, settles: &[crate::Settle]) -> StoreResult<Vec<i64>> {
        self.money.settle_batch(settles).await
    }

    pub(crate) async fn hold_now(&self, h: &crate::Hold) -> StoreResult<crate::HoldOutcome> {
        let out = self.money.hold_batch(std::slice::from_ref(h)).await?;
        out.into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("the money writer gave no answer".into()))
    }

    pub(crate) async fn claim_now(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<crate::OutboxRecord>> {
        self.money.claim(limit, now_ms, lease_ms).await
    }

    pub(crate) async fn note_now(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
        self.money.note(ids, log_from).await
    }

    pub(crate) async fn mark_now(&self, ids: &[String]) -> StoreResult<()> {
        self.money.mark(ids).await
    }

    pub(crate) async fn settle_now(&self, x: &crate::Settle) -> StoreResult<i64> {
        let out = self.money.settle_batch(std::slice::from_ref(x)).await?;
        out.into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("the money writer gave no answer".into()))
    }
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Frames in the write-ahead log (4 KiB pages: 64 MiB) past which it is restarted.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// How long one truncating checkpoint may wait for readers to leave the log before it gives
/// up until the next tick: it holds the writer turn meanwhile, so this bounds how long a
/// write can wait for it.
const TRUNCATE_WAIT: Duration = Duration::from_millis(100);

/// Checkpoints the write-ahead log off the request path, until the store is dropped. Each
/// tick is PASSIVE: it never waits for, nor blocks, readers and writers. But a passive
/// checkpoint never moves the log back to its start while there is always a reader or a
/// writer, so under steady load the log only grows (1.2 GB in 16 s at full money throughput
/// here), and every page read then searches a longer log index. So once the log holds more
/// than `restart_frames`, the tick takes the writer turn and checkpoints with TRUNCATE, which
/// empties the log itself. RESTART is not enough: it leaves the emptying to the next writer,
/// which skips it whenever a reader is still on the log, so under steady reads the log went
/// on growing after "successful" restarts. The checkpoints run on a connection of their own
/// whose busy timeout is [`TRUNCATE_WAIT`], so a truncation that cannot get past the readers
/// gives up quickly (the next tick tries again) instead of holding every writer back for the
/// pool's 5 s.
fn checkpoint_every(
    pool: sqlx::SqlitePool,
    every: Duration,
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    restart_frames: i64,
) -> tokio::task::AbortHandle {
    use sqlx::Connection;
    tokio::spawn(async move {
        let opts = (*pool.connect_options())
            .clone()
            .busy_timeout(TRUNCATE_WAIT);
        let mut tick = tokio::time::interval(every);
        let mut conn = None;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            if conn.is_none() {
                match sqlx::SqliteConnection::connect_with(&opts).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint connection failed; retrying");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let frames = match log_frames(&mut *c, "PASSIVE").await {
                Ok(frames) => frames,
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    conn = None;
                    continue;
                }
            };
            if frames > restart_frames {
                let _turn = crate::sqlmeta::write_turn(&writer).await;
                if let Err(e) = log_frames(&mut *c, "TRUNCATE").await {
                    tracing::warn!(error = %e, frames, "WAL truncation failed; retrying");
                }
            }
        }
    })
    .abort_handle()
}

/// Checkpoints in `mode`; the frames in the log (every row read, so the statement is done).
async fn log_frames<'e, E: sqlx::SqliteExecutor<'e>>(
    ex: E,
    mode: &str,
) -> Result<i64, sqlx::Error> {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    let rows = sqlx::query_as::<_, (i64, i64, i64)>(&sql)
        .fetch_all(ex)
        .await?;
    Ok(rows.first().map_or(0, |r| r.1))
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

    /// Concurrent holds reach the money writer as separate jobs and are committed together;
    /// each still gets its own answer, and a balance that covers exactly 10 holds 10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_holds_are_committed_together_and_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(
            SqliteMetadata::open(&dir.path().join("m.db"))
                .await
                .expect("open"),
        );
        store
            .top_up("buyer", 30, None, "k", "h", 1)
            .await
            .expect("top up");
        let calls = (0..50).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .hold(&crate::Hold {
                        execution_id: format!("x{i}"),
                        buyer_company_id: "buyer".into(),
                        seller_company_id: "seller".into(),
                        platform_company_id: "platform".into(),
                        asset_id: "a".into(),
                        api_key_id: 1,
                        user_id: "u".into(),
                        cost: 3,
                        seller_share: 2,
                        platform_fee: 1,
                        at_ms: 2,
                    })
                    .await
            })
        });
        let mut held = 0;
        for call in calls {
            match call.await.expect("task").expect("hold") {
                crate::HoldOutcome::Held { .. } => held += 1,
                crate::HoldOutcome::Insufficient { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(held, 10);
        assert_eq!(store.balance("buyer").await.expect("balance"), 0);
        for c in store.balance_checks().await.expect("checks") {
            assert_eq!(c.balance, c.ledger_sum, "{}", c.company_id);
        }
        let settled = store
            .settle_batch(&[crate::Settle {
                execution_id: "x0".into(),
                succeeded: true,
                rows: 1,
                duration_ms: 1.0,
                at_ms: 3,
            }])
            .await;
        assert!(settled.is_ok());
    }
    /// Under steady writes with a reader always in the log, the log never starts over by
    /// itself (a passive checkpoint never finds a quiet moment); past the limit the
    /// background task restarts it, so it stays short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_write_ahead_log_is_restarted_under_steady_load() {
        const TOP_UPS: i64 = 1_200;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMetadata::open(&dir.path().join("m.db"))
            .await
            .expect("open");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2u64)
            .map(|k| {
                let (pool, stop) = (store.pool.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(k)).await;
                    while !stop.load(Ordering::Relaxed) {
                        let mut c = pool.acquire().await.expect("reader");
                        sqlx::query("BEGIN").execute(&mut *c).await.expect("begin");
                        sqlx::query("SELECT count(*) FROM balances")
                            .fetch_all(&mut *c)
                            .await
                            .expect("read");
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        sqlx::query("COMMIT").execute(&mut *c).await.expect("end");
                    }
                })
            })
            .collect();
        let restarts = checkpoint_every(
            store.pool.clone(),
            Duration::from_millis(50),
            store.writer.clone(),
            200,
        );
        // Steady load: writes all along (each top-up a few frames), readers all along.
        // Without the restart the log only grows (a passive checkpoint never lets it start
        // over); with it, it is cut back each time it passes the limit, so it is short when
        // the writes end.
        for i in 0..TOP_UPS {
            store
                .top_up("c", 1, None, &format!("k{i}"), "h", i)
                .await
                .expect("top up");
        }
        let frames = log_frames(&store.pool, "PASSIVE").await.expect("frames");
        stop.store(true, Ordering::Relaxed);
        restarts.abort();
        for r in readers {
            r.await.expect("reader");
        }
        // The same writes leave about 12,000 frames without the truncation; with it, the
        // log holds what came since the last one that got past the readers (150–1,400 here).
        assert!(
            frames < 3_000,
            "the log stayed long: {frames} frames after {TOP_UPS} top-ups"
        );
    }
}
