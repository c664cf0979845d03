//! Transactions by txid, on every daemon, with or without `-txindex`.
//!
//! A confirmed transaction is asked for in the cheapest form the daemon takes, learned once per
//! daemon (`Daemon::learn`): `getrawtransaction <txid> <verbose> <blockhash>` (Bitcoin Core
//! 0.16+, no txindex needed); else `getrawtransaction <txid> <verbose>`, which finds it when the
//! node keeps a transaction index (the Bitcoin SV node also finds transactions with unspent
//! outputs this way); else ferrum takes it out of its block itself: the index knows the block
//! and the position, the REST or `getblock` bytes give the rest, and `decoderawtransaction` plus
//! the block's header give the verbose form the node would have answered. Mempool
//! transactions are asked for by txid alone, which every node answers.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::block::transaction_ranges;
use super::capabilities::Feature;
use super::daemon::{Daemon, DaemonError};
use crate::coins::Coin;
use crate::types::{hex_rev, Txid};

/// bitcoind's "no such transaction" (RPC_INVALID_ADDRESS_OR_KEY).
const RPC_NOT_FOUND: i64 = -5;
/// Raw blocks kept for further extractions: a wallet restoring its history asks for many
/// transactions of the same few blocks.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Where the index says a confirmed transaction is.
#[derive(Clone, Copy, Debug)]
pub struct TxLocation {
    pub block_hash: [u8; 32],
    pub height: u32,
    /// Position in the block.
    pub pos: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Neither the chain nor the mempool has it (as far as the daemon and the index know).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

struct CachedBlock {
    hash: [u8; 32],
    raw: Arc<Vec<u8>>,
    txs: Arc<Vec<(Txid, Range<usize>)>>,
}

pub struct Transactions {
    daemon: Arc<Daemon>,
    coin: &'static Coin,
    blocks: Mutex<VecDeque<CachedBlock>>,
}

/// Whether a daemon error says the call's form is not accepted (the Bitcoin SV node answers a
/// `getrawtransaction` with a block hash by its help text), rather than that the transaction
/// is missing.
fn rejects_form(e: &DaemonError, method: &str) -> bool {
    match e {
        DaemonError::Rpc { code: -1, message } => message.starts_with(method),
        DaemonError::Rpc { code, .. } => *code == -32602,
        _ => false,
    }
}

impl Transactions {
    pub fn new(daemon: Arc<Daemon>, coin: &'static Coin) -> Transactions {
        Transactions { daemon, coin, blocks: Mutex::default() }
    }

    /// The transaction as hex, or as the daemon's decoded object when `verbose`.
    pub async fn get(&self, txid: Txid, verbose: bool, location: Option<TxLocation>) -> Result<Value, TxError> {
        let id = txid.to_string();
        let Some(loc) = location else {
            // Unconfirmed (or unknown): every daemon finds mempool transactions by txid.
            return match self.daemon.call("getrawtransaction", json!([id, verbose])).await {
                Ok(v) => Ok(v),
                Err(DaemonError::Rpc { message, .. }) => {
                    Err(TxError::NotFound(format!("no transaction {txid} in the chain or the mempool ({message})")))
                }
                Err(e) => Err(e.into()),
            };
        };
        if self.daemon.supports(Feature::TxByBlockHash) != Some(false) {
            let params = json!([id, verbose, hex_rev(&loc.block_hash)]);
            match self.daemon.call_at("getrawtransaction", params).await {
                (at, Ok(v)) => {
                    self.daemon.learn(at, Feature::TxByBlockHash, true);
                    return Ok(v);
                }
                (at, Err(e)) if rejects_form(&e, "getrawtransaction") => {
                    self.daemon.learn(at, Feature::TxByBlockHash, false)
                }
                // Nodes do not serve the genesis coinbase; a chain that moved since the index
                // looked also ends here, and is told apart by the block's contents.
                (at, Err(DaemonError::Rpc { .. })) => {
                    self.daemon.learn(at, Feature::TxByBlockHash, true);
                    return self.cut_from_block(txid, verbose, loc).await;
                }
                (_, Err(e)) => return Err(e.into()),
            }
        }
        if self.daemon.supports(Feature::TxIndex) != Some(false) {
            match self.daemon.call_at("getrawtransaction", json!([id, verbose])).await {
                // Only an answer for a transaction the daemon cannot find teaches anything: the
                // Bitcoin SV node also finds transactions with unspent outputs without an index.
                (_, Ok(v)) => return Ok(v),
                (at, Err(DaemonError::Rpc { code: RPC_NOT_FOUND, message })) => {
                    // Core builds its index in the background (not yet is not never), and no
                    // node serves the genesis coinbase.
                    if loc.height > 0 && !message.contains("still in the process of being indexed") {
                        self.daemon.learn(at, Feature::TxIndex, false);
                    }
                }
                (_, Err(DaemonError::Rpc { .. })) => {}
                (_, Err(e)) => return Err(e.into()),
            }
        }
        self.cut_from_block(txid, verbose, loc).await
    }

    /// Takes the transaction out of its block.
    async fn cut_from_block(&self, txid: Txid, verbose: bool, loc: TxLocation) -> Result<Value, TxError> {
        let (raw, txs) = self.block(&loc.block_hash).await?;
        let range = match txs.get(loc.pos as usize) {
            Some((id, range)) if *id == txid => range.clone(),
            _ => {
                return Err(TxError::NotFound(format!(
                    "transaction {txid} is not at position {} of block {} (the chain may have just changed)",
                    loc.pos,
                    hex_rev(&loc.block_hash)
                )))
            }
        };
        let hex = crate::types::to_hex(&raw[range]);
        if !verbose {
            return Ok(Value::String(hex));
        }
        let mut decoded = self.daemon.call("decoderawtransaction", json!([hex])).await?;
        let header = self.daemon.call("getblockheader", json!([hex_rev(&loc.block_hash), true])).await?;
        let Value::Object(fields) = &mut decoded else {
            return Err(DaemonError::Rpc { code: 0, message: "malformed decoderawtransaction reply".into() }.into());
        };
        // The fields getrawtransaction adds for a confirmed transaction: Bitcoin Core (asked
        // with a block hash) says whether the block is in the active chain, the Bitcoin SV node
        // (which takes no block hash) gives the block's height.
        let confirmations = header.get("confirmations").cloned().unwrap_or(Value::Null);
        if self.daemon.supports(Feature::TxByBlockHash) == Some(true) {
            fields.insert("in_active_chain".into(), json!(confirmations.as_i64().is_some_and(|c| c > 0)));
        } else {
            fields.insert("blockheight".into(), json!(loc.height));
        }
        fields.insert("hex".into(), Value::String(hex));
        fields.insert("blockhash".into(), Value::String(hex_rev(&loc.block_hash)));
        fields.insert("confirmations".into(), confirmations);
        fields.insert("time".into(), header.get("time").cloned().unwrap_or(Value::Null));
        fields.insert("blocktime".into(), header.get("time").cloned().unwrap_or(Value::Null));
        Ok(decoded)
    }

    /// A block's bytes and where each of its transactions is in them, from the cache or the
    /// daemon.
    #[allow(clippy::type_complexity)]
    async fn block(&self, hash: &[u8; 32]) -> Result<(Arc<Vec<u8>>, Arc<Vec<(Txid, Range<usize>)>>), TxError> {
        if let Some(b) = self.blocks.lock().expect("lock").iter().find(|b| b.hash == *hash) {
            return Ok((b.raw.clone(), b.txs.clone()));
        }
        let raw = self.daemon.raw_block(hash).await?;
        let coin = self.coin;
        let (raw, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = transaction_ranges(&raw, coin);
            (raw, parsed)
        })
        .await
        .map_err(|e| TxError::NotFound(format!("reading block {} failed: {e}", hex_rev(hash))))?;
        let txs = parsed.map_err(|e| DaemonError::Rpc {
            code: 0,
            message: format!("the daemon sent block {} that does not parse: {e}", hex_rev(hash)),
        })?;
        let (raw, txs) = (Arc::new(raw), Arc::new(txs));
        let mut cache = self.blocks.lock().expect("lock");
        cache.push_front(CachedBlock { hash: *hash, raw: raw.clone(), txs: txs.clone() });
        let mut total = 0;
        cache.retain(|b| {
            total += b.raw.len();
            total <= BLOCK_CACHE_BYTES || Arc::ptr_eq(&b.raw, &raw)
        });
        Ok((raw, txs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_help_text_answer_means_the_form_is_not_taken() {
        let help = DaemonError::Rpc { code: -1, message: "getrawtransaction \"txid\" ( verbose )\n\nNOTE: ...".into() };
        assert!(rejects_form(&help, "getrawtransaction"));
        let missing = DaemonError::Rpc { code: -5, message: "No such transaction found in the provided block".into() };
        assert!(!rejects_form(&missing, "getrawtransaction"));
        assert!(!rejects_form(&DaemonError::Rpc { code: -1, message: "other".into() }, "getrawtransaction"));
        assert!(rejects_form(&DaemonError::Rpc { code: -32602, message: "Invalid params".into() }, "x"));
    }
}
