//! The embedded metadata store on SQLite (sqlx): websites, users, API keys, settings and the
//! metadata projection's offsets, each batch applied in one transaction with its offsets.

use crate::metadata::*;
use crate::{StoreError, StoreResult, StoredOffset};
use async_trait::async_trait;
use schemas::EntityEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS websites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    deleted_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_last4 TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_offsets (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, part)
);
";

fn sql_err(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// SQLite-backed metadata store.
#[derive(Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
}

impl SqliteMetadata {
    /// Opens (or creates) the database file at `path` and applies the schema.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(sql_err)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(sql_err)?;
        Ok(Self { pool })
    }
}

async fn apply_one(
    tx: &mut Transaction<'_, Sqlite>,
    event: &EntityEvent,
) -> Result<(), sqlx::Error> {
    match event {
        EntityEvent::WebsiteCreated(w) => {
            sqlx::query("INSERT OR IGNORE INTO websites (id, name, domain, timezone, created_at_ms) VALUES (?, ?, ?, ?, ?)")
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
                "UPDATE websites SET name = COALESCE(?, name), domain = COALESCE(?, domain), \
                 timezone = COALESCE(?, timezone) WHERE id = ?",
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
                "UPDATE websites SET deleted_at_ms = ? WHERE id = ? AND deleted_at_ms IS NULL",
            )
            .bind(w.deleted_at_ms)
            .bind(&w.id)
            .execute(&mut **tx)
            .await?;
        }
        EntityEvent::UserCreated(u) => {
            sqlx::query("INSERT OR IGNORE INTO users (id, username, password_hash, role, created_at_ms) VALUES (?, ?, ?, ?, ?)")
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
                "INSERT OR IGNORE INTO api_keys (id, user_id, name, key_hash, key_last4, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)",
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
                "UPDATE api_keys SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
            )
            .bind(k.revoked_at_ms)
            .bind(&k.id)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn website_from(row: &sqlx::sqlite::SqliteRow) -> Result<Website, sqlx::Error> {
    Ok(Website {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain: row.try_get("domain")?,
        timezone: row.try_get("timezone")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[async_trait]
impl MetadataWriter for SqliteMetadata {
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
            sqlx::query("INSERT OR REPLACE INTO projection_offsets (consumer, topic, part, next_offset) VALUES (?, ?, ?, ?)")
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
            "SELECT topic, part, next_offset FROM projection_offsets WHERE consumer = ?",
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
impl MetadataReader for SqliteMetadata {
    async fn website(&self, id: &str) -> StoreResult<Option<Website>> {
        let row = sqlx::query("SELECT * FROM websites WHERE id = ? AND deleted_at_ms IS NULL")
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
            "SELECT id, user_id FROM api_keys WHERE key_hash = ? AND revoked_at_ms IS NULL",
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
            sqlx::query_scalar("SELECT next_offset FROM projection_offsets WHERE consumer = ? AND topic = ? AND part = ?")
                .bind(consumer)
                .bind(topic)
                .bind(partition as i64)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_err)?;
        Ok(n.unwrap_or(0) as u64)
    }

    async fn setting_or_init(&self, name: &str, candidate: &str) -> StoreResult<String> {
        sqlx::query("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await
            .map_err(sql_err)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err)
    }
}
