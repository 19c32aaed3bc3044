//! What the Sparklytics tracker sends reaches Tally as it sends it: `POST /e` from any origin
//! (CORS preflight with any header), `sendBeacon`'s `text/plain` body, `screen_width` and
//! `screen_height`, any event type and any JSON event data, an empty visitor id ignored. The
//! dashboard routes keep `TALLY_CORS_ORIGINS`.

use crate::common::*;
use serde_json::{json, Value};

const SHOP: &str = "https://shop.example";
const DASHBOARD: &str = "https://dash.example";

async fn preflight(c: &Client, path: &str, origin: &str) -> reqwest::Response {
    c.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", c.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-shop-trace",
        )
        .send()
        .await
        .expect("preflight")
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn rows(body: &Value) -> Vec<(Value, Value)> {
    body["data"]["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| (r["value"].clone(), r["visitors"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_events_arrive_as_the_tracker_sends_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.cors_origins = DASHBOARD.into();
    let (app, c) = start_app(settings).await;
    let site = c.website("Shop", "UTC").await;

    // Collect is open to the customer's site, whatever headers its page adds.
    for path in ["/e", "/api/collect"] {
        let r = preflight(&c, path, SHOP).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        let allowed = header(&r, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed == "*" || allowed.contains("x-shop-trace"),
            "{allowed}"
        );
    }
    // The dashboard's routes answer only the configured origin.
    let stats = format!("/api/websites/{site}/stats");
    let r = preflight(&c, &stats, SHOP).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = preflight(&c, &stats, DASHBOARD).await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(DASHBOARD)
    );

    // sendBeacon posts a string body as text/plain.
    let now = chrono::Utc::now().to_rfc3339();
    let pageview = json!({"website_id": site, "type": "pageview", "url": "https://shop.example/",
        "screen_width": 1280, "screen_height": 720, "visitor_id": "", "timestamp": now});
    let click = json!({"website_id": site, "type": "event", "event_name": "link_click",
        "url": "https://shop.example/", "event_data": {"href": "https://elsewhere.example/"},
        "screen_width": 1280, "screen_height": 720, "timestamp": now});
    let custom = json!({"website_id": site, "type": "scroll", "url": "https://shop.example/",
        "event_data": [25, 50], "visitor_id": "x".repeat(65), "timestamp": now});
    for body in [pageview, click, custom] {
        let r = c
            .http
            .post(format!("{}/e", c.base))
            .header("origin", SHOP)
            .header("content-type", "text/plain;charset=UTF-8")
            .header("x-forwarded-for", "81.2.69.10")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            )
            .body(body.to_string())
            .send()
            .await
            .expect("beacon");
        assert_eq!(r.status().as_u16(), 202);
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        let ack: Value = r.json().await.expect("json");
        assert_eq!(ack, json!({"ok": true}));
    }
    c.wait_idle().await;

    // One visitor (the empty and the over-long visitor ids were ignored, so the edge derived
    // the same id for all three), one page view, the screen joined from its two sides.
    let (status, s) = c.get(&stats).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (
            s["data"]["pageviews"].clone(),
            s["data"]["visitors"].clone()
        ),
        (json!(1), json!(1))
    );
    let (_, screens) = c
        .get(&format!("/api/websites/{site}/metrics?type=screen"))
        .await;
    assert_eq!(rows(&screens), vec![(json!("1280x720"), json!(1))]);
    let (_, names) = c
        .get(&format!("/api/websites/{site}/metrics?type=event_name"))
        .await;
    assert_eq!(rows(&names), vec![(json!("link_click"), json!(1))]);
    let (_, live) = c.get(&format!("/api/websites/{site}/realtime")).await;
    let mut types: Vec<String> = live["data"]["recent_events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["event_type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    types.sort();
    assert_eq!(types, ["event", "pageview", "scroll"], "{live}");
    // A contract route not built yet says so.
    let (status, body) = c.get(&format!("/api/websites/{site}/bot-summary")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (501, json!("not_implemented"))
    );
    app.shutdown().await.expect("shutdown");
}
