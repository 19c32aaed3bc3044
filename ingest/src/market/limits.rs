//! The plan's limits on executions (seed `004`): per key (or signed-in user) per minute and per
//! day, calls in flight at once, and the company's monthly allocation. The rules are
//! `projections::limits` (pure) and the counts live in its `LimitStore` (in memory on the
//! embedded backends, in Postgres across every process otherwise). Every answer of
//! `/analyze` carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch seconds) of the
//! tightest window; a `429` says which limit refused (`rate_limited`, or `quota_exceeded` for
//! the monthly allocation) with `Retry-After`.
//!
//! Seed `000`'s hourly limits are here too, as a layer over ingest's routes
//! ([`route_limit`]): the authentication routes per caller (or, signed out, per IP) and the
//! marketplace routes per caller, with the same headers on every answer.

use super::plans::{current_period, effective};
use super::*;
use crate::commands::now_ms;
use crate::IngestConfig;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use projections::limits::{
    fixed, refusing, retry_after_secs, tightest, Admission, Counter, LimitStore, Slot, Standing,
    DAY_MS, HOUR_MS, MINUTE_MS,
};
use projections::reference::Plan;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::Caller;

/// How long a company's plan is remembered between reads of the metadata store.
const PLAN_TTL: Duration = Duration::from_secs(1);

/// A call let through: its standing for the headers and the concurrency slot it holds.
pub(crate) struct Admitted {
    store: Arc<dyn LimitStore>,
    standing: Option<Standing>,
    lease: Option<String>,
}

/// Who a per-key limit counts: the key, or the user of a dashboard session.
fn subject(caller: &Caller) -> String {
    if caller.api_key_id > 0 {
        format!("key:{}", caller.api_key_id)
    } else {
        format!("user:{}", caller.user_id)
    }
}

/// The counters of one call under `plan` (period from `period_start_ms`), counting against
/// the monthly allocation of `allocation`'s company (none for a test key's call, which the
/// allocation never pays for).
pub(crate) fn counters(
    plan: &Plan,
    period_start_ms: i64,
    who: &str,
    allocation: Option<&str>,
    now: i64,
) -> Vec<Counter> {
    let mut out = Vec::new();
    if let Some(n) = plan.requests_per_minute {
        out.push(fixed(format!("{who}:minute"), now, MINUTE_MS, n.into()));
    }
    if let Some(n) = plan.requests_per_day {
        out.push(fixed(format!("{who}:day"), now, DAY_MS, n.into()));
    }
    if let (Some(n), Some(company_id)) = (plan.monthly_requests, allocation) {
        out.push(allocation_counter(company_id, n, period_start_ms, now));
    }
    out
}

/// The counter of a company's monthly allocation of `limit` requests, in the period (from
/// `period_start_ms`) that holds `now`.
pub(crate) fn allocation_counter(
    company_id: &str,
    limit: u64,
    period_start_ms: i64,
    now: i64,
) -> Counter {
    let (start_ms, end_ms) = current_period(period_start_ms, now);
    Counter {
        key: format!("company:{company_id}:month"),
        start_ms,
        end_ms,
        limit,
    }
}

async fn plan_of(s: &IngestState, company_id: &str) -> ApiResult<(Plan, i64)> {
    if let Some(hit) = s.plans.get(company_id) {
        if hit.0.elapsed() < PLAN_TTL {
            return Ok(hit.1);
        }
    }
    let c = s
        .metadata
        .company(company_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such company"))?;
    let (plan, start) = effective(&c);
    if s.plans.len() > 10_000 {
        s.plans.clear();
    }
    s.plans
        .insert(company_id.to_string(), (Instant::now(), (plan, start)));
    Ok((plan, start))
}

fn with_headers(mut resp: Response, standing: Option<&Standing>) -> Response {
    if let Some(st) = standing {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(st.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(st.remaining));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from(st.reset_ms.div_euclid(1000)),
        );
    }
    resp
}

fn refused(code: &'static str, what: &str, limit: u64, reset_ms: i64, now: i64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        code,
        format!("the {what} limit of {limit} is reached"),
    )
    .with_details(json!({ "limit": what, "limit_value": limit, "reset": rfc3339(reset_ms) }));
    e.retry_after_secs = Some(retry_after_secs(now, reset_ms));
    e
}

/// An asset's own limit (`rate_limit_number` calls per `rate_limit_period`, counted per
/// `rate_limit_granularity`), kept in the asset's other fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssetLimit {
    pub(crate) number: u64,
    pub(crate) period: &'static str,
    pub(crate) granularity: &'static str,
}

const ASSET_PERIODS: &[(&str, i64)] = &[
    ("second", 1_000),
    ("minute", MINUTE_MS),
    ("hour", HOUR_MS),
    ("day", DAY_MS),
];
const ASSET_GRANULARITIES: &[&str] = &["USER", "COMPANY", "IP"];

/// `rate_limit_number` of an asset's or endpoint's fields: `None` when absent or null, a `400`
/// unless it is a whole number from 1 to 10⁹.
fn limit_number(fields: &serde_json::Map<String, Value>) -> ApiResult<Option<u64>> {
    match fields.get("rate_limit_number") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=1_000_000_000).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "rate_limit_number must be a whole number from 1 to 1000000000",
                )
            }),
    }
}

/// The asset limit a body's fields set: `Ok(None)` without `rate_limit_number` (or with it
/// null), a `400` for a bad number, period or granularity. The period defaults to `minute`,
/// the granularity to `USER`.
pub(crate) fn asset_limit(
    fields: &serde_json::Map<String, Value>,
) -> ApiResult<Option<AssetLimit>> {
    let Some(number) = limit_number(fields)? else {
        return Ok(None);
    };
    let text = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    };
    let period = text("rate_limit_period")?.unwrap_or_else(|| "minute".into());
    let period = ASSET_PERIODS
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(&period))
        .map(|(p, _)| *p)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "rate_limit_period {period:?} is not one of second, minute, hour, day"
            ))
        })?;
    let granularity = text("rate_limit_granularity")?.unwrap_or_else(|| "USER".into());
    let granularity = ASSET_GRANULARITIES
        .iter()
        .find(|g| g.eq_ignore_ascii_case(&granularity))
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "rate_limit_granularity {granularity:?} is not one of USER, COMPANY, IP"
            ))
        })?;
    Ok(Some(AssetLimit {
        number,
        period,
        granularity,
    }))
}

/// Who a call is, for an asset's limit: its user, its company and its client IP.
pub(crate) struct CallerOrigin<'a> {
    pub(crate) caller: &'a Caller,
    pub(crate) ip: IpAddr,
}

/// The counter of one call of `asset_id` under `limit`.
pub(crate) fn asset_counter(
    asset_id: &str,
    limit: &AssetLimit,
    origin: &CallerOrigin<'_>,
    now: i64,
) -> Counter {
    let who = match limit.granularity {
        "COMPANY" => format!("company:{}", origin.caller.company_id),
        "IP" => format!("ip:{}", origin.ip),
        _ => format!("user:{}", origin.caller.user_id),
    };
    let len = ASSET_PERIODS
        .iter()
        .find(|(p, _)| *p == limit.period)
        .map_or(MINUTE_MS, |(_, ms)| *ms);
    fixed(
        format!("asset:{asset_id}:{who}:{}", limit.period),
        now,
        len,
        limit.number,
    )
}

/// A data endpoint's own limit: `rate_limit_number` calls per `rate_limit_period` (`HOUR`,
/// `DAY`, or the calendar `MONTH` in UTC), counted per `rate_limit_granularity` (`IP`, `USER`,
/// `COMPANY`, `API_KEY`, or `GLOBAL`: every caller together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointLimit {
    pub(crate) number: u64,
    pub(crate) period: &'static str,
    pub(crate) granularity: &'static str,
}

const ENDPOINT_PERIODS: &[&str] = &["HOUR", "DAY", "MONTH"];
const ENDPOINT_GRANULARITIES: &[&str] = &["IP", "USER", "COMPANY", "API_KEY", "GLOBAL"];

/// The endpoint limit of an endpoint's fields: `Ok(None)` without `rate_limit_number`, a `400`
/// for a bad number, period or granularity (defaults: `HOUR`, `IP`).
pub(crate) fn endpoint_limit(
    fields: &serde_json::Map<String, Value>,
) -> ApiResult<Option<EndpointLimit>> {
    let Some(number) = limit_number(fields)? else {
        return Ok(None);
    };
    let pick = |field: &str, default: &str, allowed: &[&'static str]| {
        let given = match fields.get(field) {
            None | Some(Value::Null) => default.to_string(),
            Some(Value::String(v)) => v.clone(),
            Some(_) => return Err(ApiError::bad_request(format!("{field} must be a string"))),
        };
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(&given))
            .copied()
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field} {given:?} is not one of {}",
                    allowed.join(", ")
                ))
            })
    };
    Ok(Some(EndpointLimit {
        number,
        period: pick("rate_limit_period", "HOUR", ENDPOINT_PERIODS)?,
        granularity: pick("rate_limit_granularity", "IP", ENDPOINT_GRANULARITIES)?,
    }))
}

/// The calendar month (UTC) that holds `now`, as `[start, end)` in ms.
pub(crate) fn utc_month(now: i64) -> (i64, i64) {
    use chrono::{Datelike, TimeZone, Utc};
    let t = Utc.timestamp_millis_opt(now).single().unwrap_or_default();
    let start = Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    (start.timestamp_millis(), end.timestamp_millis())
}

/// The counter of one call of endpoint `endpoint_id` under `limit`, by the caller (if any) from
/// `ip`. An anonymous call counts under its IP for the user, company and key granularities.
pub(crate) fn endpoint_counter(
    endpoint_id: &str,
    limit: &EndpointLimit,
    caller: Option<&Caller>,
    ip: IpAddr,
    now: i64,
) -> Counter {
    let who = match (limit.granularity, caller) {
        ("GLOBAL", _) => "all".to_string(),
        ("USER", Some(c)) => format!("user:{}", c.user_id),
        ("COMPANY", Some(c)) => format!("company:{}", c.company_id),
        ("API_KEY", Some(c)) => subject(c),
        _ => format!("ip:{ip}"),
    };
    let key = format!(
        "endpoint:{endpoint_id}:{who}:{}",
        limit.period.to_ascii_lowercase()
    );
    match limit.period {
        "MONTH" => {
            let (start_ms, end_ms) = utc_month(now);
            Counter {
                key,
                start_ms,
                end_ms,
                limit: limit.number,
            }
        }
        "DAY" => fixed(key, now, DAY_MS, limit.number),
        _ => fixed(key, now, HOUR_MS, limit.number),
    }
}

/// Routes whose calls count their hourly unit when they are admitted, with the plan's windows
/// (so [`route_limit`] leaves them alone): `/analyze/…` and a data endpoint's `execute` and
/// `export`.
pub(crate) fn counted_on_admission(path: &str) -> bool {
    if path.starts_with("/analyze/") {
        return true;
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "companies", _, "endpoints", _, "execute" | "export"]
    )
}

/// The client's IP: the peer, or what a trusted proxy says in `X-Forwarded-For`.
pub(crate) fn client_ip_of(
    s: &IngestState,
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    crate::edge::client_ip(
        peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip()),
        forwarded,
        &s.cfg.trusted_proxies,
    )
}

/// Which of seed `000`'s hourly limits a path is under: `/api/auth/…` the authentication
/// limit; the web-analytics routes (`/api/websites…`, collect) none; every other route of
/// ingest (the marketplace) the marketplace limit.
pub(crate) fn route_class(path: &str) -> Option<&'static str> {
    if path.starts_with("/api/auth/") {
        Some("auth")
    } else if path.starts_with("/api/") {
        None
    } else {
        Some("marketplace")
    }
}

/// The hourly counter of a call to a route of `class` by `who` (`None` when that limit is off).
pub(crate) fn hourly(cfg: &IngestConfig, class: &str, who: &str, now: i64) -> Option<Counter> {
    let limit = match class {
        "auth" => cfg.auth_per_hour,
        _ => cfg.market_per_hour,
    };
    (limit > 0).then(|| fixed(format!("{class}:{who}:hour"), now, HOUR_MS, limit))
}

/// Who a route limit counts: the caller, or (signed out) the client's IP.
fn route_subject(s: &IngestState, req: &Request) -> String {
    if let Some(caller) = req.extensions().get::<Caller>() {
        return subject(caller);
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    format!("ip:{}", client_ip_of(s, peer, req.headers()))
}

/// Seed `000`'s hourly limits as a layer: takes the call's unit or answers the `429`, and
/// puts this window in the `X-RateLimit-*` headers unless the answer already names a tighter
/// one. `/analyze` counts its hour in [`admit`], with the plan's windows, in one step.
pub(crate) async fn route_limit(
    State(s): State<Arc<IngestState>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let (Some(store), Some(class)) = (s.limits.clone(), route_class(path)) else {
        return next.run(req).await;
    };
    if counted_on_admission(path) {
        return next.run(req).await;
    }
    let now = now_ms();
    let Some(counter) = hourly(&s.cfg, class, &route_subject(&s, &req), now) else {
        return next.run(req).await;
    };
    let counters = [counter];
    let counts = match store.take(&counters, now).await {
        Ok(Some(counts)) => counts,
        Ok(None) => return refusal(store.as_ref(), &counters, now).await,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let resp = next.run(req).await;
    let ours = tightest(&counters, &counts);
    let theirs = resp
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match (ours, theirs) {
        (Some(st), Some(r)) if r <= st.remaining => resp,
        (ours, _) => with_headers(resp, ours.as_ref()),
    }
}

/// The `429` for a call that one of `counters` refuses, naming it, with its headers.
async fn refusal(store: &dyn LimitStore, counters: &[Counter], now: i64) -> Response {
    let counts = match store.counts(counters).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(full) = refusing(counters, &counts).or(counters.first()) else {
        return ApiError::internal("a limit refused a call that no limit counts").into_response();
    };
    let what = limit_name(&full.key);
    let code = if what == "month" {
        "quota_exceeded"
    } else {
        "rate_limited"
    };
    let standing = Standing {
        key: full.key.clone(),
        limit: full.limit,
        remaining: 0,
        reset_ms: full.end_ms,
    };
    let e = refused(code, &what, full.limit, full.end_ms, now);
    with_headers(e.into_response(), Some(&standing))
}

/// The name a `429` gives a counter: its window (`minute`, `day`, `month`), for the hourly
/// route limits `auth_hour` / `marketplace_hour`, for an asset's own limit `asset_<period>`.
fn limit_name(key: &str) -> String {
    let window = key.rsplit(':').next().unwrap_or("rate");
    match key.split(':').next() {
        Some(class @ ("auth" | "marketplace")) if window == "hour" => format!("{class}_hour"),
        Some("asset") => format!("asset_{window}"),
        Some("endpoint") => format!("endpoint_{window}"),
        _ => window.to_string(),
    }
}

/// Lets the call through (taking its units, with `asset`'s when the asset has its own limit,
/// and a concurrency slot) or answers the `429`.
pub(crate) async fn admit(
    s: &IngestState,
    caller: &Caller,
    asset: Option<Counter>,
) -> Result<Option<Admitted>, Response> {
    let Some(store) = s.limits.clone() else {
        return Ok(None);
    };
    let now = now_ms();
    let (plan, start) = plan_of(s, &caller.company_id)
        .await
        .map_err(IntoResponse::into_response)?;
    let who = subject(caller);
    let lease = uuid::Uuid::now_v7().to_string();
    // A slot outlives the longest execution, so only a process that died leaves one behind.
    let timeout = s
        .sources
        .as_ref()
        .map_or(Duration::from_secs(10), |r| r.config().execution_timeout);
    let hold_until = now + timeout.as_millis() as i64 + 30_000;
    let allocation = (!caller.test_mode).then_some(caller.company_id.as_str());
    let mut counters = counters(&plan, start, &who, allocation, now);
    counters.extend(hourly(&s.cfg, "marketplace", &who, now));
    counters.extend(asset);
    let slot = Slot {
        key: format!("{who}:concurrent"),
        lease_id: lease.clone(),
        max: plan.concurrent_requests.into(),
        expires_ms: hold_until,
    };
    let counts = match store.admit(&slot, &counters, now).await {
        Ok(Admission::Taken(counts)) => counts,
        Ok(Admission::NoSlot) => {
            let e = refused("rate_limited", "concurrent", slot.max, now + 1000, now);
            return Err(e.into_response());
        }
        Ok(Admission::Full) => return Err(refusal(store.as_ref(), &counters, now).await),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    Ok(Some(Admitted {
        standing: tightest(&counters, &counts),
        store,
        lease: Some(lease),
    }))
}

/// An anonymous call (a data endpoint open to anyone): the marketplace hour of its IP and the
/// endpoint's own limit, if any, taken together; no plan applies and no slot is held.
pub(crate) async fn admit_anonymous(
    s: &IngestState,
    ip: IpAddr,
    own: Option<Counter>,
) -> Result<Option<Admitted>, Response> {
    let Some(store) = s.limits.clone() else {
        return Ok(None);
    };
    let now = now_ms();
    let mut counters: Vec<Counter> = hourly(&s.cfg, "marketplace", &format!("ip:{ip}"), now)
        .into_iter()
        .collect();
    counters.extend(own);
    if counters.is_empty() {
        return Ok(None);
    }
    match store.take(&counters, now).await {
        Ok(Some(counts)) => Ok(Some(Admitted {
            standing: tightest(&counters, &counts),
            store,
            lease: None,
        })),
        Ok(None) => Err(refusal(store.as_ref(), &counters, now).await),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// The call's answer (or error) with its headers. Its concurrency slot is given back before
/// the answer leaves: a client that sends its next call as soon as it has the answer must
/// find the slot free (released after the answer, 32 callers on 50 slots were refused).
pub(crate) async fn finish(admitted: Option<Admitted>, out: ApiResult<Response>) -> Response {
    let resp = out.unwrap_or_else(IntoResponse::into_response);
    let Some(mut a) = admitted else {
        return resp;
    };
    a.release().await;
    with_headers(resp, a.standing.as_ref())
}

impl Admitted {
    /// Gives the call's concurrency slot back, once. An execution does it as soon as its
    /// source has answered, alongside its settlement, so the two round trips overlap.
    pub(crate) async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.store.release(&lease).await {
                tracing::warn!(error = %e, "cannot release a concurrency slot; it expires by itself");
            }
        }
    }
}

/// Gives back the slot of `admitted`, if it holds one.
pub(crate) async fn release(admitted: &mut Option<Admitted>) {
    if let Some(a) = admitted {
        a.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_under_the_auth_the_marketplace_or_no_hourly_limit() {
        assert_eq!(route_class("/api/auth/login"), Some("auth"));
        assert_eq!(route_class("/api/auth/keys/3"), Some("auth"));
        assert_eq!(route_class("/api/websites/w/stats"), None);
        assert_eq!(route_class("/api/collect"), None);
        assert_eq!(route_class("/companies/c/assets"), Some("marketplace"));
        assert_eq!(route_class("/analyze/acme/assets/x"), Some("marketplace"));
        let mut cfg = IngestConfig::new("raw".into(), "entities".into());
        let c = hourly(&cfg, "auth", "ip:1.2.3.4", HOUR_MS + 5).expect("on");
        assert_eq!(
            (c.key.as_str(), c.start_ms, c.end_ms, c.limit),
            ("auth:ip:1.2.3.4:hour", HOUR_MS, 2 * HOUR_MS, 1_000)
        );
        assert_eq!(
            hourly(&cfg, "marketplace", "key:7", 0).map(|c| c.limit),
            Some(10_000)
        );
        cfg.market_per_hour = 0;
        assert!(hourly(&cfg, "marketplace", "key:7", 0).is_none(), "off");
        assert_eq!(limit_name("marketplace:key:7:hour"), "marketplace_hour");
        assert_eq!(limit_name("auth:ip:1.2.3.4:hour"), "auth_hour");
        assert_eq!(limit_name("key:7:minute"), "minute");
        assert_eq!(limit_name("company:acme:month"), "month");
        assert_eq!(limit_name("asset:a1:ip:1.2.3.4:second"), "asset_second");
        assert_eq!(limit_name("endpoint:e1:all:month"), "endpoint_month");
        assert!(counted_on_admission("/analyze/acme/assets/x"));
        assert!(counted_on_admission("/companies/c/endpoints/e/execute"));
        assert!(counted_on_admission("/companies/c/endpoints/e/export"));
        assert!(!counted_on_admission("/companies/c/endpoints/e"));
        assert!(!counted_on_admission("/companies/c/endpoints/e/stats"));
    }

    #[test]
    fn endpoint_limits_count_per_window_and_granularity() {
        let f = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(endpoint_limit(&f(json!({}))).ok(), Some(None));
        let l = endpoint_limit(&f(
            json!({"rate_limit_number": 3, "rate_limit_period": "month",
            "rate_limit_granularity": "global"}),
        ))
        .ok()
        .flatten()
        .expect("limit");
        assert_eq!((l.period, l.granularity), ("MONTH", "GLOBAL"));
        for bad in [
            json!({"rate_limit_number": 0}),
            json!({"rate_limit_number": 3, "rate_limit_period": "minute"}),
            json!({"rate_limit_number": 3, "rate_limit_granularity": "TEAM"}),
        ] {
            assert!(endpoint_limit(&f(bad.clone())).is_err(), "{bad}");
        }
        // 2026-03-31T23:59:59Z and 2026-04-01T00:00:00Z fall in different months.
        let march_end = 1_775_001_599_000;
        let (start, end) = utc_month(march_end);
        assert_eq!((start, end), (1_772_323_200_000, 1_775_001_600_000));
        assert_eq!(utc_month(end).0, end);
        assert_eq!(
            utc_month(1_798_761_600_000 - 1).1,
            1_798_761_600_000,
            "December ends in January"
        );
        let ip = IpAddr::from([10, 0, 0, 9]);
        let c = endpoint_counter("e1", &l, None, ip, march_end);
        assert_eq!((c.key.as_str(), c.end_ms), ("endpoint:e1:all:month", end));
        let per_ip = EndpointLimit {
            number: 5,
            period: "HOUR",
            granularity: "USER",
        };
        assert_eq!(
            endpoint_counter("e1", &per_ip, None, ip, 0).key,
            "endpoint:e1:ip:10.0.0.9:hour",
            "an anonymous caller counts under its IP"
        );
    }

    fn fields(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn asset_limits_are_read_checked_and_counted_per_user_company_or_ip() {
        assert_eq!(asset_limit(&fields(json!({}))).ok(), Some(None));
        assert_eq!(
            asset_limit(&fields(json!({"rate_limit_number": null}))).ok(),
            Some(None)
        );
        let l = asset_limit(&fields(json!({"rate_limit_number": 3})))
            .ok()
            .flatten()
            .expect("a limit");
        assert_eq!((l.number, l.period, l.granularity), (3, "minute", "USER"));
        let l = asset_limit(&fields(json!({"rate_limit_number": 2,
            "rate_limit_period": "HOUR", "rate_limit_granularity": "company"})))
        .ok()
        .flatten()
        .expect("a limit");
        assert_eq!((l.period, l.granularity), ("hour", "COMPANY"));
        for bad in [
            json!({"rate_limit_number": 0}),
            json!({"rate_limit_number": 1.5}),
            json!({"rate_limit_number": "5"}),
            json!({"rate_limit_number": 5, "rate_limit_period": "week"}),
            json!({"rate_limit_number": 5, "rate_limit_granularity": "API_KEY"}),
            json!({"rate_limit_number": 5, "rate_limit_period": 60}),
        ] {
            assert!(asset_limit(&fields(bad.clone())).is_err(), "{bad}");
        }
        let caller = Caller {
            key_id: "k".into(),
            api_key_id: 7,
            user_id: "u1".into(),
            company_id: "c1".into(),
            role: web::roles::Role::Buyer,
            session: None,
            test_mode: false,
            endpoint_id: None,
        };
        let origin = CallerOrigin {
            caller: &caller,
            ip: IpAddr::from([81, 2, 69, 1]),
        };
        let mut limit = AssetLimit {
            number: 5,
            period: "second",
            granularity: "IP",
        };
        let c = asset_counter("a1", &limit, &origin, 2_500);
        assert_eq!(
            (c.key.as_str(), c.start_ms, c.end_ms, c.limit),
            ("asset:a1:ip:81.2.69.1:second", 2_000, 3_000, 5)
        );
        limit.granularity = "COMPANY";
        limit.period = "day";
        let c = asset_counter("a1", &limit, &origin, 2_500);
        assert_eq!(
            (c.key.as_str(), c.end_ms),
            ("asset:a1:company:c1:day", DAY_MS)
        );
        limit.granularity = "USER";
        assert_eq!(
            asset_counter("a1", &limit, &origin, 0).key,
            "asset:a1:user:u1:day"
        );
    }

    #[test]
    fn a_starter_call_counts_its_minute_day_and_month() {
        let plan =
            projections::reference::plan("starter").unwrap_or(&projections::reference::PLANS[0]);
        let c = counters(plan, 0, "key:7", Some("acme"), 90_000);
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["key:7:minute", "key:7:day", "company:acme:month"]);
        assert_eq!(
            (c[0].start_ms, c[0].end_ms, c[0].limit),
            (60_000, 120_000, 60)
        );
        let enterprise =
            projections::reference::plan("enterprise").unwrap_or(&projections::reference::PLANS[2]);
        assert!(
            counters(enterprise, 0, "key:7", Some("acme"), 0).is_empty(),
            "unlimited"
        );
        let test = counters(plan, 0, "key:8", None, 90_000);
        assert_eq!(
            test.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["key:8:minute", "key:8:day"],
            "a test key's call is not paid from the allocation"
        );
    }
}
