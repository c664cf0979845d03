//! The RocksDB store: one database, a column family per row type (see `schema`), and every
//! change applied as one atomic WriteBatch that also carries the chain state. A kill at any
//! instant leaves the last complete batch, so the database is always consistent.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, SliceTransform,
    WriteBatch, WriteOptions, DB,
};

use crate::block::OutPoint;
use crate::coins::Coin;
use crate::schema::*;
use crate::txid_file::{TxidFile, TxidView};

/// A raw row as RocksDB returns it.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);
/// (column family, key, value), as `dump_index` lists them.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

pub struct Db {
    db: DB,
    txids: TxidFile,
}

/// The txid file's name inside DB_DIRECTORY (RocksDB leaves files it did not name alone).
pub const TXID_FILE: &str = "txids";

/// Hint added to every disk error: what the operator should check, and that nothing is lost.
const DISK_HINT: &str = "check free space and permissions of DB_DIRECTORY; the index keeps its last \
                         complete flush, so restarting ferrum resumes from there";

fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_write_buffer_size(64 << 20);
    opts.set_target_file_size_base(64 << 20);
    opts.set_level_compaction_dynamic_level_bytes(true);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Prefix blooms let a lookup of an unknown script hash or txid skip files entirely.
    let prefix = match name {
        CF_TXNUM => Some(TXID_PREFIX_LEN),
        CF_HISTORY | CF_HASHX_UTXO => Some(HASHX_LEN),
        _ => None,
    };
    // Memtable blooms do the same for the newest rows: at the tip most lookups (the outputs a
    // block spends) miss the memtables, and a skiplist search to find that out cost ~1 µs each.
    match prefix {
        Some(len) => {
            opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(len));
            opts.set_memtable_prefix_bloom_ratio(0.05);
            table.set_bloom_filter(10.0, false);
            table.set_whole_key_filtering(false);
        }
        None if name == CF_UTXO => {
            opts.set_memtable_prefix_bloom_ratio(0.05);
            opts.set_memtable_whole_key_filtering(true);
            table.set_bloom_filter(10.0, false);
        }
        None => {}
    }
    opts.set_block_based_table_factory(&table);
    opts
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    opts.set_max_open_files(2048);
    opts.set_keep_log_file_num(3);
    opts.set_max_total_wal_size(256 << 20);
    opts
}

/// Our column families, plus any others an existing database has: a database of an older
/// format must open far enough to be refused by its version, with a clear message.
fn descriptors_for(path: &Path) -> Vec<ColumnFamilyDescriptor> {
    let cache = rocksdb::Cache::new_lru_cache(256 << 20);
    let existing = DB::list_cf(&Options::default(), path).unwrap_or_default();
    let others = existing.into_iter().filter(|n| n != "default" && !ALL_CFS.contains(&n.as_str()));
    ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)))
        .chain(others.map(|name| ColumnFamilyDescriptor::new(name, Options::default())))
        .collect()
}

/// The tx count of the committed chain state (0 for a new database).
fn committed_tx_count(db: &DB) -> Result<u64> {
    let cf = db.cf_handle(CF_META).expect("meta is opened");
    match db.get_cf(cf, META_STATE).map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))? {
        None => Ok(0),
        Some(v) => ChainState::decode(&v).map(|s| s.tx_count).ok_or_else(|| anyhow!("corrupt chain state row")),
    }
}

impl Db {
    /// Opens (creating if needed) the index for `coin`, refusing a database of another format
    /// version or another coin/network.
    pub fn open(path: &Path, coin: &Coin) -> Result<Db> {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create DB_DIRECTORY {}", path.display()))?;
        let db = DB::open_cf_descriptors(&db_options(), path, descriptors_for(path)).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") {
                anyhow!("cannot open the database at {}: it is in use by another process (is another ferrum running on this DB_DIRECTORY?): {msg}", path.display())
            } else {
                anyhow!("cannot open the database at {}: {msg}; {DISK_HINT}", path.display())
            }
        })?;
        let coin_id = format!("{}/{}", coin.name, coin.net.name());
        let get = |key: &[u8]| -> Result<Option<Vec<u8>>> {
            let cf = db.cf_handle(CF_META).expect("meta is opened");
            db.get_cf(cf, key).map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))
        };
        match get(META_VERSION)? {
            None => {
                let cf = db.cf_handle(CF_META).expect("meta is opened");
                let mut batch = WriteBatch::default();
                batch.put_cf(cf, META_VERSION, DB_VERSION.to_be_bytes());
                batch.put_cf(cf, META_COIN, coin_id.as_bytes());
                db.write(batch).map_err(|e| anyhow!("database write failed: {e}; {DISK_HINT}"))?;
            }
            Some(v) => {
                let version = <[u8; 4]>::try_from(v.as_slice()).map(u32::from_be_bytes).unwrap_or(0);
                if version != DB_VERSION {
                    bail!(
                        "the database at {} has format version {version} but this ferrum uses version {DB_VERSION}; \
                         run the ferrum version that made it, or delete the directory to build a new index",
                        path.display()
                    );
                }
                let stored = get(META_COIN)?.unwrap_or_default();
                if stored != coin_id.as_bytes() {
                    bail!(
                        "the database at {} indexes {} but COIN/NET say {coin_id}; point DB_DIRECTORY elsewhere \
                         or fix COIN and NET",
                        path.display(),
                        String::from_utf8_lossy(&stored)
                    );
                }
            }
        }
        let committed = committed_tx_count(&db)?;
        let txids = TxidFile::open(&path.join(TXID_FILE), committed, true)?;
        Ok(Db { db, txids })
    }

    /// Opens an existing database without writing anything (for dumps and inspection).
    pub fn open_read_only(path: &Path) -> Result<Db> {
        let db = DB::open_cf_descriptors_read_only(&db_options(), path, descriptors_for(path), false)
            .map_err(|e| anyhow!("cannot open the database at {} read-only: {e}", path.display()))?;
        let txids = TxidFile::open(&path.join(TXID_FILE), committed_tx_count(&db)?, false)?;
        Ok(Db { db, txids })
    }

    pub fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened")
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))
    }

    /// Applies a batch atomically and durably (fsync'd WAL): after this returns, a crash or
    /// power loss keeps it.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(|e| anyhow!("database write failed: {e}; {DISK_HINT}"))
    }

    pub fn state(&self) -> Result<Option<ChainState>> {
        match self.get(CF_META, META_STATE)? {
            None => Ok(None),
            Some(v) => {
                ChainState::decode(&v).map(Some).ok_or_else(|| anyhow!("corrupt chain state row in the database"))
            }
        }
    }

    /// Every stored header with the cumulative tx count after it, from height 0 up.
    pub fn load_headers(&self) -> Result<Vec<([u8; 80], u64)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_HEADER), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))?;
            let height =
                <[u8; 4]>::try_from(&k[..]).map(u32::from_be_bytes).map_err(|_| anyhow!("corrupt header key"))?;
            if height as usize != out.len() {
                bail!("the database's headers are not contiguous at height {height}");
            }
            out.push(decode_header_value(&v).ok_or_else(|| anyhow!("corrupt header row at height {height}"))?);
        }
        Ok(out)
    }

    /// Txids of a contiguous range of tx numbers (e.g. one block's), in order.
    pub fn txids_range(&self, from: TxNum, to: TxNum) -> Result<Vec<Txid>> {
        let view = self.txids.view();
        let slots = view.range(from, to).ok_or_else(|| anyhow!("the txid file lacks tx numbers {from}..{to}"))?;
        Ok(slots.chunks_exact(32).map(|c| Txid(c.try_into().expect("32 bytes"))).collect())
    }

    /// Txids of the given tx numbers, in their order.
    pub fn txids(&self, nums: &[TxNum]) -> Result<Vec<Txid>> {
        let view = self.txids.view();
        nums.iter()
            .map(|n| view.get(*n).ok_or_else(|| anyhow!("the index is inconsistent: no txid for tx number {n}")))
            .collect()
    }

    /// The txid file as it is now, for many lookups.
    pub fn txid_view(&self) -> TxidView {
        self.txids.view()
    }

    /// Writes txids of tx numbers `first..` to the txid file, durably. Must precede the write
    /// of the batch that commits them.
    pub fn write_txids(&self, first: TxNum, txids: &[Txid]) -> Result<()> {
        self.txids.write(first, txids)
    }

    /// Tx numbers of stored transactions with this txid (normally one; two for the historic
    /// duplicate coinbases), oldest first.
    pub fn tx_nums_of(&self, txid: &Txid) -> Result<Vec<TxNum>> {
        let mut out = Vec::new();
        self.tx_num_finder().find(txid, &mut out)?;
        Ok(out)
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

    /// Unspent outputs by outpoint, many at once: (script hash, creating tx number, value; 0
    /// unless `need_value`) or `None`. One iterator serves all the txid lookups and the point
    /// reads go in batches; a block's spends at the tip are thousands of these.
    pub fn find_utxos(&self, ops: &[&OutPoint], need_value: bool) -> Result<Vec<Option<(HashX, TxNum, u64)>>> {
        let err = |e: rocksdb::Error| anyhow!("database read failed: {e}; {DISK_HINT}");
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
        let mut found: Vec<Option<(HashX, TxNum)>> = vec![None; ops.len()];
        for ((i, n), r) in cands.iter().zip(self.db.batched_multi_get_cf(self.cf(CF_UTXO), keys.iter(), false)) {
            if let Some(v) = r.map_err(err)? {
                if found[*i].is_none() {
                    let hashx = v.as_ref().try_into().map_err(|_| anyhow!("corrupt utxo row"))?;
                    found[*i] = Some((hashx, *n));
                }
            }
        }
        if !need_value {
            return Ok(found.into_iter().map(|f| f.map(|(h, n)| (h, n, 0))).collect());
        }
        let keys: Vec<_> =
            found.iter().zip(ops).filter_map(|(f, op)| f.map(|(h, n)| hashx_utxo_key(&h, n, op.vout))).collect();
        let mut values = self.db.batched_multi_get_cf(self.cf(CF_HASHX_UTXO), keys.iter(), false).into_iter();
        let mut out = Vec::with_capacity(ops.len());
        for (f, op) in found.into_iter().zip(ops) {
            out.push(match f {
                None => None,
                Some((hashx, n)) => {
                    let v = values.next().expect("one value per found output").map_err(err)?;
                    let v = v.ok_or_else(|| {
                        anyhow!("the index is inconsistent: output {}:{} has no value row", op.txid, op.vout)
                    })?;
                    let value = <[u8; 8]>::try_from(v.as_ref()).map_err(|_| anyhow!("corrupt utxo value row"))?;
                    Some((hashx, n, u64::from_be_bytes(value)))
                }
            });
        }
        Ok(out)
    }

    /// An unspent output by outpoint: its script hash, creating tx number and value.
    pub fn utxo(&self, op: &OutPoint) -> Result<Option<(HashX, TxNum, u64)>> {
        Ok(self.find_utxos(&[op], true)?.pop().flatten())
    }

    fn prefix_scan(&self, cf: &str, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        it.seek(prefix);
        while it.valid() {
            let k = it.key().expect("valid");
            if !k.starts_with(prefix) || !f(k, it.value().expect("valid")) {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))
    }

    /// Unspent outputs of a script hash in chain order: (tx number, output index, value).
    pub fn hashx_utxos(&self, hashx: &HashX) -> Result<Vec<(TxNum, u32, u64)>> {
        let mut out = Vec::new();
        self.prefix_scan(CF_HASHX_UTXO, hashx, |k, v| {
            if let (Some((n, vout)), Ok(val)) = (decode_hashx_utxo_key(k), <[u8; 8]>::try_from(v)) {
                out.push((n, vout, u64::from_be_bytes(val)));
            }
            true
        })?;
        Ok(out)
    }

    /// A reader for many histories in a row: one RocksDB iterator (~2 µs to create) serves
    /// them all. It sees the database as it was when made.
    pub fn history_reader(&self) -> HistoryReader<'_> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        HistoryReader { it: self.db.raw_iterator_cf_opt(self.cf(CF_HISTORY), opts) }
    }

    /// History rows of a script hash holding any tx number from `start` on: (key, tx numbers).
    /// An unwind cuts these.
    pub fn history_rows_from(&self, hashx: &HashX, start: TxNum) -> Result<Vec<(Vec<u8>, Vec<TxNum>)>> {
        let mut opts = ReadOptions::default();
        opts.set_total_order_seek(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_HISTORY), opts);
        // The row holding `start`, if any, is the last one keyed at or below it.
        it.seek_for_prev(history_key(hashx, start));
        if !it.valid() || !it.key().expect("valid").starts_with(hashx) {
            it.seek(hashx);
        }
        let mut rows = Vec::new();
        while it.valid() {
            let (k, v) = (it.key().expect("valid"), it.value().expect("valid"));
            if !k.starts_with(hashx) {
                break;
            }
            let mut nums = Vec::new();
            decode_history_row(k, v, &mut nums).ok_or_else(|| anyhow!("corrupt history row in the database"))?;
            if nums.last().is_some_and(|n| *n >= start) {
                rows.push((k.to_vec(), nums));
            }
            it.next();
        }
        it.status().map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))?;
        Ok(rows)
    }

    pub fn undo(&self, height: u32) -> Result<Option<UndoRecord>> {
        match self.get(CF_UNDO, &undo_key(height))? {
            None => Ok(None),
            Some(v) => UndoRecord::decode(&v).map(Some).ok_or_else(|| anyhow!("corrupt undo row at height {height}")),
        }
    }

    /// Lowest height that still has undo data, if any.
    pub fn lowest_undo_height(&self) -> Result<Option<u32>> {
        match self.db.iterator_cf(self.cf(CF_UNDO), IteratorMode::Start).next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(|e| anyhow!("database read failed: {e}"))?;
                Ok(<[u8; 4]>::try_from(&k[..]).ok().map(u32::from_be_bytes))
            }
        }
    }

    /// Approximate size of the live data in bytes.
    pub fn size_estimate(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| self.db.property_int_value_cf(self.cf(cf), "rocksdb.total-sst-files-size").ok().flatten())
            .sum::<u64>()
            + self.txids.size()
    }

    pub fn iter_cf(&self, cf: &str) -> impl Iterator<Item = Result<KeyValue>> + '_ {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(&[], Direction::Forward))
            .map(|r| r.map_err(|e| anyhow!("database read failed: {e}")))
    }
}

/// Every row of the index column families of a closed database, sorted, leaving out undo data
/// (it depends on how close to the tip each block was indexed) and metadata other than the
/// chain state, with history rows split into one per (script hash, tx); then the committed txids, as rows ("txids", tx number, txid). Two databases
/// built from the same chain compare equal.
pub fn dump_index(path: &Path) -> Result<Vec<DumpRow>> {
    let db = Db::open_read_only(path)?;
    let mut out = Vec::new();
    let committed = db.state()?.map_or(0, |s| s.tx_count);
    for (n, txid) in db.txids_range(0, committed)?.iter().enumerate() {
        out.push((TXID_FILE.to_string(), encode_txnum(n as u64).to_vec(), txid.0.to_vec()));
    }
    for cf in ALL_CFS.iter().filter(|cf| **cf != CF_UNDO) {
        for item in db.iter_cf(cf) {
            let (k, v) = item?;
            if *cf == CF_META && &*k != META_STATE {
                continue;
            }
            if *cf == CF_HISTORY {
                // One row per (script hash, tx): how rows are grouped depends on flush timing.
                let mut nums = Vec::new();
                decode_history_row(&k, &v, &mut nums).ok_or_else(|| anyhow!("corrupt history row"))?;
                for n in nums {
                    out.push((cf.to_string(), history_key(k[..HASHX_LEN].try_into()?, n).to_vec(), Vec::new()));
                }
                continue;
            }
            out.push((cf.to_string(), k.to_vec(), v.to_vec()));
        }
    }
    Ok(out)
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
        while self.it.valid() {
            let k = self.it.key().expect("valid");
            if !k.starts_with(prefix) {
                break;
            }
            // Rows share only a prefix of the txid; the txid file tells which one is this.
            let n = decode_txnum(&k[TXID_PREFIX_LEN..]);
            if self.txids.get(n).as_ref() == Some(txid) {
                out.push(n);
            }
            self.it.next();
        }
        // A read error ends the scan early, and the next seek would clear it: check each time.
        self.it.status().map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))
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
        while self.it.valid() && out.len() < limit {
            let (k, v) = (self.it.key().expect("valid"), self.it.value().expect("valid"));
            if !k.starts_with(hashx) {
                break;
            }
            decode_history_row(k, v, &mut out).ok_or_else(|| {
                anyhow!("corrupt history row in the database; delete DB_DIRECTORY to rebuild the index")
            })?;
            self.it.next();
        }
        self.it.status().map_err(|e| anyhow!("database read failed: {e}; {DISK_HINT}"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coins::{lookup, Net};

    #[test]
    fn a_database_of_the_older_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Format 1 kept txids in a "txid" column family.
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path(), [CF_META, "txid"]).unwrap();
            db.put_cf(db.cf_handle(CF_META).unwrap(), META_VERSION, 1u32.to_be_bytes()).unwrap();
        }
        let coin = lookup("Bitcoin", Net::Regtest).unwrap();
        let err = Db::open(dir.path(), coin).err().expect("refused").to_string();
        assert!(err.contains("format version 1") && err.contains("delete the directory"), "{err}");
    }

    #[test]
    fn a_new_database_starts_empty_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let coin = lookup("Bitcoin", Net::Regtest).unwrap();
        let db = Db::open(dir.path(), coin).unwrap();
        assert_eq!((db.state().unwrap().is_none(), db.txid_view().get(0)), (true, None));
        db.write_txids(0, &[Txid([7; 32])]).unwrap();
        drop(db);
        // Nothing committed the txid: reopening drops it.
        let db = Db::open(dir.path(), coin).unwrap();
        assert_eq!(db.txid_view().get(0), None);
    }
}
