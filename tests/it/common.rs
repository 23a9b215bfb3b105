//! Helpers: run the binary in a temp dir, read the lake back independently.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const BIN: &str = env!("CARGO_BIN_EXE_meterlake");

pub fn mlk(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meterlake")
}

/// Runs and expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = mlk(args);
    assert!(
        o.status.success(),
        "meterlake {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `ingest --output json` of the given files.
pub fn ingest(lake: &Path, files: &[&Path], extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec!["ingest".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend([
        "--lake".into(),
        lake.display().to_string(),
        "--output".into(),
        "json".into(),
        "--quiet".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n("read"),
        n("accepted") + n("rejected") + n("duplicates"),
        "accounting: {v}"
    );
    v
}

/// `lake stats --output json` (which also recovers an interrupted commit when no writer runs).
pub fn lake_stats(lake: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "lake",
        "stats",
        "--lake",
        lake.to_str().unwrap(),
        "--output",
        "json",
    ]))
    .unwrap()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// One lake row as read straight from the Parquet files found by globbing (what DuckDB
/// would see), not through the lake's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub date: String,
    pub id: String,
    pub ts: i64,
    pub tenant: String,
    pub user: Option<String>,
    pub meter: String,
    pub value: f64,
    pub props: String,
}

pub fn parquet_files(lake: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let events = lake.join("events");
    if !events.exists() {
        return out;
    }
    for d in fs::read_dir(&events).unwrap() {
        let d = d.unwrap().path();
        for f in fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(
                f.extension().and_then(|e| e.to_str()),
                Some("parquet"),
                "stray file {}",
                f.display()
            );
            out.push(f);
        }
    }
    out.sort();
    out
}

/// Every record batch of one Parquet file, read with arrow-rs (independently of polars).
pub fn parquet_batches(path: &Path) -> impl Iterator<Item = arrow::record_batch::RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
}

pub fn read_lake(lake: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in parquet_files(lake) {
        let date = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("date=")
            .to_string();
        for b in parquet_batches(&f) {
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (id, tenant, user, meter, props) = (
                s("id"),
                s("tenant_id"),
                s("user_id"),
                s("meter"),
                s("properties"),
            );
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone();
            let value = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone();
            for i in 0..b.num_rows() {
                rows.push(Row {
                    date: date.clone(),
                    id: id.value(i).into(),
                    ts: ts.value(i),
                    tenant: tenant.value(i).into(),
                    user: user.is_valid(i).then(|| user.value(i).to_string()),
                    meter: meter.value(i).into(),
                    value: value.value(i),
                    props: props.value(i).into(),
                });
            }
        }
    }
    rows
}

/// Sum of values per meter.
pub fn sums(rows: &[Row]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.meter.clone()).or_insert(0.0) += r.value;
    }
    m
}

pub fn assert_close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        "{what}: {a} vs {b}"
    );
}

/// Quarantine records of a lake, all files.
pub fn quarantine(lake: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let q = lake.join("quarantine");
    if !q.exists() {
        return out;
    }
    let mut files: Vec<_> = fs::read_dir(q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        for line in fs::read_to_string(f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}
