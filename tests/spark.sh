#!/usr/bin/env bash
# The lake in Spark: pyspark (Spark 4, Java 17) reads meterlake's Hive-partitioned events
# and daily rollups as they are, runs the same daily rollup in Spark SQL, and compares it
# with meterlake's row for row (tests/spark/rollup.py). Skipped, saying so, only when no
# Java is installed.
# Usage: tests/spark.sh [MLK_BIN]   (default: target/debug/meterlake)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/meterlake}")
if ! command -v java > /dev/null; then
  # CI sets MLK_REQUIRE_JAVA=1: there a missing Java is a failure, not a skip.
  [ "${MLK_REQUIRE_JAVA:-0}" = 1 ] && { echo "spark: no java on PATH" >&2; exit 1; }
  echo "spark: SKIPPED: no java on PATH (Spark needs Java 17)"
  exit 0
fi
# pyspark hands timestamps to Python in the process's local time zone.
export TZ=UTC
VENV=${VENV:-/tmp/meterlake-spark}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check pyspark==4.0.1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp tests/spark/meters.toml "$TMP/meters.toml"
# 40 tenants over 21 days, with late, duplicate and malformed records as generated.
(
  cd "$TMP"
  "$BIN" generate --tenants 40 --days 21 --start 2026-09-01 --seed 5 --scale 0.2 --out events.ndjson > /dev/null
  "$BIN" ingest events.ndjson --lake lake --quiet > /dev/null
  "$BIN" rollup --lake lake --granularity day --meters meters.toml --quiet > /dev/null
)
"$VENV/bin/python" tests/spark/rollup.py "$TMP/lake" "$TMP/meters.toml"
