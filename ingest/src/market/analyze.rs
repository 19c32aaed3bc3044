//! Execution in place: `GET|POST /analyze/{company_handle}/assets/{asset_slug}` runs the asset's
//! query at the seller's source (read-only, with the timeout, row cap and size cap) with the
//! caller's parameters bound by the driver, and answers the rows. Raw data never leaves the
//! seller beyond the asset's own result. A company runs its own assets free; another
//! company's asset needs a price in force (`409 not_for_sale` without one), and the money
//! moves in two steps around the run (see `projections::money`): the buyer's debit is held
//! before the source runs (`402 insufficient_credits` if short: nothing runs), and the run
//! settles it, crediting the seller and the platform on success and refunding the buyer on a
//! failure or timeout. An `Idempotency-Key` makes the execution id, so a retry is never
//! charged twice.

use super::assets::specs_of;
use super::limits::{release, Admitted};
use super::money::{active, money};
use super::params::bind_values;
use super::*;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::storage_engine;
use projections::{split, Company, Hold, HoldOutcome};
use schemas::AssetState;
use serde_json::Map;
use sha2::{Digest, Sha256};
use sources::model::{Limits, Param, Rows};
use sources::sql::compile;
use sources::Driver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::roles::Action;
use web::{market, Caller};

/// Rows an execution returns at most.
pub const MAX_ROWS: usize = 10_000;
/// Bytes of row data an execution returns at most.
pub const MAX_BYTES: usize = 16 << 20;

/// What an execution looks up before it runs: the asset, its seller, its connection and the
/// price in force (credits). Kept for [`RESOLVED_TTL`] per (handle, slug); this process's own
/// entity writes clear it at once, other processes' changes show within the TTL.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    asset: AssetState,
    seller: Company,
    connection: Option<schemas::ConnectionState>,
    price: Option<i64>,
    /// Discounts on the asset (applied per buyer and time at each execution).
    discounts: Vec<projections::Discount>,
}

impl Resolved {
    /// An asset as its own company runs it (seller tooling: no price, no discount).
    pub(crate) fn for_owner(
        asset: AssetState,
        seller: Company,
        connection: Option<schemas::ConnectionState>,
    ) -> Resolved {
        Resolved {
            asset,
            seller,
            connection,
            price: None,
            discounts: Vec::new(),
        }
    }
}

pub(crate) const RESOLVED_TTL: Duration = Duration::from_secs(1);

async fn resolve(s: &IngestState, handle: &str, slug: &str) -> ApiResult<Arc<Resolved>> {
    let key = (handle.to_string(), slug.to_string());
    if let Some(hit) = s.resolved.get(&key) {
        if hit.0.elapsed() < RESOLVED_TTL {
            return Ok(hit.1.clone());
        }
    }
    let not_found = || ApiError::not_found(format!("no asset {slug:?} of company {handle:?}"));
    let seller = s
        .metadata
        .company_by_handle(handle)
        .await?
        .ok_or_else(not_found)?;
    let asset = s
        .metadata
        .asset_by_slug(&seller.state.id, slug)
        .await?
        .ok_or_else(not_found)?;
    let connection = s.metadata.connection(&asset.connection_id).await?;
    let price = active(&s.metadata.prices(&asset.id).await?).map(|p| p.credits);
    let discounts = s.metadata.discounts(&asset.id).await?;
    let resolved = Arc::new(Resolved {
        asset,
        seller,
        connection,
        price,
        discounts,
    });
    if s.resolved.len() > 10_000 {
        s.resolved.clear();
    }
    s.resolved.insert(key, (Instant::now(), resolved.clone()));
    Ok(resolved)
}

/// The asset `slug` of the company with `handle`, if the caller may run it.
async fn runnable(
    s: &IngestState,
    caller: &Caller,
    handle: &str,
    slug: &str,
) -> ApiResult<Arc<Resolved>> {
    caller.require(Action::ExecuteAssets)?;
    let r = resolve(s, handle, slug).await?;
    let own = r.asset.company_id == caller.company_id;
    let for_sale = r.asset.visibility == "SHARED" && r.asset.sell_in_marketplace;
    if !(own || for_sale) {
        return Err(ApiError::not_found(format!(
            "no asset {slug:?} of company {handle:?}"
        )));
    }
    Ok(r)
}

/// Query-string parameters (every value a string), minus Tally's own `format`.
pub(crate) fn query_params(q: &HashMap<String, String>) -> Map<String, Value> {
    q.iter()
        .filter(|(k, _)| k.as_str() != "format")
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

pub(crate) fn body_params(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = web::parse_json(body)?;
    match v.get("params") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad_request("params must be a JSON object")),
    }
}

/// Everything an execution needs, checked before any money moves.
pub(crate) struct Prepared {
    pub(crate) connector: sources::Connector,
    pub(crate) sql: String,
    pub(crate) binds: Vec<Param>,
    pub(crate) limits: Limits,
}

/// Checks the parameters and finds the source of `asset`: a bad parameter is a `400` here,
/// before anything is charged.
pub(crate) async fn prepare(
    s: &IngestState,
    resolved: &Resolved,
    given: &Map<String, Value>,
) -> ApiResult<Prepared> {
    let asset = &resolved.asset;
    let specs = specs_of(asset);
    let values = bind_values(&specs, given)?;
    let (connector, driver) = source_of(s, resolved.connection.as_ref(), "asset").await?;
    let names: Vec<&str> = specs.iter().map(|p| p.name.as_str()).collect();
    let compiled = compile(&asset.sql_logic, driver.dialect(), &names)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let binds: Vec<_> = compiled
        .binds
        .iter()
        .map(|n| values.get(n).cloned().unwrap_or(Param::Null))
        .collect();
    let mut limits = default_limits(s);
    if let Some(ms) = asset.timeout_ms {
        limits.timeout = Duration::from_millis(ms.max(1) as u64).min(limits.timeout);
    }
    Ok(Prepared {
        connector,
        sql: compiled.sql,
        binds,
        limits,
    })
}

/// The bounds of an execution before an asset lowers its timeout: `TALLY_EXECUTION_TIMEOUT_MS`,
/// [`MAX_ROWS`] and [`MAX_BYTES`].
pub(crate) fn default_limits(s: &IngestState) -> Limits {
    Limits {
        timeout: s
            .sources
            .as_ref()
            .map_or(Duration::from_secs(10), |r| r.config().execution_timeout),
        max_rows: MAX_ROWS,
        max_bytes: MAX_BYTES,
    }
}

/// The live connector and driver of the connection `what` (an asset or an endpoint) reads:
/// `409` if the connection was deleted or its engine is no longer reachable.
pub(crate) async fn source_of(
    s: &IngestState,
    conn: Option<&schemas::ConnectionState>,
    what: &str,
) -> ApiResult<(sources::Connector, Driver)> {
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m);
    let conn = conn.ok_or_else(|| conflict(format!("the {what}'s connection was deleted")))?;
    let driver = storage_engine(conn.engine_id)
        .and_then(|e| e.driver)
        .and_then(Driver::from_name)
        .ok_or_else(|| conflict(format!("the {what}'s engine is no longer reachable")))?;
    let registry = s
        .sources
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process has no access to sources"))?;
    Ok((registry.connector(conn, driver).await?, driver))
}

fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub(crate) fn formatted(format: &str, rows: &Rows) -> ApiResult<Option<Response>> {
    let (body, mime) = match format {
        "json" => return Ok(None),
        "csv" => {
            let mut out = rows
                .unique_names()
                .iter()
                .map(|n| csv_cell(&Value::String(n.clone())))
                .collect::<Vec<_>>()
                .join(",");
            out.push('\n');
            for r in &rows.rows {
                out.push_str(&r.iter().map(csv_cell).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            (out, "text/csv; charset=utf-8")
        }
        "ndjson" => {
            let mut out = String::new();
            for o in rows.objects() {
                out.push_str(&o.to_string());
                out.push('\n');
            }
            (out, "application/x-ndjson")
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of json, csv, ndjson"
            )))
        }
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if rows.truncated {
        resp.headers_mut()
            .insert("x-tally-truncated", HeaderValue::from_static("true"));
    }
    Ok(Some(resp))
}

/// The operator's company, which receives the platform fee (looked up once).
async fn platform_company(s: &IngestState) -> ApiResult<String> {
    if let Some(id) = s.platform_company.get() {
        return Ok(id.clone());
    }
    let id = s
        .metadata
        .companies()
        .await?
        .into_iter()
        .find(|c| c.state.is_operator)
        .map(|c| c.state.id)
        .ok_or_else(|| ApiError::internal("no operator company: run setup"))?;
    let _ = s.platform_company.set(id.clone());
    Ok(id)
}

/// The execution id: derived from the buyer and its `Idempotency-Key` (so a retry is the same
/// execution), else fresh.
pub(crate) fn execution_id(buyer: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => {
            let h = Sha256::digest(format!("{buyer}\n{k}").as_bytes());
            uuid::Builder::from_sha1_bytes(h[..16].try_into().unwrap_or([0; 16]))
                .into_uuid()
                .to_string()
        }
        None => new_id(),
    }
}

/// The price for `caller` in credits: 0 for its own company, else the price in force less
/// the best discount that applies to the caller's company now (`409 not_for_sale` without a
/// price).
fn cost(caller: &Caller, r: &Resolved) -> ApiResult<i64> {
    if r.asset.company_id == caller.company_id {
        return Ok(0);
    }
    let price = r.price.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_for_sale",
            "this asset has no price in force, so it is not for sale",
        )
    })?;
    Ok(projections::discounted(
        price,
        &r.discounts,
        &caller.company_id,
        crate::commands::now_ms(),
    ))
}

async fn execute(
    s: &IngestState,
    caller: &Caller,
    resolved: ApiResult<Arc<Resolved>>,
    given: Map<String, Value>,
    format: &str,
    idempotency_key: Option<&str>,
    admitted: &mut Option<Admitted>,
) -> ApiResult<Response> {
    let resolved = resolved?;
    let price = cost(caller, &resolved)?;
    let prepared = prepare(s, &resolved, &given).await?;
    let asset = &resolved.asset;
    let cache_key = (asset.cached && !s.cfg.result_cache.is_zero())
        .then(|| format!("{}|{}|{:?}", asset.id, asset.version, prepared.binds));
    let sale = Sale {
        item_id: &asset.id,
        seller: &resolved.seller,
        price,
        cache_key,
    };
    let execution_id = execution_id(&caller.company_id, idempotency_key);
    let (rows, answered) = run_paid(s, caller, sale, prepared, execution_id, admitted).await?;
    answer(format, asset, &rows, answered)
}

/// What one execution sells: an asset, or a data endpoint (priced and metered under its own
/// id), by `seller` at `price` credits.
pub(crate) struct Sale<'a> {
    pub(crate) item_id: &'a str,
    pub(crate) seller: &'a Company,
    pub(crate) price: i64,
    /// Identical calls within `TALLY_RESULT_CACHE_SECS` are answered from the cache under
    /// this key (a `cached` asset), if any.
    pub(crate) cache_key: Option<String>,
}

/// The money path of one execution, for assets and endpoints alike: the buyer's debit held
/// before the source runs (`402` if short), then settled: charged on success, refunded on a
/// failure or timeout. A retry of a settled execution (same id) runs again and is charged
/// nothing. A test key's execution moves no money ([`execute_test`]).
pub(crate) async fn run_paid(
    s: &IngestState,
    caller: &Caller,
    sale: Sale<'_>,
    prepared: Prepared,
    execution_id: String,
    admitted: &mut Option<Admitted>,
) -> ApiResult<(Arc<Rows>, Answered)> {
    if caller.test_mode {
        return execute_test(s, caller, &sale, prepared, execution_id).await;
    }
    let (price, seller) = (sale.price, sale.seller);
    let store = money(s)?;
    let (seller_share, platform_fee) = split(price, seller.state.vendor_share_bp);
    let hold = Hold {
        execution_id: execution_id.clone(),
        buyer_company_id: caller.company_id.clone(),
        seller_company_id: seller.state.id.clone(),
        platform_company_id: platform_company(s).await?,
        asset_id: sale.item_id.to_string(),
        api_key_id: caller.api_key_id,
        user_id: caller.user_id.clone(),
        cost: price,
        seller_share,
        platform_fee,
        at_ms: crate::commands::now_ms(),
    };
    let mut replayed = false;
    match store.hold(&hold).await? {
        HoldOutcome::Held { .. } => {}
        HoldOutcome::Insufficient { balance } => {
            metrics::counter!("tally_executions_total", "status" => "insufficient_credits")
                .increment(1);
            return Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                format!("this execution costs {price} credits and the balance is {balance}"),
            )
            .with_details(json!({ "balance": balance, "cost": price })));
        }
        // A retry of an execution that succeeded: run it again, charge nothing.
        HoldOutcome::AlreadyHeld { status } if status == "succeeded" => replayed = true,
        HoldOutcome::AlreadyHeld { status } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                "the execution with this Idempotency-Key is {status}; retry later or use a new key"
            ),
            )
            .with_details(json!({ "execution_id": execution_id })))
        }
    }
    let cache_key = sale.cache_key;
    let hit = cache_key.as_ref().and_then(|k| {
        s.results
            .get(k)
            .filter(|e| e.0.elapsed() < s.cfg.result_cache)
            .map(|e| e.1.clone())
    });
    let from_cache = hit.is_some();
    let started = Instant::now();
    let result = match hit {
        Some(rows) => Ok(rows),
        None => prepared
            .connector
            .query(&prepared.sql, &prepared.binds, prepared.limits)
            .await
            .map(Arc::new),
    };
    let took = started.elapsed();
    let duration_ms = (took.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let rows = match result {
        Ok(rows) => {
            if let (Some(k), false) = (&cache_key, from_cache) {
                remember(s, k, &rows);
            }
            rows
        }
        Err(e) => {
            if !replayed {
                let refund = store.settle(
                    &execution_id,
                    false,
                    0,
                    duration_ms,
                    crate::commands::now_ms(),
                );
                tokio::join!(refund, release(admitted)).0?;
            }
            metrics::counter!("tally_executions_total", "status" => "failed").increment(1);
            let err = ApiError::from(e);
            return Err(
                err.with_details(json!({ "execution_id": execution_id, "credits_charged": 0 }))
            );
        }
    };
    let balance = if replayed {
        store.balance(&caller.company_id).await?
    } else {
        let settle = store.settle(
            &execution_id,
            true,
            rows.rows.len() as i64,
            duration_ms,
            crate::commands::now_ms(),
        );
        tokio::join!(settle, release(admitted)).0?
    };
    let charged = if replayed { 0 } else { price };
    metrics::counter!("tally_executions_total", "status" => "succeeded").increment(1);
    metrics::counter!("tally_credits_charged_total").increment(charged as u64);
    let answered = Answered {
        execution_id,
        duration_ms,
        cached: from_cache,
        charged,
        balance,
        replayed,
        test: false,
    };
    Ok((rows, answered))
}

/// Rows a test key's execution returns at most.
pub const TEST_MAX_ROWS: usize = 10;

/// A test key's execution: the same checks and the same source, at most
/// [`TEST_MAX_ROWS`] rows, never charged (no money moves, so no hold), never from or into the
/// result cache, and metered as `test` through its own topic (`tally.usage.test`).
async fn execute_test(
    s: &IngestState,
    caller: &Caller,
    sale: &Sale<'_>,
    mut prepared: Prepared,
    execution_id: String,
) -> ApiResult<(Arc<Rows>, Answered)> {
    prepared.limits.max_rows = prepared.limits.max_rows.min(TEST_MAX_ROWS);
    let started = Instant::now();
    let result = prepared
        .connector
        .query(&prepared.sql, &prepared.binds, prepared.limits)
        .await;
    let duration_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let status = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    let usage = schemas::UsageRecorded {
        execution_id: execution_id.clone(),
        buyer_company_id: caller.company_id.clone(),
        seller_company_id: sale.seller.state.id.clone(),
        asset_id: sale.item_id.to_string(),
        api_key_id: caller.api_key_id,
        user_id: caller.user_id.clone(),
        credits: 0,
        seller_credits: 0,
        rows: result.as_ref().map_or(0, |r| r.rows.len() as i64),
        duration_ms,
        status: status.into(),
        mode: "test".into(),
        at_ms: crate::commands::now_ms(),
    };
    meter(s, &usage).await?;
    metrics::counter!("tally_test_executions_total", "status" => status).increment(1);
    let rows = result.map_err(|e| {
        ApiError::from(e)
            .with_details(json!({ "execution_id": execution_id, "credits_charged": 0 }))
    })?;
    let balance = money(s)?.balance(&caller.company_id).await?;
    let answered = Answered {
        execution_id,
        duration_ms,
        cached: false,
        charged: 0,
        balance,
        replayed: false,
        test: true,
    };
    Ok((Arc::new(rows), answered))
}

/// Appends a test execution's `UsageRecorded` (keyed by buyer, as the outbox keys live ones).
async fn meter(s: &IngestState, usage: &schemas::UsageRecorded) -> ApiResult<()> {
    let value = schemas::encode(usage).map_err(ApiError::internal)?;
    let record = eventlog::OutRecord {
        key: usage.buyer_company_id.as_bytes().to_vec(),
        value,
    };
    s.log
        .append(&s.cfg.test_usage_topic, vec![record])
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "test usage append failed");
            ApiError::unavailable("the event log cannot accept writes right now; retry")
        })?;
    Ok(())
}

/// What an answered execution reports besides its rows.
pub(crate) struct Answered {
    pub(crate) execution_id: String,
    pub(crate) duration_ms: f64,
    pub(crate) cached: bool,
    pub(crate) charged: i64,
    pub(crate) balance: i64,
    pub(crate) replayed: bool,
    pub(crate) test: bool,
}

/// An execution's answer: the rows as `format` asks, with the execution's id and money in
/// headers (CSV, NDJSON) or in the JSON body.
fn answer(format: &str, asset: &AssetState, rows: &Rows, a: Answered) -> ApiResult<Response> {
    let mode = a.mode();
    if let Some(resp) = formatted_execution(format, rows, &a)? {
        return Ok(resp);
    }
    let mut data = json!({
        "execution_id": a.execution_id,
        "asset_id": asset.id,
        "columns": rows.columns,
        "rows": rows.objects(),
        "row_count": rows.rows.len(),
        "truncated": rows.truncated,
        "duration_ms": a.duration_ms,
        "cached": a.cached,
        "credits_charged": a.charged,
        "credits_remaining": a.balance,
        "mode": mode,
    });
    if a.replayed {
        data["replayed"] = json!(true);
    }
    if asset.asset_type == "CALCULATION" && rows.columns.len() == 1 && rows.rows.len() == 1 {
        data["value"] = rows.rows[0][0].clone();
    }
    Ok(market("Asset executed", data).into_response())
}

impl Answered {
    pub(crate) fn mode(&self) -> &'static str {
        if self.test {
            "test"
        } else {
            "live"
        }
    }
}

/// The rows as CSV or NDJSON (`None` for JSON), with the execution's id, charge, balance and
/// mode in `x-tally-*` headers.
pub(crate) fn formatted_execution(
    format: &str,
    rows: &Rows,
    a: &Answered,
) -> ApiResult<Option<Response>> {
    let Some(mut resp) = formatted(format, rows)? else {
        return Ok(None);
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.execution_id) {
        h.insert("x-tally-execution-id", v);
    }
    h.insert("x-tally-credits-charged", HeaderValue::from(a.charged));
    h.insert("x-tally-credits-remaining", HeaderValue::from(a.balance));
    h.insert("x-tally-mode", HeaderValue::from_static(a.mode()));
    Ok(Some(resp))
}

/// Results kept at most, and the largest result kept (rows).
const CACHE_ENTRIES: usize = 1_000;
const CACHE_MAX_ROWS: usize = 1_000;

/// Keeps a `cached` asset's result for identical calls within `TALLY_RESULT_CACHE_SECS`.
fn remember(s: &IngestState, key: &str, rows: &Arc<Rows>) {
    if rows.rows.len() > CACHE_MAX_ROWS {
        return;
    }
    if s.results.len() >= CACHE_ENTRIES {
        s.results.retain(|_, e| e.0.elapsed() < s.cfg.result_cache);
        if s.results.len() >= CACHE_ENTRIES {
            s.results.clear();
        }
    }
    s.results
        .insert(key.to_string(), (Instant::now(), rows.clone()));
}

pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string)
}

/// The asset (or why it cannot run) and the call's admission under every limit that applies:
/// the plan's, the marketplace hour and the asset's own. An asset that cannot run still
/// counts as a call, as before it was looked up.
async fn admitted(
    s: &IngestState,
    caller: &Caller,
    (handle, slug): (&str, &str),
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: &axum::http::HeaderMap,
) -> Result<(ApiResult<Arc<Resolved>>, Option<Admitted>), Response> {
    use super::limits::{asset_counter, asset_limit, client_ip_of, CallerOrigin};
    let resolved = runnable(s, caller, handle, slug).await;
    let counter = match &resolved {
        Ok(r) => {
            let fields: Map<String, Value> =
                serde_json::from_str(&r.asset.extra_json).unwrap_or_default();
            // Stored fields passed this check when they were written; a bad one limits nothing.
            asset_limit(&fields).ok().flatten().map(|limit| {
                let origin = CallerOrigin {
                    caller,
                    ip: client_ip_of(s, peer.map(|p| p.0 .0), headers),
                };
                asset_counter(&r.asset.id, &limit, &origin, crate::commands::now_ms())
            })
        }
        Err(_) => None,
    };
    let admitted = super::limits::admit(s, caller, counter).await?;
    Ok((resolved, admitted))
}

/// One call of either route: admission under every limit, the execution, the answer with its
/// headers (and the concurrency slot given back).
async fn run(
    s: &IngestState,
    caller: &Caller,
    (handle, slug): (&str, &str),
    (params, format): (Map<String, Value>, &str),
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: &axum::http::HeaderMap,
) -> Response {
    let key = idempotency_key(headers);
    let (resolved, mut admitted) = match admitted(s, caller, (handle, slug), peer, headers).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let out = execute(
        s,
        caller,
        resolved,
        params,
        format,
        key.as_deref(),
        &mut admitted,
    )
    .await;
    super::limits::finish(admitted, out).await
}

fn format_of(q: &HashMap<String, String>) -> &str {
    q.get("format").map_or("json", String::as_str)
}

/// `GET /analyze/{company_handle}/assets/{asset_slug}`: parameters in the query string.
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((handle, slug)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let call = (query_params(&q), format_of(&q));
    Ok(run(&s, &caller, (&handle, &slug), call, peer, &headers).await)
}

/// `POST /analyze/{company_handle}/assets/{asset_slug}`: `{"params": {...}}`.
pub async fn post(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((handle, slug)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let call = (body_params(&body)?, format_of(&q));
    Ok(run(&s, &caller, (&handle, &slug), call, peer, &headers).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        assert_eq!(csv_cell(&json!("plain")), "plain");
        assert_eq!(csv_cell(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell(&json!(null)), "");
        assert_eq!(csv_cell(&json!(1.5)), "1.5");
    }
}
