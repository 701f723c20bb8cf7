#!/usr/bin/env bash
# The core bench's 1M/1k ratio over several byte-identical copies of its binary.
#
# On the development VM the same bench binary runs acquire + mark_good at 1M sessions in about 39 ns
# or about 46 ns depending on where its file lands in memory (at 1k both give about 35 ns), and a file
# keeps its group for minutes. One run of `cargo bench` therefore measures one draw. This builds the
# bench once, copies its binary COPIES times (each copy is a new file, so a new draw) and runs the
# acquire + mark_good bench at 1k and 1M in each, then prints every copy's figures, the median ratio
# and the lowest.
#
#   scripts/core-bench-copies.sh
#   COPIES=10 scripts/core-bench-copies.sh
#
# Environment: COPIES [6]. Needs cargo and awk; the copies go to a temporary directory, removed at
# the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

COPIES="${COPIES:-6}"
case "$COPIES" in
    '' | *[!0-9]* | 0) echo "core-bench-copies: COPIES must be a positive integer" >&2; exit 2 ;;
esac

binary=$(cargo bench --bench core --no-run 2>&1 | sed -n 's/.*Executable benches\/core.rs (\(.*\))$/\1/p' | tail -n 1)
[ -n "$binary" ] && [ -x "$binary" ] || { echo "core-bench-copies: could not find the bench binary" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Criterion prints "acquire_mark_good/1000  time: [low estimate high]" (the 1M name on a line of its
# own); this prints "<1k estimate> <1M estimate>" in ns.
figures() {
    "$1" --bench 'acquire_mark_good/(1000|1000000)$' --noplot --discard-baseline 2>&1 |
        awk '/^acquire_mark_good\// { split($1, name, "/"); size = name[2] }
             /time: +\[/ && size != "" && $0 !~ /%/ {
                 for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { ns[size] = $(i + 2); break }
                 size = "" }
             END { print ns["1000"], ns["1000000"] }'
}

ratios=()
printf '%-6s %10s %10s %8s\n' copy '1k ns' '1M ns' '1M/1k'
for i in $(seq 1 "$COPIES"); do
    cp "$binary" "$work/core.$i"
    read -r small big < <(figures "$work/core.$i")
    [ -n "$small" ] && [ -n "$big" ] || { echo "core-bench-copies: copy $i printed no figures" >&2; exit 1; }
    ratio=$(awk -v s="$small" -v b="$big" 'BEGIN { printf "%.1f", s / b * 100 }')
    ratios+=("$ratio")
    printf '%-6s %10s %10s %7s%%\n' "$i" "$small" "$big" "$ratio"
done

printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
    median = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
    printf "median 1M/1k over %d copies: %.1f%%, lowest %.1f%%, highest %.1f%%\n", NR, median, r[1], r[NR] }'
