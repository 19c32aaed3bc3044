//! Goals and funnels on DuckDB: a goal counts its matching events and their sessions; a
//! funnel finds, session by session, the earliest event of each step after the previous
//! step's (materialized CTEs, one join per step).

use crate::analytics::*;
use crate::duck::{db_err, scope_sql};
use crate::StoreResult;
use duckdb::types::Value;
use duckdb::{params_from_iter, Connection};

/// The SQL test for one target, with one placeholder for its value.
pub(crate) fn match_sql(m: &StepMatch) -> &'static str {
    match (m.kind, m.contains) {
        (MatchKind::PageView, false) => "(event_type = 'pageview' AND page = ?)",
        (MatchKind::PageView, true) => "(event_type = 'pageview' AND contains(page, ?))",
        (MatchKind::Event, false) => "(event_type <> 'pageview' AND event_name = ?)",
        (MatchKind::Event, true) => "(event_type <> 'pageview' AND contains(event_name, ?))",
    }
}

pub(crate) fn goal_counts(
    conn: &Connection,
    scope: &Scope,
    target: &StepMatch,
) -> StoreResult<GoalCounts> {
    let (filter, mut params) = scope_sql(scope);
    params.push(Value::Text(target.value.clone()));
    let sql = format!(
        "SELECT count(*), count(DISTINCT session) FROM events WHERE {filter} AND {}",
        match_sql(target)
    );
    conn.prepare(&sql)
        .map_err(db_err)?
        .query_row(params_from_iter(params.iter()), |r| {
            Ok(GoalCounts {
                conversions: r.get::<_, i64>(0)?.max(0) as u64,
                converting_sessions: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .map_err(db_err)
}

/// The funnel statement for `n` steps: binds the steps' values, then the scope's.
fn funnel_sql(filter: &str, steps: &[StepMatch]) -> String {
    let marks: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} AS m{}", match_sql(s), i + 1))
        .collect();
    let any: Vec<String> = (1..=steps.len()).map(|k| format!("m{k}")).collect();
    let mut ctes = vec![
        format!(
            "e AS MATERIALIZED (SELECT * FROM (SELECT session, ts, {} FROM events WHERE {filter}) WHERE {})",
            marks.join(", "),
            any.join(" OR ")
        ),
        "s1 AS MATERIALIZED (SELECT session, min(ts) AS t FROM e WHERE m1 GROUP BY session)".to_string(),
    ];
    for k in 2..=steps.len() {
        ctes.push(format!(
            "s{k} AS MATERIALIZED (SELECT e.session, min(e.ts) AS t FROM e JOIN s{p} ON e.session = s{p}.session \
             AND e.ts > s{p}.t WHERE e.m{k} GROUP BY e.session)",
            p = k - 1
        ));
    }
    let counts: Vec<String> = (1..=steps.len())
        .map(|k| format!("(SELECT count(*) FROM s{k})"))
        .collect();
    format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "))
}

pub(crate) fn funnel(
    conn: &Connection,
    scope: &Scope,
    steps: &[StepMatch],
) -> StoreResult<Vec<u64>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let (filter, scope_params) = scope_sql(scope);
    let params: Vec<Value> = steps
        .iter()
        .map(|s| Value::Text(s.value.clone()))
        .chain(scope_params)
        .collect();
    let sql = funnel_sql(&filter, steps);
    let n = steps.len();
    conn.prepare(&sql)
        .map_err(db_err)?
        .query_row(params_from_iter(params.iter()), |r| {
            (0..n)
                .map(|i| r.get::<_, i64>(i).map(|v| v.max(0) as u64))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db_err)
}

/// The node an event is in a journey: a page view's path, another event's name.
const NODE: &str = "CASE WHEN event_type = 'pageview' THEN page ELSE event_name END";

pub(crate) fn journeys(
    conn: &Connection,
    scope: &Scope,
    anchor: &StepMatch,
    after: bool,
    depth: u32,
) -> StoreResult<Vec<Vec<String>>> {
    let (filter, scope_params) = scope_sql(scope);
    let cond = match_sql(anchor);
    let window = if after {
        "e.pos > a.apos AND e.pos <= a.apos + ?"
    } else {
        "e.pos < a.apos AND e.pos >= a.apos - ?"
    };
    let step = if after {
        "e.pos - a.apos"
    } else {
        "a.apos - e.pos"
    };
    // Only the anchor sessions are numbered, so the window sorts a few events, not the range.
    let sql = format!(
        "WITH s AS MATERIALIZED (SELECT DISTINCT session FROM events WHERE {filter} AND {cond}), \
         e AS MATERIALIZED (SELECT session, {NODE} AS node, {cond} AS is_anchor, \
             row_number() OVER (PARTITION BY session ORDER BY ts, event_id) AS pos FROM events \
             WHERE {filter} AND (event_type = 'pageview' OR event_name IS NOT NULL) \
             AND session IN (SELECT session FROM s)), \
         a AS MATERIALIZED (SELECT session, min(pos) AS apos FROM e WHERE is_anchor GROUP BY session) \
         SELECT a.session, {step} AS step, e.node FROM a LEFT JOIN e ON e.session = a.session AND {window} \
         ORDER BY a.session, step"
    );
    let value = Value::Text(anchor.value.clone());
    let mut params: Vec<Value> = scope_params.clone();
    params.push(value.clone());
    params.push(value);
    params.extend(scope_params);
    params.push(Value::BigInt(i64::from(depth)));
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            Ok((r.get::<_, u64>(0)?, r.get::<_, Option<String>>(2)?))
        })
        .map_err(db_err)?;
    let mut paths: Vec<Vec<String>> = Vec::new();
    let mut current: Option<u64> = None;
    for row in rows {
        let (session, node) = row.map_err(db_err)?;
        if current != Some(session) {
            current = Some(session);
            paths.push(Vec::new());
        }
        if let (Some(n), Some(path)) = (node, paths.last_mut()) {
            path.push(n);
        }
    }
    Ok(paths)
}

pub(crate) fn cohorts(
    conn: &Connection,
    scope: &Scope,
    granularity: Granularity,
    tz: &[OffsetSegment],
) -> StoreResult<Vec<CohortCell>> {
    let (filter, params) = scope_sql(scope);
    let sql = format!(
        "WITH v AS MATERIALIZED (SELECT DISTINCT visitor, {bucket} AS b FROM \
             (SELECT visitor, ts + ({offset}) AS local_ms FROM events WHERE {filter})), \
         c AS MATERIALIZED (SELECT visitor, min(b) AS cohort FROM v GROUP BY visitor) \
         SELECT c.cohort, v.b, count(*) FROM v JOIN c USING (visitor) GROUP BY c.cohort, v.b \
         ORDER BY 1, 2",
        bucket = crate::duck::bucket_sql(granularity),
        offset = crate::duck::duck_offset_sql(tz),
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            Ok(CohortCell {
                cohort_ms: r.get(0)?,
                period_ms: r.get(1)?,
                visitors: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

pub(crate) fn touches(
    conn: &Connection,
    scope: &Scope,
    target: &StepMatch,
) -> StoreResult<Vec<Touch>> {
    let (filter, scope_params) = scope_sql(scope);
    let cond = match_sql(target);
    let sql = format!(
        "SELECT session, coalesce(utm_source, referrer_domain), coalesce({cond}, false), event_data FROM events \
         WHERE {filter} AND session IN (SELECT session FROM events WHERE {filter} AND {cond}) \
         ORDER BY session, ts, event_id"
    );
    let value = Value::Text(target.value.clone());
    let mut params = vec![value.clone()];
    params.extend(scope_params.iter().cloned());
    params.extend(scope_params);
    params.push(value);
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            let converts: bool = r.get(2)?;
            Ok(Touch {
                session: r.get(0)?,
                channel: r.get(1)?,
                converts,
                event_data: if converts { r.get(3)? } else { None },
            })
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}
