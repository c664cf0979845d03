//! The index as rows (`ferrum::store::dump_index`), to compare a database that went through
//! reorgs, crashes or an upgrade with one a fresh sync of the same chain builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bitcoin::Block;
use tempfile::TempDir;

use crate::process::FerrumProcess;
use crate::scripted_daemon::{DaemonOptions, ScriptedDaemon};

/// (column family, key, value).
pub type Row = (String, Vec<u8>, Vec<u8>);

/// Every row of the index at `db` (never empty: an empty dump would match anything).
pub fn dump(db: &Path) -> Vec<Row> {
    let rows = ferrum::store::dump_index(db).unwrap_or_else(|e| panic!("dump_index({}) failed: {e:#}", db.display()));
    assert!(!rows.is_empty(), "empty index dump of {}", db.display());
    rows
}

/// Syncs `blocks` from scratch with an untouched scripted daemon (ferrum configured by `env`,
/// DAEMON_URL added) and returns the index dump.
pub fn fresh_dump(blocks: &[Block], env: &[(&str, &str)]) -> Vec<Row> {
    let daemon = ScriptedDaemon::start(blocks.to_vec(), DaemonOptions::default());
    let dir = TempDir::new().expect("tempdir");
    let url = daemon.url();
    let mut e = vec![("DAEMON_URL", url.as_str())];
    e.extend_from_slice(env);
    let mut ferrum = FerrumProcess::start(&dir.path().join("db"), &e);
    let tip = blocks[blocks.len() - 1].block_hash().to_string();
    ferrum.wait_for_tip((blocks.len() - 1) as u64, Some(&tip), Duration::from_secs(60));
    ferrum.stop();
    dump(&dir.path().join("db"))
}

fn short_hex(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() > 48 {
        format!("{}…({} bytes)", &h[..48], b.len())
    } else {
        h
    }
}

/// Compares two dumps, panicking with a short summary (per-CF counts and a few differing rows)
/// instead of printing thousands of rows.
pub fn assert_same_index(actual: &[Row], expected: &[Row], what: &str) {
    if actual == expected {
        return;
    }
    fn count(rows: &[Row]) -> BTreeMap<&str, usize> {
        let mut m: BTreeMap<&str, usize> = BTreeMap::new();
        for (cf, _, _) in rows {
            *m.entry(cf.as_str()).or_default() += 1;
        }
        m
    }
    let a: BTreeSet<&Row> = actual.iter().collect();
    let e: BTreeSet<&Row> = expected.iter().collect();
    let fmt = |r: &&Row| format!("  {} {} => {}", r.0, short_hex(&r.1), short_hex(&r.2));
    let extra: Vec<String> = a.difference(&e).take(8).map(fmt).collect();
    let missing: Vec<String> = e.difference(&a).take(8).map(fmt).collect();
    panic!(
        "{what}: index differs from the expected one\n rows: actual {} / expected {}\n per CF actual:   {:?}\n per CF expected: {:?}\n \
         {} unexpected rows, first ones:\n{}\n {} missing rows, first ones:\n{}",
        actual.len(),
        expected.len(),
        count(actual),
        count(expected),
        a.difference(&e).count(),
        extra.join("\n"),
        e.difference(&a).count(),
        missing.join("\n"),
    );
}
