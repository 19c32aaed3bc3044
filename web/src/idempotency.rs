//! `Idempotency-Key` on mutating endpoints: a retried request with the same key (and the same
//! body) gets the first response again instead of being applied twice; the same key with a
//! different body is refused; a request still in flight under the key gives 409.
//! Only 2xx responses are remembered (an error may be retried). Entries live 24 hours in this
//! process; a multi-node deployment needs the shared store that comes with the Postgres backend.

use crate::{ApiError, Caller};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_ENTRIES: usize = 100_000;
const MAX_BODY: usize = 256 * 1024;

enum Slot {
    InFlight {
        body_hash: [u8; 32],
    },
    Done {
        body_hash: [u8; 32],
        status: StatusCode,
        body: Bytes,
        at: Instant,
    },
}

/// Remembered responses by scoped key.
#[derive(Default)]
pub struct IdempotencyCache {
    slots: DashMap<String, Slot>,
}

impl IdempotencyCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn make_room(&self) {
        if self.slots.len() < MAX_ENTRIES {
            return;
        }
        self.slots.retain(|_, s| {
            matches!(s, Slot::Done { at, .. } if at.elapsed() < TTL)
                || matches!(s, Slot::InFlight { .. })
        });
    }
}

fn valid_key(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Middleware for mutating routes. Without the header it does nothing.
pub async fn idempotency_layer(
    State(cache): State<Arc<IdempotencyCache>>,
    req: Request,
    next: Next,
) -> Response {
    let reads_only =
        req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    let Some(header) = req.headers().get("idempotency-key").filter(|_| !reads_only) else {
        return next.run(req).await;
    };
    let Some(key) = valid_key(header) else {
        return ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
            .into_response();
    };
    let caller = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.user_id.clone())
        .unwrap_or_default();
    let scoped = format!("{}|{}|{}|{key}", req.method(), req.uri().path(), caller);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::payload_too_large("request body too large").into_response();
    };
    let body_hash: [u8; 32] = Sha256::digest(&bytes).into();

    cache.make_room();
    match cache.slots.entry(scoped.clone()) {
        Entry::Occupied(mut e) => match e.get() {
            Slot::Done { body_hash: h, .. } if *h != body_hash => {
                return reused();
            }
            Slot::Done {
                status, body, at, ..
            } if at.elapsed() < TTL => {
                let mut resp = (*status, body.clone()).into_response();
                resp.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return resp;
            }
            Slot::Done { .. } => {
                e.insert(Slot::InFlight { body_hash });
            }
            Slot::InFlight { body_hash: h } if *h != body_hash => return reused(),
            Slot::InFlight { .. } => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "a request with this Idempotency-Key is still in progress",
                )
                .into_response();
            }
        },
        Entry::Vacant(e) => {
            e.insert(Slot::InFlight { body_hash });
        }
    }

    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !resp.status().is_success() {
        cache.slots.remove(&scoped);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        cache.slots.remove(&scoped);
        return ApiError::internal("response too large to remember").into_response();
    };
    cache.slots.insert(
        scoped,
        Slot::Done {
            body_hash,
            status: parts.status,
            body: body.clone(),
            at: Instant::now(),
        },
    );
    Response::from_parts(parts, Body::from(body))
}

fn reused() -> Response {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request body",
    )
    .into_response()
}
