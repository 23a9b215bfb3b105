#!/usr/bin/env bash
# The cost of encryption at rest: ingest (NDJSON -> ZSTD Parquet) and full day + hour rollups
# on an encrypted lake against a plain one, same build, same input, runs alternating
# (plain, encrypted, plain, ...) so a noisy machine slows both alike. Prints the median wall
# time of each and the ratio encrypted / plain.
# Usage: bash benches/encryption.sh [BIN=target/release/meterlake] [ROUNDS=5]
#        (env: EVENTS=2000000, INPUT=an NDJSON file instead of a generated one)
set -euo pipefail
BIN="$(realpath "${1:-target/release/meterlake}")"; ROUNDS="${2:-5}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meterlake-enc.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
openssl rand -base64 32 > "$WORK/lake.key"
INPUT="${INPUT:-}"
if [[ -z "$INPUT" ]]; then
  INPUT="$WORK/events.ndjson"
  "$BIN" generate --tenants 200 --days 30 --seed 42 --events "${EVENTS:-2000000}" --out "$INPUT" >/dev/null 2>&1
fi
# Run from an empty folder: no data/meterlake.toml, so only MLK_ENCRYPTION_KEY_FILE decides.
cd "$WORK"
for _ in $(seq "$ROUNDS"); do
  for mode in plain encrypted; do
    key=""; [[ $mode == encrypted ]] && key="$WORK/lake.key"
    rm -rf "$WORK/lake-$mode"
    /usr/bin/time -f "ingest $mode %e" env MLK_ENCRYPTION_KEY_FILE="$key" \
      "$BIN" ingest "$INPUT" --lake "$WORK/lake-$mode" --quiet 2>&1 >/dev/null | tail -1
    for g in day hour; do
      /usr/bin/time -f "rollup-$g $mode %e" env MLK_ENCRYPTION_KEY_FILE="$key" \
        "$BIN" rollup --lake "$WORK/lake-$mode" --granularity "$g" --full 2>&1 >/dev/null | tail -1
    done
  done
done | python3 -c '
import collections, statistics, sys
t = collections.defaultdict(list)
for line in sys.stdin:
    what, mode, s = line.split()
    t[(what, mode)].append(float(s))
for what in dict.fromkeys(w for w, _ in t):
    p, e = statistics.median(t[(what, "plain")]), statistics.median(t[(what, "encrypted")])
    n = len(t[(what, "plain")])
    print(f"{what:12} plain {p:7.3f} s  encrypted {e:7.3f} s  ratio {e / p:.2f}  ({n} runs each)")
'
