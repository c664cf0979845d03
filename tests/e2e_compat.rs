//! Every Electrum method of every protocol version ferrum serves, against each real node the
//! test suite installs (Bitcoin Core and the Bitcoin SV node), with and without `-txindex`.
//! Each answer is compared with what the node itself says (its blocks, its mempool, its own
//! `getrawtransaction`, fee and relay settings), computed in the test independently of ferrum,
//! so a method that works on one daemon and not on another cannot pass.

use ferrum_testkit as common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{consensus, Address, Transaction};
use common::client::{fold_branch, scripthash, status_of, Client};
use common::nodes::{pay, sats, sign_tx, BitcoinCore, BitcoinSv, ChainView, Coin, Node, TestKey};
use common::process::FerrumProcess;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
/// Every version ferrum negotiates, oldest first.
const VERSIONS: &[&str] = &["1.4", "1.4.1", "1.4.2", "1.4.3", "1.6", "1.7"];
const FEE: u64 = 20_000;

/// The daemon under test and how to make transactions on it.
enum Daemon {
    Core { node: BitcoinCore, coins: Vec<Coin>, keys: Vec<TestKey> },
    Sv { node: BitcoinSv },
}

impl Daemon {
    fn node(&self) -> &Node {
        match self {
            Daemon::Core { node, .. } => node,
            Daemon::Sv { node } => node,
        }
    }

    fn coin_env(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Daemon::Core { .. } => vec![("NET", "regtest")],
            Daemon::Sv { .. } => vec![("COIN", "BitcoinSV"), ("NET", "regtest")],
        }
    }

    /// The fee the node's mempool records for `txid`, in satoshis.
    fn mempool_fee(&self, txid: &str) -> u64 {
        let entry = self.node().call("getmempoolentry", json!([txid]));
        match self {
            Daemon::Core { .. } => sats(&entry["fees"]["base"]),
            Daemon::Sv { .. } => sats(&entry["fee"]),
        }
    }

    fn mempool_vsize(&self, txid: &str) -> u64 {
        let entry = self.node().call("getmempoolentry", json!([txid]));
        entry["vsize"].as_u64().or_else(|| entry["size"].as_u64()).unwrap()
    }

    /// Builds the chain: mature coinbases, payments to several kinds of script, transactions
    /// whose outputs are all spent (a node without txindex cannot find those by txid), and a
    /// mempool holding a payment and a child of it (height -1).
    fn build(&mut self) {
        match self {
            Daemon::Core { node, coins, keys } => {
                let (k1, k2, k3) = (&keys[0], &keys[1], &keys[2]);
                let miner = k1.p2wpkh();
                node.generate_to(130, &miner.to_string());
                *coins = node.coins(k1, &miner.script_pubkey());
                let spend = |inputs: &[Coin], mut outputs: Vec<bitcoin::TxOut>, change: &Address| {
                    let total: u64 = inputs.iter().map(|c| c.txout.value.to_sat()).sum();
                    let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
                    outputs.push(pay(change, total - paid - FEE));
                    sign_tx(inputs, outputs)
                };
                let a = spend(
                    &[coins.remove(0)],
                    vec![pay(&k2.p2wpkh(), 100_000_000), pay(&k2.p2tr(), 200_000_000), pay(&k3.p2pkh(), 50_000_000)],
                    &k1.p2wpkh(),
                );
                node.send(&a);
                node.generate_to(1, &miner.to_string());
                // `a` fully spent: every output, change included, in one transaction.
                let all: Vec<Coin> = (0..4).map(|v| Coin::of(&a, v, [k2, k2, k3, k1][v as usize])).collect();
                let b = spend(&all, vec![pay(&k3.p2wpkh(), 150_000_000)], &k2.p2tr());
                node.send(&b);
                node.generate_to(1, &miner.to_string());
                let c = spend(&[Coin::of(&b, 1, k2)], vec![pay(&k3.p2tr(), 70_000_000)], &k2.p2wpkh());
                node.send(&c);
                node.generate_to(2, &miner.to_string());
                // The mempool: a payment and its child.
                let d = spend(&[coins.remove(0)], vec![pay(&k2.p2pkh(), 300_000_000)], &k1.p2wpkh());
                node.send(&d);
                let e = spend(&[Coin::of(&d, 0, k2)], vec![pay(&k3.p2wpkh(), 100_000_000)], &k2.p2wpkh());
                node.send(&e);
            }
            Daemon::Sv { node } => {
                let miner = node.new_address();
                node.generate_to(110, &miner);
                let payees: Vec<String> = (0..4).map(|_| node.new_address()).collect();
                let mut last = String::new();
                for (i, a) in payees.iter().enumerate() {
                    last = node.send_to(a, 100_000_000 * (i as u64 + 1));
                }
                node.generate_to(1, &miner);
                // A transaction spending every output (payment and change) of the last payment,
                // which nothing else spends.
                node.spend_all_outputs(&last, &payees[1], FEE);
                node.generate_to(1, &miner);
                node.send_to(&payees[2], 2_000_000);
                node.generate_to(2, &miner);
                // The mempool: a payment and a child spending it.
                let parent = node.send_to(&payees[3], 300_000_000);
                let ptx = node.call("getrawtransaction", json!([parent, true]));
                let out =
                    ptx["vout"].as_array().unwrap().iter().find(|o| sats(&o["value"]) == 300_000_000).unwrap().clone();
                let prev = json!([{"txid": parent, "vout": out["n"], "scriptPubKey": out["scriptPubKey"]["hex"],
                                    "amount": out["value"]}]);
                let raw = node.sign(
                    vec![json!({"txid": parent, "vout": out["n"]})],
                    &payees[0],
                    300_000_000 - FEE,
                    prev.as_array().unwrap(),
                );
                node.call("sendrawtransaction", json!([raw]));
            }
        }
    }

    /// A signed payment not yet broadcast, and one more pair (parent, child) for a package.
    fn unbroadcast(&mut self) -> (String, Vec<String>) {
        match self {
            Daemon::Core { coins, keys, .. } => {
                let (k1, k4, k5) = (&keys[0], &keys[3], &keys[4]);
                let pay_tx = sign_tx(&[coins.remove(0)], vec![pay(&k4.p2wpkh(), 5_000_000_000 - FEE)]);
                let parent = sign_tx(&[coins.remove(0)], vec![pay(&k5.p2wpkh(), 5_000_000_000 - FEE)]);
                let child = sign_tx(&[Coin::of(&parent, 0, k5)], vec![pay(&k1.p2tr(), 5_000_000_000 - 2 * FEE)]);
                let hex = consensus::encode::serialize_hex;
                (hex(&pay_tx), vec![hex(&parent), hex(&child)])
            }
            Daemon::Sv { node } => {
                let dest = node.new_address();
                let listed = node.call("listunspent", json!([1]));
                let mut utxos: Vec<&Value> =
                    listed.as_array().unwrap().iter().filter(|u| sats(&u["amount"]) > 10_000_000).collect();
                utxos.sort_by_key(|u| (u["txid"].as_str().unwrap().to_string(), u["vout"].as_u64()));
                let one = |u: &Value| json!({"txid": u["txid"], "vout": u["vout"]});
                let payment = node.sign(vec![one(utxos[0])], &dest, sats(&utxos[0]["amount"]) - FEE, &[]);
                let parent = node.sign(vec![one(utxos[1])], &node.new_address(), sats(&utxos[1]["amount"]) - FEE, &[]);
                let ptx = node.call("decoderawtransaction", json!([parent]));
                let out = &ptx["vout"][0];
                let prev = json!({"txid": ptx["txid"], "vout": 0, "scriptPubKey": out["scriptPubKey"]["hex"],
                                  "amount": out["value"]});
                let child = node.sign(
                    vec![json!({"txid": ptx["txid"], "vout": 0})],
                    &node.new_address(),
                    sats(&out["value"]) - FEE,
                    &[prev],
                );
                (payment, vec![parent, child])
            }
        }
    }
}

/// One script's expected answers.
#[derive(Default, Debug)]
struct Expected {
    /// (txid, height): confirmed in chain order, then the mempool's in 1.6 canonical order.
    history: Vec<(String, i64)>,
    /// (txid, height, fee) of the mempool part.
    mempool: Vec<(String, i64, u64)>,
    confirmed: u64,
    unconfirmed: i64,
    /// (txid, vout, height, value).
    unspent: BTreeSet<(String, u64, u64, u64)>,
}

/// What the node says about every script: its blocks (through [`ChainView`]) and its mempool.
struct NodeState {
    view: ChainView,
    scripts: BTreeMap<String, Expected>,
    /// Every confirmed txid with its height and block hash; every mempool txid.
    confirmed: Vec<(String, u64, String)>,
    mempool: Vec<String>,
    /// Every output of the chain and the mempool, with its script and its 1.7 outpoint status
    /// (computed from the node's blocks and mempool), plus one index past each transaction's last.
    outpoints: Vec<((String, u64), String, Value)>,
    /// The mempool's transactions in the order they entered it, oldest first, with fee and vsize.
    arrivals: Vec<(String, u64, u64)>,
}

fn is_unspendable(script: &str) -> bool {
    script.starts_with("6a") || script.starts_with("006a")
}

impl NodeState {
    fn read(d: &Daemon) -> NodeState {
        let node = d.node();
        let view = ChainView::read(node);
        let mut scripts: BTreeMap<String, Expected> = BTreeMap::new();
        // Unspent confirmed outputs by outpoint: (script, value).
        let mut outputs: HashMap<(String, u64), (String, u64)> = HashMap::new();
        for (script, state) in &view.scripts {
            if is_unspendable(script) {
                continue;
            }
            let e = scripts.entry(script.clone()).or_default();
            e.history = state.history.iter().map(|(t, h)| (t.clone(), *h as i64)).collect();
            e.confirmed = state.balance();
            for (txid, n, height, value) in &state.utxos {
                e.unspent.insert((txid.clone(), *n as u64, *height, *value));
                outputs.insert((txid.clone(), *n as u64), (script.clone(), *value));
            }
        }
        let mempool: Vec<String> = node
            .call("getrawmempool", json!([]))
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().into())
            .collect();
        let in_mempool: HashSet<&String> = mempool.iter().collect();
        let txs: Vec<Value> = mempool.iter().map(|t| node.call("getrawtransaction", json!([t, true]))).collect();
        for tx in &txs {
            let txid = tx["txid"].as_str().unwrap().to_string();
            for o in tx["vout"].as_array().unwrap() {
                let script = o["scriptPubKey"]["hex"].as_str().unwrap().to_string();
                outputs.insert((txid.clone(), o["n"].as_u64().unwrap()), (script, sats(&o["value"])));
            }
        }
        let mut spent_in_mempool = HashSet::new();
        for tx in &txs {
            let txid = tx["txid"].as_str().unwrap().to_string();
            let mut touched = BTreeSet::new();
            let mut height = 0;
            for i in tx["vin"].as_array().unwrap() {
                let prev = (i["txid"].as_str().unwrap().to_string(), i["vout"].as_u64().unwrap());
                if in_mempool.contains(&prev.0) {
                    height = -1;
                }
                let (script, value) = outputs[&prev].clone();
                scripts.entry(script.clone()).or_default().unconfirmed -= value as i64;
                touched.insert(script);
                spent_in_mempool.insert(prev);
            }
            for o in tx["vout"].as_array().unwrap() {
                let script = o["scriptPubKey"]["hex"].as_str().unwrap().to_string();
                if is_unspendable(&script) {
                    continue;
                }
                scripts.entry(script.clone()).or_default().unconfirmed += sats(&o["value"]) as i64;
                touched.insert(script);
            }
            let fee = d.mempool_fee(&txid);
            for script in touched {
                scripts.get_mut(&script).unwrap().mempool.push((txid.clone(), height, fee));
            }
        }
        for tx in &txs {
            let txid = tx["txid"].as_str().unwrap().to_string();
            for o in tx["vout"].as_array().unwrap() {
                let n = o["n"].as_u64().unwrap();
                let script = o["scriptPubKey"]["hex"].as_str().unwrap().to_string();
                if !is_unspendable(&script) && !spent_in_mempool.contains(&(txid.clone(), n)) {
                    scripts.get_mut(&script).unwrap().unspent.insert((txid.clone(), n, 0, sats(&o["value"])));
                }
            }
        }
        for e in scripts.values_mut() {
            e.unspent.retain(|(t, n, _, _)| !spent_in_mempool.contains(&(t.clone(), *n)));
            e.mempool.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            e.history.extend(e.mempool.iter().map(|(t, h, _)| (t.clone(), *h)));
        }
        let mut confirmed: Vec<(String, u64, String)> =
            view.positions.iter().map(|(t, (h, _))| (t.clone(), *h, node.block_hash(*h))).collect();
        confirmed.sort_by_key(|(t, h, _)| (*h, view.positions[t].1));
        let outpoints = expected_outpoints(&view, &txs, &in_mempool);
        let mut arrivals: Vec<(String, u64, u64)> = mempool
            .iter()
            .map(|t| {
                let e = node.call("getmempoolentry", json!([t]));
                (t.clone(), e["time"].as_u64().unwrap(), d.mempool_vsize(t))
            })
            .collect();
        arrivals.sort_by_key(|a| a.1);
        let arrivals = arrivals.into_iter().map(|(t, _, vsize)| (t.clone(), d.mempool_fee(&t), vsize)).collect();
        NodeState { view, scripts, confirmed, mempool, outpoints, arrivals }
    }
}

/// The 1.7 status of every output the node knows, from its blocks and mempool alone.
fn expected_outpoints(
    view: &ChainView,
    mempool_txs: &[Value],
    in_mempool: &HashSet<&String>,
) -> Vec<((String, u64), String, Value)> {
    // Mempool heights: -1 when a transaction spends another mempool transaction's output.
    let mempool_height = |tx: &Value| {
        let unconfirmed_parent = tx["vin"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["txid"].as_str().is_some_and(|t| in_mempool.contains(&t.to_string())));
        if unconfirmed_parent {
            -1
        } else {
            0
        }
    };
    let mut spenders: HashMap<(String, u64), (String, i64)> =
        view.spenders.iter().map(|((t, n), (s, h))| ((t.clone(), *n as u64), (s.clone(), *h as i64))).collect();
    let mut outputs: Vec<((String, u64), String, Option<i64>)> = view
        .outputs
        .iter()
        .map(|((t, n), (script, h))| ((t.clone(), *n as u64), script.clone(), Some(*h as i64)))
        .collect();
    for tx in mempool_txs {
        let txid = tx["txid"].as_str().unwrap().to_string();
        let height = mempool_height(tx);
        for i in tx["vin"].as_array().unwrap() {
            spenders.insert((i["txid"].as_str().unwrap().into(), i["vout"].as_u64().unwrap()), (txid.clone(), height));
        }
        for o in tx["vout"].as_array().unwrap() {
            let script = o["scriptPubKey"]["hex"].as_str().unwrap().to_string();
            outputs.push(((txid.clone(), o["n"].as_u64().unwrap()), script, Some(height)));
        }
    }
    // One past each transaction's last output: no such outpoint.
    let mut last: HashMap<String, u64> = HashMap::new();
    for ((t, n), _, _) in &outputs {
        let e = last.entry(t.clone()).or_default();
        *e = (*e).max(*n);
    }
    outputs.extend(last.into_iter().map(|(t, n)| ((t, n + 1), "51".to_string(), None)));
    outputs.sort();
    outputs
        .into_iter()
        .map(|(op, script, funder)| {
            // The genesis coinbase's outputs exist for nobody: not spendable, and nodes do not serve it.
            let genesis = view.positions.get(&op.0).is_some_and(|p| p.0 == 0);
            let status = match funder {
                None => json!({}),
                Some(_) if genesis => json!({}),
                Some(h) => match spenders.get(&op) {
                    Some((s, sh)) => json!({"funder_height": h, "spender_txhash": s, "spender_height": sh}),
                    None => json!({"funder_height": h}),
                },
            };
            (op, script, status)
        })
        .collect()
}

fn internal(hex_display: &str) -> [u8; 32] {
    let mut b: [u8; 32] = hex::decode(hex_display).unwrap().try_into().unwrap();
    b.reverse();
    b
}

fn merkle_root(mut level: Vec<[u8; 32]>) -> [u8; 32] {
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().unwrap());
        }
        level = level.chunks(2).map(|p| sha256d::Hash::hash(&[p[0], p[1]].concat()).to_byte_array()).collect();
    }
    level[0]
}

/// What the node answers for `getrawtransaction <txid> true`, or, for a confirmed transaction a
/// node without an index cannot find by txid, the same object assembled from its block.
fn node_verbose(d: &Daemon, txid: &str, block: Option<(&str, u64)>) -> Value {
    let node = d.node();
    let asked = match (d, block) {
        // ferrum asks Core with the block hash, which adds in_active_chain.
        (Daemon::Core { .. }, Some((hash, _))) => node.rpc("getrawtransaction", json!([txid, true, hash])),
        _ => node.rpc("getrawtransaction", json!([txid, true])),
    };
    if let Ok(v) = asked {
        return v;
    }
    // Nodes do not serve the genesis coinbase, and a node without an index does not find a
    // transaction whose outputs are all spent: assemble its answer from the block instead.
    let (hash, height) = block.expect("a mempool transaction is found by txid");
    let b = node.call("getblock", json!([hash, 2]));
    let mut tx = b["tx"].as_array().unwrap().iter().find(|t| t["txid"] == json!(txid)).unwrap().clone();
    tx["blockhash"] = json!(hash);
    tx["confirmations"] = b["confirmations"].clone();
    tx["time"] = b["time"].clone();
    tx["blocktime"] = b["time"].clone();
    match d {
        Daemon::Core { .. } => tx["in_active_chain"] = json!(true),
        Daemon::Sv { .. } => tx["blockheight"] = json!(height),
    }
    tx
}

/// Numbers compare as numbers: the node prints 1.50, JSON parsing gives 1.5 either way.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Every read-only method at protocol `version`, checked against `st`, for every script and
/// every transaction.
fn check_session(d: &Daemon, st: &NodeState, port: u16, version: &str, errors: &mut Vec<String>) {
    let node = d.node();
    let (v16, v17) = (version >= "1.6", version == "1.7");
    let mut c = Client::tcp(port);
    let mut check = |what: String, ok: bool| {
        if !ok {
            errors.push(format!("[{version}] {what}"));
        }
    };
    let got = c.ok("server.version", json!(["compat", version]));
    check(format!("server.version {got}"), got[1] == json!(version) && got[0].as_str().unwrap().starts_with("ferrum"));

    // server.*
    let f = c.ok("server.features", json!([]));
    // 1.7 drops hash_function.
    let hash_function = if v17 { Value::Null } else { json!("sha256") };
    check(
        format!("features {f}"),
        f["genesis_hash"] == json!(node.block_hash(0)) && f["hash_function"] == hash_function,
    );
    check(format!("features {f}"), f["protocol_min"] == "1.4" && f["protocol_max"] == "1.7" && f["pruning"].is_null());
    let banner = c.ok("server.banner", json!([]));
    check(format!("banner {banner}"), banner.is_string());
    check("donation_address".into(), c.ok("server.donation_address", json!([])) == json!(""));
    check("peers.subscribe".into(), c.ok("server.peers.subscribe", json!([])).is_array());
    if v17 {
        check("ping".into(), c.ok("server.ping", json!([])) == json!({"data": ""}));
        check("ping pong_len".into(), c.ok("server.ping", json!([16, "ab"])) == json!({"data": "0".repeat(16)}));
    } else {
        check("ping".into(), c.ok("server.ping", json!([])).is_null());
    }

    // Headers, with checkpoint proofs checked against the node's block hashes.
    let tip = st.view.tip_height;
    let header_hex =
        |h: u64| node.call("getblockheader", json!([node.block_hash(h), false])).as_str().unwrap().to_string();
    let sub = c.ok("blockchain.headers.subscribe", json!([]));
    check(format!("headers.subscribe {sub}"), sub == json!({"hex": header_hex(tip), "height": tip}));
    let hashes: Vec<[u8; 32]> = (0..=tip).map(|h| internal(&node.block_hash(h))).collect();
    for h in [0, 1, tip / 2, tip] {
        check(format!("block.header {h}"), c.ok("blockchain.block.header", json!([h])) == json!(header_hex(h)));
        let cp = tip;
        let p = c.ok("blockchain.block.header", json!([h, cp]));
        let root = merkle_root(hashes[..=cp as usize].to_vec());
        let folded = fold_branch(hashes[h as usize], h, &p["branch"]);
        check(
            format!("block.header {h} cp {cp}: {p}"),
            p["header"] == json!(header_hex(h)) && internal(p["root"].as_str().unwrap()) == root && folded == root,
        );
    }
    let hs = c.ok("blockchain.block.headers", json!([tip - 5, 10]));
    let want: Vec<String> = (tip - 5..=tip).map(header_hex).collect();
    let got_headers: Vec<String> = if v16 {
        hs["headers"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
    } else {
        hs["hex"].as_str().unwrap().as_bytes().chunks(160).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect()
    };
    check(format!("block.headers {hs}"), got_headers == want && hs["count"] == json!(6) && hs["max"] == json!(2016));
    let hp = c.ok("blockchain.block.headers", json!([2, 3, tip]));
    let root = merkle_root(hashes.clone());
    check(format!("block.headers cp {hp}"), internal(hp["root"].as_str().unwrap()) == root);
    check("block.headers cp branch".into(), fold_branch(hashes[4], 4, &hp["branch"]) == root);
    let e = c.call("blockchain.block.header", json!([tip + 1]));
    check(format!("block.header past the tip: {e:?}"), e.is_err());

    // Fees, as the node estimates them (a node without estimates: -1).
    let node_fee = match node.rpc("estimatesmartfee", json!([2])) {
        Ok(v) => v.get("feerate").cloned().unwrap_or(json!(-1)),
        Err(_) => json!(-1),
    };
    check(format!("estimatefee vs {node_fee}"), same_json(&c.ok("blockchain.estimatefee", json!([2])), &node_fee));
    let relay = node.call("getnetworkinfo", json!([]))["relayfee"].clone();
    if v16 {
        let e = c.ok("blockchain.estimatefee", json!([2, "CONSERVATIVE"]));
        check(format!("estimatefee with mode {e}"), e.is_number());
        check("relayfee removed at 1.6".into(), c.call("blockchain.relayfee", json!([])).is_err());
        let info = c.ok("mempool.get_info", json!([]));
        let m = node.call("getmempoolinfo", json!([]));
        let want_relay = m.get("minrelaytxfee").cloned().unwrap_or(relay.clone());
        check(
            format!("mempool.get_info {info} vs node {m}"),
            same_json(&info["minrelaytxfee"], &want_relay)
                && same_json(&info["mempoolminfee"], &m["mempoolminfee"])
                && same_json(&info["incrementalrelayfee"], m.get("incrementalrelayfee").unwrap_or(&want_relay)),
        );
    } else {
        check("relayfee".into(), same_json(&c.ok("blockchain.relayfee", json!([])), &relay));
        check("mempool.get_info is 1.6".into(), c.call("mempool.get_info", json!([])).is_err());
    }
    let hist = c.ok("mempool.get_fee_histogram", json!([]));
    let total: u64 = hist.as_array().unwrap().iter().map(|b| b[1].as_u64().unwrap()).sum();
    let node_total: u64 = st.mempool.iter().map(|t| d.mempool_vsize(t)).sum();
    check(format!("fee histogram {hist} vs mempool vsize {node_total}"), total == node_total);

    // Every script method, for every script the chain and the mempool touched: by script hash
    // up to 1.6, by the script itself at 1.7, where lists come inside an object.
    let family = if v17 { "scriptpubkey" } else { "scripthash" };
    let list = |v: Value, k: &str| if v17 { v[k].clone() } else { v };
    let m = |name: &str| format!("blockchain.{family}.{name}");
    for (script, e) in &st.scripts {
        let sh = scripthash(&hex::decode(script).unwrap());
        let key = if v17 { json!(script) } else { json!(sh) };
        let bal = c.ok(&m("get_balance"), json!([key]));
        check(
            format!("balance of {script}: {bal} vs {} {}", e.confirmed, e.unconfirmed),
            bal == json!({"confirmed": e.confirmed, "unconfirmed": e.unconfirmed}),
        );
        let h = list(c.ok(&m("get_history"), json!([key])), "history");
        let got: Vec<(String, i64)> = h
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["tx_hash"].as_str().unwrap().to_string(), x["height"].as_i64().unwrap()))
            .collect();
        check(format!("history of {script}: {got:?} vs {:?}", e.history), got == e.history);
        let mp = list(c.ok(&m("get_mempool"), json!([key])), "history");
        let got: Vec<(String, i64, u64)> = mp
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (x["tx_hash"].as_str().unwrap().to_string(), x["height"].as_i64().unwrap(), x["fee"].as_u64().unwrap())
            })
            .collect();
        check(format!("mempool of {script}: {got:?} vs {:?}", e.mempool), got == e.mempool);
        let u = list(c.ok(&m("listunspent"), json!([key])), "utxos");
        let got: BTreeSet<(String, u64, u64, u64)> = u
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let n = |k: &str| x[k].as_u64().unwrap();
                (x["tx_hash"].as_str().unwrap().to_string(), n("tx_pos"), n("height"), n("value"))
            })
            .collect();
        check(format!("listunspent of {script}: {got:?} vs {:?}", e.unspent), got == e.unspent);
        let status = c.ok(&m("subscribe"), json!([key]));
        check(format!("status of {script}"), status == status_of(&e.history));
        check("unsubscribe".into(), c.ok(&m("unsubscribe"), json!([key])) == json!(true));
        check("unsubscribe twice".into(), c.ok(&m("unsubscribe"), json!([key])) == json!(false));
    }
    let other = if v17 { "blockchain.scripthash.get_balance" } else { "blockchain.scriptpubkey.get_balance" };
    let e = c.call(other, json!(["00".repeat(32)]));
    check(format!("{other} is not a method at {version}: {e:?}"), e.is_err_and(|(code, _)| code == -32601));
    if v17 {
        check_outpoints(&mut c, st, &mut check);
    }

    // Transactions: raw and verbose against the node's own answers; proofs against its blocks.
    for (txid, height, hash) in &st.confirmed {
        let raw = c.ok("blockchain.transaction.get", json!([txid]));
        let want = node_verbose(d, txid, Some((hash, *height)));
        check(format!("raw {txid} at {height}"), raw == want["hex"]);
        let verbose = c.ok("blockchain.transaction.get", json!([txid, true]));
        check(format!("verbose {txid} at {height}:\n  ferrum {verbose}\n  node   {want}"), same_json(&verbose, &want));
        let pos = st.view.positions[txid].1 as u64;
        let m = c.ok("blockchain.transaction.get_merkle", json!([txid, height]));
        let root = internal(node.call("getblockheader", json!([hash]))["merkleroot"].as_str().unwrap());
        check(
            format!("get_merkle {txid}: {m}"),
            m["block_height"] == json!(height)
                && m["pos"] == json!(pos)
                && fold_branch(internal(txid), pos, &m["merkle"]) == root,
        );
        if v16 {
            check(format!("get_merkle block_hash {m}"), m["block_hash"] == json!(hash));
            let m2 = c.ok("blockchain.transaction.get_merkle", json!([txid]));
            check("get_merkle without height".into(), m2 == m);
        }
        let id = c.ok("blockchain.transaction.id_from_pos", json!([height, pos]));
        check(format!("id_from_pos {height} {pos}"), id == json!(txid));
        let idm = c.ok("blockchain.transaction.id_from_pos", json!([height, pos, true]));
        check(format!("id_from_pos merkle {idm}"), idm["tx_hash"] == json!(txid) && idm["merkle"] == m["merkle"]);
    }
    for txid in &st.mempool {
        let raw = c.ok("blockchain.transaction.get", json!([txid]));
        let want = node_verbose(d, txid, None);
        check(format!("raw mempool {txid}"), raw == want["hex"]);
        let verbose = c.ok("blockchain.transaction.get", json!([txid, true]));
        check(format!("verbose mempool {txid}: {verbose} vs {want}"), same_json(&verbose, &want));
    }
    let unknown = "00".repeat(32);
    let e = c.call("blockchain.transaction.get", json!([unknown]));
    check(format!("unknown txid: {e:?}"), e.is_err_and(|(code, _)| code == 1 || code == 2));
}

/// 1.7's outpoint statuses of every output, mempool.recent and testmempoolaccept, against the
/// node's own blocks and mempool.
fn check_outpoints(c: &mut Client, st: &NodeState, check: &mut impl FnMut(String, bool)) {
    for ((txid, n), script, want) in &st.outpoints {
        let got = c.ok("blockchain.outpoint.get_status", json!([txid, n, script]));
        check(format!("outpoint {txid}:{n}: {got} vs node {want}"), &got == want);
    }
    let spent = st.outpoints.iter().filter(|(_, _, w)| w.get("spender_txhash").is_some()).count();
    eprintln!("1.7: {} outpoints checked, {spent} of them spent", st.outpoints.len());
    let e = c.call("blockchain.outpoint.get_status", json!(["00".repeat(32), 0]));
    check(format!("get_status without spk_hint: {e:?}"), e.is_err_and(|(code, _)| code == -32602));
    let recent = c.ok("mempool.recent", json!([]));
    let all: Vec<Value> =
        st.arrivals.iter().map(|(t, fee, vsize)| json!({"txid": t, "fee": fee, "vsize": vsize})).collect();
    // Arrival order is the server's own (the node's entry times have one-second resolution):
    // the newest ten, each as the node has it.
    let got = recent.as_array().unwrap();
    let newest = &all[all.len().saturating_sub(10)..];
    let as_set = |v: &[Value]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    let fits = if all.len() <= 10 {
        as_set(got) == as_set(&all)
    } else {
        got.len() == 10 && as_set(got).is_subset(&as_set(&all))
    };
    check(format!("mempool.recent {recent} vs {newest:?}"), fits);
}

/// Broadcasts (single, repeated, package) and the notifications they and a new block cause.
fn check_broadcasts(d: &mut Daemon, port: u16, errors: &mut Vec<String>) {
    let (payment, package) = d.unbroadcast();
    let node_txid =
        |hex: &str| d.node().call("decoderawtransaction", json!([hex]))["txid"].as_str().unwrap().to_string();
    let txid = node_txid(&payment);
    let tx: Transaction = consensus::encode::deserialize(&hex::decode(&payment).unwrap()).unwrap();
    let dest = scripthash(tx.output[0].script_pubkey.as_bytes());
    let mut c = Client::tcp(port);
    c.version(json!("1.6"));
    c.ok("blockchain.headers.subscribe", json!([]));
    let before = c.ok("blockchain.scripthash.subscribe", json!([dest]));
    if !before.is_null() {
        errors.push(format!("fresh destination has a status {before}"));
    }
    // A 1.7 watcher of the coin the payment spends, and of the payment's first output.
    let mut o = Client::tcp(port);
    o.version(json!("1.7"));
    let coin = tx.input[0].previous_output;
    let prev = c.ok("blockchain.transaction.get", json!([coin.txid.to_string(), true]));
    let coin_spk = prev["vout"][coin.vout as usize]["scriptPubKey"]["hex"].clone();
    let coin_op = json!([coin.txid.to_string(), coin.vout, coin_spk]);
    let out_op = json!([txid, 0, hex::encode(tx.output[0].script_pubkey.as_bytes())]);
    let coin_before = o.ok("blockchain.outpoint.subscribe", coin_op.clone());
    let funded_at = coin_before["funder_height"].clone();
    if !funded_at.is_u64() || coin_before.get("spender_txhash").is_some() {
        errors.push(format!("the coin a payment will spend: {coin_before}"));
    }
    let out_before = o.ok("blockchain.outpoint.subscribe", out_op.clone());
    if out_before != json!({}) {
        errors.push(format!("an output not yet broadcast: {out_before}"));
    }
    let got = c.ok("blockchain.transaction.broadcast", json!([payment]));
    let spent_in_mempool = json!({"funder_height": funded_at, "spender_txhash": txid, "spender_height": 0});
    outpoint_note(&mut o, &coin_op, spent_in_mempool, "broadcast", errors);
    outpoint_note(&mut o, &out_op, json!({"funder_height": 0}), "broadcast", errors);
    if got != json!(txid) || !d.node().mempool().contains(&txid) {
        errors.push(format!("broadcast answered {got}, node mempool {:?}", d.node().mempool()));
    }
    // A repeated broadcast answers the txid on every node.
    let again = c.call("blockchain.transaction.broadcast", json!([payment]));
    if again != Ok(json!(txid)) {
        errors.push(format!("repeated broadcast answered {again:?}"));
    }
    let want = status_of(&[(txid.clone(), 0)]);
    let note = c.wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == json!(dest) && p[1] == want);
    if note.is_none() {
        errors.push(format!("no status notification for the broadcast payment ({want})"));
    }
    let pkg = c.ok("blockchain.transaction.broadcast_package", json!([package]));
    let ids: Vec<String> = package.iter().map(|h| node_txid(h)).collect();
    let pool = d.node().mempool();
    if pkg != json!({"success": true}) || !ids.iter().all(|t| pool.contains(t)) {
        errors.push(format!("broadcast_package answered {pkg}; node mempool {pool:?}, package {ids:?}"));
    }
    let bad = c.call("blockchain.transaction.broadcast", json!(["00"]));
    if !bad.as_ref().is_err_and(|(code, _)| *code == 1) {
        errors.push(format!("a broadcast the node rejects answered {bad:?}"));
    }
    // A block: the tip notification and the payment's new status.
    let miner = match d {
        Daemon::Core { keys, .. } => keys[0].p2wpkh().to_string(),
        Daemon::Sv { node } => node.new_address(),
    };
    let hash = d.node().generate_to(1, &miner)[0].clone();
    let height = d.node().height();
    let want_tip = d.node().call("getblockheader", json!([hash, false]));
    let tipped = c.wait_notification("blockchain.headers.subscribe", WAIT, |p| p[0]["height"] == json!(height));
    if tipped.as_ref().map(|n| n["params"][0]["hex"].clone()) != Some(want_tip) {
        errors.push(format!("tip notification {tipped:?}"));
    }
    let want = status_of(&[(txid.clone(), height as i64)]);
    if c.wait_notification("blockchain.scripthash.subscribe", WAIT, |p| p[0] == json!(dest) && p[1] == want).is_none() {
        errors.push("no status notification for the payment's confirmation".into());
    }
    let spent_in_block = json!({"funder_height": funded_at, "spender_txhash": txid, "spender_height": height});
    outpoint_note(&mut o, &coin_op, spent_in_block, "mined", errors);
    outpoint_note(&mut o, &out_op, json!({"funder_height": height}), "mined", errors);
}

/// Waits for the notification of `op` (its subscribe params) reaching `want`.
fn outpoint_note(o: &mut Client, op: &Value, want: Value, when: &str, errors: &mut Vec<String>) {
    let n =
        o.wait_notification("blockchain.outpoint.subscribe", WAIT, |p| p[0] == op[0] && p[1] == op[1] && p[2] == want);
    if n.is_none() {
        errors.push(format!("{when}: no outpoint notification of {op} reaching {want}"));
    }
}

fn run(mut d: Daemon, label: &str) {
    d.build();
    let dir = tempfile::Builder::new().prefix(&format!("ferrum-compat-{label}-")).tempdir().unwrap();
    let url = d.node().url();
    let mut env = d.coin_env();
    env.push(("DAEMON_URL", &url));
    let (mut f, ports) = FerrumProcess::start_serving(&dir.path().join("db"), &["tcp"], &env);
    let st = NodeState::read(&d);
    f.wait_for_tip(st.view.tip_height, Some(&st.view.tip_hash), WAIT);
    f.wait_port(ports["tcp"], WAIT);
    // The mempool mirror has caught up when every mempool transaction shows.
    let mut c = Client::tcp(ports["tcp"]);
    c.version(json!("1.6"));
    let start = std::time::Instant::now();
    for (script, e) in &st.scripts {
        if e.mempool.is_empty() {
            continue;
        }
        let sh = scripthash(&hex::decode(script).unwrap());
        while c.ok("blockchain.scripthash.get_mempool", json!([sh])).as_array().unwrap().len() < e.mempool.len() {
            assert!(start.elapsed() < WAIT, "the mempool never reached ferrum\n{}", f.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "[{label}] {} blocks, {} confirmed and {} mempool txs, {} scripts",
        st.view.tip_height + 1,
        st.confirmed.len(),
        st.mempool.len(),
        st.scripts.len()
    );
    let mut errors = Vec::new();
    for v in VERSIONS {
        let t = std::time::Instant::now();
        check_session(&d, &st, ports["tcp"], v, &mut errors);
        eprintln!("[{label}] {v} checked in {:.1} s", t.elapsed().as_secs_f64());
    }
    check_broadcasts(&mut d, ports["tcp"], &mut errors);
    assert!(errors.is_empty(), "[{label}] {} mismatches:\n{}\n{}", errors.len(), errors.join("\n"), f.log_tail());
    f.stop();
}

fn core(txindex: bool) -> Option<Daemon> {
    let flag = if txindex { "-txindex=1" } else { "-txindex=0" };
    let node = BitcoinCore::try_start_with(&[flag])?;
    Some(Daemon::Core { node, coins: Vec::new(), keys: (1..=5).map(TestKey::new).collect() })
}

fn sv(txindex: bool) -> Option<Daemon> {
    let flag = if txindex { "-txindex=1" } else { "-txindex=0" };
    Some(Daemon::Sv { node: BitcoinSv::try_start_with(&[flag])? })
}

#[test]
fn every_method_on_bitcoin_core_without_txindex() {
    let Some(d) = core(false) else { return };
    run(d, "core");
}

#[test]
fn every_method_on_bitcoin_core_with_txindex() {
    let Some(d) = core(true) else { return };
    run(d, "core-txindex");
}

#[test]
fn every_method_on_bitcoin_sv_without_txindex() {
    let Some(d) = sv(false) else { return };
    run(d, "bsv");
}

#[test]
fn every_method_on_bitcoin_sv_with_txindex() {
    let Some(d) = sv(true) else { return };
    run(d, "bsv-txindex");
}
