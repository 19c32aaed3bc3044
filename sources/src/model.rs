//! What every source connector speaks: credentials, bound parameter values, limits, result
//! rows, schema information and errors. Plain types, no I/O.

use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// A network engine's credentials, as sent on connection create (write-only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCredentials {
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `disable` only for now (TLS to sources is not built yet).
    pub ssl_mode: Option<String>,
}

/// A value bound to a placeholder by the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `YYYY-MM-DD`
    Date(chrono::NaiveDate),
    Timestamp(chrono::DateTime<chrono::Utc>),
}

/// Bounds on one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// Rows returned at most; more are cut and `truncated` is set.
    pub max_rows: usize,
    /// Bytes of JSON row data returned at most; more are cut and `truncated` is set.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// Rows of a query, values in column order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub truncated: bool,
}

impl Rows {
    /// Each row as a JSON object keyed by [`Rows::unique_names`].
    pub fn objects(&self) -> Vec<Value> {
        let names = self.unique_names();
        self.rows
            .iter()
            .map(|r| Value::Object(names.iter().cloned().zip(r.iter().cloned()).collect()))
            .collect()
    }

    /// Column names made unique: a repeated name gets `_2`, `_3` …
    pub fn unique_names(&self) -> Vec<String> {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        self.columns
            .iter()
            .map(|c| {
                let n = seen.entry(c.name.as_str()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    c.name.clone()
                } else {
                    format!("{}_{}", c.name, n)
                }
            })
            .collect()
    }
}

impl Rows {
    /// No rows yet, columns to come with the first row.
    pub fn empty() -> Rows {
        Rows {
            columns: Vec::new(),
            rows: Vec::new(),
            truncated: false,
        }
    }

    /// Adds one row within `limits`: false (and `truncated` set) when the row cap or the byte
    /// cap is reached, so the caller stops reading. `bytes` counts the JSON so far.
    pub fn push_within(&mut self, values: Vec<Value>, bytes: &mut usize, limits: Limits) -> bool {
        *bytes += values.iter().map(|v| v.to_string().len()).sum::<usize>();
        if self.rows.len() == limits.max_rows || *bytes > limits.max_bytes {
            self.truncated = true;
            return false;
        }
        self.rows.push(values);
        true
    }
}

impl TableInfo {
    /// Tables from (schema, table, column) rows, in the order given (rows of one table
    /// together or not), keeping those `filter` admits.
    pub fn group(
        columns: impl IntoIterator<Item = (String, String, ColumnInfo)>,
        filter: &SchemaFilter,
    ) -> Vec<TableInfo> {
        let mut out: Vec<TableInfo> = Vec::new();
        for (schema, table, column) in columns {
            if !filter.admits(&schema, &table) {
                continue;
            }
            match out
                .iter_mut()
                .rev()
                .find(|t| t.schema == schema && t.table == table)
            {
                Some(t) => t.columns.push(column),
                None => out.push(TableInfo {
                    schema,
                    table,
                    columns: vec![column],
                }),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnInfo>,
}

/// What `test` found: a failed connection is a report, never an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestReport {
    /// `ok` or `failed`.
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    pub can_read: bool,
    pub can_read_schema: bool,
    pub tables_found: Option<usize>,
    /// The driver's reason for a failure (never the credentials).
    pub error: Option<String>,
}

impl TestReport {
    /// A source that could not be reached, with the driver's reason.
    pub fn failed(reason: String) -> TestReport {
        TestReport {
            status: "failed",
            latency_ms: None,
            can_read: false,
            can_read_schema: false,
            tables_found: None,
            error: Some(reason),
        }
    }

    /// A source that answered in `latency`, with what listing its tables gave.
    pub fn answered(latency: Duration, tables: Result<Vec<TableInfo>, SourceError>) -> TestReport {
        let ms = latency.as_secs_f64() * 1000.0;
        TestReport {
            status: "ok",
            latency_ms: Some((ms * 100.0).round() / 100.0),
            can_read: true,
            can_read_schema: tables.is_ok(),
            tables_found: tables.as_ref().ok().map(Vec::len),
            error: tables.err().map(|e| e.to_string()),
        }
    }
}

/// Why a source call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Guard(#[from] crate::GuardError),
    #[error("cannot connect to the source: {0}")]
    Connect(String),
    #[error("the source refused the query: {0}")]
    Query(String),
    #[error("the query ran longer than {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}

/// Filters for the information schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaFilter {
    pub schemas: Vec<String>,
    pub tables: Vec<String>,
}

impl SchemaFilter {
    pub fn admits(&self, schema: &str, table: &str) -> bool {
        (self.schemas.is_empty() || self.schemas.iter().any(|s| s == schema))
            && (self.tables.is_empty() || self.tables.iter().any(|t| t == table))
    }
}

/// A connection idle for longer than this is pinged before use (a seller's firewall may have
/// dropped it); one in steady use is not, which saves a round trip per query.
pub const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Pool options that ping a connection only after [`PING_AFTER_IDLE`] (sqlx's default pings
/// on every acquire); a dead connection is dropped and a fresh one opened.
pub fn ping_when_idle<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_AFTER_IDLE {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_column_names_get_suffixes() {
        let col = |n: &str| Column {
            name: n.into(),
            type_name: "int".into(),
        };
        let rows = Rows {
            columns: vec![col("a"), col("b"), col("a"), col("a")],
            rows: vec![],
            truncated: false,
        };
        assert_eq!(rows.unique_names(), vec!["a", "b", "a_2", "a_3"]);
    }
}
