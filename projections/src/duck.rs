//! The embedded analytics store on DuckDB (columnar, in-process). Writes go through one
//! connection with the appender inside a transaction that also stores the consumer offsets;
//! reads use a small pool of cloned connections. DuckDB calls block, so they run on tokio's
//! blocking pool.

use crate::analytics::*;
use crate::{StoreError, StoreResult, StoredOffset};
use async_trait::async_trait;
use duckdb::types::Value;
use duckdb::{params, params_from_iter, Connection};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    event_id HUGEINT NOT NULL,
    website_id VARCHAR NOT NULL,
    ts BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    event_type VARCHAR NOT NULL,
    page VARCHAR NOT NULL,
    hostname VARCHAR,
    referrer_domain VARCHAR,
    event_name VARCHAR,
    event_data VARCHAR,
    screen VARCHAR,
    language VARCHAR,
    utm_source VARCHAR,
    utm_medium VARCHAR,
    utm_campaign VARCHAR,
    utm_term VARCHAR,
    utm_content VARCHAR,
    country VARCHAR,
    region VARCHAR,
    city VARCHAR,
    browser VARCHAR,
    browser_version VARCHAR,
    os VARCHAR,
    os_version VARCHAR,
    device VARCHAR,
    visitor UBIGINT NOT NULL,
    session UBIGINT NOT NULL,
    is_bot BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_offsets (
    consumer VARCHAR NOT NULL,
    topic VARCHAR NOT NULL,
    part INTEGER NOT NULL,
    next_offset UBIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, part)
);
";

pub(crate) fn db_err(e: duckdb::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// DuckDB-backed analytics store.
#[derive(Clone)]
pub struct DuckAnalytics {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl DuckAnalytics {
    /// Opens (or creates) the database file at `path`. `memory_limit` is a DuckDB size ("1GB").
    pub fn open(path: &Path, memory_limit: &str) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        Self::init(conn, memory_limit)
    }

    /// An in-memory store (tests and benchmarks).
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?, "1GB")
    }

    fn init(conn: Connection, memory_limit: &str) -> StoreResult<Self> {
        let limit: String = memory_limit
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        conn.execute_batch(&format!("SET memory_limit = '{limit}';"))
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.execute_batch(crate::duck_usage::USAGE_DDL)
            .map_err(db_err)?;
        crate::duck_rollup::init(&conn)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub(crate) async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer
                .lock()
                .map_err(|_| StoreError::Backend("writer poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    pub(crate) async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (writer, readers) = (self.writer.clone(), self.readers.clone());
        tokio::task::spawn_blocking(move || {
            let pooled = readers
                .lock()
                .map_err(|_| StoreError::Backend("pool poisoned".into()))?
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => writer
                    .lock()
                    .map_err(|_| StoreError::Backend("writer poisoned".into()))?
                    .try_clone()
                    .map_err(db_err)?,
            };
            let out = f(&conn);
            if let Ok(mut pool) = readers.lock() {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

/// The WHERE clause and its parameters for a scope. Column names come from `Dimension`, a
/// closed set; every user-supplied value is a bound parameter.
pub(crate) fn scope_sql(scope: &Scope) -> (String, Vec<Value>) {
    let mut sql = String::from("website_id = ? AND ts >= ? AND ts < ?");
    let mut params = vec![
        Value::Text(scope.website_id.clone()),
        Value::BigInt(scope.from_ms),
        Value::BigInt(scope.to_ms),
    ];
    if !scope.include_bots {
        sql.push_str(" AND NOT is_bot");
    }
    for (dim, value) in &scope.filters {
        let col = dim.column();
        match FilterMatch::of(*dim, value) {
            FilterMatch::Equals => sql.push_str(&format!(" AND {col} = ?")),
            FilterMatch::Contains => sql.push_str(&format!(" AND contains({col}, ?)")),
            FilterMatch::Missing => {
                sql.push_str(&format!(" AND {col} IS NULL"));
                continue;
            }
        }
        params.push(Value::Text(value.clone()));
    }
    (sql, params)
}

/// A breakdown over the scope's events: per (value, session) counts `g` joined to the
/// sessions' own shape `s`, grouped by value. With `only` placeholders, just those values.
/// Binds the scope's parameters, then the `only` values, then the scope's again.
fn breakdown_sql(filter: &str, by: Dimension, only: usize) -> String {
    let col = by.column();
    let e = format!("(SELECT * FROM events WHERE {filter})");
    let only = if only == 0 {
        String::new()
    } else {
        format!(" AND value IN ({})", vec!["?"; only].join(", "))
    };
    let group = match by {
        Dimension::EntryPage | Dimension::ExitPage => {
            let pick = if by == Dimension::EntryPage {
                "arg_min"
            } else {
                "arg_max"
            };
            format!(
                "SELECT value, session, visitor, 1 AS pv, 1 AS n FROM \
                 (SELECT session, any_value(visitor) AS visitor, \
                  {pick}(page, ts) FILTER (WHERE event_type = 'pageview') AS value FROM {e} GROUP BY session) \
                 WHERE value IS NOT NULL{only}"
            )
        }
        _ => {
            let value = match by {
                Dimension::Referrer => format!("coalesce({col}, '{DIRECT}')"),
                _ => col.to_string(),
            };
            format!(
                "SELECT * FROM (SELECT {value} AS value, session, any_value(visitor) AS visitor, \
                 count(*) FILTER (WHERE event_type = 'pageview') AS pv, count(*) AS n \
                 FROM {e} GROUP BY value, session) WHERE value IS NOT NULL{only}"
            )
        }
    };
    // The scope's events are read twice (for the groups, then for the sessions), so its
    // parameters are bound twice: a CTE read twice trips an internal error in DuckDB 1.4.
    format!(
        "WITH g AS ({group}), \
         s AS (SELECT session, count(*) AS s_n, count(*) FILTER (WHERE event_type = 'pageview') AS s_pv, \
               max(ts) - min(ts) AS s_dur FROM events WHERE {filter} GROUP BY session) \
         SELECT value, count(DISTINCT visitor) AS visitors, sum(pv)::BIGINT AS pageviews, \
                sum(n)::BIGINT AS events, count(*) AS sessions, \
                count(*) FILTER (WHERE s_n = 1 AND s_pv = 1) AS bounces, \
                coalesce(avg(s_dur), 0)::DOUBLE AS dur, count(*) OVER () AS total \
         FROM g JOIN s USING (session) GROUP BY value ORDER BY {order}",
        order = by.breakdown_order(),
    )
}

/// Reads breakdown rows (and the window's total) from a statement built by `breakdown_sql`.
fn breakdown_rows(
    conn: &Connection,
    sql: &str,
    params: &[Value],
) -> StoreResult<(Vec<MetricRow>, u64)> {
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let mut total = 0u64;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok((
                MetricRow {
                    value: r.get(0)?,
                    visitors: n(1)?,
                    pageviews: n(2)?,
                    events: n(3)?,
                    sessions: n(4)?,
                    bounces: n(5)?,
                    avg_duration_seconds: r.get::<_, f64>(6)? / 1000.0,
                },
                n(7)?,
            ))
        })
        .map_err(db_err)?
        .map(|r| {
            r.map(|(row, t)| {
                total = t;
                row
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok((rows, total))
}

/// Local-time offset as SQL: a constant, or a CASE over the DST segments of the range.
/// Every number here is computed by Tally, not taken from the request.
pub(crate) fn duck_offset_sql(tz: &[OffsetSegment]) -> String {
    let (steps, last) = offset_steps(tz);
    if steps.is_empty() {
        return last.to_string();
    }
    let arms: String = steps
        .iter()
        .map(|(before, offset)| format!(" WHEN ts < {before} THEN {offset}"))
        .collect();
    format!("CASE{arms} ELSE {last} END")
}

pub(crate) fn bucket_sql(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "(local_ms // 3600000) * 3600000",
        Granularity::Day => "(local_ms // 86400000) * 86400000",
        // 1970-01-01 was a Thursday: shift three days so weeks start on Mondays.
        Granularity::Week => "((local_ms + 259200000) // 604800000) * 604800000 - 259200000",
        Granularity::Month => "epoch_ms(date_trunc('month', epoch_ms(local_ms)))",
    }
}

fn insert_events(conn: &Connection, events: Vec<StoredEvent>) -> StoreResult<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    // A redelivered event carries the receive time it had the first time, so duplicates can
    // only sit in this batch's receive-time window: check just that slice of the table.
    let lo = events.iter().map(|e| e.received_at_ms).min().unwrap_or(0);
    let hi = events.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
    let mut seen: HashSet<u128> = HashSet::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT event_id FROM events WHERE received_at BETWEEN ? AND ?")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![lo, hi], |r| r.get::<_, i128>(0))
            .map_err(db_err)?;
        for id in rows {
            seen.insert(id.map_err(db_err)? as u128);
        }
    }
    let mut app = conn.appender("events").map_err(db_err)?;
    let mut inserted = 0;
    for e in events {
        if !seen.insert(e.event_id) {
            continue;
        }
        app.append_row(params![
            e.event_id as i128,
            e.website_id,
            e.ts_ms,
            e.received_at_ms,
            e.event_type,
            e.page,
            e.hostname,
            e.referrer_domain,
            e.event_name,
            e.event_data,
            e.screen,
            e.language,
            e.utm_source,
            e.utm_medium,
            e.utm_campaign,
            e.utm_term,
            e.utm_content,
            e.country,
            e.region,
            e.city,
            e.browser,
            e.browser_version,
            e.os,
            e.os_version,
            e.device,
            e.visitor,
            e.session,
            e.is_bot
        ])
        .map_err(db_err)?;
        inserted += 1;
    }
    app.flush().map_err(db_err)?;
    Ok(inserted)
}

/// Stores `consumer`'s offsets inside the transaction that wrote the rows they cover.
pub(crate) fn store_offsets(
    tx: &Connection,
    consumer: &str,
    offsets: Vec<StoredOffset>,
) -> StoreResult<()> {
    for o in offsets {
        tx.execute(
            "INSERT OR REPLACE INTO projection_offsets VALUES (?, ?, ?, ?)",
            params![consumer, o.topic, o.partition, o.next_offset],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

fn count(conn: &Connection, sql: &str, params: &[Value]) -> StoreResult<u64> {
    conn.prepare(sql)
        .map_err(db_err)?
        .query_row(params_from_iter(params.iter()), |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(db_err)
}

#[async_trait]
impl AnalyticsWriter for DuckAnalytics {
    async fn write(
        &self,
        consumer: &str,
        events: Vec<StoredEvent>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize> {
        let consumer = consumer.to_string();
        self.with_writer(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let inserted = insert_events(&tx, events)?;
            store_offsets(&tx, &consumer, offsets)?;
            tx.commit().map_err(db_err)?;
            Ok(inserted)
        })
        .await
    }

    async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>> {
        let consumer = consumer.to_string();
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT topic, part, next_offset FROM projection_offsets WHERE consumer = ?",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![consumer], |r| {
                    Ok(StoredOffset {
                        topic: r.get(0)?,
                        partition: r.get(1)?,
                        next_offset: r.get(2)?,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn reset_offsets(&self, consumer: &str) -> StoreResult<()> {
        let consumer = consumer.to_string();
        self.with_writer(move |conn| {
            conn.execute(
                "DELETE FROM projection_offsets WHERE consumer = ?",
                params![consumer],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn truncate(&self) -> StoreResult<()> {
        self.with_writer(|conn| {
            conn.execute_batch("DELETE FROM events; DELETE FROM projection_offsets;")
                .map_err(db_err)
        })
        .await
    }

    async fn recent_sessions(&self, since_ms: i64) -> StoreResult<Vec<SessionTail>> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT website_id, visitor, session, min(ts), max(ts) FROM events \
                     WHERE received_at >= ? GROUP BY website_id, visitor, session",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![since_ms], |r| {
                    Ok(SessionTail {
                        website_id: r.get(0)?,
                        visitor: r.get(1)?,
                        session: r.get(2)?,
                        first_ms: r.get(3)?,
                        last_ms: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn delete_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        self.with_writer(move |conn| {
            conn.execute("DELETE FROM events WHERE ts < ?", params![cutoff_ms])
                .map(|n| n as u64)
                .map_err(db_err)
        })
        .await
    }
}

#[async_trait]
impl AnalyticsReader for DuckAnalytics {
    async fn totals(&self, scope: &Scope) -> StoreResult<Totals> {
        let (filter, params) = scope_sql(scope);
        self.with_reader(move |conn| {
            // One scan: group events by session (a session belongs to one visitor), then
            // aggregate the sessions.
            let sql = format!(
                "WITH s AS (SELECT any_value(visitor) AS v, count(*) AS n, \
                       count(*) FILTER (WHERE event_type = 'pageview') AS pv, max(ts) - min(ts) AS dur \
                       FROM events WHERE {filter} GROUP BY session) \
                 SELECT coalesce(sum(pv), 0)::BIGINT, count(DISTINCT v), count(*), \
                        count(*) FILTER (WHERE n = 1 AND pv = 1), coalesce(avg(dur), 0)::DOUBLE FROM s"
            );
            conn.prepare(&sql)
                .map_err(db_err)?
                .query_row(params_from_iter(params.iter()), |r| {
                    Ok(Totals {
                        pageviews: r.get::<_, i64>(0)?.max(0) as u64,
                        visitors: r.get::<_, i64>(1)?.max(0) as u64,
                        sessions: r.get::<_, i64>(2)?.max(0) as u64,
                        bounces: r.get::<_, i64>(3)?.max(0) as u64,
                        avg_duration_seconds: r.get::<_, f64>(4)? / 1000.0,
                    })
                })
                .map_err(db_err)
        })
        .await
    }

    async fn series(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<SeriesPoint>> {
        let (filter, params) = scope_sql(scope);
        let sql = format!(
            "SELECT {bucket} AS b, count(*) FILTER (WHERE event_type = 'pageview'), count(DISTINCT visitor), count(*) \
             FROM (SELECT visitor, event_type, ts + ({offset}) AS local_ms FROM events WHERE {filter}) \
             GROUP BY b ORDER BY b",
            bucket = bucket_sql(granularity),
            offset = duck_offset_sql(tz),
        );
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(params.iter()), |r| {
                    Ok(SeriesPoint {
                        local_start_ms: r.get(0)?,
                        pageviews: r.get::<_, i64>(1)?.max(0) as u64,
                        visitors: r.get::<_, i64>(2)?.max(0) as u64,
                        events: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn breakdown(
        &self,
        scope: &Scope,
        by: Dimension,
        limit: u32,
        offset: u32,
    ) -> StoreResult<(Vec<MetricRow>, u64)> {
        let (filter, once) = scope_sql(scope);
        let params = [once.clone(), once].concat();
        // The window counts the groups before LIMIT applies, so the total needs no second scan.
        let sql = format!(
            "{} LIMIT {limit} OFFSET {offset}",
            breakdown_sql(&filter, by, 0)
        );
        self.with_reader(move |conn| {
            let (rows, mut total) = breakdown_rows(conn, &sql, &params)?;
            if rows.is_empty() && offset > 0 {
                // Past the last page the window has no row to report on: count the groups.
                total = count(
                    conn,
                    &format!("SELECT count(*) FROM ({})", breakdown_sql(&filter, by, 0)),
                    &params,
                )?;
            }
            Ok((rows, total))
        })
        .await
    }

    async fn breakdown_of(
        &self,
        scope: &Scope,
        by: Dimension,
        values: &[String],
    ) -> StoreResult<Vec<MetricRow>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let (filter, once) = scope_sql(scope);
        let sql = breakdown_sql(&filter, by, values.len());
        // Binds: the groups' scope, the values (inside the groups), then the sessions' scope.
        let values = values.iter().cloned().map(Value::Text);
        let params: Vec<Value> = once
            .iter()
            .cloned()
            .chain(values)
            .chain(once.clone())
            .collect();
        self.with_reader(move |conn| Ok(breakdown_rows(conn, &sql, &params)?.0))
            .await
    }

    async fn live_counts(&self, website_id: &str, since_ms: i64) -> StoreResult<LiveCounts> {
        let website_id = website_id.to_string();
        self.with_reader(move |conn| {
            conn.prepare(
                "SELECT count(DISTINCT visitor), count(*) FROM events \
                 WHERE website_id = ? AND ts >= ? AND NOT is_bot",
            )
            .map_err(db_err)?
            .query_row(params![website_id, since_ms], |r| {
                Ok(LiveCounts {
                    visitors: r.get::<_, i64>(0)?.max(0) as u64,
                    events: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })
            .map_err(db_err)
        })
        .await
    }

    async fn recent_events(
        &self,
        website_id: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>> {
        let website_id = website_id.to_string();
        self.with_reader(move |conn| {
            let sql = format!(
                "SELECT ts, event_type, page, event_name, referrer_domain, country, browser, device FROM events \
                 WHERE website_id = ? AND ts >= ? AND NOT is_bot ORDER BY ts DESC LIMIT {limit}"
            );
            let mut stmt = conn.prepare(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params![website_id, since_ms], |r| {
                    Ok(RecentEvent {
                        timestamp_ms: r.get(0)?,
                        event_type: r.get(1)?,
                        page: r.get(2)?,
                        event_name: r.get(3)?,
                        referrer_domain: r.get(4)?,
                        country: r.get(5)?,
                        browser: r.get(6)?,
                        device: r.get(7)?,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn sessions(
        &self,
        scope: &Scope,
        after: Option<SessionKey>,
        limit: u32,
    ) -> StoreResult<Vec<SessionSummary>> {
        let scope = scope.clone();
        self.with_reader(move |conn| crate::duck_sessions::sessions(conn, &scope, after, limit))
            .await
    }

    async fn event_data(&self, scope: &Scope, limit: u32) -> StoreResult<Vec<Option<String>>> {
        let (filter, params) = scope_sql(scope);
        let sql = format!(
            "SELECT event_data FROM events WHERE {filter} ORDER BY ts DESC, event_id DESC LIMIT {limit}"
        );
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(params.iter()), |r| {
                    r.get::<_, Option<String>>(0)
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }

    async fn goal_counts(&self, scope: &Scope, target: &StepMatch) -> StoreResult<GoalCounts> {
        let (scope, target) = (scope.clone(), target.clone());
        self.with_reader(move |conn| crate::duck_goals::goal_counts(conn, &scope, &target))
            .await
    }

    async fn funnel(&self, scope: &Scope, steps: &[StepMatch]) -> StoreResult<Vec<u64>> {
        let (scope, steps) = (scope.clone(), steps.to_vec());
        self.with_reader(move |conn| crate::duck_goals::funnel(conn, &scope, &steps))
            .await
    }

    async fn journeys(
        &self,
        scope: &Scope,
        anchor: &StepMatch,
        after: bool,
        depth: u32,
    ) -> StoreResult<Vec<Vec<String>>> {
        let (scope, anchor) = (scope.clone(), anchor.clone());
        self.with_reader(move |conn| {
            crate::duck_goals::journeys(conn, &scope, &anchor, after, depth)
        })
        .await
    }

    async fn cohorts(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<CohortCell>> {
        let (scope, tz) = (scope.clone(), tz.to_vec());
        self.with_reader(move |conn| crate::duck_goals::cohorts(conn, &scope, granularity, &tz))
            .await
    }

    async fn export_page(
        &self,
        scope: &Scope,
        after: Option<(i64, u128)>,
        limit: u32,
    ) -> StoreResult<Vec<ExportRow>> {
        let scope = scope.clone();
        self.with_reader(move |conn| crate::duck_sessions::export_page(conn, &scope, after, limit))
            .await
    }

    async fn touches(&self, scope: &Scope, target: &StepMatch) -> StoreResult<Vec<Touch>> {
        let (scope, target) = (scope.clone(), target.clone());
        self.with_reader(move |conn| crate::duck_goals::touches(conn, &scope, &target))
            .await
    }

    async fn session(
        &self,
        website_id: &str,
        session: u64,
        limit: u32,
    ) -> StoreResult<Option<(SessionSummary, Vec<SessionEvent>)>> {
        let website_id = website_id.to_string();
        self.with_reader(move |conn| {
            crate::duck_sessions::session(conn, &website_id, session, limit)
        })
        .await
    }

    async fn event_count(&self, website_id: &str) -> StoreResult<u64> {
        let params = vec![Value::Text(website_id.to_string())];
        self.with_reader(move |conn| {
            count(
                conn,
                "SELECT count(*) FROM events WHERE website_id = ?",
                &params,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_sql_builds_case_for_dst_segments() {
        assert_eq!(duck_offset_sql(&[]), "0");
        assert_eq!(
            duck_offset_sql(&[OffsetSegment {
                from_ms: 0,
                offset_ms: 3_600_000
            }]),
            "3600000"
        );
        let two = [
            OffsetSegment {
                from_ms: 0,
                offset_ms: 3_600_000,
            },
            OffsetSegment {
                from_ms: 1000,
                offset_ms: 7_200_000,
            },
        ];
        assert_eq!(
            duck_offset_sql(&two),
            "CASE WHEN ts < 1000 THEN 3600000 ELSE 7200000 END"
        );
    }
}
