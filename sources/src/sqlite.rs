//! SQLite file sources (sqlx). A file is reachable only under `TALLY_SOURCE_FILE_ROOT`: the
//! path is relative, may not climb with `..`, and its canonical form (symlinks resolved) must
//! stay under the root's. The file is opened read-only, so every write fails in SQLite itself.
//! Values are read by their storage class (integer, real, text, blob as hex); the row cap is a
//! `LIMIT` around the asset's query. A progress handler interrupts a statement that runs past
//! its deadline, so a timed-out query stops inside SQLite instead of holding a worker thread.

use crate::model::*;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Column as _, Row, TypeInfo, ValueRef};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// The file `relative` under `root`, or why it is refused.
pub fn resolve_file(root: Option<&Path>, relative: &str) -> Result<PathBuf, SourceError> {
    let root = root.ok_or_else(|| {
        SourceError::Invalid("file sources need TALLY_SOURCE_FILE_ROOT to be set".into())
    })?;
    let rel = Path::new(relative);
    let climbs = rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || rel.is_absolute() || climbs {
        return Err(SourceError::Invalid(
            "credentials.path must be a relative path under TALLY_SOURCE_FILE_ROOT, without .."
                .into(),
        ));
    }
    let canonical_root = root
        .canonicalize()
        .map_err(|e| SourceError::Invalid(format!("TALLY_SOURCE_FILE_ROOT: {e}")))?;
    let file = canonical_root
        .join(rel)
        .canonicalize()
        .map_err(|_| SourceError::Invalid(format!("no file {relative:?} under the file root")))?;
    if !file.starts_with(&canonical_root) || !file.is_file() {
        return Err(SourceError::Invalid(format!(
            "{relative:?} leads outside the file root"
        )));
    }
    Ok(file)
}

#[derive(Clone)]
pub struct SqliteSource {
    pool: SqlitePool,
}

fn query_err(e: sqlx::Error) -> SourceError {
    match e {
        sqlx::Error::Database(d) => SourceError::Query(d.message().to_string()),
        other => SourceError::Query(other.to_string()),
    }
}

impl SqliteSource {
    pub fn open(file: &Path, max_connections: u32) -> SqliteSource {
        let opts = SqliteConnectOptions::new()
            .filename(file)
            .read_only(true)
            .create_if_missing(false);
        // A local file: nothing to ping.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections.clamp(1, 8))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts);
        SqliteSource { pool }
    }

    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let mut conn = self.pool.acquire().await.map_err(query_err)?;
        let deadline = Instant::now() + limits.timeout;
        conn.lock_handle()
            .await
            .map_err(query_err)?
            .set_progress_handler(1000, move || Instant::now() < deadline);
        let run = self.query_inner(&mut conn, sql, binds, limits);
        // The handler stops SQLite itself; this covers time spent outside a statement.
        let result = match tokio::time::timeout(limits.timeout + Duration::from_secs(1), run).await
        {
            Ok(Err(SourceError::Query(m)))
                if Instant::now() >= deadline && m.contains("interrupt") =>
            {
                Err(SourceError::Timeout(limits.timeout))
            }
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(limits.timeout)),
        };
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
        result
    }

    async fn query_inner(
        &self,
        conn: &mut sqlx::SqliteConnection,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let wrapped = format!("SELECT * FROM ({sql}) LIMIT {}", limits.max_rows + 1);
        let mut q = sqlx::query(&wrapped);
        for p in binds {
            q = match p {
                Param::Null => q.bind(Option::<String>::None),
                Param::Str(s) => q.bind(s.clone()),
                Param::Int(i) => q.bind(*i),
                Param::Float(f) => q.bind(*f),
                Param::Bool(b) => q.bind(*b),
                Param::Date(d) => q.bind(d.to_string()),
                Param::Timestamp(t) => q.bind(t.to_rfc3339()),
            };
        }
        let mut out = Rows::empty();
        let mut bytes = 0usize;
        let mut stream = q.fetch(&mut *conn);
        while let Some(row) = stream.try_next().await.map_err(query_err)? {
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

    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err)?;
        let mut out = Vec::new();
        for name in names {
            if !filter.admits("main", &name) {
                continue;
            }
            let rows = sqlx::query("SELECT name, type, \"notnull\" FROM pragma_table_info($1)")
                .bind(&name)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err)?;
            let columns = rows
                .iter()
                .map(|r| ColumnInfo {
                    name: r.get("name"),
                    type_name: r.get::<String, _>("type").to_lowercase(),
                    nullable: r.get::<i64, _>("notnull") == 0,
                })
                .collect();
            out.push(TableInfo {
                schema: "main".into(),
                table: name,
                columns,
            });
        }
        Ok(out)
    }

    pub async fn test(&self) -> TestReport {
        let started = Instant::now();
        if let Err(e) = sqlx::query("SELECT 1").execute(&self.pool).await {
            return TestReport::failed(query_err(e).to_string());
        }
        let latency = started.elapsed();
        TestReport::answered(latency, self.tables(&SchemaFilter::default()).await)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One value by its storage class.
fn value(row: &sqlx::sqlite::SqliteRow, i: usize) -> serde_json::Value {
    let Ok(raw) = row.try_get_raw(i) else {
        return serde_json::Value::Null;
    };
    if raw.is_null() {
        return serde_json::Value::Null;
    }
    match raw.type_info().name() {
        "INTEGER" => row
            .try_get::<i64, _>(i)
            .map(serde_json::Value::from)
            .unwrap_or_default(),
        "REAL" => row
            .try_get::<f64, _>(i)
            .map(serde_json::Value::from)
            .unwrap_or_default(),
        "BLOB" => row
            .try_get::<Vec<u8>, _>(i)
            .map(|b| serde_json::Value::from(hex::encode(b)))
            .unwrap_or_default(),
        _ => row
            .try_get::<String, _>(i)
            .map(serde_json::Value::from)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("dirs");
        std::fs::write(root.join("sub/a.db"), b"").expect("file");
        std::fs::write(dir.path().join("outside.db"), b"").expect("file");
        assert!(resolve_file(Some(&root), "sub/a.db").is_ok());
        for bad in [
            "../outside.db",
            "sub/../../outside.db",
            "/etc/passwd",
            "",
            "missing.db",
        ] {
            assert!(resolve_file(Some(&root), bad).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("outside.db"), root.join("link.db"))
                .expect("link");
            assert!(
                resolve_file(Some(&root), "link.db").is_err(),
                "a symlink out is refused"
            );
        }
        assert!(
            resolve_file(None, "sub/a.db").is_err(),
            "no root, no file sources"
        );
    }
}
