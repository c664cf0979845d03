//! One peer as discovery knows it, and the protocol's ways of naming one: a host with feature
//! strings ("host v1.4 s50002 t50001"), which hosts may be stored and advertised, and the
//! address buckets that keep one operator from filling the list.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A peer server and what discovery learned of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Peer {
    /// Lower-case host name, IP literal or onion name.
    pub host: String,
    pub tcp: Option<u16>,
    pub ssl: Option<u16>,
    /// Ports heard of since (an add_peer with others): tried after the current ones, and the
    /// ones that work become the peer's.
    pub other_ports: Vec<(Option<u16>, Option<u16>)>,
    pub protocol_min: Option<String>,
    pub protocol_max: Option<String>,
    pub server_version: Option<String>,
    pub pruning: Option<u64>,
    /// Where we heard of it: "coins", "env", "RPC", the peer that listed it, the address that
    /// announced it, or "peer" once checked.
    pub source: String,
    /// The address our last connection to it reached.
    pub ip_addr: Option<IpAddr>,
    /// Unix seconds of the last successful check and of the last attempt.
    pub last_good: Option<u64>,
    pub last_try: Option<u64>,
    /// Attempts that failed since the last success.
    pub try_count: u32,
    /// Failed a check that no retry can fix (wrong network, lies about its hosts): never
    /// listed again.
    pub bad: bool,
    /// Unix seconds when it is next due for a check.
    pub next_check: u64,
}

impl Peer {
    pub fn new(host: &str, tcp: Option<u16>, ssl: Option<u16>, source: &str) -> Peer {
        Peer { host: host.to_ascii_lowercase(), tcp, ssl, source: source.to_string(), ..Peer::default() }
    }

    pub fn is_onion(&self) -> bool {
        is_onion(&self.host)
    }

    /// ElectrumX's four states, for the operator.
    pub fn status(&self, now: u64, stale_secs: u64) -> &'static str {
        match (self.bad, self.last_good) {
            (true, _) => "bad",
            (false, None) => "never",
            (false, Some(t)) if now.saturating_sub(t) < stale_secs => "good",
            (false, Some(_)) => "stale",
        }
    }

    /// The feature strings of `server.peers.subscribe`, with explicit port numbers (Fulcrum
    /// ignores bare letters).
    pub fn feature_strings(&self) -> Vec<String> {
        let mut f = vec![format!("v{}", self.protocol_max.as_deref().unwrap_or("1.4"))];
        if let Some(p) = self.pruning {
            f.push(format!("p{p}"));
        }
        if let Some(p) = self.ssl {
            f.push(format!("s{p}"));
        }
        if let Some(p) = self.tcp {
            f.push(format!("t{p}"));
        }
        f
    }

    /// "host s50002 t50001", as the admin RPC and seeds write a peer.
    pub fn real_name(&self) -> String {
        let mut parts = vec![self.host.clone()];
        parts.extend(self.feature_strings().into_iter().skip(1));
        parts.join(" ")
    }
}

/// A peer as another server or the operator names it: a host and feature strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub host: String,
    pub tcp: Option<u16>,
    pub ssl: Option<u16>,
    pub protocol_max: Option<String>,
    pub pruning: Option<u64>,
}

/// Parses "host [v1.4] [s[port]] [t[port]] [pN]" (or the same as a host and a list of feature
/// strings): a bare `s`/`t` is the network's default port (`defaults`: tcp, ssl); unknown
/// letters are ignored. `None` for an empty host or a malformed port.
pub fn parse_named<'a>(host: &str, features: impl IntoIterator<Item = &'a str>, defaults: (u16, u16)) -> Option<Named> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let mut n = Named { host, tcp: None, ssl: None, protocol_max: None, pruning: None };
    for f in features {
        let (letter, rest) = f.split_at(f.char_indices().nth(1).map_or(f.len(), |(i, _)| i));
        match letter {
            "t" | "s" => {
                let port = if rest.is_empty() {
                    if letter == "t" {
                        defaults.0
                    } else {
                        defaults.1
                    }
                } else {
                    rest.parse::<u16>().ok().filter(|p| *p > 0)?
                };
                if letter == "t" {
                    n.tcp = Some(port);
                } else {
                    n.ssl = Some(port);
                }
            }
            "v" if !rest.is_empty() => n.protocol_max = Some(rest.to_string()),
            "p" => n.pruning = rest.parse().ok(),
            _ => {}
        }
    }
    Some(n)
}

/// Parses a seed or admin string: "host s50002 t50001".
pub fn parse_real_name(s: &str, defaults: (u16, u16)) -> Option<Named> {
    let mut parts = s.split_whitespace();
    let host = parts.next()?;
    parse_named(host, parts, defaults)
}

pub fn is_onion(host: &str) -> bool {
    host.ends_with(".onion")
}

/// Whether a host may be stored at all: a valid host name (not `localhost`) or an IP literal
/// that is neither multicast nor unspecified.
pub fn is_valid_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => !ip.is_multicast() && !ip.is_unspecified(),
        Err(_) => host != "localhost" && is_valid_hostname(host),
    }
}

/// Whether a host may be dialled and advertised: valid and, for an IP literal, a public
/// address (unless `allow_private`). Names are judged by the name alone, as ElectrumX does.
pub fn is_public_host(host: &str, allow_private: bool) -> bool {
    if !is_valid_host(host) {
        return false;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => allow_private || is_public_ip(&ip),
        Err(_) => true,
    }
}

pub fn is_public_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.octets()[0] >= 240
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1])))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// RFC 1123 labels (with `_`, as DNS allows in practice), at most 253 characters, and a
/// top-level label that is not all digits.
fn is_valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.iter().all(label_ok) && !labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// The bucket `server.peers.subscribe` takes at most two peers from: an IPv4 /16, an IPv6 /56.
pub fn list_bucket(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3] & 0xff00)
        }
    }
}

/// The bucket of which only one recently good peer is kept: one IPv4 address, an IPv6 /64.
pub fn sybil_bucket(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    }
}

/// What `server.add_peer` rate-limits by: the last two labels of a name (one registrable
/// domain, roughly), or one shared bucket for every IP literal.
pub fn add_peer_bucket(host: &str) -> String {
    if host.parse::<IpAddr>().is_ok() {
        return "ip_addr".into();
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_strings_parse_and_write_with_explicit_ports() {
        let n = parse_real_name("Electrum.Example.org v1.6 s t50001 p10000 x", (50001, 50002)).unwrap();
        assert_eq!(
            n,
            Named {
                host: "electrum.example.org".into(),
                tcp: Some(50001),
                ssl: Some(50002),
                protocol_max: Some("1.6".into()),
                pruning: Some(10000)
            }
        );
        assert_eq!(parse_real_name("h s", (51001, 51002)).unwrap().ssl, Some(51002));
        assert!(parse_real_name("h s70000", (1, 2)).is_none());
        assert!(parse_real_name("", (1, 2)).is_none());
        let mut p = Peer::new("h.example", Some(50001), Some(50002), "env");
        p.protocol_max = Some("1.7".into());
        assert_eq!(p.feature_strings(), vec!["v1.7", "s50002", "t50001"]);
        assert_eq!(p.real_name(), "h.example s50002 t50001");
    }

    #[test]
    fn which_hosts_may_be_stored_and_advertised() {
        for ok in ["electrum.example.org", "a_b.example.com", "1.2.3.4", "2a01:4f8::1", "x.onion"] {
            assert!(is_public_host(ok, false), "{ok}");
        }
        for bad in ["localhost", "127.0.0.1", "10.1.2.3", "192.168.1.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1"] {
            assert!(!is_public_host(bad, false), "{bad}");
        }
        assert!(is_public_host("127.0.0.2", true), "the test switch");
        assert!(!is_public_host("224.0.0.1", true), "multicast never");
        assert!(!is_public_host("localhost", true));
        for bad in ["-a.example", "a..b", "example.123", &"a".repeat(64), "a b.example"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn buckets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(list_bucket(&ip("1.2.3.4")), list_bucket(&ip("1.2.200.9")));
        assert_ne!(list_bucket(&ip("1.2.3.4")), list_bucket(&ip("1.3.3.4")));
        assert_eq!(list_bucket(&ip("2a01:4f8:1:2::1")), list_bucket(&ip("2a01:4f8:1:ff::1")));
        assert_ne!(list_bucket(&ip("2a01:4f8:1:2::1")), list_bucket(&ip("2a01:4f8:1:100::1")));
        assert_eq!(sybil_bucket(&ip("2a01:4f8:1:2::1")), sybil_bucket(&ip("2a01:4f8:1:2::99")));
        assert_ne!(sybil_bucket(&ip("1.2.3.4")), sybil_bucket(&ip("1.2.3.5")));
        assert_eq!(add_peer_bucket("a.b.example.org"), "example.org");
        assert_eq!(add_peer_bucket("5.6.7.8"), add_peer_bucket("9.9.9.9"));
    }
}
