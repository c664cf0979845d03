//! The real Electrum wallet (Debian's `electrum` 4.3, headless) as a test client: a daemon in a
//! private `--dir`, a watch-only wallet restored from addresses, and its view of balance and
//! history (every confirmed transaction SPV-verified against the headers it downloaded).
//!
//! The daemon runs in the foreground under `timeout` (so it dies by itself even if the test
//! process is killed), connects to exactly one server, `127.0.0.1:<port>` over TCP (`:t`) or
//! SSL (`:s`), and never anywhere else: `--oneserver --server` (which also turns `auto_connect`
//! off), no proxy. Its JSON-RPC listens on 127.0.0.1 with fixed credentials; it logs at debug
//! level (`-v`) to `<dir>/electrum.log`.
//!
//! SSL: Electrum trusts on first use. With no `<dir>/regtest/certs/127.0.0.1` it first tries a
//! CA-verified handshake (fails on a self-signed certificate: the server sees a handshake
//! error), then fetches the certificate without verification on a second connection (closed
//! right after the handshake), pins it in that file, and opens the real session on a third
//! connection trusting only that certificate (hostname not checked). Later connections use the
//! pinned file; a server with a different certificate is refused ("Cannot connect to main server
//! due to SSL error (maybe cert changed ...)").
//!
//! Installed by `contrib/install-test-deps.sh`. When it is missing, [`electrum_available`]
//! skips the test, unless `FERRUM_REQUIRE_NODES=1`, where it fails.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::nodes::http_post;
use crate::process::free_port;

const RPC_USER: &str = "ferrum";
const RPC_PASS: &str = "electrum-test";
/// The daemon kills itself after this long whatever happens (`timeout -k 10`).
const MAX_LIFETIME_SECS: u64 = 1800;
/// Electrum's timeout for one server request. Its default with a single, fixed server is 600 s.
const NETWORK_TIMEOUT_SECS: u64 = 30;
const RPC_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// An error from the wallet, with the tail of its log. `Debug` prints the text as is, so
/// `.unwrap()`/`.expect()` show a readable log.
pub struct ElectrumError(pub String);

impl fmt::Display for ElectrumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ElectrumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ElectrumError {}

pub type Result<T> = std::result::Result<T, ElectrumError>;

/// The `electrum` executable: `$FERRUM_ELECTRUM` when set, else the first on `PATH`.
pub fn electrum_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERRUM_ELECTRUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("electrum")).find(|p| p.is_file())
}

/// Whether the Electrum wallet is installed. When it is not: panics if `FERRUM_REQUIRE_NODES=1`,
/// otherwise prints a loud SKIPPED message and returns false (the caller returns early).
pub fn electrum_available() -> bool {
    if electrum_binary().is_some() {
        return true;
    }
    let msg = "the Electrum wallet is not installed (no `electrum` on PATH), run contrib/install-test-deps.sh";
    if std::env::var("FERRUM_REQUIRE_NODES").as_deref() == Ok("1") {
        panic!("FERRUM_REQUIRE_NODES=1 but {msg}");
    }
    eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("SKIPPED: {msg}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    false
}

/// `getbalance`, in satoshis. Electrum's split is its own, not the server's: coinbase outputs
/// younger than 100 blocks are `unmatured`; an unconfirmed transaction spending confirmed coins
/// of the wallet already removes them from `confirmed`, and its change back to the wallet counts
/// as `confirmed`. `total()` equals the server's confirmed + unconfirmed of all the addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub confirmed: i64,
    pub unconfirmed: i64,
    pub unmatured: i64,
}

impl Balance {
    pub fn total(&self) -> i64 {
        self.confirmed + self.unconfirmed + self.unmatured
    }
}

/// One transaction of `onchain_history`, oldest first (mempool last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub txid: String,
    /// Block height; 0 in the mempool, -1 in the mempool with unconfirmed inputs, -2 local
    /// (e.g. confirmed per the server but its merkle proof request failed).
    pub height: i64,
    /// Confirmations counted on Electrum's own verified header chain; > 0 only once the
    /// transaction's merkle proof checked against the header at `height`.
    pub confirmations: i64,
    /// The verified block's timestamp, and the position in the block from the merkle proof:
    /// both `Some` exactly when SPV-verified.
    pub timestamp: Option<u64>,
    pub txpos_in_block: Option<u64>,
    /// Known for mempool transactions (from the server's history `fee`) and for transactions
    /// whose inputs are all the wallet's.
    pub fee_sat: Option<u64>,
    /// Effect on the wallet's balance, and the running balance after it.
    pub value_sat: i64,
    pub balance_sat: i64,
}

impl HistoryEntry {
    fn parse(t: &Value) -> Option<HistoryEntry> {
        let amount = |name: &str| t[name].as_str().and_then(btc_to_sat);
        Some(HistoryEntry {
            txid: t["txid"].as_str()?.to_string(),
            height: t["height"].as_i64()?,
            confirmations: t["confirmations"].as_i64()?,
            timestamp: t["timestamp"].as_u64(),
            txpos_in_block: t["txpos_in_block"].as_u64(),
            fee_sat: t["fee_sat"].as_u64(),
            value_sat: amount("bc_value")?,
            balance_sat: amount("bc_balance")?,
        })
    }

    /// Confirmed and verified by a merkle proof against Electrum's own header chain.
    pub fn is_spv_verified(&self) -> bool {
        self.height > 0 && self.confirmations > 0 && self.timestamp.is_some() && self.txpos_in_block.is_some()
    }
}

/// A running Electrum daemon (regtest) with at most one wallet; stopped (RPC `stop`, then
/// SIGKILL) on drop.
pub struct ElectrumWallet {
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    pub server_port: u16,
    pub ssl: bool,
    pub rpc_port: u16,
    wallet_path: PathBuf,
    log_path: PathBuf,
    /// When false (the default), [`wait_synchronized`](Self::wait_synchronized) fails as soon
    /// as [`server_errors`](Self::server_errors) is not empty. Set it in tests that restart or
    /// kill the server on purpose.
    pub allow_server_errors: bool,
}

impl ElectrumWallet {
    /// Starts a daemon with `--dir <dir>` (created if needed; use a fresh one per test, it holds
    /// the headers, the pinned certificate and the wallet) talking to ferrum on
    /// `127.0.0.1:server_port`, and waits until its RPC answers. The server need not be up yet:
    /// Electrum retries (after 1, 2, 4, 8, then every 10 s).
    pub fn start(dir: &Path, server_port: u16, ssl: bool) -> Result<ElectrumWallet> {
        let bin = electrum_binary().ok_or_else(|| ElectrumError("no `electrum` on PATH".into()))?;
        std::fs::create_dir_all(dir.join("regtest")).map_err(|e| ElectrumError(format!("{}: {e}", dir.display())))?;
        // Read at start; command-line options override it. `network_timeout` bounds every
        // request to the server.
        let config = json!({
            "config_version": 3,
            "network_timeout": NETWORK_TIMEOUT_SECS,
            "use_exchange_rate": false,
            "log_to_file": false,
        });
        std::fs::write(dir.join("regtest/config"), config.to_string())
            .map_err(|e| ElectrumError(format!("write electrum config: {e}")))?;
        let mut wallet = ElectrumWallet {
            child: Mutex::new(None),
            dir: dir.to_path_buf(),
            server_port,
            ssl,
            rpc_port: 0,
            wallet_path: dir.join("wallet"),
            log_path: dir.join("electrum.log"),
            allow_server_errors: false,
        };
        wallet.spawn(&bin)?;
        Ok(wallet)
    }

    fn spawn(&mut self, bin: &Path) -> Result<()> {
        self.rpc_port = free_port();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| ElectrumError(format!("{}: {e}", self.log_path.display())))?;
        let server = format!("127.0.0.1:{}:{}", self.server_port, if self.ssl { "s" } else { "t" });
        let _ =
            writeln!(log, "=== test harness: starting electrum daemon, server {server}, RPC port {}", self.rpc_port);
        let err_log = log.try_clone().map_err(|e| ElectrumError(e.to_string()))?;
        // `timeout` makes itself a process group leader with electrum inside: killing the group
        // (`kill -- -<pid>`) kills both.
        let child = Command::new("timeout")
            .args(["-k", "10", &MAX_LIFETIME_SECS.to_string()])
            .arg(bin)
            .args(["daemon", "--regtest", "--dir"])
            .arg(&self.dir)
            .args(["--rpchost", "127.0.0.1", "--rpcport", &self.rpc_port.to_string()])
            .args(["--rpcuser", RPC_USER, "--rpcpassword", RPC_PASS])
            .args(["--oneserver", "--server", &server, "--proxy", "none", "-v"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| ElectrumError(format!("spawn {}: {e}", bin.display())))?;
        *self.child.get_mut().unwrap() = Some(child);
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if self.rpc_timeout("ping", json!([]), Duration::from_secs(5)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(self.error("electrum daemon RPC not ready after 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon and starts it again on the same directory (headers, pinned certificate
    /// and wallet kept; reload the wallet with [`load_wallet`](Self::load_wallet)).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let bin = electrum_binary().ok_or_else(|| ElectrumError("no `electrum` on PATH".into()))?;
        self.spawn(&bin)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn wallet_path(&self) -> &Path {
        &self.wallet_path
    }

    /// The certificate Electrum pinned for 127.0.0.1 (PEM), once it connected over SSL.
    pub fn pinned_cert(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("regtest/certs/127.0.0.1")).ok()
    }

    /// Calls one daemon command with named (object) or positional (array) parameters. Command
    /// errors come back as `{"code": 1, "message": ...}`; unknown methods as HTTP 500.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        self.rpc_timeout(method, params, RPC_READ_TIMEOUT)
    }

    fn rpc_timeout(&self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let (status, text) = http_post(self.rpc_port, &rpc_auth(), &body, timeout)
            .map_err(|e| ElectrumError(format!("electrum {method}: transport: {e}")))?;
        let resp: Value = serde_json::from_slice(&text).map_err(|_| {
            ElectrumError(format!("electrum {method}: HTTP {status}: {}", String::from_utf8_lossy(&text)))
        })?;
        match resp.get("error").filter(|e| !e.is_null()) {
            Some(err) => Err(ElectrumError(format!("electrum {method} {params}: {err}"))),
            None => Ok(resp["result"].clone()),
        }
    }

    /// `rpc` with the wallet's log tail in the error.
    fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.rpc(method, params).map_err(|e| self.error(&e.0))
    }

    /// `getinfo`: `{"network": "regtest", "path", "server": "127.0.0.1", "blockchain_height"
    /// (verified headers; -1 before any), "server_height" (the server's claimed tip, 0 when not
    /// connected), "spv_nodes", "connected", "auto_connect", "version", "default_wallet",
    /// "fee_per_kb"}`.
    pub fn getinfo(&self) -> Result<Value> {
        self.call("getinfo", json!({}))
    }

    pub fn is_connected(&self) -> bool {
        self.rpc("getinfo", json!({})).is_ok_and(|info| info["connected"] == json!(true))
    }

    /// The tip height the server announced (`blockchain.headers.subscribe`).
    pub fn server_height(&self) -> Result<u64> {
        let info = self.getinfo()?;
        info["server_height"].as_u64().ok_or_else(|| self.error(&format!("no server_height in {info}")))
    }

    /// The height of Electrum's own verified header chain (-1 before any header).
    pub fn local_height(&self) -> Result<i64> {
        let info = self.getinfo()?;
        info["blockchain_height"].as_i64().ok_or_else(|| self.error(&format!("no blockchain_height in {info}")))
    }

    /// Waits until connected with the header chain synced to the server's tip; returns getinfo.
    pub fn wait_connected(&self, timeout: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let info = self.rpc("getinfo", json!({})).unwrap_or(Value::Null);
            if info["connected"] == json!(true)
                && info["server_height"].as_i64().is_some()
                && info["blockchain_height"].as_i64() == info["server_height"].as_i64()
            {
                return Ok(info);
            }
            if start.elapsed() > timeout {
                return Err(self.error(&format!("electrum not connected and synced after {timeout:?}: {info}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates the watch-only wallet from `addresses` (`restore "a1 a2 ..."`, which only writes
    /// the file) and loads it into the daemon (`load_wallet`), which starts syncing it.
    pub fn restore_watch_only(&self, addresses: &[String]) -> Result<()> {
        if addresses.is_empty() {
            return Err(ElectrumError("restore_watch_only: no addresses".into()));
        }
        self.call("restore", json!({"text": addresses.join(" "), "wallet_path": self.wallet_path}))?;
        self.load_wallet()
    }

    /// Loads the (already restored) wallet, e.g. after [`restart`](Self::restart).
    pub fn load_wallet(&self) -> Result<()> {
        match self.call("load_wallet", json!({"wallet_path": self.wallet_path}))? {
            Value::Bool(true) => Ok(()),
            other => Err(self.error(&format!("load_wallet {} returned {other}", self.wallet_path.display()))),
        }
    }

    fn wallet_arg(&self) -> Value {
        json!({"wallet": self.wallet_path})
    }

    /// `is_synchronized`: every address subscribed, every history fetched, every transaction
    /// downloaded and every confirmed one's merkle proof checked. Caveat: after a server error
    /// Electrum disconnects, reconnects and may then report synchronized with transactions
    /// missing; check [`server_errors`](Self::server_errors) (as `wait_synchronized` does) and
    /// the history itself.
    pub fn is_synchronized(&self) -> Result<bool> {
        let v = self.call("is_synchronized", self.wallet_arg())?;
        v.as_bool().ok_or_else(|| self.error(&format!("is_synchronized returned {v}")))
    }

    /// Waits until connected, the header chain is at the server's tip (and at `height`, when
    /// given) and the wallet is synchronized. Just after a new block or transaction the wallet
    /// may still say synchronized for a moment; pass the expected height, or poll the history.
    pub fn wait_synchronized_at(&self, height: Option<u64>, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let info = self.rpc("getinfo", json!({})).unwrap_or(Value::Null);
            let tip = info["server_height"].as_i64();
            let synced_headers = info["connected"] == json!(true)
                && tip.is_some()
                && info["blockchain_height"].as_i64() == tip
                && height.is_none_or(|h| tip == Some(h as i64));
            if !self.allow_server_errors {
                let errors = self.server_errors();
                if !errors.is_empty() {
                    return Err(self.error(&format!("electrum dropped the server:\n{}", errors.join("\n"))));
                }
            }
            if synced_headers && self.is_synchronized()? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(self.error(&format!(
                    "electrum wallet not synchronized{} after {timeout:?}: getinfo {info}",
                    height.map(|h| format!(" at height {h}")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_synchronized(&self, timeout: Duration) -> Result<()> {
        self.wait_synchronized_at(None, timeout)
    }

    /// `getbalance` (amounts are BTC decimal strings; absent fields are zero).
    pub fn balance(&self) -> Result<Balance> {
        let v = self.call("getbalance", self.wallet_arg())?;
        let field = |name: &str| -> Result<i64> {
            match &v[name] {
                Value::Null => Ok(0),
                Value::String(s) => btc_to_sat(s).ok_or_else(|| self.error(&format!("bad amount {name} in {v}"))),
                other => Err(self.error(&format!("bad amount {name}={other} in {v}"))),
            }
        };
        Ok(Balance {
            confirmed: field("confirmed")?,
            unconfirmed: field("unconfirmed")?,
            unmatured: field("unmatured")?,
        })
    }

    /// `onchain_history` → `{"summary": {...}, "transactions": [{"txid", "height",
    /// "confirmations", "timestamp", "txpos_in_block", "fee_sat", "bc_value", "bc_balance",
    /// "incoming", "date", "label", "monotonic_timestamp", "fee"}]}`, parsed.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let v = self.call("onchain_history", self.wallet_arg())?;
        let txs = v["transactions"].as_array().ok_or_else(|| self.error(&format!("onchain_history: {v}")))?;
        txs.iter()
            .map(|t| HistoryEntry::parse(t).ok_or_else(|| self.error(&format!("cannot parse history entry {t}"))))
            .collect()
    }

    /// The confirmed transactions of the history that are not SPV-verified (should be empty
    /// once synchronized).
    pub fn unverified(&self) -> Result<Vec<HistoryEntry>> {
        Ok(self.history()?.into_iter().filter(|e| e.height > 0 && !e.is_spv_verified()).collect())
    }

    /// `getaddresshistory`: the server's `blockchain.scripthash.get_history` for any address,
    /// passed through unverified: [(txid, height)].
    pub fn address_history(&self, address: &str) -> Result<Vec<(String, i64)>> {
        let v = self.call("getaddresshistory", json!({"address": address}))?;
        let items = v.as_array().ok_or_else(|| self.error(&format!("getaddresshistory: {v}")))?;
        items
            .iter()
            .map(|i| {
                let txid = i["tx_hash"].as_str().map(str::to_string);
                txid.zip(i["height"].as_i64()).ok_or_else(|| self.error(&format!("getaddresshistory item {i}")))
            })
            .collect()
    }

    /// `broadcast` (`blockchain.transaction.broadcast`); returns the txid.
    pub fn broadcast(&self, raw_tx_hex: &str) -> Result<String> {
        let v = self.call("broadcast", json!({"tx": raw_tx_hex}))?;
        v.as_str().map(str::to_string).ok_or_else(|| self.error(&format!("broadcast returned {v}")))
    }

    /// Log lines where Electrum dropped the connection ("disconnecting due to ...", SSL
    /// refusals). Before the server is up these include harmless `ConnectionRefusedError`s.
    pub fn disconnects(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("disconnecting due to") || l.contains("Cannot connect to main server"))
            .map(str::to_string)
            .collect()
    }

    /// `disconnects` except connection refused (server not listening yet) and `CancelledError()`
    /// (the daemon's own shutdown, e.g. in `restart`): the server broke the protocol, answered
    /// an error, timed out, sent a bad proof, or closed the session.
    pub fn server_errors(&self) -> Vec<String> {
        self.disconnects()
            .into_iter()
            .filter(|l| !l.contains("ConnectionRefusedError") && !l.contains("CancelledError()"))
            .collect()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last 60 lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!("--- electrum log tail ({}) ---\n{}", self.log_path.display(), lines[from..].join("\n"))
    }

    fn error(&self, msg: &str) -> ElectrumError {
        ElectrumError(format!("{msg}\n{}", self.log_tail()))
    }

    /// An error (with the log) if the daemon has exited.
    fn check_alive(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap();
        match child.as_mut().map(|c| c.try_wait()) {
            None => Err(self.error("electrum daemon not running")),
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => {
                *child = None;
                drop(child);
                Err(self.error(&format!("electrum daemon exited ({status})")))
            }
            Some(Err(e)) => Err(self.error(&format!("electrum daemon: {e}"))),
        }
    }

    /// Asks the daemon to stop and waits for it (SIGKILL after 10 + 15 s).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.get_mut().unwrap().take() else {
            return Ok(());
        };
        let _ = self.rpc_timeout("stop", json!({}), Duration::from_secs(10));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        kill_group(&mut child);
        Err(self.error("electrum daemon did not stop within 15 s; killed"))
    }
}

/// SIGKILL to `timeout` and electrum (one process group, led by `timeout`).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ElectrumWallet {
    fn drop(&mut self) {
        if !matches!(self.child.get_mut(), Ok(Some(_))) {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        let _ = self.stop();
    }
}

/// "50.", "0.0001", "-1.5001", "5198.4999" (BTC) → satoshis.
pub fn btc_to_sat(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.len() > 8 {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(frac) {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<8}").parse().ok()? };
    let sats = whole.checked_mul(100_000_000)?.checked_add(frac)?;
    Some(if neg { -sats } else { sats })
}

fn rpc_auth() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{RPC_USER}:{RPC_PASS}"))
}
