//! ClickHouse sources, over the HTTP interface. Queries are sent as `GET`, which ClickHouse
//! runs in read-only mode (no writes, no DDL, whatever the text), with `max_execution_time` as
//! the timeout and the row cap as a `LIMIT` around the asset's query. The request goes to the
//! address the network guard checked, never to a name resolved again.
//!
//! ClickHouse 18.16 has no server-side query parameters, so this connector is the driver that
//! binds them: each placeholder becomes a typed literal rendered by [`literal`] (strings quoted
//! with every `\` and `'` escaped, numbers from their Rust value), so a value can never end its
//! literal and become SQL.

use crate::model::*;
use crate::sql::split_placeholders;
use crate::NetworkGuard;
use serde::Deserialize;
use serde_json::Value as J;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct ClickHouseSource {
    http: reqwest::Client,
    addr: SocketAddr,
    database: String,
    username: String,
    password: String,
    session_timeout: Duration,
}

#[derive(Deserialize)]
struct Answer {
    meta: Vec<Meta>,
    data: Vec<Vec<J>>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
}

/// A bound value as a ClickHouse literal.
pub fn literal(p: &Param) -> Result<String, SourceError> {
    Ok(match p {
        Param::Null => "NULL".into(),
        Param::Str(s) => quote(s),
        Param::Int(i) => i.to_string(),
        Param::Float(f) if f.is_finite() => format!("{f:?}"),
        Param::Float(_) => {
            return Err(SourceError::Invalid(
                "a float parameter must be finite".into(),
            ))
        }
        Param::Bool(b) => u8::from(*b).to_string(),
        Param::Date(d) => format!("toDate('{d}')"),
        Param::Timestamp(t) => format!("toDateTime('{}', 'UTC')", t.format("%Y-%m-%d %H:%M:%S")),
    })
}

/// `'text'` with backslashes and quotes escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The compiled query with each `?` placeholder replaced by its bound literal.
pub fn bind(sql: &str, binds: &[Param]) -> Result<String, SourceError> {
    let pieces = split_placeholders(sql);
    if pieces.len() != binds.len() + 1 {
        return Err(SourceError::Invalid(format!(
            "the query has {} placeholders for {} values",
            pieces.len() - 1,
            binds.len()
        )));
    }
    let mut out = String::with_capacity(sql.len());
    for (i, piece) in pieces.iter().enumerate() {
        out.push_str(piece);
        if let Some(p) = binds.get(i) {
            out.push_str(&literal(p)?);
        }
    }
    Ok(out)
}

/// The error code in a ClickHouse error text (`Code: 159, e.displayText() = …`).
fn error_code(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code: ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl ClickHouseSource {
    pub async fn connect(
        guard: &NetworkGuard,
        creds: &NetworkCredentials,
        session_timeout: Duration,
    ) -> Result<ClickHouseSource, SourceError> {
        if !matches!(creds.ssl_mode.as_deref(), None | Some("disable")) {
            return Err(SourceError::Invalid(
                "ssl_mode must be disable: TLS to sources is not built yet".into(),
            ));
        }
        let addr = guard
            .resolve(&creds.host, creds.port.unwrap_or(8123))
            .await?[0];
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| SourceError::Connect(e.to_string()))?;
        Ok(ClickHouseSource {
            http,
            addr,
            database: creds.database.clone(),
            username: creds.username.clone(),
            password: creds.password.clone(),
            session_timeout,
        })
    }

    /// Runs `sql` (placeholders already bound) and returns its JSONCompact answer, reading at
    /// most `max_bytes` of it.
    async fn run(
        &self,
        sql: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Answer, SourceError> {
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let text = format!("{sql} FORMAT JSONCompact");
        let request = self
            .http
            .get(format!("http://{}/", self.addr))
            .basic_auth(&self.username, Some(&self.password))
            .query(&[
                ("database", self.database.as_str()),
                ("max_execution_time", &secs.to_string()),
                ("output_format_json_quote_64bit_integers", "0"),
                ("query", &text),
            ])
            .timeout(timeout + Duration::from_secs(2));
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                SourceError::Timeout(timeout)
            } else {
                SourceError::Connect(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    // The JSON wrapper adds column names and statistics to the row bytes.
                    if body.len() > max_bytes.saturating_mul(2) + 64 * 1024 {
                        return Err(SourceError::Query(
                            "the answer is larger than the result-size cap".into(),
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(SourceError::Timeout(timeout)),
                Err(e) => return Err(SourceError::Connect(e.without_url().to_string())),
            }
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            return Err(match error_code(&text) {
                // 159 TIMEOUT_EXCEEDED
                Some(159) => SourceError::Timeout(timeout),
                // 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 193 WRONG_PASSWORD
                Some(192 | 193 | 516) => SourceError::Connect(text),
                _ if status == reqwest::StatusCode::UNAUTHORIZED => SourceError::Connect(text),
                _ => SourceError::Query(text),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::Query(format!("unreadable answer: {e}")))
    }

    pub async fn query(
        &self,
        sql: &str,
        binds: &[Param],
        limits: Limits,
    ) -> Result<Rows, SourceError> {
        let bound = bind(sql, binds)?;
        let capped = format!("SELECT * FROM ({bound}) LIMIT {}", limits.max_rows + 1);
        let answer = self.run(&capped, limits.timeout, limits.max_bytes).await?;
        let mut out = Rows {
            columns: answer
                .meta
                .into_iter()
                .map(|m| Column {
                    name: m.name,
                    type_name: m.type_name.to_lowercase(),
                })
                .collect(),
            rows: Vec::new(),
            truncated: false,
        };
        let mut bytes = 0usize;
        for row in answer.data {
            if !out.push_within(row, &mut bytes, limits) {
                break;
            }
        }
        Ok(out)
    }

    pub async fn tables(&self, filter: &SchemaFilter) -> Result<Vec<TableInfo>, SourceError> {
        let answer = self
            .run(
                "SELECT database, table, name, type FROM system.columns \
                 WHERE database NOT IN ('system')",
                self.session_timeout,
                64 << 20,
            )
            .await?;
        let columns = answer.data.into_iter().map(|row| {
            let text = |i: usize| row.get(i).and_then(J::as_str).unwrap_or("").to_string();
            let ty = text(3);
            let column = ColumnInfo {
                name: text(2),
                nullable: ty.starts_with("Nullable("),
                type_name: ty,
            };
            (text(0), text(1), column)
        });
        let mut out = TableInfo::group(columns, filter);
        out.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        Ok(out)
    }

    /// The database named in the credentials.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Nothing to close: idle HTTP connections time out on their own.
    pub async fn close(&self) {}

    pub async fn test(&self) -> TestReport {
        let started = Instant::now();
        if let Err(e) = self.run("SELECT 1", Duration::from_secs(5), 1024).await {
            return TestReport::failed(e.to_string());
        }
        let latency = started.elapsed();
        TestReport::answered(latency, self.tables(&SchemaFilter::default()).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_literals_that_cannot_escape() {
        assert_eq!(
            literal(&Param::Str("it's".into())).ok(),
            Some("'it\\'s'".into())
        );
        assert_eq!(
            literal(&Param::Str("\\' OR 1=1 --".into())).ok(),
            Some("'\\\\\\' OR 1=1 --'".into())
        );
        assert_eq!(literal(&Param::Int(-5)).ok(), Some("-5".into()));
        assert_eq!(literal(&Param::Float(1.5)).ok(), Some("1.5".into()));
        assert!(literal(&Param::Float(f64::NAN)).is_err());
        assert_eq!(literal(&Param::Bool(true)).ok(), Some("1".into()));
        assert_eq!(
            bind("SELECT ? , '?' -- ?\n, ?", &[Param::Int(1), Param::Null]).ok(),
            Some("SELECT 1 , '?' -- ?\n, NULL".into())
        );
        assert!(bind("SELECT ?", &[]).is_err());
        assert_eq!(
            error_code("Code: 159, e.displayText() = DB::Exception"),
            Some(159)
        );
        assert_eq!(error_code("nothing"), None);
    }
}
