//! The in-place upgrades. From database format 2 (no spender index): ferrum keeps the database
//! and its tip, fetches the indexed blocks again to build the spender index while it serves and
//! follows new blocks and reorgs, resumes after kill -9, and ends with exactly the index a fresh
//! sync builds. From format 3 (history rows with 5-byte tx numbers): the rows are rewritten at
//! start, resuming after the last key a killed upgrade recorded.

use ferrum_testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tempfile::TempDir;

use common::chain::{ChainBuilder, ChainOptions};
use common::client::Client;
use common::dumps::{assert_same_index, dump, fresh_dump};
use common::process::FerrumProcess;
use common::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use ferrum::store::schema;

const WAIT: Duration = Duration::from_secs(120);
const ENV: &[(&str, &str)] = &[("COIN", "Bitcoin"), ("NET", "regtest"), ("CACHE_MB", "16"), ("REORG_LIMIT", "10")];

/// Turns a database of the current format into one of format 4: version 4, `utxo` rows with
/// the whole script hash and `hashx_utxo` rows keyed by it; with `done_until`, into what an
/// upgrade killed after that many rows leaves (the rows after it of format 4, the marker
/// naming the last format 4 key done, version 5). Returns the rows turned.
fn make_format_4(db: &Path, done_until: Option<usize>) -> usize {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db).expect("list column families");
    // Table files written here carry format 4's prefix filters on whole script hashes.
    let descriptors = cfs.iter().map(|name| {
        let mut cf_opts = rocksdb::Options::default();
        if name == "hashx_utxo" {
            cf_opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(11));
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            table.set_whole_key_filtering(false);
            cf_opts.set_block_based_table_factory(&table);
        }
        rocksdb::ColumnFamilyDescriptor::new(name, cf_opts)
    });
    let d = rocksdb::DB::open_cf_descriptors(&opts, db, descriptors).expect("open");
    let (hutxo, utxo) = (d.cf_handle("hashx_utxo").expect("hashx_utxo"), d.cf_handle("utxo").expect("utxo"));
    let mut rows: Vec<_> = d
        .iterator_cf(hutxo, rocksdb::IteratorMode::Start)
        .map(|r| r.expect("row"))
        .map(|(k, v)| {
            let (hashx, tx_num, vout, value) = schema::decode_hashx_utxo(&k, &v).expect("a row of the current format");
            (schema::hashx_utxo_key_v4(&hashx, tx_num, vout), k, hashx, tx_num, vout, value)
        })
        .collect();
    rows.sort();
    let done = done_until.unwrap_or(0);
    for (old, new, hashx, tx_num, vout, value) in &rows[done..] {
        d.delete_cf(hutxo, new).expect("delete");
        d.put_cf(hutxo, old, value.to_be_bytes()).expect("put");
        d.put_cf(utxo, schema::utxo_key(*tx_num, *vout), hashx).expect("put");
    }
    let meta = d.cf_handle("meta").expect("meta");
    match done_until {
        Some(done) => {
            d.put_cf(meta, b"version", schema::DB_VERSION.to_be_bytes()).expect("version");
            d.put_cf(meta, schema::META_UTXO_UPGRADE, rows[done - 1].0).expect("marker");
        }
        None => d.put_cf(meta, b"version", schema::DB_VERSION_WHOLE_HASHX_UTXO.to_be_bytes()).expect("version"),
    }
    for cf in [hutxo, utxo] {
        d.flush_cf(cf).expect("flush");
    }
    rows.len() - done
}

/// Turns a database of the current format into one of format 3: version 3, format 4's unspent
/// outputs and the history rows with 5-byte tx numbers; with `done_until`, into what an upgrade
/// killed after that row leaves (the rows after it of format 3, the marker, version 4). Returns
/// the rows turned.
fn make_format_3(db: &Path, done_until: Option<&[u8]>) -> usize {
    make_format_4(db, None);
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db).expect("list column families");
    let d = rocksdb::DB::open_cf(&opts, db, &cfs).expect("open");
    let hist = d.cf_handle("history").expect("history");
    let mut turned = 0;
    let rows: Vec<_> = d.iterator_cf(hist, rocksdb::IteratorMode::Start).map(|r| r.expect("row")).collect();
    for (k, v) in rows.iter().filter(|(k, _)| done_until.is_none_or(|done| &k[..] > done)) {
        let mut nums = Vec::new();
        schema::decode_history_row(k, v, &mut nums).expect("a history row of the current format");
        let fixed: Vec<u8> = nums[1..].iter().flat_map(|n| schema::encode_txnum(*n)).collect();
        d.put_cf(hist, k, fixed).expect("put");
        turned += usize::from(!v.is_empty());
    }
    let meta = d.cf_handle("meta").expect("meta");
    // An upgrade's first batch already says format 4, with its marker.
    let version = if done_until.is_some() { schema::DB_VERSION_WHOLE_HASHX_UTXO } else { 3 };
    d.put_cf(meta, b"version", version.to_be_bytes()).expect("version");
    if let Some(done) = done_until {
        d.put_cf(meta, schema::META_HISTORY_UPGRADE, done).expect("marker");
    }
    turned
}

/// The keys of the history rows with more than one tx number.
fn packed_history_keys(db: &Path) -> Vec<Vec<u8>> {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db).expect("list column families");
    let d = rocksdb::DB::open_cf_for_read_only(&opts, db, &cfs, false).expect("open");
    let rows = d.iterator_cf(d.cf_handle("history").expect("history"), rocksdb::IteratorMode::Start);
    rows.map(|r| r.expect("row")).filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.to_vec()).collect()
}

/// Turns a database of the current format into one of format 2, as ferrum before the spender
/// index left it: format 3's history rows, no `spend` column family, version 2.
fn make_format_2(db: &Path) {
    make_format_3(db, None);
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db).expect("list column families");
    assert!(cfs.iter().any(|c| c == "spend"), "a current database has the spend table: {cfs:?}");
    let mut d = rocksdb::DB::open_cf(&opts, db, &cfs).expect("open");
    d.drop_cf("spend").expect("drop spend");
    let meta = d.cf_handle("meta").expect("meta");
    d.put_cf(meta, b"version", 2u32.to_be_bytes()).expect("version");
}

/// A database of the current format, synced to `chain` and stopped, with what made it.
struct Synced {
    daemon: ScriptedDaemon,
    dir: TempDir,
    db: std::path::PathBuf,
    url: String,
    f: FerrumProcess,
}

fn synced(chain: &ChainBuilder) -> Synced {
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("db");
    let url = daemon.url();
    let mut env = vec![("DAEMON_URL", url.as_str())];
    env.extend_from_slice(ENV);
    let mut f = FerrumProcess::start(&db, &env);
    f.wait_for_tip(chain.height() as u64, Some(&chain.tip_hash().to_string()), WAIT);
    f.stop();
    Synced { daemon, dir, db, url, f }
}

/// 150 blocks of 3-12 transactions.
fn small_chain(seed: u64) -> ChainBuilder {
    let mut chain =
        ChainBuilder::with_options(seed, ChainOptions { min_txs: 3, max_txs: 12, ..ChainOptions::default() });
    chain.add_blocks(150);
    chain
}

/// Starts ferrum again on its database and stops it once it is at the chain's tip.
fn restart_to_tip(f: &mut FerrumProcess, chain: &ChainBuilder) {
    f.spawn();
    f.wait_for_tip(chain.height() as u64, Some(&chain.tip_hash().to_string()), WAIT);
    f.stop();
}

fn log(f: &FerrumProcess) -> String {
    std::fs::read_to_string(&f.log_path).unwrap_or_default()
}

fn spender_index(f: &FerrumProcess) -> serde_json::Value {
    f.getinfo().map(|i| i["spender_index"].clone()).unwrap_or_default()
}

#[test]
fn a_format_2_database_is_upgraded_in_place_through_crashes_blocks_and_a_reorg() {
    let mut chain =
        ChainBuilder::with_options(1703, ChainOptions { min_txs: 3, max_txs: 12, ..ChainOptions::default() });
    chain.add_blocks(400);
    let Synced { daemon, dir: _dir, db, url, mut f } = synced(&chain);
    let mut env = vec![("DAEMON_URL", url.as_str())];
    env.extend_from_slice(ENV);
    let whole = dump(&db);
    make_format_2(&db);
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db).unwrap();
    assert!(whole.iter().any(|r| r.0 == "spend") && !cfs.iter().any(|c| c == "spend"), "the spend rows are gone");

    // A slow node, so the backfill can be interrupted: kill -9 in the middle of a step, and
    // again once a step is written.
    daemon.set_response_delay(Duration::from_millis(3));
    let mut rng = StdRng::seed_from_u64(17);
    f.spawn();
    std::thread::sleep(Duration::from_millis(rng.gen_range(100..400)));
    f.kill9();
    f.spawn();
    let start = Instant::now();
    while spender_index(&f)["next_height"].as_u64().unwrap_or(0) == 0 {
        assert!(start.elapsed() < WAIT, "no backfill step was written\n{}", f.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
    f.kill9();
    let resumed_from: Vec<String> = log(&f)
        .lines()
        .filter_map(|l| l.split("building the spender index for blocks ").nth(1))
        .map(|rest| rest.split("..").next().unwrap_or("").to_string())
        .collect();
    assert!(log(&f).contains("from format 2 to 3 in place"), "the upgrade is logged\n{}", f.log_tail());

    // While it builds: wallets are served from the kept tip (no resync), outpoint methods wait.
    daemon.set_response_delay(Duration::from_millis(20));
    let mut served = Vec::new();
    let (mut g, ports) = FerrumProcess::start_serving(&db, &["tcp"], &env);
    g.wait_port(ports["tcp"], WAIT);
    let mut c = Client::tcp(ports["tcp"]);
    c.version(json!("1.7"));
    let tip = c.ok("blockchain.headers.subscribe", json!([]));
    assert_eq!(tip["height"], json!(chain.height()), "the tip was kept");
    let coin = chain.utxos()[0].clone();
    let op = coin.outpoint;
    let building = spender_index(&g);
    assert_eq!(building["building"], json!(true), "{building}");
    {
        let e = c.call("blockchain.outpoint.get_status", json!([op.txid.to_string(), op.vout, ""]));
        served.push(format!("{e:?}"));
        assert!(
            e.as_ref().is_err_and(|(code, msg)| *code == -102 && msg.contains("spender index")),
            "outpoints wait for the backfill: {e:?}"
        );
    }

    // New blocks, and a reorg of three of them, while the backfill runs.
    let mut longer = chain.clone();
    longer.add_blocks(5);
    daemon.set_chain(longer.blocks().to_vec());
    std::thread::sleep(Duration::from_millis(400));
    let mut fork = longer.fork(longer.height() - 3);
    fork.add_blocks(4);
    daemon.set_chain(fork.blocks().to_vec());
    g.wait_for_tip(fork.height() as u64, Some(&fork.tip_hash().to_string()), WAIT);
    daemon.set_response_delay(Duration::ZERO);
    let start = Instant::now();
    while spender_index(&g) != json!("complete") {
        assert!(start.elapsed() < WAIT, "the backfill never finished\n{}", g.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = c.ok("blockchain.outpoint.get_status", json!([op.txid.to_string(), op.vout, ""]));
    assert_eq!(st, json!({"funder_height": coin.height}));
    g.stop();
    assert!(log(&g).contains("the spender index is complete"), "{}", g.log_tail());
    eprintln!("backfill runs began at heights {resumed_from:?}; during it: {served:?}");
    let again: Vec<String> = log(&g)
        .lines()
        .filter_map(|l| l.split("building the spender index for blocks ").nth(1))
        .map(|rest| rest.split("..").next().unwrap_or("").to_string())
        .collect();
    assert!(again.iter().any(|h| h != "0"), "a crash resumed the backfill where it was: {resumed_from:?} {again:?}");
    assert_eq!(served.len(), 1);
    assert_same_index(&dump(&db), &fresh_dump(fork.blocks(), ENV), "after the upgrade");
}

#[test]
fn a_database_of_another_format_is_refused_with_a_clear_message() {
    let mut chain = ChainBuilder::new(1704);
    chain.add_blocks(5);
    let Synced { daemon: _daemon, dir: _dir, db, url: _, mut f } = synced(&chain);
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db).unwrap();
        let d = rocksdb::DB::open_cf(&opts, &db, &cfs).unwrap();
        d.put_cf(d.cf_handle("meta").unwrap(), b"version", 1u32.to_be_bytes()).unwrap();
    }
    f.spawn();
    let status = f.wait_exit(WAIT);
    assert!(!status.success());
    let want = format!("has format version 1 but this ferrum uses version {}", schema::DB_VERSION);
    assert!(log(&f).contains(&want), "{}", f.log_tail());
}

#[test]
fn a_format_3_database_has_its_history_rewritten_at_start_resuming_where_a_kill_left_it() {
    let chain = small_chain(1705);
    let Synced { daemon: _daemon, dir: _dir, db, url: _, mut f } = synced(&chain);
    let whole = dump(&db);
    let packed = packed_history_keys(&db);
    assert!(packed.len() >= 4, "rows with several tx numbers to rewrite: {}", packed.len());
    // Killed after the first half: those rows are of the new format, the rest of the old.
    let half = &packed[packed.len() / 2];
    let turned = make_format_3(&db, Some(half));
    assert_eq!(turned, packed.len() - packed.len() / 2 - 1);
    restart_to_tip(&mut f, &chain);
    let upgraded = format!("upgraded the database to format {}: {turned} of", schema::DB_VERSION_WHOLE_HASHX_UTXO);
    assert!(log(&f).contains("(resuming)") && log(&f).contains(&upgraded), "{}", f.log_tail());
    assert_same_index(&dump(&db), &whole, "after the upgrade");
    // And from the start: the whole table.
    let turned = make_format_3(&db, None);
    assert_eq!(turned, packed.len());
    restart_to_tip(&mut f, &chain);
    assert_same_index(&dump(&db), &whole, "after the upgrade from the start");
}

#[test]
fn a_format_4_database_has_its_unspent_outputs_rewritten_at_start_resuming_where_a_kill_left_it() {
    let chain = small_chain(1706);
    let Synced { daemon: _daemon, dir: _dir, db, url: _, mut f } = synced(&chain);
    let whole = dump(&db);
    let all = make_format_4(&db, None);
    assert!(all >= 100, "unspent outputs to rewrite: {all}");
    restart_to_tip(&mut f, &chain);
    let upgraded = format!("upgraded the database to format {}: {all} of {all} unspent outputs", schema::DB_VERSION);
    assert!(log(&f).contains(&upgraded), "{}", f.log_tail());
    assert!(log(&f).contains("compacted the unspent-output tables"), "{}", f.log_tail());
    assert_same_index(&dump(&db), &whole, "after the upgrade from the start");
    // Killed after the first half: those rows are of the new layout, the rest of the old.
    let turned = make_format_4(&db, Some(all / 2));
    assert_eq!(turned, all - all / 2);
    let refused = ferrum::store::Db::open_read_only(&db).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("is being upgraded"), "a half-upgraded database is not read: {refused}");
    restart_to_tip(&mut f, &chain);
    let upgraded = format!("upgraded the database to format {}: {turned} of", schema::DB_VERSION);
    assert!(log(&f).contains("(resuming)") && log(&f).contains(&upgraded), "{}", f.log_tail());
    assert_same_index(&dump(&db), &whole, "after the upgrade");
    // Wallets' unspent outputs read back from the new layout, the busiest scripts' included.
    let index = ferrum::store::Db::open_read_only(&db).expect("open");
    let scripts: Vec<_> =
        chain.hot_scripts().iter().cloned().chain(chain.utxos().iter().take(20).map(|u| u.script.clone())).collect();
    for script in scripts {
        let hashx = ferrum::types::ScriptHash::of_script(script.as_bytes()).hashx();
        let mut got: Vec<(u32, u64)> = index.hashx_utxos(&hashx).expect("read").iter().map(|u| (u.1, u.2)).collect();
        let mut want: Vec<_> = chain.utxos_of(&script).iter().map(|u| (u.outpoint.vout, u.value)).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{script:?}");
    }
}
