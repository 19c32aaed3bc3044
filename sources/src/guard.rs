//! The network guard: the one place that decides whether Tally may open a connection to a
//! seller's host. It resolves the host itself and checks every address it would connect to,
//! and the caller connects to the checked address (never to the name again), so a DNS answer
//! that changes between check and connect cannot slip through. Loopback, private, link-local
//! and other non-public ranges are refused unless the allow list names them; Tally's own
//! stores and broker are refused even then.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{host} resolves to {addr}, a {range} address, which is not allowed (TALLY_SOURCE_ALLOW_CIDRS can allow it)")]
    Restricted {
        host: String,
        addr: IpAddr,
        range: &'static str,
    },
    #[error("{host}:{port} is one of Tally's own servers and is never a source")]
    OwnServer { host: String, port: u16 },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// What [`NetworkGuard`] allows.
#[derive(Debug, Clone, Default)]
pub struct NetworkGuard {
    allow: Vec<IpNet>,
    own: Vec<SocketAddr>,
}

/// The non-public range `ip` is in, if any.
pub fn restricted_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted_v4(v4);
            }
            restricted_v6(v6)
        }
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if ip.is_multicast() {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

impl NetworkGuard {
    /// `allow`: ranges that may be reached although they are not public. `own`: Tally's own
    /// servers (metadata store, analytics store, broker), refused whatever `allow` says.
    pub fn new(allow: Vec<IpNet>, own: Vec<SocketAddr>) -> Self {
        Self { allow, own }
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == addr.ip()
                    // A server listening on loopback or on every address is reached through
                    // any loopback address of this machine.
                    || ((o.ip().is_loopback() || o.ip().is_unspecified())
                        && restricted_range(addr.ip()) == Some("loopback")))
        })
    }

    /// Checks one address that `host` resolved to.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), GuardError> {
        if self.is_own(addr) {
            return Err(GuardError::OwnServer {
                host: host.to_string(),
                port: addr.port(),
            });
        }
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr.ip()),
            v4 => v4,
        };
        match restricted_range(ip) {
            Some(range) if !self.allow.iter().any(|n| n.contains(&ip)) => {
                Err(GuardError::Restricted {
                    host: host.to_string(),
                    addr: ip,
                    range,
                })
            }
            _ => Ok(()),
        }
    }

    /// Resolves `host` and returns its addresses, all of them checked: one refused address
    /// refuses the host (a name that also points inside must not be used as a way in).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| GuardError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(GuardError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        for a in &addrs {
            self.check(host, *a)?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn non_public_ranges_are_named() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.9.9.9", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("224.0.0.1", Some("broadcast, multicast or reserved")),
            ("255.255.255.255", Some("broadcast, multicast or reserved")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("private (unique local)")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(restricted_range(ip.parse().expect("ip")), want, "{ip}");
        }
    }

    #[test]
    fn restricted_addresses_pass_only_when_allowed() {
        let closed = NetworkGuard::default();
        assert!(matches!(
            closed.check("db", sock("127.0.0.1:5433")),
            Err(GuardError::Restricted {
                range: "loopback",
                ..
            })
        ));
        assert!(closed
            .check("db", sock("[::ffff:192.168.0.5]:5432"))
            .is_err());
        assert!(closed.check("db", sock("93.184.216.34:5432")).is_ok());
        let open = NetworkGuard::new(vec!["127.0.0.0/8".parse().expect("net")], vec![]);
        assert!(open.check("db", sock("127.0.0.1:5433")).is_ok());
        assert!(
            open.check("db", sock("10.0.0.1:5433")).is_err(),
            "only what is named"
        );
    }

    #[test]
    fn own_servers_are_refused_even_when_allowed() {
        let guard = NetworkGuard::new(
            vec![
                "127.0.0.0/8".parse().expect("net"),
                "10.0.0.0/8".parse().expect("net"),
            ],
            vec![sock("127.0.0.1:5432"), sock("10.0.0.7:8123")],
        );
        assert!(matches!(
            guard.check("localhost", sock("127.0.0.1:5432")),
            Err(GuardError::OwnServer { port: 5432, .. })
        ));
        assert!(
            guard.check("alias", sock("127.0.0.2:5432")).is_err(),
            "any loopback alias"
        );
        assert!(guard.check("v6", sock("[::1]:5432")).is_err());
        assert!(guard.check("ch", sock("10.0.0.7:8123")).is_err());
        assert!(guard.check("other", sock("10.0.0.8:8123")).is_ok());
        assert!(
            guard.check("seller", sock("127.0.0.1:5433")).is_ok(),
            "another port"
        );
    }

    #[tokio::test]
    async fn resolve_checks_every_address_of_a_name() {
        let closed = NetworkGuard::default();
        assert!(matches!(
            closed.resolve("localhost", 5432).await,
            Err(GuardError::Restricted { .. })
        ));
        let open = NetworkGuard::new(
            vec![
                "127.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
            vec![],
        );
        let addrs = open.resolve("localhost", 5433).await.expect("allowed");
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 5433));
        assert!(matches!(
            open.resolve("no-such-host.invalid", 1).await,
            Err(GuardError::Resolve { .. })
        ));
    }
}
