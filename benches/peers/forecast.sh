#!/usr/bin/env bash
# meterlake vs statsforecast on the same daily series (same models, 2 cores, accuracy too).
# Usage: bash benches/peers/forecast.sh   (env: MLK_BIN, SERIES="10000 100000", MODELS=ses,holt,...)
set -euo pipefail
if [[ -n "${MLK_BIN:-}" && "$MLK_BIN" != /* && -e "$MLK_BIN" ]]; then MLK_BIN="$PWD/$MLK_BIN"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PEERS=benches/peers
MLK_BIN="${MLK_BIN:-target/release/meterlake}"
[[ -x "$MLK_BIN" ]] || { echo "error: build first: cargo build --release (or set MLK_BIN)" >&2; exit 1; }
VENV="$PEERS/.venv"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet -r "$PEERS/requirements.txt" statsforecast==2.1.1
for n in ${SERIES:-10000 100000}; do
  "$VENV/bin/python" "$PEERS/forecast.py" --bin "$MLK_BIN" --series "$n" --work "$PEERS/.work" ${MODELS:+--models "$MODELS"}
  echo
done
