#!/usr/bin/env bash
# ferrum beside ElectrumX 2.0.0 on the same real node, chain and machine, in one command: installs
# what it needs (contrib/install-test-deps.sh: the nodes, ElectrumX from PyPI into
# ~/.cache/ferrum/electrumx), gives a generated chain of ~1,000,000 transactions to a regtest
# Bitcoin Core and Bitcoin SV node once (cached under ~/.cache/ferrum/real-chains), then syncs
# both servers on it and prints sync time, CPU (server and node), peak memory, database size and
# query latency, throughput and CPU per question, after checking that both answer alike.
# Usage: contrib/compare.sh [core|sv|core,sv]     (docs/PERFORMANCE.md has the figures)
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/install-test-deps.sh
. contrib/env.sh
FERRUM_BENCH_NODES="${1:-core,sv}" cargo bench --bench compare
