//! Users of a company, and `GET /me`. Admins manage users; everyone reads and edits parts of
//! their own record. `INACTIVE` and `BANNED` users' keys stop working at once (this process
//! evicts them from the key cache; other processes within its 5 s lifetime). DELETE makes a
//! user `INACTIVE`: users are never erased, so their ledger rows and audit trail keep a name.

use super::companies::scoped;
use super::*;
use crate::commands::{now_ms, valid_timezone};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::JOB_FUNCTIONS;
use schemas::UserUpserted;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, parse_json, patch_field, Caller, Paging};

const STATUSES: &[&str] = &["ACTIVE", "PENDING", "INACTIVE", "BANNED"];

fn status(value: &str) -> ApiResult<String> {
    if STATUSES.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "status {value:?} is not one of ACTIVE, PENDING, INACTIVE, BANNED"
        )))
    }
}

fn function(id: Option<i64>) -> ApiResult<Option<i32>> {
    reference_id("function_id", id, |i| {
        JOB_FUNCTIONS.iter().any(|f| f.function_id == i)
    })
}

/// A user of `company_id` that `caller` may read: itself, or anyone with `ReadUsers`.
async fn visible_user(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    user_id: &str,
) -> ApiResult<UserState> {
    scoped(s, caller, company_id, Action::ReadCompany).await?;
    if user_id != caller.user_id {
        caller.require(Action::ReadUsers)?;
    }
    s.metadata
        .user(user_id)
        .await?
        .filter(|u| u.company_id == company_id)
        .ok_or_else(|| ApiError::not_found(format!("no user {user_id:?} in this company")))
}

/// `GET /companies/{company_id}/users`
pub async fn list(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadUsers).await?;
    let paging = Paging::from_query(&q, 50, 500)?;
    let search = q.get("search").map(|v| v.to_lowercase());
    let users: Vec<_> = s
        .metadata
        .users(&company_id)
        .await?
        .into_iter()
        .filter(|u| {
            search.as_deref().is_none_or(|needle| {
                [&u.email, &u.username, &u.first_name, &u.last_name]
                    .iter()
                    .any(|f| {
                        f.as_deref()
                            .is_some_and(|v| v.to_lowercase().contains(needle))
                    })
            })
        })
        .map(|u| user_json(&u))
        .collect();
    Ok(web::market_list("Users retrieved", &users, paging))
}

#[derive(Deserialize)]
struct CreateBody {
    email_address: Option<String>,
    password: Option<String>,
    username: Option<String>,
    role_id: Option<i64>,
    function_id: Option<i64>,
    status: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    timezone: Option<String>,
    marketing_opt_out: Option<bool>,
}

pub(crate) async fn save_user(s: &IngestState, user: UserState) -> ApiResult<()> {
    let id = user.id.clone();
    s.command_checked(vec![EntityEvent::UserUpserted(UserUpserted {
        event_id: new_id(),
        user,
    })])
    .await?;
    s.auth.evict_user(&id);
    Ok(())
}

/// `POST /companies/{company_id}/users`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let company = scoped(&s, &caller, &company_id, Action::ManageUsers).await?;
    let b: CreateBody = parse_json(&body)?;
    let email = valid_email(required("email_address", &b.email_address)?)?;
    let username = opt_text("username", b.username.as_deref(), 64)?;
    let role = grantable_role(*required("role_id", &b.role_id)?, caller.role, &company)?;
    let now = now_ms();
    let user = UserState {
        id: new_id(),
        company_id: company_id.clone(),
        username: username.clone(),
        email: Some(email.clone()),
        password_hash: b.password.as_deref().map(password_hash).transpose()?,
        role_id: role.id(),
        function_id: function(b.function_id)?,
        status: status(b.status.as_deref().unwrap_or("ACTIVE"))?,
        timezone: valid_timezone(b.timezone.as_deref().unwrap_or(&company.state.timezone))?,
        marketing_opt_out: b.marketing_opt_out.unwrap_or(false),
        first_name: opt_text("first_name", b.first_name.as_deref(), 100)?,
        last_name: opt_text("last_name", b.last_name.as_deref(), 100)?,
        created_at_ms: now,
        updated_at_ms: now,
    };
    if let Some(f) = s
        .metadata
        .login_conflict(Some(&email), username.as_deref(), None)
        .await?
    {
        return Err(ApiError::conflict_on(f, format!("{f} is already taken")));
    }
    let id = user.id.clone();
    save_user(&s, user).await?;
    Ok(web::market_created(
        "User created",
        json!({ "user_id": id }),
    ))
}

/// `GET /companies/{company_id}/users/{user_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let u = visible_user(&s, &caller, &company_id, &user_id).await?;
    Ok(market("User retrieved", user_json(&u)).into_response())
}

#[derive(Deserialize)]
struct PatchBody {
    email_address: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    username: Option<Option<String>>,
    role_id: Option<i64>,
    #[serde(default, deserialize_with = "patch_field")]
    function_id: Option<Option<i64>>,
    status: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    last_name: Option<Option<String>>,
    timezone: Option<String>,
    marketing_opt_out: Option<bool>,
}

/// `PATCH /companies/{company_id}/users/{user_id}`: one's own profile and password; admins
/// also the e-mail, role and status of others.
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let current = visible_user(&s, &caller, &company_id, &user_id).await?;
    let b: PatchBody = parse_json(&body)?;
    let is_self = user_id == caller.user_id;
    let admin_only = b.email_address.is_some() || b.role_id.is_some() || b.status.is_some();
    if !is_self || admin_only {
        caller.require(Action::ManageUsers)?;
    }
    if is_self && (b.role_id.is_some() || b.status.is_some()) {
        return Err(ApiError::forbidden(
            "you cannot change your own role or status",
        ));
    }
    let mut next = current.clone();
    if let Some(e) = &b.email_address {
        next.email = Some(valid_email(e)?);
    }
    if let Some(p) = &b.password {
        next.password_hash = Some(password_hash(p)?);
    }
    if let Some(u) = &b.username {
        next.username = opt_text("username", u.as_deref(), 64)?;
    }
    if let Some(r) = b.role_id {
        let company = scoped(&s, &caller, &company_id, Action::ManageUsers).await?;
        next.role_id = grantable_role(r, caller.role, &company)?.id();
    }
    if let Some(f) = b.function_id {
        next.function_id = function(f)?;
    }
    if let Some(st) = &b.status {
        next.status = status(st)?;
    }
    if let Some(n) = &b.first_name {
        next.first_name = opt_text("first_name", n.as_deref(), 100)?;
    }
    if let Some(n) = &b.last_name {
        next.last_name = opt_text("last_name", n.as_deref(), 100)?;
    }
    if let Some(tz) = &b.timezone {
        next.timezone = valid_timezone(tz)?;
    }
    if let Some(m) = b.marketing_opt_out {
        next.marketing_opt_out = m;
    }
    if next == current {
        return Err(ApiError::bad_request(
            "nothing to update: send at least one changed field",
        ));
    }
    // An admin cannot raise anyone above itself, nor touch a user who outranks it.
    let target = Role::from_id(current.role_id).unwrap_or(Role::Viewer);
    if !is_self && !target.at_most(caller.role) {
        return Err(ApiError::forbidden("that user's role is above yours"));
    }
    if let Some(f) = s
        .metadata
        .login_conflict(
            next.email.as_deref(),
            next.username.as_deref(),
            Some(&user_id),
        )
        .await?
    {
        return Err(ApiError::conflict_on(f, format!("{f} is already taken")));
    }
    next.updated_at_ms = now_ms().max(current.updated_at_ms);
    save_user(&s, next).await?;
    Ok(market("User updated", json!({ "user_id": user_id })).into_response())
}

/// `DELETE /companies/{company_id}/users/{user_id}`: the user becomes `INACTIVE`.
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ManageUsers).await?;
    let current = visible_user(&s, &caller, &company_id, &user_id).await?;
    if user_id == caller.user_id {
        return Err(ApiError::bad_request("you cannot delete yourself"));
    }
    let target = Role::from_id(current.role_id).unwrap_or(Role::Viewer);
    if !target.at_most(caller.role) {
        return Err(ApiError::forbidden("that user's role is above yours"));
    }
    if current.status != "INACTIVE" {
        let mut next = current.clone();
        next.status = "INACTIVE".into();
        next.updated_at_ms = now_ms().max(current.updated_at_ms);
        save_user(&s, next).await?;
    }
    Ok(market(
        "User deleted",
        json!({ "user_id": user_id, "status": "INACTIVE" }),
    )
    .into_response())
}

/// `GET /me`: the caller's user, company, role and key.
pub async fn me(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let user = s
        .metadata
        .user(&caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the caller's user is gone"))?;
    let company = s.metadata.company(&caller.company_id).await?;
    let mut data = user_json(&user);
    data["company"] = company.as_ref().map(company_json).unwrap_or(json!(null));
    data["api_key_id"] = json!(caller.api_key_id);
    data["key_role_id"] = json!(caller.role.id());
    Ok(market("Current user retrieved", data).into_response())
}
