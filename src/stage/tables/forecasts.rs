//! `LAKE/forecasts/granularity=G/{forecast,metrics}.parquet`: the forecast stage's tables.
//! `forecast.parquet` holds one row per tenant × meter × future step (the mean and the
//! prediction interval); `metrics.parquet` one row per series (the model chosen, its
//! backtest errors and interval coverage, and why it fell back when it did).

use std::path::{Path, PathBuf};

use super::Columns;
use crate::error::Result;

/// Folder of the forecast tables under the lake.
pub const DIR: &str = "forecasts";
/// The forecast points' file in a granularity's folder.
pub const FORECAST_FILE: &str = "forecast.parquet";
/// The per-series metrics' file in a granularity's folder.
pub const METRICS_FILE: &str = "metrics.parquet";

/// The folder of one granularity's forecast tables.
pub fn dir(lake_dir: &Path, granularity: &str) -> PathBuf {
    lake_dir
        .join(DIR)
        .join(format!("granularity={granularity}"))
}

/// One future step of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastPoint {
    /// The tenant.
    pub tenant_id: String,
    /// The lake meter.
    pub meter: String,
    /// The step's start (UTC µs).
    pub ts: i64,
    /// The model that made it.
    pub model: String,
    /// The forecast mean.
    pub yhat: f64,
    /// The interval's lower bound.
    pub yhat_lower: f64,
    /// The interval's upper bound.
    pub yhat_upper: f64,
}

/// One series' model and backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesFit {
    /// The tenant.
    pub tenant_id: String,
    /// The lake meter.
    pub meter: String,
    /// The model chosen (empty when the series could not be forecast).
    pub model: String,
    /// Backtest mean absolute error.
    pub mae: Option<f64>,
    /// Backtest root mean squared error.
    pub rmse: Option<f64>,
    /// Backtest symmetric MAPE, percent.
    pub smape: Option<f64>,
    /// Backtest mean absolute scaled error.
    pub mase: Option<f64>,
    /// Share of backtest actuals inside the interval.
    pub coverage: Option<f64>,
    /// The seasonal naive's backtest MASE on the same folds (`naive_mase`): the model beats
    /// the seasonal naive where `mase` is below it.
    pub naive_mase: Option<f64>,
    /// What happened (fallbacks, filled steps).
    pub status: String,
    /// The fitted parameters, as text.
    pub params: String,
}

/// A lake's forecasts of one granularity, read back.
#[derive(Debug, Clone, Default)]
pub struct Forecasts {
    /// `day` or `hour`.
    pub granularity: String,
    /// Every future step, as stored.
    pub points: Vec<ForecastPoint>,
    /// Every series' fit, as stored.
    pub fits: Vec<SeriesFit>,
}

/// The lake's forecasts (daily, else hourly), restricted to one tenant when given; none
/// when no forecast stage has run.
pub fn read(lake_dir: &Path, tenant: Option<&str>) -> Result<Option<Forecasts>> {
    let Some(g) = ["day", "hour"]
        .into_iter()
        .find(|g| dir(lake_dir, g).join(FORECAST_FILE).exists())
    else {
        return Ok(None);
    };
    let d = dir(lake_dir, g);
    let wanted = |t: &str| tenant.is_none_or(|x| x == t);
    let (fp, mp) = (d.join(FORECAST_FILE), d.join(METRICS_FILE));
    let c = Columns::read(&fp)?;
    let (tenant_id, meter, ts, model) = (
        c.text("tenant_id")?,
        c.text("meter")?,
        c.micros("ts")?,
        c.text("model")?,
    );
    let (yhat, lo, hi) = (c.f64("yhat")?, c.f64("yhat_lower")?, c.f64("yhat_upper")?);
    let points = (0..c.height())
        .filter(|&i| wanted(&tenant_id[i]))
        .map(|i| ForecastPoint {
            tenant_id: tenant_id[i].clone(),
            meter: meter[i].clone(),
            ts: ts[i],
            model: model[i].clone(),
            yhat: yhat[i],
            yhat_lower: lo[i],
            yhat_upper: hi[i],
        })
        .collect();
    let c = Columns::read(&mp)?;
    let (tenant_id, meter, model) = (c.text("tenant_id")?, c.text("meter")?, c.text("model")?);
    let (mae, rmse, smape) = (c.opt_f64("mae")?, c.opt_f64("rmse")?, c.opt_f64("smape")?);
    let (mase, coverage) = (c.opt_f64("mase")?, c.opt_f64("coverage")?);
    let naive_mase = c.added_f64("naive_mase")?;
    let (status, params) = (c.text("status")?, c.text("params")?);
    let fits = (0..c.height())
        .filter(|&i| wanted(&tenant_id[i]))
        .map(|i| SeriesFit {
            tenant_id: tenant_id[i].clone(),
            meter: meter[i].clone(),
            model: model[i].clone(),
            mae: mae[i],
            rmse: rmse[i],
            smape: smape[i],
            mase: mase[i],
            coverage: coverage[i],
            naive_mase: naive_mase[i],
            status: status[i].clone(),
            params: params[i].clone(),
        })
        .collect();
    Ok(Some(Forecasts {
        granularity: g.to_string(),
        points,
        fits,
    }))
}
