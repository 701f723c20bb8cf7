#!/usr/bin/env bash
# HTTP load comparison: session-pool against a minimal axum server (examples/echo_baseline.rs) on the
# same machine, with wrk on loopback. The baseline parses and echoes a mark_good-shaped JSON body, so
# the ratio says what session-pool's routing, validation, locking and bookkeeping cost on top of
# "axum + serde_json and nothing else".
#
#   scripts/http-bench.sh                      # 10 s per scenario
#   DURATION=30s scripts/http-bench.sh
#   SERVER_CPUS=0 WRK_CPUS=1 scripts/http-bench.sh   # pin server and load generator apart (taskset)
#
# Scenarios, run ROUNDS times (default 3) in turn, each after a warm-up in the first round (WARMUP,
# default 2s, not counted); the summary reports each scenario's median round, and the median over
# rounds of its ratio to the baseline of the same round ("paired %", the steadier figure on a shared
# machine):
#   a) baseline   POST /echo {"lease_id":null}
#   b) acquire    POST /v1/pools/bench/acquire {}              (pool max_pool_size POOL_SIZE, no lease)
#   c) mark_good  POST /v1/pools/bench/sessions/<id>/mark_good {} cycling over SESSIONS ids created
#                 beforehand with max_usage_count 1e9 and max_error_score 1e9, so none ever retires
#   d) acquire+mark_good with a lease, as a scraper does: acquire {"lease_secs":LEASE_SECS}, then
#                 mark_good {"lease_id":...} on the session it returned (both requests are counted;
#                 pairs/s is half of it)
#
# Environment (defaults in brackets):
#   DURATION [10s] per scenario and round     ROUNDS [3]          WARMUP [2s]
#   CONNECTIONS [64]   THREADS [2]   SESSIONS [1000]   LEASE_SECS [30]
#   POOL_SIZE [1000]  the pool's max_pool_size; above SESSIONS, one acquire fills the pool and the runs
#                     start once its first write is on disk (session_pool_persist_sessions_written_total)
#   SESSION_POOL_BIN [target/release/session-pool]  another build to measure (e.g. an older commit's)
#   COMPARE_BIN      a second build (e.g. an older commit's), served beside the first on SERVER_PORT+1
#                    and measured in the same rounds: (b)-(d) run against both, and the summary adds
#                    each scenario's paired ratio of the two builds (the median over rounds of
#                    SESSION_POOL_BIN's requests/s over COMPARE_BIN's)
#   BASELINE_PORT [18090]   SERVER_PORT [18080]   (127.0.0.1 only)
#   SKIP_BUILD=1     use the binaries already in target/release
#   SERVER_CPUS, WRK_CPUS   taskset CPU lists for the servers and for wrk (default: unpinned)
#   RESULTS_DIR      keep wrk's raw output, the Lua scripts and the servers' logs there
#   session-pool's own SESSION_POOL_* variables and RUST_LOG pass through to it (e.g.
#   SESSION_POOL_PERSIST_INTERVAL_SECS=3600); --listen and --data-dir are always given as flags.
# Logs go to temporary files, deleted at the end. At session-pool's default level a successful request
# logs nothing; RUST_LOG=info,session_pool::access=debug measures it with a line per request (~250
# bytes a request on disk while it runs).
# Needs cargo, curl and wrk; wrk and curl are installed with apt-get when missing (scripts/apt-install.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
SESSIONS="${SESSIONS:-1000}"
POOL_SIZE="${POOL_SIZE:-1000}"
LEASE_SECS="${LEASE_SECS:-30}"
BASELINE_PORT="${BASELINE_PORT:-18090}"
SERVER_PORT="${SERVER_PORT:-18080}"
SERVER_CPUS="${SERVER_CPUS:-}"
WRK_CPUS="${WRK_CPUS:-}"
HOST=127.0.0.1
POOL=bench

die() { echo "http-bench: $*" >&2; exit 1; }

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

# ---- tools ----------------------------------------------------------------------------------------
command -v wrk >/dev/null 2>&1 || bash scripts/apt-install.sh wrk
command -v curl >/dev/null 2>&1 || bash scripts/apt-install.sh curl

# Command prefixes that pin the servers and wrk to CPU lists (taskset), empty when not asked for. Plain
# arrays rather than a wrapper function, so `$!` of a server started in the background is its own pid.
SERVER_PIN=()
WRK_PIN=()
[ -z "$SERVER_CPUS" ] || SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -z "$WRK_CPUS" ] || WRK_PIN=(taskset -c "$WRK_CPUS")

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
port_busy "$BASELINE_PORT" && die "port $BASELINE_PORT is in use (set BASELINE_PORT)"
port_busy "$SERVER_PORT" && die "port $SERVER_PORT is in use (set SERVER_PORT)"
[ -z "${COMPARE_BIN:-}" ] || ! port_busy "$((SERVER_PORT + 1))" || die "port $((SERVER_PORT + 1)) is in use (set SERVER_PORT)"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# ---- build ----------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "==> cargo build --release --locked --bin session-pool --example echo_baseline"
    cargo build --release --locked --bin session-pool --example echo_baseline
fi
SESSION_POOL_BIN="${SESSION_POOL_BIN:-target/release/session-pool}"
COMPARE_BIN="${COMPARE_BIN:-}"
[ -z "$COMPARE_BIN" ] || [ -x "$COMPARE_BIN" ] || die "$COMPARE_BIN is missing"
BASELINE_BIN=target/release/examples/echo_baseline
[ -x "$SESSION_POOL_BIN" ] || die "$SESSION_POOL_BIN is missing"
[ -x "$BASELINE_BIN" ] || die "$BASELINE_BIN is missing"

# ---- servers --------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/http-bench.XXXXXX")"
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/http-bench-data.XXXXXX")"
CMP_DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/http-bench-data.XXXXXX")"
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
        mkdir -p "$RESULTS_DIR" && cp "$WORK"/*.txt "$WORK"/*.lua "$RESULTS_DIR"/ 2>/dev/null || true
        local log # a per-request log can be gigabytes: keep its start and its end
        for log in "$WORK"/*.log; do
            { head -n 200 "$log"; echo "[...]"; tail -n 200 "$log"; } >"$RESULTS_DIR/$(basename "$log")" 2>/dev/null || true
        done
    fi
    rm -rf "$WORK" "$DATA_DIR" "$CMP_DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BASELINE_URL="http://$HOST:$BASELINE_PORT"
SP_URL="http://$HOST:$SERVER_PORT"
CMP_URL="http://$HOST:$((SERVER_PORT + 1))"

echo "==> starting echo_baseline on $BASELINE_URL"
"${SERVER_PIN[@]}" "$BASELINE_BIN" "$HOST:$BASELINE_PORT" >"$WORK/echo_baseline.log" 2>&1 &
PIDS+=("$!")
echo "==> starting session-pool on $SP_URL (data dir $DATA_DIR)"
"${SERVER_PIN[@]}" "$SESSION_POOL_BIN" --listen "$HOST:$SERVER_PORT" --data-dir "$DATA_DIR" \
    >"$WORK/session-pool.log" 2>&1 &
PIDS+=("$!")
if [ -n "$COMPARE_BIN" ]; then
    echo "==> starting $COMPARE_BIN on $CMP_URL (data dir $CMP_DATA_DIR)"
    "${SERVER_PIN[@]}" "$COMPARE_BIN" --listen "$HOST:$((SERVER_PORT + 1))" --data-dir "$CMP_DATA_DIR" \
        >"$WORK/compare.log" 2>&1 &
    PIDS+=("$!")
fi

# wait_for URL EXPECTED_STATUS [curl args...]: poll for up to 30 s.
wait_for() {
    local url="$1" want="$2" got i
    shift 2
    for i in $(seq 1 300); do
        got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
        [ "$got" = "$want" ] && return 0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { tail -n 20 "$WORK"/*.log >&2; die "a server exited early"; }
        done
        sleep 0.1
    done
    die "$url did not answer $want within 30 s (last: $got)"
}
JSON=(-H 'content-type: application/json')
wait_for "$BASELINE_URL/echo" 200 -X POST "${JSON[@]}" -d '{"lease_id":null}'

# ---- session-pool setup ---------------------------------------------------------------------------
case "$POOL_SIZE" in '' | *[!0-9]*) die "POOL_SIZE must be a whole number" ;; esac
# setup URL: the pool, the mark_good scenario's sessions and, for a large pool, its fill, on one server.
setup() {
    local url="$1" code i id created written
    wait_for "$url/readyz" 200
    echo "==> PUT /v1/pools/$POOL {\"max_pool_size\": $POOL_SIZE}"
    code=$(curl -s -o "$WORK/put.json" -w '%{http_code}' -X PUT "${JSON[@]}" \
        -d "{\"max_pool_size\": $POOL_SIZE}" "$url/v1/pools/$POOL")
    case "$code" in 200 | 201) ;; *) cat "$WORK/put.json" >&2; die "PUT pool answered $code" ;; esac

    # The mark_good scenario's sessions: ids are ours (32 hex digits, like generated ones), created in one
    # curl process over one keep-alive connection.
    echo "==> creating $SESSIONS sessions for mark_good"
    : >"$WORK/ids.txt"
    : >"$WORK/create.curl"
    for i in $(seq 1 "$SESSIONS"); do
        id=$(printf 'b%031x' "$i")
        echo "$id" >>"$WORK/ids.txt"
        [ "$i" -eq 1 ] || echo next >>"$WORK/create.curl"
        cat >>"$WORK/create.curl" <<EOF
url = "$url/v1/pools/$POOL/sessions"
header = "content-type: application/json"
data = "{\"id\":\"$id\",\"max_usage_count\":1000000000,\"max_error_score\":1e9}"
output = "/dev/null"
write-out = "%{http_code}\n"
EOF
    done
    curl -s -K "$WORK/create.curl" >"$WORK/create.codes"
    created=$(grep -c '^201$' "$WORK/create.codes" || true)
    [ "$created" = "$SESSIONS" ] || {
        sort "$WORK/create.codes" | uniq -c >&2
        die "created $created of $SESSIONS sessions"
    }

    # A large pool: one acquire fills it; the runs start once its first write has settled.
    if [ "$POOL_SIZE" -gt "$SESSIONS" ]; then
        echo "==> filling the pool to $POOL_SIZE sessions and waiting for its first write"
        curl -s -o /dev/null -X POST "${JSON[@]}" -d '{}' --max-time 600 "$url/v1/pools/$POOL/acquire"
        for i in $(seq 1 6000); do
            written=$(curl -s --max-time 5 "$url/metrics" \
                | awk '/^session_pool_persist_sessions_written_total/ {print int($2)}')
            [ "${written:-0}" -ge "$POOL_SIZE" ] && break
            [ "$i" -lt 6000 ] || die "the first write of $POOL_SIZE sessions did not finish within 10 minutes"
            sleep 0.1
        done
    fi
}
setup "$SP_URL"
[ -z "$COMPARE_BIN" ] || setup "$CMP_URL"

# ---- wrk scripts ----------------------------------------------------------------------------------
# A fixed POST body.
cat >"$WORK/post.lua" <<'EOF'
local body = os.getenv("BENCH_BODY") or "{}"
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
EOF

# mark_good over the ids file, each thread starting at its own offset.
cat >"$WORK/mark_good.lua" <<'EOF'
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end

-- Every request is formatted once, in init, so the load generator does no more per request than
-- for the static scenarios (formatting in request() cost wrk, which shares the CPUs, several % of
-- the server's throughput).
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

# acquire with a lease, then mark_good that session ending the lease. Responses arrive per thread, not
# per connection, so acquired sessions wait in a queue; a connection whose turn comes sends a
# mark_good when one is queued, else a new acquire.
cat >"$WORK/acquire_mark.lua" <<'EOF'
local queue, head, tail = {}, 1, 0
local acquire_path, sessions_path, acquire_body
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  acquire_path = args[1] .. "/acquire"
  sessions_path = args[1] .. "/sessions/"
  acquire_body = '{"lease_secs":' .. args[2] .. '}'
end

function request()
  if head <= tail then
    local item = queue[head]
    queue[head] = nil
    head = head + 1
    return wrk.format("POST", sessions_path .. item[1] .. "/mark_good", headers, item[2])
  end
  return wrk.format("POST", acquire_path, headers, acquire_body)
end

function response(status, hdrs, body)
  if status ~= 200 then
    return
  end
  local lease = body:match('"lease"%s*:%s*(%b{})')
  if not lease then
    return -- a mark_good answer (no lease object)
  end
  local lease_id = lease:match('"id"%s*:%s*"([^"]+)"')
  local rest = body:gsub('"lease"%s*:%s*%b{}', '', 1)
  local id = rest:match('"id"%s*:%s*"([0-9a-f]+)"')
  if id then
    local mark_body = lease_id and ('{"lease_id":"' .. lease_id .. '"}') or "{}"
    tail = tail + 1
    queue[tail] = { id, mark_body }
  end
end
EOF

# ---- runs -----------------------------------------------------------------------------------------
# Each round runs the four scenarios in turn, so slow phases of a noisy machine spread over all of
# them; the summary takes each scenario's median round.
SCENARIOS=(baseline acquire mark_good acquire_mark)
[ -z "$COMPARE_BIN" ] || SCENARIOS+=(cmp_acquire cmp_mark_good cmp_acquire_mark)
declare -A LABEL=(
    [baseline]="(a) baseline POST /echo"
    [acquire]="(b) acquire"
    [mark_good]="(c) mark_good"
    [acquire_mark]="(d) acquire(lease)+mark_good"
    [cmp_acquire]="(b) acquire, compared build"
    [cmp_mark_good]="(c) mark_good, compared build"
    [cmp_acquire_mark]="(d) acquire+mark, compared build"
)

# run_wrk NAME ROUND URL LUA [lua args...] (BENCH_BODY from the environment for post.lua)
run_wrk() {
    local name="$1" round="$2" url="$3" lua="$4"
    shift 4
    local args=(-c "$CONNECTIONS" -t "$THREADS" --latency -s "$lua" "$url")
    [ "$#" -eq 0 ] || args+=(-- "$@")
    if [ "$round" -eq 1 ] && [ "$WARMUP_SECS" -gt 0 ]; then
        "${WRK_PIN[@]}" timeout $((WARMUP_SECS + 30)) wrk -d "${WARMUP_SECS}s" "${args[@]}" >"$WORK/$name.warmup.txt"
    fi
    local out="$WORK/$name.$round.txt"
    echo "==> round $round/$ROUNDS, $name: wrk -c $CONNECTIONS -t $THREADS -d ${DURATION_SECS}s $url"
    "${WRK_PIN[@]}" timeout $((DURATION_SECS + 30)) wrk -d "${DURATION_SECS}s" "${args[@]}" >"$out"
    sed 's/^/    /' "$out"
    grep -q '^Requests/sec:' "$out" || die "no Requests/sec in wrk's output for $name"
}

# run_server PREFIX ROUND URL: scenarios (b)-(d) against one server.
run_server() {
    local prefix="$1" round="$2" url="$3"
    BENCH_BODY='{}' run_wrk "${prefix}acquire" "$round" "$url/v1/pools/$POOL/acquire" "$WORK/post.lua"
    run_wrk "${prefix}mark_good" "$round" "$url" "$WORK/mark_good.lua" "$WORK/ids.txt" "/v1/pools/$POOL/sessions/"
    run_wrk "${prefix}acquire_mark" "$round" "$url" "$WORK/acquire_mark.lua" "/v1/pools/$POOL" "$LEASE_SECS"
}
run_round() {
    local round="$1"
    BENCH_BODY='{"lease_id":null}' run_wrk baseline "$round" "$BASELINE_URL/echo" "$WORK/post.lua"
    run_server "" "$round" "$SP_URL"
    [ -z "$COMPARE_BIN" ] || run_server cmp_ "$round" "$CMP_URL"
}
for round in $(seq 1 "$ROUNDS"); do
    run_round "$round"
done

# ---- summary --------------------------------------------------------------------------------------
# field FILE WHAT: one figure from a wrk output file.
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
rps() { field "${MEDIAN_FILE[$1]}" rps; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
base=$(rps baseline)
# paired NAME: the median over rounds of NAME's requests/s over the baseline's in the same round. A
# shared machine drifts between faster and slower phases that last longer than a round, so a ratio
# of two runs seconds apart is steadier than a ratio of medians taken over different rounds.
paired() {
    local round base="${2:-baseline}"
    for round in $(seq 1 "$ROUNDS"); do
        awk -v a="$(field "$WORK/$1.$round.txt" rps)" -v b="$(field "$WORK/$base.$round.txt" rps)" \
            'BEGIN { printf "%.4f\n", a / b }'
    done | sort -n | awk '{a[NR] = $1} END {printf "%.1f%%", 100 * a[int((NR + 1) / 2)]}'
}

echo
echo "==> summary: $CONNECTIONS connections, $THREADS wrk threads, $ROUNDS round(s) of ${DURATION_SECS}s" \
    "after ${WARMUP_SECS}s warm-up, $(nproc) CPUs${SERVER_CPUS:+, servers on CPUs $SERVER_CPUS}${WRK_CPUS:+, wrk on CPUs $WRK_CPUS}"
echo "    $SESSION_POOL_BIN${COMPARE_BIN:+ against $COMPARE_BIN}, pool of $POOL_SIZE sessions"
echo "    requests/s and latencies are each scenario's median round; range is min-max over the rounds"
echo "    load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" \
    "(anything else busy on the machine skews every figure; compare ratios of one run)"
echo "    paired % of (a): the median over rounds of the scenario's requests/s over the baseline's in that round"
printf '%-31s %11s %15s %9s %9s %8s %6s %9s %9s\n' scenario "requests/s" range p50 p99 non-2xx errors "% of (a)" \
    "paired %"
for name in "${SCENARIOS[@]}"; do
    printf '%-31s %11s %15s %9s %9s %8s %6s %9s %9s\n' "${LABEL[$name]}" "$(rps "$name")" "${RANGE[$name]}" \
        "$(field "${MEDIAN_FILE[$name]}" p50)" "$(field "${MEDIAN_FILE[$name]}" p99)" \
        "${NON2XX[$name]}" "${ERRS[$name]}" "$(pct "$(rps "$name")" "$base")" "$(paired "$name")"
done
if [ -n "$COMPARE_BIN" ]; then
    echo "    paired ratio of the builds, $SESSION_POOL_BIN over $COMPARE_BIN (median over rounds):"
    for name in acquire mark_good acquire_mark; do
        printf '    %-28s %s\n' "${LABEL[$name]}" "$(paired "$name" "cmp_$name")"
    done
fi
echo "    (d) counts both requests: $(awk -v r="$(rps acquire_mark)" 'BEGIN { printf "%.0f", r / 2 }') acquire+mark_good pairs/s"
# Cross-check from the server's side that the requests did what they say (d: acquires ~= marks).
curl -s "$SP_URL/metrics" | grep -E "^session_pool_(acquires|marks)_total\{pool=\"$POOL\"" | sed 's/^/    /' || true
curl -s "$SP_URL/v1/pools/$POOL" | grep -oE '"[a-z_]*session_count":[0-9]+' | tr '\n' ' ' | sed 's/^/    pool afterwards: /'
echo
bad=0
for name in "${SCENARIOS[@]}"; do
    [ "$name" != baseline ] || continue
    if [ "${NON2XX[$name]}" != 0 ]; then
        echo "    warning: $name had ${NON2XX[$name]} non-2xx answers: its figure is not comparable" >&2
        bad=1
    fi
done
log_lines=$(wc -l <"$WORK/session-pool.log")
echo "    session-pool wrote $log_lines log lines during the run"
exit "$bad"
