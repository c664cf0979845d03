//! The prefetcher keeps a bounded window of blocks ahead of the block processor: it downloads
//! several blocks at once, parses and hashes them on the worker pool, and hands them over in
//! height order. The window is bounded by bytes, not blocks, so a run of large blocks cannot
//! exhaust memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::block::{parse_block, parse_spent_outputs, ParsedBlock};
use super::daemon::{Daemon, DaemonError};
use crate::coins::Coin;
use crate::types::hex_rev;

/// Heights whose hashes are asked for in one batch.
const HASH_BATCH: u32 = 500;

/// A block on its way to the processor; the permit returns its bytes to the window on drop.
pub struct Fetched {
    pub block: Box<ParsedBlock>,
    pub permit: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("the daemon sent a block at height {height} ({hash}) that does not parse: {error}")]
    Parse { height: u32, hash: String, error: super::block::ParseError },
    #[error("asked the daemon for block {asked} at height {height} but it sent block {got}")]
    WrongBlock { height: u32, asked: String, got: String },
    #[error("the block processor stopped")]
    Closed,
}

pub struct Prefetcher {
    daemon: Arc<Daemon>,
    coin: &'static Coin,
    window: Arc<Semaphore>,
    window_kb: u32,
    concurrency: usize,
}

impl Prefetcher {
    pub fn new(daemon: Arc<Daemon>, coin: &'static Coin, window_bytes: usize, concurrency: usize) -> Prefetcher {
        let window_kb = (window_bytes / 1024).clamp(1024, u32::MAX as usize >> 4) as u32;
        Prefetcher { daemon, coin, window: Arc::new(Semaphore::new(window_kb as usize)), window_kb, concurrency }
    }

    /// Fetches heights `from..=to` and sends them, in order and wrapped by `wrap`, to `out`.
    /// Stops early (Ok) when the daemon's chain gets shorter or `stop` is set; the block
    /// processor notices any change of branch.
    pub async fn fetch_range<T>(
        &self,
        from: u32,
        to: u32,
        out: &mpsc::Sender<T>,
        wrap: impl Fn(Fetched) -> T,
        stop: &AtomicBool,
    ) -> Result<(), FetchError> {
        let mut start = from;
        while start <= to && !stop.load(Ordering::Relaxed) {
            let count = HASH_BATCH.min(to - start + 1);
            let hashes = self.daemon.block_hashes(start, count).await?;
            let got = hashes.len() as u32;
            let coin = self.coin;
            let first = start;
            let tasks = hashes.into_iter().enumerate().map(|(i, hash)| {
                let daemon = self.daemon.clone();
                let height = first + i as u32;
                tokio::spawn(async move { fetch_block(&daemon, coin, height, hash, true).await })
            });
            let mut stream = futures::stream::iter(tasks).buffered(self.concurrency);
            while let Some(joined) = stream.next().await {
                let block = joined.map_err(|_| FetchError::Closed)??;
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let kb = ((block.size / 1024) as u32).clamp(1, self.window_kb);
                let permit = self.window.clone().acquire_many_owned(kb).await.map_err(|_| FetchError::Closed)?;
                out.send(wrap(Fetched { block, permit })).await.map_err(|_| FetchError::Closed)?;
            }
            if got < count {
                break;
            }
            start += count;
        }
        Ok(())
    }
}

/// Fetches and parses a block; `with_spent`: with the outputs it spends, where the daemon
/// serves them.
pub async fn fetch_block(
    daemon: &Daemon,
    coin: &'static Coin,
    height: u32,
    hash: [u8; 32],
    with_spent: bool,
) -> Result<Box<ParsedBlock>, FetchError> {
    let spent = async {
        if with_spent {
            daemon.spent_outputs(&hash).await
        } else {
            Ok(None)
        }
    };
    let (raw, spent) = tokio::join!(daemon.raw_block(&hash), spent);
    let (raw, spent) = (raw?, spent?);
    // Parsing and hashing run on the worker pool, off the async threads and the writer.
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(parse_block(&raw, height, coin).map(|mut block| {
            block.spent = spent.and_then(|spent| match parse_spent_outputs(&spent, &block) {
                Ok(hashxs) => Some(hashxs),
                // Only a shortcut: the index finds the outputs by txid without it.
                Err(e) => {
                    tracing::warn!("ignoring the daemon's spent outputs of block {}: {e}", hex_rev(&block.hash));
                    None
                }
            });
            block
        }));
    });
    let parsed = rx.await.map_err(|_| FetchError::Closed)?;
    let block = parsed.map_err(|error| FetchError::Parse { height, hash: hex_rev(&hash), error })?;
    if block.hash != hash {
        return Err(FetchError::WrongBlock { height, asked: hex_rev(&hash), got: hex_rev(&block.hash) });
    }
    Ok(Box::new(block))
}
