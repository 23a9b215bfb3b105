//! CSV, CloudEvents, Parquet and gzip inputs.

use std::fs;
use std::sync::Arc;

use crate::common::*;

#[test]
fn csv_with_property_columns_json_column_and_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "events.csv",
        "id,timestamp,tenant_id,user_id,event_type,quantity,endpoint,status_code,properties\n\
         c1,2026-03-01T10:00:00Z,t1,u1,api_calls,1,/v1/a,200,\"{\"\"model\"\":\"\"m1\"\"}\"\n\
         c2,1772359200000,t1,,documents,,\"/v1/multi\nline\",007,\n\
         c3,2026-03-01T10:00:00Z,t1,u1,api_calls,-1,/v1/a,200,\n\
         c4,2026-03-01T10:00:00Z,t1\n\
         c5,2026-03-01T10:00:00Z,,u1,api_calls,1,/v1/a,200,\n",
    );
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&input], &[]);
    assert_eq!(
        (
            v["read"].as_u64(),
            v["accepted"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(5), Some(2), Some(3)),
        "{v}"
    );
    let mut rows = read_lake(&lake);
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        rows[0].props,
        r#"{"endpoint":"/v1/a","model":"m1","status_code":200}"#
    );
    assert_eq!(
        rows[1].props, "{\"endpoint\":\"/v1/multi\\nline\",\"status_code\":\"007\"}",
        "007 is text, not a number"
    );
    assert_eq!(
        (rows[1].value, rows[1].user.as_deref()),
        (1.0, None),
        "empty value defaults to 1, empty user is absent"
    );
    let q = quarantine(&lake);
    let got: Vec<(u64, &str)> = q
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![(5, "value"), (6, "record"), (7, "tenant_id")],
        "lines count the quoted newline"
    );
    assert_eq!(q[1]["record"], "c4,2026-03-01T10:00:00Z,t1");
}

#[test]
fn cloudevents_single_batch_and_ndjson_dedup_on_source_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let ce = |id: &str, source: &str, tokens: u32| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"ai_tokens","subject":"t1","time":"2026-03-01T10:00:00Z","data":{{"value":{tokens},"user_id":"u1","model":"m"}}}}"#
        )
    };
    let single = write(
        dir.path(),
        "single.json",
        &serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&ce("1", "svc/a", 10)).unwrap(),
        )
        .unwrap(),
    );
    let batch = write(
        dir.path(),
        "batch.json",
        &format!(
            "[\n{},\n{},\n{}\n]",
            ce("1", "svc/a", 10),
            ce("1", "svc/b", 20),
            ce("2", "svc/a", 30)
        ),
    );
    let lines = write(
        dir.path(),
        "lines.ndjson",
        &format!(
            "{}\n{}\n{}\n",
            ce("3", "svc/a", 40),
            ce("3", "svc/a", 40),
            r#"{"specversion":"1.0","id":"4","source":"s","type":"ai_tokens","time":"2026-03-01T10:00:00Z"}"#
        ),
    );
    let lake = dir.path().join("lake");
    let v = ingest(
        &lake,
        &[&single, &batch, &lines],
        &["--format", "cloudevents"],
    );
    assert_eq!(v["read"], 7);
    assert_eq!(v["accepted"], 4, "{v}");
    assert_eq!(v["duplicates"], 2, "(svc/a, 1) twice, (svc/a, 3) twice");
    assert_eq!(v["rejected"], 1);
    let q = quarantine(&lake);
    assert_eq!(
        (q[0]["field"].as_str(), q[0]["line"].as_u64()),
        (Some("subject"), Some(3))
    );
    let rows = read_lake(&lake);
    assert_close(sums(&rows)["ai_tokens"], 100.0, "tokens");
    assert!(
        rows.iter()
            .all(|r| r.user.as_deref() == Some("u1") && r.props == r#"{"model":"m"}"#)
    );
    // Batch elements keep their own line numbers for the quarantine.
    let bad_batch = write(
        dir.path(),
        "bad.json",
        &format!(
            "[\n{},\n{{\"specversion\":\"1.0\",\"id\":\"9\"}}\n]",
            ce("8", "s", 1)
        ),
    );
    let v = ingest(&lake, &[&bad_batch], &[]);
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let q = quarantine(&lake);
    assert_eq!(q.last().unwrap()["line"], 3);
}

#[test]
fn parquet_input_with_typed_columns() {
    use arrow::array::{
        ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.parquet");
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(StringArray::from(vec!["p1", "p2", "p3"]))),
        (
            "ts",
            Arc::new(
                TimestampMillisecondArray::from(vec![1_772_359_200_000, 1_772_359_200_001, 1])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "tenant_id",
            Arc::new(StringArray::from(vec![Some("t1"), Some("t2"), Some("t1")])),
        ),
        (
            "meter",
            Arc::new(StringArray::from(vec![
                "storage_bytes",
                "storage_bytes",
                "x",
            ])),
        ),
        (
            "value",
            Arc::new(Float64Array::from(vec![Some(5.0), None, Some(1.0)])),
        ),
        (
            "properties",
            Arc::new(StringArray::from(vec![
                Some(r#"{"tier":"hot"}"#),
                None,
                None,
            ])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    write_parquet(&path, &[batch]);
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&path], &[]);
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["inputs"][0]["format"], "parquet");
    let mut rows = read_lake(&lake);
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        (rows[0].ts, rows[0].value, rows[0].props.as_str()),
        (1_772_359_200_000_000, 5.0, r#"{"tier":"hot"}"#)
    );
    assert_eq!((rows[1].ts, rows[1].value), (1_772_359_200_001_000, 1.0));
    let q = quarantine(&lake);
    assert_eq!(
        (q[0]["line"].as_u64(), q[0]["field"].as_str()),
        (Some(3), Some("ts"))
    );
    // A Parquet file without a meter column is the wrong format: exit 2 naming the column.
    let bad = dir.path().join("nometer.parquet");
    let b2 = RecordBatch::try_from_iter(vec![
        (
            "tenant_id",
            Arc::new(StringArray::from(vec!["t1"])) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(StringArray::from(vec!["2026-03-01T00:00:00Z"])) as ArrayRef,
        ),
    ])
    .unwrap();
    write_parquet(&bad, &[b2]);
    let o = mlk(&[
        "ingest",
        bad.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nometer.parquet") && err.contains("no meter column"),
        "{err}"
    );
}

#[test]
fn gzip_and_directory_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    fs::create_dir(&inputs).unwrap();
    let text: String = (0..1000)
        .map(|i| format!(r#"{{"id":"z{i}","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m","value":2}}"#) + "\n")
        .collect();
    fs::write(inputs.join("a.ndjson.gz"), gzip(&text)).unwrap();
    fs::write(
        inputs.join("b.csv"),
        "tenant_id,meter,ts,value\nt9,m,2026-03-02T00:00:00Z,3\n",
    )
    .unwrap();
    fs::write(inputs.join("README.txt"), "not an input").unwrap();
    // A byte-order mark at the start of a UTF-8 file is not part of the first record.
    fs::write(inputs.join("c.ndjson"), "\u{feff}{\"id\":\"bom\",\"ts\":\"2026-03-02T00:00:00Z\",\"tenant_id\":\"t9\",\"meter\":\"m\",\"value\":5}\n").unwrap();
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&inputs], &[]);
    assert_eq!(v["accepted"], 1002, "{v}");
    assert_close(sums(&read_lake(&lake))["m"], 2008.0, "sum");
}

/// A Parquet column that is there but of a type it cannot be read as rejects every row,
/// naming the column and its type: a list `value` was stored as the default 1, a struct
/// `user_id` as no user.
#[test]
fn parquet_columns_of_unreadable_types_are_rejected_not_dropped() {
    use arrow::array::{ArrayRef, Float64Array, ListArray, RecordBatch, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field, Float64Type};
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: (&str, ArrayRef)| {
        let mut cols: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(StringArray::from(vec!["m1", "m2"]))),
            (
                "ts",
                Arc::new(StringArray::from(vec!["2026-09-01T00:00:00Z"; 2])),
            ),
            ("tenant_id", Arc::new(StringArray::from(vec!["acme"; 2]))),
            ("meter", Arc::new(StringArray::from(vec!["api_calls"; 2]))),
        ];
        cols.push(extra);
        RecordBatch::try_from_iter(cols).unwrap()
    };
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
        Some(vec![Some(5.0)]),
        Some(vec![Some(7.0)]),
    ]));
    let user: ArrayRef = Arc::new(StructArray::from(vec![(
        Arc::new(Field::new("id", DataType::Utf8, false)),
        Arc::new(StringArray::from(vec!["u7", "u8"])) as ArrayRef,
    )]));
    let lake = dir.path().join("lake");
    for (name, batch, field) in [
        ("list_value.parquet", base(("value", list)), "value"),
        ("struct_user.parquet", base(("user_id", user)), "user_id"),
        (
            "good.parquet",
            base(("value", Arc::new(Float64Array::from(vec![5.0, 7.0])))),
            "",
        ),
    ] {
        let path = dir.path().join(name);
        write_parquet(&path, &[batch]);
        let before = quarantine(&lake).len();
        let v = ingest(&lake, &[&path], &[]);
        if field.is_empty() {
            assert_eq!(v["accepted"], 2, "{v}");
            continue;
        }
        assert_eq!(
            (v["accepted"].as_u64(), v["rejected"].as_u64()),
            (Some(0), Some(2)),
            "{name}: {v}"
        );
        let q = quarantine(&lake);
        for r in &q[before..] {
            assert_eq!(r["field"], field, "{r}");
            let reason = r["reason"].as_str().unwrap();
            assert!(
                reason.contains(&format!("`{field}`")) && reason.contains("cannot be read"),
                "{reason}"
            );
        }
    }
    // Only the good file's rows are in the lake, with their own values.
    let mut values: Vec<f64> = read_lake(&lake).iter().map(|r| r.value).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![5.0, 7.0]);
}

/// CloudEvents `data` nested deeper than 32 levels is rejected, naming the field; the
/// process does not overflow its stack (20,000 levels aborted it), and the other events of
/// the batch are stored. 31 levels are flattened as documented.
#[test]
fn cloudevents_data_nested_too_deep_is_rejected_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let nest = |depth: usize| {
        let mut s = "1".to_string();
        for _ in 0..depth {
            s = format!(r#"{{"k":{s}}}"#);
        }
        s
    };
    let ev = |id: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"s","type":"api_calls","subject":"acme","time":"2026-09-01T00:00:00Z","data":{data}}}"#
        )
    };
    let text = [
        ev("deep", &format!(r#"{{"x":{}}}"#, nest(20_000))),
        ev("ok31", &format!(r#"{{"x":{}}}"#, nest(30))),
        ev("plain", r#"{"value":3}"#),
    ]
    .join("\n")
        + "\n";
    let input = write(dir.path(), "deep.ndjson", &text);
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&input], &["--format", "cloudevents"]);
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let q = quarantine(&lake);
    assert_eq!(q[0]["line"], 1);
    assert!(
        q[0]["field"].as_str().unwrap().starts_with("data.x.k"),
        "{}",
        q[0]["field"]
    );
    assert!(
        q[0]["reason"].as_str().unwrap().contains("deeper than 32"),
        "{}",
        q[0]["reason"]
    );
    let rows = read_lake(&lake);
    let deep_key = format!("x{}", ".k".repeat(30));
    let ok = rows.iter().find(|r| r.id.contains("ok31")).unwrap();
    assert!(ok.props.contains(&deep_key), "{}", ok.props);
}
