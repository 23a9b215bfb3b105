//! `meterlake lake stats` and `meterlake compact`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::lake::{self, Lake};

/// `lake` subcommands.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Partitions, files, rows, bytes, date range, tenants and meters of a lake.
    Stats {
        /// The lake directory.
        #[arg(long)]
        lake: PathBuf,
        /// Result as a table or one JSON object.
        #[arg(long, value_enum, default_value_t = super::Output::Table)]
        output: super::Output,
    },
}

/// Arguments of `compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The lake directory.
    #[arg(long)]
    pub lake: PathBuf,
    /// Compact a partition once it holds at least this many files.
    #[arg(long, default_value_t = 2)]
    pub min_files: usize,
    /// Only these partitions (YYYY-MM-DD); default all.
    #[arg(long = "partition")]
    pub partitions: Vec<String>,
    /// Result as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub(crate) fn compact(a: CompactArgs) -> anyhow::Result<ExitCode> {
    let mut lake = Lake::open(&a.lake)
        .map(|_| ())
        .and_then(|_| Lake::open_for_write(&a.lake))?;
    let s = lake::compact(&mut lake, a.min_files, &a.partitions)?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => match s.commit {
            Some(c) => println!(
                "commit {c}: {} partitions compacted, files {} -> {}, {} rows rewritten",
                s.partitions.len(),
                s.files_before,
                s.files_after,
                s.rows
            ),
            None => println!("nothing to compact ({} files)", s.files_before),
        },
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(c: LakeCommand) -> anyhow::Result<ExitCode> {
    match c {
        LakeCommand::Stats { lake, output } => {
            let l = Lake::open(&lake)?;
            let s = lake::stats(&l)?;
            match output {
                super::Output::Json => super::print_json(&s)?,
                super::Output::Table => {
                    let mut o = std::io::stdout().lock();
                    writeln!(o, "lake        {}", lake.display())?;
                    writeln!(o, "commits     {}", s.commits)?;
                    writeln!(
                        o,
                        "partitions  {} ({} .. {})",
                        s.partitions,
                        s.first_date.as_deref().unwrap_or("-"),
                        s.last_date.as_deref().unwrap_or("-")
                    )?;
                    writeln!(o, "files       {}", s.files)?;
                    writeln!(o, "rows        {}", s.rows)?;
                    writeln!(o, "bytes       {}", s.bytes)?;
                    writeln!(
                        o,
                        "events      {} .. {}",
                        s.min_ts.as_deref().unwrap_or("-"),
                        s.max_ts.as_deref().unwrap_or("-")
                    )?;
                    writeln!(o, "tenants     {}", s.tenants)?;
                    writeln!(
                        o,
                        "ingested    read {} = accepted {} + rejected {} + duplicates {}",
                        s.ingested.read,
                        s.ingested.accepted,
                        s.ingested.rejected,
                        s.ingested.duplicates
                    )?;
                    writeln!(
                        o,
                        "{:<20} {:>12} {:>20} {:>8}",
                        "meter", "rows", "value_sum", "tenants"
                    )?;
                    for m in &s.meters {
                        writeln!(
                            o,
                            "{:<20} {:>12} {:>20.1} {:>8}",
                            m.meter, m.rows, m.value_sum, m.tenants
                        )?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
