//! The core types every stage shares: transaction ids, script hashes and their index keys,
//! transaction numbers, outpoints and outputs, statuses, and their hex forms.
//!
//! Hashes are kept in internal byte order (as hashed) and shown reversed, as bitcoind shows
//! txids and Electrum shows script hashes; status hashes are shown as they are.

use std::fmt;

/// Bytes of a script hash kept as the index key (`HashX`): the first bytes of sha256(script).
/// 11 bytes make an accidental collision vanishingly unlikely at mainnet scale (ElectrumX
/// uses the same length).
pub const HASHX_LEN: usize = 11;
/// A script hash truncated to the index's key size.
pub type HashX = [u8; HASHX_LEN];

/// A confirmed transaction's number: its position in the chain, counting from the genesis
/// coinbase.
pub type TxNum = u64;

/// A transaction id in internal byte order (as hashed); displayed reversed, like bitcoind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Txid(pub [u8; 32]);

impl fmt::Display for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_rev(&self.0))
    }
}

impl fmt::Debug for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Txid({self})")
    }
}

/// An Electrum script hash: sha256 of an output script, shown reversed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScriptHash(pub [u8; 32]);

impl ScriptHash {
    pub fn of_script(script: &[u8]) -> ScriptHash {
        use sha2::{Digest, Sha256};
        ScriptHash(Sha256::digest(script).into())
    }

    /// Parses the hex a client sends (display order).
    pub fn parse(hex: &str) -> Option<ScriptHash> {
        parse_hex_rev32(hex).map(ScriptHash)
    }

    /// The index key of this script hash.
    pub fn hashx(&self) -> HashX {
        self.0[..HASHX_LEN].try_into().expect("slice of HASHX_LEN")
    }
}

impl fmt::Display for ScriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_rev(&self.0))
    }
}

impl fmt::Debug for ScriptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScriptHash({self})")
    }
}

/// The Electrum status of a script hash: sha256 over its history, shown as it is (not reversed).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusHash(pub [u8; 32]);

impl fmt::Display for StatusHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StatusHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusHash({self})")
    }
}

/// A reference to an output: the transaction that created it and its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutPoint {
    pub txid: Txid,
    pub vout: u32,
}

/// An output: its script hash key, or `None` when it is provably unspendable (not indexed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOut {
    pub hashx: Option<HashX>,
    pub value: u64,
}

/// Hex of a hash in display order (reversed bytes).
pub fn hex_rev(bytes: &[u8]) -> String {
    let rev: Vec<u8> = bytes.iter().rev().copied().collect();
    to_hex(&rev)
}

/// Appends the hex of `bytes`. `hex::encode` builds its string one char at a time, which made
/// the hex of 2,016 headers most of `blockchain.block.headers`' time; this encodes in place.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 1024];
    for chunk in bytes.chunks(buf.len() / 2) {
        let hex = &mut buf[..chunk.len() * 2];
        hex::encode_to_slice(chunk, hex).expect("twice the length");
        out.push_str(std::str::from_utf8(hex).expect("hex is ASCII"));
    }
}

/// The hex of `bytes`, encoded in place (see `push_hex`).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Hex of a 32-byte hash without allocating, in display order (reversed) or as stored. Long
/// answers, notifications and status hashes write hundreds of thousands of these.
pub fn hex32(bytes: &[u8; 32], order: HexOrder) -> [u8; 64] {
    let mut b = *bytes;
    if order == HexOrder::Display {
        b.reverse();
    }
    let mut out = [0u8; 64];
    hex::encode_to_slice(b, &mut out).expect("64 bytes for 32");
    out
}

/// Which way round a hash is written: `Display` reverses it (txids, block and script hashes),
/// `Stored` does not (status hashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexOrder {
    Display,
    Stored,
}

/// Appends `hex32` to a string.
pub fn push_hex32(out: &mut String, bytes: &[u8; 32], order: HexOrder) {
    out.push_str(std::str::from_utf8(&hex32(bytes, order)).expect("hex is ASCII"));
}

/// Parses a 32-byte hash given in display order.
pub fn parse_hex_rev32(s: &str) -> Option<[u8; 32]> {
    let mut bytes: [u8; 32] = hex::decode(s).ok()?.try_into().ok()?;
    bytes.reverse();
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_order() {
        let mut b = [0u8; 32];
        b[0] = 0x01;
        let t = Txid(b);
        assert!(t.to_string().ends_with("01"));
        assert_eq!(parse_hex_rev32(&t.to_string()), Some(b));
        assert_eq!(parse_hex_rev32("zz"), None);
        assert_eq!(&hex32(&b, HexOrder::Stored)[..2], b"01");
        assert_eq!(&hex32(&b, HexOrder::Display)[62..], b"01");
    }

    #[test]
    fn hex_in_place_is_hex() {
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(to_hex(&[]), "");
        assert_eq!(hex_rev(&[1, 2, 0xab]), "ab0201");
    }

    #[test]
    fn script_hashes() {
        // The Electrum documentation's example: the script of 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa.
        let script = hex::decode("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac").unwrap();
        let sh = ScriptHash::of_script(&script);
        assert_eq!(sh.to_string(), "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161");
        assert_eq!(ScriptHash::parse(&sh.to_string()), Some(sh));
        assert_eq!(sh.hashx(), sh.0[..11]);
    }
}

/// A hash map keyed by txids, script hashes or outpoints (the mempool mirror, the block
/// processor's write cache, the sets of touched script hashes). Their bytes are already uniform, so
/// SipHash's work buys nothing but its secret key: a stranger who could predict where a key
/// lands could fill one bucket with ground txids. `Keyed` keeps a secret per process and
/// mixes each 8 bytes with one folded multiply: a quarter of SipHash's cost, which was 30% of
/// removing a block's transactions from the mempool mirror (done while readers wait).
pub type FastMap<K, V> = std::collections::HashMap<K, V, Keyed>;
/// A set of the same keys (see `FastMap`).
pub type FastSet<T> = std::collections::HashSet<T, Keyed>;

/// The hasher builder of `FastMap`: every map of the process shares one random key.
#[derive(Clone, Copy, Default, Debug)]
pub struct Keyed;

impl std::hash::BuildHasher for Keyed {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        // std's RandomState draws its keys from the OS; one hash of it is a random u64.
        let key = *KEY
            .get_or_init(|| std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64));
        KeyedHasher(key)
    }
}

/// See `FastMap`.
pub struct KeyedHasher(u64);

impl KeyedHasher {
    fn mix(&mut self, word: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let product = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (product >> 64) as u64 ^ product as u64;
    }
}

impl std::hash::Hasher for KeyedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(b) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}
