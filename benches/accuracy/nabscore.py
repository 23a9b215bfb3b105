"""NAB scoring (standard profile) of `meterlake detect` flags, shared by nab.py and loco.py.

Scoring (from the NAB paper and numenta/NAB's sweeper):
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
"""
import collections, json, math, os, subprocess, tempfile
import pandas as pd

A_TP, A_FP, A_FN = 1.0, -0.11, -1.0


def sigma(y):
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def load(nab):
    """The labelled windows and every file's frame, keyed `category/file.csv`."""
    windows = json.load(open(os.path.join(nab, "labels", "combined_windows.json")))
    files = {k: pd.read_csv(os.path.join(nab, "data", k), parse_dates=["timestamp"])
             for k in sorted(windows)}
    return windows, files


def category(key):
    return key.split("/")[0]


def write_series(files, path):
    pd.concat([pd.DataFrame({"series_id": k, "ts": f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "value": f["value"]}) for k, f in files.items()]).to_csv(path, index=False)


def detect(binary, series_csv, extra):
    """Runs `detect --series` with `extra` args: the reported flags (series_id, ts, detector)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "flags.csv")
        r = subprocess.run([binary, "detect", "--series", series_csv, "--out", out, "--output", "json"]
                           + list(extra), capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("detect failed: " + r.stderr[-500:])
        flags = pd.read_csv(out)
    flags["ts"] = pd.to_datetime(flags["ts"], utc=True).dt.tz_localize(None)
    return flags


def score_files(files, windows, flags):
    """Per file: raw score s, null and perfect scores, windows detected, false positives and
    the detector of each false positive."""
    by_file = {k: g for k, g in flags.groupby("series_id")}
    out = {}
    for key, df in files.items():
        ts = df["timestamp"].tolist()
        n = len(ts)
        prob = min(math.floor(0.15 * n), 750)
        wins = []
        for a, b in windows[key]:
            a, b = pd.Timestamp(a), pd.Timestamp(b)
            rows = [i for i, t in enumerate(ts) if a <= t <= b]
            wins.append((rows[0], rows[-1]))
        f = by_file.get(key, flags.iloc[0:0])
        first_row = {}
        for i, t in enumerate(ts):
            first_row.setdefault(t, i)
        hit_rows = {}
        for i, det in sorted({(first_row[t], det) for t, det in zip(f["ts"], f["detector"]) if t in first_row}):
            hit_rows.setdefault(i, det)
        s, fps, fp_by, detected = 0.0, 0, collections.Counter(), 0
        for i in sorted(hit_rows):
            if i < prob or any(w[0] <= i <= w[1] for w in wins):
                continue
            before = [w for w in wins if w[1] < i]
            if before:
                w = before[-1]
                s += A_FP * abs(sigma((i - w[1]) / max(w[1] - w[0], 1)))
            else:
                s += A_FP
            fps += 1
            fp_by[hit_rows[i]] += 1
        for w in wins:
            first = next((i for i in sorted(hit_rows) if w[0] <= i <= w[1] and i >= prob), None)
            if first is None:
                s += A_FN
            else:
                width = w[1] - w[0] + 1
                s += A_TP * sigma(-(w[1] - first + 1) / width) / sigma(-1.0)
                detected += 1
        out[key] = {"s": s, "null": A_FN * len(wins), "perfect": A_TP * len(wins),
                    "detected": detected, "windows": len(wins), "fps": fps, "fp_by": fp_by}
    return out


def normalised(per_file, keys):
    """NAB's normalised score over the files `keys` (None when they hold no window)."""
    S = sum(per_file[k]["s"] for k in keys)
    null = sum(per_file[k]["null"] for k in keys)
    perfect = sum(per_file[k]["perfect"] for k in keys)
    return None if perfect == null else 100 * (S - null) / (perfect - null)
