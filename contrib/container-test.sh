#!/usr/bin/env bash
# Builds the Dockerfile with podman and checks the image serves a regtest node, without any
# public image registry: the two base images the Dockerfile names are made here from Debian's
# own packages and tagged with those names, so the Dockerfile itself is built unchanged.
#   debian:bookworm-slim  a debootstrap (minbase) of bookworm, imported into podman
#   rust:1-bookworm       that rootfs plus gcc and this machine's Rust toolchain (the official
#                         image is bookworm plus rustup's toolchain, so this is the same shape)
# The base images are cached in podman's store; delete them with `podman rmi` to rebuild.
# Usage: contrib/container-test.sh        (as root, or with sudo available; needs ~3 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "container-test: $*" >&2; }
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
need=()
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A host with cgroup v1 plus a cgroup2 mount that holds a controller ("hybrid") makes crun refuse
# to start containers; in a private mount namespace without that mount it runs as on pure v1.
if [ -z "${FERRUM_CONTAINER_NS:-}" ] && grep -qs . /sys/fs/cgroup/unified/cgroup.controllers \
  && [ -d /sys/fs/cgroup/memory ]; then
  say "hybrid cgroups: running podman in a private mount namespace without /sys/fs/cgroup/unified"
  exec $sudo env FERRUM_CONTAINER_NS=1 unshare -m --propagation private \
    sh -c 'umount /sys/fs/cgroup/unified && exec "$0" "$@"' "$0" "$@"
fi
podman="$sudo podman"
# Limits no higher than this machine's, so the runtime needs no privilege to set them (a
# sandboxed root may lack CAP_SYS_RESOURCE).
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
node_pid=""
cleanup() {
  $podman rm -f ferrum-container-test >/dev/null 2>&1 || true
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null || true; fi
  $sudo rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

if ! $podman image exists docker.io/library/debian:bookworm-slim; then
  say "debootstrap bookworm from $mirror"
  $sudo debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # What the official slim image leaves out: apt's lists and caches, docs.
  $sudo rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/*.bin \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/*
  $sudo tar -C "$work/rootfs" -c . | $podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim >/dev/null
  $sudo rm -rf "$work/rootfs"
fi

if ! $podman image exists docker.io/library/rust:1-bookworm; then
  toolchain="$(rustc --print sysroot)"
  say "rust:1-bookworm from $(rustc --version) at $toolchain"
  mkdir -p "$work/rust/toolchain"
  # The compiler, its libraries and cargo; not the documentation (most of the toolchain's size).
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$work/rust/toolchain/" 2>/dev/null \
    || cp -a "$toolchain/bin" "$toolchain/lib" "$work/rust/toolchain/"
  # This machine's own certificate authorities (e.g. a TLS-inspecting egress proxy's), so cargo
  # inside the build reaches crates.io as it does here.
  mkdir -p "$work/rust/local-ca"
  cp /usr/local/share/ca-certificates/*.crt "$work/rust/local-ca/" 2>/dev/null || true
  cat >"$work/rust/Containerfile" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
COPY local-ca /usr/local/share/ca-certificates
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH
EOF
  $podman build --pull=never "${limits[@]}" -q -t docker.io/library/rust:1-bookworm "$work/rust" >/dev/null
  rm -rf "$work/rust"
fi
say "base images ready after $((SECONDS - started)) s"

say "podman build -t ferrum . (the Dockerfile as shipped)"
build_started=$SECONDS
$podman build --pull=never "${limits[@]}" -t localhost/ferrum:test . >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; exit 1; }
say "image built in $((SECONDS - build_started)) s: $($podman image inspect localhost/ferrum:test --format '{{.Size}}' | numfmt --to=iec) bytes"

# A regtest node on the host, from the test cache, with 101 blocks.
contrib/install-test-deps.sh >&2
bitcoind="$HOME/.cache/ferrum/bitcoin-core/bin/bitcoind"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc_port="$(free_port)"; tcp_port="$(free_port)"; admin_port="$(free_port)"
mkdir -p "$work/node"
"$bitcoind" -regtest -datadir="$work/node" -rpcport="$rpc_port" -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
  -rpcuser=ferrum -rpcpassword=secret -listen=0 -printtoconsole=0 &
node_pid=$!
cli() { "$HOME/.cache/ferrum/bitcoin-core/bin/bitcoin-cli" -regtest -rpcport="$rpc_port" -rpcuser=ferrum -rpcpassword=secret "$@"; }
for _ in $(seq 100); do cli getblockcount >/dev/null 2>&1 && break; sleep 0.2; done
# The node is built without a wallet: mine to BIP 173's regtest example address.
cli generatetoaddress 101 bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080 >/dev/null

# The host's network, so the container reaches the node on 127.0.0.1; the index in a volume.
$podman run -d --name ferrum-container-test --network=host "${limits[@]}" \
  -e COIN=Bitcoin -e NET=regtest -e DAEMON_URL="http://ferrum:secret@127.0.0.1:$rpc_port/" \
  -e SERVICES="tcp://127.0.0.1:$tcp_port,rpc://127.0.0.1:$admin_port" \
  -v ferrum-container-test:/data localhost/ferrum:test >/dev/null
answer=""
for _ in $(seq 150); do
  answer="$(python3 - "$tcp_port" <<'EOF' 2>/dev/null || true
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
f = s.makefile("rwb")
for i, (m, p) in enumerate([("server.version", ["container-test", "1.4"]), ("blockchain.headers.subscribe", [])]):
    f.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).encode() + b"\n")
    f.flush()
    print(json.loads(f.readline())["result"])
EOF
)"
  case "$answer" in *"'height': 101"*) break ;; esac
  sleep 0.2
done
info="$($podman exec ferrum-container-test ferrum-rpc --port "$admin_port" getinfo 2>&1 || true)"
user="$($podman exec ferrum-container-test id -un 2>&1 || true)"
logs="$($podman logs ferrum-container-test 2>&1 | tail -5)"
$podman rm -f ferrum-container-test >/dev/null
$podman volume rm -f ferrum-container-test >/dev/null
case "$answer" in
  *"'height': 101"*) ;;
  *) say "FAILED: the container did not serve the node's tip (101) on tcp://127.0.0.1:$tcp_port"
     echo "$answer" >&2; echo "$logs" >&2; exit 1 ;;
esac
[ "$user" = ferrum ] || { say "FAILED: ferrum runs as '$user', not as the unprivileged user ferrum"; exit 1; }
echo "$info" | grep -Eq 'db[ _]height"?: 101' \
  || { say "FAILED: ferrum-rpc getinfo inside the container: $info"; exit 1; }
say "OK: the image serves regtest at height 101 over TCP, ferrum-rpc works inside it, runs as '$user'"
say "$(echo "$answer" | head -1)"
say "total $((SECONDS - started)) s"
