//! The outbox relay's three calls on the embedded store, run by the money writer thread
//! (`sqlite_money`) between its batches: a claim, a note of where the log ended, the removal
//! of what was published. On that thread each is one short statement with no hand-off;
//! over sqlx each held the store's writer turn across several hand-offs, and the holds and
//! settlements queued behind it (the tail of `/analyze`'s latency, measured in
//! `benches/market.rs`). Same SQL and rules as the sqlx versions in `sqlmoney`.

use crate::money::OutboxRecord;
use crate::sqlmoney::{stored, Stored};
use crate::{StoreError, StoreResult};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use std::collections::HashMap;

fn lite(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Claims up to `limit` unpublished records whose claim is missing or older than `lease_ms`,
/// with the log position an earlier relay noted for each.
pub(crate) fn claim(
    db: &Connection,
    limit: usize,
    now_ms: i64,
    lease_ms: i64,
) -> StoreResult<Vec<OutboxRecord>> {
    let stale = now_ms - lease_ms;
    let mut st = db
        .prepare_cached(
            "UPDATE outbox SET claimed_at_ms = ?1 \
             WHERE id IN (SELECT id FROM outbox WHERE published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < ?2) ORDER BY id LIMIT ?3) \
             AND published_at_ms IS NULL AND (claimed_at_ms IS NULL OR claimed_at_ms < ?2) \
             RETURNING id, topic, record_key, payload",
        )
        .map_err(lite)?;
    let rows = st
        .query_map((now_ms, stale, limit as i64), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(lite)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(lite)?;
    let mut out = rows
        .into_iter()
        .map(|(id, topic, key, payload)| match stored(&payload) {
            Stored::Record(payload) => Ok(OutboxRecord {
                id,
                topic,
                key,
                payload,
                log_from: None,
            }),
            // Only the Postgres store writes references.
            _ => Err(StoreError::Backend(format!(
                "outbox {id}: a reference this store does not write"
            ))),
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let tried = attempts(db, &out)?;
    for r in &mut out {
        r.log_from = tried.get(&r.id).cloned();
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn attempts(db: &Connection, records: &[OutboxRecord]) -> StoreResult<HashMap<String, String>> {
    let mut tried = HashMap::new();
    for chunk in records.chunks(500) {
        let sql = format!(
            "SELECT id, log_from FROM outbox_attempts WHERE id IN ({})",
            list(chunk.len())
        );
        let ids = chunk.iter().map(|r| Value::Text(r.id.clone()));
        let mut st = db.prepare_cached(&sql).map_err(lite)?;
        let found = st
            .query_map(params_from_iter(ids), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(lite)?;
        for f in found {
            let (id, from) = f.map_err(lite)?;
            tried.insert(id, from);
        }
    }
    Ok(tried)
}

/// Notes, before `ids` are appended, where their topic's log ended.
pub(crate) fn note(db: &Connection, ids: &[String], log_from: &str) -> StoreResult<()> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "INSERT INTO outbox_attempts (id, log_from) VALUES {} ON CONFLICT (id) DO NOTHING",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let values = chunk
            .iter()
            .flat_map(|id| [Value::Text(id.clone()), Value::Text(log_from.to_string())]);
        db.prepare_cached(&sql)
            .and_then(|mut st| st.execute(params_from_iter(values)))
            .map_err(lite)?;
    }
    Ok(())
}

/// Removes published records, then their attempts (a record is never left without its
/// attempt; an attempt left without its record is never read again).
pub(crate) fn mark(db: &Connection, ids: &[String]) -> StoreResult<()> {
    for table in ["outbox", "outbox_attempts"] {
        for chunk in ids.chunks(500) {
            let sql = format!("DELETE FROM {table} WHERE id IN ({})", list(chunk.len()));
            let values = chunk.iter().map(|id| Value::Text(id.clone()));
            db.prepare_cached(&sql)
                .and_then(|mut st| st.execute(params_from_iter(values)))
                .map_err(lite)?;
        }
    }
    Ok(())
}
