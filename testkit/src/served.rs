//! ferrum serving a small scripted chain over the client protocols, for the tests that talk
//! to it as clients do (protocol robustness, limits, the admin RPC).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::serialize;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::chain::ChainBuilder;
use crate::client::Client;
use crate::process::FerrumProcess;
use crate::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const WAIT: Duration = Duration::from_secs(60);

/// A ferrum serving `chain` (synced) on the given client protocols, with its daemon.
pub struct Server {
    // Dropped in this order: ferrum is killed before its daemon and directory go away.
    pub ferrum: FerrumProcess,
    pub daemon: ScriptedDaemon,
    _dir: TempDir,
    pub ports: BTreeMap<String, u16>,
    pub chain: ChainBuilder,
}

impl Server {
    pub fn start(chain: ChainBuilder, protocols: &[&str], env: &[(&str, &str)]) -> Server {
        let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
        let dir = TempDir::new().expect("tempdir");
        let url = daemon.url();
        let mut e = vec![("DAEMON_URL", url.as_str()), ("NET", "regtest")];
        e.extend_from_slice(env);
        let (mut ferrum, ports) = FerrumProcess::start_serving(&dir.path().join("db"), protocols, &e);
        ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), WAIT);
        for port in ports.values() {
            ferrum.wait_port(*port, WAIT);
        }
        Server { ferrum, daemon, _dir: dir, ports, chain }
    }

    pub fn port(&self, protocol: &str) -> u16 {
        self.ports[protocol]
    }

    pub fn tcp(&self) -> Client {
        Client::tcp(self.port("tcp"))
    }

    /// A TCP client that negotiated protocol 1.4.
    pub fn negotiated(&self) -> Client {
        let mut c = self.tcp();
        assert_eq!(c.version(json!("1.4")), "1.4");
        c
    }

    /// A fresh, well-behaved client gets correct answers: the server survived whatever the test
    /// did to it.
    pub fn assert_healthy(&mut self) {
        if let Some(status) = self.ferrum.exited() {
            panic!("ferrum exited ({status})\n{}", self.ferrum.log_tail());
        }
        // A test that reached MAX_SESSIONS may have just let go: the listener opens again
        // once ferrum has seen the sessions close.
        let port = self.port("tcp");
        let start = Instant::now();
        let mut c = loop {
            match Client::try_tcp(port) {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("cannot connect to ferrum: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(c.version(json!(["1.4", "1.6"])), "1.6");
        let h = self.chain.height();
        let tip = c.ok("blockchain.headers.subscribe", json!([]));
        assert_eq!(tip["height"], json!(h), "tip height: {tip}");
        assert_eq!(tip["hex"], json!(header_hex(&self.chain, h)), "tip header");
        assert_eq!(c.ok("blockchain.block.header", json!([1])), json!(header_hex(&self.chain, 1)));
        assert_eq!(c.ok("server.ping", json!([])), Value::Null);
    }
}

pub fn small_chain(seed: u64) -> ChainBuilder {
    let mut chain = ChainBuilder::new(seed);
    chain.add_blocks(30);
    chain
}

pub fn header_hex(chain: &ChainBuilder, height: u32) -> String {
    hex::encode(serialize(&chain.blocks()[height as usize].header))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until ferrum counts exactly `n` open client connections (admin getinfo).
pub fn wait_connections(server: &Server, n: u64) {
    let start = Instant::now();
    loop {
        let info = server.ferrum.getinfo();
        let got = info.as_ref().and_then(|i| i["sessions"]["connections"].as_u64());
        if got == Some(n) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "ferrum counts {got:?} connections, not {n}: {info:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
