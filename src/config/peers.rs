//! Peer discovery's settings: ElectrumX's variables and meanings (PEER_DISCOVERY,
//! PEER_ANNOUNCE, FORCE_PROXY, TOR_PROXY_HOST, TOR_PROXY_PORT, BLACKLIST_URL, TOR_BANNER_FILE),
//! with booleans parsed properly, and ferrum's own additions for seeds and private networks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Env};
use crate::coins::Coin;

/// PEER_DISCOVERY: on, off, or self (list only ourselves, connect to nobody).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    On,
    Off,
    SelfOnly,
}

#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub discovery: Discovery,
    /// PEER_ANNOUNCE: tell the peers we check about ourselves (`server.add_peer`).
    pub announce: bool,
    /// FORCE_PROXY: every peer connection through the Tor proxy, not only onion ones.
    pub force_proxy: bool,
    pub tor_proxy_host: String,
    /// TOR_PROXY_PORT; unset: the first of 9050, 9150 and 1080 that answers.
    pub tor_proxy_port: Option<u16>,
    /// BLACKLIST_URL: an http(s) URL or a file of ElectrumX's blacklist format.
    pub blacklist: Option<String>,
    /// The banner for sessions that come through the Tor proxy.
    pub tor_banner_file: Option<PathBuf>,
    /// ferrum: PEER_SEEDS, more seeds beside the coin's ("host s50002 t50001", comma-separated).
    pub seeds: Vec<String>,
    /// ferrum: PEER_ALLOW_PRIVATE, accept peers at private and loopback addresses (a private
    /// network of servers, or tests on one machine). Off, as ElectrumX has it.
    pub allow_private: bool,
    /// ferrum: PEER_RESOLVE, `name=ip` pairs looked up before DNS (tests, private networks).
    pub resolve: Vec<(String, IpAddr)>,
    /// ferrum: PEER_TIME_SCALE, every discovery interval multiplied by it (tests shorten
    /// hours to seconds).
    pub time_scale: f64,
}

impl PeerConfig {
    /// An interval of the discovery schedule, as PEER_TIME_SCALE scales it.
    pub fn interval(&self, secs: u64) -> Duration {
        Duration::from_secs_f64(secs as f64 * self.time_scale)
    }
}

pub(super) fn read_peers(env: &Env, coin: &Coin) -> Result<PeerConfig, ConfigError> {
    let discovery = match env.get("PEER_DISCOVERY").map(str::to_ascii_lowercase).as_deref() {
        None | Some("on") | Some("1") | Some("true") | Some("yes") => Discovery::On,
        Some("off") | Some("0") | Some("false") | Some("no") => Discovery::Off,
        Some("self") => Discovery::SelfOnly,
        Some(other) => {
            return Err(ConfigError(format!("PEER_DISCOVERY must be on, off or self, not {other:?}")));
        }
    };
    let tor_proxy_port = match env.get("TOR_PROXY_PORT") {
        None => None,
        Some(_) => Some(env.integer::<u16>("TOR_PROXY_PORT", 0, "a TCP port number")?),
    };
    let resolve = env
        .list("PEER_RESOLVE")
        .map(|pair| {
            let (name, ip) = pair.split_once('=').unwrap_or((pair, ""));
            let ip = ip.trim().parse::<IpAddr>().map_err(|_| {
                ConfigError(format!("PEER_RESOLVE entry {pair:?} is not name=ip (e.g. a.peer.test=127.0.0.2)"))
            })?;
            Ok((name.trim().to_ascii_lowercase(), ip))
        })
        .collect::<Result<_, ConfigError>>()?;
    let time_scale: f64 = match env.get("PEER_TIME_SCALE") {
        None => 1.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| ConfigError(format!("PEER_TIME_SCALE must be a positive number, not {v:?}")))?,
    };
    Ok(PeerConfig {
        discovery,
        announce: env.boolean("PEER_ANNOUNCE", true),
        force_proxy: env.boolean("FORCE_PROXY", false),
        tor_proxy_host: env.get("TOR_PROXY_HOST").unwrap_or("localhost").to_string(),
        tor_proxy_port,
        blacklist: env.get("BLACKLIST_URL").map(str::to_string).or(coin.blacklist_url.map(str::to_string)),
        tor_banner_file: env.get("TOR_BANNER_FILE").map(PathBuf::from),
        seeds: env.list("PEER_SEEDS").map(str::to_string).collect(),
        allow_private: env.boolean("PEER_ALLOW_PRIVATE", false),
        resolve,
        time_scale,
    })
}
