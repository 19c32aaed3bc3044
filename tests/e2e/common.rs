//! Shared helpers for the end-to-end tests and the load benchmark: a small GeoIP database
//! written here (so expected countries are known), starting Tally in-process or as the real
//! binary, and waiting until the pipeline has stored everything accepted.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Networks in the test GeoIP database: (network, country, region, city).
pub const GEO: &[(&str, &str, &str, &str)] = &[
    ("81.2.69.0/24", "GB", "England", "London"),
    ("85.214.0.0/16", "DE", "Berlin", "Berlin"),
    ("216.160.83.0/24", "US", "Washington", "Milton"),
    ("89.160.20.0/24", "SE", "Östergötland", "Linköping"),
    ("175.16.199.0/24", "CN", "Jilin", "Changchun"),
];

#[derive(serde::Serialize)]
struct Named {
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_code: Option<String>,
    names: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
struct CityRecord {
    country: Named,
    subdivisions: Vec<Named>,
    city: Named,
}

fn named(iso: Option<&str>, en: &str) -> Named {
    Named {
        iso_code: iso.map(str::to_string),
        names: [("en".to_string(), en.to_string())].into(),
    }
}

/// Writes the test GeoIP database (GeoIP2-City layout) into `dir`.
pub fn write_geo_db(dir: &Path) -> PathBuf {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    for (net, country, region, city) in GEO {
        let rec = CityRecord {
            country: named(Some(country), country),
            subdivisions: vec![named(None, region)],
            city: named(None, city),
        };
        let net: ipnet::IpNet = net.parse().expect("network");
        w.insert(net, &rec).expect("insert");
    }
    let path = dir.join("test-city.mmdb");
    std::fs::write(&path, w.to_bytes().expect("mmdb bytes")).expect("write mmdb");
    path
}

/// Settings for a test server in `dir`: loopback, no rate limit, loopback trusted as a proxy
/// (so tests choose client IPs with X-Forwarded-For), the test GeoIP database, and limits wide
/// enough for events on fixed past dates.
pub fn test_settings(dir: &Path) -> tally::Settings {
    let mut s = embedded_settings(dir);
    if let Some(d) = distributed(dir) {
        s.log_url = Some(d.log_url);
        s.analytics_url = Some(d.analytics_url);
        s.metadata_url = Some(d.metadata_url);
        s.namespace = d.namespace;
    }
    s
}

/// [`test_settings`] on the embedded backends, whatever `TALLY_E2E_BACKENDS` says.
pub fn embedded_settings(dir: &Path) -> tally::Settings {
    tally::Settings {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        collect_rate_limit: 0,
        auth_requests_per_hour: 1_000,
        market_requests_per_hour: 10_000,
        trusted_proxies: "127.0.0.1/32".into(),
        cors_origins: String::new(),
        geoip_path: Some(write_geo_db(dir)),
        retention_days: 36_500,
        max_event_age_hours: 24 * 36_500,
        partitions: 4,
        namespace: "tally".into(),
        duckdb_memory: "512MB".into(),
        log_url: None,
        analytics_url: None,
        metadata_url: None,
        kafka_message_timeout_ms: 5000,
        kafka_stall_window_secs: 30,
        kafka_fetch_wait_ms: 500,
        vendor_share: 0.85,
        clock_offset_ms: 0,
        credits_per_usd: 100,
        secret_key: None,
        source_allow_cidrs: String::new(),
        source_file_root: None,
        execution_timeout_ms: 10_000,
        source_pool_size: 16,
        outbox_lease_ms: 30_000,
        result_cache_secs: 60,
        webhook_retry_base_ms: 30_000,
        webhook_give_up_secs: 86_400,
    }
}

/// The real services the end-to-end tests use when `TALLY_E2E_BACKENDS=distributed`.
pub struct Distributed {
    pub log_url: String,
    pub analytics_url: String,
    pub metadata_url: String,
    /// Derived from the test's directory: one namespace per test, the same across restarts.
    pub namespace: String,
}

/// `None` on the embedded backends (the default). With `TALLY_E2E_BACKENDS=distributed`, the
/// Kafka, ClickHouse and Postgres that `deploy/local/services.sh` started; a missing one fails.
pub fn distributed(dir: &Path) -> Option<Distributed> {
    match std::env::var("TALLY_E2E_BACKENDS").as_deref() {
        Ok("distributed") => {}
        Ok("embedded") | Err(_) => return None,
        Ok(other) => panic!("TALLY_E2E_BACKENDS={other}: expected embedded or distributed"),
    }
    let need = |var: &str| {
        std::env::var(var).unwrap_or_else(|_| panic!("{var} must be set for distributed e2e tests"))
    };
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    Some(Distributed {
        log_url: format!("kafka://{}", need("TALLY_TEST_KAFKA")),
        analytics_url: need("TALLY_TEST_CLICKHOUSE"),
        metadata_url: need("TALLY_TEST_POSTGRES"),
        namespace: format!("e2e_{}_{:x}", std::process::id(), h.finish()),
    })
}

/// An HTTP client for one server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => r.header("x-api-key", k),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The same server with another key.
    pub fn with_key(&self, key: &str) -> Client {
        Client {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    /// Any method with an optional JSON body: (status, body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a tenant company (as the operator): (company id, its admin's client).
    pub async fn company(&self, handle: &str) -> (String, Client) {
        let (status, body) = self
            .post(
                "/companies",
                &json!({
                    "company_handle": handle,
                    "company_domain": format!("{handle}.example"),
                    "company_name": handle.to_uppercase(),
                    "admin": {"email_address": format!("admin@{handle}.example"), "password": "correct horse"},
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["company_id"]
            .as_str()
            .expect("company_id")
            .to_string();
        let key = body["data"]["api_key"].as_str().expect("api_key");
        (id, self.with_key(key))
    }

    /// Puts `company` on `plan` (as the operator).
    pub async fn subscribe(&self, company: &str, plan: &str) {
        let (s, b) = self
            .send(
                reqwest::Method::PUT,
                &format!("/companies/{company}/subscription"),
                Some(&json!({ "plan": plan })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Runs first-run setup and keeps the returned key.
    pub async fn setup(&mut self) {
        let (status, body) = self
            .post(
                "/api/auth/setup",
                &json!({"username": "admin", "password": "correct horse"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        self.key = Some(body["data"]["api_key"].as_str().expect("key").to_string());
    }

    /// Creates a website and returns its id.
    pub async fn website(&self, name: &str, timezone: &str) -> String {
        let (status, body) = self
            .post(
                "/api/websites",
                &json!({"name": name, "domain": "example.com", "timezone": timezone}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"]["id"].as_str().expect("id").to_string()
    }

    /// Waits until everything accepted so far is stored (the health backlog is zero).
    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/api/health").await;
            if status == 200 && body["backlog"]["enrich"] == 0 && body["backlog"]["analytics"] == 0
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pipeline did not drain: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Tally started in-process, with setup done: the app and an authenticated client.
pub async fn start_app(settings: tally::Settings) -> (tally::App, Client) {
    let app = tally::start(settings).await.expect("start");
    let mut c = Client::new(format!("http://{}", app.addr));
    c.setup().await;
    (app, c)
}

/// Tally started in-process on a data dir whose setup is done, with the operator's key.
pub async fn start_app_with_key(settings: tally::Settings, key: &str) -> (tally::App, Client) {
    let app = tally::start(settings).await.expect("start");
    let c = Client::new(format!("http://{}", app.addr)).with_key(key);
    (app, c)
}

/// The real binary in `dir` on a fresh port, up and set up, with one website:
/// (process, client, site, port).
pub async fn start_binary_with_site(dir: &Path) -> (ChildGuard, Client, String, u16) {
    let port = free_port();
    let child = spawn_binary(dir, port);
    let mut c = Client::new(format!("http://127.0.0.1:{port}"));
    wait_up(&c).await;
    c.setup().await;
    let site = c.website("Crash", "UTC").await;
    (child, c, site, port)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process that is killed when dropped, so a failing test never leaves it running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// SIGKILL, now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The credentials key every spawned test process uses.
pub const TEST_SECRET_KEY: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The real binary, started with `serve` in `dir` on `port`.
pub fn spawn_binary(dir: &Path, port: u16) -> ChildGuard {
    spawn_role(dir, &["serve"], port, &[])
}

/// The real binary running `args` (a role and its flags) in `dir`'s data dir on `port`, on the
/// test's backends, with `extra` environment variables.
pub fn spawn_role(dir: &Path, args: &[&str], port: u16, extra: &[(&str, String)]) -> ChildGuard {
    spawn_role_with_output(dir, args, port, extra, child_log(args, port), None)
}

/// [`spawn_role`] with everything the process prints (stdout and stderr) written to `out`.
pub fn spawn_role_to(
    dir: &Path,
    args: &[&str],
    port: u16,
    extra: &[(&str, String)],
    out: &Path,
) -> ChildGuard {
    let file = std::fs::File::create(out).expect("output file");
    let err = file.try_clone().expect("output file");
    spawn_role_with_output(dir, args, port, extra, file.into(), Some(err.into()))
}

fn spawn_role_with_output(
    dir: &Path,
    args: &[&str],
    port: u16,
    extra: &[(&str, String)],
    stdout: std::process::Stdio,
    stderr: Option<std::process::Stdio>,
) -> ChildGuard {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args)
        .env("TALLY_DATA_DIR", dir.join("data"))
        .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_COLLECT_RATE_LIMIT", "0")
        .env("TALLY_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("TALLY_LOG", "warn")
        // Every process of a split deployment shares one credentials key.
        .env("TALLY_SECRET_KEY", TEST_SECRET_KEY)
        .envs(backend_env(dir))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(stdout);
    if let Some(e) = stderr {
        cmd.stderr(e);
    }
    ChildGuard(cmd.spawn().expect("spawn tally"))
}

/// Every record value on `topics` (unqualified names) of the test's log, concatenated.
pub async fn log_bytes(settings: &tally::Settings, topics: &[&str]) -> Vec<u8> {
    let b = tally::Backends::open(settings).await.expect("backends");
    let mut out = Vec::new();
    for t in topics {
        let topic = settings.topic(t);
        let end: u64 = b
            .log
            .end_offsets(&topic)
            .await
            .expect("end offsets")
            .iter()
            .map(|p| p.next_offset)
            .sum();
        let group = format!("test-read-{:016x}", rand::random::<u64>());
        let mut c = b
            .log
            .sole_consumer(&group, std::slice::from_ref(&topic))
            .await
            .expect("consumer");
        let (mut seen, deadline) = (0u64, tokio::time::Instant::now() + Duration::from_secs(30));
        while seen < end && tokio::time::Instant::now() < deadline {
            for r in c
                .poll(1000, Duration::from_millis(300))
                .await
                .expect("poll")
            {
                seen += 1;
                out.extend_from_slice(&r.key);
                out.extend_from_slice(&r.value);
            }
        }
        assert_eq!(seen, end, "read all of {topic}");
    }
    b.close();
    out
}

/// Where a spawned binary's log goes: nowhere, or with `TALLY_TEST_LOG_DIR` set, a file per
/// process there (for debugging a failed run).
fn child_log(args: &[&str], port: u16) -> std::process::Stdio {
    let Ok(dir) = std::env::var("TALLY_TEST_LOG_DIR") else {
        return std::process::Stdio::null();
    };
    let name = format!("{}-{port}.log", args.first().copied().unwrap_or("tally"));
    match std::fs::File::create(Path::new(&dir).join(name)) {
        Ok(f) => f.into(),
        Err(_) => std::process::Stdio::null(),
    }
}

/// The backend variables for a spawned binary (none on the embedded backends).
pub fn backend_env(dir: &Path) -> Vec<(&'static str, String)> {
    match distributed(dir) {
        // Empty values mean "embedded", whatever the caller's environment says.
        None => vec![
            ("TALLY_LOG_URL", String::new()),
            ("TALLY_ANALYTICS_URL", String::new()),
            ("TALLY_METADATA_URL", String::new()),
        ],
        Some(d) => vec![
            ("TALLY_LOG_URL", d.log_url),
            ("TALLY_ANALYTICS_URL", d.analytics_url),
            ("TALLY_METADATA_URL", d.metadata_url),
            ("TALLY_NAMESPACE", d.namespace),
        ],
    }
}

/// Waits until a server answers its health check.
pub async fn wait_up(c: &Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = c.http.get(format!("{}/api/health", c.base)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {} did not come up", c.base);
}

/// Waits (up to 60 s) until `/api/health` shows the money path drained: nothing left in the
/// outbox, every usage record metered. What `tally reconcile` needs to compare the books.
pub async fn wait_drained(c: &Client) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, b) = c.get("/api/health").await;
        let backlog = &b["backlog"];
        if s == 200 && backlog["outbox"] == 0 && backlog["metering"] == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the money path did not drain: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
