//! Coins and networks as tables of constants: adding a coin is adding a row.

use std::fmt;

/// Which networks ferrum knows. The names are ElectrumX's `NET` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    Mainnet,
    Testnet,
    Testnet4,
    Signet,
    Regtest,
}

impl Net {
    pub fn name(self) -> &'static str {
        match self {
            Net::Mainnet => "mainnet",
            Net::Testnet => "testnet",
            Net::Testnet4 => "testnet4",
            Net::Signet => "signet",
            Net::Regtest => "regtest",
        }
    }

    pub fn parse(s: &str) -> Option<Net> {
        Some(match s.to_ascii_lowercase().as_str() {
            "mainnet" | "main" => Net::Mainnet,
            "testnet" | "testnet3" | "test" => Net::Testnet,
            "testnet4" => Net::Testnet4,
            "signet" => Net::Signet,
            "regtest" => Net::Regtest,
            _ => return None,
        })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything ferrum needs to know about one coin on one network.
#[derive(Debug, PartialEq, Eq)]
pub struct Coin {
    /// ElectrumX's `COIN` name.
    pub name: &'static str,
    pub net: Net,
    /// ElectrumX's `SHORTNAME`: the unit the admin `query` balance is written in.
    pub shortname: &'static str,
    /// Genesis block hash in display (RPC) order.
    pub genesis_hash: &'static str,
    /// The daemon's default JSON-RPC port, used when DAEMON_URL names no port.
    pub rpc_port: u16,
    /// Default REORG_LIMIT: blocks of undo data kept.
    pub reorg_limit: u32,
    /// Whether transactions may carry witness data (BIP 144 serialization).
    pub segwit: bool,
    /// Base58 version bytes of P2PKH and P2SH addresses (P2SH may have a legacy alternative).
    pub p2pkh_version: u8,
    pub p2sh_versions: &'static [u8],
    /// Bech32 human-readable part, for coins with segwit addresses.
    pub bech32_hrp: Option<&'static str>,
    /// The daemon's data directory under $HOME and the network's sub-directory, for the cookie.
    pub daemon_dir: &'static str,
    pub net_subdir: &'static str,
    /// `OP_FALSE OP_RETURN` outputs are the data carrier on BSV; both forms are unspendable there.
    pub op_false_op_return_unspendable: bool,
    /// Peer discovery's seeds, as ElectrumX lists them ("host [s[port]] [t[port]]").
    pub peers: &'static [&'static str],
    /// The network's default TCP and SSL ports, meant by a bare `t` or `s` in a peer's features.
    pub peer_ports: (u16, u16),
    /// Where ElectrumX's blacklist of known-bad peers is published for this network.
    pub blacklist_url: Option<&'static str>,
}

const BTC_REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
const BTC_MAINNET_GENESIS: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

// Peer discovery seeds, from ElectrumX 2.0's coin table (its `PEERS`).
const BTC_PEERS: &[&str] = &[
    "electrum.vom-stausee.de s t",
    "electrum.hsmiths.com s t",
    "helicarrier.bauerj.eu s t",
    "electrum.hodlister.co s",
    "electrum3.hodlister.co s",
    "btc.usebsv.com s50006",
    "fortress.qtornado.com s443 t",
    "ecdsa.net s110 t",
    "e2.keff.org s t",
    "electrum.jochen-hoenicke.de s50005 t50003",
    "vps5.hsmiths.com s",
    "electrum.emzy.de s",
    "electrum1.cipig.net t10000 s20000",
    "ulrichard.ch s",
    "hodlers.beer s",
    "5.9.83.108 s",
    "v7gtzf7nua6hdmb2wtqaqioqmesdb4xrlly4zwr7bvayxv2bpg665pqd.onion t",
    "qeqgdlw2ezf3uabook2ny3lztjxxzeyyoqw2k7cempzvqpknbmevhmyd.onion t",
    "kciybn4d4vuqvobdl2kdp3r2rudqbqvsymqwg4jomzft6m6gaibaf6yd.onion t",
    "explorerzydxu5ecjrkwceayqybizmpjjznk5izmitf2modhcusuqlid.onion t110",
    "v7o2hkemnt677k3jxcbosmjjxw3p5khjyu7jwv7orfy6rwtkizbshwqd.onion t57001",
    "nf365b5sbzk5j4jreimskffwnfpka7qtamyni5doohoom3g63o5tldad.onion t",
];
const BTC_TESTNET_PEERS: &[&str] = &[
    "testnet.qtornado.com s t",
    "blackie.c3-soft.com s57006 t57005",
    "electrum.blockstream.info t60001 s60002",
    "testnet.aranguren.org s t",
    "v22019051929289916.bestsrv.de s50002 t50001",
    "explorerzydxu5ecjrkwceayqybizmpjjznk5izmitf2modhcusuqlid.onion t143",
    "gsw6sn27quwf6u3swgra6o7lrp5qau6kt3ymuyoxgkth6wntzm2bjwyd.onion s51002 t51001",
    "3tc6nefii2fwoc66dqvrwcyj64dd3r35ihgxvp4u37itsopns5fjtead.onion s50002 t50001",
];
const BTC_TESTNET4_PEERS: &[&str] = &[
    "blackie.c3-soft.com s57010 t57009",
    "testnet4-electrumx.wakiyamap.dev",
    "13.212.194.61 s60002 t50001",
    "v22019051929289916.bestsrv.de s60002 t60001",
    "fulcrum.theuplink.net s60002",
    "134.199.227.217 s50002 t50001",
    "bitcoin.stagemole.eu s5010 t5000",
    "testnet4.qtornado.com s51012 t51011",
    "gsw6sn27quwf6u3swgra6o7lrp5qau6kt3ymuyoxgkth6wntzm2bjwyd.onion s52002 t52001",
];
const BSV_PEERS: &[&str] = &[
    "electrumx.bitcoinsv.io s",
    "satoshi.vision.cash s",
    "sv.usebsv.com s t",
    "sv.jochen-hoenicke.de s t",
    "sv.satoshi.io s t",
];
const LTC_PEERS: &[&str] = &[
    "ex.lug.gs s444",
    "electrum-ltc.bysh.me s t",
    "electrum-ltc.ddns.net s t",
    "electrum-ltc.wilv.in s t",
    "electrum.cryptomachine.com p1000 s t",
    "electrum.ltc.xurious.com s t",
];
const LTC_TESTNET_PEERS: &[&str] = &["electrum-ltc.bysh.me s t", "electrum.ltc.xurious.com s t"];

pub static COINS: &[Coin] = &[
    Coin {
        name: "Bitcoin",
        net: Net::Mainnet,
        shortname: "BTC",
        genesis_hash: BTC_MAINNET_GENESIS,
        rpc_port: 8332,
        reorg_limit: 200,
        segwit: true,
        p2pkh_version: 0x00,
        p2sh_versions: &[0x05],
        bech32_hrp: Some("bc"),
        daemon_dir: ".bitcoin",
        net_subdir: "",
        op_false_op_return_unspendable: false,
        peers: BTC_PEERS,
        peer_ports: (50001, 50002),
        blacklist_url: Some("https://electrum.org/blacklist.json"),
    },
    Coin {
        name: "Bitcoin",
        net: Net::Testnet,
        shortname: "XTN",
        genesis_hash: "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
        rpc_port: 18332,
        reorg_limit: 8000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0xc4],
        bech32_hrp: Some("tb"),
        daemon_dir: ".bitcoin",
        net_subdir: "testnet3",
        op_false_op_return_unspendable: false,
        peers: BTC_TESTNET_PEERS,
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "Bitcoin",
        net: Net::Testnet4,
        shortname: "XTN",
        genesis_hash: "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043",
        rpc_port: 48332,
        reorg_limit: 8000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0xc4],
        bech32_hrp: Some("tb"),
        daemon_dir: ".bitcoin",
        net_subdir: "testnet4",
        op_false_op_return_unspendable: false,
        peers: BTC_TESTNET4_PEERS,
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "Bitcoin",
        net: Net::Signet,
        shortname: "XTN",
        genesis_hash: "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
        rpc_port: 38332,
        reorg_limit: 8000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0xc4],
        bech32_hrp: Some("tb"),
        daemon_dir: ".bitcoin",
        net_subdir: "signet",
        op_false_op_return_unspendable: false,
        peers: &[],
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "Bitcoin",
        net: Net::Regtest,
        shortname: "XTN",
        genesis_hash: BTC_REGTEST_GENESIS,
        rpc_port: 18443,
        reorg_limit: 8000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0xc4],
        bech32_hrp: Some("bcrt"),
        daemon_dir: ".bitcoin",
        net_subdir: "regtest",
        op_false_op_return_unspendable: false,
        peers: &[],
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "BitcoinSV",
        net: Net::Mainnet,
        shortname: "BSV",
        genesis_hash: BTC_MAINNET_GENESIS,
        rpc_port: 8332,
        reorg_limit: 1000,
        segwit: false,
        p2pkh_version: 0x00,
        p2sh_versions: &[0x05],
        bech32_hrp: None,
        daemon_dir: ".bitcoin",
        net_subdir: "",
        op_false_op_return_unspendable: true,
        peers: BSV_PEERS,
        peer_ports: (50001, 50002),
        blacklist_url: None,
    },
    Coin {
        name: "BitcoinSV",
        net: Net::Regtest,
        shortname: "XTN",
        genesis_hash: BTC_REGTEST_GENESIS,
        rpc_port: 18332,
        reorg_limit: 8000,
        segwit: false,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0xc4],
        bech32_hrp: None,
        daemon_dir: ".bitcoin",
        net_subdir: "regtest",
        op_false_op_return_unspendable: true,
        peers: &[],
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "Litecoin",
        net: Net::Mainnet,
        shortname: "LTC",
        genesis_hash: "12a765e31ffd4059bada1e25190f6e98c99d9714d334efa41a195a7e7e04bfe2",
        rpc_port: 9332,
        reorg_limit: 800,
        segwit: true,
        p2pkh_version: 0x30,
        p2sh_versions: &[0x32, 0x05],
        bech32_hrp: Some("ltc"),
        daemon_dir: ".litecoin",
        net_subdir: "",
        op_false_op_return_unspendable: false,
        peers: LTC_PEERS,
        peer_ports: (50001, 50002),
        blacklist_url: None,
    },
    Coin {
        name: "Litecoin",
        net: Net::Testnet,
        shortname: "XLT",
        genesis_hash: "4966625a4b2851d9fdee139e56211a0d88575f59ed816ff5e6a63deb4e3e29a0",
        rpc_port: 19332,
        reorg_limit: 4000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0x3a, 0xc4],
        bech32_hrp: Some("tltc"),
        daemon_dir: ".litecoin",
        net_subdir: "testnet4",
        op_false_op_return_unspendable: false,
        peers: LTC_TESTNET_PEERS,
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
    Coin {
        name: "Litecoin",
        net: Net::Regtest,
        shortname: "XLT",
        genesis_hash: "530827f38f93b43ed12af0b3ad25a288dc02ed74d6d7857862df51fc56c416f9",
        rpc_port: 19443,
        reorg_limit: 8000,
        segwit: true,
        p2pkh_version: 0x6f,
        p2sh_versions: &[0x3a, 0xc4],
        bech32_hrp: Some("rltc"),
        daemon_dir: ".litecoin",
        net_subdir: "regtest",
        op_false_op_return_unspendable: false,
        peers: &[],
        peer_ports: (51001, 51002),
        blacklist_url: None,
    },
];

/// Looks a coin up by its `COIN` name (case-insensitive) and network.
pub fn lookup(name: &str, net: Net) -> Option<&'static Coin> {
    COINS.iter().find(|c| c.name.eq_ignore_ascii_case(name) && c.net == net)
}

/// Names of every coin ferrum knows, for error messages.
pub fn coin_names() -> Vec<&'static str> {
    let mut names: Vec<_> = COINS.iter().map(|c| c.name).collect();
    names.dedup();
    names
}

/// The networks known for one coin, for error messages.
pub fn nets_of(name: &str) -> Vec<&'static str> {
    COINS.iter().filter(|c| c.name.eq_ignore_ascii_case(name)).map(|c| c.net.name()).collect()
}

/// Which known coin/network chains start with this genesis hash (several coins share one).
pub fn identify_genesis(genesis_hash: &str) -> Vec<&'static Coin> {
    COINS.iter().filter(|c| c.genesis_hash == genesis_hash).collect()
}

impl Coin {
    /// Whether an output with this script can never be spent, so ferrum does not index it.
    pub fn is_unspendable(&self, script: &[u8]) -> bool {
        const OP_RETURN: u8 = 0x6a;
        match script {
            [OP_RETURN, ..] => true,
            [0x00, OP_RETURN, ..] => self.op_false_op_return_unspendable,
            _ => false,
        }
    }

    /// Parses an address of this coin into its scriptPubKey.
    pub fn address_to_script(&self, addr: &str) -> Option<Vec<u8>> {
        if let Some(hrp) = self.bech32_hrp {
            if addr.len() > hrp.len() && addr[..hrp.len() + 1].eq_ignore_ascii_case(&format!("{hrp}1")) {
                let (got_hrp, version, program) = bitcoin::bech32::segwit::decode(addr).ok()?;
                if !got_hrp.as_str().eq_ignore_ascii_case(hrp) {
                    return None;
                }
                let v = version.to_u8();
                let mut script = Vec::with_capacity(2 + program.len());
                script.push(if v == 0 { 0x00 } else { 0x50 + v });
                script.push(program.len() as u8);
                script.extend_from_slice(&program);
                return Some(script);
            }
        }
        let data = bitcoin::base58::decode_check(addr).ok()?;
        if data.len() != 21 {
            return None;
        }
        let (version, hash) = (data[0], &data[1..]);
        if version == self.p2pkh_version {
            let mut s = vec![0x76, 0xa9, 0x14];
            s.extend_from_slice(hash);
            s.extend_from_slice(&[0x88, 0xac]);
            Some(s)
        } else if self.p2sh_versions.contains(&version) {
            let mut s = vec![0xa9, 0x14];
            s.extend_from_slice(hash);
            s.push(0x87);
            Some(s)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coin_net_is_unique_and_genesis_is_well_formed() {
        for (i, a) in COINS.iter().enumerate() {
            assert_eq!(a.genesis_hash.len(), 64, "{} {}", a.name, a.net);
            assert!(hex::decode(a.genesis_hash).is_ok());
            for b in &COINS[i + 1..] {
                assert!(!(a.name == b.name && a.net == b.net), "duplicate {} {}", a.name, a.net);
            }
        }
    }

    #[test]
    fn bitcoin_genesis_matches_the_bitcoin_crate() {
        use bitcoin::Network;
        for (net, network) in [
            (Net::Mainnet, Network::Bitcoin),
            (Net::Testnet, Network::Testnet),
            (Net::Signet, Network::Signet),
            (Net::Regtest, Network::Regtest),
        ] {
            let coin = lookup("bitcoin", net).unwrap();
            let hash = bitcoin::blockdata::constants::genesis_block(network).block_hash();
            assert_eq!(coin.genesis_hash, hash.to_string(), "{net}");
        }
    }

    #[test]
    fn lookup_and_identify() {
        assert!(lookup("BITCOINSV", Net::Regtest).is_some());
        assert!(lookup("Litecoin", Net::Signet).is_none());
        let ids: Vec<_> = identify_genesis(BTC_REGTEST_GENESIS).iter().map(|c| c.name).collect();
        assert!(ids.contains(&"Bitcoin") && ids.contains(&"BitcoinSV"));
    }

    #[test]
    fn addresses_decode_to_scripts() {
        let btc = lookup("Bitcoin", Net::Mainnet).unwrap();
        // Well-known addresses and their scripts.
        let p2pkh = btc.address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2").unwrap();
        assert_eq!(hex::encode(p2pkh), "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac");
        let p2wpkh = btc.address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4").unwrap();
        assert_eq!(hex::encode(p2wpkh), "0014751e76e8199196d454941c45d1b3a323f1433bd6");
        let p2tr = btc.address_to_script("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0").unwrap();
        assert_eq!(&p2tr[..2], &[0x51, 0x20]);
        assert!(btc.address_to_script("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx").is_none());
        assert!(btc.address_to_script("notanaddress").is_none());
    }

    #[test]
    fn unspendable_outputs() {
        let btc = lookup("Bitcoin", Net::Mainnet).unwrap();
        let bsv = lookup("BitcoinSV", Net::Mainnet).unwrap();
        assert!(btc.is_unspendable(&[0x6a, 0x01, 0x00]));
        assert!(!btc.is_unspendable(&[0x00, 0x6a]));
        assert!(bsv.is_unspendable(&[0x00, 0x6a]));
        assert!(!btc.is_unspendable(&[0x00, 0x14]));
    }
}
