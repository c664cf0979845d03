//! A large flush written as table files and ingested, rather than as one batch through the
//! memtables.
//!
//! Why: RocksDB inserts a batch into its memtables on one thread, at about a microsecond a row;
//! the initial sync's big flushes (millions of rows) spent most of their time there, held the
//! batch twice in memory (the batch, then the memtables) and wrote it twice to disk (the log,
//! then the tables). Here each column family's rows, already sorted, go straight into a table
//! file, the files are built in parallel, and RocksDB adopts them whole (on an empty database
//! at the bottom level: no compaction follows).
//!
//! Atomicity: RocksDB ingests one column family at a time, so a kill can fall between two. The
//! files are complete and synced before anything else happens; then a marker row records the
//! chain state they lead to; then the files are ingested one by one (copied, so each stays in
//! place until the end); then one batch writes the chain state and removes the marker. Ingesting
//! a file twice changes nothing (the same rows and deletions again), so a database opened with
//! the marker present ingests every file again and finishes the flush (`finish_ingest`):
//! the kill lands either before the marker (the old state, files discarded) or after it (the
//! new state, completed). Only the block processor writes, and only while no client is served
//! (a reader could see rows of a flush whose state is not yet written), see `sync::processor`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch, DB};

use super::schema::*;
use super::write::put_state;
use super::{cf_options, write_synced, Db, Phase, DISK_HINT};

/// The directory inside DB_DIRECTORY where a flush's table files wait to be ingested.
pub const INGEST_DIR: &str = "ingest";

/// One row of a flush: a value to put (built on the way for a history row), or a deletion.
pub(super) enum Row<'a> {
    Put(&'a [u8], Cow<'a, [u8]>),
    Delete(&'a [u8]),
}

impl<'a> Row<'a> {
    pub(super) fn put(key: &'a [u8], value: &'a [u8]) -> Row<'a> {
        Row::Put(key, Cow::Borrowed(value))
    }
}

/// A column family's rows of a flush, in key order.
pub(super) type RowIter<'a> = Box<dyn Iterator<Item = Row<'a>> + Send + 'a>;

/// What a flush as table files consists of, recorded in its marker: which column families have
/// a file, and what the last batch writes once every file is ingested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Finish {
    pub state: ChainState,
    /// Undo data below this height is dropped.
    pub keep_undo_from: Option<u32>,
    /// Bit i set: `ALL_CFS[i]` has a file.
    files: u16,
}

impl Finish {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.state.encode().to_vec();
        v.extend_from_slice(&self.files.to_be_bytes());
        if let Some(h) = self.keep_undo_from {
            v.extend_from_slice(&h.to_be_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Finish> {
        let state = ChainState::decode(v.get(..44)?)?;
        let files = u16::from_be_bytes(v.get(44..46)?.try_into().ok()?);
        let keep_undo_from = match v.len() {
            46 => None,
            50 => Some(u32::from_be_bytes(v[46..].try_into().ok()?)),
            _ => return None,
        };
        Some(Finish { state, keep_undo_from, files })
    }

    /// The flush's files, in `dir`.
    fn files(&self, dir: &Path) -> Vec<(&'static str, PathBuf)> {
        ALL_CFS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.files & (1 << i) != 0)
            .map(|(_, name)| (*name, dir.join(format!("{name}.sst"))))
            .collect()
    }

    /// `settle`: the flush is part of an initial sync, whose files the compaction after it
    /// rewrites (`META_SETTLE`). Not a catch-up's: that would rewrite the whole bottom level of
    /// some tables after every restart that follows some downtime.
    fn batch(&self, db: &DB, settle: bool) -> WriteBatch {
        let mut batch = WriteBatch::default();
        put_state(db, &mut batch, self.state, self.keep_undo_from);
        batch.delete_cf(cf(db, CF_META), META_INGEST);
        if settle {
            batch.put_cf(cf(db, CF_META), META_SETTLE, []);
        }
        batch
    }
}

/// A flush as table files (in `DB_DIRECTORY/ingest`), one per column family that has rows.
pub struct Tables {
    finish: Finish,
}

fn disk_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{what} failed: {e}; {DISK_HINT}")
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("every column family is opened")
}

fn ingest_files(db: &DB, files: &[(&'static str, PathBuf)]) -> Result<()> {
    let mut opts = IngestExternalFileOptions::default();
    // Copied, not moved: the file must stay for a repeat after a kill.
    opts.set_move_files(false);
    for (name, path) in files {
        db.ingest_external_file_cf_opts(cf(db, name), &opts, vec![path])
            .map_err(|e| disk_error(&format!("ingesting {}", path.display()), e))?;
    }
    Ok(())
}

/// An initial sync is under way: the database had no chain state before it, or a flush of it
/// already set `META_SETTLE`.
pub(super) fn initial_sync(db: &DB) -> Result<bool> {
    let get = |key| db.get_cf(cf(db, CF_META), key).map_err(|e| disk_error("database read", e));
    Ok(get(META_STATE)?.is_none() || get(META_SETTLE)?.is_some())
}

/// At open, before anything reads the chain state (and before any write after a failed
/// ingestion): completes a flush interrupted after its marker was written, or discards the
/// files of one interrupted before.
pub(super) fn finish_ingest(db: &DB, path: &Path) -> Result<()> {
    let dir = path.join(INGEST_DIR);
    let marker = db.get_cf(cf(db, CF_META), META_INGEST).map_err(|e| disk_error("database read", e))?;
    let Some(marker) = marker else {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    };
    let finish = Finish::decode(&marker).ok_or_else(|| super::corrupt("unreadable ingest marker"))?;
    let files = finish.files(&dir);
    if let Some((_, missing)) = files.iter().find(|(_, p)| !p.is_file()) {
        return Err(super::corrupt(&format!(
            "an interrupted flush to height {} lacks its table file {}",
            finish.state.height,
            missing.display()
        )));
    }
    tracing::info!(
        "completing the flush to height {} that was interrupted while its {} table files were ingested",
        finish.state.height,
        files.len()
    );
    ingest_files(db, &files)?;
    write_synced(db, finish.batch(db, initial_sync(db)?))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

impl Db {
    fn ingest_dir(&self) -> PathBuf {
        self.path.join(INGEST_DIR)
    }

    /// Writes each column family's rows (sorted by key, no key twice) to its own table file,
    /// in parallel, synced. Column families without rows get no file.
    pub(super) fn build_tables<'a>(
        &self,
        rows: Vec<(&'static str, RowIter<'a>)>,
        finish: (ChainState, Option<u32>),
    ) -> Result<Tables> {
        // The directory may still hold an earlier flush whose ingestion failed: finish it first.
        self.settle_ingest()?;
        let dir = self.ingest_dir();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| disk_error("creating the ingest directory", e))?;
        let built: Vec<Result<Option<(&'static str, PathBuf)>>> = std::thread::scope(|s| {
            let workers: Vec<_> = rows
                .into_iter()
                .map(|(cf, rows)| {
                    let path = dir.join(format!("{cf}.sst"));
                    s.spawn(move || write_table(cf, &path, rows).map(|any| any.then_some((cf, path))))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(anyhow!("a table writer panicked")))).collect()
        });
        let mut files = 0u16;
        for file in built {
            if let Some((name, _)) = file? {
                files |= 1 << ALL_CFS.iter().position(|c| *c == name).expect("one of ours");
            }
        }
        sync_dir(&dir)?;
        Ok(Tables { finish: Finish { state: finish.0, keep_undo_from: finish.1, files } })
    }

    /// Completes a flush whose ingestion failed part-way in this process (its marker is written,
    /// so a restart would complete it): before anything else is written, or the marker would
    /// later roll the state back under newer rows.
    pub(super) fn settle_ingest(&self) -> Result<()> {
        if self.ingest_pending.load(std::sync::atomic::Ordering::Acquire) {
            finish_ingest(&self.db, &self.path)?;
            self.ingest_pending.store(false, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Makes a flush built by `build_tables` part of the database (see the module's comment for
    /// why a kill at any point leaves a whole flush or none).
    pub(super) fn ingest(&self, tables: Tables) -> Result<()> {
        // The sync's compactions into the bottom level write what its lookups read fastest
        // (setting options that are already set changes nothing).
        let initial = initial_sync(&self.db)?;
        if initial {
            self.set_phase(Phase::Syncing)?;
        }
        let mut marker = WriteBatch::default();
        marker.put_cf(self.cf(CF_META), META_INGEST, tables.finish.encode());
        write_synced(&self.db, marker)?;
        self.ingest_pending.store(true, std::sync::atomic::Ordering::Release);
        ingest_files(&self.db, &tables.finish.files(&self.ingest_dir()))?;
        write_synced(&self.db, tables.finish.batch(&self.db, initial))?;
        self.ingest_pending.store(false, std::sync::atomic::Ordering::Release);
        let _ = std::fs::remove_dir_all(self.ingest_dir());
        Ok(())
    }
}

/// Writes `rows` to a table file at `path` with the column family's own options (compression,
/// filters, prefix extractor) of the initial sync; false if there were none (no file is left).
fn write_table(cf: &str, path: &Path, rows: RowIter) -> Result<bool> {
    let opts =
        cf_options(cf, &rocksdb::Cache::new_lru_cache(1 << 20), Phase::Syncing, super::memtables::Memtables::SkipList);
    let mut writer = SstFileWriter::create(&opts);
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return Ok(false);
    }
    writer.open(path).map_err(|e| disk_error(&format!("creating {}", path.display()), e))?;
    for row in rows {
        match row {
            Row::Put(k, v) => writer.put(k, v),
            Row::Delete(k) => writer.delete(k),
        }
        .map_err(|e| disk_error(&format!("writing {}", path.display()), e))?;
    }
    writer.finish().map_err(|e| disk_error(&format!("finishing {}", path.display()), e))?;
    Ok(true)
}

/// Makes the files' names durable, not only their contents.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| disk_error("syncing the ingest directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coins::{lookup, Net};
    use crate::store::{dump_index, Batch, CreatedOutput, DbSettings, FlushData, SpentOutput, LOOKUP_TABLES};
    use crate::types::{Txid, HASHX_LEN};

    #[test]
    fn the_marker_round_trips() {
        let state = ChainState { height: 7, tip: [3; 32], tx_count: 99 };
        for keep in [None, Some(5)] {
            let f = Finish { state, keep_undo_from: keep, files: 0b101 };
            assert_eq!(Finish::decode(&f.encode()), Some(f));
            assert_eq!(f.files(Path::new("/d")).iter().map(|(c, _)| *c).collect::<Vec<_>>(), [ALL_CFS[0], ALL_CFS[2]]);
        }
        assert_eq!(Finish::decode(&[0; 45]), None);
    }

    fn open(path: &Path) -> Db {
        Db::open(path, lookup("Bitcoin", Net::Regtest).unwrap()).unwrap()
    }

    fn hashx(n: u64) -> [u8; HASHX_LEN] {
        let mut h = [0u8; HASHX_LEN];
        h[..8].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
        h
    }

    /// The second of two flushes spends outputs of the first, so it deletes rows as well as
    /// adding them, and drops old undo data: `k` = 0 is the first (heights 0-2, txs 0..30), 1
    /// the second (heights 3-4, txs 30..50). Its txids are written; the batch is returned.
    fn flush(db: &Db, k: u32, as_tables: bool) -> Batch {
        let (txs, heights, first_height) = if k == 0 { (0..30u64, 3, 0) } else { (30..50, 2, 3) };
        let created =
            txs.clone().flat_map(|t| (0..2).map(move |v| (t, v))).filter(|(t, v)| !(k == 1 && *t >= 45 && *v == 1));
        let created: Vec<CreatedOutput> = created
            .map(|(t, v)| CreatedOutput {
                tx_num: t,
                vout: v,
                hashx: hashx(t * 2 + v as u64),
                value: t * 1000 + v as u64,
            })
            .collect();
        let spent: Vec<SpentOutput> = if k == 0 {
            Vec::new()
        } else {
            (0..10).map(|t| SpentOutput { tx_num: t, vout: 0, hashx: hashx(t * 2) }).collect()
        };
        let mut history: Vec<_> = created.iter().map(|c| history_key(&c.hashx, c.tx_num)).collect();
        history.extend(spent.iter().map(|s| history_key(&s.hashx, 30 + s.tx_num)));
        let mut spends: Vec<SpendRow> = spent.iter().map(|s| spend_row(s.tx_num, s.vout, 30 + s.tx_num)).collect();
        let txids: Vec<Txid> = txs.clone().map(|t| Txid([t as u8 + 1; 32])).collect();
        db.write_txids(txs.start, &txids).unwrap();
        let headers = (0..heights).map(|h| ([h as u8 + 10 * k as u8; 80], txs.start + 10 * (h + 1) as u64)).collect();
        let undo: Vec<(u32, Vec<u8>)> = (0..heights).map(|h| (first_height + h, vec![k as u8; 40])).collect();
        let tip = first_height + heights - 1;
        db.flush_batch(FlushData {
            created,
            spent: &spent,
            history: &mut history,
            spends: &mut spends,
            txids: &txids,
            first_tx_num: txs.start,
            headers,
            first_height,
            undo: &undo,
            keep_undo_from: (k == 1).then_some(2),
            state: ChainState { height: tip, tip: [tip as u8; 32], tx_count: txs.end },
            as_tables,
        })
        .unwrap()
    }

    /// The index rows and the undo rows.
    type Contents = (Vec<crate::store::DumpRow>, Vec<(Vec<u8>, Vec<u8>)>);

    fn contents(path: &Path) -> Contents {
        let undo = {
            let db = Db::open_read_only(path).unwrap();
            let rows = db.db.iterator_cf(db.cf(CF_UNDO), rocksdb::IteratorMode::Start);
            rows.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap()
        };
        (dump_index(path).unwrap(), undo)
    }

    /// Writes flushes 0..=last of the reference, as batches, and lists the result.
    fn reference(last: u32) -> Contents {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        for k in 0..=last {
            db.write(flush(&db, k, false)).unwrap();
        }
        drop(db);
        contents(dir.path())
    }

    /// An ingestion stopped after its marker and `n` files, as a kill or a failed write leaves it.
    fn interrupt(db: &Db, tables: &Tables, n: usize) {
        let mut marker = WriteBatch::default();
        marker.put_cf(db.cf(CF_META), META_INGEST, tables.finish.encode());
        write_synced(&db.db, marker).unwrap();
        db.ingest_pending.store(true, std::sync::atomic::Ordering::Release);
        ingest_files(&db.db, &tables.finish.files(&db.ingest_dir())[..n]).unwrap();
    }

    #[test]
    fn a_failed_ingestion_is_completed_before_the_next_write() {
        let want = reference(1);
        // The processor keeps the flush's blocks after a failed write and flushes them again,
        // as table files or (once serving) as a batch.
        for retry_as_tables in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path());
            db.write(flush(&db, 0, true)).unwrap();
            let Batch(crate::store::write::Changes::Tables(tables)) = flush(&db, 1, true) else { panic!("tables") };
            interrupt(&db, &tables, 3);
            db.write(flush(&db, 1, retry_as_tables)).unwrap();
            drop(db);
            assert!(contents(dir.path()) == want, "retried as tables: {retry_as_tables}");
        }
    }

    #[test]
    fn a_missing_table_file_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(flush(&db, 0, true)).unwrap();
        let Batch(crate::store::write::Changes::Tables(tables)) = flush(&db, 1, true) else { panic!("tables") };
        interrupt(&db, &tables, 1);
        drop(db);
        std::fs::remove_file(dir.path().join(INGEST_DIR).join(format!("{CF_HISTORY}.sst"))).unwrap();
        let err = Db::open(dir.path(), lookup("Bitcoin", Net::Regtest).unwrap()).err().expect("refused").to_string();
        assert!(err.contains("lacks its table file") && err.contains("corrupt"), "{err}");
    }

    #[test]
    fn flushes_as_table_files_equal_batches_and_survive_a_kill_at_every_step() {
        let (after_first, after_both) = (reference(0), reference(1));
        assert_ne!(after_first, after_both);
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(flush(&db, 0, true)).unwrap();
        db.write(flush(&db, 1, true)).unwrap();
        assert!(!dir.path().join(INGEST_DIR).exists(), "the files are removed once ingested");
        drop(db);
        assert!(contents(dir.path()) == after_both, "two flushes as tables differ from the batches");

        // Killed with the files built but no marker: the flush never happened. Killed after the
        // marker, with 0..=all files ingested: the next open completes it.
        let n_files = 7;
        for ingested in [None].into_iter().chain((0..=n_files).map(Some)) {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path());
            db.write(flush(&db, 0, true)).unwrap();
            let Batch(crate::store::write::Changes::Tables(tables)) = flush(&db, 1, true) else { panic!("tables") };
            let files = tables.finish.files(&dir.path().join(INGEST_DIR));
            assert_eq!(files.len(), n_files, "every column family has rows");
            if let Some(n) = ingested {
                interrupt(&db, &tables, n);
            }
            drop(db);
            let want = if ingested.is_some() { &after_both } else { &after_first };
            drop(open(dir.path()));
            assert!(&contents(dir.path()) == want, "killed with {ingested:?} files ingested");
            assert!(!dir.path().join(INGEST_DIR).exists());
        }
    }

    /// One of a table's figures (e.g. "filter block size"), from RocksDB's properties of its files.
    fn table_figure(db: &Db, cf: &str, figure: &str) -> u64 {
        let props = db.table_properties().into_iter().find(|(t, _)| *t == cf).unwrap().1;
        let field = props.split("; ").find_map(|f| f.strip_prefix(figure)?.strip_prefix('=')).unwrap();
        field.parse().unwrap()
    }

    fn filter_bytes(db: &Db, cf: &str) -> u64 {
        table_figure(db, cf, "filter block size")
    }

    /// The names of a table's files.
    fn files_of(db: &Db, cf: &str) -> Vec<String> {
        db.db.live_files().unwrap().into_iter().filter(|f| f.column_family_name == cf).map(|f| f.name).collect()
    }

    #[test]
    fn the_compaction_after_the_initial_sync_rewrites_the_bottom_level_once_in_the_settled_options() {
        // The lookup tables' data bytes after the compaction: [LZ4 before, LZ4HC, ZSTD].
        let mut sizes = vec![[0u64; 3]; LOOKUP_TABLES.len()];
        for lookup_zstd in [false, true] {
            let settings = DbSettings { lookup_zstd, ..DbSettings::default() };
            let open = |path: &Path| Db::open_with(path, lookup("Bitcoin", Net::Regtest).unwrap(), settings).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path());
            db.write(flush(&db, 0, true)).unwrap();
            // The bulk flush's files are built with filters and LZ4, land in the bottom level,
            // and say so until the compaction, also across a restart.
            assert!(filter_bytes(&db, CF_UTXO) > 0);
            assert!(db.settle_due().unwrap());
            drop(db);
            let db = open(dir.path());
            let lz4: Vec<u64> = LOOKUP_TABLES.iter().map(|cf| table_figure(&db, cf, "data block size")).collect();
            db.compact().unwrap();
            assert!(!db.settle_due().unwrap());
            for cf in super::super::HIT_TABLES {
                assert_eq!(filter_bytes(&db, cf), 0, "{cf}: every lookup there finds its row");
            }
            for cf in [CF_HISTORY, CF_HASHX_UTXO] {
                assert!(filter_bytes(&db, cf) > 0, "{cf}: wallets ask for script hashes never used or long spent");
            }
            for ((cf, lz4), sizes) in LOOKUP_TABLES.iter().zip(lz4).zip(&mut sizes) {
                sizes[0] = lz4;
                sizes[1 + usize::from(lookup_zstd)] = table_figure(&db, cf, "data block size");
            }
            // A later start's compaction (every start runs one) rewrites nothing for its own
            // sake (`meta` has the flag's deletion to write).
            drop(db);
            let db = open(dir.path());
            let tables = &ALL_CFS[1..];
            let files: Vec<_> = tables.iter().map(|cf| files_of(&db, cf)).collect();
            db.compact().unwrap();
            assert_eq!(files, tables.iter().map(|cf| files_of(&db, cf)).collect::<Vec<_>>());
            drop(db);
            assert!(contents(dir.path()) == reference(0));
            // A catch-up after downtime may flush as table files too: no settling for that.
            let db = open(dir.path());
            db.write(flush(&db, 1, true)).unwrap();
            assert!(!db.settle_due().unwrap(), "a catch-up's bulk flush marks nothing");
            drop(db);
            assert!(contents(dir.path()) == reference(1));
        }
        // Settled: LZ4HC, or ZSTD with DB_LOOKUP_ZSTD; each smaller than the sync's LZ4.
        for (cf, [lz4, lz4hc, zstd]) in LOOKUP_TABLES.iter().zip(sizes) {
            assert!(zstd < lz4hc && lz4hc < lz4, "{cf}: {lz4} bytes in LZ4, {lz4hc} in LZ4HC, {zstd} in ZSTD");
        }
    }
}
