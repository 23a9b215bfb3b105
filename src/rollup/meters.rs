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

use std::collections::{BTreeMap, BTreeSet};
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
    /// OpenMeter's `valueProperty`: a JSONPath into a CloudEvent's `data` (`$.tokens`,
    /// `$.usage.tokens`, `$['a b']`). It sets `property` to the path's keys joined by dots,
    /// the key nested `data` is flattened to at ingest (`$.value` reads `value` itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_property: Option<String>,
    /// OpenMeter's `groupBy`: group names → JSONPaths into `data`; the meter query API
    /// (`GET /api/v1/meters/{slug}/query?groupBy=NAME`) breaks usage down by them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_by: BTreeMap<String, String>,
}

/// The property key a JSONPath into an event's data names: `$.a.b` and `$['a']['b']` are
/// `a.b` (nested data is flattened to dotted keys at ingest). Array indices, wildcards and
/// recursive descent are refused: a meter reads one value of each event.
pub fn json_path_key(path: &str) -> std::result::Result<String, String> {
    let rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| format!("`{path}` is not a JSONPath (it starts with `$`)"))?;
    let mut keys: Vec<String> = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        if rest.starts_with("..") {
            return Err(format!(
                "`{path}`: recursive descent (`..`) is not supported"
            ));
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            keys.push(r[..end].to_string());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let q = r.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| {
                format!("`{path}`: only quoted keys (['key']) are supported in brackets, not array indices or wildcards")
            })?;
            let close = format!("{q}]");
            let end = r[1..]
                .find(&close)
                .ok_or_else(|| format!("`{path}`: unclosed `[{q}`"))?;
            keys.push(r[1..1 + end].to_string());
            rest = &r[1 + end + 2..];
        } else {
            return Err(format!(
                "`{path}`: expected `.key` or `['key']` at `{rest}`"
            ));
        }
    }
    if keys.is_empty() {
        return Err(format!("`{path}` names no key (`$.key`)"));
    }
    if let Some(k) = keys.iter().find(|k| k.is_empty() || *k == "*") {
        return Err(format!("`{path}`: key `{k}` is empty or a wildcard"));
    }
    let key = keys.join(".");
    if key.contains(['"', '\\', '\'', '[', ']']) {
        return Err(format!(
            "`{path}`: keys may not hold quotes, backslashes or brackets"
        ));
    }
    Ok(key)
}

/// The property a `value_property` JSONPath reads, or `None` for `$.value`: a CloudEvent's
/// `data.value` is the event's value itself, not a property.
pub fn value_property_key(path: &str) -> std::result::Result<Option<String>, String> {
    let key = json_path_key(path)?;
    Ok((key != "value").then_some(key))
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
            value_property: None,
            group_by: BTreeMap::new(),
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
    pub fn new(mut meters: Vec<Meter>) -> Result<Meters> {
        let mut seen = BTreeSet::new();
        for m in meters.iter_mut() {
            let bad = |reason: String| Error::InvalidParameter {
                name: "meter",
                reason,
            };
            if let Some(path) = &m.value_property {
                let key = value_property_key(path)
                    .map_err(|e| bad(format!("meter `{}`: value_property {e}", m.name)))?;
                // (A meter validated before carries the key it derived.)
                if m.property.is_some() && m.property != key {
                    return Err(bad(format!(
                        "meter `{}`: give `property` or `value_property`, not both",
                        m.name
                    )));
                }
                m.property = key;
            }
            for (name, path) in &m.group_by {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(bad(format!(
                        "meter `{}`: group_by name `{name}` must be letters, digits and _",
                        m.name
                    )));
                }
                json_path_key(path)
                    .map_err(|e| bad(format!("meter `{}`: group_by.{name} {e}", m.name)))?;
            }
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
                && (p.is_empty() || p.contains(['"', '\\', '\'', '[', ']']))
            {
                return Err(bad(format!(
                    "meter `{}`: property `{p}` must be a plain key (no quotes or brackets)",
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
                "[[meter]]\nname = \"a\"\naggregation = \"p95\"\nproperty = \"x[0]\"\n",
                "plain key",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\nvalue_property = \"$.items[0]\"\n",
                "array indices",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\nvalue_property = \"tokens\"\n",
                "starts with `$`",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\nproperty = \"u\"\nvalue_property = \"$.t\"\n",
                "not both",
            ),
            (
                "[[meter]]\nname = \"a\"\naggregation = \"sum\"\ngroup_by = { \"m-x\" = \"$.m\" }\n",
                "group_by name",
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
    fn json_paths_name_flattened_keys() {
        for (path, key) in [
            ("$.tokens", "tokens"),
            ("$.usage.tokens", "usage.tokens"),
            ("$['usage']['input tokens']", "usage.input tokens"),
            ("$[\"a\"].b", "a.b"),
            (" $.x ", "x"),
        ] {
            assert_eq!(json_path_key(path).as_deref(), Ok(key), "{path}");
        }
        for path in ["$", "$..a", "$.a[*]", "$.a[0]", "$.", "$['a", "a.b"] {
            assert!(json_path_key(path).is_err(), "{path}");
        }
        let m = Meters::from_toml(
            "[[meter]]\nname = \"tokens\"\nevent = \"prompt\"\naggregation = \"sum\"\nvalue_property = \"$.usage.tokens\"\ngroup_by = { model = \"$.model\" }\n[[meter]]\nname = \"v\"\naggregation = \"sum\"\nvalue_property = \"$.value\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(
            m.get("tokens").unwrap().property.as_deref(),
            Some("usage.tokens")
        );
        assert_eq!(m.get("v").unwrap().property, None);
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
