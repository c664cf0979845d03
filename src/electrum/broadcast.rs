//! Sending transactions to the network, and testing them first: `broadcast`,
//! `broadcast_package` (1.6) and `testmempoolaccept` (1.7), through the daemon, with the
//! fallbacks a daemon without a method needs.

use serde_json::{json, Map, Value};

use super::daemon_info::daemon_error;
use super::Ctx;
use crate::jsonrpc::RpcError;
use crate::node::block::{parse_transaction, sha256d};
use crate::node::DaemonError;
use crate::types::hex_rev;

type RpcResult = Result<Value, RpcError>;

pub async fn broadcast(ctx: &Ctx, raw: String) -> RpcResult {
    match ctx.daemon.call("sendrawtransaction", json!([raw])).await? {
        Ok(txid) => {
            ctx.wake_mempool();
            Ok(txid)
        }
        Err(DaemonError::Rpc { code, message }) => match already_in_mempool(ctx, &raw, code, &message) {
            Some(txid) => Ok(Value::String(txid)),
            None => Err(RpcError::bad_request(format!("the transaction was rejected by network rules.\n\n{message}"))),
        },
        Err(e) => Err(daemon_error(e)),
    }
}

/// The txid of a broadcast transaction the node (or our mirror of its mempool) already holds:
/// Bitcoin Core answers such a broadcast with the txid, the Bitcoin SV node with error -27
/// "Transaction already in the mempool"; clients get the txid from ferrum either way.
fn already_in_mempool(ctx: &Ctx, raw: &str, code: i64, message: &str) -> Option<String> {
    let (tx, _) = parse_transaction(&hex::decode(raw).ok()?, ctx.config.coin).ok()?;
    let known = ctx.index.snapshot().mempool().contains(&tx.txid);
    (known || (code == -27 && message.contains("mempool"))).then(|| tx.txid.to_string())
}

pub async fn broadcast_package(ctx: &Ctx, raws: Vec<String>, verbose: bool) -> RpcResult {
    let answer = match ctx.daemon.call("submitpackage", json!([raws])).await? {
        Ok(answer) => answer,
        Err(DaemonError::MethodNotFound(_)) => broadcast_one_by_one(ctx, &raws).await?,
        Err(e) => return Err(daemon_error(e)),
    };
    ctx.wake_mempool();
    Ok(package_result(&answer, verbose))
}

/// `submitpackage` for daemons without it: the transactions one by one, parents first as the
/// client listed them, answered in submitpackage's shape.
async fn broadcast_one_by_one(ctx: &Ctx, txs: &[String]) -> RpcResult {
    let mut results = Map::new();
    let mut failed = false;
    for raw in txs {
        let bytes = hex::decode(raw).map_err(|_| RpcError::bad_request("raw_txs must be hexadecimal"))?;
        let (tx, _) = parse_transaction(&bytes, ctx.config.coin)
            .map_err(|e| RpcError::bad_request(format!("a transaction of the package does not parse: {e}")))?;
        let wtxid = hex_rev(&sha256d(&bytes));
        let mut result = json!({"txid": tx.txid.to_string()});
        match ctx.daemon.call("sendrawtransaction", json!([raw])).await? {
            Ok(_) => {}
            Err(DaemonError::Rpc { message, .. }) => {
                failed = true;
                result["error"] = Value::String(message);
            }
            Err(e) => return Err(daemon_error(e)),
        }
        results.insert(wtxid, result);
    }
    let msg = if failed { "transaction failed" } else { "success" };
    Ok(json!({"package_msg": msg, "tx-results": results, "replaced-transactions": []}))
}

fn package_result(answer: &Value, verbose: bool) -> Value {
    if verbose {
        return answer.clone();
    }
    let success = answer["package_msg"].as_str() == Some("success");
    let mut out = json!({"success": success});
    let errors: Vec<Value> = answer["tx-results"]
        .as_object()
        .map(|results| {
            results.values().filter_map(|r| r.get("error").map(|e| json!({"txid": r["txid"], "error": e}))).collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors);
    }
    out
}

/// Whether the daemon would accept `raws` (a package when several), without sending them: one
/// result per transaction with its txid, wtxid, `allowed` when the daemon decided, and the
/// reason it gave. Nothing else of the daemon's answer is passed on, as the protocol keeps
/// clients independent of the node's version.
pub async fn testmempoolaccept(ctx: &Ctx, raws: Vec<String>) -> RpcResult {
    match ctx.daemon.call("testmempoolaccept", json!([raws])).await? {
        Ok(Value::Array(results)) => Ok(Value::Array(results.iter().map(test_result).collect())),
        Ok(other) => {
            Err(RpcError::new(crate::jsonrpc::DAEMON_ERROR, format!("daemon error: unexpected answer {other}")))
        }
        Err(DaemonError::MethodNotFound(_)) => Err(RpcError::bad_request(
            "this server's node cannot test transactions without broadcasting them (it has no testmempoolaccept)",
        )),
        Err(e) => Err(daemon_error(e)),
    }
}

fn test_result(r: &Value) -> Value {
    let mut out = json!({"txid": r["txid"], "wtxid": r.get("wtxid").unwrap_or(&r["txid"])});
    if let Some(allowed) = r.get("allowed").and_then(Value::as_bool) {
        out["allowed"] = json!(allowed);
    }
    let reason = ["package-error", "reject-details", "reject-reason"]
        .iter()
        .filter_map(|k| r.get(*k).and_then(Value::as_str))
        .find(|s| !s.is_empty());
    if let Some(reason) = reason {
        out["reason"] = json!(reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_results() {
        let ok = json!({"package_msg": "success", "tx-results": {"w1": {"txid": "t1", "vsize": 100}}});
        assert_eq!(package_result(&ok, false), json!({"success": true}));
        let bad =
            json!({"package_msg": "transaction failed", "tx-results": {"w1": {"txid": "t1", "error": "bad-txns"}}});
        assert_eq!(
            package_result(&bad, false),
            json!({"success": false, "errors": [{"txid": "t1", "error": "bad-txns"}]})
        );
        assert_eq!(package_result(&bad, true), bad);
    }

    #[test]
    fn test_results_keep_only_what_the_protocol_names() {
        let ok = json!({"txid": "t", "wtxid": "w", "allowed": true, "vsize": 141, "fees": {"base": 0.0001}});
        assert_eq!(test_result(&ok), json!({"txid": "t", "wtxid": "w", "allowed": true}));
        let bad = json!({"txid": "t", "wtxid": "w", "allowed": false, "reject-reason": "min relay fee not met",
                         "reject-details": "min relay fee not met, 0 < 141"});
        assert_eq!(
            test_result(&bad),
            json!({"txid": "t", "wtxid": "w", "allowed": false, "reason": "min relay fee not met, 0 < 141"})
        );
        let undecided = json!({"txid": "t", "wtxid": "w", "package-error": "package-not-sorted"});
        assert_eq!(test_result(&undecided), json!({"txid": "t", "wtxid": "w", "reason": "package-not-sorted"}));
    }
}
