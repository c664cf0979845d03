//! End to end: ferrum and ElectrumX 2.0.0 (PyPI `e-x`) on one regtest Bitcoin Core node find,
//! check and list each other. Names map to loopback addresses through a private /etc/hosts in
//! a mount namespace of this test's thread (the machine's file is untouched): ElectrumX, like
//! any public server, refuses IP literals of private ranges but takes names.

use ferrum_testkit as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::client::Client;
use common::electrumx_server::{electrumx_server, ElectrumX, CORE_FLAGS};
use common::nodes::{BitcoinCore, TestKey};
use common::process::{free_port, private_etc_hosts, FerrumProcess};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn ferrum_and_electrumx_discover_and_list_each_other() {
    let required = std::env::var("FERRUM_REQUIRE_NODES").is_ok_and(|v| v == "1");
    if electrumx_server().is_none() {
        return;
    }
    if let Err(e) =
        private_etc_hosts(&[("ferrum.peer.test", Ipv4Addr::new(127, 0, 0, 2)), ("ex.peer.test", Ipv4Addr::LOCALHOST)])
    {
        assert!(!required, "a private /etc/hosts needs root: {e}");
        eprintln!("skipped: a private /etc/hosts needs root ({e})");
        return;
    }
    let Some(core) = BitcoinCore::try_start_with(&CORE_FLAGS) else { return };
    core.generate_to(110, &TestKey::new(1).p2wpkh().to_string());
    let tmp = tempfile::tempdir().unwrap();
    // ElectrumX listens everywhere, so its outgoing connections leave from 127.0.0.1: the
    // address its name has, which is what ferrum checks an add_peer against.
    let mut ex = ElectrumX::start_listening(
        &core.url(),
        tmp.path(),
        "",
        &[("PEER_DISCOVERY", "on"), ("PEER_ANNOUNCE", "1"), ("REPORT_SERVICES", "tcp://ex.peer.test:$TCP_PORT")],
    );
    ex.wait_for_height(core.height(), WAIT);

    let (port, admin) = (free_port(), free_port());
    let services = format!("tcp://127.0.0.2:{port},rpc://127.0.0.1:{admin}");
    let report = format!("tcp://ferrum.peer.test:{port}");
    let seed = format!("ex.peer.test t{}", ex.tcp_port);
    let url = core.url();
    let mut f = FerrumProcess::start(
        &tmp.path().join("ferrum"),
        &[
            ("DAEMON_URL", &url),
            ("NET", "regtest"),
            ("SERVICES", &services),
            ("REPORT_SERVICES", &report),
            ("PEER_SEEDS", &seed),
        ],
    );
    f.admin_port = admin;
    f.wait_for_tip(core.height(), None, WAIT);

    // ferrum checks ElectrumX and announces itself; ElectrumX checks ferrum back.
    let ferrum_addr = SocketAddr::from(([127, 0, 0, 2], port));
    // Clients are served a moment after the index has caught up.
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&ferrum_addr, Duration::from_secs(1)).is_err() {
        assert!(start.elapsed() < WAIT, "ferrum never served {ferrum_addr}\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ferrum_lists = || {
        let mut c = Client::tcp_to(ferrum_addr);
        c.version(json!("1.6"));
        c.ok("server.peers.subscribe", json!([])).as_array().cloned().unwrap_or_default()
    };
    let ex_lists = || ex.ok("server.peers.subscribe", json!([])).as_array().cloned().unwrap_or_default();
    let lists = |l: &[Value], host: &str| l.iter().any(|p| p[1] == host);
    let start = Instant::now();
    while !(lists(&ferrum_lists(), "ex.peer.test") && lists(&ex_lists(), "ferrum.peer.test")) {
        assert!(
            start.elapsed() < WAIT,
            "ferrum lists {:?}, ElectrumX lists {:?}\nferrum peers {:?}\n{}\n{}",
            ferrum_lists(),
            ex_lists(),
            f.call("peers", json!({})),
            f.log_tail(),
            ex.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ours = ferrum_lists().into_iter().find(|p| p[1] == "ex.peer.test").unwrap();
    let theirs = ex_lists().into_iter().find(|p| p[1] == "ferrum.peer.test").unwrap();
    eprintln!("ferrum lists {ours}; ElectrumX lists {theirs}");
    assert_eq!(ours, json!(["127.0.0.1", "ex.peer.test", [ours[2][0].clone(), format!("t{}", ex.tcp_port)]]));
    assert!(theirs[2].as_array().unwrap().contains(&json!(format!("t{port}"))), "{theirs}");
    // ElectrumX's own admin client reads ferrum's peer table.
    let rows = f.call("peers", json!({})).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["host"] == "ex.peer.test" && r["status"] == "good"), "{rows}");
    if let Some(rpc) = common::electrumx::electrumx_rpc() {
        let run = common::electrumx::run(&rpc, admin, &["peers"]);
        assert!(run.ok && run.stdout.contains("ex.peer.test") && run.stdout.contains("good"), "{run:?}");
    }
}
