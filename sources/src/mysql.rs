//! MySQL and MariaDB sources (sqlx). Every session is `TRANSACTION READ ONLY` with a statement
//! time limit (`max_statement_time` on MariaDB, `max_execution_time` on MySQL); an asset's
//! lower timeout is set per statement. The row cap is a `LIMIT` around the asset's query, so a
//! 10-million-row query stops at the server. Values are read by their column type.

use crate::model::*;
use crate::NetworkGuard;
use futures::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{Column as _, Executor, Row, TypeInfo, ValueRef};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the server turned out to be, learnt on the first connection.
const UNKNOWN: u8 = 0;
const MARIADB: u8 = 1;
const MYSQL: u8 = 2;

#[derive(Clone)]
pub struct MySqlSource {
    pool: MySqlPool,
    database: String,
    session_timeout: Duration,
    flavor: Arc<AtomicU8>,
}

fn connect_err(e: sqlx::Error) -> SourceError {
    SourceError::Connect(e.to_string())
}

fn query_err(e: sqlx::Error, timeout: Duration) -> SourceError {
    match &e {
        // 1969: MariaDB's max_statement_time; 3024: MySQL's max_execution_time.
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("70100")) => {
            SourceError::Timeout(timeout)
        }
        sqlx::Error::Database(d) if d.message().contains("max_statement_time") => {
            SourceError::Timeout(timeout)
        }
        sqlx::Error::Database(d) if d.message().contains("maximum statement execution time") => {
            SourceError::Timeout(timeout)
        }
        sqlx::Error::Database(d) => SourceError::Query(d.message().to_string()),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            SourceError::Connect(e.to_string())
        }
        _ => SourceError::Query(e.to_string()),
    }
}

/// The session statements for a server whose `VERSION()` is `version`.
fn session_setup(version: &str, timeout: Duration) -> (u8, [String; 2]) {
    let read_only = "SET SESSION TRANSACTION READ ONLY".to_string();
    if version.contains("MariaDB") {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        (
            MARIADB,
            [
                read_only,
                format!("SET SESSION max_statement_time = {secs}"),
            ],
        )
    } else {
        let ms = timeout.as_millis();
        (
            MYSQL,
            [read_only, format!("SET SESSION max_execution_time = {ms}")],
        )
    }
}

/// The asset's query wrapped with the row cap and, when lower than the session's, its own
/// time limit.
fn wrapped(sql: &str, flavor: u8, limits: Limits, session_timeout: Duration) -> String {
    let capped = format!("SELECT * FROM ({sql}) AS q LIMIT {}", limits.max_rows + 1);
    if limits.timeout >= session_timeout {
        return capped;
    }
    match flavor {
        MARIADB => format!(
            "SET STATEMENT max_statement_time = {:.3} FOR {capped}",
            limits.timeout.as_secs_f64()
        ),
        _ => format!(
            "SELECT /*+ MAX_EXECUTION_TIME({}) */ * FROM ({sql}) AS q LIMIT {}",
            limits.timeout.as_millis(),
            limits.max_rows + 1
        ),
    }
}

impl MySqlSource {
    /// Resolves the host through the guard and pools read-only sessions to the checked address.
    pub async fn connect(
        guard: &NetworkGuard,
        creds: &NetworkCredentials,
        max_connections: u32,
        session_timeout: Duration,
    ) -> Result<MySqlSource, SourceError> {
        if !matches!(
            creds.ssl_mode.as_deref(),
            None | Some("disable") | Some("prefer")
        ) {
            return Err(SourceError::Invalid(
                "ssl_mode must be disable or prefer: TLS to sources is not built yet".into(),
            ));
        }
        let port = creds.port.unwrap_or(3306);
        let addr = guard.resolve(&creds.host, port).await?[0];
        let opts = MySqlConnectOptions::new()
            .host(&addr.ip().to_string())
            .port(addr.port())
            .database(&creds.database)
            .username(&creds.username)
            .password(&creds.password)
            .ssl_mode(MySqlSslMode::Disabled)
            .statement_cache_capacity(256);
        let flavor = Arc::new(AtomicU8::new(UNKNOWN));
        let seen = flavor.clone();
        let pool = crate::model::ping_when_idle(MySqlPoolOptions::new())
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            .after_connect(move |conn, _| {
                let seen = seen.clone();
                Box::pin(async move {
                    let version: String = sqlx::query_scalar("SELECT VERSION()")
                        .fetch_one(&mut *conn)
                        .await?;
                    let (kind, statements) = session_setup(&version, session_timeout);
                    for s in statements {
                        conn.execute(s.as_str()).await?;
                    }
                    seen.store(kind, Ordering::Relaxed);
                    Ok(())
                })
            })
            .connect_lazy_with(opts);
        Ok(MySqlSource {
            pool,
            database: creds.database.clone(),
            session_timeout,
            flavor,
        })
    }

    /// The database named in the credentials (MySQL's schema).
    pub fn database(&self) -> &str {
        &self.database
    }

    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let run = self.query_inner(sql, binds, limits);
        // The server's limit fires first; this one covers a source that stops answering.
        match tokio::time::timeout(limits.timeout + Duration::from_secs(2), run).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(limits.timeout)),
        }
    }

    async fn query_inner(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let err = |e| query_err(e, limits.timeout);
        let mut conn = self.pool.acquire().await.map_err(connect_err)?;
        let text = wrapped(
            sql,
            self.flavor.load(Ordering::Relaxed),
            limits,
            self.session_timeout,
        );
        let mut q = sqlx::query(&text);
        for p in binds {
            q = match p {
                Param::Null => q.bind(Option::<String>::None),
                Param::Str(s) => q.bind(s.clone()),
                Param::Int(i) => q.bind(*i),
                Param::Float(f) => q.bind(*f),
                Param::Bool(b) => q.bind(*b),
                Param::Date(d) => q.bind(*d),
                Param::Timestamp(t) => q.bind(t.naive_utc()),
            };
        }
        let mut out = Rows::empty();
        let mut bytes = 0usize;
        let mut stream = q.fetch(&mut *conn);
        while let Some(row) = stream.try_next().await.map_err(err)? {
            if out.columns.is_empty() {
                out.columns = row
                    .columns()
                    .iter()
                    .map(|c| Column {
                        name: c.name().to_string(),
                        type_name: c.type_info().name().to_lowercase(),
                    })
                    .collect();
            }
            let values: Vec<serde_json::Value> = (0..row.len()).map(|i| value(&row, i)).collect();
            if !out.push_within(values, &mut bytes, limits) {
                break;
            }
        }
        Ok(out)
    }

    /// Tables and columns outside the server's own schemas.
    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        let rows = sqlx::query(
            "SELECT CAST(table_schema AS CHAR) AS s, CAST(table_name AS CHAR) AS t, \
             CAST(column_name AS CHAR) AS c, CAST(column_type AS CHAR) AS ty, \
             CAST(is_nullable AS CHAR) AS n \
             FROM information_schema.columns \
             WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY table_schema, table_name, ordinal_position",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| query_err(e, self.session_timeout))?;
        let columns = rows.iter().map(|r| {
            let column = ColumnInfo {
                name: r.get("c"),
                type_name: r.get("ty"),
                nullable: r.get::<String, _>("n") == "YES",
            };
            (r.get("s"), r.get("t"), column)
        });
        Ok(TableInfo::group(columns, filter))
    }

    pub async fn test(&self) -> TestReport {
        let started = Instant::now();
        if let Err(e) = sqlx::query("SELECT 1").execute(&self.pool).await {
            return TestReport::failed(query_err(e, self.session_timeout).to_string());
        }
        let latency = started.elapsed();
        TestReport::answered(latency, self.tables(&SchemaFilter::default()).await)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One value by its column type.
fn value(row: &MySqlRow, i: usize) -> serde_json::Value {
    use serde_json::Value as J;
    let Ok(raw) = row.try_get_raw(i) else {
        return J::Null;
    };
    if raw.is_null() {
        return J::Null;
    }
    let ty = raw.type_info().name().to_string();
    let or_null = |v: Option<J>| v.unwrap_or(J::Null);
    match ty.as_str() {
        "BOOLEAN" => or_null(row.try_get::<bool, _>(i).ok().map(J::from)),
        t if t.ends_with("UNSIGNED") => or_null(row.try_get::<u64, _>(i).ok().map(J::from)),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            or_null(row.try_get::<i64, _>(i).ok().map(J::from))
        }
        "FLOAT" => or_null(row.try_get::<f32, _>(i).ok().map(|f| J::from(f as f64))),
        "DOUBLE" => or_null(row.try_get::<f64, _>(i).ok().map(J::from)),
        "DATE" => or_null(
            row.try_get::<chrono::NaiveDate, _>(i)
                .ok()
                .map(|d| J::from(d.to_string())),
        ),
        "DATETIME" => or_null(
            row.try_get::<chrono::NaiveDateTime, _>(i)
                .ok()
                .map(|d| J::from(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
        ),
        "TIMESTAMP" => or_null(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)
                .ok()
                .map(|d| J::from(d.to_rfc3339())),
        ),
        "TIME" => or_null(
            row.try_get::<chrono::NaiveTime, _>(i)
                .ok()
                .map(|d| J::from(d.to_string())),
        ),
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT" => {
            or_null(
                row.try_get::<Vec<u8>, _>(i)
                    .ok()
                    .map(|b| J::from(hex::encode(b))),
            )
        }
        "DECIMAL" | "JSON" => {
            let text = raw_text(row, i);
            serde_json::from_str(&text).unwrap_or(J::from(text))
        }
        _ => J::from(raw_text(row, i)),
    }
}

/// A value's text (DECIMAL, JSON, character types). The binary protocol sends these as
/// length-prefixed text, so the bytes are read without sqlx's type check.
fn raw_text(row: &MySqlRow, i: usize) -> String {
    row.try_get::<String, _>(i).unwrap_or_else(|_| {
        row.try_get_unchecked::<Vec<u8>, _>(i)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_and_mysql_get_their_own_time_limits() {
        let t = Duration::from_millis(1500);
        let (kind, s) = session_setup("10.11.19-MariaDB-0+deb12u1", t);
        assert_eq!(kind, MARIADB);
        assert_eq!(s[1], "SET SESSION max_statement_time = 1.500");
        let (kind, s) = session_setup("8.0.36", t);
        assert_eq!(kind, MYSQL);
        assert_eq!(s[1], "SET SESSION max_execution_time = 1500");
        assert_eq!(s[0], "SET SESSION TRANSACTION READ ONLY");
    }

    #[test]
    fn the_row_cap_and_a_lower_timeout_wrap_the_query() {
        let limits = Limits {
            timeout: Duration::from_millis(200),
            max_rows: 10,
            max_bytes: 1000,
        };
        let session = Duration::from_secs(10);
        assert_eq!(
            wrapped("SELECT 1", MARIADB, limits, session),
            "SET STATEMENT max_statement_time = 0.200 FOR SELECT * FROM (SELECT 1) AS q LIMIT 11"
        );
        assert!(wrapped("SELECT 1", MYSQL, limits, session).contains("MAX_EXECUTION_TIME(200)"));
        let same = Limits {
            timeout: session,
            ..limits
        };
        assert_eq!(
            wrapped("SELECT 1", MARIADB, same, session),
            "SELECT * FROM (SELECT 1) AS q LIMIT 11"
        );
    }
}
