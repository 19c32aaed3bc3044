//! DuckDB file sources. A file is reachable only under `TALLY_SOURCE_FILE_ROOT` (the same
//! rule as SQLite files). It is opened `READ_ONLY` with external access off, so a query can
//! neither write nor read other files of this host (`read_csv('/etc/passwd')` fails in DuckDB
//! itself). Queries run on a blocking thread over a clone of one connection; the timeout
//! interrupts the running statement. The row cap is a `LIMIT` around the asset's query.

use crate::model::*;
use duckdb::types::Value as D;
use duckdb::{AccessMode, Config, Connection};
use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct DuckDbSource {
    file: PathBuf,
    /// Opened on first use; queries run on clones of it.
    base: Arc<Mutex<Option<Connection>>>,
}

fn query_err(e: duckdb::Error) -> SourceError {
    SourceError::Query(e.to_string())
}

impl DuckDbSource {
    pub fn open(file: &Path) -> DuckDbSource {
        DuckDbSource {
            file: file.to_path_buf(),
            base: Arc::new(Mutex::new(None)),
        }
    }

    /// A new connection to the file (a clone of the first one).
    fn connection(&self) -> Result<Connection, SourceError> {
        let mut base = self
            .base
            .lock()
            .map_err(|_| SourceError::Connect("the DuckDB connection is poisoned".into()))?;
        if base.is_none() {
            let config = Config::default()
                .access_mode(AccessMode::ReadOnly)
                .and_then(|c| c.enable_external_access(false))
                .and_then(|c| c.enable_autoload_extension(false))
                .map_err(|e| SourceError::Connect(e.to_string()))?;
            let conn = Connection::open_with_flags(&self.file, config)
                .map_err(|e| SourceError::Connect(e.to_string()))?;
            *base = Some(conn);
        }
        base.as_ref()
            .map(|c| {
                c.try_clone()
                    .map_err(|e| SourceError::Connect(e.to_string()))
            })
            .unwrap_or_else(|| Err(SourceError::Connect("no DuckDB connection".into())))
    }

    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let conn = self.connection()?;
        let interrupt = conn.interrupt_handle();
        let sql = format!("SELECT * FROM ({sql}) LIMIT {}", limits.max_rows + 1);
        let binds: Vec<D> = binds.iter().map(param).collect();
        let run = tokio::task::spawn_blocking(move || run(&conn, &sql, &binds, limits));
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(joined) => joined.map_err(|e| SourceError::Query(e.to_string()))?,
            Err(_) => {
                interrupt.interrupt();
                Err(SourceError::Timeout(limits.timeout))
            }
        }
    }

    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        let conn = self.connection()?;
        let rows = tokio::task::spawn_blocking(move || list_columns(&conn))
            .await
            .map_err(|e| SourceError::Query(e.to_string()))??;
        let columns = rows.into_iter().map(|[schema, table, name, ty, nullable]| {
            let column = ColumnInfo {
                name,
                type_name: ty.to_lowercase(),
                nullable: nullable == "YES",
            };
            (schema, table, column)
        });
        Ok(TableInfo::group(columns, filter))
    }

    pub async fn test(&self) -> TestReport {
        let started = Instant::now();
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_rows: 1,
            max_bytes: 1024,
        };
        if let Err(e) = self.query("SELECT 1", &[], limits).await {
            return TestReport::failed(e.to_string());
        }
        let latency = started.elapsed();
        TestReport::answered(latency, self.tables(&SchemaFilter::default()).await)
    }

    pub async fn close(&self) {
        if let Ok(mut base) = self.base.lock() {
            base.take();
        }
    }
}

/// Schema, table, column, type and nullability of every column of the file's database.
fn list_columns(conn: &Connection) -> Result<Vec<[String; 5]>, SourceError> {
    let mut stmt = conn
        .prepare(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable \
             FROM information_schema.columns \
             WHERE table_catalog = current_database() \
             ORDER BY table_schema, table_name, ordinal_position",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
        })
        .map_err(query_err)?;
    rows.map(|r| r.map_err(query_err)).collect()
}

fn param(p: &Param) -> D {
    match p {
        Param::Null => D::Null,
        Param::Str(s) => D::Text(s.clone()),
        Param::Int(i) => D::BigInt(*i),
        Param::Float(f) => D::Double(*f),
        Param::Bool(b) => D::Boolean(*b),
        Param::Date(d) => D::Text(d.to_string()),
        Param::Timestamp(t) => D::Text(t.to_rfc3339()),
    }
}

fn run(conn: &Connection, sql: &str, binds: &[D], limits: Limits) -> Result<Rows, SourceError> {
    let mut stmt = conn.prepare(sql).map_err(query_err)?;
    let mut rows = stmt
        .query(duckdb::params_from_iter(binds.iter()))
        .map_err(query_err)?;
    let mut out = Rows::empty();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(query_err)? {
        let stmt = row.as_ref();
        if out.columns.is_empty() {
            out.columns = (0..stmt.column_count())
                .map(|i| Column {
                    name: stmt
                        .column_name(i)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    type_name: format!("{}", stmt.column_type(i)).to_lowercase(),
                })
                .collect();
        }
        let values: Vec<J> = (0..out.columns.len())
            .map(|i| row.get::<_, D>(i).map(|v| json(&v)).unwrap_or(J::Null))
            .collect();
        if !out.push_within(values, &mut bytes, limits) {
            break;
        }
    }
    Ok(out)
}

/// A DuckDB value as JSON: numbers as numbers (a 128-bit one past 64 bits as text), times as
/// ISO 8601, blobs as hex, nested values nested.
fn json(v: &D) -> J {
    match v {
        D::Null => J::Null,
        D::Boolean(b) => J::from(*b),
        D::TinyInt(i) => J::from(*i),
        D::SmallInt(i) => J::from(*i),
        D::Int(i) => J::from(*i),
        D::BigInt(i) => J::from(*i),
        D::HugeInt(i) => i64::try_from(*i).map_or_else(|_| J::from(i.to_string()), J::from),
        D::UTinyInt(i) => J::from(*i),
        D::USmallInt(i) => J::from(*i),
        D::UInt(i) => J::from(*i),
        D::UBigInt(i) => J::from(*i),
        D::Float(f) => J::from(*f as f64),
        D::Double(f) => J::from(*f),
        D::Decimal(d) => {
            let text = d.to_string();
            serde_json::from_str(&text).unwrap_or(J::from(text))
        }
        D::Timestamp(unit, n) => micros_to_iso(unit.to_micros(*n)),
        D::Text(s) | D::Enum(s) => J::from(s.clone()),
        D::Blob(b) => J::from(hex::encode(b)),
        D::Date32(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(*days))))
            .map_or(J::Null, |d| J::from(d.to_string())),
        D::Time64(unit, n) => {
            let micros = unit.to_micros(*n);
            chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (micros / 1_000_000) as u32,
                ((micros % 1_000_000) * 1000) as u32,
            )
            .map_or(J::Null, |t| J::from(t.to_string()))
        }
        D::Interval {
            months,
            days,
            nanos,
        } => J::from(format!("{months} months {days} days {nanos} ns")),
        D::List(items) | D::Array(items) => J::Array(items.iter().map(json).collect()),
        D::Struct(fields) => J::Object(fields.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
        D::Map(entries) => J::Array(
            entries
                .iter()
                .map(|(k, v)| J::Array(vec![json(k), json(v)]))
                .collect(),
        ),
        D::Union(inner) => json(inner),
    }
}

fn micros_to_iso(micros: i64) -> J {
    chrono::DateTime::from_timestamp_micros(micros).map_or(J::Null, |t| {
        J::from(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::types::TimeUnit;

    #[test]
    fn values_become_json() {
        assert_eq!(
            json(&D::HugeInt(1 << 70)),
            J::from((1i128 << 70).to_string())
        );
        assert_eq!(json(&D::HugeInt(5)), J::from(5));
        assert_eq!(json(&D::Date32(1)), J::from("1970-01-02"));
        assert_eq!(
            json(&D::Timestamp(TimeUnit::Second, 1)),
            J::from("1970-01-01T00:00:01.000000Z")
        );
        assert_eq!(json(&D::Blob(vec![0xab])), J::from("ab"));
    }

    #[tokio::test]
    async fn a_file_opens_read_only_without_external_access() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.duckdb");
        {
            let c = Connection::open(&file).expect("create");
            c.execute_batch(
                "CREATE TABLE t (a INTEGER, b VARCHAR); INSERT INTO t VALUES (1, 'x'), (2, NULL);",
            )
            .expect("fill");
        }
        let src = DuckDbSource::open(&file);
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_rows: 1,
            max_bytes: 1 << 20,
        };
        let rows = src
            .query(
                "SELECT a, b FROM t WHERE a >= ? ORDER BY a",
                &[Param::Int(1)],
                limits,
            )
            .await
            .expect("query");
        assert_eq!(rows.rows, vec![vec![J::from(1), J::from("x")]]);
        assert!(rows.truncated, "the row cap cuts the second row");
        let write = src
            .query("SELECT * FROM t; DELETE FROM t", &[], limits)
            .await;
        assert!(write.is_err(), "{write:?}");
        let outside = src
            .query("SELECT * FROM read_csv('/etc/hostname')", &[], limits)
            .await;
        assert!(outside.is_err(), "external access is off: {outside:?}");
        let tables = src.tables(&SchemaFilter::default()).await.expect("tables");
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].columns.len(), 2);
    }
}
