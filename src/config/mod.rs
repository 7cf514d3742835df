//! `config.toml`: what the agent reads at start. Every key is documented in README.md; a bad
//! file stops the agent with the file, the key and what was expected.
//!
//! - `file.rs`: `Config`, the whole file: read, parsed, checked; paths resolved.
//! - `sections.rs`: `[server]`, `[scripts]`, `[state]`, `[log]`, `[metrics]`, `[simulator]`.
//! - `tables.rs`: `[auth]` and `[[account]]`, which `Config` and the accounts both name.
//! - `accounts.rs`: the accounts the file describes (`AccountSpec`), `--shard`.
//! - `surroundings.rs`: what the file names outside itself (secrets, folders): one list of checks.
//! - `error.rs`: `ConfigError`.

mod accounts;
mod error;
mod file;
mod sections;
mod surroundings;
mod tables;

pub use accounts::{shard_of, AccountSpec, Shard};
pub use error::ConfigError;
pub use file::Config;
pub use sections::{admin_token, Discover, LogConfig, MetricsConfig, ScriptsConfig, ServerConfig, SimulatorConfig, StateConfig, ADMIN_TOKEN_MIN};
pub use surroundings::Missing;
pub use tables::{AccountConfig, AuthConfig, AuthKind};
