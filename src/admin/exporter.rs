//! METRICS_ADDR: `/metrics` in Prometheus's text format, on its own listener and tasks, so a
//! scrape never waits for a session or for the index writer. Gauges that mirror state are
//! sampled here, at scrape time, without waiting for any lock the writer holds: the mempool's
//! size is skipped (kept at its last value) while a flush holds the index.
//!
//! Nothing secret is exported: no daemon URL (only which entry of DAEMON_URL is in use), no
//! addresses, no configuration values.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::AdminContext;

/// Longest a scraper may take to send its request: a half-open connection must not linger.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds METRICS_ADDR and serves scrapes until ferrum stops.
pub async fn start(addr: std::net::SocketAddr, ctx: Arc<AdminContext>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on METRICS_ADDR={addr}; is the port in use?"))?;
    ctx.metrics.set_timed(true);
    tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
    let mut shutdown = ctx.shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accepting a connection failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = crate::stopped(&mut shutdown) => return,
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(ctx.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics endpoint: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn answer(ctx: Arc<AdminContext>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("a valid header value"));
        Ok(r)
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found: ferrum serves /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET /metrics\n".into());
    }
    sample(&ctx);
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&ctx.metrics.registry().gather()) {
        Ok(text) => reply(StatusCode::OK, prometheus::TEXT_FORMAT, text),
        Err(e) => {
            tracing::warn!("metrics endpoint: encoding failed: {e}");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding failed: {e}\n"))
        }
    }
}

/// The gauges that mirror state, read now.
fn sample(ctx: &AdminContext) {
    let m = &ctx.metrics;
    let electrum = &ctx.electrum;
    if let Some((txs, vsize)) = ctx.index.mempool_size_now() {
        m.mempool_txs.set(txs as i64);
        m.mempool_vsize.set(vsize as i64);
    }
    for (table, bytes) in ctx.index.db().table_sizes() {
        m.db_size_bytes.with_label_values(&[table]).set(bytes as i64);
    }
    let now = Instant::now();
    let sessions = electrum.sessions.all();
    let initial = ctx.config.cost.initial_concurrent;
    let throttled = sessions.iter().filter(|s| s.cost.throttle(now).is_none_or(|t| t.concurrency < initial)).count();
    m.sessions_throttled.set(throttled as i64);
    m.requests_pending.set(sessions.iter().map(|s| s.pending.load(Ordering::Relaxed) as i64).sum());
    m.subscriptions
        .with_label_values(&["scripthash"])
        .set(sessions.iter().map(|s| s.subs.load(Ordering::Relaxed) as i64).sum());
    m.subscriptions.with_label_values(&["headers"]).set(electrum.headers_subscribers() as i64);
    m.session_groups.set(electrum.sessions.groups.len() as i64);
    let peers = ctx.peers.counts();
    for status in ["good", "stale", "never", "bad"] {
        m.peers.with_label_values(&[status]).set(peers[status].as_i64().unwrap_or(0));
    }
}
