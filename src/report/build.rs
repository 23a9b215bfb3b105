//! Builds each kind of report from the lake and the outputs of the other stages: rollups
//! (brought up to date first), forecasts, anomaly incidents, quotas, alerts and the commit
//! log. Everything is computed here; renderers only lay it out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::insights::{self, Facts, IncidentFact, Rhythm, Total, WEEKDAYS};
use super::{Bar, BarChart, Chart, Figure, Insight, Kind, Line, Report, Table, TimeChart};
use crate::billing::quota::{QuotaOptions, QuotaRow, quotas};
use crate::billing::{Billing, parse_at, rfc3339};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::rollup::{
    Aggregation, Granularity, Meters, RollupOptions, RollupSeries, RollupSpec, Zone, rollup,
    rollup_series,
};
use crate::usage::{Engagement, EngagementOptions, engagement};

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The kind.
    pub kind: Kind,
    /// One tenant, or all.
    pub tenant: Option<String>,
    /// Period start (UTC µs); default: 30 days before `to`.
    pub from: Option<i64>,
    /// Period end (UTC µs, exclusive); default: midnight after the lake's last event.
    pub to: Option<i64>,
    /// Meter definitions (default: data/meters.toml if present).
    pub meters: Option<PathBuf>,
    /// Entries in top lists and charts.
    pub top: usize,
}

impl ReportOptions {
    /// A kind's report over the default period for every tenant.
    pub fn new(kind: Kind) -> ReportOptions {
        ReportOptions {
            kind,
            tenant: None,
            from: None,
            to: None,
            meters: None,
            top: 10,
        }
    }
}

/// Everything a report reads, and its period.
struct Ctx<'a> {
    lake: Lake,
    dir: PathBuf,
    billing: Option<&'a Billing>,
    meters: Meters,
    tenant: Option<String>,
    from: i64,
    to: i64,
    prev_from: i64,
    /// Quotas and engagement are evaluated here: the period's end, or just after the last
    /// event if that is earlier.
    at: i64,
    top: usize,
    /// Whether the period was given (compliance lists everything otherwise).
    explicit: bool,
}

fn day_str(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// `1234567.8` → `1,234,568` (figures are for people).
pub(super) fn grouped(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(a, b)| (a, Some(b)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(fr) = frac {
        out.push('.');
        out.push_str(fr);
    }
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

fn pct_str(p: Option<f64>) -> String {
    p.map_or("n/a".into(), |p| format!("{p:+.1} %"))
}

fn figure(label: &str, value: String, detail: Option<String>) -> Figure {
    Figure {
        label: label.into(),
        value,
        detail,
    }
}

/// Builds a report.
pub fn build(lake_dir: &Path, billing: Option<&Billing>, opts: &ReportOptions) -> Result<Report> {
    let lake = Lake::open(lake_dir)?;
    let meters = Meters::load_or_default(opts.meters.as_deref())?;
    if let Some(t) = &opts.tenant {
        let planned = billing.is_some_and(|b| b.tenants.iter().any(|x| &x.id == t));
        let seen = || -> Result<bool> {
            let Some(lf) =
                crate::usage::events_between(&lake, Some(t), i64::MIN / 4, i64::MAX / 4)?
            else {
                return Ok(false);
            };
            let n = lf.select([len().alias("n")]).collect()?;
            Ok(n.column("n")?
                .cast(&DataType::UInt64)?
                .u64()?
                .get(0)
                .unwrap_or(0)
                > 0)
        };
        if !planned && !seen()? {
            return Err(Error::InvalidParameter {
                name: "--tenant",
                reason: format!(
                    "{t} has no events in {} and no plan in the tenants file",
                    lake_dir.display()
                ),
            });
        }
    }
    let latest = if lake.data_files().is_empty() {
        chrono::Utc::now().timestamp_micros()
    } else {
        parse_at(&lake, "latest")?
    };
    let to = opts
        .to
        .unwrap_or_else(|| (latest - 1).div_euclid(DAY) * DAY + DAY);
    let from = opts.from.unwrap_or(to - 30 * DAY);
    if from >= to {
        return Err(Error::InvalidParameter {
            name: "--from",
            reason: format!("{} is not before --to {}", rfc3339(from), rfc3339(to)),
        });
    }
    let ctx = Ctx {
        lake,
        dir: lake_dir.to_path_buf(),
        billing,
        meters,
        tenant: opts.tenant.clone(),
        from,
        to,
        prev_from: from - (to - from),
        at: latest.min(to),
        top: opts.top.max(1),
        explicit: opts.from.is_some() || opts.to.is_some(),
    };
    let mut r = match opts.kind {
        Kind::Summary => summary(&ctx)?,
        Kind::Detailed => detailed(&ctx)?,
        Kind::Forecast => forecast(&ctx)?,
        Kind::Anomaly => anomaly(&ctx)?,
        Kind::Executive => executive(&ctx)?,
        Kind::Compliance => compliance(&ctx)?,
    };
    r.scope = ctx.scope(opts.kind);
    Ok(r)
}

impl Ctx<'_> {
    fn scope(&self, kind: Kind) -> String {
        let who = self
            .tenant
            .as_deref()
            .map_or("All tenants".to_string(), |t| format!("Tenant {t}"));
        if kind == Kind::Compliance && !self.explicit {
            return format!("{who}; the lake's whole history, from its commit log");
        }
        format!(
            "{who}; {} to {} (UTC, end exclusive), compared with {} to {}; quotas as of {}",
            day_str(self.from),
            day_str(self.to),
            day_str(self.prev_from),
            day_str(self.from),
            rfc3339(self.at)
        )
    }

    fn wants(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Day series of every tenant × meter (this tenant's), brought up to date.
    fn day_series(&self) -> Result<Vec<RollupSeries>> {
        let spec = RollupSpec::new(Granularity::Day);
        rollup(&self.lake, &self.meters, &spec, &RollupOptions::default())?;
        Ok(rollup_series(&self.lake, &spec)?
            .into_iter()
            .filter(|s| self.wants(&s.tenant_id))
            .collect())
    }

    fn aggregation(&self, meter: &str) -> Aggregation {
        self.meters
            .get(meter)
            .map_or(Aggregation::Sum, |m| m.aggregation)
    }

    fn unit(&self, meter: &str) -> String {
        self.meters
            .get(meter)
            .and_then(|m| m.unit.clone())
            .unwrap_or_default()
    }

    /// Totals of the period and the one before.
    fn totals(&self, series: &[RollupSeries]) -> Vec<Total> {
        series
            .iter()
            .map(|s| {
                let agg = self.aggregation(&s.meter);
                let pick = |a: i64, b: i64| -> (Vec<f64>, f64) {
                    let mut v = Vec::new();
                    let mut n = 0.0;
                    for i in 0..s.ts.len() {
                        if s.ts[i] >= a && s.ts[i] < b {
                            v.push(s.values[i]);
                            n += s.counts[i];
                        }
                    }
                    (v, n)
                };
                let (cur, ne) = pick(self.from, self.to);
                let (prev, np) = pick(self.prev_from, self.from);
                Total {
                    tenant_id: s.tenant_id.clone(),
                    meter: s.meter.clone(),
                    unit: self.unit(&s.meter),
                    additive: agg.additive(),
                    current: combine(agg, &cur),
                    previous: combine(agg, &prev),
                    events: ne,
                    previous_events: np,
                }
            })
            .filter(|t| t.events > 0.0 || t.previous_events > 0.0)
            .collect()
    }

    fn quotas(&self, project: bool) -> Result<Vec<QuotaRow>> {
        let Some(b) = self.billing else {
            return Ok(Vec::new());
        };
        if let Some(t) = &self.tenant
            && b.tenants.iter().all(|x| &x.id != t)
        {
            return Ok(Vec::new());
        }
        quotas(
            &self.lake,
            b,
            &QuotaOptions {
                at: self.at,
                tenant: self.tenant.clone(),
                project,
                ..QuotaOptions::default()
            },
        )
    }

    /// Anomaly incidents overlapping the period (hourly detection, else daily).
    fn incidents(&self) -> Result<Vec<Incident>> {
        let Some(path) = crate::anomalies::incidents_file(&self.dir) else {
            return Ok(Vec::new());
        };
        let df = crate::alerts::read_parquet(&path)?;
        let s = |n: &str| str_col(&df, n);
        let t = |n: &str| ts_col(&df, n);
        // Rendered cells drop non-finite numbers either way; NaN keeps the rows aligned.
        let x = |n: &str| -> Result<Vec<f64>> {
            Ok(f64_col(&df, n)?
                .into_iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let (tenant, meter, users, det, dets, sev) = (
            s("tenant_id")?,
            s("meter")?,
            s("user_id")?,
            s("detector")?,
            s("detectors")?,
            s("severity")?,
        );
        let (start, end) = (t("window_start")?, t("window_end")?);
        let (obs, exp, score, risk) = (x("observed")?, x("expected")?, x("score")?, x("risk")?);
        let fraud: Vec<bool> = df
            .column("fraud_suspect")?
            .bool()?
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect();
        Ok((0..df.height())
            .filter(|&i| self.wants(&tenant[i]) && start[i] < self.to && end[i] > self.from)
            .map(|i| Incident {
                tenant_id: tenant[i].clone(),
                meter: meter[i].clone(),
                users: users[i].clone(),
                start: start[i],
                end: end[i],
                observed: obs[i],
                expected: exp[i],
                score: score[i],
                detector: det[i].clone(),
                detectors: dets[i].clone(),
                severity: sev[i].clone(),
                risk: risk[i],
                fraud_suspect: fraud[i],
            })
            .collect())
    }

    /// Events per tenant by local hour and weekday over the period (tenant time zones from
    /// the tenants file, UTC otherwise).
    fn rhythms(&self) -> Result<Vec<Rhythm>> {
        let Some(lf) =
            crate::usage::events_between(&self.lake, self.tenant.as_deref(), self.from, self.to)?
        else {
            return Ok(Vec::new());
        };
        let df = lf
            .group_by([
                col("tenant_id"),
                (col("ts").cast(DataType::Int64) / lit(HOUR) * lit(HOUR)).alias("hour"),
            ])
            .agg([len().alias("n")])
            .sort(["tenant_id", "hour"], SortMultipleOptions::default())
            .collect()?;
        let zones: HashMap<&str, Zone> = self
            .billing
            .map(|b| b.tenants.iter().map(|t| (t.id.as_str(), t.zone)).collect())
            .unwrap_or_default();
        let (t, h, n) = (
            df.column("tenant_id")?.str()?,
            df.column("hour")?.i64()?,
            df.column("n")?.cast(&DataType::Float64)?,
        );
        let n = n.f64()?;
        let mut out: Vec<Rhythm> = Vec::new();
        for i in 0..df.height() {
            let tenant = t.get(i).unwrap_or_default();
            if out.last().is_none_or(|r| r.tenant_id != tenant) {
                let zone = zones.get(tenant).copied().unwrap_or(Zone::UTC);
                out.push(Rhythm {
                    tenant_id: tenant.to_string(),
                    zone: zone.name().to_string(),
                    hours: [0.0; 24],
                    days: [0.0; 7],
                });
            }
            let zone = zones.get(tenant).copied().unwrap_or(Zone::UTC);
            let (hh, wd) = zone.local_hour_weekday(h.get(i).unwrap_or_default());
            let r = out.last_mut().expect("pushed");
            let v = n.get(i).unwrap_or_default();
            r.hours[hh as usize] += v;
            r.days[wd as usize] += v;
        }
        Ok(out)
    }

    /// Seat use of every tenant paying seat overage in its current period: billed users,
    /// and those active on a single (UTC) day of the period.
    fn seat_use(&self, quotas: &[QuotaRow]) -> Result<Vec<insights::SeatUse>> {
        let Some(b) = self.billing else {
            return Ok(Vec::new());
        };
        let rows: Vec<&QuotaRow> = quotas
            .iter()
            .filter(|q| q.overage_units > Decimal::ZERO)
            .filter(|q| {
                b.catalog
                    .meters
                    .get(&q.meter)
                    .is_some_and(|m| m.usage == crate::billing::plans::UsageRule::UniqueUsers)
            })
            .collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let start_of = |q: &QuotaRow| {
            chrono::DateTime::parse_from_rfc3339(&q.period_start)
                .map(|d| d.timestamp_micros())
                .unwrap_or(self.at)
        };
        let from = rows.iter().map(|q| start_of(q)).min().unwrap_or(self.at);
        let Some(lf) =
            crate::usage::events_between(&self.lake, self.tenant.as_deref(), from, self.at)?
        else {
            return Ok(Vec::new());
        };
        // Seats are counted from the billed meter's lake events only.
        let event_of = |q: &QuotaRow| {
            b.catalog
                .meters
                .get(&q.meter)
                .map_or(q.meter.clone(), |m| m.event.clone())
        };
        let win = df!(
            "tenant_id" => rows.iter().map(|q| q.tenant_id.clone()).collect::<Vec<_>>(),
            "_start" => rows.iter().map(|q| start_of(q)).collect::<Vec<_>>(),
            "_event" => rows.iter().map(|q| event_of(q)).collect::<Vec<_>>(),
        )?
        .lazy();
        let df = lf
            .filter(col("user_id").is_not_null())
            .join(
                win,
                [col("tenant_id")],
                [col("tenant_id")],
                JoinArgs::new(JoinType::Inner),
            )
            .filter(
                col("ts")
                    .cast(DataType::Int64)
                    .gt_eq(col("_start"))
                    .and(col("meter").eq(col("_event"))),
            )
            .group_by([col("tenant_id"), col("user_id")])
            .agg([(col("ts").cast(DataType::Int64) / lit(DAY))
                .n_unique()
                .alias("days")])
            .group_by([col("tenant_id")])
            .agg([
                len().alias("users"),
                col("days").eq(lit(1)).sum().alias("one_day"),
            ])
            .collect()?;
        let t = df.column("tenant_id")?.str()?;
        let one = df.column("one_day")?.cast(&DataType::UInt64)?;
        let one = one.u64()?;
        let users = df.column("users")?.cast(&DataType::UInt64)?;
        let users = users.u64()?;
        let found: HashMap<&str, (u64, u64)> = (0..df.height())
            .map(|i| {
                (
                    t.get(i).unwrap_or_default(),
                    (users.get(i).unwrap_or(0), one.get(i).unwrap_or(0)),
                )
            })
            .collect();
        let mut out = Vec::new();
        for q in rows {
            let Some(&(billed, one_day)) = found.get(q.tenant_id.as_str()) else {
                continue;
            };
            let Some(plan) = b.catalog.plan(&q.plan) else {
                continue;
            };
            let crate::billing::plans::Limit::Overage(p) = &plan.allowance(&q.meter).limit else {
                continue;
            };
            let fewer = (q.overage_units - Decimal::from(one_day)).max(Decimal::ZERO);
            out.push(insights::SeatUse {
                tenant_id: q.tenant_id.clone(),
                meter: q.meter.clone(),
                billed,
                over: q.overage_units,
                one_day_users: one_day,
                cost_without: crate::billing::round_money(p.cost(fewer), b.catalog.minor_units),
                cost: q.overage_cost,
            });
        }
        Ok(out)
    }

    fn engagement(&self) -> Result<Vec<Engagement>> {
        engagement(
            &self.lake,
            &EngagementOptions {
                tenant: self.tenant.clone(),
                at: Some(self.at),
                ..EngagementOptions::default()
            },
        )
    }

    /// The lake's forecast and metrics tables (daily, else hourly).
    fn forecasts(&self) -> Result<(DataFrame, DataFrame)> {
        let base = self.dir.join(crate::predict::FORECASTS_DIR);
        let Some(dir) = ["day", "hour"]
            .iter()
            .map(|g| base.join(format!("granularity={g}")))
            .find(|d| d.join("forecast.parquet").exists())
        else {
            return Err(Error::InvalidParameter {
                name: "--kind forecast",
                reason: format!(
                    "{} has no forecasts yet: run `meterlake forecast --lake {} --horizon 14` (or `meterlake run`) first",
                    self.dir.display(),
                    self.dir.display()
                ),
            });
        };
        let mut fc = crate::alerts::read_parquet(&dir.join("forecast.parquet"))?;
        let mut mt = crate::alerts::read_parquet(&dir.join("metrics.parquet"))?;
        if let Some(t) = &self.tenant {
            fc = fc
                .lazy()
                .filter(col("tenant_id").eq(lit(t.clone())))
                .collect()?;
            mt = mt
                .lazy()
                .filter(col("tenant_id").eq(lit(t.clone())))
                .collect()?;
        }
        Ok((fc, mt))
    }
}

/// An anomaly incident read back from the anomaly stage.
#[derive(Debug, Clone)]
struct Incident {
    tenant_id: String,
    meter: String,
    users: String,
    start: i64,
    end: i64,
    observed: f64,
    expected: f64,
    score: f64,
    detector: String,
    detectors: String,
    severity: String,
    risk: f64,
    fraud_suspect: bool,
}

impl Incident {
    fn fact(&self) -> IncidentFact {
        IncidentFact {
            tenant_id: self.tenant_id.clone(),
            meter: self.meter.clone(),
            severity: self.severity.clone(),
            risk: self.risk,
            fraud_suspect: self.fraud_suspect,
        }
    }
}

/// A period's value from its days, by the meter's aggregation: sums add, gauges take the
/// last day, max and min their extreme, distinct counts their busiest day (a lower bound:
/// distinct users do not add across days), averages and percentiles the mean of days.
pub(super) fn combine(agg: Aggregation, v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    match agg {
        a if a.additive() => v.iter().sum(),
        Aggregation::Latest => *v.last().expect("not empty"),
        Aggregation::Max | Aggregation::UniqueCount => v.iter().copied().fold(f64::MIN, f64::max),
        Aggregation::Min => v.iter().copied().fold(f64::MAX, f64::min),
        _ => v.iter().sum::<f64>() / v.len() as f64,
    }
}

/// How [`combine`] reads a period's days, for the column people see.
fn rule(agg: Aggregation) -> &'static str {
    match agg {
        a if a.additive() => "sum",
        Aggregation::Latest => "last day",
        Aggregation::Max => "max",
        Aggregation::Min => "min",
        Aggregation::UniqueCount => "busiest day",
        _ => "mean of days",
    }
}

fn totals_table(ctx: &Ctx, totals: &[Total]) -> Table {
    Table::new("usage", "Usage per tenant and meter")
        .text("tenant_id", totals.iter().map(|t| t.tenant_id.as_str()))
        .text("meter", totals.iter().map(|t| t.meter.as_str()))
        .text("unit", totals.iter().map(|t| t.unit.as_str()))
        .text(
            "rule",
            totals.iter().map(|t| rule(ctx.aggregation(&t.meter))),
        )
        .num("total", 2, totals.iter().map(|t| t.current))
        .num("previous", 2, totals.iter().map(|t| t.previous))
        .opt_num(
            "change_pct",
            1,
            totals.iter().map(Total::change_pct).collect(),
        )
        .num("events", 0, totals.iter().map(|t| t.events))
}

pub(crate) fn quota_table(rows: &[QuotaRow], projected: bool) -> Table {
    let mut t = Table::new("quotas", "Quotas in the current period")
        .text("tenant_id", rows.iter().map(|q| q.tenant_id.as_str()))
        .text("plan", rows.iter().map(|q| q.plan.as_str()))
        .text("meter", rows.iter().map(|q| q.meter.as_str()))
        .text("unit", rows.iter().map(|q| q.unit.as_str()))
        .num("used", 3, rows.iter().map(|q| f(q.used)))
        .opt_num(
            "included",
            3,
            rows.iter().map(|q| q.included.map(f)).collect(),
        )
        .opt_num(
            "percent",
            2,
            rows.iter().map(|q| q.percent.map(f)).collect(),
        )
        .text("status", rows.iter().map(|q| q.status.name()))
        .num("overage_units", 3, rows.iter().map(|q| f(q.overage_units)))
        .num("overage_cost", 2, rows.iter().map(|q| f(q.overage_cost)));
    if projected {
        let p = |g: fn(&crate::billing::quota::Projection) -> Decimal| -> Vec<Option<f64>> {
            rows.iter()
                .map(|q| q.projected.as_ref().map(|x| f(g(x))))
                .collect()
        };
        t = t
            .opt_num("projected_usage", 2, p(|x| x.usage))
            .opt_num("projected_lower", 2, p(|x| x.usage_lower))
            .opt_num("projected_upper", 2, p(|x| x.usage_upper))
            .opt_num(
                "projected_percent",
                1,
                rows.iter()
                    .map(|q| {
                        let (p, inc) = (q.projected.as_ref()?, q.included?);
                        (inc > Decimal::ZERO).then(|| f(p.usage) / f(inc) * 100.0)
                    })
                    .collect(),
            )
            .opt_text(
                "limit_reached_on",
                rows.iter()
                    .map(|q| q.projected.as_ref().and_then(|p| p.limit_at.clone()))
                    .collect(),
            )
            .opt_num("projected_cost", 2, p(|x| x.cost))
            .opt_num("projected_cost_lower", 2, p(|x| x.cost_lower))
            .opt_num("projected_cost_upper", 2, p(|x| x.cost_upper))
            .opt_text(
                "model",
                rows.iter()
                    .map(|q| q.projected.as_ref().map(|p| p.model.clone()))
                    .collect(),
            );
    }
    t.text("period_start", rows.iter().map(|q| q.period_start.as_str()))
        .text("period_end", rows.iter().map(|q| q.period_end.as_str()))
}

fn quota_bars(ctx: &Ctx, rows: &[QuotaRow]) -> Option<Chart> {
    let mut with: Vec<&QuotaRow> = rows.iter().filter(|q| q.percent.is_some()).collect();
    if with.is_empty() {
        return None;
    }
    with.sort_by(|a, b| {
        b.percent
            .cmp(&a.percent)
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.meter.cmp(&b.meter))
    });
    with.truncate(ctx.top.max(25));
    Some(Chart::Bars(BarChart {
        title: "Quota used in the current period (highest first)".into(),
        unit: "% of allowance".into(),
        bars: with
            .iter()
            .map(|q| Bar {
                label: format!("{} / {}", q.tenant_id, q.meter),
                value: q.percent.map(f).unwrap_or(0.0),
                status: q.status.name().into(),
            })
            .collect(),
        reference: Some(100.0),
    }))
}

fn active_alerts(ctx: &Ctx) -> Result<Vec<crate::alerts::Alert>> {
    Ok(crate::alerts::read_store(&ctx.dir)?
        .into_iter()
        .filter(|a| a.acknowledged_at.is_none() && ctx.wants(&a.tenant_id))
        .collect())
}

/// Quotas (projected) and engagement: the two slow reads (running them side by side gained
/// nothing on 2 cores: both keep polars busy).
fn quotas_and_engagement(ctx: &Ctx) -> Result<(Vec<QuotaRow>, Vec<Engagement>)> {
    Ok((ctx.quotas(true)?, ctx.engagement()?))
}

fn all_insights(
    ctx: &Ctx,
    totals: &[Total],
    quotas: &[QuotaRow],
    engagement: &[Engagement],
) -> Result<Vec<Insight>> {
    let rhythms = ctx.rhythms()?;
    let incidents: Vec<IncidentFact> = ctx.incidents()?.iter().map(Incident::fact).collect();
    let seats = ctx.seat_use(quotas)?;
    Ok(insights::compute(&Facts {
        totals,
        quotas,
        billing: ctx.billing,
        rhythms: &rhythms,
        incidents: &incidents,
        engagement,
        seats: &seats,
    }))
}

/// One tenant's line of the summary.
#[derive(Default)]
struct TenantLine {
    events: f64,
    meters: usize,
    max_pct: Option<f64>,
    status: &'static str,
    overage: f64,
    alerts: usize,
    plan: String,
}

/// A period's daily values and the previous period's, shifted onto it.
type TwoPeriods = (BTreeMap<i64, f64>, BTreeMap<i64, f64>);

fn summary(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let (quotas, eng) = quotas_and_engagement(ctx)?;
    let alerts = active_alerts(ctx)?;
    let insights = all_insights(ctx, &totals, &quotas, &eng)?;
    // Per tenant.
    let mut tenants: BTreeMap<&str, TenantLine> = BTreeMap::new();
    for t in &totals {
        let e = tenants.entry(&t.tenant_id).or_default();
        e.events += t.events;
        e.meters += usize::from(t.events > 0.0);
    }
    let rank = |s: &str| {
        ["ok", "warning", "critical", "exceeded", "blocked"]
            .iter()
            .position(|x| *x == s)
            .unwrap_or(0)
    };
    for q in &quotas {
        let e = tenants.entry(&q.tenant_id).or_default();
        if let Some(p) = q.percent {
            e.max_pct = Some(e.max_pct.unwrap_or(0.0).max(f(p)));
        }
        if rank(q.status.name()) >= rank(e.status) {
            e.status = q.status.name();
        }
        e.overage += f(q.overage_cost);
        e.plan = q.plan.clone();
    }
    for a in &alerts {
        tenants.entry(&a.tenant_id).or_default().alerts += 1;
    }
    let rows: Vec<_> = tenants.iter().collect();
    let tenant_table = Table::new("tenants", "Tenants")
        .text("tenant_id", rows.iter().map(|r| *r.0))
        .text("plan", rows.iter().map(|r| r.1.plan.as_str()))
        .num("events", 0, rows.iter().map(|r| r.1.events))
        .int("meters_used", rows.iter().map(|r| r.1.meters as i64))
        .opt_num(
            "max_quota_percent",
            2,
            rows.iter().map(|r| r.1.max_pct).collect(),
        )
        .text(
            "worst_status",
            rows.iter().map(|r| {
                if r.1.status.is_empty() {
                    "ok"
                } else {
                    r.1.status
                }
            }),
        )
        .num("overage_cost", 2, rows.iter().map(|r| r.1.overage))
        .int("active_alerts", rows.iter().map(|r| r.1.alerts as i64));
    let events: f64 = totals.iter().map(|t| t.events).sum();
    let prev_events: f64 = totals.iter().map(|t| t.previous_events).sum();
    let overage: f64 = quotas.iter().map(|q| f(q.overage_cost)).sum();
    let at_limit = tenants
        .values()
        .filter(|v| matches!(v.status, "exceeded" | "blocked"))
        .count();
    let currency = ctx.billing.map_or("", |b| b.catalog.currency.as_str());
    let figures = vec![
        figure(
            "Tenants with usage",
            tenants
                .values()
                .filter(|v| v.events > 0.0)
                .count()
                .to_string(),
            None,
        ),
        figure(
            "Events",
            grouped(events, 0),
            Some(format!(
                "{} against the previous period",
                pct_str((prev_events > 0.0).then(|| (events / prev_events - 1.0) * 100.0))
            )),
        ),
        figure(
            "Overage so far",
            format!("{} {currency}", grouped(overage, 2)),
            Some("current billing periods".into()),
        ),
        figure("Tenants over an allowance", at_limit.to_string(), None),
        figure(
            "Active alerts",
            alerts.len().to_string(),
            Some("not acknowledged".into()),
        ),
    ];
    let mut tables = vec![tenant_table, totals_table(ctx, &totals)];
    if ctx.billing.is_some() {
        tables.push(quota_table(&quotas, false));
    }
    let alert_table = Table::new("alerts", "Active alerts")
        .text("id", alerts.iter().map(|a| a.id.as_str()))
        .text("kind", alerts.iter().map(|a| a.kind.as_str()))
        .text("tenant_id", alerts.iter().map(|a| a.tenant_id.as_str()))
        .text("meter", alerts.iter().map(|a| a.meter.as_str()))
        .text("severity", alerts.iter().map(|a| a.severity.as_str()))
        .text("message", alerts.iter().map(|a| a.message.as_str()))
        .text("raised_at", alerts.iter().map(|a| a.raised_at.as_str()));
    tables.push(alert_table);
    Ok(Report {
        kind: Kind::Summary,
        title: "Usage summary".into(),
        scope: String::new(),
        figures,
        insights,
        charts: quota_bars(ctx, &quotas).into_iter().collect(),
        tables,
    })
}

/// Per-day rows with trend indicators.
fn detailed(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let rhythms = ctx.rhythms()?;
    let insights: Vec<Insight> = insights::compute(&Facts {
        totals: &totals,
        rhythms: &rhythms,
        ..Facts::default()
    });
    let (mut t, mut m, mut d, mut v, mut chg, mut avg, mut trend) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    struct Cmp {
        tenant: String,
        meter: String,
        peak_day: Option<i64>,
        peak_value: f64,
        trend: &'static str,
    }
    let mut cmp: Vec<Cmp> = Vec::new();
    for s in &series {
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
            let tr = match (a7, p7) {
                (Some(a), Some(p)) if p > 0.0 && a > p * 1.1 => "up",
                (Some(a), Some(p)) if p > 0.0 && a < p * 0.9 => "down",
                (Some(a), Some(p)) if p == 0.0 && a > 0.0 => "up",
                _ => "flat",
            };
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
        cmp.push(Cmp {
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
    // Comparison with the previous period, peaks.
    let key: HashMap<(&str, &str), &Cmp> = cmp
        .iter()
        .map(|c| ((c.tenant.as_str(), c.meter.as_str()), c))
        .collect();
    let rh: HashMap<&str, &Rhythm> = rhythms.iter().map(|r| (r.tenant_id.as_str(), r)).collect();
    let rows: Vec<(&Total, Option<&&Cmp>, Option<&&Rhythm>)> = totals
        .iter()
        .map(|x| {
            (
                x,
                key.get(&(x.tenant_id.as_str(), x.meter.as_str())),
                rh.get(x.tenant_id.as_str()),
            )
        })
        .collect();
    let comparison = Table::new("comparison", "Against the previous period, with peaks")
        .text("tenant_id", rows.iter().map(|r| r.0.tenant_id.as_str()))
        .text("meter", rows.iter().map(|r| r.0.meter.as_str()))
        .text(
            "rule",
            rows.iter().map(|r| rule(ctx.aggregation(&r.0.meter))),
        )
        .num("total", 2, rows.iter().map(|r| r.0.current))
        .num("previous", 2, rows.iter().map(|r| r.0.previous))
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
                None if r.0.current > 0.0 => "new",
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
        .opt_text(
            "busiest_weekday",
            rows.iter()
                .map(|r| r.2.map(|x| WEEKDAYS[x.peak_day().0].to_string()))
                .collect(),
        )
        .opt_text(
            "peak_hour_local",
            rows.iter()
                .map(|r| r.2.map(|x| format!("{:02}:00 {}", x.peak_hour().0, x.zone)))
                .collect(),
        );
    // One chart per meter: this period against the previous one, shifted onto it.
    let mut by_meter: BTreeMap<&str, TwoPeriods> = BTreeMap::new();
    for s in &series {
        let e = by_meter.entry(&s.meter).or_default();
        for i in 0..s.ts.len() {
            if s.ts[i] >= ctx.from && s.ts[i] < ctx.to {
                *e.0.entry(s.ts[i]).or_default() += s.values[i];
            } else if s.ts[i] >= ctx.prev_from && s.ts[i] < ctx.from {
                *e.1.entry(s.ts[i] + (ctx.to - ctx.from)).or_default() += s.values[i];
            }
        }
    }
    let charts = by_meter
        .iter()
        .map(|(meter, (cur, prev))| {
            Chart::Time(TimeChart {
                title: format!(
                    "{meter} per day{}",
                    if ctx.tenant.is_some() {
                        ""
                    } else {
                        ", all tenants"
                    }
                ),
                y_label: ctx.unit(meter),
                lines: vec![
                    Line {
                        name: "this period".into(),
                        points: cur.iter().map(|(a, b)| (*a, *b)).collect(),
                    },
                    Line {
                        name: "previous period (shifted)".into(),
                        points: prev.iter().map(|(a, b)| (*a, *b)).collect(),
                    },
                ],
                forecast: None,
                band: Vec::new(),
                markers: Vec::new(),
            })
        })
        .collect();
    let figures = vec![
        figure("Series", series.len().to_string(), None),
        figure("Days", ((ctx.to - ctx.from) / DAY).to_string(), None),
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
        kind: Kind::Detailed,
        title: "Detailed usage".into(),
        scope: String::new(),
        figures,
        insights,
        charts,
        tables: vec![comparison, daily],
    })
}

fn str_col(df: &DataFrame, n: &str) -> Result<Vec<String>> {
    Ok(df
        .column(n)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

fn f64_col(df: &DataFrame, n: &str) -> Result<Vec<Option<f64>>> {
    Ok(df
        .column(n)?
        .cast(&DataType::Float64)?
        .f64()?
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect())
}

fn ts_col(df: &DataFrame, n: &str) -> Result<Vec<i64>> {
    Ok(df
        .column(n)?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .map(|v| v.unwrap_or_default())
        .collect())
}

fn forecast(ctx: &Ctx) -> Result<Report> {
    let (fc, mt) = ctx.forecasts()?;
    let quotas = ctx.quotas(true)?;
    let insights = insights::compute(&Facts {
        quotas: &quotas,
        billing: ctx.billing,
        ..Facts::default()
    });
    let (ft, fm, fts, fmodel) = (
        str_col(&fc, "tenant_id")?,
        str_col(&fc, "meter")?,
        ts_col(&fc, "ts")?,
        str_col(&fc, "model")?,
    );
    let (y, lo, hi) = (
        f64_col(&fc, "yhat")?,
        f64_col(&fc, "yhat_lower")?,
        f64_col(&fc, "yhat_upper")?,
    );
    let forecast_table = Table::new("forecast", "Forecasts with prediction intervals")
        .text("tenant_id", ft.iter().map(String::as_str))
        .text("meter", fm.iter().map(String::as_str))
        .text("date", fts.iter().map(|t| day_str(*t)))
        .text("model", fmodel.iter().map(String::as_str))
        .opt_num("yhat", 2, y.clone())
        .opt_num("yhat_lower", 2, lo.clone())
        .opt_num("yhat_upper", 2, hi.clone());
    let (mt_t, mt_m, mt_model, mt_status) = (
        str_col(&mt, "tenant_id")?,
        str_col(&mt, "meter")?,
        str_col(&mt, "model")?,
        str_col(&mt, "status")?,
    );
    let (mase, smape, cov) = (
        f64_col(&mt, "mase")?,
        f64_col(&mt, "smape")?,
        f64_col(&mt, "coverage")?,
    );
    let accuracy = Table::new("accuracy", "Each series' model and its backtest accuracy")
        .text("tenant_id", mt_t.iter().map(String::as_str))
        .text("meter", mt_m.iter().map(String::as_str))
        .text("model", mt_model.iter().map(String::as_str))
        .opt_num("mase", 3, mase.clone())
        .opt_num("smape", 3, smape)
        .opt_num("coverage", 3, cov)
        .text("status", mt_status.iter().map(String::as_str));
    let mut outlook: Vec<QuotaRow> = quotas.clone();
    outlook.sort_by(|a, b| {
        let p = |q: &QuotaRow| -> f64 {
            match (&q.projected, q.included) {
                (Some(p), Some(i)) if i > Decimal::ZERO => f(p.usage) / f(i),
                _ => -1.0,
            }
        };
        p(b).total_cmp(&p(a))
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.meter.cmp(&b.meter))
    });
    let mut outlook_table = quota_table(&outlook, true);
    outlook_table.name = "quota_outlook".into();
    outlook_table.title = "Quota outlook: the period's end projected".into();
    // Charts: the series whose projected quota use is highest (or the tenant's series).
    let series = ctx.day_series()?;
    let incidents = ctx.incidents()?;
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
    let mut charts = Vec::new();
    for (tenant, meter) in &chosen {
        let Some(s) = series
            .iter()
            .find(|s| &s.tenant_id == tenant && &s.meter == meter)
        else {
            continue;
        };
        let hist: Vec<(i64, f64)> = (0..s.ts.len())
            .filter(|&i| s.ts[i] >= ctx.to - 60 * DAY)
            .map(|i| (s.ts[i], s.values[i]))
            .collect();
        let idx: Vec<usize> = (0..ft.len())
            .filter(|&i| &ft[i] == tenant && &fm[i] == meter)
            .collect();
        let markers = incidents
            .iter()
            .filter(|x| &x.tenant_id == tenant && &x.meter == meter)
            .filter_map(|x| {
                let day = x.start.div_euclid(DAY) * DAY;
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
                    idx.first().map_or("", |&i| fmodel[i].as_str())
                ),
                points: idx
                    .iter()
                    .filter_map(|&i| y[i].map(|v| (fts[i], v)))
                    .collect(),
            }),
            band: idx
                .iter()
                .filter_map(|&i| Some((fts[i], lo[i]?, hi[i]?)))
                .collect(),
            markers,
        }));
    }
    let with: Vec<f64> = mase.iter().flatten().copied().collect();
    let over: Vec<&QuotaRow> = quotas
        .iter()
        .filter(|q| matches!((&q.projected, q.included), (Some(p), Some(i)) if p.usage > i))
        .collect();
    let projected_overage: f64 = quotas
        .iter()
        .filter_map(|q| q.projected.as_ref())
        .map(|p| f(p.cost))
        .sum();
    let currency = ctx.billing.map_or("", |b| b.catalog.currency.as_str());
    let figures = vec![
        figure("Series forecast", mt_t.len().to_string(), None),
        figure(
            "Mean backtest MASE",
            if with.is_empty() {
                "n/a".into()
            } else {
                format!("{:.3}", with.iter().sum::<f64>() / with.len() as f64)
            },
            Some("below 1 beats the seasonal naive forecast".into()),
        ),
        figure(
            "Allowances projected to be exceeded",
            over.len().to_string(),
            None,
        ),
        figure(
            "Expected overage at the periods' end",
            format!("{} {currency}", grouped(projected_overage, 2)),
            None,
        ),
    ];
    Ok(Report {
        kind: Kind::Forecast,
        title: "Usage forecast".into(),
        scope: String::new(),
        figures,
        insights,
        charts,
        tables: vec![outlook_table, forecast_table, accuracy],
    })
}

/// A tenant with abuse patterns.
#[derive(Default)]
struct Suspect<'a> {
    incidents: usize,
    risk: f64,
    users: BTreeSet<&'a str>,
    patterns: BTreeSet<&'a str>,
    first: i64,
    last: i64,
}

fn anomaly(ctx: &Ctx) -> Result<Report> {
    let incidents = ctx.incidents()?;
    let facts: Vec<IncidentFact> = incidents.iter().map(Incident::fact).collect();
    let insights = insights::compute(&Facts {
        incidents: &facts,
        ..Facts::default()
    });
    // Status from the alert store: an anomaly alert is raised per incident start.
    let alerts = crate::alerts::read_store(&ctx.dir)?;
    let status: HashMap<(&str, &str, String), &str> = alerts
        .iter()
        .filter(|a| a.kind == "anomaly")
        .map(|a| {
            (
                (
                    a.tenant_id.as_str(),
                    a.meter.as_str(),
                    a.period_start.clone(),
                ),
                if a.acknowledged_at.is_some() {
                    "acknowledged"
                } else {
                    "alerted"
                },
            )
        })
        .collect();
    let st: Vec<&str> = incidents
        .iter()
        .map(|i| {
            status
                .get(&(i.tenant_id.as_str(), i.meter.as_str(), rfc3339(i.start)))
                .copied()
                .unwrap_or("open")
        })
        .collect();
    let table = Table::new("incidents", "Incidents, most severe first")
        .text("tenant_id", incidents.iter().map(|i| i.tenant_id.as_str()))
        .text("meter", incidents.iter().map(|i| i.meter.as_str()))
        .text("start", incidents.iter().map(|i| rfc3339(i.start)))
        .text("end", incidents.iter().map(|i| rfc3339(i.end)))
        .text("severity", incidents.iter().map(|i| i.severity.as_str()))
        .num("risk", 1, incidents.iter().map(|i| i.risk))
        .num("score", 2, incidents.iter().map(|i| i.score))
        .text("detector", incidents.iter().map(|i| i.detector.as_str()))
        .text("detectors", incidents.iter().map(|i| i.detectors.as_str()))
        .num("observed", 2, incidents.iter().map(|i| i.observed))
        .num("expected", 2, incidents.iter().map(|i| i.expected))
        .bool("fraud_suspect", incidents.iter().map(|i| i.fraud_suspect))
        .text("users", incidents.iter().map(|i| i.users.as_str()))
        .text("status", st.iter().copied());
    let mut suspects: BTreeMap<&str, Suspect> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.fraud_suspect) {
        let e = suspects.entry(&i.tenant_id).or_insert(Suspect {
            first: i64::MAX,
            last: i64::MIN,
            ..Suspect::default()
        });
        e.incidents += 1;
        e.risk = e.risk.max(i.risk);
        e.users.extend(i.users.split(',').filter(|u| !u.is_empty()));
        e.patterns.extend(i.detectors.split('+'));
        e.first = e.first.min(i.start);
        e.last = e.last.max(i.end);
    }
    let mut srows: Vec<(&str, Suspect)> = suspects.into_iter().collect();
    srows.sort_by(|a, b| b.1.risk.total_cmp(&a.1.risk).then(a.0.cmp(b.0)));
    let join = |s: &BTreeSet<&str>, sep: &str| s.iter().copied().collect::<Vec<_>>().join(sep);
    let fraud = Table::new("fraud_suspects", "Fraud suspects (abuse patterns)")
        .text("tenant_id", srows.iter().map(|r| r.0))
        .int("incidents", srows.iter().map(|r| r.1.incidents as i64))
        .num("max_risk", 1, srows.iter().map(|r| r.1.risk))
        .text("users", srows.iter().map(|r| join(&r.1.users, ",")))
        .text("patterns", srows.iter().map(|r| join(&r.1.patterns, "+")))
        .text("first", srows.iter().map(|r| rfc3339(r.1.first)))
        .text("last", srows.iter().map(|r| rfc3339(r.1.last)));
    // Charts of the top incidents' hourly series, ±3 days around them.
    let mut charts = Vec::new();
    let hour = RollupSpec::new(Granularity::Hour);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for inc in incidents
        .iter()
        .filter(|i| matches!(i.severity.as_str(), "high" | "critical"))
    {
        if charts.len() >= ctx.top.min(4) || seen.contains(&(&inc.tenant_id, &inc.meter)) {
            continue;
        }
        seen.push((&inc.tenant_id, &inc.meter));
        let (a, b) = (inc.start - 3 * DAY, inc.end + 3 * DAY);
        let df = crate::rollup::scan_rollup(&ctx.lake, &hour)?
            .filter(
                col("tenant_id")
                    .eq(lit(inc.tenant_id.clone()))
                    .and(col("meter").eq(lit(inc.meter.clone())))
                    .and(col("window_start").cast(DataType::Int64).gt_eq(lit(a)))
                    .and(col("window_start").cast(DataType::Int64).lt(lit(b))),
            )
            .select([
                col("window_start").cast(DataType::Int64).alias("ts"),
                col("value"),
            ])
            .sort(["ts"], SortMultipleOptions::default())
            .collect()?;
        let (ts, vs) = (ts_col(&df, "ts")?, f64_col(&df, "value")?);
        let points: Vec<(i64, f64)> = ts
            .iter()
            .zip(&vs)
            .filter_map(|(t, v)| Some((*t, (*v)?)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let markers = incidents
            .iter()
            .filter(|x| {
                x.tenant_id == inc.tenant_id && x.meter == inc.meter && x.start >= a && x.start < b
            })
            .filter_map(|x| {
                points
                    .iter()
                    .find(|p| p.0 >= x.start)
                    .map(|p| (p.0, p.1, x.severity.clone()))
            })
            .collect();
        charts.push(Chart::Time(TimeChart {
            title: format!(
                "{} / {}: {} incident, risk {:.0}",
                inc.tenant_id, inc.meter, inc.severity, inc.risk
            ),
            y_label: ctx.unit(&inc.meter),
            lines: vec![Line {
                name: "per hour".into(),
                points,
            }],
            forecast: None,
            band: Vec::new(),
            markers,
        }));
    }
    let mut by_sev: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &incidents {
        *by_sev.entry(i.severity.as_str()).or_default() += 1;
    }
    let tenants: BTreeSet<&str> = incidents.iter().map(|i| i.tenant_id.as_str()).collect();
    let figures = vec![
        figure(
            "Incidents",
            incidents.len().to_string(),
            Some(
                ["critical", "high", "medium", "low"]
                    .iter()
                    .filter_map(|k| by_sev.get(k).map(|v| format!("{v} {k}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ),
        figure("Tenants affected", tenants.len().to_string(), None),
        figure(
            "Fraud suspects",
            srows.len().to_string(),
            Some("tenants with abuse patterns".into()),
        ),
        figure(
            "Open",
            st.iter().filter(|s| **s == "open").count().to_string(),
            Some("no alert raised yet".into()),
        ),
    ];
    Ok(Report {
        kind: Kind::Anomaly,
        title: "Anomalies and abuse".into(),
        scope: String::new(),
        figures,
        insights,
        charts,
        tables: vec![table, fraud],
    })
}

/// A tenant's revenue in its current period.
#[derive(Default)]
struct Revenue {
    plan: String,
    base: f64,
    overage: f64,
    /// Overage projected to the period's end.
    projected: f64,
}

impl Revenue {
    fn total(&self) -> f64 {
        self.base + self.projected
    }
}

fn executive(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let (quotas, eng) = quotas_and_engagement(ctx)?;
    let insights = all_insights(ctx, &totals, &quotas, &eng)?;
    // KPIs per meter.
    let mut kpi: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    for t in &totals {
        let e = kpi.entry(&t.meter).or_default();
        e.0 += t.current;
        e.1 += t.previous;
        e.2 += usize::from(t.current > 0.0);
    }
    let krows: Vec<_> = kpi.iter().collect();
    let growth = |c: f64, p: f64| (p > 0.0).then(|| (c / p - 1.0) * 100.0);
    let kpis = Table::new("kpis", "Platform usage per meter")
        .text("meter", krows.iter().map(|r| *r.0))
        .text("unit", krows.iter().map(|r| ctx.unit(r.0)))
        .text("rule", krows.iter().map(|r| rule(ctx.aggregation(r.0))))
        .num("total", 2, krows.iter().map(|r| r.1.0))
        .num("previous", 2, krows.iter().map(|r| r.1.1))
        .opt_num(
            "growth_pct",
            1,
            krows.iter().map(|r| growth(r.1.0, r.1.1)).collect(),
        )
        .int("tenants", krows.iter().map(|r| r.1.2 as i64));
    // Revenue per tenant this period: base fee + overage so far, and projected.
    let mut rev: BTreeMap<&str, Revenue> = BTreeMap::new();
    if let Some(b) = ctx.billing {
        for q in &quotas {
            let e = rev.entry(&q.tenant_id).or_default();
            if e.plan.is_empty() {
                e.plan = q.plan.clone();
                e.base = b.catalog.plan(&q.plan).map_or(0.0, |p| f(p.base_fee));
            }
            e.overage += f(q.overage_cost);
            e.projected += q
                .projected
                .as_ref()
                .map_or(f(q.overage_cost), |p| f(p.cost));
        }
    }
    let events: BTreeMap<&str, f64> = totals.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.tenant_id.as_str()).or_default() += t.events;
        m
    });
    let mut top: Vec<(&str, f64, Option<&Revenue>)> =
        events.iter().map(|(t, e)| (*t, *e, rev.get(t))).collect();
    top.sort_by(|a, b| {
        let r = |x: &(&str, f64, Option<&Revenue>)| x.2.map_or(0.0, Revenue::total);
        r(b).total_cmp(&r(a))
            .then(b.1.total_cmp(&a.1))
            .then(a.0.cmp(b.0))
    });
    top.truncate(ctx.top);
    let top_tenants = Table::new(
        "top_tenants",
        "Top tenants by projected revenue this period",
    )
    .text("tenant_id", top.iter().map(|r| r.0))
    .opt_text(
        "plan",
        top.iter().map(|r| r.2.map(|v| v.plan.clone())).collect(),
    )
    .num("events", 0, top.iter().map(|r| r.1))
    .opt_num(
        "base_fee",
        2,
        top.iter().map(|r| r.2.map(|v| v.base)).collect(),
    )
    .opt_num(
        "overage_so_far",
        2,
        top.iter().map(|r| r.2.map(|v| v.overage)).collect(),
    )
    .opt_num(
        "projected_revenue",
        2,
        top.iter().map(|r| r.2.map(Revenue::total)).collect(),
    );
    // Features: events per `feature` property value in the period.
    let features =
        match crate::usage::events_between(&ctx.lake, ctx.tenant.as_deref(), ctx.from, ctx.to)? {
            // A substring test first: the JSON path runs only on rows that name a feature.
            Some(lf) => lf
                .filter(col("properties").str().contains_literal(lit("\"feature\"")))
                .with_column(crate::rollup::property_expr("feature").alias("feature"))
                .filter(col("feature").is_not_null())
                .group_by([col("feature")])
                .agg([
                    len().alias("events"),
                    col("tenant_id").n_unique().alias("tenants"),
                    col("user_id").n_unique().alias("users"),
                ])
                .sort_by_exprs(
                    [col("events"), col("feature")],
                    SortMultipleOptions::default().with_order_descending_multi([true, false]),
                )
                .limit(ctx.top as IdxSize)
                .collect()?,
            None => DataFrame::empty(),
        };
    let top_features = if features.height() > 0 {
        Table::new("top_features", "Top features")
            .text("feature", str_col(&features, "feature")?)
            .num(
                "events",
                0,
                f64_col(&features, "events")?
                    .into_iter()
                    .map(|v| v.unwrap_or(0.0)),
            )
            .num(
                "tenants",
                0,
                f64_col(&features, "tenants")?
                    .into_iter()
                    .map(|v| v.unwrap_or(0.0)),
            )
            .num(
                "users",
                0,
                f64_col(&features, "users")?
                    .into_iter()
                    .map(|v| v.unwrap_or(0.0)),
            )
    } else {
        Table::new("top_features", "Top features").text("feature", Vec::<String>::new())
    };
    let (dau, mau, known, inactive): (u64, u64, u64, u64) =
        eng.iter().fold((0, 0, 0, 0), |a, e| {
            (
                a.0 + e.dau,
                a.1 + e.mau,
                a.2 + e.known_users,
                a.3 + e.inactive_users,
            )
        });
    let users = Table::new("users", "Users")
        .text(
            "measure",
            [
                "daily active",
                "monthly active",
                "known",
                "inactive 30 days",
            ],
        )
        .int(
            "users",
            [dau as i64, mau as i64, known as i64, inactive as i64],
        );
    // Next 30 days from the forecasts (additive meters: the sum of daily means; a band's
    // bounds are added too, which overstates its width: it is labelled as such).
    let next = match ctx.forecasts() {
        Ok((fc, _)) => {
            let (m, ts, y, lo, hi) = (
                str_col(&fc, "meter")?,
                ts_col(&fc, "ts")?,
                f64_col(&fc, "yhat")?,
                f64_col(&fc, "yhat_lower")?,
                f64_col(&fc, "yhat_upper")?,
            );
            let mut acc: BTreeMap<&str, (f64, f64, f64, i64, i64)> = BTreeMap::new();
            for i in 0..m.len() {
                if !ctx.aggregation(&m[i]).additive()
                    || ts[i] < ctx.to
                    || ts[i] >= ctx.to + 30 * DAY
                {
                    continue;
                }
                let e = acc
                    .entry(&m[i])
                    .or_insert((0.0, 0.0, 0.0, i64::MAX, i64::MIN));
                e.0 += y[i].unwrap_or(0.0).max(0.0);
                e.1 += lo[i].unwrap_or(0.0).max(0.0);
                e.2 += hi[i].unwrap_or(0.0).max(0.0);
                e.3 = e.3.min(ts[i]);
                e.4 = e.4.max(ts[i]);
            }
            let rows: Vec<_> = acc.into_iter().collect();
            Table::new(
                "next_period",
                "Forecast of the next 30 days (sum of daily forecasts)",
            )
            .text("meter", rows.iter().map(|r| r.0))
            .text("from", rows.iter().map(|r| day_str(r.1.3)))
            .text("to", rows.iter().map(|r| day_str(r.1.4)))
            .num("forecast", 2, rows.iter().map(|r| r.1.0))
            .num("sum_of_lower_bounds", 2, rows.iter().map(|r| r.1.1))
            .num("sum_of_upper_bounds", 2, rows.iter().map(|r| r.1.2))
        }
        Err(_) => Table::new(
            "next_period",
            "Forecast of the next 30 days (no forecasts in the lake yet)",
        )
        .text("meter", Vec::<String>::new()),
    };
    let total_events: f64 = totals.iter().map(|t| t.events).sum();
    let prev_events: f64 = totals.iter().map(|t| t.previous_events).sum();
    let currency = ctx.billing.map_or("", |b| b.catalog.currency.as_str());
    let overage: f64 = rev.values().map(|v| v.overage).sum();
    let projected: f64 = rev.values().map(Revenue::total).sum();
    let active_tenants = events.values().filter(|e| **e > 0.0).count();
    let figures = vec![
        figure(
            "Events",
            grouped(total_events, 0),
            Some(format!(
                "{} against the previous period",
                pct_str(growth(total_events, prev_events))
            )),
        ),
        figure("Active tenants", active_tenants.to_string(), None),
        figure(
            "Overage revenue so far",
            format!("{} {currency}", grouped(overage, 2)),
            Some("current billing periods".into()),
        ),
        figure(
            "Projected revenue",
            format!("{} {currency}", grouped(projected, 2)),
            Some("base fees + projected overage".into()),
        ),
        figure(
            "Monthly active users",
            grouped(mau as f64, 0),
            Some(format!(
                "{} inactive for 30 days",
                grouped(inactive as f64, 0)
            )),
        ),
    ];
    // Daily events chart, this period and the previous one.
    let mut cur: BTreeMap<i64, f64> = BTreeMap::new();
    let mut prev: BTreeMap<i64, f64> = BTreeMap::new();
    for s in &series {
        for i in 0..s.ts.len() {
            if s.ts[i] >= ctx.from && s.ts[i] < ctx.to {
                *cur.entry(s.ts[i]).or_default() += s.counts[i];
            } else if s.ts[i] >= ctx.prev_from && s.ts[i] < ctx.from {
                *prev.entry(s.ts[i] + (ctx.to - ctx.from)).or_default() += s.counts[i];
            }
        }
    }
    let mut charts = vec![Chart::Time(TimeChart {
        title: "Events per day".into(),
        y_label: "events".into(),
        lines: vec![
            Line {
                name: "this period".into(),
                points: cur.into_iter().collect(),
            },
            Line {
                name: "previous period (shifted)".into(),
                points: prev.into_iter().collect(),
            },
        ],
        forecast: None,
        band: Vec::new(),
        markers: Vec::new(),
    })];
    if !top.is_empty() && ctx.billing.is_some() {
        charts.push(Chart::Bars(BarChart {
            title: "Top tenants by projected revenue".into(),
            unit: currency.to_string(),
            bars: top
                .iter()
                .map(|r| Bar {
                    label: r.0.to_string(),
                    value: r.2.map_or(0.0, Revenue::total),
                    status: "ok".into(),
                })
                .collect(),
            reference: None,
        }));
    }
    let top_insights: Vec<Insight> = insights.into_iter().take(ctx.top).collect();
    Ok(Report {
        kind: Kind::Executive,
        title: "Executive summary".into(),
        scope: String::new(),
        figures,
        insights: top_insights,
        charts,
        tables: vec![kpis, top_tenants, top_features, users, next],
    })
}

fn compliance(ctx: &Ctx) -> Result<Report> {
    let commits: Vec<&crate::lake::Commit> = ctx
        .lake
        .commits()
        .iter()
        .filter(|c| {
            !ctx.explicit || {
                let t = chrono::DateTime::parse_from_rfc3339(&c.committed_at)
                    .map(|d| d.timestamp_micros())
                    .unwrap_or(0);
                t >= ctx.from && t < ctx.to
            }
        })
        .collect();
    let ingests = Table::new(
        "commits",
        "Commits: what was ingested, compacted or deleted, and when",
    )
    .int("seq", commits.iter().map(|c| c.seq as i64))
    .text(
        "kind",
        commits.iter().map(|c| {
            serde_json::to_value(c.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }),
    )
    .text(
        "committed_at",
        commits.iter().map(|c| c.committed_at.as_str()),
    )
    .text(
        "inputs",
        commits.iter().map(|c| {
            c.inputs
                .iter()
                .map(|i| i.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }),
    )
    .int("read", commits.iter().map(|c| c.counts.read as i64))
    .int("accepted", commits.iter().map(|c| c.counts.accepted as i64))
    .int("rejected", commits.iter().map(|c| c.counts.rejected as i64))
    .int(
        "duplicates",
        commits.iter().map(|c| c.counts.duplicates as i64),
    )
    .int(
        "partitions",
        commits.iter().map(|c| c.partitions.len() as i64),
    )
    .int("files_added", commits.iter().map(|c| c.added.len() as i64))
    .int(
        "files_removed",
        commits.iter().map(|c| c.removed.len() as i64),
    )
    .opt_text(
        "quarantine",
        commits.iter().map(|c| c.quarantine.clone()).collect(),
    );
    let audit = crate::lake::audit::read(&ctx.dir)?;
    let audit: Vec<_> = audit
        .into_iter()
        .filter(|a| {
            !ctx.explicit || {
                let t = chrono::DateTime::parse_from_rfc3339(&a.at)
                    .map(|d| d.timestamp_micros())
                    .unwrap_or(0);
                t >= ctx.from && t < ctx.to
            }
        })
        .collect();
    let audit_table = Table::new(
        "audit",
        "Audit log: retention, deletions and acknowledgements",
    )
    .text("at", audit.iter().map(|a| a.at.as_str()))
    .text("actor", audit.iter().map(|a| a.actor.as_str()))
    .text("action", audit.iter().map(|a| a.action.as_str()))
    .text("target", audit.iter().map(|a| a.target.as_str()))
    .int("rows", audit.iter().map(|a| a.rows as i64))
    .opt_num(
        "commit",
        0,
        audit.iter().map(|a| a.commit.map(|c| c as f64)).collect(),
    )
    .text("detail", audit.iter().map(|a| a.detail.as_str()));
    let mut reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &commits {
        if let Some(q) = &c.quarantine {
            let path = ctx.dir.join(q);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let field = v.get("field").and_then(|x| x.as_str()).unwrap_or("record");
                let reason = v
                    .get("reason")
                    .and_then(|x| x.as_str())
                    .unwrap_or("unreadable");
                // Reasons quote values ("-1 is negative"): keep their shape, not the value.
                let shape: String = reason
                    .split_whitespace()
                    .filter(|w| {
                        !w.chars().any(|c| c.is_ascii_digit())
                            && !w.starts_with('"')
                            && !w.starts_with('`')
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                *reasons.entry((field.to_string(), shape)).or_default() += 1;
            }
        }
    }
    let rrows: Vec<_> = reasons.into_iter().collect();
    let rejects = Table::new("rejections", "Rejected records by field and reason")
        .text("field", rrows.iter().map(|r| r.0.0.as_str()))
        .text("reason", rrows.iter().map(|r| r.0.1.as_str()))
        .int("records", rrows.iter().map(|r| r.1 as i64));
    let mut sum = crate::lake::Counts::default();
    for c in &commits {
        sum.add(&c.counts);
    }
    let deleted: u64 = audit
        .iter()
        .filter(|a| a.action != "acknowledge")
        .map(|a| a.rows)
        .sum();
    let figures = vec![
        figure("Commits", commits.len().to_string(), None),
        figure(
            "Records read",
            grouped(sum.read as f64, 0),
            Some(format!(
                "{} accepted + {} rejected + {} duplicates{}",
                grouped(sum.accepted as f64, 0),
                grouped(sum.rejected as f64, 0),
                grouped(sum.duplicates as f64, 0),
                if sum.read == sum.accepted + sum.rejected + sum.duplicates {
                    " (balanced)"
                } else {
                    " (NOT balanced)"
                }
            )),
        ),
        figure("Audit entries", audit.len().to_string(), None),
        figure(
            "Rows removed by retention and deletion",
            grouped(deleted as f64, 0),
            None,
        ),
    ];
    Ok(Report {
        kind: Kind::Compliance,
        title: "Compliance: ingestion, rejects, retention and deletion".into(),
        scope: String::new(),
        figures,
        insights: Vec::new(),
        charts: Vec::new(),
        tables: vec![ingests, rejects, audit_table],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_combine_by_aggregation() {
        let v = [3.0, 7.0, 5.0];
        assert_eq!(combine(Aggregation::Count, &v), 15.0);
        assert_eq!(combine(Aggregation::Sum, &v), 15.0);
        assert_eq!(combine(Aggregation::Latest, &v), 5.0);
        assert_eq!(combine(Aggregation::Max, &v), 7.0);
        assert_eq!(combine(Aggregation::Min, &v), 3.0);
        assert_eq!(combine(Aggregation::UniqueCount, &v), 7.0);
        assert_eq!(combine(Aggregation::Avg, &v), 5.0);
        assert_eq!(combine(Aggregation::Sum, &[]), 0.0);
    }

    #[test]
    fn figures_group_thousands() {
        assert_eq!(grouped(1234567.891, 2), "1,234,567.89");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(-1000.0, 0), "-1,000");
        assert_eq!(grouped(-0.001, 2), "0.00");
    }
}
