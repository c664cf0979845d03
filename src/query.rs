//! Read-side lookups on the index: a script hash's history, unspent outputs and balance.
//! Used by the admin `query` command now and by the Electrum sessions later.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::chain::Chain;
use crate::coins::Coin;
use crate::db::Db;
use crate::schema::{hashx_from_scripthash, hex_rev, Txid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub txid: Txid,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    pub txid: Txid,
    pub vout: u32,
    pub height: u32,
    pub value: u64,
}

/// Turns an address, a hex script, or a 64-hex Electrum script hash into the script hash
/// (sha256 of the script, internal order).
pub fn resolve_item(coin: &Coin, item: &str) -> Result<[u8; 32]> {
    if let Some(script) = coin.address_to_script(item) {
        return Ok(Sha256::digest(script).into());
    }
    if item.len() == 64 {
        if let Some(sh) = crate::schema::parse_hex_rev32(item) {
            return Ok(sh);
        }
    }
    match hex::decode(item) {
        Ok(script) if !script.is_empty() => Ok(Sha256::digest(script).into()),
        _ => Err(anyhow!("{item:?} is not a {} {} address, a hex script or a script hash", coin.name, coin.net)),
    }
}

/// Confirmed history in chain order, at most `limit` entries.
pub fn history(db: &Db, chain: &Chain, scripthash: &[u8; 32], limit: usize) -> Result<Vec<HistoryItem>> {
    let hashx = hashx_from_scripthash(scripthash);
    let mut out = Vec::new();
    for tx_num in db.history(&hashx, limit)? {
        // A row past our in-memory chain belongs to a block being unwound right now.
        let Some((height, _)) = chain.locate(tx_num) else { continue };
        let txid =
            db.txid(tx_num)?.ok_or_else(|| anyhow!("the index is inconsistent: no txid for tx number {tx_num}"))?;
        out.push(HistoryItem { txid, height });
    }
    Ok(out)
}

/// Confirmed unspent outputs in chain order (at most `limit` of them) and the confirmed
/// balance over all of them, from one scan.
pub fn utxos_and_balance(db: &Db, chain: &Chain, scripthash: &[u8; 32], limit: usize) -> Result<(Vec<Utxo>, u64)> {
    let hashx = hashx_from_scripthash(scripthash);
    let rows = db.hashx_utxos(&hashx)?;
    let balance = rows.iter().map(|(_, _, v)| v).sum();
    let mut out = Vec::new();
    for &(tx_num, vout, value) in rows.iter().take(limit) {
        let Some((height, _)) = chain.locate(tx_num) else { continue };
        let txid =
            db.txid(tx_num)?.ok_or_else(|| anyhow!("the index is inconsistent: no txid for tx number {tx_num}"))?;
        out.push(Utxo { txid, vout, height, value });
    }
    Ok((out, balance))
}

/// The admin `query` answer for one item.
pub fn query_item(db: &Db, chain: &Chain, coin: &Coin, item: &str, limit: usize) -> Result<Value> {
    let sh = resolve_item(coin, item)?;
    let hist = history(db, chain, &sh, limit)?;
    let (unspent, balance) = utxos_and_balance(db, chain, &sh, limit)?;
    Ok(json!({
        "item": item,
        "scripthash": hex_rev(&sh),
        "history": hist.iter().map(|h| json!({"tx_hash": h.txid.to_string(), "height": h.height})).collect::<Vec<_>>(),
        "utxos": unspent.iter().map(|u| json!({"tx_hash": u.txid.to_string(), "tx_pos": u.vout, "height": u.height, "value": u.value})).collect::<Vec<_>>(),
        "balance": balance,
    }))
}
