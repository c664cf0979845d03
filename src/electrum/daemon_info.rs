//! What clients ask that only the daemon knows, with the caches that keep it cheap: fee
//! estimates (until the next block), relay and mempool fees (10 s), the banner's daemon
//! version; the server's own `server.features`; and daemon calls bounded by REQUEST_TIMEOUT
//! (the daemon client itself retries through outages forever).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::version::{Version, PROTOCOL_MAX, PROTOCOL_MIN, V1_7};
use crate::config::Config;
use crate::jsonrpc::{RpcError, DAEMON_ERROR, SERVER_BUSY};
use crate::node::transactions::Transactions;
use crate::node::{Daemon, DaemonError};

type FeeCache = HashMap<(u32, Option<String>), ([u8; 32], Value)>;

pub struct DaemonInfo {
    pub daemon: Arc<Daemon>,
    /// Transactions by txid, in whichever form the daemon takes.
    pub transactions: Transactions,
    request_timeout: Duration,
    fee_cache: Mutex<FeeCache>,
    info_cache: Mutex<HashMap<&'static str, (Instant, Value)>>,
    /// Fallbacks already logged (once per process), e.g. fields a daemon's answers lack.
    noted: Mutex<HashSet<&'static str>>,
}

/// A daemon error as a client sees it.
pub fn daemon_error(e: DaemonError) -> RpcError {
    match e {
        DaemonError::Rpc { message, .. } => RpcError::new(DAEMON_ERROR, format!("daemon error: {message}")),
        DaemonError::MethodNotFound(m) => RpcError::new(DAEMON_ERROR, format!("the daemon does not support {m}")),
        DaemonError::Shutdown => RpcError::new(SERVER_BUSY, "the server is shutting down"),
    }
}

impl DaemonInfo {
    pub fn new(daemon: Arc<Daemon>, config: &Config) -> DaemonInfo {
        DaemonInfo {
            transactions: Transactions::new(daemon.clone(), config.coin),
            daemon,
            request_timeout: config.request_timeout,
            fee_cache: Mutex::default(),
            info_cache: Mutex::default(),
            noted: Mutex::default(),
        }
    }

    /// A daemon call for a client, bounded by REQUEST_TIMEOUT.
    pub async fn call(&self, method: &str, params: Value) -> Result<Result<Value, DaemonError>, RpcError> {
        tokio::time::timeout(self.request_timeout, self.daemon.call(method, params))
            .await
            .map_err(|_| RpcError::new(SERVER_BUSY, "the daemon is not answering; try again later"))
    }

    /// Fee estimate in BTC/kB, cached per (target, mode) until the tip `tip_hash` changes; -1
    /// when the daemon has none (Electrum disconnects on an error here). Also whether the
    /// daemon was asked (the cache missed).
    pub async fn estimatefee(&self, tip_hash: [u8; 32], number: u32, mode: Option<String>) -> (Value, bool) {
        let key = (number, mode.clone());
        if let Some((at, v)) = self.fee_cache.lock().expect("lock").get(&key) {
            if *at == tip_hash {
                return (v.clone(), false);
            }
        }
        let target = number.clamp(1, 1008);
        let params = match &mode {
            Some(m) => json!([target, m]),
            None => json!([target]),
        };
        let answer = match self.call("estimatesmartfee", params).await {
            Ok(Err(DaemonError::MethodNotFound(_))) => match self.call("estimatefee", json!([target])).await {
                Ok(a) => a,
                Err(_) => return (json!(-1), true),
            },
            Ok(a) => a,
            Err(_) => return (json!(-1), true),
        };
        let fee = fee_from_daemon(&answer);
        self.fee_cache.lock().expect("lock").insert(key, (tip_hash, fee.clone()));
        (fee, true)
    }

    async fn cached(&self, method: &'static str) -> Result<Value, RpcError> {
        if let Some((at, v)) = self.info_cache.lock().expect("lock").get(method) {
            if at.elapsed() < Duration::from_secs(10) {
                return Ok(v.clone());
            }
        }
        let v = self.call(method, json!([])).await?.map_err(daemon_error)?;
        self.info_cache.lock().expect("lock").insert(method, (Instant::now(), v.clone()));
        Ok(v)
    }

    pub async fn relayfee(&self) -> Result<Value, RpcError> {
        let info = self.cached("getnetworkinfo").await?;
        Ok(info.get("relayfee").cloned().unwrap_or(json!(0.00001)))
    }

    pub async fn mempool_info(&self) -> Result<Value, RpcError> {
        let m = self.cached("getmempoolinfo").await?;
        let n = self.cached("getnetworkinfo").await?;
        let pick = |a: &Value, key: &str| a.get(key).filter(|v| v.is_number()).cloned();
        // The Bitcoin SV node's getmempoolinfo has no minrelaytxfee or incrementalrelayfee.
        let relay = pick(&m, "minrelaytxfee").or_else(|| {
            self.note_once(
                "minrelaytxfee",
                "the daemon's getmempoolinfo has no minrelaytxfee: mempool.get_info takes getnetworkinfo's relayfee",
            );
            pick(&n, "relayfee")
        });
        let relay = relay.unwrap_or(json!(0.00001));
        let incremental = pick(&m, "incrementalrelayfee").or_else(|| pick(&n, "incrementalfee")).unwrap_or_else(|| {
            self.note_once(
                "incrementalrelayfee",
                "the daemon reports no incremental relay fee: mempool.get_info gives its minimum relay fee instead",
            );
            relay.clone()
        });
        Ok(json!({
            "mempoolminfee": pick(&m, "mempoolminfee").unwrap_or(relay.clone()),
            "minrelaytxfee": relay,
            "incrementalrelayfee": incremental,
        }))
    }

    /// Logs a fallback the first time it is taken.
    fn note_once(&self, key: &'static str, message: &str) {
        if self.noted.lock().expect("lock").insert(key) {
            tracing::info!("{message}");
        }
    }

    /// BANNER_FILE with ElectrumX's $-substitutions, or a default line.
    /// BANNER_FILE, or TOR_BANNER_FILE for a session that came through our Tor proxy, with
    /// ElectrumX's $-variables filled in.
    pub async fn banner(&self, config: &Config, via_tor: bool) -> String {
        let default = format!("You are connected to a {} server.", crate::server_version());
        let file = if via_tor {
            config.peers.tor_banner_file.as_ref().or(config.banner_file.as_ref())
        } else {
            config.banner_file.as_ref()
        };
        let Some(path) = file else { return default };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("reading BANNER_FILE {}: {e}", path.display());
                return default;
            }
        };
        let info = self.cached("getnetworkinfo").await.unwrap_or(Value::Null);
        let version = info["version"].as_u64().map(daemon_version).unwrap_or_default();
        let subversion = info["subversion"].as_str().unwrap_or("").to_string();
        text.replace("$SERVER_VERSION", crate::VERSION)
            .replace("$SERVER_SUBVERSION", &crate::server_version())
            .replace("$DAEMON_VERSION", &version)
            .replace("$DAEMON_SUBVERSION", &subversion)
            .replace("$DONATION_ADDRESS", &config.donation_address)
    }
}

/// `server.features`: what peers and clients learn about this server.
/// `server.features` for a session at protocol `v`: 1.7 drops `hash_function` (the script
/// hash is simply sha256 there).
pub fn features(config: &Config, v: Version) -> Value {
    let mut hosts = serde_json::Map::new();
    for svc in &config.report_services {
        let entry = hosts.entry(svc.host.clone()).or_insert_with(|| json!({}));
        entry[format!("{}_port", svc.protocol.name())] = json!(svc.port);
    }
    let mut f = json!({
        "hosts": hosts,
        "genesis_hash": config.coin.genesis_hash,
        "server_version": crate::server_version(),
        "protocol_min": PROTOCOL_MIN.to_string(),
        "protocol_max": PROTOCOL_MAX.to_string(),
        "pruning": null,
        // ferrum's extension: get_history takes from_height and to_height (docs/PROTOCOL.md).
        "history_height_range": true,
        "services": config.report_services.iter().map(|s| format!("{}://{}:{}", s.protocol.name(), s.host, s.port)).collect::<Vec<_>>(),
    });
    if v < V1_7 {
        f["hash_function"] = json!("sha256");
    }
    f
}

/// The estimatefee answer from the daemon's: BTC/kB, or -1 when it has no estimate.
pub fn fee_from_daemon(answer: &Result<Value, DaemonError>) -> Value {
    match answer {
        Ok(v) => match v.get("feerate").and_then(Value::as_f64).or_else(|| v.as_f64()) {
            Some(rate) if rate > 0.0 => json!(rate),
            _ => json!(-1),
        },
        Err(_) => json!(-1),
    }
}

/// "31.0.0" from the daemon's numeric version (0.x style before 22); the Bitcoin SV node adds
/// 100,000,000 to Bitcoin's old 1,000,000 × major scheme (101001300 is 1.0.13).
fn daemon_version(v: u64) -> String {
    if v >= 100_000_000 {
        let v = v - 100_000_000;
        return format!("{}.{}.{}", v / 1_000_000, (v / 10_000) % 100, (v / 100) % 100);
    }
    let (major, minor, rev) = (v / 10_000, (v / 100) % 100, v % 100);
    if v < 220_000 {
        format!("0.{major}.{minor}")
    } else {
        format!("{major}.{minor}.{rev}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_versions() {
        assert_eq!(daemon_version(210100), "0.21.1");
        assert_eq!(daemon_version(310000), "31.0.0");
        assert_eq!(daemon_version(319900), "31.99.0");
        assert_eq!(daemon_version(101001300), "1.0.13");
    }

    #[test]
    fn estimatefee_answers() {
        assert_eq!(fee_from_daemon(&Ok(json!({"feerate": 0.0002, "blocks": 2}))), json!(0.0002));
        assert_eq!(fee_from_daemon(&Ok(json!({"errors": ["Insufficient data"], "blocks": 0}))), json!(-1));
        assert_eq!(fee_from_daemon(&Err(DaemonError::MethodNotFound("estimatesmartfee".into()))), json!(-1));
    }
}
