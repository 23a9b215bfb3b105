//! `meterlake usage` and `meterlake engagement`: queries over the lake, printed as a table,
//! JSON or CSV.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::table::{Left, Right, Table};
use super::write_csv;
use crate::lake::Lake;
use crate::rollup::{Dim, Meters};
use crate::time::parse_instant;
use crate::usage::{self, Compare, EngagementOptions, UsageQuery};

/// How a query prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum QueryOutput {
    /// Human-readable tables.
    #[default]
    Table,
    /// One JSON object.
    Json,
    /// CSV with a header (the breakdown with `--by`, else the totals).
    Csv,
}

/// Arguments of `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this meter.
    #[arg(long)]
    pub meter: Option<String>,
    /// Period start: a date (YYYY-MM-DD, UTC midnight) or an RFC 3339 instant.
    #[arg(long)]
    pub from: String,
    /// Period end (exclusive).
    #[arg(long)]
    pub to: String,
    /// Break down by `user` or `property:KEY` (endpoint, feature, model, ...).
    #[arg(long)]
    pub by: Option<String>,
    /// Compare with `previous` (the same length just before) or `FROM..TO`.
    #[arg(long)]
    pub compare: Option<String>,
    /// Breakdown rows per tenant and meter; the rest are summed into `(other)` (0: all).
    #[arg(long, default_value_t = usage::DEFAULT_TOP)]
    pub top: usize,
    /// Meter definitions (default data/meters.toml if present, else the built-in set).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Table, JSON or CSV.
    #[arg(long, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
    #[command(flatten)]
    reader: super::Reader,
}

fn parse_compare(s: &str) -> anyhow::Result<Compare> {
    if s == "previous" {
        return Ok(Compare::Previous);
    }
    match s.split_once("..") {
        Some((a, b)) => Ok(Compare::Range(
            parse_instant("--compare", a)?,
            parse_instant("--compare", b)?,
        )),
        None => Err(crate::Error::InvalidParameter {
            name: "--compare",
            reason: format!("`{s}`: expected `previous` or FROM..TO (dates or instants)"),
        }
        .into()),
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|p| format!("{p:+.1}%")).unwrap_or_else(|| "-".into())
}

pub(crate) fn run(a: UsageArgs) -> anyhow::Result<ExitCode> {
    a.reader.record(
        &a.lake,
        a.tenant.as_deref(),
        &format!("usage --from {} --to {}", a.from, a.to),
    )?;
    let q = UsageQuery {
        tenant: a.tenant,
        meter: a.meter,
        from: parse_instant("--from", &a.from)?,
        to: parse_instant("--to", &a.to)?,
        by: a.by.as_deref().map(str::parse::<Dim>).transpose()?,
        compare: a.compare.as_deref().map(parse_compare).transpose()?,
        top: a.top,
    };
    let meters = Meters::load_or_default(a.meters.as_deref())?;
    let lake = Lake::open(&a.lake)?;
    let r = usage::usage(&lake, &meters, &q)?;
    unknown_tenant(&lake, q.tenant.as_deref(), r.totals.is_empty())?;
    match a.output {
        QueryOutput::Json => super::print_json(&r)?,
        QueryOutput::Csv if q.by.is_some() => write_csv(&r.breakdown)?,
        QueryOutput::Csv => write_csv(&r.totals)?,
        QueryOutput::Table => {
            let mut o = std::io::stdout().lock();
            write!(o, "usage {} .. {}", r.period.from, r.period.to)?;
            if let Some(c) = &r.compared_with {
                write!(o, "  (compared with {} .. {})", c.from, c.to)?;
            }
            writeln!(o)?;
            let mut table = Table::new(&[
                ("tenant", Left),
                ("meter", Left),
                ("value", Right),
                ("events", Right),
                ("previous", Right),
                ("change", Right),
            ]);
            for t in &r.totals {
                table.row(&[
                    &t.tenant_id,
                    &t.meter,
                    &num(Some(t.value)),
                    &t.event_count,
                    &num(t.previous),
                    &pct(t.change_pct),
                ]);
            }
            table.write(&mut o)?;
            if let Some(by) = &r.by {
                writeln!(o, "\nbreakdown by {by}")?;
                let mut table = Table::new(&[
                    ("tenant", Left),
                    ("meter", Left),
                    ("key", Left),
                    ("value", Right),
                    ("share", Right),
                    ("change", Right),
                ]);
                for p in &r.breakdown {
                    let share = p.share_pct.map(|s| format!("{s:.1}%"));
                    table.row(&[
                        &p.tenant_id,
                        &p.meter,
                        &p.key,
                        &num(Some(p.value)),
                        &share.as_deref().unwrap_or("-"),
                        &pct(p.change_pct),
                    ]);
                }
                table.write(&mut o)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `engagement`.
#[derive(Debug, Args)]
pub struct EngagementArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// As of this date or instant (exclusive); default: just after the lake's last event.
    #[arg(long)]
    pub at: Option<String>,
    /// The property naming a feature.
    #[arg(long, default_value = "feature")]
    pub feature_property: String,
    /// The meter counting documents.
    #[arg(long, default_value = "documents")]
    pub documents_meter: String,
    /// The storage gauge meter.
    #[arg(long, default_value = "storage_bytes")]
    pub storage_meter: String,
    /// Users listed per tenant (inactive users, top document users, users by sessions).
    #[arg(long, default_value_t = 10)]
    pub list: usize,
    /// Minutes of inactivity that end a session (when no session_end/logout event does).
    #[arg(long, default_value_t = 30.0)]
    pub session_gap_minutes: f64,
    /// Tenants file (CSV with a time_zone column): sessions are counted on each tenant's
    /// local days (default: UTC days).
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// Table, JSON or CSV.
    #[arg(long, value_enum, default_value_t = QueryOutput::Table)]
    pub output: QueryOutput,
    #[command(flatten)]
    reader: super::Reader,
}

/// One flat CSV row of engagement.
#[derive(Serialize)]
struct EngagementRow<'a> {
    tenant_id: &'a str,
    at: &'a str,
    dau: u64,
    wau: u64,
    mau: u64,
    stickiness: f64,
    known_users: u64,
    inactive_users: u64,
    documents: u64,
    documents_per_active_user: f64,
    storage_now: Option<f64>,
    storage_growth: Option<f64>,
    storage_growth_per_active_user: Option<f64>,
    /// `feature=adoption;...`
    feature_adoption: String,
    sessions: u64,
    sessions_per_day: f64,
    sessions_per_active_user: f64,
    session_median_s: f64,
    session_p95_s: f64,
}

pub(crate) fn engagement(a: EngagementArgs) -> anyhow::Result<ExitCode> {
    a.reader
        .record(&a.lake, a.tenant.as_deref(), "engagement")?;
    let opts = EngagementOptions {
        tenant: a.tenant,
        at: a
            .at
            .as_deref()
            .map(|s| parse_instant("--at", s))
            .transpose()?,
        feature_property: a.feature_property,
        documents_meter: a.documents_meter,
        storage_meter: a.storage_meter,
        list: a.list,
        session_gap: minutes_to_micros("--session-gap-minutes", a.session_gap_minutes)?,
        zones: match &a.tenants {
            Some(p) => crate::billing::plans::load_zones(p)?,
            None => Default::default(),
        },
    };
    let lake = Lake::open(&a.lake)?;
    let e = usage::engagement(&lake, &opts)?;
    unknown_tenant(&lake, opts.tenant.as_deref(), e.is_empty())?;
    match a.output {
        QueryOutput::Json => super::print_json(&e)?,
        QueryOutput::Csv => {
            let rows: Vec<EngagementRow> = e
                .iter()
                .map(|x| EngagementRow {
                    tenant_id: &x.tenant_id,
                    at: &x.at,
                    dau: x.dau,
                    wau: x.wau,
                    mau: x.mau,
                    stickiness: x.stickiness,
                    known_users: x.known_users,
                    inactive_users: x.inactive_users,
                    documents: x.documents,
                    documents_per_active_user: x.documents_per_active_user,
                    storage_now: x.storage_now,
                    storage_growth: x.storage_growth,
                    storage_growth_per_active_user: x.storage_growth_per_active_user,
                    feature_adoption: x
                        .feature_adoption
                        .iter()
                        .map(|f| format!("{}={:.4}", f.feature, f.adoption))
                        .collect::<Vec<_>>()
                        .join(";"),
                    sessions: x.sessions.as_ref().map_or(0, |s| s.sessions),
                    sessions_per_day: x.sessions.as_ref().map_or(0.0, |s| s.sessions_per_day),
                    sessions_per_active_user: x
                        .sessions
                        .as_ref()
                        .map_or(0.0, |s| s.sessions_per_active_user),
                    session_median_s: x.sessions.as_ref().map_or(0.0, |s| s.median_duration_s),
                    session_p95_s: x.sessions.as_ref().map_or(0.0, |s| s.p95_duration_s),
                })
                .collect();
            write_csv(&rows)?
        }
        QueryOutput::Table => {
            let mut table = Table::new(&[
                ("tenant", Left),
                ("DAU", Right),
                ("WAU", Right),
                ("MAU", Right),
                ("sticky", Right),
                ("users", Right),
                ("inactive", Right),
                ("docs/user", Right),
                ("storage growth", Right),
                ("top features", Left),
            ]);
            for x in &e {
                let feats: Vec<String> = x
                    .feature_adoption
                    .iter()
                    .take(3)
                    .map(|f| format!("{} {:.0}%", f.feature, f.adoption * 100.0))
                    .collect();
                table.row(&[
                    &x.tenant_id,
                    &x.dau,
                    &x.wau,
                    &x.mau,
                    &format!("{:.0}%", x.stickiness * 100.0),
                    &x.known_users,
                    &x.inactive_users,
                    &format!("{:.1}", x.documents_per_active_user),
                    &num(x.storage_growth),
                    &feats.join(", "),
                ]);
            }
            table.print()?;
            outln!()?;
            outln!(
                "Sessions, last 30 days (gap {} min):",
                a.session_gap_minutes
            )?;
            let mut st = Table::new(&[
                ("tenant", Left),
                ("sessions", Right),
                ("per day", Right),
                ("users", Right),
                ("per user", Right),
                ("median", Right),
                ("p95", Right),
                ("explicit", Right),
            ]);
            for s in e.iter().filter_map(|x| x.sessions.as_ref()) {
                st.row(&[
                    &s.tenant_id,
                    &s.sessions,
                    &format!("{:.1}", s.sessions_per_day),
                    &s.active_users,
                    &format!("{:.1}", s.sessions_per_active_user),
                    &crate::report::human_duration(s.median_duration_s),
                    &crate::report::human_duration(s.p95_duration_s),
                    &s.explicit_sessions,
                ]);
            }
            st.print()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Minutes as µs, positive.
fn minutes_to_micros(name: &'static str, m: f64) -> anyhow::Result<i64> {
    if !(m.is_finite() && m > 0.0) {
        anyhow::bail!(crate::Error::InvalidParameter {
            name,
            reason: format!("{m} is not a positive number of minutes"),
        });
    }
    Ok((m * crate::time::MICROS_PER_MINUTE as f64).round() as i64)
}

/// Nothing to show for `--tenant T` and no event of T in the lake at all: most likely a
/// typo, named rather than answered with an empty table.
fn unknown_tenant(lake: &Lake, tenant: Option<&str>, empty: bool) -> anyhow::Result<()> {
    match tenant {
        Some(t) if empty && !crate::lake::tenant_has_events(lake, t)? => {
            anyhow::bail!("--tenant {t}: no events of this tenant in the lake")
        }
        _ => Ok(()),
    }
}
