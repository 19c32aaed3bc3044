//! Asset statistics from the executions the money store keeps: how often each asset ran, for
//! how many buying companies, what it earned its seller, how often it failed and how long it
//! took, in total and per UTC day. Pure functions over plain rows; the store only selects them.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// One settled (or still held) execution, as the statistics need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    pub asset_id: String,
    pub buyer_company_id: String,
    pub seller_company_id: String,
    /// `held`, `succeeded` or `failed`.
    pub status: String,
    pub seller_share: i64,
    pub duration_ms: Option<f64>,
    pub created_at_ms: i64,
}

/// Totals over a set of executions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionTotals {
    pub executions: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failed over settled executions (0 when none settled).
    pub error_rate: f64,
    /// Other companies that ran it successfully or not (the seller's own runs are not buyers).
    pub distinct_buyers: u64,
    /// Credits the seller earned: its share of each successful execution.
    pub revenue_credits: i64,
    pub p50_duration_ms: Option<f64>,
    pub p95_duration_ms: Option<f64>,
}

/// The totals of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayTotals {
    /// `YYYY-MM-DD`
    pub date: String,
    #[serde(flatten)]
    pub totals: ExecutionTotals,
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of `sorted`, which is ascending.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The totals of `rows`.
pub fn totals<'a>(rows: impl IntoIterator<Item = &'a ExecutionRow>) -> ExecutionTotals {
    let (mut executions, mut succeeded, mut failed, mut revenue) = (0u64, 0u64, 0u64, 0i64);
    let mut buyers = HashSet::new();
    let mut durations = Vec::new();
    for r in rows {
        executions += 1;
        match r.status.as_str() {
            "succeeded" => {
                succeeded += 1;
                revenue += r.seller_share;
            }
            "failed" => failed += 1,
            _ => {}
        }
        if r.buyer_company_id != r.seller_company_id {
            buyers.insert(r.buyer_company_id.as_str());
        }
        durations.extend(r.duration_ms.filter(|d| d.is_finite()));
    }
    durations.sort_by(f64::total_cmp);
    let settled = succeeded + failed;
    ExecutionTotals {
        executions,
        succeeded,
        failed,
        error_rate: if settled == 0 {
            0.0
        } else {
            failed as f64 / settled as f64
        },
        distinct_buyers: buyers.len() as u64,
        revenue_credits: revenue,
        p50_duration_ms: percentile(&durations, 0.50),
        p95_duration_ms: percentile(&durations, 0.95),
    }
}

/// The UTC date of an instant.
fn day_of(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Totals per UTC day, oldest first (days without executions are left out).
pub fn per_day(rows: &[ExecutionRow]) -> Vec<DayTotals> {
    let mut days: BTreeMap<String, Vec<&ExecutionRow>> = BTreeMap::new();
    for r in rows {
        days.entry(day_of(r.created_at_ms)).or_default().push(r);
    }
    days.into_iter()
        .map(|(date, rows)| DayTotals {
            date,
            totals: totals(rows),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(buyer: &str, status: &str, share: i64, ms: f64, at_ms: i64) -> ExecutionRow {
        ExecutionRow {
            asset_id: "a".into(),
            buyer_company_id: buyer.into(),
            seller_company_id: "seller".into(),
            status: status.into(),
            seller_share: share,
            duration_ms: Some(ms),
            created_at_ms: at_ms,
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn totals_count_buyers_revenue_failures_and_durations() {
        let rows = vec![
            row("b1", "succeeded", 3, 10.0, 0),
            row("b1", "succeeded", 3, 30.0, 1),
            row("b2", "failed", 3, 20.0, 2),
            row("seller", "succeeded", 0, 40.0, 3),
            row("b3", "held", 3, f64::NAN, 4),
        ];
        let t = totals(&rows);
        assert_eq!((t.executions, t.succeeded, t.failed), (5, 3, 1));
        assert_eq!(
            t.distinct_buyers, 3,
            "the seller's own runs are not a buyer"
        );
        assert_eq!(t.revenue_credits, 6, "only successful runs earn");
        assert_eq!(t.error_rate, 0.25);
        assert_eq!(t.p50_duration_ms, Some(20.0));
        assert_eq!(t.p95_duration_ms, Some(40.0));
    }

    #[test]
    fn no_executions_is_all_zero() {
        let t = totals(&[]);
        assert_eq!(
            (t.executions, t.error_rate, t.p50_duration_ms),
            (0, 0.0, None)
        );
    }

    #[test]
    fn days_are_utc_and_oldest_first() {
        let rows = vec![
            row("b1", "succeeded", 1, 1.0, DAY + 5),
            row("b1", "succeeded", 1, 1.0, 5),
            row("b2", "failed", 1, 1.0, DAY - 1),
        ];
        let days = per_day(&rows);
        assert_eq!(
            days.iter()
                .map(|d| (d.date.as_str(), d.totals.executions))
                .collect::<Vec<_>>(),
            vec![("1970-01-01", 2), ("1970-01-02", 1)]
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
    }
}
