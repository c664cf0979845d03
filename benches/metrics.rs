//! What the metrics cost.
//!
//!   cargo bench --bench metrics
//!
//! 1. The work one request adds for the exporter (its method's counter, the clock read and the
//!    latency histogram), timed alone.
//! 2. Query throughput with METRICS_ADDR unset (latencies not timed, nothing served) and set
//!    (timed, and scraped every second as Prometheus would), alternating, ferrum restarted on
//!    the same database between them; the median of the rounds.
//!
//! ferrum serves the standard benchmark chain (the sync benchmark's, from the cache).

use ferrum_testkit as common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bench::{common_calls, compare_modes, full_run, serve, wait_idle, AbSetup};
use common::nodes::http_get;
use common::process::free_port;

fn per_request(n: usize) {
    let m = ferrum::metrics::Metrics::new();
    let method = m.method("blockchain.scripthash.get_balance");
    for (what, timed) in [("counted only (METRICS_ADDR unset)", false), ("counted and timed (METRICS_ADDR set)", true)]
    {
        m.set_timed(timed);
        let started = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            method.requests.inc();
            if m.timed() {
                method.seconds.observe(t.elapsed().as_secs_f64());
                method.cost.inc_by(1.0);
            }
            m.bytes_received.inc_by(90);
            m.bytes_sent.inc_by(150);
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!("metrics work per request, {what}: {ns:.0} ns");
    }
}

fn main() {
    let full = full_run();
    per_request(if full { 5_000_000 } else { 10_000 });
    let AbSetup { samples, daemon, rounds, secs, .. } = AbSetup::standard(full);
    let (mut f, port, _dir) = serve(&daemon, &[("CACHE_MB", "1200")]);
    wait_idle(f.child.as_ref().expect("running").id(), Duration::from_secs(if full { 120 } else { 5 }));

    // A scraper, as Prometheus: every second, whenever the endpoint is up.
    let metrics_port = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if http_get(("127.0.0.1", metrics_port), "/metrics", Duration::from_secs(5)).is_ok_and(|r| r.0 == 200) {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let addr = format!("127.0.0.1:{metrics_port}");
    let off: [(&str, &str); 1] = [("METRICS_ADDR", "")];
    let on: [(&str, &str); 1] = [("METRICS_ADDR", addr.as_str())];
    compare_modes(&mut f, port, [("metrics off", &off), ("metrics on", &on)], &common_calls(&samples), rounds, secs);
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper");
    println!("{} scrapes answered", scrapes.load(Ordering::Relaxed));
    f.stop();
}
