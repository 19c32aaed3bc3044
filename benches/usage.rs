//! The reads and decisions over metered usage, measured at the store (no HTTP; the routes add
//! only their JSON): a rate-limit decision (a concurrency slot, the minute, day and month
//! counters, the slot given back) in memory and on Postgres; and, over `TALLY_BENCH_USAGE_ROWS`
//! (default 1,000,000) metered executions of one seller, the seller `dashboard` (its six
//! grouped reads), `metrics` (its two) and a buyer's `requests/usage` month, on DuckDB and (with
//! `TALLY_TEST_CLICKHOUSE`) ClickHouse. Prints p50/p95/p99 in milliseconds.
//!
//! `cargo bench --bench usage` (set `TALLY_TEST_POSTGRES` / `TALLY_TEST_CLICKHOUSE` for the
//! distributed stores).

use projections::limits::{fixed, LimitStore, MemoryLimits};
use projections::seller::{Bucket, Segment, SellerGroup, SellerQuery};
use projections::{StoredOffset, UsageQuery, UsageRow, UsageStore};
use std::time::Instant;

const DAY_MS: i64 = 86_400_000;
/// 2026-09-01T00:00:00Z: the data covers the 90 days after it.
const START_MS: i64 = 1_788_220_800_000;

fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    (at(0.50), at(0.95), at(0.99))
}

fn print(name: &str, samples: Vec<f64>) {
    let n = samples.len();
    let (p50, p95, p99) = percentiles(samples);
    println!("{name:<44} n={n:<6} p50={p50:>8.3} ms  p95={p95:>8.3} ms  p99={p99:>8.3} ms");
}

async fn limit_decisions(name: &str, store: &dyn LimitStore, n: usize) {
    let mut samples = Vec::with_capacity(n);
    let now = START_MS;
    for i in 0..n {
        let t = Instant::now();
        let lease = format!("lease-{i}");
        let key = format!("bench-key-{}", i % 50);
        let got = store
            .acquire(&format!("{key}:concurrent"), &lease, 5, now, now + 60_000)
            .await
            .unwrap_or_else(|e| panic!("acquire: {e}"));
        assert!(got, "a slot");
        let counters = [
            fixed(format!("{key}:minute"), now, 60_000, u64::MAX / 2),
            fixed(format!("{key}:day"), now, DAY_MS, u64::MAX / 2),
            fixed(
                format!("company-{}:month", i % 50),
                now,
                30 * DAY_MS,
                u64::MAX / 2,
            ),
        ];
        let taken = store
            .take(&counters, now)
            .await
            .unwrap_or_else(|e| panic!("take: {e}"));
        assert!(taken.is_some(), "under the limits");
        store
            .release(&lease)
            .await
            .unwrap_or_else(|e| panic!("release: {e}"));
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    print(&format!("rate-limit decision ({name})"), samples);
}

/// Execution `i` of the data set: one seller, 20 assets, 500 buyers (buyer `b0` a fifth of
/// all calls), one in twenty failing, spread evenly over 90 days.
fn row(i: u64, total: u64) -> UsageRow {
    let buyer = if i % 5 == 0 { 0 } else { i % 499 + 1 };
    let ok = i % 20 != 0;
    UsageRow {
        execution_id: format!("x{i}"),
        buyer_company_id: format!("b{buyer}"),
        seller_company_id: "seller".into(),
        asset_id: format!("asset-{}", i % 20),
        api_key_id: (buyer * 3 + i % 3) as i64,
        user_id: format!("u{buyer}"),
        credits: if ok { 25 } else { 0 },
        seller_credits: if ok { 21 } else { 0 },
        rows: 10,
        duration_ms: (i % 97) as f64,
        status: if ok { "succeeded" } else { "failed" }.into(),
        mode: "live".into(),
        at_ms: START_MS + (i as i128 * 90 * DAY_MS as i128 / total as i128) as i64,
    }
}

async fn load(store: &dyn UsageStore, total: u64) {
    let t = Instant::now();
    let batch = 50_000;
    let mut i = 0;
    while i < total {
        let rows: Vec<UsageRow> = (i..(i + batch).min(total)).map(|j| row(j, total)).collect();
        i += rows.len() as u64;
        let offsets = vec![StoredOffset {
            topic: "tally.usage".into(),
            partition: 0,
            next_offset: i,
        }];
        store
            .write_usage("bench", rows, offsets)
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
    }
    println!(
        "loaded {total} metered executions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

fn ok<T>(r: Result<T, projections::StoreError>) -> T {
    r.unwrap_or_else(|e| panic!("read: {e}"))
}

async fn timed<F: std::future::Future<Output = ()>>(
    n: usize,
    mut f: impl FnMut() -> F,
) -> Vec<f64> {
    f().await; // warm
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out
}

/// The local midnight that starts the UTC date `day` days after `START_MS`: the routes take a
/// range of local dates, so their reads start and end there.
fn local_midnight(tz: chrono_tz::Tz, day: i64) -> i64 {
    use chrono::TimeZone;
    let date = chrono::DateTime::from_timestamp_millis(START_MS + day * DAY_MS)
        .unwrap_or_default()
        .date_naive();
    tz.from_local_datetime(&date.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .map_or(START_MS + day * DAY_MS, |t| t.timestamp_millis())
}

async fn reads(name: &str, store: &dyn UsageStore, runs: usize) {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::UTC);
    // The dashboard's default: the last 30 days of the data, by day, in the seller's zone
    // (across the October change).
    let (from, to) = (local_midnight(tz, 60), local_midnight(tz, 90));
    let q = SellerQuery {
        seller_company_id: "seller".into(),
        from_ms: from,
        to_ms: to,
        tz: projections::offset_segments(tz, from, to),
    };
    let group = |period, by| SellerGroup { period, by };
    // The route runs its six reads together (`ingest/src/market/seller.rs`), and so does this.
    let dashboard = timed(runs, || async {
        let (a, b, c, d, e, f) = tokio::join!(
            store.seller_rows(&q, group(None, None)),
            store.seller_new_buyers(&q, None),
            store.seller_rows(&q, group(Some(Bucket::Day), None)),
            store.seller_new_buyers(&q, Some(Bucket::Day)),
            store.seller_rows(&q, group(None, Some(Segment::Asset))),
            store.seller_rows(&q, group(None, Some(Segment::Buyer))),
        );
        ok(a);
        ok(b);
        ok(c);
        ok(d);
        ok(e);
        ok(f);
    })
    .await;
    print(&format!("seller dashboard ({name})"), dashboard);
    // Each of its reads alone, to show where the time goes.
    let parts: [(&str, Option<Bucket>, Option<Segment>); 4] = [
        ("total", None, None),
        ("by day", Some(Bucket::Day), None),
        ("by asset", None, Some(Segment::Asset)),
        ("by buyer", None, Some(Segment::Buyer)),
    ];
    for (part, period, by) in parts {
        let samples = timed(runs, || async {
            ok(store.seller_rows(&q, group(period, by)).await);
        })
        .await;
        print(&format!("  dashboard read: {part} ({name})"), samples);
    }
    for (part, period) in [
        ("new buyers", None),
        ("new buyers by day", Some(Bucket::Day)),
    ] {
        let samples = timed(runs, || async {
            ok(store.seller_new_buyers(&q, period).await);
        })
        .await;
        print(&format!("  dashboard read: {part} ({name})"), samples);
    }
    let all = SellerQuery::all_time("seller");
    let metrics = timed(runs, || async {
        let (a, b) = tokio::join!(
            store.seller_rows(&all, group(None, None)),
            store.seller_rows(&all, group(None, Some(Segment::Asset))),
        );
        ok(a);
        ok(b);
    })
    .await;
    print(&format!("seller metrics ({name})"), metrics);
    // b0's busiest month (a fifth of all executions fall to it).
    let (from, to) = (local_midnight(tz, 30), local_midnight(tz, 60));
    let uq = UsageQuery {
        buyer_company_id: "b0".into(),
        api_key_id: None,
        from_ms: from,
        to_ms: to,
        mode: "live".into(),
        tz: projections::offset_segments(tz, from, to),
    };
    let usage = timed(runs, || async {
        store
            .usage_report(&uq)
            .await
            .unwrap_or_else(|e| panic!("usage: {e}"));
    })
    .await;
    print(&format!("requests/usage month ({name})"), usage);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("rt: {e}"));
    let total: u64 = std::env::var("TALLY_BENCH_USAGE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs = 30;
    rt.block_on(async {
        limit_decisions("memory", &MemoryLimits::default(), 20_000).await;
        if let Ok(url) = std::env::var("TALLY_TEST_POSTGRES") {
            let ns = format!("bench_usage_{}", std::process::id());
            let pg = projections::PgMetadata::open(&url, &ns)
                .await
                .unwrap_or_else(|e| panic!("postgres: {e}"));
            limit_decisions("postgres", &pg, 3_000).await;
            let _ = pg.drop_namespace(&ns).await;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let duck = projections::DuckAnalytics::open(&dir.path().join("u.duckdb"), "2GB")
            .unwrap_or_else(|e| panic!("duckdb: {e}"));
        load(&duck, total).await;
        reads("duckdb", &duck, runs).await;
        if let Ok(url) = std::env::var("TALLY_TEST_CLICKHOUSE") {
            let ns = format!("bench_usage_{}", std::process::id());
            let ch = projections::ClickHouseAnalytics::open(&url, &ns)
                .await
                .unwrap_or_else(|e| panic!("clickhouse: {e}"));
            load(&ch, total).await;
            let t = std::time::Instant::now();
            ch.settle(std::time::Duration::from_secs(120))
                .await
                .unwrap_or_else(|e| panic!("settle: {e}"));
            println!(
                "clickhouse merges settled in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            reads("clickhouse", &ch, runs).await;
            let _ = ch.drop_namespace().await;
        }
    });
}
