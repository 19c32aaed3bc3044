//! API-key authentication. Keys are random secrets shown once; only their SHA-256 is stored.
//! Accepted as `x-api-key: sk_…` or `Authorization: Bearer sk_…`. A key works while it is
//! active, unrevoked and unexpired and its user is `ACTIVE`. Lookups are cached briefly
//! (changes made through this process evict at once; others expire within the TTL).

use crate::roles::{allowed, Action, Role};
use crate::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use projections::{KeyOwner, MetadataReader};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(5);

/// The authenticated caller, available to handlers as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's aggregate id.
    pub key_id: String,
    pub api_key_id: i64,
    pub user_id: String,
    pub company_id: String,
    /// The key's role (never above its user's); for a session, the user's role.
    pub role: Role,
    /// The session's token hash when the caller signed in with the dashboard cookie.
    pub session: Option<String>,
    /// Called with a `test` key: executions are never charged, return at most 10 rows and
    /// are metered apart. A session is always live.
    pub test_mode: bool,
    /// Set for an `endpoint` key: it opens its endpoint's execute and export routes and
    /// nothing else.
    pub endpoint_id: Option<String>,
}

impl Caller {
    fn from_owner(o: &KeyOwner) -> Option<Caller> {
        Some(Caller {
            key_id: o.key_id.clone(),
            api_key_id: o.api_key_id,
            user_id: o.user_id.clone(),
            company_id: o.company_id.clone(),
            role: Role::from_id(o.role_id)?,
            session: None,
            test_mode: o.test_mode,
            endpoint_id: o.endpoint_id.clone(),
        })
    }

    /// `403 forbidden` unless the caller's role may do `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if allowed(self.role, action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.role.name()
            )))
        }
    }

    /// `403 forbidden` unless the caller may act on `company_id` (its own; the operator any)
    /// and its role may do `action`.
    pub fn require_in(&self, company_id: &str, action: Action) -> Result<(), ApiError> {
        if self.role != Role::Operator && self.company_id != company_id {
            return Err(ApiError::forbidden("this key cannot act on that company"));
        }
        self.require(action)
    }
}

/// Whether `caller` may see website `w`: its company's, or any for the operator.
pub fn owns_website(caller: &Caller, w: &projections::Website) -> bool {
    caller.role == Role::Operator || w.company_id.as_deref() == Some(caller.company_id.as_str())
}

/// Key verification with a short-lived cache.
pub struct Auth {
    metadata: Arc<dyn MetadataReader>,
    sessions: Option<Arc<dyn projections::SessionStore>>,
    cache: DashMap<String, (KeyOwner, Instant)>,
    audit: Option<crate::audit::AuditSink>,
}

/// The dashboard session cookie.
pub const SESSION_COOKIE: &str = "tally_session";

/// SHA-256 hex of a key: what is stored and looked up.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `sk_****1234`
pub fn mask_key(last4: &str) -> String {
    format!("sk_****{last4}")
}

impl Auth {
    pub fn new(metadata: Arc<dyn MetadataReader>) -> Self {
        Self {
            metadata,
            sessions: None,
            cache: DashMap::new(),
            audit: None,
        }
    }

    /// Records mutations, executions and refused calls in the audit trail.
    pub fn with_audit(mut self, sink: crate::audit::AuditSink) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Also accepts dashboard sessions (the `tally_session` cookie).
    pub fn with_sessions(mut self, sessions: Arc<dyn projections::SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The caller for a session token, if the session is live.
    pub async fn verify_session(&self, token: &str) -> Result<Option<Caller>, ApiError> {
        let Some(store) = &self.sessions else {
            return Ok(None);
        };
        let hash = hash_key(token);
        let now_ms = chrono::Utc::now().timestamp_millis();
        Ok(store.session(&hash, now_ms).await?.and_then(|o| {
            Some(Caller {
                key_id: String::new(),
                api_key_id: 0,
                user_id: o.user_id,
                company_id: o.company_id,
                role: Role::from_id(o.role_id)?,
                session: Some(hash),
                test_mode: false,
                endpoint_id: None,
            })
        }))
    }

    /// The caller for a presented key, if the key is in service now.
    pub async fn verify(&self, key: &str) -> Result<Option<Caller>, ApiError> {
        self.verify_hash(hash_key(key)).await
    }

    /// [`Auth::verify`] for a key's SHA-256 hex.
    async fn verify_hash(&self, hash: String) -> Result<Option<Caller>, ApiError> {
        let cached = self
            .cache
            .get(&hash)
            .filter(|hit| hit.1.elapsed() < CACHE_TTL)
            .map(|hit| hit.0.clone());
        let owner = match cached {
            Some(owner) => owner,
            None => match self.metadata.key_by_hash(&hash).await? {
                Some(owner) => {
                    self.cache.insert(hash, (owner.clone(), Instant::now()));
                    owner
                }
                None => {
                    self.cache.remove(&hash);
                    return Ok(None);
                }
            },
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        if owner.expires_at_ms.is_some_and(|exp| exp <= now_ms) {
            return Ok(None);
        }
        Ok(Caller::from_owner(&owner))
    }

    /// The id of a presented key that exists but is out of service (only looked up when use
    /// is counted: an unknown key costs nothing more).
    async fn known_key(&self, hash: &str) -> Option<i64> {
        self.audit.as_ref()?;
        match self.metadata.api_key_id_by_hash(hash).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a refused key");
                None
            }
        }
    }

    /// Forgets a changed or revoked key at once.
    pub fn evict_key_id(&self, key_id: &str) {
        self.cache.retain(|_, (owner, _)| owner.key_id != key_id);
    }

    /// Forgets every key of a user whose status or role changed.
    pub fn evict_user(&self, user_id: &str) {
        self.cache.retain(|_, (owner, _)| owner.user_id != user_id);
    }
}

fn presented_key(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim().to_string());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A state-changing request made with a cookie must come from the dashboard's own origin:
/// `Sec-Fetch-Site: same-origin` (or `none`: typed by the user), or an `Origin` whose host is
/// the request's `Host`.
pub fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin.split("://").nth(1) == Some(host),
        _ => false,
    }
}

fn mutating(req: &Request) -> bool {
    !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    )
}

/// Middleware: a request needs an active key, or a live dashboard session (then a mutating
/// request must also be same-origin); otherwise `401 unauthorized`.
pub async fn require_api_key(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    authenticated(&auth, req, next, Presence::Required).await
}

/// Like [`require_api_key`] for routes that also serve anonymous callers (a data endpoint
/// with `access_method: OPEN`, say): a presented key or session is verified as there (a bad
/// one is `401`), and a request with neither runs with no [`Caller`] extension.
pub async fn optional_api_key(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    authenticated(&auth, req, next, Presence::Optional).await
}

/// Whether a route needs a caller, or also runs for an anonymous request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}

async fn authenticated(auth: &Auth, req: Request, next: Next, presence: Presence) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let (caller, refused_key, resp) = authenticate_and_run(auth, req, next, presence).await;
    if let Some(sink) = &auth.audit {
        let status = resp.status().as_u16();
        let key_used = caller.as_ref().map(|c| c.api_key_id).filter(|id| *id > 0);
        if let Some(id) = key_used.or(refused_key) {
            sink.count_key_use(id, status);
        }
        if crate::audit::audited(&method, &path, status) {
            sink.send(crate::audit::record(
                caller.as_ref(),
                &method,
                &route,
                &path,
                status,
            ));
        }
    }
    resp
}

/// Finds the caller (key or session) and runs the handler; the caller, if one was found (or
/// the id of a known key that is out of service), comes back with the response for the audit
/// trail.
async fn authenticate_and_run(
    auth: &Auth,
    mut req: Request,
    next: Next,
    presence: Presence,
) -> (Option<Caller>, Option<i64>, Response) {
    let Some(key) = presented_key(&req).filter(|k| !k.is_empty()) else {
        let token = cookie(req.headers(), SESSION_COOKIE).map(str::to_string);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            if presence == Presence::Optional {
                return (None, None, next.run(req).await);
            }
            let e = ApiError::unauthorized(
                "missing API key: send x-api-key or Authorization: Bearer, or sign in",
            );
            return (None, None, e.into_response());
        };
        return match auth.verify_session(&token).await {
            Ok(Some(caller)) => {
                if mutating(&req) && !same_origin(req.headers()) {
                    let e = ApiError::forbidden(
                        "a request signed in with the session cookie must come from the same origin",
                    );
                    return (Some(caller), None, e.into_response());
                }
                req.extensions_mut().insert(caller.clone());
                (Some(caller), None, next.run(req).await)
            }
            Ok(None) => (
                None,
                None,
                ApiError::unauthorized("the session is expired or signed out").into_response(),
            ),
            Err(e) => (None, None, e.into_response()),
        };
    };
    let hash = hash_key(&key);
    match auth.verify_hash(hash.clone()).await {
        Ok(Some(caller)) => {
            if caller.endpoint_id.is_some() && presence == Presence::Required {
                let e = ApiError::forbidden(
                    "an endpoint key opens only its endpoint's execute and export routes",
                );
                return (Some(caller), None, e.into_response());
            }
            req.extensions_mut().insert(caller.clone());
            (Some(caller), None, next.run(req).await)
        }
        Ok(None) => {
            let refused = ApiError::unauthorized("invalid, revoked or expired API key");
            (None, auth.known_key(&hash).await, refused.into_response())
        }
        Err(e) => (None, None, e.into_response()),
    }
}
