//! The operator's RPC (`rpc://` service): newline-delimited JSON-RPC over TCP, the framing
//! ElectrumX's `electrumx_rpc` uses, so its client works too. It serves from start-up, before
//! the index has caught up, and never waits for the index's lock.

pub mod command;
pub mod exporter;
pub mod query;
pub mod text;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use command::AdminCommand;

use crate::config::{Config, Service};
use crate::electrum;
use crate::index::Index;
use crate::jsonrpc::{
    error_response, parse_message, result_response, Id, Message, RpcError, BAD_REQUEST, INTERNAL_ERROR,
    INVALID_REQUEST, PARSE_ERROR,
};
use crate::metrics::Metrics;
use crate::node::Daemon;
use crate::sync::SyncHandle;
use electrum::server;
use electrum::session::SessionStats;
use electrum::transport::{Incoming, Transport};

/// Longest admin request accepted.
const MAX_LINE: usize = 1_000_000;

/// What the admin commands reach.
pub struct AdminContext {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub index: Arc<Index>,
    pub electrum: Arc<electrum::Ctx>,
    pub daemon: Arc<Daemon>,
    pub sync: SyncHandle,
    pub shutdown: watch::Sender<bool>,
    pub peers: Arc<crate::peers::PeerManager>,
}

pub async fn start(svc: &Service, ctx: Arc<AdminContext>) -> Result<()> {
    let addr = svc.bind_addr();
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen for the admin RPC on {addr} (SERVICES rpc://); is the port in use?"))?;
    tracing::info!("admin RPC listening on {addr}");
    if !ctx.config.log_sessions.is_zero() {
        tokio::spawn(log_sessions(ctx.clone()));
    }
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!("admin RPC accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn serve(stream: TcpStream, ctx: Arc<AdminContext>) {
    let mut t = Transport::raw(stream, MAX_LINE);
    loop {
        let reply = match t.recv().await {
            Incoming::Closed => break,
            Incoming::TooLarge => {
                let _ = t.send(error_response(&Id::null(), &RpcError::new(PARSE_ERROR, "request too large"))).await;
                break;
            }
            Incoming::Message(line) => answer(&ctx, &line).await,
        };
        if t.send(reply).await.is_err() {
            break;
        }
    }
    t.close().await;
}

async fn answer(ctx: &AdminContext, line: &[u8]) -> String {
    let env = match parse_message(line) {
        Err(e) => return error_response(&Id::null(), &e),
        Ok(Message::Batch(_)) => {
            let e = RpcError::new(INVALID_REQUEST, "the admin RPC does not take batches: send one request per line");
            return error_response(&Id::null(), &e);
        }
        Ok(Message::Request(Err((id, e)))) => return error_response(&id, &e),
        Ok(Message::Request(Ok(env))) => env,
    };
    let id = env.id.unwrap_or_else(Id::null);
    let params = env.params.unwrap_or(Value::Null);
    let result = match AdminCommand::parse(&env.method, &params) {
        Ok(command) => run(ctx, command).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => result_response(&id, v),
        Err(e) => error_response(&id, &e),
    }
}

/// An operator's mistake or a refusal, with ElectrumX's code for them.
fn refused(message: impl Into<String>) -> RpcError {
    RpcError::new(BAD_REQUEST, message)
}

async fn run(ctx: &AdminContext, command: AdminCommand) -> Result<Value, RpcError> {
    let internal = |e: String| RpcError::new(INTERNAL_ERROR, e);
    let electrum = &ctx.electrum;
    match command {
        AdminCommand::Getinfo => Ok(getinfo(ctx)),
        AdminCommand::Sessions => Ok(server::sessions_rows(electrum, false)),
        AdminCommand::Groups => Ok(server::groups_rows(electrum)),
        AdminCommand::Disconnect { session_ids } => Ok(Value::from(disconnect(electrum, &session_ids))),
        AdminCommand::Log { session_ids } => Ok(Value::from(log(electrum, &session_ids))),
        AdminCommand::DaemonUrl { daemon_url } => {
            let urls = match daemon_url {
                None => ctx.config.daemon_urls.clone(),
                Some(text) => crate::config::parse_daemon_urls(&text, ctx.config.coin)
                    .map_err(|e| refused(format!("an error occurred: {e}")))?,
            };
            if urls.is_empty() {
                return Err(refused("an error occurred: no daemon URL given"));
            }
            ctx.daemon.set_urls(urls);
            Ok(json!(format!("now using daemon at {}", ctx.daemon.current_url())))
        }
        AdminCommand::InspectSession { session_id } => {
            let s =
                electrum.sessions.get(session_id).ok_or_else(|| refused(format!("no session with id={session_id}")))?;
            Ok(inspect(&s))
        }
        AdminCommand::Stop => {
            tracing::info!("admin requested shutdown");
            let _ = ctx.shutdown.send(true);
            Ok(json!("stopping"))
        }
        AdminCommand::Reorg { count } => ctx.sync.reorg(count).await.map_err(refused),
        AdminCommand::Peers => Ok(Value::Array(ctx.peers.rows())),
        AdminCommand::AddPeer { real_name } => ctx.peers.admin_add(&real_name).map(Value::from).map_err(refused),
        AdminCommand::Query { items, limit, json } => {
            let index = ctx.index.clone();
            let task = tokio::task::spawn_blocking(move || {
                let answer = if json {
                    items.iter().map(|item| query::query_item(&index, item, limit)).collect::<anyhow::Result<Vec<_>>>()
                } else {
                    query::query_lines(&index, &items, limit).map(|lines| lines.into_iter().map(Value::from).collect())
                };
                answer.map(Value::Array).map_err(|e| RpcError::new(crate::jsonrpc::INVALID_PARAMS, format!("{e:#}")))
            });
            crate::join_logged(task.await, "an admin query").unwrap_or_else(|| Err(internal("the query failed".into())))
        }
    }
}

/// `disconnect`: the named sessions, the members of the named groups, or `all`; one line per
/// thing done or not understood, as ElectrumX answers.
fn disconnect(electrum: &electrum::Ctx, items: &[String]) -> Vec<String> {
    let r = server::references(electrum, items, &["all"]);
    let mut lines = Vec::new();
    let mut closing = Vec::new();
    if r.specials.contains("all") {
        lines.push("disconnecting all sessions".to_string());
        closing = electrum.sessions.all();
    } else {
        for s in r.sessions {
            lines.push(format!("disconnecting session {}", s.id));
            closing.push(s);
        }
        for (name, members) in r.groups {
            lines.push(format!("disconnecting group {name}"));
            closing.extend(members);
        }
    }
    lines.extend(r.unknown.iter().map(|u| format!("unknown: {u}")));
    let ids: Vec<String> = closing.iter().map(|s| s.id.to_string()).collect();
    if !ids.is_empty() {
        tracing::info!("admin request to disconnect session ids {}", ids.join(", "));
    }
    for s in closing {
        s.disconnect();
    }
    lines
}

/// `log`: `all` and `none` set every session's request logging (and that of sessions to come),
/// `new` toggles it for sessions to come, and named sessions and group members are toggled.
fn log(electrum: &electrum::Ctx, items: &[String]) -> Vec<String> {
    let r = server::references(electrum, items, &["all", "none", "new"]);
    let sessions = &electrum.sessions;
    let mut lines = Vec::new();
    for (word, on) in [("all", true), ("none", false)] {
        if r.specials.contains(word) {
            for s in sessions.all() {
                s.logged.store(on, Ordering::Relaxed);
            }
            sessions.set_log_new(on);
            lines.push(if on { "logging all sessions" } else { "logging no sessions" }.to_string());
        }
    }
    if r.specials.contains("new") {
        let on = !sessions.log_new();
        sessions.set_log_new(on);
        lines.push(if on { "logging new sessions" } else { "not logging new sessions" }.to_string());
    }
    let mut toggled = std::collections::HashSet::new();
    let members = r.groups.into_iter().flat_map(|(_, m)| m);
    for s in r.sessions.into_iter().chain(members) {
        if toggled.insert(s.id) {
            let on = !s.logged.fetch_xor(true, Ordering::Relaxed);
            lines.push(format!("{} session {}", if on { "logging" } else { "not logging" }, s.id));
        }
    }
    lines.extend(r.unknown.iter().map(|u| format!("unknown: {u}")));
    lines
}

/// `inspect_session`: one session's client, requests by method, subscriptions and errors
/// (ElectrumX's keys), and where it connected from.
fn inspect(s: &SessionStats) -> Value {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counts = s.request_counts.lock().expect("lock").clone();
    let (client, protocol) = s.client.lock().expect("lock").clone();
    json!({
        "client_name": client,
        "protocol": protocol,
        "transport": s.kind,
        "flags": s.flags(),
        "request counts": counts,
        "request total": counts.values().sum::<u64>(),
        "subs_sh": n(&s.subs),
        "subs_txo": 0,
        "errors": n(&s.errors),
        "is_logged": s.logged.load(Ordering::Relaxed),
        "pending requests": n(&s.pending),
        "txs sent": n(&s.txs_sent),
        "conn_time": text::formatted_time(s.started.elapsed().as_secs_f64(), " "),
        "cost": s.cost.cost(std::time::Instant::now()),
        "group": s.cost.group_name(),
    })
}

/// LOG_SESSIONS: the sessions table and getinfo's session numbers in the log, periodically.
async fn log_sessions(ctx: Arc<AdminContext>) {
    let mut shutdown = ctx.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.log_sessions) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        for line in text::sessions_lines(&server::sessions_rows(&ctx.electrum, true)) {
            tracing::info!("{line}");
        }
        tracing::info!("{}", server::summary_json(&ctx.electrum));
    }
}

/// Everything an operator asks first: ElectrumX's keys (so scripts written for `electrumx_rpc
/// getinfo` keep working) and ferrum's.
fn getinfo(ctx: &AdminContext) -> Value {
    let mut info = ctx.metrics.sync_json();
    let c = &ctx.config;
    let electrum = &ctx.electrum;
    // Never wait for the lock: a large initial-sync flush holds it for seconds.
    let mempool = match ctx.index.mempool_size_now() {
        Some((txs, vsize)) => json!({"txs": txs, "vsize": vsize}),
        None => Value::Null,
    };
    // An upgraded database builds its spender index while serving (sync::backfill).
    let spender_index = match ctx.index.spend_backfill_now() {
        Some(None) => json!("complete"),
        Some(Some(b)) => json!({"building": true, "next_height": b.next, "end_height": b.end}),
        None => Value::Null,
    };
    let counts = electrum.request_counts();
    let extra = json!({
        "version": crate::server_version(),
        "coin": c.coin.name,
        "network": c.coin.net.name(),
        "daemon": ctx.daemon.current_url(),
        "daemon height": info["daemon_height"],
        "db height": info["db_height"],
        "daemon_failovers": ctx.metrics.daemon_failovers.get(),
        "daemon_lacks": ctx.daemon.lacking(),
        "db_directory": c.db_dir.display().to_string(),
        "db_size": ctx.index.db().size_estimate(),
        "spender_index": spender_index,
        "peers": ctx.peers.counts(),
        "groups": electrum.sessions.groups.len(),
        "sessions": server::summary_json(electrum),
        "request counts": counts,
        "request total": counts.values().sum::<u64>(),
        "txs sent": ctx.metrics.txs_sent.get(),
        "uptime": text::formatted_time(ctx.metrics.uptime_secs() as f64, " "),
        "mempool": mempool,
        "cache_mb": c.cache_mb,
        "reorg_limit": c.reorg_limit,
        "pid": std::process::id(),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut info, extra) {
        a.extend(b);
    }
    info
}
