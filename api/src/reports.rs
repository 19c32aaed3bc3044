//! Saved reports run on demand: `POST /api/websites/{id}/reports/preview` (a config, not saved)
//! and `GET|POST /api/websites/{id}/reports/{report_id}/run`, each answering
//! `{report_id, config, ran_at, data}` with `data` what the report's route answers for its
//! range (a relative range ends today in the report's or the website's time zone).

use crate::events::names_of;
use crate::params;
use crate::routes::{metrics_of, pageviews_of, stats_of, website};
use crate::ApiState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use chrono_tz::Tz;
use projections::{SiteObjectScope, Website};
use serde_json::{json, Value};
use std::sync::Arc;
use web::site::{Report, ReportConfig, REPORT};
use web::{data, parse_json, ApiError, ApiResult, Caller};

/// Runs `config` over `site`: the answer of its route (`data`, and `compare` when comparing).
async fn run(s: &ApiState, site: &Website, config: &ReportConfig) -> ApiResult<Value> {
    let tz_name = config.timezone.as_deref().unwrap_or(&site.timezone);
    let tz: Tz = tz_name.parse().map_err(|_| {
        ApiError::bad_request_on("config.timezone", format!("unknown time zone {tz_name:?}"))
    })?;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let p = config.params(today);
    let period = params::period(&p, site)?;
    let scope = params::scope(&p, site, &period)?;
    let answer = match config.report_type.as_str() {
        "stats" => stats_of(s, &p, &period, &scope).await?,
        "pageviews" => pageviews_of(s, &p, &period, &scope).await?,
        "metrics" => metrics_of(s, &p, &period, &scope).await?,
        _ => names_of(s, &p, &period, &scope).await?,
    };
    Ok(answer)
}

fn ran(report_id: Option<&str>, config: &ReportConfig, answer: Value) -> Response {
    let mut body = json!({
        "report_id": report_id,
        "config": config,
        "ran_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": answer["data"],
    });
    for extra in ["compare", "pagination"] {
        if !answer[extra].is_null() {
            body[extra] = answer[extra].clone();
        }
    }
    data(body).into_response()
}

/// `POST /api/websites/{id}/reports/preview` with `{config}` (or the config itself).
pub async fn preview(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = website(&s, &caller, &id).await?;
    let raw: Value = parse_json(&body)?;
    let raw = raw.get("config").cloned().unwrap_or(raw);
    let config: ReportConfig = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request_on("config", format!("invalid config: {e}")))?;
    let config = config.checked()?;
    let answer = run(&s, &site, &config).await?;
    Ok(ran(None, &config, answer))
}

/// `GET` or `POST /api/websites/{id}/reports/{report_id}/run`
pub async fn run_saved(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, report_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = website(&s, &caller, &id).await?;
    let o = s
        .metadata
        .site_objects_where(SiteObjectScope::One, REPORT, &report_id)
        .await?
        .into_iter()
        .find(|o| o.website_id == site.id)
        .ok_or_else(|| ApiError::not_found(format!("no report with id {report_id:?}")))?;
    let report: Report = serde_json::from_str(&o.body_json).map_err(ApiError::internal)?;
    let answer = run(&s, &site, &report.config).await?;
    Ok(ran(Some(&report_id), &report.config, answer))
}
