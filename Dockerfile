# session-pool container image.
#
#   docker build -t session-pool .
#   docker run --rm -p 8080:8080 -v session-pool-data:/data session-pool
#
# Every flag can be given as an argument (`docker run ... session-pool --max-pool-size 200`) or as its
# SESSION_POOL_<FLAG> environment variable. State lives in the /data volume.

ARG RUST_VERSION=1

# ---- builder ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, against placeholder sources, so this layer is cached until Cargo.toml or
# Cargo.lock change. Every target the manifest names must exist for cargo to read it.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/core.rs \
    && cargo build --release --locked --bin session-pool \
    && rm -rf src benches

# The real sources. `openapi.yaml` is compiled in (GET /openapi.yaml serves it). cargo refuses a
# manifest whose declared targets are missing (the [[bench]]), so a target added to Cargo.toml with
# an explicit section needs its COPY here too; auto-discovered tests/ are not needed for the binary.
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY openapi.yaml ./
# COPY keeps the files' own mtimes, which may be older than the placeholder build: touch them so
# cargo rebuilds the crate rather than keeping the placeholder binary.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin session-pool \
    && install -D -m 0755 target/release/session-pool /out/session-pool

# ---- runtime ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" session-pool \
    && useradd --system --uid "${APP_UID}" --gid session-pool --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin session-pool \
    && mkdir -p /data \
    && chown session-pool:session-pool /data \
    && chmod 0750 /data

COPY --from=builder /out/session-pool /usr/local/bin/session-pool

ENV SESSION_POOL_LISTEN=0.0.0.0:8080 \
    SESSION_POOL_DATA_DIR=/data

# Declared after the chown so a fresh named volume starts owned by the service user.
VOLUME ["/data"]
# Numeric, so runtimes that enforce runAsNonRoot can verify it.
USER ${APP_UID}:${APP_UID}
WORKDIR /data
EXPOSE 8080

# `session-pool healthcheck` GETs /healthz on the port of SESSION_POOL_LISTEN: no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/session-pool", "healthcheck"]

# The server handles SIGTERM itself: drains (at most 10 s), persists, exits 0. Docker's default stop
# timeout is also 10 s, so use `docker stop -t 20` (compose: stop_grace_period: 20s) to leave time to persist.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/session-pool"]
