//! The mempool refresh in process, against a fake daemon (`MempoolSource`) and an index built
//! by the block processor: new transactions resolved from the UTXO set and from each other in
//! any order, fees from their prevouts, unresolvable and vanished ones skipped, departures
//! removed, and a malformed listing leaving the mirror as it was.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use ferrum::coins::{lookup, Coin, Net};
use ferrum::index::{Chain, Index, IndexWriter};
use ferrum::metrics::Metrics;
use ferrum::node::block::parse_block;
use ferrum::node::DaemonError;
use ferrum::store::Db;
use ferrum::sync::mempool::{refresh, MempoolSource};
use ferrum::sync::processor::BlockProcessor;
use ferrum::types::{ScriptHash, Txid};
use ferrum_testkit::chain::{ChainBuilder, ChainOptions, Utxo};

fn coin() -> &'static Coin {
    lookup("Bitcoin", Net::Regtest).unwrap()
}

/// A daemon's mempool as the test sets it: the listing (or an error) and the raw transactions.
#[derive(Default)]
struct FakeMempool {
    listing: Mutex<Option<Result<Vec<Txid>, DaemonError>>>,
    raw: Mutex<HashMap<Txid, Vec<u8>>>,
}

impl FakeMempool {
    fn set(&self, listed: &[&bitcoin::Transaction], fetchable: &[&bitcoin::Transaction]) {
        *self.listing.lock().unwrap() = Some(Ok(listed.iter().map(|t| id(t)).collect()));
        *self.raw.lock().unwrap() = fetchable.iter().map(|t| (id(t), serialize(*t))).collect();
    }
}

impl MempoolSource for FakeMempool {
    async fn txids(&self) -> Result<Vec<Txid>, DaemonError> {
        self.listing.lock().unwrap().clone().unwrap_or(Ok(Vec::new()))
    }

    async fn transactions(&self, txids: &[Txid]) -> Result<Vec<Option<Vec<u8>>>, DaemonError> {
        let raw = self.raw.lock().unwrap();
        Ok(txids.iter().map(|t| raw.get(t).cloned()).collect())
    }
}

fn id(tx: &bitcoin::Transaction) -> Txid {
    Txid(tx.compute_txid().to_byte_array())
}

/// An index holding `chain`, and its writer.
fn indexed(chain: &ChainBuilder, dir: &std::path::Path) -> (Arc<Index>, IndexWriter) {
    let db = Arc::new(Db::open(dir, coin()).unwrap());
    let (index, writer) = Index::new(db.clone(), Chain::default(), coin());
    let mut p = BlockProcessor::new(writer.clone(), db, 1 << 30, 1000, Arc::new(Metrics::new()));
    for (h, b) in chain.blocks().iter().enumerate() {
        p.apply(&parse_block(&serialize(b), h as u32, coin()).unwrap(), chain.height()).unwrap();
    }
    p.flush().unwrap();
    (index, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_follows_the_daemon_and_survives_a_bad_listing() {
    let mut chain = ChainBuilder::with_options(21, ChainOptions { min_txs: 5, max_txs: 10, ..ChainOptions::default() });
    chain.add_blocks(20);
    let dir = tempfile::tempdir().unwrap();
    let (index, writer) = indexed(&chain, dir.path());

    // A spends a confirmed output; B spends A (listed first, fetched in the same batch); C
    // spends an output nobody has; D is listed but gone before it is fetched.
    let u: Utxo = chain.utxos().into_iter().find(|u| u.height > 1 && u.value > 10_000).unwrap();
    let a = chain.make_tx(std::slice::from_ref(&u), &[(u.script.clone(), u.value - 1000)]);
    let a_out = Utxo {
        outpoint: bitcoin::OutPoint::new(a.compute_txid(), 0),
        script: u.script.clone(),
        value: u.value - 1000,
        height: 0,
    };
    let b = chain.make_tx(&[a_out], &[(u.script.clone(), u.value - 1500)]);
    let ghost = Utxo { outpoint: bitcoin::OutPoint::new(bitcoin::Txid::all_zeros(), 7), ..u.clone() };
    let c = chain.make_tx(&[ghost], &[(u.script.clone(), 1)]);
    let other = chain.utxos().into_iter().find(|x| x.outpoint != u.outpoint && x.value > 10_000).unwrap();
    let d = chain.make_tx(std::slice::from_ref(&other), &[(other.script.clone(), other.value - 100)]);

    let fake = FakeMempool::default();
    fake.set(&[&b, &a, &c, &d], &[&a, &b, &c]);
    let report = refresh(&writer, &fake).await.unwrap();
    assert_eq!((report.added, report.removed, report.skipped), (2, 0, 2), "{report:?}");
    let hashx = ScriptHash::of_script(u.script.as_bytes()).hashx();
    assert!(report.touched.contains(&hashx));
    {
        let snap = index.snapshot();
        let m = snap.mempool();
        let entries: HashMap<Txid, (i32, u64)> =
            m.history(&hashx).into_iter().map(|e| (e.txid, (e.height, e.fee))).collect();
        assert_eq!(entries[&id(&a)], (0, 1000), "A spends a confirmed output");
        assert_eq!(entries[&id(&b)], (-1, 500), "B spends A, unconfirmed");
        assert_eq!(m.len(), 2);
        // The confirmed output A spends leaves the balance; B's output arrives.
        assert_eq!(m.balance_delta(&hashx), -(u.value as i64) + (u.value as i64 - 1500));
    }

    // A listing that is not a list of txids is an error, and the mirror stays as it was.
    *fake.listing.lock().unwrap() =
        Some(Err(DaemonError::Rpc { code: 0, message: "malformed getrawmempool reply".into() }));
    assert!(refresh(&writer, &fake).await.is_err());
    assert_eq!(index.snapshot().mempool().len(), 2, "a bad reply empties nothing");

    // D becomes fetchable; A and B leave (mined elsewhere, or replaced).
    fake.set(&[&d], &[&d]);
    let report = refresh(&writer, &fake).await.unwrap();
    assert_eq!((report.added, report.removed), (1, 2), "{report:?}");
    let snap = index.snapshot();
    let left: HashSet<Txid> = snap.mempool().txids().copied().collect();
    assert_eq!(left, [id(&d)].into_iter().collect());
    assert!(snap.mempool().history(&hashx).is_empty());
}
