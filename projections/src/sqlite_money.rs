//! The embedded money writer: every batch of holds or settlements is one SQLite transaction
//! run start to finish by a thread that owns its own connection to the metadata file.
//!
//! Why: sqlx runs each SQLite statement on its connection's worker thread, so every statement
//! is a hand-off between threads and back (about 0.1 ms each on this 2-core machine, and a
//! hold and a settlement are a dozen statements). Here a whole transaction is one hand-off.
//! The rules, the SQL and the rows are those of `sqlmoney` (its shared helpers build the
//! ledger and outbox rows); the money conformance suite runs against this path. Writes still
//! take the store's writer turn first, so they queue behind Tally's other SQLite writers
//! instead of colliding with them in SQLite's busy handler.

use crate::money::{Hold, HoldOutcome, OutboxRecord, Settle};
use crate::sqlmoney::{
    buyers_of, by_company, debits, first_holds, first_settles, hold_answers, post_debit,
    post_running, settle_answers, settle_effects, settled_status, HeldRow, Movement, Pending,
    HELD_COLUMNS,
};
use crate::{StoreError, StoreResult};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

type Reply<A> = tokio::sync::oneshot::Sender<StoreResult<Vec<A>>>;

/// Work for the writer thread: a caller's holds or settlements and where to answer, or one
/// of the outbox relay's calls (`sqlite_outbox`).
enum Job {
    Holds(Vec<Hold>, Reply<HoldOutcome>),
    Settles(Vec<Settle>, Reply<i64>),
    Relay(RelayCall),
}

type Answer<T> = tokio::sync::oneshot::Sender<StoreResult<T>>;

enum RelayCall {
    Claim {
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
        reply: Answer<Vec<OutboxRecord>>,
    },
    Note {
        ids: Vec<String>,
        log_from: String,
        reply: Answer<()>,
    },
    Mark {
        ids: Vec<String>,
        reply: Answer<()>,
    },
}

impl RelayCall {
    /// Runs the call (each is one autocommit statement or a few) and answers it.
    fn answer(self, db: &Connection) {
        match self {
            RelayCall::Claim {
                limit,
                now_ms,
                lease_ms,
                reply,
            } => {
                let _ = reply.send(crate::sqlite_outbox::claim(db, limit, now_ms, lease_ms));
            }
            RelayCall::Note {
                ids,
                log_from,
                reply,
            } => {
                let _ = reply.send(crate::sqlite_outbox::note(db, &ids, &log_from));
            }
            RelayCall::Mark { ids, reply } => {
                let _ = reply.send(crate::sqlite_outbox::mark(db, &ids));
            }
        }
    }
}

/// Jobs taken into one transaction at most.
const BATCH: usize = 128;

/// The writer thread; it stops (and closes its connection) when the last handle is dropped.
pub(crate) struct MoneyThread {
    jobs: mpsc::Sender<Job>,
}

fn lite(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn stopped() -> StoreError {
    StoreError::Backend("the money writer has stopped".into())
}

impl MoneyThread {
    /// Opens a connection to the database file at `path` (its schema already applied) with
    /// the store's settings, and starts the thread. `writer` is the store's writer turn.
    pub(crate) fn open(
        path: &Path,
        writer: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> StoreResult<MoneyThread> {
        let mut db = Connection::open(path).map_err(lite)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(lite)?;
        // As the sqlx pool: WAL (a property of the file), no fsync per commit, and no
        // checkpoint inside a commit (the store checkpoints in the background).
        db.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
            .map_err(lite)?;
        db.set_prepared_statement_cache_capacity(64);
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tally-money".into())
            .spawn(move || serve(&mut db, &rx, writer.as_deref()))
            .map_err(|e| StoreError::Backend(format!("cannot start the money writer: {e}")))?;
        Ok(MoneyThread { jobs })
    }

    pub(crate) async fn hold_batch(&self, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Holds(holds.to_vec(), reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn settle_batch(&self, settles: &[Settle]) -> StoreResult<Vec<i64>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Settles(settles.to_vec(), reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn relay<T>(&self, call: impl FnOnce(Answer<T>) -> RelayCall) -> StoreResult<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Relay(call(reply)))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn claim(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Vec<OutboxRecord>> {
        self.relay(|reply| RelayCall::Claim {
            limit,
            now_ms,
            lease_ms,
            reply,
        })
        .await
    }

    pub(crate) async fn note(&self, ids: &[String], log_from: &str) -> StoreResult<()> {
        let (ids, log_from) = (ids.to_vec(), log_from.to_string());
        self.relay(|reply| RelayCall::Note {
            ids,
            log_from,
            reply,
        })
        .await
    }

    pub(crate) async fn mark(&self, ids: &[String]) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.relay(|reply| RelayCall::Mark { ids, reply }).await
    }
}

/// The thread's loop: whatever jobs are waiting go into one transaction for the holds and
/// one for the settlements (group commit), taken in the writer turn.
fn serve(db: &mut Connection, rx: &mpsc::Receiver<Job>, writer: Option<&tokio::sync::Mutex<()>>) {
    while let Ok(first) = rx.recv() {
        let mut holds = Vec::new();
        let mut settles = Vec::new();
        let mut relay = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next {
            match job {
                Job::Holds(h, r) => holds.push((h, r)),
                Job::Settles(x, r) => settles.push((x, r)),
                Job::Relay(call) => relay.push(call),
            }
            taken += 1;
            next = if taken < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        metrics::histogram!("tally_money_batch_size").record(taken as f64);
        let _turn = writer.map(tokio::sync::Mutex::blocking_lock);
        answer_together(db, holds, hold_all);
        answer_together(db, settles, settle_all);
        for call in relay {
            call.answer(db);
        }
    }
}

/// Runs every job's requests in one transaction and answers each job its share; if that
/// transaction fails, each job gets its own, so one bad request spoils only its own call.
fn answer_together<Q, A>(
    db: &mut Connection,
    jobs: Vec<(Vec<Q>, Reply<A>)>,
    apply: fn(&Connection, &mut Pending, &[Q]) -> StoreResult<Vec<A>>,
) {
    let sizes: Vec<usize> = jobs.iter().map(|(q, _)| q.len()).collect();
    let (requests, replies): (Vec<Vec<Q>>, Vec<Reply<A>>) = jobs.into_iter().unzip();
    let all: Vec<Q> = requests.into_iter().flatten().collect();
    if sizes.len() > 1 {
        if let Ok(outcomes) = in_transaction(db, |tx, p| apply(tx, p, &all)) {
            let mut outcomes = outcomes.into_iter();
            for (n, reply) in sizes.iter().zip(replies) {
                let _ = reply.send(Ok(outcomes.by_ref().take(*n).collect()));
            }
            return;
        }
        metrics::counter!("tally_money_batch_fallbacks_total").increment(1);
    }
    let mut start = 0;
    for (n, reply) in sizes.iter().zip(replies) {
        let mine = &all[start..start + n];
        start += n;
        let _ = reply.send(in_transaction(db, |tx, p| apply(tx, p, mine)));
    }
}

/// Runs `f` in one write transaction and writes the ledger and outbox rows it made before
/// committing; on any error nothing is kept.
fn in_transaction<T>(
    db: &mut Connection,
    f: impl FnOnce(&Connection, &mut Pending) -> StoreResult<T>,
) -> StoreResult<T> {
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(lite)?;
    let mut pending = Pending::default();
    let out = f(&tx, &mut pending)?;
    flush(&tx, &pending)?;
    tx.commit().map_err(lite)?;
    Ok(out)
}

/// `n` rows of `width` placeholders: `(?, ?), (?, ?)`.
fn rows_of(n: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; n].join(", ")
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

fn flush(tx: &Connection, p: &Pending) -> StoreResult<()> {
    for chunk in p.ledger.chunks(500) {
        let sql = format!(
            "INSERT INTO ledger (entry_id, company_id, kind, credits, balance_after, execution_id, counterparty_company_id, reason, created_at_ms) VALUES {}",
            rows_of(chunk.len(), 9)
        );
        let values = chunk.iter().flat_map(|r| {
            [
                text(&r.entry_id),
                text(&r.company_id),
                text(&r.kind),
                Value::Integer(r.credits),
                Value::Integer(r.balance_after),
                opt_text(&r.execution_id),
                opt_text(&r.counterparty),
                opt_text(&r.reason),
                Value::Integer(r.at_ms),
            ]
        });
        tx.prepare_cached(&sql)
            .and_then(|mut st| st.execute(params_from_iter(values)))
            .map_err(lite)?;
    }
    for chunk in p.outbox.chunks(500) {
        let sql = format!(
            "INSERT INTO outbox (id, topic, record_key, payload, created_at_ms) VALUES {}",
            rows_of(chunk.len(), 5)
        );
        let values = chunk.iter().flat_map(|r| {
            [
                text(&r.0),
                text(&r.1),
                text(&r.2),
                text(&r.3),
                Value::Integer(r.4),
            ]
        });
        tx.prepare_cached(&sql)
            .and_then(|mut st| st.execute(params_from_iter(values)))
            .map_err(lite)?;
    }
    Ok(())
}

/// Adds `delta` to a balance (creating it) and returns the new balance; `None` if a debit
/// would take it below zero.
fn add(tx: &Connection, company: &str, delta: i64) -> StoreResult<Option<i64>> {
    let sql = if delta < 0 {
        "UPDATE balances SET credits = credits + ?1 WHERE company_id = ?2 AND credits + ?1 >= 0 RETURNING credits"
    } else {
        "INSERT INTO balances (company_id, credits) VALUES (?2, ?1) \
         ON CONFLICT (company_id) DO UPDATE SET credits = balances.credits + excluded.credits RETURNING credits"
    };
    tx.prepare_cached(sql)
        .and_then(|mut st| {
            st.query_row((delta, company), |r| r.get::<_, i64>(0))
                .optional()
        })
        .map_err(lite)
}

/// Balances of `companies` (0 for a company without one).
fn balances_of(tx: &Connection, companies: &[&str]) -> StoreResult<HashMap<String, i64>> {
    let mut out: HashMap<String, i64> = companies.iter().map(|c| (c.to_string(), 0)).collect();
    for chunk in companies.chunks(500) {
        let sql = format!(
            "SELECT company_id, credits FROM balances WHERE company_id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut st = tx.prepare_cached(&sql).map_err(lite)?;
        let rows = st
            .query_map(params_from_iter(chunk.iter()), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(lite)?;
        for row in rows {
            let (company, credits) = row.map_err(lite)?;
            out.insert(company, credits);
        }
    }
    Ok(out)
}

fn status_of(tx: &Connection, execution_id: &str) -> StoreResult<Option<String>> {
    tx.prepare_cached("SELECT status FROM executions WHERE execution_id = ?1")
        .and_then(|mut st| st.query_row([execution_id], |r| r.get(0)).optional())
        .map_err(lite)
}

fn forget(tx: &Connection, execution_id: &str) -> StoreResult<()> {
    tx.prepare_cached("DELETE FROM executions WHERE execution_id = ?1")
        .and_then(|mut st| st.execute([execution_id]))
        .map_err(lite)?;
    Ok(())
}

/// Applies `moves` (credits in one statement, each company's debit conditional on its
/// balance) and posts their ledger rows; `None` if a debit would take a balance below zero.
fn move_credits(tx: &Connection, p: &mut Pending, moves: &[Movement]) -> StoreResult<Option<()>> {
    let grouped = by_company(moves);
    let credited: Vec<(&str, i64)> = grouped
        .iter()
        .map(|(c, (t, _))| (*c, *t))
        .filter(|(_, t)| *t > 0)
        .collect();
    let mut after_all = HashMap::new();
    for chunk in credited.chunks(500) {
        let sql = format!(
            "INSERT INTO balances (company_id, credits) VALUES {} \
             ON CONFLICT (company_id) DO UPDATE SET credits = balances.credits + excluded.credits RETURNING company_id, credits",
            rows_of(chunk.len(), 2)
        );
        let values = chunk
            .iter()
            .flat_map(|(c, n)| [text(c), Value::Integer(*n)]);
        let mut st = tx.prepare_cached(&sql).map_err(lite)?;
        let rows = st
            .query_map(params_from_iter(values), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(lite)?;
        for row in rows {
            let (company, credits) = row.map_err(lite)?;
            after_all.insert(company, credits);
        }
    }
    for (company, (total, _)) in grouped.iter().filter(|(_, (t, _))| *t <= 0) {
        let Some(last) = add(tx, company, *total)? else {
            return Ok(None);
        };
        after_all.insert(company.to_string(), last);
    }
    post_running(p, &grouped, &after_all)?;
    Ok(Some(()))
}

fn hold_values(h: &Hold) -> [Value; 12] {
    [
        text(&h.execution_id),
        text(&h.buyer_company_id),
        text(&h.seller_company_id),
        text(&h.platform_company_id),
        text(&h.asset_id),
        Value::Integer(h.api_key_id),
        text(&h.user_id),
        Value::Integer(h.cost),
        Value::Integer(h.seller_share),
        Value::Integer(h.platform_fee),
        text("held"),
        Value::Integer(h.at_ms),
    ]
}

/// Inserts the executions of `holds` (the lock on each id); the ids that were new.
fn insert_executions(tx: &Connection, holds: &[&Hold]) -> StoreResult<HashSet<String>> {
    let mut inserted = HashSet::new();
    for chunk in holds.chunks(200) {
        let sql = format!(
            "INSERT INTO executions (execution_id, buyer_company_id, seller_company_id, platform_company_id, asset_id, api_key_id, \
             user_id, cost, seller_share, platform_fee, status, created_at_ms) VALUES {} \
             ON CONFLICT (execution_id) DO NOTHING RETURNING execution_id",
            rows_of(chunk.len(), 12)
        );
        let values = chunk.iter().flat_map(|h| hold_values(h));
        let mut st = tx.prepare_cached(&sql).map_err(lite)?;
        let rows = st
            .query_map(params_from_iter(values), |r| r.get::<_, String>(0))
            .map_err(lite)?;
        for row in rows {
            inserted.insert(row.map_err(lite)?);
        }
    }
    Ok(inserted)
}

/// One hold on its own (as `sqlmoney`'s `hold_in`): a refusal leaves nothing behind.
fn hold_one(tx: &Connection, p: &mut Pending, h: &Hold) -> StoreResult<HoldOutcome> {
    if insert_executions(tx, &[h])?.is_empty() {
        let status = status_of(tx, &h.execution_id)?.unwrap_or_default();
        return Ok(HoldOutcome::AlreadyHeld { status });
    }
    let buyer = h.buyer_company_id.as_str();
    if h.cost == 0 {
        let balance_after = balances_of(tx, &[buyer])?.get(buyer).copied().unwrap_or(0);
        return Ok(HoldOutcome::Held { balance_after });
    }
    let Some(balance_after) = add(tx, buyer, -h.cost)? else {
        forget(tx, &h.execution_id)?;
        let balance = balances_of(tx, &[buyer])?.get(buyer).copied().unwrap_or(0);
        return Ok(HoldOutcome::Insufficient { balance });
    };
    post_debit(p, h, balance_after)?;
    Ok(HoldOutcome::Held { balance_after })
}

/// A batch of holds: one insert of every execution, one debit per buyer for the sum of its
/// holds when its balance covers them all (else one at a time, in order), one read of the
/// free ones' balances.
fn hold_all(tx: &Connection, p: &mut Pending, holds: &[Hold]) -> StoreResult<Vec<HoldOutcome>> {
    let (first, unique) = first_holds(holds);
    let inserted = insert_executions(tx, &unique)?;
    let mut outcome: HashMap<String, HoldOutcome> = HashMap::new();
    for h in unique
        .iter()
        .filter(|h| !inserted.contains(&h.execution_id))
    {
        let status = status_of(tx, &h.execution_id)?.unwrap_or_default();
        outcome.insert(h.execution_id.clone(), HoldOutcome::AlreadyHeld { status });
    }
    let new: Vec<&Hold> = unique
        .iter()
        .copied()
        .filter(|h| inserted.contains(&h.execution_id))
        .collect();
    let charged: Vec<&Hold> = new.iter().copied().filter(|h| h.cost > 0).collect();
    for buyer in buyers_of(&charged) {
        let mine: Vec<&Hold> = charged
            .iter()
            .copied()
            .filter(|h| h.buyer_company_id == buyer)
            .collect();
        let mark = p.ledger.len();
        if move_credits(tx, p, &debits(&mine))?.is_some() {
            for (h, row) in mine.iter().zip(&p.ledger[mark..]) {
                let balance_after = row.balance_after;
                outcome.insert(h.execution_id.clone(), HoldOutcome::Held { balance_after });
            }
            continue;
        }
        // Not all covered: one at a time, so exactly the ones that fit are held.
        for h in mine {
            forget(tx, &h.execution_id)?;
            outcome.insert(h.execution_id.clone(), hold_one(tx, p, h)?);
        }
    }
    let free: Vec<&Hold> = new.iter().copied().filter(|h| h.cost == 0).collect();
    let companies: Vec<&str> = free.iter().map(|h| h.buyer_company_id.as_str()).collect();
    let now = balances_of(tx, &companies)?;
    for h in free {
        let balance_after = now.get(&h.buyer_company_id).copied().unwrap_or(0);
        outcome.insert(h.execution_id.clone(), HoldOutcome::Held { balance_after });
    }
    Ok(hold_answers(holds, &first, &outcome))
}

/// Marks the held executions of `settles` settled (the update is the lock: only the first
/// settle of a held execution wins); their rows by id.
fn mark_settled(tx: &Connection, settles: &[&Settle]) -> StoreResult<HashMap<String, HeldRow>> {
    let mut settled = HashMap::new();
    for chunk in settles.chunks(200) {
        let sql = format!(
            "UPDATE executions SET status = v.x_status, result_rows = v.x_rows, duration_ms = v.x_duration, settled_at_ms = v.x_at \
             FROM (SELECT column1 AS x_id, column2 AS x_status, column3 AS x_rows, column4 AS x_duration, column5 AS x_at FROM (VALUES {}) AS t) AS v \
             WHERE executions.execution_id = v.x_id AND executions.status = 'held' RETURNING {HELD_COLUMNS}",
            rows_of(chunk.len(), 5)
        );
        let values = chunk.iter().flat_map(|x| {
            [
                text(&x.execution_id),
                text(settled_status(x.succeeded)),
                Value::Integer(x.rows),
                Value::Real(x.duration_ms),
                Value::Integer(x.at_ms),
            ]
        });
        let mut st = tx.prepare_cached(&sql).map_err(lite)?;
        let rows = st
            .query_map(params_from_iter(values), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    HeldRow {
                        buyer: r.get(1)?,
                        seller: r.get(2)?,
                        platform: r.get(3)?,
                        asset_id: r.get(4)?,
                        api_key_id: r.get(5)?,
                        user_id: r.get(6)?,
                        cost: r.get(7)?,
                        share: r.get(8)?,
                        fee: r.get(9)?,
                    },
                ))
            })
            .map_err(lite)?;
        for row in rows {
            let (id, held) = row.map_err(lite)?;
            settled.insert(id, held);
        }
    }
    Ok(settled)
}

/// A batch of settlements: one update of every held execution, one balance change per
/// company, one read of the buyers' balances afterwards.
fn settle_all(tx: &Connection, p: &mut Pending, settles: &[Settle]) -> StoreResult<Vec<i64>> {
    let is_first = first_settles(settles);
    let unique: Vec<&Settle> = settles
        .iter()
        .zip(&is_first)
        .filter(|(_, f)| **f)
        .map(|(x, _)| x)
        .collect();
    let settled = mark_settled(tx, &unique)?;
    let mut moves = Vec::new();
    let mut buyer_of: HashMap<String, String> = HashMap::new();
    for x in &unique {
        if let Some(r) = settled.get(&x.execution_id) {
            moves.extend(settle_effects(p, x, r)?);
            buyer_of.insert(x.execution_id.clone(), r.buyer.clone());
        }
    }
    if move_credits(tx, p, &moves)?.is_none() {
        return Err(StoreError::Backend(
            "a settlement would take a balance below zero".into(),
        ));
    }
    for x in unique
        .iter()
        .filter(|x| !settled.contains_key(&x.execution_id))
    {
        let buyer: Option<String> = tx
            .prepare_cached("SELECT buyer_company_id FROM executions WHERE execution_id = ?1")
            .and_then(|mut st| st.query_row([&x.execution_id], |r| r.get(0)).optional())
            .map_err(lite)?;
        if let Some(b) = buyer {
            buyer_of.insert(x.execution_id.clone(), b);
        }
    }
    let companies: Vec<&str> = buyer_of.values().map(String::as_str).collect();
    let running = balances_of(tx, &companies)?;
    Ok(settle_answers(
        settles, &is_first, &buyer_of, running, &moves,
    ))
}
