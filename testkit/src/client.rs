//! A minimal Electrum protocol client for the tests: newline-delimited JSON-RPC over TCP or TLS
//! (any certificate accepted: the tests use self-signed ones), with notifications queued while
//! waiting for responses. Every read has a timeout, so a test never hangs on a silent server.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct Client {
    stream: BufReader<Box<dyn Stream>>,
    tcp: TcpStream,
    next_id: u64,
    pub notifications: VecDeque<Value>,
}

/// A raw TCP connection to 127.0.0.1:`port` from `source`, another loopback address.
pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// A JSON-RPC error: (code, message).
pub type RpcErr = (i64, String);

impl Client {
    pub fn tcp(port: u16) -> Client {
        Client::try_tcp(port).expect("connect to ferrum")
    }

    /// A connection from `source` (a loopback address such as 127.1.0.1), so the server sees
    /// a client of another subnet.
    pub fn tcp_from(port: u16, source: std::net::Ipv4Addr) -> Client {
        let tcp = connect_from(source, port).expect("connect to ferrum from the source address");
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let boxed: Box<dyn Stream> = Box::new(tcp.try_clone().unwrap());
        Client { stream: BufReader::new(boxed), tcp, next_id: 1, notifications: VecDeque::new() }
    }

    /// A connection to any address (a server listening on another loopback address).
    pub fn tcp_to(addr: std::net::SocketAddr) -> Client {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let boxed: Box<dyn Stream> = Box::new(tcp.try_clone().unwrap());
        Client { stream: BufReader::new(boxed), tcp, next_id: 1, notifications: VecDeque::new() }
    }

    /// A connection to `addr` from `source` (the address a server sees the client at).
    pub fn tcp_from_to(addr: std::net::SocketAddr, source: std::net::Ipv4Addr) -> Client {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let tcp: TcpStream = socket.into();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let boxed: Box<dyn Stream> = Box::new(tcp.try_clone().unwrap());
        Client { stream: BufReader::new(boxed), tcp, next_id: 1, notifications: VecDeque::new() }
    }

    /// A connection, or why there is none (e.g. refused while ferrum is at MAX_SESSIONS).
    pub fn try_tcp(port: u16) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let boxed: Box<dyn Stream> = Box::new(tcp.try_clone()?);
        Ok(Client { stream: BufReader::new(boxed), tcp, next_id: 1, notifications: VecDeque::new() })
    }

    /// TLS 1.2+ with certificate checks off (self-signed test certificates).
    pub fn tls(port: u16) -> Client {
        use rustls::pki_types::ServerName;
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to ferrum");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // ferrum's own peer-discovery TLS settings: any certificate, signatures still checked.
        let config = ferrum::peers::tls_client_config();
        let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let boxed: Box<dyn Stream> = Box::new(rustls::StreamOwned::new(conn, tcp.try_clone().unwrap()));
        Client { stream: BufReader::new(boxed), tcp, next_id: 1, notifications: VecDeque::new() }
    }

    pub fn set_timeout(&self, d: Duration) {
        self.tcp.set_read_timeout(Some(d)).unwrap();
    }

    /// Sends one raw line (a newline is appended), in one write: two small writes would wait
    /// for the server's delayed ACK of the first (Nagle), ~40 ms a request.
    pub fn send_line(&mut self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let w = self.stream.get_mut();
        w.write_all(&buf).unwrap();
        w.flush().unwrap();
    }

    /// Sends bytes as they are (a hostile client's: not UTF-8, half a line, several lines).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.stream.get_mut();
        w.write_all(bytes)?;
        w.flush()
    }

    /// The next line from the server as sent (without its newline), `None` on timeout or close.
    pub fn read_raw_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stream.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
        }
    }

    /// The next message from the server, `None` on timeout or close.
    pub fn read_message(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.stream.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {line:?}")))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => None,
        }
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.set_timeout(within);
        let mut buf = [0u8; 1];
        let r = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
                Err(_) => break true,
            }
        };
        self.set_timeout(Duration::from_secs(30));
        r
    }

    /// Sends a request line and waits for the response with `id` (queueing notifications).
    pub fn roundtrip(&mut self, request: &Value) -> Value {
        let id = request["id"].clone();
        self.send_line(&request.to_string());
        self.response(&id).unwrap_or_else(|| panic!("no response to {request}"))
    }

    fn response(&mut self, id: &Value) -> Option<Value> {
        loop {
            let msg = self.read_message()?;
            if msg.get("method").is_some() && msg.get("id").is_none() {
                self.notifications.push_back(msg);
                continue;
            }
            if &msg["id"] == id || msg.is_array() {
                return Some(msg);
            }
        }
    }

    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcErr> {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self.roundtrip(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        match resp.get("error") {
            Some(e) if !e.is_null() => {
                Err((e["code"].as_i64().unwrap_or(0), e["message"].as_str().unwrap_or("").to_string()))
            }
            _ => Ok(resp["result"].clone()),
        }
    }

    /// `call` that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params.clone()).unwrap_or_else(|e| panic!("{method}({params}) failed: {e:?}"))
    }

    /// Negotiates the protocol version; returns the negotiated version.
    pub fn version(&mut self, v: Value) -> String {
        let r = self.ok("server.version", json!(["ferrum-test", v]));
        r[1].as_str().unwrap().to_string()
    }

    /// Waits for a notification of `method` matching `pred` (queued or new).
    pub fn wait_notification(
        &mut self,
        method: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.notifications.iter().position(|n| n["method"] == method && pred(&n["params"])) {
                return self.notifications.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.set_timeout(left.min(Duration::from_millis(500)));
            if let Some(msg) = self.read_message() {
                if msg.get("method").is_some() {
                    self.notifications.push_back(msg);
                }
            }
            self.set_timeout(Duration::from_secs(30));
        }
    }

    /// Collects every notification arriving within `d`.
    pub fn drain_notifications(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.set_timeout(left.max(Duration::from_millis(1)));
            match self.read_message() {
                Some(msg) if msg.get("method").is_some() => self.notifications.push_back(msg),
                Some(_) => {}
                None => break,
            }
        }
        self.set_timeout(Duration::from_secs(30));
        self.notifications.drain(..).collect()
    }
}

/// A self-signed certificate and key for "localhost", written as PEM files into `dir`:
/// (cert path, key path).
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c, k)
}

/// The Electrum script hash of a script: sha256, hex in reversed byte order.
pub fn scripthash(script: &[u8]) -> String {
    use bitcoin::hashes::{sha256, Hash};
    let mut h = sha256::Hash::hash(script).to_byte_array();
    h.reverse();
    hex::encode(h)
}

/// The status hash the protocol defines, computed independently of ferrum.
pub fn status_of(entries: &[(String, i64)]) -> Value {
    use bitcoin::hashes::{sha256, Hash};
    if entries.is_empty() {
        return Value::Null;
    }
    let s: String = entries.iter().map(|(t, h)| format!("{t}:{h}:")).collect();
    json!(hex::encode(sha256::Hash::hash(s.as_bytes()).to_byte_array()))
}

/// Folds a merkle branch (display-order hex, deepest first) up from a leaf (internal byte
/// order), as a client verifies a proof.
pub fn fold_branch(leaf: [u8; 32], mut index: u64, branch: &Value) -> [u8; 32] {
    use bitcoin::hashes::{sha256d, Hash};
    let mut h = leaf;
    for b in branch.as_array().expect("a branch is an array") {
        let mut sib: [u8; 32] = hex::decode(b.as_str().expect("hex")).expect("hex").try_into().expect("32 bytes");
        sib.reverse();
        let pair = if index.is_multiple_of(2) { [h, sib].concat() } else { [sib, h].concat() };
        h = sha256d::Hash::hash(&pair).to_byte_array();
        index /= 2;
    }
    h
}
