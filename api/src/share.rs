//! A shared dashboard's public, read-only routes: `/api/share/{share_id}/overview`, `stats`,
//! `pageviews` and `metrics`, with the same parameters and answers as the website's own, for
//! whoever has the link (no key). Only these reads are open; a deleted or replaced share is
//! "not found".

use crate::params::{self, Params};
use crate::period::Period;
use crate::routes::{metrics_of, pageviews_of, stats_of};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use projections::{Scope, SiteObjectScope, Website};
use serde_json::json;
use std::sync::Arc;
use web::site::SHARE;
use web::{data, ApiError, ApiResult};

/// The shared website, and the request's parameters resolved against it.
async fn shared(
    s: &ApiState,
    share_id: &str,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<(Website, Params, Period, Scope)> {
    let missing = || ApiError::not_found("no such share (it may have been turned off)");
    let share = s
        .metadata
        .site_objects_where(SiteObjectScope::PublicKey, SHARE, share_id)
        .await?
        .into_iter()
        .next()
        .ok_or_else(missing)?;
    let site = s
        .metadata
        .website(&share.website_id)
        .await?
        .ok_or_else(missing)?;
    let p = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let period = params::period(&p, &site)?;
    let scope = params::scope(&p, &site, &period)?;
    Ok((site, p, period, scope))
}

/// `GET /api/share/{share_id}/overview`: the website's name, domain and time zone.
pub async fn overview(
    State(s): State<Arc<ApiState>>,
    Path(share_id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (site, _, period, _) = shared(&s, &share_id, q).await?;
    Ok(data(json!({
        "share_id": share_id,
        "website": { "id": site.id, "name": site.name, "domain": site.domain, "timezone": site.timezone },
        "start_date": period.start.to_string(),
        "end_date": period.end.to_string(),
    }))
    .into_response())
}

/// `GET /api/share/{share_id}/stats`
pub async fn stats(
    State(s): State<Arc<ApiState>>,
    Path(share_id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_, p, period, scope) = shared(&s, &share_id, q).await?;
    Ok(axum::Json(stats_of(&s, &p, &period, &scope).await?).into_response())
}

/// `GET /api/share/{share_id}/pageviews`
pub async fn pageviews(
    State(s): State<Arc<ApiState>>,
    Path(share_id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_, p, period, scope) = shared(&s, &share_id, q).await?;
    Ok(axum::Json(pageviews_of(&s, &p, &period, &scope).await?).into_response())
}

/// `GET /api/share/{share_id}/metrics`
pub async fn metrics(
    State(s): State<Arc<ApiState>>,
    Path(share_id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (_, p, period, scope) = shared(&s, &share_id, q).await?;
    Ok(axum::Json(metrics_of(&s, &p, &period, &scope).await?).into_response())
}
