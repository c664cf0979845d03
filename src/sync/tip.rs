//! Noticing new blocks at once: the node's ZMQ announcements where it publishes them, and a
//! task that long-polls the daemon with `waitforblockheight`; each wakes the sync loop the
//! moment the node has a new block. Polling alone would add up to DAEMON_POLL_INTERVAL_BLOCKS
//! to every tip's latency; it stays on underneath, so nothing is missed if both go quiet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::node::zmq::{self, Announcement};
use crate::node::{Daemon, DaemonError};

/// Wakes the sync loop (blocks) and the mempool refresh (transactions) as the node announces
/// them over ZMQ: at DAEMON_ZMQ, or where `getzmqnotifications` says (asked once the daemon
/// answers). Without a publisher this task ends; the long poll and polling carry on.
pub async fn watch_zmq(
    daemon: Arc<Daemon>,
    setting: Option<Option<String>>,
    blocks: Arc<Notify>,
    mempool: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (address, topic) = match setting {
        Some(None) => return,
        Some(Some(address)) => (address, "hashblock"),
        None => match zmq::endpoint(&daemon).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::info!("the node publishes no ZMQ block announcements: new blocks are noticed by long poll");
                return;
            }
            Err(_) => return,
        },
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let subscriber = tokio::spawn(zmq::subscribe(address, topic, tx, Duration::from_secs(5)));
    loop {
        tokio::select! {
            a = rx.recv() => match a {
                Some(Announcement::Block) => {
                    tracing::debug!("the node announced a block over ZMQ");
                    blocks.notify_one();
                }
                Some(Announcement::Mempool) => mempool.notify_one(),
                None => break,
            },
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    subscriber.abort();
}

pub async fn watch_tip(daemon: Arc<Daemon>, wakeup: Arc<Notify>, poll: Duration, mut shutdown: watch::Receiver<bool>) {
    // Short enough that a daemon restart or failover is noticed, long enough to cost nothing.
    let long_poll = Duration::from_secs(10);
    let mut known = None;
    loop {
        let next = match known {
            Some(h) => h + 1,
            None => match daemon.best_block().await {
                Ok((h, _)) => h + 1,
                Err(_) => return, // shutting down; other errors are retried inside `call`
            },
        };
        let reply = tokio::select! {
            r = daemon.wait_for_height(next, long_poll) => r,
            _ = crate::stopped(&mut shutdown) => return,
        };
        match reply {
            Ok(h) => {
                if h >= next {
                    wakeup.notify_one();
                }
                known = Some(h.max(next - 1));
            }
            // The daemon client logged the fallback (polling) when it learned this.
            Err(DaemonError::Shutdown | DaemonError::MethodNotFound(_)) => return,
            Err(e) => {
                // E.g. a daemon that reorged below `next`; ask again from its tip after a pause.
                tracing::debug!("waitforblockheight failed: {e}");
                known = None;
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        }
    }
}
