//! Peer discovery on loopback (../shared/docs/peers.md §6): scripted fake peers at 127.0.0.N
//! (every answer, delay and error settable), a fake SOCKS5 proxy, and ferrum instances finding
//! each other. Names map to addresses through PEER_RESOLVE; PEER_TIME_SCALE shortens hours to
//! seconds.

use ferrum_testkit as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::serialize;
use serde_json::{json, Value};
use tempfile::TempDir;

use common::chain::ChainBuilder;
use common::client::Client;
use common::fake_peer::FakePeer;
use common::fake_socks::FakeSocks;
use common::process::{free_port, FerrumProcess};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const WAIT: Duration = Duration::from_secs(60);
const REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
/// 3 h become 10.8 s, the 300 s back-off 0.3 s, add_peer's 10 minutes 0.6 s.
const SCALE: &str = "0.001";

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

struct Net {
    chain: ChainBuilder,
    daemon: ScriptedDaemon,
    headers: Vec<String>,
}

fn net(seed: u64) -> Net {
    let mut chain = ChainBuilder::new(seed);
    chain.add_blocks(30);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let headers = chain.blocks().iter().map(|b| hex::encode(serialize(&b.header))).collect();
    Net { chain, daemon, headers }
}

/// A fake peer that passes every check as `host`, on `ip` (plain TCP unless `tls`).
fn good_fake(n: &Net, at: Ipv4Addr, host: &str, tls: bool) -> FakePeer {
    let f = FakePeer::start(at, tls);
    let port = f.port();
    let (key, other) = if tls { ("ssl_port", "tcp_port") } else { ("tcp_port", "ssl_port") };
    let headers = n.headers.clone();
    f.set(|s| {
        s.features = json!({"hosts": {host: {key: port, other: null}}, "genesis_hash": REGTEST_GENESIS,
            "hash_function": "sha256", "server_version": "FakePeer 1.0", "protocol_min": "1.4",
            "protocol_max": "1.6", "pruning": null});
        s.headers = headers;
    });
    f
}

/// ferrum serving TCP on `at`:port, reported as `name`; admin on 127.0.0.1.
struct Ferrum {
    f: FerrumProcess,
    addr: SocketAddr,
    _dir: TempDir,
}

fn ferrum(n: &Net, at: Ipv4Addr, name: &str, env: &[(&str, &str)]) -> Ferrum {
    let dir = TempDir::new().unwrap();
    let (port, admin) = (free_port(), free_port());
    let services = format!("tcp://{at}:{port},rpc://127.0.0.1:{admin}");
    let report = format!("tcp://{name}:{port}");
    let url = n.daemon.url();
    let mut e: Vec<(&str, &str)> = vec![
        ("DAEMON_URL", &url),
        ("NET", "regtest"),
        ("SERVICES", &services),
        ("REPORT_SERVICES", &report),
        ("PEER_TIME_SCALE", SCALE),
        ("LOG_LEVEL", "info,ferrum::peers=debug"),
    ];
    e.extend_from_slice(env);
    let mut f = FerrumProcess::start(&dir.path().join("db"), &e);
    f.admin_port = admin;
    f.wait_for_tip(n.chain.height() as u64, None, WAIT);
    Ferrum { f, addr: SocketAddr::from((at, port)), _dir: dir }
}

impl Ferrum {
    fn client(&self) -> Client {
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                break;
            }
            assert!(start.elapsed() < WAIT, "ferrum never served {}\n{}", self.addr, self.f.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut c = Client::tcp_to(self.addr);
        c.version(json!("1.6"));
        c
    }

    fn peers(&self) -> Vec<Value> {
        self.f.call("peers", json!({})).map(|v| v.as_array().cloned().unwrap_or_default()).unwrap_or_default()
    }

    fn status(&self, host: &str) -> Option<String> {
        self.peers().iter().find(|p| p["host"] == host).map(|p| p["status"].as_str().unwrap_or("").to_string())
    }

    /// Waits until the admin `peers` shows `host` with `status`.
    fn wait_status(&self, host: &str, status: &str) {
        let start = Instant::now();
        while self.status(host).as_deref() != Some(status) {
            assert!(start.elapsed() < WAIT, "{host} never became {status}: {:?}\n{}", self.peers(), self.f.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn listed(&self) -> Vec<Value> {
        self.client().ok("server.peers.subscribe", json!([])).as_array().cloned().unwrap()
    }
}

fn resolve(pairs: &[(&str, Ipv4Addr)]) -> String {
    pairs.iter().map(|(n, ip)| format!("{n}={ip}")).collect::<Vec<_>>().join(",")
}

#[test]
fn a_good_peer_is_checked_ssl_first_listed_with_explicit_ports_and_told_about_us() {
    let n = net(1401);
    let ssl = good_fake(&n, ip(5), "good.peer.test", true);
    let tcp = good_fake(&n, ip(5), "good.peer.test", false);
    // Both fakes describe the same server: its features name both ports.
    for f in [&ssl, &tcp] {
        let (s, t) = (ssl.port(), tcp.port());
        f.set(|p| p.features["hosts"] = json!({"good.peer.test": {"ssl_port": s, "tcp_port": t}}));
    }
    // It lists three servers ferrum does not know: at most two are taken.
    tcp.set(|p| {
        p.peers = json!([
            ["1.2.3.4", "new-a.example", ["v1.4", "t50001"]],
            ["1.2.3.5", "new-b.example", ["v1.4", "s"]],
            ["1.2.3.6", "new-c.example", ["v1.4", "t50001"]]
        ])
    });
    ssl.set(|p| {
        p.errors.insert("server.version".into(), (-32000, "try the other port".into()));
    });
    let seeds = format!("good.peer.test s{} t{}", ssl.port(), tcp.port());
    let names = resolve(&[("good.peer.test", ip(5)), ("ferrum.peer.test", ip(2))]);
    let fe = ferrum(&n, ip(2), "ferrum.peer.test", &[("PEER_SEEDS", &seeds), ("PEER_RESOLVE", &names)]);
    fe.wait_status("good.peer.test", "good");

    // SSL first (it answered an error: a failed attempt, not bad), then TCP.
    assert_eq!(ssl.methods().first().map(String::as_str), Some("server.version"));
    let order: Vec<String> = tcp.methods().into_iter().take(6).collect();
    assert_eq!(
        order,
        [
            "server.version",
            "blockchain.headers.subscribe",
            "blockchain.block.header",
            "server.features",
            "server.peers.subscribe",
            "server.add_peer"
        ],
        "the check's order"
    );
    // ferrum told it about itself, with its features, from its own address.
    let added = tcp.wait_request("server.add_peer", WAIT).expect("add_peer");
    assert_eq!(added[0]["hosts"]["ferrum.peer.test"]["tcp_port"], fe.addr.port());
    assert_eq!(added[0]["genesis_hash"], REGTEST_GENESIS);
    assert_eq!(added[0]["hash_function"], "sha256");
    assert!(tcp.sources().iter().all(|s| s.ip() == ip(2)), "outgoing connections leave from our listen address");
    // The connection is closed after the check.
    let start = Instant::now();
    while tcp.closed() < 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "ferrum kept the peer's connection open");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Listed to wallets: [ip, host, [v, s, t]] with explicit ports.
    let want = json!(["127.0.0.5", "good.peer.test", ["v1.6", format!("s{}", ssl.port()), format!("t{}", tcp.port())]]);
    let start = Instant::now();
    while !fe.listed().contains(&want) {
        assert!(start.elapsed() < WAIT, "not listed: {:?}", fe.listed());
        std::thread::sleep(Duration::from_millis(100));
    }
    // ferrum checks itself too, which puts it in its own list.
    fe.wait_status("ferrum.peer.test", "good");
    assert!(fe.listed().iter().any(|p| p[1] == "ferrum.peer.test" && p[2][1] == format!("t{}", fe.addr.port())));
    // From the peer's list of three unknown servers, two were taken.
    let learned: Vec<Value> = fe.peers().into_iter().filter(|p| p["source"] == "good.peer.test").collect();
    assert_eq!(learned.len(), 2, "{learned:?}");
    // Private, loopback, multicast and localhost entries are never stored.
    assert!(learned.iter().all(|p| p["host"].as_str().unwrap().starts_with("new-")), "{learned:?}");
    // The admin view: ElectrumX's columns; getinfo's counts.
    let row = fe.peers().into_iter().find(|p| p["host"] == "good.peer.test").unwrap();
    assert_eq!(row["ip_addr"], "127.0.0.5");
    assert_eq!(row["features"]["hosts"]["good.peer.test"]["tcp_port"], tcp.port());
    assert!(row["last_good"].as_f64().is_some() && row["try_count"] == 0 && row["source"] == "peer");
    let info = fe.f.getinfo().unwrap();
    assert!(info["peers"]["good"].as_u64().unwrap() >= 2, "{}", info["peers"]);
    // A peer that already lists us with our ports is not told again.
    let before = tcp.methods().iter().filter(|m| *m == "server.add_peer").count();
    let me = json!(["127.0.0.2", "ferrum.peer.test", ["v1.7", format!("t{}", fe.addr.port())]]);
    tcp.set(|p| p.peers = json!([me]));
    fe.f.call("add_peer", json!({"real_name": seeds})).unwrap();
    let start = Instant::now();
    let checks = || tcp.methods().iter().filter(|m| *m == "server.peers.subscribe").count();
    let seen = checks();
    while checks() == seen {
        assert!(start.elapsed() < WAIT, "admin add_peer did not trigger a check");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tcp.methods().iter().filter(|m| *m == "server.add_peer").count(), before, "told again");
}

/// A fake peer's name, address, what is wrong with it, and what ferrum must make of it.
type Case = (&'static str, u8, Box<dyn Fn(&FakePeer)>, &'static str);

#[test]
fn liars_and_broken_peers_are_bad_or_failed_and_ferrum_keeps_serving() {
    let n = net(1402);
    let tip = n.chain.height() as u64;
    // (name, address, what is wrong, bad or failed)
    let cases: Vec<Case> = vec![
        ("genesis.peer.test", 10, Box::new(|f| f.set(|p| p.features["genesis_hash"] = json!("00".repeat(32)))), "bad"),
        (
            "hosts.peer.test",
            11,
            Box::new(|f| f.set(|p| p.features["hosts"] = json!({"other.test": {"tcp_port": 1}}))),
            "bad",
        ),
        ("hoststype.peer.test", 12, Box::new(|f| f.set(|p| p.features["hosts"] = json!(5))), "bad"),
        ("version.peer.test", 13, Box::new(|f| f.set(|p| p.version = json!("ElectrumX"))), "bad"),
        ("ahead.peer.test", 14, Box::new(move |f| f.set(|p| p.height = Some(tip + 6))), "bad"),
        (
            "fork.peer.test",
            15,
            Box::new(move |f| {
                f.set(|p| {
                    let at = (tip - 10) as usize;
                    p.headers[at] = "00".repeat(80);
                })
            }),
            "bad",
        ),
        ("list.peer.test", 16, Box::new(|f| f.set(|p| p.peers = json!({"not": "a list"}))), "bad"),
        (
            "garbage.peer.test",
            17,
            Box::new(|f| {
                f.set(|p| {
                    p.raw.insert("server.features".into(), "}{ not json".into());
                })
            }),
            "bad",
        ),
        (
            "error.peer.test",
            18,
            Box::new(|f| {
                f.set(|p| {
                    p.errors.insert("server.features".into(), (-32000, "no".into()));
                })
            }),
            "failed",
        ),
        (
            "silent.peer.test",
            19,
            Box::new(|f| {
                f.set(|p| {
                    p.silent.insert("blockchain.headers.subscribe".into());
                })
            }),
            "failed",
        ),
        // Within the limits: a tip 5 ahead, and a split inside the last 10 blocks, pass.
        (
            "near.peer.test",
            20,
            Box::new(move |f| {
                f.set(|p| {
                    p.height = Some(tip + 5);
                    let last = p.headers.len() - 1;
                    p.headers[last] = "11".repeat(80);
                })
            }),
            "good",
        ),
    ];
    let fakes: Vec<FakePeer> = cases
        .iter()
        .map(|(name, at, defect, _)| {
            let f = good_fake(&n, ip(*at), name, false);
            defect(&f);
            f
        })
        .collect();
    // A tip ahead needs headers up to it.
    for f in &fakes {
        f.set(|p| {
            while (p.headers.len() as u64) <= p.height.unwrap_or(0) {
                p.headers.push("22".repeat(80));
            }
        });
    }
    let seeds: Vec<String> = cases.iter().zip(&fakes).map(|((name, ..), f)| format!("{name} t{}", f.port())).collect();
    let names: Vec<(&str, Ipv4Addr)> = cases.iter().map(|(name, at, ..)| (*name, ip(*at))).collect();
    let fe =
        ferrum(&n, ip(3), "ferrum3.peer.test", &[("PEER_SEEDS", &seeds.join(",")), ("PEER_RESOLVE", &resolve(&names))]);
    for (name, _, _, want) in &cases {
        match *want {
            "failed" => {
                let start = Instant::now();
                while fe.peers().iter().find(|p| p["host"] == *name).is_none_or(|p| p["try_count"].as_u64() < Some(1)) {
                    assert!(start.elapsed() < WAIT, "{name} never failed: {:?}", fe.peers());
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert_eq!(fe.status(name).as_deref().unwrap_or("never"), "never", "{name} failed, not bad");
            }
            status => fe.wait_status(name, status),
        }
    }
    let listed = fe.listed();
    for (name, _, _, want) in &cases {
        assert_eq!(listed.iter().any(|p| p[1] == *name), *want == "good", "{name} in {listed:?}");
    }
    // Still serving.
    assert_eq!(fe.client().ok("server.ping", json!([])), Value::Null);
}

#[test]
fn add_peer_needs_discovery_the_callers_address_and_patience() {
    let n = net(1403);
    let seven = good_fake(&n, ip(7), "seven.peer.test", false);
    let names = resolve(&[("seven.peer.test", ip(7)), ("eight.peer.test", ip(8))]);
    let features = |host: &str, port: u16| {
        json!([{"hosts": {host: {"tcp_port": port}}, "genesis_hash": REGTEST_GENESIS, "hash_function": "sha256",
                "server_version": "FakePeer 1.0", "protocol_min": "1.4", "protocol_max": "1.6", "pruning": null}])
    };
    // Off: refused, nothing listed, nobody dialled (the seed is never contacted).
    let seeds = format!("seven.peer.test t{}", seven.port());
    let off = ferrum(
        &n,
        ip(4),
        "off.peer.test",
        &[("PEER_DISCOVERY", "off"), ("PEER_SEEDS", &seeds), ("PEER_RESOLVE", &names)],
    );
    let mut c = off.client();
    assert_eq!(c.ok("server.add_peer", features("seven.peer.test", seven.port())), json!(false));
    assert_eq!(c.ok("server.peers.subscribe", json!([])), json!([]));
    // Self: only our own identity, still nobody dialled.
    let me = ferrum(&n, ip(6), "self.peer.test", &[("PEER_DISCOVERY", "self"), ("PEER_SEEDS", &seeds)]);
    assert_eq!(
        me.listed(),
        vec![json!(["self.peer.test", "self.peer.test", ["v1.7", format!("t{}", me.addr.port())]])]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(seven.connections(), 0, "discovery off or self dials nobody");
    drop((off, me));

    let on = ferrum(&n, ip(9), "on.peer.test", &[("PEER_RESOLVE", &names)]);
    on.client();
    let from = |src: Ipv4Addr| {
        let mut c = Client::tcp_from_to(on.addr, src);
        c.version(json!("1.6"));
        c
    };
    // A name that does not resolve to the caller: refused.
    assert_eq!(from(ip(7)).ok("server.add_peer", features("eight.peer.test", 50001)), json!(false));
    // Malformed: refused.
    assert_eq!(from(ip(7)).ok("server.add_peer", json!([{"no": "hosts"}])), json!(false));
    assert_eq!(from(ip(7)).ok("server.add_peer", json!([{"hosts": {"localhost": {"tcp_port": 1}}}])), json!(false));
    // The real one, once the domain's window passed: taken, checked, then listed.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(from(ip(7)).ok("server.add_peer", features("seven.peer.test", seven.port())), json!(true));
    // The same domain again at once: refused.
    assert_eq!(from(ip(7)).ok("server.add_peer", features("seven.peer.test", seven.port())), json!(false));
    on.wait_status("seven.peer.test", "good");
    assert!(on.listed().iter().any(|p| p[1] == "seven.peer.test"));
    assert_eq!(on.peers().iter().find(|p| p["host"] == "seven.peer.test").unwrap()["source"], "peer");
}

#[test]
fn onion_peers_go_through_the_proxy_by_name() {
    let n = net(1404);
    let onion = format!("{}.onion", "a".repeat(56));
    let hidden = good_fake(&n, ip(21), &onion, false);
    let socks = FakeSocks::start();
    socks.route(&onion, 50001, hidden.addr);
    let seeds = format!("{onion} t50001");
    hidden.set(|p| p.features["hosts"] = json!({onion.as_str(): {"tcp_port": 50001}}));
    let port = socks.port().to_string();
    let fe = ferrum(
        &n,
        ip(22),
        "tor.peer.test",
        &[("PEER_SEEDS", &seeds), ("TOR_PROXY_HOST", "127.0.0.1"), ("TOR_PROXY_PORT", &port)],
    );
    fe.wait_status(&onion, "good");
    let asked = socks.requests();
    assert!(asked.contains(&(3, onion.clone(), 50001)), "the name went to the proxy (ATYP 3), no local DNS: {asked:?}");
    assert!(asked.iter().any(|r| r.1 == "8.8.8.8" && r.2 == 53), "the proxy was found by its probe: {asked:?}");
    // Listed with the host first, as onion peers are.
    assert!(fe.listed().contains(&json!([onion, onion, ["v1.6", "t50001"]])));
}

#[test]
fn two_ferrums_find_each_other_and_remember_their_peers() {
    let n = net(1405);
    let names = resolve(&[("a.peer.test", ip(30)), ("b.peer.test", ip(31))]);
    let b = ferrum(&n, ip(31), "b.peer.test", &[("PEER_RESOLVE", &names)]);
    let seed = format!("b.peer.test t{}", b.addr.port());
    let mut a = ferrum(&n, ip(30), "a.peer.test", &[("PEER_RESOLVE", &names), ("PEER_SEEDS", &seed)]);
    b.client();
    a.wait_status("b.peer.test", "good");
    // A told B about itself; B checked A back and lists it.
    b.wait_status("a.peer.test", "good");
    let start = Instant::now();
    while !(a.listed().iter().any(|p| p[1] == "b.peer.test") && b.listed().iter().any(|p| p[1] == "a.peer.test")) {
        assert!(start.elapsed() < WAIT, "a {:?} b {:?}", a.listed(), b.listed());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Restarted without its seed, A still knows B (the table is saved in DB_DIRECTORY).
    a.f.stop();
    a.f.env.remove("PEER_SEEDS");
    a.f.spawn();
    a.f.wait_for_tip(n.chain.height() as u64, None, WAIT);
    let start = Instant::now();
    while !a.peers().iter().any(|p| p["host"] == "b.peer.test") {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", a.peers());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_entry_per_address_two_per_bucket_and_names_over_addresses() {
    let n = net(1406);
    let named = good_fake(&n, ip(41), "n41.peer.test", false);
    let twin = good_fake(&n, ip(41), "twin.peer.test", false);
    let others: Vec<FakePeer> = [(42, "n42.peer.test"), (43, "n43.peer.test"), (44, "n44.peer.test")]
        .iter()
        .map(|(i, h)| good_fake(&n, ip(*i), h, false))
        .collect();
    // The bare address of n41 answers as n41 does (its hosts name it by its address too).
    named.set(|p| {
        p.features["hosts"]["127.0.0.41"] = json!({"tcp_port": p.features["hosts"]["n41.peer.test"]["tcp_port"]})
    });
    let mut seeds = vec![format!("n41.peer.test t{}", named.port())];
    seeds.extend(others.iter().zip([42, 43, 44]).map(|(f, i)| format!("n{i}.peer.test t{}", f.port())));
    let names = resolve(&[
        ("n41.peer.test", ip(41)),
        ("twin.peer.test", ip(41)),
        ("n42.peer.test", ip(42)),
        ("n43.peer.test", ip(43)),
        ("n44.peer.test", ip(44)),
    ]);
    let fe = ferrum(
        &n,
        ip(40),
        "n40.peer.test",
        &[("PEER_SEEDS", &seeds.join(",")), ("PEER_RESOLVE", &names), ("PEER_ALLOW_PRIVATE", "1")],
    );
    for h in ["n41.peer.test", "n42.peer.test", "n43.peer.test", "n44.peer.test"] {
        fe.wait_status(h, "good");
    }
    // A second name at an address a good peer already has: refused.
    fe.f.call("add_peer", json!({"real_name": format!("twin.peer.test t{}", twin.port())})).unwrap();
    fe.wait_status("twin.peer.test", "bad");
    // Known by name, its bare address is not kept beside it.
    fe.f.call("add_peer", json!({"real_name": format!("127.0.0.41 t{}", named.port())})).unwrap();
    let start = Instant::now();
    while named.connections() < 2 || fe.peers().iter().any(|p| p["host"] == "127.0.0.41" && p["last_try"].is_null()) {
        assert!(start.elapsed() < WAIT, "the address was never checked: {:?}", fe.peers());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!fe.peers().iter().any(|p| p["host"] == "127.0.0.41"), "{:?}", fe.peers());
    // All of them share 127.0/16: wallets get at most two.
    let listed = fe.listed();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[test]
fn unreachable_peers_back_off_and_are_forgotten() {
    let n = net(1407);
    let closed = free_port();
    let seeds = format!("gone.peer.test t{closed}");
    let names = resolve(&[("gone.peer.test", ip(45))]);
    let fe = ferrum(&n, ip(46), "n46.peer.test", &[("PEER_SEEDS", &seeds), ("PEER_RESOLVE", &names)]);
    let row = || fe.peers().into_iter().find(|p| p["host"] == "gone.peer.test");
    let mut tries: Vec<(u64, f64)> = Vec::new();
    let start = Instant::now();
    // The seed enters the table once discovery starts (after catch-up); only then can it go.
    while row().is_none() {
        assert!(start.elapsed() < WAIT, "the seed never entered the table: {:?}", fe.peers());
        std::thread::sleep(Duration::from_millis(20));
    }
    while let Some(r) = row() {
        let (count, last) = (r["try_count"].as_u64().unwrap_or(0), r["last_try"].as_f64().unwrap_or(0.0));
        if count > 0 && tries.last().is_none_or(|t| t.0 != count) {
            tries.push((count, last));
        }
        assert!(start.elapsed() < WAIT, "never forgotten: {tries:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Forgotten after three failures; the waits double (0.6 s, then 1.2 s at PEER_TIME_SCALE).
    assert_eq!(tries.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2], "{tries:?}");
    let waited = tries[1].1 - tries[0].1;
    assert!((0.5..3.0).contains(&waited), "the second try came {waited:.2} s after the first");
}

#[test]
fn a_peer_that_moves_is_checked_on_its_new_ports() {
    let n = net(1408);
    let old = good_fake(&n, ip(47), "moving.peer.test", false);
    let names = resolve(&[("moving.peer.test", ip(47))]);
    let seeds = format!("moving.peer.test t{}", old.port());
    let fe = ferrum(&n, ip(48), "n48.peer.test", &[("PEER_SEEDS", &seeds), ("PEER_RESOLVE", &names)]);
    fe.wait_status("moving.peer.test", "good");
    drop(old);
    let new = good_fake(&n, ip(47), "moving.peer.test", false);
    fe.f.call("add_peer", json!({"real_name": format!("moving.peer.test t{}", new.port())})).unwrap();
    let start = Instant::now();
    let port = || {
        fe.peers()
            .into_iter()
            .find(|p| p["host"] == "moving.peer.test")
            .map(|p| p["features"]["hosts"]["moving.peer.test"]["tcp_port"].clone())
    };
    while port() != Some(json!(new.port())) {
        assert!(start.elapsed() < WAIT, "still {:?}", fe.peers());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fe.status("moving.peer.test").as_deref(), Some("good"));
}

#[test]
fn force_proxy_sends_every_peer_through_tor_and_tor_sessions_get_their_banner() {
    let n = net(1409);
    let clear = good_fake(&n, ip(24), "clear.peer.test", false);
    let socks = FakeSocks::start();
    socks.route("clear.peer.test", clear.port(), clear.addr);
    let dir = TempDir::new().unwrap();
    let banner = dir.path().join("tor-banner.txt");
    std::fs::write(&banner, "Welcome, onion visitor, to $SERVER_SUBVERSION").unwrap();
    let (seeds, port, banner) =
        (format!("clear.peer.test t{}", clear.port()), socks.port().to_string(), banner.display().to_string());
    let fe = ferrum(
        &n,
        ip(25),
        "n25.peer.test",
        &[
            ("PEER_SEEDS", &seeds),
            ("FORCE_PROXY", "1"),
            ("TOR_PROXY_HOST", "127.0.0.1"),
            ("TOR_PROXY_PORT", &port),
            ("TOR_BANNER_FILE", &banner),
        ],
    );
    fe.wait_status("clear.peer.test", "good");
    assert!(socks.requests().contains(&(3, "clear.peer.test".into(), clear.port())), "{:?}", socks.requests());
    assert!(clear.sources().iter().all(|s| s.ip() == Ipv4Addr::LOCALHOST), "only the proxy connected");
    // A session from the proxy's address came over Tor.
    let mut tor = Client::tcp_from_to(fe.addr, Ipv4Addr::LOCALHOST);
    tor.version(json!("1.6"));
    assert!(tor.ok("server.banner", json!([])).as_str().unwrap().starts_with("Welcome, onion visitor, to ferrum"));
    let mut direct = Client::tcp_from_to(fe.addr, ip(26));
    direct.version(json!("1.6"));
    assert!(!direct.ok("server.banner", json!([])).as_str().unwrap().contains("onion"));
}
