//! The indexed chain in memory: every header, its hash, and the cumulative transaction count,
//! so a tx number maps to its height by binary search without touching the disk.

use std::sync::Mutex;

use super::merkle;
use crate::node::block::header_hash;
use crate::types::TxNum;

#[derive(Default)]
pub struct Chain {
    headers: Vec<[u8; 80]>,
    hashes: Vec<[u8; 32]>,
    /// `tx_counts[h]` = transactions in blocks 0..=h.
    tx_counts: Vec<u64>,
    /// Roots of complete chunks of block hashes, for `cp_height` proofs (see `merkle`).
    chunk_roots: Mutex<Vec<[u8; 32]>>,
}

impl Chain {
    pub fn from_rows(rows: Vec<([u8; 80], u64)>) -> Chain {
        use rayon::prelude::*;
        let hashes = rows.par_iter().map(|(h, _)| header_hash(h)).collect();
        let (headers, tx_counts) = rows.into_iter().unzip();
        Chain { headers, hashes, tx_counts, chunk_roots: Mutex::default() }
    }

    /// Height of the tip; `None` before genesis is indexed.
    pub fn height(&self) -> Option<u32> {
        self.headers.len().checked_sub(1).map(|h| h as u32)
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn tip_hash(&self) -> Option<[u8; 32]> {
        self.hashes.last().copied()
    }

    pub fn hash(&self, height: u32) -> Option<[u8; 32]> {
        self.hashes.get(height as usize).copied()
    }

    pub fn header(&self, height: u32) -> Option<&[u8; 80]> {
        self.headers.get(height as usize)
    }

    /// Transactions indexed in blocks 0..=tip.
    pub fn tx_count(&self) -> u64 {
        self.tx_counts.last().copied().unwrap_or(0)
    }

    /// First tx number of the block at `height` and one past its last.
    pub fn tx_range(&self, height: u32) -> Option<(TxNum, TxNum)> {
        let end = *self.tx_counts.get(height as usize)?;
        let start = if height == 0 { 0 } else { self.tx_counts[height as usize - 1] };
        Some((start, end))
    }

    /// Height and position in its block of a tx number.
    pub fn locate(&self, tx_num: TxNum) -> Option<(u32, u32)> {
        let height = self.tx_counts.partition_point(|&c| c <= tx_num);
        if height >= self.tx_counts.len() {
            return None;
        }
        let start = if height == 0 { 0 } else { self.tx_counts[height - 1] };
        Some((height as u32, (tx_num - start) as u32))
    }

    pub fn push(&mut self, header: [u8; 80], hash: [u8; 32], tx_count: u64) {
        self.headers.push(header);
        self.hashes.push(hash);
        self.tx_counts.push(tx_count);
    }

    /// Drops the tip block.
    pub fn pop(&mut self) {
        self.headers.pop();
        self.hashes.pop();
        self.tx_counts.pop();
        // A chunk root covering the dropped height is stale.
        self.chunk_roots.get_mut().expect("lock").truncate(self.hashes.len() / merkle::CHUNK);
    }

    /// Merkle branch and root proving the header at `height` under the checkpoint `cp_height`
    /// (the tree over block hashes 0..=cp_height). Both must be in the chain, height ≤ cp_height.
    pub fn header_proof(&self, height: u32, cp_height: u32) -> Option<(Vec<[u8; 32]>, [u8; 32])> {
        if height > cp_height || cp_height as usize >= self.hashes.len() {
            return None;
        }
        let mut cache = self.chunk_roots.lock().expect("lock");
        Some(merkle::header_branch(&self.hashes[..=cp_height as usize], height as usize, &mut cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_tx_numbers() {
        let mut c = Chain::default();
        assert_eq!(c.height(), None);
        c.push([0; 80], [0; 32], 1); // genesis: tx 0
        c.push([1; 80], [1; 32], 4); // txs 1..4
        c.push([2; 80], [2; 32], 4); // (an empty block cannot exist, but must not break lookups)
        c.push([3; 80], [3; 32], 6); // txs 4..6
        assert_eq!(c.locate(0), Some((0, 0)));
        assert_eq!(c.locate(1), Some((1, 0)));
        assert_eq!(c.locate(3), Some((1, 2)));
        assert_eq!(c.locate(4), Some((3, 0)));
        assert_eq!(c.locate(5), Some((3, 1)));
        assert_eq!(c.locate(6), None);
        assert_eq!(c.tx_range(1), Some((1, 4)));
        assert_eq!(c.tx_range(0), Some((0, 1)));
        c.pop();
        assert_eq!(c.height(), Some(2));
        assert_eq!(c.tx_count(), 4);
    }
}
