#!/usr/bin/env bash
# OpenMeter's official SDKs against the real `meterlake serve`: the Python SDK
# (openmeter==1.0.0b236) ingests, survives a kill -9 and queries (tests/openmeter/sdk_test.py,
# which reads the lake back with DuckDB), then the JavaScript SDK (@openmeter/sdk from the
# npm registry) ingests and queries (tests/openmeter/sdk_test.mjs). Both are installed here.
# Usage: tests/openmeter.sh [MLK_BIN]   (default: target/debug/meterlake)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/meterlake}")
VENV=${VENV:-/tmp/meterlake-openmeter}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check openmeter==1.0.0b236 duckdb==1.4.2
"$VENV/bin/python" tests/openmeter/sdk_test.py "$BIN"

JS=${JS:-/tmp/meterlake-openmeter-js}
mkdir -p "$JS"
[ -f "$JS/package.json" ] || echo '{"name":"meterlake-openmeter-test","private":true,"type":"module"}' > "$JS/package.json"
(cd "$JS" && npm install --silent --no-audit --no-fund @openmeter/sdk@1.0.0-beta.232 >/dev/null)
cp tests/openmeter/sdk_test.mjs "$JS/"
TMP=$(mktemp -d)
trap 'kill $PID 2>/dev/null && wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
cat > "$TMP/meters.toml" <<'TOML'
[[meter]]
name = "tokens"
event = "prompt"
aggregation = "sum"
value_property = "$.usage.tokens"
group_by = { model = "$.model" }
TOML
cat > "$TMP/meterlake.toml" <<TOML
[paths]
lake = "$TMP/lake"
plans = "$PWD/data/plans.toml"
tenants = "$PWD/data/tenants.csv"
meters = "$TMP/meters.toml"
TOML
KEY=$("$BIN" serve-keys add --lake "$TMP/lake" --tenant acme-001 2>/dev/null)
"$BIN" serve --lake "$TMP/lake" --config "$TMP/meterlake.toml" --bind 127.0.0.1:0 2> "$TMP/serve.log" &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/serve.log" && break; sleep 0.1; done
BASE=$(sed -n 's/.*listening on //p' "$TMP/serve.log" | head -1)
node "$JS/sdk_test.mjs" "$BASE" "$KEY" acme-001
