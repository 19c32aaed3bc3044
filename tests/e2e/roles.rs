//! The role table over HTTP: a key of each role (operator, company admin, seller, buyer,
//! viewer) tries one representative call per action, and the answer is `403` exactly where
//! `web::roles::allowed` (the README's table) says no. Then the audit log: the calls above,
//! allowed and refused, are in the company's audit log with who, what, the outcome and the
//! request id; only admins read it, and another company's log stays out of reach.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use web::roles::{allowed, Action, Role};

/// One call standing for `action`: (method, path, body).
fn probe(
    action: Action,
    acme: &str,
    me: &str,
    key_number: i64,
    n: usize,
) -> (&'static str, String, Value) {
    let c = format!("/companies/{acme}");
    match action {
        Action::CreateCompany => (
            "POST",
            "/companies".into(),
            json!({"company_handle": format!("probe{n}"), "company_domain": format!("probe{n}.example"),
                   "company_name": "Probe", "admin": {"email_address": format!("a@probe{n}.example"), "password": "correct horse"}}),
        ),
        Action::ReadCompany => ("GET", c, Value::Null),
        Action::UpdateCompany => ("PATCH", c, json!({"company_name": format!("Acme {n}")})),
        Action::ReadUsers => ("GET", format!("{c}/users"), Value::Null),
        Action::ManageUsers => (
            "POST",
            format!("{c}/users"),
            json!({"email_address": format!("probe{n}@acme.example"), "role_id": 5}),
        ),
        Action::ManageOwnKeys => ("POST", format!("{c}/api-keys"), json!({"name": "mine"})),
        Action::ManageCompanyKeys => ("GET", format!("{c}/api-keys/{key_number}"), Value::Null),
        Action::ReadReference => ("GET", "/cloud-providers".into(), Value::Null),
        Action::ManageWebsites => (
            "POST",
            "/api/websites".into(),
            json!({"name": "Probe", "domain": "probe.example", "timezone": "UTC"}),
        ),
        Action::ReadDashboards => ("GET", "/api/websites".into(), Value::Null),
        Action::ManageConnections => ("GET", format!("{c}/connections"), Value::Null),
        Action::ManageAssets => (
            "POST",
            format!("{c}/assets"),
            json!({"name": "Probe", "connection_id": "no-such-connection", "sql_logic": "SELECT 1"}),
        ),
        Action::ReadAssets => ("GET", format!("{c}/assets"), Value::Null),
        Action::ExecuteAssets => (
            "GET",
            "/analyze/acme/assets/no-such-asset".into(),
            Value::Null,
        ),
        Action::ManagePrices => (
            "POST",
            format!("{c}/assets/no-such-asset/prices"),
            json!({"price_usd": 1.0}),
        ),
        Action::TopUpCredits => (
            "POST",
            format!("{c}/credits"),
            json!({"credits": 1, "reason": "probe"}),
        ),
        Action::SetSubscription => (
            "PUT",
            format!("{c}/subscription"),
            json!({"plan": "professional"}),
        ),
        Action::ReadLedger => ("GET", format!("{c}/credits/ledger"), Value::Null),
        Action::ReadSales => ("GET", format!("{c}/assets/statistics"), Value::Null),
        Action::ManageFavorites => ("GET", format!("{c}/users/{me}/favorites"), Value::Null),
        Action::ManageAlerts => ("GET", format!("{c}/users/{me}/alerts"), Value::Null),
        Action::ReadAuditLog => ("GET", format!("{c}/audit-log"), Value::Null),
    }
}

async fn call(c: &Client, method: &str, path: &str, body: &Value, n: usize) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = c
        .req(m, path)
        .header("idempotency-key", format!("probe-{n}"));
    if !body.is_null() {
        r = r.json(body);
    }
    let resp = r.send().await.expect("send");
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_refused_exactly_where_the_table_says_and_the_audit_log_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let (acme, admin) = op.company("acme").await;
    let (globex, globex_admin) = op.company("globex").await;
    let (_, admin_me) = admin.get("/me").await;
    let admin_key_number = admin_me["data"]["api_key_id"].as_i64().unwrap_or(1);

    // A user and a key for each of the roles below the admin.
    let mut callers: Vec<(Role, Client, String)> = Vec::new();
    let (_, op_me) = op.get("/me").await;
    callers.push((
        Role::Operator,
        op.clone(),
        op_me["data"]["user_id"].as_str().unwrap_or("").to_string(),
    ));
    callers.push((
        Role::CompanyAdmin,
        admin.clone(),
        admin_me["data"]["user_id"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    ));
    for role in [Role::Seller, Role::Buyer, Role::Viewer] {
        let (s, u) = admin
            .post(
                &format!("/companies/{acme}/users"),
                &json!({"email_address": format!("{}@acme.example", role.name()), "role_id": role.id()}),
            )
            .await;
        assert_eq!(s, 201, "{u}");
        let user = u["data"]["user_id"].as_str().expect("user").to_string();
        let (s, k) = admin
            .post(
                &format!("/companies/{acme}/api-keys"),
                &json!({"user_id": user}),
            )
            .await;
        assert_eq!(s, 201, "{k}");
        callers.push((
            role,
            admin.with_key(k["data"]["key"].as_str().expect("key")),
            user,
        ));
    }

    let mut n = 0;
    for (role, client, me) in &callers {
        for action in Action::ALL {
            n += 1;
            let (method, path, body) = probe(action, &acme, me, admin_key_number, n);
            let (s, b) = call(client, method, &path, &body, n).await;
            let may = allowed(*role, action);
            // Another user's key is hidden (404), not refused, to those who manage only their own.
            let refused = if action == Action::ManageCompanyKeys {
                404
            } else {
                403
            };
            if may {
                assert!(
                    s != 403 && s != 401 && s < 500 && s != 501,
                    "{role:?} may {action:?}: {method} {path} → {s} {b}"
                );
            } else {
                assert_eq!(
                    s, refused,
                    "{role:?} may not {action:?}: {method} {path} → {b}"
                );
                if s == 403 {
                    assert_eq!(b["error"]["code"], "forbidden", "{b}");
                }
            }
        }
    }

    // The audit log: admins (and the operator) read it; the others are refused.
    let log_path = format!("/companies/{acme}/audit-log?limit=500");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let (s, b) = admin.get(&log_path).await;
        assert_eq!(s, 200, "{b}");
        let rows = b["data"].as_array().cloned().unwrap_or_default();
        let refused_viewer_post = rows.iter().any(|r| {
            r["outcome"] == "refused"
                && r["action"] == "POST /companies/{company_id}/assets"
                && r["user_id"] == callers[4].2
        });
        if refused_viewer_post || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused_viewer = rows
        .iter()
        .find(|r| {
            r["outcome"] == "refused"
                && r["action"] == "POST /companies/{company_id}/assets"
                && r["user_id"] == callers[4].2
        })
        .unwrap_or_else(|| panic!("the viewer's refused asset create is audited: {rows:?}"));
    assert_eq!(refused_viewer["status"], 403);
    assert_eq!(refused_viewer["company_id"], acme.as_str());
    assert!(refused_viewer["request_id"].is_string(), "{refused_viewer}");
    assert!(refused_viewer["api_key_id"].is_i64(), "{refused_viewer}");
    assert!(
        rows.iter().any(|r| r["outcome"] == "ok"
            && r["action"] == "PATCH /companies/{company_id}"
            && r["user_id"] == callers[1].2),
        "the admin's company update is audited: {:?}",
        rows.iter()
            .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("PATCH")))
            .collect::<Vec<_>>()
    );
    assert!(
        rows.iter()
            .all(|r| r["action"] != "GET /companies/{company_id}" || r["status"] != 200),
        "plain reads are not audited"
    );
    // Reads that are not mutations stay out; a refused read is in.
    for (role, client, _) in &callers[2..] {
        assert_eq!(client.get(&log_path).await.0, 403, "{role:?}");
    }
    assert_eq!(op.get(&log_path).await.0, 200);
    // Another company: its admin cannot read acme's log, and acme's rows are not in its own.
    assert_eq!(globex_admin.get(&log_path).await.0, 403);
    let (s, g) = globex_admin
        .get(&format!("/companies/{globex}/audit-log?limit=500"))
        .await;
    assert_eq!(s, 200, "{g}");
    let leaked = g["data"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["company_id"] == acme.as_str() && r["target_company_id"] != globex.as_str());
    assert!(!leaked, "{g}");
    // A call without a key is refused and audited against the company it aimed at.
    let anonymous = Client::new(op.base.clone());
    assert_eq!(
        anonymous.get(&format!("/companies/{acme}/users")).await.0,
        401
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = admin.get(&log_path).await;
        let found = b["data"].as_array().into_iter().flatten().any(|r| {
            r["status"] == 401 && r["target_company_id"] == acme.as_str() && r["user_id"].is_null()
        });
        if found {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the 401 is audited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await.expect("shutdown");
}
