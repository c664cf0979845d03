//! A real Prometheus (Debian's `prometheus` package, installed by
//! `contrib/install-test-deps.sh`) scraping ferrum, queried through its HTTP API; and
//! `promtool`, its linter for expositions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nodes::http_get;
use crate::process::free_port;

/// A Debian program, or `None` when not installed (the test is skipped, unless
/// `FERRUM_REQUIRE_NODES=1`, where it fails).
pub fn system_program(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("{name} is not installed (Debian package prometheus), run contrib/install-test-deps.sh");
    if std::env::var("FERRUM_REQUIRE_NODES").as_deref() == Ok("1") {
        panic!("FERRUM_REQUIRE_NODES=1 but {msg}");
    }
    eprintln!("\nSKIPPED: {msg}\n");
    None
}

/// `promtool check metrics` on an exposition: its verdict and what it printed.
pub fn promtool_check(promtool: &Path, exposition: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) every `interval`, as job "ferrum".
    pub fn start(bin: &Path, targets: &[String], interval: Duration) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\nscrape_configs:\n  - job_name: ferrum\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", "),
            s = interval.as_secs().max(1)
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the config");
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, port, _dir: dir, log_path };
        let started = Instant::now();
        while !http_get(("127.0.0.1", port), "/-/ready", Duration::from_secs(2)).is_ok_and(|r| r.0 == 200) {
            assert!(started.elapsed() < Duration::from_secs(60), "Prometheus not ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An instant query; the `data.result` array.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = http_get(("127.0.0.1", self.port), &path, Duration::from_secs(10)).expect("query");
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "query {expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of an instant query, if it has one.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
