//! Subscriptions and notifications.
//!
//! Writers (the block processor, the mempool refresh) report the script hashes they touched.
//! The notifier coalesces reports, keeps those somebody subscribed to, computes each status
//! once (on the worker pool, a fresh snapshot per chunk) and broadcasts the statuses; each
//! session sends those that differ from what it last sent. A session that falls too far
//! behind the broadcast recomputes its own subscriptions instead (`resync`), so nothing is lost
//! and nothing grows without bound.
//!
//! For each subscribed index key the notifier keeps the confirmed part of its status (the hash
//! state after its confirmed history, `ConfirmedStatus`). A flush is announced before it is
//! written (`IndexEvent::Writing`), and while RocksDB writes it the notifier extends those
//! states with the flush's own entries; once the flush is visible, a status is that state plus
//! the mempool's entries. No history is read again unless the state is of another tip (after
//! an unwind, or a key first seen).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::index::{ConfirmedStatus, FlushPreview, Index, IndexEvent, OutpointStatus};
use crate::jsonrpc::notification;
use crate::types::{push_hex32, HashX, HexOrder, OutPoint, ScriptHash, StatusHash};

/// Notifications queued per session before it must resynchronise its subscriptions.
pub const EVENT_QUEUE: usize = 64;
/// Status computations per snapshot in the notifier, so writers are never held up for long.
const STATUS_CHUNK: usize = 256;

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
struct OutpointRegistry {
    by_hashx: HashMap<HashX, HashMap<OutPoint, u32>>,
    entries: HashMap<OutPoint, OutpointEntry>,
}

#[derive(Default)]
struct OutpointEntry {
    sessions: u32,
    /// A client's spk_hint said the script is unspendable (so the index does not keep it).
    unspendable: bool,
    last: OutpointStatus,
}

/// Every session's subscriptions by index key, with how many sessions want each; and the
/// broadcast of changes.
pub struct Subscriptions {
    registry: Mutex<HashMap<HashX, HashMap<ScriptHash, u32>>>,
    /// The confirmed part of each subscribed key's status, at the tip it names. Only keys in
    /// `registry`: the last unsubscription drops it. Lock order: `registry`, then this.
    confirmed: Mutex<HashMap<HashX, ConfirmedStatus>>,
    /// Histories the notifier read (every other status came from a confirmed part).
    histories_read: AtomicU64,
    outpoints: Mutex<OutpointRegistry>,
    events: broadcast::Sender<Arc<Event>>,
    index: Arc<Index>,
    /// The most confirmed history entries a status may cover (see `Ctx::history_limit`).
    history_limit: usize,
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
    fn outpoints_to_check(&self, touched: &HashSet<HashX>, new_tip: bool) -> Vec<(OutPoint, bool)> {
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

    /// Starts the notifier: index changes become broadcast events from now on.
    pub fn start(self: &Arc<Self>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.index.set_listener(tx);
        // Read after listening: a change in between is reported, so the tip the notifier starts
        // from is never older than what the reports it receives build on.
        let tip = self.index.tip().map(|t| t.hash);
        tokio::spawn(self.clone().notifier(rx, tip));
    }

    /// Turns index changes into broadcast events, coalescing whatever queued up meanwhile.
    async fn notifier(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<IndexEvent>, mut last_tip: Option<[u8; 32]>) {
        // The flush being written, and its statuses' confirmed parts being extended meanwhile.
        let mut preparing: Option<Preparing> = None;
        let mut next: Option<IndexEvent> = None;
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => match rx.recv().await {
                    Some(event) => event,
                    None => return,
                },
            };
            let (mut touched, mut tip) = match event {
                IndexEvent::Writing(preview) => {
                    preparing = Some(self.prepare(preview));
                    continue;
                }
                IndexEvent::Changed { touched, tip } => (touched, tip),
            };
            let at = Instant::now();
            // Coalesce changes, but not across the next flush's announcement.
            while let Ok(more) = rx.try_recv() {
                match more {
                    IndexEvent::Changed { touched: more, tip: newer } => {
                        touched.extend(more);
                        tip = newer.or(tip);
                    }
                    writing => {
                        next = Some(writing);
                        break;
                    }
                }
            }
            let mut prepared = HashMap::new();
            let mut moved = None;
            if let Some(tip) = tip {
                if let Some(Preparing { to, task }) = preparing.take() {
                    // Another tip (an unwind, a failed write retried): those parts are of no use.
                    if to == tip {
                        prepared = crate::join_logged(task.await, "extending subscribed statuses").unwrap_or_default();
                    }
                }
                moved = Some((last_tip, tip));
                last_tip = Some(tip);
            }
            let n_prepared = prepared.len();
            let this = self.clone();
            let task = tokio::task::spawn_blocking(move || this.changed(&touched, moved, prepared));
            let changed = crate::join_logged(task.await, "computing subscribed statuses");
            // The tip and the statuses go out together, so a session writes them at once.
            if moved.is_some() {
                if let Some((height, header)) = self::tip(&self.index) {
                    let text = tip_notification(height, &header);
                    let _ = self.events.send(Arc::new(Event::Tip { header, text, at }));
                }
            }
            let Some((statuses, outpoints)) = changed else { continue };
            if statuses.is_empty() && outpoints.is_empty() {
                continue;
            }
            let n = statuses.len() + outpoints.len();
            let _ = self.events.send(Arc::new(Event::Statuses { statuses, outpoints, at }));
            tracing::debug!(
                "computed {n} subscribed statuses in {:.1} ms ({n_prepared} extended while the flush was written)",
                at.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    /// What an index change means for subscriptions (on a blocking thread): the statuses of
    /// touched subscribed keys and the subscribed outpoints it may have changed. When the tip
    /// moved (`moved`: from, to), the kept confirmed parts become those of the new tip: the
    /// `prepared` ones for keys the flush touched, the old ones for keys nothing touched.
    fn changed(
        &self,
        touched: &HashSet<HashX>,
        moved: Option<(Option<[u8; 32]>, [u8; 32])>,
        mut prepared: HashMap<HashX, ConfirmedStatus>,
    ) -> (Statuses, HashMap<OutPoint, OutpointStatus>) {
        let mut wanted: Vec<ScriptHash> = {
            let reg = self.registry.lock().expect("lock");
            touched.iter().filter_map(|h| reg.get(h)).flat_map(|m| m.keys().copied()).collect()
        };
        // In key order, each chunk's history seeks (for keys without a confirmed part) walk the
        // memtables and files forward.
        wanted.sort_unstable_by_key(|sh| sh.hashx());
        let (statuses, read) = self.statuses_now(&wanted, &prepared);
        if let Some((from, to)) = moved {
            // One pass: a key unsubscribed meanwhile is gone from the map and stays gone.
            for (hashx, part) in self.confirmed.lock().expect("lock").iter_mut() {
                if let Some(new) = prepared.remove(hashx) {
                    *part = new;
                } else if part.tip() == from && !touched.contains(hashx) {
                    part.extend(std::iter::empty(), to);
                }
            }
        }
        self.keep_confirmed(read);
        let outpoints = self.outpoint_statuses_now(self.outpoints_to_check(touched, moved.is_some()));
        let mut reg = self.outpoints.lock().expect("lock");
        for (op, st) in &outpoints {
            if let Some(e) = reg.entries.get_mut(op) {
                e.last = *st;
            }
        }
        (statuses, outpoints)
    }

    /// Starts extending the confirmed parts a flush touches, on the worker pool, while it is
    /// written.
    fn prepare(self: &Arc<Self>, preview: Arc<FlushPreview>) -> Preparing {
        let this = self.clone();
        let to = preview.to;
        Preparing { to, task: tokio::task::spawn_blocking(move || this.extend_confirmed(&preview)) }
    }

    /// The confirmed parts of the subscribed keys a flush touches, extended by its entries:
    /// only parts kept at the tip the flush extends (the rest are read once it is visible).
    fn extend_confirmed(&self, preview: &FlushPreview) -> HashMap<HashX, ConfirmedStatus> {
        use rayon::prelude::*;
        let base: Vec<_> = {
            let confirmed = self.confirmed.lock().expect("lock");
            preview
                .by_hashx()
                .filter_map(|(hashx, keys)| {
                    let part = confirmed.get(&hashx).filter(|c| c.tip() == preview.from)?;
                    Some((hashx, part.clone(), keys))
                })
                .collect()
        };
        let limit = self.history_limit;
        base.into_par_iter()
            .filter_map(|(hashx, mut part, keys)| {
                part.extend(preview.entries(keys)?.into_iter(), preview.to);
                // Too long to answer: no status, as `compute_statuses` decides.
                (part.count() <= limit).then_some((hashx, part))
            })
            .collect()
    }

    /// Statuses of `wanted` (on the worker pool) from the confirmed parts in `prepared` or kept
    /// here where they are of the tip, reading the history otherwise; with the parts read.
    fn statuses_now(
        &self,
        wanted: &[ScriptHash],
        prepared: &HashMap<HashX, ConfirmedStatus>,
    ) -> (Statuses, Vec<(HashX, ConfirmedStatus)>) {
        let kept: HashMap<HashX, ConfirmedStatus> = {
            let confirmed = self.confirmed.lock().expect("lock");
            wanted
                .iter()
                .map(|sh| sh.hashx())
                .filter(|h| !prepared.contains_key(h))
                .filter_map(|h| Some((h, confirmed.get(&h)?.clone())))
                .collect()
        };
        let known = |h: &HashX| prepared.get(h).or_else(|| kept.get(h));
        let (statuses, read) = compute_statuses(&self.index, wanted, known, self.history_limit);
        self.histories_read.fetch_add(read.len() as u64, Ordering::Relaxed);
        (statuses, read)
    }

    /// `statuses_now` on a blocking thread, keeping the parts it read; `None` (logged) if that
    /// task died.
    async fn statuses(self: &Arc<Self>, wanted: Vec<ScriptHash>) -> Option<Statuses> {
        let this = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let (statuses, read) = this.statuses_now(&wanted, &HashMap::new());
            this.keep_confirmed(read);
            statuses
        });
        crate::join_logged(task.await, "computing subscribed statuses")
    }

    /// Statuses of outpoints on the worker pool; those that cannot be read now (the spender
    /// index still being built, or a read error, logged) are left out.
    fn outpoint_statuses_now(&self, ops: Vec<(OutPoint, bool)>) -> HashMap<OutPoint, OutpointStatus> {
        use rayon::prelude::*;
        if ops.is_empty() {
            return HashMap::new();
        }
        ops.par_chunks(STATUS_CHUNK)
            .flat_map_iter(|chunk| {
                let snap = self.index.snapshot();
                chunk
                    .iter()
                    .filter_map(|(op, unspendable)| snap.outpoint_status(op, *unspendable).ok().map(|st| (*op, st)))
                    .collect::<Vec<_>>()
            })
            .collect()
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

/// Statuses of script hashes (and the transactions each covers) on the rayon pool, a fresh
/// snapshot per chunk: from the `known` confirmed part where it is of the snapshot's tip, else
/// reading the history. Also the confirmed parts it read.
fn compute_statuses<'a>(
    index: &Index,
    wanted: &[ScriptHash],
    known: impl Fn(&HashX) -> Option<&'a ConfirmedStatus> + Sync,
    limit: usize,
) -> (Statuses, Vec<(HashX, ConfirmedStatus)>) {
    use rayon::prelude::*;
    let chunks: Vec<_> = wanted
        .par_chunks(STATUS_CHUNK)
        .map(|chunk| {
            let snap = index.snapshot();
            let mut reader = snap.history_reader();
            let (mut statuses, mut read) = (Vec::with_capacity(chunk.len()), Vec::new());
            for sh in chunk {
                let hashx = sh.hashx();
                if let Some(st) = known(&hashx).and_then(|part| snap.finish_status(part, &hashx)) {
                    statuses.push((*sh, st));
                    continue;
                }
                // Too large to answer, or unreadable (logged by the reader): no notification.
                if let Ok(part) = snap.confirmed_status_using(&mut reader, &hashx, limit) {
                    statuses.push((*sh, snap.finish_status(&part, &hashx).expect("of this snapshot's tip")));
                    read.push((hashx, part));
                }
            }
            (statuses, read)
        })
        .collect();
    let mut statuses = HashMap::with_capacity(wanted.len());
    let mut read = Vec::new();
    for (s, r) in chunks {
        statuses.extend(s);
        read.extend(r);
    }
    (statuses, read)
}

/// A flush being written, and the task extending its statuses' confirmed parts.
struct Preparing {
    to: [u8; 32],
    task: JoinHandle<HashMap<HashX, ConfirmedStatus>>,
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
