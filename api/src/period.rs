//! Date ranges in a website's timezone: `start_date`..=`end_date` as local calendar days,
//! turned into UTC instants, and the UTC-offset segments (DST changes) inside a range.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// A span of local calendar days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub tz: Tz,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The UTC instant (ms) of a local wall-clock time; in a DST gap, the first instant after it.
pub fn local_to_utc_ms(tz: Tz, t: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => d.timestamp_millis(),
        LocalResult::Ambiguous(a, _) => a.timestamp_millis(),
        LocalResult::None => (1..=24)
            .find_map(|h| {
                tz.from_local_datetime(&(t + Duration::minutes(30 * h)))
                    .earliest()
            })
            .map(|d| d.timestamp_millis())
            .unwrap_or_else(|| t.and_utc().timestamp_millis()),
    }
}

fn midnight(d: NaiveDate) -> NaiveDateTime {
    d.and_time(NaiveTime::MIN)
}

impl Period {
    /// Inclusive start and exclusive end, in UTC ms.
    pub fn utc_bounds(&self) -> (i64, i64) {
        let from = local_to_utc_ms(self.tz, midnight(self.start));
        let to = local_to_utc_ms(self.tz, midnight(self.end + Duration::days(1)));
        (from, to)
    }

    /// How many calendar days the period covers.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    /// The period of the same number of days just before this one.
    pub fn previous(&self) -> Period {
        let days = self.days();
        Period {
            tz: self.tz,
            start: self.start - Duration::days(days),
            end: self.start - Duration::days(1),
        }
    }

    /// Local bucket starts (as naive wall-clock times) covering the period.
    pub fn buckets(&self, granularity: projections::Granularity) -> Vec<NaiveDateTime> {
        use projections::Granularity::*;
        let mut out = Vec::new();
        match granularity {
            Day => {
                let mut d = self.start;
                while d <= self.end {
                    out.push(midnight(d));
                    d += Duration::days(1);
                }
            }
            Hour => {
                let mut t = midnight(self.start);
                let end = midnight(self.end + Duration::days(1));
                while t < end {
                    // Skip wall-clock hours that do not exist (spring-forward gap).
                    if self.tz.from_local_datetime(&t).earliest().is_some() {
                        out.push(t);
                    }
                    t += Duration::hours(1);
                }
            }
            Week => {
                let back = i64::from(self.start.weekday().num_days_from_monday());
                let mut d = self.start - Duration::days(back);
                while d <= self.end {
                    out.push(midnight(d));
                    d += Duration::days(7);
                }
            }
            Month => {
                let mut d = self.start.with_day(1).unwrap_or(self.start);
                while d <= self.end {
                    out.push(midnight(d));
                    d = d
                        .checked_add_months(chrono::Months::new(1))
                        .unwrap_or(NaiveDate::MAX);
                }
            }
        }
        out
    }
}

pub use projections::offset_segments;

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn dst_day_in_berlin_is_23_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        let p = Period {
            tz,
            start: date("2026-03-29"),
            end: date("2026-03-29"),
        };
        let (from, to) = p.utc_bounds();
        assert_eq!(to - from, 23 * 3_600_000);
        let segs = offset_segments(tz, from, to);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].offset_ms, 3_600_000);
        assert_eq!(segs[1].offset_ms, 7_200_000);
        // 2026-03-29T01:00:00Z
        assert_eq!(segs[1].from_ms, 1_774_746_000_000);
        assert_eq!(p.buckets(projections::Granularity::Hour).len(), 23);
    }

    #[test]
    fn previous_period_has_same_length() {
        let p = Period {
            tz: Tz::UTC,
            start: date("2026-03-10"),
            end: date("2026-03-16"),
        };
        let prev = p.previous();
        assert_eq!(
            (prev.start, prev.end),
            (date("2026-03-03"), date("2026-03-09"))
        );
        assert_eq!(p.buckets(projections::Granularity::Day).len(), 7);
        assert_eq!(p.buckets(projections::Granularity::Month).len(), 1);
    }
}
