//! Hostile input: one line must not make ferrum allocate more than MAX_SEND allows, and ids come
//! back exactly as sent. The real `ferrum` binary serves a chain from the scripted daemon.
//!
//! Run with `cargo test --test hostile`.

use ferrum_testkit as common;

use std::time::Duration;

use serde_json::{json, Value};

use common::bench::proc_stats;
use common::chain::{ChainBuilder, ChainOptions};
use common::client::scripthash;
use common::served::Server;

const EXCESSIVE_RESOURCE_USAGE: i64 = -101;

/// A chain whose one hot script has a history of a few thousand transactions.
fn chain_with_a_long_history() -> ChainBuilder {
    let opts = ChainOptions {
        min_txs: 40,
        max_txs: 40,
        hot_scripts: 1,
        hot_probability: 0.6,
        same_block_spend_probability: 0.0,
        ..ChainOptions::default()
    };
    let mut chain = ChainBuilder::with_options(1801, opts);
    chain.add_blocks(120);
    chain
}

/// The reproducer from the issue: after `server.version`, a batch of 450 × get_history of a
/// script hash whose answer is just under MAX_SEND. The batch stops building answers as soon
/// as their total passes MAX_SEND, so the server's peak memory barely moves; before, it built
/// all 450 (here ~150 MB) and only then compared.
#[test]
fn a_batch_of_long_histories_stays_within_max_send() {
    let chain = chain_with_a_long_history();
    let hot = scripthash(chain.hot_scripts()[0].as_bytes());
    let mut server = Server::start(chain, &["tcp"], &[("MAX_SEND", "1000000"), ("MAX_BATCH", "500")]);
    let mut c = server.negotiated();
    let one = c.ok("blockchain.scripthash.get_history", json!([hot]));
    let entries = one.as_array().expect("a history").len();
    let answer_bytes = one.to_string().len();
    assert!(answer_bytes > 250_000 && answer_bytes < 1_000_000, "{entries} entries, {answer_bytes} bytes");
    let pid = server.ferrum.child.as_ref().expect("running").id();
    let before = proc_stats(pid);

    let batch: Vec<Value> = (0..450)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "blockchain.scripthash.get_history", "params": [hot]}))
        .collect();
    let line = Value::Array(batch).to_string();
    for round in 0..5 {
        c.send_line(&line);
        let resp = c.read_message().expect("an answer to the batch");
        assert_eq!(resp["error"]["code"], json!(EXCESSIVE_RESOURCE_USAGE), "round {round}: {resp:.200}");
        assert!(resp["error"]["message"].as_str().unwrap_or("").contains("MAX_SEND"), "{resp:.200}");
    }
    let after = proc_stats(pid);
    eprintln!(
        "history of {entries} entries ({answer_bytes} bytes); RSS {:.1} → {:.1} MiB, peak {:.1} → {:.1} MiB",
        before.rss_mb, after.rss_mb, before.peak_rss_mb, after.peak_rss_mb
    );
    // 450 answers would be ~150 MB; what may be built is MAX_SEND and the answer that passed it.
    assert!(after.peak_rss_mb - before.peak_rss_mb < 16.0, "peak grew: {before:?} → {after:?}");
    assert!(after.rss_mb - before.rss_mb < 16.0, "RSS grew: {before:?} → {after:?}");
    // The session goes on: an answer of its own size still comes back.
    assert_eq!(c.ok("blockchain.scripthash.get_history", json!([hot])).as_array().map(Vec::len), Some(entries));
    server.assert_healthy();
}

/// JSON-RPC asks for the id back unchanged: numbers beyond 64 bits, with fractions or exponents,
/// strings with escapes, in single requests, in batches, and in errors.
#[test]
fn ids_come_back_byte_for_byte() {
    let mut chain = ChainBuilder::new(1802);
    chain.add_blocks(3);
    let mut server = Server::start(chain, &["tcp"], &[]);
    let mut c = server.negotiated();
    c.set_timeout(Duration::from_secs(10));
    let ids = [
        "18446744073709551617",
        "1000000000000000000000000000000",
        "-9223372036854775809",
        "1.50",
        "1e2",
        "-0",
        "0.1000000000000000055511151231257827",
        r#""\u00e9\n""#,
        r#""x""#,
        "null",
        "7",
    ];
    for id in ids {
        c.send_line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping","params":[]}}"#));
        let line = c.read_raw_line().expect("an answer");
        assert!(line.contains(&format!(r#""id":{id},"#)), "id {id} came back as: {line}");
        c.send_line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"no.such.method","params":[]}}"#));
        let line = c.read_raw_line().expect("an error");
        assert!(line.contains(&format!(r#""id":{id},"#)) && line.contains("error"), "id {id} in an error: {line}");
    }
    let batch: Vec<String> =
        ids.iter().map(|id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping","params":[]}}"#)).collect();
    c.send_line(&format!("[{}]", batch.join(",")));
    let line = c.read_raw_line().expect("a batch answer");
    for id in ids {
        assert!(line.contains(&format!(r#""id":{id},"#)), "id {id} in the batch answer: {line}");
    }
    server.assert_healthy();
}

/// A session's subscriptions are bounded by MAX_SUBS_PER_SESSION: one more is refused with -101 and
/// the session goes on; an unsubscribe frees a place.
#[test]
fn subscriptions_per_session_are_bounded() {
    let mut chain = ChainBuilder::new(1803);
    chain.add_blocks(10);
    let scripts: Vec<String> = chain.hot_scripts().iter().map(|s| scripthash(s.as_bytes())).collect();
    assert!(scripts.len() >= 4);
    let mut server = Server::start(chain, &["tcp"], &[("MAX_SUBS_PER_SESSION", "3")]);
    let mut c = server.negotiated();
    for sh in &scripts[..3] {
        c.ok("blockchain.scripthash.subscribe", json!([sh]));
    }
    c.ok("blockchain.scripthash.subscribe", json!([scripts[0]]));
    let err = c.call("blockchain.scripthash.subscribe", json!([scripts[3]])).expect_err("a fourth subscription");
    assert_eq!(err.0, EXCESSIVE_RESOURCE_USAGE, "{err:?}");
    assert!(err.1.contains("MAX_SUBS_PER_SESSION=3"), "{err:?}");
    c.ok("blockchain.scripthash.unsubscribe", json!([scripts[0]]));
    c.ok("blockchain.scripthash.subscribe", json!([scripts[3]]));
    server.assert_healthy();
}

/// A history too long for one answer is read in pages by height (ferrum's extension, as
/// Fulcrum's): the pages together are the whole history, each page is bounded by MAX_SEND on its
/// own, the mempool comes only with a page that runs to the tip, and bad ranges are errors.
#[test]
fn a_history_too_long_for_one_answer_is_read_in_pages() {
    let chain = chain_with_a_long_history();
    let script = chain.hot_scripts()[0].clone();
    let want: Vec<(String, u32)> = chain.history(&script).into_iter().map(|(t, h)| (t.to_string(), h)).collect();
    let hot = scripthash(script.as_bytes());
    let tip = chain.height();
    // MAX_SEND's floor: 3,684 entries per answer, fewer than this history has.
    let mut server = Server::start(chain, &["tcp"], &[("MAX_SEND", "350000")]);
    let mut c = server.negotiated();
    assert!(want.len() > 350_000 / 95, "{} entries", want.len());
    let err = c.call("blockchain.scripthash.get_history", json!([hot])).expect_err("too long for one answer");
    assert_eq!(err.0, 10001, "{err:?}");
    assert_eq!(c.ok("server.features", json!([]))["history_height_range"], json!(true));

    let mut got: Vec<(String, u32)> = Vec::new();
    let mut from = 0u32;
    for to in [30u32, 61, 90] {
        let page = c.ok("blockchain.scripthash.get_history", json!([hot, from, to]));
        let page: Vec<(String, u32)> = page
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| (e["tx_hash"].as_str().unwrap().to_string(), e["height"].as_u64().unwrap() as u32))
            .collect();
        assert!(page.iter().all(|(_, h)| (from..to).contains(h)), "page {from}..{to} strays");
        got.extend(page);
        from = to;
    }
    let last =
        c.ok("blockchain.scripthash.get_history", json!({"scripthash": hot, "from_height": from, "to_height": -1}));
    got.extend(
        last.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["tx_hash"].as_str().unwrap().to_string(), e["height"].as_u64().unwrap() as u32)),
    );
    assert_eq!(got, want, "the pages together are the history");
    assert_eq!(c.ok("blockchain.scripthash.get_history", json!([hot, tip + 1])), json!([]));
    assert_eq!(c.ok("blockchain.scripthash.get_history", json!([hot, 5, 5])), json!([]));
    for bad in [json!([hot, 10, 5]), json!([hot, -2]), json!([hot, 0, -2]), json!([hot, "x"])] {
        let err = c.call("blockchain.scripthash.get_history", bad.clone()).expect_err("a bad range");
        assert_eq!(err.0, -32602, "{bad}: {err:?}");
    }
    server.assert_healthy();
}
