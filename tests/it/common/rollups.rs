//! Rollups read back: `rollup --output json`, and a rollup's Parquet files as a table keyed
//! by (series, window start), to compare with a fold over the lake's rows.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};

use super::{assert_close, ok, parquet_batches, string_col};

/// A rollup granularity.
#[derive(Clone, Copy)]
pub enum G {
    Hour,
    Day,
    Week,
    Month,
}

impl G {
    /// As `--granularity` names it.
    pub fn name(self) -> &'static str {
        match self {
            G::Hour => "hour",
            G::Day => "day",
            G::Week => "week",
            G::Month => "month",
        }
    }
}

/// Every granularity, finest first.
pub const ALL_G: [G; 4] = [G::Hour, G::Day, G::Week, G::Month];

/// A series: (tenant, meter, dimensions...).
pub type Key = Vec<Option<String>>;
/// (series key, window start) -> (window end, value, event count)
pub type Table = BTreeMap<(Key, i64), (i64, f64, i64)>;

/// Reads a rollup's files (straight from Parquet, as DuckDB would): its partitions, or
/// every shard's (`shard=I-of-N/period=.../part-0.parquet`) when it is sharded. A row
/// found twice (in two shards) fails.
pub fn read_rollup(dir: &Path, key_cols: &[String]) -> Table {
    let mut out = Table::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for d in fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("shard=") {
            for p in fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()) {
                if p.is_dir() {
                    files.push(p.join("part-0.parquet"));
                }
            }
        } else if d.is_dir() {
            files.push(d.join("part-0.parquet"));
        }
    }
    files.sort();
    for f in files {
        for b in parquet_batches(&f) {
            let keys: Vec<Vec<Option<String>>> =
                key_cols.iter().map(|k| string_col(&b, k)).collect();
            let ts = |n: &str| {
                let c = b.column_by_name(n).unwrap();
                assert_eq!(
                    c.data_type(),
                    &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    "{n}"
                );
                c.as_primitive::<TimestampMicrosecondType>().clone()
            };
            let (ws, we) = (ts("window_start"), ts("window_end"));
            let v = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            let n = b
                .column_by_name("event_count")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for i in 0..b.num_rows() {
                let key: Key = keys.iter().map(|c| c[i].clone()).collect();
                let prev = out.insert(
                    (key.clone(), ws.value(i)),
                    (we.value(i), v.value(i), n.value(i)),
                );
                assert!(
                    prev.is_none(),
                    "{}: duplicate row {key:?} {}",
                    f.display(),
                    ws.value(i)
                );
            }
        }
    }
    out
}

/// `rollup --lake LAKE --meters METERS --output json EXTRA...`.
pub fn rollup_json(lake: &Path, meters: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "rollup",
        "--lake",
        lake.to_str().unwrap(),
        "--meters",
        meters.to_str().unwrap(),
        "--output",
        "json",
    ];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

/// Same keys, window ends and event counts; values equal to a relative 1e-9.
pub fn assert_tables_match(got: &Table, want: &Table, what: &str) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} rows vs {} expected; missing {missing:?}, extra {extra:?}",
        got.len(),
        want.len()
    );
    for (k, (we, wv, wn)) in want {
        let (ge, gv, gn) = got[k];
        assert_eq!(
            (ge, gn),
            (*we, *wn),
            "{what}: window end / event count of {k:?}"
        );
        assert_close(gv, *wv, &format!("{what}: value of {k:?}"));
    }
}
