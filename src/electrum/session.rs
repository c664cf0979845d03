//! One client session: reads messages and answers them, forwards notifications, and accounts
//! for everything it costs, until the client leaves, idles out, breaks a limit, is
//! disconnected by the operator, or ferrum stops.
//!
//! Requests that only read run concurrently, as many as the session's cost allows (see
//! `cost`), and their answers go out as they finish, matched to ids. Requests that change the
//! session (negotiation, subscriptions) and batches are answered one at a time, after those in
//! flight, so subscriptions and notifications keep their order. Memory stays bounded: a
//! session reads its next message only while it has a free slot, and a client that leaves an
//! answer unread for 30 s is disconnected.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;

use super::cost::{notification_cost, ERROR_COST, PARSE_ERROR_COST};
use super::methods::{answer, answer_session, history_too_large, Accounting, Caller, Reply, SessionState};
use super::request::Request;
pub use super::stats::{Close, SessionStats};
use super::subscriptions::{Event, Notifications, SessionSubs, EVENT_QUEUE};
use super::transport::{Incoming, Transport};
use super::version::Version;
use super::{Ctx, INVALID_METHOD};
use crate::jsonrpc::{
    error_response, finish_response, parse_message, parse_request, result_response, Id, Message, RpcError,
    EXCESSIVE_RESOURCE_USAGE, INVALID_REQUEST, PARSE_ERROR, SERVER_BUSY,
};

/// How long a client may leave a response unread before the session is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What answering one request came to.
struct Answered {
    /// The response line, unless the request was a notification.
    text: Option<String>,
    close: bool,
}

type InFlight<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Answered> + Send + 'a>>>;

/// Runs one client session until it ends; returns why.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ctx: &Ctx,
    t: &mut Transport<S>,
    stats: &SessionStats,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Close {
    let mut s = SessionState {
        id: stats.id,
        peer: stats.peer,
        version: None,
        client: String::new(),
        subs: SessionSubs::default(),
    };
    let mut events = ctx.subs.events();
    let timeout = ctx.config.session_timeout;
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut in_flight: InFlight = FuturesUnordered::new();
    let why = loop {
        let slots = stats.cost.throttle(Instant::now()).map_or(1, |t| t.concurrency);
        stats.concurrency.store(slots, Ordering::Relaxed);
        let reading = in_flight.len() < slots;
        let mut out = Vec::new();
        let mut close = false;
        let mut notice_since = None;
        tokio::select! {
            _ = crate::stopped(shutdown) => break Close::Shutdown,
            _ = stats.close.notified() => break Close::Operator,
            _ = tokio::time::sleep_until(deadline) => break Close::Idle,
            Some(done) = in_flight.next() => {
                out.extend(done.text);
                close = done.close;
            }
            incoming = t.recv(), if reading => match incoming {
                Incoming::Message(text) => {
                    deadline = tokio::time::Instant::now() + timeout;
                    received(ctx, stats, &text);
                    close = message(ctx, stats, &mut s, &mut in_flight, &text, &mut out).await;
                }
                Incoming::TooLarge => {
                    let msg = format!("request larger than MAX_RECV={} bytes", ctx.config.max_recv);
                    let e = RpcError::new(EXCESSIVE_RESOURCE_USAGE, msg);
                    let _ = tokio::time::timeout(SEND_TIMEOUT, t.send(error_response(&Id::null(), &e))).await;
                    break Close::MaxRecv;
                }
                Incoming::Closed => break Close::Client,
            },
            ev = events.recv() => {
                let mut n = match ev {
                    Ok(ev) => ctx.subs.notifications_for(&mut s.subs, &ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => resync(ctx, &mut s, &mut events).await,
                    Err(broadcast::error::RecvError::Closed) => break Close::Shutdown,
                };
                // Events already queued (a block's tip and its statuses) go out in the same write;
                // at most a queue's worth, so a flood cannot hold the write back.
                for _ in 0..EVENT_QUEUE {
                    match events.try_recv() {
                        Ok(ev) => n.append(ctx.subs.notifications_for(&mut s.subs, &ev)),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            n.append(resync(ctx, &mut s, &mut events).await)
                        }
                        Err(_) => break,
                    }
                }
                if !n.texts.is_empty() {
                    notified(stats, &n);
                    notice_since = Some((n.headers, n.texts.len() - n.headers - n.pings, n.since));
                }
                out = n.texts;
            }
        }
        if !out.is_empty() {
            let bytes: usize = out.iter().map(|m| m.len() + 1).sum();
            sent(ctx, stats, out.len(), bytes);
            if !matches!(tokio::time::timeout(SEND_TIMEOUT, t.send_all(out)).await, Ok(Ok(()))) {
                break Close::SendTimeout;
            }
        }
        if let Some((headers, statuses, since)) = notice_since {
            ctx.metrics.notified(headers, statuses, since.map(|at| at.elapsed()));
        }
        if close {
            break if stats.cut.load(Ordering::Relaxed) { Close::ExcessiveCost } else { Close::Error };
        }
    };
    stats.subs.store(0, Ordering::Relaxed);
    ctx.subs.drop_session(&mut s.subs);
    why
}

/// After missing broadcasts: every subscription compared with the index now. The events still
/// queued are older than that comparison, so they are dropped first: replayed after it, they
/// could tell an outdated status last.
async fn resync(ctx: &Ctx, s: &mut SessionState, events: &mut broadcast::Receiver<Arc<Event>>) -> Notifications {
    tracing::debug!("session {} fell behind the notifications; rechecking its subscriptions", s.id);
    *events = events.resubscribe();
    ctx.subs.resync(&mut s.subs).await
}

/// Counts a message in.
fn received(ctx: &Ctx, stats: &SessionStats, text: &[u8]) {
    stats.messages_in.fetch_add(1, Ordering::Relaxed);
    stats.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
    stats.cost.add_bytes(text.len(), Instant::now());
    ctx.metrics.bytes_received.inc_by(text.len() as u64);
    if stats.logged.load(Ordering::Relaxed) {
        tracing::info!(
            "session {} ({}): {}",
            stats.id,
            ctx.show_peer(&stats.peer),
            String::from_utf8_lossy(&text[..text.len().min(2000)])
        );
    }
}

/// Counts messages out.
fn sent(ctx: &Ctx, stats: &SessionStats, messages: usize, bytes: usize) {
    stats.messages_out.fetch_add(messages as u64, Ordering::Relaxed);
    stats.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    stats.cost.add_bytes(bytes, Instant::now());
    ctx.metrics.bytes_sent.inc_by(bytes as u64);
}

/// Notifications cost what computing their statuses would.
fn notified(stats: &SessionStats, n: &Notifications) {
    let statuses = n.texts.len() - n.headers - n.pings;
    stats.cost.add(notification_cost(statuses, n.entries), Instant::now());
}

/// What an answered message was, for the accounting: a request of `method` (`None`: its
/// method was not the protocol's) dispatched at `started`, or (`started` is `None`) a message
/// that was no request at all (not JSON, an empty or oversized batch).
struct Answering {
    method: Option<&'static str>,
    started: Option<Instant>,
}

impl Answering {
    const NOT_A_REQUEST: Answering = Answering { method: None, started: None };
}

/// Counts an answered message: the request and its latency, what it cost, and its error.
fn account(ctx: &Ctx, stats: &SessionStats, what: Answering, acct: Accounting, error: Option<i64>) {
    let now = Instant::now();
    let mut cost = acct.cost;
    let label = what.method.unwrap_or(INVALID_METHOD);
    if let Some(started) = what.started {
        let m = ctx.method_metrics(label);
        m.requests.inc();
        if ctx.metrics.timed() {
            m.seconds.observe(now.saturating_duration_since(started).as_secs_f64());
            m.cost.inc_by(acct.cost);
        }
        *stats.request_counts.lock().expect("lock").entry(label).or_default() += 1;
    }
    if let Some(code) = error {
        cost += ERROR_COST;
        stats.errors.fetch_add(1, Ordering::Relaxed);
        ctx.metrics.request_error(label, code);
    }
    if acct.txs_sent > 0 {
        stats.txs_sent.fetch_add(acct.txs_sent, Ordering::Relaxed);
        ctx.metrics.txs_sent.inc_by(acct.txs_sent);
    }
    if acct.txs_rejected > 0 {
        ctx.metrics.txs_rejected.inc_by(acct.txs_rejected);
    }
    stats.cost.add(cost, now);
}

/// Answers one message: a request that only reads starts in flight; a request that changes the
/// session, or a batch, is answered here after those in flight. Appends what to send to `out`;
/// returns whether to close the session afterwards.
async fn message<'a>(
    ctx: &'a Ctx,
    stats: &'a SessionStats,
    s: &mut SessionState,
    in_flight: &mut InFlight<'a>,
    text: &[u8],
    out: &mut Vec<String>,
) -> bool {
    // Bytes, not text: a message that is not UTF-8 is one more parse error.
    let message = match parse_message(text) {
        Ok(m) => m,
        Err(e) => {
            stats.cost.add(PARSE_ERROR_COST, Instant::now());
            account(ctx, stats, Answering::NOT_A_REQUEST, Accounting::default(), Some(PARSE_ERROR));
            out.push(error_response(&Id::null(), &e));
            return false;
        }
    };
    let started = Instant::now();
    let Some(throttle) = stats.cost.throttle(started) else {
        let id = match &message {
            Message::Request(Ok(env)) => env.id.clone(),
            Message::Request(Err((id, _))) => Some(id.clone()),
            Message::Batch(_) => None,
        };
        return refuse(ctx, stats, id.unwrap_or_else(Id::null), out);
    };
    let parsed = match message {
        Message::Batch(items) => {
            drain(in_flight, out).await;
            throttle_sleep(ctx, throttle.sleep).await;
            let (reply, close) = batch(ctx, stats, s, items).await;
            out.extend(reply);
            return close;
        }
        Message::Request(one) => one.map(|env| {
            let request = Request::parse(&env.method, env.params, s.version);
            (env.id, request)
        }),
    };
    let (id, request) = match parsed {
        Ok((id, Ok(request))) => match s.version {
            Some(version) if !request.changes_session() => {
                in_flight.push(Box::pin(concurrent(ctx, stats, version, id, request, throttle.sleep)));
                return false;
            }
            _ => (id, Ok(request)),
        },
        Ok((id, Err(e))) => (id, Err(e)),
        Err((id, e)) => (Some(id), Err(e)),
    };
    // In order: first what is in flight, then this.
    drain(in_flight, out).await;
    throttle_sleep(ctx, throttle.sleep).await;
    let a = in_order(ctx, stats, s, id, request, started).await;
    out.extend(a.text);
    a.close
}

/// A throttled request's wait. Not even a zero sleep when unthrottled: tokio's timer has a
/// 1 ms tick, so `sleep(0)` would add up to a millisecond to every request.
async fn throttle_sleep(ctx: &Ctx, d: Duration) {
    if !d.is_zero() {
        ctx.metrics.throttle_sleep_seconds.inc_by(d.as_secs_f64());
        tokio::time::sleep(d).await;
    }
}

/// Waits for the requests in flight, collecting their answers.
async fn drain(in_flight: &mut InFlight<'_>, out: &mut Vec<String>) {
    while let Some(done) = in_flight.next().await {
        out.extend(done.text);
    }
}

/// Cut-off lines: at most 10 every 10 s, so an abuser reconnecting in a loop cannot fill the
/// log; the next line logged says how many were left out.
pub static CUT_LOG: LogLimit = LogLimit::new(10, 10);

pub struct LogLimit {
    per_window: u64,
    window_secs: u64,
    window: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    pub const fn new(per_window: u64, window_secs: u64) -> LogLimit {
        LogLimit {
            per_window,
            window_secs,
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log now; if so, how many lines were left out before it.
    pub fn allow(&self) -> Option<u64> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let window = secs / self.window_secs;
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < self.per_window {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Over the hard limit: the request is answered -101 and the session closed (ElectrumX's
/// "excessive resource usage").
fn refuse(ctx: &Ctx, stats: &SessionStats, id: Id, out: &mut Vec<String>) -> bool {
    let groups = stats.cost.group_name().map_or(String::new(), |g| g.to_string());
    if let Some(suppressed) = CUT_LOG.allow() {
        let more = if suppressed > 0 { format!(" ({suppressed} more not logged)") } else { String::new() };
        tracing::info!(
            "closing session {} over res usage. ip: {}. groups: [{groups}]{more}",
            stats.id,
            ctx.show_peer(&stats.peer)
        );
    }
    stats.cut.store(true, Ordering::Relaxed);
    out.push(error_response(&id, &RpcError::new(EXCESSIVE_RESOURCE_USAGE, "excessive resource usage")));
    true
}

/// A request that only reads, run concurrently: waits its throttle's sleep, then answers,
/// all within REQUEST_TIMEOUT.
async fn concurrent(
    ctx: &Ctx,
    stats: &SessionStats,
    version: Version,
    id: Option<Id>,
    request: Request,
    sleep: Duration,
) -> Answered {
    let started = Instant::now();
    stats.pending.fetch_add(1, Ordering::Relaxed);
    let method = request.name();
    let history = request.answers_a_history();
    let mut acct = Accounting { cost: request.base_cost(), ..Accounting::default() };
    let work = async {
        throttle_sleep(ctx, sleep).await;
        answer(ctx, Caller { version, ip: stats.peer.ip() }, request, &mut acct).await
    };
    let result = match tokio::time::timeout(ctx.config.request_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::new(SERVER_BUSY, "server busy - request timed out")),
    };
    stats.pending.fetch_sub(1, Ordering::Relaxed);
    finish(ctx, stats, id, Answering { method: Some(method), started: Some(started) }, history, acct, result)
}

/// Answers a batch one request after another; one reply for all of them. The reply is bounded
/// by MAX_SEND as it grows: once the answers so far pass it, the rest are not even parsed, and
/// the batch is answered with one error.
async fn batch(ctx: &Ctx, stats: &SessionStats, s: &mut SessionState, items: Vec<&RawValue>) -> (Option<String>, bool) {
    if items.is_empty() {
        account(ctx, stats, Answering::NOT_A_REQUEST, Accounting::default(), Some(INVALID_REQUEST));
        return (Some(error_response(&Id::null(), &RpcError::new(INVALID_REQUEST, "empty batch"))), false);
    }
    if items.len() > ctx.config.max_batch {
        account(ctx, stats, Answering::NOT_A_REQUEST, Accounting::default(), Some(INVALID_REQUEST));
        let e = RpcError::new(
            INVALID_REQUEST,
            format!("batch of {} requests is larger than MAX_BATCH={}", items.len(), ctx.config.max_batch),
        );
        return (Some(error_response(&Id::null(), &e)), false);
    }
    let mut reply = String::from("[");
    let mut close = false;
    for item in items {
        let started = Instant::now();
        let a = match parse_request(item) {
            Ok(env) => {
                let request = Request::parse(&env.method, env.params, s.version);
                in_order(ctx, stats, s, env.id, request, started).await
            }
            Err((id, e)) => in_order(ctx, stats, s, Some(id), Err(e), started).await,
        };
        close |= a.close;
        if let Some(r) = a.text {
            if reply.len() > 1 {
                reply.push(',');
            }
            reply.push_str(&r);
        }
        if reply.len() + 1 > ctx.config.max_send {
            account(ctx, stats, Answering::NOT_A_REQUEST, Accounting::default(), Some(EXCESSIVE_RESOURCE_USAGE));
            let e = RpcError::new(
                EXCESSIVE_RESOURCE_USAGE,
                format!("batch response larger than MAX_SEND={}", ctx.config.max_send),
            );
            return (Some(error_response(&Id::null(), &e)), close);
        }
        if close {
            break;
        }
    }
    reply.push(']');
    ((reply.len() > 2).then_some(reply), close)
}

/// A request answered in order, with the session's state at hand.
async fn in_order(
    ctx: &Ctx,
    stats: &SessionStats,
    s: &mut SessionState,
    id: Option<Id>,
    request: Result<Request, RpcError>,
    started: Instant,
) -> Answered {
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let what = Answering { method: None, started: Some(started) };
            return finish(ctx, stats, id, what, false, Accounting::default(), Err(e));
        }
    };
    let (method, history) = (request.name(), request.answers_a_history());
    let mut acct = Accounting { cost: request.base_cost(), ..Accounting::default() };
    let result =
        match tokio::time::timeout(ctx.config.request_timeout, answer_session(ctx, s, request, &mut acct)).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::new(SERVER_BUSY, "server busy - request timed out")),
        };
    stats.subs.store(s.subs.count() as u64, Ordering::Relaxed);
    stats.headers.store(s.subs.headers, Ordering::Relaxed);
    stats.cost.set_subs(s.subs.count(), Instant::now());
    if let Some(v) = s.version {
        let mut client = stats.client.lock().expect("lock");
        if client.1.is_empty() {
            *client = (s.client.clone(), v.to_string());
        }
    }
    finish(ctx, stats, id, Answering { method: Some(method), started: Some(started) }, history, acct, result)
}

/// The response to a request (none for a notification), with what it cost accounted.
fn finish(
    ctx: &Ctx,
    stats: &SessionStats,
    id: Option<Id>,
    what: Answering,
    history: bool,
    acct: Accounting,
    result: Result<Reply, RpcError>,
) -> Answered {
    // A request without an id is a notification: no answer, even to an error.
    let Some(id) = id else {
        let close = result.as_ref().err().is_some_and(|e| e.close);
        account(ctx, stats, what, acct, result.err().map(|e| e.code));
        return Answered { text: None, close };
    };
    let (text, error, close) = match result {
        Ok(reply) => {
            let text = match reply {
                Reply::Value(v) => result_response(&id, v),
                Reply::Response(text) => finish_response(text, &id),
            };
            if text.len() > ctx.config.max_send {
                let e = if history {
                    history_too_large()
                } else {
                    RpcError::new(
                        EXCESSIVE_RESOURCE_USAGE,
                        format!("response larger than MAX_SEND={}", ctx.config.max_send),
                    )
                };
                (error_response(&id, &e), Some(e.code), false)
            } else {
                (text, None, false)
            }
        }
        Err(e) => (error_response(&id, &e), Some(e.code), e.close),
    };
    account(ctx, stats, what, acct, error);
    Answered { text: Some(text), close }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn cut_off_lines_are_limited_and_the_rest_counted() {
        let limit = LogLimit::new(3, 3600);
        assert_eq!((0..3).map(|_| limit.allow()).collect::<Vec<_>>(), [Some(0), Some(0), Some(0)]);
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        // A new window: the first line says how many were left out.
        limit.window.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(2));
        assert_eq!(limit.allow(), Some(0));
    }
}
