//! Read-only reference data: cloud providers and their storage engines, industries, job
//! functions and asset use cases (defined in `projections::reference`, the same rows the
//! migration writes into the metadata store). Any authenticated caller may read them.

use super::*;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::{
    ASSET_USECASES, CLOUD_PROVIDERS, INDUSTRIES, JOB_FUNCTIONS, STORAGE_ENGINES,
};
use serde::Serialize;
use web::roles::Action;
use web::{market, market_all, Caller};

fn list<T: Serialize>(caller: &Caller, what: &str, rows: Vec<T>) -> ApiResult<Response> {
    caller.require(Action::ReadReference)?;
    Ok(market_all(&format!("{what} retrieved"), rows).into_response())
}

fn one<T: Serialize>(
    caller: &Caller,
    what: &str,
    found: Option<T>,
    id: i64,
) -> ApiResult<Response> {
    caller.require(Action::ReadReference)?;
    match found {
        Some(row) => Ok(market(&format!("{what} retrieved"), row).into_response()),
        None => Err(ApiError::not_found(format!("no {what} with id {id}"))),
    }
}

fn find<T: Copy>(rows: &[T], id: i64, key: impl Fn(&T) -> i32) -> Option<T> {
    rows.iter().find(|r| i64::from(key(r)) == id).copied()
}

pub async fn providers(Extension(c): Extension<Caller>) -> ApiResult<Response> {
    list(&c, "Cloud providers", CLOUD_PROVIDERS.to_vec())
}

pub async fn provider(
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id("provider_id", &id)?;
    one(
        &c,
        "cloud provider",
        find(CLOUD_PROVIDERS, id, |p| p.provider_id),
        id,
    )
}

fn provider_engines(provider: i64) -> ApiResult<Vec<projections::reference::StorageEngine>> {
    if find(CLOUD_PROVIDERS, provider, |p| p.provider_id).is_none() {
        return Err(ApiError::not_found(format!(
            "no cloud provider with id {provider}"
        )));
    }
    Ok(STORAGE_ENGINES
        .iter()
        .filter(|e| i64::from(e.provider_id) == provider)
        .copied()
        .collect())
}

pub async fn engines(
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rows = provider_engines(int_id("provider_id", &id)?)?;
    list(&c, "Storage engines", rows)
}

pub async fn engine(
    Extension(c): Extension<Caller>,
    Path((provider, engine)): Path<(String, String)>,
) -> ApiResult<Response> {
    let rows = provider_engines(int_id("provider_id", &provider)?)?;
    let id = int_id("engine_id", &engine)?;
    one(&c, "storage engine", find(&rows, id, |e| e.engine_id), id)
}

pub async fn industries(Extension(c): Extension<Caller>) -> ApiResult<Response> {
    list(&c, "Industries", INDUSTRIES.to_vec())
}

pub async fn industry(
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id("industry_id", &id)?;
    one(&c, "industry", find(INDUSTRIES, id, |i| i.industry_id), id)
}

pub async fn functions(Extension(c): Extension<Caller>) -> ApiResult<Response> {
    list(&c, "Job functions", JOB_FUNCTIONS.to_vec())
}

pub async fn function(
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id("function_id", &id)?;
    one(
        &c,
        "job function",
        find(JOB_FUNCTIONS, id, |f| f.function_id),
        id,
    )
}

pub async fn usecases(Extension(c): Extension<Caller>) -> ApiResult<Response> {
    list(&c, "Asset use cases", ASSET_USECASES.to_vec())
}

pub async fn usecase(
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = int_id("auc_id", &id)?;
    one(
        &c,
        "asset use case",
        find(ASSET_USECASES, id, |u| u.auc_id),
        id,
    )
}

/// `GET /industries/active`: the industries with at least one asset shared and sold in the
/// marketplace.
pub async fn active_industries(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<IngestState>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Response> {
    c.require(Action::ReadReference)?;
    let used: std::collections::BTreeSet<i32> = s
        .metadata
        .visible_assets(&c.company_id)
        .await?
        .iter()
        .filter(|a| a.visibility == "SHARED" && a.sell_in_marketplace)
        .filter_map(|a| a.industry_id)
        .collect();
    let rows: Vec<_> = INDUSTRIES
        .iter()
        .filter(|i| used.contains(&i.industry_id))
        .cloned()
        .collect();
    list(&c, "Active industries", rows)
}
