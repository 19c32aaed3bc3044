//! A website's goals and funnels (`/api/websites/{id}/goals…`, `/funnels…`): entities through
//! the log like websites, as `SiteObjectUpserted` carrying the fields `web::site` validates.
//! Reading needs the dashboard right, changing them the website right; another company's
//! website or object is "not found".

use crate::commands::{existing, now_ms, rfc3339};
use crate::market::new_id;
use crate::IngestState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::{SiteObjectScope, Website};
use schemas::{EntityEvent, SiteObjectState, SiteObjectUpserted};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use web::roles::Action;
use web::site::{Funnel, FunnelBody, Goal, GoalBody, FUNNEL, GOAL};
use web::{data, parse_json, ApiError, ApiResult, Caller};

/// The caller's website, checked for `action`.
async fn site(s: &IngestState, caller: &Caller, id: &str, action: Action) -> ApiResult<Website> {
    caller.require(action)?;
    existing(s, caller, id).await
}

/// One live object of `kind` on `site`, with its fields.
async fn object<T: DeserializeOwned>(
    s: &IngestState,
    site: &Website,
    kind: &str,
    id: &str,
) -> ApiResult<(SiteObjectState, T)> {
    let missing = || ApiError::not_found(format!("no {kind} with id {id:?}"));
    let o = s
        .metadata
        .site_objects_where(SiteObjectScope::One, kind, id)
        .await?
        .into_iter()
        .find(|o| o.website_id == site.id)
        .ok_or_else(missing)?;
    let fields = fields(&o)?;
    Ok((o, fields))
}

fn fields<T: DeserializeOwned>(o: &SiteObjectState) -> ApiResult<T> {
    serde_json::from_str(&o.body_json).map_err(ApiError::internal)
}

/// The site's live objects of `kind`, oldest first, with their fields.
async fn objects<T: DeserializeOwned>(
    s: &IngestState,
    site: &Website,
    kind: &str,
) -> ApiResult<Vec<(SiteObjectState, T)>> {
    s.metadata
        .site_objects_where(SiteObjectScope::Website, kind, &site.id)
        .await?
        .into_iter()
        .map(|o| fields(&o).map(|f| (o, f)))
        .collect()
}

/// Appends the object's new state and waits until it is projected (or refused).
async fn save(s: &IngestState, o: SiteObjectState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::SiteObjectUpserted(SiteObjectUpserted {
        event_id: new_id(),
        object: o,
    })])
    .await
}

fn new_object<T: Serialize>(site: &Website, kind: &str, fields: &T) -> ApiResult<SiteObjectState> {
    let now = now_ms();
    Ok(SiteObjectState {
        id: new_id(),
        kind: kind.to_string(),
        website_id: site.id.clone(),
        company_id: site.company_id.clone().unwrap_or_default(),
        public_key: None,
        body_json: serde_json::to_string(fields).map_err(ApiError::internal)?,
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

fn changed<T: Serialize>(mut o: SiteObjectState, fields: &T) -> ApiResult<SiteObjectState> {
    o.body_json = serde_json::to_string(fields).map_err(ApiError::internal)?;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    Ok(o)
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, data(body)).into_response()
}

fn goal_json(o: &SiteObjectState, g: &Goal) -> Value {
    json!({
        "id": o.id,
        "website_id": o.website_id,
        "name": g.name,
        "goal_type": g.goal_type,
        "match_value": g.match_value,
        "match_operator": g.match_operator,
        "value_mode": g.value_mode,
        "fixed_value": g.fixed_value,
        "value_property_key": g.value_property_key,
        "currency": g.currency,
        "created_at": rfc3339(o.created_at_ms),
        "updated_at": rfc3339(o.updated_at_ms),
    })
}

fn funnel_json(o: &SiteObjectState, f: &Funnel) -> Value {
    let steps: Vec<Value> = f
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            json!({
                "id": format!("{}-{}", o.id, i + 1),
                "funnel_id": o.id,
                "step_order": i + 1,
                "step_type": st.step_type,
                "match_value": st.match_value,
                "match_operator": st.match_operator,
                "label": st.label,
                "created_at": rfc3339(o.updated_at_ms),
            })
        })
        .collect();
    json!({
        "id": o.id,
        "website_id": o.website_id,
        "name": f.name,
        "steps": steps,
        "created_at": rfc3339(o.created_at_ms),
        "updated_at": rfc3339(o.updated_at_ms),
    })
}

fn funnel_summary(o: &SiteObjectState, f: &Funnel) -> Value {
    json!({
        "id": o.id,
        "website_id": o.website_id,
        "name": f.name,
        "step_count": f.steps.len(),
        "created_at": rfc3339(o.created_at_ms),
        "updated_at": rfc3339(o.updated_at_ms),
    })
}

/// `GET /api/websites/{id}/goals`
pub async fn list_goals(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let goals: Vec<Value> = objects::<Goal>(&s, &site, GOAL)
        .await?
        .iter()
        .map(|(o, g)| goal_json(o, g))
        .collect();
    Ok(data(json!(goals)).into_response())
}

/// `POST /api/websites/{id}/goals`
pub async fn create_goal(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let goal = Goal::create(parse_json::<GoalBody>(&body)?)?;
    let o = new_object(&site, GOAL, &goal)?;
    save(&s, o.clone()).await?;
    Ok(created(goal_json(&o, &goal)))
}

/// `GET /api/websites/{id}/goals/{goal_id}`
pub async fn get_goal(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, goal_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let (o, g) = object::<Goal>(&s, &site, GOAL, &goal_id).await?;
    Ok(data(goal_json(&o, &g)).into_response())
}

/// `PUT /api/websites/{id}/goals/{goal_id}` (also `PATCH`): any of the fields but the type.
pub async fn update_goal(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, goal_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (o, g) = object::<Goal>(&s, &site, GOAL, &goal_id).await?;
    let goal = g.update(parse_json::<GoalBody>(&body)?)?;
    let o = changed(o, &goal)?;
    save(&s, o.clone()).await?;
    Ok(data(goal_json(&o, &goal)).into_response())
}

/// `DELETE /api/websites/{id}/goals/{goal_id}`
pub async fn delete_goal(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, goal_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (mut o, _) = object::<Goal>(&s, &site, GOAL, &goal_id).await?;
    o.deleted = true;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    save(&s, o).await?;
    Ok(data(json!({ "id": goal_id, "deleted": true })).into_response())
}

/// `GET /api/websites/{id}/funnels`: summaries (`step_count`).
pub async fn list_funnels(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let funnels: Vec<Value> = objects::<Funnel>(&s, &site, FUNNEL)
        .await?
        .iter()
        .map(|(o, f)| funnel_summary(o, f))
        .collect();
    Ok(data(json!(funnels)).into_response())
}

/// `POST /api/websites/{id}/funnels`
pub async fn create_funnel(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let funnel = Funnel::create(parse_json::<FunnelBody>(&body)?)?;
    let o = new_object(&site, FUNNEL, &funnel)?;
    save(&s, o.clone()).await?;
    Ok(created(funnel_json(&o, &funnel)))
}

/// `GET /api/websites/{id}/funnels/{funnel_id}`
pub async fn get_funnel(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, funnel_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let (o, f) = object::<Funnel>(&s, &site, FUNNEL, &funnel_id).await?;
    Ok(data(funnel_json(&o, &f)).into_response())
}

/// `PUT /api/websites/{id}/funnels/{funnel_id}` (also `PATCH`): the name and/or all steps.
pub async fn update_funnel(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, funnel_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (o, f) = object::<Funnel>(&s, &site, FUNNEL, &funnel_id).await?;
    let funnel = f.update(parse_json::<FunnelBody>(&body)?)?;
    let o = changed(o, &funnel)?;
    save(&s, o.clone()).await?;
    Ok(data(funnel_json(&o, &funnel)).into_response())
}

/// `DELETE /api/websites/{id}/funnels/{funnel_id}`
pub async fn delete_funnel(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, funnel_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (mut o, _) = object::<Funnel>(&s, &site, FUNNEL, &funnel_id).await?;
    o.deleted = true;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    save(&s, o).await?;
    Ok(data(json!({ "id": funnel_id, "deleted": true })).into_response())
}
