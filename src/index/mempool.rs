//! The mirror of the daemon's mempool: its transactions with their fees and the script hashes
//! they touch, kept so that per-script-hash answers (unconfirmed history, balance delta,
//! unspent mempool outputs) and the fee histogram need no daemon round trip.
//!
//! This is the state only, with no I/O; `sync::mempool` refreshes it from the daemon. It lives
//! next to the flushed tip under the index's lock, and the block processor removes confirmed
//! transactions in the same critical section that publishes a block, so no reader ever sees a
//! transaction both confirmed and unconfirmed.

use std::collections::VecDeque;

use crate::types::{FastMap, FastSet, HashX, OutPoint, TxNum, TxOut, Txid};

#[derive(Clone, Debug)]
pub struct MempoolTx {
    pub txid: Txid,
    pub fee: u64,
    pub vsize: u32,
    pub inputs: Vec<SpentInput>,
    pub outputs: Vec<TxOut>,
    /// The index's unwind count when the inputs were looked up: their tx numbers hold while it
    /// is unchanged.
    pub unwinds: u64,
}

/// An output a mempool transaction spends, as it was looked up.
#[derive(Clone, Copy, Debug)]
pub struct SpentInput {
    pub outpoint: OutPoint,
    pub hashx: Option<HashX>,
    pub value: u64,
    /// The tx number that created it when it is confirmed (`None` for a mempool parent's). When
    /// a block mines the transaction, its spends then need no database lookup.
    pub tx_num: Option<TxNum>,
}

impl MempoolTx {
    fn hashxs(&self) -> impl Iterator<Item = HashX> + '_ {
        self.inputs.iter().filter_map(|i| i.hashx).chain(self.outputs.iter().filter_map(|o| o.hashx))
    }
}

/// An unconfirmed transaction as a script hash sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolEntry {
    pub txid: Txid,
    /// 0 when every input is confirmed, -1 when one spends another mempool transaction.
    pub height: i32,
    pub fee: u64,
}

/// Arrivals remembered for `recent`: enough that evictions rarely leave fewer than asked for.
const ARRIVALS_KEPT: usize = 256;

#[derive(Default)]
pub struct Mempool {
    txs: FastMap<Txid, MempoolTx>,
    by_hashx: FastMap<HashX, FastSet<Txid>>,
    /// Outputs spent by mempool transactions, and by which.
    spends: FastMap<OutPoint, Txid>,
    /// Sum of the transactions' virtual sizes.
    vsize: u64,
    /// The latest transactions to enter the mirror, newest last; some may have left since.
    arrivals: VecDeque<Txid>,
    histogram: Vec<(f64, u64)>,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn vsize(&self) -> u64 {
        self.vsize
    }

    pub fn contains(&self, txid: &Txid) -> bool {
        self.txs.contains_key(txid)
    }

    pub fn get(&self, txid: &Txid) -> Option<&MempoolTx> {
        self.txs.get(txid)
    }

    pub fn txids(&self) -> impl Iterator<Item = &Txid> {
        self.txs.keys()
    }

    fn has_unconfirmed_input(&self, tx: &MempoolTx) -> bool {
        tx.inputs.iter().any(|i| self.txs.contains_key(&i.outpoint.txid))
    }

    /// Unconfirmed transactions touching a script hash, in the canonical order of protocol 1.6:
    /// height 0 before height -1, then by txid as displayed.
    pub fn history(&self, hashx: &HashX) -> Vec<MempoolEntry> {
        let Some(ids) = self.by_hashx.get(hashx) else { return Vec::new() };
        let mut out: Vec<MempoolEntry> = ids
            .iter()
            .filter_map(|id| self.txs.get(id))
            .map(|tx| MempoolEntry {
                txid: tx.txid,
                height: if self.has_unconfirmed_input(tx) { -1 } else { 0 },
                fee: tx.fee,
            })
            .collect();
        out.sort_by(|a, b| b.height.cmp(&a.height).then_with(|| display_order(&a.txid, &b.txid)));
        out
    }

    /// What the mempool adds to (outputs) and takes from (spends) a script hash's balance.
    pub fn balance_delta(&self, hashx: &HashX) -> i64 {
        let Some(ids) = self.by_hashx.get(hashx) else { return 0 };
        let mut delta = 0i64;
        for tx in ids.iter().filter_map(|id| self.txs.get(id)) {
            for i in &tx.inputs {
                if i.hashx.as_ref() == Some(hashx) {
                    delta -= i.value as i64;
                }
            }
            for out in &tx.outputs {
                if out.hashx.as_ref() == Some(hashx) {
                    delta += out.value as i64;
                }
            }
        }
        delta
    }

    /// Mempool outputs paying a script hash that no mempool transaction spends: (txid, vout, value),
    /// ordered by txid then output index so answers are stable.
    pub fn unspent(&self, hashx: &HashX) -> Vec<(Txid, u32, u64)> {
        let Some(ids) = self.by_hashx.get(hashx) else { return Vec::new() };
        let mut out = Vec::new();
        for tx in ids.iter().filter_map(|id| self.txs.get(id)) {
            for (vout, o) in tx.outputs.iter().enumerate() {
                let op = OutPoint { txid: tx.txid, vout: vout as u32 };
                if o.hashx.as_ref() == Some(hashx) && !self.spends.contains_key(&op) {
                    out.push((tx.txid, vout as u32, o.value));
                }
            }
        }
        out.sort_by(|a, b| display_order(&a.0, &b.0).then(a.1.cmp(&b.1)));
        out
    }

    /// A mempool transaction's height as the protocol tells it: 0 when every input is
    /// confirmed, -1 when one spends another mempool transaction.
    pub fn height_of(&self, txid: &Txid) -> Option<i32> {
        let tx = self.txs.get(txid)?;
        Some(if self.has_unconfirmed_input(tx) { -1 } else { 0 })
    }

    /// Up to `n` of the transactions that entered the mirror last and are still in it, newest
    /// first (`mempool.recent`). Within one refresh, parents count as arriving before children.
    pub fn recent(&self, n: usize) -> Vec<&MempoolTx> {
        self.arrivals.iter().rev().filter_map(|t| self.txs.get(t)).take(n).collect()
    }

    /// The mempool transaction spending an output, if any.
    pub fn spender(&self, op: &OutPoint) -> Option<Txid> {
        self.spends.get(op).copied()
    }

    pub fn is_spent(&self, op: &OutPoint) -> bool {
        self.spends.contains_key(op)
    }

    /// The fee histogram: `[fee rate sat/vB, vsize]` bins, fee rate descending.
    pub fn fee_histogram(&self) -> &[(f64, u64)] {
        &self.histogram
    }

    /// Transactions spending outputs of `txid` (which has `outputs` outputs).
    fn children(&self, txid: Txid, outputs: usize) -> impl Iterator<Item = Txid> + '_ {
        (0..outputs as u32).filter_map(move |vout| self.spends.get(&OutPoint { txid, vout }).copied())
    }

    /// Script hashes of the mempool transactions spending outputs of `txid`: their height
    /// changes between 0 and -1 when `txid` leaves or enters the mempool.
    fn children_hashxs(&self, txid: Txid, outputs: usize, touched: &mut FastSet<HashX>) {
        for child in self.children(txid, outputs).filter_map(|c| self.txs.get(&c)) {
            touched.extend(child.hashxs());
        }
    }

    fn insert(&mut self, tx: MempoolTx, touched: &mut FastSet<HashX>) {
        if self.txs.contains_key(&tx.txid) {
            return;
        }
        // Mempool children of this tx (e.g. it came back from an unwound block) now have an
        // unconfirmed parent: their height turns from 0 to -1.
        self.children_hashxs(tx.txid, tx.outputs.len(), touched);
        for h in tx.hashxs() {
            touched.insert(h);
            self.by_hashx.entry(h).or_default().insert(tx.txid);
        }
        for i in &tx.inputs {
            self.spends.insert(i.outpoint, tx.txid);
        }
        self.vsize += tx.vsize as u64;
        self.txs.insert(tx.txid, tx);
    }

    fn remove(&mut self, txid: &Txid, touched: &mut FastSet<HashX>) -> Option<MempoolTx> {
        // Children left behind (the parent was mined in a block not indexed yet) now have a
        // confirmed-looking parent: their height turns from -1 to 0.
        let outputs = self.txs.get(txid)?.outputs.len();
        self.children_hashxs(*txid, outputs, touched);
        let tx = self.txs.remove(txid)?;
        for h in tx.hashxs() {
            touched.insert(h);
            if let Some(set) = self.by_hashx.get_mut(&h) {
                set.remove(txid);
                if set.is_empty() {
                    self.by_hashx.remove(&h);
                }
            }
        }
        for i in &tx.inputs {
            if self.spends.get(&i.outpoint) == Some(txid) {
                self.spends.remove(&i.outpoint);
            }
        }
        self.vsize -= tx.vsize as u64;
        Some(tx)
    }

    /// Called by the block processor as it publishes a block: the block's transactions are no
    /// longer unconfirmed, and mempool transactions spending the same outputs (double spends
    /// the block won) are gone, with their descendants. Returns the script hashes whose
    /// unconfirmed part changed, and the transactions removed (`restore` puts them back if the
    /// block's write fails).
    pub fn remove_confirmed(&mut self, txids: &[Txid], spent: &[OutPoint]) -> (FastSet<HashX>, Vec<MempoolTx>) {
        let mut touched = FastSet::default();
        let mut removed = Vec::new();
        if self.txs.is_empty() {
            return (touched, removed);
        }
        removed.extend(txids.iter().filter_map(|txid| self.remove(txid, &mut touched)));
        let confirmed: FastSet<&Txid> = txids.iter().collect();
        let mut doomed: Vec<Txid> =
            spent.iter().filter_map(|op| self.spends.get(op)).filter(|t| !confirmed.contains(t)).copied().collect();
        while let Some(txid) = doomed.pop() {
            if let Some(tx) = self.remove(&txid, &mut touched) {
                doomed.extend(self.children(txid, tx.outputs.len()));
                removed.push(tx);
            }
        }
        if !touched.is_empty() {
            self.update_histogram();
        }
        (touched, removed)
    }

    /// Puts back what `remove_confirmed` removed, when the block's write failed: as it was,
    /// the list of recent arrivals included.
    pub fn restore(&mut self, removed: Vec<MempoolTx>) {
        let mut touched = FastSet::default();
        for tx in removed {
            self.insert(tx, &mut touched);
        }
        self.update_histogram();
    }

    /// A refresh: `gone` left the daemon's mempool, `added` entered it (resolved, parents
    /// first). Returns how many were removed and added, and the script hashes touched.
    pub fn apply(&mut self, gone: &[Txid], added: Vec<MempoolTx>) -> (usize, usize, FastSet<HashX>) {
        let mut touched = FastSet::default();
        let removed = gone.iter().filter(|t| self.remove(t, &mut touched).is_some()).count();
        let n_added = added.len();
        for tx in added {
            if self.arrivals.len() == ARRIVALS_KEPT {
                self.arrivals.pop_front();
            }
            self.arrivals.push_back(tx.txid);
            // Its parents may have been removed just above (replaced): then it goes too, next time.
            self.insert(tx, &mut touched);
        }
        if removed + n_added > 0 {
            self.update_histogram();
        }
        (removed, n_added, touched)
    }

    /// Compact bins: fee rates descending, each bin closed once it holds more than a growing
    /// amount of virtual size, so the histogram stays short however large the mempool is.
    fn update_histogram(&mut self) {
        let mut rates: Vec<(f64, u32)> =
            self.txs.values().map(|t| (t.fee as f64 / t.vsize.max(1) as f64, t.vsize)).collect();
        rates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut out: Vec<(f64, u64)> = Vec::new();
        let mut bin_size = 30_000f64;
        let mut acc = 0u64;
        for (i, (rate, vsize)) in rates.iter().enumerate() {
            acc += *vsize as u64;
            if acc as f64 > bin_size || i == rates.len() - 1 {
                // Rates are reported to 0.1 sat/vB, rounded down so a bin never overstates.
                let r = (rate * 10.0).floor() / 10.0;
                match out.last_mut() {
                    Some(last) if last.0 == r => last.1 += acc,
                    _ => out.push((r, acc)),
                }
                acc = 0;
                bin_size *= 1.1;
            }
        }
        self.histogram = out;
    }
}

/// Orders txids as their display hex (reversed bytes) sorts.
pub fn display_order(a: &Txid, b: &Txid) -> std::cmp::Ordering {
    a.0.iter().rev().cmp(b.0.iter().rev())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(n: u8) -> Txid {
        let mut t = [0u8; 32];
        t[31] = n; // the displayed hex starts with this byte
        Txid(t)
    }

    fn hx(n: u8) -> HashX {
        [n; 11]
    }

    fn tx(id: u8, inputs: Vec<(u8, u32, u8, u64)>, outputs: Vec<(u8, u64)>, fee: u64) -> MempoolTx {
        MempoolTx {
            txid: txid(id),
            fee,
            vsize: 100,
            inputs: inputs
                .into_iter()
                .map(|(t, vout, h, value)| SpentInput {
                    outpoint: OutPoint { txid: txid(t), vout },
                    hashx: Some(hx(h)),
                    value,
                    tx_num: None,
                })
                .collect(),
            outputs: outputs.into_iter().map(|(h, value)| TxOut { hashx: Some(hx(h)), value }).collect(),
            unwinds: 0,
        }
    }

    #[test]
    fn history_balance_and_unspent() {
        let mut m = Mempool::default();
        let mut touched = FastSet::default();
        // 0xe0 spends a confirmed output of script 1, pays script 2 and back to 1.
        m.insert(tx(0xe0, vec![(0x01, 0, 1, 1000)], vec![(2, 600), (1, 300)], 100), &mut touched);
        // 0xbb spends 0xe0's change: an unconfirmed parent.
        m.insert(tx(0xbb, vec![(0xe0, 1, 1, 300)], vec![(3, 250)], 50), &mut touched);
        // 0x80 pays script 1 from elsewhere.
        m.insert(tx(0x80, vec![(0x02, 0, 9, 70)], vec![(1, 50)], 20), &mut touched);
        assert_eq!(touched, [hx(1), hx(2), hx(3), hx(9)].into_iter().collect());

        let h = m.history(&hx(1));
        let order: Vec<(u8, i32)> = h.iter().map(|e| (e.txid.0[31], e.height)).collect();
        assert_eq!(order, vec![(0x80, 0), (0xe0, 0), (0xbb, -1)], "height 0 first, then by txid");
        assert_eq!(m.balance_delta(&hx(1)), -1000 + 300 - 300 + 50);
        assert_eq!(m.unspent(&hx(1)), vec![(txid(0x80), 0, 50)], "0xe0:1 is spent by 0xbb");
        assert_eq!(m.unspent(&hx(2)), vec![(txid(0xe0), 0, 600)]);
        assert!(m.is_spent(&OutPoint { txid: txid(0x01), vout: 0 }));
        assert_eq!(m.vsize(), 300);

        // 0xe0 confirms: 0xbb's height becomes 0, so script 3 (only touched by 0xbb) changes too.
        let (touched, _) = m.remove_confirmed(&[txid(0xe0)], &[OutPoint { txid: txid(0x01), vout: 0 }]);
        assert!(touched.contains(&hx(3)));
        assert!(!m.contains(&txid(0xe0)));
        assert_eq!(m.history(&hx(3))[0].height, 0);
        assert!(m.contains(&txid(0xbb)), "a child of a confirmed tx stays");
    }

    #[test]
    fn a_block_double_spend_evicts_the_loser_and_its_descendants() {
        let mut m = Mempool::default();
        let mut t = FastSet::default();
        m.insert(tx(0x10, vec![(0x01, 0, 1, 1000)], vec![(2, 900)], 100), &mut t);
        m.insert(tx(0x11, vec![(0x10, 0, 2, 900)], vec![(3, 800)], 100), &mut t);
        m.insert(tx(0x12, vec![(0x05, 0, 4, 10)], vec![(4, 5)], 5), &mut t);
        m.insert(tx(0x13, vec![(0x06, 0, 5, 10)], vec![(5, 5)], 5), &mut t);
        let view = |m: &Mempool| {
            let scripts: Vec<_> =
                (1..=5).map(|h| (m.history(&hx(h)), m.unspent(&hx(h)), m.balance_delta(&hx(h)))).collect();
            let spent = [(0x01, 0), (0x10, 0), (0x05, 0), (0x06, 0)]
                .map(|(t, v)| m.spender(&OutPoint { txid: txid(t), vout: v }));
            let recent: Vec<Txid> = m.recent(10).iter().map(|t| t.txid).collect();
            (scripts, spent, m.len(), m.vsize(), m.fee_histogram().to_vec(), recent)
        };
        m.update_histogram(); // as `apply` does; `insert` leaves it
        let before = view(&m);
        // A block confirms 0x13 and a different tx (0x99) spending 0x01:0.
        let spent = [OutPoint { txid: txid(0x01), vout: 0 }, OutPoint { txid: txid(0x06), vout: 0 }];
        let (touched, removed) = m.remove_confirmed(&[txid(0x99), txid(0x13)], &spent);
        assert!(!m.contains(&txid(0x10)) && !m.contains(&txid(0x11)) && !m.contains(&txid(0x13)));
        assert!(m.contains(&txid(0x12)));
        assert!(touched.contains(&hx(3)));
        assert_eq!(m.len(), 1);
        assert!(m.history(&hx(2)).is_empty());
        // The block's write failed: what was removed goes back.
        assert_eq!(removed.iter().map(|t| t.txid.0[31]).collect::<Vec<_>>(), [0x13, 0x10, 0x11]);
        m.restore(removed);
        let after = view(&m);
        assert!(after == before, "the mempool is not what it was before the block: {after:?} vs {before:?}");
    }

    #[test]
    fn histogram_is_descending_and_covers_everything() {
        let mut m = Mempool::default();
        let mut t = FastSet::default();
        for i in 0..200u8 {
            let mut x = tx(i, vec![(i, 7, 1, 10_000)], vec![(2, 1)], (i as u64 % 50) * 100 + 100);
            x.vsize = 1000;
            m.insert(x, &mut t);
        }
        m.update_histogram();
        let h = m.fee_histogram();
        assert!(h.windows(2).all(|w| w[0].0 > w[1].0), "{h:?}");
        assert_eq!(h.iter().map(|b| b.1).sum::<u64>(), 200_000);
        assert!(h.len() < 20);
    }
}
