#!/usr/bin/env python3
"""Choose `auto`'s candidate list and backtest folds without the M4 test part, then score
the choice once on it.

Protocol (the design is fixed on the training part only):
- validation origins inside each series' training data: it is cut `k·h` points before its
  end (k = 1, 2, 3) and the next h points are forecast and scored;
- every configuration (a candidate list and a fold count) is scored on those origins by
  M4's OWA against naive: (sMAPE / sMAPE_naive + MASE / MASE_naive) / 2, pooled over
  origins;
- the configuration with the lowest validation OWA is the best; the one chosen is the
  simplest (fewest candidates, then fewest folds: less to go wrong, less to compute) whose
  OWA is within one standard error of the best's (Breiman's one-standard-error rule; the
  error of the per-series OWA difference to the best, over series and origins);
- only then is the test part read, and only the chosen configuration (and the shipped
  defaults, for reference) is scored on it.

usage: m4cv.py BIN TRAIN TEST [--h 13]   (needs numpy, pandas)
"""
import argparse, json, os, subprocess, sys, tempfile
import numpy as np, pandas as pd

CONFIGS = {
    "baselines+smoothing": ["--candidates", "naive,seasonal_naive,ses,holt,holt_damped,holt_winters"],
    "all models": ["--candidates", "naive,seasonal_naive,ses,holt,holt_damped,holt_winters,linear,moving_average,seasonal_moving_average"],
    "smoothing only": ["--candidates", "ses,holt,holt_damped,holt_winters"],
    "no undamped holt": ["--candidates", "naive,seasonal_naive,ses,holt_damped,holt_winters"],
    "naive, ses, damped": ["--candidates", "naive,ses,holt_damped"],
}
FOLDS = ["1", "3", "5"]
# What ships: the chosen non-seasonal part plus the seasonal models M4 Weekly cannot judge
# (m = 1: they do not apply there, so on this data it is the same as "smoothing only").
SHIPPED = ["--candidates", "ses,holt,holt_damped,holt_winters,holt_winters_mul,ses_seasonal_mul", "--folds", "5"]


def smape(y, f):
    d = np.abs(y) + np.abs(f)
    return np.mean(np.where(d > 0, 200 * np.abs(y - f) / np.where(d > 0, d, 1), 0))


def mase_scale(y):
    d = np.abs(np.diff(np.asarray(y, float)))
    s = d.mean() if len(d) else np.nan
    return s if s > 0 else np.nan


def forecast(binary, frame, h, args):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.csv"), os.path.join(d, "fc.csv")
        frame.to_csv(inp, index=False)
        r = subprocess.run([binary, "forecast", "--series", inp, "--horizon", str(h), "--out", out] + args,
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit("forecast failed: " + r.stderr[-500:])
        fc = pd.read_csv(out)
    fc["series_id"] = fc["series_id"].astype(str)
    return {s: g.sort_values("ts")["yhat"].to_numpy() for s, g in fc.groupby("series_id")}


def per_series(binary, train, actual, h, args):
    """sMAPE and MASE per series (MASE NaN where the history has no scale)."""
    fc = forecast(binary, train, h, args)
    hist = {s: g["value"].to_numpy() for s, g in train.groupby("series_id")}
    sm = np.array([smape(y, fc[s][: len(y)]) for s, y in actual.items()])
    ms = np.array([np.mean(np.abs(y - fc[s][: len(y)])) / mase_scale(hist[s]) for s, y in actual.items()])
    return sm, ms


def scores(binary, train, actual, h, args):
    sm, ms = per_series(binary, train, actual, h, args)
    return float(np.mean(sm)), float(np.nanmean(ms))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin"); ap.add_argument("train"); ap.add_argument("test")
    ap.add_argument("--h", type=int, default=13)
    a = ap.parse_args()
    train = pd.read_csv(a.train)
    train["series_id"] = train["series_id"].astype(str)
    groups = {s: g for s, g in train.groupby("series_id", sort=True)}
    origins = []
    for k in (1, 2, 3):
        cut = {s: g.iloc[: len(g) - k * a.h] for s, g in groups.items()}
        actual = {s: g["value"].to_numpy()[len(g) - k * a.h: len(g) - (k - 1) * a.h] for s, g in groups.items()}
        origins.append((pd.concat(cut.values()), actual))
    configs = {f"{name}, {f} folds": args + ["--folds", f] for name, args in CONFIGS.items() for f in FOLDS}
    naive = [per_series(a.bin, t, act, a.h, ["--model", "naive"]) for t, act in origins]
    valid, terms = {}, {}
    for name, args in configs.items():
        per = [per_series(a.bin, t, act, a.h, args) for t, act in origins]
        # Per series and origin, its share of the OWA: the mean of these is the OWA.
        terms[name] = np.concatenate([
            (sm / np.mean(ns) + np.nan_to_num(ms / np.nanmean(nm), nan=0.0)) / 2
            for (sm, ms), (ns, nm) in zip(per, naive)])
        valid[name] = {"owa": round(float(np.mean(terms[name])), 4),
                       "smape": round(float(np.mean([p[0].mean() for p in per])), 3),
                       "mase": round(float(np.mean([np.nanmean(p[1]) for p in per])), 3)}
    best = min(valid, key=lambda k: (valid[k]["owa"], k))
    for name in valid:
        d = terms[name] - terms[best]
        valid[name]["se_vs_best"] = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4) if name != best else 0.0
    size = lambda name: (len(configs[name][1].split(",")), int(configs[name][-1]))
    within = [k for k in valid if valid[k]["owa"] - valid[best]["owa"] <= valid[k]["se_vs_best"]]
    chosen = min(within, key=lambda k: (size(k), valid[k]["owa"], k))
    # The design is fixed: now, and only now, the test part.
    test = pd.read_csv(a.test)
    test["series_id"] = test["series_id"].astype(str)
    actual = {s: g["value"].to_numpy()[: a.h] for s, g in test.groupby("series_id")}
    shipped = "shipped, 5 folds"
    result = {"validation (3 origins inside train)": dict(sorted(valid.items(), key=lambda kv: kv[1]["owa"])),
              "best": best, "within_one_se": within,
              "chosen": chosen, "chosen_args": " ".join(configs[chosen])}
    configs[shipped] = SHIPPED
    for label, name in (("test: chosen", chosen), ("test: shipped", shipped)):
        s, m = scores(a.bin, train, actual, a.h, configs[name])
        result[label] = {"smape": round(s, 3), "mase": round(m, 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
