//! Criterion micro-benchmarks of the per-event hot path: Avro encode/decode, enrichment, user
//! agent parsing, sessionization, partitioning.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use processors::enrich::{enrich, parse_user_agent};
use processors::session::Sessionizer;
use schemas::{CollectedEvent, EnrichedEvent};

fn sample() -> CollectedEvent {
    CollectedEvent {
        event_id: "0193a5b0-7e4f-7000-8000-000000000001".into(),
        website_id: "6f1c2b7e-1111-4222-8333-444455556666".into(),
        received_at_ms: 1_700_000_000_000,
        timestamp_ms: 1_700_000_000_000,
        event_type: "pageview".into(),
        url: "https://example.com/pricing?utm_source=newsletter&utm_medium=email".into(),
        referrer: Some("https://www.google.com/search?q=tally".into()),
        screen: Some("1920x1080".into()),
        language: Some("en-US".into()),
        visitor_id: "0123456789abcdef".into(),
        user_agent: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".into()),
        country: Some("DE".into()),
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let raw = sample();
    let encoded = schemas::encode(&raw).unwrap_or_default();
    let ua = parse_user_agent(raw.user_agent.as_deref().unwrap_or(""));
    let enriched: EnrichedEvent = enrich(raw.clone(), &ua);
    let enriched_bytes = schemas::encode(&enriched).unwrap_or_default();

    c.bench_function("avro_encode_collected", |b| {
        b.iter(|| schemas::encode(black_box(&raw)))
    });
    // The generic apache-avro path (value tree + schema resolution), for the ratio.
    c.bench_function("avro_encode_collected_generic", |b| {
        b.iter(|| schemas::encode_with(2, black_box(&raw)))
    });
    c.bench_function("avro_decode_collected", |b| {
        b.iter(|| schemas::decode::<CollectedEvent>(black_box(&encoded)))
    });
    c.bench_function("avro_decode_enriched", |b| {
        b.iter(|| schemas::decode::<EnrichedEvent>(black_box(&enriched_bytes)))
    });
    c.bench_function("parse_user_agent_uncached", |b| {
        b.iter(|| parse_user_agent(black_box(raw.user_agent.as_deref().unwrap_or(""))))
    });
    c.bench_function("enrich_with_cached_ua", |b| {
        b.iter(|| enrich(black_box(raw.clone()), &ua))
    });
    let mut sessions = Sessionizer::new();
    let mut i: u64 = 0;
    c.bench_function("sessionize_100k_visitors", |b| {
        b.iter(|| {
            i += 1;
            sessions.assign("site", i % 100_000, (i * 1000) as i64, i as u128)
        })
    });
    c.bench_function("partition_for_key", |b| {
        b.iter(|| eventlog::partition_for(black_box(b"site:0123456789abcdef"), 4))
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
