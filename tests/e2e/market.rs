//! The marketplace's companies, users, keys and reference data over HTTP, on either backend
//! set: the operator creates tenants, admins manage users and keys, roles and companies are
//! enforced, uniqueness holds under concurrent creates, and unbuilt parts answer 501.

use crate::common::*;
use serde_json::{json, Value};

fn data_str(body: &Value, field: &str) -> String {
    body["data"][field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companies_users_and_keys_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;

    // The operator's company came from setup; the operator sees itself in /me.
    let (s, me) = op.get("/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["data"]["role_id"], 1);
    assert_eq!(me["data"]["company"]["is_operator"], true);
    assert!(me["message"].is_string() && me["meta"]["timestamp"].is_string());
    let op_company = me["data"]["company_id"]
        .as_str()
        .expect("company")
        .to_string();

    // A tenant with its admin; the admin's key is shown once and works at once.
    let (acme, admin) = op.company("acme").await;
    let (s, c) = admin.get(&format!("/companies/{acme}")).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["data"]["company_handle"], "acme");
    assert_eq!(c["data"]["credits_balance"], 0);
    assert_eq!(c["data"]["vendor_share_percent"], 0.85);
    let (s, _) = admin.get(&format!("/companies/{op_company}")).await;
    assert_eq!(s, 403, "a tenant cannot read the operator's company");
    let (s, _) = op.get(&format!("/companies/{acme}")).await;
    assert_eq!(s, 200, "the operator reads any company");
    let (s, _) = admin.post("/companies", &json!({"company_handle": "x2", "company_domain": "x2.example", "admin": {"email_address": "a@x2.example"}})).await;
    assert_eq!(s, 403, "only the operator creates companies");

    // PATCH: a field changes; the operator alone sets the vendor share.
    let (s, b) = admin
        .patch(
            &format!("/companies/{acme}"),
            &json!({"company_name": "Acme Data", "industry_id": 9}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["company_id"], acme.as_str());
    let (_, c) = admin.get(&format!("/companies/{acme}")).await;
    assert_eq!(
        (
            c["data"]["company_name"].clone(),
            c["data"]["industry_id"].clone()
        ),
        (json!("Acme Data"), json!(9))
    );
    let (s, _) = admin
        .patch(
            &format!("/companies/{acme}"),
            &json!({"vendor_share_percent": 0.99}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = op
        .patch(
            &format!("/companies/{acme}"),
            &json!({"vendor_share_percent": 0.9}),
        )
        .await;
    assert_eq!(s, 200);

    // Users: the admin adds a buyer; the buyer sees itself but not the user list.
    let (s, b) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "Buyer@Acme.example", "role_id": 4, "first_name": "Bo"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let buyer_id = data_str(&b, "user_id");
    let (s, _) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "buyer@acme.example", "role_id": 4}),
        )
        .await;
    assert_eq!(s, 409, "e-mails are unique, ignoring case");
    let (s, _) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "op@acme.example", "role_id": 1}),
        )
        .await;
    assert_eq!(s, 403, "an admin cannot grant the operator role");
    let (s, list) = admin.get(&format!("/companies/{acme}/users")).await;
    assert_eq!(s, 200);
    assert_eq!(list["meta"]["pagination"]["total"], 2);
    assert!(!list.to_string().contains("argon2"), "no password hashes");

    // A key for the buyer, made by the admin; the buyer's own powers are a buyer's.
    let (s, k) = admin
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"name": "buyer key", "user_id": buyer_id, "role_id": 4}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let buyer = admin.with_key(&data_str(&k, "key"));
    let buyer_key_id = k["data"]["api_key_id"]
        .as_i64()
        .expect("integer api_key_id");
    assert_eq!(k["data"]["role_id"], 4);
    let (s, me) = buyer.get("/me").await;
    assert_eq!((s, me["data"]["user_id"].clone()), (200, json!(buyer_id)));
    let (s, _) = buyer.get(&format!("/companies/{acme}/users")).await;
    assert_eq!(s, 403, "a buyer cannot list users");
    let (s, _) = buyer
        .get(&format!("/companies/{acme}/users/{buyer_id}"))
        .await;
    assert_eq!(s, 200, "but reads itself");
    let (s, _) = buyer
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"role_id": 2}),
        )
        .await;
    assert_eq!(s, 403, "a key carries no more than its creator's role");
    let (s, keys) = buyer.get(&format!("/companies/{acme}/api-keys")).await;
    assert_eq!(s, 200);
    assert_eq!(
        keys["meta"]["pagination"]["total"], 1,
        "a buyer lists its own keys: {keys}"
    );
    assert!(keys["data"][0]["key"]
        .as_str()
        .expect("masked")
        .starts_with("sk_****"));

    // PATCH changes metadata, never the key; revoke keeps who and why; the key stops working.
    let key_path = format!("/companies/{acme}/api-keys/{buyer_key_id}");
    let (s, _) = admin.patch(&key_path, &json!({"name": "renamed"})).await;
    assert_eq!(s, 200);
    let (s, _) = admin.patch(&key_path, &json!({"key": "sk_chosen"})).await;
    assert_eq!(s, 400);
    let (s, r) = admin
        .post(
            &format!("{key_path}/revoke"),
            &json!({"reason": "laptop stolen"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["revocation_reason"], "laptop stolen");
    assert_eq!(r["data"]["revoked_by"], admin_user_id(&admin).await);
    assert!(r["data"]["revoked_at"].is_string());
    let (s, _) = buyer.get("/me").await;
    assert_eq!(s, 401, "a revoked key stops at once");
    let (_, k) = admin.get(&key_path).await;
    assert_eq!(
        (k["data"]["name"].clone(), k["data"]["active"].clone()),
        (json!("renamed"), json!(false))
    );

    // An expiring key works until its expiration, then is refused.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (s, k) = admin
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"expiration_date_utc": soon}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let expiring = admin.with_key(&data_str(&k, "key"));
    assert_eq!(expiring.get("/me").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        expiring.get("/me").await.0,
        401,
        "an expired key is refused"
    );

    // A user made INACTIVE (DELETE) loses its keys at once.
    let (s, b) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "seller@acme.example", "role_id": 3}),
        )
        .await;
    assert_eq!(s, 201);
    let seller_id = data_str(&b, "user_id");
    let (_, k) = admin
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"user_id": seller_id}),
        )
        .await;
    let seller = admin.with_key(&data_str(&k, "key"));
    assert_eq!(
        k["data"]["role_id"], 3,
        "a key takes its owner's role by default"
    );
    assert_eq!(seller.get("/me").await.0, 200);
    let (s, _) = admin
        .delete(&format!("/companies/{acme}/users/{seller_id}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(seller.get("/me").await.0, 401);
    let (_, u) = admin
        .get(&format!("/companies/{acme}/users/{seller_id}"))
        .await;
    assert_eq!(u["data"]["status"], "INACTIVE");

    // The /api/auth/keys routes work over the same keys, within the caller's company.
    let (s, legacy) = admin.get("/api/auth/keys").await;
    assert_eq!(s, 200);
    assert!(legacy["data"].as_array().is_some_and(|a| a
        .iter()
        .all(|k| k["key"].as_str().is_some_and(|m| m.starts_with("sk_****")))));
    let (_, op_keys) = op.get("/api/auth/keys").await;
    assert!(
        !op_keys.to_string().contains(&acme),
        "another company's keys are not listed"
    );
    app.shutdown().await.expect("shutdown");
}

async fn admin_user_id(c: &Client) -> Value {
    c.get("/me").await.1["data"]["user_id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_of_one_handle_or_email_give_one_201() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let handle_race = (0..20).map(|i| {
        let op = op.clone();
        async move {
            op.post(
                "/companies",
                &json!({"company_handle": "race", "company_domain": format!("race{i}.example"),
                        "admin": {"email_address": format!("a{i}@race.example")}}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(handle_race).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let conflicts: Vec<_> = answers.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!((created, conflicts.len()), (1, 19), "{answers:?}");
    assert!(conflicts
        .iter()
        .all(|(_, b)| b["error"]["details"]["field"] == "company_handle"));

    let (acme, admin) = op.company("acme").await;
    let email_race = (0..20).map(|_| {
        let admin = admin.clone();
        let path = format!("/companies/{acme}/users");
        async move {
            admin
                .post(
                    &path,
                    &json!({"email_address": "same@acme.example", "role_id": 4}),
                )
                .await
        }
    });
    let answers = futures::future::join_all(email_race).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((created, conflicts), (1, 19), "{answers:?}");
    let (_, users) = admin.get(&format!("/companies/{acme}/users")).await;
    assert_eq!(
        users["meta"]["pagination"]["total"], 2,
        "one admin and one buyer"
    );
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_data_and_unbuilt_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let (acme, tenant) = op.company("acme").await;
    let (s, industries) = tenant.get("/industries").await;
    assert_eq!(s, 200);
    assert_eq!(industries["data"].as_array().map(Vec::len), Some(20));
    let (s, m) = tenant.get("/industries/5").await;
    assert_eq!((s, m["data"]["naisc_code"].clone()), (200, json!("31-33")));
    assert_eq!(tenant.get("/industries/x").await.0, 400);
    assert_eq!(tenant.get("/industries/99").await.0, 404);
    let (s, engines) = tenant.get("/cloud-providers/6/storage-engines").await;
    assert_eq!(s, 200);
    assert!(engines["data"]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["service_name"] == "PostgreSQL")));
    assert_eq!(
        tenant.get("/cloud-providers/6/storage-engines/1").await.0,
        200
    );
    assert_eq!(
        tenant.get("/cloud-providers/1/storage-engines/1").await.0,
        404,
        "engine of another provider"
    );
    assert_eq!(tenant.get("/job-functions/1").await.0, 200);
    assert_eq!(tenant.get("/asset_usecases").await.0, 200);
    let anonymous = Client::new(op.base.clone());
    assert_eq!(anonymous.get("/industries").await.0, 401);

    for path in [format!("/companies/{acme}/posts")] {
        let (s, b) = tenant.get(&path).await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (501, json!("not_implemented")),
            "{path}"
        );
    }
    let oauth = format!("/companies/{acme}/users/google-oauth");
    assert_eq!(tenant.post(&oauth, &json!({})).await.0, 501);
    let (s, _) = tenant
        .post("/companies/x/users/google-oauth", &json!({}))
        .await;
    assert_eq!(s, 403, "another company's path is refused first");
    app.shutdown().await.expect("shutdown");
}

/// The plans of seed `004`; a tenant starts on Starter and the operator's company on
/// Enterprise; only the operator changes a subscription, and the change shows on the company.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let (acme, tenant) = op.company("acme").await;
    let (s, b) = tenant.get("/plans").await;
    assert_eq!(s, 200, "{b}");
    let ids: Vec<Value> = b["data"]
        .as_array()
        .map(|a| a.iter().map(|p| p["plan_id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        vec![json!("starter"), json!("professional"), json!("enterprise")]
    );
    assert_eq!(
        (
            &b["data"][0]["requests_per_minute"],
            &b["data"][0]["requests_per_day"],
            &b["data"][0]["concurrent_requests"]
        ),
        (&json!(60), &json!(10_000), &json!(5))
    );
    assert_eq!(
        b["data"][2]["requests_per_minute"],
        Value::Null,
        "unlimited"
    );

    let sub = format!("/companies/{acme}/subscription");
    let (s, b) = tenant.get(&sub).await;
    assert_eq!(
        (s, &b["data"]["plan"], &b["data"]["is_default"]),
        (200, &json!("starter"), &json!(true)),
        "{b}"
    );
    let (_, me) = op.get("/me").await;
    let home = me["data"]["company_id"]
        .as_str()
        .expect("company")
        .to_string();
    let (_, b) = op.get(&format!("/companies/{home}/subscription")).await;
    assert_eq!(b["data"]["plan"], "enterprise", "{b}");

    let (s, b) = tenant
        .send(
            reqwest::Method::PUT,
            &sub,
            Some(&json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(s, 403, "a company admin cannot change its plan: {b}");
    let (s, b) = op
        .send(reqwest::Method::PUT, &sub, Some(&json!({"plan": "gold"})))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (400, &json!("bad_request")),
        "{b}"
    );
    let (s, b) = op
        .send(
            reqwest::Method::PUT,
            &sub,
            Some(&json!({"plan": "professional", "x": 1})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = op
        .send(
            reqwest::Method::PUT,
            &sub,
            Some(&json!({"plan": "professional"})),
        )
        .await;
    assert_eq!(
        (s, &b["data"]["plan"], &b["data"]["is_default"]),
        (200, &json!("professional"), &json!(false)),
        "{b}"
    );
    assert_eq!(b["data"]["limits"]["requests_per_minute"], 300);
    let (_, c) = tenant.get(&format!("/companies/{acme}")).await;
    assert_eq!(c["data"]["subscription"]["plan"], "professional", "{c}");
    assert!(c["data"]["subscription"]["current_period"]["end"].is_string());
    let (s, _) = op
        .send(
            reqwest::Method::PUT,
            "/companies/no-such-company/subscription",
            Some(&json!({"plan": "starter"})),
        )
        .await;
    assert_eq!(s, 404);
    app.shutdown().await.expect("shutdown");
}

/// Random and malformed bodies over every new POST and PATCH route: always a 4xx in the error
/// shape, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_on_the_new_routes_are_4xx_never_500() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    let (app, op) = start_app(settings).await;
    let (acme, admin) = op.company("acme").await;
    let (_, me) = admin.get("/me").await;
    let user = me["data"]["user_id"].as_str().expect("user").to_string();
    let (_, k) = admin
        .post(&format!("/companies/{acme}/api-keys"), &json!({}))
        .await;
    let key = k["data"]["api_key_id"].clone();
    let mut routes = vec![
        (reqwest::Method::POST, "/companies".to_string()),
        (reqwest::Method::PATCH, format!("/companies/{acme}")),
        (reqwest::Method::POST, format!("/companies/{acme}/users")),
        (
            reqwest::Method::PATCH,
            format!("/companies/{acme}/users/{user}"),
        ),
        (reqwest::Method::POST, format!("/companies/{acme}/api-keys")),
        (
            reqwest::Method::PATCH,
            format!("/companies/{acme}/api-keys/{key}"),
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/api-keys/{key}/revoke"),
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/connections"),
        ),
        (reqwest::Method::POST, format!("/companies/{acme}/assets")),
        (reqwest::Method::POST, format!("/companies/{acme}/credits")),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/users/{user}/favorites"),
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/users/{user}/alerts"),
        ),
    ];
    // With a real source: a connection, an asset and a price to aim the rest at.
    if let Some(url) = crate::connections::source_url() {
        let conn = crate::connections::postgres_connection(&admin, &acme, &url, "dwh").await;
        let (s, a) = admin
            .post(
                &format!("/companies/{acme}/assets"),
                &json!({"name": "Fuzzed", "connection_id": conn, "sql_logic": "SELECT 1"}),
            )
            .await;
        assert_eq!(s, 201, "{a}");
        let asset = a["data"]["asset_id"].as_str().expect("asset").to_string();
        let (s, p) = admin
            .post(
                &format!("/companies/{acme}/assets/{asset}/prices"),
                &json!({"price_usd": 1.0}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        let aph = p["data"]["aph_id"].as_str().expect("aph").to_string();
        let (s, al) = admin
            .post(
                &format!("/companies/{acme}/users/{user}/alerts"),
                &json!({"kind": "price_changed", "asset_id": asset}),
            )
            .await;
        assert_eq!(s, 201, "{al}");
        let alert = al["data"]["alert_id"].clone();
        let endpoint =
            crate::connections::endpoint_over_new_table(&admin, &acme, &conn, &url, "Fuzzed feed")
                .await;
        let ep = format!("/companies/{acme}/endpoints/{endpoint}");
        routes.extend([
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/endpoints"),
            ),
            (reqwest::Method::PATCH, ep.clone()),
            (reqwest::Method::POST, format!("{ep}/keys")),
            (reqwest::Method::POST, format!("{ep}/scan_column")),
            (reqwest::Method::POST, format!("{ep}/test")),
            (reqwest::Method::POST, format!("{ep}/prices")),
        ]);
        routes.extend([
            (
                reqwest::Method::PATCH,
                format!("/companies/{acme}/users/{user}/alerts/{alert}"),
            ),
            (
                reqwest::Method::PATCH,
                format!("/companies/{acme}/assets/{asset}/prices/{aph}"),
            ),
            (
                reqwest::Method::PATCH,
                format!("/companies/{acme}/connections/{conn}"),
            ),
            (
                reqwest::Method::PATCH,
                format!("/companies/{acme}/assets/{asset}"),
            ),
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/assets/{asset}/prices"),
            ),
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/assets/{asset}/prices/calculate_credits"),
            ),
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/assets/{asset}/prices/discount"),
            ),
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/assets/{asset}/scan_column"),
            ),
            (
                reqwest::Method::POST,
                format!("/companies/{acme}/assets/{asset}/test"),
            ),
            (
                reqwest::Method::POST,
                "/analyze/acme/assets/fuzzed".to_string(),
            ),
        ]);
    }
    let fixed = [
        json!(null),
        json!([]),
        json!("text"),
        json!(42),
        json!({"company_handle": 7}),
        json!({"company_handle": "ok-handle", "company_domain": "x.example", "admin": {"email_address": "nope"}}),
        json!({"role_id": "admin"}),
        json!({"role_id": 99, "email_address": "a@b.example"}),
        json!({"status": "DELETED"}),
        json!({"key_type": "root"}),
        json!({"expiration_date_utc": "yesterday"}),
        json!({"company_name": "x".repeat(10_000)}),
        json!({"industry_id": 12345}),
        json!({"vendor_share_percent": 5}),
        json!({"partnership_type": "FRIENDS"}),
        json!({"timezone": "Mars/Olympus"}),
        json!({"reason": ["a"]}),
        json!({"endpoint_schema": {"columns": [{"name": "region", "filters": [{"operator": "in", "value": 3}]}]}}),
        json!({"endpoint_schema": {"columns": [{"name": "n", "aggregation": "MEDIAN"}]}}),
        json!({"access_method": "IP", "access_whitelist": {"type": "ip", "values": ["nope"]}}),
        json!({"max_records_per_request": 0}),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let fields = [
        "company_handle",
        "company_domain",
        "company_name",
        "email_address",
        "role_id",
        "status",
        "name",
        "key_type",
        "expiration_date_utc",
        "industry_id",
        "admin",
        "reason",
        "engine_id",
        "credentials",
        "connection_id",
        "sql_logic",
        "asset_schema",
        "visibility",
        "tags",
        "price_usd",
        "credits",
        "asset_id",
        "priority",
        "params",
        "timeout_ms",
        "source_table_name",
        "endpoint_schema",
        "access_method",
        "access_whitelist",
        "max_records_per_request",
        "rate_limit_number",
        "rate_limit_period",
        "column",
        "limit",
    ];
    let mut bodies: Vec<Vec<u8>> = fixed.iter().map(|v| v.to_string().into_bytes()).collect();
    bodies.push(b"{not json".to_vec());
    bodies.push(vec![0xff, 0xfe, 0x00]);
    for _ in 0..40 {
        let mut obj = serde_json::Map::new();
        for _ in 0..rng.gen_range(1..4) {
            let value = match rng.gen_range(0..6) {
                0 => json!(rng.gen::<i64>()),
                1 => json!(rng.gen::<f64>()),
                2 => json!(rng.gen::<bool>()),
                3 => json!(null),
                4 => json!({"nested": rng.gen::<u8>()}),
                _ => json!((0..rng.gen_range(0..300))
                    .map(|_| rng.gen_range(' '..'~'))
                    .collect::<String>()),
            };
            obj.insert(fields[rng.gen_range(0..fields.len())].to_string(), value);
        }
        bodies.push(Value::Object(obj).to_string().into_bytes());
    }
    for (method, path) in &routes {
        for body in &bodies {
            let r = op
                .req(method.clone(), path)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let answer: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                status < 500,
                "{method} {path} {} → {status} {answer}",
                String::from_utf8_lossy(body)
            );
            if status >= 400 {
                assert!(
                    answer["error"]["code"].is_string(),
                    "{method} {path} → {answer}"
                );
            }
        }
    }
    app.shutdown().await.expect("shutdown");
}

/// A second company's admin, with the first company's ids, on every route built here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_companys_ids_answer_403_or_404_and_never_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let (acme, acme_admin) = op.company("acme").await;
    let (globex, other) = op.company("globex").await;
    let (_, me) = acme_admin.get("/me").await;
    let acme_user = me["data"]["user_id"].as_str().expect("user").to_string();
    let (_, k) = acme_admin
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"name": "secret-name"}),
        )
        .await;
    let acme_key = k["data"]["api_key_id"].clone();
    let site = acme_admin.website("Acme blog", "UTC").await;
    let attempts = [
        (reqwest::Method::GET, format!("/api/websites/{site}"), None),
        (
            reqwest::Method::PUT,
            format!("/api/websites/{site}"),
            Some(json!({"name": "pwned"})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/websites/{site}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/websites/{site}/stats"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/websites/{site}/pageviews"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/websites/{site}/metrics?type=page"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/websites/{site}/realtime"),
            None,
        ),
        (reqwest::Method::GET, format!("/companies/{acme}"), None),
        (
            reqwest::Method::PATCH,
            format!("/companies/{acme}"),
            Some(json!({"company_name": "pwned"})),
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{acme}/users"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/users"),
            Some(json!({"email_address": "x@y.example", "role_id": 4})),
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{acme}/users/{acme_user}"),
            None,
        ),
        (
            reqwest::Method::PATCH,
            format!("/companies/{acme}/users/{acme_user}"),
            Some(json!({"first_name": "x"})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/companies/{acme}/users/{acme_user}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{globex}/users/{acme_user}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{acme}/api-keys"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/api-keys"),
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{acme}/api-keys/{acme_key}"),
            None,
        ),
        (
            reqwest::Method::PATCH,
            format!("/companies/{acme}/api-keys/{acme_key}"),
            Some(json!({"name": "x"})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/companies/{acme}/api-keys/{acme_key}"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/companies/{acme}/api-keys/{acme_key}/revoke"),
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            format!("/companies/{globex}/api-keys/{acme_key}"),
            None,
        ),
    ];
    for (method, path, body) in &attempts {
        let (s, b) = other.send(method.clone(), path, body.as_ref()).await;
        assert!(s == 403 || s == 404, "{method} {path} → {s} {b}");
        let text = b.to_string();
        assert!(
            !text.contains("admin@acme") && !text.contains("secret-name") && !text.contains("ACME"),
            "{text}"
        );
    }
    let (_, sites) = other.get("/api/websites").await;
    assert_eq!(
        sites["pagination"]["total"], 0,
        "another company's websites are not listed"
    );
    let (s, _) = acme_admin.get(&format!("/api/websites/{site}/stats")).await;
    assert_eq!(s, 200, "the owner reads its dashboards");
    // Nothing changed for acme.
    let (_, c) = acme_admin.get(&format!("/companies/{acme}")).await;
    assert_eq!(c["data"]["company_name"], "ACME");
    let (_, k) = acme_admin
        .get(&format!("/companies/{acme}/api-keys/{acme_key}"))
        .await;
    assert_eq!(k["data"]["active"], true);
    app.shutdown().await.expect("shutdown");
}
