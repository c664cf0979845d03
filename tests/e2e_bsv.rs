//! End-to-end: ferrum (`COIN=BitcoinSV`) against a real Bitcoin SV node in regtest, using the
//! node's wallet. ferrum's `query` answers are compared with the node's chain (every block read
//! back) and with the wallet's `listunspent`, after the initial sync, while following, and after
//! a reorg that moves transactions to other heights.

use ferrum_testkit as common;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::{Address, Network, ScriptBuf};
use common::client::{scripthash, Client};
use common::nodes::{assert_caught_up, assert_ferrum_matches, sats, scripts_of, BitcoinSv, ChainView};
use common::process::FerrumProcess;
use serde_json::json;

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn parse(address: &str) -> Address {
    Address::from_str(address).unwrap().require_network(Network::Regtest).unwrap()
}

/// The wallet's confirmed UTXOs for `address` must equal those of the chain view. Only valid
/// while the mempool is empty (listunspent hides outputs spent by unconfirmed wallet txs).
fn assert_wallet_matches_view(sv: &BitcoinSv, view: &ChainView, address: &Address) {
    let list = sv.call("listunspent", json!([1, 9_999_999, [address.to_string()]]));
    let tip = view.tip_height;
    let wallet: BTreeSet<(String, u32, u64, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let height = tip + 1 - u["confirmations"].as_u64().unwrap();
            (u["txid"].as_str().unwrap().to_string(), u["vout"].as_u64().unwrap() as u32, height, sats(&u["amount"]))
        })
        .collect();
    assert_eq!(wallet, view.state(&address.script_pubkey()).utxos, "listunspent vs blocks for {address}");
}

/// Mines the starting chain and pays several fresh wallet addresses. Returns (miner, payees).
fn build_initial_chain(sv: &BitcoinSv) -> (Address, Vec<Address>) {
    let miner = sv.new_address();
    sv.generate_to(110, &miner);
    let payees: Vec<String> = (0..5).map(|_| sv.new_address()).collect();
    for (i, a) in payees.iter().enumerate() {
        sv.send_to(a, 100_000_000 * (i as u64 + 1));
    }
    sv.send_to(&payees[0], 12_345_678); // a second payment to the same address
    sv.generate_to(1, &miner);
    sv.send_to(&payees[1], 1_000_000);
    sv.send_to(&payees[2], 2_000_000);
    sv.generate_to(1, &miner);
    assert!(sv.mempool().is_empty());
    let payees: Vec<Address> = payees.iter().map(|a| parse(a)).collect();
    let view = ChainView::read(sv);
    for a in &payees {
        assert!(!view.state(&a.script_pubkey()).history.is_empty(), "{a} was paid");
        assert_wallet_matches_view(sv, &view, a);
    }
    eprintln!("initial chain: height {}, {} txs", view.tip_height, view.positions.len());
    (parse(&miner), payees)
}

#[test]
fn e2e_bsv_sync_follow_reorg() {
    let Some(sv) = BitcoinSv::try_start() else {
        return;
    };
    let (miner, mut payees) = build_initial_chain(&sv);
    let mut addresses = payees.clone();
    addresses.push(miner.clone());
    let miner = miner.to_string();
    // `generate` pays the coinbase to a bare P2PK script (no address): Electrum clients find such
    // outputs by script hash only.
    let hash = sv.call("generate", json!([1]))[0].as_str().unwrap().to_string();
    let block = sv.call("getblock", json!([hash, 2]));
    let p2pk = block["tx"][0]["vout"][0]["scriptPubKey"]["hex"].as_str().unwrap();
    let p2pk = ScriptBuf::from_hex(p2pk).unwrap();
    assert!(p2pk.is_p2pk(), "coinbase of `generate` is P2PK: {p2pk:?}");

    let tmp = tempfile::Builder::new().prefix("ferrum-e2e-bsv-").tempdir().unwrap();
    let url = sv.url();
    let (mut ferrum, ports) = FerrumProcess::start_serving(
        &tmp.path().join("db"),
        &["tcp"],
        &[("DAEMON_URL", &url), ("COIN", "BitcoinSV"), ("NET", "regtest"), ("CACHE_MB", "64")],
    );
    // `wallet_check`: also compare with listunspent; not after the reorg, where the wallet still
    // counts the inputs of orphaned txs that did not make it back into the mempool as spent.
    let sync = |ferrum: &mut FerrumProcess, addresses: &[Address], label: &str, wallet_check| {
        let view = ChainView::read(&sv);
        let info = ferrum.wait_for_tip(view.tip_height, Some(&view.tip_hash), SYNC_TIMEOUT);
        eprintln!("[{label}] ferrum at {} {}", view.tip_height, info["db_tip"]);
        let mut scripts = scripts_of(addresses);
        scripts.push((p2pk.clone(), None));
        assert_ferrum_matches(ferrum, &view, &scripts);
        assert_caught_up(ferrum, view.tip_height);
        if wallet_check && sv.mempool().is_empty() {
            // The miner's immature coinbases are not in listunspent; payees have none.
            for a in &addresses[..addresses.len() - 1] {
                assert_wallet_matches_view(&sv, &view, a);
            }
        }
        view
    };

    // 1. Initial sync.
    sync(&mut ferrum, &addresses, "initial sync", true);

    // The Electrum protocol on a node without fee estimation, and its mempool.
    ferrum.wait_port(ports["tcp"], SYNC_TIMEOUT);
    let mut client = Client::tcp(ports["tcp"]);
    assert_eq!(client.version(json!(["1.4", "1.6"])), "1.6");
    assert_eq!(client.ok("blockchain.estimatefee", json!([2])), json!(-1), "BSV cannot estimate fees");
    assert!(client.ok("mempool.get_info", json!([]))["minrelaytxfee"].is_number());
    let sh = scripthash(payees[3].script_pubkey().as_bytes());
    let paid = sv.send_to(&payees[3].to_string(), 3_300_000);
    let start = std::time::Instant::now();
    let mempool = loop {
        let m = client.ok("blockchain.scripthash.get_mempool", json!([sh]));
        if m.as_array().is_some_and(|a| !a.is_empty()) {
            break m;
        }
        assert!(start.elapsed() < SYNC_TIMEOUT, "the payment never reached ferrum's mempool\n{}", ferrum.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    };
    let entry = sv.call("getmempoolentry", json!([paid]));
    assert_eq!(mempool[0]["tx_hash"], json!(paid));
    assert_eq!(mempool[0]["fee"].as_u64(), Some(sats(&entry["fee"])), "fee from the prevouts");
    assert_eq!(client.ok("blockchain.scripthash.get_balance", json!([sh]))["unconfirmed"], json!(3_300_000));

    // 2. Follow: a new payee, more payments (the wallet may also spend payee outputs as inputs).
    let fresh = sv.new_address();
    payees.push(parse(&fresh));
    addresses.insert(0, parse(&fresh));
    sv.send_to(&fresh, 250_000_000);
    sv.send_to(&payees[3].to_string(), 3_000_000);
    sv.generate_to(2, &miner);
    sv.send_to(&payees[4].to_string(), 4_000_000);
    sv.generate_to(1, &miner);
    sync(&mut ferrum, &addresses, "follow", true);

    // 3. Reorg: orphan the last two blocks (holding X and Y) and mine a longer branch to another
    //    address; X and Y come back from the mempool at other heights.
    let x = sv.send_to(&payees[0].to_string(), 5_000_000);
    sv.generate_to(1, &miner);
    let y = sv.send_to(&payees[1].to_string(), 6_000_000);
    sv.generate_to(1, &miner);
    let before = sync(&mut ferrum, &addresses, "before reorg", true);
    let orphaned = sv.block_hash(before.tip_height - 1);
    sv.call("invalidateblock", json!([orphaned]));
    assert_eq!(sv.height(), before.tip_height - 2);
    eprintln!("mempool after invalidateblock: {:?}", sv.mempool());
    let other = sv.new_address();
    sv.generate_to(3, &other);
    assert_eq!(sv.height(), before.tip_height + 1);
    let after = sync(&mut ferrum, &addresses, "after reorg", false);
    for txid in [&x, &y] {
        eprintln!(
            "{txid}: before at {:?}, after at {:?}",
            before.positions.get(txid.as_str()),
            after.positions.get(txid.as_str())
        );
    }

    // 4. SIGKILL, a block while ferrum is down, restart.
    ferrum.kill9();
    sv.send_to(&payees[2].to_string(), 7_000_000);
    sv.generate_to(1, &miner);
    ferrum.spawn();
    sync(&mut ferrum, &addresses, "restart after kill -9", false);

    // 5. A clean stop, a block with a payment while ferrum is down, restart.
    ferrum.stop();
    sv.send_to(&payees[3].to_string(), 8_000_000);
    sv.generate_to(1, &miner);
    ferrum.spawn();
    sync(&mut ferrum, &addresses, "restart after stop", false);

    ferrum.stop();
}
