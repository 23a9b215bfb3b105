//! Moving averages: the mean of the last N values, and the seasonal moving average (the
//! mean of the same phase over the last K seasons).
//!
//! No analytical interval exists for these; the half-width is `z·σ` with σ the standard
//! deviation of the in-sample one-step errors of the same rule, constant over the horizon
//! (the backtest's coverage column says how well that holds).

use super::{Fitted, Forecast, Forecaster, normal_quantile};
use crate::error::{Error, Result};

/// Default window of the moving average.
pub const DEFAULT_WINDOW: usize = 7;
/// Default number of seasons of the seasonal moving average.
pub const DEFAULT_SEASONS: usize = 3;

/// Mean of the last `window` values.
#[derive(Debug, Clone, Copy)]
pub struct MovingAverage {
    /// How many values.
    pub window: usize,
}

/// Mean of the same phase over the last `seasons` seasons of length `m`.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalMovingAverage {
    /// Season length.
    pub m: usize,
    /// How many seasons.
    pub seasons: usize,
}

struct FittedFlat {
    /// One value per phase (a single value for the plain moving average).
    values: Vec<f64>,
    /// Phase of the first forecast step.
    offset: usize,
    sigma: f64,
    name: &'static str,
    params: String,
}

impl Fitted for FittedFlat {
    fn predict(&self, h: usize, level: f64) -> Forecast {
        let z = normal_quantile(level);
        let m = self.values.len();
        let mut out = Forecast::with_capacity(h);
        for j in 0..h {
            out.push(self.values[(self.offset + j) % m], z * self.sigma);
        }
        out
    }
    fn params(&self) -> String {
        self.params.clone()
    }
    fn name(&self) -> &'static str {
        self.name
    }
}

fn sd(errors: &[f64]) -> f64 {
    if errors.is_empty() {
        return 0.0;
    }
    (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

impl Forecaster for MovingAverage {
    fn name(&self) -> &'static str {
        "moving_average"
    }
    fn min_len(&self) -> usize {
        1
    }
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>> {
        if y.is_empty() || self.window == 0 {
            return Err(Error::NotEnoughData {
                model: "moving_average",
                need: 1,
                got: y.len(),
            });
        }
        let w = self.window.min(y.len());
        let errors: Vec<f64> = (w..y.len()).map(|t| y[t] - mean(&y[t - w..t])).collect();
        Ok(Box::new(FittedFlat {
            values: vec![mean(&y[y.len() - w..])],
            offset: 0,
            sigma: sd(&errors),
            name: "moving_average",
            params: format!("window={w}"),
        }))
    }
}

impl SeasonalMovingAverage {
    /// Mean of the values at `t - m`, `t - 2m`, ... (up to `seasons` of them, all before `end`).
    fn phase_mean(&self, y: &[f64], t: usize, end: usize) -> Option<f64> {
        let vals: Vec<f64> = (1..)
            .map(|k| t as i64 - (k * self.m) as i64)
            .take_while(|&i| i >= 0)
            .filter(|&i| (i as usize) < end)
            .take(self.seasons)
            .map(|i| y[i as usize])
            .collect();
        (!vals.is_empty()).then(|| mean(&vals))
    }
}

impl Forecaster for SeasonalMovingAverage {
    fn name(&self) -> &'static str {
        "seasonal_moving_average"
    }
    fn min_len(&self) -> usize {
        self.m.max(1)
    }
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>> {
        if y.len() < self.min_len() || self.m == 0 || self.seasons == 0 {
            return Err(Error::NotEnoughData {
                model: "seasonal_moving_average",
                need: self.min_len(),
                got: y.len(),
            });
        }
        let n = y.len();
        let errors: Vec<f64> = (self.m..n)
            .filter_map(|t| self.phase_mean(y, t, t).map(|f| y[t] - f))
            .collect();
        // One value per phase, for the steps n, n+1, ..., n+m-1.
        let values: Vec<f64> = (n..n + self.m)
            .map(|t| self.phase_mean(y, t, n).unwrap_or(y[n - 1]))
            .collect();
        Ok(Box::new(FittedFlat {
            values,
            offset: 0,
            sigma: sd(&errors),
            name: "seasonal_moving_average",
            params: format!("m={} seasons={}", self.m, self.seasons),
        }))
    }
}
