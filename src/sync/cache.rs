//! The block processor's write cache: everything applied since the last flush, and what it
//! will cost in memory to flush it.

use crate::index::FlushPreview;
use crate::store::schema::{SpendRow, TXNUM_LEN};
use crate::store::SpentOutput;
use crate::types::{FastMap, HashX, OutPoint, TxNum, Txid, HASHX_LEN};

/// The write cache's outputs by outpoint, hashed as the mempool's maps are (`FastMap`).
pub type OutPointMap<V> = FastMap<OutPoint, V>;

/// An output created since the last flush and still unspent.
#[derive(Clone, Copy)]
pub struct CachedUtxo {
    pub hashx: HashX,
    pub tx_num: TxNum,
    pub value: u64,
}

/// Memory the flush adds per pending item while it runs, on top of the item itself: the sorted
/// row vectors and the WriteBatch (key, value and record header per row) exist together at the
/// flush's peak. Counting them up front keeps the peak within CACHE_MB.
const FLUSH_BYTES_PER_UTXO: usize = 24 + 32 + 2 * 40;
const FLUSH_BYTES_PER_SPENT: usize = 16 + 24 + 2 * 30;
const FLUSH_BYTES_PER_HISTORY: usize = 12;
const FLUSH_BYTES_PER_SPEND: usize = 2 * 30;
const FLUSH_BYTES_PER_TXID: usize = 16 + 24;

/// Everything applied since the last flush.
#[derive(Default)]
pub struct Pending {
    /// Outputs created since the last flush and still unspent.
    pub utxos: OutPointMap<CachedUtxo>,
    /// Outputs from the database spent since the last flush.
    pub spent_db: Vec<SpentOutput>,
    /// History keys (script hash, tx number), as `store::schema::history_key` lays them out.
    pub history: Vec<[u8; HASHX_LEN + TXNUM_LEN]>,
    /// Every spend since the last flush, for the spender index.
    pub spends: Vec<SpendRow>,
    /// Txids of tx numbers from the last flushed tx count on.
    pub txids: Vec<Txid>,
    /// Encoded undo records by height.
    pub undo: Vec<(u32, Vec<u8>)>,
    pub undo_bytes: usize,
    /// Outputs spent by blocks applied while the mempool mirror was not empty, so publishing them
    /// can evict mempool double spends.
    pub spent_outpoints: Vec<OutPoint>,
}

impl Pending {
    /// The flush of these blocks as the notifier needs it (`IndexEvent::Writing`): the history
    /// keys sorted (the batch sorts them too, and sorted input makes that one pass).
    pub fn preview(
        &mut self,
        from: Option<[u8; 32]>,
        to: [u8; 32],
        first_tx_num: TxNum,
        blocks: Vec<(u32, TxNum)>,
    ) -> FlushPreview {
        use rayon::prelude::*;
        self.history.par_sort_unstable();
        FlushPreview { from, to, first_tx_num, txids: self.txids.clone(), blocks, history: self.history.clone() }
    }

    /// Memory held now (from capacities: a table or vector that grew by doubling holds its
    /// whole capacity) plus what flushing it will add.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        let held = self.utxos.capacity() * (size_of::<(OutPoint, CachedUtxo)>() + 1)
            + self.spent_db.capacity() * size_of::<SpentOutput>()
            + self.spends.capacity() * size_of::<SpendRow>()
            + self.history.capacity() * (HASHX_LEN + TXNUM_LEN)
            + self.txids.capacity() * size_of::<Txid>()
            + self.undo_bytes
            + self.spent_outpoints.capacity() * size_of::<OutPoint>();
        let flushing = self.utxos.len() * FLUSH_BYTES_PER_UTXO
            + self.spent_db.len() * FLUSH_BYTES_PER_SPENT
            + self.history.len() * FLUSH_BYTES_PER_HISTORY
            + self.spends.len() * FLUSH_BYTES_PER_SPEND
            + self.txids.len() * FLUSH_BYTES_PER_TXID;
        held + flushing
    }
}
