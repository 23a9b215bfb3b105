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
    /// With --lake: only shard I of N of the tenants (`I/N`, I from 0); N workers together
    /// write the whole tables, each replacing its own tenants' rows.
    #[arg(long, requires = "lake", default_value = "0/1")]
    pub shard: crate::lake::Shard,
    /// Rollup granularity (with --lake): hour or day.
    #[arg(long, default_value = "hour")]
    pub granularity: Granularity,
    /// Detectors, comma-separated: zscore, robust, seasonal, velocity, pattern (pattern
    /// needs a lake's users and business hours, so only with --lake). Default: `seasonal`
    /// for --series, `seasonal,velocity,pattern` for --lake. The plain z-scores (zscore,
    /// robust) flag the normal peaks of a series with a daily cycle: add them for series
    /// without one.
    #[arg(long)]
    pub detectors: Option<String>,
    /// |z| threshold of the z-score and off-hours detectors (default 3.5 for --series, 3
    /// for --lake).
    #[arg(long)]
    pub threshold: Option<f64>,
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
    /// gets more severe): 30m, 6h, 1d, ...; 0 reports every flagged point (default 3h for
    /// --series, 12h for --lake).
    #[arg(long)]
    pub cooldown: Option<String>,
    /// Anomaly likelihood of the seasonal detector: a flag also needs the mean |z| of the
    /// last --likelihood-points to be this improbable (one-sided tail) against the series'
    /// own last four weeks of them; `off` turns it off (default 0.001 for --series, off for
    /// --lake).
    #[arg(long)]
    pub likelihood: Option<String>,
    /// Points in the likelihood's short mean (default 3).
    #[arg(long)]
    pub likelihood_points: Option<usize>,
    /// Seasonal flags on one side for this long (30m, 2h, ...) are a level shift: the
    /// detector re-bases on the new level instead of flagging it until its profile has
    /// learned it; 0 turns it off (default 2h for --series, 0 for --lake).
    #[arg(long)]
    pub level_shift: Option<String>,
    /// A value already seen near the same time of day (±30 min; hourly series ±1 h) in
    /// the last four seasons, give or take this many robust standard deviations, is
    /// routine for the seasonal and spike detectors (a daily job whose start drifts); `off`
    /// turns it off (default 0.25 for --series, off for --lake).
    #[arg(long)]
    pub seen_before: Option<String>,
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

/// A flag that is `off` or a number (None for `off`); its range is checked with the other
/// settings, by [`DetectConfig::validate`].
fn off_or_number(name: &'static str, value: &str, what: &str) -> crate::Result<Option<f64>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| crate::Error::InvalidParameter {
            name,
            reason: format!("`{value}` is neither `off` nor {what}"),
        })
}

/// The settings: the defaults of the input's kind (see [`DetectConfig::series`]), then the
/// flags given.
fn config_of(a: &DetectArgs) -> anyhow::Result<DetectConfig> {
    let base = if a.series.is_some() {
        DetectConfig::series()
    } else {
        DetectConfig::default()
    };
    let mut c = DetectConfig {
        threshold: a.threshold.unwrap_or(base.threshold),
        spike_ratio: a.spike_percent / 100.0,
        drop_ratio: 1.0 - a.drop_percent / 100.0,
        min_volume: a.min_volume,
        window: a.window,
        ..base.clone()
    };
    if let Some(list) = &a.detectors {
        c = c.with_detectors(list)?;
        if a.series.is_some() && c.pattern {
            return Err(crate::Error::InvalidParameter {
                name: "--detectors",
                reason: "`pattern` (off-hours, bots, user bursts) needs a usage lake's users and \
                         business hours: use it with --lake, not --series"
                    .into(),
            }
            .into());
        }
    }
    if let Some(d) = &a.cooldown {
        c.cooldown = parse_duration("--cooldown", d)?;
    }
    if let Some(d) = &a.level_shift {
        c.level_shift = parse_duration("--level-shift", d)?;
    }
    if let Some(x) = &a.seen_before {
        c.seen_before = off_or_number("--seen-before", x, "a margin ≥ 0")?;
    }
    let points = a
        .likelihood_points
        .unwrap_or(base.likelihood.map_or(3, |l| l.0));
    let tail = match &a.likelihood {
        Some(t) => off_or_number("--likelihood", t, "a probability")?,
        None => base.likelihood.map(|(_, p)| p),
    };
    c.likelihood = tail.map(|p| (points, p));
    if a.likelihood_points.is_some() && c.likelihood.is_none() {
        return Err(crate::Error::InvalidParameter {
            name: "--likelihood-points",
            reason: "the likelihood is off: give --likelihood TAIL too".into(),
        }
        .into());
    }
    c.validate()?;
    Ok(c)
}

/// Runs `detect`.
pub fn run(a: DetectArgs) -> anyhow::Result<ExitCode> {
    check_percents(&a)?;
    let config = config_of(&a)?;
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
            let part = crate::stage::tables::Part {
                shard: a.shard,
                ..Default::default()
            };
            anomalies::detect_lake_for(lake, &meters, a.granularity, &spec, part)?
        }
        (None, None) => unreachable!("clap requires --series or --lake"),
    };
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => {
            outln!(
                "{} series, {} points: {} flagged in {} incidents ({} points reported, {} fraud suspects)",
                s.series,
                s.points,
                s.flagged,
                s.incidents,
                s.reported,
                s.fraud_suspects
            )?;
            let mut severities = Table::bare(&[Left, Right]).indent("  ");
            for k in ["critical", "high", "medium", "low"] {
                if let Some(n) = s.by_severity.get(k) {
                    severities.row(&[&k, n]);
                }
            }
            severities.print()?;
            if s.warming > 0 {
                outln!(
                    "  {} points inside the detectors' warm-up (nothing can be flagged there)",
                    s.warming
                )?;
            }
            if !s.top.is_empty() {
                outln!("most severe:")?;
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
            outln!(
                "read {:.2} s, detect {:.2} s, write {:.2} s",
                s.seconds[0],
                s.seconds[1],
                s.seconds[2]
            )?;
            for o in &s.outputs {
                outln!("wrote {}", o.display())?;
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
