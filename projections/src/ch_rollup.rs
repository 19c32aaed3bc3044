//! The sales rollups (`rollup.rs`) on ClickHouse, and the duplicate ledger that keeps them
//! and the row reads exact without grouping by execution id.
//!
//! ClickHouse has no transactions, so the rollups cannot be updated "with" the rows as on
//! DuckDB. Instead each rollup is an `AggregatingMergeTree` fed by a materialized view over
//! `usage`: the rows and their sums arrive in the same `INSERT`. Two more views copy every
//! insert: `sales_rows` (the sales, ordered by seller and time, so a seller's range read
//! prunes by index) and `usage_copies` (every insert's execution id: a plain `MergeTree`, so
//! copies never collapse in a merge and can always be counted).
//!
//! A row is inserted twice only when two writers race in a rebalance (each checked before the
//! other inserted). After each batch the writer counts its execution ids in `usage_copies`;
//! of two racing writers the later one always sees both copies. An id with extra copies is
//! recorded in `usage_dups` (with the row and the number of extra copies), and every read
//! takes them off: rollup reads subtract the extra copies' sums, row reads skip the ids in
//! `usage_dups` and add one copy of each back. A read first asks whether the ledger holds any
//! of its seller's (or buyer's) executions and leaves those legs out when not (almost always).
//! So a read that overlaps a race, between the second insert and that writer's check (one
//! query), can see the copy; `tally reconcile` compares each rollup with the deduplicated
//! rows.

use crate::ch::{ch_err, ch_offset_sql, ClickHouseAnalytics};
use crate::rollup::{rollups_answer, whole_days, DAY_MS};
use crate::seller::{Bucket, NewBuyers, Segment, SellerGroup, SellerQuery, SellerRow};
use crate::StoreResult;
use clickhouse::Row;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// A rollup: its table, and its keys after `seller`, each with its expression over a usage
/// row. A time key comes first, so that a read of a time range prunes by the index.
struct Rollup {
    table: &'static str,
    keys: &'static [(&'static str, &'static str)],
}

const HOUR: &str = "intDiv(at_ms, 3600000) * 3600000";
const DAY: &str = "intDiv(at_ms, 86400000) * 86400000";
const MONTH: &str =
    "toInt64(toUInt16(toStartOfMonth(toDate(toDateTime(intDiv(at_ms, 1000), 'UTC'))))) * 86400000";

const HOURLY: Rollup = Rollup {
    table: "sales_hourly",
    keys: &[("hour_ms", HOUR), ("asset_id", "asset_id")],
};
const BUYER_DAILY: Rollup = Rollup {
    table: "sales_buyer_daily",
    keys: &[("day_ms", DAY), ("buyer", "buyer")],
};
const BUYERS: Rollup = Rollup {
    table: "sales_buyers",
    keys: &[("buyer", "buyer")],
};
const ASSETS: Rollup = Rollup {
    table: "sales_assets",
    keys: &[("asset_id", "asset_id")],
};
const ASSET_BUYERS: Rollup = Rollup {
    table: "sales_asset_buyers",
    keys: &[("asset_id", "asset_id"), ("buyer", "buyer")],
};
const ASSET_BUYERS_MONTHLY: Rollup = Rollup {
    table: "sales_asset_buyers_monthly",
    keys: &[
        ("month_ms", MONTH),
        ("asset_id", "asset_id"),
        ("buyer", "buyer"),
    ],
};
const ROLLUPS: [&Rollup; 6] = [
    &HOURLY,
    &BUYER_DAILY,
    &BUYERS,
    &ASSETS,
    &ASSET_BUYERS,
    &ASSET_BUYERS_MONTHLY,
];

/// Bumped when a rollup's definition changes: the rollups are then rebuilt from the rows.
const ROLLUP_VERSION: i64 = 1;

/// The usage columns that `sales_rows` and `usage_dups` copy, in `USAGE_DDL`'s order.
const ROW_COLUMNS: &str = "execution_id, buyer, seller, asset_id, api_key_id, user_id, credits, \
    result_rows, duration_ms, status, mode, at_ms, seller_credits";

const ROW_DDL: &str = "execution_id String, buyer String, seller String, asset_id String, \
    api_key_id Int64, user_id String, credits Int64, result_rows Int64, duration_ms Float64, \
    status String, mode String, at_ms Int64, seller_credits Int64";

const MONTH_PARTITION: &str = "toYYYYMM(toDate(toDateTime(intDiv(at_ms, 1000), 'UTC')))";

/// Only sales roll up: live executions bought by another company.
const SALE: &str = "mode = 'live' AND buyer != seller";

fn key_names(r: &Rollup) -> String {
    let mut k = vec!["seller"];
    k.extend(r.keys.iter().map(|(name, _)| *name));
    k.join(", ")
}

/// The keys as a select list over usage rows.
fn key_exprs(r: &Rollup) -> String {
    let mut k = vec!["seller".to_string()];
    k.extend(r.keys.iter().map(|(name, expr)| {
        if name == expr {
            name.to_string()
        } else {
            format!("{expr} AS {name}")
        }
    }));
    k.join(", ")
}

fn rollup_ddl(r: &Rollup) -> String {
    let keys: Vec<String> = r
        .keys
        .iter()
        .map(|(name, _)| {
            let ty = if name.ends_with("_ms") {
                "Int64"
            } else {
                "String"
            };
            format!("{name} {ty}")
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (seller String, {keys}, \
         s_n AggregateFunction(sum, Int64), s_ok AggregateFunction(sum, Int64), \
         s_rev AggregateFunction(sum, Int64), s_spent AggregateFunction(sum, Int64), \
         s_dur AggregateFunction(sum, Float64), s_first AggregateFunction(min, Int64), \
         s_last AggregateFunction(max, Int64)) \
         ENGINE = AggregatingMergeTree ORDER BY ({names}) SETTINGS index_granularity = 1024",
        t = r.table,
        keys = keys.join(", "),
        names = key_names(r)
    )
}

/// The rollup's states over the usage rows of `from` (a table, or a table with `FINAL`).
fn states_select(r: &Rollup, from: &str) -> String {
    format!(
        "SELECT {keys}, sumState(toInt64(1)) AS s_n, sumState(toInt64(status = 'succeeded')) AS s_ok, \
         sumState(seller_credits) AS s_rev, sumState(credits) AS s_spent, \
         sumState(duration_ms) AS s_dur, minState(at_ms) AS s_first, maxState(at_ms) AS s_last \
         FROM {from} WHERE {SALE} GROUP BY {names}",
        keys = key_exprs(r),
        names = key_names(r)
    )
}

/// Every statement that creates the rollups, their views and the duplicate ledger (each
/// idempotent), in order: tables before the views that write them.
pub(crate) fn ddl() -> Vec<String> {
    let mut out: Vec<String> = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS sales_rows ({ROW_DDL}) ENGINE = MergeTree \
             PARTITION BY {MONTH_PARTITION} ORDER BY (seller, at_ms, execution_id) \
             SETTINGS index_granularity = 2048"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS usage_copies (buyer String, at_ms Int64, execution_id String) \
             ENGINE = MergeTree PARTITION BY {MONTH_PARTITION} ORDER BY (buyer, at_ms, execution_id)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS usage_dups ({ROW_DDL}, extra Int64) \
             ENGINE = ReplacingMergeTree(extra) ORDER BY (buyer, at_ms, execution_id)"
        ),
        "CREATE TABLE IF NOT EXISTS rollup_version (v Int64) ENGINE = MergeTree ORDER BY v".into(),
    ];
    out.extend(ROLLUPS.iter().map(|r| rollup_ddl(r)));
    out.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS sales_rows_mv TO sales_rows AS \
         SELECT {ROW_COLUMNS} FROM usage WHERE {SALE}"
    ));
    out.push(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS usage_copies_mv TO usage_copies AS \
         SELECT buyer, at_ms, execution_id FROM usage"
            .into(),
    );
    out.extend(ROLLUPS.iter().map(|r| {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {t}_mv TO {t} AS {s}",
            t = r.table,
            s = states_select(r, "usage")
        )
    }));
    out
}

#[derive(Row, Deserialize)]
struct Count {
    n: i64,
}

#[derive(Row, Deserialize)]
struct Copies {
    execution_id: String,
    c: i64,
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

impl From<SellerRead> for SellerRow {
    fn from(r: SellerRead) -> Self {
        SellerRow {
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
        }
    }
}

#[derive(Row, Deserialize)]
struct PairRead {
    p: i64,
    k: String,
    n: i64,
}

/// A period's local start as epoch ms over `ts` (UTC ms) in the query's zone (`0` for none).
fn period_of(period: Option<Bucket>, q: &SellerQuery) -> String {
    crate::ch_usage::period_sql(period)
        .replace("local_ms", &format!("(ts + {})", ch_offset_sql(&q.tz)))
}

/// The two legs of a grouped rollup read, as one `UNION ALL`: the rollup's states merged per
/// (`p`, `k`), and the extra copies of duplicated executions, negated, grouped alike. `p` is
/// an expression over `ts` (the key `ts_key`); `k` a key column or `''`; `filter` a condition
/// over the keys (or empty); `sellers` the seller condition (`seller = ?`, or `1` for all).
/// Columns: p, k, u_n (executions), u_ok, u_rev, u_spent, u_dur, u_f, u_l. Merging states per
/// group rather than per key first: grouping 43,200 keys took 13–22 ms on 18.16, grouping by
/// the read's own groups 8. Without `dups` (the ledger holds none of the seller's sales) the
/// second leg is left out.
fn legs(
    r: &Rollup,
    sellers: &str,
    (p, ts_key, k): (&str, &str, &str),
    filter: &str,
    dups: bool,
) -> String {
    let and = if filter.is_empty() {
        String::new()
    } else {
        format!(" AND {filter}")
    };
    let defs: String = r
        .keys
        .iter()
        .filter(|(name, expr)| name != expr)
        .map(|(name, expr)| format!(", {expr} AS {name}"))
        .collect();
    let rollup = format!(
        "SELECT {p} AS p, {k} AS k, toInt64(sumMerge(s_n)) AS u_n, toInt64(sumMerge(s_ok)) AS u_ok, \
         toInt64(sumMerge(s_rev)) AS u_rev, toInt64(sumMerge(s_spent)) AS u_spent, \
         toFloat64(sumMerge(s_dur)) AS u_dur, toInt64(minMerge(s_first)) AS u_f, \
         toInt64(maxMerge(s_last)) AS u_l \
         FROM (SELECT *, {ts_key} AS ts FROM {t} WHERE {sellers}{and}) GROUP BY p, k",
        t = r.table,
    );
    if !dups {
        return rollup;
    }
    format!(
        "{rollup} UNION ALL \
         SELECT {p} AS p, {k} AS k, toInt64(-sum(extra)) AS u_n, \
         toInt64(-sum(extra * (status = 'succeeded'))) AS u_ok, toInt64(-sum(extra * seller_credits)) AS u_rev, \
         toInt64(-sum(extra * credits)) AS u_spent, toFloat64(-sum(extra * duration_ms)) AS u_dur, \
         toInt64(min(at_ms)) AS u_f, toInt64(max(at_ms)) AS u_l \
         FROM (SELECT *{defs}, {ts_key} AS ts FROM usage_dups FINAL WHERE {sellers} AND {SALE}) \
         WHERE 1{and} GROUP BY p, k"
    )
}

/// A seller read (`SellerRead`'s columns) over `legs` (or legs and rows shaped alike),
/// with `buyers` as its buyers column. A leg of no executions (18.16 answers one zero row
/// for constant group keys over nothing) never sets the first or last sale.
fn sums_of(legs: &str, buyers: &str) -> String {
    format!(
        "SELECT p, k, toInt64(sum(u_n)) AS n, toInt64(sum(u_ok)) AS ok, toInt64(sum(u_rev)) AS revenue, \
         toInt64(sum(u_spent)) AS spent, {buyers} AS buyers, toFloat64(sum(u_dur)) AS dur, \
         toInt64(minIf(u_f, u_n != 0)) AS f_ms, toInt64(maxIf(u_l, u_n != 0)) AS l_ms \
         FROM ({legs}) GROUP BY p, k ORDER BY p, k"
    )
}

/// A rollup state's own value: a part's partial state of a key holds real sales, so its
/// first and last sale are real sale times (what the distinct-buyer reads need) without
/// merging the key's states first.
fn own(state: &str) -> String {
    format!("finalizeAggregation({state})")
}

/// The seller's sales in `[from, to)`, each execution once, as a subquery with the columns
/// `cols`: `sales_rows` without the duplicated ids, and one copy of each of those from the
/// ledger (or `sales_rows` alone without `dups`). Every `?` is the seller.
pub(crate) fn sales_in(cols: &str, from: i64, to: i64, dups: bool) -> String {
    let rows = format!(
        "SELECT {cols} FROM sales_rows WHERE seller = ? AND at_ms >= {from} AND at_ms < {to}"
    );
    if !dups {
        return format!("({rows})");
    }
    format!(
        "({rows} AND execution_id NOT IN (SELECT execution_id FROM usage_dups) \
         UNION ALL \
         SELECT {cols} FROM usage_dups FINAL \
           WHERE seller = ? AND {SALE} AND at_ms >= {from} AND at_ms < {to})"
    )
}

fn is_all_time(q: &SellerQuery) -> bool {
    q.from_ms <= 0 && q.to_ms == i64::MAX
}

impl ClickHouseAnalytics {
    /// `sql` with the seller bound to each of its `?`.
    fn for_seller(&self, sql: &str, seller: &str) -> clickhouse::query::Query {
        let mut query = self.client.query(sql);
        for _ in 0..sql.matches('?').count() {
            query = query.bind(seller);
        }
        query
    }

    /// The rows of `sql`, whose every `?` is the seller.
    async fn fetch_for_seller<T>(&self, sql: &str, seller: &str) -> StoreResult<Vec<T>>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.for_seller(sql, seller)
            .fetch_all()
            .await
            .map_err(ch_err)
    }

    /// A seller read whose every `?` is the seller.
    pub(crate) async fn seller_reads(
        &self,
        sql: &str,
        q: &SellerQuery,
    ) -> StoreResult<Vec<SellerRow>> {
        let rows: Vec<SellerRead> = self.fetch_for_seller(sql, &q.seller_company_id).await?;
        // Constant group keys make 18.16 answer one zero row for no executions: dropped.
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(SellerRow::from)
            .collect())
    }

    async fn pairs(&self, sql: &str, q: &SellerQuery) -> StoreResult<HashMap<(i64, String), u64>> {
        let rows: Vec<PairRead> = self.fetch_for_seller(sql, &q.seller_company_id).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(|r| ((r.p, r.k), r.n as u64))
            .collect())
    }

    /// Whether the duplicate ledger holds any execution whose `column` (`seller` or `buyer`)
    /// is `id`. Almost always it holds none, and the reads then leave out its legs, which cost
    /// as much as the rest of a small read. A duplicate recorded between this check and the
    /// read is the moment the module doc names.
    pub(crate) async fn has_dups(&self, column: &str, id: &str) -> StoreResult<bool> {
        let n: Count = self
            .client
            .query(&format!(
                "SELECT toInt64(count()) AS n FROM usage_dups WHERE {column} = ?"
            ))
            .bind(id)
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(n.n > 0)
    }

    /// Records the executions of a batch just written that have more than one copy (see the
    /// module doc). Run for every batch, also one whose rows were all stored already: a
    /// writer that died between its insert and this check left its batch to be redone.
    pub(crate) async fn record_duplicates(
        &self,
        rows: &[crate::ch_usage::StoredUsage],
    ) -> StoreResult<()> {
        let Some(lo) = rows.iter().map(|r| r.at_ms).min() else {
            return Ok(());
        };
        let hi = rows.iter().map(|r| r.at_ms).max().unwrap_or(lo);
        let buyers: HashSet<&str> = rows.iter().map(|r| r.buyer.as_str()).collect();
        let marks = vec!["?"; buyers.len()].join(", ");
        let mut q = self.client.query(&format!(
            "SELECT execution_id, toInt64(count()) AS c FROM usage_copies \
             WHERE buyer IN ({marks}) AND at_ms >= {lo} AND at_ms <= {hi} \
             GROUP BY execution_id HAVING c > 1"
        ));
        for b in buyers {
            q = q.bind(b);
        }
        let copies: Vec<Copies> = q.fetch_all().await.map_err(ch_err)?;
        if copies.is_empty() {
            return Ok(());
        }
        let extra: HashMap<&str, i64> = copies
            .iter()
            .map(|c| (c.execution_id.as_str(), c.c - 1))
            .collect();
        let mut insert = self
            .client
            .insert::<crate::ch_usage::DupRow>("usage_dups")
            .await
            .map_err(ch_err)?;
        let mut written = HashSet::new();
        for r in rows {
            if let Some(n) = extra.get(r.execution_id.as_str()) {
                if written.insert(r.execution_id.as_str()) {
                    insert
                        .write(&crate::ch_usage::DupRow::of(r, *n))
                        .await
                        .map_err(ch_err)?;
                }
            }
        }
        insert.end().await.map_err(ch_err)?;
        tracing::warn!(
            duplicated = written.len(),
            "metered executions written twice (a rebalance race); recorded for the reads"
        );
        Ok(())
    }

    /// Builds the rollups, `sales_rows` and `usage_copies` from the rows when they are older
    /// than this code (or new beside an older `usage` table). Runs at open, before any stage
    /// writes; two processes opening an old store at the same moment could both rebuild
    /// (`tally reconcile` would show it).
    pub(crate) async fn build_rollups(&self) -> StoreResult<()> {
        let v: Count = self
            .client
            .query("SELECT toInt64(max(v)) AS n FROM rollup_version")
            .fetch_one()
            .await
            .map_err(ch_err)?;
        if v.n >= ROLLUP_VERSION {
            return Ok(());
        }
        let rows: Count = self
            .client
            .query("SELECT toInt64(count()) AS n FROM usage")
            .fetch_one()
            .await
            .map_err(ch_err)?;
        if rows.n > 0 {
            tracing::info!(
                rows = rows.n,
                "building the ClickHouse sales rollups from the metered rows"
            );
            let mut tables = vec!["sales_rows", "usage_copies", "usage_dups"];
            tables.extend(ROLLUPS.iter().map(|r| r.table));
            for t in tables {
                self.exec(&format!("TRUNCATE TABLE {t}")).await?;
            }
            self.exec(
                "INSERT INTO usage_copies SELECT buyer, at_ms, execution_id FROM usage FINAL",
            )
            .await?;
            // Copies not merged away yet stay in `usage`: the row reads must skip them, while
            // the rollups built here hold one copy (so nothing to subtract: `extra` 0).
            self.exec(&format!(
                "INSERT INTO usage_dups SELECT {ROW_COLUMNS}, toInt64(0) AS extra FROM usage FINAL \
                 WHERE (buyer, at_ms, execution_id) IN (SELECT buyer, at_ms, execution_id FROM usage \
                 GROUP BY buyer, at_ms, execution_id HAVING count() > 1)"
            ))
            .await?;
            self.exec(&format!(
                "INSERT INTO sales_rows SELECT {ROW_COLUMNS} FROM usage FINAL WHERE {SALE}"
            ))
            .await?;
            for r in ROLLUPS {
                self.exec(&format!(
                    "INSERT INTO {} {}",
                    r.table,
                    states_select(r, "usage FINAL")
                ))
                .await?;
            }
        }
        self.exec(&format!(
            "INSERT INTO rollup_version (v) VALUES ({ROLLUP_VERSION})"
        ))
        .await
    }

    async fn exec(&self, sql: &str) -> StoreResult<()> {
        self.client.query(sql).execute().await.map_err(ch_err)
    }

    /// Distinct buyers per period (`key` empty), from each buyer's first and last sale of
    /// every UTC day (see `rollup.rs`; each part's state of a buyer-day names real sales, and
    /// the day's first and last are among them).
    async fn buyers_per_period(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<HashMap<(i64, String), u64>> {
        let (from, to) = (q.from_ms, q.to_ms);
        let day_lo = from.div_euclid(DAY_MS) * DAY_MS - DAY_MS;
        let (first, last) = (own("s_first"), own("s_last"));
        let days =
            format!("sales_buyer_daily WHERE seller = ? AND day_ms >= {day_lo} AND day_ms < {to}");
        let sql = match period {
            None => format!(
                "SELECT toInt64(0) AS p, '' AS k, toInt64(uniqExact(buyer)) AS n FROM {days} \
                 AND (({first} >= {from} AND {first} < {to}) OR ({last} >= {from} AND {last} < {to}))"
            ),
            Some(_) => format!(
                "SELECT {p} AS p, '' AS k, toInt64(uniqExact(buyer)) AS n FROM \
                 (SELECT buyer, arrayJoin([{first}, {last}]) AS ts FROM {days}) \
                 WHERE ts >= {from} AND ts < {to} GROUP BY p",
                p = period_of(period, q)
            ),
        };
        self.pairs(&sql, q).await
    }

    /// Distinct buyers per asset over the range, from each (asset, buyer)'s first and last
    /// sale of every UTC month; the rows when a pair bought before and after the range within
    /// one month (see `duck_rollup`). Per part's state: one that spans the range sends the
    /// read to the rows, and without one, a state overlapping the range holds a sale in it.
    async fn buyers_per_asset(&self, q: &SellerQuery) -> StoreResult<HashMap<(i64, String), u64>> {
        let (from, to) = (q.from_ms, q.to_ms);
        let (first, last) = (own("s_first"), own("s_last"));
        let months = format!(
            "sales_asset_buyers_monthly WHERE seller = ? AND month_ms >= {} AND month_ms < {to}",
            crate::rollup::month_start(from)
        );
        #[derive(Row, Deserialize)]
        struct AssetBuyers {
            k: String,
            n: i64,
            unsure: i64,
        }
        let sql = format!(
            "SELECT asset_id AS k, toInt64(uniqExactIf(buyer, l >= {from} AND f < {to})) AS n, \
             toInt64(countIf(f < {from} AND l >= {to})) AS unsure FROM \
             (SELECT asset_id, buyer, {first} AS f, {last} AS l FROM {months}) GROUP BY asset_id"
        );
        let rows: Vec<AssetBuyers> = self.fetch_for_seller(&sql, &q.seller_company_id).await?;
        if rows.iter().all(|r| r.unsure == 0) {
            return Ok(rows
                .into_iter()
                .filter(|r| r.n > 0)
                .map(|r| ((0, r.k), r.n as u64))
                .collect());
        }
        // Duplicates do not change who bought: sales_rows as it is.
        let sql = format!(
            "SELECT toInt64(0) AS p, asset_id AS k, toInt64(uniqExact(buyer)) AS n FROM sales_rows \
             WHERE seller = ? AND at_ms >= {from} AND at_ms < {to} GROUP BY asset_id"
        );
        self.pairs(&sql, q).await
    }

    /// Sums per (period, asset or nothing) from the hourly rollup, buyers from `buyers`
    /// (read at the same time).
    async fn hourly_rows(
        &self,
        q: &SellerQuery,
        g: SellerGroup,
        buyers: impl std::future::Future<Output = StoreResult<HashMap<(i64, String), u64>>>,
        dups: bool,
    ) -> StoreResult<Vec<SellerRow>> {
        let key = if g.by == Some(Segment::Asset) {
            "asset_id"
        } else {
            "''"
        };
        let filter = format!("hour_ms >= {} AND hour_ms < {}", q.from_ms, q.to_ms);
        let period = period_of(g.period, q);
        let legs = legs(
            &HOURLY,
            "seller = ?",
            (&period, "hour_ms", key),
            &filter,
            dups,
        );
        let sql = sums_of(&legs, "toInt64(0)");
        let (mut out, buyers) = tokio::try_join!(self.seller_reads(&sql, q), buyers)?;
        for r in &mut out {
            r.buyers = buyers
                .get(&(r.period_ms, r.key.clone()))
                .copied()
                .unwrap_or(0);
        }
        Ok(out)
    }

    /// Each buyer's sums over the range: whole UTC days from the daily rollup, the ragged
    /// edges of the range from the rows.
    async fn buyer_rows(&self, q: &SellerQuery, dups: bool) -> StoreResult<Vec<SellerRow>> {
        let (start, end) = whole_days(q.from_ms, q.to_ms);
        let days = legs(
            &BUYER_DAILY,
            "seller = ?",
            ("toInt64(0)", "0", "buyer"),
            &format!("day_ms >= {start} AND day_ms < {end}"),
            dups,
        );
        let edge = |from: i64, to: i64| {
            format!(
                "SELECT toInt64(0) AS p, buyer AS k, toInt64(1) AS u_n, toInt64(status = 'succeeded') AS u_ok, \
                 toInt64(seller_credits) AS u_rev, toInt64(credits) AS u_spent, \
                 toFloat64(duration_ms) AS u_dur, toInt64(at_ms) AS u_f, toInt64(at_ms) AS u_l \
                 FROM {}",
                sales_in(
                    "buyer, status, seller_credits, credits, duration_ms, at_ms",
                    from,
                    to,
                    dups
                )
            )
        };
        let all = format!(
            "{days} UNION ALL {} UNION ALL {}",
            edge(q.from_ms, start.min(q.to_ms)),
            edge(end.max(start), q.to_ms),
        );
        self.seller_reads(&sums_of(&all, "toInt64(1)"), q).await
    }

    /// All-time rows per asset, per buyer or in total, from the all-time rollups.
    async fn all_time_rows(
        &self,
        q: &SellerQuery,
        by: Option<Segment>,
        dups: bool,
    ) -> StoreResult<Vec<SellerRow>> {
        let sums = |r: &Rollup, k: &str, buyers: &str| {
            sums_of(
                &legs(r, "seller = ?", ("toInt64(0)", "0", k), "", dups),
                buyers,
            )
        };
        let (sql, buyers) = match by {
            Some(Segment::Buyer) => {
                return self
                    .seller_reads(&sums(&BUYERS, "buyer", "toInt64(1)"), q)
                    .await
            }
            Some(Segment::Asset) => (
                sums(&ASSETS, "asset_id", "toInt64(0)"),
                "SELECT toInt64(0) AS p, asset_id AS k, toInt64(uniqExact(buyer)) AS n \
                 FROM sales_asset_buyers WHERE seller = ? GROUP BY asset_id",
            ),
            None => (
                sums(&ASSETS, "''", "toInt64(0)"),
                "SELECT toInt64(0) AS p, '' AS k, toInt64(uniqExact(buyer)) AS n \
                 FROM sales_buyers WHERE seller = ?",
            ),
        };
        let buyers = self.pairs(buyers, q);
        let (mut out, buyers) = tokio::try_join!(self.seller_reads(&sql, q), buyers)?;
        for r in &mut out {
            r.buyers = buyers
                .get(&(r.period_ms, r.key.clone()))
                .copied()
                .unwrap_or(0);
        }
        Ok(out)
    }

    /// The seller read from the rollups, or `None` when they cannot answer it exactly. `dups`:
    /// whether the ledger holds any of the seller's sales ([`Self::has_dups`]).
    pub(crate) async fn rollup_seller_rows(
        &self,
        q: &SellerQuery,
        g: SellerGroup,
        dups: bool,
    ) -> StoreResult<Option<Vec<SellerRow>>> {
        if is_all_time(q) {
            return match g.period {
                None => self.all_time_rows(q, g.by, dups).await.map(Some),
                Some(_) => Ok(None),
            };
        }
        if !rollups_answer(&q.tz, q.from_ms, q.to_ms) {
            return Ok(None);
        }
        match (g.period, g.by) {
            (_, None) => self
                .hourly_rows(q, g, self.buyers_per_period(q, g.period), dups)
                .await
                .map(Some),
            (None, Some(Segment::Asset)) => self
                .hourly_rows(q, g, self.buyers_per_asset(q), dups)
                .await
                .map(Some),
            (None, Some(Segment::Buyer)) => self.buyer_rows(q, dups).await.map(Some),
            (Some(_), Some(_)) => Ok(None),
        }
    }

    /// Per period, the buyers whose first sale lies in the range: from the all-time buyer
    /// rollup.
    pub(crate) async fn rollup_new_buyers(
        &self,
        q: &SellerQuery,
        period: Option<Bucket>,
    ) -> StoreResult<NewBuyers> {
        let sql = format!(
            "SELECT {p} AS p, '' AS k, toInt64(count()) AS n FROM \
             (SELECT buyer, toInt64(minMerge(s_first)) AS ts FROM sales_buyers WHERE seller = ? GROUP BY buyer) \
             WHERE ts >= {from} AND ts < {to} GROUP BY p ORDER BY p",
            p = period_of(period, q),
            from = q.from_ms,
            to = q.to_ms,
        );
        let rows: Vec<PairRead> = self.fetch_for_seller(&sql, &q.seller_company_id).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.n > 0)
            .map(|r| (r.p, r.n as u64))
            .collect())
    }

    /// Each rollup's (executions, revenue) against the deduplicated rows': what `tally
    /// reconcile` compares.
    pub(crate) async fn check_rollups(&self) -> StoreResult<Vec<(String, i64, i64)>> {
        #[derive(Row, Deserialize)]
        struct Sums {
            n: i64,
            rev: i64,
        }
        let rows: Sums = self
            .client
            .query(&format!(
                "SELECT toInt64(count()) AS n, toInt64(sum(sc)) AS rev FROM \
                 (SELECT execution_id, any(seller_credits) AS sc FROM usage WHERE {SALE} GROUP BY execution_id)"
            ))
            .fetch_one()
            .await
            .map_err(ch_err)?;
        let mut out = Vec::new();
        for r in ROLLUPS {
            let sql = format!(
                "SELECT toInt64(sum(u_n)) AS n, toInt64(sum(u_rev)) AS rev FROM ({})",
                legs(r, "1", ("toInt64(0)", "0", "''"), "", true)
            );
            let s: Sums = self.client.query(&sql).fetch_one().await.map_err(ch_err)?;
            out.push((format!("{} executions", r.table), s.n, rows.n));
            out.push((format!("{} revenue", r.table), s.rev, rows.rev));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_creates_tables_before_the_views_that_write_them() {
        let ddl = ddl();
        let first_view = ddl
            .iter()
            .position(|s| s.contains("MATERIALIZED VIEW"))
            .expect("views");
        assert!(ddl[..first_view]
            .iter()
            .all(|s| s.starts_with("CREATE TABLE")));
        assert_eq!(ddl.len() - first_view, 2 + ROLLUPS.len());
        assert!(rollup_ddl(&HOURLY).contains("ORDER BY (seller, hour_ms, asset_id)"));
    }

    #[test]
    fn legs_bind_the_seller_in_both_and_filter_both() {
        let m = legs(
            &HOURLY,
            "seller = ?",
            ("toInt64(0)", "hour_ms", "''"),
            "hour_ms >= 5",
            true,
        );
        assert!(!legs(&HOURLY, "1", ("0", "0", "''"), "", false).contains("usage_dups"));
        assert_eq!(m.matches('?').count(), 2);
        assert_eq!(m.matches("AND hour_ms >= 5").count(), 2);
        assert!(m.contains("intDiv(at_ms, 3600000) * 3600000 AS hour_ms"));
    }

    use crate::duck_rollup::tests::{groups, local_midnight, redelivered_batches};
    use crate::usage::{UsageQuery, UsageStore};
    use crate::DuckAnalytics;

    /// Writes the sales in batches that each repeat the previous one (redeliveries), and
    /// between two batches inserts copies of some rows past the check, as a writer that lost
    /// a rebalance race would: the next batch holding them must find and record them.
    async fn load(store: &dyn UsageStore, raw: Option<&ClickHouseAnalytics>) {
        for (n, (batch, chunk, offsets)) in redelivered_batches().into_iter().enumerate() {
            store.write_usage("m", batch, offsets).await.expect("write");
            if let (Some(ch), true) = (raw, n % 3 == 0) {
                let mut insert = ch
                    .client
                    .insert::<crate::ch_usage::StoredUsage>("usage")
                    .await
                    .expect("insert");
                for r in chunk.iter().step_by(4) {
                    insert
                        .write(&crate::ch_usage::StoredUsage::from(r.clone()))
                        .await
                        .expect("copy");
                }
                insert.end().await.expect("end");
            }
        }
    }

    /// Every seller read and usage report on ClickHouse equals DuckDB's over the same sales,
    /// with rows written twice by racing writers among them, in zones with and without DST;
    /// and a store whose rollups are older than the code rebuilds them from the rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clickhouse_rollup_reads_equal_duckdb_despite_duplicates() {
        let Some(url) = schemas::testenv::service_url("TALLY_TEST_CLICKHOUSE") else {
            return;
        };
        let ns = schemas::testenv::unique_prefix();
        let ch = ClickHouseAnalytics::open(&url, &ns).await.expect("open");
        let dir = tempfile::tempdir().expect("dir");
        let duck = DuckAnalytics::open(&dir.path().join("u.duckdb"), "1GB").expect("duck");
        load(&ch, Some(&ch)).await;
        load(&duck, None).await;
        let dups: Vec<Count> = ch
            .client
            .query("SELECT toInt64(count()) AS n FROM usage_dups FINAL")
            .fetch_all()
            .await
            .expect("dups");
        assert!(dups[0].n > 10, "{} duplicates recorded", dups[0].n);
        compare(&ch, &duck).await;

        // Rollups older than the code: rebuilt from the rows (one copy of each execution).
        ch.exec("TRUNCATE TABLE rollup_version").await.expect("age");
        ch.exec("TRUNCATE TABLE sales_assets").await.expect("lose");
        let reopened = ClickHouseAnalytics::open(&url, &ns).await.expect("reopen");
        compare(&reopened, &duck).await;
        reopened.drop_namespace().await.expect("drop");
    }

    async fn compare(ch: &ClickHouseAnalytics, duck: &DuckAnalytics) {
        let zones = [
            chrono_tz::Europe::Berlin,
            chrono_tz::America::New_York,
            chrono_tz::UTC,
            chrono_tz::Asia::Kolkata,
        ];
        for tz in zones {
            for (a, b) in [(0, 62), (3, 40), (20, 50), (-5, 10), (30, 31)] {
                let (from, to) = (local_midnight(tz, a), local_midnight(tz, b));
                let q = SellerQuery {
                    seller_company_id: "s1".into(),
                    from_ms: from,
                    to_ms: to,
                    tz: crate::offset_segments(tz, from, to),
                };
                for g in groups() {
                    let c = ch.seller_rows(&q, g).await.expect("ch");
                    let d = duck.seller_rows(&q, g).await.expect("duck");
                    assert_eq!(c, d, "{tz} {a}..{b} {g:?}");
                }
                for p in [None, Some(Bucket::Day), Some(Bucket::Month)] {
                    let c = ch.seller_new_buyers(&q, p).await.expect("ch");
                    let d = duck.seller_new_buyers(&q, p).await.expect("duck");
                    assert_eq!(c, d, "new buyers {tz} {a}..{b} {p:?}");
                }
                for buyer in ["b1", "b3", "s1"] {
                    let u = UsageQuery {
                        buyer_company_id: buyer.into(),
                        api_key_id: None,
                        from_ms: from,
                        to_ms: to,
                        mode: "live".into(),
                        tz: q.tz.clone(),
                    };
                    let c = ch.usage_report(&u).await.expect("ch");
                    let d = duck.usage_report(&u).await.expect("duck");
                    assert_eq!(c, d, "usage {buyer} {tz} {a}..{b}");
                }
            }
        }
        let all = SellerQuery::all_time("s1");
        for by in [None, Some(Segment::Asset), Some(Segment::Buyer)] {
            let g = SellerGroup { period: None, by };
            let c = ch.seller_rows(&all, g).await.expect("ch");
            assert_eq!(
                c,
                duck.seller_rows(&all, g).await.expect("duck"),
                "all time {by:?}"
            );
            assert!(!c.is_empty());
        }
        let totals = ch.usage_totals().await.expect("totals");
        assert_eq!(totals.rollups.len(), 2 * ROLLUPS.len());
        assert!(
            totals.rollups.iter().all(|(_, a, b)| a == b),
            "{:?}",
            totals.rollups
        );
    }
}
