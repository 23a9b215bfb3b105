//! `meterlake report`, `retention` and `forget`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::billing::{Billing, DEFAULT_PLANS_FILE, DEFAULT_TENANTS_FILE};
use crate::job::forget::{ForgetOptions, forget};
use crate::job::retention::{RetentionOptions, retention};
use crate::report::{self, Format, ReportKind, ReportOptions};
use crate::time::parse_instant;

/// Arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// What the report is about.
    #[arg(long, value_enum)]
    pub kind: ReportKind,
    /// Output format (default: from --out's extension).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The file to write (CSV and Parquet write further tables beside it as NAME.TABLE.EXT).
    #[arg(long)]
    pub out: PathBuf,
    /// One tenant only.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Period start, a UTC day (YYYY-MM-DD, or RFC 3339 at midnight UTC; default: 30 days
    /// before --to). Reports add up whole UTC days.
    #[arg(long)]
    pub from: Option<String>,
    /// Period end, exclusive, a UTC day as --from (default: midnight after the lake's last
    /// event).
    #[arg(long)]
    pub to: Option<String>,
    /// Entries in top lists and charts.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// The plan catalogue (quotas, overage, revenue); the default path, when absent, means
    /// the built-in catalogue, as for the billing commands.
    #[arg(long, default_value = DEFAULT_PLANS_FILE)]
    pub plans: PathBuf,
    /// Tenants: plans and time zones. Without the default file, the report leaves billing
    /// out and reads local hours in UTC; a path given that does not exist is an error.
    #[arg(long, default_value = DEFAULT_TENANTS_FILE)]
    pub tenants: PathBuf,
    /// Meter definitions.
    #[arg(long)]
    pub meters: Option<PathBuf>,
    #[command(flatten)]
    reader: super::Reader,
}

/// Loads plans and tenants for a report. Without the default tenants file the report
/// leaves billing out (with a warning); a tenants or plans path given that does not exist
/// is an error naming its flag; the default plans path, when absent, is the built-in
/// catalogue ([`crate::billing::plans::Catalog::load`]). A file that exists but is wrong
/// is an error.
pub(crate) fn billing_if_present(
    plans: &std::path::Path,
    tenants: &std::path::Path,
) -> anyhow::Result<Option<Billing>> {
    let missing =
        |flag: &str, p: &std::path::Path| anyhow::anyhow!("{flag} {}: no such file", p.display());
    if !tenants.is_file() {
        if tenants != std::path::Path::new(DEFAULT_TENANTS_FILE) {
            return Err(missing("--tenants", tenants));
        }
        eprintln!(
            "warning: no tenants file at {} (--tenants): quotas, overage and revenue are left out, and local hours are UTC",
            tenants.display()
        );
        return Ok(None);
    }
    if plans != std::path::Path::new(DEFAULT_PLANS_FILE) && !plans.is_file() {
        return Err(missing("--plans", plans));
    }
    Ok(Some(Billing::load(plans, tenants)?))
}

pub(crate) fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    a.reader.record(
        &a.lake,
        a.tenant.as_deref(),
        &format!("report --kind {}", a.kind.name()),
    )?;
    let format = match a.format {
        Some(f) => f,
        None => report::format_of(&a.out)?,
    };
    let billing = billing_if_present(&a.plans, &a.tenants)?;
    let opts = ReportOptions {
        kind: a.kind,
        tenant: a.tenant,
        from: a
            .from
            .as_deref()
            .map(|s| parse_instant("--from", s))
            .transpose()?,
        to: a
            .to
            .as_deref()
            .map(|s| parse_instant("--to", s))
            .transpose()?,
        meters: a.meters,
        top: a.top,
        at: None,
    };
    let clock = std::time::Instant::now();
    let r = report::build(&a.lake, billing.as_ref(), &opts)?;
    let built = clock.elapsed().as_secs_f64();
    let files = report::write(&r, format, &a.out)?;
    for f in &files {
        outln!("wrote {}", f.display())?;
    }
    eprintln!(
        "{} report: built in {built:.2} s, written in {:.2} s",
        a.kind.name(),
        clock.elapsed().as_secs_f64() - built
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// Keep event partitions of the last N days (0 keeps all, as in the configuration).
    #[arg(long)]
    pub events_days: Option<u32>,
    /// Keep rollup partitions of the last N days (0 keeps all).
    #[arg(long)]
    pub rollups_days: Option<u32>,
    /// Copy expired event files here before dropping them.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Count days back from this instant instead of now (date or RFC 3339).
    #[arg(long)]
    pub now: Option<String>,
    /// Who asks (recorded in the audit log; default $MLK_ACTOR or $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Drop expired events even of periods whose invoices are not issued yet (by default
    /// they are kept, with a warning).
    #[arg(long)]
    pub force: bool,
    /// Print the summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub(crate) fn retention_cmd(a: RetentionArgs) -> anyhow::Result<ExitCode> {
    if a.events_days.is_none() && a.rollups_days.is_none() {
        anyhow::bail!("invalid --events-days: give --events-days N and/or --rollups-days N");
    }
    let now = match &a.now {
        Some(s) => parse_instant("--now", s)?,
        None => crate::time::now(),
    };
    let s = retention(
        &a.lake,
        &RetentionOptions {
            events_days: a.events_days,
            rollups_days: a.rollups_days,
            archive: a.archive,
            now,
            actor: a.actor.unwrap_or_else(crate::lake::audit::current_actor),
            // A lake invoices were issued from keeps what is not invoiced yet.
            keep_from: crate::stage::invoices::Register::of(&a.lake).unbilled_from()?,
            keep_before: crate::stage::invoices::Register::of(&a.lake).billed_from()?,
            force: a.force,
        },
    )?;
    if let (Some(first), Some(last)) = (s.kept_unbilled.first(), s.kept_unbilled.last()) {
        eprintln!(
            "warning: kept {} expired event partitions ({first}..{last}): their periods are not invoiced yet (--force drops them)",
            s.kept_unbilled.len()
        );
    }
    if let (Some(first), Some(last)) = (s.forced_unbilled.first(), s.forced_unbilled.last()) {
        eprintln!(
            "warning: --force: dropped {} event partitions ({first}..{last}) of periods not invoiced yet",
            s.forced_unbilled.len()
        );
    }
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            outln!(
                "dropped {} event rows in {} partitions{}; {} rollup partitions{}",
                s.event_rows,
                s.event_partitions.len(),
                if s.archived.is_empty() {
                    String::new()
                } else {
                    format!(" ({} files archived)", s.archived.len())
                },
                s.rollup_partitions,
                s.commit
                    .map(|c| format!("; commit {c}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// The tenant whose data is removed.
    #[arg(long)]
    pub tenant: String,
    /// Only this user's data (of that tenant).
    #[arg(long)]
    pub user: Option<String>,
    /// Who asks (recorded in the audit log; default $MLK_ACTOR or $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Meter definitions (rollups are brought up to date afterwards).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Print the summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
    /// The configuration file whose `[privacy]` key hashes --user on a pseudonymised lake
    /// (default: data/meterlake.toml if present; `MLK_PSEUDONYM_KEY_FILE` overrides it).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub(crate) fn forget_cmd(a: ForgetArgs) -> anyhow::Result<ExitCode> {
    // A pseudonymised lake holds the user's pseudonym: --user takes the raw id.
    let user = match &a.user {
        Some(u) => Some(crate::lake::privacy::user_in_lake(
            &a.lake,
            super::privacy(a.config.as_deref())?.key()?,
            u,
        )?),
        None => None,
    };
    let s = forget(
        &a.lake,
        &ForgetOptions {
            tenant: a.tenant,
            user,
            actor: a.actor.unwrap_or_else(crate::lake::audit::current_actor),
            meters: a.meters,
        },
    )?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => outln!(
            "removed {} event rows ({} files, {} partitions), {} derived rows ({} files), {} quarantined records, {} logged events ({} log segments), {} stored reports; {} rollups refreshed; commit {}",
            s.event_rows,
            s.event_files,
            s.partitions.len(),
            s.derived_rows,
            s.derived_files.len(),
            s.quarantined,
            s.logged_events,
            s.log_segments.len(),
            s.stored_reports.len(),
            s.rollups_refreshed,
            s.commit
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// The archive folder `retention --archive` wrote.
    #[arg(long)]
    pub archive: PathBuf,
    /// First day to restore (YYYY-MM-DD, inclusive; default: the archive's first).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day to restore (YYYY-MM-DD, inclusive; default: the archive's last).
    #[arg(long)]
    pub to: Option<String>,
    /// Who asks (recorded in the audit log; default $MLK_ACTOR or $USER).
    #[arg(long)]
    pub actor: Option<String>,
    /// Meter definitions (rollups are brought up to date afterwards).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Print the summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub(crate) fn restore_cmd(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let s = crate::job::restore::restore(
        &a.lake,
        &crate::job::restore::RestoreOptions {
            archive: a.archive,
            from: a.from,
            to: a.to,
            actor: a.actor.unwrap_or_else(crate::lake::audit::current_actor),
            meters: a.meters,
        },
    )?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => outln!(
            "restored {} of {} archived events ({} already in the lake, {} of forgotten tenants or users left out) into {} partitions; {} rollups refreshed; {}",
            s.restored,
            s.read,
            s.duplicates,
            s.forgotten,
            s.partitions.len(),
            s.rollups_refreshed,
            s.commit
                .map(|c| format!("commit {c}"))
                .unwrap_or_else(|| "nothing to commit".into())
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
