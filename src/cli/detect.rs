//! `meterlake detect`: flag anomalies in every series of a file, or in every tenant × meter
//! rollup series of a lake (plus user-level abuse patterns over its events).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::table::{Left, Right, Table};
use crate::detect::DetectConfig;
use crate::rollup::{Granularity, Meters};
use crate::stage::anomalies::{self, DetectSpec};

/// Arguments of `detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// A CSV or Parquet file with columns series_id, ts, value (or unique_id, ds, y).
    #[arg(long, conflicts_with = "lake", required_unless_present = "lake")]
    pub series: Option<PathBuf>,
    /// A lake: its tenant × meter rollups (brought up to date first) and its events.
    #[arg(long)]
    pub lake: Option<PathBuf>,
    /// Rollup granularity (with --lake): hour or day.
    #[arg(long, default_value = "hour")]
    pub granularity: Granularity,
    /// Detectors, comma-separated: zscore, robust, seasonal, velocity, pattern. The plain
    /// z-scores (zscore, robust) flag the normal peaks of a series with a daily cycle: add
    /// them for series without one.
    #[arg(long, default_value = "seasonal,velocity,pattern")]
    pub detectors: String,
    /// |z| threshold of the z-score and off-hours detectors.
    #[arg(long, default_value_t = 3.0)]
    pub threshold: f64,
    /// Rise within an hour that counts as a spike, in percent.
    #[arg(long, default_value_t = 500.0)]
    pub spike_percent: f64,
    /// Drop below the expected level that counts, in percent.
    #[arg(long, default_value_t = 90.0)]
    pub drop_percent: f64,
    /// Minimum volume of a spike (and expected level of a drop); on the lake, events per
    /// window, for every series detector.
    #[arg(long, default_value_t = 20.0)]
    pub min_volume: f64,
    /// Trailing window of the rolling and robust z-scores, in points (default: a week, 30
    /// to 1,000).
    #[arg(long)]
    pub window: Option<usize>,
    /// Flags at most this far apart form one incident, reported once (and again only if it
    /// gets more severe): 30m, 6h, 1d, ...; 0 reports every flagged point.
    #[arg(long, default_value = "12h")]
    pub cooldown: String,
    /// Report only flags from this date (YYYY-MM-DD, UTC) or RFC 3339 instant on; earlier
    /// data still warms the detectors up.
    #[arg(long)]
    pub since: Option<String>,
    /// Output file for --series: CSV or Parquet by extension.
    #[arg(long, required_unless_present = "lake")]
    pub out: Option<PathBuf>,
    /// Meter definitions (with --lake).
    #[arg(long)]
    pub meters: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t)]
    pub output: super::Output,
}

/// Runs `detect`.
pub fn run(a: DetectArgs) -> anyhow::Result<ExitCode> {
    check_percents(&a)?;
    let config = DetectConfig {
        threshold: a.threshold,
        spike_ratio: a.spike_percent / 100.0,
        drop_ratio: 1.0 - a.drop_percent / 100.0,
        min_volume: a.min_volume,
        window: a.window,
        cooldown: parse_duration("--cooldown", &a.cooldown)?,
        ..DetectConfig::default()
    }
    .with_detectors(&a.detectors)?;
    let spec = DetectSpec {
        config,
        since: a
            .since
            .as_deref()
            .map(|s| crate::time::parse_instant("--since", s))
            .transpose()?,
        threads: a.threads,
    };
    let s = match (&a.series, &a.lake) {
        (Some(input), _) => {
            let out = a.out.as_deref().expect("clap requires --out with --series");
            anomalies::detect_file(input, out, &spec)?
        }
        (None, Some(lake)) => {
            let meters = Meters::load_or_default(a.meters.as_deref())?;
            anomalies::detect_lake(lake, &meters, a.granularity, &spec)?
        }
        (None, None) => unreachable!("clap requires --series or --lake"),
    };
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            println!(
                "{} series, {} points: {} flagged in {} incidents ({} points reported, {} fraud suspects)",
                s.series, s.points, s.flagged, s.incidents, s.reported, s.fraud_suspects
            );
            let mut severities = Table::bare(&[Left, Right]).indent("  ");
            for k in ["critical", "high", "medium", "low"] {
                if let Some(n) = s.by_severity.get(k) {
                    severities.row(&[&k, n]);
                }
            }
            severities.print()?;
            if !s.top.is_empty() {
                println!("most severe:");
                let mut top = Table::bare(&[Left, Left, Right, Left, Left, Left]).indent("  ");
                for r in &s.top {
                    let why = format!(
                        "{} (observed {:.4}, expected {:.4}, score {:.2}){}{}",
                        r.detectors,
                        r.observed,
                        r.expected,
                        r.score,
                        if r.users.is_empty() {
                            String::new()
                        } else {
                            format!(" users {}", r.users)
                        },
                        if r.fraud_suspect {
                            "  FRAUD SUSPECT"
                        } else {
                            ""
                        },
                    );
                    top.row(&[
                        &r.severity,
                        &"risk",
                        &format!("{:.1}", r.risk),
                        &r.series,
                        &format!("{} .. {}", r.start, r.end),
                        &why,
                    ]);
                }
                top.print()?;
            }
            println!(
                "read {:.2} s, detect {:.2} s, write {:.2} s",
                s.seconds[0], s.seconds[1], s.seconds[2]
            );
            for o in &s.outputs {
                println!("wrote {}", o.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks the percentages in the unit the user typed them in, before they become the
/// library's ratios (whose own check names the `DetectConfig` fields).
fn check_percents(a: &DetectArgs) -> crate::Result<()> {
    if !(a.spike_percent.is_finite() && a.spike_percent > 0.0) {
        return Err(crate::Error::InvalidParameter {
            name: "--spike-percent",
            reason: format!("{} is not a positive percentage", a.spike_percent),
        });
    }
    if !(a.drop_percent > 0.0 && a.drop_percent < 100.0) {
        return Err(crate::Error::InvalidParameter {
            name: "--drop-percent",
            reason: format!("{} is not a percentage in (0, 100)", a.drop_percent),
        });
    }
    Ok(())
}

/// `90s`, `30m`, `6h`, `1d`, `2w` or `0` as µs.
fn parse_duration(name: &'static str, s: &str) -> crate::Result<i64> {
    let s = s.trim();
    let bad = || crate::Error::InvalidParameter {
        name,
        reason: format!("`{s}` is not a duration like 30m, 6h, 1d or 0"),
    };
    if s == "0" {
        return Ok(0);
    }
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?);
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let unit_us = match unit {
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        "d" => 86400e6,
        "w" => 604800e6,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(bad());
    }
    Ok((n * unit_us) as i64)
}
