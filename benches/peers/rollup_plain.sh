#!/usr/bin/env bash
# The plain rollup job (day + hour, count/sum meters, 10 M events) side by side with DuckDB.
# Usage: bash benches/peers/rollup_plain.sh   (env: MLK_BIN, EVENTS=10000000, RUNS=5, WORK)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."          # repo root
PEERS=benches/peers
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
[[ -x "$MLK_BIN" ]] || { echo "error: build first: cargo build --release (or set MLK_BIN)" >&2; exit 1; }
VENV="$PEERS/.venv"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet -r "$PEERS/requirements.txt"
mkdir -p "$PEERS/.work"
# A work folder without a meters.toml, so meterlake uses its built-in meters.
WORK="${WORK:-$(mktemp -d "$PWD/$PEERS/.work/plain.XXXXXX")}"
"$VENV/bin/python" "$PEERS/rollup_plain.py" --bin "$MLK_BIN" --work "$WORK" \
  --events "${EVENTS:-10000000}" --runs "${RUNS:-5}"
