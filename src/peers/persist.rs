//! What discovery keeps between runs (the peer table in DB_DIRECTORY/peers.json) and what it
//! reads from outside (the blacklist).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::peer::Peer;
use super::{PeerManager, BLACKLIST_SECS};

impl PeerManager {
    pub(super) fn blacklisted(&self, host: &str, ip: Option<IpAddr>) -> bool {
        let b = self.blacklist.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_empty() {
            return false;
        }
        let labels: Vec<&str> = host.split('.').collect();
        let wildcard = format!("*.{}", labels[labels.len().saturating_sub(2)..].join("."));
        b.contains(host) || b.contains(&wildcard) || ip.is_some_and(|ip| b.contains(&ip.to_string()))
    }

    /// Reads BLACKLIST_URL (a URL or a file: a JSON list of hosts, `*.domain`s and addresses)
    /// every 10 minutes; a failure keeps the last list.
    pub(super) async fn refresh_blacklist(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(source) = self.config.peers.blacklist.clone() else { return };
        // The same failure every 10 minutes is said once; a change (or recovery) is said again.
        let mut last_error: Option<String> = None;
        loop {
            match read_blacklist(&source).await {
                Ok(list) => {
                    if last_error.take().is_some() {
                        tracing::info!("the peer blacklist {source} is readable again ({} entries)", list.len());
                    }
                    *self.blacklist.lock().unwrap_or_else(|e| e.into_inner()) = list;
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(
                            "cannot read the peer blacklist {source}: {e}; keeping the last one (set BLACKLIST_URL to \
                             an http URL or a file to change it)"
                        );
                    }
                    last_error = Some(e);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.peers.interval(BLACKLIST_SECS)) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    }

    pub(super) fn load(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return tracing::warn!("cannot read {}: {e}; starting from the seeds", self.path.display()),
        };
        let peers: Vec<Peer> = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                return tracing::warn!("{} is not a peer list ({e}); starting from the seeds", self.path.display())
            }
        };
        let mut t = self.table();
        for mut p in peers {
            p.next_check = 0;
            t.peers.insert(p.host.clone(), p);
        }
        tracing::info!("peer discovery: {} known peers from {}", t.peers.len(), self.path.display());
    }

    /// Writes the table (to a temporary file, then renamed: a crash never leaves half a list).
    pub(super) fn save(&self) {
        let text = {
            let mut t = self.table();
            if !std::mem::take(&mut t.dirty) {
                return;
            }
            let mut peers: Vec<&Peer> = t.peers.values().collect();
            peers.sort_by(|a, b| a.host.cmp(&b.host));
            serde_json::to_string_pretty(&peers).unwrap_or_default()
        };
        let tmp = self.path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.path)) {
            tracing::warn!("cannot save the peer list to {}: {e}", self.path.display());
        }
    }
}

async fn read_blacklist(source: &str) -> anyhow::Result<HashSet<String>> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        client.get(source).send().await?.error_for_status()?.text().await?
    } else {
        tokio::fs::read_to_string(source.strip_prefix("file://").unwrap_or(source)).await?
    };
    let list: Vec<String> = serde_json::from_str(&text)?;
    Ok(list.into_iter().map(|s| s.to_ascii_lowercase()).collect())
}
