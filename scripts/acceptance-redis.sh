#!/usr/bin/env bash
# The acceptance suite (../shared/acceptance) against the Redis store, each suite served by three
# servers on one Redis: a private redis-server on a free 127.0.0.1 port in a temporary directory
# (killed and removed on exit, whatever happens), and run.py with `--store redis://...` and
# `--replicas 3`.
#
#   scripts/acceptance-redis.sh                               # target/release/session-pool
#   BIN=target/debug/session-pool scripts/acceptance-redis.sh -k lease
#
# Arguments go to run.py. Needs bash, python3 and redis-server on PATH; builds nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN="${BIN:-target/release/session-pool}"
ACCEPTANCE="${ACCEPTANCE:-../shared/acceptance/run.py}"
REPLICAS="${REPLICAS:-3}"

die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

command -v redis-server >/dev/null 2>&1 || die "redis-server is not on PATH"
[[ -f "$ACCEPTANCE" ]] || die "no acceptance suite at $ACCEPTANCE"
[[ -x "$BIN" ]] || die "$BIN is missing (run cargo build --release)"

REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/session-pool-redis.XXXXXX")"
REDIS_PID=""
stop_redis() {
  if [[ -n "$REDIS_PID" ]]; then
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$REDIS_DIR"
}
trap stop_redis EXIT

# Whether a Redis answers PING on $1 (bash's /dev/tcp: no redis-cli needed).
pong() {
  local line=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 line <&3 || true
  exec 3>&-
  [[ "$line" == $'+PONG\r' ]]
}

# A free port, then redis-server on it; another port if someone took it in between.
for attempt in 1 2 3; do
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --save '' --appendonly no \
    --daemonize no --logfile "$REDIS_DIR/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 200); do
    pong "$PORT" && break
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.05
  done
  pong "$PORT" && break
  kill -9 "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
  (( attempt < 3 )) || die "redis-server did not start: $(tail -n 5 "$REDIS_DIR/redis.log" 2>/dev/null)"
done
echo "==> redis-server on 127.0.0.1:$PORT, $REPLICAS replicas on it" >&2

python3 "$ACCEPTANCE" --bin "$BIN" --server-arg=--store --server-arg="redis://127.0.0.1:$PORT/0" \
  --replicas "$REPLICAS" "$@"
