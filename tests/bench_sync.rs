//! Sync benchmark: a generated chain served by the scripted daemon, indexed by the real ferrum
//! binary. Ignored in the normal test run; run it with
//!   FERRUM_BENCH_BLOCKS=1000 FERRUM_BENCH_TXS=100 cargo test --release --test bench_sync -- --ignored --nocapture
//! It prints wall time, blocks/s, txs/s, ferrum's peak RSS, CPU seconds, DB size, and how many
//! spends had to look their output up on disk (summed from ferrum's per-flush debug lines).

mod common;

use std::time::{Duration, Instant};

use common::chain::{ChainBuilder, ChainOptions};
use common::ferrum::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// (peak RSS in kB, CPU seconds) of a live process, from /proc.
fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm, ticks / 100.0)
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored"]
fn bench_initial_sync() {
    let blocks = env_usize("FERRUM_BENCH_BLOCKS", 1000);
    let txs = env_usize("FERRUM_BENCH_TXS", 100);
    let cache_mb = env_usize("FERRUM_BENCH_CACHE_MB", 1200);
    let t = Instant::now();
    let opts = ChainOptions { min_txs: txs, max_txs: txs, ..ChainOptions::default() };
    let mut chain = ChainBuilder::with_options(42, opts);
    chain.add_blocks(blocks);
    let total_txs: usize = chain.blocks().iter().map(|b| b.txdata.len()).sum();
    eprintln!("generated {blocks} blocks, {total_txs} txs in {:.1}s", t.elapsed().as_secs_f64());
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());

    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let start = Instant::now();
    let url = daemon.url();
    let cache = cache_mb.to_string();
    let mut f = FerrumProcess::start(
        &db,
        &[
            ("DAEMON_URL", &url),
            ("COIN", "Bitcoin"),
            ("NET", "regtest"),
            ("CACHE_MB", &cache),
            ("LOG_LEVEL", "info,ferrum=debug"),
        ],
    );
    let tip = chain.tip_hash().to_string();
    let pid = f.child.as_ref().unwrap().id();
    f.wait_for_tip(chain.height() as u64, Some(&tip), Duration::from_secs(3600));
    let wall = start.elapsed().as_secs_f64();
    let (rss_kb, cpu) = proc_stats(pid);
    f.stop();
    let size = dir_size(&db);
    let log = std::fs::read_to_string(&f.log_path).unwrap_or_default();
    // Each flush logs "flushed to height H in M ms: ..., S spent from disk, ...".
    let number_before =
        |line: &str, marker: &str| -> Option<u64> { line.split(marker).next()?.rsplit(' ').next()?.parse().ok() };
    for line in log.lines().filter(|l| l.contains("flushed to height")) {
        eprintln!("{}", line.split("flushed").nth(1).map_or(line, |rest| rest));
    }
    let (flushes, flush_ms, disk_spends) = log
        .lines()
        .filter(|l| l.contains("flushed to height"))
        .filter_map(|l| Some((number_before(l, " ms:")?, number_before(l, " spent from disk")?)))
        .fold((0, 0, 0), |(n, ms, sp), (m, s)| (n + 1, ms + m, sp + s));
    println!(
        "sync: {} blocks, {total_txs} txs in {wall:.2}s = {:.0} blocks/s, {:.0} txs/s; peak RSS {:.0} MB; CPU {cpu:.1}s; \
         DB {:.1} MB; {flushes} flushes taking {:.2}s, {disk_spends} spends looked up on disk",
        blocks + 1,
        (blocks + 1) as f64 / wall,
        total_txs as f64 / wall,
        rss_kb as f64 / 1024.0,
        size as f64 / 1e6,
        flush_ms as f64 / 1e3
    );
}
