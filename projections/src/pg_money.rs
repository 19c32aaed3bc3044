//! Postgres: one hold or one settlement in **one statement** (data-modifying CTEs), so a
//! lone call costs one round trip and one commit instead of a transaction of five or six
//! statements. This is the path of a call that has no company in its group commit (a quiet
//! moment, a single caller); a batch still takes the set statements of `sqlx_batches!`.
//!
//! Both statements write their outbox records as references (`ledger:<entry id>`,
//! `usage:<execution id>`): the balance after a movement is known only inside the statement,
//! so the relay builds the Avro record from the committed row when it claims it (see
//! `sqlmoney::resolve_refs`). The rules are the same as everywhere: the insert of the
//! execution is the lock on its id, the `CHECK (credits >= 0)` on the balance is what refuses
//! a short debit (the statement fails and leaves nothing), and balances are locked in
//! company-id order.

use crate::money::{Hold, HoldOutcome, Settle};
use crate::pg::PgMetadata;
use crate::sqlmoney::{new_id, settled_status};
use crate::{StoreError, StoreResult};
use sqlx::Row;

fn sql_err(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The SQLSTATE of a failed statement, if it was the database's refusal.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()),
        _ => None,
    }
}

/// The SQLSTATEs of a short hold (see [`HOLD`]): `check_violation`, `not_null_violation`.
const SHORT: [&str; 2] = ["23514", "23502"];

/// Inserts the execution (nothing if its id exists), then debits the buyer by its cost and
/// posts the debit with its outbox reference. Two refusals abort the whole statement, so a
/// short hold leaves nothing: a debit past zero fails the balance's `CHECK`, and a buyer
/// without a balance row leaves the ledger row's `balance_after` null (`NOT NULL`).
const HOLD: &str = "
WITH e AS (
    INSERT INTO executions (execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id,
        api_key_id, user_id, cost, seller_share, platform_fee, status, created_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'held', $11)
    ON CONFLICT (execution_id) DO NOTHING
    RETURNING execution_id
), d AS (
    UPDATE balances SET credits = credits - $8
    WHERE company_id = $2 AND $8 > 0 AND EXISTS (SELECT 1 FROM e)
    RETURNING credits
), l AS (
    INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id,
        counterparty_company_id, reason, created_at_ms)
    SELECT $12, $2, 'debit', -$8, (SELECT credits FROM d), $1, $3, NULL, $11 FROM e WHERE $8 > 0
), o AS (
    INSERT INTO outbox (id, topic, record_key, payload, created_at_ms)
    SELECT $12, 'billing', $2, 'ledger:' || $12, $11 FROM e WHERE $8 > 0
)
SELECT (SELECT count(*) FROM e) AS inserted,
       (SELECT credits FROM d) AS after,
       (SELECT credits FROM balances WHERE company_id = $2) AS before";

/// Settles a held execution: its movements (the seller's share and the platform's fee, or
/// the buyer's refund) are summed per company into the balances (company-id order), each
/// posted with its running balance, each with an outbox reference, and the execution's
/// `UsageRecorded` reference. A settlement of an execution that is not held changes nothing.
const SETTLE: &str = "
WITH x AS (
    UPDATE executions SET status = $2, result_rows = $3, duration_ms = $4, settled_at_ms = $5
    WHERE execution_id = $1 AND status = 'held'
    RETURNING buyer_company_id AS buyer, seller_company_id AS seller, platform_company_id AS platform,
        cost, seller_share, platform_fee
), m AS (
    SELECT seller AS company, 'seller_credit' AS kind, seller_share AS credits, buyer AS counterparty, 1 AS ord,
        $7 AS entry_id FROM x WHERE $6 AND seller_share > 0
    UNION ALL SELECT platform, 'platform_fee', platform_fee, buyer, 2, $8 FROM x WHERE $6 AND platform_fee > 0
    UNION ALL SELECT buyer, 'refund', cost, seller, 3, $9 FROM x WHERE NOT $6 AND cost > 0
), b AS (
    INSERT INTO balances (company_id, credits)
    SELECT company, SUM(credits) FROM m GROUP BY company ORDER BY company
    ON CONFLICT (company_id) DO UPDATE SET credits = balances.credits + EXCLUDED.credits
    RETURNING company_id, credits
), l AS (
    INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id,
        counterparty_company_id, reason, created_at_ms)
    SELECT m.entry_id, m.company, m.kind, m.credits,
        b.credits - COALESCE(SUM(m.credits) OVER (PARTITION BY m.company ORDER BY m.ord
            ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0),
        $1, m.counterparty, NULL, $5
    FROM m JOIN b ON b.company_id = m.company
), o AS (
    INSERT INTO outbox (id, topic, record_key, payload, created_at_ms)
    SELECT entry_id, 'billing', company, 'ledger:' || entry_id, $5 FROM m
    UNION ALL SELECT $10, 'usage', buyer, 'usage:' || $1, $5 FROM x
)
SELECT (SELECT buyer_company_id FROM executions WHERE execution_id = $1) AS buyer,
       (SELECT b.credits FROM b JOIN x ON b.company_id = x.buyer) AS moved,
       (SELECT credits FROM balances WHERE company_id =
            (SELECT buyer_company_id FROM executions WHERE execution_id = $1)) AS standing";

impl PgMetadata {
    /// One hold in one statement (see [`HOLD`]).
    pub(crate) async fn hold_one(&self, h: &Hold) -> StoreResult<HoldOutcome> {
        let entry_id = new_id();
        let answer = sqlx::query(HOLD)
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
            .bind(&entry_id)
            .fetch_one(&self.hold_pool)
            .await;
        let row = match answer {
            Ok(row) => row,
            Err(e) if sqlstate(&e).is_some_and(|c| SHORT.contains(&c.as_str())) => {
                return Ok(HoldOutcome::Insufficient {
                    balance: self.balance_of(&h.buyer_company_id).await?,
                });
            }
            Err(e) => return Err(sql_err(e)),
        };
        let inserted: i64 = row.try_get("inserted").map_err(sql_err)?;
        if inserted == 0 {
            let status: String =
                sqlx::query_scalar("SELECT status FROM executions WHERE execution_id = $1")
                    .bind(&h.execution_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(sql_err)?;
            return Ok(HoldOutcome::AlreadyHeld { status });
        }
        let after: Option<i64> = row.try_get("after").map_err(sql_err)?;
        let before: Option<i64> = row.try_get("before").map_err(sql_err)?;
        Ok(HoldOutcome::Held {
            balance_after: after.or(before).unwrap_or(0),
        })
    }

    /// One settlement in one statement (see [`SETTLE`]); the buyer's balance afterwards.
    pub(crate) async fn settle_one(&self, x: &Settle) -> StoreResult<i64> {
        let row = sqlx::query(SETTLE)
            .bind(&x.execution_id)
            .bind(settled_status(x.succeeded))
            .bind(x.rows)
            .bind(x.duration_ms)
            .bind(x.at_ms)
            .bind(x.succeeded)
            .bind(new_id())
            .bind(new_id())
            .bind(new_id())
            .bind(new_id())
            .fetch_one(&self.settle_pool)
            .await
            .map_err(sql_err)?;
        let moved: Option<i64> = row.try_get("moved").map_err(sql_err)?;
        let standing: Option<i64> = row.try_get("standing").map_err(sql_err)?;
        Ok(moved.or(standing).unwrap_or(0))
    }

    async fn balance_of(&self, company: &str) -> StoreResult<i64> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT credits FROM balances WHERE company_id = $1")
                .bind(company)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_err)?;
        Ok(n.unwrap_or(0))
    }
}
