//! The read side over HTTP: dashboard queries (stats, pageviews time series, metrics
//! breakdowns, realtime, sessions, custom events) with route and parameter names compatible with Sparklytics clients.

mod attribution;
mod compare;
mod conversions;
mod dashboard;
mod events;
mod export;
mod params;
mod paths;
mod period;
mod reports;
mod routes;
mod sessions;
mod share;

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

type Routes = Vec<(&'static str, axum::routing::MethodRouter<Arc<ApiState>>)>;

/// Every dashboard route, as (path, handlers): the router is built from this table and
/// [`paths`] lists it, so a test can walk every route.
fn routes() -> Routes {
    vec![
        ("/api/websites/{id}/stats", get(routes::stats)),
        ("/api/websites/{id}/pageviews", get(routes::pageviews)),
        ("/api/websites/{id}/metrics", get(routes::metrics)),
        ("/api/websites/{id}/realtime", get(routes::realtime)),
        ("/api/websites/{id}/sessions", get(sessions::list)),
        ("/api/websites/{id}/events", get(events::names)),
        ("/api/websites/{id}/journey", get(paths::journey)),
        (
            "/api/websites/{id}/reports/preview",
            axum::routing::post(reports::preview),
        ),
        (
            "/api/websites/{id}/reports/{object_id}/run",
            get(reports::run_saved).post(reports::run_saved),
        ),
        (
            "/api/websites/{id}/attribution",
            get(attribution::attribution),
        ),
        (
            "/api/websites/{id}/revenue/summary",
            get(attribution::revenue_summary),
        ),
        ("/api/websites/{id}/export", get(export::export)),
        ("/api/websites/{id}/retention", get(paths::retention)),
        (
            "/api/websites/{id}/goals/{object_id}/stats",
            get(conversions::goal_stats),
        ),
        (
            "/api/websites/{id}/funnels/{object_id}/results",
            get(conversions::funnel_results),
        ),
        (
            "/api/websites/{id}/links/{object_id}/stats",
            get(conversions::link_stats),
        ),
        (
            "/api/websites/{id}/pixels/{object_id}/stats",
            get(conversions::pixel_stats),
        ),
        (
            "/api/websites/{id}/events/properties",
            get(events::properties),
        ),
        (
            "/api/websites/{id}/events/timeseries",
            get(events::timeseries),
        ),
        (
            "/api/websites/{id}/sessions/{session_id}",
            get(sessions::one),
        ),
        // The rest of the contract's website routes (sessions, goals, funnels, …).
        (
            "/api/websites/{id}/{*rest}",
            axum::routing::any(routes::not_built),
        ),
    ]
}

/// The paths of every dashboard route.
pub fn paths() -> Vec<String> {
    routes().into_iter().map(|(p, _)| p.to_string()).collect()
}

/// The dashboard routes (all need an API key), a shared dashboard's public reads, and the
/// built-in dashboard page.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .route_layer(from_fn_with_state(state.auth.clone(), web::require_api_key));
    let shared = Router::new()
        .route("/api/share/{share_id}/overview", get(share::overview))
        .route("/api/share/{share_id}/stats", get(share::stats))
        .route("/api/share/{share_id}/pageviews", get(share::pageviews))
        .route("/api/share/{share_id}/metrics", get(share::metrics))
        .route("/", get(dashboard::page))
        .route("/dashboard", get(dashboard::page));
    protected.merge(shared).with_state(state)
}
