//! The admin `query` command: a script hash's history, unspent outputs and balance, given an
//! address, a script or a script hash.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::coins::Coin;
use crate::index::Index;
use crate::types::{hex_rev, parse_hex_rev32, ScriptHash};

/// Turns an address, a hex script, or a 64-hex Electrum script hash into the script hash
/// (sha256 of the script, internal order).
pub fn resolve_item(coin: &Coin, item: &str) -> Result<[u8; 32]> {
    if let Some(script) = coin.address_to_script(item) {
        return Ok(Sha256::digest(script).into());
    }
    if item.len() == 64 {
        if let Some(sh) = parse_hex_rev32(item) {
            return Ok(sh);
        }
    }
    match hex::decode(item) {
        Ok(script) if !script.is_empty() => Ok(Sha256::digest(script).into()),
        _ => Err(anyhow!("{item:?} is not a {} {} address, a hex script or a script hash", coin.name, coin.net)),
    }
}

/// The admin `query` answer for one item: the first `limit` confirmed transactions and
/// unspent outputs, the confirmed balance, and apart from them the mempool's transactions and
/// balance delta.
pub fn query_item(index: &Index, item: &str, limit: usize) -> Result<Value> {
    let sh = resolve_item(index.coin(), item)?;
    let hashx = ScriptHash(sh).hashx();
    let snap = index.snapshot();
    let hist = snap.history_prefix(&hashx, limit)?;
    let unspent = snap.confirmed_unspent(&hashx)?;
    let mempool = snap.mempool().history(&hashx);
    let (confirmed, unconfirmed) = snap.balance(&hashx)?;
    Ok(json!({
        "item": item,
        "scripthash": hex_rev(&sh),
        "history": hist.iter().map(|(t, h)| json!({"tx_hash": t.to_string(), "height": h})).collect::<Vec<_>>(),
        "mempool": mempool.iter().map(|e| json!({"tx_hash": e.txid.to_string(), "height": e.height, "fee": e.fee})).collect::<Vec<_>>(),
        "utxos": unspent.iter().take(limit).map(|u| json!({"tx_hash": u.txid.to_string(), "tx_pos": u.vout, "height": u.height, "value": u.value})).collect::<Vec<_>>(),
        "balance": confirmed,
        "unconfirmed": unconfirmed,
    }))
}
