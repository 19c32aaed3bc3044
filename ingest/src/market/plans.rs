//! Plans and subscriptions: `GET /plans` (the plans of seed `004` with Tally's monthly
//! allocations, from `projections::reference`), `GET /companies/{id}/subscription` and the
//! operator's `PUT /companies/{id}/subscription` (`{"plan"}`; the period starts then). A company
//! without a subscription is on its default plan: Enterprise for the operator's company,
//! Starter for every tenant, with periods counted from the company's creation.
//! `GET /companies/{id}/requests/plan` shows the period's executions (`used`) and the requests
//! its allocation counted (`requests_counted`), from which `remaining` follows.

use super::companies::scoped;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::{plan, Plan, PLANS};
use serde::Deserialize;
use std::sync::Arc;
use web::roles::Action;
use web::{market, parse_json, Caller};

fn plan_json(p: &Plan) -> Value {
    json!({
        "plan_id": p.plan_id,
        "name": p.name,
        "requests_per_minute": p.requests_per_minute,
        "requests_per_day": p.requests_per_day,
        "concurrent_requests": p.concurrent_requests,
        "monthly_requests": p.monthly_requests,
    })
}

pub use projections::reference::{current_period, effective};

/// A company's plan and period as clients see them (its default plan without a subscription).
pub(crate) fn subscription_json(c: &Company) -> Value {
    let (p, start) = effective(c);
    let (from, to) = current_period(start, now_ms());
    json!({
        "plan": p.plan_id,
        "plan_name": p.name,
        "is_default": c.subscription.is_none(),
        "period_start": rfc3339(start),
        "current_period": { "start": rfc3339(from), "end": rfc3339(to) },
        "limits": plan_json(&p),
    })
}

/// `GET /plans`
pub async fn list(Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    caller.require(Action::ReadReference)?;
    let all: Vec<Value> = PLANS.iter().map(plan_json).collect();
    Ok(market("Plans retrieved", all).into_response())
}

/// `GET /companies/{company_id}/subscription`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
) -> ApiResult<Response> {
    let c = scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    Ok(market("Subscription retrieved", subscription_json(&c)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    plan: Option<String>,
    /// The operator's own monthly allocation for this company (`null`: the plan's).
    monthly_requests: Option<i64>,
}

/// `PUT /companies/{company_id}/subscription` (operator): `{"plan": "starter" | "professional" |
/// "enterprise", "monthly_requests"?}` (an allocation of its own for this company, instead of
/// the plan's); the new period starts now.
pub async fn put(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::SetSubscription).await?;
    let b: SubscriptionBody = parse_json(&body)?;
    let wanted = required("plan", &b.plan)?;
    let p = plan(wanted).ok_or_else(|| {
        let names: Vec<&str> = PLANS.iter().map(|p| p.plan_id).collect();
        ApiError::bad_request(format!(
            "plan {wanted:?} is not one of {}",
            names.join(", ")
        ))
    })?;
    let monthly_requests = match b.monthly_requests {
        Some(n) if !(1..=1_000_000_000_000).contains(&n) => return Err(ApiError::bad_request_on(
            "monthly_requests",
            "monthly_requests must be an integer from 1 to 1000000000000, or null for the plan's",
        )),
        n => n,
    };
    s.command_checked(vec![EntityEvent::SubscriptionSet(
        schemas::SubscriptionSet {
            event_id: new_id(),
            company_id: company_id.clone(),
            plan_id: p.plan_id.to_string(),
            period_start_ms: now_ms(),
            monthly_requests,
        },
    )])
    .await?;
    let c = scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    Ok(market("Subscription set", subscription_json(&c)).into_response())
}

/// `GET /companies/{company_id}/requests/plan`: the current period's allocation, how much of
/// it the company's executions used (every execution it made, whatever the outcome) and what
/// remains (`null` on an unlimited plan).
pub async fn requests_plan(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
) -> ApiResult<Response> {
    let c = scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    let (p, start) = effective(&c);
    let now = now_ms();
    let (from, to) = current_period(start, now);
    let used = super::money::money(&s)?
        .executions_by_buyer(&company_id, from, to)
        .await?;
    // What the allocation counts is every admitted request, executed or refused after
    // admission (402, 404, 409, a bad parameter): `remaining` is what it will still admit.
    let counted = match (&s.limits, p.monthly_requests) {
        (Some(store), Some(n)) => {
            let counter = super::limits::allocation_counter(&company_id, n, start, now);
            store.counts(&[counter]).await?.first().copied()
        }
        _ => None,
    };
    let data = json!({
        "plan": p.plan_id,
        "allocation": p.monthly_requests,
        "used": used,
        "requests_counted": counted,
        "remaining": p.monthly_requests.map(|a| a.saturating_sub(counted.unwrap_or(used))),
        "period_start": rfc3339(from),
        "period_end": rfc3339(to),
    });
    Ok(market("Request plan retrieved", data).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn periods_are_calendar_months_from_the_start() {
        let start = ms("2026-01-31T10:00:00Z");
        assert_eq!(
            current_period(start, ms("2026-01-31T10:00:00Z")),
            (start, ms("2026-02-28T10:00:00Z"))
        );
        assert_eq!(
            current_period(start, ms("2026-03-15T00:00:00Z")),
            (ms("2026-02-28T10:00:00Z"), ms("2026-03-31T10:00:00Z"))
        );
        assert_eq!(
            current_period(start, ms("2026-03-31T10:00:00Z")),
            (ms("2026-03-31T10:00:00Z"), ms("2026-04-30T10:00:00Z"))
        );
    }
}
