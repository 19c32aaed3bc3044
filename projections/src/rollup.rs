//! Rollups of a seller's sales (live executions by other companies), kept beside the metered
//! rows so seller analytics read a few thousand rollup rows instead of every execution.
//! This module is pure: the deltas a batch of newly stored executions adds to each rollup,
//! and the arithmetic that decides when a read can be answered exactly from them.
//!
//! The rollups: per (seller, asset, UTC hour) and per (seller, buyer, UTC day) the sums and
//! the first and last sale; all time per (seller, buyer), per (seller, asset) and the first and
//! last sale of each (seller, asset, buyer), and of each (seller, asset, buyer, UTC month). Sums over whole UTC hours give any local period
//! exactly when the time zone's offsets are whole hours. Distinct buyers cannot be summed, so
//! they come from first and last sale times: when no UTC day holds more than one period
//! boundary, a buyer's sales of one day fall in at most two periods, and the first and the
//! last sale of the day name both. Buyers per asset over a range come the same way from the
//! monthly pairs, unless a pair bought before and after a range that lies inside one month.

use crate::analytics::{offset_steps, OffsetSegment};
use crate::usage::UsageRow;
use std::collections::HashMap;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// What a group of sales adds up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sums {
    pub executions: i64,
    pub succeeded: i64,
    /// The seller's share.
    pub revenue: i64,
    /// What the buyers paid.
    pub spent: i64,
    pub duration_ms_sum: f64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Sums {
    fn of(r: &UsageRow) -> Self {
        Self {
            executions: 1,
            succeeded: i64::from(r.status == "succeeded"),
            revenue: r.seller_credits,
            spent: r.credits,
            duration_ms_sum: r.duration_ms,
            first_ms: r.at_ms,
            last_ms: r.at_ms,
        }
    }

    fn add(&mut self, o: &Sums) {
        self.executions += o.executions;
        self.succeeded += o.succeeded;
        self.revenue += o.revenue;
        self.spent += o.spent;
        self.duration_ms_sum += o.duration_ms_sum;
        self.first_ms = self.first_ms.min(o.first_ms);
        self.last_ms = self.last_ms.max(o.last_ms);
    }
}

/// Whether a metered execution is a sale: live, and bought by another company.
pub fn is_sale(r: &UsageRow) -> bool {
    r.mode == "live" && r.buyer_company_id != r.seller_company_id
}

/// What a batch of newly stored executions adds to each rollup, keyed as the tables are.
#[derive(Debug, Default)]
pub struct SalesDeltas {
    /// (seller, asset, hour start)
    pub hourly: HashMap<(String, String, i64), Sums>,
    /// (seller, buyer, UTC day start)
    pub buyer_daily: HashMap<(String, String, i64), Sums>,
    /// (seller, buyer), all time
    pub buyers: HashMap<(String, String), Sums>,
    /// (seller, asset), all time
    pub assets: HashMap<(String, String), Sums>,
    /// (seller, asset, buyer), all time: only first and last sale are read.
    pub asset_buyers: HashMap<(String, String, String), Sums>,
    /// (seller, asset, buyer, UTC month start): first and last sale, for buyers per asset
    /// over a range.
    pub asset_buyers_monthly: HashMap<(String, String, String, i64), Sums>,
}

fn merge<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Sums>, k: K, s: &Sums) {
    map.entry(k).and_modify(|t| t.add(s)).or_insert(*s);
}

impl SalesDeltas {
    /// The deltas of `rows` (every one new to the store; non-sales are left out).
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a UsageRow>) -> Self {
        let mut d = Self::default();
        for r in rows.into_iter().filter(|r| is_sale(r)) {
            let s = Sums::of(r);
            let (seller, buyer, asset) = (&r.seller_company_id, &r.buyer_company_id, &r.asset_id);
            let hour = r.at_ms.div_euclid(HOUR_MS) * HOUR_MS;
            let day = r.at_ms.div_euclid(DAY_MS) * DAY_MS;
            merge(&mut d.hourly, (seller.clone(), asset.clone(), hour), &s);
            merge(&mut d.buyer_daily, (seller.clone(), buyer.clone(), day), &s);
            merge(&mut d.buyers, (seller.clone(), buyer.clone()), &s);
            merge(&mut d.assets, (seller.clone(), asset.clone()), &s);
            merge(
                &mut d.asset_buyers,
                (seller.clone(), asset.clone(), buyer.clone()),
                &s,
            );
            merge(
                &mut d.asset_buyers_monthly,
                (
                    seller.clone(),
                    asset.clone(),
                    buyer.clone(),
                    month_start(r.at_ms),
                ),
                &s,
            );
        }
        d
    }
}

/// The start of the UTC month holding `ts`, as epoch ms.
pub fn month_start(ts: i64) -> i64 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(ts)
        .and_then(|t| t.date_naive().with_day(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(ts.div_euclid(DAY_MS) * DAY_MS, |t| {
            t.and_utc().timestamp_millis()
        })
}

/// The local offset at UTC `ts` over the segments.
pub fn offset_at(tz: &[OffsetSegment], ts: i64) -> i64 {
    let (steps, last) = offset_steps(tz);
    steps
        .iter()
        .find(|(before, _)| ts < *before)
        .map_or(last, |(_, offset)| *offset)
}

/// Whether a read of `[from_ms, to_ms)` over these offsets can come from the rollups: every
/// offset and every change of offset falls on a whole hour (so each UTC hour lies in one local
/// period), and the range starts and ends at local midnights (so every boundary of a read is
/// a local midnight; with whole-hour offsets that change by at most an hour, local midnights
/// are at least 23 hours apart and no UTC day holds two of them strictly inside it).
pub fn rollups_answer(tz: &[OffsetSegment], from_ms: i64, to_ms: i64) -> bool {
    let whole_hours = tz
        .iter()
        .all(|s| s.offset_ms % HOUR_MS == 0 && s.from_ms % HOUR_MS == 0);
    let small_steps = tz
        .windows(2)
        .all(|w| (w[1].offset_ms - w[0].offset_ms).abs() <= HOUR_MS);
    let midnight = |ts: i64| (ts + offset_at(tz, ts)).rem_euclid(DAY_MS) == 0;
    whole_hours && small_steps && from_ms < to_ms && midnight(from_ms) && midnight(to_ms)
}

/// The UTC days lying wholly inside `[from_ms, to_ms)`, as `[start, end)`: the rest of the
/// range (its ragged edges) is read from the metered rows. Empty (`start == end == to_ms`)
/// when the range holds no whole day.
pub fn whole_days(from_ms: i64, to_ms: i64) -> (i64, i64) {
    let start = (from_ms + DAY_MS - 1).div_euclid(DAY_MS) * DAY_MS;
    let end = to_ms.div_euclid(DAY_MS) * DAY_MS;
    if start >= end {
        (to_ms, to_ms)
    } else {
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(buyer: &str, asset: &str, at_ms: i64, ok: bool) -> UsageRow {
        UsageRow {
            execution_id: format!("{buyer}-{asset}-{at_ms}"),
            buyer_company_id: buyer.into(),
            seller_company_id: "s".into(),
            asset_id: asset.into(),
            api_key_id: 1,
            user_id: "u".into(),
            credits: if ok { 10 } else { 0 },
            seller_credits: if ok { 8 } else { 0 },
            rows: 1,
            duration_ms: 2.0,
            status: if ok { "succeeded" } else { "failed" }.into(),
            mode: "live".into(),
            at_ms,
        }
    }

    #[test]
    fn deltas_sum_sales_per_key_and_leave_out_own_runs_and_test_mode() {
        let mut own = sale("s", "a", 10, true);
        own.buyer_company_id = "s".into();
        let mut test = sale("b", "a", 20, true);
        test.mode = "test".into();
        let rows = [
            sale("b", "a", 5, true),
            sale("b", "a", HOUR_MS + 1, false),
            sale("c", "a", DAY_MS + 7, true),
            own,
            test,
        ];
        let d = SalesDeltas::of(&rows);
        let a = d.assets[&("s".to_string(), "a".to_string())];
        assert_eq!(
            (a.executions, a.succeeded, a.revenue, a.spent),
            (3, 2, 16, 20)
        );
        assert_eq!((a.first_ms, a.last_ms), (5, DAY_MS + 7));
        assert_eq!(d.hourly.len(), 3);
        assert_eq!(d.buyer_daily.len(), 2);
        let b = d.buyers[&("s".to_string(), "b".to_string())];
        assert_eq!((b.executions, b.first_ms, b.last_ms), (2, 5, HOUR_MS + 1));
        assert_eq!(d.asset_buyers.len(), 2);
        assert_eq!(d.asset_buyers_monthly.len(), 2);
    }

    #[test]
    fn month_start_is_the_first_of_the_utc_month() {
        // 2026-11-30T23:30:00Z and 2026-12-01T00:00:00Z.
        assert_eq!(month_start(1_796_081_400_000), 1_793_491_200_000);
        assert_eq!(month_start(1_796_083_200_000), 1_796_083_200_000);
    }

    #[test]
    fn rollups_answer_whole_hour_zones_between_local_midnights() {
        let berlin = |from, to| crate::offset_segments(chrono_tz::Europe::Berlin, from, to);
        // 2026-10-01T00:00+02:00 to 2026-11-01T00:00+01:00: across the October change.
        let (from, to) = (1_790_805_600_000, 1_793_487_600_000);
        assert!(rollups_answer(&berlin(from, to), from, to));
        assert!(!rollups_answer(
            &berlin(from + HOUR_MS, to),
            from + HOUR_MS,
            to
        ));
        let kolkata = crate::offset_segments(chrono_tz::Asia::Kolkata, 0, DAY_MS);
        // Local midnight in Kolkata is 18:30 UTC: never on a whole-hour offset.
        let (f, t) = (
            DAY_MS - 5 * HOUR_MS - HOUR_MS / 2,
            2 * DAY_MS - 5 * HOUR_MS - HOUR_MS / 2,
        );
        assert!(!rollups_answer(&kolkata, f, t));
        assert!(rollups_answer(&[], 0, DAY_MS));
        assert!(!rollups_answer(&[], DAY_MS, DAY_MS));
        // A two-hour change (Antarctica/Troll) would put two local midnights in a UTC day.
        let troll = [
            OffsetSegment {
                from_ms: 0,
                offset_ms: 0,
            },
            OffsetSegment {
                from_ms: DAY_MS,
                offset_ms: 2 * HOUR_MS,
            },
        ];
        assert!(!rollups_answer(&troll, 0, 3 * DAY_MS - 2 * HOUR_MS));
    }

    #[test]
    fn whole_days_leave_the_ragged_edges() {
        assert_eq!(whole_days(0, 3 * DAY_MS), (0, 3 * DAY_MS));
        assert_eq!(whole_days(-HOUR_MS, 2 * DAY_MS - HOUR_MS), (0, DAY_MS));
        assert_eq!(
            whole_days(HOUR_MS, DAY_MS + HOUR_MS),
            (DAY_MS + HOUR_MS, DAY_MS + HOUR_MS)
        );
    }
}
