//! The Electrum methods: one function each (or one per family), answering a parsed `Request`
//! from one consistent snapshot of the index, the daemon, or the session's own state.

use serde_json::{json, Map, Value};

use super::daemon_info::{daemon_error, features};
use super::request::{Request, Script, MAX_HEADERS};
use super::subscriptions::{header_json, tip, SessionSubs};
use super::version::{negotiate, Version, PROTOCOL_MAX, PROTOCOL_MIN, V1_6, V1_7};
use super::Ctx;
use crate::index::merkle;
use crate::index::{HistoryTooLarge, MempoolEntry, Snapshot};
use crate::jsonrpc::{RpcError, EXCESSIVE_RESOURCE_USAGE, HISTORY_TOO_LARGE, INTERNAL_ERROR, RESULT_HEAD, SERVER_BUSY};
use crate::node::transactions::{TxError, TxLocation};
use crate::types::{hex_rev, push_hex, push_hex32, to_hex, HexOrder, ScriptHash, Txid};

type RpcResult = Result<Value, RpcError>;

/// A session's protocol state: what the methods read and change.
pub struct SessionState {
    pub id: u64,
    /// The client's address (peer discovery checks who announces what).
    pub peer: std::net::SocketAddr,
    pub version: Option<Version>,
    pub client: String,
    pub subs: SessionSubs,
}

/// An answer: a JSON value, or a JSON-RPC response written directly as text. Histories,
/// unspent lists and mempool lists are written as text: on a 200,000-entry history, building a
/// `Value` per entry (a map, two keys, a hex string) and freeing it took longer than all the
/// index reads.
pub enum Reply {
    Value(Value),
    /// `RESULT_HEAD` and the result, lacking only the id (`jsonrpc::finish_response`).
    Response(String),
}

/// A history (or page, or mempool list) longer than MAX_SEND allows: 1.7's code, at every version.
pub(super) fn history_too_large() -> RpcError {
    RpcError::new(HISTORY_TOO_LARGE, "history too large")
}

/// An index read that failed: a history over the limit, or the database (logged).
fn index_error(e: anyhow::Error) -> RpcError {
    if e.downcast_ref::<HistoryTooLarge>().is_some() {
        return history_too_large();
    }
    tracing::error!("a request failed reading the index: {e:#}");
    RpcError::new(INTERNAL_ERROR, "internal error reading the index")
}

/// What answering a request cost beyond its base cost (`Request::base_cost`), and what else
/// the session counts.
#[derive(Default, Debug, Clone, Copy)]
pub struct Accounting {
    pub cost: f64,
    pub txs_sent: u64,
    /// Transactions the daemon refused.
    pub txs_rejected: u64,
}

/// The cost of reading a history of `entries` (ElectrumX's, without its cache).
fn history_cost(entries: usize) -> f64 {
    0.2 + 0.001 * entries as f64
}

/// The cost of a block's txid list of `n` transactions, and of a merkle branch over it.
fn txids_cost(n: usize) -> f64 {
    0.25 + 0.0001 * n as f64
}

fn branch_cost(n: usize) -> f64 {
    n as f64 / 2500.0
}

impl Request {
    /// Whether answering changes the session's own state (negotiation, subscriptions): such
    /// requests are answered one at a time, in order, between the others.
    pub fn changes_session(&self) -> bool {
        matches!(
            self,
            Request::Version { .. }
                | Request::HeadersSubscribe
                | Request::Subscribe(_)
                | Request::Unsubscribe(_)
                | Request::OutpointSubscribe { .. }
                | Request::OutpointUnsubscribe(_)
        )
    }
}

/// Answers a request that changes the session's state (see `Request::changes_session`).
pub async fn answer_session(
    ctx: &Ctx,
    s: &mut SessionState,
    request: Request,
    acct: &mut Accounting,
) -> Result<Reply, RpcError> {
    let value = match request {
        Request::Version { client, protocol } => server_version(ctx, s, client, protocol)?,
        Request::HeadersSubscribe => {
            s.subs.headers = true;
            let (height, header) = tip(&ctx.index).ok_or_else(|| RpcError::new(SERVER_BUSY, "the index is empty"))?;
            s.subs.last_tip_sent = Some(header);
            header_json(height, &header)
        }
        Request::Subscribe(script) => subscribe(ctx, s, script.sh, acct).await?,
        Request::Unsubscribe(script) => {
            let was = s.subs.scripts.remove(&script.sh).is_some();
            if was {
                ctx.subs.unregister(&script.sh);
            }
            Value::Bool(was)
        }
        Request::OutpointSubscribe { op, hint } => super::outpoints::subscribe(ctx, s, op, &hint).await?,
        Request::OutpointUnsubscribe(op) => super::outpoints::unsubscribe(ctx, s, op),
        other => {
            let caller = Caller { version: s.version.unwrap_or(PROTOCOL_MAX), ip: s.peer.ip() };
            return answer(ctx, caller, other, acct).await;
        }
    };
    Ok(Reply::Value(value))
}

/// Who asks: the session's negotiated version and its address.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub version: Version,
    pub ip: std::net::IpAddr,
}

/// Answers a request that only reads (any but `Request::changes_session` ones), for a session
/// that negotiated `caller.version`: these may run several at a time.
pub async fn answer(ctx: &Ctx, caller: Caller, request: Request, acct: &mut Accounting) -> Result<Reply, RpcError> {
    let version = caller.version;
    let value = match request {
        Request::GetHistory { sh, from, to } => return history(ctx, sh, from, to, acct).await,
        Request::GetMempool(sh) => return mempool(ctx, sh, acct).await,
        Request::ListUnspent(sh) => return listunspent(ctx, sh, acct).await,
        Request::Features => features(&ctx.config, version),
        Request::Banner => Value::String(ctx.daemon.banner(&ctx.config, ctx.via_tor(caller.ip)).await),
        Request::DonationAddress => Value::String(ctx.config.donation_address.clone()),
        Request::PeersSubscribe => ctx.peers().map_or(json!([]), |p| p.peers_subscribe(caller.ip)),
        Request::AddPeer { features } => match ctx.peers() {
            Some(p) => Value::Bool(p.add_peer(features, caller.ip).await),
            None => Value::Bool(false),
        },
        Request::Ping { pong_len } => ping(ctx, pong_len)?,
        Request::OutpointStatus { op, hint } => super::outpoints::get_status(ctx, op, &hint).await?,
        Request::TestMempoolAccept { raws } => super::broadcast::testmempoolaccept(ctx, raws).await?,
        Request::MempoolRecent => ctx.read(|snap| Ok(mempool_recent(snap))).await?,
        Request::BlockHeader { height, cp_height } => {
            ctx.read(move |snap| block_header(snap, height, cp_height)).await?
        }
        Request::BlockHeaders { start, count, cp_height } => {
            return ctx.read(move |snap| block_headers(snap, start, count, cp_height, version)).await
        }
        Request::EstimateFee { number, mode } => {
            let tip_hash = ctx.index.tip().map(|t| t.hash).unwrap_or_default();
            let (fee, asked) = ctx.daemon.estimatefee(tip_hash, number, mode).await;
            if asked {
                acct.cost += 2.0;
            }
            fee
        }
        Request::RelayFee => ctx.daemon.relayfee().await?,
        Request::GetBalance(script) => {
            let (value, utxos) = ctx
                .read(move |snap| {
                    let (confirmed, unconfirmed, utxos) = snap.balance(&script.sh.hashx()).map_err(index_error)?;
                    Ok((json!({"confirmed": confirmed, "unconfirmed": unconfirmed}), utxos))
                })
                .await?;
            acct.cost += utxos as f64 / 50.0;
            value
        }
        Request::Broadcast { raw } => match super::broadcast::broadcast(ctx, raw).await {
            Ok(txid) => {
                acct.txs_sent += 1;
                txid
            }
            Err(e) => {
                acct.txs_rejected += 1;
                return Err(e);
            }
        },
        Request::BroadcastPackage { raws, verbose } => {
            let n = raws.len() as u64;
            let answer = super::broadcast::broadcast_package(ctx, raws, verbose).await?;
            if answer["success"] == json!(true) || answer["package_msg"] == json!("success") {
                acct.txs_sent += n;
            }
            answer
        }
        Request::TransactionGet { txid, verbose } => transaction_get(ctx, txid, verbose).await?,
        Request::GetMerkle { txid, height } => {
            let (value, n) = ctx.read(move |snap| get_merkle(snap, txid, height, version)).await?;
            acct.cost += txids_cost(n) + branch_cost(n);
            value
        }
        Request::IdFromPos { height, pos, merkle } => {
            let (value, n) = ctx.read(move |snap| id_from_pos(snap, height, pos, merkle)).await?;
            acct.cost += txids_cost(n) + if merkle { branch_cost(n) } else { 0.0 };
            value
        }
        Request::FeeHistogram => {
            ctx.read(|snap| {
                let bins =
                    snap.mempool().fee_histogram().iter().map(|(rate, vsize)| json!([fee_rate_json(*rate), vsize]));
                Ok(Value::Array(bins.collect()))
            })
            .await?
        }
        Request::MempoolInfo => ctx.daemon.mempool_info().await?,
        Request::Version { .. }
        | Request::HeadersSubscribe
        | Request::Subscribe(_)
        | Request::Unsubscribe(_)
        | Request::OutpointSubscribe { .. }
        | Request::OutpointUnsubscribe(_) => {
            unreachable!("requests that change the session go through answer_session")
        }
    };
    Ok(Reply::Value(value))
}

fn server_version(ctx: &Ctx, s: &mut SessionState, client: Option<Value>, protocol: Option<Value>) -> RpcResult {
    if s.version.is_some() {
        return Err(RpcError::bad_request("server.version already sent"));
    }
    let client = match client {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c,
        Some(other) => other.to_string(),
    };
    if let Some(re) = &ctx.config.drop_client {
        if re.is_match(&client) {
            return Err(RpcError::bad_request(format!("unsupported client: {client}")).closing());
        }
    }
    s.client = client.chars().take(100).collect();
    let (lo, hi) = match protocol {
        None | Some(Value::Null) => (PROTOCOL_MIN, PROTOCOL_MIN),
        Some(Value::String(v)) => {
            let v = Version::parse(&v)
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
    s.subs.v17 = v >= V1_7;
    Ok(json!([crate::server_version(), v.to_string()]))
}

/// A script hash's history; in blocks `from..to` when a range is given (the mempool only when
/// the range runs to the tip).
async fn history(
    ctx: &Ctx,
    script: Script,
    from: u32,
    to: Option<u32>,
    acct: &mut Accounting,
) -> Result<Reply, RpcError> {
    let limit = ctx.history_limit();
    let (reply, confirmed, unconfirmed) = ctx
        .read(move |snap| {
            let hashx = script.sh.hashx();
            let nums = if from == 0 && to.is_none() {
                snap.history_nums(&hashx, limit, false)
            } else {
                snap.history_nums_in(&hashx, from, to, limit)
            }
            .map_err(index_error)?;
            let mempool = if to.is_none() { snap.mempool().history(&hashx) } else { Vec::new() };
            if nums.len() + mempool.len() > limit {
                return Err(history_too_large());
            }
            let mut list = ListWriter::new(nums.len() + mempool.len(), 100, script.by_spk.then_some("history"));
            snap.visit_txs(&nums, |txid, height| list.entry(&txid, &[("height", height as i64)]))
                .map_err(index_error)?;
            list.mempool_entries(&mempool);
            Ok((list.finish(), nums.len(), mempool.len()))
        })
        .await?;
    acct.cost += history_cost(confirmed) + unconfirmed as f64 / 50.0;
    Ok(reply)
}

/// 1.7 names the list `history` here too (as ElectrumX 2.0 answers).
async fn mempool(ctx: &Ctx, script: Script, acct: &mut Accounting) -> Result<Reply, RpcError> {
    let limit = ctx.history_limit();
    let (reply, n) = ctx
        .read(move |snap| {
            let mempool = snap.mempool().history(&script.sh.hashx());
            // Bounded like a confirmed history: the answer is not built past MAX_SEND.
            if mempool.len() > limit {
                return Err(history_too_large());
            }
            let mut list = ListWriter::new(mempool.len(), 110, script.by_spk.then_some("history"));
            list.mempool_entries(&mempool);
            Ok((list.finish(), mempool.len()))
        })
        .await?;
    acct.cost += n as f64 / 50.0;
    Ok(reply)
}

async fn listunspent(ctx: &Ctx, script: Script, acct: &mut Accounting) -> Result<Reply, RpcError> {
    let limit = ctx.history_limit();
    let (reply, n) = ctx
        .read(move |snap| {
            let utxos = snap.unspent(&script.sh.hashx(), limit).map_err(index_error)?;
            let mut list = ListWriter::new(utxos.len(), 140, script.by_spk.then_some("utxos"));
            for u in &utxos {
                list.entry(
                    &u.txid,
                    &[("tx_pos", u.vout as i64), ("height", u.height as i64), ("value", u.value as i64)],
                );
            }
            Ok((list.finish(), utxos.len()))
        })
        .await?;
    acct.cost += n as f64 / 50.0;
    Ok(reply)
}

/// Each subscription holds memory for the session's life: bounded, however cheap each is.
pub(super) fn room_for_a_subscription(ctx: &Ctx, s: &SessionState) -> Result<(), RpcError> {
    if s.subs.count() >= ctx.config.max_session_subs {
        let max = ctx.config.max_session_subs;
        return Err(RpcError::new(
            EXCESSIVE_RESOURCE_USAGE,
            format!("too many subscriptions: MAX_SUBS_PER_SESSION={max}"),
        ));
    }
    Ok(())
}

async fn subscribe(ctx: &Ctx, s: &mut SessionState, sh: ScriptHash, acct: &mut Accounting) -> RpcResult {
    // Register before reading, so a change published meanwhile is not missed.
    let new = !s.subs.scripts.contains_key(&sh);
    if new {
        room_for_a_subscription(ctx, s)?;
    }
    if new {
        ctx.subs.register(&sh);
    }
    let limit = ctx.history_limit();
    let hashx = sh.hashx();
    let read = ctx.read(move |snap| {
        let confirmed = snap.confirmed_status(&hashx, limit).map_err(index_error)?;
        let status = snap.finish_status(&confirmed, &hashx).expect("of this snapshot's tip");
        Ok((confirmed, status))
    });
    match read.await {
        Ok((confirmed, (status, entries))) => {
            // The next block extends it instead of reading the history again.
            ctx.subs.keep_confirmed([(hashx, confirmed)]);
            s.subs.scripts.insert(sh, status);
            acct.cost += history_cost(entries) + super::cost::status_preimage_cost(entries);
            Ok(status.map_or(Value::Null, |st| Value::String(st.to_string())))
        }
        Err(e) => {
            if new {
                ctx.subs.unregister(&sh);
            }
            Err(e)
        }
    }
}

/// `server.ping`: null below 1.7; at 1.7 `pong_len` hex characters of padding, at most MAX_SEND.
fn ping(ctx: &Ctx, pong_len: Option<usize>) -> RpcResult {
    let Some(n) = pong_len else { return Ok(Value::Null) };
    if n > ctx.config.max_send {
        return Err(RpcError::bad_request(format!("pong_len may be at most MAX_SEND={}", ctx.config.max_send)));
    }
    Ok(json!({"data": "0".repeat(n)}))
}

/// The last transactions to enter the mempool (1.7), newest first, as mempool.space lists them.
fn mempool_recent(snap: &Snapshot) -> Value {
    let recent = snap.mempool().recent(10);
    Value::Array(recent.iter().map(|t| json!({"txid": t.txid.to_string(), "fee": t.fee, "vsize": t.vsize})).collect())
}

/// A whole fee rate as an integer, otherwise one decimal.
fn fee_rate_json(rate: f64) -> Value {
    if rate.fract() == 0.0 && rate < 1e15 {
        json!(rate as u64)
    } else {
        json!(rate)
    }
}

fn header_hex(h: &[u8; 80]) -> String {
    to_hex(h)
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

/// Written as text: 2,016 headers are 322 KB of hex, which a `Value` would copy and then scan
/// again for characters to escape.
fn block_headers(snap: &Snapshot, start: u32, count: u32, cp_height: u32, v: Version) -> Result<Reply, RpcError> {
    let headers = snap.headers(start, count.min(MAX_HEADERS));
    let proof = match (cp_height, headers.len()) {
        (0, _) | (_, 0) => None,
        (_, n) => Some(proof_json(snap, start + n as u32 - 1, cp_height)?),
    };
    let mut out = String::with_capacity(RESULT_HEAD.len() + headers.len() * 163 + 64 * 32 + 100);
    out.push_str(RESULT_HEAD);
    out.push_str("{\"count\":");
    out.push_str(itoa::Buffer::new().format(headers.len()));
    if v >= V1_6 {
        out.push_str(",\"headers\":[");
        for (i, h) in headers.iter().enumerate() {
            out.push_str(if i == 0 { "\"" } else { ",\"" });
            push_hex(&mut out, h);
            out.push('"');
        }
        out.push(']');
    } else {
        out.push_str(",\"hex\":\"");
        for h in &headers {
            push_hex(&mut out, h);
        }
        out.push('"');
    }
    out.push_str(",\"max\":");
    out.push_str(itoa::Buffer::new().format(MAX_HEADERS));
    for (key, value) in proof.into_iter().flatten() {
        out.push_str(",\"");
        out.push_str(&key);
        out.push_str("\":");
        out.push_str(&value.to_string());
    }
    out.push('}');
    Ok(Reply::Response(out))
}

/// The merkle proof of a confirmed transaction, and its block's transaction count.
fn get_merkle(snap: &Snapshot, txid: Txid, height: Option<u32>, v: Version) -> Result<(Value, usize), RpcError> {
    let Some((at, pos)) = snap.tx_location(&txid).map_err(index_error)? else {
        return Err(RpcError::bad_request(format!("transaction {txid} is not confirmed in the indexed chain")));
    };
    if height.is_some_and(|h| h != at) {
        return Err(RpcError::bad_request(format!(
            "transaction {txid} is not in the block at height {}",
            height.unwrap_or(0)
        )));
    }
    let txids = snap.block_txids(at).map_err(index_error)?.ok_or_else(|| RpcError::bad_request("no such block"))?;
    let (branch, _) = merkle::branch_and_root(txids.iter().map(|t| t.0).collect(), pos as usize, None);
    let mut m = json!({
        "block_height": at,
        "pos": pos,
        "merkle": branch.iter().map(|b| hex_rev(b)).collect::<Vec<_>>(),
    });
    if v >= V1_6 {
        m["block_hash"] = Value::String(snap.block_hash(at).map(|h| hex_rev(&h)).unwrap_or_default());
    }
    Ok((m, txids.len()))
}

/// The txid at a position of a block (with its proof), and the block's transaction count.
fn id_from_pos(snap: &Snapshot, height: u32, pos: u32, with_merkle: bool) -> Result<(Value, usize), RpcError> {
    let txids = snap.block_txids(height).map_err(index_error)?.ok_or_else(|| {
        RpcError::bad_request(format!("height {height} out of range (chain height {})", snap.height().unwrap_or(0)))
    })?;
    let Some(txid) = txids.get(pos as usize).copied() else {
        return Err(RpcError::bad_request(format!("no transaction at position {pos} of block {height}")));
    };
    if !with_merkle {
        return Ok((Value::String(txid.to_string()), txids.len()));
    }
    let (branch, _) = merkle::branch_and_root(txids.iter().map(|t| t.0).collect(), pos as usize, None);
    let proof = json!({"tx_hash": txid.to_string(), "merkle": branch.iter().map(|b| hex_rev(b)).collect::<Vec<_>>()});
    Ok((proof, txids.len()))
}

async fn transaction_get(ctx: &Ctx, txid: Txid, verbose: bool) -> RpcResult {
    // Where the index has it confirmed: the daemon then needs no txindex (see `transactions`).
    let location = ctx
        .read(move |snap| {
            let loc = snap.tx_location(&txid).map_err(index_error)?;
            Ok(loc.and_then(|(height, pos)| {
                snap.block_hash(height).map(|block_hash| TxLocation { block_hash, height, pos })
            }))
        })
        .await?;
    match tokio::time::timeout(ctx.config.request_timeout, ctx.daemon.transactions.get(txid, verbose, location)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(TxError::NotFound(message))) => Err(RpcError::bad_request(message)),
        Ok(Err(TxError::Daemon(e))) => Err(daemon_error(e)),
        Err(_) => Err(RpcError::new(SERVER_BUSY, "the daemon is not answering; try again later")),
    }
}

/// Writes a response whose result is an array of objects, each a "tx_hash" and integer
/// fields, into one string.
struct ListWriter {
    out: String,
    empty: bool,
    /// The list is the value of this key of an object (1.7's `{"history": [...]}`).
    wrapped: bool,
}

impl ListWriter {
    /// `bytes_each` should not be short: growing an 18 MB string past its capacity copies it
    /// all. Entries take up to 96 bytes (history), 108 (mempool) and 135 (unspent).
    /// A list, or (`key`) an object holding the list under `key`.
    fn new(entries: usize, bytes_each: usize, key: Option<&str>) -> ListWriter {
        // The tail: "]}", the id and the transport's newline.
        let mut out = String::with_capacity(RESULT_HEAD.len() + 16 + entries * bytes_each + 64);
        out.push_str(RESULT_HEAD);
        if let Some(key) = key {
            out.push_str("{\"");
            out.push_str(key);
            out.push_str("\":");
        }
        out.push('[');
        ListWriter { out, empty: true, wrapped: key.is_some() }
    }

    fn entry(&mut self, txid: &Txid, fields: &[(&str, i64)]) {
        if !std::mem::replace(&mut self.empty, false) {
            self.out.push(',');
        }
        self.out.push_str("{\"tx_hash\":\"");
        push_hex32(&mut self.out, &txid.0, HexOrder::Display);
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

    fn finish(mut self) -> Reply {
        self.out.push(']');
        if self.wrapped {
            self.out.push('}');
        }
        Reply::Response(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::finish_response;

    #[test]
    fn list_writer_writes_the_json_a_value_would() {
        let (a, b) = (Txid([1; 32]), Txid([0xab; 32]));
        let mut list = ListWriter::new(2, 10, None);
        list.entry(&a, &[("height", 7)]);
        list.entry(&b, &[("height", -1), ("fee", 2_100_000_000_000_000)]);
        let text = |list: ListWriter| match list.finish() {
            Reply::Response(text) => finish_response(text, &crate::jsonrpc::Id::number(5)),
            Reply::Value(_) => panic!("a response"),
        };
        let parsed: Value = serde_json::from_str(&text(list)).unwrap();
        let result = json!([
            {"tx_hash": a.to_string(), "height": 7},
            {"tx_hash": b.to_string(), "height": -1, "fee": 2_100_000_000_000_000u64},
        ]);
        assert_eq!(parsed, json!({"jsonrpc": "2.0", "id": 5, "result": result}));
        let empty: Value = serde_json::from_str(&text(ListWriter::new(0, 90, None))).unwrap();
        assert_eq!(empty, json!({"jsonrpc": "2.0", "id": 5, "result": []}));
        let mut keyed = ListWriter::new(1, 90, Some("utxos"));
        keyed.entry(&a, &[("tx_pos", 1)]);
        let parsed: Value = serde_json::from_str(&text(keyed)).unwrap();
        assert_eq!(parsed["result"], json!({"utxos": [{"tx_hash": a.to_string(), "tx_pos": 1}]}));
    }
}
