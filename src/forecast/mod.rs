//! Forecasting: models behind a small [`Forecaster`] trait (fit, then predict a horizon with
//! a prediction interval), a rolling-origin [`backtest`], and `auto`, which picks a model
//! per series: on a seasonal series of positive values the exponential smoothing model with
//! the lowest AICc (as R's `ets` does), otherwise the one with the lowest backtest MASE
//! ([`ModelOptions::criterion_for`] says why). Models take plain `&[f64]` (consecutive steps)
//! and never touch polars or the lake; [`forecast_many`] runs many series in parallel with
//! rayon, one task per series.
//!
//! Too little history never panics and never yields NaN: a model that cannot fit falls back
//! to a simpler one (either multiplicative model → Holt-Winters → Holt → SES → naive;
//! damped Holt → SES; seasonal moving average → moving average; seasonal naive → naive;
//! linear → naive), and the series' status says so.
//!
//! ```
//! use meterlake::forecast::{forecast_one, ModelKind, ModelOptions};
//! let y: Vec<f64> = (0..60).map(|t| 100.0 + t as f64 + if t % 7 == 5 { -30.0 } else { 0.0 }).collect();
//! let f = forecast_one(&y, 14, 0.95, ModelKind::Auto, &ModelOptions::default());
//! assert_eq!(f.forecast.mean.len(), 14);
//! assert!(f.forecast.lower.iter().zip(&f.forecast.upper).all(|(l, u)| l <= u));
//! ```

mod backtest;
mod exp_smoothing;
mod linear;
mod moving_average;
mod naive;
mod optimize;

pub use backtest::{DEFAULT_FOLDS, Metrics, backtest, backtest_from, mase_scale, smape_term};
pub use exp_smoothing::{DEFAULT_ALPHA, ExpSmoothing, PHI_BOUNDS, Trend};
pub use linear::LinearTrend;
pub use moving_average::{DEFAULT_SEASONS, DEFAULT_WINDOW, MovingAverage, SeasonalMovingAverage};
pub use naive::{Naive, SeasonalNaive};

use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::Result;

/// Point forecasts with a prediction interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Forecast {
    /// Point forecasts, one per step.
    pub mean: Vec<f64>,
    /// Lower bounds.
    pub lower: Vec<f64>,
    /// Upper bounds.
    pub upper: Vec<f64>,
}

impl Forecast {
    /// An empty forecast with room for `h` steps.
    pub fn with_capacity(h: usize) -> Forecast {
        Forecast {
            mean: Vec::with_capacity(h),
            lower: Vec::with_capacity(h),
            upper: Vec::with_capacity(h),
        }
    }

    /// Appends a step with bounds of its own (an interval that is not symmetric).
    pub fn push_bounds(&mut self, mean: f64, lower: f64, upper: f64) {
        self.mean.push(mean);
        self.lower.push(lower);
        self.upper.push(upper);
    }

    /// Appends a step: its mean and the interval's half-width.
    pub fn push(&mut self, mean: f64, half_width: f64) {
        self.mean.push(mean);
        self.lower.push(mean - half_width);
        self.upper.push(mean + half_width);
    }

    /// Whether every number is finite.
    pub fn is_finite(&self) -> bool {
        self.mean
            .iter()
            .chain(&self.lower)
            .chain(&self.upper)
            .all(|v| v.is_finite())
    }
}

/// An unfitted model.
pub trait Forecaster: Sync {
    /// The model's name (`ses`, `holt_winters`, ...).
    fn name(&self) -> &'static str;
    /// The fewest points it fits on.
    fn min_len(&self) -> usize;
    /// Fits on consecutive observations.
    fn fit(&self, y: &[f64]) -> Result<Box<dyn Fitted>>;
    /// Fits each of several series, as [`Forecaster::fit`] does one (a model may fit them
    /// side by side, faster, with the same results).
    fn fit_many(&self, ys: &[&[f64]]) -> Vec<Result<Box<dyn Fitted>>> {
        ys.iter().map(|y| self.fit(y)).collect()
    }
}

/// A fitted model.
pub trait Fitted: Send {
    /// Forecasts `h` steps with a `level` (0..1) prediction interval.
    fn predict(&self, h: usize, level: f64) -> Forecast;
    /// The fitted parameters, for people.
    fn params(&self) -> String;
    /// The model's name.
    fn name(&self) -> &'static str;
    /// Its corrected Akaike information criterion on the scale of the data, for models
    /// with a likelihood (exponential smoothing); None for the others.
    fn aicc(&self) -> Option<f64> {
        None
    }
}

/// The standard normal quantile for a two-sided `level` interval (0.95 → 1.96).
pub fn normal_quantile(level: f64) -> f64 {
    Normal::new(0.0, 1.0)
        .map(|d| d.inverse_cdf(0.5 + level / 2.0))
        .unwrap_or(1.96)
}

/// The models, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Per series, the model with the lowest AICc or backtest MASE ([`Criterion`]).
    Auto,
    /// Linear trend (with calendar dummies).
    Linear,
    /// Mean of the last N values.
    MovingAverage,
    /// Mean of the same phase over the last K seasons.
    SeasonalMovingAverage,
    /// Simple exponential smoothing.
    Ses,
    /// Holt's linear trend.
    Holt,
    /// Holt's damped trend.
    HoltDamped,
    /// Additive Holt-Winters.
    HoltWinters,
    /// Multiplicative Holt-Winters (damped, fitted to the logarithms).
    HoltWintersMul,
    /// Exponential smoothing with a multiplicative season and no trend (fitted to the logarithms).
    SesSeasonalMul,
    /// The last value.
    Naive,
    /// The value one season ago.
    SeasonalNaive,
}

impl ModelKind {
    /// What `auto` considers by default, in this order (a tie goes to the earlier one): SES,
    /// Holt, damped Holt, and for seasonal series additive Holt-Winters and the two
    /// multiplicative models (on positive series only).
    ///
    /// The non-seasonal part and the fold count ([`DEFAULT_FOLDS`]) were chosen by
    /// `benches/accuracy/m4cv.py` on validation origins inside M4 Weekly's training part
    /// only (the simplest configuration within one standard error of the best): that data
    /// has no season (m = 1), so it cannot judge the seasonal models. Those follow
    /// statsforecast's AutoETS, which chooses among the same shapes by AICc
    /// ([`ModelOptions::criterion_for`]): additive, damped multiplicative and trendless
    /// multiplicative seasons. The seasonal naive is no longer among them: chosen by the
    /// backtest's few windows on short histories it won where Holt-Winters was clearly
    /// better (a daily page-view series, a 5-minute call-volume series), and it has no
    /// likelihood to compare by AICc; it stays the baseline every backtest is reported
    /// against. Naive, seasonal naive, the linear trend and the moving averages stay
    /// available by name and through `--candidates`.
    pub const CANDIDATES: [ModelKind; 6] = [
        ModelKind::Ses,
        ModelKind::Holt,
        ModelKind::HoltDamped,
        ModelKind::HoltWinters,
        ModelKind::HoltWintersMul,
        ModelKind::SesSeasonalMul,
    ];

    /// Every kind, `auto` included, in declaration order (the order `--help` lists them).
    pub const ALL: [ModelKind; 12] = [
        ModelKind::Auto,
        ModelKind::Linear,
        ModelKind::MovingAverage,
        ModelKind::SeasonalMovingAverage,
        ModelKind::Ses,
        ModelKind::Holt,
        ModelKind::HoltDamped,
        ModelKind::HoltWinters,
        ModelKind::HoltWintersMul,
        ModelKind::SesSeasonalMul,
        ModelKind::Naive,
        ModelKind::SeasonalNaive,
    ];

    /// Its name (snake_case), as on the command line, in the configuration and the API.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Auto => "auto",
            ModelKind::Linear => "linear",
            ModelKind::MovingAverage => "moving_average",
            ModelKind::SeasonalMovingAverage => "seasonal_moving_average",
            ModelKind::Ses => "ses",
            ModelKind::Holt => "holt",
            ModelKind::HoltDamped => "holt_damped",
            ModelKind::HoltWinters => "holt_winters",
            ModelKind::HoltWintersMul => "holt_winters_mul",
            ModelKind::SesSeasonalMul => "ses_seasonal_mul",
            ModelKind::Naive => "naive",
            ModelKind::SeasonalNaive => "seasonal_naive",
        }
    }

    /// The simpler model used when this one cannot fit.
    pub fn fallback(self) -> Option<ModelKind> {
        use ModelKind::*;
        match self {
            HoltWintersMul | SesSeasonalMul => Some(HoltWinters),
            HoltWinters => Some(Holt),
            HoltDamped | Holt => Some(Ses),
            Ses | MovingAverage | SeasonalNaive | Linear => Some(Naive),
            SeasonalMovingAverage => Some(MovingAverage),
            Naive | Auto => None,
        }
    }

    /// Whether its fit has a likelihood (an AICc): the exponential smoothing models.
    pub fn likelihood(self) -> bool {
        matches!(
            self,
            ModelKind::Ses
                | ModelKind::Holt
                | ModelKind::HoltDamped
                | ModelKind::HoltWinters
                | ModelKind::HoltWintersMul
                | ModelKind::SesSeasonalMul
        )
    }

    /// Whether it is fitted to the logarithms (positive series only).
    pub fn logarithmic(self) -> bool {
        matches!(self, ModelKind::HoltWintersMul | ModelKind::SesSeasonalMul)
    }

    /// Whether it needs a season length above 1.
    pub fn seasonal(self) -> bool {
        matches!(
            self,
            ModelKind::HoltWinters
                | ModelKind::HoltWintersMul
                | ModelKind::SesSeasonalMul
                | ModelKind::SeasonalNaive
                | ModelKind::SeasonalMovingAverage
        )
    }
}

crate::error::named_enum!(ModelKind, "model");

/// How `auto` chooses among its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The lowest MASE on rolling-origin backtest folds.
    Backtest,
    /// The exponential smoothing model with the lowest AICc on the whole history (as R's
    /// `ets` and statsforecast's AutoETS choose); candidates without a likelihood (seasonal
    /// naive, moving averages, linear, naive) then meet it in the backtest.
    Aicc,
}

impl Criterion {
    /// Every criterion, in declaration order.
    pub const ALL: [Criterion; 2] = [Criterion::Backtest, Criterion::Aicc];

    /// Its name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Backtest => "backtest",
            Criterion::Aicc => "aicc",
        }
    }
}

crate::error::named_enum!(Criterion, "criterion");

/// Model settings shared by every series of a run.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Season length (1: none).
    pub season_length: usize,
    /// Moving-average window.
    pub window: usize,
    /// Seasons averaged by the seasonal moving average.
    pub seasons: usize,
    /// Fixed smoothing parameters (any of them turns optimisation off).
    pub alpha: Option<f64>,
    /// β (trend).
    pub beta: Option<f64>,
    /// γ (season).
    pub gamma: Option<f64>,
    /// φ (damping).
    pub phi: Option<f64>,
    /// Calendar dummies in the linear model.
    pub calendar: bool,
    /// Backtest folds.
    pub folds: usize,
    /// The models `auto` chooses from.
    pub candidates: Vec<ModelKind>,
    /// How `auto` chooses; None: by the series ([`ModelOptions::criterion_for`]).
    pub criterion: Option<Criterion>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            season_length: 7,
            window: DEFAULT_WINDOW,
            seasons: DEFAULT_SEASONS,
            alpha: None,
            beta: None,
            gamma: None,
            phi: None,
            calendar: true,
            folds: DEFAULT_FOLDS,
            candidates: ModelKind::CANDIDATES.to_vec(),
            criterion: None,
        }
    }
}

impl ModelOptions {
    /// The criterion `auto` uses on a series with season length `m`: the one set, or by
    /// default AICc on a seasonal series of positive values and the backtest on the others.
    ///
    /// Chosen on data apart from what is reported, each where it could judge:
    /// - no season: on M4 Weekly's validation origins inside its training part the
    ///   backtest's OWA is 0.937 and AICc's 0.963 (2.5 standard errors apart). A trend's
    ///   extrapolation is what a backtest judges.
    /// - seasonal and positive: five backtest windows on a short history cannot tell an
    ///   additive season from a multiplicative one, while the likelihood of every one-step
    ///   error can. On weekly-seasonal panels from `benches/peers/seasonal_auto.py`'s
    ///   generator with seeds it does not report (21-23), sMAPE 8.96 / 9.09 / 9.41 by
    ///   backtest, 8.72 / 9.00 / 9.42 by AICc.
    /// - a zero or a negative value: only the additive models fit, on errors that are far
    ///   from Gaussian (intermittent usage), so the likelihood says little. On the bundled
    ///   sample lake's 93 daily series, three origins and h = 14 (the last 14 days never
    ///   used), mean MASE 6.85 by backtest and 7.15 by AICc everywhere, 7.10 with AICc on
    ///   the positive series only.
    pub fn criterion_for(&self, m: usize, positive: bool) -> Criterion {
        self.criterion.unwrap_or(if m >= 2 && positive {
            Criterion::Aicc
        } else {
            Criterion::Backtest
        })
    }

    /// The model of a kind (None for `auto`, or a seasonal model without a season).
    pub fn model(&self, kind: ModelKind) -> Option<Box<dyn Forecaster>> {
        let m = self.season_length;
        if kind.seasonal() && m < 2 {
            return None;
        }
        let ets = |mut e: ExpSmoothing| {
            let fixed = self.alpha.is_some()
                || self.beta.is_some()
                || self.gamma.is_some()
                || self.phi.is_some();
            if fixed {
                e = e.fixed();
                if let Some(a) = self.alpha {
                    e = e.with_alpha(a);
                }
                if let Some(b) = self.beta {
                    e = e.with_beta(b);
                }
                if let Some(g) = self.gamma {
                    e = e.with_gamma(g);
                }
                if let Some(p) = self.phi {
                    e = e.with_phi(p);
                }
            }
            Box::new(e) as Box<dyn Forecaster>
        };
        Some(match kind {
            ModelKind::Auto => return None,
            ModelKind::Linear => Box::new(LinearTrend {
                m,
                calendar: self.calendar,
            }),
            ModelKind::MovingAverage => Box::new(MovingAverage {
                window: self.window,
            }),
            ModelKind::SeasonalMovingAverage => Box::new(SeasonalMovingAverage {
                m,
                seasons: self.seasons,
            }),
            ModelKind::Ses => ets(ExpSmoothing::ses()),
            ModelKind::Holt => ets(ExpSmoothing::holt()),
            ModelKind::HoltDamped => ets(ExpSmoothing::holt_damped()),
            ModelKind::HoltWinters => ets(ExpSmoothing::holt_winters(m)),
            ModelKind::HoltWintersMul => ets(ExpSmoothing::holt_winters_mul(m)),
            ModelKind::SesSeasonalMul => ets(ExpSmoothing::ses_seasonal_mul(m)),
            ModelKind::Naive => Box::new(Naive),
            ModelKind::SeasonalNaive => Box::new(SeasonalNaive { m }),
        })
    }
}

/// The forecast of one series.
#[derive(Debug, Clone)]
pub struct SeriesForecast {
    /// The model that produced it (after any fallback or `auto` choice); none without data.
    pub model: Option<&'static str>,
    /// Its fitted parameters.
    pub params: String,
    /// `ok`, or what happened (fallback, `auto`'s choice, no data).
    pub status: String,
    /// The forecast (empty without data).
    pub forecast: Forecast,
    /// Backtest accuracy of that model on this series, when the history allows one.
    pub metrics: Option<Metrics>,
    /// The seasonal naive's backtest (the naive's without a season) on the same folds and
    /// horizon as `metrics`: the yardstick a model must beat to be worth its fit.
    pub baseline: Option<Metrics>,
    /// Whether the model asked for could not be used (a simpler one was, or none).
    pub fell_back: bool,
}

/// Fits `kind` (falling back as needed) and forecasts `h` steps.
pub fn forecast_one(
    y: &[f64],
    h: usize,
    level: f64,
    kind: ModelKind,
    opts: &ModelOptions,
) -> SeriesForecast {
    forecast_one_fitted(y, h, level, kind, opts, None)
}

/// [`forecast_one`] with the model `kind` already fitted to `y` (by
/// [`Forecaster::fit_many`] with other series).
pub fn forecast_one_fitted(
    y: &[f64],
    h: usize,
    level: f64,
    kind: ModelKind,
    opts: &ModelOptions,
    fitted: Option<Box<dyn Fitted>>,
) -> SeriesForecast {
    let empty = |status: String| SeriesForecast {
        model: None,
        params: String::new(),
        status,
        forecast: Forecast::default(),
        metrics: None,
        baseline: None,
        fell_back: true,
    };
    if y.is_empty() {
        return empty("no data".into());
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return empty(format!("value {i} is not a finite number"));
    }
    let m = opts.season_length;
    let mut notes: Vec<String> = Vec::new();
    let mut kind = kind;
    let mut metrics = None;
    // The horizon and first origin `metrics` was scored with (for the baseline's folds).
    let mut scored_on = (h, 0usize);
    // The AICc winner's fit on the whole history, kept for the final forecast.
    let mut prefit: Option<(ModelKind, Box<dyn Fitted>)> = fitted.map(|f| (kind, f));
    if kind == ModelKind::Auto {
        let mut best: Option<(ModelKind, Metrics)> = None;
        // The multiplicative model cannot fit a series with a zero or a negative value; left
        // in, it would be scored on the folds before that value only, and a win there
        // would end in a fallback the backtest never judged.
        let positive = y.iter().all(|&v| v > 0.0);
        let models: Vec<_> = opts
            .candidates
            .iter()
            .filter(|&&c| positive || !c.logarithmic())
            .filter_map(|&c| Some((c, opts.model(c)?)))
            .collect();
        let none_applies = models.is_empty();
        // Every candidate is scored on the same origins: from the history of the most
        // demanding candidate that can be backtested at all on (else a seasonal model
        // needing two long seasons is judged on the last, easiest folds only and a simpler
        // one on the early, hard ones too). A candidate that can fit the series but not
        // leave a whole horizon out (Holt-Winters with a long season and three seasons of
        // history) is still compared: on a shorter backtest horizon, down to half of h.
        let n = y.len();
        let min_origin = models
            .iter()
            .map(|(_, model)| model.min_len().max(1))
            .filter(|&l| l < n && n - l >= h.div_ceil(2))
            .max()
            .unwrap_or(0);
        let bh = h.min(n.saturating_sub(min_origin)).max(1);
        if bh < h {
            notes.push(format!(
                "auto: backtest horizon {bh} (history too short for {h})"
            ));
        }
        let mut models = models;
        // By AICc: the likelihood models are fitted to the whole history and the lowest
        // AICc stays; models without a likelihood (seasonal naive, ...) then meet it in the
        // backtest below. The backtest of a lone winner only measures it.
        let mut by_aicc: Option<(ModelKind, f64)> = None;
        if opts.criterion_for(m, positive) == Criterion::Aicc {
            for (c, model) in &models {
                if c.likelihood()
                    && n >= model.min_len()
                    && let Ok(f) = model.fit(y)
                    && let Some(ic) = f.aicc()
                    && f.predict(h, level).is_finite()
                    && by_aicc.is_none_or(|(_, b)| ic < b)
                {
                    by_aicc = Some((*c, ic));
                    prefit = Some((*c, f));
                }
            }
            if let Some((w, _)) = by_aicc {
                models.retain(|(c, _)| *c == w || !c.likelihood());
            }
        }
        let mut winner_scored = false;
        for (c, model) in models {
            if let Some(mt) = backtest_from(model.as_ref(), y, bh, opts.folds, level, m, min_origin)
                && mt.mase.is_finite()
            {
                winner_scored |= by_aicc.is_some_and(|(w, _)| w == c);
                if best.is_none_or(|(_, b)| mt.mase < b.mase) {
                    best = Some((c, mt));
                }
            }
        }
        if let Some((w, ic)) = by_aicc {
            notes.push(format!("auto: lowest AICc {ic:.1} ({})", w.name()));
            if !winner_scored {
                // It fits the whole history but is too short to leave a horizon out: the
                // others' backtests have nothing to be compared with, so it stays.
                kind = w;
                best = None;
            }
        }
        match best {
            Some((c, mt)) => {
                notes.push(if by_aicc.is_some_and(|(w, _)| w == c) {
                    format!("its backtest MASE {:.3} over {} folds", mt.mase, mt.folds)
                } else {
                    format!(
                        "auto: lowest backtest MASE {:.3} over {} folds",
                        mt.mase, mt.folds
                    )
                });
                kind = c;
                metrics = Some(mt);
                let chosen = opts.model(c).map_or(1, |x| x.min_len());
                scored_on = (bh, chosen.max(min_origin));
            }
            None if by_aicc.is_some() => {}
            None => {
                notes.push(if none_applies {
                    "auto: no candidate applies to this series (multiplicative models need values above 0, seasonal ones a season above 1), used naive".into()
                } else {
                    "auto: too short to backtest, used naive".into()
                });
                kind = ModelKind::Naive;
            }
        }
    }
    // Fit, falling back to simpler models when the history is too short or a fit fails.
    let mut current = Some(kind);
    while let Some(k) = current {
        let Some(model) = opts.model(k) else {
            notes.push(format!("{k:?} needs a season length above 1"));
            current = k.fallback();
            continue;
        };
        let fitted = if let Some((_, f)) = prefit.take().filter(|(pk, _)| *pk == k) {
            Some(f)
        } else if y.len() < model.min_len() {
            notes.push(format!(
                "{} needs {} points, got {}",
                model.name(),
                model.min_len(),
                y.len()
            ));
            None
        } else {
            match model.fit(y) {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(format!("{}: {e}", model.name()));
                    None
                }
            }
        };
        if let Some(f) = fitted {
            let fc = f.predict(h, level);
            if fc.is_finite() {
                if k != kind {
                    notes.push(format!("fell back to {}", f.name()));
                    metrics = None;
                }
                if metrics.is_none() {
                    metrics = backtest(model.as_ref(), y, h, opts.folds, level, m);
                    scored_on = (h, model.min_len());
                }
                let baseline = metrics.and_then(|_| {
                    let naive: Box<dyn Forecaster> = if m >= 2 {
                        Box::new(SeasonalNaive { m })
                    } else {
                        Box::new(Naive)
                    };
                    let (bh, first) = scored_on;
                    backtest_from(naive.as_ref(), y, bh, opts.folds, level, m, first)
                });
                return SeriesForecast {
                    model: Some(f.name()),
                    params: f.params(),
                    status: if notes.is_empty() {
                        "ok".into()
                    } else {
                        notes.join("; ")
                    },
                    forecast: fc,
                    metrics,
                    baseline,
                    fell_back: k != kind,
                };
            }
            notes.push(format!("{} gave non-finite values", f.name()));
        }
        current = k.fallback();
    }
    empty(notes.join("; "))
}

/// Forecasts many series in parallel (rayon, one task per series), in input order.
pub fn forecast_many(
    series: &[&[f64]],
    h: usize,
    level: f64,
    kind: ModelKind,
    opts: &ModelOptions,
) -> Vec<SeriesForecast> {
    series
        .par_iter()
        .map(|y| forecast_one(y, h, level, kind, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline is the seasonal naive on the same folds: identical to the metrics when
    /// the model is the seasonal naive itself, and beaten by Holt on a steady trend.
    #[test]
    fn the_baseline_is_the_seasonal_naive_on_the_same_folds() {
        let opts = ModelOptions {
            season_length: 7,
            ..ModelOptions::default()
        };
        let y: Vec<f64> = (0..120)
            .map(|t| 100.0 + 2.0 * t as f64 + [0.0, 3.0, -2.0, 1.0, 4.0, -3.0, 0.5][t % 7])
            .collect();
        let sn = forecast_one(&y, 14, 0.95, ModelKind::SeasonalNaive, &opts);
        let (m, b) = (sn.metrics.unwrap(), sn.baseline.unwrap());
        assert_eq!((m.mae, m.folds, m.points), (b.mae, b.folds, b.points));
        let holt = forecast_one(&y, 14, 0.95, ModelKind::Holt, &opts);
        let (m, b) = (holt.metrics.unwrap(), holt.baseline.unwrap());
        assert_eq!((m.folds, m.points), (b.folds, b.points), "same folds");
        assert!(m.mae < b.mae, "holt {} against naive {}", m.mae, b.mae);
        let auto = forecast_one(&y, 14, 0.95, ModelKind::Auto, &opts);
        let (m, b) = (auto.metrics.unwrap(), auto.baseline.unwrap());
        assert_eq!(m.points, b.points);
        assert!(
            m.mae <= b.mae,
            "auto may pick the naive, never worse on its own folds"
        );
    }

    /// `days` of hourly data with a daily cycle, and auto's options to choose between naive
    /// and Holt-Winters with 5 folds.
    fn hourly_days(days: usize) -> (Vec<f64>, ModelOptions) {
        let y = (0..24 * days)
            .map(|t| {
                60.0 + 20.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin() + (t * 7 % 5) as f64
            })
            .collect();
        let opts = ModelOptions {
            season_length: 24,
            folds: 5,
            candidates: vec![ModelKind::Naive, ModelKind::HoltWinters],
            ..ModelOptions::default()
        };
        (y, opts)
    }

    #[test]
    fn auto_compares_candidates_on_the_same_origins() {
        // Five days of hourly data with a daily cycle, h = 24, 5 folds. Holt-Winters needs
        // 2·24 + 2 = 50 points, so every candidate is scored from origin 50 on, the chosen
        // one included: its metrics are its own backtest from there, not from origin 1.
        let (y, opts) = hourly_days(5);
        let f = forecast_one(&y, 24, 0.95, ModelKind::Auto, &opts);
        assert_eq!(f.model, Some("holt_winters"), "{}", f.status);
        let hw = opts.model(ModelKind::HoltWinters).unwrap();
        assert_eq!(
            f.metrics,
            backtest_from(hw.as_ref(), &y, 24, 5, 0.95, 24, 50)
        );
        let naive_only = ModelOptions {
            candidates: vec![ModelKind::Naive],
            ..opts.clone()
        };
        let f = forecast_one(&y, 24, 0.95, ModelKind::Auto, &naive_only);
        assert_eq!(f.metrics, backtest(&Naive, &y, 24, 5, 0.95, 24));
        assert_ne!(f.metrics, backtest_from(&Naive, &y, 24, 5, 0.95, 24, 50));
    }

    #[test]
    fn a_model_that_fits_but_cannot_leave_a_horizon_out_is_compared_on_a_shorter_one() {
        // Three days of hourly data, h = 24: Holt-Winters needs 50 points, so it cannot
        // leave 24 out, but it can leave 22: every candidate is backtested 22 ahead from
        // origin 50 on, and Holt-Winters stays in the running.
        let (y, opts) = hourly_days(3);
        let f = forecast_one(&y, 24, 0.95, ModelKind::Auto, &opts);
        assert!(f.status.contains("backtest horizon 22"), "{}", f.status);
        assert_eq!(f.model, Some("holt_winters"), "{}", f.status);
        let hw = opts.model(ModelKind::HoltWinters).unwrap();
        assert_eq!(
            f.metrics,
            backtest_from(hw.as_ref(), &y, 22, 5, 0.95, 24, 50)
        );
        // Below half a horizon the backtest leaves it out: 60 points leave only 10.
        let by_backtest = ModelOptions {
            criterion: Some(Criterion::Backtest),
            ..opts.clone()
        };
        let f = forecast_one(&y[..60], 24, 0.95, ModelKind::Auto, &by_backtest);
        assert_eq!(f.model, Some("naive"), "{}", f.status);
        // By AICc it wins on the whole history, and with no backtest of its own to compare,
        // the naive's backtest does not overrule it.
        let f = forecast_one(&y[..60], 24, 0.95, ModelKind::Auto, &opts);
        assert_eq!(f.model, Some("holt_winters"), "{}", f.status);
        assert!(
            f.status.starts_with("auto: lowest AICc") && f.status.contains("(holt_winters)"),
            "{}",
            f.status
        );
    }

    #[test]
    fn short_histories_fall_back_and_never_give_nan() {
        let opts = ModelOptions::default();
        for kind in [
            ModelKind::Auto,
            ModelKind::HoltWinters,
            ModelKind::HoltDamped,
            ModelKind::Linear,
            ModelKind::SeasonalNaive,
            ModelKind::SeasonalMovingAverage,
        ] {
            for n in 0..20usize {
                let y: Vec<f64> = (0..n).map(|t| (t * 3 % 5) as f64).collect();
                let f = forecast_one(&y, 7, 0.9, kind, &opts);
                if n == 0 {
                    assert!(f.model.is_none() && f.status == "no data", "{kind:?}");
                    continue;
                }
                assert_eq!(f.forecast.mean.len(), 7, "{kind:?} n={n}: {}", f.status);
                assert!(f.forecast.is_finite(), "{kind:?} n={n}");
            }
        }
        let f = forecast_one(&[1.0, 2.0, 3.0], 2, 0.95, ModelKind::HoltWinters, &opts);
        assert!(
            f.status.contains("holt_winters needs 16 points, got 3"),
            "{}",
            f.status
        );
        assert_eq!(f.model, Some("ses"), "holt needs 4 points too");
    }
}
