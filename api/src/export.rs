//! `GET /api/websites/{id}/export?start_date&end_date&format=csv`: the period's events (with
//! the filters, bots as `include_bots` says) as a CSV attachment, streamed page by page in
//! (time, id) order, so a large export never sits in memory.

use crate::params::{bad, Params};
use crate::routes::resolve;
use crate::ApiState;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{SecondsFormat, TimeZone, Utc};
use projections::{ExportRow, Scope};
use std::sync::Arc;
use web::{ApiResult, Caller};

/// The longest period one export covers.
const MAX_EXPORT_DAYS: i64 = 90;
/// Events read from the store per page.
const PAGE: u32 = 5_000;

const HEADER: &str = "id,website_id,event_type,url,referrer_domain,event_name,country,browser,\
                      os,device_type,language,utm_source,utm_medium,utm_campaign,created_at\n";

/// One CSV cell: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-`,
/// `@` or control character is prefixed with `'` so spreadsheets do not run it as a formula.
pub fn cell(v: &str) -> String {
    let guarded = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// The CSV lines of `rows`.
pub fn csv_lines(website_id: &str, rows: &[ExportRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 160);
    for r in rows {
        let created = Utc
            .timestamp_millis_opt(r.ts_ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default();
        let o = |v: &Option<String>| cell(v.as_deref().unwrap_or(""));
        let fields = [
            uuid::Uuid::from_u128(r.event_id).to_string(),
            cell(website_id),
            cell(&r.event_type),
            cell(&r.page),
            o(&r.referrer_domain),
            o(&r.event_name),
            o(&r.country),
            o(&r.browser),
            o(&r.os),
            o(&r.device),
            o(&r.language),
            o(&r.utm_source),
            o(&r.utm_medium),
            o(&r.utm_campaign),
            created,
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// What the stream still has to send: the page in hand (the first is read before the answer
/// starts, so a failing store is an error status, not a cut file) and where the next begins.
struct Cursor {
    state: Arc<ApiState>,
    scope: Scope,
    page: Option<Vec<ExportRow>>,
    /// A later page failed: after the rows so far, the body ends in an error (a cut file).
    failed: Option<String>,
}

async fn next_chunk(mut c: Cursor) -> Option<(Result<Bytes, std::io::Error>, Cursor)> {
    if let Some(e) = c.failed.take() {
        return Some((Err(std::io::Error::other(e)), c));
    }
    let page = c.page.take()?;
    if page.len() == PAGE as usize {
        let after = page.last().map(|r| (r.ts_ms, r.event_id));
        match c.state.analytics.export_page(&c.scope, after, PAGE).await {
            Ok(next) if !next.is_empty() => c.page = Some(next),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "export page failed");
                c.failed = Some(e.to_string());
            }
        }
    }
    let chunk = csv_lines(&c.scope.website_id, &page);
    Some((Ok(Bytes::from(chunk)), c))
}

/// `GET /api/websites/{id}/export`
pub async fn export(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Response> {
    let (p, period, scope) = resolve(&s, &caller, &id, q).await?;
    if !matches!(p.get("format").map(String::as_str), None | Some("csv")) {
        return Err(bad("format", "format must be csv"));
    }
    if period.days() > MAX_EXPORT_DAYS {
        return Err(bad(
            "start_date",
            format!("an export covers at most {MAX_EXPORT_DAYS} days"),
        ));
    }
    let first = s.analytics.export_page(&scope, None, PAGE).await?;
    let name = format!(
        "attachment; filename=\"tally-{}-{}-{}.csv\"",
        scope
            .website_id
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""),
        period.start,
        period.end
    );
    let header_chunk = futures::stream::once(async { Ok(Bytes::from_static(HEADER.as_bytes())) });
    let rows = futures::stream::unfold(
        Cursor {
            state: s.clone(),
            scope,
            page: (!first.is_empty()).then_some(first),
            failed: None,
        },
        next_chunk,
    );
    let body = Body::from_stream(futures::StreamExt::chain(header_chunk, rows));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(cell("-1,2"), "\"'-1,2\"");
    }

    #[test]
    fn lines_have_every_column() {
        let row = ExportRow {
            event_id: 1,
            ts_ms: 1_773_100_800_000,
            event_type: "pageview".into(),
            page: "/a".into(),
            country: Some("DE".into()),
            ..Default::default()
        };
        let line = csv_lines("w1", &[row]);
        assert_eq!(
            line,
            "00000000-0000-0000-0000-000000000001,w1,pageview,/a,,,DE,,,,,,,,2026-03-10T00:00:00.000Z\n"
        );
        assert_eq!(
            HEADER.trim_end().split(',').count(),
            line.trim_end().split(',').count()
        );
    }
}
