#!/usr/bin/env bash
# ferrum beside ElectrumX 2.0.0 and electrs 0.12 on the same real node, chain and machine, in one
# command: installs what it needs (contrib/install-test-deps.sh --with-electrs: the nodes,
# ElectrumX from PyPI into ~/.cache/ferrum/electrumx, electrs from crates.io into
# ~/.cache/ferrum/electrs, ~40 CPU-minutes the first time), gives a generated chain of ~1,000,000
# transactions to a regtest Bitcoin Core and Bitcoin SV node once (cached under
# ~/.cache/ferrum/real-chains), then syncs every server on it (electrs on Bitcoin Core only) and
# prints sync time, CPU (server and node), peak memory, database size and query latency,
# throughput and CPU per question (server and node), after checking that all answer alike.
# Usage: contrib/compare.sh [core|sv|core,sv]     (docs/PERFORMANCE.md has the figures)
#        FERRUM_BENCH_ELECTRS=0 contrib/compare.sh   (without electrs, nothing to build)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FERRUM_BENCH_ELECTRS:-1}" = 0 ]; then
  contrib/install-test-deps.sh
else
  contrib/install-test-deps.sh --with-electrs
fi
. contrib/env.sh
FERRUM_BENCH_NODES="${1:-core,sv}" cargo bench --bench compare
