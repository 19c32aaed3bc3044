//! An asset's SQL, checked when it is written: exactly one read-only statement (`SELECT`,
//! `WITH … SELECT`, `VALUES`, `TABLE`) in the connection's dialect. DDL, DML, several
//! statements, `SELECT … INTO`, data-modifying CTEs and locking clauses are refused with the
//! reason. This is the first fence; the engine's own read-only mode at execution is the second.
//!
//! Parameters are written `{{name}}`. [`compile`] turns them into the driver's placeholders
//! (`$1` or `?`), outside string literals, quoted identifiers and comments, and returns the
//! order in which to bind the values: a value is never spliced into the text.

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::{
    ClickHouseDialect, Dialect, DuckDbDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect,
};
use sqlparser::parser::Parser;

/// The SQL dialect of a source engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    Postgres,
    MySql,
    ClickHouse,
    Sqlite,
    DuckDb,
}

impl SqlDialect {
    fn parser(self) -> Box<dyn Dialect> {
        match self {
            SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
            SqlDialect::MySql => Box::new(MySqlDialect {}),
            SqlDialect::ClickHouse => Box::new(ClickHouseDialect {}),
            SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
            SqlDialect::DuckDb => Box::new(DuckDbDialect {}),
        }
    }

    /// The driver placeholder for the `n`th (1-based) bound value.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            SqlDialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }
}

/// Why an asset's SQL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("sql_logic does not parse: {0}")]
    Parse(String),
    #[error("sql_logic must be exactly one statement, found {0}")]
    StatementCount(usize),
    #[error("sql_logic must be a read-only query (SELECT, WITH … SELECT or VALUES), not {0}")]
    NotAQuery(String),
    #[error("sql_logic may not use {0}")]
    Forbidden(&'static str),
    #[error("sql_logic uses the undeclared parameter {{{{{0}}}}}")]
    UnknownParam(String),
    #[error("sql_logic has an unterminated {{{{…}}}} placeholder")]
    BadPlaceholder,
}

/// SQL with driver placeholders, and the parameter name for each placeholder in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub sql: String,
    pub binds: Vec<String>,
}

/// Replaces `{{name}}` placeholders (names in `declared`) with the dialect's placeholders.
pub fn compile(sql: &str, dialect: SqlDialect, declared: &[&str]) -> Result<Compiled, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut binds = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if let Some(end) = skipped_end(&chars, i) {
            // A quoted literal or identifier, or a comment, is copied whole.
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        match c {
            '{' if next == Some('{') => {
                let close = find(&chars, i + 2, &['}', '}']).ok_or(SqlError::BadPlaceholder)?;
                let name: String = chars[i + 2..close]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_string();
                if !declared.contains(&name.as_str()) {
                    return Err(SqlError::UnknownParam(name));
                }
                binds.push(name);
                out.push_str(&dialect.placeholder(binds.len()));
                i = close + 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Compiled { sql: out, binds })
}

/// Where the quoted literal or identifier, or the comment, starting at `i` ends (`None` when
/// none starts there). Text inside these is never a placeholder.
fn skipped_end(chars: &[char], i: usize) -> Option<usize> {
    let next = chars.get(i + 1).copied();
    match chars[i] {
        c @ ('\'' | '"' | '`') => Some(closing_quote(chars, i, c)),
        '-' if next == Some('-') => Some(
            chars[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(chars.len(), |p| i + p),
        ),
        '/' if next == Some('*') => {
            Some(find(chars, i + 2, &['*', '/']).map_or(chars.len(), |p| p + 2))
        }
        _ => None,
    }
}

/// Compiled SQL cut at each `?` placeholder outside literals and comments: one piece more
/// than there are placeholders (for drivers that bind by rendering literals).
pub fn split_placeholders(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut pieces = vec![String::new()];
    let mut i = 0;
    while i < chars.len() {
        if let Some(end) = skipped_end(&chars, i) {
            if let Some(p) = pieces.last_mut() {
                p.extend(&chars[i..end]);
            }
            i = end;
            continue;
        }
        if chars[i] == '?' {
            pieces.push(String::new());
        } else if let Some(p) = pieces.last_mut() {
            p.push(chars[i]);
        }
        i += 1;
    }
    pieces
}

fn closing_quote(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        if chars[i] == '\\' && quote != '"' {
            i += 2;
            continue;
        }
        i += 1;
    }
    chars.len()
}

fn find(chars: &[char], from: usize, pat: &[char; 2]) -> Option<usize> {
    (from..chars.len().saturating_sub(1)).find(|&i| chars[i] == pat[0] && chars[i + 1] == pat[1])
}

/// Checks that `sql` (already compiled, with driver placeholders) is one read-only query.
pub fn check_read_only(sql: &str, dialect: SqlDialect) -> Result<(), SqlError> {
    let statements = Parser::parse_sql(dialect.parser().as_ref(), sql)
        .map_err(|e| SqlError::Parse(e.to_string()))?;
    if statements.len() != 1 {
        return Err(SqlError::StatementCount(statements.len()));
    }
    match &statements[0] {
        Statement::Query(q) => check_query(q),
        other => Err(SqlError::NotAQuery(statement_kind(other))),
    }
}

fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ").to_uppercase()
}

fn check_query(q: &Query) -> Result<(), SqlError> {
    if !q.locks.is_empty() {
        return Err(SqlError::Forbidden(
            "locking clauses (FOR UPDATE / FOR SHARE)",
        ));
    }
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_body(&q.body)
}

fn check_body(body: &SetExpr) -> Result<(), SqlError> {
    match body {
        SetExpr::Select(select) => {
            if select.into.is_some() {
                return Err(SqlError::Forbidden("SELECT … INTO"));
            }
            Ok(())
        }
        SetExpr::Query(q) => check_query(q),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        _ => Err(SqlError::Forbidden(
            "data-modifying statements inside a query (INSERT, UPDATE, DELETE, MERGE)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SqlDialect; 5] = [
        SqlDialect::Postgres,
        SqlDialect::MySql,
        SqlDialect::ClickHouse,
        SqlDialect::Sqlite,
        SqlDialect::DuckDb,
    ];

    #[test]
    fn read_only_queries_pass_in_every_dialect() {
        for d in ALL {
            for sql in [
                "SELECT 1",
                "SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY total DESC LIMIT 5",
                "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
                "SELECT a FROM x UNION ALL SELECT b FROM y",
                "SELECT * FROM (SELECT 1) AS s",
            ] {
                assert_eq!(check_read_only(sql, d), Ok(()), "{d:?}: {sql}");
            }
        }
        assert_eq!(
            check_read_only("VALUES (1, 2)", SqlDialect::Postgres),
            Ok(())
        );
    }

    #[test]
    fn writes_several_statements_into_and_locks_are_refused() {
        for d in ALL {
            for sql in [
                "DELETE FROM sales",
                "UPDATE sales SET amount = 0",
                "DROP TABLE sales",
                "INSERT INTO t SELECT * FROM sales",
                "CREATE TABLE t (x INT)",
                "SELECT 1; SELECT 2",
                "SELECT 1; DROP TABLE sales",
            ] {
                assert!(check_read_only(sql, d).is_err(), "{d:?}: {sql}");
            }
        }
        let pg = SqlDialect::Postgres;
        assert_eq!(
            check_read_only("SELECT * INTO copy FROM sales", pg),
            Err(SqlError::Forbidden("SELECT … INTO"))
        );
        assert!(matches!(
            check_read_only("SELECT * FROM sales FOR UPDATE", pg),
            Err(SqlError::Forbidden(_))
        ));
        assert!(matches!(
            check_read_only(
                "WITH gone AS (DELETE FROM sales RETURNING *) SELECT * FROM gone",
                pg
            ),
            Err(SqlError::Forbidden(_) | SqlError::Parse(_))
        ));
        assert_eq!(
            check_read_only("SELECT 1; SELECT 2", pg),
            Err(SqlError::StatementCount(2))
        );
        assert!(matches!(
            check_read_only("SELEC 1", pg),
            Err(SqlError::Parse(_))
        ));
    }

    #[test]
    fn placeholders_become_driver_binds_outside_quotes_and_comments() {
        let sql = "SELECT * FROM t WHERE region = {{region}} AND n > {{ min }} \
                   AND note <> '{{region}}' -- {{region}}\n AND r2 = {{region}}";
        let pg = compile(sql, SqlDialect::Postgres, &["region", "min"]).expect("compile");
        assert_eq!(
            pg.sql,
            "SELECT * FROM t WHERE region = $1 AND n > $2 AND note <> '{{region}}' -- {{region}}\n AND r2 = $3"
        );
        assert_eq!(pg.binds, vec!["region", "min", "region"]);
        let my =
            compile("SELECT {{a}}, 'it''s {{a}}'", SqlDialect::MySql, &["a"]).expect("compile");
        assert_eq!(my.sql, "SELECT ?, 'it''s {{a}}'");
        assert_eq!(
            compile("SELECT {{nope}}", SqlDialect::Sqlite, &["a"]),
            Err(SqlError::UnknownParam("nope".into()))
        );
        assert_eq!(
            compile("SELECT {{a", SqlDialect::Sqlite, &["a"]),
            Err(SqlError::BadPlaceholder)
        );
        assert_eq!(check_read_only(&pg.sql, SqlDialect::Postgres), Ok(()));
        assert_eq!(check_read_only(&my.sql, SqlDialect::MySql), Ok(()));
    }

    #[test]
    fn an_injection_attempt_stays_a_value() {
        // The value never enters the text: the compiled SQL is the same whatever it is.
        let c = compile(
            "SELECT * FROM t WHERE name = {{name}}",
            SqlDialect::Postgres,
            &["name"],
        )
        .expect("compile");
        assert_eq!(c.sql, "SELECT * FROM t WHERE name = $1");
    }
}
