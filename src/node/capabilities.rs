//! What one daemon can do, learned from its own answers once per daemon (each DAEMON_URL entry
//! on its own: after a failover the next daemon is judged afresh), and what ferrum does
//! instead of what it lacks. docs/ENVIRONMENT.md lists these fallbacks per daemon.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// A capability that is not simply an RPC method being there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `getrawtransaction <txid> <verbose> <blockhash>` (Bitcoin Core 0.16 and later; not the
    /// Bitcoin SV node, which answers such a call with its help text).
    TxByBlockHash,
    /// `getrawtransaction <txid>` finds confirmed transactions (`-txindex=1`).
    TxIndex,
}

impl Feature {
    const ALL: [Feature; 2] = [Feature::TxByBlockHash, Feature::TxIndex];

    pub fn name(self) -> &'static str {
        match self {
            Feature::TxByBlockHash => "the blockhash argument of getrawtransaction",
            Feature::TxIndex => "a transaction index (-txindex=1)",
        }
    }

    /// What ferrum does without it.
    pub fn fallback(self) -> &'static str {
        match self {
            Feature::TxByBlockHash => {
                "confirmed transactions are asked for by txid alone when the node has -txindex, else taken out of their blocks"
            }
            Feature::TxIndex => "blockchain.transaction.get takes confirmed transactions out of their blocks",
        }
    }
}

/// What ferrum does instead when a daemon lacks an RPC method.
pub fn method_fallback(method: &str) -> &'static str {
    match method {
        "estimatesmartfee" => "blockchain.estimatefee asks the older estimatefee instead",
        "estimatefee" => "blockchain.estimatefee answers -1 (no estimate), as the protocol allows",
        "waitforblockheight" => "new blocks are found by polling every DAEMON_POLL_INTERVAL_BLOCKS",
        "submitpackage" => {
            "blockchain.transaction.broadcast_package sends the transactions one by one with sendrawtransaction"
        }
        "getmempoolinfo" => "mempool.get_info takes the relay fee from getnetworkinfo",
        "getrawtransaction" => "transactions cannot be served (blockchain.transaction.get answers an error)",
        "decoderawtransaction" => "verbose blockchain.transaction.get of a confirmed transaction answers an error",
        "getzmqnotifications" => {
            "new blocks are noticed by long poll, or over ZMQ at DAEMON_ZMQ if the node publishes them"
        }
        "testmempoolaccept" => {
            "blockchain.transaction.testmempoolaccept answers an error (nothing is broadcast to find out)"
        }
        _ => "requests that need it get an error",
    }
}

const YES: u8 = 1;
const NO: u8 = 2;

/// One daemon's capabilities as learned so far.
#[derive(Default)]
pub struct Capabilities {
    /// Per `Feature::ALL`: 0 (not known yet), YES or NO.
    features: [AtomicU8; Feature::ALL.len()],
    /// RPC methods this daemon answered "Method not found": not asked again.
    missing: Mutex<HashSet<String>>,
    /// The daemon streams replies in chunks (the Bitcoin SV node does): see `Daemon::fresh`.
    chunked: AtomicBool,
}

impl Capabilities {
    pub fn lacks(&self, method: &str) -> bool {
        self.missing.lock().expect("lock").contains(method)
    }

    /// Records a missing method; true the first time.
    pub fn note_missing(&self, method: &str) -> bool {
        self.missing.lock().expect("lock").insert(method.to_string())
    }

    pub fn feature(&self, feature: Feature) -> Option<bool> {
        match self.features[feature as usize].load(Ordering::Relaxed) {
            YES => Some(true),
            NO => Some(false),
            _ => None,
        }
    }

    /// Records what the daemon showed; true when it newly turns out to lack the feature.
    pub fn learn(&self, feature: Feature, has: bool) -> bool {
        let was = self.features[feature as usize].swap(if has { YES } else { NO }, Ordering::Relaxed);
        !has && was != NO
    }

    /// What this daemon was found to lack: RPC methods and features, by name.
    pub fn lacking(&self) -> Vec<String> {
        let mut out: Vec<String> = self.missing.lock().expect("lock").iter().cloned().collect();
        out.sort();
        out.extend(Feature::ALL.iter().filter(|f| self.feature(**f) == Some(false)).map(|f| f.name().to_string()));
        out
    }

    pub fn chunked(&self) -> bool {
        self.chunked.load(Ordering::Relaxed)
    }

    /// Records a chunked reply; true the first time.
    pub fn note_chunked(&self) -> bool {
        !self.chunked.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_once() {
        let c = Capabilities::default();
        assert_eq!(c.feature(Feature::TxIndex), None);
        assert!(c.learn(Feature::TxIndex, false), "first miss is news");
        assert!(!c.learn(Feature::TxIndex, false), "then it is not");
        assert_eq!(c.feature(Feature::TxIndex), Some(false));
        assert!(!c.learn(Feature::TxByBlockHash, true));
        assert_eq!(c.feature(Feature::TxByBlockHash), Some(true));
        assert!(c.note_missing("submitpackage") && !c.note_missing("submitpackage"));
        assert!(c.lacks("submitpackage") && !c.lacks("getblock"));
        assert!(c.note_chunked() && !c.note_chunked() && c.chunked());
    }
}
