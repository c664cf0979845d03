//! Configuration from environment variables, with ElectrumX's names, defaults and meanings.
//!
//! Every variable is parsed into a typed field here, so a bad value stops start-up with a
//! message naming the variable and what it expects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::coins::{self, Coin, Net};

mod cost;
mod peers;

use cost::read_cost;
pub use cost::CostLimits;

/// BULK_FLUSH_ROWS's default: below this, a batch costs less than building and ingesting files.
pub const DEFAULT_BULK_FLUSH_ROWS: usize = 100_000;
/// DB_CACHE_MB's default: RocksDB's block cache.
pub const DEFAULT_DB_CACHE_MB: usize = 256;
pub use peers::{Discovery, PeerConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A network service from SERVICES / REPORT_SERVICES.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub protocol: ServiceProtocol,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceProtocol {
    Tcp,
    Ssl,
    Ws,
    Wss,
    Rpc,
}

impl ServiceProtocol {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Self::Tcp,
            "ssl" => Self::Ssl,
            "ws" => Self::Ws,
            "wss" => Self::Wss,
            "rpc" => Self::Rpc,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ssl => "ssl",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Rpc => "rpc",
        }
    }
}

impl Service {
    /// The address to bind; an empty host means all interfaces.
    pub fn bind_addr(&self) -> String {
        let host = match self.host.as_str() {
            "" => "0.0.0.0",
            "localhost" => "127.0.0.1",
            h => h,
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One daemon endpoint from DAEMON_URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonUrl {
    /// `http://host:port/` without credentials.
    pub base: String,
    /// `user:password` when given in the URL; `None` means cookie-file authentication.
    pub auth: Option<(String, String)>,
}

impl DaemonUrl {
    /// The URL with any password hidden, for logs.
    pub fn redacted(&self) -> String {
        self.base.clone()
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub coin: &'static Coin,
    pub db_dir: PathBuf,
    pub daemon_urls: Vec<DaemonUrl>,
    /// Cookie file for daemons without credentials in their URL.
    pub cookie_file: PathBuf,
    pub cache_mb: usize,
    pub reorg_limit: u32,
    pub services: Vec<Service>,
    pub report_services: Vec<Service>,
    pub log_level: String,
    pub allow_root: bool,
    pub poll_interval_blocks: Duration,
    pub poll_interval_mempool: Duration,
    /// ferrum-only: bytes of raw blocks the prefetcher may hold ahead of the block processor.
    pub prefetch_bytes: usize,
    /// ferrum-only: concurrent block downloads.
    pub prefetch_concurrency: usize,
    /// ferrum-only: use the daemon's REST interface for blocks when it offers it.
    pub daemon_rest: bool,
    /// Fetch each block's spent outputs with it (`/rest/spenttxouts`) where the daemon has them.
    pub daemon_spent_outputs: bool,
    /// ferrum-only: flushes of at least this many rows are written as table files while no
    /// client is served (BULK_FLUSH_ROWS; 0: never).
    pub bulk_flush_rows: usize,
    /// ferrum-only: megabytes of RocksDB's block cache (DB_CACHE_MB).
    pub db_cache_mb: usize,
    /// ferrum-only: the lookup tables ZSTD-compressed once synced (DB_LOOKUP_ZSTD).
    pub db_lookup_zstd: bool,
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
    pub max_sessions: usize,
    /// Bytes per incoming message.
    pub max_recv: usize,
    /// Bytes per response.
    pub max_send: usize,
    pub session_timeout: Duration,
    pub request_timeout: Duration,
    /// ferrum-only: requests in one JSON-RPC batch.
    pub max_batch: usize,
    /// ferrum-only: script-hash subscriptions one session may hold. ElectrumX 1.x's
    /// MAX_SESSION_SUBS meant this; today's ElectrumX refuses that name as obsolete, and so
    /// does ferrum, so the name differs.
    pub max_session_subs: usize,
    pub drop_client: Option<regex::Regex>,
    pub banner_file: Option<PathBuf>,
    pub donation_address: String,
    /// The cost model (COST_SOFT_LIMIT, COST_HARD_LIMIT, ...).
    pub cost: CostLimits,
    /// Seconds between the session table and getinfo in the log (LOG_SESSIONS; 0: never).
    pub log_sessions: Duration,
    /// No IP addresses in logs (ANON_LOGS).
    pub anon_logs: bool,
    /// Where `/metrics` is served in Prometheus's format (METRICS_ADDR; none: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Peer discovery (PEER_DISCOVERY, PEER_ANNOUNCE, the Tor proxy, ...).
    pub peers: PeerConfig,
    /// ferrum: DAEMON_ZMQ, where the node announces new blocks: `None` (unset) asks the node,
    /// `Some(None)` is off, `Some(Some(address))` a given address.
    pub daemon_zmq: Option<Option<String>>,
}

/// Obsolete ElectrumX variables and what replaced them: start-up stops if one is set.
const OBSOLETE: &[(&str, &str)] = &[
    ("HOST", "SERVICES"),
    ("TCP_PORT", "SERVICES"),
    ("SSL_PORT", "SERVICES"),
    ("RPC_HOST", "SERVICES"),
    ("REPORT_HOST", "REPORT_SERVICES"),
    ("REPORT_TCP_PORT", "REPORT_SERVICES"),
    ("REPORT_SSL_PORT", "REPORT_SERVICES"),
    ("REPORT_HOST_TOR", "REPORT_SERVICES"),
    ("REPORT_TCP_PORT_TOR", "REPORT_SERVICES"),
    ("REPORT_SSL_PORT_TOR", "REPORT_SERVICES"),
    ("MAX_SUBS", "COST_SOFT_LIMIT and COST_HARD_LIMIT"),
    ("MAX_SESSION_SUBS", "COST_SOFT_LIMIT and COST_HARD_LIMIT"),
    ("MAX_SUBSCRIPTIONS", "COST_SOFT_LIMIT and COST_HARD_LIMIT"),
    ("BANDWIDTH_LIMIT", "BANDWIDTH_UNIT_COST"),
    ("UTXO_MB", "CACHE_MB"),
    ("HIST_MB", "CACHE_MB"),
    ("NETWORK", "NET"),
];

struct Env<'a> {
    vars: &'a HashMap<String, String>,
}

/// The items of a comma-separated list, trimmed, blanks skipped.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Env<'_> {
    /// A set, non-blank value.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// The items of a comma-separated list (none if unset).
    fn list(&self, name: &str) -> impl Iterator<Item = &str> {
        self.get(name).into_iter().flat_map(items)
    }

    fn integer<T: std::str::FromStr>(&self, name: &str, default: T, what: &str) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.replace('_', "").parse().map_err(|_| ConfigError(format!("{name} must be {what}, not {v:?}"))),
        }
    }

    /// ElectrumX treats any non-empty value as true; ferrum also reads the usual "false" spellings.
    fn boolean(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off"),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    pub fn from_vars(vars: HashMap<String, String>) -> Result<Config, ConfigError> {
        let env = Env { vars: &vars };
        check_retired(&env)?;
        let coin = read_coin(&env)?;
        let db_dir = env
            .get("DB_DIRECTORY")
            .map(PathBuf::from)
            .ok_or_else(|| ConfigError("DB_DIRECTORY must be set to the database directory".into()))?;

        let daemon_urls = match env.get("DAEMON_URL") {
            Some(v) => parse_daemon_urls(v, coin)?,
            // ferrum's addition: without DAEMON_URL, talk to a local node with its cookie.
            None => vec![DaemonUrl { base: format!("http://127.0.0.1:{}/", coin.rpc_port), auth: None }],
        };
        let cookie_file = match env.get("DAEMON_COOKIE_FILE") {
            Some(p) => PathBuf::from(p),
            None => default_cookie_path(coin, vars.get("HOME").map(String::as_str)),
        };

        let cache_mb: usize = env.integer("CACHE_MB", 1200, "a whole number of megabytes")?;
        if cache_mb == 0 {
            return Err(ConfigError("CACHE_MB must be at least 1".into()));
        }
        if cache_mb.checked_mul(1_000_000).is_none() {
            return Err(ConfigError(format!("CACHE_MB={cache_mb} is more memory than this machine can address")));
        }
        let reorg_limit: u32 = env.integer("REORG_LIMIT", coin.reorg_limit, "a whole number of blocks")?;
        if reorg_limit == 0 {
            return Err(ConfigError("REORG_LIMIT must be at least 1".into()));
        }

        let (services, report_services) = read_services(&env)?;

        let poll_blocks: u64 = env.integer("DAEMON_POLL_INTERVAL_BLOCKS", 5000, "milliseconds")?;
        let poll_mempool: u64 = env.integer("DAEMON_POLL_INTERVAL_MEMPOOL", 5000, "milliseconds")?;
        let prefetch_mb: usize = env.integer("PREFETCH_MB", 64, "a whole number of megabytes")?;
        let prefetch_concurrency: usize = env.integer("PREFETCH_CONCURRENCY", 8, "a number of requests")?;
        let max_sessions: usize = env.integer("MAX_SESSIONS", 1000, "a number of sessions")?;
        // Each session holds a file descriptor: no system has a billion.
        if max_sessions > 1_000_000_000 {
            return Err(ConfigError(format!("MAX_SESSIONS={max_sessions} is more sessions than any system can open")));
        }
        let max_recv: usize = env.integer("MAX_RECV", 1_000_000, "a number of bytes")?;
        // ElectrumX's floor: smaller responses would break ordinary wallets.
        let max_send: usize = env.integer::<usize>("MAX_SEND", 8_100_000, "a number of bytes")?.max(350_000);
        let session_timeout: u64 = env.integer("SESSION_TIMEOUT", 600, "a number of seconds")?;
        let request_timeout: u64 = env.integer("REQUEST_TIMEOUT", 30, "a number of seconds")?;
        let max_batch: usize = env.integer("MAX_BATCH", 500, "a number of requests")?;
        let max_session_subs: usize = env.integer("MAX_SUBS_PER_SESSION", 50_000, "a number of subscriptions")?;
        let cost = read_cost(&env)?;
        let log_sessions: u64 = env.integer("LOG_SESSIONS", 3600, "a number of seconds")?;
        let metrics_addr = env.get("METRICS_ADDR").map(parse_metrics_addr).transpose()?;
        let peers = peers::read_peers(&env, coin)?;
        let bad_regex = |e| ConfigError(format!("DROP_CLIENT must be a regular expression: {e}"));
        let drop_client = env.get("DROP_CLIENT").map(|re| regex::Regex::new(re).map_err(bad_regex)).transpose()?;

        Ok(Config {
            coin,
            db_dir,
            daemon_urls,
            cookie_file,
            cache_mb,
            reorg_limit,
            services,
            report_services,
            log_level: env.get("LOG_LEVEL").unwrap_or("info").to_string(),
            allow_root: env.boolean("ALLOW_ROOT", false),
            poll_interval_blocks: Duration::from_millis(poll_blocks.max(10)),
            poll_interval_mempool: Duration::from_millis(poll_mempool.max(10)),
            prefetch_bytes: prefetch_mb.clamp(1, 1 << 20) * 1_000_000,
            prefetch_concurrency: prefetch_concurrency.clamp(1, 64),
            daemon_rest: env.boolean("DAEMON_REST", true),
            daemon_spent_outputs: env.boolean("DAEMON_SPENT_OUTPUTS", true),
            bulk_flush_rows: env.integer("BULK_FLUSH_ROWS", DEFAULT_BULK_FLUSH_ROWS, "a number of rows")?,
            db_cache_mb: env
                .integer("DB_CACHE_MB", DEFAULT_DB_CACHE_MB, "a whole number of megabytes")?
                .clamp(1, 1 << 20),
            db_lookup_zstd: env.boolean("DB_LOOKUP_ZSTD", false),
            ssl_certfile: env.get("SSL_CERTFILE").map(PathBuf::from),
            ssl_keyfile: env.get("SSL_KEYFILE").map(PathBuf::from),
            max_sessions: max_sessions.max(1),
            max_recv: max_recv.max(1000),
            max_send,
            session_timeout: Duration::from_secs(session_timeout.max(1)),
            request_timeout: Duration::from_secs(request_timeout.max(1)),
            max_batch: max_batch.max(1),
            max_session_subs: max_session_subs.max(1),
            drop_client,
            banner_file: env.get("BANNER_FILE").map(PathBuf::from),
            donation_address: env.get("DONATION_ADDRESS").unwrap_or("").to_string(),
            cost,
            log_sessions: Duration::from_secs(log_sessions),
            anon_logs: env.boolean("ANON_LOGS", false),
            metrics_addr,
            peers,
            daemon_zmq: parse_zmq(env.get("DAEMON_ZMQ")),
        })
    }

    pub fn rpc_service(&self) -> Option<&Service> {
        self.services.iter().find(|s| s.protocol == ServiceProtocol::Rpc)
    }

    pub fn cache_bytes(&self) -> usize {
        self.cache_mb * 1_000_000
    }

    /// Whether the listeners open again at this many connections after MAX_SESSIONS was
    /// reached: at or below 95% of it, rounded down (ElectrumX's MAX_SESSIONS * 19 // 20).
    pub fn resumes_listening(&self, connections: usize) -> bool {
        (connections as u128) * 20 <= (self.max_sessions as u128) * 19 - (self.max_sessions as u128) * 19 % 20
    }
}

/// Obsolete ElectrumX variables stop start-up with the name of their replacement; DB_ENGINE is
/// checked.
fn check_retired(env: &Env) -> Result<(), ConfigError> {
    for (old, new) in OBSOLETE {
        if env.get(old).is_some() {
            return Err(ConfigError(format!("the environment variable {old} is obsolete: use {new} instead")));
        }
    }
    if let Some(engine) = env.get("DB_ENGINE") {
        match engine.to_ascii_lowercase().as_str() {
            "rocksdb" => {}
            "leveldb" => tracing::warn!(
                "DB_ENGINE=leveldb: ferrum always uses RocksDB and cannot reuse an ElectrumX \
                 database; it builds its own index in DB_DIRECTORY"
            ),
            other => {
                return Err(ConfigError(format!(
                    "DB_ENGINE must be rocksdb (or leveldb, which ferrum treats as rocksdb), not {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// COIN and NET, as one row of the coin table.
fn read_coin(env: &Env) -> Result<&'static Coin, ConfigError> {
    let coin_name = env.get("COIN").unwrap_or("Bitcoin");
    let net_name = env.get("NET").unwrap_or("mainnet");
    let net = Net::parse(net_name).ok_or_else(|| {
        ConfigError(format!("NET must be one of mainnet, testnet, testnet4, signet, regtest, not {net_name:?}"))
    })?;
    coins::lookup(coin_name, net).ok_or_else(|| {
        let nets = coins::nets_of(coin_name);
        if nets.is_empty() {
            ConfigError(format!("COIN {coin_name:?} is unknown; known coins: {}", coins::coin_names().join(", ")))
        } else {
            ConfigError(format!("COIN {coin_name} has no network {net_name:?}; NET must be one of {}", nets.join(", ")))
        }
    })
}

/// SERVICES (with the default rpc service) and REPORT_SERVICES, checked.
fn read_services(env: &Env) -> Result<(Vec<Service>, Vec<Service>), ConfigError> {
    let rpc_port: u16 = env.integer("RPC_PORT", 8000, "a TCP port number")?;
    let mut services = match env.get("SERVICES") {
        Some(v) => parse_services(v, "SERVICES", true)?,
        None => Vec::new(),
    };
    if !services.iter().any(|s| s.protocol == ServiceProtocol::Rpc) {
        services.push(Service { protocol: ServiceProtocol::Rpc, host: "localhost".into(), port: rpc_port });
    }
    let report_services = match env.get("REPORT_SERVICES") {
        Some(v) => parse_services(v, "REPORT_SERVICES", false)?,
        None => Vec::new(),
    };
    if let Some(s) = report_services.iter().find(|s| s.protocol == ServiceProtocol::Rpc) {
        return Err(ConfigError(format!("REPORT_SERVICES cannot advertise the rpc service ({}:{})", s.host, s.port)));
    }
    for s in &services {
        if matches!(s.protocol, ServiceProtocol::Ssl | ServiceProtocol::Wss) {
            for var in ["SSL_CERTFILE", "SSL_KEYFILE"] {
                if env.get(var).is_none() {
                    return Err(ConfigError(format!(
                        "{var} must be set because SERVICES includes {}://",
                        s.protocol.name()
                    )));
                }
            }
        }
    }
    Ok((services, report_services))
}

/// DAEMON_ZMQ: `off`, an address, or (unset) ask the node.
fn parse_zmq(v: Option<&str>) -> Option<Option<String>> {
    match v.map(str::trim) {
        None | Some("") => None,
        Some(v) if v.eq_ignore_ascii_case("off") => Some(None),
        Some(v) => Some(Some(v.to_string())),
    }
}

fn default_cookie_path(coin: &Coin, home: Option<&str>) -> PathBuf {
    let mut p = PathBuf::from(home.unwrap_or("/root"));
    p.push(coin.daemon_dir);
    if !coin.net_subdir.is_empty() {
        p.push(coin.net_subdir);
    }
    p.push(".cookie");
    p
}

/// Parses DAEMON_URL: a comma-separated list of `http://user:pass@host:port/`, where the
/// scheme, credentials, port and trailing slash may be left out.
/// METRICS_ADDR: `host:port` with an IP address (`127.0.0.1:4224`, `[::1]:4224`), or a bare
/// port, which means loopback (the endpoint is for a local Prometheus unless asked otherwise).
fn parse_metrics_addr(value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value.parse().map_err(|_| {
        ConfigError(format!("METRICS_ADDR {value:?} is not an address and port such as 127.0.0.1:4224 or [::1]:4224"))
    })
}

pub fn parse_daemon_urls(value: &str, coin: &Coin) -> Result<Vec<DaemonUrl>, ConfigError> {
    let mut urls = Vec::new();
    for part in items(value) {
        let bad = |why: &str| ConfigError(format!("DAEMON_URL entry {:?} is invalid: {why}", redact(part)));
        let rest = match part.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(bad(&format!("scheme {scheme}:// is not supported, use http://"))),
            None => part,
        };
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hp)) => {
                let (user, pass) = auth.split_once(':').ok_or_else(|| bad("credentials must be user:password"))?;
                (Some((user.to_string(), pass.to_string())), hp)
            }
            None => (None, rest),
        };
        if hostport.contains('/') {
            return Err(bad("a path after host:port is not supported"));
        }
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = port.unwrap_or(coin.rpc_port);
        let host_fmt = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        urls.push(DaemonUrl { base: format!("http://{host_fmt}:{port}/"), auth });
    }
    if urls.is_empty() {
        return Err(ConfigError("DAEMON_URL is set but names no daemon".into()));
    }
    Ok(urls)
}

fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((auth, rest)) => {
            let scheme_end = auth.find("://").map(|i| i + 3).unwrap_or(0);
            format!("{}***@{rest}", &auth[..scheme_end])
        }
        None => url.to_string(),
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [")?;
        match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(parse_port(p)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected {after:?} after ]")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Ok((h, Some(parse_port(p)?))),
            Some(_) => Ok((s, None)), // a bare IPv6 address
            None => Ok((s, None)),
        }
    }
}

/// Parses SERVICES / REPORT_SERVICES: `tcp://host:port,ssl://:50002,rpc://localhost:8000`.
pub fn parse_services(value: &str, var: &str, allow_empty_host: bool) -> Result<Vec<Service>, ConfigError> {
    let mut out: Vec<Service> = Vec::new();
    for part in items(value) {
        let bad = |why: String| ConfigError(format!("{var} entry {part:?} is invalid: {why}"));
        let (proto, rest) = part.split_once("://").ok_or_else(|| bad("expected protocol://host:port".into()))?;
        let protocol = ServiceProtocol::parse(proto)
            .ok_or_else(|| bad(format!("unknown protocol {proto:?}; use tcp, ssl, ws, wss or rpc")))?;
        let (host, port) = split_host_port(rest).map_err(bad)?;
        let port = match (port, protocol) {
            (Some(p), _) => p,
            (None, ServiceProtocol::Rpc) => 8000,
            (None, _) => return Err(bad("a port is required".into())),
        };
        if host.is_empty() && !allow_empty_host {
            return Err(bad("a host is required".into()));
        }
        let svc = Service { protocol, host: host.to_string(), port };
        if out.iter().any(|s| s.protocol == svc.protocol && s.host == svc.host && s.port == svc.port) {
            return Err(bad("listed twice".into()));
        }
        out.push(svc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> HashMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(list: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut v = vars(&[("DB_DIRECTORY", "/tmp/db")]);
        v.extend(vars(list));
        Config::from_vars(v)
    }

    #[test]
    fn defaults() {
        let c = parse(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.coin.name, "Bitcoin");
        assert_eq!(c.coin.net, Net::Mainnet);
        assert_eq!(c.cache_mb, 1200);
        assert_eq!(c.reorg_limit, 200);
        assert_eq!(c.daemon_urls, vec![DaemonUrl { base: "http://127.0.0.1:8332/".into(), auth: None }]);
        assert_eq!(c.cookie_file, PathBuf::from("/home/u/.bitcoin/.cookie"));
        assert_eq!(c.rpc_service().unwrap().bind_addr(), "127.0.0.1:8000");
        assert_eq!(c.poll_interval_blocks, Duration::from_secs(5));
        assert!(!c.allow_root);
        assert_eq!((c.bulk_flush_rows, c.db_cache_mb), (100_000, 256));
        assert!(c.daemon_rest && c.daemon_spent_outputs);
    }

    #[test]
    fn memory_and_flush_settings() {
        let c = parse(&[("DB_CACHE_MB", "32"), ("BULK_FLUSH_ROWS", "0"), ("DAEMON_SPENT_OUTPUTS", "0")]).unwrap();
        assert_eq!((c.bulk_flush_rows, c.db_cache_mb, c.daemon_spent_outputs, c.db_lookup_zstd), (0, 32, false, false));
        assert!(parse(&[("DB_LOOKUP_ZSTD", "1")]).unwrap().db_lookup_zstd);
        for (var, bad) in [("DB_CACHE_MB", "lots"), ("BULK_FLUSH_ROWS", "-1")] {
            let e = parse(&[(var, bad)]).unwrap_err();
            assert!(e.0.contains(var), "{e}");
        }
    }

    #[test]
    fn db_directory_is_required() {
        let e = Config::from_vars(vars(&[])).unwrap_err();
        assert!(e.0.contains("DB_DIRECTORY"), "{e}");
    }

    #[test]
    fn daemon_url_forms() {
        let btc = coins::lookup("Bitcoin", Net::Regtest).unwrap();
        let urls = parse_daemon_urls("http://u:p@127.0.0.1:1234/, localhost ,[::1]:9,u:p:w@h", btc).unwrap();
        assert_eq!(urls[0].base, "http://127.0.0.1:1234/");
        assert_eq!(urls[0].auth, Some(("u".into(), "p".into())));
        assert_eq!(urls[1].base, "http://localhost:18443/");
        assert_eq!(urls[1].auth, None);
        assert_eq!(urls[2].base, "http://[::1]:9/");
        assert_eq!(urls[3].auth, Some(("u".into(), "p:w".into())));
        assert!(parse_daemon_urls("https://h", btc).is_err());
        assert!(parse_daemon_urls("h:notaport", btc).is_err());
        let e = parse_daemon_urls("http://u:secret@h:x", btc).unwrap_err();
        assert!(!e.0.contains("secret"), "password leaked: {e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, val) in [("CACHE_MB", "lots"), ("REORG_LIMIT", "-1"), ("NET", "moon"), ("COIN", "Dogecash")] {
            let e = parse(&[(var, val)]).unwrap_err();
            assert!(e.0.contains(var), "{var}: {e}");
        }
        let e = parse(&[("COIN", "BitcoinSV"), ("NET", "signet")]).unwrap_err();
        assert!(e.0.contains("mainnet, regtest"), "{e}");
    }

    #[test]
    fn obsolete_variables_name_their_replacement() {
        let e = parse(&[("TCP_PORT", "50001")]).unwrap_err();
        assert!(e.0.contains("TCP_PORT") && e.0.contains("SERVICES"), "{e}");
        let e = parse(&[("MAX_SUBS", "1")]).unwrap_err();
        assert!(e.0.contains("COST_SOFT_LIMIT"), "{e}");
        // Unknown variables are ignored.
        assert!(parse(&[("SOMETHING_ELSE", "x")]).is_ok());
    }

    #[test]
    fn db_engine() {
        assert!(parse(&[("DB_ENGINE", "rocksdb")]).is_ok());
        assert!(parse(&[("DB_ENGINE", "leveldb")]).is_ok());
        assert!(parse(&[("DB_ENGINE", "sqlite")]).unwrap_err().0.contains("DB_ENGINE"));
    }

    #[test]
    fn services() {
        let c = parse(&[("SERVICES", "tcp://:50001,rpc://127.0.0.1:8100,ws://host:50003")]).unwrap();
        assert_eq!(c.services.len(), 3);
        assert_eq!(c.services[0].bind_addr(), "0.0.0.0:50001");
        assert_eq!(c.rpc_service().unwrap().port, 8100);
        assert!(parse(&[("SERVICES", "ssl://:50002")]).unwrap_err().0.contains("SSL_CERTFILE"));
        assert!(parse(&[("SERVICES", "foo://:1")]).unwrap_err().0.contains("SERVICES"));
        assert!(parse(&[("SERVICES", "tcp://:1,tcp://:1")]).is_err());
        assert!(parse(&[("REPORT_SERVICES", "rpc://h:1")]).is_err());
        let c = parse(&[("RPC_PORT", "8123")]).unwrap();
        assert_eq!(c.rpc_service().unwrap().port, 8123);
    }

    #[test]
    fn coin_defaults_follow_the_network() {
        let c = parse(&[("COIN", "BitcoinSV"), ("NET", "regtest"), ("HOME", "/h")]).unwrap();
        assert_eq!(c.daemon_urls[0].base, "http://127.0.0.1:18332/");
        assert_eq!(c.cookie_file, PathBuf::from("/h/.bitcoin/regtest/.cookie"));
        assert!(!c.coin.segwit);
        let c = parse(&[("REORG_LIMIT", "50"), ("NET", "testnet4")]).unwrap();
        assert_eq!(c.reorg_limit, 50);
    }

    #[test]
    fn numbers_that_would_overflow_are_refused() {
        let e = parse(&[("CACHE_MB", &usize::MAX.to_string())]).unwrap_err();
        assert!(e.0.contains("CACHE_MB"), "{e}");
        let e = parse(&[("MAX_SESSIONS", &(usize::MAX / 50).to_string())]).unwrap_err();
        assert!(e.0.contains("MAX_SESSIONS"), "{e}");
        let c = parse(&[("MAX_SESSIONS", "1000")]).unwrap();
        assert!(c.resumes_listening(950) && !c.resumes_listening(951));
        let c = parse(&[("MAX_SESSIONS", "1000000000")]).unwrap();
        assert!(c.resumes_listening(950_000_000) && !c.resumes_listening(950_000_001));
        let c = parse(&[("MAX_SESSIONS", "3")]).unwrap();
        assert!(c.resumes_listening(2) && !c.resumes_listening(3), "3 * 19 // 20 is 2");
        let c = parse(&[("MAX_SESSIONS", "45")]).unwrap();
        assert!(c.resumes_listening(42) && !c.resumes_listening(43), "45 * 19 // 20 is 42");
    }

    #[test]
    fn cost_settings_are_checked_as_electrumx_checks_them() {
        let c = parse(&[]).unwrap().cost;
        assert_eq!((c.soft, c.hard, c.bandwidth_unit, c.initial_concurrent), (1000.0, 10000.0, 5000.0, 10));
        let e = parse(&[("COST_SOFT_LIMIT", "500"), ("COST_HARD_LIMIT", "100")]).unwrap_err();
        assert!(e.0.contains("COST_HARD_LIMIT must be >= COST_SOFT_LIMIT"), "{e}");
        let off = parse(&[("COST_SOFT_LIMIT", "0"), ("COST_HARD_LIMIT", "0")]).unwrap().cost;
        assert_eq!((off.soft, off.hard), (0.0, 0.0));
        let bumped = parse(&[("COST_SOFT_LIMIT", "500"), ("COST_HARD_LIMIT", "500")]).unwrap().cost;
        assert_eq!(bumped.hard, 501.0);
        assert!(parse(&[("BANDWIDTH_UNIT_COST", "0")]).unwrap_err().0.contains("BANDWIDTH_UNIT_COST"));
        assert!(parse(&[("INITIAL_CONCURRENT", "0")]).unwrap_err().0.contains("INITIAL_CONCURRENT"));
        assert!(parse(&[("SESSION_GROUP_BY_SUBNET_IPV4", "33")]).unwrap_err().0.contains("IPV4"));
        let e = parse(&[("COST_EXEMPT", "10.0.0.0/8, nonsense")]).unwrap_err();
        assert!(e.0.contains("COST_EXEMPT") && e.0.contains("nonsense"), "{e}");
        let ex = parse(&[("COST_EXEMPT", "10.1.2.3/8,2001:db8::/32,192.0.2.7")]).unwrap().cost.exempt;
        let shown: Vec<String> = ex.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert_eq!(parse(&[("LOG_SESSIONS", "0")]).unwrap().log_sessions, Duration::ZERO);
        assert!(parse(&[("ANON_LOGS", "1")]).unwrap().anon_logs);
        assert_eq!(parse(&[]).unwrap().metrics_addr, None);
        assert_eq!(
            parse(&[("METRICS_ADDR", "127.0.0.1:4224")]).unwrap().metrics_addr,
            Some("127.0.0.1:4224".parse().unwrap())
        );
        assert_eq!(parse(&[("METRICS_ADDR", "[::1]:9")]).unwrap().metrics_addr, Some("[::1]:9".parse().unwrap()));
        assert_eq!(parse(&[("METRICS_ADDR", "4224")]).unwrap().metrics_addr, Some("127.0.0.1:4224".parse().unwrap()));
        for bad in ["localhost:4224", "127.0.0.1", "1.2.3.4:99999", "x"] {
            assert!(parse(&[("METRICS_ADDR", bad)]).unwrap_err().0.contains("METRICS_ADDR"), "{bad}");
        }
    }

    #[test]
    fn daemon_zmq() {
        assert_eq!(parse(&[]).unwrap().daemon_zmq, None);
        assert_eq!(parse(&[("DAEMON_ZMQ", "off")]).unwrap().daemon_zmq, Some(None));
        let at = "tcp://127.0.0.1:28332";
        assert_eq!(parse(&[("DAEMON_ZMQ", at)]).unwrap().daemon_zmq, Some(Some(at.to_string())));
    }

    #[test]
    fn booleans() {
        assert!(parse(&[("ALLOW_ROOT", "1")]).unwrap().allow_root);
        assert!(parse(&[("ALLOW_ROOT", "yes")]).unwrap().allow_root);
        assert!(!parse(&[("ALLOW_ROOT", "false")]).unwrap().allow_root);
        assert!(!parse(&[("ALLOW_ROOT", "")]).unwrap().allow_root);
    }
}
