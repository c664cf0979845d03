//! Protocol robustness: every bad input gets the error the protocol defines (or closes only the
//! offending connection), and the server keeps serving everybody else. The real `ferrum` binary
//! serves small deterministic chains from the scripted daemon; clients connect to 127.0.0.1 over
//! TCP, TLS and WebSocket. After the abuse, each test checks that a fresh, well-behaved client
//! still gets correct answers.
//!
//! Run with `cargo test --test protocol_robustness -- --test-threads=2`.

use ferrum_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

use common::chain::{ChainBuilder, ChainOptions};
use common::client::{scripthash, self_signed_cert, Client};
use common::served::{header_hex, small_chain, wait_connections, wait_for, Server};

const REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const EXCESSIVE_RESOURCE_USAGE: i64 = -101;
const BAD_REQUEST: i64 = 1;
const HISTORY_TOO_LARGE: i64 = 10001;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Sends one raw line and returns the next message from the server (these tests subscribe to
/// nothing, so it is the answer to that line, or to nothing sent before it).
fn exchange(c: &mut Client, line: &str) -> Value {
    c.send_line(line);
    c.read_message().unwrap_or_else(|| panic!("no answer to {:?}", truncated(line)))
}

fn truncated(s: &str) -> String {
    if s.len() > 120 {
        let cut = (0..=120).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…({} bytes)", &s[..cut], s.len())
    } else {
        s.to_string()
    }
}

/// Checks that `resp` is a JSON-RPC 2.0 error with `code` and `id`; returns its message.
fn assert_error(resp: &Value, code: i64, id: &Value, what: &str) -> String {
    assert_eq!(resp["jsonrpc"], "2.0", "{what}: {resp}");
    assert!(resp.get("result").is_none(), "{what}: an error must not carry a result: {resp}");
    assert_eq!(resp["error"]["code"].as_i64(), Some(code), "{what}: error code in {resp}");
    assert_eq!(&resp["id"], id, "{what}: id in {resp}");
    let msg = resp["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no error message in {resp}"));
    assert!(!msg.is_empty(), "{what}: empty error message");
    msg.to_string()
}

/// The error code of a call that must fail.
fn call_err(c: &mut Client, method: &str, params: Value) -> (i64, String) {
    c.call(method, params.clone()).expect_err(&format!("{method}({params}) should fail"))
}

fn assert_alive(c: &mut Client, after: &str) {
    assert_eq!(c.call("server.ping", json!([])), Ok(Value::Null), "server.ping after {after}");
}

/// A raw TCP connection for byte-level abuse the line client cannot express.
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Raw { w, r }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
        self.w.flush().unwrap();
    }

    /// The next line, parsed; `None` on close or timeout.
    fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("invalid JSON ({e}): {line:?}"))),
        }
    }

    /// Whether the server closes the connection within `within` (data before the close is
    /// skipped).
    fn is_closed(&mut self, within: Duration) -> bool {
        use std::io::Read;
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.r.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.r.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

async fn ws_connect(port: u16) -> Ws {
    let url = format!("ws://127.0.0.1:{port}");
    let (ws, _) = tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake");
    ws
}

/// The next text message, parsed (pings and pongs skipped); `None` when the server closes.
async fn ws_next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("no websocket message within 30 s")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON text message")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected websocket message {other:?}"),
        }
    }
}

async fn ws_exchange(ws: &mut Ws, msg: Message) -> Value {
    ws.send(msg).await.expect("websocket send");
    ws_next(ws).await.expect("websocket answer")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Invalid JSON, non-requests, unknown methods, bad parameters and bad hex each get their
/// JSON-RPC error on the same connection, which keeps answering.
#[test]
fn malformed_requests_get_errors_and_the_connection_keeps_working() {
    // The cost model off: 40 errors in a row (5 of them parse errors at 1,100 each) would
    // otherwise throttle this session to seconds a request (tests/limits.rs tests that).
    let env = [("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "0")];
    let mut server = Server::start(small_chain(71), &["tcp"], &env);
    let mut c = server.tcp();
    assert_eq!(c.version(json!(["1.4", "1.6"])), "1.6");

    let null = Value::Null;
    let zeros = "0".repeat(64);
    let req = |id: Value, method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    };
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(String, i64, Value)> = vec![
        // Not JSON at all.
        (r#"{"jsonrpc":"2.0","id":1,"method":"server.ping""#.to_string(), PARSE_ERROR, null.clone()),
        ("this is not json".to_string(), PARSE_ERROR, null.clone()),
        (r#"{"id": 1, "method": "server.ping",}"#.to_string(), PARSE_ERROR, null.clone()),
        ("1e99999".to_string(), PARSE_ERROR, null.clone()),
        // Nested past serde_json's depth limit where a value is read: a parse error.
        (format!(r#"{{"id":1,"method":"server.ping","params":{deep}}}"#), PARSE_ERROR, null.clone()),
        // JSON, but not a request.
        ("5".to_string(), INVALID_REQUEST, null.clone()),
        (r#""x""#.to_string(), INVALID_REQUEST, null.clone()),
        ("null".to_string(), INVALID_REQUEST, null.clone()),
        ("true".to_string(), INVALID_REQUEST, null.clone()),
        ("[]".to_string(), INVALID_REQUEST, null.clone()),
        (r#"{"id":3,"params":[]}"#.to_string(), INVALID_REQUEST, json!(3)),
        (r#"{"id":4,"method":7}"#.to_string(), INVALID_REQUEST, json!(4)),
        (r#"{"id":[1],"method":"server.ping"}"#.to_string(), INVALID_REQUEST, null.clone()),
        (r#"{"id":{"a":1},"method":"server.ping"}"#.to_string(), INVALID_REQUEST, null.clone()),
        // Unknown methods (blockchain.relayfee is gone in 1.6).
        (req(json!(5), "no.such.method", json!([])), METHOD_NOT_FOUND, json!(5)),
        (req(json!("s"), "", json!([])), METHOD_NOT_FOUND, json!("s")),
        (req(json!(6), "blockchain.relayfee", json!([])), METHOD_NOT_FOUND, json!(6)),
        // Wrong parameter count or types.
        (req(json!(10), "blockchain.block.header", json!(["x"])), INVALID_PARAMS, json!(10)),
        (req(json!(11), "blockchain.block.header", json!([1, 0, 5])), INVALID_PARAMS, json!(11)),
        (req(json!(12), "blockchain.block.header", json!([])), INVALID_PARAMS, json!(12)),
        (req(json!(13), "blockchain.block.header", json!([-1])), INVALID_PARAMS, json!(13)),
        (req(json!(14), "blockchain.block.header", json!([1.5])), INVALID_PARAMS, json!(14)),
        (req(json!(15), "blockchain.block.header", json!([u64::MAX])), INVALID_PARAMS, json!(15)),
        (req(json!(16), "blockchain.block.header", json!({"height": 1, "bogus": 2})), INVALID_PARAMS, json!(16)),
        (req(json!(17), "blockchain.block.headers", json!([0])), INVALID_PARAMS, json!(17)),
        (req(json!(18), "blockchain.scripthash.get_history", json!([5])), INVALID_PARAMS, json!(18)),
        (req(json!(19), "blockchain.scripthash.subscribe", json!([])), INVALID_PARAMS, json!(19)),
        (req(json!(20), "blockchain.transaction.get", json!([zeros, "yes"])), INVALID_PARAMS, json!(20)),
        (req(json!(21), "server.ping", json!(["a", "b", "c"])), INVALID_PARAMS, json!(21)),
        // Bad hex and bad values.
        (req(json!(30), "blockchain.scripthash.get_history", json!(["zz"])), BAD_REQUEST, json!(30)),
        (req(json!(31), "blockchain.scripthash.get_balance", json!([&zeros[1..]])), BAD_REQUEST, json!(31)),
        (req(json!(32), "blockchain.scripthash.listunspent", json!(["g".repeat(64)])), BAD_REQUEST, json!(32)),
        (req(json!(33), "blockchain.scripthash.subscribe", json!([format!("{zeros}00")])), BAD_REQUEST, json!(33)),
        (req(json!(34), "blockchain.scripthash.get_mempool", json!(["é".repeat(32)])), BAD_REQUEST, json!(34)),
        (req(json!(35), "blockchain.transaction.get", json!(["xyz"])), BAD_REQUEST, json!(35)),
        (
            req(json!(36), "blockchain.transaction.get_merkle", json!([format!("zz{}", &zeros[2..]), 1])),
            BAD_REQUEST,
            json!(36),
        ),
        (req(json!("abc"), "blockchain.block.header", json!([99_999])), BAD_REQUEST, json!("abc")),
        (req(json!(37), "blockchain.block.header", json!([5, 2])), BAD_REQUEST, json!(37)),
        (req(json!(38), "blockchain.transaction.id_from_pos", json!([1, 10_000])), BAD_REQUEST, json!(38)),
        (req(json!(39), "blockchain.estimatefee", json!([2, "FAST"])), BAD_REQUEST, json!(39)),
        (req(json!(40), "blockchain.transaction.broadcast", json!(["not hex"])), BAD_REQUEST, json!(40)),
    ];
    for (line, code, id) in &cases {
        let what = truncated(line);
        let resp = exchange(&mut c, line);
        assert_error(&resp, *code, id, &what);
        assert_alive(&mut c, &what);
    }

    // A batch of one deeply nested array: valid JSON, kept raw (no recursion), and not a request.
    let resp = exchange(&mut c, &deep);
    assert_error(&resp[0], INVALID_REQUEST, &null, "a deeply nested batch member");
    assert_alive(&mut c, "a deeply nested batch member");

    // Params that are neither an array nor an object: an invalid request or invalid params.
    let resp = exchange(&mut c, r#"{"jsonrpc":"2.0","id":50,"method":"server.ping","params":"x"}"#);
    let code = resp["error"]["code"].as_i64();
    assert!(code == Some(INVALID_REQUEST) || code == Some(INVALID_PARAMS), "string params: {resp}");
    assert_eq!(resp["id"], 50);

    // String ids, null ids and by-name parameters are answered in kind.
    let resp = exchange(&mut c, &req(json!("id-x"), "blockchain.block.header", json!({"height": 2})));
    assert_eq!(resp["result"], json!(header_hex(&server.chain, 2)), "{resp}");
    assert_eq!(resp["id"], "id-x");
    let resp = exchange(&mut c, &req(Value::Null, "server.ping", json!([])));
    assert!(resp["result"].is_null() && resp["id"].is_null() && resp.get("error").is_none(), "{resp}");

    // Pipelined requests in one write, blank lines and CRLF: each answered, matched by id
    // (read-only requests run concurrently, so answers may come in any order).
    let a = req(json!(101), "blockchain.block.header", json!([3]));
    let b = req(json!(102), "server.ping", json!([]));
    c.send_line(&format!("{a}\n\n  \n{b}\r"));
    let mut answers: Vec<Value> = (0..2).map(|_| c.read_message().expect("a pipelined answer")).collect();
    answers.sort_by_key(|r| r["id"].as_u64());
    let (ra, rb) = (&answers[0], &answers[1]);
    assert_eq!((ra["id"].clone(), ra["result"].clone()), (json!(101), json!(header_hex(&server.chain, 3))));
    assert_eq!((rb["id"].clone(), rb["result"].clone()), (json!(102), Value::Null));
    drop(c);

    // A request trickling in one byte at a time.
    let mut raw = Raw::connect(server.port("tcp"));
    for b in format!("{}\n", req(json!(1), "server.version", json!(["slow", "1.4"]))).bytes() {
        raw.write(&[b]);
    }
    let resp = raw.read().expect("answer to a trickled request");
    assert_eq!(resp["result"][1], "1.4", "{resp}");

    // Connections that send a request and vanish without reading, or connect and close at once.
    for i in 0..20 {
        let mut r = Raw::connect(server.port("tcp"));
        if i % 2 == 0 {
            r.write(format!("{}\n", req(json!(1), "server.version", json!(["gone", "1.4"]))).as_bytes());
            r.write(format!("{}\n", req(json!(2), "blockchain.block.headers", json!([0, 30]))).as_bytes());
        }
    }
    // The trickling connection is still fine, and the others are all gone.
    raw.write(format!("{}\n", req(json!(2), "server.ping", json!([]))).as_bytes());
    assert_eq!(raw.read().expect("ping answer")["id"], 2);
    wait_connections(&server, 1);
    server.assert_healthy();
}

/// Bytes that are not UTF-8 are not JSON: a parse error, like any other invalid JSON, and the
/// connection keeps working (as with ElectrumX).
#[test]
fn non_utf8_line_is_a_parse_error() {
    let mut server = Server::start(small_chain(72), &["tcp"], &[]);
    let mut keep = server.negotiated();
    let mut raw = Raw::connect(server.port("tcp"));
    raw.write(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.version\",\"params\":[\"raw\",\"1.4\"]}\n");
    assert_eq!(raw.read().expect("version answer")["result"][1], "1.4");
    raw.write(b"\xff\xfe\x80 not utf-8\n");
    let resp = raw.read();
    raw.write(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"server.ping\"}\n");
    let ping = raw.read();
    assert_alive(&mut keep, "another connection sent invalid UTF-8");
    server.assert_healthy();
    let resp = resp.expect("an answer to a line that is not UTF-8 (the server closed the connection instead)");
    assert_error(&resp, PARSE_ERROR, &Value::Null, "invalid UTF-8");
    assert_eq!(ping.expect("ping after invalid UTF-8")["id"], 2);
}

/// server.version must come first and only once; versions outside 1.4..1.6 and DROP_CLIENT
/// clients are refused and disconnected, without affecting other sessions.
#[test]
fn version_negotiation_errors() {
    let mut server = Server::start(small_chain(73), &["tcp"], &[("DROP_CLIENT", "^evil")]);
    let mut bystander = server.negotiated();

    // Requests before server.version.
    let mut c = server.tcp();
    let (code, _) = call_err(&mut c, "server.ping", json!([]));
    assert_eq!(code, BAD_REQUEST, "server.ping before server.version");
    let (code, _) = call_err(&mut c, "blockchain.headers.subscribe", json!([]));
    assert_eq!(code, BAD_REQUEST, "headers.subscribe before server.version");
    let resp = exchange(&mut c, r#"{"jsonrpc":"2.0","id":"early","method":"no.such.method","params":[]}"#);
    assert!(resp["error"]["code"].as_i64().is_some(), "unknown method before server.version: {resp}");
    // Then negotiation still works, once.
    let v = c.ok("server.version", json!(["ferrum-test", ["1.4", "1.6"]]));
    assert_eq!(v[1], "1.6");
    assert!(v[0].as_str().is_some_and(|s| !s.is_empty()), "server software version: {v}");
    let (code, _) = call_err(&mut c, "server.version", json!(["ferrum-test", "1.4"]));
    assert_eq!(code, BAD_REQUEST, "a second server.version");
    assert_alive(&mut c, "a second server.version");
    assert_eq!(c.ok("blockchain.headers.subscribe", json!([]))["height"], json!(server.chain.height()));

    // Versions: a bare name negotiates 1.4, a single version is taken as both bounds.
    let mut c = server.tcp();
    assert_eq!(c.ok("server.version", json!(["only-a-name"]))[1], "1.4");
    let mut c = server.tcp();
    assert_eq!(c.ok("server.version", json!([]))[1], "1.4");
    let mut c = server.tcp();
    assert_eq!(c.ok("server.version", json!(["x", ["1.2", "1.4.2"]]))[1], "1.4.2");
    let mut c = server.tcp();
    assert_eq!(c.ok("server.version", json!({"client_name": "by-name", "protocol_version": "1.4"}))[1], "1.4");

    // Unsupported or malformed versions: an error, then the server closes the connection.
    for v in [json!(["1.0", "1.2"]), json!(["1.8", "1.9"]), json!("0.9"), json!("abc"), json!(["1.4"]), json!(14)] {
        let mut c = server.tcp();
        let (code, msg) = call_err(&mut c, "server.version", json!(["ferrum-test", v]));
        assert_eq!(code, BAD_REQUEST, "server.version {v}: {msg}");
        assert!(c.is_closed(Duration::from_secs(10)), "the connection must close after version {v}");
    }

    // DROP_CLIENT=^evil: refused and disconnected; others are not.
    let mut evil = server.tcp();
    let (code, msg) = call_err(&mut evil, "server.version", json!(["evil-wallet 1.0", "1.4"]));
    assert_eq!(code, BAD_REQUEST, "DROP_CLIENT: {msg}");
    assert!(evil.is_closed(Duration::from_secs(10)), "DROP_CLIENT must disconnect the client");
    let mut good = server.tcp();
    assert_eq!(good.ok("server.version", json!(["good-evil-wallet", "1.4"]))[1], "1.4", "the regex is anchored");
    assert_alive(&mut good, "another client was dropped");
    assert_alive(&mut bystander, "other clients were refused");
    server.assert_healthy();
}

/// A line longer than MAX_RECV gets an error and the connection is closed; other connections,
/// including one opened before, and lines just under the limit are fine. Same over WebSocket.
#[test]
fn line_over_max_recv_closes_only_that_connection() {
    let mut server = Server::start(small_chain(74), &["tcp", "ws"], &[("MAX_RECV", "20000")]);
    let mut before = server.negotiated();
    let mut big = server.negotiated();

    // Just under the limit: a normal request with a long (ignored) parameter.
    let near =
        json!({"jsonrpc": "2.0", "id": 7, "method": "server.ping", "params": [0, "a".repeat(19_000)]}).to_string();
    assert!(near.len() < 20_000);
    let resp = exchange(&mut big, &near);
    assert_eq!((resp["id"].clone(), resp["result"].clone()), (json!(7), Value::Null), "{resp}");

    let huge =
        json!({"jsonrpc": "2.0", "id": 8, "method": "server.ping", "params": [0, "a".repeat(30_000)]}).to_string();
    big.send_line(&huge);
    let resp = big.read_message().expect("an error for a line over MAX_RECV");
    assert_error(&resp, EXCESSIVE_RESOURCE_USAGE, &Value::Null, "line over MAX_RECV");
    assert!(big.is_closed(Duration::from_secs(10)), "the connection must close after a line over MAX_RECV");
    assert_alive(&mut before, "another connection sent a line over MAX_RECV");

    // Over the limit without a newline at all (the server must not buffer it forever).
    let mut raw = Raw::connect(server.port("tcp"));
    raw.write("x".repeat(25_000).as_bytes());
    let resp = raw.read().expect("an error for an endless line");
    assert_error(&resp, EXCESSIVE_RESOURCE_USAGE, &Value::Null, "endless line");
    assert!(raw.is_closed(Duration::from_secs(10)));

    // WebSocket: a message over MAX_RECV.
    let ws_port = server.port("ws");
    runtime().block_on(async {
        let mut ws = ws_connect(ws_port).await;
        let v = ws_exchange(
            &mut ws,
            Message::Text(json!({"id": 1, "method": "server.version", "params": ["ws", "1.4"]}).to_string()),
        )
        .await;
        assert_eq!(v["result"][1], "1.4");
        ws.send(Message::Text(huge.clone())).await.expect("send");
        let resp = ws_next(&mut ws).await.expect("an error for a websocket message over MAX_RECV");
        assert_error(&resp, EXCESSIVE_RESOURCE_USAGE, &Value::Null, "websocket message over MAX_RECV");
        assert!(ws_next(&mut ws).await.is_none(), "the websocket must close after a message over MAX_RECV");
    });
    assert_alive(&mut before, "a websocket client sent a message over MAX_RECV");
    server.assert_healthy();
}

/// MAX_BATCH bounds batches; answers are matched by id; members without an id get no answer.
#[test]
fn batches_and_notifications() {
    let mut server = Server::start(small_chain(75), &["tcp"], &[("MAX_BATCH", "5")]);
    let mut c = server.negotiated();
    let ping = |id: Value| json!({"jsonrpc": "2.0", "id": id, "method": "server.ping", "params": []});

    // Over MAX_BATCH: one error (not an array), and the connection continues.
    let six: Vec<Value> = (0..6).map(|i| ping(json!(i))).collect();
    let resp = exchange(&mut c, &Value::Array(six).to_string());
    assert_error(&resp, INVALID_REQUEST, &Value::Null, "batch over MAX_BATCH");
    assert_alive(&mut c, "a batch over MAX_BATCH");

    // Exactly MAX_BATCH.
    let five: Vec<Value> = (0..5).map(|i| ping(json!(i))).collect();
    let resp = exchange(&mut c, &Value::Array(five).to_string());
    assert_eq!(resp.as_array().map(Vec::len), Some(5), "{resp}");

    // Three requests of different kinds, one failing: three answers, matched by id.
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "blockchain.block.header", "params": [4]},
        {"jsonrpc": "2.0", "id": 2, "method": "blockchain.block.header", "params": ["x"]},
        {"jsonrpc": "2.0", "id": 3, "method": "server.ping", "params": []},
    ]);
    let resp = exchange(&mut c, &batch.to_string());
    let answers = resp.as_array().unwrap_or_else(|| panic!("a batch answer is an array: {resp}"));
    assert_eq!(answers.len(), 3, "{resp}");
    let by_id: BTreeMap<String, &Value> = answers.iter().map(|a| (a["id"].to_string(), a)).collect();
    assert_eq!(by_id.len(), 3, "distinct ids: {resp}");
    assert_eq!(by_id["\"a\""]["result"], json!(header_hex(&server.chain, 4)));
    assert_error(by_id["2"], INVALID_PARAMS, &json!(2), "bad member of a batch");
    assert_eq!(by_id["3"]["result"], Value::Null);
    assert!(by_id["3"].get("error").is_none());

    // Members without an id are notifications: no answer, even when they fail.
    let batch = json!([
        ping(json!(10)),
        {"jsonrpc": "2.0", "method": "server.ping", "params": []},
        {"jsonrpc": "2.0", "method": "no.such.method", "params": []},
        ping(json!(11)),
    ]);
    let resp = exchange(&mut c, &batch.to_string());
    let ids: BTreeSet<String> = resp.as_array().expect("array").iter().map(|a| a["id"].to_string()).collect();
    assert_eq!(ids, BTreeSet::from(["10".to_string(), "11".to_string()]), "{resp}");

    // A batch of notifications only, and single notifications: nothing comes back, so the next
    // message is the answer to the ping sent after them.
    c.send_line(
        &json!([{"jsonrpc": "2.0", "method": "server.ping"}, {"method": "blockchain.block.header", "params": ["x"]}])
            .to_string(),
    );
    c.send_line(r#"{"jsonrpc":"2.0","method":"server.ping","params":[]}"#);
    c.send_line(r#"{"jsonrpc":"2.0","method":"blockchain.scripthash.get_history","params":["zz"]}"#);
    let resp = exchange(&mut c, &ping(json!(99)).to_string());
    assert_eq!(resp["id"], 99, "the first message after notifications must answer the ping: {resp}");

    // Members that are not requests get their own errors inside the array.
    let resp = exchange(&mut c, &json!([5, [], ping(json!(12))]).to_string());
    let answers = resp.as_array().unwrap_or_else(|| panic!("array: {resp}"));
    assert_eq!(answers.len(), 3, "{resp}");
    assert_error(&answers[0], INVALID_REQUEST, &Value::Null, "batch member 5");
    assert_error(&answers[1], INVALID_REQUEST, &Value::Null, "batch member []");
    assert_eq!(answers[2]["id"], 12);

    // An empty batch.
    let resp = exchange(&mut c, "[]");
    assert_error(&resp, INVALID_REQUEST, &Value::Null, "empty batch");
    assert_alive(&mut c, "batches");
    server.assert_healthy();
}

/// With MAX_SEND at its floor (350000 bytes), a script hash whose history cannot fit gets
/// "history too large" (10001) from get_history and subscribe; other answers still work, and a
/// batch whose answers add up to more than MAX_SEND is refused as a whole.
#[test]
fn responses_over_max_send() {
    let opts =
        ChainOptions { hot_scripts: 1, hot_probability: 0.9, min_txs: 40, max_txs: 40, ..ChainOptions::default() };
    let mut chain = ChainBuilder::with_options(76, opts);
    chain.add_blocks(130);
    let hot = chain.hot_scripts()[0].clone();
    let hot_history = chain.history(&hot).len();
    // 350000 / 95 bytes per entry at least: no answer can hold more than ~3700 entries.
    assert!(hot_history > 4000, "the hot script has only {hot_history} transactions");
    let small = chain.utxos().into_iter().map(|u| u.script).find(|s| *s != hot).expect("a non-hot script");
    let mut server = Server::start(chain, &["tcp"], &[("MAX_SEND", "350000")]);
    let chain = &server.chain;

    let mut c = server.negotiated();
    let hot_sh = scripthash(hot.as_bytes());
    let (code, msg) = call_err(&mut c, "blockchain.scripthash.get_history", json!([hot_sh]));
    assert_eq!(code, HISTORY_TOO_LARGE, "get_history: {msg}");
    let (code, msg) = call_err(&mut c, "blockchain.scripthash.subscribe", json!([hot_sh]));
    assert_eq!(code, HISTORY_TOO_LARGE, "subscribe: {msg}");
    // The failed subscription is not a subscription.
    assert_eq!(c.ok("blockchain.scripthash.unsubscribe", json!([hot_sh])), json!(false));

    // The balance needs no history and still works.
    let balance = c.ok("blockchain.scripthash.get_balance", json!([hot_sh]));
    assert_eq!(balance["confirmed"], json!(chain.balance(&hot)), "{balance}");

    // Small answers are unaffected.
    let history = c.ok("blockchain.scripthash.get_history", json!([scripthash(small.as_bytes())]));
    let got: Vec<(String, u64)> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|e| (e["tx_hash"].as_str().unwrap().to_string(), e["height"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = chain.history(&small).iter().map(|(t, h)| (t.to_string(), u64::from(*h))).collect();
    assert_eq!(got, want);
    let headers = c.ok("blockchain.block.headers", json!([0, 2016]));
    let n = chain.height() + 1;
    assert_eq!(headers["count"], json!(n));
    let want_hex: String = (0..n).map(|h| header_hex(chain, h)).collect();
    assert_eq!(headers["hex"], json!(want_hex));

    // A batch whose answers together exceed MAX_SEND (20 x 131 headers x 160 hex characters).
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "blockchain.block.headers", "params": [0, 2016]}))
        .collect();
    let resp = exchange(&mut c, &Value::Array(batch).to_string());
    assert_error(&resp, EXCESSIVE_RESOURCE_USAGE, &Value::Null, "batch answer over MAX_SEND");
    assert_alive(&mut c, "responses over MAX_SEND");
    let subscribed = c.ok("blockchain.scripthash.subscribe", json!([scripthash(small.as_bytes())]));
    assert!(subscribed.is_string(), "status of a small script: {subscribed}");
    server.assert_healthy();
}

/// SESSION_TIMEOUT closes idle connections (negotiated or silent), not busy ones.
#[test]
fn idle_sessions_time_out() {
    let mut server = Server::start(small_chain(77), &["tcp"], &[("SESSION_TIMEOUT", "2")]);
    let mut busy = server.negotiated();
    let mut silent = Raw::connect(server.port("tcp"));
    let mut idle = server.negotiated();
    let start = Instant::now();

    // Ping every ~0.5 s while watching the idle connection.
    let idle_closed = loop {
        busy.ok("server.ping", json!([]));
        if idle.is_closed(Duration::from_millis(500)) {
            break start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(8), "the idle session was not closed within 8 s");
    };
    assert!(idle_closed >= Duration::from_secs(1), "closed after {idle_closed:?}, before SESSION_TIMEOUT");
    assert!(idle_closed <= Duration::from_secs(5), "closed after {idle_closed:?}, well after SESSION_TIMEOUT");
    assert!(silent.is_closed(Duration::from_secs(5)), "a connection that never sent anything must time out too");

    // The busy one outlives another whole timeout period.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(busy.call("server.ping", json!([])), Ok(Value::Null), "the busy session must stay open");
        assert!(!busy.is_closed(Duration::from_millis(500)), "the busy session was closed");
    }
    assert_alive(&mut busy, "5 s of pings");
    server.assert_healthy();
}

/// MAX_SESSIONS: at the limit the listeners close, so new clients are refused at once (not
/// left waiting); at 95% of it (MAX_SESSIONS * 19 // 20) they open again.
#[test]
fn max_sessions_closes_and_reopens_the_listeners() {
    // 45 * 19 // 20 = 42: closed at 45 and 43 sessions, open again at 42.
    let mut server = Server::start(small_chain(78), &["tcp"], &[("MAX_SESSIONS", "45")]);
    settle_probes(&server);
    let mut first: Vec<Client> = (0..45).map(|_| server.negotiated()).collect();
    wait_connections(&server, 45);

    // Another is refused (the listener closes a moment after the last is accepted).
    let port = server.port("tcp");
    let refused = wait_for(Duration::from_secs(5), || Client::try_tcp(port).is_err());
    assert!(refused, "a connection over MAX_SESSIONS=45 was accepted");
    // Those already in are served meanwhile.
    assert_alive(&mut first[44], "the limit was reached");

    first.truncate(43);
    wait_connections(&server, 43);
    std::thread::sleep(Duration::from_millis(100));
    assert!(Client::try_tcp(port).is_err(), "listening again at 43 of MAX_SESSIONS=45 (above 95%)");

    first.truncate(42);
    let accepted = wait_for(Duration::from_secs(5), || Client::try_tcp(port).is_ok());
    assert!(accepted, "not listening again at 95% of MAX_SESSIONS");
    let mut late = server.negotiated();
    assert_alive(&mut late, "being accepted late");
    assert_alive(&mut first[0], "others came and went");
    drop(first);
    server.assert_healthy();
}

/// Waits until the harness's readiness probes have been accepted and have gone: a full session
/// through each listener comes after its probe (accept is first come, first served), and the
/// count of connections falls back to 0 once all are closed.
fn settle_probes(server: &Server) {
    drop(server.negotiated());
    // Before the websocket session: with MAX_SESSIONS=3 the closed TCP session, the websocket
    // probe and this one could otherwise all be counted at once, and the listener closing at
    // the limit resets the connection still in its backlog (seen once in a full run).
    wait_connections(server, 0);
    if server.ports.contains_key("ws") {
        let ws_port = server.port("ws");
        runtime().block_on(async {
            let mut ws = ws_connect(ws_port).await;
            let version = json!({"id": 1, "method": "server.version", "params": ["probe", "1.4"]});
            assert_eq!(ws_exchange(&mut ws, Message::Text(version.to_string())).await["result"][1], "1.4");
            ws.close(None).await.expect("close");
        });
    }
    wait_connections(server, 0);
}

/// MAX_SESSIONS bounds the connections of all listeners together: with the limit reached
/// through one service, another service's listener must not take one more.
#[test]
fn max_sessions_counts_every_listener() {
    let mut server = Server::start(small_chain(82), &["tcp", "ws"], &[("MAX_SESSIONS", "3")]);
    let ws_port = server.port("ws");
    settle_probes(&server);
    let first: Vec<Client> = (0..3).map(|_| server.negotiated()).collect();
    wait_connections(&server, 3);
    // Not served: refused (the listeners close at the limit).
    let rt = runtime();
    let extra = rt.block_on(async {
        let url = format!("ws://127.0.0.1:{ws_port}");
        let handshake = tokio::time::timeout(Duration::from_secs(1), tokio_tungstenite::connect_async(url.as_str()));
        handshake.await.ok().and_then(Result::ok)
    });
    if extra.is_some() {
        let connections = server.ferrum.getinfo().expect("getinfo")["sessions"]["connections"].clone();
        panic!("a websocket client was served with MAX_SESSIONS=3 tcp sessions open: {connections} connections");
    }
    drop(first);
    server.assert_healthy();
}

/// TLS: a TLS client negotiates and gets the features; plain text on the TLS port is dropped
/// without disturbing TLS or TCP clients.
#[test]
fn tls_service() {
    let certs = TempDir::new().expect("tempdir");
    let (cert, key) = self_signed_cert(certs.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let mut server = Server::start(small_chain(79), &["tcp", "ssl"], &[("SSL_CERTFILE", &cert), ("SSL_KEYFILE", &key)]);
    let ssl = server.port("ssl");

    let mut tls = Client::tls(ssl);
    assert_eq!(tls.version(json!(["1.4", "1.6"])), "1.6");
    let features = tls.ok("server.features", json!([]));
    assert_eq!(features["genesis_hash"], REGTEST_GENESIS, "{features}");
    assert_eq!(features["hash_function"], "sha256", "{features}");
    assert_eq!(features["protocol_min"], "1.4", "{features}");
    assert_eq!(features["protocol_max"], "1.7", "{features}");
    let tip = tls.ok("blockchain.headers.subscribe", json!([]));
    assert_eq!(tip["height"], json!(server.chain.height()));
    let mut tcp = server.negotiated();

    // Plain text, an HTTP request and random bytes on the TLS port: closed.
    let junk: [&[u8]; 3] = [
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.version\",\"params\":[\"plain\",\"1.4\"]}\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x00, 0x01, 0x02, 0x03, 0xde, 0xad, 0xbe, 0xef, b'\n'],
    ];
    for bytes in junk {
        let mut raw = Raw::connect(ssl);
        raw.write(bytes);
        assert!(raw.is_closed(Duration::from_secs(10)), "the TLS port must drop {bytes:?}");
    }
    wait_connections(&server, 2);
    // Invalid JSON inside TLS is an ordinary parse error.
    let resp = exchange(&mut tls, "{not json");
    assert_error(&resp, PARSE_ERROR, &Value::Null, "invalid JSON over TLS");
    assert_alive(&mut tls, "plain-text clients on the TLS port");
    assert_alive(&mut tcp, "plain-text clients on the TLS port");
    let mut again = Client::tls(ssl);
    assert_eq!(again.version(json!("1.4")), "1.4");
    assert_eq!(again.ok("server.features", json!([]))["genesis_hash"], REGTEST_GENESIS);
    server.assert_healthy();
}

/// WebSocket: JSON-RPC in text (and binary) messages; non-WebSocket clients on the port are
/// dropped.
#[test]
fn websocket_service() {
    let mut server = Server::start(small_chain(80), &["tcp", "ws"], &[]);
    let ws_port = server.port("ws");
    let chain = server.chain.clone();
    runtime().block_on(async {
        let mut ws = ws_connect(ws_port).await;
        let version = r#"{"jsonrpc":"2.0","id":1,"method":"server.version","params":["ws-test","1.4"]}"#;
        let v = ws_exchange(&mut ws, Message::Text(version.to_string())).await;
        assert_eq!(v["id"], 1, "{v}");
        assert_eq!(v["result"][1], "1.4", "{v}");
        let features = r#"{"jsonrpc":"2.0","id":2,"method":"server.features","params":[]}"#;
        let f = ws_exchange(&mut ws, Message::Text(features.to_string())).await;
        assert_eq!(f["id"], 2, "{f}");
        assert_eq!(f["result"]["genesis_hash"], REGTEST_GENESIS, "{f}");

        let e = ws_exchange(&mut ws, Message::Text("{oops".to_string())).await;
        assert_error(&e, PARSE_ERROR, &Value::Null, "invalid JSON over websocket");
        let e = ws_exchange(&mut ws, Message::Text(r#"{"id":3,"method":"nope","params":[]}"#.to_string())).await;
        assert_error(&e, METHOD_NOT_FOUND, &json!(3), "unknown method over websocket");
        let subscribe = br#"{"jsonrpc":"2.0","id":4,"method":"blockchain.headers.subscribe","params":[]}"#;
        let h = ws_exchange(&mut ws, Message::Binary(subscribe.to_vec())).await;
        assert_eq!(h["result"]["height"], json!(chain.height()), "{h}");
        let batch = json!([
            {"id": 5, "method": "server.ping"},
            {"id": 6, "method": "blockchain.block.header", "params": [1]},
        ]);
        let b = ws_exchange(&mut ws, Message::Text(batch.to_string())).await;
        let b = b.as_array().unwrap_or_else(|| panic!("array: {b}"));
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().find(|a| a["id"] == 6).expect("id 6")["result"], json!(header_hex(&chain, 1)));
        ws.close(None).await.expect("close");
    });

    // Not WebSocket: plain JSON and a non-upgrade HTTP request.
    for bytes in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.version\",\"params\":[\"plain\",\"1.4\"]}\n"[..],
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
    ] {
        let mut raw = Raw::connect(ws_port);
        raw.write(bytes);
        assert!(
            raw.is_closed(Duration::from_secs(10)),
            "the websocket port must drop {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    server.assert_healthy();
}

/// Connections that start the WebSocket handshake and never finish it must not hold their
/// session slots forever: with MAX_SESSIONS of them open, new clients would be locked out.
#[test]
fn unfinished_websocket_handshakes_do_not_hold_session_slots() {
    let env = [("SESSION_TIMEOUT", "2"), ("MAX_SESSIONS", "3")];
    let mut server = Server::start(small_chain(81), &["tcp", "ws"], &env);
    settle_probes(&server);
    let mut half: Vec<Raw> = (0..3)
        .map(|_| {
            let mut r = Raw::connect(server.port("ws"));
            r.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n");
            r
        })
        .collect();
    wait_connections(&server, 3);

    // The limit is reached: refused now, served once the handshakes have timed out.
    let port = server.port("tcp");
    let started = Instant::now();
    let mut served = None;
    while served.is_none() && started.elapsed() < Duration::from_secs(15) {
        if let Ok(mut c) = Client::try_tcp(port) {
            c.set_timeout(Duration::from_secs(5));
            c.send_line(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "server.version", "params": ["y", "1.4"]}).to_string(),
            );
            if c.read_message().is_some_and(|r| r["result"][1] == "1.4") {
                served = Some(started.elapsed());
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let served = served.expect(
        "a new client was not served within 15 s: 3 unfinished websocket handshakes hold the MAX_SESSIONS=3 slots \
         (SESSION_TIMEOUT=2 does not apply to them)",
    );
    assert!(served >= Duration::from_millis(500), "served after {served:?}, while the handshakes held every slot");
    for r in &mut half {
        assert!(r.is_closed(Duration::from_secs(1)), "a half-sent websocket handshake is still open");
    }
    server.assert_healthy();
}
