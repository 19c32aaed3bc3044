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
    sessions_list_and_detail(&c, &site).await;
    custom_events(&c).await;
    goals_and_funnels(&c, &site).await;
    attribution_by_channel(&c, &site).await;
    saved_reports(&c, &site).await;
    journeys_and_retention(&c, &site).await;
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
    // (After the realtime check: clicks and pixel views are events of now too.)
    links_and_pixels(&c, &site).await;
    shares_and_export(&c, &site).await;

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

/// `(entry_page, last_seen)` of each session of a list.
fn session_rows(body: &Value) -> Vec<(String, String)> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["entry_page"].as_str().unwrap_or("").to_string(),
                r["last_seen"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The session list, newest last event first, paged by cursor; with bots, filters and a day
/// of the DST change; and one session with its events.
async fn sessions_list_and_detail(c: &Client, site: &str) {
    let list = format!("/api/websites/{site}/sessions?{RANGE}");
    let (s, page1) = c.get(&format!("{list}&limit=2")).await;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(
        session_rows(&page1),
        vec![
            ("/blog".into(), "2026-03-29T23:15:00.000Z".into()),
            ("/home".into(), "2026-03-29T22:30:00.000Z".into()),
        ]
    );
    assert_eq!(page1["pagination"]["limit"], 2);
    assert_eq!(page1["pagination"]["has_more"], true);
    let first = &page1["data"][0];
    assert_eq!(
        (
            &first["country"],
            &first["browser"],
            &first["device_type"],
            &first["pageview_count"],
            &first["duration_seconds"]
        ),
        (
            &json!("US"),
            &json!("Safari"),
            &json!("mobile"),
            &json!(1),
            &json!(0)
        )
    );
    assert_eq!(
        first["session_id"].as_str().map(str::len),
        Some(16),
        "{first}"
    );
    let cursor = page1["pagination"]["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    let (_, page2) = c.get(&format!("{list}&limit=2&cursor={cursor}")).await;
    assert_eq!(
        session_rows(&page2),
        vec![
            ("/home".into(), "2026-03-28T23:30:00.000Z".into()),
            ("/home".into(), "2026-03-28T10:06:00.000Z".into()),
        ]
    );
    assert_eq!(
        page2["pagination"],
        json!({"limit": 2, "next_cursor": null, "has_more": false})
    );
    let v1 = &page2["data"][1];
    assert_eq!(
        (
            &v1["first_seen"],
            &v1["duration_seconds"],
            &v1["pageview_count"],
            &v1["event_count"],
            &v1["exit_page"],
            &v1["country"]
        ),
        (
            &json!("2026-03-28T10:00:00.000Z"),
            &json!(360),
            &json!(2),
            &json!(3),
            &json!("/pricing"),
            &json!("GB")
        )
    );
    // The crawler's session appears only with bots.
    let (_, bots) = c.get(&format!("{list}&include_bots=true")).await;
    assert_eq!(bots["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(bots["data"][3]["last_seen"], "2026-03-28T12:00:00.000Z");
    // A filter picks sessions that have a matching event, each shown whole.
    let (_, pricing) = c.get(&format!("{list}&filter_page=/pricing")).await;
    assert_eq!(session_rows(&pricing).len(), 1);
    assert_eq!(pricing["data"][0]["event_count"], 3);
    // 2026-03-29 in Berlin is 23 hours (23:00Z to 22:00Z): visitor 2's bounce only; in UTC
    // the same date holds visitor 3's two sessions.
    let (_, berlin) = c
        .get(&format!(
            "/api/websites/{site}/sessions?start_date=2026-03-29&end_date=2026-03-29"
        ))
        .await;
    assert_eq!(
        session_rows(&berlin),
        vec![("/home".into(), "2026-03-28T23:30:00.000Z".into())]
    );
    let (_, utc) = c
        .get(&format!(
            "/api/websites/{site}/sessions?start_date=2026-03-29&end_date=2026-03-29&timezone=UTC"
        ))
        .await;
    assert_eq!(session_rows(&utc).len(), 2);

    // One session: its events in order, the custom event's data as sent.
    let id = v1["session_id"].as_str().expect("id");
    let (s, one) = c.get(&format!("/api/websites/{site}/sessions/{id}")).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["data"]["session"], *v1);
    assert_eq!(one["data"]["truncated"], false);
    let events = one["data"]["events"].as_array().expect("events");
    let shape: Vec<(Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["event_type"].clone(),
                e["url"].clone(),
                e["event_name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (json!("pageview"), json!("/home"), Value::Null),
            (json!("pageview"), json!("/pricing"), Value::Null),
            (json!("event"), json!("/pricing"), json!("signup")),
        ]
    );
    let data: Value =
        serde_json::from_str(events[2]["event_data"].as_str().expect("event data")).expect("json");
    assert_eq!(data, json!({"plan": "pro"}));
    assert_eq!(events[2]["created_at"], "2026-03-28T10:06:00.000Z");

    // Unknown and malformed ids are 404; a bad cursor or limit names its parameter.
    for bad in ["0000000000000001", "not-a-session"] {
        let (s, _) = c.get(&format!("/api/websites/{site}/sessions/{bad}")).await;
        assert_eq!(s, 404, "{bad}");
    }
    let (s, b) = c.get(&format!("{list}&cursor=garbage")).await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("cursor")), "{b}");
    let (s, b) = c.get(&format!("{list}&limit=0")).await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("limit")), "{b}");
    let (_, b) = c.get(&format!("{list}&limit=500")).await;
    assert_eq!(b["pagination"]["limit"], 200);
}

fn custom(site: &str, name: &str, data: Value, ts: &str) -> Value {
    json!({"website_id": site, "type": "event", "event_name": name, "url": "https://example.com/app",
        "event_data": data, "timestamp": ts})
}

/// Custom events on a site of their own: names with counts and a comparison, the properties
/// of one event, and its hourly series over the 23-hour day of the DST change in Berlin.
async fn custom_events(c: &Client) {
    let site = c.website("Events", "Europe/Berlin").await;
    send(
        c,
        "81.2.69.10",
        CHROME_MAC,
        json!([
            custom(
                &site,
                "signup",
                json!({"plan": "pro"}),
                "2026-03-29T00:30:00Z"
            ),
            custom(
                &site,
                "signup",
                json!({"plan": "free"}),
                "2026-03-29T01:30:00Z"
            ),
            custom(
                &site,
                "download",
                json!({"file": "a.pdf"}),
                "2026-03-29T01:40:00Z"
            ),
        ]),
    )
    .await;
    send(
        c,
        "85.214.1.1",
        FIREFOX_WIN,
        custom(
            &site,
            "signup",
            json!({"plan": "pro", "seats": 3}),
            "2026-03-28T12:00:00Z",
        ),
    )
    .await;
    send(
        c,
        "81.2.69.20",
        GOOGLEBOT,
        custom(
            &site,
            "signup",
            json!({"plan": "bot"}),
            "2026-03-29T02:00:00Z",
        ),
    )
    .await;
    c.wait_idle().await;
    let base = format!("/api/websites/{site}/events");
    let two_days = "start_date=2026-03-28&end_date=2026-03-29";

    let (s, names) = c.get(&format!("{base}?{two_days}")).await;
    assert_eq!(s, 200, "{names}");
    assert_eq!(
        names["data"],
        json!({"rows": [
            {"event_name": "signup", "count": 3, "visitors": 2},
            {"event_name": "download", "count": 1, "visitors": 1},
        ], "total": 2})
    );
    let (_, bots) = c.get(&format!("{base}?{two_days}&include_bots=true")).await;
    assert_eq!(bots["data"]["rows"][0]["count"], 4);
    let (_, cmp) = c
        .get(&format!(
            "{base}?start_date=2026-03-29&end_date=2026-03-29&compare_mode=previous_period"
        ))
        .await;
    assert_eq!(
        cmp["data"]["rows"][0],
        json!({"event_name": "signup", "count": 2, "visitors": 1, "prev_count": 1})
    );
    assert_eq!(
        cmp["compare"]["comparison_range"],
        json!(["2026-03-28", "2026-03-28"])
    );

    let (s, props) = c
        .get(&format!("{base}/properties?event_name=signup&{two_days}"))
        .await;
    assert_eq!(s, 200, "{props}");
    assert_eq!(
        props["data"],
        json!({"event_name": "signup", "total_occurrences": 3, "sample_size": 3, "properties": [
            {"property_key": "plan", "property_value": "pro", "count": 2},
            {"property_key": "plan", "property_value": "free", "count": 1},
            {"property_key": "seats", "property_value": "3", "count": 1},
        ]})
    );

    // 2026-03-29 in Berlin has 23 hours; 00:30Z is 01:30 CET, 01:30Z is 03:30 CEST.
    let (s, series) = c
        .get(&format!(
            "{base}/timeseries?event_name=signup&start_date=2026-03-29&end_date=2026-03-29&granularity=hour"
        ))
        .await;
    assert_eq!(s, 200, "{series}");
    let points = series["data"]["series"].as_array().expect("series");
    assert_eq!(points.len(), 23);
    let hits: Vec<(Value, Value)> = points
        .iter()
        .filter(|p| p["count"] != 0)
        .map(|p| (p["date"].clone(), p["count"].clone()))
        .collect();
    assert_eq!(
        hits,
        vec![
            (json!("2026-03-29T00:00:00Z"), json!(1)),
            (json!("2026-03-29T01:00:00Z"), json!(1)),
        ]
    );
    assert_eq!(series["data"]["granularity"], "hour");

    let (s, b) = c.get(&format!("{base}/properties?{two_days}")).await;
    assert_eq!(
        (s, &b["error"]["field"]),
        (400, &json!("event_name")),
        "{b}"
    );
    let (s, _) = c
        .get(&format!("{base}/timeseries?event_name=&{two_days}"))
        .await;
    assert_eq!(s, 400);
}

/// Goals and funnels: defined through the API (entities through the log), counted over the
/// dataset's four human sessions, with the previous period and bots.
async fn goals_and_funnels(c: &Client, site: &str) {
    let goals = format!("/api/websites/{site}/goals");
    let (s, signup) = c
        .post(
            &goals,
            &json!({"name": "Signup", "goal_type": "event", "match_value": "signup"}),
        )
        .await;
    assert_eq!(s, 201, "{signup}");
    assert_eq!(signup["data"]["match_operator"], "equals");
    let signup_id = signup["data"]["id"].as_str().expect("id").to_string();
    let (_, home) = c
        .post(
            &goals,
            &json!({"name": "Home", "goal_type": "page_view", "match_value": "/home"}),
        )
        .await;
    let home_id = home["data"]["id"].as_str().expect("id").to_string();
    let (s, bad) = c
        .post(&goals, &json!({"name": "Bad", "goal_type": "page_view", "match_value": "/x", "value_mode": "fixed"}))
        .await;
    assert_eq!(
        (s, &bad["error"]["field"]),
        (400, &json!("fixed_value")),
        "{bad}"
    );
    let (_, list) = c.get(&goals).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));

    let stats = |id: String, q: &'static str| async move {
        let (s, b) = c
            .get(&format!("/api/websites/{site}/goals/{id}/stats?{q}"))
            .await;
        assert_eq!(s, 200, "{b}");
        b
    };
    let b = stats(signup_id.clone(), RANGE).await;
    assert_eq!(
        b["data"],
        json!({"goal_id": signup_id, "conversions": 1, "converting_sessions": 1, "total_sessions": 4,
               "conversion_rate": 0.25, "prev_conversions": 0, "prev_conversion_rate": 0.0, "trend_pct": null})
    );
    let b = stats(home_id.clone(), RANGE).await;
    assert_eq!(
        (&b["data"]["conversions"], &b["data"]["conversion_rate"]),
        (&json!(3), &json!(0.75))
    );
    // Berlin 03-29..03-30 (visitor 2, visitor 3 twice) against 03-27..03-28 (visitor 1).
    let b = stats(
        home_id.clone(),
        "start_date=2026-03-29&end_date=2026-03-30&compare_mode=previous_period",
    )
    .await;
    assert_eq!(
        (
            &b["data"]["conversions"],
            &b["data"]["conversion_rate"],
            &b["data"]["prev_conversions"],
            &b["data"]["prev_conversion_rate"],
            &b["data"]["trend_pct"]
        ),
        (
            &json!(2),
            &json!(0.6667),
            &json!(1),
            &json!(1.0),
            &json!(-33.3)
        )
    );
    assert_eq!(
        b["compare"]["comparison_range"],
        json!(["2026-03-27", "2026-03-28"])
    );
    // A contains match, after an update.
    let (s, changed) = c
        .send(
            reqwest::Method::PUT,
            &format!("{goals}/{home_id}"),
            Some(&json!({"match_value": "/pri", "match_operator": "contains"})),
        )
        .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(
        stats(home_id.clone(), RANGE).await["data"]["conversions"],
        1
    );

    let funnels = format!("/api/websites/{site}/funnels");
    let (s, f) = c
        .post(
            &funnels,
            &json!({"name": "Purchase", "steps": [
                {"step_type": "page_view", "match_value": "/home", "label": "Home"},
                {"step_type": "page_view", "match_value": "/pricing"},
                {"step_type": "event", "match_value": "signup", "label": "Signed up"},
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["data"]["steps"][1]["label"], "/pricing");
    let funnel_id = f["data"]["id"].as_str().expect("id").to_string();
    let results = format!("/api/websites/{site}/funnels/{funnel_id}/results?{RANGE}");
    let (s, r) = c.get(&results).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["data"],
        json!({"funnel_id": funnel_id, "name": "Purchase", "total_sessions_entered": 3,
               "final_conversion_rate": 0.3333, "steps": [
            {"step_order": 1, "label": "Home", "sessions_reached": 3, "drop_off_count": 0, "drop_off_rate": 0.0,
             "conversion_rate_from_start": 1.0, "conversion_rate_from_previous": 1.0},
            {"step_order": 2, "label": "/pricing", "sessions_reached": 1, "drop_off_count": 2, "drop_off_rate": 0.6667,
             "conversion_rate_from_start": 0.3333, "conversion_rate_from_previous": 0.3333},
            {"step_order": 3, "label": "Signed up", "sessions_reached": 1, "drop_off_count": 0, "drop_off_rate": 0.0,
             "conversion_rate_from_start": 0.3333, "conversion_rate_from_previous": 1.0},
        ]})
    );
    let (_, with_bots) = c.get(&format!("{results}&include_bots=true")).await;
    assert_eq!(with_bots["data"]["total_sessions_entered"], 4);
    let (_, summaries) = c.get(&funnels).await;
    assert_eq!(summaries["data"][0]["step_count"], 3);
    let (s, b) = c
        .post(
            &funnels,
            &json!({"name": "Short", "steps": [{"step_type": "page_view", "match_value": "/"}]}),
        )
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("steps")), "{b}");

    // Deleted, a goal is gone everywhere; an unknown one is 404.
    let (s, _) = c.delete(&format!("{goals}/{signup_id}")).await;
    assert_eq!(s, 200);
    let (s, _) = c.get(&format!("{goals}/{signup_id}")).await;
    assert_eq!(s, 404);
    let (s, _) = c
        .get(&format!("/api/websites/{site}/goals/{signup_id}/stats"))
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .get(&format!("/api/websites/{site}/funnels/nope/results"))
        .await;
    assert_eq!(s, 404);
}

/// Journeys from the dataset's pages and events; weekly retention on a site whose visitors
/// send their own ids and come back.
async fn journeys_and_retention(c: &Client, site: &str) {
    let journey = |q: &'static str| async move {
        let (s, b) = c
            .get(&format!("/api/websites/{site}/journey?{RANGE}&{q}"))
            .await;
        (s, b)
    };
    let (s, j) = journey("anchor_type=page&anchor_value=/home").await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        j["data"],
        json!({"anchor": {"type": "page", "value": "/home"}, "direction": "next", "max_depth": 3,
               "total_anchor_sessions": 3, "branches": [
            {"nodes": [], "sessions": 2, "share": 0.6667},
            {"nodes": ["/pricing", "signup"], "sessions": 1, "share": 0.3333},
        ]})
    );
    let (_, back) =
        journey("anchor_type=event&anchor_value=signup&direction=previous&max_depth=2").await;
    assert_eq!(
        back["data"]["branches"],
        json!([{"nodes": ["/pricing", "/home"], "sessions": 1, "share": 1.0}])
    );
    for (q, field) in [
        ("anchor_type=screen&anchor_value=/", "anchor_type"),
        ("anchor_type=page", "anchor_value"),
        ("anchor_type=page&anchor_value=/&max_depth=9", "max_depth"),
        (
            "anchor_type=page&anchor_value=/&direction=sideways",
            "direction",
        ),
    ] {
        let (s, b) = journey(q).await;
        assert_eq!((s, &b["error"]["field"]), (400, &json!(field)), "{q}: {b}");
    }

    let back_again = c.website("Retention", "UTC").await;
    let visit = |visitor: &str, day: &str| {
        json!({"website_id": back_again, "url": "https://example.com/", "visitor_id": visitor,
               "timestamp": format!("{day}T12:00:00Z")})
    };
    send(
        c,
        "81.2.69.10",
        CHROME_MAC,
        json!([
            visit("r1", "2026-03-02"),
            visit("r1", "2026-03-10"),
            visit("r1", "2026-03-17"),
            visit("r2", "2026-03-03"),
            visit("r2", "2026-03-10"),
            visit("r3", "2026-03-11"),
        ]),
    )
    .await;
    c.wait_idle().await;
    let (s, r) = c
        .get(&format!(
            "/api/websites/{back_again}/retention?start_date=2026-03-02&end_date=2026-03-22&cohort_granularity=week"
        ))
        .await;
    assert_eq!(s, 200, "{r}");
    let row = |cohort: &str, size: u64, periods: &[(u64, f64)]| {
        let periods: Vec<Value> = periods
            .iter()
            .enumerate()
            .map(|(k, (n, rate))| json!({"offset": k, "retained": n, "rate": rate}))
            .collect();
        json!({"cohort_start": cohort, "cohort_size": size, "periods": periods})
    };
    assert_eq!(
        r["data"]["rows"],
        json!([
            row("2026-03-02", 2, &[(2, 1.0), (2, 1.0), (1, 0.5)]),
            row("2026-03-09", 1, &[(1, 1.0), (0, 0.0)]),
            row("2026-03-16", 0, &[(0, 0.0)]),
        ])
    );
    assert_eq!(
        r["data"]["summary"],
        json!({"avg_period1_rate": 0.5, "avg_period4_rate": null})
    );
    assert_eq!(r["data"]["granularity"], "week");
    let (_, daily) = c
        .get(&format!(
            "/api/websites/{back_again}/retention?start_date=2026-03-02&end_date=2026-03-03&cohort_granularity=day&max_periods=1"
        ))
        .await;
    assert_eq!(
        daily["data"]["rows"][0]["periods"].as_array().map(Vec::len),
        Some(2)
    );
    let (s, b) = c
        .get(&format!(
            "/api/websites/{back_again}/retention?max_periods=13"
        ))
        .await;
    assert_eq!(
        (s, &b["error"]["field"]),
        (400, &json!("max_periods")),
        "{b}"
    );
}

/// A GET from a visitor (IP and user agent), not following redirects: (status, headers, body).
async fn visit(c: &Client, path: &str, ip: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = http
        .get(format!("{}{path}", c.base))
        .header("x-forwarded-for", ip)
        .header("user-agent", CHROME_MAC)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.expect("body").to_vec())
}

/// Short links redirect with their campaign tags and count clicks (and the conversions after
/// them); pixels answer a GIF and count views.
async fn links_and_pixels(c: &Client, site: &str) {
    let links = format!("/api/websites/{site}/links");
    let (s, link) = c
        .post(
            &links,
            &json!({"name": "Spring", "destination_url": "https://shop.example/sale?ref=x",
            "utm_source": "mail", "utm_campaign": "spring", "slug": "Spring-Sale"}),
        )
        .await;
    assert_eq!(s, 201, "{link}");
    assert_eq!(link["data"]["slug"], "spring-sale");
    assert!(link["data"]["tracking_url"]
        .as_str()
        .unwrap_or("")
        .ends_with("/l/spring-sale"));
    let link_id = link["data"]["id"].as_str().expect("id").to_string();
    let (s, taken) = c
        .post(&links, &json!({"name": "Again", "destination_url": "https://shop.example/", "slug": "spring-sale"}))
        .await;
    assert_eq!(
        (s, &taken["error"]["field"]),
        (409, &json!("slug")),
        "{taken}"
    );
    let (s, bad) = c
        .post(
            &links,
            &json!({"name": "Bad", "destination_url": "javascript:alert(1)"}),
        )
        .await;
    assert_eq!(
        (s, &bad["error"]["field"]),
        (400, &json!("destination_url")),
        "{bad}"
    );

    for ip in ["81.2.69.10", "81.2.69.10", "85.214.1.1"] {
        let (s, h, _) = visit(c, "/l/spring-sale", ip).await;
        assert_eq!(s, 302);
        assert_eq!(
            h.get("location").and_then(|v| v.to_str().ok()),
            Some("https://shop.example/sale?ref=x&utm_source=mail&utm_campaign=spring")
        );
    }
    assert_eq!(visit(c, "/l/no-such-link", "81.2.69.10").await.0, 404);
    // The first visitor goes on to the thank-you page, a goal worth 10.
    let (_, thanks) = c
        .post(
            &format!("/api/websites/{site}/goals"),
            &json!({"name": "Thanks", "goal_type": "page_view",
            "match_value": "/thanks", "value_mode": "fixed", "fixed_value": 10}),
        )
        .await;
    let thanks_id = thanks["data"]["id"].as_str().expect("goal").to_string();
    let later = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    send(
        c,
        "81.2.69.10",
        CHROME_MAC,
        pv(site, "https://example.com/thanks", &later),
    )
    .await;

    let pixels = format!("/api/websites/{site}/pixels");
    let (s, pixel) = c
        .post(
            &pixels,
            &json!({"name": "Newsletter", "default_url": "https://example.com/newsletter"}),
        )
        .await;
    assert_eq!(s, 201, "{pixel}");
    let key = pixel["data"]["pixel_key"]
        .as_str()
        .expect("key")
        .to_string();
    let pixel_url = pixel["data"]["pixel_url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(pixel["data"]["snippet"]
        .as_str()
        .unwrap_or("")
        .contains(&pixel_url));
    let pixel_id = pixel["data"]["id"].as_str().expect("id").to_string();
    for (path, ip) in [
        (format!("/p/{key}"), "81.2.69.10"),
        (format!("/p/{key}"), "81.2.69.10"),
        (
            format!("/p/{key}?url=https://example.com/other"),
            "216.160.83.5",
        ),
    ] {
        let (s, h, gif) = visit(c, &path, ip).await;
        assert_eq!(s, 200);
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("image/gif")
        );
        assert!(gif.starts_with(b"GIF89a") && gif.len() == 43);
    }
    assert_eq!(visit(c, "/p/nope", "81.2.69.10").await.0, 404);
    c.wait_idle().await;

    let (s, st) = c.get(&format!("{links}/{link_id}/stats")).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        st["data"],
        json!({"link_id": link_id, "clicks": 3, "unique_visitors": 2, "conversions": null, "revenue": null})
    );
    let (_, st) = c
        .get(&format!("{links}/{link_id}/stats?goal_id={thanks_id}"))
        .await;
    assert_eq!(
        (&st["data"]["conversions"], &st["data"]["revenue"]),
        (&json!(1), &json!(10.0)),
        "{st}"
    );
    let (_, ps) = c.get(&format!("{pixels}/{pixel_id}/stats")).await;
    assert_eq!(
        ps["data"],
        json!({"pixel_id": pixel_id, "views": 3, "unique_visitors": 2})
    );
    // A link's slug stays; its destination may change.
    let (s, _) = c
        .send(
            reqwest::Method::PUT,
            &format!("{links}/{link_id}"),
            Some(&json!({"slug": "other"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, moved) = c
        .send(
            reqwest::Method::PATCH,
            &format!("{links}/{link_id}"),
            Some(&json!({"destination_url": "https://shop.example/autumn"})),
        )
        .await;
    assert_eq!(s, 200, "{moved}");
    let (_, h, _) = visit(c, "/l/spring-sale", "81.2.69.10").await;
    assert_eq!(
        h.get("location").and_then(|v| v.to_str().ok()),
        Some("https://shop.example/autumn?utm_source=mail&utm_campaign=spring")
    );
}

/// A shared dashboard answers without a key exactly what the website's own routes answer, until
/// it is replaced or turned off; the export is the period's events as CSV.
async fn shares_and_export(c: &Client, site: &str) {
    let (s, share) = c
        .post(&format!("/api/websites/{site}/share"), &json!({}))
        .await;
    assert_eq!(s, 201, "{share}");
    let id = share["data"]["share_id"]
        .as_str()
        .expect("share")
        .to_string();
    assert!(share["data"]["share_url"]
        .as_str()
        .unwrap_or("")
        .ends_with(&format!("/api/share/{id}")));
    let anon = Client::new(c.base.clone());
    for route in ["stats", "pageviews", "metrics"] {
        let q = format!("{RANGE}&type=page");
        let (s, public) = anon.get(&format!("/api/share/{id}/{route}?{q}")).await;
        assert_eq!(s, 200, "{route}: {public}");
        let (_, own) = c.get(&format!("/api/websites/{site}/{route}?{q}")).await;
        assert_eq!(public, own, "{route}");
    }
    let (_, overview) = anon.get(&format!("/api/share/{id}/overview")).await;
    assert_eq!(overview["data"]["website"]["name"], "Example");
    // Only those reads are open.
    let (s, _) = anon.get(&format!("/api/websites/{site}/stats")).await;
    assert_eq!(s, 401);
    let (_, again) = c
        .post(&format!("/api/websites/{site}/share"), &json!({}))
        .await;
    let second = again["data"]["share_id"]
        .as_str()
        .expect("share")
        .to_string();
    assert_ne!(second, id);
    assert_eq!(
        anon.get(&format!("/api/share/{id}/stats")).await.0,
        404,
        "replaced"
    );
    assert_eq!(anon.get(&format!("/api/share/{second}/stats")).await.0, 200);
    assert_eq!(
        c.delete(&format!("/api/websites/{site}/share")).await.0,
        200
    );
    assert_eq!(
        anon.get(&format!("/api/share/{second}/stats")).await.0,
        404,
        "turned off"
    );
    assert_eq!(c.get(&format!("/api/websites/{site}/share")).await.0, 404);

    let r = c
        .req(
            reqwest::Method::GET,
            &format!("/api/websites/{site}/export?{RANGE}&format=csv"),
        )
        .send()
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 200);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-type"), "text/csv; charset=utf-8");
    assert!(header("content-disposition").starts_with("attachment; filename="));
    let csv = r.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "a header and the six human events: {csv}");
    assert!(lines[0].starts_with("id,website_id,event_type,url,referrer_domain"));
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        (first[2], first[3], first[4], first[6], first[7], first[14]),
        (
            "pageview",
            "/home",
            "google.com",
            "GB",
            "Chrome",
            "2026-03-28T10:00:00.000Z"
        )
    );
    assert!(
        lines[3].contains(",event,/pricing,,signup,"),
        "{}",
        lines[3]
    );
    let r = c
        .req(
            reqwest::Method::GET,
            &format!("/api/websites/{site}/export?{RANGE}&include_bots=true"),
        )
        .send()
        .await
        .expect("export");
    assert_eq!(r.text().await.expect("csv").lines().count(), 8);
    let (s, b) = c
        .get(&format!(
            "/api/websites/{site}/export?start_date=2026-01-01&end_date=2026-04-01"
        ))
        .await;
    assert_eq!(
        (s, &b["error"]["field"]),
        (400, &json!("start_date")),
        "{b}"
    );
    let (s, b) = c
        .get(&format!("/api/websites/{site}/export?{RANGE}&format=xml"))
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("format")), "{b}");
}

/// Conversions credited to channels: utm_source, else the referrer, else (direct).
async fn attribution_by_channel(c: &Client, site: &str) {
    let goals = format!("/api/websites/{site}/goals");
    let (_, home) = c
        .post(
            &goals,
            &json!({"name": "Landing", "goal_type": "page_view", "match_value": "/home"}),
        )
        .await;
    let home = home["data"]["id"].as_str().expect("goal").to_string();
    let (_, paid) = c
        .post(
            &goals,
            &json!({"name": "Paid signup", "goal_type": "event", "match_value": "signup",
            "value_mode": "fixed", "fixed_value": 25}),
        )
        .await;
    let paid = paid["data"]["id"].as_str().expect("goal").to_string();
    let (s, a) = c
        .get(&format!(
            "/api/websites/{site}/attribution?goal_id={home}&{RANGE}"
        ))
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["data"],
        json!({"goal_id": home, "model": "last_touch", "rows": [
            {"channel": "google.com", "conversions": 1, "revenue": 0.0, "share": 0.3333},
            {"channel": "news.ycombinator.com", "conversions": 1, "revenue": 0.0, "share": 0.3333},
            {"channel": "newsletter", "conversions": 1, "revenue": 0.0, "share": 0.3333},
        ], "totals": {"conversions": 3, "revenue": 0.0}})
    );
    // The signup came two page views after the Google visit: both models credit Google.
    for model in ["first_touch", "last_touch"] {
        let (_, a) = c
            .get(&format!(
                "/api/websites/{site}/attribution?goal_id={paid}&model={model}&{RANGE}"
            ))
            .await;
        assert_eq!(
            a["data"]["rows"],
            json!([{"channel": "google.com", "conversions": 1, "revenue": 25.0, "share": 1.0}]),
            "{model}"
        );
    }
    let (_, r) = c
        .get(&format!(
            "/api/websites/{site}/revenue/summary?goal_id={paid}&{RANGE}"
        ))
        .await;
    assert_eq!(
        r["data"],
        json!({"goal_id": paid, "model": "last_touch", "conversions": 1, "revenue": 25.0})
    );
    let (s, b) = c
        .get(&format!("/api/websites/{site}/attribution?{RANGE}"))
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("goal_id")), "{b}");
    let (s, b) = c
        .get(&format!(
            "/api/websites/{site}/attribution?goal_id={paid}&model=linear"
        ))
        .await;
    assert_eq!((s, &b["error"]["field"]), (400, &json!("model")), "{b}");
}

/// Reports: saved configs of the dashboard reads, previewed and run with exactly the numbers the
/// routes give.
async fn saved_reports(c: &Client, site: &str) {
    let config = json!({"version": 1, "report_type": "metrics", "date_range_type": "custom",
        "start_date": "2026-03-28", "end_date": "2026-03-30", "metric_type": "country",
        "filters": {"browser": "Chrome"}});
    let (s, preview) = c
        .post(
            &format!("/api/websites/{site}/reports/preview"),
            &json!({ "config": config }),
        )
        .await;
    assert_eq!(s, 200, "{preview}");
    let (_, direct) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=country&{RANGE}&filter_browser=Chrome"
        ))
        .await;
    assert_eq!(preview["data"]["data"], direct["data"]);
    assert_eq!(preview["data"]["report_id"], Value::Null);
    let reports = format!("/api/websites/{site}/reports");
    let (s, saved) = c
        .post(
            &reports,
            &json!({"name": "Weekly stats", "config": {"report_type": "stats",
            "date_range_type": "custom", "start_date": "2026-03-28", "end_date": "2026-03-30"}}),
        )
        .await;
    assert_eq!(s, 201, "{saved}");
    assert_eq!(saved["data"]["config"]["version"], 1);
    let id = saved["data"]["id"].as_str().expect("id").to_string();
    let (s, ran) = c.post(&format!("{reports}/{id}/run"), &json!({})).await;
    assert_eq!(s, 200, "{ran}");
    let (_, stats) = c.get(&format!("/api/websites/{site}/stats?{RANGE}")).await;
    assert_eq!(ran["data"]["data"], stats["data"]);
    assert_eq!(ran["data"]["report_id"], json!(id));
    // A relative range ends today: nothing happened this week.
    let (s, _) = c
        .send(reqwest::Method::PATCH, &format!("{reports}/{id}"),
            Some(&json!({"config": {"report_type": "stats", "date_range_type": "relative", "relative_days": 7}})))
        .await;
    assert_eq!(s, 200);
    let (_, ran) = c.get(&format!("{reports}/{id}/run")).await;
    assert_eq!(ran["data"]["data"]["pageviews"], 0, "{ran}");
    for (config, field) in [
        (
            json!({"report_type": "table", "date_range_type": "relative"}),
            "config.report_type",
        ),
        (
            json!({"report_type": "stats", "date_range_type": "custom"}),
            "config.start_date",
        ),
        (
            json!({"report_type": "metrics", "date_range_type": "relative"}),
            "config.metric_type",
        ),
    ] {
        let (s, b) = c
            .post(
                &format!("/api/websites/{site}/reports/preview"),
                &json!({ "config": config }),
            )
            .await;
        assert_eq!((s, &b["error"]["field"]), (400, &json!(field)), "{b}");
    }
}
