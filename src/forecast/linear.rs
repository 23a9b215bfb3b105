//! Linear regression on the time index with linfa-linear, optionally with calendar dummies
//! (one per phase of the season after the first: day of week for daily data, hour of day
//! for hourly data, counted from the series' first point).
//!
//! Prediction intervals are the classical OLS ones: `ŷ ± t_{n−p} · s · √(1 + x₀ᵀ(XᵀX)⁻¹x₀)`
//! with `s² = SSE / (n − p)` (p coefficients including the intercept) and Student's t
//! quantile from statrs; the leverage term `x₀ᵀ(XᵀX)⁻¹x₀` widens the band the further the
//! forecast is from the data.

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::{Fitted, Forecast, Forecaster};
use crate::error::{Error, Result};

/// A linear trend, with phase dummies when the season length is above 1 and the history is
/// long enough (at least two full seasons and three more points than coefficients).
#[derive(Debug, Clone, Copy)]
pub struct LinearTrend {
    /// Season length for the dummies (1: none).
    pub m: usize,
    /// Whether to use the dummies at all.
    pub calendar: bool,
}

fn row(t: usize, m: usize) -> Vec<f64> {
    let mut r = vec![t as f64];
    for phase in 1..m {
        r.push(if t % m == phase { 1.0 } else { 0.0 });
    }
    r
}

/// Inverse of a small symmetric positive definite matrix (Gauss-Jordan with partial
/// pivoting); None when singular.
fn invert(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut m = a.clone();
    let mut inv = Array2::<f64>::eye(n);
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| m[[i, c]].abs().total_cmp(&m[[j, c]].abs()))?;
        if m[[p, c]].abs() < 1e-12 {
            return None;
        }
        for k in 0..n {
            m.swap([c, k], [p, k]);
            inv.swap([c, k], [p, k]);
        }
        let d = m[[c, c]];
        for k in 0..n {
            m[[c, k]] /= d;
            inv[[c, k]] /= d;
        }
        for i in 0..n {
            if i != c {
                let f = m[[i, c]];
                if f != 0.0 {
                    for k in 0..n {
                        m[[i, k]] -= f * m[[c, k]];
                        inv[[i, k]] -= f * inv[[c, k]];
                    }
                }
            }
        }
    }
    Some(inv)
}

struct FittedLinear {
    n: usize,
    m: usize,
    intercept: f64,
    coef: Array1<f64>,
    /// (XᵀX)⁻¹ of the design with the intercept column first.
    xtx_inv: Array2<f64>,
    s: f64,
    dof: f64,
}

impl Fitted for FittedLinear {
    fn predict(&self, h: usize, level: f64) -> Forecast {
        let t_q = StudentsT::new(0.0, 1.0, self.dof)
            .map(|d| d.inverse_cdf(0.5 + level / 2.0))
            .unwrap_or(f64::NAN);
        let mut out = Forecast::with_capacity(h);
        for j in 0..h {
            let r = row(self.n + j, self.m);
            let mean = self.intercept + r.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>();
            let mut x0 = vec![1.0];
            x0.extend(&r);
            let x0 = Array1::from(x0);
            let leverage = x0.dot(&self.xtx_inv.dot(&x0));
            out.push(mean, t_q * self.s * (1.0 + leverage).sqrt());
        }
        out
    }
    fn params(&self) -> String {
        format!(
            "intercept={:.6} slope={:.6} dummies={}",
            self.intercept,
            self.coef[0],
            self.m.saturating_sub(1)
        )
    }
    fn name(&self) -> &'static str {
        "linear"
    }
}

impl Forecaster for LinearTrend {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn min_len(&self) -> usize {
        3
    }
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>> {
        let n = y.len();
        if n < 3 {
            return Err(Error::NotEnoughData {
                model: "linear",
                need: 3,
                got: n,
            });
        }
        // Dummies only with two full seasons and room for the residual variance.
        let m = if self.calendar && self.m > 1 && n >= 2 * self.m && n >= self.m + 4 {
            self.m
        } else {
            1
        };
        let p = m + 1; // intercept, slope, m - 1 dummies
        let x = Array2::from_shape_vec((n, m), (0..n).flat_map(|t| row(t, m)).collect())
            .map_err(|e| Error::Model(format!("linear: {e}")))?;
        let target = Array1::from(y.to_vec());
        let ds = Dataset::new(x.clone(), target.clone());
        let fit = LinearRegression::new()
            .fit(&ds)
            .map_err(|e| Error::Model(format!("linear: {e}")))?;
        let coef = fit.params().clone();
        let intercept = fit.intercept();
        let mut design = Array2::<f64>::ones((n, p));
        design.slice_mut(ndarray::s![.., 1..]).assign(&x);
        let xtx_inv = invert(&design.t().dot(&design))
            .ok_or_else(|| Error::Model("linear: singular design".into()))?;
        let fitted = x.dot(&coef) + intercept;
        let sse: f64 = (&target - &fitted).iter().map(|e| e * e).sum();
        let dof = (n - p) as f64;
        Ok(Box::new(FittedLinear {
            n,
            m,
            intercept,
            coef,
            xtx_inv,
            s: (sse / dof).sqrt(),
            dof,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = ndarray::array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let i = invert(&a).unwrap().dot(&a);
        for r in 0..3 {
            for c in 0..3 {
                let want = if r == c { 1.0 } else { 0.0 };
                assert!((i[[r, c]] - want).abs() < 1e-12, "{i:?}");
            }
        }
    }
}
