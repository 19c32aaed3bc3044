//! `GET /companies/{company_id}/requests/usage?month=YYYY-MM&mode=live|test`: the company's
//! executions of one calendar month in its own time zone (local midnight to local midnight,
//! so a month with a DST change has its real length), from the metering projection: in total,
//! per local day (every day of the month, zeros included), per API key and per asset.

use super::companies::scoped;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use projections::{UsageCount, UsageQuery};
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, Caller};

/// The first day of `month` (`YYYY-MM`), or of the month holding `now_ms` in `tz`.
pub(crate) fn month_start(month: Option<&str>, tz: Tz, now_ms: i64) -> ApiResult<NaiveDate> {
    let Some(m) = month else {
        let today = tz
            .timestamp_millis_opt(now_ms)
            .single()
            .map(|t| t.date_naive())
            .unwrap_or_default();
        return Ok(today.with_day(1).unwrap_or(today));
    };
    NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| m.len() == 7)
        .ok_or_else(|| ApiError::bad_request(format!("month {m:?} is not YYYY-MM")))
}

/// Local midnight of `day` in `tz` as UTC ms (the first instant of the day, also on a day
/// whose midnight a DST change skips).
pub(crate) fn local_midnight(day: NaiveDate, tz: Tz) -> i64 {
    let mut t = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return local.timestamp_millis();
        }
        t += chrono::Duration::minutes(30);
    }
    t.and_utc().timestamp_millis()
}

fn count_json(c: &UsageCount) -> Value {
    json!({
        "executions": c.executions,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "credits": c.credits,
        "rows": c.rows,
    })
}

/// A key's metered executions (in the key's own mode) over the last `days` local days
/// (default 30, at most 366, today included): in total and per day, zeros included.
pub(crate) async fn key_days(
    s: &IngestState,
    company: &projections::Company,
    key: &projections::ApiKey,
    q: &HashMap<String, String>,
) -> ApiResult<Value> {
    let days = match q.get("days") {
        None => 30,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=366).contains(d))
            .ok_or_else(|| ApiError::bad_request("days must be a whole number from 1 to 366"))?,
    };
    let tz: Tz = company.state.timezone.parse().unwrap_or(chrono_tz::UTC);
    let today = tz
        .timestamp_millis_opt(now_ms())
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default();
    let first = today
        .checked_sub_days(chrono::Days::new(days - 1))
        .unwrap_or(today);
    let next = today.succ_opt().unwrap_or(today);
    let report = usage_of(
        s,
        &company.state.id,
        Some(key.api_key_id),
        &key.state.mode,
        tz,
        first,
        next,
    )
    .await?;
    Ok(json!({
        "days": days,
        "mode": key.state.mode,
        "timezone": tz.name(),
        "total": count_json(&report.total),
        "per_day": every_day(&report, first, next),
    }))
}

/// The buyer's (or one key's) usage of the local days `[first, next)`.
async fn usage_of(
    s: &IngestState,
    company_id: &str,
    api_key_id: Option<i64>,
    mode: &str,
    tz: Tz,
    first: NaiveDate,
    next: NaiveDate,
) -> ApiResult<projections::UsageReport> {
    let (from, to) = (local_midnight(first, tz), local_midnight(next, tz));
    let store = s
        .usage
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process has no usage store"))?;
    Ok(store
        .usage_report(&UsageQuery {
            buyer_company_id: company_id.to_string(),
            api_key_id,
            from_ms: from,
            to_ms: to,
            mode: mode.to_string(),
            tz: projections::offset_segments(tz, from, to),
        })
        .await?)
}

/// Every local day of `[first, next)`, in order, with its counts (zeros for a quiet day).
fn every_day(report: &projections::UsageReport, first: NaiveDate, next: NaiveDate) -> Vec<Value> {
    let by_day: HashMap<NaiveDate, &UsageCount> = report
        .by_day
        .iter()
        .filter_map(|(local_ms, n)| {
            chrono::DateTime::from_timestamp_millis(*local_ms).map(|t| (t.date_naive(), n))
        })
        .collect();
    let zero = UsageCount::default();
    first
        .iter_days()
        .take_while(|d| *d < next)
        .map(|d| {
            let mut v = count_json(by_day.get(&d).copied().unwrap_or(&zero));
            v["date"] = json!(d.format("%Y-%m-%d").to_string());
            v
        })
        .collect()
}

pub async fn requests_usage(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let c = scoped(&s, &caller, &company_id, Action::ReadCompany).await?;
    let mode = q.get("mode").map_or("live", String::as_str);
    if !matches!(mode, "live" | "test") {
        return Err(ApiError::bad_request(format!(
            "mode {mode:?} is not one of live, test"
        )));
    }
    let tz: Tz = c.state.timezone.parse().unwrap_or(chrono_tz::UTC);
    let first = month_start(q.get("month").map(String::as_str), tz, now_ms())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ApiError::bad_request("month is out of range"))?;
    let (from, to) = (local_midnight(first, tz), local_midnight(next, tz));
    let report = usage_of(&s, &company_id, None, mode, tz, first, next).await?;
    let days = every_day(&report, first, next);
    let keyed = |k: &str, v: Value, n: &UsageCount| {
        let mut out = count_json(n);
        out[k] = v;
        out
    };
    let data = json!({
        "company_id": company_id,
        "month": first.format("%Y-%m").to_string(),
        "timezone": tz.name(),
        "mode": mode,
        "period_start": rfc3339(from),
        "period_end": rfc3339(to),
        "total": count_json(&report.total),
        "days": days,
        "by_key": report.by_key.iter().map(|(k, n)| keyed("api_key_id", json!(k), n)).collect::<Vec<_>>(),
        "by_asset": report.by_asset.iter().map(|(a, n)| keyed("asset_id", json!(a), n)).collect::<Vec<_>>(),
    });
    Ok(market("Request usage retrieved", data).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn months_run_from_local_midnight_to_local_midnight() {
        let tz: Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
        let march = month_start(Some("2026-03"), tz, 0).unwrap_or_default();
        let april = march
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(march);
        let (from, to) = (local_midnight(march, tz), local_midnight(april, tz));
        // 1 March 00:00 CET = 28 Feb 23:00 UTC; 1 April 00:00 CEST = 31 March 22:00 UTC.
        assert_eq!(from, 1_772_319_600_000);
        assert_eq!(
            to - from,
            31 * DAY_MS - 3_600_000,
            "March loses the DST hour"
        );
        assert!(month_start(Some("2026-3"), tz, 0).is_err());
        assert!(month_start(Some("2026-13"), tz, 0).is_err());
        assert!(month_start(Some("march"), tz, 0).is_err());
    }
}
