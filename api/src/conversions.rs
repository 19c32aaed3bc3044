//! Goal, funnel, short link and pixel numbers: `GET /api/websites/{id}/goals/{goal_id}/stats` and
//! `GET /api/websites/{id}/funnels/{funnel_id}/results`, over the period and filters, with the
//! previous period (or the `compare_mode` one) beside a goal's numbers.

use crate::compare;
use crate::params::Params;
use crate::routes::{prev_period, resolve, scope_over, with_compare};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use projections::{Dimension, MatchKind, Scope, SiteObjectScope, StepMatch};
use schemas::SiteObjectState;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::Arc;
use web::site::{
    link_event, pixel_event, Funnel, Goal, Link, Pixel, ValueMode, FUNNEL, GOAL, LINK, PIXEL,
};
use web::{ApiError, ApiResult, Caller};

/// `part / whole` rounded to 4 places (0 when `whole` is 0): every rate and share here.
pub(crate) fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0
}

/// The object of `kind` on the website, with its fields; another site's is "not found".
async fn load_object<T: DeserializeOwned>(
    s: &ApiState,
    website_id: &str,
    kind: &str,
    id: &str,
) -> ApiResult<(SiteObjectState, T)> {
    let o = s
        .metadata
        .site_objects_where(SiteObjectScope::One, kind, id)
        .await?
        .into_iter()
        .find(|o| o.website_id == website_id)
        .ok_or_else(|| ApiError::not_found(format!("no {kind} with id {id:?}")))?;
    let fields = serde_json::from_str(&o.body_json).map_err(ApiError::internal)?;
    Ok((o, fields))
}

async fn load<T: DeserializeOwned>(
    s: &ApiState,
    website_id: &str,
    kind: &str,
    id: &str,
) -> ApiResult<T> {
    Ok(load_object(s, website_id, kind, id).await?.1)
}

/// Occurrences and visitors of one event name over the scope.
async fn named_event(s: &ApiState, scope: &Scope, name: String) -> ApiResult<(u64, u64)> {
    let rows = s
        .analytics
        .breakdown_of(scope, Dimension::EventName, &[name])
        .await?;
    Ok(rows.first().map_or((0, 0), |r| (r.events, r.visitors)))
}

/// `GET /api/websites/{id}/links/{link_id}/stats[?goal_id=]`: clicks and clicking visitors;
/// with a goal, the sessions that converted after a click (`conversions`) and their value
/// (`revenue`: the goal's fixed value each; `null` for goals valued by an event property).
pub async fn link_stats(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, link_id)): Path<(String, String)>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let (o, _link): (SiteObjectState, Link) =
        load_object(&s, &scope.website_id, LINK, &link_id).await?;
    let event = link_event(o.public_key.as_deref().unwrap_or(""));
    let (clicks, visitors) = named_event(&s, &scope, event.clone()).await?;
    let (conversions, revenue) = match p.get("goal_id") {
        None => (Value::Null, Value::Null),
        Some(goal_id) => {
            let goal: Goal = load(&s, &scope.website_id, GOAL, goal_id).await?;
            let click = StepMatch {
                kind: MatchKind::Event,
                value: event,
                contains: false,
            };
            let reached = s.analytics.funnel(&scope, &[click, goal.target()]).await?;
            let n = reached.get(1).copied().unwrap_or(0);
            let revenue = match goal.value_mode {
                ValueMode::None => json!(0.0),
                ValueMode::Fixed => json!(goal.fixed_value.unwrap_or(0.0) * n as f64),
                ValueMode::EventProperty => Value::Null,
            };
            (json!(n), revenue)
        }
    };
    let body = json!({ "data": {
        "link_id": link_id,
        "clicks": clicks,
        "unique_visitors": visitors,
        "conversions": conversions,
        "revenue": revenue,
    }});
    Ok(with_compare(body, &period, None))
}

/// `GET /api/websites/{id}/pixels/{pixel_id}/stats`: views and viewing visitors.
pub async fn pixel_stats(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, pixel_id)): Path<(String, String)>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let (o, _pixel): (SiteObjectState, Pixel) =
        load_object(&s, &scope.website_id, PIXEL, &pixel_id).await?;
    let event = pixel_event(o.public_key.as_deref().unwrap_or(""));
    let (views, visitors) = named_event(&s, &scope, event).await?;
    let body =
        json!({ "data": { "pixel_id": pixel_id, "views": views, "unique_visitors": visitors } });
    Ok(with_compare(body, &period, None))
}

/// Percent change from `prev` to `cur`, one decimal; none when there was nothing before.
fn trend_pct(cur: f64, prev: f64) -> Option<f64> {
    (prev > 0.0).then(|| ((cur - prev) / prev * 1000.0).round() / 10.0)
}

/// `GET /api/websites/{id}/goals/{goal_id}/stats`
pub async fn goal_stats(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, goal_id)): Path<(String, String)>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let goal: Goal = load(&s, &scope.website_id, GOAL, &goal_id).await?;
    let cmp = compare::comparison(&p, &period)?;
    let prev_scope = scope_over(&scope, &prev_period(&period, cmp.as_ref()));
    let target = goal.target();
    let (cur, prev, totals, prev_totals) = tokio::try_join!(
        s.analytics.goal_counts(&scope, &target),
        s.analytics.goal_counts(&prev_scope, &target),
        s.analytics.totals(&scope),
        s.analytics.totals(&prev_scope),
    )?;
    let conversion_rate = rate(cur.converting_sessions, totals.sessions);
    let prev_rate = rate(prev.converting_sessions, prev_totals.sessions);
    let body = json!({ "data": {
        "goal_id": goal_id,
        "conversions": cur.conversions,
        "converting_sessions": cur.converting_sessions,
        "total_sessions": totals.sessions,
        "conversion_rate": conversion_rate,
        "prev_conversions": prev.conversions,
        "prev_conversion_rate": prev_rate,
        "trend_pct": trend_pct(conversion_rate, prev_rate),
    }});
    Ok(with_compare(body, &period, cmp.as_ref()))
}

/// The funnel's rows from the sessions that reached each step.
pub fn funnel_steps(funnel: &Funnel, reached: &[u64]) -> Vec<Value> {
    let entered = reached.first().copied().unwrap_or(0);
    funnel
        .steps
        .iter()
        .zip(reached)
        .enumerate()
        .map(|(i, (step, &n))| {
            let before = if i == 0 { entered } else { reached[i - 1] };
            let dropped = before.saturating_sub(n);
            json!({
                "step_order": i + 1,
                "label": step.label,
                "sessions_reached": n,
                "drop_off_count": dropped,
                "drop_off_rate": rate(dropped, before),
                "conversion_rate_from_start": rate(n, entered),
                "conversion_rate_from_previous": rate(n, before),
            })
        })
        .collect()
}

/// `GET /api/websites/{id}/funnels/{funnel_id}/results`
pub async fn funnel_results(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, funnel_id)): Path<(String, String)>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_p, period, scope) = resolve(&s, &caller, &id, q).await?;
    let funnel: Funnel = load(&s, &scope.website_id, FUNNEL, &funnel_id).await?;
    let reached = s.analytics.funnel(&scope, &funnel.targets()).await?;
    let entered = reached.first().copied().unwrap_or(0);
    let last = reached.last().copied().unwrap_or(0);
    let body = json!({ "data": {
        "funnel_id": funnel_id,
        "name": funnel.name,
        "total_sessions_entered": entered,
        "final_conversion_rate": rate(last, entered),
        "steps": funnel_steps(&funnel, &reached),
    }});
    Ok(with_compare(body, &period, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use web::site::{FunnelStep, MatchOperator, TargetType};

    #[test]
    fn funnel_rows_count_drop_offs_between_steps() {
        let step = |label: &str| FunnelStep {
            step_type: TargetType::PageView,
            match_value: label.into(),
            match_operator: MatchOperator::Equals,
            label: label.into(),
        };
        let f = Funnel {
            name: "F".into(),
            steps: vec![step("a"), step("b"), step("c")],
        };
        let rows = funnel_steps(&f, &[8, 4, 1]);
        assert_eq!(rows[0]["drop_off_count"], 0);
        assert_eq!(rows[0]["conversion_rate_from_previous"], 1.0);
        assert_eq!(rows[1]["drop_off_count"], 4);
        assert_eq!(rows[1]["drop_off_rate"], 0.5);
        assert_eq!(rows[2]["conversion_rate_from_start"], 0.125);
        assert_eq!(rows[2]["conversion_rate_from_previous"], 0.25);
        let empty = funnel_steps(&f, &[0, 0, 0]);
        assert_eq!(empty[2]["conversion_rate_from_start"], 0.0);
    }

    #[test]
    fn trends_need_a_previous_value() {
        assert_eq!(trend_pct(0.3, 0.2), Some(50.0));
        assert_eq!(trend_pct(0.3, 0.0), None);
    }
}
