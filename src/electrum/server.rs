//! The listeners for SERVICES (tcp, ssl, ws, wss): accepting connections within MAX_SESSIONS,
//! the TLS and WebSocket handshakes, one task per session, and the registry of live sessions
//! the admin RPC lists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::session::{self, SessionStats};
use super::transport::Transport;
use super::Ctx;
use crate::config::{Service, ServiceProtocol};

/// Longest a TLS or WebSocket handshake may take (also bounded by SESSION_TIMEOUT), so
/// half-open connections cannot hold session slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The live sessions, for the admin RPC.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, Arc<SessionStats>>>,
    next_id: AtomicU64,
    /// Open connections, counted from accept (before any handshake).
    connections: AtomicUsize,
    connection_closed: Notify,
}

impl Sessions {
    /// The admin `getinfo` part about sessions.
    pub fn summary_json(&self, ctx: &Ctx) -> Value {
        let map = self.map.lock().expect("lock");
        json!({
            "sessions": map.len(),
            "connections": self.connections.load(Ordering::Relaxed),
            "subs": map.values().map(|s| s.subs.load(Ordering::Relaxed)).sum::<u64>(),
            "requests": ctx.metrics.requests.get(),
            "notifications": ctx.metrics.notifications.get(),
            "errors": map.values().map(|s| s.errors.load(Ordering::Relaxed)).sum::<u64>(),
        })
    }

    /// The admin `sessions` answer: one row per session.
    pub fn sessions_json(&self) -> Value {
        let map = self.map.lock().expect("lock");
        let mut rows: Vec<&Arc<SessionStats>> = map.values().collect();
        rows.sort_by_key(|s| s.id);
        Value::Array(
            rows.into_iter()
                .map(|s| {
                    let (client, protocol) = s.client.lock().expect("lock").clone();
                    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    json!({
                        "id": s.id, "kind": s.kind, "peer": s.peer.to_string(), "client": client,
                        "protocol": protocol, "subs": n(&s.subs), "requests": n(&s.requests), "errors": n(&s.errors),
                        "bytes_in": n(&s.bytes_in), "bytes_out": n(&s.bytes_out), "seconds": s.started.elapsed().as_secs(),
                    })
                })
                .collect(),
        )
    }
}

/// Binds every client service and starts accepting.
pub async fn listen(ctx: Arc<Ctx>, tls: Option<TlsAcceptor>) -> Result<()> {
    let tls = tls.map(Arc::new);
    for svc in ctx.config.services.iter().filter(|s| s.protocol != ServiceProtocol::Rpc) {
        let listener = TcpListener::bind(svc.bind_addr()).await.with_context(|| {
            format!(
                "cannot listen on {}://{} (is another server using the port?)",
                svc.protocol.name(),
                svc.bind_addr()
            )
        })?;
        tracing::info!("serving Electrum clients on {}://{}", svc.protocol.name(), listener.local_addr()?);
        tokio::spawn(accept_loop(ctx.clone(), tls.clone(), listener, svc.clone()));
    }
    Ok(())
}

async fn accept_loop(ctx: Arc<Ctx>, tls: Option<Arc<TlsAcceptor>>, listener: TcpListener, svc: Service) {
    let mut shutdown = ctx.shutdown.clone();
    let sessions = &ctx.sessions;
    let max = ctx.config.max_sessions;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: wait a moment rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => return,
        };
        // At MAX_SESSIONS this connection waits (and the listener with it, so later ones
        // stay in the kernel's backlog) until the count is below 95% of the limit.
        while sessions.connections.fetch_add(1, Ordering::SeqCst) >= max {
            sessions.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("MAX_SESSIONS={max} reached: not accepting connections until below 95% of it");
            loop {
                // Registered before the count is read, so a close in between is not missed.
                let closed = sessions.connection_closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if ctx.config.below_session_resume(sessions.connections.load(Ordering::SeqCst)) {
                    break;
                }
                tokio::select! {
                    _ = closed => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
            tracing::info!("accepting connections again");
        }
        ctx.metrics.connections.inc();
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let proto = svc.protocol;
        tokio::spawn(async move {
            connection(&ctx, tls.as_deref(), stream, peer, proto).await;
            ctx.sessions.connections.fetch_sub(1, Ordering::SeqCst);
            ctx.metrics.connections.dec();
            ctx.sessions.connection_closed.notify_waiters();
        });
    }
}

async fn connection(
    ctx: &Arc<Ctx>,
    tls: Option<&TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    proto: ServiceProtocol,
) {
    let ws_config = WebSocketConfig {
        max_message_size: Some(ctx.config.max_recv),
        max_frame_size: Some(ctx.config.max_recv),
        ..Default::default()
    };
    let limit = HANDSHAKE_TIMEOUT.min(ctx.config.session_timeout);
    let max_recv = ctx.config.max_recv;
    match proto {
        ServiceProtocol::Tcp => serve(ctx, Transport::raw(stream, max_recv), peer, "tcp").await,
        ServiceProtocol::Ws => {
            match tokio::time::timeout(limit, tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)))
                .await
            {
                Ok(Ok(ws)) => serve(ctx, Transport::Ws(ws), peer, "ws").await,
                Ok(Err(e)) => tracing::debug!("websocket handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("websocket handshake with {peer} timed out"),
            }
        }
        ServiceProtocol::Ssl | ServiceProtocol::Wss => {
            let Some(tls) = tls else { return };
            let started = tokio::time::Instant::now();
            let stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
                Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
            };
            if proto == ServiceProtocol::Ssl {
                serve(ctx, Transport::raw(stream, max_recv), peer, "ssl").await
            } else {
                let left = limit.saturating_sub(started.elapsed());
                let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config));
                match tokio::time::timeout(left, ws).await {
                    Ok(Ok(ws)) => serve(ctx, Transport::Ws(ws), peer, "wss").await,
                    Ok(Err(e)) => tracing::debug!("websocket handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("websocket handshake with {peer} timed out"),
                }
            }
        }
        ServiceProtocol::Rpc => {}
    }
}

/// A session from handshake to close, registered for the admin RPC meanwhile.
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &Ctx,
    mut t: Transport<S>,
    peer: SocketAddr,
    kind: &'static str,
) {
    let id = ctx.sessions.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let stats = Arc::new(SessionStats::new(id, peer, kind));
    ctx.sessions.map.lock().expect("lock").insert(id, stats.clone());
    ctx.metrics.sessions.inc();
    tracing::debug!("session {id}: {kind} connection from {peer}");
    let mut shutdown = ctx.shutdown.clone();
    let why = session::run(ctx, &mut t, &stats, &mut shutdown).await;
    tracing::debug!("session {id} ({peer}) ended: {why}");
    ctx.sessions.map.lock().expect("lock").remove(&id);
    ctx.metrics.sessions.dec();
    t.close().await;
}
