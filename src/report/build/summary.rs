//! The summary report: where each tenant stands this period. For account managers and
//! finance: per tenant its events, meters used, highest quota percent and worst status,
//! overage cost so far and active alerts; then usage per tenant × meter, the quotas, the
//! active alerts, and every insight.
//!
//! Reads day rollups (brought up to date), quotas with projections, engagement, the alert
//! store, and what the insights need (rhythms, incidents, seat use).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::super::insights::Total;
use super::super::{Figure, Report, ReportKind, Table};
use super::context::Ctx;
use super::figures::{figure, grouped, growth, money, pct_str, quantity};
use super::tables::{quota_bars, quota_table, totals_table};
use crate::billing::quota::QuotaRow;
use crate::error::Result;
use crate::stage::alerts::Alert;

/// One tenant's line of the summary.
#[derive(Default)]
struct TenantLine {
    events: f64,
    meters: usize,
    max_pct: Option<f64>,
    status: &'static str,
    overage: Decimal,
    alerts: usize,
    plan: String,
}

pub(super) fn summary(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let (quotas, eng) = ctx.quotas_and_engagement()?;
    let alerts = ctx.active_alerts()?;
    let insights = ctx.all_insights(&totals, &quotas, &eng)?;
    let tenants = tenant_lines(&totals, &quotas, &alerts);
    let figures = figures(ctx, &totals, &quotas, &tenants, &alerts);
    let mut tables = vec![tenant_table(&tenants), totals_table(ctx, &totals)];
    if ctx.billing.is_some() {
        tables.push(quota_table(&quotas, false));
    }
    tables.push(alert_table(&alerts));
    Ok(Report {
        kind: ReportKind::Summary,
        title: "Usage summary".into(),
        scope: String::new(),
        figures,
        insights,
        charts: quota_bars(ctx, &quotas).into_iter().collect(),
        tables,
    })
}

/// Per tenant: usage from the totals, the worst quota and its overage, the alerts.
fn tenant_lines<'a>(
    totals: &'a [Total],
    quotas: &'a [QuotaRow],
    alerts: &'a [Alert],
) -> BTreeMap<&'a str, TenantLine> {
    let mut tenants: BTreeMap<&str, TenantLine> = BTreeMap::new();
    for t in totals {
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
    for q in quotas {
        let e = tenants.entry(&q.tenant_id).or_default();
        if let Some(p) = q.percent {
            e.max_pct = Some(e.max_pct.unwrap_or(0.0).max(quantity(p)));
        }
        if rank(q.status.name()) >= rank(e.status) {
            e.status = q.status.name();
        }
        e.overage += q.overage_cost;
        e.plan = q.plan.clone();
    }
    for a in alerts {
        tenants.entry(&a.tenant_id).or_default().alerts += 1;
    }
    tenants
}

fn tenant_table(tenants: &BTreeMap<&str, TenantLine>) -> Table {
    let rows: Vec<_> = tenants.iter().collect();
    Table::new("tenants", "Tenants")
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
        .dec("overage_cost", 2, rows.iter().map(|r| r.1.overage))
        .int("active_alerts", rows.iter().map(|r| r.1.alerts as i64))
}

fn figures(
    ctx: &Ctx,
    totals: &[Total],
    quotas: &[QuotaRow],
    tenants: &BTreeMap<&str, TenantLine>,
    alerts: &[Alert],
) -> Vec<Figure> {
    let events: f64 = totals.iter().map(|t| t.events).sum();
    let prev_events: f64 = totals.iter().map(|t| t.previous_events).sum();
    let overage = crate::billing::saturating_sum(quotas.iter().map(|q| q.overage_cost));
    let at_limit = tenants
        .values()
        .filter(|v| matches!(v.status, "exceeded" | "blocked"))
        .count();
    vec![
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
                pct_str(growth(events, prev_events))
            )),
        ),
        figure(
            "Overage so far",
            money(overage, ctx.currency()),
            Some("current billing periods".into()),
        ),
        figure("Tenants over an allowance", at_limit.to_string(), None),
        figure(
            "Active alerts",
            alerts.len().to_string(),
            Some("not acknowledged".into()),
        ),
    ]
}

fn alert_table(alerts: &[Alert]) -> Table {
    Table::new("alerts", "Active alerts")
        .text("id", alerts.iter().map(|a| a.id.as_str()))
        .text("kind", alerts.iter().map(|a| a.kind.as_str()))
        .text("tenant_id", alerts.iter().map(|a| a.tenant_id.as_str()))
        .text("meter", alerts.iter().map(|a| a.meter.as_str()))
        .text("severity", alerts.iter().map(|a| a.severity.as_str()))
        .text("message", alerts.iter().map(|a| a.message.as_str()))
        .text("raised_at", alerts.iter().map(|a| a.raised_at.as_str()))
}
