//! kill -9 at any instant leaves the lake consistent, and a re-run finishes exactly once.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

struct Truth {
    events: u64,
    duplicates: u64,
    malformed: u64,
    sums: serde_json::Value,
}

fn generate(
    dir: &std::path::Path,
    name: &str,
    seed: u64,
    tenants: u32,
) -> (std::path::PathBuf, Truth) {
    let out = dir.join(name);
    let s = ok(&[
        "generate",
        "--tenants",
        &tenants.to_string(),
        "--days",
        "20",
        "--start",
        "2026-02-01",
        "--seed",
        &seed.to_string(),
        "--scale",
        "0.3",
        "--out",
        out.to_str().unwrap(),
        "--summary",
    ]);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let t = Truth {
        events: v["events"].as_u64().unwrap(),
        duplicates: v["duplicates"].as_u64().unwrap(),
        malformed: v["malformed"].as_u64().unwrap(),
        sums: v["value_sums"].clone(),
    };
    (out, t)
}

/// The glob view of the lake (what DuckDB sees) equals the log's view and holds no id twice.
fn assert_consistent(lake: &std::path::Path) -> Vec<Row> {
    // `lake stats` recovers an interrupted commit first (no writer is running).
    let stats = lake_stats(lake);
    let rows = read_lake(lake);
    assert_eq!(
        stats["rows"].as_u64().unwrap(),
        rows.len() as u64,
        "log and files agree"
    );
    let mut ids: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.tenant.as_str(), r.id.as_str()))
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no event twice");
    assert!(
        !lake.join("_staging").exists()
            || std::fs::read_dir(lake.join("_staging"))
                .unwrap()
                .next()
                .is_none(),
        "staging cleaned"
    );
    rows
}

fn check_truth(rows: &[Row], truths: &[&Truth]) {
    let events: u64 = truths.iter().map(|t| t.events).sum();
    assert_eq!(rows.len() as u64, events);
    let got = sums(rows);
    for (meter, _) in truths[0].sums.as_object().unwrap() {
        let want: f64 = truths
            .iter()
            .map(|t| t.sums[meter].as_f64().unwrap_or(0.0))
            .sum();
        assert_close(got[meter], want, meter);
    }
}

#[test]
fn kill_minus_9_mid_ingest_then_rerun_counts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ta) = generate(dir.path(), "a.ndjson", 11, 30);
    let (b, tb) = generate(dir.path(), "b.ndjson", 12, 10);
    let lake = dir.path().join("lake");
    // a is committed whole first; b is then killed at several instants.
    let va = ingest(&lake, &[&a], &[]);
    assert_eq!(va["accepted"].as_u64().unwrap(), ta.events);
    assert!(
        ta.events > 30_000,
        "a's keys ({}) do not fit in 1 MiB",
        ta.events
    );
    let mut killed_mid_run = 0;
    for delay_ms in [30u64, 120, 250, 400, 700, 1100] {
        let mut child = Command::new(BIN)
            .args([
                "ingest",
                b.to_str().unwrap(),
                a.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
                "--quiet",
                "--memory-budget-mb",
                "2",
                // Spill the dedup index too: a kill may land while runs are written.
                "--dedup-memory-mb",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let rows = assert_consistent(&lake);
        // Either b's commit happened whole or not at all.
        let n = rows.len() as u64;
        assert!(
            n == ta.events || n == ta.events + tb.events,
            "partial commit visible: {n}"
        );
    }
    assert!(
        killed_mid_run >= 2,
        "the test should kill some runs mid-way ({killed_mid_run})"
    );
    let v = ingest(&lake, &[&b, &a], &[]);
    let rows = assert_consistent(&lake);
    check_truth(&rows, &[&ta, &tb]);
    // The final run either did b's work or found it done; a is always skipped.
    let skipped = v["skipped"].as_array().unwrap().len();
    assert!(skipped >= 1);
    if skipped == 1 {
        assert_eq!(v["accepted"].as_u64().unwrap(), tb.events);
        assert_eq!(v["duplicates"].as_u64().unwrap(), tb.duplicates);
        assert_eq!(v["rejected"].as_u64().unwrap(), tb.malformed);
    }
}

#[test]
fn a_crash_at_each_step_of_the_commit_protocol_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ta) = generate(dir.path(), "a.ndjson", 21, 6);
    for point in ["staged", "logged", "published_half"] {
        let lake = dir.path().join(format!("lake-{point}"));
        let o = Command::new(BIN)
            .args([
                "ingest",
                a.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
                "--quiet",
                "--memory-budget-mb",
                "1",
            ])
            .env("MLK_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{point}: the crash hook fired");
        let rows = assert_consistent(&lake);
        let committed = point != "staged";
        assert_eq!(
            rows.len() as u64,
            if committed { ta.events } else { 0 },
            "{point}"
        );
        let v = ingest(&lake, &[&a], &[]);
        assert_eq!(
            v["accepted"].as_u64().unwrap(),
            if committed { 0 } else { ta.events },
            "{point}: {v}"
        );
        let rows = assert_consistent(&lake);
        check_truth(&rows, &[&ta]);
    }
}

/// Lines `[from, to)` of a file, as a fraction of its lines, written to `name`.
fn slice_of(src: &std::path::Path, from: f64, to: f64) -> String {
    let text = std::fs::read_to_string(src).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = (
        (lines.len() as f64 * from) as usize,
        (lines.len() as f64 * to) as usize,
    );
    lines[a..b].iter().map(|l| format!("{l}\n")).collect()
}

/// Four ingest processes at once into one lake, on inputs that overlap event by event,
/// two of them killed (-9) mid-way and then run again, as an operator would: the lake
/// holds every distinct event exactly once, whichever writer committed it. Writers on
/// one lake take turns on its lock (a writer blocked on it, or killed holding it, loses
/// nothing: the next one recovers).
#[test]
fn concurrent_ingests_with_kills_store_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ta) = generate(dir.path(), "a.ndjson", 21, 12);
    let (b, tb) = generate(dir.path(), "b.ndjson", 22, 12);
    let inputs: Vec<std::path::PathBuf> = [
        slice_of(&a, 0.0, 0.67),
        slice_of(&a, 0.33, 1.0) + &slice_of(&b, 0.0, 0.5),
        slice_of(&b, 0.25, 1.0),
        slice_of(&b, 0.0, 0.5) + &slice_of(&a, 0.6, 1.0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, text)| write(dir.path(), &format!("in-{i}.ndjson"), &text))
    .collect();
    let spawn = |lake: &std::path::Path, input: &std::path::Path| {
        Command::new(BIN)
            .args([
                "ingest",
                input.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
            ])
            .args(["--quiet", "--memory-budget-mb", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut killed_total = 0;
    for (round, kills) in [
        [(0usize, 150u64), (2, 500)],
        [(3, 40), (1, 650)],
        [(1, 300), (0, 800)],
    ]
    .into_iter()
    .enumerate()
    {
        let lake = dir.path().join(format!("lake-{round}"));
        let mut children: Vec<_> = inputs.iter().map(|i| spawn(&lake, i)).collect();
        let start = std::time::Instant::now();
        for (victim, at_ms) in kills {
            let wait = Duration::from_millis(at_ms).saturating_sub(start.elapsed());
            std::thread::sleep(wait);
            children[victim].kill().unwrap(); // SIGKILL (a no-op if it has finished)
        }
        let mut killed = Vec::new();
        for (i, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            if o.status.success() {
                continue;
            }
            assert!(
                kills.iter().any(|(v, _)| *v == i),
                "ingest {i} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            killed.push(i);
        }
        killed_total += killed.len();
        // What was committed is whole and held once, killed runs or not.
        let rows = assert_consistent(&lake);
        assert!(rows.len() as u64 <= ta.events + tb.events);
        // The killed runs again, at once.
        let again: Vec<_> = killed.iter().map(|&i| spawn(&lake, &inputs[i])).collect();
        for c in again {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let rows = assert_consistent(&lake);
        check_truth(&rows, &[&ta, &tb]);
        // The log's accounting agrees: every accepted event is one row.
        let stats = lake_stats(&lake);
        assert_eq!(
            stats["ingested"]["accepted"].as_u64(),
            Some(rows.len() as u64),
            "round {round}: {stats}"
        );
    }
    assert!(
        killed_total >= 3,
        "the kills should land while ingests run or wait ({killed_total} of 6)"
    );
}
