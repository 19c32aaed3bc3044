//! Connectors to the sellers' own databases: the only crate that talks to them. It holds the
//! network guard every outbound connection passes, the credentials box, the read-only SQL
//! check and placeholder compiler, and the engine connectors: PostgreSQL, MySQL/MariaDB, ClickHouse, and SQLite and DuckDB
//! files.

pub mod clickhouse;
pub mod duckdb;
pub mod guard;
pub mod model;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod secrets;
pub mod sql;
pub mod sqlite;
pub mod table_query;

pub use guard::{GuardError, NetworkGuard};
pub use registry::{Connector, Driver, FileRoot, Registry, RegistryConfig};
pub use secrets::{SecretBox, SecretError};
