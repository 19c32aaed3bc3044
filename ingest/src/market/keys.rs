//! API keys under `/companies/{company_id}/api-keys`: integer ids, a type and a role no higher
//! than the creator's, an enforced expiration, metadata-only PATCH, DELETE that deactivates and
//! `revoke` that also keeps who revoked it and why. The secret is shown once, at creation.

use super::companies::scoped;
use super::*;
use crate::commands::{last4, new_api_key, now_ms, KeyMode};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::ApiKeyState;
use schemas::ApiKeyUpserted;
use serde::Deserialize;
use std::sync::Arc;
use web::roles::Action;
use web::{hash_key, market, parse_json, patch_field, Caller, Paging};

const KEY_TYPES: &[&str] = &["analytics", "mcp", "endpoint"];

/// A fresh secret and the state of a new key for `user`.
pub(crate) fn new_key(
    user: &UserState,
    name: &str,
    role: Role,
    key_type: &str,
    expires_at_ms: Option<i64>,
    mode: KeyMode,
) -> (String, ApiKeyState) {
    let secret = new_api_key(mode);
    let now = now_ms();
    let state = ApiKeyState {
        id: new_id(),
        user_id: user.id.clone(),
        company_id: user.company_id.clone(),
        name: name.to_string(),
        key_hash: hash_key(&secret),
        key_last4: last4(&secret),
        key_type: key_type.to_string(),
        role_id: role.id(),
        is_system_generated: false,
        endpoint_id: None,
        expires_at_ms,
        active: true,
        revoked_at_ms: None,
        revoked_by: None,
        revocation_reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        mode: mode.name().to_string(),
    };
    (secret, state)
}

/// A key's `mode`: `live` (the default) or `test`.
pub(crate) fn key_mode(mode: Option<&str>) -> ApiResult<KeyMode> {
    match mode {
        None => Ok(KeyMode::Live),
        Some(m) => KeyMode::parse(m)
            .ok_or_else(|| ApiError::bad_request(format!("mode {m:?} is not one of live, test"))),
    }
}

/// Records the new key `state` and answers it as created: masked, with `secret` in `key`
/// (the only time it is shown).
pub(crate) async fn issue(s: &IngestState, state: ApiKeyState, secret: &str) -> ApiResult<Value> {
    let id = state.id.clone();
    s.command_checked(vec![EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
        event_id: new_id(),
        key: state,
    })])
    .await?;
    let key = s
        .metadata
        .api_key(&id)
        .await?
        .ok_or_else(|| ApiError::internal("a created key was not projected"))?;
    let mut data = key_json(&key);
    data["masked"] = data["key"].take();
    data["key"] = json!(secret);
    Ok(data)
}

/// May `caller` see and change `key`? Its own keys with `ManageOwnKeys`; any key of its
/// company with `ManageCompanyKeys`. Others are "not found" rather than "forbidden".
fn may_manage(caller: &Caller, key: &ApiKey) -> bool {
    let own = key.state.user_id == caller.user_id;
    web::roles::allowed(caller.role, Action::ManageCompanyKeys)
        || (own && web::roles::allowed(caller.role, Action::ManageOwnKeys))
}

async fn company_key(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    key_id: &str,
) -> ApiResult<ApiKey> {
    Ok(company_and_key(s, caller, company_id, key_id).await?.1)
}

/// The caller's company and one of its keys the caller may manage.
async fn company_and_key(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    key_id: &str,
) -> ApiResult<(Company, ApiKey)> {
    let company = scoped(s, caller, company_id, Action::ReadCompany).await?;
    let number = int_id("api_key_id", key_id)?;
    let key = s
        .metadata
        .api_key_by_number(company_id, number)
        .await?
        .filter(|k| may_manage(caller, k))
        .ok_or_else(|| ApiError::not_found(format!("no API key {number} in this company")))?;
    Ok((company, key))
}

/// `GET /companies/{company_id}/api-keys`: every key of the company (admins) or one's own.
pub async fn list(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    if !web::roles::allowed(caller.role, Action::ManageOwnKeys) {
        caller.require(Action::ManageCompanyKeys)?;
    }
    let paging = Paging::from_query(&q, 50, 500)?;
    let keys: Vec<_> = s
        .metadata
        .api_keys(&company_id)
        .await?
        .into_iter()
        .filter(|k| may_manage(&caller, k))
        .map(|k| key_json(&k))
        .collect();
    Ok(web::market_list("API keys retrieved", &keys, paging))
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    key_type: Option<String>,
    /// `live` (the default) or `test`.
    mode: Option<String>,
    role_id: Option<i64>,
    expiration_date_utc: Option<String>,
    /// Admins may create a key for another user of the company.
    user_id: Option<String>,
}

fn key_type(value: Option<&str>) -> ApiResult<String> {
    let t = value.unwrap_or("analytics");
    if t == "endpoint" {
        return Err(ApiError::bad_request(
            "endpoint keys are made for one endpoint: POST /companies/{company_id}/endpoints/{endpoint_id}/keys",
        ));
    }
    if !KEY_TYPES.contains(&t) {
        return Err(ApiError::bad_request(format!(
            "key_type {t:?} is not one of analytics, mcp, endpoint"
        )));
    }
    Ok(t.to_string())
}

/// `POST /companies/{company_id}/api-keys`: the secret is in the answer, once.
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let company = scoped(&s, &caller, &company_id, Action::ManageOwnKeys).await?;
    let b: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody {
            name: None,
            key_type: None,
            mode: None,
            role_id: None,
            expiration_date_utc: None,
            user_id: None,
        }
    } else {
        parse_json(&body)?
    };
    let owner_id = b.user_id.clone().unwrap_or_else(|| caller.user_id.clone());
    if owner_id != caller.user_id {
        caller.require(Action::ManageCompanyKeys)?;
    }
    let owner = s
        .metadata
        .user(&owner_id)
        .await?
        .filter(|u| u.company_id == company_id)
        .ok_or_else(|| ApiError::not_found(format!("no user {owner_id:?} in this company")))?;
    let owner_role = Role::from_id(owner.role_id).unwrap_or(Role::Viewer);
    // A key carries no more than its creator's role, nor more than its owner's.
    let ceiling = if owner_role.at_most(caller.role) {
        owner_role
    } else {
        caller.role
    };
    let role = match b.role_id {
        Some(r) => grantable_role(r, ceiling, &company)?,
        None => ceiling,
    };
    let name = text("name", b.name.as_deref().unwrap_or("api key"), 100)?;
    let expires = b
        .expiration_date_utc
        .as_deref()
        .map(|t| future_time("expiration_date_utc", t))
        .transpose()?;
    let kind = key_type(b.key_type.as_deref())?;
    let mode = key_mode(b.mode.as_deref())?;
    let (secret, state) = new_key(&owner, &name, role, &kind, expires, mode);
    let data = issue(&s, state, &secret).await?;
    Ok((StatusCode::CREATED, market("API key created", data)).into_response())
}

/// `GET /companies/{company_id}/api-keys/{api_key_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let k = company_key(&s, &caller, &company_id, &key_id).await?;
    Ok(market("API key retrieved", key_json(&k)).into_response())
}

/// `GET /companies/{company_id}/api-keys/{api_key_id}/stats`: how often the key was used and
/// refused, and when last (counted by every process, stored within a second of the call), and
/// its metered executions per local day of the last `days` (default 30).
pub async fn stats(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, key_id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let (company, k) = company_and_key(&s, &caller, &company_id, &key_id).await?;
    let store = s
        .audit
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process keeps no usage counts"))?;
    let u = store.key_uses(k.api_key_id).await?;
    let days = super::usage::key_days(&s, &company, &k, &q).await?;
    let data = json!({
        "api_key_id": k.api_key_id,
        "name": k.state.name,
        "usage_count": u.uses,
        "last_used": u.last_used_ms.map(rfc3339),
        "failed_attempts": u.failures,
        "last_failed_attempt": u.last_failed_ms.map(rfc3339),
        "is_active": k.state.active && k.state.revoked_at_ms.is_none(),
        "executions": days,
    });
    Ok(market("API key statistics retrieved", data).into_response())
}

pub(crate) async fn save(s: &IngestState, key: ApiKeyState) -> ApiResult<()> {
    let id = key.id.clone();
    s.command_checked(vec![EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
        event_id: new_id(),
        key,
    })])
    .await?;
    s.auth.evict_key_id(&id);
    Ok(())
}

#[derive(Deserialize)]
struct PatchBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    expiration_date_utc: Option<Option<String>>,
    role_id: Option<i64>,
    key: Option<serde_json::Value>,
}

/// `PATCH /companies/{company_id}/api-keys/{api_key_id}`: name, expiration, a lower role;
/// never the key itself.
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, key_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let k = company_key(&s, &caller, &company_id, &key_id).await?;
    let b: PatchBody = parse_json(&body)?;
    if b.key.is_some() {
        return Err(ApiError::bad_request(
            "a key's secret cannot be changed: create a new key and revoke this one",
        ));
    }
    if !k.state.active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this key is no longer active",
        ));
    }
    let mut next = k.state.clone();
    if let Some(n) = &b.name {
        next.name = text("name", n, 100)?;
    }
    if let Some(e) = &b.expiration_date_utc {
        next.expires_at_ms = e
            .as_deref()
            .map(|t| future_time("expiration_date_utc", t))
            .transpose()?;
    }
    if let Some(r) = b.role_id {
        let current = Role::from_id(k.state.role_id).unwrap_or(Role::Viewer);
        let company = scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
        let role = grantable_role(r, caller.role, &company)?;
        if !role.at_most(current) {
            return Err(ApiError::forbidden(
                "a key's role can only be lowered; create a new key for more",
            ));
        }
        next.role_id = role.id();
    }
    if next == k.state {
        return Err(ApiError::bad_request(
            "nothing to update: send name, expiration_date_utc or role_id",
        ));
    }
    next.updated_at_ms = now_ms().max(k.state.updated_at_ms);
    save(&s, next).await?;
    Ok(market("API key updated", json!({ "api_key_id": k.api_key_id })).into_response())
}

/// `DELETE /companies/{company_id}/api-keys/{api_key_id}`: deactivates the key at once.
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let k = company_key(&s, &caller, &company_id, &key_id).await?;
    deactivate(&s, &k).await
}

/// Takes key `k` out of service at once (DELETE of a company key or an endpoint key).
pub(crate) async fn deactivate(s: &IngestState, k: &ApiKey) -> ApiResult<Response> {
    if k.state.active {
        let mut next = k.state.clone();
        next.active = false;
        next.updated_at_ms = now_ms().max(k.state.updated_at_ms);
        save(s, next).await?;
    }
    Ok(market(
        "API key deleted",
        json!({ "api_key_id": k.api_key_id, "active": false }),
    )
    .into_response())
}

#[derive(Deserialize)]
struct RevokeBody {
    reason: Option<String>,
}

/// `POST /companies/{company_id}/api-keys/{api_key_id}/revoke`: deactivates and keeps when,
/// by whom and why.
pub async fn revoke(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, key_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let k = company_key(&s, &caller, &company_id, &key_id).await?;
    let b: RevokeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeBody { reason: None }
    } else {
        parse_json(&body)?
    };
    if k.state.revoked_at_ms.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this key is already revoked",
        ));
    }
    let now = now_ms().max(k.state.updated_at_ms);
    let mut next = k.state.clone();
    next.active = false;
    next.revoked_at_ms = Some(now);
    next.revoked_by = Some(caller.user_id.clone());
    next.revocation_reason = opt_text("reason", b.reason.as_deref(), 500)?;
    next.updated_at_ms = now;
    save(&s, next).await?;
    let k = s.metadata.api_key(&k.state.id).await?.unwrap_or(k);
    Ok(market("API key revoked", key_json(&k)).into_response())
}
