//! The forecast report: where usage and bills are heading. For finance and account
//! managers: each quota's period end projected (usage with its interval, the date the
//! allowance is reached, the expected cost), the forecasts with their prediction
//! intervals, each series' model and backtest accuracy, and charts of history against
//! forecast for the series closest to their limits; `quota_reached` and plan insights.
//!
//! Reads the forecast stage's tables (`LAKE/forecasts/`), quotas with projections, day
//! rollups (brought up to date) and anomaly incidents (as chart markers).

use rust_decimal::Decimal;

use super::super::insights::{self, Facts};
use super::super::{Chart, Figure, Line, Report, ReportKind, Table, TimeChart};
use super::context::{Ctx, Incident};
use super::figures::{day_str, figure, money, quantity};
use super::tables::quota_table;
use crate::billing::quota::QuotaRow;
use crate::error::Result;
use crate::rollup::RollupSeries;
use crate::stage::tables::forecasts::{ForecastPoint, SeriesFit};
use crate::time::MICROS_PER_DAY;

/// A stored number as a table cell: missing and non-finite values are gaps.
fn cell(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn forecast_table(points: &[ForecastPoint]) -> Table {
    Table::new("forecast", "Forecasts with prediction intervals")
        .text("tenant_id", points.iter().map(|p| p.tenant_id.as_str()))
        .text("meter", points.iter().map(|p| p.meter.as_str()))
        .text("date", points.iter().map(|p| day_str(p.ts)))
        .text("model", points.iter().map(|p| p.model.as_str()))
        .opt_num("yhat", 2, points.iter().map(|p| cell(p.yhat)).collect())
        .opt_num(
            "yhat_lower",
            2,
            points.iter().map(|p| cell(p.yhat_lower)).collect(),
        )
        .opt_num(
            "yhat_upper",
            2,
            points.iter().map(|p| cell(p.yhat_upper)).collect(),
        )
}

pub(super) fn forecast(ctx: &Ctx) -> Result<Report> {
    let fc = ctx.forecasts()?;
    let quotas = ctx.quotas()?;
    let insights = insights::compute(&Facts {
        quotas: &quotas,
        billing: ctx.billing,
        ..Facts::default()
    });
    let forecast_table = forecast_table(&fc.points);
    let (accuracy, series_forecast, mase) = accuracy_table(&fc.fits);
    let outlook = outlook(&quotas);
    let mut outlook_table = quota_table(&outlook, true);
    outlook_table.name = "quota_outlook".into();
    outlook_table.title = "Quota outlook: the period's end projected".into();
    let series = ctx.day_series()?;
    let incidents = ctx.incidents()?;
    let charts = charts(ctx, &fc.points, &series, &incidents, &outlook);
    Ok(Report {
        kind: ReportKind::Forecast,
        title: "Usage forecast".into(),
        scope: String::new(),
        figures: figures(ctx, &quotas, series_forecast, &mase),
        insights,
        charts,
        tables: vec![outlook_table, forecast_table, accuracy],
    })
}

/// A series' backtest MASE and the seasonal naive's on the same folds.
type Mase = (Option<f64>, Option<f64>);

/// Each series' model and backtest accuracy, with the seasonal naive's on the same folds;
/// the number of series and their (MASE, naive MASE).
fn accuracy_table(fits: &[SeriesFit]) -> (Table, usize, Vec<Mase>) {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let mase: Vec<Option<f64>> = fits.iter().map(|f| finite(f.mase)).collect();
    let naive: Vec<Option<f64>> = fits.iter().map(|f| finite(f.naive_mase)).collect();
    let table = Table::new("accuracy", "Each series' model and its backtest accuracy")
        .text("tenant_id", fits.iter().map(|f| f.tenant_id.as_str()))
        .text("meter", fits.iter().map(|f| f.meter.as_str()))
        .text("model", fits.iter().map(|f| f.model.as_str()))
        .opt_num("mase", 3, mase.clone())
        .opt_num("naive_mase", 3, naive.clone())
        .opt_num("smape", 3, fits.iter().map(|f| finite(f.smape)).collect())
        .opt_num(
            "coverage",
            3,
            fits.iter().map(|f| finite(f.coverage)).collect(),
        )
        .text("status", fits.iter().map(|f| f.status.as_str()));
    (table, fits.len(), mase.into_iter().zip(naive).collect())
}

/// Quotas ordered by projected use of the allowance, highest first (unprojected last).
fn outlook(quotas: &[QuotaRow]) -> Vec<QuotaRow> {
    let mut outlook: Vec<QuotaRow> = quotas.to_vec();
    outlook.sort_by(|a, b| {
        let p = |q: &QuotaRow| -> f64 {
            match (&q.projected, q.included) {
                (Some(p), Some(i)) if i > Decimal::ZERO => quantity(p.usage) / quantity(i),
                _ => -1.0,
            }
        };
        p(b).total_cmp(&p(a))
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.meter.cmp(&b.meter))
    });
    outlook
}

/// History against forecast for the series whose projected quota use is highest (or the
/// tenant's series), with incidents marked.
fn charts(
    ctx: &Ctx,
    fc: &[ForecastPoint],
    series: &[RollupSeries],
    incidents: &[Incident],
    outlook: &[QuotaRow],
) -> Vec<Chart> {
    let mut charts = Vec::new();
    for (tenant, meter) in &chosen(ctx, series, outlook) {
        let Some(s) = series
            .iter()
            .find(|s| &s.tenant_id == tenant && &s.meter == meter)
        else {
            continue;
        };
        let hist: Vec<(i64, f64)> = (0..s.ts.len())
            .filter(|&i| s.ts[i] >= ctx.to - 60 * MICROS_PER_DAY)
            .map(|i| (s.ts[i], s.values[i]))
            .collect();
        let ahead: Vec<&ForecastPoint> = fc
            .iter()
            .filter(|p| &p.tenant_id == tenant && &p.meter == meter)
            .collect();
        let markers = incidents
            .iter()
            .filter(|x| &x.tenant_id == tenant && &x.meter == meter)
            .filter_map(|x| {
                let day = x.window_start.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
                hist.iter()
                    .find(|p| p.0 == day)
                    .map(|p| (p.0, p.1, x.severity.clone()))
            })
            .collect();
        charts.push(Chart::Time(TimeChart {
            title: format!("{tenant} / {meter}: history and forecast"),
            y_label: ctx.unit(meter),
            lines: vec![Line {
                name: "observed".into(),
                points: hist,
            }],
            forecast: Some(Line {
                name: format!(
                    "forecast ({})",
                    ahead.first().map_or("", |p| p.model.as_str())
                ),
                points: ahead
                    .iter()
                    .filter_map(|p| Some((p.ts, cell(p.yhat)?)))
                    .collect(),
            }),
            band: ahead
                .iter()
                .filter_map(|p| Some((p.ts, cell(p.yhat_lower)?, cell(p.yhat_upper)?)))
                .collect(),
            markers,
        }));
    }
    charts
}

/// The (tenant, lake meter) pairs charted: a tenant's every series, else those of the
/// projected quotas in outlook order (every series when none is projected); at most 6.
fn chosen(ctx: &Ctx, series: &[RollupSeries], outlook: &[QuotaRow]) -> Vec<(String, String)> {
    let mut chosen: Vec<(String, String)> = Vec::new();
    if ctx.tenant.is_some() {
        chosen.extend(
            series
                .iter()
                .map(|s| (s.tenant_id.clone(), s.meter.clone())),
        );
    } else {
        let lake_meter = |billed: &str| -> String {
            ctx.billing
                .and_then(|b| b.catalog.meters.get(billed))
                .map_or(billed.to_string(), |m| m.event.clone())
        };
        for q in outlook.iter().filter(|q| q.projected.is_some()) {
            let k = (q.tenant_id.clone(), lake_meter(&q.meter));
            if !chosen.contains(&k) {
                chosen.push(k);
            }
        }
        if chosen.is_empty() {
            chosen.extend(
                series
                    .iter()
                    .map(|s| (s.tenant_id.clone(), s.meter.clone())),
            );
        }
    }
    chosen.truncate(ctx.top.min(6));
    chosen
}

fn figures(ctx: &Ctx, quotas: &[QuotaRow], series_forecast: usize, mase: &[Mase]) -> Vec<Figure> {
    // A robust headline: the median (a few near-constant series have huge MASEs that a
    // mean would report as the typical series), and how often the model beats the seasonal
    // naive on the same folds.
    let mut with: Vec<f64> = mase.iter().filter_map(|m| m.0).collect();
    let median = (!with.is_empty()).then(|| crate::detect::median(&mut with));
    let pairs: Vec<(f64, f64)> = mase.iter().filter_map(|m| Some((m.0?, m.1?))).collect();
    let beats = pairs.iter().filter(|(m, n)| m < n).count();
    let over: Vec<&QuotaRow> = quotas
        .iter()
        .filter(|q| matches!((&q.projected, q.included), (Some(p), Some(i)) if p.usage > i))
        .collect();
    let projected_overage = crate::billing::saturating_sum(
        quotas
            .iter()
            .filter_map(|q| q.projected.as_ref())
            .map(|p| p.cost),
    );
    vec![
        figure("Series forecast", series_forecast.to_string(), None),
        figure(
            "Median backtest MASE",
            median.map_or("n/a".into(), |m| format!("{m:.3}")),
            Some(format!("over {} series with a backtest", with.len())),
        ),
        figure(
            "Series beating the seasonal naive",
            if pairs.is_empty() {
                "n/a".into()
            } else {
                format!("{:.0} %", 100.0 * beats as f64 / pairs.len() as f64)
            },
            Some(format!(
                "{beats} of {}: lower backtest error than the seasonal naive on the same folds",
                pairs.len()
            )),
        ),
        figure(
            "Allowances projected to be exceeded",
            over.len().to_string(),
            None,
        ),
        figure(
            "Expected overage at the periods' end",
            money(projected_overage, ctx.currency()),
            None,
        ),
    ]
}
