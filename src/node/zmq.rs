//! The node's ZMQ announcements: where a daemon publishes `hashblock` (and `sequence`), and a
//! subscriber that reports each new block (and mempool change) the moment the node publishes
//! it. Bitcoin Core and the Bitcoin SV node publish them with `-zmqpubhashblock=<address>`
//! and say where through `getzmqnotifications`; DAEMON_ZMQ overrides or turns this off.
//!
//! ZMQ is only a faster doorbell: the sync loop's long poll and polling stay on, so a publisher
//! that goes quiet, restarts or drops messages (ZMQ may) never makes ferrum miss a block.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv};

use super::{Daemon, DaemonError};

/// What the node announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    Block,
    Mempool,
}

/// The address the daemon publishes new blocks on (`pubhashblock`, else `pubsequence`), from
/// `getzmqnotifications`; `None` when it publishes none or lacks the call.
pub async fn endpoint(daemon: &Daemon) -> Result<Option<(String, &'static str)>, DaemonError> {
    let list = match daemon.call("getzmqnotifications", json!([])).await {
        Ok(v) => v,
        Err(DaemonError::MethodNotFound(_)) => return Ok(None),
        Err(e @ DaemonError::Shutdown) => return Err(e),
        Err(e) => {
            tracing::debug!("getzmqnotifications failed: {e}");
            return Ok(None);
        }
    };
    let find = |kind: &str| {
        list.as_array()?.iter().find(|n| n["type"] == kind).and_then(|n| n["address"].as_str()).map(|a| a.to_string())
    };
    Ok(find("pubhashblock").map(|a| (a, "hashblock")).or_else(|| find("pubsequence").map(|a| (a, "sequence"))))
}

/// Subscribes to `topic` at `address` and sends what each message announces, until the
/// receiver is dropped. Reconnects (after `retry`) when the publisher goes away.
pub async fn subscribe(address: String, topic: &'static str, out: mpsc::Sender<Announcement>, retry: Duration) {
    loop {
        let mut socket = zeromq::SubSocket::new();
        let connected = async {
            socket.connect(&address).await?;
            socket.subscribe(topic).await?;
            if topic == "hashblock" {
                // Mempool changes too, where the node publishes them (harmless if it does not).
                socket.subscribe("sequence").await?;
            }
            Ok::<_, zeromq::ZmqError>(())
        };
        match connected.await {
            Ok(()) => tracing::info!("listening to the node's ZMQ {topic} announcements at {address}"),
            Err(e) => tracing::warn!("cannot subscribe to the node's ZMQ at {address}: {e}; polling meanwhile"),
        }
        loop {
            let msg = match socket.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("the node's ZMQ at {address} failed ({e}); polling until it is back");
                    break;
                }
            };
            let Some(what) = announcement(msg.get(0).map(|f| f.as_ref()), msg.get(1).map(|f| f.as_ref())) else {
                continue;
            };
            if out.send(what).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// What a message says: `hashblock` is a block; `sequence` is `<hash><C|D|A|R>...`: a block
/// connected or disconnected, or a transaction added to or removed from the mempool.
fn announcement(topic: Option<&[u8]>, body: Option<&[u8]>) -> Option<Announcement> {
    match topic? {
        b"hashblock" => Some(Announcement::Block),
        b"sequence" => match body?.get(32)? {
            b'C' | b'D' => Some(Announcement::Block),
            b'A' | b'R' => Some(Announcement::Mempool),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_by_topic() {
        assert_eq!(announcement(Some(b"hashblock"), Some(&[0; 32])), Some(Announcement::Block));
        let seq = |c: u8| {
            let mut b = vec![7u8; 32];
            b.push(c);
            b
        };
        assert_eq!(announcement(Some(b"sequence"), Some(&seq(b'C'))), Some(Announcement::Block));
        assert_eq!(announcement(Some(b"sequence"), Some(&seq(b'D'))), Some(Announcement::Block));
        assert_eq!(announcement(Some(b"sequence"), Some(&seq(b'A'))), Some(Announcement::Mempool));
        assert_eq!(announcement(Some(b"sequence"), Some(&[1, 2])), None);
        assert_eq!(announcement(Some(b"rawtx"), Some(&[0; 40])), None);
    }
}
