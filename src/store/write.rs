//! Turning what the block processor changed into one atomic batch: a flush (new blocks) or the
//! unwinding of one block. The batch also carries the chain state it leads to, so the database
//! is always a complete state at some height.

use std::collections::BTreeSet;

use anyhow::Result;
use rayon::slice::ParallelSliceMut;
use rocksdb::WriteBatch;

use super::schema::*;
use super::Db;
use crate::types::{HashX, TxNum, Txid, HASHX_LEN};

/// A batch of changes, written with `Db::write`; opaque outside the store.
pub struct Batch(pub(super) WriteBatch);

/// An output created since the last flush and still unspent.
#[derive(Clone, Copy, Debug)]
pub struct CreatedOutput {
    pub tx_num: TxNum,
    pub vout: u32,
    pub hashx: HashX,
    pub value: u64,
}

/// An output of the database spent since the last flush.
#[derive(Clone, Copy, Debug)]
pub struct SpentOutput {
    pub tx_num: TxNum,
    pub vout: u32,
    pub hashx: HashX,
}

/// Everything one flush writes.
pub struct FlushData<'a> {
    pub created: Vec<CreatedOutput>,
    pub spent: &'a [SpentOutput],
    /// (script hash, tx number) history keys (`history_key`), in any order; sorted here.
    pub history: &'a mut [[u8; HASHX_LEN + TXNUM_LEN]],
    /// Txids of tx numbers `first_tx_num..`.
    pub txids: &'a [Txid],
    pub first_tx_num: TxNum,
    /// Headers with the cumulative tx count after each, of heights `first_height..`.
    pub headers: Vec<([u8; 80], u64)>,
    pub first_height: u32,
    /// Every spend of the flushed blocks (`spend_row`), in any order; sorted here.
    pub spends: &'a mut [SpendRow],
    /// Encoded undo records by height.
    pub undo: &'a [(u32, Vec<u8>)],
    /// Undo data below this height is never needed again.
    pub keep_undo_from: Option<u32>,
    pub state: ChainState,
}

/// What unwinding the tip block writes.
pub struct UnwindData<'a> {
    pub height: u32,
    pub undo: &'a UndoRecord,
    /// The block's tx numbers and txids.
    pub first_tx_num: TxNum,
    pub txids: &'a [Txid],
    /// The state after the unwind (the previous block).
    pub state: ChainState,
    /// The spender backfill's state after the unwind, if one is under way.
    pub backfill: Option<SpendBackfill>,
}

impl Db {
    /// A flush as one batch. Each column family's rows go in in key order: RocksDB's memtable
    /// skiplist then finds every insert position next to the previous one, where random order
    /// made each insert walk the list from the top (that was most of initial-sync time).
    pub fn flush_batch(&self, f: FlushData) -> Batch {
        let FlushData {
            created,
            spent,
            history,
            spends,
            txids,
            first_tx_num,
            headers,
            first_height,
            undo,
            keep_undo_from,
            state,
        } = f;
        let mut utxo_rows: Vec<([u8; TXNUM_LEN + 4], HashX)> =
            created.iter().map(|c| (utxo_key(c.tx_num, c.vout), c.hashx)).collect();
        let mut hutxo_rows: Vec<([u8; HASHX_LEN + TXNUM_LEN + 4], u64)> =
            created.iter().map(|c| (hashx_utxo_key(&c.hashx, c.tx_num, c.vout), c.value)).collect();
        drop(created);
        let mut utxo_dels: Vec<[u8; TXNUM_LEN + 4]> = spent.iter().map(|s| utxo_key(s.tx_num, s.vout)).collect();
        let mut hutxo_dels: Vec<[u8; HASHX_LEN + TXNUM_LEN + 4]> =
            spent.iter().map(|s| hashx_utxo_key(&s.hashx, s.tx_num, s.vout)).collect();
        let mut txnum_rows: Vec<[u8; TXID_PREFIX_LEN + TXNUM_LEN]> =
            txids.iter().enumerate().map(|(i, txid)| txnum_key(txid, first_tx_num + i as u64)).collect();
        rayon::join(
            || rayon::join(|| utxo_rows.par_sort_unstable(), || hutxo_rows.par_sort_unstable()),
            || {
                rayon::join(
                    || rayon::join(|| utxo_dels.par_sort_unstable(), || hutxo_dels.par_sort_unstable()),
                    || {
                        rayon::join(
                            || rayon::join(|| history.par_sort_unstable(), || txnum_rows.par_sort_unstable()),
                            || spends.par_sort_unstable(),
                        )
                    },
                )
            },
        );
        let mut batch = WriteBatch::default();
        let (cf_utxo, cf_hutxo) = (self.cf(CF_UTXO), self.cf(CF_HASHX_UTXO));
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
        let cf_hist = self.cf(CF_HISTORY);
        for group in history.chunk_by(|a, b| a[..HASHX_LEN] == b[..HASHX_LEN]) {
            batch.put_cf(cf_hist, group[0], history_value(group[1..].iter().map(|k| decode_txnum(&k[HASHX_LEN..]))));
        }
        let cf_txnum = self.cf(CF_TXNUM);
        for key in &txnum_rows {
            batch.put_cf(cf_txnum, key, []);
        }
        put_spends(&mut batch, self.cf(CF_SPEND), spends);
        drop((utxo_rows, hutxo_rows, utxo_dels, hutxo_dels, txnum_rows));
        let cf_header = self.cf(CF_HEADER);
        for (i, (header, count)) in headers.iter().enumerate() {
            batch.put_cf(cf_header, header_key(first_height + i as u32), header_value(header, *count));
        }
        let cf_undo = self.cf(CF_UNDO);
        for (h, blob) in undo {
            batch.put_cf(cf_undo, undo_key(*h), blob);
        }
        if let Some(keep_from) = keep_undo_from {
            batch.delete_range_cf(cf_undo, undo_key(0), undo_key(keep_from));
        }
        batch.put_cf(self.cf(CF_META), META_STATE, state.encode());
        Batch(batch)
    }

    /// Unwinding the tip block as one batch; also returns the script hashes it touched.
    pub fn unwind_batch(&self, u: UnwindData) -> Result<(Batch, BTreeSet<HashX>)> {
        let mut batch = WriteBatch::default();
        let (cf_utxo, cf_hutxo, cf_hist) = (self.cf(CF_UTXO), self.cf(CF_HASHX_UTXO), self.cf(CF_HISTORY));
        // Restores first, then deletes: an output created and spent inside this block is both
        // restored and deleted, and the later delete wins within the batch.
        for s in &u.undo.spent {
            batch.put_cf(cf_utxo, utxo_key(s.tx_num, s.vout), s.hashx);
            batch.put_cf(cf_hutxo, hashx_utxo_key(&s.hashx, s.tx_num, s.vout), s.value.to_be_bytes());
        }
        let cf_spend = self.cf(CF_SPEND);
        for s in &u.undo.spent {
            batch.delete_cf(cf_spend, spend_key(s.tx_num, s.vout));
        }
        for c in &u.undo.created {
            batch.delete_cf(cf_utxo, utxo_key(c.tx_num, c.vout));
            batch.delete_cf(cf_hutxo, hashx_utxo_key(&c.hashx, c.tx_num, c.vout));
        }
        // Every script hash the block touched loses its tx numbers from the block's first on:
        // rows starting there go, a row that began in an earlier block is cut.
        let touched: BTreeSet<HashX> =
            u.undo.created.iter().map(|c| c.hashx).chain(u.undo.spent.iter().map(|s| s.hashx)).collect();
        for hashx in &touched {
            for (key, nums) in self.history_rows_from(hashx, u.first_tx_num)? {
                let keep = nums.partition_point(|n| *n < u.first_tx_num);
                if keep == 0 {
                    batch.delete_cf(cf_hist, &key);
                } else {
                    batch.put_cf(cf_hist, &key, history_value(nums[1..keep].iter().copied()));
                }
            }
        }
        let cf_txnum = self.cf(CF_TXNUM);
        for (i, txid) in u.txids.iter().enumerate() {
            batch.delete_cf(cf_txnum, txnum_key(txid, u.first_tx_num + i as u64));
        }
        batch.delete_cf(self.cf(CF_HEADER), header_key(u.height));
        batch.delete_cf(self.cf(CF_UNDO), undo_key(u.height));
        batch.put_cf(self.cf(CF_META), META_STATE, u.state.encode());
        if let Some(b) = u.backfill {
            put_backfill(&mut batch, self.cf(CF_META), b);
        }
        Ok((Batch(batch), touched))
    }

    /// The spends of blocks the backfill fetched again, and how far that takes it.
    pub fn backfill_batch(&self, spends: &mut [SpendRow], state: SpendBackfill) -> Batch {
        spends.par_sort_unstable();
        let mut batch = WriteBatch::default();
        put_spends(&mut batch, self.cf(CF_SPEND), spends);
        put_backfill(&mut batch, self.cf(CF_META), state);
        Batch(batch)
    }
}

fn put_spends(batch: &mut WriteBatch, cf: &rocksdb::ColumnFamily, sorted: &[SpendRow]) {
    for row in sorted {
        batch.put_cf(cf, &row[..TXNUM_LEN + 4], &row[TXNUM_LEN + 4..]);
    }
}

/// A finished backfill leaves no row: its absence means the spender index is whole.
fn put_backfill(batch: &mut WriteBatch, meta: &rocksdb::ColumnFamily, state: SpendBackfill) {
    if state.done() {
        batch.delete_cf(meta, META_SPEND_BACKFILL);
    } else {
        batch.put_cf(meta, META_SPEND_BACKFILL, state.encode());
    }
}
