//! In-place upgrades of older database formats, run by `Db::open` before anything reads the
//! rows: an operator upgrading ferrum keeps the index (no resync). Each step is crash-safe: a
//! kill leaves either the old format or a marker from which the next start goes on.
//! - 2 → 3: the spender index starts empty and every block indexed so far is marked for the
//!   backfill (`sync::backfill`), which fetches them again while ferrum serves.
//! - 3 → 4: history rows' tx numbers become distances (`schema::history_value`); each row is
//!   rewritten, in batches that also record the last key done.
//! - 4 → 5: `utxo` rows keep only the script hash's prefix, `hashx_utxo` rows the rest (the
//!   same way).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rocksdb::{WriteBatch, DB};

use super::schema::*;
use super::{corrupt, read_error, write_synced, DISK_HINT};

/// Rows rewritten per batch: a few MB of batch.
const UPGRADE_BATCH_ROWS: usize = 50_000;

fn meta(db: &DB) -> &rocksdb::ColumnFamily {
    db.cf_handle(CF_META).expect("meta is opened")
}

fn write(db: &DB, batch: WriteBatch) -> Result<()> {
    let written = db.write(batch).map_err(|e| anyhow!("database write failed: {e}; {DISK_HINT}"));
    // Each batch's scan opens a new iterator, which copies an unsealed memtable: sealed once
    // it holds 8 MB, not every batch (60,000 tiny level-0 files for mainnet's history).
    super::memtables::seal(db, 8 << 20);
    written
}

/// Format 2 → 3, in one batch: a crash leaves either format 2 untouched or format 3 with the
/// whole backfill due.
pub(super) fn to_spend_index(db: &DB, path: &Path) -> Result<()> {
    let state = db.get_cf(meta(db), META_STATE).map_err(read_error)?;
    let state =
        state.map(|v| ChainState::decode(&v).ok_or_else(|| corrupt("unreadable chain state row"))).transpose()?;
    let mut batch = WriteBatch::default();
    batch.put_cf(meta(db), META_VERSION, DB_VERSION_FIXED_HISTORY.to_be_bytes());
    if let Some(state) = state {
        batch.put_cf(meta(db), META_SPEND_BACKFILL, SpendBackfill { next: 0, end: state.height + 1 }.encode());
    }
    write(db, batch)?;
    tracing::info!(
        "upgraded the database at {} from format {DB_VERSION_BEFORE_SPEND} to {DB_VERSION_FIXED_HISTORY} in place: \
         the spender index for blocks 0..={} is built from the daemon's blocks while ferrum serves (no resync)",
        path.display(),
        state.map_or(0, |s| s.height)
    );
    Ok(())
}

/// Format 3 → 4 if the database is of format 3, or was being upgraded: every history row with
/// more than one tx number is rewritten (a row of one has an empty value in both formats). The
/// first batch already says version 4, so a ferrum of format 3 refuses a half-upgraded database
/// instead of misreading it; a kill resumes after the last key recorded. On Bitcoin mainnet,
/// ~3 billion rows: progress is logged.
pub(super) fn history_if_due(db: &DB, path: &Path) -> Result<()> {
    let cf = db.cf_handle(CF_HISTORY).expect("history is opened");
    let mut nums = Vec::new();
    let step = Step {
        from: DB_VERSION_FIXED_HISTORY,
        to: DB_VERSION_WHOLE_HASHX_UTXO,
        marker: META_HISTORY_UPGRADE,
        cf,
        what: "history rows",
    };
    step.run_if_due(db, path, |k, v, batch| {
        if v.is_empty() {
            return Ok(Some(false));
        }
        nums.clear();
        decode_history_row_v3(k, v, &mut nums).ok_or_else(|| corrupt("a history row of format 3"))?;
        batch.put_cf(cf, k, history_value(nums[0], nums[1..].iter().copied()));
        Ok(Some(true))
    })
    .map(|_| ())
}

/// Format 4 → 5 if the database is of format 4, or was being upgraded: `utxo` rows keep only the
/// script hash's prefix and `hashx_utxo` rows move the rest of it into the value
/// (`schema::hashx_utxo_key`). One pass over the old `hashx_utxo` rows, which hold everything
/// both tables need; rows of the new layout (shorter keys) that the pass has written are
/// skipped. On Bitcoin mainnet, ~200 million rows. Returns whether it ran (`Db::open_with`
/// then compacts both tables).
pub(super) fn utxos_if_due(db: &DB, path: &Path) -> Result<bool> {
    let cf = db.cf_handle(CF_HASHX_UTXO).expect("hashx_utxo is opened");
    let cf_utxo = db.cf_handle(CF_UTXO).expect("utxo is opened");
    let step = Step {
        from: DB_VERSION_WHOLE_HASHX_UTXO,
        to: DB_VERSION,
        marker: META_UTXO_UPGRADE,
        cf,
        what: "unspent outputs",
    };
    step.run_if_due(db, path, |k, v, batch| {
        if k.len() == HASHX_UTXO_KEY_LEN {
            return Ok(None); // written by this upgrade
        }
        let (hashx, tx_num, vout, value) =
            decode_hashx_utxo_v4(k, v).ok_or_else(|| corrupt("a hashx_utxo row of format 4"))?;
        let prefix = hashx_prefix(&hashx);
        batch.delete_cf(cf, k);
        batch.put_cf(cf, hashx_utxo_key(&prefix, tx_num, vout), hashx_utxo_value(&hashx, value));
        batch.put_cf(cf_utxo, utxo_key(tx_num, vout), prefix);
        Ok(Some(true))
    })
}

/// One in-place rewrite of a table's rows, from format `from` to `to`.
struct Step<'a> {
    from: u32,
    to: u32,
    /// Recorded with each batch: the last key done.
    marker: &'static [u8],
    cf: &'a rocksdb::ColumnFamily,
    what: &'static str,
}

impl Step<'_> {
    /// Runs `convert` over every row (it adds the new rows to the batch and says whether it
    /// rewrote this one, or `None` for a row of the new format) if the database is of format `from` or was being upgraded. The first
    /// batch already says version `to`, so a ferrum of format `from` refuses a half-upgraded
    /// database instead of misreading it; a kill resumes after the last key recorded; progress
    /// is logged every 5 s. Returns whether it ran.
    fn run_if_due(
        &self,
        db: &DB,
        path: &Path,
        mut convert: impl FnMut(&[u8], &[u8], &mut WriteBatch) -> Result<Option<bool>>,
    ) -> Result<bool> {
        let version = db.get_cf(meta(db), META_VERSION).map_err(read_error)?;
        let resume = db.get_cf(meta(db), self.marker).map_err(read_error)?;
        if version.as_deref() != Some(&self.from.to_be_bytes()[..]) && resume.is_none() {
            return Ok(false);
        }
        let (from, to, what) = (self.from, self.to, self.what);
        let total = db.property_int_value_cf(self.cf, "rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0).max(1);
        tracing::info!(
            "upgrading the database at {} from format {from} to {to} in place: rewriting ~{total} {what}{}",
            path.display(),
            if resume.is_some() { " (resuming)" } else { "" }
        );
        let started = Instant::now();
        let mut last_report = started;
        let (mut done, mut rewritten) = (0u64, 0u64);
        let mut last_key = resume;
        loop {
            // A fresh iterator each batch: one held for the whole table would pin every file that
            // compactions replace meanwhile (twice the table's size on disk at the end). Every row
            // written so far is at or before `last_key`, or of the new layout, so none is
            // converted twice.
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_total_order_seek(true); // the whole table, not one prefix
            let mut it = db.raw_iterator_cf_opt(self.cf, opts);
            match &last_key {
                Some(last) => {
                    it.seek(last);
                    if it.key() == Some(last.as_slice()) {
                        it.next();
                    }
                }
                None => it.seek_to_first(),
            }
            let mut batch = WriteBatch::default();
            batch.put_cf(meta(db), META_VERSION, to.to_be_bytes());
            let mut batch_last = None;
            let mut rows = 0;
            while let (Some(k), Some(v), true) = (it.key(), it.value(), rows < UPGRADE_BATCH_ROWS) {
                if let Some(turned) = convert(k, v, &mut batch)? {
                    rewritten += u64::from(turned);
                    done += 1;
                }
                batch_last = Some(k.to_vec());
                rows += 1;
                it.next();
            }
            it.status().map_err(read_error)?;
            let Some(batch_last) = batch_last else { break };
            batch.put_cf(meta(db), self.marker, &batch_last);
            write(db, batch)?;
            last_key = Some(batch_last);
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64();
                let left = total.saturating_sub(done) as f64 / rate.max(1.0);
                tracing::info!(
                    "upgrading {what}: {done} of ~{total} ({:.1}%), {rate:.0} rows/s, ~{left:.0} s left",
                    (done as f64 * 100.0 / total as f64).min(100.0)
                );
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(meta(db), META_VERSION, to.to_be_bytes());
        batch.delete_cf(meta(db), self.marker);
        write_synced(db, batch)?;
        tracing::info!(
            "upgraded the database to format {to}: {rewritten} of {done} {what} rewritten in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{put_raw, regtest_db};
    use super::*;
    use crate::types::HashX;

    #[test]
    fn the_unspent_output_upgrade_resumes_after_its_marker_and_skips_rows_it_wrote() {
        let (dir, db) = regtest_db();
        // A was rewritten before a kill; its new key sorts after B's old one, which is next.
        let (a, b): (HashX, HashX) = ([0; 11], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key(&hashx_prefix(&a), 1, 0), &hashx_utxo_value(&a, 50));
        put_raw(&db, CF_UTXO, &utxo_key(1, 0), &hashx_prefix(&a));
        put_raw(&db, CF_HASHX_UTXO, &hashx_utxo_key_v4(&b, 2, 3), &60u64.to_be_bytes());
        put_raw(&db, CF_UTXO, &utxo_key(2, 3), &b);
        assert!(hashx_utxo_key(&hashx_prefix(&a), 1, 0)[..] > hashx_utxo_key_v4(&b, 2, 3)[..]);
        put_raw(&db, CF_META, META_UTXO_UPGRADE, &hashx_utxo_key_v4(&a, 1, 0));
        assert!(utxos_if_due(&db.db, dir.path()).unwrap());
        assert_eq!(db.hashx_utxos(&a).unwrap(), [(1, 0, 50)]);
        assert_eq!(db.hashx_utxos(&b).unwrap(), [(2, 3, 60)]);
        assert!(db.is_unspent(1, 0).unwrap() && db.is_unspent(2, 3).unwrap());
        let meta = |k| db.db.get_cf(db.cf(CF_META), k).unwrap();
        assert_eq!(meta(META_VERSION).as_deref(), Some(&DB_VERSION.to_be_bytes()[..]));
        assert_eq!(meta(META_UTXO_UPGRADE), None);
        assert!(!utxos_if_due(&db.db, dir.path()).unwrap(), "done once");
        // A row of neither layout is corruption, not skipped.
        put_raw(&db, CF_HASHX_UTXO, &[7; 15], &[1]);
        put_raw(&db, CF_META, META_VERSION, &DB_VERSION_WHOLE_HASHX_UTXO.to_be_bytes());
        assert!(utxos_if_due(&db.db, dir.path()).unwrap_err().to_string().contains("corrupt"));
    }
}
