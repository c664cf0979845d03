//! ferrum: an Electrum-protocol indexer server.
//!
//! The modules follow the pipeline: `daemon` → `prefetch` (+ `block` parsing) →
//! `block_processor` → `db` (`schema` layouts, `txid_file`, `chain` in memory); `mempool` mirrors the
//! daemon's mempool; `index` is what readers see (tip and mempool under one lock); `session`
//! serves Electrum clients with `protocol` (and `merkle` proofs); `controller` runs the stages,
//! `admin` serves operators (`query` for its lookups), `config` and `coins` describe the setup.

pub mod admin;
pub mod block;
pub mod block_processor;
pub mod chain;
pub mod coins;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod db;
pub mod index;
pub mod mempool;
pub mod merkle;
pub mod prefetch;
pub mod protocol;
pub mod query;
pub mod schema;
pub mod session;
pub mod status;
pub mod transactions;
pub mod txid_file;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// "ferrum 0.1.0", as reported to clients and operators.
pub fn server_version() -> String {
    format!("ferrum {VERSION}")
}
