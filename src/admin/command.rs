//! The operator's commands, one type for both ends: `ferrum-rpc` parses them from its command
//! line (clap) and sends them as JSON-RPC; the admin server parses them back from JSON-RPC,
//! positional or named parameters (ElectrumX's `electrumx_rpc` sends them named, with these
//! names).

use clap::Subcommand;
use serde_json::{json, Value};

use crate::jsonrpc::{RpcError, INVALID_PARAMS, METHOD_NOT_FOUND};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AdminCommand {
    /// Heights, sync state, daemon, database, sessions and request counts.
    Getinfo,
    /// One row per connected Electrum session (ElectrumX's table).
    Sessions,
    /// One row per subnet group of sessions, with the cost it carries.
    Groups,
    /// Disconnect sessions: ids, group names (e.g. 203.0.113.0/24), or `all`.
    Disconnect {
        #[arg(required = true)]
        session_ids: Vec<String>,
    },
    /// Toggle logging of sessions' requests: ids, group names, `all`, `none`, or `new`.
    Log {
        #[arg(required = true)]
        session_ids: Vec<String>,
    },
    /// Replace the daemon list (comma-separated DAEMON_URL form); none: back to DAEMON_URL.
    DaemonUrl { daemon_url: Option<String> },
    /// One session's details: client, requests by method, subscriptions, errors.
    InspectSession { session_id: u64 },
    /// History, unspent outputs and balance of addresses, hex scripts or script hashes.
    Query {
        #[arg(required = true)]
        items: Vec<String>,
        /// Most history entries and outputs to show per item.
        #[arg(short, long, default_value_t = 1000)]
        limit: usize,
        /// Answer as JSON objects instead of ElectrumX's lines.
        #[arg(long)]
        json: bool,
    },
    /// Force the index back N blocks with undo data and re-sync (for testing reorg handling).
    Reorg {
        #[arg(default_value_t = 3)]
        count: u32,
    },
    /// Known peer servers: host, status (good/stale/never/bad), ports, versions, last good and
    /// last tried, tries, source, address (ElectrumX's table).
    Peers,
    /// Check a peer server now: "<host> [s<port>] [t<port>]".
    AddPeer { real_name: String },
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

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, RpcError> {
    match v {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>(),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        _ => None,
    }
    .ok_or_else(|| invalid(&format!("expected a list of {what}")))
}

impl AdminCommand {
    pub const NAMES: &'static [&'static str] = &[
        "add_peer",
        "daemon_url",
        "disconnect",
        "getinfo",
        "groups",
        "inspect_session",
        "log",
        "peers",
        "query",
        "query_json",
        "reorg",
        "sessions",
        "stop",
    ];

    pub fn parse(method: &str, params: &Value) -> Result<AdminCommand, RpcError> {
        Ok(match method {
            "getinfo" => AdminCommand::Getinfo,
            "sessions" => AdminCommand::Sessions,
            "groups" => AdminCommand::Groups,
            "stop" => AdminCommand::Stop,
            "peers" => AdminCommand::Peers,
            "add_peer" => AdminCommand::AddPeer {
                real_name: param(params, 0, "real_name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| invalid("real_name must be \"<host> [s<port>] [t<port>]\""))?,
            },
            "disconnect" => {
                AdminCommand::Disconnect { session_ids: strings(param(params, 0, "session_ids"), "session IDs")? }
            }
            "log" => AdminCommand::Log { session_ids: strings(param(params, 0, "session_ids"), "session IDs")? },
            "daemon_url" => AdminCommand::DaemonUrl {
                daemon_url: match param(params, 0, "daemon_url") {
                    None => None,
                    Some(Value::String(s)) if s.trim().is_empty() => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(invalid("daemon_url must be a string")),
                },
            },
            "inspect_session" => AdminCommand::InspectSession {
                session_id: param(params, 0, "session_id")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                    .ok_or_else(|| invalid("session_id must be a session number"))?,
            },
            "reorg" => AdminCommand::Reorg {
                count: match param(params, 0, "count") {
                    None => 3,
                    Some(v) => {
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                            .filter(|&n| n > 0 && n <= u32::MAX as u64)
                            .ok_or_else(|| invalid("count must be a positive integer"))? as u32
                    }
                },
            },
            "query" | "query_json" => {
                let items = strings(param(params, 0, "items"), "addresses, hex scripts or script hashes")?;
                let limit = match param(params, 1, "limit") {
                    None => 1000,
                    Some(v) => v.as_u64().ok_or_else(|| invalid("limit must be a non-negative integer"))? as usize,
                };
                AdminCommand::Query { items, limit, json: method == "query_json" }
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
            AdminCommand::Groups => ("groups", json!({})),
            AdminCommand::Stop => ("stop", json!({})),
            AdminCommand::Peers => ("peers", json!({})),
            AdminCommand::AddPeer { real_name } => ("add_peer", json!({"real_name": real_name})),
            AdminCommand::Disconnect { session_ids } => ("disconnect", json!({"session_ids": session_ids})),
            AdminCommand::Log { session_ids } => ("log", json!({"session_ids": session_ids})),
            AdminCommand::DaemonUrl { daemon_url } => {
                ("daemon_url", json!({"daemon_url": daemon_url.clone().unwrap_or_default()}))
            }
            AdminCommand::InspectSession { session_id } => ("inspect_session", json!({"session_id": session_id})),
            AdminCommand::Reorg { count } => ("reorg", json!({"count": count})),
            AdminCommand::Query { items, limit, json } => {
                (if *json { "query_json" } else { "query" }, json!({"items": items, "limit": limit}))
            }
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
            AdminCommand::Groups,
            AdminCommand::Stop,
            AdminCommand::Peers,
            AdminCommand::AddPeer { real_name: "h.example s50002 t50001".into() },
            AdminCommand::Disconnect { session_ids: vec!["1".into(), "all".into()] },
            AdminCommand::Log { session_ids: vec!["new".into()] },
            AdminCommand::DaemonUrl { daemon_url: None },
            AdminCommand::DaemonUrl { daemon_url: Some("http://u:p@h:1/".into()) },
            AdminCommand::InspectSession { session_id: 12 },
            AdminCommand::Reorg { count: 2 },
            AdminCommand::Query { items: vec!["a".into(), "b".into()], limit: 5, json: false },
            AdminCommand::Query { items: vec!["a".into()], limit: 5, json: true },
        ];
        for c in all {
            let (method, params) = c.to_request();
            assert_eq!(AdminCommand::parse(method, &params).unwrap(), c);
        }
        // What electrumx_rpc sends, as its captured lines show.
        let ex = |m: &str, p: Value| AdminCommand::parse(m, &p).unwrap();
        assert_eq!(
            ex("disconnect", json!({"session_ids": ["1", "99", "all"]})),
            AdminCommand::Disconnect { session_ids: vec!["1".into(), "99".into(), "all".into()] }
        );
        assert_eq!(ex("daemon_url", json!({"daemon_url": ""})), AdminCommand::DaemonUrl { daemon_url: None });
        assert_eq!(
            ex("query", json!({"limit": 5, "items": ["00"]})),
            AdminCommand::Query { items: vec!["00".into()], limit: 5, json: false }
        );
        assert_eq!(ex("reorg", json!([7])), AdminCommand::Reorg { count: 7 });
        assert_eq!(ex("reorg", json!([])), AdminCommand::Reorg { count: 3 });
        let bad = |m: &str, p: Value| AdminCommand::parse(m, &p).unwrap_err().code;
        assert_eq!(bad("reorg", json!([0])), INVALID_PARAMS);
        assert_eq!(bad("reorg", json!(["x"])), INVALID_PARAMS);
        assert_eq!(bad("query", json!({"items": 5})), INVALID_PARAMS);
        assert_eq!(bad("disconnect", json!({"session_ids": [1]})), INVALID_PARAMS);
        assert_eq!(bad("inspect_session", json!({"session_id": "x"})), INVALID_PARAMS);
        assert_eq!(bad("daemon_url", json!({"daemon_url": 5})), INVALID_PARAMS);
        assert_eq!(bad("bogus", json!([])), METHOD_NOT_FOUND);
        assert_eq!(bad("", json!([])), INVALID_PARAMS);
    }
}
