//! Initial-sync benchmark and its fetch limit.
//!
//!   cargo bench --bench sync              # ~1,000,000 txs (FERRUM_BENCH_BLOCKS x FERRUM_BENCH_TXS)
//!
//! A generated chain (cached under ~/.cache/ferrum/chains) is served by the scripted daemon.
//! First the fetch limit: ferrum's own daemon client pulls every block (REST, binary) with the
//! same concurrency as the prefetcher and parses nothing. Then the real `ferrum` binary indexes
//! the chain from an empty database; the clock stops when getinfo reports the chain's tip as
//! flushed, i.e. durable and queryable. Prints wall time, blocks/s, txs/s, peak RSS, CPU
//! seconds, DB size, flush time, and the sync/fetch ratio.
//!
//!   FERRUM_BENCH_ELECTRUMX=1 cargo bench --bench sync   # then ElectrumX 2.0.0 on the same chain
//!
//! runs ElectrumX 2.0.0 (PyPI `e-x`, from contrib/install-test-deps.sh) against the same
//! scripted daemon afterwards, timed to the moment it serves clients (it opens its port once
//! caught up), with its CPU, peak RSS and DB size.

use ferrum_testkit as common;

use std::time::{Duration, Instant};

use common::bench::{dir_size, env_usize, full_run, proc_stats, ChainSpec};
use common::process::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

#[path = "support/measure.rs"]
mod measure;
use measure::fetch_limit;

fn main() {
    let full = full_run();
    let blocks = env_usize("FERRUM_BENCH_BLOCKS", if full { 5000 } else { 40 });
    let txs = env_usize("FERRUM_BENCH_TXS", if full { 200 } else { 20 });
    let cache_mb = env_usize("FERRUM_BENCH_CACHE_MB", if full { 1200 } else { 50 });
    let concurrency = env_usize("PREFETCH_CONCURRENCY", 8);
    let spec = ChainSpec::standard(blocks, txs);
    let chain = spec.load();
    let total_txs: usize = chain.iter().map(|b| b.txdata.len()).sum();
    let tip = (chain.len() - 1) as u32;
    let tip_hash = chain[tip as usize].block_hash().to_string();
    let daemon = ScriptedDaemon::start(chain, DaemonOptions::default());
    let url = daemon.url();

    let (fetch, bytes) = fetch_limit(&url, "Bitcoin", tip, concurrency);
    println!(
        "fetch limit: {tip} blocks, {:.1} MB in {:.2} s = {:.0} blocks/s, {:.0} MB/s (concurrency {concurrency})",
        bytes as f64 / 1e6,
        fetch.as_secs_f64(),
        tip as f64 / fetch.as_secs_f64(),
        bytes as f64 / 1e6 / fetch.as_secs_f64()
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let cache = cache_mb.to_string();
    let conc = concurrency.to_string();
    let started = Instant::now();
    let mut f = FerrumProcess::start(
        &db,
        &[
            ("DAEMON_URL", &url),
            ("COIN", "Bitcoin"),
            ("NET", "regtest"),
            ("CACHE_MB", &cache),
            ("PREFETCH_CONCURRENCY", &conc),
            ("LOG_LEVEL", "info,ferrum=debug"),
        ],
    );
    let pid = f.child.as_ref().expect("running").id();
    f.wait_for_tip(tip as u64, Some(&tip_hash), Duration::from_secs(if full { 3600 } else { 300 }));
    let wall = started.elapsed().as_secs_f64();
    let stats = proc_stats(pid);
    // ferrum then writes the last batch to tables and compacts them, in the background while it
    // serves: wait for that too, so the size below is the settled database.
    let settle_started = Instant::now();
    measure::wait_settled(&f.log_path);
    let settled = settle_started.elapsed().as_secs_f64();
    let settled_stats = proc_stats(pid);
    f.stop();
    println!(
        "settled (memtables flushed, tables compacted) {settled:.1} s after reaching the tip; CPU then {:.1} s, peak RSS {:.0} MB",
        settled_stats.cpu_s, settled_stats.peak_rss_mb
    );
    let size = dir_size(&db);
    println!("database files: {}", common::bench::db_breakdown(&db));
    // Where the table bytes go, per column family (RocksDB's own count of its table files).
    if let Some(tables) = measure::tables(&db) {
        println!("tables: {tables}");
    }
    let log = std::fs::read_to_string(&f.log_path).unwrap_or_default();
    // Each flush logs "flushed to height H in M ms: ..., S spent from disk, ...".
    let number_before =
        |line: &str, marker: &str| -> Option<u64> { line.split(marker).next()?.rsplit(' ').next()?.parse().ok() };
    let (flushes, flush_ms, disk_spends) = log
        .lines()
        .filter(|l| l.contains("flushed to height"))
        .filter_map(|l| Some((number_before(l, " ms:")?, number_before(l, " spent from disk")?)))
        .fold((0, 0, 0), |(n, ms, sp), (m, s)| (n + 1, ms + m, sp + s));
    println!(
        "sync: {} blocks, {total_txs} txs in {wall:.2} s = {:.0} blocks/s, {:.0} txs/s; peak RSS (VmHWM) {:.0} MB (CACHE_MB={cache_mb}); \
         CPU {:.1} s; DB {:.1} MB; {flushes} flushes taking {:.2} s; {disk_spends} spends read from disk",
        tip + 1,
        (tip + 1) as f64 / wall,
        total_txs as f64 / wall,
        stats.peak_rss_mb,
        stats.cpu_s,
        size as f64 / 1e6,
        flush_ms as f64 / 1e3
    );
    println!("sync / fetch limit = {:.2} (target <= 2)", wall / fetch.as_secs_f64());
    // Where the longest flush's time went (batch built, lock taken, written).
    if let Some(line) =
        log.lines().filter(|l| l.contains("flushed to height")).max_by_key(|l| number_before(l, " ms:").unwrap_or(0))
    {
        println!("longest flush: {}", line.split("flushed to height").nth(1).unwrap_or(line).trim());
    }
    assert!(flushes >= 1, "ferrum logged no flush:\n{}", f.log_tail());
    if std::env::var("FERRUM_BENCH_ELECTRUMX").is_ok_and(|v| v == "1") {
        electrumx_sync(&url, tip);
    }
}

/// ElectrumX 2.0.0 syncing the same chain from the same daemon, with its default CACHE_MB.
fn electrumx_sync(url: &str, tip: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let ex = common::electrumx_server::ElectrumX::start_with(url, dir.path(), &[]);
    let wall = started.elapsed().as_secs_f64();
    let stats = proc_stats(ex.pid().expect("running"));
    assert_eq!(ex.height(), tip as u64, "ElectrumX serves the tip");
    let size = dir_size(&dir.path().join("db"));
    println!(
        "electrumx: {} blocks in {wall:.2} s; peak RSS (VmHWM) {:.0} MB; CPU {:.1} s; DB {:.1} MB",
        tip + 1,
        stats.peak_rss_mb,
        stats.cpu_s,
        size as f64 / 1e6
    );
}
