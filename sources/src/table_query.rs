//! The queries of a data endpoint, built from its column settings and never from a client's
//! text: one table, its visible columns (raw or aggregated, the others grouped), its filters
//! with every value bound by the driver, and a page in a total order. Identifiers come from the
//! seller's endpoint schema (checked against the source when it was written) and are quoted
//! for the engine; the page bounds are integers. Pure: nothing here talks to a database.

use crate::model::Param;
use crate::sql::SqlDialect;
use serde_json::Value;

/// The table a query reads.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub dialect: SqlDialect,
    pub schema: &'a str,
    pub table: &'a str,
}

/// An aggregation applied to a visible column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Sum,
    Avg,
    Count,
    CountDistinct,
    Min,
    Max,
}

impl Aggregation {
    /// The names the endpoint schema uses (case-insensitive).
    pub const NAMES: &'static [&'static str] =
        &["SUM", "AVG", "COUNT", "COUNT_DISTINCT", "MIN", "MAX"];

    pub fn parse(name: &str) -> Option<Aggregation> {
        Some(match name.to_ascii_uppercase().as_str() {
            "SUM" => Aggregation::Sum,
            "AVG" | "AVERAGE" => Aggregation::Avg,
            "COUNT" => Aggregation::Count,
            "COUNT_DISTINCT" => Aggregation::CountDistinct,
            "MIN" | "MINIMUM" => Aggregation::Min,
            "MAX" | "MAXIMUM" => Aggregation::Max,
            _ => return None,
        })
    }

    /// The output column's name: `sum_amount`, `count_distinct_region` …
    pub fn alias(self, column: &str) -> String {
        let prefix = match self {
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Count => "count",
            Aggregation::CountDistinct => "count_distinct",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
        };
        format!("{prefix}_{column}")
    }

    fn apply(self, quoted: &str) -> String {
        match self {
            Aggregation::Sum => format!("SUM({quoted})"),
            Aggregation::Avg => format!("AVG({quoted})"),
            Aggregation::Count => format!("COUNT({quoted})"),
            Aggregation::CountDistinct => format!("COUNT(DISTINCT {quoted})"),
            Aggregation::Min => format!("MIN({quoted})"),
            Aggregation::Max => format!("MAX({quoted})"),
        }
    }
}

/// A filter's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Like,
    IsNull,
    NotNull,
}

impl Op {
    pub const NAMES: &'static [&'static str] = &[
        "eq", "ne", "gt", "gte", "lt", "lte", "in", "like", "is_null", "not_null",
    ];

    pub fn parse(name: &str) -> Option<Op> {
        Some(match name.to_ascii_lowercase().as_str() {
            "eq" | "=" => Op::Eq,
            "ne" | "!=" => Op::Ne,
            "gt" | ">" => Op::Gt,
            "gte" | ">=" => Op::Gte,
            "lt" | "<" => Op::Lt,
            "lte" | "<=" => Op::Lte,
            "in" => Op::In,
            "like" => Op::Like,
            "is_null" => Op::IsNull,
            "not_null" => Op::NotNull,
            _ => return None,
        })
    }

    /// How many values the comparison takes: none, exactly one, or a list.
    pub fn arity(self) -> Arity {
        match self {
            Op::IsNull | Op::NotNull => Arity::None,
            Op::In => Arity::List,
            _ => Arity::One,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    None,
    One,
    List,
}

/// One filter on a column; the values are bound, never written into the SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub op: Op,
    pub values: Vec<Param>,
}

/// How an endpoint uses one column of its table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnUse {
    pub name: String,
    pub visible: bool,
    pub aggregation: Option<Aggregation>,
    pub filters: Vec<Filter>,
}

/// Rows `offset ..< offset + limit` of the ordered result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: u64,
}

/// A built query: SQL with the dialect's placeholders, the values in placeholder order, and
/// the names of the columns it returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TableQuery {
    pub sql: String,
    pub binds: Vec<Param>,
    pub output: Vec<String>,
}

/// Why a query cannot be built (always the seller's settings, caught when they are written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("{0:?} is not a usable column or table name (1 to 128 characters, no quotes or control characters)")]
    BadIdentifier(String),
    #[error("the endpoint shows no column: make at least one column visible")]
    NothingVisible,
    #[error("the filter {op} on {column} needs {needs}")]
    BadFilter {
        column: String,
        op: &'static str,
        needs: &'static str,
    },
}

/// A name that is safe to quote for every engine: 1 to 128 characters, none of them a quote
/// character, a backslash or a control character.
pub fn plain_identifier(name: &str) -> Result<&str, ShapeError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 128
        && !name
            .chars()
            .any(|c| matches!(c, '"' | '`' | '\'' | '\\') || c.is_control());
    if ok {
        Ok(name)
    } else {
        Err(ShapeError::BadIdentifier(name.to_string()))
    }
}

fn quote(dialect: SqlDialect, name: &str) -> Result<String, ShapeError> {
    let name = plain_identifier(name)?;
    Ok(match dialect {
        SqlDialect::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    })
}

fn from_clause(src: &Source<'_>) -> Result<String, ShapeError> {
    Ok(format!(
        "{}.{}",
        quote(src.dialect, src.schema)?,
        quote(src.dialect, src.table)?
    ))
}

fn page_clause(dialect: SqlDialect, page: Page) -> String {
    match dialect {
        // ClickHouse 18 reads `LIMIT offset, count`.
        SqlDialect::ClickHouse => format!(" LIMIT {}, {}", page.offset, page.limit),
        _ => format!(" LIMIT {} OFFSET {}", page.limit, page.offset),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::In => "in",
        Op::Like => "like",
        Op::IsNull => "is_null",
        Op::NotNull => "not_null",
    }
}

/// The WHERE clause of every filter, pushing their values onto `binds`.
fn where_clause(
    dialect: SqlDialect,
    columns: &[ColumnUse],
    binds: &mut Vec<Param>,
) -> Result<String, ShapeError> {
    let mut parts = Vec::new();
    for c in columns {
        let col = quote(dialect, &c.name)?;
        for f in &c.filters {
            let bad = |needs| ShapeError::BadFilter {
                column: c.name.clone(),
                op: op_name(f.op),
                needs,
            };
            let mut next = |v: &Param| {
                binds.push(v.clone());
                dialect.placeholder(binds.len())
            };
            let part = match (f.op.arity(), f.values.as_slice()) {
                (Arity::None, []) if f.op == Op::IsNull => format!("{col} IS NULL"),
                (Arity::None, []) => format!("{col} IS NOT NULL"),
                (Arity::None, _) => return Err(bad("no value")),
                (Arity::One, [v]) => {
                    let sym = match f.op {
                        Op::Eq => "=",
                        Op::Ne => "<>",
                        Op::Gt => ">",
                        Op::Gte => ">=",
                        Op::Lt => "<",
                        Op::Lte => "<=",
                        _ => "LIKE",
                    };
                    format!("{col} {sym} {}", next(v))
                }
                (Arity::One, _) => return Err(bad("exactly one value")),
                (Arity::List, []) => return Err(bad("at least one value")),
                (Arity::List, vs) => {
                    let marks: Vec<String> = vs.iter().map(&mut next).collect();
                    format!("{col} IN ({})", marks.join(", "))
                }
            };
            parts.push(part);
        }
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    })
}

/// The endpoint's query: its visible columns (aggregated ones under their alias, the others
/// grouped when any is aggregated), its filters, ordered by every output column so that pages
/// never overlap or skip, and `page` if given.
pub fn shape(
    src: &Source<'_>,
    columns: &[ColumnUse],
    page: Option<Page>,
) -> Result<TableQuery, ShapeError> {
    let d = src.dialect;
    let mut select = Vec::new();
    let mut grouped = Vec::new();
    let mut output = Vec::new();
    for c in columns.iter().filter(|c| c.visible) {
        let col = quote(d, &c.name)?;
        match c.aggregation {
            Some(a) => {
                let alias = a.alias(&c.name);
                select.push(format!("{} AS {}", a.apply(&col), quote(d, &alias)?));
                output.push(alias);
            }
            None => {
                select.push(col.clone());
                grouped.push(col);
                output.push(c.name.clone());
            }
        }
    }
    if select.is_empty() {
        return Err(ShapeError::NothingVisible);
    }
    let any_aggregate = output.len() != grouped.len();
    let mut binds = Vec::new();
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), from_clause(src)?);
    sql.push_str(&where_clause(d, columns, &mut binds)?);
    if any_aggregate && !grouped.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", grouped.join(", ")));
    }
    let order: Vec<String> = output
        .iter()
        .map(|n| quote(d, n))
        .collect::<Result<_, _>>()?;
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(p) = page {
        sql.push_str(&page_clause(d, p));
    }
    Ok(TableQuery { sql, binds, output })
}

/// The number of rows in the table and the distinct values of each of `names`, in one pass
/// (`n` first, then one column per name, in order).
pub fn cardinalities(src: &Source<'_>, names: &[&str]) -> Result<TableQuery, ShapeError> {
    let d = src.dialect;
    let mut select = vec!["COUNT(*) AS n".to_string()];
    for (i, name) in names.iter().enumerate() {
        select.push(format!("COUNT(DISTINCT {}) AS c{i}", quote(d, name)?));
    }
    Ok(TableQuery {
        sql: format!("SELECT {} FROM {}", select.join(", "), from_clause(src)?),
        binds: Vec::new(),
        output: std::iter::once("n".to_string())
            .chain((0..names.len()).map(|i| format!("c{i}")))
            .collect(),
    })
}

/// Up to `limit` distinct values of one column, in order.
pub fn distinct_values(src: &Source<'_>, name: &str, limit: u64) -> Result<TableQuery, ShapeError> {
    let col = quote(src.dialect, name)?;
    let mut sql = format!(
        "SELECT DISTINCT {col} FROM {} ORDER BY {col}",
        from_clause(src)?
    );
    sql.push_str(&page_clause(src.dialect, Page { offset: 0, limit }));
    Ok(TableQuery {
        sql,
        binds: Vec::new(),
        output: vec![name.to_string()],
    })
}

/// The bound value for a filter on a column of source type `type_name`: numbers for numeric
/// columns, dates and times parsed for temporal ones, text otherwise (so the engine compares
/// like with like). `Err` says what the value should have been.
pub fn param_for(type_name: &str, v: &Value) -> Result<Param, &'static str> {
    let t = type_name.to_ascii_lowercase();
    let numeric_int = ["int", "serial"].iter().any(|k| t.contains(k)) && !t.contains("interval");
    let numeric_float = ["float", "double", "real", "numeric", "decimal"]
        .iter()
        .any(|k| t.contains(k));
    match v {
        Value::Null => Err("a value, not null (use is_null)"),
        Value::Bool(b) => Ok(Param::Bool(*b)),
        Value::Number(n) if numeric_int => n.as_i64().map(Param::Int).ok_or("a whole number"),
        Value::Number(n) => n.as_f64().map(Param::Float).ok_or("a number"),
        Value::String(s) if numeric_int => s
            .trim()
            .parse()
            .map(Param::Int)
            .map_err(|_| "a whole number"),
        Value::String(s) if numeric_float => {
            s.trim().parse().map(Param::Float).map_err(|_| "a number")
        }
        Value::String(s) if t.contains("timestamp") || t.contains("datetime") => {
            chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|d| Param::Timestamp(d.with_timezone(&chrono::Utc)))
                .map_err(|_| "an RFC 3339 time")
        }
        Value::String(s)
            if t == "date" || t.starts_with("date(") || t.starts_with("nullable(date") =>
        {
            chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map(Param::Date)
                .map_err(|_| "a date YYYY-MM-DD")
        }
        Value::String(s) => Ok(Param::Str(s.clone())),
        _ => Err("a string, number or boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> ColumnUse {
        ColumnUse {
            name: name.into(),
            visible: true,
            aggregation: None,
            filters: vec![],
        }
    }

    const PG: Source<'static> = Source {
        dialect: SqlDialect::Postgres,
        schema: "public",
        table: "sales",
    };

    #[test]
    fn visible_columns_are_selected_in_a_total_order_and_paged() {
        let mut hidden = col("secret");
        hidden.visible = false;
        let q = shape(
            &PG,
            &[col("region"), col("n"), hidden],
            Some(Page {
                offset: 20,
                limit: 10,
            }),
        )
        .expect("shape");
        assert_eq!(
            q.sql,
            r#"SELECT "region", "n" FROM "public"."sales" ORDER BY "region", "n" LIMIT 10 OFFSET 20"#
        );
        assert_eq!(q.output, vec!["region", "n"]);
        let ch = Source {
            dialect: SqlDialect::ClickHouse,
            ..PG
        };
        assert!(shape(
            &ch,
            &[col("n")],
            Some(Page {
                offset: 5,
                limit: 2
            })
        )
        .expect("shape")
        .sql
        .ends_with("LIMIT 5, 2"));
        let my = Source {
            dialect: SqlDialect::MySql,
            ..PG
        };
        assert_eq!(
            shape(&my, &[col("n")], None).expect("shape").sql,
            "SELECT `n` FROM `public`.`sales` ORDER BY `n`"
        );
    }

    #[test]
    fn aggregations_group_by_the_other_visible_columns() {
        let mut amount = col("amount");
        amount.aggregation = Some(Aggregation::Sum);
        let mut buyers = col("buyer");
        buyers.aggregation = Some(Aggregation::CountDistinct);
        let q = shape(&PG, &[col("region"), amount, buyers], None).expect("shape");
        assert_eq!(
            q.sql,
            r#"SELECT "region", SUM("amount") AS "sum_amount", COUNT(DISTINCT "buyer") AS "count_distinct_buyer" FROM "public"."sales" GROUP BY "region" ORDER BY "region", "sum_amount", "count_distinct_buyer""#
        );
        assert_eq!(
            q.output,
            vec!["region", "sum_amount", "count_distinct_buyer"]
        );
    }

    #[test]
    fn filter_values_are_bound_never_spliced() {
        let mut region = col("region");
        region.filters = vec![
            Filter {
                op: Op::In,
                values: vec![
                    Param::Str("north".into()),
                    Param::Str("x' OR 1=1 --".into()),
                ],
            },
            Filter {
                op: Op::NotNull,
                values: vec![],
            },
        ];
        let mut n = col("n");
        n.visible = false;
        n.filters = vec![Filter {
            op: Op::Gte,
            values: vec![Param::Int(2)],
        }];
        let q = shape(&PG, &[region.clone(), n.clone()], None).expect("shape");
        assert_eq!(
            q.sql,
            r#"SELECT "region" FROM "public"."sales" WHERE "region" IN ($1, $2) AND "region" IS NOT NULL AND "n" >= $3 ORDER BY "region""#
        );
        assert!(!q.sql.contains("OR 1=1"));
        assert_eq!(q.binds.len(), 3);
        let sqlite = Source {
            dialect: SqlDialect::Sqlite,
            ..PG
        };
        assert!(shape(&sqlite, &[region, n], None)
            .expect("shape")
            .sql
            .contains(r#"IN (?, ?)"#));
        let mut bad = col("n");
        bad.filters = vec![Filter {
            op: Op::Eq,
            values: vec![],
        }];
        assert!(matches!(
            shape(&PG, &[bad], None),
            Err(ShapeError::BadFilter { .. })
        ));
    }

    #[test]
    fn names_that_could_break_quoting_are_refused() {
        for bad in ["", "a\"b", "a`b", "x'y", "a\\b", "a\nb", &"x".repeat(129)] {
            assert!(shape(&PG, &[col(bad)], None).is_err(), "{bad:?}");
        }
        let mut hidden = col("n");
        hidden.visible = false;
        assert_eq!(shape(&PG, &[hidden], None), Err(ShapeError::NothingVisible));
        assert!(
            shape(&PG, &[col("order date")], None).is_ok(),
            "spaces are quoted"
        );
    }

    #[test]
    fn filter_values_take_the_column_type() {
        use serde_json::json;
        assert_eq!(param_for("bigint", &json!(3)), Ok(Param::Int(3)));
        assert_eq!(param_for("Int64", &json!("3")), Ok(Param::Int(3)));
        assert_eq!(
            param_for("numeric(10,2)", &json!(1.5)),
            Ok(Param::Float(1.5))
        );
        assert_eq!(
            param_for("text", &json!("north")),
            Ok(Param::Str("north".into()))
        );
        assert!(matches!(
            param_for("date", &json!("2026-03-01")),
            Ok(Param::Date(_))
        ));
        assert!(param_for("date", &json!("March")).is_err());
        assert!(param_for("bigint", &json!("x")).is_err());
        assert!(param_for("text", &json!(null)).is_err());
        assert_eq!(
            cardinalities(&PG, &["region"]).expect("q").sql,
            r#"SELECT COUNT(*) AS n, COUNT(DISTINCT "region") AS c0 FROM "public"."sales""#
        );
        assert_eq!(
            distinct_values(&PG, "region", 5).expect("q").sql,
            r#"SELECT DISTINCT "region" FROM "public"."sales" ORDER BY "region" LIMIT 5 OFFSET 0"#
        );
    }
}
