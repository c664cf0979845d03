//! What the operator is shown and may do: the admin RPC's `peers` and `add_peer`, and
//! getinfo's counts.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::peer::{self, Peer};
use super::{now_ms, PeerManager, STALE_SECS};

impl PeerManager {
    /// Admin `add_peer "<host> s<port> t<port>"`: checked at once.
    pub fn admin_add(&self, name: &str) -> Result<String, String> {
        let n = peer::parse_real_name(name, self.config.coin.peer_ports)
            .ok_or_else(|| format!("{name:?} is not \"host [s<port>] [t<port>]\""))?;
        let mut t = self.table();
        let mut p = Peer::new(&n.host, n.tcp, n.ssl, "RPC");
        p.next_check = 0;
        if !self.note(&mut t, p, true) {
            match t.peers.get_mut(&n.host) {
                Some(known) => known.next_check = 0,
                None => return Err(format!("{} is not a public host", n.host)),
            }
        }
        drop(t);
        self.wake.notify_one();
        Ok(format!("peer '{}' added", n.host))
    }

    /// Admin `peers`: every known peer, bad first, then the most recently good.
    pub fn rows(&self) -> Vec<Value> {
        let now = now_ms();
        let t = self.table();
        let mut peers: Vec<&Peer> = t.peers.values().collect();
        peers.sort_by_key(|p| (!p.bad, std::cmp::Reverse(p.last_good)));
        let secs = |ms: Option<u64>| ms.map(|m| m as f64 / 1000.0);
        peers
            .into_iter()
            .map(|p| {
                json!({
                    "host": p.host,
                    // In server.features' shape, as ElectrumX's admin answers (electrumx_rpc reads it so).
                    "features": {
                        "hosts": {p.host.as_str(): {"tcp_port": p.tcp, "ssl_port": p.ssl}},
                        "server_version": p.server_version,
                        "protocol_min": p.protocol_min, "protocol_max": p.protocol_max, "pruning": p.pruning,
                    },
                    "source": p.source,
                    "ip_addr": p.ip_addr.map(|ip| ip.to_string()),
                    "last_good": secs(p.last_good),
                    "last_try": secs(p.last_try),
                    "try_count": p.try_count,
                    "status": p.status(now, self.ms(STALE_SECS)),
                })
            })
            .collect()
    }

    /// getinfo's peer counts.
    pub fn counts(&self) -> Value {
        let now = now_ms();
        let t = self.table();
        let mut c: HashMap<&str, usize> = HashMap::new();
        for p in t.peers.values() {
            *c.entry(p.status(now, self.ms(STALE_SECS))).or_default() += 1;
        }
        json!({"bad": c.get("bad").unwrap_or(&0), "good": c.get("good").unwrap_or(&0),
               "never": c.get("never").unwrap_or(&0), "stale": c.get("stale").unwrap_or(&0), "total": t.peers.len()})
    }
}
