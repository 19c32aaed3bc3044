//! Dashboard handlers: resolve website, period and scope, ask the analytics reader, shape JSON.

use crate::params::{self, Params};
use crate::period::{offset_segments, Period};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{NaiveDateTime, TimeZone, Utc};
use projections::{Granularity, Totals, Website};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{data, ApiError, ApiResult, Caller};

fn query(q: Result<Query<Params>, QueryRejection>) -> ApiResult<Params> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// A website of the caller's company (any for the operator); another's is "not found".
async fn website(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<Website> {
    caller.require(Action::ReadDashboards)?;
    s.metadata
        .website(id)
        .await?
        .filter(|w| web::owns_website(caller, w))
        .ok_or_else(|| ApiError::not_found(format!("no website with id {id:?}")))
}

/// What every period query starts from: the parameters, the website, its period and scope.
async fn resolve(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<(Params, Period, projections::Scope)> {
    let p = query(q)?;
    let site = website(s, caller, id).await?;
    let period = params::period(&p, &site)?;
    let scope = params::scope(&p, &site, &period)?;
    Ok((p, period, scope))
}

fn bounce_rate(t: &Totals) -> f64 {
    if t.sessions == 0 {
        return 0.0;
    }
    (t.bounces as f64 / t.sessions as f64 * 10_000.0).round() / 10_000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A website route of the Sparklytics contract that is not built yet: `501` for the caller's
/// own website (another company's is "not found", as on every built route).
pub async fn not_built(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, rest)): Path<(String, String)>,
) -> ApiResult<Response> {
    website(&s, &caller, &id).await?;
    Err(ApiError::not_implemented(format!(
        "/api/websites/{{id}}/{rest} is not built yet in this version of Tally"
    )))
}

/// The realtime view's window: the last 30 minutes.
const REALTIME_WINDOW_MS: i64 = 30 * 60_000;
/// The realtime view's most recent events, at most.
const REALTIME_EVENTS: u32 = 100;

/// `GET /api/websites/{id}/stats`
pub async fn stats(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_, period, scope) = resolve(&s, &caller, &id, q).await?;
    let mut prev_scope = scope.clone();
    (prev_scope.from_ms, prev_scope.to_ms) = period.previous().utc_bounds();
    let (cur, prev) =
        tokio::try_join!(s.analytics.totals(&scope), s.analytics.totals(&prev_scope))?;
    Ok(data(json!({
        "pageviews": cur.pageviews,
        "visitors": cur.visitors,
        "sessions": cur.sessions,
        "bounce_rate": bounce_rate(&cur),
        "avg_duration_seconds": round2(cur.avg_duration_seconds),
        "prev_pageviews": prev.pageviews,
        "prev_visitors": prev.visitors,
        "prev_sessions": prev.sessions,
        "prev_bounce_rate": bounce_rate(&prev),
        "prev_avg_duration_seconds": round2(prev.avg_duration_seconds),
        "timezone": period.tz.name(),
        "start_date": period.start.to_string(),
        "end_date": period.end.to_string(),
    }))
    .into_response())
}

fn label(period: &Period, g: Granularity, local: NaiveDateTime) -> String {
    match g {
        Granularity::Day => local.format("%Y-%m-%d").to_string(),
        Granularity::Month => local.format("%Y-%m").to_string(),
        Granularity::Hour => period
            .tz
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| local.format("%Y-%m-%dT%H:%M:%S").to_string()),
    }
}

/// `GET /api/websites/{id}/pageviews`: pageviews and visitors per local hour, day or month.
pub async fn pageviews(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let g = params::granularity(&p, &period)?;
    let segments = offset_segments(period.tz, scope.from_ms, scope.to_ms);
    let points = s.analytics.series(&scope, g, &segments).await?;
    let by_start: HashMap<i64, (u64, u64)> = points
        .iter()
        .map(|pt| (pt.local_start_ms, (pt.pageviews, pt.visitors)))
        .collect();
    let rows: Vec<_> = period
        .buckets(g)
        .into_iter()
        .map(|local| {
            let (pv, v) = by_start
                .get(&local.and_utc().timestamp_millis())
                .copied()
                .unwrap_or((0, 0));
            json!({ "date": label(&period, g, local), "pageviews": pv, "visitors": v })
        })
        .collect();
    let granularity = match g {
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Month => "month",
    };
    Ok(axum::Json(json!({ "data": rows, "meta": { "granularity": granularity, "timezone": period.tz.name() } }))
        .into_response())
}

/// `GET /api/websites/{id}/metrics?type=…`: a paginated breakdown.
pub async fn metrics(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, _, scope) = resolve(&s, &caller, &id, q).await?;
    let by = params::dimension(&p)?;
    let (limit, offset) = params::limit_offset(&p)?;
    let (rows, total) = s.analytics.breakdown(&scope, by, limit, offset).await?;
    let n = rows.len();
    Ok(web::page(rows, total, limit as u64, offset as u64, n).into_response())
}

/// `GET /api/websites/{id}/realtime`: visitors and events of the last 30 minutes, the latest 100.
pub async fn realtime(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let site = website(&s, &caller, &id).await?;
    let since = Utc::now().timestamp_millis() - REALTIME_WINDOW_MS;
    let (live, recent) = tokio::try_join!(
        s.analytics.live_counts(&site.id, since),
        s.analytics.recent_events(&site.id, since, REALTIME_EVENTS),
    )?;
    let recent: Vec<_> = recent
        .iter()
        .map(|e| {
            json!({
                "event_type": e.event_type,
                "url": e.page,
                "referrer_domain": e.referrer_domain,
                "country": e.country,
                "browser": e.browser,
                "device_type": e.device,
                "ts": Utc.timestamp_millis_opt(e.timestamp_ms).single().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "event_name": e.event_name,
            })
        })
        .collect();
    Ok(data(json!({
        "active_visitors": live.visitors,
        "recent_events": recent,
        "pagination": { "limit": REALTIME_EVENTS, "total_in_window": live.events },
    }))
    .into_response())
}
