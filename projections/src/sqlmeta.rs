//! The metadata store's SQL, written once for both sqlx backends (SQLite and Postgres): the
//! statements use `$n` placeholders and `ON CONFLICT`, which both accept. Each backend's file
//! keeps its own connection set-up and DDL and expands [`metadata_sql_impl!`] for its types.

/// Implements `MetadataWriter` and `MetadataReader` for `$store` (a struct with a `pool` field)
/// on database `$db` with row type `$row`.
macro_rules! metadata_sql_impl {
    ($store:ident, $db:ty, $row:ty) => {
        mod sql_impl {
            use super::$store;
            use crate::metadata::*;
            use crate::{StoreError, StoreResult, StoredOffset};
            use async_trait::async_trait;
            use schemas::EntityEvent;
            use sqlx::{Row, Transaction};

            fn sql_err(e: sqlx::Error) -> StoreError {
                StoreError::Backend(e.to_string())
            }

            async fn apply_one(
                tx: &mut Transaction<'_, $db>,
                event: &EntityEvent,
            ) -> Result<(), sqlx::Error> {
                match event {
                    EntityEvent::WebsiteCreated(w) => {
                        sqlx::query("INSERT INTO websites (id, name, domain, timezone, created_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                            .bind(&w.id)
                            .bind(&w.name)
                            .bind(&w.domain)
                            .bind(&w.timezone)
                            .bind(w.created_at_ms)
                            .execute(&mut **tx)
                            .await?;
                    }
                    EntityEvent::WebsiteUpdated(w) => {
                        sqlx::query(
                            "UPDATE websites SET name = COALESCE($1, name), domain = COALESCE($2, domain), \
                             timezone = COALESCE($3, timezone) WHERE id = $4",
                        )
                        .bind(&w.name)
                        .bind(&w.domain)
                        .bind(&w.timezone)
                        .bind(&w.id)
                        .execute(&mut **tx)
                        .await?;
                    }
                    EntityEvent::WebsiteDeleted(w) => {
                        sqlx::query(
                            "UPDATE websites SET deleted_at_ms = $1 WHERE id = $2 AND deleted_at_ms IS NULL",
                        )
                        .bind(w.deleted_at_ms)
                        .bind(&w.id)
                        .execute(&mut **tx)
                        .await?;
                    }
                    EntityEvent::UserCreated(u) => {
                        sqlx::query("INSERT INTO users (id, username, password_hash, role, created_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                            .bind(&u.id)
                            .bind(&u.username)
                            .bind(&u.password_hash)
                            .bind(&u.role)
                            .bind(u.created_at_ms)
                            .execute(&mut **tx)
                            .await?;
                    }
                    EntityEvent::ApiKeyCreated(k) => {
                        sqlx::query(
                            "INSERT INTO api_keys (id, user_id, name, key_hash, key_last4, created_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        )
                        .bind(&k.id)
                        .bind(&k.user_id)
                        .bind(&k.name)
                        .bind(&k.key_hash)
                        .bind(&k.key_last4)
                        .bind(k.created_at_ms)
                        .execute(&mut **tx)
                        .await?;
                    }
                    EntityEvent::ApiKeyRevoked(k) => {
                        sqlx::query(
                            "UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
                        )
                        .bind(k.revoked_at_ms)
                        .bind(&k.id)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                Ok(())
            }

            fn website_from(row: &$row) -> Result<Website, sqlx::Error> {
                Ok(Website {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    domain: row.try_get("domain")?,
                    timezone: row.try_get("timezone")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            }

            #[async_trait]
            impl MetadataWriter for $store {
                async fn apply(
                    &self,
                    consumer: &str,
                    events: &[EntityEvent],
                    offsets: &[StoredOffset],
                ) -> StoreResult<()> {
                    let mut tx = self.pool.begin().await.map_err(sql_err)?;
                    for e in events {
                        apply_one(&mut tx, e).await.map_err(sql_err)?;
                    }
                    for o in offsets {
                        sqlx::query("INSERT INTO projection_offsets (consumer, topic, part, next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, part) DO UPDATE SET next_offset = EXCLUDED.next_offset")
                            .bind(consumer)
                            .bind(&o.topic)
                            .bind(o.partition as i64)
                            .bind(o.next_offset as i64)
                            .execute(&mut *tx)
                            .await
                            .map_err(sql_err)?;
                    }
                    tx.commit().await.map_err(sql_err)
                }

                async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>> {
                    let rows = sqlx::query(
                        "SELECT topic, part, next_offset FROM projection_offsets WHERE consumer = $1",
                    )
                    .bind(consumer)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(StoredOffset {
                                topic: r.try_get("topic")?,
                                partition: r.try_get::<i64, _>("part")? as u32,
                                next_offset: r.try_get::<i64, _>("next_offset")? as u64,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }
            }

            #[async_trait]
            impl MetadataReader for $store {
                async fn website(&self, id: &str) -> StoreResult<Option<Website>> {
                    let row = sqlx::query("SELECT * FROM websites WHERE id = $1 AND deleted_at_ms IS NULL")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(website_from).transpose().map_err(sql_err)
                }

                async fn websites(&self) -> StoreResult<Vec<Website>> {
                    let rows = sqlx::query(
                        "SELECT * FROM websites WHERE deleted_at_ms IS NULL ORDER BY created_at_ms, id",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    rows.iter()
                        .map(website_from)
                        .collect::<Result<_, _>>()
                        .map_err(sql_err)
                }

                async fn user_count(&self) -> StoreResult<u64> {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(n as u64)
                }

                async fn key_by_hash(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>> {
                    let row = sqlx::query(
                        "SELECT id, user_id FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL",
                    )
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    row.map(|r| {
                        Ok(KeyOwner {
                            key_id: r.try_get("id")?,
                            user_id: r.try_get("user_id")?,
                        })
                    })
                    .transpose()
                    .map_err(sql_err)
                }

                async fn keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
                    let rows = sqlx::query(
                        "SELECT id, user_id, name, key_last4, created_at_ms FROM api_keys WHERE revoked_at_ms IS NULL \
                         ORDER BY created_at_ms, id",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(ApiKeyInfo {
                                id: r.try_get("id")?,
                                user_id: r.try_get("user_id")?,
                                name: r.try_get("name")?,
                                key_last4: r.try_get("key_last4")?,
                                created_at_ms: r.try_get("created_at_ms")?,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }

                async fn applied_offset(
                    &self,
                    consumer: &str,
                    topic: &str,
                    partition: u32,
                ) -> StoreResult<u64> {
                    let n: Option<i64> =
                        sqlx::query_scalar("SELECT next_offset FROM projection_offsets WHERE consumer = $1 AND topic = $2 AND part = $3")
                            .bind(consumer)
                            .bind(topic)
                            .bind(partition as i64)
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(sql_err)?;
                    Ok(n.unwrap_or(0) as u64)
                }

                async fn setting_or_init(&self, name: &str, candidate: &str) -> StoreResult<String> {
                    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(name)
                        .bind(candidate)
                        .execute(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(sql_err)
                }
            }
        }
    };
}

pub(crate) use metadata_sql_impl;
