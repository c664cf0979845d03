//! ferrum: an Electrum-protocol indexer server.
//!
//! The modules follow the pipeline: `daemon` → `prefetch` (+ `block` parsing) →
//! `block_processor` → `db` (`schema` layouts, `chain` in memory) → `query`; `controller` runs
//! the stages, `admin` serves operators, `config` and `coins` describe the setup.

pub mod admin;
pub mod block;
pub mod block_processor;
pub mod chain;
pub mod coins;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod db;
pub mod prefetch;
pub mod query;
pub mod schema;
pub mod status;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// "ferrum 0.1.0", as reported to clients and operators.
pub fn server_version() -> String {
    format!("ferrum {VERSION}")
}
