//! Query-string parsing for dashboard endpoints, with a `400 bad_request` naming the parameter
//! for anything malformed.

use crate::period::Period;
use chrono::{Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use projections::{Dimension, Granularity, Scope, Website};
use std::collections::HashMap;
use web::{ApiError, ApiResult};

/// The longest range a dashboard query may cover.
const MAX_RANGE_DAYS: i64 = 2 * 366;

pub type Params = HashMap<String, String>;

pub(crate) fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).with_details(serde_json::json!({ "parameter": param }))
}

pub(crate) fn date(params: &Params, name: &str) -> ApiResult<Option<NaiveDate>> {
    params
        .get(name)
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| bad(name, format!("{name} must be YYYY-MM-DD")))
        })
        .transpose()
}

/// Timezone (parameter, else the website's) and the local date range (default: last 7 days).
pub fn period(params: &Params, site: &Website) -> ApiResult<Period> {
    let tz_name = params
        .get("timezone")
        .map(String::as_str)
        .unwrap_or(&site.timezone);
    let tz: Tz = tz_name
        .parse()
        .map_err(|_| bad("timezone", format!("unknown IANA timezone {tz_name:?}")))?;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let end = date(params, "end_date")?.unwrap_or(today);
    let start = date(params, "start_date")?.unwrap_or(end - Duration::days(6));
    if start > end {
        return Err(bad("start_date", "start_date is after end_date"));
    }
    if (end - start).num_days() >= MAX_RANGE_DAYS {
        return Err(bad(
            "start_date",
            format!("the range may cover at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(Period { tz, start, end })
}

fn flag(params: &Params, name: &str) -> ApiResult<bool> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(bad(name, format!("{name} must be true or false"))),
    }
}

/// The event scope for a period: website, UTC bounds, bots, `filter_*` parameters.
pub fn scope(params: &Params, site: &Website, period: &Period) -> ApiResult<Scope> {
    let (from_ms, to_ms) = period.utc_bounds();
    let mut filters = Vec::new();
    for (k, v) in params {
        if let Some(name) = k.strip_prefix("filter_") {
            let dim = Dimension::parse(name)
                .filter(|d| !d.is_session_level())
                .ok_or_else(|| bad(k, format!("unknown filter {k:?}")))?;
            // Host names compare in lower case, as URLs store them.
            let value = if dim == Dimension::Hostname {
                v.to_lowercase()
            } else {
                v.clone()
            };
            filters.push((dim, value));
        }
    }
    filters.sort_by_key(|(d, _)| d.name());
    Ok(Scope {
        website_id: site.id.clone(),
        from_ms,
        to_ms,
        include_bots: flag(params, "include_bots")?,
        filters,
    })
}

/// `granularity=hour|day|month`; by default hours for a range of up to two days, days up to
/// 60 days, months beyond.
pub fn granularity(params: &Params, period: &Period) -> ApiResult<Granularity> {
    match params.get("granularity").map(String::as_str) {
        Some("hour") => Ok(Granularity::Hour),
        Some("day") => Ok(Granularity::Day),
        Some("month") => Ok(Granularity::Month),
        None | Some("") if period.days() <= 2 => Ok(Granularity::Hour),
        None | Some("") if period.days() <= 60 => Ok(Granularity::Day),
        None | Some("") => Ok(Granularity::Month),
        Some(other) => Err(bad(
            "granularity",
            format!("granularity must be hour, day or month, not {other:?}"),
        )),
    }
}

/// `type=…` for metrics.
pub fn dimension(params: &Params) -> ApiResult<Dimension> {
    let t = params
        .get("type")
        .ok_or_else(|| bad("type", "type is required"))?;
    Dimension::parse(t).ok_or_else(|| {
        let valid: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
        bad(
            "type",
            format!("unknown type {t:?}; one of {}", valid.join(", ")),
        )
    })
}

/// `limit`: `default` when absent, at most `max` (a larger one is `max`, as the peer clamps).
pub fn limit(params: &Params, default: u32, max: u32) -> ApiResult<u32> {
    match params.get("limit") {
        None => Ok(default),
        Some(s) => Ok(s
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad("limit", "limit must be a positive integer"))?
            .min(u64::from(max)) as u32),
    }
}

/// `limit` (default 10; above 100 it is 100, as the peer clamps) and `offset` (default 0).
pub fn limit_offset(params: &Params) -> ApiResult<(u32, u32)> {
    let limit = limit(params, 10, 100)?;
    let offset = match params.get("offset") {
        None => 0,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| bad("offset", "offset must be an integer from 0 to 1000000"))?,
    };
    Ok((limit, offset))
}
