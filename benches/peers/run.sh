#!/usr/bin/env bash
# Side-by-side ingest benchmark: meterlake vs DuckDB vs polars on the same NDJSON file.
# Usage: bash benches/peers/run.sh   (env: MLK_BIN, EVENTS, RUNS)
set -euo pipefail

# A relative MLK_BIN given by the caller is taken from the caller's directory.
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."          # repo root
PEERS=benches/peers
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
EVENTS="${EVENTS:-1000000}"
RUNS="${RUNS:-3}"
if [[ ! -x "$MLK_BIN" ]]; then
  echo "error: meterlake binary not found at '$MLK_BIN' (build it with 'cargo build --release' or set MLK_BIN)" >&2
  exit 1
fi

mkdir -p "$PEERS/.work"
WORK="$(mktemp -d "$PEERS/.work/run.XXXXXX")"
INPUT="$WORK/events.ndjson"

# The generator's command line (the generate CLI is still moving: adjust here).
GEN_ARGS=(generate --tenants 200 --days 30 --seed 42 --out "$INPUT")

VENV="$PEERS/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV ..." >&2
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet -r "$PEERS/requirements.txt"

echo "generating input ($EVENTS events) into $INPUT ..." >&2
if ! "$MLK_BIN" "${GEN_ARGS[@]}" --events "$EVENTS" 2>"$WORK/generate.err"; then
  echo "note: 'generate --events' failed ($(head -c 300 "$WORK/generate.err")); retrying without --events" >&2
  "$MLK_BIN" "${GEN_ARGS[@]}"
fi
echo "input: $(wc -l <"$INPUT") lines, $(du -h "$INPUT" | cut -f1)" >&2

"$VENV/bin/python" "$PEERS/peers.py" --input "$INPUT" --bin "$MLK_BIN" --runs "$RUNS" --work "$WORK"
