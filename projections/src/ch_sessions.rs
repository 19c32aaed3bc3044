//! The session list and one session's events on ClickHouse, found as on DuckDB: the newest
//! sessions from the range's tail first ([`session_tails`]), then summarised over their range.

use crate::analytics::*;
use crate::ch::{bind_scope, ch_err, opt, scope_sql, ClickHouseAnalytics};
use crate::StoreResult;
use clickhouse::Row;
use serde::Deserialize;

#[derive(Row, Deserialize)]
struct KeyRow {
    session: u64,
}

#[derive(Row, Deserialize)]
struct SummaryRow {
    session: u64,
    visitor: u64,
    first_ts: i64,
    last_ts: i64,
    pageviews: u64,
    events: u64,
    entry_page: String,
    exit_page: String,
    country: String,
    browser: String,
    os: String,
    device: String,
}

impl From<SummaryRow> for SessionSummary {
    fn from(r: SummaryRow) -> Self {
        SessionSummary {
            session: r.session,
            visitor: r.visitor,
            first_ms: r.first_ts,
            last_ms: r.last_ts,
            pageviews: r.pageviews,
            events: r.events,
            entry_page: opt(r.entry_page),
            exit_page: opt(r.exit_page),
            country: opt(r.country),
            browser: opt(r.browser),
            os: opt(r.os),
            device: opt(r.device),
        }
    }
}

#[derive(Row, Deserialize)]
struct EventRow {
    event_hi: u64,
    event_lo: u64,
    ts: i64,
    event_type: String,
    page: String,
    event_name: String,
    event_data: String,
}

const SUMMARY: &str = "session, any(visitor) AS visitor, min(ts) AS first_ts, max(ts) AS last_ts, \
     toUInt64(sum(is_pageview)) AS pageviews, count() AS events, \
     argMinIf(page, ts, is_pageview = 1) AS entry_page, argMaxIf(page, ts, is_pageview = 1) AS exit_page, \
     any(country) AS country, any(browser) AS browser, any(os) AS os, any(device) AS device";

/// The events of `[lo, to)` the session list looks at (website, bots as the scope says);
/// binds website, `lo`, `to`.
fn range_sql(scope: &Scope) -> &'static str {
    if scope.include_bots {
        "website_id = ? AND ts >= ? AND ts < ?"
    } else {
        "website_id = ? AND ts >= ? AND ts < ? AND is_bot = 0"
    }
}

impl ClickHouseAnalytics {
    /// Sessions whose last event lies in `[lo, to)`, after `after`, newest first.
    async fn newest(
        &self,
        scope: &Scope,
        lo: i64,
        after: Option<SessionKey>,
        limit: u32,
    ) -> StoreResult<Vec<u64>> {
        let mut sql = format!("SELECT session FROM events WHERE {}", range_sql(scope));
        if !scope.filters.is_empty() {
            sql.push_str(&format!(
                " AND session IN (SELECT session FROM events WHERE {})",
                scope_sql(scope)
            ));
        }
        sql.push_str(" GROUP BY session");
        if after.is_some() {
            sql.push_str(" HAVING max(ts) < ? OR (max(ts) = ? AND session < ?)");
        }
        sql.push_str(&format!(
            " ORDER BY max(ts) DESC, session DESC LIMIT {limit}"
        ));
        let mut q = self
            .client
            .query(&sql)
            .bind(scope.website_id.as_str())
            .bind(lo)
            .bind(scope.to_ms);
        if !scope.filters.is_empty() {
            q = bind_scope(q, scope);
        }
        if let Some(k) = after {
            q = q.bind(k.last_ms).bind(k.last_ms).bind(k.session);
        }
        let rows: Vec<KeyRow> = q.fetch_all().await.map_err(ch_err)?;
        Ok(rows.into_iter().map(|r| r.session).collect())
    }

    async fn summaries(&self, scope: &Scope, sessions: &[u64]) -> StoreResult<Vec<SessionSummary>> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SUMMARY} FROM events WHERE {} AND session IN ({}) GROUP BY session",
            range_sql(scope),
            vec!["?"; sessions.len()].join(", ")
        );
        let mut q = self
            .client
            .query(&sql)
            .bind(scope.website_id.as_str())
            .bind(scope.from_ms)
            .bind(scope.to_ms);
        for s in sessions {
            q = q.bind(*s);
        }
        let rows: Vec<SummaryRow> = q.fetch_all().await.map_err(ch_err)?;
        Ok(rows.into_iter().map(SessionSummary::from).collect())
    }

    /// `AnalyticsReader::sessions`.
    pub(crate) async fn session_list(
        &self,
        scope: &Scope,
        after: Option<SessionKey>,
        limit: u32,
    ) -> StoreResult<Vec<SessionSummary>> {
        let until = session_tails_until(scope, after, chrono::Utc::now().timestamp_millis());
        for lo in session_tails(scope.from_ms, until) {
            let found = self.newest(scope, lo, after, limit).await?;
            if found.len() as u64 >= u64::from(limit) || lo <= scope.from_ms {
                // Summarised from just before the tail, then over the range where that may cut.
                let start = summary_start(scope, lo);
                let near = Scope {
                    from_ms: start,
                    ..scope.clone()
                };
                let rows = self.summaries(&near, &found).await?;
                let cut = maybe_cut(&rows, start, scope);
                let whole = self.summaries(scope, &cut).await?;
                return Ok(order_sessions(with_whole(rows, whole), after));
            }
        }
        Ok(Vec::new())
    }

    /// `AnalyticsReader::session`.
    pub(crate) async fn one_session(
        &self,
        website_id: &str,
        session: u64,
        limit: u32,
    ) -> StoreResult<Option<(SessionSummary, Vec<SessionEvent>)>> {
        let all_time = Scope {
            website_id: website_id.to_string(),
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            include_bots: true,
            filters: Vec::new(),
        };
        let Some(s) = self
            .summaries(&all_time, &[session])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let rows: Vec<EventRow> = self
            .client
            .query(&format!(
                "SELECT event_hi, event_lo, ts, event_type, page, event_name, event_data \
                 FROM events WHERE website_id = ? AND session = ? \
                 ORDER BY ts, event_hi, event_lo LIMIT {limit}"
            ))
            .bind(website_id)
            .bind(session)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        let events = rows
            .into_iter()
            .map(|r| SessionEvent {
                event_id: (u128::from(r.event_hi) << 64) | u128::from(r.event_lo),
                ts_ms: r.ts,
                event_type: r.event_type,
                page: r.page,
                event_name: opt(r.event_name),
                event_data: opt(r.event_data),
            })
            .collect();
        Ok(Some((s, events)))
    }
}

#[derive(Row, Deserialize)]
struct ExportCh {
    event_hi: u64,
    event_lo: u64,
    ts: i64,
    event_type: String,
    page: String,
    referrer_domain: String,
    event_name: String,
    country: String,
    browser: String,
    os: String,
    device: String,
    language: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
}

impl ClickHouseAnalytics {
    /// `AnalyticsReader::export_page`.
    pub(crate) async fn export_rows(
        &self,
        scope: &Scope,
        after: Option<(i64, u128)>,
        limit: u32,
    ) -> StoreResult<Vec<ExportRow>> {
        let mut filter = scope_sql(scope);
        if after.is_some() {
            filter.push_str(
                " AND (ts > ? OR (ts = ? AND (event_hi > ? OR (event_hi = ? AND event_lo > ?))))",
            );
        }
        let sql = format!(
            "SELECT event_hi, event_lo, ts, event_type, page, referrer_domain, event_name, country, \
             browser, os, device, language, utm_source, utm_medium, utm_campaign FROM events \
             WHERE {filter} ORDER BY ts, event_hi, event_lo LIMIT {limit}"
        );
        let mut q = bind_scope(self.client.query(&sql), scope);
        if let Some((ts, id)) = after {
            let (hi, lo) = ((id >> 64) as u64, id as u64);
            q = q.bind(ts).bind(ts).bind(hi).bind(hi).bind(lo);
        }
        let rows: Vec<ExportCh> = q.fetch_all().await.map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| ExportRow {
                event_id: (u128::from(r.event_hi) << 64) | u128::from(r.event_lo),
                ts_ms: r.ts,
                event_type: r.event_type,
                page: r.page,
                referrer_domain: opt(r.referrer_domain),
                event_name: opt(r.event_name),
                country: opt(r.country),
                browser: opt(r.browser),
                os: opt(r.os),
                device: opt(r.device),
                language: opt(r.language),
                utm_source: opt(r.utm_source),
                utm_medium: opt(r.utm_medium),
                utm_campaign: opt(r.utm_campaign),
            })
            .collect())
    }
}
