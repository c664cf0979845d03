//! ferrum: an Electrum-protocol indexer server.
//!
//! The modules follow the pipeline, each depending only on those above it:
//!
//! ```text
//!  types coins config metrics jsonrpc      shared vocabulary and the live numbers
//!  node     daemon(s) --> prefetch --> block parser; transactions by txid
//!  store    the RocksDB index and the txid file (the only code that names RocksDB)
//!  index    what readers see: chain, mempool mirror and tip under one lock (Snapshot)
//!  sync     the writers: sync loop, block processor, mempool refresh
//!  electrum serving wallets: listeners, sessions, requests, subscriptions
//!  peers    peer discovery: other servers found, checked, listed, told about us
//!  admin    the operator's RPC
//!  app      wiring and shutdown
//! ```
//! docs/ARCHITECTURE.md draws it, with the lock order and where a new feature goes.

pub mod types;
pub mod coins;
pub mod config;
pub mod metrics;
pub mod jsonrpc;
pub mod node;
pub mod store;
pub mod index;
pub mod sync;
pub mod electrum;
pub mod peers;
pub mod admin;
pub mod app;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// "ferrum 0.1.0", as reported to clients and operators.
pub fn server_version() -> String {
    format!("ferrum {VERSION}")
}

/// Resolves once ferrum is shutting down (without holding the watch's borrow across awaits,
/// which would make the waiting task unsendable).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What a panic carried, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A finished task's result, or `None` after logging why there is none: a panic inside a
/// blocking task must not pass unnoticed.
pub fn join_logged<T>(joined: Result<T, tokio::task::JoinError>, what: &str) -> Option<T> {
    match joined {
        Ok(v) => Some(v),
        Err(e) => {
            let why = if e.is_panic() { panic_message(&e.into_panic()) } else { "cancelled".to_string() };
            tracing::error!("{what} failed: {why}; this is a bug in ferrum, please report it with this log");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_panic_in_a_blocking_task_is_caught_and_told() {
        let task = tokio::task::spawn_blocking(|| -> u32 { panic!("boom at height 7") });
        let joined = task.await;
        let message = match &joined {
            Err(e) if e.is_panic() => "a panic",
            _ => "no panic",
        };
        assert_eq!(message, "a panic");
        assert_eq!(super::join_logged(joined, "a test task"), None);
        let ok = tokio::task::spawn_blocking(|| 5u32).await;
        assert_eq!(super::join_logged(ok, "a test task"), Some(5));
        let p: Box<dyn std::any::Any + Send> = Box::new("boom at height 7");
        assert_eq!(super::panic_message(p.as_ref()), "boom at height 7");
    }
}
