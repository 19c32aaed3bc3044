//! Seller analytics over metered usage: what a seller's assets earned, for whom, over time.
//! The stores group the seller's live executions by a local period and/or an asset or buyer
//! ([`SellerGroup`]) and count each buyer's first purchase; the reports are built from those
//! plain rows by the functions here. A seller's own runs of its assets are not sales, and
//! test-mode executions never count.

use crate::analytics::OffsetSegment;
use serde::Serialize;

/// A period of seller analytics, in the seller's time zone (weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Week,
    Month,
    Quarter,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "quarter" => Self::Quarter,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
        }
    }
}

/// How a seller read groups executions: by local period, by asset or buyer, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SellerGroup {
    pub period: Option<Bucket>,
    pub by: Option<Segment>,
}

/// A breakdown of seller analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Asset,
    Buyer,
}

/// A seller's live executions in `[from_ms, to_ms)`, with the local offsets of the seller's
/// time zone over the range (empty for UTC, and for reads with no period).
#[derive(Debug, Clone)]
pub struct SellerQuery {
    pub seller_company_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub tz: Vec<OffsetSegment>,
}

impl SellerQuery {
    /// Every execution the seller ever sold.
    pub fn all_time(seller_company_id: &str) -> Self {
        Self {
            seller_company_id: seller_company_id.to_string(),
            from_ms: 0,
            to_ms: i64::MAX,
            tz: Vec::new(),
        }
    }
}

/// One group of a seller's executions. `period_ms` is the local start of the period as epoch
/// ms (local midnight written as if UTC), 0 with no period; `key` is the asset or buyer id,
/// empty with no segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SellerRow {
    pub period_ms: i64,
    pub key: String,
    pub executions: u64,
    pub succeeded: u64,
    /// The seller's share of what the buyers paid.
    pub revenue: i64,
    /// What the buyers paid.
    pub spent: i64,
    pub buyers: u64,
    pub duration_ms_sum: f64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl SellerRow {
    pub fn failed(&self) -> u64 {
        self.executions.saturating_sub(self.succeeded)
    }

    /// Failed over all executions (0 with none).
    pub fn error_rate(&self) -> f64 {
        if self.executions == 0 {
            return 0.0;
        }
        self.failed() as f64 / self.executions as f64
    }

    pub fn avg_duration_ms(&self) -> f64 {
        if self.executions == 0 {
            return 0.0;
        }
        self.duration_ms_sum / self.executions as f64
    }
}

/// How many buyers made their first purchase from the seller in each period (`period_ms` as
/// in [`SellerRow`]; 0 with no period).
pub type NewBuyers = Vec<(i64, u64)>;

/// The new buyers of `period_ms` in `new` (0 when none started then).
pub fn new_in(new: &NewBuyers, period_ms: i64) -> u64 {
    new.iter()
        .find(|(p, _)| *p == period_ms)
        .map_or(0, |(_, n)| *n)
}

/// What rows are ranked by in a seller read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SellerSort {
    Revenue,
    Executions,
    Buyers,
    ErrorRate,
    LastSale,
}

impl SellerSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "revenue" => Self::Revenue,
            "executions" => Self::Executions,
            "buyers" | "customers" => Self::Buyers,
            "error_rate" => Self::ErrorRate,
            "last_sale" | "last_purchase" => Self::LastSale,
            _ => return None,
        })
    }
}

/// `rows` ranked by `sort` (descending unless `ascending`; ties by key), at most `limit`.
pub fn ranked(
    mut rows: Vec<SellerRow>,
    sort: SellerSort,
    ascending: bool,
    limit: usize,
) -> Vec<SellerRow> {
    let value = |r: &SellerRow| -> f64 {
        match sort {
            SellerSort::Revenue => r.revenue as f64,
            SellerSort::Executions => r.executions as f64,
            SellerSort::Buyers => r.buyers as f64,
            SellerSort::ErrorRate => r.error_rate(),
            SellerSort::LastSale => r.last_ms as f64,
        }
    };
    rows.sort_by(|a, b| {
        let order = value(a).total_cmp(&value(b));
        let order = if ascending { order } else { order.reverse() };
        order.then_with(|| a.key.cmp(&b.key))
    });
    rows.truncate(limit);
    rows
}

/// Every period start from the one holding `from_local_ms` up to `to_local_ms` (exclusive),
/// as local epoch ms: the series of a report has one entry per period, quiet ones included.
pub fn periods(bucket: Bucket, from_local_ms: i64, to_local_ms: i64) -> Vec<i64> {
    use chrono::{Datelike, Months, NaiveDate};
    let Some(start) = chrono::DateTime::from_timestamp_millis(from_local_ms) else {
        return Vec::new();
    };
    let day = start.date_naive();
    let mut p: NaiveDate = match bucket {
        Bucket::Day => day,
        Bucket::Week => {
            day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()))
        }
        Bucket::Month => day.with_day(1).unwrap_or(day),
        Bucket::Quarter => {
            NaiveDate::from_ymd_opt(day.year(), (day.month0() / 3) * 3 + 1, 1).unwrap_or(day)
        }
    };
    let mut out = Vec::new();
    loop {
        let ms = p
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp_millis();
        if ms >= to_local_ms || out.len() > 10_000 {
            return out;
        }
        out.push(ms);
        let next = match bucket {
            Bucket::Day => p.succ_opt(),
            Bucket::Week => p.checked_add_days(chrono::Days::new(7)),
            Bucket::Month => p.checked_add_months(Months::new(1)),
            Bucket::Quarter => p.checked_add_months(Months::new(3)),
        };
        match next {
            Some(n) => p = n,
            None => return out,
        }
    }
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
    fn periods_cover_the_range_from_the_period_holding_its_start() {
        let from = ms("2026-03-04T10:00:00Z"); // a Wednesday
        let to = ms("2026-04-02T00:00:00Z");
        assert_eq!(periods(Bucket::Day, from, to).len(), 29);
        assert_eq!(
            periods(Bucket::Week, from, to)[..2],
            [ms("2026-03-02T00:00:00Z"), ms("2026-03-09T00:00:00Z")]
        );
        assert_eq!(
            periods(Bucket::Month, from, to),
            [ms("2026-03-01T00:00:00Z"), ms("2026-04-01T00:00:00Z")]
        );
        assert_eq!(
            periods(Bucket::Quarter, from, to),
            [ms("2026-01-01T00:00:00Z"), ms("2026-04-01T00:00:00Z")]
        );
    }

    #[test]
    fn rows_rank_by_the_chosen_figure_then_key() {
        let row = |key: &str, revenue: i64, executions: u64, succeeded: u64| SellerRow {
            key: key.into(),
            revenue,
            executions,
            succeeded,
            ..SellerRow::default()
        };
        let rows = vec![row("a", 5, 4, 4), row("b", 9, 2, 1), row("c", 5, 8, 2)];
        let keys = |r: Vec<SellerRow>| r.into_iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(
            keys(ranked(rows.clone(), SellerSort::Revenue, false, 10)),
            ["b", "a", "c"]
        );
        assert_eq!(
            keys(ranked(rows.clone(), SellerSort::ErrorRate, false, 2)),
            ["c", "b"]
        );
        assert_eq!(
            keys(ranked(rows, SellerSort::Executions, true, 10)),
            ["b", "a", "c"]
        );
        assert_eq!(row("x", 0, 4, 1).error_rate(), 0.75);
        assert_eq!(new_in(&vec![(7, 2)], 7), 2);
        assert_eq!(new_in(&vec![(7, 2)], 8), 0);
    }
}
