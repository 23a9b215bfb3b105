//! `meterlake lake stats`, `lake verify-audit`, `lake rekey` and `meterlake compact`.

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
    /// Rewrites every Parquet file of the lake under a new encryption key (or encrypts a
    /// plain lake), each file atomically; then points the configuration at the key. The
    /// current key comes from the configuration or MLK_ENCRYPTION_KEY_FILE. Killed midway,
    /// it is finished by running it again: every file is readable with one of the two keys.
    Rekey {
        /// The lake directory.
        #[arg(long)]
        lake: PathBuf,
        /// The new key: one base64 line of 16 or 32 bytes (`openssl rand -base64 32`).
        #[arg(long)]
        new_key_file: PathBuf,
        /// The configuration holding the current key, pointed at the new one afterwards
        /// (default: data/meterlake.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
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
            Some(c) => outln!(
                "commit {c}: {} partitions compacted, files {} -> {}, {} rows rewritten, {} key files merged",
                s.partitions.len(),
                s.files_before,
                s.files_after,
                s.rows,
                s.key_files_merged
            )?,
            None => outln!("nothing to compact ({} files)", s.files_before)?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(c: LakeCommand) -> anyhow::Result<ExitCode> {
    match c {
        LakeCommand::Rekey {
            lake,
            new_key_file,
            config,
            output,
        } => {
            Lake::open(&lake)?;
            let new = lake::crypto::Key::from_file(&new_key_file)?;
            let s = crate::job::rekey::rekey(&lake, new, lake::crypto::read_keys())?;
            // The configuration in use points at the new key from now on.
            let file = config.or_else(|| {
                let d = std::path::PathBuf::from(crate::config::DEFAULT_CONFIG_FILE);
                d.is_file().then_some(d)
            });
            let pointed = match &file {
                Some(f) => {
                    let abs = std::fs::canonicalize(&new_key_file).unwrap_or(new_key_file.clone());
                    crate::job::rekey::point_config_at(f, &abs).map_err(|e| {
                        anyhow::anyhow!(
                            "the lake is now encrypted with key {} ({}), but {} could not be pointed at it: {e}; \
                             set security.encryption_key_file there (or {}) to {} by hand",
                            s.key_id,
                            abs.display(),
                            f.display(),
                            lake::crypto::KEY_FILE_ENV,
                            abs.display()
                        )
                    })?;
                    format!("{} now names {}", f.display(), abs.display())
                }
                None => format!(
                    "no configuration file: set {}={}",
                    lake::crypto::KEY_FILE_ENV,
                    new_key_file.display()
                ),
            };
            if std::env::var_os(lake::crypto::KEY_FILE_ENV).is_some() {
                eprintln!(
                    "note: {} is set and overrides the configuration: point it at {}",
                    lake::crypto::KEY_FILE_ENV,
                    new_key_file.display()
                );
            }
            match output {
                super::Output::Json => super::print_json(&s)?,
                super::Output::Table => outln!(
                    "{} of {} Parquet files rewritten under key {} ({} rows; {} already under it; before: {}); {pointed}",
                    s.rewritten,
                    s.files,
                    s.key_id,
                    s.rows,
                    s.already,
                    if s.previous.is_empty() {
                        "-".to_string()
                    } else {
                        s.previous.join(", ")
                    }
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        LakeCommand::VerifyAudit { lake, output } => {
            // The lake must be one (opening it says why not).
            Lake::open(&lake)?;
            let v = lake::access::verify(&lake)?;
            match output {
                super::Output::Json => super::print_json(&v)?,
                super::Output::Table => match &v.broken {
                    None => outln!("access log: {} records, chain intact", v.lines)?,
                    Some((line, why)) => outln!(
                        "access log BROKEN at line {line} of {}/{}/access.jsonl: {why}",
                        lake.display(),
                        lake::access::DIR
                    )?,
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
