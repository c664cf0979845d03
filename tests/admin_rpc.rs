//! The operator's commands on the admin RPC, as ElectrumX's `electrumx_rpc` sends them (named
//! parameters) and as `ferrum-rpc` prints them: getinfo, sessions, groups, disconnect, log,
//! daemon_url, inspect_session, query; LOG_SESSIONS and ANON_LOGS in the log; bad commands get
//! clear errors.
//!
//! Run with `cargo test --test admin_rpc -- --test-threads=2`.

use ferrum_testkit as common;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};

use common::client::{scripthash, Client};
use common::served::{small_chain, wait_for, Server};

/// The admin call's error as (code, message).
fn admin_err(server: &Server, method: &str, params: Value) -> (i64, String) {
    let e = server.ferrum.call(method, params.clone()).expect_err(&format!("{method} {params} must fail"));
    let e: Value = serde_json::from_str(&e).unwrap_or_else(|_| panic!("{method}: {e}"));
    (e["code"].as_i64().unwrap(), e["message"].as_str().unwrap().to_string())
}

fn lines(v: Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list of lines: {v}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn from(server: &Server, ip: [u8; 4], name: &str) -> Client {
    let mut c = Client::tcp_from(server.port("tcp"), Ipv4Addr::from(ip));
    c.ok("server.version", json!([name, "1.4"]));
    c
}

fn row_of(server: &Server, name: &str) -> Value {
    let rows = server.ferrum.call("sessions", json!({})).unwrap();
    rows.as_array().unwrap().iter().find(|r| r[3] == name).cloned().unwrap_or_else(|| panic!("no {name} in {rows}"))
}

fn log(server: &Server) -> String {
    std::fs::read_to_string(&server.ferrum.log_path).unwrap()
}

#[test]
fn sessions_groups_and_getinfo_have_electrumx_shapes() {
    let server = Server::start(small_chain(201), &["tcp", "ws"], &[("SESSION_GROUP_PRIVATE", "1")]);
    let sh = scripthash(server.chain.hot_scripts()[0].as_bytes());
    let mut a = from(&server, [127, 7, 0, 1], "electrum/4.5.8");
    let mut b = from(&server, [127, 7, 0, 2], "Sparrow");
    a.ok("blockchain.scripthash.subscribe", json!([sh]));
    a.ok("blockchain.scripthash.get_history", json!([sh]));
    b.ok("server.ping", json!([]));

    let row = row_of(&server, "electrum/4.5.8");
    assert_eq!(row.as_array().unwrap().len(), 15, "{row}");
    assert_eq!(row[1], "T10", "TCP, not logged, 10 requests at once: {row}");
    assert!(row[2].as_str().unwrap().starts_with("127.7.0.1:"), "{row}");
    assert_eq!(row[4], "1.4");
    assert!(row[5].as_f64().unwrap() > 5.0, "cost {row}");
    assert!(row[6].as_f64().unwrap() > 0.0, "XCost: Sparrow is in its /24: {row}");
    assert_eq!(
        (row[7].as_u64(), row[8].as_u64(), row[9].as_u64(), row[10].as_u64()),
        (Some(0), Some(0), Some(1), Some(3))
    );
    assert!(row[11].as_u64().unwrap() > 100 && row[13].as_u64().unwrap() > 100, "bytes {row}");
    assert_eq!(row[12], 3, "{row}");
    assert!(row[14].is_f64(), "{row}");

    let groups = server.ferrum.call("groups", json!({})).unwrap();
    let g = groups.as_array().unwrap().iter().find(|g| g[0] == "127.7.0.0/24").expect("the /24").clone();
    assert_eq!(g.as_array().unwrap().len(), 11);
    assert_eq!((g[1].as_u64(), g[6].as_u64(), g[7].as_u64()), (Some(2), Some(1), Some(5)), "{g}");

    let info = server.ferrum.getinfo().unwrap();
    for key in [
        "daemon",
        "daemon height",
        "db height",
        "groups",
        "pid",
        "request counts",
        "request total",
        "sessions",
        "txs sent",
        "uptime",
        "version",
    ] {
        assert!(info.get(key).is_some(), "getinfo lacks ElectrumX's {key:?}: {info}");
    }
    assert_eq!(info["db height"], json!(server.chain.height()));
    assert_eq!(info["request counts"]["blockchain.scripthash.subscribe"], 1, "{info}");
    assert_eq!(info["request counts"]["server.version"], 2, "{info}");
    assert!(info["request total"].as_u64().unwrap() >= 5);
    let s = &info["sessions"];
    assert_eq!(
        (s["count"].as_u64(), s["count with subs_sh"].as_u64(), s["subs_sh"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    assert!(info["uptime"].as_str().unwrap().ends_with('s'), "ElectrumX's uptime text: {info}");

    // The same tables through ferrum-rpc, as electrumx_rpc prints them.
    let port = server.ferrum.admin_port.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrum-rpc"))
        .args(["--port", &port, "sessions"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ID     Flags            Client Proto    Cost   XCost"), "{text}");
    assert!(text.contains("electrum/4.5.8   1.4") && text.contains("127.7.0.2:"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrum-rpc"))
        .args(["--port", &port, "groups"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("127.7.0.0/24           2")), "{text}");
}

#[test]
fn disconnect_and_log_follow_electrumx() {
    let server = Server::start(small_chain(202), &["tcp"], &[("SESSION_GROUP_PRIVATE", "1")]);
    let mut a = from(&server, [127, 8, 0, 1], "a");
    let mut b = from(&server, [127, 8, 0, 2], "b");
    let mut c = from(&server, [127, 9, 0, 1], "c");
    let mut d = from(&server, [127, 10, 0, 1], "d");
    let id = |name: &str| row_of(&server, name)[0].as_u64().unwrap();
    let (ida, idc) = (id("a"), id("c"));

    // log: toggles per session, with ElectrumX's lines; logged sessions' requests are logged.
    let r = lines(server.ferrum.call("log", json!({"session_ids": [ida.to_string(), "zz", "99999"]})).unwrap());
    assert_eq!(r, vec![format!("logging session {ida}"), "unknown: zz".into(), "unknown: 99999".into()]);
    assert_eq!(row_of(&server, "a")[1], "TL10");
    a.ok("blockchain.block.header", json!([3]));
    assert!(
        wait_for(Duration::from_secs(5), || log(&server).contains("\"blockchain.block.header\"")),
        "a logged request"
    );
    let r = lines(server.ferrum.call("log", json!({"session_ids": [ida.to_string()]})).unwrap());
    assert_eq!(r, vec![format!("not logging session {ida}")]);
    assert_eq!(row_of(&server, "a")[1], "T10", "toggled off");
    let r = lines(server.ferrum.call("log", json!({"session_ids": ["all", "none", "new"]})).unwrap());
    assert_eq!(r, vec!["logging all sessions", "logging no sessions", "logging new sessions"]);
    let r = lines(server.ferrum.call("log", json!({"session_ids": ["127.8.0.0/24"]})).unwrap());
    assert_eq!(r.len(), 2, "each member of the group toggled: {r:?}");
    let e = from(&server, [127, 11, 0, 1], "e");
    assert_eq!(row_of(&server, "e")[1], "TL10", "new sessions are logged");
    let r = lines(server.ferrum.call("log", json!({"session_ids": ["NONE"]})).unwrap());
    assert_eq!(r, vec!["logging no sessions"]);
    assert_eq!(row_of(&server, "a")[1], "T10");
    drop(e);

    // disconnect: one id, a group, unknowns.
    let r = lines(server.ferrum.call("disconnect", json!({"session_ids": [idc.to_string(), "nope", "new"]})).unwrap());
    assert_eq!(r, vec![format!("disconnecting session {idc}"), "unknown: nope".into(), "unknown: new".into()]);
    assert!(c.is_closed(Duration::from_secs(5)), "session c was not closed");
    let r = lines(server.ferrum.call("disconnect", json!({"session_ids": ["127.8.0.0/24"]})).unwrap());
    assert_eq!(r, vec!["disconnecting group 127.8.0.0/24"]);
    assert!(a.is_closed(Duration::from_secs(5)) && b.is_closed(Duration::from_secs(5)), "the group was not closed");
    assert_eq!(d.call("server.ping", json!([])), Ok(Value::Null), "others stay");
    let r = lines(server.ferrum.call("disconnect", json!({"session_ids": ["all"]})).unwrap());
    assert_eq!(r, vec!["disconnecting all sessions"]);
    assert!(d.is_closed(Duration::from_secs(5)));
    assert!(log(&server).contains("admin request to disconnect session ids"));

    // Bad arguments.
    assert_eq!(admin_err(&server, "disconnect", json!({"session_ids": [1]})).0, -32602);
    assert_eq!(admin_err(&server, "log", json!({})).0, -32602);
}

#[test]
fn daemon_url_inspect_session_and_query() {
    let server = Server::start(small_chain(203), &["tcp"], &[]);
    let script = &server.chain.hot_scripts()[0];
    let sh = scripthash(script.as_bytes());
    let mut c = server.negotiated();
    c.ok("blockchain.scripthash.subscribe", json!([sh]));
    let id = server.ferrum.call("sessions", json!({})).unwrap()[0][0].as_u64().unwrap();

    let i = server.ferrum.call("inspect_session", json!({"session_id": id})).unwrap();
    assert_eq!(i["client_name"], "ferrum-test");
    assert_eq!(i["request counts"]["blockchain.scripthash.subscribe"], 1, "{i}");
    assert_eq!((i["subs_sh"].as_u64(), i["is_logged"].as_bool()), (Some(1), Some(false)), "{i}");
    assert_eq!(
        admin_err(&server, "inspect_session", json!({"session_id": 424242})),
        (1, "no session with id=424242".into())
    );

    // daemon_url: a bad URL is refused (and the daemon kept); none means back to DAEMON_URL.
    let (code, msg) = admin_err(&server, "daemon_url", json!({"daemon_url": "ftp://x"}));
    assert_eq!(code, 1);
    assert!(msg.starts_with("an error occurred: ") && msg.contains("DAEMON_URL"), "{msg}");
    let url = server.ferrum.env["DAEMON_URL"].clone();
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let r = server.ferrum.call("daemon_url", json!({"daemon_url": format!("{url},http://u:p@127.0.0.1:9")})).unwrap();
    assert_eq!(r, json!(format!("now using daemon at http://127.0.0.1:{port}/")));
    let r = server.ferrum.call("daemon_url", json!({"daemon_url": ""})).unwrap();
    assert_eq!(r, json!(format!("now using daemon at http://127.0.0.1:{port}/")));
    let txid = server.chain.blocks()[1].txdata[0].compute_txid().to_string();
    let tx = c.call("blockchain.transaction.get", json!([txid]));
    assert!(tx.is_ok(), "the daemon in use answers: {tx:?}");

    // query: ElectrumX's lines, and the same as objects.
    let objects =
        server.ferrum.call("query_json", json!({"items": [hex::encode(script.as_bytes())], "limit": 3})).unwrap();
    let text =
        lines(server.ferrum.call("query", json!({"items": [hex::encode(script.as_bytes())], "limit": 3})).unwrap());
    assert_eq!(text[0], format!("Script: {}", hex::encode(script.as_bytes())));
    assert_eq!(text.iter().filter(|l| l.starts_with("History #")).count(), 3, "{text:?}");
    assert!(text[1].starts_with("History #0: height "), "{text:?}");
    let utxos = objects[0]["utxos"].as_array().unwrap();
    assert_eq!(text.iter().filter(|l| l.starts_with("UTXO #")).count(), utxos.len().min(3), "{text:?}");
    let sats = objects[0]["balance"].as_u64().unwrap();
    assert!(text.last().unwrap().starts_with("Balance: ") && text.last().unwrap().ends_with(" XTN"), "{text:?}");
    if sats % 100_000_000 == 0 {
        assert!(!text.last().unwrap().contains('.'), "{text:?}");
    }
    let by_hash = lines(server.ferrum.call("query", json!({"items": [sh], "limit": 3})).unwrap());
    assert_eq!(by_hash[0], format!("Script hash: {sh}"));
    assert_eq!(by_hash[1..], text[1..], "the script and its hash answer alike");
    let e = admin_err(&server, "query", json!({"items": ["not an address"]}));
    assert_eq!(e.0, -32602, "{e:?}");
    assert_eq!(admin_err(&server, "bogus", json!({})).0, -32601);
}

#[test]
fn log_sessions_writes_the_table_and_anon_logs_hides_addresses() {
    let server = Server::start(small_chain(204), &["tcp"], &[("LOG_SESSIONS", "1"), ("ANON_LOGS", "1")]);
    let mut c = server.negotiated();
    c.ok("server.ping", json!([]));
    let found = wait_for(Duration::from_secs(10), || {
        let l = log(&server);
        l.contains("ID     Flags            Client Proto")
            && l.contains("xx.xx.xx.xx:xx")
            && l.contains("\"count with subs_sh\"")
    });
    assert!(found, "no session table in the log: {}", server.ferrum.log_tail());
    let l = log(&server);
    let table = l.lines().filter(|l| l.contains("ferrum-test")).collect::<Vec<_>>();
    assert!(!table.is_empty() && table.iter().all(|l| !l.contains("127.0.0.1")), "{table:?}");
    // The admin RPC, for the operator, still shows the address.
    let rows = server.ferrum.call("sessions", json!({})).unwrap();
    assert!(rows[0][2].as_str().unwrap().starts_with("127.0.0.1:"), "{rows}");
}
