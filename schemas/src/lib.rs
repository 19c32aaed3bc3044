//! Tally's event contract: Avro schemas, the Rust types they map to, topic names and the
//! Confluent-wire-format codec. No I/O lives here.

mod codec;
mod events;
mod fast;
mod registry;
pub mod testenv;
pub mod topics;

pub use codec::{
    decode, decode_entity, encode, encode_entity, encode_with, CodecError, WireRecord,
};
pub use events::{
    AlertState, AlertTriggered, AlertUpserted, ApiKeyCreated, ApiKeyRevoked, ApiKeyState,
    ApiKeyUpserted, AssetState, AssetUpserted, CollectedEvent, CompanyCreated, CompanyState,
    CompanyUpdated, ConnectionState, ConnectionUpserted, DeadLetter, DiscountSet, EndpointState,
    EndpointUpserted, EnrichedEvent, EntityEvent, FavoriteState, FavoriteUpserted,
    LedgerEntryPosted, PriceEnded, PriceSet, SiteObjectState, SiteObjectUpserted, SubscriptionSet,
    UsageRecorded, UserCreated, UserState, UserUpserted, WebsiteCreated, WebsiteDeleted,
    WebsiteUpdated,
};
pub use registry::{schema_by_id, SchemaEntry, REGISTRY};
