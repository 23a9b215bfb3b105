#!/usr/bin/env bash
# The dashboard in a real browser: runs the README's main job on data/ into $OUT, makes an
# admin key and a tenant key, starts `meterlake serve` on a free port, and drives every page
# in headless Chromium with selenium (tests/dashboard.py: sign-in, isolation, values against
# the CLI's JSON, live updates, phone width, sign-out). Screenshots stay in $OUT.
# Installs Debian's chromium and chromium-driver (apt-get) and selenium (a venv) when missing.
# Usage: tests/dashboard.sh [BINARY]   (default: target/debug/meterlake, built by `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/meterlake}
OUT=${OUT:-out/dashboard}
VENV=${VENV:-/tmp/meterlake-dashboard}
have() { command -v "$1" >/dev/null 2>&1; }
if ! have chromedriver || ! { have chromium || have chromium-browser; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "selenium==4.51.0"
fi
rm -rf "$OUT"
mkdir -p "$OUT"
LAKE="$OUT/lake"
"$BIN" run --lake "$LAKE" --out "$OUT/run" --quiet >/dev/null
ADMIN=$("$BIN" serve-keys add --lake "$LAKE" --admin 2>/dev/null | grep -o 'mlk_[0-9a-f]\{64\}')
TENANT=globex-002
TKEY=$("$BIN" serve-keys add --lake "$LAKE" --tenant "$TENANT" 2>/dev/null | grep -o 'mlk_[0-9a-f]\{64\}')
# The analytics refresh off: it has its own tests (tests/it/refresh.rs), and a whole
# refresh at start rewrites the derived tables while the pages are being checked (in a
# debug build at the lowest CPU priority it can outlast the live check's 40 s).
USAGE_ANALYTICS_INTERVAL=off "$BIN" serve --lake "$LAKE" --bind 127.0.0.1:0 --flush-ms 200 2>"$OUT/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  BASE=$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT/serve.log" | head -1 || true)
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { echo "FAIL: serve did not start"; cat "$OUT/serve.log"; exit 1; }
"$VENV/bin/python" tests/dashboard.py "$BASE" "$ADMIN" "$TKEY" "$TENANT" "$BIN" "$LAKE" "$OUT"
