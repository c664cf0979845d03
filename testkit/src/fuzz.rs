//! Hostile traffic for the fuzz tests: a corpus of real requests (tests/fuzz/corpus.txt, every
//! 1.4–1.6 method and some known-nasty lines) made concrete for a served chain, and mutations
//! that turn them into what a careless or malicious client sends: flipped, inserted and deleted
//! bytes, spliced requests, numbers beyond 64 bits, long strings, deep nesting, batches,
//! truncation, bytes that are not UTF-8. The property test drives the mutations with proptest
//! (so a failure shrinks to a small case); the black-box test draws them at random.

use std::path::PathBuf;

use bitcoin::consensus::encode::serialize_hex;
use rand::Rng;

use crate::chain::ChainBuilder;
use crate::client::scripthash;

/// The longest message made: a little over ferrum's default MAX_RECV, so that limit is hit too.
pub const MAX_MESSAGE: usize = 1_100_000;

/// One change to a message. Positions are taken modulo the message's length when applied, so
/// any value is valid (and proptest can shrink them freely).
#[derive(Clone, Debug)]
pub enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    /// Another seed's bytes replace the tail from here.
    Splice(usize, usize),
    /// A number far outside 64 bits (or negative, or fractional) at a digit.
    HugeNumber(usize, u8),
    /// A long run of one character.
    LongString(usize, usize),
    /// The message nested in `n` arrays.
    Nest(usize),
    /// The message repeated in a batch.
    Batch(usize),
    Truncate(usize),
    /// Bytes that are not UTF-8.
    NotUtf8(usize),
}

/// The corpus, its placeholders filled from the chain: {SH} a script hash with a history,
/// {SH0} one without, {TXID} a confirmed transaction at height {H}, {RAW} its bytes, {TIP}.
pub struct Corpus {
    pub seeds: Vec<Vec<u8>>,
}

impl Corpus {
    pub fn path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus.txt")
    }

    pub fn for_chain(chain: &ChainBuilder) -> Corpus {
        let text = std::fs::read_to_string(Self::path()).expect("tests/fuzz/corpus.txt");
        let h = chain.height().min(2);
        let block = &chain.blocks()[h as usize];
        let tx = block.txdata.last().expect("a transaction");
        let fill = [
            ("{SH}", scripthash(chain.hot_scripts()[0].as_bytes())),
            ("{SH0}", "ab".repeat(32)),
            ("{TXID}", tx.compute_txid().to_string()),
            ("{RAW}", serialize_hex(tx)),
            ("{H}", h.to_string()),
            ("{TIP}", chain.height().to_string()),
        ];
        let seeds = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| fill.iter().fold(l.to_string(), |l, (k, v)| l.replace(k, v)).into_bytes())
            .collect();
        Corpus { seeds }
    }

    /// A seed with its mutations applied, as one line (newlines inside become spaces).
    pub fn mutated(&self, seed: usize, mutations: &[Mutation]) -> Vec<u8> {
        let mut m = self.seeds[seed % self.seeds.len()].clone();
        for op in mutations {
            apply(&mut m, op, &self.seeds);
            // Batches of batches grow without end; past MAX_RECV every message is alike.
            m.truncate(MAX_MESSAGE);
        }
        for b in m.iter_mut() {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        m
    }

    /// A seed and up to `max` mutations, at random.
    pub fn random(&self, rng: &mut impl Rng, max: usize) -> Vec<u8> {
        let n = rng.gen_range(0..=max);
        let ops: Vec<Mutation> = (0..n).map(|_| random_mutation(rng)).collect();
        self.mutated(rng.gen(), &ops)
    }
}

pub fn random_mutation(rng: &mut impl Rng) -> Mutation {
    let at: usize = rng.gen();
    match rng.gen_range(0..11) {
        0 => Mutation::Flip(at, rng.gen()),
        1 => Mutation::Insert(at, rng.gen()),
        2 => Mutation::Delete(at, rng.gen_range(1..16)),
        3 => Mutation::Duplicate(at, rng.gen_range(1..64)),
        4 => Mutation::Splice(at, rng.gen()),
        5 => Mutation::HugeNumber(at, rng.gen()),
        // Mostly small, now and then big (a big one often ends the connection: MAX_RECV).
        6 => Mutation::LongString(at, if rng.gen_bool(0.1) { rng.gen_range(1..20_000) } else { rng.gen_range(1..500) }),
        7 => Mutation::Nest(if rng.gen_bool(0.1) { rng.gen_range(1..3000) } else { rng.gen_range(1..50) }),
        8 => Mutation::Batch(if rng.gen_bool(0.1) { rng.gen_range(1..600) } else { rng.gen_range(1..20) }),
        9 => Mutation::Truncate(at),
        _ => Mutation::NotUtf8(at),
    }
}

fn apply(m: &mut Vec<u8>, op: &Mutation, seeds: &[Vec<u8>]) {
    let len = m.len().max(1);
    match *op {
        Mutation::Flip(at, mask) => {
            if !m.is_empty() {
                m[at % len] ^= mask | 1;
            }
        }
        Mutation::Insert(at, b) => m.insert(at % (m.len() + 1), b),
        Mutation::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(m.len());
            m.drain(at.min(m.len())..end);
        }
        Mutation::Duplicate(at, n) => {
            let at = at % len;
            let end = (at + n).min(m.len());
            let part: Vec<u8> = m[at.min(m.len())..end].to_vec();
            m.splice(end..end, part);
        }
        Mutation::Splice(at, other) => {
            let at = at % (m.len() + 1);
            let other = &seeds[other % seeds.len()];
            m.truncate(at);
            m.extend_from_slice(&other[at.min(other.len())..]);
        }
        Mutation::HugeNumber(at, kind) => {
            if let Some(i) = (0..m.len()).map(|k| (at + k) % len).find(|&i| m[i].is_ascii_digit()) {
                let n: &[u8] = match kind % 5 {
                    0 => b"18446744073709551617",
                    1 => b"-9223372036854775809",
                    2 => b"1000000000000000000000000000000",
                    3 => b"1e999",
                    _ => b"0.000000000000000000001",
                };
                m.splice(i..i + 1, n.iter().copied());
            }
        }
        Mutation::LongString(at, n) => {
            let at = at % (m.len() + 1);
            m.splice(at..at, std::iter::repeat_n(b'a', n));
        }
        Mutation::Nest(n) => {
            let mut nested = vec![b'['; n];
            nested.append(m);
            nested.extend(std::iter::repeat_n(b']', n));
            *m = nested;
        }
        Mutation::Batch(n) => {
            let one = std::mem::take(m);
            m.push(b'[');
            for i in 0..n {
                if i > 0 {
                    m.push(b',');
                }
                m.extend_from_slice(&one);
            }
            m.push(b']');
        }
        Mutation::Truncate(at) => m.truncate(at % len),
        Mutation::NotUtf8(at) => {
            let at = at % (m.len() + 1);
            m.splice(at..at, [0xff, 0xc3, 0x28]);
        }
    }
}

/// What a well-formed answer line looks like: a JSON-RPC 2.0 response (result xor error, an
/// integer code and a message) or a batch of them. Returns why not.
pub fn check_answer(line: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:.300}"))?;
    let one = |r: &serde_json::Value| -> Result<(), String> {
        if r["jsonrpc"] != "2.0" {
            return Err(format!("no jsonrpc 2.0: {r:.300}"));
        }
        if r.get("method").is_some() {
            return Ok(()); // a notification
        }
        if r.get("id").is_none() {
            return Err(format!("a response without an id: {r:.300}"));
        }
        match (r.get("result"), r.get("error")) {
            (Some(_), None) => Ok(()),
            (None, Some(e)) if e["code"].is_i64() && e["message"].is_string() => Ok(()),
            _ => Err(format!("neither a result nor a proper error: {r:.300}")),
        }
    };
    match &v {
        serde_json::Value::Array(items) if !items.is_empty() => items.iter().try_for_each(one),
        serde_json::Value::Object(_) => one(&v),
        _ => Err(format!("neither a response nor a batch of them: {line:.300}")),
    }
}
