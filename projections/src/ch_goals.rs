//! Goals and funnels on ClickHouse. A funnel is one pass: per session, the times of the events
//! matching each step (`groupArrayIf`), then the earliest of each step later than the previous
//! step's, as on DuckDB.

use crate::analytics::*;
use crate::ch::{bind_scope, ch_err, scope_sql, ClickHouseAnalytics};
use crate::StoreResult;
use clickhouse::Row;
use serde::Deserialize;

#[derive(Row, Deserialize)]
struct GoalRow {
    conversions: u64,
    converting_sessions: u64,
}

#[derive(Row, Deserialize)]
struct FunnelRow {
    reached: Vec<u64>,
}

/// The SQL test for one target, with one placeholder for its value.
fn match_sql(m: &StepMatch) -> &'static str {
    match (m.kind, m.contains) {
        (MatchKind::PageView, false) => "(is_pageview = 1 AND page = ?)",
        (MatchKind::PageView, true) => "(is_pageview = 1 AND position(page, ?) > 0)",
        (MatchKind::Event, false) => "(is_pageview = 0 AND event_name = ?)",
        (MatchKind::Event, true) => "(is_pageview = 0 AND position(event_name, ?) > 0)",
    }
}

/// Binds the steps' values, then the scope's. Event times are positive, so 0 means "not
/// reached".
fn funnel_sql(filter: &str, steps: &[StepMatch]) -> String {
    let lists: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("groupArrayIf(ts, {}) AS l{}", match_sql(s), i + 1))
        .collect();
    let mut times = vec!["arrayReduce('min', l1) AS t1".to_string()];
    for k in 2..=steps.len() {
        times.push(format!(
            "if(t{p} = 0, toInt64(0), arrayReduce('min', arrayFilter(x -> x > t{p}, l{k}))) AS t{k}",
            p = k - 1
        ));
    }
    let reached: Vec<String> = (1..=steps.len())
        .map(|k| format!("countIf(t{k} > 0)"))
        .collect();
    format!(
        "SELECT [{}] AS reached FROM (SELECT {} FROM (SELECT {} FROM events WHERE {filter} \
         GROUP BY session HAVING length(l1) > 0))",
        reached.join(", "),
        times.join(", "),
        lists.join(", ")
    )
}

impl ClickHouseAnalytics {
    pub(crate) async fn goal(&self, scope: &Scope, target: &StepMatch) -> StoreResult<GoalCounts> {
        let sql = format!(
            "SELECT count() AS conversions, uniqExact(session) AS converting_sessions \
             FROM events WHERE {} AND {}",
            scope_sql(scope),
            match_sql(target)
        );
        let r: GoalRow = bind_scope(self.client.query(&sql), scope)
            .bind(target.value.as_str())
            .fetch_one()
            .await
            .map_err(ch_err)?;
        Ok(GoalCounts {
            conversions: r.conversions,
            converting_sessions: r.converting_sessions,
        })
    }

    pub(crate) async fn funnel_steps(
        &self,
        scope: &Scope,
        steps: &[StepMatch],
    ) -> StoreResult<Vec<u64>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let sql = funnel_sql(&scope_sql(scope), steps);
        let mut q = self.client.query(&sql);
        for s in steps {
            q = q.bind(s.value.as_str());
        }
        let rows: Vec<FunnelRow> = bind_scope(q, scope).fetch_all().await.map_err(ch_err)?;
        // No session entered: one row of zeros (or, on some versions, none).
        Ok(rows
            .into_iter()
            .next()
            .map(|r| r.reached)
            .filter(|r| r.len() == steps.len())
            .unwrap_or_else(|| vec![0; steps.len()]))
    }
}

#[derive(Row, Deserialize)]
struct PathRow {
    path: Vec<String>,
}

#[derive(Row, Deserialize)]
struct CohortRow {
    cohort: i64,
    period: i64,
    visitors: u64,
}

impl ClickHouseAnalytics {
    /// Each anchor session's events sorted by (time, id), the first anchor found, and the
    /// slice after or before it (reversed, so nearest first).
    pub(crate) async fn journey_paths(
        &self,
        scope: &Scope,
        anchor: &StepMatch,
        after: bool,
        depth: u32,
    ) -> StoreResult<Vec<Vec<String>>> {
        let filter = scope_sql(scope);
        let cond = match_sql(anchor);
        let slice = if after {
            format!("arraySlice(nodes, apos + 1, {depth})")
        } else {
            format!(
                "arrayReverse(arraySlice(nodes, greatest(apos - {depth}, 1), apos - greatest(apos - {depth}, 1)))"
            )
        };
        let sql = format!(
            "SELECT {slice} AS path FROM (\
               SELECT arrayMap(x -> x.4, sorted) AS nodes, toInt64(arrayFirstIndex(x -> x.5 = 1, sorted)) AS apos FROM (\
                 SELECT arraySort(groupArray((ts, event_hi, event_lo, node, is_anchor))) AS sorted FROM (\
                   SELECT session, ts, event_hi, event_lo, if(is_pageview = 1, page, event_name) AS node, \
                          toUInt8({cond}) AS is_anchor FROM events \
                   WHERE {filter} AND (is_pageview = 1 OR event_name != '') \
                   AND session IN (SELECT session FROM events WHERE {filter} AND {cond})) \
                 GROUP BY session)) WHERE apos > 0"
        );
        let q = self.client.query(&sql).bind(anchor.value.as_str());
        let q = bind_scope(bind_scope(q, scope), scope).bind(anchor.value.as_str());
        let rows: Vec<PathRow> = q.fetch_all().await.map_err(ch_err)?;
        Ok(rows.into_iter().map(|r| r.path).collect())
    }

    pub(crate) async fn cohort_cells(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<CohortCell>> {
        let seen = format!(
            "SELECT DISTINCT visitor, toInt64({bucket}) AS period FROM \
             (SELECT visitor, ts + ({offset}) AS local_ms FROM events WHERE {filter})",
            bucket = crate::ch::bucket_sql(granularity),
            offset = crate::ch::ch_offset_sql(tz),
            filter = scope_sql(scope),
        );
        let sql = format!(
            "SELECT cohort, period, count() AS visitors FROM ({seen}) ALL INNER JOIN \
             (SELECT visitor, min(period) AS cohort FROM ({seen}) GROUP BY visitor) USING visitor \
             GROUP BY cohort, period ORDER BY cohort, period"
        );
        let rows: Vec<CohortRow> = bind_scope(bind_scope(self.client.query(&sql), scope), scope)
            .fetch_all()
            .await
            .map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| CohortCell {
                cohort_ms: r.cohort,
                period_ms: r.period,
                visitors: r.visitors,
            })
            .collect())
    }
}

#[derive(Row, Deserialize)]
struct TouchRow {
    session: u64,
    channel: String,
    converts: u8,
    event_data: String,
}

impl ClickHouseAnalytics {
    pub(crate) async fn touch_rows(
        &self,
        scope: &Scope,
        target: &StepMatch,
    ) -> StoreResult<Vec<Touch>> {
        let filter = scope_sql(scope);
        let cond = match_sql(target);
        let sql = format!(
            "SELECT session, if(utm_source != '', utm_source, referrer_domain) AS channel, \
             toUInt8({cond}) AS converts, event_data FROM events \
             WHERE {filter} AND session IN (SELECT session FROM events WHERE {filter} AND {cond}) \
             ORDER BY session, ts, event_hi, event_lo"
        );
        let q = self.client.query(&sql).bind(target.value.as_str());
        let q = bind_scope(bind_scope(q, scope), scope).bind(target.value.as_str());
        let rows: Vec<TouchRow> = q.fetch_all().await.map_err(ch_err)?;
        Ok(rows
            .into_iter()
            .map(|r| Touch {
                session: r.session,
                channel: crate::ch::opt(r.channel),
                converts: r.converts == 1,
                event_data: if r.converts == 1 {
                    crate::ch::opt(r.event_data)
                } else {
                    None
                },
            })
            .collect())
    }
}
