//! When the log cannot take a write, collect answers 503 with a retryable code: never 202.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use eventlog::{EmbeddedLog, EventLog};
use http_body_util::BodyExt;
use ingest::{IngestConfig, IngestState};
use projections::{MetadataWriter, SqliteMetadata};
use schemas::{EntityEvent, WebsiteCreated};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_answers_503_when_the_log_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(&dir.path().join("log")).expect("log");
    log.create_topic("raw", 1).await.expect("topic");
    log.create_topic("entities", 1).await.expect("topic");
    let meta = Arc::new(
        SqliteMetadata::open(&dir.path().join("m.db"))
            .await
            .expect("meta"),
    );
    let site = WebsiteCreated {
        id: "w1".into(),
        name: "n".into(),
        domain: "d.example".into(),
        timezone: "UTC".into(),
        created_at_ms: 0,
        company_id: None,
    };
    meta.apply("metadata", &[EntityEvent::WebsiteCreated(site)], &[])
        .await
        .expect("apply");
    let auth = Arc::new(web::Auth::new(meta.clone()));
    let mut cfg = IngestConfig::new("raw".into(), "entities".into());
    cfg.collect_rate_per_minute = 0;
    let state = Arc::new(IngestState::new(
        Arc::new(log.clone()),
        meta,
        auth,
        None,
        "secret".into(),
        cfg,
    ));
    let app = ingest::collect_router(state);

    let call = |app: axum::Router| async move {
        let req = Request::post("/api/collect")
            .header("content-type", "application/json")
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))))
            .body(Body::from(r#"{"website_id":"w1","url":"/"}"#))
            .expect("request");
        let resp = app.oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").is_some();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            retry,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (status, _, _) = call(app.clone()).await;
    assert_eq!(status, 202, "healthy log accepts");

    log.close();
    let (status, retry, body) = call(app).await;
    assert_eq!(status, 503);
    assert!(retry, "Retry-After tells the client when to try again");
    assert_eq!(body["error"]["code"], "service_unavailable");
}
