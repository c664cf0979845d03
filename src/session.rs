//! The session layer: listeners for SERVICES (tcp, ssl, ws, wss), one task per connection, the
//! subscription registry and notifications, and the per-session limits.
//!
//! A connection reads one message at a time (a request or a batch), answers it, and between
//! messages forwards notifications. Notifications come from the `notifier` task: the block
//! processor and the mempool refresh report the script hashes they touched, the notifier
//! computes the status of each touched one somebody subscribed to, once, and broadcasts the
//! statuses; each session sends those that differ from what it last sent. A session that falls
//! too far behind the broadcast recomputes its own subscriptions instead, so nothing is lost and
//! nothing grows without bound.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

use crate::config::{Config, Service, ServiceProtocol};
use crate::daemon::{Daemon, DaemonError};
use crate::index::{Index, IndexEvent, Snapshot};
use crate::protocol::{self, Reply, RpcError, Version};
use crate::schema::{push_hex32, HashX};
use crate::transactions::Transactions;

/// How long a client may leave a response unread before the session is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a TLS or WebSocket handshake may take (also bounded by SESSION_TIMEOUT), so
/// half-open connections cannot hold session slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Notifications queued per session before it must resynchronise its subscriptions.
const EVENT_QUEUE: usize = 64;
/// Status computations per snapshot in the notifier, so writers are never held up for long.
const STATUS_CHUNK: usize = 256;

/// What the notifier broadcasts to sessions.
pub enum Event {
    Tip {
        header: [u8; 80],
        /// The notification, built once for every session.
        text: String,
    },
    /// New statuses of touched, subscribed script hashes (keyed by full script hash).
    Statuses(HashMap<[u8; 32], Option<[u8; 32]>>),
}

/// Per-connection protocol state.
pub struct SessionState {
    pub id: u64,
    pub version: Option<Version>,
    pub client: String,
    /// Subscribed script hashes and the status last sent for each.
    pub subs: HashMap<[u8; 32], Option<[u8; 32]>>,
    pub headers_subscribed: bool,
    pub last_tip_sent: Option<[u8; 80]>,
}

/// What the admin RPC lists about a session.
#[derive(Clone)]
struct SessionInfo {
    peer: SocketAddr,
    kind: &'static str,
    started: Instant,
    client: String,
    version: String,
    subs: usize,
    requests: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
}

type FeeCache = HashMap<(u32, Option<String>), ([u8; 32], Value)>;

pub struct Manager {
    pub config: Arc<Config>,
    pub index: Arc<Index>,
    pub daemon: Arc<Daemon>,
    /// Transactions by txid, in whichever form the daemon takes.
    pub transactions: Transactions,
    /// Fallbacks already logged (once per process), e.g. fields a daemon's answers lack.
    noted: Mutex<HashSet<&'static str>>,
    /// Subscribed script hashes by key, with how many sessions want each.
    registry: Mutex<HashMap<HashX, HashMap<[u8; 32], u32>>>,
    events: broadcast::Sender<Arc<Event>>,
    sessions: Mutex<HashMap<u64, SessionInfo>>,
    /// Open connections, counted from accept (before any handshake).
    connections: AtomicUsize,
    connection_closed: Notify,
    next_id: AtomicU64,
    mempool_wakeup: Arc<Notify>,
    fee_cache: Mutex<FeeCache>,
    info_cache: Mutex<HashMap<&'static str, (Instant, Value)>>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
    requests: AtomicU64,
    notifications: AtomicU64,
}

impl Manager {
    /// Checks the TLS files now, so a bad certificate stops start-up rather than the first client.
    pub fn new(
        config: Arc<Config>,
        index: Arc<Index>,
        daemon: Arc<Daemon>,
        mempool_wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Manager>> {
        let tls = match (&config.ssl_certfile, &config.ssl_keyfile) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        Ok(Arc::new(Manager {
            transactions: Transactions::new(daemon.clone(), config.coin),
            noted: Mutex::default(),
            config,
            index,
            daemon,
            registry: Mutex::default(),
            events,
            sessions: Mutex::default(),
            connections: AtomicUsize::new(0),
            connection_closed: Notify::new(),
            next_id: AtomicU64::new(1),
            mempool_wakeup,
            fee_cache: Mutex::default(),
            info_cache: Mutex::default(),
            tls,
            shutdown,
            requests: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
        }))
    }

    /// Binds every client service and starts serving; the index reports its changes from now on.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.index.set_listener(tx);
        tokio::spawn(self.clone().notifier(rx));
        for svc in self.config.services.iter().filter(|s| s.protocol != ServiceProtocol::Rpc) {
            let listener = TcpListener::bind(svc.bind_addr()).await.with_context(|| {
                format!(
                    "cannot listen on {}://{} (is another server using the port?)",
                    svc.protocol.name(),
                    svc.bind_addr()
                )
            })?;
            tracing::info!("serving Electrum clients on {}://{}", svc.protocol.name(), listener.local_addr()?);
            tokio::spawn(self.clone().accept_loop(listener, svc.clone()));
        }
        Ok(())
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, svc: Service) {
        let mut shutdown = self.shutdown.clone();
        let max = self.config.max_sessions;
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // E.g. out of file descriptors: wait a moment rather than spin.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => return,
            };
            // At MAX_SESSIONS this connection waits (and the listener with it, so later ones
            // stay in the kernel's backlog) until the count is below 95% of the limit.
            while self.connections.fetch_add(1, Ordering::SeqCst) >= max {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("MAX_SESSIONS={max} reached: not accepting connections until below 95% of it");
                loop {
                    // Registered before the count is read, so a close in between is not missed.
                    let closed = self.connection_closed.notified();
                    tokio::pin!(closed);
                    closed.as_mut().enable();
                    if self.connections.load(Ordering::SeqCst) * 100 < max * 95 {
                        break;
                    }
                    tokio::select! {
                        _ = closed => {}
                        _ = stopped(&mut shutdown) => return,
                    }
                }
                tracing::info!("accepting connections again");
            }
            let _ = stream.set_nodelay(true);
            let mgr = self.clone();
            let proto = svc.protocol;
            tokio::spawn(async move {
                mgr.connection(stream, peer, proto).await;
                mgr.connections.fetch_sub(1, Ordering::SeqCst);
                mgr.connection_closed.notify_waiters();
            });
        }
    }

    async fn connection(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, proto: ServiceProtocol) {
        let ws_config = WebSocketConfig {
            max_message_size: Some(self.config.max_recv),
            max_frame_size: Some(self.config.max_recv),
            ..Default::default()
        };
        let limit = HANDSHAKE_TIMEOUT.min(self.config.session_timeout);
        let max_recv = self.config.max_recv;
        match proto {
            ServiceProtocol::Tcp => self.run(Transport::raw(stream, max_recv), peer, "tcp").await,
            ServiceProtocol::Ws => {
                match tokio::time::timeout(limit, tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)))
                    .await
                {
                    Ok(Ok(ws)) => self.run(Transport::Ws(ws), peer, "ws").await,
                    Ok(Err(e)) => tracing::debug!("websocket handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("websocket handshake with {peer} timed out"),
                }
            }
            ServiceProtocol::Ssl | ServiceProtocol::Wss => {
                let Some(tls) = &self.tls else { return };
                let started = tokio::time::Instant::now();
                let stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
                };
                if proto == ServiceProtocol::Ssl {
                    self.run(Transport::raw(stream, max_recv), peer, "ssl").await
                } else {
                    let left = limit.saturating_sub(started.elapsed());
                    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config));
                    match tokio::time::timeout(left, ws).await {
                        Ok(Ok(ws)) => self.run(Transport::Ws(ws), peer, "wss").await,
                        Ok(Err(e)) => tracing::debug!("websocket handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("websocket handshake with {peer} timed out"),
                    }
                }
            }
            ServiceProtocol::Rpc => {}
        }
    }

    /// One client session, until it closes, idles out, breaks a limit, or ferrum stops.
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
        self: &Arc<Self>,
        mut t: Transport<S>,
        peer: SocketAddr,
        kind: &'static str,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().expect("lock").insert(
            id,
            SessionInfo {
                peer,
                kind,
                started: Instant::now(),
                client: String::new(),
                version: String::new(),
                subs: 0,
                requests: 0,
                errors: 0,
                bytes_in: 0,
                bytes_out: 0,
            },
        );
        tracing::debug!("session {id}: {kind} connection from {peer}");
        let mut s = SessionState {
            id,
            version: None,
            client: String::new(),
            subs: HashMap::new(),
            headers_subscribed: false,
            last_tip_sent: None,
        };
        let mut events = self.events.subscribe();
        let mut shutdown = self.shutdown.clone();
        let timeout = self.config.session_timeout;
        let mut deadline = tokio::time::Instant::now() + timeout;
        let why = loop {
            let out: Vec<String>;
            let mut close = false;
            tokio::select! {
                _ = stopped(&mut shutdown) => break "server shutting down",
                _ = tokio::time::sleep_until(deadline) => break "idle for SESSION_TIMEOUT",
                incoming = t.recv() => match incoming {
                    Incoming::Message(text) => {
                        deadline = tokio::time::Instant::now() + timeout;
                        let (reply, errors, c) = self.handle_message(&mut s, &text).await;
                        self.update_info(id, &s, text.len(), reply.as_ref().map_or(0, |r| r.len()), errors);
                        close = c;
                        out = reply.into_iter().collect();
                    }
                    Incoming::TooLarge => {
                        let msg = format!("request larger than MAX_RECV={} bytes", self.config.max_recv);
                        let _ = tokio::time::timeout(SEND_TIMEOUT, t.send(error_response(&Value::Null, &RpcError::new(protocol::EXCESSIVE_RESOURCE_USAGE, msg)))).await;
                        break "request larger than MAX_RECV";
                    }
                    Incoming::Closed => break "closed by the client",
                },
                ev = events.recv() => {
                    out = match ev {
                        Ok(ev) => self.notifications_for(&mut s, &ev),
                        Err(broadcast::error::RecvError::Lagged(_)) => self.resync(&mut s).await,
                        Err(broadcast::error::RecvError::Closed) => break "server shutting down",
                    };
                    self.notifications.fetch_add(out.len() as u64, Ordering::Relaxed);
                    self.update_info(id, &s, 0, out.iter().map(String::len).sum(), 0);
                }
            }
            let failed =
                !out.is_empty() && !matches!(tokio::time::timeout(SEND_TIMEOUT, t.send_all(out)).await, Ok(Ok(())));
            if failed {
                break "the client stopped reading";
            }
            if close {
                break "closed after an error";
            }
        };
        tracing::debug!("session {id} ({peer}) ended: {why}");
        for (sh, _) in s.subs.drain() {
            self.unregister(&sh, &crate::schema::hashx_from_scripthash(&sh));
        }
        self.sessions.lock().expect("lock").remove(&id);
        t.close().await;
    }

    fn update_info(&self, id: u64, s: &SessionState, bytes_in: usize, bytes_out: usize, errors: u64) {
        if let Some(info) = self.sessions.lock().expect("lock").get_mut(&id) {
            if bytes_in > 0 {
                info.requests += 1;
            }
            info.errors += errors;
            info.bytes_in += bytes_in as u64;
            info.bytes_out += bytes_out as u64;
            info.subs = s.subs.len();
            if info.client.is_empty() && !s.client.is_empty() {
                info.client = s.client.clone();
            }
            if let Some(v) = s.version {
                info.version = v.to_string();
            }
        }
    }

    /// Answers one message (a request or a batch): the reply to send, if any, the number of
    /// errors, and whether to close the connection afterwards.
    async fn handle_message(self: &Arc<Self>, s: &mut SessionState, text: &[u8]) -> (Option<String>, u64, bool) {
        // Bytes, not text: a message that is not UTF-8 is one more parse error.
        let value: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Some(error_response(
                        &Value::Null,
                        &RpcError::new(protocol::PARSE_ERROR, format!("invalid JSON: {e}")),
                    )),
                    1,
                    false,
                )
            }
        };
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return (
                        Some(error_response(&Value::Null, &RpcError::new(protocol::INVALID_REQUEST, "empty batch"))),
                        1,
                        false,
                    );
                }
                if items.len() > self.config.max_batch {
                    let e = RpcError::new(
                        protocol::INVALID_REQUEST,
                        format!("batch of {} requests is larger than MAX_BATCH={}", items.len(), self.config.max_batch),
                    );
                    return (Some(error_response(&Value::Null, &e)), 1, false);
                }
                let mut parts = Vec::new();
                let (mut errors, mut close, mut size) = (0, false, 2usize);
                for item in items {
                    let (reply, is_err, c) = self.handle_one(s, item).await;
                    errors += is_err as u64;
                    close |= c;
                    if let Some(r) = reply {
                        size += r.len() + 1;
                        parts.push(r);
                    }
                    if close {
                        break;
                    }
                }
                if size > self.config.max_send {
                    let e = RpcError::new(
                        protocol::EXCESSIVE_RESOURCE_USAGE,
                        format!("batch response larger than MAX_SEND={}", self.config.max_send),
                    );
                    return (Some(error_response(&Value::Null, &e)), errors + 1, close);
                }
                let reply = (!parts.is_empty()).then(|| format!("[{}]", parts.join(",")));
                (reply, errors, close)
            }
            other => {
                let (reply, is_err, close) = self.handle_one(s, other).await;
                (reply, is_err as u64, close)
            }
        }
    }

    /// One request: (serialized response unless it was a notification, whether it failed,
    /// whether to close).
    async fn handle_one(self: &Arc<Self>, s: &mut SessionState, request: Value) -> (Option<String>, bool, bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (id, method, params) = match protocol::parse_request(request) {
            Ok(r) => r,
            Err((id, e)) => return (Some(error_response(&id, &e)), true, false),
        };
        let result =
            match tokio::time::timeout(self.config.request_timeout, protocol::handle_request(self, s, &method, params))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(RpcError::new(protocol::SERVER_BUSY, "server busy: the request timed out")),
            };
        // A request without an id is a notification: no answer, even to an error.
        let Some(id) = id else { return (None, result.is_err(), result.as_ref().err().is_some_and(|e| e.close)) };
        match result {
            Ok(reply) => {
                let text = match reply {
                    Reply::Value(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}).to_string(),
                    Reply::Response(text) => protocol::finish_response(text, &id),
                };
                if text.len() > self.config.max_send {
                    let e = if method.starts_with("blockchain.scripthash.") {
                        RpcError::new(protocol::HISTORY_TOO_LARGE, "history too large")
                    } else {
                        RpcError::new(
                            protocol::EXCESSIVE_RESOURCE_USAGE,
                            format!("response larger than MAX_SEND={}", self.config.max_send),
                        )
                    };
                    return (Some(error_response(&id, &e)), true, false);
                }
                (Some(text), false, false)
            }
            Err(e) => (Some(error_response(&id, &e)), true, e.close),
        }
    }

    fn notifications_for(&self, s: &mut SessionState, ev: &Event) -> Vec<String> {
        match ev {
            Event::Tip { header, text } => {
                if !s.headers_subscribed || s.last_tip_sent == Some(*header) {
                    return Vec::new();
                }
                s.last_tip_sent = Some(*header);
                vec![text.clone()]
            }
            Event::Statuses(statuses) => {
                let mut out = Vec::new();
                let mine: Vec<[u8; 32]> = if statuses.len() < s.subs.len() {
                    statuses.keys().filter(|k| s.subs.contains_key(*k)).copied().collect()
                } else {
                    s.subs.keys().filter(|k| statuses.contains_key(*k)).copied().collect()
                };
                for sh in mine {
                    let new = statuses[&sh];
                    let last = s.subs.get_mut(&sh).expect("subscribed");
                    if *last != new {
                        *last = new;
                        out.push(status_notification(&sh, new));
                    }
                }
                out
            }
        }
    }

    /// After missing broadcasts: compare every subscription and the tip with the index now.
    async fn resync(&self, s: &mut SessionState) -> Vec<String> {
        tracing::debug!("session {} fell behind the notifications; rechecking its subscriptions", s.id);
        let mut out = Vec::new();
        if s.headers_subscribed {
            if let Some((height, header)) = self.tip() {
                if s.last_tip_sent != Some(header) {
                    s.last_tip_sent = Some(header);
                    out.push(tip_notification(height, &header));
                }
            }
        }
        let wanted: Vec<([u8; 32], HashX)> =
            s.subs.keys().map(|sh| (*sh, crate::schema::hashx_from_scripthash(sh))).collect();
        let index = self.index.clone();
        let limit = self.history_limit();
        let Ok(statuses) = tokio::task::spawn_blocking(move || compute_statuses(&index, &wanted, limit)).await else {
            return out;
        };
        for (sh, new) in statuses {
            if let Some(last) = s.subs.get_mut(&sh) {
                if *last != new {
                    *last = new;
                    out.push(status_notification(&sh, new));
                }
            }
        }
        out
    }

    /// Turns index changes into broadcast events, coalescing whatever queued up meanwhile.
    async fn notifier(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<IndexEvent>) {
        while let Some(first) = rx.recv().await {
            let mut touched = first.touched;
            let mut new_tip = first.new_tip;
            while let Ok(more) = rx.try_recv() {
                touched.extend(more.touched);
                new_tip |= more.new_tip;
            }
            let started = Instant::now();
            if new_tip {
                if let Some((height, header)) = self.tip() {
                    let text = tip_notification(height, &header);
                    let _ = self.events.send(Arc::new(Event::Tip { header, text }));
                }
            }
            let mut wanted: Vec<([u8; 32], HashX)> = {
                let reg = self.registry.lock().expect("lock");
                touched
                    .iter()
                    .filter_map(|h| reg.get(h).map(|m| (h, m)))
                    .flat_map(|(h, m)| m.keys().map(|sh| (*sh, *h)))
                    .collect()
            };
            // In key order, each chunk's history seeks walk the memtables and files forward.
            wanted.sort_unstable_by_key(|(_, hashx)| *hashx);
            if wanted.is_empty() {
                continue;
            }
            let index = self.index.clone();
            let limit = self.history_limit();
            let n = wanted.len();
            let Ok(statuses) = tokio::task::spawn_blocking(move || compute_statuses(&index, &wanted, limit)).await
            else {
                continue;
            };
            let _ = self.events.send(Arc::new(Event::Statuses(statuses)));
            tracing::debug!("computed {n} subscribed statuses in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        }
    }

    pub fn register(&self, sh: &[u8; 32], hashx: &HashX) {
        *self.registry.lock().expect("lock").entry(*hashx).or_default().entry(*sh).or_default() += 1;
    }

    pub fn unregister(&self, sh: &[u8; 32], hashx: &HashX) {
        let mut reg = self.registry.lock().expect("lock");
        if let Some(m) = reg.get_mut(hashx) {
            if let Some(c) = m.get_mut(sh) {
                *c -= 1;
                if *c == 0 {
                    m.remove(sh);
                }
            }
            if m.is_empty() {
                reg.remove(hashx);
            }
        }
    }

    /// Runs a read of one consistent snapshot off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<T, RpcError> + Send + 'static,
    ) -> Result<T, RpcError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || f(&index.snapshot()))
            .await
            .map_err(|_| RpcError::new(protocol::INTERNAL_ERROR, "internal error"))?
    }

    /// The most confirmed history entries an answer may carry: more could not fit in MAX_SEND
    /// (each entry takes at least ~95 bytes of JSON).
    pub fn history_limit(&self) -> usize {
        self.config.max_send / 95
    }

    /// The flushed tip: height and header.
    pub fn tip(&self) -> Option<(u32, [u8; 80])> {
        let snap = self.index.snapshot();
        let h = snap.height()?;
        Some((h, snap.header(h)?))
    }

    fn tip_hash(&self) -> [u8; 32] {
        self.index.tip().map(|t| t.hash).unwrap_or_default()
    }

    /// A daemon call for a client, bounded by REQUEST_TIMEOUT (the daemon client itself retries
    /// through outages forever).
    pub async fn daemon_call(&self, method: &str, params: Value) -> Result<Result<Value, DaemonError>, RpcError> {
        tokio::time::timeout(self.config.request_timeout, self.daemon.call(method, params))
            .await
            .map_err(|_| RpcError::new(protocol::SERVER_BUSY, "the daemon is not answering; try again later"))
    }

    pub fn wake_mempool(&self) {
        self.mempool_wakeup.notify_one();
    }

    /// Fee estimate in BTC/kB, cached per (target, mode) until the next block; -1 when the
    /// daemon has none (Electrum disconnects on an error here).
    pub async fn estimatefee(&self, number: u32, mode: Option<String>) -> Value {
        let tip = self.tip_hash();
        let key = (number, mode.clone());
        if let Some((at, v)) = self.fee_cache.lock().expect("lock").get(&key) {
            if *at == tip {
                return v.clone();
            }
        }
        let target = number.clamp(1, 1008);
        let params = match &mode {
            Some(m) => json!([target, m]),
            None => json!([target]),
        };
        let answer = match self.daemon_call("estimatesmartfee", params).await {
            Ok(Err(DaemonError::MethodNotFound(_))) => match self.daemon_call("estimatefee", json!([target])).await {
                Ok(a) => a,
                Err(_) => return json!(-1),
            },
            Ok(a) => a,
            Err(_) => return json!(-1),
        };
        let fee = protocol::fee_from_daemon(&answer);
        self.fee_cache.lock().expect("lock").insert(key, (tip, fee.clone()));
        fee
    }

    async fn cached_daemon_info(&self, method: &'static str) -> Result<Value, RpcError> {
        if let Some((at, v)) = self.info_cache.lock().expect("lock").get(method) {
            if at.elapsed() < Duration::from_secs(10) {
                return Ok(v.clone());
            }
        }
        let v = self.daemon_call(method, json!([])).await?.map_err(RpcError::daemon)?;
        self.info_cache.lock().expect("lock").insert(method, (Instant::now(), v.clone()));
        Ok(v)
    }

    pub async fn relayfee(&self) -> Result<Value, RpcError> {
        let info = self.cached_daemon_info("getnetworkinfo").await?;
        Ok(info.get("relayfee").cloned().unwrap_or(json!(0.00001)))
    }

    pub async fn mempool_info(&self) -> Result<Value, RpcError> {
        let m = self.cached_daemon_info("getmempoolinfo").await?;
        let n = self.cached_daemon_info("getnetworkinfo").await?;
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

    pub fn features(&self) -> Value {
        let mut hosts = serde_json::Map::new();
        for svc in &self.config.report_services {
            let entry = hosts.entry(svc.host.clone()).or_insert_with(|| json!({}));
            entry[format!("{}_port", svc.protocol.name())] = json!(svc.port);
        }
        json!({
            "hosts": hosts,
            "genesis_hash": self.config.coin.genesis_hash,
            "hash_function": "sha256",
            "server_version": crate::server_version(),
            "protocol_min": protocol::PROTOCOL_MIN.to_string(),
            "protocol_max": protocol::PROTOCOL_MAX.to_string(),
            "pruning": null,
            "services": self.config.report_services.iter().map(|s| format!("{}://{}:{}", s.protocol.name(), s.host, s.port)).collect::<Vec<_>>(),
        })
    }

    /// BANNER_FILE with ElectrumX's $-substitutions, or a default line.
    pub async fn banner(&self) -> String {
        let default = format!("You are connected to a {} server.", crate::server_version());
        let Some(path) = &self.config.banner_file else { return default };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("reading BANNER_FILE {}: {e}", path.display());
                return default;
            }
        };
        let info = self.cached_daemon_info("getnetworkinfo").await.unwrap_or(Value::Null);
        let version = info["version"].as_u64().map(daemon_version).unwrap_or_default();
        let subversion = info["subversion"].as_str().unwrap_or("").to_string();
        text.replace("$SERVER_VERSION", crate::VERSION)
            .replace("$SERVER_SUBVERSION", &crate::server_version())
            .replace("$DAEMON_VERSION", &version)
            .replace("$DAEMON_SUBVERSION", &subversion)
            .replace("$DONATION_ADDRESS", &self.config.donation_address)
    }

    /// The admin `getinfo` part about sessions.
    pub fn summary_json(&self) -> Value {
        let sessions = self.sessions.lock().expect("lock");
        json!({
            "sessions": sessions.len(),
            "connections": self.connections.load(Ordering::Relaxed),
            "subs": sessions.values().map(|s| s.subs).sum::<usize>(),
            "requests": self.requests.load(Ordering::Relaxed),
            "notifications": self.notifications.load(Ordering::Relaxed),
            "errors": sessions.values().map(|s| s.errors).sum::<u64>(),
        })
    }

    /// The admin `sessions` answer: one row per session.
    pub fn sessions_json(&self) -> Value {
        let sessions = self.sessions.lock().expect("lock");
        let mut rows: Vec<(&u64, &SessionInfo)> = sessions.iter().collect();
        rows.sort_by_key(|(id, _)| **id);
        Value::Array(
            rows.into_iter()
                .map(|(id, s)| {
                    json!({
                        "id": id, "kind": s.kind, "peer": s.peer.to_string(), "client": s.client,
                        "protocol": s.version, "subs": s.subs, "requests": s.requests, "errors": s.errors,
                        "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "seconds": s.started.elapsed().as_secs(),
                    })
                })
                .collect(),
        )
    }
}

/// Statuses of (script hash, key) pairs, reading a fresh snapshot per chunk on the rayon pool.
fn compute_statuses(index: &Index, wanted: &[([u8; 32], HashX)], limit: usize) -> HashMap<[u8; 32], Option<[u8; 32]>> {
    use rayon::prelude::*;
    wanted
        .par_chunks(STATUS_CHUNK)
        .flat_map_iter(|chunk| {
            let snap = index.snapshot();
            let mut reader = snap.history_reader();
            chunk
                .iter()
                .filter_map(|(sh, hashx)| match snap.status_using(&mut reader, hashx, limit) {
                    Ok(st) => Some((*sh, st)),
                    // Too large to answer, or unreadable (logged by the reader): no notification.
                    Err(_) => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
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

/// Resolves once ferrum is shutting down (without holding the watch's borrow across awaits).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn error_response(id: &Value, e: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}}).to_string()
}

fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

fn tip_notification(height: u32, header: &[u8; 80]) -> String {
    notification("blockchain.headers.subscribe", json!([protocol::header_json(height, header)]))
}

/// Written directly, without intermediate strings: a block can make hundreds of thousands.
fn status_notification(sh: &[u8; 32], status: Option<[u8; 32]>) -> String {
    let mut out = String::with_capacity(220);
    out.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"blockchain.scripthash.subscribe\",\"params\":[\"");
    push_hex32(&mut out, sh, true);
    match status {
        Some(st) => {
            out.push_str("\",\"");
            push_hex32(&mut out, &st, false);
            out.push_str("\"]}");
        }
        None => out.push_str("\",null]}"),
    }
    out
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use tokio_rustls::rustls;
    let open = |p: &Path, var: &str| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot read {var} {}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(cert, "SSL_CERTFILE")?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("SSL_CERTFILE {} is not a PEM certificate file", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("SSL_CERTFILE {} holds no certificate", cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut open(key, "SSL_KEYFILE")?)
        .with_context(|| format!("SSL_KEYFILE {} is not a PEM file", key.display()))?
        .ok_or_else(|| anyhow!("SSL_KEYFILE {} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("SSL_CERTFILE and SSL_KEYFILE do not form a usable certificate and key pair")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

enum Incoming {
    Message(Vec<u8>),
    TooLarge,
    Closed,
}

/// Newline-delimited JSON over a byte stream (tcp, ssl), or WebSocket messages (ws, wss).
enum Transport<S> {
    Raw { rx: FramedRead<ReadHalf<S>, AnyDelimiterCodec>, tx: WriteHalf<S> },
    Ws(WebSocketStream<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport<S> {
    fn raw(stream: S, max_recv: usize) -> Self {
        let (r, w) = tokio::io::split(stream);
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_recv);
        Transport::Raw { rx: FramedRead::new(r, codec), tx: w }
    }

    /// Cancel-safe: used inside `select!`.
    async fn recv(&mut self) -> Incoming {
        match self {
            Transport::Raw { rx, .. } => loop {
                match rx.next().await {
                    Some(Ok(line)) if line.trim_ascii().is_empty() => continue,
                    Some(Ok(line)) => return Incoming::Message(line.trim_ascii().to_vec()),
                    Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => return Incoming::TooLarge,
                    Some(Err(AnyDelimiterCodecError::Io(_))) | None => return Incoming::Closed,
                }
            },
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Incoming::Message(t.into_bytes()),
                    Some(Ok(Message::Binary(b))) => return Incoming::Message(b),
                    Some(Ok(Message::Close(_))) | None => return Incoming::Closed,
                    Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => return Incoming::TooLarge,
                    Some(Err(_)) => return Incoming::Closed,
                }
            },
        }
    }

    /// Sends several messages with one write (one frame each over WebSocket, one flush): a
    /// block touching 20 subscriptions of a session is one syscall, not 21.
    async fn send_all(&mut self, mut msgs: Vec<String>) -> std::io::Result<()> {
        if msgs.len() == 1 {
            // A long answer is not copied again.
            return self.send(msgs.pop().expect("one")).await;
        }
        match self {
            Transport::Raw { tx, .. } => {
                let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.len() + 1).sum());
                for m in &msgs {
                    buf.extend_from_slice(m.as_bytes());
                    buf.push(b'\n');
                }
                tx.write_all(&buf).await?;
                tx.flush().await
            }
            Transport::Ws(ws) => {
                for m in msgs {
                    ws.feed(Message::Text(m)).await.map_err(std::io::Error::other)?;
                }
                ws.flush().await.map_err(std::io::Error::other)
            }
        }
    }

    async fn send(&mut self, mut msg: String) -> std::io::Result<()> {
        match self {
            Transport::Raw { tx, .. } => {
                msg.push('\n');
                tx.write_all(msg.as_bytes()).await?;
                tx.flush().await
            }
            Transport::Ws(ws) => ws.send(Message::Text(msg)).await.map_err(std::io::Error::other),
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            match self {
                Transport::Raw { tx, .. } => {
                    let _ = tx.shutdown().await;
                }
                Transport::Ws(ws) => {
                    let _ = ws.close(None).await;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_notifications_are_the_json_they_say() {
        use crate::schema::hex_rev;
        let sh = [3u8; 32];
        for status in [Some([9u8; 32]), None] {
            let parsed: Value = serde_json::from_str(&status_notification(&sh, status)).unwrap();
            let expect = json!({"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe",
                                "params": [hex_rev(&sh), status.map(hex::encode)]});
            assert_eq!(parsed, expect);
        }
    }

    #[test]
    fn daemon_versions() {
        assert_eq!(daemon_version(210100), "0.21.1");
        assert_eq!(daemon_version(310000), "31.0.0");
        assert_eq!(daemon_version(319900), "31.99.0");
        assert_eq!(daemon_version(101001300), "1.0.13");
    }
}
