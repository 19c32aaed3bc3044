//! The comparison period of a dashboard query: `compare_mode` (`none`, `previous_period`,
//! `previous_year`, `custom` with `compare_start_date` and `compare_end_date`), and the
//! `compare` block that tells a client which two ranges it is looking at.

use crate::params::{bad, date, Params};
use crate::period::Period;
use chrono::Months;
use serde_json::{json, Value};
use web::ApiResult;

/// How the comparison period was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    PreviousPeriod,
    PreviousYear,
    Custom,
}

impl CompareMode {
    fn name(self) -> &'static str {
        match self {
            CompareMode::PreviousPeriod => "previous_period",
            CompareMode::PreviousYear => "previous_year",
            CompareMode::Custom => "custom",
        }
    }
}

/// A comparison asked for: its mode and its period (same timezone as the primary one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub mode: CompareMode,
    pub period: Period,
}

impl Comparison {
    /// The `compare` block: `{mode, primary_range: [start, end], comparison_range: [start, end]}`.
    pub fn metadata(&self, primary: &Period) -> Value {
        json!({
            "mode": self.mode.name(),
            "primary_range": [primary.start.to_string(), primary.end.to_string()],
            "comparison_range": [self.period.start.to_string(), self.period.end.to_string()],
        })
    }
}

/// The comparison the query asks for, or `None` (`compare_mode` absent or `none`). A custom
/// range may be at most twice as long as the primary one.
pub fn comparison(params: &Params, primary: &Period) -> ApiResult<Option<Comparison>> {
    let mode = match params.get("compare_mode").map(String::as_str) {
        None | Some("") | Some("none") => return Ok(None),
        Some("previous_period") => CompareMode::PreviousPeriod,
        Some("previous_year") => CompareMode::PreviousYear,
        Some("custom") => CompareMode::Custom,
        Some(other) => {
            return Err(bad(
                "compare_mode",
                format!(
                    "compare_mode must be none, previous_period, previous_year or custom, not {other:?}"
                ),
            ))
        }
    };
    let period = match mode {
        CompareMode::PreviousPeriod => primary.previous(),
        CompareMode::PreviousYear => {
            let year_back = |d: chrono::NaiveDate| {
                d.checked_sub_months(Months::new(12))
                    .ok_or_else(|| bad("start_date", "the range has no previous year"))
            };
            Period {
                tz: primary.tz,
                start: year_back(primary.start)?,
                end: year_back(primary.end)?,
            }
        }
        CompareMode::Custom => {
            let start = date(params, "compare_start_date")?.ok_or_else(|| {
                bad(
                    "compare_start_date",
                    "compare_start_date is required with compare_mode=custom",
                )
            })?;
            let end = date(params, "compare_end_date")?.ok_or_else(|| {
                bad(
                    "compare_end_date",
                    "compare_end_date is required with compare_mode=custom",
                )
            })?;
            if end < start {
                return Err(bad(
                    "compare_end_date",
                    "compare_end_date is before compare_start_date",
                ));
            }
            Period {
                tz: primary.tz,
                start,
                end,
            }
        }
    };
    if period.days() > 2 * primary.days() {
        return Err(bad(
            "compare_start_date",
            "the comparison range may be at most twice as long as the primary range",
        ));
    }
    Ok(Some(Comparison { mode, period }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use chrono_tz::Tz;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn primary() -> Period {
        Period {
            tz: Tz::UTC,
            start: d("2028-02-22"),
            end: d("2028-02-29"),
        }
    }

    fn ask(pairs: &[(&str, &str)]) -> ApiResult<Option<Comparison>> {
        let params: Params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        comparison(&params, &primary())
    }

    fn range(c: Option<Comparison>) -> Option<(NaiveDate, NaiveDate)> {
        c.map(|c| (c.period.start, c.period.end))
    }

    #[test]
    fn modes_give_their_ranges() {
        assert_eq!(ask(&[]).ok().flatten(), None);
        assert_eq!(ask(&[("compare_mode", "none")]).ok().flatten(), None);
        assert_eq!(
            range(ask(&[("compare_mode", "previous_period")]).ok().flatten()),
            Some((d("2028-02-14"), d("2028-02-21")))
        );
        // A leap day a year back is the last day of February.
        assert_eq!(
            range(ask(&[("compare_mode", "previous_year")]).ok().flatten()),
            Some((d("2027-02-22"), d("2027-02-28")))
        );
        let custom = [
            ("compare_mode", "custom"),
            ("compare_start_date", "2027-12-01"),
            ("compare_end_date", "2027-12-10"),
        ];
        let c = ask(&custom).ok().flatten();
        assert_eq!(range(c), Some((d("2027-12-01"), d("2027-12-10"))));
        let meta = c.map(|c| c.metadata(&primary()));
        assert_eq!(
            meta,
            Some(json!({
                "mode": "custom",
                "primary_range": ["2028-02-22", "2028-02-29"],
                "comparison_range": ["2027-12-01", "2027-12-10"],
            }))
        );
    }

    #[test]
    fn bad_comparisons_are_refused() {
        assert!(ask(&[("compare_mode", "last_week")]).is_err());
        assert!(ask(&[("compare_mode", "custom")]).is_err());
        assert!(ask(&[
            ("compare_mode", "custom"),
            ("compare_start_date", "2027-12-10"),
            ("compare_end_date", "2027-12-01"),
        ])
        .is_err());
        assert!(ask(&[
            ("compare_mode", "custom"),
            ("compare_start_date", "2027-01-01"),
            ("compare_end_date", "2027-12-31"),
        ])
        .is_err());
    }
}
