#!/usr/bin/env python3
"""Forecast accuracy of `meterlake forecast` on public data, per model and for auto.

  evaluate.py m4 BIN TRAIN TEST [--h 13] [--m 1]
      M4-style holdout (train/test in long format): sMAPE and MASE (seasonal period m, as in
      the M4 guide) averaged over series.
  evaluate.py rolling BIN CSV [--h 30] [--origins 12] [--every 60] [--m 7]
      Rolling-origin evaluation of one daily series (columns ds, y: Prophet's example
      format): each origin becomes one series cut there; forecasts of the next h days are
      scored, MASE scaled by the in-sample seasonal difference (lag m).

Needs numpy and pandas. Prints a Markdown table, best first.
"""
import argparse, os, subprocess, sys, tempfile, time
import numpy as np, pandas as pd

MODELS = ["auto", "naive", "seasonal_naive", "moving_average", "seasonal_moving_average",
          "ses", "holt", "holt_damped", "holt_winters", "holt_winters_mul", "ses_seasonal_mul", "linear"]


def smape(y, f):
    d = np.abs(y) + np.abs(f)
    return np.mean(np.where(d > 0, 200 * np.abs(y - f) / np.where(d > 0, d, 1), 0))


def scale(y, m):
    y = np.asarray(y, float)
    d = np.abs(y[m:] - y[:-m]) if len(y) > m else np.abs(np.diff(y))
    s = d.mean() if len(d) else np.nan
    return s if s > 0 else np.nan


def run(binary, train_csv, h, model, season):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "fc.csv")
        cmd = [binary, "forecast", "--series", train_csv, "--horizon", str(h), "--model", model, "--out", out]
        if season > 1:
            cmd += ["--season-length", str(season)]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t
        if r.returncode:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
        fc = pd.read_csv(out)
    fc["series_id"] = fc["series_id"].astype(str)
    return {sid: g.sort_values("ts")["yhat"].to_numpy() for sid, g in fc.groupby("series_id")}, secs


def table(rows):
    rows.sort(key=lambda r: r[1])
    print("| model | sMAPE | MASE | seconds |\n|---|---|---|---|")
    for name, s, m, secs in rows:
        print(f"| {name} | {s:.3f} | {m:.3f} | {secs:.2f} |")


def m4(a):
    train, test = pd.read_csv(a.train), pd.read_csv(a.test)
    for df in (train, test):
        df["series_id"] = df["series_id"].astype(str)
    scales = {sid: scale(g["value"].to_numpy(), a.m) for sid, g in train.groupby("series_id")}
    actual = {sid: g["value"].to_numpy()[: a.h] for sid, g in test.groupby("series_id")}
    rows = []
    for model in MODELS:
        fc, secs = run(a.bin, a.train, a.h, model, a.m)
        sm = [smape(y, fc[s][: len(y)]) for s, y in actual.items()]
        ms = [np.mean(np.abs(y - fc[s][: len(y)])) / scales[s] for s, y in actual.items() if np.isfinite(scales[s])]
        rows.append((model, float(np.mean(sm)), float(np.mean(ms)), secs))
    table(rows)


def rolling(a):
    # Missing days are interpolated here, so origins are the same whatever the tool.
    df = pd.read_csv(a.csv).dropna()
    s = df.set_index(pd.to_datetime(df["ds"]))["y"].asfreq("D").interpolate()
    y, ds = s.to_numpy(float), s.index.strftime("%Y-%m-%d").to_numpy()
    n = len(y)
    origins = [n - a.h - k * a.every for k in range(a.origins)][::-1]
    with tempfile.TemporaryDirectory() as d:
        train_csv = os.path.join(d, "train.csv")
        parts = [pd.DataFrame({"series_id": f"o{o}", "ts": ds[:o], "value": y[:o]}) for o in origins]
        pd.concat(parts).to_csv(train_csv, index=False)
        rows = []
        for model in MODELS:
            fc, secs = run(a.bin, train_csv, a.h, model, a.m)
            sm, ms = [], []
            for o in origins:
                act, f = y[o:o + a.h], fc[f"o{o}"][: a.h]
                sm.append(smape(act, f))
                ms.append(np.mean(np.abs(act - f)) / scale(y[:o], a.m))
            rows.append((model, float(np.mean(sm)), float(np.mean(ms)), secs))
    print(f"{len(origins)} origins, every {a.every} days, horizon {a.h}")
    table(rows)


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
sub = ap.add_subparsers(dest="cmd", required=True)
p = sub.add_parser("m4"); p.add_argument("bin"); p.add_argument("train"); p.add_argument("test")
p.add_argument("--h", type=int, default=13); p.add_argument("--m", type=int, default=1)
p = sub.add_parser("rolling"); p.add_argument("bin"); p.add_argument("csv")
p.add_argument("--h", type=int, default=30); p.add_argument("--origins", type=int, default=12)
p.add_argument("--every", type=int, default=60); p.add_argument("--m", type=int, default=7)
a = ap.parse_args()
m4(a) if a.cmd == "m4" else rolling(a)
