//! What the server knows of one session while it lives — its numbers, its controls — and why
//! it ended: for the admin RPC, the cost model, the metrics and the session log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::cost::SessionCost;

/// A session's live numbers and handles, for the admin RPC (`sessions`, `groups`, `disconnect`,
/// `log`, `inspect_session`) and the cost model.
pub struct SessionStats {
    pub id: u64,
    pub peer: SocketAddr,
    pub kind: &'static str,
    pub started: Instant,
    pub cost: Arc<SessionCost>,
    /// Client name (as sent, at most 100 characters) and negotiated version, once known.
    pub client: Mutex<(String, String)>,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    pub subs: AtomicU64,
    /// Subscribed to the headers.
    pub headers: AtomicBool,
    pub txs_sent: AtomicU64,
    /// Requests being answered.
    pub pending: AtomicU64,
    /// Requests it may have in flight, as its cost allows.
    pub concurrency: AtomicUsize,
    pub request_counts: Mutex<HashMap<&'static str, u64>>,
    /// Log every message it sends us (admin `log`).
    pub logged: AtomicBool,
    pub closing: AtomicBool,
    /// Cut off over the hard limit.
    pub cut: AtomicBool,
    pub(super) close: Notify,
}

impl SessionStats {
    pub fn new(id: u64, peer: SocketAddr, kind: &'static str, cost: Arc<SessionCost>, logged: bool) -> SessionStats {
        SessionStats {
            id,
            peer,
            kind,
            started: Instant::now(),
            cost,
            client: Mutex::default(),
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            subs: AtomicU64::new(0),
            headers: AtomicBool::new(false),
            txs_sent: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            concurrency: AtomicUsize::new(0),
            request_counts: Mutex::default(),
            logged: AtomicBool::new(logged),
            closing: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// Asks the session to close (admin `disconnect`).
    pub fn disconnect(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }

    /// "T10", "SL7", "WC0": the first letter of the transport, C while closing, L when logged,
    /// then how many requests it may have in flight (ElectrumX's flags).
    pub fn flags(&self) -> String {
        let mut f = self.kind[..1].to_ascii_uppercase();
        if self.closing.load(Ordering::Relaxed) {
            f.push('C');
        }
        if self.logged.load(Ordering::Relaxed) {
            f.push('L');
        }
        f.push_str(&self.concurrency.load(Ordering::Relaxed).to_string());
        f
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    Client,
    Idle,
    SendTimeout,
    ExcessiveCost,
    Operator,
    Error,
    MaxRecv,
    Shutdown,
}

impl Close {
    /// The `reason` label of `ferrum_sessions_closed_total` (metrics::CLOSE_REASONS).
    pub fn label(self) -> &'static str {
        match self {
            Close::Client => "client",
            Close::Idle => "idle",
            Close::SendTimeout => "send_timeout",
            Close::ExcessiveCost => "excessive_cost",
            Close::Operator => "operator",
            Close::Error => "error",
            Close::MaxRecv => "max_recv",
            Close::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Close::Client => "closed by the client",
            Close::Idle => "idle for SESSION_TIMEOUT",
            Close::SendTimeout => "the client stopped reading",
            Close::ExcessiveCost => "over the cost hard limit",
            Close::Operator => "disconnected by the operator",
            Close::Error => "closed after an error",
            Close::MaxRecv => "request larger than MAX_RECV",
            Close::Shutdown => "server shutting down",
        })
    }
}
