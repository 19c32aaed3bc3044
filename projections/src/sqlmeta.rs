//! The metadata store's SQL, written once for both sqlx backends (SQLite and Postgres): the
//! DDL uses types both accept (`BIGINT`, `INTEGER`, `BOOLEAN`, `TEXT`), the statements `$n`
//! placeholders and `ON CONFLICT`. Each backend's file keeps only its connection set-up and
//! expands [`metadata_sql_impl!`] for its types.
//!
//! Every table but `settings` is a projection of the entities topic. When their shape changes,
//! [`SCHEMA_VERSION`] goes up and the migration drops and recreates them and forgets the
//! metadata stage's offsets, so the stage rebuilds them from the log.

/// The version of the projected tables' shape. Bump it when they change.
pub(crate) const SCHEMA_VERSION: &str = "9";

/// Tables that survive every migration.
pub(crate) const DURABLE_DDL: &str = "
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projection_offsets (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    part BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, part)
);
";

/// Projected tables, dropped and rebuilt from the log when [`SCHEMA_VERSION`] changes.
pub(crate) const PROJECTED_TABLES: &[&str] = &[
    "websites",
    "companies",
    "users",
    "api_keys",
    "rejected_events",
    "connections",
    "assets",
    "endpoints",
    "site_objects",
    "asset_prices",
    "discounts",
    "favorites",
    "alerts",
    "cloud_providers",
    "storage_engines",
    "industries",
    "job_functions",
    "asset_usecases",
    "plans",
    "subscriptions",
];

pub(crate) const PROJECTED_DDL: &str = "
CREATE TABLE IF NOT EXISTS websites (
    id TEXT PRIMARY KEY,
    company_id TEXT,
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT
);
CREATE TABLE IF NOT EXISTS companies (
    id TEXT PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    industry_id INTEGER,
    country_id INTEGER,
    vendor_share_bp INTEGER NOT NULL,
    partnership_type TEXT,
    accepted_eula BOOLEAN NOT NULL,
    is_operator BOOLEAN NOT NULL,
    timezone TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    username TEXT UNIQUE,
    email TEXT UNIQUE,
    password_hash TEXT,
    role_id INTEGER NOT NULL,
    function_id INTEGER,
    status TEXT NOT NULL,
    timezone TEXT NOT NULL,
    marketing_opt_out BOOLEAN NOT NULL,
    first_name TEXT,
    last_name TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_by_company ON users (company_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    api_key_id BIGINT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_last4 TEXT NOT NULL,
    key_type TEXT NOT NULL,
    role_id INTEGER NOT NULL,
    is_system_generated BOOLEAN NOT NULL,
    endpoint_id TEXT,
    expires_at_ms BIGINT,
    active BOOLEAN NOT NULL,
    revoked_at_ms BIGINT,
    revoked_by TEXT,
    revocation_reason TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    mode TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_by_company ON api_keys (company_id);
CREATE TABLE IF NOT EXISTS connections (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    engine_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    credential_type TEXT NOT NULL,
    provider_domain TEXT,
    credentials_sealed TEXT NOT NULL,
    verified_usage_ability BOOLEAN NOT NULL,
    deleted BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS connections_by_company ON connections (company_id);
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    description TEXT,
    asset_type TEXT NOT NULL,
    visibility TEXT NOT NULL,
    sell_in_marketplace BOOLEAN NOT NULL,
    allow_params BOOLEAN NOT NULL,
    source TEXT NOT NULL,
    require_customization BOOLEAN NOT NULL,
    accept_terms BOOLEAN NOT NULL,
    industry_id INTEGER,
    auc_id INTEGER,
    tags TEXT NOT NULL,
    sql_logic TEXT NOT NULL,
    params_json TEXT NOT NULL,
    extra_json TEXT NOT NULL,
    cached BOOLEAN NOT NULL,
    timeout_ms INTEGER,
    version INTEGER NOT NULL,
    deleted BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- Name, description and tags, lowercased and joined by U+001F: what text search scans.
    search_text TEXT NOT NULL DEFAULT ''
);
-- A deleted asset frees its slug; live slugs are unique per company.
CREATE UNIQUE INDEX IF NOT EXISTS assets_live_slug ON assets (company_id, slug) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS assets_by_company ON assets (company_id);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    state_json TEXT NOT NULL,
    deleted BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS endpoints_live_slug ON endpoints (company_id, slug) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS endpoints_by_company ON endpoints (company_id);
CREATE TABLE IF NOT EXISTS site_objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    website_id TEXT NOT NULL,
    company_id TEXT NOT NULL,
    public_key TEXT,
    state_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS site_objects_live_key ON site_objects (kind, public_key) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS site_objects_by_website ON site_objects (website_id, kind);
CREATE TABLE IF NOT EXISTS asset_prices (
    aph_id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    price_usd DOUBLE PRECISION NOT NULL,
    credits BIGINT NOT NULL,
    date_created_ms BIGINT NOT NULL,
    date_ended_ms BIGINT
);
CREATE INDEX IF NOT EXISTS asset_prices_by_asset ON asset_prices (asset_id, date_created_ms);
CREATE TABLE IF NOT EXISTS discounts (
    discount_id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    percent DOUBLE PRECISION,
    amount_credits BIGINT,
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT,
    buyer_company_id TEXT,
    set_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS discounts_by_asset ON discounts (asset_id);
CREATE TABLE IF NOT EXISTS favorites (
    id TEXT PRIMARY KEY,
    favorite_id BIGINT NOT NULL UNIQUE,
    company_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    notes TEXT,
    category TEXT,
    priority INTEGER NOT NULL,
    deleted BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS favorites_live ON favorites (user_id, asset_id) WHERE NOT deleted;
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    alert_id BIGINT NOT NULL UNIQUE,
    company_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    asset_id TEXT,
    state_json TEXT NOT NULL,
    deleted BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_company ON alerts (company_id);
CREATE INDEX IF NOT EXISTS alerts_by_asset ON alerts (asset_id);
CREATE TABLE IF NOT EXISTS rejected_events (
    event_id TEXT PRIMARY KEY,
    field TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cloud_providers (
    provider_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    parent_company TEXT,
    marketing_homepage_url TEXT
);
CREATE TABLE IF NOT EXISTS storage_engines (
    engine_id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    engine_type TEXT NOT NULL,
    integration_complete BOOLEAN NOT NULL,
    test_func_complete BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS industries (
    industry_id INTEGER PRIMARY KEY,
    industry_name TEXT NOT NULL UNIQUE,
    short_name TEXT NOT NULL,
    slug TEXT NOT NULL,
    naisc_code TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_functions (
    function_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS asset_usecases (
    auc_id INTEGER PRIMARY KEY,
    auc_name TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL,
    auc_description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    requests_per_minute BIGINT,
    requests_per_day BIGINT,
    concurrent_requests BIGINT NOT NULL,
    monthly_requests BIGINT
);
-- A company's subscription (none: the default plan, see `reference::default_plan`).
CREATE TABLE IF NOT EXISTS subscriptions (
    company_id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    monthly_requests BIGINT
);
";

/// The company that legacy (pre-company) setup users are placed in when their `UserCreated`
/// events are replayed.
pub(crate) const LEGACY_OPERATOR_COMPANY: &str = "operator";

/// Implements `MetadataWriter` and `MetadataReader` for `$store` (a struct with a `pool` field)
/// on database `$db` with row type `$row`, and `migrate` for its `open`.
/// Waits for this store's write turn, where it has one (SQLite).
pub(crate) async fn write_turn(
    writer: &Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    match writer {
        Some(m) => Some(m.lock().await),
        None => None,
    }
}

/// A companies query with the live balance (from the durable `balances` table) beside it.
macro_rules! const_format_company {
    ($tail:literal) => {
        concat!(
            "SELECT companies.*, COALESCE((SELECT credits FROM balances b WHERE b.company_id = companies.id), 0) AS credits_balance, \
             (SELECT plan_id FROM subscriptions s WHERE s.company_id = companies.id) AS plan_id, \
             (SELECT period_start_ms FROM subscriptions s WHERE s.company_id = companies.id) AS period_start_ms, \
             (SELECT monthly_requests FROM subscriptions s WHERE s.company_id = companies.id) AS monthly_requests FROM companies ",
            $tail
        )
    };
}
pub(crate) use const_format_company;

macro_rules! metadata_sql_impl {
    ($store:ident, $db:ty, $row:ty) => {
        mod sql_impl {
            use super::$store;
            use crate::metadata::*;
            use crate::reference;
            use crate::sqlmeta::const_format_company;
            use crate::sqlmeta::{
                DURABLE_DDL, LEGACY_OPERATOR_COMPANY, PROJECTED_DDL, PROJECTED_TABLES,
                SCHEMA_VERSION,
            };
            use crate::{StoreError, StoreResult, StoredOffset};
            use async_trait::async_trait;
            use schemas::EntityEvent;
            use sqlx::{Row, Transaction};

            fn sql_err(e: sqlx::Error) -> StoreError {
                StoreError::Backend(e.to_string())
            }

            type Tx<'a> = Transaction<'a, $db>;

            /// Creates the tables, rebuilding the projected ones when their version changed,
            /// and writes the reference data. `prelude` runs first in the same transaction (on
            /// Postgres: the schema and an advisory lock). Returns true if it rebuilt.
            pub(crate) async fn migrate(
                pool: &sqlx::Pool<$db>,
                prelude: &str,
            ) -> Result<bool, sqlx::Error> {
                let mut tx = pool.begin().await?;
                if !prelude.is_empty() {
                    sqlx::raw_sql(prelude).execute(&mut *tx).await?;
                }
                sqlx::raw_sql(DURABLE_DDL).execute(&mut *tx).await?;
                sqlx::raw_sql(crate::sqlmoney::MONEY_DDL).execute(&mut *tx).await?;
                sqlx::raw_sql(crate::sqlalerts::ALERTS_DDL).execute(&mut *tx).await?;
                sqlx::raw_sql(crate::sessions::SESSION_DDL).execute(&mut *tx).await?;
                let version: Option<String> =
                    sqlx::query_scalar("SELECT value FROM settings WHERE name = 'metadata_schema'")
                        .fetch_optional(&mut *tx)
                        .await?;
                let rebuild = version.as_deref() != Some(SCHEMA_VERSION);
                if rebuild {
                    for table in PROJECTED_TABLES {
                        let drop = format!("DROP TABLE IF EXISTS {table}");
                        sqlx::raw_sql(&drop).execute(&mut *tx).await?;
                    }
                    sqlx::query("DELETE FROM projection_offsets WHERE consumer = 'metadata'")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO settings (name, value) VALUES ('metadata_schema', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")
                        .bind(SCHEMA_VERSION)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::raw_sql(PROJECTED_DDL).execute(&mut *tx).await?;
                write_reference(&mut tx).await?;
                tx.commit().await?;
                Ok(rebuild)
            }

            async fn write_reference(tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                for p in reference::CLOUD_PROVIDERS {
                    sqlx::query("INSERT INTO cloud_providers (provider_id, name, parent_company, marketing_homepage_url) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (provider_id) DO UPDATE SET name = EXCLUDED.name, parent_company = EXCLUDED.parent_company, marketing_homepage_url = EXCLUDED.marketing_homepage_url")
                        .bind(p.provider_id).bind(p.name).bind(p.parent_company).bind(p.marketing_homepage_url)
                        .execute(&mut **tx).await?;
                }
                for e in reference::STORAGE_ENGINES {
                    sqlx::query("INSERT INTO storage_engines (engine_id, provider_id, service_name, engine_type, integration_complete, test_func_complete) VALUES ($1, $2, $3, $4, $5, $6) \
                                 ON CONFLICT (engine_id) DO UPDATE SET provider_id = EXCLUDED.provider_id, service_name = EXCLUDED.service_name, engine_type = EXCLUDED.engine_type, \
                                 integration_complete = EXCLUDED.integration_complete, test_func_complete = EXCLUDED.test_func_complete")
                        .bind(e.engine_id).bind(e.provider_id).bind(e.service_name).bind(e.engine_type)
                        .bind(e.integration_complete).bind(e.test_func_complete)
                        .execute(&mut **tx).await?;
                }
                for i in reference::INDUSTRIES {
                    sqlx::query("INSERT INTO industries (industry_id, industry_name, short_name, slug, naisc_code, description) VALUES ($1, $2, $3, $4, $5, $6) \
                                 ON CONFLICT (industry_id) DO UPDATE SET industry_name = EXCLUDED.industry_name, short_name = EXCLUDED.short_name, slug = EXCLUDED.slug, \
                                 naisc_code = EXCLUDED.naisc_code, description = EXCLUDED.description")
                        .bind(i.industry_id).bind(i.industry_name).bind(i.short_name).bind(i.slug).bind(i.naisc_code).bind(i.description)
                        .execute(&mut **tx).await?;
                }
                for f in reference::JOB_FUNCTIONS {
                    sqlx::query("INSERT INTO job_functions (function_id, name) VALUES ($1, $2) ON CONFLICT (function_id) DO UPDATE SET name = EXCLUDED.name")
                        .bind(f.function_id).bind(f.name)
                        .execute(&mut **tx).await?;
                }
                for p in reference::PLANS {
                    sqlx::query("INSERT INTO plans (plan_id, name, requests_per_minute, requests_per_day, concurrent_requests, monthly_requests) VALUES ($1, $2, $3, $4, $5, $6) \
                                 ON CONFLICT (plan_id) DO UPDATE SET name = EXCLUDED.name, requests_per_minute = EXCLUDED.requests_per_minute, \
                                 requests_per_day = EXCLUDED.requests_per_day, concurrent_requests = EXCLUDED.concurrent_requests, monthly_requests = EXCLUDED.monthly_requests")
                        .bind(p.plan_id).bind(p.name)
                        .bind(p.requests_per_minute.map(i64::from)).bind(p.requests_per_day.map(i64::from))
                        .bind(i64::from(p.concurrent_requests)).bind(p.monthly_requests.map(|n| n as i64))
                        .execute(&mut **tx).await?;
                }
                for u in reference::ASSET_USECASES {
                    sqlx::query("INSERT INTO asset_usecases (auc_id, auc_name, slug, auc_description) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (auc_id) DO UPDATE SET auc_name = EXCLUDED.auc_name, slug = EXCLUDED.slug, auc_description = EXCLUDED.auc_description")
                        .bind(u.auc_id).bind(u.auc_name).bind(u.slug).bind(u.auc_description)
                        .execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// The outcome of applying one event: applied, or rejected for a reason.
            type Outcome = Result<(), Rejection>;

            fn reject(field: &str, reason: impl Into<String>) -> Outcome {
                Err(Rejection {
                    field: field.to_string(),
                    reason: reason.into(),
                })
            }

            async fn exists(
                tx: &mut Tx<'_>,
                sql: &'static str,
                id: &str,
            ) -> Result<bool, sqlx::Error> {
                Ok(sqlx::query(sql)
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .is_some())
            }

            async fn company_conflict_in(
                ex: impl sqlx::Executor<'_, Database = $db>,
                handle: &str,
                domain: &str,
                except_id: &str,
            ) -> Result<Conflict, sqlx::Error> {
                let row = sqlx::query(
                    "SELECT handle = $1 AS same_handle FROM companies \
                     WHERE (handle = $1 OR domain = $2) AND id <> $3 LIMIT 1",
                )
                .bind(handle)
                .bind(domain)
                .bind(except_id)
                .fetch_optional(ex)
                .await?;
                Ok(match row {
                    None => None,
                    Some(r) if r.try_get::<bool, _>("same_handle")? => Some("company_handle"),
                    Some(_) => Some("company_domain"),
                })
            }

            async fn login_conflict_in(
                ex: impl sqlx::Executor<'_, Database = $db>,
                email: Option<&str>,
                username: Option<&str>,
                except_id: &str,
            ) -> Result<Conflict, sqlx::Error> {
                let row = sqlx::query(
                    "SELECT email = $1 AS same_email FROM users \
                     WHERE (email = $1 OR username = $2) AND id <> $3 LIMIT 1",
                )
                .bind(email)
                .bind(username)
                .bind(except_id)
                .fetch_optional(ex)
                .await?;
                Ok(match row {
                    None => None,
                    Some(r) if r.try_get::<Option<bool>, _>("same_email")? == Some(true) => {
                        Some("email_address")
                    }
                    Some(_) => Some("username"),
                })
            }

            async fn write_company(
                tx: &mut Tx<'_>,
                c: &CompanyState,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO companies (id, handle, domain, name, description, industry_id, country_id, vendor_share_bp, \
                     partnership_type, accepted_eula, is_operator, timezone, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (id) DO UPDATE SET handle = EXCLUDED.handle, domain = EXCLUDED.domain, name = EXCLUDED.name, \
                     description = EXCLUDED.description, industry_id = EXCLUDED.industry_id, country_id = EXCLUDED.country_id, \
                     vendor_share_bp = EXCLUDED.vendor_share_bp, partnership_type = EXCLUDED.partnership_type, \
                     accepted_eula = EXCLUDED.accepted_eula, timezone = EXCLUDED.timezone, updated_at_ms = EXCLUDED.updated_at_ms",
                )
                .bind(&c.id)
                .bind(&c.handle)
                .bind(&c.domain)
                .bind(&c.name)
                .bind(&c.description)
                .bind(c.industry_id)
                .bind(c.country_id)
                .bind(c.vendor_share_bp)
                .bind(&c.partnership_type)
                .bind(c.accepted_eula)
                .bind(c.is_operator)
                .bind(&c.timezone)
                .bind(c.created_at_ms)
                .bind(c.updated_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn write_user(tx: &mut Tx<'_>, u: &UserState) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO users (id, company_id, username, email, password_hash, role_id, function_id, status, timezone, \
                     marketing_opt_out, first_name, last_name, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email, \
                     password_hash = EXCLUDED.password_hash, role_id = EXCLUDED.role_id, function_id = EXCLUDED.function_id, \
                     status = EXCLUDED.status, timezone = EXCLUDED.timezone, marketing_opt_out = EXCLUDED.marketing_opt_out, \
                     first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, updated_at_ms = EXCLUDED.updated_at_ms",
                )
                .bind(&u.id)
                .bind(&u.company_id)
                .bind(&u.username)
                .bind(&u.email)
                .bind(&u.password_hash)
                .bind(u.role_id)
                .bind(u.function_id)
                .bind(&u.status)
                .bind(&u.timezone)
                .bind(u.marketing_opt_out)
                .bind(&u.first_name)
                .bind(&u.last_name)
                .bind(u.created_at_ms)
                .bind(u.updated_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Inserts a new key with the next integer id (in log order, so a replay assigns
            /// the same numbers), or updates the metadata and state of an existing one.
            async fn write_key(tx: &mut Tx<'_>, k: &ApiKeyState) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO api_keys (id, api_key_id, user_id, company_id, name, key_hash, key_last4, key_type, role_id, \
                     is_system_generated, endpoint_id, expires_at_ms, active, revoked_at_ms, revoked_by, revocation_reason, \
                     created_at_ms, updated_at_ms, mode) \
                     SELECT $1, COALESCE(MAX(api_key_id), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18 \
                     FROM api_keys WHERE TRUE \
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role_id = EXCLUDED.role_id, \
                     expires_at_ms = EXCLUDED.expires_at_ms, active = EXCLUDED.active, revoked_at_ms = EXCLUDED.revoked_at_ms, \
                     revoked_by = EXCLUDED.revoked_by, revocation_reason = EXCLUDED.revocation_reason, \
                     updated_at_ms = EXCLUDED.updated_at_ms",
                )
                .bind(&k.id)
                .bind(&k.user_id)
                .bind(&k.company_id)
                .bind(&k.name)
                .bind(&k.key_hash)
                .bind(&k.key_last4)
                .bind(&k.key_type)
                .bind(k.role_id)
                .bind(k.is_system_generated)
                .bind(&k.endpoint_id)
                .bind(k.expires_at_ms)
                .bind(k.active)
                .bind(k.revoked_at_ms)
                .bind(&k.revoked_by)
                .bind(&k.revocation_reason)
                .bind(k.created_at_ms)
                .bind(k.updated_at_ms)
                .bind(&k.mode)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn apply_company_created(
                tx: &mut Tx<'_>,
                e: &schemas::CompanyCreated,
            ) -> Result<Outcome, sqlx::Error> {
                let c = &e.company;
                if exists(tx, "SELECT 1 FROM companies WHERE id = $1", &c.id).await? {
                    return Ok(Ok(())); // a redelivery of an applied event
                }
                if let Some(f) = company_conflict_in(&mut **tx, &c.handle, &c.domain, &c.id).await? {
                    return Ok(reject(f, format!("{f} is already taken")));
                }
                let a = &e.admin;
                if let Some(f) =
                    login_conflict_in(&mut **tx, a.email.as_deref(), a.username.as_deref(), &a.id).await?
                {
                    return Ok(reject(f, format!("{f} is already taken")));
                }
                write_company(tx, c).await?;
                write_user(tx, a).await?;
                write_key(tx, &e.admin_key).await?;
                Ok(Ok(()))
            }

            async fn apply_company_updated(
                tx: &mut Tx<'_>,
                c: &CompanyState,
            ) -> Result<Outcome, sqlx::Error> {
                if !exists(tx, "SELECT 1 FROM companies WHERE id = $1", &c.id).await? {
                    return Ok(reject("company_id", "no such company"));
                }
                if let Some(f) = company_conflict_in(&mut **tx, &c.handle, &c.domain, &c.id).await? {
                    return Ok(reject(f, format!("{f} is already taken")));
                }
                write_company(tx, c).await?;
                Ok(Ok(()))
            }

            async fn apply_user(tx: &mut Tx<'_>, u: &UserState) -> Result<Outcome, sqlx::Error> {
                if !exists(tx, "SELECT 1 FROM companies WHERE id = $1", &u.company_id).await? {
                    return Ok(reject("company_id", "no such company"));
                }
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                        .bind(&u.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if owner.is_some_and(|c| c != u.company_id) {
                    return Ok(reject("user_id", "a user cannot move between companies"));
                }
                if let Some(f) =
                    login_conflict_in(&mut **tx, u.email.as_deref(), u.username.as_deref(), &u.id).await?
                {
                    return Ok(reject(f, format!("{f} is already taken")));
                }
                write_user(tx, u).await?;
                Ok(Ok(()))
            }

            async fn apply_key(tx: &mut Tx<'_>, k: &ApiKeyState) -> Result<Outcome, sqlx::Error> {
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                        .bind(&k.user_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if owner.as_deref() != Some(k.company_id.as_str()) {
                    return Ok(reject("user_id", "no such user in this company"));
                }
                write_key(tx, k).await?;
                Ok(Ok(()))
            }

            async fn apply_connection(
                tx: &mut Tx<'_>,
                c: &schemas::ConnectionState,
            ) -> Result<Outcome, sqlx::Error> {
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM connections WHERE id = $1")
                        .bind(&c.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if owner.is_some_and(|o| o != c.company_id) {
                    return Ok(reject("connection_id", "a connection cannot move between companies"));
                }
                let user: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                        .bind(&c.user_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if user.as_deref() != Some(c.company_id.as_str()) {
                    return Ok(reject("user_id", "no such user in this company"));
                }
                sqlx::query(
                    "INSERT INTO connections (id, company_id, user_id, engine_id, name, description, credential_type, \
                     provider_domain, credentials_sealed, verified_usage_ability, deleted, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (id) DO UPDATE SET engine_id = EXCLUDED.engine_id, name = EXCLUDED.name, \
                     description = EXCLUDED.description, credential_type = EXCLUDED.credential_type, \
                     provider_domain = EXCLUDED.provider_domain, credentials_sealed = EXCLUDED.credentials_sealed, \
                     verified_usage_ability = EXCLUDED.verified_usage_ability, deleted = EXCLUDED.deleted, \
                     updated_at_ms = EXCLUDED.updated_at_ms",
                )
                .bind(&c.id)
                .bind(&c.company_id)
                .bind(&c.user_id)
                .bind(c.engine_id)
                .bind(&c.name)
                .bind(&c.description)
                .bind(&c.credential_type)
                .bind(&c.provider_domain)
                .bind(&c.credentials_sealed)
                .bind(c.verified_usage_ability)
                .bind(c.deleted)
                .bind(c.created_at_ms)
                .bind(c.updated_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            async fn apply_asset(
                tx: &mut Tx<'_>,
                a: &schemas::AssetState,
            ) -> Result<Outcome, sqlx::Error> {
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM assets WHERE id = $1")
                        .bind(&a.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if owner.is_some_and(|o| o != a.company_id) {
                    return Ok(reject("asset_id", "an asset cannot move between companies"));
                }
                let conn: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM connections WHERE id = $1 AND NOT deleted")
                        .bind(&a.connection_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if !a.deleted && conn.as_deref() != Some(a.company_id.as_str()) {
                    return Ok(reject("connection_id", "no such connection in this company"));
                }
                if !a.deleted {
                    let taken: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM assets WHERE company_id = $1 AND slug = $2 AND NOT deleted AND id <> $3",
                    )
                    .bind(&a.company_id)
                    .bind(&a.slug)
                    .bind(&a.id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if taken.is_some() {
                        return Ok(reject("slug", "slug is already taken in this company"));
                    }
                }
                let tags = serde_json::to_string(&a.tags).unwrap_or_else(|_| "[]".into());
                let search_text = crate::metadata::search_text(&a.name, a.description.as_deref(), &tags);
                sqlx::query(
                    "INSERT INTO assets (id, company_id, user_id, connection_id, name, slug, description, asset_type, visibility, \
                     sell_in_marketplace, allow_params, source, require_customization, accept_terms, industry_id, auc_id, tags, \
                     sql_logic, params_json, extra_json, cached, timeout_ms, version, deleted, created_at_ms, updated_at_ms, search_text) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27) \
                     ON CONFLICT (id) DO UPDATE SET connection_id = EXCLUDED.connection_id, name = EXCLUDED.name, slug = EXCLUDED.slug, \
                     description = EXCLUDED.description, asset_type = EXCLUDED.asset_type, visibility = EXCLUDED.visibility, \
                     sell_in_marketplace = EXCLUDED.sell_in_marketplace, allow_params = EXCLUDED.allow_params, source = EXCLUDED.source, \
                     require_customization = EXCLUDED.require_customization, accept_terms = EXCLUDED.accept_terms, \
                     industry_id = EXCLUDED.industry_id, auc_id = EXCLUDED.auc_id, tags = EXCLUDED.tags, sql_logic = EXCLUDED.sql_logic, \
                     params_json = EXCLUDED.params_json, extra_json = EXCLUDED.extra_json, cached = EXCLUDED.cached, \
                     timeout_ms = EXCLUDED.timeout_ms, version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
                     updated_at_ms = EXCLUDED.updated_at_ms, search_text = EXCLUDED.search_text",
                )
                .bind(&a.id)
                .bind(&a.company_id)
                .bind(&a.user_id)
                .bind(&a.connection_id)
                .bind(&a.name)
                .bind(&a.slug)
                .bind(&a.description)
                .bind(&a.asset_type)
                .bind(&a.visibility)
                .bind(a.sell_in_marketplace)
                .bind(a.allow_params)
                .bind(&a.source)
                .bind(a.require_customization)
                .bind(a.accept_terms)
                .bind(a.industry_id)
                .bind(a.auc_id)
                .bind(tags)
                .bind(&a.sql_logic)
                .bind(&a.params_json)
                .bind(&a.extra_json)
                .bind(a.cached)
                .bind(a.timeout_ms)
                .bind(a.version)
                .bind(a.deleted)
                .bind(a.created_at_ms)
                .bind(a.updated_at_ms)
                .bind(search_text)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            async fn apply_favorite(tx: &mut Tx<'_>, f: &schemas::FavoriteState) -> Result<Outcome, sqlx::Error> {
                let user: Option<String> = sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                    .bind(&f.user_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                if user.as_deref() != Some(f.company_id.as_str()) {
                    return Ok(reject("user_id", "no such user in this company"));
                }
                if !f.deleted {
                    let taken: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM favorites WHERE user_id = $1 AND asset_id = $2 AND NOT deleted AND id <> $3",
                    )
                    .bind(&f.user_id)
                    .bind(&f.asset_id)
                    .bind(&f.id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if taken.is_some() {
                        return Ok(reject("asset_id", "this asset is already a favorite"));
                    }
                }
                sqlx::query(
                    "INSERT INTO favorites (id, favorite_id, company_id, user_id, asset_id, notes, category, priority, deleted, created_at_ms, updated_at_ms) \
                     SELECT $1, COALESCE(MAX(favorite_id), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM favorites WHERE TRUE \
                     ON CONFLICT (id) DO UPDATE SET notes = EXCLUDED.notes, category = EXCLUDED.category, priority = EXCLUDED.priority, \
                     deleted = EXCLUDED.deleted, updated_at_ms = EXCLUDED.updated_at_ms",
                )
                .bind(&f.id)
                .bind(&f.company_id)
                .bind(&f.user_id)
                .bind(&f.asset_id)
                .bind(&f.notes)
                .bind(&f.category)
                .bind(f.priority)
                .bind(f.deleted)
                .bind(f.created_at_ms)
                .bind(f.updated_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            async fn apply_alert(tx: &mut Tx<'_>, a: &schemas::AlertState) -> Result<Outcome, sqlx::Error> {
                let user: Option<String> = sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                    .bind(&a.user_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                if user.as_deref() != Some(a.company_id.as_str()) {
                    return Ok(reject("user_id", "no such user in this company"));
                }
                let state = serde_json::to_string(a).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO alerts (id, alert_id, company_id, user_id, asset_id, state_json, deleted) \
                     SELECT $1, COALESCE(MAX(alert_id), 0) + 1, $2, $3, $4, $5, $6 FROM alerts WHERE TRUE \
                     ON CONFLICT (id) DO UPDATE SET asset_id = EXCLUDED.asset_id, state_json = EXCLUDED.state_json, \
                     deleted = EXCLUDED.deleted",
                )
                .bind(&a.id)
                .bind(&a.company_id)
                .bind(&a.user_id)
                .bind(&a.asset_id)
                .bind(state)
                .bind(a.deleted)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// A website object belongs to a live website of its company, never moves to another
            /// site or kind, and its public key (if any) is its kind's only live one.
            async fn apply_site_object(tx: &mut Tx<'_>, o: &schemas::SiteObjectState) -> Result<Outcome, sqlx::Error> {
                let before: Option<(String, String)> = sqlx::query_as("SELECT website_id, kind FROM site_objects WHERE id = $1")
                    .bind(&o.id)
                    .fetch_optional(&mut **tx)
                    .await?;
                if before.is_some_and(|(w, k)| w != o.website_id || k != o.kind) {
                    return Ok(reject("id", "an object cannot move to another website or kind"));
                }
                if !o.deleted {
                    let site: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT company_id FROM websites WHERE id = $1 AND deleted_at_ms IS NULL",
                    )
                    .bind(&o.website_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if site.flatten().as_deref() != Some(o.company_id.as_str()) {
                        return Ok(reject("website_id", "no such website in this company"));
                    }
                    if let Some(key) = &o.public_key {
                        let taken: Option<String> = sqlx::query_scalar(
                            "SELECT id FROM site_objects WHERE kind = $1 AND public_key = $2 AND NOT deleted AND id <> $3",
                        )
                        .bind(&o.kind)
                        .bind(key)
                        .bind(&o.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                        if taken.is_some() {
                            return Ok(reject("slug", "another live object already uses this key"));
                        }
                    }
                }
                let state = serde_json::to_string(o).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO site_objects (id, kind, website_id, company_id, public_key, state_json, created_at_ms, deleted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET public_key = EXCLUDED.public_key, \
                     state_json = EXCLUDED.state_json, deleted = EXCLUDED.deleted",
                )
                .bind(&o.id)
                .bind(&o.kind)
                .bind(&o.website_id)
                .bind(&o.company_id)
                .bind(&o.public_key)
                .bind(state)
                .bind(o.created_at_ms)
                .bind(o.deleted)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// An endpoint stays in its company, reads one of that company's live connections,
            /// and has a slug no other live endpoint of the company has.
            async fn apply_endpoint(tx: &mut Tx<'_>, e: &schemas::EndpointState) -> Result<Outcome, sqlx::Error> {
                let owner: Option<String> = sqlx::query_scalar("SELECT company_id FROM endpoints WHERE id = $1")
                    .bind(&e.id)
                    .fetch_optional(&mut **tx)
                    .await?;
                if owner.is_some_and(|o| o != e.company_id) {
                    return Ok(reject("endpoint_id", "an endpoint cannot move between companies"));
                }
                if !e.deleted {
                    let conn: Option<String> =
                        sqlx::query_scalar("SELECT company_id FROM connections WHERE id = $1 AND NOT deleted")
                            .bind(&e.connection_id)
                            .fetch_optional(&mut **tx)
                            .await?;
                    if conn.as_deref() != Some(e.company_id.as_str()) {
                        return Ok(reject("connection_id", "no such connection in this company"));
                    }
                    let taken: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM endpoints WHERE company_id = $1 AND slug = $2 AND NOT deleted AND id <> $3",
                    )
                    .bind(&e.company_id)
                    .bind(&e.slug)
                    .bind(&e.id)
                    .fetch_optional(&mut **tx)
                    .await?;
                    if taken.is_some() {
                        return Ok(reject("slug", "slug is already taken in this company"));
                    }
                }
                let state = serde_json::to_string(e).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO endpoints (id, company_id, connection_id, slug, state_json, deleted) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO UPDATE SET connection_id = EXCLUDED.connection_id, slug = EXCLUDED.slug, \
                     state_json = EXCLUDED.state_json, deleted = EXCLUDED.deleted",
                )
                .bind(&e.id)
                .bind(&e.company_id)
                .bind(&e.connection_id)
                .bind(&e.slug)
                .bind(state)
                .bind(e.deleted)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// Whether asset (or endpoint: both are priced) `asset_id` belongs to company
            /// `company_id`.
            async fn asset_of(tx: &mut Tx<'_>, asset_id: &str, company_id: &str) -> Result<bool, sqlx::Error> {
                let owner: Option<String> = sqlx::query_scalar(
                    "SELECT company_id FROM assets WHERE id = $1 UNION ALL SELECT company_id FROM endpoints WHERE id = $1",
                )
                .bind(asset_id)
                .fetch_optional(&mut **tx)
                .await?;
                Ok(owner.as_deref() == Some(company_id))
            }

            /// A discount on one of the company's assets.
            async fn apply_discount(tx: &mut Tx<'_>, d: &schemas::DiscountSet) -> Result<Outcome, sqlx::Error> {
                if exists(tx, "SELECT 1 FROM discounts WHERE discount_id = $1", &d.discount_id).await? {
                    return Ok(Ok(()));
                }
                if !asset_of(tx, &d.asset_id, &d.company_id).await? {
                    return Ok(reject("asset_id", "no such asset in this company"));
                }
                sqlx::query(
                    "INSERT INTO discounts (discount_id, company_id, asset_id, percent, amount_credits, starts_at_ms, ends_at_ms, buyer_company_id, set_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&d.discount_id)
                .bind(&d.company_id)
                .bind(&d.asset_id)
                .bind(d.percent)
                .bind(d.amount_credits)
                .bind(d.starts_at_ms)
                .bind(d.ends_at_ms)
                .bind(&d.buyer_company_id)
                .bind(d.set_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// A new price ends the one in force (type 2 history).
            async fn apply_price(tx: &mut Tx<'_>, p: &schemas::PriceSet) -> Result<Outcome, sqlx::Error> {
                if exists(tx, "SELECT 1 FROM asset_prices WHERE aph_id = $1", &p.aph_id).await? {
                    return Ok(Ok(()));
                }
                if !asset_of(tx, &p.asset_id, &p.company_id).await? {
                    return Ok(reject("asset_id", "no such asset in this company"));
                }
                sqlx::query("UPDATE asset_prices SET date_ended_ms = $1 WHERE asset_id = $2 AND date_ended_ms IS NULL")
                    .bind(p.set_at_ms)
                    .bind(&p.asset_id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO asset_prices (aph_id, company_id, asset_id, price_usd, credits, date_created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&p.aph_id)
                .bind(&p.company_id)
                .bind(&p.asset_id)
                .bind(p.price_usd)
                .bind(p.credits)
                .bind(p.set_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// Ends one price of one of the company's assets (once: ending it again does nothing).
            async fn apply_price_end(tx: &mut Tx<'_>, e: &schemas::PriceEnded) -> Result<Outcome, sqlx::Error> {
                if !asset_of(tx, &e.asset_id, &e.company_id).await? {
                    return Ok(reject("asset_id", "no such asset in this company"));
                }
                let known: Option<String> = sqlx::query_scalar("SELECT asset_id FROM asset_prices WHERE aph_id = $1")
                    .bind(&e.aph_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                if known.as_deref() != Some(e.asset_id.as_str()) {
                    return Ok(reject("aph_id", "no such price of this asset"));
                }
                sqlx::query("UPDATE asset_prices SET date_ended_ms = $1 WHERE aph_id = $2 AND date_ended_ms IS NULL")
                    .bind(e.ended_at_ms)
                    .bind(&e.aph_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(Ok(()))
            }

            /// A company's plan from now on; the period starts at `period_start_ms`.
            async fn apply_subscription(tx: &mut Tx<'_>, e: &schemas::SubscriptionSet) -> Result<Outcome, sqlx::Error> {
                if !exists(tx, "SELECT 1 FROM companies WHERE id = $1", &e.company_id).await? {
                    return Ok(reject("company_id", "no such company"));
                }
                if reference::plan(&e.plan_id).is_none() {
                    return Ok(reject("plan", "no such plan"));
                }
                sqlx::query(
                    "INSERT INTO subscriptions (company_id, plan_id, period_start_ms, monthly_requests) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (company_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, period_start_ms = EXCLUDED.period_start_ms, \
                     monthly_requests = EXCLUDED.monthly_requests",
                )
                .bind(&e.company_id)
                .bind(&e.plan_id)
                .bind(e.period_start_ms)
                .bind(e.monthly_requests)
                .execute(&mut **tx)
                .await?;
                Ok(Ok(()))
            }

            /// Places a pre-company setup user (an old log's `UserCreated`) in the operator
            /// company, creating that company the first time.
            async fn apply_legacy_user(
                tx: &mut Tx<'_>,
                u: &schemas::UserCreated,
            ) -> Result<(), sqlx::Error> {
                let company = CompanyState {
                    id: LEGACY_OPERATOR_COMPANY.into(),
                    handle: "operator".into(),
                    domain: "operator.invalid".into(),
                    name: "Operator".into(),
                    description: None,
                    industry_id: None,
                    country_id: None,
                    vendor_share_bp: 8_500,
                    partnership_type: None,
                    accepted_eula: true,
                    is_operator: true,
                    timezone: "UTC".into(),
                    created_at_ms: u.created_at_ms,
                    updated_at_ms: u.created_at_ms,
                };
                if !exists(tx, "SELECT 1 FROM companies WHERE id = $1", &company.id).await? {
                    write_company(tx, &company).await?;
                }
                let user = UserState {
                    id: u.id.clone(),
                    company_id: company.id,
                    username: Some(u.username.clone()),
                    email: None,
                    password_hash: Some(u.password_hash.clone()),
                    role_id: 1,
                    function_id: None,
                    status: "ACTIVE".into(),
                    timezone: "UTC".into(),
                    marketing_opt_out: false,
                    first_name: None,
                    last_name: None,
                    created_at_ms: u.created_at_ms,
                    updated_at_ms: u.created_at_ms,
                };
                write_user(tx, &user).await
            }

            async fn apply_legacy_key(
                tx: &mut Tx<'_>,
                k: &schemas::ApiKeyCreated,
            ) -> Result<(), sqlx::Error> {
                let company: Option<String> =
                    sqlx::query_scalar("SELECT company_id FROM users WHERE id = $1")
                        .bind(&k.user_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                let Some(company_id) = company else {
                    return Ok(());
                };
                let key = ApiKeyState {
                    id: k.id.clone(),
                    user_id: k.user_id.clone(),
                    company_id,
                    name: k.name.clone(),
                    key_hash: k.key_hash.clone(),
                    key_last4: k.key_last4.clone(),
                    key_type: "analytics".into(),
                    role_id: 1,
                    is_system_generated: false,
                    endpoint_id: None,
                    expires_at_ms: None,
                    active: true,
                    revoked_at_ms: None,
                    revoked_by: None,
                    revocation_reason: None,
                    created_at_ms: k.created_at_ms,
                    updated_at_ms: k.created_at_ms,
                    mode: "live".into(),
                };
                write_key(tx, &key).await
            }

            async fn apply_one(tx: &mut Tx<'_>, event: &EntityEvent) -> Result<Outcome, sqlx::Error> {
                match event {
                    EntityEvent::WebsiteCreated(w) => {
                        // A v1 event names no company: the site is the operator's.
                        sqlx::query("INSERT INTO websites (id, name, domain, timezone, created_at_ms, company_id) VALUES ($1, $2, $3, $4, $5, \
                                     COALESCE($6, (SELECT id FROM companies WHERE is_operator ORDER BY created_at_ms, id LIMIT 1))) ON CONFLICT DO NOTHING")
                            .bind(&w.id)
                            .bind(&w.name)
                            .bind(&w.domain)
                            .bind(&w.timezone)
                            .bind(w.created_at_ms)
                            .bind(&w.company_id)
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
                    EntityEvent::UserCreated(u) => apply_legacy_user(tx, u).await?,
                    EntityEvent::ApiKeyCreated(k) => apply_legacy_key(tx, k).await?,
                    EntityEvent::ApiKeyRevoked(k) => {
                        sqlx::query(
                            "UPDATE api_keys SET active = FALSE, revoked_at_ms = $1, updated_at_ms = $1 \
                             WHERE id = $2 AND revoked_at_ms IS NULL",
                        )
                        .bind(k.revoked_at_ms)
                        .bind(&k.id)
                        .execute(&mut **tx)
                        .await?;
                    }
                    EntityEvent::CompanyCreated(e) => return apply_company_created(tx, e).await,
                    EntityEvent::CompanyUpdated(e) => return apply_company_updated(tx, &e.company).await,
                    EntityEvent::UserUpserted(e) => return apply_user(tx, &e.user).await,
                    EntityEvent::ApiKeyUpserted(e) => return apply_key(tx, &e.key).await,
                    EntityEvent::ConnectionUpserted(e) => return apply_connection(tx, &e.connection).await,
                    EntityEvent::AssetUpserted(e) => return apply_asset(tx, &e.asset).await,
                    EntityEvent::PriceSet(p) => return apply_price(tx, p).await,
                    EntityEvent::DiscountSet(d) => return apply_discount(tx, d).await,
                    EntityEvent::PriceEnded(e) => return apply_price_end(tx, e).await,
                    EntityEvent::SubscriptionSet(e) => return apply_subscription(tx, e).await,
                    EntityEvent::FavoriteUpserted(e) => return apply_favorite(tx, &e.favorite).await,
                    EntityEvent::AlertUpserted(e) => return apply_alert(tx, &e.alert).await,
                    EntityEvent::EndpointUpserted(e) => return apply_endpoint(tx, &e.endpoint).await,
                    EntityEvent::SiteObjectUpserted(e) => return apply_site_object(tx, &e.object).await,
                }
                Ok(Ok(()))
            }

            fn company_from(row: &$row) -> Result<Company, sqlx::Error> {
                Ok(Company {
                    state: CompanyState {
                        id: row.try_get("id")?,
                        handle: row.try_get("handle")?,
                        domain: row.try_get("domain")?,
                        name: row.try_get("name")?,
                        description: row.try_get("description")?,
                        industry_id: row.try_get("industry_id")?,
                        country_id: row.try_get("country_id")?,
                        vendor_share_bp: row.try_get("vendor_share_bp")?,
                        partnership_type: row.try_get("partnership_type")?,
                        accepted_eula: row.try_get("accepted_eula")?,
                        is_operator: row.try_get("is_operator")?,
                        timezone: row.try_get("timezone")?,
                        created_at_ms: row.try_get("created_at_ms")?,
                        updated_at_ms: row.try_get("updated_at_ms")?,
                    },
                    credits_balance: row.try_get("credits_balance")?,
                    subscription: match (row.try_get::<Option<String>, _>("plan_id")?, row.try_get::<Option<i64>, _>("period_start_ms")?) {
                        (Some(plan_id), Some(period_start_ms)) => Some(Subscription {
                            plan_id,
                            period_start_ms,
                            monthly_requests: row.try_get("monthly_requests")?,
                        }),
                        _ => None,
                    },
                })
            }

            fn user_from(row: &$row) -> Result<UserState, sqlx::Error> {
                Ok(UserState {
                    id: row.try_get("id")?,
                    company_id: row.try_get("company_id")?,
                    username: row.try_get("username")?,
                    email: row.try_get("email")?,
                    password_hash: row.try_get("password_hash")?,
                    role_id: row.try_get("role_id")?,
                    function_id: row.try_get("function_id")?,
                    status: row.try_get("status")?,
                    timezone: row.try_get("timezone")?,
                    marketing_opt_out: row.try_get("marketing_opt_out")?,
                    first_name: row.try_get("first_name")?,
                    last_name: row.try_get("last_name")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            }

            fn key_from(row: &$row) -> Result<ApiKey, sqlx::Error> {
                Ok(ApiKey {
                    api_key_id: row.try_get("api_key_id")?,
                    state: ApiKeyState {
                        id: row.try_get("id")?,
                        user_id: row.try_get("user_id")?,
                        company_id: row.try_get("company_id")?,
                        name: row.try_get("name")?,
                        key_hash: row.try_get("key_hash")?,
                        key_last4: row.try_get("key_last4")?,
                        key_type: row.try_get("key_type")?,
                        role_id: row.try_get("role_id")?,
                        is_system_generated: row.try_get("is_system_generated")?,
                        endpoint_id: row.try_get("endpoint_id")?,
                        expires_at_ms: row.try_get("expires_at_ms")?,
                        active: row.try_get("active")?,
                        revoked_at_ms: row.try_get("revoked_at_ms")?,
                        revoked_by: row.try_get("revoked_by")?,
                        revocation_reason: row.try_get("revocation_reason")?,
                        created_at_ms: row.try_get("created_at_ms")?,
                        updated_at_ms: row.try_get("updated_at_ms")?,
                        mode: row.try_get("mode")?,
                    },
                })
            }

            fn connection_from(row: &$row) -> Result<schemas::ConnectionState, sqlx::Error> {
                Ok(schemas::ConnectionState {
                    id: row.try_get("id")?,
                    company_id: row.try_get("company_id")?,
                    user_id: row.try_get("user_id")?,
                    engine_id: row.try_get("engine_id")?,
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    credential_type: row.try_get("credential_type")?,
                    provider_domain: row.try_get("provider_domain")?,
                    credentials_sealed: row.try_get("credentials_sealed")?,
                    verified_usage_ability: row.try_get("verified_usage_ability")?,
                    deleted: row.try_get("deleted")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            }

            fn asset_from(row: &$row) -> Result<schemas::AssetState, sqlx::Error> {
                let tags: String = row.try_get("tags")?;
                Ok(schemas::AssetState {
                    id: row.try_get("id")?,
                    company_id: row.try_get("company_id")?,
                    user_id: row.try_get("user_id")?,
                    connection_id: row.try_get("connection_id")?,
                    name: row.try_get("name")?,
                    slug: row.try_get("slug")?,
                    description: row.try_get("description")?,
                    asset_type: row.try_get("asset_type")?,
                    visibility: row.try_get("visibility")?,
                    sell_in_marketplace: row.try_get("sell_in_marketplace")?,
                    allow_params: row.try_get("allow_params")?,
                    source: row.try_get("source")?,
                    require_customization: row.try_get("require_customization")?,
                    accept_terms: row.try_get("accept_terms")?,
                    industry_id: row.try_get("industry_id")?,
                    auc_id: row.try_get("auc_id")?,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    sql_logic: row.try_get("sql_logic")?,
                    params_json: row.try_get("params_json")?,
                    extra_json: row.try_get("extra_json")?,
                    cached: row.try_get("cached")?,
                    timeout_ms: row.try_get("timeout_ms")?,
                    version: row.try_get("version")?,
                    deleted: row.try_get("deleted")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            }

            fn website_from(row: &$row) -> Result<Website, sqlx::Error> {
                Ok(Website {
                    id: row.try_get("id")?,
                    company_id: row.try_get("company_id")?,
                    name: row.try_get("name")?,
                    domain: row.try_get("domain")?,
                    timezone: row.try_get("timezone")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            }

            fn all<T>(
                rows: &[$row],
                from: fn(&$row) -> Result<T, sqlx::Error>,
            ) -> StoreResult<Vec<T>> {
                rows.iter().map(from).collect::<Result<_, _>>().map_err(sql_err)
            }

            #[async_trait]
            impl MetadataWriter for $store {
                async fn apply(
                    &self,
                    consumer: &str,
                    events: &[EntityEvent],
                    offsets: &[StoredOffset],
                ) -> StoreResult<()> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                    for e in events {
                        if let Err(r) = apply_one(&mut tx, e).await.map_err(sql_err)? {
                            let id = e.event_id().unwrap_or_default();
                            tracing::info!(event_id = id, field = %r.field, reason = %r.reason, "entity event rejected");
                            sqlx::query("INSERT INTO rejected_events (event_id, field, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                                .bind(id)
                                .bind(&r.field)
                                .bind(&r.reason)
                                .execute(&mut *tx)
                                .await
                                .map_err(sql_err)?;
                        }
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
                    all(&rows, website_from)
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
                        "SELECT k.id, k.api_key_id, k.user_id, k.company_id, k.role_id, k.expires_at_ms, k.mode, k.endpoint_id \
                         FROM api_keys k JOIN users u ON u.id = k.user_id \
                         WHERE k.key_hash = $1 AND k.active AND k.revoked_at_ms IS NULL AND u.status = 'ACTIVE'",
                    )
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    row.map(|r| {
                        Ok(KeyOwner {
                            key_id: r.try_get("id")?,
                            api_key_id: r.try_get("api_key_id")?,
                            user_id: r.try_get("user_id")?,
                            company_id: r.try_get("company_id")?,
                            role_id: r.try_get("role_id")?,
                            expires_at_ms: r.try_get("expires_at_ms")?,
                            test_mode: r.try_get::<String, _>("mode")? == "test",
                            endpoint_id: r.try_get("endpoint_id")?,
                        })
                    })
                    .transpose()
                    .map_err(sql_err)
                }

                async fn api_key_id_by_hash(&self, key_hash: &str) -> StoreResult<Option<i64>> {
                    sqlx::query_scalar("SELECT api_key_id FROM api_keys WHERE key_hash = $1")
                        .bind(key_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)
                }

                async fn api_keys(&self, company_id: &str) -> StoreResult<Vec<ApiKey>> {
                    let rows = sqlx::query("SELECT * FROM api_keys WHERE company_id = $1 ORDER BY api_key_id")
                        .bind(company_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    all(&rows, key_from)
                }

                async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
                    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(key_from).transpose().map_err(sql_err)
                }

                async fn api_key_by_number(
                    &self,
                    company_id: &str,
                    api_key_id: i64,
                ) -> StoreResult<Option<ApiKey>> {
                    let row = sqlx::query("SELECT * FROM api_keys WHERE company_id = $1 AND api_key_id = $2")
                        .bind(company_id)
                        .bind(api_key_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(key_from).transpose().map_err(sql_err)
                }

                async fn company(&self, id: &str) -> StoreResult<Option<Company>> {
                    let row = sqlx::query(const_format_company!("WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(company_from).transpose().map_err(sql_err)
                }

                async fn companies(&self) -> StoreResult<Vec<Company>> {
                    let rows = sqlx::query(const_format_company!("ORDER BY created_at_ms, id"))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    all(&rows, company_from)
                }

                async fn company_conflict(
                    &self,
                    handle: &str,
                    domain: &str,
                    except_id: Option<&str>,
                ) -> StoreResult<Conflict> {
                    company_conflict_in(&self.pool, handle, domain, except_id.unwrap_or(""))
                        .await
                        .map_err(sql_err)
                }

                async fn login_conflict(
                    &self,
                    email: Option<&str>,
                    username: Option<&str>,
                    except_id: Option<&str>,
                ) -> StoreResult<Conflict> {
                    login_conflict_in(&self.pool, email, username, except_id.unwrap_or(""))
                        .await
                        .map_err(sql_err)
                }

                async fn user_by_login(&self, login: &str) -> StoreResult<Option<UserState>> {
                    let row = sqlx::query("SELECT * FROM users WHERE email = $1 OR username = $2 LIMIT 1")
                        .bind(login.to_lowercase())
                        .bind(login)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(user_from).transpose().map_err(sql_err)
                }

                async fn user(&self, id: &str) -> StoreResult<Option<UserState>> {
                    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(user_from).transpose().map_err(sql_err)
                }

                async fn users(&self, company_id: &str) -> StoreResult<Vec<UserState>> {
                    let rows = sqlx::query("SELECT * FROM users WHERE company_id = $1 ORDER BY created_at_ms, id")
                        .bind(company_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    all(&rows, user_from)
                }

                async fn connection(&self, id: &str) -> StoreResult<Option<schemas::ConnectionState>> {
                    let row = sqlx::query("SELECT * FROM connections WHERE id = $1 AND NOT deleted")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(connection_from).transpose().map_err(sql_err)
                }

                async fn connections(&self, company_id: &str) -> StoreResult<Vec<schemas::ConnectionState>> {
                    let rows = sqlx::query("SELECT * FROM connections WHERE company_id = $1 AND NOT deleted ORDER BY created_at_ms, id")
                        .bind(company_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    all(&rows, connection_from)
                }

                async fn asset(&self, id: &str) -> StoreResult<Option<schemas::AssetState>> {
                    let row = sqlx::query("SELECT * FROM assets WHERE id = $1 AND NOT deleted")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(asset_from).transpose().map_err(sql_err)
                }

                async fn asset_by_slug(&self, company_id: &str, slug: &str) -> StoreResult<Option<schemas::AssetState>> {
                    let row = sqlx::query("SELECT * FROM assets WHERE company_id = $1 AND slug = $2 AND NOT deleted")
                        .bind(company_id)
                        .bind(slug)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(asset_from).transpose().map_err(sql_err)
                }

                async fn visible_assets(&self, company_id: &str) -> StoreResult<Vec<schemas::AssetState>> {
                    let rows = sqlx::query(
                        "SELECT * FROM assets WHERE NOT deleted AND (company_id = $1 OR (visibility = 'SHARED' AND sell_in_marketplace)) \
                         ORDER BY created_at_ms, id",
                    )
                    .bind(company_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    all(&rows, asset_from)
                }

                async fn search_assets(&self, company_id: &str, q: &AssetQuery) -> StoreResult<(Vec<schemas::AssetState>, u64)> {
                    // `$2`/`$3` are LIKE patterns ('%' when absent) over the lowercased search text
                    // and the tags (stored as JSON text).
                    // `deleted = FALSE`, not `NOT deleted`: SQLite would take the latter as a cue
                    // to walk the partial slug index and look up every row from it, which is
                    // slower than one pass over the table.
                    const WHERE: &str = "WHERE deleted = FALSE AND (company_id = $1 OR (visibility = 'SHARED' AND sell_in_marketplace)) \
                        AND search_text LIKE $2 ESCAPE '\\' \
                        AND ($3 = '%' OR lower(asset_type) = $4 OR lower(tags) LIKE $3)";
                    // Popularity counts succeeded executions (the money store's rows, same database).
                    let since = match q.sort {
                        crate::metadata::AssetSort::Trending { since_ms } => since_ms,
                        _ => 0,
                    };
                    let by_use = matches!(q.sort, crate::metadata::AssetSort::Popular | crate::metadata::AssetSort::Trending { .. });
                    let order = match q.sort {
                        crate::metadata::AssetSort::Name => "lower(name), id",
                        crate::metadata::AssetSort::Recent => "updated_at_ms DESC, id",
                        crate::metadata::AssetSort::Popular | crate::metadata::AssetSort::Trending { .. } => {
                            "(SELECT count(*) FROM executions e WHERE e.asset_id = assets.id AND e.status = 'succeeded' AND e.created_at_ms >= $7) DESC, lower(name), id"
                        }
                    };
                    // The search term is literal text: LIKE's wildcards in it are escaped.
                    let literal = |t: &str| t.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                    let like = |v: &Option<String>| v.as_ref().map_or("%".to_string(), |t| format!("%{}%", literal(t)));
                    let (text, tag) = (like(&q.text), q.category.as_ref().map_or("%".to_string(), |c| format!("%\"{}\"%", c.to_lowercase())));
                    let category = q.category.clone().unwrap_or_default().to_lowercase();
                    // First the page's ids (one scan of narrow rows; the window count gives the
                    // total beside the page), then their rows.
                    let sql = format!(
                        "SELECT id, count(*) OVER () AS total_matches FROM assets {WHERE} ORDER BY {order} LIMIT $5 OFFSET $6"
                    );
                    let mut query = sqlx::query(&sql)
                        .bind(company_id)
                        .bind(&text)
                        .bind(&tag)
                        .bind(&category)
                        .bind(q.limit as i64)
                        .bind(q.offset as i64);
                    if by_use {
                        query = query.bind(since);
                    }
                    let page = query.fetch_all(&self.pool).await.map_err(sql_err)?;
                    let total: i64 = match page.first() {
                        Some(r) => r.try_get("total_matches").map_err(sql_err)?,
                        // A page past the end: count on its own.
                        None if q.offset > 0 => sqlx::query_scalar(&format!("SELECT count(*) FROM assets {WHERE}"))
                            .bind(company_id)
                            .bind(&text)
                            .bind(&tag)
                            .bind(&category)
                            .fetch_one(&self.pool)
                            .await
                            .map_err(sql_err)?,
                        None => 0,
                    };
                    let ids: Vec<String> = page.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>().map_err(sql_err)?;
                    if ids.is_empty() {
                        return Ok((Vec::new(), total as u64));
                    }
                    let mut rows_q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM assets WHERE id IN (");
                    let mut list = rows_q.separated(", ");
                    for id in &ids {
                        list.push_bind(id.clone());
                    }
                    list.push_unseparated(")");
                    let rows = rows_q.build().fetch_all(&self.pool).await.map_err(sql_err)?;
                    let mut found: std::collections::HashMap<String, schemas::AssetState> = all(&rows, asset_from)?
                        .into_iter()
                        .map(|a| (a.id.clone(), a))
                        .collect();
                    let ordered = ids.iter().filter_map(|id| found.remove(id)).collect();
                    Ok((ordered, total as u64))
                }

                async fn company_by_handle(&self, handle: &str) -> StoreResult<Option<Company>> {
                    let row = sqlx::query(const_format_company!("WHERE handle = $1"))
                        .bind(handle)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.as_ref().map(company_from).transpose().map_err(sql_err)
                }

                async fn favorites(&self, user_id: &str) -> StoreResult<Vec<Favorite>> {
                    let rows = sqlx::query("SELECT * FROM favorites WHERE user_id = $1 AND NOT deleted ORDER BY priority DESC, favorite_id")
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(Favorite {
                                favorite_id: r.try_get("favorite_id")?,
                                state: schemas::FavoriteState {
                                    id: r.try_get("id")?,
                                    company_id: r.try_get("company_id")?,
                                    user_id: r.try_get("user_id")?,
                                    asset_id: r.try_get("asset_id")?,
                                    notes: r.try_get("notes")?,
                                    category: r.try_get("category")?,
                                    priority: r.try_get("priority")?,
                                    deleted: r.try_get("deleted")?,
                                    created_at_ms: r.try_get("created_at_ms")?,
                                    updated_at_ms: r.try_get("updated_at_ms")?,
                                },
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }

                async fn endpoints_where(&self, scope: EndpointScope, id: &str) -> StoreResult<Vec<schemas::EndpointState>> {
                    let sql = match scope {
                        EndpointScope::One => "SELECT state_json FROM endpoints WHERE id = $1 AND NOT deleted",
                        EndpointScope::Company => "SELECT state_json FROM endpoints WHERE company_id = $1 AND NOT deleted",
                    };
                    let rows = sqlx::query(sql)
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        let json: String = r.try_get("state_json").map_err(sql_err)?;
                        let e: schemas::EndpointState = serde_json::from_str(&json)
                            .map_err(|e| StoreError::Backend(format!("endpoint: {e}")))?;
                        out.push(e);
                    }
                    out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                    Ok(out)
                }

                async fn site_objects_where(
                    &self,
                    scope: SiteObjectScope,
                    kind: &str,
                    id: &str,
                ) -> StoreResult<Vec<schemas::SiteObjectState>> {
                    let sql = match scope {
                        SiteObjectScope::One => "SELECT state_json FROM site_objects WHERE kind = $1 AND id = $2 AND NOT deleted",
                        SiteObjectScope::Website => "SELECT state_json FROM site_objects WHERE kind = $1 AND website_id = $2 AND NOT deleted",
                        SiteObjectScope::PublicKey => "SELECT state_json FROM site_objects WHERE kind = $1 AND public_key = $2 AND NOT deleted",
                    };
                    let rows = sqlx::query(sql)
                        .bind(kind)
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        let json: String = r.try_get("state_json").map_err(sql_err)?;
                        let o: schemas::SiteObjectState = serde_json::from_str(&json)
                            .map_err(|e| StoreError::Backend(format!("site object: {e}")))?;
                        out.push(o);
                    }
                    out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                    Ok(out)
                }

                async fn alerts_where(&self, column: AlertScope, id: &str) -> StoreResult<Vec<Alert>> {
                    let sql = match column {
                        AlertScope::Company => "SELECT alert_id, state_json FROM alerts WHERE company_id = $1 AND NOT deleted ORDER BY alert_id",
                        AlertScope::Asset => "SELECT alert_id, state_json FROM alerts WHERE asset_id = $1 AND NOT deleted ORDER BY alert_id",
                    };
                    let rows = sqlx::query(sql)
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        let alert_id: i64 = r.try_get("alert_id").map_err(sql_err)?;
                        let json: String = r.try_get("state_json").map_err(sql_err)?;
                        let state = serde_json::from_str(&json)
                            .map_err(|e| StoreError::Backend(format!("alert {alert_id}: {e}")))?;
                        out.push(Alert { alert_id, state });
                    }
                    Ok(out)
                }

                async fn discounts(&self, asset_id: &str) -> StoreResult<Vec<crate::money::Discount>> {
                    let rows = sqlx::query("SELECT * FROM discounts WHERE asset_id = $1 ORDER BY set_at_ms DESC, discount_id DESC")
                        .bind(asset_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(crate::money::Discount {
                                discount_id: r.try_get("discount_id")?,
                                asset_id: r.try_get("asset_id")?,
                                percent: r.try_get("percent")?,
                                amount_credits: r.try_get("amount_credits")?,
                                starts_at_ms: r.try_get("starts_at_ms")?,
                                ends_at_ms: r.try_get("ends_at_ms")?,
                                buyer_company_id: r.try_get("buyer_company_id")?,
                                set_at_ms: r.try_get("set_at_ms")?,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }

                async fn prices(&self, asset_id: &str) -> StoreResult<Vec<Price>> {
                    let rows = sqlx::query("SELECT * FROM asset_prices WHERE asset_id = $1 ORDER BY date_created_ms DESC, aph_id DESC")
                        .bind(asset_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(Price {
                                aph_id: r.try_get("aph_id")?,
                                asset_id: r.try_get("asset_id")?,
                                price_usd: r.try_get("price_usd")?,
                                credits: r.try_get("credits")?,
                                date_created_ms: r.try_get("date_created_ms")?,
                                date_ended_ms: r.try_get("date_ended_ms")?,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }

                async fn rejection(&self, event_id: &str) -> StoreResult<Option<Rejection>> {
                    let row = sqlx::query("SELECT field, reason FROM rejected_events WHERE event_id = $1")
                        .bind(event_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    row.map(|r| {
                        Ok(Rejection {
                            field: r.try_get("field")?,
                            reason: r.try_get("reason")?,
                        })
                    })
                    .transpose()
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
