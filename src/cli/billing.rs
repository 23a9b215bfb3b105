//! `meterlake quota`, `check`, `invoice` and `plans compare`: plans applied to the lake.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use serde::Serialize;

use super::table::{Align, Left, Right, Table};
use super::write_csv;
use crate::billing::compare::{Candidate, Comparison, compare, upgrade_candidates};
use crate::billing::invoice::invoices;
use crate::billing::quota::{QuotaOptions, QuotaRow, check, quotas};
use crate::billing::{
    Billing, DEFAULT_PLANS_FILE, DEFAULT_TENANTS_FILE, parse_at, unlisted_tenants,
};
use crate::lake::Lake;
use crate::time::MICROS_PER_DAY;

/// Where plans, tenants and usage come from.
#[derive(Debug, Args)]
pub struct Source {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// The plan catalogue (TOML).
    #[arg(long, default_value = DEFAULT_PLANS_FILE)]
    pub plans: PathBuf,
    /// Tenant assignments (CSV: tenant_id, plan[, period_anchor, time_zone,
    /// plan_changed_at, previous_plan]).
    #[arg(long, default_value = DEFAULT_TENANTS_FILE)]
    pub tenants: PathBuf,
}

/// Warns on stderr about tenants with events but no plan (they are not billed).
fn warn_unlisted(lake: &Lake, billing: &Billing, from: i64, to: i64) -> anyhow::Result<()> {
    let missing = unlisted_tenants(lake, billing, from, to)?;
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        eprintln!(
            "warning: {} tenant(s) with events have no plan in the tenants file and are left out: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(())
}

impl Source {
    pub(crate) fn open(&self) -> anyhow::Result<(Lake, Billing)> {
        let billing = Billing::load(&self.plans, &self.tenants)?;
        let lake = Lake::open(&self.lake)?;
        Ok((lake, billing))
    }
}

/// Table, JSON or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable table.
    #[default]
    Table,
    /// One JSON object.
    Json,
    /// CSV with a header.
    Csv,
}

/// Arguments of `quota`.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    source: Source,
    /// The instant: `latest` (just after the lake's last event: a lake whose data ends in
    /// the past is seen as of its data), `now` (the wall clock), a date or an RFC 3339
    /// instant.
    #[arg(long, default_value = "latest")]
    at: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Skip the forecast-based projection of the period's end.
    #[arg(long)]
    no_projection: bool,
    /// Only shard I of N of the tenants (`I/N`, I from 0): N workers together print every
    /// tenant's quotas, each tenant's once.
    #[arg(long, default_value = "0/1")]
    shard: crate::lake::Shard,
    /// Days of daily history the projection forecasts from.
    #[arg(long, default_value_t = 56)]
    history_days: i64,
    /// Interval level of the projection, percent.
    #[arg(long, default_value_t = 90.0)]
    level: f64,
    /// Table, JSON or CSV.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(flatten)]
    reader: super::Reader,
}

fn opt(v: Option<Decimal>, none: &str) -> String {
    v.map(|d| d.normalize().to_string())
        .unwrap_or_else(|| none.into())
}

/// One flat CSV row of a quota.
#[derive(Serialize)]
struct QuotaCsv<'a> {
    tenant_id: &'a str,
    plan: &'a str,
    meter: &'a str,
    unit: &'a str,
    period_start: &'a str,
    period_end: &'a str,
    used: Decimal,
    included: String,
    percent: Option<Decimal>,
    remaining: Option<Decimal>,
    status: &'static str,
    overage_units: Decimal,
    overage_cost: Decimal,
    projected_usage: Option<Decimal>,
    projected_lower: Option<Decimal>,
    projected_upper: Option<Decimal>,
    projected_cost: Option<Decimal>,
    projected_cost_lower: Option<Decimal>,
    projected_cost_upper: Option<Decimal>,
    limit_at: Option<&'a str>,
    model: Option<&'a str>,
}

impl<'a> QuotaCsv<'a> {
    /// The flat row of one quota.
    fn of(r: &'a QuotaRow) -> QuotaCsv<'a> {
        let p = r.projected.as_ref();
        QuotaCsv {
            tenant_id: &r.tenant_id,
            plan: &r.plan,
            meter: &r.meter,
            unit: &r.unit,
            period_start: &r.period_start,
            period_end: &r.period_end,
            used: r.used,
            included: opt(r.included, "unlimited"),
            percent: r.percent,
            remaining: r.remaining,
            status: r.status.name(),
            overage_units: r.overage_units,
            overage_cost: r.overage_cost,
            projected_usage: p.map(|p| p.usage),
            projected_lower: p.map(|p| p.usage_lower),
            projected_upper: p.map(|p| p.usage_upper),
            projected_cost: p.map(|p| p.cost),
            projected_cost_lower: p.map(|p| p.cost_lower),
            projected_cost_upper: p.map(|p| p.cost_upper),
            limit_at: p.and_then(|p| p.limit_at.as_deref()),
            model: p.map(|p| p.model.as_str()),
        }
    }
}

/// The quotas as a table under a heading line.
fn quota_table(rows: &[QuotaRow], at: i64, cur: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "quotas at {} ({cur})", crate::time::rfc3339(at))?;
    let mut table = Table::new(&[
        ("tenant", Left),
        ("plan", Left),
        ("meter", Left),
        ("used", Right),
        ("included", Right),
        ("percent", Right),
        ("status", Left),
        ("overage", Right),
        ("projected [interval]", Right),
        ("proj.cost", Right),
        ("limit reached", Left),
    ]);
    for r in rows {
        let p = r.projected.as_ref();
        let or_dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        table.row(&[
            &r.tenant_id,
            &r.plan,
            &r.meter,
            &r.used.normalize(),
            &opt(r.included, "unlimited"),
            &or_dash(r.percent.map(|p| format!("{p}%"))),
            &r.status.name(),
            &r.overage_cost,
            &or_dash(p.map(|p| {
                format!(
                    "{} [{}, {}]",
                    p.usage.normalize(),
                    p.usage_lower.normalize(),
                    p.usage_upper.normalize()
                )
            })),
            &or_dash(p.map(|p| p.cost.to_string())),
            &or_dash(p.and_then(|p| p.limit_at.clone())),
        ]);
    }
    table.write(&mut o)?;
    Ok(())
}

pub(crate) fn quota(a: QuotaArgs) -> anyhow::Result<ExitCode> {
    a.reader.record(
        &a.source.lake,
        a.tenant.as_deref(),
        &format!("quota --at {}", a.at),
    )?;
    let (lake, billing) = a.source.open()?;
    let at = parse_at(&lake, &a.at)?;
    if a.history_days < 1 {
        anyhow::bail!(crate::Error::InvalidParameter {
            name: "--history-days",
            reason: "must be at least 1".into()
        });
    }
    if a.tenant.is_none() {
        warn_unlisted(&lake, &billing, at - 31 * MICROS_PER_DAY, at)?;
    }
    let rows = quotas(
        &lake,
        &billing,
        &QuotaOptions {
            at,
            tenant: a.tenant,
            among: (!a.shard.is_all()).then(|| {
                billing
                    .tenants
                    .iter()
                    .filter(|t| a.shard.holds(&t.id))
                    .map(|t| t.id.clone())
                    .collect()
            }),
            project: !a.no_projection,
            history_days: a.history_days,
            level: a.level / 100.0,
        },
    )?;
    let cur = &billing.catalog.currency;
    match a.output {
        Format::Json => super::print_json(&serde_json::json!({
            "at": crate::time::rfc3339(at),
            "currency": cur,
            "quotas": rows,
        }))?,
        Format::Csv => write_csv(&rows.iter().map(QuotaCsv::of).collect::<Vec<_>>())?,
        Format::Table => quota_table(&rows, at, cur)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    source: Source,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The billed meter (as named in the plan catalogue).
    #[arg(long, required_unless_present = "feature", conflicts_with = "feature")]
    meter: Option<String>,
    /// Instead: may the tenant use this feature (entitlements: an override, the plan's
    /// [plans.NAME.features], or a billed meter's allowance left)?
    #[arg(long)]
    feature: Option<String>,
    /// Per-tenant feature overrides (CSV: tenant_id, feature, value, from; default
    /// data/entitlements.csv when it exists).
    #[arg(long)]
    entitlements: Option<PathBuf>,
    /// How much more it wants to consume.
    #[arg(long, default_value = "1")]
    quantity: String,
    /// The instant: `latest` (just after the lake's last event: a lake whose data ends in
    /// the past is seen as of its data), `now` (the wall clock), a date or an RFC 3339
    /// instant.
    #[arg(long, default_value = "latest")]
    at: String,
}

/// Exit code of a blocked check.
pub const BLOCKED: u8 = 3;

pub(crate) fn check_cmd(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let q = Decimal::from_str(&a.quantity).map_err(|_| crate::Error::InvalidParameter {
        name: "--quantity",
        reason: format!("`{}` is not a decimal number", a.quantity),
    })?;
    let (lake, billing) = a.source.open()?;
    let at = parse_at(&lake, &a.at)?;
    if let Some(feature) = &a.feature {
        let overrides =
            crate::billing::entitlements::load_overrides_or_default(a.entitlements.as_deref())?;
        let e = crate::billing::entitlements::entitlement(
            &billing,
            &overrides,
            &a.tenant,
            feature,
            at,
            || check(&lake, &billing, &a.tenant, feature, Decimal::ZERO, at),
        )?;
        super::print_json(&e)?;
        return Ok(if e.has_access {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(BLOCKED)
        });
    }
    let meter = a.meter.as_deref().unwrap_or_default();
    let ans = check(&lake, &billing, &a.tenant, meter, q, at)?;
    let mut shown = serde_json::to_value(&ans)?;
    shown["at"] = crate::time::rfc3339(at).into();
    super::print_json(&shown)?;
    Ok(if ans.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(BLOCKED)
    })
}

/// Arguments of `invoice`.
#[derive(Debug, Args)]
pub struct InvoiceArgs {
    #[command(flatten)]
    source: Source,
    /// The month the billing period starts in, YYYY-MM.
    #[arg(long)]
    period: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// JSON (default), CSV (one row per line, base fee and total) or a table.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    output: Format,
    /// Compute from the lake as it is now, even when the period's invoices were issued
    /// (by default an issued period is shown as issued).
    #[arg(long)]
    draft: bool,
    #[command(flatten)]
    reader: super::Reader,
}

#[derive(Serialize)]
struct InvoiceCsv<'a> {
    period: &'a str,
    currency: &'a str,
    tenant_id: &'a str,
    plan: &'a str,
    item: String,
    usage: String,
    included: String,
    overage_units: String,
    amount: Decimal,
}

pub(crate) fn invoice(a: InvoiceArgs) -> anyhow::Result<ExitCode> {
    a.reader.record(
        &a.source.lake,
        a.tenant.as_deref(),
        &format!("invoice --period {}", a.period),
    )?;
    crate::billing::invoice::parse_month(&a.period)?;
    let (lake, billing) = a.source.open()?;
    let inv = if a.draft {
        invoices(&lake, &billing, &a.period, a.tenant.as_deref())?
    } else {
        let (inv, issued) =
            crate::stage::invoices::as_issued(&lake, &billing, &a.period, a.tenant.as_deref())?;
        if issued {
            eprintln!(
                "{}: as issued (kept in {}/{}; --draft recomputes from the lake)",
                a.period,
                lake.root().display(),
                crate::stage::invoices::DIR
            );
        }
        inv
    };
    if a.tenant.is_none()
        && let (Some(first), Some(last)) = (
            inv.invoices.iter().map(|i| i.period_start.as_str()).min(),
            inv.invoices.iter().map(|i| i.period_end.as_str()).max(),
        )
    {
        let from = crate::time::parse_instant("period_start", first)?;
        let to = crate::time::parse_instant("period_end", last)?;
        warn_unlisted(&lake, &billing, from, to)?;
    }
    match a.output {
        Format::Json => super::print_json(&inv)?,
        Format::Csv | Format::Table => {
            let mut rows = Vec::new();
            for i in &inv.invoices {
                for l in &i.lines {
                    rows.push(InvoiceCsv {
                        period: &inv.period,
                        currency: &inv.currency,
                        tenant_id: &i.tenant_id,
                        plan: &i.plan,
                        item: l.meter.clone(),
                        usage: l.usage.to_string(),
                        included: opt(l.included, "unlimited"),
                        overage_units: l.overage_units.to_string(),
                        amount: l.amount,
                    });
                }
                for adj in &i.adjustments {
                    rows.push(InvoiceCsv {
                        period: &inv.period,
                        currency: &inv.currency,
                        tenant_id: &i.tenant_id,
                        plan: &i.plan,
                        item: format!("adjustment {} {}", adj.period, adj.item),
                        usage: adj.usage.to_string(),
                        included: String::new(),
                        overage_units: String::new(),
                        amount: adj.amount,
                    });
                }
                for (item, amount) in [("base_fee", i.base_fee), ("total", i.total)] {
                    rows.push(InvoiceCsv {
                        period: &inv.period,
                        currency: &inv.currency,
                        tenant_id: &i.tenant_id,
                        plan: &i.plan,
                        item: item.to_string(),
                        usage: String::new(),
                        included: String::new(),
                        overage_units: String::new(),
                        amount,
                    });
                }
            }
            if a.output == Format::Csv {
                write_csv(&rows)?;
            } else {
                let mut o = std::io::stdout().lock();
                writeln!(o, "invoices for {} ({})", inv.period, inv.currency)?;
                let mut table = Table::new(&[
                    ("tenant", Left),
                    ("plan", Left),
                    ("item", Left),
                    ("usage", Right),
                    ("included", Right),
                    ("overage", Right),
                    ("amount", Right),
                ]);
                for r in &rows {
                    table.row(&[
                        &r.tenant_id,
                        &r.plan,
                        &r.item,
                        &r.usage,
                        &r.included,
                        &r.overage_units,
                        &r.amount,
                    ]);
                }
                table.write(&mut o)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plans` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// What a tenant's last three periods and its forecast would cost on each plan; and the
    /// entry-plan tenants closest to their limits.
    Compare(CompareArgs),
}

/// Arguments of `plans compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    source: Source,
    /// The tenant to compare plans for; without it, only the upgrade candidates.
    #[arg(long)]
    tenant: Option<String>,
    /// The instant: `latest` (just after the lake's last event: a lake whose data ends in
    /// the past is seen as of its data), `now` (the wall clock), a date or an RFC 3339
    /// instant.
    #[arg(long, default_value = "latest")]
    at: String,
    /// Upgrade candidates listed.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Table or JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(flatten)]
    reader: super::Reader,
}

pub(crate) fn plans(c: PlansCommand) -> anyhow::Result<ExitCode> {
    let PlansCommand::Compare(a) = c;
    a.reader
        .record(&a.source.lake, a.tenant.as_deref(), "plans compare")?;
    let (lake, billing) = a.source.open()?;
    let at = parse_at(&lake, &a.at)?;
    let cmp = a
        .tenant
        .as_deref()
        .map(|t| compare(&lake, &billing, t, at))
        .transpose()?;
    let cands = upgrade_candidates(&lake, &billing, at, a.top)?;
    match a.output {
        Format::Json | Format::Csv => super::print_json(&serde_json::json!({
            "at": crate::time::rfc3339(at),
            "comparison": cmp,
            "upgrade_candidates": cands,
        }))?,
        Format::Table => {
            let mut o = std::io::stdout().lock();
            writeln!(o, "plans as of {}", crate::time::rfc3339(at))?;
            if let Some(c) = &cmp {
                write_comparison(&mut o, c)?;
                writeln!(o)?;
            }
            writeln!(o, "upgrade candidates (entry plans closest to a limit)")?;
            write_candidates(&mut o, &cands)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tenant's costs on every plan, then which plan to choose.
fn write_comparison(o: &mut impl Write, c: &Comparison) -> std::io::Result<()> {
    writeln!(
        o,
        "{} (now on {}), costs in {}",
        c.tenant_id, c.current_plan, c.currency
    )?;
    let mut columns: Vec<(&str, Align)> = vec![("plan", Left)];
    columns.extend(c.periods.iter().map(|p| (p.as_str(), Right)));
    columns.extend([("total", Right), ("fits", Left)]);
    let mut table = Table::new(&columns);
    for p in &c.plans {
        let mark = if c.cheapest.as_deref() == Some(&p.plan) {
            "  <- cheapest"
        } else {
            ""
        };
        let fits = if p.fits {
            "yes".to_string()
        } else {
            format!("no: over the hard cap of {}", p.over_hard_cap.join(", "))
        };
        let fits = format!("{fits}{mark}");
        let mut cells: Vec<&dyn Display> = vec![&p.plan];
        cells.extend(p.costs.iter().map(|v| v as &dyn Display));
        cells.push(&p.total);
        cells.push(&fits);
        table.row(&cells);
    }
    table.write(o)?;
    let current = c.plans.iter().find(|p| p.plan == c.current_plan);
    match (&c.cheapest, current) {
        (Some(b), Some(cur)) if *b != c.current_plan && !cur.fits => writeln!(
            o,
            "{} caps this usage ({}); {b} is the cheapest plan that fits it",
            c.current_plan,
            cur.over_hard_cap.join(", ")
        )?,
        (Some(b), _) if *b != c.current_plan => writeln!(
            o,
            "{b} would save {} {} over these periods",
            c.saving, c.currency
        )?,
        (Some(_), _) => writeln!(o, "{} is already the cheapest", c.current_plan)?,
        (None, _) => writeln!(o, "no plan fits this usage within its hard caps")?,
    }
    Ok(())
}

/// The upgrade candidates, one row each.
fn write_candidates(o: &mut impl Write, cands: &[Candidate]) -> std::io::Result<()> {
    let mut table = Table::new(&[
        ("tenant", Left),
        ("plan", Left),
        ("meter", Left),
        ("percent", Right),
        ("projected", Right),
        ("suggested plan", Left),
    ]);
    for c in cands {
        let suggested = match c.suggested_plan.as_deref() {
            Some(p) if p == c.plan => format!("{p} (current)"),
            Some(p) => p.to_string(),
            None => "-".into(),
        };
        table.row(&[
            &c.tenant_id,
            &c.plan,
            &c.meter,
            &format!("{}%", c.percent),
            &format!("{}%", c.projected_percent),
            &suggested,
        ]);
    }
    table.write(o)
}
