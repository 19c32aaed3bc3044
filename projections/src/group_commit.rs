//! Group commit for the money path: holds and settlements from concurrent requests queue up
//! and are committed together, one transaction per batch ([`MoneyStore::hold_batch`],
//! [`MoneyStore::settle_batch`]), while the previous batch commits. Each caller still gets
//! its own outcome; the money rules are the store's, unchanged. Everything else passes
//! straight through to the store.

use crate::money::*;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Requests in one batch at most.
const BATCH: usize = 128;

type Reply<T> = oneshot::Sender<StoreResult<T>>;
type Pending<A> =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<Vec<A>>> + Send + 'static>>;

/// A [`MoneyStore`] that batches holds and settlements.
pub struct GroupCommit {
    inner: Arc<dyn MoneyStore>,
    holds: mpsc::Sender<(Hold, Reply<HoldOutcome>)>,
    settles: mpsc::Sender<(Settle, Reply<i64>)>,
}

fn closed() -> StoreError {
    StoreError::Backend("the money writer has stopped".into())
}

/// Runs `commit` over batches from `rx` until every sender is gone.
fn spawn_loop<Q, A>(
    mut rx: mpsc::Receiver<(Q, Reply<A>)>,
    commit: impl Fn(Vec<Q>) -> Pending<A> + Send + 'static,
) where
    Q: Send + 'static,
    A: Send + 'static,
{
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let (requests, replies): (Vec<Q>, Vec<Reply<A>>) = batch.drain(..).unzip();
            metrics::histogram!("tally_money_batch_size").record(requests.len() as f64);
            match commit(requests).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
            }
        }
    });
}

impl GroupCommit {
    /// Wraps `inner`; must be called inside a Tokio runtime (it starts the two writers).
    pub fn new(inner: Arc<dyn MoneyStore>) -> GroupCommit {
        let (holds, hold_rx) = mpsc::channel::<(Hold, Reply<HoldOutcome>)>(4096);
        let (settles, settle_rx) = mpsc::channel::<(Settle, Reply<i64>)>(4096);
        let store = inner.clone();
        spawn_loop(hold_rx, move |batch: Vec<Hold>| {
            let store = store.clone();
            Box::pin(async move { store.hold_batch(&batch).await })
        });
        let store = inner.clone();
        spawn_loop(settle_rx, move |batch: Vec<Settle>| {
            let store = store.clone();
            Box::pin(async move { store.settle_batch(&batch).await })
        });
        GroupCommit {
            inner,
            holds,
            settles,
        }
    }
}

#[async_trait]
impl MoneyStore for GroupCommit {
    async fn balance(&self, company_id: &str) -> StoreResult<i64> {
        self.inner.balance(company_id).await
    }

    async fn top_up(
        &self,
        company_id: &str,
        credits: i64,
        reason: Option<&str>,
        idempotency_key: &str,
        body_hash: &str,
        at_ms: i64,
    ) -> StoreResult<TopUpOutcome> {
        self.inner
            .top_up(
                company_id,
                credits,
                reason,
                idempotency_key,
                body_hash,
                at_ms,
            )
            .await
    }

    async fn hold(&self, hold: &Hold) -> StoreResult<HoldOutcome> {
        let (tx, rx) = oneshot::channel();
        self.holds
            .send((hold.clone(), tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn hold_batch(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
        self.inner.hold_batch(holds).await
    }

    async fn settle_batch(&self, settles: &[Settle]) -> StoreResult<Vec<i64>> {
        self.inner.settle_batch(settles).await
    }

    async fn settle(
        &self,
        execution_id: &str,
        succeeded: bool,
        rows: i64,
        duration_ms: f64,
        at_ms: i64,
    ) -> StoreResult<i64> {
        let (tx, rx) = oneshot::channel();
        let x = Settle {
            execution_id: execution_id.to_string(),
            succeeded,
            rows,
            duration_ms,
            at_ms,
        };
        self.settles.send((x, tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn ledger(
        &self,
        company_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<LedgerEntry>, u64)> {
        self.inner.ledger(company_id, limit, offset).await
    }

    async fn stale_holds(&self, before_ms: i64) -> StoreResult<Vec<String>> {
        self.inner.stale_holds(before_ms).await
    }

    async fn claim_outbox(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<OutboxRecord>> {
        self.inner.claim_outbox(limit, now_ms, lease_ms).await
    }

    async fn note_attempt(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
        self.inner.note_attempt(ids, log_from).await
    }

    async fn mark_published(&self, ids: &[String], at_ms: i64) -> StoreResult<()> {
        self.inner.mark_published(ids, at_ms).await
    }

    async fn unpublished_count(&self) -> StoreResult<u64> {
        self.inner.unpublished_count().await
    }

    async fn balance_checks(&self) -> StoreResult<Vec<BalanceCheck>> {
        self.inner.balance_checks().await
    }

    async fn money_counts(&self) -> StoreResult<MoneyCounts> {
        self.inner.money_counts().await
    }

    async fn executions_by_buyer(
        &self,
        buyer_company_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<u64> {
        self.inner
            .executions_by_buyer(buyer_company_id, from_ms, to_ms)
            .await
    }

    async fn executions_of(
        &self,
        asset_ids: &[String],
        since_ms: i64,
    ) -> StoreResult<Vec<crate::execution_stats::ExecutionRow>> {
        self.inner.executions_of(asset_ids, since_ms).await
    }
}
