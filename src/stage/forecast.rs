//! The forecast stage: series from a file or from the lake's rollups → the models of
//! [`crate::forecast`] in parallel (one rayon task per series) → forecast and metrics
//! tables (CSV or Parquet; on the lake, [`tables::forecasts`]).
//!
//! This is the stage the job, the CLI and the HTTP API call; the models themselves only
//! see plain `&[f64]` and know nothing of the lake.
//!
//! On the lake, a series' isolated anomalies are replaced by what the anomaly detector
//! expected there before the models see it ([`clean_spikes`]): one spike (a flagged
//! incident) would otherwise widen every later interval and, for the smoothing models,
//! lift the level. Usage that was never negative is not forecast below zero (the forecast
//! and its bounds are cut at 0). A series from a file is forecast as given.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::tables::{self, write_frame};
use crate::error::{Error, Result};
use crate::forecast::{Fitted, ModelKind, ModelOptions, SeriesForecast, forecast_one_fitted};
use crate::lake::Lake;
use crate::rollup::{Granularity, Meters, RollupOptions, RollupSpec, rollup, rollup_series_of};
use crate::series::{Fill, Series, all_dates, read_series};
use crate::time::write_ts;

/// What to forecast and how.
#[derive(Debug, Clone)]
pub struct ForecastSpec {
    /// Steps ahead.
    pub horizon: usize,
    /// Interval level, 0..1.
    pub level: f64,
    /// The model (or `auto`).
    pub model: ModelKind,
    /// Model settings; `season_length` is overridden per series by its step unless
    /// `season_fixed`.
    pub options: ModelOptions,
    /// Whether `options.season_length` was given (else it comes from each series' step).
    pub season_fixed: bool,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// How missing steps are filled.
    pub fill: Fill,
}

impl ForecastSpec {
    /// Checks the parameters, naming the one that is off.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, reason: String| Err(Error::InvalidParameter { name, reason });
        if self.horizon == 0 || self.horizon > 100_000 {
            return bad(
                "--horizon",
                format!("{} is not in 1..=100000", self.horizon),
            );
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return bad(
                "--level",
                format!("{} is not a percentage in (0, 100)", self.level * 100.0),
            );
        }
        let o = &self.options;
        for (name, v) in [
            ("--alpha", o.alpha),
            ("--beta", o.beta),
            ("--gamma", o.gamma),
            ("--phi", o.phi),
        ] {
            if let Some(v) = v
                && !(v > 0.0 && v <= 1.0)
            {
                return bad(name, format!("{v} is not in (0, 1]"));
            }
        }
        if o.season_length == 0 {
            return bad("--season-length", "must be at least 1".into());
        }
        if o.window == 0 {
            return bad("--window", "must be at least 1".into());
        }
        if o.seasons == 0 {
            return bad("--seasons", "must be at least 1".into());
        }
        if o.folds == 0 && self.model == ModelKind::Auto {
            return bad("--folds", "auto needs at least 1 backtest fold".into());
        }
        if self.threads == Some(0) {
            return bad("--threads", "must be at least 1".into());
        }
        Ok(())
    }
}

/// One series' result.
#[derive(Debug, Clone)]
pub struct SeriesResult {
    /// The series' id.
    pub id: String,
    /// Forecast instants (UTC µs).
    pub ts: Vec<i64>,
    /// The model's output.
    pub result: SeriesForecast,
}

/// Series fitted together by a fixed model ([`forecast_series`]).
const FIT_BLOCK: usize = 64;

/// Forecasts every series (in parallel, on `threads` workers).
pub fn forecast_series(series: &[Series], spec: &ForecastSpec) -> Result<Vec<SeriesResult>> {
    spec.validate()?;
    let run = || {
        use rayon::prelude::*;
        // Blocks of series: a fixed model fits a block's series together
        // (`Forecaster::fit_many`; SES side by side), then each is forecast on its own,
        // in parallel within blocks too (a few series still use every thread).
        series
            .par_chunks(FIT_BLOCK)
            .flat_map(|block| {
                let prepared: Vec<_> = block
                    .iter()
                    .map(|s| {
                        let (s, missing) = s.regular(spec.fill);
                        let step = s.step();
                        let mut opts = spec.options.clone();
                        if !spec.season_fixed {
                            opts.season_length = step.default_season();
                        }
                        (s, missing, step, opts)
                    })
                    .collect();
                let mut fitted: Vec<Option<Box<dyn Fitted>>> =
                    prepared.iter().map(|_| None).collect();
                // The options differ between series by their season length only.
                let same = prepared
                    .windows(2)
                    .all(|w| w[0].3.season_length == w[1].3.season_length);
                if spec.model != ModelKind::Auto
                    && same
                    && let Some(model) = prepared.first().and_then(|p| p.3.model(spec.model))
                {
                    let ys: Vec<&[f64]> = prepared.iter().map(|p| &p.0.values[..]).collect();
                    for (slot, f) in fitted.iter_mut().zip(model.fit_many(&ys)) {
                        *slot = f.ok();
                    }
                }
                prepared.into_iter().zip(fitted).collect::<Vec<_>>()
            })
            .map(|((s, missing, step, opts), fitted)| {
                let mut result = forecast_one_fitted(
                    &s.values,
                    spec.horizon,
                    spec.level,
                    spec.model,
                    &opts,
                    fitted,
                );
                if missing > 0 {
                    let how = match spec.fill {
                        Fill::Interpolate => "filled by linear interpolation",
                        Fill::Zero => "filled with 0",
                        Fill::Previous => "filled with the previous value",
                        Fill::None => "treated as consecutive",
                    };
                    result.status = format!("{missing} missing steps {how}; {}", result.status);
                }
                let last = *s.ts.last().unwrap_or(&0);
                let ts = (1..=result.forecast.mean.len())
                    .map(|k| step.after(last, k))
                    .collect();
                SeriesResult {
                    id: s.id.clone(),
                    ts,
                    result,
                }
            })
            .collect::<Vec<_>>()
    };
    with_threads(spec.threads, run)
}

/// Runs `run` on a rayon pool of `threads` workers (`--threads`), or on the global pool
/// (all cores) when None.
pub fn with_threads<T: Send>(threads: Option<usize>, run: impl FnOnce() -> T + Send) -> Result<T> {
    match threads {
        Some(0) => Err(Error::InvalidParameter {
            name: "--threads",
            reason: "must be at least 1".into(),
        }),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::InvalidParameter {
                name: "--threads",
                reason: e.to_string(),
            })
            .map(|p| p.install(run)),
        None => Ok(run()),
    }
}

/// What a forecast run did.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastSummary {
    /// Series read.
    pub series: usize,
    /// Series forecast.
    pub forecast: usize,
    /// Series whose model fell back to a simpler one, or that could not be forecast.
    pub fell_back: usize,
    /// Series with missing steps filled.
    pub filled: usize,
    /// Rows written to the forecast table.
    pub rows: usize,
    /// Models used, with their series counts.
    pub models: std::collections::BTreeMap<String, usize>,
    /// Mean backtest MASE over series that have one.
    pub mean_mase: Option<f64>,
    /// Their median (a few near-constant series inflate the mean).
    pub median_mase: Option<f64>,
    /// Percent of the series with a backtest whose model beat the seasonal naive on the
    /// same folds.
    pub beat_naive_pct: Option<f64>,
    /// Mean backtest sMAPE.
    pub mean_smape: Option<f64>,
    /// Seconds spent reading the input (file parsing, or the rollup and its scan).
    pub read_seconds: f64,
    /// Seconds spent fitting, backtesting and forecasting.
    pub forecast_seconds: f64,
    /// Seconds spent writing the outputs.
    pub write_seconds: f64,
    /// The forecast table.
    pub out: PathBuf,
    /// The metrics table.
    pub metrics: Option<PathBuf>,
}

fn summarize(
    results: &[SeriesResult],
    out: &Path,
    metrics: Option<&Path>,
    seconds: [f64; 3],
) -> ForecastSummary {
    let mut models = std::collections::BTreeMap::new();
    for r in results {
        if let Some(m) = r.result.model {
            *models.entry(m.to_string()).or_default() += 1;
        }
    }
    let with: Vec<_> = results.iter().filter_map(|r| r.result.metrics).collect();
    let mean = |f: fn(&crate::forecast::Metrics) -> f64| {
        (!with.is_empty()).then(|| with.iter().map(f).sum::<f64>() / with.len() as f64)
    };
    ForecastSummary {
        series: results.len(),
        forecast: results.iter().filter(|r| r.result.model.is_some()).count(),
        fell_back: results.iter().filter(|r| r.result.fell_back).count(),
        filled: results
            .iter()
            .filter(|r| r.result.status.contains("missing steps"))
            .count(),
        rows: results.iter().map(|r| r.ts.len()).sum(),
        models,
        mean_mase: mean(|m| m.mase),
        median_mase: {
            let mut v: Vec<f64> = with
                .iter()
                .map(|m| m.mase)
                .filter(|x| x.is_finite())
                .collect();
            (!v.is_empty()).then(|| crate::detect::median(&mut v))
        },
        beat_naive_pct: {
            let pairs: Vec<(f64, f64)> = results
                .iter()
                .filter_map(|r| Some((r.result.metrics?.mase, r.result.baseline?.mase)))
                .filter(|(m, n)| m.is_finite() && n.is_finite())
                .collect();
            (!pairs.is_empty()).then(|| {
                100.0 * pairs.iter().filter(|(m, n)| m < n).count() as f64 / pairs.len() as f64
            })
        },
        mean_smape: mean(|m| m.smape),
        read_seconds: seconds[0],
        forecast_seconds: seconds[1],
        write_seconds: seconds[2],
        out: out.to_path_buf(),
        metrics: metrics.map(Path::to_path_buf),
    }
}

/// How a series id splits into the key columns.
type Split<'a> = &'a (dyn Fn(&str) -> Vec<String> + Sync);

/// Forecast and metrics tables of some results. `keys` splits a series id into key columns
/// (`series_id`, or `tenant_id` and `meter` for the lake). Blocks of series are built in
/// parallel and stacked in order, into one chunk each.
fn tables(
    results: &[SeriesResult],
    keys: &[&str],
    split: Split,
    dates: bool,
) -> Result<(DataFrame, DataFrame)> {
    use rayon::prelude::*;
    let blocks: Vec<&[SeriesResult]> = if results.is_empty() {
        vec![results]
    } else {
        results.chunks(4096).collect()
    };
    let frames = blocks
        .par_iter()
        .map(|b| tables_of(b, keys, split, dates))
        .collect::<Result<Vec<_>>>()?;
    let mut frames = frames.into_iter();
    let (mut f, mut m) = frames.next().unwrap_or_default();
    for (bf, bm) in frames {
        f.vstack_mut_owned(bf)?;
        m.vstack_mut_owned(bm)?;
    }
    f.rechunk_mut();
    m.rechunk_mut();
    Ok((f, m))
}

/// [`tables`] of one block of results.
fn tables_of(
    results: &[SeriesResult],
    keys: &[&str],
    split: Split,
    dates: bool,
) -> Result<(DataFrame, DataFrame)> {
    let parts: Vec<Vec<String>> = results.iter().map(|r| split(&r.id)).collect();
    let mut kcols: Vec<Vec<&str>> = vec![Vec::new(); keys.len()];
    let (mut ts, mut model, mut yhat, mut lo, mut hi) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut mkeys: Vec<Vec<&str>> = vec![Vec::new(); keys.len()];
    let mut mcols: [Vec<Option<f64>>; 6] = Default::default();
    let (mut mmodel, mut mstatus, mut mparams) = (Vec::new(), Vec::new(), Vec::new());
    for (r, parts) in results.iter().zip(&parts) {
        let f = &r.result.forecast;
        for i in 0..f.mean.len() {
            for (c, p) in kcols.iter_mut().zip(parts) {
                c.push(p);
            }
            ts.push(r.ts[i]);
            model.push(r.result.model.unwrap_or_default());
            yhat.push(f.mean[i]);
            lo.push(f.lower[i]);
            hi.push(f.upper[i]);
        }
        for (c, p) in mkeys.iter_mut().zip(parts) {
            c.push(p);
        }
        let m = r.result.metrics;
        for (c, v) in mcols.iter_mut().zip([
            m.map(|m| m.mae),
            m.map(|m| m.rmse),
            m.map(|m| m.smape),
            m.map(|m| m.mase),
            m.map(|m| m.coverage),
            r.result.baseline.map(|b| b.mase),
        ]) {
            c.push(v);
        }
        mmodel.push(r.result.model.unwrap_or_default());
        mstatus.push(r.result.status.as_str());
        mparams.push(r.result.params.as_str());
    }
    let mut fc: Vec<Column> = keys
        .iter()
        .zip(kcols)
        .map(|(k, v)| Column::new((*k).into(), v))
        .collect();
    fc.push(if dates {
        let mut b = StringChunkedBuilder::new("ts".into(), ts.len());
        let mut text = String::new();
        for &t in &ts {
            text.clear();
            write_ts(&mut text, t, true);
            b.append_value(&text);
        }
        b.finish().into_column()
    } else {
        Column::new("ts".into(), ts).cast(&crate::rollup::utc_datetime())?
    });
    fc.push(Column::new("model".into(), model));
    fc.push(Column::new("yhat".into(), yhat));
    fc.push(Column::new("yhat_lower".into(), lo));
    fc.push(Column::new("yhat_upper".into(), hi));
    let mut mc: Vec<Column> = keys
        .iter()
        .zip(mkeys)
        .map(|(k, v)| Column::new((*k).into(), v))
        .collect();
    mc.push(Column::new("model".into(), mmodel));
    for (name, v) in ["mae", "rmse", "smape", "mase", "coverage", "naive_mase"]
        .iter()
        .zip(mcols)
    {
        mc.push(Column::new((*name).into(), v));
    }
    mc.push(Column::new("status".into(), mstatus));
    mc.push(Column::new("params".into(), mparams));
    Ok((
        DataFrame::new_infer_height(fc)?,
        DataFrame::new_infer_height(mc)?,
    ))
}

/// `forecast --series FILE --out OUT [--metrics M]`.
pub fn forecast_file(
    input: &Path,
    out: &Path,
    metrics: Option<&Path>,
    spec: &ForecastSpec,
) -> Result<ForecastSummary> {
    spec.validate()?;
    let clock = std::time::Instant::now();
    let series = read_series(input)?;
    let read = clock.elapsed().as_secs_f64();
    let results = forecast_series(&series, spec)?;
    let fit = clock.elapsed().as_secs_f64() - read;
    let (mut f, mut m) = tables(
        &results,
        &["series_id"],
        &|id| vec![id.to_string()],
        all_dates(&series),
    )?;
    write_frame(out, &mut f)?;
    if let Some(p) = metrics {
        write_frame(p, &mut m)?;
    }
    let write = clock.elapsed().as_secs_f64() - read - fit;
    Ok(summarize(&results, out, metrics, [read, fit, write]))
}

/// `forecast --lake DIR --granularity G`: brings the rollup up to date, forecasts every
/// tenant × meter series and writes `LAKE/forecasts/granularity=G/{forecast,metrics}.parquet`.
pub fn forecast_lake(
    lake_dir: &Path,
    meters: &Meters,
    granularity: Granularity,
    spec: &ForecastSpec,
) -> Result<ForecastSummary> {
    forecast_lake_for(lake_dir, meters, granularity, spec, tables::Part::default())
}

/// [`forecast_lake`] for a `part` of the series (some series, one shard's tenants): their
/// rows of the forecast tables are replaced, the other series' kept
/// ([`tables::replace_rows`]), so the tables equal a whole run's. The summary counts the
/// series forecast now.
pub fn forecast_lake_for(
    lake_dir: &Path,
    meters: &Meters,
    granularity: Granularity,
    spec: &ForecastSpec,
    part: tables::Part,
) -> Result<ForecastSummary> {
    spec.validate()?;
    let lake = Lake::open(lake_dir)?;
    let rspec = RollupSpec::new(granularity);
    let clock = std::time::Instant::now();
    // A sharded worker rolls up its shard; otherwise every shard of the stored layout.
    let ropts = RollupOptions {
        shard: (!part.shard.is_all()).then_some(part.shard),
        ..RollupOptions::default()
    };
    rollup(&lake, meters, &rspec, &ropts)?;
    let keep = |t: &str, m: &str| part.covers(t, m);
    let series: Vec<Series> = rollup_series_of(&lake, &rspec, part.shard, &keep)?
        .into_iter()
        .map(|r| Series {
            id: format!("{}\u{1f}{}", r.tenant_id, r.meter),
            ts: r.ts,
            values: r.values,
        })
        .collect();
    let read = clock.elapsed().as_secs_f64();
    let mut series = series;
    // Whether each series was never negative, before cleaning touches it.
    let nonneg: Vec<bool> = series
        .iter()
        .map(|s| s.values.iter().all(|v| *v >= 0.0))
        .collect();
    let cleaned: Vec<usize> = {
        use rayon::prelude::*;
        series.par_iter_mut().map(clean_spikes).collect()
    };
    let mut results = forecast_series(&series, spec)?;
    for ((r, n), never_negative) in results.iter_mut().zip(cleaned).zip(nonneg) {
        // Usage that was never negative is not forecast below zero.
        if never_negative {
            let f = &mut r.result.forecast;
            for v in f.mean.iter_mut().chain(&mut f.lower).chain(&mut f.upper) {
                *v = v.max(0.0);
            }
        }
        if n > 0 {
            r.result.status = format!(
                "{n} anomalous point{} replaced by the expected value before fitting; {}",
                if n == 1 { "" } else { "s" },
                r.result.status
            );
        }
    }
    let fit = clock.elapsed().as_secs_f64() - read;
    let split = |id: &str| id.split('\u{1f}').map(str::to_string).collect::<Vec<_>>();
    let (mut f, mut mt) = tables(&results, &["tenant_id", "meter"], &split, false)?;
    let dir = tables::forecasts::dir(lake_dir, &granularity.to_string());
    let (out, metrics) = (
        dir.join(tables::forecasts::FORECAST_FILE),
        dir.join(tables::forecasts::METRICS_FILE),
    );
    // Other shards may update the tables at the same time: one at a time.
    let _lock = (!part.is_whole())
        .then(|| crate::lake::lock_dir(&dir))
        .transpose()?;
    if !part.is_whole() {
        f = tables::replace_rows(&out, f, &part, &["tenant_id", "meter", "ts"])?;
        mt = tables::replace_rows(&metrics, mt, &part, &["tenant_id", "meter"])?;
    }
    write_frame(&out, &mut f)?;
    write_frame(&metrics, &mut mt)?;
    let write = clock.elapsed().as_secs_f64() - read - fit;
    Ok(summarize(
        &results,
        &out,
        Some(&metrics),
        [read, fit, write],
    ))
}

/// Flagged runs at most this long are replaced by [`clean_spikes`]; a longer one is a change
/// the forecast must see.
pub const CLEAN_MAX_RUN: usize = 3;
/// Points [`clean_spikes`] judges, at most, per series (each costs one detection pass).
const MAX_CLEAN_RUNS: usize = 32;

/// Replaces a series' isolated anomalies by what the anomaly detector expected there (the
/// seasonal and the robust z-scores at |z| > 3.5, the plain-series threshold of `detect`;
/// the strongest flag's expected value): runs of at most
/// [`CLEAN_MAX_RUN`] flagged points, except a run that reaches the series' last point (a
/// new level must be allowed to show). Returns how many points it replaced.
pub fn clean_spikes(s: &mut Series) -> usize {
    use crate::detect::{DetectConfig, SeriesView, detect_points};
    let Some(step) = crate::series::usual_gap(&s.ts) else {
        return 0;
    };
    // The seasonal z-score, and the robust one for the series' first weeks (the seasonal
    // one needs two seasons and a month of residuals before it judges).
    let cfg = DetectConfig {
        robust: true,
        velocity: false,
        pattern: false,
        threshold: 3.5,
        ..DetectConfig::default()
    };
    let detectors = cfg.detectors();
    let n = s.values.len();
    // A series that was never negative gets no negative replacement.
    let floor = if s.values.iter().all(|v| *v >= 0.0) {
        0.0
    } else {
        f64::NEG_INFINITY
    };
    let mut replaced = 0;
    // Oldest first, judging again after each replacement: what the detectors expect after a
    // spike is computed from the spike (its second day would be "expected" near the
    // spike), so each point is judged on the series with the earlier ones cleaned.
    let mut from = 0;
    for _ in 0..MAX_CLEAN_RUNS {
        let view = SeriesView {
            ts: &s.ts,
            values: &s.values,
            step,
        };
        let points: Vec<_> = detect_points(&view, &detectors)
            .into_iter()
            .filter(|p| p.index >= from)
            .collect();
        let Some(first) = points.first() else {
            break;
        };
        let mut end = first.index;
        for p in &points[1..] {
            if p.index != end + 1 {
                break;
            }
            end = p.index;
        }
        // An isolated run: its first point is replaced and the rest judged again.
        if end + 1 - first.index <= CLEAN_MAX_RUN && end + 1 < n {
            if first.top.expected.is_finite() {
                s.values[first.index] = first.top.expected.max(floor);
                replaced += 1;
            }
            from = first.index + 1;
        } else {
            from = end + 1;
        }
    }
    replaced
}
