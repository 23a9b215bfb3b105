//! The dashboard's pages, built as [`Report`]s from the same context and sections as the
//! report kinds, so that a page and the report of the same scope and period say the same
//! thing. `meterlake serve` lays them out in the browser (`crate::serve::dashboard`); here
//! is only what they show:
//!
//! | page | figures | charts | tables |
//! |---|---|---|---|
//! | overview | events, active users, overage so far, projected revenue, open incidents | events per day against the previous period | usage per meter against the previous period; the tenants nearest their limits (all tenants) or the tenant's quotas |
//! | usage | events, meters used, busiest local hour and weekday | each meter by hour, day, week or month (this period and the previous one), in the tenant's zone; events by local hour of day and by weekday | period comparison per meter; breakdowns by user and by a property (a tenant), or top features (all tenants) |
//! | forecasts | the forecast report's | history, forecast and its band | quota outlook (period end against the allowance, the date it is reached), forecasts, model and backtest accuracy |
//! | anomalies | the anomaly report's | hourly usage with the incidents marked | incidents (severity, risk, detectors), fraud suspects |
//! | billing | invoice so far, projected invoice, overage so far | quota use | quotas with projections, the invoice lines (a tenant) or invoices (all), cheaper-plan findings |
//!
//! Active users are the distinct users with at least one event in the period (summed over
//! tenants): the same definition as `meterlake usage` for a `unique_count` meter of users.
//! Trends are the meter's own aggregation per window, computed from the period's events
//! with [`crate::rollup::aggregate`], as a rollup in that zone would be.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;
use rust_decimal::Decimal;

use super::super::insights::{self, Facts};
use super::super::{Bar, BarChart, Chart, Report, ReportKind, Table, TimeChart};
use super::context::Ctx;
use super::figures::{figure, grouped, growth, money, pct_str, quantity};
use super::tables::{quota_bars, quota_table, totals_table};
use super::{QuotaSnapshot, ReportOptions, anomaly, executive, forecast};
use crate::billing::Billing;
use crate::billing::quota::QuotaRow;
use crate::error::Result;
use crate::rollup::{Dim, Granularity, Meters, Zone, aggregate, window_start_expr};

/// A page of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// KPIs, usage against the previous period, the tenants nearest their limits.
    Overview,
    /// Trends, the seasonal profile, breakdowns, period comparison.
    Usage,
    /// History with forecasts and their bands, models and their accuracy.
    Forecasts,
    /// Incidents and alerts.
    Anomalies,
    /// Quotas and invoices.
    Billing,
}

impl Page {
    /// Whether the page reads quotas (then [`page`] can be handed them).
    pub fn reads_quotas(self) -> bool {
        matches!(self, Page::Overview | Page::Forecasts | Page::Billing)
    }

    /// Every page, in the navigation's order.
    pub const ALL: [Page; 5] = [
        Page::Overview,
        Page::Usage,
        Page::Forecasts,
        Page::Anomalies,
        Page::Billing,
    ];

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Page::Overview => "/",
            Page::Usage => "/usage",
            Page::Forecasts => "/forecasts",
            Page::Anomalies => "/anomalies",
            Page::Billing => "/billing",
        }
    }

    /// Its name in the navigation.
    pub fn title(self) -> &'static str {
        match self {
            Page::Overview => "Overview",
            Page::Usage => "Usage",
            Page::Forecasts => "Forecasts",
            Page::Anomalies => "Anomalies & alerts",
            Page::Billing => "Billing",
        }
    }
}

/// What a page shows.
#[derive(Debug, Clone)]
pub struct PageOptions {
    /// One tenant, or all.
    pub tenant: Option<String>,
    /// Period start (UTC µs).
    pub from: i64,
    /// Period end (exclusive).
    pub to: i64,
    /// Quotas, projections and invoices are evaluated at this instant, capped at the
    /// period's last instant ([`PageOptions::quota_instant`]): the wall clock, in `serve`.
    pub at: i64,
    /// Window of the usage trends.
    pub granularity: Granularity,
    /// The event property the usage page breaks a tenant's usage down by.
    pub property: String,
    /// Entries in top lists.
    pub top: usize,
}

impl PageOptions {
    /// The instant quotas are evaluated at: `at`, capped at the period's last instant.
    pub fn quota_instant(&self) -> i64 {
        self.at.min(self.to - 1)
    }
}

/// Builds `page` for `o`'s scope and period; `quotas`, when evaluated at the page's
/// instant, are used instead of evaluating them again (pages of one scope and instant share
/// one evaluation: with projections, it is the slowest read of a page).
pub fn page(
    lake_dir: &Path,
    billing: Option<&Billing>,
    meters: &Meters,
    page: Page,
    o: &PageOptions,
    quotas: Option<&QuotaSnapshot>,
) -> Result<Report> {
    let kind = match page {
        Page::Overview => ReportKind::Executive,
        Page::Usage => ReportKind::Detailed,
        Page::Forecasts => ReportKind::Forecast,
        Page::Anomalies => ReportKind::Anomaly,
        Page::Billing => ReportKind::Summary,
    };
    let opts = ReportOptions {
        kind,
        tenant: o.tenant.clone(),
        from: Some(o.from),
        to: Some(o.to),
        meters: None,
        top: o.top,
        at: Some(o.at),
    };
    let ctx = Ctx::open_with(lake_dir, billing, &opts, quotas, meters.clone())?;
    let mut r = match page {
        Page::Overview => overview(&ctx)?,
        Page::Usage => usage(&ctx, o)?,
        Page::Forecasts => forecast::forecast(&ctx)?,
        Page::Anomalies => anomaly::anomaly(&ctx)?,
        Page::Billing => billing_page(&ctx)?,
    };
    r.title = page.title().into();
    r.scope = ctx.scope(kind);
    r.set_currency(ctx.currency());
    Ok(r)
}

/// KPIs, events against the previous period, usage per meter, the tenants nearest their
/// limits.
fn overview(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let quotas = ctx.quotas()?;
    let incidents = ctx.incidents()?;
    let status = anomaly::statuses(ctx, &incidents)?;
    let open = status.iter().filter(|s| **s != "acknowledged").count();
    let (users, users_before) = active_users(ctx)?;
    let rev = executive::revenue(ctx, &quotas);
    let events: f64 = totals.iter().map(|t| t.events).sum();
    let events_before: f64 = totals.iter().map(|t| t.previous_events).sum();
    let cur = ctx.currency();
    let overage = crate::billing::saturating_sum(rev.values().map(|r| r.overage));
    let projected = crate::billing::saturating_sum(rev.values().map(|r| r.total()));
    let mut figures = vec![
        figure(
            "Events",
            grouped(events, 0),
            Some(format!(
                "{} against the previous period",
                pct_str(growth(events, events_before))
            )),
        ),
        figure(
            "Active users",
            grouped(users as f64, 0),
            Some(format!(
                "with any event; {} in the previous period",
                grouped(users_before as f64, 0)
            )),
        ),
    ];
    if ctx.billing.is_some() {
        figures.push(figure("Overage so far", money(overage, cur), None));
        figures.push(figure(
            "Projected revenue",
            money(projected, cur),
            Some("base fees and overage projected to the periods' end".into()),
        ));
    }
    figures.push(figure(
        "Open incidents",
        grouped(open as f64, 0),
        Some(format!("of {} in the period", incidents.len())),
    ));
    let mut kpis = executive::kpi_table(ctx, &series, &totals);
    kpis.title = "Usage per meter against the previous period".into();
    let mut tables = vec![kpis];
    if ctx.billing.is_some() {
        tables.push(nearest_limits(ctx, &quotas));
    }
    let engagement = ctx.engagement()?;
    let insights = ctx.all_insights(&totals, &quotas, &engagement)?;
    Ok(Report {
        kind: ReportKind::Executive,
        title: String::new(),
        scope: String::new(),
        figures,
        insights: insights.into_iter().take(ctx.top).collect(),
        charts: vec![executive::events_chart(ctx, &series)],
        tables,
    })
}

/// The quotas most used (by percent of their allowance), most first: every tenant's when
/// all are shown, the tenant's own otherwise.
fn nearest_limits(ctx: &Ctx, quotas: &[QuotaRow]) -> Table {
    let mut rows: Vec<QuotaRow> = quotas
        .iter()
        .filter(|q| q.percent.is_some())
        .cloned()
        .collect();
    rows.sort_by(|a, b| {
        b.percent
            .cmp(&a.percent)
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.meter.cmp(&b.meter))
    });
    if ctx.tenant.is_none() {
        rows.truncate(ctx.top);
    }
    let mut t = quota_table(&rows, true);
    t.name = "nearest_limits".into();
    t.title = if ctx.tenant.is_some() {
        "Quotas, most used first".into()
    } else {
        "Tenants nearest their limits".into()
    };
    t
}

/// Distinct users with events in the period and in the previous one, summed over tenants.
fn active_users(ctx: &Ctx) -> Result<(u64, u64)> {
    let Some(lf) =
        crate::lake::events_between(&ctx.lake, ctx.tenant.as_deref(), ctx.prev_from, ctx.to)?
    else {
        return Ok((0, 0));
    };
    let df = lf
        .filter(col("user_id").is_not_null())
        .with_column(
            col("ts")
                .cast(DataType::Int64)
                .gt_eq(lit(ctx.from))
                .alias("current"),
        )
        .group_by([col("current"), col("tenant_id")])
        .agg([col("user_id").n_unique().alias("users")])
        .group_by([col("current")])
        .agg([col("users").cast(DataType::UInt64).sum()])
        .collect()?;
    let (mut cur, mut prev) = (0, 0);
    let flags = df.column("current")?.bool()?;
    let users = df.column("users")?.u64()?;
    for i in 0..df.height() {
        match flags.get(i) {
            Some(true) => cur = users.get(i).unwrap_or(0),
            _ => prev = users.get(i).unwrap_or(0),
        }
    }
    Ok((cur, prev))
}

/// Trends per meter, the seasonal profile, period comparison and breakdowns.
fn usage(ctx: &Ctx, o: &PageOptions) -> Result<Report> {
    let zone = ctx
        .tenant
        .as_deref()
        .and_then(|t| ctx.billing?.tenants.iter().find(|x| x.id == t))
        .map_or(Zone::UTC, |t| t.zone);
    let mut charts = trend_charts(ctx, o.granularity, zone)?;
    let rhythms = ctx.rhythms()?;
    let (mut hours, mut days) = ([0.0f64; 24], [0.0f64; 7]);
    for r in &rhythms {
        for (sum, x) in hours.iter_mut().zip(r.hours) {
            *sum += x;
        }
        for (sum, x) in days.iter_mut().zip(r.days) {
            *sum += x;
        }
    }
    let local = if ctx.tenant.is_some() {
        format!("local time, {}", zone.name())
    } else {
        "each tenant's local time".to_string()
    };
    charts.push(Chart::Bars(BarChart {
        title: format!("Events by hour of day ({local})"),
        unit: "events".into(),
        bars: (0..24)
            .map(|h| Bar {
                label: format!("{h:02}:00"),
                value: hours[h],
                status: "ok".into(),
            })
            .collect(),
        reference: None,
    }));
    const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    charts.push(Chart::Bars(BarChart {
        title: format!("Events by day of week ({local})"),
        unit: "events".into(),
        bars: (0..7)
            .map(|d| Bar {
                label: WEEKDAYS[d].into(),
                value: days[d],
                status: "ok".into(),
            })
            .collect(),
        reference: None,
    }));
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let events: f64 = totals.iter().map(|t| t.events).sum();
    let before: f64 = totals.iter().map(|t| t.previous_events).sum();
    let busiest = |v: &[f64]| {
        v.iter()
            .enumerate()
            .filter(|(_, x)| **x > 0.0)
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
    };
    let figures = vec![
        figure(
            "Events",
            grouped(events, 0),
            Some(format!(
                "{} against the previous period",
                pct_str(growth(events, before))
            )),
        ),
        figure(
            "Meters used",
            grouped(
                totals
                    .iter()
                    .filter(|t| t.events > 0.0)
                    .map(|t| &t.meter)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as f64,
                0,
            ),
            None,
        ),
        figure(
            "Busiest hour",
            busiest(&hours).map_or("none".into(), |h| format!("{h:02}:00")),
            Some(local.clone()),
        ),
        figure(
            "Busiest weekday",
            busiest(&days).map_or("none".into(), |d| WEEKDAYS[d].to_string()),
            Some(local),
        ),
    ];
    let mut comparison = totals_table(ctx, &totals);
    comparison.name = "comparison".into();
    comparison.title = "This period against the previous one".into();
    let mut tables = vec![comparison];
    match &ctx.tenant {
        Some(_) => {
            tables.push(breakdown(ctx, Dim::User, "by_user", "By user")?);
            let key = Dim::Property(o.property.clone());
            let title = format!("By {}", o.property);
            tables.push(breakdown(ctx, key, "by_property", &title)?);
        }
        None => tables.push(executive::feature_table(ctx)?),
    }
    Ok(Report {
        kind: ReportKind::Detailed,
        title: String::new(),
        scope: String::new(),
        figures,
        insights: Vec::new(),
        charts,
        tables,
    })
}

/// Each meter per window of `g` in `zone`, this period and the previous one (shifted onto
/// it), summed over the tenants in scope for the additive meters and aggregated together
/// for the others (a platform's distinct users, its largest reading).
fn trend_charts(ctx: &Ctx, g: Granularity, zone: Zone) -> Result<Vec<Chart>> {
    type Two = (BTreeMap<i64, f64>, BTreeMap<i64, f64>);
    let mut by_meter: BTreeMap<String, Two> = BTreeMap::new();
    let shift = ctx.to - ctx.from;
    // Each period on its own: a window that straddles the period's start (a week, a local
    // day) holds only that period's events, and is drawn at the period's start.
    for (current, from, to) in [(true, ctx.from, ctx.to), (false, ctx.prev_from, ctx.from)] {
        let Some(lf) = crate::lake::events_between(&ctx.lake, ctx.tenant.as_deref(), from, to)?
        else {
            continue;
        };
        let lf = lf.with_column(lit("").alias("tenant_id"));
        let (df, _) = aggregate(lf, &ctx.meters, window_start_expr(col("ts"), g, zone)?, &[])?;
        let (m, w, v) = (
            df.column("meter")?.str()?,
            df.column("window_start")?.cast(&DataType::Int64)?,
            df.column("value")?.cast(&DataType::Float64)?,
        );
        let (w, v) = (w.i64()?, v.f64()?);
        for i in 0..df.height() {
            let (Some(meter), Some(start), Some(value)) = (m.get(i), w.get(i), v.get(i)) else {
                continue;
            };
            let e = by_meter.entry(meter.to_string()).or_default();
            let at = start.max(from);
            if current {
                e.0.insert(at, value);
            } else {
                e.1.insert(at + shift, value);
            }
        }
    }
    let scope = if ctx.tenant.is_some() {
        String::new()
    } else {
        ", all tenants".into()
    };
    Ok(by_meter
        .into_iter()
        .map(|(meter, (cur, prev))| {
            Chart::Time(TimeChart::two_periods(
                format!("{meter} per {g}{scope} ({})", zone.name()),
                ctx.unit(&meter),
                cur,
                prev,
            ))
        })
        .collect())
}

/// The tenant's usage per meter broken down by `by`, top first, with shares in percent.
fn breakdown(ctx: &Ctx, by: Dim, name: &str, title: &str) -> Result<Table> {
    let r = crate::usage::usage(
        &ctx.lake,
        &ctx.meters,
        &crate::usage::UsageQuery {
            tenant: ctx.tenant.clone(),
            meter: None,
            from: ctx.from,
            to: ctx.to,
            by: Some(by),
            compare: None,
            top: ctx.top,
        },
    )?;
    let p = &r.breakdown;
    Ok(Table::new(name, title)
        .text("meter", p.iter().map(|x| x.meter.as_str()))
        .text("key", p.iter().map(|x| x.key.as_str()))
        .num("value", 2, p.iter().map(|x| x.value))
        .int("events", p.iter().map(|x| x.event_count))
        .opt_num("share_pct", 1, p.iter().map(|x| x.share_pct).collect()))
}

/// Quotas, the invoice so far, the projected invoice and the cheaper-plan findings.
fn billing_page(ctx: &Ctx) -> Result<Report> {
    let quotas = ctx.quotas()?;
    let cur = ctx.currency();
    let rev = executive::revenue(ctx, &quotas);
    let invoices = invoices_so_far(ctx, &quotas)?;
    let so_far = crate::billing::saturating_sum(invoices.iter().map(|i| i.total));
    let projected = crate::billing::saturating_sum(rev.values().map(|r| r.total()));
    let overage = crate::billing::saturating_sum(rev.values().map(|r| r.overage));
    let figures = vec![
        figure(
            "Invoice so far",
            money(so_far, cur),
            Some(format!(
                "{} invoice{} of the current period",
                invoices.len(),
                if invoices.len() == 1 { "" } else { "s" }
            )),
        ),
        figure(
            "Projected invoice",
            money(projected, cur),
            Some("base fee and overage projected to the period's end".into()),
        ),
        figure("Overage so far", money(overage, cur), None),
    ];
    let findings = insights::compute(&Facts {
        quotas: &quotas,
        billing: ctx.billing,
        ..Facts::default()
    })
    .into_iter()
    .filter(|i| matches!(i.kind.as_str(), "cheaper_plan" | "cost_optimisation"))
    .collect();
    let mut tables = vec![quota_table(&quotas, true)];
    if ctx.tenant.is_some() {
        tables.push(invoice_lines(&invoices));
    } else {
        tables.push(invoice_table(&invoices, &rev));
    }
    Ok(Report {
        kind: ReportKind::Summary,
        title: String::new(),
        scope: String::new(),
        figures,
        insights: findings,
        charts: quota_bars(ctx, &quotas).into_iter().collect(),
        tables,
    })
}

/// The invoices of the periods the quotas are in (each tenant's current period), so far.
fn invoices_so_far(
    ctx: &Ctx,
    quotas: &[QuotaRow],
) -> Result<Vec<crate::billing::invoice::Invoice>> {
    let Some(b) = ctx.billing else {
        return Ok(Vec::new());
    };
    // Tenant → the start of its current period; invoices are asked per starting month, the
    // month the period starts in the tenant's own zone (as billing cuts periods).
    let mut starts: BTreeMap<&str, &str> = BTreeMap::new();
    for q in quotas {
        starts.insert(&q.tenant_id, &q.period_start);
    }
    let months: std::collections::BTreeSet<String> = starts
        .iter()
        .filter_map(|(t, start)| {
            let at = chrono::DateTime::parse_from_rfc3339(start)
                .ok()?
                .timestamp_micros();
            let zone = b
                .tenants
                .iter()
                .find(|x| x.id == *t)
                .map_or(Zone::UTC, |x| x.zone);
            Some(zone.local_date(at).format("%Y-%m").to_string())
        })
        .collect();
    let mut out = Vec::new();
    for m in months {
        let (all, _) = crate::stage::invoices::as_issued(&ctx.lake, b, &m, ctx.tenant.as_deref())?;
        out.extend(
            all.invoices
                .into_iter()
                .filter(|i| starts.get(i.tenant_id.as_str()) == Some(&i.period_start.as_str())),
        );
    }
    out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    Ok(out)
}

/// One invoice's lines (one tenant).
fn invoice_lines(invoices: &[crate::billing::invoice::Invoice]) -> Table {
    let lines: Vec<(&str, &crate::billing::invoice::Line)> = invoices
        .iter()
        .flat_map(|i| i.lines.iter().map(move |l| (i.period_start.as_str(), l)))
        .collect();
    let base: Decimal = crate::billing::saturating_sum(invoices.iter().map(|i| i.base_fee));
    let mut t = Table::new("invoice", "Invoice so far")
        .text("meter", lines.iter().map(|l| l.1.meter.as_str()))
        .text("unit", lines.iter().map(|l| l.1.unit.as_str()))
        .num("usage", 3, lines.iter().map(|l| quantity(l.1.usage)))
        .opt_num(
            "included",
            3,
            lines.iter().map(|l| l.1.included.map(quantity)).collect(),
        )
        .num(
            "overage_units",
            3,
            lines.iter().map(|l| quantity(l.1.overage_units)),
        )
        .text("pricing", lines.iter().map(|l| l.1.pricing.as_str()))
        .dec("amount", 2, lines.iter().map(|l| l.1.amount));
    if let Some(i) = invoices.first() {
        t.title = format!(
            "Invoice so far: {} to {} ({} plan, base fee {})",
            &i.period_start[..10.min(i.period_start.len())],
            &i.period_end[..10.min(i.period_end.len())],
            i.plan,
            base
        );
    }
    t
}

/// Every tenant's invoice so far and projected.
fn invoice_table(
    invoices: &[crate::billing::invoice::Invoice],
    rev: &BTreeMap<&str, executive::Revenue>,
) -> Table {
    Table::new("invoices", "Invoices so far")
        .text("tenant_id", invoices.iter().map(|i| i.tenant_id.as_str()))
        .text("plan", invoices.iter().map(|i| i.plan.as_str()))
        .text(
            "period_start",
            invoices.iter().map(|i| i.period_start.as_str()),
        )
        .dec("base_fee", 2, invoices.iter().map(|i| i.base_fee))
        .dec("total_so_far", 2, invoices.iter().map(|i| i.total))
        .opt_dec(
            "projected_total",
            2,
            invoices
                .iter()
                .map(|i| rev.get(i.tenant_id.as_str()).map(|r| r.total()))
                .collect(),
        )
}
