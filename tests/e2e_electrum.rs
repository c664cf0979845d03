//! End-to-end with the real client: Debian's Electrum wallet (headless daemon) synchronises a
//! watch-only wallet through ferrum, over TCP and over SSL with a self-signed certificate,
//! against a real Bitcoin Core in regtest. Electrum verifies every confirmed transaction with a
//! merkle proof against its own header chain and recomputes every status hash; the test then
//! requires its balance and history to agree with the node, through a new block and a reorg.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bitcoin::{Address, Transaction};
use common::client::{scripthash, Client};
use common::electrum::{electrum_available, ElectrumWallet};
use common::ferrum::FerrumProcess;
use common::nodes::{pay, sign_tx, BitcoinCore, Coin, TestKey};
use serde_json::json;

const FEE: u64 = 10_000;
const WAIT: Duration = Duration::from_secs(90);

fn spend(coins: &[Coin], mut outputs: Vec<bitcoin::TxOut>, change: &Address) -> Transaction {
    let total: u64 = coins.iter().map(|c| c.txout.value.to_sat()).sum();
    let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
    outputs.push(pay(change, total - paid - FEE));
    sign_tx(coins, outputs)
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
    let (total, history) = expected(core, ferrum, addresses);
    // Electrum may still be fetching proofs for a moment after reporting the new height.
    let start = std::time::Instant::now();
    loop {
        let bal = wallet.balance().unwrap();
        let got: BTreeMap<String, i64> =
            wallet.history().unwrap().into_iter().map(|e| (e.txid, e.height.max(0))).collect();
        let unverified = wallet.unverified().unwrap();
        if bal.total() == total && got == history && unverified.is_empty() {
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
