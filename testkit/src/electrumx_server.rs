//! ElectrumX 2.0.0's server (`electrumx_server` from PyPI's `e-x`, storing its index in LevelDB
//! through `plyvel`; both installed in a virtualenv by `contrib/install-test-deps.sh`) on a
//! regtest Bitcoin Core, so an end-to-end test can ask the reference implementation and ferrum
//! the same protocol 1.7 questions:
//!
//! ```text
//! let Some(core) = BitcoinCore::try_start_with(&electrumx_server::CORE_FLAGS) else { return };
//! core.generate_to(110, ADDRESS);
//! let Some(ex) = ElectrumX::try_start(&core) else { return };
//! let history = ex.ok("blockchain.scriptpubkey.get_history", json!([spk_hex]));
//! ```
//!
//! ElectrumX quirks this module absorbs:
//! - it opens its client port only once caught up with the daemon (about 0.4 s from spawn for a
//!   ~110-block chain), then follows new blocks and mempool transactions by polling Core;
//! - it exits with status 0 even after a fatal startup error, so any exit counts as a failure;
//! - over TCP it pads every response with spaces to 1 KiB or a power of two, and once a
//!   connection has been sent about 1 KiB of (unpadded) responses it holds each small response
//!   up to 1 s to batch it with later ones. A fresh connection per question avoids that delay.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Client, RpcErr};
use crate::nodes::{locate, Node};
use crate::process::free_port;

/// Bitcoin Core options ElectrumX 2.0.0 insists on: at startup it checks that `getindexinfo`
/// lists both indexes (the 1.7 outpoint methods ask Core's `gettxspendingprevout`), and that
/// `getnetworkinfo` reports version 31.0 or later. REST is not needed.
pub const CORE_FLAGS: [&str; 2] = ["-txindex=1", "-txospenderindex=1"];

/// `electrumx_server`, or `None` when it or its LevelDB binding is not installed (the test is
/// skipped, unless `FERRUM_REQUIRE_NODES=1`, where it fails).
pub fn electrumx_server() -> Option<PathBuf> {
    let bin = locate("ElectrumX 2.0.0", "electrumx/bin/electrumx_server")?;
    // Virtualenvs made before the server was used lack plyvel, and ElectrumX 2 has no DB engine
    // without it.
    let has_plyvel = Command::new(bin.with_file_name("python"))
        .args(["-c", "import plyvel"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_plyvel {
        return Some(bin);
    }
    let msg = "plyvel missing from the ElectrumX virtualenv, run contrib/install-test-deps.sh";
    if std::env::var("FERRUM_REQUIRE_NODES").as_deref() == Ok("1") {
        panic!("FERRUM_REQUIRE_NODES=1 but {msg}");
    }
    eprintln!("\nSKIPPED: {msg}\n");
    None
}

/// A running `electrumx_server`; killed on drop.
pub struct ElectrumX {
    child: Option<Child>,
    /// The Electrum protocol port (plain TCP) on 127.0.0.1.
    pub tcp_port: u16,
    /// The admin RPC port, for `electrumx_rpc` (`crate::electrumx::run`).
    pub rpc_port: u16,
    pub log_path: PathBuf,
    /// The directory `try_start` made; removed on drop, after the process is gone.
    _tmp: Option<tempfile::TempDir>,
}

impl ElectrumX {
    /// ElectrumX on `node` (started with [`CORE_FLAGS`]) in a temporary directory, synced to the
    /// node's current height; `None` when it is not installed.
    pub fn try_start(node: &Node) -> Option<ElectrumX> {
        electrumx_server()?;
        let tmp = tempfile::Builder::new().prefix("ferrum-electrumx-").tempdir().unwrap();
        let mut ex = ElectrumX::start(&node.url(), tmp.path());
        ex._tmp = Some(tmp);
        ex.wait_for_height(node.height(), Duration::from_secs(60));
        Some(ex)
    }

    /// Starts ElectrumX on `daemon_url` (the form `Node::url` gives) with its DB in `dir/db` and
    /// its log in `dir/electrumx.log`, and waits until it answers `server.version`. It serves
    /// clients only once caught up, so it has then indexed at least the daemon's height at its
    /// start. Panics when it is not installed.
    pub fn start(daemon_url: &str, dir: &Path) -> ElectrumX {
        ElectrumX::start_with(daemon_url, dir, &[])
    }

    /// `start` with extra (or overriding) environment variables.
    pub fn start_with(daemon_url: &str, dir: &Path, extra_env: &[(&str, &str)]) -> ElectrumX {
        Self::start_listening(daemon_url, dir, "127.0.0.1", extra_env)
    }

    /// `start_with`, its client port on `listen_host` (empty: every interface, which peer tests
    /// use so its outgoing connections leave from 127.0.0.1 while names map it anywhere).
    pub fn start_listening(daemon_url: &str, dir: &Path, listen_host: &str, extra_env: &[(&str, &str)]) -> ElectrumX {
        let bin = electrumx_server().expect("ElectrumX server not installed");
        let (tcp_port, rpc_port) = (free_port(), free_port());
        let db_dir = dir.join("db");
        std::fs::create_dir_all(&db_dir).unwrap();
        let db_dir = db_dir.display().to_string();
        let services = format!("tcp://{listen_host}:{tcp_port},rpc://127.0.0.1:{rpc_port}");
        let mut env: Vec<(&str, &str)> = vec![
            ("COIN", "Bitcoin"),
            ("NET", "regtest"),
            // Version 2 has no default engine; LevelDB is the one plyvel provides.
            ("DB_ENGINE", "leveldb"),
            ("DB_DIRECTORY", db_dir.as_str()),
            ("DAEMON_URL", daemon_url),
            ("SERVICES", services.as_str()),
            // It refuses to run as root without this (CI containers run as root).
            ("ALLOW_ROOT", "1"),
            // No peers on regtest: neither look for them nor announce ourselves (empty = false).
            ("PEER_DISCOVERY", "off"),
            ("PEER_ANNOUNCE", ""),
            // Poll Core every 100 ms rather than 5 s: new blocks and transactions show in ~0.1 s.
            ("DAEMON_POLL_INTERVAL_BLOCKS", "100"),
            ("DAEMON_POLL_INTERVAL_MEMPOOL", "100"),
            // 0 and 0 turn off per-session cost throttling (request sleeps and lowered
            // concurrency), which a test asking hundreds of questions from 127.0.0.1 would hit.
            ("COST_SOFT_LIMIT", "0"),
            ("COST_HARD_LIMIT", "0"),
            ("LOG_LEVEL", "info"),
            // Its log must be complete when a test fails and prints the tail.
            ("PYTHONUNBUFFERED", "1"),
        ];
        // "$TCP_PORT" in a value is the client port chosen here (e.g. for REPORT_SERVICES).
        let port_text = tcp_port.to_string();
        let extra: Vec<(String, String)> =
            extra_env.iter().map(|(k, v)| (k.to_string(), v.replace("$TCP_PORT", &port_text))).collect();
        env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let log_path = dir.join("electrumx.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut cmd = Command::new(&bin);
        // A clean environment, as for ferrum: ElectrumX takes all its settings from it, so the
        // test's own variables (SERVICES, DB_DIRECTORY, ...) must not leak in.
        cmd.env_clear();
        for var in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(var) {
                cmd.env(var, value);
            }
        }
        // Later pairs override earlier ones, so `extra_env` wins.
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut ex = ElectrumX { child: Some(child), tcp_port, rpc_port, log_path, _tmp: None };
        // It opens its client port once caught up with the daemon: a benchmark's million
        // transactions take it minutes; a fatal error still ends the wait at once.
        ex.wait_serving(Duration::from_secs(1800));
        ex
    }

    /// Keeps `dir` (where the server's DB and log are) until the server is dropped.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._tmp = Some(dir);
    }

    /// The server process's id (for its CPU and memory accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the client port, then checks the protocol negotiates.
    fn wait_serving(&mut self, timeout: Duration) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.tcp_port)).is_err() {
            self.check_alive("before serving clients");
            if start.elapsed() > timeout {
                panic!("ElectrumX did not open port {} within {timeout:?}\n{}", self.tcp_port, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.client());
    }

    /// Panics with the log's tail if the process has exited: ElectrumX exits with status 0 even
    /// after a fatal error (a missing index, a bad variable), so any exit is a failure.
    fn check_alive(&mut self, when: &str) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.child = None;
            panic!("ElectrumX exited ({status}) {when}\n{}", self.log_tail());
        }
    }

    /// The client address (plain TCP, newline-delimited JSON-RPC).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tcp_port))
    }

    /// A new connection that has negotiated protocol 1.7, for subscriptions and anything that
    /// needs one session. After ~1 KiB of responses on it, each small response takes up to 1 s
    /// (see the module notes): prefer `call` for plain questions.
    pub fn client(&self) -> Client {
        let mut c =
            Client::try_tcp(self.tcp_port).unwrap_or_else(|e| panic!("connect to ElectrumX: {e}\n{}", self.log_tail()));
        let version = c.version(json!("1.7"));
        assert_eq!(version, "1.7", "ElectrumX negotiated protocol {version}");
        c
    }

    /// Asks one question on a fresh connection (after `server.version`, which the protocol
    /// requires first), so the answer comes at once; ~2 ms a question.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcErr> {
        self.client().call(method, params)
    }

    /// `call` that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params.clone())
            .unwrap_or_else(|e| panic!("ElectrumX {method}({params}) failed: {e:?}\n{}", self.log_tail()))
    }

    /// The height of the tip ElectrumX has indexed (`blockchain.headers.subscribe`).
    pub fn height(&self) -> u64 {
        let tip = self.ok("blockchain.headers.subscribe", json!([]));
        tip["height"].as_u64().unwrap_or_else(|| panic!("no height in {tip}"))
    }

    /// Waits until ElectrumX's tip is at `height`. Mine and wait before asking about new
    /// blocks: while its DB lags the daemon, outpoint queries fail ("DB is lagging behind
    /// daemon").
    pub fn wait_for_height(&mut self, height: u64, timeout: Duration) {
        self.wait_until(&format!("height {height}"), timeout, |ex| ex.height() == height);
    }

    /// Polls `done` every 50 ms until it holds (e.g. a transaction is in `mempool.recent`);
    /// panics with the log's tail on timeout or if ElectrumX exits.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&ElectrumX) -> bool) {
        let start = Instant::now();
        loop {
            self.check_alive(&format!("while waiting for {what}"));
            if done(&*self) {
                return;
            }
            if start.elapsed() > timeout {
                panic!("ElectrumX: no {what} within {timeout:?}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!("--- ElectrumX log tail ({}) ---\n{}", self.log_path.display(), lines[from..].join("\n"))
    }
}

impl Drop for ElectrumX {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("{}", self.log_tail());
            }
            // SIGKILL: the DB is scratch, and a clean stop (SIGTERM) takes about 2 s.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
