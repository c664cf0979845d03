//! Protocol 1.7 against the scripted daemon: outpoint statuses and their notifications through
//! mempool spends, blocks, a reorg that unspends, a double spend that replaces the spender and
//! an eviction, every status computed here from the transactions the test made; the
//! scriptpubkey methods and their notifications; pings both ways; bad input.

use ferrum_testkit as common;

use std::time::Duration;

use bitcoin::{OutPoint, ScriptBuf, Transaction};
use serde_json::{json, Value};

use common::chain::{ChainBuilder, Utxo};
use common::client::{scripthash, status_of, Client};
use common::process::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const WAIT: Duration = Duration::from_secs(60);

fn script(tag: u8) -> ScriptBuf {
    let mut s = vec![0x00, 0x14, tag];
    s.extend(1..=19u8);
    ScriptBuf::from_bytes(s)
}

fn out(tx: &Transaction, vout: u32, script: &ScriptBuf, value: u64) -> Utxo {
    Utxo { outpoint: OutPoint::new(tx.compute_txid(), vout), script: script.clone(), value, height: 0 }
}

/// A subscribed outpoint: its params, and the spk_hint sent with it.
struct Watched {
    txid: String,
    vout: u32,
    hint: String,
}

impl Watched {
    fn of(u: &Utxo) -> Watched {
        Watched { txid: u.outpoint.txid.to_string(), vout: u.outpoint.vout, hint: hex::encode(u.script.as_bytes()) }
    }
}

fn funded(h: i64) -> Value {
    json!({"funder_height": h})
}

fn spent(h: i64, by: &Transaction, at: i64) -> Value {
    json!({"funder_height": h, "spender_txhash": by.compute_txid().to_string(), "spender_height": at})
}

/// Forgets notifications of the last step: a step may pass through other statuses on its way
/// (a reorg's unwind comes before the mempool refresh), which the protocol allows.
fn settle(c: &mut Client) {
    c.drain_notifications(Duration::from_millis(300));
    c.notifications.clear();
}

/// Waits for the notification telling `w`'s status is `want`, and checks get_status agrees.
fn expect(c: &mut Client, w: &Watched, want: &Value, f: &FerrumProcess, when: &str) {
    let n = c.wait_notification("blockchain.outpoint.subscribe", WAIT, |p| {
        p[0] == json!(w.txid) && p[1] == json!(w.vout) && p[2] == *want
    });
    assert!(
        n.is_some(),
        "{when}: no notification of {}:{} reaching {want}; queued {:?}\n{}",
        w.txid,
        w.vout,
        c.notifications,
        f.log_tail()
    );
    assert_eq!(&c.ok("blockchain.outpoint.get_status", json!([w.txid, w.vout, w.hint])), want, "{when}");
}

#[test]
fn outpoints_follow_mempool_blocks_reorgs_replacements_and_evictions() {
    let mut chain = ChainBuilder::new(1701);
    chain.add_blocks(60);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let url = daemon.url();
    let (f, ports) = FerrumProcess::start_serving(
        &dir.path().join("db"),
        &["tcp"],
        &[("DAEMON_URL", url.as_str()), ("NET", "regtest")],
    );
    let mut f = f;
    f.wait_for_tip(chain.height() as u64, Some(&chain.tip_hash().to_string()), WAIT);
    let port = ports["tcp"];
    // The client port opens a moment after the index catches up.
    f.wait_port(port, WAIT);

    // coin (confirmed at hc) → T1 → B (out 0) + change; T1:0 → T2 → C (-1: unconfirmed parent);
    // T1r double-spends coin (replaces T1, so T2 goes too); T3 carries an OP_RETURN output.
    let coin = chain.utxos().into_iter().find(|u| u.value > 2_000_000 && u.height > 1).unwrap();
    let hc = coin.height as i64;
    let (b, cc, d) = (script(0xbb), script(0xcc), script(0xdd));
    let t1 = chain.make_tx(std::slice::from_ref(&coin), &[(b.clone(), 600_000), (coin.script.clone(), 1_000_000)]);
    let t1_0 = out(&t1, 0, &b, 600_000);
    let t2 = chain.make_tx(std::slice::from_ref(&t1_0), &[(cc.clone(), 599_000)]);
    let t2_0 = out(&t2, 0, &cc, 599_000);
    let t1r = chain.make_tx(std::slice::from_ref(&coin), &[(d.clone(), coin.value - 5_000)]);
    let data = ScriptBuf::from_bytes(vec![0x6a, 0x04, 1, 2, 3, 4]);
    let other = chain.utxos().into_iter().find(|u| u.value > 2_000_000 && u.outpoint != coin.outpoint).unwrap();
    let t3 = chain.make_tx(std::slice::from_ref(&other), &[(d.clone(), 1_000_000), (data.clone(), 0)]);
    let t3_1 = out(&t3, 1, &data, 0);

    let mut c = Client::tcp(port);
    assert_eq!(c.ok("server.version", json!(["outpoints", "1.7"])), json!([c_version(), "1.7"]));
    c.ok("blockchain.headers.subscribe", json!([]));
    let (wc, w1, w2, w3) = (Watched::of(&coin), Watched::of(&t1_0), Watched::of(&t2_0), Watched::of(&t3_1));
    let sub = |c: &mut Client, w: &Watched| c.ok("blockchain.outpoint.subscribe", json!([w.txid, w.vout, w.hint]));
    assert_eq!(sub(&mut c, &wc), funded(hc));
    // Outpoints nobody has created yet are subscribed too.
    for w in [&w1, &w2, &w3] {
        assert_eq!(sub(&mut c, w), json!({}));
    }
    // The script of B, by 1.7's scriptpubkey methods: notified under its script hash.
    let sb = scripthash(b.as_bytes());
    assert_eq!(c.ok("blockchain.scriptpubkey.subscribe", json!([hex::encode(b.as_bytes())])), Value::Null);

    // T1 and T2 enter the mempool.
    settle(&mut c);
    daemon.set_mempool(vec![t1.clone(), t2.clone()]);
    expect(&mut c, &wc, &spent(hc, &t1, 0), &f, "mempool");
    expect(&mut c, &w1, &spent(0, &t2, -1), &f, "mempool");
    expect(&mut c, &w2, &funded(-1), &f, "mempool");
    let want_b = vec![(t1.compute_txid().to_string(), 0), (t2.compute_txid().to_string(), -1)];
    let n = c.wait_notification("blockchain.scriptpubkey.subscribe", WAIT, |p| p[0] == json!(sb));
    assert_eq!(n.expect("a scriptpubkey notification")["params"][1], status_of(&want_b));

    // A block mines T1 only: T2's parent is confirmed, so T2:0 goes from -1 to 0 although no
    // block touched its script (ElectrumX 2.0 misses this one).
    settle(&mut c);
    let mut main = chain.clone();
    main.add_block_including(vec![t1.clone(), t3.clone()], 2);
    let h = main.height() as i64;
    daemon.set_mempool(vec![t2.clone()]);
    daemon.set_chain(main.blocks().to_vec());
    expect(&mut c, &wc, &spent(hc, &t1, h), &f, "T1 mined");
    expect(&mut c, &w1, &spent(h, &t2, 0), &f, "T1 mined");
    expect(&mut c, &w2, &funded(0), &f, "T1 mined");
    // An OP_RETURN output exists once its transaction does (the index keeps no row for it).
    expect(&mut c, &w3, &funded(h), &f, "T3 mined");
    let n = c.wait_notification("server.ping", WAIT, |p| p[0].as_str().is_some_and(|d| d.len() == 128));
    assert!(n.is_some(), "a 1.7 session gets a padded ping with each block");

    // A reorg replaces that block: T1 and T2 are back in the mempool only.
    settle(&mut c);
    let mut fork = chain.fork(chain.height());
    fork.add_blocks(2);
    daemon.set_mempool(vec![t1.clone(), t2.clone()]);
    daemon.set_chain(fork.blocks().to_vec());
    expect(&mut c, &wc, &spent(hc, &t1, 0), &f, "reorg");
    expect(&mut c, &w1, &spent(0, &t2, -1), &f, "reorg");
    expect(&mut c, &w2, &funded(-1), &f, "reorg");
    expect(&mut c, &w3, &json!({}), &f, "reorg unmined T3");

    // A double spend replaces T1 (and so T2): the coin has a new spender, T1's outputs are gone.
    settle(&mut c);
    daemon.set_mempool(vec![t1r.clone()]);
    expect(&mut c, &wc, &spent(hc, &t1r, 0), &f, "replacement");
    expect(&mut c, &w1, &json!({}), &f, "replacement");
    expect(&mut c, &w2, &json!({}), &f, "replacement");

    // Evicted: the coin is unspent again.
    settle(&mut c);
    daemon.set_mempool(vec![]);
    expect(&mut c, &wc, &funded(hc), &f, "eviction");

    // Unsubscribing: true once, then false; no more notifications for it.
    assert_eq!(c.ok("blockchain.outpoint.unsubscribe", json!([wc.txid, wc.vout])), json!(true));
    assert_eq!(c.ok("blockchain.outpoint.unsubscribe", json!([wc.txid, wc.vout])), json!(false));
    c.drain_notifications(Duration::from_millis(300));
    daemon.set_mempool(vec![t1.clone()]);
    expect(&mut c, &w1, &funded(0), &f, "after unsubscribing the coin");
    let late = c.drain_notifications(Duration::from_millis(500));
    assert!(
        !late.iter().any(|n| n["method"] == "blockchain.outpoint.subscribe" && n["params"][0] == json!(wc.txid)),
        "an unsubscribed outpoint is not notified: {late:?}"
    );
    f.stop();
}

fn c_version() -> String {
    format!("ferrum {}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn bad_input_gets_the_right_errors_and_the_session_goes_on() {
    let mut chain = ChainBuilder::new(1702);
    chain.add_blocks(10);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let url = daemon.url();
    let (mut f, ports) = FerrumProcess::start_serving(
        &dir.path().join("db"),
        &["tcp"],
        &[("DAEMON_URL", url.as_str()), ("NET", "regtest")],
    );
    f.wait_for_tip(chain.height() as u64, None, WAIT);
    f.wait_port(ports["tcp"], WAIT);
    let mut c = Client::tcp(ports["tcp"]);
    c.version(json!("1.7"));
    let txid = chain.utxos()[0].outpoint.txid.to_string();
    let cases: &[(&str, Value, i64)] = &[
        ("blockchain.outpoint.subscribe", json!(["zz", 0, ""]), 1),
        ("blockchain.outpoint.subscribe", json!([txid, -1, ""]), -32602),
        ("blockchain.outpoint.subscribe", json!([txid, "0", ""]), -32602),
        ("blockchain.outpoint.subscribe", json!([txid, 0, "abc"]), 1),
        ("blockchain.outpoint.subscribe", json!([txid, 0]), -32602),
        ("blockchain.outpoint.get_status", json!({"tx_hash": txid, "txout_idx": 0, "spk_hint": "", "x": 1}), -32602),
        ("blockchain.outpoint.unsubscribe", json!([txid]), -32602),
        ("blockchain.scriptpubkey.get_history", json!(["0g"]), 1),
        ("blockchain.scriptpubkey.get_balance", json!([5]), -32602),
        ("blockchain.scripthash.get_balance", json!(["00".repeat(32)]), -32601),
        ("blockchain.transaction.testmempoolaccept", json!("00"), -32600),
        ("blockchain.transaction.testmempoolaccept", json!([[]]), -32602),
        ("blockchain.transaction.testmempoolaccept", json!([["zz"]]), 1),
        ("server.ping", json!([1_000_000_000, ""]), 1),
        ("server.ping", json!([2, "xyz"]), 1),
    ];
    for (method, params, code) in cases {
        let e = c.call(method, params.clone());
        assert!(e.as_ref().is_err_and(|(got, _)| got == code), "{method} {params}: {e:?}, wanted code {code}");
    }
    // Unknown and out-of-range outpoints are not errors: they have no status yet.
    assert_eq!(c.ok("blockchain.outpoint.get_status", json!(["11".repeat(32), 0, ""])), json!({}));
    assert_eq!(c.ok("blockchain.outpoint.get_status", json!([txid, 4_000_000, "51"])), json!({}));
    // A ping notification (no id) gets no answer; the session goes on.
    c.send_line(r#"{"jsonrpc":"2.0","method":"server.ping","params":["00ff"]}"#);
    assert_eq!(c.ok("server.ping", json!([4])), json!({"data": "0000"}));
    assert_eq!(c.ok("mempool.recent", json!([])), json!([]));
    f.stop();
}
