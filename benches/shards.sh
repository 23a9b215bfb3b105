#!/usr/bin/env bash
# How sharded stages split the work: the 1,000-tenant lake's hour rollup, daily forecasts
# and hourly detection run as N workers (`--shard I/N`) for each N in $SHARDS.
#
# For each N, every worker runs alone, one after another, on a fresh copy of the lake (no
# derived tables): its wall time is the work one worker does, what N machines would each
# spend. Then the N workers run at once on this machine (2 cores here), for the wall time
# of a one-machine run.
#
# Usage: bash benches/shards.sh   (env: MLK_BIN, SHARDS="1 2 4", WORK)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."          # repo root
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
SHARDS="${SHARDS:-1 2 4}"
WORK="${WORK:-$(mktemp -d)}"
if [[ ! -x "$MLK_BIN" ]]; then
  echo "error: meterlake binary not found at '$MLK_BIN' (cargo build --release, or set MLK_BIN)" >&2
  exit 1
fi
METERS="$PWD/data/meters.toml"

if [[ ! -d "$WORK/lake" ]]; then
  echo "generating and ingesting the 1,000-tenant lake into $WORK ..." >&2
  "$MLK_BIN" generate --tenants 1000 --days 90 --start 2026-07-01 --seed 3 --scale 0.02 \
    --out "$WORK/events.ndjson" --quiet
  "$MLK_BIN" ingest -q --lake "$WORK/lake" "$WORK/events.ndjson" >/dev/null
  rm -f "$WORK/events.ndjson"
fi

# The stages one worker runs, in order.
stages() { # LAKE SHARD
  "$MLK_BIN" rollup --lake "$1" --granularity hour --meters "$METERS" --shard "$2" >/dev/null
  "$MLK_BIN" forecast --lake "$1" --horizon 14 --meters "$METERS" --shard "$2" >/dev/null
  "$MLK_BIN" detect --lake "$1" --meters "$METERS" --shard "$2" >/dev/null
}

now() { date +%s.%N; }
fresh() { rm -rf "$WORK/copy"; cp -r "$WORK/lake" "$WORK/copy"; }

printf '%-3s %-34s %-14s %s\n' N "each worker alone (s)" "max / total" "all N at once on this machine (s)"
for n in $SHARDS; do
  fresh
  times=()
  for ((i = 0; i < n; i++)); do
    t0=$(now); stages "$WORK/copy" "$i/$n"; t1=$(now)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  fresh
  t0=$(now)
  for ((i = 0; i < n; i++)); do stages "$WORK/copy" "$i/$n" & done
  wait
  t1=$(now)
  at_once=$(echo "$t1 - $t0" | bc -l)
  list=$(printf '%.1f ' "${times[@]}")
  max=$(printf '%s\n' "${times[@]}" | sort -g | tail -1)
  total=$(printf '%s\n' "${times[@]}" | paste -sd+ | bc -l)
  printf '%-3s %-34s %-14s %.1f\n' "$n" "$list" "$(printf '%.1f / %.1f' "$max" "$total")" "$at_once"
done
rm -rf "$WORK/copy"
