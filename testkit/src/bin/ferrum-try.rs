//! `contrib/try.sh`: ferrum on a private regtest chain, until Ctrl-C (see `try_it`).
//! `--once` starts, prints the instructions, mines one payment and stops (for tests).
//! `--metrics ADDR` serves ferrum's metrics there; `--load SECONDS` runs wallets against it for
//! that long, mining a block every 5 s, then stops (contrib/grafana/picture.sh).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrum_testkit::try_it::Demo;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let once = args.iter().any(|a| a == "--once");
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let metrics = value("--metrics");
    let load: Option<u64> = value("--load").map(|s| s.parse().expect("--load takes a number of seconds"));
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!("starting a regtest node, mining a chain with payments, and indexing it with ferrum…");
    let env: Vec<(&str, &str)> = metrics.iter().map(|a| ("METRICS_ADDR", a.as_str())).collect();
    let demo = Demo::start_with(&env);
    println!("\n{}\n", demo.instructions());
    if let Some(secs) = load {
        let n = ferrum_testkit::try_it::load(&demo, 64, Duration::from_secs(secs), Duration::from_secs(5));
        println!("{n} requests answered; stopping");
        return;
    }
    let mut last = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        if once || last.elapsed() >= Duration::from_secs(60) {
            let txid = demo.mine_payment();
            println!("mined block {} paying the wallet in {txid}", demo.core.height());
            last = Instant::now();
            if once {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping ferrum and the node");
}
