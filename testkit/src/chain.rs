//! Deterministic regtest chain builder for the integration tests.
//!
//! `ChainBuilder` grows a chain from a genesis block (regtest's by default) with blocks full of
//! well-formed (but unsigned) transactions. It keeps its own UTXO set so that every input spends
//! an output that really exists on its branch: ferrum treats a missing prevout as fatal. Scripts
//! are never executed by ferrum, so signatures, pubkeys and witnesses are random bytes of the
//! right shape. Everything is derived from the seed, so a test gets the same chain every run.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::Hash;
use bitcoin::pow::CompactTarget;
use bitcoin::{
    absolute::LockTime, transaction::Version, Amount, Block, BlockHash, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Regtest's proof-of-work limit; ferrum does not check PoW so blocks are not ground.
const REGTEST_BITS: u32 = 0x207f_ffff;
const COIN: u64 = 100_000_000;
const DUST: u64 = 1_000;

/// The standard output types the builder creates (OP_RETURN outputs are added separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScriptKind {
    P2pkh,
    P2sh,
    P2wpkh,
    P2wsh,
    P2tr,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 5] =
        [ScriptKind::P2pkh, ScriptKind::P2sh, ScriptKind::P2wpkh, ScriptKind::P2wsh, ScriptKind::P2tr];

    /// The kind of a script the builder made, if it is one of the standard kinds.
    pub fn of(script: &bitcoin::Script) -> Option<ScriptKind> {
        if script.is_p2pkh() {
            Some(ScriptKind::P2pkh)
        } else if script.is_p2sh() {
            Some(ScriptKind::P2sh)
        } else if script.is_p2wpkh() {
            Some(ScriptKind::P2wpkh)
        } else if script.is_p2wsh() {
            Some(ScriptKind::P2wsh)
        } else if script.is_p2tr() {
            Some(ScriptKind::P2tr)
        } else {
            None
        }
    }
}

/// Shape of the generated blocks.
#[derive(Clone, Debug)]
pub struct ChainOptions {
    /// Non-coinbase transactions per block, drawn uniformly from `min_txs..=max_txs` (fewer when
    /// the UTXO set runs dry, which only happens in the first blocks).
    pub min_txs: usize,
    pub max_txs: usize,
    /// Maximum inputs / outputs of a spending transaction (at least 1 each).
    pub max_inputs: usize,
    pub max_outputs: usize,
    /// Script of the coinbase reward; `None` rotates through P2WPKH, P2TR and P2PKH.
    pub coinbase_kind: Option<ScriptKind>,
    /// How many "hot" scripts (one per kind, cycling) receive outputs over and over.
    pub hot_scripts: usize,
    /// Probability that an output pays a hot script instead of a fresh one.
    pub hot_probability: f64,
    /// Probability that a transaction also carries an OP_RETURN output.
    pub op_return_probability: f64,
    /// Probability that a transaction's first input spends an output created earlier in the
    /// same block (when one is available).
    pub same_block_spend_probability: f64,
    /// Probability that a transaction is a batch payout of 20-50 outputs (exchanges, pools).
    pub batch_payout_probability: f64,
    /// Blocks a real node accepts (`real_chain`): every output script is a unique
    /// anyone-can-spend `<20 bytes> OP_DROP OP_TRUE` spent by an empty scriptSig (no signatures
    /// to make, nothing for the node to verify at length), coinbases spent only once mature and
    /// split into many outputs while the chain is young, BIP34 heights as Core encodes them, and
    /// ground proof of work. Such chains are not forked or resumed.
    pub node_valid: bool,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            min_txs: 5,
            max_txs: 30,
            max_inputs: 4,
            max_outputs: 5,
            coinbase_kind: None,
            hot_scripts: 5,
            hot_probability: 0.2,
            op_return_probability: 0.1,
            same_block_spend_probability: 0.3,
            batch_payout_probability: 0.0,
            node_valid: false,
        }
    }
}

/// A coinbase output is spendable this many blocks later (consensus).
const COINBASE_MATURITY: u32 = 100;
/// In node-valid chains the first coinbases are split this many ways, up to this height, so the
/// blocks after maturity have coins to spend.
const YOUNG_COINBASE_OUTPUTS: usize = 1000;
const YOUNG_CHAIN_HEIGHT: u32 = 200;

/// One unspent output of a branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub script: ScriptBuf,
    pub value: u64,
    /// Height of the block that created it.
    pub height: u32,
}

/// A UTXO set with O(1) random pick and removal (swap_remove plus a position index). Only the
/// vector's order drives the randomness, so the set is deterministic.
#[derive(Clone, Default)]
struct UtxoSet {
    items: Vec<Utxo>,
    pos: HashMap<OutPoint, usize>,
}

impl UtxoSet {
    fn insert(&mut self, utxo: Utxo) {
        self.pos.insert(utxo.outpoint, self.items.len());
        self.items.push(utxo);
    }

    fn remove(&mut self, outpoint: &OutPoint) -> Option<Utxo> {
        let i = self.pos.remove(outpoint)?;
        let utxo = self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.pos.insert(moved.outpoint, i);
        }
        Some(utxo)
    }

    fn contains(&self, outpoint: &OutPoint) -> bool {
        self.pos.contains_key(outpoint)
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[derive(Clone)]
pub struct ChainBuilder {
    seed: u64,
    opts: ChainOptions,
    rng: StdRng,
    blocks: Vec<Block>,
    utxos: UtxoSet,
    hot: Vec<ScriptBuf>,
    /// Distinguishes branches: goes into every coinbase so sibling blocks never collide.
    branch_tag: u64,
    /// Forks made from this builder so far (keeps `fork(&self)` deterministic yet distinct).
    forks_made: Cell<u64>,
    /// Outpoints the abandoned branch spent after the fork point; the new branch spends them
    /// first so that the same coins are double-spent across branches.
    priority_spends: Vec<OutPoint>,
    /// Node-valid chains: coinbase outputs not yet mature, oldest first.
    maturing: std::collections::VecDeque<Utxo>,
}

impl ChainBuilder {
    /// A builder on top of regtest's genesis block with default options.
    pub fn new(seed: u64) -> ChainBuilder {
        ChainBuilder::with_options(seed, ChainOptions::default())
    }

    pub fn with_options(seed: u64, opts: ChainOptions) -> ChainBuilder {
        ChainBuilder::from_genesis(seed, opts, genesis_block(Network::Regtest))
    }

    /// A builder on top of an arbitrary genesis block (e.g. testnet's, for wrong-chain tests).
    /// The genesis coinbase output is never spendable, as in Bitcoin.
    pub fn from_genesis(seed: u64, opts: ChainOptions, genesis: Block) -> ChainBuilder {
        let mut rng = StdRng::seed_from_u64(seed);
        let hot = (0..opts.hot_scripts)
            .map(|i| new_script(&mut rng, ScriptKind::ALL[i % ScriptKind::ALL.len()], opts.node_valid))
            .collect();
        ChainBuilder {
            seed,
            opts,
            rng,
            blocks: vec![genesis],
            utxos: UtxoSet::default(),
            hot,
            branch_tag: 0,
            forks_made: Cell::new(0),
            priority_spends: Vec::new(),
            maturing: Default::default(),
        }
    }

    /// A builder that continues `blocks` (a chain this generator made with `seed` and `opts`,
    /// e.g. loaded from the benchmark cache): the UTXO set is rebuilt from the blocks and new
    /// blocks follow from a random stream derived from the seed and the height.
    pub fn resume(seed: u64, opts: ChainOptions, blocks: Vec<Block>) -> ChainBuilder {
        let mut b = ChainBuilder::with_options(seed, opts);
        b.rng = StdRng::seed_from_u64(seed ^ (blocks.len() as u64).rotate_left(32));
        for (height, block) in blocks.iter().enumerate().skip(1) {
            for tx in &block.txdata {
                if !tx.is_coinbase() {
                    for i in &tx.input {
                        b.utxos.remove(&i.previous_output);
                    }
                }
                let txid = tx.compute_txid();
                for (vout, o) in tx.output.iter().enumerate() {
                    if !o.script_pubkey.is_op_return() {
                        let outpoint = OutPoint::new(txid, vout as u32);
                        let (script, value) = (o.script_pubkey.clone(), o.value.to_sat());
                        b.utxos.insert(Utxo { outpoint, script, value, height: height as u32 });
                    }
                }
            }
        }
        b.blocks = blocks;
        b
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.blocks[self.blocks.len() - 1].block_hash()
    }

    pub fn block_hash(&self, height: u32) -> BlockHash {
        self.blocks[height as usize].block_hash()
    }

    pub fn options(&self) -> &ChainOptions {
        &self.opts
    }

    /// The scripts that receive outputs again and again (shared by all forks of a builder).
    pub fn hot_scripts(&self) -> &[ScriptBuf] {
        &self.hot
    }

    /// Every unspent output of this branch, sorted by (height, txid, vout).
    pub fn utxos(&self) -> Vec<Utxo> {
        let mut all = self.utxos.items.clone();
        all.sort_by_key(|u| (u.height, u.outpoint.txid, u.outpoint.vout));
        all
    }

    /// Unspent outputs paying `script`, sorted by (height, txid, vout).
    pub fn utxos_of(&self, script: &bitcoin::Script) -> Vec<Utxo> {
        self.utxos().into_iter().filter(|u| u.script.as_script() == script).collect()
    }

    pub fn balance(&self, script: &bitcoin::Script) -> u64 {
        self.utxos_of(script).iter().map(|u| u.value).sum()
    }

    /// Electrum-style confirmed history of `script`: every transaction that pays it or spends
    /// from it, once each, in chain order (height, then position in the block). The genesis
    /// block is excluded: its coinbase is not spendable and not indexed.
    pub fn history(&self, script: &bitcoin::Script) -> Vec<(Txid, u32)> {
        let mut owned: HashSet<OutPoint> = HashSet::new();
        let mut out = Vec::new();
        for (height, block) in self.blocks.iter().enumerate().skip(1) {
            for tx in &block.txdata {
                let txid = tx.compute_txid();
                let spends = !tx.is_coinbase() && tx.input.iter().any(|i| owned.contains(&i.previous_output));
                let mut pays = false;
                for (vout, o) in tx.output.iter().enumerate() {
                    if o.script_pubkey.as_script() == script {
                        pays = true;
                        owned.insert(OutPoint::new(txid, vout as u32));
                    }
                }
                if spends || pays {
                    out.push((txid, height as u32));
                }
            }
        }
        out
    }

    /// A script of the given kind that occurs in the chain's outputs (a hot one when possible).
    pub fn script_of_kind(&self, kind: ScriptKind) -> Option<ScriptBuf> {
        if let Some(s) = self.hot.iter().find(|s| ScriptKind::of(s) == Some(kind)) {
            return Some(s.clone());
        }
        self.blocks
            .iter()
            .skip(1)
            .flat_map(|b| &b.txdata)
            .flat_map(|t| &t.output)
            .find_map(|o| (ScriptKind::of(&o.script_pubkey) == Some(kind)).then(|| o.script_pubkey.clone()))
    }

    /// Every OP_RETURN script in the chain (including the coinbases' witness commitments).
    pub fn op_return_scripts(&self) -> Vec<ScriptBuf> {
        let mut seen = HashSet::new();
        self.blocks
            .iter()
            .skip(1)
            .flat_map(|b| &b.txdata)
            .flat_map(|t| &t.output)
            .filter(|o| o.script_pubkey.is_op_return())
            .filter(|o| seen.insert(o.script_pubkey.clone()))
            .map(|o| o.script_pubkey.clone())
            .collect()
    }

    /// Adds `n` blocks with the configured number of transactions.
    pub fn add_blocks(&mut self, n: usize) -> &mut ChainBuilder {
        for _ in 0..n {
            self.add_block();
        }
        self
    }

    pub fn add_block(&mut self) -> &Block {
        let ntx = self.rng.gen_range(self.opts.min_txs..=self.opts.max_txs.max(self.opts.min_txs));
        self.add_block_with_txs(ntx)
    }

    /// Appends a block with a coinbase and (up to) `ntx` spending transactions.
    pub fn add_block_with_txs(&mut self, ntx: usize) -> &Block {
        self.add_block_including(Vec::new(), ntx)
    }

    /// A transaction spending `inputs` (which must be unspent on this branch or created by a
    /// transaction that will precede it) and paying `outputs`; the UTXO set is not changed until
    /// the transaction is put in a block with `add_block_including`.
    pub fn make_tx(&mut self, inputs: &[Utxo], outputs: &[(ScriptBuf, u64)]) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs.iter().map(|u| self.dummy_input(u)).collect(),
            output: outputs
                .iter()
                .map(|(s, v)| TxOut { value: Amount::from_sat(*v), script_pubkey: s.clone() })
                .collect(),
        }
    }

    /// Appends a block holding `include` (in order, right after the coinbase), then up to `ntx`
    /// random transactions.
    pub fn add_block_including(&mut self, include: Vec<Transaction>, ntx: usize) -> &Block {
        let height = self.height() + 1;
        while self.maturing.front().is_some_and(|u| u.height + COINBASE_MATURITY <= height) {
            let u = self.maturing.pop_front().expect("checked");
            self.utxos.insert(u);
        }
        let mut txs: Vec<Transaction> = Vec::with_capacity(ntx + 1);
        // Outputs created by this block that are still unspent: candidates for in-block spends.
        let mut fresh: Vec<OutPoint> = Vec::new();
        let mut fees = 0u64;
        // Txids are hashed once here (debug-build SHA256 dominates the builder's cost).
        let mut txids: Vec<Txid> = Vec::with_capacity(ntx + 1);
        for tx in include {
            let txid = tx.compute_txid();
            let mut spent = 0u64;
            for i in &tx.input {
                let u = self.utxos.remove(&i.previous_output).expect("an included tx spends an unspent output");
                spent += u.value;
            }
            fees += spent - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
            for (vout, o) in tx.output.iter().enumerate() {
                if !o.script_pubkey.is_op_return() {
                    let outpoint = OutPoint::new(txid, vout as u32);
                    self.utxos.insert(Utxo {
                        outpoint,
                        script: o.script_pubkey.clone(),
                        value: o.value.to_sat(),
                        height,
                    });
                }
            }
            txs.push(tx);
            txids.push(txid);
        }
        for _ in 0..ntx {
            if self.utxos.len() == 0 {
                break;
            }
            let (tx, txid) = self.spending_tx(height, &mut fresh, &mut fees);
            txs.push(tx);
            txids.push(txid);
        }

        // Coinbase: BIP34 height, branch tag and an extra nonce make it unique per branch.
        let extra_nonce: u32 = self.rng.gen();
        let mut script_sig = Vec::new();
        if self.opts.node_valid && height <= 16 {
            // Core checks BIP34 heights byte for byte against `CScript() << height`: OP_1..OP_16.
            script_sig.push(0x50 + height as u8);
        } else {
            push_data(&mut script_sig, &script_num(height as i64));
        }
        push_data(&mut script_sig, &self.branch_tag.to_le_bytes());
        push_data(&mut script_sig, &extra_nonce.to_le_bytes());
        push_data(&mut script_sig, b"/ferrum-test/");
        let kind = self
            .opts
            .coinbase_kind
            .unwrap_or([ScriptKind::P2wpkh, ScriptKind::P2tr, ScriptKind::P2pkh][height as usize % 3]);
        // Every so often the reward goes to a hot script so hot scripts see coinbase history.
        let reward_script = match self.hot.iter().find(|s| ScriptKind::of(s) == Some(kind)) {
            Some(hot) if self.rng.gen_bool(0.25) => hot.clone(),
            _ => new_script(&mut self.rng, kind, self.opts.node_valid),
        };
        let subsidy = (50 * COIN) >> (height / 150).min(63);
        let reward = subsidy + fees;
        let parts = if self.opts.node_valid && height <= YOUNG_CHAIN_HEIGHT { YOUNG_COINBASE_OUTPUTS } else { 1 };
        let mut outputs = vec![TxOut { value: Amount::from_sat(reward / parts as u64), script_pubkey: reward_script }];
        for _ in 1..parts {
            let script = new_script(&mut self.rng, kind, true);
            outputs.push(TxOut { value: Amount::from_sat(reward / parts as u64), script_pubkey: script });
        }
        outputs[0].value += Amount::from_sat(reward % parts as u64);
        let mut coinbase = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outputs,
        };
        let has_witness = txs.iter().any(|t| t.input.iter().any(|i| !i.witness.is_empty()));
        txs.insert(0, coinbase.clone());
        let mut block = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: self.tip_hash(),
                merkle_root: TxMerkleNode::all_zeros(),
                // Strictly increasing, 10 minutes apart, like a well-behaved miner.
                time: self.blocks[0].header.time + height * 600,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: self.rng.gen(),
            },
            txdata: txs,
        };
        if has_witness {
            // BIP141 commitment (an OP_RETURN output of the coinbase); the coinbase's wtxid is
            // defined as zero, so the witness root does not depend on the commitment itself.
            let reserved = [0u8; 32];
            let root = block.witness_root().expect("non-empty block");
            let commitment = Block::compute_witness_commitment(&root, &reserved);
            let mut spk = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
            spk.extend_from_slice(commitment.as_byte_array());
            coinbase.output.push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(spk) });
            coinbase.input[0].witness = Witness::from_slice(&[reserved]);
            block.txdata[0] = coinbase;
        }
        let cb = &block.txdata[0];
        let cb_txid = cb.compute_txid();
        txids.insert(0, cb_txid);
        block.header.merkle_root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()))
            .map(TxMerkleNode::from_raw_hash)
            .expect("non-empty block");
        if self.opts.node_valid {
            let target = block.header.target();
            while !target.is_met_by(block.header.block_hash()) {
                block.header.nonce = block.header.nonce.wrapping_add(1);
            }
        }

        for (vout, o) in cb.output.iter().enumerate() {
            if !o.script_pubkey.is_op_return() {
                let utxo = Utxo {
                    outpoint: OutPoint::new(cb_txid, vout as u32),
                    script: o.script_pubkey.clone(),
                    value: o.value.to_sat(),
                    height,
                };
                if self.opts.node_valid {
                    self.maturing.push_back(utxo);
                } else {
                    self.utxos.insert(utxo);
                }
            }
        }
        self.blocks.push(block);
        self.blocks.last().expect("just pushed")
    }

    /// Builds one spending transaction and applies it to the UTXO set right away, so later
    /// transactions of the same block may spend its outputs.
    fn spending_tx(&mut self, height: u32, fresh: &mut Vec<OutPoint>, fees: &mut u64) -> (Transaction, Txid) {
        let n_in = self.rng.gen_range(1..=self.opts.max_inputs.max(1)).min(self.utxos.len());
        let mut spent: Vec<Utxo> = Vec::with_capacity(n_in);
        // Coins the abandoned branch spent go first (a double-spend across the reorg).
        while spent.len() < n_in {
            let Some(op) = self.priority_spends.pop() else {
                break;
            };
            if let Some(u) = self.utxos.remove(&op) {
                spent.push(u);
            }
        }
        if spent.len() < n_in && !fresh.is_empty() && self.rng.gen_bool(self.opts.same_block_spend_probability) {
            let op = fresh.swap_remove(self.rng.gen_range(0..fresh.len()));
            if let Some(u) = self.utxos.remove(&op) {
                spent.push(u);
            }
        }
        while spent.len() < n_in && self.utxos.len() > 0 {
            let i = self.rng.gen_range(0..self.utxos.len());
            let op = self.utxos.items[i].outpoint;
            spent.extend(self.utxos.remove(&op));
        }

        let input: Vec<TxIn> = spent.iter().map(|u| self.dummy_input(u)).collect();
        let total: u64 = spent.iter().map(|u| u.value).sum();
        let fee = (200 + 100 * input.len() as u64).min(total / 2);
        let mut available = total - fee;
        let batch = self.opts.batch_payout_probability > 0.0 && self.rng.gen_bool(self.opts.batch_payout_probability);
        let most = if batch { 50 } else { self.opts.max_outputs.max(1) as u64 };
        let max_out = (available / DUST).clamp(1, most) as usize;
        let n_out =
            if batch && max_out >= 20 { self.rng.gen_range(20..=max_out) } else { self.rng.gen_range(1..=max_out) };
        let mut output = Vec::with_capacity(n_out + 1);
        for k in 0..n_out {
            // The last output takes the remainder; the others a random share of what is left.
            let value = if k + 1 == n_out {
                available
            } else {
                let reserve = DUST * (n_out - k - 1) as u64;
                self.rng.gen_range(DUST.min(available - reserve)..=available - reserve)
            };
            available -= value;
            let script = if !self.hot.is_empty() && self.rng.gen_bool(self.opts.hot_probability) {
                self.hot[self.rng.gen_range(0..self.hot.len())].clone()
            } else {
                let kind = ScriptKind::ALL[self.rng.gen_range(0..ScriptKind::ALL.len())];
                new_script(&mut self.rng, kind, self.opts.node_valid)
            };
            output.push(TxOut { value: Amount::from_sat(value), script_pubkey: script });
        }
        if self.rng.gen_bool(self.opts.op_return_probability) {
            let len = self.rng.gen_range(0..=40);
            let data = random_bytes(&mut self.rng, len);
            let mut spk = vec![0x6a];
            push_data(&mut spk, &data);
            let pos = self.rng.gen_range(0..=output.len());
            output.insert(pos, TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(spk) });
        }
        *fees += fee;

        let tx = Transaction { version: Version::TWO, lock_time: LockTime::ZERO, input, output };
        let txid = tx.compute_txid();
        for (vout, o) in tx.output.iter().enumerate() {
            if o.script_pubkey.is_op_return() {
                continue;
            }
            let outpoint = OutPoint::new(txid, vout as u32);
            fresh.push(outpoint);
            self.utxos.insert(Utxo { outpoint, script: o.script_pubkey.clone(), value: o.value.to_sat(), height });
        }
        (tx, txid)
    }

    /// An input spending `u` with a scriptSig / witness of the shape its script type expects.
    fn dummy_input(&mut self, u: &Utxo) -> TxIn {
        if self.opts.node_valid {
            // `<20 bytes> OP_DROP OP_TRUE` needs nothing from the spender.
            return TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            };
        }
        let rng = &mut self.rng;
        let mut script_sig = Vec::new();
        let mut witness = Witness::new();
        match ScriptKind::of(&u.script) {
            Some(ScriptKind::P2pkh) | None => {
                push_data(&mut script_sig, &dummy_sig(rng));
                push_data(&mut script_sig, &dummy_pubkey(rng));
            }
            Some(ScriptKind::P2sh) => {
                if rng.gen_bool(0.5) {
                    // Nested P2SH-P2WPKH: the redeem script is pushed, the rest is witness.
                    let mut redeem = vec![0x00, 0x14];
                    redeem.extend(random_bytes(rng, 20));
                    push_data(&mut script_sig, &redeem);
                    witness.push(dummy_sig(rng));
                    witness.push(dummy_pubkey(rng));
                } else {
                    // Bare 1-of-1 multisig redeem script.
                    let mut redeem = vec![0x51, 0x21];
                    redeem.extend(dummy_pubkey(rng));
                    redeem.extend([0x51, 0xae]);
                    script_sig.push(0x00);
                    push_data(&mut script_sig, &dummy_sig(rng));
                    push_data(&mut script_sig, &redeem);
                }
            }
            Some(ScriptKind::P2wpkh) => {
                witness.push(dummy_sig(rng));
                witness.push(dummy_pubkey(rng));
            }
            Some(ScriptKind::P2wsh) => {
                let mut ws = vec![0x21];
                ws.extend(dummy_pubkey(rng));
                ws.push(0xac);
                witness.push(dummy_sig(rng));
                witness.push(ws);
            }
            Some(ScriptKind::P2tr) => {
                // Key-path spend: one 64-byte Schnorr signature.
                witness.push(random_bytes(rng, 64));
            }
        }
        TxIn {
            previous_output: u.outpoint,
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: if rng.gen_bool(0.5) { Sequence::MAX } else { Sequence::ENABLE_RBF_NO_LOCKTIME },
            witness,
        }
    }

    /// A copy of this branch truncated to `height` (UTXO set rewound), whose future blocks
    /// differ from this branch's: a different coinbase tag and RNG stream, and the coins that
    /// this branch's blocks above `height` spent are spent again first.
    pub fn fork(&self, height: u32) -> ChainBuilder {
        assert!(height <= self.height(), "fork height {height} above tip {}", self.height());
        let n = self.forks_made.get() + 1;
        self.forks_made.set(n);
        let mut blocks = self.blocks.clone();
        blocks.truncate(height as usize + 1);
        let utxos = replay_utxos(&blocks);

        // Coins that existed at the fork point and that the abandoned blocks spent.
        let mut priority: Vec<OutPoint> = self.blocks[height as usize + 1..]
            .iter()
            .flat_map(|b| b.txdata.iter().skip(1))
            .flat_map(|t| t.input.iter().map(|i| i.previous_output))
            .filter(|op| utxos.contains(op))
            .collect();
        priority.reverse(); // popped from the back: spend in the old branch's order

        let branch_seed = self.seed
            ^ (u64::from(height) << 32)
            ^ self.branch_tag.rotate_left(17)
            ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = StdRng::seed_from_u64(branch_seed);
        let branch_tag = rng.gen::<u64>() | 1; // never 0, the main branch's tag
        ChainBuilder {
            seed: branch_seed,
            opts: self.opts.clone(),
            rng,
            blocks,
            utxos,
            hot: self.hot.clone(),
            branch_tag,
            forks_made: Cell::new(0),
            priority_spends: priority,
            maturing: Default::default(),
        }
    }
}

/// Rebuilds the UTXO set of a branch from its blocks (genesis excluded: unspendable).
fn replay_utxos(blocks: &[Block]) -> UtxoSet {
    let mut set = UtxoSet::default();
    for (height, block) in blocks.iter().enumerate().skip(1) {
        for tx in &block.txdata {
            if !tx.is_coinbase() {
                for i in &tx.input {
                    set.remove(&i.previous_output).expect("builder chains only spend existing coins");
                }
            }
            let txid = tx.compute_txid();
            for (vout, o) in tx.output.iter().enumerate() {
                if !o.script_pubkey.is_op_return() {
                    set.insert(Utxo {
                        outpoint: OutPoint::new(txid, vout as u32),
                        script: o.script_pubkey.clone(),
                        value: o.value.to_sat(),
                        height: height as u32,
                    });
                }
            }
        }
    }
    set
}

/// A fresh script: of the given kind, or for node-valid chains a unique anyone-can-spend one.
fn new_script(rng: &mut impl Rng, kind: ScriptKind, node_valid: bool) -> ScriptBuf {
    if node_valid {
        let mut spk = vec![0x14];
        spk.extend(random_bytes(rng, 20));
        spk.extend([0x75, 0x51]); // OP_DROP OP_TRUE
        return ScriptBuf::from_bytes(spk);
    }
    random_script(rng, kind)
}

/// A fresh random script of the given kind (random hashes / keys: nobody checks them).
pub fn random_script(rng: &mut impl Rng, kind: ScriptKind) -> ScriptBuf {
    let mut bytes = |n: usize| random_bytes(rng, n);
    let spk = match kind {
        ScriptKind::P2pkh => [&[0x76, 0xa9, 0x14][..], &bytes(20), &[0x88, 0xac]].concat(),
        ScriptKind::P2sh => [&[0xa9, 0x14][..], &bytes(20), &[0x87]].concat(),
        ScriptKind::P2wpkh => [&[0x00, 0x14][..], &bytes(20)].concat(),
        ScriptKind::P2wsh => [&[0x00, 0x20][..], &bytes(32)].concat(),
        ScriptKind::P2tr => [&[0x51, 0x20][..], &bytes(32)].concat(),
    };
    ScriptBuf::from_bytes(spk)
}

fn random_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// A DER-shaped 72-byte ECDSA signature with SIGHASH_ALL (contents are random).
fn dummy_sig(rng: &mut impl Rng) -> Vec<u8> {
    let mut sig = vec![0x30, 0x45, 0x02, 0x21, 0x00];
    sig.extend(random_bytes(rng, 32));
    sig.extend([0x02, 0x20]);
    sig.extend(random_bytes(rng, 32));
    sig.push(0x01);
    sig
}

/// A compressed-pubkey-shaped 33-byte string.
fn dummy_pubkey(rng: &mut impl Rng) -> Vec<u8> {
    let mut pk = vec![if rng.gen_bool(0.5) { 0x02 } else { 0x03 }];
    pk.extend(random_bytes(rng, 32));
    pk
}

/// Appends a minimal data push of `data` to a raw script.
fn push_data(script: &mut Vec<u8>, data: &[u8]) {
    match data.len() {
        n if n < 0x4c => script.push(n as u8),
        n if n <= 0xff => script.extend([0x4c, n as u8]),
        n => {
            assert!(n <= 0xffff, "push too large");
            script.push(0x4d);
            script.extend((n as u16).to_le_bytes());
        }
    }
    script.extend_from_slice(data);
}

/// CScriptNum encoding (used for the BIP34 height in the coinbase).
fn script_num(mut n: i64) -> Vec<u8> {
    let neg = n < 0;
    n = n.abs();
    let mut out = Vec::new();
    while n > 0 {
        out.push((n & 0xff) as u8);
        n >>= 8;
    }
    if let Some(&last) = out.last() {
        if last & 0x80 != 0 {
            out.push(if neg { 0x80 } else { 0 });
        } else if neg {
            *out.last_mut().expect("non-empty") |= 0x80;
        }
    }
    out
}
