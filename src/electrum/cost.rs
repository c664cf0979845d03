//! The cost model: ElectrumX's, with the same variables and formulas (shared/docs limits.md),
//! so a public server survives heavy and abusive clients.
//!
//! Every session accumulates cost: 5 to connect, each request's cost (`Request::base_cost`
//! plus what its answer read), bytes in both directions at 1 / BANDWIDTH_UNIT_COST, 100 per
//! error (1,100 for unparseable JSON). Cost decays at COST_HARD_LIMIT / (10000 + 5 ×
//! subscriptions) per second, applied exactly whenever it is read (ElectrumX applies it lazily).
//! Sessions from one subnet (/24, /48) form a group: each is throttled on its own cost plus the
//! rest of the group's (`XCost`), and a closed session's cost stays with its group, decaying at
//! COST_HARD_LIMIT / 5000 per second, so reconnecting does not escape it. Private and loopback
//! addresses are not grouped; COST_EXEMPT networks are neither grouped nor throttled.
//!
//! Throttling: with f = (cost + XCost − soft) / (hard − soft), a session may have
//! ceil((1 − f) × INITIAL_CONCURRENT) requests in flight, each waits f × REQUEST_SLEEP first, and
//! at f ≥ 1 the next request is answered -101 "excessive resource usage" and the session closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ipnet::IpNet;

pub use crate::config::CostLimits;

/// The cost of connecting.
pub const CONNECT_COST: f64 = 5.0;
/// Added for every error answered.
pub const ERROR_COST: f64 = 100.0;
/// Added for a message that is not JSON (on top of the error cost).
pub const PARSE_ERROR_COST: f64 = 1000.0;

/// What hashing a status over `entries` transactions costs (ElectrumX: 0.00002 per byte of
/// the "txid:height:" string, about 72 bytes an entry).
pub fn status_preimage_cost(entries: usize) -> f64 {
    entries as f64 * 72.0 * 0.00002
}

/// What notifying `count` statuses covering `entries` transactions costs a session: what
/// subscribing to them would (ElectrumX recomputes each status for each session).
pub fn notification_cost(count: usize, entries: usize) -> f64 {
    count as f64 * 0.3 + entries as f64 * 0.001 + status_preimage_cost(entries)
}

impl CostLimits {
    /// COST_SOFT_LIMIT=COST_HARD_LIMIT=0 turns throttling off.
    pub fn enabled(&self) -> bool {
        self.hard > self.soft
    }

    /// Decay of a session's cost per second.
    fn session_decay(&self, subs: usize) -> f64 {
        self.hard / (10000.0 + 5.0 * subs as f64)
    }

    /// Decay of a group's retained cost per second (ElectrumX: 300 × hard / 5000 every 300 s).
    fn retained_decay(&self) -> f64 {
        self.hard / 5000.0
    }

    /// The throttle for a total cost: the fraction of the way from soft to hard, the requests
    /// it may have in flight, and how long each waits first. `None`: over the hard limit.
    pub fn throttle(&self, cost: f64) -> Option<Throttle> {
        if !self.enabled() {
            return Some(Throttle {
                fraction: 0.0,
                concurrency: self.initial_concurrent.max(1),
                sleep: Duration::ZERO,
            });
        }
        let fraction = ((cost - self.soft) / (self.hard - self.soft)).max(0.0);
        let concurrency = ((1.0 - fraction) * self.initial_concurrent as f64).ceil().max(0.0) as usize;
        (concurrency > 0).then(|| Throttle {
            fraction,
            concurrency,
            sleep: self.request_sleep.mul_f64(fraction.min(1.0)),
        })
    }

    /// The group a peer belongs to: its subnet, unless private, loopback or exempt.
    pub fn group_name(&self, addr: &IpAddr) -> Option<String> {
        let addr = canonical(addr);
        if self.is_exempt(&addr) || (!self.group_private && is_private(&addr)) {
            return None;
        }
        let prefix = if addr.is_ipv4() { self.subnet_v4 } else { self.subnet_v6 };
        IpNet::new(addr, prefix).ok().map(|n| n.trunc().to_string())
    }

    pub fn is_exempt(&self, addr: &IpAddr) -> bool {
        let addr = canonical(addr);
        self.exempt.iter().any(|n| n.contains(&addr))
    }
}

/// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are their IPv4 address.
fn canonical(addr: &IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*addr, IpAddr::V4),
        v4 => *v4,
    }
}

/// Private, loopback, link-local, unique-local, documentation or unspecified: no group.
fn is_private(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_private() || a.is_loopback() || a.is_link_local() || a.is_documentation() || a.is_unspecified()
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0xdb8
        }
    }
}

/// The throttling a cost leads to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    pub fraction: f64,
    /// Requests the session may have in flight.
    pub concurrency: usize,
    /// How long each request waits before it runs.
    pub sleep: Duration,
}

/// A cost that decays with time.
#[derive(Clone, Copy, Debug)]
struct Decaying {
    value: f64,
    at: Instant,
}

impl Decaying {
    fn new(value: f64, now: Instant) -> Decaying {
        Decaying { value, at: now }
    }

    /// The value at `now`, decayed at `rate` per second since it was last read.
    fn at(&mut self, now: Instant, rate: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.value = (self.value - elapsed * rate).max(0.0);
        self.at = now.max(self.at);
        self.value
    }
}

struct SessionInner {
    cost: Decaying,
    subs: usize,
}

/// One session's cost, shared by its concurrent requests and read by the admin RPC.
pub struct SessionCost {
    limits: Arc<CostLimits>,
    inner: Mutex<SessionInner>,
    group: Option<Arc<Group>>,
    exempt: bool,
}

impl SessionCost {
    /// The cost of a session from `peer`; it joins its group in `groups`.
    pub fn new(limits: Arc<CostLimits>, groups: &Groups, peer: &SocketAddr, now: Instant) -> Arc<SessionCost> {
        let exempt = limits.is_exempt(&peer.ip());
        let group = limits.group_name(&peer.ip()).map(|name| groups.get_or_make(&name, now));
        let cost = Arc::new(SessionCost {
            limits,
            inner: Mutex::new(SessionInner { cost: Decaying::new(CONNECT_COST, now), subs: 0 }),
            group,
            exempt,
        });
        if let Some(g) = &cost.group {
            g.members.lock().expect("lock").push(Arc::downgrade(&cost));
        }
        cost
    }

    pub fn add(&self, amount: f64, now: Instant) {
        let mut i = self.inner.lock().expect("lock");
        let rate = self.limits.session_decay(i.subs);
        let value = i.cost.at(now, rate) + amount;
        i.cost.value = value;
    }

    /// Bytes received or sent.
    pub fn add_bytes(&self, bytes: usize, now: Instant) {
        if bytes > 0 {
            self.add(bytes as f64 / self.limits.bandwidth_unit, now);
        }
    }

    /// The subscription count, which slows the decay.
    pub fn set_subs(&self, subs: usize, now: Instant) {
        let mut i = self.inner.lock().expect("lock");
        let rate = self.limits.session_decay(i.subs);
        i.cost.at(now, rate);
        i.subs = subs;
    }

    /// The session's own cost now.
    pub fn cost(&self, now: Instant) -> f64 {
        let mut i = self.inner.lock().expect("lock");
        let rate = self.limits.session_decay(i.subs);
        i.cost.at(now, rate)
    }

    /// The rest of its group's cost: the other members' and the group's retained cost.
    pub fn extra_cost(&self, now: Instant) -> f64 {
        match &self.group {
            Some(g) => (g.cost(now) - self.cost(now)).max(0.0),
            None => 0.0,
        }
    }

    pub fn group_name(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.name.as_str())
    }

    pub fn is_exempt(&self) -> bool {
        self.exempt
    }

    /// How the session is throttled now; `None`: it is over the hard limit and must close.
    pub fn throttle(&self, now: Instant) -> Option<Throttle> {
        if self.exempt {
            return self.limits.throttle(0.0);
        }
        let own = self.cost(now);
        let extra = self.group.as_ref().map_or(0.0, |g| (g.recent_cost(now) - own).max(0.0));
        self.limits.throttle(own + extra)
    }

    /// The session closes: its cost stays with its group.
    pub fn close(self: &Arc<Self>, now: Instant) {
        let Some(g) = &self.group else { return };
        let cost = self.cost(now);
        let mut retained = g.retained.lock().expect("lock");
        let rate = self.limits.retained_decay();
        let value = retained.at(now, rate) + cost;
        retained.value = value;
        drop(retained);
        let me = Arc::downgrade(self);
        g.members.lock().expect("lock").retain(|m| !m.ptr_eq(&me) && m.strong_count() > 0);
    }
}

/// How old a group's total may be when a member is throttled on it: summing the group for
/// every request would cost each request as many locks as the subnet has sessions.
const GROUP_TOTAL_TTL: Duration = Duration::from_millis(100);

/// The sessions of one subnet, and what the closed ones left behind.
pub struct Group {
    pub name: String,
    limits: Arc<CostLimits>,
    retained: Mutex<Decaying>,
    members: Mutex<Vec<Weak<SessionCost>>>,
    /// The total as last summed, and when.
    total: Mutex<Option<(f64, Instant)>>,
}

impl Group {
    /// The cost of the closed members, decayed to `now`.
    pub fn retained(&self, now: Instant) -> f64 {
        self.retained.lock().expect("lock").at(now, self.limits.retained_decay())
    }

    pub fn members(&self) -> Vec<Arc<SessionCost>> {
        self.members.lock().expect("lock").iter().filter_map(Weak::upgrade).collect()
    }

    /// Retained cost plus every live member's cost, summed now.
    pub fn cost(&self, now: Instant) -> f64 {
        let members = self.members.lock().expect("lock");
        let live = members.iter().filter_map(Weak::upgrade).fold(0.0, |sum, m| sum + m.cost(now));
        drop(members);
        let total = self.retained(now) + live;
        *self.total.lock().expect("lock") = Some((total, now));
        total
    }

    /// The total, summed at most GROUP_TOTAL_TTL ago.
    fn recent_cost(&self, now: Instant) -> f64 {
        if let Some((total, at)) = *self.total.lock().expect("lock") {
            if now.saturating_duration_since(at) < GROUP_TOTAL_TTL {
                return total;
            }
        }
        self.cost(now)
    }
}

/// Every group, by name. A group with no members and nothing retained is forgotten.
pub struct Groups {
    limits: Arc<CostLimits>,
    map: Mutex<HashMap<String, Arc<Group>>>,
}

impl Groups {
    pub fn new(limits: Arc<CostLimits>) -> Groups {
        Groups { limits, map: Mutex::default() }
    }

    fn get_or_make(&self, name: &str, now: Instant) -> Arc<Group> {
        let mut map = self.map.lock().expect("lock");
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Group {
                    name: name.to_string(),
                    limits: self.limits.clone(),
                    retained: Mutex::new(Decaying::new(0.0, now)),
                    members: Mutex::default(),
                    total: Mutex::new(None),
                })
            })
            .clone()
    }

    /// The groups now, forgetting the empty ones.
    pub fn all(&self, now: Instant) -> Vec<Arc<Group>> {
        let mut map = self.map.lock().expect("lock");
        map.retain(|_, g| g.retained(now) > 0.0 || !g.members().is_empty());
        let mut groups: Vec<Arc<Group>> = map.values().cloned().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        groups
    }

    pub fn get(&self, name: &str) -> Option<Arc<Group>> {
        self.map.lock().expect("lock").get(name).cloned()
    }

    /// How many groups there are now.
    pub fn len(&self) -> usize {
        self.all(Instant::now()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Arc<CostLimits> {
        Arc::new(CostLimits::default())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn throttling_follows_the_fraction_between_the_limits() {
        let l = CostLimits::default();
        // Below the soft limit: full concurrency, no sleep.
        assert_eq!(l.throttle(500.0), Some(Throttle { fraction: 0.0, concurrency: 10, sleep: Duration::ZERO }));
        // limits.md A10/A11: cost 5,505 is half way: 5 requests, each waits 1.25 s.
        let t = l.throttle(5505.0).unwrap();
        assert!((t.fraction - 0.5006).abs() < 1e-3, "{t:?}");
        assert_eq!(t.concurrency, 5);
        assert!((t.sleep.as_secs_f64() - 1.2514).abs() < 1e-3, "{t:?}");
        assert_eq!(l.throttle(9999.0).unwrap().concurrency, 1);
        // At the hard limit: refused.
        assert_eq!(l.throttle(10000.0), None);
        assert_eq!(l.throttle(20000.0), None);
        // Both limits 0: off.
        let off = CostLimits { soft: 0.0, hard: 0.0, ..CostLimits::default() };
        assert_eq!(off.throttle(1e12).unwrap().concurrency, 10);
    }

    #[test]
    fn cost_decays_with_time_and_subscriptions_slow_it() {
        let now = Instant::now();
        let groups = Groups::new(limits());
        let s = SessionCost::new(limits(), &groups, &addr("127.0.0.1:1"), now);
        assert_eq!(s.cost(now), CONNECT_COST);
        s.add(3300.0, now);
        // 1 per second at the default hard limit with no subscriptions (A8).
        assert!((s.cost(now + Duration::from_secs(60)) - 3245.0).abs() < 1e-6);
        // 1000 subscriptions: 10000 / 15000 per second.
        s.set_subs(1000, now + Duration::from_secs(60));
        let later = s.cost(now + Duration::from_secs(90));
        assert!((later - (3245.0 - 30.0 * 10000.0 / 15000.0)).abs() < 1e-6, "{later}");
        // Never below zero.
        assert_eq!(s.cost(now + Duration::from_secs(100_000)), 0.0);
        // Bandwidth: bytes / BANDWIDTH_UNIT_COST.
        s.add_bytes(50_000, now + Duration::from_secs(100_000));
        assert!((s.cost(now + Duration::from_secs(100_000)) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn subnets_share_cost_and_keep_it_after_a_close() {
        let now = Instant::now();
        let l = limits();
        let groups = Groups::new(l.clone());
        let a = SessionCost::new(l.clone(), &groups, &addr("1.2.3.4:5"), now);
        let b = SessionCost::new(l.clone(), &groups, &addr("1.2.3.5:6"), now);
        let c = SessionCost::new(l.clone(), &groups, &addr("1.2.4.5:6"), now);
        assert_eq!(a.group_name(), Some("1.2.3.0/24"));
        assert_eq!(c.group_name(), Some("1.2.4.0/24"));
        a.add(2995.0, now);
        // B is throttled on A's cost (A15): XCost = A's cost.
        assert!((b.extra_cost(now) - 3000.0).abs() < 1e-9);
        assert!((c.extra_cost(now)).abs() < 1e-9, "another subnet is not affected");
        assert_eq!(b.throttle(now).unwrap().concurrency, 8, "B is throttled by A's cost");
        // A closes: its cost stays with the group and decays at hard / 5000 per second (A16).
        a.close(now);
        drop(a);
        let g = groups.get("1.2.3.0/24").unwrap();
        assert!((g.retained(now) - 3000.0).abs() < 1e-9);
        assert!((g.retained(now + Duration::from_secs(300)) - 2400.0).abs() < 1e-6);
        // A new session from the subnet inherits it.
        let d = SessionCost::new(l.clone(), &groups, &addr("1.2.3.99:1"), now + Duration::from_secs(300));
        let x = d.extra_cost(now + Duration::from_secs(300));
        assert!((x - (2400.0 + b.cost(now + Duration::from_secs(300)))).abs() < 1e-6, "{x}");
        assert_eq!(groups.all(now + Duration::from_secs(300)).len(), 2);
    }

    #[test]
    fn private_exempt_and_mapped_addresses() {
        let l = CostLimits {
            exempt: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
                "8.8.8.0/24".parse().unwrap(),
            ],
            ..CostLimits::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(l.group_name(&ip("127.0.0.1")), None, "loopback");
        assert_eq!(l.group_name(&ip("192.168.1.7")), None, "private");
        assert_eq!(l.group_name(&ip("::1")), None);
        assert_eq!(l.group_name(&ip("fd00::1")), None, "unique local");
        assert_eq!(l.group_name(&ip("8.8.8.8")), None, "exempt");
        assert!(l.is_exempt(&ip("8.8.8.8")) && l.is_exempt(&ip("::ffff:8.8.8.8")));
        assert_eq!(l.group_name(&ip("2a01:4f8:1:2::3")), Some("2a01:4f8:1::/48".into()));
        assert_eq!(l.group_name(&ip("::ffff:93.184.216.34")), Some("93.184.216.0/24".into()), "mapped IPv4");
        let with_private = CostLimits { group_private: true, ..CostLimits::default() };
        assert_eq!(with_private.group_name(&ip("127.1.0.9")), Some("127.1.0.0/24".into()));
        // An exempt session is never throttled, whatever it costs.
        let now = Instant::now();
        let l = Arc::new(l);
        let groups = Groups::new(l.clone());
        let s = SessionCost::new(l, &groups, &addr("8.8.8.8:1"), now);
        s.add(1e9, now);
        assert_eq!(s.throttle(now).unwrap().concurrency, 10);
    }
}
