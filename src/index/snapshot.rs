//! One consistent view of the index for one answer: the flushed tip, the mempool and the chain
//! under read locks, with the database; and the Electrum status hash.

use std::sync::RwLockReadGuard;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use super::{Chain, Live, Mempool, Tip};
use crate::store::{Db, HistoryReader};
use crate::types::{hex32, HashX, HexOrder, OutPoint, StatusHash, TxNum, Txid};

/// A confirmed history longer than the caller's limit (MAX_SEND could not carry it).
#[derive(Debug, thiserror::Error)]
#[error("history too large")]
pub struct HistoryTooLarge;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unspent {
    pub txid: Txid,
    pub vout: u32,
    /// 0 for a mempool output.
    pub height: u32,
    pub value: u64,
}

/// One consistent view for one answer. Holds read locks: build the answer and drop it.
pub struct Snapshot<'a> {
    pub(super) live: RwLockReadGuard<'a, Live>,
    pub(super) chain: RwLockReadGuard<'a, Chain>,
    pub(super) db: &'a Db,
}

impl<'a> Snapshot<'a> {
    pub(super) fn new(live: RwLockReadGuard<'a, Live>, chain: RwLockReadGuard<'a, Chain>, db: &'a Db) -> Snapshot<'a> {
        Snapshot { live, chain, db }
    }

    pub fn tip(&self) -> Option<Tip> {
        self.live.tip
    }

    pub fn height(&self) -> Option<u32> {
        self.live.tip.map(|t| t.height)
    }

    pub fn mempool(&self) -> &Mempool {
        &self.live.mempool
    }

    fn visible(&self, height: u32) -> bool {
        self.height().is_some_and(|tip| height <= tip)
    }

    pub fn header(&self, height: u32) -> Option<[u8; 80]> {
        self.visible(height).then(|| self.chain.header(height).copied()).flatten()
    }

    pub fn block_hash(&self, height: u32) -> Option<[u8; 32]> {
        self.visible(height).then(|| self.chain.hash(height)).flatten()
    }

    /// Up to `count` headers from `start`, as far as the tip.
    pub fn headers(&self, start: u32, count: u32) -> Vec<[u8; 80]> {
        let Some(tip) = self.height() else { return Vec::new() };
        let end = (start as u64 + count as u64).min(tip as u64 + 1);
        (start as u64..end).filter_map(|h| self.chain.header(h as u32).copied()).collect()
    }

    pub fn header_proof(&self, height: u32, cp_height: u32) -> Option<(Vec<[u8; 32]>, [u8; 32])> {
        if !self.visible(cp_height) {
            return None;
        }
        self.chain.header_proof(height, cp_height)
    }

    /// The first `limit` confirmed transactions (for the admin `query`).
    pub fn history_prefix(&self, hashx: &HashX, limit: usize) -> Result<Vec<(Txid, u32)>> {
        let nums = self.history_nums(hashx, limit, true)?;
        let mut out = Vec::with_capacity(nums.len());
        self.visit_txs(&nums, |txid, height| out.push((txid, height)))?;
        Ok(out)
    }

    /// Tx numbers of the confirmed history, in chain order; more than `limit` is
    /// `HistoryTooLarge` unless `truncate`.
    pub fn history_nums(&self, hashx: &HashX, limit: usize, truncate: bool) -> Result<Vec<TxNum>> {
        self.history_nums_using(&mut self.db.history_reader(), hashx, limit, truncate)
    }

    fn history_nums_using(
        &self,
        reader: &mut HistoryReader,
        hashx: &HashX,
        limit: usize,
        truncate: bool,
    ) -> Result<Vec<TxNum>> {
        let Some(tip) = self.live.tip else { return Ok(Vec::new()) };
        let mut nums = reader.read(hashx, limit.saturating_add(1))?;
        if nums.len() > limit {
            if !truncate {
                return Err(HistoryTooLarge.into());
            }
            nums.truncate(limit);
        }
        // Rows of an unflushed block cannot be on disk; rows past the tip belong to a block being
        // unwound right now and are not part of this state.
        let visible = nums.partition_point(|n| *n < tip.tx_count);
        nums.truncate(visible);
        Ok(nums)
    }

    /// Tx numbers of the confirmed history in blocks `from..to` (`to` `None`: to the tip), in
    /// chain order; more than `limit` of them is `HistoryTooLarge`. The limit counts only the
    /// range, so a history too long for one answer can be read in pages.
    pub fn history_nums_in(&self, hashx: &HashX, from: u32, to: Option<u32>, limit: usize) -> Result<Vec<TxNum>> {
        let Some(tip) = self.live.tip else { return Ok(Vec::new()) };
        let start_of =
            |h: u32| if h > tip.height { tip.tx_count } else { self.chain.tx_range(h).map_or(tip.tx_count, |r| r.0) };
        let (from_tx, to_tx) = (start_of(from), to.map_or(tip.tx_count, start_of));
        if from_tx >= to_tx {
            return Ok(Vec::new());
        }
        let nums = self.db.history_range(hashx, from_tx, to_tx, limit)?;
        if nums.len() > limit {
            return Err(HistoryTooLarge.into());
        }
        Ok(nums)
    }

    /// Calls `f` with the txid and height of each of `nums` (from `history_nums`).
    pub fn visit_txs(&self, nums: &[TxNum], mut f: impl FnMut(Txid, u32)) -> Result<()> {
        let txids = self.db.txid_view();
        // Busy script hashes have many transactions per block: reuse the last block's range.
        let mut block: Option<(u32, std::ops::Range<TxNum>)> = None;
        for &n in nums {
            let txid = txids.get(n).ok_or_else(|| anyhow!("the index is inconsistent: no txid for tx number {n}"))?;
            let height = match &block {
                Some((height, range)) if range.contains(&n) => *height,
                _ => {
                    let Some((height, _)) = self.chain.locate(n) else { continue };
                    let (start, end) = self.chain.tx_range(height).expect("located");
                    block = Some((height, start..end));
                    height
                }
            };
            f(txid, height);
        }
        Ok(())
    }

    /// The Electrum status of a script hash: sha256 over "txid:height:" for each confirmed then
    /// unconfirmed transaction; `None` without any. Also how many transactions it covers.
    pub fn status(&self, hashx: &HashX, limit: usize) -> Result<(Option<StatusHash>, usize)> {
        self.status_using(&mut self.db.history_reader(), hashx, limit)
    }

    /// A reader for computing many statuses in a row (see `status_using`).
    pub fn history_reader(&self) -> HistoryReader<'_> {
        self.db.history_reader()
    }

    /// `status`, reading through `reader` (made from this snapshot).
    pub fn status_using(
        &self,
        reader: &mut HistoryReader,
        hashx: &HashX,
        limit: usize,
    ) -> Result<(Option<StatusHash>, usize)> {
        let confirmed = self.confirmed_status_using(reader, hashx, limit)?;
        Ok(self.finish(confirmed.hasher, hashx))
    }

    /// `confirmed_status_using` with a reader of its own.
    pub fn confirmed_status(&self, hashx: &HashX, limit: usize) -> Result<ConfirmedStatus> {
        self.confirmed_status_using(&mut self.db.history_reader(), hashx, limit)
    }

    /// The confirmed part of a status at this snapshot's tip; more than `limit` confirmed
    /// transactions is `HistoryTooLarge`.
    pub fn confirmed_status_using(
        &self,
        reader: &mut HistoryReader,
        hashx: &HashX,
        limit: usize,
    ) -> Result<ConfirmedStatus> {
        let mut hasher = StatusHasher::default();
        let nums = self.history_nums_using(reader, hashx, limit, false)?;
        self.visit_txs(&nums, |txid, height| hasher.add(&txid, height as i64))?;
        Ok(ConfirmedStatus { tip: self.live.tip.map(|t| t.hash), hasher })
    }

    /// The status from its confirmed part and this snapshot's mempool, with the transactions
    /// it covers; `None` if `confirmed` is of another tip.
    pub fn finish_status(&self, confirmed: &ConfirmedStatus, hashx: &HashX) -> Option<(Option<StatusHash>, usize)> {
        (confirmed.tip == self.live.tip.map(|t| t.hash)).then(|| self.finish(confirmed.hasher.clone(), hashx))
    }

    /// A status from the hash state after its confirmed part: the mempool's entries added.
    fn finish(&self, mut hasher: StatusHasher, hashx: &HashX) -> (Option<StatusHash>, usize) {
        for e in self.live.mempool.history(hashx) {
            hasher.add(&e.txid, e.height as i64);
        }
        let n = hasher.count;
        (hasher.finish(), n)
    }

    /// Confirmed balance, the mempool's effect on it, and how many confirmed outputs it sums.
    pub fn balance(&self, hashx: &HashX) -> Result<(u64, i64, usize)> {
        let utxos = self.db.hashx_utxos(hashx)?;
        let confirmed = utxos.iter().map(|(_, _, v)| v).sum();
        Ok((confirmed, self.live.mempool.balance_delta(hashx), utxos.len()))
    }

    /// Unspent outputs: confirmed ones in chain order without those the mempool spends, then
    /// mempool ones (height 0) not spent in the mempool.
    pub fn unspent(&self, hashx: &HashX, limit: usize) -> Result<Vec<Unspent>> {
        self.unspent_outputs(hashx, limit, true)
    }

    /// Confirmed unspent outputs only, mempool spends ignored (the admin `query`).
    pub fn confirmed_unspent(&self, hashx: &HashX) -> Result<Vec<Unspent>> {
        self.unspent_outputs(hashx, usize::MAX, false)
    }

    fn unspent_outputs(&self, hashx: &HashX, limit: usize, with_mempool: bool) -> Result<Vec<Unspent>> {
        let Some(tip) = self.live.tip else { return Ok(Vec::new()) };
        // Only rows this state committed (as for histories, below).
        let mut rows = self.db.hashx_utxos(hashx)?;
        rows.retain(|r| r.0 < tip.tx_count);
        if rows.len() > limit {
            return Err(HistoryTooLarge.into());
        }
        let nums: Vec<u64> = rows.iter().map(|r| r.0).collect();
        let txids = self.db.txids(&nums)?;
        let mut out = Vec::with_capacity(rows.len());
        for ((tx_num, vout, value), txid) in rows.iter().zip(txids) {
            if with_mempool && self.live.mempool.is_spent(&OutPoint { txid, vout: *vout }) {
                continue;
            }
            let Some((height, _)) = self.chain.locate(*tx_num) else { continue };
            out.push(Unspent { txid, vout: *vout, height, value: *value });
        }
        if with_mempool {
            for (txid, vout, value) in self.live.mempool.unspent(hashx) {
                out.push(Unspent { txid, vout, height: 0, value });
            }
        }
        Ok(out)
    }

    /// Height and position in its block of a confirmed transaction.
    pub fn tx_location(&self, txid: &Txid) -> Result<Option<(u32, u32)>> {
        let Some(tip) = self.live.tip else { return Ok(None) };
        Ok(self.db.tx_nums_of(txid)?.into_iter().rev().filter(|n| *n < tip.tx_count).find_map(|n| self.chain.locate(n)))
    }

    /// Txids of the block at `height`, in block order.
    pub fn block_txids(&self, height: u32) -> Result<Option<Vec<Txid>>> {
        if !self.visible(height) {
            return Ok(None);
        }
        let Some((start, end)) = self.chain.tx_range(height) else { return Ok(None) };
        self.db.txids_range(start, end).map(Some)
    }
}

/// The confirmed part of a script hash's status: the hash state after its confirmed history at
/// a tip. A block extends it with the block's own entries and the mempool finishes it, so a
/// subscribed status need not read its history again. Valid only at `tip`: an unwind or any
/// other tip makes it useless, never wrong.
#[derive(Clone)]
pub struct ConfirmedStatus {
    tip: Option<[u8; 32]>,
    hasher: StatusHasher,
}

impl ConfirmedStatus {
    pub fn tip(&self) -> Option<[u8; 32]> {
        self.tip
    }

    /// Confirmed transactions covered.
    pub fn count(&self) -> usize {
        self.hasher.count
    }

    /// Adds blocks on top of `tip`: their entries for this script hash, in chain order, and
    /// the tip they make.
    pub fn extend(&mut self, entries: impl Iterator<Item = (Txid, u32)>, to: [u8; 32]) {
        for (txid, height) in entries {
            self.hasher.add(&txid, height as i64);
        }
        self.tip = Some(to);
    }
}

/// Builds a status hash one "txid:height:" at a time, without allocating.
#[derive(Clone, Default)]
pub struct StatusHasher {
    h: Sha256,
    /// Transactions added.
    pub count: usize,
}

impl StatusHasher {
    pub fn add(&mut self, txid: &Txid, height: i64) {
        self.count += 1;
        self.h.update(hex32(&txid.0, HexOrder::Display));
        self.h.update(b":");
        self.h.update(itoa::Buffer::new().format(height));
        self.h.update(b":");
    }

    pub fn finish(self) -> Option<StatusHash> {
        (self.count > 0).then(|| StatusHash(self.h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_documents_status_example() {
        // docs/protocol-basics.rst, "Status Example": three confirmed txs and three mempool txs.
        let items = [
            ("a6c9c361bd0bc536d6a22648efbf8f9b200e425ef6c3a7a9669dc444c532a347", 2472),
            ("9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c", 2473),
            ("770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30", 2473),
            ("80b19848aed792565ab7c5a79b7c2a00fbf985741579396ebe0ab6098e607311", 0),
            ("e02a1dadfa83b996b24175df807b271ea5d02937ef5b35c195fac1e1bdc3198f", 0),
            ("bb4c8ab438c13b89ca80d1d5bee25b0b6b7f55673f4d801998ba97db161d9e85", -1),
        ];
        let txids: Vec<(Txid, i64)> =
            items.iter().map(|(h, n)| (Txid(crate::types::parse_hex_rev32(h).unwrap()), *n)).collect();
        let mut hasher = StatusHasher::default();
        for (txid, height) in &txids {
            hasher.add(txid, *height);
        }
        let status = hasher.finish().unwrap();
        assert_eq!(status.to_string(), "78e96c6562cafa71c115503b9411fdfdc595a45031e2ab76ff75162fe1b0590d");
        assert_eq!(StatusHasher::default().finish(), None);
    }
}
