#!/usr/bin/env bash
# Side-by-side rollup benchmark: meterlake vs DuckDB on the same lake of Parquet files.
# Usage: bash benches/peers/rollup.sh   (env: MLK_BIN, EVENTS=20000000, RUNS=3, LAKE=reuse a lake)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
if [[ -n "${LAKE:-}" && "$LAKE" != /* ]]; then LAKE="$PWD/$LAKE"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."          # repo root
PEERS=benches/peers
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
EVENTS="${EVENTS:-20000000}"
RUNS="${RUNS:-3}"
[[ -x "$MLK_BIN" ]] || { echo "error: build first: cargo build --release (or set MLK_BIN)" >&2; exit 1; }

VENV="$PEERS/.venv"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet -r "$PEERS/requirements.txt"

mkdir -p "$PEERS/.work"
if [[ -z "${LAKE:-}" ]]; then
  WORK="$(mktemp -d "$PWD/$PEERS/.work/rollup.XXXXXX")"
  LAKE="$WORK/lake"
  echo "generating $EVENTS events (1000 tenants, 90 days) and ingesting them into $LAKE ..." >&2
  "$MLK_BIN" generate --tenants 1000 --days 90 --start 2026-07-01 --seed 7 --events "$EVENTS" \
    --out "$WORK/events.ndjson" --quiet
  "$MLK_BIN" ingest "$WORK/events.ndjson" --lake "$LAKE" --quiet
  rm -f "$WORK/events.ndjson"
else
  WORK="$(mktemp -d "$PWD/$PEERS/.work/rollup.XXXXXX")"
fi
"$MLK_BIN" lake stats --lake "$LAKE" | head -8 >&2
"$VENV/bin/python" "$PEERS/rollup.py" --lake "$LAKE" --bin "$MLK_BIN" --runs "$RUNS" --work "$WORK"
