//! The sources registry: turns a stored connection into a pooled connector. It owns the
//! network guard and the credentials box, so credentials are opened only here, just before a
//! connection is made, and every destination passes the guard. Pools are kept per connection
//! and renewed when the connection changes.

use crate::clickhouse::ClickHouseSource;
use crate::duckdb::DuckDbSource;
use crate::model::*;
use crate::mysql::MySqlSource;
use crate::postgres::PgSource;
use crate::sql::SqlDialect;
use crate::sqlite::{resolve_file, SqliteSource};
use crate::{NetworkGuard, SecretBox};
use dashmap::DashMap;
use schemas::ConnectionState;
use std::time::Duration;

/// The connector family of an engine Tally can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Postgres,
    MySql,
    ClickHouse,
    Sqlite,
    DuckDb,
}

impl Driver {
    /// The driver for a storage engine's `driver` name, if built.
    pub fn from_name(name: &str) -> Option<Driver> {
        match name {
            "postgres" => Some(Driver::Postgres),
            "mysql" => Some(Driver::MySql),
            "clickhouse" => Some(Driver::ClickHouse),
            "sqlite" => Some(Driver::Sqlite),
            "duckdb" => Some(Driver::DuckDb),
            _ => None,
        }
    }

    pub fn dialect(self) -> SqlDialect {
        match self {
            Driver::Postgres => SqlDialect::Postgres,
            Driver::MySql => SqlDialect::MySql,
            Driver::ClickHouse => SqlDialect::ClickHouse,
            Driver::Sqlite => SqlDialect::Sqlite,
            Driver::DuckDb => SqlDialect::DuckDb,
        }
    }

    /// The port a network engine listens on when the credentials name none.
    fn default_port(self) -> u16 {
        match self {
            Driver::MySql => 3306,
            Driver::ClickHouse => 8123,
            _ => 5432,
        }
    }

    /// Whether the engine's sources are files under the file root.
    fn is_file(self) -> bool {
        matches!(self, Driver::Sqlite | Driver::DuckDb)
    }
}

/// A live connector to one seller database.
#[derive(Clone)]
pub enum Connector {
    Postgres(PgSource),
    MySql(MySqlSource),
    ClickHouse(ClickHouseSource),
    Sqlite(SqliteSource),
    DuckDb(DuckDbSource),
}

/// Calls `$call` on whichever connector `$self` is.
macro_rules! each {
    ($self:expr, $p:ident => $call:expr) => {
        match $self {
            Connector::Postgres($p) => $call,
            Connector::MySql($p) => $call,
            Connector::ClickHouse($p) => $call,
            Connector::Sqlite($p) => $call,
            Connector::DuckDb($p) => $call,
        }
    };
}

impl Connector {
    pub async fn test(&self) -> TestReport {
        each!(self, p => p.test().await)
    }

    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        each!(self, p => p.tables(filter).await)
    }

    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        each!(self, p => p.query(sql, binds, limits).await)
    }

    /// The schema a table is in when none is named (`public`, `main`, or the database for
    /// MySQL and ClickHouse).
    pub fn default_schema(&self) -> String {
        match self {
            Connector::Postgres(_) => "public".into(),
            Connector::MySql(p) => p.database().into(),
            Connector::ClickHouse(p) => p.database().into(),
            Connector::Sqlite(_) | Connector::DuckDb(_) => "main".into(),
        }
    }

    /// An identifier quoted for this engine (MySQL's backticks, everyone else's `"`).
    pub fn quote_ident(&self, name: &str) -> String {
        match self {
            Connector::MySql(_) => format!("`{}`", name.replace('`', "``")),
            _ => quote_ident(name),
        }
    }

    /// Up to `limit` rows of one table, which must exist (its name comes from the schema, then
    /// quoted: no text from the caller reaches the SQL unquoted).
    pub async fn sample(
        &self,
        schema: &str,
        table: &str,
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let filter = SchemaFilter {
            schemas: vec![schema.to_string()],
            tables: vec![table.to_string()],
        };
        if self.tables(&filter).await?.is_empty() {
            return Err(SourceError::Invalid(format!(
                "no table {schema}.{table} in this source"
            )));
        }
        let sql = format!(
            "SELECT * FROM {}.{}",
            self.quote_ident(schema),
            self.quote_ident(table)
        );
        self.query(&sql, &[], limits).await
    }

    async fn close(&self) {
        each!(self, p => p.close().await)
    }
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Settings of the registry.
#[derive(Debug, Clone, Copy)]
pub struct RegistryConfig {
    /// The statement timeout of every source session (`TALLY_EXECUTION_TIMEOUT_MS`).
    pub execution_timeout: Duration,
    /// Connections pooled per seller connection.
    pub pool_size: u32,
}

/// Where file sources (SQLite, DuckDB files) may be: `TALLY_SOURCE_FILE_ROOT`, if set.
#[derive(Debug, Clone, Default)]
pub struct FileRoot(pub Option<std::path::PathBuf>);

pub struct Registry {
    guard: NetworkGuard,
    files: FileRoot,
    secrets: SecretBox,
    cfg: RegistryConfig,
    pools: DashMap<String, (i64, Connector)>,
}

impl Registry {
    pub fn new(guard: NetworkGuard, secrets: SecretBox, cfg: RegistryConfig) -> Registry {
        Registry {
            guard,
            files: FileRoot::default(),
            secrets,
            cfg,
            pools: DashMap::new(),
        }
    }

    /// Allows file sources under `root`.
    pub fn with_file_root(mut self, root: FileRoot) -> Registry {
        self.files = root;
        self
    }

    pub fn config(&self) -> RegistryConfig {
        self.cfg
    }

    /// Checks a credentials object for `driver` and its destination, before it is stored.
    pub async fn check(
        &self,
        driver: Driver,
        credentials: &serde_json::Value,
    ) -> Result<(), SourceError> {
        if driver.is_file() {
            resolve_file(self.files.0.as_deref(), &file_path(credentials)?)?;
        } else {
            let c = network_credentials(credentials)?;
            self.guard
                .resolve(&c.host, c.port.unwrap_or(driver.default_port()))
                .await?;
        }
        Ok(())
    }

    /// The one network guard every outbound connection passes (webhooks too).
    pub fn guard(&self) -> &NetworkGuard {
        &self.guard
    }

    /// Seals another secret (a webhook's signing secret) for `owner`.
    pub fn seal_secret(&self, owner: &str, plain: &[u8]) -> String {
        self.secrets.seal(owner, plain)
    }

    /// Opens what [`Registry::seal_secret`] sealed for `owner`.
    pub fn open_secret(&self, owner: &str, sealed: &str) -> Result<Vec<u8>, crate::SecretError> {
        self.secrets.open(owner, sealed)
    }

    /// Seals a credentials object for connection `connection_id`.
    pub fn seal(&self, connection_id: &str, credentials: &serde_json::Value) -> String {
        self.secrets
            .seal(connection_id, credentials.to_string().as_bytes())
    }

    /// The pooled connector for `conn`, (re)built when the connection changed.
    pub async fn connector(
        &self,
        conn: &ConnectionState,
        driver: Driver,
    ) -> Result<Connector, SourceError> {
        if let Some(hit) = self.pools.get(&conn.id) {
            if hit.0 == conn.updated_at_ms {
                return Ok(hit.1.clone());
            }
        }
        let plain = self
            .secrets
            .open(&conn.id, &conn.credentials_sealed)
            .map_err(|e| SourceError::Invalid(e.to_string()))?;
        let creds: serde_json::Value = serde_json::from_slice(&plain)
            .map_err(|_| SourceError::Invalid("stored credentials are unreadable".into()))?;
        let connector = match driver {
            Driver::Postgres => Connector::Postgres(
                PgSource::connect(
                    &self.guard,
                    &network_credentials(&creds)?,
                    self.cfg.pool_size,
                    self.cfg.execution_timeout,
                )
                .await?,
            ),
            Driver::MySql => Connector::MySql(
                MySqlSource::connect(
                    &self.guard,
                    &network_credentials(&creds)?,
                    self.cfg.pool_size,
                    self.cfg.execution_timeout,
                )
                .await?,
            ),
            Driver::ClickHouse => Connector::ClickHouse(
                ClickHouseSource::connect(
                    &self.guard,
                    &network_credentials(&creds)?,
                    self.cfg.execution_timeout,
                )
                .await?,
            ),
            Driver::Sqlite => {
                let file = resolve_file(self.files.0.as_deref(), &file_path(&creds)?)?;
                Connector::Sqlite(SqliteSource::open(&file, self.cfg.pool_size))
            }
            Driver::DuckDb => {
                let file = resolve_file(self.files.0.as_deref(), &file_path(&creds)?)?;
                Connector::DuckDb(DuckDbSource::open(&file))
            }
        };
        // Concurrent first calls may each build a pool: the first one in wins and the others
        // drop theirs (lazy, so never connected). A pool of an older version of the
        // connection is replaced, not closed, so a query still running on it finishes; its
        // connections close when its last user lets go.
        use dashmap::mapref::entry::Entry;
        let connector = match self.pools.entry(conn.id.clone()) {
            Entry::Occupied(e) if e.get().0 >= conn.updated_at_ms => e.get().1.clone(),
            Entry::Occupied(mut e) => {
                e.insert((conn.updated_at_ms, connector.clone()));
                connector
            }
            Entry::Vacant(v) => {
                v.insert((conn.updated_at_ms, connector.clone()));
                connector
            }
        };
        Ok(connector)
    }

    /// Closes the pool of a deleted or changed connection.
    pub async fn forget(&self, connection_id: &str) {
        if let Some((_, (_, old))) = self.pools.remove(connection_id) {
            old.close().await;
        }
    }
}

/// The `{"path"}` of a file source's credentials.
pub fn file_path(value: &serde_json::Value) -> Result<String, SourceError> {
    let obj = value.as_object().filter(|o| o.len() == 1);
    obj.and_then(|o| o.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| p.len() <= 1024)
        .map(str::to_string)
        .ok_or_else(|| {
            SourceError::Invalid(
                "credentials must be {\"path\"}: a file under TALLY_SOURCE_FILE_ROOT".into(),
            )
        })
}

/// The network credentials in `value`, with a clear message for a wrong shape.
pub fn network_credentials(value: &serde_json::Value) -> Result<NetworkCredentials, SourceError> {
    let c: NetworkCredentials = serde_json::from_value(value.clone()).map_err(|e| {
        SourceError::Invalid(format!(
            "credentials must be {{\"host\", \"port\"?, \"database\", \"username\", \"password\", \"ssl_mode\"?}}: {e}"
        ))
    })?;
    if c.host.trim().is_empty() || c.host.len() > 253 {
        return Err(SourceError::Invalid(
            "credentials.host must be a host name or address".into(),
        ));
    }
    if c.database.is_empty()
        || c.username.is_empty()
        || c.database.len() > 128
        || c.username.len() > 128
    {
        return Err(SourceError::Invalid(
            "credentials.database and credentials.username are required (≤ 128 characters)".into(),
        ));
    }
    if c.password.len() > 1024 {
        return Err(SourceError::Invalid(
            "credentials.password is longer than 1024 characters".into(),
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_credentials_checked() {
        assert_eq!(quote_ident("sales"), "\"sales\"");
        assert_eq!(
            quote_ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        let ok = serde_json::json!({"host": "db.example", "database": "d", "username": "u", "password": "p"});
        assert!(network_credentials(&ok).is_ok());
        for bad in [
            serde_json::json!({"host": "db.example"}),
            serde_json::json!({"host": "", "database": "d", "username": "u"}),
            serde_json::json!({"host": "h", "database": "d", "username": "u", "extra": 1}),
            serde_json::json!("text"),
        ] {
            assert!(network_credentials(&bad).is_err(), "{bad}");
        }
        assert_eq!(Driver::from_name("postgres"), Some(Driver::Postgres));
        assert_eq!(Driver::from_name("oracle"), None);
    }
}
