//! Live numbers: one handle, made at start-up and given to every stage, that counts what the
//! pipeline does (blocks, flushes, reorgs, daemon failovers, requests, notifications, bytes,
//! sessions). The admin `getinfo` reads it; a Prometheus endpoint only has to export its
//! registry. Every update on a hot path is one relaxed atomic operation.

use std::sync::Mutex;
use std::time::Instant;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::{json, Value};

use crate::types::hex_rev;

/// A height and a block hash.
type TipMark = Option<(u32, [u8; 32])>;

#[derive(Default)]
struct Tips {
    /// The last flushed block: what queries see.
    indexed: TipMark,
    /// The daemon's best block when last asked.
    daemon: TipMark,
}

pub struct Metrics {
    registry: Registry,
    started: Instant,
    tips: Mutex<Tips>,
    /// Height of the last flushed block (-1: none).
    pub db_height: IntGauge,
    /// Height of the last block applied in memory, ahead of `db_height` during initial sync.
    pub sync_height: IntGauge,
    pub daemon_height: IntGauge,
    /// Transactions indexed (flushed).
    pub tx_count: IntGauge,
    pub blocks_applied: IntCounter,
    pub txs_applied: IntCounter,
    pub flushes: IntCounter,
    pub last_flush_ms: IntGauge,
    pub reorgs: IntCounter,
    /// Outputs spent by applied blocks, by where their script hash and value came from: the
    /// write cache, the mempool's own lookups, or the database.
    pub spends_from_cache: IntCounter,
    pub spends_from_mempool: IntCounter,
    pub spends_from_disk: IntCounter,
    pub daemon_failovers: IntCounter,
    pub mempool_txs: IntGauge,
    pub mempool_vsize: IntGauge,
    /// Open client connections (counted from accept, before any handshake).
    pub connections: IntGauge,
    /// Client sessions past their handshake.
    pub sessions: IntGauge,
    pub requests: IntCounter,
    /// Requests by method (label `method`, one of the protocol's method names).
    pub requests_by_method: IntCounterVec,
    pub request_errors: IntCounter,
    /// Transactions clients broadcast.
    pub txs_sent: IntCounter,
    pub notifications: IntCounter,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(format!("ferrum_{name}"), help)).expect("valid metric name");
            registry.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(format!("ferrum_{name}_total"), help)).expect("valid metric name");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let m = Metrics {
            started: Instant::now(),
            tips: Mutex::default(),
            db_height: gauge("db_height", "height of the last block flushed to the index"),
            sync_height: gauge("sync_height", "height of the last block applied"),
            daemon_height: gauge("daemon_height", "the daemon's best block height when last asked"),
            tx_count: gauge("tx_count", "transactions indexed"),
            blocks_applied: counter("blocks_applied", "blocks applied to the index"),
            txs_applied: counter("txs_applied", "transactions applied to the index"),
            flushes: counter("flushes", "flushes of the write cache"),
            last_flush_ms: gauge("last_flush_milliseconds", "duration of the last flush"),
            reorgs: counter("reorgs", "chain reorganisations unwound"),
            spends_from_cache: counter("spends_from_cache", "spent outputs found in the write cache"),
            spends_from_mempool: counter("spends_from_mempool", "spent outputs known from the mempool's lookups"),
            spends_from_disk: counter("spends_from_disk", "spent outputs looked up in the database"),
            daemon_failovers: counter("daemon_failovers", "switches to the next DAEMON_URL"),
            mempool_txs: gauge("mempool_txs", "transactions in the mempool mirror"),
            mempool_vsize: gauge("mempool_vsize", "virtual size of the mempool mirror"),
            connections: gauge("connections", "open client connections"),
            sessions: gauge("sessions", "client sessions"),
            requests: counter("requests", "client requests"),
            requests_by_method: {
                let opts = Opts::new("ferrum_requests_by_method_total", "client requests by method");
                let v = IntCounterVec::new(opts, &["method"]).expect("valid metric");
                registry.register(Box::new(v.clone())).expect("metric registered once");
                v
            },
            txs_sent: counter("txs_sent", "transactions broadcast for clients"),
            request_errors: counter("request_errors", "client requests answered with an error"),
            notifications: counter("notifications", "notifications sent to clients"),
            bytes_received: counter("bytes_received", "bytes received from clients"),
            bytes_sent: counter("bytes_sent", "bytes sent to clients"),
            registry,
        };
        m.db_height.set(-1);
        m.sync_height.set(-1);
        m.daemon_height.set(-1);
        m
    }

    /// Every metric, for an exporter.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn set_indexed(&self, height: u32, hash: [u8; 32], tx_count: u64) {
        self.tips.lock().expect("lock").indexed = Some((height, hash));
        self.db_height.set(height as i64);
        self.sync_height.set(self.sync_height.get().max(height as i64));
        self.tx_count.set(tx_count as i64);
    }

    /// After an unwind the applied height goes down too.
    pub fn set_unwound(&self, height: u32, hash: [u8; 32], tx_count: u64) {
        self.set_indexed(height, hash, tx_count);
        self.sync_height.set(height as i64);
    }

    pub fn set_daemon_tip(&self, height: u32, hash: [u8; 32]) {
        self.tips.lock().expect("lock").daemon = Some((height, hash));
        self.daemon_height.set(height as i64);
    }

    /// Whether the flushed tip is the daemon's best block as last seen.
    pub fn caught_up(&self) -> bool {
        let t = self.tips.lock().expect("lock");
        matches!((t.indexed, t.daemon), (Some((_, ours)), Some((_, theirs))) if ours == theirs)
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The index and sync part of the admin `getinfo` answer.
    pub fn sync_json(&self) -> Value {
        let t = self.tips.lock().expect("lock");
        let height = |g: &IntGauge| u32::try_from(g.get()).ok();
        json!({
            "db_height": t.indexed.map(|(h, _)| h),
            "db_tip": t.indexed.map(|(_, hash)| hex_rev(&hash)),
            "sync_height": height(&self.sync_height),
            "tx_count": self.tx_count.get(),
            "daemon_height": t.daemon.map(|(h, _)| h),
            "caught_up": matches!((t.indexed, t.daemon), (Some((_, a)), Some((_, b))) if a == b),
            "flushes": self.flushes.get(),
            "last_flush_ms": self.last_flush_ms.get(),
            "reorgs": self.reorgs.get(),
            "spends": {
                "from_cache": self.spends_from_cache.get(),
                "from_mempool": self.spends_from_mempool.get(),
                "from_disk": self.spends_from_disk.get(),
            },
            "uptime_secs": self.uptime_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_means_the_flushed_tip_is_the_daemons() {
        let m = Metrics::new();
        assert!(!m.caught_up());
        m.set_daemon_tip(5, [5; 32]);
        m.set_indexed(4, [4; 32], 10);
        assert!(!m.caught_up());
        m.set_indexed(5, [5; 32], 11);
        assert!(m.caught_up());
        let j = m.sync_json();
        assert_eq!(
            (j["db_height"].clone(), j["daemon_height"].clone(), j["caught_up"].clone()),
            (json!(5), json!(5), json!(true))
        );
        m.set_unwound(3, [3; 32], 8);
        assert_eq!(m.sync_height.get(), 3);
        m.requests_by_method.with_label_values(&["server.ping"]).inc();
        assert_eq!(m.registry().gather().len(), 24, "every metric is registered");
    }
}
