// Throwaway: re-encode tables of a kept database into SST files and print their sizes.
use rocksdb::{BlockBasedOptions, Options, SliceTransform, SstFileWriter, DB};

fn opts(prefix: Option<usize>, ribbon: bool, zstd: bool) -> Options {
    let mut o = Options::default();
    o.set_compression_type(if zstd { rocksdb::DBCompressionType::Zstd } else { rocksdb::DBCompressionType::Lz4 });
    o.set_bottommost_compression_type(if zstd {
        rocksdb::DBCompressionType::Zstd
    } else {
        rocksdb::DBCompressionType::Lz4
    });
    let mut t = BlockBasedOptions::default();
    t.set_block_size(16 << 10);
    if let Some(p) = prefix {
        o.set_prefix_extractor(SliceTransform::create_fixed_prefix(p));
        if ribbon {
            t.set_ribbon_filter(10.0)
        } else {
            t.set_bloom_filter(10.0, false)
        }
        t.set_whole_key_filtering(false);
    }
    o.set_block_based_table_factory(&t);
    o
}

fn write(name: &str, o: &Options, rows: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
    let path = format!("/tmp/reenc-{name}.sst");
    let mut w = SstFileWriter::create(o);
    w.open(&path).unwrap();
    for (k, v) in rows {
        w.put(k, v).unwrap();
    }
    w.finish().unwrap();
    println!("{name}: {:.2} MB", std::fs::metadata(&path).unwrap().len() as f64 / 1e6);
}

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfs = DB::list_cf(&Options::default(), &path).unwrap();
    let db = DB::open_cf_for_read_only(&Options::default(), &path, &cfs, false).unwrap();
    let rows = |cf: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        db.iterator_cf(db.cf_handle(cf).unwrap(), rocksdb::IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    };
    // txnum: 6-byte prefix (as now) vs 4 and 5.
    let txnum = rows("txnum");
    for p in [6usize, 5, 4] {
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = txnum.iter().map(|(k, _)| ([&k[..p], &k[6..]].concat(), vec![])).collect();
        v.sort();
        write(&format!("txnum-prefix{p}"), &opts(Some(p), false, true), &mut v.into_iter());
    }
    // history: bloom vs ribbon.
    let history = rows("history");
    write("history-bloom", &opts(Some(11), false, true), &mut history.clone().into_iter());
    write("history-ribbon", &opts(Some(11), true, true), &mut history.clone().into_iter());
    // history value as deltas from the key's tx number, varint.
    let varint = |mut n: u64, out: &mut Vec<u8>| {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    };
    let txn = |b: &[u8]| -> u64 {
        let mut f = [0u8; 8];
        f[3..].copy_from_slice(&b[..5]);
        u64::from_be_bytes(f)
    };
    let mut hv: Vec<(Vec<u8>, Vec<u8>)> = history
        .iter()
        .map(|(k, v)| {
            let mut prev = txn(&k[11..]);
            let mut out = Vec::new();
            for c in v.chunks(5) {
                let n = txn(c);
                varint(n - prev, &mut out);
                prev = n;
            }
            (k.clone(), out)
        })
        .collect();
    write("history-delta", &opts(Some(11), false, true), &mut hv.drain(..));
    // spend: spender as delta from funder.
    let spend = rows("spend");
    write("spend-now", &opts(None, false, true), &mut spend.clone().into_iter());
    let mut sv: Vec<(Vec<u8>, Vec<u8>)> = spend
        .iter()
        .map(|(k, v)| {
            let mut o = Vec::new();
            varint(txn(v) - txn(k), &mut o);
            (k.clone(), o)
        })
        .collect();
    write("spend-delta", &opts(None, false, true), &mut sv.drain(..));
    // vout as 2 bytes in utxo / spend / hashx_utxo keys.
    let mut s2: Vec<(Vec<u8>, Vec<u8>)> =
        spend.iter().map(|(k, v)| ([&k[..5], &k[7..9]].concat(), v.clone())).collect();
    write("spend-vout2", &opts(None, false, true), &mut s2.drain(..));
    let utxo = rows("utxo");
    write("utxo-now", &opts(None, false, true), &mut utxo.clone().into_iter());
    let mut u2: Vec<(Vec<u8>, Vec<u8>)> = utxo.iter().map(|(k, v)| ([&k[..5], &k[7..9]].concat(), v.clone())).collect();
    write("utxo-vout2", &opts(None, false, true), &mut u2.drain(..));
    let hu = rows("hashx_utxo");
    write("hashx_utxo-now", &opts(Some(11), false, true), &mut hu.clone().into_iter());
    write("hashx_utxo-ribbon", &opts(Some(11), true, true), &mut hu.clone().into_iter());
    let mut h2: Vec<(Vec<u8>, Vec<u8>)> =
        hu.iter().map(|(k, v)| ([&k[..16], &k[18..20]].concat(), v.clone())).collect();
    write("hashx_utxo-vout2", &opts(Some(11), false, true), &mut h2.drain(..));
}
