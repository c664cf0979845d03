//! Real regtest nodes for the end-to-end tests: Bitcoin Core (wallet-less) and the Bitcoin SV
//! node, each in a temporary datadir on free ports, plus helpers to build and sign transactions
//! in Rust (Core has no wallet) and an independent view of the chain to compare ferrum with.
//!
//! Binaries come from `contrib/install-test-deps.sh` (under `$FERRUM_CACHE`, default
//! `~/.cache/ferrum`). When they are missing a test is skipped, unless `FERRUM_REQUIRE_NODES=1`
//! (CI), where it fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bitcoin::hashes::Hash as _;
use bitcoin::key::{Keypair, Secp256k1, TapTweak as _};
use bitcoin::secp256k1::{All, Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{
    absolute, consensus, transaction, Address, Amount, CompressedPublicKey, Network, OutPoint, PrivateKey, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use serde_json::{json, Value};

use crate::process::{free_port, FerrumProcess};

const RPC_USER: &str = "ferrum";
const RPC_PASS: &str = "regtest-pass";

// ---- locating binaries ----------------------------------------------------------------------

fn cache_dir() -> PathBuf {
    match std::env::var_os("FERRUM_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/ferrum"),
    }
}

/// The node binary, or `None` (after a loud message) when it is not installed and the
/// environment does not require it. Panics when `FERRUM_REQUIRE_NODES=1` and it is missing.
pub fn locate(node: &str, rel: &str) -> Option<PathBuf> {
    let path = cache_dir().join(rel);
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("{node} not installed ({} missing), run contrib/install-test-deps.sh", path.display());
    if std::env::var("FERRUM_REQUIRE_NODES").as_deref() == Ok("1") {
        panic!("FERRUM_REQUIRE_NODES=1 but {msg}");
    }
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("SKIPPED: {msg}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    None
}

// ---- JSON-RPC over a tiny blocking HTTP/1.1 client ------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RPC error {}: {}", self.code, self.message)
    }
}

/// One POST to 127.0.0.1 with Basic auth (`auth` is the base64 credentials); returns (status,
/// body). Reads by Content-Length (or chunked) rather than to EOF, so it does not depend on the
/// server honouring `Connection: close`. Shared by the node and Electrum wallet clients.
pub fn http_post(port: u16, auth: &str, body: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let headers = format!("Authorization: Basic {auth}\r\nContent-Type: application/json\r\n");
    http_request(("127.0.0.1", port), "POST", "/", &headers, body, timeout)
}

/// `GET path` from `addr`: the status and the body.
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, "", "", timeout)
}

/// One HTTP/1.1 request on a new connection (`headers`: lines ending in CRLF).
pub fn http_request(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let host = stream.peer_addr()?;
    // One write: `write!` straight to the socket makes several, each small one after the first
    // waiting for the server's delayed ACK.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; size + 2]; // data + CRLF
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

fn rpc_call(port: u16, method: &str, params: Value) -> Result<Value, RpcError> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{RPC_USER}:{RPC_PASS}"));
    let req = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
    let (status, body) = http_post(port, &auth, &req.to_string(), Duration::from_secs(300))
        .map_err(|e| RpcError { code: -1, message: format!("transport: {e}") })?;
    // Core and SV answer RPC errors with HTTP 500/404 and a JSON body, so parse before status.
    match serde_json::from_slice::<Value>(&body) {
        Ok(resp) => match resp.get("error").filter(|e| !e.is_null()) {
            Some(err) => Err(RpcError {
                code: err["code"].as_i64().unwrap_or(-1),
                message: err["message"].as_str().unwrap_or_default().to_string(),
            }),
            None => Ok(resp["result"].clone()),
        },
        Err(_) => Err(RpcError {
            code: -(status as i64),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        }),
    }
}

// ---- a node process -----------------------------------------------------------------------

/// A running node; stopped (RPC `stop`, then SIGKILL) and its datadir removed on drop.
pub struct Node {
    name: &'static str,
    child: Option<Child>,
    datadir: tempfile::TempDir,
    pub rpc_port: u16,
    pub p2p_port: u16,
}

impl Node {
    fn spawn(name: &'static str, bin: &Path, extra: &[&str]) -> Node {
        Node::spawn_from(name, bin, extra, None)
    }

    /// Starts a node on a copy of `template` (a regtest directory a stopped node left, e.g. a
    /// cached chain of `real_chain`), or on an empty datadir.
    fn spawn_from(name: &'static str, bin: &Path, extra: &[&str], template: Option<&Path>) -> Node {
        let datadir = tempfile::Builder::new().prefix(&format!("ferrum-{name}-")).tempdir().unwrap();
        if let Some(template) = template {
            let status =
                Command::new("cp").arg("-r").arg(template).arg(datadir.path().join("regtest")).status().expect("cp");
            assert!(status.success(), "copying {} failed", template.display());
        }
        let (rpc_port, p2p_port) = (free_port(), free_port());
        let mut args = vec![
            "-regtest".to_string(),
            format!("-datadir={}", datadir.path().display()),
            format!("-rpcport={rpc_port}"),
            format!("-port={p2p_port}"),
            "-rpcbind=127.0.0.1".into(),
            "-rpcallowip=127.0.0.1".into(),
            format!("-rpcuser={RPC_USER}"),
            format!("-rpcpassword={RPC_PASS}"),
            "-server=1".into(),
            "-rest=1".into(),
            "-listen=0".into(),
            "-txindex=0".into(),
            "-printtoconsole=0".into(),
        ];
        // An explicit -txindex in `extra` replaces the default.
        if extra.iter().any(|a| a.starts_with("-txindex")) {
            args.retain(|a| !a.starts_with("-txindex"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let stderr = std::fs::File::create(datadir.path().join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut node = Node { name, child: Some(child), datadir, rpc_port, p2p_port };
        node.wait_ready();
        node
    }

    /// Waits until RPC answers (past warm-up, error -28).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("{} exited at startup ({status})\n{}", self.name, self.log_tail());
            }
            if self.rpc("getblockcount", json!([])).is_ok() {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("{} RPC not ready after 60 s\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        rpc_call(self.rpc_port, method, params)
    }

    /// `rpc` that panics with the method name on error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.rpc(method, params.clone()).unwrap_or_else(|e| panic!("{} {method} {params}: {e}", self.name))
    }

    /// The daemon URL in the form ferrum's DAEMON_URL expects.
    pub fn url(&self) -> String {
        format!("http://{RPC_USER}:{RPC_PASS}@127.0.0.1:{}/", self.rpc_port)
    }

    /// The RPC credentials as `user:password`.
    pub fn auth(&self) -> String {
        format!("{RPC_USER}:{RPC_PASS}")
    }

    pub fn datadir(&self) -> &Path {
        self.datadir.path()
    }

    pub fn height(&self) -> u64 {
        self.call("getblockcount", json!([])).as_u64().unwrap()
    }

    pub fn best_hash(&self) -> String {
        self.call("getbestblockhash", json!([])).as_str().unwrap().to_string()
    }

    pub fn block_hash(&self, height: u64) -> String {
        self.call("getblockhash", json!([height])).as_str().unwrap().to_string()
    }

    pub fn generate_to(&self, n: u64, address: &str) -> Vec<String> {
        let hashes = self.call("generatetoaddress", json!([n, address]));
        hashes.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
    }

    pub fn mempool(&self) -> Vec<String> {
        let txids = self.call("getrawmempool", json!([]));
        txids.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    }

    /// Last lines of the node's debug.log and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        // Core logs to debug.log, the SV node to bitcoind.log.
        for file in ["regtest/debug.log", "regtest/bitcoind.log", "stderr.log"] {
            let Ok(text) = std::fs::read_to_string(self.datadir.path().join(file)) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            out += &format!("--- {} {file} ---\n{}\n", self.name, lines[from..].join("\n"));
        }
        out
    }
}

impl Node {
    /// Stops the node (RPC `stop`, waiting up to 20 s for it to write its state, then SIGKILL);
    /// the datadir stays until drop.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.rpc("stop", json!([]));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.shutdown();
    }
}

/// Bitcoin Core, wallet-less: transactions are built and signed with [`TestKey`].
pub struct BitcoinCore(Node);

impl BitcoinCore {
    /// Starts a node, or returns `None` (test skipped) when the binary is not installed.
    pub fn try_start() -> Option<BitcoinCore> {
        Self::try_start_with(&[])
    }

    /// `try_start` with extra command-line options (e.g. `-txindex=1`).
    pub fn try_start_with(extra: &[&str]) -> Option<BitcoinCore> {
        let bin = locate("Bitcoin Core", "bitcoin-core/bin/bitcoind")?;
        // -fallbackfee is a wallet option; wallet-less builds still accept it (hidden).
        let mut args = vec!["-fallbackfee=0.0001"];
        args.extend_from_slice(extra);
        Some(BitcoinCore(Node::spawn("bitcoind", &bin, &args)))
    }

    /// `try_start_with` on a copy of a regtest directory a stopped node left.
    pub fn try_start_from(template: &Path, extra: &[&str]) -> Option<BitcoinCore> {
        let bin = locate("Bitcoin Core", "bitcoin-core/bin/bitcoind")?;
        let mut args = vec!["-fallbackfee=0.0001"];
        args.extend_from_slice(extra);
        Some(BitcoinCore(Node::spawn_from("bitcoind", &bin, &args, Some(template))))
    }

    /// Starts a node; panics when the binary is missing.
    pub fn start() -> BitcoinCore {
        Self::try_start().expect("Bitcoin Core not installed")
    }

    /// The node's UTXO set for `script` (`scantxoutset`, which needs no wallet), as
    /// (txid, vout, height, value, coinbase).
    pub fn scan(&self, script: &ScriptBuf) -> Vec<(String, u32, u64, u64, bool)> {
        let desc = format!("raw({})", hex::encode(script.as_bytes()));
        let scan = self.call("scantxoutset", json!(["start", [desc]]));
        let mut found: Vec<_> = scan["unspents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["txid"].as_str().unwrap().to_string(),
                    u["vout"].as_u64().unwrap() as u32,
                    u["height"].as_u64().unwrap(),
                    sats(&u["amount"]),
                    u["coinbase"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        found.sort_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
        found
    }

    /// Outputs paying `script` that can be spent in the next block (mature), oldest first.
    pub fn coins(&self, key: &TestKey, script: &ScriptBuf) -> Vec<Coin> {
        let next = self.height() + 1;
        self.scan(script)
            .into_iter()
            .filter(|(_, _, height, _, coinbase)| !coinbase || next - height >= 100)
            .map(|(txid, vout, _, value, _)| Coin {
                outpoint: OutPoint { txid: Txid::from_str(&txid).unwrap(), vout },
                txout: TxOut { value: Amount::from_sat(value), script_pubkey: script.clone() },
                key: key.clone(),
            })
            .collect()
    }

    pub fn send(&self, tx: &Transaction) -> Txid {
        let hex = consensus::encode::serialize_hex(tx);
        let txid = self.call("sendrawtransaction", json!([hex]));
        let txid = Txid::from_str(txid.as_str().unwrap()).unwrap();
        assert_eq!(txid, tx.compute_txid());
        txid
    }

    /// Mines one block containing exactly `txs` (raw, need not be in the mempool) with the
    /// coinbase paid to `address`; returns its hash.
    pub fn generate_block(&self, address: &str, txs: &[&Transaction]) -> String {
        let raw: Vec<String> = txs.iter().map(|t| consensus::encode::serialize_hex(*t)).collect();
        let res = self.call("generateblock", json!([address, raw]));
        res["hash"].as_str().unwrap().to_string()
    }
}

impl Deref for BitcoinCore {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl std::ops::DerefMut for BitcoinCore {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.0
    }
}

/// The Bitcoin SV node, with its own wallet.
pub struct BitcoinSv(Node);

impl BitcoinSv {
    pub fn try_start() -> Option<BitcoinSv> {
        Self::try_start_with(&[])
    }

    /// `try_start` with extra command-line options (e.g. `-txindex=1`).
    pub fn try_start_with(extra: &[&str]) -> Option<BitcoinSv> {
        Self::start_sv(extra, None)
    }

    fn start_sv(extra: &[&str], template: Option<&Path>) -> Option<BitcoinSv> {
        let bin = locate("Bitcoin SV node", "bitcoin-sv/bin/bitcoind")?;
        // SV refuses to start without these three, even on regtest.
        let mut flags = vec![
            "-excessiveblocksize=1000000000",
            "-maxstackmemoryusageconsensus=100000000",
            "-minminingtxfee=0.00000500",
        ];
        flags.extend_from_slice(extra);
        Some(BitcoinSv(Node::spawn_from("bitcoin-sv", &bin, &flags, template)))
    }

    /// `try_start_with` on a copy of a regtest directory a stopped node left.
    pub fn try_start_from(template: &Path, extra: &[&str]) -> Option<BitcoinSv> {
        Self::start_sv(extra, Some(template))
    }

    pub fn start() -> BitcoinSv {
        Self::try_start().expect("Bitcoin SV node not installed")
    }

    pub fn new_address(&self) -> String {
        self.call("getnewaddress", json!([])).as_str().unwrap().to_string()
    }

    pub fn send_to(&self, address: &str, sats: u64) -> String {
        let btc = Amount::from_sat(sats).to_btc();
        self.call("sendtoaddress", json!([address, btc])).as_str().unwrap().to_string()
    }

    /// A transaction spending `inputs` (`{"txid", "vout"}` objects) to one output, signed by the
    /// wallet and not broadcast. `prevtxs` describes inputs the node does not know yet.
    pub fn sign(&self, inputs: Vec<Value>, to: &str, sats: u64, prevtxs: &[Value]) -> String {
        let mut outputs = serde_json::Map::new();
        outputs.insert(to.to_string(), json!(Amount::from_sat(sats).to_btc()));
        let raw = self.call("createrawtransaction", json!([inputs, outputs]));
        let signed = self.call("signrawtransaction", json!([raw, prevtxs]));
        assert_eq!(signed["complete"], json!(true), "{signed}");
        signed["hex"].as_str().unwrap().to_string()
    }

    /// Spends every output of `txid` (all the wallet's) to `to`, minus `fee`; returns the txid.
    pub fn spend_all_outputs(&self, txid: &str, to: &str, fee: u64) -> String {
        let tx = self.call("getrawtransaction", json!([txid, true]));
        let outs = tx["vout"].as_array().unwrap();
        let inputs = outs.iter().map(|o| json!({"txid": txid, "vout": o["n"]})).collect();
        let total: u64 = outs.iter().map(|o| sats(&o["value"])).sum();
        let raw = self.sign(inputs, to, total - fee, &[]);
        self.call("sendrawtransaction", json!([raw])).as_str().unwrap().to_string()
    }
}

impl Deref for BitcoinSv {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl std::ops::DerefMut for BitcoinSv {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.0
    }
}

/// A JSON amount in BTC → satoshis.
pub fn sats(v: &Value) -> u64 {
    let btc = v.as_f64().unwrap_or_else(|| panic!("not an amount: {v}"));
    (btc * 1e8).round() as u64
}

// ---- keys and signing -----------------------------------------------------------------------

/// A fixed private key and the regtest scripts/addresses it controls.
#[derive(Clone)]
pub struct TestKey {
    pub secp: Secp256k1<All>,
    pub sk: SecretKey,
    pub pk: CompressedPublicKey,
    pub keypair: Keypair,
}

impl TestKey {
    /// Deterministic key from a small seed (the secret is `seed` repeated, never zero).
    pub fn new(seed: u8) -> TestKey {
        assert!(seed != 0);
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[seed; 32]).unwrap();
        let pk = CompressedPublicKey::from_private_key(&secp, &PrivateKey::new(sk, Network::Regtest)).unwrap();
        let keypair = Keypair::from_secret_key(&secp, &sk);
        TestKey { secp, sk, pk, keypair }
    }

    pub fn p2wpkh(&self) -> Address {
        Address::p2wpkh(&self.pk, Network::Regtest)
    }

    pub fn p2tr(&self) -> Address {
        Address::p2tr(&self.secp, self.keypair.x_only_public_key().0, None, Network::Regtest)
    }

    pub fn p2pkh(&self) -> Address {
        Address::p2pkh(self.pk, Network::Regtest)
    }
}

/// An output we can spend with `key`.
#[derive(Clone)]
pub struct Coin {
    pub outpoint: OutPoint,
    pub txout: TxOut,
    pub key: TestKey,
}

impl Coin {
    /// Output `vout` of `tx`, spendable by `key`.
    pub fn of(tx: &Transaction, vout: u32, key: &TestKey) -> Coin {
        Coin {
            outpoint: OutPoint { txid: tx.compute_txid(), vout },
            txout: tx.output[vout as usize].clone(),
            key: key.clone(),
        }
    }
}

pub fn pay(address: &Address, sats: u64) -> TxOut {
    TxOut { value: Amount::from_sat(sats), script_pubkey: address.script_pubkey() }
}

pub fn op_return(data: &[u8; 8]) -> TxOut {
    TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return(data) }
}

/// A transaction spending `coins` to `outputs`, the rest (less `fee`) back to `change`, signed.
pub fn spend(coins: &[Coin], mut outputs: Vec<TxOut>, change: &Address, fee: u64) -> Transaction {
    let total: u64 = coins.iter().map(|c| c.txout.value.to_sat()).sum();
    let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
    outputs.push(pay(change, total - paid - fee));
    sign_tx(coins, outputs)
}

/// Builds a version-2 transaction spending `inputs` (P2WPKH, P2TR key-path or P2PKH) into
/// `outputs`, and signs every input.
pub fn sign_tx(inputs: &[Coin], outputs: Vec<TxOut>) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|c| TxIn {
                previous_output: c.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let prevouts: Vec<TxOut> = inputs.iter().map(|c| c.txout.clone()).collect();
    let mut witnesses = Vec::new();
    let mut script_sigs = Vec::new();
    {
        let mut cache = SighashCache::new(&tx);
        for (i, coin) in inputs.iter().enumerate() {
            let spk = &coin.txout.script_pubkey;
            let (secp, key) = (&coin.key.secp, &coin.key);
            if spk.is_p2wpkh() {
                let hash = cache.p2wpkh_signature_hash(i, spk, coin.txout.value, EcdsaSighashType::All).unwrap();
                let sig = secp.sign_ecdsa(&Message::from_digest(hash.to_byte_array()), &key.sk);
                let sig = bitcoin::ecdsa::Signature::sighash_all(sig);
                witnesses.push(Witness::p2wpkh(&sig, &key.pk.0));
                script_sigs.push(ScriptBuf::new());
            } else if spk.is_p2tr() {
                let hash = cache
                    .taproot_key_spend_signature_hash(i, &Prevouts::All(&prevouts), TapSighashType::Default)
                    .unwrap();
                // Key-path spends sign with the key tweaked by the (empty) script tree.
                let tweaked = key.keypair.tap_tweak(secp, None).to_keypair();
                let sig = secp.sign_schnorr(&Message::from_digest(hash.to_byte_array()), &tweaked);
                let sig = bitcoin::taproot::Signature { signature: sig, sighash_type: TapSighashType::Default };
                witnesses.push(Witness::p2tr_key_spend(&sig));
                script_sigs.push(ScriptBuf::new());
            } else if spk.is_p2pkh() {
                let hash = cache.legacy_signature_hash(i, spk, EcdsaSighashType::All.to_u32()).unwrap();
                let sig = secp.sign_ecdsa(&Message::from_digest(hash.to_byte_array()), &key.sk);
                let sig = bitcoin::ecdsa::Signature::sighash_all(sig);
                let script_sig = bitcoin::script::Builder::new()
                    .push_slice(sig.serialize())
                    .push_key(&bitcoin::PublicKey::from(key.pk))
                    .into_script();
                witnesses.push(Witness::new());
                script_sigs.push(script_sig);
            } else {
                panic!("cannot sign for {spk:?}");
            }
        }
    }
    for (input, (w, s)) in tx.input.iter_mut().zip(witnesses.into_iter().zip(script_sigs)) {
        input.witness = w;
        input.script_sig = s;
    }
    tx
}

// ---- an independent view of the node's chain --------------------------------------------------

/// One script's confirmed state as seen by the node (and expected from ferrum).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScriptState {
    /// (tx hash, height) in chain order.
    pub history: Vec<(String, u64)>,
    /// (tx hash, output index, height, value).
    pub utxos: BTreeSet<(String, u32, u64, u64)>,
}

impl ScriptState {
    pub fn balance(&self) -> u64 {
        self.utxos.iter().map(|u| u.3).sum()
    }
}

/// Confirmed history and UTXOs of every script, built by reading every block of the node's
/// best chain (`getblock <hash> 2`), so it does not depend on the test's own bookkeeping.
pub struct ChainView {
    pub tip_height: u64,
    pub tip_hash: String,
    pub scripts: HashMap<String, ScriptState>,
    /// tx hash → (height, position in block).
    pub positions: HashMap<String, (u64, usize)>,
    /// Every output created: (tx hash, index) → (script hex, height).
    pub outputs: HashMap<(String, u32), (String, u64)>,
    /// Every output spent: (tx hash, index) → (spending tx hash, its height).
    pub spenders: HashMap<(String, u32), (String, u64)>,
}

impl ChainView {
    pub fn read(node: &Node) -> ChainView {
        let tip_hash = node.best_hash();
        let tip_height = node.call("getblockheader", json!([tip_hash]))["height"].as_u64().unwrap();
        // (txid, vout) → (script hex, height, value) for every output created so far.
        let mut outputs: HashMap<(String, u32), (String, u64, u64)> = HashMap::new();
        let mut unspent: BTreeSet<(String, u32)> = BTreeSet::new();
        let mut history: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        let mut positions = HashMap::new();
        let mut spenders = HashMap::new();
        let mut hash = node.block_hash(0);
        for height in 0..=tip_height {
            let block = node.call("getblock", json!([hash, 2]));
            assert_eq!(block["height"].as_u64(), Some(height));
            for (pos, tx) in block["tx"].as_array().unwrap().iter().enumerate() {
                let txid = tx["txid"].as_str().unwrap().to_string();
                positions.insert(txid.clone(), (height, pos));
                let mut touched = BTreeSet::new();
                for vin in tx["vin"].as_array().unwrap() {
                    if vin.get("coinbase").is_some() {
                        continue;
                    }
                    let prev = (vin["txid"].as_str().unwrap().to_string(), vin["vout"].as_u64().unwrap() as u32);
                    let (script, _, _) = outputs.get(&prev).expect("input spends an unknown output");
                    touched.insert(script.clone());
                    assert!(unspent.remove(&prev), "double spend in chain?");
                    spenders.insert(prev, (txid.clone(), height));
                }
                for vout in tx["vout"].as_array().unwrap() {
                    let n = vout["n"].as_u64().unwrap() as u32;
                    let script = vout["scriptPubKey"]["hex"].as_str().unwrap().to_string();
                    outputs.insert((txid.clone(), n), (script.clone(), height, sats(&vout["value"])));
                    // The genesis coinbase is not spendable, and ferrum need not index it.
                    if height > 0 {
                        unspent.insert((txid.clone(), n));
                        touched.insert(script);
                    }
                }
                for script in touched {
                    history.entry(script).or_default().push((txid.clone(), height));
                }
            }
            if height < tip_height {
                hash = block["nextblockhash"].as_str().unwrap().to_string();
            } else {
                assert_eq!(hash, tip_hash, "tip moved while reading the chain");
            }
        }
        let mut scripts: HashMap<String, ScriptState> =
            history.into_iter().map(|(s, h)| (s, ScriptState { history: h, ..Default::default() })).collect();
        for (txid, n) in unspent {
            let (script, height, value) = &outputs[&(txid.clone(), n)];
            scripts.entry(script.clone()).or_default().utxos.insert((txid, n, *height, *value));
        }
        let outputs = outputs.into_iter().map(|(k, (script, height, _))| (k, (script, height))).collect();
        ChainView { tip_height, tip_hash, scripts, positions, outputs, spenders }
    }

    pub fn state(&self, script: &ScriptBuf) -> ScriptState {
        self.scripts.get(&hex::encode(script.as_bytes())).cloned().unwrap_or_default()
    }

    /// Whether `txid` is confirmed in this chain.
    pub fn confirmed(&self, txid: &Txid) -> bool {
        self.positions.contains_key(&txid.to_string())
    }
}

/// The Electrum script hash: sha256 of the script, byte-reversed, hex.
pub fn electrum_scripthash(script: &ScriptBuf) -> String {
    let mut h = bitcoin::hashes::sha256::Hash::hash(script.as_bytes()).to_byte_array();
    h.reverse();
    hex::encode(h)
}

/// How to name a script in a ferrum `query`: the three accepted forms, used in rotation so every
/// form is exercised.
pub fn query_item(script: &ScriptBuf, address: Option<&str>, form: usize) -> String {
    match (form % 3, address) {
        (0, Some(a)) => a.to_string(),
        (1, _) => hex::encode(script.as_bytes()),
        _ => electrum_scripthash(script),
    }
}

/// Parses one `query` result object into a [`ScriptState`].
pub fn parse_query(result: &Value) -> ScriptState {
    let history = result["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in {result}"))
        .iter()
        .map(|h| (h["tx_hash"].as_str().unwrap().to_string(), h["height"].as_u64().unwrap()))
        .collect();
    let utxos = result["utxos"]
        .as_array()
        .unwrap_or_else(|| panic!("no utxos in {result}"))
        .iter()
        .map(|u| {
            (
                u["tx_hash"].as_str().unwrap().to_string(),
                u["tx_pos"].as_u64().unwrap() as u32,
                u["height"].as_u64().unwrap(),
                u["value"].as_u64().unwrap(),
            )
        })
        .collect();
    ScriptState { history, utxos }
}

/// Asks ferrum about every `(script, address)` and asserts history, UTXOs and balance equal the
/// node's chain; reports every mismatch at once, with ferrum's log tail.
pub fn assert_ferrum_matches(ferrum: &FerrumProcess, view: &ChainView, scripts: &[(ScriptBuf, Option<String>)]) {
    let items: Vec<String> = scripts.iter().enumerate().map(|(i, (s, a))| query_item(s, a.as_deref(), i)).collect();
    let res = ferrum
        .call("query_json", json!([items, 100_000]))
        .unwrap_or_else(|e| panic!("query failed: {e}\n{}", ferrum.log_tail()));
    let res = res.as_array().unwrap_or_else(|| panic!("query result not an array: {res}"));
    assert_eq!(res.len(), items.len(), "one result per item");
    let mut errors = Vec::new();
    for ((item, (script, address)), result) in items.iter().zip(scripts).zip(res) {
        let what = format!("{} ({item})", address.as_deref().unwrap_or("script"));
        let scripthash = electrum_scripthash(script);
        if result["scripthash"].as_str() != Some(scripthash.as_str()) {
            errors.push(format!("{what}: scripthash {} != {scripthash}", result["scripthash"]));
        }
        let expected = view.state(script);
        let got = parse_query(result);
        if got.history != expected.history {
            errors.push(format!("{what}: history\n  ferrum: {:?}\n  node:   {:?}", got.history, expected.history));
        }
        if got.utxos != expected.utxos {
            errors.push(format!("{what}: utxos\n  ferrum: {:?}\n  node:   {:?}", got.utxos, expected.utxos));
        }
        if result["balance"].as_u64() != Some(expected.balance()) {
            errors.push(format!("{what}: balance {} != {}", result["balance"], expected.balance()));
        }
    }
    if errors.is_empty() {
        return;
    }
    // Diagnose before failing: does a later query agree (a race), and do the three ways of
    // naming a script give the same answer (a parsing bug)?
    std::thread::sleep(Duration::from_secs(1));
    let mut diag = Vec::new();
    for (i, (script, address)) in scripts.iter().enumerate() {
        let expected = view.state(script);
        let forms: Vec<String> = (0..3).map(|f| query_item(script, address.as_deref(), f)).collect();
        let Ok(again) = ferrum.call("query_json", json!([forms, 100_000])) else { continue };
        let again: Vec<ScriptState> = again.as_array().unwrap().iter().map(parse_query).collect();
        if again.iter().any(|g| *g != expected) || parse_query(&res[i]) != expected {
            let summary: Vec<String> = forms
                .iter()
                .zip(&again)
                .map(|(f, g)| format!("{f}: {} history, {} utxos", g.history.len(), g.utxos.len()))
                .collect();
            let verdict = if again.iter().all(|g| *g == expected) { "all forms agree now" } else { "STILL DIFFERS" };
            diag.push(format!(
                "  {} 1 s later, {verdict} (node: {} history, {} utxos): {}",
                address.as_deref().unwrap_or("script"),
                expected.history.len(),
                expected.utxos.len(),
                summary.join("; ")
            ));
        }
    }
    panic!(
        "ferrum disagrees with the node at height {} ({}):\n{}\nre-queried:\n{}\ngetinfo: {:?}\n{}",
        view.tip_height,
        view.tip_hash,
        errors.join("\n"),
        diag.join("\n"),
        ferrum.getinfo(),
        ferrum.log_tail()
    );
}

/// After the tip is reached, ferrum must also report being caught up with the daemon's height
/// (polled: the flag may be set a moment after the tip moves).
pub fn assert_caught_up(ferrum: &FerrumProcess, daemon_height: u64) {
    let start = Instant::now();
    loop {
        let info = ferrum.getinfo().unwrap_or_default();
        if info["caught_up"] == json!(true) && info["daemon_height"].as_u64() == Some(daemon_height) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ferrum not caught up at daemon height {daemon_height}: {info}\n{}",
            ferrum.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collects scripts → addresses for the comparison helpers.
pub fn scripts_of(addresses: &[Address]) -> Vec<(ScriptBuf, Option<String>)> {
    let unique: BTreeMap<String, &Address> = addresses.iter().map(|a| (a.to_string(), a)).collect();
    unique.into_iter().map(|(s, a)| (a.script_pubkey(), Some(s))).collect()
}
