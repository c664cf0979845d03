//! New blocks announced over ZMQ: found through `getzmqnotifications` (the scripted daemon
//! lists a publisher this test runs), noticed at once although the long poll is off and
//! polling is slow; and when the publisher goes quiet, polling still brings every block.

use ferrum_testkit as common;

use std::time::{Duration, Instant};

use zeromq::{Socket, SocketSend};

use common::chain::ChainBuilder;
use common::process::{free_port, FerrumProcess};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const WAIT: Duration = Duration::from_secs(60);

/// A PUB socket at `address`, on its own runtime (the test itself is synchronous).
struct Publisher {
    rt: tokio::runtime::Runtime,
    socket: Option<zeromq::PubSocket>,
}

impl Publisher {
    fn bind(address: &str) -> Publisher {
        // Multi-threaded: the socket accepts and serves its subscriber on the runtime between
        // our calls.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut socket = zeromq::PubSocket::new();
        rt.block_on(socket.bind(address)).expect("bind the publisher");
        Publisher { rt, socket: Some(socket) }
    }

    /// Announces a block as the node does: topic, hash (display order), sequence number.
    fn hashblock(&mut self, hash: &bitcoin::BlockHash, seq: u32) {
        let mut m = zeromq::ZmqMessage::from(b"hashblock".to_vec());
        let mut h = bitcoin::hashes::Hash::to_byte_array(*hash);
        h.reverse();
        m.push_back(h.to_vec().into());
        m.push_back(seq.to_le_bytes().to_vec().into());
        let socket = self.socket.as_mut().expect("publishing");
        self.rt.block_on(socket.send(m)).expect("publish");
    }
}

fn wait_tip(f: &mut FerrumProcess, chain: &ChainBuilder) -> Duration {
    let start = Instant::now();
    f.wait_for_tip(chain.height() as u64, Some(&chain.tip_hash().to_string()), WAIT);
    start.elapsed()
}

#[test]
fn blocks_announced_over_zmq_are_noticed_at_once_and_polling_covers_a_quiet_publisher() {
    let mut chain = ChainBuilder::new(1201);
    chain.add_blocks(20);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    // No long poll, and polling only every 4 s: what is noticed sooner came over ZMQ.
    daemon.disable_method("waitforblockheight");
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let mut publisher = Publisher::bind(&address);
    daemon.set_zmq(&[("pubhashblock", &address), ("pubrawtx", "tcp://127.0.0.1:1")]);
    let dir = tempfile::tempdir().unwrap();
    let url = daemon.url();
    let mut f = FerrumProcess::start(
        &dir.path().join("db"),
        &[("DAEMON_URL", &url), ("NET", "regtest"), ("DAEMON_POLL_INTERVAL_BLOCKS", "4000")],
    );
    wait_tip(&mut f, &chain);
    let log = || std::fs::read_to_string(&f.log_path).unwrap_or_default();
    let start = Instant::now();
    while !log().contains("listening to the node's ZMQ hashblock announcements") {
        assert!(start.elapsed() < WAIT, "never subscribed\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the subscription time to reach the publisher (ZMQ drops what a subscriber was not
    // yet subscribed to), then announce three blocks one after the other.
    std::thread::sleep(Duration::from_millis(500));
    let mut announced = Vec::new();
    for i in 0..3 {
        chain.add_blocks(1);
        daemon.set_chain(chain.blocks().to_vec());
        publisher.hashblock(&chain.tip_hash(), i);
        announced.push(wait_tip(&mut f, &chain));
    }
    eprintln!("announced blocks indexed after {announced:?}");
    assert!(announced.iter().all(|d| *d < Duration::from_millis(2500)), "not noticed at once: {announced:?}");

    // The publisher goes quiet (gone): polling still brings the next blocks.
    publisher.socket = None;
    let mut polled = Vec::new();
    for _ in 0..2 {
        chain.add_blocks(1);
        daemon.set_chain(chain.blocks().to_vec());
        polled.push(wait_tip(&mut f, &chain));
    }
    eprintln!("unannounced blocks indexed after {polled:?}");
    assert!(polled.iter().all(|d| *d < Duration::from_secs(10)), "{polled:?}");
    f.stop();
}

#[test]
fn daemon_zmq_off_or_a_node_without_zmq_uses_the_long_poll() {
    let mut chain = ChainBuilder::new(1202);
    chain.add_blocks(10);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let url = daemon.url();
    let mut f = FerrumProcess::start(&dir.path().join("db"), &[("DAEMON_URL", &url), ("NET", "regtest")]);
    wait_tip(&mut f, &chain);
    let start = Instant::now();
    let log = || std::fs::read_to_string(&f.log_path).unwrap_or_default();
    while !log().contains("publishes no ZMQ block announcements") {
        assert!(start.elapsed() < WAIT, "{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    chain.add_blocks(1);
    daemon.set_chain(chain.blocks().to_vec());
    let took = wait_tip(&mut f, &chain);
    assert!(took < Duration::from_millis(2500), "the long poll noticed it in {took:?}");
    f.stop();
}

/// The Bitcoin SV node publishing `hashblock` (`-zmqpubhashblock`): ferrum finds the address
/// through `getzmqnotifications` (or DAEMON_ZMQ where the node lacks the call) and indexes a
/// mined block within milliseconds.
#[test]
fn the_bitcoin_sv_node_announces_blocks_over_zmq() {
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let flag = format!("-zmqpubhashblock={address}");
    let Some(sv) = common::nodes::BitcoinSv::try_start_with(&[flag.as_str()]) else { return };
    let miner = sv.new_address();
    announces_blocks_over_zmq(&sv, "BitcoinSV", &address, &miner);
}

/// The same with Bitcoin Core (built with ZMQ by contrib/install-test-deps.sh):
/// `getzmqnotifications` names the publisher, and every mined block is heard over ZMQ and
/// indexed at once.
#[test]
fn bitcoin_core_announces_blocks_over_zmq() {
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let flag = format!("-zmqpubhashblock={address}");
    let Some(core) = common::nodes::BitcoinCore::try_start_with(&[flag.as_str()]) else { return };
    let miner = common::nodes::TestKey::new(1).p2wpkh().to_string();
    announces_blocks_over_zmq(&core, "Bitcoin", &address, &miner);
}

fn announces_blocks_over_zmq(node: &common::nodes::Node, coin: &str, address: &str, miner: &str) {
    node.generate_to(3, miner);
    let asks = node.rpc("getzmqnotifications", serde_json::json!([])).is_ok();
    let dir = tempfile::tempdir().unwrap();
    let url = node.url();
    let mut env = vec![
        ("DAEMON_URL", url.as_str()),
        ("COIN", coin),
        ("NET", "regtest"),
        ("DAEMON_POLL_INTERVAL_BLOCKS", "4000"),
        ("LOG_LEVEL", "info,ferrum::sync::tip=debug"),
    ];
    if !asks {
        env.push(("DAEMON_ZMQ", address));
    }
    let mut f = FerrumProcess::start(&dir.path().join("db"), &env);
    f.wait_for_tip(node.height(), None, WAIT);
    let log_path = f.log_path.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let start = Instant::now();
    while !log().contains(&format!("listening to the node's ZMQ hashblock announcements at {address}")) {
        assert!(start.elapsed() < WAIT, "never subscribed (getzmqnotifications: {asks})\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for _ in 0..3 {
        let hash = node.generate_to(1, miner)[0].clone();
        let start = Instant::now();
        f.wait_for_tip(node.height(), Some(&hash), WAIT);
        took.push(start.elapsed());
    }
    eprintln!("{coin} node (getzmqnotifications: {asks}): mined blocks indexed after {took:?}");
    let heard = log().matches("the node announced a block over ZMQ").count();
    assert!(heard >= 3, "the node's own ZMQ announcements reached ferrum {heard} times\n{}", f.log_tail());
    // Polling is every 4 s: ZMQ (or Core's long poll beside it) brings a block well before.
    assert!(took.iter().all(|t| *t < Duration::from_secs(3)), "blocks noticed late: {took:?}\n{}", f.log_tail());
    f.stop();
}
