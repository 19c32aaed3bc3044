//! Edge enrichment that needs the client's IP, done before anything is written so the IP never
//! reaches the log: the client IP (trusted proxies only), the visitor id, and GeoIP.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// The client's IP: the socket peer, or the first untrusted address in `X-Forwarded-For` when
/// the peer is a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    // Walk from the nearest hop back: the first address that is not one of our proxies is the
    // client (anything further left could have been written by the client itself).
    let hops: Vec<IpAddr> = header
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .copied()
        .or(hops.first().copied())
        .unwrap_or(peer)
}

/// A visitor id: 16 hex chars of a keyed hash over a daily salt, website, IP and user agent.
/// The salt changes at midnight UTC, so ids cannot be linked across days.
pub fn visitor_id(
    secret: &str,
    day: DateTime<Utc>,
    website_id: &str,
    ip: IpAddr,
    user_agent: &str,
) -> String {
    let day_number = day.timestamp().div_euclid(86_400);
    let mut h = Sha256::new();
    for part in [
        secret.as_bytes(),
        &day_number.to_le_bytes(),
        website_id.as_bytes(),
        ip.to_string().as_bytes(),
        user_agent.as_bytes(),
    ] {
        h.update((part.len() as u32).to_le_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..8])
}

/// Where an IP is, as far as the database knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoInfo {
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
}

/// A MaxMind-format database (GeoLite2/GeoIP2 City or Country).
#[derive(Clone)]
pub struct GeoDb {
    reader: Arc<maxminddb::Reader<Vec<u8>>>,
}

#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    names: Option<BTreeMap<&'a str, &'a str>>,
}

#[derive(serde::Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Named<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Named<'a>>>,
    #[serde(borrow)]
    city: Option<Named<'a>>,
}

fn english(n: &Named<'_>) -> Option<String> {
    n.names.as_ref()?.get("en").map(|s| s.to_string())
}

impl GeoDb {
    /// Opens the database; a missing or unreadable file gives `None` and a warning, never a
    /// failure (events are then stored with null geo).
    pub fn open(path: &Path) -> Option<GeoDb> {
        match maxminddb::Reader::open_readfile(path) {
            Ok(reader) => Some(GeoDb {
                reader: Arc::new(reader),
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "GeoIP database not loaded; geo fields will be null");
                None
            }
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let Ok(rec) = self.reader.lookup::<CityRecord>(ip) else {
            return GeoInfo::default();
        };
        GeoInfo {
            country: rec
                .country
                .as_ref()
                .and_then(|c| c.iso_code.map(str::to_string)),
            region: rec
                .subdivisions
                .as_ref()
                .and_then(|s| s.first())
                .and_then(english),
            city: rec.city.as_ref().and_then(english),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarded_for_is_used_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_default()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("garbage"), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(client_ip(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn visitor_id_is_16_hex_and_rotates_daily() {
        let day1 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let later_same_day = DateTime::from_timestamp(1_700_000_000 + 600, 0).unwrap_or_default();
        let day2 = DateTime::from_timestamp(1_700_000_000 + 86_400, 0).unwrap_or_default();
        let a = visitor_id("s", day1, "w", ip("1.2.3.4"), "ua");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, visitor_id("s", later_same_day, "w", ip("1.2.3.4"), "ua"));
        assert_ne!(a, visitor_id("s", day2, "w", ip("1.2.3.4"), "ua"));
        assert_ne!(a, visitor_id("other", day1, "w", ip("1.2.3.4"), "ua"));
        assert_ne!(a, visitor_id("s", day1, "w2", ip("1.2.3.4"), "ua"));
        assert_ne!(a, visitor_id("s", day1, "w", ip("1.2.3.5"), "ua"));
    }

    #[test]
    fn missing_geo_database_is_not_fatal() {
        assert!(GeoDb::open(Path::new("/nonexistent/geo.mmdb")).is_none());
    }
}
