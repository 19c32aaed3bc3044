//! Entity commands: first-run setup (the operator's company, its first admin and key),
//! websites, and the `/api/auth/keys` routes over the same keys as the marketplace's. Each
//! validates, appends its event to the entities topic keyed by aggregate id, then waits
//! (bounded) until the metadata projection has applied it, so the caller can read its own write.

use crate::market::{self, keys::new_key, new_id};
use crate::IngestState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{TimeZone, Utc};
use eventlog::{Appended, OutRecord};
use projections::Website;
use rand::RngCore;
use schemas::*;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::roles::{Action, Role};
use web::{data, mask_key, parse_json, ApiError, ApiResult, Caller};

/// The consumer name under which the metadata projection stores its offsets.
const METADATA_CONSUMER: &str = "metadata";

tokio::task_local! {
    /// How far this request's clock runs ahead of the wall clock
    /// (`IngestConfig::clock_offset_ms`, set around every request by [`crate::router`]).
    pub(crate) static CLOCK_OFFSET_MS: i64;
}

/// The time now, in ms: the wall clock, plus the test clock offset of the request being served.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis() + CLOCK_OFFSET_MS.try_with(|o| *o).unwrap_or(0)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn website_json(w: &Website) -> serde_json::Value {
    json!({
        "id": w.id,
        "name": w.name,
        "domain": w.domain,
        "timezone": w.timezone,
        "created_at": rfc3339(w.created_at_ms),
    })
}

impl IngestState {
    /// Appends entity events and waits until the metadata projection has applied them.
    pub(crate) async fn command(&self, events: Vec<EntityEvent>) -> ApiResult<()> {
        let mut records = Vec::with_capacity(events.len());
        for e in &events {
            let value = encode_entity(e).map_err(ApiError::internal)?;
            records.push(OutRecord {
                key: e.aggregate_id().as_bytes().to_vec(),
                value,
            });
        }
        let appended = self
            .log
            .append(&self.cfg.entities_topic, records)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "command append failed");
                ApiError::unavailable("the event log cannot accept writes right now; retry")
            })?;
        self.wait_projected(&appended).await
    }

    async fn wait_projected(&self, appended: &[Appended]) -> ApiResult<()> {
        let deadline = Instant::now() + self.cfg.projection_wait;
        for a in appended {
            loop {
                let applied = self
                    .metadata
                    .applied_offset(METADATA_CONSUMER, &self.cfg.entities_topic, a.partition)
                    .await?;
                if applied > a.offset {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ApiError::projection_timeout());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }
}

/// A key's mode: live keys are charged, test keys never are (see `market::analyze`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMode {
    Live,
    Test,
}

impl KeyMode {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "test" => Some(Self::Test),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// A fresh secret, `sk_live_…` or `sk_test_…` (keys made before modes, `sk_…`, stay valid:
/// only the hash is stored, and the mode is kept with the key).
pub(crate) fn new_api_key(mode: KeyMode) -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("sk_{}_{}", mode.name(), hex::encode(bytes))
}

pub(crate) fn last4(key: &str) -> String {
    key.chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[derive(Deserialize)]
struct SetupBody {
    username: String,
    password: String,
    email_address: Option<String>,
    company_handle: Option<String>,
    company_domain: Option<String>,
    company_name: Option<String>,
}

/// `POST /api/auth/setup`: creates the operator's company, its first admin (the operator role)
/// and the admin's API key, returned once.
pub async fn setup(
    State(s): State<Arc<IngestState>>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let b: SetupBody = parse_json(&body)?;
    let username = b.username.trim().to_string();
    let valid_name = |c: char| c.is_ascii_alphanumeric() || "_.@-".contains(c);
    if username.is_empty() || username.len() > 64 || !username.chars().all(valid_name) {
        return Err(ApiError::bad_request(
            "username must be 1 to 64 letters, digits or _.@-",
        ));
    }
    let password_hash = market::password_hash(&b.password)?;
    let email = b
        .email_address
        .as_deref()
        .map(market::valid_email)
        .transpose()?;
    let handle = market::valid_handle(b.company_handle.as_deref().unwrap_or("operator"))?;
    let domain =
        valid_domain(b.company_domain.as_deref().unwrap_or("operator.local")).map_err(|_| {
            ApiError::bad_request("company_domain must be a host name such as acme.com")
        })?;
    let name = market::text(
        "company_name",
        b.company_name.as_deref().unwrap_or("Operator"),
        200,
    )?;
    let _one_at_a_time = s.setup_lock.lock().await;
    if s.metadata.user_count().await? > 0 {
        return Err(ApiError::gone("setup is already complete"));
    }
    let now = now_ms();
    let company = schemas::CompanyState {
        id: new_id(),
        handle,
        domain,
        name,
        description: None,
        industry_id: None,
        country_id: None,
        vendor_share_bp: s.cfg.vendor_share_bp,
        partnership_type: None,
        accepted_eula: true,
        is_operator: true,
        timezone: "UTC".into(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let admin = schemas::UserState {
        id: new_id(),
        company_id: company.id.clone(),
        username: Some(username.clone()),
        email,
        password_hash: Some(password_hash),
        role_id: Role::Operator.id(),
        function_id: None,
        status: "ACTIVE".into(),
        timezone: "UTC".into(),
        marketing_opt_out: false,
        first_name: None,
        last_name: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let (key, key_state) = new_key(
        &admin,
        "setup",
        Role::Operator,
        "analytics",
        None,
        KeyMode::Live,
    );
    let (user_id, company_id) = (admin.id.clone(), company.id.clone());
    s.command_checked(vec![EntityEvent::CompanyCreated(CompanyCreated {
        event_id: new_id(),
        company,
        admin,
        admin_key: key_state,
    })])
    .await?;
    let body = data(json!({
        "api_key": key,
        "user": { "id": user_id, "username": username },
        "company_id": company_id,
    }));
    Ok((StatusCode::CREATED, body).into_response())
}

#[derive(Deserialize)]
struct WebsiteBody {
    name: Option<String>,
    domain: Option<String>,
    timezone: Option<String>,
}

fn valid_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    Ok(n.to_string())
}

/// A bare host: scheme, path and `www.` are removed; only host characters are allowed.
pub(crate) fn valid_domain(domain: &str) -> ApiResult<String> {
    let d = domain.trim().to_ascii_lowercase();
    let d = d.split("://").last().unwrap_or("");
    let d = d.split('/').next().unwrap_or("");
    let d = d.strip_prefix("www.").unwrap_or(d);
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
    if !ok {
        return Err(ApiError::bad_request(
            "domain must be a host name such as example.com",
        ));
    }
    Ok(d.to_string())
}

pub(crate) fn valid_timezone(tz: &str) -> ApiResult<String> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| tz.to_string())
        .map_err(|_| ApiError::bad_request(format!("unknown IANA timezone {tz:?}")))
}

/// `POST /api/websites`
pub async fn create_website(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Action::ManageWebsites)?;
    let b: WebsiteBody = parse_json(&body)?;
    let name = valid_name(
        b.name
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("name is required"))?,
    )?;
    let domain = valid_domain(
        b.domain
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("domain is required"))?,
    )?;
    let timezone = valid_timezone(b.timezone.as_deref().unwrap_or("UTC"))?;
    let created = WebsiteCreated {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        domain,
        timezone,
        created_at_ms: now_ms(),
        company_id: Some(caller.company_id.clone()),
    };
    s.command(vec![EntityEvent::WebsiteCreated(created.clone())])
        .await?;
    let w = Website {
        id: created.id,
        company_id: created.company_id,
        name: created.name,
        domain: created.domain,
        timezone: created.timezone,
        created_at_ms: created.created_at_ms,
    };
    Ok((StatusCode::CREATED, data(website_json(&w))).into_response())
}

/// `GET /api/websites`
pub async fn list_websites(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    caller.require(Action::ReadDashboards)?;
    let sites = s.metadata.websites().await?;
    let rows: Vec<_> = sites
        .iter()
        .filter(|w| w.company_id.as_deref() == Some(caller.company_id.as_str()))
        .map(website_json)
        .collect();
    let n = rows.len();
    Ok(web::page(rows, n as u64, n as u64, 0, n).into_response())
}

/// A website the caller's company owns (the operator reaches every company's).
pub(crate) async fn existing(s: &IngestState, caller: &Caller, id: &str) -> ApiResult<Website> {
    s.metadata
        .website(id)
        .await?
        .filter(|w| web::owns_website(caller, w))
        .ok_or_else(|| ApiError::not_found(format!("no website with id {id:?}")))
}

/// `GET /api/websites/{id}`
pub async fn get_website(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Action::ReadDashboards)?;
    Ok(data(website_json(&existing(&s, &caller, &id).await?)).into_response())
}

/// `PUT /api/websites/{id}`: any of name, domain, timezone.
pub async fn update_website(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Action::ManageWebsites)?;
    let b: WebsiteBody = parse_json(&body)?;
    existing(&s, &caller, &id).await?;
    let update = WebsiteUpdated {
        id: id.clone(),
        name: b.name.as_deref().map(valid_name).transpose()?,
        domain: b.domain.as_deref().map(valid_domain).transpose()?,
        timezone: b.timezone.as_deref().map(valid_timezone).transpose()?,
        updated_at_ms: now_ms(),
    };
    if update.name.is_none() && update.domain.is_none() && update.timezone.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: send name, domain or timezone",
        ));
    }
    s.command(vec![EntityEvent::WebsiteUpdated(update)]).await?;
    Ok(data(website_json(&existing(&s, &caller, &id).await?)).into_response())
}

/// `DELETE /api/websites/{id}`
pub async fn delete_website(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Action::ManageWebsites)?;
    existing(&s, &caller, &id).await?;
    s.command(vec![EntityEvent::WebsiteDeleted(WebsiteDeleted {
        id: id.clone(),
        deleted_at_ms: now_ms(),
    })])
    .await?;
    s.forget_site(&id);
    Ok(data(json!({ "id": id, "deleted": true })).into_response())
}

#[derive(Deserialize, Default)]
struct KeyBody {
    name: Option<String>,
}

/// `POST /api/auth/keys`: a new key for the caller's user, with the caller's role, shown once.
pub async fn create_key(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Action::ManageOwnKeys)?;
    let b: KeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        KeyBody::default()
    } else {
        parse_json(&body)?
    };
    let name = valid_name(b.name.as_deref().unwrap_or("api key"))?;
    let user = s
        .metadata
        .user(&caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the caller's user is gone"))?;
    let (key, state) = new_key(&user, &name, caller.role, "analytics", None, KeyMode::Live);
    let (id, created_at_ms, last4) = (
        state.id.clone(),
        state.created_at_ms,
        state.key_last4.clone(),
    );
    s.command_checked(vec![EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
        event_id: new_id(),
        key: state,
    })])
    .await?;
    let number = s.metadata.api_key(&id).await?.map(|k| k.api_key_id);
    let body = data(json!({
        "id": id,
        "api_key_id": number,
        "name": name,
        "key": key,
        "masked": mask_key(&last4),
        "created_at": rfc3339(created_at_ms),
    }));
    Ok((StatusCode::CREATED, body).into_response())
}

/// The caller's company's active keys that it may manage: all of them for admins, else its own.
async fn manageable_keys(s: &IngestState, caller: &Caller) -> ApiResult<Vec<projections::ApiKey>> {
    let all_keys = web::roles::allowed(caller.role, Action::ManageCompanyKeys);
    Ok(s.metadata
        .api_keys(&caller.company_id)
        .await?
        .into_iter()
        .filter(|k| k.state.active && (all_keys || k.state.user_id == caller.user_id))
        .collect())
}

/// `GET /api/auth/keys`: active keys, masked.
pub async fn list_keys(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    caller.require(Action::ManageOwnKeys)?;
    let rows: Vec<_> = manageable_keys(&s, &caller)
        .await?
        .iter()
        .map(|k| {
            json!({
                "id": k.state.id,
                "api_key_id": k.api_key_id,
                "name": k.state.name,
                "key": mask_key(&k.state.key_last4),
                "created_at": rfc3339(k.state.created_at_ms),
            })
        })
        .collect();
    let n = rows.len();
    Ok(web::page(rows, n as u64, n as u64, 0, n).into_response())
}

/// `DELETE /api/auth/keys/{id}`: revokes a key at once.
pub async fn delete_key(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Action::ManageOwnKeys)?;
    let Some(key) = manageable_keys(&s, &caller)
        .await?
        .into_iter()
        .find(|k| k.state.id == id)
    else {
        return Err(ApiError::not_found(format!(
            "no active API key with id {id:?}"
        )));
    };
    let now = now_ms().max(key.state.updated_at_ms);
    let mut state = key.state;
    state.active = false;
    state.revoked_at_ms = Some(now);
    state.revoked_by = Some(caller.user_id.clone());
    state.updated_at_ms = now;
    s.command_checked(vec![EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
        event_id: new_id(),
        key: state,
    })])
    .await?;
    s.auth.evict_key_id(&id);
    Ok(data(json!({ "id": id, "revoked": true })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized_and_checked() {
        assert_eq!(
            valid_domain("https://www.Example.com/path").ok().as_deref(),
            Some("example.com")
        );
        assert_eq!(
            valid_domain("shop.example:8080").ok().as_deref(),
            Some("shop.example:8080")
        );
        assert!(valid_domain("").is_err());
        assert!(valid_domain("bad domain").is_err());
    }

    #[test]
    fn keys_are_random_prefixed_and_masked() {
        let a = new_api_key(KeyMode::Live);
        assert!(a.starts_with("sk_live_") && a.len() == 48);
        assert_ne!(a, new_api_key(KeyMode::Live));
        assert!(new_api_key(KeyMode::Test).starts_with("sk_test_"));
        assert_eq!(KeyMode::parse("test"), Some(KeyMode::Test));
        assert_eq!(KeyMode::parse("LIVE"), None);
        assert_eq!(mask_key(&last4("sk_abcd1234")), "sk_****1234");
    }

    #[test]
    fn timezones_must_be_iana() {
        assert!(valid_timezone("Europe/Berlin").is_ok());
        assert!(valid_timezone("Mars/Olympus").is_err());
    }
}
