//! The write side over HTTP: `POST /api/collect`, first-run setup, websites and API keys.
//! Every write is an event appended to the log; a request is answered only after its append is
//! durable (and, for entity commands, projected, so the caller can read its own write).

mod collect;
mod commands;
mod edge;
mod ratelimit;

use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use axum::Router;
use dashmap::DashMap;
use eventlog::EventLog;
use ipnet::IpNet;
use projections::MetadataReader;
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::Auth;

pub use edge::{GeoDb, GeoInfo};
pub use ratelimit::CollectLimiter;

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Topic for raw collected events.
    pub raw_topic: String,
    /// Topic for entity events.
    pub entities_topic: String,
    /// Collect requests per IP per minute; 0 turns the limit off.
    pub collect_rate_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Oldest event `timestamp` accepted.
    pub max_event_age: Duration,
    /// How far in the future a `timestamp` may be (clock skew).
    pub max_clock_skew: Duration,
    /// How long a command waits for its own event to be projected.
    pub projection_wait: Duration,
}

impl IngestConfig {
    pub fn new(raw_topic: String, entities_topic: String) -> Self {
        Self {
            raw_topic,
            entities_topic,
            collect_rate_per_minute: 60,
            trusted_proxies: Vec::new(),
            max_event_age: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(60),
            projection_wait: Duration::from_secs(10),
        }
    }
}

/// Everything the ingest handlers share.
pub struct IngestState {
    pub log: Arc<dyn EventLog>,
    pub metadata: Arc<dyn MetadataReader>,
    pub auth: Arc<Auth>,
    pub geo: Option<GeoDb>,
    pub visitor_secret: String,
    pub limiter: Option<CollectLimiter>,
    pub cfg: IngestConfig,
    /// Websites known to exist, with when that was last confirmed.
    known_sites: DashMap<String, Instant>,
    setup_lock: tokio::sync::Mutex<()>,
    idempotency: Arc<web::IdempotencyCache>,
}

impl IngestState {
    pub fn new(
        log: Arc<dyn EventLog>,
        metadata: Arc<dyn MetadataReader>,
        auth: Arc<Auth>,
        geo: Option<GeoDb>,
        visitor_secret: String,
        cfg: IngestConfig,
    ) -> Self {
        let limiter = CollectLimiter::new(cfg.collect_rate_per_minute);
        Self {
            log,
            metadata,
            auth,
            geo,
            visitor_secret,
            limiter,
            cfg,
            known_sites: DashMap::new(),
            setup_lock: tokio::sync::Mutex::new(()),
            idempotency: Arc::new(web::IdempotencyCache::new()),
        }
    }
}

/// The ingest routes.
pub fn router(state: Arc<IngestState>) -> Router {
    // Layers run outside in: auth first (so replays are scoped to the caller), then
    // idempotency, then the handler.
    let idempotent = from_fn_with_state(state.idempotency.clone(), web::idempotency_layer);
    let protected = Router::new()
        .route(
            "/api/websites",
            post(commands::create_website).get(commands::list_websites),
        )
        .route(
            "/api/websites/{id}",
            get(commands::get_website)
                .put(commands::update_website)
                .delete(commands::delete_website),
        )
        .route(
            "/api/auth/keys",
            post(commands::create_key).get(commands::list_keys),
        )
        .route("/api/auth/keys/{id}", delete(commands::delete_key))
        .route_layer(idempotent.clone())
        .route_layer(from_fn_with_state(state.auth.clone(), web::require_api_key));
    let public = Router::new()
        .route("/api/collect", post(collect::collect))
        .route("/api/auth/setup", post(commands::setup))
        .route_layer(idempotent);
    public.merge(protected).with_state(state)
}
