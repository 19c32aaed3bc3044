//! Dashboard handlers: resolve website, period and scope, ask the analytics reader, shape JSON.

use crate::compare::{self, Comparison};
use crate::params::{self, Params};
use crate::period::{local_to_utc_ms, offset_segments, Period};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{NaiveDateTime, TimeZone, Utc};
use projections::{Dimension, Granularity, MetricRow, Totals, Website};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{data, ApiError, ApiResult, Caller};

fn query(q: Result<Query<Params>, QueryRejection>) -> ApiResult<Params> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// A website of the caller's company (any for the operator); another's is "not found".
pub(crate) async fn website(s: &ApiState, caller: &Caller, id: &str) -> ApiResult<Website> {
    caller.require(Action::ReadDashboards)?;
    s.metadata
        .website(id)
        .await?
        .filter(|w| web::owns_website(caller, w))
        .ok_or_else(|| ApiError::not_found(format!("no website with id {id:?}")))
}

/// What every period query starts from: the parameters, the website, its period and scope.
pub(crate) async fn resolve(
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

/// The period the `prev_*` numbers cover: the comparison asked for, else the previous period.
pub(crate) fn prev_period(period: &Period, cmp: Option<&Comparison>) -> Period {
    cmp.map(|c| c.period).unwrap_or_else(|| period.previous())
}

pub(crate) fn scope_over(scope: &projections::Scope, period: &Period) -> projections::Scope {
    let mut s = scope.clone();
    (s.from_ms, s.to_ms) = period.utc_bounds();
    s
}

/// Adds the top-level `compare` block when a comparison was asked for.
pub(crate) fn with_compare(body: Value, period: &Period, cmp: Option<&Comparison>) -> Response {
    axum::Json(compared(body, period, cmp)).into_response()
}

/// `body` with the top-level `compare` block when a comparison was asked for.
pub(crate) fn compared(mut body: Value, period: &Period, cmp: Option<&Comparison>) -> Value {
    if let (Some(c), Some(obj)) = (cmp, body.as_object_mut()) {
        obj.insert("compare".into(), c.metadata(period));
    }
    body
}

/// `GET /api/websites/{id}/stats`
pub async fn stats(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    Ok(axum::Json(stats_of(&s, &p, &period, &scope).await?).into_response())
}

/// The `stats` answer for a resolved website, period and scope (also behind a share).
pub(crate) async fn stats_of(
    s: &ApiState,
    p: &Params,
    period: &Period,
    scope: &projections::Scope,
) -> ApiResult<Value> {
    let (p, period, scope) = (p, *period, scope.clone());
    let cmp = compare::comparison(p, &period)?;
    let prev_scope = scope_over(&scope, &prev_period(&period, cmp.as_ref()));
    let (cur, prev) =
        tokio::try_join!(s.analytics.totals(&scope), s.analytics.totals(&prev_scope))?;
    let body = json!({ "data": {
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
    }});
    Ok(compared(body, &period, cmp.as_ref()))
}

/// A bucket's label: days `YYYY-MM-DD`, months `YYYY-MM`, hours the UTC instant the local
/// hour starts at, `YYYY-MM-DDTHH:MM:SSZ` (whole-hour zones give `…:00:00Z`).
fn label(period: &Period, g: Granularity, local: NaiveDateTime) -> String {
    match g {
        Granularity::Day | Granularity::Week => local.format("%Y-%m-%d").to_string(),
        Granularity::Month => local.format("%Y-%m").to_string(),
        Granularity::Hour => Utc
            .timestamp_millis_opt(local_to_utc_ms(period.tz, local))
            .single()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| local.format("%Y-%m-%dT%H:00:00Z").to_string()),
    }
}

/// One bucket's counts: page views, visitors, events (page views included).
pub(crate) type BucketCounts = (u64, u64, u64);

/// One period's buckets as (label, counts), zeros where nothing happened.
pub(crate) async fn series_of(
    s: &ApiState,
    scope: &projections::Scope,
    period: &Period,
    g: Granularity,
) -> ApiResult<Vec<(String, BucketCounts)>> {
    let segments = offset_segments(period.tz, scope.from_ms, scope.to_ms);
    let points = s.analytics.series(scope, g, &segments).await?;
    let by_start: HashMap<i64, BucketCounts> = points
        .iter()
        .map(|pt| (pt.local_start_ms, (pt.pageviews, pt.visitors, pt.events)))
        .collect();
    Ok(period
        .buckets(g)
        .into_iter()
        .map(|local| {
            let counts = by_start
                .get(&local.and_utc().timestamp_millis())
                .copied()
                .unwrap_or((0, 0, 0));
            (label(period, g, local), counts)
        })
        .collect())
}

/// The name a granularity has in answers.
pub(crate) fn granularity_name(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Week => "week",
        Granularity::Month => "month",
    }
}

/// `GET /api/websites/{id}/pageviews`: pageviews and visitors per local hour, day or month;
/// with a comparison, `compare_series` lines up with `series` bucket by bucket (each point
/// also names its own bucket as `compare_date`).
pub async fn pageviews(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    Ok(axum::Json(pageviews_of(&s, &p, &period, &scope).await?).into_response())
}

/// The `pageviews` answer for a resolved website, period and scope (also behind a share).
pub(crate) async fn pageviews_of(
    s: &ApiState,
    p: &Params,
    period: &Period,
    scope: &projections::Scope,
) -> ApiResult<Value> {
    let (p, period, scope) = (p, *period, scope.clone());
    let g = params::granularity(p, &period)?;
    let cmp = compare::comparison(p, &period)?;
    let series = series_of(s, &scope, &period, g).await?;
    let compare_series = match &cmp {
        None => Value::Null,
        Some(c) => {
            let prev = series_of(s, &scope_over(&scope, &c.period), &c.period, g).await?;
            let points: Vec<Value> = series
                .iter()
                .enumerate()
                .map(|(i, (date, _))| {
                    let (own, pv, v) = prev
                        .get(i)
                        .map(|(l, (pv, v, _))| (Some(l.as_str()), *pv, *v))
                        .unwrap_or((None, 0, 0));
                    json!({ "date": date, "compare_date": own, "pageviews": pv, "visitors": v })
                })
                .collect();
            Value::Array(points)
        }
    };
    let series: Vec<Value> = series
        .into_iter()
        .map(|(date, (pv, v, _))| json!({ "date": date, "pageviews": pv, "visitors": v }))
        .collect();
    let body = json!({ "data": {
        "series": series,
        "granularity": granularity_name(g),
        "compare_series": compare_series,
        "timezone": period.tz.name(),
    }});
    Ok(compared(body, &period, cmp.as_ref()))
}

/// Percent with one decimal, 0 when there is nothing to divide by.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 1000.0).round() / 10.0
}

/// A breakdown row as the contract shapes it. Event names count their occurrences as
/// `pageviews`, as the peer does.
fn metric_json(by: Dimension, r: &MetricRow) -> Value {
    let pageviews = if by == Dimension::EventName {
        r.events
    } else {
        r.pageviews
    };
    json!({
        "value": r.value,
        "visitors": r.visitors,
        "pageviews": pageviews,
        "events": r.events,
        "sessions": r.sessions,
        "bounce_rate": percent(r.bounces, r.sessions),
        "avg_duration_seconds": round2(r.avg_duration_seconds),
    })
}

/// Adds the comparison period's numbers to a row: `prev_visitors`, `prev_pageviews`, the
/// visitor change and its ratio to the previous count (`null` when that was zero).
fn add_deltas(by: Dimension, row: &mut Value, cur: &MetricRow, prev: Option<&MetricRow>) {
    let prev_pv = prev.map_or(0, |p| {
        if by == Dimension::EventName {
            p.events
        } else {
            p.pageviews
        }
    });
    let prev_v = prev.map_or(0, |p| p.visitors);
    let delta = cur.visitors as i64 - prev_v as i64;
    let pct = (prev_v > 0).then(|| (delta as f64 / prev_v as f64 * 10_000.0).round() / 10_000.0);
    if let Some(obj) = row.as_object_mut() {
        obj.insert("prev_visitors".into(), prev_v.into());
        obj.insert("prev_pageviews".into(), prev_pv.into());
        obj.insert("delta_visitors_abs".into(), delta.into());
        obj.insert("delta_visitors_pct".into(), json!(pct));
    }
}

/// `GET /api/websites/{id}/metrics?type=…`: a paginated breakdown, with the comparison
/// period's numbers per row when asked.
pub async fn metrics(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    Ok(axum::Json(metrics_of(&s, &p, &period, &scope).await?).into_response())
}

/// The `metrics` answer for a resolved website, period and scope (also behind a share).
pub(crate) async fn metrics_of(
    s: &ApiState,
    p: &Params,
    period: &Period,
    scope: &projections::Scope,
) -> ApiResult<Value> {
    let (p, period, scope) = (p, *period, scope.clone());
    let by = params::dimension(p)?;
    let (limit, offset) = params::limit_offset(p)?;
    let cmp = compare::comparison(p, &period)?;
    let (rows, total) = s.analytics.breakdown(&scope, by, limit, offset).await?;
    let prev: HashMap<String, MetricRow> = match &cmp {
        None => HashMap::new(),
        Some(c) => {
            let values: Vec<String> = rows.iter().map(|r| r.value.clone()).collect();
            s.analytics
                .breakdown_of(&scope_over(&scope, &c.period), by, &values)
                .await?
                .into_iter()
                .map(|r| (r.value.clone(), r))
                .collect()
        }
    };
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row = metric_json(by, r);
            if cmp.is_some() {
                add_deltas(by, &mut row, r, prev.get(&r.value));
            }
            row
        })
        .collect();
    Ok(json!({
        "data": { "type": by.name(), "rows": json_rows },
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": (offset as u64 + rows.len() as u64) < total,
        },
        "compare": cmp.map(|c| c.metadata(&period)),
    }))
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
