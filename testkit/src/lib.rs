//! ferrum's test harness, shared by the integration and end-to-end tests and the benchmarks,
//! and compiled once for all of them:
//! - `chain`: deterministic regtest chains (segwit, taproot, multisig, in-block spends, forks);
//! - `scripted_daemon`: a stand-in for bitcoind serving such chains, with failure knobs;
//! - `nodes`: real Bitcoin Core and Bitcoin SV nodes, and signing with the `bitcoin` crate;
//! - `electrum`: the real Electrum wallet, headless;
//! - `electrumx`: ElectrumX 2.0.0's own admin client, `electrumx_rpc`;
//! - `electrumx_server`: ElectrumX 2.0.0's server on a regtest Bitcoin Core, to compare answers;
//! - `process`: ferrum itself as a child process, driven through its admin RPC;
//! - `prometheus`: a real Prometheus scraping ferrum, and `promtool`;
//! - `client`: a minimal Electrum protocol client;
//! - `fake_peer`: a scriptable fake Electrum server, a peer for the peer-discovery tests;
//! - `fake_socks`: a fake SOCKS5 proxy standing in for Tor, recording what it is asked;
//! - `fuzz`: the fuzz corpus and its mutations;
//! - `served`: ferrum serving a small scripted chain, for tests that act as its clients;
//! - `try_it`: ferrum on a private regtest chain with payments (`contrib/try.sh`);
//! - `bench`: cached benchmark chains and measuring helpers;
//! - `real_chain`: benchmark chains on real Bitcoin Core and Bitcoin SV nodes, cached.

pub mod bench;
pub mod chain;
pub mod client;
pub mod dumps;
pub mod electrum;
pub mod electrumx;
pub mod electrumx_server;
pub mod fake_peer;
pub mod fake_socks;
pub mod fuzz;
pub mod nodes;
pub mod process;
pub mod prometheus;
pub mod real_chain;
pub mod scripted_daemon;
pub mod served;
pub mod try_it;
