//! The marketplace benchmark: starts the real `tally serve` on loopback, once on the embedded
//! backends and once with its metadata store (and so every debit) on Postgres, and prints:
//! - metering lag: executions at a fixed 1,000/s (open loop) until each shows in the buyer's
//!   `requests/usage` (answer to metered, p50 and p95);
//! - charged executions/s of a one-row asset against the seller Postgres, at 32 connections,
//!   each with its debit and settlement committed, with p50 and p99;
//! - Tally's added latency: one connection, the same query through `/analyze` and directly on
//!   the source with sqlx, p50 and p99 of each and their difference;
//! - asset search over 10,000 assets, p50.
//!
//! Needs `TALLY_TEST_SOURCE_POSTGRES` (the seller database `deploy/local/services.sh` starts);
//! the Postgres column also needs `TALLY_TEST_POSTGRES` (and `TALLY_TEST_KAFKA`,
//! `TALLY_TEST_CLICKHOUSE`). Bounded in time; targets 127.0.0.1 only.
//!
//! `cargo bench --bench market`. Knobs: `TALLY_BENCH_PHASE_SECS` (default 10),
//! `TALLY_BENCH_LAG_RATE` (the lag phase's executions/s, default 1,000),
//! `TALLY_BENCH_ASSETS` (default 10,000), `TALLY_BENCH_ONLY=embedded` or `distributed` (one
//! column only).

#[path = "../tests/e2e/common.rs"]
mod common;

use common::{free_port, Client};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CONNS: usize = 32;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!())
}

struct Figures(Vec<(String, String)>);

impl Figures {
    fn add(&mut self, label: &str, value: String) {
        self.0.push((label.to_string(), value));
    }
}

fn credentials(url: &str) -> Value {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("source url: {e}"));
    json!({
        "host": u.host_str().unwrap_or("127.0.0.1"),
        "port": u.port().unwrap_or(5432),
        "database": u.path().trim_start_matches('/'),
        "username": u.username(),
        "password": u.password().unwrap_or(""),
    })
}

async fn post_ok(c: &Client, path: &str, body: &Value) -> Value {
    let (s, b) = c.post(path, body).await;
    assert!(s == 200 || s == 201, "{path}: {s} {b}");
    b
}

/// 32 connections executing as fast as answers come back: (executions/s, p50, p99, failures).
async fn executions(url: &str, key: &str, dur: Duration) -> (f64, f64, f64, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (client, url, key) = (client.clone(), url.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut h, mut ok, mut failed) = (hist(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match client.get(&url).header("x-api-key", &key).send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    _ => failed += 1,
                }
                let _ = h.record(t0.elapsed().as_micros() as u64);
            }
            (h, ok, failed)
        }));
    }
    let (mut all, mut ok, mut failed) = (hist(), 0u64, 0u64);
    for t in tasks {
        if let Ok((h, o, f)) = t.await {
            let _ = all.add(h);
            ok += o;
            failed += f;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (
        ok as f64 / secs,
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99)),
        failed,
    )
}

/// One connection, `n` sequential executions through Tally: (p50, p99) in ms.
async fn sequential_tally(c: &Client, path: &str, n: usize) -> (f64, f64) {
    let mut h = hist();
    for _ in 0..n {
        let t0 = Instant::now();
        let (s, _) = c.get(path).await;
        assert_eq!(s, 200);
        let _ = h.record(t0.elapsed().as_micros() as u64);
    }
    (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)))
}

/// Waits until `/metrics` shows no money movement waiting for publication (at most `limit`).
async fn outbox_drained(c: &Client, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let text = reqwest::get(format!("{}/metrics", c.base))
            .await
            .ok()
            .map(|r| r.text());
        let text = match text {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        if text.lines().any(|l| l.trim() == "tally_outbox_pending 0") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The buyer's metered executions this month (`requests/usage`).
async fn metered(c: &Client, company: &str) -> u64 {
    let (_, b) = c.get(&format!("/companies/{company}/requests/usage")).await;
    b["data"]["total"]["executions"].as_u64().unwrap_or(0)
}

/// Until `/api/health` shows no outbox or metering backlog (or `limit` passes).
async fn money_path_drained(c: &Client, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let (s, b) = c.get("/api/health").await;
        if s == 200 && b["backlog"]["outbox"] == 0 && b["backlog"]["metering"] == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Metering lag under an open-loop load of `rate` executions/s for `dur`: each execution's
/// answer time, and a reader polling the buyer's `requests/usage` every 20 ms. The k-th
/// answered execution is visible at the first poll begun after its answer whose total reaches
/// the starting total plus k, so the lag is that poll's start less the answer (at most one
/// poll interval and one read late). Returns (achieved executions/s, lag p50 ms, lag p95 ms,
/// lag p95 ms to the end of the read that saw it, failed calls, of which `429`s: calls beyond
/// Enterprise's 50 in flight once answers slow down).
async fn metering_lag(
    buyer: &Client,
    buyer_id: &str,
    url: &str,
    rate: u64,
    dur: Duration,
) -> (f64, f64, f64, f64, u64, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default();
    let key = buyer.key.clone().unwrap_or_default();
    let limited = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = metered(buyer, buyer_id).await;
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let total = (rate as f64 * dur.as_secs_f64()) as u64;
    let sender = {
        let (answered, failed, limited) = (answered.clone(), failed.clone(), limited.clone());
        let (url, key) = (url.to_string(), key.clone());
        tokio::spawn(async move {
            let mut calls = Vec::with_capacity(total as usize);
            for i in 0..total {
                let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(at.into()).await;
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                let (answered, failed, limited) =
                    (answered.clone(), failed.clone(), limited.clone());
                calls.push(tokio::spawn(async move {
                    match client.get(&url).header("x-api-key", &key).send().await {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let _ = r.bytes().await;
                            if let Ok(mut a) = answered.lock() {
                                a.push(Instant::now());
                            }
                        }
                        other => {
                            if other.is_ok_and(|r| r.status().as_u16() == 429) {
                                limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
            }
            for c in calls {
                let _ = c.await;
            }
        })
    };
    // (began, ended, executions metered since the start)
    let mut polls: Vec<(Instant, Instant, u64)> = Vec::new();
    let mut sent_all = false;
    let give_up = start + dur + Duration::from_secs(30);
    while Instant::now() < give_up {
        // A read sees what was stored when it began: the poll's time is its start, so the
        // read's own duration (a figure of its own, `requests/usage`) is not counted as lag.
        let began = Instant::now();
        let n = metered(buyer, buyer_id).await;
        polls.push((began, Instant::now(), n.saturating_sub(base)));
        if sent_all {
            let done = answered.lock().map(|a| a.len() as u64).unwrap_or(0);
            if n.saturating_sub(base) >= done {
                break;
            }
        }
        sent_all = sender.is_finished();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = answered.lock().map(|a| a.clone()).unwrap_or_default();
    times.sort();
    let (mut h, mut read_done) = (hist(), hist());
    for (k, at) in times.iter().enumerate() {
        let (seen, ended) = polls
            .iter()
            .find(|(t, _, n)| t >= at && *n > k as u64)
            .map(|(t, e, _)| (*t, *e))
            .unwrap_or((give_up, give_up));
        let _ = h.record(seen.duration_since(*at).as_micros() as u64);
        let _ = read_done.record(ended.duration_since(*at).as_micros() as u64);
    }
    let secs = times
        .last()
        .map_or(1.0, |t| t.duration_since(start).as_secs_f64().max(1e-3));
    (
        times.len() as f64 / secs,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.95)),
        ms(read_done.value_at_quantile(0.95)),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        limited.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Drops the run's Postgres schema and ClickHouse database, so repeated runs leave nothing.
async fn drop_stores(pg: &str, ch: &str, ns: &str) {
    if let Ok(store) = projections::PgMetadata::open(pg, ns).await {
        let _ = store.drop_namespace(ns).await;
    }
    if let Ok(store) = projections::ClickHouseAnalytics::open(ch, ns).await {
        let _ = store.drop_namespace().await;
    }
}

/// One connection, `n` sequential runs of `sql` directly on the source: (p50, p99) in ms.
async fn sequential_direct(url: &str, sql: &str, n: usize) -> (f64, f64) {
    // One plain connection (no pool, so no ping before each query): the fastest direct path.
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("source: {e}"));
    let mut h = hist();
    for _ in 0..n {
        let t0 = Instant::now();
        let rows = sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("direct: {e}"));
        assert_eq!(rows.len(), 1);
        let _ = h.record(t0.elapsed().as_micros() as u64);
    }
    (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)))
}

async fn run(source: &str, backend_env: Vec<(&'static str, String)>) -> Figures {
    let phase = Duration::from_secs(env_num("TALLY_BENCH_PHASE_SECS", 10));
    let lag_rate = env_num("TALLY_BENCH_LAG_RATE", 1_000).max(1);
    let n_assets = env_num("TALLY_BENCH_ASSETS", 10_000) as usize;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env("TALLY_DATA_DIR", dir.path().join("data"))
        .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_SOURCE_ALLOW_CIDRS", "127.0.0.0/8")
        .env("TALLY_SOURCE_POOL_SIZE", CONNS.to_string())
        // The load phases make far more than seed 000's 10,000 marketplace calls an hour.
        .env("TALLY_MARKET_REQUESTS_PER_HOUR", "0")
        .env("TALLY_LOG", "warn")
        .envs(backend_env)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut op = Client::new(format!("http://127.0.0.1:{port}"));
    common::wait_up(&op).await;
    op.setup().await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let conn = post_ok(
        &seller,
        &format!("/companies/{seller_id}/connections"),
        &json!({"engine_id": 1, "name": "dwh", "credentials": credentials(source)}),
    )
    .await["data"]["connection_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sql = "SELECT 42 AS answer, 'one row' AS label";
    let asset = post_ok(
        &seller,
        &format!("/companies/{seller_id}/assets"),
        &json!({"name": "One row", "connection_id": conn, "visibility": "SHARED",
                "sell_in_marketplace": true, "sql_logic": sql}),
    )
    .await["data"]["asset_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    post_ok(
        &seller,
        &format!("/companies/{seller_id}/assets/{asset}/prices"),
        &json!({"price_usd": 0.01}),
    )
    .await;
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "bench")
        .json(&json!({"credits": 1_000_000_000_i64}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("top up: {e}"));
    assert_eq!(r.status().as_u16(), 201);
    // Enterprise: no per-minute or per-day limit, and room for 32 calls in flight (the
    // limits are still checked on every call).
    let (s, b) = op
        .send(
            reqwest::Method::PUT,
            &format!("/companies/{buyer_id}/subscription"),
            Some(&json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let path = "/analyze/acme/assets/one-row";
    let url = format!("{}{path}", op.base);
    let key = buyer.key.clone().unwrap_or_default();
    let _ = executions(&url, &key, Duration::from_secs(2)).await; // warm pools
    let (rate, p50, p99, failed) = executions(&url, &key, phase).await;
    let mut f = Figures(Vec::new());
    f.add("charged executions/s, 32 connections", format!("{rate:.0}"));
    f.add("  p50 / p99 ms", format!("{p50:.2} / {p99:.2}"));
    f.add("  failed calls", failed.to_string());
    let balance = buyer.get(&format!("/companies/{buyer_id}")).await.1["data"]["credits_balance"]
        .as_i64()
        .unwrap_or(-1);
    f.add(
        "  buyer's balance after (never negative)",
        balance.to_string(),
    );

    // Latency is measured at rest: after the load phase's backlog (the outbox relay
    // publishing what it committed) has drained, as it would be between bursts.
    let drained = outbox_drained(&op, Duration::from_secs(60)).await;
    f.add(
        "  outbox drained before the latency phase",
        drained.to_string(),
    );
    let (t50, t99) = sequential_tally(&buyer, path, 2_000).await;
    let (d50, d99) = sequential_direct(source, sql, 2_000).await;
    f.add(
        "one connection: via Tally p50 / p99 ms",
        format!("{t50:.2} / {t99:.2}"),
    );
    f.add(
        "one connection: direct on source p50 / p99 ms",
        format!("{d50:.2} / {d99:.2}"),
    );
    f.add(
        "Tally's added latency p50 / p99 ms",
        format!("{:.2} / {:.2}", t50 - d50, t99 - d99),
    );

    // Metering lag at 1,000 executions/s (open loop), from a drained money path.
    let drained = money_path_drained(&op, Duration::from_secs(60)).await;
    f.add(
        "  money path drained before the lag phase",
        drained.to_string(),
    );
    let (achieved, l50, l95, l95_read, lag_failed, lag_limited) =
        metering_lag(&buyer, &buyer_id, &url, lag_rate, phase).await;
    f.add(
        &format!("metering lag at {lag_rate} exec/s: achieved exec/s"),
        format!("{achieved:.0}"),
    );
    f.add(
        "  answer-to-metered lag p50 / p95 ms",
        format!("{l50:.0} / {l95:.0}"),
    );
    f.add(
        "  the same p95 to the end of the read that saw it, ms",
        format!("{l95_read:.0}"),
    );
    f.add(
        "  failed calls (of which 429: over 50 in flight)",
        format!("{lag_failed} ({lag_limited})"),
    );

    // Search over many assets: created concurrently, then searched.
    let started = Instant::now();
    let names: Vec<usize> = (0..n_assets).collect();
    for chunk in names.chunks(64) {
        let calls = chunk.iter().map(|i| {
            let (seller, seller_id, conn) = (seller.clone(), seller_id.clone(), conn.clone());
            async move {
                let words = ["sales", "churn", "pricing", "inventory", "traffic", "revenue"];
                let body = json!({"name": format!("{} report {i}", words[i % words.len()]),
                                  "connection_id": conn, "visibility": "SHARED",
                                  "sell_in_marketplace": true, "tags": [words[(i / 7) % words.len()]],
                                  "sql_logic": "SELECT 1"});
                seller.post(&format!("/companies/{seller_id}/assets"), &body).await.0
            }
        });
        for s in futures::future::join_all(calls).await {
            assert_eq!(s, 201);
        }
    }
    f.add(
        &format!("created {n_assets} assets in s"),
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );
    let mut h = hist();
    for i in 0..200 {
        let q = ["churn", "report 17", "pricing", "nothing-matches"][i % 4];
        let t0 = Instant::now();
        let (s, _) = buyer
            .get(&format!(
                "/companies/{buyer_id}/assets/search?q={q}&limit=20"
            ))
            .await;
        assert_eq!(s, 200);
        let _ = h.record(t0.elapsed().as_micros() as u64);
    }
    f.add(
        &format!("asset search over {n_assets} assets p50 / p99 ms"),
        format!(
            "{:.2} / {:.2}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99))
        ),
    );
    let _ = child.kill();
    let _ = child.wait();
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Ok(source) = std::env::var("TALLY_TEST_SOURCE_POSTGRES") else {
        eprintln!("TALLY_TEST_SOURCE_POSTGRES is not set: start deploy/local/services.sh");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("rt: {e}"));
    rt.block_on(async {
        let only = std::env::var("TALLY_BENCH_ONLY").unwrap_or_default();
        let only_embedded = only == "embedded";
        let embedded = if only == "distributed" {
            Figures(Vec::new())
        } else {
            run(
                &source,
                vec![
                    ("TALLY_LOG_URL", String::new()),
                    ("TALLY_ANALYTICS_URL", String::new()),
                    ("TALLY_METADATA_URL", String::new()),
                ],
            )
            .await
        };
        let distributed = match (
            std::env::var("TALLY_TEST_KAFKA")
                .ok()
                .filter(|_| !only_embedded)
                .ok_or(()),
            std::env::var("TALLY_TEST_CLICKHOUSE"),
            std::env::var("TALLY_TEST_POSTGRES"),
        ) {
            (Ok(k), Ok(ch), Ok(pg)) => {
                let ns = format!("bench_market_{}", std::process::id());
                let figures = run(
                    &source,
                    vec![
                        ("TALLY_LOG_URL", format!("kafka://{k}")),
                        ("TALLY_ANALYTICS_URL", ch.clone()),
                        ("TALLY_METADATA_URL", pg.clone()),
                        ("TALLY_NAMESPACE", ns.clone()),
                    ],
                )
                .await;
                drop_stores(&pg, &ch, &ns).await;
                Some(figures)
            }
            _ => None,
        };
        println!(
            "\nTally marketplace benchmark (loopback, generator on the same machine, cores: {})",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        println!(
            "{:<52} {:>18} {:>22}",
            "figure", "embedded", "kafka+clickhouse+pg"
        );
        let rows = embedded
            .0
            .len()
            .max(distributed.as_ref().map_or(0, |d| d.0.len()));
        for i in 0..rows {
            let cell = |f: Option<&Figures>| f.and_then(|f| f.0.get(i)).cloned();
            let (e, d) = (cell(Some(&embedded)), cell(distributed.as_ref()));
            let label = e
                .as_ref()
                .or(d.as_ref())
                .map(|x| x.0.clone())
                .unwrap_or_default();
            let value = |x: Option<(String, String)>| x.map_or("not run".to_string(), |x| x.1);
            println!("{label:<52} {:>18} {:>22}", value(e), value(d));
        }
    });
}
