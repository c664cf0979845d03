//! The index as readers see it: the flushed tip and the mempool mirror under one lock, read
//! together with the in-memory chain and the database.
//!
//! A reader holds the read side for the whole of one answer (`Snapshot`), so every answer
//! describes one state: never a transaction both confirmed and unconfirmed, never a history
//! from one block and a balance from the next. Only the writers (`sync`) change it, through
//! an `IndexWriter`, which `Index::new` hands out once.
//!
//! **Lock order**, everywhere: `live`, then `chain`, then the chain's cache of header-proof
//! roots (inside `Chain`). Writers take `live` for writing only around the instant a change
//! becomes visible (a batch written, the tip moved, the mempool updated); the chain grows
//! ahead of the visible tip during initial sync without `live`.

pub mod chain;
mod mempool;
pub mod merkle;
mod outpoint;
mod snapshot;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;

pub use chain::Chain;
pub use mempool::{display_order, Mempool, MempoolEntry, MempoolTx, SpentInput};
pub use outpoint::{OutpointStatus, SpendersIncomplete};
pub use snapshot::{ConfirmedStatus, HistoryTooLarge, Snapshot, StatusHasher, Unspent};

use crate::coins::Coin;
use crate::store::schema::{decode_txnum, SpendBackfill, TXNUM_LEN};
use crate::store::{Batch, Db, UtxoEntry};
use crate::types::{FastSet, HashX, OutPoint, TxNum, Txid, HASHX_LEN};

/// A block as the index knows it: height, hash and the transactions counted up to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    pub height: u32,
    pub hash: [u8; 32],
    pub tx_count: u64,
}

#[derive(Default)]
struct Live {
    /// The last flushed block: readers see the chain up to here.
    tip: Option<Tip>,
    mempool: Mempool,
    /// Blocks unwound since start: tx numbers looked up before an unwind may be stale.
    unwinds: u64,
    /// The spends still missing from the spender index (an upgraded database), flushed state.
    spend_backfill: Option<SpendBackfill>,
}

/// What writers tell the session layer.
#[derive(Debug)]
pub enum IndexEvent {
    /// A flush about to be written: its history entries, so subscribed statuses can be
    /// extended while RocksDB writes it. Nothing is visible yet; a `Changed` with the same tip
    /// follows once it is (and none if the write fails).
    Writing(Arc<FlushPreview>),
    /// Script hashes whose history may differ, and the flushed tip's hash if the tip moved
    /// (a flush or an unwind).
    Changed { touched: FastSet<HashX>, tip: Option<[u8; 32]> },
}

/// The history entries of one flush, in key order (script hash, then tx number), with what
/// turns a tx number into the txid and height a status hashes.
#[derive(Debug)]
pub struct FlushPreview {
    /// The flushed tip these blocks extend (`None`: an empty index), and the one they make.
    pub from: Option<[u8; 32]>,
    pub to: [u8; 32],
    pub first_tx_num: TxNum,
    /// Txids of tx numbers `first_tx_num..`.
    pub txids: Vec<Txid>,
    /// Height and first tx number of each block, ascending.
    pub blocks: Vec<(u32, TxNum)>,
    /// `store::schema::history_key`s, sorted.
    pub history: Vec<[u8; HASHX_LEN + TXNUM_LEN]>,
}

impl FlushPreview {
    /// Each script hash's entries (its history keys), script hashes in key order.
    pub fn by_hashx(&self) -> impl Iterator<Item = (HashX, &[[u8; HASHX_LEN + TXNUM_LEN]])> {
        self.history.chunk_by(|a, b| a[..HASHX_LEN] == b[..HASHX_LEN]).map(|group| {
            let hashx: HashX = group[0][..HASHX_LEN].try_into().expect("hashx prefix");
            (hashx, group)
        })
    }

    /// The txids and heights of one script hash's entries (from `by_hashx`), in chain order;
    /// `None` if one is not of these blocks.
    pub fn entries(&self, keys: &[[u8; HASHX_LEN + TXNUM_LEN]]) -> Option<Vec<(Txid, u32)>> {
        keys.iter().map(|k| self.locate(decode_txnum(&k[HASHX_LEN..]))).collect()
    }

    /// The txid and height of one of these blocks' tx numbers.
    pub fn locate(&self, tx_num: TxNum) -> Option<(Txid, u32)> {
        let txid = *self.txids.get(tx_num.checked_sub(self.first_tx_num)? as usize)?;
        let block = self.blocks.partition_point(|&(_, start)| start <= tx_num).checked_sub(1)?;
        Some((txid, self.blocks[block].0))
    }
}

pub struct Index {
    db: Arc<Db>,
    chain: RwLock<Chain>,
    coin: &'static Coin,
    live: RwLock<Live>,
    /// Set once sessions are served: only then do writers report what they touched.
    listener: OnceLock<UnboundedSender<IndexEvent>>,
}

impl Index {
    /// The index over `db` whose blocks are `chain`, and the one handle that may change it.
    pub fn new(db: Arc<Db>, chain: Chain, coin: &'static Coin) -> (Arc<Index>, IndexWriter) {
        let tip =
            chain.height().zip(chain.tip_hash()).map(|(height, hash)| Tip { height, hash, tx_count: chain.tx_count() });
        let spend_backfill = db.spend_backfill();
        let index = Arc::new(Index {
            db,
            chain: RwLock::new(chain),
            coin,
            live: RwLock::new(Live { tip, spend_backfill, ..Live::default() }),
            listener: OnceLock::new(),
        });
        (index.clone(), IndexWriter { index })
    }

    pub fn coin(&self) -> &'static Coin {
        self.coin
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Starts reporting changes to the session layer.
    pub fn set_listener(&self, tx: UnboundedSender<IndexEvent>) {
        let _ = self.listener.set(tx);
    }

    /// The flushed tip, which answers describe.
    pub fn tip(&self) -> Option<Tip> {
        self.live.read().expect("lock").tip
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        let live = self.live.read().expect("lock");
        let chain = self.chain.read().expect("lock");
        Snapshot::new(live, chain, &self.db)
    }

    /// The tip of the chain as applied, ahead of `tip` while a flush is pending.
    pub fn applied_tip(&self) -> Option<Tip> {
        let c = self.chain.read().expect("lock");
        c.height().zip(c.tip_hash()).map(|(height, hash)| Tip { height, hash, tx_count: c.tx_count() })
    }

    /// Hashes of applied blocks `from..=to` that exist, from the top down (to find where the
    /// daemon's chain forks from ours).
    pub fn applied_hash(&self, height: u32) -> Option<[u8; 32]> {
        self.chain.read().expect("lock").hash(height)
    }

    /// The spends still missing from the spender index (inner `None`: it is whole), unless a
    /// writer holds the lock (outer `None`), as `mempool_size_now`.
    pub fn spend_backfill_now(&self) -> Option<Option<SpendBackfill>> {
        self.live.try_read().ok().map(|live| live.spend_backfill)
    }

    /// The spends still missing from the spender index (`None`: it is whole).
    pub fn spend_backfill(&self) -> Option<SpendBackfill> {
        self.live.read().expect("lock").spend_backfill
    }

    /// Mempool size and virtual size, unless a writer holds the lock (a large initial-sync
    /// flush holds it for seconds, and the admin RPC must not wait for it).
    pub fn mempool_size_now(&self) -> Option<(usize, u64)> {
        let live = self.live.try_read().ok()?;
        Some((live.mempool.len(), live.mempool.vsize()))
    }
}

/// The writers' handle: the block processor and the mempool refresh change the index only
/// through it. Every method takes the locks in the order the module documents.
#[derive(Clone)]
pub struct IndexWriter {
    index: Arc<Index>,
}

impl IndexWriter {
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Whether anyone listens for changes (so writers can skip collecting them).
    pub fn serving(&self) -> bool {
        self.index.listener.get().is_some()
    }

    pub fn publish(&self, event: IndexEvent) {
        if let Some(tx) = self.index.listener.get() {
            let _ = tx.send(event);
        }
    }

    /// Appends an applied block to the chain, ahead of the visible tip.
    pub fn push_block(&self, header: [u8; 80], hash: [u8; 32], tx_count: u64) {
        self.index.chain.write().expect("lock").push(header, hash, tx_count);
    }

    /// Headers and cumulative tx counts of applied blocks `from..=to`.
    pub fn headers(&self, from: u32, to: u32) -> Vec<([u8; 80], u64)> {
        let c = self.index.chain.read().expect("lock");
        (from..=to).filter_map(|h| Some((*c.header(h)?, c.tx_range(h)?.1))).collect()
    }

    /// The first tx number of the applied block at `height`, and one past its last.
    pub fn tx_range(&self, height: u32) -> Option<(u64, u64)> {
        self.index.chain.read().expect("lock").tx_range(height)
    }

    /// Makes a flush visible: writes `batch`, moves the tip to `tip`, and drops the flushed
    /// blocks' transactions (`confirmed`) and the mempool transactions their spends (`spent`)
    /// defeated from the mempool, all at one instant for readers. Returns the script hashes
    /// whose unconfirmed part changed.
    pub fn commit_flush(
        &self,
        batch: Batch,
        tip: Tip,
        confirmed: &[Txid],
        spent: &[OutPoint],
    ) -> Result<FastSet<HashX>> {
        let mut live = self.index.live.write().expect("lock");
        // The mempool drops the block's transactions while RocksDB writes it, on the other
        // core: both used to run one after the other while readers waited (a 4,000-tx block:
        // ~25 ms of write, ~30 ms of removal). A failed write puts them back.
        let db = &self.index.db;
        let batch = std::sync::Mutex::new(Some(batch));
        let write = || match batch.lock().expect("lock").take() {
            Some(batch) => db.write(batch),
            None => Ok(()),
        };
        let (written, (touched, removed)) = std::thread::scope(|s| {
            let writer = std::thread::Builder::new().spawn_scoped(s, write);
            let removal = live.mempool.remove_confirmed(confirmed, spent);
            let written = match writer {
                Ok(w) => w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the database writer panicked"))),
                // No thread to be had: written here, after the removal.
                Err(_) => write(),
            };
            (written, removal)
        });
        if let Err(e) = written {
            live.mempool.restore(removed);
            return Err(e);
        }
        live.tip = Some(tip);
        drop(live);
        drop(removed); // freed once readers may go on
        Ok(touched)
    }

    /// Makes the unwinding of the tip block visible: writes `batch`, pops the block off the
    /// chain and moves the tip back to `tip`.
    pub fn commit_unwind(&self, batch: Batch, tip: Tip, backfill: Option<SpendBackfill>) -> Result<()> {
        let mut live = self.index.live.write().expect("lock");
        self.index.db.write(batch)?;
        self.index.chain.write().expect("lock").pop();
        live.tip = Some(tip);
        live.unwinds += 1;
        live.spend_backfill = backfill.filter(|b| !b.done());
        Ok(())
    }

    /// Makes a step of the spender backfill visible (`batch` carries its rows and state).
    pub fn commit_backfill(&self, batch: Batch, backfill: SpendBackfill) -> Result<()> {
        let mut live = self.index.live.write().expect("lock");
        self.index.db.write(batch)?;
        live.spend_backfill = (!backfill.done()).then_some(backfill);
        Ok(())
    }

    /// Whether the mempool mirror holds anything (it is empty until the refresh first runs,
    /// i.e. during initial sync).
    pub fn mempool_in_use(&self) -> bool {
        !self.index.live.read().expect("lock").mempool.is_empty()
    }

    /// The spent outputs the mempool resolved for those of `txids` it holds, when still true
    /// (no block was unwound since it looked them up): (outpoint, (script hash, creating tx
    /// number, value)).
    pub fn mempool_spends<'a>(&self, txids: impl Iterator<Item = &'a Txid>) -> Vec<(OutPoint, UtxoEntry)> {
        let live = self.index.live.read().expect("lock");
        let mut out = Vec::new();
        for txid in txids {
            let Some(m) = live.mempool.get(txid).filter(|m| m.unwinds == live.unwinds) else { continue };
            out.extend(m.inputs.iter().filter_map(|i| Some((i.outpoint, (i.hashx?, i.tx_num?, i.value)))));
        }
        out
    }

    /// The mempool's txids.
    pub fn mempool_txids(&self) -> HashSet<Txid> {
        self.index.live.read().expect("lock").mempool.txids().copied().collect()
    }

    /// Resolves the outputs new mempool transactions spend: from the mempool, else from the
    /// confirmed UTXO set (looked up in parallel). `None` for one that neither has. Also
    /// returns the unwind count the answers hold for.
    pub fn mempool_prevouts(&self, ops: &[OutPoint]) -> Result<(Vec<Option<SpentInput>>, u64)> {
        let live = self.index.live.read().expect("lock");
        let mut out: Vec<Option<SpentInput>> = Vec::with_capacity(ops.len());
        let mut from_db: Vec<(usize, &OutPoint)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match live.mempool.get(&op.txid) {
                Some(parent) => out.push(parent.outputs.get(op.vout as usize).map(|o| SpentInput {
                    outpoint: *op,
                    hashx: o.hashx,
                    value: o.value,
                    tx_num: None,
                })),
                None => {
                    out.push(None);
                    from_db.push((i, op));
                }
            }
        }
        let wanted: Vec<&OutPoint> = from_db.iter().map(|(_, op)| *op).collect();
        let found = self.index.db.find_utxos_parallel(&wanted)?;
        for ((i, op), f) in from_db.into_iter().zip(found) {
            out[i] =
                f.map(|(hashx, n, value)| SpentInput { outpoint: *op, hashx: Some(hashx), value, tx_num: Some(n) });
        }
        Ok((out, live.unwinds))
    }

    /// Applies a mempool refresh; returns (removed, added, script hashes touched).
    pub fn apply_mempool(&self, gone: &[Txid], added: Vec<MempoolTx>) -> (usize, usize, FastSet<HashX>) {
        self.index.live.write().expect("lock").mempool.apply(gone, added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::history_key;

    #[test]
    fn a_flush_preview_finds_each_entrys_txid_and_block() {
        let txid = |n: u8| Txid([n; 32]);
        let (a, b) = ([1u8; HASHX_LEN], [2u8; HASHX_LEN]);
        let mut history = vec![history_key(&b, 103), history_key(&a, 104), history_key(&a, 100), history_key(&a, 102)];
        history.sort_unstable();
        // Two blocks in one flush: height 10 holds tx numbers 100-102, height 11 holds 103-104.
        let preview = FlushPreview {
            from: Some([9; 32]),
            to: [8; 32],
            first_tx_num: 100,
            txids: (0..5).map(txid).collect(),
            blocks: vec![(10, 100), (11, 103)],
            history,
        };
        let groups: Vec<_> = preview.by_hashx().map(|(h, keys)| (h, preview.entries(keys).unwrap())).collect();
        assert_eq!(
            groups,
            vec![(a, vec![(txid(0), 10), (txid(2), 10), (txid(4), 11)]), (b, vec![(txid(3), 11)])],
            "in key order, each key's entries in chain order, heights across the block boundary"
        );
        assert_eq!(preview.locate(99), None, "before the flush");
        assert_eq!(preview.locate(105), None, "after it");
        assert!(preview.entries(&[history_key(&a, 105)]).is_none(), "one unknown entry spoils the key");
    }
}
