//! Conformance suites for projection backends: the same events must give the same answers on
//! every analytics store, re-applying must change nothing, and offsets must travel with rows.
//! Backends call these from their own tests.

use crate::*;
use schemas::*;

const W: &str = "site-conformance";
/// 2026-03-10T00:00:00Z
const T0: i64 = 1_773_100_800_000;

fn ev(id: u128, visitor: u64, session: u64, secs: i64, page: &str) -> StoredEvent {
    StoredEvent {
        event_id: id,
        website_id: W.into(),
        ts_ms: T0 + secs * 1000,
        received_at_ms: T0 + secs * 1000,
        event_type: "pageview".into(),
        page: page.into(),
        visitor,
        session,
        country: Some(if visitor == 1 { "DE" } else { "US" }.into()),
        hostname: (visitor == 1).then(|| "example.com".into()),
        browser: Some("Firefox".into()),
        ..Default::default()
    }
}

fn dataset() -> Vec<StoredEvent> {
    let mut signup = ev(4, 1, 10, 90, "/b");
    signup.event_type = "event".into();
    signup.event_name = Some("signup".into());
    signup.event_data = Some(r#"{"plan":"pro"}"#.into());
    let mut bot = ev(5, 3, 30, 30, "/a");
    bot.is_bot = true;
    let mut other_site = ev(6, 1, 10, 10, "/a");
    other_site.website_id = "site-other".into();
    vec![
        ev(1, 1, 10, 0, "/a"),
        ev(2, 1, 10, 60, "/b"),
        ev(3, 2, 20, 120, "/a"),
        signup,
        bot,
        other_site,
    ]
}

fn scope(include_bots: bool) -> Scope {
    Scope {
        website_id: W.into(),
        from_ms: T0,
        to_ms: T0 + 86_400_000,
        include_bots,
        filters: vec![],
    }
}

fn offsets(n: u64) -> Vec<StoredOffset> {
    vec![StoredOffset {
        topic: "t".into(),
        partition: 0,
        next_offset: n,
    }]
}

fn row(value: &str, counts: [u64; 5], avg_duration_seconds: f64) -> MetricRow {
    let [visitors, pageviews, events, sessions, bounces] = counts;
    MetricRow {
        value: value.into(),
        visitors,
        pageviews,
        events,
        sessions,
        bounces,
        avg_duration_seconds,
    }
}

fn summary(
    session: u64,
    visitor: u64,
    span: (i64, i64),
    counts: (u64, u64),
    pages: (&str, &str),
    country: &str,
) -> SessionSummary {
    SessionSummary {
        session,
        visitor,
        first_ms: T0 + span.0 * 1000,
        last_ms: T0 + span.1 * 1000,
        pageviews: counts.0,
        events: counts.1,
        entry_page: Some(pages.0.into()),
        exit_page: Some(pages.1.into()),
        country: Some(country.into()),
        browser: Some("Firefox".into()),
        os: None,
        device: None,
    }
}

/// The session list over `dataset()`: newest last event first, paged by key, filters choosing
/// sessions but not trimming them; and one session with its events.
async fn session_checks<S: AnalyticsReader>(store: &S) {
    let s10 = summary(10, 1, (0, 90), (2, 3), ("/a", "/b"), "DE");
    let s20 = summary(20, 2, (120, 120), (1, 1), ("/a", "/a"), "US");
    let s30 = summary(30, 3, (30, 30), (1, 1), ("/a", "/a"), "US");
    let list = |scope: Scope, after: Option<SessionKey>, limit: u32| async move {
        store
            .sessions(&scope, after, limit)
            .await
            .expect("sessions")
    };
    assert_eq!(
        list(scope(false), None, 10).await,
        vec![s20.clone(), s10.clone()]
    );
    assert_eq!(
        list(scope(true), None, 10).await,
        vec![s20.clone(), s10.clone(), s30.clone()]
    );
    // Paging by the last row's key, to the end.
    assert_eq!(list(scope(false), None, 1).await, vec![s20.clone()]);
    assert_eq!(
        list(scope(false), Some(s20.key()), 1).await,
        vec![s10.clone()]
    );
    assert!(list(scope(false), Some(s10.key()), 1).await.is_empty());
    // A range ending just after the data: the first tail tried is the whole range.
    let mut short = scope(true);
    short.to_ms = T0 + 121_000;
    assert_eq!(
        list(short, Some(s20.key()), 5).await,
        vec![s10.clone(), s30.clone()]
    );
    // A filter picks sessions; each is still summarised over all its events.
    let mut on_b = scope(false);
    on_b.filters.push((Dimension::Page, "/b".into()));
    assert_eq!(list(on_b, None, 10).await, vec![s10.clone()]);
    let mut us = scope(true);
    us.filters.push((Dimension::Country, "US".into()));
    assert_eq!(list(us, None, 10).await, vec![s20.clone(), s30]);

    // Export pages: (time, id) order, each after the last row of the one before.
    let page1 = store
        .export_page(&scope(true), None, 3)
        .await
        .expect("export");
    assert_eq!(
        page1.iter().map(|r| r.event_id).collect::<Vec<_>>(),
        vec![1, 5, 2]
    );
    let last = page1.last().map(|r| (r.ts_ms, r.event_id));
    let page2 = store
        .export_page(&scope(true), last, 3)
        .await
        .expect("export");
    assert_eq!(
        page2.iter().map(|r| r.event_id).collect::<Vec<_>>(),
        vec![4, 3]
    );
    assert_eq!(page2[0].event_name.as_deref(), Some("signup"));
    assert_eq!(page2[0].country.as_deref(), Some("DE"));
    assert!(store
        .export_page(&scope(true), Some((page2[1].ts_ms, page2[1].event_id)), 3)
        .await
        .expect("export")
        .is_empty());
    let (one, events) = store
        .session(W, 10, 2)
        .await
        .expect("session")
        .expect("found");
    assert_eq!(one, s10);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_id, e.ts_ms, e.page.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, T0, "/a"), (2, T0 + 60_000, "/b")]
    );
    let (_, all) = store
        .session(W, 10, 10)
        .await
        .expect("session")
        .expect("found");
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].event_name.as_deref(), Some("signup"));
    assert!(store.session(W, 99, 10).await.expect("none").is_none());
    let (other, _) = store
        .session("site-other", 10, 10)
        .await
        .expect("other")
        .expect("found");
    assert_eq!(
        (other.events, other.first_ms),
        (1, T0 + 10_000),
        "another site's session 10 is its own"
    );
}

fn target(kind: MatchKind, value: &str, contains: bool) -> StepMatch {
    StepMatch {
        kind,
        value: value.into(),
        contains,
    }
}

/// Goals and funnels over `dataset()`: session 10 is /a, /b, then a signup; session 20 is /a.
async fn goal_and_funnel_checks<S: AnalyticsReader>(store: &S) {
    use MatchKind::{Event, PageView};
    let goal = |scope: Scope, t: StepMatch| async move {
        let g = store.goal_counts(&scope, &t).await.expect("goal");
        (g.conversions, g.converting_sessions)
    };
    assert_eq!(
        goal(scope(false), target(PageView, "/a", false)).await,
        (2, 2)
    );
    assert_eq!(
        goal(scope(true), target(PageView, "/a", false)).await,
        (3, 3)
    );
    assert_eq!(
        goal(scope(false), target(Event, "sign", true)).await,
        (1, 1)
    );
    assert_eq!(
        goal(scope(false), target(Event, "sign", false)).await,
        (0, 0)
    );
    assert_eq!(
        goal(scope(false), target(PageView, "signup", false)).await,
        (0, 0),
        "events are not page views"
    );
    let funnel = |steps: Vec<StepMatch>| async move {
        store.funnel(&scope(false), &steps).await.expect("funnel")
    };
    let a = || target(PageView, "/a", false);
    let b = || target(PageView, "/b", false);
    let signup = || target(Event, "signup", false);
    assert_eq!(funnel(vec![a(), b(), signup()]).await, vec![2, 1, 1]);
    assert_eq!(funnel(vec![b(), a()]).await, vec![1, 0], "order matters");
    assert_eq!(
        funnel(vec![a(), a()]).await,
        vec![2, 0],
        "a later event each step"
    );
    assert_eq!(funnel(vec![signup(), b()]).await, vec![1, 0]);
    assert_eq!(
        funnel(vec![target(PageView, "/nowhere", false), a()]).await,
        vec![0, 0]
    );
    assert_eq!(
        funnel(vec![target(PageView, "/", true), signup()]).await,
        vec![2, 1]
    );
    // Attribution's material: every event of the converting sessions, in order.
    let touches = store
        .touches(&scope(false), &signup())
        .await
        .expect("touches");
    let plain = |converts: bool, data: Option<&str>| Touch {
        session: 10,
        channel: None,
        converts,
        event_data: data.map(str::to_string),
    };
    assert_eq!(
        touches,
        vec![
            plain(false, None),
            plain(false, None),
            plain(true, Some(r#"{"plan":"pro"}"#))
        ]
    );
}

/// Journeys over `dataset()`: session 10 is /a, /b, signup; session 20 is /a alone.
async fn journey_checks<S: AnalyticsReader>(store: &S) {
    use MatchKind::{Event, PageView};
    let paths = |anchor: StepMatch, after: bool, depth: u32| async move {
        let mut p = store
            .journeys(&scope(false), &anchor, after, depth)
            .await
            .expect("journeys");
        p.sort();
        p
    };
    let v = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        paths(target(PageView, "/a", false), true, 3).await,
        vec![v(&[]), v(&["/b", "signup"])]
    );
    assert_eq!(
        paths(target(PageView, "/a", false), true, 1).await,
        vec![v(&[]), v(&["/b"])]
    );
    assert_eq!(
        paths(target(Event, "signup", false), false, 2).await,
        vec![v(&["/b", "/a"])],
        "before the anchor, nearest first"
    );
    assert_eq!(
        paths(target(PageView, "/b", false), false, 5).await,
        vec![v(&["/a"])]
    );
    assert!(paths(target(PageView, "/nowhere", false), true, 3)
        .await
        .is_empty());
}

/// Cohorts on a site of their own: visitor 7 on days 1, 2 and 9; visitor 8 on day 2;
/// visitor 9 on day 9 (2026-03-11 is a Wednesday).
async fn cohort_checks<S: AnalyticsWriter + AnalyticsReader>(store: &S) {
    const DAY: i64 = 86_400;
    let on = |id: u128, visitor: u64, day: i64| {
        let mut e = ev(id, visitor, 100 + id as u64, day * DAY, "/c");
        e.website_id = "site-cohorts".into();
        e
    };
    let events = vec![
        on(40, 7, 1),
        on(41, 7, 2),
        on(42, 7, 9),
        on(43, 8, 2),
        on(44, 9, 9),
    ];
    store.write("cohorts", events, vec![]).await.expect("write");
    let cohorts_scope = Scope {
        website_id: "site-cohorts".into(),
        from_ms: T0,
        to_ms: T0 + 30 * DAY * 1000,
        include_bots: false,
        filters: vec![],
    };
    let utc = [OffsetSegment {
        from_ms: 0,
        offset_ms: 0,
    }];
    let cells = |g: Granularity| {
        let s = cohorts_scope.clone();
        async move {
            store
                .cohorts(&s, g, &utc)
                .await
                .expect("cohorts")
                .into_iter()
                .map(|c| (c.cohort_ms, c.period_ms, c.visitors))
                .collect::<Vec<_>>()
        }
    };
    let d = |n: i64| T0 + n * DAY * 1000;
    assert_eq!(
        cells(Granularity::Day).await,
        vec![
            (d(1), d(1), 1),
            (d(1), d(2), 1),
            (d(1), d(9), 1),
            (d(2), d(2), 1),
            (d(9), d(9), 1)
        ]
    );
    let (w0, w1) = (d(-1), d(6));
    assert_eq!(
        cells(Granularity::Week).await,
        vec![(w0, w0, 2), (w0, w1, 1), (w1, w1, 1)]
    );
}

/// A session five hours long, its last events in the list's first tail: summarised over the
/// whole range, not cut at the window it was found in.
async fn long_session_checks<S: AnalyticsWriter + AnalyticsReader>(store: &S) {
    // A day after the dataset, so retention's count of old events stays the dataset's.
    const DAY_S: i64 = 86_400;
    let on = |id: u128, session: u64, secs: i64| {
        let mut e = ev(id, 70, session, DAY_S + secs, "/long");
        e.website_id = "site-long".into();
        e
    };
    let mut events: Vec<StoredEvent> = (0..16).map(|i| on(50 + i as u128, 77, i * 1200)).collect();
    events.push(on(70, 78, 5 * 3600 - 60));
    store.write("long", events, vec![]).await.expect("write");
    let scope = Scope {
        website_id: "site-long".into(),
        from_ms: T0,
        to_ms: T0 + (DAY_S + 5 * 3_600 + 60) * 1000,
        include_bots: false,
        filters: vec![],
    };
    let rows = store.sessions(&scope, None, 2).await.expect("sessions");
    assert_eq!(
        rows.iter().map(|r| r.session).collect::<Vec<_>>(),
        vec![77, 78]
    );
    assert_eq!(
        (rows[0].first_ms, rows[0].pageviews),
        (T0 + DAY_S * 1000, 16),
        "the whole session"
    );
}

/// Breakdowns over `dataset()`: session 10 (visitor 1) is /a, /b and a signup on /b over 90 s;
/// session 20 (visitor 2) is one pageview of /a (a bounce).
async fn breakdown_checks<S: AnalyticsReader>(store: &S) {
    let (rows, total) = store
        .breakdown(&scope(false), Dimension::Page, 10, 0)
        .await
        .expect("pages");
    assert_eq!(total, 2);
    assert_eq!(
        rows,
        vec![
            row("/a", [2, 2, 2, 2, 1], 45.0),
            row("/b", [1, 1, 2, 1, 0], 90.0)
        ]
    );
    let (page2, total) = store
        .breakdown(&scope(false), Dimension::Page, 1, 1)
        .await
        .expect("page 2");
    assert_eq!((page2.len(), total), (1, 2));
    assert_eq!(page2[0].value, "/b");
    let (past, total) = store
        .breakdown(&scope(false), Dimension::Page, 10, 5)
        .await
        .expect("past the end");
    assert_eq!((past.len(), total), (0, 2));
    let (names, _) = store
        .breakdown(&scope(false), Dimension::EventName, 10, 0)
        .await
        .expect("events");
    assert_eq!(names, vec![row("signup", [1, 0, 1, 1, 0], 90.0)]);
    // No referrer is "(direct)", and the filter value "(direct)" selects those events.
    let (refs, _) = store
        .breakdown(&scope(false), Dimension::Referrer, 10, 0)
        .await
        .expect("referrers");
    assert_eq!(refs, vec![row(DIRECT, [2, 3, 4, 2, 1], 45.0)]);
    let mut direct = scope(false);
    direct.filters.push((Dimension::Referrer, DIRECT.into()));
    assert_eq!(store.totals(&direct).await.expect("direct").pageviews, 3);
    // Entry pages: both sessions entered on /a; exit: session 10 left on /b.
    let (entry, _) = store
        .breakdown(&scope(false), Dimension::EntryPage, 10, 0)
        .await
        .expect("entry");
    assert_eq!(entry, vec![row("/a", [2, 2, 2, 2, 1], 45.0)]);
    let (exit, _) = store
        .breakdown(&scope(false), Dimension::ExitPage, 10, 0)
        .await
        .expect("exit");
    assert_eq!(
        exit,
        vec![
            row("/a", [1, 1, 1, 1, 1], 0.0),
            row("/b", [1, 1, 1, 1, 0], 90.0)
        ]
    );
    // Countries sort by visitors; with bots, the bot's US session joins /a's.
    let (countries, _) = store
        .breakdown(&scope(true), Dimension::Country, 10, 0)
        .await
        .expect("countries");
    assert_eq!(
        countries,
        vec![
            row("US", [2, 2, 2, 2, 2], 0.0),
            row("DE", [1, 2, 3, 1, 0], 90.0)
        ]
    );
    // Just some values (a comparison's rows): unknown values have no row.
    let mut some = store
        .breakdown_of(
            &scope(false),
            Dimension::Page,
            &["/b".to_string(), "/nowhere".to_string()],
        )
        .await
        .expect("breakdown_of");
    some.sort_by(|a, b| a.value.cmp(&b.value));
    assert_eq!(some, vec![row("/b", [1, 1, 2, 1, 0], 90.0)]);
    // A page filter matches a substring; a host name filter matches the stored host.
    let mut sub = scope(false);
    sub.filters.push((Dimension::Page, "b".into()));
    assert_eq!(store.totals(&sub).await.expect("substring").pageviews, 1);
    let mut host = scope(false);
    host.filters
        .push((Dimension::Hostname, "example.com".into()));
    let h = store.totals(&host).await.expect("hostname");
    assert_eq!((h.pageviews, h.visitors), (2, 1));
}

/// Runs every analytics check against an empty store.
pub async fn analytics_suite<S: AnalyticsWriter + AnalyticsReader>(store: &S) {
    assert_eq!(
        store
            .write("c", dataset(), offsets(6))
            .await
            .expect("write"),
        6
    );
    assert_eq!(store.offsets("c").await.expect("offsets"), offsets(6));

    let t = store.totals(&scope(false)).await.expect("totals");
    assert_eq!(
        (t.pageviews, t.visitors, t.sessions, t.bounces),
        (3, 2, 2, 1)
    );
    assert!(
        (t.avg_duration_seconds - 45.0).abs() < 1e-9,
        "avg {}",
        t.avg_duration_seconds
    );
    let t = store.totals(&scope(true)).await.expect("totals");
    assert_eq!(
        (t.pageviews, t.visitors, t.sessions, t.bounces),
        (4, 3, 3, 2)
    );

    // Redelivery: the same events again change nothing.
    assert_eq!(
        store
            .write("c", dataset(), offsets(12))
            .await
            .expect("rewrite"),
        0
    );
    let again = store.totals(&scope(true)).await.expect("totals");
    assert_eq!(again, t);
    assert_eq!(store.event_count(W).await.expect("count"), 5);

    let mut filtered = scope(false);
    filtered.filters.push((Dimension::Country, "DE".into()));
    let f = store.totals(&filtered).await.expect("filtered");
    assert_eq!((f.pageviews, f.visitors, f.sessions), (2, 1, 1));

    breakdown_checks(store).await;
    session_checks(store).await;
    goal_and_funnel_checks(store).await;
    journey_checks(store).await;
    cohort_checks(store).await;
    long_session_checks(store).await;

    let utc = [OffsetSegment {
        from_ms: 0,
        offset_ms: 0,
    }];
    let days = store
        .series(&scope(false), Granularity::Day, &utc)
        .await
        .expect("series");
    assert_eq!(
        days,
        vec![SeriesPoint {
            local_start_ms: T0,
            pageviews: 3,
            visitors: 2,
            events: 4,
        }]
    );
    let mut signups = scope(false);
    signups
        .filters
        .push((Dimension::EventName, "signup".into()));
    let signup_days = store
        .series(&signups, Granularity::Day, &utc)
        .await
        .expect("series");
    assert_eq!(
        signup_days,
        vec![SeriesPoint {
            local_start_ms: T0,
            pageviews: 0,
            visitors: 1,
            events: 1,
        }]
    );
    // Event data, newest first: the sample event properties are counted over.
    assert_eq!(
        store.event_data(&signups, 10).await.expect("data"),
        vec![Some(r#"{"plan":"pro"}"#.to_string())]
    );
    assert_eq!(
        store.event_data(&scope(false), 2).await.expect("data"),
        vec![None, Some(r#"{"plan":"pro"}"#.to_string())]
    );
    // Two hours ahead of UTC, the events still fall on the same local day.
    let plus2 = [OffsetSegment {
        from_ms: 0,
        offset_ms: 7_200_000,
    }];
    let hours = store
        .series(&scope(false), Granularity::Hour, &plus2)
        .await
        .expect("series");
    assert_eq!(
        hours,
        vec![SeriesPoint {
            local_start_ms: T0 + 7_200_000,
            pageviews: 3,
            visitors: 2,
            events: 4,
        }]
    );
    let months = store
        .series(&scope(false), Granularity::Month, &utc)
        .await
        .expect("series");
    assert_eq!(months.len(), 1);
    assert_eq!(months[0].local_start_ms, 1_772_323_200_000, "2026-03-01");
    let weeks = store
        .series(&scope(false), Granularity::Week, &utc)
        .await
        .expect("series");
    assert_eq!(
        weeks.iter().map(|w| w.local_start_ms).collect::<Vec<_>>(),
        vec![T0 - 86_400_000],
        "2026-03-10 is a Tuesday: its week starts on Monday the 9th"
    );

    assert_eq!(
        store.live_counts(W, T0 + 60_000).await.expect("live"),
        LiveCounts {
            visitors: 2,
            events: 3
        }
    );
    let recent = store.recent_events(W, T0, 2).await.expect("recent");
    assert_eq!(
        recent.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
        vec![T0 + 120_000, T0 + 90_000]
    );

    let tails = store.recent_sessions(T0).await.expect("tails");
    let s10 = tails
        .iter()
        .find(|s| s.session == 10 && s.website_id == W)
        .expect("session 10");
    assert_eq!((s10.first_ms, s10.last_ms), (T0, T0 + 90_000));

    store.reset_offsets("c").await.expect("reset");
    assert!(store.offsets("c").await.expect("offsets").is_empty());
    assert_eq!(
        store.delete_before(T0 + 61_000).await.expect("retention"),
        4
    );
    assert_eq!(store.event_count(W).await.expect("count"), 2);
    store.truncate().await.expect("truncate");
    assert_eq!(store.event_count(W).await.expect("count"), 0);
}

fn entity_events() -> Vec<EntityEvent> {
    vec![
        EntityEvent::WebsiteCreated(WebsiteCreated {
            id: "w1".into(),
            name: "Blog".into(),
            domain: "blog.example".into(),
            timezone: "UTC".into(),
            created_at_ms: 1,
            company_id: None,
        }),
        EntityEvent::WebsiteCreated(WebsiteCreated {
            id: "w2".into(),
            name: "Shop".into(),
            domain: "shop.example".into(),
            timezone: "Europe/Berlin".into(),
            created_at_ms: 2,
            company_id: None,
        }),
        EntityEvent::WebsiteUpdated(WebsiteUpdated {
            id: "w1".into(),
            name: Some("Blog 2".into()),
            domain: None,
            timezone: None,
            updated_at_ms: 3,
        }),
        EntityEvent::WebsiteDeleted(WebsiteDeleted {
            id: "w2".into(),
            deleted_at_ms: 4,
        }),
        EntityEvent::UserCreated(UserCreated {
            id: "u1".into(),
            username: "admin".into(),
            password_hash: "x".into(),
            role: "admin".into(),
            created_at_ms: 5,
        }),
        EntityEvent::ApiKeyCreated(ApiKeyCreated {
            id: "k1".into(),
            user_id: "u1".into(),
            name: "first".into(),
            key_hash: "hash1".into(),
            key_last4: "1111".into(),
            created_at_ms: 6,
        }),
        EntityEvent::ApiKeyCreated(ApiKeyCreated {
            id: "k2".into(),
            user_id: "u1".into(),
            name: "second".into(),
            key_hash: "hash2".into(),
            key_last4: "2222".into(),
            created_at_ms: 7,
        }),
        EntityEvent::ApiKeyRevoked(ApiKeyRevoked {
            id: "k2".into(),
            revoked_at_ms: 8,
        }),
    ]
}

/// Runs every metadata check against an empty store.
pub async fn metadata_suite<S: MetadataWriter + MetadataReader>(store: &S) {
    legacy_events(store).await;
    companies_users_and_keys(store).await;
}

/// Events written before companies existed (setup's `UserCreated`, `ApiKeyCreated`) still
/// replay: the user lands in the operator company with the operator role.
async fn legacy_events<S: MetadataWriter + MetadataReader>(store: &S) {
    for _ in 0..2 {
        // Applying twice (a redelivery) must leave the same state.
        store
            .apply("meta", &entity_events(), &offsets(8))
            .await
            .expect("apply");
        let sites = store.websites().await.expect("websites");
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].name, "Blog 2");
        assert_eq!(sites[0].domain, "blog.example");
        assert!(
            store.website("w2").await.expect("w2").is_none(),
            "deleted site is gone"
        );
        assert_eq!(store.user_count().await.expect("users"), 1);
        let keys = store.api_keys("operator").await.expect("keys");
        assert_eq!(
            keys.iter()
                .map(|k| (k.api_key_id, k.state.key_last4.as_str(), k.state.active))
                .collect::<Vec<_>>(),
            vec![(1, "1111", true), (2, "2222", false)]
        );
        assert_eq!(
            store.key_by_hash("hash1").await.expect("key"),
            Some(KeyOwner {
                key_id: "k1".into(),
                api_key_id: 1,
                user_id: "u1".into(),
                company_id: "operator".into(),
                role_id: 1,
                expires_at_ms: None,
                test_mode: false,
                endpoint_id: None,
            })
        );
        assert!(
            store.key_by_hash("hash2").await.expect("key").is_none(),
            "revoked key"
        );
        assert_eq!(
            store.api_key_id_by_hash("hash2").await.expect("id"),
            Some(2),
            "a revoked key is still known by its hash"
        );
        assert_eq!(store.api_key_id_by_hash("nope").await.expect("id"), None);
        let op = store.company("operator").await.expect("company");
        assert!(op.is_some_and(|c| c.state.is_operator));
    }
    assert_eq!(store.offsets("meta").await.expect("offsets"), offsets(8));
    assert_eq!(
        store.applied_offset("meta", "t", 0).await.expect("applied"),
        8
    );
    assert_eq!(
        store.applied_offset("meta", "t", 1).await.expect("applied"),
        0
    );
    assert_eq!(
        store.setting_or_init("secret", "a").await.expect("init"),
        "a"
    );
    assert_eq!(
        store.setting_or_init("secret", "b").await.expect("again"),
        "a"
    );
}

fn created(event_id: &str, company: &str, handle: &str, user: &str, email: &str) -> EntityEvent {
    use schemas::testenv;
    EntityEvent::CompanyCreated(schemas::CompanyCreated {
        event_id: event_id.into(),
        company: testenv::company(company, handle),
        admin: testenv::user(user, company, email),
        admin_key: testenv::api_key(&format!("key-{user}"), user, company),
    })
}

async fn apply_all<S: MetadataWriter>(store: &S, events: Vec<EntityEvent>) {
    store.apply("meta2", &events, &[]).await.expect("apply");
}

async fn rejected_field<S: MetadataReader>(store: &S, event_id: &str) -> Option<String> {
    store
        .rejection(event_id)
        .await
        .expect("rejection")
        .map(|r| r.field)
}

/// Companies, users and keys as the marketplace writes them: uniqueness decided in log order
/// (the loser is recorded as rejected, with the field at fault), integer key ids in log order,
/// revocation and user status taking keys out of service.
async fn companies_users_and_keys<S: MetadataWriter + MetadataReader>(store: &S) {
    use schemas::{testenv, ApiKeyUpserted, CompanyUpdated, UserUpserted};
    // Same handle, same domain (other handle), same e-mail: only the first applies.
    let mut same_domain = created("e3", "c3", "other", "u3", "x@c3.io");
    if let EntityEvent::CompanyCreated(e) = &mut same_domain {
        e.company.domain = "acme.example".into();
    }
    let events = vec![
        created("e1", "c1", "acme", "u-a", "admin@acme.io"),
        created("e2", "c2", "acme", "u-b", "b@acme.io"),
        same_domain,
        created("e4", "c4", "globex", "u-d", "admin@acme.io"),
        created("e5", "c5", "initech", "u-e", "admin@initech.io"),
    ];
    for _ in 0..2 {
        apply_all(store, events.clone()).await; // a redelivery changes nothing
    }
    assert_eq!(rejected_field(store, "e1").await, None);
    assert_eq!(
        rejected_field(store, "e2").await.as_deref(),
        Some("company_handle")
    );
    assert_eq!(
        rejected_field(store, "e3").await.as_deref(),
        Some("company_domain")
    );
    assert_eq!(
        rejected_field(store, "e4").await.as_deref(),
        Some("email_address")
    );
    assert_eq!(rejected_field(store, "e5").await, None);
    for gone in ["c2", "c3", "c4"] {
        assert!(store.company(gone).await.expect("company").is_none());
    }
    assert!(
        store.user("u-b").await.expect("user").is_none(),
        "no orphan admin"
    );
    let acme = store.company("c1").await.expect("c1").expect("exists");
    assert_eq!(
        (acme.state.handle.as_str(), acme.credits_balance),
        ("acme", 0)
    );
    // Keys are numbered in log order after the legacy ones (1, 2).
    let k1 = store.api_keys("c1").await.expect("keys");
    let k5 = store.api_keys("c5").await.expect("keys");
    assert_eq!((k1.len(), k1[0].api_key_id), (1, 3));
    assert_eq!((k5.len(), k5[0].api_key_id), (1, 4));
    assert_eq!(
        store
            .api_key_by_number("c1", 3)
            .await
            .expect("key")
            .map(|k| k.state.id),
        Some("key-u-a".to_string())
    );
    assert!(
        store
            .api_key_by_number("c5", 3)
            .await
            .expect("key")
            .is_none(),
        "another company's key number is not found"
    );
    assert_eq!(
        store
            .company_conflict("acme", "new.example", None)
            .await
            .expect("conflict"),
        Some("company_handle")
    );
    assert_eq!(
        store
            .company_conflict("acme", "acme.example", Some("c1"))
            .await
            .expect("own"),
        None
    );
    assert_eq!(
        store
            .login_conflict(Some("admin@initech.io"), None, None)
            .await
            .expect("login"),
        Some("email_address")
    );

    // Updates: a company may not take another's domain; a user may not take another's e-mail.
    let mut taken = acme.state.clone();
    taken.domain = "initech.example".into();
    let mut renamed = acme.state.clone();
    renamed.name = "Acme Corp".into();
    let mut second = testenv::user("u-a2", "c1", "analyst@acme.io");
    second.role_id = 4;
    let mut stolen = testenv::user("u-a3", "c1", "admin@initech.io");
    stolen.role_id = 4;
    let mut key2 = testenv::api_key("key-u-a2", "u-a2", "c1");
    key2.role_id = 4;
    key2.mode = "test".into();
    apply_all(
        store,
        vec![
            EntityEvent::CompanyUpdated(CompanyUpdated {
                event_id: "e6".into(),
                company: taken,
            }),
            EntityEvent::CompanyUpdated(CompanyUpdated {
                event_id: "e7".into(),
                company: renamed,
            }),
            EntityEvent::UserUpserted(UserUpserted {
                event_id: "e8".into(),
                user: second.clone(),
            }),
            EntityEvent::UserUpserted(UserUpserted {
                event_id: "e9".into(),
                user: stolen,
            }),
            EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
                event_id: "e10".into(),
                key: key2.clone(),
            }),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e6").await.as_deref(),
        Some("company_domain")
    );
    assert_eq!(
        rejected_field(store, "e9").await.as_deref(),
        Some("email_address")
    );
    let acme = store.company("c1").await.expect("c1").expect("exists");
    assert_eq!(
        (acme.state.name.as_str(), acme.state.domain.as_str()),
        ("Acme Corp", "acme.example")
    );
    let users = store.users("c1").await.expect("users");
    assert_eq!(
        users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["u-a", "u-a2"]
    );
    let owner = store
        .key_by_hash("hash-key-u-a2")
        .await
        .expect("owner")
        .expect("active");
    assert_eq!(
        (
            owner.company_id.as_str(),
            owner.role_id,
            owner.api_key_id,
            owner.test_mode
        ),
        ("c1", 4, 5, true)
    );

    // Revoking keeps the reason; an inactive user's keys stop working.
    let mut revoked = key2.clone();
    revoked.active = false;
    revoked.revoked_at_ms = Some(50);
    revoked.revoked_by = Some("u-a".into());
    revoked.revocation_reason = Some("leaked".into());
    apply_all(
        store,
        vec![EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
            event_id: "e11".into(),
            key: revoked,
        })],
    )
    .await;
    assert!(store
        .key_by_hash("hash-key-u-a2")
        .await
        .expect("owner")
        .is_none());
    let k = store.api_key("key-u-a2").await.expect("key").expect("kept");
    assert_eq!(k.state.revocation_reason.as_deref(), Some("leaked"));
    assert_eq!(k.api_key_id, 5, "the number survives an update");
    assert_eq!(k.state.mode, "test", "the mode survives an update");
    assert!(store
        .key_by_hash("hash-key-u-a")
        .await
        .expect("owner")
        .is_some());
    let mut admin = store.user("u-a").await.expect("user").expect("admin");
    admin.status = "BANNED".into();
    apply_all(
        store,
        vec![EntityEvent::UserUpserted(UserUpserted {
            event_id: "e12".into(),
            user: admin,
        })],
    )
    .await;
    assert!(
        store
            .key_by_hash("hash-key-u-a")
            .await
            .expect("owner")
            .is_none(),
        "a banned user's key stops working"
    );
    // A user cannot be moved to another company, and a key needs a user of its company.
    let mut moved = testenv::user("u-a2", "c5", "analyst@acme.io");
    moved.role_id = 4;
    let orphan = testenv::api_key("key-x", "u-e", "c1");
    apply_all(
        store,
        vec![
            EntityEvent::UserUpserted(UserUpserted {
                event_id: "e13".into(),
                user: moved,
            }),
            EntityEvent::ApiKeyUpserted(ApiKeyUpserted {
                event_id: "e14".into(),
                key: orphan,
            }),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e13").await.as_deref(),
        Some("user_id")
    );
    assert_eq!(
        rejected_field(store, "e14").await.as_deref(),
        Some("user_id")
    );

    // Connections: stored with their sealed credentials, listed per company, deleted softly;
    // one cannot move to another company or name a user of another.
    use schemas::{testenv::connection, ConnectionUpserted};
    let conn = connection("cn1", "c1", "u-a");
    let mut moved = conn.clone();
    moved.company_id = "c5".into();
    moved.user_id = "u-e".into();
    let foreign_user = connection("cn2", "c1", "u-e");
    let upsert = |id: &str, c: schemas::ConnectionState| {
        EntityEvent::ConnectionUpserted(ConnectionUpserted {
            event_id: id.into(),
            connection: c,
        })
    };
    apply_all(
        store,
        vec![
            upsert("e15", conn.clone()),
            upsert("e16", moved),
            upsert("e17", foreign_user),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e16").await.as_deref(),
        Some("connection_id")
    );
    assert_eq!(
        rejected_field(store, "e17").await.as_deref(),
        Some("user_id")
    );
    assert_eq!(
        store.connection("cn1").await.expect("conn"),
        Some(conn.clone())
    );
    assert!(store.connections("c5").await.expect("list").is_empty());
    // Assets: a slug is unique per company among live assets; the connection must be the
    // company's; what another company sees is only what is shared and sold.
    use schemas::{testenv::asset, AssetUpserted};
    let put = |id: &str, a: schemas::AssetState| {
        EntityEvent::AssetUpserted(AssetUpserted {
            event_id: id.into(),
            asset: a,
        })
    };
    let mut private = asset("a2", "c1", "cn1", "internal");
    private.visibility = "PRIVATE".into();
    let same_slug = asset("a3", "c1", "cn1", "sales");
    let foreign_conn = asset("a4", "c5", "cn1", "theirs");
    apply_all(
        store,
        vec![
            put("e20", asset("a1", "c1", "cn1", "sales")),
            put("e21", private),
            put("e22", same_slug),
            put("e23", foreign_conn),
        ],
    )
    .await;
    assert_eq!(rejected_field(store, "e22").await.as_deref(), Some("slug"));
    assert_eq!(
        rejected_field(store, "e23").await.as_deref(),
        Some("connection_id")
    );
    let own: Vec<_> = store
        .visible_assets("c1")
        .await
        .expect("own")
        .into_iter()
        .map(|a| a.id)
        .collect();
    let other: Vec<_> = store
        .visible_assets("c5")
        .await
        .expect("other")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        (own, other),
        (
            vec!["a1".to_string(), "a2".to_string()],
            vec!["a1".to_string()]
        )
    );
    assert_eq!(
        store
            .asset_by_slug("c1", "sales")
            .await
            .expect("slug")
            .map(|a| a.id)
            .as_deref(),
        Some("a1")
    );
    assert_eq!(
        store
            .company_by_handle("acme")
            .await
            .expect("handle")
            .map(|c| c.state.id)
            .as_deref(),
        Some("c1")
    );
    let mut gone = asset("a1", "c1", "cn1", "sales");
    gone.deleted = true;
    apply_all(
        store,
        vec![
            put("e24", gone),
            put("e25", asset("a5", "c1", "cn1", "sales")),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e25").await,
        None,
        "a deleted asset frees its slug"
    );
    prices_end_and_follow_each_other(store).await;
    subscriptions_name_a_known_plan(store).await;
    endpoints_stay_in_their_company(store).await;
    site_objects_stay_on_their_website(store).await;

    let mut deleted = conn.clone();
    deleted.deleted = true;
    apply_all(store, vec![upsert("e18", deleted)]).await;
    assert!(store.connection("cn1").await.expect("conn").is_none());
    assert!(store.connections("c1").await.expect("list").is_empty());
}

/// Goals, funnels, links and the other website objects: on a live website of their company,
/// never moved, one live object per public key of a kind; deleting frees the key.
async fn site_objects_stay_on_their_website<S: MetadataWriter + MetadataReader>(store: &S) {
    use crate::metadata::SiteObjectScope;
    use schemas::{SiteObjectState, SiteObjectUpserted};
    let site = |id: &str, company: &str| {
        EntityEvent::WebsiteCreated(WebsiteCreated {
            id: id.into(),
            name: id.into(),
            domain: "objects.example".into(),
            timezone: "UTC".into(),
            created_at_ms: 1,
            company_id: Some(company.into()),
        })
    };
    let object =
        |id: &str, kind: &str, website: &str, key: Option<&str>, at: i64| SiteObjectState {
            id: id.into(),
            kind: kind.into(),
            website_id: website.into(),
            company_id: "c1".into(),
            public_key: key.map(str::to_string),
            body_json: format!(r#"{{"name":"{id}"}}"#),
            deleted: false,
            created_at_ms: at,
            updated_at_ms: at,
        };
    let put = |event: &str, o: SiteObjectState| {
        EntityEvent::SiteObjectUpserted(SiteObjectUpserted {
            event_id: event.into(),
            object: o,
        })
    };
    let mut moved = object("g1", "goal", "ws-b", None, 1);
    moved.updated_at_ms = 5;
    apply_all(
        store,
        vec![
            site("ws-a", "c1"),
            site("ws-b", "c1"),
            site("ws-other", "c5"),
            put("e80", object("g1", "goal", "ws-a", None, 1)),
            put("e81", object("g2", "goal", "ws-a", None, 2)),
            put("e82", object("l1", "link", "ws-a", Some("spring"), 3)),
            put("e83", object("l2", "link", "ws-b", Some("spring"), 4)),
            put("e84", object("g3", "goal", "ws-other", None, 5)),
            put("e85", moved),
            put("e86", object("p1", "pixel", "ws-a", Some("spring"), 6)),
        ],
    )
    .await;
    assert_eq!(rejected_field(store, "e80").await, None);
    assert_eq!(rejected_field(store, "e83").await.as_deref(), Some("slug"));
    assert_eq!(
        rejected_field(store, "e84").await.as_deref(),
        Some("website_id"),
        "another company's website"
    );
    assert_eq!(rejected_field(store, "e85").await.as_deref(), Some("id"));
    assert_eq!(
        rejected_field(store, "e86").await,
        None,
        "keys are per kind"
    );
    let ids = |v: Vec<SiteObjectState>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let list = |kind: &'static str, website: &'static str| async move {
        ids(store
            .site_objects_where(SiteObjectScope::Website, kind, website)
            .await
            .expect("list"))
    };
    assert_eq!(
        list("goal", "ws-a").await,
        vec!["g1".to_string(), "g2".to_string()]
    );
    assert!(list("goal", "ws-b").await.is_empty());
    let by_key = |key: &'static str| async move {
        ids(store
            .site_objects_where(SiteObjectScope::PublicKey, "link", key)
            .await
            .expect("by key"))
    };
    assert_eq!(by_key("spring").await, vec!["l1".to_string()]);
    let one = store
        .site_objects_where(SiteObjectScope::One, "goal", "g2")
        .await
        .expect("one");
    assert_eq!(one[0].body_json, r#"{"name":"g2"}"#);
    assert!(store
        .site_objects_where(SiteObjectScope::One, "link", "g2")
        .await
        .expect("wrong kind")
        .is_empty());
    let mut gone = object("l1", "link", "ws-a", Some("spring"), 3);
    gone.deleted = true;
    apply_all(
        store,
        vec![
            put("e87", gone),
            put("e88", object("l3", "link", "ws-b", Some("spring"), 7)),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e88").await,
        None,
        "deleting frees the key"
    );
    assert_eq!(by_key("spring").await, vec!["l3".to_string()]);
}

/// Data endpoints: over one of the company's own connections, a slug unique per company
/// among live ones, never moved to another company, priced under their own id.
async fn endpoints_stay_in_their_company<S: MetadataWriter + MetadataReader>(store: &S) {
    use crate::metadata::EndpointScope;
    use schemas::{EndpointState, EndpointUpserted};
    let endpoint = |id: &str, company: &str, slug: &str| EndpointState {
        id: id.into(),
        company_id: company.into(),
        user_id: "u-a".into(),
        connection_id: "cn1".into(),
        name: slug.into(),
        slug: slug.into(),
        spec_json: "{}".into(),
        version: 1,
        deleted: false,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    let put = |event: &str, e: EndpointState| {
        EntityEvent::EndpointUpserted(EndpointUpserted {
            event_id: event.into(),
            endpoint: e,
        })
    };
    let mut moved = endpoint("ep1", "c5", "orders");
    moved.version = 2;
    apply_all(
        store,
        vec![
            put("e60", endpoint("ep1", "c1", "orders")),
            put("e61", endpoint("ep2", "c1", "orders")),
            put("e62", endpoint("ep3", "c5", "theirs")),
            put("e63", moved),
            put("e64", endpoint("ep4", "c1", "refunds")),
        ],
    )
    .await;
    assert_eq!(rejected_field(store, "e60").await, None);
    assert_eq!(rejected_field(store, "e61").await.as_deref(), Some("slug"));
    assert_eq!(
        rejected_field(store, "e62").await.as_deref(),
        Some("connection_id"),
        "another company's connection"
    );
    assert_eq!(
        rejected_field(store, "e63").await.as_deref(),
        Some("endpoint_id")
    );
    let ids = |v: Vec<EndpointState>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .endpoints_where(EndpointScope::Company, "c1")
            .await
            .expect("list")),
        vec!["ep1".to_string(), "ep4".to_string()]
    );
    assert!(store
        .endpoints_where(EndpointScope::Company, "c5")
        .await
        .expect("list")
        .is_empty());
    let price = EntityEvent::PriceSet(schemas::PriceSet {
        event_id: "e65".into(),
        aph_id: "aph-ep".into(),
        company_id: "c1".into(),
        asset_id: "ep1".into(),
        price_usd: 0.5,
        credits: 50,
        set_at_ms: 1,
    });
    let mut gone = endpoint("ep1", "c1", "orders");
    gone.deleted = true;
    gone.version = 2;
    apply_all(
        store,
        vec![
            price,
            put("e66", gone),
            put("e67", endpoint("ep5", "c1", "orders")),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e65").await,
        None,
        "an endpoint is priced"
    );
    assert_eq!(store.prices("ep1").await.expect("prices").len(), 1);
    assert_eq!(
        rejected_field(store, "e67").await,
        None,
        "a deleted endpoint frees its slug"
    );
    assert!(ids(store
        .endpoints_where(EndpointScope::One, "ep1")
        .await
        .expect("one"))
    .is_empty());
    assert_eq!(
        ids(store
            .endpoints_where(EndpointScope::One, "ep5")
            .await
            .expect("one")),
        vec!["ep5".to_string()]
    );
}

/// A subscription names an existing company and plan; the company reads it back.
async fn subscriptions_name_a_known_plan<S: MetadataWriter + MetadataReader>(store: &S) {
    let set = |event: &str, company: &str, plan: &str, at_ms: i64| {
        EntityEvent::SubscriptionSet(schemas::SubscriptionSet {
            event_id: event.into(),
            company_id: company.into(),
            plan_id: plan.into(),
            period_start_ms: at_ms,
            monthly_requests: (plan == "professional").then_some(42),
        })
    };
    let before = store.company("c1").await.expect("company").expect("c1");
    assert_eq!(
        before.subscription, None,
        "no subscription: the default plan"
    );
    apply_all(
        store,
        vec![
            set("e40", "c1", "starter", 10),
            set("e41", "c1", "professional", 20),
            set("e42", "c1", "gold", 30),
            set("e43", "nobody", "starter", 40),
        ],
    )
    .await;
    assert_eq!(rejected_field(store, "e42").await.as_deref(), Some("plan"));
    assert_eq!(
        rejected_field(store, "e43").await.as_deref(),
        Some("company_id")
    );
    let c = store.company("c1").await.expect("company").expect("c1");
    assert_eq!(
        c.subscription,
        Some(crate::Subscription {
            plan_id: "professional".into(),
            period_start_ms: 20,
            monthly_requests: Some(42),
        }),
        "the newest valid subscription"
    );
}

/// A new price ends the one in force; `PriceEnded` ends one without a successor (once), and
/// neither touches another company's asset.
async fn prices_end_and_follow_each_other<S: MetadataWriter + MetadataReader>(store: &S) {
    let set = |event: &str, aph: &str, company: &str, credits: i64, at_ms: i64| {
        EntityEvent::PriceSet(schemas::PriceSet {
            event_id: event.into(),
            aph_id: aph.into(),
            company_id: company.into(),
            asset_id: "a5".into(),
            price_usd: credits as f64 / 100.0,
            credits,
            set_at_ms: at_ms,
        })
    };
    let end = |event: &str, aph: &str, company: &str, at_ms: i64| {
        EntityEvent::PriceEnded(schemas::PriceEnded {
            event_id: event.into(),
            aph_id: aph.into(),
            company_id: company.into(),
            asset_id: "a5".into(),
            ended_at_ms: at_ms,
        })
    };
    apply_all(
        store,
        vec![
            set("e30", "p1", "c1", 10, 100),
            set("e31", "p2", "c1", 20, 200),
            set("e32", "p3", "c5", 30, 250),
            end("e33", "p2", "c5", 260),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e32").await.as_deref(),
        Some("asset_id")
    );
    assert_eq!(
        rejected_field(store, "e33").await.as_deref(),
        Some("asset_id")
    );
    let ends = |ps: Vec<crate::Price>| {
        ps.into_iter()
            .map(|p| (p.aph_id, p.credits, p.date_ended_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ends(store.prices("a5").await.expect("prices")),
        vec![("p2".into(), 20, None), ("p1".into(), 10, Some(200))],
        "newest first; the new price ended the old one"
    );
    apply_all(
        store,
        vec![
            end("e34", "p2", "c1", 300),
            end("e35", "p2", "c1", 400),
            end("e36", "nope", "c1", 400),
        ],
    )
    .await;
    assert_eq!(
        rejected_field(store, "e35").await,
        None,
        "ending twice is a no-op"
    );
    assert_eq!(
        rejected_field(store, "e36").await.as_deref(),
        Some("aph_id")
    );
    assert_eq!(
        ends(store.prices("a5").await.expect("prices")),
        vec![("p2".into(), 20, Some(300)), ("p1".into(), 10, Some(200))],
        "no price in force"
    );
}

/// The money rules every metadata store keeps, alone and in a batch (group commit): a hold
/// debits only a covering balance, a retry holds nothing, a short hold leaves nothing behind,
/// a settlement credits the seller and the platform or refunds the buyer, and every balance
/// equals the sum of its ledger rows.
pub async fn money_suite<S: crate::MoneyStore>(store: &S) {
    use crate::{Hold, HoldOutcome, Settle};
    store
        .top_up("buyer", 10, Some("test"), "k1", "h1", 1)
        .await
        .expect("top up");
    let h = |id: &str, cost: i64| Hold {
        execution_id: id.into(),
        buyer_company_id: "buyer".into(),
        seller_company_id: "seller".into(),
        platform_company_id: "platform".into(),
        asset_id: "asset".into(),
        api_key_id: 1,
        user_id: "user".into(),
        cost,
        seller_share: cost * 8 / 10,
        platform_fee: cost - cost * 8 / 10,
        at_ms: 2,
    };
    let out = store
        .hold_batch(&[h("e1", 4), h("e1", 4), h("e2", 7), h("e3", 6), h("e4", 0)])
        .await
        .expect("hold batch");
    assert_eq!(
        out,
        vec![
            HoldOutcome::Held { balance_after: 6 },
            HoldOutcome::AlreadyHeld {
                status: "held".into()
            },
            HoldOutcome::Insufficient { balance: 6 },
            HoldOutcome::Held { balance_after: 0 },
            HoldOutcome::Held { balance_after: 0 },
        ]
    );
    let settle = |id: &str, ok: bool| Settle {
        execution_id: id.into(),
        succeeded: ok,
        rows: 1,
        duration_ms: 1.0,
        at_ms: 3,
    };
    let balances = store
        .settle_batch(&[settle("e1", true), settle("e3", false), settle("e1", false)])
        .await
        .expect("settle batch");
    assert_eq!(
        balances,
        vec![0, 6, 6],
        "the second settle of e1 changes nothing"
    );
    assert_eq!(store.balance("seller").await.expect("seller"), 3);
    assert_eq!(store.balance("platform").await.expect("platform"), 1);
    // A short hold left no execution behind, and one alone behaves as in a batch.
    assert_eq!(
        store.hold(&h("e2", 7)).await.expect("hold"),
        HoldOutcome::Insufficient { balance: 6 }
    );
    for c in store.balance_checks().await.expect("checks") {
        assert_eq!(c.balance, c.ledger_sum, "{}", c.company_id);
    }
    let n = store.money_counts().await.expect("counts");
    assert_eq!(
        (
            n.executions_succeeded,
            n.executions_failed,
            n.executions_held,
            n.debits,
            n.refunds
        ),
        (1, 1, 1, 2, 1)
    );
    let mut rows: Vec<_> = store
        .executions_of(&["asset".into(), "other".into()], 2)
        .await
        .expect("executions")
        .into_iter()
        .map(|r| (r.status, r.seller_share, r.duration_ms))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        vec![
            ("failed".to_string(), 4, Some(1.0)),
            ("held".to_string(), 0, None),
            ("succeeded".to_string(), 3, Some(1.0)),
        ],
        "every execution held, the refused one not"
    );
    assert!(store
        .executions_of(&["asset".into()], 3)
        .await
        .expect("later")
        .is_empty());
    assert_eq!(
        store
            .executions_by_buyer("buyer", 2, 3)
            .await
            .expect("count"),
        3
    );
    assert_eq!(
        store
            .executions_by_buyer("buyer", 3, 9)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        store
            .executions_by_buyer("seller", 0, 9)
            .await
            .expect("count"),
        0
    );
    money_outbox_suite(store).await;
}

/// Lone holds and settlements (one statement each on Postgres) and the records the relay
/// claims for them: every movement's `LedgerEntryPosted` with its running balance and every
/// settled execution's `UsageRecorded`, built the same on every store.
async fn money_outbox_suite<S: crate::MoneyStore>(store: &S) {
    use crate::{Hold, HoldOutcome, Settle};
    let earlier = store.claim_outbox(10_000, 100, 1).await.expect("claim");
    let ids: Vec<String> = earlier.iter().map(|r| r.id.clone()).collect();
    store.mark_published(&ids, 100).await.expect("publish");
    store
        .top_up("b2", 5, None, "k2", "h2", 10)
        .await
        .expect("top up");
    // The seller is also the platform: both its movements land on one balance.
    let h = |id: &str, buyer: &str, seller: &str, cost: i64| Hold {
        execution_id: id.into(),
        buyer_company_id: buyer.into(),
        seller_company_id: seller.into(),
        platform_company_id: "s2".into(),
        asset_id: "a2".into(),
        api_key_id: 2,
        user_id: "u2".into(),
        cost,
        seller_share: cost * 3 / 4,
        platform_fee: cost - cost * 3 / 4,
        at_ms: 11,
    };
    let x = |id: &str, ok: bool, rows: i64| Settle {
        execution_id: id.into(),
        succeeded: ok,
        rows,
        duration_ms: 2.5,
        at_ms: 12,
    };
    let held = |n| HoldOutcome::Held { balance_after: n };
    let short = |n| HoldOutcome::Insufficient { balance: n };
    let again = |s: &str| HoldOutcome::AlreadyHeld { status: s.into() };
    let hold = |v: Hold| async move { store.hold(&v).await.expect("hold") };
    let settle = |v: Settle| async move { store.settle_batch(&[v]).await.expect("settle")[0] };
    assert_eq!(hold(h("x1", "b2", "s2", 4)).await, held(1));
    assert_eq!(hold(h("x2", "b2", "s2", 4)).await, short(1));
    assert_eq!(hold(h("x1", "b2", "s2", 4)).await, again("held"));
    assert_eq!(hold(h("x3", "b2", "b2", 0)).await, held(1), "its own asset");
    assert_eq!(hold(h("x4", "nobody", "s2", 1)).await, short(0));
    assert_eq!(settle(x("x1", true, 7)).await, 1);
    assert_eq!(settle(x("x1", false, 0)).await, 1, "settled once only");
    assert_eq!(hold(h("x5", "b2", "s2", 1)).await, held(0));
    assert_eq!(settle(x("x5", false, 0)).await, 1, "refunded");
    assert_eq!(settle(x("x3", true, 2)).await, 1);
    assert_eq!(
        hold(h("x1", "b2", "s2", 4)).await,
        again("succeeded"),
        "a retry of a success is known even when the balance is short now"
    );
    assert_eq!(settle(x("nothing", true, 0)).await, 0);
    assert_eq!(store.balance("s2").await.expect("s2"), 4);
    assert_eq!(store.balance("nobody").await.expect("nobody"), 0);

    let claimed = store.claim_outbox(10_000, 200, 1).await.expect("claim");
    let mut billing = Vec::new();
    let mut usage = Vec::new();
    for r in &claimed {
        match r.topic.as_str() {
            "billing" => {
                let e: schemas::LedgerEntryPosted = schemas::decode(&r.payload).expect("billing");
                assert_eq!(r.key, e.company_id);
                billing.push((
                    e.company_id,
                    e.kind,
                    e.credits,
                    e.balance_after,
                    e.execution_id,
                ));
            }
            "usage" => {
                let u: schemas::UsageRecorded = schemas::decode(&r.payload).expect("usage");
                assert_eq!(r.key, u.buyer_company_id);
                assert_eq!((u.duration_ms, u.at_ms, u.mode.as_str()), (2.5, 12, "live"));
                usage.push((
                    u.execution_id,
                    u.status,
                    u.credits,
                    u.rows,
                    u.seller_company_id,
                ));
            }
            other => panic!("topic {other}"),
        }
    }
    let e = |c: &str, k: &str, n: i64, after: i64, x: Option<&str>| {
        (
            c.to_string(),
            k.to_string(),
            n,
            after,
            x.map(str::to_string),
        )
    };
    billing.sort();
    let mut want = vec![
        e("b2", "topup", 5, 5, None),
        e("b2", "debit", -4, 1, Some("x1")),
        e("s2", "seller_credit", 3, 3, Some("x1")),
        e("s2", "platform_fee", 1, 4, Some("x1")),
        e("b2", "debit", -1, 0, Some("x5")),
        e("b2", "refund", 1, 1, Some("x5")),
    ];
    want.sort();
    assert_eq!(
        billing, want,
        "one record per ledger row, with its balance after"
    );
    usage.sort();
    let u = |x: &str, s: &str, n: i64, rows: i64, seller: &str| {
        (x.to_string(), s.to_string(), n, rows, seller.to_string())
    };
    assert_eq!(
        usage,
        vec![
            u("x1", "succeeded", 4, 7, "s2"),
            u("x3", "succeeded", 0, 2, "b2"),
            u("x5", "failed", 0, 0, "s2"),
        ],
        "one record per settled execution"
    );
    let ids: Vec<String> = claimed.iter().map(|r| r.id.clone()).collect();
    store.mark_published(&ids, 200).await.expect("publish");
    assert_eq!(store.unpublished_count().await.expect("count"), 0);
    for c in store.balance_checks().await.expect("checks") {
        assert_eq!(c.balance, c.ledger_sum, "{}", c.company_id);
    }
}

/// The audit store's rules: records are kept once and listed newest first for either company
/// they name; key uses add up across flushes and keep the latest times.
pub async fn audit_suite<S: crate::AuditStore>(store: &S) {
    use crate::{AuditRecord, KeyUse};
    let rec = |id: &str, at_ms: i64, company: &str, target: Option<&str>| AuditRecord {
        audit_id: id.into(),
        at_ms,
        request_id: Some(format!("req-{id}")),
        company_id: Some(company.into()),
        target_company_id: target.map(str::to_string),
        user_id: Some("u".into()),
        api_key_id: Some(7),
        action: "POST /companies/{company_id}/assets".into(),
        object: format!("/companies/{company}/assets"),
        status: 201,
        outcome: "ok".into(),
    };
    let rows = [rec("a1", 1, "c1", None), rec("a2", 2, "c2", Some("c1"))];
    store.append_audit(&rows).await.expect("append");
    store.append_audit(&rows[..1]).await.expect("append again");
    let (c1, total) = store.audit_log("c1", 10, 0).await.expect("log");
    assert_eq!(total, 2, "once each, as caller or as target");
    assert_eq!(c1, vec![rows[1].clone(), rows[0].clone()], "newest first");
    let (c2, total) = store.audit_log("c2", 10, 0).await.expect("log");
    assert_eq!((c2.len(), total), (1, 1));

    assert_eq!(
        store.key_uses(9).await.expect("uses"),
        KeyUse {
            api_key_id: 9,
            ..Default::default()
        }
    );
    let used = KeyUse {
        api_key_id: 9,
        uses: 3,
        failures: 0,
        last_used_ms: Some(50),
        last_failed_ms: None,
    };
    let refused = KeyUse {
        api_key_id: 9,
        uses: 1,
        failures: 2,
        last_used_ms: Some(40),
        last_failed_ms: Some(45),
    };
    store.add_key_uses(&[used]).await.expect("add");
    store.add_key_uses(&[refused]).await.expect("add");
    assert_eq!(
        store.key_uses(9).await.expect("uses"),
        KeyUse {
            api_key_id: 9,
            uses: 4,
            failures: 2,
            last_used_ms: Some(50),
            last_failed_ms: Some(45),
        }
    );
}

/// The metering projection's rules: an execution counts once however often it is delivered,
/// offsets are kept with the rows, modes never mix, and a day is the buyer's local day
/// (here across the end of March 2026, when Berlin moves to summer time).
pub async fn usage_suite<S: crate::UsageStore + AnalyticsWriter>(store: &S) {
    use crate::usage::{UsageCount, UsageQuery, UsageRow};
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    };
    let row = |id: &str, key: i64, asset: &str, ok: bool, mode: &str, when: &str| UsageRow {
        execution_id: id.into(),
        buyer_company_id: "b1".into(),
        seller_company_id: "s1".into(),
        asset_id: asset.into(),
        api_key_id: key,
        user_id: "u1".into(),
        credits: if ok { 5 } else { 0 },
        seller_credits: if ok { 4 } else { 0 },
        rows: if ok { 2 } else { 0 },
        duration_ms: 1.5,
        status: if ok { "succeeded" } else { "failed" }.into(),
        mode: mode.into(),
        at_ms: at(when),
    };
    let batch = vec![
        // 00:30 on 29 March in Berlin (CET, +1).
        row("x1", 1, "a1", true, "live", "2026-03-28T23:30:00Z"),
        // 00:30 on 30 March in Berlin (CEST, +2): the same UTC hour would be the 29th at +1.
        row("x2", 1, "a2", true, "live", "2026-03-29T22:30:00Z"),
        row("x3", 2, "a1", false, "live", "2026-03-29T23:00:00Z"),
        row("t1", 1, "a1", true, "test", "2026-03-29T23:00:00Z"),
        // Before the month in Berlin (still February there).
        row("x0", 1, "a1", true, "live", "2026-02-28T22:59:00Z"),
    ];
    let offsets = vec![StoredOffset {
        topic: "usage".into(),
        partition: 0,
        next_offset: 5,
    }];
    let mut other = row("y1", 3, "a1", true, "live", "2026-03-10T12:00:00Z");
    other.buyer_company_id = "b2".into();
    // The seller running its own asset: usage of the seller, never a sale.
    let mut own = row("o1", 4, "a1", true, "live", "2026-03-11T12:00:00Z");
    own.buyer_company_id = "s1".into();
    let first = store
        .write_usage("metering", batch.clone(), offsets.clone())
        .await
        .expect("write");
    assert_eq!(first, 5);
    // A redelivery of the whole batch, plus one duplicate inside a batch: nothing new.
    let mut again = batch.clone();
    again.push(batch[1].clone());
    again.push(other);
    again.push(own);
    assert_eq!(
        store
            .write_usage("metering", again, offsets.clone())
            .await
            .expect("rewrite"),
        2,
        "only the other buyers' rows are new"
    );
    assert_eq!(store.offsets("metering").await.expect("offsets"), offsets);
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");
    let (from, to) = (at("2026-02-28T23:00:00Z"), at("2026-03-31T22:00:00Z"));
    let q = |mode: &str| UsageQuery {
        buyer_company_id: "b1".into(),
        api_key_id: None,
        from_ms: from,
        to_ms: to,
        mode: mode.into(),
        tz: crate::offset_segments(tz, from, to),
    };
    let live = store.usage_report(&q("live")).await.expect("report");
    let n = |executions: u64, succeeded: u64| UsageCount {
        executions,
        succeeded,
        failed: executions - succeeded,
        credits: 5 * succeeded as i64,
        rows: 2 * succeeded as i64,
    };
    assert_eq!(live.total, n(3, 2));
    let day = |d: &str| at(&format!("{d}T00:00:00Z"));
    assert_eq!(
        live.by_day,
        vec![(day("2026-03-29"), n(1, 1)), (day("2026-03-30"), n(2, 1))],
        "local days"
    );
    assert_eq!(live.by_key, vec![(1, n(2, 2)), (2, n(1, 0))]);
    assert_eq!(
        live.by_asset,
        vec![("a1".to_string(), n(2, 1)), ("a2".to_string(), n(1, 1))]
    );
    let test = store.usage_report(&q("test")).await.expect("test mode");
    assert_eq!(test.total, n(1, 1), "test mode apart");
    let mut none = q("live");
    none.buyer_company_id = "nobody".into();
    assert_eq!(
        store.usage_report(&none).await.expect("empty").total,
        UsageCount::default()
    );
    let mut one_key = q("live");
    one_key.api_key_id = Some(2);
    assert_eq!(
        store.usage_report(&one_key).await.expect("one key").total,
        n(1, 0),
        "one key's usage"
    );
    seller_reads(store, tz, (from, to), &at).await;
}

/// The seller side of `usage_suite`'s rows: sales of seller `s1` to `b1` and `b2` in March in
/// Berlin (its own run and the test-mode run left out), by period, asset and buyer.
async fn seller_reads<S: crate::UsageStore>(
    store: &S,
    tz: chrono_tz::Tz,
    (from, to): (i64, i64),
    at: &dyn Fn(&str) -> i64,
) {
    use crate::seller::{Bucket, Segment, SellerGroup, SellerQuery};
    let march = SellerQuery {
        seller_company_id: "s1".into(),
        from_ms: from,
        to_ms: to,
        tz: crate::offset_segments(tz, from, to),
    };
    let rows = |period: Option<Bucket>, by: Option<Segment>, q: &SellerQuery| {
        let q = q.clone();
        async move {
            store
                .seller_rows(&q, SellerGroup { period, by })
                .await
                .expect("seller rows")
        }
    };
    let day = |d: &str| at(&format!("{d}T00:00:00Z"));
    let brief = |r: &crate::seller::SellerRow| {
        (
            r.period_ms,
            r.key.clone(),
            r.executions,
            r.succeeded,
            r.revenue,
            r.spent,
            r.buyers,
        )
    };
    let month: Vec<_> = rows(Some(Bucket::Month), None, &march)
        .await
        .iter()
        .map(brief)
        .collect();
    assert_eq!(
        month,
        vec![(day("2026-03-01"), String::new(), 4, 3, 12, 15, 2)]
    );
    let days: Vec<_> = rows(Some(Bucket::Day), None, &march)
        .await
        .iter()
        .map(brief)
        .collect();
    assert_eq!(
        days,
        vec![
            (day("2026-03-10"), String::new(), 1, 1, 4, 5, 1),
            (day("2026-03-29"), String::new(), 1, 1, 4, 5, 1),
            (day("2026-03-30"), String::new(), 2, 1, 4, 5, 1),
        ],
        "local days"
    );
    let weeks: Vec<i64> = rows(Some(Bucket::Week), None, &march)
        .await
        .iter()
        .map(|r| r.period_ms)
        .collect();
    assert_eq!(
        weeks,
        vec![day("2026-03-09"), day("2026-03-23"), day("2026-03-30")],
        "Monday weeks"
    );
    let quarter: Vec<_> = rows(Some(Bucket::Quarter), None, &march)
        .await
        .iter()
        .map(brief)
        .collect();
    assert_eq!(
        quarter,
        vec![(day("2026-01-01"), String::new(), 4, 3, 12, 15, 2)]
    );
    let assets: Vec<_> = rows(None, Some(Segment::Asset), &march)
        .await
        .iter()
        .map(brief)
        .collect();
    assert_eq!(
        assets,
        vec![
            (0, "a1".to_string(), 3, 2, 8, 10, 2),
            (0, "a2".to_string(), 1, 1, 4, 5, 1)
        ]
    );
    let buyers = rows(None, Some(Segment::Buyer), &march).await;
    assert_eq!(
        buyers.iter().map(brief).collect::<Vec<_>>(),
        vec![
            (0, "b1".to_string(), 3, 2, 8, 10, 1),
            (0, "b2".to_string(), 1, 1, 4, 5, 1)
        ]
    );
    assert_eq!(
        (buyers[0].first_ms, buyers[0].last_ms),
        (at("2026-03-28T23:30:00Z"), at("2026-03-29T23:00:00Z"))
    );
    assert!((buyers[0].duration_ms_sum - 4.5).abs() < 1e-9);
    let by_day_asset = rows(Some(Bucket::Day), Some(Segment::Asset), &march).await;
    assert_eq!(
        by_day_asset.len(),
        4,
        "(10th, a1), (29th, a1), (30th, a1), (30th, a2)"
    );
    let all = SellerQuery::all_time("s1");
    let ever: Vec<_> = rows(None, None, &all).await.iter().map(brief).collect();
    assert_eq!(
        ever,
        vec![(0, String::new(), 5, 4, 16, 20, 2)],
        "all time, February included"
    );
    // b1 first bought in February, so March has one new buyer (b2); all time has two.
    assert_eq!(
        store
            .seller_new_buyers(&march, Some(Bucket::Month))
            .await
            .expect("new"),
        vec![(day("2026-03-01"), 1)]
    );
    assert_eq!(
        store.seller_new_buyers(&all, None).await.expect("new ever"),
        vec![(0, 2)]
    );
    let nobody = SellerQuery::all_time("nobody");
    assert!(rows(None, None, &nobody).await.is_empty());
}

/// The rate-limit store's rules: a call takes a unit of every counter or of none, a window
/// admits exactly its limit (also under concurrent calls), and a concurrency slot is held
/// until released or expired.
pub async fn limits_suite<S: crate::limits::LimitStore>(store: &S) {
    use crate::limits::{fixed, DAY_MS, MINUTE_MS};
    let ns = format!("t{}", uuid::Uuid::now_v7().simple());
    let now = 10 * DAY_MS + 5_000;
    let both = |t: i64| {
        vec![
            fixed(format!("{ns}:minute"), t, MINUTE_MS, 3),
            fixed(format!("{ns}:day"), t, DAY_MS, 5),
        ]
    };
    for n in 1..=3u64 {
        assert_eq!(
            store.take(&both(now), now).await.expect("take"),
            Some(vec![n, n])
        );
    }
    assert_eq!(
        store.take(&both(now), now).await.expect("take"),
        None,
        "minute full"
    );
    assert_eq!(
        store.counts(&both(now)).await.expect("counts"),
        vec![3, 3],
        "nothing taken"
    );
    let later = now + MINUTE_MS;
    assert_eq!(
        store.take(&both(later), later).await.expect("take"),
        Some(vec![1, 4])
    );
    assert_eq!(
        store.take(&both(later), later).await.expect("take"),
        Some(vec![2, 5])
    );
    assert_eq!(
        store.take(&both(later), later).await.expect("take"),
        None,
        "day full"
    );
    assert_eq!(
        store.counts(&both(later)).await.expect("counts"),
        vec![2, 5]
    );

    // Twenty at once against a limit of ten: exactly ten get through.
    let race = vec![fixed(format!("{ns}:race"), now, MINUTE_MS, 10)];
    let calls = (0..20).map(|_| store.take(&race, now));
    let taken = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(taken, 10);

    let key = format!("{ns}:concurrent");
    let exp = now + 60_000;
    assert!(store
        .acquire(&key, &format!("{ns}-1"), 2, now, exp)
        .await
        .expect("1"));
    assert!(store
        .acquire(&key, &format!("{ns}-2"), 2, now, exp)
        .await
        .expect("2"));
    assert!(!store
        .acquire(&key, &format!("{ns}-3"), 2, now, exp)
        .await
        .expect("3"));
    store.release(&format!("{ns}-1")).await.expect("release");
    assert!(store
        .acquire(&key, &format!("{ns}-3"), 2, now, exp)
        .await
        .expect("3 again"));
    // Once the others' leases expire (a process that died), their slots are free.
    let after = exp + 1;
    assert!(store
        .acquire(&key, &format!("{ns}-4"), 1, after, after + 60_000)
        .await
        .expect("4"));
    let calls = (0..6).map(|i| {
        let (key, id) = (format!("{ns}:five"), format!("{ns}-five-{i}"));
        async move { store.acquire(&key, &id, 5, now, exp).await }
    });
    let slots = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert_eq!(slots, 5, "six at once on five slots: one refused");

    // A whole admission: the slot and the counters, or nothing.
    use crate::limits::{Admission, Slot};
    let slot = |i: usize| Slot {
        key: format!("{ns}:admit-slots"),
        lease_id: format!("{ns}-admit-{i}"),
        max: 2,
        expires_ms: exp,
    };
    let minute = vec![fixed(format!("{ns}:admit-minute"), now, MINUTE_MS, 2)];
    assert_eq!(
        store.admit(&slot(1), &minute, now).await.expect("1"),
        Admission::Taken(vec![1])
    );
    assert_eq!(
        store.admit(&slot(2), &minute, now).await.expect("2"),
        Admission::Taken(vec![2])
    );
    assert_eq!(
        store.admit(&slot(3), &minute, now).await.expect("3"),
        Admission::NoSlot,
        "both slots held"
    );
    assert_eq!(
        store.counts(&minute).await.expect("counts"),
        vec![2],
        "no slot, nothing counted"
    );
    store.release(&slot(1).lease_id).await.expect("release");
    assert_eq!(
        store.admit(&slot(3), &minute, now).await.expect("3 again"),
        Admission::Full,
        "the minute is full"
    );
    // The full minute took no slot: one is still free for a call under other counters.
    let other = vec![fixed(format!("{ns}:admit-other"), now, MINUTE_MS, 5)];
    assert_eq!(
        store.admit(&slot(4), &other, now).await.expect("4"),
        Admission::Taken(vec![1])
    );
    assert_eq!(
        store.admit(&slot(5), &other, now).await.expect("5"),
        Admission::NoSlot
    );
    assert_eq!(
        store
            .admit(&slot(6), &[], after)
            .await
            .expect("no counters"),
        Admission::Taken(Vec::new()),
        "expired slots are free"
    );
}
