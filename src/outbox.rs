//! The money path's background work in every process that serves ingest:
//! - the outbox relay puts each committed money movement (`UsageRecorded` on `tally.usage`,
//!   `LedgerEntryPosted` on `tally.billing`) on the log in commit order, then marks it published.
//!   Records are claimed with a lease, so several relays never publish the same record together.
//! - the sweeper refunds holds that were never settled (their process died while the source
//!   ran): after the execution timeout plus a margin, such a hold cannot still be running.

use eventlog::{EventLog, OutRecord};
use projections::MoneyStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BATCH: usize = 500;
/// A claim older than this is taken over by another relay (its holder is presumed dead).
const LEASE_MS: i64 = 30_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes one claimed batch; returns how many records went out.
async fn relay_once(
    money: &dyn MoneyStore,
    log: &dyn EventLog,
    namespace: &str,
) -> anyhow::Result<usize> {
    let batch = money.claim_outbox(BATCH, now_ms(), LEASE_MS).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    // One append per topic, in outbox order within each topic.
    let mut by_topic: Vec<(String, Vec<OutRecord>)> = Vec::new();
    for r in &batch {
        let topic = schemas::topics::qualified(namespace, &r.topic);
        let record = OutRecord {
            key: r.key.as_bytes().to_vec(),
            value: r.payload.clone(),
        };
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, records)) => records.push(record),
            None => by_topic.push((topic, vec![record])),
        }
    }
    for (topic, records) in by_topic {
        log.append(&topic, records).await?;
    }
    let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
    money.mark_published(&ids, now_ms()).await?;
    metrics::counter!("tally_outbox_published_total").increment(ids.len() as u64);
    Ok(ids.len())
}

/// Runs the relay until `stop` fires.
pub fn spawn_relay(
    money: Arc<dyn MoneyStore>,
    log: Arc<dyn EventLog>,
    namespace: String,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let pause = match relay_once(money.as_ref(), log.as_ref(), &namespace).await {
                Ok(n) if n == BATCH => Duration::ZERO,
                Ok(_) => Duration::from_millis(20),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    Duration::from_secs(1)
                }
            };
            if let Ok(pending) = money.unpublished_count().await {
                metrics::gauge!("tally_outbox_pending").set(pending as f64);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {
                    // Publish what is committed before stopping.
                    let _ = relay_once(money.as_ref(), log.as_ref(), &namespace).await;
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
