//! End-to-end: ferrum against a real, wallet-less Bitcoin Core in regtest. Transactions (P2WPKH,
//! P2TR key-path, P2PKH; several inputs/outputs, OP_RETURN, parent+child in one block) are built
//! and signed in Rust. ferrum's `query` answers are compared with the node's own chain after the
//! initial sync, while following new blocks, across a reorg with a double spend, after SIGKILL
//! and restart, and after an admin `reorg 2`.

use ferrum_testkit as common;

use std::time::Duration;

use bitcoin::{Address, ScriptBuf, Transaction, Txid};
use common::nodes::{
    assert_caught_up, assert_ferrum_matches, op_return, pay, scripts_of, sign_tx, BitcoinCore, ChainView, Coin, TestKey,
};
use common::process::FerrumProcess;
use serde_json::json;

const FEE: u64 = 20_000;
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys 1..=8; key 1 mines.
struct Keys(Vec<TestKey>);

impl Keys {
    fn new() -> Keys {
        Keys((1..=8).map(TestKey::new).collect())
    }

    fn k(&self, i: usize) -> &TestKey {
        &self.0[i - 1]
    }

    /// Every address of every key (P2WPKH, P2TR, P2PKH).
    fn all_addresses(&self) -> Vec<Address> {
        self.0.iter().flat_map(|k| [k.p2wpkh(), k.p2tr(), k.p2pkh()]).collect()
    }
}

/// Spends `coins` to `outputs` plus change (minus a fixed fee) to `change`.
fn spend(coins: &[Coin], mut outputs: Vec<bitcoin::TxOut>, change: &Address) -> Transaction {
    let total: u64 = coins.iter().map(|c| c.txout.value.to_sat()).sum();
    let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
    outputs.push(pay(change, total - paid - FEE));
    sign_tx(coins, outputs)
}

fn assert_confirmed(view: &ChainView, txids: &[Txid]) {
    for t in txids {
        assert!(view.confirmed(t), "{t} should be confirmed at {}", view.tip_height);
    }
}

/// The node's UTXO set (scantxoutset) must equal what [`ChainView`] derived from the blocks, so
/// the view ferrum is compared with is itself checked against the node.
fn assert_view_matches_utxo_set(core: &BitcoinCore, view: &ChainView, keys: &Keys) {
    for addr in keys.all_addresses() {
        let script = addr.script_pubkey();
        let scanned: std::collections::BTreeSet<_> =
            core.scan(&script).into_iter().map(|(t, n, h, v, _)| (t, n, h, v)).collect();
        assert_eq!(scanned, view.state(&script).utxos, "scantxoutset vs blocks for {addr}");
    }
}

/// Mines the starting chain and the first transactions. Returns coinbase coins still unspent.
fn build_initial_chain(core: &BitcoinCore, keys: &Keys) -> Vec<Coin> {
    let (k1, k2, k3, k4, k5, k6, k7) = (keys.k(1), keys.k(2), keys.k(3), keys.k(4), keys.k(5), keys.k(6), keys.k(7));
    let miner = k1.p2wpkh();
    core.generate_to(120, &miner.to_string());
    let mut coinbases = core.coins(k1, &miner.script_pubkey());
    assert!(coinbases.len() >= 20, "expected ≥20 mature coinbases, got {}", coinbases.len());
    let mut next_coinbase = move || coinbases.remove(0);

    // A: one P2WPKH input → P2WPKH, P2TR, P2PKH, OP_RETURN and change.
    let a = spend(
        &[next_coinbase()],
        vec![
            pay(&k2.p2wpkh(), 100_000_000),
            pay(&k2.p2tr(), 200_000_000),
            pay(&k3.p2pkh(), 50_000_000),
            op_return(b"ferrum-a"),
        ],
        &k1.p2wpkh(),
    );
    // B: change to a taproot address of the miner key.
    let b = spend(&[next_coinbase()], vec![pay(&k3.p2tr(), 300_000_000), pay(&k4.p2wpkh(), 100_000_000)], &k1.p2tr());
    core.send(&a);
    core.send(&b);
    core.generate_to(1, &miner.to_string());

    // C: five inputs of three kinds → several outputs, one reusing an address, and an OP_RETURN.
    let c = spend(
        &[Coin::of(&a, 0, k2), Coin::of(&a, 1, k2), Coin::of(&a, 2, k3), Coin::of(&b, 0, k3), Coin::of(&b, 2, k1)],
        vec![
            pay(&k5.p2wpkh(), 150_000_000),
            pay(&k5.p2tr(), 150_000_000),
            pay(&k2.p2wpkh(), 50_000_000),
            op_return(b"ferrum-c"),
            pay(&k6.p2pkh(), 40_000_000),
        ],
        &k4.p2tr(),
    );
    // D and its child E, mined in the same block.
    let d = spend(&[next_coinbase()], vec![pay(&k6.p2tr(), 500_000_000)], &k1.p2wpkh());
    let e = spend(&[Coin::of(&d, 0, k6)], vec![pay(&k7.p2wpkh(), 200_000_000)], &k6.p2wpkh());
    for tx in [&c, &d, &e] {
        core.send(tx);
    }
    core.generate_to(1, &miner.to_string());

    let view = ChainView::read(core);
    let ids: Vec<Txid> = [&a, &b, &c, &d, &e].iter().map(|t| t.compute_txid()).collect();
    assert_confirmed(&view, &ids);
    let (pd, pe) = (view.positions[&ids[3].to_string()], view.positions[&ids[4].to_string()]);
    assert_eq!(pd.0, pe.0, "parent and child in one block");
    assert!(pd.1 < pe.1, "parent before child");
    assert!(core.mempool().is_empty());
    assert_view_matches_utxo_set(core, &view, keys);
    eprintln!("initial chain: height {}, {} txs", view.tip_height, view.positions.len());
    // Hand the rest of the coinbases back (the closure owns them).
    (0..15).map(|_| next_coinbase()).collect()
}

/// Node-only check (no ferrum): signing and relaying segwit, taproot and legacy spends works
/// against a real Core, and the chain view agrees with its UTXO set.
#[test]
fn e2e_bitcoind_sync_follow_reorg() {
    let Some(core) = BitcoinCore::try_start() else {
        return;
    };
    let keys = Keys::new();
    let mut coinbases = build_initial_chain(&core, &keys).into_iter();
    let (k1, k2, k3, k4, k5, k6, k7, k8) =
        (keys.k(1), keys.k(2), keys.k(3), keys.k(4), keys.k(5), keys.k(6), keys.k(7), keys.k(8));
    let miner = k1.p2wpkh().to_string();
    let scripts: Vec<(ScriptBuf, Option<String>)> = scripts_of(&keys.all_addresses());

    let tmp = tempfile::Builder::new().prefix("ferrum-e2e-btc-").tempdir().unwrap();
    let url = core.url();
    let mut ferrum = FerrumProcess::start(
        &tmp.path().join("db"),
        &[("DAEMON_URL", &url), ("COIN", "Bitcoin"), ("NET", "regtest"), ("CACHE_MB", "64")],
    );
    let sync = |ferrum: &mut FerrumProcess, label: &str| {
        let view = ChainView::read(&core);
        let info = ferrum.wait_for_tip(view.tip_height, Some(&view.tip_hash), SYNC_TIMEOUT);
        eprintln!("[{label}] ferrum at {} {}", view.tip_height, info["db_tip"]);
        assert_ferrum_matches(ferrum, &view, &scripts);
        assert_caught_up(ferrum, view.tip_height);
        view
    };

    // 1. Initial sync.
    sync(&mut ferrum, "initial sync");

    // 2. Follow: new transactions over a few blocks.
    let c5 = core.coins(k5, &k5.p2wpkh().script_pubkey());
    let f = spend(
        &[c5[0].clone(), coinbases.next().unwrap()],
        vec![pay(&k8.p2tr(), 600_000_000), pay(&k2.p2pkh(), 10_000_000)],
        &k1.p2tr(),
    );
    core.send(&f);
    core.generate_to(2, &miner);
    let e7 = core.coins(k7, &k7.p2wpkh().script_pubkey());
    let g = spend(&e7, vec![pay(&k5.p2tr(), 100_000_000)], &k7.p2pkh());
    core.send(&g);
    // A fan-out: many outputs of one tx to the same two scripts, in the same block as G.
    let fan_outputs = (0..40).map(|i| pay(&if i % 2 == 0 { k8.p2wpkh() } else { k8.p2pkh() }, 1_000_000 + i)).collect();
    let fan = spend(&[coinbases.next().unwrap()], fan_outputs, &k1.p2wpkh());
    core.send(&fan);
    core.generate_to(1, &miner);
    let view = sync(&mut ferrum, "follow");
    assert_confirmed(&view, &[f.compute_txid(), g.compute_txid(), fan.compute_txid()]);

    // 3. Reorg. X (and its child Y) and Z are mined in blocks that get orphaned; the new branch
    //    holds X2, a double spend of X's input, so X and Y vanish; Z stays unconfirmed.
    let x_input = coinbases.next().unwrap();
    let x = spend(std::slice::from_ref(&x_input), vec![pay(&k8.p2wpkh(), 700_000_000)], &k1.p2wpkh());
    let y = spend(&[Coin::of(&x, 0, k8)], vec![pay(&k4.p2tr(), 100_000_000)], &k8.p2pkh());
    core.send(&x);
    core.generate_to(1, &miner);
    let fork_point = core.height() - 1; // the block holding X is the first orphaned one
    core.send(&y);
    core.generate_to(1, &miner);
    let g_out = core.coins(k5, &k5.p2tr().script_pubkey());
    let z = spend(&g_out, vec![pay(&k2.p2tr(), 50_000_000)], &k5.p2wpkh());
    core.send(&z);
    core.generate_to(1, &miner);
    let before = sync(&mut ferrum, "before reorg");
    assert_confirmed(&before, &[x.compute_txid(), y.compute_txid(), z.compute_txid()]);

    let orphaned = core.block_hash(fork_point + 1);
    core.call("invalidateblock", json!([orphaned]));
    assert_eq!(core.height(), fork_point);
    // A different coinbase address makes sure no new block equals an orphaned one.
    let alt = k3.p2wpkh().to_string();
    let x2 = spend(&[x_input], vec![pay(&k7.p2tr(), 900_000_000)], &k6.p2pkh());
    core.generate_block(&alt, &[&x2]);
    for _ in 0..3 {
        core.generate_block(&alt, &[]);
    }
    assert_eq!(core.height(), before.tip_height + 1, "new branch is one block longer");
    // The double spend evicted X (and its child Y) from the mempool; Z is back there.
    eprintln!("mempool after the reorg: {:?}", core.mempool());
    let after = sync(&mut ferrum, "after reorg");
    assert!(!after.confirmed(&x.compute_txid()) && !after.confirmed(&y.compute_txid()));
    assert!(!after.confirmed(&z.compute_txid()), "Z is back in the mempool only");
    assert_confirmed(&after, &[x2.compute_txid()]);
    assert_view_matches_utxo_set(&core, &after, &keys);

    // 3b. A reorg that keeps the height: only the tip hash tells ferrum the chain changed.
    let old_tip = core.best_hash();
    core.call("invalidateblock", json!([old_tip]));
    core.generate_block(&k4.p2wpkh().to_string(), &[]);
    assert_eq!(core.height(), after.tip_height);
    assert_ne!(core.best_hash(), old_tip);
    sync(&mut ferrum, "same-height reorg");

    // 4. SIGKILL, a new block (mining Z from the mempool) while ferrum is down, restart.
    ferrum.kill9();
    core.generate_to(1, &miner);
    ferrum.spawn();
    let view = sync(&mut ferrum, "restart after kill -9");
    assert_confirmed(&view, &[z.compute_txid()]);

    // 4b. A same-height two-block reorg while ferrum is down (orphaning Z's block again): on
    //     restart ferrum must notice its own tip is no longer on the best chain.
    ferrum.kill9();
    core.call("invalidateblock", json!([core.block_hash(view.tip_height - 1)]));
    let alt5 = k5.p2wpkh().to_string();
    core.generate_block(&alt5, &[]);
    core.generate_block(&alt5, &[]);
    assert_eq!(core.height(), view.tip_height);
    ferrum.spawn();
    let view = sync(&mut ferrum, "reorg while down");
    assert!(!view.confirmed(&z.compute_txid()), "Z is unconfirmed again");

    // 5. Admin `reorg 2`: ferrum undoes its last two blocks and must come back to the same state.
    let res = ferrum.call("reorg", json!([2])).unwrap_or_else(|e| panic!("reorg 2: {e}"));
    eprintln!("[admin reorg 2] {res}; right after: {:?}", ferrum.getinfo());
    sync(&mut ferrum, "admin reorg 2");

    // And one more block after it, to be sure it still follows.
    let h4 = core.coins(k4, &k4.p2tr().script_pubkey());
    let w = spend(&h4, vec![pay(&k3.p2pkh(), 10_000_000)], &k4.p2wpkh());
    core.send(&w);
    core.generate_to(1, &miner);
    let view = sync(&mut ferrum, "follow after admin reorg");
    assert_confirmed(&view, &[w.compute_txid(), z.compute_txid()]);
    assert_view_matches_utxo_set(&core, &view, &keys);

    // The command-line client prints the same answers as the admin RPC.
    let port = ferrum.admin_port.to_string();
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrum-rpc"))
            .args(["--port", &port])
            .args(args)
            .output()
            .expect("run ferrum-rpc");
        assert!(out.status.success(), "ferrum-rpc {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ferrum-rpc {args:?}: {e}: {out:?}"))
    };
    assert_eq!(cli(&["getinfo"])["db_tip"].as_str(), Some(view.tip_hash.as_str()));
    let addr = k2.p2wpkh().to_string();
    let by_cli = cli(&["query", "--json", &addr]);
    let by_rpc = ferrum.call("query_json", json!([[addr], 100_000])).unwrap();
    assert_eq!(by_cli[0]["utxos"], by_rpc[0]["utxos"], "ferrum-rpc query vs admin query");
    assert_eq!(by_cli[0]["balance"], by_rpc[0]["balance"]);
    // ElectrumX's lines: the address, its history, its outputs and its balance in coins.
    let lines = ferrum.call("query", json!({"items": [addr], "limit": 1000})).unwrap();
    let lines: Vec<&str> = lines.as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines[0], format!("Address: {addr}"));
    let n_utxos = by_rpc[0]["utxos"].as_array().unwrap().len();
    assert_eq!(lines.iter().filter(|l| l.starts_with("UTXO #")).count(), n_utxos, "{lines:?}");
    let sats = by_rpc[0]["balance"].as_u64().unwrap();
    let coins = format!("{}.{:08}", sats / 100_000_000, sats % 100_000_000);
    let coins = coins.trim_end_matches('0').trim_end_matches('.');
    assert_eq!(lines.last().unwrap(), &format!("Balance: {coins} XTN"), "{lines:?}");

    ferrum.stop();
}
