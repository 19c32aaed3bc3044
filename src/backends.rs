//! The one place that picks implementations: backend URLs from the settings are parsed into a
//! plan (pure, unit-tested), checked for consistency with the role being started, and opened.
//!
//! - log: `file://DIR` (default `DATA_DIR/log`) or `kafka://host:port[,host:port…]`
//! - analytics: `duckdb://PATH` (default `DATA_DIR/analytics.duckdb`) or `http(s)://…` ClickHouse
//! - metadata: `sqlite://PATH` (default `DATA_DIR/metadata.db`) or `postgres://…`

use crate::config::Settings;
use anyhow::{bail, Context};
use eventlog::{EmbeddedLog, EventLog};
use projections::{AnalyticsReader, MetadataReader, MetadataWriter};
use schemas::topics;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "kafka")]
use std::time::Duration;

/// Both halves of an analytics backend, with the metering projection's usage rows.
pub trait AnalyticsStore: AnalyticsReader + processors::metering::MeteringStore {}
impl<T: AnalyticsReader + processors::metering::MeteringStore> AnalyticsStore for T {}

/// Both halves of a metadata backend.
pub trait MetadataStore:
    MetadataWriter
    + MetadataReader
    + projections::MoneyStore
    + projections::SessionStore
    + projections::AuditStore
    + projections::alert_store::AlertStore
{
}
impl<T> MetadataStore for T where
    T: MetadataWriter
        + MetadataReader
        + projections::MoneyStore
        + projections::SessionStore
        + projections::AuditStore
        + projections::alert_store::AlertStore
{
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPlan {
    Embedded(PathBuf),
    Kafka(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalyticsPlan {
    DuckDb(PathBuf),
    ClickHouse(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataPlan {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Which backends to open, decided from the settings before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub log: LogPlan,
    pub analytics: AnalyticsPlan,
    pub metadata: MetadataPlan,
}

fn path_of(url: &str, scheme: &str) -> Option<PathBuf> {
    url.strip_prefix(scheme)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

impl Plan {
    /// Parses the URLs; an unknown scheme is an error that names the setting.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Plan> {
        let log = match s.log_url.as_deref().filter(|u| !u.is_empty()) {
            None => LogPlan::Embedded(s.data_dir.join("log")),
            Some(u) => {
                if let Some(p) = path_of(u, "file://") {
                    LogPlan::Embedded(p)
                } else if let Some(brokers) = u.strip_prefix("kafka://").filter(|b| !b.is_empty()) {
                    LogPlan::Kafka(brokers.trim_end_matches('/').to_string())
                } else {
                    bail!("TALLY_LOG_URL {u:?}: expected file://DIR or kafka://host:port[,host:port…]")
                }
            }
        };
        let analytics = match s.analytics_url.as_deref().filter(|u| !u.is_empty()) {
            None => AnalyticsPlan::DuckDb(s.data_dir.join("analytics.duckdb")),
            Some(u) => {
                if let Some(p) = path_of(u, "duckdb://") {
                    AnalyticsPlan::DuckDb(p)
                } else if u.starts_with("http://") || u.starts_with("https://") {
                    AnalyticsPlan::ClickHouse(u.to_string())
                } else {
                    bail!("TALLY_ANALYTICS_URL {u:?}: expected duckdb://PATH or http(s)://host:port (ClickHouse)")
                }
            }
        };
        let metadata = match s.metadata_url.as_deref().filter(|u| !u.is_empty()) {
            None => MetadataPlan::Sqlite(s.data_dir.join("metadata.db")),
            Some(u) => {
                if let Some(p) = path_of(u, "sqlite://") {
                    MetadataPlan::Sqlite(p)
                } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                    MetadataPlan::Postgres(u.to_string())
                } else {
                    bail!("TALLY_METADATA_URL {u:?}: expected sqlite://PATH or postgres://…")
                }
            }
        };
        projections::check_namespace(&s.namespace)
            .map_err(|e| anyhow::anyhow!("TALLY_NAMESPACE: {e}"))?;
        Ok(Plan {
            log,
            analytics,
            metadata,
        })
    }

    /// Roles in separate processes must share their backends: embedded ones live inside one
    /// process, so a split deployment needs Kafka, ClickHouse and Postgres.
    pub fn check_split_role(&self, role: &str) -> anyhow::Result<()> {
        let embedded = [
            matches!(self.log, LogPlan::Embedded(_)).then_some("TALLY_LOG_URL (kafka://…)"),
            matches!(self.analytics, AnalyticsPlan::DuckDb(_))
                .then_some("TALLY_ANALYTICS_URL (http://… ClickHouse)"),
            matches!(self.metadata, MetadataPlan::Sqlite(_))
                .then_some("TALLY_METADATA_URL (postgres://…)"),
        ];
        let missing: Vec<&str> = embedded.into_iter().flatten().collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "`tally {role}` runs one role of a split deployment, whose processes must share \
             their backends; embedded ones cannot be shared. Set {} (or use `tally serve`)",
            missing.join(", ")
        )
    }
}

/// Flushes and closes a log (the embedded writer, the Kafka producer queue).
type Closer = Box<dyn Fn() + Send + Sync>;

/// The open backends.
pub struct Backends {
    pub log: Arc<dyn EventLog>,
    pub analytics: Arc<dyn AnalyticsStore>,
    pub metadata: Arc<dyn MetadataStore>,
    /// The money path's store: the embedded store batches in its own writer thread; the
    /// Postgres one has `GroupCommit` in front of it.
    pub money: Arc<dyn projections::MoneyStore>,
    /// Rate-limit counters and concurrency slots: in memory for one embedded process, in
    /// Postgres for every process of a deployment.
    pub limits: Arc<dyn projections::limits::LimitStore>,
    close_log: Closer,
}

#[allow(dead_code)] // unused when every backend feature is on
fn compiled_out(what: &str, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} was compiled out of this binary: rebuild with `--features {feature}` \
         (it is on by default)"
    )
}

async fn open_log(plan: &LogPlan, s: &Settings) -> anyhow::Result<(Arc<dyn EventLog>, Closer)> {
    match plan {
        LogPlan::Embedded(dir) => {
            let log = EmbeddedLog::open(dir).context("opening the event log")?;
            let closer = log.clone();
            Ok((Arc::new(log), Box::new(move || closer.close())))
        }
        #[cfg(feature = "kafka")]
        LogPlan::Kafka(brokers) => {
            let mut cfg = eventlog::KafkaConfig::new(brokers);
            cfg.message_timeout = Duration::from_millis(s.kafka_message_timeout_ms);
            cfg.stall_window = Duration::from_secs(s.kafka_stall_window_secs);
            cfg.fetch_wait = Duration::from_millis(s.kafka_fetch_wait_ms);
            let log = eventlog::KafkaLog::connect(cfg)
                .await
                .with_context(|| format!("connecting to Kafka at {brokers}"))?;
            let closer = log.clone();
            Ok((
                Arc::new(log),
                Box::new(move || closer.flush(Duration::from_secs(10))),
            ))
        }
        #[cfg(not(feature = "kafka"))]
        LogPlan::Kafka(_) => {
            let _ = s;
            Err(compiled_out("The Kafka log", "kafka"))
        }
    }
}

async fn open_analytics(
    plan: &AnalyticsPlan,
    s: &Settings,
) -> anyhow::Result<Arc<dyn AnalyticsStore>> {
    match plan {
        AnalyticsPlan::DuckDb(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Ok(Arc::new(
                projections::DuckAnalytics::open(path, &s.duckdb_memory)
                    .context("opening the analytics store")?,
            ))
        }
        #[cfg(feature = "clickhouse")]
        AnalyticsPlan::ClickHouse(url) => Ok(Arc::new(
            projections::ClickHouseAnalytics::open(url, &s.namespace)
                .await
                .with_context(|| format!("opening ClickHouse at {url}"))?,
        )),
        #[cfg(not(feature = "clickhouse"))]
        AnalyticsPlan::ClickHouse(_) => Err(compiled_out("The ClickHouse store", "clickhouse")),
    }
}

/// The metadata store, the money path's store and the rate-limit store it implies.
type MetadataStores = (
    Arc<dyn MetadataStore>,
    Arc<dyn projections::MoneyStore>,
    Arc<dyn projections::limits::LimitStore>,
);

async fn open_metadata(plan: &MetadataPlan, s: &Settings) -> anyhow::Result<MetadataStores> {
    match plan {
        MetadataPlan::Sqlite(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let store = Arc::new(
                projections::SqliteMetadata::open(path)
                    .await
                    .context("opening the metadata store")?,
            );
            let limits = Arc::new(projections::limits::MemoryLimits::default());
            Ok((store.clone(), store, limits))
        }
        #[cfg(feature = "postgres")]
        MetadataPlan::Postgres(url) => {
            let store = Arc::new(
                projections::PgMetadata::open(url, &s.namespace)
                    .await
                    .context("opening the Postgres metadata store")?,
            );
            let money = Arc::new(projections::group_commit::GroupCommit::new(store.clone()));
            Ok((store.clone(), money, store))
        }
        #[cfg(not(feature = "postgres"))]
        MetadataPlan::Postgres(_) => {
            let _ = s;
            Err(compiled_out("The Postgres store", "postgres"))
        }
    }
}

impl Backends {
    /// Opens the planned backends and creates the topics.
    pub async fn open(s: &Settings) -> anyhow::Result<Self> {
        let plan = Plan::from_settings(s)?;
        std::fs::create_dir_all(&s.data_dir)
            .with_context(|| format!("creating {}", s.data_dir.display()))?;
        let (log, close_log) = open_log(&plan.log, s).await?;
        for (name, partitions) in [
            (topics::COLLECT_RAW, s.partitions),
            (topics::COLLECT_ENRICHED, s.partitions),
            // One partition keeps entity events in a single total order.
            (topics::ENTITIES, 1),
            (topics::DLQ, 1),
            // Money movements, keyed by company: read by metering, billing and alerts.
            (topics::USAGE, s.partitions),
            (topics::USAGE_TEST, s.partitions),
            (topics::BILLING, s.partitions),
            (topics::ALERTS, s.partitions),
        ] {
            log.create_topic(&s.topic(name), partitions).await?;
        }
        let analytics = open_analytics(&plan.analytics, s).await?;
        let (metadata, money, limits) = open_metadata(&plan.metadata, s).await?;
        Ok(Self {
            log,
            analytics,
            metadata,
            money,
            limits,
            close_log,
        })
    }

    /// Flushes what the log still holds in memory and closes it.
    pub fn close(&self) {
        (self.close_log)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::config::tests::settings()
    }

    #[test]
    fn no_urls_means_embedded_in_the_data_dir() {
        let p = Plan::from_settings(&settings()).expect("plan");
        assert_eq!(p.log, LogPlan::Embedded("d/log".into()));
        assert_eq!(
            p.analytics,
            AnalyticsPlan::DuckDb("d/analytics.duckdb".into())
        );
        assert_eq!(p.metadata, MetadataPlan::Sqlite("d/metadata.db".into()));
        assert!(
            p.check_split_role("ingest").is_err(),
            "embedded cannot be split"
        );
    }

    #[test]
    fn urls_pick_the_distributed_backends() {
        let mut s = settings();
        s.log_url = Some("kafka://a:9092,b:9092".into());
        s.analytics_url = Some("http://127.0.0.1:8123".into());
        s.metadata_url = Some("postgres://u:p@h/db".into());
        let p = Plan::from_settings(&s).expect("plan");
        assert_eq!(p.log, LogPlan::Kafka("a:9092,b:9092".into()));
        assert_eq!(
            p.analytics,
            AnalyticsPlan::ClickHouse("http://127.0.0.1:8123".into())
        );
        assert_eq!(
            p.metadata,
            MetadataPlan::Postgres("postgres://u:p@h/db".into())
        );
        assert!(p.check_split_role("process").is_ok());
        s.metadata_url = None;
        let err = Plan::from_settings(&s)
            .expect("plan")
            .check_split_role("api")
            .expect_err("sqlite cannot be shared");
        assert!(err.to_string().contains("TALLY_METADATA_URL"), "{err}");
    }

    #[test]
    fn unknown_schemes_and_bad_namespaces_are_refused() {
        for (log, analytics, metadata) in [
            (Some("redis://x"), None, None),
            (Some("kafka://"), None, None),
            (None, Some("mysql://x"), None),
            (None, None, Some("mongodb://x")),
        ] {
            let mut s = settings();
            s.log_url = log.map(str::to_string);
            s.analytics_url = analytics.map(str::to_string);
            s.metadata_url = metadata.map(str::to_string);
            assert!(
                Plan::from_settings(&s).is_err(),
                "{log:?} {analytics:?} {metadata:?}"
            );
        }
        let mut s = settings();
        s.namespace = "Prod; DROP".into();
        let err = Plan::from_settings(&s).expect_err("bad namespace");
        assert!(err.to_string().contains("TALLY_NAMESPACE"), "{err}");
    }
}
