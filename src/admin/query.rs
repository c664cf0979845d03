//! The admin `query` command: a script hash's history, unspent outputs and balance, given an
//! address, a script or a script hash.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::text::thousands;
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
    let (confirmed, unconfirmed, _) = snap.balance(&hashx)?;
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

/// The admin `query` answer as ElectrumX's `electrumx_rpc` prints it: for each item, what it
/// was read as, then its history (numbered from 0, in chain order), its unspent outputs
/// (numbered from 1) and its confirmed balance in coins.
pub fn query_lines(index: &Index, items: &[String], limit: usize) -> Result<Vec<String>> {
    let coin = index.coin();
    let mut lines = Vec::new();
    for item in items {
        let sh = resolve_item(coin, item)?;
        lines.push(if coin.address_to_script(item).is_some() {
            format!("Address: {item}")
        } else if item.len() == 64 {
            format!("Script hash: {item}")
        } else {
            format!("Script: {item}")
        });
        let hashx = ScriptHash(sh).hashx();
        let snap = index.snapshot();
        let hist = snap.history_prefix(&hashx, limit)?;
        if hist.is_empty() {
            lines.push("No history found".into());
        }
        for (n, (txid, height)) in hist.iter().enumerate() {
            lines.push(format!("History #{}: height {} txid {txid}", thousands(n as i64), thousands(*height as i64)));
        }
        let unspent = snap.confirmed_unspent(&hashx)?;
        if unspent.is_empty() {
            lines.push("No UTXOs found".into());
        }
        for (n, u) in unspent.iter().take(limit).enumerate() {
            lines.push(format!(
                "UTXO #{}: txid {} tx_pos {} height {} value {}",
                thousands(n as i64 + 1),
                u.txid,
                thousands(u.vout as i64),
                thousands(u.height as i64),
                thousands(u.value as i64)
            ));
        }
        let total: u64 = unspent.iter().map(|u| u.value).sum();
        lines.push(format!("Balance: {} {}", coins(total), coin.shortname));
    }
    Ok(lines)
}

/// Satoshis as coins the way Python writes `Decimal(sats) / 10**8` with `:,f`: thousands
/// separators, no trailing zeros ("0", "0.0055", "1,234,567.89012345").
fn coins(sats: u64) -> String {
    let whole = thousands((sats / 100_000_000) as i64);
    let frac = format!("{:08}", sats % 100_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole
    } else {
        format!("{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn balances_are_written_as_electrumx_writes_them() {
        for (sats, text) in [
            (0, "0"),
            (550_000, "0.0055"),
            (1_789_833_030, "17.8983303"),
            (123_456_789_012_345, "1,234,567.89012345"),
            (100_000_000, "1"),
        ] {
            assert_eq!(super::coins(sats), text);
        }
    }
}
