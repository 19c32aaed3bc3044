//! The distributed pass only: exactly once on the money path under faults. Charged
//! executions from three buyers stream through two `tally ingest` processes while the two
//! processors (one consumer group, so partitions move) are SIGKILLed and restarted, one ingest
//! process is SIGKILLed and restarted, and the broker is restarted. Clients retry what failed
//! with the same `Idempotency-Key`, as a client should. At the end every execution answered is
//! charged once, metered once, and `tally reconcile` finds no difference; each buyer's quota
//! alert fired exactly once, and the webhook receiver got each delivery id (at least once: it
//! fails the first try) and acted on each once.

use crate::common::*;
use crate::connections::{priced_asset, seed_table, source_connection, source_url};
use crate::split::Broker;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CALLS: u64 = 240;
const PRICE: i64 = 7;
const TOP_UP: i64 = 10_000;
/// Each buyer's own allocation: its 80 executions cross 80 % (68) during the stream, with room
/// for the few admitted attempts a killed process leaves unanswered.
const ALLOCATION: i64 = 85;
/// Execution `i` starts at `i × PACE` from the stream's start, so the stream (about 19 s)
/// spans every fault below.
const PACE: Duration = Duration::from_millis(80);

/// One execution, retried (alternating ingest processes) until it is answered: the same
/// `Idempotency-Key` makes every attempt the same execution.
async fn run_until_answered(clients: &[Client; 2], i: u64) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut attempt = i as usize;
    loop {
        let c = &clients[attempt % 2];
        let sent = c
            .req(reqwest::Method::GET, "/analyze/acme/assets/one-row")
            .header("idempotency-key", format!("fault-run-{i}"))
            .send()
            .await;
        if let Ok(r) = sent {
            let s = r.status().as_u16();
            if s < 500 {
                return s;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "execution {i} never answered"
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_done(done: &AtomicU64, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while done.load(Ordering::Relaxed) < n {
        assert!(tokio::time::Instant::now() < deadline, "stuck before {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charged_executions_reconcile_through_kills_and_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    if distributed(dir.path()).is_none() {
        eprintln!("skipped: distributed backends only");
        return;
    }
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("faults_{}", std::process::id());
    seed_table(&url, &table).await;
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("broker dir");
    let mut broker = Broker::start(&broker_dir, free_port());
    let log_url = format!("kafka://127.0.0.1:{}", broker.port);
    let env = [
        ("TALLY_LOG_URL", log_url.clone()),
        ("TALLY_KAFKA_MESSAGE_TIMEOUT_MS", "2000".into()),
        ("TALLY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8".into()),
        ("TALLY_WEBHOOK_RETRY_BASE_MS", "100".into()),
    ];
    let processor = || spawn_role(dir.path(), &["process"], free_port(), &env);
    let (port_a, port_b) = (free_port(), free_port());
    let _a = spawn_role(dir.path(), &["ingest"], port_a, &env);
    let mut b = spawn_role(dir.path(), &["ingest"], port_b, &env);
    let mut p1 = processor();
    let mut p2 = processor();
    let mut op = Client::new(format!("http://127.0.0.1:{port_a}"));
    wait_up(&op).await;
    wait_up(&Client::new(format!("http://127.0.0.1:{port_b}"))).await;
    op.setup().await;

    let (seller_id, seller) = op.company("acme").await;
    let conn = source_connection(&seller, &seller_id, &url).await;
    let sql = format!("SELECT count(*) AS n FROM {table}");
    priced_asset(&seller, &seller_id, &conn, ("One row", &sql), 0.07).await;
    let mut buyers = Vec::new();
    let mut inboxes = Vec::new();
    let (hook, got) = crate::alerts::receiver().await;
    for handle in ["globex", "initech", "umbrella"] {
        let (id, a) = op.company(handle).await;
        let (s, b) = op
            .send(
                reqwest::Method::PUT,
                &format!("/companies/{id}/subscription"),
                Some(&json!({"plan": "enterprise", "monthly_requests": ALLOCATION})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (_, me) = a.get("/me").await;
        let user = me["data"]["user_id"].as_str().expect("user").to_string();
        let (s, b) = a
            .post(
                &format!("/companies/{id}/users/{user}/alerts"),
                &json!({"kind": "quota", "webhook_url": hook}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        inboxes.push(format!("/companies/{id}/users/{user}/notifications"));
        let r = op
            .req(reqwest::Method::POST, &format!("/companies/{id}/credits"))
            .header("idempotency-key", format!("top-up-{handle}"))
            .json(&json!({"credits": TOP_UP}))
            .send()
            .await
            .expect("top up");
        assert_eq!(r.status().as_u16(), 201);
        let mut on_b = a.clone();
        on_b.base = format!("http://127.0.0.1:{port_b}");
        buyers.push((id, [a, on_b]));
    }
    // Process B sees the asset through the shared store before the stream starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while buyers[0].1[1]
        .get(&format!("/companies/{}/assets/search?q=one", buyers[0].0))
        .await
        .1["data"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never saw the asset"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stream: eight clients at a time, paced, each execution by buyer i % 3.
    let done = Arc::new(AtomicU64::new(0));
    let buyers = Arc::new(buyers);
    let started = tokio::time::Instant::now();
    let stream = {
        let (done, buyers) = (done.clone(), buyers.clone());
        tokio::spawn(async move {
            let next = Arc::new(AtomicU64::new(0));
            let workers = (0..8).map(|_| {
                let (done, buyers, next) = (done.clone(), buyers.clone(), next.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= CALLS {
                            return answers;
                        }
                        tokio::time::sleep_until(started + PACE * i as u32).await;
                        let s = run_until_answered(&buyers[(i % 3) as usize].1, i).await;
                        answers.push(s);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
            let mut all = Vec::new();
            for w in futures::future::join_all(workers).await {
                all.extend(w.expect("worker"));
            }
            all
        })
    };

    wait_done(&done, CALLS / 6).await;
    p1.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    p1 = processor();
    wait_done(&done, 2 * CALLS / 6).await;
    b.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    b = spawn_role(dir.path(), &["ingest"], port_b, &env);
    wait_done(&done, 3 * CALLS / 6).await;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();
    wait_done(&done, 4 * CALLS / 6).await;
    p2.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    p2 = processor();

    // Every fault happened while executions were still coming.
    assert!(
        done.load(Ordering::Relaxed) < CALLS,
        "the stream ended before the last fault"
    );
    let answers = stream.await.expect("stream");
    assert_eq!(answers.len() as u64, CALLS);
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    // Each buyer paid for each of its executions once, and each is metered once.
    wait_drained(&op).await;
    for (n, (id, clients)) in buyers.iter().enumerate() {
        let runs = (0..CALLS).filter(|i| i % 3 == n as u64).count() as i64;
        let (s, c) = clients[0].get(&format!("/companies/{id}")).await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(c["data"]["credits_balance"], TOP_UP - PRICE * runs, "{c}");
        let (s, u) = clients[0]
            .get(&format!("/companies/{id}/requests/usage"))
            .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(
            (
                &u["data"]["total"]["executions"],
                &u["data"]["total"]["credits"]
            ),
            (&json!(runs), &json!(PRICE * runs)),
            "{u}"
        );
    }
    // Each quota alert fired once (80 %), through kills of both processors of the alerts
    // group and the broker's restart; each delivery reached the receiver and was acted on once.
    for (n, inbox) in inboxes.iter().enumerate() {
        let client = &buyers[n].1[0];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let fired = loop {
            let (s, b) = client.get(inbox).await;
            assert_eq!(s, 200, "{b}");
            let total = b["meta"]["pagination"]["total"].as_u64().unwrap_or(0);
            if total >= 1 || tokio::time::Instant::now() > deadline {
                break b;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(fired["meta"]["pagination"]["total"], 1, "{fired}");
        assert_eq!(fired["data"][0]["kind"], "quota", "{fired}");
        assert!(
            fired["data"][0]["window"]
                .as_str()
                .unwrap_or("")
                .ends_with(":80"),
            "{fired}"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let acted_on = loop {
        let requests = got.lock().expect("lock").clone();
        let mut tries: std::collections::HashMap<String, usize> = Default::default();
        for (id, _, _, _) in &requests {
            *tries.entry(id.clone()).or_default() += 1;
        }
        let acted: Vec<String> = tries
            .iter()
            .filter(|(_, n)| **n >= 2)
            .map(|(id, _)| id.clone())
            .collect();
        if acted.len() >= 3 || tokio::time::Instant::now() > deadline {
            assert_eq!(tries.len(), 3, "one delivery id per firing: {requests:?}");
            break acted;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(acted_on.len(), 3, "each delivery acted on once");
    p1.stop();
    p2.stop();
    b.stop();
    let mut settings = test_settings(dir.path());
    settings.log_url = Some(log_url);
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
}
