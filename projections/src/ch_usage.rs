//! Metered usage on ClickHouse (see `usage.rs`): table `usage` (ReplacingMergeTree ordered by
//! buyer, time and execution id). As with events, a batch is written rows first and offsets
//! second, skipping execution ids already stored in the batch's buyers and time range. A
//! duplicate that slipped past the check (two writers in a rebalance) is found after the
//! insert and recorded, and reads take it off (`ch_rollup.rs`), so they need not group by
//! execution id. Seller reads come from the sales rollups when those answer exactly.

use crate::ch::{ch_err, ch_offset_sql, ClickHouseAnalytics};
use crate::seller::{Bucket, NewBuyers, Segment, SellerGroup, SellerQuery, SellerRow};
use crate::usage::*;
use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub(crate) const USAGE_DDL: &str = "CREATE TABLE IF NOT EXISTS usage (
    execution_id String,
    buyer String,
    seller String,
    asset_id String,
    api_key_id Int64,
    user_id String,
    credits Int64,
    result_rows Int64,
    duration_ms Float64,
    status String,
    mode String,
    at_ms Int64,
    seller_credits Int64 DEFAULT 0
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDate(toDateTime(intDiv(at_ms, 1000), 'UTC')))
ORDER BY (buyer, at_ms, execution_id)";

#[derive(Row, Serialize, Deserialize)]
pub(crate) struct StoredUsage {
    pub(crate) execution_id: String,
    pub(crate) buyer: String,
    seller: String,
    asset_id: String,
    api_key_id: i64,
    user_id: String,
    credits: i64,
    result_rows: i64,
    duration_ms: f64,
    status: String,
    mode: String,
    pub(crate) at_ms: i64,
    seller_credits: i64,
}

/// A row of `usage_dups`: an execution stored more than once, with its `extra` copies.
#[derive(Row, Serialize)]
pub(crate) struct DupRow {
    execution_id: String,
    buyer: String,
    seller: String,
    asset_id: String,
    api_key_id: i64,
    user_id: String,
    credits: i64,
    result_rows: i64,
    duration_ms: f64,
    status: String,
    mode: String,
    at_ms: i64,
    seller_credits: i64,
    extra: i64,
}

impl DupRow {
    pub(crate) fn of(r: &StoredUsage, extra: i64) -> Self {
        DupRow {
            execution_id: r.execution_id.clone(),
            buyer: r.buyer.clone(),
            seller: r.seller.clone(),
            asset_id: r.asset_id.clone(),
            api_key_id: r.api_key_id,
            user_id: r.user_id.clone(),
            credits: r.credits,
            result_rows: r.result_rows,
            duration_ms: r.duration_ms,
            status: r.status.clone(),
            mode: r.mode.clone(),
            at_ms: r.at_ms,
            seller_credits: r.seller_credits,
            extra,
        }
    }
}

impl From<UsageRow> for StoredUsage {
    fn from(r: UsageRow) -> Self {
        StoredUsage {
            execution_id: r.execution_id,
            buyer: r.buyer_company_id,
            seller: r.seller_company_id,
            asset_id: r.asset_id,
            api_key_id: r.api_key_id,
            user_id: r.user_id,
            credits: r.credits,
            result_rows: r.rows,
            duration_ms: r.duration_ms,
            status: r.status,
            mode: r.mode,
            at_ms: r.at_ms,
            seller_credits: r.seller_credits,
        }
    }
}

/// A table made before a column was added gets it (18.16 has no `ADD COLUMN IF NOT EXISTS`).
pub(crate) const USAGE_COLUMNS: &[(&str, &str)] = &[("seller_credits", "Int64 DEFAULT 0")];

#[derive(Row, Deserialize)]
struct IdRead {
    execution_id: String,
}

#[derive(Row, Deserialize)]
struct GroupedInt {
    g: i64,
    n: i64,
    ok: i64,
    credits: i64,
    rows: i64,
}

#[derive(Row, Deserialize)]
struct GroupedText {
    g: String,
    n: i64,
    ok: i64,
    credits: i64,
    rows: i64,
}

/// A period's local start as epoch ms over `local_ms` (`0` for none). Weeks, months and
/// quarters go through a `Date` in UTC, whose integer value is days since the epoch.
pub(crate) fn period_sql(period: Option<Bucket>) -> String {
    let date = |f: &str| {
        format!(
            "toInt64(toUInt16({f}(toDate(toDateTime(intDiv(local_ms, 1000), 'UTC'))))) * 86400000"
        )
    };
    match period {
        None => "toInt64(0)".into(),
        Some(Bucket::Day) => "intDiv(local_ms, 86400000) * 86400000".into(),
        Some(Bucket::Week) => date("toMonday"),
        Some(Bucket::Month) => date("toStartOfMonth"),
        Some(Bucket::Quarter) => date("toStartOfQuarter"),
    }
}

impl ClickHouseAnalytics {
    /// The seller's live sales grouped as `g`, each execution once (`ch_rollup::sales_in`):
    /// the reads the rollups cannot answer. Every `?` is the seller.
    fn seller_sql(q: &SellerQuery, g: SellerGroup, dups: bool) -> String {
        let key = match g.by {
            None => "''",
            Some(Segment::Asset) => "a",
            Some(Segment::Buyer) => "b",
        };
        let period =
            period_sql(g.period).replace("local_ms", &format!("(ts + {})", ch_offset_sql(&q.tz)));
        format!(
            "SELECT {period} AS p, {key} AS k, toInt64(count()) AS n, toInt64(sum(st = 'succeeded')) AS ok, \
             toInt64(sum(sc)) AS revenue, toInt64(sum(cr)) AS spent, toInt64(uniqExact(b)) AS buyers, \
             toFloat64(sum(d)) AS dur, toInt64(min(ts)) AS f_ms, toInt64(max(ts)) AS l_ms \
             FROM (SELECT at_ms AS ts, status AS st, seller_credits AS sc, credits AS cr, buyer AS b, \
                   asset_id AS a, duration_ms AS d FROM {}) \
             GROUP BY p, k ORDER BY p, k",
            crate::ch_rollup::sales_in(
                "at_ms, status, seller_credits, credits, buyer, asset_id, duration_ms",
                q.from_ms,
                q.to_ms,
                dups
            )
        )
    }

    async fn stored_executions(&self, rows: &[StoredUsage]) -> StoreResult<HashSet<String>> {
        let lo = rows.iter().map(|r| r.at_ms).min().unwrap_or(0);
        let hi = rows.iter().map(|r| r.at_ms).max().unwrap_or(0);
        let buyers: HashSet<&str> = rows.iter().map(|r| r.buyer.as_str()).collect();
        let marks = vec!["?"; buyers.len()].join(", ");
        let mut q = self.client.query(&format!(
            "SELECT execution_id FROM usage WHERE buyer IN ({marks}) AND at_ms >= ? AND at_ms <= ?"
        ));
        for b in buyers {
            q = q.bind(b);
        }
        let found: Vec<IdRead> = q.bind(lo).bind(hi).fetch_all().await.map_err(ch_err)?;
        Ok(found.into_iter().map(|r| r.execution_id).collect())
    }

    /// The query's executions, each once, grouped by `group` (over the inner columns `ts`,
    /// `k` (key), `a` (asset), and `local_ms`): the rows without the ids in `usage_dups`, and
    /// one copy of each of those (see `ch_rollup.rs`; the rows alone without `dups`). The
    /// inner aliases differ from the column names: ClickHouse substitutes an alias wherever
    /// its name appears.
    fn usage_sql(q: &UsageQuery, group: &str, dups: bool) -> String {
        let key = if q.api_key_id.is_some() {
            " AND api_key_id = ?"
        } else {
            ""
        };
        let cols = "at_ms AS ts, status AS st, credits AS cr, result_rows AS rr, \
                    api_key_id AS k, asset_id AS a";
        let filter = format!("buyer = ? AND mode = ? AND at_ms >= ? AND at_ms < ?{key}");
        let rows = if dups {
            format!(
                "SELECT {cols} FROM usage WHERE {filter} \
                   AND execution_id NOT IN (SELECT execution_id FROM usage_dups) \
                 UNION ALL SELECT {cols} FROM usage_dups FINAL WHERE {filter}"
            )
        } else {
            format!("SELECT {cols} FROM usage WHERE {filter}")
        };
        format!(
            "SELECT {group} AS g, toInt64(count()) AS n, toInt64(sum(st = 'succeeded')) AS ok, \
             toInt64(sum(cr)) AS credits, toInt64(sum(rr)) AS rs \
             FROM ({rows}) GROUP BY g ORDER BY g",
            group = group.replace("local_ms", &format!("(ts + {})", ch_offset_sql(&q.tz))),
        )
    }

    /// `sql` with a usage read's binds, once for each of its `legs`.
    fn bound(&self, sql: &str, q: &UsageQuery, legs: usize) -> clickhouse::query::Query {
        let mut query = self.client.query(sql);
        for _ in 0..legs {
            query = query
                .bind(q.buyer_company_id.as_str())
                .bind(q.mode.as_str())
                .bind(q.from_ms)
                .bind(q.to_ms);
            if let Some(key) = q.api_key_id {
                query = query.bind(key);
            }
        }
        query
    }

    async fn usage_groups<T>(&self, q: &UsageQuery, group: &str, dups: bool) -> StoreResult<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.bound(&Self::usage_sql(q, group, dups), q, 1 + usize::from(dups))
            .fetch_all()
            .await
            .map_err(ch_err)
    }
}

#[async_trait]
impl UsageStore for ClickHouseAnalytics {
    async fn write_usage(
        &self,
        consumer: &str,
        rows: Vec<UsageRow>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize> {
        let rows: Vec<StoredUsage> = rows.into_iter().map(StoredUsage::from).collect();
        let mut inserted = 0;
        if !rows.is_empty() {
            let mut seen = self.stored_executions(&rows).await?;
            let mut insert = self
                .client
                .insert::<StoredUsage>("usage")
                .await
                .map_err(ch_err)?;
            for row in &rows {
                if seen.insert(row.execution_id.clone()) {
                    insert.write(row).await.map_err(ch_err)?;
                    inserted += 1;
                }
            }
            insert.end().await.map_err(ch_err)?;
            self.record_duplicates(&rows).await?;
        }
        self.write_offsets(consumer, offsets).await?;
        Ok(inserted)
    }

    async fn seller_rows(&self, q: &SellerQuery, g: SellerGroup) -> StoreResult<Vec<SellerRow>> {
        let dups = self.has_dups("seller", &q.seller_company_id).await?;
        if let Some(rows) = self.rollup_seller_rows(q, g, dups).await? {
            return Ok(rows);
        }
        self.seller_reads(&Self::seller_sql(q, g, dups), q).await
    }

    async fn seller_new_buyers(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<NewBuyers> {
        self.rollup_new_buyers(q, period).await
    }

    async fn usage_totals(&self) -> StoreResult<UsageTotals> {
        #[derive(Row, Deserialize)]
        struct Totals {
            live: i64,
            credits: i64,
            share: i64,
            test: i64,
        }
        let t: Totals = self
            .client
            .query(
                "SELECT toInt64(sum(m = 'live')) AS live, toInt64(sumIf(cr, m = 'live')) AS credits, \
                 toInt64(sumIf(sc, m = 'live')) AS share, toInt64(sum(m = 'test')) AS test \
                 FROM (SELECT execution_id, any(mode) AS m, any(credits) AS cr, any(seller_credits) AS sc \
                       FROM usage GROUP BY execution_id)",
            )
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(UsageTotals {
            live_executions: t.live.max(0) as u64,
            live_credits: t.credits,
            live_seller_credits: t.share,
            test_executions: t.test.max(0) as u64,
            rollups: self.check_rollups().await?,
        })
    }

    async fn usage_report(&self, q: &UsageQuery) -> StoreResult<UsageReport> {
        let dups = self.has_dups("buyer", &q.buyer_company_id).await?;
        // Three reads at once: each is a range scan of the buyer's rows.
        let (days, keys, assets) = tokio::try_join!(
            self.usage_groups::<GroupedInt>(q, "intDiv(local_ms, 86400000) * 86400000", dups),
            self.usage_groups::<GroupedInt>(q, "k", dups),
            self.usage_groups::<GroupedText>(q, "a", dups),
        )?;
        let grouped = |rows: Vec<GroupedInt>| {
            rows.into_iter()
                .map(|r| (r.g, r.n, r.ok, r.credits, r.rows))
                .collect()
        };
        Ok(report_of(
            grouped(days),
            grouped(keys),
            assets
                .into_iter()
                .map(|a| (a.g, a.n, a.ok, a.credits, a.rows))
                .collect(),
        ))
    }
}
