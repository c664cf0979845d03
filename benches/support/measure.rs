//! What the sync benchmarks (`benches/sync.rs`, `benches/compare.rs`) measure alike: the fetch
//! limit (ferrum's own daemon client pulling blocks and parsing nothing), the wait for ferrum's
//! database to settle after its sync, and where that database's bytes go.

use std::collections::HashMap;
use std::path::Path;
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

/// Waits (at most 10 minutes) until ferrum, whose log is at `log`, has compacted its database
/// after the initial sync: its size is then the settled one.
pub fn wait_settled(log: &Path) {
    let started = Instant::now();
    while !std::fs::read_to_string(log).unwrap_or_default().contains("database compacted after the sync")
        && started.elapsed() < Duration::from_secs(600)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each column family's table files and the txid file of a stopped ferrum's database, as
/// "name N MB, ..." (RocksDB's own count), or `None` if it does not open.
pub fn tables(db: &Path) -> Option<String> {
    let store = ferrum::store::Db::open_read_only(db).ok()?;
    let sizes: Vec<String> =
        store.table_sizes().iter().map(|(t, b)| format!("{t} {:.1} MB", *b as f64 / 1e6)).collect();
    for (t, props) in store.table_properties() {
        eprintln!("ferrum table {t}: {props}");
    }
    Some(sizes.join(", "))
}
