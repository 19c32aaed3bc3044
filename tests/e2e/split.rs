//! The distributed pass only (`TALLY_E2E_BACKENDS=distributed`): roles as separate processes
//! on Kafka + ClickHouse + Postgres, two processors sharing a consumer group while one is
//! SIGKILLed and restarted; and the broker going away and coming back under a running Tally.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BATCHES: usize = 2_000;
const PER_BATCH: usize = 50;
const EVENTS: u64 = (BATCHES * PER_BATCH) as u64;

/// The same 100,000 events for every run: 700 visitors, 40 pages, times over the last hours.
fn batches(site: &str, base: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    (0..BATCHES)
        .map(|b| {
            let events: Vec<Value> = (0..PER_BATCH)
                .map(|i| {
                    let ts = base + chrono::Duration::milliseconds((b * 5_000 + i * 100) as i64);
                    json!({
                        "website_id": site,
                        "url": format!("/p/{}", (b * 7 + i) % 40),
                        "visitor_id": format!("v{}", b % 700),
                        "timestamp": ts.to_rfc3339(),
                    })
                })
                .collect();
            json!(events)
        })
        .collect()
}

async fn post_batches(c: &Client, batches: Vec<Value>) {
    let chunks: Vec<Vec<Value>> = batches.chunks(BATCHES / 8).map(<[Value]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for body in chunk {
                let (s, resp) = c.post("/api/collect", &body).await;
                assert_eq!(s, 202, "{resp}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
}

fn period() -> String {
    let today = chrono::Utc::now().date_naive();
    format!(
        "start_date={}&end_date={}&timezone=UTC",
        today - chrono::Duration::days(2),
        today + chrono::Duration::days(1)
    )
}

/// The dashboard numbers compared between runs.
async fn dashboard(c: &Client, site: &str) -> Value {
    let p = period();
    let mut out = serde_json::Map::new();
    for (name, path) in [
        ("stats", format!("/api/websites/{site}/stats?{p}")),
        (
            "pages",
            format!("/api/websites/{site}/metrics?type=page&limit=100&{p}"),
        ),
        (
            "entry",
            format!("/api/websites/{site}/metrics?type=entry_page&limit=100&{p}"),
        ),
        (
            "series",
            format!("/api/websites/{site}/pageviews?unit=hour&{p}"),
        ),
    ] {
        let (s, body) = c.get(&path).await;
        assert_eq!(s, 200, "{path}: {body}");
        out.insert(name.to_string(), body["data"].clone());
    }
    Value::Object(out)
}

async fn pageviews(c: &Client, site: &str) -> u64 {
    let (s, body) = c
        .get(&format!("/api/websites/{site}/stats?{}", period()))
        .await;
    assert_eq!(s, 200, "{body}");
    body["data"]["pageviews"].as_u64().unwrap_or(0)
}

/// Waits until at least `want` pageviews are queryable (the health backlog alone can read zero
/// while a killed member's partitions wait for the group to rebalance).
async fn wait_count(c: &Client, site: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let got = pageviews(c, site).await;
        if got >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {got} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn process_role(dir: &Path) -> ChildGuard {
    let log = std::env::var("TALLY_TEST_PROCESS_LOG").unwrap_or_else(|_| "warn".into());
    spawn_role(dir, &["process"], free_port(), &[("TALLY_LOG", log)])
}

/// How the test stops one of the two processors half-way, and when it starts it again.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGTERM: the processor leaves the group cleanly; restarted two seconds later.
    Term,
    /// SIGKILL, restarted two seconds later: it joins while its dead self is still a member.
    KillRestartSoon,
    /// SIGKILL, restarted only after the survivor alone has stored every event.
    KillRestartAfterTakeover,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_share_the_group_and_hand_over_on_sigterm() {
    two_processors_one_stopped_half_way(Stop::Term).await;
}

/// The acceptance test as written: one processor is SIGKILLed half-way, so it never leaves
/// the group. The broker evicts it after the session timeout; on tansu 0.6, which then keeps
/// serving the dead member's old assignment, the survivors' stall watch rejoins the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_share_the_group_and_survive_a_sigkill() {
    two_processors_one_stopped_half_way(Stop::KillRestartSoon).await;
}

/// The survivor takes over the killed processor's partitions by itself, and the restarted
/// processor then counts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_a_sigkill_takes_over_alone() {
    two_processors_one_stopped_half_way(Stop::KillRestartAfterTakeover).await;
}

/// Ingest, two processors in one group, and api as separate processes; half-way through 100,000
/// events one processor is stopped (SIGKILL or SIGTERM) and started again.
async fn two_processors_one_stopped_half_way(stop: Stop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(d) = distributed(dir.path()) else {
        eprintln!("skipped: distributed backends only");
        return;
    };
    let (ingest_port, api_port) = (free_port(), free_port());
    let _ingest = spawn_role(dir.path(), &["ingest"], ingest_port, &[]);
    let mut first = process_role(dir.path());
    let _second = process_role(dir.path());
    let _api = spawn_role(dir.path(), &["api"], api_port, &[]);
    let mut ingest = Client::new(format!("http://127.0.0.1:{ingest_port}"));
    let mut api = Client::new(format!("http://127.0.0.1:{api_port}"));
    wait_up(&ingest).await;
    wait_up(&api).await;
    ingest.setup().await;
    api.key = ingest.key.clone();
    let site = ingest.website("Split", "UTC").await;
    // Roles are separate: the ingest process serves no dashboards, the api process no collect.
    let (s, _) = ingest
        .get(&format!("/api/websites/{site}/stats?{}", period()))
        .await;
    assert_eq!(s, 404, "ingest serves no dashboards");
    let (s, _) = api.post("/api/collect", &json!({})).await;
    assert_eq!(s, 404, "api takes no events");

    let base = chrono::Utc::now() - chrono::Duration::hours(4);
    let posting = tokio::spawn({
        let (ingest, all) = (ingest.clone(), batches(&site, base));
        async move { post_batches(&ingest, all).await }
    });
    // Half-way through, one processor is stopped, then started again.
    wait_count(&api, &site, EVENTS / 2).await;
    if stop == Stop::Term {
        first.stop();
    } else {
        first.kill();
    }
    let _first_again = if stop == Stop::KillRestartAfterTakeover {
        posting.await.expect("posting");
        wait_count(&api, &site, EVENTS).await;
        let again = process_role(dir.path());
        // Long enough for it to join, take partitions and read from the committed offsets.
        tokio::time::sleep(Duration::from_secs(10)).await;
        again
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = process_role(dir.path());
        posting.await.expect("posting");
        wait_count(&api, &site, EVENTS).await;
        again
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Exactly once in ClickHouse: raw rows, no merge or FINAL to hide duplicates.
    let ch = projections::ClickHouseAnalytics::open(&d.analytics_url, &d.namespace)
        .await
        .expect("clickhouse");
    use projections::AnalyticsReader;
    assert_eq!(ch.event_count(&site).await.expect("count"), EVENTS);
    let distributed_numbers = dashboard(&api, &site).await;
    assert_eq!(distributed_numbers["stats"]["pageviews"], EVENTS);

    // The same events through the embedded backends give the same dashboards.
    let edir = tempfile::tempdir().expect("tempdir");
    let (app, c) = start_app(embedded_settings(edir.path())).await;
    let esite = c.website("Split", "UTC").await;
    post_batches(&c, batches(&esite, base)).await;
    c.wait_idle().await;
    let embedded_numbers = dashboard(&c, &esite).await;
    app.shutdown().await.expect("shutdown");
    assert_eq!(distributed_numbers, embedded_numbers);
}

/// A tansu broker of the test's own, so stopping it disturbs no other test.
pub(crate) struct Broker {
    dir: std::path::PathBuf,
    pub(crate) port: u16,
    child: Option<ChildGuard>,
}

impl Broker {
    pub(crate) fn start(dir: &Path, port: u16) -> Broker {
        let mut b = Broker {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        b.restart();
        b
    }

    pub(crate) fn restart(&mut self) {
        let bin = std::env::var("TALLY_TEST_TANSU_BIN").expect("TALLY_TEST_TANSU_BIN");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(bin)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tansu");
        self.child = Some(ChildGuard(child));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_503_and_ingest_resumes_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    if distributed(dir.path()).is_none() {
        eprintln!("skipped: distributed backends only");
        return;
    }
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("broker dir");
    let mut broker = Broker::start(&broker_dir, free_port());
    let port = free_port();
    let _tally = spawn_role(
        dir.path(),
        &["serve"],
        port,
        &[
            (
                "TALLY_LOG_URL",
                format!("kafka://127.0.0.1:{}", broker.port),
            ),
            ("TALLY_KAFKA_MESSAGE_TIMEOUT_MS", "2000".into()),
        ],
    );
    let mut c = Client::new(format!("http://127.0.0.1:{port}"));
    wait_up(&c).await;
    c.setup().await;
    let site = c.website("Outage", "UTC").await;
    let event = json!({"website_id": site, "url": "/up"});
    let mut acked = 0u64;
    for _ in 0..5 {
        let (s, body) = c.post("/api/collect", &event).await;
        assert_eq!(s, 202, "{body}");
        acked += 1;
    }

    broker.kill();
    let (s, body) = c.post("/api/collect", &event).await;
    assert_eq!(s, 503, "no 202 without the broker: {body}");
    assert_eq!(body["error"]["code"], "service_unavailable");

    broker.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, _) = c.post("/api/collect", &event).await;
        if s == 202 {
            acked += 1;
            break;
        }
        assert_eq!(s, 503, "only 503 while the broker comes back");
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        let (s, body) = c.post("/api/collect", &event).await;
        assert_eq!(s, 202, "{body}");
        acked += 1;
    }
    wait_count(&c, &site, acked).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pageviews(&c, &site).await, acked, "every 202 stored, once");
}

/// Money under concurrency across processes: 50 executions by a buyer whose balance covers
/// exactly 10, spread over two `tally ingest` processes sharing the Postgres metadata store:
/// exactly 10 answered, 40 refused with 402, the balance 0, and `tally reconcile` agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_processes_never_overdraw_a_balance() {
    use crate::connections::{priced_asset, seed_table, source_connection, source_url};
    let dir = tempfile::tempdir().expect("tempdir");
    if distributed(dir.path()).is_none() {
        eprintln!("skipped: distributed backends only");
        return;
    }
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("split_race_{}", std::process::id());
    seed_table(&url, &table).await;
    let allow = [("TALLY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8".to_string())];
    let (port_a, port_b) = (free_port(), free_port());
    let _a = spawn_role(dir.path(), &["ingest"], port_a, &allow);
    let _b = spawn_role(dir.path(), &["ingest"], port_b, &allow);
    let _process = process_role(dir.path());
    let mut op = Client::new(format!("http://127.0.0.1:{port_a}"));
    wait_up(&op).await;
    wait_up(&Client::new(format!("http://127.0.0.1:{port_b}"))).await;
    op.setup().await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer_a) = op.company("globex").await;
    // Fifty calls in flight at once: more than Starter's five concurrent.
    op.subscribe(&buyer_id, "enterprise").await;
    let conn = source_connection(&seller, &seller_id, &url).await;
    let sql = format!("SELECT count(*) AS n FROM {table}");
    priced_asset(&seller, &seller_id, &conn, ("One row", &sql), 0.07).await;
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "ten-runs")
        .json(&json!({"credits": 70, "reason": "test"}))
        .send()
        .await
        .expect("top up");
    assert_eq!(r.status().as_u16(), 201);
    // The second process sees the buyer's key and the asset (both through the shared store).
    let mut buyer_b = buyer_a.clone();
    buyer_b.base = format!("http://127.0.0.1:{port_b}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = buyer_b
            .get(&format!("/companies/{buyer_id}/assets/search?q=one"))
            .await;
        if s == 200 && b["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process B never saw the asset: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let calls = (0..50).map(|i| {
        let c = if i % 2 == 0 {
            buyer_a.clone()
        } else {
            buyer_b.clone()
        };
        async move { c.get("/analyze/acme/assets/one-row").await.0 }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|s| **s == 200).count();
    let short = answers.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, short), (10, 40), "{answers:?}");
    let (_, c) = buyer_b.get(&format!("/companies/{buyer_id}")).await;
    assert_eq!(c["data"]["credits_balance"], 0, "{c}");

    // The seller's Starter key runs its own asset through both processes: sixty in a
    // minute across the two, then a refusal from either (the counters are in Postgres).
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 60)
        .unwrap_or(0)
        > 30
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut seller_b = seller.clone();
    seller_b.base = format!("http://127.0.0.1:{port_b}");
    for n in 0..60 {
        let c = if n % 2 == 0 { &seller } else { &seller_b };
        let (s, b) = c.get("/analyze/acme/assets/one-row").await;
        assert_eq!(s, 200, "call {n}: {b}");
    }
    for c in [&seller, &seller_b] {
        let (s, b) = c.get("/analyze/acme/assets/one-row").await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (429, json!("rate_limited")),
            "{b}"
        );
    }
    // Both relays drain and metering stores every execution, then the books agree.
    wait_drained(&seller).await;
    wait_drained(&seller_b).await;
    let r = tally::reconcile(&test_settings(dir.path()))
        .await
        .expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
}
