//! The cost model on loopback (shared/docs limits.md): a client hammering a heavy history is
//! slowed, then cut off with -101, while a client of another subnet keeps its latency; a closed
//! session's cost stays with its subnet; COST_EXEMPT networks and COST_SOFT_LIMIT=
//! COST_HARD_LIMIT=0 are never throttled; REQUEST_TIMEOUT answers -102 and keeps the session.
//!
//! Clients connect from different loopback addresses (127.0.0.2, 127.1.0.1, ...), so with
//! SESSION_GROUP_PRIVATE=1 ferrum groups them by /24 as it groups public addresses.
//!
//! Run with `cargo test --test limits -- --test-threads=2`.

use ferrum_testkit as common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::chain::ChainBuilder;
use common::client::{scripthash, Client};
use common::served::{wait_for, Server};

const EXCESSIVE_RESOURCE_USAGE: i64 = -101;
const SERVER_BUSY: i64 = -102;

/// A chain whose hot scripts have long histories: each `get_history` of one is a few kB.
fn chain() -> ChainBuilder {
    let mut chain = ChainBuilder::new(91);
    chain.add_blocks(60);
    chain
}

fn hot(server: &Server) -> String {
    scripthash(server.chain.hot_scripts()[0].as_bytes())
}

fn from(server: &Server, ip: [u8; 4]) -> Client {
    let mut c = Client::tcp_from(server.port("tcp"), Ipv4Addr::from(ip));
    assert_eq!(c.version(json!("1.4")), "1.4");
    c
}

/// One request's answer and how long it took.
fn timed(c: &mut Client, method: &str, params: Value) -> (Result<Value, (i64, String)>, Duration) {
    let start = Instant::now();
    let r = c.call(method, params);
    (r, start.elapsed())
}

/// The admin `sessions` row of the session connected from `ip`.
fn session_row(server: &Server, ip: &str) -> Value {
    let rows = server.ferrum.call("sessions", json!({})).expect("sessions");
    let row = rows.as_array().unwrap().iter().find(|r| r[2].as_str().is_some_and(|p| p.starts_with(&format!("{ip}:"))));
    row.cloned().unwrap_or_else(|| panic!("no session from {ip} in {rows}"))
}

fn group_row(server: &Server, name: &str) -> Option<Value> {
    let rows = server.ferrum.call("groups", json!({})).expect("groups");
    rows.as_array().unwrap().iter().find(|r| r[0] == name).cloned()
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Bandwidth counts 1 per 200 bytes, so each heavy answer (about 18 kB) costs about 100: the hammer crosses
/// the soft limit (1,000) within ten requests and the hard one (3,000) within about thirty;
/// each request past the soft limit first waits f × REQUEST_SLEEP (up to 1 s).
const HAMMER_ENV: [(&str, &str); 4] = [
    ("SESSION_GROUP_PRIVATE", "1"),
    ("BANDWIDTH_UNIT_COST", "200"),
    ("REQUEST_SLEEP", "1000"),
    ("COST_HARD_LIMIT", "3000"),
];

#[test]
fn a_hammering_client_is_slowed_then_cut_off_while_another_subnet_keeps_its_latency() {
    let server = Server::start(chain(), &["tcp"], &HAMMER_ENV);
    let sh = hot(&server);
    let mut hammer = from(&server, [127, 0, 0, 2]);
    let mut polite = from(&server, [127, 1, 0, 1]);
    let (first, _) = timed(&mut hammer, "blockchain.scripthash.get_history", json!([sh]));
    let size = first.expect("history").to_string().len();
    assert!(size > 3000, "the hot script's history is {size} bytes: too light for this test");

    let mut hammer_times = Vec::new();
    let mut polite_times = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let (r, took) = timed(&mut hammer, "blockchain.scripthash.get_history", json!([sh]));
        match r {
            Ok(_) => hammer_times.push(took),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        let (r, took) = timed(&mut polite, "blockchain.scripthash.get_balance", json!([sh]));
        r.expect("the polite client is answered");
        polite_times.push(took);
    }
    let refused = refused.expect("the hammering client was never cut off");
    assert_eq!(refused.0, EXCESSIVE_RESOURCE_USAGE, "{refused:?}");
    assert_eq!(refused.1, "excessive resource usage");
    assert!(hammer.is_closed(Duration::from_secs(5)), "the session must be closed after -101");

    // Slowed before it was cut: the last answers waited most of REQUEST_SLEEP.
    let n = hammer_times.len();
    assert!(n >= 15, "cut off after only {n} requests");
    let early = percentile(hammer_times[..5].to_vec(), 0.5);
    let late = percentile(hammer_times[n - 5..].to_vec(), 0.5);
    assert!(early < Duration::from_millis(150), "not throttled at first: {early:?}");
    assert!(late >= Duration::from_millis(500), "the hammer was not slowed: {late:?} at the end ({hammer_times:?})");
    // The polite client, in another /24, was never slowed.
    let p99 = percentile(polite_times.clone(), 0.99);
    assert!(p99 < Duration::from_millis(300), "polite p99 {p99:?} while the hammer was throttled ({polite_times:?})");

    // The cut was logged with the address.
    let log = std::fs::read_to_string(&server.ferrum.log_path).unwrap();
    assert!(log.contains("over res usage. ip: 127.0.0.2:"), "{}", server.ferrum.log_tail());

    // Its cost stays with 127.0.0.0/24: a new session from there is cut at its first request;
    // one from a third subnet is served.
    let group = group_row(&server, "127.0.0.0/24").expect("the hammer's group");
    assert!(group[3].as_f64().unwrap() > 2900.0, "retained cost {group}");
    let mut again = Client::tcp_from(server.port("tcp"), Ipv4Addr::new(127, 0, 0, 3));
    let r = again.call("server.version", json!(["again", "1.4"]));
    assert_eq!(r.unwrap_err().0, EXCESSIVE_RESOURCE_USAGE, "reconnecting escaped the group's cost");
    let mut other = from(&server, [127, 2, 0, 1]);
    assert_eq!(other.call("server.ping", json!([])), Ok(Value::Null));
    assert!(
        session_row(&server, "127.1.0.1")[1].as_str().unwrap().starts_with("T"),
        "the polite session is still there"
    );
    polite.ok("server.ping", json!([]));
}

#[test]
fn sessions_of_one_subnet_share_its_cost() {
    let server = Server::start(chain(), &["tcp"], &HAMMER_ENV);
    let sh = hot(&server);
    let mut a = from(&server, [127, 4, 0, 1]);
    let mut b = from(&server, [127, 4, 0, 2]);
    let mut c = from(&server, [127, 5, 0, 1]);
    for _ in 0..6 {
        a.ok("blockchain.scripthash.get_history", json!([sh]));
    }
    let row_a = session_row(&server, "127.4.0.1");
    let row_b = session_row(&server, "127.4.0.2");
    let row_c = session_row(&server, "127.5.0.1");
    let (cost_a, xcost_b) = (row_a[5].as_f64().unwrap(), row_b[6].as_f64().unwrap());
    assert!(cost_a > 400.0, "{row_a}");
    // B's extra cost is A's (give or take decay and B's own bytes): same /24.
    assert!((xcost_b - cost_a).abs() < 20.0, "A {row_a} B {row_b}");
    assert!(row_c[6].as_f64().unwrap() < 1.0, "another /24 carries none of it: {row_c}");
    let group = group_row(&server, "127.4.0.0/24").expect("group 127.4.0.0/24");
    assert_eq!(group[1], 2, "{group}");
    // Rows as electrumx_rpc reads them: counts are integers.
    for i in 7..=13 {
        assert!(row_a[i].is_u64(), "sessions column {i} must be an integer: {row_a}");
    }
    for i in [1, 4, 5, 6, 7, 8, 9, 10] {
        assert!(group[i].is_u64(), "groups column {i} must be an integer: {group}");
    }
    // A leaves: its cost is retained by the group.
    drop(a);
    assert!(wait_for(Duration::from_secs(5), || group_row(&server, "127.4.0.0/24").is_some_and(|g| g[1] == 1)));
    let group = group_row(&server, "127.4.0.0/24").unwrap();
    assert!(group[3].as_f64().unwrap() > 400.0, "retained {group}");
    assert!(session_row(&server, "127.4.0.2")[6].as_f64().unwrap() > 400.0, "B still carries it");
    c.ok("server.ping", json!([]));
    b.ok("server.ping", json!([]));
}

#[test]
fn loopback_is_not_grouped_by_default() {
    let server = Server::start(chain(), &["tcp"], &[("BANDWIDTH_UNIT_COST", "200")]);
    let sh = hot(&server);
    let mut a = from(&server, [127, 4, 0, 1]);
    let b = from(&server, [127, 4, 0, 2]);
    for _ in 0..3 {
        a.ok("blockchain.scripthash.get_history", json!([sh]));
    }
    assert!(session_row(&server, "127.4.0.2")[6].as_f64().unwrap() < 1.0, "private addresses share no cost");
    assert_eq!(server.ferrum.call("groups", json!({})).unwrap(), json!([]));
    drop(b);
}

#[test]
fn exempt_networks_and_the_model_turned_off_are_never_throttled() {
    let exempt =
        [HAMMER_ENV[0], HAMMER_ENV[1], HAMMER_ENV[2], HAMMER_ENV[3], ("COST_EXEMPT", "127.6.0.0/16, 10.0.0.0/8")];
    let off = [HAMMER_ENV[1], ("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "0")];
    for (env, ip) in [(&exempt[..], [127, 6, 1, 1]), (&off[..], [127, 0, 0, 9])] {
        let server = Server::start(chain(), &["tcp"], env);
        let sh = hot(&server);
        let mut c = from(&server, ip);
        let mut times = Vec::new();
        // Several times what cut the hammer off above.
        for _ in 0..150 {
            let (r, took) = timed(&mut c, "blockchain.scripthash.get_history", json!([sh]));
            r.unwrap_or_else(|e| panic!("{env:?}: refused {e:?}"));
            times.push(took);
        }
        let p99 = percentile(times, 0.99);
        assert!(p99 < Duration::from_millis(200), "{env:?}: slowed to p99 {p99:?}");
        let row = session_row(&server, &Ipv4Addr::from(ip).to_string());
        assert!(row[5].as_f64().unwrap() > 6_000.0, "the cost is still counted: {row}");
        assert!(row[1].as_str().unwrap().ends_with("10"), "full concurrency: {row}");
        let groups = server.ferrum.call("groups", json!({})).unwrap();
        assert!(!groups.to_string().contains("127.6."), "{env:?}: exempt sessions are not grouped: {groups}");
    }
}

/// limits.md A18: parse errors raise the cost to about half way, so each request would wait
/// about 30 s; with REQUEST_TIMEOUT=2 the answer is -102 after about 2 s, and the session stays.
#[test]
fn request_timeout_answers_server_busy_and_keeps_the_session() {
    let env =
        [("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "100000"), ("REQUEST_SLEEP", "60000"), ("REQUEST_TIMEOUT", "2")];
    let server = Server::start(chain(), &["tcp"], &env);
    let mut c = server.negotiated();
    for _ in 0..45 {
        c.send_line("{not json");
        let r = c.read_message().expect("a parse error");
        assert_eq!(r["error"]["code"], -32700);
    }
    let (r, took) = timed(&mut c, "server.ping", json!([]));
    assert_eq!(r, Err((SERVER_BUSY, "server busy - request timed out".to_string())));
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "answered after {took:?}");
    let row = session_row(&server, "127.0.0.1");
    assert!(row[5].as_f64().unwrap() > 49_000.0, "45 parse errors cost 1,100 each: {row}");
    assert!(!c.is_closed(Duration::from_millis(200)), "the session must stay open");
}

/// Requests of one session run concurrently, up to INITIAL_CONCURRENT: pings sent after a
/// transaction.get that waits on a slow node are answered first, matched by id; with
/// INITIAL_CONCURRENT=1 they wait for it.
#[test]
fn requests_within_a_session_run_concurrently_up_to_initial_concurrent() {
    for (concurrent, pings_first) in [("10", true), ("1", false)] {
        let server = Server::start(chain(), &["tcp"], &[("INITIAL_CONCURRENT", concurrent)]);
        let txid = server.chain.blocks()[5].txdata[1].compute_txid().to_string();
        let mut c = server.negotiated();
        server.daemon.set_response_delay(Duration::from_millis(1500));
        let mut lines =
            vec![json!({"jsonrpc": "2.0", "id": 100, "method": "blockchain.transaction.get", "params": [txid]})];
        lines.extend((0..5).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "server.ping", "params": []})));
        let start = Instant::now();
        c.send_line(&lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
        let mut order = Vec::new();
        for _ in 0..6 {
            let r = c.read_message().expect("an answer");
            assert!(r.get("error").is_none(), "{r}");
            order.push((r["id"].as_u64().unwrap(), start.elapsed()));
        }
        let ids: Vec<u64> = order.iter().map(|(id, _)| *id).collect();
        if pings_first {
            assert_eq!(ids, [0, 1, 2, 3, 4, 100], "INITIAL_CONCURRENT={concurrent}: {order:?}");
            assert!(order[4].1 < Duration::from_millis(700), "the pings waited for the node: {order:?}");
        } else {
            assert_eq!(ids[0], 100, "INITIAL_CONCURRENT=1 runs one request at a time: {order:?}");
            assert!(order[1].1 >= Duration::from_millis(1400), "{order:?}");
        }
        server.daemon.set_response_delay(Duration::ZERO);
    }
}
