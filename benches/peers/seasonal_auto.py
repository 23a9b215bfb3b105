#!/usr/bin/env python3
"""`auto` against statsforecast's AutoETS on seasonal series of three kinds:
- statsmodels' weekly `co2` series (Mauna Loa, 1958-2001; season 52; the 59 missing weeks
  interpolated), 8 rolling origins two years apart, h = 52;
- 300 generated daily series with a weekly season and short histories (8-30 weeks; level
  shifts, multiplicative noise; seeded), h = 14;
- 40 generated 5-minute series with a long daily season of 169 points and 3-8 seasons of
  history, h = 169.
meterlake runs `forecast --model auto --season-length M` (and `--model holt_winters`,
`holt_winters_mul` and `ses_seasonal_mul` for reference); statsforecast AutoETS(season_length=M) on the same training data (ETS admits
no season above 24, as in R's forecast::ets, so on the long seasons it fits a non-seasonal
model: that is what a user of it gets). sMAPE and MASE (lag M) per series, averaged.

usage: seasonal_auto.py BIN   (a venv with statsforecast==2.1.1, statsmodels, pandas; ~1 min)
       seasonal_auto.py BIN --seeds 21,22,23   (the weekly panel only, auto and AutoETS, on
                                                other seeds of its generator)
"""
import json, os, subprocess, sys, tempfile
import numpy as np, pandas as pd

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def co2():
    import statsmodels.api as sm
    s = sm.datasets.co2.load_pandas().data["co2"].interpolate()
    y, ds = s.to_numpy(float), s.index
    h, parts = 52, []
    for k in range(8):
        o = len(y) - h - k * 104
        parts.append((f"o{o}", ds[:o + h], y[:o + h]))
    return parts, h, 52, "W"


def weekly(n=300, seed=3):
    rng = np.random.default_rng(seed)
    parts, h = [], 14
    for i in range(n):
        L = int(rng.integers(8, 31)) * 7 + h
        t = np.arange(L)
        week = 1 + np.array([.1, .15, .12, .1, .05, -.25, -.27]) * rng.uniform(0.5, 1.5)
        level = 100 * np.where(t > rng.integers(L // 3, L), rng.uniform(0.6, 1.6), 1.0)
        y = level * (1 + rng.uniform(-.002, .004) * t) * week[t % 7] * (1 + rng.normal(0, rng.uniform(.03, .12), L))
        parts.append((f"w{i}", pd.date_range("2025-01-06", periods=L, freq="D"), np.round(y, 3)))
    return parts, h, 7, "D"


def intraday(n=40, seed=7):
    rng = np.random.default_rng(seed)
    m = h = 169
    parts = []
    for k in range(n):
        L = (3 + k % 6) * m + h
        t = np.arange(L)
        shape = 50 + 40 * np.exp(-((t % m - 60) / 25.0) ** 2) + 25 * np.exp(-((t % m - 120) / 15.0) ** 2)
        y = shape * (1 + 0.002 * t / m * rng.normal()) * (1 + 0.12 * rng.standard_normal(L))
        parts.append((f"s{k}", pd.date_range("2026-01-01", periods=L, freq="5min"), y))
    return parts, h, m, "5min"


def score(parts, h, m, fc):
    sm, ms = [], []
    for sid, _, y in parts:
        act, tr, f = y[-h:], y[:-h], fc[sid][:h]
        sm.append(np.mean(200 * np.abs(act - f) / (np.abs(act) + np.abs(f))))
        ms.append(np.mean(np.abs(act - f)) / np.mean(np.abs(tr[m:] - tr[:-m])))
    return round(float(np.mean(sm)), 3), round(float(np.mean(ms)), 3)


def meterlake(binary, parts, h, m, model):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.csv"), os.path.join(d, "fc.csv")
        pd.concat([pd.DataFrame({"series_id": sid, "ts": ds[:-h].strftime("%Y-%m-%dT%H:%M:%SZ"), "value": y[:-h]})
                   for sid, ds, y in parts]).to_csv(inp, index=False)
        r = subprocess.run([binary, "forecast", "--series", inp, "--horizon", str(h), "--season-length", str(m),
                            "--model", model, "--out", out], capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr[-800:])
        fc = pd.read_csv(out)
    fc["series_id"] = fc.series_id.astype(str)
    return {k: g.sort_values("ts").yhat.to_numpy() for k, g in fc.groupby("series_id")}


def autoets(parts, h, m, freq):
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS
    df = pd.concat([pd.DataFrame({"unique_id": sid, "ds": ds[:-h], "y": y[:-h]}) for sid, ds, y in parts])
    fc = StatsForecast(models=[AutoETS(season_length=m)], freq=freq, n_jobs=2).forecast(df=df, h=h)
    return {k: g.AutoETS.to_numpy() for k, g in fc.groupby("unique_id")}


def main():
    binary = sys.argv[1]
    out = {}
    if len(sys.argv) > 3 and sys.argv[2] == "--seeds":
        for seed in map(int, sys.argv[3].split(",")):
            parts, h, m, freq = weekly(seed=seed)
            out[f"weekly panel, seed {seed}"] = {
                "meterlake auto": score(parts, h, m, meterlake(binary, parts, h, m, "auto")),
                "statsforecast AutoETS": score(parts, h, m, autoets(parts, h, m, freq))}
        print(json.dumps(out, indent=1))
        return
    for name, (parts, h, m, freq) in (("co2 weekly, m = 52, 8 origins", co2()),
                                      ("300 daily series, weekly season, 8-30 weeks", weekly()),
                                      ("40 five-minute series, m = 169, 3-8 seasons", intraday())):
        out[name] = {"meterlake auto": score(parts, h, m, meterlake(binary, parts, h, m, "auto")),
                     "meterlake holt_winters": score(parts, h, m, meterlake(binary, parts, h, m, "holt_winters")),
                     "meterlake holt_winters_mul": score(parts, h, m, meterlake(binary, parts, h, m, "holt_winters_mul")),
                     "meterlake ses_seasonal_mul": score(parts, h, m, meterlake(binary, parts, h, m, "ses_seasonal_mul")),
                     "statsforecast AutoETS": score(parts, h, m, autoets(parts, h, m, freq))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
