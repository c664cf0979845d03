//! Tip latency: from a new block of ~4,000 transactions at the daemon to the last notification
//! a subscribed client receives.
//!
//!   cargo bench --bench tip
//!
//! ferrum first indexes the standard benchmark chain (the sync benchmark's, from the cache),
//! with the default DAEMON_POLL_INTERVAL_BLOCKS of 5 s, so a new block must be noticed by
//! ferrum's long poll, not by polling. Then, for each round, FERRUM_BENCH_SESSIONS sessions
//! subscribe to the headers and to 20 script hashes each, all paid by the coming block; the
//! block goes to the scripted daemon with `submitblock`, and the clock runs from the moment
//! submitblock returns until every session has had the headers notification and all of its 20
//! script-hash notifications. In "warm" rounds the block's transactions were in the mempool
//! first (the usual case: ferrum already knows them); in "cold" rounds they were not.

use ferrum_testkit as common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::bench::{connect_many, env_usize, full_run, serve, submit_block, wait_idle, ChainSpec, Latencies, Session};
use common::client::scripthash;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use serde_json::json;

/// Drops whatever arrives until the session has been quiet for `quiet`.
async fn drain(s: &mut Session, quiet: Duration) {
    while let Ok(Ok(_)) = tokio::time::timeout(quiet, s.read()).await {}
}

fn main() {
    let full = full_run();
    let spec = ChainSpec::standard(
        env_usize("FERRUM_BENCH_BLOCKS", if full { 5000 } else { 40 }),
        env_usize("FERRUM_BENCH_TXS", if full { 200 } else { 20 }),
    );
    let tip_txs = env_usize("FERRUM_BENCH_TIP_TXS", if full { 4000 } else { 100 });
    let rounds = env_usize("FERRUM_BENCH_ROUNDS", if full { 10 } else { 2 });
    let sessions = env_usize("FERRUM_BENCH_SESSIONS", if full { 100 } else { 5 });
    let mut builder = spec.builder();
    let daemon = ScriptedDaemon::start(builder.blocks().to_vec(), DaemonOptions::default());
    let (f, port, _dir) = serve(
        &daemon,
        &[
            ("CACHE_MB", "1200"),
            ("DAEMON_POLL_INTERVAL_BLOCKS", "5000"),
            ("MAX_SESSIONS", "10000"),
            ("LOG_LEVEL", "info,ferrum=debug"),
        ],
    );
    let pid = f.child.as_ref().expect("running").id();
    let waited = wait_idle(pid, Duration::from_secs(if full { 120 } else { 5 }));
    println!("ferrum idle (background compactions done) after {:.1} s", waited.as_secs_f64());
    // FERRUM_BENCH_LOG=1 prints ferrum's log of each round: the timeline of a tip.
    let show_log = std::env::var("FERRUM_BENCH_LOG").is_ok_and(|v| v == "1");
    let mut log_seen = 0;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut results: Vec<(bool, Duration)> = Vec::new();
    for round in 0..rounds {
        let warm = round % 2 == 0;
        let block = builder.add_block_with_txs(tip_txs).clone();
        // Distinct scripts paid by the block, 20 per session. Hot scripts are left out: their
        // histories exceed MAX_SEND, so ferrum refuses to subscribe them (as ElectrumX does).
        let mut seen: HashSet<String> = builder.hot_scripts().iter().map(|s| scripthash(s.as_bytes())).collect();
        let hashes: Vec<String> = block.txdata[1..]
            .iter()
            .flat_map(|t| &t.output)
            .filter(|o| !o.script_pubkey.is_op_return())
            .map(|o| scripthash(o.script_pubkey.as_bytes()))
            .filter(|h| seen.insert(h.clone()))
            .take(sessions * 20)
            .collect();
        assert_eq!(hashes.len(), sessions * 20, "the block pays enough distinct scripts");
        let latency = rt.block_on(async {
            let mut clients = connect_many(port, sessions, 100).await;
            for (s, hs) in clients.iter_mut().zip(hashes.chunks(20)) {
                s.subscribe_all(hs).await.expect("subscribe");
                s.call("blockchain.headers.subscribe", json!([])).await.expect("headers");
            }
            if warm {
                daemon.set_mempool(block.txdata[1..].to_vec());
                let waits = clients.into_iter().zip(hashes.chunks(20)).map(|(mut s, hs)| {
                    let hs: HashSet<String> = hs.iter().cloned().collect();
                    tokio::spawn(async move {
                        s.await_notifications(hs, false, Duration::from_secs(60)).await;
                        drain(&mut s, Duration::from_millis(300)).await;
                        s
                    })
                });
                clients = futures::future::join_all(waits).await.into_iter().map(|s| s.expect("task")).collect();
            }
            submit_block(daemon.port(), &block);
            let submitted = Instant::now();
            let waits = clients.into_iter().zip(hashes.chunks(20)).map(|(mut s, hs)| {
                let hs: HashSet<String> = hs.iter().cloned().collect();
                tokio::spawn(async move { s.await_notifications(hs, true, Duration::from_secs(60)).await })
            });
            let last =
                futures::future::join_all(waits).await.into_iter().map(|t| t.expect("task")).max().expect("sessions");
            last.saturating_duration_since(submitted)
        });
        let log = std::fs::read_to_string(&f.log_path).unwrap_or_default();
        if show_log {
            for line in log[log_seen.min(log.len())..].lines().filter(|l| !l.contains(" session ")) {
                println!("{line}");
            }
            log_seen = log.len();
        }
        let flush = log.lines().rev().find(|l| l.contains("flushed to height")).unwrap_or("").to_string();
        println!(
            "round {round} ({}): {} txs, {} sessions x 20 subscriptions: last notification {} ms after submitblock;{}",
            if warm { "warm: txs were in the mempool" } else { "cold" },
            block.txdata.len(),
            sessions,
            Latencies::ms(latency),
            flush.split("flushed").nth(1).map(|r| format!(" ferrum: flushed{r}")).unwrap_or_default()
        );
        results.push((warm, latency));
    }
    for warm in [true, false] {
        let l = Latencies(results.iter().filter(|r| r.0 == warm).map(|r| r.1).collect());
        println!(
            "tip latency ({}, {} rounds): median {} ms, max {} ms (target < 100 ms)",
            if warm { "warm" } else { "cold" },
            l.0.len(),
            Latencies::ms(l.percentile(0.5)),
            Latencies::ms(l.percentile(1.0))
        );
    }
    assert!(f.getinfo().is_some(), "ferrum still answers after the rounds");
}
