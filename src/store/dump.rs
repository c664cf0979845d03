//! A canonical listing of a database, for the tests that compare an index with a fresh sync of
//! the same chain (after reorgs, crashes and restarts).

use std::path::Path;

use anyhow::Result;
use rocksdb::{Direction, IteratorMode};

use super::schema::*;
use super::{corrupt, read_error, Db, TXID_FILE};

/// (column family, key, value), as `dump_index` lists them.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// Every row of the index column families of a closed database, sorted, leaving out undo data
/// (it depends on how close to the tip each block was indexed) and metadata other than the
/// chain state, with history rows split into one per (script hash, tx); then the committed
/// txids, as rows ("txids", tx number, txid). Two databases built from the same chain compare
/// equal.
pub fn dump_index(path: &Path) -> Result<Vec<DumpRow>> {
    let db = Db::open_read_only(path)?;
    let mut out = Vec::new();
    let committed = db.state()?.map_or(0, |s| s.tx_count);
    for (n, txid) in db.txids_range(0, committed)?.iter().enumerate() {
        out.push((TXID_FILE.to_string(), encode_txnum(n as u64).to_vec(), txid.0.to_vec()));
    }
    for cf in ALL_CFS.iter().filter(|cf| **cf != CF_UNDO) {
        for item in db.db.iterator_cf(db.cf(cf), IteratorMode::From(&[], Direction::Forward)) {
            let (k, v) = item.map_err(read_error)?;
            if *cf == CF_META && &*k != META_STATE {
                continue;
            }
            if *cf == CF_HISTORY {
                // One row per (script hash, tx): how rows are grouped depends on flush timing.
                let mut nums = Vec::new();
                decode_history_row(&k, &v, &mut nums).ok_or_else(|| corrupt("a history row"))?;
                let hashx = k[..crate::types::HASHX_LEN].try_into()?;
                out.extend(nums.into_iter().map(|n| (cf.to_string(), history_key(&hashx, n).to_vec(), Vec::new())));
                continue;
            }
            out.push((cf.to_string(), k.to_vec(), v.to_vec()));
        }
    }
    Ok(out)
}
