//! Meter definitions: which events a meter reads and how a window of them becomes one number.
//!
//! Meters live in a TOML file (default `data/meters.toml`):
//!
//! ```toml
//! [[meter]]
//! name = "api_calls"            # the rollup's meter name
//! display_name = "API calls"
//! unit = "calls"
//! aggregation = "count"         # count|sum|max|min|avg|unique_count|latest|duration|p50|p95|p99
//! # event = "api_calls"         # which events' `meter` it reads (default: name)
//! # property = "response_time_ms"  # read this property instead of `value`
//! ```
//!
//! A meter reads the events whose `meter` field equals its `event` (default: its name), so
//! one kind of event can feed several meters (`api_calls` counted, and its
//! `response_time_ms` as p95 latency). An event whose meter no definition reads is rolled
//! up with `sum` (see [`Meters::unconfigured`]).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The default meter file, relative to the working directory.
pub const DEFAULT_METERS_FILE: &str = "data/meters.toml";

/// How the events of one window become the window's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Number of events.
    Count,
    /// Sum of values.
    Sum,
    /// Largest value.
    Max,
    /// Smallest value.
    Min,
    /// Mean value.
    Avg,
    /// Distinct `user_id`s, or distinct values of `property` when set (nulls not counted).
    UniqueCount,
    /// The value of the window's last event by `ts` (gauges such as storage); ties are
    /// broken by the larger value, so the result does not depend on file order.
    Latest,
    /// Sum of durations, in seconds (the value, or `property`, scaled by `duration_unit`).
    Duration,
    /// Median (linear interpolation between order statistics, as DuckDB's `quantile_cont`).
    P50,
    /// 95th percentile (linear interpolation).
    P95,
    /// 99th percentile (linear interpolation).
    P99,
}

impl Aggregation {
    /// Whether a window without events has the value 0 (counts, sums, distinct counts), so
    /// complete series get explicit zero rows. Gauges and order statistics have no value
    /// for an empty window, so they get no row.
    pub fn zero_when_empty(self) -> bool {
        matches!(
            self,
            Aggregation::Count
                | Aggregation::Sum
                | Aggregation::Duration
                | Aggregation::UniqueCount
        )
    }

    /// Whether values of sub-windows add up to the value of the whole window.
    pub fn additive(self) -> bool {
        matches!(
            self,
            Aggregation::Count | Aggregation::Sum | Aggregation::Duration
        )
    }

    /// The quantile of a percentile aggregation.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Aggregation::P50 => Some(0.5),
            Aggregation::P95 => Some(0.95),
            Aggregation::P99 => Some(0.99),
            _ => None,
        }
    }

    /// The name used in the TOML file.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::Avg => "avg",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::Latest => "latest",
            Aggregation::Duration => "duration",
            Aggregation::P50 => "p50",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
        }
    }
}

/// Unit of the numbers a `duration` meter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurationUnit {
    /// Milliseconds.
    Ms,
    /// Seconds (the default).
    #[default]
    S,
    /// Minutes.
    Min,
    /// Hours.
    H,
}

impl DurationUnit {
    /// Seconds per unit.
    pub fn seconds(self) -> f64 {
        match self {
            DurationUnit::Ms => 0.001,
            DurationUnit::S => 1.0,
            DurationUnit::Min => 60.0,
            DurationUnit::H => 3600.0,
        }
    }
}

/// One meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// Name in rollups, forecasts and plans.
    pub name: String,
    /// Name for people (reports).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Unit of the aggregated value (`calls`, `bytes`, `tokens`, `users`, `s`, `ms`).
    #[serde(default)]
    pub unit: Option<String>,
    /// How a window's events become its value.
    pub aggregation: Aggregation,
    /// The events it reads: those whose `meter` field is this (default: `name`).
    #[serde(default)]
    pub event: Option<String>,
    /// Read this property of the events instead of `value` (numbers; strings for
    /// `unique_count`). Events without it are skipped by the aggregation but still counted
    /// in `event_count`.
    #[serde(default)]
    pub property: Option<String>,
    /// Unit of the numbers a `duration` meter reads (default seconds).
    #[serde(default)]
    pub duration_unit: DurationUnit,
}

impl Meter {
    /// A meter reading events of its own name.
    pub fn new(name: &str, aggregation: Aggregation) -> Meter {
        Meter {
            name: name.to_string(),
            display_name: None,
            unit: None,
            aggregation,
            event: None,
            property: None,
            duration_unit: DurationUnit::S,
        }
    }

    /// The event meter name it reads.
    pub fn event(&self) -> &str {
        self.event.as_deref().unwrap_or(&self.name)
    }

    /// Name for people: the display name, else the name.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterFile {
    #[serde(default)]
    meter: Vec<Meter>,
}

/// The configured meters.
#[derive(Debug, Clone, PartialEq)]
pub struct Meters {
    meters: Vec<Meter>,
}

impl Default for Meters {
    /// The generator's meters: api_calls (count), storage_bytes (latest), documents (count),
    /// ai_tokens (sum), ingest_bytes (sum), active_users (unique_count of user_id).
    fn default() -> Self {
        Meters::from_toml(DEFAULT_METERS_TOML, Path::new("<built-in meters>"))
            .expect("built-in meters parse")
    }
}

/// The built-in definitions (the same as the shipped `data/meters.toml`).
pub const DEFAULT_METERS_TOML: &str = include_str!("../../data/meters.toml");

impl Meters {
    /// Validated meters. Names must be unique, non-empty and safe as column values.
    pub fn new(meters: Vec<Meter>) -> Result<Meters> {
        let mut seen = BTreeSet::new();
        for m in &meters {
            let bad = |reason: String| Error::InvalidParameter {
                name: "meter",
                reason,
            };
            if m.name.trim().is_empty() {
                return Err(bad("a meter has an empty name".into()));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(bad(format!("meter `{}` is defined twice", m.name)));
            }
            if m.event().trim().is_empty() {
                return Err(bad(format!("meter `{}` has an empty event", m.name)));
            }
            if let Some(p) = &m.property
                && (p.is_empty() || p.contains(['"', '\\', '.', '[', ']']))
            {
                return Err(bad(format!(
                    "meter `{}`: property `{p}` must be a plain key (no quotes, dots or brackets)",
                    m.name
                )));
            }
            if m.aggregation == Aggregation::Count && m.property.is_some() {
                return Err(bad(format!(
                    "meter `{}`: `count` counts events and reads no property",
                    m.name
                )));
            }
        }
        Ok(Meters { meters })
    }

    /// Parses a meter file's text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Meters> {
        let f: MeterFile = toml::from_str(text).map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })?;
        Meters::new(f.meter).map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Reads a meter file.
    pub fn load(path: &Path) -> Result<Meters> {
        let text = std::fs::read_to_string(path).at(path)?;
        Meters::from_toml(&text, path)
    }

    /// Reads `path` if given, else `data/meters.toml` if it exists, else the built-in set.
    pub fn load_or_default(path: Option<&Path>) -> Result<Meters> {
        match path {
            Some(p) => Meters::load(p),
            None if Path::new(DEFAULT_METERS_FILE).is_file() => {
                Meters::load(Path::new(DEFAULT_METERS_FILE))
            }
            None => Ok(Meters::default()),
        }
    }

    /// Every meter, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Meter> {
        self.meters.iter()
    }

    /// The meter of this name.
    pub fn get(&self, name: &str) -> Option<&Meter> {
        self.meters.iter().find(|m| m.name == name)
    }

    /// The meter to use for an event meter name no definition reads: `sum` of values.
    pub fn unconfigured(event: &str) -> Meter {
        Meter::new(event, Aggregation::Sum)
    }

    /// Of the given event meter names, those no definition reads (sorted).
    pub fn unconfigured_of<'a>(&self, events: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let read: BTreeSet<&str> = self.meters.iter().map(Meter::event).collect();
        let out: BTreeSet<&str> = events.into_iter().filter(|e| !read.contains(e)).collect();
        out.into_iter().map(str::to_string).collect()
    }

    /// A stable fingerprint of the definitions: rollups computed under other definitions
    /// are recomputed in full.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(&self.meters).expect("meters serialise");
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_meters_cover_the_generator() {
        let m = Meters::default();
        for (name, agg) in [
            ("api_calls", Aggregation::Count),
            ("storage_bytes", Aggregation::Latest),
            ("documents", Aggregation::Count),
            ("ai_tokens", Aggregation::Sum),
            ("ingest_bytes", Aggregation::Sum),
            ("active_users", Aggregation::UniqueCount),
        ] {
            assert_eq!(m.get(name).map(|m| m.aggregation), Some(agg), "{name}");
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        for (text, want) in [
            (
                "[[meter]]\nname = \"a\"\naggregation = \"median\"\n",
                "unknown variant",
            ),
            ("[[meter]]\nname = \"a\"\n", "missing field `aggregation`"),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\n[[meter]]\nname = \"a\"\naggregation = \"count\"\n",
                "defined twice",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"p95\"\nproperty = \"x.y\"\n",
                "plain key",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\ncolour = 1\n",
                "unknown field",
            ),
        ] {
            let e = Meters::from_toml(text, Path::new("m.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("m.toml: ") && e.contains(want),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn unconfigured_lists_unknown_events_once() {
        let m = Meters::default();
        assert_eq!(
            m.unconfigured_of(["api_calls", "gpu_seconds", "gpu_seconds", "emails"]),
            vec!["emails".to_string(), "gpu_seconds".to_string()]
        );
    }
}
