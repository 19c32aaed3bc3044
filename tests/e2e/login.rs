//! Dashboard login over HTTP: the session cookie, its attributes, the same-origin check on
//! mutating calls, logout, signing out everywhere, inactive users, and the 5-per-15-minutes
//! limit on failed sign-ins.

use crate::common::*;
use serde_json::{json, Value};

async fn sign_in(
    c: &Client,
    body: Value,
    ip: &str,
) -> (u16, Option<String>, reqwest::header::HeaderMap) {
    let r = c
        .http
        .post(format!("{}/api/auth/login", c.base))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let cookie = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, cookie, headers)
}

/// `tally_session=…` from a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").to_string()
}

async fn with_cookie(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
) -> u16 {
    let mut r = c
        .http
        .request(method, format!("{}{path}", c.base))
        .header("cookie", cookie);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.json(&json!({"name": "From the dashboard", "domain": "dash.example"}))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sign_in_check_origin_and_sign_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let anon = Client::new(op.base.clone());
    let origin = op.base.clone();

    let (s, set, _) = sign_in(
        &anon,
        json!({"username": "admin", "password": "correct horse"}),
        "10.0.0.1",
    )
    .await;
    assert_eq!(s, 200);
    let set = set.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP here");
    let cookie = pair(&set);
    assert_eq!(
        with_cookie(&anon, reqwest::Method::GET, "/me", &cookie, None).await,
        200
    );
    // A mutating call with the cookie needs the same origin.
    assert_eq!(
        with_cookie(&anon, reqwest::Method::POST, "/api/websites", &cookie, None).await,
        403
    );
    assert_eq!(
        with_cookie(
            &anon,
            reqwest::Method::POST,
            "/api/websites",
            &cookie,
            Some("https://evil.example")
        )
        .await,
        403
    );
    assert_eq!(
        with_cookie(
            &anon,
            reqwest::Method::POST,
            "/api/websites",
            &cookie,
            Some(&origin)
        )
        .await,
        201
    );

    // Behind a trusted TLS proxy the cookie is Secure.
    let r = anon
        .http
        .post(format!("{}/api/auth/login", anon.base))
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": "admin", "password": "correct horse"}))
        .send()
        .await
        .expect("send");
    assert!(r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("Secure")));

    // A tenant admin signs in by e-mail; two sessions, then sign out everywhere.
    let (acme, admin) = op.company("acme").await;
    let body = json!({"email_address": "Admin@Acme.example", "password": "correct horse"});
    let (s, a1, _) = sign_in(&anon, body.clone(), "10.0.0.2").await;
    assert_eq!(s, 200);
    let (_, a2, _) = sign_in(&anon, body, "10.0.0.2").await;
    let (a1, a2) = (pair(&a1.expect("cookie")), pair(&a2.expect("cookie")));
    assert_eq!(
        with_cookie(&anon, reqwest::Method::GET, "/me", &a1, None).await,
        200
    );
    let r = anon
        .http
        .post(format!("{}/companies/{acme}/users/logout", anon.base))
        .header("cookie", &a1)
        .header("origin", &origin)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    for c in [&a1, &a2] {
        assert_eq!(
            with_cookie(&anon, reqwest::Method::GET, "/me", c, None).await,
            401
        );
    }

    // Logout ends one session.
    let r = anon
        .http
        .post(format!("{}/api/auth/logout", anon.base))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        with_cookie(&anon, reqwest::Method::GET, "/me", &cookie, None).await,
        401
    );

    // An inactive user's session stops at once.
    let (_, u) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "bo@acme.example", "role_id": 4, "password": "bo's password"}),
        )
        .await;
    let bo = u["data"]["user_id"].as_str().expect("user").to_string();
    let (s, set, _) = sign_in(
        &anon,
        json!({"email_address": "bo@acme.example", "password": "bo's password"}),
        "10.0.0.3",
    )
    .await;
    assert_eq!(s, 200);
    let bo_cookie = pair(&set.expect("cookie"));
    assert_eq!(
        admin
            .patch(
                &format!("/companies/{acme}/users/{bo}"),
                &json!({"status": "INACTIVE"})
            )
            .await
            .0,
        200
    );
    assert_eq!(
        with_cookie(&anon, reqwest::Method::GET, "/me", &bo_cookie, None).await,
        401
    );
    let (s, _, _) = sign_in(
        &anon,
        json!({"email_address": "bo@acme.example", "password": "bo's password"}),
        "10.0.0.3",
    )
    .await;
    assert_eq!(s, 401, "an inactive user cannot sign in");

    // Five failures from one address within 15 minutes: then 429 for 900 s, even when right.
    for _ in 0..5 {
        let (s, _, _) = sign_in(
            &anon,
            json!({"username": "admin", "password": "wrong"}),
            "10.9.9.9",
        )
        .await;
        assert_eq!(s, 401);
    }
    let (s, _, h) = sign_in(
        &anon,
        json!({"username": "admin", "password": "correct horse"}),
        "10.9.9.9",
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("900")
    );
    let (s, _, _) = sign_in(
        &anon,
        json!({"username": "admin", "password": "correct horse"}),
        "10.9.9.10",
    )
    .await;
    assert_eq!(s, 200, "another address is not limited");
    let (s, _, _) = sign_in(&anon, json!({"username": "admin"}), "10.0.0.4").await;
    assert_eq!(s, 400);
    app.shutdown().await.expect("shutdown");
}

/// Seed `000`'s hourly limits, made small: the marketplace routes per key (each key its own
/// count, the headers on every answer, then `429 marketplace_hour`), the authentication routes
/// per IP signed out; the web-analytics routes are under neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_route_limits_count_per_caller_and_ip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.market_requests_per_hour = 4;
    settings.auth_requests_per_hour = 3;
    let (app, op) = start_app(settings).await;
    let header = |h: &reqwest::header::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let call = |c: &Client, method: reqwest::Method, path: &str| {
        let r = c.req(method, path);
        async move {
            let r = r.send().await.expect("send");
            let status = r.status().as_u16();
            let h = r.headers().clone();
            (status, h, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, h, me) = call(&op, reqwest::Method::GET, "/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(
        (
            header(&h, "x-ratelimit-limit"),
            header(&h, "x-ratelimit-remaining")
        ),
        ("4".into(), "3".into())
    );
    let company = me["data"]["company_id"]
        .as_str()
        .expect("company")
        .to_string();
    let (s, h, b) = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{company}/api-keys"),
        )
        .json(&json!({"name": "second"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r.headers().clone(), r))
        .expect("send");
    assert_eq!(s, 201);
    assert_eq!(header(&h, "x-ratelimit-remaining"), "2");
    let second = b.json::<Value>().await.expect("json")["data"]["key"]
        .as_str()
        .expect("secret")
        .to_string();
    for remaining in ["1", "0"] {
        let (s, h, _) = call(&op, reqwest::Method::GET, "/plans").await;
        assert_eq!(
            (s, header(&h, "x-ratelimit-remaining")),
            (200, remaining.into())
        );
    }
    let (s, h, b) = call(&op, reqwest::Method::GET, "/me").await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "rate_limited", "{b}");
    assert_eq!(b["error"]["details"]["limit"], "marketplace_hour", "{b}");
    let retry: u64 = header(&h, "retry-after").parse().unwrap_or(0);
    assert!((1..=3600).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    // The web-analytics routes are not marketplace routes.
    let (s, h, _) = call(&op, reqwest::Method::GET, "/api/websites").await;
    assert_eq!(s, 200);
    assert!(h.get("x-ratelimit-limit").is_none());
    // Another key has its own hour.
    let other = Client {
        base: op.base.clone(),
        http: reqwest::Client::new(),
        key: Some(second),
    };
    let (s, h, _) = call(&other, reqwest::Method::GET, "/me").await;
    assert_eq!((s, header(&h, "x-ratelimit-remaining")), (200, "3".into()));

    // Signed out, the authentication routes count per IP: three answers, then 429.
    let anon = Client::new(op.base.clone());
    for remaining in ["2", "1", "0"] {
        let (s, _, h) = sign_in(
            &anon,
            json!({"username": "admin", "password": "wrong"}),
            "10.7.7.7",
        )
        .await;
        assert_eq!(
            (s, header(&h, "x-ratelimit-remaining")),
            (401, remaining.into())
        );
    }
    let (s, _, h) = sign_in(
        &anon,
        json!({"username": "admin", "password": "wrong"}),
        "10.7.7.7",
    )
    .await;
    assert_eq!(s, 429);
    assert!(header(&h, "retry-after").parse::<u64>().unwrap_or(0) >= 1);
    let (s, _, _) = sign_in(
        &anon,
        json!({"username": "admin", "password": "wrong"}),
        "10.7.7.8",
    )
    .await;
    assert_eq!(s, 401, "another address has its own hour");
    app.shutdown().await.expect("shutdown");
}

/// The sign-in routes the peer's dashboard calls: `status` before and after setup, a login with
/// the password alone for the first admin, `session` with its expiry, a password change that
/// needs the current password, and `/health` where the peer serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_auth_routes_status_session_and_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = tally::start(test_settings(dir.path()))
        .await
        .expect("start");
    let anon = Client::new(format!("http://{}", app.addr));
    let origin = anon.base.clone();

    let (s, b) = anon.get("/api/auth/status").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["mode"], "local");
    assert_eq!(b["setup_required"], true, "{b}");
    assert_eq!(b["authenticated"], false, "{b}");
    let (s, b) = anon.get("/health").await;
    assert_eq!(s, 200, "{b}");

    let mut op = Client::new(anon.base.clone());
    op.setup().await;
    let (_, b) = anon.get("/api/auth/status").await;
    assert_eq!(b["setup_required"], false, "{b}");

    // The password alone signs the first admin in; a wrong one is 401 with no cookie.
    let (s, set, _) = sign_in(&anon, json!({"password": "wrong horse"}), "10.1.0.1").await;
    assert_eq!((s, set.is_none()), (401, true));
    let (s, set, _) = sign_in(&anon, json!({"password": "correct horse"}), "10.1.0.1").await;
    assert_eq!(s, 200);
    let cookie = pair(&set.expect("cookie"));
    let cookied = |method: reqwest::Method, path: &str| {
        anon.http
            .request(method, format!("{}{path}", anon.base))
            .header("cookie", &cookie)
            .header("origin", &origin)
    };
    let status: Value = cookied(reqwest::Method::GET, "/api/auth/status")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(status["authenticated"], true, "{status}");
    let r = cookied(reqwest::Method::GET, "/api/auth/session")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let session: Value = r.json().await.expect("json");
    let expires = session["data"]["expires_at"].as_str().unwrap_or("");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("an RFC 3339 expiry");
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((6..=7).contains(&days), "{session}");
    let (s, _) = anon.get("/api/auth/session").await;
    assert_eq!(s, 401, "signed out, there is no session");

    // A password change needs the current password; a short new one names its field.
    let change = |current: &str, new: &str| {
        cookied(reqwest::Method::PUT, "/api/auth/password")
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let r = change("not it", "a new password").await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = change("correct horse", "short").await.expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["field"], "new_password", "{b}");
    let r = change("correct horse", "battery staple")
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let (s, _, _) = sign_in(&anon, json!({"password": "correct horse"}), "10.1.0.2").await;
    assert_eq!(s, 401, "the old password no longer works");
    let (s, _, _) = sign_in(
        &anon,
        json!({"username": "admin", "password": "battery staple"}),
        "10.1.0.2",
    )
    .await;
    assert_eq!(s, 200);
    app.shutdown().await.expect("shutdown");
}
