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

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).with_details(serde_json::json!({ "parameter": param }))
}

fn date(params: &Params, name: &str) -> ApiResult<Option<NaiveDate>> {
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
            filters.push((dim, v.clone()));
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

/// `granularity=hour|day|month`; by default hours for a range of up to two days, else days.
pub fn granularity(params: &Params, period: &Period) -> ApiResult<Granularity> {
    match params.get("granularity").map(String::as_str) {
        Some("hour") => Ok(Granularity::Hour),
        Some("day") => Ok(Granularity::Day),
        Some("month") => Ok(Granularity::Month),
        None if (period.end - period.start).num_days() < 2 => Ok(Granularity::Hour),
        None => Ok(Granularity::Day),
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

/// `limit` (1..=1000, default 10) and `offset` (default 0).
pub fn limit_offset(params: &Params) -> ApiResult<(u32, u32)> {
    let num = |name: &str, default: u32, max: u32| -> ApiResult<u32> {
        match params.get(name) {
            None => Ok(default),
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(name, format!("{name} must be an integer from 0 to {max}"))),
        }
    };
    let limit = num("limit", 10, 1000)?;
    if limit == 0 {
        return Err(bad("limit", "limit must be at least 1"));
    }
    Ok((limit, num("offset", 0, 1_000_000)?))
}
