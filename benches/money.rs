//! Criterion micro-benchmarks of the money store alone (no HTTP, no source): one hold and its
//! settlement, one call at a time, on the embedded SQLite store and (with
//! `TALLY_TEST_POSTGRES` set) on Postgres. The floor under `/analyze`'s added latency.

use criterion::{criterion_group, criterion_main, Criterion};
use projections::{Hold, MoneyStore, Settle};
use std::sync::atomic::{AtomicU64, Ordering};

fn hold(n: u64) -> Hold {
    Hold {
        execution_id: format!("bench-{}-{n}", std::process::id()),
        buyer_company_id: "buyer".into(),
        seller_company_id: "seller".into(),
        platform_company_id: "platform".into(),
        asset_id: "asset".into(),
        api_key_id: 1,
        user_id: "user".into(),
        cost: 2,
        seller_share: 1,
        platform_fee: 1,
        at_ms: 1,
    }
}

fn settle(n: u64) -> Settle {
    Settle {
        execution_id: hold(n).execution_id,
        succeeded: true,
        rows: 1,
        duration_ms: 0.1,
        at_ms: 2,
    }
}

fn run(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: &dyn MoneyStore) {
    rt.block_on(store.top_up("buyer", 1 << 40, None, name, "bench", 0))
        .unwrap_or_else(|e| panic!("top up: {e}"));
    let next = AtomicU64::new(0);
    c.bench_function(&format!("hold_then_settle_{name}"), |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                store
                    .hold(&hold(n))
                    .await
                    .unwrap_or_else(|e| panic!("hold: {e}"));
                store
                    .settle_batch(&[settle(n)])
                    .await
                    .unwrap_or_else(|e| panic!("settle: {e}"))
            })
        })
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("rt: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let sqlite = rt
        .block_on(projections::SqliteMetadata::open(&dir.path().join("m.db")))
        .unwrap_or_else(|e| panic!("sqlite: {e}"));
    run(c, "sqlite", &rt, &sqlite);
    if let Ok(url) = std::env::var("TALLY_TEST_POSTGRES") {
        let ns = format!("bench_money_{}", std::process::id());
        let pg = rt
            .block_on(projections::PgMetadata::open(&url, &ns))
            .unwrap_or_else(|e| panic!("postgres: {e}"));
        run(c, "postgres", &rt, &pg);
        let _ = rt.block_on(pg.drop_namespace(&ns));
    }
}

criterion_group!(money, benches);
criterion_main!(money);
