//! The load benchmark: starts the real `tally serve` on loopback (embedded backends) and prints
//! the figures the spine issue asks for, next to the req/s of a bare axum handler that answers
//! 202 with no work (the machine's HTTP ceiling with this load generator), measured in the same
//! run. Bounded in time; targets 127.0.0.1 only.
//!
//! Traffic model: 100,000 visitors with up to 3 visits each over the last 30 days (events
//! within a visit minutes apart), 300 pages, six user agents (one a crawler), five countries.
//!
//! `cargo bench --bench load`. Knobs: `TALLY_BENCH_PHASE_SECS` (default 10) for the short
//! phases, `TALLY_BENCH_STORED_SECS` (default 60) for the sustained stored-rate phase.

#[path = "../tests/e2e/common.rs"]
mod common;

use bytes::Bytes;
use common::{free_port, Client, GEO};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONNS: usize = 32;
const VISITORS: u64 = 100_000;
const PAGES: u64 = 300;
const UAS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://t.co/x",
    "",
    "",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A request body with the client IP and user agent it is sent with.
#[derive(Clone)]
struct Req {
    body: Bytes,
    ip: String,
    ua: &'static str,
}

/// Sessions per visitor over the 30 days: a visitor's events cluster into a few visits.
const SESSIONS_PER_VISITOR: u64 = 3;

/// When visitor `v`'s visit `k` started, spread over the last 30 days.
fn session_start(v: u64, k: u64, now_ms: i64) -> i64 {
    let mut h = Rng(v.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k + 1));
    h.next();
    now_ms - 3_600_000 - (h.next() % (29 * 86_400_000)) as i64
}

/// One pageview by visitor `v` at `ts_ms`, on one of 300 pages, from one of a few referrers.
fn event(rng: &mut Rng, site: &str, v: u64, ts_ms: i64) -> Value {
    let page = rng.next() % PAGES;
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339();
    let mut e = json!({
        "website_id": site,
        "url": format!("https://example.com/page/{page}?utm_source=src{}", rng.next() % 5),
        "visitor_id": format!("visitor-{v}"),
        "timestamp": ts,
        "screen": "1920x1080",
        "language": "en-US",
    });
    let r = REFERRERS[(rng.next() % REFERRERS.len() as u64) as usize];
    if !r.is_empty() {
        e["referrer"] = json!(r);
    }
    e
}

/// Pre-built bodies with realistic variety, so the generator spends its time sending.
fn bodies(site: &str, batch: usize, n: usize, seed: u64) -> Arc<Vec<Req>> {
    let mut rng = Rng(seed);
    let now = chrono::Utc::now().timestamp_millis();
    let out = (0..n)
        .map(|_| {
            // A request comes from one visitor, during one of their visits; a batch holds that
            // visitor's events, 30 seconds apart.
            let v = rng.next() % VISITORS;
            let start = session_start(v, rng.next() % SESSIONS_PER_VISITOR, now)
                + (rng.next() % 600_000) as i64;
            let body = if batch == 1 {
                event(&mut rng, site, v, start)
            } else {
                Value::Array(
                    (0..batch)
                        .map(|j| event(&mut rng, site, v, start + j as i64 * 30_000))
                        .collect(),
                )
            };
            let net = GEO[(rng.next() % GEO.len() as u64) as usize].0;
            let ip = net
                .split('/')
                .next()
                .unwrap_or("127.0.0.1")
                .replace(".0", &format!(".{}", 1 + rng.next() % 200));
            Req {
                body: Bytes::from(body.to_string()),
                ip,
                ua: UAS[(rng.next() % UAS.len() as u64) as usize],
            }
        })
        .collect();
    Arc::new(out)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default()
}

async fn send(client: &reqwest::Client, url: &str, r: &Req) -> bool {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", &r.ip)
        .header("user-agent", r.ua)
        .body(r.body.clone())
        .send()
        .await;
    match resp {
        Ok(resp) => {
            let ok = resp.status().as_u16() == 202;
            let _ = resp.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

struct LoopResult {
    ok: u64,
    failed: u64,
    secs: f64,
    hist: Histogram<u64>,
}

/// `CONNS` connections, each sending as fast as answers come back, for `dur`.
async fn closed_loop(
    url: &str,
    reqs: Arc<Vec<Req>>,
    dur: Duration,
    counter: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> LoopResult {
    let client = http();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for t in 0..CONNS {
        let (client, url, reqs, counter) = (
            client.clone(),
            url.to_string(),
            reqs.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
            let (mut ok, mut failed, mut i) = (0u64, 0u64, t);
            while Instant::now() < deadline {
                let r = &reqs[i % reqs.len()];
                i += CONNS;
                let t0 = Instant::now();
                if send(&client, &url, r).await {
                    ok += 1;
                    if let Some(c) = &counter {
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                } else {
                    failed += 1;
                }
                let _ = hist.record(t0.elapsed().as_micros() as u64);
            }
            (ok, failed, hist)
        }));
    }
    let mut total = LoopResult {
        ok: 0,
        failed: 0,
        secs: 0.0,
        hist: Histogram::new(3).unwrap_or_else(|_| unreachable!()),
    };
    for t in tasks {
        if let Ok((ok, failed, hist)) = t.await {
            total.ok += ok;
            total.failed += failed;
            let _ = total.hist.add(hist);
        }
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// Sends at a fixed rate regardless of answers; latency counts from the scheduled send time.
async fn open_loop(url: &str, reqs: Arc<Vec<Req>>, rate: u64, dur: Duration) -> LoopResult {
    let client = http();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!()),
    ));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let n = rate * dur.as_secs();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let scheduled = tick.tick().await;
        let (client, url, reqs, hist, failed) = (
            client.clone(),
            url.to_string(),
            reqs.clone(),
            hist.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ok = send(&client, &url, &reqs[i as usize % reqs.len()]).await;
            if !ok {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Ok(mut h) = hist.lock() {
                let _ = h.record(scheduled.elapsed().as_micros() as u64);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    let hist = hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
    LoopResult {
        ok: n - failed,
        failed,
        secs: start.elapsed().as_secs_f64(),
        hist,
    }
}

/// The ceiling: a bare axum handler answering 202 with Tally's body, on its own 2-worker runtime.
fn start_bare() -> std::net::SocketAddr {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("rt: {e}"));
        rt.block_on(async move {
            let _ = listener.set_nonblocking(true);
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|e| panic!("listener: {e}"));
            let app = axum::Router::new().route(
                "/api/collect",
                axum::routing::post(|_body: Bytes| async {
                    (
                        axum::http::StatusCode::ACCEPTED,
                        axum::Json(json!({"ok": true})),
                    )
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn backlog(c: &Client) -> u64 {
    let (_, h) = c.get("/api/health").await;
    h["backlog"]["enrich"].as_u64().unwrap_or(0) + h["backlog"]["analytics"].as_u64().unwrap_or(0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

async fn query_p50(c: &Client, path: &str, n: usize) -> f64 {
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for _ in 0..n {
        let t0 = Instant::now();
        let (s, body) = c.get(path).await;
        assert_eq!(s, 200, "{body}");
        let _ = hist.record(t0.elapsed().as_micros() as u64);
    }
    ms(hist.value_at_quantile(0.5))
}

/// Markers sent one by one to a separate website; each one's lag is the time from its 202 until
/// the dashboard counts it.
async fn lag(c: &Client, site: &str, markers: usize) -> (f64, f64) {
    let today = chrono::Utc::now().date_naive();
    let stats = format!(
        "/api/websites/{site}/stats?include_bots=true&timezone=UTC&start_date={}&end_date={}",
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1)
    );
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for i in 0..markers {
        let r = c
            .post(
                "/api/collect",
                &json!({"website_id": site, "url": format!("/marker/{i}"), "visitor_id": "marker"}),
            )
            .await;
        assert_eq!(r.0, 202, "{}", r.1);
        let acked = Instant::now();
        loop {
            let (_, s) = c.get(&stats).await;
            if s["data"]["pageviews"].as_u64().unwrap_or(0) > i as u64 {
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = hist.record(acked.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.95)),
    )
}

/// Events stored for `site` over the last 31 days (every bench event is a pageview).
async fn stored_count(c: &Client, site: &str) -> u64 {
    let today = chrono::Utc::now().date_naive();
    let range = format!(
        "start_date={}&end_date={today}&timezone=UTC",
        today - chrono::Duration::days(31)
    );
    let (_, totals) = c
        .get(&format!(
            "/api/websites/{site}/stats?{range}&include_bots=true"
        ))
        .await;
    totals["data"]["pageviews"].as_u64().unwrap_or(0)
}

/// Dashboard query latency over the last 30 days: (stats p50, metrics?type=page p50).
async fn query_latency(c: &Client, site: &str) -> (f64, f64) {
    let today = chrono::Utc::now().date_naive();
    let range = format!(
        "start_date={}&end_date={today}&timezone=UTC",
        today - chrono::Duration::days(30)
    );
    let stats = query_p50(c, &format!("/api/websites/{site}/stats?{range}"), 50).await;
    let pages = query_p50(
        c,
        &format!("/api/websites/{site}/metrics?type=page&{range}"),
        50,
    )
    .await;
    (stats, pages)
}

/// The contract's newer dashboard reads over the last 30 days, p50 ms each: sessions?limit=50,
/// metrics?type=page with the previous period's comparison, a 4-step funnel's results,
/// weekly retention over 8 periods, and the journey after a page.
struct NewerReads {
    sessions: f64,
    compared: f64,
    funnel: f64,
    retention: f64,
    journey: f64,
}

async fn newer_query_latency(c: &Client, site: &str) -> NewerReads {
    let today = chrono::Utc::now().date_naive();
    let range = format!(
        "start_date={}&end_date={today}&timezone=UTC",
        today - chrono::Duration::days(30)
    );
    let steps: Vec<Value> = (1..=4)
        .map(|i| json!({"step_type": "page_view", "match_value": format!("/page/{i}")}))
        .collect();
    let (status, funnel) = c
        .post(
            &format!("/api/websites/{site}/funnels"),
            &json!({"name": "Bench", "steps": steps}),
        )
        .await;
    assert_eq!(status, 201, "{funnel}");
    let funnel_id = funnel["data"]["id"].as_str().unwrap_or("").to_string();
    let p50 = |path: String| async move { query_p50(c, &path, 50).await };
    NewerReads {
        sessions: p50(format!("/api/websites/{site}/sessions?limit=50&{range}")).await,
        compared: p50(format!(
            "/api/websites/{site}/metrics?type=page&compare_mode=previous_period&{range}"
        ))
        .await,
        funnel: p50(format!(
            "/api/websites/{site}/funnels/{funnel_id}/results?{range}"
        ))
        .await,
        retention: p50(format!(
            "/api/websites/{site}/retention?cohort_granularity=week&max_periods=8&{range}"
        ))
        .await,
        journey: p50(format!(
            "/api/websites/{site}/journey?anchor_type=page&anchor_value=/page/1&{range}"
        ))
        .await,
    }
}

/// One backend set's figures, as (label, value) rows in print order.
type Figures = Vec<(String, String)>;

/// Runs every phase against a fresh `tally serve` on one backend set (`backend_env` adds the
/// URLs and namespace for the distributed one) and returns its figures.
async fn run(backend_env: Vec<(&'static str, String)>) -> Figures {
    let phase = env_secs("TALLY_BENCH_PHASE_SECS", 10);
    let stored_secs = env_secs("TALLY_BENCH_STORED_SECS", 60);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let geo = common::write_geo_db(dir.path());
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env("TALLY_DATA_DIR", dir.path().join("data"))
        .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_COLLECT_RATE_LIMIT", "0")
        .env("TALLY_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("TALLY_GEOIP_PATH", &geo)
        .env("TALLY_MAX_EVENT_AGE_HOURS", (31 * 24).to_string())
        .env("TALLY_LOG", "warn")
        .envs(backend_env)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let pid = child.id();
    let mut c = Client::new(format!("http://127.0.0.1:{port}"));
    common::wait_up(&c).await;
    c.setup().await;
    let site = c.website("Bench", "UTC").await;
    let marker_site = c.website("Markers", "UTC").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_mb(pid);
    let url = format!("{}/api/collect", c.base);
    let singles = bodies(&site, 1, 20_000, 1);
    let batches = bodies(&site, 10, 20_000, 2);

    let bare = format!("http://{}/api/collect", start_bare());
    let ceiling = closed_loop(&bare, singles.clone(), phase, None).await;
    let ceiling_rps = ceiling.ok as f64 / ceiling.secs;

    let single = closed_loop(&url, singles.clone(), phase, None).await;
    let single_rps = single.ok as f64 / single.secs;
    let rss_load_1 = rss_mb(pid);
    let batch = closed_loop(&url, batches.clone(), phase, None).await;
    let batch_eps = batch.ok as f64 * 10.0 / batch.secs;
    let fixed = open_loop(&url, singles.clone(), 1000, phase).await;
    c.wait_idle().await;

    // Top the store up to one million events, then time the dashboard queries there.
    let mut stored_1m = stored_count(&c, &site).await;
    while stored_1m < 1_000_000 {
        let secs = ((1_000_000 - stored_1m) / 30_000).clamp(1, 30);
        closed_loop(&url, batches.clone(), Duration::from_secs(secs), None).await;
        c.wait_idle().await;
        stored_1m = stored_count(&c, &site).await;
    }
    let (stats_1m, pages_1m) = query_latency(&c, &site).await;
    let newer_1m = newer_query_latency(&c, &site).await;

    // Sustained stored rate: accepted minus backlog, sampled each second for the whole phase.
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stored_at_start = accepted.load(std::sync::atomic::Ordering::Relaxed);
    let load = {
        let (url, batches, accepted) = (url.clone(), batches.clone(), accepted.clone());
        tokio::spawn(async move { closed_loop(&url, batches, stored_secs, Some(accepted)).await })
    };
    let started = Instant::now();
    let mut rss_peak = rss_load_1;
    let mut stored_end = 0u64;
    while started.elapsed() < stored_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acc = accepted.load(std::sync::atomic::Ordering::Relaxed) * 10;
        stored_end = acc.saturating_sub(backlog(&c).await);
        rss_peak = rss_peak.max(rss_mb(pid));
    }
    let sustained = load.await.unwrap_or_else(|e| panic!("load: {e}"));
    let stored_eps = (stored_end - stored_at_start) as f64 / stored_secs.as_secs_f64();
    let accepted_eps = sustained.ok as f64 * 10.0 / sustained.secs;
    let drain_started = Instant::now();
    c.wait_idle().await;
    let drain_secs = drain_started.elapsed().as_secs_f64();

    let (lag_p50, lag_p95) = lag(&c, &marker_site, 100).await;

    let stored_total = stored_count(&c, &site).await;
    let (stats_all, pages_all) = query_latency(&c, &site).await;
    let rss_after = rss_mb(pid);
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();

    let failures = single.failed + batch.failed + fixed.failed + sustained.failed;
    let mut figures: Figures = Vec::new();
    let mut row = |k: &str, v: String| figures.push((k.to_string(), v));
    row(
        "bare axum 202 handler (ceiling), req/s",
        format!("{ceiling_rps:.0}"),
    );
    row(
        "collect, single event, durable ack, req/s",
        format!("{single_rps:.0}"),
    );
    row(
        "  as % of ceiling",
        format!("{:.0}%", 100.0 * single_rps / ceiling_rps),
    );
    row(
        "  p50 / p99 latency, ms",
        format!(
            "{:.2} / {:.2}",
            ms(single.hist.value_at_quantile(0.5)),
            ms(single.hist.value_at_quantile(0.99))
        ),
    );
    row(
        "collect, batches of 10, events/s accepted",
        format!("{batch_eps:.0}"),
    );
    row(
        "collect at a fixed 1,000 req/s, p50 / p99 ms",
        format!(
            "{:.2} / {:.2}",
            ms(fixed.hist.value_at_quantile(0.5)),
            ms(fixed.hist.value_at_quantile(0.99))
        ),
    );
    row(
        &format!(
            "sustained {}s (batch-10, realistic): accepted events/s",
            stored_secs.as_secs()
        ),
        format!("{accepted_eps:.0}"),
    );
    row(
        "  stored (queryable) events/s over the same window",
        format!("{stored_eps:.0}"),
    );
    row(
        "  backlog drained after the load stopped, s",
        format!("{drain_secs:.1}"),
    );
    row(
        "accepted -> visible in stats lag, p50 / p95 ms",
        format!("{lag_p50:.1} / {lag_p95:.1}"),
    );
    row(
        "dashboard queries at N events (30 days, realistic)",
        format!("{stored_1m}"),
    );
    row("  stats p50, ms", format!("{stats_1m:.1}"));
    row("  metrics?type=page p50, ms", format!("{pages_1m:.1}"));
    row(
        "  sessions?limit=50 p50, ms",
        format!("{:.1}", newer_1m.sessions),
    );
    row(
        "  metrics?type=page, compare_mode=previous_period p50, ms",
        format!("{:.1}", newer_1m.compared),
    );
    row(
        "  funnels/{id}/results (4 steps) p50, ms",
        format!("{:.1}", newer_1m.funnel),
    );
    row(
        "  retention (weekly, 8 periods) p50, ms",
        format!("{:.1}", newer_1m.retention),
    );
    row(
        "  journey (next, depth 3) p50, ms",
        format!("{:.1}", newer_1m.journey),
    );
    row(
        "dashboard queries at the end, events",
        format!("{stored_total}"),
    );
    row("  stats p50, ms", format!("{stats_all:.1}"));
    row("  metrics?type=page p50, ms", format!("{pages_all:.1}"));
    row(
        "RSS idle / peak under load / after, MB",
        format!("{rss_idle:.0} / {rss_peak:.0} / {rss_after:.0}"),
    );
    row("failed requests (non-202)", format!("{failures}"));
    figures
}

/// The distributed backends from the same variables the tests use (`scripts/test.sh` names
/// them; `eval "$(deploy/local/services.sh start)"` gives the URLs), in a namespace of its own.
fn distributed_env() -> Option<Vec<(&'static str, String)>> {
    let kafka = std::env::var("TALLY_TEST_KAFKA").ok()?;
    let clickhouse = std::env::var("TALLY_TEST_CLICKHOUSE").ok()?;
    let postgres = std::env::var("TALLY_TEST_POSTGRES").ok()?;
    Some(vec![
        ("TALLY_LOG_URL", format!("kafka://{kafka}")),
        ("TALLY_ANALYTICS_URL", clickhouse),
        ("TALLY_METADATA_URL", postgres),
        ("TALLY_NAMESPACE", format!("bench_{}", std::process::id())),
    ])
}

fn print_side_by_side(embedded: &Figures, distributed: Option<&Figures>) {
    println!(
        "\nTally load benchmark (loopback, {CONNS} connections, generator on the same machine, cores: {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<58} {:>16} {:>22}",
        "figure", "embedded", "kafka+clickhouse+pg"
    );
    for (i, (label, value)) in embedded.iter().enumerate() {
        let other = distributed
            .and_then(|d| d.get(i))
            .map(|(_, v)| v.as_str())
            .unwrap_or("not run");
        println!("{label:<58} {value:>16} {other:>22}");
    }
    println!(
        "tracker script /s.js: {} bytes, {} bytes gzipped (limit 2048)",
        ingest::tracker::SCRIPT.len(),
        ingest::tracker::gzipped().len()
    );
    if distributed.is_none() {
        println!("(distributed column not run: set TALLY_TEST_KAFKA, TALLY_TEST_CLICKHOUSE and TALLY_TEST_POSTGRES)");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("rt: {e}"));
    rt.block_on(async {
        let embedded = run(vec![
            ("TALLY_LOG_URL", String::new()),
            ("TALLY_ANALYTICS_URL", String::new()),
            ("TALLY_METADATA_URL", String::new()),
        ])
        .await;
        let distributed = match distributed_env() {
            Some(env) => Some(run(env).await),
            None => None,
        };
        print_side_by_side(&embedded, distributed.as_ref());
    });
}
