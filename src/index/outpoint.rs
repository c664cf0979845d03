//! Where one output stands (protocol 1.7's outpoint status): the block or mempool that
//! created it, and the transaction that spent it, from the spender index and the mempool
//! mirror. No daemon index is needed.

use anyhow::Result;

use super::snapshot::Snapshot;
use crate::store::schema::SpendBackfill;
use crate::types::{OutPoint, Txid};

/// An outpoint's status. Heights are block heights, or 0 / -1 for a mempool transaction
/// (-1 when it spends another mempool transaction's output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutpointStatus {
    /// The funding transaction's height; `None` when no such output is known.
    pub funder: Option<i64>,
    pub spender: Option<(Txid, i64)>,
}

impl OutpointStatus {
    /// Whether a block may change it without touching the output's script hash: it is not
    /// known yet, or part of it is unconfirmed (a mempool parent mined moves -1 to 0 to H).
    pub fn may_change_with_a_block(&self) -> bool {
        self.funder.is_none_or(|h| h <= 0) || self.spender.is_some_and(|(_, h)| h <= 0)
    }
}

/// The spender index of an upgraded database is still being built (`sync::backfill`).
#[derive(Debug, thiserror::Error)]
#[error(
    "the spender index is still being built (block {} of {}); outpoint methods answer once it is done",
    .0.next,
    .0.end
)]
pub struct SpendersIncomplete(pub SpendBackfill);

impl Snapshot<'_> {
    /// The status of `op`. `hint_unspendable`: the client says the output's script is one the
    /// index does not keep (OP_RETURN), so an output of a known transaction that neither the
    /// UTXO set nor the spender index has is that output rather than one past the last.
    pub fn outpoint_status(&self, op: &OutPoint, hint_unspendable: bool) -> Result<OutpointStatus> {
        if let Some(b) = self.live.spend_backfill {
            return Err(SpendersIncomplete(b).into());
        }
        let mempool = &self.live.mempool;
        let in_mempool = |op: &OutPoint| mempool.spender(op).and_then(|t| Some((t, mempool.height_of(&t)? as i64)));
        let confirmed = match self.live.tip {
            Some(tip) => self.db.tx_nums_of(&op.txid)?.into_iter().rev().find(|n| *n < tip.tx_count),
            None => None,
        };
        let Some(n) = confirmed else {
            // Unconfirmed, or unknown.
            let Some(tx) = mempool.get(&op.txid).filter(|tx| (op.vout as usize) < tx.outputs.len()) else {
                return Ok(OutpointStatus::default());
            };
            let funder = mempool.height_of(&tx.txid).map(i64::from);
            return Ok(OutpointStatus { funder, spender: in_mempool(op) });
        };
        let Some((height, _)) = self.chain.locate(n) else { return Ok(OutpointStatus::default()) };
        let funder = Some(height as i64);
        if self.db.is_unspent(n, op.vout)? {
            return Ok(OutpointStatus { funder, spender: in_mempool(op) });
        }
        let tip_count = self.live.tip.map_or(0, |t| t.tx_count);
        if let Some(s) = self.db.spender(n, op.vout)?.filter(|s| *s < tip_count) {
            let txid = self.db.txids(&[s])?[0];
            let spent_at = self.chain.locate(s).map_or(0, |(h, _)| h as i64);
            return Ok(OutpointStatus { funder, spender: Some((txid, spent_at)) });
        }
        // Neither unspent nor spent: an output the index does not keep, or none at all.
        Ok(if hint_unspendable { OutpointStatus { funder, spender: None } } else { OutpointStatus::default() })
    }
}
