//! Metered usage on DuckDB (see `usage.rs`): the `usage` table beside the events, written in
//! one transaction with the metering consumer's offsets, read with the buyer's local days and
//! grouped for the seller's analytics (`seller.rs`).

use crate::duck::{db_err, duck_offset_sql, store_offsets, DuckAnalytics};
use crate::seller::{Bucket, NewBuyers, Segment, SellerGroup, SellerQuery, SellerRow};
use crate::usage::*;
use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use duckdb::types::Value;
use duckdb::{params, params_from_iter, Connection};
use std::collections::HashSet;

pub(crate) const USAGE_DDL: &str = "
CREATE TABLE IF NOT EXISTS usage (
    execution_id VARCHAR NOT NULL,
    buyer VARCHAR NOT NULL,
    seller VARCHAR NOT NULL,
    asset_id VARCHAR NOT NULL,
    api_key_id BIGINT NOT NULL,
    user_id VARCHAR NOT NULL,
    credits BIGINT NOT NULL,
    result_rows BIGINT NOT NULL,
    duration_ms DOUBLE NOT NULL,
    status VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    at_ms BIGINT NOT NULL,
    seller_credits BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE usage ADD COLUMN IF NOT EXISTS seller_credits BIGINT DEFAULT 0;
";

/// Stores the rows whose execution id is not stored yet and adds them to the sales rollups. A
/// redelivered record carries the time it had the first time, so only the batch's time window
/// is checked.
fn insert_usage(conn: &Connection, rows: Vec<UsageRow>) -> StoreResult<usize> {
    let new = insert_new_usage(conn, rows)?;
    crate::duck_rollup::apply(conn, &crate::rollup::SalesDeltas::of(&new))?;
    Ok(new.len())
}

/// Appends the rows whose execution id is not stored yet, returning them.
fn insert_new_usage(conn: &Connection, rows: Vec<UsageRow>) -> StoreResult<Vec<UsageRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let lo = rows.iter().map(|r| r.at_ms).min().unwrap_or(0);
    let hi = rows.iter().map(|r| r.at_ms).max().unwrap_or(0);
    let mut seen: HashSet<String> = HashSet::new();
    {
        let mut st = conn
            .prepare_cached("SELECT execution_id FROM usage WHERE at_ms BETWEEN ? AND ?")
            .map_err(db_err)?;
        let ids = st
            .query_map(params![lo, hi], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        for id in ids {
            seen.insert(id.map_err(db_err)?);
        }
    }
    let mut app = conn.appender("usage").map_err(db_err)?;
    let mut inserted = Vec::with_capacity(rows.len());
    for r in rows {
        if !seen.insert(r.execution_id.clone()) {
            continue;
        }
        app.append_row(params![
            &r.execution_id,
            &r.buyer_company_id,
            &r.seller_company_id,
            &r.asset_id,
            r.api_key_id,
            &r.user_id,
            r.credits,
            r.rows,
            r.duration_ms,
            &r.status,
            &r.mode,
            r.at_ms,
            r.seller_credits
        ])
        .map_err(db_err)?;
        inserted.push(r);
    }
    app.flush().map_err(db_err)?;
    Ok(inserted)
}

/// `(group, executions, succeeded, credits, rows)` of the query's executions by `group`.
fn grouped<K: duckdb::types::FromSql>(
    conn: &Connection,
    q: &UsageQuery,
    group: &str,
) -> StoreResult<Vec<Grouped<K>>> {
    let sql = format!(
        "SELECT {group} AS g, count(*), CAST(sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(sum(credits) AS BIGINT), CAST(sum(result_rows) AS BIGINT) \
         FROM (SELECT *, ts + {offset} AS local_ms FROM (SELECT *, at_ms AS ts FROM usage \
               WHERE buyer = ? AND mode = ? AND at_ms >= ? AND at_ms < ?{key})) \
         GROUP BY g ORDER BY g",
        offset = duck_offset_sql(&q.tz),
        key = if q.api_key_id.is_some() { " AND api_key_id = ?" } else { "" },
    );
    let mut binds = vec![
        Value::Text(q.buyer_company_id.clone()),
        Value::Text(q.mode.clone()),
        Value::BigInt(q.from_ms),
        Value::BigInt(q.to_ms),
    ];
    binds.extend(q.api_key_id.map(Value::BigInt));
    let mut st = conn.prepare(&sql).map_err(db_err)?;
    let rows = st
        .query_map(params_from_iter(binds.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

/// A period's local start as epoch ms, over the inner column `local_ms` (`0` for none).
pub(crate) fn period_sql(period: Option<Bucket>) -> &'static str {
    match period {
        None => "CAST(0 AS BIGINT)",
        Some(Bucket::Day) => "(local_ms // 86400000) * 86400000",
        Some(Bucket::Week) => "CAST(epoch_ms(date_trunc('week', epoch_ms(local_ms))) AS BIGINT)",
        Some(Bucket::Month) => "CAST(epoch_ms(date_trunc('month', epoch_ms(local_ms))) AS BIGINT)",
        Some(Bucket::Quarter) => {
            "CAST(epoch_ms(date_trunc('quarter', epoch_ms(local_ms))) AS BIGINT)"
        }
    }
}

fn segment_sql(by: Option<Segment>) -> &'static str {
    match by {
        None => "''",
        Some(Segment::Asset) => "asset_id",
        Some(Segment::Buyer) => "buyer",
    }
}

/// The seller's live sales in the query's range (its own runs left out), with `local_ms`.
fn sales_sql(q: &SellerQuery) -> String {
    format!(
        "SELECT *, ts + {offset} AS local_ms FROM (SELECT *, at_ms AS ts FROM usage \
         WHERE seller = ? AND buyer <> seller AND mode = 'live' AND at_ms >= ? AND at_ms < ?)",
        offset = duck_offset_sql(&q.tz)
    )
}

pub(crate) fn raw_seller_rows(
    conn: &Connection,
    q: &SellerQuery,
    g: SellerGroup,
) -> StoreResult<Vec<SellerRow>> {
    let sql = format!(
        "SELECT {period} AS p, {key} AS k, count(*), \
         CAST(sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(sum(seller_credits) AS BIGINT), CAST(sum(credits) AS BIGINT), count(DISTINCT buyer), \
         CAST(sum(duration_ms) AS DOUBLE), min(at_ms), max(at_ms) \
         FROM ({sales}) GROUP BY p, k ORDER BY p, k",
        period = period_sql(g.period),
        key = segment_sql(g.by),
        sales = sales_sql(q),
    );
    let mut st = conn.prepare(&sql).map_err(db_err)?;
    let rows = st
        .query_map(
            params![q.seller_company_id, q.from_ms, q.to_ms],
            crate::duck_rollup::row_of,
        )
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

/// The new buyers from the rows (the rollups answer them; this checks they agree).
#[cfg(test)]
pub(crate) fn raw_new_buyers(
    conn: &Connection,
    q: &SellerQuery,
    period: Option<Bucket>,
) -> StoreResult<NewBuyers> {
    let sql = format!(
        "SELECT {period} AS p, count(*) FROM (SELECT ts, ts + {offset} AS local_ms FROM \
           (SELECT min(at_ms) AS ts FROM usage WHERE seller = ? AND buyer <> seller AND mode = 'live' \
            GROUP BY buyer) WHERE ts >= ? AND ts < ?) GROUP BY p ORDER BY p",
        period = period_sql(period),
        offset = duck_offset_sql(&q.tz),
    );
    let mut st = conn.prepare(&sql).map_err(db_err)?;
    let rows = st
        .query_map(params![q.seller_company_id, q.from_ms, q.to_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

#[async_trait]
impl UsageStore for DuckAnalytics {
    async fn write_usage(
        &self,
        consumer: &str,
        rows: Vec<UsageRow>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize> {
        let consumer = consumer.to_string();
        self.with_writer(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let inserted = insert_usage(&tx, rows)?;
            store_offsets(&tx, &consumer, offsets)?;
            tx.commit().map_err(db_err)?;
            Ok(inserted)
        })
        .await
    }

    /// The three groupings run at once, each on its own reader connection.
    async fn usage_report(&self, q: &UsageQuery) -> StoreResult<UsageReport> {
        fn read<K: duckdb::types::FromSql>(
            q: &UsageQuery,
            group: &'static str,
        ) -> impl FnOnce(&Connection) -> StoreResult<Vec<Grouped<K>>> + Send + 'static {
            let q = q.clone();
            move |conn| grouped(conn, &q, group)
        }
        let (days, keys, assets) = tokio::try_join!(
            self.with_reader(read(q, "(local_ms // 86400000) * 86400000")),
            self.with_reader(read(q, "api_key_id")),
            self.with_reader(read::<String>(q, "asset_id")),
        )?;
        Ok(report_of(days, keys, assets))
    }

    async fn usage_totals(&self) -> StoreResult<UsageTotals> {
        self.with_reader(|conn| {
            let rollups = crate::duck_rollup::check(conn)?;
            conn.query_row(
                "SELECT count(*) FILTER (WHERE mode = 'live'),                  CAST(COALESCE(sum(credits) FILTER (WHERE mode = 'live'), 0) AS BIGINT),                  CAST(COALESCE(sum(seller_credits) FILTER (WHERE mode = 'live'), 0) AS BIGINT),                  count(*) FILTER (WHERE mode = 'test') FROM usage",
                [],
                |r| {
                    Ok(UsageTotals {
                        live_executions: r.get::<_, i64>(0)?.max(0) as u64,
                        live_credits: r.get(1)?,
                        live_seller_credits: r.get(2)?,
                        test_executions: r.get::<_, i64>(3)?.max(0) as u64,
                        rollups,
                    })
                },
            )
            .map_err(db_err)
        })
        .await
    }

    async fn seller_rows(&self, q: &SellerQuery, g: SellerGroup) -> StoreResult<Vec<SellerRow>> {
        let q = q.clone();
        self.with_reader(
            move |conn| match crate::duck_rollup::seller_rows(conn, &q, g)? {
                Some(rows) => Ok(rows),
                None => raw_seller_rows(conn, &q, g),
            },
        )
        .await
    }

    async fn seller_new_buyers(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<NewBuyers> {
        let q = q.clone();
        self.with_reader(move |conn| crate::duck_rollup::new_buyers(conn, &q, period))
            .await
    }
}
