//! End-to-end with the real client: Debian's Electrum wallet (headless daemon) synchronises a
//! watch-only wallet through ferrum, over TCP and over SSL with a self-signed certificate,
//! against a real Bitcoin Core in regtest. Electrum verifies every confirmed transaction with a
//! merkle proof against its own header chain and recomputes every status hash; the test then
//! requires its balance and history to agree with the node, through a new block and a reorg.
//! The same wallet also runs against a real Bitcoin SV node without `-txindex`, where ferrum
//! serves confirmed transactions the node cannot look up by txid.

use ferrum_testkit as common;

use std::collections::BTreeMap;
use std::time::Duration;

use bitcoin::{Address, Transaction};
use common::client::{scripthash, Client};
use common::electrum::{electrum_available, ElectrumWallet};
use common::nodes::{pay, sats, BitcoinCore, BitcoinSv, ChainView, Coin, TestKey};
use common::process::FerrumProcess;
use serde_json::json;

const FEE: u64 = 10_000;
const WAIT: Duration = Duration::from_secs(90);

fn spend(coins: &[Coin], outputs: Vec<bitcoin::TxOut>, change: &Address) -> Transaction {
    common::nodes::spend(coins, outputs, change, FEE)
}

/// What the node says the wallet's addresses hold and did: (total balance incl. mempool,
/// txid → height with 0 for the mempool), from ferrum's answers checked against scantxoutset.
fn expected(core: &BitcoinCore, ferrum: &mut Client, addresses: &[Address]) -> (i64, BTreeMap<String, i64>) {
    let mut total = 0i64;
    let mut history = BTreeMap::new();
    for addr in addresses {
        let script = addr.script_pubkey();
        let sh = scripthash(script.as_bytes());
        let bal = ferrum.ok("blockchain.scripthash.get_balance", json!([sh]));
        let confirmed: u64 = core.scan(&script).iter().map(|u| u.3).sum();
        assert_eq!(bal["confirmed"].as_u64(), Some(confirmed), "confirmed balance of {addr} vs scantxoutset");
        total += confirmed as i64 + bal["unconfirmed"].as_i64().unwrap();
        for e in ferrum.ok("blockchain.scripthash.get_history", json!([sh])).as_array().unwrap() {
            history.insert(e["tx_hash"].as_str().unwrap().to_string(), e["height"].as_i64().unwrap().max(0));
        }
    }
    (total, history)
}

fn assert_wallet_agrees(
    wallet: &ElectrumWallet,
    core: &BitcoinCore,
    ferrum: &mut Client,
    addresses: &[Address],
    height: u64,
) {
    wallet.wait_synchronized_at(Some(height), WAIT).unwrap();
    assert_wallet_shows(wallet, expected(core, ferrum, addresses), height);
}

/// Waits until the wallet's balance and history are `(total, history)`, with every confirmed
/// transaction SPV-verified, and no server error seen.
fn assert_wallet_shows(wallet: &ElectrumWallet, (total, history): (i64, BTreeMap<String, i64>), height: u64) {
    // Electrum may still be fetching proofs for a moment after reporting the new height.
    let start = std::time::Instant::now();
    loop {
        let bal = wallet.balance().unwrap();
        let entries = wallet.history().unwrap();
        let got: BTreeMap<String, i64> = entries.iter().map(|e| (e.txid.clone(), e.height.max(0))).collect();
        let unverified = wallet.unverified().unwrap();
        let verified = entries.iter().filter(|e| e.height > 0).all(|e| e.is_spv_verified());
        if bal.total() == total && got == history && unverified.is_empty() && verified {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "Electrum disagrees at height {height}: balance {bal:?} vs {total}, history {got:?} vs {history:?}, unverified {unverified:?}\n{}",
            wallet.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(wallet.server_errors().is_empty(), "Electrum saw server errors: {:?}", wallet.server_errors());
}

#[test]
fn the_electrum_wallet_syncs_and_verifies_through_ferrum() {
    if !electrum_available() {
        return;
    }
    let Some(core) = BitcoinCore::try_start() else { return };
    let (k1, k2, k3) = (TestKey::new(1), TestKey::new(2), TestKey::new(3));
    let miner = k1.p2wpkh();
    core.generate_to(110, &miner.to_string());
    let mut coinbases = core.coins(&k1, &miner.script_pubkey());

    // The wallet's addresses: k2's three kinds. Several confirmed payments, a spend between
    // them, then one payment left in the mempool.
    let wallet_addrs = vec![k2.p2wpkh(), k2.p2tr(), k2.p2pkh()];
    let fund = spend(
        &[coinbases.remove(0)],
        vec![
            pay(&wallet_addrs[0], 300_000_000),
            pay(&wallet_addrs[1], 200_000_000),
            pay(&wallet_addrs[2], 100_000_000),
        ],
        &miner,
    );
    core.send(&fund);
    core.generate_to(1, &miner.to_string());
    let c0 = Coin::of(&fund, 0, &k2);
    let internal = spend(&[c0], vec![pay(&k3.p2wpkh(), 50_000_000)], &wallet_addrs[1]);
    core.send(&internal);
    core.generate_to(2, &miner.to_string());
    let pending = spend(&[coinbases.remove(0)], vec![pay(&wallet_addrs[0], 70_000_000)], &miner);
    core.send(&pending);

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::client::self_signed_cert(dir.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let url = core.url();
    let (mut f, ports) = FerrumProcess::start_serving(
        &dir.path().join("db"),
        &["tcp", "ssl"],
        &[("DAEMON_URL", &url), ("NET", "regtest"), ("SSL_CERTFILE", &cert), ("SSL_KEYFILE", &key)],
    );
    let height = core.height();
    f.wait_for_tip(height, None, WAIT);
    f.wait_port(ports["tcp"], WAIT);
    let mut ferrum = Client::tcp(ports["tcp"]);
    ferrum.version(json!("1.4"));
    // The mempool mirror has the pending payment before the wallet looks.
    let sh0 = scripthash(wallet_addrs[0].script_pubkey().as_bytes());
    let start = std::time::Instant::now();
    while ferrum.ok("blockchain.scripthash.get_mempool", json!([sh0])).as_array().unwrap().is_empty() {
        assert!(start.elapsed() < WAIT, "the pending tx never reached ferrum's mempool\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }

    let addr_strings: Vec<String> = wallet_addrs.iter().map(|a| a.to_string()).collect();
    let tcp_dir = dir.path().join("electrum-tcp");
    let wallet = ElectrumWallet::start(&tcp_dir, ports["tcp"], false).unwrap();
    wallet.restore_watch_only(&addr_strings).unwrap();
    wallet.load_wallet().unwrap();
    assert_wallet_agrees(&wallet, &core, &mut ferrum, &wallet_addrs, height);
    let hist = wallet.history().unwrap();
    assert_eq!(hist.len(), 3, "fund, internal spend, pending: {hist:?}");
    assert!(hist.iter().any(|e| e.txid == pending.compute_txid().to_string() && e.height == 0));

    // A new block confirms the pending payment.
    core.generate_to(1, &miner.to_string());
    let height = core.height();
    f.wait_for_tip(height, None, WAIT);
    assert_wallet_agrees(&wallet, &core, &mut ferrum, &wallet_addrs, height);
    assert!(wallet.history().unwrap().iter().all(|e| e.height > 0), "everything confirmed now");

    // A reorg: the last two blocks are replaced by three others; the payment they confirmed goes
    // back to the mempool (Core resubmits it) and is then mined again in the new branch.
    let tip = core.best_hash();
    let fork_from = core.block_hash(height - 1);
    core.call("invalidateblock", json!([fork_from]));
    let other = k3.p2tr().to_string();
    core.generate_to(1, &other);
    let mid = core.height();
    f.wait_for_tip(mid, None, WAIT);
    assert_wallet_agrees(&wallet, &core, &mut ferrum, &wallet_addrs, mid);
    core.generate_to(2, &other);
    let height = core.height();
    assert!(height > mid);
    f.wait_for_tip(height, None, WAIT);
    assert_ne!(core.best_hash(), tip);
    assert_wallet_agrees(&wallet, &core, &mut ferrum, &wallet_addrs, height);

    // The same wallet over SSL (self-signed certificate, pinned on first use).
    f.wait_port(ports["ssl"], WAIT);
    let ssl_dir = dir.path().join("electrum-ssl");
    let ssl_wallet = ElectrumWallet::start(&ssl_dir, ports["ssl"], true).unwrap();
    ssl_wallet.restore_watch_only(&addr_strings).unwrap();
    ssl_wallet.load_wallet().unwrap();
    assert_wallet_agrees(&ssl_wallet, &core, &mut ferrum, &wallet_addrs, height);
    assert!(ssl_wallet.pinned_cert().is_some(), "Electrum pinned ferrum's certificate");
    assert_eq!(ssl_wallet.balance().unwrap(), wallet.balance().unwrap());
}

/// What the Bitcoin SV node says the wallet's addresses hold and did: (total balance including
/// the mempool, txid → height with 0 for the mempool), from its blocks and its mempool (the
/// test's mempool transactions only pay these addresses).
fn expected_on_sv(sv: &BitcoinSv, addresses: &[String]) -> (i64, BTreeMap<String, i64>) {
    let view = ChainView::read(sv);
    let scripts: Vec<bitcoin::ScriptBuf> =
        addresses.iter().map(|a| a.parse::<Address<_>>().unwrap().assume_checked().script_pubkey()).collect();
    let mut total = 0i64;
    let mut history = BTreeMap::new();
    for script in &scripts {
        let state = view.state(script);
        total += state.balance() as i64;
        history.extend(state.history.iter().map(|(t, h)| (t.clone(), *h as i64)));
    }
    for txid in sv.mempool() {
        let tx = sv.call("getrawtransaction", json!([txid, true]));
        for out in tx["vout"].as_array().unwrap() {
            let hex = out["scriptPubKey"]["hex"].as_str().unwrap();
            if scripts.iter().any(|s| hex::encode(s.as_bytes()) == hex) {
                total += sats(&out["value"]) as i64;
                history.insert(txid.clone(), 0);
            }
        }
    }
    (total, history)
}

fn assert_wallet_agrees_on_sv(wallet: &ElectrumWallet, sv: &BitcoinSv, addresses: &[String], height: u64) {
    wallet.wait_synchronized_at(Some(height), WAIT).unwrap();
    assert_wallet_shows(wallet, expected_on_sv(sv, addresses), height);
}

#[test]
fn the_electrum_wallet_syncs_and_verifies_through_ferrum_on_a_bitcoin_sv_node() {
    if !electrum_available() {
        return;
    }
    // No -txindex: every confirmed transaction whose outputs are all spent must come out of its
    // block, since this node answers getrawtransaction by txid only for unspent ones.
    let Some(sv) = BitcoinSv::try_start_with(&["-txindex=0"]) else { return };
    let miner = sv.new_address();
    sv.generate_to(110, &miner);
    let addrs: Vec<String> = (0..3).map(|_| sv.new_address()).collect();
    let mut last = String::new();
    for (i, a) in addrs.iter().enumerate() {
        last = sv.send_to(a, 100_000_000 * (i as u64 + 1));
    }
    sv.generate_to(1, &miner);
    // The wallet's coins move between its addresses: the last payment is spent entirely.
    sv.spend_all_outputs(&last, &addrs[0], 20_000);
    sv.send_to(&addrs[0], 123_456_789);
    sv.generate_to(2, &miner);
    sv.send_to(&addrs[1], 7_000_000);

    let dir = tempfile::tempdir().unwrap();
    let url = sv.url();
    let (mut f, ports) = FerrumProcess::start_serving(
        &dir.path().join("db"),
        &["tcp"],
        &[("DAEMON_URL", &url), ("COIN", "BitcoinSV"), ("NET", "regtest")],
    );
    let height = sv.height();
    f.wait_for_tip(height, None, WAIT);
    f.wait_port(ports["tcp"], WAIT);
    let mut ferrum = Client::tcp(ports["tcp"]);
    ferrum.version(json!("1.4"));
    let sh = scripthash(addrs[1].parse::<Address<_>>().unwrap().assume_checked().script_pubkey().as_bytes());
    let start = std::time::Instant::now();
    while ferrum.ok("blockchain.scripthash.get_mempool", json!([sh])).as_array().unwrap().is_empty() {
        assert!(start.elapsed() < WAIT, "the pending tx never reached ferrum's mempool\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }

    let wallet = ElectrumWallet::start(&dir.path().join("electrum"), ports["tcp"], false).unwrap();
    wallet.restore_watch_only(&addrs).unwrap();
    wallet.load_wallet().unwrap();
    assert_wallet_agrees_on_sv(&wallet, &sv, &addrs, height);
    // Electrum fetched every transaction of the history; some of them this node cannot find by
    // txid (all their outputs are spent), so ferrum must have taken them out of their blocks.
    let (_, history) = expected_on_sv(&sv, &addrs);
    let unfindable = history.keys().filter(|t| sv.rpc("getrawtransaction", json!([t, false])).is_err()).count();
    assert!(unfindable > 0, "the test needs transactions the node cannot look up: {history:?}");

    // A new block confirms the pending payment.
    sv.generate_to(1, &miner);
    let height = sv.height();
    f.wait_for_tip(height, None, WAIT);
    assert_wallet_agrees_on_sv(&wallet, &sv, &addrs, height);
    assert!(wallet.history().unwrap().iter().all(|e| e.is_spv_verified()), "everything verified now");
    f.stop();
}
