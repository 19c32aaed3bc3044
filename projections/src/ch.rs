//! The analytics store on ClickHouse (the `clickhouse` crate over HTTP, RowBinary without
//! schema validation, so it runs on ClickHouse 18.16 as well as on current releases).
//!
//! Layout: database `<namespace>`, table `events` (ReplacingMergeTree ordered by website, time
//! and event id) and table `projection_offsets` (ReplacingMergeTree keyed by consumer, topic and
//! partition, versioned by write time). ClickHouse has no multi-table transactions, so a batch is
//! written events first, offsets second; a crash in between means the batch is delivered again,
//! and the write skips event ids already stored (checked inside the batch's website/time range).
//! The replacing engine is a second guard that collapses any duplicate that slips past the check
//! (two writers racing during a rebalance) when parts merge.
//!
//! Absent optional values are stored as empty strings (no `Nullable` columns, which are slow
//! in ClickHouse), so "absent" and "empty" are the same thing here.

use crate::analytics::*;
use crate::{StoreError, StoreResult, StoredOffset};
use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub(crate) fn ch_err(e: clickhouse::error::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

const EVENTS_DDL: &str = "CREATE TABLE IF NOT EXISTS events (
    event_hi UInt64,
    event_lo UInt64,
    website_id String,
    ts Int64,
    received_at Int64,
    event_type String,
    page String,
    hostname String,
    referrer_domain String,
    event_name String,
    event_data String,
    screen String,
    language String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    country String,
    region String,
    city String,
    browser String,
    browser_version String,
    os String,
    os_version String,
    device String,
    visitor UInt64,
    session UInt64,
    is_bot UInt8,
    is_pageview UInt8
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDate(toDateTime(intDiv(ts, 1000), 'UTC')))
ORDER BY (website_id, ts, event_hi, event_lo)";

const OFFSETS_DDL: &str = "CREATE TABLE IF NOT EXISTS projection_offsets (
    consumer String,
    topic String,
    part UInt32,
    next_offset UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (consumer, topic, part)";

#[derive(Row, Serialize, Deserialize)]
struct EventRow {
    event_hi: u64,
    event_lo: u64,
    website_id: String,
    ts: i64,
    received_at: i64,
    event_type: String,
    page: String,
    hostname: String,
    referrer_domain: String,
    event_name: String,
    event_data: String,
    screen: String,
    language: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    utm_term: String,
    utm_content: String,
    country: String,
    region: String,
    city: String,
    browser: String,
    browser_version: String,
    os: String,
    os_version: String,
    device: String,
    visitor: u64,
    session: u64,
    is_bot: u8,
    /// `event_type = 'pageview'`, stored: counting a flag is cheaper than comparing strings.
    is_pageview: u8,
}

fn text(v: Option<String>) -> String {
    v.unwrap_or_default()
}

pub(crate) fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<StoredEvent> for EventRow {
    fn from(e: StoredEvent) -> Self {
        let is_pageview = u8::from(e.event_type == "pageview");
        EventRow {
            event_hi: (e.event_id >> 64) as u64,
            event_lo: e.event_id as u64,
            website_id: e.website_id,
            ts: e.ts_ms,
            received_at: e.received_at_ms,
            event_type: e.event_type,
            page: e.page,
            hostname: text(e.hostname),
            referrer_domain: text(e.referrer_domain),
            event_name: text(e.event_name),
            event_data: text(e.event_data),
            screen: text(e.screen),
            language: text(e.language),
            utm_source: text(e.utm_source),
            utm_medium: text(e.utm_medium),
            utm_campaign: text(e.utm_campaign),
            utm_term: text(e.utm_term),
            utm_content: text(e.utm_content),
            country: text(e.country),
            region: text(e.region),
            city: text(e.city),
            browser: text(e.browser),
            browser_version: text(e.browser_version),
            os: text(e.os),
            os_version: text(e.os_version),
            device: text(e.device),
            visitor: e.visitor,
            session: e.session,
            is_bot: u8::from(e.is_bot),
            is_pageview,
        }
    }
}

#[derive(Row, Serialize, Deserialize)]
struct OffsetRow {
    consumer: String,
    topic: String,
    part: u32,
    next_offset: u64,
    version: u64,
}

#[derive(Row, Deserialize)]
struct OffsetRead {
    topic: String,
    part: u32,
    latest: u64,
}

#[derive(Row, Deserialize)]
struct IdRow {
    hi: u64,
    lo: u64,
}

#[derive(Row, Deserialize)]
struct CountRow {
    n: u64,
}

#[derive(Row, Deserialize)]
struct LiveRow {
    visitors: u64,
    events: u64,
}

#[derive(Row, Deserialize)]
struct TotalsRow {
    pageviews: u64,
    visitors: u64,
    sessions: u64,
    bounces: u64,
    avg_ms: f64,
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    bucket: i64,
    pageviews: u64,
    visitors: u64,
    events: u64,
}

#[derive(Row, Deserialize)]
struct BreakdownRow {
    value: String,
    visitors: u64,
    pageviews: u64,
    events: u64,
    sessions: u64,
    bounces: u64,
    avg_ms: f64,
}

impl From<BreakdownRow> for MetricRow {
    fn from(r: BreakdownRow) -> MetricRow {
        MetricRow {
            value: r.value,
            visitors: r.visitors,
            pageviews: r.pageviews,
            events: r.events,
            sessions: r.sessions,
            bounces: r.bounces,
            avg_duration_seconds: if r.avg_ms.is_finite() {
                r.avg_ms / 1000.0
            } else {
                0.0
            },
        }
    }
}

#[derive(Row, Deserialize)]
struct DataRow {
    event_data: String,
}

#[derive(Row, Deserialize)]
struct RecentRow {
    ts: i64,
    event_type: String,
    page: String,
    event_name: String,
    referrer_domain: String,
    country: String,
    browser: String,
    device: String,
}

#[derive(Row, Deserialize)]
struct SessionRow {
    website_id: String,
    visitor: u64,
    session: u64,
    first_ms: i64,
    last_ms: i64,
}

/// ClickHouse-backed analytics store.
#[derive(Clone)]
pub struct ClickHouseAnalytics {
    pub(crate) client: Client,
    database: String,
}

impl ClickHouseAnalytics {
    /// Connects to the ClickHouse HTTP endpoint at `url` and creates database `namespace` and
    /// its tables if they are missing (the migrations: every statement is idempotent).
    pub async fn open(url: &str, namespace: &str) -> StoreResult<Self> {
        crate::check_namespace(namespace)?;
        let url = url::Url::parse(url)
            .map_err(|e| StoreError::Invalid(format!("clickhouse url: {e}")))?;
        let mut client = Client::default()
            .with_url(format!(
                "{}://{}:{}",
                url.scheme(),
                url.host_str().unwrap_or("127.0.0.1"),
                url.port_or_known_default().unwrap_or(8123)
            ))
            .with_validation(false);
        if !url.username().is_empty() {
            client = client.with_user(url.username());
        }
        if let Some(p) = url.password() {
            client = client.with_password(p);
        }
        client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {namespace}"))
            .execute()
            .await
            .map_err(ch_err)?;
        let store = ClickHouseAnalytics {
            client: client.with_database(namespace),
            database: namespace.to_string(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Creates the tables if missing. Processes of one deployment start together and
    /// ClickHouse has no DDL locks, so a collision is retried (the statements are idempotent).
    async fn migrate(&self) -> StoreResult<()> {
        let mut attempt = 0;
        loop {
            let mut result = Ok(());
            for ddl in [EVENTS_DDL, OFFSETS_DDL, crate::ch_usage::USAGE_DDL] {
                result = self.client.query(ddl).execute().await;
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = self
                    .add_missing_columns("usage", crate::ch_usage::USAGE_COLUMNS)
                    .await;
            }
            if result.is_ok() {
                // The rollups' views read `usage` with all its columns: after them.
                for ddl in crate::ch_rollup::ddl() {
                    result = self.client.query(&ddl).execute().await;
                    if result.is_err() {
                        break;
                    }
                }
            }
            match result {
                Ok(()) => return self.build_rollups().await,
                Err(e) if attempt >= 5 => return Err(ch_err(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "clickhouse migration collided; retrying");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Adds the `columns` a table made by an older version lacks.
    async fn add_missing_columns(
        &self,
        table: &str,
        columns: &[(&str, &str)],
    ) -> Result<(), clickhouse::error::Error> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Column {
            name: String,
        }
        let present: Vec<Column> = self
            .client
            .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
            .bind(self.database.as_str())
            .bind(table)
            .fetch_all()
            .await?;
        for (name, ty) in columns {
            if !present.iter().any(|c| c.name == *name) {
                self.client
                    .query(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty}"))
                    .execute()
                    .await?;
            }
        }
        Ok(())
    }

    /// Waits (up to `limit`) until no background merge runs in this database: benchmarks
    /// time reads at rest, not behind the merges of the million rows they just loaded.
    pub async fn settle(&self, limit: std::time::Duration) -> StoreResult<()> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let running = self
                .count(
                    self.client
                        .query("SELECT count() AS n FROM system.merges WHERE database = ?")
                        .bind(self.database.as_str()),
                )
                .await?;
            if running == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Drops the whole namespace database (tests clean up after themselves with it).
    pub async fn drop_namespace(&self) -> StoreResult<()> {
        self.client
            .query(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .execute()
            .await
            .map_err(ch_err)
    }

    /// Ids among `events` that are already stored: one query over the batch's websites and
    /// event-time range, which the table's sort key narrows to a few granules.
    async fn stored_ids(&self, events: &[EventRow]) -> StoreResult<HashSet<(u64, u64)>> {
        let lo = events.iter().map(|e| e.ts).min().unwrap_or(0);
        let hi = events.iter().map(|e| e.ts).max().unwrap_or(0);
        let sites: HashSet<&str> = events.iter().map(|e| e.website_id.as_str()).collect();
        let marks = vec!["?"; sites.len()].join(", ");
        let mut q = self.client.query(&format!(
            "SELECT event_hi AS hi, event_lo AS lo FROM events \
             WHERE website_id IN ({marks}) AND ts >= ? AND ts <= ?"
        ));
        for site in sites {
            q = q.bind(site);
        }
        let rows: Vec<IdRow> = q.bind(lo).bind(hi).fetch_all().await.map_err(ch_err)?;
        Ok(rows.into_iter().map(|r| (r.hi, r.lo)).collect())
    }

    /// Waits until this database's mutations on `events` are applied (`mutations_sync` does
    /// not exist on 18.16), so a retention run has really deleted when it returns.
    async fn await_mutations(&self) -> StoreResult<()> {
        for _ in 0..600 {
            let pending = self
                .count(
                    self.client
                        .query(
                            "SELECT count() AS n FROM system.mutations \
                             WHERE database = ? AND table = 'events' AND is_done = 0",
                        )
                        .bind(self.database.as_str()),
                )
                .await?;
            if pending == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::Backend(
            "retention mutation still running after 60 s".into(),
        ))
    }

    /// Stores `consumer`'s offsets (after the rows they cover: see the module doc).
    pub(crate) async fn write_offsets(
        &self,
        consumer: &str,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let version = version_now();
        let mut insert = self
            .client
            .insert::<OffsetRow>("projection_offsets")
            .await
            .map_err(ch_err)?;
        for o in offsets {
            insert
                .write(&OffsetRow {
                    consumer: consumer.to_string(),
                    topic: o.topic,
                    part: o.partition,
                    next_offset: o.next_offset,
                    version,
                })
                .await
                .map_err(ch_err)?;
        }
        insert.end().await.map_err(ch_err)
    }

    async fn count(&self, q: clickhouse::query::Query) -> StoreResult<u64> {
        Ok(q.fetch_one::<CountRow>().await.map_err(ch_err)?.n)
    }
}

fn version_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The WHERE clause for a scope, with `?` placeholders bound by [`bind_scope`]. Column names
/// come from `Dimension`, a closed set; every user-supplied value is a bound parameter.
pub(crate) fn scope_sql(scope: &Scope) -> String {
    let mut sql = String::from("website_id = ? AND ts >= ? AND ts < ?");
    if !scope.include_bots {
        sql.push_str(" AND is_bot = 0");
    }
    for (dim, value) in &scope.filters {
        let col = dim.column();
        sql.push_str(&match FilterMatch::of(*dim, value) {
            FilterMatch::Equals => format!(" AND {col} = ?"),
            FilterMatch::Contains => format!(" AND position({col}, ?) > 0"),
            FilterMatch::Missing => format!(" AND {col} = ''"),
        });
    }
    sql
}

pub(crate) fn bind_scope(
    mut q: clickhouse::query::Query,
    scope: &Scope,
) -> clickhouse::query::Query {
    q = q
        .bind(scope.website_id.as_str())
        .bind(scope.from_ms)
        .bind(scope.to_ms);
    for (dim, value) in &scope.filters {
        if FilterMatch::of(*dim, value) != FilterMatch::Missing {
            q = q.bind(value.as_str());
        }
    }
    q
}

/// Per (value, session) counts of the scope's events: the left side of a breakdown.
fn breakdown_groups_sql(filter: &str, by: Dimension) -> String {
    match by {
        Dimension::EntryPage | Dimension::ExitPage => {
            let pick = if by == Dimension::EntryPage {
                "argMinIf"
            } else {
                "argMaxIf"
            };
            format!(
                "SELECT {pick}(page, ts, is_pageview = 1) AS value, session, any(visitor) AS visitor, \
                 toUInt64(1) AS pv, toUInt64(1) AS n FROM events WHERE {filter} GROUP BY session \
                 HAVING value != ''"
            )
        }
        _ => {
            let col = by.column();
            let value = match by {
                Dimension::Referrer => format!("if({col} = '', '{DIRECT}', {col})"),
                _ => col.to_string(),
            };
            format!(
                "SELECT {value} AS value, session, any(visitor) AS visitor, \
                 toUInt64(sum(is_pageview)) AS pv, count() AS n FROM events \
                 WHERE {filter} AND value != '' GROUP BY value, session"
            )
        }
    }
}

/// A breakdown: the groups joined to the sessions' own shape, grouped by value; binds the
/// scope twice (groups, then sessions), then the `only` values.
fn breakdown_sql(filter: &str, by: Dimension, only: usize) -> String {
    let only = if only == 0 {
        String::new()
    } else {
        format!(" WHERE value IN ({})", vec!["?"; only].join(", "))
    };
    format!(
        "SELECT value, uniqExact(visitor) AS visitors, sum(pv) AS pageviews, sum(n) AS events, \
         count() AS sessions, countIf(s_n = 1 AND s_pv = 1) AS bounces, avg(s_dur) AS avg_ms \
         FROM ({groups}) ALL INNER JOIN \
         (SELECT session, count() AS s_n, sum(is_pageview) AS s_pv, max(ts) - min(ts) AS s_dur \
          FROM events WHERE {filter} GROUP BY session) USING session{only} \
         GROUP BY value ORDER BY {order}",
        groups = breakdown_groups_sql(filter, by),
        order = by.breakdown_order(),
    )
}

/// Local-time offset as SQL (`multiIf` over the DST segments). Numbers computed by Tally only.
pub(crate) fn ch_offset_sql(tz: &[OffsetSegment]) -> String {
    let (steps, last) = offset_steps(tz);
    if steps.is_empty() {
        return last.to_string();
    }
    let arms: String = steps
        .iter()
        .map(|(before, offset)| format!("ts < {before}, {offset}, "))
        .collect();
    format!("multiIf({arms}{last})")
}

/// Bucket start as local epoch ms. Months go through a `Date` in UTC, whose integer value is
/// days since the epoch, so no server time zone is involved.
pub(crate) fn bucket_sql(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "intDiv(local_ms, 3600000) * 3600000",
        Granularity::Day => "intDiv(local_ms, 86400000) * 86400000",
        // 1970-01-01 was a Thursday: shift three days so weeks start on Mondays.
        Granularity::Week => "intDiv(local_ms + 259200000, 604800000) * 604800000 - 259200000",
        Granularity::Month => {
            "toInt64(toUInt16(toStartOfMonth(toDate(toDateTime(intDiv(local_ms, 1000), 'UTC'))))) * 86400000"
        }
    }
}

#[async_trait]
impl AnalyticsWriter for ClickHouseAnalytics {
    async fn write(
        &self,
        consumer: &str,
        events: Vec<StoredEvent>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize> {
        let rows: Vec<EventRow> = events.into_iter().map(EventRow::from).collect();
        let mut inserted = 0;
        if !rows.is_empty() {
            let mut seen = self.stored_ids(&rows).await?;
            // One INSERT per batch: ClickHouse applies a block of this size atomically.
            let mut insert = self
                .client
                .insert::<EventRow>("events")
                .await
                .map_err(ch_err)?;
            for row in &rows {
                if seen.insert((row.event_hi, row.event_lo)) {
                    insert.write(row).await.map_err(ch_err)?;
                    inserted += 1;
                }
            }
            insert.end().await.map_err(ch_err)?;
        }
        self.write_offsets(consumer, offsets).await?;
        Ok(inserted)
    }

    async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>> {
        let rows: Vec<OffsetRead> = self
            .client
            .query(
                "SELECT topic, part, argMax(next_offset, version) AS latest \
                 FROM projection_offsets WHERE consumer = ? GROUP BY topic, part",
            )
            .bind(consumer)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.latest > 0)
            .map(|r| StoredOffset {
                topic: r.topic,
                partition: r.part,
                next_offset: r.latest,
            })
            .collect())
    }

    /// Writes a newer version of 0 for every partition (forgetting without a mutation).
    async fn reset_offsets(&self, consumer: &str) -> StoreResult<()> {
        let current = self.offsets(consumer).await?;
        let zeroed = current
            .into_iter()
            .map(|o| StoredOffset {
                next_offset: 0,
                ..o
            })
            .collect();
        self.write(consumer, Vec::new(), zeroed).await.map(|_| ())
    }

    async fn truncate(&self) -> StoreResult<()> {
        for table in ["events", "projection_offsets"] {
            self.client
                .query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute()
                .await
                .map_err(ch_err)?;
        }
        self.migrate().await
    }

    async fn recent_sessions(&self, since_ms: i64) -> StoreResult<Vec<SessionTail>> {
        let rows: Vec<SessionRow> = self
            .client
            .query(
                "SELECT website_id, visitor, session, min(ts) AS first_ms, max(ts) AS last_ms \
                 FROM events WHERE received_at >= ? GROUP BY website_id, visitor, session",
            )
            .bind(since_ms)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| SessionTail {
                website_id: r.website_id,
                visitor: r.visitor,
                session: r.session,
                first_ms: r.first_ms,
                last_ms: r.last_ms,
            })
            .collect())
    }

    /// Counts, then deletes with a mutation and waits for it to be applied.
    async fn delete_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        let n = self
            .count(
                self.client
                    .query("SELECT count() AS n FROM events WHERE ts < ?")
                    .bind(cutoff_ms),
            )
            .await?;
        if n > 0 {
            self.client
                .query("ALTER TABLE events DELETE WHERE ts < ?")
                .bind(cutoff_ms)
                .execute()
                .await
                .map_err(ch_err)?;
            self.await_mutations().await?;
        }
        Ok(n)
    }
}

#[async_trait]
impl AnalyticsReader for ClickHouseAnalytics {
    async fn totals(&self, scope: &Scope) -> StoreResult<Totals> {
        // One scan: events grouped by session (a session belongs to one visitor), then the
        // sessions aggregated. Exact distinct counts, as the embedded store gives.
        let sql = format!(
            "SELECT sum(pv) AS pageviews, uniqExact(v) AS visitors, count() AS sessions, \
             countIf(n = 1 AND pv = 1) AS bounces, if(count() = 0, 0, avg(dur)) AS avg_ms FROM \
             (SELECT any(visitor) AS v, count() AS n, sum(is_pageview) AS pv, \
              max(ts) - min(ts) AS dur FROM events WHERE {} GROUP BY session)",
            scope_sql(scope)
        );
        let r: TotalsRow = bind_scope(self.client.query(&sql), scope)
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(Totals {
            pageviews: r.pageviews,
            visitors: r.visitors,
            sessions: r.sessions,
            bounces: r.bounces,
            avg_duration_seconds: if r.avg_ms.is_finite() {
                r.avg_ms / 1000.0
            } else {
                0.0
            },
        })
    }

    async fn series(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<SeriesPoint>> {
        let sql = format!(
            "SELECT toInt64({bucket}) AS bucket, sum(is_pageview) AS pageviews, \
             uniqExact(visitor) AS visitors, count() AS events FROM \
             (SELECT visitor, is_pageview, ts + ({offset}) AS local_ms FROM events WHERE {filter}) \
             GROUP BY bucket ORDER BY bucket",
            bucket = bucket_sql(granularity),
            offset = ch_offset_sql(tz),
            filter = scope_sql(scope),
        );
        let rows: Vec<SeriesRow> = bind_scope(self.client.query(&sql), scope)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| SeriesPoint {
                local_start_ms: r.bucket,
                pageviews: r.pageviews,
                visitors: r.visitors,
                events: r.events,
            })
            .collect())
    }

    async fn breakdown(
        &self,
        scope: &Scope,
        by: Dimension,
        limit: u32,
        offset: u32,
    ) -> StoreResult<(Vec<MetricRow>, u64)> {
        let filter = scope_sql(scope);
        let sql = format!("{} LIMIT {offset}, {limit}", breakdown_sql(&filter, by, 0));
        let query = bind_scope(bind_scope(self.client.query(&sql), scope), scope);
        let rows: Vec<BreakdownRow> = query.fetch_all().await.map_err(ch_err)?;
        let total_sql = format!(
            "SELECT uniqExact(value) AS n FROM ({})",
            breakdown_groups_sql(&filter, by)
        );
        let total = self
            .count(bind_scope(self.client.query(&total_sql), scope))
            .await?;
        Ok((rows.into_iter().map(MetricRow::from).collect(), total))
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
        let sql = breakdown_sql(&scope_sql(scope), by, values.len());
        let mut query = bind_scope(bind_scope(self.client.query(&sql), scope), scope);
        for v in values {
            query = query.bind(v.as_str());
        }
        let rows: Vec<BreakdownRow> = query.fetch_all().await.map_err(ch_err)?;
        Ok(rows.into_iter().map(MetricRow::from).collect())
    }

    async fn live_counts(&self, website_id: &str, since_ms: i64) -> StoreResult<LiveCounts> {
        let row: LiveRow = self
            .client
            .query(
                "SELECT uniqExact(visitor) AS visitors, count() AS events FROM events \
                 WHERE website_id = ? AND ts >= ? AND is_bot = 0",
            )
            .bind(website_id)
            .bind(since_ms)
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(LiveCounts {
            visitors: row.visitors,
            events: row.events,
        })
    }

    async fn recent_events(
        &self,
        website_id: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>> {
        let rows: Vec<RecentRow> = self
            .client
            .query(&format!(
                "SELECT ts, event_type, page, event_name, referrer_domain, country, browser, device \
                 FROM events WHERE website_id = ? AND ts >= ? AND is_bot = 0 \
                 ORDER BY ts DESC LIMIT {limit}"
            ))
            .bind(website_id)
            .bind(since_ms)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| RecentEvent {
                timestamp_ms: r.ts,
                event_type: r.event_type,
                page: r.page,
                event_name: opt(r.event_name),
                referrer_domain: opt(r.referrer_domain),
                country: opt(r.country),
                browser: opt(r.browser),
                device: opt(r.device),
            })
            .collect())
    }

    async fn sessions(
        &self,
        scope: &Scope,
        after: Option<SessionKey>,
        limit: u32,
    ) -> StoreResult<Vec<SessionSummary>> {
        self.session_list(scope, after, limit).await
    }

    async fn event_data(&self, scope: &Scope, limit: u32) -> StoreResult<Vec<Option<String>>> {
        let sql = format!(
            "SELECT event_data FROM events WHERE {} \
             ORDER BY ts DESC, event_hi DESC, event_lo DESC LIMIT {limit}",
            scope_sql(scope)
        );
        let rows: Vec<DataRow> = bind_scope(self.client.query(&sql), scope)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows.into_iter().map(|r| opt(r.event_data)).collect())
    }

    async fn goal_counts(&self, scope: &Scope, target: &StepMatch) -> StoreResult<GoalCounts> {
        self.goal(scope, target).await
    }

    async fn funnel(&self, scope: &Scope, steps: &[StepMatch]) -> StoreResult<Vec<u64>> {
        self.funnel_steps(scope, steps).await
    }

    async fn journeys(
        &self,
        scope: &Scope,
        anchor: &StepMatch,
        after: bool,
        depth: u32,
    ) -> StoreResult<Vec<Vec<String>>> {
        self.journey_paths(scope, anchor, after, depth).await
    }

    async fn cohorts(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<CohortCell>> {
        self.cohort_cells(scope, granularity, tz).await
    }

    async fn export_page(
        &self,
        scope: &Scope,
        after: Option<(i64, u128)>,
        limit: u32,
    ) -> StoreResult<Vec<ExportRow>> {
        self.export_rows(scope, after, limit).await
    }

    async fn touches(&self, scope: &Scope, target: &StepMatch) -> StoreResult<Vec<Touch>> {
        self.touch_rows(scope, target).await
    }

    async fn session(
        &self,
        website_id: &str,
        session: u64,
        limit: u32,
    ) -> StoreResult<Option<(SessionSummary, Vec<SessionEvent>)>> {
        self.one_session(website_id, session, limit).await
    }

    async fn event_count(&self, website_id: &str) -> StoreResult<u64> {
        self.count(
            self.client
                .query("SELECT count() AS n FROM events WHERE website_id = ?")
                .bind(website_id),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_sql_is_a_multi_if_over_dst_segments() {
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
        assert_eq!(ch_offset_sql(&two), "multiIf(ts < 1000, 3600000, 7200000)");
        assert_eq!(ch_offset_sql(&[]), "0");
    }

    #[test]
    fn event_id_splits_into_two_words_and_back() {
        let id: u128 = (7u128 << 64) | 9;
        let row = EventRow::from(StoredEvent {
            event_id: id,
            ..Default::default()
        });
        assert_eq!((row.event_hi, row.event_lo), (7, 9));
    }
}
