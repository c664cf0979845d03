//! Self-tests of the test harness, with no ferrum involved: the chain builder, the scripted
//! daemon, and the real nodes with the signing the end-to-end tests rely on. When one of these
//! fails, the product tests' failures say nothing about ferrum.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::{Block, Network, OutPoint};
use ferrum_testkit::chain::{ChainBuilder, ChainOptions, ScriptKind};
use ferrum_testkit::nodes::{pay, sign_tx, BitcoinCore, BitcoinSv, ChainView, Coin, TestKey};
use ferrum_testkit::scripted_daemon::{DaemonOptions, ScriptedDaemon};
use serde_json::{json, Value};

fn small_opts() -> ChainOptions {
    ChainOptions { min_txs: 3, max_txs: 12, ..ChainOptions::default() }
}

#[test]
fn chain_builder_is_consistent_and_deterministic() {
    let opts = ChainOptions { min_txs: 50, max_txs: 50, ..ChainOptions::default() };
    let start = Instant::now();
    let mut chain = ChainBuilder::with_options(42, opts.clone());
    chain.add_blocks(300);
    let elapsed = start.elapsed();
    eprintln!("built 300 blocks x 50 txs in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "chain building too slow: {elapsed:?}");

    let mut again = ChainBuilder::with_options(42, opts);
    again.add_blocks(300);
    assert_eq!(chain.tip_hash(), again.tip_hash(), "same seed, same chain");

    let blocks = chain.blocks();
    assert_eq!(blocks[0].block_hash(), genesis_block(Network::Regtest).block_hash());
    let mut live: BTreeSet<OutPoint> = BTreeSet::new();
    let (mut in_block_spends, mut op_returns) = (0, 0);
    let mut kinds = BTreeSet::new();
    for (h, b) in blocks.iter().enumerate().skip(1) {
        assert_eq!(b.header.prev_blockhash, blocks[h - 1].block_hash(), "prev hash at {h}");
        assert!(b.header.time > blocks[h - 1].header.time, "time increases at {h}");
        assert!(b.check_merkle_root(), "merkle root at {h}");
        assert!(b.check_witness_commitment(), "witness commitment at {h}");
        let round: Block = deserialize(&serialize(b)).expect("block round-trips");
        assert_eq!(&round, b);
        let mut created_here = BTreeSet::new();
        for tx in &b.txdata {
            if !tx.is_coinbase() {
                for i in &tx.input {
                    assert!(live.remove(&i.previous_output), "block {h} spends a missing coin");
                    if created_here.contains(&i.previous_output) {
                        in_block_spends += 1;
                    }
                }
            }
            let txid = tx.compute_txid();
            for (vout, o) in tx.output.iter().enumerate() {
                if o.script_pubkey.is_op_return() {
                    op_returns += 1;
                    continue;
                }
                kinds.extend(ScriptKind::of(&o.script_pubkey));
                let op = OutPoint::new(txid, vout as u32);
                live.insert(op);
                created_here.insert(op);
            }
        }
    }
    assert!(in_block_spends > 50, "only {in_block_spends} in-block spends");
    assert!(op_returns > 100, "only {op_returns} OP_RETURN outputs");
    assert_eq!(kinds.len(), ScriptKind::ALL.len(), "every output kind used: {kinds:?}");
    let utxo_set: BTreeSet<OutPoint> = chain.utxos().iter().map(|u| u.outpoint).collect();
    assert_eq!(utxo_set, live, "builder's UTXO set matches a replay");
    for hot in chain.hot_scripts() {
        assert!(chain.history(hot).len() > 50, "hot script {hot} is not hot");
    }

    // A fork differs, double-spends coins the old branch spent, and pays the same hot scripts.
    let fork_at = chain.height() - 5;
    let mut fork = chain.fork(fork_at);
    fork.add_blocks(7);
    let mut fork2 = again.fork(fork_at);
    fork2.add_blocks(7);
    assert_eq!(fork.tip_hash(), fork2.tip_hash(), "forks are deterministic");
    assert_ne!(fork.block_hash(fork_at + 1), chain.block_hash(fork_at + 1));
    let old_spent: BTreeSet<OutPoint> = chain.blocks()[fork_at as usize + 1..]
        .iter()
        .flat_map(|b| b.txdata.iter().skip(1))
        .flat_map(|t| t.input.iter().map(|i| i.previous_output))
        .collect();
    let new_spent: BTreeSet<OutPoint> = fork.blocks()[fork_at as usize + 1..]
        .iter()
        .flat_map(|b| b.txdata.iter().skip(1))
        .flat_map(|t| t.input.iter().map(|i| i.previous_output))
        .collect();
    assert!(old_spent.intersection(&new_spent).count() > 10, "fork re-spends the old branch's coins");
    let hot_paid = fork.blocks()[fork_at as usize + 1..]
        .iter()
        .flat_map(|b| &b.txdata)
        .flat_map(|t| &t.output)
        .filter(|o| chain.hot_scripts().contains(&o.script_pubkey))
        .count();
    assert!(hot_paid > 10, "fork pays hot scripts ({hot_paid})");
    // The fork's UTXO set is consistent with its own blocks.
    let mut replay: BTreeSet<OutPoint> = BTreeSet::new();
    for b in fork.blocks().iter().skip(1) {
        for tx in &b.txdata {
            if !tx.is_coinbase() {
                for i in &tx.input {
                    assert!(replay.remove(&i.previous_output), "fork spends a missing coin");
                }
            }
            let txid = tx.compute_txid();
            for (vout, o) in tx.output.iter().enumerate() {
                if !o.script_pubkey.is_op_return() {
                    replay.insert(OutPoint::new(txid, vout as u32));
                }
            }
        }
    }
    let fork_set: BTreeSet<OutPoint> = fork.utxos().iter().map(|u| u.outpoint).collect();
    assert_eq!(fork_set, replay);
}

#[test]
fn scripted_daemon_self_test() {
    let mut chain = ChainBuilder::with_options(5, small_opts());
    chain.add_blocks(10);
    let daemon = ScriptedDaemon::start(chain.blocks().to_vec(), DaemonOptions::default());
    let base = format!("http://127.0.0.1:{}/", daemon.port());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // No pooled connections: kill/revive must not be masked (or broken) by a stale socket.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");

    let rpc = |body: Value, auth: (&str, &str)| -> Result<(u16, String), String> {
        rt.block_on(async {
            let resp = client
                .post(&base)
                .basic_auth(auth.0, Some(auth.1))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await.map_err(|e| e.to_string())?))
        })
    };
    let ok_auth = ("user", "pass");
    let call = |method: &str, params: Value| -> (u16, Value) {
        let (status, body) = rpc(json!({"jsonrpc": "1.0", "id": "t", "method": method, "params": params}), ok_auth)
            .expect("daemon reachable");
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
    };
    let get = |path: &str| -> Result<(u16, Vec<u8>), String> {
        rt.block_on(async {
            let resp = client.get(format!("{base}{path}")).send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            Ok((status, resp.bytes().await.map_err(|e| e.to_string())?.to_vec()))
        })
    };

    // Single calls.
    let (status, v) = call("getblockcount", json!([]));
    assert_eq!((status, v["result"].as_u64(), v["id"].as_str()), (200, Some(10), Some("t")));
    let (_, v) = call("getblockchaininfo", json!([]));
    assert_eq!(v["result"]["chain"], "regtest");
    assert_eq!(v["result"]["bestblockhash"], chain.tip_hash().to_string());
    let (_, v) = call("getnetworkinfo", json!([]));
    assert_eq!(v["result"]["version"], 310000);
    let (_, v) = call("getbestblockhash", json!([]));
    assert_eq!(v["result"], chain.tip_hash().to_string());
    let h3 = chain.block_hash(3).to_string();
    let (_, v) = call("getblock", json!([h3, 0]));
    let raw = hex::decode(v["result"].as_str().expect("hex")).expect("hex");
    assert_eq!(raw, serialize(&chain.blocks()[3]));
    let (_, v) = call("getblock", json!([h3]));
    assert_eq!(v["result"]["height"], 3);
    assert_eq!(v["result"]["previousblockhash"], chain.block_hash(2).to_string());
    assert_eq!(v["result"]["tx"].as_array().map(Vec::len), Some(chain.blocks()[3].txdata.len()));
    assert_eq!(v["result"]["nTx"].as_u64(), Some(chain.blocks()[3].txdata.len() as u64));
    let (_, v) = call("getblockheader", json!([h3, false]));
    assert_eq!(v["result"].as_str().map(str::len), Some(160));
    let (_, v) = call("getblockheader", json!({"blockhash": h3}));
    assert_eq!(v["result"]["hash"], h3);
    let tx = &chain.blocks()[3].txdata[1];
    let (_, v) = call("getrawtransaction", json!([tx.compute_txid().to_string(), false, h3]));
    assert_eq!(v["result"].as_str(), Some(hex::encode(serialize(tx)).as_str()));
    let (status, v) =
        call("getrawtransaction", json!([tx.compute_txid().to_string(), false, chain.block_hash(4).to_string()]));
    assert_eq!((status, v["error"]["code"].as_i64()), (500, Some(-5)));
    let (status, v) = call("getblock", json!(["00".repeat(32)]));
    assert_eq!(
        (status, v["error"]["code"].as_i64(), v["error"]["message"].as_str()),
        (500, Some(-5), Some("Block not found"))
    );
    let (status, v) = call("getblock", json!(["zz"]));
    assert_eq!((status, v["error"]["code"].as_i64()), (500, Some(-8)));
    let (status, v) = call("nosuchmethod", json!([]));
    assert_eq!((status, v["error"]["code"].as_i64()), (404, Some(-32601)));
    let (status, v) = call("getblockhash", json!([11]));
    assert_eq!(
        (status, v["error"]["code"].as_i64(), v["error"]["message"].as_str()),
        (500, Some(-8), Some("Block height out of range"))
    );

    // Batch: answered 200 with per-item results and errors, in order.
    let batch = json!([
        {"jsonrpc": "1.0", "id": 0, "method": "getblockhash", "params": [0]},
        {"jsonrpc": "1.0", "id": 1, "method": "getblockhash", "params": [99]},
        {"jsonrpc": "1.0", "id": 2, "method": "bogus", "params": []},
    ]);
    let (status, body) = rpc(batch, ok_auth).expect("batch");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status, 200);
    assert_eq!(v[0]["result"], chain.block_hash(0).to_string());
    assert_eq!((v[1]["error"]["code"].as_i64(), v[1]["id"].as_i64()), (Some(-8), Some(1)));
    assert_eq!(v[2]["error"]["code"].as_i64(), Some(-32601));

    // Malformed JSON and bad auth.
    let (status, body) = rt
        .block_on(async {
            let r = client.post(&base).basic_auth("user", Some("pass")).body("{nope").send().await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.text().await?))
        })
        .expect("reachable");
    assert_eq!(status, 500);
    assert!(body.contains("-32700"), "{body}");
    let (status, body) = rpc(json!({"id": 1, "method": "getblockcount"}), ("user", "wrong")).expect("reachable");
    assert_eq!((status, body.as_str()), (401, ""));

    // Warm-up.
    daemon.set_warmup(2);
    for _ in 0..2 {
        let (status, v) = call("getblockcount", json!([]));
        assert_eq!((status, v["error"]["code"].as_i64()), (500, Some(-28)));
    }
    assert_eq!(call("getblockcount", json!([])).1["result"], 10);

    // Disabled method.
    daemon.disable_method("getblockcount");
    assert_eq!(call("getblockcount", json!([])).0, 404);
    daemon.enable_method("getblockcount");

    // REST on and off.
    let (status, bytes) = get(&format!("rest/block/{h3}.bin")).expect("rest");
    assert_eq!((status, bytes), (200, serialize(&chain.blocks()[3])));
    let (status, bytes) = get("rest/chaininfo.json").expect("rest");
    let info: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!((status, info["blocks"].as_u64()), (200, Some(10)));
    assert_eq!(get(&format!("rest/block/{}.bin", "11".repeat(32))).expect("rest").0, 404);
    assert_eq!(daemon.rest_block_calls(), 1);
    daemon.set_rest(false);
    assert_eq!(get(&format!("rest/block/{h3}.bin")).expect("rest"), (404, vec![]));
    assert_eq!(get("rest/chaininfo.json").expect("rest").0, 404);
    daemon.set_rest(true);

    // Chain swap: a reorg to a fork, whose abandoned blocks stay available by hash (stale,
    // confirmations -1) as with bitcoind.
    let stale = chain.block_hash(9).to_string();
    let mut fork = chain.fork(8);
    fork.add_blocks(4);
    daemon.set_chain(fork.blocks().to_vec());
    assert_eq!(call("getblockcount", json!([])).1["result"], 12);
    assert_eq!(call("getblockhash", json!([9])).1["result"], fork.block_hash(9).to_string());
    let (status, v) = call("getblockheader", json!([stale]));
    assert_eq!(
        (status, v["result"]["confirmations"].as_i64(), v["result"]["height"].as_u64()),
        (200, Some(-1), Some(9))
    );
    assert!(v["result"].get("nextblockhash").is_none());
    assert_eq!(call("getblockheader", json!([fork.block_hash(9).to_string()])).1["result"]["confirmations"], 4);
    assert_eq!(get(&format!("rest/block/{stale}.bin")).expect("rest"), (200, serialize(&chain.blocks()[9])));

    // Dying after n blocks, kill and revive on the same port.
    let before = daemon.getblock_calls();
    daemon.die_after_getblocks(2);
    assert_eq!(call("getblock", json!([h3, 0])).0, 200);
    assert_eq!(get(&format!("rest/block/{h3}.bin")).expect("rest").0, 200);
    // It dies right after sending that response, so the client may see the answer first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!daemon.is_alive(), "the daemon did not die after its last block");
    assert_eq!(daemon.getblock_calls(), before + 1);
    std::thread::sleep(Duration::from_millis(100)); // the death is asynchronous
    assert!(rpc(json!({"id": 1, "method": "getblockcount"}), ok_auth).is_err(), "dead daemon answered");
    assert!(std::net::TcpStream::connect(("127.0.0.1", daemon.port())).is_err(), "dead daemon accepts");
    daemon.revive();
    assert_eq!(call("getblockcount", json!([])).1["result"], 12);
    // Keep-alive connection: several requests on one socket, then a kill closes it.
    {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", daemon.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut reader = BufReader::new(s.try_clone().expect("clone"));
        let body = r#"{"id":7,"method":"getblockcount","params":[]}"#;
        let auth = "Basic dXNlcjpwYXNz"; // user:pass
        for _ in 0..3 {
            write!(
                s,
                "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("write");
            let mut len = 0;
            let mut line = String::new();
            reader.read_line(&mut line).expect("status line");
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
            loop {
                line.clear();
                reader.read_line(&mut line).expect("header");
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
            }
            let mut buf = vec![0; len];
            reader.read_exact(&mut buf).expect("body");
            assert!(String::from_utf8_lossy(&buf).contains("\"result\":12"));
        }
        daemon.kill();
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0, "kill closes connections");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", daemon.port())).is_err(), "killed daemon accepts");
    daemon.revive();
    assert_eq!(call("getblockcount", json!([])).1["result"], 12);
}

// ---------------------------------------------------------------------------------------------
// Tests against the ferrum binary
// ---------------------------------------------------------------------------------------------

/// Bitcoin Core accepts what `sign_tx` signs: P2WPKH, P2TR key-path and P2PKH inputs.
#[test]
fn bitcoind_accepts_segwit_taproot_and_legacy_spends_signed_here() {
    let Some(core) = BitcoinCore::try_start() else { return };
    let (k1, k2) = (TestKey::new(1), TestKey::new(2));
    core.generate_to(101, &k1.p2wpkh().to_string());
    let coin = core.coins(&k1, &k1.p2wpkh().script_pubkey()).remove(0);
    let each = (coin.txout.value.to_sat() - 10_000) / 3;
    let fan = sign_tx(&[coin], vec![pay(&k2.p2wpkh(), each), pay(&k2.p2tr(), each), pay(&k2.p2pkh(), each)]);
    core.send(&fan);
    let back: Vec<Coin> = (0..3).map(|v| Coin::of(&fan, v, &k2)).collect();
    let gather = sign_tx(&back, vec![pay(&k1.p2tr(), 3 * each - 10_000)]);
    core.send(&gather);
    core.generate_to(1, &k1.p2wpkh().to_string());
    let view = ChainView::read(&core);
    assert!(view.confirmed(&fan.compute_txid()) && view.confirmed(&gather.compute_txid()));
    assert_eq!(view.state(&k1.p2tr().script_pubkey()).balance(), 3 * each - 10_000);
}

/// The Bitcoin SV node starts with its mandatory flags, mines, and its wallet pays.
#[test]
fn bsv_wallet_mines_and_pays() {
    let Some(sv) = BitcoinSv::try_start() else { return };
    let miner = sv.new_address();
    sv.generate_to(101, &miner);
    let payee = sv.new_address();
    let txid = sv.send_to(&payee, 123_456_789);
    assert_eq!(sv.mempool(), vec![txid.clone()]);
    sv.generate_to(1, &miner);
    assert!(sv.mempool().is_empty());
    let listed = sv.call("listunspent", json!([1, 9_999_999, [payee]]));
    assert_eq!(listed[0]["txid"], json!(txid));
    let script = bitcoin::ScriptBuf::from_hex(listed[0]["scriptPubKey"].as_str().unwrap()).unwrap();
    assert_eq!(ChainView::read(&sv).state(&script).balance(), 123_456_789);
}
