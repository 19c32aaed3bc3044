//! The money path's background work in every process that serves ingest:
//! - the outbox relay puts each committed money movement (`UsageRecorded` on `tally.usage`,
//!   `LedgerEntryPosted` on `tally.billing`) on the log in commit order, then removes it from
//!   the outbox. Records are claimed with a lease, so several relays never publish the same
//!   record together. **Exactly once across a crash:** before appending, the relay notes where
//!   each topic's log ended; a relay that takes over records of a dead one (after the lease)
//!   reads the log from that point and marks the records it finds there published instead of
//!   appending them again. Records carry unique ids (execution, ledger entry), so a payload on
//!   the log is that record.
//! - the sweeper refunds holds that were never settled (their process died while the source
//!   ran): after the execution timeout plus a margin, such a hold cannot still be running.

use eventlog::{EventLog, OutRecord, Position};
use projections::{MoneyStore, OutboxRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BATCH: usize = 500;
/// How long a takeover may spend reading the log back before it gives up (and retries).
const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub namespace: String,
    /// A claim older than this is taken over by another relay (`TALLY_OUTBOX_LEASE_MS`).
    pub lease_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fault-injection point for crash tests: with `TALLY_FAULT_INJECT` set to `point`, the
/// process dies on the spot (abort: no destructor, no flush), as a SIGKILL there would.
fn fault_point(point: &str) {
    if std::env::var("TALLY_FAULT_INJECT").is_ok_and(|v| v == point) {
        tracing::error!(point, "TALLY_FAULT_INJECT: dying here");
        std::process::abort();
    }
}

/// `{"partition": next_offset}` of a topic's end.
fn positions_json(end: &[Position]) -> String {
    let map: BTreeMap<String, u64> = end
        .iter()
        .map(|p| (p.partition.to_string(), p.next_offset))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// The earliest noted start per partition over `records` (a missing partition starts at 0).
fn earliest_start(records: &[&OutboxRecord]) -> HashMap<u32, u64> {
    let mut from: HashMap<u32, u64> = HashMap::new();
    for r in records {
        let noted: BTreeMap<String, u64> = r
            .log_from
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        for (p, o) in noted {
            if let Ok(p) = p.parse::<u32>() {
                let e = from.entry(p).or_insert(o);
                *e = (*e).min(o);
            }
        }
    }
    from
}

/// The ids of `records` (all of one topic) whose payload is on the log at or after their
/// noted start.
async fn found_on_log(
    log: &dyn EventLog,
    topic: &str,
    records: &[&OutboxRecord],
) -> anyhow::Result<Vec<String>> {
    let from = earliest_start(records);
    let end = log.end_offsets(topic).await?;
    let group = format!("tally-outbox-check-{:016x}", rand::random::<u64>());
    let mut consumer = log.sole_consumer(&group, &[topic.to_string()]).await?;
    let mut remaining: HashMap<u32, u64> = HashMap::new();
    for p in &end {
        let start = from.get(&p.partition).copied().unwrap_or(0);
        consumer
            .seek(&Position {
                topic: topic.to_string(),
                partition: p.partition,
                next_offset: start,
            })
            .await?;
        if p.next_offset > start {
            remaining.insert(p.partition, p.next_offset);
        }
    }
    let wanted: HashMap<&[u8], &str> = records
        .iter()
        .map(|r| (r.payload.as_slice(), r.id.as_str()))
        .collect();
    let mut found = HashSet::new();
    let deadline = tokio::time::Instant::now() + CHECK_DEADLINE;
    while !remaining.is_empty() && found.len() < wanted.len() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("could not read {topic} back to its end in time");
        }
        for r in consumer.poll(1000, Duration::from_millis(500)).await? {
            if let Some(id) = wanted.get(r.value.as_slice()) {
                found.insert(id.to_string());
            }
            if remaining
                .get(&r.partition)
                .is_some_and(|e| r.offset + 1 >= *e)
            {
                remaining.remove(&r.partition);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Publishes one claimed batch; returns how many records went out (or were found out).
async fn relay_once(
    money: &dyn MoneyStore,
    log: &dyn EventLog,
    cfg: &RelayConfig,
) -> anyhow::Result<usize> {
    let batch = money.claim_outbox(BATCH, now_ms(), cfg.lease_ms).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let mut by_topic: Vec<(String, Vec<&OutboxRecord>)> = Vec::new();
    for r in &batch {
        let topic = schemas::topics::qualified(&cfg.namespace, &r.topic);
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, records)) => records.push(r),
            None => by_topic.push((topic, vec![r])),
        }
    }
    let mut published: Vec<String> = Vec::new();
    for (topic, records) in by_topic {
        // Taken over from a relay that may have appended them before it died.
        let tried: Vec<&OutboxRecord> = records
            .iter()
            .copied()
            .filter(|r| r.log_from.is_some())
            .collect();
        let already: HashSet<String> = if tried.is_empty() {
            HashSet::new()
        } else {
            let found = found_on_log(log, &topic, &tried).await?;
            if !found.is_empty() {
                tracing::warn!(
                    topic,
                    records = found.len(),
                    "outbox records were already on the log; not appending them again"
                );
            }
            found.into_iter().collect()
        };
        let fresh: Vec<&OutboxRecord> = records
            .into_iter()
            .filter(|r| !already.contains(&r.id))
            .collect();
        published.extend(already);
        if fresh.is_empty() {
            continue;
        }
        let ids: Vec<String> = fresh.iter().map(|r| r.id.clone()).collect();
        let end = log.end_offsets(&topic).await?;
        money.note_attempt(&ids, &positions_json(&end)).await?;
        let out: Vec<OutRecord> = fresh
            .iter()
            .map(|r| OutRecord {
                key: r.key.as_bytes().to_vec(),
                value: r.payload.clone(),
            })
            .collect();
        log.append(&topic, out).await?;
        fault_point("outbox_after_append");
        published.extend(ids);
    }
    money.mark_published(&published, now_ms()).await?;
    metrics::counter!("tally_outbox_published_total").increment(published.len() as u64);
    Ok(published.len())
}

/// How often the relay refreshes the `tally_outbox_pending` gauge.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// Runs the relay until `stop` fires.
pub fn spawn_relay(
    money: Arc<dyn MoneyStore>,
    log: Arc<dyn EventLog>,
    cfg: RelayConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut gauged: Option<std::time::Instant> = None;
        loop {
            let pause = match relay_once(money.as_ref(), log.as_ref(), &cfg).await {
                Ok(n) if n == BATCH => Duration::ZERO,
                Ok(_) => Duration::from_millis(20),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    Duration::from_secs(1)
                }
            };
            // A count over the outbox costs a scan on Postgres (1.4 to 2.5 ms at 1,000
            // executions/s, measured): once a second is enough for a gauge, where every
            // 20 ms pass was fifty scans a second.
            if gauged.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
                gauged = Some(std::time::Instant::now());
                if let Ok(pending) = money.unpublished_count().await {
                    metrics::gauge!("tally_outbox_pending").set(pending as f64);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {
                    // Publish what is committed before stopping.
                    let _ = relay_once(money.as_ref(), log.as_ref(), &cfg).await;
                    return;
                }
            }
        }
    })
}

/// Refunds holds older than `timeout` + 30 s, every 10 s, until `stop` fires.
pub fn spawn_sweeper(
    money: Arc<dyn MoneyStore>,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let margin_ms = timeout.as_millis() as i64 + 30_000;
    tokio::spawn(async move {
        loop {
            match money.stale_holds(now_ms() - margin_ms).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::warn!(execution_id = %id, "refunding a hold that was never settled");
                        if let Err(e) = money.settle(&id, false, 0, 0.0, now_ms()).await {
                            tracing::warn!(error = %e, execution_id = %id, "refund failed; retrying later");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for unsettled holds"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
