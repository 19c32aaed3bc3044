//! The rate-limit engine's rules and stores. Pure window arithmetic (fixed windows: a limit
//! of N per window admits exactly N calls between its start and its end) and the decision a
//! caller gets (the tightest window, for the `X-RateLimit-*` headers and `Retry-After`);
//! then one small store trait with two implementations: in memory (one process: the embedded
//! backends) and on Postgres (`pg_limits.rs`: counters and leases shared by every process).
//!
//! A call takes one unit of every counter that applies to it **or none**: a call refused by
//! its daily limit does not use up its minute. Concurrency is a lease per call in flight,
//! which expires by itself, so the slots of a process that died come back.

use crate::StoreResult;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// One counted limit as a call sees it: `limit` calls per `[start_ms, end_ms)` for `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// What is limited and by what, e.g. `key:17:minute`; names the limit in a `429`.
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub limit: u64,
}

/// The fixed window of `len_ms` holding `now_ms` (windows start at multiples of `len_ms`
/// since the epoch: minutes and hours on the clock, days at UTC midnight).
pub fn window(now_ms: i64, len_ms: i64) -> (i64, i64) {
    let start = now_ms.div_euclid(len_ms) * len_ms;
    (start, start + len_ms)
}

/// A counter over the fixed window of `len_ms` that holds `now_ms`.
pub fn fixed(key: impl Into<String>, now_ms: i64, len_ms: i64, limit: u64) -> Counter {
    let (start_ms, end_ms) = window(now_ms, len_ms);
    Counter {
        key: key.into(),
        start_ms,
        end_ms,
        limit,
    }
}

/// What the headers say: the limit, what remains and when it resets, of the tightest window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub key: String,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: i64,
}

/// The tightest of `counters` given their counts after this call: the fewest remaining
/// (the soonest reset among equals).
pub fn tightest(counters: &[Counter], counts: &[u64]) -> Option<Standing> {
    counters
        .iter()
        .zip(counts)
        .map(|(c, n)| Standing {
            key: c.key.clone(),
            limit: c.limit,
            remaining: c.limit.saturating_sub(*n),
            reset_ms: c.end_ms,
        })
        .min_by(|a, b| {
            a.remaining
                .cmp(&b.remaining)
                .then(a.reset_ms.cmp(&b.reset_ms))
        })
}

/// The counter that refuses one more call given the counts before it (the one whose window
/// frees up last, if several are full).
pub fn refusing<'a>(counters: &'a [Counter], counts: &[u64]) -> Option<&'a Counter> {
    counters
        .iter()
        .zip(counts)
        .filter(|(c, n)| **n >= c.limit)
        .map(|(c, _)| c)
        .max_by_key(|c| c.end_ms)
}

/// Whole seconds until `reset_ms` (at least 1): what `Retry-After` says.
pub fn retry_after_secs(now_ms: i64, reset_ms: i64) -> u64 {
    ((reset_ms - now_ms).max(1) as u64).div_ceil(1000)
}

/// Where limits are counted.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Takes one unit of every counter, or of none: the counts after this call, or `None`
    /// when one of them is full (then nothing was taken).
    async fn take(&self, counters: &[Counter], now_ms: i64) -> StoreResult<Option<Vec<u64>>>;
    /// The counts of `counters` as they stand.
    async fn counts(&self, counters: &[Counter]) -> StoreResult<Vec<u64>>;
    /// Takes one of `max` slots of `key` until `expires_ms` (or until released): `false` when
    /// all are taken.
    async fn acquire(
        &self,
        key: &str,
        lease_id: &str,
        max: u64,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<bool>;
    async fn release(&self, lease_id: &str) -> StoreResult<()>;

    /// A call's whole admission in one step: a slot (see [`LimitStore::acquire`]) and one
    /// unit of every counter (see [`LimitStore::take`]), or nothing at all. A store that can
    /// do it in one round trip overrides this; the default is the three calls in turn.
    async fn admit(
        &self,
        slot: &Slot,
        counters: &[Counter],
        now_ms: i64,
    ) -> StoreResult<Admission> {
        let held = self
            .acquire(&slot.key, &slot.lease_id, slot.max, now_ms, slot.expires_ms)
            .await?;
        if !held {
            return Ok(Admission::NoSlot);
        }
        match self.take(counters, now_ms).await {
            Ok(Some(counts)) => Ok(Admission::Taken(counts)),
            Ok(None) => {
                self.release(&slot.lease_id).await?;
                Ok(Admission::Full)
            }
            Err(e) => {
                let _ = self.release(&slot.lease_id).await;
                Err(e)
            }
        }
    }
}

/// The concurrency slot a call asks for: one of `max` slots of `key`, held as `lease_id`
/// until `expires_ms` unless released first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: String,
    pub lease_id: String,
    pub max: u64,
    pub expires_ms: i64,
}

/// What [`LimitStore::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The slot and the counters were taken: the counts after this call.
    Taken(Vec<u64>),
    /// Every slot is held: nothing was taken.
    NoSlot,
    /// A counter is full: nothing was taken (the slot neither).
    Full,
}

/// One process's limits, in memory.
#[derive(Default)]
pub struct MemoryLimits {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    counts: HashMap<(String, i64), (u64, i64)>,
    leases: HashMap<String, (String, i64)>,
    calls: u64,
}

impl MemoryState {
    /// Forgets windows and leases that are over (now and then, not on every call).
    fn prune(&mut self, now_ms: i64) {
        self.calls += 1;
        if self.calls % 1024 == 0 {
            self.counts.retain(|_, (_, end)| *end > now_ms);
            self.leases.retain(|_, (_, exp)| *exp > now_ms);
        }
    }
}

fn poisoned() -> crate::StoreError {
    crate::StoreError::Backend("the limit state is poisoned".into())
}

#[async_trait]
impl LimitStore for MemoryLimits {
    async fn take(&self, counters: &[Counter], now_ms: i64) -> StoreResult<Option<Vec<u64>>> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.prune(now_ms);
        let now: Vec<u64> = counters
            .iter()
            .map(|c| {
                s.counts
                    .get(&(c.key.clone(), c.start_ms))
                    .map_or(0, |e| e.0)
            })
            .collect();
        if refusing(counters, &now).is_some() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(counters.len());
        for c in counters {
            let e = s
                .counts
                .entry((c.key.clone(), c.start_ms))
                .or_insert((0, c.end_ms));
            e.0 += 1;
            out.push(e.0);
        }
        Ok(Some(out))
    }

    async fn counts(&self, counters: &[Counter]) -> StoreResult<Vec<u64>> {
        let s = self.state.lock().map_err(|_| poisoned())?;
        Ok(counters
            .iter()
            .map(|c| {
                s.counts
                    .get(&(c.key.clone(), c.start_ms))
                    .map_or(0, |e| e.0)
            })
            .collect())
    }

    async fn acquire(
        &self,
        key: &str,
        lease_id: &str,
        max: u64,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<bool> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.prune(now_ms);
        let held = s
            .leases
            .values()
            .filter(|(k, exp)| k == key && *exp > now_ms)
            .count() as u64;
        if held >= max {
            return Ok(false);
        }
        s.leases
            .insert(lease_id.to_string(), (key.to_string(), expires_ms));
        Ok(true)
    }

    async fn release(&self, lease_id: &str) -> StoreResult<()> {
        self.state
            .lock()
            .map_err(|_| poisoned())?
            .leases
            .remove(lease_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_on_the_clock() {
        assert_eq!(window(125_000, MINUTE_MS), (120_000, 180_000));
        assert_eq!(window(120_000, MINUTE_MS), (120_000, 180_000));
        assert_eq!(window(-1, MINUTE_MS), (-60_000, 0));
        assert_eq!(window(DAY_MS + 5, DAY_MS), (DAY_MS, 2 * DAY_MS));
    }

    #[test]
    fn the_tightest_window_is_the_one_with_the_fewest_left() {
        let m = fixed("k:minute", 30_000, MINUTE_MS, 60);
        let d = fixed("k:day", 30_000, DAY_MS, 10_000);
        let t = tightest(&[m.clone(), d.clone()], &[59, 59]);
        assert_eq!(
            t,
            Some(Standing {
                key: "k:minute".into(),
                limit: 60,
                remaining: 1,
                reset_ms: 60_000
            })
        );
        assert_eq!(refusing(&[m.clone(), d.clone()], &[60, 5]), Some(&m));
        assert_eq!(
            refusing(&[m.clone(), d.clone()], &[60, 10_000]),
            Some(&d),
            "frees last"
        );
        assert_eq!(refusing(&[m, d], &[59, 9_999]), None);
        assert_eq!(retry_after_secs(30_000, 60_000), 30);
        assert_eq!(retry_after_secs(59_999, 60_000), 1);
        assert_eq!(retry_after_secs(61_000, 60_000), 1);
    }
}
