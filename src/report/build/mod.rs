//! Builds each kind of report from the lake and the outputs of the other stages: rollups
//! (brought up to date first), forecasts, anomaly incidents, quotas, alerts and the commit
//! log. Everything is computed here; renderers only lay it out.
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
mod detailed;
mod executive;
mod figures;
mod forecast;
mod summary;
mod tables;

use std::path::{Path, PathBuf};

use super::{Kind, Report};
use crate::billing::Billing;
use crate::error::Result;
use context::Ctx;

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

/// Builds a report.
pub fn build(lake_dir: &Path, billing: Option<&Billing>, opts: &ReportOptions) -> Result<Report> {
    let ctx = Ctx::open(lake_dir, billing, opts)?;
    let mut r = match opts.kind {
        Kind::Summary => summary::summary(&ctx)?,
        Kind::Detailed => detailed::detailed(&ctx)?,
        Kind::Forecast => forecast::forecast(&ctx)?,
        Kind::Anomaly => anomaly::anomaly(&ctx)?,
        Kind::Executive => executive::executive(&ctx)?,
        Kind::Compliance => compliance::compliance(&ctx)?,
    };
    r.scope = ctx.scope(opts.kind);
    Ok(r)
}
