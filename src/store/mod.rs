//! The store: one RocksDB database with a column family per row type (`schema`), the txid file
//! beside it, and every change applied as one atomic batch that also carries the chain state
//! (`write`). A kill at any instant leaves the last complete batch, so the database is always
//! consistent. This is the only code that names RocksDB.

mod bulk;
mod dump;
mod memtables;
mod read;
pub mod schema;
mod txid_file;
mod upgrade;
mod write;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, IteratorMode, Options, SliceTransform, WriteBatch, WriteOptions, DB,
};

pub use bulk::INGEST_DIR;
pub use dump::{dump_index, DumpRow};
pub use read::{HistoryReader, UtxoEntry};
pub use txid_file::TxidView;
pub use write::{Batch, CreatedOutput, FlushData, SpentOutput, UnwindData};

use crate::coins::Coin;
use crate::types::{TxNum, Txid};
use memtables::Memtables;
use schema::*;
use txid_file::TxidFile;

pub struct Db {
    db: DB,
    txids: TxidFile,
    path: PathBuf,
    /// The spender backfill due when the database was opened (see `spend_backfill`).
    backfill_at_open: Option<SpendBackfill>,
    /// A bulk flush's marker is written and its ingestion has not finished (`bulk`).
    ingest_pending: std::sync::atomic::AtomicBool,
    /// DB_LOOKUP_ZSTD: the lookup tables are ZSTD at the bottom level once settled.
    lookup_zstd: bool,
}

/// How the database is opened: DB_CACHE_MB and DB_LOOKUP_ZSTD.
#[derive(Clone, Copy, Debug)]
pub struct DbSettings {
    /// RocksDB's block cache (decompressed table blocks, shared by every column family).
    pub block_cache_bytes: usize,
    pub lookup_zstd: bool,
}

impl Default for DbSettings {
    fn default() -> Self {
        DbSettings { block_cache_bytes: crate::config::DEFAULT_DB_CACHE_MB << 20, lookup_zstd: false }
    }
}

/// The txid file's name inside DB_DIRECTORY (RocksDB leaves files it did not name alone).
pub const TXID_FILE: &str = "txids";

/// Hint added to every disk error: what the operator should check, and that nothing is lost.
const DISK_HINT: &str = "check free space and permissions of DB_DIRECTORY; the index keeps its last \
                         complete flush, so restarting ferrum resumes from there";

fn read_error(e: rocksdb::Error) -> anyhow::Error {
    anyhow!("database read failed: {e}; {DISK_HINT}")
}

/// What a row that does not decode means, and what to do.
fn corrupt(what: &str) -> anyhow::Error {
    anyhow!("the index is corrupt: {what}; delete DB_DIRECTORY to rebuild it")
}

/// Writes a batch atomically and durably (fsync'd WAL), then seals the memtables it filled.
fn write_synced(db: &DB, batch: WriteBatch) -> Result<()> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    let written = db.write_opt(batch, &opts).map_err(|e| anyhow!("database write failed: {e}; {DISK_HINT}"));
    memtables::seal(db, 0);
    written
}

/// The tables kept without filters at the bottom level (see `cf_options`).
const HIT_TABLES: [&str; 3] = [CF_UTXO, CF_SPEND, CF_TXNUM];

/// The tables every spend of the initial sync looks up (when its output was flushed earlier):
/// LZ4 while the initial sync writes them, LZ4HC (or ZSTD) at the bottom level once it is over.
const LOOKUP_TABLES: [&str; 3] = [CF_UTXO, CF_HASHX_UTXO, CF_TXNUM];

/// Which options a table's newly written bottom-level files get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// An initial sync is writing table files (`META_SETTLE` is set): its spends look rows up
    /// on disk, and with a small block cache each lookup decompresses a block, which ZSTD made
    /// 24% slower than LZ4 (docs/PERFORMANCE.md).
    Syncing,
    /// Serving, and every time after the initial sync's compaction: the smallest files.
    Settled,
}

impl Phase {
    /// `lookup_zstd`: DB_LOOKUP_ZSTD.
    fn bottommost_compression(self, name: &str, lookup_zstd: bool) -> Option<rocksdb::DBCompressionType> {
        use rocksdb::DBCompressionType::{Lz4, Lz4hc, Zstd};
        let lookup = LOOKUP_TABLES.contains(&name);
        // The two largest tables, history and undo, and the spender index (read by no spend)
        // are always ZSTD at the bottom level, where almost all of their rows end up (and where
        // the bulk flush writes). The lookup tables are what wallets' questions read: once the
        // initial sync is over, LZ4HC, whose blocks decompress as fast as LZ4's (a tenth
        // smaller on the 1M-tx Core chain, for compactions several times slower to write); ZSTD
        // only if the operator chose the smallest database: every lookup that misses the block
        // cache then decompresses a ZSTD block, and wallets' questions through them were 5-9%
        // fewer a second.
        match (lookup, self) {
            (false, _) if [CF_HISTORY, CF_UNDO, CF_SPEND].contains(&name) => Some(Zstd),
            (false, _) => None,
            (true, Phase::Syncing) => Some(Lz4),
            (true, Phase::Settled) if lookup_zstd => Some(Zstd),
            (true, Phase::Settled) => Some(Lz4hc),
        }
    }
}

/// RocksDB's name of a compression type, for `set_options_cf`.
fn compression_name(c: rocksdb::DBCompressionType) -> &'static str {
    match c {
        rocksdb::DBCompressionType::Zstd => "kZSTD",
        rocksdb::DBCompressionType::Lz4hc => "kLZ4HCCompression",
        _ => "kLZ4Compression",
    }
}

fn cf_options(name: &str, cache: &rocksdb::Cache, phase: Phase, memtables: Memtables) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Opened with the initial sync's options for the lookup tables (LZ4 either way); the
    // settled ones are set by `Db::set_phase`.
    if let Some(bottom) = phase.bottommost_compression(name, false) {
        opts.set_bottommost_compression_type(bottom);
    }
    // No filters at the bottom level (where nearly every row sits after the initial sync) for
    // the tables whose lookups mostly find what they look for: a spend's output and its txid,
    // an outpoint's spender once it is known spent. A filter only saves a block read on a miss
    // (here: an outpoint query of a spent output reads `utxo` first); these were 5.8 MB of the
    // 1M-tx chain's 183. The script-keyed tables keep theirs: wallets ask for script hashes
    // never used (history) or long spent (unspent outputs).
    if HIT_TABLES.contains(&name) {
        opts.set_optimize_filters_for_hits(true);
    }
    opts.set_write_buffer_size(64 << 20);
    opts.set_target_file_size_base(64 << 20);
    opts.set_level_compaction_dynamic_level_bytes(true);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    // A full key every 32 rows instead of 16 in the lookup tables, whose rows are small: 0.7 MB
    // less on the 1M-tx Core chain, for a few more key comparisons within a block.
    if LOOKUP_TABLES.contains(&name) {
        table.set_block_restart_interval(32);
    }
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Prefix blooms let a lookup of an unknown script hash or txid skip files entirely.
    let prefix = match name {
        CF_TXNUM => Some(TXID_PREFIX_LEN),
        CF_HISTORY => Some(crate::types::HASHX_LEN),
        CF_HASHX_UTXO => Some(UTXO_HASHX_PREFIX),
        _ => None,
    };
    memtables::set_options(&mut opts, name, memtables);
    match prefix {
        Some(len) => {
            opts.set_prefix_extractor(SliceTransform::create_fixed_prefix(len));
            // Ribbon filters: the false-positive rate of a 10-bit Bloom filter in ~30% less
            // space (history's 3.7 MB of filters on the 1M-tx chain, kept at the bottom level
            // for wallets' questions about unused script hashes), for a little more CPU when a
            // file is written.
            table.set_ribbon_filter(10.0);
            table.set_whole_key_filtering(false);
        }
        // Point lookups by outpoint, most of them for outputs that are not there.
        None if name == CF_UTXO || name == CF_SPEND => table.set_bloom_filter(10.0, false),
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
    // Vector memtables take one writer at a time; ferrum has one.
    opts.set_allow_concurrent_memtable_write(false);
    opts
}

/// Our column families, plus any others an existing database has: a database of an older
/// format must open far enough to be refused by its version, with a clear message.
fn descriptors_for(path: &Path, block_cache_bytes: usize, memtables: Memtables) -> Vec<ColumnFamilyDescriptor> {
    let cache = rocksdb::Cache::new_lru_cache(block_cache_bytes);
    let existing = DB::list_cf(&Options::default(), path).unwrap_or_default();
    let others = existing.into_iter().filter(|n| n != "default" && !ALL_CFS.contains(&n.as_str()));
    ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache, Phase::Syncing, memtables)))
        .chain(others.map(|name| ColumnFamilyDescriptor::new(name, Options::default())))
        .collect()
}

/// The tx count of the committed chain state (0 for a new database).
fn committed_tx_count(db: &DB) -> Result<u64> {
    let cf = db.cf_handle(CF_META).expect("meta is opened");
    match db.get_cf(cf, META_STATE).map_err(read_error)? {
        None => Ok(0),
        Some(v) => ChainState::decode(&v).map(|s| s.tx_count).ok_or_else(|| corrupt("unreadable chain state row")),
    }
}

fn read_backfill(db: &DB) -> Result<Option<SpendBackfill>> {
    let cf = db.cf_handle(CF_META).expect("meta is opened");
    match db.get_cf(cf, META_SPEND_BACKFILL).map_err(read_error)? {
        None => Ok(None),
        Some(v) => SpendBackfill::decode(&v).map(Some).ok_or_else(|| corrupt("unreadable spend backfill row")),
    }
}

impl Db {
    /// Opens (creating if needed) the index for `coin`, refusing a database of another format
    /// version or another coin/network.
    pub fn open(path: &Path, coin: &Coin) -> Result<Db> {
        Db::open_with(path, coin, DbSettings::default())
    }

    /// `open` with the operator's settings (DB_CACHE_MB, DB_LOOKUP_ZSTD).
    pub fn open_with(path: &Path, coin: &Coin, settings: DbSettings) -> Result<Db> {
        let block_cache_bytes = settings.block_cache_bytes;
        std::fs::create_dir_all(path).with_context(|| format!("cannot create DB_DIRECTORY {}", path.display()))?;
        let descriptors = descriptors_for(path, block_cache_bytes, Memtables::Vector);
        let db = DB::open_cf_descriptors(&db_options(), path, descriptors).map_err(|e| {
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
            db.get_cf(cf, key).map_err(read_error)
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
                let stored = get(META_COIN)?.unwrap_or_default();
                let upgradable =
                    [DB_VERSION_BEFORE_SPEND, DB_VERSION_FIXED_HISTORY, DB_VERSION_WHOLE_HASHX_UTXO].contains(&version);
                if version != DB_VERSION && !(upgradable && stored == coin_id.as_bytes()) {
                    bail!(
                        "the database at {} has format version {version} but this ferrum uses version {DB_VERSION}; \
                         run the ferrum version that made it, or delete the directory to build a new index",
                        path.display()
                    );
                }
                if stored != coin_id.as_bytes() {
                    bail!(
                        "the database at {} indexes {} but COIN/NET say {coin_id}; point DB_DIRECTORY elsewhere \
                         or fix COIN and NET",
                        path.display(),
                        String::from_utf8_lossy(&stored)
                    );
                }
                if version == DB_VERSION_BEFORE_SPEND {
                    upgrade::to_spend_index(&db, path)?;
                }
            }
        }
        // A flush a kill interrupted while ingesting its tables is completed before anything
        // reads the chain state.
        bulk::finish_ingest(&db, path)?;
        // Rows of the older format are rewritten before anything reads them.
        upgrade::history_if_due(&db, path)?;
        let utxos_upgraded = upgrade::utxos_if_due(&db, path)?;
        memtables::seal(&db, 0); // the upgrades' last rows, before anything reads them
        let committed = committed_tx_count(&db)?;
        let txids = TxidFile::open(&path.join(TXID_FILE), committed, true)?;
        let db = Db { lookup_zstd: settings.lookup_zstd, ..Db::assemble(db, txids, path)? };
        // The settled options, unless an initial sync that wrote table files was stopped
        // before its compaction (it goes on).
        if !db.settle_due()? {
            db.set_phase(Phase::Settled)?;
        }
        if utxos_upgraded {
            // Every row of the two tables was rewritten, and an old row's deletion sorts after
            // the new rows of its prefix: until a compaction drops them, a wallet's scan of a
            // busy script hash would step over each one. Compacted now, before anything reads
            // them, straight into the settled options.
            let started = std::time::Instant::now();
            for cf in [CF_UTXO, CF_HASHX_UTXO] {
                db.compact_table(cf, true);
            }
            tracing::info!("compacted the unspent-output tables in {:.1} s", started.elapsed().as_secs_f64());
        }
        Ok(db)
    }

    /// Opens an existing database without writing anything (for dumps and inspection).
    pub fn open_read_only(path: &Path) -> Result<Db> {
        let db = DB::open_cf_descriptors_read_only(
            &db_options(),
            path,
            descriptors_for(path, 8 << 20, Memtables::SkipList),
            false,
        )
        .map_err(|e| anyhow!("cannot open the database at {} read-only: {e}", path.display()))?;
        let version = db.get_cf(db.cf_handle(CF_META).expect("meta is opened"), META_VERSION).map_err(read_error)?;
        if version.as_deref() != Some(&DB_VERSION.to_be_bytes()[..]) {
            bail!(
                "the database at {} is not of format {DB_VERSION}; start this ferrum on it once to upgrade it",
                path.display()
            );
        }
        // The 4 → 5 upgrade says version 5 from its first batch; its marker says it is not done.
        // (The 3 → 4 one's marker comes with version 4, refused above.)
        if db.get_cf(db.cf_handle(CF_META).expect("meta is opened"), META_UTXO_UPGRADE).map_err(read_error)?.is_some() {
            bail!("the database at {} is being upgraded; start this ferrum on it once to finish", path.display());
        }
        // Its rows would not match its chain state until the flush is completed.
        if db.get_cf(db.cf_handle(CF_META).expect("meta is opened"), META_INGEST).map_err(read_error)?.is_some() {
            bail!(
                "the database at {} has a flush to complete (a kill interrupted it); start ferrum on it once",
                path.display()
            );
        }
        let txids = TxidFile::open(&path.join(TXID_FILE), committed_tx_count(&db)?, false)?;
        Db::assemble(db, txids, path)
    }

    fn assemble(db: DB, txids: TxidFile, path: &Path) -> Result<Db> {
        let backfill_at_open = read_backfill(&db)?;
        Ok(Db {
            db,
            txids,
            path: path.to_path_buf(),
            backfill_at_open,
            ingest_pending: Default::default(),
            lookup_zstd: false,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened")
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(read_error)
    }

    /// Bytes an unprivileged writer may still use on DB_DIRECTORY's filesystem (`None` if the
    /// system cannot tell).
    pub fn free_bytes(&self) -> Option<u64> {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            (libc::statvfs(path.as_ptr(), &mut st) == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
        }
    }

    /// Applies a batch atomically and durably (fsync'd WAL): after this returns, a crash or
    /// power loss keeps it.
    pub fn write(&self, batch: Batch) -> Result<()> {
        self.settle_ingest()?;
        match batch.0 {
            write::Changes::Rows(rows) => write_synced(&self.db, rows),
            write::Changes::Tables(tables) => self.ingest(tables),
        }
    }

    pub fn state(&self) -> Result<Option<ChainState>> {
        match self.get(CF_META, META_STATE)? {
            None => Ok(None),
            Some(v) => ChainState::decode(&v).map(Some).ok_or_else(|| corrupt("unreadable chain state row")),
        }
    }

    /// Every stored header with the cumulative tx count after it, from height 0 up.
    pub fn load_headers(&self) -> Result<Vec<([u8; 80], u64)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_HEADER), IteratorMode::Start) {
            let (k, v) = item.map_err(read_error)?;
            let height = <[u8; 4]>::try_from(&k[..]).map(u32::from_be_bytes).map_err(|_| corrupt("a header key"))?;
            if height as usize != out.len() {
                bail!("the database's headers are not contiguous at height {height}");
            }
            out.push(decode_header_value(&v).ok_or_else(|| corrupt(&format!("the header row at height {height}")))?);
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

    pub fn undo(&self, height: u32) -> Result<Option<UndoRecord>> {
        match self.get(CF_UNDO, &undo_key(height))? {
            None => Ok(None),
            Some(v) => {
                UndoRecord::decode(&v).map(Some).ok_or_else(|| corrupt(&format!("the undo row at height {height}")))
            }
        }
    }

    /// Lowest height that still has undo data, if any.
    /// What remained of the spender backfill of an upgraded database when it was opened
    /// (`None`: the spender index is whole). The block processor keeps it from then on.
    pub fn spend_backfill(&self) -> Option<SpendBackfill> {
        self.backfill_at_open
    }

    pub fn lowest_undo_height(&self) -> Result<Option<u32>> {
        match self.db.iterator_cf(self.cf(CF_UNDO), IteratorMode::Start).next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(read_error)?;
                Ok(<[u8; 4]>::try_from(&k[..]).ok().map(u32::from_be_bytes))
            }
        }
    }

    /// Moves what the memtables hold into compressed table files, so the write-ahead log they
    /// needed is deleted. After the initial sync's one large batch, the log alone is the size of
    /// the batch (hundreds of MB, uncompressed) and the memtables hold it in memory.
    pub fn flush_memtables(&self) -> Result<()> {
        for cf in ALL_CFS {
            self.db.flush_cf(self.cf(cf)).map_err(|e| anyhow!("database flush failed: {e}; {DISK_HINT}"))?;
        }
        Ok(())
    }

    /// Compacts every table into its bottom level: the initial sync leaves overlapping level-0
    /// files (and, with small caches, rows rewritten and deleted), which cost space and lookups.
    /// After an initial sync that wrote table files (`META_SETTLE`), the bottom level of the
    /// tables kept without filters there and of the lookup tables (LZ4HC or ZSTD) is
    /// rewritten once in the settled options: the bulk flush builds its files with filters (it cannot know the level a file
    /// lands on) in LZ4, and a file ingested straight into the bottom level is otherwise never
    /// rewritten. Other times (every start) nothing is rewritten for its own sake.
    pub fn compact(&self) -> Result<()> {
        let settle = self.settle_due()?;
        if settle {
            self.set_phase(Phase::Settled)?;
        }
        for cf in ALL_CFS {
            self.compact_table(cf, settle && (HIT_TABLES.contains(cf) || LOOKUP_TABLES.contains(cf)));
        }
        if settle {
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_META), META_SETTLE);
            write_synced(&self.db, batch)?;
        }
        Ok(())
    }

    /// Compacts a table into its bottom level; with `rewrite_bottom`, the bottom level's files
    /// are rewritten too, in the options set now (files this compaction writes are not
    /// rewritten again).
    fn compact_table(&self, cf: &str, rewrite_bottom: bool) {
        let mut opts = rocksdb::CompactOptions::default();
        if rewrite_bottom {
            opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        }
        self.db.compact_range_cf_opt::<&[u8], &[u8]>(self.cf(cf), None, None, &opts);
    }

    /// An initial sync wrote table files that `compact` has not rewritten yet.
    fn settle_due(&self) -> Result<bool> {
        Ok(self.db.get_cf(self.cf(CF_META), META_SETTLE).map_err(read_error)?.is_some())
    }

    /// Gives the lookup tables' bottom-level files written from now on the options of `phase`.
    fn set_phase(&self, phase: Phase) -> Result<()> {
        for cf in LOOKUP_TABLES {
            let compression =
                phase.bottommost_compression(cf, self.lookup_zstd).map_or("kLZ4Compression", compression_name);
            self.db
                .set_options_cf(self.cf(cf), &[("bottommost_compression", compression)])
                .map_err(|e| anyhow!("setting {cf}'s compression failed: {e}"))?;
        }
        Ok(())
    }

    /// Approximate size of the live data in bytes.
    pub fn size_estimate(&self) -> u64 {
        self.table_sizes().iter().map(|(_, bytes)| bytes).sum()
    }

    /// On-disk bytes of each column family (its SST files) and of the txid file ("txids").
    pub fn table_sizes(&self) -> Vec<(&'static str, u64)> {
        let mut sizes: Vec<(&'static str, u64)> = ALL_CFS
            .iter()
            .map(|cf| {
                let sst = self.db.property_int_value_cf(self.cf(cf), "rocksdb.total-sst-files-size").ok().flatten();
                (*cf, sst.unwrap_or(0))
            })
            .collect();
        sizes.push(("txids", self.txids.size()));
        sizes
    }

    /// Each column family's table-file properties as RocksDB reports them (entries, raw key and
    /// value bytes, data, index and filter bytes): where a table's bytes go, for benchmarks.
    pub fn table_properties(&self) -> Vec<(&'static str, String)> {
        ALL_CFS
            .iter()
            .map(|cf| {
                let p = self.db.property_value_cf(self.cf(cf), "rocksdb.aggregated-table-properties");
                (*cf, p.ok().flatten().unwrap_or_default())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coins::{lookup, Net};

    pub(super) fn regtest_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), lookup("Bitcoin", Net::Regtest).unwrap()).unwrap();
        (dir, db)
    }

    /// Writes one raw row, as a damaged disk might hold it.
    pub(super) fn put_raw(db: &Db, cf: &str, key: &[u8], value: &[u8]) {
        db.db.put_cf(db.cf(cf), key, value).unwrap();
    }

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
        let (dir, db) = regtest_db();
        assert_eq!((db.state().unwrap().is_none(), db.txid_view().get(0)), (true, None));
        db.write_txids(0, &[Txid([7; 32])]).unwrap();
        drop(db);
        // Nothing committed the txid: reopening drops it.
        let db = Db::open(dir.path(), lookup("Bitcoin", Net::Regtest).unwrap()).unwrap();
        assert_eq!(db.txid_view().get(0), None);
    }

    #[test]
    fn damaged_rows_are_reported_as_corruption() {
        let (_dir, db) = regtest_db();
        put_raw(&db, CF_HEADER, &[0, 0], &[0; 85]);
        assert!(db.load_headers().unwrap_err().to_string().contains("corrupt"));
        put_raw(&db, CF_UNDO, &undo_key(3), &[0xff; 5]);
        assert!(db.undo(3).unwrap_err().to_string().contains("corrupt"));
    }
}
