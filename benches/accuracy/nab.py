#!/usr/bin/env python3
"""NAB score of `meterlake detect` on a Numenta Anomaly Benchmark folder (data/ + labels/).

Scoring (NAB's standard profile, from the NAB paper and numenta/NAB's sweeper):
- each labelled window counts once: its earliest detection scores
  A_TP * sigma(y) / sigma(-1), where y is the detection's position relative to the window's
  right end (-1 at the start, 0 at the end) and sigma(y) = 2 / (1 + e^{5y}) - 1;
  a window with no detection scores -A_FN;
- a detection outside every window scores A_FP * sigma(y), y the distance past the
  preceding window's end in window widths (-1 before any window), so a detection just
  after a window costs little and a far one the full A_FP;
- the first min(15 %, 750) rows of each file are probationary: not scored;
- A_TP = 1, A_FP = -0.11, A_FN = -1; score = 100 (S - S_null) / (S_perfect - S_null), where
  null detects nothing and perfect detects each window at its first row.

Prints the score, windows detected, false positives, and the false positives per detector
(the strongest detector at each flagged point), so a change can be traced to a detector.

usage: nab.py BIN NAB_DIR [detect args...]
"""
import collections, json, math, os, subprocess, sys, tempfile
import pandas as pd

binary, nab, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
A_TP, A_FP, A_FN = 1.0, -0.11, -1.0


def sigma(y):
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


windows = json.load(open(os.path.join(nab, "labels", "combined_windows.json")))
files = {}
for key in sorted(windows):
    df = pd.read_csv(os.path.join(nab, "data", key), parse_dates=["timestamp"])
    files[key] = df
with tempfile.TemporaryDirectory() as d:
    inp, out = os.path.join(d, "series.csv"), os.path.join(d, "flags.csv")
    pd.concat([pd.DataFrame({"series_id": k, "ts": f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "value": f["value"]}) for k, f in files.items()]).to_csv(inp, index=False)
    r = subprocess.run([binary, "detect", "--series", inp, "--out", out, "--output", "json"] + extra,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit("detect failed: " + r.stderr[-500:])
    flags = pd.read_csv(out)
flags["ts"] = pd.to_datetime(flags["ts"], utc=True).dt.tz_localize(None)

S = S_null = S_perfect = 0.0
detected = fps = 0
fp_by = collections.Counter()
per_file = {}
for key, df in files.items():
    ts = df["timestamp"].tolist()
    n = len(ts)
    prob = min(math.floor(0.15 * n), 750)
    wins = []
    for a, b in windows[key]:
        a, b = pd.Timestamp(a), pd.Timestamp(b)
        rows = [i for i, t in enumerate(ts) if a <= t <= b]
        wins.append((rows[0], rows[-1]))
    f = flags[flags["series_id"] == key]
    # Row indices flagged (a timestamp repeated in the file maps to its first row).
    first_row = {}
    for i, t in enumerate(ts):
        first_row.setdefault(t, i)
    hits = sorted({(first_row[t], det) for t, det in zip(f["ts"], f["detector"]) if t in first_row})
    hit_rows = {}
    for i, det in hits:
        hit_rows.setdefault(i, det)
    s = 0.0
    for i in sorted(hit_rows):
        if i < prob:
            continue
        inside = [w for w in wins if w[0] <= i <= w[1]]
        if inside:
            continue
        before = [w for w in wins if w[1] < i]
        if before:
            # Distance past the preceding window, in its widths (NAB: / (width - 1)).
            w = before[-1]
            y = (i - w[1]) / max(w[1] - w[0], 1)
            s += A_FP * abs(sigma(y))
        else:
            s += A_FP
        fps += 1
        fp_by[hit_rows[i]] += 1
    for w in wins:
        S_null += A_FN
        S_perfect += A_TP
        first = next((i for i in sorted(hit_rows) if w[0] <= i <= w[1] and i >= prob), None)
        if first is None:
            s += A_FN
        else:
            width = w[1] - w[0] + 1
            y = -(w[1] - first + 1) / width
            s += A_TP * sigma(y) / sigma(-1.0)
            detected += 1
    S += s
    per_file[key] = round(s, 3)
score = 100 * (S - S_null) / (S_perfect - S_null)
print(json.dumps({"score": round(score, 1), "windows": int(S_perfect), "detected": detected,
                  "false_positives": fps, "false_positives_by_detector": dict(fp_by.most_common()),
                  "per_file": per_file}, indent=1))
