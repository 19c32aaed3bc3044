//! `POST /api/collect`: one event object or an array of up to 50. Validates every field,
//! enriches at the edge (visitor id, geo), appends the whole request in one durable append and
//! answers `202` only after it is durable.

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
/// How long a website's existence is trusted without asking the metadata store again.
const SITE_CACHE_TTL: Duration = Duration::from_secs(30);

/// One event as clients send it.
#[derive(Debug, Deserialize)]
pub struct CollectPayload {
    pub website_id: String,
    #[serde(rename = "type", alias = "event_type")]
    pub event_type: Option<String>,
    pub url: String,
    pub referrer: Option<String>,
    pub screen: Option<String>,
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
    let event_type = p.event_type.take().unwrap_or_else(|| "pageview".into());
    if event_type != "pageview" && event_type != "event" {
        return Err(bad_field(
            "type",
            format!("type must be \"pageview\" or \"event\", not {event_type:?}"),
        ));
    }
    if event_type == "event" && p.event_name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(bad_field(
            "event_name",
            "event_name is required when type is \"event\"".into(),
        ));
    }
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
    if let Some(v) = &p.visitor_id {
        if v.is_empty() || v.chars().count() > 64 {
            return Err(bad_field(
                "visitor_id",
                "visitor_id must be 1 to 64 characters".into(),
            ));
        }
    }
    let event_data = match p.event_data.take() {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_EVENT_DATA_BYTES {
                return Err(ApiError::payload_too_large(format!(
                    "event_data is {} bytes; the maximum is {MAX_EVENT_DATA_BYTES}",
                    text.len()
                )));
            }
            Some(text)
        }
        Some(_) => {
            return Err(bad_field(
                "event_data",
                "event_data must be a JSON object".into(),
            ))
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
    let now = Utc::now();
    let limits = TimeLimits {
        max_age: s.cfg.max_event_age,
        max_skew: s.cfg.max_clock_skew,
    };
    let events = parse_body(&bytes)?
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
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
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
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "ok": true })),
    )
        .into_response();
    resp.headers_mut()
        .insert("x-tally-ingest-ack", HeaderValue::from_static("durable"));
    Ok(resp)
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
        assert!(one(r#"{"website_id":"w","url":"/","type":"click"}"#).is_err());
        assert!(
            one(r#"{"website_id":"w","url":"/","type":"event"}"#).is_err(),
            "event needs a name"
        );
        assert!(
            one(r#"{"website_id":"w","url":"/","type":"event","event_name":"signup"}"#).is_ok()
        );
    }

    #[test]
    fn field_limits() {
        let big = "x".repeat(5000);
        let e = one(&format!(
            r#"{{"website_id":"w","url":"/","event_data":{{"k":"{big}"}}}}"#
        ))
        .err();
        assert_eq!(e.map(|e| e.code), Some("payload_too_large"));
        let e = one(r#"{"website_id":"w","url":"/","event_data":[1]}"#).err();
        assert_eq!(e.map(|e| e.code), Some("bad_request"));
        let long_visitor = "v".repeat(65);
        assert!(one(&format!(
            r#"{{"website_id":"w","url":"/","visitor_id":"{long_visitor}"}}"#
        ))
        .is_err());
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
