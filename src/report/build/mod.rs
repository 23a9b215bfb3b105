//! Builds each kind of report from the lake and the derived tables the stages wrote: day
//! rollups, forecasts, anomaly incidents, alerts, and the commit log. Everything a report
//! shows is computed here; renderers only lay it out.
//!
//! **A report never writes.** It reads a derived table when that table answers its
//! question (the stored day rollup when it is current, the forecast and incident tables,
//! the alert store), and otherwise computes what it needs in memory, through the same
//! function the stage uses: day series the rollup has not caught up with
//! ([`crate::rollup::current_series`]), and quotas with projections
//! ([`crate::stage::quotas::evaluate`]). The batch job hands its quota stage's rows over
//! ([`QuotaSnapshot`], [`build_with`]), so one run evaluates quotas once, not once per
//! report.
//!
//! [`build`] settles the period and gathers the inputs in a [`context::Ctx`], then hands it
//! to the kind's builder, one file each: `summary`, `detailed`, `forecast`, `anomaly`,
//! `executive`, `compliance`. Each builder is a short list of named sections (tables,
//! charts, figures). Shared pieces: `tables` (usage totals, the quota table, quota bars)
//! and `figures` (headline figures, grouped thousands, money, dates).
//!
//! Domain rules live with their domain: how a period combines from its days is
//! [`crate::rollup::Aggregation::combine_days`], seat use is
//! [`crate::billing::seats::seat_use`]. Money stays a `Decimal` until it is shown.

mod anomaly;
mod compliance;
mod context;
mod dashboard;
mod detailed;
mod executive;
mod figures;
mod forecast;
mod summary;
mod tables;

use std::path::{Path, PathBuf};

use super::{Report, ReportKind};
use crate::billing::Billing;
use crate::billing::quota::QuotaRow;
use crate::error::Result;
use context::Ctx;
pub use dashboard::{Page, PageOptions, page};

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The kind.
    pub kind: ReportKind,
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
    /// Quotas, projections and engagement are evaluated at this instant (capped at the
    /// period's last instant); default: the lake's latest event, capped the same way.
    pub at: Option<i64>,
}

impl ReportOptions {
    /// A kind's report over the default period for every tenant.
    pub fn new(kind: ReportKind) -> ReportOptions {
        ReportOptions {
            kind,
            tenant: None,
            from: None,
            to: None,
            meters: None,
            top: 10,
            at: None,
        }
    }
}

/// Quotas the quota stage already evaluated, with projections, at one instant.
#[derive(Debug, Clone)]
pub struct QuotaSnapshot {
    /// The instant (UTC µs).
    pub at: i64,
    /// Every tenant × billed meter.
    pub rows: Vec<QuotaRow>,
}

/// Builds a report, evaluating what the lake's tables do not hold.
pub fn build(lake_dir: &Path, billing: Option<&Billing>, opts: &ReportOptions) -> Result<Report> {
    build_with(lake_dir, billing, opts, None)
}

/// Builds a report, reading quotas from `quotas` when they were evaluated at the report's
/// instant (otherwise they are evaluated, as [`build`] does).
pub fn build_with(
    lake_dir: &Path,
    billing: Option<&Billing>,
    opts: &ReportOptions,
    quotas: Option<&QuotaSnapshot>,
) -> Result<Report> {
    let ctx = Ctx::open(lake_dir, billing, opts, quotas)?;
    of_kind(&ctx, opts.kind)
}

/// Builds the reports of several kinds over one period (`opts`, whose kind is ignored),
/// handing each to `each` as it is made: what they share (day series, engagement,
/// sessions, rhythms, quotas) is read once, not once per kind, which is how the batch job
/// makes its reports.
pub fn build_kinds(
    lake_dir: &Path,
    billing: Option<&Billing>,
    opts: &ReportOptions,
    kinds: &[ReportKind],
    quotas: Option<&QuotaSnapshot>,
    each: &mut dyn FnMut(ReportKind, Report) -> Result<()>,
) -> Result<()> {
    let ctx = Ctx::open(lake_dir, billing, opts, quotas)?;
    for &k in kinds {
        let t = std::time::Instant::now();
        let r = of_kind(&ctx, k)?;
        let built = t.elapsed();
        each(k, r)?;
        tracing::debug!(kind = k.name(), ?built, handed_on = ?(t.elapsed() - built), "report");
    }
    Ok(())
}

fn of_kind(ctx: &Ctx, kind: ReportKind) -> Result<Report> {
    let mut r = match kind {
        ReportKind::Summary => summary::summary(ctx)?,
        ReportKind::Detailed => detailed::detailed(ctx)?,
        ReportKind::Forecast => forecast::forecast(ctx)?,
        ReportKind::Anomaly => anomaly::anomaly(ctx)?,
        ReportKind::Executive => executive::executive(ctx)?,
        ReportKind::Compliance => compliance::compliance(ctx)?,
    };
    r.scope = ctx.scope(kind);
    r.set_currency(ctx.currency());
    Ok(r)
}
