//! METRICS_ADDR: `/metrics` in Prometheus's text format while ferrum syncs and serves; other
//! paths are 404; nothing secret is exported; a bad METRICS_ADDR stops start-up naming it.
//!
//! Run with `cargo test --test metrics`.

use ferrum_testkit as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use common::chain::ChainBuilder;
use common::client::{scripthash, Client};
use common::nodes::{http_get, http_request};
use common::process::{free_port, FerrumProcess};
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};

const PASSWORD: &str = "s3cret-daemon-pw";

/// The exposition's samples: series (name and labels, as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

fn scrape(port: u16) -> (u16, String) {
    let (status, body) = http_get(("127.0.0.1", port), "/metrics", Duration::from_secs(10)).expect("scrape");
    (status, String::from_utf8(body).expect("UTF-8 exposition"))
}

#[test]
fn metrics_follow_sync_and_requests() {
    let mut chain = ChainBuilder::new(401);
    chain.add_blocks(40);
    let opts = DaemonOptions { password: PASSWORD.into(), ..DaemonOptions::default() };
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), opts);
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let url = daemon.url();
    let addr = format!("127.0.0.1:{metrics_port}");
    let env = [("DAEMON_URL", url.as_str()), ("NET", "regtest"), ("METRICS_ADDR", addr.as_str())];
    let (mut ferrum, ports) = FerrumProcess::start_serving(&dir.path().join("db"), &["tcp"], &env);
    ferrum.wait_for_tip(40, Some(&chain.tip_hash().to_string()), Duration::from_secs(60));
    ferrum.wait_port(ports["tcp"], Duration::from_secs(60));

    let (status, text) = scrape(metrics_port);
    assert_eq!(status, 200, "{text}");
    let s = samples(&text);
    assert_eq!(s.get("ferrum_db_height"), Some(&40.0), "{text}");
    assert_eq!(s.get("ferrum_daemon_height"), Some(&40.0));
    assert_eq!(s.get("ferrum_blocks_processed_total"), Some(&41.0), "genesis and 40 blocks");
    assert!(s["ferrum_db_transactions"] > 40.0);
    let build = s.keys().find(|k| k.starts_with("ferrum_build_info{")).expect("build info");
    assert!(build.contains(r#"coin="Bitcoin""#) && build.contains(r#"network="regtest""#), "{build}");
    assert!(s["ferrum_db_flush_duration_seconds_count"] >= 1.0);
    assert!(s["ferrum_block_apply_duration_seconds_count"] >= 41.0);
    assert!(s[r#"ferrum_daemon_rpc_duration_seconds_count{method="getblockchaininfo"}"#] >= 1.0);
    assert!(s[r#"ferrum_db_size_bytes{table="txids"}"#] > 0.0);
    assert!(s.get("process_resident_memory_bytes").is_some_and(|v| *v > 1e6), "process metrics");
    assert!(!text.contains(PASSWORD) && !text.contains(&url), "the daemon's credentials must not be exported");

    // A session and its requests.
    let mut c = Client::tcp(ports["tcp"]);
    c.version(json!("1.4"));
    let sh = scripthash(chain.hot_scripts()[0].as_bytes());
    c.ok("blockchain.scripthash.subscribe", json!([sh]));
    c.ok("blockchain.headers.subscribe", json!([]));
    for _ in 0..5 {
        c.ok("blockchain.scripthash.get_history", json!([sh]));
    }
    assert!(c.call("blockchain.block.header", json!([9999])).is_err());
    let s = samples(&scrape(metrics_port).1);
    assert_eq!(s[r#"ferrum_requests_total{method="blockchain.scripthash.get_history"}"#], 5.0);
    assert_eq!(s[r#"ferrum_request_duration_seconds_count{method="blockchain.scripthash.get_history"}"#], 5.0);
    assert_eq!(s[r#"ferrum_request_errors_total{code="1",method="blockchain.block.header"}"#], 1.0);
    assert_eq!(s[r#"ferrum_sessions{transport="tcp"}"#], 1.0);
    assert_eq!(s[r#"ferrum_subscriptions{kind="scripthash"}"#], 1.0);
    assert_eq!(s[r#"ferrum_subscriptions{kind="headers"}"#], 1.0);
    // Peer discovery's table (empty on regtest without seeds), by status.
    for status in ["good", "stale", "never", "bad"] {
        assert_eq!(s[format!("ferrum_peers{{status=\"{status}\"}}").as_str()], 0.0, "{status}");
    }
    assert!(s["ferrum_network_received_bytes_total"] > 100.0 && s["ferrum_network_sent_bytes_total"] > 100.0);

    // A block: notifications, and how long after the index changed they were written.
    chain.add_block();
    daemon.set_chain(chain.blocks().to_vec());
    let notified = c.wait_notification("blockchain.headers.subscribe", Duration::from_secs(30), |_| true);
    assert!(notified.is_some(), "no headers notification");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = samples(&scrape(metrics_port).1);
        let delays = s.get(r#"ferrum_notification_delay_seconds_count{kind="headers"}"#).copied().unwrap_or(0.0)
            + s.get(r#"ferrum_notification_delay_seconds_count{kind="scripthash"}"#).copied().unwrap_or(0.0);
        if delays >= 1.0 && s["ferrum_db_height"] == 41.0 {
            assert!(s[r#"ferrum_notifications_sent_total{kind="headers"}"#] >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no notification delay recorded: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples(&scrape(metrics_port).1)[r#"ferrum_sessions_closed_total{reason="client"}"#] < 1.0 {
        assert!(Instant::now() < deadline, "the closed session was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every series the dashboard and the Prometheus console draw is one ferrum exports.
    let text = scrape(metrics_port).1;
    let exported: Vec<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for file in ["contrib/grafana/ferrum.json", "contrib/prometheus/ferrum.html"] {
        let panels = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let mut drawn = 0;
        for (i, _) in panels.match_indices("ferrum_").chain(panels.match_indices("process_")) {
            let name: String = panels[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(exported.contains(&name.as_str()), "{file} draws {name}, which ferrum does not export");
            drawn += 1;
        }
        assert!(drawn > 20, "{file}: only {drawn} series found");
    }

    // Other paths and methods.
    let (status, _) = http_get(("127.0.0.1", metrics_port), "/", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_get(("127.0.0.1", metrics_port), "/metrics/x", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 404);
    let (status, _) =
        http_request(("127.0.0.1", metrics_port), "POST", "/metrics", "", "x", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 405);
    ferrum.stop();
}

#[test]
fn a_bad_metrics_addr_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::process::ferrum_binary())
        .env_clear()
        .env("DB_DIRECTORY", dir.path())
        .env("NET", "regtest")
        .env("DAEMON_URL", "http://u:p@127.0.0.1:1/")
        .env("METRICS_ADDR", "localhost:4224")
        .env("ALLOW_ROOT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("METRICS_ADDR") && err.contains("localhost:4224"), "{err}");

    // A port already taken: ferrum stops saying which variable.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(common::process::ferrum_binary())
        .env_clear()
        .env("DB_DIRECTORY", dir.path())
        .env("NET", "regtest")
        .env("DAEMON_URL", "http://u:p@127.0.0.1:1/")
        .env("METRICS_ADDR", &addr)
        .env("ALLOW_ROOT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("METRICS_ADDR={addr}")), "{err}");
}
