#!/usr/bin/env bash
# Installs Debian packages for a script that needs them: as root, or through `sudo -n` (never waits for
# a password), without questions, refreshing the package lists only when the first try fails. Exits
# non-zero, saying which packages, when they cannot be installed.
#
#   bash scripts/apt-install.sh wrk curl
set -euo pipefail

(( $# > 0 )) || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
command -v apt-get >/dev/null 2>&1 || { echo "cannot install $*: no apt-get here" >&2; exit 1; }
if [[ "$(id -u)" == 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "cannot install $*: needs root or sudo" >&2
  exit 1
fi
echo "==> installing $* with apt-get" >&2
install() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
install "$@" || { "${as_root[@]}" apt-get update -qq && install "$@"; } || { echo "apt-get could not install $*" >&2; exit 1; }
