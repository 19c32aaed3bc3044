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
CREATE INDEX IF NOT EXISTS executions_by_buyer ON executions (buyer_company_id, created_at_ms);
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
CREATE TABLE IF NOT EXISTS rate_counters (
    counter_key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    n BIGINT NOT NULL,
    lim BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    PRIMARY KEY (counter_key, window_start),
    CHECK (n <= lim)
);
CREATE TABLE IF NOT EXISTS rate_slots (
    slot_key TEXT NOT NULL,
    slot_no BIGINT NOT NULL,
    lease_id TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (slot_key, slot_no)
);
CREATE TABLE IF NOT EXISTS api_key_usage (
    api_key_id BIGINT PRIMARY KEY,
    use_count BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    last_failed_at_ms BIGINT
);
";

// What the sqlx and the SQLite writers share: the rows a transaction writes, built in Rust.

use crate::money::{Hold, HoldOutcome, Settle};
use crate::{StoreError, StoreResult};
use std::collections::{BTreeMap, HashMap};

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Ledger and outbox rows a transaction writes, inserted together just before it
/// commits (one multi-row statement per table instead of one per row).
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) ledger: Vec<LedgerRow>,
    pub(crate) outbox: Vec<OutboxRow>,
}

/// One change to one company's balance, for [`move_credits`].
/// An outbox record: id, topic, record key, hex-encoded Avro payload, time.
pub(crate) type OutboxRow = (String, String, String, String, i64);

pub(crate) struct Movement {
    pub(crate) company: String,
    pub(crate) kind: &'static str,
    pub(crate) credits: i64,
    pub(crate) execution_id: String,
    pub(crate) counterparty: String,
    pub(crate) at_ms: i64,
}

pub(crate) struct LedgerRow {
    pub(crate) entry_id: String,
    pub(crate) company_id: String,
    pub(crate) kind: String,
    pub(crate) credits: i64,
    pub(crate) balance_after: i64,
    pub(crate) execution_id: Option<String>,
    pub(crate) counterparty: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) at_ms: i64,
}

pub(crate) fn outbox(p: &mut Pending, topic: &str, key: &str, payload: Vec<u8>, at_ms: i64) {
    p.outbox.push((
        new_id(),
        topic.to_string(),
        key.to_string(),
        hex::encode(payload),
        at_ms,
    ));
}

/// A ledger row and its `LedgerEntryPosted` in the outbox (written at [`flush`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn post(
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
    let row = LedgerRow {
        entry_id: entry_id.clone(),
        company_id: company.to_string(),
        kind: kind.to_string(),
        credits,
        balance_after,
        execution_id: execution_id.map(str::to_string),
        counterparty: counterparty.map(str::to_string),
        reason: reason.map(str::to_string),
        at_ms,
    };
    let payload = ledger_payload(&row)?;
    p.ledger.push(row);
    outbox(p, "billing", company, payload, at_ms);
    Ok(entry_id)
}

/// The `LedgerEntryPosted` of a ledger row, encoded.
pub(crate) fn ledger_payload(r: &LedgerRow) -> StoreResult<Vec<u8>> {
    let record = schemas::LedgerEntryPosted {
        entry_id: r.entry_id.clone(),
        company_id: r.company_id.clone(),
        kind: r.kind.clone(),
        credits: r.credits,
        balance_after: r.balance_after,
        execution_id: r.execution_id.clone(),
        counterparty_company_id: r.counterparty.clone(),
        at_ms: r.at_ms,
    };
    schemas::encode(&record).map_err(|e| StoreError::Backend(e.to_string()))
}

/// The `UsageRecorded` of a settled execution, encoded.
pub(crate) fn usage_payload(x: &Settle, r: &HeldRow) -> StoreResult<Vec<u8>> {
    let usage = schemas::UsageRecorded {
        execution_id: x.execution_id.clone(),
        buyer_company_id: r.buyer.clone(),
        seller_company_id: r.seller.clone(),
        asset_id: r.asset_id.clone(),
        api_key_id: r.api_key_id,
        user_id: r.user_id.clone(),
        credits: if x.succeeded { r.cost } else { 0 },
        seller_credits: if x.succeeded { r.share } else { 0 },
        rows: x.rows,
        duration_ms: x.duration_ms,
        status: settled_status(x.succeeded).to_string(),
        mode: "live".into(),
        at_ms: x.at_ms,
    };
    schemas::encode(&usage).map_err(|e| StoreError::Backend(e.to_string()))
}

/// What an outbox row's `payload` column holds: the hex-encoded record, or a reference to the
/// committed row the record is built from when it is claimed (written by `pg_money`, whose
/// statements learn a balance only as they run).
#[derive(Debug, PartialEq)]
pub(crate) enum Stored {
    Record(Vec<u8>),
    Ledger(String),
    Usage(String),
}

/// Reads a `payload` column (hex never holds a colon, so the forms cannot be confused).
pub(crate) fn stored(payload: &str) -> Stored {
    if let Some(id) = payload.strip_prefix("ledger:") {
        return Stored::Ledger(id.to_string());
    }
    if let Some(id) = payload.strip_prefix("usage:") {
        return Stored::Usage(id.to_string());
    }
    Stored::Record(hex::decode(payload).unwrap_or_default())
}

/// A held execution's row, as a settlement reads it back.
pub(crate) struct HeldRow {
    pub(crate) buyer: String,
    pub(crate) seller: String,
    pub(crate) platform: String,
    pub(crate) asset_id: String,
    pub(crate) api_key_id: i64,
    pub(crate) user_id: String,
    pub(crate) cost: i64,
    pub(crate) share: i64,
    pub(crate) fee: i64,
}

/// The columns a settlement returns, in [`HeldRow`]'s order.
pub(crate) const HELD_COLUMNS: &str =
    "execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, user_id, cost, seller_share, platform_fee";

/// The index of each id's first occurrence, and the holds that are first occurrences.
pub(crate) fn first_holds(holds: &[Hold]) -> (HashMap<&str, usize>, Vec<&Hold>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let unique = holds
        .iter()
        .enumerate()
        .filter(|(i, h)| *first.entry(h.execution_id.as_str()).or_insert(*i) == *i)
        .map(|(_, h)| h)
        .collect();
    (first, unique)
}

/// The buyers of `holds`, each once, in id order (the order balances are locked in).
pub(crate) fn buyers_of<'a>(holds: &[&'a Hold]) -> Vec<&'a str> {
    let mut buyers: Vec<&str> = holds.iter().map(|h| h.buyer_company_id.as_str()).collect();
    buyers.sort_unstable();
    buyers.dedup();
    buyers
}

/// The ledger row (and outbox record) of a hold's debit.
pub(crate) fn post_debit(p: &mut Pending, h: &Hold, balance_after: i64) -> StoreResult<()> {
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
    Ok(())
}

/// One debit per hold.
pub(crate) fn debits(holds: &[&Hold]) -> Vec<Movement> {
    holds
        .iter()
        .map(|h| Movement {
            company: h.buyer_company_id.clone(),
            kind: "debit",
            credits: -h.cost,
            execution_id: h.execution_id.clone(),
            counterparty: h.seller_company_id.clone(),
            at_ms: h.at_ms,
        })
        .collect()
}

/// Movements grouped by company, in company-id order (so two transactions never wait on
/// each other in a cycle), with each company's total.
pub(crate) fn by_company(moves: &[Movement]) -> BTreeMap<&str, (i64, Vec<&Movement>)> {
    let mut out: BTreeMap<&str, (i64, Vec<&Movement>)> = BTreeMap::new();
    for m in moves {
        let e = out.entry(m.company.as_str()).or_default();
        e.0 += m.credits;
        e.1.push(m);
    }
    out
}

/// A ledger row per movement with its running balance, given each company's balance after
/// all of its movements.
pub(crate) fn post_running(
    p: &mut Pending,
    grouped: &BTreeMap<&str, (i64, Vec<&Movement>)>,
    after_all: &HashMap<String, i64>,
) -> StoreResult<()> {
    for (company, (total, list)) in grouped {
        let last = after_all
            .get(*company)
            .copied()
            .ok_or_else(|| StoreError::Backend(format!("no balance came back for {company}")))?;
        let mut after = last - total;
        for m in list {
            after += m.credits;
            post(
                p,
                company,
                m.kind,
                m.credits,
                after,
                Some(&m.execution_id),
                Some(&m.counterparty),
                None,
                m.at_ms,
            )?;
        }
    }
    Ok(())
}

/// What settling `x` moves (the seller's share and the platform's fee, or the buyer's
/// refund); its `UsageRecorded` goes into the outbox.
pub(crate) fn settle_effects(
    p: &mut Pending,
    x: &Settle,
    r: &HeldRow,
) -> StoreResult<Vec<Movement>> {
    let movement = |company: &str, kind: &'static str, credits: i64, counterparty: &str| Movement {
        company: company.to_string(),
        kind,
        credits,
        execution_id: x.execution_id.clone(),
        counterparty: counterparty.to_string(),
        at_ms: x.at_ms,
    };
    let mut moves = Vec::new();
    if x.succeeded {
        for (company, kind, credits) in [
            (&r.seller, "seller_credit", r.share),
            (&r.platform, "platform_fee", r.fee),
        ] {
            if credits > 0 {
                moves.push(movement(company, kind, credits, &r.buyer));
            }
        }
    } else if r.cost > 0 {
        moves.push(movement(&r.buyer, "refund", r.cost, &r.seller));
    }
    outbox(p, "usage", &r.buyer, usage_payload(x, r)?, x.at_ms);
    Ok(moves)
}

pub(crate) fn settled_status(succeeded: bool) -> &'static str {
    if succeeded {
        "succeeded"
    } else {
        "failed"
    }
}

/// Each hold's answer in a batch: its id's outcome; a repeat of an id within the batch sees
/// what its first occurrence left.
pub(crate) fn hold_answers(
    holds: &[Hold],
    first: &HashMap<&str, usize>,
    outcome: &HashMap<String, HoldOutcome>,
) -> Vec<HoldOutcome> {
    holds
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let o = outcome
                .get(&h.execution_id)
                .cloned()
                .unwrap_or(HoldOutcome::Insufficient { balance: 0 });
            match (first.get(h.execution_id.as_str()) == Some(&i), o) {
                (false, HoldOutcome::Held { .. }) => HoldOutcome::AlreadyHeld {
                    status: "held".into(),
                },
                (_, o) => o,
            }
        })
        .collect()
}

/// Each settle's answer in a batch: its buyer's balance as it stood right after it (the final
/// balance less the refunds that come after it in the batch).
pub(crate) fn settle_answers(
    settles: &[Settle],
    is_first: &[bool],
    buyer_of: &HashMap<String, String>,
    mut running: HashMap<String, i64>,
    moves: &[Movement],
) -> Vec<i64> {
    let refunds: HashMap<&str, i64> = moves
        .iter()
        .filter(|m| m.kind == "refund")
        .map(|m| (m.execution_id.as_str(), m.credits))
        .collect();
    let mut out = vec![0; settles.len()];
    for (i, x) in settles.iter().enumerate().rev() {
        let Some(buyer) = buyer_of.get(&x.execution_id) else {
            continue;
        };
        let balance = running.get(buyer).copied().unwrap_or(0);
        out[i] = balance;
        if is_first[i] {
            if let (Some(r), Some(b)) =
                (refunds.get(x.execution_id.as_str()), running.get_mut(buyer))
            {
                *b = balance - r;
            }
        }
    }
    out
}

/// Whether each settle is its id's first in the batch (a repeat changes nothing).
pub(crate) fn first_settles(settles: &[Settle]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    settles
        .iter()
        .map(|x| seen.insert(x.execution_id.as_str()))
        .collect()
}

/// The batch paths over sqlx (Postgres): a batch of holds or settlements in a few set
/// statements, one transaction. Expanded inside `money_sql_impl!`'s module, whose helpers it uses.
macro_rules! sqlx_batches {
    ($store:ident, $db:ty) => {
            use crate::sqlmoney::{buyers_of, by_company, debits, first_holds, first_settles, hold_answers, post_running, settle_answers, settle_effects, settled_status, Movement, HELD_COLUMNS};
            use std::collections::{HashMap, HashSet};

            /// Adds each (company, credits > 0) to its balance (creating it) in one statement;
            /// the new balances.
            async fn credit_all(tx: &mut Tx<'_>, credits: &[(&str, i64)]) -> Result<HashMap<String, i64>, sqlx::Error> {
                let mut out = HashMap::new();
                if credits.is_empty() {
                    return Ok(out);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO balances (company_id, credits) ");
                q.push_values(credits, |mut b, (company, n)| {
                    b.push_bind(company.to_string()).push_bind(*n);
                });
                q.push(" ON CONFLICT (company_id) DO UPDATE SET credits = balances.credits + EXCLUDED.credits RETURNING company_id, credits");
                for r in q.build().fetch_all(&mut **tx).await? {
                    out.insert(r.try_get("company_id")?, r.try_get("credits")?);
                }
                Ok(out)
            }

            /// Balances of `companies` as they stand in `tx` (0 for a company without one).
            async fn balances_in(tx: &mut Tx<'_>, companies: &[&str]) -> Result<HashMap<String, i64>, sqlx::Error> {
                let mut out: HashMap<String, i64> = companies.iter().map(|c| (c.to_string(), 0)).collect();
                if companies.is_empty() {
                    return Ok(out);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT company_id, credits FROM balances WHERE company_id IN (");
                let mut ids = q.separated(", ");
                for c in companies {
                    ids.push_bind(c.to_string());
                }
                q.push(")");
                for r in q.build().fetch_all(&mut **tx).await? {
                    out.insert(r.try_get("company_id")?, r.try_get("credits")?);
                }
                Ok(out)
            }

            /// Adds each company's movements to its balance with one statement per company
            /// (credits for several companies in one), in company-id order, and posts a ledger
            /// row per movement with its running balance. `None` if a debit would take a
            /// balance below zero (then nothing was changed for that company, and the caller
            /// must not commit).
            async fn move_credits(tx: &mut Tx<'_>, p: &mut Pending, moves: &[Movement]) -> StoreResult<Option<()>> {
                let grouped = by_company(moves);
                let credited: Vec<(&str, i64)> = grouped.iter().map(|(c, (t, _))| (*c, *t)).filter(|(_, t)| *t > 0).collect();
                let mut after_all = credit_all(tx, &credited).await.map_err(sql_err)?;
                for (company, (total, _)) in grouped.iter().filter(|(_, (t, _))| *t <= 0) {
                    let Some(last) = add(tx, company, *total).await.map_err(sql_err)? else {
                        return Ok(None);
                    };
                    after_all.insert(company.to_string(), last);
                }
                post_running(p, &grouped, &after_all)?;
                Ok(Some(()))
            }

            /// [`hold_in`] for a batch with a few statements in all: one insert of every
            /// execution (the lock on each id), one debit per buyer for the sum of its holds
            /// when the balance covers them all, and one read of the balances. A buyer whose
            /// balance does not cover the whole batch is held one execution at a time, in order.
            async fn hold_many_in(tx: &mut Tx<'_>, p: &mut Pending, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
                let (first, unique) = first_holds(holds);
                let mut inserted = HashSet::new();
                for chunk in unique.chunks(200) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO executions (execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, \
                         user_id, cost, seller_share, platform_fee, status, created_at_ms) ",
                    );
                    q.push_values(chunk, |mut b, h| {
                        b.push_bind(h.execution_id.clone())
                            .push_bind(h.buyer_company_id.clone())
                            .push_bind(h.seller_company_id.clone())
                            .push_bind(h.platform_company_id.clone())
                            .push_bind(h.asset_id.clone())
                            .push_bind(h.api_key_id)
                            .push_bind(h.user_id.clone())
                            .push_bind(h.cost)
                            .push_bind(h.seller_share)
                            .push_bind(h.platform_fee)
                            .push_bind("held")
                            .push_bind(h.at_ms);
                    });
                    q.push(" ON CONFLICT (execution_id) DO NOTHING RETURNING execution_id");
                    for r in q.build().fetch_all(&mut **tx).await.map_err(sql_err)? {
                        inserted.insert(r.try_get::<String, _>("execution_id").map_err(sql_err)?);
                    }
                }
                let mut outcome: HashMap<String, HoldOutcome> = HashMap::new();
                for h in unique.iter().filter(|h| !inserted.contains(&h.execution_id)) {
                    let status: String = sqlx::query_scalar("SELECT status FROM executions WHERE execution_id = $1")
                        .bind(&h.execution_id)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(sql_err)?;
                    outcome.insert(h.execution_id.clone(), HoldOutcome::AlreadyHeld { status });
                }
                let charged: Vec<&Hold> = unique.iter().copied().filter(|h| inserted.contains(&h.execution_id) && h.cost > 0).collect();
                for buyer in buyers_of(&charged) {
                    let mine: Vec<&Hold> = charged.iter().copied().filter(|h| h.buyer_company_id == buyer).collect();
                    let mark = p.ledger.len();
                    if move_credits(tx, p, &debits(&mine)).await?.is_some() {
                        for (h, row) in mine.iter().zip(&p.ledger[mark..]) {
                            outcome.insert(h.execution_id.clone(), HoldOutcome::Held { balance_after: row.balance_after });
                        }
                        continue;
                    }
                    // Not all covered: one at a time, so exactly the ones that fit are held.
                    for h in mine {
                        sqlx::query("DELETE FROM executions WHERE execution_id = $1")
                            .bind(&h.execution_id)
                            .execute(&mut **tx)
                            .await
                            .map_err(sql_err)?;
                        outcome.insert(h.execution_id.clone(), hold_in(tx, p, h).await?);
                    }
                }
                let free: Vec<&Hold> = unique.iter().copied().filter(|h| inserted.contains(&h.execution_id) && h.cost == 0).collect();
                if !free.is_empty() {
                    let companies: Vec<&str> = free.iter().map(|h| h.buyer_company_id.as_str()).collect();
                    let now = balances_in(tx, &companies).await.map_err(sql_err)?;
                    for h in free {
                        let balance_after = now.get(&h.buyer_company_id).copied().unwrap_or(0);
                        outcome.insert(h.execution_id.clone(), HoldOutcome::Held { balance_after });
                    }
                }
                Ok(hold_answers(holds, &first, &outcome))
            }

            /// [`settle_in`] for a batch with a few statements in all: one update of every held
            /// execution, one balance change per company (see [`move_credits`]) and one read of
            /// the buyers' balances afterwards.
            async fn settle_many_in(tx: &mut Tx<'_>, p: &mut Pending, settles: &[Settle]) -> StoreResult<Vec<i64>> {
                let is_first = first_settles(settles);
                let unique: Vec<&Settle> = settles.iter().zip(&is_first).filter(|(_, f)| **f).map(|(x, _)| x).collect();
                let mut settled: HashMap<String, HeldRow> = HashMap::new();
                for chunk in unique.chunks(200) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE executions SET status = v.x_status, result_rows = v.x_rows, duration_ms = v.x_duration, settled_at_ms = v.x_at \
                         FROM (SELECT column1 AS x_id, column2 AS x_status, column3 AS x_rows, column4 AS x_duration, column5 AS x_at FROM (",
                    );
                    q.push_values(chunk, |mut b, x| {
                        b.push_bind(x.execution_id.clone())
                            .push_bind(settled_status(x.succeeded))
                            .push_bind(x.rows)
                            .push_bind(x.duration_ms)
                            .push_bind(x.at_ms);
                    });
                    q.push(") AS t) AS v WHERE executions.execution_id = v.x_id AND executions.status = 'held' RETURNING ");
                    q.push(HELD_COLUMNS);
                    for r in q.build().fetch_all(&mut **tx).await.map_err(sql_err)? {
                        settled.insert(r.try_get("execution_id").map_err(sql_err)?, held_row(&r).map_err(sql_err)?);
                    }
                }
                let mut moves = Vec::new();
                let mut buyer_of: HashMap<String, String> = HashMap::new();
                for x in &unique {
                    if let Some(r) = settled.get(&x.execution_id) {
                        moves.extend(settle_effects(p, x, r)?);
                        buyer_of.insert(x.execution_id.clone(), r.buyer.clone());
                    }
                }
                if move_credits(tx, p, &moves).await?.is_none() {
                    return Err(StoreError::Backend("a settlement would take a balance below zero".into()));
                }
                for x in unique.iter().filter(|x| !settled.contains_key(&x.execution_id)) {
                    let buyer: Option<String> = sqlx::query_scalar("SELECT buyer_company_id FROM executions WHERE execution_id = $1")
                        .bind(&x.execution_id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(sql_err)?;
                    if let Some(b) = buyer {
                        buyer_of.insert(x.execution_id.clone(), b);
                    }
                }
                let companies: Vec<&str> = buyer_of.values().map(String::as_str).collect();
                let running = balances_in(tx, &companies).await.map_err(sql_err)?;
                Ok(settle_answers(settles, &is_first, &buyer_of, running, &moves))
            }

            /// [`flush`] in one statement (a data-modifying CTE writes the ledger rows, the
            /// outer insert the outbox records): one round trip fewer per transaction.
            async fn flush_together(tx: &mut Tx<'_>, p: &mut Pending) -> Result<(), StoreError> {
                if p.ledger.is_empty() || p.outbox.is_empty() || p.ledger.len() > 500 || p.outbox.len() > 500 {
                    return flush(tx, p).await;
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "WITH l AS (INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id, counterparty_company_id, reason, created_at_ms) ",
                );
                push_ledger(&mut q, &p.ledger);
                q.push(") INSERT INTO outbox (id, topic, record_key, payload, created_at_ms) ");
                push_outbox(&mut q, &p.outbox);
                q.build().execute(&mut **tx).await.map_err(sql_err)?;
                p.ledger.clear();
                p.outbox.clear();
                Ok(())
            }

            /// The claimed outbox rows as records: a reference (see `sqlmoney::Stored`) is
            /// built from the committed ledger or execution row it names.
            async fn resolve_refs(
                pool: &sqlx::Pool<$db>,
                claimed: Vec<(String, String, String, crate::sqlmoney::Stored)>,
            ) -> StoreResult<Vec<OutboxRecord>> {
                use crate::sqlmoney::Stored;
                let ledger_ids: Vec<&str> = claimed.iter().filter_map(|c| match &c.3 { Stored::Ledger(id) => Some(id.as_str()), _ => None }).collect();
                let usage_ids: Vec<&str> = claimed.iter().filter_map(|c| match &c.3 { Stored::Usage(id) => Some(id.as_str()), _ => None }).collect();
                let mut built: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
                for chunk in ledger_ids.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM ledger WHERE entry_id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    list.push_unseparated(")");
                    for r in q.build().fetch_all(pool).await.map_err(sql_err)? {
                        let e = entry_from(&r).map_err(sql_err)?;
                        let row = LedgerRow {
                            entry_id: e.entry_id,
                            company_id: e.company_id,
                            kind: e.kind,
                            credits: e.credits,
                            balance_after: e.balance_after,
                            execution_id: e.execution_id,
                            counterparty: e.counterparty_company_id,
                            reason: e.reason,
                            at_ms: e.created_at_ms,
                        };
                        built.insert(format!("ledger:{}", row.entry_id), crate::sqlmoney::ledger_payload(&row)?);
                    }
                }
                for chunk in usage_ids.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, user_id, \
                         cost, seller_share, platform_fee, status, result_rows, duration_ms, settled_at_ms FROM executions WHERE execution_id IN (",
                    );
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.to_string());
                    }
                    list.push_unseparated(")");
                    for r in q.build().fetch_all(pool).await.map_err(sql_err)? {
                        let status: String = r.try_get("status").map_err(sql_err)?;
                        let x = Settle {
                            execution_id: r.try_get("execution_id").map_err(sql_err)?,
                            succeeded: status == "succeeded",
                            rows: r.try_get::<Option<i64>, _>("result_rows").map_err(sql_err)?.unwrap_or(0),
                            duration_ms: r.try_get::<Option<f64>, _>("duration_ms").map_err(sql_err)?.unwrap_or(0.0),
                            at_ms: r.try_get::<Option<i64>, _>("settled_at_ms").map_err(sql_err)?.unwrap_or(0),
                        };
                        let held = held_row(&r).map_err(sql_err)?;
                        built.insert(format!("usage:{}", x.execution_id), crate::sqlmoney::usage_payload(&x, &held)?);
                    }
                }
                claimed
                    .into_iter()
                    .map(|(id, topic, key, stored)| {
                        let payload = match stored {
                            Stored::Record(bytes) => bytes,
                            Stored::Ledger(r) => built.remove(&format!("ledger:{r}")).ok_or_else(|| StoreError::Backend(format!("outbox {id}: no ledger entry {r}")))?,
                            Stored::Usage(r) => built.remove(&format!("usage:{r}")).ok_or_else(|| StoreError::Backend(format!("outbox {id}: no execution {r}")))?,
                        };
                        Ok(OutboxRecord { id, topic, key, payload, log_from: None })
                    })
                    .collect()
            }

            impl $store {
                /// The outbox relay's calls over sqlx (see `MoneyStore::claim_outbox`).
                pub(crate) async fn claim_sqlx(&self, limit: usize, now_ms: i64, lease_ms: i64) -> StoreResult<Vec<OutboxRecord>> {
                    let writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let stale = now_ms - lease_ms;
                    // The conditions are repeated outside the subquery so that, under
                    // concurrent claims, a row another relay just took is skipped. `= ANY(ARRAY(…))`
                    // and not `IN (…)`: the ids are gathered once, whatever the plan. With
                    // `IN`, a plan cached while the outbox was small (a nested-loop semi join)
                    // took seconds per claim once it held 50,000 records (measured).
                    let rows = sqlx::query(
                        "UPDATE outbox SET claimed_at_ms = $1 \
                         WHERE id = ANY(ARRAY(SELECT id FROM outbox WHERE published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < $2) ORDER BY id LIMIT $3)) \
                         AND published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < $2) \
                         RETURNING id, topic, record_key, payload",
                    )
                    .bind(now_ms)
                    .bind(stale)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    let claimed = rows
                        .iter()
                        .map(|r| {
                            let payload: String = r.try_get("payload")?;
                            Ok((r.try_get("id")?, r.try_get("topic")?, r.try_get("record_key")?, crate::sqlmoney::stored(&payload)))
                        })
                        .collect::<Result<Vec<(String, String, String, crate::sqlmoney::Stored)>, sqlx::Error>>()
                        .map_err(sql_err)?;
                    // The claim is written; reading the attempts needs no writer turn.
                    drop(writer);
                    let mut out = resolve_refs(&self.pool, claimed).await?;
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

                pub(crate) async fn note_sqlx(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
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

                /// Removes published records and their attempts in one statement (one commit).
                pub(crate) async fn mark_sqlx(&self, ids: &[String]) -> StoreResult<()> {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    sqlx::query("WITH a AS (DELETE FROM outbox_attempts WHERE id = ANY($1)) DELETE FROM outbox WHERE id = ANY($1)")
                        .bind(ids)
                        .execute(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    Ok(())
                }

                pub(crate) async fn claim_now(&self, limit: usize, now_ms: i64, lease_ms: i64) -> StoreResult<Vec<crate::money::OutboxRecord>> {
                    self.claim_sqlx(limit, now_ms, lease_ms).await
                }

                pub(crate) async fn note_now(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
                    self.note_sqlx(ids, log_from).await
                }

                pub(crate) async fn mark_now(&self, ids: &[String]) -> StoreResult<()> {
                    self.mark_sqlx(ids).await
                }

                /// A hold on its own (batching is `GroupCommit`'s, in front of this store).
                pub(crate) async fn hold_now(&self, h: &Hold) -> StoreResult<HoldOutcome> {
                    self.hold_one(h).await
                }

                pub(crate) async fn settle_now(&self, x: &Settle) -> StoreResult<i64> {
                    self.settle_one(x).await
                }

                /// One transaction for a batch of holds (see [`hold_many_in`]); a batch of one
                /// is one statement (`pg_money`).
                pub(crate) async fn commit_holds(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
                    if let [h] = holds {
                        return Ok(vec![self.hold_one(h).await?]);
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                    let mut pending = Pending::default();
                    let out = hold_many_in(&mut tx, &mut pending, holds).await?;
                    flush_together(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(out)
                }

                /// One transaction for a batch of settlements (see [`settle_many_in`]); a batch
                /// of one is one statement (`pg_money`).
                pub(crate) async fn commit_settles(&self, settles: &[Settle]) -> StoreResult<Vec<i64>> {
                    if let [x] = settles {
                        return Ok(vec![self.settle_one(x).await?]);
                    }
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.settle_pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                    let mut pending = Pending::default();
                    let out = settle_many_in(&mut tx, &mut pending, settles).await?;
                    flush_together(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(out)
                }
            }
    };
}

pub(crate) use sqlx_batches;

macro_rules! money_sql_impl {
    ($store:ident, $db:ty $(, $batches:ident)?) => {
        mod money_impl {
            use super::$store;
            use crate::money::*;
            use crate::{StoreError, StoreResult};
            use async_trait::async_trait;
            use crate::sqlmoney::{post, post_debit, HeldRow, LedgerRow, OutboxRow, Pending};
            use sqlx::{Row, Transaction};

            type Tx<'a> = Transaction<'a, $db>;

            fn sql_err(e: sqlx::Error) -> StoreError {
                StoreError::Backend(e.to_string())
            }

            /// The `VALUES` of a multi-row ledger insert.
            fn push_ledger(q: &mut sqlx::QueryBuilder<'_, $db>, rows: &[LedgerRow]) {
                q.push_values(rows, |mut b, r| {
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
            }

            /// The `VALUES` of a multi-row outbox insert.
            fn push_outbox(q: &mut sqlx::QueryBuilder<'_, $db>, rows: &[OutboxRow]) {
                q.push_values(rows, |mut b, r| {
                    b.push_bind(r.0.clone())
                        .push_bind(r.1.clone())
                        .push_bind(r.2.clone())
                        .push_bind(r.3.clone())
                        .push_bind(r.4);
                });
            }

            /// Writes what `p` holds into `tx`.
            async fn flush(tx: &mut Tx<'_>, p: &mut Pending) -> Result<(), StoreError> {
                for chunk in p.ledger.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id, counterparty_company_id, reason, created_at_ms) ",
                    );
                    push_ledger(&mut q, chunk);
                    q.build().execute(&mut **tx).await.map_err(sql_err)?;
                }
                for chunk in p.outbox.chunks(500) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO outbox (id, topic, record_key, payload, created_at_ms) ",
                    );
                    push_outbox(&mut q, chunk);
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

            fn held_row(r: &<$db as sqlx::Database>::Row) -> Result<HeldRow, sqlx::Error> {
                Ok(HeldRow {
                    buyer: r.try_get("buyer_company_id")?,
                    seller: r.try_get("seller_company_id")?,
                    platform: r.try_get("platform_company_id")?,
                    asset_id: r.try_get("asset_id")?,
                    api_key_id: r.try_get("api_key_id")?,
                    user_id: r.try_get("user_id")?,
                    cost: r.try_get("cost")?,
                    share: r.try_get("seller_share")?,
                    fee: r.try_get("platform_fee")?,
                })
            }

            /// Settles one held execution inside `tx`; the buyer's balance afterwards.
            async fn settle_in(tx: &mut Tx<'_>, p: &mut Pending, x: &Settle) -> StoreResult<i64> {
                let execution_id = x.execution_id.as_str();
                // The update is the lock: only the first settle of a held execution wins.
                let row = sqlx::query(
                    "UPDATE executions SET status = $1, result_rows = $2, duration_ms = $3, settled_at_ms = $4 \
                     WHERE execution_id = $5 AND status = 'held' \
                     RETURNING buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, user_id, cost, seller_share, platform_fee",
                )
                .bind(crate::sqlmoney::settled_status(x.succeeded))
                .bind(x.rows)
                .bind(x.duration_ms)
                .bind(x.at_ms)
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
                let r = held_row(&r).map_err(sql_err)?;
                for m in crate::sqlmoney::settle_effects(p, x, &r)? {
                    let after = add(tx, &m.company, m.credits).await.map_err(sql_err)?.unwrap_or(0);
                    post(p, &m.company, m.kind, m.credits, after, Some(&m.execution_id), Some(&m.counterparty), None, m.at_ms)?;
                }
                balance_in(tx, &r.buyer).await.map_err(sql_err)
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
                post_debit(p, h, balance_after)?;
                Ok(HoldOutcome::Held { balance_after })
            }

            impl $store {
                /// One hold in its own transaction (the fallback when a batch fails).
                pub(crate) async fn hold_alone(&self, h: &Hold) -> StoreResult<HoldOutcome> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                    let mut pending = Pending::default();
                    let out = hold_in(&mut tx, &mut pending, h).await?;
                    flush(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(out)
                }

                /// One settlement in its own transaction (the fallback when a batch fails).
                pub(crate) async fn settle_alone(&self, x: &Settle) -> StoreResult<i64> {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                    let mut pending = Pending::default();
                    let balance = settle_in(&mut tx, &mut pending, x).await?;
                    flush(&mut tx, &mut pending).await?;
                    tx.commit().await.map_err(sql_err)?;
                    Ok(balance)
                }
            }

            $(crate::sqlmoney::$batches!($store, $db);)?

            crate::sqlalerts::alerts_sql_impl!($store, $db);

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
                    let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
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
                    self.hold_now(h).await
                }

                async fn hold_batch(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
                    match self.commit_holds(holds).await {
                        Ok(out) => Ok(out),
                        // One failed statement spoils the shared transaction: each on its own.
                        Err(e) => {
                            tracing::warn!(error = %e, holds = holds.len(), "a batch of holds failed; holding one at a time");
                            metrics::counter!("tally_money_batch_fallbacks_total").increment(1);
                            let mut out = Vec::with_capacity(holds.len());
                            for h in holds {
                                out.push(self.hold_alone(h).await?);
                            }
                            Ok(out)
                        }
                    }
                }

                async fn settle_batch(&self, settles: &[Settle]) -> StoreResult<Vec<i64>> {
                    match self.commit_settles(settles).await {
                        Ok(out) => Ok(out),
                        Err(e) => {
                            tracing::warn!(error = %e, settles = settles.len(), "a batch of settlements failed; settling one at a time");
                            metrics::counter!("tally_money_batch_fallbacks_total").increment(1);
                            let mut out = Vec::with_capacity(settles.len());
                            for x in settles {
                                out.push(self.settle_alone(x).await?);
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
                    let x = Settle {
                        execution_id: execution_id.to_string(),
                        succeeded,
                        rows,
                        duration_ms,
                        at_ms,
                    };
                    self.settle_now(&x).await
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

                async fn executions_by_buyer(&self, buyer_company_id: &str, from_ms: i64, to_ms: i64) -> StoreResult<u64> {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM executions WHERE buyer_company_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3",
                    )
                    .bind(buyer_company_id)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    Ok(n as u64)
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
                    self.claim_now(limit, now_ms, lease_ms).await
                }

                async fn note_attempt(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
                    self.note_now(ids, log_from).await
                }

                async fn mark_published(&self, ids: &[String], _at_ms: i64) -> StoreResult<()> {
                    self.mark_now(ids).await
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
                        ledger_paid: count("SELECT CAST(COALESCE(-sum(credits), 0) AS BIGINT) FROM ledger WHERE kind IN ('debit', 'refund')").await?,
                        ledger_seller_credits: count("SELECT CAST(COALESCE(sum(credits), 0) AS BIGINT) FROM ledger WHERE kind = 'seller_credit'").await?,
                        held_credits: count("SELECT CAST(COALESCE(sum(cost), 0) AS BIGINT) FROM executions WHERE status = 'held'").await?,
                    })
                }
            }
        }
    };
}

pub(crate) use money_sql_impl;
