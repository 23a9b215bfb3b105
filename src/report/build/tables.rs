//! Tables and charts more than one report kind shows: usage totals per tenant × meter, the
//! quota table (also written by `run` as `LAKE/quotas/quotas.parquet`) and quota bars.

use rust_decimal::Decimal;

use super::super::insights::Total;
use super::super::{Bar, BarChart, Chart, Table};
use super::context::Ctx;
use super::figures::quantity;
use crate::billing::quota::{Projection, QuotaRow};

/// Totals of the period and the one before, per tenant × meter, with the rule that
/// combines a period's days.
pub(super) fn totals_table(ctx: &Ctx, totals: &[Total]) -> Table {
    Table::new("usage", "Usage per tenant and meter")
        .text("tenant_id", totals.iter().map(|t| t.tenant_id.as_str()))
        .text("meter", totals.iter().map(|t| t.meter.as_str()))
        .text("unit", totals.iter().map(|t| t.unit.as_str()))
        .text(
            "rule",
            totals
                .iter()
                .map(|t| ctx.aggregation(&t.meter).combine_rule()),
        )
        .opt_num("total", 2, totals.iter().map(|t| t.current).collect())
        .opt_num("previous", 2, totals.iter().map(|t| t.previous).collect())
        .opt_num(
            "change_pct",
            1,
            totals.iter().map(Total::change_pct).collect(),
        )
        .num("events", 0, totals.iter().map(|t| t.events))
        .in_unit(&["total", "previous"])
}

/// Quotas in their current period; `projected` adds the projection of the period's end.
/// Quantities and percentages are real columns, costs exact decimal ones.
pub(crate) fn quota_table(rows: &[QuotaRow], projected: bool) -> Table {
    let mut t = Table::new("quotas", "Quotas in the current period")
        .text("tenant_id", rows.iter().map(|q| q.tenant_id.as_str()))
        .text("plan", rows.iter().map(|q| q.plan.as_str()))
        .text("meter", rows.iter().map(|q| q.meter.as_str()))
        .text("unit", rows.iter().map(|q| q.unit.as_str()))
        .num("used", 3, rows.iter().map(|q| quantity(q.used)))
        .opt_num(
            "included",
            3,
            rows.iter().map(|q| q.included.map(quantity)).collect(),
        )
        .opt_num(
            "percent",
            2,
            rows.iter().map(|q| q.percent.map(quantity)).collect(),
        )
        .text("status", rows.iter().map(|q| q.status.name()))
        .num(
            "overage_units",
            3,
            rows.iter().map(|q| quantity(q.overage_units)),
        )
        .dec("overage_cost", 2, rows.iter().map(|q| q.overage_cost));
    if projected {
        t = projection_columns(t, rows);
    }
    t.text("period_start", rows.iter().map(|q| q.period_start.as_str()))
        .text("period_end", rows.iter().map(|q| q.period_end.as_str()))
}

/// The projection's columns of [`quota_table`].
fn projection_columns(t: Table, rows: &[QuotaRow]) -> Table {
    let of = |g: fn(&Projection) -> Decimal| -> Vec<Option<Decimal>> {
        rows.iter().map(|q| q.projected.as_ref().map(g)).collect()
    };
    let qty = |g: fn(&Projection) -> Decimal| -> Vec<Option<f64>> {
        of(g).into_iter().map(|x| x.map(quantity)).collect()
    };
    t.opt_num("projected_usage", 2, qty(|x| x.usage))
        .opt_num("projected_lower", 2, qty(|x| x.usage_lower))
        .opt_num("projected_upper", 2, qty(|x| x.usage_upper))
        .opt_num(
            "projected_percent",
            1,
            rows.iter()
                .map(|q| {
                    let (p, inc) = (q.projected.as_ref()?, q.included?);
                    (inc > Decimal::ZERO).then(|| quantity(p.usage) / quantity(inc) * 100.0)
                })
                .collect(),
        )
        .opt_text(
            "limit_reached_on",
            rows.iter()
                .map(|q| q.projected.as_ref().and_then(|p| p.limit_at.clone()))
                .collect(),
        )
        .opt_dec("projected_cost", 2, of(|x| x.cost))
        .opt_dec("projected_cost_lower", 2, of(|x| x.cost_lower))
        .opt_dec("projected_cost_upper", 2, of(|x| x.cost_upper))
        .opt_text(
            "model",
            rows.iter()
                .map(|q| q.projected.as_ref().map(|p| p.model.clone()))
                .collect(),
        )
}

/// Quota used per tenant × meter with an allowance, highest first (at least 25 bars).
pub(super) fn quota_bars(ctx: &Ctx, rows: &[QuotaRow]) -> Option<Chart> {
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
                value: q.percent.map(quantity).unwrap_or(0.0),
                status: q.status.name().into(),
            })
            .collect(),
        reference: Some(100.0),
    }))
}

/// Sessions per tenant: how often users come back and how long they stay.
pub(super) fn sessions_table(rows: &[crate::usage::sessions::TenantSessions]) -> Table {
    Table::new(
        "sessions",
        "Sessions (explicit start/end events, else 30 minutes of inactivity end one)",
    )
    .text("tenant", rows.iter().map(|r| r.tenant_id.as_str()))
    .int("sessions", rows.iter().map(|r| r.sessions as i64))
    .num("per_day", 1, rows.iter().map(|r| r.sessions_per_day))
    .int("active_users", rows.iter().map(|r| r.active_users as i64))
    .num(
        "per_active_user",
        1,
        rows.iter().map(|r| r.sessions_per_active_user),
    )
    .num(
        "median_duration_s",
        0,
        rows.iter().map(|r| r.median_duration_s),
    )
    .num("p95_duration_s", 0, rows.iter().map(|r| r.p95_duration_s))
}
