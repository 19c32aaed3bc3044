//! The session list and one session's events on DuckDB: the newest sessions found from the
//! range's tail first ([`session_tails`]), then summarised over their whole range.

use crate::analytics::*;
use crate::duck::{db_err, scope_sql};
use crate::StoreResult;
use duckdb::types::Value;
use duckdb::{params_from_iter, Connection};

/// The session columns every summary reads, grouped by session.
const SUMMARY: &str = "session, any_value(visitor), min(ts), max(ts), \
     count(*) FILTER (WHERE event_type = 'pageview'), count(*), \
     arg_min(page, ts) FILTER (WHERE event_type = 'pageview'), \
     arg_max(page, ts) FILTER (WHERE event_type = 'pageview'), \
     any_value(country), any_value(browser), any_value(os), any_value(device)";

fn summary(r: &duckdb::Row<'_>) -> duckdb::Result<SessionSummary> {
    let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
    Ok(SessionSummary {
        session: r.get(0)?,
        visitor: r.get(1)?,
        first_ms: r.get(2)?,
        last_ms: r.get(3)?,
        pageviews: n(4)?,
        events: n(5)?,
        entry_page: r.get(6)?,
        exit_page: r.get(7)?,
        country: r.get(8)?,
        browser: r.get(9)?,
        os: r.get(10)?,
        device: r.get(11)?,
    })
}

/// The events of `[lo, to)` the session list looks at: the website's, bots as the scope says.
fn range_sql(scope: &Scope, lo: i64) -> (String, Vec<Value>) {
    let mut sql = String::from("website_id = ? AND ts >= ? AND ts < ?");
    if !scope.include_bots {
        sql.push_str(" AND NOT is_bot");
    }
    let params = vec![
        Value::Text(scope.website_id.clone()),
        Value::BigInt(lo),
        Value::BigInt(scope.to_ms),
    ];
    (sql, params)
}

/// Sessions whose last event lies in `[lo, to)`, after `after`, newest first, at most `limit`:
/// (session, last event time).
fn newest(
    conn: &Connection,
    scope: &Scope,
    lo: i64,
    after: Option<SessionKey>,
    limit: u32,
) -> StoreResult<Vec<u64>> {
    let (mut sql, mut params) = range_sql(scope, lo);
    if !scope.filters.is_empty() {
        let (filtered, fp) = scope_sql(scope);
        sql.push_str(&format!(
            " AND session IN (SELECT session FROM events WHERE {filtered})"
        ));
        params.extend(fp);
    }
    let mut q = format!("SELECT session FROM events WHERE {sql} GROUP BY session");
    if let Some(k) = after {
        q.push_str(" HAVING max(ts) < ? OR (max(ts) = ? AND session < ?)");
        params.extend([
            Value::BigInt(k.last_ms),
            Value::BigInt(k.last_ms),
            Value::UBigInt(k.session),
        ]);
    }
    q.push_str(&format!(
        " ORDER BY max(ts) DESC, session DESC LIMIT {limit}"
    ));
    let mut stmt = conn.prepare(&q).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| r.get::<_, u64>(0))
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

/// Summaries of `sessions` over `[from, to)` of the website (bots as `include_bots`).
fn summaries(
    conn: &Connection,
    scope: &Scope,
    sessions: &[u64],
) -> StoreResult<Vec<SessionSummary>> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, mut params) = range_sql(scope, scope.from_ms);
    params.extend(sessions.iter().map(|s| Value::UBigInt(*s)));
    let q = format!(
        "SELECT {SUMMARY} FROM events WHERE {sql} AND session IN ({}) GROUP BY session",
        vec!["?"; sessions.len()].join(", ")
    );
    let mut stmt = conn.prepare(&q).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), summary)
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

/// `AnalyticsReader::sessions` on one connection.
pub(crate) fn sessions(
    conn: &Connection,
    scope: &Scope,
    after: Option<SessionKey>,
    limit: u32,
) -> StoreResult<Vec<SessionSummary>> {
    let until = session_tails_until(scope, after, chrono::Utc::now().timestamp_millis());
    for lo in session_tails(scope.from_ms, until) {
        let found = newest(conn, scope, lo, after, limit)?;
        if found.len() as u64 >= u64::from(limit) || lo <= scope.from_ms {
            // Summarised from just before the tail, then over the range where that may cut.
            let start = summary_start(scope, lo);
            let near = Scope {
                from_ms: start,
                ..scope.clone()
            };
            let rows = summaries(conn, &near, &found)?;
            let cut = maybe_cut(&rows, start, scope);
            let whole = summaries(conn, scope, &cut)?;
            return Ok(order_sessions(with_whole(rows, whole), after));
        }
    }
    Ok(Vec::new())
}

/// `AnalyticsReader::session` on one connection.
pub(crate) fn session(
    conn: &Connection,
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
    let Some(s) = summaries(conn, &all_time, &[session])?.into_iter().next() else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT event_id, ts, event_type, page, event_name, event_data FROM events \
             WHERE website_id = ? AND session = ? ORDER BY ts, event_id LIMIT {limit}"
        ))
        .map_err(db_err)?;
    let rows = stmt
        .query_map(
            params_from_iter([Value::Text(website_id.to_string()), Value::UBigInt(session)]),
            |r| {
                Ok(SessionEvent {
                    event_id: r.get::<_, i128>(0)? as u128,
                    ts_ms: r.get(1)?,
                    event_type: r.get(2)?,
                    page: r.get(3)?,
                    event_name: r.get(4)?,
                    event_data: r.get(5)?,
                })
            },
        )
        .map_err(db_err)?;
    let events = rows
        .map(|r| r.map_err(db_err))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some((s, events)))
}

/// `AnalyticsReader::export_page` on one connection.
pub(crate) fn export_page(
    conn: &Connection,
    scope: &Scope,
    after: Option<(i64, u128)>,
    limit: u32,
) -> StoreResult<Vec<ExportRow>> {
    let (mut filter, mut params) = scope_sql(scope);
    if let Some((ts, id)) = after {
        filter.push_str(" AND (ts > ? OR (ts = ? AND event_id > ?))");
        params.extend([
            Value::BigInt(ts),
            Value::BigInt(ts),
            Value::HugeInt(id as i128),
        ]);
    }
    let sql = format!(
        "SELECT event_id, ts, event_type, page, referrer_domain, event_name, country, browser, os, \
         device, language, utm_source, utm_medium, utm_campaign FROM events WHERE {filter} \
         ORDER BY ts, event_id LIMIT {limit}"
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            Ok(ExportRow {
                event_id: r.get::<_, i128>(0)? as u128,
                ts_ms: r.get(1)?,
                event_type: r.get(2)?,
                page: r.get(3)?,
                referrer_domain: r.get(4)?,
                event_name: r.get(5)?,
                country: r.get(6)?,
                browser: r.get(7)?,
                os: r.get(8)?,
                device: r.get(9)?,
                language: r.get(10)?,
                utm_source: r.get(11)?,
                utm_medium: r.get(12)?,
                utm_campaign: r.get(13)?,
            })
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}
