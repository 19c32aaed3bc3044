//! The built-in dashboard, `GET /` (also `/dashboard`): one page, compiled into the binary
//! (`assets/dashboard.html`), that signs in with the session cookie and reads the same routes
//! API clients use. Its state (site, dates, filters) lives in the URL, so a view can be shared.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("../assets/dashboard.html");

/// `GET /`
pub async fn page() -> Response {
    let mut resp = Html(PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
