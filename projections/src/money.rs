//! The money path's store: balances, the ledger, executions and the outbox, in the metadata
//! database. These tables are authoritative state, not a projection of the log: they survive
//! every migration, and the outbox puts each committed movement on the log.
//!
//! An execution of another company's asset moves money in two transactions:
//! 1. **hold** (before the source runs): the buyer's balance goes down by the price, only if it
//!    covers it (`credits >= cost`, so it never goes negative, whatever the concurrency), with
//!    a `debit` ledger row;
//! 2. **settle** (after): on success, the seller's share and the platform fee are credited; on
//!    failure or timeout, the buyer is refunded. Crediting the seller only on success means a
//!    refund never takes back credits the seller may already have spent.
//!
//! A hold that is never settled (the process died while the source ran) is refunded by the
//! sweeper. The execution id is the idempotency key of the charge: a second hold of the same
//! id charges nothing.

use crate::StoreResult;
use async_trait::async_trait;
use serde::Serialize;

/// How a price in credits is shared: the seller gets `share_bp` basis points of it rounded
/// down, the platform the rest, so the two always add up to the price.
pub fn split(cost: i64, share_bp: i32) -> (i64, i64) {
    let bp = i64::from(share_bp.clamp(0, 10_000));
    let seller = cost * bp / 10_000;
    (seller, cost - seller)
}

/// A discount on an asset's price: `percent` (0 < p ≤ 100) or `amount_credits` off, in a
/// time window, for every buyer or one company.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discount {
    pub discount_id: String,
    pub asset_id: String,
    pub percent: Option<f64>,
    pub amount_credits: Option<i64>,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    pub buyer_company_id: Option<String>,
    pub set_at_ms: i64,
}

impl Discount {
    /// Whether it applies to `buyer` at `now_ms`.
    pub fn applies(&self, buyer: &str, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms
            && self.ends_at_ms.is_none_or(|end| now_ms < end)
            && self.buyer_company_id.as_deref().is_none_or(|b| b == buyer)
    }

    /// Credits it takes off a price of `credits`: a percentage rounded down (the seller keeps
    /// the fraction), an amount up to the whole price.
    pub fn off(&self, credits: i64) -> i64 {
        let off = match (self.percent, self.amount_credits) {
            (Some(p), _) => {
                let bp = (p.clamp(0.0, 100.0) * 100.0).round() as i64;
                credits * bp / 10_000
            }
            (None, Some(a)) => a.max(0),
            (None, None) => 0,
        };
        off.clamp(0, credits.max(0))
    }
}

/// The price a buyer pays: `credits` less the best discount that applies to it now (discounts
/// never add up; the largest reduction wins).
pub fn discounted(credits: i64, discounts: &[Discount], buyer: &str, now_ms: i64) -> i64 {
    let best = discounts
        .iter()
        .filter(|d| d.applies(buyer, now_ms))
        .map(|d| d.off(credits))
        .max()
        .unwrap_or(0);
    credits - best
}

/// Whole credits for a price in USD at `credits_per_usd`, rounded up. The USD amount is taken
/// to the micro-dollar first, so 0.1 × 100 is 10, not 11.
pub fn credits_for_usd(usd: f64, credits_per_usd: i64) -> Option<i64> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return None;
    }
    let micros = (usd * 1e6).round() as i64;
    Some((micros * credits_per_usd + 999_999) / 1_000_000)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub entry_id: String,
    pub company_id: String,
    /// `topup`, `debit`, `seller_credit`, `platform_fee` or `refund`.
    pub kind: String,
    pub credits: i64,
    pub balance_after: i64,
    pub execution_id: Option<String>,
    pub counterparty_company_id: Option<String>,
    pub reason: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpOutcome {
    Done {
        balance: i64,
        entry_id: String,
    },
    /// The same idempotency key and body: nothing new was done.
    Replayed {
        balance: i64,
        entry_id: String,
    },
    /// The same idempotency key with another body.
    KeyReused,
}

/// A charge to hold before an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub execution_id: String,
    pub buyer_company_id: String,
    pub seller_company_id: String,
    pub platform_company_id: String,
    pub asset_id: String,
    pub api_key_id: i64,
    pub user_id: String,
    pub cost: i64,
    pub seller_share: i64,
    pub platform_fee: i64,
    pub at_ms: i64,
}

/// One settlement: the execution, whether it succeeded, and what it returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    pub execution_id: String,
    pub succeeded: bool,
    pub rows: i64,
    pub duration_ms: f64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    Held {
        balance_after: i64,
    },
    /// The balance does not cover the cost; nothing changed.
    Insufficient {
        balance: i64,
    },
    /// This execution id was held before: nothing is charged again.
    AlreadyHeld {
        status: String,
    },
}

/// Per company: the balance and the sum of its ledger rows (they must be equal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceCheck {
    pub company_id: String,
    pub balance: i64,
    pub ledger_sum: i64,
}

/// Counts across the system, for `tally reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MoneyCounts {
    pub executions_succeeded: i64,
    pub executions_failed: i64,
    pub executions_held: i64,
    /// Executions that had a price, settled or not (each has exactly one debit).
    pub charged: i64,
    /// Of those, the ones that failed (each has exactly one refund).
    pub charged_failed: i64,
    pub debits: i64,
    pub refunds: i64,
    /// Every ledger row (each has one `LedgerEntryPosted` on the billing topic).
    pub ledger_entries: i64,
    /// What buyers paid, net: debits less refunds, as a positive number of credits.
    pub ledger_paid: i64,
    /// What sellers were credited (`seller_credit` rows).
    pub ledger_seller_credits: i64,
    /// The prices of executions still held (debited, not settled, so not metered yet).
    pub held_credits: i64,
}

/// A committed record waiting to go on the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: String,
    /// `usage` or `billing` (qualified with the namespace by the relay).
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Set when an earlier relay claimed the record and noted, before appending, where the
    /// log ended (JSON positions): the record may be on the log from there on already.
    pub log_from: Option<String>,
}

#[async_trait]
pub trait MoneyStore: Send + Sync {
    async fn balance(&self, company_id: &str) -> StoreResult<i64>;
    /// Adds `credits` (> 0) once per idempotency key; `body_hash` tells a replay from a reuse.
    async fn top_up(
        &self,
        company_id: &str,
        credits: i64,
        reason: Option<&str>,
        idempotency_key: &str,
        body_hash: &str,
        at_ms: i64,
    ) -> StoreResult<TopUpOutcome>;
    async fn hold(&self, hold: &Hold) -> StoreResult<HoldOutcome>;
    /// [`MoneyStore::hold`] for several executions in one transaction (group commit), one
    /// outcome per hold in order.
    async fn hold_batch(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>>;
    /// [`MoneyStore::settle`] for several executions in one transaction.
    async fn settle_batch(&self, settles: &[Settle]) -> StoreResult<Vec<i64>>;
    /// Settles a held execution (once; settling again does nothing) and returns the buyer's
    /// balance afterwards.
    async fn settle(
        &self,
        execution_id: &str,
        succeeded: bool,
        rows: i64,
        duration_ms: f64,
        at_ms: i64,
    ) -> StoreResult<i64>;
    /// The newest entries first, and the total.
    async fn ledger(
        &self,
        company_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<LedgerEntry>, u64)>;
    /// Executions held before `before_ms` and never settled.
    async fn stale_holds(&self, before_ms: i64) -> StoreResult<Vec<String>>;
    /// Claims up to `limit` unpublished outbox records (a claim lapses after `lease_ms`).
    async fn claim_outbox(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<OutboxRecord>>;
    /// Notes, before records are appended, where their topic's log ended (`log_from`), so a
    /// relay that takes them over can tell whether they reached the log.
    async fn note_attempt(&self, ids: &[String], log_from: &str) -> StoreResult<()>;
    /// Removes published records from the outbox (it is a queue).
    async fn mark_published(&self, ids: &[String], at_ms: i64) -> StoreResult<()>;
    async fn unpublished_count(&self) -> StoreResult<u64>;
    async fn balance_checks(&self) -> StoreResult<Vec<BalanceCheck>>;
    async fn money_counts(&self) -> StoreResult<MoneyCounts>;
    /// How many executions `buyer_company_id` made from `from_ms` (inclusive) to `to_ms`
    /// (exclusive), whatever their outcome.
    async fn executions_by_buyer(
        &self,
        buyer_company_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<u64>;
    /// The executions of `asset_ids` held at or after `since_ms`, oldest first.
    async fn executions_of(
        &self,
        asset_ids: &[String],
        since_ms: i64,
    ) -> StoreResult<Vec<crate::execution_stats::ExecutionRow>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discount(percent: Option<f64>, amount: Option<i64>, buyer: Option<&str>) -> Discount {
        Discount {
            discount_id: "d".into(),
            asset_id: "a".into(),
            percent,
            amount_credits: amount,
            starts_at_ms: 100,
            ends_at_ms: Some(200),
            buyer_company_id: buyer.map(str::to_string),
            set_at_ms: 1,
        }
    }

    #[test]
    fn the_best_discount_in_its_window_applies() {
        let ds = [
            discount(Some(25.0), None, None),
            discount(None, Some(3), Some("globex")),
        ];
        assert_eq!(
            discounted(10, &ds, "initech", 150),
            8,
            "25 % of 10 is 2.5, rounded down to 2"
        );
        assert_eq!(discounted(10, &ds, "globex", 150), 7, "3 off beats 2 off");
        assert_eq!(discounted(10, &ds, "globex", 99), 10, "not started");
        assert_eq!(discounted(10, &ds, "globex", 200), 10, "ended");
        assert_eq!(
            discounted(2, &[discount(None, Some(5), None)], "x", 150),
            0,
            "never below 0"
        );
        assert_eq!(
            discounted(7, &[discount(Some(100.0), None, None)], "x", 150),
            0
        );
    }

    #[test]
    fn shares_round_down_for_the_seller_and_always_add_up() {
        assert_eq!(split(100, 8_500), (85, 15));
        assert_eq!(split(1, 8_500), (0, 1));
        assert_eq!(split(7, 8_500), (5, 2));
        assert_eq!(split(10, 10_000), (10, 0));
        assert_eq!(split(10, 0), (0, 10));
        for cost in 0..500 {
            for bp in [0, 1, 3_333, 8_500, 9_999, 10_000] {
                let (s, p) = split(cost, bp);
                assert_eq!(s + p, cost);
                assert!(s >= 0 && p >= 0);
            }
        }
    }

    #[test]
    fn usd_becomes_whole_credits_rounded_up() {
        assert_eq!(credits_for_usd(0.1, 100), Some(10));
        assert_eq!(credits_for_usd(0.25, 100), Some(25));
        assert_eq!(credits_for_usd(0.011, 100), Some(2));
        assert_eq!(credits_for_usd(0.0, 100), Some(0));
        assert_eq!(credits_for_usd(1.0, 1), Some(1));
        assert_eq!(credits_for_usd(-1.0, 100), None);
        assert_eq!(credits_for_usd(f64::NAN, 100), None);
    }
}
