//! The notifier: index changes become broadcast statuses.
//!
//! Writers report what they touched (`IndexEvent`); the notifier coalesces the reports, keeps
//! those somebody subscribed to and computes each status once, on the worker pool. For each
//! subscribed index key it keeps the confirmed part of its status (the hash state after its
//! confirmed history, `ConfirmedStatus`, tagged with its tip). A flush is announced before it
//! is written (`IndexEvent::Writing`), and while RocksDB writes it the notifier extends those
//! parts with the flush's own entries; once the flush is visible, a status is its part plus the
//! mempool's entries. No history is read again unless the part is of another tip (after an
//! unwind, a failed write, or for a key first seen).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::subscriptions::{tip, tip_notification, Event, Statuses, Subscriptions};
use crate::index::{ConfirmedStatus, FlushPreview, Index, IndexEvent, OutpointStatus};
use crate::types::{FastSet, HashX, OutPoint, ScriptHash};

/// Status computations per snapshot, so writers are never held up for long.
const STATUS_CHUNK: usize = 256;

impl Subscriptions {
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
        touched: &FastSet<HashX>,
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
            // Nothing kept (no subscription yet): no need to walk the flush under the lock.
            if confirmed.is_empty() {
                return HashMap::new();
            }
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
    pub(super) async fn statuses(self: &Arc<Self>, wanted: Vec<ScriptHash>) -> Option<Statuses> {
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
    pub(super) fn outpoint_statuses_now(&self, ops: Vec<(OutPoint, bool)>) -> HashMap<OutPoint, OutpointStatus> {
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
