#!/usr/bin/env bash
# Alert notifications end to end: runs the README's main job on data/ into $OUT (which
# raises alerts into the lake's alert store), then tests/notify.py starts a local SMTP
# server (aiosmtpd: STARTTLS and AUTH required, a trustme certificate) and a local Slack
# incoming-webhook receiver, and drives `meterlake alerts deliver --config ... --at ...`
# through first notification, rerun, acknowledgement, escalation, digest, quiet hours and
# a failed login retried. Everything it writes stays in $OUT.
# Installs aiosmtpd and trustme (a venv) when missing.
# Usage: tests/notify.sh [BINARY]   (default: target/debug/meterlake, built by `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/meterlake}
OUT=${OUT:-out/notify}
VENV=${VENV:-/tmp/meterlake-notify}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import aiosmtpd, trustme" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "aiosmtpd==1.4.6" "trustme==1.2.1"
fi
rm -rf "$OUT"
mkdir -p "$OUT"
"$BIN" run --lake "$OUT/lake" --out "$OUT/run" --quiet >/dev/null
exec "$VENV/bin/python" tests/notify.py "$BIN" "$OUT"
