//! ElectrumX 2.0.0 from PyPI (`e-x`, installed in a virtualenv by
//! `contrib/install-test-deps.sh`): its `electrumx_rpc` client, to check that operators' own
//! tool drives ferrum's admin RPC unchanged.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::nodes::locate;

/// `electrumx_rpc`, or `None` when not installed (the test is skipped, unless
/// `FERRUM_REQUIRE_NODES=1`, where it fails).
pub fn electrumx_rpc() -> Option<PathBuf> {
    locate("ElectrumX 2.0.0", "electrumx/bin/electrumx_rpc")
}

/// What one `electrumx_rpc` run printed.
#[derive(Debug)]
pub struct RpcRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl RpcRun {
    /// The printed JSON (commands other than sessions, groups, peers and query).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("electrumx_rpc printed no JSON ({e}): {self:?}"))
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs `electrumx_rpc -p <port> --timeout 30 <args>`.
pub fn run(bin: &PathBuf, port: u16, args: &[&str]) -> RpcRun {
    let out = Command::new(bin)
        .args(["-p", &port.to_string(), "--timeout", &Duration::from_secs(30).as_secs().to_string()])
        .args(args)
        .output()
        .expect("run electrumx_rpc");
    RpcRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
