//! Settings: flags, `TALLY_*` environment variables, or an optional config file of
//! `TALLY_X=value` lines (`--config` / `TALLY_CONFIG`). Precedence: flag > env > file > default.

use clap::Args;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `tally serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where the embedded log and stores live.
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Collect requests per IP per minute (0 = off).
    #[arg(long, env = "TALLY_COLLECT_RATE_LIMIT", default_value_t = 60)]
    pub collect_rate_limit: u32,
    /// Calls per hour to the authentication routes (`/api/auth/…`), per caller or, signed
    /// out, per IP (0 = off).
    #[arg(long, env = "TALLY_AUTH_REQUESTS_PER_HOUR", default_value_t = 1_000)]
    pub auth_requests_per_hour: u64,
    /// Calls per hour to the marketplace routes, per key or signed-in user (0 = off).
    #[arg(long, env = "TALLY_MARKET_REQUESTS_PER_HOUR", default_value_t = 10_000)]
    pub market_requests_per_hour: u64,
    /// Comma-separated CIDRs of proxies whose X-Forwarded-For is trusted.
    #[arg(long, env = "TALLY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Comma-separated allowed CORS origins (empty = any origin).
    #[arg(long, env = "TALLY_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// MaxMind-format city database (GeoLite2-City.mmdb). Missing = null geo.
    #[arg(long, env = "TALLY_GEOIP_PATH")]
    pub geoip_path: Option<PathBuf>,
    /// Events older than this many days are deleted from the store and the log.
    #[arg(long, env = "TALLY_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: u32,
    /// Oldest `timestamp` collect accepts, in hours.
    #[arg(long, env = "TALLY_MAX_EVENT_AGE_HOURS", default_value_t = 168)]
    pub max_event_age_hours: u64,
    /// Partitions of the collect topics.
    #[arg(long, env = "TALLY_PARTITIONS", default_value_t = 4)]
    pub partitions: u32,
    /// Names this deployment's Kafka topics (prefix), ClickHouse database and Postgres schema,
    /// so several deployments or test runs can share one set of servers. `[a-z_][a-z0-9_]*`.
    #[arg(long, env = "TALLY_NAMESPACE", default_value = "tally")]
    pub namespace: String,
    /// Event log: `file://DIR` (default: DATA_DIR/log) or `kafka://host:port[,host:port…]`.
    #[arg(long, env = "TALLY_LOG_URL")]
    pub log_url: Option<String>,
    /// Analytics store: `duckdb://PATH` (default: DATA_DIR/analytics.duckdb) or
    /// `http(s)://host:port` for ClickHouse.
    #[arg(long, env = "TALLY_ANALYTICS_URL")]
    pub analytics_url: Option<String>,
    /// Metadata store: `sqlite://PATH` (default: DATA_DIR/metadata.db) or `postgres://…`.
    #[arg(long, env = "TALLY_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// How long a Kafka append may wait for the broker before collect answers 503.
    #[arg(long, env = "TALLY_KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 5000)]
    pub kafka_message_timeout_ms: u64,
    /// How long a Kafka partition may have work, no committed progress and no owner in a
    /// `tally process` member before that member rejoins its consumer group.
    #[arg(long, env = "TALLY_KAFKA_STALL_WINDOW_SECS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(11..))]
    pub kafka_stall_window_secs: u64,
    /// How long a Kafka consumer's fetch waits at the broker when nothing is new.
    #[arg(long, env = "TALLY_KAFKA_FETCH_WAIT_MS", default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub kafka_fetch_wait_ms: u64,

    /// DuckDB memory limit.
    #[arg(long, env = "TALLY_DUCKDB_MEMORY", default_value = "1GB")]
    pub duckdb_memory: String,

    /// The seller's share of an execution's price for companies that do not set their own
    /// `vendor_share_percent` (a fraction from 0 to 1; the platform keeps the rest).
    #[arg(long, env = "TALLY_VENDOR_SHARE", default_value_t = 0.85,
        value_parser = parse_share)]
    pub vendor_share: f64,

    /// Tests only (never read from the command line or the environment): how far the
    /// marketplace's clock (`ingest`: executions, prices, periods, usage windows) runs ahead of
    /// the wall clock, so an end-to-end test can place executions around a month boundary.
    #[arg(skip)]
    pub clock_offset_ms: i64,

    /// Credits per USD: prices in USD become whole credits at this rate, rounded up.
    #[arg(long, env = "TALLY_CREDITS_PER_USD", default_value_t = 100,
        value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub credits_per_usd: i64,

    /// 64 hex characters: the AES-256-GCM key that seals source credentials. Unset on `serve`,
    /// a key is generated once into `DATA_DIR/secret.key`; split roles must all set the same.
    #[arg(long, env = "TALLY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Non-public networks that sources may be in (comma-separated CIDRs; Tally's own servers
    /// are refused even when listed).
    #[arg(long, env = "TALLY_SOURCE_ALLOW_CIDRS", default_value = "")]
    pub source_allow_cidrs: String,
    /// The folder file sources (SQLite files) must be in; unset, file sources are refused.
    #[arg(long, env = "TALLY_SOURCE_FILE_ROOT")]
    pub source_file_root: Option<std::path::PathBuf>,
    /// The statement timeout of an execution at a source, in ms.
    #[arg(long, env = "TALLY_EXECUTION_TIMEOUT_MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub execution_timeout_ms: u64,
    /// Connections pooled per seller connection.
    #[arg(long, env = "TALLY_SOURCE_POOL_SIZE", default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=256))]
    pub source_pool_size: u32,
    /// How long a relay's claim on outbox records lasts before another relay may take them
    /// over (its holder is presumed dead), in ms.
    #[arg(long, env = "TALLY_OUTBOX_LEASE_MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub outbox_lease_ms: u64,
    /// How long an identical execution of a `cached` asset is answered from cache, in
    /// seconds (0: off).
    #[arg(long, env = "TALLY_RESULT_CACHE_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub result_cache_secs: u64,
    /// The first retry of a failed webhook delivery waits this long, in ms; each next one
    /// twice as long (at most an hour).
    #[arg(long, env = "TALLY_WEBHOOK_RETRY_BASE_MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// How long a webhook delivery is retried before it is kept as dead, in seconds.
    #[arg(long, env = "TALLY_WEBHOOK_GIVE_UP_SECS", default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub webhook_give_up_secs: u64,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a fraction between 0 and 1 (e.g. 0.85)"
        )),
    }
}

impl Settings {
    /// The trusted proxy networks; a malformed entry is a start-up error.
    pub fn trusted_proxy_nets(&self) -> anyhow::Result<Vec<IpNet>> {
        split(&self.trusted_proxies)
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!("TALLY_TRUSTED_PROXIES: {s:?} is not a CIDR or IP address")
                    })
            })
            .collect()
    }

    pub fn cors_origin_list(&self) -> Vec<String> {
        split(&self.cors_origins).map(str::to_string).collect()
    }

    pub fn topic(&self, name: &str) -> String {
        schemas::topics::qualified(&self.namespace, name)
    }

    /// The log consumer group of a stage: namespaced like the topics, so deployments that
    /// share a broker never share (or rebalance) a group.
    pub fn group(&self, stage: &str) -> String {
        schemas::topics::qualified(&self.namespace, stage)
    }
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Loads `TALLY_X=value` lines from the config file named by `--config FILE` or
/// `TALLY_CONFIG` into the environment, without overriding variables already set. Call before
/// any thread starts.
pub fn load_config_file(args: &[String]) -> anyhow::Result<()> {
    let from_flag = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let from_flag = from_flag.or_else(|| {
        args.iter()
            .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
    });
    let Some(path) = from_flag.or_else(|| std::env::var("TALLY_CONFIG").ok()) else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("config file {path}: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!(
                "config file {path}, line {}: expected TALLY_NAME=value",
                n + 1
            );
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if !k.starts_with("TALLY_") {
            anyhow::bail!(
                "config file {path}, line {}: {k} is not a TALLY_ setting",
                n + 1
            );
        }
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Defaults, with the data dir `d`.
    pub(crate) fn settings() -> Settings {
        Settings {
            data_dir: "d".into(),
            listen: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            collect_rate_limit: 60,
            auth_requests_per_hour: 1_000,
            market_requests_per_hour: 10_000,
            trusted_proxies: String::new(),
            cors_origins: String::new(),
            geoip_path: None,
            retention_days: 365,
            max_event_age_hours: 168,
            partitions: 4,
            namespace: "tally".into(),
            duckdb_memory: "1GB".into(),
            log_url: None,
            analytics_url: None,
            metadata_url: None,
            kafka_message_timeout_ms: 5000,
            kafka_stall_window_secs: 30,
            kafka_fetch_wait_ms: 500,
            vendor_share: 0.85,
            clock_offset_ms: 0,
            credits_per_usd: 100,
            secret_key: None,
            source_allow_cidrs: String::new(),
            source_file_root: None,
            execution_timeout_ms: 10_000,
            outbox_lease_ms: 30_000,
            result_cache_secs: 60,
            webhook_retry_base_ms: 30_000,
            webhook_give_up_secs: 86_400,
            source_pool_size: 16,
        }
    }

    #[test]
    fn config_file_fills_unset_variables_only() {
        let dir = std::env::temp_dir().join(format!("tally-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("tally.env");
        std::fs::write(
            &file,
            "# comment\nTALLY_ZZ_FROM_FILE=\"file\"\nTALLY_ZZ_ALREADY_SET=file\n",
        )
        .unwrap_or_default();
        std::env::set_var("TALLY_ZZ_ALREADY_SET", "env");
        let args = vec![
            "tally".to_string(),
            "--config".to_string(),
            file.display().to_string(),
        ];
        assert!(load_config_file(&args).is_ok());
        assert_eq!(
            std::env::var("TALLY_ZZ_FROM_FILE").ok().as_deref(),
            Some("file")
        );
        assert_eq!(
            std::env::var("TALLY_ZZ_ALREADY_SET").ok().as_deref(),
            Some("env"),
            "env wins over the file"
        );
        std::fs::write(&file, "NOT_TALLY=1\n").unwrap_or_default();
        assert!(load_config_file(&args).is_err(), "foreign keys are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_addresses_and_refuse_garbage() {
        let mut s = settings();
        s.trusted_proxies = "10.0.0.0/8, 192.168.1.1".into();
        assert_eq!(s.trusted_proxy_nets().map(|v| v.len()).ok(), Some(2));
        s.trusted_proxies = "not-a-network".into();
        assert!(s.trusted_proxy_nets().is_err());
        assert_eq!(s.topic("collect.raw"), "tally.collect.raw");
    }
}
