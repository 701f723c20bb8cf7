#!/usr/bin/env bash
# The Python client (clients/python) against the real binary: its unit tests, our port of Crawlee's
# session pool cases, Crawlee and Scrapy crawlers in several processes at once, a service restart
# mid-crawl, Crawlee's PlaywrightCrawler driving Debian's Chromium, and the measured overhead per page
# (written to target/python-client-overhead.json).
#
#   scripts/python-client.sh
#   SKIP_BUILD=1 scripts/python-client.sh      # use target/release/session-pool (or $SESSION_POOL_BIN) as it is
#   scripts/python-client.sh -k crawlee         # extra arguments go to pytest
#
# Needs: python3 >= 3.10 with venv, PyPI reachable (first run), cargo unless SKIP_BUILD=1, and a Chromium
# at $CHROMIUM_BIN (default /usr/bin/chromium; when missing, Debian's `chromium` package is installed with
# apt-get, as root or through `sudo -n`: `playwright install` would download a browser, which this suite
# does not do). A missing dependency fails the run; nothing is skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="${VENV:-target/python-client-venv}"
PYTHON="${PYTHON:-python3}"
BIN="${SESSION_POOL_BIN:-$ROOT/target/release/session-pool}"
CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

# Pinned test dependencies: the versions this suite was written and measured with.
PINS=(
  "setuptools==80.9.0"
  "crawlee[parsel,beautifulsoup,playwright]==1.11.0"
  "playwright==1.65.2"
  "browserforge==1.2.4"
  "apify-fingerprint-datapoints==0.15.0"
  "scrapy==2.13.4"
  "httpx==0.29.0"
  "pytest==9.2.0"
  "pytest-asyncio==1.5.0"
  "pyyaml==6.0.4"
  "mypy==2.4.1"
  "ruff==0.17.6"
)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "the client needs Python >= 3.10; $PYTHON is $("$PYTHON" -V 2>&1)"

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating the virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
say "installing the pinned test dependencies"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${PINS[@]}"
# Once: pip always rebuilds and reinstalls a project given as a directory, and resolving it with the pins
# checks its extras' requirements against them.
say "installing clients/python with its extras [crawlee,scrapy,test]"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet --no-build-isolation \
  "./clients/python[crawlee,scrapy,test]" "${PINS[@]}"
"$VENV/bin/python" -m pip check >/dev/null || die "the virtualenv's dependencies conflict: $("$VENV/bin/python" -m pip check)"

# PlaywrightCrawler's browser: Playwright launches this executable (its own downloads are not used).
if [[ ! -x "$CHROMIUM_BIN" ]]; then
  [[ "$CHROMIUM_BIN" == /usr/bin/chromium ]] || die "CHROMIUM_BIN=$CHROMIUM_BIN is not an executable"
  bash scripts/apt-install.sh chromium || die "Debian's chromium is needed for PlaywrightCrawler"
  [[ -x "$CHROMIUM_BIN" ]] || die "the chromium package did not install $CHROMIUM_BIN"
fi
"$CHROMIUM_BIN" --version >/dev/null 2>&1 || die "$CHROMIUM_BIN does not run: $("$CHROMIUM_BIN" --version 2>&1 | tail -3)"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  say "cargo build --release --locked"
  cargo build --release --locked --quiet --bin session-pool
fi
[[ -x "$BIN" ]] || die "$BIN is missing (run cargo build --release)"

cd clients/python
say "ruff and mypy: the package ships py.typed, so its types must hold"
"$ROOT/$VENV/bin/ruff" check --no-cache --select F,E9,B,UP --line-length 130 src tests
"$ROOT/$VENV/bin/mypy" --no-incremental --ignore-missing-imports src/session_pool_client

say "pytest clients/python/tests"
export SESSION_POOL_BIN="$BIN" CHROMIUM_BIN
unset SESSION_POOL_URL SESSION_POOL_API_KEY
exec "$ROOT/$VENV/bin/python" -m pytest -p no:cacheprovider -q -rA --durations=8 tests "$@"
