//! The Tally binary's library: the one place that picks implementations and wires ingest,
//! processors and the read API together. `tally serve` runs every role in one process (on the
//! embedded backends unless URLs say otherwise); `tally ingest|process|api` run one role each.

pub mod backends;
pub mod config;
pub mod notifier;
pub mod outbox;
pub mod sourcing;

use anyhow::Context;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use eventlog::EventLog;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use processors::alerting::{AlertsStage, ALERTS};
use processors::metering::{MeteringStage, METERING};
use processors::runner::RunnerConfig;
use processors::{run_stage, AnalyticsStage, EnrichStage, MetadataStage};
use projections::MetadataReader;
use schemas::topics;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use backends::{AnalyticsStore, Backends, MetadataStore};
pub use config::Settings;

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
    analytics: Arc<dyn AnalyticsStore>,
    raw: String,
    enriched: String,
    enrich_group: String,
    /// The usage topics (live and test) and the money store whose outbox feeds the live one.
    usage: Vec<String>,
    money: Arc<dyn projections::MoneyStore>,
}

/// Records on `topics` past what the store keeps as `consumer`'s offsets.
async fn unread(
    log: &dyn EventLog,
    store: &dyn AnalyticsStore,
    consumer: &str,
    topics: &[String],
) -> anyhow::Result<u64> {
    let stored = store.offsets(consumer).await?;
    let mut behind = 0;
    for topic in topics {
        for end in log.end_offsets(topic).await? {
            let read = stored
                .iter()
                .find(|o| &o.topic == topic && o.partition == end.partition)
                .map_or(0, |o| o.next_offset);
            behind += end.next_offset.saturating_sub(read);
        }
    }
    Ok(behind)
}

/// The money path's backlog: committed records the outbox relay has not published yet, and
/// usage records the metering stage has not stored yet.
async fn money_backlog(h: &HealthState) -> anyhow::Result<(u64, u64)> {
    let outbox = h.money.unpublished_count().await?;
    let metering = unread(h.log.as_ref(), h.analytics.as_ref(), METERING, &h.usage).await?;
    Ok((outbox, metering))
}

async fn backlog(h: &HealthState) -> anyhow::Result<(u64, u64)> {
    let sum = |v: Vec<eventlog::Position>| v.iter().map(|p| p.next_offset).sum::<u64>();
    let raw_end = sum(h.log.end_offsets(&h.raw).await?);
    let raw_done = sum(h.log.committed(&h.enrich_group, &h.raw).await?);
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
    let backlogs = async { Ok::<_, anyhow::Error>((backlog(&h).await?, money_backlog(&h).await?)) };
    match backlogs.await {
        Ok(((raw, enriched), (outbox, metering))) => {
            metrics::gauge!("tally_backlog_records", "stage" => "enrich").set(raw as f64);
            metrics::gauge!("tally_backlog_records", "stage" => "analytics").set(enriched as f64);
            metrics::gauge!("tally_backlog_records", "stage" => "outbox").set(outbox as f64);
            metrics::gauge!("tally_backlog_records", "stage" => "metering").set(metering as f64);
            axum::Json(serde_json::json!({
                "status": "healthy",
                "backlog": { "enrich": raw, "analytics": enriched, "outbox": outbox, "metering": metering },
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
/// (The marketplace's own unbuilt routes are listed in `ingest`, behind authentication.)
const NOT_BUILT: &[&str] = &[
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

/// Collect's CORS: any origin, any request header (the tracker runs on customers' sites and
/// sends no credentials).
fn open_cors() -> CorsLayer {
    use axum::http::Method;
    CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .allow_origin(Any)
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

/// A processing stage a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageName {
    Metadata,
    Enrich,
    Analytics,
    Metering,
    Alerts,
}

impl StageName {
    pub const ALL: [StageName; 5] = [
        StageName::Metadata,
        StageName::Enrich,
        StageName::Analytics,
        StageName::Metering,
        StageName::Alerts,
    ];

    pub fn parse(s: &str) -> anyhow::Result<StageName> {
        match s {
            "metadata" => Ok(StageName::Metadata),
            "enrich" => Ok(StageName::Enrich),
            "analytics" => Ok(StageName::Analytics),
            "metering" => Ok(StageName::Metering),
            "alerts" => Ok(StageName::Alerts),
            other => anyhow::bail!(
                "unknown stage {other:?}; one of metadata, enrich, analytics, metering, alerts"
            ),
        }
    }
}

/// What one process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// The command name, for messages (`serve`, `ingest`, `process`, `api`).
    pub name: &'static str,
    pub ingest: bool,
    pub api: bool,
    pub stages: Vec<StageName>,
}

impl Roles {
    /// Everything in one process (`tally serve`).
    pub fn all() -> Roles {
        Roles {
            name: "serve",
            ingest: true,
            api: true,
            stages: StageName::ALL.to_vec(),
        }
    }

    pub fn ingest() -> Roles {
        Roles {
            name: "ingest",
            ingest: true,
            api: false,
            stages: Vec::new(),
        }
    }

    pub fn api() -> Roles {
        Roles {
            name: "api",
            ingest: false,
            api: true,
            stages: Vec::new(),
        }
    }

    /// Processing stages; `only` empty means all of them.
    pub fn process(only: &[String]) -> anyhow::Result<Roles> {
        let stages = if only.is_empty() {
            StageName::ALL.to_vec()
        } else {
            only.iter()
                .map(|s| StageName::parse(s))
                .collect::<anyhow::Result<_>>()?
        };
        Ok(Roles {
            name: "process",
            ingest: false,
            api: false,
            stages,
        })
    }
}

/// Starts every role in one process. Returns once listening.
pub async fn start(s: Settings) -> anyhow::Result<App> {
    start_roles(s, Roles::all()).await
}

/// Starts the given roles: backends, processors, HTTP (health and metrics always; collect and
/// commands with ingest; dashboards with api). Returns once listening.
pub async fn start_roles(s: Settings, roles: Roles) -> anyhow::Result<App> {
    let proxies = s.trusted_proxy_nets()?;
    if roles != Roles::all() {
        backends::Plan::from_settings(&s)?.check_split_role(roles.name)?;
    }
    let b = Backends::open(&s).await?;
    let _ = prometheus();
    // HTTP stops first; the stages get their own signal once it has drained.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stages_stop_tx, stages_stop_rx) = watch::channel(false);

    let metadata_reader: Arc<dyn MetadataReader> = b.metadata.clone();
    let audit_store: Arc<dyn projections::AuditStore> = b.metadata.clone();
    let (audit, _audit_writer) = web::audit::AuditSink::spawn(audit_store);
    let auth = Arc::new(
        web::Auth::new(metadata_reader.clone())
            .with_sessions(b.metadata.clone())
            .with_audit(audit),
    );
    let mut app = Router::new();
    let mut collect = Router::new();
    let mut registry = None;
    if roles.ingest {
        let state = ingest_state(&s, roles.name, &b, auth.clone(), proxies, &stop_rx).await?;
        registry = state.sources.clone();
        collect = ingest::collect_router(state.clone());
        app = app.merge(ingest::router(state));
    }
    if roles.api {
        app = app.merge(api::router(Arc::new(api::ApiState {
            analytics: b.analytics.clone(),
            metadata: metadata_reader,
            auth,
        })));
    }
    let health_state = HealthState {
        log: b.log.clone(),
        analytics: b.analytics.clone(),
        raw: s.topic(topics::COLLECT_RAW),
        enriched: s.topic(topics::COLLECT_ENRICHED),
        enrich_group: s.group("enrich"),
        usage: vec![s.topic(topics::USAGE), s.topic(topics::USAGE_TEST)],
        money: b.money.clone(),
    };
    let sole_member = roles.name == "serve";
    let stages = spawn_stages(&s, &b, &roles.stages, sole_member, &stages_stop_rx).await?;
    let retention = (roles.stages.contains(&StageName::Analytics))
        .then(|| spawn_retention(&b, &s, stop_rx.clone()));
    // The relay stops with the stages (after HTTP has drained), so every committed movement
    // of the last requests is published.
    let money: Arc<dyn projections::MoneyStore> = b.metadata.clone();
    let money_tasks = roles.ingest.then(|| {
        [
            outbox::spawn_relay(
                money.clone(),
                b.log.clone(),
                outbox::RelayConfig {
                    namespace: s.namespace.clone(),
                    lease_ms: s.outbox_lease_ms as i64,
                },
                stages_stop_rx.clone(),
            ),
            outbox::spawn_sweeper(
                money.clone(),
                Duration::from_millis(s.execution_timeout_ms),
                stages_stop_rx.clone(),
            ),
        ]
        .into_iter()
        .chain(registry.map(|registry| {
            notifier::spawn_notifier(
                b.metadata.clone(),
                b.metadata.clone(),
                registry,
                notifier::NotifierConfig {
                    retry_base_ms: s.webhook_retry_base_ms,
                    give_up_ms: (s.webhook_give_up_secs * 1000) as i64,
                },
                stages_stop_rx.clone(),
            )
        }))
        .collect::<Vec<_>>()
    });

    let app = app
        .route("/metrics", get(metrics_endpoint))
        .merge(
            Router::new()
                .route("/api/health", get(health))
                // Where the peer serves it.
                .route("/health", get(health))
                .with_state(health_state),
        )
        .merge(not_built_routes())
        // Each part's 405 is set before its CORS layer: set later, it would replace the
        // layered fallback that answers preflights.
        .method_not_allowed_fallback(web::method_not_allowed)
        .layer(cors(&s.cors_origin_list()))
        .merge(
            collect
                .method_not_allowed_fallback(web::method_not_allowed)
                .layer(open_cors()),
        )
        .fallback(web::not_found_fallback)
        .layer(axum::middleware::from_fn(web::request_id_layer))
        .layer(axum::middleware::from_fn(count_requests));

    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, role = roles.name, namespace = %s.namespace, "tally listening");
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
        if let Some(r) = retention {
            r.abort();
        }
        for task in money_tasks.into_iter().flatten() {
            let _ = task.await;
        }
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

/// The collect and command side: visitor-id secret (shared through the metadata store),
/// GeoIP, limits, and the idle-limiter sweeper.
async fn ingest_state(
    s: &Settings,
    role: &str,
    b: &Backends,
    auth: Arc<web::Auth>,
    proxies: Vec<ipnet::IpNet>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<ingest::IngestState>> {
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
    let mut icfg =
        ingest::IngestConfig::new(s.topic(topics::COLLECT_RAW), s.topic(topics::ENTITIES));
    icfg.test_usage_topic = s.topic(topics::USAGE_TEST);
    icfg.collect_rate_per_minute = s.collect_rate_limit;
    icfg.auth_per_hour = s.auth_requests_per_hour;
    icfg.market_per_hour = s.market_requests_per_hour;
    icfg.trusted_proxies = proxies;
    icfg.max_event_age = Duration::from_secs(s.max_event_age_hours * 3600);
    icfg.vendor_share_bp = (s.vendor_share * 10_000.0).round() as i32;
    icfg.credits_per_usd = s.credits_per_usd;
    icfg.clock_offset_ms = s.clock_offset_ms;
    icfg.result_cache = Duration::from_secs(s.result_cache_secs);
    let registry = sourcing::registry(s, role).await?;
    let state = Arc::new(
        ingest::IngestState::new(b.log.clone(), b.metadata.clone(), auth, geo, secret, icfg)
            .with_sources(Arc::new(registry))
            .with_money(b.money.clone())
            .with_usage(b.analytics.clone())
            .with_limits(b.limits.clone())
            .with_sessions(b.metadata.clone())
            .with_audit(b.metadata.clone())
            .with_alerts(b.metadata.clone()),
    );
    if let Some(limiter) = state.limiter.clone() {
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limiter.forget_idle(),
                    _ = stop.changed() => return,
                }
            }
        });
    }
    Ok(state)
}

type StageHandle = JoinHandle<Result<(), processors::StageError>>;

/// `sole_member`: the stage's only consumer (`serve`, `replay`) takes its partitions directly;
/// `process` instances join the stage's group and share them.
fn runner_config(
    s: &Settings,
    stage: &str,
    sole_member: bool,
    batch: usize,
    linger_ms: u64,
) -> RunnerConfig {
    RunnerConfig {
        max_batch: batch,
        poll_timeout: Duration::from_millis(100),
        linger: Duration::from_millis(linger_ms),
        dlq_topic: s.topic(topics::DLQ),
        group: s.group(stage),
        sole_member,
    }
}

/// Spawns the chosen stages, each in its own consumer group.
async fn spawn_stages(
    s: &Settings,
    b: &Backends,
    which: &[StageName],
    sole_member: bool,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<StageHandle>> {
    let mut stages = Vec::new();
    for stage in which {
        let handle = match stage {
            StageName::Metadata => {
                rebuild_metadata_if_empty(s, b).await?;
                tokio::spawn(run_stage(
                    b.log.clone(),
                    MetadataStage::new(b.metadata.clone(), s.topic(topics::ENTITIES)),
                    runner_config(s, "metadata", sole_member, 1000, 0),
                    stop.clone(),
                ))
            }
            StageName::Enrich => tokio::spawn(run_stage(
                b.log.clone(),
                EnrichStage::new(
                    b.log.clone(),
                    s.topic(topics::COLLECT_RAW),
                    s.topic(topics::COLLECT_ENRICHED),
                ),
                runner_config(s, "enrich", sole_member, 2_000, 10),
                stop.clone(),
            )),
            StageName::Analytics => tokio::spawn(run_stage(
                b.log.clone(),
                AnalyticsStage::new(b.analytics.clone(), s.topic(topics::COLLECT_ENRICHED)).await?,
                runner_config(s, "analytics", sole_member, 50_000, 200),
                stop.clone(),
            )),
            StageName::Metering => tokio::spawn(run_stage(
                b.log.clone(),
                MeteringStage::new(
                    b.analytics.clone(),
                    vec![s.topic(topics::USAGE), s.topic(topics::USAGE_TEST)],
                ),
                runner_config(s, METERING, sole_member, 10_000, 200),
                stop.clone(),
            )),
            StageName::Alerts => tokio::spawn(run_stage(
                b.log.clone(),
                AlertsStage::new(
                    b.metadata.clone(),
                    b.metadata.clone(),
                    b.metadata.clone(),
                    (
                        s.topic(topics::USAGE),
                        s.topic(topics::BILLING),
                        s.topic(topics::ENTITIES),
                    ),
                ),
                runner_config(s, ALERTS, sole_member, 5_000, 100),
                stop.clone(),
            )),
        };
        stages.push(handle);
    }
    Ok(stages)
}

/// A metadata store that has applied nothing (new, or rebuilt by a migration) must read the
/// entities topic from the start, whatever the consumer group committed before: the store's
/// own offsets are the truth of what it holds.
async fn rebuild_metadata_if_empty(s: &Settings, b: &Backends) -> anyhow::Result<()> {
    let topic = s.topic(topics::ENTITIES);
    let applied = b.metadata.offsets("metadata").await?;
    if applied.iter().any(|o| o.topic == topic) {
        return Ok(());
    }
    let group = s.group("metadata");
    let committed: u64 = b
        .log
        .committed(&group, &topic)
        .await?
        .iter()
        .map(|p| p.next_offset)
        .sum();
    if committed > 0 {
        tracing::info!(%group, "metadata store is empty: re-reading the entities topic from the start");
        reset_group(b, &group, std::slice::from_ref(&topic)).await?;
    }
    Ok(())
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets `group`'s committed offsets on every partition of `topic` back to 0.
async fn reset_group(b: &Backends, group: &str, topics: &[String]) -> anyhow::Result<()> {
    let mut zero: Vec<eventlog::Position> = Vec::new();
    for topic in topics {
        zero.extend(
            b.log
                .end_offsets(topic)
                .await?
                .into_iter()
                .map(|p| eventlog::Position {
                    next_offset: 0,
                    ..p
                }),
        );
    }
    let mut consumer = b.log.sole_consumer(group, topics).await?;
    consumer.commit(&zero).await?;
    Ok(())
}

/// Resets a stage's progress so it re-reads its topic from the start (the stores deduplicate,
/// so counts do not change). Run while the stage is stopped everywhere.
pub async fn rewind(s: &Settings, stage: &str) -> anyhow::Result<()> {
    let b = Backends::open(s).await?;
    let topics = match StageName::parse(stage)? {
        StageName::Enrich => vec![s.topic(topics::COLLECT_RAW)],
        StageName::Analytics => {
            b.analytics.reset_offsets("analytics").await?;
            vec![s.topic(topics::COLLECT_ENRICHED)]
        }
        StageName::Metering => {
            b.analytics.reset_offsets(METERING).await?;
            vec![s.topic(topics::USAGE), s.topic(topics::USAGE_TEST)]
        }
        StageName::Metadata => {
            anyhow::bail!("the metadata stage keeps its offsets with its rows; nothing to rewind")
        }
        StageName::Alerts => {
            anyhow::bail!(
                "the alerts stage keeps its offsets with its firings; a rewind would fire nothing again"
            )
        }
    };
    reset_group(&b, &s.group(stage), &topics).await?;
    b.close();
    Ok(())
}

fn sum_offsets<'a>(offsets: impl IntoIterator<Item = &'a u64>) -> u64 {
    offsets.into_iter().sum()
}

/// A one-line progress bar on stderr.
fn print_progress(done: u64, total: u64) {
    use std::io::Write;
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(100) as usize;
    let bar: String = (0..40)
        .map(|i| if i * 100 < pct * 40 { '#' } else { '.' })
        .collect();
    let mut err = std::io::stderr();
    let _ = write!(err, "\r[{bar}] {pct:>3}% {done}/{total} records");
    let _ = err.flush();
}

/// Drops the analytics projection and rebuilds it from the enriched topic, with a progress
/// bar. Returns the number of records replayed. Run while the analytics stage is stopped.
pub async fn replay(s: &Settings) -> anyhow::Result<u64> {
    let b = Backends::open(s).await?;
    let topic = s.topic(topics::COLLECT_ENRICHED);
    b.analytics.truncate().await?;
    reset_group(&b, &s.group("analytics"), std::slice::from_ref(&topic)).await?;
    let ends = b.log.end_offsets(&topic).await?;
    let total = sum_offsets(ends.iter().map(|p| &p.next_offset));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stage = AnalyticsStage::new(b.analytics.clone(), topic.clone()).await?;
    let mut running = tokio::spawn(run_stage(
        b.log.clone(),
        stage,
        runner_config(s, "analytics", true, 50_000, 200),
        stop_rx,
    ));
    loop {
        let stored = b.analytics.offsets("analytics").await?;
        let done = sum_offsets(stored.iter().map(|o| &o.next_offset));
        print_progress(done, total);
        if done >= total {
            break;
        }
        tokio::select! {
            r = &mut running => {
                anyhow::bail!("the analytics stage stopped during the replay: {r:?}")
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    eprintln!();
    let _ = stop_tx.send(true);
    running.await??;
    b.close();
    Ok(total)
}

/// What `tally reconcile` found: one line per check, and whether all agree.
pub struct Reconciliation {
    pub lines: Vec<String>,
    pub ok: bool,
}

/// Compares, per company, the balance with the sum of its ledger rows, and across the system
/// the executions answered with the usage records on the log and with the ledger's debits and
/// refunds. Run it when the outbox has drained (it says how many records still wait).
pub async fn reconcile(s: &Settings) -> anyhow::Result<Reconciliation> {
    let b = Backends::open(s).await?;
    let mut lines = Vec::new();
    let mut ok = true;
    let mut check = |what: String, equal: bool| {
        ok &= equal;
        lines.push(format!("{} {what}", if equal { "ok  " } else { "DIFF" }));
    };
    for c in b.metadata.balance_checks().await? {
        check(
            format!(
                "company {}: balance {} = ledger sum {}",
                c.company_id, c.balance, c.ledger_sum
            ),
            c.balance == c.ledger_sum,
        );
    }
    let n = b.metadata.money_counts().await?;
    let pending = b.metadata.unpublished_count().await?;
    let usage_on_log: u64 = b
        .log
        .end_offsets(&s.topic(topics::USAGE))
        .await?
        .iter()
        .map(|p| p.next_offset)
        .sum();
    let billing_on_log: u64 = b
        .log
        .end_offsets(&s.topic(topics::BILLING))
        .await?
        .iter()
        .map(|p| p.next_offset)
        .sum();
    let settled = (n.executions_succeeded + n.executions_failed) as u64;
    check(
        format!("executions answered {settled} = usage records on the log {usage_on_log} (outbox records still to publish: {pending})"),
        settled == usage_on_log && pending == 0,
    );
    check(
        format!(
            "ledger entries {} = billing records on the log {billing_on_log}",
            n.ledger_entries
        ),
        n.ledger_entries as u64 == billing_on_log,
    );
    check(
        format!(
            "charged executions {} = ledger debits {}",
            n.charged, n.debits
        ),
        n.charged == n.debits,
    );
    check(
        format!(
            "failed charged executions {} = refunds {}",
            n.charged_failed, n.refunds
        ),
        n.charged_failed == n.refunds,
    );
    metered_checks(&b, s, &n, &mut check).await?;
    lines.push(format!(
        "     executions still held (running or awaiting a refund): {}",
        n.executions_held
    ));
    b.close();
    Ok(Reconciliation { lines, ok })
}

/// The metering projection against the money store: each settled execution metered once as
/// live, what buyers paid and sellers earned equal to the ledger's sums, and every test
/// execution on the log metered. Only meaningful once metering has read both usage topics to
/// their ends; a stage that is behind is a difference, with how far behind.
async fn metered_checks(
    b: &Backends,
    s: &Settings,
    n: &projections::MoneyCounts,
    check: &mut impl FnMut(String, bool),
) -> anyhow::Result<()> {
    let topics = [s.topic(topics::USAGE), s.topic(topics::USAGE_TEST)];
    let behind = unread(b.log.as_ref(), b.analytics.as_ref(), METERING, &topics).await?;
    let test_on_log: u64 = b
        .log
        .end_offsets(&topics[1])
        .await?
        .iter()
        .map(|p| p.next_offset)
        .sum();
    check(
        format!("metering has read both usage topics to their ends ({behind} records behind)"),
        behind == 0,
    );
    let t = b.analytics.usage_totals().await?;
    let settled = (n.executions_succeeded + n.executions_failed).max(0) as u64;
    check(
        format!(
            "executions answered {settled} = live executions metered {}",
            t.live_executions
        ),
        settled == t.live_executions,
    );
    check(
        format!(
            "credits paid per the ledger {} less those held {} = credits metered {}",
            n.ledger_paid, n.held_credits, t.live_credits
        ),
        n.ledger_paid - n.held_credits == t.live_credits,
    );
    check(
        format!(
            "seller credits in the ledger {} = seller revenue metered {}",
            n.ledger_seller_credits, t.live_seller_credits
        ),
        n.ledger_seller_credits == t.live_seller_credits,
    );
    check(
        format!(
            "test executions on the log {test_on_log} = test executions metered {}",
            t.test_executions
        ),
        test_on_log == t.test_executions,
    );
    for (what, rolled, rows) in &t.rollups {
        check(
            format!("sales rollup {what} {rolled} = metered rows {rows}"),
            rolled == rows,
        );
    }
    Ok(())
}

/// The path of every route that needs an API key, taken from the tables the routers are built
/// from (ingest's and the dashboards'): what the isolation test walks.
pub fn protected_paths() -> Vec<String> {
    let mut paths = ingest::protected_paths();
    paths.extend(api::paths());
    paths
}
