//! The operator's tables, as ElectrumX's `electrumx_rpc` prints them: `ferrum-rpc` prints them
//! the same way, and LOG_SESSIONS writes them to the log.

use serde_json::Value;

/// "05s", "01m05s", "01h00m00s", "1d00h00m" (ElectrumX's `formatted_time`): days, hours and
/// minutes once one of them is non-zero, seconds only while fewer than three parts are shown.
pub fn formatted_time(secs: f64, sep: &str) -> String {
    let t = secs.max(0.0) as u64;
    let (d, h, m, s) = (t / 86400, (t % 86400) / 3600, (t % 3600) / 60, t % 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if !parts.is_empty() || h > 0 {
        parts.push(format!("{h:02}h"));
    }
    if !parts.is_empty() || m > 0 {
        parts.push(format!("{m:02}m"));
    }
    if parts.len() < 3 {
        parts.push(format!("{s:02}s"));
    }
    parts.join(sep)
}

/// 1234567 → "1,234,567".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

fn int(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).unwrap_or(0)
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// The `sessions` table from its rows ([id, flags, peer, client, protocol, cost, extra cost,
/// pending requests, transactions sent, subscriptions, messages received, bytes received,
/// messages sent, bytes sent, seconds connected]).
pub fn sessions_lines(rows: &Value) -> Vec<String> {
    let line = |f: [String; 15]| {
        format!(
            "{:<6} {:<5} {:>17} {:>5} {:>7} {:>7} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>21}",
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14]
        )
    };
    let header = [
        "ID", "Flags", "Client", "Proto", "Cost", "XCost", "Reqs", "Txs", "Subs", "Recv", "Recv KB", "Sent", "Sent KB",
        "Time", "Peer",
    ];
    let mut out = vec![line(header.map(str::to_string))];
    for r in rows.as_array().into_iter().flatten() {
        let c = |i: usize| &r[i];
        out.push(line([
            int(c(0)).to_string(),
            text(c(1)),
            text(c(3)),
            text(c(4)),
            thousands(int(c(5))),
            thousands(int(c(6))),
            thousands(int(c(7))),
            thousands(int(c(8))),
            thousands(int(c(9))),
            thousands(int(c(10))),
            thousands(int(c(11)) / 1024),
            thousands(int(c(12))),
            thousands(int(c(13)) / 1024),
            formatted_time(c(14).as_f64().unwrap_or(0.0), ""),
            text(c(2)),
        ]));
    }
    out
}

/// The `groups` table from its rows ([name, sessions, cost, retained cost, pending requests,
/// transactions sent, subscriptions, messages received, bytes received, messages sent, bytes
/// sent]).
pub fn groups_lines(rows: &Value) -> Vec<String> {
    // As ElectrumX writes it: no space between the Subs and Recv columns.
    let line = |f: [String; 11]| {
        format!(
            "{:<14} {:>9} {:>8} {:>8} {:>6} {:>6} {:>8}{:>7} {:>9} {:>7} {:>9}",
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10]
        )
    };
    let header = ["Name", "Sessions", "Cost", "Retained", "Reqs", "Txs", "Subs", "Recv", "Recv KB", "Sent", "Sent KB"];
    let mut out = vec![line(header.map(str::to_string))];
    for r in rows.as_array().into_iter().flatten() {
        let c = |i: usize| &r[i];
        out.push(line([
            text(c(0)),
            thousands(int(c(1))),
            thousands(int(c(2))),
            thousands(int(c(3))),
            thousands(int(c(4))),
            thousands(int(c(5))),
            thousands(int(c(6))),
            thousands(int(c(7))),
            thousands(int(c(8)) / 1024),
            thousands(int(c(9))),
            thousands(int(c(10)) / 1024),
        ]));
    }
    out
}

/// The `peers` table from its rows, as ElectrumX prints it.
pub fn peers_lines(rows: &Value) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let ago = |v: &Value| v.as_f64().map_or("Never".to_string(), |t| formatted_time((now - t).max(0.0), " "));
    let line = |f: [String; 13]| {
        format!(
            "{:<62} {:<6} {:>5} {:>5} {:<17} {:>4} {:>4} {:>8} {:>11} {:>11} {:>5} {:>20} {:<15}",
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]
        )
    };
    let header = [
        "Host",
        "Status",
        "TCP",
        "SSL",
        "Server",
        "Min",
        "Max",
        "Pruning",
        "Last Good",
        "Last Try",
        "Tries",
        "Source",
        "IP Address",
    ];
    let mut out = vec![line(header.map(str::to_string))];
    for r in rows.as_array().into_iter().flatten() {
        let host = text(&r["host"]);
        let f = &r["features"];
        let port = |k: &str| f["hosts"][host.as_str()][k].as_u64().map_or(String::new(), |p| p.to_string());
        let or = |v: &Value, d: &str| v.as_str().map_or(d.to_string(), str::to_string);
        out.push(line([
            host.chars().take(62).collect(),
            text(&r["status"]),
            port("tcp_port"),
            port("ssl_port"),
            or(&f["server_version"], "unknown"),
            or(&f["protocol_min"], ""),
            or(&f["protocol_max"], ""),
            f["pruning"].as_u64().map_or(String::new(), |p| p.to_string()),
            ago(&r["last_good"]),
            ago(&r["last_try"]),
            r["try_count"].to_string(),
            text(&r["source"]).chars().take(20).collect(),
            or(&r["ip_addr"], ""),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_as_electrumx_writes_them() {
        for (secs, spaced, tight) in [
            (0.0, "00s", "00s"),
            (5.0, "05s", "05s"),
            (65.0, "01m 05s", "01m05s"),
            (3600.0, "01h 00m 00s", "01h00m00s"),
            (86400.0, "1d 00h 00m", "1d00h00m"),
            (90061.9, "1d 01h 01m", "1d01h01m"),
        ] {
            assert_eq!(formatted_time(secs, " "), spaced);
            assert_eq!(formatted_time(secs, ""), tight);
        }
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-4321), "-4,321");
    }

    #[test]
    fn tables_as_electrumx_prints_them() {
        // The rows ElectrumX 2.0.0 answered, and the lines its client printed for them.
        let rows = json!([[
            0,
            "T10",
            "127.0.0.1:59936",
            "electrum/4.5.8",
            "1.4.2",
            5.5312,
            5.5274,
            0,
            0,
            0,
            1,
            95,
            1,
            61,
            5.2
        ]]);
        let lines = sessions_lines(&rows);
        assert_eq!(
            lines[0],
            "ID     Flags            Client Proto    Cost   XCost  Reqs   Txs    Subs    Recv Recv KB    Sent Sent KB      Time                  Peer"
        );
        assert_eq!(
            lines[1],
            "0      T10      electrum/4.5.8 1.4.2       5       5     0     0       0       1       0       1       0       05s       127.0.0.1:59936"
        );
        let groups = json!([["203.0.113.0/24", 2, 11.0586, 0, 0, 0, 0, 2, 173, 2, 120]]);
        let lines = groups_lines(&groups);
        assert_eq!(
            lines[0],
            "Name            Sessions     Cost Retained   Reqs    Txs     Subs   Recv   Recv KB    Sent   Sent KB"
        );
        assert_eq!(
            lines[1],
            "203.0.113.0/24         2       11        0      0      0        0      2         0       2         0"
        );
    }
}
