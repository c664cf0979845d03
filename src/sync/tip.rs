//! Noticing new blocks at once: a task that long-polls the daemon with `waitforblockheight` and
//! wakes the sync loop the moment the node has a new block. Polling alone would add up to
//! DAEMON_POLL_INTERVAL_BLOCKS to every tip's latency; a daemon without the call is polled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::node::{Daemon, DaemonError};

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
