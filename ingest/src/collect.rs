//! `POST /api/collect` and `POST /e` (where the Sparklytics tracker posts): one event object
//! or an array of up to 50. Validates every field, enriches at the edge (visitor id, geo),
//! appends the whole request in one durable append and answers `202` only after it is durable.
//! Open to any origin: the tracker runs on the customer's site (the root binary gives these
//! routes their own CORS layer).

use crate::edge::{client_ip, visitor_id};
use crate::IngestState;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use eventlog::OutRecord;
use schemas::CollectedEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::{ApiError, ApiResult};

pub const MAX_BODY_BYTES: usize = 102_400;
/// Oversized bodies up to this size are read and dropped before the 413 (see `read_body`).
const DRAIN_LIMIT_BYTES: usize = 1 << 20;
pub const MAX_EVENT_DATA_BYTES: usize = 4_096;
pub const MAX_BATCH: usize = 50;
const MAX_USER_AGENT: usize = 512;
/// The longest event `type` accepted (any string is a type; `pageview` is the one counted
/// as a page view).
pub const MAX_EVENT_TYPE: usize = 50;
/// The largest screen side accepted, in pixels.
const MAX_SCREEN_SIDE: u32 = 100_000;
/// The longest client-chosen `visitor_id`; a longer or empty one is ignored.
const MAX_VISITOR_ID: usize = 64;
/// How long a website's existence is trusted without asking the metadata store again.
const SITE_CACHE_TTL: Duration = Duration::from_secs(30);

/// One event as clients send it.
#[derive(Debug, Default, Deserialize)]
pub struct CollectPayload {
    pub website_id: String,
    #[serde(rename = "type", alias = "event_type")]
    pub event_type: Option<String>,
    pub url: String,
    pub referrer: Option<String>,
    pub screen: Option<String>,
    /// Joined with `screen_height` as `WxH` when `screen` is absent (the tracker's fields).
    pub screen_width: Option<u32>,
    pub screen_height: Option<u32>,
    pub language: Option<String>,
    pub event_name: Option<String>,
    pub event_data: Option<serde_json::Value>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub visitor_id: Option<String>,
    pub timestamp: Option<String>,
}

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    pub max_age: Duration,
    pub max_skew: Duration,
}

/// Splits a body into its events: an object, or an array of 1..=50 objects.
pub fn parse_body(body: &[u8]) -> ApiResult<Vec<CollectPayload>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ApiError::bad_request(
            "request body is empty; expected a JSON event or array of events",
        )),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            if items.is_empty() {
                return Err(ApiError::bad_request("batch is empty"));
            }
            if items.len() > MAX_BATCH {
                return Err(ApiError::batch_too_large(format!(
                    "batch has {} events; the maximum is {MAX_BATCH}",
                    items.len()
                )));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    serde_json::from_str(raw.get()).map_err(|e| {
                        ApiError::bad_request(format!("events[{i}]: {e}"))
                            .with_details(serde_json::json!({ "index": i }))
                    })
                })
                .collect()
        }
        Some(_) => serde_json::from_slice(body)
            .map(|p| vec![p])
            .map_err(|e| ApiError::bad_request(format!("invalid event: {e}"))),
    }
}

fn check_len(field: &str, value: &Option<String>, max: usize) -> ApiResult<()> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::bad_request(format!(
            "{field} is longer than {max} characters"
        ))
        .with_details(serde_json::json!({ "field": field }))),
        _ => Ok(()),
    }
}

fn bad_field(field: &str, msg: String) -> ApiError {
    ApiError::bad_request(msg).with_details(serde_json::json!({ "field": field }))
}

/// A payload that passed validation, with its event time resolved.
#[derive(Debug)]
pub struct ValidEvent {
    pub payload: CollectPayload,
    pub event_type: String,
    pub event_data: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// Validates one event's fields against Tally's limits.
pub fn validate(
    mut p: CollectPayload,
    now: DateTime<Utc>,
    limits: TimeLimits,
) -> ApiResult<ValidEvent> {
    if p.website_id.trim().is_empty() || p.website_id.len() > 64 {
        return Err(bad_field(
            "website_id",
            "website_id must be 1 to 64 characters".into(),
        ));
    }
    if p.url.trim().is_empty() || p.url.len() > 2048 {
        return Err(bad_field("url", "url must be 1 to 2048 characters".into()));
    }
    let event_type = p
        .event_type
        .take()
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| "pageview".into());
    if event_type.is_empty() || event_type.chars().count() > MAX_EVENT_TYPE {
        return Err(bad_field(
            "type",
            format!("type must be 1 to {MAX_EVENT_TYPE} characters"),
        ));
    }
    p.screen = screen_of(p.screen.take(), p.screen_width, p.screen_height)?;
    check_len("referrer", &p.referrer, 2048)?;
    check_len("screen", &p.screen, 32)?;
    check_len("language", &p.language, 35)?;
    check_len("event_name", &p.event_name, 100)?;
    for (name, v) in [
        ("utm_source", &p.utm_source),
        ("utm_medium", &p.utm_medium),
        ("utm_campaign", &p.utm_campaign),
        ("utm_term", &p.utm_term),
        ("utm_content", &p.utm_content),
    ] {
        check_len(name, v, 256)?;
    }
    // A client's visitor id is a hint: one that is empty or too long is ignored (the edge
    // derives the id instead), as the tracker's peers do.
    p.visitor_id = p
        .visitor_id
        .take()
        .filter(|v| !v.trim().is_empty() && v.chars().count() <= MAX_VISITOR_ID);
    let event_data = match p.event_data.take() {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let text = v.to_string();
            if text.len() > MAX_EVENT_DATA_BYTES {
                return Err(ApiError::payload_too_large(format!(
                    "event_data is {} bytes; the maximum is {MAX_EVENT_DATA_BYTES}",
                    text.len()
                ))
                .with_details(serde_json::json!({ "field": "event_data" })));
            }
            Some(text)
        }
    };
    let timestamp = match &p.timestamp {
        None => now,
        Some(t) => {
            let ts = DateTime::parse_from_rfc3339(t)
                .map_err(|e| bad_field("timestamp", format!("timestamp must be RFC 3339: {e}")))?
                .with_timezone(&Utc);
            if ts > now + limits.max_skew {
                return Err(bad_field("timestamp", "timestamp is in the future".into()));
            }
            if now
                .signed_duration_since(ts)
                .to_std()
                .is_ok_and(|age| age > limits.max_age)
            {
                return Err(bad_field(
                    "timestamp",
                    format!(
                        "timestamp is older than the accepted {} hours",
                        limits.max_age.as_secs() / 3600
                    ),
                ));
            }
            ts
        }
    };
    Ok(ValidEvent {
        payload: p,
        event_type,
        event_data,
        timestamp,
    })
}

/// The screen as stored: `screen` as sent, else `WxH` from the tracker's two fields.
fn screen_of(
    screen: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
) -> ApiResult<Option<String>> {
    for (field, side) in [("screen_width", width), ("screen_height", height)] {
        if side.is_some_and(|n| n > MAX_SCREEN_SIDE) {
            return Err(bad_field(
                field,
                format!("{field} must be at most {MAX_SCREEN_SIDE}"),
            ));
        }
    }
    Ok(match (screen, width, height) {
        (Some(s), _, _) if !s.is_empty() => Some(s),
        (_, Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    })
}

fn to_collected(
    v: ValidEvent,
    ip: IpAddr,
    ua: &str,
    geo: &crate::GeoInfo,
    now: DateTime<Utc>,
    s: &IngestState,
) -> CollectedEvent {
    let p = v.payload;
    let visitor = p
        .visitor_id
        .clone()
        .unwrap_or_else(|| visitor_id(&s.visitor_secret, now, &p.website_id, ip, ua));
    CollectedEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        website_id: p.website_id,
        received_at_ms: now.timestamp_millis(),
        timestamp_ms: v.timestamp.timestamp_millis(),
        event_type: v.event_type,
        url: p.url,
        referrer: p.referrer.filter(|r| !r.is_empty()),
        screen: p.screen,
        language: p.language,
        event_name: p.event_name,
        event_data: v.event_data,
        utm_source: p.utm_source,
        utm_medium: p.utm_medium,
        utm_campaign: p.utm_campaign,
        utm_term: p.utm_term,
        utm_content: p.utm_content,
        visitor_id: visitor,
        user_agent: (!ua.is_empty()).then(|| ua.to_string()),
        country: geo.country.clone(),
        region: geo.region.clone(),
        city: geo.city.clone(),
    }
}

impl IngestState {
    /// Whether a live website has this id (cached for a short while).
    pub(crate) async fn site_exists(&self, id: &str) -> ApiResult<bool> {
        if let Some(seen) = self.known_sites.get(id) {
            if seen.elapsed() < SITE_CACHE_TTL {
                return Ok(true);
            }
        }
        let exists = self.metadata.website(id).await?.is_some();
        if exists {
            self.known_sites.insert(id.to_string(), Instant::now());
        } else {
            self.known_sites.remove(id);
        }
        Ok(exists)
    }

    pub(crate) fn forget_site(&self, id: &str) {
        self.known_sites.remove(id);
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<bytes::Bytes> {
    let too_large =
        || ApiError::payload_too_large(format!("request body exceeds {MAX_BODY_BYTES} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > MAX_BODY_BYTES) {
        // Answering before the body is read makes the connection close under a client that is
        // still sending, which then often sees a reset instead of the 413. Read and drop a
        // moderately oversized body first; refuse a huge one at once.
        if n <= DRAIN_LIMIT_BYTES {
            let _ = axum::body::to_bytes(body, DRAIN_LIMIT_BYTES).await;
        }
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let over_limit = std::error::Error::source(&e).is_some_and(|s| {
                s.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
            });
            if over_limit {
                too_large()
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })
}

async fn accept(
    s: &IngestState,
    ip: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = read_body(headers, body).await?;
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    append(s, ip, ua, parse_body(&bytes)?).await?;
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "ok": true })),
    )
        .into_response();
    resp.headers_mut()
        .insert("x-tally-ingest-ack", HeaderValue::from_static("durable"));
    Ok(resp)
}

/// Validates `payloads` (all or none), checks their websites exist, and appends them to the
/// raw topic as sent from `ip` by `ua`: the one way events get in (collect, short links,
/// pixels). Returns once the log holds them.
pub(crate) async fn append(
    s: &IngestState,
    ip: IpAddr,
    ua: &str,
    payloads: Vec<CollectPayload>,
) -> ApiResult<()> {
    let now = Utc::now();
    let limits = TimeLimits {
        max_age: s.cfg.max_event_age,
        max_skew: s.cfg.max_clock_skew,
    };
    let events = payloads
        .into_iter()
        .map(|p| validate(p, now, limits))
        .collect::<ApiResult<Vec<_>>>()?;
    let sites: HashSet<&str> = events
        .iter()
        .map(|e| e.payload.website_id.as_str())
        .collect();
    for site in sites {
        if !s.site_exists(site).await? {
            return Err(ApiError::not_found(format!("unknown website_id {site:?}")));
        }
    }
    let ua: String = ua.chars().take(MAX_USER_AGENT).collect();
    // Every event of a request comes from the same IP: look it up once.
    let geo = s.geo.as_ref().map(|g| g.lookup(ip)).unwrap_or_default();
    let mut records = Vec::with_capacity(events.len());
    for v in events {
        let e = to_collected(v, ip, &ua, &geo, now, s);
        let key = format!("{}:{}", e.website_id, e.visitor_id).into_bytes();
        let value = schemas::encode(&e).map_err(ApiError::internal)?;
        records.push(OutRecord { key, value });
    }
    let n = records.len() as u64;
    if let Err(e) = s.log.append(&s.cfg.raw_topic, records).await {
        tracing::warn!(error = %e, "collect append failed");
        return Err(ApiError::unavailable(
            "the event log cannot accept writes right now; retry",
        ));
    }
    metrics::counter!("tally_collected_events_total").increment(n);
    Ok(())
}

/// The handler.
pub async fn collect(
    State(s): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &s.cfg.trusted_proxies);
    let decision = s.limiter.as_ref().map(|l| l.check(ip));
    let mut resp = match decision {
        Some(d) if !d.allowed => ApiError::rate_limited(d.retry_after_secs).into_response(),
        _ => accept(&s, ip, &headers, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    };
    if let Some(d) = decision {
        let h = resp.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", d.limit as u64),
            ("x-ratelimit-remaining", d.remaining as u64),
            ("x-ratelimit-reset", d.reset_unix),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
                h.insert(name, v);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TimeLimits {
        TimeLimits {
            max_age: Duration::from_secs(3600),
            max_skew: Duration::from_secs(60),
        }
    }

    fn one(json: &str) -> ApiResult<ValidEvent> {
        let mut v = parse_body(json.as_bytes())?;
        validate(v.remove(0), Utc::now(), limits())
    }

    #[test]
    fn single_and_batch_bodies_parse() {
        let ok = r#"{"website_id":"w","url":"/"}"#;
        assert_eq!(parse_body(ok.as_bytes()).map(|v| v.len()).ok(), Some(1));
        let batch = format!("[{}]", vec![ok; 50].join(","));
        assert_eq!(parse_body(batch.as_bytes()).map(|v| v.len()).ok(), Some(50));
        let too_many = format!("[{}]", vec![ok; 51].join(","));
        assert_eq!(
            parse_body(too_many.as_bytes()).err().map(|e| e.code),
            Some("batch_too_large")
        );
        assert_eq!(parse_body(b"[]").err().map(|e| e.code), Some("bad_request"));
        assert_eq!(parse_body(b"  ").err().map(|e| e.code), Some("bad_request"));
        let bad = parse_body(br#"[{"website_id":"w","url":"/"},{"website_id":"w"}]"#).err();
        assert!(bad.is_some_and(|e| e.message.contains("events[1]") && e.message.contains("url")));
    }

    #[test]
    fn event_type_alias_and_rules() {
        assert_eq!(
            one(r#"{"website_id":"w","url":"/","event_type":"pageview"}"#)
                .map(|v| v.event_type)
                .ok()
                .as_deref(),
            Some("pageview")
        );
        // Any type is a type (the tracker sends its own); an event may come without a name.
        let click = one(r#"{"website_id":"w","url":"/","type":"link_click"}"#);
        assert_eq!(
            click.map(|v| v.event_type).ok().as_deref(),
            Some("link_click")
        );
        assert!(one(r#"{"website_id":"w","url":"/","type":"event"}"#).is_ok());
        let long = "t".repeat(MAX_EVENT_TYPE + 1);
        let e = one(&format!(
            r#"{{"website_id":"w","url":"/","type":"{long}"}}"#
        ))
        .err();
        assert!(e.is_some_and(|e| e.message.contains("type")));
        assert!(one(r#"{"website_id":"w","url":"/","type":" "}"#).is_err());
    }

    #[test]
    fn tracker_fields() {
        let v = one(r#"{"website_id":"w","url":"/","screen_width":1280,"screen_height":720}"#);
        assert_eq!(
            v.ok().and_then(|v| v.payload.screen).as_deref(),
            Some("1280x720")
        );
        let v = one(r#"{"website_id":"w","url":"/","screen":"800x600","screen_width":1}"#);
        assert_eq!(
            v.ok().and_then(|v| v.payload.screen).as_deref(),
            Some("800x600")
        );
        let v = one(r#"{"website_id":"w","url":"/","screen_width":1280}"#);
        assert_eq!(v.ok().map(|v| v.payload.screen), Some(None));
        assert!(one(r#"{"website_id":"w","url":"/","screen_width":"wide"}"#).is_err());
        assert!(one(r#"{"website_id":"w","url":"/","screen_height":100001}"#).is_err());
        // Empty and over-long visitor ids are ignored, not refused.
        for id in ["", "   ", &"v".repeat(65)] {
            let v = one(&format!(
                r#"{{"website_id":"w","url":"/","visitor_id":"{id}"}}"#
            ));
            assert_eq!(v.ok().map(|v| v.payload.visitor_id), Some(None), "{id:?}");
        }
        let v = one(r#"{"website_id":"w","url":"/","visitor_id":"v-1"}"#);
        assert_eq!(
            v.ok().and_then(|v| v.payload.visitor_id).as_deref(),
            Some("v-1")
        );
        // Any JSON is event data, kept as its text.
        for (data, text) in [("[1,2]", "[1,2]"), ("\"x\"", "\"x\""), ("7", "7")] {
            let v = one(&format!(
                r#"{{"website_id":"w","url":"/","event_data":{data}}}"#
            ));
            assert_eq!(v.ok().and_then(|v| v.event_data).as_deref(), Some(text));
        }
    }

    #[test]
    fn field_limits() {
        let big = "x".repeat(5000);
        let e = one(&format!(
            r#"{{"website_id":"w","url":"/","event_data":{{"k":"{big}"}}}}"#
        ))
        .err();
        assert_eq!(e.map(|e| e.code), Some("payload_too_large"));
        assert!(one(r#"{"website_id":"","url":"/"}"#).is_err());
        assert!(
            one(r#"{"website_id":"w","url":"/","screen":5}"#).is_err(),
            "wrong type"
        );
    }

    #[test]
    fn timestamps_late_ok_future_and_too_old_refused() {
        let now = Utc::now();
        let late = (now - chrono::Duration::minutes(30)).to_rfc3339();
        let v = one(&format!(
            r#"{{"website_id":"w","url":"/","timestamp":"{late}"}}"#
        ));
        assert!(v.is_ok_and(|v| v.timestamp < now));
        let future = (now + chrono::Duration::minutes(5)).to_rfc3339();
        assert!(one(&format!(
            r#"{{"website_id":"w","url":"/","timestamp":"{future}"}}"#
        ))
        .is_err());
        let old = (now - chrono::Duration::hours(2)).to_rfc3339();
        assert!(one(&format!(
            r#"{{"website_id":"w","url":"/","timestamp":"{old}"}}"#
        ))
        .is_err());
        assert!(one(r#"{"website_id":"w","url":"/","timestamp":"yesterday"}"#).is_err());
    }
}
