//! Raw block parsing: the prefetcher turns each block's bytes into just what the block
//! processor needs (txids, spent outpoints, output script hashes and values), on a worker
//! pool, so the single writer thread does no hashing or decoding.

use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::coins::Coin;
use crate::types::{HashX, OutPoint, ScriptHash, TxOut, Txid};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("block data ends early at byte {0}")]
    Truncated(usize),
    #[error("{0} trailing bytes after the last transaction")]
    Trailing(usize),
    #[error("merkle root mismatch: the block's transactions do not match its header")]
    MerkleMismatch,
    #[error("block has no transactions")]
    Empty,
    #[error("count {0} at byte {1} is larger than the data")]
    BadCount(u64, usize),
    #[error("the spent outputs do not match the block: {0}")]
    SpentMismatch(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedTx {
    pub txid: Txid,
    /// Empty for a coinbase.
    pub inputs: Vec<OutPoint>,
    pub outputs: Vec<TxOut>,
}

#[derive(Clone, Debug)]
pub struct ParsedBlock {
    pub height: u32,
    pub hash: [u8; 32],
    pub header: [u8; 80],
    pub txs: Vec<ParsedTx>,
    /// Serialized size, for the prefetch window and statistics.
    pub size: usize,
    /// The script hash of every output the block spends, input by input (coinbase excluded),
    /// where the daemon told us (Bitcoin Core's `/rest/spenttxouts`): then a spend is found in
    /// the index by its script hash, one seek, rather than by its txid (`parse_spent_outputs`).
    pub spent: Option<Vec<HashX>>,
}

impl ParsedBlock {
    pub fn prev_hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.header[4..36]);
        h
    }
}

pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// The Electrum script hash truncated to ferrum's key size.
pub fn script_hashx(script: &[u8]) -> HashX {
    ScriptHash::of_script(script).hashx()
}

/// Block hash (internal byte order) of an 80-byte header.
pub fn header_hash(header: &[u8; 80]) -> [u8; 32] {
    sha256d(header)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(ParseError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn varint(&mut self) -> Result<u64, ParseError> {
        Ok(match self.u8()? {
            0xfd => u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as u64,
            0xfe => self.u32()? as u64,
            0xff => self.u64()?,
            n => n as u64,
        })
    }

    /// A count of items each at least `min_item` bytes long, checked against what is left so a
    /// corrupt count cannot make us allocate gigabytes.
    fn count(&mut self, min_item: usize) -> Result<usize, ParseError> {
        let at = self.pos;
        let n = self.varint()?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(ParseError::BadCount(n, at));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ParseError> {
        let n = self.count(1)?;
        self.take(n)
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.data.get(self.pos + offset).copied()
    }
}

/// Parses one transaction; also returns how many of its bytes are witness data (marker, flag
/// and witnesses), for its virtual size.
fn parse_tx(r: &mut Reader, coin: &Coin) -> Result<(ParsedTx, usize), ParseError> {
    let start = r.pos;
    // BIP 144: after the version, a zero input count followed by flag 1 marks witness
    // serialization.
    r.take(4)?;
    let segwit = coin.segwit && r.peek(0) == Some(0) && r.peek(1) == Some(1);
    if segwit {
        r.take(2)?;
    }
    let body_start = r.pos;
    let n_in = r.count(41)?;
    let mut inputs = Vec::with_capacity(n_in);
    for _ in 0..n_in {
        let prev: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let vout = r.u32()?;
        r.bytes()?; // scriptSig
        r.take(4)?; // sequence
        if !(vout == u32::MAX && prev == [0u8; 32]) {
            inputs.push(OutPoint { txid: Txid(prev), vout });
        }
    }
    let n_out = r.count(9)?;
    let mut outputs = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        let value = r.u64()?;
        let script = r.bytes()?;
        let hashx = if coin.is_unspendable(script) { None } else { Some(script_hashx(script)) };
        outputs.push(TxOut { hashx, value });
    }
    let body_end = r.pos;
    let mut witness = 0;
    if segwit {
        let witness_start = r.pos;
        for _ in 0..n_in {
            let items = r.count(1)?;
            for _ in 0..items {
                r.bytes()?;
            }
        }
        witness = 2 + r.pos - witness_start;
    }
    let lock = r.take(4)?;
    // The txid hashes the serialization without marker, flag and witnesses.
    let mut h = Sha256::new();
    h.update(&r.data[start..start + 4]);
    h.update(&r.data[body_start..body_end]);
    h.update(lock);
    let txid: [u8; 32] = Sha256::digest(h.finalize()).into();
    Ok((ParsedTx { txid: Txid(txid), inputs, outputs }, witness))
}

/// A loose transaction (from the mempool): what the index needs, and its virtual size.
pub fn parse_transaction(data: &[u8], coin: &Coin) -> Result<(ParsedTx, u32), ParseError> {
    let mut r = Reader { data, pos: 0 };
    let (tx, witness) = parse_tx(&mut r, coin)?;
    if r.pos != data.len() {
        return Err(ParseError::Trailing(data.len() - r.pos));
    }
    // BIP 141: weight = 3 × size without witness data + full size; vsize rounds the quarter up.
    let base = data.len() - witness;
    Ok((tx, (base * 3 + data.len()).div_ceil(4) as u32))
}

/// Each transaction of a serialized block with where its bytes are, so one can be cut out of
/// its block when the daemon cannot look it up by txid.
pub fn transaction_ranges(data: &[u8], coin: &Coin) -> Result<Vec<(Txid, Range<usize>)>, ParseError> {
    let mut r = Reader { data, pos: 0 };
    r.take(80)?;
    let n_tx = r.count(60)?;
    let mut out = Vec::with_capacity(n_tx);
    for _ in 0..n_tx {
        let start = r.pos;
        let (tx, _) = parse_tx(&mut r, coin)?;
        out.push((tx.txid, start..r.pos));
    }
    if r.pos != data.len() {
        return Err(ParseError::Trailing(data.len() - r.pos));
    }
    Ok(out)
}

/// Bitcoin's merkle root over txids (odd levels duplicate their last node).
pub fn merkle_root(mut level: Vec<[u8; 32]>) -> [u8; 32] {
    if level.is_empty() {
        return [0u8; 32];
    }
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            let right = pair.get(1).unwrap_or(&pair[0]);
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(&pair[0]);
            buf[32..].copy_from_slice(right);
            next.push(sha256d(&buf));
        }
        level = next;
    }
    level[0]
}

/// Parses a serialized block and checks that its transactions match the header's merkle root.
pub fn parse_block(data: &[u8], height: u32, coin: &Coin) -> Result<ParsedBlock, ParseError> {
    let mut r = Reader { data, pos: 0 };
    let header: [u8; 80] = r.take(80)?.try_into().expect("80 bytes");
    let n_tx = r.count(60)?;
    if n_tx == 0 {
        return Err(ParseError::Empty);
    }
    let mut txs = Vec::with_capacity(n_tx);
    for _ in 0..n_tx {
        txs.push(parse_tx(&mut r, coin)?.0);
    }
    if r.pos != data.len() {
        return Err(ParseError::Trailing(data.len() - r.pos));
    }
    let root = merkle_root(txs.iter().map(|t| t.txid.0).collect());
    if root[..] != header[36..68] {
        return Err(ParseError::MerkleMismatch);
    }
    Ok(ParsedBlock { height, hash: header_hash(&header), header, txs, size: data.len(), spent: None })
}

/// The script hashes of the outputs `block` spends, from Bitcoin Core's `/rest/spenttxouts`
/// binary answer: a count of transactions (the coinbase's entry empty), then for each one its
/// spent outputs (value, script) in input order. Counts must match the block's inputs.
pub fn parse_spent_outputs(data: &[u8], block: &ParsedBlock) -> Result<Vec<HashX>, ParseError> {
    let mut r = Reader { data, pos: 0 };
    let n_tx = r.count(1)?;
    if n_tx != block.txs.len() {
        return Err(ParseError::SpentMismatch(format!("{n_tx} transactions, the block has {}", block.txs.len())));
    }
    let mut out = Vec::with_capacity(block.txs.iter().map(|t| t.inputs.len()).sum());
    for (i, tx) in block.txs.iter().enumerate() {
        let n = r.count(9)?;
        if n != tx.inputs.len() {
            return Err(ParseError::SpentMismatch(format!(
                "{n} spent outputs for transaction {i}, which has {} inputs",
                tx.inputs.len()
            )));
        }
        for _ in 0..n {
            r.u64()?;
            out.push(script_hashx(r.bytes()?));
        }
    }
    if r.pos != data.len() {
        return Err(ParseError::Trailing(data.len() - r.pos));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coins::{lookup, Net};
    use bitcoin::consensus::encode::serialize;
    use bitcoin::hashes::Hash;

    fn regtest() -> &'static Coin {
        lookup("Bitcoin", Net::Regtest).unwrap()
    }

    fn sample_block() -> bitcoin::Block {
        use bitcoin::{
            absolute, transaction, Amount, OutPoint as BOut, ScriptBuf, Sequence, Transaction, TxIn, TxOut as BTxOut,
            Witness,
        };
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: BOut::null(),
                script_sig: ScriptBuf::from_bytes(vec![1, 1]),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[[0u8; 32]]),
            }],
            output: vec![
                BTxOut {
                    value: Amount::from_sat(50),
                    script_pubkey: ScriptBuf::from_bytes(vec![
                        0x00, 0x14, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                    ]),
                },
                BTxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(vec![0x6a, 0x24, 0xaa]) },
            ],
        };
        let spend = Transaction {
            version: transaction::Version::ONE,
            lock_time: absolute::LockTime::ZERO,
            input: vec![
                TxIn {
                    previous_output: BOut { txid: coinbase.compute_txid(), vout: 0 },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::from_slice(&[vec![1u8; 72], vec![2u8; 33]]),
                },
                TxIn {
                    previous_output: BOut { txid: bitcoin::Txid::from_byte_array([9; 32]), vout: 300 },
                    script_sig: ScriptBuf::from_bytes(vec![0x51; 300]),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                },
            ],
            output: (0..300)
                .map(|i| BTxOut {
                    value: Amount::from_sat(i),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x51, 0x20, i as u8]),
                })
                .collect(),
        };
        let legacy = Transaction {
            version: transaction::Version::ONE,
            lock_time: absolute::LockTime::from_consensus(77),
            input: vec![TxIn {
                previous_output: BOut { txid: spend.compute_txid(), vout: 3 },
                script_sig: ScriptBuf::from_bytes(vec![1, 2, 3]),
                sequence: Sequence(5),
                witness: Witness::new(),
            }],
            output: vec![BTxOut { value: Amount::from_sat(1), script_pubkey: ScriptBuf::new() }],
        };
        let txdata = vec![coinbase, spend, legacy];
        let mut header = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest).header;
        let mut block = bitcoin::Block { header, txdata };
        header.merkle_root = block.compute_merkle_root().unwrap();
        block.header = header;
        block
    }

    /// `/rest/spenttxouts/<hash>.bin` as Bitcoin Core writes it for `block`, given the outputs
    /// its non-coinbase inputs spend.
    fn spent_answer(block: &bitcoin::Block, spent: &[bitcoin::TxOut]) -> Vec<u8> {
        use bitcoin::consensus::Encodable;
        let mut out = Vec::new();
        bitcoin::VarInt(block.txdata.len() as u64).consensus_encode(&mut out).unwrap();
        bitcoin::VarInt(0).consensus_encode(&mut out).unwrap();
        let mut spent = spent.iter();
        for tx in &block.txdata[1..] {
            bitcoin::VarInt(tx.input.len() as u64).consensus_encode(&mut out).unwrap();
            for _ in &tx.input {
                spent.next().unwrap().consensus_encode(&mut out).unwrap();
            }
        }
        out
    }

    #[test]
    fn spent_outputs_in_input_order_and_checked_against_the_block() {
        use bitcoin::{Amount, ScriptBuf, TxOut as BTxOut};
        let block = sample_block();
        let parsed = parse_block(&serialize(&block), 5, regtest()).unwrap();
        let spent: Vec<BTxOut> = (0..3u8)
            .map(|i| BTxOut {
                value: Amount::from_sat(1000 + i as u64),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51, i]),
            })
            .collect();
        let raw = spent_answer(&block, &spent);
        let hashxs = parse_spent_outputs(&raw, &parsed).unwrap();
        let expect: Vec<HashX> = spent.iter().map(|o| script_hashx(o.script_pubkey.as_bytes())).collect();
        assert_eq!(hashxs, expect);
        // Another block's answer (one input fewer), a cut answer and trailing bytes are refused.
        let mut fewer = block.clone();
        fewer.txdata[1].input.pop();
        assert!(matches!(
            parse_spent_outputs(&spent_answer(&fewer, &spent), &parsed),
            Err(ParseError::SpentMismatch(_))
        ));
        let cut = parse_spent_outputs(&raw[..raw.len() - 1], &parsed);
        assert!(matches!(cut, Err(ParseError::Truncated(_) | ParseError::BadCount(..))), "{cut:?}");
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(parse_spent_outputs(&longer, &parsed), Err(ParseError::Trailing(1)));
        assert!(matches!(parse_spent_outputs(&[0xff; 9], &parsed), Err(ParseError::BadCount(..))));
    }

    #[test]
    fn parses_like_the_bitcoin_crate() {
        let block = sample_block();
        let raw = serialize(&block);
        let parsed = parse_block(&raw, 5, regtest()).unwrap();
        assert_eq!(parsed.hash, block.block_hash().to_byte_array());
        assert_eq!(parsed.size, raw.len());
        assert_eq!(parsed.txs.len(), 3);
        for (p, t) in parsed.txs.iter().zip(&block.txdata) {
            assert_eq!(p.txid.0, t.compute_txid().to_byte_array());
            let ins: Vec<_> = t
                .input
                .iter()
                .filter(|i| !i.previous_output.is_null())
                .map(|i| (i.previous_output.txid.to_byte_array(), i.previous_output.vout))
                .collect();
            assert_eq!(p.inputs.iter().map(|o| (o.txid.0, o.vout)).collect::<Vec<_>>(), ins);
            assert_eq!(p.outputs.len(), t.output.len());
            for (po, to) in p.outputs.iter().zip(&t.output) {
                assert_eq!(po.value, to.value.to_sat());
                let expect = if to.script_pubkey.is_op_return() {
                    None
                } else {
                    Some(script_hashx(to.script_pubkey.as_bytes()))
                };
                assert_eq!(po.hashx, expect);
            }
        }
        assert!(parsed.txs[0].inputs.is_empty(), "coinbase has no spent outpoints");
    }

    #[test]
    fn loose_transactions_and_their_vsize() {
        for tx in &sample_block().txdata {
            let raw = serialize(tx);
            let (p, vsize) = parse_transaction(&raw, regtest()).unwrap();
            assert_eq!(p.txid.0, tx.compute_txid().to_byte_array());
            assert_eq!(vsize as usize, tx.vsize());
            assert!(parse_transaction(&raw[..raw.len() - 1], regtest()).is_err());
        }
    }

    #[test]
    fn transactions_cut_out_of_their_block() {
        let block = sample_block();
        let raw = serialize(&block);
        let ranges = transaction_ranges(&raw, regtest()).unwrap();
        assert_eq!(ranges.len(), block.txdata.len());
        for ((txid, range), tx) in ranges.iter().zip(&block.txdata) {
            assert_eq!(txid.0, tx.compute_txid().to_byte_array());
            assert_eq!(&raw[range.clone()], &serialize(tx)[..]);
        }
        assert!(transaction_ranges(&raw[..raw.len() - 1], regtest()).is_err());
    }

    #[test]
    fn genesis_parses() {
        let g = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Bitcoin);
        let coin = lookup("Bitcoin", Net::Mainnet).unwrap();
        let p = parse_block(&serialize(&g), 0, coin).unwrap();
        assert_eq!(hex::encode(p.hash.iter().rev().copied().collect::<Vec<_>>()), coin.genesis_hash);
    }

    #[test]
    fn rejects_corruption_without_panicking() {
        let raw = serialize(&sample_block());
        for cut in [0, 10, 80, 81, 200, raw.len() - 1] {
            assert!(parse_block(&raw[..cut], 1, regtest()).is_err(), "cut at {cut}");
        }
        let mut extra = raw.clone();
        extra.push(0);
        assert_eq!(parse_block(&extra, 1, regtest()).unwrap_err(), ParseError::Trailing(1));
        let mut flipped = raw.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 1;
        assert!(parse_block(&flipped, 1, regtest()).is_err());
        // A huge count must not allocate.
        let mut bogus = raw[..80].to_vec();
        bogus.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(parse_block(&bogus, 1, regtest()), Err(ParseError::BadCount(..))));
        // Random garbage never panics.
        let mut seed = 12345u64;
        for _ in 0..2000 {
            let mut data = raw.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % data.len();
                data[i] = (seed >> 17) as u8;
            }
            let _ = parse_block(&data, 1, regtest());
        }
    }

    #[test]
    fn merkle_root_of_one_and_odd() {
        let a = [1u8; 32];
        assert_eq!(merkle_root(vec![a]), a);
        let three = merkle_root(vec![a, [2; 32], [3; 32]]);
        let four = merkle_root(vec![a, [2; 32], [3; 32], [3; 32]]);
        assert_eq!(three, four);
    }
}
