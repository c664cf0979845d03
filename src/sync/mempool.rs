//! Refreshing the mempool mirror from the daemon: what left, what is new (fetched in batches),
//! the outputs the new transactions spend (from the mempool, the same batch, or the UTXO set),
//! and fees from those. It talks to the daemon through `MempoolSource`, so tests can drive it
//! with a fake.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use serde_json::{json, Value};

use crate::index::{IndexWriter, MempoolTx, SpentInput};
use crate::node::block::{parse_transaction, ParsedTx};
use crate::node::daemon::bad_field;
use crate::node::{Daemon, DaemonError};
use crate::types::{parse_hex_rev32, FastSet, HashX, OutPoint, Txid};

/// Transactions fetched per daemon batch.
const FETCH_BATCH: usize = 500;

/// What the refresh asks of the daemon.
pub trait MempoolSource {
    /// The txids in the daemon's mempool. A reply that is not a list of txids is an error: an
    /// empty mirror would tell every subscriber its unconfirmed transactions vanished.
    fn txids(&self) -> impl Future<Output = Result<Vec<Txid>, DaemonError>> + Send;
    /// The raw transactions, in order; `None` for one that is gone (mined or evicted).
    fn transactions(&self, txids: &[Txid]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, DaemonError>> + Send;
}

impl MempoolSource for Daemon {
    async fn txids(&self) -> Result<Vec<Txid>, DaemonError> {
        parse_listing(&self.call("getrawmempool", json!([false])).await?)
    }

    async fn transactions(&self, txids: &[Txid]) -> Result<Vec<Option<Vec<u8>>>, DaemonError> {
        let params: Vec<Value> = txids.iter().map(|t| json!([t.to_string(), false])).collect();
        let mut out = Vec::with_capacity(txids.len());
        for r in self.batch("getrawtransaction", params).await? {
            out.push(match r {
                Ok(Value::String(hex)) => hex::decode(&hex).ok(),
                Ok(_) | Err(DaemonError::Rpc { .. }) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }
}

/// `getrawmempool`'s answer: a list of txids, or an error for anything else.
fn parse_listing(listed: &Value) -> Result<Vec<Txid>, DaemonError> {
    let items = listed.as_array().ok_or_else(|| bad_field("getrawmempool", "list of txids"))?;
    items
        .iter()
        .map(|v| v.as_str().and_then(parse_hex_rev32).map(Txid).ok_or_else(|| bad_field("getrawmempool", "txid")))
        .collect()
}

/// What one refresh changed.
#[derive(Default, Debug)]
pub struct RefreshReport {
    pub added: usize,
    pub removed: usize,
    /// Transactions the daemon listed that could not be used this time (gone before we fetched
    /// them, unreadable, or spending outputs of a block not indexed yet); the next refresh tries
    /// again.
    pub skipped: usize,
    pub touched: FastSet<HashX>,
}

/// Brings the mirror up to date with the daemon's mempool. Runs between block rounds (never
/// while blocks are applied), so prevouts looked up in the index stay valid until the mirror is
/// updated.
pub async fn refresh(writer: &IndexWriter, source: &impl MempoolSource) -> Result<RefreshReport, DaemonError> {
    let listed: HashSet<Txid> = source.txids().await?.into_iter().collect();
    let known = writer.mempool_txids();
    let gone: Vec<Txid> = known.difference(&listed).copied().collect();
    let new: Vec<Txid> = listed.difference(&known).copied().collect();
    let mut report = RefreshReport::default();

    let coin = writer.index().coin();
    let mut fetched = Vec::with_capacity(new.len());
    for chunk in new.chunks(FETCH_BATCH) {
        for (txid, raw) in chunk.iter().zip(source.transactions(chunk).await?) {
            match raw.map(|raw| parse_transaction(&raw, coin)) {
                Some(Ok((tx, vsize))) if tx.txid == *txid => fetched.push((tx, vsize)),
                Some(_) => {
                    tracing::warn!("the daemon returned an unreadable mempool transaction {txid}; skipping it");
                    report.skipped += 1;
                }
                None => report.skipped += 1,
            }
        }
    }

    // Resolve prevouts off the async threads.
    let task = {
        let writer = writer.clone();
        tokio::task::spawn_blocking(move || resolve(&writer, fetched)).await
    };
    let (resolved, unresolved) = match task {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!("reading the index for mempool prevouts failed: {e:#}; trying again next refresh");
            return Ok(report);
        }
        Err(e) => {
            tracing::error!("the mempool refresh failed: {e}; trying again next refresh");
            return Ok(report);
        }
    };
    report.skipped += unresolved;
    (report.removed, report.added, report.touched) = writer.apply_mempool(&gone, resolved);
    Ok(report)
}

/// The fetched transactions with their spent outputs resolved, and how many could not be.
fn resolve(writer: &IndexWriter, fetched: Vec<(ParsedTx, u32)>) -> anyhow::Result<(Vec<MempoolTx>, usize)> {
    let batch: HashMap<Txid, usize> = fetched.iter().enumerate().map(|(i, (t, _))| (t.txid, i)).collect();
    // Outputs from outside this batch, looked up at once (mempool first, then the UTXO set).
    let outside: Vec<OutPoint> =
        fetched.iter().flat_map(|(t, _)| &t.inputs).filter(|op| !batch.contains_key(&op.txid)).copied().collect();
    let (found, unwinds) = writer.mempool_prevouts(&outside)?;
    let outside: HashMap<OutPoint, Option<SpentInput>> = outside.into_iter().zip(found).collect();
    let mut done: Vec<Option<MempoolTx>> = vec![None; fetched.len()];
    let mut failed = vec![false; fetched.len()];
    // Parents within the batch must be resolved first: repeat until nothing more resolves.
    loop {
        let mut progress = false;
        for (i, (tx, vsize)) in fetched.iter().enumerate() {
            if done[i].is_some() || failed[i] {
                continue;
            }
            let mut inputs = Vec::with_capacity(tx.inputs.len());
            let mut waiting = false;
            for op in &tx.inputs {
                match batch.get(&op.txid) {
                    Some(&j) => match (&done[j], failed[j]) {
                        (Some(p), _) => match p.outputs.get(op.vout as usize) {
                            Some(o) => {
                                inputs.push(SpentInput { outpoint: *op, hashx: o.hashx, value: o.value, tx_num: None })
                            }
                            None => failed[i] = true,
                        },
                        (None, true) => failed[i] = true,
                        (None, false) => waiting = true,
                    },
                    None => match outside.get(op).copied().flatten() {
                        Some(input) => inputs.push(input),
                        None => failed[i] = true,
                    },
                }
            }
            if failed[i] {
                progress = true;
                continue;
            }
            if waiting {
                continue;
            }
            let spent: u64 = inputs.iter().map(|i| i.value).sum();
            let paid: u64 = tx.outputs.iter().map(|o| o.value).sum();
            done[i] = Some(MempoolTx {
                txid: tx.txid,
                fee: spent.saturating_sub(paid),
                vsize: *vsize,
                inputs,
                outputs: tx.outputs.clone(),
                unwinds,
            });
            progress = true;
        }
        if !progress {
            break;
        }
    }
    let unresolved = done.iter().filter(|d| d.is_none()).count();
    Ok((done.into_iter().flatten().collect(), unresolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_mempool_listing_is_an_error_not_an_empty_mempool() {
        let t = "ab".repeat(32);
        assert_eq!(parse_listing(&json!([t])).unwrap(), vec![Txid([0xab; 32])]);
        assert_eq!(parse_listing(&json!([])).unwrap(), vec![]);
        for bad in [json!(null), json!({"x": 1}), json!("txid"), json!([t, 5]), json!(["zz"])] {
            assert!(parse_listing(&bad).is_err(), "{bad}");
        }
    }
}
