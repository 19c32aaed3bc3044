//! Helpers shared by the source tests: credentials from a service URL, a guard that lets the
//! loopback sellers' servers through, and execution limits.

use sources::model::{Limits, NetworkCredentials};
use sources::NetworkGuard;
use std::time::Duration;

pub fn creds(url: &str) -> NetworkCredentials {
    let u = url::Url::parse(url).expect("url");
    NetworkCredentials {
        host: u.host_str().expect("host").to_string(),
        port: u.port(),
        database: u.path().trim_start_matches('/').to_string(),
        username: u.username().to_string(),
        password: u.password().unwrap_or("").to_string(),
        ssl_mode: None,
    }
}

pub fn loopback_allowed() -> NetworkGuard {
    NetworkGuard::new(vec!["127.0.0.0/8".parse().expect("net")], vec![])
}

pub fn limits(rows: usize, timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        max_rows: rows,
        max_bytes: 1 << 20,
    }
}
