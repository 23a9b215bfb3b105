//! Rolling-origin backtests and the accuracy metrics they report.
//!
//! Fold `f` of `F` (oldest first) trains on `y[..n − f·h]` and scores the next `h` points.
//! When the history is too short for `F` such folds (between the first origin a model can
//! fit from and the last, `n − h`), the origins are spread evenly over what there is,
//! closer than `h` apart (overlapping test windows, each a full horizon): one or two folds
//! of a long horizon decide `auto`'s choice by chance (a 5-minute series with a daily
//! season of 169 points and three days of history had a single fold). Metrics pool every
//! scored point:
//! - `mae`, `rmse`;
//! - `smape`: mean of `200·|y − ŷ| / (|y| + |ŷ|)` in percent (0 where both are 0), as in M4;
//! - `mase`: per fold, `mae` over the in-sample mean absolute seasonal difference of that
//!   fold's training data (lag = season length when the training data holds more than one
//!   season, else 1; a constant history scales by its mean absolute value, or 1), averaged
//!   over folds;
//! - `coverage`: the share of scored points inside the prediction interval.

use serde::Serialize;

use super::Forecaster;

/// Default number of backtest folds: five origins judge a model better than three (chosen
/// on M4 Weekly's training part, see `ModelKind::CANDIDATES`).
pub const DEFAULT_FOLDS: usize = 5;

/// Accuracy of a model on held-out points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Symmetric MAPE, percent.
    pub smape: f64,
    /// Mean absolute scaled error.
    pub mase: f64,
    /// Share of points inside the interval.
    pub coverage: f64,
    /// Folds scored.
    pub folds: usize,
    /// Points scored.
    pub points: usize,
}

/// sMAPE term of one point, percent.
pub fn smape_term(y: f64, yhat: f64) -> f64 {
    let d = y.abs() + yhat.abs();
    if d == 0.0 {
        0.0
    } else {
        200.0 * (y - yhat).abs() / d
    }
}

/// The MASE scale of a training history (see the module docs).
pub fn mase_scale(train: &[f64], m: usize) -> f64 {
    let lag = if m > 1 && train.len() > m { m } else { 1 };
    if train.len() <= lag {
        return 1.0;
    }
    let s = train
        .windows(lag + 1)
        .map(|w| (w[lag] - w[0]).abs())
        .sum::<f64>()
        / (train.len() - lag) as f64;
    if s > 0.0 {
        return s;
    }
    let level = train.iter().map(|v| v.abs()).sum::<f64>() / train.len() as f64;
    if level > 0.0 { level } else { 1.0 }
}

/// The distance between origins: a horizon, or, when the history between the first usable
/// origin and the last (`span` points) is too short for `folds` of them, the span shared
/// out (at least 1), so every fold still forecasts a full horizon.
fn origin_step(span: usize, h: usize, folds: usize) -> usize {
    if folds <= 1 || span >= (folds - 1) * h {
        h.max(1)
    } else {
        (span / (folds - 1)).max(1)
    }
}

/// Backtests `model` on `y`; None when no fold has enough training data.
pub fn backtest(
    model: &dyn Forecaster,
    y: &[f64],
    h: usize,
    folds: usize,
    level: f64,
    m: usize,
) -> Option<Metrics> {
    backtest_from(model, y, h, folds, level, m, 0)
}

/// [`backtest`] on the folds whose training data holds at least `min_origin` points, so
/// models that need different histories can be compared on the same origins.
pub fn backtest_from(
    model: &dyn Forecaster,
    y: &[f64],
    h: usize,
    folds: usize,
    level: f64,
    m: usize,
    min_origin: usize,
) -> Option<Metrics> {
    let n = y.len();
    let (mut abs, mut sq, mut sm, mut inside, mut points) = (0.0, 0.0, 0.0, 0usize, 0usize);
    let (mut mase_sum, mut scored) = (0.0, 0usize);
    let first = model.min_len().max(min_origin).max(1);
    let last = n.checked_sub(h)?;
    let step = origin_step(last.checked_sub(first)?, h, folds);
    for k in (0..folds).rev() {
        let Some(origin) = last.checked_sub(k * step) else {
            continue;
        };
        if origin < first {
            continue;
        }
        // origin ≤ n − h: every fold scores a full horizon.
        let test = &y[origin..origin + h];
        let Ok(fitted) = model.fit(&y[..origin]) else {
            continue;
        };
        let fc = fitted.predict(test.len(), level);
        if !fc.is_finite() {
            continue;
        }
        let mut fold_abs = 0.0;
        for (i, &v) in test.iter().enumerate() {
            let e = v - fc.mean[i];
            fold_abs += e.abs();
            abs += e.abs();
            sq += e * e;
            sm += smape_term(v, fc.mean[i]);
            inside += usize::from(v >= fc.lower[i] && v <= fc.upper[i]);
        }
        points += test.len();
        mase_sum += fold_abs / test.len() as f64 / mase_scale(&y[..origin], m);
        scored += 1;
    }
    (scored > 0).then(|| {
        let p = points as f64;
        Metrics {
            mae: abs / p,
            rmse: (sq / p).sqrt(),
            smape: sm / p,
            mase: mase_sum / scored as f64,
            coverage: inside as f64 / p,
            folds: scored,
            points,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Naive;

    #[test]
    fn naive_backtest_on_a_line_is_exact_by_hand() {
        // y = 0, 1, ..., 9; h = 2, 2 folds: train [0..6) predicts 5,5 for 6,7; train [0..8)
        // predicts 7,7 for 8,9. Errors 1,2,1,2: mae 1.5; the scale of a unit-step line is 1.
        let y: Vec<f64> = (0..10).map(f64::from).collect();
        let m = backtest(&Naive, &y, 2, 2, 0.95, 1).unwrap();
        assert_eq!((m.folds, m.points), (2, 4));
        assert!(
            (m.mae - 1.5).abs() < 1e-12 && (m.mase - 1.5).abs() < 1e-12,
            "{m:?}"
        );
        assert!((m.rmse - 2.5f64.sqrt()).abs() < 1e-12);
        let smape = (smape_term(6.0, 5.0)
            + smape_term(7.0, 5.0)
            + smape_term(8.0, 7.0)
            + smape_term(9.0, 7.0))
            / 4.0;
        assert!((m.smape - smape).abs() < 1e-12);
    }

    #[test]
    fn short_histories_spread_the_origins_and_keep_full_horizons() {
        // y = 0..30, h = 10, 5 folds: five origins a horizon apart would need 50 points.
        // Naive can fit from 1 point, the last origin is 20: the span 1..20 is shared out
        // in steps of 19 / 4 = 4: origins 4, 8, 12, 16, 20, each scoring 10 points. Naive
        // forecasts o − 1 for o..o + 10: errors 1..10, mae 5.5; a unit line's scale is 1.
        let y: Vec<f64> = (0..30).map(f64::from).collect();
        let m = backtest(&Naive, &y, 10, 5, 0.95, 1).unwrap();
        assert_eq!((m.folds, m.points), (5, 50));
        assert!(
            (m.mae - 5.5).abs() < 1e-12 && (m.mase - 5.5).abs() < 1e-12,
            "{m:?}"
        );
        // From origin 16 on: the span 16..20 gives steps of 4 / 4 = 1: origins 16..=20.
        let m = backtest_from(&Naive, &y, 10, 5, 0.95, 1, 16).unwrap();
        assert_eq!((m.folds, m.points), (5, 50));
        // Too short for a single full horizon after the first usable origin: nothing.
        assert!(backtest_from(&Naive, &y, 10, 5, 0.95, 1, 21).is_none());
    }
}
