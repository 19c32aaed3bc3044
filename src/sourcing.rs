//! Builds the sources registry for a process: the network guard (the allow list from
//! `TALLY_SOURCE_ALLOW_CIDRS`, and Tally's own stores, broker and listener, which are refused
//! whatever the list says) and the credentials key (`TALLY_SECRET_KEY`, or on `serve` a key
//! generated once into the data dir with mode 0600).

use crate::backends::{AnalyticsPlan, LogPlan, MetadataPlan, Plan};
use crate::Settings;
use anyhow::Context;
use ipnet::IpNet;
use sources::{NetworkGuard, Registry, RegistryConfig, SecretBox};
use std::net::SocketAddr;
use std::time::Duration;

/// `host:port` pairs of the servers this deployment itself uses.
fn own_endpoints(plan: &Plan) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    let from_url = |u: &str, default_port: u16| -> Option<(String, u16)> {
        let url = url::Url::parse(u).ok()?;
        Some((
            url.host_str()?.trim_matches(['[', ']']).to_string(),
            url.port().unwrap_or(default_port),
        ))
    };
    if let LogPlan::Kafka(brokers) = &plan.log {
        for b in brokers.split(',') {
            if let Some(hp) = from_url(&format!("kafka://{}", b.trim()), 9092) {
                out.push(hp);
            }
        }
    }
    if let AnalyticsPlan::ClickHouse(u) = &plan.analytics {
        let default = if u.starts_with("https://") {
            8443
        } else {
            8123
        };
        out.extend(from_url(u, default));
    }
    if let MetadataPlan::Postgres(u) = &plan.metadata {
        out.extend(from_url(u, 5432));
    }
    out
}

async fn resolve_all(endpoints: &[(String, u16)]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (host, port) in endpoints {
        match tokio::net::lookup_host((host.as_str(), *port)).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot resolve one of Tally's own servers for the source guard")
            }
        }
    }
    out
}

pub fn allow_list(s: &Settings) -> anyhow::Result<Vec<IpNet>> {
    s.source_allow_cidrs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("TALLY_SOURCE_ALLOW_CIDRS: {c:?} is not a CIDR or IP address")
                })
        })
        .collect()
}

fn secret_box(s: &Settings, role: &str) -> anyhow::Result<SecretBox> {
    match s.secret_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => SecretBox::from_hex(k).context("TALLY_SECRET_KEY"),
        None if role == "serve" => {
            std::fs::create_dir_all(&s.data_dir)?;
            SecretBox::load_or_create(&s.data_dir.join("secret.key")).map_err(anyhow::Error::from)
        }
        None => anyhow::bail!(
            "TALLY_SECRET_KEY must be set for `tally {role}`: every process of a split deployment needs the same key (64 hex characters)"
        ),
    }
}

/// The registry for a process running `role`.
pub async fn registry(s: &Settings, role: &str) -> anyhow::Result<Registry> {
    let plan = Plan::from_settings(s)?;
    let mut own = resolve_all(&own_endpoints(&plan)).await;
    own.push(s.listen);
    let guard = NetworkGuard::new(allow_list(s)?, own);
    let cfg = RegistryConfig {
        execution_timeout: Duration::from_millis(s.execution_timeout_ms),
        pool_size: s.source_pool_size,
    };
    Ok(Registry::new(guard, secret_box(s, role)?, cfg)
        .with_file_root(sources::FileRoot(s.source_file_root.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_endpoints_come_from_every_backend_url() {
        let plan = Plan {
            log: LogPlan::Kafka("127.0.0.1:9092,broker2:9093".into()),
            analytics: AnalyticsPlan::ClickHouse("http://user:pw@ch.internal:8123".into()),
            metadata: MetadataPlan::Postgres("postgres://u:p@pg.internal/db".into()),
        };
        assert_eq!(
            own_endpoints(&plan),
            vec![
                ("127.0.0.1".to_string(), 9092),
                ("broker2".to_string(), 9093),
                ("ch.internal".to_string(), 8123),
                ("pg.internal".to_string(), 5432),
            ]
        );
    }
}
