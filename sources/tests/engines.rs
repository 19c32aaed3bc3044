//! One contract, every engine: the same checks run against a real PostgreSQL, MariaDB and
//! ClickHouse (the sellers' servers `deploy/local/services.sh` starts) and against SQLite and
//! DuckDB files. Each engine gets the same table; the contract compiles `{{param}}` SQL for the
//! engine's dialect, reads rows with a bound parameter, shows an injection attempt stays a
//! value, caps ten million rows, times out a long query (and stays usable), lists the schema
//! and passes `test`. The engine-specific parts are only the seeding and the two SQL texts
//! that produce many rows and a long-running query.

use sources::model::{Limits, NetworkCredentials, Param, SchemaFilter, SourceError};
use sources::sql::{check_read_only, compile};
use sources::{Connector, Driver};
use sqlx::Executor;
use std::time::Duration;

mod common;
use common::{creds, limits, loopback_allowed};

/// What differs per engine.
struct Engine {
    driver: Driver,
    /// The seeded table, as the engine names it in SQL.
    table: String,
    /// (schema, table) as `tables` lists it.
    listed: (String, String),
    many_rows: &'static str,
    long_running: &'static str,
}

async fn contract(source: &Connector, e: &Engine) {
    let dialect = e.driver.dialect();
    let run = |sql: String, binds: Vec<Param>, l: Limits| async move {
        let compiled = compile(&sql, dialect, &["region"]).expect("compile");
        check_read_only(&compiled.sql, dialect).expect("read-only");
        source.query(&compiled.sql, &binds, l).await
    };
    let sql = format!(
        "SELECT region, n FROM {} WHERE region = {{{{region}}}} ORDER BY n",
        e.table
    );
    let rows = run(
        sql.clone(),
        vec![Param::Str("north".into())],
        limits(100, 5_000),
    )
    .await
    .expect("rows");
    assert_eq!(
        rows.rows,
        vec![
            vec![serde_json::json!("north"), serde_json::json!(1)],
            vec![serde_json::json!("north"), serde_json::json!(3)],
        ],
        "{:?}",
        e.driver
    );
    assert_eq!(rows.unique_names(), vec!["region", "n"]);

    for attempt in [
        "x' OR '1'='1",
        "x\\' OR 1=1 -- ",
        "north'; DROP TABLE t; --",
    ] {
        let none = run(
            sql.clone(),
            vec![Param::Str(attempt.into())],
            limits(100, 5_000),
        )
        .await
        .expect("an injection attempt is a value");
        assert!(none.rows.is_empty(), "{:?} {attempt}", e.driver);
    }

    let many = run(e.many_rows.to_string(), vec![], limits(10, 10_000))
        .await
        .expect("capped");
    assert_eq!(
        (many.rows.len(), many.truncated),
        (10, true),
        "{:?}",
        e.driver
    );

    let slow = run(e.long_running.to_string(), vec![], limits(10, 500)).await;
    assert!(
        matches!(slow, Err(SourceError::Timeout(_))),
        "{:?}: {slow:?}",
        e.driver
    );
    let after = run("SELECT 1 AS one".into(), vec![], limits(10, 5_000)).await;
    assert!(
        after.is_ok(),
        "{:?} usable after a timeout: {after:?}",
        e.driver
    );

    let tables = source
        .tables(&SchemaFilter {
            schemas: vec![e.listed.0.clone()],
            tables: vec![e.listed.1.clone()],
        })
        .await
        .expect("tables");
    assert_eq!(tables.len(), 1, "{:?}", e.driver);
    let columns: Vec<&str> = tables[0].columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, vec!["region", "n"], "{:?}", e.driver);
    let report = source.test().await;
    assert_eq!(
        (report.status, report.can_read, report.can_read_schema),
        ("ok", true, true),
        "{:?}: {report:?}",
        e.driver
    );
}

const ROWS: &str = "('north', 1), ('south', 2), ('north', 3)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_meets_the_contract() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_SOURCE_MARIADB") else {
        return;
    };
    let table = format!("sales_{}", schemas::testenv::unique_prefix());
    let admin = sqlx::MySqlPool::connect(&url).await.expect("admin");
    admin
        .execute(format!("CREATE TABLE {table} (region VARCHAR(20), n BIGINT)").as_str())
        .await
        .expect("create");
    admin
        .execute(format!("INSERT INTO {table} VALUES {ROWS}").as_str())
        .await
        .expect("seed");
    let c = creds(&url);
    let source = Connector::MySql(
        sources::mysql::MySqlSource::connect(&loopback_allowed(), &c, 2, Duration::from_secs(10))
            .await
            .expect("connect"),
    );
    let engine = Engine {
        driver: Driver::MySql,
        table: table.clone(),
        listed: (c.database.clone(), table.clone()),
        many_rows: "SELECT seq FROM seq_1_to_10000000",
        long_running: "SELECT count(*) FROM seq_1_to_100000000 a, seq_1_to_100000000 b",
    };
    contract(&source, &engine).await;
    // The session itself is read-only, whatever the parser lets through.
    let ro = source
        .query(
            "SELECT @@session.tx_read_only AS ro",
            &[],
            limits(10, 5_000),
        )
        .await
        .expect("session flag");
    assert_eq!(ro.rows, vec![vec![serde_json::json!(1)]]);
    admin
        .execute(format!("DROP TABLE {table}").as_str())
        .await
        .expect("cleanup");
}

async fn clickhouse(url: &str, sql: &str) {
    let r = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .expect("clickhouse");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{sql}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_meets_the_contract() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_SOURCE_CLICKHOUSE") else {
        return;
    };
    let table = format!("sales_{}", schemas::testenv::unique_prefix());
    clickhouse(
        &url,
        &format!("CREATE TABLE default.{table} (region String, n Int64) ENGINE = Log"),
    )
    .await;
    clickhouse(&url, &format!("INSERT INTO default.{table} VALUES {ROWS}")).await;
    let u = url::Url::parse(&url).expect("url");
    let c = NetworkCredentials {
        host: u.host_str().expect("host").into(),
        port: u.port(),
        database: "default".into(),
        username: "default".into(),
        password: String::new(),
        ssl_mode: None,
    };
    let source = Connector::ClickHouse(
        sources::clickhouse::ClickHouseSource::connect(
            &loopback_allowed(),
            &c,
            Duration::from_secs(10),
        )
        .await
        .expect("connect"),
    );
    let engine = Engine {
        driver: Driver::ClickHouse,
        table: table.clone(),
        listed: ("default".into(), table.clone()),
        many_rows: "SELECT number FROM system.numbers LIMIT 10000000",
        long_running: "SELECT count() FROM system.numbers",
    };
    contract(&source, &engine).await;
    // A GET runs read-only in ClickHouse itself.
    let ro = source
        .query(
            "SELECT value FROM system.settings WHERE name = 'readonly'",
            &[],
            limits(10, 5_000),
        )
        .await
        .expect("settings");
    assert_ne!(ro.rows, vec![vec![serde_json::json!("0")]], "{ro:?}");
    assert_eq!(ro.rows.len(), 1);
    clickhouse(&url, &format!("DROP TABLE default.{table}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_file_meets_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("seller.duckdb");
    {
        let c = duckdb::Connection::open(&file).expect("create");
        c.execute_batch(&format!(
            "CREATE TABLE sales (region VARCHAR, n BIGINT); INSERT INTO sales VALUES {ROWS};"
        ))
        .expect("seed");
    }
    let source = Connector::DuckDb(sources::duckdb::DuckDbSource::open(&file));
    let engine = Engine {
        driver: Driver::DuckDb,
        table: "sales".into(),
        listed: ("main".into(), "sales".into()),
        many_rows: "SELECT range AS g FROM range(10000000)",
        long_running: "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7",
    };
    contract(&source, &engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_meets_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("seller.db");
    {
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let admin = sqlx::SqlitePool::connect(&url).await.expect("create");
        admin
            .execute(
                format!(
                    "CREATE TABLE sales (region TEXT, n INTEGER); INSERT INTO sales VALUES {ROWS}"
                )
                .as_str(),
            )
            .await
            .expect("seed");
        admin.close().await;
    }
    let source = Connector::Sqlite(sources::sqlite::SqliteSource::open(&file, 1));
    let engine = Engine {
        driver: Driver::Sqlite,
        table: "sales".into(),
        listed: ("main".into(), "sales".into()),
        many_rows: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT x FROM c",
        long_running: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000000) SELECT count(*) FROM c",
    };
    contract(&source, &engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_contract() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES") else {
        return;
    };
    let table = format!("sales_{}", schemas::testenv::unique_prefix());
    let admin = sqlx::PgPool::connect(&url).await.expect("admin");
    admin
        .execute(
            format!(
                "CREATE TABLE {table} (region text, n bigint); INSERT INTO {table} VALUES {ROWS}"
            )
            .as_str(),
        )
        .await
        .expect("seed");
    let c = creds(&url);
    let source = Connector::Postgres(
        sources::postgres::PgSource::connect(&loopback_allowed(), &c, 2, Duration::from_secs(10))
            .await
            .expect("connect"),
    );
    let engine = Engine {
        driver: Driver::Postgres,
        table: table.clone(),
        listed: ("public".into(), table.clone()),
        many_rows: "SELECT g FROM generate_series(1, 10000000) AS g",
        long_running: "SELECT pg_sleep(5)",
    };
    contract(&source, &engine).await;
    admin
        .execute(format!("DROP TABLE {table}").as_str())
        .await
        .expect("cleanup");
}
