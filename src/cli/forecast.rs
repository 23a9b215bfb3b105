//! `meterlake forecast`: forecast every series of a file, or every tenant × meter rollup
//! series of a lake.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::table::{Left, Right, Table};
use crate::forecast::{
    Criterion, DEFAULT_FOLDS, DEFAULT_SEASONS, DEFAULT_WINDOW, ModelKind, ModelOptions,
};
use crate::rollup::{Granularity, Meters};
use crate::series::Fill;
use crate::stage::{self, forecast::ForecastSpec};

/// Arguments of `forecast`.
#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// A CSV or Parquet file with columns series_id, ts, value (or unique_id, ds, y).
    #[arg(long, conflicts_with = "lake", required_unless_present = "lake")]
    pub series: Option<PathBuf>,
    /// A lake: forecast its tenant × meter rollups (brought up to date first).
    #[arg(long)]
    pub lake: Option<PathBuf>,
    /// With --lake: only shard I of N of the tenants (`I/N`, I from 0); N workers together
    /// write the whole tables, each replacing its own tenants' rows.
    #[arg(long, requires = "lake", default_value = "0/1")]
    pub shard: crate::lake::Shard,
    /// Rollup granularity (with --lake).
    #[arg(long, value_enum, default_value_t = Granularity::Day)]
    pub granularity: Granularity,
    /// Steps to forecast.
    #[arg(long)]
    pub horizon: usize,
    /// The model, or `auto` (chosen per series: see --criterion).
    #[arg(long, value_enum, default_value_t = ModelKind::Auto)]
    pub model: ModelKind,
    /// Prediction interval level, percent.
    #[arg(long, default_value_t = 95.0)]
    pub level: f64,
    /// Season length (default from each series' step: 24 hourly, 7 daily, 12 monthly, else 1).
    #[arg(long)]
    pub season_length: Option<usize>,
    /// Moving-average window.
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: usize,
    /// Seasons averaged by the seasonal moving average.
    #[arg(long, default_value_t = DEFAULT_SEASONS)]
    pub seasons: usize,
    /// Fix α instead of optimising (any fixed parameter turns optimisation off; the others
    /// take their defaults: α 0.3, β 0.1, γ 0.1, φ 0.98).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Fix β (trend smoothing).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Fix γ (season smoothing).
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Fix φ (damping).
    #[arg(long)]
    pub phi: Option<f64>,
    /// No calendar dummies in the linear model.
    #[arg(long)]
    pub no_calendar: bool,
    /// The models `auto` chooses from (comma-separated; default: the exponential smoothing
    /// models, ses to ses_seasonal_mul).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub candidates: Vec<ModelKind>,
    /// How `auto` chooses (default: aicc on seasonal series of positive values, backtest on
    /// the others).
    #[arg(long, value_enum)]
    pub criterion: Option<Criterion>,
    /// Rolling-origin backtest folds (one horizon each); 0 skips the backtest (no metrics)
    /// for models other than auto.
    #[arg(long, default_value_t = DEFAULT_FOLDS)]
    pub folds: usize,
    /// How missing steps inside a series are filled before forecasting.
    #[arg(long, value_enum, default_value_t = Fill::Interpolate)]
    pub fill: Fill,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output file for --series (CSV, or Parquet by extension).
    #[arg(long, required_unless_present = "lake")]
    pub out: Option<PathBuf>,
    /// Metrics file for --series (CSV or Parquet): backtest accuracy and status per series.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Meter definitions (with --lake).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub(crate) fn run(a: ForecastArgs) -> anyhow::Result<ExitCode> {
    let spec = ForecastSpec {
        horizon: a.horizon,
        level: a.level / 100.0,
        model: a.model,
        options: ModelOptions {
            season_length: a.season_length.unwrap_or(1),
            window: a.window,
            seasons: a.seasons,
            alpha: a.alpha,
            beta: a.beta,
            gamma: a.gamma,
            phi: a.phi,
            calendar: !a.no_calendar,
            folds: a.folds,
            candidates: if a.candidates.is_empty() {
                ModelKind::CANDIDATES.to_vec()
            } else if a.candidates.contains(&ModelKind::Auto) {
                return Err(crate::error::Error::InvalidParameter {
                    name: "--candidates",
                    reason: "`auto` chooses among the candidates and is not one of them".into(),
                }
                .into());
            } else {
                a.candidates.clone()
            },
            criterion: a.criterion,
        },
        season_fixed: a.season_length.is_some(),
        threads: a.threads,
        fill: a.fill,
    };
    let s = match (&a.series, &a.lake) {
        (Some(input), _) => {
            let out = a.out.as_deref().expect("clap requires --out with --series");
            stage::forecast::forecast_file(input, out, a.metrics.as_deref(), &spec)?
        }
        (None, Some(lake)) => {
            let meters = Meters::load_or_default(a.meters.as_deref())?;
            let part = stage::tables::Part {
                shard: a.shard,
                ..Default::default()
            };
            stage::forecast::forecast_lake_for(lake, &meters, a.granularity, &spec, part)?
        }
        (None, None) => unreachable!("clap requires --series or --lake"),
    };
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            outln!(
                "{} series, {} forecast ({} rows), {} fell back to a simpler model, {} with missing steps filled; backtest MASE median {} (mean {}), {} beat the seasonal naive, mean sMAPE {}",
                s.series,
                s.forecast,
                s.rows,
                s.fell_back,
                s.filled,
                s.median_mase.map_or("-".into(), |v| format!("{v:.3}")),
                s.mean_mase.map_or("-".into(), |v| format!("{v:.3}")),
                s.beat_naive_pct.map_or("-".into(), |v| format!("{v:.0} %")),
                s.mean_smape.map_or("-".into(), |v| format!("{v:.3}")),
            )?;
            let mut models = Table::bare(&[Left, Right]).indent("  ");
            for (m, n) in &s.models {
                models.row(&[m, n]);
            }
            models.print()?;
            outln!(
                "read {:.2} s, forecast {:.2} s, write {:.2} s",
                s.read_seconds,
                s.forecast_seconds,
                s.write_seconds
            )?;
            outln!("wrote {}", s.out.display())?;
            if let Some(m) = &s.metrics {
                outln!("wrote {}", m.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
