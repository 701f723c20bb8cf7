#!/usr/bin/env bash
# What the background sweep and a /metrics scrape cost Redis on an idle store of many pools: the work
# that grows with the number of pools rather than with the calls. One session-pool on its own
# redis-server; POOLS pools, each with SESSIONS sessions that do not expire during the run.
#
#   scripts/redis-sweep-cost.sh                      # 1000 pools of 1 session, a 10 s window
#   POOLS=10000 WINDOW=20 scripts/redis-sweep-cost.sh
#   SESSION_POOL_BIN=/other/build/session-pool scripts/redis-sweep-cost.sh   # another version
#
# Reports, from INFO commandstats (microseconds Redis spent in the FCALLs, the commands the scripts ran
# included): the sweep's calls in the window and their mean and total, and one scrape of /metrics
# (whose gauges read every pool, in pages; a sweep that ran meanwhile counts in it too). Redis runs one script at a time, so a call's microseconds are also
# how long every other call waited behind it.
#
# Environment: POOLS [1000], SESSIONS [1] per pool, WINDOW [10] seconds, SERVER_PORT [18290],
# REDIS_PORT [16395] (the first free port from there), SESSION_POOL_BIN [target/release/session-pool],
# SKIP_BUILD=1. Needs cargo, curl, python3 and redis-server, redis-cli (installed with apt-get when
# missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

POOLS="${POOLS:-1000}"
SESSIONS="${SESSIONS:-1}"
WINDOW="${WINDOW:-10}"
SERVER_PORT="${SERVER_PORT:-18290}"
REDIS_PORT="${REDIS_PORT:-16395}"
BIN="${SESSION_POOL_BIN:-target/release/session-pool}"
HOST=127.0.0.1

die() { echo "redis-sweep-cost: $*" >&2; exit 1; }
for name in POOLS SESSIONS WINDOW; do
    case "${!name}" in '' | *[!0-9]*) die "$name must be a whole number" ;; esac
done
[ "$POOLS" -ge 1 ] && [ "$POOLS" -le 100000 ] || die "POOLS must be 1..100000"
[ "$SESSIONS" -le 1000 ] || die "SESSIONS is at most 1000 a pool"
[ "$WINDOW" -ge 2 ] && [ "$WINDOW" -le 600 ] || die "WINDOW must be 2..600 seconds"

command -v curl >/dev/null 2>&1 || bash scripts/apt-install.sh curl
command -v python3 >/dev/null 2>&1 || bash scripts/apt-install.sh python3
command -v redis-server >/dev/null 2>&1 || bash scripts/apt-install.sh redis-server
command -v redis-cli >/dev/null 2>&1 || bash scripts/apt-install.sh redis-tools
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${SESSION_POOL_BIN:-}" ]; then
    cargo build --release --locked --quiet
fi
[ -x "$BIN" ] || die "no session-pool binary at $BIN"

while redis-cli -h "$HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1; do REDIS_PORT=$((REDIS_PORT + 1)); done
WORK="$(mktemp -d)"
cleanup() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
rcli() { redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }

redis-server --port "$REDIS_PORT" --bind "$HOST" --dir "$WORK" --save "" --appendonly no \
    --daemonize yes --logfile "$WORK/redis.log"
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" --listen "$HOST:$SERVER_PORT" --store "redis://$HOST:$REDIS_PORT/0" --max-pools "$((POOLS + 1))" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -fs "http://$HOST:$SERVER_PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "session-pool exited: $(tail -3 "$WORK/server.log")"
    sleep 0.1
done

echo "== $POOLS pools of $SESSIONS sessions" >&2
python3 - "$HOST" "$SERVER_PORT" "$POOLS" "$SESSIONS" <<'EOF'
import http.client, sys
host, port, pools, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection(host, port)
def call(method, path, body):
    conn.request(method, path, body=body, headers={"content-type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    if answer.status not in (200, 201):
        sys.exit(f"{method} {path} answered {answer.status}")
for p in range(pools):
    call("PUT", f"/v1/pools/pool-{p:06}", '{"max_pool_size": 0}')
    for s in range(sessions):
        call("POST", f"/v1/pools/pool-{p:06}/sessions", f'{{"id": "s{s}"}}')
EOF

# calls and usec of FCALL since the last CONFIG RESETSTAT.
fcall_stats() { rcli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_fcall:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/p'; }

rcli config resetstat >/dev/null
sleep "$WINDOW"
read -r calls usec <<<"$(fcall_stats)"
[ "${calls:-0}" -gt 0 ] || die "no sweep call in ${WINDOW}s"
rcli config resetstat >/dev/null
curl -fs "http://$HOST:$SERVER_PORT/metrics" >/dev/null
read -r scrape_calls scrape <<<"$(fcall_stats)"

awk -v pools="$POOLS" -v sessions="$SESSIONS" -v window="$WINDOW" -v calls="$calls" -v usec="$usec" \
    -v scrape="$scrape" -v scrape_calls="$scrape_calls" 'BEGIN {
        printf "pools %d, sessions a pool %d, window %d s\n", pools, sessions, window
        printf "sweep: %d calls, %.0f us a call, %.2f ms of Redis a second\n", calls, usec / calls, usec / 1000 / window
        printf "scrape of /metrics: %d calls, %d us of Redis in all, %.0f us a call\n", scrape_calls, scrape, scrape / scrape_calls
    }'
