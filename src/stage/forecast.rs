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
use crate::error::{Error, IoContext, Result};
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

/// How a series id splits into the key columns (borrowed: nothing is copied per series).
type Split<'a> = &'a (dyn for<'s> Fn(&'s str) -> Vec<&'s str> + Sync);

/// Forecast and metrics tables of some results. `keys` splits a series id into key columns
/// (`series_id`, or `tenant_id` and `meter` for the lake). Blocks of series are built in
/// parallel and stacked in order, into one chunk each.
fn tables(
    results: &[SeriesResult],
    keys: &[&str],
    split: Split,
    dates: bool,
) -> Result<(DataFrame, DataFrame)> {
    let f = stacked(results, &|b| forecast_frame(b, keys, split, dates))?;
    let m = metrics_table(results, keys, split)?;
    Ok((f, m))
}

/// The metrics table of some results ([`tables`]' second).
fn metrics_table(results: &[SeriesResult], keys: &[&str], split: Split) -> Result<DataFrame> {
    stacked(results, &|b| metrics_frame(b, keys, split))
}

/// `frame` of blocks of `results`, built in parallel and stacked in order into one chunk.
fn stacked(
    results: &[SeriesResult],
    frame: &(dyn Fn(&[SeriesResult]) -> Result<DataFrame> + Sync),
) -> Result<DataFrame> {
    use rayon::prelude::*;
    let blocks: Vec<&[SeriesResult]> = if results.is_empty() {
        vec![results]
    } else {
        results.chunks(4096).collect()
    };
    let frames = blocks
        .par_iter()
        .map(|b| frame(b))
        .collect::<Result<Vec<_>>>()?;
    let mut frames = frames.into_iter();
    let mut out = frames.next().unwrap_or_default();
    for f in frames {
        out.vstack_mut_owned(f)?;
    }
    out.rechunk_mut();
    Ok(out)
}

/// The forecast table of one block of results: a row per series and future step.
fn forecast_frame(
    results: &[SeriesResult],
    keys: &[&str],
    split: Split,
    dates: bool,
) -> Result<DataFrame> {
    let parts: Vec<Vec<&str>> = results.iter().map(|r| split(&r.id)).collect();
    let mut kcols: Vec<Vec<&str>> = vec![Vec::new(); keys.len()];
    let (mut ts, mut model, mut yhat, mut lo, mut hi) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
    Ok(DataFrame::new_infer_height(fc)?)
}

/// The metrics table of one block of results: a row per series.
fn metrics_frame(results: &[SeriesResult], keys: &[&str], split: Split) -> Result<DataFrame> {
    let parts: Vec<Vec<&str>> = results.iter().map(|r| split(&r.id)).collect();
    let mut mkeys: Vec<Vec<&str>> = vec![Vec::new(); keys.len()];
    let mut mcols: [Vec<Option<f64>>; 6] = Default::default();
    let (mut mmodel, mut mstatus, mut mparams) = (Vec::new(), Vec::new(), Vec::new());
    for (r, parts) in results.iter().zip(&parts) {
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
    Ok(DataFrame::new_infer_height(mc)?)
}

/// The forecast table of a series file's results as CSV (`series_id, ts, model, yhat,
/// yhat_lower, yhat_upper`), formatted straight from them in parallel blocks: the bytes
/// [`write_frame`] writes of [`tables`]' first frame (a unit test compares them), without
/// building that frame, which cost as much as the formatting on 100k series.
fn write_forecast_csv(out: &Path, results: &[SeriesResult], dates: bool) -> Result<()> {
    use std::io::Write as _;
    let text = |e: csv::Error| Error::BadInput {
        path: out.to_path_buf(),
        reason: format!("writing: {e}"),
    };
    // Rows of one block of series; a flat forecast (SES, moving average, naive) repeats
    // its point forecast on every step, formatted once.
    const BLOCK: usize = 1024;
    let rows = |k: usize| -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut ts = String::new();
        let mut floats: [tables::FloatText; 3] = Default::default();
        for r in &results[k * BLOCK..((k + 1) * BLOCK).min(results.len())] {
            let f = &r.result.forecast;
            for i in 0..f.mean.len() {
                ts.clear();
                write_ts(&mut ts, r.ts[i], dates);
                w.write_field(&r.id).map_err(text)?;
                w.write_field(&ts).map_err(text)?;
                w.write_field(r.result.model.unwrap_or_default())
                    .map_err(text)?;
                for (float, x) in floats.iter_mut().zip([f.mean[i], f.lower[i], f.upper[i]]) {
                    w.write_field(float.of(x)).map_err(text)?;
                }
                w.write_record(None::<&[u8]>).map_err(text)?;
            }
        }
        w.into_inner().map_err(|e| text(e.into_error().into()))
    };
    tables::write_file(out, |file| {
        let mut sink = std::io::BufWriter::with_capacity(1 << 20, file);
        sink.write_all(b"series_id,ts,model,yhat,yhat_lower,yhat_upper\n")
            .at(out)?;
        // 32 blocks of 1,024 series formatted at a time.
        let io = |e| Error::io(out, e);
        tables::write_blocks(&mut sink, results.len().div_ceil(BLOCK), 32, rows, io)?;
        sink.flush().at(out)
    })
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
    let dates = all_dates(&series);
    let split: Split = &|id| vec![id];
    // The metrics table is built before anything is written, so a failure leaves both
    // files as they were.
    let mut mt = match metrics {
        Some(_) => Some(metrics_table(&results, &["series_id"], split)?),
        None => None,
    };
    if tables::is_parquet(out) {
        let mut f = stacked(&results, &|b| {
            forecast_frame(b, &["series_id"], split, dates)
        })?;
        write_frame(out, &mut f)?;
    } else {
        write_forecast_csv(out, &results, dates)?;
    }
    if let (Some(p), Some(m)) = (metrics, mt.as_mut()) {
        write_frame(p, m)?;
    }
    let write = clock.elapsed().as_secs_f64() - read - fit;
    let summary = summarize(&results, out, metrics, [read, fit, write]);
    use rayon::prelude::*;
    // Freed in parallel: one thread freeing 100k series' and results' buffers took 50 ms.
    rayon::join(
        || series.into_par_iter().for_each(drop),
        || results.into_par_iter().for_each(drop),
    );
    Ok(summary)
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
    let rows = rollup_series_of(&lake, &rspec, part.shard, &keep)?;
    // Every series is forecast from the lake's last window on: a counter whose last event
    // is older has had zeros since (its forecast started on its own last day, half of the
    // "next 30 days" already past); a gauge has no reading there and ends where it ends.
    let step = match granularity {
        Granularity::Hour => crate::time::MICROS_PER_HOUR,
        _ => crate::time::MICROS_PER_DAY,
    };
    let lake_last = lake
        .data_files()
        .iter()
        .filter_map(|f| crate::time::date_str_start(&f.date))
        .max()
        .filter(|_| granularity == Granularity::Day)
        .into_iter()
        .chain(rows.iter().filter_map(|r| r.ts.last().copied()))
        .max();
    let series: Vec<Series> = rows
        .into_iter()
        .map(|r| {
            let (mut ts, mut values) = (r.ts, r.values);
            if let (Some(end), Some(&last)) = (lake_last, ts.last())
                && crate::rollup::aggregation_of(meters, &r.meter).zero_when_empty()
            {
                let mut t = last + step;
                while t <= end {
                    ts.push(t);
                    values.push(0.0);
                    t += step;
                }
            }
            Series {
                id: format!("{}\u{1f}{}", r.tenant_id, r.meter),
                ts,
                values,
            }
        })
        .collect();
    let read = clock.elapsed().as_secs_f64();
    let results = forecast_usage(series, spec)?;
    let fit = clock.elapsed().as_secs_f64() - read;
    let split: Split = &|id| id.split('\u{1f}').collect();
    let (mut f, mut mt) = tables(&results, &["tenant_id", "meter"], split, false)?;
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

/// Forecasts usage series of the lake (a tenant × meter's rollup), as every path that
/// forecasts the lake does (the stage, `run`, the HTTP API): isolated anomalies replaced
/// by the detector's expectation first ([`clean_spikes`]), and usage that was never
/// negative not forecast below zero.
pub fn forecast_usage(mut series: Vec<Series>, spec: &ForecastSpec) -> Result<Vec<SeriesResult>> {
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
    Ok(results)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::forecast::Forecast;

    /// Results of random ids (commas, quotes, line ends among them), instants and values
    /// (any bits: NaN, infinities, subnormals), some flat, some series without a forecast.
    fn results() -> impl Strategy<Value = Vec<SeriesResult>> {
        let one = (
            "[a-z0-9 ,\"\n]{1,8}",
            prop::collection::vec(
                (
                    -10_000_000_000_000_000i64..250_000_000_000_000_000,
                    any::<[u64; 3]>(),
                ),
                0..5,
            ),
            prop::bool::ANY,
            prop::bool::ANY,
        );
        prop::collection::vec(one, 0..40).prop_map(|rows| {
            rows.into_iter()
                .map(|(id, steps, has_model, flat)| {
                    // A flat forecast repeats its first step's values.
                    let bits = |k: usize| {
                        let at = |i: usize| steps[if flat { 0 } else { i }].1[k];
                        (0..steps.len()).map(|i| f64::from_bits(at(i))).collect()
                    };
                    SeriesResult {
                        id,
                        ts: steps.iter().map(|s| s.0).collect(),
                        result: SeriesForecast {
                            model: has_model.then_some("ses"),
                            params: String::new(),
                            status: "ok".into(),
                            forecast: Forecast {
                                mean: bits(0),
                                lower: bits(1),
                                upper: bits(2),
                            },
                            metrics: None,
                            baseline: None,
                            fell_back: false,
                        },
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The forecast CSV written straight from the results is the bytes of the frame's.
        #[test]
        fn forecast_csv_is_the_frames_csv(results in results(), dates in prop::bool::ANY) {
            let dir = tempfile::tempdir().unwrap();
            let (direct, framed) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
            write_forecast_csv(&direct, &results, dates).unwrap();
            let split: Split = &|id| vec![id];
            let mut f = stacked(&results, &|b| forecast_frame(b, &["series_id"], split, dates))
                .unwrap();
            write_frame(&framed, &mut f).unwrap();
            let (a, b) = (std::fs::read(&direct).unwrap(), std::fs::read(&framed).unwrap());
            prop_assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        }
    }
}
