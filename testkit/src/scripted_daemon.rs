//! A scripted stand-in for bitcoind: a minimal HTTP/1.1 server speaking bitcoind's JSON-RPC
//! (single calls and batches, Basic auth) and REST block interface, serving a chain that the test
//! can swap at any moment, with knobs for failure modes (warm-up, dying mid-sync, disabled
//! methods, REST off).
//!
//! It runs on its own tokio runtime so synchronous `#[test]` functions can drive it through the
//! `&self` control API. Request parsing never panics on client input: malformed requests get the
//! HTTP / JSON-RPC error bitcoind would send.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use bitcoin::consensus::encode::serialize;
use bitcoin::{Block, BlockHash, Txid};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest request head / body accepted (bitcoind's own limits are of the same order).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 32 * 1024 * 1024;

// bitcoind's RPC error codes.
const RPC_MISC_ERROR: i64 = -1;
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_INVALID_PARAMETER: i64 = -8;
const RPC_IN_WARMUP: i64 = -28;
const RPC_INVALID_REQUEST: i64 = -32600;
const RPC_METHOD_NOT_FOUND: i64 = -32601;
const RPC_PARSE_ERROR: i64 = -32700;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub user: String,
    pub password: String,
    /// Whether the REST interface (`-rest`) is enabled.
    pub rest: bool,
    /// Whether REST serves `/rest/spenttxouts` (Bitcoin Core 30 and later). Each answer scans
    /// the whole chain for the spent outputs: for small chains only.
    pub spent_outputs: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions { user: "user".into(), password: "pass".into(), rest: true, spent_outputs: false }
    }
}

/// One block as served, with its hash and serialization precomputed.
struct Entry {
    block: Block,
    raw: Vec<u8>,
    hash: BlockHash,
    height: usize,
}

/// The served chain plus every block served before a reorg: like bitcoind, the daemon keeps
/// answering `getblock` / `getblockheader` / REST for stale blocks (with confirmations -1), so a
/// client racing a reorg sees what it would see with a real node.
struct ChainData {
    main: Vec<Arc<Entry>>,
    known: HashMap<BlockHash, Arc<Entry>>,
}

impl ChainData {
    fn new(blocks: Vec<Block>, previous: Option<&ChainData>) -> ChainData {
        assert!(!blocks.is_empty(), "a chain has at least a genesis block");
        let mut known = previous.map(|p| p.known.clone()).unwrap_or_default();
        let main: Vec<Arc<Entry>> = blocks
            .into_iter()
            .enumerate()
            .map(|(height, block)| {
                let hash = block.block_hash();
                // Blocks kept from the previous chain are not serialized again.
                match known.get(&hash) {
                    Some(e) if e.height == height => e.clone(),
                    _ => Arc::new(Entry { raw: serialize(&block), block, hash, height }),
                }
            })
            .collect();
        for e in &main {
            known.insert(e.hash, e.clone());
        }
        ChainData { main, known }
    }

    fn tip_height(&self) -> usize {
        self.main.len() - 1
    }

    /// This chain plus `block` on top (as `submitblock` does), sharing every existing entry.
    fn with_block(&self, block: Block) -> ChainData {
        let e = Arc::new(Entry { raw: serialize(&block), hash: block.block_hash(), height: self.main.len(), block });
        let mut main = self.main.clone();
        main.push(e.clone());
        let mut known = self.known.clone();
        known.insert(e.hash, e);
        ChainData { main, known }
    }

    fn tip(&self) -> &Entry {
        &self.main[self.tip_height()]
    }

    fn find(&self, hash: &BlockHash) -> Option<&Arc<Entry>> {
        self.known.get(hash)
    }

    /// `/rest/spenttxouts/<hash>.bin` for `block`, as Bitcoin Core serializes it: per
    /// transaction (the coinbase's list empty) the outputs its inputs spend. Looked up among every
    /// block this daemon knows, so only for small chains.
    fn spent_outputs(&self, block: &Block) -> Vec<u8> {
        use bitcoin::consensus::Encodable;
        let txs: HashMap<Txid, &bitcoin::Transaction> =
            self.known.values().flat_map(|e| &e.block.txdata).map(|tx| (tx.compute_txid(), tx)).collect();
        let mut out = Vec::new();
        bitcoin::VarInt(block.txdata.len() as u64).consensus_encode(&mut out).expect("to a vector");
        for (i, tx) in block.txdata.iter().enumerate() {
            let inputs = if i == 0 { &[][..] } else { &tx.input[..] };
            bitcoin::VarInt(inputs.len() as u64).consensus_encode(&mut out).expect("to a vector");
            for input in inputs {
                let prev = input.previous_output;
                txs[&prev.txid].output[prev.vout as usize].consensus_encode(&mut out).expect("to a vector");
            }
        }
        out
    }

    fn is_active(&self, e: &Entry) -> bool {
        self.main.get(e.height).is_some_and(|m| m.hash == e.hash)
    }

    fn median_time(&self, e: &Entry) -> u32 {
        if !self.is_active(e) {
            return e.block.header.time;
        }
        let from = e.height.saturating_sub(10);
        let mut times: Vec<u32> = self.main[from..=e.height].iter().map(|m| m.block.header.time).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Regtest blocks each carry 2 units of work.
    fn chainwork(height: usize) -> String {
        format!("{:064x}", (height as u128 + 1) * 2)
    }

    fn confirmations(&self, e: &Entry) -> i64 {
        if self.is_active(e) {
            (self.tip_height() - e.height + 1) as i64
        } else {
            -1
        }
    }

    fn header_json(&self, e: &Entry) -> Value {
        let h = &e.block.header;
        let mut v = json!({
            "hash": e.hash.to_string(),
            "confirmations": self.confirmations(e),
            "height": e.height,
            "version": h.version.to_consensus(),
            "versionHex": format!("{:08x}", h.version.to_consensus()),
            "merkleroot": h.merkle_root.to_string(),
            "time": h.time,
            "mediantime": self.median_time(e),
            "nonce": h.nonce,
            "bits": format!("{:08x}", h.bits.to_consensus()),
            "difficulty": 4.656542373906925e-10,
            "chainwork": Self::chainwork(e.height),
            "nTx": e.block.txdata.len(),
        });
        if e.height > 0 {
            v["previousblockhash"] = json!(h.prev_blockhash.to_string());
        }
        if self.is_active(e) && e.height < self.tip_height() {
            v["nextblockhash"] = json!(self.main[e.height + 1].hash.to_string());
        }
        v
    }

    fn chain_info(&self) -> Value {
        let tip = self.tip();
        json!({
            "chain": "regtest",
            "blocks": tip.height,
            "headers": tip.height,
            "bestblockhash": tip.hash.to_string(),
            "difficulty": 4.656542373906925e-10,
            "time": tip.block.header.time,
            "mediantime": self.median_time(tip),
            "verificationprogress": 1.0,
            "initialblockdownload": false,
            "chainwork": Self::chainwork(tip.height),
            "size_on_disk": self.known.values().map(|e| e.raw.len()).sum::<usize>(),
            "pruned": false,
            "warnings": "",
        })
    }
}

struct State {
    chain: Arc<ChainData>,
    rest: bool,
    spent_outputs: bool,
    /// `/rest/spenttxouts` requests still to be answered 503, as a node warming up does.
    spent_outputs_warmup: u64,
    /// RPC calls still to be answered with -28.
    warmup: u64,
    disabled: HashSet<String>,
    /// Blocks still to serve before dying (`None`: never die).
    die_budget: Option<u64>,
    alive: bool,
    /// Added before every response, to slow a sync down enough to interrupt it.
    delay: Duration,
    /// The mempool, in arrival order.
    mempool: Vec<(Txid, bitcoin::Transaction)>,
    /// When set, sendrawtransaction fails with this (code, message).
    reject: Option<(i64, String)>,
    /// What estimatesmartfee answers (BTC/kvB); `None`: "insufficient data".
    fee_estimate: Option<f64>,
    /// Whether getrawtransaction takes a block hash (Bitcoin Core) or answers such a call with
    /// its help text (the Bitcoin SV node).
    tx_blockhash_arg: bool,
    /// Whether getrawtransaction finds confirmed transactions by txid alone (-txindex=1).
    txindex: bool,
    /// What getzmqnotifications lists ((type, address)); empty: the call does not exist, as on
    /// a node built without ZMQ.
    zmq: Vec<(String, String)>,
}

struct Shared {
    state: Mutex<State>,
    /// The exact `Authorization` header value expected.
    auth: String,
    getblock_calls: AtomicU64,
    rest_block_calls: AtomicU64,
    /// `/rest/spenttxouts` requests, whatever the answer.
    spent_outputs_calls: AtomicU64,
    rpc_calls: AtomicU64,
    /// Calls per method ("getrawtransaction/3": with that many positional parameters too).
    method_calls: Mutex<HashMap<String, u64>>,
    open_conns: AtomicUsize,
    /// Serializes delayed responses (see `set_response_delay`).
    slow_lane: tokio::sync::Mutex<()>,
    /// Bumped on every death; the listener and connections of an older generation close.
    generation: watch::Sender<u64>,
    /// The served tip's height, for `waitforblockheight` long polls.
    tip_height: watch::Sender<usize>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the daemon for the other tests' assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Closes the listener and every open connection (asynchronously).
    fn die(&self) {
        self.state().alive = false;
        self.generation.send_modify(|g| *g += 1);
    }
}

pub struct ScriptedDaemon {
    shared: Arc<Shared>,
    rt: Option<Runtime>,
    port: u16,
    user: String,
    password: String,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl ScriptedDaemon {
    pub fn start(chain_blocks: Vec<Block>, opts: DaemonOptions) -> ScriptedDaemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scripted-daemon")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let credentials = format!("{}:{}", opts.user, opts.password);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                chain: Arc::new(ChainData::new(chain_blocks, None)),
                rest: opts.rest,
                spent_outputs: opts.spent_outputs,
                spent_outputs_warmup: 0,
                warmup: 0,
                disabled: HashSet::new(),
                die_budget: None,
                alive: true,
                delay: Duration::ZERO,
                mempool: Vec::new(),
                reject: None,
                fee_estimate: None,
                tx_blockhash_arg: true,
                txindex: false,
                zmq: Vec::new(),
            }),
            auth: format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)),
            getblock_calls: AtomicU64::new(0),
            rest_block_calls: AtomicU64::new(0),
            spent_outputs_calls: AtomicU64::new(0),
            rpc_calls: AtomicU64::new(0),
            method_calls: Mutex::default(),
            open_conns: AtomicUsize::new(0),
            slow_lane: tokio::sync::Mutex::new(()),
            generation: watch::channel(0).0,
            tip_height: watch::channel(0).0,
        });
        shared.tip_height.send_replace(shared.state().chain.tip_height());
        let listener = rt.block_on(bind(0)).expect("bind scripted daemon");
        let port = listener.local_addr().expect("local addr").port();
        let task = rt.spawn(accept_loop(listener, shared.clone(), 0));
        ScriptedDaemon {
            shared,
            rt: Some(rt),
            port,
            user: opts.user,
            password: opts.password,
            accept_task: Mutex::new(Some(task)),
        }
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime lives until drop")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://user:pass@127.0.0.1:PORT/`, as ferrum's DAEMON_URL expects.
    pub fn url(&self) -> String {
        format!("http://{}:{}@127.0.0.1:{}/", self.user, self.password, self.port)
    }

    /// Replaces the served chain (a new tip or a reorg, as the test likes).
    pub fn set_chain(&self, blocks: Vec<Block>) {
        let previous = self.shared.state().chain.clone();
        let data = Arc::new(ChainData::new(blocks, Some(&previous)));
        let height = data.tip_height();
        self.shared.state().chain = data;
        self.shared.tip_height.send_replace(height);
    }

    /// Replaces the mempool.
    pub fn set_mempool(&self, txs: Vec<bitcoin::Transaction>) {
        self.shared.state().mempool = txs.into_iter().map(|t| (t.compute_txid(), t)).collect();
    }

    pub fn mempool(&self) -> Vec<bitcoin::Transaction> {
        self.shared.state().mempool.iter().map(|(_, t)| t.clone()).collect()
    }

    /// Makes sendrawtransaction / submitpackage fail with this bitcoind error (or succeed again).
    pub fn set_reject(&self, reject: Option<(i64, &str)>) {
        self.shared.state().reject = reject.map(|(c, m)| (c, m.to_string()));
    }

    pub fn set_fee_estimate(&self, fee: Option<f64>) {
        self.shared.state().fee_estimate = fee;
    }

    pub fn tip_height(&self) -> u64 {
        self.shared.state().chain.tip_height() as u64
    }

    /// Makes getzmqnotifications list `(type, address)` pairs (e.g. ("pubhashblock",
    /// "tcp://127.0.0.1:28332")); the test publishes there itself.
    pub fn set_zmq(&self, notifications: &[(&str, &str)]) {
        self.shared.state().zmq = notifications.iter().map(|(t, a)| (t.to_string(), a.to_string())).collect();
    }

    pub fn set_rest(&self, enabled: bool) {
        self.shared.state().rest = enabled;
    }

    /// The next `n` JSON-RPC calls (batch items count one each) fail with -28, like a bitcoind
    /// that is still loading its block index. REST is not affected.
    pub fn set_warmup(&self, n: u64) {
        self.shared.state().warmup = n;
    }

    pub fn warmup_left(&self) -> u64 {
        self.shared.state().warmup
    }

    /// Makes `name` answer -32601 "Method not found".
    pub fn disable_method(&self, name: &str) {
        self.shared.state().disabled.insert(name.to_string());
    }

    /// Delays every HTTP response by `delay`, one request at a time whatever the number of
    /// connections: a slow node, so tests can interrupt work in the middle.
    pub fn set_response_delay(&self, delay: Duration) {
        self.shared.state().delay = delay;
    }

    pub fn enable_method(&self, name: &str) {
        self.shared.state().disabled.remove(name);
    }

    /// After serving `n` more blocks (RPC `getblock` of any verbosity, or REST), the daemon dies:
    /// the response carrying the n-th block is sent, then listener and connections close. A
    /// request (e.g. a batch) that would need more than the remaining budget gets no answer.
    pub fn die_after_getblocks(&self, n: u64) {
        self.shared.state().die_budget = Some(n);
    }

    /// Dies now and waits until the port refuses connections and open connections are closed.
    pub fn kill(&self) {
        self.shared.die();
        self.reap();
    }

    /// Waits for a death (requested or scheduled) to have taken effect.
    fn reap(&self) {
        let task = self.accept_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = self.rt().block_on(task);
        }
        let start = Instant::now();
        while self.shared.open_conns.load(Ordering::SeqCst) > 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn is_alive(&self) -> bool {
        self.shared.state().alive
    }

    /// Listens again on the same port (after `kill` or a scheduled death); clears `die_after`.
    pub fn revive(&self) {
        if self.is_alive() {
            return;
        }
        self.reap();
        let listener = self.rt().block_on(async {
            // The old socket may linger briefly; retry instead of failing the test on a race.
            let mut last_err = None;
            for _ in 0..100 {
                match bind(self.port).await {
                    Ok(l) => return l,
                    Err(e) => last_err = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("cannot rebind port {}: {last_err:?}", self.port);
        });
        let generation = self.shared.generation();
        {
            let mut st = self.shared.state();
            st.alive = true;
            st.die_budget = None;
        }
        let task = self.rt().spawn(accept_loop(listener, self.shared.clone(), generation));
        *self.accept_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Successful `getblock` RPC calls served so far.
    pub fn getblock_calls(&self) -> u64 {
        self.shared.getblock_calls.load(Ordering::SeqCst)
    }

    /// Successful `/rest/block/` requests served so far.
    pub fn rest_block_calls(&self) -> u64 {
        self.shared.rest_block_calls.load(Ordering::SeqCst)
    }

    /// `/rest/spenttxouts` requests so far (served, warming up or not found).
    pub fn spent_outputs_calls(&self) -> u64 {
        self.shared.spent_outputs_calls.load(Ordering::SeqCst)
    }

    /// Answers the next `n` `/rest/spenttxouts` requests with 503, as a node still loading does.
    pub fn set_spent_outputs_warmup(&self, n: u64) {
        self.shared.state().spent_outputs_warmup = n;
    }

    /// JSON-RPC calls received so far (batch items count one each), including failed ones.
    pub fn rpc_calls(&self) -> u64 {
        self.shared.rpc_calls.load(Ordering::SeqCst)
    }

    /// Calls of `method` so far (or of "method/N", with N positional parameters).
    pub fn calls_of(&self, method: &str) -> u64 {
        self.shared.method_calls.lock().unwrap_or_else(|e| e.into_inner()).get(method).copied().unwrap_or(0)
    }

    /// Makes getrawtransaction refuse a block hash argument, as the Bitcoin SV node does.
    pub fn set_tx_blockhash_arg(&self, taken: bool) {
        self.shared.state().tx_blockhash_arg = taken;
    }

    /// Makes getrawtransaction find confirmed transactions by txid alone (-txindex=1).
    pub fn set_txindex(&self, on: bool) {
        self.shared.state().txindex = on;
    }

    /// Blocks served by either interface.
    pub fn blocks_served(&self) -> u64 {
        self.getblock_calls() + self.rest_block_calls()
    }
}

impl Drop for ScriptedDaemon {
    fn drop(&mut self) {
        self.shared.die();
        if let Some(rt) = self.rt.take() {
            // Safe even when dropped from inside another runtime.
            rt.shutdown_background();
        }
    }
}

/// Binds 127.0.0.1:`port` with SO_REUSEADDR so `revive` can reuse the port right away.
async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(128)
}

/// Resolves once the daemon's generation differs from `generation` (i.e. it died).
async fn killed(rx: &mut watch::Receiver<u64>, generation: u64) {
    loop {
        if *rx.borrow_and_update() != generation {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, generation: u64) {
    let mut rx = shared.generation.subscribe();
    loop {
        tokio::select! {
            _ = killed(&mut rx, generation) => return, // drops (closes) the listener
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                let mut conn_rx = shared.generation.subscribe();
                shared.open_conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = killed(&mut conn_rx, generation) => {}
                        _ = serve_conn(stream, &shared, generation) => {}
                    }
                    shared.open_conns.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, extra_headers: Vec::new(), body: body.into() }
    }

    fn json(status: u16, v: &Value) -> Response {
        let mut body = v.to_string().into_bytes();
        body.push(b'\n'); // bitcoind terminates JSON bodies with a newline
        Response::new(status, "application/json", body)
    }

    fn text(status: u16, s: &str) -> Response {
        Response::new(status, "text/plain", format!("{s}\r\n"))
    }

    fn empty(status: u16) -> Response {
        Response::new(status, "text/html; charset=ISO-8859-1", Vec::new())
    }
}

/// What handling a request amounts to.
enum Outcome {
    Reply {
        resp: Response,
        die_after: bool,
    },
    /// The daemon dies before answering (a block was requested with the death budget spent).
    Die,
}

/// Serves one keep-alive connection until the client closes it or sends garbage.
async fn serve_conn(mut stream: TcpStream, shared: &Shared, generation: u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // A death (e.g. scheduled by another connection) must stop pipelined requests too.
        if shared.generation() != generation {
            return;
        }
        let req = match read_request(&mut stream, &mut buf).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(resp) => {
                let _ = write_response(&mut stream, &resp, false).await;
                return;
            }
        };
        let delay = shared.state().delay;
        if !delay.is_zero() {
            let _one_at_a_time = shared.slow_lane.lock().await;
            tokio::time::sleep(delay).await;
        }
        long_poll(shared, &req).await;
        match handle(shared, &req) {
            Outcome::Reply { resp, die_after } => {
                let keep = req.keep_alive && !die_after;
                let written = write_response(&mut stream, &resp, keep).await;
                if die_after {
                    let _ = stream.shutdown().await;
                    shared.die();
                    return;
                }
                if written.is_err() || !keep {
                    return;
                }
            }
            Outcome::Die => {
                shared.die();
                return;
            }
        }
    }
}

/// `waitforblockheight height timeout_ms` (a single call) waits here, without holding the
/// runtime, until the tip reaches `height` or the timeout passes; `handle` then answers with
/// the tip, as bitcoind does.
async fn long_poll(shared: &Shared, req: &Request) {
    // Every request passes here: only a body naming the method is worth parsing twice.
    if !req.body.windows(18).any(|w| w == b"waitforblockheight") {
        return;
    }
    let Ok(call) = serde_json::from_slice::<Value>(&req.body) else { return };
    if call.get("method").and_then(Value::as_str) != Some("waitforblockheight") {
        return;
    }
    let Some(target) = param(call.get("params").unwrap_or(&Value::Null), 0, "height").and_then(Value::as_u64) else {
        return;
    };
    let timeout_ms =
        param(call.get("params").unwrap_or(&Value::Null), 1, "timeout").and_then(Value::as_u64).unwrap_or(0);
    let mut rx = shared.tip_height.subscribe();
    let wait = rx.wait_for(|h| *h as u64 >= target);
    if timeout_ms == 0 {
        let _ = wait.await;
    } else {
        let _ = tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await;
    }
}

/// Reads one request. `Ok(None)`: the connection ended cleanly; `Err`: answer and close.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>, Response> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::text(431, "Request header too large"));
        }
        if !read_more(stream, buf).await {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Response::text(400, "Bad request line"));
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(Response::text(400, "Bad header"));
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req =
        Request { method: method.to_string(), path: path.to_string(), headers, body: Vec::new(), keep_alive: true };
    let connection = req.header("connection").map(str::to_ascii_lowercase);
    req.keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version != "HTTP/1.0",
    };
    if req.header("transfer-encoding").is_some() {
        // bitcoind's libevent accepts chunked bodies, but no client of ours sends them.
        return Err(Response::text(411, "Chunked request bodies are not supported"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            _ => return Err(Response::text(400, "Bad Content-Length")),
        },
    };
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        if !read_more(stream, buf).await {
            return Ok(None);
        }
    }
    req.body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Ok(Some(req))
}

/// Appends what the socket has; false on EOF or error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn write_response(stream: &mut TcpStream, resp: &Response, keep_alive: bool) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (k, v) in &resp.extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    stream.write_all(&out).await?;
    stream.flush().await
}

fn handle(shared: &Shared, req: &Request) -> Outcome {
    let path = req.path.split('?').next().unwrap_or_default();
    if path.starts_with("/rest/") {
        return handle_rest(shared, req, path);
    }
    if req.method != "POST" {
        let resp = Response::text(405, "JSONRPC server handles only POST requests");
        return Outcome::Reply { resp, die_after: false };
    }
    if req.header("authorization") != Some(shared.auth.as_str()) {
        // bitcoind answers a bad login with 401, a challenge and no body.
        let mut resp = Response::empty(401);
        resp.extra_headers.push(("WWW-Authenticate", "Basic realm=\"jsonrpc\"".to_string()));
        return Outcome::Reply { resp, die_after: false };
    }
    let mut ctx = CallCtx::default();
    let parsed: Result<Value, _> = serde_json::from_slice(&req.body);
    let resp = match parsed {
        Err(_) => {
            let err = rpc_error_obj(RPC_PARSE_ERROR, "Parse error", Value::Null);
            Response::json(500, &err)
        }
        Ok(Value::Array(items)) => {
            // Batches are answered 200 with per-item errors.
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                match call_to_json(shared, item, &mut ctx) {
                    Some((v, _)) => out.push(v),
                    None => return Outcome::Die,
                }
            }
            Response::json(200, &Value::Array(out))
        }
        Ok(single @ Value::Object(_)) => match call_to_json(shared, &single, &mut ctx) {
            Some((v, code)) => {
                let status = match code {
                    None => 200,
                    Some(RPC_METHOD_NOT_FOUND) => 404,
                    Some(RPC_INVALID_REQUEST) => 400,
                    Some(_) => 500,
                };
                Response::json(status, &v)
            }
            None => return Outcome::Die,
        },
        Ok(_) => {
            let err = rpc_error_obj(RPC_PARSE_ERROR, "Top-level object parse error", Value::Null);
            Response::json(500, &err)
        }
    };
    // Only blocks in a response that is actually sent count as served.
    shared.getblock_calls.fetch_add(ctx.blocks, Ordering::SeqCst);
    Outcome::Reply { resp, die_after: ctx.die_after }
}

#[derive(Default)]
struct CallCtx {
    /// A block consumed the last of the death budget: die once the response is out.
    die_after: bool,
    /// Blocks served by `getblock` in this request.
    blocks: u64,
}

fn rpc_error_obj(code: i64, message: &str, id: Value) -> Value {
    json!({"result": null, "error": {"code": code, "message": message}, "id": id})
}

/// Answers one JSON-RPC request object: `(response object, error code if any)`, or `None` if the
/// daemon must die instead of answering.
fn call_to_json(shared: &Shared, item: &Value, ctx: &mut CallCtx) -> Option<(Value, Option<i64>)> {
    let id = item.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = item.get("method").and_then(Value::as_str) else {
        let code = RPC_INVALID_REQUEST;
        return Some((rpc_error_obj(code, "Missing method", id), Some(code)));
    };
    let params = item.get("params").cloned().unwrap_or(Value::Null);
    shared.rpc_calls.fetch_add(1, Ordering::SeqCst);
    {
        let mut calls = shared.method_calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(method.to_string()).or_default() += 1;
        if let Some(n) = params.as_array().map(Vec::len) {
            *calls.entry(format!("{method}/{n}")).or_default() += 1;
        }
    }
    match call(shared, method, &params, ctx) {
        Ok(result) => Some((json!({"result": result, "error": null, "id": id}), None)),
        Err(RpcError::Die) => None,
        Err(RpcError::Rpc(code, message)) => Some((rpc_error_obj(code, &message, id), Some(code))),
    }
}

enum RpcError {
    Rpc(i64, String),
    Die,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError::Rpc(code, message.into())
}

/// Positional (array) or named (object) parameter; JSON null counts as absent.
fn param<'a>(params: &'a Value, idx: usize, name: &str) -> Option<&'a Value> {
    let v = match params {
        Value::Array(a) => a.get(idx),
        Value::Object(o) => o.get(name),
        _ => None,
    };
    v.filter(|v| !v.is_null())
}

fn parse_hex256(v: Option<&Value>, name: &str) -> Result<String, RpcError> {
    let Some(v) = v else {
        return Err(err(RPC_MISC_ERROR, format!("missing required parameter {name}")));
    };
    let Some(s) = v.as_str() else {
        return Err(err(-3, format!("JSON value of type {} is not of expected type string", type_name(v))));
    };
    if s.len() != 64 {
        return Err(err(RPC_INVALID_PARAMETER, format!("{name} must be of length 64 (not {}, for '{s}')", s.len())));
    }
    if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(err(RPC_INVALID_PARAMETER, format!("{name} must be hexadecimal string (not '{s}')")));
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_hex_str(v: Option<&Value>) -> Result<String, RpcError> {
    v.and_then(Value::as_str).map(str::to_string).ok_or_else(|| err(-3, "hexstring must be a string"))
}

fn parse_block_hash(v: Option<&Value>) -> Result<BlockHash, RpcError> {
    let s = parse_hex256(v, "blockhash")?;
    BlockHash::from_str(&s).map_err(|e| err(RPC_INVALID_PARAMETER, e.to_string()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A verbosity given as bool or integer (bitcoind accepts both for getblock/getrawtransaction).
fn parse_verbosity(v: Option<&Value>, default: i64) -> Result<i64, RpcError> {
    match v {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(i64::from(*b)),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| err(-3, "verbosity must be an integer")),
        Some(other) => Err(err(-3, format!("JSON value of type {} is not of expected type number", type_name(other)))),
    }
}

fn lookup<'a>(chain: &'a ChainData, hash: &BlockHash) -> Result<&'a Arc<Entry>, RpcError> {
    chain.find(hash).ok_or_else(|| err(RPC_INVALID_ADDRESS_OR_KEY, "Block not found"))
}

/// Spends one unit of the death budget for a block about to be served.
fn take_block_budget(shared: &Shared, ctx: &mut CallCtx) -> Result<(), RpcError> {
    let mut st = shared.state();
    match st.die_budget {
        None => Ok(()),
        Some(0) => Err(RpcError::Die),
        Some(n) => {
            st.die_budget = Some(n - 1);
            if n == 1 {
                ctx.die_after = true;
            }
            Ok(())
        }
    }
}

/// `decoderawtransaction`'s fields (those the tests look at).
fn decoded_json(tx: &bitcoin::Transaction) -> Value {
    json!({
        "txid": tx.compute_txid().to_string(),
        "hash": tx.compute_wtxid().to_string(),
        "version": tx.version.0,
        "size": tx.total_size(),
        "vsize": tx.vsize(),
        "weight": tx.weight().to_wu(),
        "locktime": tx.lock_time.to_consensus_u32(),
    })
}

fn tx_json(chain: &ChainData, e: &Entry, pos: usize) -> Value {
    let tx = &e.block.txdata[pos];
    let mut v = decoded_json(tx);
    v["hex"] = json!(hex::encode(serialize(tx)));
    v["blockhash"] = json!(e.hash.to_string());
    v["confirmations"] = json!(chain.confirmations(e));
    v["in_active_chain"] = json!(chain.is_active(e));
    v["time"] = json!(e.block.header.time);
    v["blocktime"] = json!(e.block.header.time);
    v
}

fn call(shared: &Shared, method: &str, params: &Value, ctx: &mut CallCtx) -> Result<Value, RpcError> {
    let chain = {
        let mut st = shared.state();
        if st.warmup > 0 {
            st.warmup -= 1;
            return Err(err(RPC_IN_WARMUP, "Loading block index..."));
        }
        if st.disabled.contains(method) {
            return Err(err(RPC_METHOD_NOT_FOUND, "Method not found"));
        }
        st.chain.clone()
    };
    let tip = chain.tip_height();
    match method {
        "getblockchaininfo" => Ok(chain.chain_info()),
        "getnetworkinfo" => Ok(json!({
            "version": 310000,
            "subversion": "/Satoshi:31.0.0/",
            "protocolversion": 70016,
            "localservices": "0000000000000c09",
            "networkactive": true,
            "connections": 0,
            "relayfee": 0.00001,
            "incrementalfee": 0.00001,
            "warnings": "",
        })),
        "getblockcount" => Ok(json!(tip)),
        "getzmqnotifications" if !shared.state().zmq.is_empty() => {
            let list: Vec<Value> =
                shared.state().zmq.iter().map(|(t, a)| json!({"type": t, "address": a, "hwm": 1000})).collect();
            Ok(Value::Array(list))
        }
        // ElectrumX 2 starts only against a node reporting these indexes (it asks the node for
        // outpoint spenders); the scripted daemon answers from its chain, as if it had them.
        "getindexinfo" => {
            let synced = json!({"synced": true, "best_block_height": tip});
            Ok(json!({"txindex": synced, "txospenderindex": synced}))
        }
        "waitforblockheight" => Ok(json!({"hash": chain.tip().hash.to_string(), "height": tip})),
        "submitblock" => {
            let block: Block = hex::decode(parse_hex_str(param(params, 0, "hexdata"))?)
                .ok()
                .and_then(|b| bitcoin::consensus::deserialize(&b).ok())
                .ok_or_else(|| err(-22, "Block decode failed"))?;
            let mut st = shared.state();
            if block.header.prev_blockhash != st.chain.tip().hash {
                // bitcoind keeps such a block as a side branch; this stand-in only extends the tip.
                return Ok(json!("inconclusive"));
            }
            let confirmed: HashSet<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
            st.mempool.retain(|(id, _)| !confirmed.contains(id));
            let data = Arc::new(st.chain.with_block(block));
            let height = data.tip_height();
            st.chain = data;
            drop(st);
            shared.tip_height.send_replace(height);
            Ok(Value::Null)
        }
        "getbestblockhash" => Ok(json!(chain.tip().hash.to_string())),
        "getblockhash" => {
            let h =
                param(params, 0, "height").ok_or_else(|| err(RPC_MISC_ERROR, "missing required parameter height"))?;
            let h = h.as_i64().ok_or_else(|| err(-3, "height must be an integer"))?;
            if h < 0 || h as usize > tip {
                return Err(err(RPC_INVALID_PARAMETER, "Block height out of range"));
            }
            Ok(json!(chain.main[h as usize].hash.to_string()))
        }
        "getblockheader" => {
            let e = lookup(&chain, &parse_block_hash(param(params, 0, "blockhash"))?)?;
            if parse_verbosity(param(params, 1, "verbose"), 1)? != 0 {
                Ok(chain.header_json(e))
            } else {
                Ok(json!(hex::encode(serialize(&e.block.header))))
            }
        }
        "getblock" => {
            let e = lookup(&chain, &parse_block_hash(param(params, 0, "blockhash"))?)?;
            let verbosity = parse_verbosity(param(params, 1, "verbosity"), 1)?;
            if !(0..=3).contains(&verbosity) {
                return Err(err(RPC_INVALID_PARAMETER, "Verbosity must be in range 0..3"));
            }
            take_block_budget(shared, ctx)?;
            ctx.blocks += 1;
            if verbosity == 0 {
                return Ok(json!(hex::encode(&e.raw)));
            }
            let block = &e.block;
            let mut v = chain.header_json(e);
            v["size"] = json!(e.raw.len());
            v["strippedsize"] = json!(block.txdata.iter().map(|t| t.base_size()).sum::<usize>() + 80);
            v["weight"] = json!(block.weight().to_wu());
            v["tx"] = if verbosity == 1 {
                block.txdata.iter().map(|t| json!(t.compute_txid().to_string())).collect()
            } else {
                (0..block.txdata.len()).map(|pos| tx_json(&chain, e, pos)).collect()
            };
            Ok(v)
        }
        "getrawtransaction" => {
            let txid_hex = parse_hex256(param(params, 0, "txid"), "parameter 1")?;
            let txid = Txid::from_str(&txid_hex).map_err(|e| err(RPC_INVALID_PARAMETER, e.to_string()))?;
            let verbose = parse_verbosity(param(params, 1, "verbose"), 0)?;
            let (blockhash_arg, txindex) = {
                let st = shared.state();
                (st.tx_blockhash_arg, st.txindex)
            };
            if !blockhash_arg && param(params, 2, "blockhash").is_some() {
                return Err(err(
                    RPC_MISC_ERROR,
                    "getrawtransaction \"txid\" ( verbose )\n\nReturn the raw transaction data.",
                ));
            }
            let confirmed = txindex.then(|| {
                chain.main.iter().find_map(|e| {
                    e.block.txdata.iter().position(|t| t.compute_txid() == txid).map(|pos| (e.clone(), pos))
                })
            });
            if let Some(Some((e, pos))) = confirmed {
                let mut v = tx_json(&chain, &e, pos);
                v.as_object_mut().expect("object").remove("in_active_chain");
                return Ok(if verbose == 0 { v["hex"].clone() } else { v });
            }
            let Some(bh) = param(params, 2, "blockhash") else {
                let found = shared.state().mempool.iter().find(|(id, _)| *id == txid).map(|(_, t)| t.clone());
                if let Some(tx) = found.as_ref() {
                    return Ok(if verbose == 0 {
                        json!(hex::encode(serialize(tx)))
                    } else {
                        json!({"txid": txid.to_string(), "hash": tx.compute_wtxid().to_string(), "size": tx.total_size(),
                               "vsize": tx.vsize(), "hex": hex::encode(serialize(tx))})
                    });
                }
                return Err(err(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such mempool transaction. Use -txindex or provide a block hash to enable blockchain transaction queries. Use gettransaction for wallet transactions.",
                ));
            };
            let e = chain
                .find(&parse_block_hash(Some(bh))?)
                .ok_or_else(|| err(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found"))?;
            let pos = e.block.txdata.iter().position(|t| t.compute_txid() == txid).ok_or_else(|| {
                err(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                )
            })?;
            if verbose == 0 {
                Ok(json!(hex::encode(serialize(&e.block.txdata[pos]))))
            } else {
                Ok(tx_json(&chain, e, pos))
            }
        }
        "decoderawtransaction" => {
            let tx: bitcoin::Transaction = hex::decode(parse_hex_str(param(params, 0, "hexstring"))?)
                .ok()
                .and_then(|b| bitcoin::consensus::deserialize(&b).ok())
                .ok_or_else(|| err(-22, "TX decode failed"))?;
            Ok(decoded_json(&tx))
        }
        "getrawmempool" => {
            let ids: Vec<String> = shared.state().mempool.iter().map(|(id, _)| id.to_string()).collect();
            if parse_verbosity(param(params, 0, "verbose"), 0)? != 0 {
                Ok(Value::Object(ids.into_iter().map(|i| (i, json!({}))).collect()))
            } else {
                Ok(json!(ids))
            }
        }
        "sendrawtransaction" | "submitpackage" => {
            let raws: Vec<String> = if method == "submitpackage" {
                param(params, 0, "package")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| err(-3, "package must be an array"))?
            } else {
                vec![parse_hex_str(param(params, 0, "hexstring"))?]
            };
            let mut txs = Vec::new();
            for raw in &raws {
                let tx: bitcoin::Transaction = hex::decode(raw)
                    .ok()
                    .and_then(|b| bitcoin::consensus::deserialize(&b).ok())
                    .ok_or_else(|| err(-22, "TX decode failed. Make sure the tx has at least one input."))?;
                txs.push(tx);
            }
            let mut st = shared.state();
            if let Some((code, message)) = st.reject.clone() {
                if method == "submitpackage" {
                    let results: serde_json::Map<String, Value> = txs
                        .iter()
                        .map(|t| {
                            (
                                t.compute_wtxid().to_string(),
                                json!({"txid": t.compute_txid().to_string(), "error": message}),
                            )
                        })
                        .collect();
                    return Ok(
                        json!({"package_msg": "transaction failed", "tx-results": results, "replaced-transactions": []}),
                    );
                }
                return Err(err(code, message));
            }
            let mut results = serde_json::Map::new();
            for tx in txs {
                let txid = tx.compute_txid();
                results.insert(tx.compute_wtxid().to_string(), json!({"txid": txid.to_string(), "vsize": tx.vsize()}));
                if !st.mempool.iter().any(|(id, _)| *id == txid) {
                    st.mempool.push((txid, tx));
                }
            }
            if method == "submitpackage" {
                Ok(json!({"package_msg": "success", "tx-results": results, "replaced-transactions": []}))
            } else {
                Ok(json!(results.values().next().map(|r| r["txid"].clone()).unwrap_or(Value::Null)))
            }
        }
        "getmempoolinfo" => Ok(json!({
            "loaded": true, "size": 0, "bytes": 0, "usage": 0, "total_fee": 0.0,
            "maxmempool": 300_000_000, "mempoolminfee": 0.00001, "minrelaytxfee": 0.00001,
            "incrementalrelayfee": 0.00001, "unbroadcastcount": 0, "fullrbf": true,
        })),
        "estimatesmartfee" => match shared.state().fee_estimate {
            Some(fee) => Ok(json!({"feerate": fee, "blocks": 2})),
            None => Ok(json!({"errors": ["Insufficient data or no feerate found"], "blocks": 2})),
        },
        "uptime" => Ok(json!(1)),
        _ => Err(err(RPC_METHOD_NOT_FOUND, "Method not found")),
    }
}

fn handle_rest(shared: &Shared, req: &Request, path: &str) -> Outcome {
    let reply = |resp| Outcome::Reply { resp, die_after: false };
    let (chain, spent_outputs) = {
        let mut st = shared.state();
        if !st.rest {
            // Without -rest bitcoind registers no handler: a bare 404.
            return reply(Response::empty(404));
        }
        let asked = path.starts_with("/rest/spenttxouts/");
        if asked {
            shared.spent_outputs_calls.fetch_add(1, Ordering::SeqCst);
        }
        if asked && st.spent_outputs_warmup > 0 {
            st.spent_outputs_warmup -= 1;
            return reply(Response::text(503, "Service temporarily unavailable: Loading block index..."));
        }
        (st.chain.clone(), st.spent_outputs)
    };
    if req.method != "GET" {
        return reply(Response::text(405, "Only GET is supported"));
    }
    if path == "/rest/chaininfo.json" {
        return reply(Response::json(200, &chain.chain_info()));
    }
    if let Some(hash) = path.strip_prefix("/rest/spenttxouts/").filter(|_| spent_outputs) {
        let Some(e) = hash.strip_suffix(".bin").and_then(|h| BlockHash::from_str(h).ok()).and_then(|h| chain.find(&h))
        else {
            return reply(Response::text(404, &format!("{hash} not found")));
        };
        return reply(Response::new(200, "application/octet-stream", chain.spent_outputs(&e.block)));
    }
    let Some(rest) = path.strip_prefix("/rest/block/") else {
        return reply(Response::empty(404));
    };
    let Some((hash_str, format)) = rest.rsplit_once('.') else {
        return reply(Response::text(404, "output format not found (available: .bin, .hex)"));
    };
    if format != "bin" && format != "hex" {
        return reply(Response::text(404, "output format not found (available: .bin, .hex)"));
    }
    let Ok(hash) = BlockHash::from_str(hash_str) else {
        return reply(Response::text(400, &format!("Invalid hash: {hash_str}")));
    };
    let Some(e) = chain.find(&hash) else {
        return reply(Response::text(404, &format!("{hash_str} not found")));
    };
    let mut ctx = CallCtx::default();
    if take_block_budget(shared, &mut ctx).is_err() {
        return Outcome::Die;
    }
    shared.rest_block_calls.fetch_add(1, Ordering::SeqCst);
    let resp = if format == "bin" {
        Response::new(200, "application/octet-stream", e.raw.clone())
    } else {
        Response::new(200, "text/plain", format!("{}\n", hex::encode(&e.raw)))
    };
    Outcome::Reply { resp, die_after: ctx.die_after }
}
