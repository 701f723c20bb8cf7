# session-pool container image.
#
#   docker build -t session-pool .
#   docker run --rm -p 8080:8080 -v session-pool-data:/data --stop-timeout 30 session-pool
#
# Every flag can be given as an argument (`docker run ... session-pool --max-pool-size 200`) or as its
# SESSION_POOL_<FLAG> environment variable. State lives in the /data volume, which must be writable by
# uid 10001 (see the README's Docker section).

# The builder's Rust is `rust-version` in Cargo.toml, the toolchain CI builds and tests with. Raise both
# together.
ARG RUST_VERSION=1.95

# ---- builder ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# The image ships the binary alone: no line tables, no symbols (about 8 MB instead of 46 MB). The
# release profile keeps line tables for profiling on a developer's machine; these override it here.
ENV CARGO_PROFILE_RELEASE_DEBUG=none \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, against placeholder sources, so this layer is cached until Cargo.toml or
# Cargo.lock change. cargo refuses a manifest whose explicitly declared targets are missing, so the
# [[bench]] gets a placeholder too; examples and tests are discovered, not declared, and not needed.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/core.rs \
    && cargo build --release --locked --bin session-pool \
    && rm -rf src benches

# The real sources. `openapi.yaml` is compiled in (GET /openapi.yaml serves it).
COPY src ./src
COPY benches ./benches
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

# Declared after the chown so a fresh named volume starts owned by the service user. A bind mount
# keeps its host owner: chown it to 10001 or run with --user.
VOLUME ["/data"]
# Numeric, so runtimes that enforce runAsNonRoot can verify it.
USER ${APP_UID}:${APP_UID}
WORKDIR /data
EXPOSE 8080

# `session-pool healthcheck` GETs /healthz on the port of SESSION_POOL_LISTEN: no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/session-pool", "healthcheck"]

# The server handles SIGTERM itself: drains in-flight requests (at most 10 s), writes the state, exits
# 0. Docker's default stop timeout is also 10 s, after which it sends SIGKILL, so give it more:
# `docker run --stop-timeout 30`, `docker stop -t 30`, compose `stop_grace_period: 30s`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/session-pool"]
