//! The isolation matrix: every route of the router that needs a key (the list comes from the
//! router's own tables, so a new route cannot escape), with every method, called by a second
//! company's admin with the first company's ids. Only 403, 404 or 405 may come back, and no
//! answer may carry the first company's data.

use crate::common::*;
use crate::connections::source_url;
use serde_json::{json, Value};

/// Path parameters that name something of the first company.
const OWNED: &[&str] = &[
    "{company_id}",
    "{user_id}",
    "{api_key_id}",
    "{connection_id}",
    "{asset_id}",
    "{aph_id}",
    "{company_handle}",
    "{asset_slug}",
    "{endpoint_id}",
    "{id}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_another_companys_ids_and_leaks_nothing() {
    let Some(url) = source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    let (app, op) = start_app(settings).await;
    let (acme, a) = op.company("acme").await;
    let (_, b) = op.company("globex").await;

    // The first company's objects, with names that must never appear in B's answers.
    let (_, me) = a.get("/me").await;
    let user = me["data"]["user_id"].as_str().expect("user").to_string();
    let (_, k) = a
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"name": "acme-secret-key"}),
        )
        .await;
    let key_number = k["data"]["api_key_id"].to_string();
    let key_id = {
        let (_, legacy) = a.get("/api/auth/keys").await;
        legacy["data"][0]["id"]
            .as_str()
            .expect("key id")
            .to_string()
    };
    let conn = crate::connections::postgres_connection(&a, &acme, &url, "acme-dwh").await;
    let (s, asset) = a
        .post(
            &format!("/companies/{acme}/assets"),
            &json!({"name": "Internal report", "connection_id": conn, "sql_logic": "SELECT 1"}),
        )
        .await;
    assert_eq!(s, 201, "{asset}");
    let asset_id = asset["data"]["asset_id"]
        .as_str()
        .expect("asset")
        .to_string();
    let endpoint =
        crate::connections::endpoint_over_new_table(&a, &acme, &conn, &url, "acme-feed").await;
    let (_, p) = a
        .post(
            &format!("/companies/{acme}/assets/{asset_id}/prices"),
            &json!({"price_usd": 1}),
        )
        .await;
    let aph = p["data"]["aph_id"].as_str().expect("price").to_string();
    let site = a.website("Acme blog", "UTC").await;
    let (s, alert) = a
        .post(
            &format!("/companies/{acme}/users/{user}/alerts"),
            &json!({"kind": "price_changed", "asset_id": asset_id, "name": "acme-watch"}),
        )
        .await;
    assert_eq!(s, 201, "{alert}");
    let alert_id = alert["data"]["alert_id"].to_string();
    let values = [
        ("{company_id}", acme.clone()),
        ("{user_id}", user),
        ("{api_key_id}", key_number),
        ("{connection_id}", conn),
        ("{asset_id}", asset_id),
        ("{aph_id}", aph),
        ("{company_handle}", "acme".to_string()),
        ("{asset_slug}", "internal-report".to_string()),
        ("{endpoint_id}", endpoint),
        ("{favorite_id}", "1".to_string()),
        ("{alert_id}", alert_id),
        ("{notification_id}", "x".to_string()),
        ("{category}", "x".to_string()),
        ("{*rest}", "x".to_string()),
    ];
    let secrets = [
        "ACME",
        "admin@acme.example",
        "acme-secret-key",
        "acme-dwh",
        "Internal report",
        "Acme blog",
        "acme-watch",
        "acme-feed",
        "SELECT 1",
    ];

    let paths = tally::protected_paths();
    assert!(paths.len() > 40, "the route table: {paths:?}");
    let mut walked = 0;
    for path in &paths {
        if !OWNED.iter().any(|p| path.contains(p)) {
            continue; // names nothing of the first company (reference data, /me, own lists)
        }
        let mut concrete = path.clone();
        for (param, value) in &values {
            concrete = concrete.replace(param, value);
        }
        // `{id}` is a website on the dashboard routes and a key on /api/auth/keys.
        let id = if concrete.starts_with("/api/auth/keys") {
            &key_id
        } else {
            &site
        };
        concrete = concrete.replace("{id}", id);
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::PATCH,
            reqwest::Method::DELETE,
        ] {
            let body = (method != reqwest::Method::GET).then(|| json!({}));
            let (s, answer) = b.send(method.clone(), &concrete, body.as_ref()).await;
            assert!(
                [403, 404, 405].contains(&s),
                "{method} {path} ({concrete}) → {s} {answer}"
            );
            let text = answer.to_string();
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{method} {concrete} leaked {secret:?}: {text}"
                );
            }
            walked += 1;
        }
    }
    assert!(walked > 150, "walked {walked} route × method pairs");

    // Nothing of the first company changed.
    let (_, c) = a.get(&format!("/companies/{acme}")).await;
    assert_eq!(c["data"]["company_name"], "ACME");
    let (s, _) = a.get(&format!("/api/websites/{site}")).await;
    assert_eq!(s, 200);
    let _: Value = c;
    app.shutdown().await.expect("shutdown");
}
