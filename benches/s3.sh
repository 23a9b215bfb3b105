#!/usr/bin/env bash
# The lake on S3 against local disk, with an S3 endpoint from moto[server] on loopback
# (a local stand-in: it measures meterlake's own cost of the mirror and the protocol, not
# a real network's latency).
# 1. Ingest of $EVENTS events into a fresh lake, local and s3://, alternated, $RUNS runs.
# 2. Day + hour rollups of that lake, local and s3:// (the writer's mirror, which holds the
#    event files it wrote), and a full day + hour rollup on a new machine: event files read
#    in the bucket by polars' cloud scans (the default), or fetched first
#    (MLK_LAKE_EVENTS=fetch), against the same full rollup on local disk; and one day's
#    usage on a new machine, scan against fetch.
# 3. Throughput of 1, 2 and 4 concurrent writers on s3://, each its own mirror (machine):
#    four inputs of $EVENTS events split among them; conflicts retried per commit; every
#    run checked to hold every event once.
#
# Usage: bash benches/s3.sh   (env: MLK_BIN, EVENTS=500000, RUNS=3, WORK, VENV)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."          # repo root
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
EVENTS="${EVENTS:-500000}"
RUNS="${RUNS:-3}"
WORK="${WORK:-$(mktemp -d)}"
[[ -x "$MLK_BIN" ]] || { echo "error: no meterlake binary at '$MLK_BIN'" >&2; exit 1; }
MOTO=
trap 'kill $MOTO 2>/dev/null || true' EXIT
source tests/s3-endpoint.sh
s3_endpoint "$WORK" bench

for s in 1 2 3 4; do
  [[ -f "$WORK/in-$s.ndjson" ]] || "$MLK_BIN" generate --tenants 200 --days 30 --start 2026-10-01 --seed "$s" \
    --events "$EVENTS" --out "$WORK/in-$s.ndjson" --quiet
done
now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" > /dev/null 2>&1; echo "$(now) - $t0" | bc -l; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
rows_of() { # LAKE [CACHE]
  MLK_LAKE_CACHE="${2:-$WORK/cache-rows}" "$MLK_BIN" lake stats --lake "$1" --output json 2> /dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"])'
}

declare -A T
for ((r = 1; r <= RUNS; r++)); do
  rm -rf "$WORK/local-$r" "$WORK/cache-$r" "$WORK/cold-$r"
  export MLK_LAKE_CACHE="$WORK/cache-$r"
  T[ingest_local]+=" $(timed "$MLK_BIN" ingest -q --lake "$WORK/local-$r" "$WORK/in-1.ndjson")"
  T[ingest_s3]+=" $(timed "$MLK_BIN" ingest -q --lake "s3://bench/run-$r" "$WORK/in-1.ndjson")"
  T[rollup_local]+=" $(timed sh -c "'$MLK_BIN' rollup -q --lake '$WORK/local-$r' --granularity day && '$MLK_BIN' rollup -q --lake '$WORK/local-$r' --granularity hour")"
  T[rollup_s3]+=" $(timed sh -c "'$MLK_BIN' rollup -q --lake s3://bench/run-$r --granularity day && '$MLK_BIN' rollup -q --lake s3://bench/run-$r --granularity hour")"
  # New machines: full rollups reading the events in the bucket, or fetching them first.
  full="'$MLK_BIN' rollup -q --full --granularity day --lake LAKE && '$MLK_BIN' rollup -q --full --granularity hour --lake LAKE"
  T[full_local]+=" $(timed sh -c "${full//LAKE/$WORK/local-$r}")"
  T[full_scan]+=" $(MLK_LAKE_CACHE="$WORK/cold-$r" timed sh -c "${full//LAKE/s3://bench/run-$r}")"
  T[full_fetch]+=" $(MLK_LAKE_EVENTS=fetch MLK_LAKE_CACHE="$WORK/coldf-$r" timed sh -c "${full//LAKE/s3://bench/run-$r}")"
  # A question about one day on a new machine: its files only (scan), or the lake (fetch).
  day="'$MLK_BIN' usage -q --from 2026-10-15 --to 2026-10-16 --output csv --lake s3://bench/run-$r"
  T[day_scan]+=" $(MLK_LAKE_CACHE="$WORK/dayc-$r" timed sh -c "$day")"
  T[day_fetch]+=" $(MLK_LAKE_EVENTS=fetch MLK_LAKE_CACHE="$WORK/dayf-$r" timed sh -c "$day")"
  rm -rf "$WORK/dayc-$r" "$WORK/dayf-$r"
  for c in cold coldf; do
    m=$(ls -d "$WORK/$c-$r"/*/lake)
    diff -r -x _lock -x '*.lock' "$m/rollups" "$WORK/local-$r/rollups" > /dev/null \
      || { echo "error: $c rollups of lake $r differ from local disk's" >&2; exit 1; }
  done
  [ "$(rows_of "s3://bench/run-$r" "$WORK/cold-$r")" = "$(rows_of "$WORK/local-$r")" ] || { echo "error: s3 lake $r differs" >&2; exit 1; }
  rm -rf "$WORK/cold-$r" "$WORK/coldf-$r"
done
unset MLK_LAKE_CACHE
echo "$EVENTS events, medians of $RUNS runs (seconds):"
printf '%-34s %8s %8s %8s\n' "" local "s3://" ratio
for k in ingest rollup; do
  l=$(median ${T[${k}_local]}); s=$(median ${T[${k}_s3]})
  printf '%-34s %8.2f %8.2f %7.2fx\n' "$k$( [ $k = rollup ] && echo ' (day + hour)')" "$l" "$s" "$(echo "$s / $l" | bc -l)"
done
for k in scan fetch; do
  l=$(median ${T[full_local]}); s=$(median ${T[full_$k]})
  printf '%-34s %8.2f %8.2f %7.2fx\n' "full rollups, new machine, $k" "$l" "$s" "$(echo "$s / $l" | bc -l)"
done
for k in scan fetch; do
  printf '%-34s %8s %8.2f\n' "one day's usage, new machine, $k" "" "$(median ${T[day_$k]})"
done

echo
echo "Concurrent writers on s3:// (each its own mirror), 4 inputs of $EVENTS events:"
printf '%-8s %-10s %-12s %-10s %-20s %s\n' writers "wall (s)" "events/s" commits "conflicts/commit" "rows in the lake"
for n in 1 2 4; do
  lake="s3://bench/writers-$n-$RANDOM"
  t0=$(now)
  pids=()
  for ((w = 0; w < n; w++)); do
    (
      for s in 1 2 3 4; do
        (( (s - 1) % n == w )) || continue
        MLK_LAKE_CACHE="$WORK/wcache-$n-$w" "$MLK_BIN" ingest --lake "$lake" "$WORK/in-$s.ndjson" > /dev/null 2>> "$WORK/w-$n-$w.err"
      done
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"   # not the endpoint's process
  t1=$(now)
  conflicts=$(cat "$WORK"/w-"$n"-*.err | grep -c "got there first" || true)
  rm -f "$WORK"/w-"$n"-*.err
  rows=$(rows_of "$lake" "$WORK/wcache-check-$n")
  wall=$(echo "$t1 - $t0" | bc -l)
  printf '%-8s %-10.2f %-12.0f %-10s %-20.2f %s\n' "$n" "$wall" "$(echo "$rows / $wall" | bc -l)" 4 "$(echo "$conflicts / 4" | bc -l)" "$rows"
done
