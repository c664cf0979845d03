//! The ferrum server.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// An Electrum-protocol indexer server. Configured by environment variables with ElectrumX's
/// names (DB_DIRECTORY, DAEMON_URL, COIN, NET, SERVICES, CACHE_MB, ...): see docs/ENVIRONMENT.md.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Check the configuration (the environment) and exit: 0 if ferrum would start with it.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match ferrum::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrum: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let services: Vec<String> =
            config.services.iter().map(|s| format!("{}://{}", s.protocol.name(), s.bind_addr())).collect();
        println!(
            "configuration OK: {} {}, database {}, {} daemon URL(s), services {}, metrics {}",
            config.coin.name,
            config.coin.net,
            config.db_dir.display(),
            config.daemon_urls.len(),
            services.join(","),
            config.metrics_addr.map_or("off".to_string(), |a| a.to_string())
        );
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_new(&config.log_level)
        .or_else(|_| EnvFilter::try_new(format!("ferrum={}", config.log_level)))
        .unwrap_or_else(|_| {
            eprintln!("ferrum: LOG_LEVEL {:?} is not a level or filter; using info", config.log_level);
            EnvFilter::new("info")
        });
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && !config.allow_root {
        tracing::error!("refusing to run as root: run ferrum as an unprivileged user, or set ALLOW_ROOT=1 if you must");
        return ExitCode::from(2);
    }

    fit_sessions_to_file_limit(&mut config);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("ferrum").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrum: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (tx, _) = tokio::sync::watch::channel(false);
        tokio::spawn(ferrum::app::signal_shutdown(tx.clone()));
        ferrum::app::run(config, tx).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ferrum: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each session is a file descriptor, and RocksDB and the daemon connections need some: raise
/// the open-file limit as far as allowed, and lower MAX_SESSIONS to what it leaves (keeping 350
/// for the rest, as ElectrumX does) rather than fail on accept later.
fn fit_sessions_to_file_limit(config: &mut ferrum::config::Config) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a properly initialised struct.
    let limit = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let room = usize::try_from(limit.saturating_sub(350)).unwrap_or(usize::MAX).max(1);
    if config.max_sessions > room {
        tracing::warn!(
            "lowered MAX_SESSIONS from {} to {room}: the open file limit is {limit} (raise it with `ulimit -n` or LimitNOFILE= in the systemd unit)",
            config.max_sessions
        );
        config.max_sessions = room;
    }
}
