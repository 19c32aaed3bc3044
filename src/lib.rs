//! The Tally binary's library: the one place that picks implementations and wires ingest,
//! processors and the read API together. `tally serve` runs everything in one process on the
//! embedded backends.

pub mod config;

use anyhow::Context;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use eventlog::{EmbeddedLog, EventLog};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use processors::runner::RunnerConfig;
use processors::{run_stage, AnalyticsStage, EnrichStage, MetadataStage};
use projections::{AnalyticsWriter, DuckAnalytics, MetadataReader, SqliteMetadata};
use schemas::topics;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use config::Settings;

/// The open backends.
pub struct Backends {
    pub log: Arc<dyn EventLog>,
    embedded_log: EmbeddedLog,
    pub analytics: Arc<DuckAnalytics>,
    pub metadata: Arc<SqliteMetadata>,
}

impl Backends {
    /// Opens the embedded backends in the data dir and creates the topics.
    pub async fn open(s: &Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&s.data_dir)
            .with_context(|| format!("creating {}", s.data_dir.display()))?;
        let embedded_log =
            EmbeddedLog::open(&s.data_dir.join("log")).context("opening the event log")?;
        let log: Arc<dyn EventLog> = Arc::new(embedded_log.clone());
        for (name, partitions) in [
            (topics::COLLECT_RAW, s.partitions),
            (topics::COLLECT_ENRICHED, s.partitions),
            // One partition keeps entity events in a single total order.
            (topics::ENTITIES, 1),
            (topics::DLQ, 1),
        ] {
            log.create_topic(&s.topic(name), partitions).await?;
        }
        let analytics = Arc::new(
            DuckAnalytics::open(&s.data_dir.join("analytics.duckdb"), &s.duckdb_memory)
                .context("opening the analytics store")?,
        );
        let metadata = Arc::new(
            SqliteMetadata::open(&s.data_dir.join("metadata.db"))
                .await
                .context("opening the metadata store")?,
        );
        Ok(Self {
            log,
            embedded_log,
            analytics,
            metadata,
        })
    }

    pub fn close(&self) {
        self.embedded_log.close();
    }
}

fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// A running Tally: its address and how to stop it.
pub struct App {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: JoinHandle<anyhow::Result<()>>,
}

impl App {
    /// Stops accepting, finishes in-flight requests, lets processors commit, closes the log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.done.await?
    }
}

#[derive(Clone)]
struct HealthState {
    log: Arc<dyn EventLog>,
    analytics: Arc<DuckAnalytics>,
    raw: String,
    enriched: String,
}

async fn backlog(h: &HealthState) -> anyhow::Result<(u64, u64)> {
    let sum = |v: Vec<eventlog::Position>| v.iter().map(|p| p.next_offset).sum::<u64>();
    let raw_end = sum(h.log.end_offsets(&h.raw).await?);
    let raw_done = sum(h.log.committed("enrich", &h.raw).await?);
    let enriched_end = sum(h.log.end_offsets(&h.enriched).await?);
    let stored: u64 = h
        .analytics
        .offsets("analytics")
        .await?
        .iter()
        .map(|o| o.next_offset)
        .sum();
    Ok((
        raw_end.saturating_sub(raw_done),
        enriched_end.saturating_sub(stored),
    ))
}

/// `GET /api/health`: status plus the pipeline backlog (records not yet enriched / stored).
async fn health(State(h): State<HealthState>) -> axum::response::Response {
    match backlog(&h).await {
        Ok((raw, enriched)) => {
            metrics::gauge!("tally_backlog_records", "stage" => "enrich").set(raw as f64);
            metrics::gauge!("tally_backlog_records", "stage" => "analytics").set(enriched as f64);
            axum::Json(serde_json::json!({
                "status": "healthy",
                "backlog": { "enrich": raw, "analytics": enriched },
            }))
            .into_response()
        }
        Err(e) => web::ApiError::unavailable(format!("unhealthy: {e}")).into_response(),
    }
}

async fn metrics_endpoint() -> axum::response::Response {
    match prometheus() {
        Some(h) => h.render().into_response(),
        None => web::ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "metrics recorder unavailable",
        )
        .into_response(),
    }
}

async fn count_requests(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!("tally_http_requests_total", "status" => class).increment(1);
    metrics::histogram!("tally_http_request_seconds").record(started.elapsed().as_secs_f64());
    resp
}

/// Route prefixes of parts that are planned but not built: they answer `501 not_implemented`
/// rather than pretending with a 404 or fake data.
const NOT_BUILT: &[&str] = &[
    "/api/auth/login",
    "/api/companies",
    "/api/users",
    "/api/connections",
    "/api/assets",
    "/api/credits",
    "/api/favorites",
    "/api/alerts",
    "/api/seller",
    "/api/reports",
    "/api/datasets",
    "/api/predictions",
    "/api/workspace",
];

async fn not_built(req: axum::extract::Request) -> web::ApiError {
    web::ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!(
            "{} is not built yet in this version of Tally",
            req.uri().path()
        ),
    )
}

fn not_built_routes() -> Router {
    NOT_BUILT.iter().fold(Router::new(), |r, prefix| {
        r.route(prefix, axum::routing::any(not_built)).route(
            &format!("{prefix}/{{*rest}}"),
            axum::routing::any(not_built),
        )
    })
}

fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ]);
    if origins.is_empty() {
        return layer.allow_origin(Any);
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    layer.allow_origin(AllowOrigin::list(list))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Deletes events past retention from the store and the log, hourly.
fn spawn_retention(b: &Backends, s: &Settings, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let (log, analytics) = (b.log.clone(), b.analytics.clone());
    let topics = [
        s.topic(topics::COLLECT_RAW),
        s.topic(topics::COLLECT_ENRICHED),
    ];
    let keep_ms = s.retention_days as i64 * 86_400_000;
    tokio::spawn(async move {
        loop {
            let cutoff = now_ms() - keep_ms;
            match analytics.delete_before(cutoff).await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "retention: events deleted from the store")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention on the store failed"),
            }
            for t in &topics {
                if let Err(e) = log.delete_before(t, cutoff).await {
                    tracing::warn!(error = %e, topic = %t, "retention on the log failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// Starts everything: backends, processors, HTTP. Returns once listening.
pub async fn start(s: Settings) -> anyhow::Result<App> {
    let proxies = s.trusted_proxy_nets()?;
    let b = Backends::open(&s).await?;
    let _ = prometheus();
    // HTTP stops first; the stages get their own signal once it has drained.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stages_stop_tx, stages_stop_rx) = watch::channel(false);

    let metadata_reader: Arc<dyn MetadataReader> = b.metadata.clone();
    let secret = b
        .metadata
        .setting_or_init("visitor_secret", &random_secret())
        .await?;
    let geo = match &s.geoip_path {
        Some(p) => ingest::GeoDb::open(p),
        None => {
            tracing::info!("TALLY_GEOIP_PATH not set; geo fields will be null");
            None
        }
    };
    let auth = Arc::new(web::Auth::new(metadata_reader.clone()));
    let mut icfg =
        ingest::IngestConfig::new(s.topic(topics::COLLECT_RAW), s.topic(topics::ENTITIES));
    icfg.collect_rate_per_minute = s.collect_rate_limit;
    icfg.trusted_proxies = proxies;
    icfg.max_event_age = Duration::from_secs(s.max_event_age_hours * 3600);
    let ingest_state = Arc::new(ingest::IngestState::new(
        b.log.clone(),
        metadata_reader.clone(),
        auth.clone(),
        geo,
        secret,
        icfg,
    ));
    let api_state = Arc::new(api::ApiState {
        analytics: b.analytics.clone(),
        metadata: metadata_reader,
        auth,
    });
    let health_state = HealthState {
        log: b.log.clone(),
        analytics: b.analytics.clone(),
        raw: s.topic(topics::COLLECT_RAW),
        enriched: s.topic(topics::COLLECT_ENRICHED),
    };

    let runner = |batch: usize, linger_ms: u64| RunnerConfig {
        max_batch: batch,
        poll_timeout: Duration::from_millis(100),
        linger: Duration::from_millis(linger_ms),
        dlq_topic: s.topic(topics::DLQ),
    };
    let mut stages: Vec<JoinHandle<Result<(), processors::StageError>>> = Vec::new();
    let meta_stage = MetadataStage::new(b.metadata.clone(), s.topic(topics::ENTITIES));
    stages.push(tokio::spawn(run_stage(
        b.log.clone(),
        meta_stage,
        runner(1000, 0),
        stages_stop_rx.clone(),
    )));
    let enrich = EnrichStage::new(
        b.log.clone(),
        s.topic(topics::COLLECT_RAW),
        s.topic(topics::COLLECT_ENRICHED),
    );
    stages.push(tokio::spawn(run_stage(
        b.log.clone(),
        enrich,
        runner(2_000, 10),
        stages_stop_rx.clone(),
    )));
    let analytics =
        AnalyticsStage::new(b.analytics.clone(), s.topic(topics::COLLECT_ENRICHED)).await?;
    stages.push(tokio::spawn(run_stage(
        b.log.clone(),
        analytics,
        runner(50_000, 200),
        stages_stop_rx.clone(),
    )));
    let retention = spawn_retention(&b, &s, stop_rx.clone());
    if let Some(limiter) = ingest_state.limiter.clone() {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limiter.forget_idle(),
                    _ = stop.changed() => return,
                }
            }
        });
    }

    let app = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .merge(
            Router::new()
                .route("/api/health", get(health))
                .with_state(health_state),
        )
        .merge(ingest::router(ingest_state))
        .merge(api::router(api_state))
        .merge(not_built_routes())
        .fallback(web::not_found_fallback)
        .method_not_allowed_fallback(web::method_not_allowed)
        .layer(axum::middleware::from_fn(web::request_id_layer))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(cors(&s.cors_origin_list()));

    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %s.data_dir.display(), "tally listening");
    let mut stop_http = stop_rx.clone();
    let done = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_http.changed().await;
        })
        .await;
        // HTTP has drained; now let each stage finish and commit its batch in hand.
        let _ = stages_stop_tx.send(true);
        for stage in stages {
            match stage.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "stage failed"),
                Err(e) => tracing::error!(error = %e, "stage panicked"),
            }
        }
        retention.abort();
        b.close();
        tracing::info!("tally stopped");
        served.map_err(anyhow::Error::from)
    });
    Ok(App {
        addr,
        stop: stop_tx,
        done,
    })
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resets a stage's progress so it re-reads its topic from the start (the stores deduplicate,
/// so counts do not change). Run while Tally is stopped.
pub async fn rewind(s: &Settings, stage: &str) -> anyhow::Result<()> {
    let b = Backends::open(s).await?;
    let topic = match stage {
        "enrich" => s.topic(topics::COLLECT_RAW),
        "analytics" => {
            b.analytics.reset_offsets("analytics").await?;
            s.topic(topics::COLLECT_ENRICHED)
        }
        other => anyhow::bail!("unknown stage {other:?}; one of enrich, analytics"),
    };
    let zero: Vec<eventlog::Position> = b
        .log
        .end_offsets(&topic)
        .await?
        .into_iter()
        .map(|p| eventlog::Position {
            next_offset: 0,
            ..p
        })
        .collect();
    let mut consumer = b.log.consumer(stage, std::slice::from_ref(&topic)).await?;
    consumer.commit(&zero).await?;
    drop(consumer);
    b.close();
    Ok(())
}
