//! The txid file: every confirmed txid, 32 bytes at offset 32 × tx number, in `DB_DIRECTORY/txids`.
//!
//! Histories and unspent lists are tx numbers; answering them means turning each into a txid.
//! As RocksDB rows that cost a memtable and SST lookup each (~3 µs; 0.6 s for a 200,000-tx
//! history). From a memory-mapped flat file it is a copy from the page cache, and the file is
//! smaller than the rows were (no keys, nothing to compact).
//!
//! Crash safety comes from ordering, not from the batch: new txids are written and synced at
//! offsets past the committed tx count *before* the RocksDB batch that raises the count commits.
//! On open the file is cut back to the committed count, dropping what a crash left past it.
//! An unwind lowers the count without touching the file; the slots past it are rewritten by the
//! next blocks. No reader looks past the committed count, so nobody reads a slot while it is
//! rewritten.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Result};
use memmap2::Mmap;

use crate::types::{TxNum, Txid};

const SLOT: usize = 32;

pub struct TxidFile {
    path: PathBuf,
    file: File,
    /// The whole file, remapped after it grows. `None` while it is empty (an empty file cannot
    /// be mapped).
    map: RwLock<Option<Arc<Mmap>>>,
}

impl TxidFile {
    /// Opens the file of a database whose committed state holds `committed` transactions:
    /// creates it for a new database, cuts off what a crash left past `committed`, and refuses a
    /// file shorter than that.
    pub fn open(path: &Path, committed: u64, writable: bool) -> Result<TxidFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(path)
            .map_err(|e| anyhow!("cannot open the txid file {}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| anyhow!("cannot stat {}: {e}", path.display()))?.len();
        if writable && len == 0 {
            // A new file's directory entry must be durable before a batch counts on its contents.
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| anyhow!("cannot sync the directory {}: {e}", dir.display()))?;
            }
        }
        let want = committed * SLOT as u64;
        if len < want {
            bail!(
                "the txid file {} holds {} transactions but the index has {committed}: the database is damaged; \
                 delete DB_DIRECTORY to build a new index",
                path.display(),
                len / SLOT as u64
            );
        }
        if len > want && writable {
            file.set_len(want).map_err(|e| anyhow!("cannot truncate {}: {e}", path.display()))?;
            tracing::info!("dropped {} uncommitted txids from {}", (len - want) / SLOT as u64, path.display());
        }
        let me = TxidFile { path: path.to_path_buf(), file, map: RwLock::new(None) };
        me.remap()?;
        Ok(me)
    }

    fn remap(&self) -> Result<()> {
        let len = self.file.metadata().map_err(|e| anyhow!("cannot stat {}: {e}", self.path.display()))?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: only ferrum writes this file, and only at slots no reader reads (see the
            // module comment); a mapping never outlives the `Arc` readers hold.
            let m = unsafe { Mmap::map(&self.file) }
                .map_err(|e| anyhow!("cannot map the txid file {}: {e}", self.path.display()))?;
            Some(Arc::new(m))
        };
        *self.map.write().expect("lock") = map;
        Ok(())
    }

    /// Writes the txids of tx numbers `first..` and syncs them to disk. Call before committing
    /// the batch that raises the tx count past them.
    pub fn write(&self, first: TxNum, txids: &[Txid]) -> Result<()> {
        if txids.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(txids.len() * SLOT);
        for t in txids {
            bytes.extend_from_slice(&t.0);
        }
        let hint = "check free space and permissions of DB_DIRECTORY; nothing is lost, restarting ferrum resumes \
                    from the last complete flush";
        self.file
            .write_all_at(&bytes, first * SLOT as u64)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| anyhow!("cannot write the txid file {}: {e}; {hint}", self.path.display()))?;
        self.remap()
    }

    /// The current mapping; hold it for a batch of lookups.
    pub fn view(&self) -> TxidView {
        TxidView(self.map.read().expect("lock").clone())
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }
}

/// A mapping of the txid file as it was when taken.
pub struct TxidView(Option<Arc<Mmap>>);

impl TxidView {
    pub fn get(&self, n: TxNum) -> Option<Txid> {
        let start = usize::try_from(n).ok()?.checked_mul(SLOT)?;
        let slot = self.0.as_ref()?.get(start..start + SLOT)?;
        Some(Txid(slot.try_into().expect("32 bytes")))
    }

    /// The raw 32-byte slots of `from..to`, if all are present.
    pub fn range(&self, from: TxNum, to: TxNum) -> Option<&[u8]> {
        if from == to {
            return Some(&[]);
        }
        let (from, to) = (usize::try_from(from).ok()?, usize::try_from(to).ok()?);
        self.0.as_ref()?.get(from.checked_mul(SLOT)?..to.checked_mul(SLOT)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(n: u8) -> Txid {
        Txid([n; 32])
    }

    #[test]
    fn writes_read_back_and_uncommitted_tails_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txids");
        let f = TxidFile::open(&path, 0, true).unwrap();
        assert_eq!((f.view().get(0), f.view().range(0, 0)), (None, Some(&[][..])));
        f.write(0, &[txid(1), txid(2)]).unwrap();
        f.write(2, &[txid(3)]).unwrap();
        let v = f.view();
        assert_eq!((v.get(0), v.get(2), v.get(3)), (Some(txid(1)), Some(txid(3)), None));
        assert_eq!(v.range(1, 3).unwrap().len(), 64);
        // An unwind to 1 transaction, then a new block rewrites slot 1.
        f.write(1, &[txid(9)]).unwrap();
        assert_eq!(f.view().get(1), Some(txid(9)));
        drop(f);
        // A crash after writing slot 2 but before committing: only 2 are committed.
        let f = TxidFile::open(&path, 2, true).unwrap();
        assert_eq!((f.size(), f.view().get(2)), (64, None));
        drop(f);
        let err = TxidFile::open(&path, 3, true).err().expect("shorter than committed").to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
