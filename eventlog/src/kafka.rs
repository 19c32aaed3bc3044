//! The Kafka backend (rdkafka over the bundled librdkafka): an idempotent `acks=all` producer
//! whose appends resolve only on the broker's acknowledgement, topics created explicitly,
//! and consumer groups that store offsets only when the runner commits after its writes.
//!
//! Rebalances: the runner commits every batch before it polls again, and librdkafka serves
//! rebalances inside a poll, so a revoke never finds processed-but-uncommitted records. Records
//! gathered inside one `poll` call before a rebalance are dropped (the new owner, or this member
//! after reassignment, reads them again from the committed offset), so none is handed out twice.
//!
//! Group members also watch for partitions that have work but no live owner (see `stall.rs`):
//! after a stall window they leave and rejoin the group, which forces a fresh assignment on a
//! broker that evicted a dead member but kept its old assignment.

use crate::stall::{PartitionProgress, StallWatch};
use crate::{Appended, Consumer, EventLog, LogError, OutRecord, Position, Producer, Record};
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to reach the brokers.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// How long an append may wait for the broker before it fails as `Unavailable`.
    pub message_timeout: Duration,
    /// Replication factor for topics this backend creates.
    pub replication: i32,
    /// How long a partition may have work, no owner in this member and no committed progress
    /// before this member rejoins its group to force a reassignment. Longer than the session
    /// timeout (10 s), so the broker's own eviction always gets the first chance.
    pub stall_window: Duration,
    /// How long a consumer's fetch waits at the broker when there is nothing new
    /// (`fetch.wait.max.ms`). The time from an append to its consumer is up to this long when
    /// the consumer has caught up, so it bounds a stage's lag on a quiet topic.
    pub fetch_wait: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: &str) -> Self {
        KafkaConfig {
            brokers: brokers.to_string(),
            message_timeout: Duration::from_secs(5),
            replication: 1,
            stall_window: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(500),
        }
    }
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports librdkafka's statistics as metrics (producer queue depth, consumer lag).
#[derive(Clone, Default)]
struct StatsContext;

impl ClientContext for StatsContext {
    fn stats(&self, s: Statistics) {
        metrics::gauge!("tally_kafka_queue_messages", "client" => s.client_id.clone())
            .set(s.msg_cnt as f64);
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("tally_kafka_consumer_lag", "topic" => topic.clone(),
                    "partition" => p.to_string())
                .set(part.consumer_lag as f64);
            }
        }
    }
}

/// The Kafka event log.
#[derive(Clone)]
pub struct KafkaLog {
    cfg: KafkaConfig,
    /// Replaced after a failed delivery (see [`KafkaLog::renew_producer`]).
    producer: Arc<std::sync::RwLock<FutureProducer<StatsContext>>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    partitions: Arc<Mutex<HashMap<String, u32>>>,
    offset_readers: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
}

fn unavailable(e: KafkaError) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "1000");
    c
}

impl KafkaLog {
    /// Connects (lazily, like librdkafka) and checks that a broker answers.
    pub async fn connect(cfg: KafkaConfig) -> Result<Self, LogError> {
        let producer = new_producer(&cfg)?;
        let admin: AdminClient<DefaultClientContext> =
            base_config(&cfg).create().map_err(unavailable)?;
        let log = KafkaLog {
            cfg,
            producer: Arc::new(std::sync::RwLock::new(producer)),
            admin: Arc::new(admin),
            partitions: Arc::default(),
            offset_readers: Arc::default(),
        };
        let client = log.producer();
        tokio::task::spawn_blocking(move || client.client().fetch_metadata(None, ADMIN_TIMEOUT))
            .await
            .map_err(|e| LogError::Storage(e.to_string()))?
            .map_err(unavailable)?;
        Ok(log)
    }

    /// The partition count of `topic`, from metadata (cached: partitions are only added by
    /// `create_topic`).
    async fn partition_count(&self, topic: &str) -> Result<u32, LogError> {
        if let Some(n) = self.cached_partitions(topic) {
            return Ok(n);
        }
        let client = self.producer();
        let name = topic.to_string();
        let md = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(Some(&name), ADMIN_TIMEOUT)
        })
        .await
        .map_err(|e| LogError::Storage(e.to_string()))?
        .map_err(unavailable)?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|n| *n > 0)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        if let Ok(mut m) = self.partitions.lock() {
            m.insert(topic.to_string(), n);
        }
        Ok(n)
    }

    fn cached_partitions(&self, topic: &str) -> Option<u32> {
        self.partitions.lock().ok()?.get(topic).copied()
    }

    /// A non-subscribed consumer of `group`, used to read its committed offsets.
    fn offset_reader(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut readers = self
            .offset_readers
            .lock()
            .map_err(|_| LogError::Storage("poisoned".into()))?;
        if let Some(r) = readers.get(group) {
            return Ok(r.clone());
        }
        let reader: BaseConsumer = base_config(&self.cfg)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(unavailable)?;
        let reader = Arc::new(reader);
        readers.insert(group.to_string(), reader.clone());
        Ok(reader)
    }

    fn producer(&self) -> FutureProducer<StatsContext> {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts a fresh producer (a new producer id) after a delivery failed. The old one's
    /// idempotence state (producer id, epoch, sequence numbers) may not survive a broker that
    /// lost it: tansu 0.6 fails on produce from a producer id it no longer knows after a
    /// crash. Nothing acknowledged is affected: failed appends were already reported as
    /// failed, and the old producer's queue is purged when it is dropped.
    fn renew_producer(&self, failed: &FutureProducer<StatsContext>) {
        let Ok(mut current) = self.producer.write() else {
            return;
        };
        // Another append may have renewed it already.
        if current.client().native_ptr() != failed.client().native_ptr() {
            return;
        }
        match new_producer(&self.cfg) {
            Ok(fresh) => {
                *current = fresh;
                metrics::counter!("tally_kafka_producer_renewals_total").increment(1);
                tracing::warn!("kafka producer renewed after a failed delivery");
            }
            Err(e) => tracing::warn!(error = %e, "kafka producer renewal failed"),
        }
    }

    /// Waits until every queued message is acknowledged (or the timeout passes).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().flush(timeout) {
            tracing::warn!(error = %e, "kafka producer flush");
        }
    }
}

#[async_trait]
impl Producer for KafkaLog {
    async fn append(
        &self,
        topic: &str,
        records: Vec<OutRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        let partitions = self.partition_count(topic).await?;
        let producer = self.producer();
        let result = send_all(&producer, topic, partitions, &records).await;
        if result.is_err() {
            self.renew_producer(&producer);
        }
        result
    }
}

/// Sends every record with an explicit partition, then waits for every acknowledgement.
async fn send_all(
    producer: &FutureProducer<StatsContext>,
    topic: &str,
    partitions: u32,
    records: &[OutRecord],
) -> Result<Vec<Appended>, LogError> {
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        // Our own murmur2 partitioner, so keys land where the embedded log puts them.
        let partition = crate::partition_for(&r.key, partitions) as i32;
        let mut record = FutureRecord::to(topic)
            .key(&r.key)
            .payload(&r.value)
            .partition(partition);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(unavailable(e)),
            }
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for delivery in pending {
        match delivery.await {
            Ok(Ok(d)) => out.push(Appended {
                partition: d.partition as u32,
                offset: d.offset as u64,
            }),
            Ok(Err((e, _))) => return Err(unavailable(e)),
            Err(_) => return Err(LogError::Closed),
        }
    }
    Ok(out)
}

/// A group member's settings: offsets stored only by explicit commits, never automatically.
fn consumer_config(cfg: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("group.id", group)
        .set("client.id", format!("tally-{group}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", cfg.fetch_wait.as_millis().to_string())
        .set("statistics.interval.ms", "5000");
    c
}

fn new_producer(cfg: &KafkaConfig) -> Result<FutureProducer<StatsContext>, LogError> {
    base_config(cfg)
        .set("client.id", "tally-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("statistics.interval.ms", "5000")
        .create_with_context(StatsContext)
        .map_err(unavailable)
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        let new = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(self.cfg.replication),
        );
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(LogError::Storage(format!("create topic {t}: {code}")));
                }
            }
        }
        // Metadata may lag the creation briefly: wait until the topic is visible.
        for _ in 0..50 {
            if self.partition_count(topic).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LogError::UnknownTopic(topic.to_string()))
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        let mut partitions = Vec::new();
        for t in topics {
            let n = self.partition_count(t).await?;
            partitions.extend((0..n).map(|p| (t.clone(), p)));
        }
        let ctx = GroupContext::default();
        let membership = Membership {
            cfg: self.cfg.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            partitions,
            watch: StallWatch::new(self.cfg.stall_window),
            next_check: Instant::now() + STALL_CHECK_EVERY,
        };
        Ok(Box::new(KafkaConsumer {
            inner: membership.join(&ctx)?,
            ctx,
            floors: HashMap::new(),
            membership: Some(membership),
        }))
    }

    /// Every partition, assigned directly: no group membership, so no rebalances and no wait
    /// for the broker to notice that a crashed predecessor is gone. Offsets are still the
    /// group's: read from its commits at start, committed under its name.
    async fn sole_consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        let ctx = GroupContext::default();
        let consumer: StreamConsumer<GroupContext> = consumer_config(&self.cfg, group)
            .create_with_context(ctx.clone())
            .map_err(unavailable)?;
        let mut tpl = TopicPartitionList::new();
        let mut owned = Vec::new();
        for t in topics {
            for p in self.committed(group, t).await? {
                // Offset 0 also covers "never committed": the log's first offset.
                let offset = match p.next_offset {
                    0 => Offset::Beginning,
                    n => Offset::Offset(n as i64),
                };
                tpl.add_partition_offset(t, p.partition as i32, offset)
                    .map_err(unavailable)?;
                owned.push((t.clone(), p.partition));
            }
        }
        consumer.assign(&tpl).map_err(unavailable)?;
        if let Ok(mut a) = ctx.assigned.lock() {
            *a = owned;
        }
        Ok(Box::new(KafkaConsumer {
            inner: Arc::new(consumer),
            ctx,
            floors: HashMap::new(),
            membership: None,
        }))
    }

    async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Position>, LogError> {
        let n = self.partition_count(topic).await?;
        let reader = self.offset_reader(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition(topic, p as i32);
        }
        let got = tokio::task::spawn_blocking(move || reader.committed_offsets(tpl, ADMIN_TIMEOUT))
            .await
            .map_err(|e| LogError::Storage(e.to_string()))?
            .map_err(unavailable)?;
        Ok(to_positions(&got, topic))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<Position>, LogError> {
        let n = self.partition_count(topic).await?;
        let client = self.producer();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|p| {
                    let (_, high) = client
                        .client()
                        .fetch_watermarks(&name, p as i32, ADMIN_TIMEOUT)
                        .map_err(unavailable)?;
                    Ok(Position {
                        topic: name.clone(),
                        partition: p,
                        next_offset: high.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
        .map_err(|e| LogError::Storage(e.to_string()))?
    }

    /// Kafka enforces retention itself (`retention.ms` on the topic); nothing to do here.
    async fn delete_before(&self, _topic: &str, _cutoff_ms: i64) -> Result<u64, LogError> {
        Ok(0)
    }
}

fn to_positions(tpl: &TopicPartitionList, topic: &str) -> Vec<Position> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| Position {
            topic: topic.to_string(),
            partition: e.partition() as u32,
            next_offset: committed_offset(e.offset()),
        })
        .collect()
}

/// A committed offset as a position: "never committed" reads as the log's start.
fn committed_offset(o: Offset) -> u64 {
    match o {
        Offset::Offset(o) if o >= 0 => o as u64,
        _ => 0,
    }
}

/// Tracks rebalances: a counter bumped on every revoke and assign, and the current assignment.
#[derive(Clone, Default)]
struct GroupContext {
    generation: Arc<AtomicU64>,
    assigned: Arc<Mutex<Vec<(String, u32)>>>,
}

impl GroupContext {
    fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, s: Statistics) {
        StatsContext.stats(s);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::info!(rebalance = ?describe(rebalance), "kafka rebalance starting");
        if let Rebalance::Revoke(_) = rebalance {
            if let Ok(mut a) = self.assigned.lock() {
                a.clear();
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Assign(tpl) = rebalance {
            if let Ok(mut a) = self.assigned.lock() {
                *a = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition() as u32))
                    .collect();
                a.sort();
                metrics::gauge!("tally_kafka_assigned_partitions").set(a.len() as f64);
            }
        }
        tracing::info!(rebalance = ?describe(rebalance), "kafka rebalance done");
    }
}

fn describe(r: &Rebalance<'_>) -> String {
    let parts = |tpl: &TopicPartitionList| {
        tpl.elements()
            .iter()
            .map(|e| format!("{}/{}", e.topic(), e.partition()))
            .collect::<Vec<_>>()
            .join(",")
    };
    match r {
        Rebalance::Assign(tpl) => format!("assign [{}]", parts(tpl)),
        Rebalance::Revoke(tpl) => format!("revoke [{}]", parts(tpl)),
        Rebalance::Error(e) => format!("error {e}"),
    }
}

struct KafkaConsumer {
    inner: Arc<StreamConsumer<GroupContext>>,
    ctx: GroupContext,
    /// Positions set by `seek` (a store's own offsets): records below them are skipped.
    floors: HashMap<(String, u32), u64>,
    /// Set for group members (not for a sole consumer, which owns every partition).
    membership: Option<Membership>,
}

/// How often a group member compares the group's progress with the log's end.
const STALL_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long one check may wait on the broker, and how long to wait after a failed one: an
/// unreachable broker must not hold up the polls (which report it themselves).
const STALL_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const STALL_CHECK_BACKOFF: Duration = Duration::from_secs(30);

/// What a group member needs to watch for stalled partitions and to rejoin.
struct Membership {
    cfg: KafkaConfig,
    group: String,
    topics: Vec<String>,
    /// Every partition of the subscribed topics.
    partitions: Vec<(String, u32)>,
    watch: StallWatch,
    next_check: Instant,
}

impl Membership {
    /// A fresh group member subscribed to the topics (a new member id, so a new join).
    fn join(&self, ctx: &GroupContext) -> Result<Arc<StreamConsumer<GroupContext>>, LogError> {
        let consumer = self.create(ctx)?;
        self.subscribe(&consumer)?;
        Ok(consumer)
    }

    fn create(&self, ctx: &GroupContext) -> Result<Arc<StreamConsumer<GroupContext>>, LogError> {
        let consumer: StreamConsumer<GroupContext> = consumer_config(&self.cfg, &self.group)
            .create_with_context(ctx.clone())
            .map_err(unavailable)?;
        Ok(Arc::new(consumer))
    }

    fn subscribe(&self, consumer: &StreamConsumer<GroupContext>) -> Result<(), LogError> {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(unavailable)
    }

    /// The group's committed offset and the log's end for every partition (blocking calls).
    fn snapshot(
        consumer: &StreamConsumer<GroupContext>,
        partitions: &[(String, u32)],
    ) -> Result<Vec<PartitionProgress>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p as i32);
        }
        let committed = consumer.committed_offsets(tpl, STALL_CHECK_TIMEOUT)?;
        let mut out = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            let (_, end) = consumer.fetch_watermarks(t, *p as i32, STALL_CHECK_TIMEOUT)?;
            out.push(PartitionProgress {
                topic: t.clone(),
                partition: *p,
                committed: committed
                    .find_partition(t, *p as i32)
                    .map_or(0, |e| committed_offset(e.offset())),
                end: end.max(0) as u64,
            });
        }
        Ok(out)
    }
}

impl KafkaConsumer {
    fn to_record(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        Record {
            topic: m.topic().to_string(),
            partition: m.partition() as u32,
            offset: m.offset() as u64,
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    fn below_floor(&self, r: &Record) -> bool {
        self.floors
            .get(&(r.topic.clone(), r.partition))
            .is_some_and(|f| r.offset < *f)
    }

    /// Every few seconds, looks for partitions with work and no progress outside this
    /// member's assignment; once one has stood still for the stall window, leaves the group
    /// and joins again. Runs between polls, so everything handed out is already committed.
    async fn rejoin_if_stalled(&mut self) -> Result<(), LogError> {
        let Some(m) = self.membership.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < m.next_check {
            return Ok(());
        }
        m.next_check = now + STALL_CHECK_EVERY;
        let (inner, partitions) = (self.inner.clone(), m.partitions.clone());
        let snapshot =
            tokio::task::spawn_blocking(move || Membership::snapshot(&inner, &partitions))
                .await
                .map_err(|e| LogError::Storage(e.to_string()))?;
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                // Nothing was observed, so no clock may keep running across the gap.
                tracing::debug!(error = %e, "stall check skipped");
                m.watch.reset();
                m.next_check = Instant::now() + STALL_CHECK_BACKOFF;
                return Ok(());
            }
        };
        let owned = self.ctx.assignment();
        let stalled = m.watch.observe(Instant::now(), &owned, &snapshot);
        metrics::gauge!("tally_kafka_stalled_partitions", "group" => m.group.clone())
            .set(stalled.len() as f64);
        if stalled.is_empty() {
            return Ok(());
        }
        tracing::warn!(group = %m.group, ?stalled, window_s = m.cfg.stall_window.as_secs(),
            "partitions have work but no progress and no owner here: rejoining the group");
        metrics::counter!("tally_kafka_group_rejoins_total", "group" => m.group.clone())
            .increment(1);
        m.watch.reset();
        // Leave first, then join, so the broker sees one member go and a new one arrive.
        let old = std::mem::replace(&mut self.inner, m.create(&self.ctx)?);
        // Closing leaves the group (and waits on the broker): off the async workers.
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .map_err(|e| LogError::Storage(e.to_string()))?;
        if let Ok(mut a) = self.ctx.assigned.lock() {
            a.clear();
        }
        self.ctx.generation.fetch_add(1, Ordering::SeqCst);
        m.subscribe(&self.inner)
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Record>, LogError> {
        self.rejoin_if_stalled().await?;
        let mut out: Vec<(u64, Record)> = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < max.max(1) {
            let next = if out.is_empty() {
                tokio::time::timeout_at(deadline, self.inner.recv())
                    .await
                    .ok()
            } else {
                self.inner.recv().now_or_never()
            };
            let Some(m) = next else { break };
            let m = m.map_err(unavailable)?;
            let r = self.to_record(&m);
            if !self.below_floor(&r) {
                out.push((self.ctx.generation.load(Ordering::SeqCst), r));
            }
        }
        // Keep only what arrived after the latest rebalance.
        let now = self.ctx.generation.load(Ordering::SeqCst);
        Ok(out
            .into_iter()
            .filter(|(g, _)| *g == now)
            .map(|(_, r)| r)
            .collect())
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in positions {
            tpl.add_partition_offset(
                &p.topic,
                p.partition as i32,
                Offset::Offset(p.next_offset as i64),
            )
            .map_err(unavailable)?;
        }
        // A synchronous commit blocks on the broker's reply: keep it off the async workers.
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| LogError::Storage(e.to_string()))?
            .map_err(unavailable)
    }

    async fn seek(&mut self, position: &Position) -> Result<(), LogError> {
        self.floors.insert(
            (position.topic.clone(), position.partition),
            position.next_offset,
        );
        Ok(())
    }

    async fn rewind_to_committed(&mut self) -> Result<(), LogError> {
        let assigned = self.inner.assignment().map_err(unavailable)?;
        let committed = self
            .inner
            .committed_offsets(assigned, ADMIN_TIMEOUT)
            .map_err(unavailable)?;
        let mut tpl = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)
                .map_err(unavailable)?;
        }
        self.inner
            .seek_partitions(tpl, ADMIN_TIMEOUT)
            .map_err(unavailable)?;
        self.ctx.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.ctx.assignment()
    }
}
