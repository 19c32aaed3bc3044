//! The rate-limit engine's counters and leases on Postgres (see `limits.rs`), shared by every
//! process of a deployment, so a limit is exact across nodes.
//!
//! Taking a call's counters is one statement: an upsert of every counter (in key order, so two
//! calls never wait on each other in a cycle) adding one. A counter past its limit fails the
//! row's `CHECK (n <= lim)`, which aborts the whole statement: nothing is taken. A key's
//! concurrency slots are rows (`rate_slots`, made on first use); taking one is one statement
//! that claims a free or expired slot with `FOR UPDATE SKIP LOCKED`, so calls never wait on
//! each other and two never hold the same slot; a slot left by a dead process expires. A
//! call's admission (its slot and its counters) is both in one statement, so it costs one
//! round trip.
//!
//! These statements run on connections with `synchronous_commit = off`: a limit is not money,
//! and a count lost with a crash of the Postgres server only lets a few calls more through,
//! while a WAL flush per call would put every call of a key in single file behind the
//! counter's row lock (measured: 593 executions/s instead of 1,767 with one transaction per
//! slot).

use crate::limits::{Admission, Counter, LimitStore, Slot};
use crate::pg::PgMetadata;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::Row;
use std::sync::atomic::{AtomicU64, Ordering};

fn sql_err(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

const CHECK_VIOLATION: &str = "23514";

/// Takes between cleanups of the windows and leases that are over.
const CLEANUP_EVERY: u64 = 1000;
static TAKES: AtomicU64 = AtomicU64::new(0);

impl PgMetadata {
    async fn cleanup_limits(&self, now_ms: i64) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let _ = sqlx::query("DELETE FROM rate_counters WHERE window_end < $1")
                .bind(now_ms)
                .execute(&pool)
                .await;
        });
    }
}

fn sorted(counters: &[Counter]) -> Vec<&Counter> {
    let mut v: Vec<&Counter> = counters.iter().collect();
    v.sort_by(|a, b| a.key.cmp(&b.key).then(a.start_ms.cmp(&b.start_ms)));
    v
}

/// The counts an upsert of `counters` returned, in the order of `counters` (a row is
/// `counter_key`, `window_start`, `n`; rows without a key are skipped).
fn counts_of(counters: &[Counter], rows: &[sqlx::postgres::PgRow]) -> StoreResult<Vec<u64>> {
    let mut after = std::collections::HashMap::new();
    for r in rows {
        let key: Option<String> = r.try_get("counter_key").map_err(sql_err)?;
        let start: Option<i64> = r.try_get("window_start").map_err(sql_err)?;
        let n: i64 = r.try_get("n").map_err(sql_err)?;
        if let (Some(key), Some(start)) = (key, start) {
            after.insert((key, start), n.max(0) as u64);
        }
    }
    Ok(counters
        .iter()
        .map(|c| {
            after
                .get(&(c.key.clone(), c.start_ms))
                .copied()
                .unwrap_or(0)
        })
        .collect())
}

/// The rows of `counters` for an upsert, in key order (so two calls never wait on each
/// other in a cycle), each adding one.
fn push_counter_rows(q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, counters: &[Counter]) {
    q.push_values(sorted(counters), |mut b, c| {
        b.push_bind(c.key.clone())
            .push_bind(c.start_ms)
            .push_bind(1_i64)
            .push_bind(c.limit.min(i64::MAX as u64) as i64)
            .push_bind(c.end_ms);
    });
}

const UPSERT_TAIL: &str =
    " ON CONFLICT (counter_key, window_start) DO UPDATE SET n = rate_counters.n + 1, \
     lim = EXCLUDED.lim RETURNING counter_key, window_start, n";

impl PgMetadata {
    /// Makes the `max` slots of `key` (first use, or a larger plan); a call that finds
    /// them being made waits for them.
    async fn make_slots(&self, key: &str, max: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO rate_slots (slot_key, slot_no, lease_id, expires_at_ms) \
             SELECT $1, g, '', 0 FROM generate_series(1, $2) AS g ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(max)
        .execute(&self.limits_pool)
        .await
        .map_err(sql_err)?;
        Ok(())
    }

    /// [`LimitStore::admit`] in one statement: the slot's claim (as in `acquire`) and the
    /// counters' upsert (as in `take`, only when a slot was claimed); a full counter fails
    /// the `CHECK`, which undoes the claim too. The first row answers whether a slot was
    /// claimed.
    async fn admit_once(
        &self,
        slot: &Slot,
        counters: &[Counter],
        now_ms: i64,
    ) -> StoreResult<Admission> {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "WITH s AS (UPDATE rate_slots SET lease_id = ",
        );
        q.push_bind(slot.lease_id.clone())
            .push(", expires_at_ms = ")
            .push_bind(slot.expires_ms)
            .push(
                " WHERE (slot_key, slot_no) = (SELECT slot_key, slot_no FROM rate_slots \
                 WHERE slot_key = ",
            )
            .push_bind(slot.key.clone())
            .push(" AND slot_no <= ")
            .push_bind(slot.max.min(i64::MAX as u64) as i64)
            .push(" AND expires_at_ms <= ")
            .push_bind(now_ms)
            .push(
                " ORDER BY slot_no LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot_no), \
                 c AS (INSERT INTO rate_counters (counter_key, window_start, n, lim, window_end) \
                 SELECT * FROM (",
            );
        push_counter_rows(&mut q, counters);
        q.push(") AS v WHERE EXISTS (SELECT 1 FROM s)")
            .push(UPSERT_TAIL)
            .push(
                ") SELECT NULL::text AS counter_key, NULL::bigint AS window_start, \
                 (SELECT count(*) FROM s) AS n \
                 UNION ALL SELECT counter_key, window_start, n FROM c",
            );
        let rows = match q.build().fetch_all(&self.limits_pool).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(CHECK_VIOLATION) => {
                return Ok(Admission::Full)
            }
            Err(e) => return Err(sql_err(e)),
        };
        let mut claimed = 0_i64;
        for r in &rows {
            let key: Option<String> = r.try_get("counter_key").map_err(sql_err)?;
            if key.is_none() {
                claimed = r.try_get("n").map_err(sql_err)?;
            }
        }
        if claimed == 0 {
            return Ok(Admission::NoSlot);
        }
        Ok(Admission::Taken(counts_of(counters, &rows)?))
    }
}

#[async_trait]
impl LimitStore for PgMetadata {
    async fn take(&self, counters: &[Counter], now_ms: i64) -> StoreResult<Option<Vec<u64>>> {
        if counters.is_empty() {
            return Ok(Some(Vec::new()));
        }
        if TAKES.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == 0 {
            self.cleanup_limits(now_ms).await;
        }
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO rate_counters (counter_key, window_start, n, lim, window_end) ",
        );
        push_counter_rows(&mut q, counters);
        q.push(UPSERT_TAIL);
        let rows = match q.build().fetch_all(&self.limits_pool).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(CHECK_VIOLATION) => {
                return Ok(None)
            }
            Err(e) => return Err(sql_err(e)),
        };
        Ok(Some(counts_of(counters, &rows)?))
    }

    async fn counts(&self, counters: &[Counter]) -> StoreResult<Vec<u64>> {
        let mut out = Vec::with_capacity(counters.len());
        for c in counters {
            let n: Option<i64> = sqlx::query_scalar(
                "SELECT n FROM rate_counters WHERE counter_key = $1 AND window_start = $2",
            )
            .bind(&c.key)
            .bind(c.start_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err)?;
            out.push(n.unwrap_or(0).max(0) as u64);
        }
        Ok(out)
    }

    async fn acquire(
        &self,
        key: &str,
        lease_id: &str,
        max: u64,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<bool> {
        let max = max.min(i64::MAX as u64) as i64;
        for attempt in 0..2 {
            let taken = sqlx::query(
                "UPDATE rate_slots SET lease_id = $1, expires_at_ms = $2 \
                 WHERE (slot_key, slot_no) = (SELECT slot_key, slot_no FROM rate_slots \
                     WHERE slot_key = $3 AND slot_no <= $4 AND expires_at_ms <= $5 \
                     ORDER BY slot_no LIMIT 1 FOR UPDATE SKIP LOCKED)",
            )
            .bind(lease_id)
            .bind(expires_ms)
            .bind(key)
            .bind(max)
            .bind(now_ms)
            .execute(&self.limits_pool)
            .await
            .map_err(sql_err)?
            .rows_affected();
            if taken == 1 {
                return Ok(true);
            }
            if attempt == 0 {
                // The key's slots may not exist yet: make them, then try again.
                self.make_slots(key, max).await?;
            }
        }
        Ok(false)
    }

    async fn release(&self, lease_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE rate_slots SET expires_at_ms = 0 WHERE lease_id = $1")
            .bind(lease_id)
            .execute(&self.limits_pool)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn admit(
        &self,
        slot: &Slot,
        counters: &[Counter],
        now_ms: i64,
    ) -> StoreResult<Admission> {
        if counters.is_empty() {
            let held = self
                .acquire(&slot.key, &slot.lease_id, slot.max, now_ms, slot.expires_ms)
                .await?;
            return Ok(if held {
                Admission::Taken(Vec::new())
            } else {
                Admission::NoSlot
            });
        }
        if TAKES.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == 0 {
            self.cleanup_limits(now_ms).await;
        }
        match self.admit_once(slot, counters, now_ms).await? {
            Admission::NoSlot => {
                // The key's slots may not exist yet: make them, then try again.
                self.make_slots(&slot.key, slot.max.min(i64::MAX as u64) as i64)
                    .await?;
                self.admit_once(slot, counters, now_ms).await
            }
            decided => Ok(decided),
        }
    }
}
