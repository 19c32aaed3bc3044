//! Prices and credits. An asset's price history (`…/assets/{asset_id}/prices`) is a type 2
//! dimension through the log: a new price ends the one in force; the price is fixed in whole
//! credits when it is set (`TALLY_CREDITS_PER_USD`, rounded up). Credits are topped up by the
//! operator (`POST /companies/{id}/credits`, `Idempotency-Key` required) and every movement is
//! a ledger row (`GET /companies/{id}/credits/ledger`).

use super::companies::scoped;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::{credits_for_usd, MoneyStore, Price, TopUpOutcome};
use schemas::PriceSet;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, market_page, parse_json, Caller, Paging};

/// The largest single top-up, and the largest price, in credits.
const MAX_CREDITS: i64 = 1_000_000_000_000;

pub(crate) fn money(s: &IngestState) -> ApiResult<&Arc<dyn MoneyStore>> {
    s.money
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process has no access to credits"))
}

fn price_json(p: &Price) -> Value {
    json!({
        "aph_id": p.aph_id,
        "asset_id": p.asset_id,
        "price_usd": p.price_usd,
        "price_credits": p.credits,
        "active": p.date_ended_ms.is_none(),
        "date_created": rfc3339(p.date_created_ms),
        "date_ended": p.date_ended_ms.map(rfc3339),
    })
}

/// The price in force, if any (the newest without an end).
pub(crate) fn active(prices: &[Price]) -> Option<&Price> {
    prices.iter().find(|p| p.date_ended_ms.is_none())
}

async fn own_asset_prices(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    asset_id: &str,
    action: Action,
) -> ApiResult<Vec<Price>> {
    scoped(s, caller, company_id, action).await?;
    // A data endpoint is priced like an asset, under its own id (`…/endpoints/{id}/prices`).
    let owner = match s.metadata.asset(asset_id).await? {
        Some(a) => Some(a.company_id),
        None => s
            .metadata
            .endpoints_where(projections::EndpointScope::One, asset_id)
            .await?
            .pop()
            .map(|e| e.company_id),
    };
    if owner.as_deref() != Some(company_id) {
        return Err(ApiError::not_found(format!(
            "no asset or endpoint {asset_id:?} in this company"
        )));
    }
    Ok(s.metadata.prices(asset_id).await?)
}

/// `GET /companies/{company_id}/assets/{asset_id}/prices`: newest first.
pub async fn prices(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let all = own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ManagePrices).await?;
    let paging = Paging::from_query(&q, 50, 500)?;
    let rows: Vec<Value> = paging.slice(&all).iter().map(price_json).collect();
    let n = rows.len();
    Ok(market_page(
        "Prices retrieved",
        rows,
        all.len() as u64,
        paging.limit as u64,
        paging.offset as u64,
        n,
    )
    .into_response())
}

/// `GET …/prices/active`
pub async fn active_price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let all = own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ReadAssets).await?;
    let p = active(&all).ok_or_else(|| ApiError::not_found("this asset has no price in force"))?;
    Ok(market("Active price retrieved", price_json(p)).into_response())
}

/// `GET …/prices/{aph_id}`
pub async fn price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id, aph_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let all = own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ManagePrices).await?;
    let p = all
        .iter()
        .find(|p| p.aph_id == aph_id)
        .ok_or_else(|| ApiError::not_found(format!("no price {aph_id:?} for this asset")))?;
    Ok(market("Price retrieved", price_json(p)).into_response())
}

#[derive(Deserialize)]
struct PriceBody {
    price_usd: Option<f64>,
}

/// The price `aph_id` of the asset, if it is the one in force: an ended price is history (the
/// charges made under it point at it) and never changes.
async fn price_in_force(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    asset_id: &str,
    aph_id: &str,
) -> ApiResult<Price> {
    let all = own_asset_prices(s, caller, company_id, asset_id, Action::ManagePrices).await?;
    let p = all
        .into_iter()
        .find(|p| p.aph_id == aph_id)
        .ok_or_else(|| ApiError::not_found(format!("no price {aph_id:?} for this asset")))?;
    if p.date_ended_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this price has ended; price history never changes (POST a new price instead)",
        ));
    }
    Ok(p)
}

/// Ends the price in force `p` without a successor: the asset is not for sale until a new
/// price is set.
async fn end_price(s: &IngestState, company_id: String, p: &Price) -> ApiResult<Response> {
    let event = schemas::PriceEnded {
        event_id: new_id(),
        aph_id: p.aph_id.clone(),
        company_id,
        asset_id: p.asset_id.clone(),
        ended_at_ms: now_ms().max(p.date_created_ms),
    };
    let ended = Price {
        date_ended_ms: Some(event.ended_at_ms),
        ..p.clone()
    };
    s.command_checked(vec![EntityEvent::PriceEnded(event)])
        .await?;
    Ok(market("Price ended", price_json(&ended)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricePatch {
    price_usd: Option<f64>,
    active: Option<bool>,
}

/// `PATCH …/prices/{aph_id}` on the price in force: `{"price_usd"}` replaces it by a new price
/// (history keeps both; the answer names the new `aph_id` and the one it `replaces`), and
/// `{"active": false}` ends it (the asset is then not for sale).
pub async fn patch_price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id, aph_id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let p = price_in_force(&s, &caller, &company_id, &asset_id, &aph_id).await?;
    let b: PricePatch = parse_json(&body)?;
    match (b.price_usd, b.active) {
        (Some(usd), None | Some(true)) => {
            let event = new_price(&s, company_id, asset_id, usd)?;
            let data = json!({
                "aph_id": event.aph_id,
                "price_credits": event.credits,
                "replaces": p.aph_id,
            });
            s.command_checked(vec![EntityEvent::PriceSet(event)])
                .await?;
            Ok(market("Price replaced", data).into_response())
        }
        (None, Some(false)) => end_price(&s, company_id, &p).await,
        (None, Some(true)) => Ok(market("Price unchanged", price_json(&p)).into_response()),
        (Some(_), Some(false)) => Err(ApiError::bad_request(
            "give either price_usd (a new price) or active: false (end the price), not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "give price_usd (a new price) or active: false (end the price)",
        )),
    }
}

/// `DELETE …/prices/{aph_id}`: ends the price in force (kept in the history); the asset is not
/// for sale until a new price is set.
pub async fn delete_price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id, aph_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let p = price_in_force(&s, &caller, &company_id, &asset_id, &aph_id).await?;
    end_price(&s, company_id, &p).await
}

/// A price of `usd` in force from now.
fn new_price(
    s: &IngestState,
    company_id: String,
    asset_id: String,
    usd: f64,
) -> ApiResult<PriceSet> {
    Ok(PriceSet {
        event_id: new_id(),
        aph_id: new_id(),
        company_id,
        asset_id,
        price_usd: usd,
        credits: credits(s, usd)?,
        set_at_ms: now_ms(),
    })
}

fn credits(s: &IngestState, usd: f64) -> ApiResult<i64> {
    credits_for_usd(usd, s.cfg.credits_per_usd)
        .filter(|c| *c <= MAX_CREDITS)
        .ok_or_else(|| ApiError::bad_request("price_usd must be a number from 0 to 1,000,000,000"))
}

/// `POST …/prices`: a new price in force from now; the previous one ends. `0` is free.
pub async fn set_price(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ManagePrices).await?;
    let b: PriceBody = parse_json(&body)?;
    let usd = *required("price_usd", &b.price_usd)?;
    let event = new_price(&s, company_id, asset_id, usd)?;
    let (aph_id, price_credits) = (event.aph_id.clone(), event.credits);
    s.command_checked(vec![EntityEvent::PriceSet(event)])
        .await?;
    Ok((
        StatusCode::CREATED,
        market(
            "Price set",
            json!({ "aph_id": aph_id, "price_credits": price_credits }),
        ),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscountBody {
    discount_percent: Option<f64>,
    discount_amount_usd: Option<f64>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    buyer_company_id: Option<String>,
}

fn instant(field: &str, v: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 time")))
}

/// `POST …/prices/discount`: `discount_percent` (0 < p ≤ 100) or `discount_amount_usd` off the
/// price in force, from `starts_at` (default now) until `ends_at` (default open), for every
/// buyer or only `buyer_company_id`. The best discount that applies wins; they never add up.
pub async fn set_discount(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ManagePrices).await?;
    let b: DiscountBody = parse_json(&body)?;
    let (percent, amount_credits) = match (b.discount_percent, b.discount_amount_usd) {
        (Some(p), None) if p.is_finite() && p > 0.0 && p <= 100.0 => (Some(p), None),
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "discount_percent must be more than 0 and at most 100",
            ))
        }
        (None, Some(usd)) if usd > 0.0 => (None, Some(credits(&s, usd)?)),
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "discount_amount_usd must be more than 0",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of discount_percent and discount_amount_usd",
            ))
        }
    };
    let now = now_ms();
    let starts_at_ms = match &b.starts_at {
        Some(t) => instant("starts_at", t)?,
        None => now,
    };
    let ends_at_ms = b
        .ends_at
        .as_deref()
        .map(|t| instant("ends_at", t))
        .transpose()?;
    if ends_at_ms.is_some_and(|e| e <= starts_at_ms) {
        return Err(ApiError::bad_request("ends_at must be after starts_at"));
    }
    if let Some(buyer) = &b.buyer_company_id {
        if s.metadata.company(buyer).await?.is_none() {
            return Err(ApiError::bad_request(format!(
                "buyer_company_id {buyer:?} is no company"
            )));
        }
    }
    let event = schemas::DiscountSet {
        event_id: new_id(),
        discount_id: new_id(),
        company_id,
        asset_id,
        percent,
        amount_credits,
        starts_at_ms,
        ends_at_ms,
        buyer_company_id: b.buyer_company_id,
        set_at_ms: now,
    };
    let out = json!({
        "discount_id": event.discount_id,
        "discount_percent": event.percent,
        "discount_credits": event.amount_credits,
        "starts_at": rfc3339(event.starts_at_ms),
        "ends_at": event.ends_at_ms.map(rfc3339),
        "buyer_company_id": event.buyer_company_id,
    });
    s.command_checked(vec![EntityEvent::DiscountSet(event)])
        .await?;
    Ok((StatusCode::CREATED, market("Discount set", out)).into_response())
}

/// `GET …/prices/discount`: the asset's discounts, newest first.
pub async fn discounts(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ManagePrices).await?;
    let rows: Vec<Value> = s
        .metadata
        .discounts(&asset_id)
        .await?
        .iter()
        .map(|d| {
            json!({
                "discount_id": d.discount_id,
                "discount_percent": d.percent,
                "discount_credits": d.amount_credits,
                "starts_at": rfc3339(d.starts_at_ms),
                "ends_at": d.ends_at_ms.map(rfc3339),
                "buyer_company_id": d.buyer_company_id,
            })
        })
        .collect();
    Ok(market("Discounts retrieved", json!(rows)).into_response())
}

/// `POST …/prices/calculate_credits`: USD → whole credits, rounded up; nothing is saved.
pub async fn calculate_credits(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, asset_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    own_asset_prices(&s, &caller, &company_id, &asset_id, Action::ReadAssets).await?;
    let b: PriceBody = parse_json(&body)?;
    let usd = *required("price_usd", &b.price_usd)?;
    Ok(market(
        "Credits calculated",
        json!({
            "price_usd": usd,
            "credits": credits(&s, usd)?,
            "credits_per_usd": s.cfg.credits_per_usd,
        }),
    )
    .into_response())
}

#[derive(Deserialize)]
struct TopUpBody {
    credits: Option<i64>,
    reason: Option<String>,
}

/// `POST /companies/{company_id}/credits` (operator): adds credits once per `Idempotency-Key`.
pub async fn top_up(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::TopUpCredits).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::bad_request("an Idempotency-Key header (1 to 255 characters) is required")
        })?;
    let b: TopUpBody = parse_json(&body)?;
    let amount = *required("credits", &b.credits)?;
    if !(1..=MAX_CREDITS).contains(&amount) {
        return Err(ApiError::bad_request(
            "credits must be a whole number from 1 to 1,000,000,000,000",
        ));
    }
    let reason = opt_text("reason", b.reason.as_deref(), 500)?;
    let hash = hex::encode(Sha256::digest(&body));
    let outcome = money(&s)?
        .top_up(&company_id, amount, reason.as_deref(), key, &hash, now_ms())
        .await?;
    match outcome {
        TopUpOutcome::Done { balance, entry_id } => Ok((
            StatusCode::CREATED,
            market(
                "Credits added",
                json!({ "balance": balance, "entry_id": entry_id }),
            ),
        )
            .into_response()),
        TopUpOutcome::Replayed { balance, entry_id } => {
            let mut resp = (
                StatusCode::CREATED,
                market(
                    "Credits added",
                    json!({ "balance": balance, "entry_id": entry_id }),
                ),
            )
                .into_response();
            resp.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            Ok(resp)
        }
        TopUpOutcome::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different body",
        )),
    }
}

/// `GET /companies/{company_id}/credits/ledger`: newest first, paginated.
pub async fn ledger(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadLedger).await?;
    let paging = Paging::from_query(&q, 50, 500)?;
    let (entries, total) = money(&s)?
        .ledger(&company_id, paging.limit, paging.offset)
        .await?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "entry_id": e.entry_id,
                "kind": e.kind,
                "credits": e.credits,
                "balance_after": e.balance_after,
                "execution_id": e.execution_id,
                "counterparty_company_id": e.counterparty_company_id,
                "reason": e.reason,
                "date_created": rfc3339(e.created_at_ms),
            })
        })
        .collect();
    let n = rows.len();
    Ok(market_page(
        "Ledger retrieved",
        rows,
        total,
        paging.limit as u64,
        paging.offset as u64,
        n,
    )
    .into_response())
}
