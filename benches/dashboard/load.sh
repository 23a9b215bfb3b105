#!/usr/bin/env bash
# Dashboard load times in headless Chromium on a generated lake of 1,000 tenants × 90 days,
# after `meterlake run`: every page's navigation start to load event end, for an admin (all
# tenants, and one tenant picked) and for a tenant key, over the default period (the 30
# days to now, wall clock) and over the lake's last full month. Each page is timed on its
# first view after the server started (built then: "cold") and on the next (kept: "warm").
# Usage: benches/dashboard/load.sh [BINARY] [WORKDIR]
#   BINARY  default target/release/meterlake; WORKDIR default /tmp/meterlake-dashload (the
#   lake is generated there once, then reused).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/release/meterlake}")
WORK=${2:-/tmp/meterlake-dashload}
VENV=${VENV:-/tmp/meterlake-dashboard}
ROOT=$PWD
have() { command -v "$1" >/dev/null 2>&1; }
if ! have chromedriver || ! { have chromium || have chromium-browser; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "selenium==4.51.0"
fi
mkdir -p "$WORK"
cd "$WORK"
if [ ! -f .lake-ready ]; then
  rm -rf lake out
  "$BIN" generate -q --tenants 1000 --days 90 --start 2026-07-01 --seed 3 --scale 0.02 \
    --tenants-out tenants.csv --out events.ndjson
  "$BIN" run -q --input events.ndjson --lake lake --out out --plans "$ROOT/data/plans.toml" \
    --tenants tenants.csv
  rm -f events.ndjson
  touch .lake-ready
fi
printf '[paths]\nlake = "lake"\nplans = "%s/data/plans.toml"\ntenants = "tenants.csv"\n' "$ROOT" > meterlake.toml
ADMIN=$("$BIN" serve-keys add --lake lake --admin 2>/dev/null | grep -o 'mlk_[0-9a-f]\{64\}')
TENANT=acme-001
TKEY=$("$BIN" serve-keys add --lake lake --tenant "$TENANT" 2>/dev/null | grep -o 'mlk_[0-9a-f]\{64\}')
"$BIN" serve --lake lake --config meterlake.toml --bind 127.0.0.1:0 2>serve.log &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  BASE=$(grep -o 'http://127.0.0.1:[0-9]*' serve.log | head -1 || true)
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { echo "serve did not start"; cat serve.log; exit 1; }
# Wait until ready (counters measured), so the first page does not wait for that.
for _ in $(seq 1 600); do
  [ "$(curl -s "$BASE/readyz" || true)" = ready ] && break
  sleep 0.2
done
"$VENV/bin/python" "$ROOT/benches/dashboard/load.py" "$BASE" "$ADMIN" "$TKEY" "$TENANT" 2026-09
