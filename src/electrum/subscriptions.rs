//! Subscriptions and notifications.
//!
//! Writers (the block processor, the mempool refresh) report the script hashes they touched.
//! The notifier coalesces reports, keeps those somebody subscribed to, computes each status
//! once (on the worker pool, a fresh snapshot per chunk) and broadcasts the statuses; each
//! session sends those that differ from what it last sent. A session that falls too far
//! behind the broadcast recomputes its own subscriptions instead (`resync`), so nothing is lost
//! and nothing grows without bound.
//!
//! The notifier itself (index changes to statuses) is `super::notifier`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use tokio::sync::broadcast;

use crate::index::{ConfirmedStatus, Index, OutpointStatus};
use crate::jsonrpc::notification;
use crate::types::{push_hex32, FastSet, HashX, HexOrder, OutPoint, ScriptHash, StatusHash};

/// Notifications queued per session before it must resynchronise its subscriptions.
pub const EVENT_QUEUE: usize = 64;

/// New statuses by script hash, with the transactions each covers.
pub type Statuses = HashMap<ScriptHash, (Option<StatusHash>, usize)>;

/// What the notifier broadcasts to sessions.
pub enum Event {
    Tip {
        header: [u8; 80],
        /// The notification, built once for every session.
        text: String,
        /// When the index reported the change (for the notification delay).
        at: Instant,
    },
    /// New statuses of touched, subscribed script hashes, with the transactions each covers,
    /// and of subscribed outpoints that may have changed.
    Statuses { statuses: Statuses, outpoints: HashMap<OutPoint, OutpointStatus>, at: Instant },
}

/// Notifications for one session, and the history entries they cover (for the cost model: a
/// notification costs what computing the status costs).
#[derive(Default, Debug)]
pub struct Notifications {
    pub texts: Vec<String>,
    pub entries: usize,
    /// How many of `texts` are header notifications, and how many 1.7 pings (the rest are
    /// statuses).
    pub headers: usize,
    pub pings: usize,
    /// When the index reported the change they tell of (none after a resync).
    pub since: Option<Instant>,
}

impl Notifications {
    /// Adds `more` (of a later event) to go out in the same write.
    pub fn append(&mut self, more: Notifications) {
        self.texts.extend(more.texts);
        self.entries += more.entries;
        self.headers += more.headers;
        self.pings += more.pings;
        self.since = match (self.since, more.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What one session is subscribed to, and what it was last told.
#[derive(Default)]
pub struct SessionSubs {
    /// Subscribed script hashes and the status last sent for each.
    pub scripts: HashMap<ScriptHash, Option<StatusHash>>,
    /// Subscribed outpoints (1.7): the script hash they are registered under (their spk_hint's)
    /// and the status last sent.
    pub outpoints: HashMap<OutPoint, (HashX, OutpointStatus)>,
    pub headers: bool,
    pub last_tip_sent: Option<[u8; 80]>,
    /// Protocol 1.7: script notifications are named `blockchain.scriptpubkey.subscribe`, and
    /// each block brings a `server.ping`, so traffic does not tell how many statuses changed.
    pub v17: bool,
}

impl SessionSubs {
    /// Subscriptions held, of either kind (MAX_SUBS_PER_SESSION counts both).
    pub fn count(&self) -> usize {
        self.scripts.len() + self.outpoints.len()
    }
}

/// Every session's outpoint subscriptions: by the script hash a change would touch, and the
/// status last computed for each (which decides whether a block may change it unseen).
#[derive(Default)]
pub(super) struct OutpointRegistry {
    pub(super) by_hashx: HashMap<HashX, HashMap<OutPoint, u32>>,
    pub(super) entries: HashMap<OutPoint, OutpointEntry>,
}

#[derive(Default)]
pub(super) struct OutpointEntry {
    pub(super) sessions: u32,
    /// A client's spk_hint said the script is unspendable (so the index does not keep it).
    pub(super) unspendable: bool,
    pub(super) last: OutpointStatus,
}

/// Every session's subscriptions by index key, with how many sessions want each; and the
/// broadcast of changes.
pub struct Subscriptions {
    pub(super) registry: Mutex<HashMap<HashX, HashMap<ScriptHash, u32>>>,
    /// The confirmed part of each subscribed key's status, at the tip it names. Only keys in
    /// `registry`: the last unsubscription drops it. Lock order: `registry`, then this.
    pub(super) confirmed: Mutex<HashMap<HashX, ConfirmedStatus>>,
    /// Histories the notifier read (every other status came from a confirmed part).
    pub(super) histories_read: AtomicU64,
    pub(super) outpoints: Mutex<OutpointRegistry>,
    pub(super) events: broadcast::Sender<Arc<Event>>,
    pub(super) index: Arc<Index>,
    /// The most confirmed history entries a status may cover (see `Ctx::history_limit`).
    pub(super) history_limit: usize,
}

impl Subscriptions {
    pub fn new(index: Arc<Index>, history_limit: usize) -> Arc<Subscriptions> {
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        Arc::new(Subscriptions {
            registry: Mutex::default(),
            confirmed: Mutex::default(),
            histories_read: AtomicU64::new(0),
            outpoints: Mutex::default(),
            events,
            index,
            history_limit,
        })
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Counts a subscription; call before reading the status it answers, so a change
    /// published in between is not missed.
    pub fn register(&self, sh: &ScriptHash) {
        *self.registry.lock().expect("lock").entry(sh.hashx()).or_default().entry(*sh).or_default() += 1;
    }

    pub fn unregister(&self, sh: &ScriptHash) {
        let mut reg = self.registry.lock().expect("lock");
        let hashx = sh.hashx();
        if let Some(m) = reg.get_mut(&hashx) {
            if let Some(c) = m.get_mut(sh) {
                *c -= 1;
                if *c == 0 {
                    m.remove(sh);
                }
            }
            if m.is_empty() {
                reg.remove(&hashx);
                self.confirmed.lock().expect("lock").remove(&hashx);
            }
        }
    }

    /// Keeps confirmed parts of statuses for the next block to extend (of subscribed keys only,
    /// so nothing outlives its subscriptions).
    pub fn keep_confirmed(&self, parts: impl IntoIterator<Item = (HashX, ConfirmedStatus)>) {
        let reg = self.registry.lock().expect("lock");
        let mut confirmed = self.confirmed.lock().expect("lock");
        for (hashx, part) in parts {
            if reg.contains_key(&hashx) {
                confirmed.insert(hashx, part);
            }
        }
    }

    /// Confirmed parts kept now, and how many histories the notifier has read (for the tests:
    /// that a block extends statuses rather than reading them again).
    pub fn confirmed_kept(&self) -> (usize, u64) {
        (self.confirmed.lock().expect("lock").len(), self.histories_read.load(Ordering::Relaxed))
    }

    /// Counts an outpoint subscription under the script hash its changes touch; call before
    /// reading the status it answers.
    pub fn register_outpoint(&self, op: &OutPoint, hashx: HashX, unspendable: bool) {
        let mut reg = self.outpoints.lock().expect("lock");
        *reg.by_hashx.entry(hashx).or_default().entry(*op).or_default() += 1;
        let e = reg.entries.entry(*op).or_default();
        e.sessions += 1;
        e.unspendable |= unspendable;
    }

    /// Records the status just answered, so the next block knows whether to look again.
    pub fn outpoint_answered(&self, op: &OutPoint, status: OutpointStatus) {
        if let Some(e) = self.outpoints.lock().expect("lock").entries.get_mut(op) {
            e.last = status;
        }
    }

    pub fn unregister_outpoint(&self, op: &OutPoint, hashx: &HashX) {
        let mut reg = self.outpoints.lock().expect("lock");
        if let Some(m) = reg.by_hashx.get_mut(hashx) {
            if let Some(c) = m.get_mut(op) {
                *c -= 1;
                if *c == 0 {
                    m.remove(op);
                }
            }
            if m.is_empty() {
                reg.by_hashx.remove(hashx);
            }
        }
        if let Some(e) = reg.entries.get_mut(op) {
            e.sessions -= 1;
            if e.sessions == 0 {
                reg.entries.remove(op);
            }
        }
    }

    /// Subscribed outpoints an index change may have changed: those under a touched script
    /// hash and, on a new block, those not known yet or not wholly confirmed (a mined parent
    /// changes their heights without touching their script) and unindexed (OP_RETURN) ones.
    pub(super) fn outpoints_to_check(&self, touched: &FastSet<HashX>, new_tip: bool) -> Vec<(OutPoint, bool)> {
        let reg = self.outpoints.lock().expect("lock");
        // Every block touches thousands of script hashes; most servers have no outpoint
        // subscription at all.
        if reg.entries.is_empty() {
            return Vec::new();
        }
        let mut out: HashSet<OutPoint> =
            touched.iter().filter_map(|h| reg.by_hashx.get(h)).flat_map(|m| m.keys().copied()).collect();
        if new_tip {
            let may_change = |e: &OutpointEntry| e.unspendable || e.last.may_change_with_a_block();
            out.extend(reg.entries.iter().filter(|(_, e)| may_change(e)).map(|(op, _)| *op));
        }
        out.into_iter().map(|op| (op, reg.entries.get(&op).is_some_and(|e| e.unspendable))).collect()
    }

    /// The notifications a broadcast event means for one session (updating what it was told).
    pub fn notifications_for(&self, s: &mut SessionSubs, ev: &Event) -> Notifications {
        let mut out = Notifications::default();
        match ev {
            Event::Tip { header, text, at } => {
                if s.headers && s.last_tip_sent != Some(*header) {
                    s.last_tip_sent = Some(*header);
                    out.texts.push(text.clone());
                    out.headers += 1;
                    out.since = Some(*at);
                }
                if s.v17 {
                    out.texts.push(ping_notification());
                    out.pings += 1;
                }
            }
            Event::Statuses { statuses, outpoints, at } => {
                let mine: Vec<ScriptHash> = if statuses.len() < s.scripts.len() {
                    statuses.keys().filter(|k| s.scripts.contains_key(*k)).copied().collect()
                } else {
                    s.scripts.keys().filter(|k| statuses.contains_key(*k)).copied().collect()
                };
                for sh in mine {
                    let (status, entries) = statuses[&sh];
                    if let Some(text) = changed(s, sh, status) {
                        out.texts.push(text);
                        out.entries += entries;
                        out.since = Some(*at);
                    }
                }
                if !s.outpoints.is_empty() {
                    for (op, st) in outpoints {
                        if let Some(text) = outpoint_changed(s, op, *st) {
                            out.texts.push(text);
                            out.since = Some(*at);
                        }
                    }
                }
            }
        }
        out
    }

    /// After missing broadcasts: compare every subscription and the tip with the index now.
    pub async fn resync(self: &Arc<Self>, s: &mut SessionSubs) -> Notifications {
        let mut out = Notifications::default();
        if s.headers {
            if let Some((height, header)) = tip(&self.index) {
                if s.last_tip_sent != Some(header) {
                    s.last_tip_sent = Some(header);
                    out.texts.push(tip_notification(height, &header));
                    out.headers += 1;
                }
            }
        }
        let wanted: Vec<ScriptHash> = s.scripts.keys().copied().collect();
        for (sh, (status, entries)) in self.statuses(wanted).await.unwrap_or_default() {
            if let Some(text) = changed(s, sh, status) {
                out.texts.push(text);
                out.entries += entries;
            }
        }
        let ops: Vec<(OutPoint, bool)> = {
            let reg = self.outpoints.lock().expect("lock");
            s.outpoints.keys().map(|op| (*op, reg.entries.get(op).is_some_and(|e| e.unspendable))).collect()
        };
        let this = self.clone();
        let task = tokio::task::spawn_blocking(move || this.outpoint_statuses_now(ops));
        for (op, st) in crate::join_logged(task.await, "computing subscribed outpoint statuses").unwrap_or_default() {
            out.texts.extend(outpoint_changed(s, &op, st));
        }
        out
    }

    /// Forgets a closed session's subscriptions.
    pub fn drop_session(&self, s: &mut SessionSubs) {
        for (sh, _) in s.scripts.drain() {
            self.unregister(&sh);
        }
        for (op, (hashx, _)) in s.outpoints.drain() {
            self.unregister_outpoint(&op, &hashx);
        }
    }
}

/// The notification for an outpoint if its status differs from what the session was told.
fn outpoint_changed(s: &mut SessionSubs, op: &OutPoint, new: OutpointStatus) -> Option<String> {
    let (_, last) = s.outpoints.get_mut(op)?;
    (*last != new).then(|| {
        *last = new;
        notification("blockchain.outpoint.subscribe", json!([op.txid.to_string(), op.vout, outpoint_json(&new)]))
    })
}

/// An outpoint status as 1.7 writes it: `{}`, `{funder_height}`, or with the spender too.
pub fn outpoint_json(st: &OutpointStatus) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(h) = st.funder {
        m.insert("funder_height".into(), json!(h));
        if let Some((txid, h)) = st.spender {
            m.insert("spender_txhash".into(), json!(txid.to_string()));
            m.insert("spender_height".into(), json!(h));
        }
    }
    serde_json::Value::Object(m)
}

/// The ping each block brings a 1.7 session, padded as ElectrumX pads its own (128 hex
/// characters), which the protocol says the receiver ignores.
pub fn ping_notification() -> String {
    notification("server.ping", json!(["0".repeat(128)]))
}

/// The notification for `sh` if its status differs from what the session was last told.
fn changed(s: &mut SessionSubs, sh: ScriptHash, new: Option<StatusHash>) -> Option<String> {
    let v17 = s.v17;
    let last = s.scripts.get_mut(&sh)?;
    (*last != new).then(|| {
        *last = new;
        status_notification(&sh, new, v17)
    })
}

/// The flushed tip: height and header.
pub fn tip(index: &Index) -> Option<(u32, [u8; 80])> {
    let snap = index.snapshot();
    let h = snap.height()?;
    Some((h, snap.header(h)?))
}

/// A tip as `blockchain.headers.subscribe` answers and notifies it.
pub fn header_json(height: u32, header: &[u8; 80]) -> serde_json::Value {
    json!({"hex": crate::types::to_hex(header), "height": height})
}

pub fn tip_notification(height: u32, header: &[u8; 80]) -> String {
    notification("blockchain.headers.subscribe", json!([header_json(height, header)]))
}

/// Written directly, without intermediate strings: a block can make hundreds of thousands.
/// At 1.7 the method is `blockchain.scriptpubkey.subscribe`, still with the script hash: the
/// client maps it back to the script it subscribed.
pub fn status_notification(sh: &ScriptHash, status: Option<StatusHash>, v17: bool) -> String {
    let mut out = String::with_capacity(220);
    out.push_str(if v17 {
        "{\"jsonrpc\":\"2.0\",\"method\":\"blockchain.scriptpubkey.subscribe\",\"params\":[\""
    } else {
        "{\"jsonrpc\":\"2.0\",\"method\":\"blockchain.scripthash.subscribe\",\"params\":[\""
    });
    push_hex32(&mut out, &sh.0, HexOrder::Display);
    match status {
        Some(st) => {
            out.push_str("\",\"");
            push_hex32(&mut out, &st.0, HexOrder::Stored);
            out.push_str("\"]}");
        }
        None => out.push_str("\",null]}"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Txid;
    use serde_json::Value;

    #[test]
    fn status_notifications_are_the_json_they_say() {
        let sh = ScriptHash([3u8; 32]);
        for (status, v17) in [(Some(StatusHash([9u8; 32])), false), (None, false), (None, true)] {
            let parsed: Value = serde_json::from_str(&status_notification(&sh, status, v17)).unwrap();
            let method = if v17 { "blockchain.scriptpubkey.subscribe" } else { "blockchain.scripthash.subscribe" };
            let expect = json!({"jsonrpc": "2.0", "method": method,
                                "params": [sh.to_string(), status.map(|s| s.to_string())]});
            assert_eq!(parsed, expect);
        }
    }

    #[test]
    fn a_session_is_told_each_change_once() {
        let mut s = SessionSubs::default();
        let (a, b) = (ScriptHash([1; 32]), ScriptHash([2; 32]));
        s.scripts.insert(a, None);
        let st = Some(StatusHash([7; 32]));
        assert!(changed(&mut s, a, st).is_some(), "a change is told");
        assert!(changed(&mut s, a, st).is_none(), "the same status is not told twice");
        assert!(changed(&mut s, b, st).is_none(), "not subscribed");
        assert!(changed(&mut s, a, None).is_some(), "back to no history");
    }

    #[test]
    fn outpoint_statuses_have_zero_one_or_three_keys() {
        let spender = Txid([5; 32]);
        assert_eq!(outpoint_json(&OutpointStatus::default()), json!({}));
        assert_eq!(outpoint_json(&OutpointStatus { funder: Some(-1), spender: None }), json!({"funder_height": -1}));
        let spent = OutpointStatus { funder: Some(7), spender: Some((spender, 0)) };
        assert_eq!(
            outpoint_json(&spent),
            json!({"funder_height": 7, "spender_txhash": spender.to_string(), "spender_height": 0})
        );
        let mut s = SessionSubs::default();
        let op = OutPoint { txid: Txid([1; 32]), vout: 2 };
        s.outpoints.insert(op, ([0; 11], OutpointStatus::default()));
        let text = outpoint_changed(&mut s, &op, spent).expect("a change is told");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["params"], json!([op.txid.to_string(), 2, outpoint_json(&spent)]));
        assert!(outpoint_changed(&mut s, &op, spent).is_none(), "told once");
    }
}
