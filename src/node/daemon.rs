//! JSON-RPC (and REST) client for the coin daemon.
//!
//! Transient trouble (connection refused, timeouts, bad credentials, the -28 warm-up error) is
//! retried here with back-off, failing over round-robin across DAEMON_URL, and logged with
//! what the operator should do; callers only see answers, real RPC errors, or shutdown. Nothing
//! the index holds depends on a request succeeding, so retrying never loses state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::capabilities::{method_fallback, Capabilities, Feature};
use crate::config::{Config, DaemonUrl};
use crate::metrics::{DaemonCallMetrics, Metrics, DAEMON_METHODS};
use crate::types::{hex_rev, parse_hex_rev32};

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
    /// The `kind` label of `ferrum_daemon_rpc_errors_total`.
    fn kind(&self) -> &'static str {
        match self {
            Transient::Connect(_) => "connect",
            Transient::Timeout => "timeout",
            Transient::Auth(_) => "auth",
            Transient::Warmup(_) => "warmup",
            Transient::BadReply(_) => "http",
        }
    }

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

struct Endpoint {
    url: DaemonUrl,
    /// Whether the daemon serves REST (`-rest=1`): unknown until probed.
    rest: tokio::sync::OnceCell<bool>,
    /// Whether it serves `/rest/spenttxouts` (Bitcoin Core 30 and later), from its first answer.
    spent_outputs: OnceLock<bool>,
    caps: Capabilities,
}

impl Endpoint {
    fn new(url: DaemonUrl) -> Endpoint {
        Endpoint {
            url,
            rest: tokio::sync::OnceCell::new(),
            spent_outputs: OnceLock::new(),
            caps: Capabilities::default(),
        }
    }
}

pub struct Daemon {
    /// DAEMON_URL's daemons; the admin `daemon_url` replaces them at run time.
    endpoints: RwLock<Arc<Vec<Endpoint>>>,
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
    use_spent_outputs: bool,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// Latency and failures of each daemon call, resolved once.
    call_metrics: HashMap<&'static str, DaemonCallMetrics>,
    last_log: Mutex<Option<(String, Instant)>>,
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

/// An answer from one daemon: which one (index into DAEMON_URL), its HTTP status and body.
struct Answer {
    index: usize,
    status: reqwest::StatusCode,
    body: Body,
}

impl Daemon {
    pub fn new(config: &Config, shutdown: watch::Receiver<bool>, metrics: Arc<Metrics>) -> Daemon {
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
            endpoints: RwLock::new(Arc::new(config.daemon_urls.iter().cloned().map(Endpoint::new).collect())),
            current: AtomicUsize::new(0),
            client,
            fresh,
            cookie_file: config.cookie_file.clone(),
            cookie: Mutex::new(None),
            next_id: AtomicU64::new(1),
            use_rest: config.daemon_rest,
            use_spent_outputs: config.daemon_rest && config.daemon_spent_outputs,
            shutdown,
            call_metrics: DAEMON_METHODS.iter().map(|m| (*m, metrics.daemon_call(m))).collect(),
            metrics,
            last_log: Mutex::new(None),
        }
    }

    /// The counters of a daemon call (unknown calls share "other").
    fn call_metrics(&self, method: &str) -> &DaemonCallMetrics {
        self.call_metrics.get(method).unwrap_or_else(|| &self.call_metrics["other"])
    }

    /// The daemon currently in use, for logs and getinfo.
    pub fn current_url(&self) -> String {
        let (i, eps) = self.endpoint();
        eps[i].url.redacted()
    }

    /// What the daemon in use was found to lack (RPC methods, features), for getinfo.
    pub fn lacking(&self) -> Vec<String> {
        let (i, eps) = self.endpoint();
        eps[i].caps.lacking()
    }

    /// Replaces the daemons (admin `daemon_url`): requests go to the first from now on, and
    /// what each can do is learned afresh.
    pub fn set_urls(&self, urls: Vec<DaemonUrl>) {
        if urls.is_empty() {
            return;
        }
        *self.endpoints.write().expect("lock") = Arc::new(urls.into_iter().map(Endpoint::new).collect());
        self.current.store(0, Ordering::SeqCst);
        self.metrics.daemon_url_index.set(0);
        tracing::info!("now using daemon at {}", self.current_url());
    }

    /// The daemons and the index of the one in use.
    fn endpoint(&self) -> (usize, Arc<Vec<Endpoint>>) {
        let eps = self.endpoints.read().expect("lock").clone();
        (self.current.load(Ordering::SeqCst) % eps.len(), eps)
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
            _ = crate::stopped(&mut rx) => Err(DaemonError::Shutdown),
        }
    }

    /// Reads one HTTP response into a body, or says why it is not an answer.
    async fn classify(&self, ep: &Endpoint, resp: reqwest::Response, want_json: bool) -> Result<Answer, Transient> {
        let status = resp.status();
        // A kept-alive reply without a length is chunked (hyper hides the header).
        if resp.content_length().is_none() && ep.caps.note_chunked() {
            tracing::debug!(
                "the daemon at {} streams its replies in chunks: using a new connection per request",
                ep.url.redacted()
            );
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            *self.cookie.lock().expect("lock") = None; // the node may have written a new cookie
            return Err(Transient::Auth(status.as_u16()));
        }
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                Transient::Timeout
            } else {
                Transient::Connect(error_chain(&e.without_url()))
            }
        })?;
        if !want_json {
            return Ok(Answer { index: 0, status, body: Body::Bytes(bytes.to_vec()) });
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim().to_string();
            Transient::BadReply(format!("HTTP {status}: {shown}"))
        })?;
        match warmup_message(&v) {
            Some(m) => Err(Transient::Warmup(m)),
            None => Ok(Answer { index: 0, status, body: Body::Json(v) }),
        }
    }

    /// Sends one HTTP request to the current endpoint; on trouble, retries with back-off,
    /// failing over across endpoints, until it gets an answer or ferrum shuts down.
    async fn send(
        &self,
        method: &str,
        make: impl Fn(&reqwest::Client, &Endpoint) -> reqwest::RequestBuilder,
        want_json: bool,
    ) -> Result<Answer, DaemonError> {
        let m = self.call_metrics(method);
        let mut backoff = Duration::from_millis(100);
        let mut failures_in_row = 0usize;
        loop {
            if *self.shutdown.borrow() {
                return Err(DaemonError::Shutdown);
            }
            let (index, eps) = self.endpoint();
            let (ep, count) = (&eps[index], eps.len());
            let client = if ep.caps.chunked() { &self.fresh } else { &self.client };
            let mut req = make(client, ep);
            if let Some(h) = self.auth_header(ep) {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            let started = Instant::now();
            let trouble = match req.send().await {
                Err(e) if e.is_timeout() => Transient::Timeout,
                Err(e) => Transient::Connect(error_chain(&e.without_url())),
                Ok(resp) => match self.classify(ep, resp, want_json).await {
                    Ok(answer) => {
                        m.seconds.observe(started.elapsed().as_secs_f64());
                        return Ok(Answer { index, ..answer });
                    }
                    Err(trouble) => trouble,
                },
            };
            m.error(trouble.kind());
            let cookie = ep.url.auth.is_none().then_some(&self.cookie_file);
            self.log_trouble(&trouble.advice(&ep.url.redacted(), cookie));
            failures_in_row += 1;
            let warming = matches!(trouble, Transient::Warmup(_));
            if count > 1 && !warming {
                let next = (index + 1) % count;
                if self.current.compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    self.metrics.daemon_failovers.inc();
                    self.metrics.daemon_url_index.set(next as i64);
                    tracing::warn!("failing over to daemon {}", eps[next].url.redacted());
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

    async fn post_json(&self, method: &str, body: &Value) -> Result<(usize, Value), DaemonError> {
        let answer = self
            .send(
                method,
                |c, ep| {
                    c.post(&ep.url.base)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string())
                },
                true,
            )
            .await?;
        let Body::Json(v) = answer.body else { unreachable!("asked for JSON") };
        Ok((answer.index, v))
    }

    /// One JSON-RPC call. A method the daemon once answered "Method not found" is not asked
    /// again: the caller's fallback is taken at once.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, DaemonError> {
        self.call_at(method, params).await.1
    }

    /// `call`, also saying which daemon (index into DAEMON_URL) answered, so what the answer
    /// teaches about that daemon can be remembered for it (`learn`).
    pub async fn call_at(&self, method: &str, params: Value) -> (usize, Result<Value, DaemonError>) {
        let (index, eps) = self.endpoint();
        if eps[index].caps.lacks(method) {
            return (index, Err(DaemonError::MethodNotFound(method.to_string())));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let (index, reply) = match self.post_json(method, &body).await {
            Ok(answer) => answer,
            Err(e) => return (index, Err(e)),
        };
        let result = parse_reply(method, &reply);
        if matches!(result, Err(DaemonError::Rpc { .. })) {
            self.call_metrics(method).error("rpc");
        }
        if matches!(result, Err(DaemonError::MethodNotFound(_))) {
            let eps = self.endpoints.read().expect("lock").clone();
            let Some(ep) = eps.get(index) else { return (index, result) };
            if ep.caps.note_missing(method) {
                tracing::info!(
                    "the daemon at {} has no RPC method {method}: {}",
                    ep.url.redacted(),
                    method_fallback(method)
                );
            }
        }
        (index, result)
    }

    /// What is known of `feature` on the daemon in use: `None` until learned.
    pub fn supports(&self, feature: Feature) -> Option<bool> {
        let (i, eps) = self.endpoint();
        eps[i].caps.feature(feature)
    }

    /// Remembers what daemon `index` (from `call_at`) showed about `feature`; the first time a
    /// daemon turns out to lack it, logs what ferrum does instead.
    pub fn learn(&self, index: usize, feature: Feature, has: bool) {
        let eps = self.endpoints.read().expect("lock").clone();
        let Some(ep) = eps.get(index) else { return };
        if ep.caps.learn(feature, has) {
            tracing::info!("the daemon at {} lacks {}: {}", ep.url.redacted(), feature.name(), feature.fallback());
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
        let items = match self.post_json(method, &Value::Array(body)).await?.1 {
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
            .and_then(parse_hex_rev32)
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
                Ok(v) => {
                    out.push(v.as_str().and_then(parse_hex_rev32).ok_or_else(|| bad_field("getblockhash", "result"))?)
                }
                Err(DaemonError::Rpc { code: -8, .. }) => break, // past the daemon's tip
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A block's serialized bytes: from REST when the daemon serves it, else `getblock <hash> 0`.
    pub async fn raw_block(&self, hash: &[u8; 32]) -> Result<Vec<u8>, DaemonError> {
        let hex_hash = hex_rev(hash);
        if self.use_rest && self.rest_available().await {
            // The URL comes from whichever endpoint `send` uses, so failover applies here too.
            let answer = self
                .send("rest_block", |c, ep| c.get(format!("{}rest/block/{hex_hash}.bin", ep.url.base)), false)
                .await?;
            if let (true, Body::Bytes(b)) = (answer.status.is_success(), answer.body) {
                return Ok(b);
            }
            // Fall through to JSON-RPC, which gives a proper error for an unknown block.
        }
        let v = self.call("getblock", json!([hex_hash, 0])).await?;
        let s = v.as_str().ok_or_else(|| bad_field("getblock", "result"))?;
        hex::decode(s).map_err(|_| bad_field("getblock", "hex"))
    }

    /// The outputs a block spends, as Bitcoin Core's REST `/rest/spenttxouts/<hash>.bin` serves
    /// them (`block::parse_spent_outputs`); `None` where the daemon does not (no REST, an older
    /// node, a pruned block's undo data), learned once per daemon from its first answer.
    pub async fn spent_outputs(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, DaemonError> {
        if !self.use_spent_outputs || !self.rest_available().await {
            return Ok(None);
        }
        let (i, eps) = self.endpoint();
        if eps[i].spent_outputs.get() == Some(&false) {
            return Ok(None);
        }
        let hex_hash = hex_rev(hash);
        let answer = self
            .send("rest_spenttxouts", |c, ep| c.get(format!("{}rest/spenttxouts/{hex_hash}.bin", ep.url.base)), false)
            .await?;
        // The admin `daemon_url` may have replaced the list meanwhile: then nothing is learned.
        let eps = self.endpoint().1;
        let learn = |served: bool| eps.get(answer.index).filter(|ep| ep.spent_outputs.set(served).is_ok());
        // Only "no such path" means the daemon lacks it; a warming-up node (503) is asked again.
        let missing = [reqwest::StatusCode::NOT_FOUND, reqwest::StatusCode::BAD_REQUEST].contains(&answer.status);
        match (answer.status.is_success(), answer.body) {
            (true, Body::Bytes(b)) => {
                if let Some(ep) = learn(true) {
                    tracing::info!(
                        "daemon {} serves the outputs each block spends (/rest/spenttxouts): spends are found by \
                         script hash",
                        ep.url.redacted()
                    );
                }
                Ok(Some(b))
            }
            _ if missing => {
                if let Some(ep) = learn(false) {
                    tracing::info!(
                        "daemon {} does not serve /rest/spenttxouts (HTTP {}; Bitcoin Core 30 and later do): spends \
                         are found by txid",
                        ep.url.redacted(),
                        answer.status.as_u16()
                    );
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Whether the daemon in use serves REST, probed once per daemon.
    async fn rest_available(&self) -> bool {
        let (i, eps) = self.endpoint();
        let ep = &eps[i];
        *ep.rest
            .get_or_init(|| async {
                let url = format!("{}rest/chaininfo.json", ep.url.base);
                let r = match self.client.get(&url).timeout(Duration::from_secs(10)).send().await {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
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
            .await
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

pub fn bad_field(method: &str, field: &str) -> DaemonError {
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
