//! A client request, parsed once: the method (gated by the negotiated protocol version), its
//! parameters checked and typed, its name (for logs and metrics) and its cost (for the cost
//! model). This is the only place that matches method names.

use serde_json::Value;

use super::version::{Version, V1_6, V1_7};
use crate::jsonrpc::{RpcError, INVALID_REQUEST, METHOD_NOT_FOUND};
use crate::types::{OutPoint, ScriptHash, Txid};

/// The script a request is about: by script hash (1.4–1.6) or by the script itself
/// (`blockchain.scriptpubkey.*`, 1.7), which also decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    pub sh: ScriptHash,
    pub by_spk: bool,
}

/// Most transactions one `testmempoolaccept` takes (Bitcoin Core's package limit).
pub const MAX_TEST_TXS: usize = 25;

/// Most headers one `blockchain.block.headers` returns (a difficulty period).
pub const MAX_HEADERS: u32 = 2016;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Version {
        client: Option<Value>,
        protocol: Option<Value>,
    },
    Features,
    Banner,
    DonationAddress,
    PeersSubscribe,
    AddPeer {
        features: Value,
    },
    /// 1.7's `server.ping(pong_len, data)`: answer `pong_len` hex characters (earlier: null).
    Ping {
        pong_len: Option<usize>,
    },
    HeadersSubscribe,
    BlockHeader {
        height: u32,
        cp_height: u32,
    },
    BlockHeaders {
        start: u32,
        count: u32,
        cp_height: u32,
    },
    EstimateFee {
        number: u32,
        mode: Option<String>,
    },
    RelayFee,
    GetBalance(Script),
    /// With ferrum's (and Fulcrum's) height range: blocks `from..to`, `to` `None` meaning to
    /// the tip and the mempool too.
    GetHistory {
        sh: Script,
        from: u32,
        to: Option<u32>,
    },
    GetMempool(Script),
    ListUnspent(Script),
    Subscribe(Script),
    Unsubscribe(Script),
    /// `blockchain.outpoint.subscribe` (1.7), with the client's `spk_hint`: the output's script.
    OutpointSubscribe {
        op: OutPoint,
        hint: Vec<u8>,
    },
    OutpointStatus {
        op: OutPoint,
        hint: Vec<u8>,
    },
    OutpointUnsubscribe(OutPoint),
    TestMempoolAccept {
        raws: Vec<String>,
    },
    MempoolRecent,
    Broadcast {
        raw: String,
    },
    BroadcastPackage {
        raws: Vec<String>,
        verbose: bool,
    },
    TransactionGet {
        txid: Txid,
        verbose: bool,
    },
    GetMerkle {
        txid: Txid,
        height: Option<u32>,
    },
    IdFromPos {
        height: u32,
        pos: u32,
        merkle: bool,
    },
    FeeHistogram,
    MempoolInfo,
}

/// A `blockchain.scripthash.*` or (1.7) `blockchain.scriptpubkey.*` request.
fn script_request(a: &Args, method: &str) -> Result<Request, RpcError> {
    let script = a.script(0, method)?;
    Ok(match method.rsplit('.').next().unwrap_or_default() {
        "get_balance" => Request::GetBalance(script),
        "get_history" => {
            let (from, to) = a.height_range(1, 2)?;
            Request::GetHistory { sh: script, from, to }
        }
        "get_mempool" => Request::GetMempool(script),
        "listunspent" => Request::ListUnspent(script),
        "subscribe" => Request::Subscribe(script),
        "unsubscribe" => Request::Unsubscribe(script),
        _ => unreachable!("every script method with a signature is parsed here"),
    })
}

/// Parameter names of each method, how many are required, at protocol `v`; `None` when the
/// method does not exist at that version.
fn signature(method: &str, v: Version) -> Option<(&'static [&'static str], usize)> {
    let (v16, v17) = (v >= V1_6, v >= V1_7);
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
        // The height range is ferrum's extension, as Fulcrum has it (docs/PROTOCOL.md).
        "blockchain.scripthash.get_history" if !v17 => (&["scripthash", "from_height", "to_height"], 1),
        "blockchain.scripthash.get_balance"
        | "blockchain.scripthash.get_mempool"
        | "blockchain.scripthash.listunspent"
        | "blockchain.scripthash.subscribe"
        | "blockchain.scripthash.unsubscribe"
            if !v17 =>
        {
            (&["scripthash"], 1)
        }
        // 1.7 replaces the script-hash methods with these, which take the script itself.
        "blockchain.scriptpubkey.get_history" if v17 => (&["scriptpubkey", "from_height", "to_height"], 1),
        "blockchain.scriptpubkey.get_balance"
        | "blockchain.scriptpubkey.get_mempool"
        | "blockchain.scriptpubkey.listunspent"
        | "blockchain.scriptpubkey.subscribe"
        | "blockchain.scriptpubkey.unsubscribe"
            if v17 =>
        {
            (&["scriptpubkey"], 1)
        }
        "blockchain.outpoint.subscribe" | "blockchain.outpoint.get_status" if v17 => {
            (&["tx_hash", "txout_idx", "spk_hint"], 3)
        }
        "blockchain.outpoint.unsubscribe" if v17 => (&["tx_hash", "txout_idx"], 2),
        "blockchain.transaction.testmempoolaccept" if v17 => (&["raw_txs"], 1),
        "mempool.recent" if v17 => (&[], 0),
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

impl Request {
    /// Every method's name, as `name` gives them.
    pub const NAMES: &'static [&'static str] = &[
        "server.version",
        "server.features",
        "server.banner",
        "server.donation_address",
        "server.peers.subscribe",
        "server.add_peer",
        "server.ping",
        "blockchain.headers.subscribe",
        "blockchain.block.header",
        "blockchain.block.headers",
        "blockchain.estimatefee",
        "blockchain.relayfee",
        "blockchain.scripthash.get_balance",
        "blockchain.scripthash.get_history",
        "blockchain.scripthash.get_mempool",
        "blockchain.scripthash.listunspent",
        "blockchain.scripthash.subscribe",
        "blockchain.scripthash.unsubscribe",
        "blockchain.scriptpubkey.get_balance",
        "blockchain.scriptpubkey.get_history",
        "blockchain.scriptpubkey.get_mempool",
        "blockchain.scriptpubkey.listunspent",
        "blockchain.scriptpubkey.subscribe",
        "blockchain.scriptpubkey.unsubscribe",
        "blockchain.outpoint.subscribe",
        "blockchain.outpoint.get_status",
        "blockchain.outpoint.unsubscribe",
        "blockchain.transaction.testmempoolaccept",
        "blockchain.transaction.broadcast",
        "blockchain.transaction.broadcast_package",
        "blockchain.transaction.get",
        "blockchain.transaction.get_merkle",
        "blockchain.transaction.id_from_pos",
        "mempool.get_fee_histogram",
        "mempool.get_info",
        "mempool.recent",
    ];

    /// Parses a request of a session that negotiated `version` (`None`: not yet).
    pub fn parse(method: &str, params: Option<Value>, version: Option<Version>) -> Result<Request, RpcError> {
        let version = match version {
            Some(v) => v,
            None if method == "server.version" => super::version::PROTOCOL_MAX,
            // Protocol 1.6 requires negotiation first; older clients always negotiate too.
            None => return Err(RpcError::bad_request("server.version must be the first request of a session")),
        };
        let Some((names, required)) = signature(method, version) else {
            return Err(RpcError::new(METHOD_NOT_FOUND, format!("unknown method {method:?}")));
        };
        // From 1.6 extra server.version parameters are ignored. A 1.7 ping notification's only
        // parameter is its padding, where a request's first is pong_len.
        let ping_data = method == "server.ping"
            && matches!(&params, Some(Value::Array(p)) if p.first().is_some_and(Value::is_string));
        let names = if ping_data { &["data"][..] } else { names };
        let mut a = Args::bind(params, names, required, method == "server.version")?;
        Ok(match method {
            "server.version" => Request::Version { client: a.take(0), protocol: a.take(1) },
            "server.features" => Request::Features,
            "server.banner" => Request::Banner,
            "server.donation_address" => Request::DonationAddress,
            "server.peers.subscribe" => Request::PeersSubscribe,
            "server.add_peer" => Request::AddPeer { features: a.take(0).unwrap_or(Value::Null) },
            "server.ping" if version < V1_7 => Request::Ping { pong_len: None },
            "server.ping" => a.ping(ping_data)?,
            "blockchain.headers.subscribe" => Request::HeadersSubscribe,
            "blockchain.block.header" => {
                Request::BlockHeader { height: a.u32_or(0, "height", 0)?, cp_height: a.u32_or(1, "cp_height", 0)? }
            }
            "blockchain.block.headers" => Request::BlockHeaders {
                start: a.u32_or(0, "start_height", 0)?,
                count: a.u32_or(1, "count", 0)?,
                cp_height: a.u32_or(2, "cp_height", 0)?,
            },
            "blockchain.estimatefee" => {
                Request::EstimateFee { number: a.u32_or(0, "number", 0)?, mode: a.fee_mode(1)? }
            }
            "blockchain.relayfee" => Request::RelayFee,
            m if m.starts_with("blockchain.scripthash.") || m.starts_with("blockchain.scriptpubkey.") => {
                script_request(&a, method)?
            }
            "blockchain.outpoint.subscribe" => {
                Request::OutpointSubscribe { op: a.outpoint()?, hint: a.hex_bytes(2, "spk_hint")? }
            }
            "blockchain.outpoint.get_status" => {
                Request::OutpointStatus { op: a.outpoint()?, hint: a.hex_bytes(2, "spk_hint")? }
            }
            "blockchain.outpoint.unsubscribe" => Request::OutpointUnsubscribe(a.outpoint()?),
            "blockchain.transaction.testmempoolaccept" => {
                Request::TestMempoolAccept { raws: a.raw_txs(0, MAX_TEST_TXS)? }
            }
            "mempool.recent" => Request::MempoolRecent,
            "blockchain.transaction.broadcast" => {
                let raw = a.str(0, "raw_tx")?;
                if raw.is_empty() || hex::decode(raw).is_err() {
                    return Err(RpcError::bad_request("raw_tx must be a transaction in hexadecimal"));
                }
                Request::Broadcast { raw: raw.to_string() }
            }
            "blockchain.transaction.broadcast_package" => {
                Request::BroadcastPackage { raws: a.raw_txs(0, usize::MAX)?, verbose: a.bool_or(1, "verbose", false)? }
            }
            "blockchain.transaction.get" => {
                Request::TransactionGet { txid: Txid(a.hash(0, "tx_hash")?), verbose: a.bool_or(1, "verbose", false)? }
            }
            "blockchain.transaction.get_merkle" => {
                let height = match a.get(1) {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(a.u32_or(1, "height", 0)?),
                };
                Request::GetMerkle { txid: Txid(a.hash(0, "tx_hash")?), height }
            }
            "blockchain.transaction.id_from_pos" => Request::IdFromPos {
                height: a.u32_or(0, "height", 0)?,
                pos: a.u32_or(1, "tx_pos", 0)?,
                merkle: a.bool_or(2, "merkle", false)?,
            },
            "mempool.get_fee_histogram" => Request::FeeHistogram,
            "mempool.get_info" => Request::MempoolInfo,
            _ => unreachable!("every method with a signature is parsed above"),
        })
    }

    /// The method's name, as the client sent it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Version { .. } => "server.version",
            Request::Features => "server.features",
            Request::Banner => "server.banner",
            Request::DonationAddress => "server.donation_address",
            Request::PeersSubscribe => "server.peers.subscribe",
            Request::AddPeer { .. } => "server.add_peer",
            Request::Ping { .. } => "server.ping",
            Request::HeadersSubscribe => "blockchain.headers.subscribe",
            Request::BlockHeader { .. } => "blockchain.block.header",
            Request::BlockHeaders { .. } => "blockchain.block.headers",
            Request::EstimateFee { .. } => "blockchain.estimatefee",
            Request::RelayFee => "blockchain.relayfee",
            Request::GetBalance(s) if s.by_spk => "blockchain.scriptpubkey.get_balance",
            Request::GetBalance(_) => "blockchain.scripthash.get_balance",
            Request::GetHistory { sh, .. } if sh.by_spk => "blockchain.scriptpubkey.get_history",
            Request::GetHistory { .. } => "blockchain.scripthash.get_history",
            Request::GetMempool(s) if s.by_spk => "blockchain.scriptpubkey.get_mempool",
            Request::GetMempool(_) => "blockchain.scripthash.get_mempool",
            Request::ListUnspent(s) if s.by_spk => "blockchain.scriptpubkey.listunspent",
            Request::ListUnspent(_) => "blockchain.scripthash.listunspent",
            Request::Subscribe(s) if s.by_spk => "blockchain.scriptpubkey.subscribe",
            Request::Subscribe(_) => "blockchain.scripthash.subscribe",
            Request::Unsubscribe(s) if s.by_spk => "blockchain.scriptpubkey.unsubscribe",
            Request::Unsubscribe(_) => "blockchain.scripthash.unsubscribe",
            Request::OutpointSubscribe { .. } => "blockchain.outpoint.subscribe",
            Request::OutpointStatus { .. } => "blockchain.outpoint.get_status",
            Request::OutpointUnsubscribe(_) => "blockchain.outpoint.unsubscribe",
            Request::TestMempoolAccept { .. } => "blockchain.transaction.testmempoolaccept",
            Request::MempoolRecent => "mempool.recent",
            Request::Broadcast { .. } => "blockchain.transaction.broadcast",
            Request::BroadcastPackage { .. } => "blockchain.transaction.broadcast_package",
            Request::TransactionGet { .. } => "blockchain.transaction.get",
            Request::GetMerkle { .. } => "blockchain.transaction.get_merkle",
            Request::IdFromPos { .. } => "blockchain.transaction.id_from_pos",
            Request::FeeHistogram => "mempool.get_fee_histogram",
            Request::MempoolInfo => "mempool.get_info",
        }
    }

    /// Whether an answer too large for MAX_SEND is a history too large (error 10001) rather
    /// than a response too large.
    pub fn answers_a_history(&self) -> bool {
        matches!(
            self,
            Request::GetBalance(_)
                | Request::GetHistory { .. }
                | Request::GetMempool(_)
                | Request::ListUnspent(_)
                | Request::Subscribe(_)
                | Request::Unsubscribe(_)
        )
    }
}

impl Request {
    /// The request's fixed cost in ElectrumX's cost model (shared/docs limits.md, A5): what
    /// its answer adds (history entries read, outputs listed, merkle work) is counted where the
    /// answer is built, and bandwidth where bytes move.
    pub fn base_cost(&self) -> f64 {
        match self {
            Request::Version { .. } | Request::Banner => 0.5,
            Request::Features => 0.2,
            Request::DonationAddress | Request::Ping { .. } => 0.1,
            Request::PeersSubscribe => 1.0,
            Request::AddPeer { .. } => 100.0,
            Request::HeadersSubscribe => 0.25,
            Request::BlockHeader { cp_height, .. } => {
                if *cp_height == 0 {
                    0.25
                } else {
                    1.25
                }
            }
            Request::BlockHeaders { count, cp_height, .. } => {
                *count as f64 / 50.0 + if *cp_height > 0 && *count > 0 { 1.0 } else { 0.0 }
            }
            Request::EstimateFee { .. } => 0.1,
            Request::RelayFee | Request::FeeHistogram | Request::MempoolInfo => 1.0,
            Request::GetBalance(_) | Request::ListUnspent(_) => 1.0,
            Request::GetMempool(_) | Request::GetHistory { .. } => 0.25,
            Request::Subscribe(_) | Request::Unsubscribe(_) => 0.1,
            Request::TransactionGet { .. } => 1.0,
            Request::Broadcast { raw } => 0.25 + raw.len() as f64 / 5000.0,
            Request::BroadcastPackage { raws, .. } => {
                0.25 + raws.iter().map(String::len).sum::<usize>() as f64 / 5000.0
            }
            Request::GetMerkle { .. } | Request::IdFromPos { .. } => 0.0,
            // A few point reads; the unspendable case may ask nothing more.
            Request::OutpointSubscribe { .. } | Request::OutpointStatus { .. } => 0.2,
            Request::OutpointUnsubscribe(_) => 0.1,
            Request::TestMempoolAccept { raws } => 0.25 + raws.iter().map(String::len).sum::<usize>() as f64 / 5000.0,
            Request::MempoolRecent => 1.0,
        }
    }
}

/// A method's parameters by position, from a positional array or by-name object.
struct Args(Vec<Option<Value>>);

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

    fn take(&mut self, i: usize) -> Option<Value> {
        self.0.get_mut(i).and_then(Option::take)
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
        crate::types::parse_hex_rev32(self.str(i, name)?)
            .ok_or_else(|| RpcError::bad_request(format!("{name} must be 64 hexadecimal characters")))
    }

    /// `from_height` (default 0) and `to_height` (default and -1: to the tip, mempool included),
    /// with `from_height <= to_height`.
    fn height_range(&self, from: usize, to: usize) -> Result<(u32, Option<u32>), RpcError> {
        let from_height = self.u32_or(from, "from_height", 0)?;
        let to_height = match self.get(to) {
            None | Some(Value::Null) => None,
            Some(v) if v.as_i64() == Some(-1) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| *n <= u32::MAX as u64)
                    .map(|n| n as u32)
                    .ok_or_else(|| RpcError::invalid_params("to_height must be a non-negative integer or -1"))?,
            ),
        };
        if to_height.is_some_and(|t| from_height > t) {
            return Err(RpcError::invalid_params("from_height must not be above to_height"));
        }
        Ok((from_height, to_height))
    }

    fn scripthash(&self, i: usize) -> Result<ScriptHash, RpcError> {
        self.hash(i, "scripthash").map(ScriptHash)
    }

    /// 1.7's `server.ping`: `(pong_len, data)` as a request, `(data)` as a notification; the
    /// padding must be hex and is otherwise ignored.
    fn ping(&self, notification_form: bool) -> Result<Request, RpcError> {
        let data = self.get(if notification_form { 0 } else { 1 });
        if data.is_some_and(|d| !d.is_null() && !d.as_str().is_some_and(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))) {
            return Err(RpcError::bad_request("data must be a hexadecimal string"));
        }
        let pong_len = if notification_form { 0 } else { self.u32_or(0, "pong_len", 0)? as usize };
        Ok(Request::Ping { pong_len: Some(pong_len) })
    }

    /// The script of a `scripthash.*` or `scriptpubkey.*` method.
    fn script(&self, i: usize, method: &str) -> Result<Script, RpcError> {
        if method.starts_with("blockchain.scriptpubkey.") {
            let spk = self.hex_bytes(i, "scriptpubkey")?;
            Ok(Script { sh: ScriptHash::of_script(&spk), by_spk: true })
        } else {
            Ok(Script { sh: self.scripthash(i)?, by_spk: false })
        }
    }

    /// Bytes as even-length hexadecimal (the empty string is the empty script).
    fn hex_bytes(&self, i: usize, name: &str) -> Result<Vec<u8>, RpcError> {
        hex::decode(self.str(i, name)?)
            .map_err(|_| RpcError::bad_request(format!("{name} must be a hexadecimal string")))
    }

    /// `tx_hash` and `txout_idx` of the outpoint methods.
    fn outpoint(&self) -> Result<OutPoint, RpcError> {
        let txid = Txid(self.hash(0, "tx_hash")?);
        Ok(OutPoint { txid, vout: self.u32_or(1, "txout_idx", 0)? })
    }

    /// A non-empty list of at most `max` hexadecimal transactions.
    fn raw_txs(&self, i: usize, max: usize) -> Result<Vec<String>, RpcError> {
        match self.get(i) {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= max => items
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty() && hex::decode(s).is_ok()).map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| RpcError::bad_request("raw_txs must be a list of hexadecimal transactions")),
            Some(Value::Array(items)) if items.len() > max => {
                Err(RpcError::invalid_params(format!("raw_txs may hold at most {max} transactions")))
            }
            _ => Err(RpcError::invalid_params("raw_txs must be a non-empty list")),
        }
    }

    /// estimatefee's `mode` (1.6): one of bitcoind's estimate modes.
    fn fee_mode(&self, i: usize) -> Result<Option<String>, RpcError> {
        match self.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(m)) => {
                let m = m.to_ascii_uppercase();
                if !["CONSERVATIVE", "ECONOMICAL", "UNSET"].contains(&m.as_str()) {
                    return Err(RpcError::bad_request(format!("unknown estimatefee mode: {m}")));
                }
                Ok(Some(m))
            }
            Some(_) => Err(RpcError::invalid_params("mode must be a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{BAD_REQUEST, INVALID_PARAMS};
    use serde_json::json;

    const V14: Option<Version> = Some(Version(1, 4, 0));
    const V16: Option<Version> = Some(V1_6);

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
    fn a_parsing_table() {
        let sh = "ab".repeat(32);
        let parse = |m: &str, p: Value, v| Request::parse(m, Some(p), v);
        // Typed parameters, by position or by name.
        assert_eq!(
            parse("blockchain.block.headers", json!({"start_height": 5, "count": 2}), V14),
            Ok(Request::BlockHeaders { start: 5, count: 2, cp_height: 0 })
        );
        assert_eq!(
            parse("blockchain.scripthash.get_history", json!([sh]), V14).map(|r| r.name()),
            Ok("blockchain.scripthash.get_history")
        );
        assert_eq!(
            parse("blockchain.estimatefee", json!([6, "economical"]), V16),
            Ok(Request::EstimateFee { number: 6, mode: Some("ECONOMICAL".into()) })
        );
        assert_eq!(parse("blockchain.estimatefee", json!([6, "BOGUS"]), V16).unwrap_err().code, BAD_REQUEST);
        assert_eq!(
            parse("blockchain.transaction.get_merkle", json!([sh]), V16),
            Ok(Request::GetMerkle { txid: Txid([0xab; 32]), height: None })
        );
        // Version gates: methods come and go with the negotiated version.
        assert_eq!(parse("blockchain.transaction.get_merkle", json!([sh]), V14).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse("blockchain.relayfee", json!([]), V16).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(parse("blockchain.relayfee", json!([]), V14), Ok(Request::RelayFee));
        assert_eq!(parse("mempool.get_info", json!([]), V14).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(
            parse("blockchain.transaction.broadcast_package", json!([["00"]]), V14).unwrap_err().code,
            METHOD_NOT_FOUND
        );
        // Negotiation first; extra server.version parameters are ignored.
        assert_eq!(parse("server.ping", json!([]), None).unwrap_err().code, BAD_REQUEST);
        assert!(parse("server.version", json!(["c", "1.4", "extra"]), None).is_ok());
        assert_eq!(parse("no.such.method", json!([]), V14).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(parse("blockchain.transaction.broadcast", json!(["zz"]), V14).unwrap_err().code, BAD_REQUEST);
        assert_eq!(parse("server.ping", json!("x"), V14).unwrap_err().code, INVALID_REQUEST);
        assert!(parse("blockchain.scripthash.subscribe", json!([sh]), V14).unwrap().answers_a_history());
        assert!(!parse("server.ping", json!([]), V14).unwrap().answers_a_history());
        // 1.7: scriptpubkey methods replace scripthash ones; the script's hash is the key.
        const V17: Option<Version> = Some(V1_7);
        let spk = "0014751e76e8199196d454941c45d1b3a323f1433bd6";
        let by_spk = Script { sh: ScriptHash::of_script(&hex::decode(spk).unwrap()), by_spk: true };
        assert_eq!(parse("blockchain.scriptpubkey.get_balance", json!([spk]), V17), Ok(Request::GetBalance(by_spk)));
        assert_eq!(parse("blockchain.scriptpubkey.get_balance", json!([spk]), V16).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(parse("blockchain.scripthash.get_balance", json!([sh]), V17).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(parse("blockchain.scriptpubkey.subscribe", json!(["0z"]), V17).unwrap_err().code, BAD_REQUEST);
        assert_eq!(parse("blockchain.scriptpubkey.subscribe", json!(["abc"]), V17).unwrap_err().code, BAD_REQUEST);
        assert_eq!(
            parse("blockchain.scriptpubkey.get_history", json!([spk]), V17).unwrap().name(),
            "blockchain.scriptpubkey.get_history"
        );
        // Outpoints: spk_hint required on subscribe and get_status, not on unsubscribe.
        let op = OutPoint { txid: Txid([0xab; 32]), vout: 3 };
        assert_eq!(
            parse("blockchain.outpoint.get_status", json!([sh, 3, "6a00"]), V17),
            Ok(Request::OutpointStatus { op, hint: vec![0x6a, 0] })
        );
        assert_eq!(parse("blockchain.outpoint.get_status", json!([sh, 3]), V17).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse("blockchain.outpoint.subscribe", json!([sh, -1, ""]), V17).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse("blockchain.outpoint.subscribe", json!(["xy", 0, ""]), V17).unwrap_err().code, BAD_REQUEST);
        assert_eq!(parse("blockchain.outpoint.unsubscribe", json!([sh, 3]), V17), Ok(Request::OutpointUnsubscribe(op)));
        assert_eq!(parse("blockchain.outpoint.unsubscribe", json!([sh, 3]), V16).unwrap_err().code, METHOD_NOT_FOUND);
        // Ping: pong_len and data as a request, data alone as a notification.
        assert_eq!(parse("server.ping", json!([4, "00ff"]), V17), Ok(Request::Ping { pong_len: Some(4) }));
        assert_eq!(parse("server.ping", json!(["0000"]), V17), Ok(Request::Ping { pong_len: Some(0) }));
        assert_eq!(parse("server.ping", json!([4, "zz"]), V17).unwrap_err().code, BAD_REQUEST);
        assert_eq!(parse("server.ping", json!([]), V16), Ok(Request::Ping { pong_len: None }));
        let many: Vec<String> = vec!["00".into(); MAX_TEST_TXS + 1];
        assert_eq!(
            parse("blockchain.transaction.testmempoolaccept", json!([many]), V17).unwrap_err().code,
            INVALID_PARAMS
        );
        assert_eq!(parse("mempool.recent", json!([]), V17), Ok(Request::MempoolRecent));
    }
}
