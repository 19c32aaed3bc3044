//! Metered usage on ClickHouse (see `usage.rs`): table `usage` (ReplacingMergeTree ordered by
//! buyer, time and execution id). As with events, a batch is written rows first and offsets
//! second, skipping execution ids already stored in the batch's buyers and time range; reads
//! count each execution id once, so a duplicate that slipped past the check (two writers in a
//! rebalance) is never counted twice even before the parts merge.

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
struct StoredUsage {
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

#[derive(Row, Deserialize)]
struct SellerRead {
    p: i64,
    k: String,
    n: i64,
    ok: i64,
    revenue: i64,
    spent: i64,
    buyers: i64,
    dur: f64,
    f_ms: i64,
    l_ms: i64,
}

#[derive(Row, Deserialize)]
struct NewRead {
    p: i64,
    n: i64,
}

/// A period's local start as epoch ms over `local_ms` (`0` for none). Weeks, months and
/// quarters go through a `Date` in UTC, whose integer value is days since the epoch.
fn period_sql(period: Option<Bucket>) -> String {
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
    /// The seller's live sales grouped as `g`, one row per execution id (see `usage_sql`).
    fn seller_sql(q: &SellerQuery, g: SellerGroup) -> String {
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
             FROM (SELECT execution_id, any(at_ms) AS ts, any(status) AS st, any(seller_credits) AS sc, \
                   any(credits) AS cr, any(buyer) AS b, any(asset_id) AS a, any(duration_ms) AS d \
                   FROM usage WHERE seller = ? AND buyer != seller AND mode = 'live' AND at_ms >= ? AND at_ms < ? \
                   GROUP BY execution_id) \
             GROUP BY p, k ORDER BY p, k"
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

    /// The query's executions, one row per execution id, grouped by `group` (over the inner
    /// columns `ts`, `k` (key), `a` (asset), and `local_ms`). The inner aliases differ from
    /// the column names: ClickHouse substitutes an alias wherever its name appears.
    fn usage_sql(q: &UsageQuery, group: &str) -> String {
        format!(
            "SELECT {group} AS g, toInt64(count()) AS n, toInt64(sum(st = 'succeeded')) AS ok, \
             toInt64(sum(cr)) AS credits, toInt64(sum(rr)) AS rs \
             FROM (SELECT execution_id, any(at_ms) AS ts, any(status) AS st, any(credits) AS cr, \
                   any(result_rows) AS rr, any(api_key_id) AS k, any(asset_id) AS a \
                   FROM usage WHERE buyer = ? AND mode = ? AND at_ms >= ? AND at_ms < ?{key} GROUP BY execution_id) \
             GROUP BY g ORDER BY g",
            group = group.replace("local_ms", &format!("(ts + {})", ch_offset_sql(&q.tz))),
            key = if q.api_key_id.is_some() { " AND api_key_id = ?" } else { "" },
        )
    }

    /// `sql` with a seller read's three binds: the seller and the range.
    fn seller_bound(&self, sql: &str, q: &SellerQuery) -> clickhouse::query::Query {
        self.client
            .query(sql)
            .bind(q.seller_company_id.as_str())
            .bind(q.from_ms)
            .bind(q.to_ms)
    }

    fn bound(&self, sql: &str, q: &UsageQuery) -> clickhouse::query::Query {
        let query = self
            .client
            .query(sql)
            .bind(q.buyer_company_id.as_str())
            .bind(q.mode.as_str())
            .bind(q.from_ms)
            .bind(q.to_ms);
        match q.api_key_id {
            Some(key) => query.bind(key),
            None => query,
        }
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
        }
        self.write_offsets(consumer, offsets).await?;
        Ok(inserted)
    }

    async fn seller_rows(&self, q: &SellerQuery, g: SellerGroup) -> StoreResult<Vec<SellerRow>> {
        let rows: Vec<SellerRead> = self
            .seller_bound(&Self::seller_sql(q, g), q)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        // Constant group keys make 18.16 answer one zero row for no executions: dropped.
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(|r| SellerRow {
                period_ms: r.p,
                key: r.k,
                executions: r.n.max(0) as u64,
                succeeded: r.ok.max(0) as u64,
                revenue: r.revenue,
                spent: r.spent,
                buyers: r.buyers.max(0) as u64,
                duration_ms_sum: r.dur,
                first_ms: r.f_ms,
                last_ms: r.l_ms,
            })
            .collect())
    }

    async fn seller_new_buyers(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<NewBuyers> {
        let period =
            period_sql(period).replace("local_ms", &format!("(ts + {})", ch_offset_sql(&q.tz)));
        let sql = format!(
            "SELECT {period} AS p, toInt64(count()) AS n FROM \
             (SELECT min(at_ms) AS ts FROM usage WHERE seller = ? AND buyer != seller AND mode = 'live' GROUP BY buyer) \
             WHERE ts >= ? AND ts < ? GROUP BY p ORDER BY p"
        );
        let rows: Vec<NewRead> = self
            .seller_bound(&sql, q)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(|r| (r.p, r.n as u64))
            .collect())
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
            rollups: Vec::new(),
        })
    }

    async fn usage_report(&self, q: &UsageQuery) -> StoreResult<UsageReport> {
        let day_sql = Self::usage_sql(q, "intDiv(local_ms, 86400000) * 86400000");
        let days: Vec<GroupedInt> = self.bound(&day_sql, q).fetch_all().await.map_err(ch_err)?;
        let keys: Vec<GroupedInt> = self
            .bound(&Self::usage_sql(q, "k"), q)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let assets: Vec<GroupedText> = self
            .bound(&Self::usage_sql(q, "a"), q)
            .fetch_all()
            .await
            .map_err(ch_err)?;
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
