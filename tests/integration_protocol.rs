//! The Electrum protocol against the scripted daemon: every method's answer checked against
//! the chain the test built (histories, balances, UTXOs, statuses and merkle proofs computed
//! independently here), and the mempool, subscriptions and notifications through new blocks
//! and a reorg.

use ferrum_testkit as common;

use std::collections::HashSet;
use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::ScriptBuf;
use serde_json::{json, Value};

use common::chain::{ChainBuilder, ScriptKind};
use common::client::{fold_branch as fold, scripthash, status_of, Client};
use common::process::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const WAIT: Duration = Duration::from_secs(60);

/// ferrum on `chain`, serving `protocols`, once it has caught up: (process, ports by protocol).
fn start_on(
    chain: &ChainBuilder,
    daemon: &ScriptedDaemon,
    dir: &tempfile::TempDir,
    protocols: &[&str],
    env: &[(&str, &str)],
) -> (FerrumProcess, std::collections::BTreeMap<String, u16>) {
    let url = daemon.url();
    let mut e = vec![("DAEMON_URL", url.as_str()), ("NET", "regtest")];
    e.extend_from_slice(env);
    let (mut f, ports) = FerrumProcess::start_serving(&dir.path().join("db"), protocols, &e);
    f.wait_for_tip(chain.height() as u64, Some(&chain.tip_hash().to_string()), WAIT);
    for port in ports.values() {
        f.wait_port(*port, WAIT);
    }
    (f, ports)
}

/// ferrum serving tcp only: (process, port).
fn start(
    chain: &ChainBuilder,
    daemon: &ScriptedDaemon,
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> (FerrumProcess, u16) {
    let (f, ports) = start_on(chain, daemon, dir, &["tcp"], env);
    (f, ports["tcp"])
}

/// The confirmed history the protocol must report, from the builder.
fn expected_history(chain: &ChainBuilder, script: &bitcoin::Script) -> Vec<(String, i64)> {
    chain.history(script).into_iter().map(|(t, h)| (t.to_string(), h as i64)).collect()
}

fn history_pairs(v: &Value) -> Vec<(String, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["tx_hash"].as_str().unwrap().to_string(), e["height"].as_i64().unwrap()))
        .collect()
}

fn rev_hex(h: [u8; 32]) -> String {
    let mut r = h;
    r.reverse();
    hex::encode(r)
}

/// Scripts worth checking: the hot ones and one of each kind.
fn interesting_scripts(chain: &ChainBuilder) -> Vec<ScriptBuf> {
    let mut out: Vec<ScriptBuf> = chain.hot_scripts().to_vec();
    for kind in ScriptKind::ALL {
        out.extend(chain.script_of_kind(kind));
    }
    out.extend(chain.utxos().into_iter().take(5).map(|u| u.script));
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_method_answers_as_the_protocol_says() {
    let mut chain = ChainBuilder::new(301);
    chain.add_blocks(150);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    daemon.set_fee_estimate(Some(0.00012));
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner.txt");
    std::fs::write(&banner, "ferrum $SERVER_VERSION on $DAEMON_SUBVERSION, donate to $DONATION_ADDRESS").unwrap();
    let banner_s = banner.display().to_string();
    let (f, port) = start(
        &chain,
        &daemon,
        &dir,
        &[
            ("BANNER_FILE", &banner_s),
            ("DONATION_ADDRESS", "bcrt1qdonate"),
            ("REPORT_SERVICES", "tcp://example.org:50001"),
        ],
    );
    let tip = chain.height();

    // --- protocol 1.4 ---
    let mut c = Client::tcp(port);
    assert_eq!(c.version(json!(["1.4", "1.4"])), "1.4");
    assert_eq!(c.call("server.version", json!(["again", "1.4"])).unwrap_err().0, 1, "only one server.version");
    let features = c.ok("server.features", json!([]));
    assert_eq!(features["genesis_hash"], chain.block_hash(0).to_string());
    assert_eq!(features["hash_function"], "sha256");
    assert_eq!((features["protocol_min"].as_str(), features["protocol_max"].as_str()), (Some("1.4"), Some("1.7")));
    assert_eq!(features["hosts"], json!({"example.org": {"tcp_port": 50001}}));
    assert!(features["pruning"].is_null());
    let b = c.ok("server.banner", json!([]));
    assert_eq!(b, format!("ferrum {} on /Satoshi:31.0.0/, donate to bcrt1qdonate", env!("CARGO_PKG_VERSION")));
    assert_eq!(c.ok("server.donation_address", json!([])), "bcrt1qdonate");
    assert_eq!(c.ok("server.ping", json!([])), Value::Null);
    assert_eq!(c.ok("server.peers.subscribe", json!([])), json!([]));
    assert_eq!(c.ok("server.add_peer", json!([{"hosts": {}}])), json!(false));
    assert_eq!(c.ok("blockchain.relayfee", json!([])), json!(0.00001));
    assert_eq!(c.ok("blockchain.estimatefee", json!([2])), json!(0.00012));
    daemon.set_fee_estimate(None);
    assert_eq!(c.ok("blockchain.estimatefee", json!([2])), json!(0.00012), "cached until the next block");
    assert_eq!(c.ok("blockchain.estimatefee", json!([6, "ECONOMICAL"])), json!(-1), "no estimate: -1, never an error");
    assert_eq!(c.call("blockchain.estimatefee", json!([6, "BOGUS"])).unwrap_err().0, 1);
    assert_eq!(c.call("mempool.get_info", json!([])).unwrap_err().0, -32601, "1.6 only");

    // Headers: raw, ranges, and checkpoint proofs checked against an independent merkle root.
    let sub = c.ok("blockchain.headers.subscribe", json!([]));
    assert_eq!(sub["height"], tip);
    assert_eq!(sub["hex"], hex::encode(serialize(&chain.blocks()[tip as usize].header)));
    for h in [0u32, 1, 77, tip] {
        assert_eq!(
            c.ok("blockchain.block.header", json!([h])),
            hex::encode(serialize(&chain.blocks()[h as usize].header))
        );
    }
    assert_eq!(c.call("blockchain.block.header", json!([tip + 1])).unwrap_err().0, 1);
    let hashes: Vec<[u8; 32]> = chain.blocks().iter().map(|b| b.block_hash().to_byte_array()).collect();
    for (height, cp) in [(0u32, 0u32), (5, 8), (77, 100), (100, 100), (3, tip), (tip, tip)] {
        if cp == 0 {
            continue;
        }
        let r = c.ok("blockchain.block.header", json!([height, cp]));
        let root = bitcoin::merkle_tree::calculate_root(
            hashes[..=cp as usize].iter().map(|h| bitcoin::hashes::sha256d::Hash::from_byte_array(*h)),
        )
        .unwrap()
        .to_byte_array();
        assert_eq!(r["root"], rev_hex(root), "root for cp_height {cp}");
        assert_eq!(r["header"], hex::encode(serialize(&chain.blocks()[height as usize].header)));
        assert_eq!(fold(hashes[height as usize], height as u64, &r["branch"]), root, "branch of {height} under {cp}");
    }
    assert_eq!(c.call("blockchain.block.header", json!([10, 5])).unwrap_err().0, 1, "height > cp_height");
    assert_eq!(c.call("blockchain.block.header", json!([10, tip + 1])).unwrap_err().0, 1, "cp_height > tip");
    let r = c.ok("blockchain.block.headers", json!([10, 5]));
    let want: String = (10..15).map(|h| hex::encode(serialize(&chain.blocks()[h].header))).collect();
    assert_eq!(r, json!({"count": 5, "hex": want, "max": 2016}));
    let r = c.ok("blockchain.block.headers", json!([140, 3000]));
    assert_eq!(r["count"], tip - 140 + 1, "only what exists");
    let r = c.ok("blockchain.block.headers", json!([90, 10, 120]));
    assert_eq!(
        fold(hashes[99], 99, &r["branch"]),
        hex::decode(r["root"].as_str().unwrap()).unwrap().iter().rev().copied().collect::<Vec<u8>>()[..]
    );
    assert_eq!(c.ok("blockchain.block.headers", json!([tip + 5, 10]))["count"], 0);

    // Script hashes: history, status, balance and UTXOs all agree with the builder.
    for script in interesting_scripts(&chain) {
        let sh = scripthash(script.as_bytes());
        let want = expected_history(&chain, &script);
        assert_eq!(history_pairs(&c.ok("blockchain.scripthash.get_history", json!([sh]))), want, "history of {script}");
        assert_eq!(c.ok("blockchain.scripthash.subscribe", json!([sh])), status_of(&want), "status of {script}");
        let bal = c.ok("blockchain.scripthash.get_balance", json!([sh]));
        assert_eq!(bal, json!({"confirmed": chain.balance(&script), "unconfirmed": 0}));
        let utxos: Vec<(String, u64, u64, u64)> = c
            .ok("blockchain.scripthash.listunspent", json!([sh]))
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["tx_hash"].as_str().unwrap().to_string(),
                    u["tx_pos"].as_u64().unwrap(),
                    u["height"].as_u64().unwrap(),
                    u["value"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut want_utxos: Vec<(String, u64, u64, u64)> = chain
            .utxos_of(&script)
            .iter()
            .map(|u| (u.outpoint.txid.to_string(), u.outpoint.vout as u64, u.height as u64, u.value))
            .collect();
        // Chain order: by height then position; the builder sorts by txid within a height.
        let mut got_sorted = utxos.clone();
        got_sorted.sort_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
        want_utxos.sort_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
        assert_eq!(got_sorted, want_utxos, "utxos of {script}");
        assert!(utxos.windows(2).all(|w| w[0].2 <= w[1].2), "listunspent is in chain order");
        assert_eq!(c.ok("blockchain.scripthash.get_mempool", json!([sh])), json!([]));
        assert_eq!(c.ok("blockchain.scripthash.unsubscribe", json!([sh])), json!(true));
        assert_eq!(c.ok("blockchain.scripthash.unsubscribe", json!([sh])), json!(false));
    }
    let unknown = scripthash(b"never used");
    assert_eq!(c.ok("blockchain.scripthash.subscribe", json!([unknown])), Value::Null);
    assert_eq!(c.ok("blockchain.scripthash.get_history", json!([unknown])), json!([]));

    // Transactions: raw, verbose, merkle proofs, id_from_pos.
    for height in [1u32, 60, tip] {
        let block = &chain.blocks()[height as usize];
        let root = block.header.merkle_root.to_byte_array();
        for pos in [0usize, block.txdata.len() / 2, block.txdata.len() - 1] {
            let tx = &block.txdata[pos];
            let txid = tx.compute_txid();
            assert_eq!(c.ok("blockchain.transaction.get", json!([txid.to_string()])), hex::encode(serialize(tx)));
            let verbose = c.ok("blockchain.transaction.get", json!([txid.to_string(), true]));
            assert_eq!(verbose["txid"], txid.to_string());
            let m = c.ok("blockchain.transaction.get_merkle", json!([txid.to_string(), height]));
            assert_eq!((m["block_height"].as_u64(), m["pos"].as_u64()), (Some(height as u64), Some(pos as u64)));
            assert!(m.get("block_hash").is_none(), "block_hash is a 1.6 field");
            assert_eq!(fold(txid.to_byte_array(), pos as u64, &m["merkle"]), root, "merkle proof of {txid}");
            assert_eq!(c.ok("blockchain.transaction.id_from_pos", json!([height, pos])), txid.to_string());
            let p = c.ok("blockchain.transaction.id_from_pos", json!([height, pos, true]));
            assert_eq!(p["tx_hash"], txid.to_string());
            assert_eq!(p["merkle"], m["merkle"]);
        }
        assert_eq!(c.call("blockchain.transaction.id_from_pos", json!([height, block.txdata.len()])).unwrap_err().0, 1);
    }
    let tx60 = chain.blocks()[60].txdata[0].compute_txid().to_string();
    assert_eq!(c.call("blockchain.transaction.get_merkle", json!([tx60, 61])).unwrap_err().0, 1, "wrong height");
    assert_eq!(c.call("blockchain.transaction.get", json!(["00".repeat(32)])).unwrap_err().0, 1);
    assert_eq!(c.ok("mempool.get_fee_histogram", json!([])), json!([]));

    // --- protocol 1.6 ---
    let mut c6 = Client::tcp(port);
    assert_eq!(c6.version(json!(["1.4", "1.6"])), "1.6");
    let r = c6.ok("blockchain.block.headers", json!([10, 2]));
    assert_eq!(
        r,
        json!({"count": 2, "max": 2016, "headers": [hex::encode(serialize(&chain.blocks()[10].header)), hex::encode(serialize(&chain.blocks()[11].header))]})
    );
    assert_eq!(c6.call("blockchain.relayfee", json!([])).unwrap_err().0, -32601, "removed at 1.6");
    assert_eq!(
        c6.ok("mempool.get_info", json!([])),
        json!({"mempoolminfee": 0.00001, "minrelaytxfee": 0.00001, "incrementalrelayfee": 0.00001})
    );
    let m = c6.ok("blockchain.transaction.get_merkle", json!([tx60]));
    assert_eq!(
        (m["block_height"].as_u64(), m["block_hash"].as_str()),
        (Some(60), Some(chain.block_hash(60).to_string().as_str()))
    );

    // Broadcast: accepted txs reach the daemon, rejections carry the daemon's message.
    let utxo = chain.utxos().into_iter().find(|u| u.value > 10_000).unwrap();
    let dest = ScriptBuf::from_bytes(vec![0x00, 0x14, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
    let tx = chain.make_tx(std::slice::from_ref(&utxo), &[(dest.clone(), utxo.value - 1_000)]);
    let raw = hex::encode(serialize(&tx));
    daemon.set_reject(Some((-26, "min relay fee not met")));
    let e = c6.call("blockchain.transaction.broadcast", json!([raw])).unwrap_err();
    assert!(e.1.contains("min relay fee not met"), "{e:?}");
    daemon.set_reject(None);
    assert_eq!(c6.ok("blockchain.transaction.broadcast", json!([raw])), tx.compute_txid().to_string());
    assert_eq!(daemon.mempool().len(), 1);
    assert_eq!(c6.call("blockchain.transaction.broadcast", json!(["zz"])).unwrap_err().0, 1);
    // The mempool picks it up: fee from the prevout found in the UTXO set.
    let sh = scripthash(dest.as_bytes());
    let got = wait_for(
        || c6.ok("blockchain.scripthash.get_mempool", json!([sh])),
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    );
    assert_eq!(got, json!([{"tx_hash": tx.compute_txid().to_string(), "height": 0, "fee": 1000}]));
    assert_eq!(c6.ok("blockchain.transaction.get", json!([tx.compute_txid().to_string()])), raw, "mempool tx by txid");
    let hist = c6.ok("mempool.get_fee_histogram", json!([]));
    assert_eq!(hist.as_array().unwrap().len(), 1);
    assert_eq!(hist[0][1], tx.vsize());
    // A package.
    let tx2 = chain.make_tx(
        &[common::chain::Utxo {
            outpoint: bitcoin::OutPoint::new(tx.compute_txid(), 0),
            script: dest.clone(),
            value: utxo.value - 1_000,
            height: 0,
        }],
        &[(dest.clone(), utxo.value - 3_000)],
    );
    let r = c6.ok("blockchain.transaction.broadcast_package", json!([[hex::encode(serialize(&tx2))]]));
    assert_eq!(r, json!({"success": true}));
    daemon.set_reject(Some((-26, "bad-txns")));
    let r = c6.ok("blockchain.transaction.broadcast_package", json!([[hex::encode(serialize(&tx2))]]));
    assert_eq!(r, json!({"success": false, "errors": [{"txid": tx2.compute_txid().to_string(), "error": "bad-txns"}]}));
    drop(f);
}

/// Polls `get` until `done` holds (up to a minute).
fn wait_for(mut get: impl FnMut() -> Value, done: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let v = get();
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "condition never held; last value {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn txids_of(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|e| e["tx_hash"].as_str().unwrap().to_string()).collect()
}

#[test]
fn mempool_subscriptions_blocks_and_reorgs_notify_exactly() {
    let mut chain = ChainBuilder::new(302);
    chain.add_blocks(60);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (f, port) = start(&chain, &daemon, &dir, &[]);

    // A owns a confirmed coin; T1 spends it to B with change to A; T2 spends T1's output to C
    // (an unconfirmed parent: height -1).
    let coin = chain.utxos().into_iter().find(|u| u.value > 1_000_000).unwrap();
    let a = coin.script.clone();
    let b = ScriptBuf::from_bytes(vec![
        0x00, 0x14, 0xbb, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
    ]);
    let cc = ScriptBuf::from_bytes(vec![
        0x51, 0x20, 0xcc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29, 30, 31,
    ]);
    let t1 =
        chain.make_tx(std::slice::from_ref(&coin), &[(b.clone(), 600_000), (a.clone(), coin.value - 600_000 - 500)]);
    let t1_out = common::chain::Utxo {
        outpoint: bitcoin::OutPoint::new(t1.compute_txid(), 0),
        script: b.clone(),
        value: 600_000,
        height: 0,
    };
    let t2 = chain.make_tx(std::slice::from_ref(&t1_out), &[(cc.clone(), 599_000)]);
    let (sa, sb, sc) = (scripthash(a.as_bytes()), scripthash(b.as_bytes()), scripthash(cc.as_bytes()));
    let (id1, id2) = (t1.compute_txid().to_string(), t2.compute_txid().to_string());

    let mut c = Client::tcp(port);
    c.version(json!("1.4"));
    let hist_a = expected_history(&chain, &a);
    assert_eq!(c.ok("blockchain.scripthash.subscribe", json!([sa])), status_of(&hist_a));
    assert_eq!(c.ok("blockchain.scripthash.subscribe", json!([sb])), Value::Null);
    assert_eq!(c.ok("blockchain.scripthash.subscribe", json!([sc])), Value::Null);
    assert_eq!(c.ok("blockchain.headers.subscribe", json!([]))["height"], chain.height());

    // Both enter the mempool: one notification per touched script hash, with the right status.
    daemon.set_mempool(vec![t1.clone(), t2.clone()]);
    let mut a_mem = hist_a.clone();
    a_mem.push((id1.clone(), 0));
    let want_b = vec![(id1.clone(), 0), (id2.clone(), -1)];
    let want_c = vec![(id2.clone(), -1)];
    for (sh, want) in [(&sa, &a_mem), (&sb, &want_b), (&sc, &want_c)] {
        let n = c
            .wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == *sh)
            .expect("mempool notification");
        assert_eq!(n["params"][1], status_of(want), "status of {sh}");
    }
    assert!(c.drain_notifications(Duration::from_millis(500)).is_empty(), "exactly one notification each");
    let mem_b = c.ok("blockchain.scripthash.get_mempool", json!([sb]));
    assert_eq!(mem_b, json!([{"tx_hash": id1, "height": 0, "fee": 500}, {"tx_hash": id2, "height": -1, "fee": 1000}]));
    assert_eq!(history_pairs(&c.ok("blockchain.scripthash.get_history", json!([sb]))), want_b);
    assert_eq!(
        c.ok("blockchain.scripthash.get_balance", json!([sa])),
        json!({"confirmed": chain.balance(&a), "unconfirmed": -(600_000i64 + 500)})
    );
    assert_eq!(c.ok("blockchain.scripthash.get_balance", json!([sb])), json!({"confirmed": 0, "unconfirmed": 0}));
    let unspent_a = c.ok("blockchain.scripthash.listunspent", json!([sa]));
    let outs: Vec<(String, u64)> = unspent_a
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["tx_hash"].as_str().unwrap().to_string(), u["tx_pos"].as_u64().unwrap()))
        .collect();
    assert!(!outs.contains(&(coin.outpoint.txid.to_string(), coin.outpoint.vout as u64)), "spent in the mempool");
    assert!(outs.contains(&(id1.clone(), 1)), "the mempool change output, at height 0");
    assert_eq!(c.ok("blockchain.scripthash.listunspent", json!([sb])), json!([]), "T1:0 is spent by T2");
    assert_eq!(
        c.ok("blockchain.scripthash.listunspent", json!([sc])),
        json!([{"tx_hash": id2, "tx_pos": 0, "height": 0, "value": 599_000}])
    );

    // A second client hammers get_history while the block arrives: never a tx twice.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (stop, sb) = (stop.clone(), sb.clone());
        std::thread::spawn(move || {
            let mut h = Client::tcp(port);
            h.version(json!("1.4"));
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ids = txids_of(&h.ok("blockchain.scripthash.get_history", json!([sb])));
                let set: HashSet<&String> = ids.iter().collect();
                assert_eq!(set.len(), ids.len(), "a tx appears twice: {ids:?}");
                n += 1;
            }
            n
        })
    };

    // A block confirms T1 only: T2's height goes from -1 to 0, so C (touched only by T2) is
    // notified too.
    let mut main = chain.clone();
    main.add_block_including(vec![t1.clone()], 3);
    let h = main.height() as i64;
    daemon.set_mempool(vec![t2.clone()]);
    daemon.set_chain(main.blocks().to_vec());
    let tipn = c
        .wait_notification("blockchain.headers.subscribe", WAIT, |p| p[0]["height"] == h)
        .expect("header notification");
    assert_eq!(tipn["params"][0]["hex"], hex::encode(serialize(&main.blocks()[h as usize].header)));
    let want_b = vec![(id1.clone(), h), (id2.clone(), 0)];
    let want_c = vec![(id2.clone(), 0)];
    let mut want_a = expected_history(&main, &a);
    assert_eq!(want_a.last().unwrap(), &(id1.clone(), h));
    for (sh, want) in [(&sa, &want_a), (&sb, &want_b), (&sc, &want_c)] {
        let n =
            c.wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == *sh && p[1] == status_of(want));
        assert!(
            n.is_some(),
            "no notification of {sh} reaching {want:?}; queued: {:?}\n{}",
            c.notifications,
            f.log_tail()
        );
    }
    assert_eq!(history_pairs(&c.ok("blockchain.scripthash.get_history", json!([sb]))), want_b);
    assert_eq!(
        c.ok("blockchain.scripthash.get_mempool", json!([sc])),
        json!([{"tx_hash": id2, "height": 0, "fee": 1000}])
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(hammer.join().expect("no duplicate seen") > 0);

    // Reorg: the block with T1 is replaced by two others; T1 goes back to the mempool.
    let mut fork = chain.fork(chain.height());
    fork.add_blocks(2);
    let fh = fork.height() as i64;
    daemon.set_mempool(vec![t1.clone(), t2.clone()]);
    daemon.set_chain(fork.blocks().to_vec());
    c.wait_notification("blockchain.headers.subscribe", WAIT, |p| {
        p[0]["height"] == fh && p[0]["hex"] == hex::encode(serialize(&fork.blocks()[fh as usize].header))
    })
    .expect("header notification after the reorg");
    want_a = expected_history(&fork, &a);
    want_a.push((id1.clone(), 0));
    let want_b = vec![(id1.clone(), 0), (id2.clone(), -1)];
    let want_c = vec![(id2.clone(), -1)];
    for (sh, want) in [(&sa, &want_a), (&sb, &want_b), (&sc, &want_c)] {
        let n =
            c.wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == *sh && p[1] == status_of(want));
        assert!(
            n.is_some(),
            "no notification of {sh} reaching {want:?} after the reorg; queued: {:?}",
            c.notifications
        );
        assert_eq!(history_pairs(&c.ok("blockchain.scripthash.get_history", json!([sh]))), *want);
    }

    // The mempool empties (e.g. evicted): statuses fall back to the confirmed part.
    daemon.set_mempool(vec![]);
    let n = c.wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == sb && p[1].is_null());
    assert!(n.is_some(), "B's status returns to null");
    drop(f);
}

#[test]
fn tls_and_websocket_serve_the_same_answers() {
    let mut chain = ChainBuilder::new(303);
    chain.add_blocks(20);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::client::self_signed_cert(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let (_f, ports) =
        start_on(&chain, &daemon, &dir, &["tcp", "ssl", "ws"], &[("SSL_CERTFILE", &cert), ("SSL_KEYFILE", &key)]);
    let mut tls = Client::tls(ports["ssl"]);
    assert_eq!(tls.version(json!(["1.4", "1.6"])), "1.6");
    assert_eq!(tls.ok("blockchain.headers.subscribe", json!([]))["height"], chain.height());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answers = rt.block_on(async {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}", ports["ws"])).await.unwrap();
        let mut out = Vec::new();
        for (id, method, params) in
            [(1, "server.version", json!(["ws", "1.4"])), (2, "blockchain.headers.subscribe", json!([]))]
        {
            ws.send(Message::Text(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()))
                .await
                .unwrap();
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
            let text = msg.into_text().unwrap();
            assert!(!text.ends_with('\n'), "WebSocket messages carry no newline");
            out.push(serde_json::from_str::<Value>(&text).unwrap());
        }
        out
    });
    assert_eq!(answers[0]["result"][1], "1.4");
    assert_eq!(answers[1]["result"]["height"], chain.height());
}

/// Every daemon form of `blockchain.transaction.get`, and each learned once: a daemon that
/// takes no block hash argument (the Bitcoin SV node) with and without a transaction index, and
/// fallbacks for calls a daemon lacks (fee estimates, packages) and for its answer to a repeated
/// broadcast.
#[test]
fn daemon_forms_are_learned_once_and_every_transaction_is_served() {
    let mut chain = ChainBuilder::new(77);
    chain.add_blocks(30);
    for txindex in [false, true] {
        let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
        daemon.set_tx_blockhash_arg(false);
        daemon.set_txindex(txindex);
        for m in ["estimatesmartfee", "estimatefee", "submitpackage"] {
            daemon.disable_method(m);
        }
        let dir = tempfile::tempdir().unwrap();
        let (f, port) = start(&chain, &daemon, &dir, &[]);
        let mut c = Client::tcp(port);
        c.version(json!("1.6"));
        let tip = chain.height() as i64;
        let mut asked = 0;
        for (height, block) in chain.blocks().iter().enumerate().skip(20) {
            for tx in &block.txdata {
                let txid = tx.compute_txid().to_string();
                let raw = c.ok("blockchain.transaction.get", json!([txid]));
                assert_eq!(raw, json!(hex::encode(serialize(tx))), "raw {txid} (txindex {txindex})");
                let v = c.ok("blockchain.transaction.get", json!([txid, true]));
                assert_eq!(v["txid"], json!(txid));
                assert_eq!(v["hex"], raw);
                assert_eq!(v["blockhash"], json!(block.block_hash().to_string()));
                assert_eq!(v["confirmations"], json!(tip - height as i64 + 1));
                asked += 2;
            }
        }
        assert!(asked > 20, "asked {asked}");
        // The block hash form was tried once. Without an index, the txid form was tried until
        // it failed once; with one, every confirmed transaction is asked for by txid.
        assert_eq!(daemon.calls_of("getrawtransaction/3"), 1, "txindex {txindex}");
        let by_txid = daemon.calls_of("getrawtransaction/2");
        if txindex {
            assert_eq!(by_txid, asked, "an indexed daemon is asked by txid");
        } else {
            assert_eq!(by_txid, 1, "without an index: learned at the first miss");
            assert!(daemon.calls_of("decoderawtransaction") > 0);
        }
        // Fee estimates on a daemon without them: -1, each missing call asked for once.
        for target in [1, 2, 6, 25] {
            assert_eq!(c.ok("blockchain.estimatefee", json!([target])), json!(-1));
        }
        assert_eq!((daemon.calls_of("estimatesmartfee"), daemon.calls_of("estimatefee")), (1, 1));
        // A package on a daemon without submitpackage: sent one by one, parents first.
        let spendable = chain.utxos();
        let parent = chain.make_tx(&spendable[..1], &[(spendable[0].script.clone(), spendable[0].value - 1000)]);
        let child_in = common::chain::Utxo {
            outpoint: bitcoin::OutPoint::new(parent.compute_txid(), 0),
            script: spendable[0].script.clone(),
            value: spendable[0].value - 1000,
            height: 0,
        };
        let child = chain.make_tx(&[child_in], &[(spendable[0].script.clone(), spendable[0].value - 2000)]);
        let hexes = json!([hex::encode(serialize(&parent)), hex::encode(serialize(&child))]);
        assert_eq!(c.ok("blockchain.transaction.broadcast_package", json!([hexes])), json!({"success": true}));
        let pool: Vec<_> = daemon.mempool().iter().map(|t| t.compute_txid()).collect();
        assert_eq!(pool, vec![parent.compute_txid(), child.compute_txid()]);
        assert_eq!(daemon.calls_of("sendrawtransaction"), 2);
        // A repeated broadcast the daemon refuses as already known (-27) answers the txid.
        daemon.set_reject(Some((-27, "Transaction already in the mempool")));
        let again = c.ok("blockchain.transaction.broadcast", json!([hex::encode(serialize(&parent))]));
        assert_eq!(again, json!(parent.compute_txid().to_string()));
        daemon.set_reject(None);
        drop(f);
    }
}
