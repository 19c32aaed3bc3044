//! A seller's tools on its own assets, run at the source without charge: `infoschema` (the
//! result's columns, and `infoschema/save` to keep them on the asset), `scan_column` (distinct
//! values of one result column, ≤ 5,000), `test` (a short run that reports success or the
//! source's reason) and `predicted_price` (a deterministic estimate from comparable assets).

use super::analyze::{body_params, prepare, query_params, Resolved};
use super::assets::own_asset;
use super::money::active;
use super::*;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::AssetQuery;
use schemas::{AssetState, AssetUpserted};
use serde_json::Map;
use sources::model::Rows;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use web::{market, Caller};

/// Distinct values `scan_column` returns by default and at most.
const SCAN_DEFAULT: usize = 1_000;
const SCAN_MAX: usize = 5_000;

/// Runs the caller's own asset `id` with `params` and at most `max_rows` rows.
async fn run_own(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    id: &str,
    params: &Map<String, Value>,
    max_rows: usize,
    wrap: impl FnOnce(&sources::Connector, &str) -> ApiResult<String>,
) -> ApiResult<(AssetState, Result<Rows, sources::model::SourceError>, f64)> {
    let asset = own_asset(s, caller, company_id, id).await?;
    let seller = s
        .metadata
        .company(company_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such company"))?;
    let connection = s.metadata.connection(&asset.connection_id).await?;
    let resolved = Resolved::for_owner(asset.clone(), seller, connection);
    let mut p = prepare(s, &resolved, params).await?;
    p.limits.max_rows = max_rows;
    let sql = wrap(&p.connector, &p.sql)?;
    let started = Instant::now();
    let rows = p.connector.query(&sql, &p.binds, p.limits).await;
    let ms = (started.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    Ok((asset, rows, ms))
}

fn columns_json(rows: &Rows) -> Value {
    json!(rows
        .columns
        .iter()
        .zip(rows.unique_names())
        .map(|(c, name)| json!({"name": name, "type": c.type_name}))
        .collect::<Vec<_>>())
}

async fn infoschema_of(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    id: &str,
    params: &Map<String, Value>,
) -> ApiResult<(AssetState, Value)> {
    let (asset, rows, _) = run_own(s, caller, company_id, id, params, 1, |_, sql| {
        Ok(sql.to_string())
    })
    .await?;
    let rows = rows?;
    let params: Value = serde_json::from_str(&asset.params_json).unwrap_or(json!([]));
    Ok((
        asset,
        json!({"columns": columns_json(&rows), "params": params}),
    ))
}

/// `GET …/assets/{asset_id}/infoschema`: the columns (name, type) the asset's query returns,
/// and its declared parameters. Parameters for the run come as query parameters.
pub async fn infoschema(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (_, info) = infoschema_of(&s, &caller, &company_id, &id, &query_params(&q)).await?;
    Ok(market("Asset schema retrieved", info).into_response())
}

/// `GET …/assets/{asset_id}/infoschema/save`: the same, kept on the asset (`infoschema` in
/// its fields; `version` goes up).
pub async fn infoschema_save(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (asset, info) = infoschema_of(&s, &caller, &company_id, &id, &query_params(&q)).await?;
    let mut extra: Map<String, Value> = serde_json::from_str(&asset.extra_json).unwrap_or_default();
    extra.insert(
        "infoschema".into(),
        json!({"columns": info["columns"], "saved_at": rfc3339(crate::commands::now_ms())}),
    );
    let mut next = asset.clone();
    next.extra_json = Value::Object(extra).to_string();
    next.version = asset.version + 1;
    next.updated_at_ms = crate::commands::now_ms().max(asset.updated_at_ms + 1);
    s.command_checked(vec![EntityEvent::AssetUpserted(AssetUpserted {
        event_id: new_id(),
        asset: next,
    })])
    .await?;
    Ok(market("Asset schema saved", info).into_response())
}

/// `POST …/assets/{asset_id}/scan_column`: `{"column", "limit"?, "params"?}` → the distinct
/// values of one column of the asset's result (default 1,000, at most 5,000).
pub async fn scan_column(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // Another company's asset is refused before its body is looked at.
    own_asset(&s, &caller, &company_id, &id).await?;
    let b: Value = web::parse_json(&body)?;
    let column = b
        .get("column")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && c.len() <= 128)
        .ok_or_else(|| ApiError::bad_request("column is required (a column of the result)"))?
        .to_string();
    let limit = match b.get("limit") {
        None | Some(Value::Null) => SCAN_DEFAULT,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=SCAN_MAX as u64).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {SCAN_MAX}")))?
            as usize,
    };
    let params = body_params(&body)?;
    // The column must be one the query returns: its name is then quoted for the engine.
    let (_, info) = infoschema_of(&s, &caller, &company_id, &id, &params).await?;
    let known = info["columns"]
        .as_array()
        .is_some_and(|cols| cols.iter().any(|c| c["name"] == column.as_str()));
    if !known {
        return Err(ApiError::bad_request(format!(
            "column {column:?} is not in the asset's result"
        )));
    }
    let (_, rows, ms) = run_own(
        &s,
        &caller,
        &company_id,
        &id,
        &params,
        limit,
        |conn, sql| {
            Ok(format!(
                "SELECT DISTINCT q.{col} AS {col} FROM ({sql}) q",
                col = conn.quote_ident(&column)
            ))
        },
    )
    .await?;
    let rows = rows?;
    let values: Vec<Value> = rows.rows.into_iter().filter_map(|mut r| r.pop()).collect();
    Ok(market(
        "Column scanned",
        json!({"column": column, "values": values, "count": values.len(),
               "truncated": rows.truncated, "duration_ms": ms}),
    )
    .into_response())
}

/// `GET|POST …/assets/{asset_id}/test`: a run of at most 10 rows (parameters as query
/// parameters or `{"params"}`), never charged. A source error is a `200` with `status:
/// failed` and the source's reason.
pub async fn test(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    own_asset(&s, &caller, &company_id, &id).await?;
    let mut params = query_params(&q);
    params.extend(body_params(&body)?);
    let (_, rows, ms) = run_own(&s, &caller, &company_id, &id, &params, 10, |_, sql| {
        Ok(sql.to_string())
    })
    .await?;
    Ok(market("Asset tested", test_report(rows, ms)).into_response())
}

/// A seller's test run as answered: the rows, or `status: failed` with the source's reason
/// (a `200` either way: the test worked, the query did not).
pub(crate) fn test_report(rows: Result<Rows, sources::model::SourceError>, ms: f64) -> Value {
    match rows {
        Ok(rows) => json!({
            "status": "ok", "duration_ms": ms, "columns": columns_json(&rows),
            "row_count": rows.rows.len(), "rows": rows.objects(), "error": null,
        }),
        Err(e) => json!({
            "status": "failed", "duration_ms": ms, "columns": [], "row_count": 0,
            "rows": [], "error": e.to_string(),
        }),
    }
}

/// The median of `prices` (credits), rounded up; `None` when empty.
pub fn median_credits(prices: &mut [i64]) -> Option<i64> {
    if prices.is_empty() {
        return None;
    }
    prices.sort_unstable();
    let n = prices.len();
    Some(if n % 2 == 1 {
        prices[n / 2]
    } else {
        (prices[n / 2 - 1] + prices[n / 2] + 1) / 2
    })
}

/// `GET …/assets/{asset_id}/predicted_price`: the median price in force of comparable assets
/// other companies sell in the marketplace: the same `asset_type` and `industry_id`, or, with
/// none of those, the same `asset_type` in any industry. Deterministic for the same
/// marketplace; the answer lists the comparables it used.
pub async fn predicted_price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let asset = own_asset(&s, &caller, &company_id, &id).await?;
    let query = AssetQuery {
        text: None,
        category: Some(asset.asset_type.clone()),
        sort: projections::AssetSort::Name,
        limit: 100,
        offset: 0,
    };
    let (found, _) = s.metadata.search_assets(&company_id, &query).await?;
    let mut priced: Vec<(AssetState, i64)> = Vec::new();
    for a in found {
        if a.company_id == company_id || a.asset_type != asset.asset_type {
            continue;
        }
        if let Some(p) = active(&s.metadata.prices(&a.id).await?) {
            priced.push((a, p.credits));
        }
    }
    let same_industry: Vec<&(AssetState, i64)> = priced
        .iter()
        .filter(|(a, _)| asset.industry_id.is_some() && a.industry_id == asset.industry_id)
        .collect();
    let (basis, used): (&str, Vec<&(AssetState, i64)>) = if same_industry.is_empty() {
        ("same asset_type", priced.iter().collect())
    } else {
        ("same asset_type and industry_id", same_industry)
    };
    let mut credits: Vec<i64> = used.iter().map(|(_, c)| *c).collect();
    let median = median_credits(&mut credits);
    let per_usd = s.cfg.credits_per_usd.max(1) as f64;
    Ok(market(
        "Predicted price",
        json!({
            "predicted_price_credits": median,
            "predicted_price_usd": median.map(|c| c as f64 / per_usd),
            "method": "median of the prices in force of comparable shared assets",
            "basis": basis,
            "comparables": used.iter().map(|(a, c)| json!({"asset_id": a.id, "industry_id": a.industry_id, "price_credits": c})).collect::<Vec<_>>(),
        }),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_rounds_up_between_two() {
        assert_eq!(super::median_credits(&mut []), None);
        assert_eq!(super::median_credits(&mut [5]), Some(5));
        assert_eq!(super::median_credits(&mut [9, 1, 5]), Some(5));
        assert_eq!(super::median_credits(&mut [1, 4]), Some(3));
    }
}
