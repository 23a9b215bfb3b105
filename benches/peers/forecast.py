#!/usr/bin/env python3
"""meterlake vs statsforecast: the same models on the same daily series, side by side.

Series: N daily series, lengths 60-730 (seeded), weekly season, trend and noise; the last
H=14 points of each are held out. Models (statsforecast name = meterlake name):
SimpleExponentialSmoothingOptimized = ses, Holt = holt, HoltWinters(7) = holt_winters,
WindowAverage(7) = moving_average, SeasonalNaive(7) = seasonal_naive.
Both on 2 cores (statsforecast n_jobs=2; meterlake's rayon pool), timed per model after a
warm-up (numba compiles statsforecast's models on first use; that is not counted).
meterlake runs `forecast --series train.csv --model M --horizon 14 --folds 0` (no backtest,
as statsforecast does none); its end-to-end time includes parsing the input and writing the
output, measured twice: CSV in and out, and Parquet in and out (the same rows, `ts` a date
column; a data scientist's usual file), each the median of --repeat runs (default 3: the
first run after the 1 GB input is written often waits on the page cache). Its "models only" time (from its JSON summary)
compares with statsforecast's, which starts from a DataFrame in memory.

usage: forecast.py --bin target/release/meterlake --series 10000 [--work DIR] [--models ses,holt]
"""
import argparse, os, subprocess, sys, time, json
import numpy as np, pandas as pd

H, M = 14, 7


def make(n, seed=11):
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for i in range(n):
        L = int(rng.integers(60, 731))
        t = np.arange(L)
        week = np.array([0, 4, 6, 5, 3, -9, -12]) * rng.uniform(0.2, 2.0)
        y = 100 + rng.uniform(-0.1, 0.2) * t + week[t % 7] + rng.normal(0, rng.uniform(1, 6), L)
        rows.append(pd.DataFrame({"unique_id": f"s{i}", "ds": start + pd.to_timedelta(t, "D"), "y": np.round(y, 3)}))
    return pd.concat(rows, ignore_index=True)


def score(test, fc):
    """Mean sMAPE and MASE (lag 7) over series; fc: unique_id -> array."""
    sm, ms = [], []
    for sid, g in test.groupby("unique_id", sort=False):
        y, f = g["y"].to_numpy(), fc[sid][:H]
        sm.append(np.mean(200 * np.abs(y - f) / (np.abs(y) + np.abs(f))))
        tr = train_y[sid]
        ms.append(np.mean(np.abs(y - f)) / np.mean(np.abs(tr[M:] - tr[:-M])))
    return float(np.mean(sm)), float(np.mean(ms))


ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/meterlake")
ap.add_argument("--series", type=int, default=10000)
ap.add_argument("--work", default="benches/peers/.work")
ap.add_argument("--repeat", type=int, default=3, help="meterlake runs per file format (median)")
ap.add_argument("--models", default="ses,holt,holt_winters,moving_average,seasonal_naive",
                help="comma-separated subset (statsforecast's HoltWinters takes ~30 min on 100k series)")
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from statsforecast import StatsForecast
from statsforecast.models import (Holt, HoltWinters, SeasonalNaive,
                                  SimpleExponentialSmoothingOptimized, WindowAverage)

df = make(a.series)
last = df.groupby("unique_id")["ds"].transform("max")
train = df[df["ds"] <= last - pd.Timedelta(days=H)].reset_index(drop=True)
test = df[df["ds"] > last - pd.Timedelta(days=H)].reset_index(drop=True)
train_y = {sid: g["y"].to_numpy() for sid, g in train.groupby("unique_id", sort=False)}
train_csv = os.path.join(a.work, f"forecast_train_{a.series}.csv")
train.rename(columns={"unique_id": "series_id", "ds": "ts", "y": "value"}).assign(
    ts=lambda d: d["ts"].dt.strftime("%Y-%m-%d")).to_csv(train_csv, index=False)
train_pq = os.path.join(a.work, f"forecast_train_{a.series}.parquet")
train.rename(columns={"unique_id": "series_id", "ds": "ts", "y": "value"}).assign(
    ts=lambda d: d["ts"].dt.date).to_parquet(train_pq, index=False)

pairs = [
    ("ses", lambda: SimpleExponentialSmoothingOptimized()),
    ("holt", lambda: Holt()),
    ("holt_winters", lambda: HoltWinters(season_length=M)),
    ("moving_average", lambda: WindowAverage(window_size=7)),
    ("seasonal_naive", lambda: SeasonalNaive(season_length=M)),
]
pairs = [p for p in pairs if p[0] in a.models.split(",")]
print(f"{a.series} series, {len(train)} training points, h={H}, 2 cores\n")
print("| model | meterlake s (end to end, CSV) | meterlake s (end to end, Parquet) | meterlake s (models only) | statsforecast s | ratio end to end CSV / Parquet | ratio models only | meterlake sMAPE / MASE | statsforecast sMAPE / MASE |")
print("|---|---|---|---|---|---|---|---|---|")
results = {}
for name, mk in pairs:
    # statsforecast: warm up (JIT) on a few series, then time the whole set.
    warm = train[train["unique_id"].isin(train["unique_id"].unique()[:3])]
    StatsForecast(models=[mk()], freq="D", n_jobs=2).forecast(df=warm, h=H)
    t = time.perf_counter()
    out = StatsForecast(models=[mk()], freq="D", n_jobs=2).forecast(df=train, h=H)
    sf_s = time.perf_counter() - t
    col = [c for c in out.columns if c not in ("unique_id", "ds")][0]
    sf_fc = {sid: g[col].to_numpy() for sid, g in out.groupby("unique_id", sort=False)}
    def meterlake(series_file, ext):
        out = os.path.join(a.work, f"forecast_out_{name}.{ext}")
        cmd = [a.bin, "forecast", "--series", series_file, "--model", name, "--horizon", str(H),
               "--season-length", str(M), "--window", "7", "--folds", "0", "--threads", "2",
               "--out", out, "--output", "json"]
        runs = []
        for _ in range(max(1, a.repeat)):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode:
                sys.exit(f"meterlake failed: {r.stderr[-500:]}")
            runs.append((wall, json.loads(r.stdout.strip().splitlines()[-1])["forecast_seconds"]))
        return float(np.median([w for w, _ in runs])), float(np.median([f for _, f in runs])), out
    ml_s, ml_fit, fc_csv = meterlake(train_csv, "csv")
    ml_pq, _, fc_pq = meterlake(train_pq, "parquet")
    f = pd.read_csv(fc_csv, float_precision="round_trip")
    ml_fc = {sid: g.sort_values("ts")["yhat"].to_numpy() for sid, g in f.groupby("series_id", sort=False)}
    fp = pd.read_parquet(fc_pq)
    assert np.array_equal(fp.sort_values(["series_id", "ts"])["yhat"].to_numpy(),
                          f.sort_values(["series_id", "ts"])["yhat"].to_numpy()), "CSV and Parquet runs differ"
    ms, sf = score(test, ml_fc), score(test, sf_fc)
    results[name] = {"meterlake_s": ml_s, "meterlake_parquet_s": ml_pq, "meterlake_models_s": ml_fit,
                     "statsforecast_s": sf_s, "meterlake": ms, "statsforecast": sf}
    print(f"| {name} | {ml_s:.2f} | {ml_pq:.2f} | {ml_fit:.2f} | {sf_s:.2f} | {sf_s / ml_s:.1f}x / {sf_s / ml_pq:.1f}x "
          f"| {sf_s / max(ml_fit, 1e-3):.1f}x | {ms[0]:.3f} / {ms[1]:.3f} | {sf[0]:.3f} / {sf[1]:.3f} |", flush=True)
with open(os.path.join(a.work, f"forecast_results_{a.series}.json"), "w") as fh:
    json.dump(results, fh, indent=2)
