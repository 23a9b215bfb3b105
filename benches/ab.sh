#!/usr/bin/env bash
# A/B of two meterlake builds on the same ingest, runs alternating (A, B, A, B, ...) so that a
# noisy shared machine slows both alike; prints each build's median and min wall and median
# user CPU. Back-to-back medians of one build, then the other, drifted by up to 30 % here.
# Usage: bash benches/ab.sh BIN_A BIN_B [ROUNDS=11]   (env: EVENTS=1000000, INPUT=file)
set -euo pipefail
A="$1"; B="$2"; ROUNDS="${3:-11}"
for bin in "$A" "$B"; do
  [[ -x "$bin" ]] || { echo "error: not an executable: $bin" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meterlake-ab.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
INPUT="${INPUT:-}"
if [[ -z "$INPUT" ]]; then
  INPUT="$WORK/events.ndjson"
  "$A" generate --tenants 200 --days 30 --seed 42 --events "${EVENTS:-1000000}" --out "$INPUT" >/dev/null 2>&1
fi
for _ in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    rm -rf "$WORK/lake"
    /usr/bin/time -f "$bin %e %U" "$bin" ingest "$INPUT" --lake "$WORK/lake" --quiet 2>&1 >/dev/null | tail -1
  done
done | python3 -c '
import collections, statistics, sys
wall, user = collections.defaultdict(list), collections.defaultdict(list)
for line in sys.stdin:
    b, w, u = line.rsplit(None, 2)
    wall[b].append(float(w)); user[b].append(float(u))
for b in wall:
    print(f"{b}: median wall {statistics.median(wall[b]):.3f} s (min {min(wall[b]):.3f}), "
          f"median user {statistics.median(user[b]):.3f} s, {len(wall[b])} runs")
'
