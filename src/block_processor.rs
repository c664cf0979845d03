//! The block processor: the index's only writer.
//!
//! It assigns transaction numbers, spends and creates outputs through an in-memory cache,
//! gathers history rows and undo data, and writes everything, together with the chain state,
//! as one atomic batch: when the cache reaches CACHE_MB during initial sync, and after every
//! block once caught up. Reorgs are unwound block by block with the undo data, each step its own
//! atomic batch, so a kill at any moment leaves a consistent index at some height.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rayon::iter::ParallelIterator;
use rayon::slice::{ParallelSlice, ParallelSliceMut};
use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use crate::block::{OutPoint, ParsedBlock};
use crate::chain::Chain;
use crate::coins::Coin;
use crate::db::Db;
use crate::index::{Index, IndexEvent, Tip};
use crate::prefetch::Fetched;
use crate::schema::*;
use crate::status::Status;

/// The outputs cache is keyed by random txids, so a hasher that just folds their bytes is as
/// good as SipHash and much faster.
#[derive(Default)]
struct OutPointHasher(u64);

impl Hasher for OutPointHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n as u64;
    }
}

type OutPointMap<V> = HashMap<OutPoint, V, BuildHasherDefault<OutPointHasher>>;

#[derive(Clone, Copy)]
struct CachedUtxo {
    hashx: HashX,
    tx_num: TxNum,
    value: u64,
}

/// Memory the flush adds per pending item while it runs, on top of the item itself: the sorted
/// row vectors and the WriteBatch (key, value and record header per row) exist together at the
/// flush's peak. Counting them up front keeps the peak within CACHE_MB.
const FLUSH_BYTES_PER_UTXO: usize = 24 + 32 + 2 * 40;
const FLUSH_BYTES_PER_SPENT: usize = 16 + 24 + 2 * 30;
const FLUSH_BYTES_PER_HISTORY: usize = 12;
const FLUSH_BYTES_PER_TXID: usize = 16 + 24;

/// Everything applied since the last flush.
#[derive(Default)]
struct Pending {
    /// Outputs created since the last flush and still unspent.
    utxos: OutPointMap<CachedUtxo>,
    /// Outputs from the database spent since the last flush.
    spent_db: Vec<(TxNum, u32, HashX)>,
    history: Vec<[u8; HASHX_LEN + TXNUM_LEN]>,
    /// Txids of tx numbers from the last flushed tx count on.
    txids: Vec<Txid>,
    undo: Vec<(u32, Vec<u8>)>,
    undo_bytes: usize,
    /// Outputs spent by blocks applied while the mempool mirror was not empty, so publishing them
    /// can evict mempool double spends.
    spent_outpoints: Vec<OutPoint>,
}

impl Pending {
    /// Memory held now (from capacities: a table or vector that grew by doubling holds its
    /// whole capacity) plus what flushing it will add.
    fn bytes(&self) -> usize {
        use std::mem::size_of;
        let held = self.utxos.capacity() * (size_of::<(OutPoint, CachedUtxo)>() + 1)
            + self.spent_db.capacity() * size_of::<(TxNum, u32, HashX)>()
            + self.history.capacity() * (HASHX_LEN + TXNUM_LEN)
            + self.txids.capacity() * size_of::<Txid>()
            + self.undo_bytes
            + self.spent_outpoints.capacity() * size_of::<OutPoint>();
        let flushing = self.utxos.len() * FLUSH_BYTES_PER_UTXO
            + self.spent_db.len() * FLUSH_BYTES_PER_SPENT
            + self.history.len() * FLUSH_BYTES_PER_HISTORY
            + self.txids.len() * FLUSH_BYTES_PER_TXID;
        held + flushing
    }
}

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

pub struct BlockProcessor {
    index: Arc<Index>,
    db: Arc<Db>,
    coin: &'static Coin,
    chain: Arc<RwLock<Chain>>,
    /// Height of the last flush: blocks above it are in `chain` and `pending` only.
    flushed_height: Option<u32>,
    cache_limit: usize,
    reorg_limit: u32,
    pending: Pending,
    status: Arc<Status>,
    progress: Progress,
}

struct Progress {
    last: Instant,
    last_height: u32,
    last_txs: u64,
    /// Whether the last block reached the daemon's tip, to log the moment sync completes.
    caught_up: bool,
}

/// An output being spent: (script hash, creating tx number, value; 0 unless asked for).
type SpentOutput = (HashX, TxNum, u64);

impl BlockProcessor {
    pub fn new(index: Arc<Index>, cache_limit: usize, reorg_limit: u32, status: Arc<Status>) -> Result<Self> {
        let (db, chain, coin) = (index.db.clone(), index.chain.clone(), index.coin);
        let (tx_count, flushed_height) = {
            let c = chain.read().expect("lock");
            (c.tx_count(), c.height())
        };
        Ok(BlockProcessor {
            index,
            db,
            coin,
            chain,
            flushed_height,
            cache_limit,
            reorg_limit,
            pending: Pending::default(),
            status,
            progress: Progress {
                last: Instant::now(),
                last_height: flushed_height.unwrap_or(0),
                last_txs: tx_count,
                caught_up: false,
            },
        })
    }

    fn tip(&self) -> (Option<u32>, Option<[u8; 32]>, u64) {
        let c = self.chain.read().expect("lock");
        (c.height(), c.tip_hash(), c.tx_count())
    }

    /// Spends an output, from the cache, the block's disk lookups or the database: returns its
    /// script hash, creating tx number and value (the value is only looked up when undo data
    /// needs it).
    fn spend(
        &mut self,
        prevout: &OutPoint,
        need_value: bool,
        from_disk: &mut OutPointMap<SpentOutput>,
    ) -> Result<SpentOutput> {
        if let Some(c) = self.pending.utxos.remove(prevout) {
            return Ok((c.hashx, c.tx_num, c.value));
        }
        let found = match from_disk.remove(prevout) {
            Some(found) => Some(found),
            None => self.db.find_utxos(&[prevout], need_value)?.pop().flatten(),
        };
        let Some((hashx, tx_num, value)) = found else {
            bail!(
                "a block spends output {}:{} which is not in the UTXO set: the daemon served an invalid chain or the index is damaged \
                 (delete DB_DIRECTORY to rebuild it)",
                prevout.txid,
                prevout.vout
            )
        };
        self.pending.spent_db.push((tx_num, prevout.vout, hashx));
        Ok((hashx, tx_num, value))
    }

    /// Looks up, in parallel, the outputs a block spends that only the database has (not in the
    /// cache, not created by the block itself). One at a time on the writer thread they cost
    /// ~14 µs each, which dominated a new tip's processing time; chunks of 256 share an
    /// iterator and batch their point reads.
    ///
    /// Spends of transactions the mempool already resolved need no lookup at all: the mempool
    /// kept each confirmed output's script hash, value and tx number, which stay true unless a
    /// block was unwound since. Returns the map and how many came from the mempool.
    fn lookup_disk_spends(
        &self,
        block: &ParsedBlock,
        need_value: bool,
        mempool_in_use: bool,
    ) -> Result<(OutPointMap<SpentOutput>, usize)> {
        let mut found = OutPointMap::default();
        // During initial sync the mempool is empty: no lookups per transaction there.
        if mempool_in_use {
            let live = self.index.live.read().expect("lock");
            for tx in &block.txs {
                let Some(m) = live.mempool.get(&tx.txid).filter(|m| m.unwinds == live.unwinds) else { continue };
                for i in &m.inputs {
                    if let (Some(hashx), Some(n)) = (i.hashx, i.tx_num) {
                        found.insert(i.outpoint, (hashx, n, i.value));
                    }
                }
            }
        }
        let from_mempool = found.len();
        let own: std::collections::HashSet<&Txid> = block.txs.iter().map(|t| &t.txid).collect();
        let wanted: Vec<&OutPoint> = block
            .txs
            .iter()
            .flat_map(|t| &t.inputs)
            .filter(|op| !own.contains(&op.txid) && !self.pending.utxos.contains_key(op) && !found.contains_key(op))
            .collect();
        let db = &self.db;
        let looked_up: Vec<Vec<Option<SpentOutput>>> =
            wanted.par_chunks(256).map(|chunk| db.find_utxos(chunk, need_value)).collect::<Result<_>>()?;
        found.extend(wanted.iter().zip(looked_up.into_iter().flatten()).filter_map(|(op, f)| f.map(|f| (**op, f))));
        Ok((found, from_mempool))
    }

    /// Applies a block on top of the tip. `daemon_tip` decides whether undo data is kept and
    /// whether to flush now.
    pub fn apply(&mut self, block: &ParsedBlock, daemon_tip: u32) -> Result<(), ApplyError> {
        let (tip_height, tip_hash, base) = self.tip();
        let height = tip_height.map_or(0, |h| h + 1);
        if block.height != height || (height > 0 && Some(block.prev_hash()) != tip_hash) {
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
        let evict_from_mempool = !self.index.live.read().expect("lock").mempool.is_empty();
        let started = Instant::now();
        let (mut from_disk, from_mempool) =
            self.lookup_disk_spends(block, keep_undo, evict_from_mempool).map_err(ApplyError::Fatal)?;
        let (looked_up, from_disk_count) = (started.elapsed(), from_disk.len() - from_mempool);
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
                    .spend(prevout, keep_undo, &mut from_disk)
                    .with_context(|| format!("applying block {} at height {height}", hex_rev(&block.hash)))?;
                touched.push(hashx);
                if keep_undo {
                    undo.spent.push(SpentUndo { hashx, tx_num: from_tx, vout: prevout.vout, value, spender: tx_num });
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
                    if keep_undo {
                        undo.created.push(CreatedUndo { hashx, tx_num, vout });
                    }
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for hashx in &touched {
                self.pending.history.push(history_key(hashx, tx_num));
            }
            self.pending.txids.push(tx.txid);
        }
        let tx_count = base + block.txs.len() as u64;
        if keep_undo {
            let enc = undo.encode();
            self.pending.undo_bytes += enc.len();
            self.pending.undo.push((height, enc));
        }
        self.chain.write().expect("lock").push(block.header, block.hash, tx_count);
        // Readers see a height only once it is flushed (see `flush`); this is sync progress.
        self.status.set_processed(height);

        let caught_up = height >= daemon_tip;
        if caught_up {
            tracing::debug!(
                "applied block {height} in {:.1} ms ({from_mempool} spent outputs known from the mempool, \
                 {from_disk_count} looked up on disk in {:.1} ms)",
                started.elapsed().as_secs_f64() * 1e3,
                looked_up.as_secs_f64() * 1e3
            );
        }
        if caught_up || self.pending.bytes() >= self.cache_limit {
            self.flush()?;
        }
        self.report_progress(height, tx_count, daemon_tip, caught_up);
        Ok(())
    }

    /// Writes everything pending, with the chain state, in one atomic batch.
    pub fn flush(&mut self) -> Result<()> {
        let chain_lock = self.chain.clone();
        let chain = chain_lock.read().expect("lock");
        let (Some(height), Some(tip)) = (chain.height(), chain.tip_hash()) else { return Ok(()) };
        if self.flushed_height == Some(height) {
            return Ok(());
        }
        let started = Instant::now();
        let tx_count = chain.tx_count();
        let first_new = self.flushed_height.map_or(0, |h| h + 1);
        let first_tx_num = chain.tx_range(first_new).map_or(tx_count, |(start, _)| start);
        let mut p = std::mem::take(&mut self.pending);
        let (n_utxos, n_spent, n_hist, n_txs) = (p.utxos.len(), p.spent_db.len(), p.history.len(), p.txids.len());
        let db = &self.db;
        // Each column family's rows go into the batch in key order. RocksDB's memtable skiplist
        // then finds every insert position next to the previous one; in random order each insert
        // walks the list from the top, which made flushing ~75% of initial-sync time.
        let mut utxo_rows: Vec<([u8; TXNUM_LEN + 4], HashX)> =
            p.utxos.iter().map(|(op, c)| (utxo_key(c.tx_num, op.vout), c.hashx)).collect();
        let mut hutxo_rows: Vec<([u8; HASHX_LEN + TXNUM_LEN + 4], u64)> =
            p.utxos.iter().map(|(op, c)| (hashx_utxo_key(&c.hashx, c.tx_num, op.vout), c.value)).collect();
        let mut utxo_dels: Vec<[u8; TXNUM_LEN + 4]> = p.spent_db.iter().map(|(n, v, _)| utxo_key(*n, *v)).collect();
        let mut hutxo_dels: Vec<[u8; HASHX_LEN + TXNUM_LEN + 4]> =
            p.spent_db.iter().map(|(n, v, h)| hashx_utxo_key(h, *n, *v)).collect();
        let history = &mut p.history;
        let mut txnum_rows: Vec<[u8; TXID_PREFIX_LEN + TXNUM_LEN]> =
            p.txids.iter().enumerate().map(|(i, txid)| txnum_key(txid, first_tx_num + i as u64)).collect();
        rayon::join(
            || rayon::join(|| utxo_rows.par_sort_unstable(), || hutxo_rows.par_sort_unstable()),
            || {
                rayon::join(
                    || rayon::join(|| utxo_dels.par_sort_unstable(), || hutxo_dels.par_sort_unstable()),
                    || rayon::join(|| history.par_sort_unstable(), || txnum_rows.par_sort_unstable()),
                )
            },
        );
        let mut batch = WriteBatch::default();
        let (cf_utxo, cf_hutxo) = (db.cf(CF_UTXO), db.cf(CF_HASHX_UTXO));
        for (key, hashx) in &utxo_rows {
            batch.put_cf(cf_utxo, key, hashx);
        }
        for key in &utxo_dels {
            batch.delete_cf(cf_utxo, key);
        }
        for (key, value) in &hutxo_rows {
            batch.put_cf(cf_hutxo, key, value.to_be_bytes());
        }
        for key in &hutxo_dels {
            batch.delete_cf(cf_hutxo, key);
        }
        // One row per script hash: its first tx number in the key, the rest in the value.
        let cf_hist = db.cf(CF_HISTORY);
        for group in history.chunk_by(|a, b| a[..HASHX_LEN] == b[..HASHX_LEN]) {
            batch.put_cf(cf_hist, group[0], history_value(group[1..].iter().map(|k| decode_txnum(&k[HASHX_LEN..]))));
        }
        let cf_txnum = db.cf(CF_TXNUM);
        for key in &txnum_rows {
            batch.put_cf(cf_txnum, key, []);
        }
        drop((utxo_rows, hutxo_rows, utxo_dels, hutxo_dels, txnum_rows));
        let cf_header = db.cf(CF_HEADER);
        for h in first_new..=height {
            let (header, count) = (chain.header(h).expect("in chain"), chain.tx_range(h).expect("in chain").1);
            batch.put_cf(cf_header, header_key(h), header_value(header, count));
        }
        let cf_undo = db.cf(CF_UNDO);
        for (h, blob) in &p.undo {
            batch.put_cf(cf_undo, undo_key(*h), blob);
        }
        // Undo data older than REORG_LIMIT blocks is never needed again.
        if let Some(keep_from) = (height + 1).checked_sub(self.reorg_limit) {
            batch.delete_range_cf(cf_undo, undo_key(0), undo_key(keep_from));
        }
        let state = ChainState { height, tip, tx_count };
        batch.put_cf(db.cf(CF_META), META_STATE, state.encode());
        drop(chain);
        // The txids go to their file first: the batch commits them by raising the tx count.
        // On a write error the pending data goes back, so a later flush (after an admin command
        // failed, say) still writes every block at its tx numbers.
        if let Err(e) = db.write_txids(first_tx_num, &p.txids) {
            self.pending = p;
            return Err(e);
        }
        // Readers see the new blocks, and the mempool loses their transactions, at one instant.
        let built = started.elapsed();
        let (mempool_touched, locked, written) = {
            let mut live = self.index.live.write().expect("lock");
            let locked = started.elapsed();
            if let Err(e) = db.write(batch) {
                drop(live);
                self.pending = p;
                return Err(e);
            }
            let written = started.elapsed();
            live.tip = Some(Tip { height, hash: tip, tx_count });
            (live.mempool.remove_confirmed(&p.txids, &p.spent_outpoints), locked, written)
        };
        self.flushed_height = Some(height);
        if self.index.serving() {
            let mut touched = mempool_touched;
            touched.extend(p.history.iter().map(|k| <HashX>::try_from(&k[..HASHX_LEN]).expect("hashx prefix")));
            self.index.publish(IndexEvent { touched, new_tip: true });
        }
        let elapsed = started.elapsed();
        self.status.set_indexed(height, tip, tx_count);
        self.status.record_flush(elapsed);
        tracing::debug!(
            "flushed to height {height} in {:.0} ms: {n_txs} txs, {n_utxos} new UTXOs, {n_spent} spent from disk, {n_hist} history rows \
             (batch built at {:.1} ms, lock taken at {:.1} ms, written at {:.1} ms)",
            elapsed.as_secs_f64() * 1e3,
            built.as_secs_f64() * 1e3,
            locked.as_secs_f64() * 1e3,
            written.as_secs_f64() * 1e3,
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
        let tip = self.chain.read().expect("lock").height();
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
        loop {
            let (tip, tip_hash) = {
                let c = self.chain.read().expect("lock");
                (c.height(), c.tip_hash())
            };
            let Some(tip) = tip.filter(|&t| t > height) else { break };
            let undo = self.db.undo(tip)?.ok_or_else(|| {
                anyhow!(
                    "cannot unwind block {tip}: it has no undo data (only the last REORG_LIMIT={} blocks keep it)",
                    self.reorg_limit
                )
            })?;
            let (start, end, prev_hash) = {
                let c = self.chain.read().expect("lock");
                let (s, e) = c.tx_range(tip).expect("tip exists");
                (s, e, c.hash(tip - 1).expect("tip > 0"))
            };
            let txids = self.db.txids_range(start, end)?;
            let db = &self.db;
            let mut batch = WriteBatch::default();
            let (cf_utxo, cf_hutxo, cf_hist) = (db.cf(CF_UTXO), db.cf(CF_HASHX_UTXO), db.cf(CF_HISTORY));
            // Restores first, then deletes: an output created and spent inside this block is
            // both restored and deleted, and the later delete wins within the batch.
            for s in &undo.spent {
                batch.put_cf(cf_utxo, utxo_key(s.tx_num, s.vout), s.hashx);
                batch.put_cf(cf_hutxo, hashx_utxo_key(&s.hashx, s.tx_num, s.vout), s.value.to_be_bytes());
            }
            for c in &undo.created {
                batch.delete_cf(cf_utxo, utxo_key(c.tx_num, c.vout));
                batch.delete_cf(cf_hutxo, hashx_utxo_key(&c.hashx, c.tx_num, c.vout));
            }
            // Every script hash the block touched loses its tx numbers from `start` on: rows
            // starting there go, a row that began in an earlier block is cut.
            let mut touched: Vec<HashX> =
                undo.created.iter().map(|c| c.hashx).chain(undo.spent.iter().map(|s| s.hashx)).collect();
            touched.sort_unstable();
            touched.dedup();
            for hashx in &touched {
                for (key, nums) in self.db.history_rows_from(hashx, start)? {
                    let keep = nums.partition_point(|n| *n < start);
                    if keep == 0 {
                        batch.delete_cf(cf_hist, &key);
                    } else {
                        batch.put_cf(cf_hist, &key, history_value(nums[1..keep].iter().copied()));
                    }
                }
            }
            for (i, txid) in txids.iter().enumerate() {
                let tx_num = start + i as u64;
                batch.delete_cf(db.cf(CF_TXNUM), txnum_key(txid, tx_num));
            }
            batch.delete_cf(db.cf(CF_HEADER), header_key(tip));
            batch.delete_cf(db.cf(CF_UNDO), undo_key(tip));
            let state = ChainState { height: tip - 1, tip: prev_hash, tx_count: start };
            batch.put_cf(db.cf(CF_META), META_STATE, state.encode());
            {
                let mut live = self.index.live.write().expect("lock");
                db.write(batch)?;
                self.chain.write().expect("lock").pop();
                live.tip = Some(Tip { height: tip - 1, hash: prev_hash, tx_count: start });
                live.unwinds += 1;
            }
            if self.index.serving() {
                self.index.publish(IndexEvent { touched: touched.into_iter().collect(), new_tip: true });
            }
            self.flushed_height = Some(tip - 1);
            self.status.set_indexed(tip - 1, prev_hash, start);
            self.progress.last_height = tip - 1;
            self.progress.last_txs = start;
            self.progress.caught_up = false;
            tracing::info!(
                "unwound block {} at height {tip} ({} transactions)",
                hex_rev(&tip_hash.expect("tip")),
                end - start
            );
        }
        Ok(())
    }

    fn report_progress(&mut self, height: u32, tx_count: u64, daemon_tip: u32, caught_up: bool) {
        let p = &mut self.progress;
        let elapsed = p.last.elapsed();
        let was_caught_up = std::mem::replace(&mut p.caught_up, caught_up);
        if caught_up && !was_caught_up {
            tracing::info!("caught up with the daemon at height {height} ({tx_count} transactions indexed)");
        } else if caught_up {
            tracing::info!("indexed block {height}");
        } else if elapsed >= Duration::from_secs(10) {
            let secs = elapsed.as_secs_f64();
            let bps = height.saturating_sub(p.last_height) as f64 / secs;
            let tps = tx_count.saturating_sub(p.last_txs) as f64 / secs;
            let pct = 100.0 * height as f64 / daemon_tip.max(1) as f64;
            let left = daemon_tip.saturating_sub(height) as f64;
            let eta = if bps > 0.0 { format_duration(Duration::from_secs_f64(left / bps)) } else { "unknown".into() };
            let cache = self.pending.bytes();
            tracing::info!(
                "sync: height {height}/{daemon_tip} ({pct:.2}%), {bps:.1} blocks/s, {tps:.0} tx/s, ETA {eta}, cache {:.0} MB ({:.0}% of CACHE_MB)",
                cache as f64 / 1e6,
                100.0 * cache as f64 / self.cache_limit as f64
            );
        } else {
            return;
        }
        p.last = Instant::now();
        p.last_height = height;
        p.last_txs = tx_count;
    }
}

/// Requests to the block processor thread, handled in order.
pub enum Command {
    /// Apply a block; the second field is the daemon's tip height when it was fetched.
    Block(Fetched, u32),
    /// Waits for the blocks sent before it; answers whether one did not fit our tip.
    Barrier(oneshot::Sender<Result<bool, String>>),
    Unwind(u32, oneshot::Sender<Result<(), String>>),
    /// Flush and stop.
    Shutdown(oneshot::Sender<Result<(), String>>),
}

impl BlockProcessor {
    /// The processor thread: applies commands until `Shutdown` or the channel closes. After a
    /// block that does not extend the tip, blocks are skipped until the next `Barrier` reports
    /// it; after a fatal error nothing more is written (`failed` stops the prefetcher), so the
    /// last flush stays the truth.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>, failed: Arc<AtomicBool>) {
        let mut mismatch = false;
        let mut fatal: Option<String> = None;
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                Command::Block(f, daemon_tip) => {
                    if fatal.is_some() || mismatch {
                        continue;
                    }
                    match self.apply(&f.block, daemon_tip) {
                        Ok(()) => {}
                        Err(ApplyError::Mismatch { height }) => {
                            tracing::info!(
                                "block at height {height} does not extend our tip: the daemon's chain changed"
                            );
                            mismatch = true;
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
                        None => Ok(std::mem::take(&mut mismatch)),
                    });
                }
                Command::Unwind(height, reply) => {
                    let r = match &fatal {
                        Some(e) => Err(e.clone()),
                        None => self.unwind_to(height).map_err(|e| format!("{e:#}")),
                    };
                    let _ = reply.send(r);
                }
                Command::Shutdown(reply) => {
                    let r = if fatal.is_some() { Ok(()) } else { self.flush().map_err(|e| format!("{e:#}")) };
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

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
