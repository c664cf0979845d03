//! A real Prometheus (Debian's) scrapes ferrum's METRICS_ADDR while it syncs and then serves a
//! query load: its HTTP API has the heights climbing to the tip during the sync and the request
//! counters rising; `promtool check metrics` passes on the exposition.
//!
//! Run with `cargo test --test e2e_prometheus`. Needs `contrib/install-test-deps.sh`.

use ferrum_testkit as common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::chain::{ChainBuilder, ChainOptions};
use common::client::{scripthash, Client};
use common::nodes::http_get;
use common::process::{free_port, FerrumProcess};
use common::prometheus::{promtool_check, system_program, Prometheus};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

#[test]
fn prometheus_scrapes_ferrum_through_a_sync_and_a_query_load() {
    let (Some(prometheus), Some(promtool)) = (system_program("prometheus"), system_program("promtool")) else {
        return;
    };
    let opts = ChainOptions { min_txs: 20, max_txs: 40, ..ChainOptions::default() };
    let mut chain = ChainBuilder::with_options(402, opts);
    chain.add_blocks(150);
    let tip = u64::from(chain.height());
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    // A slow node, so the sync spans several scrapes.
    daemon.set_response_delay(Duration::from_millis(60));
    let metrics_port = free_port();
    let prom = Prometheus::start(&prometheus, &[format!("127.0.0.1:{metrics_port}")], Duration::from_secs(1));

    let dir = tempfile::tempdir().unwrap();
    let url = daemon.url();
    let addr = format!("127.0.0.1:{metrics_port}");
    let env = [("DAEMON_URL", url.as_str()), ("NET", "regtest"), ("METRICS_ADDR", addr.as_str())];
    let (mut ferrum, ports) = FerrumProcess::start_serving(&dir.path().join("db"), &["tcp"], &env);
    ferrum.wait_for_tip(tip, Some(&chain.tip_hash().to_string()), Duration::from_secs(120));
    daemon.set_response_delay(Duration::ZERO);
    ferrum.wait_port(ports["tcp"], Duration::from_secs(60));

    // Scrapes taken during the sync saw heights below the tip.
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "Prometheus never saw {what}\n{}", prom.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait_for("the tip", &|| prom.value("ferrum_db_height") == Some(tip as f64));
    assert_eq!(prom.value(r#"up{job="ferrum"}"#), Some(1.0));
    let lowest = prom.value("min_over_time(ferrum_sync_height[10m])").expect("sync height series");
    let scrapes = prom.value("count_over_time(ferrum_sync_height[10m])").expect("scrapes");
    assert!(lowest < tip as f64 && scrapes >= 3.0, "no scrape during the sync: lowest {lowest}, {scrapes} scrapes");

    // A query load: the request counters rise between scrapes.
    let sh = scripthash(chain.hot_scripts()[0].as_bytes());
    let history = r#"ferrum_requests_total{method="blockchain.scripthash.get_history"}"#;
    let mut c = Client::tcp(ports["tcp"]);
    c.version(json!("1.4"));
    let started = Instant::now();
    let mut first_seen = None;
    while started.elapsed() < Duration::from_secs(20) {
        for _ in 0..20 {
            c.ok("blockchain.scripthash.get_history", json!([sh]));
        }
        match (first_seen, prom.value(history)) {
            (None, Some(v)) => first_seen = Some(v),
            (Some(a), Some(b)) if b > a => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (a, b) = (first_seen.expect("a scrape with requests"), prom.value(history).unwrap());
    assert!(b > a, "the request counter did not rise between scrapes: {a} then {b}");
    let rate = prom.value(&format!("rate({history}[1m])")).unwrap_or(0.0);
    assert!(rate > 0.0, "rate of get_history {rate}");
    let p99 = prom.value(
        r#"histogram_quantile(0.99, sum by (le) (rate(ferrum_request_duration_seconds_bucket{method="blockchain.scripthash.get_history"}[1m])))"#,
    );
    assert!(p99.is_some_and(|v| v > 0.0 && v < 30.0), "latency histogram: {p99:?}");

    // promtool's lint passes on the exposition.
    let (_, body) = http_get(("127.0.0.1", metrics_port), "/metrics", Duration::from_secs(10)).unwrap();
    let exposition = String::from_utf8(body).unwrap();
    let (ok, said) = promtool_check(&promtool, &exposition);
    assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}");
    ferrum.stop();
}
