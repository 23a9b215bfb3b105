#!/usr/bin/env bash
# Checks reports as a person sees them: every HTML report is rendered by headless Chromium
# (the screenshots are kept in $OUT for a human to look at), every PDF is read back with
# pdftotext and must show its title, its figures and every tenant of the summary.
# Installs Debian's chromium and poppler-utils with apt-get when they are missing.
# Usage: tests/visual.sh [BINARY]   (default: target/debug/meterlake, built by `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/meterlake}
OUT=${OUT:-out/visual}
have() { command -v "$1" >/dev/null 2>&1; }
if ! have pdftotext || ! { have chromium || have chromium-browser; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium poppler-utils >/dev/null
fi
CHROME=$(command -v chromium || command -v chromium-browser)
rm -rf "$OUT"
mkdir -p "$OUT"
"$BIN" run --lake "$OUT/lake" --out "$OUT" --quiet --formats json,html,pdf >/dev/null
fail=0
for kind in summary detailed forecast anomaly executive compliance; do
  html="$OUT/reports/$kind/$kind.html" pdf="$OUT/reports/$kind/$kind.pdf" png="$OUT/$kind.png"
  "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,3000 \
    --screenshot="$png" "file://$PWD/$html" >/dev/null 2>&1
  # A blank page compresses to a few kB; a rendered report with tables and charts does not.
  size=$(stat -c %s "$png" 2>/dev/null || echo 0)
  if [ "$size" -lt 30000 ]; then echo "FAIL $kind: screenshot $png is $size bytes (blank?)"; fail=1; fi
  pdftotext -layout "$pdf" "$OUT/$kind.txt"
  # The title and every headline figure of the JSON must be readable in the PDF.
  python3 - "$OUT/reports/$kind/$kind.json" "$OUT/$kind.txt" <<'PY' || fail=1
import json, sys
report = json.load(open(sys.argv[1]))
text = " ".join(open(sys.argv[2]).read().split())
missing = [report["title"]] if report["title"] not in text else []
missing += [f["label"] for f in report["figures"] if f["label"] not in text or f["value"] not in text]
# The insights listed at the top read in full, symbols spelled as the standard fonts can.
spell = {"→": "->", "≥": ">=", "≤": "<=", "−": "-"}
for i in report.get("insights", [])[:15]:
    m = " ".join(i["message"].split())
    for k, v in spell.items():
        m = m.replace(k, v)
    if m not in text:
        missing.append(m)
if report["kind"] == "summary":
    missing += [t["tenant_id"] for t in report["tables"]["tenants"] if t["tenant_id"] not in text]
if missing:
    print(f"FAIL {report['kind']}: not in the PDF text: {missing[:5]}")
    sys.exit(1)
print(f"ok   {report['kind']}: PDF text has the title, {len(report['figures'])} figures" +
      (f" and {len(report['tables']['tenants'])} tenants" if report["kind"] == "summary" else ""))
PY
done
[ "$fail" = 0 ] && echo "visual checks passed; screenshots in $OUT/*.png"
exit "$fail"
