//! ElectrumX's own admin client, `electrumx_rpc` 2.0.0 from PyPI, drives ferrum's admin RPC
//! unchanged: the operator switching from ElectrumX keeps their tool and their scripts.
//!
//! Run with `cargo test --test e2e_electrumx_rpc`. Needs `contrib/install-test-deps.sh`.

use ferrum_testkit as common;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;

use common::client::{scripthash, Client};
use common::electrumx;
use common::served::{small_chain, Server};

#[test]
fn electrumx_rpc_drives_ferrum() {
    let Some(bin) = electrumx::electrumx_rpc() else { return };
    let mut server = Server::start(small_chain(301), &["tcp"], &[("SESSION_GROUP_PRIVATE", "1")]);
    let port = server.ferrum.admin_port;
    let rpc = |args: &[&str]| {
        let r = electrumx::run(&bin, port, args);
        assert!(r.ok, "electrumx_rpc {args:?} failed: {r:?}");
        r
    };
    let script = server.chain.hot_scripts()[0].clone();
    let mut wallet = Client::tcp_from(server.port("tcp"), Ipv4Addr::new(127, 12, 0, 1));
    wallet.ok("server.version", json!(["electrum/4.5.8", "1.4"]));
    wallet.ok("blockchain.scripthash.subscribe", json!([scripthash(script.as_bytes())]));

    let info = rpc(&["getinfo"]).json();
    assert_eq!(info["db height"], json!(server.chain.height()), "{info}");
    assert_eq!(info["sessions"]["count"], 1, "{info}");

    // The tables are printed by electrumx_rpc's own formatter: it checks every row's shape.
    let sessions = rpc(&["sessions"]);
    let lines = sessions.lines();
    assert!(lines[0].starts_with("ID     Flags            Client Proto    Cost   XCost  Reqs"), "{sessions:?}");
    let row = lines.iter().find(|l| l.contains("electrum/4.5.8")).unwrap_or_else(|| panic!("{sessions:?}"));
    assert!(row.contains("T10") && row.contains("127.12.0.1:"), "{row}");
    let id = row.split_whitespace().next().unwrap().to_string();
    let groups = rpc(&["groups"]);
    assert!(groups.lines()[0].starts_with("Name            Sessions     Cost Retained"), "{groups:?}");
    assert!(groups.lines().iter().any(|l| l.starts_with("127.12.0.0/24          1")), "{groups:?}");

    let inspected = rpc(&["inspect_session", &id]).json();
    assert_eq!(inspected["client_name"], "electrum/4.5.8");
    assert_eq!(inspected["subs_sh"], 1);

    assert_eq!(rpc(&["log", &id, "new"]).json(), json!(["logging new sessions", format!("logging session {id}")]));
    assert_eq!(rpc(&["log", "none"]).json(), json!(["logging no sessions"]));

    let query = rpc(&["query", "-l", "2", &hex::encode(script.as_bytes())]);
    let q = query.lines();
    assert_eq!(q[0], format!("Script: {}", hex::encode(script.as_bytes())));
    assert!(q[1].starts_with("History #0: height "), "{query:?}");
    assert!(q.last().unwrap().starts_with("Balance: ") && q.last().unwrap().ends_with(" XTN"), "{query:?}");

    let daemon = server.ferrum.env["DAEMON_URL"].clone();
    let r = rpc(&["daemon_url", &daemon]).json();
    assert!(r.as_str().unwrap().starts_with("now using daemon at http://127.0.0.1:"), "{r}");
    let bad = electrumx::run(&bin, port, &["daemon_url", "ftp://nowhere"]);
    assert!(!bad.ok, "{bad:?}");
    assert!(bad.stdout.contains("error making request: (1, 'an error occurred: "), "{bad:?}");

    let r = rpc(&["disconnect", &id, "zz"]).json();
    assert_eq!(r, json!([format!("disconnecting session {id}"), "unknown: zz"]));
    assert!(wallet.is_closed(Duration::from_secs(5)), "the session was not disconnected");

    let r = rpc(&["reorg", "2"]).json();
    assert!(!r.is_null(), "{r}");
    server.ferrum.wait_for_tip(
        u64::from(server.chain.height()),
        Some(&server.chain.tip_hash().to_string()),
        Duration::from_secs(60),
    );

    assert_eq!(rpc(&["stop"]).json(), json!("stopping"));
    let status = server.ferrum.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "ferrum exited with {status} after stop");
}
