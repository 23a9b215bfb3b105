#!/usr/bin/env python3
"""Why meterlake's Holt and statsforecast's land on different fits: per-series in-sample SSE
and holdout sMAPE on a panel of daily series whose trends change direction (weekly season,
multiplicative noise; lengths 60-730; seeded), the last 14 points held out.

Compared, on the same training data:
- meterlake `forecast --model holt --folds 0` (parameters from its metrics file, SSE
  recomputed here from them with the Holt recursion);
- statsforecast AutoETS(model="AAN", damped=False): the same model and criterion;
- statsforecast Holt(): note it is AutoETS(model="AAN") with damped=None, i.e. damped or
  not chosen per series by AICc, which is not the same model as an undamped Holt.

Prints mean sMAPE of each, the distribution of meterlake's SSE over statsforecast's, and
the sMAPE gap split by whether meterlake's in-sample fit is worse, equal or better.

usage: holt_fit.py BIN [N]   (needs statsforecast 2.1.1, pandas; ~15 s for N = 2000)
"""
import json, os, subprocess, sys, tempfile
import numpy as np, pandas as pd

os.environ.setdefault("NUMBA_NUM_THREADS", "2")
H = 14


def panel(n, seed=5):
    rng = np.random.default_rng(seed)
    rows, start = [], pd.Timestamp("2024-01-01")
    for i in range(n):
        L = int(rng.integers(60, 731))
        t = np.arange(L)
        k = int(rng.integers(1, 4))
        cuts = list(np.sort(rng.choice(np.arange(10, L - 10), k, replace=False))) + [L]
        slopes, slope, prev = rng.normal(0, 0.5, k + 1), np.zeros(L), 0
        for j, c in enumerate(cuts):
            slope[prev:c] = slopes[j]
            prev = c
        trend = np.maximum(100 + np.cumsum(slope), 5)
        week = 1 + np.array([0, .04, .06, .05, .03, -.09, -.12]) * rng.uniform(0.5, 2.0)
        y = trend * week[t % 7] * (1 + rng.normal(0, rng.uniform(0.02, 0.1), L))
        rows.append(pd.DataFrame({"unique_id": f"s{i}", "ds": start + pd.to_timedelta(t, "D"), "y": np.round(y, 3)}))
    return pd.concat(rows, ignore_index=True)


def holt_sse(y, a, b, l0, b0):
    l, bb, s = l0, b0, 0.0
    for v in y:
        e = v - (l + bb)
        s += e * e
        ln = a * v + (1 - a) * (l + bb)
        bb, l = b * (ln - l) + (1 - b) * bb, ln
    return s


def smape(y, f):
    return float(np.mean(200 * np.abs(y - f) / (np.abs(y) + np.abs(f))))


def main():
    binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    df = panel(n)
    test = df.groupby("unique_id", sort=False).tail(H)
    train = df.drop(test.index)
    with tempfile.TemporaryDirectory() as d:
        inp, out, met = (os.path.join(d, f) for f in ("train.csv", "fc.csv", "m.csv"))
        train.rename(columns={"unique_id": "series_id", "ds": "ts", "y": "value"}).assign(
            ts=lambda x: x.ts.dt.strftime("%Y-%m-%d")).to_csv(inp, index=False)
        r = subprocess.run([binary, "forecast", "--series", inp, "--model", "holt", "--horizon", str(H),
                            "--folds", "0", "--out", out, "--metrics", met], capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr[-800:])
        fc, mt = pd.read_csv(out), pd.read_csv(met)
    fc["series_id"], mt["series_id"] = fc.series_id.astype(str), mt.series_id.astype(str)
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, Holt
    sf = StatsForecast(models=[AutoETS(model="AAN", damped=False, alias="AAN"), Holt(alias="Holt")],
                       freq="D", n_jobs=2)
    sfc = sf.forecast(df=train, h=H, fitted=True)
    fitted = {k: g for k, g in sf.forecast_fitted_values().groupby("unique_id")}
    mine = {k: g.sort_values("ts").yhat.to_numpy() for k, g in fc.groupby("series_id")}
    theirs = {k: g for k, g in sfc.groupby("unique_id")}
    params = {r.series_id: dict(kv.split("=") for kv in r.params.split()) for r in mt.itertuples()}
    rows = []
    for k, g in train.groupby("unique_id", sort=False):
        y, act, p = g.y.to_numpy(), test[test.unique_id == k].y.to_numpy(), params[k]
        sse_m = holt_sse(y, float(p["alpha"]), float(p["beta"]), float(p["l0"]), float(p["b0"]))
        f = fitted[k]
        rows.append({"sse_ratio": sse_m / float(np.nansum((f.y - f.AAN) ** 2)),
                     "smape_meterlake": smape(act, mine[k][:H]), "smape_aan": smape(act, theirs[k].AAN.to_numpy()),
                     "smape_holt": smape(act, theirs[k].Holt.to_numpy())})
    o = pd.DataFrame(rows)
    o["gap"] = o.smape_meterlake - o.smape_aan
    split = {}
    for name, g in (("meterlake SSE higher by > 0.1 %", o[o.sse_ratio > 1.001]),
                    ("equal within 0.1 %", o[(o.sse_ratio - 1).abs() <= 0.001]),
                    ("meterlake SSE lower by > 0.1 %", o[o.sse_ratio < 0.999])):
        split[name] = {"series": len(g), "mean sMAPE gap": round(float(g.gap.mean()), 3),
                       "share of the total gap": round(float(g.gap.sum() / o.gap.sum()), 3)}
    print(json.dumps({
        "series": n,
        "sMAPE": {"meterlake holt": round(o.smape_meterlake.mean(), 3),
                  "statsforecast AutoETS AAN undamped": round(o.smape_aan.mean(), 3),
                  "statsforecast Holt (damping by AICc)": round(o.smape_holt.mean(), 3)},
        "SSE meterlake / statsforecast AAN": {q: round(float(o.sse_ratio.quantile(v)), 4) for q, v in
                                               (("p10", .1), ("median", .5), ("p90", .9), ("max", 1.0))},
        "gap by in-sample fit": split,
    }, indent=1))


if __name__ == "__main__":
    main()
