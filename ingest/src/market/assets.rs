//! Assets under `/companies/{company_id}/assets`: one read-only query over one of the
//! company's connections, checked when written (exactly one read-only statement in the
//! connection's dialect, parameters declared and referenced as `{{name}}`), with a slug unique
//! per company. `PRIVATE` assets are seen only by their company; `SHARED` ones sold in the
//! marketplace are found by every company. Other companies never see the SQL.

use super::companies::scoped;
use super::params::{parse_specs, ParamSpec};
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::{storage_engine, ASSET_USECASES, INDUSTRIES};
use schemas::{AssetState, AssetUpserted, ConnectionState};
use serde_json::Map;
use sources::sql::{check_read_only, compile, SqlDialect};
use sources::Driver;
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, market_page, parse_json, Caller, Paging};

const ASSET_TYPES: &[&str] = &["CALCULATION", "VISUALIZATION", "DATA"];
const VISIBILITIES: &[&str] = &["PRIVATE", "SHARED"];
const SOURCES: &[&str] = &["MANUAL", "AUTOMATIC"];
/// Fields kept as they are sent, in `extra_json` (chart settings, coverage, limits …).
const EXTRA_MAX_BYTES: usize = 16 * 1024;
/// The fields this module interprets; every other field of a body goes to `extra_json`.
const CORE_FIELDS: &[&str] = &[
    "name",
    "slug",
    "connection_id",
    "sql_logic",
    "description",
    "asset_type",
    "visibility",
    "sell_in_marketplace",
    "allow_params",
    "source",
    "require_customization",
    "accept_terms",
    "industry_id",
    "auc_id",
    "tags",
    "asset_schema",
    "cached",
    "timeout_ms",
    "asset_id",
    "company_id",
    "user_id",
    "date_created",
    "last_updated",
];

/// A slug from a name: lowercase letters and digits, words joined by `-`.
pub(crate) fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    out.chars()
        .take(80)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

pub(crate) fn one_of(field: &str, value: &str, allowed: &[&str]) -> ApiResult<String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} {value:?} is not one of {}",
            allowed.join(", ")
        )))
    }
}

fn dialect_of(conn: &ConnectionState) -> ApiResult<SqlDialect> {
    storage_engine(conn.engine_id)
        .and_then(|e| e.driver)
        .and_then(Driver::from_name)
        .map(Driver::dialect)
        .ok_or_else(|| {
            ApiError::bad_request("the asset's connection uses an engine Tally does not reach")
        })
}

/// The declared parameters of an asset.
pub(crate) fn specs_of(a: &AssetState) -> Vec<ParamSpec> {
    serde_json::from_str(&a.params_json).unwrap_or_default()
}

/// Checks `sql` against the connection's dialect and the declared parameters.
fn check_sql(sql: &str, conn: &ConnectionState, specs: &[ParamSpec]) -> ApiResult<()> {
    if sql.len() > 100_000 {
        return Err(ApiError::bad_request(
            "sql_logic is longer than 100,000 bytes",
        ));
    }
    let dialect = dialect_of(conn)?;
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let compiled =
        compile(sql, dialect, &names).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_read_only(&compiled.sql, dialect).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The asset as its company sees it; other companies get it without the SQL and the
/// connection.
pub(crate) fn asset_json(a: &AssetState, own: bool) -> Value {
    let mut v = json!({
        "asset_id": a.id,
        "company_id": a.company_id,
        "name": a.name,
        "slug": a.slug,
        "description": a.description,
        "asset_type": a.asset_type,
        "visibility": a.visibility,
        "sell_in_marketplace": a.sell_in_marketplace,
        "allow_params": a.allow_params,
        "source": a.source,
        "require_customization": a.require_customization,
        "accept_terms": a.accept_terms,
        "industry_id": a.industry_id,
        "auc_id": a.auc_id,
        "tags": a.tags,
        "asset_schema": { "params": specs_of(a) },
        "cached": a.cached,
        "version": a.version,
        "date_created": rfc3339(a.created_at_ms),
        "last_updated": rfc3339(a.updated_at_ms),
    });
    if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(&a.extra_json) {
        for (k, x) in extra {
            v[k] = x;
        }
    }
    if own {
        v["user_id"] = json!(a.user_id);
        v["connection_id"] = json!(a.connection_id);
        v["sql_logic"] = json!(a.sql_logic);
        v["timeout_ms"] = json!(a.timeout_ms);
    }
    v
}

pub(crate) fn bool_field(body: &Map<String, Value>, field: &str, current: bool) -> ApiResult<bool> {
    match body.get(field) {
        None => Ok(current),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field} must be true or false"
        ))),
    }
}

pub(crate) fn str_field<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> ApiResult<Option<&'a str>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

pub(crate) fn int_field(body: &Map<String, Value>, field: &str) -> ApiResult<Option<Option<i64>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|i| Some(Some(i)))
            .ok_or_else(|| ApiError::bad_request(format!("{field} must be an integer"))),
    }
}

/// Applies the fields of `body` onto `a` (a new asset's defaults, or the current state).
async fn apply_body(
    s: &IngestState,
    a: &mut AssetState,
    body: &Map<String, Value>,
) -> ApiResult<ConnectionState> {
    if let Some(n) = str_field(body, "name")? {
        a.name = text("name", n, 200)?;
    }
    if let Some(slug) = str_field(body, "slug")? {
        a.slug = slugify(slug);
    } else if body.contains_key("name") && a.slug.is_empty() {
        a.slug = slugify(&a.name);
    }
    if a.slug.is_empty() {
        return Err(ApiError::bad_request(
            "name must contain letters or digits (it gives the slug)",
        ));
    }
    if let Some(c) = str_field(body, "connection_id")? {
        a.connection_id = c.to_string();
    }
    let conn = s
        .metadata
        .connection(&a.connection_id)
        .await?
        .filter(|c| c.company_id == a.company_id)
        .ok_or_else(|| {
            ApiError::bad_request("connection_id must name one of the company's connections")
        })?;
    if let Some(d) = body.get("description") {
        a.description = opt_text("description", d.as_str(), 5_000)?;
    }
    if let Some(t) = str_field(body, "asset_type")? {
        a.asset_type = one_of("asset_type", t, ASSET_TYPES)?;
    }
    if let Some(v) = str_field(body, "visibility")? {
        a.visibility = one_of("visibility", v, VISIBILITIES)?;
    }
    if let Some(v) = str_field(body, "source")? {
        a.source = one_of("source", v, SOURCES)?;
    }
    a.sell_in_marketplace = bool_field(body, "sell_in_marketplace", a.sell_in_marketplace)?;
    a.allow_params = bool_field(body, "allow_params", a.allow_params)?;
    a.require_customization = bool_field(body, "require_customization", a.require_customization)?;
    a.accept_terms = bool_field(body, "accept_terms", a.accept_terms)?;
    a.cached = bool_field(body, "cached", a.cached)?;
    if let Some(i) = int_field(body, "industry_id")? {
        a.industry_id = reference_id("industry_id", i, |x| {
            INDUSTRIES.iter().any(|r| r.industry_id == x)
        })?;
    }
    if let Some(i) = int_field(body, "auc_id")? {
        a.auc_id = reference_id("auc_id", i, |x| {
            ASSET_USECASES.iter().any(|r| r.auc_id == x)
        })?;
    }
    if let Some(t) = int_field(body, "timeout_ms")? {
        let max = s
            .sources
            .as_ref()
            .map_or(10_000, |r| r.config().execution_timeout.as_millis() as i64);
        a.timeout_ms = match t {
            None => None,
            Some(ms) if (100..=max).contains(&ms) => Some(ms as i32),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "timeout_ms must be between 100 and {max}"
                )))
            }
        };
    }
    if let Some(tags) = body.get("tags") {
        let list: Vec<String> = serde_json::from_value(tags.clone())
            .map_err(|_| ApiError::bad_request("tags must be a list of strings"))?;
        if list.len() > 50 || list.iter().any(|t| t.is_empty() || t.chars().count() > 50) {
            return Err(ApiError::bad_request(
                "tags: at most 50, each 1 to 50 characters",
            ));
        }
        a.tags = list;
    }
    if let Some(schema) = body.get("asset_schema") {
        let params = schema.get("params").cloned().unwrap_or(json!([]));
        a.params_json =
            serde_json::to_string(&parse_specs(&params)?).map_err(ApiError::internal)?;
    }
    if let Some(sql) = str_field(body, "sql_logic")? {
        a.sql_logic = sql.trim().to_string();
    }
    if a.sql_logic.is_empty() {
        return Err(ApiError::bad_request("sql_logic is required"));
    }
    let specs = specs_of(a);
    if !a.allow_params && !specs.is_empty() {
        return Err(ApiError::bad_request(
            "asset_schema.params needs allow_params: true",
        ));
    }
    check_sql(&a.sql_logic, &conn, &specs)?;
    let mut extra: Map<String, Value> = serde_json::from_str(&a.extra_json).unwrap_or_default();
    for (k, v) in body {
        if !CORE_FIELDS.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }
    // The asset's own rate limit is enforced at execution (`limits::asset_limit`): check it now.
    super::limits::asset_limit(&extra)?;
    a.extra_json = Value::Object(extra).to_string();
    if a.extra_json.len() > EXTRA_MAX_BYTES {
        return Err(ApiError::bad_request(
            "the asset's other fields exceed 16 KB",
        ));
    }
    Ok(conn)
}

pub(crate) fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    match parse_json::<Value>(body)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

async fn save(s: &IngestState, asset: AssetState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::AssetUpserted(AssetUpserted {
        event_id: new_id(),
        asset,
    })])
    .await
}

/// `POST /companies/{company_id}/assets`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ManageAssets).await?;
    let body = object(&body)?;
    required("name", &body.get("name").cloned())?;
    required("connection_id", &body.get("connection_id").cloned())?;
    let now = now_ms();
    let mut a = AssetState {
        id: new_id(),
        company_id: company_id.clone(),
        user_id: caller.user_id.clone(),
        connection_id: String::new(),
        name: String::new(),
        slug: String::new(),
        description: None,
        asset_type: "DATA".into(),
        visibility: "PRIVATE".into(),
        sell_in_marketplace: false,
        allow_params: false,
        source: "MANUAL".into(),
        require_customization: false,
        accept_terms: false,
        industry_id: None,
        auc_id: None,
        tags: vec![],
        sql_logic: String::new(),
        params_json: "[]".into(),
        extra_json: "{}".into(),
        cached: false,
        timeout_ms: None,
        version: 1,
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    };
    apply_body(&s, &mut a, &body).await?;
    if s.metadata
        .asset_by_slug(&company_id, &a.slug)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict_on(
            "slug",
            "slug is already taken in this company",
        ));
    }
    let (id, slug) = (a.id.clone(), a.slug.clone());
    save(&s, a).await?;
    Ok(web::market_created(
        "Asset created",
        json!({ "asset_id": id, "slug": slug }),
    ))
}

/// An asset the caller may see: its company's own, or a shared one sold in the marketplace.
pub(crate) async fn visible(s: &IngestState, caller: &Caller, id: &str) -> ApiResult<AssetState> {
    s.metadata
        .asset(id)
        .await?
        .filter(|a| {
            a.company_id == caller.company_id
                || caller.role == Role::Operator
                || (a.visibility == "SHARED" && a.sell_in_marketplace)
        })
        .ok_or_else(|| ApiError::not_found(format!("no asset {id:?}")))
}

/// `GET /companies/{company_id}/assets/{asset_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadAssets).await?;
    let a = visible(&s, &caller, &id).await?;
    let own = a.company_id == caller.company_id;
    Ok(market("Asset retrieved", asset_json(&a, own)).into_response())
}

/// The live assets of `company_id` itself (not the marketplace's shared ones).
pub(crate) async fn own_assets(s: &IngestState, company_id: &str) -> ApiResult<Vec<AssetState>> {
    Ok(s.metadata
        .visible_assets(company_id)
        .await?
        .into_iter()
        .filter(|a| a.company_id == company_id)
        .collect())
}

/// `GET /companies/{company_id}/assets`: the company's own assets.
pub async fn list(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadAssets).await?;
    let paging = Paging::from_query(&q, 20, 100)?;
    let own: Vec<Value> = own_assets(&s, &company_id)
        .await?
        .iter()
        .map(|a| asset_json(a, true))
        .collect();
    Ok(web::market_list("Assets retrieved", &own, paging))
}

/// `sort_by=trending` counts the executions of the last seven days.
const TRENDING_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// `GET /companies/{company_id}/assets/search`: `q` (name, description, tags), `category`
/// (asset type or tag), `sort_by` name|recent|popular (succeeded executions)|trending (the
/// same over the last seven days), `limit` (≤ 100), `offset`.
pub async fn search(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadAssets).await?;
    let paging = Paging::from_query(&q, 20, 100)?;
    let text = q.get("q").filter(|v| !v.is_empty()).cloned();
    let category = q.get("category").filter(|v| !v.is_empty()).cloned();
    use projections::AssetSort;
    let sort = match q.get("sort_by").map(String::as_str).unwrap_or("name") {
        "name" => AssetSort::Name,
        "recent" => AssetSort::Recent,
        "popular" => AssetSort::Popular,
        "trending" => AssetSort::Trending {
            since_ms: now_ms() - TRENDING_WINDOW_MS,
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "sort_by {other:?} is not one of name, recent, popular, trending"
            )))
        }
    };
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::bad_request("q is longer than 200 characters"));
    }
    if text
        .as_ref()
        .is_some_and(|t| t.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("q may not hold control characters"));
    }
    let query = projections::AssetQuery {
        text,
        category,
        sort,
        limit: paging.limit,
        offset: paging.offset,
    };
    let (found, total) = s.metadata.search_assets(&company_id, &query).await?;
    let rows: Vec<Value> = found
        .iter()
        .map(|a| asset_json(a, a.company_id == company_id))
        .collect();
    let n = rows.len();
    Ok(market_page(
        "Assets found",
        rows,
        total,
        paging.limit as u64,
        paging.offset as u64,
        n,
    )
    .into_response())
}

pub(crate) async fn own_asset(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    id: &str,
) -> ApiResult<AssetState> {
    scoped(s, caller, company_id, Action::ManageAssets).await?;
    s.metadata
        .asset(id)
        .await?
        .filter(|a| a.company_id == company_id)
        .ok_or_else(|| ApiError::not_found(format!("no asset {id:?} in this company")))
}

/// `PATCH /companies/{company_id}/assets/{asset_id}`
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let current = own_asset(&s, &caller, &company_id, &id).await?;
    let body = object(&body)?;
    let mut next = current.clone();
    apply_body(&s, &mut next, &body).await?;
    if next == current {
        return Err(ApiError::bad_request(
            "nothing to update: send at least one changed field",
        ));
    }
    next.version = current.version + 1;
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Asset updated", json!({ "asset_id": id })).into_response())
}

/// `DELETE /companies/{company_id}/assets/{asset_id}`
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let current = own_asset(&s, &caller, &company_id, &id).await?;
    let mut next = current.clone();
    next.deleted = true;
    next.version = current.version + 1;
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Asset deleted", json!({ "asset_id": id })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_come_from_names() {
        assert_eq!(slugify("Sales by Region (EU)"), "sales-by-region-eu");
        assert_eq!(slugify("  --Ünïcode & co-- "), "n-code-co");
        assert_eq!(slugify("!!!"), "");
        assert!(slugify(&"a ".repeat(100)).len() <= 80);
    }
}
