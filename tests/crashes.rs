//! Failing machines: ferrum killed with SIGKILL at random moments, over and over, while it syncs,
//! serves wallets, takes new blocks and unwinds reorgs. After the last restart its index must
//! equal a fresh sync's row for row, and its answers a fresh server's, byte for byte.
//!
//! `cargo test --test crashes` runs FERRUM_KILL_POINTS (default 24) kills; the long run:
//!   FERRUM_KILL_POINTS=150 cargo test --release --test crashes -- --nocapture

use ferrum_testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tempfile::TempDir;

use common::bench::env_usize;
use common::chain::{ChainBuilder, ChainOptions};
use common::client::{scripthash, Client};
use common::process::{private_tmpfs, resize_tmpfs, tmpfs_used, FerrumProcess};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

// BULK_FLUSH_ROWS=1: every flush of the initial sync goes in as table files (`store::bulk`), so
// kills land in ingestions too; once serving, flushes are batches.
const ENV: [(&str, &str); 5] =
    [("CACHE_MB", "1"), ("REORG_LIMIT", "20"), ("NET", "regtest"), ("COST_HARD_LIMIT", "0"), ("BULK_FLUSH_ROWS", "1")];

fn serve(db: &Path, daemon: &ScriptedDaemon) -> (FerrumProcess, u16) {
    let url = daemon.url();
    let mut env: Vec<(&str, &str)> = ENV.to_vec();
    env.extend([("DAEMON_URL", url.as_str()), ("COST_SOFT_LIMIT", "0")]);
    let (ferrum, ports) = FerrumProcess::start_serving(db, &["tcp"], &env);
    (ferrum, ports["tcp"])
}

/// What a wallet would ask of the scripts the chain touches, and the headers.
fn answers(port: u16, chain: &ChainBuilder) -> Vec<String> {
    let mut c = Client::tcp(port);
    c.version(json!("1.4"));
    let mut scripts: Vec<String> = chain.hot_scripts().iter().map(|s| scripthash(s.as_bytes())).collect();
    scripts.extend(chain.utxos().iter().step_by(97).map(|u| scripthash(u.script.as_bytes())));
    let mut out = Vec::new();
    for sh in &scripts {
        for method in ["get_history", "get_balance", "listunspent"] {
            let v = c.ok(&format!("blockchain.scripthash.{method}"), json!([sh]));
            out.push(format!("{method} {sh}: {v}"));
        }
    }
    for h in (0..=chain.height()).step_by(17) {
        out.push(format!("header {h}: {}", c.ok("blockchain.block.header", json!([h, chain.height()]))));
    }
    out.push(format!("tip: {}", c.ok("blockchain.headers.subscribe", json!([]))));
    out
}

type Row = (String, Vec<u8>, Vec<u8>);

/// A fresh sync of `chain` by a ferrum never killed: its index and its answers.
fn reference(chain: &ChainBuilder) -> (Vec<Row>, Vec<String>) {
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let (mut ferrum, port) = serve(&db, &daemon);
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(120));
    ferrum.wait_port(port, Duration::from_secs(60));
    let answers = answers(port, chain);
    ferrum.stop();
    (ferrum::store::dump_index(&db).expect("dump"), answers)
}

/// 300 blocks of 5–25 transactions, and a scripted daemon serving them.
fn chain_and_daemon(seed: u64) -> (ChainBuilder, ScriptedDaemon) {
    let mut chain =
        ChainBuilder::with_options(seed, ChainOptions { min_txs: 5, max_txs: 25, ..ChainOptions::default() });
    chain.add_blocks(300);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    (chain, daemon)
}

#[test]
fn killed_at_many_moments_it_recovers_to_identical_answers() {
    let points = env_usize("FERRUM_KILL_POINTS", 24);
    let (mut chain, daemon) = chain_and_daemon(1806);
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let (mut ferrum, port) = serve(&db, &daemon);
    let mut rng = StdRng::seed_from_u64(0x18_4111);
    let mut log = Vec::new();
    let started = Instant::now();
    for point in 0..points {
        // The first third: a long initial sync from a slow node, killed in the middle, with the
        // chain growing. Then: serving, new blocks, reorgs, kills at any moment.
        let syncing = point < points / 3;
        if syncing {
            chain.add_blocks(40);
            daemon.set_response_delay(Duration::from_millis(2));
        } else {
            match rng.gen_range(0..4) {
                0 => {
                    chain.add_blocks(rng.gen_range(1..4));
                }
                1 => {
                    let mut branch = chain.fork(chain.height() - rng.gen_range(1..4));
                    branch.add_blocks(rng.gen_range(2..6));
                    chain = branch;
                }
                _ => {}
            }
            // A node that answers slowly at times, so kills land inside fetches and flushes.
            daemon.set_response_delay(Duration::from_millis(rng.gen_range(0..6)));
        }
        daemon.set_chain(chain.blocks().to_vec());
        let serving = !syncing && rng.gen_bool(0.5);
        if serving {
            ferrum.wait_port(port, Duration::from_secs(60));
            let mut c = Client::tcp(port);
            c.version(json!("1.4"));
            let sh = scripthash(chain.hot_scripts()[point % chain.hot_scripts().len()].as_bytes());
            c.ok("blockchain.scripthash.subscribe", json!([sh]));
            c.ok("blockchain.scripthash.get_history", json!([sh]));
        }
        if syncing {
            // Somewhere in the blocks it has not got yet.
            let from = ferrum.getinfo().and_then(|i| i["db_height"].as_u64()).unwrap_or(0);
            let target = rng.gen_range(from + 1..u64::from(chain.height()));
            let deadline = Instant::now() + Duration::from_secs(60);
            while ferrum.getinfo().and_then(|i| i["sync_height"].as_u64()).is_none_or(|h| h < target) {
                assert!(Instant::now() < deadline, "no progress to {target}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..if syncing { 30 } else { 120 })));
        let info = ferrum.getinfo().unwrap_or(Value::Null);
        ferrum.kill9();
        let behind = info["sync_height"].as_u64().is_none_or(|h| h < u64::from(chain.height()));
        let what = if serving {
            "serving"
        } else if behind {
            "syncing"
        } else {
            "idle"
        };
        log.push(format!("{what}:{}/{}", info["db_height"], info["sync_height"]));
        ferrum.spawn();
    }
    eprintln!(
        "{points} kill points in {:.0} s (what:db_height/sync_height): {}",
        started.elapsed().as_secs_f64(),
        log.join(" ")
    );
    let mid_sync = log.iter().filter(|l| l.starts_with("syncing:") && !l.contains("null")).count();
    assert!(mid_sync >= points / 4, "only {mid_sync} kills in the middle of a sync");
    assert!(
        log.iter().any(|l| l.starts_with("syncing:")
            && !l.contains("null")
            && l.split_once(':').is_some_and(|(_, h)| h.split_once('/').is_some_and(|(d, s)| d != s))),
        "no kill between flushes"
    );
    daemon.set_response_delay(Duration::ZERO);
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(120));
    ferrum.wait_port(port, Duration::from_secs(60));
    let got = answers(port, &chain);
    ferrum.stop();
    let rows = ferrum::store::dump_index(&db).expect("dump");

    let (want_rows, want) = reference(&chain);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            let at = g.bytes().zip(w.bytes()).take_while(|(a, b)| a == b).count();
            let around = |s: &str| s.get(at.saturating_sub(80)..(at + 80).min(s.len())).unwrap_or("").to_string();
            panic!(
                "an answer differs after {points} kills: {:.80}…\n  got  …{}…\n  want …{}…",
                w,
                around(g),
                around(w)
            );
        }
    }
    assert!(
        rows == want_rows,
        "the index differs from a fresh sync after {points} kills ({} vs {} rows)",
        rows.len(),
        want_rows.len()
    );
}

fn log_count(dir: &Path, needle: &str) -> usize {
    std::fs::read_to_string(dir.join("db.log")).unwrap_or_default().matches(needle).count()
}

fn wait_log(ferrum: &mut FerrumProcess, dir: &Path, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_count(dir, needle) < n {
        if let Some(status) = ferrum.exited() {
            panic!("ferrum exited ({status}) instead of waiting for space:\n{}", ferrum.log_tail());
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{}", ferrum.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The disk fills up, during the initial sync and again at the tip (a private tmpfs, resized
/// from the test): ferrum says so plainly, writes nothing, keeps serving wallets from its last
/// flush, and goes on by itself once there is room, ending with the same index as a fresh sync.
#[test]
fn a_full_disk_is_waited_out_during_sync_and_at_the_tip() {
    let (mut chain, daemon) = chain_and_daemon(1807);
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    private_tmpfs(&db, 1 << 20).expect("a private tmpfs (the tests run as root)");
    let (mut ferrum, port) = serve(&db, &daemon);
    const FULL: &str = "DB_DIRECTORY is full";

    // During the initial sync: the first flush finds no room, and ferrum waits.
    wait_log(&mut ferrum, dir.path(), FULL, 1);
    std::thread::sleep(Duration::from_secs(1));
    assert!(ferrum.exited().is_none(), "ferrum gave up:\n{}", ferrum.log_tail());
    assert_eq!(ferrum.getinfo().map(|i| i["db_height"].clone()), Some(Value::Null), "nothing may be written");
    resize_tmpfs(&db, 1 << 30).expect("grow the tmpfs");
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(120));
    ferrum.wait_port(port, Duration::from_secs(60));

    // At the tip, with a wallet subscribed: the disk fills up again before new blocks.
    let mut c = Client::tcp(port);
    c.version(json!("1.4"));
    let sh = scripthash(chain.hot_scripts()[0].as_bytes());
    c.ok("blockchain.scripthash.subscribe", json!([sh]));
    let before = c.ok("blockchain.scripthash.get_balance", json!([sh]));
    let tip_before = chain.height();
    resize_tmpfs(&db, tmpfs_used(&db) + (1 << 20)).expect("shrink the tmpfs");
    chain.add_blocks(3);
    daemon.set_chain(chain.blocks().to_vec());
    wait_log(&mut ferrum, dir.path(), FULL, 2);
    // Still serving, from the last flushed block.
    assert_eq!(c.ok("blockchain.scripthash.get_balance", json!([sh])), before);
    let header = c.ok("blockchain.headers.subscribe", json!([]));
    assert_eq!(header["height"], json!(tip_before), "{header}");
    resize_tmpfs(&db, 1 << 30).expect("grow the tmpfs");
    let moved = c.wait_notification("blockchain.headers.subscribe", Duration::from_secs(60), |p| {
        p[0]["height"].as_u64() == Some(u64::from(chain.height()))
    });
    assert!(moved.is_some(), "the wallet was not told of the new tip");
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(60));
    assert!(log_count(dir.path(), "has room again") >= 2);
    ferrum.stop();
    let rows = ferrum::store::dump_index(&db).expect("dump");
    let (want_rows, _) = reference(&chain);
    assert!(rows == want_rows, "the index differs from a fresh sync after the disk filled up");
}

/// Every session must hear of the new tip, and of each subscribed script the block changed.
fn all_told(sessions: &mut [(Client, usize)], tip: u32, changed: &[bool], what: &str) {
    for (i, (c, k)) in sessions.iter_mut().enumerate() {
        let header = c.wait_notification("blockchain.headers.subscribe", Duration::from_secs(60), |p| {
            p[0]["height"].as_u64() == Some(u64::from(tip))
        });
        assert!(header.is_some(), "{what}: session {i} was not told of height {tip}");
        if changed[*k] {
            let status = c.wait_notification("blockchain.scripthash.subscribe", Duration::from_secs(30), |_| true);
            assert!(status.is_some(), "{what}: session {i} was not told its script changed");
        }
    }
}

fn histories(port: u16, scripts: &[String]) -> Vec<Value> {
    let mut c = Client::tcp(port);
    c.version(json!("1.4"));
    scripts.iter().map(|sh| c.ok("blockchain.scripthash.get_history", json!([sh]))).collect()
}

/// 1,000 wallets subscribed when the daemon dies in the middle of handing over a block, and
/// when the one left stalls: ferrum fails over or waits, loses nothing, and tells every
/// session once the chain moves on.
#[test]
fn the_daemon_dies_or_stalls_under_a_thousand_sessions() {
    let mut chain = ChainBuilder::new(1808);
    chain.add_blocks(40);
    let d1 = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let d2 = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let urls = format!("{},{}", d1.url(), d2.url());
    let mut env: Vec<(&str, &str)> = ENV.to_vec();
    env.extend([("DAEMON_URL", urls.as_str()), ("COST_SOFT_LIMIT", "0"), ("MAX_SESSIONS", "1200")]);
    let (mut ferrum, ports) = FerrumProcess::start_serving(&dir.path().join("db"), &["tcp"], &env);
    let port = ports["tcp"];
    ferrum.wait_for_tip(u64::from(chain.height()), None, Duration::from_secs(60));
    ferrum.wait_port(port, Duration::from_secs(60));
    let scripts: Vec<String> = chain.hot_scripts().iter().map(|s| scripthash(s.as_bytes())).collect();
    let mut sessions: Vec<(Client, usize)> = (0..1000)
        .map(|i| {
            let mut c = Client::tcp(port);
            c.version(json!("1.4"));
            c.ok("blockchain.headers.subscribe", json!([]));
            c.ok("blockchain.scripthash.subscribe", json!([scripts[i % scripts.len()]]));
            (c, i % scripts.len())
        })
        .collect();

    // The first daemon dies as it is asked for the new block: no answer, then nothing.
    let before = histories(port, &scripts);
    chain.add_block();
    d1.die_after_getblocks(0);
    d2.set_chain(chain.blocks().to_vec());
    d1.set_chain(chain.blocks().to_vec());
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(60));
    let changed: Vec<bool> = histories(port, &scripts).iter().zip(&before).map(|(a, b)| a != b).collect();
    all_told(&mut sessions, chain.height(), &changed, "after the daemon died");

    // The one left stalls for 3 s on every answer while a block is due.
    let before = histories(port, &scripts);
    d2.set_response_delay(Duration::from_secs(3));
    chain.add_block();
    d2.set_chain(chain.blocks().to_vec());
    std::thread::sleep(Duration::from_secs(4));
    d2.set_response_delay(Duration::ZERO);
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(60));
    let changed: Vec<bool> = histories(port, &scripts).iter().zip(&before).map(|(a, b)| a != b).collect();
    all_told(&mut sessions, chain.height(), &changed, "after the daemon stalled");
    assert!(ferrum.exited().is_none());
    let info = ferrum.getinfo().expect("getinfo");
    eprintln!("sessions {}, daemon failovers {}", info["sessions"], info["daemon_failovers"]);
    ferrum.stop();
}
