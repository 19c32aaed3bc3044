//! HTTP plumbing shared by the write side (`ingest`) and the read side (`api`): the one error
//! type and its mapping to HTTP responses, request ids, API-key authentication, and the JSON
//! envelope helpers. Both HTTP crates use it so every error looks the same.

pub mod audit;
mod auth;
mod error;
mod idempotency;
mod request_id;
pub mod roles;
pub mod site;

pub use auth::{
    cookie, hash_key, mask_key, optional_api_key, owns_website, require_api_key, same_origin, Auth,
    Caller, SESSION_COOKIE,
};
pub use error::{ApiError, ApiResult};
pub use idempotency::{idempotency_layer, IdempotencyCache};
pub use request_id::{current_request_id, request_id_layer};

use serde::{Deserialize, Serialize};

/// `{"data": …}`
pub fn data<T: Serialize>(value: T) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "data": value }))
}

/// `{"data": […], "pagination": {…}}`
pub fn page<T: Serialize>(
    rows: T,
    total: u64,
    limit: u64,
    offset: u64,
    returned: usize,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "data": rows,
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + (returned as u64) < total,
        }
    }))
}

/// The marketplace envelope (Spartera clients require `message` and `data`):
/// `{"message", "data", "meta": {"timestamp", "version"}}`.
pub fn market<T: Serialize>(message: &str, value: T) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "message": message,
        "data": value,
        "meta": market_meta(),
    }))
}

/// `201 Created` with the marketplace envelope.
pub fn market_created<T: Serialize>(message: &str, value: T) -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::CREATED, market(message, value)).into_response()
}

/// One page of `all` in the marketplace envelope, with its pagination.
pub fn market_list<T: Serialize + Clone>(
    message: &str,
    all: &[T],
    paging: Paging,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rows = paging.slice(all);
    let n = rows.len();
    let (total, limit, offset) = (all.len() as u64, paging.limit as u64, paging.offset as u64);
    market_page(message, rows, total, limit, offset, n).into_response()
}

/// A marketplace list: the envelope with `meta.pagination`.
/// A whole list as one page (no paging: `limit` is its length).
pub fn market_all<T: Serialize>(message: &str, rows: Vec<T>) -> axum::Json<serde_json::Value> {
    let n = rows.len();
    market_page(message, rows, n as u64, n as u64, 0, n)
}

pub fn market_page<T: Serialize>(
    message: &str,
    rows: T,
    total: u64,
    limit: u64,
    offset: u64,
    returned: usize,
) -> axum::Json<serde_json::Value> {
    let mut meta = market_meta();
    meta["pagination"] = serde_json::json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + (returned as u64) < total,
    });
    axum::Json(serde_json::json!({ "message": message, "data": rows, "meta": meta }))
}

fn market_meta() -> serde_json::Value {
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// Parses a JSON request body, naming the failing field in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// 404 for routes that do not exist, in the standard error shape.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// 405 in the standard error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// For PATCH bodies: `Some(None)` when the field was sent as `null` (clear it), `None` when it
/// was absent (keep it). Use with `#[serde(default, deserialize_with = "web::patch_field")]`.
pub fn patch_field<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `limit` and `offset` of a list (`page`, 1-based, is accepted instead of `offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: usize,
    pub offset: usize,
}

impl Paging {
    /// Reads `limit` (1 to `max`, default `default`), `offset` or `page` from a query string.
    pub fn from_query(
        query: &std::collections::HashMap<String, String>,
        default: usize,
        max: usize,
    ) -> ApiResult<Paging> {
        let number = |name: &str| -> ApiResult<Option<usize>> {
            query
                .get(name)
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        ApiError::bad_request(format!("{name} must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        let limit = number("limit")?.unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {max}"
            )));
        }
        let offset = match (number("offset")?, number("page")?) {
            (Some(o), _) => o,
            (None, Some(0)) => return Err(ApiError::bad_request("page starts at 1")),
            (None, Some(p)) => (p - 1).saturating_mul(limit),
            (None, None) => 0,
        };
        Ok(Paging { limit, offset })
    }

    /// This page of `rows`.
    pub fn slice<T: Clone>(&self, rows: &[T]) -> Vec<T> {
        rows.iter()
            .skip(self.offset)
            .take(self.limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paging_reads_limit_offset_and_page() {
        let p = Paging::from_query(&q(&[]), 20, 100).expect("defaults");
        assert_eq!(
            p,
            Paging {
                limit: 20,
                offset: 0
            }
        );
        let p = Paging::from_query(&q(&[("limit", "5"), ("page", "3")]), 20, 100).expect("page");
        assert_eq!(
            p,
            Paging {
                limit: 5,
                offset: 10
            }
        );
        assert_eq!(p.slice(&(0..12).collect::<Vec<_>>()), vec![10, 11]);
        for bad in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "x"),
            ("offset", "-1"),
            ("page", "0"),
        ] {
            assert!(Paging::from_query(&q(&[bad]), 20, 100).is_err(), "{bad:?}");
        }
    }
}
