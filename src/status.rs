//! Live state shared by the pipeline stages and read by the admin RPC (and later metrics).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::schema::hex_rev;

#[derive(Default, Clone)]
struct Inner {
    /// Flushed, so visible to queries.
    indexed: Option<(u32, [u8; 32])>,
    /// Applied in memory (ahead of `indexed` during initial sync).
    processed: Option<u32>,
    tx_count: u64,
    /// The daemon's best block when last asked; "caught up" is our flushed tip being it.
    daemon_tip: Option<(u32, [u8; 32])>,
    flushes: u64,
    last_flush: Duration,
    reorgs: u64,
}

pub struct Status {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Default for Status {
    fn default() -> Self {
        Status { inner: Mutex::new(Inner::default()), started: Instant::now() }
    }
}

impl Status {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("status lock"))
    }

    pub fn set_indexed(&self, height: u32, hash: [u8; 32], tx_count: u64) {
        self.with(|s| {
            s.indexed = Some((height, hash));
            s.processed = Some(height);
            s.tx_count = tx_count;
        })
    }

    pub fn set_processed(&self, height: u32) {
        self.with(|s| s.processed = Some(height))
    }

    pub fn record_flush(&self, took: Duration) {
        self.with(|s| {
            s.flushes += 1;
            s.last_flush = took;
        })
    }

    pub fn set_daemon_tip(&self, height: u32, hash: [u8; 32]) {
        self.with(|s| s.daemon_tip = Some((height, hash)))
    }

    pub fn count_reorg(&self) {
        self.with(|s| s.reorgs += 1)
    }

    /// Whether the flushed tip is the daemon's best block as last seen.
    pub fn caught_up(&self) -> bool {
        self.with(|s| s.indexed.is_some_and(|(_, ours)| s.daemon_tip.is_some_and(|(_, theirs)| ours == theirs)))
    }

    /// The index part of the admin `getinfo` answer.
    pub fn to_json(&self) -> Value {
        let s = self.with(|s| s.clone());
        json!({
            "db_height": s.indexed.map(|(h, _)| h),
            "db_tip": s.indexed.map(|(_, hash)| hex_rev(&hash)),
            "sync_height": s.processed,
            "tx_count": s.tx_count,
            "daemon_height": s.daemon_tip.map(|(h, _)| h),
            "caught_up": s.indexed.is_some_and(|(_, ours)| s.daemon_tip.is_some_and(|(_, theirs)| ours == theirs)),
            "flushes": s.flushes,
            "last_flush_ms": s.last_flush.as_millis() as u64,
            "reorgs": s.reorgs,
            "uptime": self.started.elapsed().as_secs(),
        })
    }
}
