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
    /// Prefix of topic names.
    #[arg(long, env = "TALLY_NAMESPACE", default_value = "tally")]
    pub namespace: String,
    /// DuckDB memory limit.
    #[arg(long, env = "TALLY_DUCKDB_MEMORY", default_value = "1GB")]
    pub duckdb_memory: String,
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
