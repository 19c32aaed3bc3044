//! The metadata projection's contract: companies, users, API keys, websites and settings, with
//! a writer that applies entity events together with their offsets and a reader for the HTTP
//! side. Uniqueness (handles, domains, e-mails, user names) is decided by the writer in log
//! order: an event that would break it is not applied, and its rejection is recorded under the
//! event's id for the command to read back.

use crate::{StoreResult, StoredOffset};
use async_trait::async_trait;
use schemas::EntityEvent;
pub use schemas::{ApiKeyState, CompanyState, UserState};
use serde::Serialize;

/// A company as stored: its state plus the balance the money path keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    pub state: CompanyState,
    pub credits_balance: i64,
    /// Set by the operator; without one the company is on its default plan.
    pub subscription: Option<Subscription>,
}

/// A company's plan and the start of its first monthly period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub plan_id: String,
    pub period_start_ms: i64,
    /// The operator's allocation for this company instead of the plan's.
    pub monthly_requests: Option<i64>,
}

/// An API key as stored: its state plus the integer id the projection assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub api_key_id: i64,
    pub state: ApiKeyState,
}

/// One row of an asset's price history; `date_ended_ms` is `None` while it is in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub aph_id: String,
    pub asset_id: String,
    pub price_usd: f64,
    pub credits: i64,
    pub date_created_ms: i64,
    pub date_ended_ms: Option<i64>,
}

/// What an asset's text search scans: its name, description and tags (as stored, JSON),
/// lowercased and joined by U+001F, so a search term (which never holds that character) does
/// not match across two fields.
pub fn search_text(name: &str, description: Option<&str>, tags_json: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}",
        name.to_lowercase(),
        description.unwrap_or("").to_lowercase(),
        tags_json.to_lowercase()
    )
}

/// The order of an asset search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AssetSort {
    /// By name.
    #[default]
    Name,
    /// Last changed first.
    Recent,
    /// Most succeeded executions first.
    Popular,
    /// Most succeeded executions since `since_ms` first.
    Trending { since_ms: i64 },
}

/// An asset search: text in the name, description or tags; a category (asset type or tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetQuery {
    pub text: Option<String>,
    pub category: Option<String>,
    pub sort: AssetSort,
    pub limit: usize,
    pub offset: usize,
}

/// A favorite with the integer id the projection assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Favorite {
    pub favorite_id: i64,
    pub state: schemas::FavoriteState,
}

/// An alert rule with the integer id the projection assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub alert_id: i64,
    pub state: schemas::AlertState,
}

/// Which alerts [`MetadataReader::alerts_where`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertScope {
    /// Every live alert of a company (its users' rules).
    Company,
    /// Every live alert watching an asset (of any company).
    Asset,
}

/// Which endpoints [`MetadataReader::endpoints_where`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointScope {
    /// The live endpoint with this id (none or one).
    One,
    /// The live endpoints of a company, oldest first.
    Company,
}

/// Which website objects [`MetadataReader::site_objects_where`] reads (live ones only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteObjectScope {
    /// The object with this id (none or one).
    One,
    /// A website's objects of the kind, oldest first.
    Website,
    /// The object of the kind reached by this public key (none or one).
    PublicKey,
}

/// Why the projection did not apply an event: the field at fault (e.g. `company_handle`) and a
/// sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

/// Which unique value is already taken, if any.
pub type Conflict = Option<&'static str>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Website {
    pub id: String,
    /// The owning company (the operator's for websites made before companies existed).
    pub company_id: Option<String>,
    pub name: String,
    pub domain: String,
    pub timezone: String,
    pub created_at_ms: i64,
}

/// Who an active key belongs to: the key is active and unrevoked, its user `ACTIVE`. The caller
/// still checks the expiration against its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: String,
    pub api_key_id: i64,
    pub user_id: String,
    pub company_id: String,
    /// The key's role (never above its user's).
    pub role_id: i32,
    pub expires_at_ms: Option<i64>,
    /// A `test` key (its executions are never charged).
    pub test_mode: bool,
    /// The endpoint an `endpoint` key is scoped to (it opens nothing else).
    pub endpoint_id: Option<String>,
}

/// Applies entity events. Idempotent: re-applying an event changes nothing.
#[async_trait]
pub trait MetadataWriter: Send + Sync {
    /// Applies `events` and stores `offsets` in one transaction.
    async fn apply(
        &self,
        consumer: &str,
        events: &[EntityEvent],
        offsets: &[StoredOffset],
    ) -> StoreResult<()>;
    async fn offsets(&self, consumer: &str) -> StoreResult<Vec<StoredOffset>>;
}

/// Reads for the HTTP side.
#[async_trait]
pub trait MetadataReader: Send + Sync {
    /// A live (not deleted) website.
    async fn website(&self, id: &str) -> StoreResult<Option<Website>>;
    async fn websites(&self) -> StoreResult<Vec<Website>>;
    async fn user_count(&self) -> StoreResult<u64>;
    /// The owner of an active (not revoked) key, by the key's SHA-256 hex.
    async fn key_by_hash(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>>;
    /// The integer id of any key (active, expired, deactivated or revoked) by its hash: who a
    /// refused presentation counts against.
    async fn api_key_id_by_hash(&self, key_hash: &str) -> StoreResult<Option<i64>>;
    /// Every key of `company_id`, active or not, in creation order.
    async fn api_keys(&self, company_id: &str) -> StoreResult<Vec<ApiKey>>;
    /// A key by its aggregate id.
    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// A key of `company_id` by its integer id.
    async fn api_key_by_number(
        &self,
        company_id: &str,
        api_key_id: i64,
    ) -> StoreResult<Option<ApiKey>>;
    async fn company(&self, id: &str) -> StoreResult<Option<Company>>;
    /// Every company, oldest first.
    async fn companies(&self) -> StoreResult<Vec<Company>>;
    /// `company_handle` or `company_domain` if another company (not `except_id`) holds it.
    async fn company_conflict(
        &self,
        handle: &str,
        domain: &str,
        except_id: Option<&str>,
    ) -> StoreResult<Conflict>;
    /// `email_address` or `username` if another user (not `except_id`) holds it.
    async fn login_conflict(
        &self,
        email: Option<&str>,
        username: Option<&str>,
        except_id: Option<&str>,
    ) -> StoreResult<Conflict>;
    async fn user(&self, id: &str) -> StoreResult<Option<UserState>>;
    /// The user whose e-mail (compared lowercased) or user name is `login`.
    async fn user_by_login(&self, login: &str) -> StoreResult<Option<UserState>>;
    /// The users of `company_id`, oldest first.
    async fn users(&self, company_id: &str) -> StoreResult<Vec<UserState>>;
    /// A live (not deleted) connection.
    async fn connection(&self, id: &str) -> StoreResult<Option<schemas::ConnectionState>>;
    /// The live connections of `company_id`, oldest first.
    async fn connections(&self, company_id: &str) -> StoreResult<Vec<schemas::ConnectionState>>;
    /// A live asset.
    async fn asset(&self, id: &str) -> StoreResult<Option<schemas::AssetState>>;
    /// A live asset of `company_id` by slug.
    async fn asset_by_slug(
        &self,
        company_id: &str,
        slug: &str,
    ) -> StoreResult<Option<schemas::AssetState>>;
    /// Live assets `company_id` may see: its own, and every shared asset sold in the
    /// marketplace; oldest first.
    async fn visible_assets(&self, company_id: &str) -> StoreResult<Vec<schemas::AssetState>>;
    /// One page of the assets `company_id` may see that match `q`, and how many match.
    async fn search_assets(
        &self,
        company_id: &str,
        q: &AssetQuery,
    ) -> StoreResult<(Vec<schemas::AssetState>, u64)>;
    async fn company_by_handle(&self, handle: &str) -> StoreResult<Option<Company>>;
    /// A user's live favorites, highest priority first.
    async fn favorites(&self, user_id: &str) -> StoreResult<Vec<Favorite>>;
    /// Live alert rules of a company or on an asset, by `alert_id`.
    async fn alerts_where(&self, scope: AlertScope, id: &str) -> StoreResult<Vec<Alert>>;
    /// Live data endpoints: one by id, or a company's.
    async fn endpoints_where(
        &self,
        scope: EndpointScope,
        id: &str,
    ) -> StoreResult<Vec<schemas::EndpointState>>;
    /// Live website objects (goals, funnels, links, …) of `kind`: see [`SiteObjectScope`].
    async fn site_objects_where(
        &self,
        scope: SiteObjectScope,
        kind: &str,
        id: &str,
    ) -> StoreResult<Vec<schemas::SiteObjectState>>;
    /// An asset's price history, newest first.
    async fn prices(&self, asset_id: &str) -> StoreResult<Vec<Price>>;
    /// An asset's discounts, newest first.
    async fn discounts(&self, asset_id: &str) -> StoreResult<Vec<crate::money::Discount>>;
    /// Why the event with `event_id` was not applied, if it was rejected.
    async fn rejection(&self, event_id: &str) -> StoreResult<Option<Rejection>>;
    /// Next offset `consumer` has applied for `topic`/`partition` (0 if none).
    async fn applied_offset(&self, consumer: &str, topic: &str, partition: u32)
        -> StoreResult<u64>;
    /// Returns the stored value of setting `name`, storing `candidate` first if it had none
    /// (so every process of a deployment agrees on, e.g., the visitor-id secret).
    async fn setting_or_init(&self, name: &str, candidate: &str) -> StoreResult<String>;
}
