//! The block processor in process, against a temporary database: blocks applied, flushed
//! (once, or many times with a tiny cache) and unwound, with the index's answers compared after
//! each step to the chain builder's own account of every script (history, balance, unspent
//! outputs). No daemon and no server: the stateful core alone.

use std::sync::Arc;

use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use ferrum::coins::{lookup, Coin, Net};
use ferrum::index::{Chain, Index, IndexWriter};
use ferrum::metrics::Metrics;
use ferrum::node::block::parse_block;
use ferrum::store::Db;
use ferrum::sync::processor::{ApplyError, BlockProcessor};
use ferrum::types::ScriptHash;
use ferrum_testkit::chain::{ChainBuilder, ChainOptions, ScriptKind};

fn coin() -> &'static Coin {
    lookup("Bitcoin", Net::Regtest).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    index: Arc<Index>,
    processor: BlockProcessor,
    metrics: Arc<Metrics>,
}

/// An empty index and its processor, flushing when the cache passes `cache_bytes`, keeping
/// undo data for `reorg_limit` blocks.
fn setup_with(cache_bytes: usize, reorg_limit: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), coin()).unwrap());
    let (index, writer): (Arc<Index>, IndexWriter) = Index::new(db.clone(), Chain::default(), coin());
    let metrics = Arc::new(Metrics::new());
    let processor = BlockProcessor::new(writer, db, cache_bytes, reorg_limit, metrics.clone());
    Setup { _dir: dir, index, processor, metrics }
}

fn setup(cache_bytes: usize) -> Setup {
    setup_with(cache_bytes, 1000)
}

fn apply(p: &mut BlockProcessor, chain: &ChainBuilder, heights: std::ops::RangeInclusive<u32>) {
    let tip = chain.height();
    for h in heights {
        let block = parse_block(&serialize(&chain.blocks()[h as usize]), h, coin()).unwrap();
        p.apply(&block, tip).unwrap_or_else(|e| panic!("block {h}: {e:?}"));
    }
}

/// The scripts to check: the hot ones and one of each kind.
fn scripts(chain: &ChainBuilder) -> Vec<bitcoin::ScriptBuf> {
    let mut out = chain.hot_scripts().to_vec();
    out.extend(ScriptKind::ALL.iter().filter_map(|k| chain.script_of_kind(*k)));
    out
}

/// The index answers exactly what the builder says, for every script, at the builder's tip.
fn assert_index_is(index: &Index, chain: &ChainBuilder, what: &str) {
    let snap = index.snapshot();
    assert_eq!(snap.height(), Some(chain.height()), "{what}: tip height");
    assert_eq!(snap.block_hash(chain.height()).map(bitcoin::BlockHash::from_byte_array), Some(chain.tip_hash()));
    for script in scripts(chain) {
        let hashx = ScriptHash::of_script(script.as_bytes()).hashx();
        let history: Vec<(String, u32)> =
            snap.history_prefix(&hashx, usize::MAX).unwrap().into_iter().map(|(t, h)| (t.to_string(), h)).collect();
        let want: Vec<(String, u32)> = chain.history(&script).into_iter().map(|(t, h)| (t.to_string(), h)).collect();
        assert_eq!(history, want, "{what}: history of {script}");
        let (confirmed, unconfirmed, _) = snap.balance(&hashx).unwrap();
        assert_eq!((confirmed, unconfirmed), (chain.balance(&script), 0), "{what}: balance of {script}");
        let mut unspent: Vec<(String, u32, u32, u64)> = snap
            .confirmed_unspent(&hashx)
            .unwrap()
            .into_iter()
            .map(|u| (u.txid.to_string(), u.vout, u.height, u.value))
            .collect();
        let mut want: Vec<(String, u32, u32, u64)> = chain
            .utxos_of(&script)
            .into_iter()
            .map(|u| (u.outpoint.txid.to_string(), u.outpoint.vout, u.height, u.value))
            .collect();
        unspent.sort();
        want.sort();
        assert_eq!(unspent, want, "{what}: unspent outputs of {script}");
    }
}

fn small_chain(seed: u64, blocks: usize) -> ChainBuilder {
    let mut chain =
        ChainBuilder::with_options(seed, ChainOptions { min_txs: 5, max_txs: 30, ..ChainOptions::default() });
    chain.add_blocks(blocks);
    chain
}

#[test]
fn applied_and_flushed_blocks_answer_as_the_chain_says() {
    let chain = small_chain(11, 60);
    // One big flush at the end, and a flush after nearly every block: the same index.
    for (cache, what) in [(1 << 30, "one flush"), (1, "a flush per block")] {
        let mut s = setup(cache);
        apply(&mut s.processor, &chain, 0..=chain.height());
        s.processor.flush().unwrap();
        assert_index_is(&s.index, &chain, what);
        assert_eq!(s.metrics.blocks_applied.get(), chain.height() as u64 + 1);
        assert!(s.metrics.flushes.get() >= 1);
        if cache == 1 {
            // Spends of outputs flushed before were read back from the database.
            assert!(s.metrics.spends_from_disk.get() > 0, "{what}: no spend came from the database");
        }
    }
}

#[test]
fn unwinding_gives_back_the_index_of_the_shorter_chain_and_a_fork_applies_on_it() {
    let chain = small_chain(12, 40);
    let mut s = setup(1 << 30);
    apply(&mut s.processor, &chain, 0..=chain.height());
    for depth in [1, 4, 10] {
        let target = chain.height() - depth;
        let mut fork = chain.fork(target);
        s.processor.unwind_to(target).unwrap();
        assert_index_is(&s.index, &fork, &format!("unwound {depth}"));
        // A different branch on top, flushed, then back to the original chain.
        fork.add_blocks(depth as usize + 1);
        apply(&mut s.processor, &fork, target + 1..=fork.height());
        s.processor.flush().unwrap();
        assert_index_is(&s.index, &fork, &format!("fork of {depth}"));
        s.processor.unwind_to(target).unwrap();
        apply(&mut s.processor, &chain, target + 1..=chain.height());
        s.processor.flush().unwrap();
        assert_index_is(&s.index, &chain, &format!("back after {depth}"));
    }
}

#[test]
fn a_block_that_does_not_extend_the_tip_is_refused_and_changes_nothing() {
    let chain = small_chain(13, 10);
    let other = small_chain(14, 10);
    let mut s = setup(1 << 30);
    apply(&mut s.processor, &chain, 0..=chain.height());
    s.processor.flush().unwrap();
    let stray = parse_block(&serialize(&other.blocks()[10]), chain.height() + 1, coin()).unwrap();
    assert!(matches!(s.processor.apply(&stray, 11), Err(ApplyError::Mismatch { .. })));
    let gap = parse_block(&serialize(&other.blocks()[5]), 5, coin()).unwrap();
    assert!(matches!(s.processor.apply(&gap, 11), Err(ApplyError::Mismatch { .. })));
    assert_index_is(&s.index, &chain, "after refused blocks");
    // Undo data reaches back only REORG_LIMIT blocks: an unwind beyond it is refused and
    // changes nothing.
    let mut shallow = setup_with(1 << 30, 5);
    apply(&mut shallow.processor, &chain, 0..=chain.height());
    let err = shallow.processor.unwind_to(chain.height() - 8).unwrap_err().to_string();
    assert!(err.contains("undo data covers only"), "{err}");
    assert_index_is(&shallow.index, &chain, "after a refused unwind");
    shallow.processor.unwind_to(chain.height() - 5).unwrap();
    assert_index_is(&shallow.index, &chain.fork(chain.height() - 5), "unwound within REORG_LIMIT");
}
