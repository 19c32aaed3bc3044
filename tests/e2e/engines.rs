//! Seller → buyer over HTTP on every engine Tally connects to: the real seller PostgreSQL,
//! MariaDB and ClickHouse servers that `deploy/local/services.sh` starts, and SQLite and DuckDB
//! files under the file root. For each engine the same walk: connect and `test`, refuse
//! writing SQL at asset creation, execute a priced, discounted asset with a bound parameter (the
//! expected rows, the buyer charged the discounted price, the seller credited its share), an injection attempt that
//! stays a value, a query past its timeout answering `504` uncharged, ten million rows capped;
//! afterwards every source table is unchanged and `tally reconcile` agrees.

use crate::common::*;
use serde_json::{json, Value};
use sqlx::Executor;
use std::path::{Path, PathBuf};

/// The seller's own access to its database, to seed the table and prove it unchanged.
enum SellerDb {
    Postgres(sqlx::PgPool),
    MariaDb(sqlx::MySqlPool),
    ClickHouse(String),
    File(PathBuf),
}

impl SellerDb {
    async fn fingerprint(&self, table: &str) -> Vec<u8> {
        let ordered = format!("SELECT region, n FROM {table} ORDER BY region, n");
        match self {
            SellerDb::Postgres(p) => {
                let rows: Vec<(String, i64)> = sqlx::query_as(&ordered)
                    .fetch_all(p)
                    .await
                    .expect("pg rows");
                format!("{rows:?}").into_bytes()
            }
            SellerDb::MariaDb(p) => {
                let rows: Vec<(String, i64)> = sqlx::query_as(&ordered)
                    .fetch_all(p)
                    .await
                    .expect("mariadb rows");
                format!("{rows:?}").into_bytes()
            }
            SellerDb::ClickHouse(url) => clickhouse(url, &format!("{ordered} FORMAT TSV"))
                .await
                .into_bytes(),
            SellerDb::File(path) => std::fs::read(path).expect("file bytes"),
        }
    }
}

pub(crate) async fn clickhouse(url: &str, sql: &str) -> String {
    let r = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .expect("clickhouse");
    let ok = r.status().is_success();
    let text = r.text().await.unwrap_or_default();
    assert!(ok, "{sql}: {text}");
    text
}

const ROWS: &str = "('north', 1), ('south', 2), ('north', 3)";

/// One engine's part of the walk.
struct Engine {
    name: &'static str,
    engine_id: i64,
    credentials: Value,
    table: String,
    db: SellerDb,
    many_rows: &'static str,
    long_running: &'static str,
}

pub(crate) fn network_credentials(url: &str, default_port: u16) -> Value {
    let u = url::Url::parse(url).expect("url");
    json!({
        "host": u.host_str().expect("host"),
        "port": u.port().unwrap_or(default_port),
        "database": u.path().trim_start_matches('/'),
        "username": u.username(),
        "password": u.password().unwrap_or(""),
    })
}

async fn postgres(prefix: &str) -> Option<Engine> {
    let url = schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES")?;
    let table = format!("{prefix}_pg");
    let pool = sqlx::PgPool::connect(&url).await.expect("pg admin");
    sqlx::raw_sql(&format!(
        "CREATE TABLE {table} (region text, n bigint); INSERT INTO {table} VALUES {ROWS}"
    ))
    .execute(&pool)
    .await
    .expect("pg seed");
    Some(Engine {
        name: "postgresql",
        engine_id: 1,
        credentials: network_credentials(&url, 5432),
        table,
        db: SellerDb::Postgres(pool),
        many_rows: "SELECT g FROM generate_series(1, 10000000) AS g",
        long_running: "SELECT pg_sleep(5)",
    })
}

async fn mariadb(prefix: &str) -> Option<Engine> {
    let url = schemas::testenv::service_url("TALLY_TEST_SOURCE_MARIADB")?;
    let table = format!("{prefix}_my");
    let pool = sqlx::MySqlPool::connect(&url).await.expect("mariadb admin");
    pool.execute(format!("CREATE TABLE {table} (region VARCHAR(20), n BIGINT)").as_str())
        .await
        .expect("mariadb create");
    pool.execute(format!("INSERT INTO {table} VALUES {ROWS}").as_str())
        .await
        .expect("mariadb seed");
    Some(Engine {
        name: "mariadb",
        engine_id: 3,
        credentials: network_credentials(&url, 3306),
        table,
        db: SellerDb::MariaDb(pool),
        many_rows: "SELECT seq FROM seq_1_to_10000000",
        long_running: "SELECT count(*) FROM seq_1_to_100000000 a, seq_1_to_100000000 b",
    })
}

async fn clickhouse_source(prefix: &str) -> Option<Engine> {
    let url = schemas::testenv::service_url("TALLY_TEST_SOURCE_CLICKHOUSE")?;
    let table = format!("{prefix}_ch");
    clickhouse(
        &url,
        &format!("CREATE TABLE default.{table} (region String, n Int64) ENGINE = Log"),
    )
    .await;
    clickhouse(&url, &format!("INSERT INTO default.{table} VALUES {ROWS}")).await;
    let u = url::Url::parse(&url).expect("url");
    Some(Engine {
        name: "clickhouse",
        engine_id: 4,
        credentials: json!({"host": u.host_str().expect("host"), "port": u.port().unwrap_or(8123),
                            "database": "default", "username": "default", "password": ""}),
        table: format!("default.{table}"),
        db: SellerDb::ClickHouse(url),
        many_rows: "SELECT number FROM system.numbers LIMIT 10000000",
        long_running: "SELECT count() FROM system.numbers",
    })
}

async fn sqlite_file(root: &Path) -> Engine {
    let file = root.join("sales.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts)
        .await
        .expect("sqlite create");
    sqlx::raw_sql(&format!(
        "CREATE TABLE sales (region TEXT, n INTEGER); INSERT INTO sales VALUES {ROWS}"
    ))
    .execute(&pool)
    .await
    .expect("sqlite seed");
    pool.close().await;
    Engine {
        name: "sqlite",
        engine_id: 5,
        credentials: json!({"path": "sales.db"}),
        table: "sales".into(),
        db: SellerDb::File(file),
        many_rows: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT x FROM c",
        long_running: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000000) SELECT count(*) FROM c",
    }
}

fn duckdb_file(root: &Path) -> Engine {
    let file = root.join("sales.duckdb");
    {
        let c = duckdb::Connection::open(&file).expect("duckdb create");
        c.execute_batch(&format!(
            "CREATE TABLE sales (region VARCHAR, n BIGINT); INSERT INTO sales VALUES {ROWS}; CHECKPOINT;"
        ))
        .expect("duckdb seed");
    }
    Engine {
        name: "duckdb",
        engine_id: 6,
        credentials: json!({"path": "sales.duckdb"}),
        table: "sales".into(),
        db: SellerDb::File(file),
        many_rows: "SELECT range AS g FROM range(10000000)",
        long_running:
            "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7",
    }
}

async fn balance(c: &Client, company: &str) -> i64 {
    let (s, b) = c.get(&format!("/companies/{company}")).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["credits_balance"].as_i64().expect("balance")
}

/// Creates a shared asset priced at `usd` and returns its slug and id.
async fn publish_with_id(
    seller: &Client,
    seller_id: &str,
    body: Value,
    usd: f64,
) -> (String, String) {
    let (s, b) = seller
        .post(&format!("/companies/{seller_id}/assets"), &body)
        .await;
    assert_eq!(s, 201, "{body} → {b}");
    let id = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, p) = seller
        .post(
            &format!("/companies/{seller_id}/assets/{id}/prices"),
            &json!({"price_usd": usd}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    (b["data"]["slug"].as_str().expect("slug").to_string(), id)
}

/// Creates a shared asset priced at `usd` and returns its slug.
async fn publish(seller: &Client, seller_id: &str, body: Value, usd: f64) -> String {
    publish_with_id(seller, seller_id, body, usd).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_serves_buyers_in_place_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).expect("root");
    let prefix = format!("eng_{}", schemas::testenv::unique_prefix());
    let mut engines = vec![sqlite_file(&root).await, duckdb_file(&root)];
    engines.extend(postgres(&prefix).await);
    engines.extend(mariadb(&prefix).await);
    engines.extend(clickhouse_source(&prefix).await);

    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8".into();
    settings.source_file_root = Some(root.clone());
    let (app, op) = start_app(settings.clone()).await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "engines")
        .json(&json!({"credits": 1000, "reason": "test"}))
        .send()
        .await
        .expect("top up");
    assert_eq!(r.status().as_u16(), 201);

    for e in &engines {
        let name = e.name;
        let table = &e.table;
        let before = e.db.fingerprint(table).await;
        let (s, b) = seller
            .post(
                &format!("/companies/{seller_id}/connections"),
                &json!({"engine_id": e.engine_id, "name": name, "credentials": e.credentials}),
            )
            .await;
        assert_eq!(s, 201, "{name}: {b}");
        let conn = b["data"]["connection_id"]
            .as_str()
            .expect("conn")
            .to_string();
        let (s, t) = seller
            .get(&format!("/companies/{seller_id}/connections/{conn}/test"))
            .await;
        assert_eq!(
            (s, t["data"]["status"].clone()),
            (200, json!("ok")),
            "{name}: {t}"
        );

        for sql in [
            format!("DELETE FROM {table}"),
            format!("UPDATE {table} SET n = 0"),
            format!("DROP TABLE {table}"),
            format!("INSERT INTO {table} SELECT * FROM {table}"),
            format!("SELECT 1; DELETE FROM {table}"),
            format!("WITH d AS (DELETE FROM {table} RETURNING *) SELECT * FROM d"),
        ] {
            let (s, b) = seller
                .post(
                    &format!("/companies/{seller_id}/assets"),
                    &json!({"name": "bad", "connection_id": conn, "sql_logic": sql}),
                )
                .await;
            assert_eq!(s, 400, "{name}: {sql} → {b}");
        }

        let shared = |n: String, sql: String| {
            json!({"name": n, "connection_id": conn, "visibility": "SHARED", "sell_in_marketplace": true,
                   "allow_params": true, "industry_id": 5,
                   "asset_schema": {"params": [{"name": "region", "type": "string", "required": true}]},
                   "sql_logic": sql})
        };
        let (totals, totals_id) = publish_with_id(
            &seller,
            &seller_id,
            shared(
                format!("Totals {name}"),
                format!("SELECT region, sum(n) AS total FROM {table} WHERE region = {{{{region}}}} GROUP BY region"),
            ),
            0.05,
        )
        .await;
        // The seller's tools on it: the result's columns, a test run, one column's values.
        let tools = format!("/companies/{seller_id}/assets/{totals_id}");
        let (s, i) = seller
            .get(&format!("{tools}/infoschema?region=north"))
            .await;
        assert_eq!(s, 200, "{name}: {i}");
        let cols: Vec<&str> = i["data"]["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(cols, vec!["region", "total"], "{name}");
        let (s, t) = seller.get(&format!("{tools}/test?region=north")).await;
        assert_eq!(
            (
                s,
                t["data"]["status"].clone(),
                t["data"]["row_count"].clone()
            ),
            (200, json!("ok"), json!(1)),
            "{name}: {t}"
        );
        let (s, v) = seller
            .post(
                &format!("{tools}/scan_column"),
                &json!({"column": "region", "params": {"region": "south"}}),
            )
            .await;
        assert_eq!(
            (s, v["data"]["values"].clone()),
            (200, json!(["south"])),
            "{name}: {v}"
        );
        let (s, v) = seller
            .post(
                &format!("{tools}/scan_column"),
                &json!({"column": "nope", "params": {"region": "south"}}),
            )
            .await;
        assert_eq!(s, 400, "{name}: {v}");
        assert_eq!(
            seller
                .get(&format!("{tools}/infoschema/save?region=north"))
                .await
                .0,
            200
        );
        let (_, a) = seller.get(&tools).await;
        assert!(a["data"].to_string().contains("infoschema"), "{name}: {a}");
        assert_eq!(
            buyer
                .get(&format!("/companies/{seller_id}/assets/{totals_id}/test"))
                .await
                .0,
            403
        );
        let (s, p) = seller.get(&format!("{tools}/predicted_price")).await;
        assert_eq!(s, 200, "{p}");

        // 20 % off for this buyer: 5 credits less 1 (20 % of 5).
        let (s, d) = seller
            .post(
                &format!("/companies/{seller_id}/assets/{totals_id}/prices/discount"),
                &json!({"discount_percent": 20, "buyer_company_id": buyer_id}),
            )
            .await;
        assert_eq!(s, 201, "{d}");
        let (b0, s0) = (
            balance(&buyer, &buyer_id).await,
            balance(&seller, &seller_id).await,
        );
        let (s, b) = buyer
            .get(&format!("/analyze/acme/assets/{totals}?region=north"))
            .await;
        assert_eq!(s, 200, "{name}: {b}");
        assert_eq!(
            b["data"]["rows"],
            json!([{"region": "north", "total": 4}]),
            "{name}"
        );
        assert_eq!(
            b["data"]["credits_charged"], 4,
            "{name}: the discounted price"
        );
        assert_eq!(balance(&buyer, &buyer_id).await, b0 - 4, "{name}");
        assert_eq!(
            balance(&seller, &seller_id).await,
            s0 + 3,
            "{name}: 85 % of 4, rounded down"
        );
        for attempt in [
            "x' OR '1'='1",
            "x\\' OR 1=1 -- ",
            "north'; DROP TABLE sales; --",
        ] {
            let (s, b) = buyer
                .post(
                    &format!("/analyze/acme/assets/{totals}"),
                    &json!({"params": {"region": attempt}}),
                )
                .await;
            assert_eq!(
                (s, b["data"]["row_count"].clone()),
                (200, json!(0)),
                "{name}: {b}"
            );
        }

        let plain = |n: String, sql: &str, extra: Value| {
            let mut body = json!({"name": n, "connection_id": conn, "visibility": "SHARED",
                                  "sell_in_marketplace": true, "sql_logic": sql});
            if let (Some(o), Some(x)) = (body.as_object_mut(), extra.as_object()) {
                o.extend(x.clone());
            }
            body
        };
        let slow = publish(
            &seller,
            &seller_id,
            plain(
                format!("Slow {name}"),
                e.long_running,
                json!({"timeout_ms": 500}),
            ),
            0.1,
        )
        .await;
        let b0 = balance(&buyer, &buyer_id).await;
        let (s, b) = buyer.get(&format!("/analyze/acme/assets/{slow}")).await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (504, json!("source_timeout")),
            "{name}: {b}"
        );
        assert_eq!(balance(&buyer, &buyer_id).await, b0, "{name}: not charged");

        let many = publish(
            &seller,
            &seller_id,
            plain(format!("Many {name}"), e.many_rows, json!({})),
            0.0,
        )
        .await;
        let (s, b) = buyer.get(&format!("/analyze/acme/assets/{many}")).await;
        assert_eq!(s, 200, "{name}: {}", b["error"]);
        assert_eq!(
            (
                b["data"]["row_count"].clone(),
                b["data"]["truncated"].clone()
            ),
            (json!(10_000), json!(true)),
            "{name}"
        );

        // A cached asset: the same call again within the window is answered from the cache.
        let cached = publish(
            &seller,
            &seller_id,
            shared(
                format!("Cached {name}"),
                format!("SELECT count(*) AS n FROM {table} WHERE region = {{{{region}}}}"),
            )
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("cached".into(), json!(true));
                Value::Object(o)
            })
            .unwrap_or_default(),
            0.01,
        )
        .await;
        let run = format!("/analyze/acme/assets/{cached}?region=north");
        let (_, first) = buyer.get(&run).await;
        let (_, second) = buyer.get(&run).await;
        let (_, other) = buyer
            .get(&format!("/analyze/acme/assets/{cached}?region=south"))
            .await;
        assert_eq!(
            (
                first["data"]["cached"].clone(),
                second["data"]["cached"].clone(),
                other["data"]["cached"].clone()
            ),
            (json!(false), json!(true), json!(false)),
            "{name}: {first} {second}"
        );
        assert_eq!(first["data"]["rows"], second["data"]["rows"]);
        assert_eq!(
            second["data"]["credits_charged"], 1,
            "a cached answer is charged"
        );

        assert_eq!(
            e.db.fingerprint(table).await,
            before,
            "{name}: the source is unchanged"
        );
    }
    // Popular and trending: the most executed assets first (each Totals ran 4 times).
    for sort in ["popular", "trending"] {
        let (s, found) = buyer
            .get(&format!(
                "/companies/{buyer_id}/assets/search?sort_by={sort}&limit=100"
            ))
            .await;
        assert_eq!(s, 200, "{found}");
        let names: Vec<&str> = found["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str())
            .collect();
        assert!(
            names
                .iter()
                .take(engines.len())
                .all(|n| n.starts_with("Totals")),
            "{sort}: {names:?}"
        );
        assert!(
            names.last().is_some_and(|n| n.starts_with("Slow")),
            "{sort}: {names:?}"
        );
    }

    // The industries with sold assets, and the seller's objects in one answer.
    let (s, i) = buyer.get("/industries/active").await;
    assert_eq!(s, 200, "{i}");
    let ids: Vec<i64> = i["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["industry_id"].as_i64())
        .collect();
    assert_eq!(ids, vec![5], "{i}");
    let (s, o) = seller.get(&format!("/companies/{seller_id}/objects")).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(
        o["data"]["connections"].as_array().map(Vec::len),
        Some(engines.len())
    );
    assert_eq!(
        o["data"]["assets"].as_array().map(Vec::len),
        Some(engines.len() * 4)
    );
    assert_eq!(
        buyer
            .get(&format!("/companies/{seller_id}/objects"))
            .await
            .0,
        403
    );
    wait_drained(&buyer).await;
    app.shutdown().await.expect("shutdown");
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
}
