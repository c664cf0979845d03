//! The fetch limit the sync benchmarks compare with: ferrum's own daemon client pulling blocks
//! and parsing nothing (shared by `benches/sync.rs` and `benches/compare.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

/// Pulls every block of heights 1..=tip as the prefetcher does (hash batches of 500, then
/// `concurrency` raw-block requests in flight), without parsing. Returns (time, bytes).
pub fn fetch_limit(url: &str, coin: &str, tip: u32, concurrency: usize) -> (Duration, usize) {
    let vars: HashMap<String, String> =
        [("DAEMON_URL", url), ("COIN", coin), ("NET", "regtest"), ("DB_DIRECTORY", "/nonexistent")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let config = ferrum::config::Config::from_vars(vars).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let daemon = Arc::new(ferrum::node::Daemon::new(&config, rx, Arc::new(ferrum::metrics::Metrics::new())));
        let started = Instant::now();
        let mut bytes = 0;
        let mut from = 1;
        while from <= tip {
            let count = 500.min(tip - from + 1);
            let hashes = daemon.block_hashes(from, count).await.expect("hashes");
            let mut stream = futures::stream::iter(hashes)
                .map(|h| {
                    let d = daemon.clone();
                    tokio::spawn(async move { d.raw_block(&h).await.expect("block").len() })
                })
                .buffered(concurrency);
            while let Some(n) = stream.next().await {
                bytes += n.expect("task");
            }
            from += count;
        }
        (started.elapsed(), bytes)
    })
}
