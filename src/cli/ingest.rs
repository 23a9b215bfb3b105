//! `meterlake ingest FILE... --lake DIR`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use meterlake_ingest::{Format, IngestOptions, Limits};

use super::table::{Left, Right, Table};

use crate::ingest as meterlake_ingest;

/// Arguments of `ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Input files or directories (NDJSON, CSV, CloudEvents JSON, Parquet; `.gz` allowed).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The lake directory (created if missing).
    #[arg(long)]
    pub lake: PathBuf,
    /// Input format; `auto` detects it per file from the extension, then the content.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Result as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
    /// Dedup lookback: an event is a duplicate of one in the lake within this many days.
    #[arg(long, default_value_t = meterlake_ingest::DEFAULT_LOOKBACK_DAYS)]
    pub lookback_days: u32,
    /// Earliest accepted event time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, default_value = "2000-01-01")]
    pub min_ts: String,
    /// How far in the future an event may be, in hours (clock skew tolerance; at most 10 years).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=87_600))]
    pub max_future_hours: u32,
    /// Memory for buffered events before they are flushed to Parquet, in MiB.
    #[arg(long, default_value_t = meterlake_ingest::DEFAULT_MEMORY_BUDGET_MB as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget_mb: u64,
    /// Memory for the dedup index's in-memory keys, in MiB (128 MiB hold 3.7 M keys); beyond
    /// it keys spill to sorted runs on disk, ~2 bytes each in memory.
    #[arg(long, default_value_t = meterlake_ingest::DEFAULT_DEDUP_MEMORY_MB as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_memory_mb: u64,
    /// The configuration file whose `[privacy]` applies (default: data/meterlake.toml if
    /// present); `MLK_PSEUDONYMISE_USERS` and `MLK_PSEUDONYM_KEY_FILE` override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Parses `2026-01-01` or an RFC 3339 instant to µs.
pub(crate) fn parse_instant(s: &str, name: &str) -> anyhow::Result<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(crate::time::day_of_date(d) as i64 * crate::time::MICROS_PER_DAY);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .with_context(|| format!("invalid {name}: {s:?} is neither YYYY-MM-DD nor RFC 3339"))
}

pub(crate) fn run(a: IngestArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let now = crate::time::now();
    let limits = Limits {
        min_ts: parse_instant(&a.min_ts, "--min-ts")?,
        max_ts: now + a.max_future_hours as i64 * 3_600_000_000,
        pseudonym: super::privacy(a.config.as_deref())?.pseudonymiser()?,
    };
    let opts = IngestOptions {
        format: a.format,
        limits,
        lookback_days: a.lookback_days,
        memory_budget_mb: usize::try_from(a.memory_budget_mb).unwrap_or(usize::MAX),
        dedup_memory_mb: usize::try_from(a.dedup_memory_mb).unwrap_or(usize::MAX),
        progress: !quiet,
    };
    let s = meterlake_ingest::ingest(&a.lake, &a.inputs, &opts)?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            let mut out = std::io::stdout().lock();
            let mut inputs = Table::bare(&[
                Left, Right, Left, Right, Left, Right, Left, Right, Left, Right,
            ]);
            for i in &s.inputs {
                let c = &i.counts;
                inputs.row(&[
                    &i.path,
                    &i.format,
                    &"read",
                    &c.read,
                    &"accepted",
                    &c.accepted,
                    &"rejected",
                    &c.rejected,
                    &"duplicates",
                    &c.duplicates,
                ]);
            }
            inputs.write(&mut out)?;
            let mut skipped = Table::bare(&[Left, Left]);
            for k in &s.skipped {
                let why = format!("skipped: already ingested by commit {}", k.commit);
                skipped.row(&[&k.path, &why]);
            }
            skipped.write(&mut out)?;
            writeln!(
                out,
                "read {} = accepted {} + rejected {} + duplicates {}",
                s.read, s.accepted, s.rejected, s.duplicates
            )?;
            if let Some(c) = s.commit {
                let span = match (s.partitions.first(), s.partitions.last()) {
                    (Some(a), Some(b)) => format!(" ({a} .. {b})"),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "commit {c}: {} partitions touched{span}",
                    s.partitions.len()
                )?;
            }
            if let Some(q) = &s.quarantine {
                writeln!(out, "quarantine: {q}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
