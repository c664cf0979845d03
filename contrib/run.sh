#!/usr/bin/env bash
# Builds and runs the ferrum server. Installs the build's Debian packages if missing.
# Defaults: COIN=Bitcoin NET=mainnet, a local node on its default RPC port with its cookie file,
# DB_DIRECTORY=~/.ferrum/<coin>-<net>. Override any of them with ElectrumX's variables, e.g.
#   DAEMON_URL=http://user:pass@127.0.0.1:8332/ contrib/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/install-test-deps.sh --no-nodes
. contrib/env.sh
cargo build --release --bins
coin="${COIN:-Bitcoin}"
net="${NET:-mainnet}"
export DB_DIRECTORY="${DB_DIRECTORY:-$HOME/.ferrum/${coin,,}-${net,,}}"
export ALLOW_ROOT="${ALLOW_ROOT:-$([ "$(id -u)" = 0 ] && echo 1 || echo '')}"
exec "$CARGO_TARGET_DIR/release/ferrum" "$@"
