//! Reading a lake back independently of the program: its Parquet files straight from the
//! directory tree with arrow-rs (what DuckDB would see, not through the lake's log), folds
//! over the rows, the quarantine, and a generated lake to read.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{ingest, ok};

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
    try_parquet_batches(path).unwrap().into_iter()
}

thread_local! {
    /// AES keys this test thread reads encrypted files with ([`with_keys`]).
    static KEYS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with these AES keys for the Parquet reads of this thread (encrypted lakes).
pub fn with_keys<T>(keys: &[Vec<u8>], f: impl FnOnce() -> T) -> T {
    KEYS.with(|k| *k.borrow_mut() = keys.to_vec());
    let out = f();
    KEYS.with(|k| k.borrow_mut().clear());
    out
}

/// The id meterlake records for a key, computed here from its definition: 16 hex digits
/// of SHA-256("meterlake encryption key id\0" ‖ key).
pub fn key_id(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"meterlake encryption key id\0");
    h.update(key);
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Finds the key whose id the footer names, among the thread's keys.
struct TestKeys(Vec<Vec<u8>>);

impl parquet::encryption::decrypt::KeyRetriever for TestKeys {
    fn retrieve_key(&self, meta: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        self.0
            .iter()
            .find(|k| key_id(k).as_bytes() == meta)
            .cloned()
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "no key {}",
                    String::from_utf8_lossy(meta)
                ))
            })
    }
}

/// Every record batch of one Parquet file with arrow-rs, decrypted with the thread's keys.
pub fn try_parquet_batches(
    path: &Path,
) -> parquet::errors::Result<Vec<arrow::record_batch::RecordBatch>> {
    let keys = KEYS.with(|k| k.borrow().clone());
    let mut opts = parquet::arrow::arrow_reader::ArrowReaderOptions::new();
    if !keys.is_empty() {
        opts = opts.with_file_decryption_properties(
            parquet::encryption::decrypt::FileDecryptionProperties::with_key_retriever(
                std::sync::Arc::new(TestKeys(keys)),
            )
            .build()?,
        );
    }
    ParquetRecordBatchReaderBuilder::try_new_with_options(fs::File::open(path).unwrap(), opts)?
        .build()?
        .map(|b| b.map_err(Into::into))
        .collect()
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

/// A generated lake (with duplicates, late and malformed records) in `dir/lake`.
pub fn generated_lake(dir: &Path, start: &str, days: &str, scale: &str) -> PathBuf {
    let input = dir.join("in.ndjson");
    ok(&[
        "generate",
        "--tenants",
        "3",
        "--days",
        days,
        "--start",
        start,
        "--seed",
        "11",
        "--scale",
        scale,
        "--out",
        input.to_str().unwrap(),
        "--quiet",
    ]);
    let lake = dir.join("lake");
    ingest(&lake, &[&input], &[]);
    lake
}

/// A string column of one record batch (Utf8 or Utf8View: polars writes views), nulls as `None`.
pub fn string_col(b: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
    let s = c.as_string::<i32>();
    (0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
        .collect()
}

/// A string column of every batch of a Parquet file (a derived table: quotas, alerts,
/// incidents...); empty when the file has no such column.
pub fn strings(path: &Path, col: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in parquet_batches(path) {
        if b.column_by_name(col).is_none() {
            return out;
        }
        out.extend(string_col(&b, col));
    }
    out
}

/// One incident of the detect stage, read from its Parquet file.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub tenant: String,
    pub meter: String,
    pub start: i64,
    pub end: i64,
    pub detectors: String,
    pub severity: String,
    pub risk: f64,
    pub fraud: bool,
}

/// The hourly incidents of `detect --lake` (LAKE/anomalies/granularity=hour).
pub fn read_incidents(lake: &Path) -> Vec<IncidentRow> {
    read_incidents_of(lake, "hour")
}

/// The incidents of `detect --lake --granularity G`.
pub fn read_incidents_of(lake: &Path, granularity: &str) -> Vec<IncidentRow> {
    let path = lake.join(format!(
        "anomalies/granularity={granularity}/incidents.parquet"
    ));
    let mut out = Vec::new();
    for b in parquet_batches(&path) {
        let text = |n: &str| -> Vec<String> {
            string_col(&b, n)
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect()
        };
        let ts = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone()
        };
        let (tenant, meter, detectors, severity) = (
            text("tenant_id"),
            text("meter"),
            text("detectors"),
            text("severity"),
        );
        let (start, end) = (ts("window_start"), ts("window_end"));
        let risk = b
            .column_by_name("risk")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        let fraud = b
            .column_by_name("fraud_suspect")
            .unwrap()
            .as_boolean()
            .clone();
        for i in 0..b.num_rows() {
            out.push(IncidentRow {
                tenant: tenant[i].clone(),
                meter: meter[i].clone(),
                start: start.value(i),
                end: end.value(i),
                detectors: detectors[i].clone(),
                severity: severity[i].clone(),
                risk: risk.value(i),
                fraud: fraud.value(i),
            });
        }
    }
    out
}

/// The latest reading of a gauge `meter` before `until` among `rows` (the largest of its
/// last instant's), as engagement reads storage.
pub fn latest_reading(rows: &[&Row], meter: &str, until: i64) -> Option<f64> {
    let s: Vec<&&Row> = rows
        .iter()
        .filter(|r| r.meter == meter && r.ts < until)
        .collect();
    let t = s.iter().map(|r| r.ts).max()?;
    Some(
        s.iter()
            .filter(|r| r.ts == t)
            .map(|r| r.value)
            .fold(f64::MIN, f64::max),
    )
}
