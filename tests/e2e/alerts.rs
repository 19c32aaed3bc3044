//! Alerts end to end, on either backend set: rules made through the API, fired by the alerts
//! stage from the usage, billing and entity streams exactly once per window, shown in-app, and
//! delivered to a webhook receiver the test runs, signed, retried after a failure, each
//! delivery id acted on once.

use crate::common::*;
use crate::connections::{priced_asset, source_connection, source_url};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What the receiver got: every request (delivery id, timestamp, signature, body), in order.
pub(crate) type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A webhook receiver on loopback that fails the first request of each delivery with a `500`
/// (so every delivery is retried) and accepts the next.
pub(crate) async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let app = axum::Router::new()
        .route(
            "/dead",
            axum::routing::post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/hook",
            axum::routing::post({
                let got = got.clone();
                move |headers: axum::http::HeaderMap, body: String| {
                    let (got, seen) = (got.clone(), seen.clone());
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let id = h("x-tally-delivery");
                        got.lock().expect("lock").push((
                            id.clone(),
                            h("x-tally-timestamp"),
                            h("x-tally-signature"),
                            body,
                        ));
                        if seen.lock().expect("lock").insert(id) {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), got)
}

pub(crate) fn valid_signature(secret: &str, ts: &str, body: &str, header: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.{body}").as_bytes());
    header == format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Waits (up to `secs`) until the user's notifications number `n`, and returns them.
async fn notifications(c: &Client, path: &str, n: usize, secs: u64) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (s, b) = c.get(path).await;
        assert_eq!(s, 200, "{b}");
        let have = b["data"].as_array().map_or(0, Vec::len);
        if have >= n || tokio::time::Instant::now() > deadline {
            return b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_per_window_in_app_and_by_signed_webhook() {
    let Some(url) = source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    settings.webhook_retry_base_ms = 100;
    settings.webhook_give_up_secs = 3;
    let (app, op) = start_app(settings.clone()).await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let conn = source_connection(&seller, &seller_id, &url).await;
    let asset = priced_asset(
        &seller,
        &seller_id,
        &conn,
        ("Watched", "SELECT 1 AS one"),
        0.05,
    )
    .await;
    let broken = priced_asset(
        &seller,
        &seller_id,
        &conn,
        ("Broken", "SELECT * FROM no_such_table_for_alerts"),
        0.05,
    )
    .await;
    let (s, b) = op
        .send(
            reqwest::Method::PUT,
            &format!("/companies/{buyer_id}/subscription"),
            Some(&json!({"plan": "starter", "monthly_requests": 13})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["limits"]["monthly_requests"], 13, "{b}");
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "alerts")
        .json(&json!({"credits": 100}))
        .send()
        .await
        .expect("top up");
    assert_eq!(r.status().as_u16(), 201);

    let (_, me) = buyer.get("/me").await;
    let user = me["data"]["user_id"].as_str().expect("user").to_string();
    let alerts = format!("/companies/{buyer_id}/users/{user}/alerts");
    let (hook, got) = receiver().await;

    // Bad rules are refused with the field named.
    for (body, status, field) in [
        (json!({"kind": "nope"}), 400, "kind"),
        (json!({"kind": "low_balance"}), 400, "threshold_credits"),
        (json!({"kind": "price_changed"}), 400, "asset_id"),
        (
            json!({"kind": "quota", "webhook_url": "ftp://x/y"}),
            400,
            "webhook_url",
        ),
        (
            json!({"kind": "quota", "webhook_url": "http://10.1.2.3/hook"}),
            422,
            "webhook_url",
        ),
    ] {
        let (s, b) = buyer.post(&alerts, &body).await;
        assert_eq!(
            (s, &b["error"]["details"]["field"]),
            (status, &json!(field)),
            "{body}: {b}"
        );
    }
    let (s, b) = buyer
        .post(&alerts, &json!({"kind": "quota", "surprise": 1}))
        .await;
    assert_eq!(s, 400, "unknown field: {b}");

    let (s, b) = buyer
        .post(
            &alerts,
            &json!({"kind": "quota", "name": "allocation", "webhook_url": hook}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let quota_id = b["data"]["alert_id"].as_i64().expect("integer alert_id");
    let secret = b["data"]["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (s, b) = buyer
        .post(
            &alerts,
            &json!({"kind": "low_balance", "threshold_credits": 60, "webhook_url": hook}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let low_secret = b["data"]["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let (s, b) = buyer
        .post(
            &alerts,
            &json!({"kind": "price_changed", "asset_id": asset}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["webhook_secret"], Value::Null);
    let (s, b) = buyer
        .post(
            &alerts,
            &json!({"kind": "asset_updated", "asset_id": asset}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = buyer
        .post(
            &alerts,
            &json!({"kind": "executions_failing", "asset_id": broken}),
        )
        .await;
    assert_eq!(
        (s, &b["error"]["details"]["field"]),
        (400, &json!("asset_id")),
        "only the seller watches its asset's failures: {b}"
    );
    let (_, sme) = seller.get("/me").await;
    let seller_user = sme["data"]["user_id"].as_str().expect("user").to_string();
    let seller_alerts = format!("/companies/{seller_id}/users/{seller_user}/alerts");
    let dead_hook = hook.replace("/hook", "/dead");
    let (s, b) = seller
        .post(
            &seller_alerts,
            &json!({"kind": "executions_failing", "asset_id": broken, "failing_percent": 50,
                    "window_minutes": 60, "min_executions": 3, "webhook_url": dead_hook}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let failing_id = b["data"]["alert_id"].as_i64().expect("alert_id");
    let (_, b) = buyer.get(&format!("{alerts}/{quota_id}")).await;
    assert_eq!(b["data"]["kind"], "quota");
    assert!(b["data"].get("webhook_secret").is_none(), "shown once: {b}");
    assert!(!b.to_string().contains(&secret), "never shown again");
    let (_, b) = buyer.get(&format!("{alerts}/asset/{asset}")).await;
    assert_eq!(b["meta"]["pagination"]["total"], 2, "{b}");
    assert_eq!(seller.get(&alerts).await.0, 403, "another company's user");

    // Three failing executions (refunded) of the broken asset: the seller's rule fires. Then
    // ten executions at 5 credits: 80 % (11 of 13) and 100 % of the allocation, and the
    // balance below 60 after the ninth. The fourteenth call is refused by the allocation.
    for i in 0..3 {
        let (s, b) = buyer.get("/analyze/acme/assets/broken").await;
        assert_eq!(s, 502, "broken run {i}: {b}");
    }
    let run = format!("/analyze/acme/assets/{}", "watched");
    for i in 0..10 {
        let (s, b) = buyer.get(&run).await;
        assert_eq!(s, 200, "execution {i}: {b}");
    }
    let (s, b) = buyer.get(&run).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{b}"
    );
    let prices = format!("/companies/{seller_id}/assets/{asset}/prices");
    let (_, b) = seller.get(&format!("{prices}/active")).await;
    let aph = b["data"]["aph_id"].as_str().expect("aph").to_string();
    let (s, b) = seller
        .patch(&format!("{prices}/{aph}"), &json!({"price_usd": 0.06}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = seller
        .patch(
            &format!("/companies/{seller_id}/assets/{asset}"),
            &json!({"description": "now with a description"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // The seller's rule fired once; its webhook never answered, so the delivery is dead.
    let seller_inbox = format!("/companies/{seller_id}/users/{seller_user}/notifications");
    let b = notifications(&seller, &seller_inbox, 1, 30).await;
    assert_eq!(b["meta"]["pagination"]["total"], 1, "{b}");
    assert_eq!(b["data"][0]["kind"], "executions_failing", "{b}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let dead = loop {
        let (_, b) = seller
            .get(&format!("{seller_alerts}/{failing_id}/deliveries"))
            .await;
        if b["data"][0]["status"] == "dead" || tokio::time::Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(dead["data"][0]["status"], "dead", "{dead}");
    assert!(
        dead["data"][0]["attempts"].as_i64().unwrap_or(0) >= 2,
        "{dead}"
    );
    assert_eq!(dead["data"][0]["last_status"], 503, "{dead}");

    let inbox = format!("/companies/{buyer_id}/users/{user}/notifications");
    let b = notifications(&buyer, &inbox, 5, 30).await;
    let mut fired: Vec<(String, String)> = b["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap_or("").to_string(),
                n["window"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    fired.sort();
    let kinds: Vec<&str> = fired.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "asset_updated",
            "low_balance",
            "price_changed",
            "quota",
            "quota"
        ],
        "{b}"
    );
    assert!(
        fired[3].1.ends_with(":100") && fired[4].1.ends_with(":80"),
        "{fired:?}"
    );
    assert_eq!(b["meta"]["unread"], 5);
    let first = b["data"][0]["notification_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (s, _) = buyer
        .post(&format!("{inbox}/{first}/read"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (_, b) = buyer.get(&inbox).await;
    assert_eq!(b["meta"]["unread"], 4);
    assert_eq!(
        buyer
            .post(&format!("{inbox}/nope/read"), &json!({}))
            .await
            .0,
        404
    );

    // Three webhook deliveries (the two quota thresholds and the low balance), each failed once
    // and retried with the same delivery id, every request signed with its rule's secret.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = got.lock().expect("lock").len();
        if n >= 6 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let requests = got.lock().expect("lock").clone();
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    let mut acted_on: Vec<String> = Vec::new();
    for (id, ts, sig, body) in &requests {
        let payload: Value = serde_json::from_str(body).expect("json body");
        assert_eq!(payload["delivery_id"].as_str(), Some(id.as_str()));
        let key = if payload["kind"] == "quota" {
            &secret
        } else {
            &low_secret
        };
        assert!(valid_signature(key, ts, body, sig), "signature of {body}");
        let n = per_delivery.entry(id.clone()).or_default();
        *n += 1;
        if *n == 2 {
            acted_on.push(payload["kind"].as_str().unwrap_or("").to_string());
        }
    }
    acted_on.sort();
    assert_eq!(acted_on, ["low_balance", "quota", "quota"], "{requests:?}");
    assert_eq!(
        per_delivery.len(),
        3,
        "one delivery id per firing: {requests:?}"
    );
    let (_, b) = buyer.get(&format!("{alerts}/{quota_id}/deliveries")).await;
    let statuses: Vec<(Value, Value)> = b["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|d| (d["status"].clone(), d["attempts"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (json!("delivered"), json!(2)),
            (json!("delivered"), json!(2))
        ],
        "{b}"
    );

    // Nothing fires twice: a retried execution, more ledger rows and a restart later, the same.
    wait_drained(&buyer).await;
    let b = notifications(&buyer, &inbox, 6, 3).await;
    assert_eq!(b["meta"]["pagination"]["total"], 5, "{b}");
    let (s, _) = buyer
        .patch(
            &format!("{alerts}/{quota_id}"),
            &json!({"is_active": false}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(buyer.delete(&format!("{alerts}/{quota_id}")).await.0, 200);
    assert_eq!(buyer.get(&format!("{alerts}/{quota_id}")).await.0, 404);
    app.shutdown().await.expect("shutdown");
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
}
