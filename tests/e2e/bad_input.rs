//! Every client error has its status and code in `{"error":{"code","message"}}`, never a 500;
//! random bytes thrown at collect never produce a 500 or bring the server down.

use crate::common::*;
use serde_json::{json, Value};

async fn raw_post(
    c: &Client,
    path: &str,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = c
        .req(reqwest::Method::POST, path)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["request_id"].as_str().is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_code_has_its_status_and_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, c) = start_app(test_settings(dir.path())).await;
    let site = c.website("Site", "UTC").await;
    let ok = json!({"website_id": site, "url": "/"});

    let (s, _, b) = raw_post(&c, "/api/collect", b"{not json".to_vec()).await;
    assert_error(s, &b, 400, "bad_request");
    let (s, _, b) = raw_post(&c, "/api/collect", br#"{"website_id":"x"}"#.to_vec()).await;
    assert_error(s, &b, 400, "bad_request");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("url")),
        "names the field: {b}"
    );
    let batch = Value::Array(vec![ok.clone(); 51]);
    let (s, _, b) = raw_post(&c, "/api/collect", batch.to_string().into_bytes()).await;
    assert_error(s, &b, 400, "batch_too_large");
    let (s, _, b) = raw_post(
        &c,
        "/api/collect",
        json!({"website_id": "nope", "url": "/"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    let big = json!({"website_id": site, "url": "/", "event_data": {"k": "x".repeat(5000)}});
    let (s, _, b) = raw_post(&c, "/api/collect", big.to_string().into_bytes()).await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, _, b) = raw_post(&c, "/api/collect", vec![b' '; 102_401]).await;
    assert_error(s, &b, 413, "payload_too_large");
    let future = json!({"website_id": site, "url": "/", "timestamp": "2999-01-01T00:00:00Z"});
    let (s, _, b) = raw_post(&c, "/api/collect", future.to_string().into_bytes()).await;
    assert_error(s, &b, 400, "bad_request");

    let (s, _, b) = raw_post(
        &c,
        "/api/auth/setup",
        json!({"username": "x", "password": "long enough"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_error(s, &b, 410, "gone");

    let anon = Client::new(c.base.clone());
    let (s, b) = anon.get("/api/websites").await;
    assert_error(s, &b, 401, "unauthorized");
    let mut wrong = Client::new(c.base.clone());
    wrong.key = Some("sk_wrong".into());
    let (s, b) = wrong.get(&format!("/api/websites/{site}/stats")).await;
    assert_error(s, &b, 401, "unauthorized");

    let (s, b) = c.get("/api/websites/does-not-exist/stats").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = c.get("/api/no/such/route").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = c.get("/api/reports/123").await;
    assert_error(s, &b, 501, "not_implemented");
    let r = c
        .req(reqwest::Method::PATCH, "/api/collect")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 405);
    let (s, b) = c
        .get(&format!("/api/websites/{site}/stats?start_date=yesterday"))
        .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = c
        .get(&format!("/api/websites/{site}/stats?timezone=Mars/Base"))
        .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = c
        .get(&format!("/api/websites/{site}/metrics?type=shoe_size"))
        .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = c
        .get(&format!("/api/websites/{site}/metrics?type=page&limit=-1"))
        .await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = c
        .post(
            "/api/websites",
            &json!({"name": "x", "domain": "ok.example", "timezone": "Nowhere"}),
        )
        .await;
    assert_error(s, &b, 400, "bad_request");

    // Success responses also carry a request id.
    let r = c
        .req(reqwest::Method::POST, "/api/collect")
        .json(&ok)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202);
    assert!(r.headers().contains_key("x-request-id"));

    // Random bytes: never a 500, and the server keeps answering.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let shapes: [&[u8]; 4] = [
        b"{\"website_id\":",
        b"[{\"url\":",
        b"{\"event_data\":{",
        b"[",
    ];
    for i in 0..1500 {
        let len = (next() % 400) as usize;
        let mut body: Vec<u8> = if i % 3 == 0 {
            shapes[i % shapes.len()].to_vec()
        } else {
            Vec::new()
        };
        body.extend((0..len).map(|_| next() as u8));
        let (s, _, b) = raw_post(&c, "/api/collect", body).await;
        assert!(s < 500, "random body gave {s}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
    }
    let (s, _) = c.get("/api/health").await;
    assert_eq!(s, 200);
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_rate_limit_is_per_ip_with_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.collect_rate_limit = 3;
    let (app, c) = start_app(settings).await;
    let site = c.website("Site", "UTC").await;
    let send = |ip: &'static str| {
        c.req(reqwest::Method::POST, "/api/collect")
            .header("x-forwarded-for", ip)
            .json(&json!({"website_id": site, "url": "/"}))
            .send()
    };
    for remaining in ["2", "1", "0"] {
        let r = send("81.2.69.1").await.expect("send");
        assert_eq!(r.status().as_u16(), 202);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
        assert!(r.headers().contains_key("x-ratelimit-reset"));
    }
    let r = send("81.2.69.1").await.expect("send");
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let other = send("85.214.9.9").await.expect("send");
    assert_eq!(other.status().as_u16(), 202, "another IP is not limited");
    app.shutdown().await.expect("shutdown");
}
