//! Turning what the block processor changed into one atomic batch: a flush (new blocks) or the
//! unwinding of one block. The batch also carries the chain state it leads to, so the database
//! is always a complete state at some height.

use std::borrow::Cow;
use std::collections::BTreeSet;

use anyhow::Result;
use rayon::slice::ParallelSliceMut;
use rocksdb::WriteBatch;

use super::bulk::{Row, RowIter, Tables};
use super::schema::*;
use super::Db;
use crate::types::{HashX, TxNum, Txid, HASHX_LEN};

/// A batch of changes, written with `Db::write`; opaque outside the store.
pub struct Batch(pub(super) Changes);

pub(super) enum Changes {
    /// One atomic write batch.
    Rows(WriteBatch),
    /// A large flush as table files (`bulk`).
    Tables(Tables),
}

impl From<WriteBatch> for Batch {
    fn from(b: WriteBatch) -> Batch {
        Batch(Changes::Rows(b))
    }
}

/// An output created since the last flush and still unspent.
#[derive(Clone, Copy, Debug)]
pub struct CreatedOutput {
    pub tx_num: TxNum,
    pub vout: u32,
    pub hashx: HashX,
    pub value: u64,
}

/// An output of the database spent since the last flush.
pub type SpentOutput = OutputRow;

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
    /// Write the flush as table files (`bulk`) rather than as a batch: only while no client is
    /// served, since readers could see its rows before its state.
    pub as_tables: bool,
}

/// A flush's rows, each column family's sorted by key.
struct SortedRows<'a> {
    utxo: Vec<([u8; TXNUM_LEN + 4], [u8; UTXO_HASHX_PREFIX])>,
    utxo_dels: Vec<[u8; TXNUM_LEN + 4]>,
    hutxo: Vec<([u8; HASHX_UTXO_KEY_LEN], [u8; HASHX_UTXO_VALUE_LEN])>,
    hutxo_dels: Vec<[u8; HASHX_UTXO_KEY_LEN]>,
    history: &'a [[u8; HASHX_LEN + TXNUM_LEN]],
    txnum: Vec<[u8; TXID_PREFIX_LEN + TXNUM_LEN]>,
    spends: &'a [SpendRow],
    headers: Vec<([u8; 4], [u8; 85])>,
    undo: Vec<([u8; 4], &'a [u8])>,
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
    /// A flush as one batch, or as table files when `as_tables`. Each column family's rows go
    /// in in key order: table files need it, a vector memtable's one sort finds them in order,
    /// and a skiplist (`meta`, `header`, `undo`) inserts each next to the previous one.
    pub fn flush_batch(&self, f: FlushData) -> Result<Batch> {
        let (as_tables, state, keep_undo_from) = (f.as_tables, f.state, f.keep_undo_from);
        let rows = sorted_rows(f);
        if as_tables {
            let tables = self.build_tables(table_rows(&rows), (state, keep_undo_from))?;
            return Ok(Batch(Changes::Tables(tables)));
        }
        let mut batch = WriteBatch::default();
        for (cf, rows) in table_rows(&rows) {
            let cf = self.cf(cf);
            for row in rows {
                match row {
                    Row::Put(k, v) => batch.put_cf(cf, k, v),
                    Row::Delete(k) => batch.delete_cf(cf, k),
                }
            }
        }
        put_state(&self.db, &mut batch, state, keep_undo_from);
        Ok(batch.into())
    }

    /// Unwinding the tip block as one batch; also returns the script hashes it touched.
    pub fn unwind_batch(&self, u: UnwindData) -> Result<(Batch, BTreeSet<HashX>)> {
        let mut batch = WriteBatch::default();
        let (cf_utxo, cf_hutxo, cf_hist) = (self.cf(CF_UTXO), self.cf(CF_HASHX_UTXO), self.cf(CF_HISTORY));
        // The outputs the block spent come back, except those it created itself.
        for s in u.undo.spent.iter().filter(|s| s.tx_num < u.first_tx_num) {
            let prefix = hashx_prefix(&s.hashx);
            batch.put_cf(cf_utxo, utxo_key(s.tx_num, s.vout), prefix);
            batch.put_cf(cf_hutxo, hashx_utxo_key(&prefix, s.tx_num, s.vout), hashx_utxo_value(&s.hashx, s.value));
        }
        let cf_spend = self.cf(CF_SPEND);
        for s in &u.undo.spent {
            batch.delete_cf(cf_spend, spend_key(s.tx_num, s.vout));
        }
        // The block's outputs still unspent (those it spent itself are among `spent`).
        let created = self.utxos_from(u.first_tx_num)?;
        for c in &created {
            batch.delete_cf(cf_utxo, utxo_key(c.tx_num, c.vout));
            batch.delete_cf(cf_hutxo, hashx_utxo_key(&hashx_prefix(&c.hashx), c.tx_num, c.vout));
        }
        // Every script hash the block touched loses its tx numbers from the block's first on:
        // rows starting there go, a row that began in an earlier block is cut.
        let touched: BTreeSet<HashX> =
            created.iter().map(|c| c.hashx).chain(u.undo.spent.iter().map(|s| s.hashx)).collect();
        for hashx in &touched {
            for (key, nums) in self.history_rows_from(hashx, u.first_tx_num)? {
                let keep = nums.partition_point(|n| *n < u.first_tx_num);
                if keep == 0 {
                    batch.delete_cf(cf_hist, &key);
                } else {
                    batch.put_cf(cf_hist, &key, history_value(nums[0], nums[1..keep].iter().copied()));
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
        Ok((batch.into(), touched))
    }

    /// The spends of blocks the backfill fetched again, and how far that takes it.
    pub fn backfill_batch(&self, spends: &mut [SpendRow], state: SpendBackfill) -> Batch {
        spends.par_sort_unstable();
        let mut batch = WriteBatch::default();
        put_spends(&mut batch, self.cf(CF_SPEND), spends);
        put_backfill(&mut batch, self.cf(CF_META), state);
        batch.into()
    }
}

/// Sorts every column family's rows of a flush (in parallel).
fn sorted_rows(f: FlushData) -> SortedRows {
    let FlushData { created, spent, history, spends, txids, first_tx_num, headers, first_height, undo, .. } = f;
    let mut utxo: Vec<_> = created.iter().map(|c| (utxo_key(c.tx_num, c.vout), hashx_prefix(&c.hashx))).collect();
    let mut hutxo: Vec<_> = created
        .iter()
        .map(|c| (hashx_utxo_key(&hashx_prefix(&c.hashx), c.tx_num, c.vout), hashx_utxo_value(&c.hashx, c.value)))
        .collect();
    drop(created);
    let mut utxo_dels: Vec<_> = spent.iter().map(|s| utxo_key(s.tx_num, s.vout)).collect();
    let mut hutxo_dels: Vec<_> =
        spent.iter().map(|s| hashx_utxo_key(&hashx_prefix(&s.hashx), s.tx_num, s.vout)).collect();
    let mut txnum: Vec<_> =
        txids.iter().enumerate().map(|(i, txid)| txnum_key(txid, first_tx_num + i as u64)).collect();
    rayon::join(
        || rayon::join(|| utxo.par_sort_unstable(), || hutxo.par_sort_unstable()),
        || {
            rayon::join(
                || rayon::join(|| utxo_dels.par_sort_unstable(), || hutxo_dels.par_sort_unstable()),
                || {
                    rayon::join(
                        || rayon::join(|| history.par_sort_unstable(), || txnum.par_sort_unstable()),
                        || spends.par_sort_unstable(),
                    )
                },
            )
        },
    );
    let headers = headers
        .iter()
        .enumerate()
        .map(|(i, (header, count))| (header_key(first_height + i as u32), header_value(header, *count)))
        .collect();
    let undo = undo.iter().map(|(h, blob)| (undo_key(*h), blob.as_slice())).collect();
    SortedRows { utxo, utxo_dels, hutxo, hutxo_dels, history, txnum, spends, headers, undo }
}

/// Each column family's rows in key order, puts and deletions merged (a flush never puts and
/// deletes one key: an output created and spent since the last flush has no row at all).
fn table_rows<'a>(r: &'a SortedRows) -> Vec<(&'static str, RowIter<'a>)> {
    let utxo = merge(r.utxo.iter().map(|(k, v)| (&k[..], &v[..])), r.utxo_dels.iter().map(|k| &k[..]));
    let hutxo = merge(r.hutxo.iter().map(|(k, v)| (&k[..], &v[..])), r.hutxo_dels.iter().map(|k| &k[..]));
    // One row per script hash: its first tx number in the key, the rest in the value.
    let history = r.history.chunk_by(|a, b| a[..HASHX_LEN] == b[..HASHX_LEN]).map(|group| {
        let nums = group.iter().map(|k| decode_txnum(&k[HASHX_LEN..]));
        Row::Put(&group[0], Cow::Owned(history_value(decode_txnum(&group[0][HASHX_LEN..]), nums.skip(1))))
    });
    vec![
        (CF_UTXO, Box::new(utxo) as RowIter),
        (CF_HASHX_UTXO, Box::new(hutxo)),
        (CF_HISTORY, Box::new(history)),
        (CF_TXNUM, Box::new(r.txnum.iter().map(|k| Row::put(&k[..], &[])))),
        (CF_SPEND, Box::new(r.spends.iter().map(|row| Row::put(&row[..TXNUM_LEN + 4], &row[TXNUM_LEN + 4..])))),
        (CF_HEADER, Box::new(r.headers.iter().map(|(k, v)| Row::put(&k[..], &v[..])))),
        (CF_UNDO, Box::new(r.undo.iter().map(|(k, v)| Row::put(&k[..], v)))),
    ]
}

/// Puts and deletions, each sorted by key, as one sorted sequence.
fn merge<'a>(
    puts: impl Iterator<Item = (&'a [u8], &'a [u8])> + Send + 'a,
    dels: impl Iterator<Item = &'a [u8]> + Send + 'a,
) -> impl Iterator<Item = Row<'a>> + Send + 'a {
    let (mut puts, mut dels) = (puts.peekable(), dels.peekable());
    std::iter::from_fn(move || match (puts.peek(), dels.peek()) {
        (Some((k, _)), Some(d)) if d < k => dels.next().map(Row::Delete),
        (Some(_), _) => puts.next().map(|(k, v)| Row::put(k, v)),
        (None, _) => dels.next().map(Row::Delete),
    })
}

/// What ends every flush, as a batch or as table files: the chain state it leads to, and the
/// dropping of undo data below `keep_undo_from`.
pub(super) fn put_state(db: &rocksdb::DB, batch: &mut WriteBatch, state: ChainState, keep_undo_from: Option<u32>) {
    let cf = |name| db.cf_handle(name).expect("every column family is opened");
    if let Some(keep_from) = keep_undo_from {
        batch.delete_range_cf(cf(CF_UNDO), undo_key(0), undo_key(keep_from));
    }
    batch.put_cf(cf(CF_META), META_STATE, state.encode());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dump_index;
    use crate::store::tests::regtest_db;

    fn hashx(n: u8) -> HashX {
        [n; HASHX_LEN]
    }

    /// One block's flush: its txs, created outputs, spent outputs of the database, history
    /// (script n, tx), spends and encoded undo record.
    struct Block<'a> {
        height: u32,
        txs: std::ops::Range<TxNum>,
        created: &'a [(TxNum, u8)],
        spent: &'a [SpentOutput],
        history: &'a [(u8, TxNum)],
        spends: &'a [SpendRow],
        undo: Option<&'a [u8]>,
    }

    fn flush(db: &Db, b: Block) {
        let txids: Vec<Txid> = b.txs.clone().map(|t| Txid([t as u8 + 1; 32])).collect();
        db.write_txids(b.txs.start, &txids).unwrap();
        let mut history: Vec<_> = b.history.iter().map(|(h, t)| history_key(&hashx(*h), *t)).collect();
        let mut spends = b.spends.to_vec();
        let undo: Vec<(u32, Vec<u8>)> = b.undo.iter().map(|u| (b.height, u.to_vec())).collect();
        let batch = db
            .flush_batch(FlushData {
                created: b
                    .created
                    .iter()
                    .map(|(t, h)| CreatedOutput { tx_num: *t, vout: 0, hashx: hashx(*h), value: 1000 + t })
                    .collect(),
                spent: b.spent,
                history: &mut history,
                spends: &mut spends,
                txids: &txids,
                first_tx_num: b.txs.start,
                headers: vec![([b.height as u8; 80], b.txs.end)],
                first_height: b.height,
                undo: &undo,
                keep_undo_from: None,
                state: ChainState { height: b.height, tip: [b.height as u8; 32], tx_count: b.txs.end },
                as_tables: false,
            })
            .unwrap();
        db.write(batch).unwrap();
    }

    /// Block 0: txs 0-1 create (0:0) for script 1 and (1:0) for script 2.
    fn block0(db: &Db) {
        flush(
            db,
            Block {
                height: 0,
                txs: 0..2,
                created: &[(0, 1), (1, 2)],
                spent: &[],
                history: &[(1, 0), (2, 1)],
                spends: &[],
                undo: None,
            },
        );
    }

    /// Block 1: tx 2 spends (0:0) and creates (2:0) for script 3, which tx 3 spends in the same
    /// block, creating (3:0) for script 4.
    fn block1(db: &Db, undo: &[u8]) {
        flush(
            db,
            Block {
                height: 1,
                txs: 2..4,
                created: &[(3, 4)],
                spent: &[SpentOutput { tx_num: 0, vout: 0, hashx: hashx(1) }],
                history: &[(1, 2), (3, 2), (3, 3), (4, 3)],
                spends: &[spend_row(0, 0, 2), spend_row(2, 0, 3)],
                undo: Some(undo),
            },
        );
    }

    #[test]
    fn unwinding_a_block_restores_the_index_before_it_with_either_undo_layout() {
        let reference = {
            let (dir, db) = regtest_db();
            block0(&db);
            drop(db);
            dump_index(dir.path()).unwrap()
        };
        let spent = vec![
            SpentUndo { hashx: hashx(1), tx_num: 0, vout: 0, value: 1000 },
            SpentUndo { hashx: hashx(3), tx_num: 2, vout: 0, value: 1002 },
        ];
        let lean = UndoRecord { spent: spent.clone() };
        // Format 3's record of the block: each spend's spender, then the outputs it created.
        let created = [(3, 2), (4, 3)].map(|(h, tx_num)| OutputRow { hashx: hashx(h), tx_num, vout: 0 });
        let older = undo_record_v3(&[(spent[0], 2), (spent[1], 3)], &created);
        for (what, undo) in [("today's", lean.encode()), ("format 3's", older)] {
            let (dir, db) = regtest_db();
            block0(&db);
            block1(&db, &undo);
            let read_back = db.undo(1).unwrap().unwrap();
            assert_eq!(read_back, lean, "{what} undo record");
            let txids = db.txids_range(2, 4).unwrap();
            let state = ChainState { height: 0, tip: [0; 32], tx_count: 2 };
            let (batch, touched) = db
                .unwind_batch(UnwindData {
                    height: 1,
                    undo: &read_back,
                    first_tx_num: 2,
                    txids: &txids,
                    state,
                    backfill: None,
                })
                .unwrap();
            db.write(batch).unwrap();
            assert_eq!(touched, [1, 3, 4].map(hashx).into(), "{what} undo record: the scripts to notify");
            drop(db);
            assert_eq!(dump_index(dir.path()).unwrap(), reference, "{what} undo record");
        }
    }
}
