//! The stages: enrich (raw → enriched topic), analytics (enriched → analytics store, with
//! sessions) and metadata (entity events → metadata store). Each is thin I/O around the pure
//! functions in `enrich` and `session`.

use crate::enrich::{enrich, parse_user_agent, UserAgentInfo};
use crate::ids::{event_key, visitor_key};
use crate::runner::{now_ms, Stage, StageError};
use crate::session::Sessionizer;
use async_trait::async_trait;
use eventlog::{EventLog, OutRecord, Position, Record};
use projections::{AnalyticsWriter, MetadataWriter, StoredEvent, StoredOffset};
use schemas::{CollectedEvent, EnrichedEvent, EntityEvent};
use std::collections::HashMap;
use std::sync::Arc;

/// User agents parsed once and remembered (clients repeat a handful of them).
const UA_CACHE_MAX: usize = 10_000;

pub(crate) fn to_positions(offsets: Vec<StoredOffset>) -> Vec<Position> {
    offsets
        .into_iter()
        .map(|o| Position {
            topic: o.topic,
            partition: o.partition,
            next_offset: o.next_offset,
        })
        .collect()
}

pub(crate) fn to_stored(positions: &[Position]) -> Vec<StoredOffset> {
    positions
        .iter()
        .map(|p| StoredOffset {
            topic: p.topic.clone(),
            partition: p.partition,
            next_offset: p.next_offset,
        })
        .collect()
}

/// Raw collected events → enriched events.
pub struct EnrichStage {
    log: Arc<dyn EventLog>,
    input: String,
    output: String,
    ua_cache: HashMap<String, UserAgentInfo>,
}

impl EnrichStage {
    pub fn new(log: Arc<dyn EventLog>, input: String, output: String) -> Self {
        Self {
            log,
            input,
            output,
            ua_cache: HashMap::new(),
        }
    }

    fn user_agent(&mut self, ua: Option<&str>) -> UserAgentInfo {
        let ua = ua.unwrap_or("");
        if let Some(hit) = self.ua_cache.get(ua) {
            return hit.clone();
        }
        let info = parse_user_agent(ua);
        if self.ua_cache.len() >= UA_CACHE_MAX {
            self.ua_cache.clear();
        }
        self.ua_cache.insert(ua.to_string(), info.clone());
        info
    }
}

#[async_trait]
impl Stage for EnrichStage {
    type Batch = Vec<OutRecord>;

    fn name(&self) -> &str {
        "enrich"
    }

    fn topics(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError> {
        Ok(Vec::new())
    }

    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>) {
        let mut out = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let raw = match schemas::decode::<CollectedEvent>(&r.value) {
                Ok(raw) => raw,
                Err(e) => {
                    rejected.push((i, e.to_string()));
                    continue;
                }
            };
            let ua = self.user_agent(raw.user_agent.as_deref());
            let enriched = enrich(raw, &ua);
            match schemas::encode(&enriched) {
                Ok(value) => out.push(OutRecord {
                    key: r.key.clone(),
                    value,
                }),
                Err(e) => rejected.push((i, e.to_string())),
            }
        }
        (out, rejected)
    }

    async fn write(
        &mut self,
        batch: Self::Batch,
        _positions: &[Position],
    ) -> Result<(), StageError> {
        self.log.append(&self.output, batch).await?;
        Ok(())
    }
}

/// Enriched events → analytics store, with sessions assigned.
pub struct AnalyticsStage {
    store: Arc<dyn AnalyticsWriter>,
    input: String,
    sessions: Sessionizer,
    batches: u64,
}

/// How far back the sessionizer's state is rebuilt from the store at start.
const WARM_WINDOW_MS: i64 = 24 * 3600 * 1000;

impl AnalyticsStage {
    /// Builds the stage and rebuilds session state from the store.
    pub async fn new(store: Arc<dyn AnalyticsWriter>, input: String) -> Result<Self, StageError> {
        let mut stage = Self {
            store,
            input,
            sessions: Sessionizer::new(),
            batches: 0,
        };
        stage.warm().await?;
        Ok(stage)
    }

    /// Merges the sessions stored in the last 24 h into the sessionizer's state.
    async fn warm(&mut self) -> Result<(), StageError> {
        let since = now_ms() - WARM_WINDOW_MS;
        self.sessions
            .warm(&self.store.recent_sessions(since).await?);
        Ok(())
    }

    fn stored_row(&mut self, e: EnrichedEvent) -> StoredEvent {
        let visitor = visitor_key(&e.visitor_id);
        let id = event_key(&e.event_id);
        let session = self
            .sessions
            .assign(&e.website_id, visitor, e.timestamp_ms, id);
        StoredEvent {
            event_id: id,
            website_id: e.website_id,
            ts_ms: e.timestamp_ms,
            received_at_ms: e.received_at_ms,
            event_type: e.event_type,
            page: e.page,
            hostname: e.hostname,
            referrer_domain: e.referrer_domain,
            event_name: e.event_name,
            event_data: e.event_data,
            screen: e.screen,
            language: e.language,
            utm_source: e.utm_source,
            utm_medium: e.utm_medium,
            utm_campaign: e.utm_campaign,
            utm_term: e.utm_term,
            utm_content: e.utm_content,
            country: e.country,
            region: e.region,
            city: e.city,
            browser: e.browser,
            browser_version: e.browser_version,
            os: e.os,
            os_version: e.os_version,
            device: e.device_type,
            visitor,
            session,
            is_bot: e.is_bot,
        }
    }
}

#[async_trait]
impl Stage for AnalyticsStage {
    type Batch = Vec<StoredEvent>;

    /// Partitions moved: another member may have stored sessions of visitors now ours.
    async fn reassigned(&mut self) -> Result<(), StageError> {
        self.warm().await
    }

    fn name(&self) -> &str {
        "analytics"
    }

    fn topics(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError> {
        Ok(to_positions(self.store.offsets("analytics").await?))
    }

    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>) {
        let mut rows = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match schemas::decode::<EnrichedEvent>(&r.value) {
                Ok(e) => rows.push(self.stored_row(e)),
                Err(e) => rejected.push((i, e.to_string())),
            }
        }
        self.batches += 1;
        if self.batches % 1000 == 0 {
            self.sessions.prune(now_ms() - WARM_WINDOW_MS);
        }
        (rows, rejected)
    }

    async fn write(
        &mut self,
        batch: Self::Batch,
        positions: &[Position],
    ) -> Result<(), StageError> {
        let n = self
            .store
            .write("analytics", batch, to_stored(positions))
            .await?;
        metrics::counter!("tally_events_stored_total").increment(n as u64);
        Ok(())
    }
}

/// Entity events → metadata store.
pub struct MetadataStage {
    store: Arc<dyn MetadataWriter>,
    input: String,
}

impl MetadataStage {
    pub fn new(store: Arc<dyn MetadataWriter>, input: String) -> Self {
        Self { store, input }
    }
}

#[async_trait]
impl Stage for MetadataStage {
    type Batch = Vec<EntityEvent>;

    fn name(&self) -> &str {
        "metadata"
    }

    fn topics(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    async fn resume_offsets(&mut self) -> Result<Vec<Position>, StageError> {
        Ok(to_positions(self.store.offsets("metadata").await?))
    }

    fn prepare(&mut self, records: &[Record]) -> (Self::Batch, Vec<(usize, String)>) {
        let mut events = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match schemas::decode_entity(&r.value) {
                Ok(e) => events.push(e),
                Err(e) => rejected.push((i, e.to_string())),
            }
        }
        (events, rejected)
    }

    async fn write(
        &mut self,
        batch: Self::Batch,
        positions: &[Position],
    ) -> Result<(), StageError> {
        self.store
            .apply("metadata", &batch, &to_stored(positions))
            .await?;
        Ok(())
    }
}
