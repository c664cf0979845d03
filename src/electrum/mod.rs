//! Serving Electrum wallets: the listeners and sessions (`server`, `session`, `stats`,
//! `transport`), requests parsed once (`request`, `version`) and answered (`methods`,
//! `outpoints`, `broadcast`, `daemon_info`), and subscriptions with their notifications
//! (`subscriptions`).

mod broadcast;
pub mod cost;
mod daemon_info;
mod methods;
mod notifier;
mod outpoints;
pub mod request;
pub mod server;
pub mod session;
pub mod stats;
pub mod subscriptions;
pub mod transport;
pub mod version;

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

pub use daemon_info::features;
pub use server::Sessions;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::Config;
use crate::index::{Index, Snapshot};
use crate::jsonrpc::{RpcError, INTERNAL_ERROR};
use crate::metrics::{MethodMetrics, Metrics};
use crate::node::Daemon;
use daemon_info::DaemonInfo;
use subscriptions::Subscriptions;

/// What sessions ask of peer discovery, which comes after this layer (`peers`) and is
/// plugged in by `app` once it runs; until then the lists are empty and add_peer is refused.
pub trait PeerDirectory: Send + Sync {
    /// `server.peers.subscribe` for a session from `caller`.
    fn peers_subscribe(&self, caller: std::net::IpAddr) -> serde_json::Value;
    /// `server.add_peer(features)` from `caller`: whether it was taken.
    fn add_peer<'a>(
        &'a self,
        features: serde_json::Value,
        caller: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
    /// Whether `caller` is our Tor proxy (the session came over Tor).
    fn via_tor(&self, caller: std::net::IpAddr) -> bool;
}

/// What every session shares: configuration, the index, the daemon, subscriptions, numbers.
pub struct Ctx {
    pub config: Arc<Config>,
    pub index: Arc<Index>,
    daemon: DaemonInfo,
    subs: Arc<Subscriptions>,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
    mempool_wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    /// Each method's counters, resolved once (unknown methods count as "invalid method").
    method_metrics: HashMap<&'static str, MethodMetrics>,
    peers: std::sync::OnceLock<Arc<dyn PeerDirectory>>,
}

impl Ctx {
    /// Runs a read of one consistent snapshot off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<T, RpcError> + Send + 'static,
    ) -> Result<T, RpcError> {
        let index = self.index.clone();
        let task = tokio::task::spawn_blocking(move || f(&index.snapshot()));
        crate::join_logged(task.await, "a request")
            .unwrap_or_else(|| Err(RpcError::new(INTERNAL_ERROR, "internal error")))
    }

    /// The most confirmed history entries an answer may carry: more could not fit in MAX_SEND
    /// (each entry takes at least ~95 bytes of JSON).
    fn history_limit(&self) -> usize {
        history_limit(&self.config)
    }

    /// Plugs in peer discovery.
    pub fn set_peers(&self, peers: Arc<dyn PeerDirectory>) {
        let _ = self.peers.set(peers);
    }

    fn peers(&self) -> Option<&Arc<dyn PeerDirectory>> {
        self.peers.get()
    }

    /// Whether a session from `ip` came through our Tor proxy.
    fn via_tor(&self, ip: std::net::IpAddr) -> bool {
        self.peers().is_some_and(|p| p.via_tor(ip))
    }

    /// A broadcast went to the daemon: mirror its mempool now.
    fn wake_mempool(&self) {
        self.mempool_wakeup.notify_one();
    }

    /// A peer's address as logs and the admin RPC show it: hidden with ANON_LOGS.
    pub fn show_peer(&self, peer: &SocketAddr) -> String {
        if self.config.anon_logs {
            "xx.xx.xx.xx:xx".to_string()
        } else {
            peer.to_string()
        }
    }

    /// Sessions subscribed to the headers.
    pub fn headers_subscribers(&self) -> usize {
        self.sessions.all().iter().filter(|s| s.headers.load(std::sync::atomic::Ordering::Relaxed)).count()
    }

    /// Requests answered since start, by method (those asked at least once).
    pub fn request_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.method_metrics.iter().map(|(m, c)| (*m, c.requests.get())).filter(|(_, n)| *n > 0).collect()
    }

    /// The counters of `method` (a protocol method name, or `INVALID_METHOD`).
    fn method_metrics(&self, method: &'static str) -> &MethodMetrics {
        self.method_metrics.get(method).unwrap_or_else(|| &self.method_metrics[INVALID_METHOD])
    }
}

/// The label of requests whose method is not the protocol's (ElectrumX's name for them).
pub const INVALID_METHOD: &str = "invalid method";

fn history_limit(config: &Config) -> usize {
    config.max_send / 95
}

/// The Electrum service: made at start-up (so a bad certificate stops ferrum at once), serving
/// once the index has caught up with the daemon, as ElectrumX does.
pub struct Server {
    ctx: Arc<Ctx>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        index: Arc<Index>,
        daemon: Arc<Daemon>,
        metrics: Arc<Metrics>,
        mempool_wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Server> {
        let tls = match (&config.ssl_certfile, &config.ssl_keyfile) {
            (Some(cert), Some(key)) => Some(transport::tls_acceptor(cert, key)?),
            _ => None,
        };
        let subs = Subscriptions::new(index.clone(), history_limit(&config));
        let method_metrics = request::Request::NAMES
            .iter()
            .chain(std::iter::once(&INVALID_METHOD))
            .map(|m| (*m, metrics.method(m)))
            .collect();
        let ctx = Ctx {
            daemon: DaemonInfo::new(daemon, &config),
            sessions: Sessions::new(cost::Groups::new(Arc::new(config.cost.clone()))),
            config,
            index,
            subs,
            metrics,
            mempool_wakeup,
            shutdown,
            method_metrics,
            peers: std::sync::OnceLock::new(),
        };
        Ok(Server { ctx: Arc::new(ctx), tls })
    }

    /// The context sessions share, for the admin RPC's views of them.
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Starts notifications and binds every client service.
    pub async fn start(&self) -> Result<()> {
        self.ctx.subs.start();
        server::listen(self.ctx.clone(), self.tls.clone()).await
    }
}
