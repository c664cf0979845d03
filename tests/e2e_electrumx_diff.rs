//! Differential test against ElectrumX 2.0.0 (PyPI `e-x`), the reference implementation of
//! protocol 1.7: both servers on the same Bitcoin Core node (ElectrumX needs -txindex and
//! -txospenderindex; ferrum needs neither), asked the same `scriptpubkey.*`, `outpoint.*`,
//! `testmempoolaccept` and `mempool.recent` questions about a chain with every kind of output,
//! spends in blocks and in the mempool, and unconfirmed chains. The answers must be equal.

use ferrum_testkit as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::Transaction;
use serde_json::{json, Value};

use common::client::Client;
use common::electrumx_server::{ElectrumX, CORE_FLAGS};
use common::nodes::{op_return, pay, sign_tx, BitcoinCore, ChainView, Coin, TestKey};
use common::process::FerrumProcess;

const WAIT: Duration = Duration::from_secs(60);
const FEE: u64 = 2_000;

fn spend(coins: &[Coin], mut outputs: Vec<bitcoin::TxOut>, change: &TestKey) -> Transaction {
    let total: u64 = coins.iter().map(|c| c.txout.value.to_sat()).sum();
    let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
    outputs.push(pay(&change.p2wpkh(), total - paid - FEE));
    sign_tx(coins, outputs)
}

/// One answer, or the error code (messages differ between servers).
fn answer(r: Result<Value, (i64, String)>) -> Value {
    match r {
        Ok(v) => v,
        Err((code, _)) => json!({"error": code}),
    }
}

#[test]
fn ferrum_answers_protocol_1_7_as_electrumx_does() {
    let Some(core) = BitcoinCore::try_start_with(&CORE_FLAGS) else { return };
    let keys: Vec<TestKey> = (1..=5).map(TestKey::new).collect();
    let miner = keys[0].p2wpkh();
    core.generate_to(110, &miner.to_string());
    let mut coinbases = core.coins(&keys[0], &miner.script_pubkey()).into_iter();

    // Confirmed: payments to every kind of script, an OP_RETURN, a spend of a spend.
    let a = spend(
        &[coinbases.next().unwrap()],
        vec![
            pay(&keys[1].p2wpkh(), 100_000_000),
            pay(&keys[2].p2tr(), 50_000_000),
            pay(&keys[3].p2pkh(), 20_000_000),
            op_return(b"diff-a-1"),
        ],
        &keys[4],
    );
    let b = spend(&[Coin::of(&a, 0, &keys[1])], vec![pay(&keys[2].p2wpkh(), 60_000_000)], &keys[1]);
    core.send(&a);
    core.send(&b);
    core.generate_to(1, &miner.to_string());
    let c = spend(&[Coin::of(&b, 0, &keys[2])], vec![pay(&keys[3].p2tr(), 10_000_000)], &keys[2]);
    core.send(&c);
    core.generate_to(2, &miner.to_string());
    // Mempool: a spend of a confirmed output (height 0) and its child (height -1).
    let m1 = spend(&[Coin::of(&c, 0, &keys[3])], vec![pay(&keys[1].p2wpkh(), 5_000_000)], &keys[3]);
    let m2 = spend(&[Coin::of(&m1, 0, &keys[1])], vec![pay(&keys[4].p2tr(), 1_000_000)], &keys[1]);
    let m3 = spend(&[coinbases.next().unwrap()], vec![pay(&keys[2].p2pkh(), 7_000_000)], &keys[0]);
    for t in [&m1, &m2, &m3] {
        core.send(t);
    }

    let tmp = tempfile::tempdir().unwrap();
    let url = core.url();
    let (mut f, ports) = FerrumProcess::start_serving(
        &tmp.path().join("db"),
        &["tcp"],
        &[("DAEMON_URL", &url), ("COIN", "Bitcoin"), ("NET", "regtest")],
    );
    let Some(mut ex) = ElectrumX::try_start(&core) else { return };
    let view = ChainView::read(&core);
    f.wait_for_tip(view.tip_height, Some(&view.tip_hash), WAIT);
    ex.wait_for_height(view.tip_height, WAIT);
    // ferrum's client port opens a moment after its index catches up.
    f.wait_port(ports["tcp"], WAIT);
    let mut fc = Client::tcp(ports["tcp"]);
    assert_eq!(fc.version(json!("1.7")), "1.7");
    // Both mirrors hold the whole mempool before the questions.
    let start = Instant::now();
    while [&ex.ok("mempool.recent", json!([])), &fc.ok("mempool.recent", json!([]))]
        .iter()
        .any(|r| r.as_array().unwrap().len() < 3)
    {
        assert!(start.elapsed() < WAIT, "a mempool mirror never filled");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut questions: Vec<(&str, Value)> = Vec::new();
    let mempool_txs = [&m1, &m2, &m3];
    let mut scripts: BTreeSet<String> = view.outputs.values().map(|(s, _)| s.clone()).collect();
    scripts.extend(mempool_txs.iter().flat_map(|t| t.output.iter().map(|o| hex::encode(o.script_pubkey.as_bytes()))));
    scripts.insert("51".into()); // a script nobody paid
    for s in &scripts {
        for m in ["get_balance", "get_history", "get_mempool", "listunspent", "subscribe"] {
            questions.push((leak(format!("blockchain.scriptpubkey.{m}")), json!([s])));
        }
    }
    let mut outpoints: Vec<(String, u32, String)> =
        view.outputs.iter().map(|((t, n), (s, _))| (t.clone(), *n, s.clone())).collect();
    for t in mempool_txs {
        for (n, o) in t.output.iter().enumerate() {
            outpoints.push((t.compute_txid().to_string(), n as u32, hex::encode(o.script_pubkey.as_bytes())));
        }
        outpoints.push((t.compute_txid().to_string(), t.output.len() as u32, "51".into()));
    }
    outpoints.push(("ab".repeat(32), 0, "51".into()));
    outpoints.sort();
    for (t, n, s) in &outpoints {
        questions.push(("blockchain.outpoint.get_status", json!([t, n, s])));
    }
    // testmempoolaccept: a good one, a package, a double spend of m3's input, an invalid one.
    let good = spend(&[coinbases.next().unwrap()], vec![pay(&keys[3].p2wpkh(), 9_000_000)], &keys[0]);
    let parent = spend(&[coinbases.next().unwrap()], vec![pay(&keys[1].p2wpkh(), 8_000_000)], &keys[0]);
    let child = spend(&[Coin::of(&parent, 0, &keys[1])], vec![pay(&keys[2].p2wpkh(), 1_000_000)], &keys[1]);
    let double = spend(&[Coin::of(&c, 0, &keys[3])], vec![pay(&keys[4].p2wpkh(), 9_000_000)], &keys[3]);
    let mut broken = serialize_hex(&good);
    broken.truncate(broken.len() - 8);
    for raws in [
        vec![serialize_hex(&good)],
        vec![serialize_hex(&parent), serialize_hex(&child)],
        vec![serialize_hex(&double)],
        vec![broken],
    ] {
        questions.push(("blockchain.transaction.testmempoolaccept", json!([raws])));
    }

    let mut differ = Vec::new();
    for (method, params) in &questions {
        let (ours, theirs) = (answer(fc.call(method, params.clone())), answer(ex.call(method, params.clone())));
        if ours != theirs {
            differ.push(format!("{method} {params}:\n  ferrum   {ours}\n  ElectrumX {theirs}"));
        }
    }
    // mempool.recent: the same transactions with the same fees and sizes; the order within one
    // refresh of a mirror is each server's own.
    let as_set = |v: Value| v.as_array().unwrap().iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    let (ours, theirs) = (fc.ok("mempool.recent", json!([])), ex.ok("mempool.recent", json!([])));
    if as_set(ours.clone()) != as_set(theirs.clone()) {
        differ.push(format!("mempool.recent:\n  ferrum   {ours}\n  ElectrumX {theirs}"));
    }
    eprintln!(
        "asked {} questions ({} scripts, {} outpoints) of both servers; {} differ",
        questions.len() + 1,
        scripts.len(),
        outpoints.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{} answers differ:\n{}\n{}", differ.len(), differ.join("\n"), ex.log_tail());
    f.stop();
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
