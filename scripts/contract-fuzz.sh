#!/usr/bin/env bash
# Contract fuzzing: schemathesis generates requests from openapi.yaml (valid and invalid ones) and
# sends them to a live session-pool binary on 127.0.0.1, checking every answer against the spec:
# no 5xx, only documented status codes, documented content types and headers, and bodies that match
# the response schemas. Exits non-zero on any failure; prints schemathesis' summary either way.
# Which checks run, and the few per-operation exceptions with their reasons: scripts/contract-fuzz.toml.
#
#   scripts/contract-fuzz.sh                    # as CI runs it
#   MAX_EXAMPLES=100 SEED=7 scripts/contract-fuzz.sh
#
# Environment (defaults in brackets):
#   MAX_EXAMPLES [30]   test cases per operation and phase
#   SEED [20261125]     hypothesis seed, so a run is reproducible
#   TIME_LIMIT [420]    seconds the schemathesis run may take before it is stopped (and fails)
#   WORKERS [1]         concurrent schemathesis workers; more than one can trip a CPython 3.11 race
#                       in ast.parse ("AST constructor recursion depth mismatch", gh-106905)
#   SKIP_BUILD=1        use target/release/session-pool as it is
#   REPORT_DIR [target/schemathesis-report]   junit.xml, events.ndjson (every request and answer) and
#                       server.log, overwritten by each run
# Needs python3 (with venv) and cargo; schemathesis is pip-installed, pinned, into
# target/schemathesis-venv on first use. Only 127.0.0.1 is contacted.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
MAX_EXAMPLES="${MAX_EXAMPLES:-30}"
SEED="${SEED:-20261125}"
TIME_LIMIT="${TIME_LIMIT:-420}"
WORKERS="${WORKERS:-1}"
REPORT_DIR="${REPORT_DIR:-$ROOT/target/schemathesis-report}"
VENV="$ROOT/target/schemathesis-venv"
BIN="$ROOT/target/release/session-pool"
SPEC="$ROOT/openapi.yaml"
HOST=127.0.0.1

die() { echo "contract-fuzz: $*" >&2; exit 1; }
say() { echo "contract-fuzz: $*"; }

# --- schemathesis, pinned, in its own venv ---------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION" \
    || ! "$VENV/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
    say "installing schemathesis==$SCHEMATHESIS_VERSION"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi
"$VENV/bin/schemathesis" --version

# --- the spec must be valid OpenAPI 3.1 before anything is generated from it ------------------------
"$VENV/bin/openapi-spec-validator" "$SPEC"

# --- the binary, rebuilt when a source, the manifest or the (compiled-in) spec is newer -------------
if [ "${SKIP_BUILD:-}" != "1" ]; then
    if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock openapi.yaml -newer "$BIN" -print -quit)" ]; then
        say "building $BIN"
        cargo build --release --locked --bin session-pool
    fi
fi
[ -x "$BIN" ] || die "$BIN is missing (SKIP_BUILD=1 without a build?)"

# --- the server, on a free loopback port with a throwaway data dir ----------------------------------
mkdir -p "$REPORT_DIR"
DATA_DIR="$(mktemp -d)"
SERVER_LOG="$REPORT_DIR/server.log"
SERVER_PID=""
FUZZ_PID=""
cleanup() {
    if [ -n "$FUZZ_PID" ]; then
        kill -TERM "$FUZZ_PID" 2>/dev/null || true
        wait "$FUZZ_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://$HOST:$PORT"

# No SESSION_POOL_* variable of the caller's may change the server under test (an API key would turn
# every /v1 answer into 401); everything it needs is given as a flag.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(SESSION_POOL_[A-Za-z0-9_]*\)=.*/\1/p')

# Small limits keep every generated acquire cheap; a short retention exercises purging as well.
"$BIN" --listen "$HOST:$PORT" --data-dir "$DATA_DIR" \
    --max-pool-size 5 --max-pools 200 --max-sessions 5000 \
    --persist-interval-secs 1 --retired-retention-secs 30 \
    --max-body-bytes 65536 --log-format json \
    >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "the server exited at start"; }
    if python3 - "$BASE/readyz" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        ready=1
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { cat "$SERVER_LOG" >&2; die "$BASE/readyz did not answer 200 within 10 s"; }
say "server ready at $BASE (pid $SERVER_PID, data dir $DATA_DIR)"

# --- the run ----------------------------------------------------------------------------------------
set +e
timeout --signal=TERM --kill-after=15 "$TIME_LIMIT" \
    "$VENV/bin/schemathesis" --config-file "$ROOT/scripts/contract-fuzz.toml" run "$SPEC" \
    --url "$BASE" \
    --mode all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --generation-database none \
    --workers "$WORKERS" \
    --request-timeout 10 \
    --no-color \
    --report junit,ndjson \
    --report-junit-path "$REPORT_DIR/junit.xml" \
    --report-ndjson-path "$REPORT_DIR/events.ndjson" &
FUZZ_PID=$!
wait "$FUZZ_PID"
rc=$?
FUZZ_PID=""
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "contract-fuzz: the server died during the run; its log:" >&2
    tail -n 50 "$SERVER_LOG" >&2
    rc=1
fi
# A panic or a 5xx other than the contract's 503s fails the run even if schemathesis missed it.
if ! python3 - "$SERVER_LOG" <<'EOF' >&2; then
import json, sys
bad = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        if "panicked" in line:
            bad.append(line.rstrip())
        continue
    status = event.get("fields", {}).get("status")
    if isinstance(status, int) and status >= 500 and status != 503:
        bad.append(line.rstrip())
if bad:
    print(f"contract-fuzz: the server logged {len(bad)} panic(s) or 5xx answer(s); the first ones:")
    print("\n".join(bad[:20]))
    sys.exit(1)
EOF
    rc=1
fi
case "$rc" in
    0) say "passed" ;;
    124 | 137) say "FAILED: schemathesis did not finish within ${TIME_LIMIT}s" ;;
    *) say "FAILED (exit $rc); reports in $REPORT_DIR" ;;
esac
exit "$rc"
