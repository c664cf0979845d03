#!/usr/bin/env bash
# Runs every test: unit, integration (scripted daemon) and end-to-end (real Bitcoin Core and
# Bitcoin SV nodes). Installs what the tests need first (Debian packages, the nodes; cached in
# ~/.cache/ferrum). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/install-test-deps.sh
. contrib/env.sh
# The nodes were just installed, so the end-to-end tests must run, not skip.
export FERRUM_REQUIRE_NODES="${FERRUM_REQUIRE_NODES:-1}"
cargo build --all-targets
cargo test --all-targets "$@" -- --test-threads=2
