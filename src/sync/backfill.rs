//! The spender backfill: a database upgraded from format 2 has no spender index for the blocks
//! it indexed before the upgrade, and ferrum builds it in place rather than resync. This task
//! fetches those blocks again from the daemon (by our own chain's hashes), finds the tx number
//! each input spends, and hands each step to the block processor, which writes the rows and the
//! backfill's new state in one batch, so a crash resumes from the last step. Meanwhile ferrum
//! serves and follows new blocks (which carry their own spends); only the outpoint methods wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use super::processor::{BackfillReply, Command};
use super::progress::format_duration;
use crate::coins::Coin;
use crate::index::IndexWriter;
use crate::node::prefetch::fetch_block;
use crate::node::Daemon;
use crate::store::schema::{spend_row, SpendBackfill, SpendRow};
use crate::types::{TxNum, Txid};

/// Blocks per step, and block bytes: a step is one batch, so both bound its memory.
const STEP_BLOCKS: u32 = 200;
const STEP_BYTES: usize = 64 << 20;
/// How long to wait after the daemon failed before trying again.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the backfill until the spender index is whole or ferrum stops.
pub async fn run(
    daemon: Arc<Daemon>,
    writer: IndexWriter,
    coin: &'static Coin,
    concurrency: usize,
    cmd_tx: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(first) = writer.index().spend_backfill() else { return };
    tracing::info!(
        "building the spender index for blocks {}..{} from the daemon (an upgraded database); outpoint methods \
         answer once it is done",
        first.next,
        first.end
    );
    let started = Instant::now();
    let mut progress = (Instant::now(), first.next);
    let mut state = first;
    loop {
        let step = tokio::select! {
            r = step(&daemon, &writer, coin, concurrency, &cmd_tx, state) => r,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match step {
            Ok(BackfillReply::Written(None)) => {
                tracing::info!(
                    "the spender index is complete ({} blocks fetched again in {})",
                    state.end.saturating_sub(first.next),
                    format_duration(started.elapsed())
                );
                return;
            }
            Ok(BackfillReply::Written(Some(next)) | BackfillReply::Stale(Some(next))) => state = next,
            Ok(BackfillReply::Stale(None)) => return,
            Ok(BackfillReply::Failed(e)) => {
                tracing::error!("the spender backfill stopped: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "the spender backfill could not fetch blocks from the daemon ({e}); trying again in {}s",
                    RETRY.as_secs()
                );
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        }
        if progress.0.elapsed() >= Duration::from_secs(10) {
            let rate = state.next.saturating_sub(progress.1) as f64 / progress.0.elapsed().as_secs_f64();
            let left = state.end.saturating_sub(state.next) as f64;
            let eta = if rate > 0.0 { format_duration(Duration::from_secs_f64(left / rate)) } else { "unknown".into() };
            tracing::info!(
                "spender index: height {}/{} ({:.2}%), {rate:.1} blocks/s, ETA {eta}",
                state.next,
                state.end,
                100.0 * state.next as f64 / state.end.max(1) as f64
            );
            progress = (Instant::now(), state.next);
        }
    }
}

/// One step: fetch the next blocks, resolve their spends, and have the processor write them.
async fn step(
    daemon: &Arc<Daemon>,
    writer: &IndexWriter,
    coin: &'static Coin,
    concurrency: usize,
    cmd_tx: &mpsc::Sender<Command>,
    state: SpendBackfill,
) -> Result<BackfillReply, crate::node::prefetch::FetchError> {
    let index = writer.index();
    let to = state.end.min(state.next.saturating_add(STEP_BLOCKS));
    let hashes: Vec<(u32, [u8; 32])> =
        (state.next..to).map_while(|h| index.applied_hash(h).map(|hash| (h, hash))).collect();
    let fetches = hashes.into_iter().map(|(h, hash)| {
        let daemon = daemon.clone();
        async move { fetch_block(&daemon, coin, h, hash, false).await }
    });
    let mut blocks = futures::stream::iter(fetches).buffered(concurrency.max(1));
    // (txid spent, spender tx number, output index) for every input, in block order.
    let mut inputs: Vec<(Txid, TxNum, u32)> = Vec::new();
    let mut fetched = Vec::new();
    let mut bytes = 0;
    while let Some(block) = blocks.next().await {
        let block = block?;
        let Some((first_tx, _)) = writer.tx_range(block.height) else { break };
        for (i, tx) in block.txs.iter().enumerate() {
            inputs.extend(tx.inputs.iter().map(|op| (op.txid, first_tx + i as u64, op.vout)));
        }
        fetched.push(block.hash);
        bytes += block.size;
        if bytes >= STEP_BYTES {
            break;
        }
    }
    drop(blocks);
    let db = index.clone();
    let spends = tokio::task::spawn_blocking(move || resolve(&db, &inputs)).await;
    let spends = match spends {
        Ok(Ok(spends)) => spends,
        Ok(Err(e)) => return Ok(BackfillReply::Failed(format!("{e:#}"))),
        Err(_) => return Ok(BackfillReply::Failed("resolving spends panicked".into())),
    };
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Backfill { from: state.next, hashes: fetched, spends, reply };
    if cmd_tx.send(cmd).await.is_err() {
        return Ok(BackfillReply::Failed("the block processor stopped".into()));
    }
    Ok(rx.await.unwrap_or_else(|_| BackfillReply::Failed("the block processor stopped".into())))
}

/// The spend rows of `inputs`, looking up the tx number of each output spent (in parallel).
fn resolve(index: &crate::index::Index, inputs: &[(Txid, TxNum, u32)]) -> anyhow::Result<Vec<SpendRow>> {
    let chunks: Vec<anyhow::Result<Vec<SpendRow>>> = inputs
        .par_chunks(4096)
        .map(|chunk| {
            let wanted: Vec<(Txid, TxNum)> = chunk.iter().map(|(txid, spender, _)| (*txid, *spender)).collect();
            let found = index.db().funding_tx_nums(&wanted)?;
            chunk
                .iter()
                .zip(found)
                .map(|((txid, spender, vout), f)| {
                    let funding = f.ok_or_else(|| {
                        anyhow::anyhow!(
                            "a block spends {txid}:{vout}, which the index does not have: the index is damaged \
                             (delete DB_DIRECTORY to rebuild it)"
                        )
                    })?;
                    Ok(spend_row(funding, *vout, *spender))
                })
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(inputs.len());
    for c in chunks {
        out.extend(c?);
    }
    Ok(out)
}
