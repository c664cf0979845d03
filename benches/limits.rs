//! What the cost model costs, and what it buys.
//!
//!   cargo bench --bench limits
//!
//! 1. Overhead: query throughput (4 sessions calling in a loop) with the model off
//!    (COST_SOFT_LIMIT=COST_HARD_LIMIT=0) and on with limits so high nobody is throttled, so
//!    every cost is still counted. The two alternate, ferrum restarted on the same database
//!    between them, and each figure is the median of the rounds.
//! 2. Abuse: 100 polite wallets, each from its own /24, asking a balance every 100 ms, alone
//!    and beside abusers hammering the hot history (18 MB answers) from one /24 and reconnecting
//!    whenever cut off; with ElectrumX's default limits, and with the model off.
//!
//! ferrum serves the standard benchmark chain (the sync benchmark's, from the cache).

use ferrum_testkit as common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bench::{
    common_calls, compare_modes, env_usize, full_run, proc_stats, restart, serve, wait_idle, AbSetup, Latencies,
    Session,
};
use serde_json::json;

const OFF: [(&str, &str); 2] = [("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "0")];
const RAISED: [(&str, &str); 2] = [("COST_SOFT_LIMIT", "1000000000"), ("COST_HARD_LIMIT", "2000000000")];
const DEFAULTS: [(&str, &str); 2] = [("COST_SOFT_LIMIT", "1000"), ("COST_HARD_LIMIT", "10000")];

fn main() {
    let full = full_run();
    accounting_per_request(if full { 2_000_000 } else { 10_000 });
    let AbSetup { samples, daemon, rounds, secs, .. } = AbSetup::standard(full);
    let (mut f, port, _dir) =
        serve(&daemon, &[("CACHE_MB", "1200"), ("MAX_SEND", "100000000"), ("SESSION_GROUP_PRIVATE", "1")]);
    let waited = wait_idle(f.child.as_ref().expect("running").id(), Duration::from_secs(if full { 120 } else { 5 }));
    println!("ferrum idle after its sync ({:.1} s)", waited.as_secs_f64());
    // ---- 1. Overhead -------------------------------------------------------------------------
    compare_modes(&mut f, port, [("model off", &OFF), ("model on", &RAISED)], &common_calls(&samples), rounds, secs);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // ---- 2. Abuse ----------------------------------------------------------------------------
    let polite_n = env_usize("FERRUM_BENCH_POLITE", 100);
    let abusers_n = env_usize("FERRUM_BENCH_ABUSERS", 10);
    let length = Duration::from_secs(if full { 20 } else { 2 });
    println!(
        "\n{polite_n} polite sessions (get_balance every 100 ms, each from its own /24) for {} s; \
         {abusers_n} abusers hammering the hot history from one /24, reconnecting when cut off:",
        length.as_secs()
    );
    println!(
        "| run | polite calls | p50 ms | p99 ms | max ms | p99 ms after the first 2 s | hot histories served to abusers | abuser sessions cut | ferrum CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, env, abusers) in [
        ("polite alone, default limits", DEFAULTS, 0),
        ("with abusers, default limits", DEFAULTS, abusers_n),
        ("with abusers, model off", OFF, abusers_n),
    ] {
        restart(&mut f, port, &env);
        let pid = f.child.as_ref().expect("running").id();
        let cpu_before = proc_stats(pid).cpu_s;
        let r = rt.block_on(abuse_run(port, polite_n, abusers, length, samples.ordinary.clone(), samples.hot.clone()));
        let cpu = proc_stats(pid).cpu_s - cpu_before;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {cpu:.1} |",
            r.polite.0.len(),
            Latencies::ms(r.polite.percentile(0.5)),
            Latencies::ms(r.polite.percentile(0.99)),
            Latencies::ms(r.polite.percentile(1.0)),
            Latencies::ms(r.steady.percentile(0.99)),
            r.served,
            r.cut
        );
    }
    f.stop();
}

/// What the cost model does per request, timed alone: the throttle read at the loop's top and
/// before the request, the bytes in, the request's cost, the bytes out; for a session alone and
/// for one in a group of ten (each read then sums the group).
fn accounting_per_request(n: usize) {
    use ferrum::electrum::cost::{CostLimits, Groups, SessionCost};
    let limits = Arc::new(CostLimits { soft: 1e9, hard: 2e9, group_private: true, ..CostLimits::default() });
    let groups = Groups::new(limits.clone());
    let peer = |i: u8| std::net::SocketAddr::from(([10, 0, 0, i], 50000));
    let alone = SessionCost::new(
        limits.clone(),
        &Groups::new(Arc::new(CostLimits::default())),
        &"127.0.0.1:1".parse().unwrap(),
        Instant::now(),
    );
    let members: Vec<_> =
        (1..=10).map(|i| SessionCost::new(limits.clone(), &groups, &peer(i), Instant::now())).collect();
    for (what, s) in [("a session alone", &alone), ("a session in a group of 10", &members[0])] {
        let started = Instant::now();
        for _ in 0..n {
            let now = Instant::now();
            std::hint::black_box(s.throttle(now));
            std::hint::black_box(s.throttle(Instant::now()));
            s.add_bytes(90, Instant::now());
            s.add(1.0, Instant::now());
            s.add_bytes(150, Instant::now());
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!("cost accounting per request, {what}: {ns:.0} ns");
    }
}

struct AbuseResult {
    polite: Latencies,
    /// The polite calls made after the first 2 s: each abuser's first request is unthrottled
    /// (a new session has cost 5), so the start is a burst of heavy answers.
    steady: Latencies,
    served: u64,
    cut: u64,
}

async fn abuse_run(
    port: u16,
    polite_n: usize,
    abusers: usize,
    length: Duration,
    ordinary: Arc<Vec<String>>,
    hot: String,
) -> AbuseResult {
    let started = Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicU64::new(0));
    let abuse: Vec<_> = (0..abusers)
        .map(|k| {
            let (served, cut, hot) = (served.clone(), cut.clone(), hot.clone());
            tokio::spawn(async move {
                let source = Ipv4Addr::new(127, 200, 0, 1 + k as u8);
                while started.elapsed() < length {
                    let Ok(mut s) = Session::connect_from(port, source, 1 << 20).await else {
                        // Refused at its first request (the group is over the limit) or at connect.
                        cut.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    while started.elapsed() < length {
                        match s.call_unparsed("blockchain.scripthash.get_history", json!([hot])).await {
                            Ok(true) => served.fetch_add(1, Ordering::Relaxed),
                            _ => {
                                cut.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        };
                    }
                }
            })
        })
        .collect();
    let polite: Vec<_> = (0..polite_n)
        .map(|k| {
            let ordinary = ordinary.clone();
            tokio::spawn(async move {
                let source = Ipv4Addr::new(127, 10 + (k / 250) as u8, (k % 250) as u8, 1);
                let mut s = Session::connect_from(port, source, 8 << 10).await.expect("a polite session connects");
                // Spread the calls over the 100 ms period.
                tokio::time::sleep(Duration::from_millis(k as u64 % 100)).await;
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut i = k * 7;
                while started.elapsed() < length {
                    tick.tick().await;
                    let t = Instant::now();
                    let (_, arrived) = s
                        .call_at("blockchain.scripthash.get_balance", json!([ordinary[i % ordinary.len()]]))
                        .await
                        .expect("a polite call is answered");
                    samples.push((t - started, arrived - t));
                    i += 1;
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for p in polite {
        all.extend(p.await.expect("polite task"));
    }
    let steady = all.iter().filter(|(at, _)| *at >= Duration::from_secs(2)).map(|(_, d)| *d).collect();
    let all = all.into_iter().map(|(_, d)| d).collect();
    for a in abuse {
        a.await.expect("abuser task");
    }
    AbuseResult {
        polite: Latencies(all),
        steady: Latencies(steady),
        served: served.load(Ordering::Relaxed),
        cut: cut.load(Ordering::Relaxed),
    }
}
