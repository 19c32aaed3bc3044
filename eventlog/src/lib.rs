//! The event log: producer and consumer traits shaped after Kafka (keys → partitions,
//! per-partition order, consumer groups, committed offsets), the embedded durable log, and a
//! conformance suite every backend must pass.

pub mod conformance;
mod embedded;
#[cfg(feature = "kafka")]
mod kafka;
mod partition;
#[cfg(feature = "kafka")]
mod stall;

use async_trait::async_trait;
use std::time::Duration;

pub use embedded::EmbeddedLog;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaConfig, KafkaLog};
pub use partition::partition_for;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Where an appended record landed, returned only once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub offset: u64,
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A consumer position: the next offset to read in one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub topic: String,
    pub partition: u32,
    pub next_offset: u64,
}

/// What can go wrong talking to the log. `Unavailable` is retryable.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log unavailable: {0}")]
    Unavailable(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("log storage error: {0}")]
    Storage(String),
    #[error("log is shut down")]
    Closed,
}

/// Appends records durably. Records with the same key go to the same partition, in order.
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Appends `records` to `topic`; resolves only when every record is durable.
    async fn append(&self, topic: &str, records: Vec<OutRecord>)
        -> Result<Vec<Appended>, LogError>;
}

/// One member of a consumer group. Partitions are shared among the members of a group.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records from the assigned partitions, waiting up to `timeout` for the first.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, LogError>;
    /// Stores the group's committed positions. Call only after the records are fully applied.
    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError>;
    /// Moves this member's read position (e.g. to the offsets a projection store holds).
    async fn seek(&mut self, position: &Position) -> Result<(), LogError>;
    /// Forgets uncommitted progress: the next poll starts again at the committed positions.
    async fn rewind_to_committed(&mut self) -> Result<(), LogError>;
    /// The (topic, partition) pairs this member owns right now (known after a poll).
    fn assignment(&self) -> Vec<(String, u32)>;
}

/// A whole log backend: topic administration plus producing and consuming.
#[async_trait]
pub trait EventLog: Producer {
    /// Creates `topic` with `partitions` partitions if it does not exist.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError>;
    /// Joins consumer `group` for `topics`.
    async fn consumer(&self, group: &str, topics: &[String])
        -> Result<Box<dyn Consumer>, LogError>;
    /// A consumer that is its group's only member (one process runs the stage): it owns every
    /// partition of `topics` from the group's committed offsets, without group coordination.
    async fn sole_consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        self.consumer(group, topics).await
    }
    /// The group's committed positions for every partition of `topic`.
    async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Position>, LogError>;
    /// The next offset to be written in every partition of `topic` (the high watermark).
    async fn end_offsets(&self, topic: &str) -> Result<Vec<Position>, LogError>;
    /// Deletes records older than `cutoff_ms` (retention); returns how many were deleted.
    async fn delete_before(&self, topic: &str, cutoff_ms: i64) -> Result<u64, LogError>;
}
