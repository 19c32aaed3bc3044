//! The embedded durable log, on redb (an ACID, crash-safe embedded store: a torn tail after a
//! crash is rolled back to the last committed transaction when the file is reopened).
//!
//! One writer thread owns every write. Appends, offset commits and retention queued while the
//! previous transaction was syncing share the next transaction, so many concurrent appends
//! share one fsync (group commit). A caller is answered only after that commit is durable.

use crate::{
    partition_for, Appended, Consumer, EventLog, LogError, OutRecord, Position, Producer, Record,
};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("meta.topics");
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("meta.offsets");
/// Most operations one transaction takes, so a huge backlog still commits in bounded steps.
const MAX_OPS_PER_COMMIT: usize = 1024;
const MAX_RECORDS_PER_COMMIT: usize = 50_000;

type Reply<T> = oneshot::Sender<Result<T, LogError>>;
type TopicPartition = (String, u32);

enum WriteOp {
    Append {
        topic: String,
        records: Vec<OutRecord>,
        reply: Reply<Vec<Appended>>,
    },
    Commit {
        group: String,
        positions: Vec<Position>,
        reply: Reply<()>,
    },
    CreateTopic {
        topic: String,
        partitions: u32,
        reply: Reply<()>,
    },
    DeleteBefore {
        topic: String,
        cutoff_ms: i64,
        reply: Reply<u64>,
    },
}

impl WriteOp {
    fn record_count(&self) -> usize {
        match self {
            WriteOp::Append { records, .. } => records.len(),
            _ => 1,
        }
    }
}

/// An in-process consumer group: its members with their subscriptions.
#[derive(Default)]
struct Group {
    members: Vec<(u64, Vec<String>)>,
    generation: u64,
}

struct Inner {
    db: Arc<Database>,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    topics: RwLock<HashMap<String, u32>>,
    /// Next offset per partition, published after each durable commit.
    ends: RwLock<HashMap<TopicPartition, u64>>,
    /// Bumped after each commit that appended records; consumers wait on it.
    appended: watch::Sender<u64>,
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

impl Inner {
    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.topics
            .read()
            .map_err(|_| LogError::Closed)?
            .get(topic)
            .copied()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))
    }
}

/// The embedded log. Cheap to clone; all clones share one database and one writer thread.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

fn storage<E: Into<redb::Error>>(e: E) -> LogError {
    LogError::Storage(e.into().to_string())
}

fn records_table(topic: &str) -> String {
    format!("topic.{topic}")
}

/// A batch value larger than this is closed and a new one started.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The records one transaction appends to one partition, stored as one value keyed by the
/// offset of its first record (Kafka's record batch): one B-tree insert per partition per
/// commit instead of one per record. Layout: `ts i64 | count u32 | (klen u32 key vlen u32 value)*`.
struct BatchBuilder {
    base: u64,
    count: u32,
    bytes: Vec<u8>,
}

impl BatchBuilder {
    fn new(base: u64, ts: i64) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&ts.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        Self {
            base,
            count: 0,
            bytes,
        }
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            self.bytes
                .extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
        self.count += 1;
    }

    fn finish(mut self) -> (u64, Vec<u8>) {
        self.bytes[8..12].copy_from_slice(&self.count.to_le_bytes());
        (self.base, self.bytes)
    }
}

/// A record's key and value, borrowed from its batch.
type KeyValue<'a> = (&'a [u8], &'a [u8]);

/// A stored batch: its append time and its records.
fn decode_batch(bytes: &[u8]) -> Option<(i64, Vec<KeyValue<'_>>)> {
    let ts = i64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let mut at = 12;
    let mut take = || -> Option<&[u8]> {
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let part = bytes.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some(part)
    };
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let key = take()?;
        let value = take()?;
        records.push((key, value));
    }
    Some((ts, records))
}

fn batch_meta(bytes: &[u8]) -> Option<(i64, u64)> {
    let ts = i64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as u64;
    Some((ts, count))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`, recovering to the last durable commit.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::Storage(e.to_string()))?;
        let db = open_db(&dir.join("log.redb"))?;
        let (topics, ends) = load_state(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            db: db.clone(),
            writer: Mutex::new(Some(tx)),
            topics: RwLock::new(topics),
            ends: RwLock::new(ends),
            appended: watch::channel(0).0,
            groups: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || writer_loop(&db, rx, weak))
            .map_err(|e| LogError::Storage(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Stops the writer thread after the queued writes; later writes fail with `Closed`.
    pub fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, LogError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.inner.writer.lock().map_err(|_| LogError::Closed)?;
            let sender = guard.as_ref().ok_or(LogError::Closed)?;
            sender.send(make(reply)).map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    fn partitions(&self, topic: &str) -> Result<u32, LogError> {
        self.inner.partitions(topic)
    }
}

/// Opens the database file, waiting briefly if a just-dropped handle in this process is still
/// releasing its lock (its writer thread finishes the queued writes first).
fn open_db(path: &Path) -> Result<Database, LogError> {
    let mut attempts = 0;
    loop {
        match Database::builder()
            .set_cache_size(256 * 1024 * 1024)
            .create(path)
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(storage(e)),
        }
    }
}

type LoadedState = (HashMap<String, u32>, HashMap<TopicPartition, u64>);

fn load_state(db: &Database) -> Result<LoadedState, LogError> {
    let wtx = db.begin_write().map_err(storage)?;
    wtx.open_table(TOPICS).map_err(storage)?;
    wtx.open_table(OFFSETS).map_err(storage)?;
    wtx.commit().map_err(storage)?;
    let rtx = db.begin_read().map_err(storage)?;
    let mut topics = HashMap::new();
    let mut ends = HashMap::new();
    for item in rtx
        .open_table(TOPICS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (name, parts) = item.map_err(storage)?;
        let (name, parts) = (name.value().to_string(), parts.value());
        let name_t = records_table(&name);
        let def: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new(&name_t);
        let table = rtx.open_table(def).map_err(storage)?;
        for p in 0..parts {
            let last = table
                .range((p, 0)..=(p, u64::MAX))
                .map_err(storage)?
                .next_back();
            let next = match last {
                Some(item) => {
                    let (k, v) = item.map_err(storage)?;
                    let count = batch_meta(v.value()).map(|(_, c)| c).unwrap_or(0);
                    k.value().1 + count
                }
                None => 0,
            };
            ends.insert((name.clone(), p), next);
        }
        topics.insert(name, parts);
    }
    Ok((topics, ends))
}

fn writer_loop(db: &Database, rx: mpsc::Receiver<WriteOp>, inner: std::sync::Weak<Inner>) {
    let mut round_robin: u32 = 0;
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        let mut records = ops[0].record_count();
        while ops.len() < MAX_OPS_PER_COMMIT && records < MAX_RECORDS_PER_COMMIT {
            match rx.try_recv() {
                Ok(op) => {
                    records += op.record_count();
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        apply_ops(db, &inner, ops, &mut round_robin);
    }
}

enum Done {
    Append(Reply<Vec<Appended>>, Result<Vec<Appended>, LogError>),
    Unit(Reply<()>, Result<(), LogError>),
    Count(Reply<u64>, Result<u64, LogError>),
}

/// Applies a group of operations in one transaction and answers each caller after the commit.
fn apply_ops(db: &Database, inner: &Inner, ops: Vec<WriteOp>, rr: &mut u32) {
    let mut ends: HashMap<TopicPartition, u64> = HashMap::new();
    let mut new_topics: Vec<(String, u32)> = Vec::new();
    let mut done = Vec::with_capacity(ops.len());
    let mut any_append = false;
    let mut pending: HashMap<TopicPartition, BatchBuilder> = HashMap::new();
    let result = (|| -> Result<(), LogError> {
        let wtx = db.begin_write().map_err(storage)?;
        let ts = now_ms();
        for op in ops {
            match op {
                WriteOp::Append {
                    topic,
                    records,
                    reply,
                } => {
                    let mut w = AppendWork {
                        wtx: &wtx,
                        inner,
                        ends: &mut ends,
                        pending: &mut pending,
                        ts,
                        rr,
                    };
                    let r = w.append(&topic, records);
                    any_append |= r.is_ok();
                    done.push(Done::Append(reply, r));
                }
                WriteOp::Commit {
                    group,
                    positions,
                    reply,
                } => {
                    let r = commit_in(&wtx, &group, &positions);
                    done.push(Done::Unit(reply, r));
                }
                WriteOp::CreateTopic {
                    topic,
                    partitions,
                    reply,
                } => {
                    let r = create_in(&wtx, inner, &topic, partitions, &new_topics);
                    if let Ok(Some(p)) = &r {
                        new_topics.push((topic.clone(), *p));
                    }
                    done.push(Done::Unit(reply, r.map(|_| ())));
                }
                WriteOp::DeleteBefore {
                    topic,
                    cutoff_ms,
                    reply,
                } => {
                    let r = delete_in(&wtx, inner, &topic, cutoff_ms);
                    done.push(Done::Count(reply, r));
                }
            }
        }
        for ((topic, partition), batch) in pending.drain() {
            write_batch(&wtx, &topic, partition, batch)?;
        }
        wtx.commit().map_err(storage)
    })();
    match result {
        Ok(()) => {
            publish(inner, ends, new_topics);
            if any_append {
                inner.appended.send_modify(|v| *v += 1);
            }
            for d in done {
                match d {
                    Done::Append(tx, r) => drop(tx.send(r)),
                    Done::Unit(tx, r) => drop(tx.send(r)),
                    Done::Count(tx, r) => drop(tx.send(r)),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "event log commit failed");
            let msg = e.to_string();
            for d in done {
                let err = LogError::Unavailable(msg.clone());
                match d {
                    Done::Append(tx, _) => drop(tx.send(Err(err))),
                    Done::Unit(tx, _) => drop(tx.send(Err(err))),
                    Done::Count(tx, _) => drop(tx.send(Err(err))),
                }
            }
        }
    }
}

fn publish(inner: &Inner, ends: HashMap<TopicPartition, u64>, new_topics: Vec<(String, u32)>) {
    if let Ok(mut t) = inner.topics.write() {
        for (name, p) in &new_topics {
            t.insert(name.clone(), *p);
        }
    }
    if let Ok(mut e) = inner.ends.write() {
        for (name, p) in new_topics {
            for part in 0..p {
                e.entry((name.clone(), part)).or_insert(0);
            }
        }
        e.extend(ends);
    }
}

/// Everything an append needs inside the writer's transaction.
struct AppendWork<'a> {
    wtx: &'a redb::WriteTransaction,
    inner: &'a Inner,
    ends: &'a mut HashMap<TopicPartition, u64>,
    pending: &'a mut HashMap<TopicPartition, BatchBuilder>,
    ts: i64,
    rr: &'a mut u32,
}

impl AppendWork<'_> {
    /// Assigns offsets and adds the records to their partitions' open batches.
    fn append(&mut self, topic: &str, records: Vec<OutRecord>) -> Result<Vec<Appended>, LogError> {
        let parts = self.inner.partitions(topic)?;
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            let partition = if rec.key.is_empty() {
                *self.rr = self.rr.wrapping_add(1);
                *self.rr % parts
            } else {
                partition_for(&rec.key, parts)
            };
            let tp = (topic.to_string(), partition);
            let next = match self.ends.get(&tp) {
                Some(n) => *n,
                None => self
                    .inner
                    .ends
                    .read()
                    .map_err(|_| LogError::Closed)?
                    .get(&tp)
                    .copied()
                    .unwrap_or(0),
            };
            let full = self
                .pending
                .get(&tp)
                .is_some_and(|b| b.bytes.len() >= MAX_BATCH_BYTES);
            if full {
                if let Some(batch) = self.pending.remove(&tp) {
                    write_batch(self.wtx, topic, partition, batch)?;
                }
            }
            let ts = self.ts;
            self.pending
                .entry(tp.clone())
                .or_insert_with(|| BatchBuilder::new(next, ts))
                .push(&rec.key, &rec.value);
            self.ends.insert(tp, next + 1);
            out.push(Appended {
                partition,
                offset: next,
            });
        }
        Ok(out)
    }
}

fn write_batch(
    wtx: &redb::WriteTransaction,
    topic: &str,
    partition: u32,
    batch: BatchBuilder,
) -> Result<(), LogError> {
    let name = records_table(topic);
    let mut table = wtx
        .open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name))
        .map_err(storage)?;
    let (base, bytes) = batch.finish();
    table
        .insert((partition, base), bytes.as_slice())
        .map_err(storage)?;
    Ok(())
}

fn commit_in(
    wtx: &redb::WriteTransaction,
    group: &str,
    positions: &[Position],
) -> Result<(), LogError> {
    let mut table = wtx.open_table(OFFSETS).map_err(storage)?;
    for p in positions {
        table
            .insert((group, p.topic.as_str(), p.partition), p.next_offset)
            .map_err(storage)?;
    }
    Ok(())
}

fn create_in(
    wtx: &redb::WriteTransaction,
    inner: &Inner,
    topic: &str,
    partitions: u32,
    pending: &[(String, u32)],
) -> Result<Option<u32>, LogError> {
    let exists = inner
        .topics
        .read()
        .map_err(|_| LogError::Closed)?
        .contains_key(topic)
        || pending.iter().any(|(t, _)| t == topic);
    if exists {
        return Ok(None);
    }
    let partitions = partitions.max(1);
    wtx.open_table(TOPICS)
        .map_err(storage)?
        .insert(topic, partitions)
        .map_err(storage)?;
    let name = records_table(topic);
    wtx.open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name))
        .map_err(storage)?;
    Ok(Some(partitions))
}

fn delete_in(
    wtx: &redb::WriteTransaction,
    inner: &Inner,
    topic: &str,
    cutoff_ms: i64,
) -> Result<u64, LogError> {
    let parts = inner.partitions(topic)?;
    let name = records_table(topic);
    let mut table = wtx
        .open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name))
        .map_err(storage)?;
    let mut deleted = 0u64;
    for p in 0..parts {
        // Batches are in append order, so the expired ones form a prefix of each partition.
        // The newest batch is always kept so the partition's next offset survives a reopen.
        let last = table
            .range((p, 0)..=(p, u64::MAX))
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k.value().1);
        let mut expired = Vec::new();
        for item in table.range((p, 0)..=(p, u64::MAX)).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (ts, count) = batch_meta(v.value()).unwrap_or((i64::MAX, 0));
            if ts >= cutoff_ms || Some(k.value().1) == last {
                break;
            }
            expired.push((k.value().1, count));
        }
        for (base, count) in expired {
            table.remove((p, base)).map_err(storage)?;
            deleted += count;
        }
    }
    Ok(deleted)
}

#[async_trait]
impl Producer for EmbeddedLog {
    async fn append(
        &self,
        topic: &str,
        records: Vec<OutRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.partitions(topic)?;
        let topic = topic.to_string();
        self.submit(|reply| WriteOp::Append {
            topic,
            records,
            reply,
        })
        .await
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        let topic = topic.to_string();
        self.submit(|reply| WriteOp::CreateTopic {
            topic,
            partitions,
            reply,
        })
        .await
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        for t in topics {
            self.partitions(t)?;
        }
        let member = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        {
            let mut groups = self.inner.groups.lock().map_err(|_| LogError::Closed)?;
            let g = groups.entry(group.to_string()).or_default();
            g.members.push((member, topics.to_vec()));
            g.generation += 1;
        }
        Ok(Box::new(EmbeddedConsumer {
            log: self.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            member,
            generation: 0,
            positions: HashMap::new(),
            assigned: Vec::new(),
            cursor: 0,
            appended: self.inner.appended.subscribe(),
        }))
    }

    async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Position>, LogError> {
        let parts = self.partitions(topic)?;
        let db = self.inner.db.clone();
        let (group, topic) = (group.to_string(), topic.to_string());
        blocking(move || {
            let rtx = db.begin_read().map_err(storage)?;
            let table = rtx.open_table(OFFSETS).map_err(storage)?;
            (0..parts)
                .map(|p| {
                    let next = table
                        .get((group.as_str(), topic.as_str(), p))
                        .map_err(storage)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    Ok(Position {
                        topic: topic.clone(),
                        partition: p,
                        next_offset: next,
                    })
                })
                .collect()
        })
        .await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<Position>, LogError> {
        let parts = self.partitions(topic)?;
        let ends = self.inner.ends.read().map_err(|_| LogError::Closed)?;
        Ok((0..parts)
            .map(|p| Position {
                topic: topic.to_string(),
                partition: p,
                next_offset: ends.get(&(topic.to_string(), p)).copied().unwrap_or(0),
            })
            .collect())
    }

    async fn delete_before(&self, topic: &str, cutoff_ms: i64) -> Result<u64, LogError> {
        let topic = topic.to_string();
        self.submit(|reply| WriteOp::DeleteBefore {
            topic,
            cutoff_ms,
            reply,
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Storage(e.to_string()))?
}

struct EmbeddedConsumer {
    log: EmbeddedLog,
    group: String,
    topics: Vec<String>,
    member: u64,
    generation: u64,
    positions: HashMap<TopicPartition, u64>,
    assigned: Vec<TopicPartition>,
    cursor: usize,
    appended: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    /// Recomputes this member's partitions when the group changed (a rebalance): partitions are
    /// dealt round-robin over the members; newly assigned ones start at the committed offset.
    async fn refresh_assignment(&mut self) -> Result<(), LogError> {
        let (members, generation) = {
            let groups = self.log.inner.groups.lock().map_err(|_| LogError::Closed)?;
            let g = groups.get(&self.group).ok_or(LogError::Closed)?;
            (g.members.clone(), g.generation)
        };
        if generation == self.generation {
            return Ok(());
        }
        // Like Kafka's round-robin assignor: each topic's partitions are dealt over the
        // members subscribed to that topic, in join order.
        let mut mine: Vec<TopicPartition> = Vec::new();
        for t in &self.topics {
            let subscribed: Vec<u64> = members
                .iter()
                .filter(|(_, ts)| ts.contains(t))
                .map(|(m, _)| *m)
                .collect();
            let Some(index) = subscribed.iter().position(|m| *m == self.member) else {
                continue;
            };
            for p in 0..self.log.partitions(t)? {
                if p as usize % subscribed.len() == index {
                    mine.push((t.clone(), p));
                }
            }
        }
        self.positions.retain(|tp, _| mine.contains(tp));
        for t in &self.topics {
            for c in self.log.committed(&self.group, t).await? {
                let tp = (c.topic.clone(), c.partition);
                if mine.contains(&tp) {
                    self.positions.entry(tp).or_insert(c.next_offset);
                }
            }
        }
        self.assigned = mine;
        self.generation = generation;
        Ok(())
    }

    async fn read_available(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        if self.assigned.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.assigned.len();
        self.cursor = (self.cursor + 1) % n;
        let order: Vec<(TopicPartition, u64)> = (0..n)
            .map(|i| {
                let tp = self.assigned[(self.cursor + i) % n].clone();
                let pos = self.positions.get(&tp).copied().unwrap_or(0);
                (tp, pos)
            })
            .collect();
        let ends = self
            .log
            .inner
            .ends
            .read()
            .map_err(|_| LogError::Closed)?
            .clone();
        let order: Vec<_> = order
            .into_iter()
            .filter(|(tp, pos)| ends.get(tp).copied().unwrap_or(0) > *pos)
            .collect();
        if order.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.log.inner.db.clone();
        let records = blocking(move || read_partitions(&db, &order, max)).await?;
        for r in &records {
            self.positions
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        Ok(records)
    }
}

fn read_partitions(
    db: &Database,
    order: &[(TopicPartition, u64)],
    max: usize,
) -> Result<Vec<Record>, LogError> {
    let rtx = db.begin_read().map_err(storage)?;
    let mut out = Vec::new();
    for ((topic, p), pos) in order {
        if out.len() >= max {
            break;
        }
        let name = records_table(topic);
        let table = rtx
            .open_table(TableDefinition::<(u32, u64), &[u8]>::new(&name))
            .map_err(storage)?;
        // The starting partition rotates between polls, so no partition starves.
        let take = max - out.len();
        // The batch holding `pos` (its base is at or before it), then every later batch.
        let first = table
            .range((*p, 0)..=(*p, *pos))
            .map_err(storage)?
            .next_back();
        let later = table
            .range((*p, pos + 1)..=(*p, u64::MAX))
            .map_err(storage)?;
        let mut taken = 0;
        for item in first.into_iter().chain(later) {
            let (k, v) = item.map_err(storage)?;
            let base = k.value().1;
            let Some((ts, records)) = decode_batch(v.value()) else {
                return Err(LogError::Storage(format!(
                    "corrupt batch at {topic}/{p}/{base}"
                )));
            };
            for (i, (key, value)) in records.into_iter().enumerate() {
                let offset = base + i as u64;
                if offset < *pos {
                    continue;
                }
                if taken == take {
                    break;
                }
                out.push(Record {
                    topic: topic.clone(),
                    partition: *p,
                    offset,
                    timestamp_ms: ts,
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
                taken += 1;
            }
            if taken == take {
                break;
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, LogError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.refresh_assignment().await?;
            self.appended.borrow_and_update();
            let records = self.read_available(max.max(1)).await?;
            if !records.is_empty() {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(LogError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        let group = self.group.clone();
        let positions = positions.to_vec();
        self.log
            .submit(|reply| WriteOp::Commit {
                group,
                positions,
                reply,
            })
            .await
    }

    async fn seek(&mut self, position: &Position) -> Result<(), LogError> {
        self.refresh_assignment().await?;
        let tp = (position.topic.clone(), position.partition);
        if self.assigned.contains(&tp) {
            self.positions.insert(tp, position.next_offset);
        }
        Ok(())
    }

    async fn rewind_to_committed(&mut self) -> Result<(), LogError> {
        self.positions.clear();
        self.generation = 0;
        self.refresh_assignment().await
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned.clone()
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        if let Ok(mut groups) = self.log.inner.groups.lock() {
            if let Some(g) = groups.get_mut(&self.group) {
                g.members.retain(|(m, _)| *m != self.member);
                g.generation += 1;
            }
        }
    }
}
