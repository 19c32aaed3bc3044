//! Custom events: `GET /api/websites/{id}/events` (names with counts), `events/properties`
//! (the top-level keys and values of one event's data) and `events/timeseries` (one event per
//! bucket). Page views are not events here; every other event type with a name is.

use crate::compare;
use crate::params::{self, bad, Params};
use crate::period::Period;
use crate::routes::{compared, granularity_name, resolve, scope_over, series_of, with_compare};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::{Dimension, Scope};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use web::{ApiResult, Caller};

/// How many of an event's newest occurrences its properties are counted over.
const PROPERTY_SAMPLE: u32 = 10_000;
/// How many (key, value) pairs `events/properties` lists, most frequent first.
const MAX_PROPERTIES: usize = 100;
const MAX_EVENT_NAME: usize = 200;

/// One (key, value) pair of event data and how many sampled occurrences carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyCount {
    pub key: String,
    pub value: String,
    pub count: u64,
}

/// A property value as a string: strings as they are, anything else as compact JSON.
fn property_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Counts the top-level (key, value) pairs over event data samples (JSON objects; anything
/// else, or data that is not JSON, carries no properties), most frequent first, then by key
/// and value.
pub fn property_counts(samples: &[Option<String>]) -> Vec<PropertyCount> {
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    for sample in samples.iter().flatten() {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(sample) {
            for (k, v) in map {
                *counts.entry((k, property_value(&v))).or_default() += 1;
            }
        }
    }
    let mut rows: Vec<PropertyCount> = counts
        .into_iter()
        .map(|((key, value), count)| PropertyCount { key, value, count })
        .collect();
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.value.cmp(&b.value))
    });
    rows
}

/// `event_name=` (required) and the scope narrowed to it.
fn one_event(p: &Params, scope: &Scope) -> ApiResult<(String, Scope)> {
    let name = p
        .get("event_name")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n.len() <= MAX_EVENT_NAME)
        .ok_or_else(|| bad("event_name", "event_name is required (1 to 200 characters)"))?;
    let mut narrowed = scope.clone();
    narrowed.filters.push((Dimension::EventName, name.clone()));
    Ok((name, narrowed))
}

/// `GET /api/websites/{id}/events` (`limit` 1–100, default 10, `offset`, `compare_mode`).
pub async fn names(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    Ok(axum::Json(names_of(&s, &p, &period, &scope).await?).into_response())
}

/// The `events` answer for a resolved website, period and scope (also for reports).
pub(crate) async fn names_of(
    s: &ApiState,
    p: &Params,
    period: &Period,
    scope: &Scope,
) -> ApiResult<Value> {
    let (limit, offset) = params::limit_offset(p)?;
    let cmp = compare::comparison(p, period)?;
    let (rows, total) = s
        .analytics
        .breakdown(scope, Dimension::EventName, limit, offset)
        .await?;
    let prev: HashMap<String, u64> = match &cmp {
        None => HashMap::new(),
        Some(c) => {
            let names: Vec<String> = rows.iter().map(|r| r.value.clone()).collect();
            s.analytics
                .breakdown_of(&scope_over(scope, &c.period), Dimension::EventName, &names)
                .await?
                .into_iter()
                .map(|r| (r.value, r.events))
                .collect()
        }
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row =
                json!({ "event_name": r.value, "count": r.events, "visitors": r.visitors });
            if cmp.is_some() {
                row["prev_count"] = json!(prev.get(&r.value).copied().unwrap_or(0));
            }
            row
        })
        .collect();
    let body = json!({ "data": { "rows": rows, "total": total } });
    Ok(compared(body, period, cmp.as_ref()))
}

/// `GET /api/websites/{id}/events/properties?event_name=`
pub async fn properties(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let (name, narrowed) = one_event(&p, &scope)?;
    let (totals, samples) = tokio::try_join!(
        s.analytics
            .breakdown_of(&scope, Dimension::EventName, std::slice::from_ref(&name)),
        s.analytics.event_data(&narrowed, PROPERTY_SAMPLE),
    )?;
    let total = totals.first().map_or(0, |r| r.events);
    let properties: Vec<Value> = property_counts(&samples)
        .into_iter()
        .take(MAX_PROPERTIES)
        .map(|c| json!({ "property_key": c.key, "property_value": c.value, "count": c.count }))
        .collect();
    let body = json!({ "data": {
        "event_name": name,
        "total_occurrences": total,
        "sample_size": samples.len(),
        "properties": properties,
    }});
    Ok(with_compare(body, &period, None))
}

/// `GET /api/websites/{id}/events/timeseries?event_name=&granularity=`: occurrences
/// (`count`, also as `pageviews` for clients that read the page-view series' shape) and
/// visitors per bucket.
pub async fn timeseries(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let (name, narrowed) = one_event(&p, &scope)?;
    let g = params::granularity(&p, &period)?;
    let series: Vec<Value> = series_of(&s, &narrowed, &period, g)
        .await?
        .into_iter()
        .map(|(date, (_, visitors, events))| {
            json!({ "date": date, "count": events, "pageviews": events, "visitors": visitors })
        })
        .collect();
    let body = json!({ "data": {
        "event_name": name,
        "series": series,
        "granularity": granularity_name(g),
        "timezone": period.tz.name(),
    }});
    Ok(with_compare(body, &period, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(key: &str, value: &str, count: u64) -> PropertyCount {
        PropertyCount {
            key: key.into(),
            value: value.into(),
            count,
        }
    }

    #[test]
    fn properties_count_top_level_pairs_most_frequent_first() {
        let samples = vec![
            Some(r#"{"plan":"pro","seats":3}"#.to_string()),
            Some(r#"{"plan":"pro","trial":true}"#.to_string()),
            Some(r#"{"plan":"free","nested":{"a":1}}"#.to_string()),
            None,
            Some("not json".to_string()),
            Some("[1,2]".to_string()),
        ];
        assert_eq!(
            property_counts(&samples),
            vec![
                pc("plan", "pro", 2),
                pc("nested", r#"{"a":1}"#, 1),
                pc("plan", "free", 1),
                pc("seats", "3", 1),
                pc("trial", "true", 1),
            ]
        );
        assert!(property_counts(&[]).is_empty());
    }
}
