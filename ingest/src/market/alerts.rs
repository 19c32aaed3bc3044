//! Alerts under `/companies/{company_id}/users/{user_id}/alerts` (the contract's routes, with
//! integer `alert_id`s) and what they deliver: the in-app notifications under
//! `…/users/{user_id}/notifications` and each rule's webhook deliveries. A rule watches one
//! `kind`:
//! - `quota`: 80 % and 100 % of the company's monthly allocation (once per period each);
//! - `low_balance`: the balance falling below `threshold_credits` (once per crossing);
//! - `price_changed`, `asset_updated`: a new price or a new version of `asset_id`;
//! - `executions_failing`: for the seller of `asset_id`, `failing_percent` of its executions
//!   failing within a fixed window of `window_minutes`, once `min_executions` ran in it.
//!
//! Rules are entities through the log. With a `webhook_url` (which passes the network guard), a
//! signing secret is made, returned once and kept sealed. Only the user itself reads and changes
//! its rules and notifications; `…/alerts/asset/{asset_id}/all` lists the company's rules on an
//! asset for its admins.

use super::assets::visible;
use super::companies::scoped_to_self;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::alert_store::{AlertStore, Delivery, Firing};
use projections::{Alert, AlertScope};
use schemas::{AlertState, AlertUpserted};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::{Action, Role};
use web::{market, market_all, market_page, parse_json, patch_field, Caller, Paging};

/// The kinds a rule may watch, and whether each needs an asset.
const KINDS: [(&str, bool); 5] = [
    ("quota", false),
    ("low_balance", false),
    ("price_changed", true),
    ("asset_updated", true),
    ("executions_failing", true),
];

fn alert_json(a: &Alert) -> Value {
    let s = &a.state;
    json!({
        "alert_id": a.alert_id,
        "asset_id": s.asset_id,
        "company_id": s.company_id,
        "user_id": s.user_id,
        "is_active": s.is_active,
        "kind": s.kind,
        "name": s.name,
        "threshold_credits": s.threshold_credits,
        "failing_percent": s.failing_percent,
        "window_minutes": s.window_minutes,
        "min_executions": s.min_executions,
        "webhook_url": s.webhook_url,
        "date_created": rfc3339(s.created_at_ms),
        "last_updated": rfc3339(s.updated_at_ms),
    })
}

fn firing_json(f: &Firing) -> Value {
    let r = &f.record;
    json!({
        "notification_id": r.firing_id,
        "alert_id": r.alert_number,
        "kind": r.kind,
        "asset_id": r.asset_id,
        "window": r.window,
        "message": r.reason,
        "is_read": f.read_at_ms.is_some(),
        "read_at": f.read_at_ms.map(rfc3339),
        "date_created": rfc3339(r.at_ms),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "notification_id": d.firing_id,
        "url": d.url,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": (d.status == "pending").then(|| rfc3339(d.next_attempt_at_ms)),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "date_created": rfc3339(d.created_at_ms),
        "delivered_at": d.delivered_at_ms.map(rfc3339),
    })
}

fn store(s: &IngestState) -> ApiResult<&Arc<dyn AlertStore>> {
    s.alerts
        .as_ref()
        .ok_or_else(|| ApiError::internal("no alert store configured"))
}

/// Checks that the path names the caller itself in a company it may act on.
async fn as_user(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    user_id: &str,
) -> ApiResult<()> {
    let path = (company_id, user_id);
    scoped_to_self(
        s,
        caller,
        path,
        Action::ManageAlerts,
        "alerts and notifications",
    )
    .await
}

/// The caller's live rules.
async fn own(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    user_id: &str,
) -> ApiResult<Vec<Alert>> {
    as_user(s, caller, company_id, user_id).await?;
    let all = s
        .metadata
        .alerts_where(AlertScope::Company, company_id)
        .await?;
    Ok(all
        .into_iter()
        .filter(|a| a.state.user_id == user_id)
        .collect())
}

async fn one(
    s: &IngestState,
    caller: &Caller,
    (company_id, user_id, alert_id): (&str, &str, &str),
) -> ApiResult<Alert> {
    let n = int_id("alert_id", alert_id)?;
    own(s, caller, company_id, user_id)
        .await?
        .into_iter()
        .find(|a| a.alert_id == n)
        .ok_or_else(|| ApiError::not_found(format!("no alert {n}")))
}

fn list(message: &str, rows: Vec<&Alert>) -> Response {
    let rows: Vec<Value> = rows.into_iter().map(alert_json).collect();
    market_all(message, rows).into_response()
}

fn bounded(field: &str, v: Option<i64>, (lo, hi): (i64, i64)) -> ApiResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        Some(_) => Err(ApiError::bad_request_on(
            field,
            format!("{field} must be an integer from {lo} to {hi}"),
        )),
    }
}

/// A webhook URL: http(s), at most 2,000 characters, and a host the network guard lets through.
async fn webhook_url(s: &IngestState, url: &str) -> ApiResult<String> {
    let bad = |why: String| ApiError::bad_request_on("webhook_url", why);
    if url.len() > 2_000 {
        return Err(bad("webhook_url is longer than 2000 characters".into()));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(format!("webhook_url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("webhook_url must be an http or https URL".into()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("webhook_url has no host".into()))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let registry = s
        .sources
        .as_ref()
        .ok_or_else(|| ApiError::internal("no network guard configured"))?;
    match registry.guard().resolve(host, port).await {
        Ok(_) => Ok(parsed.to_string()),
        Err(e @ sources::GuardError::Resolve { .. }) => Err(bad(e.to_string())),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "destination_not_allowed",
            e.to_string(),
        )
        .with_field("webhook_url")),
    }
}

/// A fresh signing secret: what the caller is shown once, and its sealed form.
fn new_secret(s: &IngestState, alert_id: &str) -> ApiResult<(String, String)> {
    let registry = s
        .sources
        .as_ref()
        .ok_or_else(|| ApiError::internal("no secret key configured"))?;
    let mut bytes = [0u8; 24];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    let secret = format!("whsec_{}", hex::encode(bytes));
    let sealed = registry.seal_secret(alert_id, secret.as_bytes());
    Ok((secret, sealed))
}

/// Whether `kind` is one a rule may watch, and if so whether it needs an asset.
fn known_kind(kind: &str) -> ApiResult<bool> {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, needs_asset)| *needs_asset)
        .ok_or_else(|| {
            ApiError::bad_request_on(
                "kind",
                "kind must be one of quota, low_balance, price_changed, asset_updated, executions_failing",
            )
        })
}

/// Checks the kind's own fields (filling their defaults), whatever else the rule has.
fn check_kind(a: &mut AlertState) -> ApiResult<()> {
    let needs_asset = known_kind(&a.kind)?;
    if needs_asset && a.asset_id.is_none() {
        return Err(ApiError::bad_request_on(
            "asset_id",
            format!("a {} alert needs asset_id", a.kind),
        ));
    }
    if a.kind == "low_balance" && a.threshold_credits.is_none() {
        return Err(ApiError::bad_request_on(
            "threshold_credits",
            "a low_balance alert needs threshold_credits",
        ));
    }
    if a.kind == "executions_failing" {
        a.failing_percent.get_or_insert(50);
        a.window_minutes.get_or_insert(60);
        a.min_executions.get_or_insert(10);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    kind: Option<String>,
    asset_id: Option<String>,
    name: Option<String>,
    threshold_credits: Option<i64>,
    failing_percent: Option<i64>,
    window_minutes: Option<i64>,
    min_executions: Option<i64>,
    webhook_url: Option<String>,
    is_active: Option<bool>,
}

async fn save(s: &IngestState, alert: AlertState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::AlertUpserted(AlertUpserted {
        event_id: new_id(),
        alert,
    })])
    .await
}

/// The asset a rule watches: one the caller may see; for `executions_failing`, its own.
async fn watched(
    s: &IngestState,
    caller: &Caller,
    kind: &str,
    asset_id: &str,
) -> ApiResult<String> {
    let asset = visible(s, caller, asset_id).await?;
    if kind == "executions_failing" && asset.company_id != caller.company_id {
        return Err(ApiError::bad_request_on(
            "asset_id",
            "executions_failing watches an asset of the caller's own company",
        ));
    }
    Ok(asset.id)
}

/// `POST …/alerts`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    as_user(&s, &caller, &company_id, &user_id).await?;
    let b: CreateBody = parse_json(&body)?;
    let kind = required("kind", &b.kind)?.clone();
    let now = now_ms();
    let id = new_id();
    let mut state = AlertState {
        id: id.clone(),
        company_id: company_id.clone(),
        user_id: user_id.clone(),
        asset_id: None,
        kind,
        name: opt_text("name", b.name.as_deref(), 200)?,
        threshold_credits: bounded(
            "threshold_credits",
            b.threshold_credits,
            (1, 1_000_000_000_000),
        )?,
        failing_percent: bounded("failing_percent", b.failing_percent, (1, 100))?.map(|n| n as i32),
        window_minutes: bounded("window_minutes", b.window_minutes, (1, 10_080))?.map(|n| n as i32),
        min_executions: bounded("min_executions", b.min_executions, (1, 1_000_000))?,
        webhook_url: None,
        webhook_secret_sealed: None,
        is_active: b.is_active.unwrap_or(true),
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    };
    known_kind(&state.kind)?;
    if let Some(asset_id) = &b.asset_id {
        state.asset_id = Some(watched(&s, &caller, &state.kind, asset_id).await?);
    }
    check_kind(&mut state)?;
    let mut secret = None;
    if let Some(url) = &b.webhook_url {
        state.webhook_url = Some(webhook_url(&s, url).await?);
        let (shown, sealed) = new_secret(&s, &id)?;
        state.webhook_secret_sealed = Some(sealed);
        secret = Some(shown);
    }
    save(&s, state).await?;
    let created = s
        .metadata
        .alerts_where(AlertScope::Company, &company_id)
        .await?
        .into_iter()
        .find(|a| a.state.id == id)
        .ok_or_else(|| ApiError::internal("the alert was saved but cannot be read back"))?;
    let mut data = alert_json(&created);
    data["webhook_secret"] = json!(secret);
    Ok(web::market_created("Alert created", data))
}

/// `GET …/alerts`
pub async fn all(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let rules = own(&s, &caller, &company_id, &user_id).await?;
    Ok(list("Alerts retrieved", rules.iter().collect()))
}

/// `GET …/alerts/asset/{asset_id}`: the caller's rules on an asset.
pub async fn on_asset(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, asset_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let rules = own(&s, &caller, &company_id, &user_id).await?;
    let rows = rules
        .iter()
        .filter(|a| a.state.asset_id.as_deref() == Some(asset_id.as_str()))
        .collect();
    Ok(list("Alerts retrieved", rows))
}

/// `GET …/alerts/asset/{asset_id}/all`: every rule of the caller's company on an asset (for
/// a company admin or the operator; others see their own).
pub async fn on_asset_all(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, asset_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    as_user(&s, &caller, &company_id, &user_id).await?;
    let admin = matches!(caller.role, Role::Operator | Role::CompanyAdmin);
    let rules = s
        .metadata
        .alerts_where(AlertScope::Company, &company_id)
        .await?;
    let rows = rules
        .iter()
        .filter(|a| a.state.asset_id.as_deref() == Some(asset_id.as_str()))
        .filter(|a| admin || a.state.user_id == user_id)
        .collect();
    Ok(list("Alerts retrieved", rows))
}

/// `GET …/alerts/{alert_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, alert_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let a = one(&s, &caller, (&company_id, &user_id, &alert_id)).await?;
    Ok(market("Alert retrieved", alert_json(&a)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "patch_field")]
    name: Option<Option<String>>,
    is_active: Option<bool>,
    threshold_credits: Option<i64>,
    failing_percent: Option<i64>,
    window_minutes: Option<i64>,
    min_executions: Option<i64>,
    #[serde(default, deserialize_with = "patch_field")]
    webhook_url: Option<Option<String>>,
}

/// `PATCH …/alerts/{alert_id}`: name, `is_active`, the kind's fields, the webhook (a new URL
/// gets a new secret, shown once; `null` removes the webhook).
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, alert_id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let a = one(&s, &caller, (&company_id, &user_id, &alert_id)).await?;
    let b: PatchBody = parse_json(&body)?;
    let mut next = a.state.clone();
    if let Some(n) = &b.name {
        next.name = opt_text("name", n.as_deref(), 200)?;
    }
    if let Some(on) = b.is_active {
        next.is_active = on;
    }
    if b.threshold_credits.is_some() {
        next.threshold_credits = bounded(
            "threshold_credits",
            b.threshold_credits,
            (1, 1_000_000_000_000),
        )?;
    }
    if b.failing_percent.is_some() {
        next.failing_percent =
            bounded("failing_percent", b.failing_percent, (1, 100))?.map(|n| n as i32);
    }
    if b.window_minutes.is_some() {
        next.window_minutes =
            bounded("window_minutes", b.window_minutes, (1, 10_080))?.map(|n| n as i32);
    }
    if b.min_executions.is_some() {
        next.min_executions = bounded("min_executions", b.min_executions, (1, 1_000_000))?;
    }
    let mut secret = None;
    match &b.webhook_url {
        Some(Some(url)) => {
            let url = webhook_url(&s, url).await?;
            if next.webhook_url.as_deref() != Some(url.as_str()) {
                let (shown, sealed) = new_secret(&s, &next.id)?;
                next.webhook_url = Some(url);
                next.webhook_secret_sealed = Some(sealed);
                secret = Some(shown);
            }
        }
        Some(None) => {
            next.webhook_url = None;
            next.webhook_secret_sealed = None;
        }
        None => {}
    }
    check_kind(&mut next)?;
    if next == a.state {
        return Err(ApiError::bad_request(
            "nothing to update: send name, is_active, the kind's fields or webhook_url",
        ));
    }
    next.updated_at_ms = now_ms().max(a.state.updated_at_ms + 1);
    save(&s, next).await?;
    let mut data = json!({ "alert_id": a.alert_id });
    if secret.is_some() {
        data["webhook_secret"] = json!(secret);
    }
    Ok(market("Alert updated", data).into_response())
}

/// `DELETE …/alerts/{alert_id}`
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, alert_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let a = one(&s, &caller, (&company_id, &user_id, &alert_id)).await?;
    let mut next = a.state.clone();
    next.deleted = true;
    next.is_active = false;
    next.updated_at_ms = now_ms().max(a.state.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Alert removed", json!({ "alert_id": a.alert_id })).into_response())
}

/// `GET …/alerts/{alert_id}/deliveries`: the rule's webhook deliveries, newest first, with
/// their attempts (`dead`: retries ran out).
pub async fn deliveries(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, alert_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let a = one(&s, &caller, (&company_id, &user_id, &alert_id)).await?;
    let rows: Vec<Value> = store(&s)?
        .deliveries_of(&a.state.id)
        .await?
        .iter()
        .map(delivery_json)
        .collect();
    Ok(market_all("Deliveries retrieved", rows).into_response())
}

/// `GET …/users/{user_id}/notifications?limit&offset`: newest first, with the unread count.
pub async fn notifications(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    as_user(&s, &caller, &company_id, &user_id).await?;
    let paging = Paging::from_query(&q, 50, 500)?;
    let (rows, total, unread) = store(&s)?
        .notifications(&user_id, paging.limit, paging.offset)
        .await?;
    let rows: Vec<Value> = rows.iter().map(firing_json).collect();
    let n = rows.len();
    let mut page = market_page(
        "Notifications retrieved",
        rows,
        total,
        paging.limit as u64,
        paging.offset as u64,
        n,
    );
    page.0["meta"]["unread"] = json!(unread);
    Ok(page.into_response())
}

/// `POST …/users/{user_id}/notifications/{notification_id}/read`
pub async fn mark_read(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, notification_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    as_user(&s, &caller, &company_id, &user_id).await?;
    if !store(&s)?
        .mark_read(&user_id, &notification_id, now_ms())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "no notification {notification_id}"
        )));
    }
    Ok(market(
        "Notification marked read",
        json!({ "notification_id": notification_id, "is_read": true }),
    )
    .into_response())
}
