//! The writers: the sync loop (compare with the daemon's tip, unwind a reorg, prefetch and
//! apply new blocks, refresh the mempool between block rounds), the block processor thread it
//! feeds, and the operator's forced reorg.

mod backfill;
pub mod cache;
pub mod mempool;
pub mod processor;
mod progress;
mod tip;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::coins;
use crate::config::Config;
use crate::index::{IndexEvent, IndexWriter};
use crate::metrics::Metrics;
use crate::node::prefetch::{FetchError, Prefetcher};
use crate::node::{Daemon, DaemonError};
use crate::store::Db;
use crate::types::hex_rev;
use processor::{Applied, BlockProcessor, Command};

pub use progress::format_duration;

/// How long an admin caller waits for a reorg to be carried out.
pub const ADMIN_WAIT: Duration = Duration::from_secs(600);

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

fn processor_stopped() -> RoundError {
    RoundError::Fatal(anyhow!("the block processor stopped"))
}

/// Where one comparison with the daemon left us.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// The index is at the daemon's tip (or the daemon is behind it on the same chain).
    AtTip,
    /// Blocks were applied, or the chain changed meanwhile: compare again at once.
    Again,
}

/// Why `Syncer::run` returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The index reached the daemon's tip for the first time (with `Until::CaughtUp`).
    CaughtUp,
    /// ferrum is shutting down.
    Stopped,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Until {
    CaughtUp,
    Shutdown,
}

/// Operator requests the sync loop carries out (they change the index).
enum SyncRequest {
    Reorg { count: u32, reply: oneshot::Sender<Result<Value, String>> },
}

/// The admin RPC's handle on the sync loop.
#[derive(Clone)]
pub struct SyncHandle {
    requests: mpsc::Sender<SyncRequest>,
}

impl SyncHandle {
    /// Unwinds `count` blocks with undo data; the loop then fetches them again.
    pub async fn reorg(&self, count: u32) -> Result<Value, String> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(SyncRequest::Reorg { count, reply })
            .await
            .map_err(|_| "ferrum is shutting down".to_string())?;
        match tokio::time::timeout(ADMIN_WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("ferrum is shutting down".into()),
            Err(_) => Err("timed out waiting for the reorg".into()),
        }
    }
}

pub struct Syncer {
    config: Arc<Config>,
    daemon: Arc<Daemon>,
    writer: IndexWriter,
    metrics: Arc<Metrics>,
    cmd_tx: mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<AtomicBool>,
    prefetcher: Prefetcher,
    requests: mpsc::Receiver<SyncRequest>,
    /// Woken by broadcasts (a new transaction to mirror) and by the tip watcher.
    mempool_wakeup: Arc<Notify>,
    block_wakeup: Arc<Notify>,
}

impl Syncer {
    /// Starts the block processor's thread and the tip watcher.
    pub fn start(
        config: Arc<Config>,
        daemon: Arc<Daemon>,
        writer: IndexWriter,
        db: Arc<Db>,
        metrics: Arc<Metrics>,
        mempool_wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Syncer, SyncHandle)> {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(4096);
        let failed = Arc::new(AtomicBool::new(false));
        let processor =
            BlockProcessor::new(writer.clone(), db, config.cache_bytes(), config.reorg_limit, metrics.clone())
                .with_stop(shutdown.clone())
                .with_bulk_rows(config.bulk_flush_rows);
        let thread = {
            let failed = failed.clone();
            std::thread::Builder::new().name("block-processor".into()).spawn(move || processor.run(cmd_rx, failed))?
        };
        let prefetcher =
            Prefetcher::new(daemon.clone(), config.coin, config.prefetch_bytes, config.prefetch_concurrency);
        tokio::spawn(backfill::run(
            daemon.clone(),
            writer.clone(),
            config.coin,
            config.prefetch_concurrency,
            cmd_tx.clone(),
            shutdown.clone(),
        ));
        let block_wakeup = Arc::new(Notify::new());
        tokio::spawn(tip::watch_zmq(
            daemon.clone(),
            config.daemon_zmq.clone(),
            block_wakeup.clone(),
            mempool_wakeup.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(tip::watch_tip(daemon.clone(), block_wakeup.clone(), config.poll_interval_blocks, shutdown));
        let (tx, requests) = mpsc::channel(16);
        let syncer = Syncer {
            config,
            daemon,
            writer,
            metrics,
            cmd_tx,
            thread: Some(thread),
            failed,
            prefetcher,
            requests,
            mempool_wakeup,
            block_wakeup,
        };
        Ok((syncer, SyncHandle { requests: tx }))
    }

    /// Waits for the daemon and refuses one on another chain.
    pub async fn check_daemon(&self) -> Result<Outcome> {
        match check_daemon(&self.daemon, self.config.coin).await {
            Ok(()) => Ok(Outcome::CaughtUp),
            Err(RoundError::Shutdown) => Ok(Outcome::Stopped),
            Err(RoundError::Fatal(e)) => Err(e),
        }
    }

    /// The sync loop, until `until` or shutdown (Ok) or a fatal error (Err, with what the
    /// operator should do).
    pub async fn run(&mut self, shutdown: &mut watch::Receiver<bool>, until: Until) -> Result<Outcome> {
        loop {
            if *shutdown.borrow() {
                return Ok(Outcome::Stopped);
            }
            match self.round(shutdown).await {
                Ok(Round::Again) => continue,
                Ok(Round::AtTip) => {}
                Err(RoundError::Shutdown) => return Ok(Outcome::Stopped),
                Err(RoundError::Fatal(e)) => return Err(e),
            }
            if self.metrics.caught_up() {
                // Between block rounds, so the mempool's view of the UTXO set cannot shift under it.
                match mempool::refresh(&self.writer, self.daemon.as_ref()).await {
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
                            self.writer.publish(IndexEvent::Changed { touched: report.touched, tip: None });
                        }
                    }
                    Err(DaemonError::Shutdown) => return Ok(Outcome::Stopped),
                    Err(e) => tracing::warn!("refreshing the mempool failed: {e}; trying again at the next refresh"),
                }
                let (txs, vsize) = self.writer.index().mempool_size_now().unwrap_or_default();
                self.metrics.mempool_txs.set(txs as i64);
                self.metrics.mempool_vsize.set(vsize as i64);
                if until == Until::CaughtUp {
                    return Ok(Outcome::CaughtUp);
                }
            }
            let poll = self.config.poll_interval_blocks.min(self.config.poll_interval_mempool);
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = self.mempool_wakeup.notified() => {}
                _ = self.block_wakeup.notified() => {}
                _ = shutdown.changed() => {}
                Some(req) = self.requests.recv() => self.handle(req).await,
            }
        }
    }

    /// Flushes what is pending and stops the block processor, whatever ended the loop.
    pub async fn stop(mut self) {
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.cmd_tx.send(Command::Shutdown(reply_tx)).await.is_ok() {
            if let Ok(Err(e)) = reply_rx.await {
                tracing::error!("final flush failed: {e}");
            }
        }
        drop(self.cmd_tx);
        if let Some(thread) = self.thread.take() {
            if let Ok(Err(panic)) = tokio::task::spawn_blocking(move || thread.join()).await {
                tracing::error!("the block processor panicked: {}", crate::panic_message(panic.as_ref()));
            }
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), RoundError> {
        self.cmd_tx.send(cmd).await.map_err(|_| processor_stopped())
    }

    async fn unwind(&self, height: u32) -> Result<(), RoundError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Unwind(height, tx)).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RoundError::Fatal(anyhow!(e))),
            Err(_) => Err(processor_stopped()),
        }
    }

    /// Height of the last block both we and the daemon have, searching down from `from`.
    async fn find_fork(&self, from: u32, our_height: u32) -> Result<u32, RoundError> {
        let mut top = from;
        loop {
            let low = top.saturating_sub(63);
            let hashes = self.daemon.block_hashes(low, top - low + 1).await?;
            let index = self.writer.index();
            for h in (low..=top).rev() {
                if hashes.get((h - low) as usize).is_some_and(|d| Some(*d) == index.applied_hash(h)) {
                    return Ok(h);
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

    /// Unwinds to the last block we share with the daemon, if it forked; returns the first
    /// height to fetch, or `None` when the daemon is merely behind us on the same chain.
    async fn follow_fork(&self, our_height: u32, daemon_height: u32) -> Result<Option<u32>, RoundError> {
        let fork = self.find_fork(our_height.min(daemon_height), our_height).await?;
        if fork == our_height.min(daemon_height) && daemon_height < our_height {
            // Same chain, the daemon is just behind us (e.g. after a failover).
            tracing::debug!("daemon at height {daemon_height} is behind the index at {our_height}; waiting");
            return Ok(None);
        }
        if fork < our_height {
            let depth = our_height - fork;
            if depth > self.config.reorg_limit {
                return Err(RoundError::Fatal(anyhow!(
                    "the daemon's chain forked {depth} blocks below our tip at height {our_height}, deeper than REORG_LIMIT={}; \
                     ferrum stopped without changing the index. If the node really reorganised that deep, \
                     raise REORG_LIMIT for the future and delete DB_DIRECTORY to rebuild the index",
                    self.config.reorg_limit
                )));
            }
            tracing::warn!(
                "chain reorganisation: unwinding {depth} block(s) from height {our_height} to the fork at {fork}"
            );
            self.metrics.reorgs.inc();
            self.unwind(fork).await?;
        }
        Ok(Some(fork + 1))
    }

    /// One comparison with the daemon and the blocks it brings.
    async fn round(&self, shutdown: &mut watch::Receiver<bool>) -> Result<Round, RoundError> {
        let round_started = Instant::now();
        let (daemon_height, daemon_tip) = self.daemon.best_block().await?;
        self.metrics.set_daemon_tip(daemon_height, daemon_tip);
        let ours = self.writer.index().applied_tip();
        if ours.is_some_and(|t| t.hash == daemon_tip) {
            return Ok(Round::AtTip);
        }
        let start = match ours {
            None => 0,
            Some(t) => match self.follow_fork(t.height, daemon_height).await? {
                Some(start) => start,
                None => return Ok(Round::AtTip),
            },
        };
        if start > daemon_height {
            return Ok(Round::AtTip);
        }
        if ours.is_none() || daemon_height - start > 10 {
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
            |fetched| Command::Block { fetched, daemon_tip: daemon_height },
            &self.failed,
        );
        let fetched = tokio::select! {
            r = fetch => r,
            _ = crate::stopped(shutdown) => return Err(RoundError::Shutdown),
        };

        let (btx, brx) = oneshot::channel();
        self.send(Command::Barrier(btx)).await?;
        match brx.await {
            Ok(Ok(Applied::All)) => {}
            Ok(Ok(Applied::ChainChanged)) => {
                tracing::info!("the daemon's chain changed during sync; comparing tips again")
            }
            Ok(Err(e)) => return Err(RoundError::Fatal(anyhow!(e))),
            Err(_) => return Err(processor_stopped()),
        }
        // Whatever happened, look at the daemon's tip again at once: new blocks may have come.
        match fetched {
            Ok(()) => Ok(Round::Again),
            Err(FetchError::Daemon(DaemonError::Shutdown)) => Err(RoundError::Shutdown),
            Err(FetchError::Daemon(e @ DaemonError::MethodNotFound(_))) => Err(RoundError::Fatal(anyhow!(e))),
            Err(FetchError::Daemon(e)) => {
                // E.g. a block pruned or reorganised away between two calls: look again soon.
                tracing::warn!("fetching blocks failed ({e}); retrying");
                Ok(Round::AtTip)
            }
            Err(e @ (FetchError::Parse { .. } | FetchError::WrongBlock { .. })) => Err(RoundError::Fatal(anyhow!(e))),
            Err(FetchError::Closed) => Err(processor_stopped()),
        }
    }

    async fn handle(&self, req: SyncRequest) {
        match req {
            SyncRequest::Reorg { count, reply } => {
                let r = self.forced_reorg(count).await;
                let _ = reply.send(r);
            }
        }
    }

    /// Admin `reorg N`: unwind N blocks with undo data; the next round fetches them again.
    async fn forced_reorg(&self, count: u32) -> Result<Value, String> {
        let Some(tip) = self.writer.index().applied_tip() else { return Err("the index is empty".into()) };
        if count == 0 || count > tip.height {
            return Err(format!("reorg count must be between 1 and {}", tip.height));
        }
        let target = tip.height - count;
        tracing::warn!("admin requests a reorg of {count} block(s), back to height {target}");
        // The processor refuses, changing nothing, when undo data does not reach that far.
        match self.unwind(target).await {
            Ok(()) => {
                self.metrics.reorgs.inc();
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
