//! Checking one peer, as ElectrumX does and on our own connection (what a peer says about
//! itself elsewhere is not trusted): SSL, then TCP, then ports heard of since; on each,
//! `server.version`, its tip within 5 blocks of ours and the same header 10 blocks below the
//! lower tip, `server.features` (our genesis, the host we dialled among its `hosts`), its own
//! peer list; then `server.add_peer` with our features if it does not list us with our ports;
//! then the connection is closed.
//!
//! A reply of the wrong shape, another network or a lie about its hosts makes the peer *bad*
//! (never listed); an error reply, a refused connection or a timeout is a *failed* attempt on
//! that port, and the next is tried.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::connect::{connect, CallError, PeerClient, Route};
use super::peer::{parse_named, Named, Peer};
use crate::index::Index;
use crate::types::to_hex;

/// What we bring to a check.
pub struct Ours {
    pub index: Arc<Index>,
    pub genesis_hash: &'static str,
    /// Our `server.features` as peers see them (what `server.add_peer` sends).
    pub features: Value,
    /// Our public identities (REPORT_SERVICES): their hosts and ports.
    pub identities: Vec<Peer>,
    /// Announce ourselves (PEER_ANNOUNCE, and our first clearnet identity is public).
    pub announce: bool,
    /// The network's default ports (tcp, ssl) for bare feature letters.
    pub default_ports: (u16, u16),
}

impl Ours {
    pub fn is_self(&self, host: &str) -> bool {
        self.identities.iter().any(|i| i.host.eq_ignore_ascii_case(host))
    }
}

/// What a good check learned.
#[derive(Debug)]
pub struct Learned {
    pub ip: Option<IpAddr>,
    pub tcp: Option<u16>,
    pub ssl: Option<u16>,
    pub protocol_min: Option<String>,
    pub protocol_max: Option<String>,
    pub server_version: Option<String>,
    pub pruning: Option<u64>,
    /// The peers it lists.
    pub peers: Vec<Named>,
    /// Whether we sent it `server.add_peer`.
    pub announced: bool,
}

#[derive(Debug)]
pub enum Outcome {
    Good(Learned),
    Bad(String),
    Failed(String),
}

enum Attempt {
    Bad(String),
    Failed(String),
}

impl From<CallError> for Attempt {
    fn from(e: CallError) -> Attempt {
        match e {
            CallError::Garbage(why) => Attempt::Bad(format!("answered garbage: {why}")),
            other => Attempt::Failed(other.to_string()),
        }
    }
}

/// Checks `peer` over each of its ports in turn (SSL first), reaching it by `route`, each
/// request within `timeout`.
pub async fn check(peer: &Peer, ours: &Ours, route: &Route, timeout: Duration) -> Outcome {
    let mut tries: Vec<(bool, u16)> = Vec::new();
    let pairs = std::iter::once((peer.tcp, peer.ssl)).chain(peer.other_ports.iter().copied());
    for (tcp, ssl) in pairs {
        for t in [ssl.map(|p| (true, p)), tcp.map(|p| (false, p))].into_iter().flatten() {
            if !tries.contains(&t) {
                tries.push(t);
            }
        }
    }
    let mut last = "it offers no TCP or SSL port".to_string();
    for (tls, port) in tries {
        match attempt(peer, tls, port, ours, route, timeout).await {
            Ok(learned) => return Outcome::Good(learned),
            Err(Attempt::Bad(why)) => return Outcome::Bad(why),
            Err(Attempt::Failed(why)) => last = format!("{} port {port}: {why}", if tls { "SSL" } else { "TCP" }),
        }
    }
    Outcome::Failed(last)
}

async fn attempt(
    peer: &Peer,
    tls: bool,
    port: u16,
    ours: &Ours,
    route: &Route,
    timeout: Duration,
) -> Result<Learned, Attempt> {
    let (stream, ip) = connect(&peer.host, port, tls, route, timeout).await?;
    let mut c = PeerClient::new(stream, timeout);
    let result = converse(&mut c, peer, ours).await;
    c.close().await;
    let (mut learned, (tcp, ssl)) = result?;
    learned.ip = ip;
    // What the peer says of its ports is authoritative once it checked out on one of them.
    learned.tcp = tcp.or(if tls { peer.tcp } else { Some(port) });
    learned.ssl = ssl.or(if tls { Some(port) } else { peer.ssl });
    Ok(learned)
}

type Ports = (Option<u16>, Option<u16>);

async fn converse(c: &mut PeerClient, peer: &Peer, ours: &Ours) -> Result<(Learned, Ports), Attempt> {
    let max = crate::electrum::version::PROTOCOL_MAX.to_string();
    let version = c.call("server.version", json!([crate::server_version(), ["1.4", max]])).await?;
    let pair = version.as_array().filter(|v| v.len() == 2 && v.iter().all(Value::is_string));
    if pair.is_none() {
        return Err(Attempt::Bad(format!("server.version answered {}", short(&version))));
    }
    check_chain(c, ours).await?;
    let features = c.call("server.features", json!([])).await?;
    let ports = check_features(&features, peer, ours)?;
    let listed = c.call("server.peers.subscribe", json!([])).await?;
    let peers = parse_peer_list(&listed, ours.default_ports)
        .ok_or_else(|| Attempt::Bad(format!("server.peers.subscribe answered {}", short(&listed))))?;
    let announced = ours.announce && !ours.is_self(&peer.host) && !lists_us(&peers, ours);
    if announced {
        // Its answer changes nothing: it will check us itself, as we checked it.
        if let Err(e) = c.call("server.add_peer", json!([ours.features])).await {
            tracing::debug!("peer {} did not take our add_peer: {e}", peer.host);
        }
    }
    let text = |k: &str| features.get(k).and_then(Value::as_str).map(str::to_string);
    let learned = Learned {
        ip: None,
        tcp: None,
        ssl: None,
        protocol_min: text("protocol_min"),
        protocol_max: text("protocol_max"),
        server_version: text("server_version"),
        pruning: features.get("pruning").and_then(Value::as_u64),
        peers,
        announced,
    };
    Ok((learned, ports))
}

/// Its tip within 5 blocks of ours, and its header 10 below the lower tip equal to ours (a
/// short chain split passes; another chain does not).
async fn check_chain(c: &mut PeerClient, ours: &Ours) -> Result<(), Attempt> {
    let tip = c.call("blockchain.headers.subscribe", json!([])).await?;
    let Some(theirs) = tip.get("height").and_then(Value::as_u64) else {
        return Err(Attempt::Bad(format!("blockchain.headers.subscribe answered {}", short(&tip))));
    };
    let Some(our_height) = ours.index.tip().map(|t| t.height as u64) else {
        return Err(Attempt::Failed("our index is empty".into()));
    };
    if theirs.abs_diff(our_height) > 5 {
        return Err(Attempt::Bad(format!("its tip is at height {theirs}, ours at {our_height}")));
    }
    let at = our_height.min(theirs).saturating_sub(10);
    let header = c.call("blockchain.block.header", json!([at])).await?;
    let ours_hex = ours.index.snapshot().header(at as u32).map(|h| to_hex(&h));
    if header.as_str() != ours_hex.as_deref() {
        return Err(Attempt::Bad(format!("its header at height {at} is not ours: another chain")));
    }
    Ok(())
}

/// Our genesis, the dialled host among its `hosts`, sha256; returns the ports it gives there.
fn check_features(f: &Value, peer: &Peer, ours: &Ours) -> Result<Ports, Attempt> {
    let Some(hosts) = f.get("hosts").and_then(Value::as_object) else {
        return Err(Attempt::Bad(format!("server.features has no hosts: {}", short(f))));
    };
    if f.get("genesis_hash").and_then(Value::as_str) != Some(ours.genesis_hash) {
        return Err(Attempt::Bad("another network (its genesis is not ours)".into()));
    }
    if f.get("hash_function").is_some_and(|h| h.as_str() != Some("sha256")) {
        return Err(Attempt::Bad(format!("hash_function {}", f["hash_function"])));
    }
    let Some((_, entry)) = hosts.iter().find(|(h, _)| h.eq_ignore_ascii_case(&peer.host)) else {
        return Err(Attempt::Bad(format!("its hosts do not include {}, the host we dialled", peer.host)));
    };
    let port = |k: &str| entry.get(k).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
    Ok((port("tcp_port"), port("ssl_port")))
}

/// `server.peers.subscribe`'s answer: `[[ip, host, [features]], ...]`; `None` if malformed.
pub fn parse_peer_list(v: &Value, defaults: (u16, u16)) -> Option<Vec<Named>> {
    v.as_array()?
        .iter()
        .map(|e| {
            let e = e.as_array().filter(|e| e.len() >= 3)?;
            let features: Vec<&str> = e[2].as_array()?.iter().map(Value::as_str).collect::<Option<_>>()?;
            parse_named(e[1].as_str()?, features, defaults)
        })
        .collect()
}

/// Whether the peer lists one of our identities with our ports.
fn lists_us(peers: &[Named], ours: &Ours) -> bool {
    peers.iter().any(|n| ours.identities.iter().any(|i| i.host == n.host && i.tcp == n.tcp && i.ssl == n.ssl))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}
