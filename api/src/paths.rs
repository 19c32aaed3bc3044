//! How visitors move and come back: `GET /api/websites/{id}/journey` (the paths after or
//! before an anchor page or event) and `GET /api/websites/{id}/retention` (visitor cohorts by
//! first day, week or month, and how many were seen again each period after).

use crate::conversions::rate;
use crate::params::{bad, Params};
use crate::period::{offset_segments, Period};
use crate::routes::{granularity_name, resolve, with_compare};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use projections::{CohortCell, Granularity, MatchKind, StepMatch};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use web::{ApiResult, Caller};

/// The most branches a journey lists, most common first.
const MAX_BRANCHES: usize = 50;
const MAX_ANCHOR: usize = 500;

/// Identical paths counted, most sessions first, then by path.
pub fn branches(paths: Vec<Vec<String>>) -> Vec<(Vec<String>, u64)> {
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for p in paths {
        *counts.entry(p).or_default() += 1;
    }
    let mut out: Vec<(Vec<String>, u64)> = counts.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn int_param(
    p: &Params,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> ApiResult<u32> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                bad(
                    name,
                    format!(
                        "{name} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// `GET /api/websites/{id}/journey?anchor_type=page|event&anchor_value=&direction=next|previous&max_depth=1..5`
pub async fn journey(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let (kind, type_name) = match p.get("anchor_type").map(String::as_str) {
        Some("page") => (MatchKind::PageView, "page"),
        Some("event") => (MatchKind::Event, "event"),
        _ => return Err(bad("anchor_type", "anchor_type must be page or event")),
    };
    let value = p
        .get("anchor_value")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= MAX_ANCHOR)
        .ok_or_else(|| {
            bad(
                "anchor_value",
                "anchor_value is required (1 to 500 characters)",
            )
        })?;
    let after = match p.get("direction").map(String::as_str) {
        None | Some("next") => true,
        Some("previous") => false,
        Some(_) => return Err(bad("direction", "direction must be next or previous")),
    };
    let depth = int_param(&p, "max_depth", 3, 1..=5)?;
    let anchor = StepMatch {
        kind,
        value: value.clone(),
        contains: false,
    };
    let paths = s.analytics.journeys(&scope, &anchor, after, depth).await?;
    let total = paths.len() as u64;
    let branches: Vec<Value> = branches(paths)
        .into_iter()
        .take(MAX_BRANCHES)
        .map(|(nodes, n)| json!({ "nodes": nodes, "sessions": n, "share": rate(n, total) }))
        .collect();
    let body = json!({ "data": {
        "anchor": { "type": type_name, "value": value },
        "direction": if after { "next" } else { "previous" },
        "max_depth": depth,
        "total_anchor_sessions": total,
        "branches": branches,
    }});
    Ok(with_compare(body, &period, None))
}

/// The retention table over the period's buckets: a row per cohort (bucket) with its size and
/// the share seen again `offset` buckets later, for offsets up to `max_periods` that have
/// begun by the period's end; and the mean rates one and four periods on.
pub fn retention_rows(
    buckets: &[i64],
    labels: &[String],
    cells: &[CohortCell],
    max_periods: u32,
) -> (Vec<Value>, Value) {
    let at: HashMap<(i64, i64), u64> = cells
        .iter()
        .map(|c| ((c.cohort_ms, c.period_ms), c.visitors))
        .collect();
    let mut sums = [(0.0f64, 0u32); 2];
    let rows = buckets
        .iter()
        .enumerate()
        .map(|(i, &cohort)| {
            let size = at.get(&(cohort, cohort)).copied().unwrap_or(0);
            let periods: Vec<Value> = (0..=max_periods as usize)
                .filter_map(|k| buckets.get(i + k).map(|&b| (k, b)))
                .map(|(k, b)| {
                    let retained = at.get(&(cohort, b)).copied().unwrap_or(0);
                    let r = rate(retained, size);
                    for (slot, offset) in [(0, 1), (1, 4)] {
                        if k == offset && size > 0 {
                            sums[slot].0 += r;
                            sums[slot].1 += 1;
                        }
                    }
                    json!({ "offset": k, "retained": retained, "rate": r })
                })
                .collect();
            json!({ "cohort_start": labels[i], "cohort_size": size, "periods": periods })
        })
        .collect();
    let mean =
        |(sum, n): (f64, u32)| (n > 0).then(|| (sum / f64::from(n) * 10_000.0).round() / 10_000.0);
    let summary = json!({ "avg_period1_rate": mean(sums[0]), "avg_period4_rate": mean(sums[1]) });
    (rows, summary)
}

/// `GET /api/websites/{id}/retention?cohort_granularity=day|week|month&max_periods=1..12`
pub async fn retention(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let g = match p.get("cohort_granularity").map(String::as_str) {
        Some("day") => Granularity::Day,
        None | Some("week") => Granularity::Week,
        Some("month") => Granularity::Month,
        Some(_) => {
            return Err(bad(
                "cohort_granularity",
                "cohort_granularity must be day, week or month",
            ))
        }
    };
    let max_periods = int_param(&p, "max_periods", 8, 1..=12)?;
    let segments = offset_segments(period.tz, scope.from_ms, scope.to_ms);
    let cells = s.analytics.cohorts(&scope, g, &segments).await?;
    let (buckets, labels) = bucket_keys(&period, g);
    let (rows, summary) = retention_rows(&buckets, &labels, &cells, max_periods);
    let body = json!({ "data": {
        "granularity": granularity_name(g),
        "max_periods": max_periods,
        "rows": rows,
        "summary": summary,
        "timezone": period.tz.name(),
    }});
    Ok(with_compare(body, &period, None))
}

/// The period's buckets as the store keys them (local starts as epoch ms) and as labelled.
fn bucket_keys(period: &Period, g: Granularity) -> (Vec<i64>, Vec<String>) {
    period
        .buckets(g)
        .into_iter()
        .map(|local| {
            (
                local.and_utc().timestamp_millis(),
                local.format("%Y-%m-%d").to_string(),
            )
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_count_identical_paths() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let out = branches(vec![p(&["/b"]), p(&[]), p(&["/b"]), p(&["/a"])]);
        assert_eq!(out, vec![(p(&["/b"]), 2), (p(&[]), 1), (p(&["/a"]), 1)]);
    }

    #[test]
    fn retention_rows_line_up_offsets_and_average_rates() {
        let cell = |c, p, v| CohortCell {
            cohort_ms: c,
            period_ms: p,
            visitors: v,
        };
        let buckets = [10, 20, 30];
        let labels = ["a", "b", "c"].map(String::from);
        let cells = [
            cell(10, 10, 4),
            cell(10, 20, 2),
            cell(10, 30, 1),
            cell(20, 20, 2),
            cell(20, 30, 2),
        ];
        let (rows, summary) = retention_rows(&buckets, &labels, &cells, 8);
        assert_eq!(rows[0]["cohort_size"], 4);
        assert_eq!(rows[0]["periods"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            rows[0]["periods"][1],
            json!({"offset": 1, "retained": 2, "rate": 0.5})
        );
        assert_eq!(rows[1]["periods"][1]["rate"], 1.0);
        assert_eq!(rows[2]["cohort_size"], 0);
        assert_eq!(summary["avg_period1_rate"], 0.75);
        assert_eq!(summary["avg_period4_rate"], Value::Null);
        let (short, _) = retention_rows(&buckets, &labels, &cells, 1);
        assert_eq!(short[0]["periods"].as_array().map(Vec::len), Some(2));
    }
}
