//! JSON-RPC (and REST) client for the coin daemon.
//!
//! Transient trouble (connection refused, timeouts, bad credentials, the -28 warm-up error) is
//! retried here with back-off, failing over round-robin across DAEMON_URL, and logged with
//! what the operator should do; callers only see answers, real RPC errors, or shutdown. Nothing
//! the index holds depends on a request succeeding, so retrying never loses state.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::{Config, DaemonUrl};

const RPC_IN_WARMUP: i64 = -28;
const RPC_METHOD_NOT_FOUND: i64 = -32601;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DaemonError {
    /// The daemon answered with a JSON-RPC error.
    #[error("daemon error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// The daemon does not have an RPC ferrum needs.
    #[error("the daemon does not support the RPC method {0}; ferrum needs a node that has it (Bitcoin Core 0.21 or later, or the coin's equivalent)")]
    MethodNotFound(String),
    #[error("shutting down")]
    Shutdown,
}

/// A failure worth retrying, with the words the operator needs.
#[derive(Debug)]
enum Transient {
    Connect(String),
    Timeout,
    Auth(u16),
    Warmup(String),
    BadReply(String),
}

impl Transient {
    fn advice(&self, url: &str, cookie: Option<&PathBuf>) -> String {
        match self {
            Transient::Connect(e) => format!(
                "cannot reach the daemon at {url}: {e}. Is the node running, with server=1 and this rpcport/rpcbind? \
                 Point ferrum at it with DAEMON_URL=http://user:password@host:port/"
            ),
            Transient::Timeout => format!("the daemon at {url} did not answer in time; it may be overloaded"),
            Transient::Auth(status) => match cookie {
                Some(path) => format!(
                    "the daemon at {url} refused authentication (HTTP {status}) using the cookie file {}. \
                     Make sure ferrum can read it, or put rpcuser:rpcpassword in DAEMON_URL",
                    path.display()
                ),
                None => format!(
                    "the daemon at {url} refused our credentials (HTTP {status}); check the user and password in DAEMON_URL \
                     against the node's rpcuser/rpcpassword or rpcauth (and rpcallowip)"
                ),
            },
            Transient::Warmup(m) => format!("the daemon at {url} is warming up ({m}); waiting for it"),
            Transient::BadReply(m) => format!("unexpected reply from the daemon at {url}: {m}"),
        }
    }
}

/// Something a daemon may or may not do, learned from its answers once per daemon (each
/// DAEMON_URL entry on its own: after a failover the next daemon is judged afresh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `getrawtransaction <txid> <verbose> <blockhash>` (Bitcoin Core 0.16 and later; not the
    /// Bitcoin SV node, which answers such a call with its help text).
    TxByBlockHash,
    /// `getrawtransaction <txid>` finds confirmed transactions (`-txindex=1`).
    TxIndex,
}

impl Feature {
    const ALL: [Feature; 2] = [Feature::TxByBlockHash, Feature::TxIndex];

    fn name(self) -> &'static str {
        match self {
            Feature::TxByBlockHash => "the blockhash argument of getrawtransaction",
            Feature::TxIndex => "a transaction index (-txindex=1)",
        }
    }
}

/// What ferrum does instead when a daemon lacks a call or a feature; logged once per daemon
/// and listed per daemon in docs/ENVIRONMENT.md.
pub fn fallback(what: &str) -> &'static str {
    match what {
        "estimatesmartfee" => "blockchain.estimatefee asks the older estimatefee instead",
        "estimatefee" => "blockchain.estimatefee answers -1 (no estimate), as the protocol allows",
        "waitforblockheight" => "new blocks are found by polling every DAEMON_POLL_INTERVAL_BLOCKS",
        "submitpackage" => {
            "blockchain.transaction.broadcast_package sends the transactions one by one with sendrawtransaction"
        }
        "getmempoolinfo" => "mempool.get_info takes the relay fee from getnetworkinfo",
        "getrawtransaction" => "transactions cannot be served (blockchain.transaction.get answers an error)",
        "decoderawtransaction" => "verbose blockchain.transaction.get of a confirmed transaction answers an error",
        _ => "requests that need it get an error",
    }
}

fn feature_fallback(feature: Feature) -> &'static str {
    match feature {
        Feature::TxByBlockHash => {
            "confirmed transactions are asked for by txid alone when the node has -txindex, else taken out of their blocks"
        }
        Feature::TxIndex => "blockchain.transaction.get takes confirmed transactions out of their blocks",
    }
}

// 0: not known yet.
const YES: u8 = 1;
const NO: u8 = 2;

struct Endpoint {
    url: DaemonUrl,
    /// Whether the daemon serves REST (`-rest=1`): unknown until probed.
    rest: tokio::sync::OnceCell<bool>,
    /// Per `Feature::ALL`: 0 (not known yet), YES or NO.
    features: [AtomicU8; Feature::ALL.len()],
    /// RPC methods this daemon answered "Method not found": not asked again.
    missing: Mutex<HashSet<String>>,
    /// The daemon streams replies in chunks (the Bitcoin SV node does): see `Daemon::fresh`.
    chunked: std::sync::atomic::AtomicBool,
}

impl Endpoint {
    fn new(url: DaemonUrl) -> Endpoint {
        Endpoint {
            url,
            rest: tokio::sync::OnceCell::new(),
            features: Default::default(),
            missing: Mutex::default(),
            chunked: Default::default(),
        }
    }

    fn lacks(&self, method: &str) -> bool {
        self.missing.lock().expect("lock").contains(method)
    }
}

pub struct Daemon {
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    client: reqwest::Client,
    /// A client that keeps no idle connections, for daemons that stream replies in chunks: on a
    /// reused connection the last chunk of every reply waits for our delayed ACK (Nagle on
    /// their side), 40 ms a call; a new connection starts in quick-ACK mode and costs ~0.1 ms.
    fresh: reqwest::Client,
    cookie_file: PathBuf,
    cookie: Mutex<Option<String>>,
    next_id: AtomicU64,
    use_rest: bool,
    shutdown: watch::Receiver<bool>,
    /// Failovers so far (reported by getinfo).
    pub failovers: AtomicU64,
    last_log: Mutex<Option<(String, Instant)>>,
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

impl Daemon {
    pub fn new(config: &Config, shutdown: watch::Receiver<bool>) -> Daemon {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .pool_idle_timeout(Duration::from_secs(30))
                .tcp_nodelay(true)
        };
        let client = builder().pool_max_idle_per_host(64).build().expect("HTTP client builds with static options");
        let fresh = builder().pool_max_idle_per_host(0).build().expect("HTTP client builds with static options");
        Daemon {
            endpoints: config.daemon_urls.iter().map(|u| Endpoint::new(u.clone())).collect(),
            current: AtomicUsize::new(0),
            client,
            fresh,
            cookie_file: config.cookie_file.clone(),
            cookie: Mutex::new(None),
            next_id: AtomicU64::new(1),
            use_rest: config.daemon_rest,
            shutdown,
            failovers: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// The daemon currently in use, for logs and getinfo.
    pub fn current_url(&self) -> String {
        self.endpoint().1.url.redacted()
    }

    /// The endpoint in use: its index, itself, and how many there are.
    fn endpoint(&self) -> (usize, &Endpoint, usize) {
        let i = self.current.load(Ordering::SeqCst) % self.endpoints.len();
        (i, &self.endpoints[i], self.endpoints.len())
    }

    fn auth_header(&self, ep: &Endpoint) -> Option<String> {
        let creds = match &ep.url.auth {
            Some((u, p)) => format!("{u}:{p}"),
            None => {
                let mut cookie = self.cookie.lock().expect("lock");
                if cookie.is_none() {
                    *cookie = std::fs::read_to_string(&self.cookie_file).ok().map(|s| s.trim().to_string());
                }
                cookie.clone()?
            }
        };
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds)))
    }

    fn log_trouble(&self, msg: &str) {
        // The same complaint is repeated at most every 30 s so a long outage does not flood logs.
        let mut last = self.last_log.lock().expect("lock");
        let repeat = matches!(&*last, Some((m, t)) if m == msg && t.elapsed() < Duration::from_secs(30));
        if !repeat {
            tracing::warn!("{msg}");
            *last = Some((msg.to_string(), Instant::now()));
        }
    }

    async fn sleep_or_shutdown(&self, d: Duration) -> Result<(), DaemonError> {
        let mut rx = self.shutdown.clone();
        if *rx.borrow() {
            return Err(DaemonError::Shutdown);
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = rx.wait_for(|s| *s) => Err(DaemonError::Shutdown),
        }
    }

    /// Sends one HTTP request to the current endpoint; on trouble, retries with back-off,
    /// failing over across endpoints, until it gets an answer or ferrum shuts down.
    async fn send(
        &self,
        make: impl Fn(&reqwest::Client, &Endpoint) -> reqwest::RequestBuilder,
        want_json: bool,
    ) -> Result<(usize, reqwest::StatusCode, Body), DaemonError> {
        let mut backoff = Duration::from_millis(100);
        let mut failures_in_row = 0usize;
        loop {
            if *self.shutdown.borrow() {
                return Err(DaemonError::Shutdown);
            }
            let (index, ep, count) = self.endpoint();
            let client = if ep.chunked.load(Ordering::Relaxed) { &self.fresh } else { &self.client };
            let mut req = make(client, ep);
            if let Some(h) = self.auth_header(ep) {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            let trouble = match req.send().await {
                Err(e) if e.is_timeout() => Transient::Timeout,
                Err(e) => Transient::Connect(error_chain(&e.without_url())),
                Ok(resp) => {
                    let status = resp.status();
                    // A kept-alive reply without a length is chunked (hyper hides the header).
                    let chunked = resp.content_length().is_none();
                    if chunked && !ep.chunked.swap(true, Ordering::Relaxed) {
                        tracing::debug!(
                            "the daemon at {} streams its replies in chunks: using a new connection per request",
                            ep.url.redacted()
                        );
                    }
                    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                        *self.cookie.lock().expect("lock") = None; // the node may have written a new cookie
                        Transient::Auth(status.as_u16())
                    } else {
                        match resp.bytes().await {
                            Err(e) if e.is_timeout() => Transient::Timeout,
                            Err(e) => Transient::Connect(error_chain(&e.without_url())),
                            Ok(bytes) if !want_json => return Ok((index, status, Body::Bytes(bytes.to_vec()))),
                            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                                Ok(v) => match warmup_message(&v) {
                                    Some(m) => Transient::Warmup(m),
                                    None => return Ok((index, status, Body::Json(v))),
                                },
                                Err(_) => Transient::BadReply(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
                                )),
                            },
                        }
                    }
                }
            };
            let cookie = ep.url.auth.is_none().then_some(&self.cookie_file);
            self.log_trouble(&trouble.advice(&ep.url.redacted(), cookie));
            failures_in_row += 1;
            let warming = matches!(trouble, Transient::Warmup(_));
            if count > 1 && !warming {
                let next = (index + 1) % count;
                if self.current.compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("failing over to daemon {}", self.endpoints[next].url.redacted());
                }
                // Try the next daemon at once; back off only after a full round of failures.
                if failures_in_row % count != 0 {
                    continue;
                }
            }
            self.sleep_or_shutdown(backoff).await?;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// One JSON-RPC call. A method the daemon once answered "Method not found" is not asked
    /// again: the caller's fallback is taken at once.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, DaemonError> {
        self.call_at(method, params).await.1
    }

    /// `call`, also saying which daemon (index into DAEMON_URL) answered, so what the answer
    /// teaches about that daemon can be remembered for it (`learn`).
    pub async fn call_at(&self, method: &str, params: Value) -> (usize, Result<Value, DaemonError>) {
        let (index, ep, _) = self.endpoint();
        if ep.lacks(method) {
            return (index, Err(DaemonError::MethodNotFound(method.to_string())));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let sent = self
            .send(
                |c, ep| {
                    c.post(&ep.url.base)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string())
                },
                true,
            )
            .await;
        let (index, reply) = match sent {
            Ok((index, _, Body::Json(v))) => (index, v),
            Ok(_) => unreachable!("asked for JSON"),
            Err(e) => return (self.endpoint().0, Err(e)),
        };
        let result = parse_reply(method, &reply);
        if matches!(result, Err(DaemonError::MethodNotFound(_))) {
            self.note_missing(index, method);
        }
        (index, result)
    }

    fn note_missing(&self, index: usize, method: &str) {
        let ep = &self.endpoints[index];
        if ep.missing.lock().expect("lock").insert(method.to_string()) {
            tracing::info!("the daemon at {} has no RPC method {method}: {}", ep.url.redacted(), fallback(method));
        }
    }

    /// What is known of `feature` on the daemon in use: `None` until learned.
    pub fn supports(&self, feature: Feature) -> Option<bool> {
        match self.endpoint().1.features[feature as usize].load(Ordering::Relaxed) {
            YES => Some(true),
            NO => Some(false),
            _ => None,
        }
    }

    /// Remembers what daemon `index` (from `call_at`) showed about `feature`; the first time a
    /// daemon turns out to lack it, logs what ferrum does instead.
    pub fn learn(&self, index: usize, feature: Feature, has: bool) {
        let Some(ep) = self.endpoints.get(index) else { return };
        let was = ep.features[feature as usize].swap(if has { YES } else { NO }, Ordering::Relaxed);
        if !has && was != NO {
            tracing::info!(
                "the daemon at {} lacks {}: {}",
                ep.url.redacted(),
                feature.name(),
                feature_fallback(feature)
            );
        }
    }

    /// A batch of calls to one method; answers in order, each its own result.
    pub async fn batch(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Result<Value, DaemonError>>, DaemonError> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_id.fetch_add(params.len() as u64, Ordering::Relaxed);
        let body: Vec<Value> = params
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"jsonrpc": "1.0", "id": first + i as u64, "method": method, "params": p}))
            .collect();
        let body = Value::Array(body);
        let (_, _, reply) = self
            .send(
                |c, ep| {
                    c.post(&ep.url.base)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string())
                },
                true,
            )
            .await?;
        let Body::Json(v) = reply else { unreachable!("asked for JSON") };
        let items = match v {
            Value::Array(items) => items,
            other => {
                return Err(parse_reply(method, &other)
                    .err()
                    .unwrap_or(DaemonError::Rpc { code: 0, message: "batch answered with a single value".into() }))
            }
        };
        let mut out: Vec<Option<Result<Value, DaemonError>>> = (0..params.len()).map(|_| None).collect();
        for item in items {
            let slot = item.get("id").and_then(Value::as_u64).and_then(|id| id.checked_sub(first)).map(|i| i as usize);
            if let Some(slot) = slot.filter(|&s| s < out.len()) {
                out[slot] = Some(parse_reply(method, &item));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DaemonError::Rpc { code: 0, message: "missing from batch reply".into() })))
            .collect())
    }

    /// Height and hash (internal byte order) of the daemon's best block.
    pub async fn best_block(&self) -> Result<(u32, [u8; 32]), DaemonError> {
        let info = self.call("getblockchaininfo", json!([])).await?;
        let height = info["blocks"].as_u64().ok_or_else(|| bad_field("getblockchaininfo", "blocks"))? as u32;
        let hash = info["bestblockhash"]
            .as_str()
            .and_then(crate::schema::parse_hex_rev32)
            .ok_or_else(|| bad_field("getblockchaininfo", "bestblockhash"))?;
        Ok((height, hash))
    }

    /// Long poll: returns the daemon's tip height as soon as it reaches `height`, or after
    /// `timeout` with the height it has. Holds one of the daemon's RPC threads while it waits.
    pub async fn wait_for_height(&self, height: u32, timeout: Duration) -> Result<u32, DaemonError> {
        let v = self.call("waitforblockheight", json!([height, timeout.as_millis() as u64])).await?;
        v["height"].as_u64().map(|h| h as u32).ok_or_else(|| bad_field("waitforblockheight", "height"))
    }

    /// Block hashes of heights `from..from+count` (internal order); fewer if the chain is shorter.
    pub async fn block_hashes(&self, from: u32, count: u32) -> Result<Vec<[u8; 32]>, DaemonError> {
        let params = (from..from + count).map(|h| json!([h])).collect();
        let mut out = Vec::with_capacity(count as usize);
        for r in self.batch("getblockhash", params).await? {
            match r {
                Ok(v) => out.push(
                    v.as_str()
                        .and_then(crate::schema::parse_hex_rev32)
                        .ok_or_else(|| bad_field("getblockhash", "result"))?,
                ),
                Err(DaemonError::Rpc { code: -8, .. }) => break, // past the daemon's tip
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A block's serialized bytes: from REST when the daemon serves it, else `getblock <hash> 0`.
    pub async fn raw_block(&self, hash: &[u8; 32]) -> Result<Vec<u8>, DaemonError> {
        let hex_hash = crate::schema::hex_rev(hash);
        if self.use_rest {
            let (_, ep, _) = self.endpoint();
            let rest = *ep
                .rest
                .get_or_init(|| async {
                    let r = self.probe_rest(ep).await;
                    if r {
                        tracing::info!("daemon {} serves REST; fetching blocks in binary", ep.url.redacted());
                    } else {
                        tracing::info!(
                            "daemon {} has no REST interface (-rest=1 makes initial sync faster); using JSON-RPC",
                            ep.url.redacted()
                        );
                    }
                    r
                })
                .await;
            if rest {
                // The URL comes from whichever endpoint `send` uses, so failover applies here too.
                let (_, status, body) =
                    self.send(|c, ep| c.get(format!("{}rest/block/{hex_hash}.bin", ep.url.base)), false).await?;
                if let Body::Bytes(b) = body {
                    if status.is_success() {
                        return Ok(b);
                    }
                }
                // Fall through to JSON-RPC, which gives a proper error for an unknown block.
            }
        }
        let v = self.call("getblock", json!([hex_hash, 0])).await?;
        let s = v.as_str().ok_or_else(|| bad_field("getblock", "result"))?;
        hex::decode(s).map_err(|_| bad_field("getblock", "hex"))
    }

    async fn probe_rest(&self, ep: &Endpoint) -> bool {
        let url = format!("{}rest/chaininfo.json", ep.url.base);
        match self.client.get(&url).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn bad_field(method: &str, field: &str) -> DaemonError {
    DaemonError::Rpc { code: 0, message: format!("malformed {method} reply: bad or missing {field}") }
}

fn warmup_message(v: &Value) -> Option<String> {
    let check = |item: &Value| {
        let err = item.get("error")?;
        (err.get("code")?.as_i64()? == RPC_IN_WARMUP)
            .then(|| err.get("message").and_then(Value::as_str).unwrap_or("").to_string())
    };
    match v {
        Value::Array(items) => items.iter().find_map(check),
        item => check(item),
    }
}

fn parse_reply(method: &str, v: &Value) -> Result<Value, DaemonError> {
    match v.get("error") {
        Some(err) if !err.is_null() => {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            if code == RPC_METHOD_NOT_FOUND {
                return Err(DaemonError::MethodNotFound(method.to_string()));
            }
            let message = err.get("message").and_then(Value::as_str).unwrap_or("").to_string();
            Err(DaemonError::Rpc { code, message })
        }
        _ => match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(DaemonError::Rpc { code: 0, message: format!("malformed {method} reply: no result") }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply("m", &json!({"result": 5, "error": null, "id": 1})), Ok(json!(5)));
        assert_eq!(
            parse_reply("m", &json!({"result": null, "error": {"code": -32601, "message": "Method not found"}})),
            Err(DaemonError::MethodNotFound("m".into()))
        );
        assert_eq!(
            parse_reply("m", &json!({"result": null, "error": {"code": -8, "message": "out of range"}})),
            Err(DaemonError::Rpc { code: -8, message: "out of range".into() })
        );
        assert!(warmup_message(&json!({"error": {"code": -28, "message": "Loading"}})).is_some());
        assert!(warmup_message(&json!([{"result": 1}, {"error": {"code": -28, "message": "x"}}])).is_some());
        assert!(warmup_message(&json!({"result": 1, "error": null})).is_none());
    }
}
