#!/usr/bin/env bash
# Instructions the server spends per request, counted by callgrind: a noise-free figure for comparing
# two builds on a shared machine, where requests per second drift. Runs the server under callgrind
# twice (one request, then N+1), drives sequential keep-alive requests from Python, and prints the
# difference divided by N. Add --dump to keep the larger profile for callgrind_annotate.
#
#   scripts/request-instructions.sh                        # mark_good, 3000 requests
#   CALL=acquire N=2000 scripts/request-instructions.sh
#   SESSION_POOL_BIN=/tmp/old/session-pool scripts/request-instructions.sh
#
# Needs valgrind (callgrind_annotate) and python3; builds target/release/session-pool unless
# SESSION_POOL_BIN names a binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CALL="${CALL:-mark_good}"
N="${N:-3000}"
PORT="${PORT:-18200}"
BIN="${SESSION_POOL_BIN:-target/release/session-pool}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [[ -z "${SESSION_POOL_BIN:-}" ]]; then cargo build --release --locked --quiet --bin session-pool; fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

drive() {
  python3 - "$PORT" "$1" "$CALL" <<'PY'
import http.client, json, sys, time
port, n, call = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def request(method, path, body=None):
    conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    return answer.status, answer.read()
for _ in range(600):
    try:
        if request("GET", "/readyz")[0] == 200:
            break
    except OSError:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        time.sleep(0.1)
request("PUT", "/v1/pools/p", {"max_pool_size": 1000})
request("POST", "/v1/pools/p/sessions", {"id": "s1", "max_usage_count": 1000000000, "max_error_score": 1e9})
path = "/v1/pools/p/acquire" if call == "acquire" else f"/v1/pools/p/sessions/s1/{call}"
for _ in range(n):
    status, body = request("POST", path, {})
    assert status == 200, (status, body)
PY
}

count() {
  local requests=$1 out="$WORK/callgrind.$1"
  mkdir -p "$WORK/data.$requests"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --listen "127.0.0.1:$PORT" \
    --data-dir "$WORK/data.$requests" >/dev/null 2>&1 &
  local server=$!
  drive "$requests"
  kill -INT "$server"
  wait "$server" || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

one=$(count 1)
many=$(count $((N + 1)))
echo "$CALL: $(( (many - one) / N )) instructions per request ($N requests, $BIN)"
if [[ "${1:-}" == "--dump" ]]; then cp "$WORK/callgrind.$((N + 1))" "callgrind.$CALL.out"; echo "profile: callgrind.$CALL.out"; fi
