//! `GET /api/websites/{id}/sessions` (newest first, paged by an opaque cursor) and
//! `GET /api/websites/{id}/sessions/{session_id}` (one session and its events).

use crate::params::{self, bad, Params};
use crate::routes::{resolve, website};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{SecondsFormat, TimeZone, Utc};
use projections::{SessionKey, SessionSummary};
use serde_json::{json, Value};
use std::sync::Arc;
use web::{data, ApiError, ApiResult, Caller};

/// The session list's page size: by default, and at most (a larger `limit` is this).
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// A session's events shown at most; `truncated` says when there are more.
const MAX_SESSION_EVENTS: u32 = 1000;

/// Session and visitor ids as the API shows them: 16 hex digits.
fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_hex_id(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn instant(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The cursor after a page: its last session's key, as `<last event ms>.<session id>`.
pub fn encode_cursor(k: SessionKey) -> String {
    format!("{}.{}", k.last_ms, hex_id(k.session))
}

pub fn decode_cursor(s: &str) -> Option<SessionKey> {
    let (ms, session) = s.split_once('.')?;
    Some(SessionKey {
        last_ms: ms.parse().ok()?,
        session: parse_hex_id(session)?,
    })
}

fn item(s: &SessionSummary) -> Value {
    json!({
        "session_id": hex_id(s.session),
        "visitor_id": hex_id(s.visitor),
        "first_seen": instant(s.first_ms),
        "last_seen": instant(s.last_ms),
        "duration_seconds": (s.last_ms - s.first_ms).max(0) / 1000,
        "pageview_count": s.pageviews,
        "event_count": s.events,
        "entry_page": s.entry_page,
        "exit_page": s.exit_page,
        "country": s.country,
        "browser": s.browser,
        "os": s.os,
        "device_type": s.device,
    })
}

fn cursor(p: &Params) -> ApiResult<Option<SessionKey>> {
    match p.get("cursor").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(c) => decode_cursor(c)
            .map(Some)
            .ok_or_else(|| bad("cursor", "cursor is not one this API returned")),
    }
}

/// `GET /api/websites/{id}/sessions?limit&cursor` plus the period and filter parameters.
pub async fn list(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, _period, scope) = resolve(&s, &caller, &id, q).await?;
    let limit = params::limit(&p, DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = cursor(&p)?;
    let mut rows = s.analytics.sessions(&scope, after, limit + 1).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = has_more
        .then(|| rows.last().map(|r| encode_cursor(r.key())))
        .flatten();
    Ok(axum::Json(json!({
        "data": rows.iter().map(item).collect::<Vec<_>>(),
        "pagination": { "limit": limit, "next_cursor": next, "has_more": has_more },
    }))
    .into_response())
}

/// `GET /api/websites/{id}/sessions/{session_id}`
pub async fn one(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, session_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = website(&s, &caller, &id).await?;
    let missing = || ApiError::not_found(format!("no session with id {session_id:?}"));
    let session = parse_hex_id(&session_id).ok_or_else(missing)?;
    let (summary, mut events) = s
        .analytics
        .session(&site.id, session, MAX_SESSION_EVENTS + 1)
        .await?
        .ok_or_else(missing)?;
    let truncated = events.len() > MAX_SESSION_EVENTS as usize;
    events.truncate(MAX_SESSION_EVENTS as usize);
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "id": uuid::Uuid::from_u128(e.event_id).to_string(),
                "event_type": e.event_type,
                "url": e.page,
                "event_name": e.event_name,
                "event_data": e.event_data,
                "created_at": instant(e.ts_ms),
            })
        })
        .collect();
    Ok(
        data(json!({ "session": item(&summary), "events": events, "truncated": truncated }))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let k = SessionKey {
            last_ms: 1_764_000_000_123,
            session: 0xfeed_beef,
        };
        assert_eq!(encode_cursor(k), "1764000000123.00000000feedbeef");
        assert_eq!(decode_cursor(&encode_cursor(k)), Some(k));
        for bad in ["", "1.2", "x.00000000feedbeef", "17.00000000feedbeeg", "17"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_sixteen_hex_digits() {
        assert_eq!(hex_id(255), "00000000000000ff");
        assert_eq!(parse_hex_id("00000000000000ff"), Some(255));
        assert_eq!(parse_hex_id("ff"), None);
        assert_eq!(parse_hex_id("+000000000000000"), None);
    }
}
