//! Dashboard login: `POST /api/auth/login` (e-mail or user name, and password) starts a
//! session and sets it as an HttpOnly, SameSite=Lax cookie (Secure behind TLS); the token is
//! stored only as its SHA-256, with an expiry. 5 failed attempts from one IP within 15 minutes
//! answer `429` with `Retry-After: 900`. `POST /api/auth/logout` ends the caller's session;
//! `POST /companies/{id}/users/logout` ends every session of the caller's user.

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
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &s.cfg.trusted_proxies);
    let now = now_ms();
    if recent_failures(&s, ip, now) >= MAX_FAILURES {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed sign-ins from this address; try again in 15 minutes",
        );
        e.retry_after_secs = Some(900);
        return Err(e);
    }
    let b: LoginBody = parse_json(&body)?;
    let login = b
        .login
        .or(b.email_address)
        .or(b.username)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l.len() <= 254)
        .ok_or_else(|| ApiError::bad_request("send email_address (or username) and password"))?;
    let password = b
        .password
        .filter(|p| !p.is_empty() && p.len() <= 256)
        .ok_or_else(|| ApiError::bad_request("password is required"))?;
    let user = s.metadata.user_by_login(&login).await?;
    let verified = user.as_ref().is_some_and(|u| {
        u.status == "ACTIVE"
            && u.password_hash.as_deref().is_some_and(|h| {
                PasswordHash::new(h).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            })
    });
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
