//! API-key authentication. Keys are random secrets shown once; only their SHA-256 is stored.
//! Accepted as `x-api-key: sk_…` or `Authorization: Bearer sk_…`. Lookups are cached briefly
//! (revocations made through this process evict at once; others expire within the TTL).

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
    pub key_id: String,
    pub user_id: String,
}

/// Key verification with a short-lived cache.
pub struct Auth {
    metadata: Arc<dyn MetadataReader>,
    cache: DashMap<String, (KeyOwner, Instant)>,
}

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
            cache: DashMap::new(),
        }
    }

    /// The caller for a presented key, if the key is active.
    pub async fn verify(&self, key: &str) -> Result<Option<Caller>, ApiError> {
        let hash = hash_key(key);
        if let Some(hit) = self.cache.get(&hash) {
            if hit.1.elapsed() < CACHE_TTL {
                return Ok(Some(Caller {
                    key_id: hit.0.key_id.clone(),
                    user_id: hit.0.user_id.clone(),
                }));
            }
        }
        match self.metadata.key_by_hash(&hash).await? {
            Some(owner) => {
                let caller = Caller {
                    key_id: owner.key_id.clone(),
                    user_id: owner.user_id.clone(),
                };
                self.cache.insert(hash, (owner, Instant::now()));
                Ok(Some(caller))
            }
            None => {
                self.cache.remove(&hash);
                Ok(None)
            }
        }
    }

    /// Forgets a revoked key at once.
    pub fn evict_key_id(&self, key_id: &str) {
        self.cache.retain(|_, (owner, _)| owner.key_id != key_id);
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

/// Middleware: rejects requests without an active key with `401 unauthorized`.
pub async fn require_api_key(
    State(auth): State<Arc<Auth>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(key) = presented_key(&req).filter(|k| !k.is_empty()) else {
        return ApiError::unauthorized("missing API key: send x-api-key or Authorization: Bearer")
            .into_response();
    };
    match auth.verify(&key).await {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized("invalid or revoked API key").into_response(),
        Err(e) => e.into_response(),
    }
}
