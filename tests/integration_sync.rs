//! Integration tests: the real `ferrum` binary syncing from a scripted bitcoind that serves
//! deterministic chains built in-process. Reorgs, daemon failures and crashes are compared
//! against fresh syncs row for row (`ferrum::store::dump_index`).
//!
//! Run with `cargo test --test integration_sync -- --test-threads=1`.

use ferrum_testkit as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Address, Block, Network, Script};
use common::chain::{ChainBuilder, ChainOptions, ScriptKind};
use common::dumps::{assert_same_index, dump, Row};
use common::process::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tempfile::TempDir;

// Syncs here take seconds; a generous bound still fails a hung test reasonably fast.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn small_opts() -> ChainOptions {
    ChainOptions { min_txs: 3, max_txs: 12, ..ChainOptions::default() }
}

/// Starts ferrum on `<dir>/db` against `urls` (comma-separated) with regtest defaults; `extra`
/// entries override the defaults.
fn start_ferrum(dir: &TempDir, urls: &str, extra: &[(&str, &str)]) -> FerrumProcess {
    let mut env: Vec<(&str, &str)> =
        vec![("DAEMON_URL", urls), ("COIN", "Bitcoin"), ("NET", "regtest"), ("CACHE_MB", "16"), ("REORG_LIMIT", "10")];
    env.extend_from_slice(extra);
    FerrumProcess::start(&dir.path().join("db"), &env)
}

fn wait_synced(ferrum: &mut FerrumProcess, chain: &ChainBuilder) -> Value {
    ferrum.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), SYNC_TIMEOUT)
}

/// Syncs `blocks` from scratch with an untouched daemon and returns the index dump.
fn fresh_dump(blocks: &[Block], extra: &[(&str, &str)]) -> Vec<Row> {
    let mut env = vec![("COIN", "Bitcoin"), ("NET", "regtest"), ("CACHE_MB", "16"), ("REORG_LIMIT", "10")];
    env.extend_from_slice(extra);
    common::dumps::fresh_dump(blocks, &env)
}

/// The log lines at ERROR level (printed by tests that expect ferrum to fail, for the record).
fn error_lines(ferrum: &FerrumProcess) -> String {
    let log = std::fs::read_to_string(&ferrum.log_path).unwrap_or_default();
    log.lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")
}

/// How far ferrum got: blocks applied in memory (`sync_height`, ahead of the flushed `db_height`
/// during initial sync) when reported, else the flushed height.
fn progress_height(info: &Value) -> Option<u64> {
    info["sync_height"].as_u64().or_else(|| info["db_height"].as_u64())
}

/// Waits until ferrum answers getinfo with a progress of at least `min` blocks (0: just up) and
/// returns that progress. Panics if it exits by itself or makes no progress.
fn wait_progress(ferrum: &mut FerrumProcess, min: u64) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(status) = ferrum.exited() {
            panic!("ferrum exited by itself ({status})\n{}", ferrum.log_tail());
        }
        if let Some(info) = ferrum.getinfo() {
            let h = progress_height(&info).unwrap_or(0);
            if h >= min {
                return h;
            }
        }
        assert!(start.elapsed() < SYNC_TIMEOUT, "no progress to height {min}\n{}", ferrum.log_tail());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Electrum script hash: sha256 of the script, byte-reversed, hex.
fn scripthash(script: &Script) -> String {
    let mut h = sha256::Hash::hash(script.as_bytes()).to_byte_array();
    h.reverse();
    hex::encode(h)
}

/// `query` for several items; returns the per-item objects in order.
fn query(ferrum: &FerrumProcess, items: &[String]) -> Vec<Value> {
    let res = ferrum
        .call("query_json", json!([items, 1_000_000]))
        .unwrap_or_else(|e| panic!("query failed: {e}\n{}", ferrum.log_tail()));
    let arr = res.as_array().unwrap_or_else(|| panic!("query result is not an array: {res}")).clone();
    assert_eq!(arr.len(), items.len(), "one result per item: {res}");
    arr
}

fn balance_of(entry: &Value) -> Option<u64> {
    // Accept a plain number or Electrum's {"confirmed", "unconfirmed"} object.
    entry["balance"].as_u64().or_else(|| entry["balance"]["confirmed"].as_u64())
}

/// Checks one `query` answer against what the chain builder says about `script`.
fn check_script(chain: &ChainBuilder, script: &Script, entry: &Value, label: &str) {
    assert_eq!(entry["scripthash"].as_str(), Some(scripthash(script).as_str()), "{label}: scripthash of {entry}");
    let got_hist: Vec<(String, u64)> = entry["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: no history array in {entry}"))
        .iter()
        .map(|h| (h["tx_hash"].as_str().unwrap_or_default().to_string(), h["height"].as_u64().unwrap_or(u64::MAX)))
        .collect();
    let want_hist: Vec<(String, u64)> =
        chain.history(script).into_iter().map(|(txid, h)| (txid.to_string(), u64::from(h))).collect();
    assert_eq!(got_hist.len(), want_hist.len(), "{label}: history length");
    assert_eq!(got_hist, want_hist, "{label}: history (chain order)");

    let mut got_utxos: Vec<(u64, String, u64, u64)> = entry["utxos"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: no utxos array in {entry}"))
        .iter()
        .map(|u| {
            (
                u["height"].as_u64().unwrap_or(u64::MAX),
                u["tx_hash"].as_str().unwrap_or_default().to_string(),
                u["tx_pos"].as_u64().unwrap_or(u64::MAX),
                u["value"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    got_utxos.sort();
    let mut want_utxos: Vec<(u64, String, u64, u64)> = chain
        .utxos_of(script)
        .into_iter()
        .map(|u| (u64::from(u.height), u.outpoint.txid.to_string(), u64::from(u.outpoint.vout), u.value))
        .collect();
    want_utxos.sort();
    assert_eq!(got_utxos, want_utxos, "{label}: utxos");
    assert_eq!(balance_of(entry), Some(chain.balance(script)), "{label}: balance in {entry}");
}

#[test]
fn fresh_sync_matches_chain() {
    let mut chain = ChainBuilder::with_options(1, ChainOptions { min_txs: 5, max_txs: 40, ..ChainOptions::default() });
    chain.add_blocks(150);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &[]);
    let info = wait_synced(&mut ferrum, &chain);
    // caught_up may lag db_height by one poll.
    let start = Instant::now();
    let info = loop {
        let info = ferrum.getinfo().unwrap_or(info.clone());
        if info["caught_up"] == json!(true) || start.elapsed() > Duration::from_secs(30) {
            break info;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(info["caught_up"], json!(true), "getinfo: {info}");
    assert_eq!(info["daemon_height"].as_u64(), Some(u64::from(chain.height())), "getinfo: {info}");

    // Scripts to check: every hot script, plus cold P2TR / P2WPKH / P2PKH scripts, plus a script
    // whose coins were all spent again.
    let mut scripts: Vec<(String, bitcoin::ScriptBuf)> =
        chain.hot_scripts().iter().enumerate().map(|(i, s)| (format!("hot#{i}"), s.clone())).collect();
    let utxos = chain.utxos();
    for kind in [ScriptKind::P2tr, ScriptKind::P2wpkh, ScriptKind::P2pkh, ScriptKind::P2wsh] {
        let cold = utxos
            .iter()
            .find(|u| ScriptKind::of(&u.script) == Some(kind) && !chain.hot_scripts().contains(&u.script))
            .expect("a cold script of that kind");
        scripts.push((format!("cold {kind:?}"), cold.script.clone()));
    }
    let spent_out = chain.blocks()[20..]
        .iter()
        .flat_map(|b| &b.txdata)
        .flat_map(|t| &t.output)
        .map(|o| &o.script_pubkey)
        .find(|s| {
            !s.is_op_return()
                && !chain.hot_scripts().contains(s)
                && chain.balance(s) == 0
                && chain.history(s).len() >= 2
        })
        .expect("a fully spent script")
        .clone();
    scripts.push(("fully spent".into(), spent_out));
    assert!(chain.history(&chain.hot_scripts()[0]).len() > 20);

    // Ask with every item form: address, hex script and Electrum script hash.
    let items: Vec<String> = scripts
        .iter()
        .enumerate()
        .map(|(i, (_, s))| match i % 3 {
            0 => Address::from_script(s, Network::Regtest).expect("standard script").to_string(),
            1 => hex::encode(s.as_bytes()),
            _ => scripthash(s),
        })
        .collect();
    let results = query(&ferrum, &items);
    for ((label, script), entry) in scripts.iter().zip(&results) {
        check_script(&chain, script, entry, &format!("{label} ({})", entry["item"]));
    }

    // Unspendable outputs are never indexed: OP_RETURNs (incl. witness commitments) and the
    // genesis coinbase.
    let mut unindexed: Vec<bitcoin::ScriptBuf> = chain.op_return_scripts().into_iter().take(20).collect();
    assert!(unindexed.len() >= 5, "chain has OP_RETURN outputs");
    unindexed.push(chain.blocks()[0].txdata[0].output[0].script_pubkey.clone());
    let items: Vec<String> = unindexed.iter().map(|s| scripthash(s)).collect();
    for (script, entry) in unindexed.iter().zip(query(&ferrum, &items)) {
        assert_eq!(entry["history"], json!([]), "unspendable {script} indexed: {entry}");
        assert_eq!(entry["utxos"], json!([]), "unspendable {script} indexed: {entry}");
        assert_eq!(balance_of(&entry), Some(0), "{entry}");
    }
    ferrum.stop();
}

#[test]
fn reorgs_of_every_depth_match_fresh_sync() {
    const LIMIT: u32 = 8;
    let limit = LIMIT.to_string();
    let env = [("REORG_LIMIT", limit.as_str())];
    let mut current = ChainBuilder::with_options(2, small_opts());
    current.add_blocks(60);
    let daemon = ScriptedDaemon::start(current.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
    wait_synced(&mut ferrum, &current);
    ferrum.stop();
    let mut prev_dump = dump(&db);
    ferrum.spawn();
    wait_synced(&mut ferrum, &current);

    for depth in 1..=LIMIT {
        // Branch B forks `depth` blocks below the tip and ends 1-2 blocks higher than A.
        let mut branch = current.fork(current.height() - depth);
        branch.add_blocks((depth + 1 + depth % 2) as usize);
        // Mostly a live reorg; every third depth the daemon switches while ferrum is down, so
        // the reorg is found at startup.
        let offline = depth % 3 == 0;
        let served = daemon.blocks_served();
        if offline {
            ferrum.stop();
            daemon.set_chain(branch.blocks().to_vec());
            ferrum.spawn();
        } else {
            daemon.set_chain(branch.blocks().to_vec());
        }
        let info = wait_synced(&mut ferrum, &branch);
        // An unwind, not a rebuild: only the new branch's blocks are fetched.
        let fetched = daemon.blocks_served() - served;
        assert!(fetched < 30, "depth {depth}: {fetched} blocks fetched for a short reorg");
        if let Some(reorgs) = info["reorgs"].as_u64() {
            assert!(reorgs >= 1, "depth {depth}: getinfo counts no reorg: {info}");
        }
        ferrum.stop();
        let got = dump(&db);
        assert_ne!(got, prev_dump, "depth {depth}: the index did not change");
        let want = fresh_dump(branch.blocks(), &env);
        assert_same_index(&got, &want, &format!("reorg of depth {depth} (offline: {offline})"));
        prev_dump = got;
        ferrum.spawn();
        wait_synced(&mut ferrum, &branch);
        current = branch;
    }
    // The served answers (not only the rows) follow the last branch.
    let items: Vec<String> = current.hot_scripts().iter().map(|s| scripthash(s)).collect();
    for (i, (script, entry)) in current.hot_scripts().iter().zip(query(&ferrum, &items)).enumerate() {
        check_script(&current, script, &entry, &format!("hot#{i} after the reorgs"));
    }
    ferrum.stop();
}

#[test]
fn reorg_deeper_than_limit_fails_safely() {
    let env = [("REORG_LIMIT", "5")];
    let mut chain = ChainBuilder::with_options(3, small_opts());
    chain.add_blocks(60);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
    wait_synced(&mut ferrum, &chain);

    let mut deep = chain.fork(chain.height() - 7);
    deep.add_blocks(9);
    daemon.set_chain(deep.blocks().to_vec());
    let status = ferrum.wait_exit(Duration::from_secs(90));
    assert!(!status.success(), "ferrum accepted a reorg deeper than REORG_LIMIT\n{}", ferrum.log_tail());
    eprintln!("deep reorg refused with:\n{}", error_lines(&ferrum));
    let log = std::fs::read_to_string(&ferrum.log_path).unwrap_or_default().to_lowercase();
    assert!(log.contains("reorg"), "the log should say a reorg is too deep\n{}", ferrum.log_tail());

    // The DB was left consistent: back on the original chain it resumes and matches a fresh sync.
    daemon.set_chain(chain.blocks().to_vec());
    ferrum.spawn();
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    assert_same_index(&dump(&dir.path().join("db")), &fresh_dump(chain.blocks(), &env), "after a refused deep reorg");
}

#[test]
fn admin_reorg_unwinds_and_resyncs() {
    let mut chain = ChainBuilder::with_options(4, small_opts());
    chain.add_blocks(60);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &[]);
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    let before = dump(&db);

    ferrum.spawn();
    wait_synced(&mut ferrum, &chain);
    let served = daemon.blocks_served();
    ferrum.call("reorg", json!([3])).unwrap_or_else(|e| panic!("admin reorg failed: {e}\n{}", ferrum.log_tail()));
    // The unwound blocks must be fetched again before the tip counts as reached.
    let start = Instant::now();
    while daemon.blocks_served() < served + 3 {
        assert!(start.elapsed() < SYNC_TIMEOUT, "unwound blocks never re-fetched\n{}", ferrum.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    assert_same_index(&dump(&db), &before, "after admin reorg 3");

    // Deeper than the undo data kept (REORG_LIMIT=10): refused before anything changes, and
    // ferrum keeps running.
    ferrum.spawn();
    wait_synced(&mut ferrum, &chain);
    let reply = ferrum.call("reorg", json!([25]));
    let err = reply.expect_err("admin reorg 25 with REORG_LIMIT=10 must be refused");
    assert!(err.contains("undo data") && err.contains("unchanged"), "unclear refusal: {err}");
    let info = ferrum.getinfo().expect("ferrum still answers");
    assert_eq!(info["db_height"].as_u64(), Some(u64::from(chain.height())), "a refused reorg changed the tip");
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    assert_same_index(&dump(&db), &before, "after admin reorg 25");
}

#[test]
fn failover_to_second_daemon() {
    let mut chain = ChainBuilder::with_options(5, small_opts());
    chain.add_blocks(120);
    let mut longer = chain.clone();
    longer.add_blocks(3);
    let reference = fresh_dump(longer.blocks(), &[]);

    // Blocks over JSON-RPC first, then over REST: failover must work for both paths.
    for rest in [false, true] {
        let what = if rest { "REST" } else { "JSON-RPC" };
        eprintln!("failover with blocks over {what}");
        let opts = DaemonOptions { rest, ..Default::default() };
        let d1 = ScriptedDaemon::start(chain.blocks().to_vec(), opts.clone());
        let d2 = ScriptedDaemon::start(chain.blocks().to_vec(), opts);
        // Daemon 1 dies mid-sync; ferrum must finish from daemon 2.
        d1.die_after_getblocks(40);
        let dir = TempDir::new().expect("tempdir");
        let urls = format!("{},{}", d1.url(), d2.url());
        let mut ferrum = start_ferrum(&dir, &urls, &[]);
        wait_synced(&mut ferrum, &chain);
        assert!(!d1.is_alive(), "{what}: daemon 1 should have died (served {})", d1.blocks_served());
        // Exactly 40 when blocks come one per request; a request past the budget is not served.
        assert!(d1.blocks_served() <= 40, "{what}: daemon 1 served {}", d1.blocks_served());
        assert!(d2.blocks_served() > 0, "{what}: daemon 2 served no block");

        // Daemon 1 comes back and daemon 2 goes away: new blocks come from daemon 1.
        d1.set_chain(longer.blocks().to_vec());
        d2.set_chain(longer.blocks().to_vec());
        d1.revive();
        d2.kill();
        wait_synced(&mut ferrum, &longer);
        ferrum.stop();
        assert!(d1.blocks_served() > 40, "{what}: daemon 1 not used again after reviving");
        assert_same_index(&dump(&dir.path().join("db")), &reference, &format!("after failover ({what})"));
    }
}

#[test]
fn failover_skips_bad_credentials_and_dead_daemons() {
    let mut chain = ChainBuilder::with_options(12, small_opts());
    chain.add_blocks(30);
    let bad = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dead = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    dead.kill();
    let good = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    // The first daemon answers 401 (wrong password), the second refuses connections.
    let urls = format!("http://user:wrong@127.0.0.1:{}/,{},{}", bad.port(), dead.url(), good.url());
    let dir = TempDir::new().expect("tempdir");
    let mut ferrum = start_ferrum(&dir, &urls, &[]);
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    assert_eq!(bad.getblock_calls(), 0, "JSON-RPC with a wrong password was answered");
    assert!(good.blocks_served() > 0);
    assert_same_index(&dump(&dir.path().join("db")), &fresh_dump(chain.blocks(), &[]), "after skipping bad daemons");
}

#[test]
fn daemon_warmup_is_waited_for() {
    let mut chain = ChainBuilder::with_options(8, small_opts());
    chain.add_blocks(40);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    // A node still loading its block index answers -28 for a while.
    daemon.set_warmup(5); // ferrum backs off exponentially: keep it short
    let dir = TempDir::new().expect("tempdir");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &[]);
    wait_synced(&mut ferrum, &chain);
    assert_eq!(daemon.warmup_left(), 0);

    // Warm-up again in the middle of the run (a node restarted under ferrum).
    let mut longer = chain.clone();
    longer.add_blocks(5);
    daemon.set_warmup(3);
    daemon.set_chain(longer.blocks().to_vec());
    wait_synced(&mut ferrum, &longer);
    ferrum.stop();
    assert_eq!(daemon.warmup_left(), 0);
    assert_same_index(&dump(&dir.path().join("db")), &fresh_dump(longer.blocks(), &[]), "after warm-up");
}

#[test]
fn rest_on_and_off_give_same_index() {
    let mut chain = ChainBuilder::with_options(9, small_opts());
    chain.add_blocks(80);
    let mut dumps = Vec::new();
    for rest in [true, false] {
        let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions { rest, ..Default::default() });
        let dir = TempDir::new().expect("tempdir");
        let mut ferrum = start_ferrum(&dir, &daemon.url(), &[]);
        wait_synced(&mut ferrum, &chain);
        ferrum.stop();
        eprintln!(
            "REST {rest}: {} blocks over REST, {} over JSON-RPC",
            daemon.rest_block_calls(),
            daemon.getblock_calls()
        );
        if !rest {
            assert_eq!(daemon.rest_block_calls(), 0);
            assert!(daemon.getblock_calls() >= u64::from(chain.height()), "blocks came over JSON-RPC");
        }
        dumps.push(dump(&dir.path().join("db")));
    }
    assert_same_index(&dumps[1], &dumps[0], "REST off vs REST on");
}

/// Spends found by script hash, from the daemon's spent outputs (`/rest/spenttxouts`), index
/// exactly as spends found by txid. A node answering 503 while it warms up is asked again; one
/// without the call (404) is not, once it has answered.
#[test]
fn spent_outputs_from_the_daemon_give_the_same_index() {
    // A 1 MB write cache flushes every few blocks, so most spends are of outputs on disk.
    let env = [("CACHE_MB", "1")];
    let mut chain =
        ChainBuilder::with_options(12, ChainOptions { min_txs: 10, max_txs: 40, ..ChainOptions::default() });
    chain.add_blocks(150);
    let mut dumps = Vec::new();
    for served in [true, false] {
        let opts = DaemonOptions { spent_outputs: served, ..DaemonOptions::default() };
        let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), opts);
        daemon.set_spent_outputs_warmup(if served { 3 } else { 0 });
        let dir = TempDir::new().expect("tempdir");
        let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
        wait_synced(&mut ferrum, &chain);
        ferrum.stop();
        let asked = daemon.spent_outputs_calls();
        eprintln!("spent outputs served: {served}; asked {asked} times for {} blocks", chain.height());
        if served {
            assert!(asked >= u64::from(chain.height()), "every block's spent outputs, after the 503s: {asked}");
        } else {
            // Only the requests in flight before its first answer (PREFETCH_CONCURRENCY, 8).
            assert!(asked <= 8, "a node without /rest/spenttxouts is not asked again: {asked}");
        }
        dumps.push(dump(&dir.path().join("db")));
    }
    assert_same_index(&dumps[0], &dumps[1], "spends by script hash vs by txid");
}

#[test]
fn kill9_during_sync_then_restart_matches() {
    let env = [("CACHE_MB", "1")];
    let mut chain = ChainBuilder::with_options(6, ChainOptions { min_txs: 10, max_txs: 40, ..ChainOptions::default() });
    chain.add_blocks(300);
    let tip = u64::from(chain.height());
    let reference = fresh_dump(chain.blocks(), &env);

    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
    let mut rng = StdRng::seed_from_u64(0xfe44);
    let mut targets: Vec<u64> = (0..6).map(|_| rng.gen_range(1..tip)).collect();
    targets.sort_unstable();
    let mut kills = Vec::new();
    for target in targets {
        // It must never refuse to start after a kill: wait for it to get past `target` (it resumes
        // from its last flush), then kill it a random moment later.
        wait_progress(&mut ferrum, target);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
        let info = ferrum.getinfo().unwrap_or_default();
        // Now and then a clean stop in the middle of the sync instead.
        let how = if rng.gen_bool(0.2) { "stop" } else { "kill" };
        if how == "stop" {
            ferrum.stop();
        } else {
            ferrum.kill9();
        }
        kills.push((how, info["sync_height"].as_u64(), info["db_height"].as_u64()));
        ferrum.spawn();
    }
    eprintln!("interrupted at (how, sync_height, db_height) {kills:?}");
    // The kills must have hit a partly flushed index, between flushes.
    assert!(kills.iter().any(|(_, _, db)| db.is_some_and(|h| h < tip)), "no kill after a flush: {kills:?}");
    assert!(kills.iter().any(|(_, s, db)| s.is_some() && s > db), "no kill between flushes: {kills:?}");
    wait_synced(&mut ferrum, &chain);
    ferrum.stop();
    assert_same_index(&dump(&dir.path().join("db")), &reference, "after kill -9 restarts");
}

#[test]
fn reorg_during_initial_sync() {
    // Blocks of the old branch already being fetched may still be indexed before the reorg is
    // noticed (bitcoind keeps serving stale blocks), so the reorg can reach the old tip: allow it.
    let env = [("REORG_LIMIT", "200"), ("CACHE_MB", "1")];
    let mut a = ChainBuilder::with_options(11, small_opts());
    a.add_blocks(160);
    // The switch happens while ferrum is at height >= `progress`: once to a fork below that
    // point (ferrum must unwind), once to a fork above it (blocks it may have prefetched from
    // the old branch must not be indexed).
    for (progress, fork_at) in [(60u64, 50u32), (60, 120)] {
        let mut b = a.fork(fork_at);
        b.add_blocks((a.height() - fork_at + 3) as usize);
        let daemon = ScriptedDaemon::start(a.blocks().to_vec(), DaemonOptions::default());
        daemon.set_response_delay(Duration::from_millis(10)); // a slow node: the sync takes seconds
        let dir = TempDir::new().expect("tempdir");
        let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
        let height = wait_progress(&mut ferrum, progress);
        daemon.set_chain(b.blocks().to_vec());
        eprintln!("switched to a fork at {fork_at} with ferrum at height {height}");
        // Under heavy load ferrum may finish before the test sees it mid-sync; the switch is then
        // an ordinary reorg, and the comparison below still has to hold.
        if height >= u64::from(a.height()) {
            eprintln!("note: ferrum finished the sync before the switch; checking it as a plain reorg");
        }
        daemon.set_response_delay(Duration::ZERO);
        wait_synced(&mut ferrum, &b);
        ferrum.stop();
        assert_same_index(
            &dump(&dir.path().join("db")),
            &fresh_dump(b.blocks(), &env),
            &format!("switch to a fork at {fork_at} during initial sync"),
        );
    }
}

#[test]
fn kill9_during_reorg_then_restart_matches() {
    let env = [("CACHE_MB", "1"), ("REORG_LIMIT", "10")];
    let mut current = ChainBuilder::with_options(10, small_opts());
    current.add_blocks(60);
    let daemon = ScriptedDaemon::start(current.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &env);
    wait_synced(&mut ferrum, &current);
    // A slow node stretches each reorg over a few hundred ms, so the kills land inside it.
    daemon.set_response_delay(Duration::from_millis(30));
    let mut rng = StdRng::seed_from_u64(0x4e0);
    for round in 0..4u32 {
        let mut branch = current.fork(current.height() - (3 + 2 * round));
        branch.add_blocks(4 + 2 * round as usize);
        daemon.set_chain(branch.blocks().to_vec());
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
        let info = ferrum.getinfo().unwrap_or_default();
        ferrum.kill9();
        let tip = info["db_tip"].as_str().unwrap_or_default().to_string();
        let stage = if tip == branch.tip_hash().to_string() {
            "after the reorg"
        } else if tip == current.tip_hash().to_string() {
            "before the reorg"
        } else {
            "inside the reorg"
        };
        eprintln!("round {round}: killed {stage} (db_height {})", info["db_height"]);
        ferrum.spawn();
        wait_synced(&mut ferrum, &branch);
        ferrum.stop();
        assert_same_index(
            &dump(&db),
            &fresh_dump(branch.blocks(), &env),
            &format!("kill -9 during reorg, round {round}"),
        );
        ferrum.spawn();
        wait_synced(&mut ferrum, &branch);
        current = branch;
    }
    ferrum.stop();
}

#[test]
fn wrong_chain_refused() {
    // Testnet's genesis, then a regtest genesis with a different nonce: neither is regtest's.
    let mut other = genesis_block(Network::Regtest);
    other.header.nonce += 1;
    let genesis_variants = [("testnet genesis", genesis_block(Network::Testnet)), ("altered regtest genesis", other)];
    for (what, genesis) in genesis_variants {
        let mut chain = ChainBuilder::from_genesis(7, small_opts(), genesis);
        chain.add_blocks(5);
        let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
        let dir = TempDir::new().expect("tempdir");
        let mut ferrum = start_ferrum(&dir, &daemon.url(), &[]);
        let status = ferrum.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "{what}: ferrum accepted the wrong chain\n{}", ferrum.log_tail());
        eprintln!("{what} refused with:\n{}", error_lines(&ferrum));
        let log = std::fs::read_to_string(&ferrum.log_path).unwrap_or_default();
        let wrong_hash = chain.block_hash(0).to_string();
        assert!(
            ["genesis", "wrong chain"].iter().any(|w| log.to_lowercase().contains(w)) || log.contains(&wrong_hash),
            "{what}: the log should name the genesis mismatch\n{}",
            ferrum.log_tail()
        );
    }
}

/// A new block is noticed through the `waitforblockheight` long poll at once, not after the
/// poll interval (a minute here); a daemon without the call is polled instead.
#[test]
fn new_blocks_are_noticed_by_long_poll_or_by_polling() {
    let mut chain = ChainBuilder::with_options(61, small_opts());
    chain.add_blocks(5);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().unwrap();
    let slow_polls = [("DAEMON_POLL_INTERVAL_BLOCKS", "60000"), ("DAEMON_POLL_INTERVAL_MEMPOOL", "60000")];
    let mut f = start_ferrum(&dir, &daemon.url(), &slow_polls);
    wait_synced(&mut f, &chain);
    for _ in 0..2 {
        chain.add_block();
        daemon.set_chain(chain.blocks().to_vec());
        // Well under the poll interval: only the long poll can have woken ferrum.
        f.wait_for_tip(u64::from(chain.height()), Some(&chain.tip_hash().to_string()), Duration::from_secs(10));
    }
    f.stop();

    let plain = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    plain.disable_method("waitforblockheight");
    let dir = TempDir::new().unwrap();
    let mut f = start_ferrum(&dir, &plain.url(), &[("DAEMON_POLL_INTERVAL_BLOCKS", "200")]);
    wait_synced(&mut f, &chain);
    chain.add_block();
    plain.set_chain(chain.blocks().to_vec());
    wait_synced(&mut f, &chain);
    let lacks = f.getinfo().map(|i| i["daemon_lacks"].clone()).unwrap_or_default();
    // It lacks getzmqnotifications too (no ZMQ publisher): both fallbacks are known.
    assert!(
        lacks.as_array().is_some_and(|l| l.contains(&json!("waitforblockheight"))),
        "the fallback to polling is known: {lacks}\n{}",
        f.log_tail()
    );
    assert_eq!(error_lines(&f), "", "no errors");
}

/// Waits until ferrum's mempool holds `n` transactions.
fn wait_mempool(ferrum: &FerrumProcess, n: u64) {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while Instant::now() < deadline {
        if ferrum.getinfo().is_some_and(|i| i["mempool"]["txs"].as_u64() == Some(n)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ferrum's mempool never held {n} transactions: {:?}", ferrum.getinfo());
}

/// An unspent output created at `height` by a transaction at position 2 or later in its block
/// whose inputs all come from earlier blocks (so it can be mined again alone on a fork, where it
/// gets another tx number), with that transaction.
fn movable_utxo(chain: &ChainBuilder, height: u32) -> (common::chain::Utxo, bitcoin::Transaction) {
    let block = &chain.blocks()[height as usize];
    let txids: BTreeSet<bitcoin::Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
    let utxos = chain.utxos();
    for tx in &block.txdata[2..] {
        if tx.input.iter().any(|i| txids.contains(&i.previous_output.txid)) {
            continue;
        }
        let txid = tx.compute_txid();
        if let Some(u) = utxos.iter().find(|u| u.outpoint.txid == txid && !u.script.is_op_return()) {
            return (u.clone(), tx.clone());
        }
    }
    panic!("no movable output at height {height}");
}

/// A block mining mempool transactions takes their spends from the mempool's own lookups. After
/// a reorg moved a spent output's creating transaction to another tx number, those lookups are
/// stale and must not be used. Either way the index must equal a fresh sync's.
#[test]
fn mined_mempool_txs_index_like_a_fresh_sync_even_after_a_reorg() {
    let mut chain = ChainBuilder::with_options(41, small_opts());
    chain.add_blocks(30);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let db = dir.path().join("db");
    let fast = [("DAEMON_POLL_INTERVAL_MEMPOOL", "50"), ("LOG_LEVEL", "info,ferrum=debug")];
    let mut ferrum = start_ferrum(&dir, &daemon.url(), &fast);
    wait_synced(&mut ferrum, &chain);
    let from_mempool = |f: &FerrumProcess| f.getinfo().and_then(|i| i["spends"]["from_mempool"].as_u64()).unwrap();

    // Warm: T0 is in the mempool, then mined.
    let (u0, _) = movable_utxo(&chain, 20);
    let t0 = chain.make_tx(std::slice::from_ref(&u0), &[(u0.script.clone(), u0.value - 1000)]);
    daemon.set_mempool(vec![t0.clone()]);
    wait_mempool(&ferrum, 1);
    let before = from_mempool(&ferrum);
    chain.add_block_including(vec![t0], 2);
    daemon.set_chain(chain.blocks().to_vec());
    wait_synced(&mut ferrum, &chain);
    assert_eq!(from_mempool(&ferrum) - before, 1, "block 31's spend was taken from the mempool\n{}", ferrum.log_tail());
    daemon.set_mempool(vec![]);
    wait_mempool(&ferrum, 0);

    // Stale: T1 is resolved on this chain, then a fork mines U1's creating tx right after a
    // coinbase (another tx number) and is indexed; then a block mines T1.
    let h = chain.height() - 2;
    let (u1, creator) = movable_utxo(&chain, h);
    let t1 = chain.make_tx(std::slice::from_ref(&u1), &[(u1.script.clone(), u1.value - 1000)]);
    daemon.set_mempool(vec![t1.clone()]);
    wait_mempool(&ferrum, 1);
    let mut fork = chain.fork(h - 1);
    fork.add_block_including(vec![creator], 0);
    daemon.set_chain(fork.blocks().to_vec());
    wait_synced(&mut ferrum, &fork);
    let before = from_mempool(&ferrum);
    fork.add_block_including(vec![t1], 2);
    daemon.set_chain(fork.blocks().to_vec());
    wait_synced(&mut ferrum, &fork);
    assert_eq!(from_mempool(&ferrum), before, "the block mining T1 used T1's stale lookup\n{}", ferrum.log_tail());
    ferrum.stop();
    assert_same_index(&dump(&db), &fresh_dump(fork.blocks(), &[]), "after mining mempool txs and a reorg");
}
