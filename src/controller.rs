//! The controller starts the stages, runs the sync loop (compare with the daemon's tip, unwind
//! a reorg, prefetch and apply new blocks), serves admin requests that change the index, and
//! shuts everything down cleanly.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::admin::{self, AdminContext, AdminRequest};
use crate::block_processor::{BlockProcessor, Command};
use crate::chain::Chain;
use crate::coins;
use crate::config::Config;
use crate::daemon::{Daemon, DaemonError};
use crate::db::Db;
use crate::index::{Index, IndexEvent};
use crate::mempool;
use crate::prefetch::{FetchError, Prefetcher};
use crate::schema::hex_rev;
use crate::session::Manager;
use crate::status::Status;

enum RoundError {
    Shutdown,
    Fatal(anyhow::Error),
}

impl From<DaemonError> for RoundError {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Shutdown => RoundError::Shutdown,
            other => RoundError::Fatal(anyhow!(other)),
        }
    }
}

/// Runs ferrum until shutdown (Ok) or a fatal error (Err, with what the operator should do).
pub async fn run(config: Config, shutdown_tx: watch::Sender<bool>) -> Result<()> {
    let config = Arc::new(config);
    let coin = config.coin;
    tracing::info!(
        "ferrum {} starting: {} {}, database {}",
        crate::VERSION,
        coin.name,
        coin.net,
        config.db_dir.display()
    );

    let db_path = config.db_dir.clone();
    let db = Arc::new(tokio::task::spawn_blocking(move || Db::open(&db_path, coin)).await??);
    let chain = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || load_chain(&db)).await??
    };
    let status = Arc::new(Status::default());
    match (chain.height(), chain.tip_hash()) {
        (Some(h), Some(hash)) => {
            status.set_indexed(h, hash, chain.tx_count());
            tracing::info!("index at height {h} ({}), {} transactions", hex_rev(&hash), chain.tx_count());
        }
        _ => tracing::info!("index is empty; starting initial sync from genesis"),
    }
    let chain = Arc::new(RwLock::new(chain));
    let index = Arc::new(Index::new(db.clone(), chain.clone(), coin));
    let daemon = Arc::new(Daemon::new(&config, shutdown_tx.subscribe()));
    let mempool_wakeup = Arc::new(Notify::new());
    let sessions =
        Manager::new(config.clone(), index.clone(), daemon.clone(), mempool_wakeup.clone(), shutdown_tx.subscribe())?;

    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(16);
    let ctx = Arc::new(AdminContext {
        config: config.clone(),
        status: status.clone(),
        index: index.clone(),
        sessions: sessions.clone(),
        daemon: daemon.clone(),
        requests: admin_tx,
        shutdown: shutdown_tx.clone(),
    });
    if let Some(svc) = config.rpc_service() {
        admin::start(svc, ctx).await?;
    }

    let mut shutdown = shutdown_tx.subscribe();
    match check_daemon(&daemon, coin).await {
        Ok(()) => {}
        Err(RoundError::Shutdown) => return Ok(()),
        Err(RoundError::Fatal(e)) => return Err(e),
    }

    // The block processor owns the writes, on its own thread.
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(4096);
    let failed = Arc::new(AtomicBool::new(false));
    let processor = BlockProcessor::new(index.clone(), config.cache_bytes(), config.reorg_limit, status.clone())?;
    let thread = {
        let failed = failed.clone();
        std::thread::Builder::new().name("block-processor".into()).spawn(move || processor.run(cmd_rx, failed))?
    };
    let prefetcher = Prefetcher::new(daemon.clone(), coin, config.prefetch_bytes, config.prefetch_concurrency);
    let syncer = Syncer {
        config: config.clone(),
        daemon: daemon.clone(),
        chain: chain.clone(),
        status: status.clone(),
        cmd_tx: cmd_tx.clone(),
        failed,
        prefetcher,
    };

    let block_wakeup = Arc::new(Notify::new());
    tokio::spawn(watch_tip(daemon.clone(), block_wakeup.clone(), config.poll_interval_blocks, shutdown_tx.subscribe()));

    let mut serving = false;
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        let again = match syncer.round(&mut shutdown).await {
            Ok(again) => again,
            Err(RoundError::Shutdown) => break Ok(()),
            Err(RoundError::Fatal(e)) => break Err(e),
        };
        if again {
            continue;
        }
        if status.caught_up() {
            // Between block rounds, so the mempool's view of the UTXO set cannot shift under it.
            match mempool::sync(&index, &daemon).await {
                Ok(report) => {
                    if report.added + report.removed > 0 {
                        tracing::debug!(
                            "mempool: {} added, {} removed, {} skipped",
                            report.added,
                            report.removed,
                            report.skipped
                        );
                    }
                    if !report.touched.is_empty() {
                        index.publish(IndexEvent { touched: report.touched, new_tip: false });
                    }
                }
                Err(DaemonError::Shutdown) => break Ok(()),
                Err(e) => tracing::warn!("refreshing the mempool failed: {e}"),
            }
            if !serving {
                // As ElectrumX does: clients only once the index has caught up with the daemon.
                if let Err(e) = sessions.start().await {
                    break Err(e);
                }
                serving = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.poll_interval_blocks.min(config.poll_interval_mempool)) => {}
            _ = mempool_wakeup.notified() => {}
            _ = block_wakeup.notified() => {}
            _ = shutdown.changed() => {}
            Some(req) = admin_rx.recv() => syncer.handle_admin(req).await,
        }
    };

    // Flush what is pending and stop the writer, whatever ended the loop.
    let (reply_tx, reply_rx) = oneshot::channel();
    if cmd_tx.send(Command::Shutdown(reply_tx)).await.is_ok() {
        if let Ok(Err(e)) = reply_rx.await {
            tracing::error!("final flush failed: {e}");
        }
    }
    drop(cmd_tx);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    if result.is_ok() {
        tracing::info!("shut down cleanly at height {}", chain.read().expect("lock").height().map_or(-1, |h| h as i64));
    }
    result
}

/// Wakes the controller the moment the daemon has a new block, by long-polling
/// `waitforblockheight` (no ZMQ needed): polling alone would add up to DAEMON_POLL_INTERVAL_BLOCKS
/// to every tip's latency. A daemon without the call is simply polled.
async fn watch_tip(daemon: Arc<Daemon>, wakeup: Arc<Notify>, poll: Duration, mut shutdown: watch::Receiver<bool>) {
    // Short enough that a daemon restart or failover is noticed, long enough to cost nothing.
    let long_poll = Duration::from_secs(10);
    let mut known = None;
    loop {
        let next = match known {
            Some(h) => h + 1,
            None => match daemon.best_block().await {
                Ok((h, _)) => h + 1,
                Err(_) => return, // shutting down; other errors are retried inside `call`
            },
        };
        let reply = tokio::select! {
            r = daemon.wait_for_height(next, long_poll) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match reply {
            Ok(h) => {
                if h >= next {
                    wakeup.notify_one();
                }
                known = Some(h.max(next - 1));
            }
            Err(DaemonError::Shutdown) => return,
            // The daemon client logged the fallback (polling) when it learned this.
            Err(DaemonError::MethodNotFound(_)) => return,
            Err(e) => {
                // E.g. a daemon that reorged below `next`; ask again from its tip after a pause.
                tracing::debug!("waitforblockheight failed: {e}");
                known = None;
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

fn load_chain(db: &Db) -> Result<Chain> {
    let state = db.state()?;
    let rows = db.load_headers()?;
    let chain = Chain::from_rows(rows);
    match state {
        None if chain.is_empty() => {}
        None => bail!("the index is damaged: it has headers but no chain state; delete DB_DIRECTORY to rebuild it"),
        Some(s) => {
            if chain.height() != Some(s.height) || chain.tip_hash() != Some(s.tip) || chain.tx_count() != s.tx_count {
                bail!(
                    "the index is damaged: chain state says height {} but headers end at {:?}; delete DB_DIRECTORY to rebuild it",
                    s.height,
                    chain.height()
                );
            }
        }
    }
    Ok(chain)
}

/// Waits for the daemon and refuses one on another chain.
async fn check_daemon(daemon: &Daemon, coin: &'static coins::Coin) -> Result<(), RoundError> {
    let genesis = daemon.block_hashes(0, 1).await?;
    let genesis = genesis
        .first()
        .map(|h| hex_rev(h))
        .ok_or_else(|| RoundError::Fatal(anyhow!("the daemon has no genesis block")))?;
    if genesis != coin.genesis_hash {
        let known: Vec<String> =
            coins::identify_genesis(&genesis).iter().map(|c| format!("{} {}", c.name, c.net)).collect();
        let on = if known.is_empty() { format!("an unknown chain (genesis {genesis})") } else { known.join(" / ") };
        return Err(RoundError::Fatal(anyhow!(
            "wrong chain: the daemon at {} is on {on}, but ferrum is configured for {} {} (COIN={}, NET={}); \
             set COIN and NET to match the node, or point DAEMON_URL at a {} {} node",
            daemon.current_url(),
            coin.name,
            coin.net,
            coin.name,
            coin.net,
            coin.name,
            coin.net
        )));
    }
    match daemon.call("getnetworkinfo", json!([])).await {
        Ok(info) => tracing::info!(
            "daemon {}: {} (protocol version {})",
            daemon.current_url(),
            info["subversion"].as_str().unwrap_or("?"),
            info["version"]
        ),
        Err(DaemonError::Shutdown) => return Err(RoundError::Shutdown),
        Err(e) => tracing::warn!("getnetworkinfo failed: {e}"),
    }
    Ok(())
}

struct Syncer {
    config: Arc<Config>,
    daemon: Arc<Daemon>,
    chain: Arc<RwLock<Chain>>,
    status: Arc<Status>,
    cmd_tx: mpsc::Sender<Command>,
    failed: Arc<AtomicBool>,
    prefetcher: Prefetcher,
}

impl Syncer {
    fn tip(&self) -> (Option<u32>, Option<[u8; 32]>) {
        let c = self.chain.read().expect("lock");
        (c.height(), c.tip_hash())
    }

    async fn send(&self, cmd: Command) -> Result<(), RoundError> {
        self.cmd_tx.send(cmd).await.map_err(|_| RoundError::Fatal(anyhow!("the block processor stopped")))
    }

    async fn unwind(&self, height: u32) -> Result<(), RoundError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Unwind(height, tx)).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RoundError::Fatal(anyhow!(e))),
            Err(_) => Err(RoundError::Fatal(anyhow!("the block processor stopped"))),
        }
    }

    /// Height of the last block both we and the daemon have, searching down from `from`.
    async fn find_fork(&self, from: u32, our_height: u32) -> Result<u32, RoundError> {
        let mut top = from;
        loop {
            let low = top.saturating_sub(63);
            let hashes = self.daemon.block_hashes(low, top - low + 1).await?;
            {
                let c = self.chain.read().expect("lock");
                for h in (low..=top).rev() {
                    if hashes.get((h - low) as usize).is_some_and(|d| Some(*d) == c.hash(h)) {
                        return Ok(h);
                    }
                }
            }
            if low == 0 {
                return Err(RoundError::Fatal(anyhow!(
                    "the daemon's chain shares no block with the index, not even genesis"
                )));
            }
            if our_height - low > self.config.reorg_limit {
                return Ok(low.saturating_sub(1));
            }
            top = low - 1;
        }
    }

    /// One comparison with the daemon and the blocks it brings. Returns true to run again at
    /// once (the chain changed while syncing).
    async fn round(&self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, RoundError> {
        let round_started = Instant::now();
        let (daemon_height, daemon_tip) = self.daemon.best_block().await?;
        self.status.set_daemon_tip(daemon_height, daemon_tip);
        let (our_height, our_tip) = self.tip();
        if our_tip == Some(daemon_tip) {
            return Ok(false);
        }
        let start = match our_height {
            None => 0,
            Some(h) => {
                let fork = self.find_fork(h.min(daemon_height), h).await?;
                if fork == h.min(daemon_height) && daemon_height < h {
                    // Same chain, the daemon is just behind us (e.g. after a failover).
                    tracing::debug!("daemon at height {daemon_height} is behind the index at {h}; waiting");
                    return Ok(false);
                }
                if fork < h {
                    let depth = h - fork;
                    if depth > self.config.reorg_limit {
                        return Err(RoundError::Fatal(anyhow!(
                            "the daemon's chain forked {depth} blocks below our tip at height {h}, deeper than REORG_LIMIT={}; \
                             ferrum stopped without changing the index. If the node really reorganised that deep, \
                             raise REORG_LIMIT for the future and delete DB_DIRECTORY to rebuild the index",
                            self.config.reorg_limit
                        )));
                    }
                    tracing::warn!(
                        "chain reorganisation: unwinding {depth} block(s) from height {h} to the fork at {fork}"
                    );
                    self.status.count_reorg();
                    self.unwind(fork).await?;
                }
                fork + 1
            }
        };
        if start > daemon_height {
            return Ok(false);
        }
        if our_height.is_none() || daemon_height - start > 10 {
            tracing::info!("syncing blocks {start}..={daemon_height} from the daemon");
        } else {
            tracing::debug!(
                "fetching blocks {start}..={daemon_height} ({:.1} ms after the round began)",
                round_started.elapsed().as_secs_f64() * 1e3
            );
        }

        // Blocks go straight into the processor's queue; `failed` stops the fetch after a fatal error.
        let fetch = self.prefetcher.fetch_range(
            start,
            daemon_height,
            &self.cmd_tx,
            |f| Command::Block(f, daemon_height),
            &self.failed,
        );
        let fetched = tokio::select! {
            r = fetch => r,
            _ = shutdown.wait_for(|s| *s) => return Err(RoundError::Shutdown),
        };

        let (btx, brx) = oneshot::channel();
        self.send(Command::Barrier(btx)).await?;
        let mismatch = match brx.await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(RoundError::Fatal(anyhow!(e))),
            Err(_) => return Err(RoundError::Fatal(anyhow!("the block processor stopped"))),
        };
        if mismatch {
            tracing::info!("the daemon's chain changed during sync; comparing tips again");
        }
        // Whatever happened, look at the daemon's tip again at once: new blocks may have come.
        match fetched {
            Ok(()) => Ok(true),
            Err(FetchError::Daemon(DaemonError::Shutdown)) => Err(RoundError::Shutdown),
            Err(FetchError::Daemon(DaemonError::MethodNotFound(m))) => {
                Err(RoundError::Fatal(anyhow!(DaemonError::MethodNotFound(m))))
            }
            Err(FetchError::Daemon(e)) => {
                // E.g. a block pruned or reorganised away between two calls: look again soon.
                tracing::warn!("fetching blocks failed ({e}); retrying");
                Ok(false)
            }
            Err(e @ (FetchError::Parse { .. } | FetchError::WrongBlock { .. })) => Err(RoundError::Fatal(anyhow!(e))),
            Err(FetchError::Closed) => Err(RoundError::Fatal(anyhow!("the block processor stopped"))),
        }
    }

    async fn handle_admin(&self, req: AdminRequest) {
        match req {
            AdminRequest::Reorg { count, reply } => {
                let r = self.forced_reorg(count).await;
                let _ = reply.send(r);
            }
        }
    }

    /// Admin `reorg N`: unwind N blocks with undo data; the next round fetches them again.
    async fn forced_reorg(&self, count: u32) -> Result<serde_json::Value, String> {
        let (Some(height), _) = self.tip() else { return Err("the index is empty".into()) };
        if count == 0 || count > height {
            return Err(format!("reorg count must be between 1 and {height}"));
        }
        let target = height - count;
        tracing::warn!("admin requests a reorg of {count} block(s), back to height {target}");
        // The processor refuses, changing nothing, when undo data does not reach that far.
        match self.unwind(target).await {
            Ok(()) => {
                self.status.count_reorg();
                Ok(json!({"unwound": count, "height": target}))
            }
            Err(RoundError::Fatal(e)) => {
                tracing::warn!("admin reorg refused: {e:#}");
                Err(format!("{e:#}"))
            }
            Err(RoundError::Shutdown) => Err("shutting down".into()),
        }
    }
}

/// Waits for SIGINT or SIGTERM, then asks everything to stop.
pub async fn signal_shutdown(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received: flushing and shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received: flushing and shutting down"),
    }
    let _ = tx.send(true);
}

/// How long an admin caller waits for a reorg to be carried out.
pub const ADMIN_WAIT: Duration = Duration::from_secs(600);
