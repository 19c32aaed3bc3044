//! The one consume loop every stage runs in: poll a batch → prepare (decode, pure) → park
//! undecodable records on the dead-letter topic → write (idempotent, retried) → commit.
//! An offset is committed only after the write it covers has succeeded.

use async_trait::async_trait;
use eventlog::{Consumer, EventLog, OutRecord, Position, Record};
use schemas::DeadLetter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why a stage could not write a batch. The runner retries; nothing is committed meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("log: {0}")]
    Log(#[from] eventlog::LogError),
    #[error("store: {0}")]
    Store(#[from] projections::StoreError),
    #[error("codec: {0}")]
    Codec(#[from] schemas::CodecError),
}

/// One processing stage.
#[async_trait]
pub trait Stage: Send {
    type Batch: Send;
    /// Consumer group name (also the name under which a store keeps its offsets).
    fn name(&self) -> &str;
    fn topics(&self) -> Vec<String>;
    /// Offsets the stage's store keeps with its rows; empty when it relies on log commits.
    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError>;
    /// Decodes a batch into what to write, plus (index, reason) of records that cannot be used.
    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>);
    /// Writes a prepared batch idempotently; `positions` are the offsets right after it.
    async fn write(&mut self, batch: Self::Batch, positions: &[Position])
        -> Result<(), StageError>;
    /// The consumer's partitions changed (a rebalance): state built from what other members
    /// wrote must be reloaded before the next batch. Nothing to do by default.
    async fn reassigned(&mut self) -> Result<(), StageError> {
        Ok(())
    }
}

/// Knobs for the loop.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub max_batch: usize,
    pub poll_timeout: Duration,
    /// After the first record arrives, how long to keep filling the batch: per-batch costs
    /// (a store transaction, a log commit) are then paid per many records, at the price of
    /// at most this much added latency.
    pub linger: Duration,
    pub dlq_topic: String,
    /// The log's consumer group for this stage (`<namespace>.<stage>`): deployments sharing a
    /// broker must not share groups.
    pub group: String,
    /// The stage runs in one process only (`tally serve`): take every partition directly
    /// instead of joining the group (see `EventLog::sole_consumer`).
    pub sole_member: bool,
}

/// Polls one batch: waits for the first record, then lingers to fill it up to `max_batch`.
async fn poll_batch(
    consumer: &mut dyn Consumer,
    cfg: &RunnerConfig,
) -> Result<Vec<Record>, eventlog::LogError> {
    let mut records = consumer.poll(cfg.max_batch, cfg.poll_timeout).await?;
    if records.is_empty() {
        return Ok(records);
    }
    let deadline = tokio::time::Instant::now() + cfg.linger;
    while records.len() < cfg.max_batch {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let more = consumer.poll(cfg.max_batch - records.len(), left).await?;
        if more.is_empty() {
            break;
        }
        records.extend(more);
    }
    Ok(records)
}

/// The position after the last record of each partition in `records`.
pub fn positions_after(records: &[Record]) -> Vec<Position> {
    let mut next: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    for r in records {
        let e = next.entry((r.topic.as_str(), r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic: topic.to_string(),
            partition,
            next_offset,
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn dead_letter(
    log: &dyn EventLog,
    cfg: &RunnerConfig,
    stage: &str,
    records: &[Record],
    rejected: &[(usize, String)],
) -> Result<(), StageError> {
    let mut out = Vec::with_capacity(rejected.len());
    for (i, reason) in rejected {
        let Some(r) = records.get(*i) else { continue };
        let letter = DeadLetter {
            topic: r.topic.clone(),
            partition: r.partition as i32,
            offset: r.offset as i64,
            consumer: stage.to_string(),
            reason: reason.clone(),
            key: r.key.clone(),
            value: r.value.clone(),
            failed_at_ms: now_ms(),
        };
        out.push(OutRecord {
            key: r.key.clone(),
            value: schemas::encode(&letter)?,
        });
    }
    log.append(&cfg.dlq_topic, out).await?;
    metrics::counter!("tally_dead_letters_total", "stage" => stage.to_string())
        .increment(rejected.len() as u64);
    tracing::warn!(
        stage,
        count = rejected.len(),
        "records sent to the dead-letter topic"
    );
    Ok(())
}

/// Capped exponential backoff between retries of a failed step.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }

    /// Logs the error and waits; `false` when shutdown was requested (stop retrying).
    async fn after(
        &mut self,
        what: &str,
        e: &StageError,
        shutdown: &watch::Receiver<bool>,
    ) -> bool {
        tracing::warn!(error = %e, what, "retrying after error");
        metrics::counter!("tally_processor_errors_total", "what" => what.to_string()).increment(1);
        if *shutdown.borrow() {
            return false;
        }
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        true
    }
}

/// Runs `stage` until `shutdown` turns true; the batch in hand is finished and committed first.
pub async fn run_stage<S: Stage>(
    log: Arc<dyn EventLog>,
    mut stage: S,
    cfg: RunnerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StageError> {
    let name = stage.name().to_string();
    let mut consumer: Box<dyn Consumer> = if cfg.sole_member {
        log.sole_consumer(&cfg.group, &stage.topics()).await?
    } else {
        log.consumer(&cfg.group, &stage.topics()).await?
    };
    for p in stage.resume_offsets().await? {
        consumer.seek(&p).await?;
    }
    let mut owned = consumer.assignment();
    tracing::info!(stage = %name, "stage started");
    while !*shutdown.borrow() {
        let records = tokio::select! {
            r = poll_batch(consumer.as_mut(), &cfg) => r,
            _ = shutdown.changed() => continue,
        };
        let records = match records {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(stage = %name, error = %e, "poll failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let now_owned = consumer.assignment();
        if now_owned != owned {
            owned = now_owned;
            if let Err(e) = stage.reassigned().await {
                // The records are not committed: a failure here means they come again.
                tracing::warn!(stage = %name, error = %e, "reloading state after a rebalance");
                consumer.rewind_to_committed().await?;
                owned = Vec::new();
                continue;
            }
        }
        if records.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let positions = positions_after(&records);
        let (batch, rejected) = stage.prepare(&records);
        let mut backoff = Backoff::new();
        while !rejected.is_empty() {
            match dead_letter(log.as_ref(), &cfg, &name, &records, &rejected).await {
                Ok(()) => break,
                Err(e) if backoff.after("dead_letter", &e, &shutdown).await => {}
                Err(_) => return Ok(()),
            }
        }
        let mut batch = Some(batch);
        loop {
            // A failed write is retried with the batch prepared again from the same records.
            let b = batch.take().unwrap_or_else(|| stage.prepare(&records).0);
            match stage.write(b, &positions).await {
                Ok(()) => break,
                Err(e) if backoff.after("write", &e, &shutdown).await => {}
                Err(_) => return Ok(()),
            }
        }
        if let Err(e) = consumer.commit(&positions).await {
            // The store already holds its own offsets or the writes are idempotent: a lost
            // commit only means a redelivery, which changes nothing.
            tracing::warn!(stage = %name, error = %e, "offset commit failed");
        }
        metrics::counter!("tally_processed_records_total", "stage" => name.clone())
            .increment(records.len() as u64);
        metrics::histogram!("tally_batch_seconds", "stage" => name.clone())
            .record(started.elapsed().as_secs_f64());
    }
    tracing::info!(stage = %name, "stage stopped");
    Ok(())
}
