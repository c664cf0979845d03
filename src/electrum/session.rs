//! One client session: reads one message at a time (a request or a batch), answers it, and
//! between messages forwards notifications, until the client leaves, idles out, breaks a limit,
//! or ferrum stops. It reads its next request only after writing its last answer, so a client
//! that does not read cannot grow the server's memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;

use super::methods::{answer, Reply, SessionState};
use super::request::Request;
use super::subscriptions::SessionSubs;
use super::transport::{Incoming, Transport};
use super::Ctx;
use crate::jsonrpc::{
    error_response, finish_response, parse_envelope, result_response, RpcError, EXCESSIVE_RESOURCE_USAGE,
    HISTORY_TOO_LARGE, INVALID_REQUEST, PARSE_ERROR, SERVER_BUSY,
};

/// How long a client may leave a response unread before the session is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A session's live numbers, for the admin RPC (and the cost model).
pub struct SessionStats {
    pub id: u64,
    pub peer: SocketAddr,
    pub kind: &'static str,
    pub started: Instant,
    /// Client name and negotiated version, once known.
    pub client: Mutex<(String, String)>,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub subs: AtomicU64,
}

impl SessionStats {
    pub fn new(id: u64, peer: SocketAddr, kind: &'static str) -> SessionStats {
        SessionStats {
            id,
            peer,
            kind,
            started: Instant::now(),
            client: Mutex::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            subs: AtomicU64::new(0),
        }
    }
}

/// What answering one request came to.
struct Answered {
    /// The response line, unless the request was a notification.
    text: Option<String>,
    failed: bool,
    close: bool,
}

/// Runs one client session until it ends; returns why.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &Ctx,
    t: &mut Transport<S>,
    stats: &SessionStats,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> &'static str {
    let mut s = SessionState { id: stats.id, version: None, client: String::new(), subs: SessionSubs::default() };
    let mut events = ctx.subs.events();
    let timeout = ctx.config.session_timeout;
    let mut deadline = tokio::time::Instant::now() + timeout;
    let why = loop {
        let out: Vec<String>;
        let mut close = false;
        tokio::select! {
            _ = crate::stopped(shutdown) => break "server shutting down",
            _ = tokio::time::sleep_until(deadline) => break "idle for SESSION_TIMEOUT",
            incoming = t.recv() => match incoming {
                Incoming::Message(text) => {
                    deadline = tokio::time::Instant::now() + timeout;
                    let (reply, errors, c) = handle_message(ctx, &mut s, &text).await;
                    record(ctx, stats, &s, text.len(), reply.as_ref().map_or(0, String::len), errors);
                    close = c;
                    out = reply.into_iter().collect();
                }
                Incoming::TooLarge => {
                    let msg = format!("request larger than MAX_RECV={} bytes", ctx.config.max_recv);
                    let e = RpcError::new(EXCESSIVE_RESOURCE_USAGE, msg);
                    let _ = tokio::time::timeout(SEND_TIMEOUT, t.send(error_response(&Value::Null, &e))).await;
                    break "request larger than MAX_RECV";
                }
                Incoming::Closed => break "closed by the client",
            },
            ev = events.recv() => {
                out = match ev {
                    Ok(ev) => ctx.subs.notifications_for(&mut s.subs, &ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!("session {} fell behind the notifications; rechecking its subscriptions", s.id);
                        ctx.subs.resync(&mut s.subs).await
                    }
                    Err(broadcast::error::RecvError::Closed) => break "server shutting down",
                };
                ctx.metrics.notifications.inc_by(out.len() as u64);
                record(ctx, stats, &s, 0, out.iter().map(String::len).sum(), 0);
            }
        }
        let failed =
            !out.is_empty() && !matches!(tokio::time::timeout(SEND_TIMEOUT, t.send_all(out)).await, Ok(Ok(())));
        if failed {
            break "the client stopped reading";
        }
        if close {
            break "closed after an error";
        }
    };
    ctx.subs.drop_session(&mut s.subs);
    why
}

/// Counts a message in and the answer or notifications out.
fn record(ctx: &Ctx, stats: &SessionStats, s: &SessionState, bytes_in: usize, bytes_out: usize, errors: u64) {
    if bytes_in > 0 {
        stats.requests.fetch_add(1, Ordering::Relaxed);
    }
    stats.errors.fetch_add(errors, Ordering::Relaxed);
    stats.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
    stats.bytes_out.fetch_add(bytes_out as u64, Ordering::Relaxed);
    stats.subs.store(s.subs.scripts.len() as u64, Ordering::Relaxed);
    ctx.metrics.request_errors.inc_by(errors);
    ctx.metrics.bytes_received.inc_by(bytes_in as u64);
    ctx.metrics.bytes_sent.inc_by(bytes_out as u64);
    if let Some(v) = s.version {
        let mut client = stats.client.lock().expect("lock");
        if client.1.is_empty() {
            *client = (s.client.clone(), v.to_string());
        }
    }
}

/// Answers one message (a request or a batch): the reply to send, if any, the number of
/// errors, and whether to close the connection afterwards.
async fn handle_message(ctx: &Ctx, s: &mut SessionState, text: &[u8]) -> (Option<String>, u64, bool) {
    // Bytes, not text: a message that is not UTF-8 is one more parse error.
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            let e = RpcError::new(PARSE_ERROR, format!("invalid JSON: {e}"));
            return (Some(error_response(&Value::Null, &e)), 1, false);
        }
    };
    let items = match value {
        Value::Array(items) => items,
        other => {
            let a = handle_one(ctx, s, other).await;
            return (a.text, a.failed as u64, a.close);
        }
    };
    if items.is_empty() {
        return (Some(error_response(&Value::Null, &RpcError::new(INVALID_REQUEST, "empty batch"))), 1, false);
    }
    if items.len() > ctx.config.max_batch {
        let e = RpcError::new(
            INVALID_REQUEST,
            format!("batch of {} requests is larger than MAX_BATCH={}", items.len(), ctx.config.max_batch),
        );
        return (Some(error_response(&Value::Null, &e)), 1, false);
    }
    let mut parts = Vec::new();
    let (mut errors, mut close, mut size) = (0, false, 2usize);
    for item in items {
        let a = handle_one(ctx, s, item).await;
        errors += a.failed as u64;
        close |= a.close;
        if let Some(r) = a.text {
            size += r.len() + 1;
            parts.push(r);
        }
        if close {
            break;
        }
    }
    if size > ctx.config.max_send {
        let e = RpcError::new(
            EXCESSIVE_RESOURCE_USAGE,
            format!("batch response larger than MAX_SEND={}", ctx.config.max_send),
        );
        return (Some(error_response(&Value::Null, &e)), errors + 1, close);
    }
    let reply = (!parts.is_empty()).then(|| format!("[{}]", parts.join(",")));
    (reply, errors, close)
}

/// One request of a message.
async fn handle_one(ctx: &Ctx, s: &mut SessionState, request: Value) -> Answered {
    ctx.metrics.requests.inc();
    let env = match parse_envelope(request) {
        Ok(env) => env,
        Err((id, e)) => return Answered { text: Some(error_response(&id, &e)), failed: true, close: false },
    };
    let request = Request::parse(&env.method, env.params, s.version);
    let history = request.as_ref().is_ok_and(Request::answers_a_history);
    let result = match request {
        Ok(request) => match tokio::time::timeout(ctx.config.request_timeout, answer(ctx, s, request)).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::new(SERVER_BUSY, "server busy: the request timed out")),
        },
        Err(e) => Err(e),
    };
    // A request without an id is a notification: no answer, even to an error.
    let Some(id) = env.id else {
        let close = result.as_ref().err().is_some_and(|e| e.close);
        return Answered { text: None, failed: result.is_err(), close };
    };
    match result {
        Ok(reply) => {
            let text = match reply {
                Reply::Value(v) => result_response(&id, v),
                Reply::Response(text) => finish_response(text, &id),
            };
            if text.len() > ctx.config.max_send {
                let e = if history {
                    RpcError::new(HISTORY_TOO_LARGE, "history too large")
                } else {
                    RpcError::new(
                        EXCESSIVE_RESOURCE_USAGE,
                        format!("response larger than MAX_SEND={}", ctx.config.max_send),
                    )
                };
                return Answered { text: Some(error_response(&id, &e)), failed: true, close: false };
            }
            Answered { text: Some(text), failed: false, close: false }
        }
        Err(e) => Answered { text: Some(error_response(&id, &e)), failed: true, close: e.close },
    }
}
