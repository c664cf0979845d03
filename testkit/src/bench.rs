//! What the benchmarks in `benches/` share: the cache of generated chains, figures read from
//! /proc, latency statistics and a small async Electrum client for many concurrent sessions.
//!
//! Each benchmark is a `harness = false` target. `cargo bench --bench NAME` passes `--bench` and
//! gets the full run; `cargo test` (CI) runs the same code on a small input, as a smoke test.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::Block;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::chain::{ChainBuilder, ChainOptions};
use crate::process::FerrumProcess;
use crate::scripted_daemon::{DaemonOptions, ScriptedDaemon};

/// Full run (`cargo bench`) or smoke run (`cargo test`).
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// What an A/B benchmark of two server modes starts from: the standard chain (small unless
/// `full`), its query samples, a scripted daemon serving it, and the rounds and their length.
pub struct AbSetup {
    pub spec: ChainSpec,
    pub samples: QuerySamples,
    pub daemon: ScriptedDaemon,
    pub rounds: usize,
    pub secs: Duration,
}

impl AbSetup {
    pub fn standard(full: bool) -> AbSetup {
        let spec = ChainSpec::standard(
            env_usize("FERRUM_BENCH_BLOCKS", if full { 5000 } else { 40 }),
            env_usize("FERRUM_BENCH_TXS", if full { 200 } else { 20 }),
        );
        let rounds = env_usize("FERRUM_BENCH_ROUNDS", if full { 5 } else { 1 });
        let secs = Duration::from_secs(if full { 3 } else { 1 });
        let chain = spec.load();
        let samples = QuerySamples::draw(&spec, &chain);
        let daemon = ScriptedDaemon::start(chain, DaemonOptions::default());
        AbSetup { spec, samples, daemon, rounds, secs }
    }
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `$FERRUM_CACHE_DIR`, else `~/.cache/ferrum` (where the test nodes are cached too).
pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FERRUM_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(home).join(".cache/ferrum")
}

/// What a benchmark chain is made of; the same spec always gives the same blocks.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub seed: u64,
    pub blocks: usize,
    pub opts: ChainOptions,
}

impl ChainSpec {
    /// The benchmarks' standard shape: `txs` transactions per block, five hot scripts taking 20%
    /// of the outputs (each of them ends up in ~14% of all transactions), 30% of transactions
    /// spending an output of their own block, 2% batch payouts of 20-50 outputs.
    pub fn standard(blocks: usize, txs: usize) -> ChainSpec {
        let opts = ChainOptions {
            min_txs: txs,
            max_txs: txs,
            hot_scripts: 5,
            hot_probability: 0.2,
            batch_payout_probability: 0.02,
            ..ChainOptions::default()
        };
        ChainSpec { seed: 42, blocks, opts }
    }

    /// The chain's name: its size and the parameters' digest, so a changed generator option
    /// never reuses a chain.
    pub fn name(&self) -> String {
        // Bump when the generator's output for the same options changes.
        const GENERATOR_VERSION: u32 = 1;
        let digest = Sha256::digest(format!("{GENERATOR_VERSION} {self:?}"));
        format!("chain-{}x{}-{}", self.blocks, self.opts.max_txs, hex::encode(&digest[..8]))
    }

    fn file(&self) -> PathBuf {
        cache_dir().join("chains").join(format!("{}.bin", self.name()))
    }

    /// A builder positioned at the chain's tip, ready to add more blocks.
    pub fn builder(&self) -> ChainBuilder {
        ChainBuilder::resume(self.seed, self.opts.clone(), self.load())
    }

    /// The chain (genesis plus `blocks` blocks): read from the cache, or generated and cached.
    pub fn load(&self) -> Vec<Block> {
        let path = self.file();
        let started = Instant::now();
        if let Some(blocks) = read_chain(&path) {
            eprintln!(
                "loaded {} blocks from {} in {:.1} s",
                blocks.len(),
                path.display(),
                started.elapsed().as_secs_f64()
            );
            return blocks;
        }
        let mut b = ChainBuilder::with_options(self.seed, self.opts.clone());
        b.add_blocks(self.blocks);
        let blocks = b.blocks().to_vec();
        let txs: usize = blocks.iter().map(|b| b.txdata.len()).sum();
        eprintln!("generated {} blocks, {txs} txs in {:.1} s", blocks.len(), started.elapsed().as_secs_f64());
        if let Err(e) = write_chain(&path, &blocks) {
            eprintln!("could not cache the chain at {}: {e}", path.display());
        }
        blocks
    }
}

const MAGIC: &[u8; 8] = b"FRMCHN01";

fn read_chain(path: &Path) -> Option<Vec<Block>> {
    let mut data = Vec::new();
    std::fs::File::open(path).ok()?.read_to_end(&mut data).ok()?;
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (count, mut rest) = rest.split_at_checked(4)?;
    let count = u32::from_le_bytes(count.try_into().ok()?) as usize;
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, r) = rest.split_at_checked(4)?;
        let (raw, r) = r.split_at_checked(u32::from_le_bytes(len.try_into().ok()?) as usize)?;
        blocks.push(deserialize(raw).ok()?);
        rest = r;
    }
    rest.is_empty().then_some(blocks)
}

fn write_chain(path: &Path, blocks: &[Block]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(MAGIC)?;
    f.write_all(&(blocks.len() as u32).to_le_bytes())?;
    for b in blocks {
        let raw = serialize(b);
        f.write_all(&(raw.len() as u32).to_le_bytes())?;
        f.write_all(&raw)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // Readers only ever see a complete file.
    std::fs::rename(tmp, path)
}

/// What the query benchmarks ask about, drawn once, deterministically, from the whole chain:
/// the generator's first hot script hash (over 100,000 transactions on the full chain),
/// 1,000 "ordinary" script hashes (random non-hot output scripts, 1-3 transactions each) and
/// transactions with their heights.
pub struct QuerySamples {
    pub hot: String,
    pub ordinary: Arc<Vec<String>>,
    pub txs: Arc<Vec<(String, usize)>>,
}

impl QuerySamples {
    pub fn draw(spec: &ChainSpec, chain: &[Block]) -> QuerySamples {
        use rand::{Rng, SeedableRng};
        let hot_scripts = ChainBuilder::with_options(spec.seed, spec.opts.clone()).hot_scripts().to_vec();
        let hot = crate::client::scripthash(hot_scripts[0].as_bytes());
        let hot_set: std::collections::HashSet<_> = hot_scripts.into_iter().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let tip = chain.len() - 1;
        let (mut ordinary, mut txs) = (Vec::new(), Vec::new());
        while ordinary.len() < 1000 {
            let height = rng.gen_range(1..=tip);
            let block = &chain[height];
            let tx = &block.txdata[rng.gen_range(0..block.txdata.len())];
            txs.push((tx.compute_txid().to_string(), height));
            if let Some(o) =
                tx.output.iter().find(|o| !o.script_pubkey.is_op_return() && !hot_set.contains(&o.script_pubkey))
            {
                ordinary.push(crate::client::scripthash(o.script_pubkey.as_bytes()));
            }
        }
        QuerySamples { hot, ordinary: Arc::new(ordinary), txs: Arc::new(txs) }
    }
}

/// ferrum indexing the daemon's regtest chain, waited for until it serves TCP (it opens client
/// ports once caught up): the process, its TCP port, and the directory holding its DB and log.
pub fn serve(daemon: &ScriptedDaemon, extra_env: &[(&str, &str)]) -> (FerrumProcess, u16, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = daemon.url();
    // The cost model off unless asked for: load generators on one address would be throttled.
    let mut env = vec![
        ("DAEMON_URL", url.as_str()),
        ("COIN", "Bitcoin"),
        ("NET", "regtest"),
        ("COST_SOFT_LIMIT", "0"),
        ("COST_HARD_LIMIT", "0"),
    ];
    env.extend_from_slice(extra_env);
    // FERRUM_BENCH_SERVER_ENV="K=V,K=V" overrides, e.g. to profile with the cost model on.
    let overrides = std::env::var("FERRUM_BENCH_SERVER_ENV").unwrap_or_default();
    env.extend(overrides.split(',').filter_map(|kv| kv.split_once('=')));
    let (mut f, ports) = FerrumProcess::start_serving(&tmp.path().join("db"), &["tcp"], &env);
    let port = ports["tcp"];
    f.wait_port(port, Duration::from_secs(1800));
    (f, port, tmp)
}

/// Gives `block` to the scripted daemon by `submitblock`, as a miner gives it to bitcoind.
pub fn submit_block(daemon_port: u16, block: &Block) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("user:pass");
    let body = json!({"jsonrpc": "1.0", "id": 1, "method": "submitblock", "params": [hex::encode(serialize(block))]});
    let (status, reply) =
        crate::nodes::http_post(daemon_port, &auth, &body.to_string(), Duration::from_secs(60)).expect("submitblock");
    assert_eq!(status, 200, "submitblock: {}", String::from_utf8_lossy(&reply));
}

pub fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes of a database directory by kind of file: RocksDB's tables (`.sst`), its write-ahead
/// log (`.log`), ferrum's txid file, and the rest (manifests, options, peers.json).
pub fn db_breakdown(path: &Path) -> String {
    let mut by: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let kind = if name.ends_with(".sst") {
            "sst"
        } else if name.ends_with(".log") && name != "LOG" {
            "wal"
        } else if name == "txids" {
            "txids"
        } else {
            "other"
        };
        *by.entry(kind).or_default() += e.metadata().map_or(0, |m| m.len());
    }
    by.iter().map(|(k, v)| format!("{k} {:.1} MB", *v as f64 / 1e6)).collect::<Vec<_>>().join(", ")
}

/// Figures of a live process from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ProcStats { rss_mb: kb("VmRSS:") / 1024.0, peak_rss_mb: kb("VmHWM:") / 1024.0, cpu_s: ticks / 100.0 }
}

/// Waits (at most `max`) until `pid` uses under 5% of a core over a second: RocksDB compacts in
/// the background for a while after a sync, and queries measured meanwhile share the 2 cores.
pub fn wait_idle(pid: u32, max: Duration) -> Duration {
    let started = Instant::now();
    let mut last = proc_stats(pid).cpu_s;
    while started.elapsed() < max {
        std::thread::sleep(Duration::from_secs(1));
        let now = proc_stats(pid).cpu_s;
        if now - last < 0.05 {
            break;
        }
        last = now;
    }
    started.elapsed()
}

/// Raises this process's open-file limit to its hard limit (thousands of sessions need it).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a properly initialised struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// Latency samples.
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    pub fn ms(d: Duration) -> String {
        format!("{:.2}", d.as_secs_f64() * 1e3)
    }
}

/// A minimal async Electrum client: enough for thousands of concurrent sessions in one process.
pub struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    next_id: u64,
    line: Vec<u8>,
}

impl Session {
    pub async fn connect(port: u16) -> std::io::Result<Session> {
        Self::connect_with_buffer(port, 8 << 10).await
    }

    /// A session reading through a `buffer`-byte buffer: 1 MB lets a client take an 18 MB
    /// answer in big reads, as fast as the server sends it (8 KB reads made the client the
    /// bottleneck); thousands of sessions keep the small default.
    pub async fn connect_with_buffer(port: u16, buffer: usize) -> std::io::Result<Session> {
        Self::connect_from(port, std::net::Ipv4Addr::UNSPECIFIED, buffer).await
    }

    /// A session from the loopback address `source` (127.x.y.z), so ferrum sees clients of
    /// different subnets; `0.0.0.0` lets the kernel choose.
    pub async fn connect_from(port: u16, source: std::net::Ipv4Addr, buffer: usize) -> std::io::Result<Session> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let stream = socket.connect((std::net::Ipv4Addr::LOCALHOST, port).into()).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut s = Session { reader: BufReader::with_capacity(buffer, r), writer: w, next_id: 0, line: Vec::new() };
        s.call("server.version", json!(["ferrum-bench", "1.4"])).await?;
        Ok(s)
    }

    /// Reads the next message (response or notification).
    pub async fn read(&mut self) -> std::io::Result<Value> {
        Ok(self.read_at().await?.0)
    }

    /// The next message, and when its last byte arrived (before the client parsed it).
    async fn read_at(&mut self) -> std::io::Result<(Value, Instant)> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the session"));
        }
        let arrived = Instant::now();
        let msg =
            serde_json::from_slice(&self.line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok((msg, arrived))
    }

    pub async fn send(&mut self, request: &Value) -> std::io::Result<()> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await
    }

    /// One call whose answer is read but not parsed (an attacker does not parse 18 MB
    /// histories): whether it was a result, not an error. Notifications are not expected.
    pub async fn call_unparsed(&mut self, method: &str, params: Value) -> std::io::Result<bool> {
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})).await?;
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the session"));
        }
        Ok(self.line.starts_with(ferrum::jsonrpc::RESULT_HEAD.as_bytes()))
    }

    /// One call; notifications arriving meanwhile are dropped. Errors become `InvalidData`.
    pub async fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        Ok(self.call_at(method, params).await?.0)
    }

    /// A call, and when the answer's last byte arrived. Latencies end there: parsing an 18 MB
    /// history into a `Value` takes this client longer than the server takes to answer.
    pub async fn call_at(&mut self, method: &str, params: Value) -> std::io::Result<(Value, Instant)> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        loop {
            let (mut msg, arrived) = self.read_at().await?;
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(e) = msg.get("error").filter(|e| !e.is_null()) {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{method}: {e}")));
                }
                return Ok((msg["result"].take(), arrived));
            }
        }
    }

    /// Reads until each of `hashes` (and the headers, when `headers`) has been notified;
    /// returns when the last one arrived. Panics after `timeout` without a message.
    pub async fn await_notifications(
        &mut self,
        mut hashes: std::collections::HashSet<String>,
        mut headers: bool,
        timeout: Duration,
    ) -> Instant {
        let mut last = Instant::now();
        while !hashes.is_empty() || headers {
            let (msg, arrived) = tokio::time::timeout(timeout, self.read_at())
                .await
                .expect("notifications arrive in time")
                .expect("session open");
            last = arrived;
            match msg["method"].as_str() {
                Some("blockchain.scripthash.subscribe") => {
                    hashes.remove(msg["params"][0].as_str().unwrap_or_default());
                }
                Some("blockchain.headers.subscribe") => headers = false,
                _ => {}
            }
        }
        last
    }

    /// Subscribes to `hashes` in one batch; returns their statuses.
    pub async fn subscribe_all(&mut self, hashes: &[String]) -> std::io::Result<Vec<Value>> {
        let first = self.next_id + 1;
        self.next_id += hashes.len() as u64;
        let batch: Vec<Value> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({"jsonrpc": "2.0", "id": first + i as u64, "method": "blockchain.scripthash.subscribe", "params": [h]})
            })
            .collect();
        self.send(&Value::Array(batch)).await?;
        loop {
            if let Value::Array(items) = self.read().await? {
                return Ok(items.into_iter().map(|i| i["result"].clone()).collect());
            }
        }
    }
}

/// Opens `n` sessions, `parallel` connection attempts at a time.
pub async fn connect_many(port: u16, n: usize, parallel: usize) -> Vec<Session> {
    futures::stream::iter(0..n)
        .map(|_| async move {
            let mut delay = Duration::from_millis(10);
            loop {
                match Session::connect(port).await {
                    Ok(s) => return s,
                    // A full accept backlog refuses or resets; try again shortly.
                    Err(_) if delay < Duration::from_secs(5) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => panic!("cannot open a session: {e}"),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Times a sequence of `count` calls made by `make(i)` on one session.
pub async fn time_calls(
    session: &mut Session,
    count: usize,
    make: &(dyn Fn(usize) -> (&'static str, Value) + Sync),
) -> Latencies {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let (method, params) = make(i);
        let t = Instant::now();
        let (_, arrived) = session.call_at(method, params).await.expect("call succeeds");
        samples.push(arrived - t);
    }
    Latencies(samples)
}

/// Calls per second with `sessions` sessions each calling in a loop for `duration`.
pub async fn throughput(
    port: u16,
    sessions: usize,
    duration: Duration,
    make: Arc<dyn Fn(usize) -> (&'static str, Value) + Send + Sync>,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|k| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut s = Session::connect_with_buffer(port, 1 << 20).await.expect("connect");
                let mut done = 0usize;
                while started.elapsed() < duration {
                    let (method, params) = make(k * 1_000_003 + done);
                    s.call(method, params).await.expect("call succeeds");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// A call the benchmarks make in a loop: `make(i)` gives the i-th call's method and params.
pub type MakeCall = Arc<dyn Fn(usize) -> (&'static str, Value) + Send + Sync>;

/// Restarts ferrum on the same database with `env` changed; waits until it serves again.
pub fn restart(f: &mut FerrumProcess, port: u16, env: &[(&str, &str)]) {
    f.stop();
    for (k, v) in env {
        f.env.insert(k.to_string(), v.to_string());
    }
    f.spawn();
    f.wait_port(port, Duration::from_secs(300));
}

/// Median, lowest and highest.
pub fn median_and_range(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Two configurations of ferrum compared on the same database: `rounds` alternating rounds,
/// ferrum restarted with each mode's environment, every call measured for `secs` with 4
/// sessions. Prints calls/s and ferrum's CPU per call (steadier on a shared machine: the load
/// generator's share of the cores does not enter it), median (range), and the change.
pub fn compare_modes(
    f: &mut FerrumProcess,
    port: u16,
    modes: [(&str, &[(&str, &str)]); 2],
    calls: &[(&str, MakeCall)],
    rounds: usize,
    secs: Duration,
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut per_s: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; calls.len()];
    let mut cpu_us: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; calls.len()];
    for round in 0..rounds {
        for (mode, (_, env)) in modes.iter().enumerate() {
            restart(f, port, env);
            let pid = f.child.as_ref().expect("running").id();
            for (k, (_, make)) in calls.iter().enumerate() {
                let cpu = proc_stats(pid).cpu_s;
                let rate = rt.block_on(throughput(port, 4, secs, make.clone()));
                let used = proc_stats(pid).cpu_s - cpu;
                per_s[k][mode].push(rate);
                cpu_us[k][mode].push(used * 1e6 / (rate * secs.as_secs_f64()));
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let (a, b) = (modes[0].0, modes[1].0);
    println!("\n4 sessions calling in a loop, median (range) of {rounds} rounds of {} s:", secs.as_secs());
    println!("| call | calls/s, {a} | calls/s, {b} | change | ferrum CPU µs/call, {a} | {b} | change |");
    println!("|---|---|---|---|---|---|---|");
    for (k, (name, _)) in calls.iter().enumerate() {
        let (x, x_lo, x_hi) = median_and_range(&per_s[k][0]);
        let (y, y_lo, y_hi) = median_and_range(&per_s[k][1]);
        let (cx, cx_lo, cx_hi) = median_and_range(&cpu_us[k][0]);
        let (cy, cy_lo, cy_hi) = median_and_range(&cpu_us[k][1]);
        println!(
            "| {name} | {x:.0} ({x_lo:.0}-{x_hi:.0}) | {y:.0} ({y_lo:.0}-{y_hi:.0}) | {:+.1}% | \
             {cx:.1} ({cx_lo:.1}-{cx_hi:.1}) | {cy:.1} ({cy_lo:.1}-{cy_hi:.1}) | {:+.1}% |",
            (y / x - 1.0) * 100.0,
            (cy / cx - 1.0) * 100.0
        );
    }
}

/// The calls wallets make most, over the samples: ordinary balances and histories, merkle proofs.
pub fn common_calls(samples: &QuerySamples) -> Vec<(&'static str, MakeCall)> {
    let (o1, o2, t) = (samples.ordinary.clone(), samples.ordinary.clone(), samples.txs.clone());
    vec![
        ("get_balance (ordinary)", Arc::new(move |i| ("blockchain.scripthash.get_balance", json!([o1[i % o1.len()]])))),
        ("get_history (ordinary)", Arc::new(move |i| ("blockchain.scripthash.get_history", json!([o2[i % o2.len()]])))),
        (
            "transaction.get_merkle",
            Arc::new(move |i| ("blockchain.transaction.get_merkle", json!([t[i % t.len()].0, t[i % t.len()].1]))),
        ),
    ]
}
