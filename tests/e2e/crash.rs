//! Crash tests on the real binary: every event answered with 202 survives a SIGKILL straight
//! after the last answer, and replaying the log afterwards does not double any count; a
//! process that dies between putting a charged execution's money events on the log and
//! marking them published leaves each of them on the log exactly once after a restart.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const N: usize = 2_000;

async fn stats_pageviews(c: &Client, site: &str) -> u64 {
    let today = chrono::Utc::now().date_naive();
    let (start, end) = (
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1),
    );
    let (s, body) = c
        .get(&format!("/api/websites/{site}/stats?start_date={start}&end_date={end}&timezone=UTC&include_bots=true"))
        .await;
    assert_eq!(s, 200, "{body}");
    body["data"]["pageviews"].as_u64().unwrap_or(0)
}

async fn post_all(c: &Client, site: &str) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (c, site) = (c.clone(), site.to_string());
        tasks.push(tokio::spawn(async move {
            for batch in (t * N / 8..(t + 1) * N / 8).collect::<Vec<_>>().chunks(10) {
                let events: Vec<_> = batch
                    .iter()
                    .map(|i| json!({"website_id": site, "url": format!("/p/{}", i % 50), "visitor_id": format!("v{i}")}))
                    .collect();
                let (s, body) = c.post("/api/collect", &json!(events)).await;
                assert_eq!(s, 202, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_sigkill_and_replay_does_not_double() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, c, site, port) = start_binary_with_site(dir.path()).await;

    post_all(&c, &site).await;
    child.kill(); // SIGKILL, straight after the last 202

    let mut child = spawn_binary(dir.path(), port);
    wait_up(&c).await;
    c.wait_idle().await;
    assert_eq!(
        stats_pageviews(&c, &site).await,
        N as u64,
        "every 202 survived the crash"
    );
    child.stop();

    // Replay both stages from the start of the log: the stores deduplicate by event id.
    for stage in ["enrich", "analytics"] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["rewind", "--stage", stage])
            .env("TALLY_DATA_DIR", dir.path().join("data"))
            .env("TALLY_LOG", "warn")
            .envs(backend_env(dir.path()))
            .status()
            .expect("rewind");
        assert!(status.success());
    }
    let mut child = spawn_binary(dir.path(), port);
    wait_up(&c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.wait_idle().await;
    assert_eq!(
        stats_pageviews(&c, &site).await,
        N as u64,
        "replay did not double"
    );
    let (_, pages) = c
        .get(&format!("/api/websites/{site}/metrics?type=page&limit=1"))
        .await;
    assert_eq!(pages["pagination"]["total"], 50);
    let before = stats(&c, &site).await;
    child.stop();

    // `tally replay` drops the analytics projection and rebuilds it from the log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("replay")
        .env("TALLY_DATA_DIR", dir.path().join("data"))
        .env("TALLY_LOG", "warn")
        .envs(backend_env(dir.path()))
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("100%"), "progress bar: {progress}");
    let mut child = spawn_binary(dir.path(), port);
    wait_up(&c).await;
    c.wait_idle().await;
    assert_eq!(
        stats(&c, &site).await,
        before,
        "replay rebuilt the same numbers"
    );
    child.stop();
}

async fn stats(c: &Client, site: &str) -> serde_json::Value {
    let (s, body) = c
        .get(&format!("/api/websites/{site}/stats?include_bots=true"))
        .await;
    assert_eq!(s, 200, "{body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, c, site, port) = start_binary_with_site(dir.path()).await;

    // Eight clients post batches of 10 without pause; the process is killed while they do.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (c, site, acked, sent) = (c.clone(), site.clone(), acked.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            for b in 0.. {
                let events: Vec<_> = (0..10)
                    .map(|i| json!({"website_id": site, "url": "/load", "visitor_id": format!("v{t}-{b}-{i}")}))
                    .collect();
                sent.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
                let r = c.req(reqwest::Method::POST, "/api/collect").json(&json!(events)).send().await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        acked.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill();
    for t in tasks {
        t.await.expect("poster");
    }
    let (acked, sent) = (
        acked.load(std::sync::atomic::Ordering::SeqCst),
        sent.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert!(acked > 1000, "the load ran: {acked} acknowledged");

    let mut child = spawn_binary(dir.path(), port);
    wait_up(&c).await;
    c.wait_idle().await;
    let stored = stats_pageviews(&c, &site).await;
    assert!(
        stored >= acked,
        "every acknowledged event survived: stored {stored}, acknowledged {acked}"
    );
    assert!(
        stored <= sent,
        "nothing invented: stored {stored}, sent {sent}"
    );
    child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_append_and_mark_leaves_each_money_event_on_the_log_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).expect("root");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(root.join("s.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
        sqlx::raw_sql("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);")
            .execute(&pool)
            .await
            .expect("seed");
        pool.close().await;
    }
    let port = free_port();
    let env = |fault: bool| {
        let mut e = vec![
            ("TALLY_SOURCE_FILE_ROOT", root.display().to_string()),
            ("TALLY_OUTBOX_LEASE_MS", "1000".to_string()),
        ];
        if fault {
            e.push(("TALLY_FAULT_INJECT", "outbox_after_append".to_string()));
        }
        e
    };
    let mut child = spawn_role(dir.path(), &["serve"], port, &env(false));
    let mut op = Client::new(format!("http://127.0.0.1:{port}"));
    wait_up(&op).await;
    op.setup().await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let (s, b) = seller
        .post(
            &format!("/companies/{seller_id}/connections"),
            &json!({"engine_id": 5, "name": "f", "credentials": {"path": "s.db"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let conn = b["data"]["connection_id"]
        .as_str()
        .expect("conn")
        .to_string();
    let (s, b) = seller
        .post(
            &format!("/companies/{seller_id}/assets"),
            &json!({"name": "One", "connection_id": conn, "visibility": "SHARED",
                    "sell_in_marketplace": true, "sql_logic": "SELECT n FROM t"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let asset = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, _) = seller
        .post(
            &format!("/companies/{seller_id}/assets/{asset}/prices"),
            &json!({"price_usd": 0.05}),
        )
        .await;
    assert_eq!(s, 201);
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "crash")
        .json(&json!({"credits": 100, "reason": "test"}))
        .send()
        .await
        .expect("top up");
    assert_eq!(r.status().as_u16(), 201);
    wait_drained(&op).await;
    child.stop();

    // The process dies right after appending the execution's usage and ledger events, before
    // it can mark them published.
    let mut child = spawn_role(dir.path(), &["serve"], port, &env(true));
    wait_up(&op).await;
    // The answer may or may not get out before the process dies (the relay runs beside the
    // request); the charge is committed either way, and the log must hold its events once.
    if let Ok(r) = buyer
        .req(reqwest::Method::GET, "/analyze/acme/assets/one")
        .send()
        .await
    {
        assert_eq!(r.status().as_u16(), 200);
    }
    let exited = tokio::task::spawn_blocking(move || {
        let status = child.0.wait();
        (child, status)
    });
    let (child_after, status) = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("the fault point fired")
        .expect("join");
    assert!(!status.expect("status").success(), "it died");
    drop(child_after);

    // After a restart (and the lease), the new relay finds the events on the log.
    let mut child = spawn_role(dir.path(), &["serve"], port, &env(false));
    wait_up(&op).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_drained(&op).await;
    child.stop();
    let mut settings = test_settings(dir.path());
    settings.source_file_root = Some(root.clone());
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
    // Each ledger row is on the billing topic once (a duplicate would make this line differ).
    assert!(
        r.lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("billing records on the log")),
        "{}",
        r.lines.join("\n")
    );
}
