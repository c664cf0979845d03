//! Peer discovery: finding other Electrum servers, checking them ourselves, telling wallets
//! about the good ones (`server.peers.subscribe`) and telling servers about us
//! (`server.add_peer`), over clearnet and through Tor.
//!
//! The peer table lives here (`PeerManager`), persisted in DB_DIRECTORY/peers.json; each
//! check is `check::check` over `connect`; `peer` holds the naming and bucket rules. Sessions
//! reach it through `electrum::PeerDirectory`, the operator through the admin RPC. Nothing
//! here can stop the server: every failure is a peer's, logged and retried later.

mod check;
mod connect;
mod listing;
pub mod peer;
mod persist;
mod proxy;
mod report;

pub use connect::tls_client_config;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::{Config, Discovery, ServiceProtocol};
use crate::index::Index;
use check::{Ours, Outcome};
use connect::Route;
use peer::{is_public_host, Peer};

/// A peer is listed for this long after its last good check (ElectrumX's STALE_SECS).
const STALE_SECS: u64 = 3 * 3600;
/// Back-off base: the n-th failure in a row waits this × 2^n.
const RETRY_SECS: u64 = 300;
/// One add_peer per registrable domain per this long.
const ADD_PEER_SECS: u64 = 600;
/// Onion add_peers: one per random window of up to this long.
const ONION_ADD_SECS: u64 = 1200;
/// The blacklist is read again this often.
const BLACKLIST_SECS: u64 = 600;
/// Checks at once, and the gap between new outgoing connections: discovery is never a scan.
const CONCURRENT_CHECKS: usize = 8;
const CONNECT_GAP: Duration = Duration::from_millis(100);
/// New peers taken from one peer's list per check (seeds and the operator's are not limited).
const NEW_PER_LIST: usize = 2;
/// Per-request timeout of a check, and through Tor.
const TIMEOUT: Duration = Duration::from_secs(30);
const TOR_TIMEOUT: Duration = Duration::from_secs(120);

const PEERS_FILE: &str = "peers.json";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Table {
    peers: HashMap<String, Peer>,
    /// Checks under way (their peers are not due again meanwhile).
    checking: HashSet<String>,
    /// Last add_peer per bucket (`peer::add_peer_bucket`), in unix ms.
    add_times: HashMap<String, u64>,
    /// No onion add_peer is taken before this (unix ms).
    onion_after: u64,
    dirty: bool,
}

pub struct PeerManager {
    config: Arc<Config>,
    ours: Ours,
    table: Mutex<Table>,
    proxy: Arc<proxy::Proxy>,
    blacklist: Mutex<HashSet<String>>,
    path: PathBuf,
    wake: Notify,
}

impl PeerManager {
    pub fn new(config: Arc<Config>, index: Arc<Index>) -> Arc<PeerManager> {
        let pc = &config.peers;
        let identities: Vec<Peer> = own_identities(&config);
        let first_clearnet = identities.iter().find(|i| !i.is_onion());
        let announce = pc.announce && first_clearnet.is_some_and(|i| is_public_host(&i.host, pc.allow_private));
        let ours = Ours {
            index,
            genesis_hash: config.coin.genesis_hash,
            features: crate::electrum::features(&config, crate::electrum::version::V1_6),
            identities,
            announce,
            default_ports: config.coin.peer_ports,
        };
        Arc::new(PeerManager {
            path: config.db_dir.join(PEERS_FILE),
            proxy: Arc::new(proxy::Proxy::new(pc.tor_proxy_host.clone(), pc.tor_proxy_port, pc.interval(900))),
            config,
            ours,
            table: Mutex::default(),
            blacklist: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// The table, even after a panic elsewhere poisoned its lock: a half-made change to a
    /// peer list is no reason to stop answering wallets.
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ms(&self, secs: u64) -> u64 {
        self.config.peers.interval(secs).as_millis() as u64
    }

    /// Loads the saved table, adds the seeds and, with discovery on, checks peers until
    /// shutdown. Call once the index has caught up and the listeners are up (peers check us
    /// back at once).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.config.peers.discovery != Discovery::On {
            tracing::info!("peer discovery is {:?}: no outgoing connections", self.config.peers.discovery);
            return;
        }
        self.load();
        self.seed();
        tokio::spawn(self.proxy.clone().detect_until_found(shutdown.clone()));
        tokio::spawn(self.clone().refresh_blacklist(shutdown.clone()));
        let permits = Arc::new(Semaphore::new(CONCURRENT_CHECKS));
        loop {
            for host in self.due(permits.available_permits()) {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let me = self.clone();
                tokio::spawn(async move {
                    me.check_one(&host).await;
                    drop(permit);
                });
                tokio::time::sleep(CONNECT_GAP.min(self.config.peers.interval(1))).await;
            }
            self.save();
            let wait = Duration::from_millis(self.next_due_in().clamp(10, 1000));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = crate::stopped(&mut shutdown) => break,
            }
        }
        self.save();
    }

    /// Seeds: the coin's list, PEER_SEEDS and our own identities (we check ourselves too:
    /// that is what puts us in our own list).
    fn seed(&self) {
        let defaults = self.config.coin.peer_ports;
        let coin = self.config.coin.peers.iter().map(|s| (*s, "coins"));
        let env = self.config.peers.seeds.iter().map(|s| (s.as_str(), "env"));
        let mut t = self.table();
        for (name, source) in coin.chain(env) {
            if let Some(n) = peer::parse_real_name(name, defaults) {
                self.note(&mut t, Peer::new(&n.host, n.tcp, n.ssl, source), true);
            }
        }
        for me in &self.ours.identities {
            self.note(&mut t, me.clone(), true);
        }
    }

    /// Adds a peer not yet known (valid, public unless PEER_ALLOW_PRIVATE, reachable); a known
    /// one with other ports gets them to try. Returns whether it is new.
    fn note(&self, t: &mut Table, p: Peer, allow_onion_without_proxy: bool) -> bool {
        if !is_public_host(&p.host, self.config.peers.allow_private) {
            return false;
        }
        if p.is_onion() && !allow_onion_without_proxy && self.proxy.address().is_none() {
            return false;
        }
        match t.peers.get_mut(&p.host) {
            Some(known) => {
                if (known.tcp, known.ssl) != (p.tcp, p.ssl) && !known.other_ports.contains(&(p.tcp, p.ssl)) {
                    known.other_ports.push((p.tcp, p.ssl));
                    known.next_check = 0;
                    t.dirty = true;
                }
                false
            }
            None => {
                t.peers.insert(p.host.clone(), p);
                t.dirty = true;
                true
            }
        }
    }

    /// Up to `n` peers due for a check, earliest first, marked as being checked.
    fn due(&self, n: usize) -> Vec<String> {
        let now = now_ms();
        let mut t = self.table();
        let mut due: Vec<(u64, String)> = t
            .peers
            .values()
            .filter(|p| p.next_check <= now && !t.checking.contains(&p.host))
            .map(|p| (p.next_check, p.host.clone()))
            .collect();
        due.sort();
        due.truncate(n);
        for (_, h) in &due {
            t.checking.insert(h.clone());
        }
        due.into_iter().map(|(_, h)| h).collect()
    }

    fn next_due_in(&self) -> u64 {
        let now = now_ms();
        let t = self.table();
        t.peers
            .values()
            .filter(|p| !t.checking.contains(&p.host))
            .map(|p| p.next_check.saturating_sub(now))
            .min()
            .unwrap_or(1000)
    }

    async fn check_one(&self, host: &str) {
        let peer = self.table().peers.get(host).cloned();
        let Some(peer) = peer else { return };
        let outcome = if peer.bad {
            // A bad peer is not asked again: it only counts down to being forgotten.
            Outcome::Failed("bad".into())
        } else if self.blacklisted(&peer.host, peer.ip_addr) {
            Outcome::Bad("blacklisted".into())
        } else {
            match self.route(&peer) {
                Some((route, timeout)) => check::check(&peer, &self.ours, &route, timeout).await,
                None => Outcome::Failed("no Tor proxy to reach it through".into()),
            }
        };
        self.record(host, outcome);
    }

    /// A check's per-request timeout: 30 s (120 s through Tor), shortened with PEER_TIME_SCALE
    /// but never below 2 s.
    fn timeout(&self, base: Duration) -> Duration {
        base.mul_f64(self.config.peers.time_scale).max(Duration::from_secs(2)).min(base)
    }

    /// How to reach a peer: onion peers (and every peer with FORCE_PROXY) through the proxy,
    /// others directly from our listen address. `None`: it needs a proxy there is not.
    fn route(&self, p: &Peer) -> Option<(Route, Duration)> {
        if p.is_onion() || self.config.peers.force_proxy {
            return self.proxy.address().map(|a| (Route::Proxy(a), self.timeout(TOR_TIMEOUT)));
        }
        let bind = self
            .config
            .services
            .iter()
            .filter(|s| matches!(s.protocol, ServiceProtocol::Tcp | ServiceProtocol::Ssl))
            .find_map(|s| s.host.parse::<IpAddr>().ok());
        Some((Route::Direct { bind, resolve: Arc::new(self.config.peers.resolve.clone()) }, self.timeout(TIMEOUT)))
    }

    /// Records a check's outcome: the schedule, the peer's new facts, the peers it listed.
    fn record(&self, host: &str, outcome: Outcome) {
        let now = now_ms();
        let mut t = self.table();
        t.checking.remove(host);
        t.dirty = true;
        let Some(mut p) = t.peers.remove(host) else { return };
        p.last_try = Some(now);
        match outcome {
            Outcome::Good(l) => {
                // A host known by name and by its address: keep the name only.
                let named_elsewhere = host.parse::<IpAddr>().is_ok()
                    && t.peers.values().any(|o| {
                        o.host.parse::<IpAddr>().is_err() && o.ip_addr.map(|i| i.to_string()).as_deref() == Some(host)
                    });
                if named_elsewhere {
                    tracing::debug!("peer {host} is also known by name: keeping the name");
                    return;
                }
                if let Some(ip) = l.ip.filter(|ip| self.same_address_taken(&t, host, ip, now)) {
                    tracing::info!("peer {host}: refused, another recently good peer is at {ip}");
                    p.bad = true;
                    p.try_count += 1;
                    p.next_check = now + self.backoff(p.try_count);
                    t.peers.insert(host.to_string(), p);
                    return;
                }
                let first = p.last_good.is_none();
                (p.ip_addr, p.tcp, p.ssl) = (l.ip.or(p.ip_addr), l.tcp, l.ssl);
                p.other_ports.clear();
                (p.protocol_min, p.protocol_max, p.server_version, p.pruning) =
                    (l.protocol_min, l.protocol_max, l.server_version, l.pruning);
                (p.last_good, p.try_count, p.source) = (Some(now), 0, "peer".into());
                p.next_check = now + self.ms(STALE_SECS - 600);
                if first {
                    tracing::info!(
                        "peer {} verified ({}){}",
                        p.real_name(),
                        p.server_version.as_deref().unwrap_or("?"),
                        if l.announced { "; told it about us" } else { "" }
                    );
                }
                // The name replaces an entry of its bare address.
                if let Some(ip) = p.ip_addr {
                    t.peers.remove(&ip.to_string());
                }
                let source = p.host.clone();
                t.peers.insert(host.to_string(), p);
                let mut new: Vec<Peer> = l
                    .peers
                    .into_iter()
                    .filter(|n| !t.peers.contains_key(&n.host))
                    .map(|n| Peer::new(&n.host, n.tcp, n.ssl, &source))
                    .collect();
                new.shuffle(&mut rand::thread_rng());
                let mut taken = 0;
                for n in new {
                    if taken < NEW_PER_LIST && self.note(&mut t, n, false) {
                        taken += 1;
                    }
                }
            }
            Outcome::Bad(why) => {
                if !p.bad {
                    tracing::info!("peer {host} is bad: {why}");
                }
                p.bad = true;
                p.try_count += 1;
                p.next_check = now + self.backoff(p.try_count);
                self.keep_or_forget(&mut t, p);
            }
            Outcome::Failed(why) => {
                tracing::debug!("peer {host}: check failed: {why}");
                p.try_count += 1;
                p.next_check = now + self.backoff(p.try_count);
                self.keep_or_forget(&mut t, p);
            }
        }
    }

    fn backoff(&self, tries: u32) -> u64 {
        self.ms(RETRY_SECS.saturating_mul(1 << tries.min(20)))
    }

    fn keep_or_forget(&self, t: &mut Table, p: Peer) {
        if p.try_count >= forget_after(&p) {
            tracing::debug!("forgetting peer {} after {} failed checks", p.host, p.try_count);
        } else {
            t.peers.insert(p.host.clone(), p);
        }
    }

    /// Another recently good peer at the same address (IPv4) or /64 (IPv6): one operator, one
    /// entry.
    fn same_address_taken(&self, t: &Table, host: &str, ip: &IpAddr, now: u64) -> bool {
        let bucket = peer::sybil_bucket(ip);
        t.peers.values().any(|o| {
            o.host != host
                && !o.bad
                && o.host.parse::<IpAddr>().is_err()
                && o.last_good.is_some_and(|g| now.saturating_sub(g) < self.ms(STALE_SECS))
                && o.ip_addr.is_some_and(|oip| peer::sybil_bucket(&oip) == bucket)
        })
    }
}

/// Failures in a row after which a peer is forgotten: 3, or 10 if it was ever good (and is not
/// bad).
fn forget_after(p: &Peer) -> u32 {
    if p.last_good.is_some() && !p.bad {
        10
    } else {
        3
    }
}

/// Our public identities: REPORT_SERVICES's hosts with their tcp and ssl ports.
fn own_identities(config: &Config) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for s in &config.report_services {
        let port = Some(s.port);
        let i = match out.iter().position(|p| p.host.eq_ignore_ascii_case(&s.host)) {
            Some(i) => i,
            None => {
                out.push(Peer::new(&s.host, None, None, "self"));
                out.len() - 1
            }
        };
        match s.protocol {
            ServiceProtocol::Tcp => out[i].tcp = port,
            ServiceProtocol::Ssl => out[i].ssl = port,
            _ => {}
        }
    }
    for p in &mut out {
        p.protocol_max = Some(crate::electrum::version::PROTOCOL_MAX.to_string());
    }
    out.retain(|p| p.tcp.is_some() || p.ssl.is_some());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_forgotten_after_3_failures_or_10_once_good() {
        let mut p = Peer::new("a.example", Some(50001), None, "env");
        assert_eq!(forget_after(&p), 3);
        p.last_good = Some(1);
        assert_eq!(forget_after(&p), 10);
        p.bad = true;
        assert_eq!(forget_after(&p), 3);
    }
}
