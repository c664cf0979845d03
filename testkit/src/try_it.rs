//! `contrib/try.sh`: ferrum serving a small private regtest chain, for anyone to see it work
//! before committing a mainnet node. A Bitcoin Core node (from the test cache) mines a chain
//! that pays a few wallet addresses (confirmed payments, a spend between them, one payment
//! still in the mempool); ferrum indexes it and serves Electrum clients; the Electrum wallet,
//! pointed at it, shows the balance and history.

use std::path::PathBuf;
use std::time::Duration;

use bitcoin::Address;

use crate::nodes::{pay, spend, BitcoinCore, Coin, TestKey};
use crate::process::FerrumProcess;

const FEE: u64 = 10_000;

pub struct Demo {
    // Dropped in this order: ferrum before its node and directory.
    pub ferrum: FerrumProcess,
    pub core: BitcoinCore,
    pub dir: tempfile::TempDir,
    pub tcp_port: u16,
    /// The wallet's addresses (one key's P2WPKH, P2TR and P2PKH).
    pub addresses: Vec<Address>,
    miner: Address,
    key: TestKey,
}

impl Demo {
    /// Starts the node, mines and pays, starts ferrum and waits until it serves.
    pub fn start() -> Demo {
        Demo::start_with(&[])
    }

    /// `start`, with more settings for ferrum (e.g. METRICS_ADDR).
    pub fn start_with(extra_env: &[(&str, &str)]) -> Demo {
        let core = BitcoinCore::start();
        let (miner_key, key) = (TestKey::new(1), TestKey::new(2));
        let miner = miner_key.p2wpkh();
        core.generate_to(110, &miner.to_string());
        let mut coinbases = core.coins(&miner_key, &miner.script_pubkey());
        let addresses = vec![key.p2wpkh(), key.p2tr(), key.p2pkh()];
        let fund = spend(
            &[coinbases.remove(0)],
            vec![pay(&addresses[0], 150_000_000), pay(&addresses[1], 80_000_000), pay(&addresses[2], 25_000_000)],
            &miner,
            FEE,
        );
        core.send(&fund);
        core.generate_to(1, &miner.to_string());
        // The wallet spends one of its coins to another of its addresses and to a stranger.
        let internal =
            spend(&[Coin::of(&fund, 0, &key)], vec![pay(&TestKey::new(3).p2wpkh(), 40_000_000)], &addresses[1], FEE);
        core.send(&internal);
        core.generate_to(3, &miner.to_string());
        // And one payment waits in the mempool.
        let pending = spend(&[coinbases.remove(0)], vec![pay(&addresses[0], 12_345_678)], &miner, FEE);
        core.send(&pending);

        let dir = tempfile::Builder::new().prefix("ferrum-try-").tempdir().expect("tempdir");
        let url = core.url();
        let mut env = vec![("DAEMON_URL", url.as_str()), ("NET", "regtest"), ("DAEMON_POLL_INTERVAL_MEMPOOL", "1000")];
        env.extend_from_slice(extra_env);
        let (mut ferrum, ports) = FerrumProcess::start_serving(&dir.path().join("db"), &["tcp"], &env);
        ferrum.wait_for_tip(core.height(), None, Duration::from_secs(120));
        ferrum.wait_port(ports["tcp"], Duration::from_secs(60));
        Demo { ferrum, core, tcp_port: ports["tcp"], dir, addresses, miner, key: miner_key }
    }

    /// Mines a block paying the wallet a little more (the wallet sees it at once).
    pub fn mine_payment(&self) -> String {
        let coins = self.core.coins(&self.key, &self.miner.script_pubkey());
        let coin = coins.into_iter().max_by_key(|c| c.txout.value).expect("the miner has coins");
        let tx = spend(&[coin], vec![pay(&self.addresses[2], 1_000_000)], &self.miner, FEE);
        self.core.send(&tx);
        self.core.generate_to(1, &self.miner.to_string());
        tx.compute_txid().to_string()
    }

    /// Where the Electrum wallet should keep its files.
    pub fn wallet_dir(&self) -> PathBuf {
        self.dir.path().join("electrum")
    }

    /// What to type to see it.
    pub fn instructions(&self) -> String {
        let addrs: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        let dir = self.wallet_dir();
        let server = format!("127.0.0.1:{}:t", self.tcp_port);
        let wallet = format!("--regtest --dir {}", dir.display());
        format!(
            "ferrum is serving a private regtest chain at height {height} on tcp://127.0.0.1:{port}
(the node's RPC is {rpc}; ferrum's admin RPC is on port {admin}).

The wallet's addresses: {addrs}

See them in the Electrum wallet (Debian package electrum), as a watch-only wallet:
  electrum restore \"{addrs}\" {wallet} --offline
  electrum gui {wallet} --oneserver --server {server}
or without a window:
  electrum daemon -d {wallet} --oneserver --server {server}
  electrum load_wallet {wallet}
  electrum getbalance {wallet}          # one payment is still unconfirmed
  electrum onchain_history {wallet}
  electrum stop {wallet}

Ask ferrum directly:
  ferrum-rpc --port {admin} query {first}
  ferrum-rpc --port {admin} getinfo

A block paying the wallet is mined every minute. Ctrl-C stops the node and ferrum and deletes
everything.",
            height = self.core.height(),
            port = self.tcp_port,
            rpc = self.core.url(),
            admin = self.ferrum.admin_port,
            addrs = addrs.join(" "),
            first = addrs[0],
        )
    }
}

/// Wallets at work, for `duration`: `sessions` clients subscribing to the demo's addresses and
/// asking for their history, balance and outputs in a loop (with the odd bad request), while a
/// block paying the wallet is mined every `block_every`. Returns the requests answered.
pub fn load(demo: &Demo, sessions: usize, duration: Duration, block_every: Duration) -> u64 {
    use crate::client::{scripthash, Client};
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    let answered = AtomicU64::new(0);
    let hashes: Vec<String> = demo.addresses.iter().map(|a| scripthash(a.script_pubkey().as_bytes())).collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for k in 0..sessions {
            let (hashes, answered) = (&hashes, &answered);
            scope.spawn(move || {
                // Staggered, so the sessions' requests spread over each second.
                std::thread::sleep(Duration::from_millis(1000 * k as u64 / sessions as u64));
                let mut c = Client::tcp(demo.tcp_port);
                c.version(json!("1.4"));
                c.ok("blockchain.headers.subscribe", json!([]));
                for h in hashes {
                    c.ok("blockchain.scripthash.subscribe", json!([h]));
                }
                let mut i = k;
                while started.elapsed() < duration {
                    let h = &hashes[i % hashes.len()];
                    let (method, params) = match i % 7 {
                        0..=2 => ("blockchain.scripthash.get_history", json!([h])),
                        3..=4 => ("blockchain.scripthash.get_balance", json!([h])),
                        5 => ("blockchain.scripthash.listunspent", json!([h])),
                        _ if i % 50 == 6 => ("blockchain.block.header", json!([1_000_000])),
                        _ => ("blockchain.block.header", json!([i % 100])),
                    };
                    let _ = c.call(method, params);
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    // A wallet asks about once a second, well under the cost model's decay, so
                    // the picture shows serving rather than throttling.
                    std::thread::sleep(Duration::from_millis(1000));
                }
            });
        }
        let mut next_block = Instant::now() + block_every;
        while started.elapsed() < duration {
            if Instant::now() >= next_block {
                demo.mine_payment();
                next_block += block_every;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    answered.load(Ordering::Relaxed)
}
