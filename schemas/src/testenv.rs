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

/// A company state for tests (and conformance suites): `handle` also names the domain.
pub fn company(id: &str, handle: &str) -> crate::CompanyState {
    crate::CompanyState {
        id: id.into(),
        handle: handle.into(),
        domain: format!("{handle}.example"),
        name: handle.to_uppercase(),
        description: None,
        industry_id: None,
        country_id: None,
        vendor_share_bp: 8_500,
        partnership_type: None,
        accepted_eula: true,
        is_operator: false,
        timezone: "UTC".into(),
        created_at_ms: 1,
        updated_at_ms: 1,
    }
}

/// An active company admin for tests.
pub fn user(id: &str, company_id: &str, email: &str) -> crate::UserState {
    crate::UserState {
        id: id.into(),
        company_id: company_id.into(),
        username: None,
        email: Some(email.into()),
        password_hash: None,
        role_id: 2,
        function_id: None,
        status: "ACTIVE".into(),
        timezone: "UTC".into(),
        marketing_opt_out: false,
        first_name: None,
        last_name: None,
        created_at_ms: 1,
        updated_at_ms: 1,
    }
}

/// An active analytics key for tests; its hash is derived from its id.
pub fn api_key(id: &str, user_id: &str, company_id: &str) -> crate::ApiKeyState {
    crate::ApiKeyState {
        id: id.into(),
        user_id: user_id.into(),
        company_id: company_id.into(),
        name: "key".into(),
        key_hash: format!("hash-{id}"),
        key_last4: "1234".into(),
        key_type: "analytics".into(),
        role_id: 2,
        is_system_generated: false,
        endpoint_id: None,
        expires_at_ms: None,
        active: true,
        revoked_at_ms: None,
        revoked_by: None,
        revocation_reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        mode: "live".into(),
    }
}

/// A Postgres connection (engine 1) for tests, with an opaque sealed credential.
pub fn connection(id: &str, company_id: &str, user_id: &str) -> crate::ConnectionState {
    crate::ConnectionState {
        id: id.into(),
        company_id: company_id.into(),
        user_id: user_id.into(),
        engine_id: 1,
        name: "warehouse".into(),
        description: None,
        credential_type: "USERNAME_PASSWORD".into(),
        provider_domain: None,
        credentials_sealed: "v1:00".into(),
        verified_usage_ability: false,
        deleted: false,
        created_at_ms: 1,
        updated_at_ms: 1,
    }
}

/// A shared, sold DATA asset for tests.
pub fn asset(id: &str, company_id: &str, connection_id: &str, slug: &str) -> crate::AssetState {
    crate::AssetState {
        id: id.into(),
        company_id: company_id.into(),
        user_id: "u".into(),
        connection_id: connection_id.into(),
        name: slug.replace('-', " "),
        slug: slug.into(),
        description: None,
        asset_type: "DATA".into(),
        visibility: "SHARED".into(),
        sell_in_marketplace: true,
        allow_params: false,
        source: "MANUAL".into(),
        require_customization: false,
        accept_terms: true,
        industry_id: Some(7),
        auc_id: None,
        tags: vec![],
        sql_logic: "SELECT 1".into(),
        params_json: "[]".into(),
        extra_json: "{}".into(),
        cached: false,
        timeout_ms: None,
        version: 1,
        deleted: false,
        created_at_ms: 1,
        updated_at_ms: 1,
    }
}
