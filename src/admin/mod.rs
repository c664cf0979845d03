//! The operator's RPC (`rpc://` service): newline-delimited JSON-RPC over TCP, the framing
//! ElectrumX's `electrumx_rpc` uses, so its client works too. It serves from start-up, before
//! the index has caught up, and never waits for the index's lock.

pub mod command;
pub mod query;

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
    error_response, parse_envelope, result_response, RpcError, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR,
};
use crate::metrics::Metrics;
use crate::node::Daemon;
use crate::sync::SyncHandle;
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
}

pub async fn start(svc: &Service, ctx: Arc<AdminContext>) -> Result<()> {
    let addr = svc.bind_addr();
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen for the admin RPC on {addr} (SERVICES rpc://); is the port in use?"))?;
    tracing::info!("admin RPC listening on {addr}");
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
                let _ = t.send(error_response(&Value::Null, &RpcError::new(PARSE_ERROR, "request too large"))).await;
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
    let request = match serde_json::from_slice::<Value>(line) {
        Err(e) => return error_response(&Value::Null, &RpcError::new(PARSE_ERROR, format!("invalid JSON: {e}"))),
        Ok(Value::Array(_)) => {
            let e = RpcError::new(INVALID_REQUEST, "the admin RPC does not take batches: send one request per line");
            return error_response(&Value::Null, &e);
        }
        Ok(v) => v,
    };
    let env = match parse_envelope(request) {
        Ok(env) => env,
        Err((id, e)) => return error_response(&id, &e),
    };
    let id = env.id.unwrap_or(Value::Null);
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

async fn run(ctx: &AdminContext, command: AdminCommand) -> Result<Value, RpcError> {
    let internal = |e: String| RpcError::new(INTERNAL_ERROR, e);
    match command {
        AdminCommand::Getinfo => Ok(getinfo(ctx)),
        AdminCommand::Sessions => Ok(ctx.electrum.sessions.sessions_json()),
        AdminCommand::Stop => {
            tracing::info!("admin requested shutdown");
            let _ = ctx.shutdown.send(true);
            Ok(json!("stopping"))
        }
        AdminCommand::Reorg { count } => ctx.sync.reorg(count).await.map_err(internal),
        AdminCommand::Query { items, limit } => {
            let index = ctx.index.clone();
            let task = tokio::task::spawn_blocking(move || {
                items
                    .iter()
                    .map(|item| {
                        query::query_item(&index, item, limit)
                            .map_err(|e| RpcError::new(crate::jsonrpc::INVALID_PARAMS, format!("{e:#}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            });
            crate::join_logged(task.await, "an admin query").unwrap_or_else(|| Err(internal("the query failed".into())))
        }
    }
}

fn getinfo(ctx: &AdminContext) -> Value {
    let mut info = ctx.metrics.sync_json();
    let c = &ctx.config;
    // Never wait for the lock: a large initial-sync flush holds it for seconds.
    let mempool = match ctx.index.mempool_size_now() {
        Some((txs, vsize)) => json!({"txs": txs, "vsize": vsize}),
        None => Value::Null,
    };
    let extra = json!({
        "version": crate::server_version(),
        "coin": c.coin.name,
        "network": c.coin.net.name(),
        "daemon": ctx.daemon.current_url(),
        "daemon_failovers": ctx.metrics.daemon_failovers.get(),
        "daemon_lacks": ctx.daemon.lacking(),
        "db_directory": c.db_dir.display().to_string(),
        "db_size": ctx.index.db().size_estimate(),
        "sessions": ctx.electrum.sessions.summary_json(&ctx.electrum),
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
