//! Websites and API keys through the log: read-your-writes, masking, revocation, both auth
//! header styles.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websites_and_keys_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, c) = start_app(test_settings(dir.path())).await;

    // Read-your-writes: collect accepts the website the moment its POST returned.
    let site = c.website("Blog", "Europe/Berlin").await;
    let (s, body) = c
        .post("/api/collect", &json!({"website_id": site, "url": "/"}))
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body, json!({"ok": true}));

    let (s, one) = c.get(&format!("/api/websites/{site}")).await;
    assert_eq!(s, 200);
    assert_eq!(one["data"]["timezone"], "Europe/Berlin");
    let r = c
        .req(reqwest::Method::PUT, &format!("/api/websites/{site}"))
        .json(&json!({"name": "Blog 2"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let (_, list) = c.get("/api/websites").await;
    assert_eq!(list["data"][0]["name"], "Blog 2");
    assert_eq!(list["pagination"]["total"], 1);

    // A second key, used with Bearer; listing shows keys masked; revoked keys stop working.
    let (s, created) = c.post("/api/auth/keys", &json!({"name": "ci"})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["data"]["key"].as_str().expect("key").to_string();
    let key_id = created["data"]["id"].as_str().expect("id").to_string();
    let bearer = c
        .http
        .get(format!("{}/api/websites", c.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(bearer.status().as_u16(), 200);
    let (_, keys) = c.get("/api/auth/keys").await;
    let listed = keys["data"].to_string();
    assert!(!listed.contains(&key), "full key never listed");
    assert!(listed.contains(&format!("sk_****{}", &key[key.len() - 4..])));
    let r = c
        .req(reqwest::Method::DELETE, &format!("/api/auth/keys/{key_id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let after = c
        .http
        .get(format!("{}/api/websites", c.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(after.status().as_u16(), 401);

    // Idempotency-Key: a retried create returns the first response and creates nothing new; the
    // same key with another body is refused; a retried collect is stored once.
    let create = |body: serde_json::Value| {
        c.req(reqwest::Method::POST, "/api/websites")
            .header("idempotency-key", "create-1")
            .json(&body)
            .send()
    };
    let first = create(json!({"name": "Idem", "domain": "idem.example"}))
        .await
        .expect("create");
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = create(json!({"name": "Idem", "domain": "idem.example"}))
        .await
        .expect("retry");
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["data"]["id"], first["data"]["id"]);
    let (_, list) = c.get("/api/websites").await;
    assert_eq!(list["pagination"]["total"], 2, "the retry created nothing");
    let other = create(json!({"name": "Other", "domain": "idem.example"}))
        .await
        .expect("reuse");
    assert_eq!(other.status().as_u16(), 422);
    for _ in 0..2 {
        let r = c
            .req(reqwest::Method::POST, "/api/collect")
            .header("idempotency-key", "collect-1")
            .json(&json!({"website_id": site, "url": "/idem"}))
            .send()
            .await
            .expect("collect");
        assert_eq!(r.status().as_u16(), 202);
    }
    c.wait_idle().await;
    let today = chrono::Utc::now().date_naive();
    let (_, pages) = c
        .get(&format!(
            "/api/websites/{site}/metrics?type=page&include_bots=true&timezone=UTC&start_date={}&end_date={}",
            today - chrono::Duration::days(1),
            today + chrono::Duration::days(1)
        ))
        .await;
    let idem = pages["data"]["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["value"] == "/idem").cloned());
    assert_eq!(
        idem.map(|r| r["pageviews"].clone()),
        Some(json!(1)),
        "{pages}"
    );

    // Deleting a website: it disappears and collect refuses it.
    let r = c
        .req(reqwest::Method::DELETE, &format!("/api/websites/{site}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = c.get(&format!("/api/websites/{site}")).await;
    assert_eq!(s, 404);
    let (s, _) = c
        .post("/api/collect", &json!({"website_id": site, "url": "/"}))
        .await;
    assert_eq!(s, 404);
    app.shutdown().await.expect("shutdown");
}
