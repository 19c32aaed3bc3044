//! Events posted over HTTP come out of stats, pageviews and metrics with exactly the expected
//! numbers: visitors, sessions, bounces, pages, countries (test GeoIP), browsers, referrers,
//! UTM; in UTC and in Europe/Berlin across the 2026-03-29 DST change; with and without bots;
//! all sent as late events with past timestamps.

use crate::common::*;
use serde_json::{json, Value};

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_WIN: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

async fn send(c: &Client, ip: &str, ua: &str, body: Value) {
    let r = c
        .req(reqwest::Method::POST, "/api/collect")
        .header("x-forwarded-for", ip)
        .header("user-agent", ua)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.headers()
            .get("x-tally-ingest-ack")
            .and_then(|v| v.to_str().ok()),
        Some("durable")
    );
}

fn pv(site: &str, url: &str, ts: &str) -> Value {
    json!({"website_id": site, "type": "pageview", "url": url, "timestamp": ts})
}

async fn post_dataset(c: &Client, site: &str) {
    // Visitor 1 (GB, Chrome): one session of two pageviews and an event, 6 minutes long.
    let mut first = pv(site, "https://example.com/home", "2026-03-28T10:00:00Z");
    first["referrer"] = json!("https://www.google.com/search?q=tally");
    first["visitor_id"] = json!("v1");
    let mut second = pv(site, "https://example.com/pricing", "2026-03-28T10:05:00Z");
    second["referrer"] = json!("https://example.com/home");
    second["visitor_id"] = json!("v1");
    let signup = json!({"website_id": site, "type": "event", "event_name": "signup", "url": "https://example.com/pricing",
        "event_data": {"plan": "pro"}, "visitor_id": "v1", "timestamp": "2026-03-28T10:06:00Z"});
    send(c, "81.2.69.10", CHROME_MAC, json!([first, second, signup])).await;

    // Visitor 2 (DE, Firefox, server-side visitor id): a bounce at 23:30Z, which is already
    // 2026-03-29 in Berlin.
    let mut v2 = pv(site, "https://example.com/home", "2026-03-28T23:30:00Z");
    v2["referrer"] = json!("https://news.ycombinator.com/item?id=1");
    send(c, "85.214.1.1", FIREFOX_WIN, v2).await;

    // Visitor 3 (US, iPhone): two bounces 45 minutes apart, after the DST change: 22:30Z is
    // 2026-03-30 00:30 in Berlin (UTC+2), but still 03-29 in UTC.
    let mut a = pv(
        site,
        "https://example.com/home?utm_source=newsletter&utm_medium=email",
        "2026-03-29T22:30:00Z",
    );
    a["visitor_id"] = json!("v3");
    let mut b = pv(site, "https://example.com/blog", "2026-03-29T23:15:00Z");
    b["visitor_id"] = json!("v3");
    send(c, "216.160.83.5", IPHONE, a).await;
    send(c, "216.160.83.5", IPHONE, b).await;

    // A crawler: flagged, not dropped.
    let mut bot = pv(site, "https://example.com/home", "2026-03-28T12:00:00Z");
    bot["visitor_id"] = json!("bot1");
    send(c, "81.2.69.20", GOOGLEBOT, bot).await;
}

const RANGE: &str = "start_date=2026-03-28&end_date=2026-03-30";

/// One field of every point of `data.series` (pageviews) or row of `data.rows` (metrics).
fn values(body: &Value, field: &str) -> Vec<Value> {
    let data = &body["data"];
    data["series"]
        .as_array()
        .or_else(|| data["rows"].as_array())
        .map(|rows| rows.iter().map(|r| r[field].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_report_exact_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, c) = start_app(test_settings(dir.path())).await;
    let site = c.website("Example", "Europe/Berlin").await;
    post_dataset(&c, &site).await;
    c.wait_idle().await;

    let (status, s) = c.get(&format!("/api/websites/{site}/stats?{RANGE}")).await;
    assert_eq!(status, 200, "{s}");
    let d = &s["data"];
    assert_eq!(
        (
            d["pageviews"].clone(),
            d["visitors"].clone(),
            d["sessions"].clone()
        ),
        (json!(5), json!(3), json!(4))
    );
    assert_eq!(d["bounce_rate"], json!(0.75));
    assert_eq!(d["avg_duration_seconds"], json!(90.0));
    assert_eq!(d["timezone"], "Europe/Berlin");
    assert_eq!(d["prev_pageviews"], json!(0));

    let (_, s) = c
        .get(&format!(
            "/api/websites/{site}/stats?{RANGE}&include_bots=true"
        ))
        .await;
    let d = &s["data"];
    assert_eq!(
        (
            d["pageviews"].clone(),
            d["visitors"].clone(),
            d["sessions"].clone()
        ),
        (json!(6), json!(4), json!(5))
    );
    assert_eq!(d["bounce_rate"], json!(0.8));

    let (_, s) = c
        .get(&format!(
            "/api/websites/{site}/stats?{RANGE}&filter_country=GB"
        ))
        .await;
    assert_eq!(
        (
            s["data"]["pageviews"].clone(),
            s["data"]["visitors"].clone()
        ),
        (json!(2), json!(1))
    );

    // The previous period of 03-31..04-02 is 03-28..03-30.
    let (_, s) = c
        .get(&format!(
            "/api/websites/{site}/stats?start_date=2026-03-31&end_date=2026-04-02"
        ))
        .await;
    assert_eq!(
        (
            s["data"]["pageviews"].clone(),
            s["data"]["prev_pageviews"].clone()
        ),
        (json!(0), json!(5))
    );

    // Days in Berlin (the website's timezone) and in UTC differ exactly as the DST change says.
    let (_, berlin) = c
        .get(&format!(
            "/api/websites/{site}/pageviews?{RANGE}&granularity=day"
        ))
        .await;
    assert_eq!(
        values(&berlin, "date"),
        vec![
            json!("2026-03-28"),
            json!("2026-03-29"),
            json!("2026-03-30")
        ]
    );
    assert_eq!(
        values(&berlin, "pageviews"),
        vec![json!(2), json!(1), json!(2)]
    );
    assert_eq!(
        values(&berlin, "visitors"),
        vec![json!(1), json!(1), json!(1)]
    );
    let (_, utc) = c
        .get(&format!(
            "/api/websites/{site}/pageviews?{RANGE}&granularity=day&timezone=UTC"
        ))
        .await;
    assert_eq!(
        values(&utc, "pageviews"),
        vec![json!(3), json!(2), json!(0)]
    );
    assert_eq!(values(&utc, "visitors"), vec![json!(2), json!(1), json!(0)]);

    // The DST day in Berlin has 23 hourly buckets; visitor 2's bounce is at 00:30 local.
    let (_, hours) = c
        .get(&format!("/api/websites/{site}/pageviews?start_date=2026-03-29&end_date=2026-03-29&granularity=hour"))
        .await;
    assert_eq!(hours["data"]["granularity"], "hour");
    let rows = hours["data"]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 23);
    // Hours are labelled by the UTC instant the local hour starts at.
    assert_eq!(rows[0]["date"], "2026-03-28T23:00:00Z", "00:00 CET");
    assert_eq!(rows[0]["pageviews"], 1);
    assert_eq!(
        rows[2]["date"], "2026-03-29T01:00:00Z",
        "03:00 CEST: 02:00 does not exist that day"
    );
    assert_eq!(hours["data"]["compare_series"], Value::Null);
    assert!(hours.get("compare").is_none());

    // Over 60 days without a granularity: months.
    let (_, months) = c
        .get(&format!(
            "/api/websites/{site}/pageviews?start_date=2026-01-01&end_date=2026-03-31"
        ))
        .await;
    assert_eq!(months["data"]["granularity"], "month");
    assert_eq!(
        values(&months, "date"),
        vec![json!("2026-01"), json!("2026-02"), json!("2026-03")]
    );
    assert_eq!(
        values(&months, "pageviews"),
        vec![json!(0), json!(0), json!(5)]
    );

    let (status, pages) = c
        .get(&format!("/api/websites/{site}/metrics?type=page&{RANGE}"))
        .await;
    assert_eq!(status, 200, "{pages}");
    assert_eq!(
        values(&pages, "value"),
        vec![json!("/home"), json!("/blog"), json!("/pricing")]
    );
    assert_eq!(
        values(&pages, "visitors"),
        vec![json!(3), json!(1), json!(1)]
    );
    assert_eq!(
        values(&pages, "pageviews"),
        vec![json!(3), json!(1), json!(1)]
    );
    assert_eq!(pages["data"]["type"], "page");
    // /home: visitor 1's 6-minute session and two bounces; /blog: a bounce; /pricing: the
    // 6-minute session.
    assert_eq!(
        values(&pages, "bounce_rate"),
        vec![json!(66.7), json!(100.0), json!(0.0)]
    );
    assert_eq!(
        values(&pages, "avg_duration_seconds"),
        vec![json!(120.0), json!(0.0), json!(360.0)]
    );
    assert_eq!(
        pages["pagination"],
        json!({"total": 3, "limit": 10, "offset": 0, "has_more": false})
    );
    assert_eq!(pages["compare"], Value::Null);
    assert!(pages["data"]["rows"][0].get("prev_visitors").is_none());
    // Above 100 the limit is 100, as the peer clamps it; zero is refused.
    let (_, many) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=page&{RANGE}&limit=500"
        ))
        .await;
    assert_eq!(many["pagination"]["limit"], json!(100));
    let (status, _) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=page&{RANGE}&limit=0"
        ))
        .await;
    assert_eq!(status, 400);

    let (_, p2) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=page&{RANGE}&limit=1&offset=1"
        ))
        .await;
    assert_eq!(values(&p2, "value"), vec![json!("/blog")]);
    assert_eq!(p2["pagination"]["has_more"], json!(true));

    let (_, countries) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=country&{RANGE}"
        ))
        .await;
    assert_eq!(
        values(&countries, "value"),
        vec![json!("GB"), json!("US"), json!("DE")]
    );
    let (_, cities) = c
        .get(&format!("/api/websites/{site}/metrics?type=city&{RANGE}"))
        .await;
    assert_eq!(
        values(&cities, "value"),
        vec![json!("London"), json!("Milton"), json!("Berlin")]
    );

    let (_, browsers) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=browser&{RANGE}"
        ))
        .await;
    assert_eq!(
        values(&browsers, "value"),
        vec![json!("Chrome"), json!("Safari"), json!("Firefox")]
    );
    let (_, with_bots) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=browser&{RANGE}&include_bots=true"
        ))
        .await;
    assert_eq!(with_bots["pagination"]["total"], json!(4));
    let (_, devices) = c
        .get(&format!("/api/websites/{site}/metrics?type=device&{RANGE}"))
        .await;
    assert_eq!(
        values(&devices, "value"),
        vec![json!("desktop"), json!("mobile")]
    );

    let (_, refs) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=referrer&{RANGE}"
        ))
        .await;
    // Visitor 1's second pageview (a self-referral) and its event, and visitor 3, came direct.
    assert_eq!(
        values(&refs, "value"),
        vec![
            json!("(direct)"),
            json!("google.com"),
            json!("news.ycombinator.com")
        ]
    );
    assert_eq!(
        values(&refs, "visitors"),
        vec![json!(2), json!(1), json!(1)]
    );
    let (_, utm) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=utm_source&{RANGE}"
        ))
        .await;
    assert_eq!(values(&utm, "value"), vec![json!("newsletter")]);
    let (_, names) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=event_name&{RANGE}"
        ))
        .await;
    assert_eq!(values(&names, "value"), vec![json!("signup")]);
    assert_eq!(
        values(&names, "pageviews"),
        vec![json!(1)],
        "occurrences, as the peer counts them"
    );

    // Sessions: visitor 1 entered on /home and left from /pricing; the three bounces are their
    // own entry and exit.
    let (_, entries) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=entry_page&{RANGE}"
        ))
        .await;
    assert_eq!(
        values(&entries, "value"),
        vec![json!("/home"), json!("/blog")]
    );
    assert_eq!(
        values(&entries, "pageviews"),
        vec![json!(3), json!(1)],
        "sessions entering"
    );
    let (_, exits) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=exit_page&{RANGE}"
        ))
        .await;
    assert_eq!(
        values(&exits, "value"),
        vec![json!("/home"), json!("/blog"), json!("/pricing")]
    );
    let (s, _) = c
        .get(&format!(
            "/api/websites/{site}/stats?filter_entry_page=/home"
        ))
        .await;
    assert_eq!(s, 400, "session-level types are not filters");
    let (_, not_found) = c.get("/api/websites/nope/stats").await;
    assert_eq!(not_found["error"]["field"], Value::Null, "{not_found}");

    comparisons_and_filters(&c, &site).await;

    // Realtime sees an event sent now.
    send(
        &c,
        "89.160.20.1",
        CHROME_MAC,
        json!({"website_id": site, "url": "https://example.com/now"}),
    )
    .await;
    c.wait_idle().await;
    let (_, rt) = c.get(&format!("/api/websites/{site}/realtime")).await;
    assert_eq!(rt["data"]["active_visitors"], json!(1));
    assert_eq!(rt["data"]["recent_events"][0]["url"], "/now");
    assert_eq!(rt["data"]["recent_events"][0]["event_type"], "pageview");
    assert_eq!(
        rt["data"]["pagination"],
        json!({"limit": 100, "total_in_window": 1})
    );
    assert_eq!(rt["data"]["recent_events"][0]["country"], "SE");

    app.shutdown().await.expect("shutdown");
}

/// `compare_mode` on stats, pageviews and metrics; the substring page filter, the host name
/// filter and `(direct)` as a referrer filter.
async fn comparisons_and_filters(c: &Client, site: &str) {
    // Berlin 03-29..03-30 (visitor 2's bounce, visitor 3's two) against 03-28 (visitor 1).
    let two_days = "start_date=2026-03-29&end_date=2026-03-30";
    let custom = "compare_mode=custom&compare_start_date=2026-03-28&compare_end_date=2026-03-28";
    let block = json!({
        "mode": "custom",
        "primary_range": ["2026-03-29", "2026-03-30"],
        "comparison_range": ["2026-03-28", "2026-03-28"],
    });
    let (status, s) = c
        .get(&format!("/api/websites/{site}/stats?{two_days}&{custom}"))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (
            s["data"]["pageviews"].clone(),
            s["data"]["prev_pageviews"].clone(),
            s["data"]["prev_visitors"].clone(),
            s["data"]["prev_avg_duration_seconds"].clone()
        ),
        (json!(3), json!(2), json!(1), json!(360.0))
    );
    assert_eq!(s["compare"], block);
    let (_, plain) = c
        .get(&format!("/api/websites/{site}/stats?{two_days}"))
        .await;
    assert!(plain.get("compare").is_none());
    let (_, year) = c
        .get(&format!(
            "/api/websites/{site}/stats?{two_days}&compare_mode=previous_year"
        ))
        .await;
    assert_eq!(year["data"]["prev_pageviews"], json!(0));
    assert_eq!(
        year["compare"]["comparison_range"],
        json!(["2025-03-29", "2025-03-30"])
    );

    let (_, series) = c
        .get(&format!(
            "/api/websites/{site}/pageviews?{two_days}&granularity=day&{custom}"
        ))
        .await;
    assert_eq!(
        series["data"]["compare_series"],
        json!([
            {"date": "2026-03-29", "compare_date": "2026-03-28", "pageviews": 2, "visitors": 1},
            {"date": "2026-03-30", "compare_date": null, "pageviews": 0, "visitors": 0},
        ])
    );
    assert_eq!(series["compare"], block);

    let (_, pages) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=page&{two_days}&{custom}"
        ))
        .await;
    assert_eq!(pages["compare"], block);
    let rows = &pages["data"]["rows"];
    assert_eq!(rows[0]["value"], "/home");
    assert_eq!(
        (
            rows[0]["visitors"].clone(),
            rows[0]["prev_visitors"].clone(),
            rows[0]["prev_pageviews"].clone(),
            rows[0]["delta_visitors_abs"].clone(),
            rows[0]["delta_visitors_pct"].clone()
        ),
        (json!(2), json!(1), json!(1), json!(1), json!(1.0))
    );
    assert_eq!(rows[1]["value"], "/blog");
    assert_eq!(
        (
            rows[1]["prev_visitors"].clone(),
            rows[1]["delta_visitors_abs"].clone(),
            rows[1]["delta_visitors_pct"].clone()
        ),
        (json!(0), json!(1), Value::Null)
    );

    for (bad, field) in [
        ("compare_mode=last_week", "compare_mode"),
        ("compare_mode=custom", "compare_start_date"),
        (
            "compare_mode=custom&compare_start_date=2026-01-01&compare_end_date=2026-03-01",
            "compare_start_date",
        ),
    ] {
        let (status, body) = c
            .get(&format!("/api/websites/{site}/stats?{two_days}&{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["details"]["parameter"], field, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }

    let stats = |q: String| async move {
        let (status, s) = c
            .get(&format!("/api/websites/{site}/stats?{RANGE}&{q}"))
            .await;
        assert_eq!(status, 200, "{q}: {s}");
        (
            s["data"]["pageviews"].clone(),
            s["data"]["visitors"].clone(),
        )
    };
    assert_eq!(stats("filter_page=blo".into()).await, (json!(1), json!(1)));
    assert_eq!(
        stats("filter_hostname=EXAMPLE.com".into()).await,
        (json!(5), json!(3))
    );
    assert_eq!(
        stats("filter_hostname=other.example".into()).await,
        (json!(0), json!(0))
    );
    assert_eq!(
        stats("filter_referrer=(direct)".into()).await,
        (json!(3), json!(2))
    );
}
