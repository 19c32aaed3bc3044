//! Dashboard sessions: created at login, stored as the SHA-256 of their token with an expiry,
//! revoked at logout. Durable auth state beside the money tables, not a projection: a rebuild
//! of the projected tables does not sign anyone out.

use crate::StoreResult;
use async_trait::async_trait;

/// Who a live session belongs to (the session is unexpired and unrevoked, its user `ACTIVE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub user_id: String,
    pub company_id: String,
    pub role_id: i32,
    pub expires_at_ms: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(
        &self,
        token_hash: &str,
        user_id: &str,
        company_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()>;
    async fn session(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<SessionOwner>>;
    async fn revoke_session(&self, token_hash: &str, now_ms: i64) -> StoreResult<()>;
    /// Revokes every session of `user_id`; returns how many were live.
    async fn revoke_user_sessions(&self, user_id: &str, now_ms: i64) -> StoreResult<u64>;
}

pub(crate) const SESSION_DDL: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    company_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
";

macro_rules! session_sql_impl {
    ($store:ident) => {
        mod session_impl {
            use super::$store;
            use crate::sessions::*;
            use crate::{StoreError, StoreResult};
            use async_trait::async_trait;
            use sqlx::Row;

            fn sql_err(e: sqlx::Error) -> StoreError {
                StoreError::Backend(e.to_string())
            }

            #[async_trait]
            impl SessionStore for $store {
                async fn create_session(
                    &self,
                    token_hash: &str,
                    user_id: &str,
                    company_id: &str,
                    now_ms: i64,
                    expires_at_ms: i64,
                ) -> StoreResult<()> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    sqlx::query("INSERT INTO sessions (token_hash, user_id, company_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)")
                        .bind(token_hash)
                        .bind(user_id)
                        .bind(company_id)
                        .bind(now_ms)
                        .bind(expires_at_ms)
                        .execute(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(())
                }

                async fn session(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<SessionOwner>> {
                    let row = sqlx::query(
                        "SELECT s.user_id, s.company_id, s.expires_at_ms, u.role_id FROM sessions s JOIN users u ON u.id = s.user_id \
                         WHERE s.token_hash = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2 AND u.status = 'ACTIVE'",
                    )
                    .bind(token_hash)
                    .bind(now_ms)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    row.map(|r| {
                        Ok(SessionOwner {
                            user_id: r.try_get("user_id")?,
                            company_id: r.try_get("company_id")?,
                            role_id: r.try_get("role_id")?,
                            expires_at_ms: r.try_get("expires_at_ms")?,
                        })
                    })
                    .transpose()
                    .map_err(sql_err)
                }

                async fn revoke_session(&self, token_hash: &str, now_ms: i64) -> StoreResult<()> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE token_hash = $2 AND revoked_at_ms IS NULL")
                        .bind(now_ms)
                        .bind(token_hash)
                        .execute(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(())
                }

                async fn revoke_user_sessions(&self, user_id: &str, now_ms: i64) -> StoreResult<u64> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let done = sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $1")
                        .bind(now_ms)
                        .bind(user_id)
                        .execute(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(done.rows_affected())
                }
            }
        }
    };
}

pub(crate) use session_sql_impl;
