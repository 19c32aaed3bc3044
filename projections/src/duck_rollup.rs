//! The sales rollups (`rollup.rs`) on DuckDB: five tables updated in the metering transaction
//! from the rows it stores (so a rollup is never ahead of or behind its rows), built from the
//! rows once when a store made before them opens, and the seller reads over them. A read the
//! rollups cannot answer exactly (see `rollup::rollups_answer`) goes to the rows.

use crate::duck::{db_err, duck_offset_sql};
use crate::rollup::{rollups_answer, whole_days, SalesDeltas, Sums, DAY_MS};
use crate::seller::{Bucket, NewBuyers, Segment, SellerGroup, SellerQuery, SellerRow};
use crate::StoreResult;
use duckdb::types::Value;
use duckdb::{params, params_from_iter, Connection};
use std::collections::HashMap;

const SUMS_DDL: &str = "executions BIGINT NOT NULL, succeeded BIGINT NOT NULL, \
    revenue BIGINT NOT NULL, spent BIGINT NOT NULL, duration_sum DOUBLE NOT NULL, \
    first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL";

/// The rollup tables and their keys.
const TABLES: &[(&str, &str)] = &[
    (
        "sales_hourly",
        "seller VARCHAR, asset_id VARCHAR, hour_ms BIGINT",
    ),
    (
        "sales_buyer_daily",
        "seller VARCHAR, buyer VARCHAR, day_ms BIGINT",
    ),
    ("sales_buyers", "seller VARCHAR, buyer VARCHAR"),
    ("sales_assets", "seller VARCHAR, asset_id VARCHAR"),
    (
        "sales_asset_buyers",
        "seller VARCHAR, asset_id VARCHAR, buyer VARCHAR",
    ),
    (
        "sales_asset_buyers_monthly",
        "seller VARCHAR, asset_id VARCHAR, buyer VARCHAR, month_ms BIGINT",
    ),
];

/// Bumped when a rollup's definition changes: the rollups are then rebuilt from the rows.
const ROLLUP_VERSION: i64 = 1;

fn key_columns(key: &str) -> String {
    key.split(',')
        .map(|c| c.split_whitespace().next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

fn create_sql(table: &str, key: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ({key}, {SUMS_DDL}, PRIMARY KEY ({}));",
        key_columns(key)
    )
}

/// Creates the rollups, and (re)builds them from the metered rows when they are older than
/// this code's definition (or were never built: a store made before them).
pub(crate) fn init(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS rollup_version (v BIGINT NOT NULL);")
        .map_err(db_err)?;
    let v: Option<i64> = conn
        .query_row("SELECT max(v) FROM rollup_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if v == Some(ROLLUP_VERSION) {
        let ddl: String = TABLES.iter().map(|(t, k)| create_sql(t, k)).collect();
        return conn.execute_batch(&ddl).map_err(db_err);
    }
    // Dropped and made again rather than emptied: a definition may have changed.
    let mut rebuild = String::from("BEGIN TRANSACTION;");
    for (table, key) in TABLES {
        let group = key_columns(key)
            .replace("hour_ms", "(at_ms // 3600000) * 3600000")
            .replace("day_ms", "(at_ms // 86400000) * 86400000")
            .replace(
                "month_ms",
                "CAST(epoch_ms(date_trunc('month', epoch_ms(at_ms))) AS BIGINT)",
            );
        rebuild.push_str(&format!(
            "DROP TABLE IF EXISTS {table}; {create} INSERT INTO {table} SELECT {group}, count(*), \
             sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), sum(seller_credits), \
             sum(credits), sum(duration_ms), min(at_ms), max(at_ms) FROM usage \
             WHERE mode = 'live' AND buyer <> seller GROUP BY {group};",
            create = create_sql(table, key)
        ));
    }
    rebuild.push_str(&format!(
        "DELETE FROM rollup_version; INSERT INTO rollup_version VALUES ({ROLLUP_VERSION}); COMMIT;"
    ));
    conn.execute_batch(&rebuild).map_err(db_err)
}

fn sums_params(s: &Sums) -> [Value; 7] {
    [
        Value::BigInt(s.executions),
        Value::BigInt(s.succeeded),
        Value::BigInt(s.revenue),
        Value::BigInt(s.spent),
        Value::Double(s.duration_ms_sum),
        Value::BigInt(s.first_ms),
        Value::BigInt(s.last_ms),
    ]
}

/// Rows per upsert statement: each statement in a transaction takes its own local storage
/// until the commit, so one statement per row ran a 50,000-row batch out of memory.
const UPSERT_CHUNK: usize = 500;

fn upsert<K>(
    conn: &Connection,
    table: &str,
    rows: &HashMap<K, Sums>,
    key: impl Fn(&K) -> Vec<Value>,
) -> StoreResult<()> {
    let Some((_, key_ddl)) = TABLES.iter().find(|(t, _)| *t == table) else {
        return Err(crate::StoreError::Backend(format!(
            "no rollup table {table}"
        )));
    };
    let cols = key_columns(key_ddl);
    let row_marks = format!(
        "({}?, ?, ?, ?, ?, ?, ?)",
        "?, ".repeat(cols.split(',').count())
    );
    let rows: Vec<(&K, &Sums)> = rows.iter().collect();
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO {table} VALUES {} ON CONFLICT ({cols}) DO UPDATE SET \
             executions = executions + EXCLUDED.executions, succeeded = succeeded + EXCLUDED.succeeded, \
             revenue = revenue + EXCLUDED.revenue, spent = spent + EXCLUDED.spent, \
             duration_sum = duration_sum + EXCLUDED.duration_sum, \
             first_ms = least(first_ms, EXCLUDED.first_ms), last_ms = greatest(last_ms, EXCLUDED.last_ms)",
            vec![row_marks.as_str(); chunk.len()].join(", ")
        );
        let values: Vec<Value> = chunk
            .iter()
            .flat_map(|(k, s)| key(k).into_iter().chain(sums_params(s)))
            .collect();
        conn.prepare(&sql)
            .map_err(db_err)?
            .execute(params_from_iter(values.iter()))
            .map_err(db_err)?;
    }
    Ok(())
}

/// Adds `d` to the rollups (inside the transaction that stored the rows it came from).
pub(crate) fn apply(conn: &Connection, d: &SalesDeltas) -> StoreResult<()> {
    let t = |s: &String| Value::Text(s.clone());
    upsert(conn, "sales_hourly", &d.hourly, |(s, a, h)| {
        vec![t(s), t(a), Value::BigInt(*h)]
    })?;
    upsert(conn, "sales_buyer_daily", &d.buyer_daily, |(s, b, day)| {
        vec![t(s), t(b), Value::BigInt(*day)]
    })?;
    upsert(conn, "sales_buyers", &d.buyers, |(s, b)| vec![t(s), t(b)])?;
    upsert(conn, "sales_assets", &d.assets, |(s, a)| vec![t(s), t(a)])?;
    upsert(conn, "sales_asset_buyers", &d.asset_buyers, |(s, a, b)| {
        vec![t(s), t(a), t(b)]
    })?;
    upsert(
        conn,
        "sales_asset_buyers_monthly",
        &d.asset_buyers_monthly,
        |(s, a, b, m)| vec![t(s), t(a), t(b), Value::BigInt(*m)],
    )
}

/// Each rollup's (executions, revenue) against the rows': what `tally reconcile` compares.
pub(crate) fn check(conn: &Connection) -> StoreResult<Vec<(String, i64, i64)>> {
    let (n, rev): (i64, i64) = conn
        .query_row(
            "SELECT count(*), CAST(COALESCE(sum(seller_credits), 0) AS BIGINT) FROM usage \
             WHERE mode = 'live' AND buyer <> seller",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err)?;
    let mut out = Vec::new();
    for (table, _) in TABLES {
        let (rn, rrev): (i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT CAST(COALESCE(sum(executions), 0) AS BIGINT), \
                     CAST(COALESCE(sum(revenue), 0) AS BIGINT) FROM {table}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_err)?;
        out.push((format!("{table} executions"), rn, n));
        out.push((format!("{table} revenue"), rrev, rev));
    }
    Ok(out)
}

/// A period's local start over `local_ms`, as in `duck_usage`.
fn period_sql(period: Option<Bucket>) -> &'static str {
    crate::duck_usage::period_sql(period)
}

/// `SELECT local_ms, <cols>` over `table` where `ts_col` (the time the local period is taken
/// from) is in range, for the seller.
fn local(table: &str, ts_col: &str, cols: &str, q: &SellerQuery, extra: &str) -> String {
    format!(
        "SELECT {cols}, ts + {offset} AS local_ms FROM (SELECT *, {ts_col} AS ts FROM {table} \
         WHERE seller = ? AND {ts_col} >= ? AND {ts_col} < ?{extra})",
        offset = duck_offset_sql(&q.tz)
    )
}

fn is_all_time(q: &SellerQuery) -> bool {
    q.from_ms <= 0 && q.to_ms == i64::MAX
}

/// A seller row from a read whose columns are in `SellerRow`'s order (here and in
/// `duck_usage`'s reads over the rows).
pub(crate) fn row_of(r: &duckdb::Row<'_>) -> duckdb::Result<SellerRow> {
    Ok(SellerRow {
        period_ms: r.get(0)?,
        key: r.get(1)?,
        executions: r.get::<_, i64>(2)?.max(0) as u64,
        succeeded: r.get::<_, i64>(3)?.max(0) as u64,
        revenue: r.get(4)?,
        spent: r.get(5)?,
        buyers: r.get::<_, i64>(6)?.max(0) as u64,
        duration_ms_sum: r.get(7)?,
        first_ms: r.get(8)?,
        last_ms: r.get(9)?,
    })
}

const SUMS_SELECT: &str = "CAST(sum(executions) AS BIGINT), CAST(sum(succeeded) AS BIGINT), \
    CAST(sum(revenue) AS BIGINT), CAST(sum(spent) AS BIGINT)";

fn rows(conn: &Connection, sql: &str, binds: &[Value]) -> StoreResult<Vec<SellerRow>> {
    let mut st = conn.prepare(sql).map_err(db_err)?;
    let out = st
        .query_map(params_from_iter(binds.iter()), row_of)
        .map_err(db_err)?;
    out.map(|r| r.map_err(db_err)).collect()
}

fn pairs(
    conn: &Connection,
    sql: &str,
    binds: &[Value],
) -> StoreResult<HashMap<(i64, String), u64>> {
    let mut st = conn.prepare(sql).map_err(db_err)?;
    let out = st
        .query_map(params_from_iter(binds.iter()), |r| {
            Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?.max(0) as u64))
        })
        .map_err(db_err)?;
    out.map(|r| r.map_err(db_err)).collect()
}

fn seller_range(q: &SellerQuery) -> Vec<Value> {
    vec![
        Value::Text(q.seller_company_id.clone()),
        Value::BigInt(q.from_ms),
        Value::BigInt(q.to_ms),
    ]
}

/// Distinct buyers per period (`key` empty), from each buyer's first and last sale of every
/// UTC day (see `rollup.rs`).
fn buyers_per_period(
    conn: &Connection,
    q: &SellerQuery,
    period: Option<Bucket>,
) -> StoreResult<HashMap<(i64, String), u64>> {
    let day_lo = q.from_ms.div_euclid(DAY_MS) * DAY_MS - DAY_MS;
    if period.is_none() {
        // One period: a buyer bought in the range when a day's first or last sale lies in it.
        return pairs(
            conn,
            "SELECT CAST(0 AS BIGINT), '', count(DISTINCT buyer) FROM sales_buyer_daily \
             WHERE seller = ? AND day_ms >= ? AND day_ms < ? \
             AND ((first_ms >= ? AND first_ms < ?) OR (last_ms >= ? AND last_ms < ?))",
            &[
                Value::Text(q.seller_company_id.clone()),
                Value::BigInt(day_lo),
                Value::BigInt(q.to_ms),
                Value::BigInt(q.from_ms),
                Value::BigInt(q.to_ms),
                Value::BigInt(q.from_ms),
                Value::BigInt(q.to_ms),
            ],
        );
    }
    let day_filter = " AND day_ms >= ? AND day_ms < ?";
    let side = |col: &str| {
        format!(
            "SELECT {p} AS p, buyer FROM ({inner})",
            p = period_sql(period),
            inner = local("sales_buyer_daily", col, "buyer", q, day_filter)
        )
    };
    let sql = format!(
        "SELECT p, '' AS k, count(DISTINCT buyer) FROM ({} UNION ALL {}) GROUP BY p",
        side("first_ms"),
        side("last_ms")
    );
    let mut binds = seller_range(q);
    binds.push(Value::BigInt(
        q.from_ms.div_euclid(DAY_MS) * DAY_MS - DAY_MS,
    ));
    binds.push(Value::BigInt(q.to_ms));
    let once = binds.clone();
    binds.extend(once);
    pairs(conn, &sql, &binds)
}

/// Distinct buyers per asset over the range, from each (asset, buyer)'s first and last sale
/// of every UTC month. When a pair bought before and after the range within one month (a
/// range inside a month), the pairs cannot say whether it bought inside it: those reads
/// count the rows of the range.
fn buyers_per_asset(
    conn: &Connection,
    q: &SellerQuery,
) -> StoreResult<HashMap<(i64, String), u64>> {
    let binds = seller_range(q);
    let unsure: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM sales_asset_buyers_monthly \
             WHERE seller = ? AND first_ms < ? AND last_ms >= ?",
        )
        .map_err(db_err)?
        .query_row(params![q.seller_company_id, q.from_ms, q.to_ms], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    if unsure > 0 {
        return pairs(
            conn,
            "SELECT CAST(0 AS BIGINT), asset_id, count(DISTINCT buyer) FROM usage \
             WHERE seller = ? AND buyer <> seller AND mode = 'live' AND at_ms >= ? AND at_ms < ? \
             GROUP BY asset_id",
            &binds,
        );
    }
    pairs(
        conn,
        "SELECT CAST(0 AS BIGINT), asset_id, count(DISTINCT buyer) FROM sales_asset_buyers_monthly \
         WHERE seller = ? AND last_ms >= ? AND first_ms < ? GROUP BY asset_id",
        &binds,
    )
}

/// Sums per (period, asset or nothing) from the hourly rollup, buyers set from `buyers`.
fn hourly_rows(
    conn: &Connection,
    q: &SellerQuery,
    g: SellerGroup,
    buyers: &HashMap<(i64, String), u64>,
) -> StoreResult<Vec<SellerRow>> {
    let key = if g.by == Some(Segment::Asset) {
        "asset_id"
    } else {
        "''"
    };
    let sql = format!(
        "SELECT {p} AS p, {key} AS k, {SUMS_SELECT}, CAST(0 AS BIGINT), \
         CAST(sum(duration_sum) AS DOUBLE), min(first_ms), max(last_ms) FROM ({inner}) \
         GROUP BY p, k ORDER BY p, k",
        p = period_sql(g.period),
        inner = local("sales_hourly", "hour_ms", "*", q, "")
    );
    let mut out = rows(conn, &sql, &seller_range(q))?;
    for r in &mut out {
        r.buyers = buyers
            .get(&(r.period_ms, r.key.clone()))
            .copied()
            .unwrap_or(0);
    }
    Ok(out)
}

/// Each buyer's sums over the range: whole UTC days from the daily rollup, the ragged edges
/// of the range from the rows.
fn buyer_rows(conn: &Connection, q: &SellerQuery) -> StoreResult<Vec<SellerRow>> {
    let (start, end) = whole_days(q.from_ms, q.to_ms);
    // Two range reads rather than one with OR: each prunes by time, the OR read scans all.
    let edge = "SELECT buyer, 1, CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END, seller_credits, \
                credits, duration_ms, at_ms, at_ms FROM usage \
                WHERE seller = ? AND buyer <> seller AND mode = 'live' AND at_ms >= ? AND at_ms < ?";
    let sql = format!(
        "SELECT CAST(0 AS BIGINT), buyer, {SUMS_SELECT}, CAST(1 AS BIGINT), \
         CAST(sum(duration_sum) AS DOUBLE), min(first_ms), max(last_ms) FROM ( \
           SELECT buyer, executions, succeeded, revenue, spent, duration_sum, first_ms, last_ms \
           FROM sales_buyer_daily WHERE seller = ? AND day_ms >= ? AND day_ms < ? \
           UNION ALL {edge} UNION ALL {edge}) \
         GROUP BY buyer ORDER BY buyer"
    );
    let seller = Value::Text(q.seller_company_id.clone());
    let ms = Value::BigInt;
    rows(
        conn,
        &sql,
        &[
            seller.clone(),
            ms(start),
            ms(end),
            seller.clone(),
            ms(q.from_ms),
            ms(start.min(q.to_ms)),
            seller,
            ms(end.max(start)),
            ms(q.to_ms),
        ],
    )
}

/// All-time rows per asset, per buyer or in total, from the all-time rollups.
fn all_time_rows(
    conn: &Connection,
    q: &SellerQuery,
    by: Option<Segment>,
) -> StoreResult<Vec<SellerRow>> {
    let sums = format!(
        "{SUMS_SELECT}, {{buyers}}, CAST(sum(duration_sum) AS DOUBLE), min(first_ms), max(last_ms)"
    );
    let sql = match by {
        Some(Segment::Buyer) => format!(
            "SELECT CAST(0 AS BIGINT), buyer, {} FROM sales_buyers WHERE seller = ? \
             GROUP BY buyer ORDER BY buyer",
            sums.replace("{buyers}", "CAST(1 AS BIGINT)")
        ),
        Some(Segment::Asset) => format!(
            "SELECT CAST(0 AS BIGINT), a.asset_id, {} FROM sales_assets a JOIN \
             (SELECT asset_id, count(*) AS n FROM sales_asset_buyers WHERE seller = ? GROUP BY asset_id) b \
             ON a.asset_id = b.asset_id WHERE a.seller = ? GROUP BY a.asset_id ORDER BY a.asset_id",
            sums.replace("{buyers}", "CAST(max(b.n) AS BIGINT)")
        ),
        None => format!(
            "SELECT CAST(0 AS BIGINT), '', {} FROM sales_assets, \
             (SELECT count(*) AS n FROM sales_buyers WHERE seller = ?) b WHERE seller = ? \
             HAVING count(*) > 0",
            sums.replace("{buyers}", "CAST(max(b.n) AS BIGINT)")
        ),
    };
    let seller = Value::Text(q.seller_company_id.clone());
    let binds = if by == Some(Segment::Buyer) {
        vec![seller]
    } else {
        vec![seller.clone(), seller]
    };
    rows(conn, &sql, &binds)
}

/// The seller read from the rollups, or `None` when they cannot answer it exactly.
pub(crate) fn seller_rows(
    conn: &Connection,
    q: &SellerQuery,
    g: SellerGroup,
) -> StoreResult<Option<Vec<SellerRow>>> {
    if is_all_time(q) {
        return match g.period {
            None => all_time_rows(conn, q, g.by).map(Some),
            Some(_) => Ok(None),
        };
    }
    if !rollups_answer(&q.tz, q.from_ms, q.to_ms) {
        return Ok(None);
    }
    match (g.period, g.by) {
        (_, None) => {
            let buyers = buyers_per_period(conn, q, g.period)?;
            hourly_rows(conn, q, g, &buyers).map(Some)
        }
        (None, Some(Segment::Asset)) => {
            let buyers = buyers_per_asset(conn, q)?;
            hourly_rows(conn, q, g, &buyers).map(Some)
        }
        (None, Some(Segment::Buyer)) => buyer_rows(conn, q).map(Some),
        (Some(_), Some(_)) => Ok(None),
    }
}

/// Per period, the buyers whose first sale lies in the range: from the all-time buyer rollup.
pub(crate) fn new_buyers(
    conn: &Connection,
    q: &SellerQuery,
    period: Option<Bucket>,
) -> StoreResult<NewBuyers> {
    let sql = format!(
        "SELECT {p} AS p, count(*) FROM ({inner}) GROUP BY p ORDER BY p",
        p = period_sql(period),
        inner = local("sales_buyers", "first_ms", "buyer", q, "")
    );
    let mut st = conn.prepare(&sql).map_err(db_err)?;
    let out = st
        .query_map(params_from_iter(seller_range(q).iter()), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(db_err)?;
    out.map(|r| r.map_err(db_err)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{DuckAnalytics, StoredOffset, UsageRow, UsageStore};

    /// 2026-10-01T00:00:00Z: the sales cover 60 days from here, over the October and November
    /// changes of Europe and America.
    pub(crate) const START: i64 = 1_790_812_800_000;

    pub(crate) fn sale(i: i64) -> UsageRow {
        let buyer = ["b1", "b2", "b3", "b4", "s1"][(i % 5) as usize];
        let ok = i % 7 != 0;
        UsageRow {
            execution_id: format!("x{i}"),
            buyer_company_id: buyer.into(),
            seller_company_id: if i % 11 == 0 { "s2" } else { "s1" }.into(),
            asset_id: format!("a{}", (i * 7) % 4),
            api_key_id: i % 3,
            user_id: "u".into(),
            credits: if ok { 10 + i % 3 } else { 0 },
            seller_credits: if ok { 8 + i % 2 } else { 0 },
            rows: 1,
            duration_ms: (i % 13) as f64,
            status: if ok { "succeeded" } else { "failed" }.into(),
            mode: if i % 17 == 0 { "test" } else { "live" }.into(),
            // Uneven gaps: about 3.7 hours apart, so days differ.
            at_ms: START + i * 13_337_000 + (i % 5) * 600_000,
        }
    }

    /// The 400 sales in batches of 37 new rows, each batch also repeating the previous one:
    /// redeliveries must not count twice. Each with its new rows and its offsets.
    pub(crate) fn redelivered_batches() -> Vec<(Vec<UsageRow>, Vec<UsageRow>, Vec<StoredOffset>)> {
        let rows: Vec<UsageRow> = (0..400).map(sale).collect();
        rows.chunks(37)
            .enumerate()
            .map(|(n, chunk)| {
                let mut batch = chunk.to_vec();
                if n > 0 {
                    batch.extend(rows[(n - 1) * 37..n * 37].iter().cloned());
                }
                let offsets = vec![StoredOffset {
                    topic: "tally.usage".into(),
                    partition: 0,
                    next_offset: (n as u64 + 1) * 37,
                }];
                (batch, chunk.to_vec(), offsets)
            })
            .collect()
    }

    async fn store(path: &std::path::Path) -> DuckAnalytics {
        let store = DuckAnalytics::open(path, "1GB").expect("open");
        for (batch, _, offsets) in redelivered_batches() {
            store.write_usage("m", batch, offsets).await.expect("write");
        }
        store
    }

    pub(crate) fn local_midnight(tz: chrono_tz::Tz, day: i64) -> i64 {
        use chrono::TimeZone;
        let date = chrono::DateTime::from_timestamp_millis(START + day * DAY_MS)
            .expect("date")
            .date_naive();
        tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .expect("local")
            .timestamp_millis()
    }

    /// Two reads of one query on one reader connection: the rollups' and the rows'.
    async fn both<T: Send + 'static>(
        store: &DuckAnalytics,
        q: &SellerQuery,
        read: impl FnOnce(&Connection, &SellerQuery) -> StoreResult<(T, T)> + Send + 'static,
    ) -> (T, T) {
        let q = q.clone();
        store.with_reader(move |c| read(c, &q)).await.expect("read")
    }

    pub(crate) fn groups() -> Vec<SellerGroup> {
        let periods = [
            None,
            Some(Bucket::Day),
            Some(Bucket::Week),
            Some(Bucket::Month),
        ];
        let bys = [None, Some(Segment::Asset), Some(Segment::Buyer)];
        periods
            .iter()
            .flat_map(|p| bys.iter().map(|b| SellerGroup { period: *p, by: *b }))
            .collect()
    }

    /// Every seller read answered from the rollups equals the same read over the rows, in
    /// zones with and without DST, over ranges inside and across the data.
    #[tokio::test]
    async fn rollup_reads_equal_the_reads_over_the_rows() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("u.duckdb");
        let store = store(&path).await;
        let zones = [
            chrono_tz::Europe::Berlin,
            chrono_tz::America::New_York,
            chrono_tz::UTC,
            chrono_tz::Asia::Kolkata,
        ];
        let ranges = [(0, 62), (3, 40), (20, 50), (-5, 10), (30, 31)];
        let mut from_rollups = 0;
        for tz in zones {
            for (a, b) in ranges {
                let (from, to) = (local_midnight(tz, a), local_midnight(tz, b));
                let q = SellerQuery {
                    seller_company_id: "s1".into(),
                    from_ms: from,
                    to_ms: to,
                    tz: crate::offset_segments(tz, from, to),
                };
                for g in groups() {
                    let (rolled, raw) = both(&store, &q, move |c, q| {
                        Ok((
                            seller_rows(c, q, g)?,
                            Some(crate::duck_usage::raw_seller_rows(c, q, g)?),
                        ))
                    })
                    .await;
                    if rolled.is_some() {
                        from_rollups += 1;
                        assert_eq!(rolled, raw, "{tz} {a}..{b} {g:?}");
                    }
                }
                for p in [None, Some(Bucket::Day), Some(Bucket::Month)] {
                    let (rolled, raw) = both(&store, &q, move |c, q| {
                        Ok((
                            new_buyers(c, q, p)?,
                            crate::duck_usage::raw_new_buyers(c, q, p)?,
                        ))
                    })
                    .await;
                    assert_eq!(rolled, raw, "new buyers {tz} {a}..{b} {p:?}");
                }
            }
        }
        // Kolkata's half-hour offset and the grouped-by-both reads go to the rows; the rest
        // must come from the rollups.
        assert!(
            from_rollups >= 3 * 5 * 5,
            "{from_rollups} reads from the rollups"
        );
        let all = SellerQuery::all_time("s1");
        for by in [None, Some(Segment::Asset), Some(Segment::Buyer)] {
            let g = SellerGroup { period: None, by };
            let (rolled, raw) = both(&store, &all, move |c, q| {
                Ok((
                    seller_rows(c, q, g)?,
                    Some(crate::duck_usage::raw_seller_rows(c, q, g)?),
                ))
            })
            .await;
            assert!(rolled.is_some(), "all time {by:?} from the rollups");
            assert_eq!(rolled, raw, "all time {by:?}");
        }
        let checks = store.usage_totals().await.expect("totals").rollups;
        assert_eq!(checks.len(), 2 * TABLES.len());
        assert!(checks.iter().all(|(_, a, b)| a == b), "{checks:?}");
        assert!(checks[0].1 > 0);

        // A store whose rollups are older than the code rebuilds them from the rows.
        let before = store
            .seller_rows(
                &all,
                SellerGroup {
                    period: None,
                    by: None,
                },
            )
            .await;
        store
            .with_writer(|c| {
                c.execute_batch("DELETE FROM rollup_version; DELETE FROM sales_assets;")
                    .map_err(db_err)
            })
            .await
            .expect("age");
        drop(store);
        let reopened = DuckAnalytics::open(&path, "1GB").expect("reopen");
        let after = reopened
            .seller_rows(
                &all,
                SellerGroup {
                    period: None,
                    by: None,
                },
            )
            .await;
        assert_eq!(before.expect("before"), after.expect("after"));
    }
}
