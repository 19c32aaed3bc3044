//! Seller analytics, `GET /companies/{company_id}/analytics/{dashboard|sales|customers|assets|
//! metrics}`: what the company's assets earned, from whom, over time, read from the metering
//! projection (so an execution shows up as soon as it is metered). Periods are the company's
//! local days, Monday weeks, months and quarters; `start_date` and `end_date` are local dates
//! (both included; the last 30 days by default). Revenue is the seller's share in credits, and
//! in USD at the configured credit price. Only live sales by other companies count: the
//! seller's own runs and test-mode executions never do.

use super::companies::scoped;
use super::usage::local_midnight;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use projections::seller::{
    new_in, periods, ranked, Bucket, NewBuyers, Segment, SellerGroup, SellerQuery, SellerRow,
    SellerSort,
};
use projections::UsageStore;
use std::collections::HashMap;
use std::sync::Arc;
use web::roles::Action;
use web::{market, Caller};

const DEFAULT_DAYS: u64 = 30;
/// The longest range a read covers (three years of days).
const MAX_DAYS: i64 = 1_096;
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

/// A parsed seller analytics request.
struct Ask {
    company_id: String,
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
    bucket: Bucket,
    limit: usize,
    sort: SellerSort,
    ascending: bool,
    segment: Option<Segment>,
    query: SellerQuery,
    per_usd: f64,
}

fn date(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<NaiveDate>> {
    q.get(name)
        .map(|v| {
            NaiveDate::parse_from_str(v.get(..10).unwrap_or(v), "%Y-%m-%d").map_err(|_| {
                ApiError::bad_request(format!("{name} {v:?} is not a date (YYYY-MM-DD)"))
            })
        })
        .transpose()
}

fn today(tz: Tz) -> NaiveDate {
    tz.timestamp_millis_opt(now_ms())
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// The inclusive local date range of the request.
fn range(q: &HashMap<String, String>, tz: Tz) -> ApiResult<(NaiveDate, NaiveDate)> {
    let last = date(q, "end_date")?.unwrap_or_else(|| today(tz));
    let first = match date(q, "start_date")? {
        Some(d) => d,
        None => last
            .checked_sub_days(chrono::Days::new(DEFAULT_DAYS - 1))
            .unwrap_or(last),
    };
    if first > last {
        return Err(ApiError::bad_request("start_date is after end_date"));
    }
    if (last - first).num_days() >= MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "the range covers more than {MAX_DAYS} days"
        )));
    }
    Ok((first, last))
}

fn choice<T>(
    q: &HashMap<String, String>,
    names: &[&str],
    parse: fn(&str) -> Option<T>,
    default: T,
    allowed: &str,
) -> ApiResult<T> {
    let Some((name, v)) = names.iter().find_map(|n| q.get(*n).map(|v| (*n, v))) else {
        return Ok(default);
    };
    parse(v).ok_or_else(|| ApiError::bad_request(format!("{name} {v:?} is not one of {allowed}")))
}

fn limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            }),
    }
}

fn segment(s: &str) -> Option<Segment> {
    match s {
        "asset" => Some(Segment::Asset),
        "customer" | "buyer" => Some(Segment::Buyer),
        _ => None,
    }
}

/// Checks the caller may read the company's sales and parses the query.
async fn ask(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Ask> {
    let c = scoped(s, caller, company_id, Action::ReadSales).await?;
    let tz: Tz = c.state.timezone.parse().unwrap_or(chrono_tz::UTC);
    let (first, last) = range(q, tz)?;
    let from = local_midnight(first, tz);
    let to = local_midnight(last.succ_opt().unwrap_or(last), tz);
    let ascending = choice(
        q,
        &["sort_order"],
        |v| match v {
            "asc" => Some(true),
            "desc" => Some(false),
            _ => None,
        },
        false,
        "asc, desc",
    )?;
    Ok(Ask {
        company_id: company_id.to_string(),
        tz,
        first,
        last,
        bucket: choice(
            q,
            &["group_by", "period"],
            Bucket::parse,
            Bucket::Day,
            "day, week, month, quarter",
        )?,
        limit: limit(q)?,
        sort: choice(
            q,
            &["sort_by"],
            SellerSort::parse,
            SellerSort::Revenue,
            "revenue, executions, customers, error_rate, last_sale",
        )?,
        ascending,
        segment: choice(
            q,
            &["segment_by"],
            |v| segment(v).map(Some),
            None,
            "asset, customer",
        )?,
        query: SellerQuery {
            seller_company_id: company_id.to_string(),
            from_ms: from,
            to_ms: to,
            tz: projections::offset_segments(tz, from, to),
        },
        per_usd: s.cfg.credits_per_usd.max(1) as f64,
    })
}

fn usage(s: &IngestState) -> ApiResult<&dyn UsageStore> {
    s.usage
        .as_deref()
        .ok_or_else(|| ApiError::not_implemented("this process has no usage store"))
}

impl Ask {
    fn period_json(&self) -> Value {
        json!({
            "start_date": self.first.format("%Y-%m-%d").to_string(),
            "end_date": self.last.format("%Y-%m-%d").to_string(),
            "start": rfc3339(self.query.from_ms),
            "end": rfc3339(self.query.to_ms),
            "timezone": self.tz.name(),
            "group_by": self.bucket.name(),
        })
    }

    fn usd(&self, credits: i64) -> f64 {
        credits as f64 / self.per_usd
    }

    /// The figures of one group of sales, `new` of its customers buying for the first time.
    fn figures(&self, r: &SellerRow, new: Option<u64>) -> Value {
        let mut v = json!({
            "revenue_credits": r.revenue,
            "revenue_usd": self.usd(r.revenue),
            "spent_credits": r.spent,
            "executions": r.executions,
            "succeeded": r.succeeded,
            "failed": r.failed(),
            "error_rate": r.error_rate(),
            "customers": r.buyers,
            "avg_duration_ms": r.avg_duration_ms(),
        });
        if let Some(new) = new {
            v["new_customers"] = json!(new);
            v["returning_customers"] = json!(r.buyers.saturating_sub(new));
        }
        v
    }

    /// One entry per period of the range (quiet ones as zeros), each with its figures.
    fn series(&self, rows: &[SellerRow], new: Option<&NewBuyers>) -> Vec<Value> {
        let zero = SellerRow::default();
        let by_period: HashMap<i64, &SellerRow> = rows.iter().map(|r| (r.period_ms, r)).collect();
        let as_local = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp_millis()
        };
        let end = self.last.succ_opt().unwrap_or(self.last);
        periods(self.bucket, as_local(self.first), as_local(end))
            .into_iter()
            .map(|p| {
                let r = by_period.get(&p).copied().unwrap_or(&zero);
                let mut v = self.figures(r, new.map(|n| new_in(n, p)));
                v["period_start"] = json!(local_date(p));
                v
            })
            .collect()
    }

    async fn rows(
        &self,
        s: &IngestState,
        period: Option<Bucket>,
        by: Option<Segment>,
    ) -> ApiResult<Vec<SellerRow>> {
        Ok(usage(s)?
            .seller_rows(&self.query, SellerGroup { period, by })
            .await?)
    }

    async fn totals(&self, s: &IngestState) -> ApiResult<Value> {
        let total = self.rows(s, None, None).await?.pop().unwrap_or_default();
        let new = usage(s)?.seller_new_buyers(&self.query, None).await?;
        Ok(self.figures(&total, Some(new_in(&new, 0))))
    }
}

/// A local period start (local midnight written as UTC epoch ms) as `YYYY-MM-DD`.
fn local_date(local_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(local_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The names of the company's assets, by id.
async fn asset_names(s: &IngestState, company_id: &str) -> ApiResult<HashMap<String, Value>> {
    Ok(super::assets::own_assets(s, company_id)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), json!({"name": a.name, "slug": a.slug})))
        .collect())
}

fn keyed(
    id_field: &str,
    id: &str,
    mut figures: Value,
    names: Option<&HashMap<String, Value>>,
) -> Value {
    figures[id_field] = json!(id);
    if let Some(n) = names.and_then(|n| n.get(id)) {
        figures["name"] = n["name"].clone();
        figures["slug"] = n["slug"].clone();
    }
    figures
}

/// `GET /companies/{company_id}/analytics/dashboard`: totals, the series, and the top assets
/// and customers of the range.
pub async fn dashboard(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let a = ask(&s, &caller, &company_id, &q).await?;
    // The reads are independent: run together, the dashboard waits for the slowest only.
    let new = async {
        ApiResult::Ok(
            usage(&s)?
                .seller_new_buyers(&a.query, Some(a.bucket))
                .await?,
        )
    };
    let (series_rows, new, names, summary, by_asset, by_buyer) = tokio::try_join!(
        a.rows(&s, Some(a.bucket), None),
        new,
        asset_names(&s, &company_id),
        a.totals(&s),
        a.rows(&s, None, Some(Segment::Asset)),
        a.rows(&s, None, Some(Segment::Buyer)),
    )?;
    let top = |rows: Vec<SellerRow>, field: &str, names: Option<&HashMap<String, Value>>| {
        ranked(rows, a.sort, a.ascending, a.limit)
            .iter()
            .map(|r| keyed(field, &r.key, a.figures(r, None), names))
            .collect::<Vec<_>>()
    };
    let data = json!({
        "company_id": a.company_id,
        "period": a.period_json(),
        "summary": summary,
        "series": a.series(&series_rows, Some(&new)),
        "top_assets": top(by_asset, "asset_id", Some(&names)),
        "top_customers": top(by_buyer, "company_id", None),
    });
    Ok(market("Seller dashboard retrieved", data).into_response())
}

/// `GET /companies/{company_id}/analytics/sales`: revenue and executions per period, split by
/// asset or customer with `segment_by`.
pub async fn sales(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let a = ask(&s, &caller, &company_id, &q).await?;
    let rows = a.rows(&s, Some(a.bucket), None).await?;
    let mut series = a.series(&rows, None);
    if let Some(by) = a.segment {
        let field = match by {
            Segment::Asset => "asset_id",
            Segment::Buyer => "company_id",
        };
        let names = match by {
            Segment::Asset => Some(asset_names(&s, &company_id).await?),
            Segment::Buyer => None,
        };
        // Each period's segments, found by the date the series shows for it.
        let mut split: HashMap<String, Vec<SellerRow>> = HashMap::new();
        for r in a.rows(&s, Some(a.bucket), Some(by)).await? {
            split.entry(local_date(r.period_ms)).or_default().push(r);
        }
        for point in &mut series {
            let p = point["period_start"].as_str().unwrap_or_default();
            let mine = split.remove(p).unwrap_or_default();
            point["segments"] = json!(ranked(mine, a.sort, a.ascending, a.limit)
                .iter()
                .map(|r| keyed(field, &r.key, a.figures(r, None), names.as_ref()))
                .collect::<Vec<_>>());
        }
    }
    let data = json!({
        "company_id": a.company_id,
        "period": a.period_json(),
        "segment_by": a.segment.map(|s| match s { Segment::Asset => "asset", Segment::Buyer => "customer" }),
        "totals": a.totals(&s).await?,
        "series": series,
    });
    Ok(market("Sales retrieved", data).into_response())
}

/// `GET /companies/{company_id}/analytics/customers`: new and returning customers per period,
/// and the customers of the range ranked (`first_purchase` is their first purchase ever).
pub async fn customers(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let a = ask(&s, &caller, &company_id, &q).await?;
    let store = usage(&s)?;
    let rows = a.rows(&s, Some(a.bucket), None).await?;
    let new = store.seller_new_buyers(&a.query, Some(a.bucket)).await?;
    let ever: HashMap<String, i64> = store
        .seller_rows(
            &SellerQuery::all_time(&company_id),
            SellerGroup {
                period: None,
                by: Some(Segment::Buyer),
            },
        )
        .await?
        .into_iter()
        .map(|r| (r.key, r.first_ms))
        .collect();
    let buyers = a.rows(&s, None, Some(Segment::Buyer)).await?;
    let total = buyers.len();
    let list: Vec<Value> = ranked(buyers, a.sort, a.ascending, a.limit)
        .iter()
        .map(|r| {
            let first = ever.get(&r.key).copied().unwrap_or(r.first_ms);
            let mut v = keyed("company_id", &r.key, a.figures(r, None), None);
            v["first_purchase"] = json!(rfc3339(first));
            v["last_purchase"] = json!(rfc3339(r.last_ms));
            v["is_new"] = json!(first >= a.query.from_ms);
            v
        })
        .collect();
    let data = json!({
        "company_id": a.company_id,
        "period": a.period_json(),
        "totals": a.totals(&s).await?,
        "series": a.series(&rows, Some(&new)),
        "customers": list,
        "customer_count": total,
    });
    Ok(market("Customers retrieved", data).into_response())
}

/// `GET /companies/{company_id}/analytics/assets`: each asset's performance over the range
/// (every asset of the company, unsold ones as zeros), ranked.
pub async fn assets(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let a = ask(&s, &caller, &company_id, &q).await?;
    let names = asset_names(&s, &company_id).await?;
    let mut rows = a.rows(&s, None, Some(Segment::Asset)).await?;
    for id in names.keys() {
        if !rows.iter().any(|r| &r.key == id) {
            rows.push(SellerRow {
                key: id.clone(),
                ..SellerRow::default()
            });
        }
    }
    let count = rows.len();
    let list: Vec<Value> = ranked(rows, a.sort, a.ascending, a.limit)
        .iter()
        .map(|r| {
            let mut v = keyed("asset_id", &r.key, a.figures(r, None), Some(&names));
            v["last_sale"] = if r.executions > 0 {
                json!(rfc3339(r.last_ms))
            } else {
                Value::Null
            };
            v
        })
        .collect();
    let data = json!({
        "company_id": a.company_id,
        "period": a.period_json(),
        "asset_count": count,
        "assets": list,
    });
    Ok(market("Asset performance retrieved", data).into_response())
}

/// `GET /companies/{company_id}/analytics/metrics`: all-time counts.
pub async fn metrics(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadSales).await?;
    let store = usage(&s)?;
    let all = SellerQuery::all_time(&company_id);
    let (total, by_asset) = tokio::try_join!(
        store.seller_rows(
            &all,
            SellerGroup {
                period: None,
                by: None
            }
        ),
        store.seller_rows(
            &all,
            SellerGroup {
                period: None,
                by: Some(Segment::Asset),
            },
        ),
    )?;
    let total = total.into_iter().next().unwrap_or_default();
    let sold = by_asset.len();
    let listed = super::assets::own_assets(&s, &company_id).await?.len();
    let per_usd = s.cfg.credits_per_usd.max(1) as f64;
    let sold_ever = total.executions > 0;
    let data = json!({
        "company_id": company_id,
        "total_revenue_credits": total.revenue,
        "total_revenue_usd": total.revenue as f64 / per_usd,
        "total_executions": total.executions,
        "succeeded": total.succeeded,
        "failed": total.failed(),
        "error_rate": total.error_rate(),
        "total_customers": total.buyers,
        "assets": listed,
        "assets_sold": sold,
        "first_sale": sold_ever.then(|| rfc3339(total.first_ms)),
        "last_sale": sold_ever.then(|| rfc3339(total.last_ms)),
    });
    Ok(market("Seller metrics retrieved", data).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_range_is_two_local_dates_in_order_and_bounded() {
        let tz = chrono_tz::UTC;
        let (a, b) = range(
            &q(&[("start_date", "2026-03-01"), ("end_date", "2026-03-31")]),
            tz,
        )
        .unwrap_or_default();
        assert_eq!((b - a).num_days(), 30);
        let (a, b) = range(&q(&[("end_date", "2026-03-31T10:00:00Z")]), tz).unwrap_or_default();
        assert_eq!((b - a).num_days(), 29, "30 days by default");
        for bad in [
            q(&[("start_date", "2026-04-01"), ("end_date", "2026-03-01")]),
            q(&[("start_date", "yesterday")]),
            q(&[("start_date", "2020-01-01"), ("end_date", "2026-01-01")]),
        ] {
            assert!(range(&bad, tz).is_err());
        }
        assert!(limit(&q(&[("limit", "0")])).is_err());
        assert!(limit(&q(&[("limit", "101")])).is_err());
        assert_eq!(limit(&q(&[])).ok(), Some(DEFAULT_LIMIT));
    }
}
