//! Query latency (p50/p99, one session, one call at a time) and throughput (several sessions
//! calling in a loop) for the calls wallets make most.
//!
//!   cargo bench --bench queries
//!
//! ferrum serves the standard benchmark chain (the sync benchmark's, from the cache). The
//! "ordinary" script hashes are random non-hot output scripts (1-3 transactions each); the hot
//! one is the generator's first hot script, with over 100,000 transactions on the full chain.
//! MAX_SEND is raised to 100 MB so that its history fits in one response.

use ferrum_testkit as common;

use std::sync::Arc;
use std::time::Duration;

use common::bench::{
    env_usize, full_run, proc_stats, serve, throughput, time_calls, wait_idle, ChainSpec, Latencies, QuerySamples,
    Session,
};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use serde_json::{json, Value};

type MakeCall = Arc<dyn Fn(usize) -> (&'static str, Value) + Send + Sync>;

/// Calls `method` on the script hashes in turn.
fn by_hash(method: &'static str, hashes: &Arc<Vec<String>>) -> MakeCall {
    let hashes = hashes.clone();
    Arc::new(move |i| (method, json!([hashes[i % hashes.len()]])))
}

fn main() {
    let full = full_run();
    let spec = ChainSpec::standard(
        env_usize("FERRUM_BENCH_BLOCKS", if full { 5000 } else { 40 }),
        env_usize("FERRUM_BENCH_TXS", if full { 200 } else { 20 }),
    );
    let n = env_usize("FERRUM_BENCH_CALLS", if full { 2000 } else { 20 });
    let n_hot = env_usize("FERRUM_BENCH_HOT_CALLS", if full { 40 } else { 3 });
    let secs = if full { 3 } else { 1 };
    let chain = spec.load();
    let tip = chain.len() - 1;
    let QuerySamples { hot: hot_hash, ordinary, txs } = QuerySamples::draw(&spec, &chain);

    let daemon = ScriptedDaemon::start(chain, DaemonOptions::default());
    let (f, port, _dir) = serve(&daemon, &[("CACHE_MB", "1200"), ("MAX_SEND", "100000000")]);
    let pid = f.child.as_ref().expect("running").id();
    let waited = wait_idle(pid, Duration::from_secs(if full { 120 } else { 5 }));
    println!("ferrum idle (background compactions done) after {:.1} s", waited.as_secs_f64());
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let hot_len = rt.block_on(async {
        let mut s = Session::connect(port).await.expect("connect");
        let h = s.call("blockchain.scripthash.get_history", json!([hot_hash])).await.expect("hot history");
        h.as_array().map_or(0, Vec::len)
    });
    println!("hot script hash {hot_hash}: {hot_len} transactions in its history");
    if full {
        assert!(hot_len >= 100_000, "the hot script hash has at least 100,000 transactions");
    }

    let hot = Arc::new(vec![hot_hash.clone()]);
    let t = txs.clone();
    let cases: Vec<(&str, usize, MakeCall)> = vec![
        ("get_history (ordinary)", n, by_hash("blockchain.scripthash.get_history", &ordinary)),
        ("get_history (hot)", n_hot, by_hash("blockchain.scripthash.get_history", &hot)),
        ("get_balance (ordinary)", n, by_hash("blockchain.scripthash.get_balance", &ordinary)),
        ("get_balance (hot)", n_hot, by_hash("blockchain.scripthash.get_balance", &hot)),
        ("listunspent (ordinary)", n, by_hash("blockchain.scripthash.listunspent", &ordinary)),
        ("listunspent (hot)", n_hot, by_hash("blockchain.scripthash.listunspent", &hot)),
        ("transaction.get", n, Arc::new(move |i| ("blockchain.transaction.get", json!([t[i % t.len()].0])))),
        ("transaction.get_merkle", n, {
            let t = txs.clone();
            Arc::new(move |i| ("blockchain.transaction.get_merkle", json!([t[i % t.len()].0, t[i % t.len()].1])))
        }),
        (
            "block.headers (2016)",
            n,
            Arc::new(move |i| {
                ("blockchain.block.headers", json!([(i * 7919) % tip.saturating_sub(2016).max(1), 2016]))
            }),
        ),
    ];
    println!("| call | calls | p50 ms | p99 ms | calls/s (4 sessions, {secs} s) |");
    println!("|---|---|---|---|---|");
    for (name, count, make) in cases {
        let lat = rt.block_on(async {
            let mut s = Session::connect_with_buffer(port, 1 << 20).await.expect("connect");
            time_calls(&mut s, count, make.as_ref()).await
        });
        let per_s = rt.block_on(throughput(port, 4, Duration::from_secs(secs), make));
        println!(
            "| {name} | {count} | {} | {} | {per_s:.0} |",
            Latencies::ms(lat.percentile(0.5)),
            Latencies::ms(lat.percentile(0.99))
        );
    }
    let stats = proc_stats(pid);
    println!("ferrum RSS {:.0} MB (peak {:.0} MB)", stats.rss_mb, stats.peak_rss_mb);
}
