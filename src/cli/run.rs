//! `meterlake run`: the configured batch job. Flags override the environment, which
//! overrides the configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::table::{Left, Right, Table};
use crate::config::Config;
use crate::job::run::{RunOptions, run as run_job};
use crate::report::{Format, ReportKind};

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// `meterlake init DIR`: the shipped configuration, catalogue, meters and example tenants,
/// to edit.
pub fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    for f in crate::config::Config::init(&a.dir, a.force)? {
        outln!("wrote {}", f.display())?;
    }
    outln!(
        "edit them, put event files in {}, then run `meterlake run` in {}",
        a.dir.join("data/events").display(),
        a.dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (default: data/meterlake.toml if present, else built-in
    /// defaults that read data/ and write ./out).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input files or directories (repeatable; replaces the configured ones).
    #[arg(long = "input")]
    pub inputs: Vec<PathBuf>,
    /// The lake.
    #[arg(long)]
    pub lake: Option<PathBuf>,
    /// Where invoices and reports go.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The plan catalogue.
    #[arg(long)]
    pub plans: Option<PathBuf>,
    /// Tenant assignments.
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// Ingest the inputs (true/false).
    #[arg(long)]
    pub tracking: Option<bool>,
    /// Days of events kept (0: all).
    #[arg(long)]
    pub events_retention_days: Option<u32>,
    /// Days of rollups kept (0: all).
    #[arg(long)]
    pub metrics_retention_days: Option<u32>,
    /// Forecast model (auto, ses, holt, ...).
    #[arg(long)]
    pub model: Option<String>,
    /// Days forecast.
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Anomaly |z| threshold.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Hard caps block (true/false).
    #[arg(long)]
    pub enforcement: Option<bool>,
    /// Raise and send alerts (true/false).
    #[arg(long)]
    pub notifications: Option<bool>,
    /// Report kinds (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<ReportKind>,
    /// Report formats (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub formats: Vec<Format>,
    /// Recompute forecasts, anomalies and reports even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Print the effective configuration (after environment and flags) and stop.
    #[arg(long)]
    pub print_config: bool,
    /// Summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

impl RunArgs {
    fn apply(&self, c: &mut Config) {
        if !self.inputs.is_empty() {
            c.paths.inputs = self.inputs.clone();
        }
        let set = |dst: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *dst = v.clone();
            }
        };
        set(&mut c.paths.lake, &self.lake);
        set(&mut c.paths.out, &self.out);
        set(&mut c.paths.plans, &self.plans);
        set(&mut c.paths.tenants, &self.tenants);
        if let Some(v) = self.tracking {
            c.tracking.enabled = v;
        }
        if let Some(v) = self.events_retention_days {
            c.tracking.events_retention_days = Some(v);
        }
        if let Some(v) = self.metrics_retention_days {
            c.tracking.metrics_retention_days = Some(v);
        }
        if let Some(v) = &self.model {
            c.forecast.model = v.clone();
        }
        if let Some(v) = self.horizon {
            c.forecast.horizon = v;
        }
        if let Some(v) = self.threshold {
            c.anomalies.threshold = v;
        }
        if let Some(v) = self.enforcement {
            c.limits.enforcement_enabled = v;
        }
        if let Some(v) = self.notifications {
            c.limits.notification_enabled = v;
        }
        if !self.kinds.is_empty() {
            c.reports.kinds = self.kinds.clone();
        }
        if !self.formats.is_empty() {
            c.reports.formats = self.formats.clone();
        }
    }
}

pub(crate) fn run(a: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut c = Config::load(a.config.as_deref())?;
    c.apply_env(|k| std::env::var(k).ok())?;
    a.apply(&mut c);
    c.validate()?;
    if a.print_config {
        out!("{}", toml::to_string(&c)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = run_job(
        &c,
        &RunOptions {
            progress: !quiet,
            force: a.force,
        },
    )?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            outln!(
                "run finished in {:.1} s: {} events from {} tenants in the lake ({} read this run: {} accepted, {} rejected, {} duplicates); {} anomaly incidents; {} alerts raised ({} delivered); {} quotas over their allowance; {} report files",
                s.seconds,
                s.events,
                s.tenants,
                s.read,
                s.accepted,
                s.rejected,
                s.duplicates,
                s.anomalies,
                s.alerts_raised,
                s.alerts_delivered,
                s.quotas_exceeded,
                s.reports.len()
            )?;
            let mut stages = Table::bare(&[Left, Right, Left]).indent("  ");
            for st in &s.stages {
                stages.row(&[&st.stage, &format!("{:.2} s", st.seconds), &st.note]);
            }
            stages.print()?;
            if let Some(i) = &s.invoices {
                outln!("invoices: {}", i.display())?;
            }
            if !s.reports.is_empty() {
                outln!("reports: {}", c.paths.out.join("reports").display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
