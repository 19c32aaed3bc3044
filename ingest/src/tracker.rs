//! The tracker script, `GET /s.js`: `assets/s.js` compiled into the binary and served as is,
//! or gzipped (once, on first use) to clients that accept it.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::OnceLock;

/// The script's source.
pub const SCRIPT: &str = include_str!("../assets/s.js");

/// The script gzipped at the best level: what a browser downloads.
pub fn gzipped() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail; if it somehow did, clients get the plain script.
        enc.write_all(SCRIPT.as_bytes())
            .and_then(|_| enc.finish())
            .unwrap_or_default()
    })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|c| c.split(';').next().unwrap_or("").trim())
                .any(|c| c.eq_ignore_ascii_case("gzip"))
        })
}

/// `GET /s.js`
pub async fn script(headers: HeaderMap) -> Response {
    let gz = gzipped();
    let mut resp = if accepts_gzip(&headers) && !gz.is_empty() {
        let mut r = gz.into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        SCRIPT.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_fits_in_two_kilobytes_gzipped() {
        let gz = gzipped();
        assert!(!gz.is_empty() && gz.len() <= 2048, "{} bytes", gz.len());
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut plain)
            .expect("gunzip");
        assert_eq!(plain, SCRIPT);
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("deflate"));
        assert!(!accepts_gzip(&h));
    }
}
