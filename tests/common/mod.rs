//! Shared test harness. Each integration-test binary includes this with `mod common;`, so not
//! every helper is used by every binary.
#![allow(dead_code)]

pub mod bench;
pub mod chain;
pub mod client;
pub mod electrum;
pub mod ferrum;
pub mod nodes;
pub mod scripted_daemon;
