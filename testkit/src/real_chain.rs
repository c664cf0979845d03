//! Benchmark chains on real nodes, so that ferrum and the servers it is compared with sync the
//! same blocks from the same Bitcoin Core or Bitcoin SV node.
//!
//! A [`RealChain`] is a [`ChainSpec`] in the generator's node-valid mode (unique anyone-can-spend
//! scripts, so a million transactions need no signing and the node accepts them in blocks).
//! The first time, the blocks are given to a fresh regtest node with `submitblock` (Core also
//! builds `-txindex` and `-txospenderindex` meanwhile, which ElectrumX 2.0 requires); the
//! stopped node's regtest directory is then cached under `~/.cache/ferrum/real-chains/`. Every
//! run starts a node on a copy of it and mines one block with the current time, so the node has
//! left initial block download (electrs waits for that).

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::serialize;
use bitcoin::Block;
use serde_json::json;

use crate::bench::{cache_dir, ChainSpec};
use crate::nodes::{BitcoinCore, BitcoinSv, Node};

/// Which node serves the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Bitcoin Core (REST, binary blocks).
    Core,
    /// The Bitcoin SV node (blocks as JSON-RPC hex).
    Sv,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Core => "core",
            NodeKind::Sv => "sv",
        }
    }

    /// ferrum's and ElectrumX's COIN for this node.
    pub fn coin(self) -> &'static str {
        match self {
            NodeKind::Core => "Bitcoin",
            NodeKind::Sv => "BitcoinSV",
        }
    }

    /// Options the node runs with, when it is filled and at every start: the indexes ElectrumX
    /// needs (Core: -txindex and -txospenderindex; SV: -txindex) and a cache big enough that
    /// filling it is not disk-bound.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            NodeKind::Core => &["-txindex=1", "-txospenderindex=1", "-dbcache=1000"],
            NodeKind::Sv => &["-txindex=1", "-dbcache=1000"],
        }
    }
}

/// A node of either kind.
pub enum RealNode {
    Core(BitcoinCore),
    Sv(BitcoinSv),
}

impl Deref for RealNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            RealNode::Core(n) => n,
            RealNode::Sv(n) => n,
        }
    }
}

impl DerefMut for RealNode {
    fn deref_mut(&mut self) -> &mut Node {
        match self {
            RealNode::Core(n) => n,
            RealNode::Sv(n) => n,
        }
    }
}

/// A generated chain as a real node holds it.
pub struct RealChain {
    pub kind: NodeKind,
    pub spec: ChainSpec,
}

impl RealChain {
    /// The standard benchmark shape (`ChainSpec::standard`), valid on a real node. Blocks 1-100
    /// hold only their coinbases (nothing is mature before), so `blocks` counts those too.
    pub fn standard(kind: NodeKind, blocks: usize, txs: usize) -> RealChain {
        let mut spec = ChainSpec::standard(blocks, txs);
        spec.opts.node_valid = true;
        RealChain { kind, spec }
    }

    fn dir(&self) -> PathBuf {
        cache_dir().join("real-chains").join(format!("{}-{}", self.kind.name(), self.spec.name()))
    }

    fn start_node(&self, template: Option<&std::path::Path>) -> Option<RealNode> {
        let flags = self.kind.flags();
        Some(match (self.kind, template) {
            (NodeKind::Core, Some(t)) => RealNode::Core(BitcoinCore::try_start_from(t, flags)?),
            (NodeKind::Core, None) => RealNode::Core(BitcoinCore::try_start_with(flags)?),
            (NodeKind::Sv, Some(t)) => RealNode::Sv(BitcoinSv::try_start_from(t, flags)?),
            (NodeKind::Sv, None) => RealNode::Sv(BitcoinSv::try_start_with(flags)?),
        })
    }

    /// A node holding `blocks` (this chain, from `spec.load()`) plus one fresh block on top, or
    /// `None` when the node is not installed (skipped as the end-to-end tests are).
    pub fn start(&self, blocks: &[Block]) -> Option<RealNode> {
        let dir = self.dir();
        if !dir.join("complete").is_file() {
            self.fill(blocks, &dir)?;
        }
        let mut node = self.start_node(Some(&dir.join("regtest")))?;
        assert_eq!(node.height(), (blocks.len() - 1) as u64, "the cached node holds the chain");
        self.mine_one(&mut node);
        Some(node)
    }

    /// Mines one block with the current time: the node leaves initial block download.
    fn mine_one(&self, node: &mut RealNode) {
        match node {
            RealNode::Core(n) => {
                n.generate_to(1, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080");
            }
            RealNode::Sv(n) => {
                let address = n.new_address();
                n.generate_to(1, &address);
            }
        }
    }

    /// Gives the blocks to a fresh node, waits for its indexes, stops it and caches its
    /// regtest directory at `dir/regtest`.
    fn fill(&self, blocks: &[Block], dir: &std::path::Path) -> Option<()> {
        let mut node = self.start_node(None)?;
        let started = Instant::now();
        let mut last_report = Instant::now();
        for (height, block) in blocks.iter().enumerate().skip(1) {
            let hex = hex::encode(serialize(block));
            let result = node.call("submitblock", json!([hex]));
            assert!(result.is_null(), "the node refused block {height}: {result}\n{}", node.log_tail());
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "filling the {} node: block {height} of {} ({:.0} s)",
                    self.kind.name(),
                    blocks.len() - 1,
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        if self.kind == NodeKind::Core {
            // The indexes are built in the background; a copy taken before they finish would
            // leave the next start catching up while being measured.
            let synced = |n: &RealNode| {
                let info = n.call("getindexinfo", json!([]));
                info.as_object().is_some_and(|m| !m.is_empty() && m.values().all(|i| i["synced"] == true))
            };
            while !synced(&node) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        eprintln!(
            "filled the {} node with {} blocks in {:.0} s",
            self.kind.name(),
            blocks.len() - 1,
            started.elapsed().as_secs_f64()
        );
        node.shutdown();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("cache dir");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(node.datadir().join("regtest"))
            .arg(dir.join("regtest"))
            .status()
            .expect("cp");
        assert!(status.success(), "caching the node's directory failed");
        // Logs and locks of the filling run are not part of the chain.
        for stale in ["debug.log", "bitcoind.log", ".lock", "bitcoind.pid"] {
            let _ = std::fs::remove_file(dir.join("regtest").join(stale));
        }
        std::fs::write(dir.join("complete"), b"").expect("marker");
        Some(())
    }
}
