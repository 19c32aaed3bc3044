//! PostgreSQL sources (sqlx). Sessions are read-only (`default_transaction_read_only=on`) with
//! a `statement_timeout`; an asset with a lower timeout runs in a transaction that lowers it
//! with `SET LOCAL`. Rows come back as `row_to_json(ROW(q.*))` of the asset's query, so the
//! server renders every type (numeric, arrays, ranges …) as JSON in column order; the row cap
//! is a `LIMIT` on that wrapper, so a 10-million-row query stops at the server.

use crate::model::*;
use crate::NetworkGuard;
use dashmap::DashMap;
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Column as _, Executor, Row, TypeInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One seller's Postgres, pooled.
#[derive(Clone)]
pub struct PgSource {
    pool: PgPool,
    session_timeout: Duration,
    /// Column names and types per query text (an asset's SQL is fixed per version).
    described: Arc<DashMap<String, Arc<Vec<Column>>>>,
}

fn connect_err(e: sqlx::Error) -> SourceError {
    SourceError::Connect(e.to_string())
}

fn query_err(e: sqlx::Error, timeout: Duration) -> SourceError {
    match &e {
        // 57014 query_canceled: the statement timeout fired.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
            SourceError::Timeout(timeout)
        }
        sqlx::Error::Database(d) => SourceError::Query(d.message().to_string()),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            SourceError::Connect(e.to_string())
        }
        _ => SourceError::Query(e.to_string()),
    }
}

impl PgSource {
    /// Resolves the host through the guard and pools connections to the checked address.
    pub async fn connect(
        guard: &NetworkGuard,
        creds: &NetworkCredentials,
        max_connections: u32,
        session_timeout: Duration,
    ) -> Result<PgSource, SourceError> {
        if !matches!(
            creds.ssl_mode.as_deref(),
            None | Some("disable") | Some("prefer")
        ) {
            return Err(SourceError::Invalid(
                "ssl_mode must be disable or prefer: TLS to sources is not built yet".into(),
            ));
        }
        let port = creds.port.unwrap_or(5432);
        let addr = guard.resolve(&creds.host, port).await?[0];
        let timeout_ms = session_timeout.as_millis().to_string();
        let opts = PgConnectOptions::new()
            .host(&addr.ip().to_string())
            .port(addr.port())
            .database(&creds.database)
            .username(&creds.username)
            .password(&creds.password)
            .application_name("tally-source")
            .options([
                ("default_transaction_read_only", "on"),
                ("statement_timeout", timeout_ms.as_str()),
            ]);
        let pool = crate::model::ping_when_idle(PgPoolOptions::new())
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        Ok(PgSource {
            pool,
            session_timeout,
            described: Arc::new(DashMap::new()),
        })
    }

    async fn columns(&self, sql: &str) -> Result<Arc<Vec<Column>>, SourceError> {
        if let Some(hit) = self.described.get(sql) {
            return Ok(hit.clone());
        }
        let d = (&self.pool)
            .describe(sql)
            .await
            .map_err(|e| query_err(e, self.session_timeout))?;
        let cols: Vec<Column> = d
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                type_name: c.type_info().name().to_lowercase(),
            })
            .collect();
        let cols = Arc::new(cols);
        if self.described.len() > 10_000 {
            self.described.clear();
        }
        self.described.insert(sql.to_string(), cols.clone());
        Ok(cols)
    }

    /// Runs one read-only query with `binds` bound in order, within `limits`.
    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let run = self.query_inner(sql, binds, limits);
        // The server's timeout fires first; this one covers a source that stops answering.
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
        let columns = self.columns(sql).await?;
        let wrapped = format!(
            "SELECT row_to_json(ROW(q.*))::text FROM ({sql}) AS q LIMIT {}",
            limits.max_rows + 1
        );
        let mut q = sqlx::query(&wrapped);
        for p in binds {
            q = match p {
                Param::Null => q.bind(Option::<String>::None),
                Param::Str(s) => q.bind(s.clone()),
                Param::Int(i) => q.bind(*i),
                Param::Float(f) => q.bind(*f),
                Param::Bool(b) => q.bind(*b),
                Param::Date(d) => q.bind(*d),
                Param::Timestamp(t) => q.bind(*t),
            };
        }
        let err = |e| query_err(e, limits.timeout);
        let mut conn = self.pool.acquire().await.map_err(connect_err)?;
        let lowered = limits.timeout < self.session_timeout;
        if lowered {
            conn.execute("BEGIN READ ONLY").await.map_err(err)?;
            let set = format!(
                "SET LOCAL statement_timeout = {}",
                limits.timeout.as_millis()
            );
            conn.execute(set.as_str()).await.map_err(err)?;
        }
        let mut out = Rows {
            columns: columns.as_ref().clone(),
            rows: Vec::new(),
            truncated: false,
        };
        let mut bytes = 0usize;
        let result: Result<(), SourceError> = async {
            let mut stream = q.fetch(&mut *conn);
            while let Some(row) = stream.try_next().await.map_err(err)? {
                let text: String = row.try_get(0).map_err(err)?;
                bytes += text.len();
                if out.rows.len() == limits.max_rows || bytes > limits.max_bytes {
                    out.truncated = true;
                    break;
                }
                out.rows.push(positional(&text, out.columns.len())?);
            }
            Ok(())
        }
        .await;
        if lowered {
            // A failed statement left the transaction aborted: end it either way.
            let _ = conn.execute("ROLLBACK").await;
        }
        result.map(|_| out)
    }

    /// Tables and columns outside the system schemas.
    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        let rows = sqlx::query(
            "SELECT c.table_schema::text AS s, c.table_name::text AS t, c.column_name::text AS c, \
             c.data_type::text AS ty, (c.is_nullable = 'YES') AS nullable \
             FROM information_schema.columns c \
             WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY c.table_schema, c.table_name, c.ordinal_position",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| query_err(e, self.session_timeout))?;
        let columns = rows.iter().map(|r| {
            let column = ColumnInfo {
                name: r.get("c"),
                type_name: r.get("ty"),
                nullable: r.get("nullable"),
            };
            (r.get("s"), r.get("t"), column)
        });
        Ok(TableInfo::group(columns, filter))
    }

    /// Latency, read and schema permissions, tables found. Never an error.
    pub async fn test(&self) -> TestReport {
        let started = Instant::now();
        if let Err(e) = sqlx::query("SELECT 1").execute(&self.pool).await {
            return TestReport::failed(query_err(e, self.session_timeout).to_string());
        }
        let latency = started.elapsed();
        TestReport::answered(latency, self.tables(&SchemaFilter::default()).await)
    }

    /// Closes the pool (a connection's credentials changed or it was deleted).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The values of `{"f1": …, "f2": …}` in column order.
fn positional(text: &str, n: usize) -> Result<Vec<serde_json::Value>, SourceError> {
    let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| SourceError::Query(format!("unreadable row: {e}")))?;
    Ok((1..=n)
        .map(|i| {
            obj.remove(&format!("f{i}"))
                .unwrap_or(serde_json::Value::Null)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_values_follow_column_numbers_not_key_order() {
        let v = positional(r#"{"f1":1,"f2":"a","f10":true,"f3":null}"#, 3).expect("row");
        assert_eq!(
            v,
            vec![
                serde_json::json!(1),
                serde_json::json!("a"),
                serde_json::Value::Null
            ]
        );
        assert!(positional("not json", 1).is_err());
    }
}
