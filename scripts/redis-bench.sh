#!/usr/bin/env bash
# The Redis store under load: one session-pool replica on `--store redis://` against the cheapest script
# round trip Redis itself can serve, on the same machine, with wrk and redis-benchmark on loopback. The
# ratio says what the replica (HTTP, JSON, and a store script that does real work) costs on top of "one
# EVALSHA and nothing else"; the Redis calls per request say whether a per-page call is one round trip;
# a pool of POOL_SIZE sessions beside one of SESSIONS says whether a call's cost grows with the pool.
#
#   scripts/redis-bench.sh                         # 10 s per scenario, 3 rounds, a 1M-session pool
#   ROUNDS=1 DURATION=3s POOL_SIZE=100000 scripts/redis-bench.sh
#   SERVER_CPUS=0 WRK_CPUS=1 scripts/redis-bench.sh  # pin the servers and the load generators apart
#
# It starts its own redis-server (a free port from REDIS_PORT up, a temporary directory, no persistence:
# --save "" --appendonly no) and one session-pool --store redis://127.0.0.1:PORT/0, then:
#   setup   pool `bench` with max_pool_size SESSIONS and pool `big` with max_pool_size POOL_SIZE, both
#           with sessions that never wear out (max_usage_count 1e9, max_error_score 1e9, max_age_secs
#           1 day), each filled by acquires (FILL_STEP sessions each); Redis's used_memory before and
#           after filling `big`, divided by its sessions, is the memory a session costs. mark_good
#           cycles over the first SESSIONS ids of each pool in id order (random ids, so a random sample
#           of the pool).
#   rounds  ROUNDS times (default 3) in turn, each after a warm-up in the first round (WARMUP, not
#           counted); the summary reports each scenario's median round, and the median over rounds of
#           its ratio to (a) of the same round ("paired %"), as scripts/http-bench.sh does:
#     a) redis         redis-benchmark -c CONNECTIONS EVALSHA of a script that reads TIME and does one
#                      HINCRBY (SCRIPT LOADed first), straight to Redis
#     b) acquire       POST /v1/pools/bench/acquire {}                  (SESSIONS sessions, no lease)
#     c) mark_good     POST /v1/pools/bench/sessions/<id>/mark_good {}
#     d) acquire, big  POST /v1/pools/big/acquire {}                    (POOL_SIZE sessions)
#     e) mark_good, big
#   calls   INFO commandstats before and after every measured wrk run: scripts (evalsha, evalsha_ro,
#           eval, eval_ro, fcall, fcall_ro) and all commands per HTTP request (the /v1 requests the
#           server counted in http_requests_total). commandstats also counts the commands a script
#           runs inside Redis, so it cannot tell a second round trip from a script's own work; a probe
#           after the rounds therefore sends PROBE_REQUESTS requests of each scenario over one
#           connection with MONITOR attached, and counts the commands that came from a client
#           ("round trips") apart from those a script ran ("[0 lua]").
#
# Environment (defaults in brackets):
#   DURATION [10s] per scenario and round     ROUNDS [3]          WARMUP [2s]
#   CONNECTIONS [64] (wrk and redis-benchmark)    THREADS [2] (wrk)
#   SESSIONS [1000]    the small pool's size, and how many ids of each pool mark_good cycles over
#   POOL_SIZE [1000000]  the big pool's size (at most 1000000, the API's max_pool_size)
#   REDIS_REQUESTS     redis-benchmark's -n per round; by default what its warm-up rate does in DURATION
#   PROBE_REQUESTS [1000]  requests per scenario in the MONITOR probe
#   SESSION_POOL_BIN [target/release/session-pool]
#   SERVER_PORT [18280]   REDIS_PORT [16379] (the first free port from there)   (127.0.0.1 only)
#   SKIP_BUILD=1     use the binary already in target/release
#   SERVER_CPUS, WRK_CPUS   taskset CPU lists for redis-server and session-pool, and for wrk and
#                    redis-benchmark (default: unpinned)
#   RESULTS_DIR      keep the raw outputs (wrk, redis-benchmark, commandstats, MONITOR counts), the Lua
#                    scripts and the logs there
#   session-pool's own SESSION_POOL_* variables and RUST_LOG pass through to it; --listen, --store and
#   --redis-key-prefix are always given as flags.
# Needs cargo, curl, wrk and redis-server, redis-cli and redis-benchmark (Debian's redis-server and
# redis-tools); they are installed with apt-get when missing (scripts/apt-install.sh). Exits 1 when a
# scenario had non-2xx answers; the targets (>= 50% of (a), 1 round trip a request, big/small >= 80%)
# are reported, not enforced.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
SESSIONS="${SESSIONS:-1000}"
POOL_SIZE="${POOL_SIZE:-1000000}"
REDIS_REQUESTS="${REDIS_REQUESTS:-}"
PROBE_REQUESTS="${PROBE_REQUESTS:-1000}"
# What one acquire creates at most (the store's own bound, FILL in pool.lua).
FILL_STEP=1000
SERVER_PORT="${SERVER_PORT:-18280}"
REDIS_PORT="${REDIS_PORT:-16379}"
SERVER_CPUS="${SERVER_CPUS:-}"
WRK_CPUS="${WRK_CPUS:-}"
HOST=127.0.0.1
SMALL=bench
BIG=big
PREFIX=redis-bench
# Sessions that never wear out: the runs measure calls, not retirements.
SETTINGS='"session": {"max_usage_count": 1000000000, "max_error_score": 1e9, "max_age_secs": 86400}'

die() { echo "redis-bench: $*" >&2; exit 1; }

# "10", "10s", "2m" -> seconds; anything else is refused, so a run is always bounded.
to_secs() {
    case "$1" in
        *[!0-9smh]* | "" ) die "bad duration '$1' (use e.g. 10s or 2m)" ;;
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo $(( ${1%s} )) ;;
        *) echo $(( $1 )) ;;
    esac
}
DURATION_SECS=$(to_secs "$DURATION")
WARMUP_SECS=$(to_secs "$WARMUP")
[ "$DURATION_SECS" -ge 1 ] || die "DURATION must be at least 1s"
[ "$DURATION_SECS" -le 3600 ] || die "DURATION is capped at 1h"
[ "$WARMUP_SECS" -le 600 ] || die "WARMUP is capped at 10m"
case "$ROUNDS" in [1-9] | 1[0-9] | 20) ;; *) die "ROUNDS must be 1..20" ;; esac
whole() { case "$2" in '' | *[!0-9]*) die "$1 must be a whole number" ;; esac; }
whole SESSIONS "$SESSIONS"
whole POOL_SIZE "$POOL_SIZE"
whole PROBE_REQUESTS "$PROBE_REQUESTS"
[ -z "$REDIS_REQUESTS" ] || whole REDIS_REQUESTS "$REDIS_REQUESTS"
[ "$SESSIONS" -ge 1 ] || die "SESSIONS must be at least 1"
[ "$POOL_SIZE" -ge "$SESSIONS" ] || die "POOL_SIZE must be at least SESSIONS"
[ "$POOL_SIZE" -le 1000000 ] || die "POOL_SIZE is at most 1000000 (the API's max_pool_size)"
[ "$PROBE_REQUESTS" -ge 1 ] || die "PROBE_REQUESTS must be at least 1"

# ---- tools ----------------------------------------------------------------------------------------
command -v wrk >/dev/null 2>&1 || bash scripts/apt-install.sh wrk
command -v curl >/dev/null 2>&1 || bash scripts/apt-install.sh curl
command -v redis-server >/dev/null 2>&1 || bash scripts/apt-install.sh redis-server
command -v redis-benchmark >/dev/null 2>&1 || bash scripts/apt-install.sh redis-tools

# Command prefixes that pin the servers and the load generators to CPU lists (taskset), empty when not
# asked for. Plain arrays rather than a wrapper function, so `$!` of a server started in the background
# is its own pid.
SERVER_PIN=()
WRK_PIN=()
[ -z "$SERVER_CPUS" ] || SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -z "$WRK_CPUS" ] || WRK_PIN=(taskset -c "$WRK_CPUS")

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
port_busy "$SERVER_PORT" && die "port $SERVER_PORT is in use (set SERVER_PORT)"
for _ in $(seq 1 100); do
    port_busy "$REDIS_PORT" || break
    REDIS_PORT=$((REDIS_PORT + 1))
done
port_busy "$REDIS_PORT" && die "no free port for Redis from REDIS_PORT up"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# ---- build ----------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "==> cargo build --release --locked --bin session-pool"
    cargo build --release --locked --bin session-pool
fi
SESSION_POOL_BIN="${SESSION_POOL_BIN:-target/release/session-pool}"
[ -x "$SESSION_POOL_BIN" ] || die "$SESSION_POOL_BIN is missing"
SESSION_POOL_BIN="$(realpath "$SESSION_POOL_BIN")"

# ---- servers --------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/redis-bench.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${RESULTS_DIR:-}" ]; then
        mkdir -p "$RESULTS_DIR" && cp "$WORK"/*.txt "$WORK"/*.csv "$WORK"/*.lua "$RESULTS_DIR"/ 2>/dev/null || true
        local log
        for log in "$WORK"/*.log; do
            { head -n 200 "$log"; echo "[...]"; tail -n 200 "$log"; } >"$RESULTS_DIR/$(basename "$log")" 2>/dev/null || true
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SP_URL="http://$HOST:$SERVER_PORT"
STORE="redis://$HOST:$REDIS_PORT/0"
redis() { redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }

echo "==> starting redis-server on $HOST:$REDIS_PORT (no persistence, directory $WORK/redis)"
mkdir "$WORK/redis"
"${SERVER_PIN[@]}" redis-server --bind "$HOST" --port "$REDIS_PORT" --dir "$WORK/redis" --save "" \
    --appendonly no --maxmemory-policy noeviction --logfile "$WORK/redis.log" &
PIDS+=("$!")
for i in $(seq 1 100); do
    [ "$(redis PING 2>/dev/null)" = PONG ] && break
    [ "$i" -lt 100 ] || { tail -n 20 "$WORK/redis.log" >&2; die "redis-server did not answer PING within 10 s"; }
    sleep 0.1
done
echo "    $(redis INFO server | grep -E '^redis_version:' | tr -d '\r')"

# Started in the temporary directory, so nothing it might write lands in the repository.
echo "==> starting session-pool on $SP_URL --store $STORE"
(cd "$WORK" && exec "${SERVER_PIN[@]}" "$SESSION_POOL_BIN" --listen "$HOST:$SERVER_PORT" --store "$STORE" \
    --redis-key-prefix "$PREFIX") >"$WORK/session-pool.log" 2>&1 &
SP_PID=$!
PIDS+=("$SP_PID")

# wait_for URL EXPECTED_STATUS [curl args...]: poll for up to 30 s. A session-pool that exits meanwhile
# is a build that refused the store (or failed otherwise): say so with its last lines.
wait_for() {
    local url="$1" want="$2" got i
    shift 2
    for i in $(seq 1 300); do
        got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
        [ "$got" = "$want" ] && return 0
        if ! kill -0 "$SP_PID" 2>/dev/null; then
            tail -n 20 "$WORK/session-pool.log" >&2
            die "session-pool refused --store $STORE (it exited; its last lines are above)"
        fi
        sleep 0.1
    done
    tail -n 20 "$WORK/session-pool.log" >&2
    die "$url did not answer $want within 30 s (last: $got)"
}
JSON=(-H 'content-type: application/json')
wait_for "$SP_URL/readyz" 200

# ---- setup ----------------------------------------------------------------------------------------
used_memory() { redis INFO memory | awk -F: '/^used_memory:/ {print $2 + 0}'; }
session_count() {
    curl -s --max-time 10 "$SP_URL/v1/pools/$1" | grep -oE '"session_count":[0-9]+' | cut -d: -f2
}

# fill POOL SIZE: one PUT of the pool's max_pool_size, then acquires until it holds SIZE sessions;
# each acquire creates at most FILL_STEP of the missing ones (the store's bound), in one script.
fill() {
    local pool="$1" size="$2" code secs n=0 start calls=0
    FILL_LONGEST=0
    echo "==> PUT /v1/pools/$pool {\"max_pool_size\": $size} and acquires until it holds them"
    start=$(date +%s.%N)
    code=$(curl -s -o "$WORK/put.json" -w '%{http_code}' -X PUT "${JSON[@]}" \
        -d "{\"max_pool_size\": $size, $SETTINGS}" "$SP_URL/v1/pools/$pool")
    case "$code" in 200 | 201) ;; *) cat "$WORK/put.json" >&2; die "PUT $pool answered $code" ;; esac
    while [ "$n" -lt "$size" ]; do
        calls=$((calls + 1))
        [ "$calls" -le $((size / FILL_STEP + 100)) ] || die "$pool holds $n sessions of $size after $calls acquires"
        read -r code secs < <(curl -s -o "$WORK/acquire.json" -w '%{http_code} %{time_total}\n' -X POST "${JSON[@]}" \
            -d '{}' --max-time 60 "$SP_URL/v1/pools/$pool/acquire")
        FILL_LONGEST=$(awk -v a="${FILL_LONGEST:-0}" -v b="$secs" 'BEGIN { print (b > a ? b : a) }')
        [ "$code" = 200 ] || { cat "$WORK/acquire.json" >&2; die "an acquire filling $pool answered $code"; }
        n=$(session_count "$pool")
    done
    FILL_SECS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "    $pool holds $n sessions after ${FILL_SECS}s"
}

# ids POOL: the pool's first SESSIONS ids in id order, one a line, into $WORK/POOL.ids.
ids() {
    local pool="$1" cursor="" page=0 n
    : >"$WORK/$pool.ids"
    while :; do
        page=$((page + 1))
        curl -s --max-time 60 -G "$SP_URL/v1/pools/$pool/sessions" --data-urlencode "state=usable" \
            --data-urlencode "limit=$(( SESSIONS < 1000 ? SESSIONS : 1000 ))" \
            ${cursor:+--data-urlencode "cursor=$cursor"} >"$WORK/page.json"
        grep -oE '"id":"[A-Za-z0-9_.~-]+","pool"' "$WORK/page.json" | cut -d'"' -f4 >>"$WORK/$pool.ids"
        n=$(wc -l <"$WORK/$pool.ids")
        cursor=$(grep -oE '"next_cursor":"[^"]*"' "$WORK/page.json" | cut -d'"' -f4 || true)
        [ "$n" -lt "$SESSIONS" ] && [ -n "$cursor" ] && [ "$page" -lt 10000 ] || break
    done
    head -n "$SESSIONS" "$WORK/$pool.ids" >"$WORK/$pool.ids.tmp" && mv "$WORK/$pool.ids.tmp" "$WORK/$pool.ids"
    [ "$(wc -l <"$WORK/$pool.ids")" -eq "$SESSIONS" ] \
        || { head -c 500 "$WORK/page.json" >&2; die "listed $(wc -l <"$WORK/$pool.ids") of $SESSIONS ids in $pool"; }
}

fill "$SMALL" "$SESSIONS"
ids "$SMALL"
MEMORY_BEFORE=$(used_memory)
fill "$BIG" "$POOL_SIZE"
BIG_FILL_SECS=$FILL_SECS
BIG_FILL_LONGEST=$FILL_LONGEST
MEMORY_AFTER=$(used_memory)
BIG_COUNT=$(session_count "$BIG")
ids "$BIG"

# The baseline's script: TIME and one HINCRBY, as small as a store script can be. Its key carries the
# same hash tag as the store's keys.
BASELINE_SHA=$(redis SCRIPT LOAD "redis.call('TIME'); return redis.call('HINCRBY', KEYS[1], 'n', 1)")
BASELINE_KEY="{$PREFIX}:redis-bench:baseline"

# ---- wrk scripts ----------------------------------------------------------------------------------
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
EOF

# mark_good over the ids file, each thread starting at its own offset; every request is formatted once,
# in init (as in scripts/http-bench.sh).
cat >"$WORK/mark_good.lua" <<'EOF'
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end

local requests, n, i = {}, 0, 0
local headers = { ["Content-Type"] = "application/json" }
function init(args)
  local path = args[1]
  local prefix = args[2]
  for line in io.lines(path) do
    n = n + 1
    requests[n] = wrk.format("POST", prefix .. line .. "/mark_good", headers, "{}")
  end
  assert(n > 0, "no ids in " .. path)
  i = offset or 0
end

function request()
  i = i + 1
  return requests[(i % n) + 1]
end
EOF

# ---- runs -----------------------------------------------------------------------------------------
SCENARIOS=(redis acquire mark_good big_acquire big_mark_good)
declare -A LABEL=(
    [redis]="(a) redis-benchmark EVALSHA"
    [acquire]="(b) acquire"
    [mark_good]="(c) mark_good"
    [big_acquire]="(d) acquire, big pool"
    [big_mark_good]="(e) mark_good, big pool"
)

# cmdstats FILE: Redis's command counters as "name calls usec" lines.
cmdstats() {
    redis INFO commandstats | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p' >"$1"
}
# tally REQUESTS BEFORE AFTER: "requests scripts commands script-usec" between two cmdstats files (the
# time Redis spent in scripts, their own commands included); INFO's own calls are left out.
tally() {
    awk -v req="$1" '
        FNR == NR { calls[$1] = $2; usec[$1] = $3; next }
        $1 == "info" { next }
        { d = $2 - calls[$1]; all += d
          if ($1 ~ /^(evalsha|evalsha_ro|eval|eval_ro|fcall|fcall_ro)$/) { scripts += d; us += $3 - usec[$1] } }
        END { printf "%d %d %d %d\n", req, scripts, all, us }' "$2" "$3"
}
# v1_requests: the /v1 requests the server has answered (http_requests_total).
v1_requests() {
    curl -s --max-time 10 "$SP_URL/metrics" \
        | awk '/^http_requests_total\{/ && /route="\/v1/ {s += $NF} END {printf "%d\n", s}'
}

# run_wrk NAME ROUND URL LUA [lua args...]: a measured run, with the Redis commands and the server's
# /v1 requests counted around it (tally's line in $WORK/calls.NAME.ROUND.txt).
run_wrk() {
    local name="$1" round="$2" url="$3" lua="$4"
    shift 4
    local args=(-c "$CONNECTIONS" -t "$THREADS" --latency -s "$lua" "$url")
    [ "$#" -eq 0 ] || args+=(-- "$@")
    if [ "$round" -eq 1 ] && [ "$WARMUP_SECS" -gt 0 ]; then
        "${WRK_PIN[@]}" timeout $((WARMUP_SECS + 30)) wrk -d "${WARMUP_SECS}s" "${args[@]}" >"$WORK/$name.warmup.txt"
    fi
    local out="$WORK/$name.$round.txt" req_before req_after
    echo "==> round $round/$ROUNDS, $name: wrk -c $CONNECTIONS -t $THREADS -d ${DURATION_SECS}s $url"
    req_before=$(v1_requests)
    cmdstats "$WORK/cmdstats.$name.$round.before.txt"
    "${WRK_PIN[@]}" timeout $((DURATION_SECS + 30)) wrk -d "${DURATION_SECS}s" "${args[@]}" >"$out"
    cmdstats "$WORK/cmdstats.$name.$round.after.txt"
    req_after=$(v1_requests)
    sed 's/^/    /' "$out"
    grep -q '^Requests/sec:' "$out" || die "no Requests/sec in wrk's output for $name"
    tally $((req_after - req_before)) "$WORK/cmdstats.$name.$round.before.txt" \
        "$WORK/cmdstats.$name.$round.after.txt" >"$WORK/calls.$name.$round.txt"
}

# run_redis ROUND: redis-benchmark's EVALSHA, its CSV turned into wrk's lines for the summary.
run_redis() {
    local round="$1" csv="$WORK/redis-benchmark.$round.csv" n
    local args=(-h "$HOST" -p "$REDIS_PORT" -c "$CONNECTIONS" --csv EVALSHA "$BASELINE_SHA" 1 "$BASELINE_KEY")
    if [ "$round" -eq 1 ] && [ -z "$REDIS_REQUESTS" ]; then
        # The warm-up also sizes the runs: -n is what its rate does in DURATION.
        "${WRK_PIN[@]}" redis-benchmark -n $((WARMUP_SECS > 0 ? 50000 * WARMUP_SECS : 50000)) "${args[@]}" \
            >"$WORK/redis-benchmark.warmup.csv"
        REDIS_REQUESTS=$(awk -F'"' -v d="$DURATION_SECS" 'NR == 2 {n = int($4 * d); print (n < 10000 ? 10000 : n)}' \
            "$WORK/redis-benchmark.warmup.csv")
    elif [ "$round" -eq 1 ] && [ "$WARMUP_SECS" -gt 0 ]; then
        "${WRK_PIN[@]}" redis-benchmark -n "$REDIS_REQUESTS" "${args[@]}" >"$WORK/redis-benchmark.warmup.csv"
    fi
    n="$REDIS_REQUESTS"
    echo "==> round $round/$ROUNDS, redis: redis-benchmark -n $n -c $CONNECTIONS EVALSHA $BASELINE_SHA 1 $BASELINE_KEY"
    cmdstats "$WORK/cmdstats.redis.$round.before.txt"
    "${WRK_PIN[@]}" timeout $((DURATION_SECS * 10 + 60)) redis-benchmark -n "$n" "${args[@]}" >"$csv"
    cmdstats "$WORK/cmdstats.redis.$round.after.txt"
    tally "$n" "$WORK/cmdstats.redis.$round.before.txt" "$WORK/cmdstats.redis.$round.after.txt" \
        >"$WORK/calls.redis.$round.txt"
    awk -F'"' 'NR == 2 {
        printf "Requests/sec: %s\n", $4
        printf "     50%%  %sms\n     99%%  %sms\n", $10, $14 }' "$csv" >"$WORK/redis.$round.txt"
    sed 's/^/    /' "$csv"
    grep -q '^Requests/sec: [0-9]' "$WORK/redis.$round.txt" || die "no requests/s in redis-benchmark's output"
}

for round in $(seq 1 "$ROUNDS"); do
    run_redis "$round"
    run_wrk acquire "$round" "$SP_URL/v1/pools/$SMALL/acquire" "$WORK/post.lua"
    run_wrk mark_good "$round" "$SP_URL" "$WORK/mark_good.lua" "$WORK/$SMALL.ids" "/v1/pools/$SMALL/sessions/"
    run_wrk big_acquire "$round" "$SP_URL/v1/pools/$BIG/acquire" "$WORK/post.lua"
    run_wrk big_mark_good "$round" "$SP_URL" "$WORK/mark_good.lua" "$WORK/$BIG.ids" "/v1/pools/$BIG/sessions/"
done

# ---- round trips (MONITOR probe) ------------------------------------------------------------------
# probe NAME POOL ENDPOINT: PROBE_REQUESTS requests over one keep-alive connection with MONITOR
# attached; $WORK/monitor.NAME.txt gets "count command" of the commands clients sent, and
# monitor.NAME.inner.txt the number of commands scripts ran.
probe() {
    local name="$1" pool="$2" endpoint="$3" i mon_pid codes
    awk -v n="$PROBE_REQUESTS" -v base="$SP_URL/v1/pools/$pool" -v endpoint="$endpoint" '
        { ids[NR] = $0 }
        END {
            for (i = 0; i < n; i++) {
                if (i > 0) print "next"
                if (endpoint == "acquire") url = base "/acquire"
                else url = base "/sessions/" ids[i % NR + 1] "/mark_good"
                printf "url = \"%s\"\nheader = \"content-type: application/json\"\ndata = \"{}\"\n", url
                printf "output = \"/dev/null\"\nwrite-out = \"%%{http_code}\\n\"\n"
            }
        }' "$WORK/$pool.ids" >"$WORK/probe.$name.curl"
    # redis-cli itself rather than the redis function, so `$!` is the process to stop.
    redis-cli -h "$HOST" -p "$REDIS_PORT" MONITOR >"$WORK/monitor.$name.raw" &
    mon_pid=$!
    PIDS+=("$mon_pid")
    for i in $(seq 1 50); do
        grep -q '^OK' "$WORK/monitor.$name.raw" 2>/dev/null && break
        sleep 0.1
    done
    curl -s -K "$WORK/probe.$name.curl" >"$WORK/probe.$name.codes"
    sleep 0.5
    kill "$mon_pid" 2>/dev/null || true
    wait "$mon_pid" 2>/dev/null || true
    codes=$(grep -c '^200$' "$WORK/probe.$name.codes" || true)
    [ "$codes" = "$PROBE_REQUESTS" ] || echo "    warning: the $name probe had $((PROBE_REQUESTS - codes)) non-200 answers" >&2
    # Lines look like: 1700000000.123456 [0 127.0.0.1:54321] "EVALSHA" "..." ...; a script's own
    # commands show "[0 lua]".
    awk '$1 ~ /^[0-9.]+$/ && $3 != "lua]" { c = $4; gsub("\"", "", c); n[tolower(c)]++ }
         END { for (c in n) print n[c], c }' "$WORK/monitor.$name.raw" | sort -rn >"$WORK/monitor.$name.txt"
    awk '$1 ~ /^[0-9.]+$/ && $3 == "lua]" { n++ } END { print n + 0 }' "$WORK/monitor.$name.raw" \
        >"$WORK/monitor.$name.inner.txt"
    rm -f "$WORK/monitor.$name.raw"
}
echo "==> MONITOR probe: $PROBE_REQUESTS requests of each scenario over one connection"
probe acquire "$SMALL" acquire
probe mark_good "$SMALL" mark_good
probe big_acquire "$BIG" acquire
probe big_mark_good "$BIG" mark_good

# ---- summary --------------------------------------------------------------------------------------
# field FILE WHAT: one figure from a wrk output file (or a redis-benchmark one in wrk's form).
field() {
    case "$2" in
        rps) awk '/^Requests\/sec:/ {print $2}' "$1" ;;
        p50) awk '$1 == "50%" {print $2}' "$1" ;;
        p99) awk '$1 == "99%" {print $2}' "$1" ;;
        non2xx) awk '/Non-2xx or 3xx responses:/ {n = $NF} END {print n + 0}' "$1" ;;
        errors) awk '/Socket errors:/ {for (i = 3; i <= NF; i++) {v = $i; gsub(",", "", v); if (v ~ /^[0-9]+$/) s += v}} END {print s + 0}' "$1" ;;
    esac
}
declare -A MEDIAN_FILE RANGE NON2XX ERRS
for name in "${SCENARIOS[@]}"; do
    sorted=$(for f in "$WORK/$name".[0-9]*.txt; do echo "$(field "$f" rps) $f"; done | sort -n)
    MEDIAN_FILE[$name]=$(echo "$sorted" | awk '{a[NR] = $2} END {print a[int((NR + 1) / 2)]}')
    RANGE[$name]=$(echo "$sorted" | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f-%.0f", lo, hi}')
    NON2XX[$name]=0
    ERRS[$name]=0
    for f in "$WORK/$name".[0-9]*.txt; do
        NON2XX[$name]=$((NON2XX[$name] + $(field "$f" non2xx)))
        ERRS[$name]=$((ERRS[$name] + $(field "$f" errors)))
    done
done
rps() { printf '%.0f' "$(field "${MEDIAN_FILE[$1]}" rps)"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
# paired NAME [BASE]: the median over rounds of NAME's requests/s over BASE's (default (a)) in the same
# round.
paired() {
    local round base="${2:-redis}"
    for round in $(seq 1 "$ROUNDS"); do
        awk -v a="$(field "$WORK/$1.$round.txt" rps)" -v b="$(field "$WORK/$base.$round.txt" rps)" \
            'BEGIN { printf "%.4f\n", a / b }'
    done | sort -n | awk '{a[NR] = $1} END {printf "%.1f%%", 100 * a[int((NR + 1) / 2)]}'
}
# per_request NAME COLUMN: Redis calls per /v1 request over every measured round (2 scripts, 3 all).
per_request() {
    cat "$WORK/calls.$1".[0-9]*.txt | awk -v c="$2" '{req += $1; n += $c} END {printf "%.3f", (req ? n / req : 0)}'
}
# script_usec NAME: microseconds Redis spent in one script call, over every measured round.
script_usec() {
    cat "$WORK/calls.$1".[0-9]*.txt | awk '{n += $2; us += $4} END {printf "%.1f", (n ? us / n : 0)}'
}
round_trips() {
    awk -v r="$PROBE_REQUESTS" '{n += $1} END {printf "%.3f", n / r}' "$WORK/monitor.$1.txt"
}
base=$(rps redis)
echo
echo "==> summary: $CONNECTIONS connections, $THREADS wrk threads, $ROUNDS round(s) of ${DURATION_SECS}s" \
    "after ${WARMUP_SECS}s warm-up, $(nproc) CPUs${SERVER_CPUS:+, servers on CPUs $SERVER_CPUS}${WRK_CPUS:+, load generators on CPUs $WRK_CPUS}"
echo "    $SESSION_POOL_BIN --store $STORE, one replica; $(redis INFO server | grep -E '^redis_version:' | tr -d '\r')"
echo "    pools: $SMALL of $SESSIONS sessions, $BIG of $BIG_COUNT (filled in ${BIG_FILL_SECS}s, $FILL_STEP an acquire);" \
    "(a) is $REDIS_REQUESTS EVALSHA a round"
echo "    the longest acquire while $BIG filled (it created up to $FILL_STEP sessions in one script, while Redis" \
    "served nothing else): ${BIG_FILL_LONGEST}s"
echo "    requests/s and latencies are each scenario's median round; range is min-max over the rounds"
echo "    load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" \
    "(anything else busy on the machine skews every figure; compare ratios of one run)"
echo "    paired % of (a): the median over rounds of the scenario's requests/s over (a)'s in that round (target >= 50%)"
printf '%-28s %11s %15s %9s %9s %8s %6s %9s %9s\n' scenario "requests/s" range p50 p99 non-2xx errors "% of (a)" "paired %"
for name in "${SCENARIOS[@]}"; do
    printf '%-28s %11s %15s %9s %9s %8s %6s %9s %9s\n' "${LABEL[$name]}" "$(rps "$name")" "${RANGE[$name]}" \
        "$(field "${MEDIAN_FILE[$name]}" p50)" "$(field "${MEDIAN_FILE[$name]}" p99)" \
        "${NON2XX[$name]}" "${ERRS[$name]}" "$(pct "$(rps "$name")" "$base")" "$(paired "$name")"
done
echo
echo "    big pool over small, paired (median over rounds of (d)/(b) and (e)/(c) in one round; target >= 80%):"
printf '    %-28s %s\n' "acquire" "$(paired big_acquire acquire)" "mark_good" "$(paired big_mark_good mark_good)"
echo
echo "    Redis calls per request, from INFO commandstats over the measured runs: scripts, all commands"
echo "    (those a script runs inside Redis included) and the microseconds Redis spent in a script call;"
echo "    round trips per request from the MONITOR probe ($PROBE_REQUESTS requests, the commands a client sent,"
echo "    the replica's once-a-second sweep included; target: exactly 1), and the commands scripts ran there"
printf '%-28s %8s %13s %10s %12s  %s\n' scenario scripts "all commands" "us/script" "round trips" \
    "round-trip commands; in scripts (probe)"
for name in "${SCENARIOS[@]}"; do
    if [ "$name" = redis ]; then
        printf '%-28s %8s %13s %10s %12s\n' "${LABEL[$name]}" "$(per_request "$name" 2)" "$(per_request "$name" 3)" \
            "$(script_usec "$name")" -
        continue
    fi
    printf '%-28s %8s %13s %10s %12s  %s; %s\n' "${LABEL[$name]}" "$(per_request "$name" 2)" "$(per_request "$name" 3)" \
        "$(script_usec "$name")" "$(round_trips "$name")" \
        "$(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$WORK/monitor.$name.txt")" \
        "$(awk -v r="$PROBE_REQUESTS" '{printf "%.2f a request", $1 / r}' "$WORK/monitor.$name.inner.txt")"
done
echo
awk -v a="$MEMORY_BEFORE" -v b="$MEMORY_AFTER" -v n="$BIG_COUNT" 'BEGIN {
    printf "    Redis memory per session: %.0f bytes (used_memory %.1f MiB before filling %s, %.1f MiB after, over %d sessions)\n",
        (b - a) / n, a / 1048576, "'"$BIG"'", b / 1048576, n }'
echo
bad=0
for name in "${SCENARIOS[@]}"; do
    [ "$name" != redis ] || continue
    if [ "${NON2XX[$name]}" != 0 ]; then
        echo "    warning: $name had ${NON2XX[$name]} non-2xx answers: its figure is not comparable" >&2
        bad=1
    fi
done
log_lines=$(wc -l <"$WORK/session-pool.log")
echo "    session-pool wrote $log_lines log lines during the run"
exit "$bad"
