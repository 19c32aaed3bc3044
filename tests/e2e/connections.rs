//! Connections to a seller's database over HTTP, against the real seller Postgres that
//! `deploy/local/services.sh` starts: the network guard, unsupported engines, write-only
//! credentials that appear in no store file, and test, infoschema and sample data.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The seller database's URL, if the services are running (required under the test script).
pub fn source_url() -> Option<String> {
    schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES")
}

/// A connection named `name` of `company` to the seller Postgres at `url`: its id.
pub async fn postgres_connection(admin: &Client, company: &str, url: &str, name: &str) -> String {
    let creds = credentials(url, &url_password(url));
    let (s, c) = admin
        .post(
            &format!("/companies/{company}/connections"),
            &json!({"engine_id": 1, "name": name, "credentials": creds}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    c["data"]["connection_id"]
        .as_str()
        .expect("conn")
        .to_string()
}

/// A data endpoint named `name` of `company` over a new, empty table (`region text, n bigint`)
/// in the seller Postgres at `url`, reached through connection `conn`: its id.
pub async fn endpoint_over_new_table(
    admin: &Client,
    company: &str,
    conn: &str,
    url: &str,
    name: &str,
) -> String {
    let table = format!("t_{}", schemas::testenv::unique_prefix());
    let pool = sqlx::PgPool::connect(url).await.expect("source");
    sqlx::raw_sql(&format!("CREATE TABLE {table} (region text, n bigint)"))
        .execute(&pool)
        .await
        .expect("table");
    let (s, e) = admin
        .post(
            &format!("/companies/{company}/endpoints"),
            &json!({"name": name, "connection_id": conn, "source_table_name": table}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    e["data"]["endpoint_id"]
        .as_str()
        .expect("endpoint")
        .to_string()
}

pub fn credentials(url: &str, password: &str) -> Value {
    let u = url::Url::parse(url).expect("url");
    json!({
        "host": u.host_str().expect("host"),
        "port": u.port().unwrap_or(5432),
        "database": u.path().trim_start_matches('/'),
        "username": u.username(),
        "password": password,
    })
}

pub fn url_password(url: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .password()
        .unwrap_or("")
        .to_string()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// The seller's connection to the test's Postgres source at `url`: its id.
pub async fn source_connection(seller: &Client, seller_id: &str, url: &str) -> String {
    let (s, b) = seller
        .post(
            &format!("/companies/{seller_id}/connections"),
            &json!({"engine_id": 1, "name": "dwh", "credentials": credentials(url, &url_password(url))}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["data"]["connection_id"]
        .as_str()
        .expect("connection")
        .to_string()
}

/// A shared asset for sale, running `sql` on connection `conn`, priced at `price_usd`: its id.
pub async fn priced_asset(
    seller: &Client,
    seller_id: &str,
    conn: &str,
    (name, sql): (&str, &str),
    price_usd: f64,
) -> String {
    let (s, b) = seller
        .post(
            &format!("/companies/{seller_id}/assets"),
            &json!({"name": name, "connection_id": conn, "visibility": "SHARED",
                    "sell_in_marketplace": true, "sql_logic": sql}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let asset = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, b) = seller
        .post(
            &format!("/companies/{seller_id}/assets/{asset}/prices"),
            &json!({ "price_usd": price_usd }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    asset
}

pub async fn seed_table(url: &str, table: &str) {
    let admin = seller_db::connect(url).await;
    admin
        .run(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (region text, amount numeric(10,2)); \
             TRUNCATE {table}; INSERT INTO {table} VALUES ('north', 10.5), ('south', 20.25)"
        ))
        .await;
}

/// The seller's own access to its database (sqlx), to create and inspect test tables.
pub mod seller_db {
    pub struct Admin(sqlx::PgPool);

    pub async fn connect(url: &str) -> Admin {
        Admin(
            sqlx::PgPool::connect(url)
                .await
                .expect("seller admin connection"),
        )
    }

    impl Admin {
        pub async fn run(&self, sql: &str) {
            sqlx::raw_sql(sql)
                .execute(&self.0)
                .await
                .expect("seller sql");
        }

        /// The table's rows as text, in a fixed order: equal before and after means unchanged.
        pub async fn fingerprint(&self, table: &str) -> String {
            let q = format!(
                "SELECT COALESCE(string_agg(t::text, '|' ORDER BY t::text), '') FROM {table} t"
            );
            sqlx::query_scalar(&q)
                .fetch_one(&self.0)
                .await
                .expect("fingerprint")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_guarded_write_only_and_reach_the_source() {
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("e2e_sales_{}", std::process::id());
    seed_table(&url, &table).await;
    let password = url_password(&url);
    let dir = tempfile::tempdir().expect("tempdir");

    // Without an allow list, a loopback source is refused.
    let (app, op) = start_app(test_settings(dir.path())).await;
    let (acme, admin) = op.company("acme").await;
    let path = format!("/companies/{acme}/connections");
    let body =
        json!({"engine_id": 1, "name": "warehouse", "credentials": credentials(&url, &password)});
    let (s, b) = admin.post(&path, &body).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (422, json!("destination_not_allowed")),
        "{b}"
    );
    app.shutdown().await.expect("shutdown");

    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    let op_key = op.key.clone().expect("operator key");
    let (app, op) = start_app_with_key(settings, &op_key).await;
    let admin = op.with_key(admin.key.as_deref().expect("key"));

    // Engines Tally does not connect to are refused, naming the engine.
    let (s, b) = admin
        .post(
            &path,
            &json!({"engine_id": 7, "name": "mssql", "credentials": credentials(&url, "x")}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (422, json!("engine_not_supported")),
        "{b}"
    );
    assert!(b["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("SQL Server")));
    let (s, _) = admin
        .post(
            &path,
            &json!({"engine_id": 999, "name": "x", "credentials": credentials(&url, "x")}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = admin
        .post(
            &path,
            &json!({"engine_id": 1, "name": "x", "credentials": {"host": "h"}}),
        )
        .await;
    assert_eq!(s, 400, "a credentials object of the wrong shape");

    // A working connection: created, listed and read without its credentials.
    let (s, b) = admin.post(&path, &body).await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["connection_id"].as_str().expect("id").to_string();
    let (s, one) = admin.get(&format!("{path}/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        (one["data"]["engine"].clone(), one["data"]["name"].clone()),
        (json!("PostgreSQL"), json!("warehouse"))
    );
    let (_, list) = admin.get(&path).await;
    for answer in [&one, &list, &b] {
        let text = answer.to_string();
        assert!(
            !text.contains(&password) && !text.contains("credentials"),
            "{text}"
        );
    }

    // test, infoschema (filtered), sample data.
    let (s, t) = admin.get(&format!("{path}/{id}/test")).await;
    assert_eq!((s, t["data"]["status"].clone()), (200, json!("ok")), "{t}");
    assert!(t["data"]["latency_ms"].is_number());
    let (s, info) = admin
        .get(&format!("{path}/{id}/infoschema?tables={table}"))
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["data"]["schemas"][0]["schema_name"], "public");
    assert_eq!(
        info["data"]["schemas"][0]["tables"][0]["columns"][1]["column_name"],
        "amount"
    );
    let (_, bare) = admin
        .get(&format!(
            "{path}/{id}/infoschema?tables={table}&include_fields=false"
        ))
        .await;
    assert!(bare["data"]["schemas"][0]["tables"][0]["columns"].is_null());
    let (s, sample) = admin
        .get(&format!("{path}/{id}/sample-data?table={table}&limit=1"))
        .await;
    assert_eq!(s, 200, "{sample}");
    assert_eq!(sample["data"]["row_count"], 1);
    assert_eq!(sample["data"]["rows"][0]["region"], "north");
    let (s, _) = admin
        .get(&format!("{path}/{id}/sample-data?table=no_such_table"))
        .await;
    assert_eq!(s, 400);
    let (s, _) = admin
        .get(&format!("{path}/{id}/sample-data?table={table}&limit=101"))
        .await;
    assert_eq!(s, 400, "at most 100 sample rows");

    // Wrong credentials: the test is a 200 that says why, without the password.
    let (s, b) = admin
        .post(&path, &json!({"engine_id": 1, "name": "broken", "credentials": credentials(&url, "not-the-password")}))
        .await;
    assert_eq!(s, 201);
    let broken = b["data"]["connection_id"].as_str().expect("id").to_string();
    let (s, t) = admin.get(&format!("{path}/{broken}/test")).await;
    assert_eq!(
        (s, t["data"]["status"].clone()),
        (200, json!("failed")),
        "{t}"
    );
    assert!(!t.to_string().contains("not-the-password"));

    // Another company sees none of it; a buyer of the same company cannot manage it.
    let (globex, other) = op.company("globex").await;
    for p in [
        format!("{path}/{id}"),
        format!("{path}/{id}/test"),
        format!("/companies/{globex}/connections/{id}"),
    ] {
        let (s, b) = other.get(&p).await;
        assert!(s == 403 || s == 404, "{p} → {s} {b}");
    }
    let (_, u) = admin
        .post(
            &format!("/companies/{acme}/users"),
            &json!({"email_address": "b@acme.example", "role_id": 4}),
        )
        .await;
    let buyer_id = u["data"]["user_id"].as_str().expect("user").to_string();
    let (_, k) = admin
        .post(
            &format!("/companies/{acme}/api-keys"),
            &json!({"user_id": buyer_id}),
        )
        .await;
    let buyer = admin.with_key(k["data"]["key"].as_str().expect("key"));
    assert_eq!(buyer.get(&path).await.0, 403);

    // PATCH renames; DELETE removes it from reads.
    let (s, _) = admin
        .patch(&format!("{path}/{id}"), &json!({"name": "dwh"}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = admin
        .patch(&format!("{path}/{id}"), &json!({"engine_id": 2}))
        .await;
    assert_eq!(s, 400);
    let (s, _) = admin.delete(&format!("{path}/{broken}")).await;
    assert_eq!(s, 200);
    assert_eq!(admin.get(&format!("{path}/{broken}")).await.0, 404);

    app.shutdown().await.expect("shutdown");
    // The password is in no file of the data dir (metadata store, log, analytics store), or,
    // on the distributed backends, in no table of the deployment's Postgres schema.
    match distributed(dir.path()) {
        None => {
            let hits = files_containing(&dir.path().join("data"), password.as_bytes());
            assert!(hits.is_empty(), "the source password was found in {hits:?}");
        }
        Some(d) => {
            let pool = sqlx::PgPool::connect(&d.metadata_url)
                .await
                .expect("metadata postgres");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(&d.namespace)
            .fetch_all(&pool)
            .await
            .expect("tables");
            assert!(tables.iter().any(|t| t == "connections"), "{tables:?}");
            for t in tables {
                let q = format!(
                    "SELECT COALESCE(string_agg(x::text, '|'), '') FROM {}.{t} x",
                    d.namespace
                );
                let text: String = sqlx::query_scalar(&q).fetch_one(&pool).await.expect("dump");
                assert!(
                    !text.contains(&password),
                    "the source password is in table {t}"
                );
            }
        }
    }
}

/// The source password, once a connection is created, tested, sampled and executed through
/// the real binary with debug logging: in nothing the process printed, and in no record of
/// the entities, usage or billing topics (on either log backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_password_is_in_no_topic_and_no_process_output() {
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("e2e_secret_{}", std::process::id());
    seed_table(&url, &table).await;
    let password = url_password(&url);
    assert!(password.len() >= 8, "a distinctive password");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("output.log");
    let port = free_port();
    let env = [
        ("TALLY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8".to_string()),
        ("TALLY_LOG", "debug".to_string()),
    ];
    let mut child = spawn_role_to(dir.path(), &["serve"], port, &env, &out);
    let mut op = Client::new(format!("http://127.0.0.1:{port}"));
    wait_up(&op).await;
    op.setup().await;
    let (acme, admin) = op.company("acme").await;
    let path = format!("/companies/{acme}/connections");
    let (s, b) = admin
        .post(
            &path,
            &json!({"engine_id": 1, "name": "dwh", "credentials": credentials(&url, &password)}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["connection_id"].as_str().expect("id").to_string();
    // A wrong password too: its failure is reported, and neither password is printed.
    let wrong = format!("{password}-wrong");
    let (s, b) = admin
        .post(
            &path,
            &json!({"engine_id": 1, "name": "bad", "credentials": credentials(&url, &wrong)}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let bad = b["data"]["connection_id"].as_str().expect("id").to_string();
    for p in [
        format!("{path}/{id}/test"),
        format!("{path}/{bad}/test"),
        format!("{path}/{id}/infoschema"),
        format!("{path}/{id}/sample-data?table={table}"),
    ] {
        let (s, b) = admin.get(&p).await;
        assert_eq!(s, 200, "{p}: {b}");
        assert!(
            !b.to_string().contains(&password),
            "{p} answered the password"
        );
    }
    let (s, b) = admin
        .post(
            &format!("/companies/{acme}/assets"),
            &json!({"name": "Secret", "connection_id": id, "sql_logic": format!("SELECT * FROM {table}")}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin.get("/analyze/acme/assets/secret").await;
    assert_eq!(s, 200, "{b}");
    // Wait for the outbox to drain, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.stop();

    let printed = std::fs::read(&out).expect("output");
    assert!(
        String::from_utf8_lossy(&printed).contains("DEBUG"),
        "debug logging was on"
    );
    for secret in [password.as_bytes(), wrong.as_bytes()] {
        assert!(
            !printed.windows(secret.len()).any(|w| w == secret),
            "a password is in the process output"
        );
    }
    let settings = test_settings(dir.path());
    let on_log = log_bytes(
        &settings,
        &[
            schemas::topics::ENTITIES,
            schemas::topics::USAGE,
            schemas::topics::BILLING,
        ],
    )
    .await;
    assert!(!on_log.is_empty());
    assert!(
        !on_log
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is on the log"
    );
}
