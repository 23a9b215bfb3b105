//! `meterlake rollup`: bring a rollup of the lake up to date.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::lake::Lake;
use crate::rollup::{self, Dim, Granularity, Meters, RollupOptions, RollupSpec, Zone};

/// Arguments of `rollup`.
#[derive(Debug, Args)]
pub struct RollupArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// Window length.
    #[arg(long, value_enum)]
    pub granularity: Granularity,
    /// Break down by `user` or `property:KEY` (repeatable).
    #[arg(long = "by")]
    pub by: Vec<String>,
    /// Only recompute windows from this date (YYYY-MM-DD, UTC) or RFC 3339 instant.
    #[arg(long)]
    pub from: Option<String>,
    /// ... up to this date or instant (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Cut windows in this IANA time zone (default UTC).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Meter definitions (default data/meters.toml if present, else the built-in set).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Recompute everything instead of what changed since the last run.
    #[arg(long)]
    pub full: bool,
    /// Compute only shard I of N of the tenants (`I/N`, I from 0, e.g. a Kubernetes Indexed
    /// Job's `$JOB_COMPLETION_INDEX/N`); N workers together write the whole rollup. A rollup
    /// stored in another number of shards is switched to N (`0/1`: back to unsharded).
    /// Without it, every shard of the layout the rollup is stored in, one after the other.
    #[arg(long)]
    pub shard: Option<crate::lake::Shard>,
    /// Result as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

/// The rollup spec, options and meters a command line asks for.
pub(crate) fn spec_of(
    granularity: Granularity,
    by: &[String],
    tz: &str,
) -> anyhow::Result<RollupSpec> {
    let by: Vec<Dim> = by.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    // Before anything is created: one breakdown twice would be two equal key columns.
    if let Some((i, d)) = by.iter().enumerate().find(|(i, d)| by[..*i].contains(d)) {
        return Err(crate::error::Error::InvalidParameter {
            name: "--by",
            reason: format!(
                "`{}` is given twice (occurrences {} and {})",
                d,
                by.iter().position(|x| x == d).unwrap_or(0) + 1,
                i + 1
            ),
        }
        .into());
    }
    let zone: Zone = tz.parse()?;
    Ok(RollupSpec::new(granularity).with_by(by).with_zone(zone))
}

pub(crate) fn run(a: RollupArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_of(a.granularity, &a.by, &a.tz)?;
    let meters = Meters::load_or_default(a.meters.as_deref())?;
    let opts = RollupOptions {
        full: a.full,
        from: a
            .from
            .as_deref()
            .map(|s| crate::time::parse_instant("--from", s))
            .transpose()?,
        to: a
            .to
            .as_deref()
            .map(|s| crate::time::parse_instant("--to", s))
            .transpose()?,
        shard: a.shard,
    };
    let lake = Lake::open(&a.lake)?;
    let s = rollup::rollup(&lake, &meters, &spec, &opts)?;
    if !s.unconfigured_meters.is_empty() {
        tracing::warn!(
            "meters without a definition, rolled up with `sum`: {}",
            s.unconfigured_meters.join(", ")
        );
    }
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => outln!(
            "{:?} rollup {} at lake commit {}: {} partitions written ({} rows, {} zero-filled, {} series), {} removed",
            s.mode,
            s.dir.display(),
            s.lake_seq,
            s.partitions_written,
            s.rows_written,
            s.zero_rows,
            s.series,
            s.partitions_removed
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
