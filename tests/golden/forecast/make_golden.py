"""Golden forecasts for tests/it/forecast.rs, computed by statsmodels from series.csv.

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install statsmodels==0.14.4 pandas==2.2.3 numpy==2.1.3 scipy==1.14.1
     /tmp/v/bin/python make_golden.py
(made with statsmodels 0.14.4, pandas 2.2.3, numpy 2.1.3, scipy 1.14.1, Python 3.11: newer
pandas and scipy releases break statsmodels 0.14 imports, so pin these).

series.csv: three daily series made here with a fixed seed (a noisy trend, a weekly
season on a trend, noise around a level). expected_sse.csv: the in-sample SSE of statsmodels' optimised SES and Holt fits.
expected.csv: per series, model and step (holt_winters_mul: the damped additive model
fitted to ln y, then exp), the
point forecast and, for the linear models, the 95 % OLS prediction interval, for the fixed
parameters (and, as `ses_opt` / `holt_opt`, statsmodels' own least-squares optimisation of
the parameters and initial states) and the initial states meterlake documents (SES/Holt: l0 = y0, b0 = y1 - y0;
Holt-Winters over the first k = min(max(n // m, 2), 10) whole seasons with means M_j:
l0 = M_0, b0 = (M_{k-1} - M_0) / ((k - 1) m), s_i = mean over j of y[j m + i] - M_j, centred), given to statsmodels as `initialization_method='known'`.
"""
import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tsa.holtwinters import ExponentialSmoothing, Holt, SimpleExpSmoothing

H, M = 14, 7
rng = np.random.default_rng(20261123)
days = pd.date_range("2026-01-05", periods=70, freq="D")
t = np.arange(70)
raw = {
    "trend": (50 + 1.5 * t[:40] + rng.normal(0, 4, 40)).round(3),
    "season": (200 + 0.8 * t[:56] + np.array([0, 5, 8, 6, 3, -25, -30])[t[:56] % 7] + rng.normal(0, 3, 56)).round(3),
    "flat": (80 + rng.normal(0, 6, 30)).round(3),
}
rows = []
for sid, y in raw.items():
    for d, v in zip(days, y):
        rows.append((sid, d.strftime("%Y-%m-%d"), v))
pd.DataFrame(rows, columns=["series_id", "ts", "value"]).to_csv("series.csv", index=False)

out = []
sse = []  # (series, model, in-sample SSE of statsmodels' optimised fit)


def add(sid, model, mean, lower=None, upper=None):
    for i, v in enumerate(mean):
        out.append((sid, model, i + 1, v,
                    "" if lower is None else lower[i], "" if upper is None else upper[i]))


for sid, y in raw.items():
    y = np.asarray(y, dtype=float)
    n = len(y)
    f = SimpleExpSmoothing(y, initialization_method="known", initial_level=y[0]).fit(
        smoothing_level=0.3, optimized=False)
    add(sid, "ses", f.forecast(H))
    f = Holt(y, initialization_method="known", initial_level=y[0], initial_trend=y[1] - y[0]).fit(
        smoothing_level=0.4, smoothing_trend=0.2, optimized=False)
    add(sid, "holt", f.forecast(H))
    f = Holt(y, damped_trend=True, initialization_method="known", initial_level=y[0],
             initial_trend=y[1] - y[0]).fit(smoothing_level=0.4, smoothing_trend=0.2,
                                            damping_trend=0.9, optimized=False)
    add(sid, "holt_damped", f.forecast(H))
    # Optimised: smoothing parameters and initial states estimated by least squares.
    f = SimpleExpSmoothing(y, initialization_method="estimated").fit()
    add(sid, "ses_opt", f.forecast(H))
    sse.append((sid, "ses", f.sse))
    f = Holt(y, initialization_method="estimated").fit()
    add(sid, "holt_opt", f.forecast(H))
    sse.append((sid, "holt", f.sse))
    if n >= 2 * M + 2:
        k = min(max(n // M, 2), 10)
        means = np.array([y[j * M:(j + 1) * M].mean() for j in range(k)])
        l0 = means[0]
        b0 = (means[k - 1] - means[0]) / ((k - 1) * M)
        s0 = np.array([np.mean([y[j * M + i] - means[j] for j in range(k)]) for i in range(M)])
        s0 -= s0.mean()
        f = ExponentialSmoothing(y, trend="add", seasonal="add", seasonal_periods=M,
                                 initialization_method="known", initial_level=l0,
                                 initial_trend=b0, initial_seasonal=s0).fit(
            smoothing_level=0.3, smoothing_trend=0.1, smoothing_seasonal=0.2, optimized=False)
        # statsmodels' own forecast replaces the last in-sample seasonal factor with the one
        # a season older at horizons that are multiples of m (statsmodels issue #9538, fixed
        # by PR #10230, not in 0.14.4 or 0.15.0). So the forecast is assembled here from
        # statsmodels' fitted states with Hyndman's formula
        # y[T+h] = l_T + h b_T + s[T+h-m(k+1)], k = (h-1) // m; at the other horizons this
        # equals statsmodels' forecast, which is asserted.
        lT, bT, season = f.level[-1], f.trend[-1], f.season
        hw = np.array([lT + h * bT + season[n - 1 + h - M * ((h - 1) // M + 1)] for h in range(1, H + 1)])
        sm_fc = f.forecast(H)
        other = [h - 1 for h in range(1, H + 1) if h % M != 0]
        assert np.allclose(hw[other], sm_fc[other], rtol=1e-10), (hw, sm_fc)
        add(sid, "holt_winters", hw)
        # Multiplicative Holt-Winters: the damped additive model on ln y (same heuristic
        # initial states, computed on the logs), the forecast assembled the same way with
        # the damped trend sum phi + ... + phi^h, then exp.
        ly = np.log(y)
        means = np.array([ly[j * M:(j + 1) * M].mean() for j in range(k)])
        s0 = np.array([np.mean([ly[j * M + i] - means[j] for j in range(k)]) for i in range(M)])
        s0 -= s0.mean()
        f = ExponentialSmoothing(ly, trend="add", damped_trend=True, seasonal="add",
                                 seasonal_periods=M, initialization_method="known",
                                 initial_level=means[0],
                                 initial_trend=(means[k - 1] - means[0]) / ((k - 1) * M),
                                 initial_seasonal=s0).fit(
            smoothing_level=0.3, smoothing_trend=0.1, smoothing_seasonal=0.2,
            damping_trend=0.9, optimized=False)
        lT, bT, season = f.level[-1], f.trend[-1], f.season
        phis = np.cumsum(0.9 ** np.arange(1, H + 1))
        mul = np.array([lT + phis[h - 1] * bT + season[n - 1 + h - M * ((h - 1) // M + 1)]
                        for h in range(1, H + 1)])
        sm_fc = f.forecast(H)
        assert np.allclose(mul[other], sm_fc[other], rtol=1e-10), (mul, sm_fc)
        add(sid, "holt_winters_mul", np.exp(mul))
    # Linear trend, and with day-of-phase dummies (phase = t mod 7 from the first point).
    for name, dummies in [("linear_trend", False), ("linear_calendar", True)]:
        def design(ts):
            cols = [ts.astype(float)]
            if dummies:
                cols += [(ts % M == p).astype(float) for p in range(1, M)]
            return sm.add_constant(np.column_stack(cols), has_constant="add")
        fit = sm.OLS(y, design(np.arange(n))).fit()
        fr = fit.get_prediction(design(np.arange(n, n + H))).summary_frame(alpha=0.05)
        add(sid, name, fr["mean"].to_numpy(), fr["obs_ci_lower"].to_numpy(), fr["obs_ci_upper"].to_numpy())

pd.DataFrame(out, columns=["series_id", "model", "step", "yhat", "lower", "upper"]).to_csv(
    "expected.csv", index=False, float_format="%.10f")
pd.DataFrame(sse, columns=["series_id", "model", "sse"]).to_csv(
    "expected_sse.csv", index=False, float_format="%.10f")
