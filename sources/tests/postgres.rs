//! The PostgreSQL source against a real server (the seller cluster that
//! `deploy/local/services.sh` starts): rows and types, bound parameters, read-only sessions,
//! the timeout, the row cap and the network guard.

use sources::model::{NetworkCredentials, Param, SchemaFilter, SourceError};
use sources::postgres::PgSource;
use sources::{GuardError, NetworkGuard};
use sqlx::Executor;
use std::time::Duration;

mod common;
use common::{creds, limits, loopback_allowed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_source_reads_binds_caps_and_stays_read_only() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES") else {
        return;
    };
    let table = format!("sales_{}", schemas::testenv::unique_prefix());
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
    admin
        .execute(
            format!(
                "CREATE TABLE {table} (region text, amount numeric(10,2), n int, day date); \
                 INSERT INTO {table} VALUES ('north', 10.50, 1, '2026-01-01'), ('south', 20.25, 2, '2026-01-02'), \
                 ('north', 1.00, 3, '2026-01-03')"
            )
            .as_str(),
        )
        .await
        .expect("seed");
    let source = PgSource::connect(
        &loopback_allowed(),
        &creds(&url),
        4,
        Duration::from_secs(10),
    )
    .await
    .expect("connect");

    // Rows in column order, numeric as a JSON number, a bound parameter.
    let sql = format!("SELECT region, sum(amount) AS total, count(*) AS n, region FROM {table} WHERE region = $1 GROUP BY region");
    let rows = source
        .query(&sql, &[Param::Str("north".into())], limits(100, 5_000))
        .await
        .expect("query");
    assert_eq!(
        rows.unique_names(),
        vec!["region", "total", "n", "region_2"]
    );
    assert_eq!(rows.columns[2].type_name, "int8");
    assert_eq!(
        rows.rows,
        vec![vec![
            serde_json::json!("north"),
            serde_json::json!(11.5),
            serde_json::json!(2),
            serde_json::json!("north")
        ]]
    );
    assert!(!rows.truncated);

    // An injection attempt is a value: no rows, and the table is still there.
    let attempt = Param::Str(format!("x'; DROP TABLE {table}; --"));
    let none = source
        .query(
            &format!("SELECT * FROM {table} WHERE region = $1"),
            &[attempt],
            limits(100, 5_000),
        )
        .await
        .expect("query");
    assert!(none.rows.is_empty());

    // The session is read-only: a function with a side effect is refused by the server.
    admin
        .execute(format!("CREATE SEQUENCE {table}_seq").as_str())
        .await
        .expect("sequence");
    let write = source
        .query(
            &format!("SELECT nextval('{table}_seq')"),
            &[],
            limits(10, 5_000),
        )
        .await;
    assert!(
        matches!(&write, Err(SourceError::Query(m)) if m.contains("read-only")),
        "{write:?}"
    );

    // Ten million rows stop at the cap, quickly.
    let many = source
        .query(
            "SELECT g FROM generate_series(1, 10000000) AS g",
            &[],
            limits(10, 5_000),
        )
        .await
        .expect("capped");
    assert_eq!((many.rows.len(), many.truncated), (10, true));

    // A query past the timeout is cancelled by the server.
    let slow = source
        .query("SELECT pg_sleep(3)", &[], limits(10, 300))
        .await;
    assert!(matches!(slow, Err(SourceError::Timeout(_))), "{slow:?}");
    // The connection is usable afterwards.
    assert!(source
        .query("SELECT 1", &[], limits(10, 5_000))
        .await
        .is_ok());

    // Schema and test report.
    let tables = source
        .tables(&SchemaFilter {
            schemas: vec![],
            tables: vec![table.clone()],
        })
        .await
        .expect("tables");
    assert_eq!(tables.len(), 1);
    assert_eq!(
        tables[0]
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.nullable))
            .collect::<Vec<_>>(),
        vec![
            ("region", true),
            ("amount", true),
            ("n", true),
            ("day", true)
        ]
    );
    let report = source.test().await;
    assert_eq!(
        (report.status, report.can_read, report.can_read_schema),
        ("ok", true, true)
    );
    let bad = NetworkCredentials {
        password: "wrong".into(),
        ..creds(&url)
    };
    let failing = PgSource::connect(&loopback_allowed(), &bad, 1, Duration::from_secs(5))
        .await
        .expect("lazy");
    let report = failing.test().await;
    assert_eq!(report.status, "failed");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| !e.contains("wrong")),
        "{report:?}"
    );

    source.close().await;
    admin
        .execute(format!("DROP TABLE {table}; DROP SEQUENCE {table}_seq").as_str())
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn the_guard_refuses_loopback_by_default_and_tallys_own_store_always() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES") else {
        return;
    };
    let closed = NetworkGuard::default();
    let refused = PgSource::connect(&closed, &creds(&url), 1, Duration::from_secs(5)).await;
    assert!(matches!(
        refused,
        Err(SourceError::Guard(GuardError::Restricted { .. }))
    ));
    let c = creds(&url);
    let port = c.port.unwrap_or(5432);
    let own = NetworkGuard::new(
        vec!["127.0.0.0/8".parse().expect("net")],
        vec![format!("127.0.0.1:{port}").parse().expect("addr")],
    );
    let refused = PgSource::connect(&own, &c, 1, Duration::from_secs(5)).await;
    assert!(matches!(
        refused,
        Err(SourceError::Guard(GuardError::OwnServer { .. }))
    ));
}
