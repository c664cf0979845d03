//! Live numbers: one handle, made at start-up and given to every stage, that counts what the
//! pipeline does (blocks, flushes, reorgs, the daemon's latency and failures, requests and their
//! latency, sessions, notifications and their delay, bytes). The admin `getinfo` reads it and
//! METRICS_ADDR exports its registry in Prometheus's format (`admin::exporter`).
//!
//! Every label value comes from a closed set (methods, codes, transports, reasons), and labelled
//! children are resolved once, so an update on a hot path is one relaxed atomic operation (a
//! histogram observation, a few). Gauges that mirror state (database size, groups, throttled
//! sessions) are sampled when scraped, not maintained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
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

/// Client transports, as labels.
pub const TRANSPORTS: [&str; 4] = ["tcp", "ssl", "ws", "wss"];

/// Why sessions end, as labels.
pub const CLOSE_REASONS: [&str; 8] =
    ["client", "idle", "send_timeout", "excessive_cost", "operator", "error", "max_recv", "shutdown"];

/// The daemon calls ferrum makes, as labels; anything else is "other".
pub const DAEMON_METHODS: [&str; 20] = [
    "getblockchaininfo",
    "getnetworkinfo",
    "getblockhash",
    "getblockheader",
    "getblock",
    "rest_block",
    "rest_spenttxouts",
    "rest_chaininfo",
    "getrawtransaction",
    "decoderawtransaction",
    "getrawmempool",
    "getmempoolentry",
    "getmempoolinfo",
    "sendrawtransaction",
    "submitpackage",
    "estimatesmartfee",
    "estimatefee",
    "waitforblockheight",
    "uptime",
    "other",
];

/// How a daemon call failed, as labels.
pub const DAEMON_ERRORS: [&str; 6] = ["connect", "timeout", "auth", "http", "warmup", "rpc"];

/// JSON-RPC error codes answered to clients, as labels; anything else is "other".
const ERROR_CODES: [(i64, &str); 11] = [
    (1, "1"),
    (2, "2"),
    (10001, "10001"),
    (-32700, "-32700"),
    (-32600, "-32600"),
    (-32601, "-32601"),
    (-32602, "-32602"),
    (-32603, "-32603"),
    (-101, "-101"),
    (-102, "-102"),
    (0, "other"),
];

/// Latency buckets (seconds) for requests, notifications and daemon calls: 0.1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets (seconds) for applying a block and flushing: 1 ms to 5 min.
const WORK_BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0];

/// One client method's counters, resolved once.
#[derive(Clone)]
pub struct MethodMetrics {
    pub requests: IntCounter,
    pub seconds: Histogram,
    pub cost: Counter,
}

/// One daemon call's, resolved once.
#[derive(Clone)]
pub struct DaemonCallMetrics {
    pub seconds: Histogram,
    errors: Vec<IntCounter>,
}

impl DaemonCallMetrics {
    pub fn error(&self, kind: &str) {
        let i = DAEMON_ERRORS.iter().position(|k| *k == kind).unwrap_or(DAEMON_ERRORS.len() - 1);
        self.errors[i].inc();
    }
}

pub struct Metrics {
    registry: Registry,
    started: Instant,
    tips: Mutex<Tips>,
    /// Whether latencies are timed: only while METRICS_ADDR exports them (getinfo needs none).
    timed: AtomicBool,
    pub build_info: IntGaugeVec,
    /// Height of the last flushed block (-1: none).
    pub db_height: IntGauge,
    /// Height of the last block applied in memory, ahead of `db_height` during initial sync.
    pub sync_height: IntGauge,
    pub daemon_height: IntGauge,
    /// Transactions indexed (flushed).
    pub tx_count: IntGauge,
    pub blocks_applied: IntCounter,
    pub txs_applied: IntCounter,
    pub block_apply_seconds: Histogram,
    pub flushes: IntCounter,
    pub flush_seconds: Histogram,
    pub last_flush_ms: IntGauge,
    pub write_cache_bytes: IntGauge,
    pub write_cache_limit_bytes: IntGauge,
    /// 1 while the writer waits for space on DB_DIRECTORY.
    pub disk_waiting: IntGauge,
    pub db_size_bytes: IntGaugeVec,
    pub reorgs: IntCounter,
    /// Outputs spent by applied blocks, by where their script hash and value came from: the
    /// write cache, the mempool's own lookups, or the database.
    pub spends_from_cache: IntCounter,
    pub spends_from_mempool: IntCounter,
    pub spends_from_disk: IntCounter,
    pub daemon_failovers: IntCounter,
    pub daemon_url_index: IntGauge,
    daemon_seconds: HistogramVec,
    daemon_errors: IntCounterVec,
    pub mempool_txs: IntGauge,
    pub mempool_vsize: IntGauge,
    /// Open client connections (counted from accept, before any handshake).
    pub connections: IntGauge,
    /// Client sessions past their handshake, by transport.
    sessions: Vec<IntGauge>,
    sessions_opened: Vec<IntCounter>,
    sessions_closed: Vec<IntCounter>,
    /// Sampled when scraped.
    pub session_groups: IntGauge,
    /// Known peer servers by discovery's status (good, stale, never, bad).
    pub peers: IntGaugeVec,
    pub sessions_throttled: IntGauge,
    pub requests_pending: IntGauge,
    pub subscriptions: IntGaugeVec,
    pub listeners_closed: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    request_cost: prometheus::CounterVec,
    request_errors_by: IntCounterVec,
    /// Client requests answered with an error (all methods and codes).
    pub request_errors: IntCounter,
    pub throttle_sleep_seconds: Counter,
    /// Transactions clients broadcast, accepted and rejected by the daemon.
    pub txs_sent: IntCounter,
    pub txs_rejected: IntCounter,
    pub notifications_headers: IntCounter,
    pub notifications_scripthash: IntCounter,
    notification_delay_headers: Histogram,
    notification_delay_scripthash: Histogram,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(format!("ferrum_{name}"), help).buckets(buckets.to_vec())
}

/// Makes metrics named `ferrum_…` and registers each once; latency histograms use
/// `LATENCY_BUCKETS`, durations of work `WORK_BUCKETS`.
struct Reg(Registry);

impl Reg {
    fn new() -> Reg {
        let reg = Reg(Registry::new());
        #[cfg(target_os = "linux")]
        reg.0.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registered once");
        reg
    }
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0.register(Box::new(c.clone())).expect("metric registered once");
        c
    }
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::with_opts(Opts::new(format!("ferrum_{name}"), help)).expect("valid metric name"))
    }
    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(format!("ferrum_{name}"), help), labels).expect("valid metric"))
    }
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::with_opts(Opts::new(format!("ferrum_{name}_total"), help)).expect("valid metric name"))
    }
    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(format!("ferrum_{name}_total"), help), labels).expect("valid metric"))
    }
    /// A counter of fractions (seconds, cost).
    fn seconds(&self, name: &str, help: &str) -> Counter {
        self.add(Counter::with_opts(Opts::new(format!("ferrum_{name}_total"), help)).expect("valid metric"))
    }
    fn fractions(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::CounterVec {
        self.add(prometheus::CounterVec::new(Opts::new(format!("ferrum_{name}_total"), help), labels).expect("valid"))
    }
    fn work(&self, name: &str, help: &str) -> Histogram {
        self.add(Histogram::with_opts(histogram_opts(name, help, &WORK_BUCKETS)).expect("valid metric"))
    }
    fn latencies(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(histogram_opts(name, help, &LATENCY_BUCKETS), labels).expect("valid metric"))
    }
}

/// One series per label value, resolved now so no update looks a label up.
fn each<T>(values: &[&str], resolve: impl Fn(&[&str]) -> T) -> Vec<T> {
    values.iter().map(|v| resolve(&[v])).collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Reg::new();
        let spends = r.counters("spends", "outputs spent by applied blocks, by where they were found", &["source"]);
        let sessions = r.gauges("sessions", "client sessions past their handshake", &["transport"]);
        let opened = r.counters("sessions_opened", "client sessions opened", &["transport"]);
        let closed = r.counters("sessions_closed", "client sessions closed, by why", &["reason"]);
        let notes = r.counters("notifications_sent", "notifications sent to clients", &["kind"]);
        let delay = r.latencies("notification_delay_seconds", "index change to notification written", &["kind"]);
        let broadcasts = r.counters("txs_broadcast", "client broadcasts, by the daemon's verdict", &["result"]);
        let build = ["version", "coin", "network", "protocol_min", "protocol_max"];
        let m = Metrics {
            started: Instant::now(),
            tips: Mutex::default(),
            timed: AtomicBool::new(false),
            build_info: r.gauges("build_info", "the running ferrum: version, coin, network, protocols", &build),
            db_height: r.gauge("db_height", "height of the last block flushed to the index"),
            sync_height: r.gauge("sync_height", "height of the last block applied"),
            daemon_height: r.gauge("daemon_height", "the daemon's best block height when last asked"),
            tx_count: r.gauge("db_transactions", "transactions indexed"),
            blocks_applied: r.counter("blocks_processed", "blocks applied to the index"),
            txs_applied: r.counter("transactions_processed", "transactions applied to the index"),
            block_apply_seconds: r.work("block_apply_duration_seconds", "applying one block to the write cache"),
            flushes: r.counter("db_flushes", "flushes of the write cache"),
            flush_seconds: r.work("db_flush_duration_seconds", "one flush, batch built and written"),
            // For getinfo only: the flush histogram exports flush times in seconds.
            last_flush_ms: IntGauge::new("ferrum_db_last_flush_milliseconds", "unregistered").expect("valid metric"),
            write_cache_bytes: r.gauge("write_cache_bytes", "memory held by the write cache (flushed at CACHE_MB)"),
            write_cache_limit_bytes: r.gauge("write_cache_limit_bytes", "CACHE_MB in bytes"),
            disk_waiting: r.gauge("disk_full", "1 while the index writer waits for free space on DB_DIRECTORY"),
            db_size_bytes: r.gauges("db_size_bytes", "on-disk size, by column family and the txid file", &["table"]),
            reorgs: r.counter("reorgs", "chain reorganisations unwound"),
            spends_from_cache: spends.with_label_values(&["cache"]),
            spends_from_mempool: spends.with_label_values(&["mempool"]),
            spends_from_disk: spends.with_label_values(&["disk"]),
            daemon_failovers: r.counter("daemon_failovers", "switches to the next DAEMON_URL"),
            daemon_url_index: r.gauge("daemon_url_index", "which DAEMON_URL entry is in use (from 0)"),
            daemon_seconds: r.latencies("daemon_rpc_duration_seconds", "daemon calls answered", &["method"]),
            daemon_errors: r.counters("daemon_rpc_errors", "daemon calls that failed, by how", &["method", "kind"]),
            mempool_txs: r.gauge("mempool_transactions", "transactions in the mempool mirror"),
            mempool_vsize: r.gauge("mempool_vsize_bytes", "virtual size of the mempool mirror"),
            connections: r.gauge("connections", "open client connections, handshakes included"),
            sessions: each(&TRANSPORTS, |l| sessions.with_label_values(l)),
            sessions_opened: each(&TRANSPORTS, |l| opened.with_label_values(l)),
            sessions_closed: each(&CLOSE_REASONS, |l| closed.with_label_values(l)),
            session_groups: r.gauge("session_groups", "subnet groups of sessions (with members or retained cost)"),
            peers: r.gauges("peers", "known peer servers, by status (good: checked in the last 3 h)", &["status"]),
            sessions_throttled: r.gauge("sessions_throttled", "sessions allowed fewer than INITIAL_CONCURRENT"),
            requests_pending: r.gauge("requests_pending", "requests being answered"),
            subscriptions: r.gauges("subscriptions", "live subscriptions", &["kind"]),
            listeners_closed: r.gauge("listeners_closed", "1 while MAX_SESSIONS keeps the client listeners closed"),
            requests: r.counters("requests", "client requests, by method", &["method"]),
            request_seconds: r.latencies(
                "request_duration_seconds",
                "dispatch (throttle included) to answer",
                &["method"],
            ),
            request_cost: r.fractions("request_cost", "cost charged for requests (before bandwidth)", &["method"]),
            request_errors_by: r.counters("request_errors", "requests answered with an error", &["method", "code"]),
            // For getinfo only: the labelled counter above exports errors.
            request_errors: IntCounter::new("ferrum_request_errors_all", "unregistered").expect("valid metric"),
            throttle_sleep_seconds: r.seconds("throttle_sleep_seconds", "time throttled requests waited"),
            txs_sent: broadcasts.with_label_values(&["accepted"]),
            txs_rejected: broadcasts.with_label_values(&["rejected"]),
            notifications_headers: notes.with_label_values(&["headers"]),
            notifications_scripthash: notes.with_label_values(&["scripthash"]),
            notification_delay_headers: delay.with_label_values(&["headers"]),
            notification_delay_scripthash: delay.with_label_values(&["scripthash"]),
            bytes_received: r.counter("network_received_bytes", "bytes received from clients"),
            bytes_sent: r.counter("network_sent_bytes", "bytes sent to clients"),
            registry: r.0,
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

    /// Whether latencies are measured: turned on when METRICS_ADDR exports them.
    pub fn timed(&self) -> bool {
        self.timed.load(Ordering::Relaxed)
    }

    pub fn set_timed(&self, on: bool) {
        self.timed.store(on, Ordering::Relaxed);
    }

    /// The children of one client method (resolve once, keep).
    pub fn method(&self, method: &str) -> MethodMetrics {
        MethodMetrics {
            requests: self.requests.with_label_values(&[method]),
            seconds: self.request_seconds.with_label_values(&[method]),
            cost: self.request_cost.with_label_values(&[method]),
        }
    }

    /// The children of one daemon call (resolve once, keep); unknown methods are "other".
    pub fn daemon_call(&self, method: &str) -> DaemonCallMetrics {
        let method = DAEMON_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other");
        DaemonCallMetrics {
            seconds: self.daemon_seconds.with_label_values(&[method]),
            errors: DAEMON_ERRORS.iter().map(|k| self.daemon_errors.with_label_values(&[method, k])).collect(),
        }
    }

    /// An error answered to a client.
    pub fn request_error(&self, method: &str, code: i64) {
        let code = ERROR_CODES.iter().find(|(c, _)| *c == code).map_or("other", |(_, label)| label);
        self.request_errors.inc();
        self.request_errors_by.with_label_values(&[method, code]).inc();
    }

    fn transport(&self, transport: &str) -> usize {
        TRANSPORTS.iter().position(|t| *t == transport).unwrap_or(0)
    }

    pub fn session_opened(&self, transport: &str) {
        let i = self.transport(transport);
        self.sessions[i].inc();
        self.sessions_opened[i].inc();
    }

    pub fn session_closed(&self, transport: &str, reason: &str) {
        self.sessions[self.transport(transport)].dec();
        let r = CLOSE_REASONS.iter().position(|c| *c == reason).unwrap_or(5); // "error"
        self.sessions_closed[r].inc();
    }

    /// Live client sessions, all transports.
    pub fn session_count(&self) -> i64 {
        self.sessions.iter().map(IntGauge::get).sum()
    }

    /// Notifications written to one session: how many of each kind, and how long after the
    /// index changed.
    pub fn notified(&self, headers: usize, statuses: usize, delay: Option<Duration>) {
        if headers > 0 {
            self.notifications_headers.inc_by(headers as u64);
        }
        if statuses > 0 {
            self.notifications_scripthash.inc_by(statuses as u64);
        }
        if let Some(d) = delay.filter(|_| self.timed()) {
            let h = if statuses > 0 { &self.notification_delay_scripthash } else { &self.notification_delay_headers };
            h.observe(d.as_secs_f64());
        }
    }

    pub fn notifications(&self) -> u64 {
        self.notifications_headers.get() + self.notifications_scripthash.get()
    }

    pub fn set_build_info(&self, coin: &str, network: &str, protocol_min: &str, protocol_max: &str) {
        self.build_info.with_label_values(&[crate::VERSION, coin, network, protocol_min, protocol_max]).set(1);
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
    }

    #[test]
    fn labels_come_from_closed_sets() {
        let m = Metrics::new();
        m.request_error("server.ping", -32602);
        m.request_error("server.ping", 12345);
        m.daemon_call("no_such_call").error("nonsense");
        m.session_opened("carrier pigeon");
        m.session_closed("tcp", "nonsense");
        let text = prometheus::TextEncoder::new().encode_to_string(&m.registry().gather()).unwrap();
        assert!(text.contains(r#"ferrum_request_errors_total{code="-32602",method="server.ping"} 1"#), "{text}");
        assert!(text.contains(r#"ferrum_request_errors_total{code="other",method="server.ping"} 1"#));
        assert!(text.contains(r#"ferrum_daemon_rpc_errors_total{kind="rpc",method="other"} 1"#));
        assert!(text.contains(r#"ferrum_sessions_closed_total{reason="error"} 1"#));
        assert!(!text.contains("12345") && !text.contains("nonsense") && !text.contains("pigeon"));
        assert_eq!(m.session_count(), 0);
    }
}
