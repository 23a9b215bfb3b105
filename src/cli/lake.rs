//! `meterlake lake stats`, `lake verify-audit` and `meterlake compact`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::table::{Left, Right, Table};
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
    /// Checks the access log's hash chain (`LAKE/_audit/access.jsonl`): a removed, altered,
    /// inserted or cut-off line is reported with its line number, and the exit code is 1.
    VerifyAudit {
        /// The lake directory.
        #[arg(long)]
        lake: PathBuf,
        /// Result as a line of text or one JSON object.
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
                "commit {c}: {} partitions compacted, files {} -> {}, {} rows rewritten, {} key files merged",
                s.partitions.len(),
                s.files_before,
                s.files_after,
                s.rows,
                s.key_files_merged
            ),
            None => println!("nothing to compact ({} files)", s.files_before),
        },
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(c: LakeCommand) -> anyhow::Result<ExitCode> {
    match c {
        LakeCommand::VerifyAudit { lake, output } => {
            // The lake must be one (opening it says why not).
            Lake::open(&lake)?;
            let v = lake::access::verify(&lake)?;
            match output {
                super::Output::Json => super::print_json(&v)?,
                super::Output::Table => match &v.broken {
                    None => println!("access log: {} records, chain intact", v.lines),
                    Some((line, why)) => println!(
                        "access log BROKEN at line {line} of {}/{}/access.jsonl: {why}",
                        lake.display(),
                        lake::access::DIR
                    ),
                },
            }
            Ok(if v.broken.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        LakeCommand::Stats { lake, output } => {
            let l = Lake::open(&lake)?;
            let s = lake::stats(&l)?;
            match output {
                super::Output::Json => super::print_json(&s)?,
                super::Output::Table => {
                    let mut o = std::io::stdout().lock();
                    let dash = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
                    let n = &s.ingested;
                    let mut facts = Table::bare(&[Left, Left]);
                    facts
                        .row(&[&"lake", &lake.display()])
                        .row(&[&"commits", &s.commits])
                        .row(&[
                            &"partitions",
                            &format!(
                                "{} ({} .. {})",
                                s.partitions,
                                dash(&s.first_date),
                                dash(&s.last_date)
                            ),
                        ])
                        .row(&[&"files", &s.files])
                        .row(&[&"rows", &s.rows])
                        .row(&[&"bytes", &s.bytes])
                        .row(&[
                            &"events",
                            &format!("{} .. {}", dash(&s.min_ts), dash(&s.max_ts)),
                        ])
                        .row(&[&"tenants", &s.tenants])
                        .row(&[
                            &"ingested",
                            &format!(
                                "read {} = accepted {} + rejected {} + duplicates {}",
                                n.read, n.accepted, n.rejected, n.duplicates
                            ),
                        ]);
                    facts.write(&mut o)?;
                    let mut meters = Table::new(&[
                        ("meter", Left),
                        ("rows", Right),
                        ("value_sum", Right),
                        ("tenants", Right),
                    ]);
                    for m in &s.meters {
                        let sum = format!("{:.1}", m.value_sum);
                        meters.row(&[&m.meter, &m.rows, &sum, &m.tenants]);
                    }
                    meters.write(&mut o)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
