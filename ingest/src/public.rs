//! The public ends of short links and pixels: `GET /l/{slug}` counts a click and redirects
//! (`302`) to the link's destination with its campaign tags; `GET /p/{key}` counts a view and
//! answers a transparent 1×1 GIF. Both record an event through the same path as collect
//! (`link_click` named `link:{slug}`, `pixel_view` named `pixel:{key}`), from the visitor's IP
//! and user agent. A click is redirected even when it cannot be counted (rate limit, log down).

use crate::collect::{append, CollectPayload};
use crate::edge::client_ip;
use crate::IngestState;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use projections::SiteObjectScope;
use schemas::SiteObjectState;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use web::site::{link_event, pixel_event, Link, Pixel, LINK, PIXEL};
use web::{ApiError, ApiResult};

/// A transparent 1×1 GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

async fn by_key(s: &IngestState, kind: &str, key: &str) -> ApiResult<SiteObjectState> {
    s.metadata
        .site_objects_where(SiteObjectScope::PublicKey, kind, key)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no {kind} {key:?}")))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Counts one event from the requester, unless its IP is over the collect limit.
async fn count(s: &IngestState, ip: IpAddr, headers: &HeaderMap, payload: CollectPayload) {
    if s.limiter.as_ref().is_some_and(|l| !l.check(ip).allowed) {
        return;
    }
    let ua = header_str(headers, header::USER_AGENT).unwrap_or("");
    if let Err(e) = append(s, ip, ua, vec![payload]).await {
        tracing::warn!(error = %e.message, "a public link or pixel event was not recorded");
    }
}

fn requester(s: &IngestState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = header_str(headers, header::HeaderName::from_static("x-forwarded-for"));
    client_ip(peer.ip(), forwarded, &s.cfg.trusted_proxies)
}

/// `GET /l/{slug}`
pub async fn link(
    State(s): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let o = by_key(&s, LINK, &slug).await?;
    let l: Link = serde_json::from_str(&o.body_json).map_err(ApiError::internal)?;
    let target = l.target_url();
    let payload = CollectPayload {
        website_id: o.website_id.clone(),
        event_type: Some("link_click".into()),
        url: format!("/l/{slug}"),
        referrer: header_str(&headers, header::REFERER).map(str::to_string),
        event_name: Some(link_event(&slug)),
        event_data: Some(serde_json::json!({ "destination_url": l.destination_url })),
        utm_source: l.utm_source.clone(),
        utm_medium: l.utm_medium.clone(),
        utm_campaign: l.utm_campaign.clone(),
        utm_term: l.utm_term.clone(),
        utm_content: l.utm_content.clone(),
        ..Default::default()
    };
    count(&s, requester(&s, peer, &headers), &headers, payload).await;
    let mut resp = StatusCode::FOUND.into_response();
    let location = HeaderValue::from_str(&target).map_err(ApiError::internal)?;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /p/{key}?url=` (the page viewed; default the pixel's `default_url`)
pub async fn pixel(
    State(s): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let o = by_key(&s, PIXEL, &key).await?;
    let p: Pixel = serde_json::from_str(&o.body_json).map_err(ApiError::internal)?;
    let url = q
        .get("url")
        .and_then(|u| web::site::web_url("url", u).ok())
        .or(p.default_url)
        .unwrap_or_else(|| format!("/p/{key}"));
    let payload = CollectPayload {
        website_id: o.website_id.clone(),
        event_type: Some("pixel_view".into()),
        url,
        referrer: header_str(&headers, header::REFERER).map(str::to_string),
        event_name: Some(pixel_event(&key)),
        ..Default::default()
    };
    count(&s, requester(&s, peer, &headers), &headers, payload).await;
    let mut resp = GIF.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    Ok(resp)
}
