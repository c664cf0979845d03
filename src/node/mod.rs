//! The node side of the pipeline: the daemon client (retries, failover, and what each daemon
//! can do), the prefetcher that keeps blocks coming ahead of the block processor, the raw block
//! and transaction parser, and transactions by txid on every daemon.

pub mod block;
pub mod capabilities;
pub mod daemon;
pub mod prefetch;
pub mod transactions;
pub mod zmq;

pub use daemon::{Daemon, DaemonError};
