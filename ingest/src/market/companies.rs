//! Companies: the operator creates tenants (with their first admin and the admin's key, shown
//! once); a company reads and updates itself.

use super::keys::new_key;
use super::*;
use crate::commands::{now_ms, valid_domain, valid_timezone};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::INDUSTRIES;
use projections::CompanyState;
use schemas::{CompanyCreated, CompanyUpdated};
use serde::Deserialize;
use std::sync::Arc;
use web::roles::Action;
use web::{market, parse_json, patch_field, Caller};

/// The share a seller keeps when a company does not say: `TALLY_VENDOR_SHARE` (0.85).
pub const DEFAULT_VENDOR_SHARE_BP: i32 = 8_500;

#[derive(Deserialize)]
struct AdminBody {
    email_address: Option<String>,
    password: Option<String>,
    username: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Deserialize)]
struct CreateBody {
    company_handle: Option<String>,
    company_domain: Option<String>,
    company_name: Option<String>,
    company_description: Option<String>,
    industry_id: Option<i64>,
    country_id: Option<i64>,
    vendor_share_percent: Option<f64>,
    partnership_type: Option<String>,
    timezone: Option<String>,
    accepted_eula: Option<bool>,
    admin: Option<AdminBody>,
}

fn vendor_share_bp(share: f64) -> ApiResult<i32> {
    if !(0.0..=1.0).contains(&share) {
        return Err(ApiError::bad_request(
            "vendor_share_percent must be a fraction between 0 and 1, e.g. 0.85",
        ));
    }
    Ok((share * 10_000.0).round() as i32)
}

fn partnership(value: Option<&str>) -> ApiResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(v @ ("SELF_MANAGED" | "CUSTODIAN")) => Ok(Some(v.to_string())),
        Some(other) => Err(ApiError::bad_request(format!(
            "partnership_type {other:?} is not one of SELF_MANAGED, CUSTODIAN"
        ))),
    }
}

fn industry(id: Option<i64>) -> ApiResult<Option<i32>> {
    reference_id("industry_id", id, |i| {
        INDUSTRIES.iter().any(|x| x.industry_id == i)
    })
}

/// ISO 3166-1 numeric codes run from 1 to 999.
fn country(id: Option<i64>) -> ApiResult<Option<i32>> {
    reference_id("country_id", id, |i| (1..=999).contains(&i))
}

/// 409 now if a unique value is already taken (the projection decides races later).
pub(crate) async fn check_free(
    s: &IngestState,
    handle: &str,
    domain: &str,
    except: Option<&str>,
    email: Option<&str>,
    username: Option<&str>,
) -> ApiResult<()> {
    if let Some(f) = s.metadata.company_conflict(handle, domain, except).await? {
        return Err(ApiError::conflict_on(f, format!("{f} is already taken")));
    }
    if email.is_some() || username.is_some() {
        if let Some(f) = s.metadata.login_conflict(email, username, None).await? {
            return Err(ApiError::conflict_on(f, format!("{f} is already taken")));
        }
    }
    Ok(())
}

/// `POST /companies` (operator): a tenant with its first admin; the admin's key is shown once.
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Action::CreateCompany)?;
    let b: CreateBody = parse_json(&body)?;
    let handle = valid_handle(required("company_handle", &b.company_handle)?)?;
    let domain = valid_domain(required("company_domain", &b.company_domain)?).map_err(|_| {
        ApiError::bad_request("company_domain must be a host name such as acme.com")
    })?;
    let name = text(
        "company_name",
        b.company_name.as_deref().unwrap_or(&handle),
        200,
    )?;
    let admin = required("admin", &b.admin)?;
    let email = valid_email(required("admin.email_address", &admin.email_address)?)?;
    let username = opt_text("admin.username", admin.username.as_deref(), 64)?;
    let now = now_ms();
    let company = CompanyState {
        id: new_id(),
        handle,
        domain,
        name,
        description: opt_text(
            "company_description",
            b.company_description.as_deref(),
            2_000,
        )?,
        industry_id: industry(b.industry_id)?,
        country_id: country(b.country_id)?,
        vendor_share_bp: b
            .vendor_share_percent
            .map(vendor_share_bp)
            .transpose()?
            .unwrap_or(DEFAULT_VENDOR_SHARE_BP),
        partnership_type: partnership(b.partnership_type.as_deref())?,
        accepted_eula: b.accepted_eula.unwrap_or(false),
        is_operator: false,
        timezone: valid_timezone(b.timezone.as_deref().unwrap_or("UTC"))?,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let admin_user = UserState {
        id: new_id(),
        company_id: company.id.clone(),
        username: username.clone(),
        email: Some(email.clone()),
        password_hash: admin.password.as_deref().map(password_hash).transpose()?,
        role_id: Role::CompanyAdmin.id(),
        function_id: None,
        status: "ACTIVE".into(),
        timezone: company.timezone.clone(),
        marketing_opt_out: false,
        first_name: opt_text("admin.first_name", admin.first_name.as_deref(), 100)?,
        last_name: opt_text("admin.last_name", admin.last_name.as_deref(), 100)?,
        created_at_ms: now,
        updated_at_ms: now,
    };
    check_free(
        &s,
        &company.handle,
        &company.domain,
        None,
        Some(&email),
        username.as_deref(),
    )
    .await?;
    let (secret, key) = new_key(
        &admin_user,
        "admin",
        Role::CompanyAdmin,
        "analytics",
        None,
        crate::commands::KeyMode::Live,
    );
    let (company_id, admin_user_id, key_id) =
        (company.id.clone(), admin_user.id.clone(), key.id.clone());
    s.command_checked(vec![EntityEvent::CompanyCreated(CompanyCreated {
        event_id: new_id(),
        company,
        admin: admin_user,
        admin_key: key,
    })])
    .await?;
    let api_key_id = s.metadata.api_key(&key_id).await?.map(|k| k.api_key_id);
    let body = market(
        "Company created",
        json!({
            "company_id": company_id,
            "admin_user_id": admin_user_id,
            "api_key": secret,
            "api_key_id": api_key_id,
        }),
    );
    Ok((StatusCode::CREATED, body).into_response())
}

/// The company `id`, after the caller's right to `action` on it is checked.
pub(crate) async fn scoped(
    s: &IngestState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> ApiResult<Company> {
    caller.require_in(id, action)?;
    s.metadata
        .company(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no company with id {id:?}")))
}

/// Checks `action` in company `company_id` and that the path's `user_id` is the caller: for
/// what only its own user reads and changes (`what`: favorites, alerts …).
pub(crate) async fn scoped_to_self(
    s: &IngestState,
    caller: &Caller,
    (company_id, user_id): (&str, &str),
    action: Action,
    what: &str,
) -> ApiResult<()> {
    scoped(s, caller, company_id, action).await?;
    if user_id != caller.user_id {
        return Err(ApiError::forbidden(format!(
            "{what} are read and changed only by their user"
        )));
    }
    Ok(())
}

/// `GET /companies/{company_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let c = scoped(&s, &caller, &id, Action::ReadCompany).await?;
    Ok(market("Company retrieved", company_json(&c)).into_response())
}

#[derive(Deserialize)]
struct PatchBody {
    company_handle: Option<String>,
    company_domain: Option<String>,
    company_name: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    company_description: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    industry_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch_field")]
    country_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch_field")]
    partnership_type: Option<Option<String>>,
    vendor_share_percent: Option<f64>,
    timezone: Option<String>,
    accepted_eula: Option<bool>,
}

/// `PATCH /companies/{company_id}`: any of its fields; `vendor_share_percent` by the operator.
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let c = scoped(&s, &caller, &id, Action::UpdateCompany).await?;
    let b: PatchBody = parse_json(&body)?;
    let mut next = c.state.clone();
    if let Some(h) = &b.company_handle {
        next.handle = valid_handle(h)?;
    }
    if let Some(d) = &b.company_domain {
        next.domain = valid_domain(d)
            .map_err(|_| ApiError::bad_request("company_domain must be a host name"))?;
    }
    if let Some(n) = &b.company_name {
        next.name = text("company_name", n, 200)?;
    }
    if let Some(d) = &b.company_description {
        next.description = opt_text("company_description", d.as_deref(), 2_000)?;
    }
    if let Some(i) = b.industry_id {
        next.industry_id = industry(i)?;
    }
    if let Some(i) = b.country_id {
        next.country_id = country(i)?;
    }
    if let Some(p) = &b.partnership_type {
        next.partnership_type = partnership(p.as_deref())?;
    }
    if let Some(share) = b.vendor_share_percent {
        caller
            .require(Action::TopUpCredits)
            .map_err(|_| ApiError::forbidden("only the operator sets vendor_share_percent"))?;
        next.vendor_share_bp = vendor_share_bp(share)?;
    }
    if let Some(tz) = &b.timezone {
        next.timezone = valid_timezone(tz)?;
    }
    if let Some(e) = b.accepted_eula {
        next.accepted_eula = e;
    }
    if next == c.state {
        return Err(ApiError::bad_request(
            "nothing to update: send at least one changed field",
        ));
    }
    next.updated_at_ms = now_ms().max(c.state.updated_at_ms);
    check_free(&s, &next.handle, &next.domain, Some(&id), None, None).await?;
    s.command_checked(vec![EntityEvent::CompanyUpdated(CompanyUpdated {
        event_id: new_id(),
        company: next,
    })])
    .await?;
    Ok(market("Company updated", json!({ "company_id": id })).into_response())
}

/// `GET /companies/{company_id}/audit-log`: the company's mutations and refused calls (its own
/// callers', and calls on its paths by others), newest first, for company admins.
pub async fn audit_log(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadAuditLog).await?;
    let paging = web::Paging::from_query(&q, 50, 500)?;
    let store = s
        .audit
        .as_ref()
        .ok_or_else(|| web::ApiError::not_implemented("this process keeps no audit trail"))?;
    let (rows, total) = store
        .audit_log(&company_id, paging.limit, paging.offset)
        .await?;
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "audit_id": r.audit_id,
                "date_created": rfc3339(r.at_ms),
                "request_id": r.request_id,
                "company_id": r.company_id,
                "target_company_id": r.target_company_id,
                "user_id": r.user_id,
                "api_key_id": r.api_key_id,
                "action": r.action,
                "object": r.object,
                "status": r.status,
                "outcome": r.outcome,
            })
        })
        .collect();
    let n = rows.len();
    Ok(web::market_page(
        "Audit log retrieved",
        rows,
        total,
        paging.limit as u64,
        paging.offset as u64,
        n,
    )
    .into_response())
}

/// `GET /companies/{company_id}/objects`: the company's connections (for roles that manage
/// them) and assets in one answer. Endpoints come with the next issue (always empty here).
pub async fn objects(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    let connections: Vec<serde_json::Value> =
        if web::roles::allowed(caller.role, Action::ManageConnections) {
            s.metadata
                .connections(&company_id)
                .await?
                .iter()
                .map(super::connections::connection_json)
                .collect()
        } else {
            Vec::new()
        };
    let assets: Vec<serde_json::Value> = if web::roles::allowed(caller.role, Action::ReadAssets) {
        super::assets::own_assets(&s, &company_id)
            .await?
            .iter()
            .map(|a| super::assets::asset_json(a, true))
            .collect()
    } else {
        Vec::new()
    };
    let endpoints = if web::roles::allowed(caller.role, Action::ReadAssets) {
        super::endpoints::objects_of(&s, &company_id).await?
    } else {
        Vec::new()
    };
    Ok(market(
        "Company objects retrieved",
        serde_json::json!({"connections": connections, "assets": assets, "endpoints": endpoints}),
    )
    .into_response())
}
