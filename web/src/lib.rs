//! HTTP plumbing shared by the write side (`ingest`) and the read side (`api`): the one error
//! type and its mapping to HTTP responses, request ids, API-key authentication, and the JSON
//! envelope helpers. Both HTTP crates use it so every error looks the same.

mod auth;
mod error;
mod idempotency;
mod request_id;

pub use auth::{hash_key, mask_key, require_api_key, Auth, Caller};
pub use error::{ApiError, ApiResult};
pub use idempotency::{idempotency_layer, IdempotencyCache};
pub use request_id::{current_request_id, request_id_layer};

use serde::Serialize;

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
