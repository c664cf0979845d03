//! The Electrum protocol, versions 1.4 to 1.6: version negotiation, parameter checking and the
//! methods. `session` owns the connections and calls `handle_request` for each request.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::block::{parse_transaction, sha256d};
use crate::daemon::DaemonError;
use crate::index::{HistoryTooLarge, Snapshot};
use crate::mempool::MempoolEntry;
use crate::merkle;
use crate::schema::{hashx_from_scripthash, hex_rev, parse_hex_rev32, push_hex32, HashX, Txid};
use crate::session::{Manager, SessionState};
use crate::transactions::{TxError, TxLocation};

/// JSON-RPC and Electrum error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const EXCESSIVE_RESOURCE_USAGE: i64 = -101;
pub const SERVER_BUSY: i64 = -102;
/// A bad argument value (ElectrumX's BAD_REQUEST).
pub const BAD_REQUEST: i64 = 1;
/// The daemon failed or refused (ElectrumX's DAEMON_ERROR).
pub const DAEMON_ERROR: i64 = 2;
pub const HISTORY_TOO_LARGE: i64 = 10001;

/// Protocol versions ferrum speaks, oldest first (1.5 was skipped by the protocol).
pub const VERSIONS: &[Version] =
    &[Version(1, 4, 0), Version(1, 4, 1), Version(1, 4, 2), Version(1, 4, 3), Version(1, 6, 0)];
pub const PROTOCOL_MIN: Version = VERSIONS[0];
pub const PROTOCOL_MAX: Version = VERSIONS[VERSIONS.len() - 1];

/// Most headers one `blockchain.block.headers` returns (a difficulty period).
pub const MAX_HEADERS: u32 = 2016;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let rev = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        parts.next().is_none().then_some(Version(major, minor, rev))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.2 == 0 {
            write!(f, "{}.{}", self.0, self.1)
        } else {
            write!(f, "{}.{}.{}", self.0, self.1, self.2)
        }
    }
}

/// The version both sides speak: the highest of ours within the client's range and ours.
pub fn negotiate(client_min: Version, client_max: Version) -> Option<Version> {
    let hi = client_max.min(PROTOCOL_MAX);
    let lo = client_min.max(PROTOCOL_MIN);
    VERSIONS.iter().rev().find(|v| **v <= hi && **v >= lo).copied()
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// Close the connection after sending the error.
    pub close: bool,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), close: false }
    }

    pub fn bad_request(message: impl Into<String>) -> RpcError {
        RpcError::new(BAD_REQUEST, message)
    }

    pub fn closing(mut self) -> RpcError {
        self.close = true;
        self
    }

    fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    fn internal(e: anyhow::Error) -> RpcError {
        if e.downcast_ref::<HistoryTooLarge>().is_some() {
            return RpcError::new(HISTORY_TOO_LARGE, "history too large");
        }
        tracing::error!("a request failed reading the index: {e:#}");
        RpcError::new(INTERNAL_ERROR, "internal error reading the index")
    }

    pub fn daemon(e: DaemonError) -> RpcError {
        match e {
            DaemonError::Rpc { message, .. } => RpcError::new(DAEMON_ERROR, format!("daemon error: {message}")),
            DaemonError::MethodNotFound(m) => RpcError::new(DAEMON_ERROR, format!("the daemon does not support {m}")),
            DaemonError::Shutdown => RpcError::new(SERVER_BUSY, "the server is shutting down"),
        }
    }
}

type RpcResult = Result<Value, RpcError>;

/// An answer: a JSON value, or a JSON-RPC response written directly as text. Histories,
/// unspent lists and mempool lists are written as text: on a 200,000-entry history, building a
/// `Value` per entry (a map, two keys, a hex string) and freeing it took longer than all the
/// index reads.
pub enum Reply {
    Value(Value),
    /// `{"jsonrpc":"2.0","result":…` lacking only the id: `finish_response` appends it, so the
    /// megabytes before it are written once, in place.
    Response(String),
}

/// Completes a `Reply::Response` with the request's id.
pub fn finish_response(mut text: String, id: &Value) -> String {
    text.push_str(",\"id\":");
    text.push_str(&id.to_string());
    text.push('}');
    text
}

/// A method's parameters by position, from a positional array or by-name object.
pub struct Args(Vec<Option<Value>>);

impl Args {
    /// Checks count and names against the method's parameter list (`required` of them needed).
    fn bind(params: Option<Value>, names: &[&str], required: usize, lenient: bool) -> Result<Args, RpcError> {
        let mut out: Vec<Option<Value>> = vec![None; names.len()];
        match params {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                if items.len() > names.len() && !lenient {
                    return Err(RpcError::invalid_params(format!(
                        "too many parameters: {} given, at most {} accepted ({})",
                        items.len(),
                        names.len(),
                        names.join(", ")
                    )));
                }
                for (slot, v) in out.iter_mut().zip(items) {
                    *slot = Some(v);
                }
            }
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    match names.iter().position(|n| *n == k) {
                        Some(i) => out[i] = Some(v),
                        None if lenient => {}
                        None => return Err(RpcError::invalid_params(format!("unknown parameter {k:?}"))),
                    }
                }
            }
            Some(_) => return Err(RpcError::new(INVALID_REQUEST, "params must be an array or an object")),
        }
        if let Some(missing) = (0..required).find(|i| out[*i].is_none()) {
            return Err(RpcError::invalid_params(format!("missing parameter {:?}", names[missing])));
        }
        Ok(Args(out))
    }

    fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i).and_then(|v| v.as_ref())
    }

    fn str(&self, i: usize, name: &str) -> Result<&str, RpcError> {
        self.get(i).and_then(Value::as_str).ok_or_else(|| RpcError::invalid_params(format!("{name} must be a string")))
    }

    /// A non-negative integer that fits u32 (heights, counts, positions).
    fn u32_or(&self, i: usize, name: &str, default: u32) -> Result<u32, RpcError> {
        match self.get(i) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| RpcError::invalid_params(format!("{name} must be a non-negative integer"))),
        }
    }

    fn bool_or(&self, i: usize, name: &str, default: bool) -> Result<bool, RpcError> {
        match self.get(i) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            // Some clients send 0/1.
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => Ok(n.as_u64() == Some(1)),
            Some(_) => Err(RpcError::invalid_params(format!("{name} must be a boolean"))),
        }
    }

    fn hash(&self, i: usize, name: &str) -> Result<[u8; 32], RpcError> {
        parse_hex_rev32(self.str(i, name)?)
            .ok_or_else(|| RpcError::bad_request(format!("{name} must be 64 hexadecimal characters")))
    }

    fn scripthash(&self, i: usize) -> Result<([u8; 32], HashX), RpcError> {
        let sh = self.hash(i, "scripthash")?;
        Ok((sh, hashx_from_scripthash(&sh)))
    }
}

/// Parameter names of each method, how many are required, and the versions offering it.
fn signature(method: &str, v: Version) -> Option<(&'static [&'static str], usize)> {
    let v16 = v >= Version(1, 6, 0);
    Some(match method {
        "server.version" => (&["client_name", "protocol_version"], 0),
        "server.features" | "server.banner" | "server.donation_address" | "server.peers.subscribe" => (&[], 0),
        "server.ping" => (&["pong_len", "data"], 0),
        "server.add_peer" => (&["features"], 1),
        "blockchain.headers.subscribe" => (&[], 0),
        "blockchain.block.header" => (&["height", "cp_height"], 1),
        "blockchain.block.headers" => (&["start_height", "count", "cp_height"], 2),
        "blockchain.estimatefee" => (&["number", "mode"], 1),
        "blockchain.relayfee" if !v16 => (&[], 0),
        "blockchain.scripthash.get_balance"
        | "blockchain.scripthash.get_history"
        | "blockchain.scripthash.get_mempool"
        | "blockchain.scripthash.listunspent"
        | "blockchain.scripthash.subscribe"
        | "blockchain.scripthash.unsubscribe" => (&["scripthash"], 1),
        "blockchain.transaction.broadcast" => (&["raw_tx"], 1),
        "blockchain.transaction.broadcast_package" if v16 => (&["raw_txs", "verbose"], 1),
        "blockchain.transaction.get" => (&["tx_hash", "verbose"], 1),
        "blockchain.transaction.get_merkle" if v16 => (&["tx_hash", "height"], 1),
        "blockchain.transaction.get_merkle" => (&["tx_hash", "height"], 2),
        "blockchain.transaction.id_from_pos" => (&["height", "tx_pos", "merkle"], 2),
        "mempool.get_fee_histogram" => (&[], 0),
        "mempool.get_info" if v16 => (&[], 0),
        _ => return None,
    })
}

/// Answers one request; the caller wraps the result in the JSON-RPC envelope.
pub async fn handle_request(
    mgr: &Arc<Manager>,
    s: &mut SessionState,
    method: &str,
    params: Option<Value>,
) -> Result<Reply, RpcError> {
    let version = match s.version {
        Some(v) => v,
        None if method == "server.version" => PROTOCOL_MAX,
        // Protocol 1.6 requires negotiation first; older clients always negotiate too.
        None => return Err(RpcError::bad_request("server.version must be the first request of a session")),
    };
    let Some((names, required)) = signature(method, version) else {
        return Err(RpcError::new(METHOD_NOT_FOUND, format!("unknown method {method:?}")));
    };
    // From 1.6 extra server.version parameters are ignored.
    let args = Args::bind(params, names, required, method == "server.version")?;
    match method {
        "blockchain.scripthash.get_history" => {
            let (_, hashx) = args.scripthash(0)?;
            let limit = mgr.history_limit();
            mgr.read(move |snap| {
                let nums = snap.history_nums(&hashx, limit, false).map_err(RpcError::internal)?;
                let mempool = snap.mempool().history(&hashx);
                let mut list = ListWriter::with_capacity(nums.len() + mempool.len(), 100);
                snap.visit_txs(&nums, |txid, height| list.entry(&txid, &[("height", height as i64)]))
                    .map_err(RpcError::internal)?;
                list.mempool_entries(&mempool);
                list.finish()
            })
            .await
        }
        "blockchain.scripthash.get_mempool" => {
            let (_, hashx) = args.scripthash(0)?;
            mgr.read(move |snap| {
                let mempool = snap.mempool().history(&hashx);
                let mut list = ListWriter::with_capacity(mempool.len(), 110);
                list.mempool_entries(&mempool);
                list.finish()
            })
            .await
        }
        "blockchain.scripthash.listunspent" => {
            let (_, hashx) = args.scripthash(0)?;
            let limit = mgr.history_limit();
            mgr.read(move |snap| {
                let utxos = snap.unspent(&hashx, limit).map_err(RpcError::internal)?;
                let mut list = ListWriter::with_capacity(utxos.len(), 140);
                for u in &utxos {
                    list.entry(
                        &u.txid,
                        &[("tx_pos", u.vout as i64), ("height", u.height as i64), ("value", u.value as i64)],
                    );
                }
                list.finish()
            })
            .await
        }
        _ => answer_value(mgr, s, method, &args, version).await.map(Reply::Value),
    }
}

/// Answers every method whose answer is a JSON value.
async fn answer_value(
    mgr: &Arc<Manager>,
    s: &mut SessionState,
    method: &str,
    args: &Args,
    version: Version,
) -> RpcResult {
    match method {
        "server.version" => server_version(mgr, s, args),
        "server.features" => Ok(mgr.features()),
        "server.banner" => Ok(Value::String(mgr.banner().await)),
        "server.donation_address" => Ok(Value::String(mgr.config.donation_address.clone())),
        "server.peers.subscribe" => Ok(json!([])),
        "server.add_peer" => Ok(Value::Bool(false)),
        "server.ping" => Ok(Value::Null),
        "blockchain.headers.subscribe" => {
            s.headers_subscribed = true;
            let (height, header) = mgr.tip().ok_or_else(|| RpcError::new(SERVER_BUSY, "the index is empty"))?;
            s.last_tip_sent = Some(header);
            Ok(header_json(height, &header))
        }
        "blockchain.block.header" => {
            let height = args.u32_or(0, "height", 0)?;
            let cp_height = args.u32_or(1, "cp_height", 0)?;
            mgr.read(move |snap| block_header(snap, height, cp_height)).await
        }
        "blockchain.block.headers" => {
            let start = args.u32_or(0, "start_height", 0)?;
            let count = args.u32_or(1, "count", 0)?;
            let cp_height = args.u32_or(2, "cp_height", 0)?;
            mgr.read(move |snap| block_headers(snap, start, count, cp_height, version)).await
        }
        "blockchain.estimatefee" => {
            let number = args.u32_or(0, "number", 0)?;
            let mode = match args.get(1) {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) => {
                    let m = m.to_ascii_uppercase();
                    if !["CONSERVATIVE", "ECONOMICAL", "UNSET"].contains(&m.as_str()) {
                        return Err(RpcError::bad_request(format!("unknown estimatefee mode: {m}")));
                    }
                    Some(m)
                }
                Some(_) => return Err(RpcError::invalid_params("mode must be a string")),
            };
            Ok(mgr.estimatefee(number, mode).await)
        }
        "blockchain.relayfee" => mgr.relayfee().await,
        "blockchain.scripthash.get_balance" => {
            let (_, hashx) = args.scripthash(0)?;
            mgr.read(move |snap| {
                let (confirmed, unconfirmed) = snap.balance(&hashx).map_err(RpcError::internal)?;
                Ok(json!({"confirmed": confirmed, "unconfirmed": unconfirmed}))
            })
            .await
        }
        "blockchain.scripthash.subscribe" => {
            let (sh, hashx) = args.scripthash(0)?;
            // Register before reading, so a change published meanwhile is not missed.
            if !s.subs.contains_key(&sh) {
                mgr.register(&sh, &hashx);
            }
            let limit = mgr.history_limit();
            let status = mgr.read(move |snap| snap.status(&hashx, limit).map_err(RpcError::internal)).await;
            match status {
                Ok(status) => {
                    s.subs.insert(sh, status);
                    Ok(status.map_or(Value::Null, |st| Value::String(hex::encode(st))))
                }
                Err(e) => {
                    if !s.subs.contains_key(&sh) {
                        mgr.unregister(&sh, &hashx);
                    }
                    Err(e)
                }
            }
        }
        "blockchain.scripthash.unsubscribe" => {
            let (sh, hashx) = args.scripthash(0)?;
            let was = s.subs.remove(&sh).is_some();
            if was {
                mgr.unregister(&sh, &hashx);
            }
            Ok(Value::Bool(was))
        }
        "blockchain.transaction.broadcast" => {
            let raw = args.str(0, "raw_tx")?;
            let Some(bytes) = hex::decode(raw).ok().filter(|b| !b.is_empty()) else {
                return Err(RpcError::bad_request("raw_tx must be a transaction in hexadecimal"));
            };
            match mgr.daemon_call("sendrawtransaction", json!([raw])).await? {
                Ok(txid) => {
                    mgr.wake_mempool();
                    Ok(txid)
                }
                Err(DaemonError::Rpc { code, message }) => match already_in_mempool(mgr, &bytes, code, &message) {
                    Some(txid) => Ok(Value::String(txid)),
                    None => Err(RpcError::bad_request(format!(
                        "the transaction was rejected by network rules.\n\n{message}"
                    ))),
                },
                Err(e) => Err(RpcError::daemon(e)),
            }
        }
        "blockchain.transaction.broadcast_package" => {
            let txs = match args.get(0) {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|v| v.as_str().filter(|s| hex::decode(s).is_ok()).map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| RpcError::bad_request("raw_txs must be a list of hexadecimal transactions"))?,
                _ => return Err(RpcError::invalid_params("raw_txs must be a non-empty list")),
            };
            let verbose = args.bool_or(1, "verbose", false)?;
            let answer = match mgr.daemon_call("submitpackage", json!([txs])).await? {
                Ok(answer) => answer,
                Err(DaemonError::MethodNotFound(_)) => broadcast_one_by_one(mgr, &txs).await?,
                Err(e) => return Err(RpcError::daemon(e)),
            };
            mgr.wake_mempool();
            Ok(package_result(&answer, verbose))
        }
        "blockchain.transaction.get" => {
            let txid = Txid(args.hash(0, "tx_hash")?);
            let verbose = args.bool_or(1, "verbose", false)?;
            transaction_get(mgr, txid, verbose).await
        }
        "blockchain.transaction.get_merkle" => {
            let txid = Txid(args.hash(0, "tx_hash")?);
            let height = match args.get(1) {
                None | Some(Value::Null) => None,
                Some(_) => Some(args.u32_or(1, "height", 0)?),
            };
            mgr.read(move |snap| get_merkle(snap, txid, height, version)).await
        }
        "blockchain.transaction.id_from_pos" => {
            let height = args.u32_or(0, "height", 0)?;
            let pos = args.u32_or(1, "tx_pos", 0)?;
            let with_merkle = args.bool_or(2, "merkle", false)?;
            mgr.read(move |snap| id_from_pos(snap, height, pos, with_merkle)).await
        }
        "mempool.get_fee_histogram" => {
            mgr.read(|snap| {
                Ok(Value::Array(
                    snap.mempool()
                        .fee_histogram()
                        .iter()
                        .map(|(rate, vsize)| json!([fee_rate_json(*rate), vsize]))
                        .collect(),
                ))
            })
            .await
        }
        "mempool.get_info" => mgr.mempool_info().await,
        _ => Err(RpcError::new(METHOD_NOT_FOUND, format!("unknown method {method:?}"))),
    }
}

/// A whole fee rate as an integer, otherwise one decimal.
fn fee_rate_json(rate: f64) -> Value {
    if rate.fract() == 0.0 && rate < 1e15 {
        json!(rate as u64)
    } else {
        json!(rate)
    }
}

fn server_version(mgr: &Manager, s: &mut SessionState, args: &Args) -> RpcResult {
    if s.version.is_some() {
        return Err(RpcError::bad_request("server.version already sent"));
    }
    let client = match args.get(0) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c.clone(),
        Some(other) => other.to_string(),
    };
    if let Some(re) = &mgr.config.drop_client {
        if re.is_match(&client) {
            return Err(RpcError::bad_request(format!("unsupported client: {client}")).closing());
        }
    }
    s.client = client.chars().take(40).collect();
    let (lo, hi) = match args.get(1) {
        None | Some(Value::Null) => (PROTOCOL_MIN, PROTOCOL_MIN),
        Some(Value::String(v)) => {
            let v = Version::parse(v)
                .ok_or_else(|| RpcError::bad_request(format!("invalid protocol version: {v}")).closing())?;
            (v, v)
        }
        Some(Value::Array(pair)) if pair.len() == 2 => {
            let parse = |v: &Value| v.as_str().and_then(Version::parse);
            match (parse(&pair[0]), parse(&pair[1])) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(RpcError::bad_request("invalid protocol version range").closing()),
            }
        }
        Some(other) => return Err(RpcError::bad_request(format!("invalid protocol version: {other}")).closing()),
    };
    let Some(v) = negotiate(lo, hi) else {
        return Err(RpcError::bad_request(format!(
            "unsupported protocol version: ferrum speaks {PROTOCOL_MIN} to {PROTOCOL_MAX}"
        ))
        .closing());
    };
    s.version = Some(v);
    Ok(json!([crate::server_version(), v.to_string()]))
}

/// Writes a response whose result is an array of objects, each a "tx_hash" and integer
/// fields, into one string.
struct ListWriter {
    out: String,
    empty: bool,
}

impl ListWriter {
    const HEAD: &'static str = "{\"jsonrpc\":\"2.0\",\"result\":[";

    /// `bytes_each` should not be short: growing an 18 MB string past its capacity copies it
    /// all. Entries take up to 96 bytes (history), 108 (mempool) and 135 (unspent).
    fn with_capacity(entries: usize, bytes_each: usize) -> ListWriter {
        // The tail: "]", the id and the transport's newline.
        let mut out = String::with_capacity(Self::HEAD.len() + entries * bytes_each + 64);
        out.push_str(Self::HEAD);
        ListWriter { out, empty: true }
    }

    fn entry(&mut self, txid: &Txid, fields: &[(&str, i64)]) {
        if !std::mem::replace(&mut self.empty, false) {
            self.out.push(',');
        }
        self.out.push_str("{\"tx_hash\":\"");
        push_hex32(&mut self.out, &txid.0, true);
        self.out.push('"');
        let mut num = itoa::Buffer::new();
        for (name, value) in fields {
            self.out.push_str(",\"");
            self.out.push_str(name);
            self.out.push_str("\":");
            self.out.push_str(num.format(*value));
        }
        self.out.push('}');
    }

    /// Unconfirmed entries, as get_history and get_mempool list them.
    fn mempool_entries(&mut self, entries: &[MempoolEntry]) {
        for e in entries {
            self.entry(&e.txid, &[("height", e.height as i64), ("fee", e.fee as i64)]);
        }
    }

    fn finish(mut self) -> Result<Reply, RpcError> {
        self.out.push(']');
        Ok(Reply::Response(self.out))
    }
}

fn header_hex(h: &[u8; 80]) -> String {
    hex::encode(h)
}

/// A tip as `blockchain.headers.subscribe` answers and notifies it.
pub fn header_json(height: u32, header: &[u8; 80]) -> Value {
    json!({"hex": header_hex(header), "height": height})
}

fn proof_json(snap: &Snapshot, height: u32, cp_height: u32) -> Result<Map<String, Value>, RpcError> {
    let tip = snap.height().unwrap_or(0);
    let (branch, root) = snap.header_proof(height, cp_height).ok_or_else(|| {
        RpcError::bad_request(format!("require header height {height} <= cp_height {cp_height} <= chain height {tip}"))
    })?;
    let mut m = Map::new();
    m.insert("branch".into(), Value::Array(branch.iter().map(|b| Value::String(hex_rev(b))).collect()));
    m.insert("root".into(), Value::String(hex_rev(&root)));
    Ok(m)
}

fn block_header(snap: &Snapshot, height: u32, cp_height: u32) -> RpcResult {
    let header = snap.header(height).ok_or_else(|| {
        RpcError::bad_request(format!("height {height} out of range (chain height {})", snap.height().unwrap_or(0)))
    })?;
    if cp_height == 0 {
        return Ok(Value::String(header_hex(&header)));
    }
    let mut m = proof_json(snap, height, cp_height)?;
    m.insert("header".into(), Value::String(header_hex(&header)));
    Ok(Value::Object(m))
}

fn block_headers(snap: &Snapshot, start: u32, count: u32, cp_height: u32, v: Version) -> RpcResult {
    let headers = snap.headers(start, count.min(MAX_HEADERS));
    let mut m = Map::new();
    m.insert("count".into(), json!(headers.len()));
    if v >= Version(1, 6, 0) {
        m.insert("headers".into(), Value::Array(headers.iter().map(|h| Value::String(header_hex(h))).collect()));
    } else {
        m.insert("hex".into(), Value::String(hex::encode(headers.concat())));
    }
    m.insert("max".into(), json!(MAX_HEADERS));
    if cp_height != 0 && !headers.is_empty() {
        let last = start + headers.len() as u32 - 1;
        m.extend(proof_json(snap, last, cp_height)?);
    }
    Ok(Value::Object(m))
}

fn get_merkle(snap: &Snapshot, txid: Txid, height: Option<u32>, v: Version) -> RpcResult {
    let Some((at, pos)) = snap.tx_location(&txid).map_err(RpcError::internal)? else {
        return Err(RpcError::bad_request(format!("transaction {txid} is not confirmed in the indexed chain")));
    };
    if height.is_some_and(|h| h != at) {
        return Err(RpcError::bad_request(format!(
            "transaction {txid} is not in the block at height {}",
            height.unwrap_or(0)
        )));
    }
    let txids =
        snap.block_txids(at).map_err(RpcError::internal)?.ok_or_else(|| RpcError::bad_request("no such block"))?;
    let (branch, _) = merkle::branch_and_root(txids.iter().map(|t| t.0).collect(), pos as usize, None);
    let mut m = json!({
        "block_height": at,
        "pos": pos,
        "merkle": branch.iter().map(|b| hex_rev(b)).collect::<Vec<_>>(),
    });
    if v >= Version(1, 6, 0) {
        m["block_hash"] = Value::String(snap.block_hash(at).map(|h| hex_rev(&h)).unwrap_or_default());
    }
    Ok(m)
}

fn id_from_pos(snap: &Snapshot, height: u32, pos: u32, with_merkle: bool) -> RpcResult {
    let txids = snap.block_txids(height).map_err(RpcError::internal)?.ok_or_else(|| {
        RpcError::bad_request(format!("height {height} out of range (chain height {})", snap.height().unwrap_or(0)))
    })?;
    let Some(txid) = txids.get(pos as usize).copied() else {
        return Err(RpcError::bad_request(format!("no transaction at position {pos} of block {height}")));
    };
    if !with_merkle {
        return Ok(Value::String(txid.to_string()));
    }
    let (branch, _) = merkle::branch_and_root(txids.iter().map(|t| t.0).collect(), pos as usize, None);
    Ok(json!({"tx_hash": txid.to_string(), "merkle": branch.iter().map(|b| hex_rev(b)).collect::<Vec<_>>()}))
}

async fn transaction_get(mgr: &Arc<Manager>, txid: Txid, verbose: bool) -> RpcResult {
    // Where the index has it confirmed: the daemon then needs no txindex (see `transactions`).
    let location = mgr
        .read(move |snap| {
            let loc = snap.tx_location(&txid).map_err(RpcError::internal)?;
            Ok(loc.and_then(|(height, pos)| {
                snap.block_hash(height).map(|block_hash| TxLocation { block_hash, height, pos })
            }))
        })
        .await?;
    match tokio::time::timeout(mgr.config.request_timeout, mgr.transactions.get(txid, verbose, location)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(TxError::NotFound(message))) => Err(RpcError::bad_request(message)),
        Ok(Err(TxError::Daemon(e))) => Err(RpcError::daemon(e)),
        Err(_) => Err(RpcError::new(SERVER_BUSY, "the daemon is not answering; try again later")),
    }
}

/// `submitpackage` for daemons without it: the transactions one by one, parents first as the
/// client listed them, answered in submitpackage's shape.
async fn broadcast_one_by_one(mgr: &Arc<Manager>, txs: &[String]) -> RpcResult {
    let mut results = Map::new();
    let mut failed = false;
    for raw in txs {
        let bytes = hex::decode(raw).map_err(|_| RpcError::bad_request("raw_txs must be hexadecimal"))?;
        let (tx, _) = parse_transaction(&bytes, mgr.config.coin)
            .map_err(|e| RpcError::bad_request(format!("a transaction of the package does not parse: {e}")))?;
        let wtxid = hex_rev(&sha256d(&bytes));
        let mut result = json!({"txid": tx.txid.to_string()});
        match mgr.daemon_call("sendrawtransaction", json!([raw])).await? {
            Ok(_) => {}
            Err(DaemonError::Rpc { message, .. }) => {
                failed = true;
                result["error"] = Value::String(message);
            }
            Err(e) => return Err(RpcError::daemon(e)),
        }
        results.insert(wtxid, result);
    }
    let msg = if failed { "transaction failed" } else { "success" };
    Ok(json!({"package_msg": msg, "tx-results": results, "replaced-transactions": []}))
}

/// The txid of a broadcast transaction the node (or our mirror of its mempool) already holds:
/// Bitcoin Core answers such a broadcast with the txid, the Bitcoin SV node with error -27
/// "Transaction already in the mempool"; clients get the txid from ferrum either way.
fn already_in_mempool(mgr: &Manager, raw: &[u8], code: i64, message: &str) -> Option<String> {
    let (tx, _) = parse_transaction(raw, mgr.config.coin).ok()?;
    let known = mgr.index.snapshot().mempool().contains(&tx.txid);
    (known || (code == -27 && message.contains("mempool"))).then(|| tx.txid.to_string())
}

fn package_result(answer: &Value, verbose: bool) -> Value {
    if verbose {
        return answer.clone();
    }
    let success = answer["package_msg"].as_str() == Some("success");
    let mut out = json!({"success": success});
    let errors: Vec<Value> = answer["tx-results"]
        .as_object()
        .map(|results| {
            results.values().filter_map(|r| r.get("error").map(|e| json!({"txid": r["txid"], "error": e}))).collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors);
    }
    out
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

/// Parses the request envelope: (id, method, params) or the error to send.
#[allow(clippy::type_complexity)]
pub fn parse_request(v: Value) -> Result<(Option<Value>, String, Option<Value>), (Value, RpcError)> {
    let Value::Object(mut obj) = v else {
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, "a request must be a JSON object")));
    };
    let id = obj.remove("id");
    let id_for_error = id.clone().unwrap_or(Value::Null);
    if id.as_ref().is_some_and(|i| !(i.is_string() || i.is_number() || i.is_null())) {
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, "id must be a string, a number or null")));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err((id_for_error, RpcError::new(INVALID_REQUEST, "a request needs a method string"))),
    };
    Ok((id, method, obj.remove("params")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_writer_writes_the_json_a_value_would() {
        let (a, b) = (Txid([1; 32]), Txid([0xab; 32]));
        let mut list = ListWriter::with_capacity(2, 10);
        list.entry(&a, &[("height", 7)]);
        list.entry(&b, &[("height", -1), ("fee", 2_100_000_000_000_000)]);
        let text = |list: ListWriter| match list.finish() {
            Ok(Reply::Response(text)) => finish_response(text, &json!(5)),
            _ => panic!("a response"),
        };
        let parsed: Value = serde_json::from_str(&text(list)).unwrap();
        let result = json!([
            {"tx_hash": a.to_string(), "height": 7},
            {"tx_hash": b.to_string(), "height": -1, "fee": 2_100_000_000_000_000u64},
        ]);
        assert_eq!(parsed, json!({"jsonrpc": "2.0", "id": 5, "result": result}));
        let empty: Value = serde_json::from_str(&text(ListWriter::with_capacity(0, 90))).unwrap();
        assert_eq!(empty, json!({"jsonrpc": "2.0", "id": 5, "result": []}));
    }

    #[test]
    fn version_negotiation() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(negotiate(v("1.4"), v("1.4")), Some(v("1.4")));
        assert_eq!(negotiate(v("1.2"), v("1.4.2")), Some(v("1.4.2")));
        assert_eq!(negotiate(v("1.4"), v("1.6")), Some(v("1.6")));
        assert_eq!(negotiate(v("1.4"), v("1.7")), Some(v("1.6")));
        assert_eq!(negotiate(v("1.4"), v("1.5")), Some(v("1.4.3")), "1.5 does not exist");
        assert_eq!(negotiate(v("1.0"), v("1.2")), None);
        assert_eq!(negotiate(v("1.7"), v("1.8")), None);
        assert_eq!(v("1.4.2").to_string(), "1.4.2");
        assert_eq!(v("1.6").to_string(), "1.6");
        assert!(
            Version::parse("1").is_none() && Version::parse("x.y").is_none() && Version::parse("1.4.2.1").is_none()
        );
    }

    #[test]
    fn arguments_by_position_and_name() {
        let names = &["height", "cp_height"];
        let a = Args::bind(Some(json!([5])), names, 1, false).unwrap();
        assert_eq!(a.u32_or(0, "height", 0).unwrap(), 5);
        assert_eq!(a.u32_or(1, "cp_height", 0).unwrap(), 0);
        let a = Args::bind(Some(json!({"cp_height": 9, "height": 3})), names, 1, false).unwrap();
        assert_eq!((a.u32_or(0, "h", 0).unwrap(), a.u32_or(1, "c", 0).unwrap()), (3, 9));
        assert_eq!(Args::bind(Some(json!([])), names, 1, false).err().unwrap().code, INVALID_PARAMS);
        assert_eq!(Args::bind(Some(json!([1, 2, 3])), names, 1, false).err().unwrap().code, INVALID_PARAMS);
        assert_eq!(Args::bind(Some(json!({"nope": 1})), names, 0, false).err().unwrap().code, INVALID_PARAMS);
        assert!(Args::bind(Some(json!([1, 2, 3])), names, 1, true).is_ok());
        let a = Args::bind(Some(json!([-1])), names, 1, false).unwrap();
        assert_eq!(a.u32_or(0, "height", 0).unwrap_err().code, INVALID_PARAMS);
        let a = Args::bind(Some(json!(["zz"])), &["scripthash"], 1, false).unwrap();
        assert_eq!(a.scripthash(0).unwrap_err().code, BAD_REQUEST);
    }

    #[test]
    fn estimatefee_answers() {
        assert_eq!(fee_from_daemon(&Ok(json!({"feerate": 0.0002, "blocks": 2}))), json!(0.0002));
        assert_eq!(fee_from_daemon(&Ok(json!({"errors": ["Insufficient data"], "blocks": 0}))), json!(-1));
        assert_eq!(fee_from_daemon(&Err(DaemonError::MethodNotFound("estimatesmartfee".into()))), json!(-1));
    }

    #[test]
    fn package_results() {
        let ok = json!({"package_msg": "success", "tx-results": {"w1": {"txid": "t1", "vsize": 100}}});
        assert_eq!(package_result(&ok, false), json!({"success": true}));
        let bad =
            json!({"package_msg": "transaction failed", "tx-results": {"w1": {"txid": "t1", "error": "bad-txns"}}});
        assert_eq!(
            package_result(&bad, false),
            json!({"success": false, "errors": [{"txid": "t1", "error": "bad-txns"}]})
        );
        assert_eq!(package_result(&bad, true), bad);
    }
}
