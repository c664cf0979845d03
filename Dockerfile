# ferrum in a container: build with Debian's RocksDB, run as an unprivileged user.
#   docker build -t ferrum .
#   docker run -e DAEMON_URL=http://user:pass@node:8332/ -e SERVICES=rpc://0.0.0.0:8000 -v ferrum:/data ferrum
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang libclang-dev librocksdb-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends librocksdb7.8 ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /data ferrum && mkdir -p /data && chown ferrum /data
COPY --from=build /src/target/release/ferrum /src/target/release/ferrum-rpc /usr/local/bin/
USER ferrum
ENV DB_DIRECTORY=/data
VOLUME /data
ENTRYPOINT ["ferrum"]
