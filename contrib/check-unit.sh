#!/usr/bin/env bash
# Checks contrib/ferrum.service with `systemd-analyze verify`, as systemd would load it: the
# unit is copied with ExecStart pointing at a built ferrum and EnvironmentFile at
# contrib/ferrum.env.example, and every line systemd complains about fails the check. Also
# checks that ferrum accepts the example settings (bar the paths that only exist on a server).
# Usage: contrib/check-unit.sh [path/to/ferrum]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/ferrum}"
[ -x "$bin" ] || { echo "check-unit: no ferrum binary at $bin (cargo build first, or pass its path)" >&2; exit 2; }
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze is not installed (Debian package systemd)" >&2; exit 2; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed -e "s|^ExecStart=.*|ExecStart=$bin|" \
    -e "s|^EnvironmentFile=.*|EnvironmentFile=$PWD/contrib/ferrum.env.example|" \
    contrib/ferrum.service >"$tmp/ferrum.service"
out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$tmp/ferrum.service" 2>&1 || echo "systemd-analyze verify failed")"
# Complaints about units this one only mentions (bitcoind.service) are not about it.
out="$(printf '%s\n' "$out" | grep -v -e '^$' -e 'bitcoind.service' || true)"
if [ -n "$out" ]; then
  printf 'check-unit: systemd-analyze verify contrib/ferrum.service:\n%s\n' "$out" >&2
  exit 1
fi
# The example settings, as the unit would give them (the database somewhere writable).
if ! said="$(env -i PATH="$PATH" bash -c 'set -a; . contrib/ferrum.env.example; DB_DIRECTORY="$1"; exec "$2" --check-config' _ "$tmp/db" "$bin" 2>&1)"; then
  printf 'check-unit: ferrum refuses contrib/ferrum.env.example:\n%s\n' "$said" >&2
  exit 1
fi
echo "check-unit: contrib/ferrum.service verifies; $said"
