//! The on-disk format: every row's key and value as explicit fixed-width bytes, big-endian
//! where the order matters (so RocksDB's byte order is chain order). docs/ARCHITECTURE.md draws
//! these layouts; bump `DB_VERSION` on any change. The types they hold are in `crate::types`.

use crate::types::{HashX, TxNum, Txid, HASHX_LEN};

/// Format version stored under `meta/version`; a DB of another version is refused.
pub const DB_VERSION: u32 = 5;
/// The format before the spender index (`spend`); opened and upgraded in place (`store::upgrade`).
pub const DB_VERSION_BEFORE_SPEND: u32 = 2;
/// The format whose history rows held 5-byte tx numbers; upgraded in place (`store::upgrade`).
pub const DB_VERSION_FIXED_HISTORY: u32 = 3;
/// The format whose `utxo` rows held the whole hashX; upgraded in place (`store::upgrade`).
pub const DB_VERSION_WHOLE_HASHX_UTXO: u32 = 4;

/// Column families.
pub const CF_META: &str = "meta";
pub const CF_HEADER: &str = "header";
pub const CF_TXNUM: &str = "txnum";
pub const CF_UTXO: &str = "utxo";
pub const CF_HASHX_UTXO: &str = "hashx_utxo";
pub const CF_HISTORY: &str = "history";
pub const CF_UNDO: &str = "undo";
pub const CF_SPEND: &str = "spend";
pub const ALL_CFS: &[&str] = &[CF_META, CF_HEADER, CF_TXNUM, CF_UTXO, CF_HASHX_UTXO, CF_HISTORY, CF_UNDO, CF_SPEND];

pub const META_VERSION: &[u8] = b"version";
pub const META_COIN: &[u8] = b"coin";
pub const META_STATE: &[u8] = b"state";
/// While a flush's table files are being ingested: the chain state they lead to (`bulk`).
pub const META_INGEST: &[u8] = b"ingest";
/// Set by a flush written as table files (an initial sync), removed by the compaction after
/// it: the tables' bottom levels hold files in the initial sync's options (`Db::compact`).
/// Unknown to older versions, which leave it alone.
pub const META_SETTLE: &[u8] = b"settle";
/// While the history rows of a format-3 database are rewritten: the key of the last row done.
pub const META_HISTORY_UPGRADE: &[u8] = b"history_upgrade";
/// While the unspent-output rows of a format-4 database are rewritten: the last old key done.
pub const META_UTXO_UPGRADE: &[u8] = b"utxo_upgrade";
/// While the spender index of an upgraded database is being built: `SpendBackfill`.
pub const META_SPEND_BACKFILL: &[u8] = b"spend_backfill";

/// Transaction numbers take 5 bytes on disk: 2^40 transactions.
pub const TXNUM_LEN: usize = 5;
pub const MAX_TX_NUM: u64 = (1 << 40) - 1;
/// Bytes of the txid kept in the txid → tx number index; candidates are confirmed by reading
/// the full txid.
pub const TXID_PREFIX_LEN: usize = 6;

pub fn encode_txnum(n: TxNum) -> [u8; TXNUM_LEN] {
    debug_assert!(n <= MAX_TX_NUM);
    let b = n.to_be_bytes();
    b[3..8].try_into().expect("5 bytes")
}

pub fn decode_txnum(b: &[u8]) -> TxNum {
    let mut full = [0u8; 8];
    full[3..8].copy_from_slice(&b[..TXNUM_LEN]);
    u64::from_be_bytes(full)
}

/// `header`: height → 80-byte header ‖ cumulative transaction count after this block (5 bytes).
pub fn header_key(height: u32) -> [u8; 4] {
    height.to_be_bytes()
}

pub fn header_value(header: &[u8; 80], tx_count: u64) -> [u8; 85] {
    let mut v = [0u8; 85];
    v[..80].copy_from_slice(header);
    v[80..].copy_from_slice(&encode_txnum(tx_count));
    v
}

pub fn decode_header_value(v: &[u8]) -> Option<([u8; 80], u64)> {
    if v.len() != 85 {
        return None;
    }
    Some((v[..80].try_into().expect("80"), decode_txnum(&v[80..])))
}

/// `txnum`: txid prefix ‖ tx number → (empty). Several txids may share a prefix.
pub fn txnum_key(txid: &Txid, tx_num: TxNum) -> [u8; TXID_PREFIX_LEN + TXNUM_LEN] {
    let mut k = [0u8; TXID_PREFIX_LEN + TXNUM_LEN];
    k[..TXID_PREFIX_LEN].copy_from_slice(&txid.0[..TXID_PREFIX_LEN]);
    k[TXID_PREFIX_LEN..].copy_from_slice(&encode_txnum(tx_num));
    k
}

/// `utxo`: tx number ‖ output index → the first `UTXO_HASHX_PREFIX` bytes of its hashX: how a
/// spend finds the output's row in `hashx_utxo`, which holds the rest of the script hash.
pub fn utxo_key(tx_num: TxNum, vout: u32) -> [u8; TXNUM_LEN + 4] {
    let mut k = [0u8; TXNUM_LEN + 4];
    k[..TXNUM_LEN].copy_from_slice(&encode_txnum(tx_num));
    k[TXNUM_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

/// Bytes of a script hash that key `hashx_utxo` and that `utxo` keeps. Format 4 kept the whole
/// hashX in both tables; with four bytes `utxo` went from 17.3 to 9.0 MB on the 1M-tx Core chain
/// (`hashx_utxo` stayed at ~25 MB; docs/PERFORMANCE.md). With ~200M unspent outputs on mainnet, 4% of the 2^32 prefixes are taken,
/// so a script hash's scan meets another's rows rarely, and the prefix filter still tells most
/// unused script hashes apart without a read.
pub const UTXO_HASHX_PREFIX: usize = 4;
/// The rest of the hashX, at the start of a `hashx_utxo` value.
const HASHX_REST: usize = HASHX_LEN - UTXO_HASHX_PREFIX;
pub const HASHX_UTXO_KEY_LEN: usize = UTXO_HASHX_PREFIX + TXNUM_LEN + 4;
pub const HASHX_UTXO_VALUE_LEN: usize = HASHX_REST + 8;

pub fn hashx_prefix(hashx: &HashX) -> [u8; UTXO_HASHX_PREFIX] {
    hashx[..UTXO_HASHX_PREFIX].try_into().expect("prefix")
}

/// `hashx_utxo`: hashX prefix ‖ tx number ‖ output index → the rest of the hashX ‖ value (8
/// bytes). A prefix scan lists an address's unspent outputs in chain order, skipping rows whose
/// rest differs (another script hash with the same prefix); a spend reads its row by key from
/// the prefix `utxo` holds.
pub fn hashx_utxo_key(prefix: &[u8; UTXO_HASHX_PREFIX], tx_num: TxNum, vout: u32) -> [u8; HASHX_UTXO_KEY_LEN] {
    let mut k = [0u8; HASHX_UTXO_KEY_LEN];
    k[..UTXO_HASHX_PREFIX].copy_from_slice(prefix);
    k[UTXO_HASHX_PREFIX..UTXO_HASHX_PREFIX + TXNUM_LEN].copy_from_slice(&encode_txnum(tx_num));
    k[UTXO_HASHX_PREFIX + TXNUM_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

pub fn hashx_utxo_value(hashx: &HashX, value: u64) -> [u8; HASHX_UTXO_VALUE_LEN] {
    let mut v = [0u8; HASHX_UTXO_VALUE_LEN];
    v[..HASHX_REST].copy_from_slice(&hashx[UTXO_HASHX_PREFIX..]);
    v[HASHX_REST..].copy_from_slice(&value.to_be_bytes());
    v
}

/// An unspent output from its `hashx_utxo` row: (hashX, tx number, output index, value).
pub fn decode_hashx_utxo(k: &[u8], v: &[u8]) -> Option<(HashX, TxNum, u32, u64)> {
    if k.len() != HASHX_UTXO_KEY_LEN || v.len() != HASHX_UTXO_VALUE_LEN {
        return None;
    }
    let mut hashx = [0u8; HASHX_LEN];
    hashx[..UTXO_HASHX_PREFIX].copy_from_slice(&k[..UTXO_HASHX_PREFIX]);
    hashx[UTXO_HASHX_PREFIX..].copy_from_slice(&v[..HASHX_REST]);
    let tx_num = decode_txnum(&k[UTXO_HASHX_PREFIX..]);
    let vout = u32::from_be_bytes(k[UTXO_HASHX_PREFIX + TXNUM_LEN..].try_into().expect("4"));
    let value = u64::from_be_bytes(v[HASHX_REST..].try_into().expect("8"));
    Some((hashx, tx_num, vout, value))
}

/// Format 4's `hashx_utxo` row: hashX ‖ tx number ‖ output index → value (for the upgrade).
pub fn decode_hashx_utxo_v4(k: &[u8], v: &[u8]) -> Option<(HashX, TxNum, u32, u64)> {
    if k.len() != HASHX_LEN + TXNUM_LEN + 4 || v.len() != 8 {
        return None;
    }
    let hashx = k[..HASHX_LEN].try_into().expect("hashX");
    let tx_num = decode_txnum(&k[HASHX_LEN..]);
    let vout = u32::from_be_bytes(k[HASHX_LEN + TXNUM_LEN..].try_into().expect("4"));
    Some((hashx, tx_num, vout, u64::from_be_bytes(v.try_into().expect("8"))))
}

/// Format 4's `hashx_utxo` key, for tests that make a database of that format.
pub fn hashx_utxo_key_v4(hashx: &HashX, tx_num: TxNum, vout: u32) -> [u8; HASHX_LEN + TXNUM_LEN + 4] {
    let mut k = [0u8; HASHX_LEN + TXNUM_LEN + 4];
    k[..HASHX_LEN].copy_from_slice(hashx);
    k[HASHX_LEN..HASHX_LEN + TXNUM_LEN].copy_from_slice(&encode_txnum(tx_num));
    k[HASHX_LEN + TXNUM_LEN..].copy_from_slice(&vout.to_be_bytes());
    k
}

/// `history`: hashX ‖ first tx number → the later tx numbers of the row, ascending, each as
/// its distance from the one before (LEB128: 7 bits a byte, low bits first; a distance of 0 is
/// corrupt). A flush writes one row per script hash it touched, so a script hash with 200,000
/// transactions is a handful of rows, and one with a single transaction is a key with an empty
/// value. Rows of one script hash cover disjoint, ascending ranges; rows are only rewritten when
/// an unwind cuts them. Distances (and Ribbon filters) took the 1M-tx Core chain's history from
/// 61.2 to 56.3 MB: tx numbers are random within the chain, so their 5 bytes compress poorly,
/// while the distance to the script's previous transaction is usually 2-3 bytes. Format 3 kept 5 bytes each
/// (`decode_history_row_v3`, for the upgrade).
pub fn history_key(hashx: &HashX, tx_num: TxNum) -> [u8; HASHX_LEN + TXNUM_LEN] {
    let mut k = [0u8; HASHX_LEN + TXNUM_LEN];
    k[..HASHX_LEN].copy_from_slice(hashx);
    k[HASHX_LEN..].copy_from_slice(&encode_txnum(tx_num));
    k
}

/// The value of a history row whose key holds `first`, holding `rest` (ascending, after it).
pub fn history_value(first: TxNum, rest: impl Iterator<Item = TxNum>) -> Vec<u8> {
    let mut v = Vec::with_capacity(rest.size_hint().0 * 3);
    let mut prev = first;
    for n in rest {
        debug_assert!(n > prev, "history tx numbers ascend");
        let mut d = n - prev;
        while d >= 0x80 {
            v.push(d as u8 | 0x80);
            d >>= 7;
        }
        v.push(d as u8);
        prev = n;
    }
    v
}

/// Appends the tx numbers of a history row to `out`; `None` if the row is malformed.
pub fn decode_history_row(key: &[u8], value: &[u8], out: &mut Vec<TxNum>) -> Option<()> {
    if key.len() != HASHX_LEN + TXNUM_LEN {
        return None;
    }
    let mut prev = decode_txnum(&key[HASHX_LEN..]);
    out.push(prev);
    let (mut d, mut shift) = (0u64, 0u32);
    for &b in value {
        // A distance needs at most 6 bytes (40 bits); more is garbage, not a bigger number.
        if shift > 35 {
            return None;
        }
        d |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            prev = prev.checked_add(d).filter(|n| d > 0 && *n <= MAX_TX_NUM)?;
            out.push(prev);
            (d, shift) = (0, 0);
        }
    }
    (shift == 0).then_some(())
}

/// Format 3's history row: the later tx numbers 5 bytes each, ascending (checked: the upgrade
/// rewrites them as distances). Read only by the upgrade.
pub fn decode_history_row_v3(key: &[u8], value: &[u8], out: &mut Vec<TxNum>) -> Option<()> {
    if key.len() != HASHX_LEN + TXNUM_LEN || value.len() % TXNUM_LEN != 0 {
        return None;
    }
    let mut prev = decode_txnum(&key[HASHX_LEN..]);
    out.push(prev);
    for n in value.chunks_exact(TXNUM_LEN).map(decode_txnum) {
        if n <= prev {
            return None;
        }
        out.push(n);
        prev = n;
    }
    Some(())
}

/// `spend`: funding tx number ‖ output index → the spending tx number (5 bytes). Written for
/// every spend in the flush that writes the spender, deleted by the unwind that restores the
/// output. This is what `blockchain.outpoint.*` answers from, on any node.
pub fn spend_key(tx_num: TxNum, vout: u32) -> [u8; TXNUM_LEN + 4] {
    utxo_key(tx_num, vout)
}

/// A `spend` row as one array, key then value: rows sort by key, so a flush sorts these whole.
pub const SPEND_ROW_LEN: usize = TXNUM_LEN + 4 + TXNUM_LEN;
pub type SpendRow = [u8; SPEND_ROW_LEN];

pub fn spend_row(tx_num: TxNum, vout: u32, spender: TxNum) -> SpendRow {
    let mut r = [0u8; SPEND_ROW_LEN];
    r[..TXNUM_LEN + 4].copy_from_slice(&spend_key(tx_num, vout));
    r[TXNUM_LEN + 4..].copy_from_slice(&encode_txnum(spender));
    r
}

/// The heights whose spends are still missing from the `spend` table of a database upgraded
/// from format 2: blocks `next..end`. Blocks from `end` on were written with their spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendBackfill {
    pub next: u32,
    pub end: u32,
}

impl SpendBackfill {
    pub fn encode(&self) -> [u8; 8] {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&self.next.to_be_bytes());
        v[4..].copy_from_slice(&self.end.to_be_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<SpendBackfill> {
        (v.len() == 8).then(|| SpendBackfill {
            next: u32::from_be_bytes(v[..4].try_into().expect("4")),
            end: u32::from_be_bytes(v[4..].try_into().expect("4")),
        })
    }

    pub fn done(&self) -> bool {
        self.next >= self.end
    }
}

pub fn undo_key(height: u32) -> [u8; 4] {
    height.to_be_bytes()
}

/// What the index describes, written in the same atomic batch as the rows it describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainState {
    pub height: u32,
    pub tip: [u8; 32],
    /// Transactions indexed, i.e. the next tx number.
    pub tx_count: u64,
}

impl ChainState {
    pub fn encode(&self) -> [u8; 44] {
        let mut v = [0u8; 44];
        v[..4].copy_from_slice(&self.height.to_be_bytes());
        v[4..36].copy_from_slice(&self.tip);
        v[36..].copy_from_slice(&self.tx_count.to_be_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<ChainState> {
        if v.len() != 44 {
            return None;
        }
        Some(ChainState {
            height: u32::from_be_bytes(v[..4].try_into().ok()?),
            tip: v[4..36].try_into().ok()?,
            tx_count: u64::from_be_bytes(v[36..].try_into().ok()?),
        })
    }
}

/// An output spent by a block, with everything needed to restore it on unwind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpentUndo {
    pub hashx: HashX,
    pub tx_num: TxNum,
    pub vout: u32,
    pub value: u64,
}

/// An unspent output's place and script hash (a `utxo` row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRow {
    pub tx_num: TxNum,
    pub vout: u32,
    pub hashx: HashX,
}

/// `undo`: height → the outputs the block spent: n (4 bytes) ‖ n × (hashX, tx_num, vout,
/// value). Kept for REORG_LIMIT blocks. The outputs the block created are not listed: when it
/// is unwound it is the tip, so those still unspent are the `utxo` rows from its first tx
/// number on, and those it spent itself are among its spent outputs.
///
/// Format 3's records also held each spend's spender (5 bytes), then a count and the created
/// outputs: never the length of today's record with the same count, so both read back without
/// an upgrade (the extra fields were never needed to unwind).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UndoRecord {
    pub spent: Vec<SpentUndo>,
}

const SPENT_LEN: usize = HASHX_LEN + TXNUM_LEN + 4 + 8;
const SPENT_LEN_V3: usize = SPENT_LEN + TXNUM_LEN;
const CREATED_LEN_V3: usize = HASHX_LEN + TXNUM_LEN + 4;

impl UndoRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.spent.len() * SPENT_LEN);
        v.extend_from_slice(&(self.spent.len() as u32).to_be_bytes());
        for s in &self.spent {
            v.extend_from_slice(&s.hashx);
            v.extend_from_slice(&encode_txnum(s.tx_num));
            v.extend_from_slice(&s.vout.to_be_bytes());
            v.extend_from_slice(&s.value.to_be_bytes());
        }
        v
    }

    pub fn decode(v: &[u8]) -> Option<UndoRecord> {
        let n = u32::from_be_bytes(v.get(..4)?.try_into().ok()?) as usize;
        let body = &v[4..];
        let entry = if body.len() == n.checked_mul(SPENT_LEN)? {
            SPENT_LEN
        } else {
            // Format 3: n spends with their spender, then a count and the created outputs.
            let spent_end = n.checked_mul(SPENT_LEN_V3)?;
            let m = u32::from_be_bytes(body.get(spent_end..spent_end + 4)?.try_into().ok()?) as usize;
            if body.len() != spent_end + 4 + m.checked_mul(CREATED_LEN_V3)? {
                return None;
            }
            SPENT_LEN_V3
        };
        let spent = body
            .chunks_exact(entry)
            .take(n)
            .map(|e| SpentUndo {
                hashx: e[..11].try_into().expect("11"),
                tx_num: decode_txnum(&e[11..16]),
                vout: u32::from_be_bytes(e[16..20].try_into().expect("4")),
                value: u64::from_be_bytes(e[20..28].try_into().expect("8")),
            })
            .collect();
        Some(UndoRecord { spent })
    }
}

/// A format 3 undo record: each spend with its spender, then the created outputs. Tests only:
/// no ferrum writes these any more, but databases hold them.
#[cfg(test)]
pub fn undo_record_v3(spent: &[(SpentUndo, TxNum)], created: &[OutputRow]) -> Vec<u8> {
    let mut v = (spent.len() as u32).to_be_bytes().to_vec();
    for (s, spender) in spent {
        v.extend_from_slice(&UndoRecord { spent: vec![*s] }.encode()[4..]);
        v.extend_from_slice(&encode_txnum(*spender));
    }
    v.extend_from_slice(&(created.len() as u32).to_be_bytes());
    for c in created {
        v.extend_from_slice(&c.hashx);
        v.extend_from_slice(&encode_txnum(c.tx_num));
        v.extend_from_slice(&c.vout.to_be_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txnum_roundtrip_and_order() {
        for n in [0, 1, 255, 256, 1 << 32, MAX_TX_NUM] {
            assert_eq!(decode_txnum(&encode_txnum(n)), n);
        }
        assert!(encode_txnum(255) < encode_txnum(256));
        assert!(encode_txnum(1 << 32) > encode_txnum((1 << 32) - 1));
    }

    #[test]
    fn keys_sort_in_chain_order() {
        let h = [7u8; 11];
        assert!(history_key(&h, 5) < history_key(&h, 6));
        assert!(history_key(&h, 0xff) < history_key(&h, 0x100));
        let p = hashx_prefix(&h);
        assert!(hashx_utxo_key(&p, 5, 9) < hashx_utxo_key(&p, 6, 0));
        assert!(hashx_utxo_key(&p, 5, 9) < hashx_utxo_key(&p, 5, 10));
        assert!(header_key(255) < header_key(256));
        assert_eq!(utxo_key(1, 2), [0, 0, 0, 0, 1, 0, 0, 0, 2]);
    }

    #[test]
    fn fixed_layouts() {
        let txid = Txid([0xab; 32]);
        let k = txnum_key(&txid, 0x0102030405);
        assert_eq!(k, [0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 1, 2, 3, 4, 5]);
        let hv = header_value(&[3u8; 80], 42);
        assert_eq!(decode_header_value(&hv), Some(([3u8; 80], 42)));
        assert_eq!(decode_header_value(&hv[..84]), None);
    }

    #[test]
    fn an_unspent_output_row_splits_its_script_hash_between_key_and_value() {
        let h: HashX = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let (k, v) = (hashx_utxo_key(&hashx_prefix(&h), 0x0102030405, 7), hashx_utxo_value(&h, 0x1122));
        assert_eq!(k, [1, 2, 3, 4, 1, 2, 3, 4, 5, 0, 0, 0, 7]);
        assert_eq!(v, [5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0x11, 0x22]);
        assert_eq!(decode_hashx_utxo(&k, &v), Some((h, 0x0102030405, 7, 0x1122)));
        assert_eq!(decode_hashx_utxo(&k[..12], &v), None);
        assert_eq!(decode_hashx_utxo(&k, &v[..14]), None);
        let old = hashx_utxo_key_v4(&h, 9, 1);
        assert_eq!(decode_hashx_utxo_v4(&old, &5u64.to_be_bytes()), Some((h, 9, 1, 5)));
        assert_eq!(decode_hashx_utxo_v4(&k, &v), None);
    }

    #[test]
    fn history_rows_hold_distances_and_reject_garbage() {
        let h = [7u8; 11];
        let key = history_key(&h, 1000);
        let nums = [1001, 1128, 1129 + (1 << 20), MAX_TX_NUM];
        let v = history_value(1000, nums.iter().copied());
        // 1, 127, 2^20 + 1 and the rest: 1 + 1 + 3 + 6 bytes.
        assert_eq!(v.len(), 1 + 1 + 3 + 6);
        let mut out = Vec::new();
        assert_eq!(decode_history_row(&key, &v, &mut out), Some(()));
        assert_eq!(out, [&[1000][..], &nums].concat());
        assert!(history_value(1000, std::iter::empty()).is_empty());
        for bad in [&v[..v.len() - 1], &[0][..], &[0x80; 7][..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..]] {
            assert_eq!(decode_history_row(&key, bad, &mut Vec::new()), None, "{bad:?}");
        }
        // Past the largest tx number.
        let last = history_key(&h, MAX_TX_NUM);
        assert_eq!(decode_history_row(&last, &[1], &mut Vec::new()), None);
        let mut v3 = Vec::new();
        assert_eq!(decode_history_row_v3(&key, &[0, 0, 0, 3, 0xe9], &mut v3), Some(()));
        assert_eq!(v3, [1000, 1001]);
        // Not ascending: corrupt, not a wrapped distance.
        assert_eq!(decode_history_row_v3(&key, &[0, 0, 0, 3, 0xe8], &mut Vec::new()), None);
    }

    #[test]
    fn state_roundtrip() {
        let s = ChainState { height: 812345, tip: [9; 32], tx_count: 987654321012 };
        assert_eq!(ChainState::decode(&s.encode()), Some(s));
        assert_eq!(ChainState::decode(&[0; 43]), None);
    }

    #[test]
    fn undo_roundtrip_and_rejects_garbage() {
        let a = SpentUndo { hashx: [1; 11], tx_num: 77, vout: 3, value: 5_000_000_000 };
        let b = SpentUndo { hashx: [4; 11], tx_num: 78, vout: 0, value: 1 };
        let u = UndoRecord { spent: vec![a, b] };
        let enc = u.encode();
        assert_eq!(enc.len(), 4 + 2 * 28);
        assert_eq!(UndoRecord::decode(&enc), Some(u.clone()));
        assert_eq!(UndoRecord::decode(&enc[..enc.len() - 1]), None);
        assert_eq!(UndoRecord::decode(&[enc.as_slice(), &[0, 0]].concat()), None);
        assert_eq!(UndoRecord::decode(&[0xff; 8]), None);
        assert_eq!(UndoRecord::decode(&[0, 0]), None);
        assert_eq!(UndoRecord::decode(&UndoRecord::default().encode()), Some(UndoRecord::default()));
        // Format 3's records read back as the same spends.
        let created =
            [OutputRow { hashx: [2; 11], tx_num: 99, vout: 0 }, OutputRow { hashx: [3; 11], tx_num: 99, vout: 1 }];
        for created in [&created[..], &[]] {
            let v3 = undo_record_v3(&[(a, 99), (b, 99)], created);
            assert_eq!(v3.len(), 4 + 2 * 33 + 4 + created.len() * 20);
            assert_eq!(UndoRecord::decode(&v3), Some(u.clone()));
            assert_eq!(UndoRecord::decode(&v3[..v3.len() - 1]), None);
        }
        assert_eq!(UndoRecord::decode(&undo_record_v3(&[], &created)), Some(UndoRecord::default()));
    }
}
