#!/usr/bin/env bash
# Encryption at rest against other readers: `meterlake run` on data/ with a key, then
# DuckDB 2.0 (PRAGMA add_parquet_key + encryption_config; 1.4.2 rejects the base64 key
# with "Computed AES tag differs") and pyarrow (>= 25,
# create_decryption_properties) read the encrypted lake with the same key file and find
# the rows of a plain run; without the key both fail (tests/encryption/readers.py).
# Usage: tests/encryption.sh [MLK_BIN]   (default: target/debug/meterlake)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/meterlake}")
VENV=${VENV:-/tmp/meterlake-encryption}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check duckdb==2.0.1 pyarrow==26.0.1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
openssl rand -base64 32 > "$TMP/lake.key"
MLK_ENCRYPTION_KEY_FILE="$TMP/lake.key" "$BIN" run --lake "$TMP/enc" --out "$TMP/enc-out" --quiet > /dev/null
"$BIN" ingest data/events --lake "$TMP/plain" --quiet > /dev/null
"$VENV/bin/python" tests/encryption/readers.py "$TMP/lake.key" "$TMP/enc" "$TMP/plain" "$TMP/enc-out"
