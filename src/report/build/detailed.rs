//! The detailed report: how usage moved day by day. For analysts and account managers:
//! each tenant × meter's daily value with its day-on-day change, 7-day mean and trend; the
//! period against the previous one with peak day, busiest weekday and local peak hour; one
//! chart per meter of this period over the previous one; growth, decline and rhythm
//! insights.
//!
//! Reads day rollups (brought up to date) and the period's events by local hour.

use std::collections::{BTreeMap, HashMap};

use super::super::insights::{self, Facts, Rhythm, Total, WEEKDAYS};
use super::super::{Chart, Insight, Report, ReportKind, Table, TimeChart};
use super::context::Ctx;
use super::figures::{day_str, figure};
use crate::error::Result;
use crate::rollup::RollupSeries;
use crate::time::MICROS_PER_DAY;

/// A series' peak and latest 7-day trend in the period.
struct Peak {
    tenant: String,
    meter: String,
    peak_day: Option<i64>,
    peak_value: f64,
    trend: &'static str,
}

/// A period's daily values and the previous period's, shifted onto it.
type TwoPeriods = (BTreeMap<i64, f64>, BTreeMap<i64, f64>);

/// Per-day rows with trend indicators.
pub(super) fn detailed(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let rhythms = ctx.rhythms()?;
    let insights: Vec<Insight> = insights::compute(&Facts {
        totals: &totals,
        rhythms: &rhythms,
        ..Facts::default()
    });
    let (daily, peaks) = daily_table(ctx, &series);
    let comparison = comparison_table(ctx, &totals, &peaks, &rhythms);
    let sessions = super::tables::sessions_table(&ctx.sessions()?);
    let figures = vec![
        figure("Series", series.len().to_string(), None),
        figure(
            "Days",
            ((ctx.to - ctx.from) / MICROS_PER_DAY).to_string(),
            None,
        ),
        figure(
            "Growing / declining series",
            format!(
                "{} / {}",
                totals
                    .iter()
                    .filter(|t| t.change_pct().is_some_and(|p| p >= 10.0))
                    .count(),
                totals
                    .iter()
                    .filter(|t| t.change_pct().is_some_and(|p| p <= -10.0))
                    .count()
            ),
            Some("±10 % against the previous period".into()),
        ),
    ];
    Ok(Report {
        kind: ReportKind::Detailed,
        title: "Detailed usage".into(),
        scope: String::new(),
        figures,
        insights,
        charts: meter_charts(ctx, &series),
        tables: vec![comparison, sessions, daily],
    })
}

/// Every day of the period per series: value, change on the day before, 7-day mean and
/// its trend against the 7 days before; and each series' peak and last trend.
fn daily_table(ctx: &Ctx, series: &[RollupSeries]) -> (Table, Vec<Peak>) {
    let (mut t, mut m, mut d, mut v, mut chg, mut avg, mut trend) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut peaks: Vec<Peak> = Vec::new();
    for s in series {
        let idx: Vec<usize> = (0..s.ts.len())
            .filter(|&i| s.ts[i] >= ctx.prev_from && s.ts[i] < ctx.to)
            .collect();
        let mut peak: (Option<i64>, f64) = (None, f64::MIN);
        let mut last_trend = "flat";
        for (k, &i) in idx.iter().enumerate() {
            if s.ts[i] < ctx.from {
                continue;
            }
            let mean = |a: usize, b: usize| -> Option<f64> {
                (b > a)
                    .then(|| idx[a..b].iter().map(|&j| s.values[j]).sum::<f64>() / (b - a) as f64)
            };
            let a7 = mean(k.saturating_sub(6), k + 1);
            let p7 = if k >= 7 {
                mean(k.saturating_sub(13), k - 6)
            } else {
                None
            };
            let tr = trend_7d(a7, p7);
            last_trend = tr;
            t.push(s.tenant_id.clone());
            m.push(s.meter.clone());
            d.push(day_str(s.ts[i]));
            v.push(s.values[i]);
            chg.push(if k > 0 {
                let p = s.values[idx[k - 1]];
                (p > 0.0).then(|| (s.values[i] / p - 1.0) * 100.0)
            } else {
                None
            });
            avg.push(a7);
            trend.push(tr);
            if s.values[i] > peak.1 {
                peak = (Some(s.ts[i]), s.values[i]);
            }
        }
        peaks.push(Peak {
            tenant: s.tenant_id.clone(),
            meter: s.meter.clone(),
            peak_day: peak.0,
            peak_value: peak.1.max(0.0),
            trend: last_trend,
        });
    }
    let daily = Table::new("daily", "Day by day")
        .text("tenant_id", t)
        .text("meter", m)
        .text("date", d)
        .num("value", 2, v)
        .opt_num("change_pct", 1, chg)
        .opt_num("avg_7d", 2, avg)
        .text("trend_7d", trend);
    (daily, peaks)
}

/// `up` or `down` when the last 7 days' mean moved over 10 % from the 7 days before.
fn trend_7d(last: Option<f64>, before: Option<f64>) -> &'static str {
    match (last, before) {
        (Some(a), Some(p)) if p > 0.0 && a > p * 1.1 => "up",
        (Some(a), Some(p)) if p > 0.0 && a < p * 0.9 => "down",
        (Some(a), Some(p)) if p == 0.0 && a > 0.0 => "up",
        _ => "flat",
    }
}

/// The period against the previous one per tenant × meter, with peaks and rhythm.
fn comparison_table(ctx: &Ctx, totals: &[Total], peaks: &[Peak], rhythms: &[Rhythm]) -> Table {
    let key: HashMap<(&str, &str), &Peak> = peaks
        .iter()
        .map(|c| ((c.tenant.as_str(), c.meter.as_str()), c))
        .collect();
    let rh: HashMap<&str, &Rhythm> = rhythms.iter().map(|r| (r.tenant_id.as_str(), r)).collect();
    let rows: Vec<(&Total, Option<&&Peak>, Option<&&Rhythm>)> = totals
        .iter()
        .map(|x| {
            (
                x,
                key.get(&(x.tenant_id.as_str(), x.meter.as_str())),
                rh.get(x.tenant_id.as_str()),
            )
        })
        .collect();
    Table::new("comparison", "Against the previous period, with peaks")
        .text("tenant_id", rows.iter().map(|r| r.0.tenant_id.as_str()))
        .text("meter", rows.iter().map(|r| r.0.meter.as_str()))
        .text(
            "rule",
            rows.iter()
                .map(|r| ctx.aggregation(&r.0.meter).combine_rule()),
        )
        .opt_num("total", 2, rows.iter().map(|r| r.0.current).collect())
        .opt_num("previous", 2, rows.iter().map(|r| r.0.previous).collect())
        .opt_num(
            "change_pct",
            1,
            rows.iter().map(|r| r.0.change_pct()).collect(),
        )
        .text(
            "trend",
            rows.iter().map(|r| match r.0.change_pct() {
                Some(p) if p >= 10.0 => "up",
                Some(p) if p <= -10.0 => "down",
                Some(_) => "flat",
                None if r.0.current.is_some_and(|c| c > 0.0) => "new",
                None => "flat",
            }),
        )
        .text(
            "trend_last_7d",
            rows.iter().map(|r| r.1.map_or("flat", |c| c.trend)),
        )
        .opt_text(
            "peak_day",
            rows.iter()
                .map(|r| r.1.and_then(|c| c.peak_day).map(day_str))
                .collect(),
        )
        .opt_num(
            "peak_value",
            2,
            rows.iter().map(|r| r.1.map(|c| c.peak_value)).collect(),
        )
        // The tenant's rhythm over all its events (not the meter's), on the rows of meters
        // it used in the period.
        .opt_text(
            "tenant_busiest_weekday",
            rows.iter()
                .map(|r| {
                    r.2.filter(|_| r.0.events > 0.0)
                        .map(|x| WEEKDAYS[x.peak_day().0].to_string())
                })
                .collect(),
        )
        .opt_text(
            "tenant_peak_hour_local",
            rows.iter()
                .map(|r| {
                    r.2.filter(|_| r.0.events > 0.0)
                        .map(|x| format!("{:02}:00 {}", x.peak_hour().0, x.zone))
                })
                .collect(),
        )
}

/// One chart per meter: this period against the previous one, shifted onto it.
fn meter_charts(ctx: &Ctx, series: &[RollupSeries]) -> Vec<Chart> {
    let mut by_meter: BTreeMap<&str, TwoPeriods> = BTreeMap::new();
    for s in series {
        let e = by_meter.entry(&s.meter).or_default();
        for i in 0..s.ts.len() {
            if s.ts[i] >= ctx.from && s.ts[i] < ctx.to {
                *e.0.entry(s.ts[i]).or_default() += s.values[i];
            } else if s.ts[i] >= ctx.prev_from && s.ts[i] < ctx.from {
                *e.1.entry(s.ts[i] + (ctx.to - ctx.from)).or_default() += s.values[i];
            }
        }
    }
    by_meter
        .iter()
        .map(|(meter, (cur, prev))| {
            Chart::Time(TimeChart::two_periods(
                format!(
                    "{meter} per day{}",
                    if ctx.tenant.is_some() {
                        ""
                    } else {
                        ", all tenants"
                    }
                ),
                ctx.unit(meter),
                cur.iter().map(|(a, b)| (*a, *b)),
                prev.iter().map(|(a, b)| (*a, *b)),
            ))
        })
        .collect()
}
