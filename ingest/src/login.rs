//! Dashboard login: `POST /api/auth/login` (e-mail or user name, and password) starts a
//! session and sets it as an HttpOnly, SameSite=Lax cookie (Secure behind TLS); the token is
//! stored only as its SHA-256, with an expiry. 5 failed attempts from one IP within 15 minutes
//! answer `429` with `Retry-After: 900`. `POST /api/auth/logout` ends the caller's session;
//! `POST /companies/{id}/users/logout` ends every session of the caller's user. The routes the
//! peer's dashboard calls are here too: `GET /api/auth/status`, `GET /api/auth/session`,
//! `PUT /api/auth/password`, and a login with `{password}` alone for the first admin.

use crate::edge::client_ip;
use crate::IngestState;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use web::roles::Action;
use web::{data, hash_key, market, parse_json, ApiError, ApiResult, Caller, SESSION_COOKIE};

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 24 * 7;
const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
const MAX_FAILURES: usize = 5;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Failed attempts of `ip` still inside the window (old ones are dropped).
fn recent_failures(s: &IngestState, ip: IpAddr, now: i64) -> usize {
    let mut entry = s.login_failures.entry(ip).or_default();
    entry.retain(|t| now - t < FAILURE_WINDOW_MS);
    entry.len()
}

/// The client's address and the time, unless it has failed too often lately (`429`, retry
/// after 15 minutes): sign-ins and password changes count the same failures.
fn unless_limited(
    s: &IngestState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> ApiResult<(IpAddr, i64)> {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &s.cfg.trusted_proxies);
    let now = now_ms();
    if recent_failures(s, ip, now) >= MAX_FAILURES {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed attempts from this address; try again in 15 minutes",
        );
        e.retry_after_secs = Some(900);
        return Err(e);
    }
    Ok((ip, now))
}

#[derive(Deserialize)]
struct LoginBody {
    username: Option<String>,
    email_address: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// Whether the request arrived over TLS (directly, or through a trusted proxy that says so).
fn over_tls(headers: &HeaderMap, peer: IpAddr, s: &IngestState) -> bool {
    let trusted = s.cfg.trusted_proxies.iter().any(|n| n.contains(&peer));
    trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn session_cookie(token: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

/// `POST /api/auth/login`
pub async fn login(
    State(s): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (ip, now) = unless_limited(&s, peer, &headers)?;
    let b: LoginBody = parse_json(&body)?;
    let login = b
        .login
        .or(b.email_address)
        .or(b.username)
        .map(|l| l.trim().to_string());
    if login
        .as_ref()
        .is_some_and(|l| l.is_empty() || l.len() > 254)
    {
        return Err(ApiError::bad_request_on(
            "username",
            "email_address or username must be 1 to 254 characters",
        ));
    }
    let password = b
        .password
        .filter(|p| !p.is_empty() && p.len() <= 256)
        .ok_or_else(|| ApiError::bad_request_on("password", "password is required"))?;
    // Without a login, the password is the first admin's (the peer's single-admin sign-in).
    let user = match &login {
        Some(l) => s.metadata.user_by_login(l).await?,
        None => first_admin(&s).await?,
    };
    let verified = user
        .as_ref()
        .is_some_and(|u| u.status == "ACTIVE" && password_matches(u, &password));
    let Some(user) = user.filter(|_| verified) else {
        s.login_failures.entry(ip).or_default().push(now);
        metrics::counter!("tally_login_failures_total").increment(1);
        return Err(ApiError::unauthorized(
            "wrong e-mail, user name or password",
        ));
    };
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let expires = now + SESSION_HOURS * 3_600_000;
    let sessions = s
        .sessions
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process does not keep sessions"))?;
    sessions
        .create_session(&hash_key(&token), &user.id, &user.company_id, now, expires)
        .await?;
    let mut resp = data(json!({
        "user": { "user_id": user.id, "company_id": user.company_id, "role_id": user.role_id },
        "expires_at": crate::commands::rfc3339(expires),
    }))
    .into_response();
    if let Some(c) = session_cookie(
        &token,
        SESSION_HOURS * 3600,
        over_tls(&headers, peer.ip(), &s),
    ) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

fn password_matches(user: &schemas::UserState, password: &str) -> bool {
    user.password_hash.as_deref().is_some_and(|h| {
        PasswordHash::new(h).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
}

/// The user `POST /api/auth/setup` created: the oldest operator of the oldest operator company.
async fn first_admin(s: &IngestState) -> ApiResult<Option<schemas::UserState>> {
    let companies = s.metadata.companies().await?;
    let Some(operator) = companies.iter().find(|c| c.state.is_operator) else {
        return Ok(None);
    };
    let users = s.metadata.users(&operator.state.id).await?;
    Ok(users
        .into_iter()
        .find(|u| u.role_id == web::roles::Role::Operator.id()))
}

/// How users sign in here, in the peer's words: local accounts with passwords.
const AUTH_MODE: &str = "local";

/// The live session behind the request's cookie, if any (an expired or unknown one is none).
async fn cookie_session(
    s: &IngestState,
    headers: &HeaderMap,
) -> ApiResult<Option<projections::SessionOwner>> {
    let (Some(token), Some(store)) = (web::cookie(headers, SESSION_COOKIE), &s.sessions) else {
        return Ok(None);
    };
    Ok(store.session(&hash_key(token), now_ms()).await?)
}

/// `GET /api/auth/status` (no auth; never `401`): `{mode, setup_required, authenticated,
/// password_change_required}`, unwrapped as the peer answers it.
pub async fn status(State(s): State<Arc<IngestState>>, headers: HeaderMap) -> ApiResult<Response> {
    let setup_required = s.metadata.user_count().await? == 0;
    let authenticated = cookie_session(&s, &headers).await?.is_some();
    Ok(axum::Json(json!({
        "mode": AUTH_MODE,
        "setup_required": setup_required,
        "authenticated": authenticated,
        "password_change_required": false,
    }))
    .into_response())
}

/// `GET /api/auth/session`: `{authenticated, mode, expires_at}` of the caller (an API key's
/// caller has no expiry).
pub async fn session(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let expires = match (&caller.session, &s.sessions) {
        (Some(hash), Some(store)) => store
            .session(hash, now_ms())
            .await?
            .map(|o| crate::commands::rfc3339(o.expires_at_ms)),
        _ => None,
    };
    Ok(
        data(json!({ "authenticated": true, "mode": AUTH_MODE, "expires_at": expires }))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

/// `PUT /api/auth/password {current_password, new_password}`: the caller's own password. The
/// current one must match; failures count toward the sign-in limit like a wrong login.
pub async fn change_password(
    State(s): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (ip, now) = unless_limited(&s, peer, &headers)?;
    let b: PasswordBody = parse_json(&body)?;
    let current = b.current_password.unwrap_or_default();
    let new = b
        .new_password
        .ok_or_else(|| ApiError::bad_request_on("new_password", "new_password is required"))?;
    let mut user = s
        .metadata
        .user(&caller.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the caller's user no longer exists"))?;
    if !password_matches(&user, &current) {
        s.login_failures.entry(ip).or_default().push(now);
        return Err(
            ApiError::unauthorized("current_password is wrong").with_field("current_password")
        );
    }
    if new == current {
        return Err(ApiError::bad_request_on(
            "new_password",
            "new_password must differ from the current one",
        ));
    }
    if new.chars().count() < 8 || new.len() > 256 {
        return Err(ApiError::bad_request_on(
            "new_password",
            "new_password must be 8 to 256 characters",
        ));
    }
    user.password_hash = Some(crate::market::password_hash(&new)?);
    user.updated_at_ms = now.max(user.updated_at_ms);
    crate::market::users::save_user(&s, user).await?;
    Ok(data(json!({ "password_changed": true })).into_response())
}

/// `POST /api/auth/logout`: ends the caller's session and clears the cookie.
pub async fn logout(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    if let (Some(hash), Some(store)) = (&caller.session, &s.sessions) {
        store.revoke_session(hash, now_ms()).await?;
    }
    let mut resp = data(json!({ "signed_out": true })).into_response();
    if let Some(c) = session_cookie("", 0, false) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `POST /companies/{company_id}/users/logout`: ends every session of the caller's user.
pub async fn logout_everywhere(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
) -> ApiResult<Response> {
    caller.require_in(&company_id, Action::ReadCompany)?;
    let store = s
        .sessions
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process does not keep sessions"))?;
    let n = store
        .revoke_user_sessions(&caller.user_id, now_ms())
        .await?;
    Ok(market(
        "Sessions revoked",
        json!({ "user_id": caller.user_id, "sessions_revoked": n }),
    )
    .into_response())
}
