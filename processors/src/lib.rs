//! Stream processors: enrichment, sessionization and alert rules as pure functions over plain
//! types, and one generic runner (consume → prepare → write → commit) that the stages plug into.

pub mod alerting;
pub mod alerts;
pub mod enrich;
pub mod ids;
pub mod metering;
pub mod runner;
pub mod session;
pub mod stages;

pub use runner::{run_stage, Stage, StageError};
pub use stages::{AnalyticsStage, EnrichStage, MetadataStage};
