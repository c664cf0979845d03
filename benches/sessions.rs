//! Many sessions: 10,000 concurrent sessions with 20 script-hash subscriptions each (200,000
//! distinct script hashes), then one block paying every one of them.
//!
//!   cargo bench --bench sessions
//!
//! Prints ferrum's memory before and after the sessions subscribe, and the time from
//! `submitblock` returning until every session has received all 20 of its script-hash
//! notifications and the headers notification. The clients run in this process (one tokio
//! task per session) on loopback.

use ferrum_testkit as common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::bench::{
    connect_many, env_usize, full_run, proc_stats, raise_fd_limit, serve, submit_block, ChainSpec, Latencies, Session,
};
use common::chain::{random_script, ScriptKind};
use common::client::scripthash;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

const SUBS: usize = 20;
const OUTPUTS_PER_TX: usize = 100;

fn main() {
    let full = full_run();
    let sessions = env_usize("FERRUM_BENCH_SESSIONS", if full { 10_000 } else { 50 });
    let limit = raise_fd_limit();
    assert!(limit as usize > sessions + 100, "open-file limit {limit} is too low for {sessions} sessions");
    // A small chain: this benchmark is about sessions, not history size.
    let mut builder = ChainSpec::standard(300, 20).builder();
    let mut rng = StdRng::seed_from_u64(11);
    let scripts: Vec<_> =
        (0..sessions * SUBS).map(|i| random_script(&mut rng, ScriptKind::ALL[i % ScriptKind::ALL.len()])).collect();
    let hashes: Vec<String> = scripts.iter().map(|s| scripthash(s.as_bytes())).collect();

    // The block: transactions of 100 outputs, each paying 1,000 sat to a subscribed script.
    let mut funding: Vec<_> = builder.utxos().into_iter().filter(|u| u.value > 200_000).collect();
    let needed = scripts.len().div_ceil(OUTPUTS_PER_TX);
    assert!(funding.len() >= needed, "the base chain has {} coins of > 200,000 sat, {needed} needed", funding.len());
    funding.truncate(needed);
    let txs: Vec<_> = scripts
        .chunks(OUTPUTS_PER_TX)
        .zip(&funding)
        .map(|(chunk, coin)| {
            let mut outs: Vec<_> = chunk.iter().map(|s| (s.clone(), 1_000u64)).collect();
            let change = coin.value - 1_000 * chunk.len() as u64 - 5_000;
            outs.push((coin.script.clone(), change));
            builder.make_tx(std::slice::from_ref(coin), &outs)
        })
        .collect();
    let base = builder.blocks().to_vec();
    let block = builder.add_block_including(txs, 0).clone();
    let block_txs = block.txdata.len();

    let daemon = ScriptedDaemon::start(base, DaemonOptions::default());
    let max_sessions = (sessions + 100).to_string();
    let (f, port, _dir) = serve(&daemon, &[("MAX_SESSIONS", &max_sessions), ("LOG_LEVEL", "info,ferrum=debug")]);
    let pid = f.child.as_ref().expect("running").id();
    let before = proc_stats(pid);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let clients = rt.block_on(async {
        let mut clients = connect_many(port, sessions, 200).await;
        let subscribed = futures::future::join_all(clients.drain(..).zip(hashes.chunks(SUBS)).map(|(mut s, hs)| {
            let hs = hs.to_vec();
            tokio::spawn(async move {
                s.subscribe_all(&hs).await.expect("subscribe");
                s.call("blockchain.headers.subscribe", json!([])).await.expect("headers");
                s
            })
        }))
        .await;
        subscribed.into_iter().map(|s| s.expect("task")).collect::<Vec<Session>>()
    });
    let setup = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = proc_stats(pid);
    println!(
        "{sessions} sessions x {SUBS} subscriptions opened in {:.1} s; ferrum RSS {:.0} MB before, {:.0} MB after ({:.1} kB per session; target < 2 GB)",
        setup.as_secs_f64(),
        before.rss_mb,
        after.rss_mb,
        (after.rss_mb - before.rss_mb) * 1024.0 / sessions as f64
    );

    let daemon_port = daemon.port();
    let (ferrum_cpu, client_cpu) = (proc_stats(pid).cpu_s, proc_stats(std::process::id()).cpu_s);
    let delivered = rt.block_on(async move {
        // Every session waits on its own task from before the block exists.
        let waits: Vec<_> = clients
            .into_iter()
            .zip(hashes.chunks(SUBS))
            .map(|(mut s, hs)| {
                let want: HashSet<String> = hs.iter().cloned().collect();
                // The session is handed back, not dropped: a client that closes as soon as it
                // is served would make ferrum tear it down while still notifying the others.
                tokio::spawn(async move { (s.await_notifications(want, true, Duration::from_secs(120)).await, s) })
            })
            .collect();
        tokio::task::spawn_blocking(move || submit_block(daemon_port, &block)).await.expect("submitblock");
        let submitted = Instant::now();
        let mut last = submitted;
        let mut open = Vec::with_capacity(sessions);
        for w in waits {
            let (at, s) = w.await.expect("session task");
            last = last.max(at);
            open.push(s);
        }
        let delivered = last.saturating_duration_since(submitted);
        drop(open);
        delivered
    });
    let end = proc_stats(pid);
    // Both ends share the 2 cores: how much CPU each used for this block.
    println!(
        "CPU used from submitblock to the last notification: ferrum {:.2} s, this load generator (and its scripted daemon) {:.2} s",
        end.cpu_s - ferrum_cpu,
        proc_stats(std::process::id()).cpu_s - client_cpu
    );
    println!(
        "block with {} txs paying all {} script hashes: every notification delivered {} ms after submitblock (target < 1000 ms); \
         ferrum RSS {:.0} MB, peak {:.0} MB",
        block_txs,
        sessions * SUBS,
        Latencies::ms(delivered),
        end.rss_mb,
        end.peak_rss_mb
    );
    // The server's side of it: block applied, flushed, statuses computed.
    let log = std::fs::read_to_string(&f.log_path).unwrap_or_default();
    for line in
        log.lines().filter(|l| l.contains("applied block") || l.contains("flushed to") || l.contains("statuses"))
    {
        println!("ferrum: {}", line.rsplit("DEBUG").next().unwrap_or(line).trim());
    }
}
