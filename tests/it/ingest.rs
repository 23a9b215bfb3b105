//! Validation, quarantine, dedup and idempotence through `meterlake ingest`.

use std::fs;

use crate::common::*;

const GOOD: &str = r#"{"id":"g1","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","user_id":"u1","meter":"api_calls","value":1,"properties":{"endpoint":"/v1/a"}}"#;

#[test]
fn every_rejection_reason_is_quarantined_verbatim_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let long_id = "x".repeat(257);
    let big = format!(
        r#"{{"id":"big","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m","properties":{{"blob":"{}"}}}}"#,
        "y".repeat(1 << 20)
    );
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "record"),
        (r#"{"id":"a1","ts":"2026-03-01T10:00:00Z","meter":"m"}"#.into(), "tenant_id"),
        (r#"{"id":"a2","ts":"2026-03-01T10:00:00Z","tenant_id":"t1"}"#.into(), "meter"),
        (r#"{"id":"a3","tenant_id":"t1","meter":"m"}"#.into(), "ts"),
        (r#"{"id":"a4","ts":"03/01/2026","tenant_id":"t1","meter":"m"}"#.into(), "ts"),
        (r#"{"id":"a5","ts":"1999-12-31T23:59:59Z","tenant_id":"t1","meter":"m"}"#.into(), "ts"),
        (r#"{"id":"a6","ts":"2099-01-01T00:00:00Z","tenant_id":"t1","meter":"m"}"#.into(), "ts"),
        (r#"{"id":"a7","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m","value":-3}"#.into(), "value"),
        (r#"{"id":"a8","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m","value":"Infinity"}"#.into(), "value"),
        (r#"{"id":"a9","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m","value":"ten"}"#.into(), "value"),
        (r#"{"id":"","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m"}"#.into(), "id"),
        (format!(r#"{{"id":"{long_id}","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m"}}"#), "id"),
        (r#"{"id":"a\u0007b","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m"}"#.into(), "id"),
        (r#"{"id":"../etc","ts":"2026-03-01T10:00:00Z","tenant_id":"t1","meter":"m"}"#.into(), "id"),
        (r#"{"id":"a10","ts":"2026-03-01T10:00:00Z","tenant_id":"t\\1","meter":"m"}"#.into(), "tenant_id"),
        (big, "record"),
    ];
    let mut text = String::new();
    for (i, (line, _)) in cases.iter().enumerate() {
        text.push_str(line);
        text.push('\n');
        // a good record between bad ones: a bad record never aborts the batch
        text.push_str(&GOOD.replace("g1", &format!("g{i}")));
        text.push('\n');
    }
    let input = write(dir.path(), "mixed.ndjson", &text);
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&input], &[]);
    assert_eq!(v["read"], cases.len() as u64 * 2);
    assert_eq!(v["accepted"], cases.len() as u64);
    assert_eq!(v["rejected"], cases.len() as u64);
    let q = quarantine(&lake);
    assert_eq!(q.len(), cases.len());
    for (i, ((line, field), rec)) in cases.iter().zip(&q).enumerate() {
        assert_eq!(rec["field"], *field, "case {i}: {rec}");
        assert_eq!(rec["line"], (i * 2 + 1) as u64, "case {i}");
        assert_eq!(rec["file"].as_str().unwrap(), input.display().to_string());
        assert!(!rec["reason"].as_str().unwrap().is_empty());
        if line.len() < 1 << 20 {
            assert_eq!(rec["record"].as_str().unwrap(), line, "kept verbatim");
        }
    }
    assert_eq!(
        v["quarantine"].as_str().unwrap(),
        lake.join("quarantine/00000001.ndjson")
            .display()
            .to_string()
    );
    // Quarantined records can be fixed and re-ingested: the records are there verbatim.
    assert_eq!(read_lake(&lake).len(), cases.len());
}

#[test]
fn a_line_that_is_not_utf8_is_rejected_alone_and_its_neighbours_keep_their_text() {
    // UTF-8 is checked a whole chunk at a time and, when that fails, line by line: only the
    // bad lines may be rejected, and non-ASCII text and CRLF endings in the good ones survive.
    let dir = tempfile::tempdir().unwrap();
    let good = |i: usize, endpoint: &str| {
        format!(
            r#"{{"id":"g{i}","ts":"2026-03-01T10:00:00Z","tenant_id":"tënant-{i}","meter":"m","properties":{{"endpoint":"{endpoint}"}}}}"#
        )
        .into_bytes()
    };
    let mut lines: Vec<Vec<u8>> = vec![good(0, "/café"), good(1, "/日本")];
    let mut bad_lines = vec![];
    // A stray byte, a sequence cut short, an encoded surrogate.
    for (i, bad) in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80"].iter().enumerate() {
        let mut line = good(10 + i, "/x");
        let at = line.len() - 4; // inside the endpoint string
        line.splice(at..at, bad.iter().copied());
        lines.push(line);
        bad_lines.push(lines.len() as u64);
        lines.push(good(20 + i, "/okü"));
    }
    let mut text = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        text.extend_from_slice(l);
        text.extend_from_slice(if n % 2 == 0 { b"\r\n" } else { b"\n" });
    }
    let input = dir.path().join("mixed-utf8.ndjson");
    fs::write(&input, &text).unwrap();
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&input], &[]);
    assert_eq!(v["read"], lines.len() as u64);
    assert_eq!(v["rejected"], 3);
    let q = quarantine(&lake);
    let got: Vec<u64> = q.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(got, bad_lines);
    for r in &q {
        assert!(r["reason"].as_str().unwrap().contains("not UTF-8"), "{r}");
    }
    let mut want: Vec<(String, String, String)> = lines
        .iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("id"), s("tenant_id"), v["properties"].to_string())
        })
        .collect();
    want.sort();
    let mut got: Vec<(String, String, String)> = read_lake(&lake)
        .into_iter()
        .map(|r| (r.id, r.tenant, r.props))
        .collect();
    got.sort();
    assert_eq!(got, want, "the good lines, with their non-ASCII text");
}

#[test]
fn tracker_aliases_and_epoch_millis_map_to_canonical_fields() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "aliases.jsonl",
        concat!(
            r#"{"id":"a","timestamp":1772359200000,"tenant_id":"t1","event_type":"documents","quantity":2,"metadata":{"file_type":"pdf"}}"#,
            "\n",
            r#"{"id":"b","ts":"2026-03-01T10:00:00+02:00","tenant_id":"t1","event_name":"ai_tokens","metric_value":"512","region":"eu"}"#,
            "\n",
            r#"{"id":"c","ts":"1772359200000","tenant_id":"t1","metric_type":"storage_bytes","value":1e9}"#,
            "\n",
        ),
    );
    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&input], &[]);
    assert_eq!(v["accepted"], 3);
    let mut rows = read_lake(&lake);
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(rows[0].ts, 1_772_359_200_000_000);
    assert_eq!(
        (
            rows[0].meter.as_str(),
            rows[0].value,
            rows[0].props.as_str()
        ),
        ("documents", 2.0, r#"{"file_type":"pdf"}"#)
    );
    assert_eq!(rows[1].ts, 1_772_352_000_000_000, "offset converted to UTC");
    assert_eq!(
        (rows[1].meter.as_str(), rows[1].value),
        ("ai_tokens", 512.0)
    );
    assert_eq!(
        rows[1].props, r#"{"region":"eu"}"#,
        "unknown top-level fields become properties"
    );
    assert_eq!(
        (rows[2].meter.as_str(), rows[2].value, rows[2].ts),
        ("storage_bytes", 1e9, 1_772_359_200_000_000)
    );
    assert_eq!(rows[2].user, None);
}

#[test]
fn duplicates_within_a_batch_across_runs_and_the_lookback() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let a = write(
        dir.path(),
        "a.ndjson",
        &format!("{GOOD}\n{GOOD}\n{}\n", GOOD.replace("g1", "g2")),
    );
    let v = ingest(&lake, &[&a], &[]);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    // Another file repeating g2, and g1 from another tenant (ids are scoped by tenant).
    let b = write(
        dir.path(),
        "b.ndjson",
        &format!(
            "{}\n{}\n",
            GOOD.replace("g1", "g2"),
            GOOD.replace("\"t1\"", "\"t2\"")
        ),
    );
    let v = ingest(&lake, &[&b], &[]);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    // The same id 40 days later is outside the default 35-day lookback: a new event;
    // 30 days later it is a duplicate.
    let c = write(
        dir.path(),
        "c.ndjson",
        &format!(
            "{}\n{}\n",
            GOOD.replace("2026-03-01", "2026-04-10"),
            GOOD.replace("2026-03-01", "2026-03-31").replace("g1", "g2")
        ),
    );
    let v = ingest(&lake, &[&c], &[]);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    // With a 60-day lookback the 40-days-later copy of g2 is a duplicate.
    let d = write(
        dir.path(),
        "d.ndjson",
        &format!(
            "{}\n",
            GOOD.replace("2026-03-01", "2026-04-10").replace("g1", "g2")
        ),
    );
    let v = ingest(&lake, &[&d], &["--lookback-days", "60"]);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    assert_eq!(read_lake(&lake).len(), 4);
}

#[test]
fn a_dedup_index_spilled_to_disk_decides_exactly_as_one_in_memory() {
    // 1 MiB of in-memory keys holds 28 672: this input (~150 k events with the generator's
    // duplicates and late events) spills several times, and the copy below loads the
    // lake's keys past the cap, so every lookup of it goes through the run on disk.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gen.ndjson");
    let input_s = input.display().to_string();
    ok(&[
        "generate",
        "--tenants",
        "30",
        "--days",
        "20",
        "--start",
        "2026-06-01",
        "--seed",
        "11",
        "--events",
        "150000",
        "--out",
        &input_s,
    ]);
    let (memory, spilled) = (dir.path().join("memory"), dir.path().join("spilled"));
    let small = ["--dedup-memory-mb", "1", "--min-ts", "2026-01-01"];
    let a = ingest(&memory, &[&input], &["--min-ts", "2026-01-01"]);
    let b = ingest(&spilled, &[&input], &small);
    assert!(a["duplicates"].as_u64().unwrap() > 100, "{a}");
    for k in ["read", "accepted", "rejected", "duplicates", "partitions"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    // The lake holds each (tenant, id) once, as many rows as accepted.
    let rows = read_lake(&spilled);
    let distinct: std::collections::HashSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.tenant.as_str(), r.id.as_str()))
        .collect();
    assert_eq!(rows.len() as u64, b["accepted"].as_u64().unwrap());
    assert_eq!(distinct.len(), rows.len());
    // Same bytes in both lakes.
    let (fa, fb) = (parquet_files(&memory), parquet_files(&spilled));
    assert_eq!(fa.len(), fb.len());
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(fs::read(x).unwrap(), fs::read(y).unwrap(), "{x:?}");
    }
    // A copy under another name: every valid event is now a duplicate of the lake.
    let copy = write(
        dir.path(),
        "copy.ndjson",
        &(fs::read_to_string(&input).unwrap() + "\n"),
    );
    let c = ingest(&spilled, &[&copy], &small);
    assert_eq!(c["accepted"], 0, "{c}");
    assert_eq!(c["rejected"], b["rejected"]);
    assert!(
        !spilled.join("_staging").exists()
            || fs::read_dir(spilled.join("_staging")).unwrap().count() == 0,
        "no run left behind"
    );
}

#[test]
fn checksums_taken_while_reading_let_a_repeat_be_skipped() {
    // A new input is hashed as it streams; a second ingest hashes it before reading (a
    // committed input has its size), and must find the same checksum. The blank input is
    // over 1 MiB: its reader stops after the first look, and the rest is hashed afterwards.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let blank = write(dir.path(), "blank.ndjson", &" \n".repeat(600_000));
    let text: String = (0..300)
        .map(|i| GOOD.replace("g1", &format!("e{i}")) + "\n")
        .collect();
    let a = write(dir.path(), "a.ndjson", &text);
    let first = ingest(&lake, &[&blank, &a], &[]);
    assert_eq!(
        (first["read"].as_u64(), first["accepted"].as_u64()),
        (Some(300), Some(300))
    );
    let again = ingest(&lake, &[&blank, &a], &[]);
    let skipped: Vec<&str> = again["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{again}");
    assert_eq!(again["read"], 0);
}

#[test]
fn ingesting_the_same_file_twice_accepts_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let text: String = (0..500)
        .map(|i| GOOD.replace("g1", &format!("e{i}")) + "\n")
        .collect();
    let a = write(dir.path(), "a.ndjson", &text);
    let first = ingest(&lake, &[&a], &[]);
    assert_eq!(first["accepted"], 500);
    let again = ingest(&lake, &[&a], &[]);
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["skipped"][0]["commit"], 1);
    // A copy under another name is read, and every event is a duplicate.
    let copy = write(dir.path(), "copy.ndjson", &(text.clone() + "\n"));
    let v = ingest(&lake, &[&copy], &[]);
    assert_eq!(
        (
            v["read"].as_u64(),
            v["duplicates"].as_u64(),
            v["accepted"].as_u64()
        ),
        (Some(500), Some(500), Some(0))
    );
    assert_eq!(read_lake(&lake).len(), 500);
}

#[test]
fn unreadable_inputs_fail_with_exit_2_naming_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let good = write(dir.path(), "good.ndjson", &format!("{GOOD}\n"));
    let missing = dir.path().join("missing.ndjson");
    let mut gz = gzip(&format!("{GOOD}\n").repeat(5000));
    gz.truncate(gz.len() / 2);
    let badgz = dir.path().join("bad.ndjson.gz");
    fs::write(&badgz, &gz).unwrap();
    let notpq = write(dir.path(), "fake.parquet", "id,ts\n");
    let nocol = write(
        dir.path(),
        "nocol.csv",
        "id,ts,meter\n1,2026-03-01T00:00:00Z,m\n",
    );
    for (bad, needle) in [
        (&missing, "missing.ndjson"),
        (&badgz, "bad.ndjson.gz"),
        (&notpq, "fake.parquet"),
        (&nocol, "tenant_id"),
    ] {
        let o = mlk(&[
            "ingest",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--lake",
            lake.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
        assert!(
            read_lake(&lake).is_empty(),
            "nothing half-written after {bad:?}"
        );
        assert!(!lake.join("_log/00000001.json").exists());
    }
    // After the failures the good file ingests normally.
    assert_eq!(ingest(&lake, &[&good], &[])["accepted"], 1);
}

#[test]
fn lake_files_are_sorted_deterministic_and_stats_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..300 {
        let (t, m, d) = (["t2", "t1", "t3"][i % 3], ["m2", "m1"][i % 2], 1 + i % 3);
        text.push_str(&format!(
            r#"{{"id":"e{i}","ts":"2026-03-0{d}T{:02}:{:02}:00Z","tenant_id":"{t}","meter":"{m}","value":{i}}}"#,
            (i * 7) % 24,
            i % 60
        ));
        text.push('\n');
    }
    let input = write(dir.path(), "e.ndjson", &text);
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    let v = ingest(&l1, &[&input], &[]);
    assert_eq!(
        v["partitions"],
        serde_json::json!(["2026-03-01", "2026-03-02", "2026-03-03"])
    );
    ingest(&l2, &[&input], &["--memory-budget-mb", "1"]);
    let f1 = parquet_files(&l1);
    assert_eq!(f1.len(), 3, "one file per day");
    // Timestamps are delta-encoded, not put in a dictionary (see the README's lake layout).
    let meta =
        parquet::file::reader::SerializedFileReader::new(fs::File::open(&f1[0]).unwrap()).unwrap();
    let ts = parquet::file::reader::FileReader::metadata(&meta)
        .row_group(0)
        .column(1)
        .clone();
    assert_eq!(ts.column_path().string(), "ts");
    assert!(
        ts.encodings()
            .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED)
            && ts.dictionary_page_offset().is_none(),
        "ts encodings: {:?}",
        ts.encodings().collect::<Vec<_>>()
    );
    for f in &f1 {
        let rel = f.strip_prefix(&l1).unwrap();
        assert_eq!(
            fs::read(f).unwrap(),
            fs::read(l2.join(rel)).unwrap(),
            "same input, same bytes: {rel:?}"
        );
    }
    let rows = read_lake(&l1);
    for w in rows.windows(2).filter(|w| w[0].date == w[1].date) {
        assert!(
            (&w[0].tenant, &w[0].meter, w[0].ts) <= (&w[1].tenant, &w[1].meter, w[1].ts),
            "sorted within a file"
        );
    }
    let stats = lake_stats(&l1);
    assert_eq!(stats["rows"], 300);
    assert_eq!(stats["partitions"], 3);
    assert_eq!(stats["tenants"], 3);
    assert_eq!(stats["first_date"], "2026-03-01");
    let m1 = stats["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == "m1")
        .unwrap();
    // A late event lands in its own (old) partition, and the commit says which one it touched.
    let late = write(
        dir.path(),
        "late.ndjson",
        r#"{"id":"late1","ts":"2026-03-01T23:59:59Z","tenant_id":"t1","meter":"m1","value":1}"#,
    );
    let v = ingest(&l1, &[&late], &[]);
    assert_eq!(v["partitions"], serde_json::json!(["2026-03-01"]));
    let log: serde_json::Value =
        serde_json::from_slice(&fs::read(l1.join("_log/00000002.json")).unwrap()).unwrap();
    assert_eq!(log["partitions"], serde_json::json!(["2026-03-01"]));
    assert_eq!(
        parquet_files(&l1)
            .iter()
            .filter(|f| f.to_str().unwrap().contains("date=2026-03-01"))
            .count(),
        2
    );
    let want: f64 = (0..300).filter(|i| i % 2 == 1).map(|i| i as f64).sum();
    assert_close(m1["value_sum"].as_f64().unwrap(), want, "m1 sum");
}

#[test]
fn days_the_input_has_passed_are_written_while_later_days_are_read() {
    // 12 days in time order, ~3.5 MB (several 1 MiB chunks), then one event far behind
    // the stream. Days are written as the input moves past them; the straggler, arriving
    // after its day was written, gets a second file. The same events shuffled (no day is
    // ever passed) are all written at the end: every other day's file has the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for day in 1..=12 {
        for i in 0..2000 {
            lines.push(format!(
                r#"{{"id":"e{day}-{i}","ts":"2026-05-{day:02}T{:02}:{:02}:{:02}Z","tenant_id":"t{}","user_id":"u{}","meter":"{}","value":{},"properties":{{"endpoint":"/v1/items/{}","status_code":200}}}}"#,
                i * 24 / 2000,
                i % 60,
                (i * 7) % 60,
                i % 7,
                i % 13,
                ["api_calls", "documents"][i % 2],
                i % 10,
                i % 17
            ));
        }
    }
    lines.push(
        r#"{"id":"straggler","ts":"2026-05-01T12:00:00Z","tenant_id":"t1","meter":"api_calls","value":5}"#
            .to_string(),
    );
    let ordered = write(dir.path(), "ordered.ndjson", &(lines.join("\n") + "\n"));
    // A fixed shuffle: a multiplicative permutation of the line numbers.
    let n = lines.len();
    let shuffled_text: String = (0..n)
        .map(|i| lines[(i * 7919) % n].clone() + "\n")
        .collect();
    assert_ne!(
        n % 7919,
        0,
        "7919 is prime: i * 7919 mod n permutes the lines"
    );
    let shuffled = write(dir.path(), "shuffled.ndjson", &shuffled_text);
    let (la, lb) = (dir.path().join("streamed"), dir.path().join("buffered"));
    let a = ingest(&la, &[&ordered], &[]);
    let b = ingest(&lb, &[&shuffled], &[]);
    assert_eq!(a["accepted"], 24_001, "{a}");
    for k in ["read", "accepted", "rejected", "duplicates", "partitions"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    let (fa, fb) = (parquet_files(&la), parquet_files(&lb));
    let on = |files: &[std::path::PathBuf], day: &str| {
        files
            .iter()
            .filter(|f| f.to_str().unwrap().contains(day))
            .count()
    };
    assert_eq!(on(&fa, "date=2026-05-01"), 2, "{fa:?}");
    assert_eq!(fa.len(), 13, "one file per day, plus the straggler's");
    assert_eq!(fb.len(), 12, "one file per day");
    for f in fb
        .iter()
        .filter(|f| !f.to_str().unwrap().contains("2026-05-01"))
    {
        let rel = f.strip_prefix(&lb).unwrap();
        assert_eq!(
            fs::read(f).unwrap(),
            fs::read(la.join(rel)).unwrap(),
            "{rel:?}"
        );
    }
    // Both lakes hold the input: rows and sums per day, folded from the lines.
    let mut want: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let e = want
            .entry(v["ts"].as_str().unwrap()[..10].to_string())
            .or_default();
        e.0 += 1;
        e.1 += v["value"].as_f64().unwrap();
    }
    for lake in [&la, &lb] {
        let mut got: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
        for r in read_lake(lake) {
            let e = got.entry(r.date.clone()).or_default();
            e.0 += 1;
            e.1 += r.value;
        }
        assert_eq!(got.len(), want.len());
        for (d, (n, sum)) in &want {
            assert_eq!(got[d].0, *n, "{d}");
            assert_close(got[d].1, *sum, d);
        }
    }
}

#[test]
fn compaction_merges_small_files_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for k in 0..3 {
        let text: String = (0..200)
            .map(|i| format!(r#"{{"id":"k{k}-{i}","ts":"2026-03-0{}T10:00:00Z","tenant_id":"t{}","meter":"m","value":{i}.5}}"#, 1 + i % 2, i % 5) + "\n")
            .collect();
        let f = write(dir.path(), &format!("f{k}.ndjson"), &text);
        ingest(&lake, &[&f], &[]);
    }
    let before = read_lake(&lake);
    assert_eq!(parquet_files(&lake).len(), 6);
    let out = ok(&[
        "compact",
        "--lake",
        lake.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["files_before"].as_u64(), v["files_after"].as_u64()),
        (Some(6), Some(2))
    );
    // The dedup key files too: one per day, holding the 600 keys of the six.
    assert_eq!(v["key_files_merged"].as_u64(), Some(6));
    let key_files = crate::common::files_under(&lake.join("_index"));
    assert_eq!(key_files.len(), 2, "{key_files:?}");
    let key_bytes: u64 = key_files.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert_eq!(key_bytes, 600 * 16);
    let after = read_lake(&lake);
    assert_eq!(parquet_files(&lake).len(), 2);
    let key = |r: &Row| (r.id.clone(), r.ts, r.value.to_bits());
    let mut a: Vec<_> = before.iter().map(key).collect();
    let mut b: Vec<_> = after.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Dedup still sees compacted events.
    let again = write(
        dir.path(),
        "again.ndjson",
        r#"{"id":"k0-3","ts":"2026-03-02T10:00:00Z","tenant_id":"t3","meter":"m","value":3.5}"#,
    );
    assert_eq!(ingest(&lake, &[&again], &[])["duplicates"], 1);
    // Of either day, through the merged key files only.
    let other = write(
        dir.path(),
        "other.ndjson",
        r#"{"id":"k2-0","ts":"2026-03-01T10:00:00Z","tenant_id":"t0","meter":"m","value":0.5}"#,
    );
    assert_eq!(ingest(&lake, &[&other], &[])["duplicates"], 1);
}

/// A lake given as a URL of a scheme other than `s3://` (tests/s3.sh runs those) is
/// refused with its scheme named, on every kind of command and in the configuration, and
/// nothing is created: before, it silently became a local folder named `gs:`.
#[test]
fn a_lake_url_is_refused_not_taken_for_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "e.ndjson",
        "{\"id\":\"a\",\"tenant_id\":\"t\",\"meter\":\"api_calls\",\"ts\":\"2026-10-01T00:00:00Z\"}\n",
    );
    write(
        dir.path(),
        "meterlake.toml",
        "[paths]\ninputs = [\"e.ndjson\"]\nlake = \"gs://bucket/lake\"\n",
    );
    let run = |args: &[&str]| {
        std::process::Command::new(crate::common::BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let e = events.to_str().unwrap();
    for (args, want) in [
        (
            vec!["ingest", e, "--lake", "gs://lake/ml", "-q"],
            "`gs://` is not supported",
        ),
        (
            vec!["ingest", e, "--lake=az://lake/ml", "-q"],
            "`az://` is not supported",
        ),
        (
            vec![
                "rollup",
                "--lake",
                "http://host/lake",
                "--granularity",
                "day",
                "-q",
            ],
            "`http://` is not supported",
        ),
        (
            vec![
                "report",
                "--lake",
                "file:///tmp/x",
                "--kind",
                "summary",
                "--out",
                "r.json",
            ],
            "`file://` is not supported",
        ),
        (
            vec!["run", "--config", "meterlake.toml", "-q"],
            "paths.lake",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !made.iter().any(|n| n.ends_with(':') || n == "out"),
        "created {made:?}"
    );
}

/// Two finite values whose sum overflows f64: the lake's log records the file's sums as
/// infinite (JSON has no infinity: it once wrote `null`, and every later command failed on
/// it), and the lake stays usable: stats, another ingest, a rollup, a compaction.
#[test]
fn values_whose_sum_overflows_keep_the_lake_readable() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |id: &str, hour: u32, value: &str| {
        format!(
            r#"{{"id":"{id}","ts":"2026-03-01T{hour:02}:00:00Z","tenant_id":"t1","meter":"ai_tokens","value":{value}}}"#
        )
    };
    let big = write(
        dir.path(),
        "big.ndjson",
        &format!("{}\n{}\n", ev("a", 10, "1e308"), ev("b", 11, "1e308")),
    );
    let small = write(dir.path(), "small.ndjson", &(ev("c", 12, "1") + "\n"));
    let lake = dir.path().join("lake");
    let l = lake.to_str().unwrap();
    assert_eq!(ingest(&lake, &[&big], &[])["accepted"], 2);
    let log = fs::read_to_string(lake.join("_log/00000001.json")).unwrap();
    assert!(log.contains(r#""value_sum": "inf""#), "{log}");
    assert!(log.contains(r#""abs_sum": "inf""#), "{log}");
    assert_eq!(lake_stats(&lake)["rows"], 2);
    assert_eq!(ingest(&lake, &[&small], &[])["accepted"], 1);
    ok(&["rollup", "--lake", l, "--granularity", "day"]);
    ok(&["compact", "--lake", l]);
    let stats = lake_stats(&lake);
    assert_eq!(
        (stats["rows"].as_u64(), stats["files"].as_u64()),
        (Some(3), Some(1))
    );
}

/// A CSV file with CRLF line endings is quarantined as one with LF endings: the same line
/// numbers (blank lines and a quoted field spanning lines counted) and each record as
/// written, without a line break of the one before it.
#[test]
fn crlf_csv_rejections_name_their_own_line_and_keep_the_record_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "id,ts,tenant_id,meter,value",
        "a,2026-10-01T10:00:00Z,acme,api_calls,1",
        "b,2026-10-01T10:00:00Z,acme,api_calls,-1",
        "\"c\u{1}NL\u{1}x\",2026-10-01T10:00:00Z,acme,api_calls,2",
        "",
        "d,2026-10-01T10:00:00Z,acme,api_calls,-3",
        "e,2026-10-01T10:00:00Z,acme,api_calls,4",
    ];
    for eol in ["\n", "\r\n"] {
        // The quoted id holds a line break of the file's own kind (line 4 and 5).
        let text: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
        let text = text.replace("\u{1}NL\u{1}", eol);
        let input = write(dir.path(), "c.csv", &text);
        let lake = dir.path().join(format!("lake{}", eol.len()));
        let v = ingest(&lake, &[&input], &[]);
        assert_eq!(
            (v["accepted"].as_u64(), v["rejected"].as_u64()),
            (Some(2), Some(3))
        );
        let got: Vec<(u64, String)> = quarantine(&lake)
            .iter()
            .map(|r| {
                (
                    r["line"].as_u64().unwrap(),
                    r["record"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = vec![
            (3, lines[2].to_string()),
            (4, lines[3].replace("\u{1}NL\u{1}", eol)),
            (7, lines[5].to_string()),
        ];
        assert_eq!(got, want, "line ending {eol:?}");
    }
}

/// Memory sizes of 0 are refused by the flag's name, with nothing written.
#[test]
fn zero_memory_sizes_are_refused_by_their_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "e.ndjson", &format!("{GOOD}\n"));
    let lake = dir.path().join("lake");
    for flag in ["--dedup-memory-mb", "--memory-budget-mb"] {
        let args = [
            "ingest",
            input.to_str().unwrap(),
            "--lake",
            lake.to_str().unwrap(),
            flag,
            "0",
        ];
        assert_rejected(flag, &args, &[flag, "'0'"]);
    }
    assert!(!lake.exists());
}
