//! The marketplace's entity routes (Spartera-compatible paths at the server root): companies,
//! users, API keys and reference data. Each write validates, checks the caller's role and
//! company ([`web::Caller::require_in`]), appends one state-carrying event and waits until the
//! metadata projection has applied it; a rejection by the projection (a handle taken in the
//! meantime) becomes `409 conflict` naming the field.

pub mod alerts;
pub mod analyze;
pub mod asset_tools;
pub mod assets;
pub mod companies;
pub mod connections;
pub mod endpoints;
pub mod favorites;
pub mod keys;
pub mod limits;
pub mod money;
pub mod params;
pub mod plans;
pub mod reference;
pub mod seller;
pub mod statistics;
pub mod usage;
pub mod users;

use crate::commands::rfc3339;
use crate::IngestState;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use projections::{ApiKey, Company, UserState};
use rand::RngCore;
use schemas::EntityEvent;
use serde_json::{json, Value};
use web::roles::Role;
use web::{mask_key, ApiError, ApiResult};

impl IngestState {
    /// Appends `events`, waits for the projection, and turns a recorded rejection of any of
    /// them into `409 conflict`.
    pub(crate) async fn command_checked(&self, events: Vec<EntityEvent>) -> ApiResult<()> {
        let ids: Vec<String> = events
            .iter()
            .filter_map(|e| e.event_id().map(str::to_string))
            .collect();
        self.command(events).await?;
        // An entity changed: what executions looked up may be stale.
        self.resolved.clear();
        self.endpoints.clear();
        for id in ids {
            if let Some(r) = self.metadata.rejection(&id).await? {
                return Err(ApiError::conflict_on(&r.field, r.reason));
            }
        }
        Ok(())
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Trims `value` and checks its length in characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(v.to_string())
}

/// Like [`text`] for an optional field.
pub(crate) fn opt_text(field: &str, value: Option<&str>, max: usize) -> ApiResult<Option<String>> {
    value.map(|v| text(field, v, max)).transpose()
}

pub(crate) fn required<'a, T>(field: &str, value: &'a Option<T>) -> ApiResult<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| ApiError::bad_request(format!("{field} is required")))
}

/// A company handle: 2 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or
/// digit (it appears in `/analyze/{company_handle}/…` paths).
pub(crate) fn valid_handle(handle: &str) -> ApiResult<String> {
    let h = handle.trim().to_ascii_lowercase();
    let ok = (2..=63).contains(&h.len())
        && h.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && h.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(ApiError::bad_request(
            "company_handle must be 2 to 63 lowercase letters, digits, - or _",
        ));
    }
    Ok(h)
}

/// An e-mail address, lowercased (so uniqueness ignores case).
pub(crate) fn valid_email(email: &str) -> ApiResult<String> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(|c| c.is_whitespace() || c == ',')
                && !domain.contains('@')
        });
    if !ok {
        return Err(ApiError::bad_request(
            "email_address must be an e-mail address such as ana@example.com",
        ));
    }
    Ok(e)
}

/// An argon2 hash of a new password (8 to 256 characters).
pub(crate) fn password_hash(password: &str) -> ApiResult<String> {
    if password.chars().count() < 8 || password.len() > 256 {
        return Err(ApiError::bad_request(
            "password must be 8 to 256 characters",
        ));
    }
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(ApiError::internal)?
        .to_string())
}

/// A `role_id` the caller may grant in `company`: a known role, no higher than the caller's,
/// and the operator role only inside an operator company.
pub(crate) fn grantable_role(role_id: i64, granter: Role, company: &Company) -> ApiResult<Role> {
    let role = i32::try_from(role_id)
        .ok()
        .and_then(Role::from_id)
        .ok_or_else(|| ApiError::bad_request("role_id must be one of 1, 2, 3, 4, 5"))?;
    if !role.at_most(granter) {
        return Err(ApiError::forbidden(format!(
            "the {} role cannot grant the {} role",
            granter.name(),
            role.name()
        )));
    }
    if role == Role::Operator && !company.state.is_operator {
        return Err(ApiError::bad_request(
            "role_id 1 (operator) exists only in the operator's company",
        ));
    }
    Ok(role)
}

/// An optional reference-data id that must exist in `known`.
pub(crate) fn reference_id(
    field: &str,
    value: Option<i64>,
    known: impl Fn(i32) -> bool,
) -> ApiResult<Option<i32>> {
    match value {
        None => Ok(None),
        Some(v) => match i32::try_from(v) {
            Ok(id) if known(id) => Ok(Some(id)),
            _ => Err(ApiError::bad_request(format!("{field} {v} does not exist"))),
        },
    }
}

/// An RFC 3339 time in the future, as ms.
pub(crate) fn future_time(field: &str, value: &str) -> ApiResult<i64> {
    let t = DateTime::parse_from_rfc3339(value.trim())
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 time")))?
        .with_timezone(&Utc)
        .timestamp_millis();
    if t <= Utc::now().timestamp_millis() {
        return Err(ApiError::bad_request(format!(
            "{field} must be in the future"
        )));
    }
    Ok(t)
}

/// A path segment that must be an integer id (a bad one is `400`, as an unknown one is `404`).
pub(crate) fn int_id(field: &str, value: &str) -> ApiResult<i64> {
    value
        .parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("{field} must be an integer")))
}

pub(crate) fn company_json(c: &Company) -> Value {
    let s = &c.state;
    json!({
        "company_id": s.id,
        "company_handle": s.handle,
        "company_domain": s.domain,
        "company_name": s.name,
        "company_description": s.description,
        "industry_id": s.industry_id,
        "country_id": s.country_id,
        "credits_balance": c.credits_balance,
        "accepted_eula": s.accepted_eula,
        "vendor_share_percent": f64::from(s.vendor_share_bp) / 10_000.0,
        "partnership_type": s.partnership_type,
        "stripe_account_id": null,
        "stripe_account_status": null,
        "timezone": s.timezone,
        "is_operator": s.is_operator,
        "subscription": plans::subscription_json(c),
        "date_created": rfc3339(s.created_at_ms),
        "last_updated": rfc3339(s.updated_at_ms),
    })
}

/// A user as shown to clients: never the password hash.
pub(crate) fn user_json(u: &UserState) -> Value {
    json!({
        "user_id": u.id,
        "company_id": u.company_id,
        "role_id": u.role_id,
        "role": Role::from_id(u.role_id).map(Role::name),
        "function_id": u.function_id,
        "status": u.status,
        "email_address": u.email,
        "username": u.username,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "timezone": u.timezone,
        "marketing_opt_out": u.marketing_opt_out,
        "date_created": rfc3339(u.created_at_ms),
        "last_updated": rfc3339(u.updated_at_ms),
    })
}

/// A key as shown after creation: masked, never the secret or its hash.
pub(crate) fn key_json(k: &ApiKey) -> Value {
    let s = &k.state;
    json!({
        "api_key_id": k.api_key_id,
        "company_id": s.company_id,
        "user_id": s.user_id,
        "role_id": s.role_id,
        "key_type": s.key_type,
        "mode": s.mode,
        "is_system_generated": s.is_system_generated,
        "endpoint_id": s.endpoint_id,
        "mcp_deployment_id": null,
        "name": s.name,
        "key": mask_key(&s.key_last4),
        "expiration_date_utc": s.expires_at_ms.map(rfc3339),
        "active": s.active,
        "revoked_at": s.revoked_at_ms.map(rfc3339),
        "revoked_by": s.revoked_by,
        "revocation_reason": s.revocation_reason,
        "date_created": rfc3339(s.created_at_ms),
        "last_updated": rfc3339(s.updated_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_emails_are_normalized_and_checked() {
        assert_eq!(
            valid_handle(" Acme-Data ").ok().as_deref(),
            Some("acme-data")
        );
        for bad in ["a", "-acme", "acme data", "acme/x", &"x".repeat(64)] {
            assert!(valid_handle(bad).is_err(), "{bad}");
        }
        assert_eq!(
            valid_email("Ana@Example.COM").ok().as_deref(),
            Some("ana@example.com")
        );
        for bad in [
            "ana",
            "@example.com",
            "ana@example",
            "ana@.com",
            "a b@x.io",
            "a@b@c.io",
        ] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_granted_downwards_only_and_operator_stays_home() {
        let tenant = Company {
            state: schemas::testenv::company("c", "acme"),
            credits_balance: 0,
            subscription: None,
        };
        let mut home = tenant.clone();
        home.state.is_operator = true;
        assert_eq!(
            grantable_role(4, Role::CompanyAdmin, &tenant).ok(),
            Some(Role::Buyer)
        );
        assert!(grantable_role(2, Role::Seller, &tenant).is_err());
        assert!(grantable_role(1, Role::Operator, &tenant).is_err());
        assert_eq!(
            grantable_role(1, Role::Operator, &home).ok(),
            Some(Role::Operator)
        );
        assert!(grantable_role(0, Role::Operator, &home).is_err());
        assert!(grantable_role(i64::MAX, Role::Operator, &home).is_err());
    }

    #[test]
    fn ids_and_times_are_checked() {
        assert_eq!(int_id("api_key_id", "42").ok(), Some(42));
        assert!(int_id("api_key_id", "4x").is_err());
        assert!(future_time("t", "2000-01-01T00:00:00Z").is_err());
        assert!(future_time("t", "2999-01-01T00:00:00Z").is_ok());
        assert!(future_time("t", "tomorrow").is_err());
        assert!(reference_id("industry_id", Some(3), |i| i == 3).is_ok());
        assert!(reference_id("industry_id", Some(4), |i| i == 3).is_err());
    }
}
