//! What a report reads, gathered in one place: [`Ctx`] holds the lake, the billing
//! catalog, the meters and the period (with the one before it), and reads everything a
//! builder needs from them: day series (rollups brought up to date), totals per tenant ×
//! meter, quotas (with projections), anomaly incidents, alerts, daily rhythms, engagement,
//! seat use and the forecast stage's tables.
//!
//! Builders read nothing themselves except what only one kind needs: the executive
//! report's features, the anomaly report's hourly series and alert statuses, the
//! compliance report's commit log, quarantine files and audit log.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::super::insights::{self, Facts, IncidentFact, Rhythm, Total};
use super::super::{Insight, ReportKind};
use super::figures::day_str;
use super::{QuotaSnapshot, ReportOptions};
use crate::billing::quota::QuotaRow;
use crate::billing::{Billing, parse_at};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::rollup::{
    Aggregation, Granularity, Meters, RollupSeries, RollupSpec, Zone, current_series,
};
use crate::stage::tables::forecasts::Forecasts;
use crate::stage::tables::{self, incidents::IncidentRecord};
use crate::time::rfc3339;
use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};
use crate::usage::{Engagement, EngagementOptions, engagement};

/// Everything a report reads, and its period.
pub(super) struct Ctx<'a> {
    pub lake: Lake,
    pub dir: PathBuf,
    pub billing: Option<&'a Billing>,
    pub meters: Meters,
    pub tenant: Option<String>,
    pub from: i64,
    pub to: i64,
    pub prev_from: i64,
    /// Quotas and engagement are evaluated here: the period's end, or just after the last
    /// event if that is earlier.
    pub at: i64,
    pub top: usize,
    /// Whether the period was given (compliance lists everything otherwise).
    pub explicit: bool,
    /// Quotas the caller evaluated already (used when evaluated at [`Ctx::at`]).
    evaluated: Option<&'a QuotaSnapshot>,
    /// Quotas evaluated here, once.
    quotas: OnceCell<Vec<QuotaRow>>,
    /// What several report kinds read, read once (one context may build several kinds).
    day_series: OnceCell<Vec<RollupSeries>>,
    engagement: OnceCell<Vec<Engagement>>,
    sessions: OnceCell<Vec<crate::usage::sessions::TenantSessions>>,
    rhythms: OnceCell<Vec<Rhythm>>,
}

/// The value in `cell`, computed by `f` the first time (an error is not kept).
fn cached<T: Clone>(cell: &OnceCell<T>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let v = f()?;
    Ok(cell.get_or_init(|| v).clone())
}

impl<'a> Ctx<'a> {
    /// Opens the lake and settles the period: `to` defaults to the midnight after the last
    /// event, `from` to 30 days before it. A named tenant must have events or a plan.
    pub fn open(
        lake_dir: &Path,
        billing: Option<&'a Billing>,
        opts: &ReportOptions,
        evaluated: Option<&'a QuotaSnapshot>,
    ) -> Result<Ctx<'a>> {
        let meters = Meters::load_or_default(opts.meters.as_deref())?;
        Ctx::open_with(lake_dir, billing, opts, evaluated, meters)
    }

    /// [`Ctx::open`] with these meter definitions (a server has them loaded already).
    pub fn open_with(
        lake_dir: &Path,
        billing: Option<&'a Billing>,
        opts: &ReportOptions,
        evaluated: Option<&'a QuotaSnapshot>,
        meters: Meters,
    ) -> Result<Ctx<'a>> {
        let lake = Lake::open(lake_dir)?;
        if let Some(t) = &opts.tenant {
            let planned = billing.is_some_and(|b| b.tenants.iter().any(|x| &x.id == t));
            if !planned && !crate::lake::tenant_has_events(&lake, t)? {
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
            crate::time::now()
        } else {
            parse_at(&lake, "latest")?
        };
        let to = opts.to.unwrap_or_else(|| {
            (latest - 1).div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY + MICROS_PER_DAY
        });
        let from = opts.from.unwrap_or(to - 30 * MICROS_PER_DAY);
        // Reports add up UTC day rollups: a bound inside a day would count that day wholly
        // in one period or the other (it showed a day's usage as the previous period's).
        for (name, v) in [("--from", opts.from), ("--to", opts.to)] {
            if let Some(v) = v.filter(|v| v.rem_euclid(MICROS_PER_DAY) != 0) {
                return Err(Error::InvalidParameter {
                    name,
                    reason: format!(
                        "{} is not a UTC midnight: reports cover whole UTC days, give a date (YYYY-MM-DD)",
                        rfc3339(v)
                    ),
                });
            }
        }
        if from >= to {
            return Err(Error::InvalidParameter {
                name: "--from",
                reason: format!("{} is not before --to {}", rfc3339(from), rfc3339(to)),
            });
        }
        Ok(Ctx {
            lake,
            dir: lake_dir.to_path_buf(),
            billing,
            meters,
            tenant: opts.tenant.clone(),
            from,
            to,
            prev_from: from - (to - from),
            at: opts.at.map_or(latest.min(to), |a| a.min(to - 1)),
            top: opts.top.max(1),
            explicit: opts.from.is_some() || opts.to.is_some(),
            evaluated,
            quotas: OnceCell::new(),
            day_series: OnceCell::new(),
            engagement: OnceCell::new(),
            sessions: OnceCell::new(),
            rhythms: OnceCell::new(),
        })
    }
}

/// Whether the lake holds any event of `tenant`.
impl Ctx<'_> {
    /// Who and when the report covers, in words.
    pub fn scope(&self, kind: ReportKind) -> String {
        let who = self
            .tenant
            .as_deref()
            .map_or("All tenants".to_string(), |t| format!("Tenant {t}"));
        if kind == ReportKind::Compliance && !self.explicit {
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

    /// Whether `tenant` is in scope.
    pub fn wants(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// The currency money is shown in (none without a catalog).
    pub fn currency(&self) -> &str {
        self.billing.map_or("", |b| b.catalog.currency.as_str())
    }

    /// Day series of every tenant × meter (this tenant's) as the lake is now: the stored
    /// day rollup when it is current, else computed in memory. A report never writes.
    pub fn day_series(&self) -> Result<Vec<RollupSeries>> {
        cached(&self.day_series, || {
            let spec = RollupSpec::new(Granularity::Day);
            Ok(current_series(&self.lake, &self.meters, &spec)?
                .into_iter()
                .filter(|s| self.wants(&s.tenant_id))
                .collect())
        })
    }

    /// A meter's aggregation (`sum` when it is not configured).
    pub fn aggregation(&self, meter: &str) -> Aggregation {
        self.meters
            .get(meter)
            .map_or(Aggregation::Sum, |m| m.aggregation)
    }

    /// A meter's unit (empty when it has none).
    pub fn unit(&self, meter: &str) -> String {
        self.meters
            .get(meter)
            .and_then(|m| m.unit.clone())
            .unwrap_or_default()
    }

    /// Totals of the period and the one before.
    pub fn totals(&self, series: &[RollupSeries]) -> Vec<Total> {
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
                    current: agg.combine_days(&cur),
                    previous: agg.combine_days(&prev),
                    events: ne,
                    previous_events: np,
                }
            })
            .filter(|t| t.events > 0.0 || t.previous_events > 0.0)
            .collect()
    }

    /// Quotas at [`Ctx::at`] with their projections; none without a catalog or for a
    /// tenant without a plan. The quota stage's rows when it evaluated this same instant
    /// (the batch job hands them over), else evaluated here by the same stage function,
    /// once per report.
    pub fn quotas(&self) -> Result<Vec<QuotaRow>> {
        let Some(b) = self.billing else {
            return Ok(Vec::new());
        };
        if let Some(q) = self.evaluated.filter(|q| q.at == self.at) {
            return Ok(q
                .rows
                .iter()
                .filter(|r| self.wants(&r.tenant_id))
                .cloned()
                .collect());
        }
        cached(&self.quotas, || {
            crate::stage::quotas::evaluate(&self.lake, b, self.at, self.tenant.as_deref())
        })
    }

    /// Anomaly incidents overlapping the period (hourly detection, else daily), as the
    /// anomaly stage stored them.
    pub fn incidents(&self) -> Result<Vec<Incident>> {
        let Some(path) = tables::incidents::latest_file(&self.dir) else {
            return Ok(Vec::new());
        };
        Ok(tables::incidents::read(&path)?
            .into_iter()
            .filter(|r| {
                self.wants(&r.tenant_id) && r.window_start < self.to && r.window_end > self.from
            })
            .collect())
    }

    /// Events per tenant by local hour and weekday over the period (tenant time zones from
    /// the tenants file, UTC otherwise).
    pub fn rhythms(&self) -> Result<Vec<Rhythm>> {
        cached(&self.rhythms, || self.read_rhythms())
    }

    fn read_rhythms(&self) -> Result<Vec<Rhythm>> {
        let Some(lf) =
            crate::lake::events_between(&self.lake, self.tenant.as_deref(), self.from, self.to)?
        else {
            return Ok(Vec::new());
        };
        // Quarter hours: every time zone's offset is a whole number of them (Kolkata +5:30,
        // Kathmandu +5:45), so each falls in one local hour.
        let quarter = MICROS_PER_HOUR / 4;
        let df = lf
            .group_by([
                col("tenant_id"),
                (col("ts").cast(DataType::Int64) / lit(quarter) * lit(quarter)).alias("hour"),
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
        let mut exposures: HashMap<&str, [f64; 7]> = HashMap::new();
        for i in 0..df.height() {
            let tenant = t.get(i).unwrap_or_default();
            if out.last().is_none_or(|r| r.tenant_id != tenant) {
                let zone = zones.get(tenant).copied().unwrap_or(Zone::UTC);
                let exposure = *exposures
                    .entry(zone.name())
                    .or_insert_with(|| weekday_exposure(zone, self.from, self.to));
                out.push(Rhythm {
                    tenant_id: tenant.to_string(),
                    zone: zone.name().to_string(),
                    hours: [0.0; 24],
                    days: [0.0; 7],
                    exposure,
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

    /// Seat use of every tenant paying seat overage in its current period (billing's
    /// [`crate::billing::seats::seat_use`] over these quotas, at [`Ctx::at`]).
    pub fn seat_use(&self, quotas: &[QuotaRow]) -> Result<Vec<insights::SeatUse>> {
        let Some(b) = self.billing else {
            return Ok(Vec::new());
        };
        crate::billing::seats::seat_use(&self.lake, b, quotas, self.tenant.as_deref(), self.at)
    }

    /// Engagement per tenant at [`Ctx::at`].
    pub fn engagement(&self) -> Result<Vec<Engagement>> {
        cached(&self.engagement, || {
            engagement(
                &self.lake,
                &EngagementOptions {
                    tenant: self.tenant.clone(),
                    at: Some(self.at),
                    ..EngagementOptions::default()
                },
            )
        })
    }

    /// Sessions per tenant over the period (each tenant's local days; see
    /// [`crate::usage::sessions`]).
    pub fn sessions(&self) -> Result<Vec<crate::usage::sessions::TenantSessions>> {
        cached(&self.sessions, || self.read_sessions())
    }

    fn read_sessions(&self) -> Result<Vec<crate::usage::sessions::TenantSessions>> {
        let zones = self
            .billing
            .map(|b| b.tenants.iter().map(|t| (t.id.clone(), t.zone)).collect())
            .unwrap_or_default();
        crate::usage::sessions::sessions(
            &self.lake,
            &crate::usage::sessions::SessionOptions {
                tenant: self.tenant.clone(),
                from: Some(self.from),
                to: Some(self.to),
                zones,
                ..Default::default()
            },
        )
    }

    /// Quotas (projected) and engagement: the two slow reads (running them side by side
    /// gained nothing on 2 cores: both keep polars busy).
    pub fn quotas_and_engagement(&self) -> Result<(Vec<QuotaRow>, Vec<Engagement>)> {
        Ok((self.quotas()?, self.engagement()?))
    }

    /// Alerts not acknowledged yet.
    pub fn active_alerts(&self) -> Result<Vec<crate::stage::alerts::Alert>> {
        Ok(crate::stage::tables::alerts::read_lake(&self.dir)?
            .into_iter()
            .filter(|a| a.acknowledged_at.is_none() && self.wants(&a.tenant_id))
            .collect())
    }

    /// Every insight kind, from these totals, quotas and engagement and the period's
    /// rhythms, incidents and seat use.
    pub fn all_insights(
        &self,
        totals: &[Total],
        quotas: &[QuotaRow],
        engagement: &[Engagement],
    ) -> Result<Vec<Insight>> {
        let rhythms = self.rhythms()?;
        let incidents: Vec<IncidentFact> = self.incidents()?.iter().map(fact).collect();
        let seats = self.seat_use(quotas)?;
        Ok(insights::compute(&Facts {
            totals,
            quotas,
            billing: self.billing,
            rhythms: &rhythms,
            incidents: &incidents,
            engagement,
            seats: &seats,
        }))
    }

    /// The forecast stage's tables (daily, else hourly), for this tenant if one is asked.
    pub fn forecasts(&self) -> Result<Forecasts> {
        tables::forecasts::read(&self.dir, self.tenant.as_deref())?.ok_or_else(|| {
            Error::InvalidParameter {
                name: "--kind forecast",
                reason: format!(
                    "{} has no forecasts yet: run `meterlake forecast --lake {} --horizon 14` (or `meterlake run`) first",
                    self.dir.display(),
                    self.dir.display()
                ),
            }
        })
    }
}

/// An anomaly incident, as the anomaly stage stored it.
pub(super) type Incident = IncidentRecord;

/// What the insights need of an incident.
pub(super) fn fact(i: &Incident) -> IncidentFact {
    IncidentFact {
        tenant_id: i.tenant_id.clone(),
        meter: i.meter.clone(),
        severity: i.severity.clone(),
        risk: i.risk,
        fraud_suspect: i.fraud_suspect,
    }
}

/// The users an incident names, comma-separated (empty when none).
pub(super) fn users(i: &Incident) -> &str {
    i.user_id.as_deref().unwrap_or("")
}

/// A text column, nulls as empty text.
pub(super) fn str_col(df: &DataFrame, n: &str) -> Result<Vec<String>> {
    Ok(df
        .column(n)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

/// A numeric column as f64, non-finite values as gaps.
pub(super) fn f64_col(df: &DataFrame, n: &str) -> Result<Vec<Option<f64>>> {
    Ok(df
        .column(n)?
        .cast(&DataType::Float64)?
        .f64()?
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect())
}

/// A timestamp column as UTC µs, nulls as 0.
pub(super) fn ts_col(df: &DataFrame, n: &str) -> Result<Vec<i64>> {
    Ok(df
        .column(n)?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .map(|v| v.unwrap_or_default())
        .collect())
}

/// How much of each local weekday (Monday first) `[from, to)` holds in `zone`, in quarter
/// hours (a period cut at UTC midnight holds part of a local day at each end).
fn weekday_exposure(zone: Zone, from: i64, to: i64) -> [f64; 7] {
    let quarter = MICROS_PER_HOUR / 4;
    let mut out = [0.0; 7];
    let mut t = from;
    while t < to {
        let (_, wd) = zone.local_hour_weekday(t);
        out[wd as usize] += 1.0;
        t += quarter;
    }
    out
}
