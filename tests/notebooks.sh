#!/usr/bin/env bash
# Executes every notebook headless (nbclient) against the output of `meterlake run`, so the
# notebooks never rot. The executed copies (with their plots) are kept in OUT/notebooks/.
# Usage: tests/notebooks.sh [OUT]   (default: out/visual, written by tests/visual.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/visual}
VENV=${VENV:-/tmp/meterlake-notebooks}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r notebooks/requirements.txt
export MLK_OUT="$PWD/$OUT"
mkdir -p "$OUT/notebooks"
for nb in notebooks/*.ipynb; do
  "$VENV/bin/python" - "$nb" "$OUT/notebooks" <<'PY'
import os, sys, nbformat
from nbclient import NotebookClient
path, dest = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": os.path.dirname(path)}}).execute()
nbformat.write(nb, os.path.join(dest, os.path.basename(path)))
print(f"ok   {path}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells executed")
PY
done
