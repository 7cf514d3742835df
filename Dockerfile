# ucwa-agent container image. Build: docker build -t ucwa-agent .
# Run: docker run --rm ucwa-agent (the embedded simulator demo); a real configuration is mounted
# on /etc/ucwa-agent, see README.md ("Container").

# The toolchain is Cargo.toml's rust-version: the oldest Rust that builds every locked crate
# (tests/msrv.rs checks both).
FROM rust:1.91-slim-bookworm AS build
WORKDIR /src
# The image has gcc and libc6-dev, all that Lua and SQLite (built from source) need.
# .cargo/config.toml sets the bundled SQLite's build flags (the per-connection page cache).
COPY Cargo.toml Cargo.lock ./
# README.md is compiled into the binary (`ucwa-agent man`); tests/dockerfile.rs keeps this list
# true to what the build includes.
COPY README.md ./
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked
# The scripts to ship, less their tests (*_test.lua is for `ucwa-agent test`, not for run).
COPY scripts ./scripts
RUN find scripts -name '*_test.lua' -delete

FROM debian:bookworm-slim
# ca-certificates: the pool's TLS; curl: the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ucwa \
    && useradd --system --uid 10001 --gid ucwa --home-dir /var/lib/ucwa-agent --shell /usr/sbin/nologin ucwa
COPY --from=build /src/target/release/ucwa-agent /usr/local/bin/ucwa-agent
# Configuration and scripts: root's, read-only to the agent. State: the agent's.
COPY deploy/container.toml /etc/ucwa-agent/config.toml
COPY --from=build /src/scripts/ /etc/ucwa-agent/scripts/
RUN install -d -o ucwa -g ucwa -m 0700 /var/lib/ucwa-agent
VOLUME ["/etc/ucwa-agent", "/var/lib/ucwa-agent"]
USER 10001:10001
WORKDIR /var/lib/ucwa-agent
# /healthz answers 200 while signed in and polling (metrics.listen on port 9464: 127.0.0.1:9464,
# or 0.0.0.0:9464 to publish it with -p).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:9464/healthz || exit 1
# SIGTERM (docker stop) stops polling, lets scripts finish and deletes the application: up to
# about 10 s, so stop with a longer timeout than docker's 10 s (docker stop -t 20).
ENTRYPOINT ["ucwa-agent", "--config", "/etc/ucwa-agent/config.toml"]
CMD ["run"]
