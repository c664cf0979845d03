//! Vector memtables, sealed after every write.
//!
//! Why: rows are written in batches (a block, a flush), each column family's sorted, and RocksDB's
//! skiplist memtable spent ~1 µs of pointer chasing per row on the writer's one thread: most of
//! a block's write (docs/PERFORMANCE.md, tip latency). A vector memtable appends the rows and
//! sorts once, when it is first read or written to a table file. The price: while it is still
//! being filled, every read copies and sorts it. So every write ends by sealing the memtables
//! it filled (`seal`, from `write_synced`): the next write starts new ones, RocksDB writes the
//! sealed ones to level-0 files in the background, and readers under the index's lock only meet
//! sealed, sorted memtables. The memtable blooms went too: the active memtables they served are
//! empty whenever such a reader runs, and a lookup in a sealed one is a binary search.

use rocksdb::{Options, DB};

use super::schema::*;

/// Which memtables the writable tables get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Memtables {
    /// Every write is sealed (`write_synced`).
    Vector,
    /// A read-only open: what it replays from the log stays in memtables that nothing seals.
    /// (Also the options of the bulk flush's table files, which have no memtable.)
    SkipList,
}

/// The tables whose rows go into vector memtables: those a block writes thousands of rows to.
/// Not `meta` (a few rows, read all the time), nor `header` and `undo` (a row per block): a
/// sealed memtable each per block would make a tiny table file each, and `header`'s, never
/// overlapping, would be moved whole to the bottom level and stay there, one per block.
pub(super) const VECTOR_MEMTABLES: [&str; 5] = [CF_UTXO, CF_HASHX_UTXO, CF_HISTORY, CF_TXNUM, CF_SPEND];

/// The memtable options of table `name`.
pub(super) fn set_options(opts: &mut Options, name: &str, memtables: Memtables) {
    if VECTOR_MEMTABLES.contains(&name) && memtables == Memtables::Vector {
        opts.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        // Sealed memtables wait for their background flush, and their level-0 files for a
        // compaction. A seal (under the index's write lock) waits once a table has 4 sealed
        // memtables pending or 19 level-0 files with RocksDB's defaults (2 and 20; it looks
        // one ahead): these limits keep that to a disk far behind.
        opts.set_max_write_buffer_number(10);
        opts.set_level_zero_slowdown_writes_trigger(30);
        opts.set_level_zero_stop_writes_trigger(40);
    }
}

/// Makes each vector memtable that holds a row and at least `min_bytes` immutable. A failure
/// costs only speed (readers sort a copy), so it is logged.
pub(super) fn seal(db: &DB, min_bytes: u64) {
    let started = std::time::Instant::now();
    let mut opts = rocksdb::FlushOptions::default();
    opts.set_wait(false);
    for name in VECTOR_MEMTABLES {
        let cf = db.cf_handle(name).expect("every column family is opened");
        let int = |p: &str| db.property_int_value_cf(cf, p).ok().flatten().unwrap_or(0);
        if int("rocksdb.num-entries-active-mem-table") > 0 && int("rocksdb.cur-size-active-mem-table") >= min_bytes {
            if let Err(e) = db.flush_cf_opt(cf, &opts) {
                tracing::warn!("sealing the memtable of {name} failed: {e}; its readers will be slower until it is");
            }
        }
    }
    // RocksDB makes a seal wait while the table's flushes or level-0 compactions are far behind.
    let took = started.elapsed();
    if took > std::time::Duration::from_millis(50) {
        tracing::warn!(
            "sealing the memtables waited {:.0} ms for RocksDB's background flushes and compactions: the disk is slow \
             or busy",
            took.as_secs_f64() * 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::regtest_db;
    use super::super::write_synced;
    use super::*;
    use rocksdb::{IteratorMode, WriteBatch};

    #[test]
    fn every_write_seals_the_memtables_it_filled_and_its_rows_stay_readable() {
        let (_dir, db) = regtest_db();
        let rows =
            |cf| db.db.property_int_value_cf(db.cf(cf), "rocksdb.num-entries-active-mem-table").unwrap().unwrap();
        let sealed = |cf| db.db.property_int_value_cf(db.cf(cf), "rocksdb.num-immutable-mem-table").unwrap().unwrap();
        let key = |i: u32| crate::node::block::sha256d(&i.to_be_bytes());
        for round in 0u32..3 {
            let mut batch = WriteBatch::default();
            for i in round * 1000..(round + 1) * 1000 {
                batch.put_cf(db.cf(CF_HISTORY), key(i), [1; 8]);
            }
            batch.put_cf(db.cf(CF_TXNUM), [round as u8], [2]);
            write_synced(&db.db, batch).unwrap();
            for cf in VECTOR_MEMTABLES {
                assert_eq!(rows(cf), 0, "{cf}'s memtable still takes rows after round {round}");
            }
            assert_eq!(db.get(CF_HISTORY, &key(round * 1000 + 7)).unwrap().as_deref(), Some(&[1u8; 8][..]));
            assert_eq!(db.get(CF_TXNUM, &[round as u8]).unwrap().as_deref(), Some(&[2u8][..]));
        }
        db.db.flush_cf(db.cf(CF_HISTORY)).unwrap();
        assert_eq!(sealed(CF_HISTORY), 0, "the sealed memtables go to table files");
        let all = db.db.iterator_cf(db.cf(CF_HISTORY), IteratorMode::Start).count();
        assert_eq!(all, 3000);
    }
}
