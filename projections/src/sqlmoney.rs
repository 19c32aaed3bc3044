//! The money store's SQL, once for SQLite and Postgres (see `money.rs` for the rules). Every
//! operation is one transaction; the conditional `UPDATE … WHERE credits >= cost RETURNING`
//! is what keeps a balance from going negative under any concurrency, and the `CHECK` on the
//! column is the backstop. Outbox payloads are the Avro records themselves, hex-encoded.

/// Durable money tables: never dropped by a migration.
pub(crate) const MONEY_DDL: &str = "
CREATE TABLE IF NOT EXISTS balances (
    company_id TEXT PRIMARY KEY,
    credits BIGINT NOT NULL CHECK (credits >= 0)
);
CREATE TABLE IF NOT EXISTS ledger (
    entry_id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    credits BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    execution_id TEXT,
    counterparty_company_id TEXT,
    reason TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_by_company ON ledger (company_id, created_at_ms);
CREATE TABLE IF NOT EXISTS topups (
    company_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    PRIMARY KEY (company_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    buyer_company_id TEXT NOT NULL,
    seller_company_id TEXT NOT NULL,
    platform_company_id TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    api_key_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    cost BIGINT NOT NULL,
    seller_share BIGINT NOT NULL,
    platform_fee BIGINT NOT NULL,
    status TEXT NOT NULL,
    result_rows BIGINT,
    duration_ms DOUBLE PRECISION,
    created_at_ms BIGINT NOT NULL,
    settled_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS executions_held ON executions (status, created_at_ms);
CREATE INDEX IF NOT EXISTS executions_by_asset ON executions (asset_id, created_at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    record_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    claimed_at_ms BIGINT,
    published_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at_ms, id);
CREATE TABLE IF NOT EXISTS outbox_attempts (
    id TEXT PRIMARY KEY,
    log_from TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    audit_id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    request_id TEXT,
    company_id TEXT,
    target_company_id TEXT,
    user_id TEXT,
    api_key_id BIGINT,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_company ON audit_log (company_id, at_ms);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit_log (target_company_id, at_ms);
CREATE TABLE IF NOT EXISTS api_key_usage (
    api_key_id BIGINT PRIMARY KEY,
    use_count BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    last_failed_at_ms BIGINT
);
";

macro_rules! money_sql_impl {
    ($store:ident, $db:ty) => {
        mod money_impl {
            use super::$store;
            use crate::money::*;
            use crate::{StoreError, StoreResult};
            use async_trait::async_trait;
            use sqlx::{Row, Transaction};

            type Tx<'a> = Transaction<'a, $db>;

            fn sql_err(e: sqlx::Error) -> StoreError {
                StoreError::Backend(e.to_string())
            }

            fn new_id() -> String {
                uuid::Uuid::now_v7().to_string()
            }

            /// Ledger and outbox rows a transaction writes, inserted together just before it
            /// commits (one multi-row statement per table instead of one per row).
            #[derive(Default)]
            struct Pending {
                ledger: Vec<LedgerRow>,
                outbox: Vec<(String, String, String, String, i64)>,
            }

            struct LedgerRow {
                entry_id: String,
                company_id: String,
                kind: String,
                credits: i64,
                balance_after: i64,
                execution_id: Option<String>,
                counterparty: Option<String>,
                reason: Option<String>,
                at_ms: i64,
            }

            fn outbox(p: &mut Pending, topic: &str, key: &str, payload: Vec<u8>, at_ms: i64) {
                p.outbox.push((new_id(), topic.to_string(), key.to_string(), hex::encode(payload), at_ms));
            }

            /// Writes what `p` holds into `tx`.
            async fn flush(tx: &mut Tx<'_>, p: &mut Pending) -> Result<(), StoreError> {
                for chunk in p.ledger.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id, counterparty_company_id, reason, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.entry_id.clone())
                            .push_bind(r.company_id.clone())
                            .push_bind(r.kind.clone())
                            .push_bind(r.credits)
                            .push_bind(r.balance_after)
                            .push_bind(r.execution_id.clone())
                            .push_bind(r.counterparty.clone())
                            .push_bind(r.reason.clone())
                            .push_bind(r.at_ms);
                    });
                    q.build().execute(&mut **tx).await.map_err(sql_err)?;
                }
                for chunk in p.outbox.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO outbox (id, topic, record_key, payload, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.0.clone())
                            .push_bind(r.1.clone())
                            .push_bind(r.2.clone())
                            .push_bind(r.3.clone())
                            .push_bind(r.4);
                    });
                    q.build().execute(&mut **tx).await.map_err(sql_err)?;
                }
                p.ledger.clear();
                p.outbox.clear();
                Ok(())
            }

            /// Adds `delta` to a balance (creating it) and returns the new balance; `None` if a
            /// debit would take it below zero.
            async fn add(tx: &mut Tx<'_>, company: &str, delta: i64) -> Result<Option<i64>, sqlx::Error> {
                if delta < 0 {
                    return sqlx::query_scalar(
                        "UPDATE balances SET credits = credits + $1 WHERE company_id = $2 AND credits + $1 >= 0 RETURNING credits",
                    )
                    .bind(delta)
                    .bind(company)
                    .fetch_optional(&mut **tx)
                    .await;
                }
                sqlx::query_scalar(
                    "INSERT INTO balances (company_id, credits) VALUES ($1, $2) \
                     ON CONFLICT (company_id) DO UPDATE SET credits = balances.credits + EXCLUDED.credits RETURNING credits",
                )
                .bind(company)
                .bind(delta)
                .fetch_optional(&mut **tx)
                .await
            }

            /// A ledger row and its `LedgerEntryPosted` in the outbox (written at [`flush`]).
            #[allow(clippy::too_many_arguments)]
            fn post(
                p: &mut Pending,
                company: &str,
                kind: &str,
                credits: i64,
                balance_after: i64,
                execution_id: Option<&str>,
                counterparty: Option<&str>,
                reason: Option<&str>,
                at_ms: i64,
            ) -> Result<String, StoreError> {
                let entry_id = new_id();
                let record = schemas::LedgerEntryPosted {
                    entry_id: entry_id.clone(),
                    company_id: company.to_string(),
                    kind: kind.to_string(),
                    credits,
                    balance_after,
                    execution_id: execution_id.map(str::to_string),
                    counterparty_company_id: counterparty.map(str::to_string),
                    at_ms,
                };
                let payload = schemas::encode(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
                p.ledger.push(LedgerRow {
                    entry_id: entry_id.clone(),
                    company_id: company.to_string(),
                    kind: kind.to_string(),
                    credits,
                    balance_after,
                    execution_id: execution_id.map(str::to_string),
                    counterparty: counterparty.map(str::to_string),
                    reason: reason.map(str::to_string),
                    at_ms,
                });
                outbox(p, "billing", company, payload, at_ms);
                Ok(entry_id)
            }

            async fn balance_in(tx: &mut Tx<'_>, company: &str) -> Result<i64, sqlx::Error> {
                Ok(sqlx::query_scalar::<_, i64>("SELECT credits FROM balances WHERE company_id = $1")
                    .bind(company)
                    .fetch_optional(&mut **tx)
                    .await?
                    .unwrap_or(0))
            }

            fn entry_from(r: &<$db as sqlx::Database>::Row) -> Result<LedgerEntry, sqlx::Error> {
                Ok(LedgerEntry {
                    entry_id: r.try_get("entry_id")?,
                    company_id: r.try_get("company_id")?,
                    kind: r.try_get("kind")?,
                    credits: r.try_get("credits")?,
                    balance_after: r.try_get("balance_after")?,
                    execution_id: r.try_get("execution_id")?,
                    counterparty_company_id: r.try_get("counterparty_company_id")?,
                    reason: r.try_get("reason")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            }

            /// Settles one held execution inside `tx`; the buyer's balance afterwards.
            async fn settle_in(tx: &mut Tx<'_>, p: &mut Pending, x: &Settle) -> StoreResult<i64> {
                let (execution_id, succeeded, rows, duration_ms, at_ms) =
                    (x.execution_id.as_str(), x.succeeded, x.rows, x.duration_ms, x.at_ms);
                let status = if succeeded { "succeeded" } else { "failed" };
                // The update is the lock: only the first settle of a held execution wins.
                let row = sqlx::query(
                    "UPDATE executions SET status = $1, result_rows = $2, duration_ms = $3, settled_at_ms = $4 \
                     WHERE execution_id = $5 AND status = 'held' \
                     RETURNING buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, user_id, cost, seller_share, platform_fee",
                )
                .bind(status)
                .bind(rows)
                .bind(duration_ms)
                .bind(at_ms)
                .bind(execution_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(sql_err)?;
                let Some(r) = row else {
                    let buyer: Option<String> = sqlx::query_scalar("SELECT buyer_company_id FROM executions WHERE execution_id = $1")
                        .bind(execution_id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(sql_err)?;
                    let balance = match buyer {
                        Some(b) => balance_in(tx, &b).await.map_err(sql_err)?,
                        None => 0,
                    };
                    return Ok(balance);
                };
                let get = |c: &str| -> Result<String, StoreError> { r.try_get(c).map_err(sql_err) };
                let num = |c: &str| -> Result<i64, StoreError> { r.try_get(c).map_err(sql_err) };
                let (buyer, seller, platform) = (get("buyer_company_id")?, get("seller_company_id")?, get("platform_company_id")?);
                let (cost, share, fee) = (num("cost")?, num("seller_share")?, num("platform_fee")?);
                let charged = if succeeded { cost } else { 0 };
                if succeeded {
                    for (company, kind, credits) in [(&seller, "seller_credit", share), (&platform, "platform_fee", fee)] {
                        if credits > 0 {
                            let after = add(tx, company, credits).await.map_err(sql_err)?.unwrap_or(0);
                            post(p, company, kind, credits, after, Some(execution_id), Some(&buyer), None, at_ms)?;
                        }
                    }
                } else if cost > 0 {
                    let after = add(tx, &buyer, cost).await.map_err(sql_err)?.unwrap_or(0);
                    post(p, &buyer, "refund", cost, after, Some(execution_id), Some(&seller), None, at_ms)?;
                }
                let usage = schemas::UsageRecorded {
                    execution_id: execution_id.to_string(),
                    buyer_company_id: buyer.clone(),
                    seller_company_id: seller,
                    asset_id: get("asset_id")?,
                    api_key_id: num("api_key_id")?,
                    user_id: get("user_id")?,
                    credits: charged,
                    rows,
                    duration_ms,
                    status: status.to_string(),
                    mode: "live".into(),
                    at_ms,
                };
                let payload = schemas::encode(&usage).map_err(|e| StoreError::Backend(e.to_string()))?;
                outbox(p, "usage", &buyer, payload, at_ms);
                let balance = balance_in(tx, &buyer).await.map_err(sql_err)?;
                Ok(balance)
            }

            /// Holds one execution's cost inside `tx`. A refusal (a retry, a short balance)
            /// leaves nothing behind in `tx`, so a batch can go on past it.
            async fn hold_in(tx: &mut Tx<'_>, p: &mut Pending, h: &Hold) -> StoreResult<HoldOutcome> {
                // The insert is the lock on the execution id (also against other processes).
                let inserted = sqlx::query(
                    "INSERT INTO executions (execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, \
                     user_id, cost, seller_share, platform_fee, status, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'held', $11) ON CONFLICT (execution_id) DO NOTHING",
                )
                .bind(&h.execution_id)
                .bind(&h.buyer_company_id)
                .bind(&h.seller_company_id)
                .bind(&h.platform_company_id)
                .bind(&h.asset_id)
                .bind(h.api_key_id)
                .bind(&h.user_id)
                .bind(h.cost)
                .bind(h.seller_share)
                .bind(h.platform_fee)
                .bind(h.at_ms)
                .execute(&mut **tx)
                .await
                .map_err(sql_err)?
                .rows_affected();
                if inserted == 0 {
                    let status: String = sqlx::query_scalar("SELECT status FROM executions WHERE execution_id = $1")
                        .bind(&h.execution_id)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(sql_err)?;
                    return Ok(HoldOutcome::AlreadyHeld { status });
                }
                if h.cost == 0 {
                    let balance_after = balance_in(tx, &h.buyer_company_id).await.map_err(sql_err)?;
                    return Ok(HoldOutcome::Held { balance_after });
                }
                let Some(balance_after) = add(tx, &h.buyer_company_id, -h.cost).await.map_err(sql_err)? else {
                    // Short: the execution row goes again, so nothing of this hold remains.
                    sqlx::query("DELETE FROM executions WHERE execution_id = $1")
                        .bind(&h.execution_id)
                        .execute(&mut **tx)
                        .await
                        .map_err(sql_err)?;
                    let balance = balance_in(tx, &h.buyer_company_id).await.map_err(sql_err)?;
                    return Ok(HoldOutcome::Insufficient { balance });
                };
                post(
                    p,
                    &h.buyer_company_id,
                    "debit",
                    -h.cost,
                    balance_after,
                    Some(&h.execution_id),
                    Some(&h.seller_company_id),
                    None,
                    h.at_ms,
                )?;
                Ok(HoldOutcome::Held { balance_after })
            }

            #[async_trait]
            impl crate::audit::AuditStore for $store {
                async fn append_audit(&self, rows: &[crate::audit::AuditRecord]) -> StoreResult<()> {
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    for chunk in rows.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO audit_log (audit_id, at_ms, request_id, company_id, target_company_id, user_id, api_key_id, action, object, status, outcome) ",
                        );
                        q.push_values(chunk, |mut b, r| {
                            b.push_bind(r.audit_id.clone())
                                .push_bind(r.at_ms)
                                .push_bind(r.request_id.clone())
                                .push_bind(r.company_id.clone())
                                .push_bind(r.target_company_id.clone())
                                .push_bind(r.user_id.clone())
                                .push_bind(r.api_key_id)
                                .push_bind(r.action.clone())
                                .push_bind(r.object.clone())
                                .push_bind(r.status)
                                .push_bind(r.outcome.clone());
                        });
                        q.push(" ON CONFLICT (audit_id) DO NOTHING");
                        q.build().execute(&self.pool).await.map_err(sql_err)?;
                    }
                    Ok(())
                }

                async fn add_key_uses(&self, uses: &[crate::audit::KeyUse]) -> StoreResult<()> {
                    if uses.is_empty() {
                        return Ok(());
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    for chunk in uses.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO api_key_usage (api_key_id, use_count, failed_attempts, last_used_at_ms, last_failed_at_ms) ",
                        );
                        q.push_values(chunk, |mut b, u| {
                            b.push_bind(u.api_key_id)
                                .push_bind(u.uses)
                                .push_bind(u.failures)
                                .push_bind(u.last_used_ms)
                                .push_bind(u.last_failed_ms);
                        });
                        // Portable "greatest, ignoring NULL": a NULL comparison is not true.
                        q.push(
                            " ON CONFLICT (api_key_id) DO UPDATE SET \
                             use_count = api_key_usage.use_count + excluded.use_count, \
                             failed_attempts = api_key_usage.failed_attempts + excluded.failed_attempts, \
                             last_used_at_ms = CASE WHEN excluded.last_used_at_ms > COALESCE(api_key_usage.last_used_at_ms, 0) \
                                 THEN excluded.last_used_at_ms ELSE api_key_usage.last_used_at_ms END, \
                             last_failed_at_ms = CASE WHEN excluded.last_failed_at_ms > COALESCE(api_key_usage.last_failed_at_ms, 0) \
                                 THEN excluded.last_failed_at_ms ELSE api_key_usage.last_failed_at_ms END",
                        );
                        q.build().execute(&self.pool).await.map_err(sql_err)?;
                    }
                    Ok(())
                }

                async fn key_uses(&self, api_key_id: i64) -> StoreResult<crate::audit::KeyUse> {
                    let row = sqlx::query("SELECT * FROM api_key_usage WHERE api_key_id = $1")
                        .bind(api_key_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    let Some(r) = row else {
                        return Ok(crate::audit::KeyUse { api_key_id, ..Default::default() });
                    };
                    (|| -> Result<_, sqlx::Error> {
                        Ok(crate::audit::KeyUse {
                            api_key_id,
                            uses: r.try_get("use_count")?,
                            failures: r.try_get("failed_attempts")?,
                            last_used_ms: r.try_get("last_used_at_ms")?,
                            last_failed_ms: r.try_get("last_failed_at_ms")?,
                        })
                    })()
                    .map_err(sql_err)
                }

                async fn audit_log(&self, company_id: &str, limit: usize, offset: usize) -> StoreResult<(Vec<crate::audit::AuditRecord>, u64)> {
                    let rows = sqlx::query(
                        "SELECT * FROM audit_log WHERE company_id = $1 OR target_company_id = $1 \
                         ORDER BY at_ms DESC, audit_id DESC LIMIT $2 OFFSET $3",
                    )
                    .bind(company_id)
                    .bind(limit as i64)
                    .bind(offset as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    let total: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM audit_log WHERE company_id = $1 OR target_company_id = $1",
                    )
                    .bind(company_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    let out = rows
                        .iter()
                        .map(|r| {
                            Ok(crate::audit::AuditRecord {
                                audit_id: r.try_get("audit_id")?,
                                at_ms: r.try_get("at_ms")?,
                                request_id: r.try_get("request_id")?,
                                company_id: r.try_get("company_id")?,
                                target_company_id: r.try_get("target_company_id")?,
                                user_id: r.try_get("user_id")?,
                                api_key_id: r.try_get("api_key_id")?,
                                action: r.try_get("action")?,
                                object: r.try_get("object")?,
                                status: r.try_get("status")?,
                                outcome: r.try_get("outcome")?,
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(sql_err)?;
                    Ok((out, total as u64))
                }
            }

            #[async_trait]
            impl MoneyStore for $store {
                async fn balance(&self, company_id: &str) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar::<_, i64>("SELECT credits FROM balances WHERE company_id = $1")
                        .bind(company_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?
                        .unwrap_or(0))
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
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin().await.map_err(sql_err)?;
                    let seen = sqlx::query("SELECT body_hash, entry_id FROM topups WHERE company_id = $1 AND idempotency_key = $2")
                        .bind(company_id)
                        .bind(idempotency_key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(sql_err)?;
                    if let Some(r) = seen {
                        let hash: String = r.try_get("body_hash").map_err(sql_err)?;
                        if hash != body_hash {
                            return Ok(TopUpOutcome::KeyReused);
                        }
                        let balance = balance_in(&mut tx, company_id).await.map_err(sql_err)?;
                        return Ok(TopUpOutcome::Replayed { balance, entry_id: r.try_get("entry_id").map_err(sql_err)? });
                    }
                    let balance = add(&mut tx, company_id, credits)
                        .await
                        .map_err(sql_err)?
                        .ok_or_else(|| StoreError::Invalid("a top-up must be positive".into()))?;
                    let mut pending = Pending::default();
                    let entry_id = post(&mut pending, company_id, "topup", credits, balance, None, None, reason, at_ms)?;
                    flush(&mut tx, &mut pending).await?;
                    sqlx::query("INSERT INTO topups (company_id, idempotency_key, body_hash, entry_id) VALUES ($1, $2, $3, $4)")
                        .bind(company_id)
                        .bind(idempotency_key)
                        .bind(body_hash)
                        .bind(&entry_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql_err)?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(TopUpOutcome::Done { balance, entry_id })
                }

                async fn hold(&self, h: &Hold) -> StoreResult<HoldOutcome> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin().await.map_err(sql_err)?;
                    let mut pending = Pending::default();
                    let out = hold_in(&mut tx, &mut pending, h).await?;
                    flush(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(out)
                }

                async fn hold_batch(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
                    let together: StoreResult<Vec<HoldOutcome>> = async {
                        let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                        let mut tx = self.pool.begin().await.map_err(sql_err)?;
                        let mut pending = Pending::default();
                        let mut out = Vec::with_capacity(holds.len());
                        for h in holds {
                            out.push(hold_in(&mut tx, &mut pending, h).await?);
                        }
                        flush(&mut tx, &mut pending).await?;
                        tx.commit().await.map_err(sql_err)?;
                        Ok(out)
                    }
                    .await;
                    match together {
                        Ok(out) => Ok(out),
                        // One failed statement spoils the shared transaction: each on its own.
                        Err(_) => {
                            let mut out = Vec::with_capacity(holds.len());
                            for h in holds {
                                out.push(self.hold(h).await?);
                            }
                            Ok(out)
                        }
                    }
                }

                async fn settle_batch(&self, settles: &[Settle]) -> StoreResult<Vec<i64>> {
                    let together: StoreResult<Vec<i64>> = async {
                        let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                        let mut tx = self.pool.begin().await.map_err(sql_err)?;
                        let mut pending = Pending::default();
                        let mut out = Vec::with_capacity(settles.len());
                        for x in settles {
                            out.push(settle_in(&mut tx, &mut pending, x).await?);
                        }
                        flush(&mut tx, &mut pending).await?;
                        tx.commit().await.map_err(sql_err)?;
                        Ok(out)
                    }
                    .await;
                    match together {
                        Ok(out) => Ok(out),
                        Err(_) => {
                            let mut out = Vec::with_capacity(settles.len());
                            for x in settles {
                                out.push(self.settle(&x.execution_id, x.succeeded, x.rows, x.duration_ms, x.at_ms).await?);
                            }
                            Ok(out)
                        }
                    }
                }

                async fn settle(
                    &self,
                    execution_id: &str,
                    succeeded: bool,
                    rows: i64,
                    duration_ms: f64,
                    at_ms: i64,
                ) -> StoreResult<i64> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin().await.map_err(sql_err)?;
                    let x = Settle {
                        execution_id: execution_id.to_string(),
                        succeeded,
                        rows,
                        duration_ms,
                        at_ms,
                    };
                    let mut pending = Pending::default();
                    let balance = settle_in(&mut tx, &mut pending, &x).await?;
                    flush(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(balance)
                }

                async fn ledger(&self, company_id: &str, limit: usize, offset: usize) -> StoreResult<(Vec<LedgerEntry>, u64)> {
                    let rows = sqlx::query(
                        "SELECT * FROM ledger WHERE company_id = $1 ORDER BY created_at_ms DESC, entry_id DESC LIMIT $2 OFFSET $3",
                    )
                    .bind(company_id)
                    .bind(limit as i64)
                    .bind(offset as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE company_id = $1")
                        .bind(company_id)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    let entries = rows.iter().map(entry_from).collect::<Result<_, _>>().map_err(sql_err)?;
                    Ok((entries, total as u64))
                }

                async fn executions_of(&self, asset_ids: &[String], since_ms: i64) -> StoreResult<Vec<crate::execution_stats::ExecutionRow>> {
                    let mut out = Vec::new();
                    for chunk in asset_ids.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "SELECT asset_id, buyer_company_id, seller_company_id, status, seller_share, duration_ms, created_at_ms \
                             FROM executions WHERE created_at_ms >= ",
                        );
                        q.push_bind(since_ms).push(" AND asset_id IN (");
                        let mut ids = q.separated(", ");
                        for id in chunk {
                            ids.push_bind(id.clone());
                        }
                        q.push(")");
                        let rows = q.build().fetch_all(&self.pool).await.map_err(sql_err)?;
                        for r in &rows {
                            out.push(
                                (|| -> Result<_, sqlx::Error> {
                                    Ok(crate::execution_stats::ExecutionRow {
                                        asset_id: r.try_get("asset_id")?,
                                        buyer_company_id: r.try_get("buyer_company_id")?,
                                        seller_company_id: r.try_get("seller_company_id")?,
                                        status: r.try_get("status")?,
                                        seller_share: r.try_get("seller_share")?,
                                        duration_ms: r.try_get("duration_ms")?,
                                        created_at_ms: r.try_get("created_at_ms")?,
                                    })
                                })()
                                .map_err(sql_err)?,
                            );
                        }
                    }
                    out.sort_by_key(|r| r.created_at_ms);
                    Ok(out)
                }

                async fn stale_holds(&self, before_ms: i64) -> StoreResult<Vec<String>> {
                    sqlx::query_scalar("SELECT execution_id FROM executions WHERE status = 'held' AND created_at_ms < $1 ORDER BY created_at_ms")
                        .bind(before_ms)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(sql_err)
                }

                async fn claim_outbox(&self, limit: usize, now_ms: i64, lease_ms: i64) -> StoreResult<Vec<OutboxRecord>> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let stale = now_ms - lease_ms;
                    // The conditions are repeated outside the subquery so that, under
                    // concurrent claims, a row another relay just took is skipped.
                    let rows = sqlx::query(
                        "UPDATE outbox SET claimed_at_ms = $1 \
                         WHERE id IN (SELECT id FROM outbox WHERE published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < $2) ORDER BY id LIMIT $3) \
                         AND published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < $2) \
                         RETURNING id, topic, record_key, payload",
                    )
                    .bind(now_ms)
                    .bind(stale)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    let mut out = rows
                        .iter()
                        .map(|r| {
                            let hex_payload: String = r.try_get("payload")?;
                            Ok(OutboxRecord {
                                id: r.try_get("id")?,
                                topic: r.try_get("topic")?,
                                key: r.try_get("record_key")?,
                                payload: hex::decode(hex_payload).unwrap_or_default(),
                                log_from: None,
                            })
                        })
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                        .map_err(sql_err)?;
                    if !out.is_empty() {
                        // Records an earlier relay may already have appended.
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT id, log_from FROM outbox_attempts WHERE id IN (");
                        let mut list = q.separated(", ");
                        for r in &out {
                            list.push_bind(r.id.clone());
                        }
                        list.push_unseparated(")");
                        let tried: std::collections::HashMap<String, String> = q
                            .build_query_as::<(String, String)>()
                            .fetch_all(&self.pool)
                            .await
                            .map_err(sql_err)?
                            .into_iter()
                            .collect();
                        for r in &mut out {
                            r.log_from = tried.get(&r.id).cloned();
                        }
                    }
                    out.sort_by(|a, b| a.id.cmp(&b.id));
                    Ok(out)
                }

                async fn note_attempt(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO outbox_attempts (id, log_from) ");
                    q.push_values(ids, |mut row, id| {
                        row.push_bind(id.clone()).push_bind(log_from.to_string());
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    q.build().execute(&self.pool).await.map_err(sql_err)?;
                    Ok(())
                }

                async fn mark_published(&self, ids: &[String], _at_ms: i64) -> StoreResult<()> {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    // The outbox is a queue: a published record is removed, with its attempt.
                    let mut tx = self.pool.begin().await.map_err(sql_err)?;
                    for table in ["outbox", "outbox_attempts"] {
                        let mut q = sqlx::QueryBuilder::<$db>::new(format!("DELETE FROM {table} WHERE id IN ("));
                        let mut list = q.separated(", ");
                        for id in ids {
                            list.push_bind(id);
                        }
                        list.push_unseparated(")");
                        q.build().execute(&mut *tx).await.map_err(sql_err)?;
                    }
                    tx.commit().await.map_err(sql_err)?;
                    Ok(())
                }

                async fn unpublished_count(&self) -> StoreResult<u64> {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(n as u64)
                }

                async fn balance_checks(&self) -> StoreResult<Vec<BalanceCheck>> {
                    let rows = sqlx::query(
                        "SELECT c.company_id, COALESCE(b.credits, 0) AS balance, \
                         CAST(COALESCE((SELECT SUM(l.credits) FROM ledger l WHERE l.company_id = c.company_id), 0) AS BIGINT) AS ledger_sum \
                         FROM (SELECT company_id FROM balances UNION SELECT company_id FROM ledger) c \
                         LEFT JOIN balances b ON b.company_id = c.company_id ORDER BY c.company_id",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok(BalanceCheck {
                                company_id: r.try_get("company_id")?,
                                balance: r.try_get("balance")?,
                                ledger_sum: r.try_get("ledger_sum")?,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(sql_err)
                }

                async fn money_counts(&self) -> StoreResult<MoneyCounts> {
                    let count = |sql: &'static str| {
                        let pool = self.pool.clone();
                        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.map_err(sql_err) }
                    };
                    Ok(MoneyCounts {
                        executions_succeeded: count("SELECT count(*) FROM executions WHERE status = 'succeeded'").await?,
                        executions_failed: count("SELECT count(*) FROM executions WHERE status = 'failed'").await?,
                        executions_held: count("SELECT count(*) FROM executions WHERE status = 'held'").await?,
                        charged: count("SELECT count(*) FROM executions WHERE cost > 0").await?,
                        charged_failed: count("SELECT count(*) FROM executions WHERE cost > 0 AND status = 'failed'").await?,
                        debits: count("SELECT count(*) FROM ledger WHERE kind = 'debit'").await?,
                        refunds: count("SELECT count(*) FROM ledger WHERE kind = 'refund'").await?,
                        ledger_entries: count("SELECT count(*) FROM ledger").await?,
                    })
                }
            }
        }
    };
}

pub(crate) use money_sql_impl;
