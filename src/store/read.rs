//! Reading the index: unspent outputs by outpoint and by script hash, history rows, and txids
//! to tx numbers. Rows that do not decode are reported as corruption, never skipped: a skipped
//! row would be a wrong balance or history.

use anyhow::{anyhow, Result};
use rocksdb::{ReadOptions, DB};

use super::schema::*;
use super::{corrupt, read_error, Db, TxidView};
use crate::types::{HashX, OutPoint, TxNum, Txid};

/// An unspent output as the index holds it: script hash, creating tx number and value.
pub type UtxoEntry = (HashX, TxNum, u64);

impl Db {
    /// Tx numbers of stored transactions with this txid (normally one; two for the historic
    /// duplicate coinbases), oldest first.
    pub fn tx_nums_of(&self, txid: &Txid) -> Result<Vec<TxNum>> {
        let mut out = Vec::new();
        self.tx_num_finder().find(txid, &mut out)?;
        Ok(out)
    }

    /// Whether an output of a stored transaction is unspent, by its creating tx number.
    pub fn is_unspent(&self, tx_num: TxNum, vout: u32) -> Result<bool> {
        match self.get(CF_UTXO, &utxo_key(tx_num, vout))? {
            None => Ok(false),
            Some(v) if v.len() == UTXO_HASHX_PREFIX => Ok(true),
            Some(_) => Err(corrupt("a utxo row")),
        }
    }

    /// The tx number that spent an output (from the spender index).
    pub fn spender(&self, tx_num: TxNum, vout: u32) -> Result<Option<TxNum>> {
        match self.get(CF_SPEND, &spend_key(tx_num, vout))? {
            None => Ok(None),
            Some(v) if v.len() == TXNUM_LEN => Ok(Some(decode_txnum(&v))),
            Some(_) => Err(corrupt("a spend row")),
        }
    }

    /// For each (txid, spender tx number): the newest stored transaction with that txid before
    /// the spender, i.e. the one whose output it spends (the spender backfill's lookups).
    pub fn funding_tx_nums(&self, wanted: &[(Txid, TxNum)]) -> Result<Vec<Option<TxNum>>> {
        let mut finder = self.tx_num_finder();
        let mut nums = Vec::new();
        wanted
            .iter()
            .map(|(txid, spender)| {
                nums.clear();
                finder.find(txid, &mut nums)?;
                Ok(nums.iter().rev().find(|n| *n < spender).copied())
            })
            .collect()
    }

    /// A finder for many txid → tx number lookups in a row, sharing one iterator.
    fn tx_num_finder(&self) -> TxNumFinder<'_> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let it = self.db.raw_iterator_cf_opt(self.cf(CF_TXNUM), opts);
        // The mapping is taken after the iterator: it then covers every row the iterator sees,
        // even if a flush commits in between (txids are written before their rows).
        TxNumFinder { it, txids: self.txids.view() }
    }

    /// Unspent outputs by outpoint, many at once: (script hash, creating tx number, value) or
    /// `None`. One iterator serves all the txid lookups and the point reads go in batches: the
    /// `utxo` rows (the script hash's prefix), then the `hashx_utxo` rows they name (the rest
    /// of it and the value). A block's spends at the tip are thousands of these.
    pub fn find_utxos(&self, ops: &[&OutPoint]) -> Result<Vec<Option<UtxoEntry>>> {
        let mut finder = self.tx_num_finder();
        // Every (outpoint index, candidate tx number), newest candidate first.
        let mut cands: Vec<(usize, TxNum)> = Vec::with_capacity(ops.len());
        let mut nums = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            nums.clear();
            finder.find(&op.txid, &mut nums)?;
            cands.extend(nums.iter().rev().map(|n| (i, *n)));
        }
        let keys: Vec<_> = cands.iter().map(|(i, n)| utxo_key(*n, ops[*i].vout)).collect();
        let mut found: Vec<Option<([u8; UTXO_HASHX_PREFIX], TxNum)>> = vec![None; ops.len()];
        for ((i, n), r) in cands.iter().zip(self.db.batched_multi_get_cf(self.cf(CF_UTXO), keys.iter(), false)) {
            if let Some(v) = r.map_err(read_error)? {
                if found[*i].is_none() {
                    let prefix = v.as_ref().try_into().map_err(|_| corrupt("a utxo row"))?;
                    found[*i] = Some((prefix, *n));
                }
            }
        }
        let keys: Vec<_> =
            found.iter().zip(ops).filter_map(|(f, op)| f.map(|(p, n)| hashx_utxo_key(&p, n, op.vout))).collect();
        let mut rows = keys.iter().zip(self.db.batched_multi_get_cf(self.cf(CF_HASHX_UTXO), keys.iter(), false));
        let mut out = Vec::with_capacity(ops.len());
        for (f, op) in found.into_iter().zip(ops) {
            out.push(match f {
                None => None,
                Some(_) => {
                    let (k, v) = rows.next().expect("one row per found output");
                    let v = v.map_err(read_error)?.ok_or_else(|| {
                        anyhow!("the index is inconsistent: output {}:{} has no value row", op.txid, op.vout)
                    })?;
                    let (hashx, n, _, value) = decode_hashx_utxo(k, &v).ok_or_else(|| corrupt("a hashx_utxo row"))?;
                    Some((hashx, n, value))
                }
            });
        }
        Ok(out)
    }

    /// `find_utxos` on the worker pool, in chunks of 256 sharing an iterator each: how both
    /// writers (a block's spends, the mempool's prevouts) resolve many outpoints at once.
    pub fn find_utxos_parallel(&self, ops: &[&OutPoint]) -> Result<Vec<Option<UtxoEntry>>> {
        use rayon::prelude::*;
        let chunks: Vec<Vec<Option<UtxoEntry>>> =
            ops.par_chunks(256).map(|chunk| self.find_utxos(chunk)).collect::<Result<_>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// Unspent outputs whose script hash the daemon told us (Bitcoin Core's spent outputs of a
    /// block), many at once and in parallel: each is one seek among its script hash's unspent
    /// outputs (usually one or two) instead of a txid seek and two point reads. The value comes
    /// from the index. A script hash with many unspent outputs falls back to `find_utxos`.
    pub fn find_utxos_by_script(&self, wanted: &[(&OutPoint, HashX)]) -> Result<Vec<Option<UtxoEntry>>> {
        use rayon::prelude::*;
        let chunks: Vec<Vec<Option<UtxoEntry>>> =
            wanted.par_chunks(256).map(|chunk| self.find_utxos_by_script_chunk(chunk)).collect::<Result<_>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }

    fn find_utxos_by_script_chunk(&self, wanted: &[(&OutPoint, HashX)]) -> Result<Vec<Option<UtxoEntry>>> {
        /// Rows read for one script hash before asking by txid instead.
        const SCAN_LIMIT: usize = 16;
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_HASHX_UTXO), opts);
        // Taken after the iterator, so it covers every row the iterator sees (`tx_num_finder`).
        let txids = self.txids.view();
        let mut out = Vec::with_capacity(wanted.len());
        let mut by_txid = Vec::new();
        for (i, (op, hashx)) in wanted.iter().enumerate() {
            // From the script hash's newest row backwards: the first match is the newest
            // transaction with this txid, as `find_utxos` answers, and the usual single row
            // needs no step past it. Rows of other script hashes with the same prefix count
            // towards the limit too.
            let prefix = hashx_prefix(hashx);
            let mut last = [0xff; HASHX_UTXO_KEY_LEN];
            last[..UTXO_HASHX_PREFIX].copy_from_slice(&prefix);
            it.seek_for_prev(last);
            let mut found = None;
            let mut scanned = 0;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                scanned += 1;
                if scanned > SCAN_LIMIT {
                    by_txid.push(i);
                    break;
                }
                let (h, n, vout, value) = decode_hashx_utxo(k, v).ok_or_else(|| corrupt("a hashx_utxo row"))?;
                if h == *hashx && vout == op.vout && txids.get(n).as_ref() == Some(&op.txid) {
                    found = Some((h, n, value));
                    break;
                }
                it.prev();
            }
            it.status().map_err(read_error)?;
            out.push(found);
        }
        if !by_txid.is_empty() {
            let ops: Vec<&OutPoint> = by_txid.iter().map(|i| wanted[*i].0).collect();
            for (i, f) in by_txid.into_iter().zip(self.find_utxos(&ops)?) {
                out[i] = f;
            }
        }
        Ok(out)
    }

    /// Unspent outputs of a script hash in chain order: (tx number, output index, value).
    pub fn hashx_utxos(&self, hashx: &HashX) -> Result<Vec<(TxNum, u32, u64)>> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_HASHX_UTXO), opts);
        let prefix = hashx_prefix(hashx);
        it.seek(prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let (h, n, vout, value) = decode_hashx_utxo(k, v).ok_or_else(|| corrupt("a hashx_utxo row"))?;
            // Another script hash with the same prefix.
            if h == *hashx {
                out.push((n, vout, value));
            }
            it.next();
        }
        it.status().map_err(read_error)?;
        Ok(out)
    }

    /// A reader for many histories in a row: one RocksDB iterator (~2 µs to create) serves
    /// them all. It sees the database as it was when made.
    pub fn history_reader(&self) -> HistoryReader<'_> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        HistoryReader { it: self.db.raw_iterator_cf_opt(self.cf(CF_HISTORY), opts) }
    }

    /// An iterator on the history row of a script hash holding tx number `start` (the last row
    /// keyed at or below it), or on its first row.
    fn history_rows_at(&self, hashx: &HashX, start: TxNum) -> rocksdb::DBRawIteratorWithThreadMode<'_, DB> {
        let mut opts = ReadOptions::default();
        opts.set_total_order_seek(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_HISTORY), opts);
        it.seek_for_prev(history_key(hashx, start));
        if !it.key().is_some_and(|k| k.starts_with(hashx)) {
            it.seek(hashx);
        }
        it
    }

    /// Tx numbers touching a script hash within `from..to`, in chain order: all of them, or the
    /// first ones once there are more than `limit`. Rows wholly before `from` are not read.
    pub fn history_range(&self, hashx: &HashX, from: TxNum, to: TxNum, limit: usize) -> Result<Vec<TxNum>> {
        let mut it = self.history_rows_at(hashx, from);
        let mut out = Vec::new();
        let mut row = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(hashx) || out.len() > limit {
                break;
            }
            row.clear();
            decode_history_row(k, v, &mut row).ok_or_else(|| corrupt("a history row"))?;
            if row.first().is_some_and(|n| *n >= to) {
                break;
            }
            out.extend(row.iter().filter(|n| (from..to).contains(*n)));
            it.next();
        }
        it.status().map_err(read_error)?;
        Ok(out)
    }

    /// The unspent outputs of tx numbers `first..`: when the block starting there is the tip,
    /// the outputs it created that are still unspent (an unwind removes them).
    pub fn utxos_from(&self, first: TxNum) -> Result<Vec<OutputRow>> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_UTXO));
        it.seek(utxo_key(first, 0));
        let mut keys = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (Ok(vout), Ok(prefix)) = (<[u8; 4]>::try_from(&k[TXNUM_LEN.min(k.len())..]), v.try_into()) else {
                return Err(corrupt("an unspent output row"));
            };
            keys.push(hashx_utxo_key(&prefix, decode_txnum(k), u32::from_be_bytes(vout)));
            it.next();
        }
        it.status().map_err(read_error)?;
        let rows = self.db.batched_multi_get_cf(self.cf(CF_HASHX_UTXO), keys.iter(), false);
        keys.iter()
            .zip(rows)
            .map(|(k, v)| {
                let v =
                    v.map_err(read_error)?.ok_or_else(|| corrupt("an unspent output without its script hash row"))?;
                let (hashx, tx_num, vout, _) = decode_hashx_utxo(k, &v).ok_or_else(|| corrupt("a hashx_utxo row"))?;
                Ok(OutputRow { hashx, tx_num, vout })
            })
            .collect()
    }

    /// History rows of a script hash holding any tx number from `start` on: (key, tx numbers).
    /// An unwind cuts these.
    pub fn history_rows_from(&self, hashx: &HashX, start: TxNum) -> Result<Vec<(Vec<u8>, Vec<TxNum>)>> {
        let mut it = self.history_rows_at(hashx, start);
        let mut rows = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(hashx) {
                break;
            }
            let mut nums = Vec::new();
            decode_history_row(k, v, &mut nums).ok_or_else(|| corrupt("a history row"))?;
            if nums.last().is_some_and(|n| *n >= start) {
                rows.push((k.to_vec(), nums));
            }
            it.next();
        }
        it.status().map_err(read_error)?;
        Ok(rows)
    }
}

struct TxNumFinder<'a> {
    it: rocksdb::DBRawIteratorWithThreadMode<'a, DB>,
    txids: TxidView,
}

impl TxNumFinder<'_> {
    /// Appends the tx numbers of stored transactions with this txid, oldest first.
    fn find(&mut self, txid: &Txid, out: &mut Vec<TxNum>) -> Result<()> {
        let prefix = &txid.0[..TXID_PREFIX_LEN];
        self.it.seek(prefix);
        while let Some(k) = self.it.key() {
            if !k.starts_with(prefix) {
                break;
            }
            if k.len() != TXID_PREFIX_LEN + TXNUM_LEN {
                return Err(corrupt("a txnum key of the wrong length"));
            }
            // Rows share only a prefix of the txid; the txid file tells which one is this.
            let n = decode_txnum(&k[TXID_PREFIX_LEN..]);
            if self.txids.get(n).as_ref() == Some(txid) {
                out.push(n);
            }
            self.it.next();
        }
        // A read error ends the scan early, and the next seek would clear it: check each time.
        self.it.status().map_err(read_error)
    }
}

pub struct HistoryReader<'a> {
    it: rocksdb::DBRawIteratorWithThreadMode<'a, DB>,
}

impl HistoryReader<'_> {
    /// Tx numbers touching a script hash, in chain order: all of them, or the first ones once
    /// there are at least `limit`.
    pub fn read(&mut self, hashx: &HashX, limit: usize) -> Result<Vec<TxNum>> {
        let mut out = Vec::new();
        self.it.seek(hashx);
        while let (Some(k), Some(v)) = (self.it.key(), self.it.value()) {
            if out.len() >= limit || !k.starts_with(hashx) {
                break;
            }
            decode_history_row(k, v, &mut out).ok_or_else(|| corrupt("a history row"))?;
            self.it.next();
        }
        self.it.status().map_err(read_error)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{put_raw, regtest_db};
    use super::*;
    use crate::store::{CreatedOutput, FlushData};

    #[test]
    fn a_truncated_txnum_key_is_corruption_not_a_panic() {
        let (_dir, db) = regtest_db();
        let txid = Txid([0xab; 32]);
        put_raw(&db, CF_TXNUM, &txid.0[..TXID_PREFIX_LEN + 2], &[]);
        let err = db.tx_nums_of(&txid).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        let op = OutPoint { txid, vout: 0 };
        assert!(db.find_utxos(&[&op]).is_err());
    }

    #[test]
    fn an_undecodable_utxo_row_is_an_error_not_a_smaller_balance() {
        let (_dir, db) = regtest_db();
        let hashx = [5u8; 11];
        // Another script hash with the same prefix: its rows are skipped, not counted.
        let mut other = hashx;
        other[10] = 6;
        let p = hashx_prefix(&hashx);
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key(&p, 1, 0), &hashx_utxo_value(&hashx, 7));
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key(&p, 1, 1), &hashx_utxo_value(&other, 8));
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key(&p, 3, 0), &hashx_utxo_value(&hashx, 9));
        assert_eq!(db.hashx_utxos(&hashx).unwrap(), vec![(1, 0, 7), (3, 0, 9)]);
        assert_eq!(db.hashx_utxos(&other).unwrap(), vec![(1, 1, 8)]);
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key(&p, 2, 0), &[1, 2, 3]);
        assert!(db.hashx_utxos(&hashx).unwrap_err().to_string().contains("corrupt"));
        assert!(db.hashx_utxos(&other).unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn a_malformed_history_row_is_an_error() {
        let (_dir, db) = regtest_db();
        let hashx = [6u8; 11];
        put_raw(&db, CF_HISTORY, &history_key(&hashx, 3), &history_value(3, [4, 300].into_iter()));
        assert_eq!(db.history_reader().read(&hashx, 10).unwrap(), vec![3, 4, 300]);
        // A distance cut short (format 3's 5-byte tx numbers read as distances are garbage too).
        put_raw(&db, CF_HISTORY, &history_key(&hashx, 900), &[0x81, 0x82]);
        assert!(db.history_reader().read(&hashx, 10).is_err());
        assert!(db.history_rows_from(&hashx, 0).is_err());
    }

    #[test]
    fn outputs_found_by_script_hash_as_by_txid() {
        let (_dir, db) = regtest_db();
        let (hot, two, dup, one) = ([1u8; 11], [2u8; 11], [3u8; 11], [4u8; 11]);
        // The same prefix as `two`: rows of both share a range of `hashx_utxo`.
        let twin = [2, 2, 2, 2, 9, 9, 9, 9, 9, 9, 9];
        // Tx 4 repeats tx 3's txid (as two historic coinbases did): the newer one is spent.
        let txids: Vec<Txid> = [1u8, 2, 3, 4, 4, 6].iter().map(|b| Txid([*b; 32])).collect();
        let mut created: Vec<CreatedOutput> =
            (0..21).map(|v| CreatedOutput { tx_num: 0, vout: v, hashx: hot, value: 100 + v as u64 }).collect();
        for (tx_num, vout, hashx) in [(1, 0, two), (1, 1, twin), (2, 1, two), (3, 0, dup), (4, 0, dup), (5, 2, one)] {
            created.push(CreatedOutput { tx_num, vout, hashx, value: tx_num * 1000 + vout as u64 });
        }
        db.write_txids(0, &txids).unwrap();
        let batch = db
            .flush_batch(FlushData {
                created,
                spent: &[],
                history: &mut [],
                spends: &mut [],
                txids: &txids,
                first_tx_num: 0,
                headers: vec![([0; 80], 6)],
                first_height: 0,
                undo: &[],
                keep_undo_from: None,
                state: ChainState { height: 0, tip: [0; 32], tx_count: 6 },
                as_tables: false,
            })
            .unwrap();
        db.write(batch).unwrap();

        let op = |tx: usize, vout: u32| OutPoint { txid: txids[tx], vout };
        // Found by scanning (one or two rows), by the fallback (21 rows), and absent ones.
        let asked: Vec<(OutPoint, HashX)> = vec![
            (op(0, 5), hot),
            (op(0, 20), hot),
            (op(1, 0), two),
            (op(2, 1), two),
            (op(3, 0), dup),
            (op(5, 2), one),
            (op(5, 0), one),
            (op(2, 0), two),
            (op(1, 1), twin),
        ];
        let by_script: Vec<(&OutPoint, HashX)> = asked.iter().map(|(o, h)| (o, *h)).collect();
        let by_txid: Vec<&OutPoint> = asked.iter().map(|(o, _)| o).collect();
        let found = db.find_utxos_by_script(&by_script).unwrap();
        assert_eq!(found, db.find_utxos(&by_txid).unwrap());
        assert_eq!(found[0], Some((hot, 0, 105)));
        assert_eq!(found[2], Some((two, 1, 1000)));
        assert_eq!(found[4], Some((dup, 4, 4000)), "the newest transaction with the txid");
        assert_eq!(found[6..8], [None, None]);
        assert_eq!(found[8], Some((twin, 1, 1001)));
        // A script hash the output does not pay finds nothing, even one with the same prefix.
        assert_eq!(db.find_utxos_by_script(&[(&op(1, 0), one)]).unwrap(), [None]);
        assert_eq!(db.find_utxos_by_script(&[(&op(1, 0), twin)]).unwrap(), [None]);
        assert_eq!(db.hashx_utxos(&two).unwrap(), [(1, 0, 1000), (2, 1, 2001)]);
        assert_eq!(db.hashx_utxos(&twin).unwrap(), [(1, 1, 1001)]);
    }
}
