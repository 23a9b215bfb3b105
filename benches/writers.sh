#!/usr/bin/env bash
# Ingest throughput with 1, 2 and 4 writer processes on one local lake: four inputs of
# $EVENTS events each (distinct seeds), split among the writers, on a fresh lake per run.
# Writers take turns on the lake's lock, so the figure shows what concurrency costs or
# gains; every run is checked to hold every event once (the lake's row count).
#
# Usage: bash benches/writers.sh   (env: MLK_BIN, EVENTS=500000, WORK)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."          # repo root
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
EVENTS="${EVENTS:-500000}"
WORK="${WORK:-$(mktemp -d)}"
[[ -x "$MLK_BIN" ]] || { echo "error: no meterlake binary at '$MLK_BIN'" >&2; exit 1; }

for s in 1 2 3 4; do
  [[ -f "$WORK/in-$s.ndjson" ]] || "$MLK_BIN" generate --tenants 200 --days 30 --seed "$s" \
    --events "$EVENTS" --out "$WORK/in-$s.ndjson" --quiet
done
now() { date +%s.%N; }
printf '%-8s %-10s %-12s %s\n' writers "wall (s)" "events/s" "rows in the lake"
for n in 1 2 4; do
  rm -rf "$WORK/lake"
  t0=$(now)
  for ((w = 0; w < n; w++)); do
    files=()
    for s in 1 2 3 4; do (( (s - 1) % n == w )) && files+=("$WORK/in-$s.ndjson"); done
    "$MLK_BIN" ingest -q --lake "$WORK/lake" "${files[@]}" >/dev/null &
  done
  wait
  t1=$(now)
  rows=$("$MLK_BIN" lake stats --lake "$WORK/lake" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"])')
  wall=$(echo "$t1 - $t0" | bc -l)
  printf '%-8s %-10.2f %-12.0f %s\n' "$n" "$wall" "$(echo "$rows / $wall" | bc -l)" "$rows"
done
