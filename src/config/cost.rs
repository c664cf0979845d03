//! The cost model's variables (COST_SOFT_LIMIT, COST_HARD_LIMIT, ...), with ElectrumX's names,
//! defaults and checks.

use std::time::Duration;

use super::{ConfigError, Env};

/// The cost model's settings, with ElectrumX's names and defaults (see `electrum::cost`).
#[derive(Clone, Debug, PartialEq)]
pub struct CostLimits {
    pub soft: f64,
    pub hard: f64,
    /// Bytes per unit of cost.
    pub bandwidth_unit: f64,
    pub initial_concurrent: usize,
    pub request_sleep: Duration,
    pub subnet_v4: u8,
    pub subnet_v6: u8,
    /// Networks whose sessions are never throttled nor grouped (COST_EXEMPT).
    pub exempt: Vec<ipnet::IpNet>,
    /// Group private and loopback addresses too (SESSION_GROUP_PRIVATE).
    pub group_private: bool,
}

impl Default for CostLimits {
    fn default() -> Self {
        CostLimits {
            soft: 1000.0,
            hard: 10000.0,
            bandwidth_unit: 5000.0,
            initial_concurrent: 10,
            request_sleep: Duration::from_millis(2500),
            subnet_v4: 24,
            subnet_v6: 48,
            exempt: Vec::new(),
            group_private: false,
        }
    }
}

/// The cost model's variables, checked as ElectrumX checks them (and a little more).
pub(super) fn read_cost(env: &Env) -> Result<CostLimits, ConfigError> {
    let d = CostLimits::default();
    let soft: f64 = env.integer("COST_SOFT_LIMIT", d.soft as u64, "a whole number")? as f64;
    let mut hard: f64 = env.integer("COST_HARD_LIMIT", d.hard as u64, "a whole number")? as f64;
    if hard < soft {
        return Err(ConfigError(format!(
            "COST_HARD_LIMIT must be >= COST_SOFT_LIMIT (they are {hard} and {soft}); set both to 0 to turn throttling off"
        )));
    }
    if hard == soft && soft > 0.0 {
        tracing::info!("COST_HARD_LIMIT equals COST_SOFT_LIMIT: raising COST_HARD_LIMIT to {}", soft + 1.0);
        hard = soft + 1.0;
    }
    let bandwidth_unit: u64 = env.integer("BANDWIDTH_UNIT_COST", d.bandwidth_unit as u64, "a number of bytes")?;
    if bandwidth_unit == 0 {
        return Err(ConfigError("BANDWIDTH_UNIT_COST must be at least 1 byte per unit of cost".into()));
    }
    let initial_concurrent: usize = env.integer("INITIAL_CONCURRENT", d.initial_concurrent, "a number of requests")?;
    if initial_concurrent == 0 {
        return Err(ConfigError("INITIAL_CONCURRENT must be at least 1".into()));
    }
    let request_sleep: u64 = env.integer("REQUEST_SLEEP", 2500, "a number of milliseconds")?;
    let subnet_v4: u8 = env.integer("SESSION_GROUP_BY_SUBNET_IPV4", d.subnet_v4, "a prefix length")?;
    let subnet_v6: u8 = env.integer("SESSION_GROUP_BY_SUBNET_IPV6", d.subnet_v6, "a prefix length")?;
    if subnet_v4 > 32 || subnet_v6 > 128 {
        return Err(ConfigError(format!(
            "SESSION_GROUP_BY_SUBNET_IPV4 must be at most 32 and SESSION_GROUP_BY_SUBNET_IPV6 at most 128 (they are {subnet_v4} and {subnet_v6})"
        )));
    }
    let exempt = env
        .list("COST_EXEMPT")
        .map(|s| {
            // A bare address is a network of one.
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    ConfigError(format!("COST_EXEMPT entry {s:?} is not a network such as 10.0.0.0/8 or 2001:db8::/32"))
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(CostLimits {
        soft,
        hard,
        bandwidth_unit: bandwidth_unit as f64,
        initial_concurrent,
        request_sleep: Duration::from_millis(request_sleep),
        subnet_v4,
        subnet_v6,
        exempt,
        group_private: env.boolean("SESSION_GROUP_PRIVATE", false),
    })
}
