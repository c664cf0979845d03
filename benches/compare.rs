//! ferrum beside ElectrumX 2.0.0 and (on Bitcoin Core) electrs 0.12 on the same real node, chain
//! and machine: the comparison an operator can rerun before switching.
//!
//!   cargo bench --bench compare                        # Bitcoin Core, then the Bitcoin SV node
//!   FERRUM_BENCH_NODES=core cargo bench --bench compare
//!
//! The chain (`testkit::real_chain`: ~1,000,000 transactions in 2,200 blocks by default,
//! FERRUM_BENCH_BLOCKS x FERRUM_BENCH_TXS) is given to the node once and its directory cached
//! under ~/.cache/ferrum/real-chains/; ElectrumX 2.0.0 comes from PyPI (`e-x`, installed into
//! ~/.cache/ferrum/electrumx by contrib/install-test-deps.sh), electrs 0.12.0 from crates.io
//! (`contrib/install-test-deps.sh --with-electrs`: `cargo install` into ~/.cache/ferrum/electrs,
//! ~40 CPU-minutes once for its bundled RocksDB; it needs Core 31's REST, so Core only). For each
//! node:
//! - the fetch limit: ferrum's daemon client pulling every block, parsing nothing;
//! - each server's initial sync from an empty directory with its defaults (ferrum's clock stops
//!   when the tip is flushed, ElectrumX's when it opens its client port, i.e. once caught up,
//!   electrs's when `electrs --sync-once` exits, its CPU and peak memory from the kernel's account):
//!   wall time, the server's and the node's CPU seconds, the server's peak RSS, and its database
//!   once settled;
//! - queries: 4 clients asking in a loop for a few seconds, each question on a fresh connection
//!   (`server.version` then the question; ElectrumX holds small answers on a busy connection for
//!   up to 1 s), with p50/p99 of the question and the server's and the node's CPU per question;
//! - agreement: history, balance and unspent outputs of 100 script hashes and the hot one,
//!   asked of every server: every answer must be ferrum's.
//!
//! `cargo test` runs it on a 130-block chain as a smoke test. FERRUM_BENCH_ELECTRUMX=0 runs
//! ferrum alone, e.g. to compare two builds (FERRUM_BIN=<another ferrum binary>);
//! FERRUM_BENCH_ELECTRS=0 leaves electrs out;
//! FERRUM_BENCH_SERVER_ENV="K=V,K=V" adds to ferrum's environment (e.g. CACHE_MB=300);
//! FERRUM_BENCH_KEEP_DB=<dir> copies ferrum's settled database there after the run.

use ferrum_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bench::{dir_size, env_usize, full_run, proc_stats, wait_idle, Latencies, QuerySamples};
use common::client::Client;
use common::electrumx_server::{electrumx_server, ElectrumX};
use common::process::{free_port, FerrumProcess};
use common::real_chain::{NodeKind, RealChain, RealNode};
use serde_json::{json, Value};

#[path = "support/measure.rs"]
mod measure;

/// What one server's run measured.
struct Run {
    name: &'static str,
    sync_s: f64,
    cpu_s: f64,
    node_cpu_s: f64,
    peak_rss_mb: f64,
    db_mb: f64,
    queries: Vec<QueryFigures>,
}

struct QueryFigures {
    name: &'static str,
    per_s: f64,
    p50: Duration,
    p99: Duration,
    cpu_us: f64,
    node_cpu_us: f64,
}

/// A question the clients ask in a loop: `make(i)` gives the i-th one.
type Make = Arc<dyn Fn(usize) -> (&'static str, Value) + Send + Sync>;

/// How a question is timed: by how many clients at once, each asking at least `min_calls` times.
#[derive(Clone, Copy)]
struct Load {
    clients: usize,
    min_calls: usize,
}

/// Ordinary questions: 4 clients in a loop.
const MANY: Load = Load { clients: 4, min_calls: 1 };
/// The hot script hash's history (200,000 transactions on the full chain, seconds for
/// ElectrumX): one client, three times.
const ONE_BY_ONE: Load = Load { clients: 1, min_calls: 3 };

fn main() {
    let full = full_run();
    let blocks = env_usize("FERRUM_BENCH_BLOCKS", if full { 2200 } else { 130 });
    let txs = env_usize("FERRUM_BENCH_TXS", if full { 478 } else { 20 });
    let nodes = std::env::var("FERRUM_BENCH_NODES").unwrap_or_else(|_| "core,sv".into());
    for kind in [NodeKind::Core, NodeKind::Sv] {
        if nodes.split(',').any(|n| n.trim() == kind.name()) {
            compare_on(kind, blocks, txs, full);
        }
    }
}

fn compare_on(kind: NodeKind, blocks: usize, txs: usize, full: bool) {
    let chain = RealChain::standard(kind, blocks, txs);
    let chain_blocks = chain.spec.load();
    let Some(node) = chain.start(&chain_blocks) else { return };
    let samples = QuerySamples::draw(&chain.spec, &chain_blocks);
    let tip = node.height() as u32;
    let total_txs: usize = chain_blocks.iter().map(|b| b.txdata.len()).sum::<usize>() + 1;
    println!("\n## {} node: {} blocks, {total_txs} transactions", kind.name(), tip + 1);

    let (fetch, bytes) = measure::fetch_limit(&node.url(), kind.coin(), tip, 8);
    println!(
        "fetch limit (ferrum's daemon client, 8 in flight, nothing parsed): {:.1} MB in {:.2} s",
        bytes as f64 / 1e6,
        fetch.as_secs_f64()
    );
    let secs = Duration::from_secs(if full { 5 } else { 1 });
    let calls = questions(&samples);
    let mut runs = Vec::new();
    let (ferrum_run, ferrum_port, ferrum) = run_ferrum(&node, kind, tip, &calls, secs);
    runs.push(ferrum_run);
    // FERRUM_BENCH_ELECTRUMX=0: ferrum alone (e.g. to compare two ferrum binaries with FERRUM_BIN).
    let with_electrumx = std::env::var("FERRUM_BENCH_ELECTRUMX").as_deref() != Ok("0");
    if with_electrumx && electrumx_server().is_some() {
        let (run, ex) = run_electrumx(&node, kind, tip, &calls, secs);
        runs.push(run);
        let differ = disagreements(ferrum_port, ex.tcp_port, &samples);
        println!("answers compared (history, balance, unspent of 101 script hashes): {differ} differ");
        assert_eq!(differ, 0, "ferrum and ElectrumX disagree");
    }
    let with_electrs = std::env::var("FERRUM_BENCH_ELECTRS").as_deref() != Ok("0");
    if let Some(bin) = electrs_binary().filter(|_| with_electrs && kind == NodeKind::Core) {
        let (run, electrs) = run_electrs(&bin, &node, tip, &calls, secs);
        runs.push(run);
        let differ = disagreements(ferrum_port, electrs.port, &samples);
        println!("answers compared with electrs (history, balance, unspent of 101 script hashes): {differ} differ");
        assert_eq!(differ, 0, "ferrum and electrs disagree");
    }
    let (mut f, dir) = ferrum;
    f.stop();
    // Where ferrum's bytes go: each column family's table files, and the txid file.
    if let Some(tables) = measure::tables(&dir.path().join("db")) {
        println!("ferrum's tables: {tables}");
    }
    // FERRUM_BENCH_KEEP_DB=<dir>: keep ferrum's settled database there, e.g. for sst_dump.
    if let Some(keep) = std::env::var_os("FERRUM_BENCH_KEEP_DB") {
        let ok = Command::new("cp").arg("-a").arg(dir.path().join("db")).arg(&keep).status().is_ok_and(|s| s.success());
        println!(
            "ferrum's database {} {}",
            if ok { "kept in" } else { "could not be copied to" },
            Path::new(&keep).display()
        );
    }
    report(&runs, fetch.as_secs_f64());
}

/// The questions timed: ordinary script hashes (1-3 transactions) and the hot one.
fn questions(samples: &QuerySamples) -> Vec<(&'static str, Load, Make)> {
    let by_hash = |method: &'static str, hashes: Arc<Vec<String>>| -> Make {
        Arc::new(move |i| (method, json!([hashes[i % hashes.len()]])))
    };
    let hot = Arc::new(vec![samples.hot.clone()]);
    vec![
        ("get_history", MANY, by_hash("blockchain.scripthash.get_history", samples.ordinary.clone())),
        ("get_balance", MANY, by_hash("blockchain.scripthash.get_balance", samples.ordinary.clone())),
        ("listunspent", MANY, by_hash("blockchain.scripthash.listunspent", samples.ordinary.clone())),
        ("get_history (hot)", ONE_BY_ONE, by_hash("blockchain.scripthash.get_history", hot)),
    ]
}

fn run_ferrum(
    node: &RealNode,
    kind: NodeKind,
    tip: u32,
    calls: &[(&'static str, Load, Make)],
    secs: Duration,
) -> (Run, u16, (FerrumProcess, tempfile::TempDir)) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let node_cpu_before = node_cpu(node);
    let started = Instant::now();
    let url = node.url();
    let mut env = vec![
        ("DAEMON_URL", url.as_str()),
        ("COIN", kind.coin()),
        ("NET", "regtest"),
        ("MAX_SEND", "100000000"),
        ("COST_SOFT_LIMIT", "0"),
        ("COST_HARD_LIMIT", "0"),
        ("LOG_LEVEL", "info,ferrum=debug"),
    ];
    // FERRUM_BENCH_SERVER_ENV="K=V,K=V" adds to ferrum's environment (e.g. CACHE_MB=300).
    let overrides = std::env::var("FERRUM_BENCH_SERVER_ENV").unwrap_or_default();
    env.extend(overrides.split(',').filter_map(|kv| kv.split_once('=')));
    let (mut f, ports) = FerrumProcess::start_serving(&db, &["tcp"], &env);
    let pid = f.child.as_ref().expect("running").id();
    f.wait_for_tip(tip as u64, Some(&node.best_hash()), Duration::from_secs(3600));
    let sync_s = started.elapsed().as_secs_f64();
    let stats = proc_stats(pid);
    let node_cpu_s = node_cpu(node) - node_cpu_before;
    // The settled database: ferrum writes its last batch to tables and compacts after the sync.
    measure::wait_settled(&f.log_path);
    wait_idle(pid, Duration::from_secs(120));
    let port = ports["tcp"];
    f.wait_port(port, Duration::from_secs(60));
    let db_mb = dir_size(&db) as f64 / 1e6;
    print_sync("ferrum", sync_s, stats.cpu_s, node_cpu_s, db_mb);
    // The block processor's own account of the sync: where its time went, stage by stage.
    let log = std::fs::read_to_string(&f.log_path).unwrap_or_default();
    if let Some(line) = log.lines().find(|l| l.contains("caught up with the daemon")) {
        println!("ferrum's log: {}", line.split("caught up").nth(1).unwrap_or(line).trim());
    }
    let queries =
        calls.iter().map(|(name, load, make)| measure(name, port, (pid, node.pid()), make, secs, *load)).collect();
    let run =
        Run { name: "ferrum", sync_s, cpu_s: stats.cpu_s, node_cpu_s, peak_rss_mb: stats.peak_rss_mb, db_mb, queries };
    (run, port, (f, tmp))
}

fn run_electrumx(
    node: &RealNode,
    kind: NodeKind,
    tip: u32,
    calls: &[(&'static str, Load, Make)],
    secs: Duration,
) -> (Run, ElectrumX) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_cpu_before = node_cpu(node);
    let started = Instant::now();
    // Its 30 s request timeout would cut the hot history short.
    let env = [("COIN", kind.coin()), ("MAX_SEND", "100000000"), ("REQUEST_TIMEOUT", "600")];
    let mut ex = ElectrumX::start_with(&node.url(), dir.path(), &env);
    let sync_s = started.elapsed().as_secs_f64();
    let pid = ex.pid().expect("running");
    let stats = proc_stats(pid);
    let node_cpu_s = node_cpu(node) - node_cpu_before;
    ex.wait_for_height(tip as u64, Duration::from_secs(60));
    wait_idle(pid, Duration::from_secs(120));
    let db_mb = dir_size(&dir.path().join("db")) as f64 / 1e6;
    print_sync("ElectrumX 2.0.0", sync_s, stats.cpu_s, node_cpu_s, db_mb);
    let port = ex.tcp_port;
    let queries =
        calls.iter().map(|(name, load, make)| measure(name, port, (pid, node.pid()), make, secs, *load)).collect();
    ex.keep_dir(dir);
    (
        Run {
            name: "ElectrumX 2.0.0",
            sync_s,
            cpu_s: stats.cpu_s,
            node_cpu_s,
            peak_rss_mb: stats.peak_rss_mb,
            db_mb,
            queries,
        },
        ex,
    )
}

/// electrs's binary: FERRUM_ELECTRS, or where `install-test-deps.sh --with-electrs` puts it.
fn electrs_binary() -> Option<PathBuf> {
    let default = || PathBuf::from(std::env::var_os("HOME")?).join(".cache/ferrum/electrs/bin/electrs").into();
    let path = std::env::var_os("FERRUM_ELECTRS").map(PathBuf::from).or_else(default)?;
    path.is_file().then_some(path)
}

/// A serving electrs, stopped when dropped.
struct Electrs {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Electrs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// electrs on the node over RPC and REST, its database in `db`, answering on `port`.
fn electrs_command(bin: &Path, node: &RealNode, db: &Path, port: u16, log: &Path) -> Command {
    // The credentials as a cookie file: electrs takes `auth` from its config file only.
    let cookie = db.with_extension("cookie");
    std::fs::write(&cookie, node.auth()).expect("write the cookie file");
    let mut cmd = Command::new(bin);
    cmd.args(["--network", "regtest", "--log-filters", "INFO"])
        .arg("--cookie-file")
        .arg(&cookie)
        .arg("--daemon-rpc-addr")
        .arg(format!("127.0.0.1:{}", node.rpc_port))
        .arg("--daemon-dir")
        .arg(node.datadir())
        .arg("--db-dir")
        .arg(db)
        .arg("--electrum-rpc-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--monitoring-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("electrs log"));
    cmd
}

/// electrs 0.12: the initial sync alone (`--sync-once`, exits when caught up; its CPU and peak
/// memory from `wait4`), then serving from the database it built.
fn run_electrs(
    bin: &Path,
    node: &RealNode,
    tip: u32,
    calls: &[(&'static str, Load, Make)],
    secs: Duration,
) -> (Run, Electrs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, log) = (dir.path().join("db"), dir.path().join("electrs.log"));
    let node_cpu_before = node_cpu(node);
    let started = Instant::now();
    let child = electrs_command(bin, node, &db, free_port(), &log).arg("--sync-once").spawn().expect("start electrs");
    let (status, cpu_s, peak_rss_mb) = wait_with_usage(child);
    let sync_s = started.elapsed().as_secs_f64();
    let node_cpu_s = node_cpu(node) - node_cpu_before;
    let tail =
        || std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().join("\n");
    assert!(status == 0, "electrs --sync-once failed (status {status}):\n{}", tail());
    let synced_mb = dir_size(&db) as f64 / 1e6;
    print_sync("electrs 0.12", sync_s, cpu_s, node_cpu_s, synced_mb);
    println!("electrs peak RSS during its sync: {peak_rss_mb:.0} MB");

    let port = free_port();
    let child = electrs_command(bin, node, &db, port, &log).spawn().expect("start electrs");
    let electrs = Electrs { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Serving once it answers with our tip (it catches up before it reads a request).
        let height = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|_| {
            let (answer, _) = ask(port, "blockchain.headers.subscribe", json!([]));
            answer["height"].as_u64()
        });
        if height == Some(tip as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "electrs did not serve height {tip}:\n{}", tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = electrs.child.id();
    wait_idle(pid, Duration::from_secs(120));
    // Its settled database, as ferrum's is measured: electrs keeps RocksDB's compactions off
    // during its initial sync and turns them on when it ends, so `--sync-once` exits before
    // they run and the serving process does them.
    let db_mb = dir_size(&db) as f64 / 1e6;
    println!("electrs 0.12: database {db_mb:.1} MB once serving and idle (its compactions done; {synced_mb:.1} MB when --sync-once exited)");
    let queries =
        calls.iter().map(|(name, load, make)| measure(name, port, (pid, node.pid()), make, secs, *load)).collect();
    (Run { name: "electrs 0.12", sync_s, cpu_s, node_cpu_s, peak_rss_mb, db_mb, queries }, electrs)
}

/// Waits for a child to exit: its exit status, CPU seconds and peak RSS (MB), from the kernel.
fn wait_with_usage(child: Child) -> (i32, f64, f64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill; the pid is our own child,
    // which nothing else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, secs(usage.ru_utime) + secs(usage.ru_stime), usage.ru_maxrss as f64 / 1024.0)
}

fn print_sync(name: &str, sync_s: f64, cpu_s: f64, node_cpu_s: f64, db_mb: f64) {
    println!("{name}: synced in {sync_s:.1} s, {cpu_s:.1} CPU-s (the node {node_cpu_s:.1}), database {db_mb:.1} MB");
}

fn node_cpu(node: &RealNode) -> f64 {
    node.pid().map_or(0.0, |p| proc_stats(p).cpu_s)
}

/// One question on a fresh connection: its answer and how long the question took, from sending
/// it to the answer's last byte (parsing it is the client's time, not the server's).
fn ask(port: u16, method: &str, params: Value) -> (Value, Duration) {
    let mut c = Client::tcp(port);
    c.set_timeout(Duration::from_secs(600));
    c.version(json!("1.4"));
    let t = Instant::now();
    c.send_line(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string());
    let line = c.read_raw_line().unwrap_or_else(|| panic!("{method} {params}: no answer"));
    let took = t.elapsed();
    let answer: Value = serde_json::from_str(&line).expect("an answer in JSON");
    if !answer["error"].is_null() {
        panic!("{method} {params}: {}", answer["error"]);
    }
    (answer["result"].clone(), took)
}

/// Clients asking `make`'s questions in a loop for `secs`; the server's (and the node's) CPU
/// per question.
fn measure(
    name: &'static str,
    port: u16,
    (pid, node_pid): (u32, Option<u32>),
    make: &Make,
    secs: Duration,
    load: Load,
) -> QueryFigures {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let node_cpu = || node_pid.map_or(0.0, |p| proc_stats(p).cpu_s);
    let (cpu, node_before) = (proc_stats(pid).cpu_s, node_cpu());
    let started = Instant::now();
    let workers: Vec<_> = (0..load.clients)
        .map(|k| {
            let (make, latencies) = (make.clone(), latencies.clone());
            std::thread::spawn(move || {
                for i in k * 1_000_003.. {
                    let (method, params) = make(i);
                    let (_, took) = ask(port, method, params);
                    latencies.lock().expect("lock").push(took);
                    if i + 1 - k * 1_000_003 >= load.min_calls && started.elapsed() >= secs {
                        break;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = proc_stats(pid).cpu_s - cpu;
    let node_used = node_cpu() - node_before;
    let lat = Latencies(std::mem::take(&mut *latencies.lock().expect("lock")));
    let n = lat.0.len() as f64;
    QueryFigures {
        name,
        per_s: n / elapsed,
        p50: lat.percentile(0.5),
        p99: lat.percentile(0.99),
        cpu_us: used * 1e6 / n,
        node_cpu_us: node_used * 1e6 / n,
    }
}

/// Questions whose answers differ between the two servers (unspent outputs compared as sets:
/// their order is not specified).
fn disagreements(a: u16, b: u16, samples: &QuerySamples) -> usize {
    let hashes = samples.ordinary.iter().take(100).chain(std::iter::once(&samples.hot));
    let mut differ = 0;
    for hash in hashes {
        for method in ["get_history", "get_balance", "listunspent"] {
            let full = format!("blockchain.scripthash.{method}");
            let normal = |v: Value| -> Value {
                match v {
                    Value::Array(mut items) if method == "listunspent" => {
                        items.sort_by_key(|u| (u["height"].as_u64(), u["tx_hash"].to_string(), u["tx_pos"].as_u64()));
                        Value::Array(items)
                    }
                    v => v,
                }
            };
            let (x, y) = (normal(ask(a, &full, json!([hash])).0), normal(ask(b, &full, json!([hash])).0));
            if x != y {
                if differ < 3 {
                    eprintln!("{full} {hash}: ferrum {x:.200} vs {y:.200}");
                }
                differ += 1;
            }
        }
    }
    differ
}

fn report(runs: &[Run], fetch_s: f64) {
    println!("\n| | sync | sync / fetch limit | server CPU | node CPU | peak RSS | database |");
    println!("|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {:.1} s | {:.1} | {:.1} s | {:.1} s | {:.0} MB | {:.1} MB |",
            r.name,
            r.sync_s,
            r.sync_s / fetch_s,
            r.cpu_s,
            r.node_cpu_s,
            r.peak_rss_mb,
            r.db_mb
        );
    }
    println!(
        "\n| question (fresh connection each) | server | per second | p50 ms | p99 ms | server CPU µs each | node CPU µs each |"
    );
    println!("|---|---|---|---|---|---|---|");
    for k in 0..runs[0].queries.len() {
        for r in runs {
            let q = &r.queries[k];
            let name = q.name;
            println!(
                "| {name} | {} | {:.1} | {} | {} | {:.0} | {:.0} |",
                r.name,
                q.per_s,
                Latencies::ms(q.p50),
                Latencies::ms(q.p99),
                q.cpu_us,
                q.node_cpu_us
            );
        }
    }
    if let [ferrum, others @ ..] = runs {
        for other in others {
            println!(
                "\nferrum syncs {:.1}x as fast as {}, with {:.0}% of its database and {:.0}% of its peak memory",
                other.sync_s / ferrum.sync_s,
                other.name,
                ferrum.db_mb / other.db_mb * 100.0,
                ferrum.peak_rss_mb / other.peak_rss_mb * 100.0
            );
        }
    }
}
