#!/usr/bin/env bash
# Try ferrum in two minutes, without a synced node: starts a private regtest Bitcoin Core node
# (built into ~/.cache/ferrum the first time, about five minutes), mines a small chain that pays
# a few wallet addresses, runs ferrum on it and prints how to point the Electrum wallet at it.
# Ctrl-C stops everything and deletes the chain.
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/install-test-deps.sh >&2
. contrib/env.sh
cargo build --release --bin ferrum --bin ferrum-rpc -p ferrum -q
cargo build --release --bin ferrum-try -p ferrum-testkit -q
export PATH="$CARGO_TARGET_DIR/release:$PATH"
exec "$CARGO_TARGET_DIR/release/ferrum-try" "$@"
