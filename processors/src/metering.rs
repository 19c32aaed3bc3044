//! The metering stage: `tally.usage` (live executions, from the money path's outbox) and
//! `tally.usage.test` (test-key executions) → the analytics store's `usage` rows, one per execution,
//! deduplicated by execution id and stored with the stage's offsets (so a redelivery after a
//! crash or a rebalance counts nothing twice).

use crate::runner::{Stage, StageError};
use crate::stages::{to_positions, to_stored};
use async_trait::async_trait;
use eventlog::{Position, Record};
use projections::{AnalyticsWriter, UsageRow, UsageStore};
use std::sync::Arc;

/// The store the stage writes: usage rows, and the offsets kept beside them.
pub trait MeteringStore: UsageStore + AnalyticsWriter {}
impl<T: UsageStore + AnalyticsWriter> MeteringStore for T {}

/// The name under which the store keeps this stage's offsets (and its consumer group).
pub const METERING: &str = "metering";

pub struct MeteringStage {
    store: Arc<dyn MeteringStore>,
    inputs: Vec<String>,
}

impl MeteringStage {
    pub fn new(store: Arc<dyn MeteringStore>, inputs: Vec<String>) -> Self {
        Self { store, inputs }
    }
}

#[async_trait]
impl Stage for MeteringStage {
    type Batch = Vec<UsageRow>;

    fn name(&self) -> &str {
        METERING
    }

    fn topics(&self) -> Vec<String> {
        self.inputs.clone()
    }

    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError> {
        Ok(to_positions(self.store.offsets(METERING).await?))
    }

    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>) {
        let mut rows = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match schemas::decode::<schemas::UsageRecorded>(&r.value) {
                Ok(u) => rows.push(u),
                Err(e) => rejected.push((i, e.to_string())),
            }
        }
        (rows, rejected)
    }

    async fn write(
        &mut self,
        batch: Self::Batch,
        positions: &[Position],
    ) -> Result<(), StageError> {
        let n = self
            .store
            .write_usage(METERING, batch, to_stored(positions))
            .await?;
        metrics::counter!("tally_usage_metered_total").increment(n as u64);
        Ok(())
    }
}
