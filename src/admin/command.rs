//! The operator's commands, one type for both ends: `ferrum-rpc` parses them from its command
//! line (clap) and sends them as JSON-RPC; the admin server parses them back from JSON-RPC,
//! positional or named parameters (ElectrumX's `electrumx_rpc` sends them named).

use clap::Subcommand;
use serde_json::{json, Value};

use crate::jsonrpc::{RpcError, INVALID_PARAMS, METHOD_NOT_FOUND};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AdminCommand {
    /// Heights, sync state, daemon and database summary.
    Getinfo,
    /// One row per connected Electrum session.
    Sessions,
    /// History, unspent outputs and balance of addresses, hex scripts or script hashes.
    Query {
        #[arg(required = true)]
        items: Vec<String>,
        /// Most history entries and outputs to show per item.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Force the index back N blocks with undo data and re-sync (for testing reorg handling).
    Reorg {
        #[arg(default_value_t = 3)]
        count: u32,
    },
    /// Flush the index and shut ferrum down.
    Stop,
}

/// Parameter `index` (positional) or `name` (named).
fn param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(a) => a.get(index),
        Value::Object(o) => o.get(name),
        _ => None,
    }
    .filter(|v| !v.is_null())
}

fn invalid(message: &str) -> RpcError {
    RpcError::new(INVALID_PARAMS, message)
}

impl AdminCommand {
    pub const NAMES: &'static [&'static str] = &["getinfo", "query", "reorg", "sessions", "stop"];

    pub fn parse(method: &str, params: &Value) -> Result<AdminCommand, RpcError> {
        Ok(match method {
            "getinfo" => AdminCommand::Getinfo,
            "sessions" => AdminCommand::Sessions,
            "stop" => AdminCommand::Stop,
            "reorg" => AdminCommand::Reorg {
                count: match param(params, 0, "count") {
                    None => 3,
                    Some(v) => {
                        v.as_u64()
                            .filter(|&n| n > 0 && n <= u32::MAX as u64)
                            .ok_or_else(|| invalid("count must be a positive integer"))? as u32
                    }
                },
            },
            "query" => {
                let items = match param(params, 0, "items") {
                    Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>(),
                    Some(Value::String(s)) => Some(vec![s.clone()]),
                    _ => None,
                }
                .ok_or_else(|| invalid("items must be a list of addresses, hex scripts or script hashes"))?;
                let limit = match param(params, 1, "limit") {
                    None => 1000,
                    Some(v) => v.as_u64().ok_or_else(|| invalid("limit must be a non-negative integer"))? as usize,
                };
                AdminCommand::Query { items, limit }
            }
            "" => return Err(invalid("missing method")),
            other => {
                return Err(RpcError::new(
                    METHOD_NOT_FOUND,
                    format!("unknown method {other:?}; known: {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    /// The JSON-RPC method and (named) parameters that carry this command.
    pub fn to_request(&self) -> (&'static str, Value) {
        match self {
            AdminCommand::Getinfo => ("getinfo", json!({})),
            AdminCommand::Sessions => ("sessions", json!({})),
            AdminCommand::Stop => ("stop", json!({})),
            AdminCommand::Reorg { count } => ("reorg", json!({"count": count})),
            AdminCommand::Query { items, limit } => ("query", json!({"items": items, "limit": limit})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_are_refused() {
        let all = [
            AdminCommand::Getinfo,
            AdminCommand::Sessions,
            AdminCommand::Stop,
            AdminCommand::Reorg { count: 2 },
            AdminCommand::Query { items: vec!["a".into(), "b".into()], limit: 5 },
        ];
        for c in all {
            let (method, params) = c.to_request();
            assert_eq!(AdminCommand::parse(method, &params).unwrap(), c);
        }
        assert_eq!(AdminCommand::parse("reorg", &json!([7])).unwrap(), AdminCommand::Reorg { count: 7 });
        assert_eq!(AdminCommand::parse("reorg", &json!([])).unwrap(), AdminCommand::Reorg { count: 3 });
        assert_eq!(AdminCommand::parse("reorg", &json!([0])).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(AdminCommand::parse("reorg", &json!(["x"])).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(AdminCommand::parse("query", &json!({"items": 5})).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(
            AdminCommand::parse("query", &json!(["one"])).unwrap(),
            AdminCommand::Query { items: vec!["one".into()], limit: 1000 }
        );
        assert_eq!(AdminCommand::parse("bogus", &json!([])).unwrap_err().code, METHOD_NOT_FOUND);
        assert_eq!(AdminCommand::parse("", &json!([])).unwrap_err().code, INVALID_PARAMS);
    }
}
