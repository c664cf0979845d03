//! In-place upgrades of older database formats, run by `Db::open` before anything reads the
//! rows: an operator upgrading ferrum keeps the index (no resync). Each step is crash-safe: a
//! kill leaves either the old format or a marker from which the next start goes on.
//! - 2 → 3: the spender index starts empty and every block indexed so far is marked for the
//!   backfill (`sync::backfill`), which fetches them again while ferrum serves.
//! - 3 → 4: history rows' tx numbers become distances (`schema::history_value`); each row is
//!   rewritten, in batches that also record the last key done.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rocksdb::{WriteBatch, DB};

use super::schema::*;
use super::{corrupt, read_error, write_synced, DISK_HINT};

/// History rows rewritten per batch: a few MB of batch.
const HISTORY_BATCH_ROWS: usize = 50_000;

fn meta(db: &DB) -> &rocksdb::ColumnFamily {
    db.cf_handle(CF_META).expect("meta is opened")
}

fn write(db: &DB, batch: WriteBatch) -> Result<()> {
    db.write(batch).map_err(|e| anyhow!("database write failed: {e}; {DISK_HINT}"))
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
    let version = db.get_cf(meta(db), META_VERSION).map_err(read_error)?;
    let resume = db.get_cf(meta(db), META_HISTORY_UPGRADE).map_err(read_error)?;
    if version.as_deref() != Some(&DB_VERSION_FIXED_HISTORY.to_be_bytes()[..]) && resume.is_none() {
        return Ok(());
    }
    let cf = db.cf_handle(CF_HISTORY).expect("history is opened");
    let total = db.property_int_value_cf(cf, "rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0).max(1);
    tracing::info!(
        "upgrading the database at {} from format {DB_VERSION_FIXED_HISTORY} to {DB_VERSION} in place: rewriting \
         ~{total} history rows{}",
        path.display(),
        if resume.is_some() { " (resuming)" } else { "" }
    );
    let started = Instant::now();
    let mut last_report = started;
    let (mut done, mut rewritten) = (0u64, 0u64);
    let mut nums = Vec::new();
    let mut last_key = resume;
    loop {
        // A fresh iterator each batch: one held for the whole table would pin every file that
        // compactions replace meanwhile (twice the table's size on disk at the end). Every row
        // written so far is at or before `last_key`, so none is read twice.
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_total_order_seek(true); // the whole table, not one script hash's prefix
        let mut it = db.raw_iterator_cf_opt(cf, opts);
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
        batch.put_cf(meta(db), META_VERSION, DB_VERSION.to_be_bytes());
        let mut batch_last = None;
        let mut rows = 0;
        while let (Some(k), Some(v), true) = (it.key(), it.value(), rows < HISTORY_BATCH_ROWS) {
            if !v.is_empty() {
                nums.clear();
                decode_history_row_v3(k, v, &mut nums).ok_or_else(|| corrupt("a history row of format 3"))?;
                batch.put_cf(cf, k, history_value(nums[0], nums[1..].iter().copied()));
                rewritten += 1;
            }
            batch_last = Some(k.to_vec());
            rows += 1;
            it.next();
        }
        it.status().map_err(read_error)?;
        let Some(batch_last) = batch_last else { break };
        done += rows as u64;
        batch.put_cf(meta(db), META_HISTORY_UPGRADE, &batch_last);
        write(db, batch)?;
        last_key = Some(batch_last);
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let left = total.saturating_sub(done) as f64 / rate.max(1.0);
            tracing::info!(
                "upgrading history rows: {done} of ~{total} ({:.1}%), {rate:.0} rows/s, ~{left:.0} s left",
                (done as f64 * 100.0 / total as f64).min(100.0)
            );
        }
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(meta(db), META_VERSION, DB_VERSION.to_be_bytes());
    batch.delete_cf(meta(db), META_HISTORY_UPGRADE);
    write_synced(db, batch)?;
    tracing::info!(
        "upgraded the database to format {DB_VERSION}: {rewritten} of {done} history rows rewritten in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
