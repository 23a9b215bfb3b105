//! Baselines: naive (the last value) and seasonal naive (the value one season ago).
//!
//! Intervals as for a random walk: `σ√h` for naive and `σ√(⌊(h−1)/m⌋ + 1)` for seasonal
//! naive, with σ² the mean squared (seasonal) difference of the history.

use super::{Fitted, Forecast, Forecaster, normal_quantile};
use crate::error::{Error, Result};

/// The last value, repeated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Naive;

/// The value one season ago, repeated season by season.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalNaive {
    /// Season length.
    pub m: usize,
}

fn diff_sigma2(y: &[f64], lag: usize) -> f64 {
    if y.len() <= lag {
        return 0.0;
    }
    let n = (y.len() - lag) as f64;
    y.windows(lag + 1)
        .map(|w| (w[lag] - w[0]).powi(2))
        .sum::<f64>()
        / n
}

struct FittedSeasonal {
    tail: Vec<f64>,
    sigma2: f64,
    name: &'static str,
}

impl Fitted for FittedSeasonal {
    fn predict(&self, h: usize, level: f64) -> Forecast {
        let z = normal_quantile(level);
        let m = self.tail.len();
        let mut out = Forecast::with_capacity(h);
        for j in 1..=h {
            let k = ((j - 1) / m + 1) as f64;
            out.push(self.tail[(j - 1) % m], z * (self.sigma2 * k).sqrt());
        }
        out
    }
    fn params(&self) -> String {
        format!("m={}", self.tail.len())
    }
    fn name(&self) -> &'static str {
        self.name
    }
}

impl Forecaster for Naive {
    fn name(&self) -> &'static str {
        "naive"
    }
    fn min_len(&self) -> usize {
        1
    }
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>> {
        let last = *y.last().ok_or(Error::NotEnoughData {
            model: "naive",
            need: 1,
            got: 0,
        })?;
        // Seasonal naive with m = 1 is naive: σ√⌊h⌋.
        Ok(Box::new(FittedSeasonal {
            tail: vec![last],
            sigma2: diff_sigma2(y, 1),
            name: "naive",
        }))
    }
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal_naive"
    }
    fn min_len(&self) -> usize {
        self.m + 1
    }
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>> {
        if y.len() < self.min_len() || self.m == 0 {
            return Err(Error::NotEnoughData {
                model: "seasonal_naive",
                need: self.min_len(),
                got: y.len(),
            });
        }
        Ok(Box::new(FittedSeasonal {
            tail: y[y.len() - self.m..].to_vec(),
            sigma2: diff_sigma2(y, self.m),
            name: "seasonal_naive",
        }))
    }
}
