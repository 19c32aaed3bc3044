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
        browser: Some("Firefox".into()),
        ..Default::default()
    }
}

fn dataset() -> Vec<StoredEvent> {
    let mut signup = ev(4, 1, 10, 90, "/b");
    signup.event_type = "event".into();
    signup.event_name = Some("signup".into());
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

    let (rows, total) = store
        .breakdown(&scope(false), Dimension::Page, 10, 0)
        .await
        .expect("pages");
    assert_eq!(total, 2);
    assert_eq!(
        rows[0],
        MetricRow {
            value: "/a".into(),
            visitors: 2,
            pageviews: 2,
            events: 2
        }
    );
    assert_eq!(
        rows[1],
        MetricRow {
            value: "/b".into(),
            visitors: 1,
            pageviews: 1,
            events: 2
        }
    );
    let (page2, _) = store
        .breakdown(&scope(false), Dimension::Page, 1, 1)
        .await
        .expect("page 2");
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].value, "/b");
    let (names, _) = store
        .breakdown(&scope(false), Dimension::EventName, 10, 0)
        .await
        .expect("events");
    assert_eq!(
        names,
        vec![MetricRow {
            value: "signup".into(),
            visitors: 1,
            pageviews: 0,
            events: 1
        }]
    );

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
            visitors: 2
        }]
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
            visitors: 2
        }]
    );
    let months = store
        .series(&scope(false), Granularity::Month, &utc)
        .await
        .expect("series");
    assert_eq!(months.len(), 1);
    assert_eq!(months[0].local_start_ms, 1_772_323_200_000, "2026-03-01");

    assert_eq!(
        store.active_visitors(W, T0 + 60_000).await.expect("active"),
        2
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
        }),
        EntityEvent::WebsiteCreated(WebsiteCreated {
            id: "w2".into(),
            name: "Shop".into(),
            domain: "shop.example".into(),
            timezone: "Europe/Berlin".into(),
            created_at_ms: 2,
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
        let keys = store.keys().await.expect("keys");
        assert_eq!(
            keys.iter()
                .map(|k| k.key_last4.as_str())
                .collect::<Vec<_>>(),
            vec!["1111"]
        );
        assert_eq!(
            store.key_by_hash("hash1").await.expect("key"),
            Some(KeyOwner {
                key_id: "k1".into(),
                user_id: "u1".into()
            })
        );
        assert!(
            store.key_by_hash("hash2").await.expect("key").is_none(),
            "revoked key"
        );
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
