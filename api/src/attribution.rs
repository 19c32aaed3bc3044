//! Which channels bring a goal's conversions: `GET /api/websites/{id}/attribution?goal_id=&model=`
//! and `GET /api/websites/{id}/revenue/summary?goal_id=&model=`. A channel is an event's
//! `utm_source`, else its referrer's domain, else `(direct)`. `first_touch` credits each
//! conversion to its session's first event's channel; `last_touch` (the default) to the
//! latest event at or before the conversion that came from somewhere, else `(direct)`.
//! A conversion is worth the goal's fixed value, or the number in its event property.

use crate::conversions::rate;
use crate::params::{bad, Params};
use crate::routes::{resolve, with_compare};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use projections::{SiteObjectScope, Touch, DIRECT};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use web::site::{Goal, ValueMode, GOAL};
use web::{ApiError, ApiResult, Caller};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    FirstTouch,
    LastTouch,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastTouch => "last_touch",
        }
    }
}

/// What one conversion is worth.
pub fn conversion_value(goal: &Goal, event_data: Option<&str>) -> f64 {
    match goal.value_mode {
        ValueMode::None => 0.0,
        ValueMode::Fixed => goal.fixed_value.unwrap_or(0.0),
        ValueMode::EventProperty => {
            let key = goal.value_property_key.as_deref().unwrap_or("");
            event_data
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .and_then(|v| match v.get(key) {
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                })
                .filter(|x: &f64| x.is_finite())
                .unwrap_or(0.0)
        }
    }
}

/// (channel, conversions, revenue) over sessions' events in order, most conversions first.
pub fn attribute(touches: &[Touch], model: Model, goal: &Goal) -> Vec<(String, u64, f64)> {
    let mut by_channel: HashMap<String, (u64, f64)> = HashMap::new();
    let mut first: Option<String> = None;
    let mut last: Option<String> = None;
    let mut session = None;
    for t in touches {
        if session != Some(t.session) {
            session = Some(t.session);
            first = Some(t.channel.clone().unwrap_or_else(|| DIRECT.to_string()));
            last = None;
        }
        if t.channel.is_some() {
            last = t.channel.clone();
        }
        if t.converts {
            let channel = match model {
                Model::FirstTouch => first.clone(),
                Model::LastTouch => last.clone(),
            }
            .unwrap_or_else(|| DIRECT.to_string());
            let e = by_channel.entry(channel).or_default();
            e.0 += 1;
            e.1 += conversion_value(goal, t.event_data.as_deref());
        }
    }
    let mut rows: Vec<(String, u64, f64)> = by_channel
        .into_iter()
        .map(|(c, (n, r))| (c, n, r))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

fn money(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The goal, the model and the attributed rows of a request.
async fn attributed(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<(
    String,
    Model,
    Vec<(String, u64, f64)>,
    crate::period::Period,
)> {
    let (p, period, scope) = resolve(s, caller, id, q).await?;
    let goal_id = p
        .get("goal_id")
        .cloned()
        .ok_or_else(|| bad("goal_id", "goal_id is required"))?;
    let model = match p.get("model").map(String::as_str) {
        None | Some("last_touch") => Model::LastTouch,
        Some("first_touch") => Model::FirstTouch,
        Some(_) => return Err(bad("model", "model must be first_touch or last_touch")),
    };
    let o = s
        .metadata
        .site_objects_where(SiteObjectScope::One, GOAL, &goal_id)
        .await?
        .into_iter()
        .find(|o| o.website_id == scope.website_id)
        .ok_or_else(|| ApiError::not_found(format!("no goal with id {goal_id:?}")))?;
    let goal: Goal = serde_json::from_str(&o.body_json).map_err(ApiError::internal)?;
    let touches = s.analytics.touches(&scope, &goal.target()).await?;
    Ok((goal_id, model, attribute(&touches, model, &goal), period))
}

/// `GET /api/websites/{id}/attribution`
pub async fn attribution(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (goal_id, model, rows, period) = attributed(&s, &caller, &id, q).await?;
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let revenue: f64 = rows.iter().map(|r| r.2).sum();
    let rows: Vec<Value> = rows
        .iter()
        .map(|(channel, n, r)| {
            json!({ "channel": channel, "conversions": n, "revenue": money(*r), "share": rate(*n, total) })
        })
        .collect();
    let body = json!({ "data": {
        "goal_id": goal_id,
        "model": model.name(),
        "rows": rows,
        "totals": { "conversions": total, "revenue": money(revenue) },
    }});
    Ok(with_compare(body, &period, None))
}

/// `GET /api/websites/{id}/revenue/summary`
pub async fn revenue_summary(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (goal_id, model, rows, period) = attributed(&s, &caller, &id, q).await?;
    let body = json!({ "data": {
        "goal_id": goal_id,
        "model": model.name(),
        "conversions": rows.iter().map(|r| r.1).sum::<u64>(),
        "revenue": money(rows.iter().map(|r| r.2).sum()),
    }});
    Ok(with_compare(body, &period, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use web::site::{MatchOperator, TargetType};

    fn goal(mode: ValueMode) -> Goal {
        Goal {
            name: "Buy".into(),
            goal_type: TargetType::Event,
            match_value: "buy".into(),
            match_operator: MatchOperator::Equals,
            value_mode: mode,
            fixed_value: Some(5.0),
            value_property_key: Some("amount".into()),
            currency: "USD".into(),
        }
    }

    fn t(session: u64, channel: Option<&str>, data: Option<&str>) -> Touch {
        Touch {
            session,
            channel: channel.map(str::to_string),
            converts: data.is_some(),
            event_data: data.filter(|d| !d.is_empty()).map(str::to_string),
        }
    }

    #[test]
    fn first_and_last_touch_credit_different_channels() {
        let touches = [
            t(1, Some("google.com"), None),
            t(1, None, None),
            t(1, Some("newsletter"), None),
            t(1, None, Some(r#"{"amount": 12.5}"#)),
            t(2, None, Some(r#"{"amount": "7"}"#)),
        ];
        let g = goal(ValueMode::EventProperty);
        assert_eq!(
            attribute(&touches, Model::FirstTouch, &g),
            vec![("(direct)".into(), 1, 7.0), ("google.com".into(), 1, 12.5)]
        );
        assert_eq!(
            attribute(&touches, Model::LastTouch, &g),
            vec![("(direct)".into(), 1, 7.0), ("newsletter".into(), 1, 12.5)]
        );
        let fixed = attribute(&touches, Model::LastTouch, &goal(ValueMode::Fixed));
        assert_eq!(fixed.iter().map(|r| r.2).sum::<f64>(), 10.0);
    }

    #[test]
    fn property_values_must_be_numbers() {
        let g = goal(ValueMode::EventProperty);
        assert_eq!(conversion_value(&g, Some(r#"{"amount": "x"}"#)), 0.0);
        assert_eq!(conversion_value(&g, None), 0.0);
        assert_eq!(
            conversion_value(&goal(ValueMode::None), Some(r#"{"amount": 3}"#)),
            0.0
        );
    }
}
