//! In a real browser: headless Chromium, driven over WebDriver (chromedriver, which
//! `deploy/local/services.sh` installs; each test starts its own on a free port), loads a test
//! page served by the test with Tally's `/s.js` on it. The tracker's pageview on load, a
//! single-page navigation, a custom event and an outbound click must reach the dashboard routes
//! as exactly those numbers, and the built-in dashboard (signed in through its form) must show
//! them; Do-Not-Track is respected unless the page opts out. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/browser/`.

use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// A desktop Chrome's user agent: headless Chromium's own says `HeadlessChrome`, which Tally
/// rightly counts as a bot.
const DESKTOP_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";

/// One browser session on its own chromedriver.
pub struct Browser {
    _driver: ChildGuard,
    http: reqwest::Client,
    session: String,
}

/// Where chromedriver and Chromium are, or `None` (and the test is skipped) when this machine
/// has no browser and the run does not require one.
fn browser_paths() -> Option<(String, String)> {
    let found = (
        std::env::var("TALLY_TEST_CHROMEDRIVER").ok(),
        std::env::var("TALLY_TEST_CHROMIUM").ok(),
    );
    match found {
        (Some(d), Some(c)) if !d.is_empty() && !c.is_empty() => Some((d, c)),
        _ if std::env::var("TALLY_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("TALLY_TEST_CHROMEDRIVER and TALLY_TEST_CHROMIUM must be set (services.sh)")
        }
        _ => {
            eprintln!("skipped: no Chromium (set TALLY_TEST_CHROMEDRIVER and TALLY_TEST_CHROMIUM)");
            None
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with `prefs` (Chrome preferences).
    pub async fn start(prefs: Value) -> Option<Browser> {
        let (driver, chromium) = browser_paths()?;
        let port = free_port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let guard = ChildGuard(child);
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-agent={DESKTOP_UA}")],
                "prefs": prefs,
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_string();
        Some(Browser {
            _driver: guard,
            http,
            session: format!("{base}/session/{id}"),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `condition` (a JS expression) is true in the page.
    pub async fn wait_for(&self, condition: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.run(&format!("return !!({condition});")).await != json!(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never true: {condition}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The WebDriver id of the element `css` finds.
    async fn element(&self, css: &str) -> String {
        let e = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        e[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {e}"))
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The text of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let script = format!(
            "return Array.from(document.querySelectorAll({})).map(e => e.textContent.trim());",
            json!(css)
        );
        self.run(&script)
            .await
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport as `$CARGO_TARGET_TMPDIR/browser/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("png");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Browser {
    /// Ends the browser session (Chromium exits); chromedriver is killed with the guard.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `quit`: Chromium must not outlive it.
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-P", &self._driver.0.id().to_string()])
            .status();
    }
}

/// A tiny site on its own origin: every path answers `page(path)`.
async fn serve_site(page: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    let page = std::sync::Arc::new(page);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let page = page.clone();
        async move { axum::response::Html(page(uri.path())) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn shop_page(tally: &str, site: &str, extra: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Shop</title>
<script defer src="{tally}/s.js" data-website-id="{site}"{extra}></script></head>
<body><h1>The shop</h1><p><a id="out" href="https://partner.example/deal">Our partner</a></p>
</body></html>"#
    )
}

/// `(value, pageviews, events)` rows of a metrics breakdown.
async fn breakdown(c: &Client, site: &str, kind: &str) -> Vec<(String, i64)> {
    let (s, b) = c
        .get(&format!("/api/websites/{site}/metrics?type={kind}"))
        .await;
    assert_eq!(s, 200, "{b}");
    let count = if kind == "event_name" {
        "pageviews"
    } else {
        "visitors"
    };
    let mut rows: Vec<(String, i64)> = b["data"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap_or("").to_string(),
                r[count].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Waits until the site's stats show `pageviews` page views, then until the pipeline is idle.
async fn wait_pageviews(c: &Client, site: &str, pageviews: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        c.wait_idle().await;
        let (_, b) = c.get(&format!("/api/websites/{site}/stats")).await;
        if b["data"]["pageviews"].as_i64() == Some(pageviews) {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {pageviews} page views: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_in_a_real_browser_counts_views_navigations_clicks_and_events() {
    let Some(browser) = Browser::start(json!({})).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let site = op.website("Shop", "UTC").await;
    let tally = op.base.clone();
    let page_site = site.clone();
    let shop = serve_site(move |_| shop_page(&tally, &page_site, "")).await;

    // A pause between steps: beacons are sent in order but travel on their own, and the
    // funnel below needs them stored in order.
    let pause = || tokio::time::sleep(Duration::from_millis(200));
    browser
        .goto(&format!("{shop}/?utm_source=newsletter"))
        .await;
    browser.wait_for("window.tally && window.sparklytics").await;
    pause().await;
    browser
        .run("history.pushState({}, '', '/pricing'); return 1;")
        .await;
    pause().await;
    // A hash change on the same page is not another view.
    browser
        .run("history.replaceState({}, '', '/pricing#faq'); return 1;")
        .await;
    browser
        .run("tally.track('signup', {plan: 'pro'}); return 1;")
        .await;
    pause().await;
    browser.screenshot("tracker-shop").await;
    browser.click("#out").await;

    let stats = wait_pageviews(&op, &site, 2).await;
    assert_eq!(stats["data"]["visitors"], 1, "{stats}");
    assert_eq!(stats["data"]["sessions"], 1, "{stats}");
    assert_eq!(
        breakdown(&op, &site, "page").await,
        vec![("/".to_string(), 1), ("/pricing".to_string(), 1)]
    );
    assert_eq!(
        breakdown(&op, &site, "event_name").await,
        vec![("link_click".to_string(), 1), ("signup".to_string(), 1)]
    );
    assert_eq!(
        breakdown(&op, &site, "utm_source").await,
        vec![("newsletter".to_string(), 1)]
    );
    // The internal navigation is not a referral; the browser is the one it said it was.
    assert_eq!(
        breakdown(&op, &site, "referrer").await,
        vec![("(direct)".to_string(), 1)]
    );
    assert_eq!(
        breakdown(&op, &site, "browser").await,
        vec![("Chrome".to_string(), 1)]
    );

    // The built-in dashboard shows exactly those numbers, after signing in with the form.
    let (s, _) = op
        .post(
            &format!("/api/websites/{site}/goals"),
            &json!({"name": "Signup", "goal_type": "event", "match_value": "signup"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = op
        .post(
            &format!("/api/websites/{site}/funnels"),
            &json!({"name": "Pricing", "steps": [
                {"step_type": "page_view", "match_value": "/"},
                {"step_type": "page_view", "match_value": "/pricing"},
                {"step_type": "event", "match_value": "signup"}]}),
        )
        .await;
    assert_eq!(s, 201);
    browser.goto(&format!("{}/?site={site}", op.base)).await;
    browser
        .wait_for("!document.getElementById('login').classList.contains('hidden')")
        .await;
    browser.type_into("#password", "correct horse").await;
    browser.click("#login-form button").await;
    browser
        .wait_for("document.getElementById('stat-pageviews').textContent === '2'")
        .await;
    browser
        .wait_for("document.querySelectorAll('#sessions-list tbody tr').length === 1")
        .await;
    browser
        .wait_for("document.querySelectorAll('.funnel-step').length === 3")
        .await;
    browser
        .wait_for("document.querySelector('#goals-list tbody tr td.n').textContent === '1'")
        .await;
    let card = |id: &'static str| {
        let b = &browser;
        async move { b.texts(&format!("#{id}")).await.concat() }
    };
    assert_eq!(card("stat-visitors").await, "1");
    assert_eq!(card("stat-sessions").await, "1");
    assert_eq!(card("stat-bounce").await, "0%");
    assert_eq!(card("prev-pageviews").await, "previous: 0");
    assert_eq!(
        browser.texts("#table-page tbody td").await,
        vec!["/", "1", "/pricing", "1"]
    );
    assert_eq!(
        browser.texts("#table-event_name tbody td").await,
        vec!["link_click", "1", "signup", "1"]
    );
    assert_eq!(
        browser.texts("#table-referrer tbody td").await,
        vec!["(direct)", "1"]
    );
    assert_eq!(
        browser.texts(".funnel-step td.n").await,
        vec!["1", "100%", "1", "100%", "1", "100%"]
    );
    assert_eq!(card("realtime-active").await, "1");
    browser.screenshot("dashboard").await;
    // Filters live in the URL: a shared link opens the same view.
    browser
        .goto(&format!("{}/?site={site}&filter_page=%2Fpricing", op.base))
        .await;
    browser
        .wait_for("document.getElementById('stat-pageviews').textContent === '1'")
        .await;
    assert_eq!(
        browser.texts("#filters span").await,
        vec!["page: /pricing ×"]
    );
    browser.screenshot("dashboard-filtered").await;
    browser.quit().await;
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_respects_do_not_track_unless_the_page_opts_out() {
    let Some(browser) = Browser::start(json!({"enable_do_not_track": true})).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, op) = start_app(test_settings(dir.path())).await;
    let site = op.website("Shop", "UTC").await;
    let tally = op.base.clone();
    let page_site = site.clone();
    let shop = serve_site(move |path| {
        let extra = if path == "/counted" {
            r#" data-respect-dnt="false""#
        } else {
            ""
        };
        shop_page(&tally, &page_site, extra)
    })
    .await;

    browser.goto(&format!("{shop}/private")).await;
    browser.wait_for("window.tally").await;
    assert_eq!(browser.run("return navigator.doNotTrack;").await, "1");
    browser.run("tally.track('private_event'); return 1;").await;
    browser.goto(&format!("{shop}/counted")).await;
    browser.wait_for("window.tally").await;

    wait_pageviews(&op, &site, 1).await;
    assert_eq!(
        breakdown(&op, &site, "page").await,
        vec![("/counted".to_string(), 1)]
    );
    assert!(breakdown(&op, &site, "event_name").await.is_empty());
    browser.quit().await;
    app.shutdown().await.expect("shutdown");
}
