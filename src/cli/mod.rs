//! The command-line face: parses arguments, calls the library, prints results.
//!
//! Data goes to stdout, progress and logs to stderr. Exit codes: 0 success, 2 error
//! (one readable line on stderr naming the file, line, field or parameter).
//!
//! One file per command group. Tables and aligned lists print through `cli::table`; the
//! library's named enums (granularity, model, formats, ...) get their clap parsers in
//! `cli::values`, so clap stays out of the library.

/// `println!` to stdout that returns the write's error instead of panicking: a closed
/// pipe (`| head`) then ends the command quietly (see [`main`]).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)
    }};
}

/// `print!` to stdout, as [`outln`].
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($t)*)
    }};
}

mod alerts;
mod billing;
mod detect;
mod export;
mod forecast;
mod generate;
mod ingest;
mod lake;
mod remote;
mod report;
mod rollup;
mod run;
mod serve;
mod table;
mod usage;
mod values;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// meterlake: usage events → a Parquet lake → rollups, forecasts, anomalies, bills, reports.
#[derive(Debug, Parser)]
#[command(name = "meterlake", version, about, long_about = None)]
pub struct Cli {
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, deduplicate and commit usage events into the lake.
    Ingest(ingest::IngestArgs),
    /// Write realistic synthetic usage events (with labelled anomalies).
    Generate(generate::GenerateArgs),
    /// Merge each partition's small files into one (same rows, atomically).
    Compact(lake::CompactArgs),
    /// Aggregate the lake per tenant, meter (and user or property) and window.
    Rollup(rollup::RollupArgs),
    /// Forecast series from a file or the lake's rollups (auto picks a model per series).
    Forecast(forecast::ForecastArgs),
    /// Flag anomalies and abuse in series from a file or the lake (risk scores, incidents).
    Detect(detect::DetectArgs),
    /// Usage per tenant and meter over a period: totals, breakdown with shares, change.
    Usage(usage::UsageArgs),
    /// Active users (DAU/WAU/MAU), inactive users, feature adoption, documents and storage.
    Engagement(usage::EngagementArgs),
    /// Per tenant and meter: usage in the current period against the plan, status, overage
    /// cost so far, and the period's end projected from a forecast.
    Quota(billing::QuotaArgs),
    /// May a tenant consume Q more now? JSON answer; exit 0 allowed, 3 blocked.
    Check(billing::CheckArgs),
    /// A period's invoices: lines per meter, base fee, total (exact decimals).
    Invoice(billing::InvoiceArgs),
    /// Compare plans for a tenant; list upgrade candidates.
    #[command(subcommand)]
    Plans(billing::PlansCommand),
    /// Raise, list, acknowledge and deliver alerts (thresholds, limits, cost, anomalies).
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Export usage for other systems (Stripe meter events).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Write a report (summary, detailed, forecast, anomaly, executive, compliance) as JSON,
    /// CSV, Markdown, HTML, XLSX, PDF or Parquet.
    Report(report::ReportArgs),
    /// Drop or archive expired event and rollup partitions (recorded in the audit log).
    Retention(report::RetentionArgs),
    /// Remove a tenant's or a user's data from the lake and every derived output (audited).
    Forget(report::ForgetArgs),
    /// Bring archived event partitions (`retention --archive`) back into the lake, in one
    /// audited commit, skipping events already there; rollups of those days are recomputed.
    Restore(report::RestoreArgs),
    /// The batch job: ingest, rollups, forecasts, anomalies, quotas and alerts, invoices,
    /// reports, as configured (meterlake.toml, environment, flags).
    Run(run::RunArgs),
    /// Write editable copies of meterlake.toml, plans.toml, meters.toml and an example
    /// tenants.csv under DIR/data/ (what `meterlake run` in DIR reads).
    Init(run::InitArgs),
    /// The HTTP API: tracking, quota checks and analytics (axum).
    Serve(serve::ServeArgs),
    /// API keys of the HTTP API.
    #[command(subcommand, name = "serve-keys")]
    ServeKeys(serve::KeysCommand),
    /// Inspect the lake.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
}

/// Who reads a tenant's data, for the lake's access log ([`crate::lake::access`]).
#[derive(Debug, Clone, clap::Args, Default)]
pub struct Reader {
    /// Who reads (recorded in the lake's access log, LAKE/_audit/; default $MLK_ACTOR or
    /// $USER).
    #[arg(long)]
    pub actor: Option<String>,
}

impl Reader {
    /// Records the read before it happens; a read that cannot be recorded does not happen.
    pub(crate) fn record(
        &self,
        lake: &std::path::Path,
        tenant: Option<&str>,
        what: &str,
    ) -> anyhow::Result<()> {
        // Not a lake (yet): nothing of a tenant can be read, and the command says why.
        if !lake.join(crate::lake::LOG_DIR).is_dir() {
            return Ok(());
        }
        let actor = self
            .actor
            .clone()
            .unwrap_or_else(crate::lake::audit::current_actor);
        crate::lake::access::record(
            lake,
            crate::lake::access::Read {
                actor: &actor,
                via: "cli",
                key_id: None,
                tenant: tenant.unwrap_or("*"),
                what,
            },
        )?;
        Ok(())
    }
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable table.
    #[default]
    Table,
    /// One JSON object.
    Json,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MLK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_target(false)
        .init();
    // The encryption key, from the command's configuration (or data/meterlake.toml) and
    // the environment, before anything reads or writes a Parquet file.
    if !matches!(cli.command, Command::Init(_))
        && let Err(e) = encryption_key(cli.command.config())
    {
        eprintln!("error: {}", error_line(&e));
        return ExitCode::from(2);
    }
    let result = match remote::lake_of(&cli.command, &mut argv) {
        Ok(None) => dispatch(cli.command, cli.quiet),
        Ok(Some((url, at))) => remote::on_mirror(&url, argv, at, cli.quiet),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout pipe (`| head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", error_line(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: an error that already ends with
/// its cause's words (`FILE: No such file or directory`) does not repeat them.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.ends_with(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line
}

/// Runs a parsed command.
fn dispatch(command: Command, quiet: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ingest(a) => ingest::run(a, quiet),
        Command::Generate(a) => generate::run(a),
        Command::Compact(a) => lake::compact(a),
        Command::Lake(c) => lake::run(c),
        Command::Rollup(a) => rollup::run(a),
        Command::Usage(a) => usage::run(a),
        Command::Forecast(a) => forecast::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Engagement(a) => usage::engagement(a),
        Command::Quota(a) => billing::quota(a),
        Command::Check(a) => billing::check_cmd(a),
        Command::Invoice(a) => billing::invoice(a),
        Command::Plans(c) => billing::plans(c),
        Command::Alerts(c) => alerts::run(c),
        Command::Export(c) => export::run(c),
        Command::Report(a) => report::run(a),
        Command::Retention(a) => report::retention_cmd(a),
        Command::Forget(a) => report::forget_cmd(a),
        Command::Restore(a) => report::restore_cmd(a),
        Command::Run(a) => run::run(a, quiet),
        Command::Init(a) => run::init(a),
        Command::Serve(a) => serve::run(a, None),
        Command::ServeKeys(c) => serve::keys(c),
    }
}

impl Command {
    /// The configuration file the command was given with --config, if it takes one.
    fn config(&self) -> Option<&std::path::Path> {
        match self {
            Command::Ingest(a) => a.config.as_deref(),
            Command::Run(a) => a.config.as_deref(),
            Command::Serve(a) => a.config.as_deref(),
            Command::Forget(a) => a.config.as_deref(),
            Command::Export(export::ExportCommand::Data(a)) => a.config.as_deref(),
            Command::Alerts(alerts::AlertsCommand::Deliver(a)) => a.config.as_deref(),
            Command::Lake(lake::LakeCommand::Rekey { config, .. }) => config.as_deref(),
            _ => None,
        }
    }
}

/// Loads the configured encryption key (`[security]`, `MLK_ENCRYPTION_KEY_FILE`) as the
/// process's key: every Parquet file written is encrypted with it, and encrypted files
/// are read with it.
fn encryption_key(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut c = crate::config::Config::load(config)?;
    c.apply_env(|k| std::env::var(k).ok())?;
    c.security.install()?;
    Ok(())
}

/// Prints rows as CSV with a header on stdout.
pub(crate) fn write_csv<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

/// The `[privacy]` settings of the configuration file given (else data/meterlake.toml if
/// present), with the environment applied: for commands that take no other setting from
/// it (`ingest`, `forget`, `export data`).
pub(crate) fn privacy(
    config: Option<&std::path::Path>,
) -> anyhow::Result<crate::config::PrivacyConf> {
    let mut c = crate::config::Config::load(config)?;
    c.apply_env(|k| std::env::var(k).ok())?;
    Ok(c.privacy)
}

/// Prints a serialisable value as one JSON line on stdout.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
