//! The block processor: the index's only writer of blocks, on its own thread.
//!
//! It assigns transaction numbers, spends and creates outputs through an in-memory cache,
//! gathers history rows and undo data, and writes everything, together with the chain state,
//! as one atomic batch: when the cache reaches CACHE_MB during initial sync, and after every
//! block once caught up. Reorgs are unwound block by block with the undo data, each step its own
//! atomic batch, so a kill at any moment leaves a consistent index at some height.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::{mpsc, oneshot, watch};

use super::cache::{CachedUtxo, OutPointMap, Pending};
use super::progress::Progress;
use crate::coins::Coin;
use crate::index::{IndexEvent, IndexWriter, Tip};
use crate::metrics::Metrics;
use crate::node::block::ParsedBlock;
use crate::node::prefetch::Fetched;
use crate::store::schema::{
    history_key, spend_row, ChainState, SpendBackfill, SpendRow, SpentUndo, UndoRecord, MAX_TX_NUM,
};
use crate::store::{CreatedOutput, Db, FlushData, SpentOutput, UnwindData, UtxoEntry};
use crate::types::{hex_rev, HashX, OutPoint, Txid, HASHX_LEN};

/// Why a block was not applied.
#[derive(Debug)]
pub enum ApplyError {
    /// The block does not extend our tip: the daemon's chain changed under us.
    Mismatch {
        height: u32,
    },
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for ApplyError {
    fn from(e: anyhow::Error) -> Self {
        ApplyError::Fatal(e)
    }
}

/// What the blocks sent before a barrier came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Every block extended the tip.
    All,
    /// A block did not extend the tip (the daemon's chain changed); it and the rest were
    /// skipped.
    ChainChanged,
}

/// Requests to the block processor thread, handled in order.
pub enum Command {
    /// Apply a block; `daemon_tip` (the daemon's tip height when it was fetched) decides whether
    /// undo data is kept and whether to flush at once.
    Block { fetched: Fetched, daemon_tip: u32 },
    /// Waits for the blocks sent before it.
    Barrier(oneshot::Sender<Result<Applied, String>>),
    /// Unwind down to this height (which stays).
    Unwind(u32, oneshot::Sender<Result<(), String>>),
    /// Flush and stop.
    Shutdown(oneshot::Sender<Result<(), String>>),
    /// Write the spends of blocks `from..` (whose hashes the backfill fetched) to the spender
    /// index, if those blocks are still ours and next in the backfill; answers the backfill's
    /// state after it (`sync::backfill`).
    Backfill { from: u32, hashes: Vec<[u8; 32]>, spends: Vec<SpendRow>, reply: oneshot::Sender<BackfillReply> },
}

/// What became of a backfill step.
#[derive(Debug)]
pub enum BackfillReply {
    /// Written; what remains (`None`: the spender index is whole).
    Written(Option<SpendBackfill>),
    /// The chain or the backfill moved meanwhile; nothing written. Ask again from here.
    Stale(Option<SpendBackfill>),
    Failed(String),
}

/// Room kept free on DB_DIRECTORY beyond what a flush writes: RocksDB's own memtable flushes
/// and compactions need space too.
const DISK_RESERVE: u64 = 64 << 20;

/// The largest flush announced to the notifier before it is written (16 bytes a row copied).
const PREVIEW_MAX_ROWS: usize = 1 << 20;

pub struct BlockProcessor {
    writer: IndexWriter,
    db: Arc<Db>,
    coin: &'static Coin,
    /// Height of the last flush: blocks above it are in the chain and `pending` only.
    flushed_height: Option<u32>,
    cache_limit: usize,
    reorg_limit: u32,
    /// Flushes of at least this many rows are written as table files while not serving (0: never).
    bulk_rows: usize,
    pending: Pending,
    metrics: Arc<Metrics>,
    progress: Progress,
    stop: Option<watch::Receiver<bool>>,
}

impl BlockProcessor {
    pub fn new(writer: IndexWriter, db: Arc<Db>, cache_limit: usize, reorg_limit: u32, metrics: Arc<Metrics>) -> Self {
        let coin = writer.index().coin();
        let tip = writer.index().applied_tip();
        metrics.write_cache_limit_bytes.set(cache_limit as i64);
        BlockProcessor {
            writer,
            coin,
            flushed_height: tip.map(|t| t.height),
            cache_limit,
            reorg_limit,
            bulk_rows: crate::config::DEFAULT_BULK_FLUSH_ROWS,
            pending: Pending::default(),
            metrics,
            progress: Progress::new(tip.map_or(0, |t| t.height), tip.map_or(0, |t| t.tx_count)),
            stop: None,
            db,
        }
    }

    /// Sets BULK_FLUSH_ROWS: flushes of at least this many rows are written as table files
    /// while no client is served; 0 never.
    pub fn with_bulk_rows(mut self, rows: usize) -> Self {
        self.bulk_rows = rows;
        self
    }

    /// Lets a wait for disk space end when ferrum is asked to stop.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Waits until DB_DIRECTORY has room for the next flush: a write that fails for lack of
    /// space leaves RocksDB unable to write again (Debian's build even aborts), so ferrum does
    /// not try. Blocks wait in memory meanwhile; readers keep the last flushed index.
    fn wait_for_space(&self) -> Result<()> {
        let need = self.pending.bytes() as u64 + DISK_RESERVE;
        let mut warned: Option<Instant> = None;
        loop {
            let Some(free) = self.db.free_bytes() else { return Ok(()) };
            if free >= need {
                if warned.is_some() {
                    tracing::info!(
                        "DB_DIRECTORY has room again ({} MiB free); writing the blocks held in memory",
                        free >> 20
                    );
                }
                self.metrics.disk_waiting.set(0);
                return Ok(());
            }
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                bail!(
                    "stopping while DB_DIRECTORY lacks space: the blocks since the last flush stay unwritten, and the \
                     next start fetches them again"
                );
            }
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                tracing::error!(
                    "DB_DIRECTORY is full: {} MiB free, the next flush needs about {} MiB. Free some space (or move \
                     DB_DIRECTORY to a larger disk); ferrum waits, writes nothing meanwhile, and goes on by itself \
                     once there is room. Nothing is lost; wallets are served from the last flushed block",
                    free >> 20,
                    need.div_ceil(1 << 20)
                );
                warned = Some(Instant::now());
                self.metrics.disk_waiting.set(1);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Spends an output, from the cache, the block's lookups or the database: returns its
    /// script hash, creating tx number and value.
    fn spend(&mut self, prevout: &OutPoint, looked_up: &mut OutPointMap<UtxoEntry>) -> Result<UtxoEntry> {
        if let Some(c) = self.pending.utxos.remove(prevout) {
            self.metrics.spends_from_cache.inc();
            return Ok((c.hashx, c.tx_num, c.value));
        }
        let found = match looked_up.remove(prevout) {
            Some(found) => Some(found),
            None => self.db.find_utxos(&[prevout])?.pop().flatten(),
        };
        let Some((hashx, tx_num, value)) = found else {
            bail!(
                "a block spends output {}:{} which is not in the UTXO set: the daemon served an invalid chain or the index is damaged \
                 (delete DB_DIRECTORY to rebuild it)",
                prevout.txid,
                prevout.vout
            )
        };
        self.pending.spent_db.push(SpentOutput { tx_num, vout: prevout.vout, hashx });
        Ok((hashx, tx_num, value))
    }

    /// Looks up, before a block is applied, the outputs it spends that only the database has
    /// (not in the cache, not created by the block itself): in parallel, in chunks sharing an
    /// iterator, rather than one by one on the writer thread, where they dominated a new tip's
    /// processing time. Spends of transactions the mempool already resolved need no lookup at
    /// all (`IndexWriter::mempool_spends`).
    fn lookup_spends(&self, block: &ParsedBlock, mempool_in_use: bool) -> Result<OutPointMap<UtxoEntry>> {
        let mut found = OutPointMap::default();
        // During initial sync the mempool is empty: no lookups per transaction there.
        if mempool_in_use {
            let known = self.writer.mempool_spends(block.txs.iter().map(|t| &t.txid));
            self.metrics.spends_from_mempool.inc_by(known.len() as u64);
            found.extend(known);
        }
        // Nothing flushed yet (a new index): every output a block spends is in the cache or the
        // block itself, and checking that for millions of inputs cost a second of a 1M-tx sync.
        if self.flushed_height.is_none() {
            return Ok(found);
        }
        use rayon::prelude::*;
        let own: HashSet<&Txid> = block.txs.iter().map(|t| &t.txid).collect();
        // The script hash each input spends, where the daemon told us (`ParsedBlock::spent`).
        let mut first_input = Vec::with_capacity(block.txs.len());
        block.txs.iter().fold(0, |n, t| {
            first_input.push(n);
            n + t.inputs.len()
        });
        let script_of = |tx: usize, input: usize| block.spent.as_ref().map(|s| s[first_input[tx] + input]);
        // In parallel: each check is a likely cache miss in a write cache of millions of outputs.
        let wanted: Vec<(&OutPoint, Option<HashX>)> = block
            .txs
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, t)| t.inputs.iter().enumerate().map(move |(j, op)| (op, script_of(i, j))))
            .filter(|(op, _)| {
                !own.contains(&op.txid) && !self.pending.utxos.contains_key(op) && !found.contains_key(op)
            })
            .collect();
        let (mut by_script, mut by_txid): (Vec<(&OutPoint, HashX)>, Vec<&OutPoint>) = Default::default();
        for (op, hashx) in wanted {
            match hashx {
                Some(hashx) => by_script.push((op, hashx)),
                None => by_txid.push(op),
            }
        }
        let from_scripts = self.db.find_utxos_by_script(&by_script)?;
        let from_txids = self.db.find_utxos_parallel(&by_txid)?;
        let looked_up: Vec<(&OutPoint, Option<UtxoEntry>)> =
            by_script.iter().map(|(op, _)| *op).zip(from_scripts).chain(by_txid.into_iter().zip(from_txids)).collect();
        self.metrics.spends_from_disk.inc_by(looked_up.iter().filter(|(_, f)| f.is_some()).count() as u64);
        found.extend(looked_up.into_iter().filter_map(|(op, f)| f.map(|f| (*op, f))));
        Ok(found)
    }

    /// Applies a block on top of the tip. `daemon_tip` decides whether undo data is kept and
    /// whether to flush now.
    pub fn apply(&mut self, block: &ParsedBlock, daemon_tip: u32) -> Result<(), ApplyError> {
        let tip = self.writer.index().applied_tip();
        let (height, base) = (tip.map_or(0, |t| t.height + 1), tip.map_or(0, |t| t.tx_count));
        if block.height != height || tip.is_some_and(|t| block.prev_hash() != t.hash) {
            return Err(ApplyError::Mismatch { height: block.height });
        }
        if height == 0 && hex_rev(&block.hash) != self.coin.genesis_hash {
            return Err(ApplyError::Fatal(anyhow!(
                "the daemon's genesis block {} is not {} {}'s",
                hex_rev(&block.hash),
                self.coin.name,
                self.coin.net
            )));
        }
        if base + block.txs.len() as u64 > MAX_TX_NUM {
            return Err(ApplyError::Fatal(anyhow!("transaction numbers exhausted")));
        }
        let keep_undo = height + self.reorg_limit > daemon_tip;
        // Only a non-empty mempool (the mirror runs once caught up) can hold double spends.
        let evict_from_mempool = self.writer.mempool_in_use();
        let started = Instant::now();
        let mut looked_up = self.lookup_spends(block, evict_from_mempool)?;
        let lookup_time = started.elapsed();
        let mut undo = UndoRecord::default();
        let mut touched: Vec<HashX> = Vec::new();
        for (i, tx) in block.txs.iter().enumerate() {
            let tx_num = base + i as u64;
            touched.clear();
            if evict_from_mempool {
                self.pending.spent_outpoints.extend_from_slice(&tx.inputs);
            }
            for prevout in &tx.inputs {
                let (hashx, from_tx, value) = self
                    .spend(prevout, &mut looked_up)
                    .with_context(|| format!("applying block {} at height {height}", hex_rev(&block.hash)))?;
                touched.push(hashx);
                self.pending.spends.push(spend_row(from_tx, prevout.vout, tx_num));
                if keep_undo {
                    undo.spent.push(SpentUndo { hashx, tx_num: from_tx, vout: prevout.vout, value });
                }
            }
            // The genesis coinbase cannot be spent, so it is not indexed (its txid is, for lookups).
            if height > 0 {
                for (vout, out) in tx.outputs.iter().enumerate() {
                    let Some(hashx) = out.hashx else { continue };
                    let vout = vout as u32;
                    self.pending
                        .utxos
                        .insert(OutPoint { txid: tx.txid, vout }, CachedUtxo { hashx, tx_num, value: out.value });
                    touched.push(hashx);
                }
            }
            touched.sort_unstable();
            touched.dedup();
            self.pending.history.extend(touched.iter().map(|hashx| history_key(hashx, tx_num)));
            self.pending.txids.push(tx.txid);
        }
        let tx_count = base + block.txs.len() as u64;
        if keep_undo {
            let enc = undo.encode();
            self.pending.undo_bytes += enc.len();
            self.pending.undo.push((height, enc));
        }
        self.writer.push_block(block.header, block.hash, tx_count);
        // Readers see a height only once it is flushed (see `flush`); this is sync progress.
        self.metrics.sync_height.set(height as i64);
        self.metrics.blocks_applied.inc();
        self.metrics.txs_applied.inc_by(block.txs.len() as u64);
        self.metrics.block_apply_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.write_cache_bytes.set(self.pending.bytes() as i64);

        let caught_up = height >= daemon_tip;
        if caught_up {
            tracing::debug!(
                "applied block {height} in {:.1} ms ({} spent outputs resolved before, in {:.1} ms)",
                started.elapsed().as_secs_f64() * 1e3,
                looked_up.len(),
                lookup_time.as_secs_f64() * 1e3
            );
        }
        self.progress.stages.resolving += lookup_time;
        self.progress.stages.applying += started.elapsed() - lookup_time;
        if caught_up || self.pending.bytes() >= self.cache_limit {
            self.flush()?;
        }
        self.progress.block(height, tx_count, daemon_tip, (self.pending.bytes(), self.cache_limit));
        Ok(())
    }

    /// Writes everything pending, with the chain state, in one atomic batch.
    pub fn flush(&mut self) -> Result<()> {
        let Some(tip) = self.writer.index().applied_tip() else { return Ok(()) };
        if self.flushed_height == Some(tip.height) {
            return Ok(());
        }
        let started = Instant::now();
        let first_height = self.flushed_height.map_or(0, |h| h + 1);
        let first_tx_num = self.writer.tx_range(first_height).map_or(tip.tx_count, |(start, _)| start);
        self.wait_for_space()?;
        let mut p = std::mem::take(&mut self.pending);
        let (n_utxos, n_spent, n_hist, n_txs) = (p.utxos.len(), p.spent_db.len(), p.history.len(), p.txids.len());
        // The txids go to their file first: the batch commits them by raising the tx count. On a
        // write error the pending data goes back, so a later flush still writes every block.
        if let Err(e) = self.db.write_txids(first_tx_num, &p.txids) {
            self.pending = p;
            return Err(e);
        }
        // What this flush adds to each history, before it is written: subscribed statuses are
        // extended while RocksDB writes. Not for a flush of many blocks (catching up while
        // serving): its copy would add to the flush's peak beyond CACHE_MB, for little gain.
        if self.writer.serving() && n_hist <= PREVIEW_MAX_ROWS {
            let blocks = (first_height..=tip.height).filter_map(|h| Some((h, self.writer.tx_range(h)?.0))).collect();
            let from = self.writer.index().tip().map(|t| t.hash);
            self.writer.publish(IndexEvent::Writing(Arc::new(p.preview(from, tip.hash, first_tx_num, blocks))));
        }
        let created: Vec<CreatedOutput> = p
            .utxos
            .iter()
            .map(|(op, c)| CreatedOutput { tx_num: c.tx_num, vout: op.vout, hashx: c.hashx, value: c.value })
            .collect();
        // While no client is served, a large flush goes in as table files (`store::bulk`):
        // RocksDB's one-thread memtable insert was most of a big flush's time.
        let rows = n_utxos + n_spent + n_hist + p.spends.len() + n_txs;
        let as_tables = self.bulk_rows > 0 && rows >= self.bulk_rows && !self.writer.serving();
        let batch = self.db.flush_batch(FlushData {
            created,
            spent: &p.spent_db,
            history: &mut p.history,
            spends: &mut p.spends,
            txids: &p.txids,
            first_tx_num,
            headers: self.writer.headers(first_height, tip.height),
            first_height,
            undo: &p.undo,
            // Undo data older than REORG_LIMIT blocks is never needed again.
            keep_undo_from: (tip.height + 1).checked_sub(self.reorg_limit),
            state: ChainState { height: tip.height, tip: tip.hash, tx_count: tip.tx_count },
            as_tables,
        });
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                self.pending = p;
                return Err(e);
            }
        };
        let built = started.elapsed();
        // Readers see the new blocks, and the mempool loses their transactions, at one instant.
        let mempool_touched = match self.writer.commit_flush(batch, tip, &p.txids, &p.spent_outpoints) {
            Ok(touched) => touched,
            Err(e) => {
                self.pending = p;
                return Err(e);
            }
        };
        self.flushed_height = Some(tip.height);
        if self.writer.serving() {
            let mut touched = mempool_touched;
            touched.extend(p.history.iter().map(|k| <HashX>::try_from(&k[..HASHX_LEN]).expect("hashx prefix")));
            self.writer.publish(IndexEvent::Changed { touched, tip: Some(tip.hash) });
        }
        let elapsed = started.elapsed();
        self.progress.stages.building += built;
        self.progress.stages.writing += elapsed - built;
        self.metrics.set_indexed(tip.height, tip.hash, tip.tx_count);
        self.metrics.flushes.inc();
        self.metrics.last_flush_ms.set(elapsed.as_millis() as i64);
        self.metrics.flush_seconds.observe(elapsed.as_secs_f64());
        self.metrics.write_cache_bytes.set(self.pending.bytes() as i64);
        tracing::debug!(
            "flushed to height {} in {:.0} ms: {n_txs} txs, {n_utxos} new UTXOs, {n_spent} spent from disk, {n_hist} history rows \
             ({} built at {:.1} ms)",
            tip.height,
            elapsed.as_secs_f64() * 1e3,
            if as_tables { "table files" } else { "batch" },
            built.as_secs_f64() * 1e3,
        );
        Ok(())
    }

    /// Unwinds blocks down to `height` (which stays), flushing first. Each block is its own
    /// atomic batch.
    pub fn unwind_to(&mut self, height: u32) -> Result<()> {
        self.flush()?;
        // All or nothing: check the undo data reaches the target before touching anything.
        // Undo rows always cover a contiguous range ending at the tip (they are written for the
        // newest blocks and pruned from the bottom), so the lowest one tells the reach.
        let tip = self.writer.index().applied_tip().map(|t| t.height);
        if tip.is_some_and(|t| t > height) {
            let lowest = self.db.lowest_undo_height()?;
            if lowest.is_none_or(|l| l > height + 1) {
                bail!(
                    "cannot unwind to height {height}: undo data covers only heights {}..={} (REORG_LIMIT={}); \
                     the index is unchanged",
                    lowest.map_or("none".to_string(), |l| l.to_string()),
                    tip.unwrap_or(0),
                    self.reorg_limit
                );
            }
        }
        while let Some(tip) = self.writer.index().applied_tip().filter(|t| t.height > height) {
            self.unwind_tip(tip)?;
        }
        Ok(())
    }

    fn unwind_tip(&mut self, tip: Tip) -> Result<()> {
        let undo = self.db.undo(tip.height)?.ok_or_else(|| {
            anyhow!(
                "cannot unwind block {}: it has no undo data (only the last REORG_LIMIT={} blocks keep it)",
                tip.height,
                self.reorg_limit
            )
        })?;
        let (start, end) = self.writer.tx_range(tip.height).expect("the tip is in the chain");
        let prev_hash = self.writer.index().applied_hash(tip.height - 1).expect("tip > 0");
        let txids = self.db.txids_range(start, end)?;
        let prev = Tip { height: tip.height - 1, hash: prev_hash, tx_count: start };
        let state = ChainState { height: prev.height, tip: prev.hash, tx_count: prev.tx_count };
        // Blocks from this height on will be applied again, with their spends: the backfill
        // stops short of them.
        let backfill =
            self.writer.index().spend_backfill().map(|b| SpendBackfill { next: b.next, end: b.end.min(tip.height) });
        let (batch, touched) = self.db.unwind_batch(UnwindData {
            height: tip.height,
            undo: &undo,
            first_tx_num: start,
            txids: &txids,
            state,
            backfill,
        })?;
        self.writer.commit_unwind(batch, prev, backfill)?;
        if self.writer.serving() {
            self.writer.publish(IndexEvent::Changed { touched: touched.into_iter().collect(), tip: Some(prev.hash) });
        }
        self.flushed_height = Some(prev.height);
        self.metrics.set_unwound(prev.height, prev.hash, prev.tx_count);
        self.progress.restart(prev.height, prev.tx_count);
        tracing::info!("unwound block {} at height {} ({} transactions)", hex_rev(&tip.hash), tip.height, end - start);
        Ok(())
    }

    /// A step of the spender backfill: the spends of blocks `from..from + hashes.len()`.
    fn backfill(&mut self, from: u32, hashes: &[[u8; 32]], mut spends: Vec<SpendRow>) -> Result<BackfillReply> {
        // The index holds the backfill's state; only this thread changes it.
        let Some(b) = self.writer.index().spend_backfill() else { return Ok(BackfillReply::Written(None)) };
        let to = from + hashes.len() as u32;
        let ours = |(i, hash): (usize, &[u8; 32])| self.writer.index().applied_hash(from + i as u32) == Some(*hash);
        if from != b.next || to > b.end || !hashes.iter().enumerate().all(ours) {
            return Ok(BackfillReply::Stale(Some(b)));
        }
        let next = SpendBackfill { next: to, end: b.end };
        let batch = self.db.backfill_batch(&mut spends, next);
        self.writer.commit_backfill(batch, next)?;
        Ok(BackfillReply::Written((!next.done()).then_some(next)))
    }

    /// The processor thread: applies commands until `Shutdown` or the channel closes. After a
    /// block that does not extend the tip, blocks are skipped until the next `Barrier` reports
    /// it; after a fatal error nothing more is written (`failed` stops the prefetcher), so the
    /// last flush stays the truth.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>, failed: Arc<AtomicBool>) {
        let mut applied = Applied::All;
        let mut fatal: Option<String> = None;
        loop {
            let asked = Instant::now();
            let Some(cmd) = rx.blocking_recv() else { break };
            if !self.progress.caught_up() {
                self.progress.stages.waiting += asked.elapsed();
            }
            match cmd {
                Command::Block { fetched, daemon_tip } => {
                    if fatal.is_some() || applied == Applied::ChainChanged {
                        continue;
                    }
                    match self.apply(&fetched.block, daemon_tip) {
                        Ok(()) => {}
                        Err(ApplyError::Mismatch { height }) => {
                            tracing::info!(
                                "block at height {height} does not extend our tip: the daemon's chain changed"
                            );
                            applied = Applied::ChainChanged;
                        }
                        Err(ApplyError::Fatal(e)) => {
                            failed.store(true, Ordering::SeqCst);
                            fatal = Some(format!("{e:#}"));
                        }
                    }
                }
                Command::Barrier(reply) => {
                    let _ = reply.send(match &fatal {
                        Some(e) => Err(e.clone()),
                        None => Ok(std::mem::replace(&mut applied, Applied::All)),
                    });
                }
                Command::Unwind(height, reply) => {
                    let r = match &fatal {
                        Some(e) => Err(e.clone()),
                        None => self.unwind_to(height).map_err(|e| format!("{e:#}")),
                    };
                    let _ = reply.send(r);
                }
                Command::Backfill { from, hashes, spends, reply } => {
                    let r = match &fatal {
                        Some(e) => BackfillReply::Failed(e.clone()),
                        None => self
                            .backfill(from, &hashes, spends)
                            .unwrap_or_else(|e| BackfillReply::Failed(format!("{e:#}"))),
                    };
                    let _ = reply.send(r);
                }
                Command::Shutdown(reply) => {
                    let r = if fatal.is_some() {
                        Ok(())
                    } else {
                        // Leave table files rather than a write-ahead log to replay at the next start.
                        self.flush().and_then(|()| self.db.flush_memtables()).map_err(|e| format!("{e:#}"))
                    };
                    let _ = reply.send(r);
                    return;
                }
            }
        }
        if fatal.is_none() {
            if let Err(e) = self.flush() {
                tracing::error!("final flush failed: {e:#}");
            }
        }
    }
}
