//! The single place where failures become HTTP responses: `{"error": {"code", "message",
//! "field", "details"?, "request_id"}}` with the right status. Client mistakes are 4xx; only Tally's own
//! faults are 5xx, and their details are logged, not sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }
    /// A bad value of `field` (also in `details.field`).
    pub fn bad_request_on(field: &str, msg: impl Into<String>) -> Self {
        Self::bad_request(msg).with_field(field)
    }
    /// Names the field at fault in `details.field`.
    pub fn with_field(self, field: &str) -> Self {
        self.with_details(serde_json::json!({ "field": field }))
    }
    pub fn batch_too_large(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "batch_too_large", msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    /// A unique value is taken; `field` names it (also in `details.field`).
    pub fn conflict_on(field: &str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", msg)
            .with_details(serde_json::json!({ "field": field }))
    }
    pub fn not_implemented(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", msg)
    }
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", msg)
    }
    pub fn payload_too_large(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate limit exceeded for this IP address",
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }
    /// The write could not be made durable; the client should retry.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", msg);
        e.retry_after_secs = Some(1);
        e
    }
    /// The write is durable but its projection did not catch up in time.
    pub fn projection_timeout() -> Self {
        let mut e = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "projection_timeout",
            "the change was recorded but is not visible yet; retry the read shortly",
        );
        e.retry_after_secs = Some(1);
        e
    }
    /// Tally's own fault. The cause is logged; the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "internal server error",
        )
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    /// The bad field or parameter this error is about, if any.
    pub fn field(&self) -> Option<String> {
        self.details
            .as_ref()
            .and_then(|d| d.get("field").or_else(|| d.get("parameter")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl From<projections::StoreError> for ApiError {
    fn from(e: projections::StoreError) -> Self {
        match e {
            projections::StoreError::Invalid(msg) => ApiError::bad_request(msg),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::unavailable("storage is temporarily unavailable")
            }
        }
    }
}

impl From<sources::model::SourceError> for ApiError {
    /// A seller's database failing is not Tally's fault and not the caller's: `502`, or `504`
    /// for a timeout; a refused destination or bad credentials shape is the caller's (`4xx`).
    fn from(e: sources::model::SourceError) -> Self {
        use sources::model::SourceError as E;
        match e {
            E::Guard(g @ sources::GuardError::Resolve { .. }) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "source_error", g.to_string())
            }
            E::Guard(g) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "destination_not_allowed",
                g.to_string(),
            ),
            E::Invalid(msg) => ApiError::bad_request(msg),
            E::Connect(msg) | E::Query(msg) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "source_error", msg)
            }
            E::Timeout(t) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "source_timeout",
                format!("the source did not answer within {} ms", t.as_millis()),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("tally_http_errors_total", "code" => self.code).increment(1);
        // `field` names the bad field or parameter (null when the error is not about one), as
        // the peer's clients read it; `details` keeps the longer story.
        let field = self.field();
        let mut error = json!({ "code": self.code, "message": self.message, "field": field });
        if let Some(d) = self.details {
            error["details"] = d;
        }
        if let Some(id) = crate::current_request_id() {
            error["request_id"] = Value::String(id);
        }
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
