//! The conformance suite every `EventLog` backend must pass: per-key order, durability across
//! reopen, resume from the committed offset, no loss or duplication across a consumer restart,
//! partitions shared within a group. Backends call [`run_all`] from their own tests.

use crate::{Consumer, EventLog, OutRecord, Position, Record};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How a backend's test opens handles onto one shared storage.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new handle onto the same storage (for the embedded log: reopen the directory).
    async fn open(&self) -> Arc<dyn EventLog>;
    /// A topic name unique to this run.
    fn topic(&self, name: &str) -> String;
}

/// Runs every conformance check.
pub async fn run_all(h: &dyn Harness) {
    per_key_order(h).await;
    durable_across_reopen(h).await;
    resume_from_committed(h).await;
    no_loss_or_duplicate_across_restart(h).await;
    group_members_share_partitions(h).await;
    end_offsets_track_appends(h).await;
}

fn rec(key: &str, value: String) -> OutRecord {
    OutRecord {
        key: key.as_bytes().to_vec(),
        value: value.into_bytes(),
    }
}

/// Polls until `want` records arrived (or panics after a generous deadline).
pub async fn drain(c: &mut dyn Consumer, want: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: got {} of {want} records",
            out.len()
        );
        out.extend(
            c.poll(want - out.len(), Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

/// Asserts nothing more arrives within a short wait.
async fn assert_quiet(c: &mut dyn Consumer) {
    let extra = c.poll(100, Duration::from_millis(500)).await.expect("poll");
    assert!(
        extra.is_empty(),
        "unexpected extra records: {}",
        extra.len()
    );
}

fn positions_after(records: &[Record]) -> Vec<Position> {
    let mut next: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for r in records {
        let e = next.entry((r.topic.clone(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect()
}

async fn setup(h: &dyn Harness, name: &str, partitions: u32) -> (Arc<dyn EventLog>, String) {
    let log = h.open().await;
    let topic = h.topic(name);
    log.create_topic(&topic, partitions)
        .await
        .expect("create topic");
    (log, topic)
}

async fn per_key_order(h: &dyn Harness) {
    let (log, topic) = setup(h, "order", 4).await;
    let keys: Vec<String> = (0..10).map(|k| format!("key-{k}")).collect();
    let mut tasks = Vec::new();
    for k in keys.clone() {
        let (log, topic) = (log.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for chunk in 0..5 {
                let batch = (0..10)
                    .map(|i| rec(&k, format!("{}", chunk * 10 + i)))
                    .collect();
                log.append(&topic, batch).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let mut c = log
        .consumer("order-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let got = drain(c.as_mut(), 500).await;
    let mut per_key: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    let mut partition_of: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for r in &got {
        let v: u32 = String::from_utf8_lossy(&r.value).parse().expect("number");
        per_key.entry(r.key.clone()).or_default().push(v);
        let p = *partition_of.entry(r.key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "one key, one partition");
    }
    for k in &keys {
        let seen = &per_key[k.as_bytes()];
        assert_eq!(seen, &(0..50).collect::<Vec<u32>>(), "order of {k}");
    }
    assert_quiet(c.as_mut()).await;
}

async fn durable_across_reopen(h: &dyn Harness) {
    let (log, topic) = setup(h, "durable", 2).await;
    let appended = log
        .append(
            &topic,
            (0..100)
                .map(|i| rec(&format!("k{i}"), format!("v{i}")))
                .collect(),
        )
        .await
        .expect("append");
    assert_eq!(appended.len(), 100);
    drop(log);
    let log = h.open().await;
    let mut c = log
        .consumer("durable-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let got = drain(c.as_mut(), 100).await;
    let values: HashSet<Vec<u8>> = got.into_iter().map(|r| r.value).collect();
    assert_eq!(values.len(), 100);
}

async fn resume_from_committed(h: &dyn Harness) {
    let (log, topic) = setup(h, "resume", 1).await;
    log.append(&topic, (0..100).map(|i| rec("k", format!("{i}"))).collect())
        .await
        .expect("append");
    let mut c = log
        .consumer("resume-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let first = drain(c.as_mut(), 50).await;
    let first: Vec<Record> = first.into_iter().take(50).collect();
    c.commit(&positions_after(&first)).await.expect("commit");
    drop(c);
    let mut c = log
        .consumer("resume-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let rest = drain(c.as_mut(), 50).await;
    assert_eq!(rest.first().map(|r| r.value.clone()), Some(b"50".to_vec()));
    assert_eq!(rest.last().map(|r| r.value.clone()), Some(b"99".to_vec()));
    assert_quiet(c.as_mut()).await;
}

async fn no_loss_or_duplicate_across_restart(h: &dyn Harness) {
    let (log, topic) = setup(h, "restart", 3).await;
    log.append(
        &topic,
        (0..300)
            .map(|i| rec(&format!("k{}", i % 7), format!("{i}")))
            .collect(),
    )
    .await
    .expect("append");
    let mut seen = Vec::new();
    {
        let mut c = log
            .consumer("restart-group", std::slice::from_ref(&topic))
            .await
            .expect("consumer");
        while seen.len() < 120 {
            let batch = c.poll(40, Duration::from_millis(200)).await.expect("poll");
            c.commit(&positions_after(&batch)).await.expect("commit");
            seen.extend(batch);
        }
    }
    drop(log);
    let log = h.open().await;
    let mut c = log
        .consumer("restart-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let rest = drain(c.as_mut(), 300 - seen.len()).await;
    seen.extend(rest);
    let values: HashSet<Vec<u8>> = seen.iter().map(|r| r.value.clone()).collect();
    assert_eq!(seen.len(), 300, "no duplicates");
    assert_eq!(values.len(), 300, "no loss");
    assert_quiet(c.as_mut()).await;
}

async fn group_members_share_partitions(h: &dyn Harness) {
    let (log, topic) = setup(h, "group", 4).await;
    let mut a = log
        .consumer("shared-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer a");
    let mut b = log
        .consumer("shared-group", std::slice::from_ref(&topic))
        .await
        .expect("consumer b");
    // Both members poll until the group settles: every partition owned by exactly one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "group never settled"
        );
        a.poll(10, Duration::from_millis(100))
            .await
            .expect("poll a");
        b.poll(10, Duration::from_millis(100))
            .await
            .expect("poll b");
        let (own_a, own_b) = (a.assignment(), b.assignment());
        let mut all: Vec<_> = own_a.iter().chain(own_b.iter()).cloned().collect();
        all.sort();
        all.dedup();
        if !own_a.is_empty()
            && !own_b.is_empty()
            && all.len() == 4
            && own_a.len() + own_b.len() == 4
        {
            break;
        }
    }
    log.append(
        &topic,
        (0..400)
            .map(|i| rec(&format!("k{i}"), format!("{i}")))
            .collect(),
    )
    .await
    .expect("append");
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got_a.len() + got_b.len() < 400 && tokio::time::Instant::now() < deadline {
        let ra = a
            .poll(100, Duration::from_millis(100))
            .await
            .expect("poll a");
        a.commit(&positions_after(&ra)).await.expect("commit a");
        got_a.extend(ra);
        let rb = b
            .poll(100, Duration::from_millis(100))
            .await
            .expect("poll b");
        b.commit(&positions_after(&rb)).await.expect("commit b");
        got_b.extend(rb);
    }
    let parts_a: HashSet<u32> = got_a.iter().map(|r| r.partition).collect();
    let parts_b: HashSet<u32> = got_b.iter().map(|r| r.partition).collect();
    assert!(
        !parts_a.is_empty() && !parts_b.is_empty(),
        "both members get work"
    );
    assert!(
        parts_a.is_disjoint(&parts_b),
        "a partition is owned by one member"
    );
    let all: HashSet<Vec<u8>> = got_a
        .iter()
        .chain(got_b.iter())
        .map(|r| r.value.clone())
        .collect();
    assert_eq!(got_a.len() + got_b.len(), 400);
    assert_eq!(all.len(), 400);
}

async fn end_offsets_track_appends(h: &dyn Harness) {
    let (log, topic) = setup(h, "ends", 2).await;
    let appended = log
        .append(
            &topic,
            (0..10).map(|i| rec(&format!("k{i}"), "v".into())).collect(),
        )
        .await
        .expect("append");
    let ends = log.end_offsets(&topic).await.expect("ends");
    let total: u64 = ends.iter().map(|p| p.next_offset).sum();
    assert_eq!(total, 10);
    for a in appended {
        let end = ends
            .iter()
            .find(|p| p.partition == a.partition)
            .map(|p| p.next_offset)
            .unwrap_or(0);
        assert!(a.offset < end);
    }
}

pub use schemas::testenv::{service_url, unique_prefix};
