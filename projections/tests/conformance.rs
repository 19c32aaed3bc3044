//! The embedded projection stores against the shared conformance suites.

use projections::conformance::{
    analytics_suite, audit_suite, limits_suite, metadata_suite, money_suite, usage_suite,
};
use projections::{DuckAnalytics, SqliteMetadata};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_analytics_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DuckAnalytics::open(&dir.path().join("a.duckdb"), "512MB").expect("open");
    analytics_suite(&store).await;
    usage_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_metadata_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteMetadata::open(&dir.path().join("m.db"))
        .await
        .expect("open");
    metadata_suite(&store).await;
    money_suite(&store).await;
    audit_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limits_pass_conformance() {
    limits_suite(&projections::limits::MemoryLimits::default()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_metadata_passes_conformance() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_POSTGRES") else {
        return;
    };
    let ns = schemas::testenv::unique_prefix();
    let store = projections::PgMetadata::open(&url, &ns)
        .await
        .expect("connect to postgres");
    metadata_suite(&store).await;
    money_suite(&store).await;
    audit_suite(&store).await;
    limits_suite(&store).await;
    store.drop_namespace(&ns).await.expect("drop schema");
}

#[cfg(feature = "clickhouse")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_analytics_passes_conformance() {
    let Some(url) = schemas::testenv::service_url("TALLY_TEST_CLICKHOUSE") else {
        return;
    };
    let ns = schemas::testenv::unique_prefix();
    let store = projections::ClickHouseAnalytics::open(&url, &ns)
        .await
        .expect("connect to clickhouse");
    analytics_suite(&store).await;
    usage_suite(&store).await;
    store.drop_namespace().await.expect("drop database");
}
