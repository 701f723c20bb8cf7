#!/usr/bin/env bash
# Proof with the real library: Crawlee for Python loads what `GET /v1/pools/{pool}/export?format=crawlee`
# writes, and session-pool imports what Crawlee for Python writes back.
#
#   scripts/crawlee-roundtrip.sh
#   CRAWLEE_VERSION=1.10.4 scripts/crawlee-roundtrip.sh
#   SKIP_BUILD=1 scripts/crawlee-roundtrip.sh        # use target/release/session-pool as it is
#
# Steps:
#   1. a virtualenv in $VENV (default target/crawlee-venv) with crawlee==$CRAWLEE_VERSION from PyPI
#      (reused when it already has that version);
#   2. cargo build --release, then target/release/session-pool on a free 127.0.0.1 port with a
#      temporary data dir (stopped and removed on exit, whatever happens);
#   3. a pool filled over HTTP: sessions with user data, cookies for example.com (host-only, domain,
#      path, secure, expiring), marks good and bad, an explicitly retired session;
#   4. Python loads the Crawlee export with crawlee.sessions._models.SessionPoolModel.model_validate and
#      checks every session's id, error score, usage count, user data, usability and expiry, and the
#      Cookie header Crawlee's own jar computes for several URLs (also against session-pool's
#      GET .../cookies?url= when that endpoint is there);
#   5. Crawlee's own dump of that model (model_dump(mode="json", by_alias=True), what its
#      RecoverableState persists) is imported into a second pool and compared again.
# Prints "PASS: ..." at the end and exits 0; any mismatch exits non-zero with the reason.
#
# Needs: bash, cargo, python3 >= 3.10 with venv, and PyPI reachable. Nothing else (no curl: every
# HTTP call is Python's urllib).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CRAWLEE_VERSION="${CRAWLEE_VERSION:-1.11.0}"
VENV="${VENV:-target/crawlee-venv}"
PYTHON="${PYTHON:-python3}"
BIN=target/release/session-pool

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "crawlee 1.x needs Python >= 3.10; $PYTHON is $("$PYTHON" -V 2>&1)"

# 1. Crawlee for Python in a virtualenv.
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating the virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("crawlee"))' 2>/dev/null || true)"
if [[ "$installed" != "$CRAWLEE_VERSION" ]]; then
  say "installing crawlee==$CRAWLEE_VERSION from PyPI"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "crawlee==$CRAWLEE_VERSION"
fi

# 2. The server.
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  say "cargo build --release"
  cargo build --release --quiet --bin session-pool
fi
[[ -x "$BIN" ]] || die "$BIN is missing (run cargo build --release)"

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/session-pool-crawlee.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
say "starting $BIN on $BASE (data dir $DATA_DIR)"
env -u SESSION_POOL_API_KEY "$BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" \
  --retired-retention-secs 3600 >"$DATA_DIR/server.log" 2>&1 &
SERVER_PID=$!

# 3.-5. Fill, export, load with Crawlee, import Crawlee's dump back, compare.
set +e
"$VENV/bin/python" - "$BASE" "$CRAWLEE_VERSION" <<'PY'
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

from crawlee.sessions._models import SessionPoolModel

BASE, VERSION = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"  mismatch: {what}", file=sys.stderr)


def call(method, path, body=None, expect=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if status not in expect:
        sys.exit(f"FAIL: {method} {path} answered {status}: {text}")
    return status, (json.loads(text) if text else None)


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pairs(header):
    return set(filter(None, (p.strip() for p in header.split(";"))))


deadline = time.time() + 30
while True:
    try:
        with urllib.request.urlopen(BASE + "/readyz", timeout=2) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
    if time.time() > deadline:
        sys.exit("FAIL: the server did not become ready within 30 s")
    time.sleep(0.1)

# 3. A pool with everything a Crawlee session has.
POOL, BACK = "crawlee-proof", "crawlee-proof-back"
call("PUT", f"/v1/pools/{POOL}", {"max_pool_size": 0})
far = 4102444800  # 2100-01-01
call("POST", f"/v1/pools/{POOL}/sessions", {
    "id": "alice", "user_data": {"login": "alice", "profile": {"plan": "pro", "tags": ["a", "b"]}},
    "cookies": [
        {"name": "sid", "value": "abc123", "domain": "example.com", "secure": True, "http_only": True,
         "same_site": "Lax"},
        {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings"},
        {"name": "cart", "value": "3", "domain": "example.com", "path": "/cart"},
        {"name": "remember", "value": "yes", "domain": ".example.com", "expires": far, "same_site": "Strict"},
    ]})
call("POST", f"/v1/pools/{POOL}/sessions", {"id": "bob", "cookies": {"lang": "en"}, "max_age_secs": 1800.5,
                                            "max_usage_count": 20, "blocked_status_codes": [403, 429]})
call("POST", f"/v1/pools/{POOL}/sessions", {"id": "carol", "user_data": {"n": 1}, "max_error_score": 5.0,
                                            "error_score_decrement": 0.25})
call("POST", f"/v1/pools/{POOL}/sessions", {"id": "gone", "user_data": {"why": "banned"}})
for path in ["alice/mark_bad", "alice/mark_bad", "alice/mark_good", "bob/mark_good", "bob/mark_good",
             "carol/mark_bad", "carol/mark_good", "gone/mark_bad", "gone/retire"]:
    call("POST", f"/v1/pools/{POOL}/sessions/{path}")
ours = {s["id"]: s for s in call("GET", f"/v1/pools/{POOL}/sessions?limit=1000")[1]["sessions"]}
check(ours["gone"]["retired"] and ours["alice"]["is_usable"], "the pool is filled as intended")

# 4. Crawlee loads the export.
_, exported = call("GET", f"/v1/pools/{POOL}/export?format=crawlee")
model = SessionPoolModel.model_validate(exported)
print(f"  Crawlee {VERSION} loaded {len(model.sessions)} sessions: {sorted(model.sessions)}", file=sys.stderr)
check(set(model.sessions) == set(ours), f"ids: {sorted(model.sessions)} != {sorted(ours)}")
check(model.max_pool_size == 0, f"maxPoolSize {model.max_pool_size}")
check((model.session_count, model.usable_session_count, model.retired_session_count) == (4, 3, 1),
      f"Crawlee's counts {(model.session_count, model.usable_session_count, model.retired_session_count)}")
for sid, mine in ours.items():
    theirs = model.sessions.get(sid)
    if theirs is None:
        continue
    state = theirs.get_state()
    check(theirs.error_score == mine["error_score"], f"{sid}: error score {theirs.error_score} != {mine['error_score']}")
    check(theirs.usage_count == mine["usage_count"], f"{sid}: usage {theirs.usage_count} != {mine['usage_count']}")
    check(dict(theirs.user_data) == mine["user_data"], f"{sid}: user data {dict(theirs.user_data)}")
    check(theirs.is_usable == mine["is_usable"], f"{sid}: Crawlee says usable={theirs.is_usable}")
    check(state.max_age.total_seconds() == mine["max_age_secs"], f"{sid}: maxAge {state.max_age}")
    check(theirs.expires_at == ts(mine["expires_at"]), f"{sid}: expires_at {theirs.expires_at} != {mine['expires_at']}")
    check(state.max_error_score == mine["max_error_score"], f"{sid}: maxErrorScore {state.max_error_score}")
    check(state.error_score_decrement == mine["error_score_decrement"], f"{sid}: errorScoreDecrement")
    check(state.max_usage_count == mine["max_usage_count"], f"{sid}: maxUsageCount {state.max_usage_count}")
    check(sorted(state.blocked_status_codes) == sorted(mine["blocked_status_codes"]), f"{sid}: blockedStatusCodes")
    check(len(theirs.cookies) == len(mine["cookies"]), f"{sid}: {len(theirs.cookies)} cookies in Crawlee's jar")

# The Cookie header Crawlee's own jar builds, URL by URL (on the cookies' own host, where browsers,
# this service and Python's http.cookiejar agree).
expected_headers = [
    ("alice", "https://example.com/cart/checkout", "cart=3; sid=abc123; remember=yes"),
    ("alice", "https://example.com/settings/profile", "theme=dark; sid=abc123; remember=yes"),
    ("alice", "http://example.com/settings", "theme=dark; remember=yes"),
    ("alice", "http://example.org/", ""),
    ("bob", "http://anything.test/x", "lang=en"),
]
has_cookie_endpoint = True
for sid, url, want in expected_headers:
    got = model.sessions[sid].cookies.get_cookie_string(url)
    check(pairs(got) == pairs(want), f"{sid} @ {url}: Crawlee sends {got!r}, expected {want!r}")
    if has_cookie_endpoint:
        query = urllib.parse.urlencode({"url": url})
        status, answer = call("GET", f"/v1/pools/{POOL}/sessions/{sid}/cookies?{query}", expect=(200, 404, 405))
        if status != 200 or not isinstance(answer, dict) or "cookie_header" not in answer:
            has_cookie_endpoint = False
            print("  (GET .../cookies?url= not served by this build: not compared)", file=sys.stderr)
        else:
            check(pairs(answer["cookie_header"]) == pairs(got),
                  f"{sid} @ {url}: session-pool sends {answer['cookie_header']!r}, Crawlee {got!r}")
sub = model.sessions["alice"].cookies.get_cookie_string("https://www.example.com/settings")
check({"theme=dark", "remember=yes"} <= pairs(sub), f"domain cookies reach a subdomain in Crawlee: {sub!r}")
if "sid=abc123" in pairs(sub):
    print("  note: Crawlee for Python (http.cookiejar) also sends the host-only cookie sid to www.example.com;"
          " session-pool does not", file=sys.stderr)

# 5. What Crawlee itself persists comes back into session-pool.
dumped = model.model_dump(mode="json", by_alias=True)
_, answer = call("POST", f"/v1/pools/{BACK}/import", dumped)
check(answer == {"imported": 4, "skipped": []}, f"import of Crawlee's dump answered {answer}")
back = {s["id"]: s for s in call("GET", f"/v1/pools/{BACK}/sessions?limit=1000")[1]["sessions"]}
check(set(back) == set(ours), f"ids back: {sorted(back)}")
for sid, mine in ours.items():
    again = back.get(sid)
    if again is None:
        continue
    for key in ["usage_count", "error_score", "user_data", "max_age_secs", "expires_at", "max_usage_count",
                "max_error_score", "error_score_decrement", "is_usable"]:
        check(again[key] == mine[key] or (key == "expires_at" and ts(again[key]) == ts(mine[key])),
              f"{sid}: {key} came back as {again[key]!r}, was {mine[key]!r}")
    check(ts(again["created_at"]) == ts(mine["created_at"]), f"{sid}: created_at {again['created_at']}")
    key = lambda c: (c["domain"], c["path"], c["name"])
    check(sorted(again["cookies"], key=key) == sorted(mine["cookies"], key=key),
          f"{sid}: cookies came back as {again['cookies']}")
check(back["gone"]["retired"] and back["gone"]["retired_reason"] == "blocked",
      f"the retired session comes back retired: {back['gone']['retired_reason']}")

if failures:
    sys.exit(f"FAIL: {len(failures)} mismatch(es) between session-pool and Crawlee {VERSION}")
print(f"PASS: crawlee {VERSION} loaded session-pool's export of {len(ours)} sessions with SessionPoolModel."
      f"model_validate (ids, error scores, usage counts, user data, expiry and cookie headers agree), and"
      f" session-pool imported Crawlee's own dump of it back unchanged")
PY
status=$?
set -e
if [[ $status -ne 0 ]]; then
  say "the server's log:"
  tail -n 40 "$DATA_DIR/server.log" >&2 || true
  exit "$status"
fi
