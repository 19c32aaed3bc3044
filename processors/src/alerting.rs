//! The alerts stage: `tally.usage`, `tally.billing` and `tally.entities` → the rules that
//! fired (the pure rules of `alerts.rs`), stored once per (rule, window) with the stage's
//! offsets, each with its webhook delivery and its `AlertTriggered` record (through the
//! outbox, to `tally.alerts`), in one transaction per batch.
//!
//! What a rule compares against is read when the batch is written, not carried in the stream:
//! a quota rule counts the company's executions of the period in the money store, a failing
//! rule the asset's executions of the window. A redelivered record then finds the same
//! counts, and the (rule, window) key makes a second firing a no-op. A rule sees only what
//! happened after it was made.

use crate::alerts::{asset_updated, executions_failing, low_balance, price_changed, quota, Firing};
use crate::runner::{Stage, StageError};
use crate::stages::{to_positions, to_stored};
use async_trait::async_trait;
use eventlog::{Position, Record};
use projections::alert_store::{AlertStore, NewFiring};
use projections::{Alert, AlertScope, MetadataReader, MoneyStore};
use schemas::{EntityEvent, LedgerEntryPosted, UsageRecorded};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The name under which the store keeps this stage's offsets (and its consumer group).
pub const ALERTS: &str = "alerts";

/// One record the stage reads.
pub enum Input {
    Usage(UsageRecorded),
    Ledger(LedgerEntryPosted),
    Entity(Box<EntityEvent>),
}

pub struct AlertsStage {
    metadata: Arc<dyn MetadataReader>,
    money: Arc<dyn MoneyStore>,
    store: Arc<dyn AlertStore>,
    usage: String,
    billing: String,
    entities: String,
}

impl AlertsStage {
    pub fn new(
        metadata: Arc<dyn MetadataReader>,
        money: Arc<dyn MoneyStore>,
        store: Arc<dyn AlertStore>,
        (usage, billing, entities): (String, String, String),
    ) -> Self {
        Self {
            metadata,
            money,
            store,
            usage,
            billing,
            entities,
        }
    }
}

/// A rule's firing as the store takes it.
fn firing(rule: &Alert, f: Firing, at_ms: i64) -> NewFiring {
    let s = &rule.state;
    NewFiring {
        record: schemas::AlertTriggered {
            firing_id: String::new(),
            alert_id: s.id.clone(),
            alert_number: rule.alert_id,
            company_id: s.company_id.clone(),
            user_id: s.user_id.clone(),
            asset_id: s.asset_id.clone(),
            kind: s.kind.clone(),
            window: f.window,
            reason: f.reason,
            at_ms,
        },
        webhook_url: s.webhook_url.clone(),
    }
}

/// The live rules of `kind` among `rules` that existed at `at_ms`.
fn live<'a>(rules: &'a [Alert], kind: &'a str, at_ms: i64) -> impl Iterator<Item = &'a Alert> {
    rules.iter().filter(move |r| {
        r.state.is_active
            && !r.state.deleted
            && r.state.kind == kind
            && r.state.created_at_ms <= at_ms
    })
}

impl AlertsStage {
    async fn company_rules(&self, company_id: &str) -> Result<Vec<Alert>, StageError> {
        Ok(self
            .metadata
            .alerts_where(AlertScope::Company, company_id)
            .await?)
    }

    async fn asset_rules(&self, asset_id: &str) -> Result<Vec<Alert>, StageError> {
        Ok(self
            .metadata
            .alerts_where(AlertScope::Asset, asset_id)
            .await?)
    }

    /// Quota rules of each buyer: 80 % and 100 % of the period's allocation, counted from
    /// the executions of the period (whatever their outcome).
    async fn quota_firings(
        &self,
        buyers: &BTreeMap<String, i64>,
        out: &mut Vec<NewFiring>,
    ) -> Result<(), StageError> {
        for (buyer, last_at) in buyers {
            let rules = self.company_rules(buyer).await?;
            if live(&rules, "quota", *last_at).next().is_none() {
                continue;
            }
            let Some(company) = self.metadata.company(buyer).await? else {
                continue;
            };
            let (plan, start) = projections::reference::effective(&company);
            let Some(allocation) = plan.monthly_requests else {
                continue;
            };
            let (from, to) = projections::reference::current_period(start, *last_at);
            let used = self.money.executions_by_buyer(buyer, from, to).await?;
            for rule in live(&rules, "quota", *last_at) {
                for f in quota(allocation, from, 0, used) {
                    out.push(firing(rule, f, *last_at));
                }
            }
        }
        Ok(())
    }

    /// Failing-executions rules on each asset that ran, over the window of its last run.
    async fn failing_firings(
        &self,
        assets: &BTreeMap<String, i64>,
        out: &mut Vec<NewFiring>,
    ) -> Result<(), StageError> {
        for (asset, last_at) in assets {
            let rules = self.asset_rules(asset).await?;
            for rule in live(&rules, "executions_failing", *last_at) {
                let s = &rule.state;
                let window_ms = i64::from(s.window_minutes.unwrap_or(60).max(1)) * 60_000;
                let start = last_at.div_euclid(window_ms) * window_ms;
                let runs = self
                    .money
                    .executions_of(std::slice::from_ref(asset), start)
                    .await?;
                let settled = runs.iter().filter(|r| r.created_at_ms < start + window_ms);
                let (mut n, mut failed) = (0u64, 0u64);
                for r in settled.filter(|r| r.status != "held") {
                    n += 1;
                    failed += u64::from(r.status == "failed");
                }
                let percent = s.failing_percent.unwrap_or(50).clamp(1, 100) as u8;
                let min = s.min_executions.unwrap_or(10).max(1) as u64;
                if let Some(f) = executions_failing(percent, window_ms, min, *last_at, (n, failed))
                {
                    out.push(firing(rule, f, *last_at));
                }
            }
        }
        Ok(())
    }

    async fn ledger_firings(
        &self,
        e: &LedgerEntryPosted,
        out: &mut Vec<NewFiring>,
    ) -> Result<(), StageError> {
        let rules = self.company_rules(&e.company_id).await?;
        for rule in live(&rules, "low_balance", e.at_ms) {
            let threshold = rule.state.threshold_credits.unwrap_or(0);
            let before = e.balance_after - e.credits;
            if let Some(f) = low_balance(threshold, &e.entry_id, before, e.balance_after) {
                out.push(firing(rule, f, e.at_ms));
            }
        }
        Ok(())
    }

    async fn entity_firings(
        &self,
        e: &EntityEvent,
        out: &mut Vec<NewFiring>,
    ) -> Result<(), StageError> {
        match e {
            EntityEvent::PriceSet(p) => {
                let rules = self.asset_rules(&p.asset_id).await?;
                for rule in live(&rules, "price_changed", p.set_at_ms) {
                    out.push(firing(
                        rule,
                        price_changed(&p.aph_id, p.credits),
                        p.set_at_ms,
                    ));
                }
            }
            EntityEvent::AssetUpserted(a) if a.asset.version > 1 => {
                let at = a.asset.updated_at_ms;
                let rules = self.asset_rules(&a.asset.id).await?;
                for rule in live(&rules, "asset_updated", at) {
                    out.push(firing(rule, asset_updated(a.asset.version), at));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Stage for AlertsStage {
    type Batch = Vec<Input>;

    fn name(&self) -> &str {
        ALERTS
    }

    fn topics(&self) -> Vec<String> {
        vec![
            self.usage.clone(),
            self.billing.clone(),
            self.entities.clone(),
        ]
    }

    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError> {
        Ok(to_positions(self.store.alert_offsets(ALERTS).await?))
    }

    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>) {
        let mut inputs = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let decoded = if r.topic == self.usage {
                schemas::decode::<UsageRecorded>(&r.value).map(Input::Usage)
            } else if r.topic == self.billing {
                schemas::decode::<LedgerEntryPosted>(&r.value).map(Input::Ledger)
            } else {
                schemas::decode_entity(&r.value).map(|e| Input::Entity(Box::new(e)))
            };
            match decoded {
                Ok(input) => inputs.push(input),
                Err(e) => rejected.push((i, e.to_string())),
            }
        }
        (inputs, rejected)
    }

    async fn write(
        &mut self,
        batch: Self::Batch,
        positions: &[Position],
    ) -> Result<(), StageError> {
        // Counted rules look once per buyer and per asset in a batch, at its latest record.
        let mut buyers: BTreeMap<String, i64> = BTreeMap::new();
        let mut assets: BTreeMap<String, i64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut firings = Vec::new();
        for input in &batch {
            match input {
                Input::Usage(u) if u.mode != "test" && seen.insert(u.execution_id.as_str()) => {
                    let b = buyers.entry(u.buyer_company_id.clone()).or_insert(u.at_ms);
                    *b = (*b).max(u.at_ms);
                    let a = assets.entry(u.asset_id.clone()).or_insert(u.at_ms);
                    *a = (*a).max(u.at_ms);
                }
                Input::Usage(_) => {}
                Input::Ledger(e) => self.ledger_firings(e, &mut firings).await?,
                Input::Entity(e) => self.entity_firings(e, &mut firings).await?,
            }
        }
        self.quota_firings(&buyers, &mut firings).await?;
        self.failing_firings(&assets, &mut firings).await?;
        let fresh = self
            .store
            .record_firings(ALERTS, &firings, &to_stored(positions))
            .await?;
        metrics::counter!("tally_alerts_fired_total").increment(fresh.len() as u64);
        for f in &fresh {
            let r = &f.record;
            tracing::info!(alert = r.alert_number, kind = %r.kind, window = %r.window, "alert fired");
        }
        Ok(())
    }
}
