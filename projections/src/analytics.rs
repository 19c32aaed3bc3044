//! The analytics projection's contract: the stored event row, the dashboard queries, and the
//! two traits (writer, reader) every analytics backend implements.

use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use serde::Serialize;

/// One event as stored for dashboards (an enriched event plus its visitor and session keys).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredEvent {
    pub event_id: u128,
    pub website_id: String,
    pub ts_ms: i64,
    pub received_at_ms: i64,
    pub event_type: String,
    pub page: String,
    pub hostname: Option<String>,
    pub referrer_domain: Option<String>,
    pub event_name: Option<String>,
    pub event_data: Option<String>,
    pub screen: Option<String>,
    pub language: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub device: Option<String>,
    pub visitor: u64,
    pub session: u64,
    pub is_bot: bool,
}

/// The last known span of one session, used to warm the sessionizer after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTail {
    pub website_id: String,
    pub visitor: u64,
    pub session: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// A dimension dashboards can group or filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Page,
    Referrer,
    Country,
    Region,
    City,
    Browser,
    Os,
    Device,
    Screen,
    EventName,
    Language,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    /// The host name of the page's URL (filters compare it in lower case).
    Hostname,
    /// The page of a session's first pageview (session-level: not a filter).
    EntryPage,
    /// The page of a session's last pageview (session-level: not a filter).
    ExitPage,
}

impl Dimension {
    pub const ALL: [Dimension; 17] = [
        Dimension::Page,
        Dimension::Referrer,
        Dimension::Country,
        Dimension::Region,
        Dimension::City,
        Dimension::Browser,
        Dimension::Os,
        Dimension::Device,
        Dimension::Screen,
        Dimension::EventName,
        Dimension::Language,
        Dimension::UtmSource,
        Dimension::UtmMedium,
        Dimension::UtmCampaign,
        Dimension::Hostname,
        Dimension::EntryPage,
        Dimension::ExitPage,
    ];

    /// The API name (`metrics?type=…`, `filter_…`).
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Page => "page",
            Dimension::Referrer => "referrer",
            Dimension::Country => "country",
            Dimension::Region => "region",
            Dimension::City => "city",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
            Dimension::Device => "device",
            Dimension::Screen => "screen",
            Dimension::EventName => "event_name",
            Dimension::Language => "language",
            Dimension::UtmSource => "utm_source",
            Dimension::UtmMedium => "utm_medium",
            Dimension::UtmCampaign => "utm_campaign",
            Dimension::Hostname => "hostname",
            Dimension::EntryPage => "entry_page",
            Dimension::ExitPage => "exit_page",
        }
    }

    /// Whether the dimension describes sessions rather than events (entry and exit pages).
    pub fn is_session_level(self) -> bool {
        matches!(self, Dimension::EntryPage | Dimension::ExitPage)
    }

    /// The stored column. A closed set: never built from user input.
    pub fn column(self) -> &'static str {
        match self {
            Dimension::Referrer => "referrer_domain",
            Dimension::EntryPage | Dimension::ExitPage => "page",
            other => other.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.name() == s)
    }

    /// How a breakdown by this dimension is ordered, over the result columns `value`,
    /// `visitors`, `pageviews` and `events`: pages by page views, event names by occurrences,
    /// the rest by visitors (as the peer does); ties by value, so pages are stable.
    pub fn breakdown_order(self) -> &'static str {
        match self {
            Dimension::Page => "pageviews DESC, visitors DESC, value",
            Dimension::EventName => "events DESC, visitors DESC, value",
            _ => "visitors DESC, pageviews DESC, value",
        }
    }
}

/// The breakdown value of events without a referrer, and the filter value that selects them.
pub const DIRECT: &str = "(direct)";

/// How a `filter_…` value selects events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMatch {
    /// The column equals the value.
    Equals,
    /// The column contains the value (pages: `filter_page=/blog` matches `/blog/post`).
    Contains,
    /// The column is empty (`filter_referrer=(direct)`); the value is not bound.
    Missing,
}

impl FilterMatch {
    pub fn of(dim: Dimension, value: &str) -> FilterMatch {
        match dim {
            Dimension::Page => FilterMatch::Contains,
            Dimension::Referrer if value == DIRECT => FilterMatch::Missing,
            _ => FilterMatch::Equals,
        }
    }
}

/// Which events a dashboard query covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub website_id: String,
    /// Inclusive start, UTC epoch ms.
    pub from_ms: i64,
    /// Exclusive end, UTC epoch ms.
    pub to_ms: i64,
    pub include_bots: bool,
    /// Filters, all of which must hold, each matching as [`FilterMatch::of`] says.
    pub filters: Vec<(Dimension, String)>,
}

/// Headline numbers for a period.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Totals {
    pub pageviews: u64,
    pub visitors: u64,
    pub sessions: u64,
    pub bounces: u64,
    pub avg_duration_seconds: f64,
}

/// Time-series bucket granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    /// Weeks from Monday (retention cohorts).
    Week,
    Month,
}

/// From `from_ms` on (UTC), local time is UTC plus `offset_ms` (until the next segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSegment {
    pub from_ms: i64,
    pub offset_ms: i64,
}

/// The local-time offset over `tz` as (before this UTC ms, use this offset) steps plus the
/// offset after the last step: each backend renders it in its own SQL (`CASE`, `multiIf`).
pub fn offset_steps(tz: &[OffsetSegment]) -> (Vec<(i64, i64)>, i64) {
    let Some((first, rest)) = tz.split_first() else {
        return (Vec::new(), 0);
    };
    let mut steps = Vec::with_capacity(rest.len());
    let mut current = first.offset_ms;
    for seg in rest {
        steps.push((seg.from_ms, current));
        current = seg.offset_ms;
    }
    (steps, current)
}

/// One time-series bucket, keyed by its start in local wall-clock time expressed as epoch ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPoint {
    pub local_start_ms: i64,
    pub pageviews: u64,
    pub visitors: u64,
    /// Every event in the bucket, page views included.
    pub events: u64,
}

/// One row of a breakdown by a dimension. For entry and exit pages, `pageviews` and `events`
/// count the sessions that entered or left there. `sessions` are those with an event of this
/// value; `bounces` and `avg_duration_seconds` describe those sessions as a whole (within the
/// scope), as the headline totals do.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MetricRow {
    pub value: String,
    pub visitors: u64,
    pub pageviews: u64,
    pub events: u64,
    pub sessions: u64,
    pub bounces: u64,
    pub avg_duration_seconds: f64,
}

/// The realtime window's counts (bots left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveCounts {
    pub visitors: u64,
    pub events: u64,
}

/// A recent event for the realtime view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentEvent {
    pub timestamp_ms: i64,
    pub event_type: String,
    pub page: String,
    pub event_name: Option<String>,
    pub referrer_domain: Option<String>,
    pub country: Option<String>,
    pub browser: Option<String>,
    pub device: Option<String>,
}

/// Where a page of the session list ends: sessions sort by last event time, then session id,
/// both descending; the next page starts after this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub last_ms: i64,
    pub session: u64,
}

/// One session as the session list shows it, over its events in the scope's date range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionSummary {
    pub session: u64,
    pub visitor: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub pageviews: u64,
    /// Every event of the session, page views included.
    pub events: u64,
    pub entry_page: Option<String>,
    pub exit_page: Option<String>,
    pub country: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
}

impl SessionSummary {
    pub fn key(&self) -> SessionKey {
        SessionKey {
            last_ms: self.last_ms,
            session: self.session,
        }
    }
}

/// What a goal or a funnel step matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// A page view whose path is (or contains) the value.
    PageView,
    /// An event (not a page view) whose name is (or contains) the value.
    Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMatch {
    pub kind: MatchKind,
    pub value: String,
    /// Substring match rather than equality.
    pub contains: bool,
}

/// Visitors first seen in period `cohort_ms` and seen again in period `period_ms` (both local
/// bucket starts as epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CohortCell {
    pub cohort_ms: i64,
    pub period_ms: i64,
    pub visitors: u64,
}

/// One event as exports list it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportRow {
    pub event_id: u128,
    pub ts_ms: i64,
    pub event_type: String,
    pub page: String,
    pub referrer_domain: Option<String>,
    pub event_name: Option<String>,
    pub country: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
    pub language: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
}

/// One event of a session that converted on a goal, in (time, id) order within its session:
/// where it came from (its `utm_source`, else its referrer's domain; none: direct) and whether
/// it is a conversion (then with its data, for a goal valued by an event property).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Touch {
    pub session: u64,
    pub channel: Option<String>,
    pub converts: bool,
    pub event_data: Option<String>,
}

/// A goal's numbers over a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoalCounts {
    /// Matching events.
    pub conversions: u64,
    /// Sessions with at least one.
    pub converting_sessions: u64,
}

/// One event of a session, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub event_id: u128,
    pub ts_ms: i64,
    pub event_type: String,
    pub page: String,
    pub event_name: Option<String>,
    pub event_data: Option<String>,
}

/// The session list reads the newest sessions without grouping the whole range: a session
/// whose last event lies in the range's tail `[lo, to)` has that last event there, so grouping
/// just the tail gives those sessions' exact last times. These are the tails tried, widening
/// from an hour before `until` (the range end, or the cursor's time) to the whole range.
pub fn session_tails(from_ms: i64, until_ms: i64) -> Vec<i64> {
    const HOUR_MS: i64 = 3_600_000;
    let mut tails = Vec::new();
    let mut width = HOUR_MS;
    while until_ms.saturating_sub(width) > from_ms {
        tails.push(until_ms - width);
        width = width.saturating_mul(8);
    }
    tails.push(from_ms);
    tails
}

/// The longest gap between two events of one session (the sessionizer's inactivity timeout):
/// the events of a session, in time order, are never further apart than this.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// How far before the tail `lo` the found sessions are first summarised: most began minutes
/// before their last event, so two hours is nearly always enough.
const SUMMARY_MARGIN_MS: i64 = 2 * 3_600_000;

/// Where the found sessions' first summary starts, for the tail starting at `lo`.
pub fn summary_start(scope: &Scope, lo: i64) -> i64 {
    lo.saturating_sub(SUMMARY_MARGIN_MS).max(scope.from_ms)
}

/// The sessions of `rows` (summarised from `start`) that may have events before `start`, so
/// need summarising over the whole range: those whose first event found is within a session
/// gap of `start`. One further back would be an earlier event no more than a gap before it,
/// itself inside the window, so the first event found is the first.
pub fn maybe_cut(rows: &[SessionSummary], start: i64, scope: &Scope) -> Vec<u64> {
    if start <= scope.from_ms {
        return Vec::new();
    }
    rows.iter()
        .filter(|r| r.first_ms <= start.saturating_add(SESSION_GAP_MS))
        .map(|r| r.session)
        .collect()
}

/// `rows` with the sessions in `whole` replaced by their whole-range summaries.
pub fn with_whole(
    mut rows: Vec<SessionSummary>,
    whole: Vec<SessionSummary>,
) -> Vec<SessionSummary> {
    rows.retain(|r| !whole.iter().any(|w| w.session == r.session));
    rows.extend(whole);
    rows
}

/// Where the session list's tails are measured back from: the range's end, or the cursor's
/// time, but never more than an hour past now (no event is from the future, and a range that
/// ends tomorrow would otherwise spend its first tries on empty hours). Any start is exact;
/// this one is quick.
pub fn session_tails_until(scope: &Scope, after: Option<SessionKey>, now_ms: i64) -> i64 {
    let end = after.map_or(scope.to_ms, |k| {
        k.last_ms.saturating_add(1).min(scope.to_ms)
    });
    end.min(now_ms.saturating_add(3_600_000))
}

/// Sorts summaries as the session list shows them and keeps those after `after`.
pub fn order_sessions(
    mut rows: Vec<SessionSummary>,
    after: Option<SessionKey>,
) -> Vec<SessionSummary> {
    if let Some(k) = after {
        rows.retain(|r| (r.last_ms, r.session) < (k.last_ms, k.session));
    }
    rows.sort_by_key(|r| std::cmp::Reverse((r.last_ms, r.session)));
    rows
}

/// Writes of the analytics projection. Idempotent: re-applying events changes no count.
#[async_trait]
pub trait AnalyticsWriter: Send + Sync {
    /// Stores `events` (skipping event ids already stored) and `offsets`, atomically.
    /// Returns how many new events were stored.
    async fn write(
        &self,
        consumer: &str,
        events: Vec<StoredEvent>,
        offsets: Vec<StoredOffset>,
    ) -> StoreResult<usize>;
    /// The offsets stored with the rows, for `consumer`.
    async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>>;
    /// Forgets `consumer`'s offsets (rows stay: the next run re-applies and deduplicates).
    async fn reset_offsets(&self, consumer: &str) -> StoreResult<()>;
    /// Drops every stored event and offset (for a rebuild from the log).
    async fn truncate(&self) -> StoreResult<()>;
    /// Sessions with events received since `since_ms`, to warm the sessionizer.
    async fn recent_sessions(&self, since_ms: i64) -> StoreResult<Vec<SessionTail>>;
    /// Retention: deletes events whose time is before `cutoff_ms`.
    async fn delete_before(&self, cutoff_ms: i64) -> StoreResult<u64>;
}

/// Dashboard reads of the analytics projection.
#[async_trait]
pub trait AnalyticsReader: Send + Sync {
    async fn totals(&self, scope: &Scope) -> StoreResult<Totals>;
    async fn series(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<SeriesPoint>>;
    /// Rows for one page of the breakdown, and the number of distinct values in all.
    async fn breakdown(
        &self,
        scope: &Scope,
        by: Dimension,
        limit: u32,
        offset: u32,
    ) -> StoreResult<(Vec<MetricRow>, u64)>;
    /// The breakdown rows of just these values (any order; a value without events has no row):
    /// the comparison period's numbers for the rows of a page.
    async fn breakdown_of(
        &self,
        scope: &Scope,
        by: Dimension,
        values: &[String],
    ) -> StoreResult<Vec<MetricRow>>;
    /// Distinct visitors and events since `since_ms`, bots left out.
    async fn live_counts(&self, website_id: &str, since_ms: i64) -> StoreResult<LiveCounts>;
    async fn recent_events(
        &self,
        website_id: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>>;
    /// Stored events of a website (bots included), for reconciliation.
    async fn event_count(&self, website_id: &str) -> StoreResult<u64>;
    /// Sessions with an event matching the scope (its filters included), newest last event
    /// first, after `after`, at most `limit`; each summarised over its events in the scope's
    /// range (bots as the scope says), whatever the filters.
    async fn sessions(
        &self,
        scope: &Scope,
        after: Option<SessionKey>,
        limit: u32,
    ) -> StoreResult<Vec<SessionSummary>>;
    /// The `event_data` of the scope's newest `limit` events (newest first; `None` for an event
    /// without data): the sample event properties are counted over.
    async fn event_data(&self, scope: &Scope, limit: u32) -> StoreResult<Vec<Option<String>>>;
    /// How often the scope's events match `target`, and in how many sessions.
    async fn goal_counts(&self, scope: &Scope, target: &StepMatch) -> StoreResult<GoalCounts>;
    /// Sessions of the scope that reached each step of a funnel in order: a session reaches
    /// step k when it has an event matching step k later than the one that reached step k-1
    /// (the earliest such each time).
    async fn funnel(&self, scope: &Scope, steps: &[StepMatch]) -> StoreResult<Vec<u64>>;
    /// For each session of the scope with an event matching `anchor`: the nodes (a page view's
    /// path, another named event's name) of at most `depth` events after its first anchor
    /// event (`after`), or before it, nearest first. Events without a name are not nodes.
    async fn journeys(
        &self,
        scope: &Scope,
        anchor: &StepMatch,
        after: bool,
        depth: u32,
    ) -> StoreResult<Vec<Vec<String>>>;
    /// Visitors by cohort: (the local period a visitor was first seen in the scope, a local
    /// period they were seen in, how many such visitors), periods as bucket starts.
    async fn cohorts(
        &self,
        scope: &Scope,
        granularity: Granularity,
        tz: &[OffsetSegment],
    ) -> StoreResult<Vec<CohortCell>>;
    /// The scope's events in (time, id) order after `after` (a row's `(ts_ms, event_id)`), at
    /// most `limit`: one page of an export.
    async fn export_page(
        &self,
        scope: &Scope,
        after: Option<(i64, u128)>,
        limit: u32,
    ) -> StoreResult<Vec<ExportRow>>;
    /// Every event of the scope's sessions that have an event matching `target`, session by
    /// session in (time, id) order: the material of attribution.
    async fn touches(&self, scope: &Scope, target: &StepMatch) -> StoreResult<Vec<Touch>>;
    /// One session of a website over all time (bots included) and its first `limit` events,
    /// or `None` if it has none.
    async fn session(
        &self,
        website_id: &str,
        session: u64,
        limit: u32,
    ) -> StoreResult<Option<(SessionSummary, Vec<SessionEvent>)>>;
}

fn offset_ms(tz: chrono_tz::Tz, utc_ms: i64) -> i64 {
    use chrono::{LocalResult, Offset, TimeZone, Utc};
    match Utc.timestamp_millis_opt(utc_ms) {
        LocalResult::Single(t) => {
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc() as i64
                * 1000
        }
        _ => 0,
    }
}

/// The UTC offsets in force over `[from_ms, to_ms)`, one segment per DST change.
pub fn offset_segments(tz: chrono_tz::Tz, from_ms: i64, to_ms: i64) -> Vec<OffsetSegment> {
    const HOUR: i64 = 3_600_000;
    let mut segs = vec![OffsetSegment {
        from_ms,
        offset_ms: offset_ms(tz, from_ms),
    }];
    let mut t = from_ms;
    while t < to_ms {
        let next = (t + HOUR).min(to_ms);
        let current = segs.last().map(|s| s.offset_ms).unwrap_or(0);
        let o = offset_ms(tz, next);
        if o != current {
            // Find the exact second the offset changed, between t and next.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1000 {
                let mid = lo + (hi - lo) / 2;
                if offset_ms(tz, mid) == current {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            segs.push(OffsetSegment {
                from_ms: hi,
                offset_ms: o,
            });
        }
        t = next;
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn session_tails_widen_eightfold_to_the_whole_range() {
        assert_eq!(session_tails(0, 100 * H), vec![99 * H, 92 * H, 36 * H, 0]);
        assert_eq!(session_tails(0, H), vec![0]);
        assert_eq!(session_tails(5, 0), vec![5]);
    }

    #[test]
    fn tails_start_no_later_than_an_hour_from_now() {
        let scope = Scope {
            website_id: "w".into(),
            from_ms: 0,
            to_ms: 100 * H,
            include_bots: false,
            filters: vec![],
        };
        assert_eq!(session_tails_until(&scope, None, 10 * H), 11 * H);
        assert_eq!(session_tails_until(&scope, None, 200 * H), 100 * H);
        let key = SessionKey {
            last_ms: 5 * H,
            session: 1,
        };
        assert_eq!(session_tails_until(&scope, Some(key), 10 * H), 5 * H + 1);
    }

    #[test]
    fn summaries_near_the_window_start_are_redone_over_the_range() {
        let scope = Scope {
            website_id: "w".into(),
            from_ms: 0,
            to_ms: 100 * H,
            include_bots: false,
            filters: vec![],
        };
        let s = |session, first_ms| SessionSummary {
            session,
            first_ms,
            ..Default::default()
        };
        let start = summary_start(&scope, 50 * H);
        assert_eq!(start, 48 * H);
        let rows = vec![
            s(1, 48 * H),
            s(2, 48 * H + SESSION_GAP_MS),
            s(3, 48 * H + SESSION_GAP_MS + 1),
        ];
        assert_eq!(maybe_cut(&rows, start, &scope), vec![1, 2]);
        assert!(
            maybe_cut(&rows, 0, &scope).is_empty(),
            "the whole range is never cut"
        );
        assert_eq!(summary_start(&scope, H), 0);
        let merged = with_whole(rows, vec![s(1, 40 * H)]);
        assert_eq!(
            merged
                .iter()
                .map(|r| (r.session, r.first_ms))
                .collect::<Vec<_>>(),
            vec![
                (2, 48 * H + SESSION_GAP_MS),
                (3, 48 * H + SESSION_GAP_MS + 1),
                (1, 40 * H)
            ]
        );
    }

    #[test]
    fn sessions_order_newest_first_after_the_key() {
        let s = |session, last_ms| SessionSummary {
            session,
            last_ms,
            ..Default::default()
        };
        let rows = vec![s(1, 10), s(3, 20), s(2, 20)];
        let key = SessionKey {
            last_ms: 20,
            session: 2,
        };
        assert_eq!(
            order_sessions(rows.clone(), None),
            vec![s(3, 20), s(2, 20), s(1, 10)]
        );
        assert_eq!(order_sessions(rows, Some(key)), vec![s(1, 10)]);
    }
}
