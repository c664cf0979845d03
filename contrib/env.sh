# Sourced by the project's scripts: link Debian's RocksDB when it is installed (no C++ build),
# and keep build output in a persistent directory so repeated runs are incremental.
if [ -z "${ROCKSDB_LIB_DIR:-}" ] && [ -e /usr/lib/x86_64-linux-gnu/librocksdb.so ]; then
  export ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
elif [ -z "${ROCKSDB_LIB_DIR:-}" ] && [ -e /usr/lib/aarch64-linux-gnu/librocksdb.so ]; then
  export ROCKSDB_LIB_DIR=/usr/lib/aarch64-linux-gnu
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrum/target}"
