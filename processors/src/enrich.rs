//! Enrichment of a collected event: page and host from the URL, UTM fallback from the query
//! string, referrer domain (self-referrals dropped), user agent (woothee) and bot flag.
//! Visitor id and geo are computed at the edge (ingest), so the raw IP never reaches the log.

use schemas::{CollectedEvent, EnrichedEvent};
use url::Url;

/// The longest page path stored; longer paths are cut at a character boundary.
const MAX_PAGE_LEN: usize = 512;

/// What the user agent says about the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgentInfo {
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub device_type: Option<String>,
    pub is_bot: bool,
}

/// Substrings (lower case) of user agents that belong to bots, crawlers and HTTP libraries.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "headless",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptime",
    "facebookexternalhit",
    "httpie",
    "libwww-perl",
    "scrapy",
];

fn known(s: &str) -> Option<String> {
    (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_string())
}

/// Parses a user agent into browser, OS, device type and a bot flag.
pub fn parse_user_agent(ua: &str) -> UserAgentInfo {
    let lower = ua.to_ascii_lowercase();
    let marker_bot = BOT_MARKERS.iter().any(|m| lower.contains(m));
    let Some(r) = woothee::parser::Parser::new().parse(ua) else {
        return UserAgentInfo {
            is_bot: marker_bot,
            ..Default::default()
        };
    };
    let is_bot = marker_bot || r.category == "crawler";
    let tablet = lower.contains("ipad")
        || lower.contains("tablet")
        || (lower.contains("android") && !lower.contains("mobile"));
    let device = match r.category {
        _ if is_bot => "bot",
        "pc" => "desktop",
        "smartphone" | "mobilephone" if tablet => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "appliance" => "appliance",
        _ => "other",
    };
    UserAgentInfo {
        browser: known(r.name),
        browser_version: known(r.version),
        os: known(r.os),
        os_version: known(&r.os_version),
        device_type: Some(device.to_string()),
        is_bot,
    }
}

/// Lower-cased host without a leading `www.`.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h.strip_prefix("www.").map(str::to_string).unwrap_or(h)
}

/// The referrer's domain, or `None` when there is none or it is the page's own site.
pub fn referrer_domain(referrer: Option<&str>, page_host: Option<&str>) -> Option<String> {
    let raw = referrer?.trim();
    if raw.is_empty() {
        return None;
    }
    let url = Url::parse(raw)
        .or_else(|_| Url::parse(&format!("https://{raw}")))
        .ok()?;
    let host = normalize_host(url.host_str()?);
    if host.is_empty() || page_host.is_some_and(|p| normalize_host(p) == host) {
        return None;
    }
    Some(host)
}

/// Page path and host of a URL; relative URLs ("/pricing") keep their path.
pub fn page_and_host(url: &str) -> (String, Option<String>, Option<Url>) {
    let parsed = Url::parse(url).ok().filter(|u| u.has_host());
    let parsed = parsed.or_else(|| Url::parse("http://relative.invalid").ok()?.join(url).ok());
    match parsed {
        Some(u) => {
            let host = u
                .host_str()
                .filter(|h| *h != "relative.invalid")
                .map(normalize_host);
            (truncate(u.path(), MAX_PAGE_LEN), host, Some(u))
        }
        None => (truncate(url, MAX_PAGE_LEN), None, None),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A UTM parameter from the URL's query string.
fn utm_from(url: Option<&Url>, name: &str) -> Option<String> {
    url?.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Enriches a collected event. `ua` is the parsed user agent (callers cache it).
pub fn enrich(raw: CollectedEvent, ua: &UserAgentInfo) -> EnrichedEvent {
    let (page, hostname, url) = page_and_host(&raw.url);
    let referrer_domain = referrer_domain(raw.referrer.as_deref(), hostname.as_deref());
    // Explicit payload fields win over the URL's query string.
    let utm = |explicit: Option<String>, name| explicit.or_else(|| utm_from(url.as_ref(), name));
    EnrichedEvent {
        utm_source: utm(raw.utm_source, "utm_source"),
        utm_medium: utm(raw.utm_medium, "utm_medium"),
        utm_campaign: utm(raw.utm_campaign, "utm_campaign"),
        utm_term: utm(raw.utm_term, "utm_term"),
        utm_content: utm(raw.utm_content, "utm_content"),
        event_id: raw.event_id,
        website_id: raw.website_id,
        received_at_ms: raw.received_at_ms,
        timestamp_ms: raw.timestamp_ms,
        event_type: raw.event_type,
        url: raw.url,
        page,
        hostname,
        referrer: raw.referrer,
        referrer_domain,
        screen: raw.screen,
        language: raw.language,
        event_name: raw.event_name,
        event_data: raw.event_data,
        country: raw.country,
        region: raw.region,
        city: raw.city,
        browser: ua.browser.clone(),
        browser_version: ua.browser_version.clone(),
        os: ua.os.clone(),
        os_version: ua.os_version.clone(),
        device_type: ua.device_type.clone(),
        visitor_id: raw.visitor_id,
        is_bot: ua.is_bot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn user_agents_are_classified() {
        let c = parse_user_agent(CHROME_MAC);
        assert_eq!(c.browser.as_deref(), Some("Chrome"));
        assert_eq!(c.browser_version.as_deref(), Some("120.0.0.0"));
        assert_eq!(c.os.as_deref(), Some("Mac OSX"));
        assert_eq!(c.device_type.as_deref(), Some("desktop"));
        assert!(!c.is_bot);
        assert_eq!(
            parse_user_agent(IPHONE).device_type.as_deref(),
            Some("mobile")
        );
        assert_eq!(
            parse_user_agent(IPAD).device_type.as_deref(),
            Some("tablet")
        );
        let bot = parse_user_agent(GOOGLEBOT);
        assert!(bot.is_bot);
        assert_eq!(bot.device_type.as_deref(), Some("bot"));
        assert!(parse_user_agent("curl/8.4.0").is_bot);
        assert!(parse_user_agent("python-requests/2.31").is_bot);
        assert!(!parse_user_agent("").is_bot);
    }

    #[test]
    fn referrer_domain_strips_www_and_drops_self_referrals() {
        assert_eq!(
            referrer_domain(
                Some("https://www.google.com/search?q=x"),
                Some("example.com")
            )
            .as_deref(),
            Some("google.com")
        );
        assert_eq!(
            referrer_domain(Some("https://www.example.com/a"), Some("example.com")),
            None
        );
        assert_eq!(
            referrer_domain(Some("https://example.com/a"), Some("www.example.com")),
            None
        );
        assert_eq!(
            referrer_domain(Some("news.ycombinator.com"), None).as_deref(),
            Some("news.ycombinator.com")
        );
        assert_eq!(referrer_domain(Some(""), None), None);
        assert_eq!(referrer_domain(None, None), None);
        assert_eq!(referrer_domain(Some("::::"), None), None);
    }

    #[test]
    fn page_and_host_handle_absolute_relative_and_garbage() {
        let (p, h, _) = page_and_host("https://WWW.Example.com/pricing?x=1#top");
        assert_eq!(
            (p.as_str(), h.as_deref()),
            ("/pricing", Some("example.com"))
        );
        let (p, h, _) = page_and_host("/docs/intro?utm_source=x");
        assert_eq!((p.as_str(), h), ("/docs/intro", None));
        let long = format!("/{}", "é".repeat(400));
        assert!(page_and_host(&long).0.len() <= MAX_PAGE_LEN);
    }

    #[test]
    fn utm_comes_from_url_unless_given() {
        let raw = CollectedEvent {
            url: "https://example.com/?utm_source=news&utm_medium=email&utm_campaign=spring".into(),
            utm_source: Some("explicit".into()),
            referrer: Some("https://www.example.com/".into()),
            ..Default::default()
        };
        let e = enrich(raw, &parse_user_agent(CHROME_MAC));
        assert_eq!(e.utm_source.as_deref(), Some("explicit"));
        assert_eq!(e.utm_medium.as_deref(), Some("email"));
        assert_eq!(e.utm_campaign.as_deref(), Some("spring"));
        assert_eq!(e.utm_term, None);
        assert_eq!(e.referrer_domain, None, "self-referral dropped");
        assert_eq!(e.page, "/");
        assert_eq!(e.browser.as_deref(), Some("Chrome"));
    }
}
