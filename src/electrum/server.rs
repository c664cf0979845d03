//! The listeners for SERVICES (tcp, ssl, ws, wss): accepting connections within MAX_SESSIONS
//! (the listeners close at the limit and open again below 95% of it, so clients are refused
//! rather than left waiting), the TLS and WebSocket handshakes, one task per session, and the
//! registry of live sessions and their subnet groups that the admin RPC lists and acts on.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::cost::{Groups, SessionCost};
use super::session::{self, SessionStats};
use super::transport::Transport;
use super::Ctx;
use crate::config::{Service, ServiceProtocol};

/// Longest a TLS or WebSocket handshake may take (also bounded by SESSION_TIMEOUT), so
/// half-open connections cannot hold session slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The live sessions and their groups.
pub struct Sessions {
    map: Mutex<HashMap<u64, Arc<SessionStats>>>,
    pub groups: Groups,
    next_id: AtomicU64,
    /// Open connections, counted from accept (before any handshake).
    connections: AtomicUsize,
    connection_closed: Notify,
    /// Woken when the connections reach MAX_SESSIONS, so every listener closes, not only the
    /// one that accepted the last.
    at_limit: Notify,
    /// Log the requests of sessions that connect from now on (admin `log new`).
    log_new: AtomicBool,
}

impl Sessions {
    pub fn new(groups: Groups) -> Sessions {
        Sessions {
            map: Mutex::default(),
            groups,
            next_id: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            connection_closed: Notify::new(),
            at_limit: Notify::new(),
            log_new: AtomicBool::new(false),
        }
    }

    /// Every live session, oldest first.
    pub fn all(&self) -> Vec<Arc<SessionStats>> {
        let mut all: Vec<Arc<SessionStats>> = self.map.lock().expect("lock").values().cloned().collect();
        all.sort_by_key(|s| s.id);
        all
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionStats>> {
        self.map.lock().expect("lock").get(&id).cloned()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn log_new(&self) -> bool {
        self.log_new.load(Ordering::Relaxed)
    }

    pub fn set_log_new(&self, on: bool) {
        self.log_new.store(on, Ordering::Relaxed);
    }
}

/// Binds every client service and starts accepting.
pub async fn listen(ctx: Arc<Ctx>, tls: Option<TlsAcceptor>) -> Result<()> {
    let tls = tls.map(Arc::new);
    let c = &ctx.config;
    let cost = &c.cost;
    let model = if cost.enabled() {
        format!(
            "cost soft limit {}, hard limit {}, 1 per {} bytes, {} requests at once, request sleep {} ms",
            cost.soft,
            cost.hard,
            cost.bandwidth_unit,
            cost.initial_concurrent,
            cost.request_sleep.as_millis()
        )
    } else {
        "cost model off (COST_SOFT_LIMIT=COST_HARD_LIMIT=0)".to_string()
    };
    tracing::info!(
        "session limits: {model}; request timeout {} s, session timeout {} s, MAX_SESSIONS {}, MAX_SEND {}, MAX_RECV {}",
        c.request_timeout.as_secs(),
        c.session_timeout.as_secs(),
        c.max_sessions,
        c.max_send,
        c.max_recv
    );
    for svc in ctx.config.services.iter().filter(|s| s.protocol != ServiceProtocol::Rpc) {
        let listener = bind(svc).await?;
        tracing::info!("serving Electrum clients on {}://{}", svc.protocol.name(), listener.local_addr()?);
        tokio::spawn(accept_loop(ctx.clone(), tls.clone(), listener, svc.clone()));
    }
    Ok(())
}

async fn bind(svc: &Service) -> Result<TcpListener> {
    TcpListener::bind(svc.bind_addr()).await.with_context(|| {
        format!("cannot listen on {}://{} (is another server using the port?)", svc.protocol.name(), svc.bind_addr())
    })
}

async fn accept_loop(ctx: Arc<Ctx>, tls: Option<Arc<TlsAcceptor>>, mut listener: TcpListener, svc: Service) {
    let mut shutdown = ctx.shutdown.clone();
    let max = ctx.config.max_sessions;
    loop {
        if ctx.sessions.connections() >= max {
            // At MAX_SESSIONS the listener closes, so new clients are refused at once (rather
            // than queued in the kernel), and opens again below 95% of it.
            drop(listener);
            ctx.metrics.listeners_closed.set(1);
            tracing::warn!(
                "MAX_SESSIONS={max} reached: stopped listening on {}://{} until at most 95% of it",
                svc.protocol.name(),
                svc.bind_addr()
            );
            loop {
                // Registered before the count is read, so a close in between is not missed.
                let closed = ctx.sessions.connection_closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if ctx.config.resumes_listening(ctx.sessions.connections()) {
                    break;
                }
                tokio::select! {
                    _ = closed => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
            listener = loop {
                match bind(&svc).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!("{e:#}; trying again in a second");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = crate::stopped(&mut shutdown) => return,
                        }
                    }
                }
            };
            ctx.metrics.listeners_closed.set(0);
            tracing::info!("listening again on {}://{}", svc.protocol.name(), svc.bind_addr());
        }
        let at_limit = ctx.sessions.at_limit.notified();
        tokio::pin!(at_limit);
        at_limit.as_mut().enable();
        if ctx.sessions.connections() >= max {
            continue;
        }
        let (stream, peer) = tokio::select! {
            _ = at_limit => continue,
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
        // Several listeners may accept at once: beyond the limit, a connection is refused.
        let before = ctx.sessions.connections.fetch_add(1, Ordering::SeqCst);
        if before >= max {
            ctx.sessions.connections.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        if before + 1 == max {
            ctx.sessions.at_limit.notify_waiters();
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
                Ok(Err(e)) => tracing::debug!("websocket handshake with {} failed: {e}", ctx.show_peer(&peer)),
                Err(_) => tracing::debug!("websocket handshake with {} timed out", ctx.show_peer(&peer)),
            }
        }
        ServiceProtocol::Ssl | ServiceProtocol::Wss => {
            let Some(tls) = tls else { return };
            let started = tokio::time::Instant::now();
            let stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!("TLS handshake with {} failed: {e}", ctx.show_peer(&peer)),
                Err(_) => return tracing::debug!("TLS handshake with {} timed out", ctx.show_peer(&peer)),
            };
            if proto == ServiceProtocol::Ssl {
                serve(ctx, Transport::raw(stream, max_recv), peer, "ssl").await
            } else {
                let left = limit.saturating_sub(started.elapsed());
                let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config));
                match tokio::time::timeout(left, ws).await {
                    Ok(Ok(ws)) => serve(ctx, Transport::Ws(ws), peer, "wss").await,
                    Ok(Err(e)) => tracing::debug!("websocket handshake with {} failed: {e}", ctx.show_peer(&peer)),
                    Err(_) => tracing::debug!("websocket handshake with {} timed out", ctx.show_peer(&peer)),
                }
            }
        }
        ServiceProtocol::Rpc => {}
    }
}

/// A session from handshake to close, registered meanwhile.
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &Ctx,
    mut t: Transport<S>,
    peer: SocketAddr,
    kind: &'static str,
) {
    let id = ctx.sessions.next_id.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let cost = SessionCost::new(Arc::new(ctx.config.cost.clone()), &ctx.sessions.groups, &peer, now);
    let stats = Arc::new(SessionStats::new(id, peer, kind, cost.clone(), ctx.sessions.log_new()));
    ctx.sessions.map.lock().expect("lock").insert(id, stats.clone());
    ctx.metrics.session_opened(kind);
    tracing::debug!("session {id}: {kind} connection from {}", ctx.show_peer(&peer));
    let mut shutdown = ctx.shutdown.clone();
    let why = session::run(ctx, &mut t, &stats, &mut shutdown).await;
    tracing::debug!("session {id} ({}) ended: {why}", ctx.show_peer(&peer));
    let initial = ctx.config.cost.initial_concurrent;
    let throttled = (stats.concurrency.load(Ordering::Relaxed) as f64) < 0.8 * initial as f64;
    if ctx.config.cost.enabled() && throttled && !stats.cut.load(Ordering::Relaxed) {
        if let Some(suppressed) = session::CUT_LOG.allow() {
            let more = if suppressed > 0 { format!(" ({suppressed} more not logged)") } else { String::new() };
            tracing::info!(
                "session {id} ({}) disconnected whilst throttled ({why}); sent {} bytes in {} messages{more}",
                ctx.show_peer(&peer),
                stats.bytes_out.load(Ordering::Relaxed),
                stats.messages_out.load(Ordering::Relaxed)
            );
        }
    }
    ctx.sessions.map.lock().expect("lock").remove(&id);
    cost.close(Instant::now());
    ctx.metrics.session_closed(kind, why.label());
    t.close().await;
}

/// The admin `sessions` rows, as ElectrumX's: [id, flags, peer, client, protocol, cost, extra
/// cost, pending requests, transactions sent, subscriptions, messages received, bytes
/// received, messages sent, bytes sent, seconds connected]. For the log, addresses are hidden
/// under ANON_LOGS; the operator asking over the admin RPC sees them.
pub fn sessions_rows(ctx: &Ctx, for_log: bool) -> Value {
    let now = Instant::now();
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows = ctx.sessions.all().into_iter().map(|s| {
        let (client, protocol) = s.client.lock().expect("lock").clone();
        let client: String = if client.is_empty() { "unknown".into() } else { client.chars().take(17).collect() };
        let protocol = if protocol.is_empty() { super::version::PROTOCOL_MIN.to_string() } else { protocol };
        json!([
            s.id,
            s.flags(),
            if for_log { ctx.show_peer(&s.peer) } else { s.peer.to_string() },
            client,
            protocol,
            s.cost.cost(now),
            s.cost.extra_cost(now),
            n(&s.pending),
            n(&s.txs_sent),
            n(&s.subs),
            n(&s.messages_in),
            n(&s.bytes_in),
            n(&s.messages_out),
            n(&s.bytes_out),
            now.saturating_duration_since(s.started).as_secs_f64(),
        ])
    });
    Value::Array(rows.collect())
}

/// The admin `groups` rows, as ElectrumX's: [name, sessions, their cost, retained cost,
/// pending requests, transactions sent, subscriptions, messages received, bytes received,
/// messages sent, bytes sent].
pub fn groups_rows(ctx: &Ctx) -> Value {
    let now = Instant::now();
    let sessions = ctx.sessions.all();
    let rows = ctx.sessions.groups.all(now).into_iter().map(|g| {
        let members: Vec<&Arc<SessionStats>> =
            sessions.iter().filter(|s| s.cost.group_name() == Some(g.name.as_str())).collect();
        let sum =
            |f: fn(&SessionStats) -> &AtomicU64| members.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<u64>();
        json!([
            g.name,
            members.len(),
            // Summed from 0.0: an empty float sum is -0.0, which prints as "-0".
            members.iter().fold(0.0, |sum, s| sum + s.cost.cost(now)),
            g.retained(now),
            sum(|s| &s.pending),
            sum(|s| &s.txs_sent),
            sum(|s| &s.subs),
            sum(|s| &s.messages_in),
            sum(|s| &s.bytes_in),
            sum(|s| &s.messages_out),
            sum(|s| &s.bytes_out),
        ])
    });
    Value::Array(rows.collect())
}

/// The admin `getinfo` part about sessions, with ElectrumX's keys and ferrum's.
pub fn summary_json(ctx: &Ctx) -> Value {
    let all = ctx.sessions.all();
    let n = |f: fn(&SessionStats) -> u64| all.iter().map(|s| f(s)).sum::<u64>();
    let with_subs = all.iter().filter(|s| s.subs.load(Ordering::Relaxed) > 0).count();
    let subs = n(|s| s.subs.load(Ordering::Relaxed));
    json!({
        "count": all.len(),
        "count with subs_sh": with_subs,
        "count with subs_txo": 0,
        "count with subs_any": with_subs,
        "errors": n(|s| s.errors.load(Ordering::Relaxed)),
        "logged": all.iter().filter(|s| s.logged.load(Ordering::Relaxed)).count(),
        "pending requests": n(|s| s.pending.load(Ordering::Relaxed)),
        "subs_sh": subs,
        "subs_txo": 0,
        "sessions": all.len(),
        "connections": ctx.sessions.connections(),
        "subs": subs,
        "requests": ctx.request_counts().values().sum::<u64>(),
        "notifications": ctx.metrics.notifications(),
    })
}

/// Which sessions a list of admin arguments names: ids, group names, and the special words
/// the command takes (ElectrumX's rules: digits are ids, other words are specials or groups,
/// matched in lower case; the rest is unknown).
pub struct References {
    pub sessions: Vec<Arc<SessionStats>>,
    pub groups: Vec<(String, Vec<Arc<SessionStats>>)>,
    pub specials: BTreeSet<String>,
    pub unknown: Vec<String>,
}

pub fn references(ctx: &Ctx, items: &[String], specials: &[&str]) -> References {
    let all = ctx.sessions.all();
    let mut r = References { sessions: Vec::new(), groups: Vec::new(), specials: BTreeSet::new(), unknown: Vec::new() };
    for item in items {
        if !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()) {
            match item.parse::<u64>().ok().and_then(|id| all.iter().find(|s| s.id == id)) {
                Some(s) if !r.sessions.iter().any(|x| x.id == s.id) => r.sessions.push(s.clone()),
                Some(_) => {}
                None => r.unknown.push(item.clone()),
            }
            continue;
        }
        let lower = item.to_lowercase();
        if specials.contains(&lower.as_str()) {
            r.specials.insert(lower);
        } else if ctx.sessions.groups.get(&lower).is_some() {
            let members = all.iter().filter(|s| s.cost.group_name() == Some(lower.as_str())).cloned().collect();
            if !r.groups.iter().any(|(g, _)| *g == lower) {
                r.groups.push((lower, members));
            }
        } else {
            r.unknown.push(item.clone());
        }
    }
    r
}
