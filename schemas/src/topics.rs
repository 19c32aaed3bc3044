//! Topic names. Every deployment prefixes them with its namespace (default `tally`) so several
//! deployments can share one broker.

/// Raw collected events, keyed by website id + visitor id.
pub const COLLECT_RAW: &str = "collect.raw";
/// Enriched events, keyed by website id + visitor id.
pub const COLLECT_ENRICHED: &str = "collect.enriched";
/// Entity (command) events, keyed by aggregate id.
pub const ENTITIES: &str = "entities";
/// Executions as committed by the money path (`UsageRecorded`), keyed by buyer company id.
pub const USAGE: &str = "usage";
/// Test-mode executions (`UsageRecorded` with mode `test`), keyed by buyer company id. They
/// move no money, so ingest appends them itself; kept apart from `usage`, whose records match
/// the settled executions one to one (`tally reconcile` checks that).
pub const USAGE_TEST: &str = "usage.test";
/// Ledger rows as committed (`LedgerEntryPosted`), keyed by company id.
pub const BILLING: &str = "billing";
/// Alert rules that fired (`AlertTriggered`), keyed by company id; published from the alerts
/// stage's outbox.
pub const ALERTS: &str = "alerts";
/// Records a consumer could not decode or apply.
pub const DLQ: &str = "dlq";

/// The full topic name for `namespace`, e.g. `tally.collect.raw`.
pub fn qualified(namespace: &str, topic: &str) -> String {
    format!("{namespace}.{topic}")
}
