//! Asset statistics for the seller: `GET /companies/{company_id}/assets/statistics` (every asset
//! of the company) and `…/assets/{asset_id}/statistics` (one), over the last `days` UTC days
//! (default 30, at most 366): executions, successes and failures, the error rate, distinct
//! buying companies, the seller's revenue in credits and p50/p95 durations, in total and per
//! day. Read from the executions the money path keeps, so an answered execution counts at once.

use super::companies::scoped;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::execution_stats::{per_day, totals, ExecutionRow};
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, Caller};

const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 366;
const DAY_MS: i64 = 86_400_000;

/// The window's start: `days` whole UTC days back, today included.
fn since_ms(q: &HashMap<String, String>, now_ms: i64) -> ApiResult<(i64, i64)> {
    let days = match q.get("days") {
        None => DEFAULT_DAYS,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!("days must be a whole number from 1 to {MAX_DAYS}"))
            })?,
    };
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
    Ok((days, today - (days - 1) * DAY_MS))
}

fn period(days: i64, since: i64, now: i64) -> Value {
    json!({ "days": days, "start": rfc3339(since), "end": rfc3339(now) })
}

async fn executions(s: &IngestState, ids: &[String], since: i64) -> ApiResult<Vec<ExecutionRow>> {
    Ok(super::money::money(s)?.executions_of(ids, since).await?)
}

/// `GET /companies/{company_id}/assets/statistics`
pub async fn all(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadSales).await?;
    let now = now_ms();
    let (days, since) = since_ms(&q, now)?;
    let assets = super::assets::own_assets(&s, &company_id).await?;
    let ids: Vec<String> = assets.iter().map(|a| a.id.clone()).collect();
    let rows = executions(&s, &ids, since).await?;
    let mut by_asset: HashMap<&str, Vec<&ExecutionRow>> = HashMap::new();
    for r in &rows {
        by_asset.entry(r.asset_id.as_str()).or_default().push(r);
    }
    let per_asset: Vec<Value> = assets
        .iter()
        .map(|a| {
            let mine = by_asset.get(a.id.as_str()).cloned().unwrap_or_default();
            json!({
                "asset_id": a.id,
                "name": a.name,
                "slug": a.slug,
                "totals": totals(mine),
            })
        })
        .collect();
    let data = json!({
        "company_id": company_id,
        "period": period(days, since, now),
        "asset_count": assets.len(),
        "totals": totals(&rows),
        "per_day": per_day(&rows),
        "assets": per_asset,
    });
    Ok(market("Asset statistics retrieved", data).into_response())
}

/// `GET /companies/{company_id}/assets/{asset_id}/statistics`
pub async fn one(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadSales).await?;
    let asset = s
        .metadata
        .asset(&asset_id)
        .await?
        .filter(|a| a.company_id == company_id)
        .ok_or_else(|| ApiError::not_found(format!("no asset {asset_id:?} in this company")))?;
    let mut data = of_item(&s, &asset.id, &q).await?;
    data["asset_id"] = json!(asset.id);
    data["name"] = json!(asset.name);
    data["slug"] = json!(asset.slug);
    Ok(market("Asset statistics retrieved", data).into_response())
}

/// The statistics of one sold item (an asset, or a data endpoint: both are executed and
/// charged under their id) over the window `q` asks for: period, totals and per day.
pub(crate) async fn of_item(
    s: &IngestState,
    id: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Value> {
    let now = now_ms();
    let (days, since) = since_ms(q, now)?;
    let rows = executions(s, &[id.to_string()], since).await?;
    Ok(json!({
        "period": period(days, since, now),
        "totals": totals(&rows),
        "per_day": per_day(&rows),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_whole_utc_days_with_today() {
        let now = 10 * DAY_MS + 5;
        let q = |v: &str| HashMap::from([("days".to_string(), v.to_string())]);
        assert_eq!(
            since_ms(&HashMap::new(), now).ok(),
            Some((30, -19 * DAY_MS))
        );
        assert_eq!(since_ms(&q("1"), now).ok(), Some((1, 10 * DAY_MS)));
        for bad in ["0", "367", "-1", "x", ""] {
            assert!(since_ms(&q(bad), now).is_err(), "{bad}");
        }
    }
}
