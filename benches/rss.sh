#!/usr/bin/env bash
# Peak memory of `meterlake ingest` on a multi-GB NDJSON input (bounded-memory streaming).
# Usage: bash benches/rss.sh            (env: MLK_BIN, EVENTS=10000000, THEN=0, KEEP=0)
# Prints input size, wall time and the peak RSS from /usr/bin/time -v. With THEN=N, a second
# input of N generated events over the same days (another seed) is then ingested into the
# same lake: a daily ingest whose lookback window holds the whole first input's keys.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
EVENTS="${EVENTS:-10000000}"
[[ -x "$MLK_BIN" ]] || { echo "error: build first: cargo build --release (or set MLK_BIN)" >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meterlake-rss.XXXXXX")"
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
"$MLK_BIN" generate --tenants 1000 --days 30 --start 2026-09-01 --seed 7 --events "$EVENTS" --out "$WORK/big.ndjson"
ls -l "$WORK/big.ndjson" | awk '{printf "input: %.2f GB\n", $5/1e9}'
/usr/bin/time -v "$MLK_BIN" ingest "$WORK/big.ndjson" --lake "$WORK/lake" --quiet 2> "$WORK/time.txt"
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$WORK/time.txt"
awk '/Maximum resident/ {printf "peak RSS: %.0f MiB\n", $6/1024}' "$WORK/time.txt"
if [[ "${THEN:-0}" != 0 ]]; then
  "$MLK_BIN" generate --tenants 1000 --days 30 --start 2026-09-01 --seed 9 --events "$THEN" --out "$WORK/next.ndjson"
  echo "then, into that lake:"
  /usr/bin/time -v "$MLK_BIN" ingest "$WORK/next.ndjson" --lake "$WORK/lake" --quiet 2> "$WORK/time2.txt"
  grep -E "Elapsed \(wall clock\)" "$WORK/time2.txt"
  awk '/Maximum resident/ {printf "peak RSS: %.0f MiB\n", $6/1024}' "$WORK/time2.txt"
fi
