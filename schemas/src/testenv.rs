//! Helpers for tests that run against real services (Kafka, ClickHouse, Postgres): where to
//! find them, and names that keep concurrent runs apart.

/// The URL of a real service for an integration test, from `var`. `None` (skip) only when the
/// variable is unset and `TALLY_TEST_REQUIRE_SERVICES` is not set; the test script sets it, so
/// there a missing service fails the run loudly.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("TALLY_TEST_REQUIRE_SERVICES").is_some() => {
            panic!("{var} is not set but TALLY_TEST_REQUIRE_SERVICES is: start deploy/local/services.sh")
        }
        _ => {
            eprintln!("skipped: {var} is not set (run scripts/test.sh for the real services)");
            None
        }
    }
}

/// A prefix unique to this test process, so runs sharing one set of servers never meet.
pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{}x{nanos}", std::process::id())
}
