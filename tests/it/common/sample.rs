//! The bundled sample (data/): the README's main job run on it once for every test, the
//! reports it wrote, and a lake of the sample's events alone (ingested, nothing derived).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{files_under, ingest, ok};

/// The sample's plan catalogue and tenants.
pub const PLANS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/plans.toml");
pub const TENANTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/tenants.csv");

pub struct Sample {
    _dir: tempfile::TempDir,
    pub lake: PathBuf,
    pub out: PathBuf,
    /// `run --output json` of the first run, and of the second.
    pub first: serde_json::Value,
    pub second: serde_json::Value,
    /// Report bytes after the first run.
    pub bytes: BTreeMap<PathBuf, Vec<u8>>,
}

/// `run --lake LAKE --out OUT --output json --quiet EXTRA...`.
pub fn run_json(lake: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        "--lake",
        lake.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--output",
        "json",
        "--quiet",
    ];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

/// The README's main job on data/, run twice (once, for every test).
pub fn sample() -> &'static Sample {
    static S: OnceLock<Sample> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
        let first = run_json(&lake, &out, &[]);
        let bytes = files_under(&out.join("reports"))
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        let second = run_json(&lake, &out, &[]);
        Sample {
            _dir: dir,
            lake,
            out,
            first,
            second,
            bytes,
        }
    })
}

/// A lake holding only the sample's events (`ingest`, no stage run): for tests that run a
/// stage themselves. Copy it before changing it.
pub fn sample_events() -> &'static Path {
    static L: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let events = concat!(env!("CARGO_MANIFEST_DIR"), "/data/events/events.ndjson.gz");
        ingest(&lake, &[Path::new(events)], &[]);
        (dir, lake)
    })
    .1
}

/// The JSON report of `kind` the sample's first run wrote.
pub fn report_json(kind: &str) -> serde_json::Value {
    let p = sample()
        .out
        .join("reports")
        .join(kind)
        .join(format!("{kind}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `report --lake LAKE --kind KIND --out OUT EXTRA...` with OUT a JSON file, read back.
pub fn report_to(lake: &Path, kind: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--kind",
        kind,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    ok(&args);
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// The rows of a report's table.
pub fn rows_of<'a>(r: &'a serde_json::Value, table: &str) -> &'a Vec<serde_json::Value> {
    r["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("no table {table}"))
}

/// A day in microseconds.
pub const DAY: i64 = 86_400_000_000;

/// A report's default period: the 30 UTC days up to midnight after the last event.
pub fn default_period(rows: &[super::Row]) -> (i64, i64) {
    let last = rows.iter().map(|r| r.ts).max().unwrap();
    let to = last.div_euclid(DAY) * DAY + DAY;
    (to - 30 * DAY, to)
}
