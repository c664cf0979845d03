//! What sessions are told (`server.peers.subscribe`) and what they may add
//! (`server.add_peer`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use rand::seq::SliceRandom;
use serde_json::{json, Value};

use super::peer::{self, is_onion, is_public_host, Peer};
use super::{connect, now_ms, PeerManager, ADD_PEER_SECS, ONION_ADD_SECS, STALE_SECS};
use crate::config::Discovery;
use crate::electrum::PeerDirectory;

impl PeerManager {
    /// The verified, recent, good peers a wallet is told of: at most two per IPv4 /16 (IPv6
    /// /56), onion peers capped (more for callers that come through our Tor proxy).
    pub(super) fn listed(&self, caller: IpAddr) -> Value {
        let pc = &self.config.peers;
        match pc.discovery {
            Discovery::Off => return json!([]),
            Discovery::SelfOnly => {
                return Value::Array(
                    self.ours.identities.iter().map(|p| json!([p.host, p.host, p.feature_strings()])).collect(),
                )
            }
            Discovery::On => {}
        }
        let now = now_ms();
        let stale = self.ms(STALE_SECS);
        let t = self.table();
        let fresh = |p: &&Peer| {
            !p.bad
                && p.last_good.is_some_and(|g| now.saturating_sub(g) < stale)
                && is_public_host(&p.host, pc.allow_private)
                && !self.blacklisted(&p.host, p.ip_addr)
        };
        let (onion, clear): (Vec<&Peer>, Vec<&Peer>) = t.peers.values().filter(fresh).partition(|p| p.is_onion());
        let mut rng = rand::thread_rng();
        let mut buckets: HashMap<String, Vec<&Peer>> = HashMap::new();
        for p in clear {
            buckets.entry(p.ip_addr.map(|ip| peer::list_bucket(&ip)).unwrap_or_default()).or_default().push(p);
        }
        let mut chosen: Vec<&Peer> = Vec::new();
        for mut b in buckets.into_values() {
            b.shuffle(&mut rng);
            chosen.extend(b.into_iter().take(2));
        }
        let onion_cap = if self.via_tor(caller) { 50 } else { 10.max(chosen.len() / 4) };
        let mut onion = onion;
        onion.shuffle(&mut rng);
        chosen.extend(onion.into_iter().take(onion_cap));
        Value::Array(
            chosen
                .into_iter()
                .map(|p| {
                    let first = if p.is_onion() {
                        p.host.clone()
                    } else {
                        p.ip_addr.map_or(p.host.clone(), |ip| ip.to_string())
                    };
                    json!([first, p.host, p.feature_strings()])
                })
                .collect(),
        )
    }

    /// `server.add_peer` from `caller`: taken (true) only with discovery on, well-formed
    /// features, once per domain per 10 minutes, onions one per random window and only with a
    /// proxy, and a clearnet host that resolves to the caller's address. The peer is listed
    /// only after our own check.
    pub(super) async fn added(&self, features: Value, caller: IpAddr) -> bool {
        if self.config.peers.discovery != Discovery::On {
            return false;
        }
        let Some((host, entry)) = features.get("hosts").and_then(Value::as_object).and_then(|h| h.iter().next()) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let port =
            |k: &str| entry.get(k).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
        let (tcp, ssl) = (port("tcp_port"), port("ssl_port"));
        if !is_public_host(&host, self.config.peers.allow_private) || (tcp.is_none() && ssl.is_none()) {
            return false;
        }
        let now = now_ms();
        {
            let mut t = self.table();
            let bucket = peer::add_peer_bucket(&host);
            let last = t.add_times.insert(bucket, now);
            if last.is_some_and(|l| now.saturating_sub(l) < self.ms(ADD_PEER_SECS)) {
                return false;
            }
            if is_onion(&host) {
                if now < t.onion_after || self.proxy.address().is_none() {
                    return false;
                }
                t.onion_after = now + rand::random::<u64>() % self.ms(ONION_ADD_SECS).max(1);
            }
        }
        if !is_onion(&host) {
            let resolved = connect::resolve(&host, tcp.or(ssl).unwrap_or(0), &self.config.peers.resolve).await;
            if !resolved.is_ok_and(|addrs| addrs.iter().any(|a| a.ip() == caller)) {
                tracing::debug!("add_peer {host} from {caller} refused: the name does not resolve to the caller");
                return false;
            }
        }
        let mut t = self.table();
        let mut p = Peer::new(&host, tcp, ssl, &caller.to_string());
        p.next_check = 0;
        if !self.note(&mut t, p, false) {
            if let Some(known) = t.peers.get_mut(&host) {
                known.next_check = 0;
            }
        }
        drop(t);
        tracing::info!("add_peer from {caller}: checking {host}");
        self.wake.notify_one();
        true
    }
}

impl PeerDirectory for PeerManager {
    fn peers_subscribe(&self, caller: IpAddr) -> Value {
        self.listed(caller)
    }

    fn add_peer<'a>(&'a self, features: Value, caller: IpAddr) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.added(features, caller))
    }

    fn via_tor(&self, caller: IpAddr) -> bool {
        self.proxy.address().is_some_and(|a: SocketAddr| a.ip() == caller)
    }
}
