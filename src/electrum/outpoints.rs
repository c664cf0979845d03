//! `blockchain.outpoint.*` (1.7): where an output stands (funded where, spent by what), and
//! notifications when that changes, answered from ferrum's own spender index and mempool
//! mirror (`index::outpoint`), on any node, with no txindex.

use serde_json::Value;

use super::methods::SessionState;
use super::subscriptions::outpoint_json;
use super::Ctx;
use crate::index::{OutpointStatus, SpendersIncomplete};
use crate::jsonrpc::{RpcError, INTERNAL_ERROR, SERVER_BUSY};
use crate::types::{OutPoint, ScriptHash};

/// The status of `op`; `hint` is the client's spk_hint, the output's script.
async fn status(ctx: &Ctx, op: OutPoint, hint: &[u8]) -> Result<OutpointStatus, RpcError> {
    let unspendable = ctx.config.coin.is_unspendable(hint);
    ctx.read(move |snap| {
        snap.outpoint_status(&op, unspendable).map_err(|e| match e.downcast_ref::<SpendersIncomplete>() {
            Some(incomplete) => RpcError::new(SERVER_BUSY, incomplete.to_string()),
            None => {
                tracing::error!("an outpoint status failed reading the index: {e:#}");
                RpcError::new(INTERNAL_ERROR, "internal error reading the index")
            }
        })
    })
    .await
}

pub async fn get_status(ctx: &Ctx, op: OutPoint, hint: &[u8]) -> Result<Value, RpcError> {
    Ok(outpoint_json(&status(ctx, op, hint).await?))
}

/// Subscribes even to an outpoint nobody has created yet, as the protocol requires.
pub async fn subscribe(ctx: &Ctx, s: &mut SessionState, op: OutPoint, hint: &[u8]) -> Result<Value, RpcError> {
    let new = !s.subs.outpoints.contains_key(&op);
    if new {
        super::methods::room_for_a_subscription(ctx, s)?;
    }
    // Changes to an output touch its script's hash: registered under the hint's, before the
    // read, so a change published meanwhile is not missed.
    let hashx = ScriptHash::of_script(hint).hashx();
    if new {
        ctx.subs.register_outpoint(&op, hashx, ctx.config.coin.is_unspendable(hint));
    }
    match status(ctx, op, hint).await {
        Ok(st) => {
            let hashx = s.subs.outpoints.get(&op).map_or(hashx, |(h, _)| *h);
            s.subs.outpoints.insert(op, (hashx, st));
            ctx.subs.outpoint_answered(&op, st);
            Ok(outpoint_json(&st))
        }
        Err(e) => {
            if new {
                ctx.subs.unregister_outpoint(&op, &hashx);
            }
            Err(e)
        }
    }
}

pub fn unsubscribe(ctx: &Ctx, s: &mut SessionState, op: OutPoint) -> Value {
    match s.subs.outpoints.remove(&op) {
        Some((hashx, _)) => {
            ctx.subs.unregister_outpoint(&op, &hashx);
            Value::Bool(true)
        }
        None => Value::Bool(false),
    }
}
