//! Subscriptions and notifications.
//!
//! Writers (the block processor, the mempool refresh) report the script hashes they touched.
//! The notifier coalesces reports, keeps those somebody subscribed to, computes each status
//! once (on the worker pool, a fresh snapshot per chunk) and broadcasts the statuses; each
//! session sends those that differ from what it last sent. A session that falls too far
//! behind the broadcast recomputes its own subscriptions instead (`resync`), so nothing is lost
//! and nothing grows without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::index::{Index, IndexEvent};
use crate::jsonrpc::notification;
use crate::types::{push_hex32, HashX, HexOrder, ScriptHash, StatusHash};

/// Notifications queued per session before it must resynchronise its subscriptions.
pub const EVENT_QUEUE: usize = 64;
/// Status computations per snapshot in the notifier, so writers are never held up for long.
const STATUS_CHUNK: usize = 256;

/// What the notifier broadcasts to sessions.
pub enum Event {
    Tip {
        header: [u8; 80],
        /// The notification, built once for every session.
        text: String,
        /// When the index reported the change (for the notification delay).
        at: Instant,
    },
    /// New statuses of touched, subscribed script hashes, with the transactions each covers.
    Statuses { statuses: HashMap<ScriptHash, (Option<StatusHash>, usize)>, at: Instant },
}

/// Notifications for one session, and the history entries they cover (for the cost model: a
/// notification costs what computing the status costs).
#[derive(Default, Debug)]
pub struct Notifications {
    pub texts: Vec<String>,
    pub entries: usize,
    /// How many of `texts` are header notifications (the rest are statuses).
    pub headers: usize,
    /// When the index reported the change they tell of (none after a resync).
    pub since: Option<Instant>,
}

/// What one session is subscribed to, and what it was last told.
#[derive(Default)]
pub struct SessionSubs {
    /// Subscribed script hashes and the status last sent for each.
    pub scripts: HashMap<ScriptHash, Option<StatusHash>>,
    pub headers: bool,
    pub last_tip_sent: Option<[u8; 80]>,
}

/// Every session's subscriptions by index key, with how many sessions want each; and the
/// broadcast of changes.
pub struct Subscriptions {
    registry: Mutex<HashMap<HashX, HashMap<ScriptHash, u32>>>,
    events: broadcast::Sender<Arc<Event>>,
    index: Arc<Index>,
    /// The most confirmed history entries a status may cover (see `Ctx::history_limit`).
    history_limit: usize,
}

impl Subscriptions {
    pub fn new(index: Arc<Index>, history_limit: usize) -> Arc<Subscriptions> {
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        Arc::new(Subscriptions { registry: Mutex::default(), events, index, history_limit })
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
            }
        }
    }

    /// Starts the notifier: index changes become broadcast events from now on.
    pub fn start(self: &Arc<Self>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.index.set_listener(tx);
        tokio::spawn(self.clone().notifier(rx));
    }

    /// Turns index changes into broadcast events, coalescing whatever queued up meanwhile.
    async fn notifier(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<IndexEvent>) {
        while let Some(first) = rx.recv().await {
            let at = Instant::now();
            let mut touched = first.touched;
            let mut new_tip = first.new_tip;
            while let Ok(more) = rx.try_recv() {
                touched.extend(more.touched);
                new_tip |= more.new_tip;
            }
            let started = Instant::now();
            if new_tip {
                if let Some((height, header)) = tip(&self.index) {
                    let text = tip_notification(height, &header);
                    let _ = self.events.send(Arc::new(Event::Tip { header, text, at }));
                }
            }
            let mut wanted: Vec<ScriptHash> = {
                let reg = self.registry.lock().expect("lock");
                touched.iter().filter_map(|h| reg.get(h)).flat_map(|m| m.keys().copied()).collect()
            };
            if wanted.is_empty() {
                continue;
            }
            // In key order, each chunk's history seeks walk the memtables and files forward.
            wanted.sort_unstable_by_key(|sh| sh.hashx());
            let n = wanted.len();
            let Some(statuses) = self.statuses(wanted).await else { continue };
            let _ = self.events.send(Arc::new(Event::Statuses { statuses, at }));
            tracing::debug!("computed {n} subscribed statuses in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        }
    }

    /// Statuses of `wanted`, computed on the worker pool; `None` (logged) if that task died.
    async fn statuses(&self, wanted: Vec<ScriptHash>) -> Option<HashMap<ScriptHash, (Option<StatusHash>, usize)>> {
        let index = self.index.clone();
        let limit = self.history_limit;
        let task = tokio::task::spawn_blocking(move || compute_statuses(&index, &wanted, limit));
        crate::join_logged(task.await, "computing subscribed statuses")
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
            }
            Event::Statuses { statuses, at } => {
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
            }
        }
        out
    }

    /// After missing broadcasts: compare every subscription and the tip with the index now.
    pub async fn resync(&self, s: &mut SessionSubs) -> Notifications {
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
        out
    }

    /// Forgets a closed session's subscriptions.
    pub fn drop_session(&self, s: &mut SessionSubs) {
        for (sh, _) in s.scripts.drain() {
            self.unregister(&sh);
        }
    }
}

/// The notification for `sh` if its status differs from what the session was last told.
fn changed(s: &mut SessionSubs, sh: ScriptHash, new: Option<StatusHash>) -> Option<String> {
    let last = s.scripts.get_mut(&sh)?;
    (*last != new).then(|| {
        *last = new;
        status_notification(&sh, new)
    })
}

/// The flushed tip: height and header.
pub fn tip(index: &Index) -> Option<(u32, [u8; 80])> {
    let snap = index.snapshot();
    let h = snap.height()?;
    Some((h, snap.header(h)?))
}

/// Statuses of script hashes (and the transactions each covers), reading a fresh snapshot per
/// chunk on the rayon pool.
fn compute_statuses(
    index: &Index,
    wanted: &[ScriptHash],
    limit: usize,
) -> HashMap<ScriptHash, (Option<StatusHash>, usize)> {
    use rayon::prelude::*;
    wanted
        .par_chunks(STATUS_CHUNK)
        .flat_map_iter(|chunk| {
            let snap = index.snapshot();
            let mut reader = snap.history_reader();
            chunk
                .iter()
                .filter_map(|sh| match snap.status_using(&mut reader, &sh.hashx(), limit) {
                    Ok(st) => Some((*sh, st)),
                    // Too large to answer, or unreadable (logged by the reader): no notification.
                    Err(_) => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A tip as `blockchain.headers.subscribe` answers and notifies it.
pub fn header_json(height: u32, header: &[u8; 80]) -> serde_json::Value {
    json!({"hex": crate::types::to_hex(header), "height": height})
}

pub fn tip_notification(height: u32, header: &[u8; 80]) -> String {
    notification("blockchain.headers.subscribe", json!([header_json(height, header)]))
}

/// Written directly, without intermediate strings: a block can make hundreds of thousands.
pub fn status_notification(sh: &ScriptHash, status: Option<StatusHash>) -> String {
    let mut out = String::with_capacity(220);
    out.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"blockchain.scripthash.subscribe\",\"params\":[\"");
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
    use serde_json::Value;

    #[test]
    fn status_notifications_are_the_json_they_say() {
        let sh = ScriptHash([3u8; 32]);
        for status in [Some(StatusHash([9u8; 32])), None] {
            let parsed: Value = serde_json::from_str(&status_notification(&sh, status)).unwrap();
            let expect = json!({"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe",
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
}
