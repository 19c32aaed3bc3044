//! The Sparklytics compatibility replay: the requests the peer's tracker and dashboard make
//! (payloads and query strings as `../shared/SPARKLYTICS-API.md` gives them), sent to Tally
//! over events this test posts, each answer checked field by field — name and type — against
//! the contract's shape, and the values the posted events determine checked exactly. Tally may
//! add fields; it may not drop, rename or retype one.

use crate::common::*;
use serde_json::{json, Value};

/// Where `answer` differs from `shape`: a shape is an object (every key must be there and
/// conform; more keys are fine), an array of one shape (every element conforms; `[]` for an
/// empty one would prove nothing, so elements are required), or a type name: `integer`,
/// `number`, `string`, `boolean`, `null`, `any`, with `?` for "or null".
fn mismatches(path: &str, answer: &Value, shape: &Value, out: &mut Vec<String>) {
    match shape {
        Value::Object(fields) => {
            let Some(obj) = answer.as_object() else {
                out.push(format!("{path}: expected an object, got {answer}"));
                return;
            };
            for (k, s) in fields {
                match obj.get(k) {
                    Some(v) => mismatches(&format!("{path}.{k}"), v, s, out),
                    None => out.push(format!("{path}.{k}: missing")),
                }
            }
        }
        Value::Array(one) => {
            let Some(items) = answer.as_array() else {
                out.push(format!("{path}: expected an array, got {answer}"));
                return;
            };
            if items.is_empty() {
                out.push(format!("{path}: empty, so its elements cannot be checked"));
            }
            for (i, item) in items.iter().enumerate() {
                mismatches(&format!("{path}[{i}]"), item, &one[0], out);
            }
        }
        Value::String(t) => {
            let (t, nullable) = match t.strip_suffix('?') {
                Some(t) => (t, true),
                None => (t.as_str(), false),
            };
            let ok = (nullable && answer.is_null())
                || match t {
                    "integer" => answer.is_u64() || answer.is_i64(),
                    "number" => answer.is_number(),
                    "string" => answer.is_string(),
                    "boolean" => answer.is_boolean(),
                    "null" => answer.is_null(),
                    "any" => true,
                    other => panic!("unknown type {other}"),
                };
            if !ok {
                out.push(format!("{path}: expected {t}, got {answer}"));
            }
        }
        other => panic!("bad shape {other}"),
    }
}

fn conforms(what: &str, answer: &Value, shape: Value) {
    let mut out = Vec::new();
    mismatches("", answer, &shape, &mut out);
    assert!(
        out.is_empty(),
        "{what} does not match the contract:\n{}\n{answer}",
        out.join("\n")
    );
}

/// What the tracker sends with `sendBeacon`: a JSON text in a `text/plain` body, to `/e`.
async fn beacon(c: &Client, ip: &str, body: Value) {
    let r = c
        .http
        .post(format!("{}/e", c.base))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://shop.example")
        .header("x-forwarded-for", ip)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        )
        .body(body.to_string())
        .send()
        .await
        .expect("beacon");
    assert_eq!(r.status().as_u16(), 202);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b, json!({"ok": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_requests_get_the_contracts_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = tally::start(test_settings(dir.path()))
        .await
        .expect("start");
    let anon = Client::new(format!("http://{}", app.addr));
    let (_, status) = anon.get("/api/auth/status").await;
    conforms(
        "auth/status",
        &status,
        json!({"mode": "string", "setup_required": "boolean", "authenticated": "boolean",
               "password_change_required": "boolean"}),
    );
    let mut c = Client::new(anon.base.clone());
    c.setup().await;
    let site = c.website("Shop", "UTC").await;
    let now = chrono::Utc::now();
    let at = |mins: i64| (now - chrono::Duration::minutes(mins)).to_rfc3339();
    let today = now.date_naive();
    let range = format!(
        "start_date={}&end_date={today}",
        today - chrono::Duration::days(6)
    );

    // The tracker: a page view with its screen fields, an SPA view, a custom event with data,
    // an outbound click; another visitor's bounce.
    let page = |url: &str, ts: String| {
        json!({"website_id": site, "type": "pageview", "url": url, "referrer": "https://www.google.com/",
               "screen_width": 1280, "screen_height": 720, "language": "en-US", "timestamp": ts})
    };
    beacon(
        &c,
        "81.2.69.10",
        page("https://shop.example/?utm_source=mail", at(20)),
    )
    .await;
    let mut spa = page("https://shop.example/pricing", at(19));
    spa["referrer"] = json!("https://shop.example/");
    beacon(&c, "81.2.69.10", spa).await;
    beacon(&c, "81.2.69.10", json!({"website_id": site, "type": "event", "event_name": "signup",
        "event_data": {"plan": "pro", "seats": 3}, "url": "https://shop.example/pricing", "timestamp": at(18)})).await;
    beacon(&c, "81.2.69.10", json!({"website_id": site, "type": "event", "event_name": "link_click",
        "event_data": {"url": "https://partner.example/"}, "url": "https://shop.example/pricing", "timestamp": at(17)})).await;
    beacon(&c, "85.214.1.1", page("https://shop.example/", at(10))).await;
    c.wait_idle().await;
    let w = format!("/api/websites/{site}");
    let get = |path: String| {
        let c = &c;
        async move {
            let (s, b) = c.get(&path).await;
            assert_eq!(s, 200, "{path}: {b}");
            b
        }
    };

    let stats = get(format!("{w}/stats?{range}&compare_mode=previous_period")).await;
    conforms(
        "stats",
        &stats,
        json!({"data": {"pageviews": "integer", "visitors": "integer", "sessions": "integer",
            "bounce_rate": "number", "avg_duration_seconds": "number", "prev_pageviews": "integer",
            "prev_visitors": "integer", "prev_sessions": "integer", "prev_bounce_rate": "number",
            "prev_avg_duration_seconds": "number", "timezone": "string"},
            "compare": {"mode": "string", "primary_range": ["string"], "comparison_range": ["string"]}}),
    );
    assert_eq!(
        (
            &stats["data"]["pageviews"],
            &stats["data"]["visitors"],
            &stats["data"]["sessions"]
        ),
        (&json!(3), &json!(2), &json!(2))
    );
    assert_eq!(stats["data"]["bounce_rate"], 0.5);
    assert_eq!(stats["compare"]["mode"], "previous_period");

    let series = get(format!("{w}/pageviews?{range}")).await;
    conforms(
        "pageviews",
        &series,
        json!({"data": {"series": [{"date": "string", "pageviews": "integer", "visitors": "integer"}],
            "granularity": "string", "compare_series": "null"}}),
    );
    assert_eq!(series["data"]["granularity"], "day");
    let hours = get(format!(
        "{w}/pageviews?start_date={today}&end_date={today}&granularity=hour"
    ))
    .await;
    let label = hours["data"]["series"][0]["date"].as_str().unwrap_or("");
    assert!(label.ends_with(":00:00Z") && label.len() == 20, "{label}");

    let row = json!({"value": "string", "visitors": "integer", "pageviews": "integer",
        "bounce_rate": "number", "avg_duration_seconds": "number"});
    let pages = get(format!("{w}/metrics?type=page&limit=10&offset=0&{range}")).await;
    conforms(
        "metrics",
        &pages,
        json!({"data": {"type": "string", "rows": [row]},
            "pagination": {"total": "integer", "limit": "integer", "offset": "integer", "has_more": "boolean"},
            "compare": "null"}),
    );
    assert_eq!(pages["data"]["rows"][0]["value"], "/");
    assert_eq!(pages["data"]["rows"][0]["pageviews"], 2);
    let compared = get(format!(
        "{w}/metrics?type=referrer&{range}&compare_mode=previous_period"
    ))
    .await;
    conforms(
        "metrics with a comparison",
        &compared,
        json!({"data": {"rows": [{"value": "string", "visitors": "integer", "prev_visitors": "integer",
            "prev_pageviews": "integer", "delta_visitors_abs": "integer", "delta_visitors_pct": "number?"}]},
            "compare": {"mode": "string"}}),
    );
    let referrers: Vec<&Value> = compared["data"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["value"])
        .collect();
    assert_eq!(referrers, vec![&json!("google.com"), &json!("(direct)")]);

    let live = get(format!("{w}/realtime")).await;
    conforms(
        "realtime",
        &live,
        json!({"data": {"active_visitors": "integer", "recent_events": [{"event_type": "string",
            "url": "string", "referrer_domain": "string?", "country": "string?", "browser": "string?",
            "device_type": "string?", "ts": "string"}],
            "pagination": {"limit": "integer", "total_in_window": "integer"}}}),
    );
    assert_eq!(live["data"]["active_visitors"], 2);

    let session_shape = json!({"session_id": "string", "visitor_id": "string", "first_seen": "string",
        "last_seen": "string", "duration_seconds": "integer", "pageview_count": "integer",
        "event_count": "integer", "entry_page": "string?", "exit_page": "string?", "country": "string?",
        "browser": "string?", "os": "string?", "device_type": "string?"});
    let sessions = get(format!("{w}/sessions?limit=50&{range}")).await;
    conforms(
        "sessions",
        &sessions,
        json!({"data": [session_shape.clone()],
            "pagination": {"limit": "integer", "next_cursor": "string?", "has_more": "boolean"}}),
    );
    let first = &sessions["data"][1];
    assert_eq!(
        (
            &first["pageview_count"],
            &first["event_count"],
            &first["duration_seconds"]
        ),
        (&json!(2), &json!(4), &json!(180))
    );
    let id = first["session_id"].as_str().expect("id");
    let one = get(format!("{w}/sessions/{id}")).await;
    conforms(
        "sessions/{id}",
        &one,
        json!({"data": {"session": session_shape, "events": [{"id": "string", "event_type": "string",
            "url": "string", "event_name": "string?", "event_data": "string?", "created_at": "string"}],
            "truncated": "boolean"}}),
    );

    let events = get(format!("{w}/events?{range}")).await;
    conforms(
        "events",
        &events,
        json!({"data": {"rows": [{"event_name": "string", "count": "integer", "visitors": "integer"}], "total": "integer"}}),
    );
    let props = get(format!("{w}/events/properties?event_name=signup&{range}")).await;
    conforms(
        "events/properties",
        &props,
        json!({"data": {"event_name": "string", "total_occurrences": "integer", "sample_size": "integer",
            "properties": [{"property_key": "string", "property_value": "string", "count": "integer"}]}}),
    );
    let ts = get(format!(
        "{w}/events/timeseries?event_name=signup&granularity=day&{range}"
    ))
    .await;
    conforms(
        "events/timeseries",
        &ts,
        json!({"data": {"series": [{"date": "string"}], "granularity": "string"}}),
    );

    let (s, goal) = c
        .post(&format!("{w}/goals"), &json!({"name": "Signup", "goal_type": "event", "match_value": "signup",
            "match_operator": "equals", "value_mode": "fixed", "fixed_value": 49, "currency": "USD"}))
        .await;
    assert_eq!(s, 201, "{goal}");
    conforms(
        "goal",
        &goal,
        json!({"data": {"id": "string", "website_id": "string", "name": "string", "goal_type": "string",
            "match_value": "string", "match_operator": "string", "value_mode": "string",
            "fixed_value": "number?", "value_property_key": "string?", "currency": "string",
            "created_at": "string", "updated_at": "string"}}),
    );
    let goal_id = goal["data"]["id"].as_str().expect("goal");
    let gs = get(format!("{w}/goals/{goal_id}/stats?{range}")).await;
    conforms(
        "goals/{id}/stats",
        &gs,
        json!({"data": {"goal_id": "string", "conversions": "integer", "converting_sessions": "integer",
            "total_sessions": "integer", "conversion_rate": "number", "prev_conversions": "integer?",
            "prev_conversion_rate": "number?", "trend_pct": "number?"}}),
    );
    assert_eq!(gs["data"]["conversion_rate"], 0.5);

    let (s, funnel) = c
        .post(&format!("{w}/funnels"), &json!({"name": "Buy", "steps": [
            {"step_type": "page_view", "match_value": "/", "match_operator": "equals", "label": "Home"},
            {"step_type": "page_view", "match_value": "/pricing", "match_operator": "equals", "label": "Pricing"},
            {"step_type": "event", "match_value": "signup", "match_operator": "equals", "label": "Signup"}]}))
        .await;
    assert_eq!(s, 201, "{funnel}");
    let funnel_id = funnel["data"]["id"].as_str().expect("funnel");
    let fr = get(format!("{w}/funnels/{funnel_id}/results?{range}")).await;
    conforms(
        "funnels/{id}/results",
        &fr,
        json!({"data": {"funnel_id": "string", "name": "string", "total_sessions_entered": "integer",
            "final_conversion_rate": "number", "steps": [{"step_order": "integer", "label": "string",
            "sessions_reached": "integer", "drop_off_count": "integer", "drop_off_rate": "number",
            "conversion_rate_from_start": "number", "conversion_rate_from_previous": "number"}]}}),
    );
    assert_eq!(fr["data"]["final_conversion_rate"], 0.5);

    let journey = get(format!(
        "{w}/journey?anchor_type=page&anchor_value=/&direction=next&max_depth=3&{range}"
    ))
    .await;
    conforms(
        "journey",
        &journey,
        json!({"data": {"anchor": {"type": "string", "value": "string"}, "direction": "string",
            "max_depth": "integer", "total_anchor_sessions": "integer",
            "branches": [{"nodes": "any", "sessions": "integer", "share": "number"}]}}),
    );
    let retention = get(format!(
        "{w}/retention?cohort_granularity=day&max_periods=4&{range}"
    ))
    .await;
    conforms(
        "retention",
        &retention,
        json!({"data": {"granularity": "string", "max_periods": "integer",
            "rows": [{"cohort_start": "string", "cohort_size": "integer",
                "periods": [{"offset": "integer", "retained": "integer", "rate": "number"}]}],
            "summary": {"avg_period1_rate": "number?", "avg_period4_rate": "number?"}}}),
    );
    let attribution = get(format!(
        "{w}/attribution?goal_id={goal_id}&model=first_touch&{range}"
    ))
    .await;
    conforms(
        "attribution",
        &attribution,
        json!({"data": {"goal_id": "string", "model": "string",
            "rows": [{"channel": "string", "conversions": "integer", "revenue": "number", "share": "number"}],
            "totals": {"conversions": "integer", "revenue": "number"}}}),
    );
    assert_eq!(attribution["data"]["rows"][0]["channel"], "mail");
    let revenue = get(format!("{w}/revenue/summary?goal_id={goal_id}&{range}")).await;
    conforms(
        "revenue/summary",
        &revenue,
        json!({"data": {"goal_id": "string", "model": "string", "conversions": "integer", "revenue": "number"}}),
    );
    assert_eq!(revenue["data"]["revenue"], 49.0);

    let (_, link) = c
        .post(&format!("{w}/links"), &json!({"name": "Spring", "destination_url": "https://shop.example/", "utm_source": "mail"}))
        .await;
    conforms(
        "link",
        &link,
        json!({"data": {"id": "string", "slug": "string", "tracking_url": "string"}}),
    );
    let link_id = link["data"]["id"].as_str().expect("link");
    let ls = get(format!("{w}/links/{link_id}/stats?goal_id={goal_id}")).await;
    conforms(
        "links/{id}/stats",
        &ls,
        json!({"data": {"clicks": "integer", "unique_visitors": "integer", "conversions": "integer", "revenue": "number"}}),
    );
    let (_, pixel) = c
        .post(
            &format!("{w}/pixels"),
            &json!({"name": "Mail", "default_url": "https://shop.example/mail"}),
        )
        .await;
    conforms(
        "pixel",
        &pixel,
        json!({"data": {"pixel_key": "string", "pixel_url": "string", "snippet": "string"}}),
    );
    let pixel_id = pixel["data"]["id"].as_str().expect("pixel");
    let ps = get(format!("{w}/pixels/{pixel_id}/stats")).await;
    conforms(
        "pixels/{id}/stats",
        &ps,
        json!({"data": {"views": "integer", "unique_visitors": "integer"}}),
    );
    let (s, share) = c.post(&format!("{w}/share"), &json!({})).await;
    assert_eq!(s, 201);
    conforms(
        "share",
        &share,
        json!({"data": {"share_id": "string", "share_url": "string"}}),
    );
    let share_id = share["data"]["share_id"].as_str().expect("share");
    for route in ["overview", "stats", "pageviews"] {
        let (s, b) = anon
            .get(&format!("/api/share/{share_id}/{route}?{range}"))
            .await;
        assert_eq!(s, 200, "{route}: {b}");
    }
    let (s, b) = anon
        .get(&format!("/api/share/{share_id}/metrics?type=page&{range}"))
        .await;
    assert_eq!((s, &b["data"]["rows"][0]["value"]), (200, &json!("/")));
    let r = c
        .req(
            reqwest::Method::GET,
            &format!("{w}/export?{range}&format=csv"),
        )
        .send()
        .await
        .expect("export");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(r.text().await.expect("csv").lines().count(), 6);

    // The dashboard's sign-in, and the error shape every client reads.
    let r = anon
        .http
        .post(format!("{}/api/auth/login", anon.base))
        .json(&json!({"password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 200);
    let login: Value = r.json().await.expect("json");
    conforms(
        "auth/login",
        &login,
        json!({"data": {"expires_at": "string"}}),
    );
    let (s, health) = anon.get("/health").await;
    assert_eq!(s, 200, "{health}");
    let (s, err) = c.get(&format!("{w}/metrics?type=nope")).await;
    assert_eq!(s, 400);
    conforms(
        "an error",
        &err,
        json!({"error": {"code": "string", "message": "string", "field": "string?"}}),
    );
    assert_eq!(err["error"]["field"], "type");
    app.shutdown().await.expect("shutdown");
}

#[test]
fn the_shape_check_catches_missing_and_retyped_fields() {
    let mut out = Vec::new();
    mismatches(
        "",
        &json!({"data": {"rows": [{"value": 1}], "total": "3"}}),
        &json!({"data": {"rows": [{"value": "string", "visitors": "integer"}], "total": "integer", "x": "string?"}}),
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            ".data.rows[0].value: expected string, got 1",
            ".data.rows[0].visitors: missing",
            ".data.total: expected integer, got \"3\"",
            ".data.x: missing",
        ]
    );
    let mut none = Vec::new();
    mismatches(
        "",
        &json!({"a": null, "b": [2]}),
        &json!({"a": "string?", "b": ["integer"]}),
        &mut none,
    );
    assert!(none.is_empty(), "{none:?}");
}
