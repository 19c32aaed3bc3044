//! Metered usage in the analytics store: one row per execution (`UsageRecorded` from
//! `tally.usage`, deduplicated by execution id, stored with the metering consumer's offsets),
//! and the reads over it. The month, day and key/asset breakdowns are computed in the store
//! from the rows; the local day of a row comes from the same DST offset segments as the
//! dashboards (`analytics::OffsetSegment`).

use crate::analytics::OffsetSegment;
use crate::seller::{Bucket, NewBuyers, SellerGroup, SellerQuery, SellerRow};
use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use serde::Serialize;

/// One metered execution: the `UsageRecorded` record itself, as the outbox put it on the log.
pub type UsageRow = schemas::UsageRecorded;

/// Which executions a usage read covers: a buyer's (with one key, or all), in
/// `[from_ms, to_ms)`, of one mode, with the local offsets of the buyer's time zone over the
/// range (for days).
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub buyer_company_id: String,
    pub api_key_id: Option<i64>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub mode: String,
    pub tz: Vec<OffsetSegment>,
}

/// Counts over a set of executions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageCount {
    pub executions: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub credits: i64,
    pub rows: i64,
}

/// Usage of one period: in total, per local day (local midnight as epoch ms, ascending), per
/// key and per asset (most executions first, then id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    pub total: UsageCount,
    pub by_day: Vec<(i64, UsageCount)>,
    pub by_key: Vec<(i64, UsageCount)>,
    pub by_asset: Vec<(String, UsageCount)>,
}

/// Everything metered, per mode, each execution once: what `tally reconcile` compares with
/// the money store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub live_executions: u64,
    /// What buyers paid for live executions (0 for failed ones).
    pub live_credits: i64,
    /// The sellers' shares of it.
    pub live_seller_credits: i64,
    pub test_executions: u64,
    /// Each rollup's figure against the same figure from the rows: (what, rolled up, rows).
    /// Empty where the store keeps no rollups.
    pub rollups: Vec<(String, i64, i64)>,
}

/// The metering projection's store (the analytics store: DuckDB or ClickHouse).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Stores `rows` (skipping execution ids already stored) and `offsets` for `consumer`;
    /// how many rows were new.
    async fn write_usage(
        &self,
        consumer: &str,
        rows: Vec<UsageRow>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize>;
    async fn usage_report(&self, q: &UsageQuery) -> StoreResult<UsageReport>;
    async fn usage_totals(&self) -> StoreResult<UsageTotals>;
    /// The seller's live sales (never its own runs) grouped as `g`, ordered by period then key.
    async fn seller_rows(&self, q: &SellerQuery, g: SellerGroup) -> StoreResult<Vec<SellerRow>>;
    /// Per period (or in all with none), the buyers whose first live purchase from the seller
    /// lies in the query's range.
    async fn seller_new_buyers(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<NewBuyers>;
}

/// One grouped row as the stores return it: (group, executions, succeeded, credits, rows).
pub(crate) type Grouped<K> = (K, i64, i64, i64, i64);

pub(crate) fn counted(executions: i64, succeeded: i64, credits: i64, rows: i64) -> UsageCount {
    let executions = executions.max(0) as u64;
    let succeeded = (succeeded.max(0) as u64).min(executions);
    UsageCount {
        executions,
        succeeded,
        failed: executions - succeeded,
        credits,
        rows,
    }
}

/// Grouped rows in the report's order: most executions first, then the group.
pub(crate) fn ranked<K: Ord + Clone>(rows: Vec<Grouped<K>>) -> Vec<(K, UsageCount)> {
    let mut out: Vec<(K, UsageCount)> = rows
        .into_iter()
        .map(|(k, n, ok, c, r)| (k, counted(n, ok, c, r)))
        .collect();
    out.sort_by(|a, b| b.1.executions.cmp(&a.1.executions).then(a.0.cmp(&b.0)));
    out
}

/// A report from its grouped rows: per local day (ascending, as the stores return them), per
/// key and per asset (ranked); the total is the sum of the days.
pub(crate) fn report_of(
    days: Vec<Grouped<i64>>,
    keys: Vec<Grouped<i64>>,
    assets: Vec<Grouped<String>>,
) -> UsageReport {
    let days: Vec<(i64, UsageCount)> = days
        .into_iter()
        .map(|(d, n, ok, c, r)| (d, counted(n, ok, c, r)))
        .collect();
    UsageReport {
        total: summed(&days),
        by_day: days,
        by_key: ranked(keys),
        by_asset: ranked(assets),
    }
}

/// The sum of grouped counts (the total of a report is the sum of its days).
pub(crate) fn summed(days: &[(i64, UsageCount)]) -> UsageCount {
    days.iter().fold(UsageCount::default(), |mut t, (_, c)| {
        t.executions += c.executions;
        t.succeeded += c.succeeded;
        t.failed += c.failed;
        t.credits += c.credits;
        t.rows += c.rows;
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_split_into_succeeded_and_failed() {
        assert_eq!(
            counted(5, 3, 30, 7),
            UsageCount {
                executions: 5,
                succeeded: 3,
                failed: 2,
                credits: 30,
                rows: 7
            }
        );
    }

    #[test]
    fn groups_rank_by_executions_then_id() {
        let r = ranked(vec![
            ("b".to_string(), 2, 2, 0, 0),
            ("a".into(), 2, 1, 0, 0),
            ("c".into(), 5, 0, 0, 0),
        ]);
        let order: Vec<&str> = r.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        assert_eq!(
            summed(&[(1, r[0].1.clone()), (2, r[1].1.clone())]).executions,
            7
        );
    }
}
