//! The anomaly report: what looked wrong, how bad it is, and who may be abusing the
//! platform. For operations and trust & safety: every incident overlapping the period
//! with its severity, risk, detectors, observed against expected, and status (open,
//! alerted, acknowledged); tenants with abuse patterns (fraud suspects); hourly charts
//! around the top incidents.
//!
//! Reads the anomaly stage's incidents, the alert store (for status) and the hour rollups
//! as they stand (this kind does not bring them up to date).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::*;

use super::super::insights::{self, Facts, IncidentFact};
use super::super::{Chart, Figure, Line, Report, ReportKind, Table, TimeChart};
use super::context::{Ctx, Incident, f64_col, fact, ts_col, users};
use super::figures::figure;
use crate::error::Result;
use crate::rollup::{Granularity, RollupSpec};
use crate::time::MICROS_PER_DAY;
use crate::time::rfc3339;

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

pub(super) fn anomaly(ctx: &Ctx) -> Result<Report> {
    let incidents = ctx.incidents()?;
    let facts: Vec<IncidentFact> = incidents.iter().map(fact).collect();
    let insights = insights::compute(&Facts {
        incidents: &facts,
        ..Facts::default()
    });
    let status = statuses(ctx, &incidents)?;
    let table = incident_table(&incidents, &status);
    let suspects = suspects(&incidents);
    let fraud = fraud_table(&suspects);
    let charts = charts(ctx, &incidents)?;
    Ok(Report {
        kind: ReportKind::Anomaly,
        title: "Anomalies and abuse".into(),
        scope: String::new(),
        figures: figures(&incidents, suspects.len(), &status),
        insights,
        charts,
        tables: vec![table, fraud],
    })
}

/// Each incident's status from the alert store: an anomaly alert is raised per incident
/// start (`alerted`, or `acknowledged`); `open` otherwise.
pub(super) fn statuses(ctx: &Ctx, incidents: &[Incident]) -> Result<Vec<&'static str>> {
    let alerts = crate::stage::tables::alerts::read_lake(&ctx.dir)?;
    let status: HashMap<(&str, &str, String), &'static str> = alerts
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
    Ok(incidents
        .iter()
        .map(|i| {
            status
                .get(&(
                    i.tenant_id.as_str(),
                    i.meter.as_str(),
                    rfc3339(i.window_start),
                ))
                .copied()
                .unwrap_or("open")
        })
        .collect())
}

fn incident_table(incidents: &[Incident], status: &[&str]) -> Table {
    Table::new("incidents", "Incidents, most severe first")
        .text("tenant_id", incidents.iter().map(|i| i.tenant_id.as_str()))
        .text("meter", incidents.iter().map(|i| i.meter.as_str()))
        .text("start", incidents.iter().map(|i| rfc3339(i.window_start)))
        .text("end", incidents.iter().map(|i| rfc3339(i.window_end)))
        .text("severity", incidents.iter().map(|i| i.severity.as_str()))
        .num("risk", 1, incidents.iter().map(|i| i.risk))
        .num("score", 2, incidents.iter().map(|i| i.score))
        .text("detector", incidents.iter().map(|i| i.detector.as_str()))
        .text("detectors", incidents.iter().map(|i| i.detectors.as_str()))
        .num("observed", 2, incidents.iter().map(|i| i.observed))
        .num("expected", 2, incidents.iter().map(|i| i.expected))
        .bool("fraud_suspect", incidents.iter().map(|i| i.fraud_suspect))
        .text("users", incidents.iter().map(users))
        .text("status", status.iter().copied())
}

/// Tenants with fraud-suspect incidents, highest risk first.
fn suspects(incidents: &[Incident]) -> Vec<(&str, Suspect<'_>)> {
    let mut suspects: BTreeMap<&str, Suspect> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.fraud_suspect) {
        let e = suspects.entry(&i.tenant_id).or_insert(Suspect {
            first: i64::MAX,
            last: i64::MIN,
            ..Suspect::default()
        });
        e.incidents += 1;
        e.risk = e.risk.max(i.risk);
        e.users
            .extend(users(i).split(',').filter(|u| !u.is_empty()));
        e.patterns.extend(i.detectors.split('+'));
        e.first = e.first.min(i.window_start);
        e.last = e.last.max(i.window_end);
    }
    let mut srows: Vec<(&str, Suspect)> = suspects.into_iter().collect();
    srows.sort_by(|a, b| b.1.risk.total_cmp(&a.1.risk).then(a.0.cmp(b.0)));
    srows
}

fn fraud_table(srows: &[(&str, Suspect)]) -> Table {
    let join = |s: &BTreeSet<&str>, sep: &str| s.iter().copied().collect::<Vec<_>>().join(sep);
    Table::new("fraud_suspects", "Fraud suspects (abuse patterns)")
        .text("tenant_id", srows.iter().map(|r| r.0))
        .int("incidents", srows.iter().map(|r| r.1.incidents as i64))
        .num("max_risk", 1, srows.iter().map(|r| r.1.risk))
        .text("users", srows.iter().map(|r| join(&r.1.users, ",")))
        .text("patterns", srows.iter().map(|r| join(&r.1.patterns, "+")))
        .text("first", srows.iter().map(|r| rfc3339(r.1.first)))
        .text("last", srows.iter().map(|r| rfc3339(r.1.last)))
}

/// Charts of the top incidents' hourly series, ±3 days around them (one per tenant ×
/// meter, at most 4).
fn charts(ctx: &Ctx, incidents: &[Incident]) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for inc in incidents
        .iter()
        .filter(|i| matches!(i.severity.as_str(), "high" | "critical"))
    {
        if charts.len() >= ctx.top.min(4) || seen.contains(&(&inc.tenant_id, &inc.meter)) {
            continue;
        }
        seen.push((&inc.tenant_id, &inc.meter));
        let (a, b) = (
            inc.window_start - 3 * MICROS_PER_DAY,
            inc.window_end + 3 * MICROS_PER_DAY,
        );
        let points = hourly(ctx, inc, a, b)?;
        if points.is_empty() {
            continue;
        }
        let markers = incidents
            .iter()
            .filter(|x| {
                x.tenant_id == inc.tenant_id
                    && x.meter == inc.meter
                    && x.window_start >= a
                    && x.window_start < b
            })
            .filter_map(|x| {
                points
                    .iter()
                    .find(|p| p.0 >= x.window_start)
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
    Ok(charts)
}

/// The incident's tenant × meter hour rollup from `a` to `b` (UTC µs).
fn hourly(ctx: &Ctx, inc: &Incident, a: i64, b: i64) -> Result<Vec<(i64, f64)>> {
    let hour = RollupSpec::new(Granularity::Hour);
    let df = crate::rollup::with_rollup_scan(&ctx.lake, &hour, |lf| {
        Ok(lf
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
            .collect()?)
    })?;
    let (ts, vs) = (ts_col(&df, "ts")?, f64_col(&df, "value")?);
    Ok(ts
        .iter()
        .zip(&vs)
        .filter_map(|(t, v)| Some((*t, (*v)?)))
        .collect())
}

fn figures(incidents: &[Incident], suspects: usize, status: &[&str]) -> Vec<Figure> {
    let mut by_sev: BTreeMap<&str, usize> = BTreeMap::new();
    for i in incidents {
        *by_sev.entry(i.severity.as_str()).or_default() += 1;
    }
    let tenants: BTreeSet<&str> = incidents.iter().map(|i| i.tenant_id.as_str()).collect();
    vec![
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
            suspects.to_string(),
            Some("tenants with abuse patterns".into()),
        ),
        figure(
            "Open",
            status.iter().filter(|s| **s == "open").count().to_string(),
            Some("no alert raised yet".into()),
        ),
    ]
}
