//! Fuzzing the request parser and dispatcher, with a real index behind them.
//!
//! 1. A property test (proptest): a seed from tests/fuzz/corpus.txt, mutated (flipped,
//!    inserted, deleted and duplicated bytes, splices, huge numbers, long strings, nesting,
//!    batches, truncation, bytes that are not UTF-8), is sent to ferrum serving a scripted
//!    chain. Every answer must be a well-formed JSON-RPC response, the session must answer what
//!    follows, and if ferrum closed it, ferrum must still serve a new one. A failure shrinks to
//!    a small case and is kept in tests/fuzz/regressions.txt, replayed first on every run.
//! 2. A black-box run like an attacker's: many connections of mutated traffic (some pipelining
//!    without reading, some leaving half a line), beside a control wallet whose answers and
//!    latency are checked, and ferrum's memory before and after.
//!
//! `cargo test --test fuzz` runs a short round of each (CI). The long run:
//!   FERRUM_FUZZ_CASES=200000 FERRUM_FUZZ_SECS=90 cargo test --release --test fuzz -- --nocapture

use ferrum_testkit as common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use common::bench::{env_usize, proc_stats};
use common::chain::ChainBuilder;
use common::client::{connect_from, scripthash, Client};
use common::fuzz::{check_answer, Corpus, Mutation};
use common::served::Server;

struct Harness {
    server: Server,
    corpus: Corpus,
    client: Client,
    sent: u64,
    closed: u64,
}

/// One harness per test thread, kept across proptest's cases and dropped (ferrum stopped) when
/// the thread ends.
fn with_harness<T>(f: impl FnOnce(&mut Harness) -> T) -> T {
    thread_local! {
        static H: RefCell<Option<Harness>> = const { RefCell::new(None) };
    }
    H.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            let mut chain = ChainBuilder::new(1804);
            chain.add_blocks(20);
            let corpus = Corpus::for_chain(&chain);
            // The cost model off: one session sends everything, and it is the parser under test.
            let server = Server::start(chain, &["tcp"], &[("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "0")]);
            let client = fresh(&server);
            Harness { server, corpus, client, sent: 0, closed: 0 }
        });
        f(h)
    })
}

fn fresh(server: &Server) -> Client {
    let c = server.negotiated();
    c.set_timeout(Duration::from_secs(20));
    c
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1..16usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), 1..64usize).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, k)| Mutation::HugeNumber(a, k)),
        (any::<usize>(), 1..20_000usize).prop_map(|(a, n)| Mutation::LongString(a, n)),
        (1..3000usize).prop_map(Mutation::Nest),
        (1..600usize).prop_map(Mutation::Batch),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::NotUtf8),
    ]
}

/// Sends one fuzzed message, then a request that changes the session (so it is answered only
/// after everything before it); every line up to that answer must be well formed.
fn exchange(h: &mut Harness, message: &[u8]) -> Result<(), String> {
    h.sent += 1;
    let sentinel = format!("sentinel-{}", h.sent);
    let mut bytes = message.to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(
        json!({"jsonrpc": "2.0", "id": sentinel, "method": "blockchain.scripthash.unsubscribe", "params": ["00".repeat(32)]})
            .to_string()
            .as_bytes(),
    );
    bytes.push(b'\n');
    let shown = String::from_utf8_lossy(&message[..message.len().min(300)]).to_string();
    if h.client.send_bytes(&bytes).is_ok() {
        while let Some(line) = h.client.read_raw_line() {
            check_answer(&line).map_err(|e| format!("{e}\n  after sending {shown:?}"))?;
            if line.contains(&format!("\"{sentinel}\"")) {
                return Ok(());
            }
        }
    }
    // Closed (a message over MAX_RECV, a refused version…) or silent: ferrum must still serve.
    h.closed += 1;
    h.client = fresh(&h.server);
    let pong = h.client.call("server.ping", json!([]));
    if pong != Ok(Value::Null) {
        return Err(format!("ferrum stopped serving after {shown:?}: {pong:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: env_usize("FERRUM_FUZZ_CASES", 1500) as u32,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/fuzz/regressions.txt"))),
        max_shrink_iters: 2000,
        ..Config::default()
    })]

    #[test]
    fn every_message_gets_well_formed_answers(seed in any::<usize>(), ops in prop::collection::vec(mutation(), 0..5)) {
        let result = with_harness(|h| {
            let message = h.corpus.mutated(seed, &ops);
            exchange(h, &message)
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// Each corpus line unmutated: the seeds themselves are answered, and nothing closes.
#[test]
fn the_corpus_is_answered() {
    with_harness(|h| {
        for i in 0..h.corpus.seeds.len() {
            let seed = h.corpus.seeds[i].clone();
            exchange(h, &seed).unwrap();
        }
        assert_eq!(h.closed, 0, "a corpus line closed the session");
    });
}

/// Numbers from the control wallet's view of the run.
#[derive(Default)]
struct Control {
    latencies_ms: Vec<f64>,
    wrong: Vec<String>,
}

/// Many connections of mutated traffic from their own addresses, with the default limits, for
/// FERRUM_FUZZ_SECS seconds, each sending about a thousand messages a second: two of them pipeline without ever reading, one leaves half a line
/// and goes on, the rest read and check every answer. A control wallet asks for a balance, a
/// history and a header every 20 ms; its answers must stay right, and it must stay fast.
/// Afterwards ferrum's memory must come back near where it started.
#[test]
fn hostile_connections_beside_a_wallet() {
    let mut chain = ChainBuilder::new(1805);
    chain.add_blocks(30);
    let corpus = Arc::new(Corpus::for_chain(&chain));
    let hot = scripthash(chain.hot_scripts()[0].as_bytes());
    // The control wallet (127.0.0.1) asks 150 times a second, far more than a wallet does: the
    // cost model would throttle it, so it is exempt; the hostile clients get the default limits.
    let mut server = Server::start(chain, &["tcp"], &[("COST_EXEMPT", "127.0.0.1/32")]);
    let port = server.port("tcp");
    let pid = server.ferrum.child.as_ref().expect("running").id();
    let mut control = server.negotiated();
    let calls = [
        ("blockchain.scripthash.get_balance", json!([hot])),
        ("blockchain.scripthash.get_history", json!([hot])),
        ("blockchain.block.header", json!([7])),
    ];
    let expected: Vec<Value> = calls.iter().map(|(m, p)| control.ok(m, p.clone())).collect();
    let before = proc_stats(pid);
    let load_before = proc_stats(std::process::id());

    let secs = env_usize("FERRUM_FUZZ_SECS", 8) as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let (answers, invalid, sent) =
        (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    for k in 0..8u8 {
        let (corpus, stop, answers, invalid, sent) =
            (corpus.clone(), stop.clone(), answers.clone(), invalid.clone(), sent.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(k as u64);
            let from = Ipv4Addr::new(127, 0, 18, 10 + k);
            while !stop.load(Ordering::Relaxed) {
                let Ok(stream) = connect_from(from, port) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let reader = (k >= 2).then(|| {
                    let (stream, answers, invalid) =
                        (stream.try_clone().expect("clone"), answers.clone(), invalid.clone());
                    std::thread::spawn(move || {
                        for line in BufReader::new(stream).lines() {
                            let Ok(line) = line else { break };
                            answers.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = check_answer(&line) {
                                invalid.lock().unwrap().push(e);
                            }
                        }
                    })
                });
                let mut w = stream;
                let _ = w.set_write_timeout(Some(Duration::from_secs(2)));
                for _ in 0..rng.gen_range(20..400) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut m = corpus.random(&mut rng, 4);
                    // One connection leaves half a line now and then, and the next one is glued to it.
                    if k != 2 || !rng.gen_bool(0.2) {
                        m.push(b'\n');
                    }
                    if w.write_all(&m).is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    // About a thousand messages a second per connection: hostile, yet leaving the
                    // 2 cores to ferrum rather than to making mutations.
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = w.shutdown(std::net::Shutdown::Both);
                if let Some(r) = reader {
                    let _ = r.join();
                }
            }
        }));
    }

    let started = Instant::now();
    let mut c = Control::default();
    while started.elapsed() < Duration::from_secs(secs) {
        for ((method, params), want) in calls.iter().zip(&expected) {
            let t = Instant::now();
            match control.call(method, params.clone()) {
                Ok(got) if &got == want => {}
                other => c.wrong.push(format!("{method}: {other:?}")),
            }
            c.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a fuzzing connection panicked");
    }
    let load = proc_stats(std::process::id()).cpu_s - load_before.cpu_s;
    let served = proc_stats(pid).cpu_s - before.cpu_s;
    // Every hostile session is closed by now; give ferrum a moment to drop them.
    std::thread::sleep(Duration::from_secs(2));
    let after = proc_stats(pid);

    c.latencies_ms.sort_by(f64::total_cmp);
    let p = |q: f64| c.latencies_ms[((c.latencies_ms.len() - 1) as f64 * q) as usize];
    let invalid = invalid.lock().unwrap();
    eprintln!(
        "{secs} s: {} messages sent, {} answers read, {} invalid; control: {} calls, p50 {:.1} ms, p99 {:.1} ms, \
         {} wrong; RSS {:.1} → {:.1} MiB (peak {:.1}); CPU: ferrum {served:.1} s, the test's clients {load:.1} s",
        sent.load(Ordering::Relaxed),
        answers.load(Ordering::Relaxed),
        invalid.len(),
        c.latencies_ms.len(),
        p(0.5),
        p(0.99),
        c.wrong.len(),
        before.rss_mb,
        after.rss_mb,
        after.peak_rss_mb
    );
    assert!(invalid.is_empty(), "malformed answers: {:?}", &invalid[..invalid.len().min(5)]);
    assert!(c.wrong.is_empty(), "the control wallet got wrong answers: {:?}", &c.wrong[..c.wrong.len().min(5)]);
    assert!(answers.load(Ordering::Relaxed) > 200, "the hostile traffic was hardly answered");
    assert!(p(0.99) < 500.0, "control p99 {:.1} ms", p(0.99));
    assert!(after.rss_mb - before.rss_mb < 64.0, "RSS {:.1} → {:.1} MiB", before.rss_mb, after.rss_mb);
    server.assert_healthy();
}
