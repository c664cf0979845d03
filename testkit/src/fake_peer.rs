//! A scriptable fake Electrum server for the peer-discovery tests: newline-delimited JSON-RPC 2.0
//! over TCP, or TLS with a self-signed certificate, on a chosen loopback address (127.0.0.N,
//! so ferrum's per-IP buckets see distinct peers). Each test sets its answers (version,
//! features, headers, peers list, add_peer result), errors, delays, silences and raw garbage,
//! and then checks what ferrum asked, in order, on which connection.
//!
//! Each connection has its own thread, answering delayed requests out of order as a real
//! server may (a delayed `server.features` does not hold back `server.peers.subscribe`).
//! Bad input never panics a server thread: the connection is dropped. Dropping the `FakePeer`
//! closes its listener and every open connection.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How often a connection thread wakes to send delayed answers and to see a stop.
const POLL: Duration = Duration::from_millis(20);
/// A longer line than this is not a request ferrum would send: the connection is dropped.
const MAX_LINE: usize = 1 << 20;

/// What the fake peer answers; change it at any time with `FakePeer::set`.
#[derive(Clone, Debug)]
pub struct PeerScript {
    /// result of server.version (default json!(["FakePeer 1.0", "1.4"]))
    pub version: Value,
    /// result of server.features (default: a dict with hosts {}, genesis_hash "", hash_function
    /// "sha256", server_version "FakePeer 1.0", protocol_min "1.4", protocol_max "1.6", pruning
    /// null) — tests overwrite it
    pub features: Value,
    /// header hex by height, answers blockchain.block.header [h] (error code 1 if out of range)
    /// and blockchain.headers.subscribe
    pub headers: Vec<String>,
    /// height reported by blockchain.headers.subscribe: {"hex": headers[height], "height":
    /// height}; None = headers.len()-1. A height beyond `headers` reports the last header's hex
    /// (so a tip far off ours needs no extra headers).
    pub height: Option<u64>,
    /// result of server.peers.subscribe (default json!([]))
    pub peers: Value,
    /// result of server.add_peer (default json!(true))
    pub add_peer: Value,
    /// method -> (code, message): answer with this JSON-RPC error instead
    pub errors: HashMap<String, (i64, String)>,
    /// method -> delay before answering
    pub delays: HashMap<String, Duration>,
    /// methods never answered
    pub silent: HashSet<String>,
    /// raw line to send instead of a proper response for a method (garbage tests)
    pub raw: HashMap<String, String>,
}

impl Default for PeerScript {
    fn default() -> Self {
        PeerScript {
            version: json!(["FakePeer 1.0", "1.4"]),
            features: json!({
                "hosts": {},
                "genesis_hash": "",
                "hash_function": "sha256",
                "server_version": "FakePeer 1.0",
                "protocol_min": "1.4",
                "protocol_max": "1.6",
                "pruning": null,
            }),
            headers: Vec::new(),
            height: None,
            peers: json!([]),
            add_peer: json!(true),
            errors: HashMap::new(),
            delays: HashMap::new(),
            silent: HashSet::new(),
            raw: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<(u64, String, Value)>,
    connections: u64,
    closed: u64,
    sources: Vec<SocketAddr>,
}

struct Shared {
    script: Mutex<PeerScript>,
    log: Mutex<Log>,
    /// Signalled on every new connection and request, for the `wait_*` methods.
    changed: Condvar,
    stop: AtomicBool,
    /// A clone of each open socket by connection number, shut down on drop so their threads end
    /// at once.
    open: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    // A panicking test thread must not make every later call panic too: the data stays usable.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn script(&self) -> MutexGuard<'_, PeerScript> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakePeer {
    /// ip:port it listens on
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakePeer {
    /// Listens on a free port of `ip` (a loopback address such as 127.0.0.5); TLS with a
    /// self-signed certificate for `ip` and "localhost" when `tls`.
    pub fn start(ip: Ipv4Addr, tls: bool) -> FakePeer {
        FakePeer::start_on(ip, 0, tls)
    }

    /// Listens on `ip:port` (e.g. to come back on the same port after a drop).
    pub fn start_on(ip: Ipv4Addr, port: u16, tls: bool) -> FakePeer {
        let listener = TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("fake peer: bind {ip}:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let tls = tls.then(|| server_config(ip));
        let shared = Arc::new(Shared {
            script: Mutex::new(PeerScript::default()),
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fake-peer-{addr}"))
            .spawn(move || accept_loop(listener, s, tls))
            .unwrap();
        FakePeer { addr, shared, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes the script; connections already open see the change from their next request.
    pub fn set(&self, f: impl FnOnce(&mut PeerScript)) {
        f(&mut self.shared.script());
    }

    /// every request received: (connection number from 1, method, params), in arrival order.
    /// Notifications are included; params are `null` when the request had none.
    pub fn requests(&self) -> Vec<(u64, String, Value)> {
        self.shared.log().requests.clone()
    }

    /// Just the methods of `requests`, in order.
    pub fn methods(&self) -> Vec<String> {
        self.shared.log().requests.iter().map(|(_, m, _)| m.clone()).collect()
    }

    /// connections accepted so far
    pub fn connections(&self) -> u64 {
        self.shared.log().connections
    }

    /// how many connections the client has closed (EOF or reset; not those the fake peer
    /// dropped itself for bad input or on drop)
    pub fn closed(&self) -> u64 {
        self.shared.log().closed
    }

    /// the remote (source) address of each accepted connection, in order
    pub fn sources(&self) -> Vec<SocketAddr> {
        self.shared.log().sources.clone()
    }

    /// waits until `n` connections were accepted, or panics after `timeout`
    pub fn wait_connections(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log();
        while log.connections < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("fake peer {}: {} connections after {timeout:?}, wanted {n}", self.addr, log.connections);
            }
            log = self.shared.changed.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// waits until a request of `method` arrives and returns its params, or None after
    /// `timeout`. A request received earlier counts: this returns the earliest one.
    pub fn wait_request(&self, method: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log();
        loop {
            if let Some((_, _, params)) = log.requests.iter().find(|(_, m, _)| m == method) {
                return Some(params.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            log = self.shared.changed.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; the loop sees `stop` and ends, closing the listener, so
        // `start_on` can bind the same port again right away.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, s) in self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A rustls server configuration with a fresh self-signed certificate for `ip` and "localhost"
/// (ferrum, like ElectrumX, does not check peer certificates).
fn server_config(ip: Ipv4Addr) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec![ip.to_string(), "localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, source) = match accepted {
            Ok(a) => a,
            // E.g. out of file descriptors: wait rather than spin.
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let conn = {
            let mut log = shared.log();
            log.connections += 1;
            log.sources.push(source);
            log.connections
        };
        shared.changed.notify_all();
        if let Ok(clone) = stream.try_clone() {
            shared.open.lock().unwrap_or_else(|e| e.into_inner()).insert(conn, clone);
        }
        let (s, tls) = (shared.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("fake-peer-conn-{conn}"))
            .spawn(move || serve(stream, conn, &s, tls));
        if let Ok(t) = spawned {
            shared.threads.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Why a connection ended.
enum End {
    /// EOF or an I/O error: counted in `closed`.
    Client,
    /// Bad input or the fake peer stopping.
    Us,
}

fn serve(tcp: TcpStream, conn: u64, shared: &Shared, tls: Option<Arc<rustls::ServerConfig>>) {
    let end = converse(tcp, conn, shared, tls);
    // The clone kept for `Drop` holds the socket open: shut it down so the client sees the
    // close now.
    if let Some(s) = shared.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&conn) {
        let _ = s.shutdown(Shutdown::Both);
    }
    if let End::Client = end {
        if !shared.stop.load(Ordering::SeqCst) {
            shared.log().closed += 1;
            shared.changed.notify_all();
        }
    }
}

fn converse(tcp: TcpStream, conn: u64, shared: &Shared, tls: Option<Arc<rustls::ServerConfig>>) -> End {
    // Short reads let one thread both read requests and send delayed answers when due;
    // a client that stops reading cannot block the thread forever.
    if tcp.set_read_timeout(Some(POLL)).is_err() || tcp.set_write_timeout(Some(Duration::from_secs(10))).is_err() {
        return End::Client;
    }
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Stream> = match tls {
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(c) => Box::new(rustls::StreamOwned::new(c, tcp)),
            Err(_) => return End::Us,
        },
        None => Box::new(tcp),
    };
    let mut io = BufReader::new(io);
    let mut line = Vec::new();
    // (when due, line) answers not sent yet, in the order they were made.
    let mut pending: Vec<(Instant, String)> = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return End::Us;
        }
        let now = Instant::now();
        while let Some(i) = next_due(&pending, now) {
            let (_, mut answer) = pending.remove(i);
            answer.push('\n');
            // One write per answer (see `Client::send_line` on Nagle).
            let w = io.get_mut();
            if w.write_all(answer.as_bytes()).and_then(|_| w.flush()).is_err() {
                return End::Client;
            }
        }
        // read_until keeps what it read before a timeout in `line`, so a request split
        // across reads (or TLS records) is completed by the next call.
        match io.read_until(b'\n', &mut line) {
            Ok(0) => return End::Client,
            Ok(_) if line.ends_with(b"\n") => {
                let request = std::mem::take(&mut line);
                match answer(&request, conn, shared) {
                    Ok(Some(a)) => pending.push(a),
                    Ok(None) => {}
                    Err(()) => return End::Us,
                }
            }
            // The last line before EOF, unterminated: EOF comes on the next read.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if line.len() > MAX_LINE {
                    return End::Us;
                }
            }
            Err(_) => return End::Client,
        }
    }
}

/// The answer to send first among those due at `now` (the earliest; ties in the order made).
fn next_due(pending: &[(Instant, String)], now: Instant) -> Option<usize> {
    let due = pending.iter().enumerate().filter(|(_, (due, _))| *due <= now);
    due.min_by_key(|(_, (due, _))| *due).map(|(i, _)| i)
}

/// Records one request line and makes its answer: Ok(Some((when due, line))), Ok(None) for
/// no answer, Err(()) for input that is not JSON-RPC (the connection is dropped).
fn answer(line: &[u8], conn: u64, shared: &Shared) -> Result<Option<(Instant, String)>, ()> {
    let text = std::str::from_utf8(line).map_err(|_| ())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let request: Value = serde_json::from_str(text).map_err(|_| ())?;
    let obj = request.as_object().ok_or(())?;
    let method = obj.get("method").and_then(Value::as_str).ok_or(())?.to_string();
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    // JSON-RPC 2.0: a request without an "id" member is a notification, never answered.
    let id = obj.get("id").cloned();
    shared.log().requests.push((conn, method.clone(), params.clone()));
    shared.changed.notify_all();
    let Some(id) = id else {
        return Ok(None);
    };
    let script = shared.script();
    if script.silent.contains(&method) {
        return Ok(None);
    }
    let due = Instant::now() + script.delays.get(&method).copied().unwrap_or_default();
    if let Some(raw) = script.raw.get(&method) {
        return Ok(Some((due, raw.trim_end_matches('\n').to_string())));
    }
    let outcome = match script.errors.get(&method) {
        Some((code, message)) => Err((*code, message.clone())),
        None => result_of(&script, &method, &params),
    };
    let response = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    };
    Ok(Some((due, response.to_string())))
}

/// The scripted result of one method, or the JSON-RPC error an Electrum server would give.
fn result_of(script: &PeerScript, method: &str, params: &Value) -> Result<Value, (i64, String)> {
    match method {
        "server.version" => Ok(script.version.clone()),
        "server.features" => Ok(script.features.clone()),
        "server.peers.subscribe" => Ok(script.peers.clone()),
        "server.add_peer" => Ok(script.add_peer.clone()),
        "server.ping" => Ok(Value::Null),
        "blockchain.headers.subscribe" => {
            let last = script.headers.len().checked_sub(1).ok_or((1, "no headers".to_string()))?;
            let height = script.height.unwrap_or(last as u64);
            let hex = usize::try_from(height).ok().and_then(|h| script.headers.get(h)).unwrap_or(&script.headers[last]);
            Ok(json!({"hex": hex, "height": height}))
        }
        "blockchain.block.header" => {
            // [height] or [height, cp_height] (by position) or {"height": h} (by name).
            let h = params.get(0).or_else(|| params.get("height")).and_then(Value::as_u64);
            let h = h.ok_or((-32602, format!("invalid params: {params}")))?;
            match usize::try_from(h).ok().and_then(|h| script.headers.get(h)) {
                Some(hex) => Ok(json!(hex)),
                None => Err((1, format!("height {h} out of range"))),
            }
        }
        _ => Err((-32601, format!("unknown method \"{method}\""))),
    }
}
