//! The write side over HTTP: `POST /api/collect`, first-run setup, websites, API keys, and the
//! marketplace's companies, users, keys and reference data. Every write is an event appended
//! to the log; a request is answered only after its append is durable (and, for entity
//! commands, projected, so the caller can read its own write).

mod collect;
mod commands;
mod edge;
mod login;
mod market;
mod public;
mod ratelimit;
mod site_objects;
pub mod tracker;

use axum::middleware::from_fn_with_state;
use axum::routing::{any, delete, get, post, put};
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
    /// Topic of test-key executions, which ingest appends itself (they move no money, so
    /// they skip the outbox and `tally.usage`).
    pub test_usage_topic: String,
    /// Collect requests per IP per minute; 0 turns the limit off.
    pub collect_rate_per_minute: u32,
    /// Seed `000`'s hourly limits (`market::limits::route_limit`): authentication routes per
    /// caller or IP, marketplace routes per caller; 0 turns one off.
    pub auth_per_hour: u64,
    pub market_per_hour: u64,
    /// Peers whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Oldest event `timestamp` accepted.
    pub max_event_age: Duration,
    /// How far in the future a `timestamp` may be (clock skew).
    pub max_clock_skew: Duration,
    /// How long a command waits for its own event to be projected.
    pub projection_wait: Duration,
    /// The seller's share of revenue for companies that do not set one (basis points).
    pub vendor_share_bp: i32,
    /// Credits per USD (`TALLY_CREDITS_PER_USD`).
    pub credits_per_usd: i64,
    /// How long an identical execution of a `cached` asset is answered from the result cache
    /// (`TALLY_RESULT_CACHE_SECS`; 0 turns the cache off).
    pub result_cache: Duration,
    /// Tests only: how far this process's clock runs ahead of the wall clock (0 in service).
    pub clock_offset_ms: i64,
}

impl IngestConfig {
    pub fn new(raw_topic: String, entities_topic: String) -> Self {
        Self {
            raw_topic,
            entities_topic,
            test_usage_topic: "usage.test".into(),
            collect_rate_per_minute: 60,
            auth_per_hour: 1_000,
            market_per_hour: 10_000,
            trusted_proxies: Vec::new(),
            max_event_age: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(60),
            projection_wait: Duration::from_secs(10),
            vendor_share_bp: market::companies::DEFAULT_VENDOR_SHARE_BP,
            credits_per_usd: 100,
            result_cache: Duration::from_secs(60),
            clock_offset_ms: 0,
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
    /// Sellers' databases; `None` in processes that do not reach them.
    pub sources: Option<Arc<sources::Registry>>,
    /// Balances, the ledger and the outbox.
    pub money: Option<Arc<dyn projections::MoneyStore>>,
    /// The operator's company id (receives platform fees), once known.
    platform_company: std::sync::OnceLock<String>,
    /// Dashboard sessions.
    pub sessions: Option<Arc<dyn projections::SessionStore>>,
    /// The audit trail (read by `GET /companies/{id}/audit-log`).
    pub audit: Option<Arc<dyn projections::AuditStore>>,
    /// Alert firings (in-app notifications) and webhook deliveries.
    pub alerts: Option<Arc<dyn projections::alert_store::AlertStore>>,
    /// The metering projection (`GET …/requests/usage`).
    pub usage: Option<Arc<dyn projections::UsageStore>>,
    /// Where the plan limits are counted (`market::limits`).
    pub limits: Option<Arc<dyn projections::limits::LimitStore>>,
    /// Each company's plan and period start, with when it was read.
    plans: DashMap<String, (Instant, (projections::reference::Plan, i64))>,
    /// Failed sign-ins per client IP (times in ms), for the login limit.
    login_failures: DashMap<std::net::IpAddr, Vec<i64>>,
    /// What executions looked up, per (company handle, asset slug), briefly.
    resolved: DashMap<(String, String), (Instant, Arc<market::analyze::Resolved>)>,
    /// What data endpoint calls looked up, per endpoint id, briefly.
    endpoints: DashMap<String, (Instant, Arc<market::endpoints::Looked>)>,
    /// Results of `cached` assets, per (asset, version, bound values).
    pub(crate) results: DashMap<String, (Instant, Arc<sources::model::Rows>)>,
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
            sources: None,
            money: None,
            platform_company: std::sync::OnceLock::new(),
            resolved: DashMap::new(),
            endpoints: DashMap::new(),
            results: DashMap::new(),
            sessions: None,
            audit: None,
            alerts: None,
            usage: None,
            limits: None,
            plans: DashMap::new(),
            login_failures: DashMap::new(),
        }
    }

    /// Keeps dashboard sessions.
    pub fn with_sessions(mut self, sessions: Arc<dyn projections::SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Lets company admins read the audit trail.
    pub fn with_audit(mut self, audit: Arc<dyn projections::AuditStore>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Serves notifications and deliveries from `alerts`.
    pub fn with_alerts(mut self, alerts: Arc<dyn projections::alert_store::AlertStore>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Counts the plan limits of executions in `limits`.
    pub fn with_limits(mut self, limits: Arc<dyn projections::limits::LimitStore>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Gives the process the metering projection's reads.
    pub fn with_usage(mut self, usage: Arc<dyn projections::UsageStore>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Gives the process access to credits (the money path).
    pub fn with_money(mut self, money: Arc<dyn projections::MoneyStore>) -> Self {
        self.money = Some(money);
        self
    }

    /// Gives the process access to sellers' databases.
    pub fn with_sources(mut self, registry: Arc<sources::Registry>) -> Self {
        self.sources = Some(registry);
        self
    }
}

/// The ingest routes.
pub fn router(state: Arc<IngestState>) -> Router {
    // Layers run outside in: auth first (so replays are scoped to the caller), then
    // idempotency, then the handler.
    // The hourly route limits run inside auth (they count per caller) and before
    // idempotency (a replayed answer counts as a call).
    let idempotent = from_fn_with_state(state.idempotency.clone(), web::idempotency_layer);
    let hourly = from_fn_with_state(state.clone(), market::limits::route_limit);
    let protected = protected_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(&path, handler))
        .route_layer(idempotent.clone())
        .route_layer(hourly.clone())
        .route_layer(from_fn_with_state(state.auth.clone(), web::require_api_key));
    // A data endpoint's customer-facing routes also run for anonymous callers (`OPEN` and
    // `IP` endpoints); a presented key or session is still verified.
    let caller_optional = caller_optional_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(&path, handler))
        .route_layer(idempotent.clone())
        .route_layer(hourly.clone())
        .route_layer(from_fn_with_state(
            state.auth.clone(),
            web::optional_api_key,
        ));
    let sign_in = Router::new()
        .route("/api/auth/setup", post(commands::setup))
        .route("/api/auth/login", post(login::login))
        .route("/api/auth/status", get(login::status))
        .route_layer(idempotent)
        .route_layer(hourly);
    let routes = sign_in
        .merge(caller_optional)
        .merge(protected)
        .with_state(state.clone());
    with_clock_offset(routes, state.cfg.clock_offset_ms)
}

/// Where the tracker and server-side clients send events: `/api/collect` and the tracker's
/// `/e`; and the tracker script itself, `/s.js`. Apart from [`router`] because these answer CORS for any origin (the root binary
/// layers that), while the dashboard and marketplace routes keep `TALLY_CORS_ORIGINS`.
pub fn collect_router(state: Arc<IngestState>) -> Router {
    let idempotent = from_fn_with_state(state.idempotency.clone(), web::idempotency_layer);
    let offset = state.cfg.clock_offset_ms;
    let routes = Router::new()
        .route("/api/collect", post(collect::collect))
        .route("/e", post(collect::collect))
        .route_layer(idempotent)
        .route("/s.js", get(tracker::script))
        .route("/l/{slug}", get(public::link))
        .route("/p/{key}", get(public::pixel))
        .with_state(state);
    with_clock_offset(routes, offset)
}

/// Runs every request of `routes` `offset` ms ahead (tests of time windows), if not 0.
fn with_clock_offset(routes: Router, offset: i64) -> Router {
    if offset == 0 {
        return routes;
    }
    routes.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            commands::CLOCK_OFFSET_MS.scope(offset, next.run(req))
        },
    ))
}

/// Marketplace routes that exist in the contract but whose part is not built yet: they answer
/// `501 not_implemented` (after authentication) instead of a misleading 404.
const MARKET_NOT_BUILT: &[&str] = &[
    "/companies/{company_id}/requests",
    "/companies/{company_id}/posts",
    "/companies/{company_id}/postgen_integrations",
];

/// `403` for another company's path (as a built route would answer), else `501`.
async fn market_not_built(
    axum::Extension(caller): axum::Extension<web::Caller>,
    req: axum::extract::Request,
) -> web::ApiError {
    let path = req.uri().path();
    if let Some(company) = path
        .strip_prefix("/companies/")
        .and_then(|r| r.split('/').next())
    {
        if let Err(e) = caller.require_in(company, web::roles::Action::ReadCompany) {
            return e;
        }
    }
    web::ApiError::not_implemented(format!("{path} is not built yet in this version of Tally"))
}

/// Google sign-in needs an OAuth client registered with Google and outbound access to its
/// token endpoint; neither exists for a self-hosted Tally, so this answers 501 by design.
async fn google_oauth(
    axum::Extension(caller): axum::Extension<web::Caller>,
    axum::extract::Path(company_id): axum::extract::Path<String>,
) -> web::ApiError {
    if let Err(e) = caller.require_in(&company_id, web::roles::Action::ReadCompany) {
        return e;
    }
    web::ApiError::not_implemented(
        "Google sign-in is not available: it needs an OAuth client registered with Google; \
         use an API key or POST /api/auth/login",
    )
}

type Routes = Vec<(String, axum::routing::MethodRouter<Arc<IngestState>>)>;

/// Every route that needs an API key, as (path, handlers): the router is built from this
/// table, and [`protected_paths`] lists it, so a test can walk every route (none escapes).
fn protected_routes() -> Routes {
    use market::{
        alerts, analyze, asset_tools, assets, companies, connections, favorites, keys, money,
        plans, reference, seller, statistics, usage, users,
    };
    let mut routes: Routes = Vec::new();
    let mut route = |path: &str, handler: axum::routing::MethodRouter<Arc<IngestState>>| {
        routes.push((path.to_string(), handler));
    };
    route(
        "/api/websites",
        post(commands::create_website).get(commands::list_websites),
    );
    fn objects<K: site_objects::Kind>(
        route: &mut impl FnMut(&str, axum::routing::MethodRouter<Arc<IngestState>>),
        plural: &str,
    ) {
        use site_objects::{create, delete, get_one, list, update};
        route(
            &format!("/api/websites/{{id}}/{plural}"),
            get(list::<K>).post(create::<K>),
        );
        route(
            &format!("/api/websites/{{id}}/{plural}/{{object_id}}"),
            get(get_one::<K>)
                .put(update::<K>)
                .patch(update::<K>)
                .delete(delete::<K>),
        );
    }
    objects::<web::site::Goal>(&mut route, "goals");
    objects::<web::site::Funnel>(&mut route, "funnels");
    objects::<web::site::Link>(&mut route, "links");
    objects::<web::site::Pixel>(&mut route, "pixels");
    objects::<web::site::Report>(&mut route, "reports");
    route(
        "/api/websites/{id}/share",
        get(site_objects::get_share)
            .post(site_objects::create_share)
            .delete(site_objects::delete_share),
    );
    route(
        "/api/websites/{id}",
        get(commands::get_website)
            .put(commands::update_website)
            .delete(commands::delete_website),
    );
    route(
        "/api/auth/keys",
        post(commands::create_key).get(commands::list_keys),
    );
    route("/api/auth/keys/{id}", delete(commands::delete_key));
    route("/api/auth/logout", post(login::logout));
    route("/api/auth/session", get(login::session));
    route("/api/auth/password", put(login::change_password));
    route(
        "/companies/{company_id}/users/logout",
        post(login::logout_everywhere),
    );
    route("/companies", post(companies::create));
    route(
        "/companies/{company_id}",
        get(companies::get).patch(companies::patch),
    );
    route(
        "/companies/{company_id}/users",
        get(users::list).post(users::create),
    );
    route(
        "/companies/{company_id}/users/{user_id}",
        get(users::get).patch(users::patch).delete(users::delete),
    );
    route(
        "/companies/{company_id}/users/google-oauth",
        post(google_oauth),
    );
    route("/me", get(users::me));
    route("/plans", get(plans::list));
    route(
        "/companies/{company_id}/subscription",
        get(plans::get).put(plans::put),
    );
    route(
        "/companies/{company_id}/requests/plan",
        get(plans::requests_plan),
    );
    route(
        "/companies/{company_id}/requests/usage",
        get(usage::requests_usage),
    );
    route(
        "/companies/{company_id}/analytics/dashboard",
        get(seller::dashboard),
    );
    route(
        "/companies/{company_id}/analytics/sales",
        get(seller::sales),
    );
    route(
        "/companies/{company_id}/analytics/customers",
        get(seller::customers),
    );
    route(
        "/companies/{company_id}/analytics/assets",
        get(seller::assets),
    );
    route(
        "/companies/{company_id}/analytics/metrics",
        get(seller::metrics),
    );
    route(
        "/companies/{company_id}/api-keys",
        get(keys::list).post(keys::create),
    );
    route(
        "/companies/{company_id}/api-keys/{api_key_id}",
        get(keys::get).patch(keys::patch).delete(keys::delete),
    );
    route(
        "/companies/{company_id}/api-keys/{api_key_id}/stats",
        get(keys::stats),
    );
    route(
        "/companies/{company_id}/api-keys/{api_key_id}/revoke",
        post(keys::revoke),
    );
    route(
        "/companies/{company_id}/connections",
        get(connections::list).post(connections::create),
    );
    route(
        "/companies/{company_id}/connections/{connection_id}",
        get(connections::get)
            .patch(connections::patch)
            .delete(connections::delete),
    );
    route(
        "/companies/{company_id}/connections/{connection_id}/test",
        get(connections::test),
    );
    route(
        "/companies/{company_id}/connections/{connection_id}/infoschema",
        get(connections::infoschema),
    );
    // Clients send the `..` literally (see the contract).
    route(
        "/companies/{company_id}/connections/{connection_id}/sample-data",
        get(connections::sample),
    );
    route(
        "/companies/{company_id}/endpoints/../connections/{connection_id}/describe",
        get(connections::infoschema),
    );
    route(
        "/companies/{company_id}/assets",
        get(assets::list).post(assets::create),
    );
    route("/companies/{company_id}/assets/search", get(assets::search));
    route(
        "/companies/{company_id}/assets/statistics",
        get(statistics::all),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/statistics",
        get(statistics::one),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}",
        get(assets::get).patch(assets::patch).delete(assets::delete),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/prices",
        get(money::prices).post(money::set_price),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/prices/active",
        get(money::active_price),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/prices/calculate_credits",
        post(money::calculate_credits),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/infoschema",
        get(asset_tools::infoschema),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/infoschema/save",
        get(asset_tools::infoschema_save),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/scan_column",
        post(asset_tools::scan_column),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/test",
        get(asset_tools::test).post(asset_tools::test),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/predicted_price",
        get(asset_tools::predicted_price),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/prices/discount",
        post(money::set_discount).get(money::discounts),
    );
    route(
        "/companies/{company_id}/assets/{asset_id}/prices/{aph_id}",
        get(money::price)
            .patch(money::patch_price)
            .delete(money::delete_price),
    );
    route("/companies/{company_id}/credits", post(money::top_up));
    route("/companies/{company_id}/credits/ledger", get(money::ledger));
    route(
        "/companies/{company_id}/audit-log",
        get(companies::audit_log),
    );
    route("/companies/{company_id}/objects", get(companies::objects));
    route(
        "/analyze/{company_handle}/assets/{asset_slug}",
        get(analyze::get).post(analyze::post),
    );
    route("/cloud-providers", get(reference::providers));
    route("/cloud-providers/{provider_id}", get(reference::provider));
    route(
        "/cloud-providers/{provider_id}/storage-engines",
        get(reference::engines),
    );
    route(
        "/cloud-providers/{provider_id}/storage-engines/{engine_id}",
        get(reference::engine),
    );
    route("/industries", get(reference::industries));
    route("/industries/active", get(reference::active_industries));
    route("/industries/{industry_id}", get(reference::industry));
    route("/job-functions", get(reference::functions));
    route("/job-functions/{function_id}", get(reference::function));
    route("/asset_usecases", get(reference::usecases));
    route("/asset_usecases/{auc_id}", get(reference::usecase));
    let alerts_path = "/companies/{company_id}/users/{user_id}/alerts";
    route(alerts_path, get(alerts::all).post(alerts::create));
    route(
        &format!("{alerts_path}/asset/{{asset_id}}"),
        get(alerts::on_asset),
    );
    route(
        &format!("{alerts_path}/asset/{{asset_id}}/all"),
        get(alerts::on_asset_all),
    );
    route(
        &format!("{alerts_path}/{{alert_id}}"),
        get(alerts::get).patch(alerts::patch).delete(alerts::delete),
    );
    route(
        &format!("{alerts_path}/{{alert_id}}/deliveries"),
        get(alerts::deliveries),
    );
    route(
        "/companies/{company_id}/users/{user_id}/notifications",
        get(alerts::notifications),
    );
    route(
        "/companies/{company_id}/users/{user_id}/notifications/{notification_id}/read",
        post(alerts::mark_read),
    );
    let favs = "/companies/{company_id}/users/{user_id}/favorites";
    route(favs, get(favorites::all).post(favorites::create));
    route(
        &format!("{favs}/category/{{category}}"),
        get(favorites::by_category),
    );
    route(
        &format!("{favs}/uncategorized"),
        get(favorites::uncategorized),
    );
    route(&format!("{favs}/check/{{asset_id}}"), get(favorites::check));
    route(
        &format!("{favs}/{{favorite_id}}"),
        get(favorites::get)
            .patch(favorites::patch)
            .delete(favorites::delete),
    );
    for path in MARKET_NOT_BUILT {
        route(path, any(market_not_built));
        route(&format!("{path}/{{*rest}}"), any(market_not_built));
    }
    endpoint_routes(&mut routes);
    routes
}

/// Routes that take a key or a session when one is presented, and run without one too (a data
/// endpoint's `execute` and `export`: the endpoint's access method decides).
fn caller_optional_routes() -> Routes {
    use market::endpoints;
    let base = "/companies/{company_id}/endpoints/{endpoint_id}";
    vec![
        (
            format!("{base}/execute"),
            get(endpoints::call_route::<false>),
        ),
        (format!("{base}/export"), get(endpoints::call_route::<true>)),
    ]
}

/// The data endpoints' seller routes, and their prices through the money handlers.
fn endpoint_routes(routes: &mut Routes) {
    use market::{endpoints, money};
    let mut route = |path: String, handler: axum::routing::MethodRouter<Arc<IngestState>>| {
        routes.push((path, handler));
    };
    let list = "/companies/{company_id}/endpoints";
    let one = format!("{list}/{{endpoint_id}}");
    route(list.into(), get(endpoints::list).post(endpoints::create));
    route(
        one.clone(),
        get(endpoints::get)
            .patch(endpoints::patch)
            .delete(endpoints::delete),
    );
    route(
        format!("{one}/keys"),
        get(endpoints::keys).post(endpoints::create_key),
    );
    route(
        format!("{one}/keys/{{api_key_id}}"),
        delete(endpoints::delete_key),
    );
    route(format!("{one}/stats"), get(endpoints::stats));
    route(
        format!("{one}/test"),
        get(endpoints::test).post(endpoints::test),
    );
    route(format!("{one}/url"), get(endpoints::url));
    route(
        format!("{one}/recommendations"),
        get(endpoints::recommendations),
    );
    route(
        format!("{one}/available-endpoints"),
        get(endpoints::available),
    );
    route(format!("{one}/scan_column"), post(endpoints::scan_column));
    // Prices of an endpoint are prices of the id it is sold under: the same handlers.
    let prices = "/companies/{company_id}/endpoints/{endpoint_id}/prices";
    route(prices.into(), get(money::prices).post(money::set_price));
    route(format!("{prices}/active"), get(money::active_price));
    route(
        format!("{prices}/discount"),
        post(money::set_discount).get(money::discounts),
    );
    route(
        format!("{prices}/{{aph_id}}"),
        get(money::price)
            .patch(money::patch_price)
            .delete(money::delete_price),
    );
}

/// The paths of every route that takes an API key (see [`protected_routes`] and
/// [`caller_optional_routes`]).
pub fn protected_paths() -> Vec<String> {
    protected_routes()
        .into_iter()
        .chain(caller_optional_routes())
        .map(|(p, _)| p)
        .collect()
}
