//! The operator's RPC (`rpc://` service): newline-delimited JSON-RPC over TCP, the framing
//! ElectrumX's `electrumx_rpc` uses, so its client works too. Parameters may be positional
//! (`[3]`) or named (`{"count": 3}`, as electrumx_rpc sends them).

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, Service};
use crate::daemon::Daemon;
use crate::index::Index;
use crate::session::Manager;
use crate::status::Status;

/// Admin requests that the controller carries out (they change the index).
pub enum AdminRequest {
    Reorg { count: u32, reply: oneshot::Sender<Result<Value, String>> },
}

pub struct AdminContext {
    pub config: Arc<Config>,
    pub status: Arc<Status>,
    pub index: Arc<Index>,
    pub sessions: Arc<Manager>,
    pub daemon: Arc<Daemon>,
    pub requests: mpsc::Sender<AdminRequest>,
    pub shutdown: watch::Sender<bool>,
}

const MAX_LINE: u64 = 1_000_000;
const INVALID_PARAMS: i64 = -32602;
const METHOD_NOT_FOUND: i64 = -32601;
const PARSE_ERROR: i64 = -32700;
const INTERNAL: i64 = -32603;
const INVALID_REQUEST: i64 = -32600;

type RpcResult = Result<Value, (i64, String)>;

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
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, ctx).await {
                            tracing::debug!("admin connection ended: {e}");
                        }
                    });
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

async fn serve(stream: TcpStream, ctx: Arc<AdminContext>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let n = tokio::io::AsyncReadExt::take(&mut reader, MAX_LINE).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n as u64 >= MAX_LINE {
            let reply =
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": PARSE_ERROR, "message": "request too large"}});
            write.write_all(format!("{reply}\n").as_bytes()).await?;
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match serde_json::from_slice::<Value>(&line) {
            Err(e) => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": PARSE_ERROR, "message": format!("invalid JSON: {e}")}})
            }
            Ok(Value::Array(_)) => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": INVALID_REQUEST, "message": "the admin RPC does not take batches: send one request per line"}})
            }
            Ok(req) => {
                let id = req.get("id").cloned().unwrap_or(Value::Null);
                let method = req.get("method").and_then(Value::as_str).unwrap_or("").to_string();
                let params = req.get("params").cloned().unwrap_or(Value::Null);
                match dispatch(&ctx, &method, &params).await {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    Err((code, message)) => {
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                    }
                }
            }
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
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

async fn dispatch(ctx: &AdminContext, method: &str, params: &Value) -> RpcResult {
    match method {
        "getinfo" => Ok(getinfo(ctx)),
        "stop" => {
            tracing::info!("admin requested shutdown");
            let _ = ctx.shutdown.send(true);
            Ok(json!("stopping"))
        }
        "reorg" => {
            let count = match param(params, 0, "count") {
                None => 3,
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0 && n <= u32::MAX as u64)
                    .ok_or((INVALID_PARAMS, "count must be a positive integer".to_string()))?
                    as u32,
            };
            let (tx, rx) = oneshot::channel();
            ctx.requests
                .send(AdminRequest::Reorg { count, reply: tx })
                .await
                .map_err(|_| (INTERNAL, "ferrum is shutting down".to_string()))?;
            match tokio::time::timeout(crate::controller::ADMIN_WAIT, rx).await {
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err((INTERNAL, e)),
                Ok(Err(_)) => Err((INTERNAL, "ferrum is shutting down".to_string())),
                Err(_) => Err((INTERNAL, "timed out waiting for the reorg".to_string())),
            }
        }
        "query" => {
            let items: Vec<String> = match param(params, 0, "items") {
                Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>(),
                Some(Value::String(s)) => Some(vec![s.clone()]),
                _ => None,
            }
            .ok_or((INVALID_PARAMS, "items must be a list of addresses, hex scripts or script hashes".to_string()))?;
            let limit = match param(params, 1, "limit") {
                None => 1000,
                Some(v) => {
                    v.as_u64().ok_or((INVALID_PARAMS, "limit must be a non-negative integer".to_string()))? as usize
                }
            };
            let index = ctx.index.clone();
            tokio::task::spawn_blocking(move || {
                items
                    .iter()
                    .map(|item| {
                        crate::query::query_item(&index, item, limit).map_err(|e| (INVALID_PARAMS, format!("{e:#}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            })
            .await
            .map_err(|e| (INTERNAL, e.to_string()))?
        }
        "sessions" => Ok(ctx.sessions.sessions_json()),
        "" => Err((INVALID_PARAMS, "missing method".to_string())),
        other => {
            Err((METHOD_NOT_FOUND, format!("unknown method {other:?}; known: getinfo, query, reorg, sessions, stop")))
        }
    }
}

fn getinfo(ctx: &AdminContext) -> Value {
    let mut info = ctx.status.to_json();
    let c = &ctx.config;
    // Never wait for the lock: a large initial-sync flush holds it for seconds.
    let mempool = match ctx.index.live.try_read() {
        Ok(live) => json!({"txs": live.mempool.len(), "vsize": live.mempool.vsize()}),
        Err(_) => Value::Null,
    };
    let extra = json!({
        "version": crate::server_version(),
        "coin": c.coin.name,
        "network": c.coin.net.name(),
        "daemon": ctx.daemon.current_url(),
        "daemon_failovers": ctx.daemon.failovers.load(std::sync::atomic::Ordering::Relaxed),
        "db_directory": c.db_dir.display().to_string(),
        "db_size": ctx.index.db.size_estimate(),
        "sessions": ctx.sessions.summary_json(),
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
