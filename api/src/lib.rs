//! The read side over HTTP: dashboard queries (stats, pageviews time series, metrics
//! breakdowns, realtime) with route and parameter names compatible with Sparklytics clients.

mod params;
mod period;
mod routes;

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use projections::{AnalyticsReader, MetadataReader};
use std::sync::Arc;
use web::Auth;

pub use period::{offset_segments, Period};

/// What the read handlers share.
pub struct ApiState {
    pub analytics: Arc<dyn AnalyticsReader>,
    pub metadata: Arc<dyn MetadataReader>,
    pub auth: Arc<Auth>,
}

/// The dashboard routes (all need an API key).
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/websites/{id}/stats", get(routes::stats))
        .route("/api/websites/{id}/pageviews", get(routes::pageviews))
        .route("/api/websites/{id}/metrics", get(routes::metrics))
        .route("/api/websites/{id}/realtime", get(routes::realtime))
        .route_layer(from_fn_with_state(state.auth.clone(), web::require_api_key))
        .with_state(state)
}
