#!/usr/bin/env bash
# Renders docs/dashboard.png from a real run: wallets work against ferrum on a private regtest
# chain (ferrum-try --load) while Debian's Prometheus scrapes it every 2 s; Prometheus serves
# the dashboard's panels as a console (contrib/prometheus/ferrum.html, generated with
# contrib/grafana/ferrum.json from one list), and headless Chromium photographs the page.
# Usage: contrib/grafana/picture.sh [seconds of load, default 240]
set -euo pipefail
cd "$(dirname "$0")/../.."
load="${1:-240}"
contrib/install-test-deps.sh >&2
command -v chromium-headless-shell >/dev/null || {
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
}
. contrib/env.sh
cargo build --release -q --bin ferrum --bin ferrum-rpc -p ferrum
cargo build --release -q --bin ferrum-try -p ferrum-testkit

tmp="$(mktemp -d)"
prom_pid=""
cleanup() { [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics_port="$(free_port)"
prom_port="$(free_port)"
cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 2s
scrape_configs:
  - job_name: ferrum
    static_configs:
      - targets: ['127.0.0.1:$metrics_port']
YML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" \
  --web.console.templates="$PWD/contrib/prometheus" \
  --web.console.libraries=/usr/share/doc/prometheus/examples/console_libraries \
  >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
echo "Prometheus on http://127.0.0.1:$prom_port/consoles/ferrum.html; $load s of load on ferrum…" >&2
"$CARGO_TARGET_DIR/release/ferrum-try" --metrics "127.0.0.1:$metrics_port" --load "$load" >&2
# The console's time range, in its own URL form: the last `load` seconds and a little more.
range="%7B%22duration%22%3A$(( load + 30 ))%2C%22endTime%22%3A0%7D"
timeout 120 chromium-headless-shell --no-sandbox --disable-gpu --hide-scrollbars --window-size=1240,2420 \
  --virtual-time-budget=15000 --screenshot="$PWD/docs/dashboard.png" \
  "http://127.0.0.1:$prom_port/consoles/ferrum.html#pctc$range" 2>/dev/null
echo "wrote docs/dashboard.png" >&2
