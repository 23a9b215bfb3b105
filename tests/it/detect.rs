//! `meterlake detect`: detectors against independent folds, no look-ahead, the generator's
//! labelled anomalies found through the lake, bad input named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::{IncidentRow, assert_rejected, ok, read_incidents, read_lake, write};

const HOUR: i64 = 3_600_000_000;

fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            h.iter()
                .zip(rec.unwrap().iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Hourly series from 2026-09-01 in a CSV file.
fn series_csv(dir: &Path, name: &str, series: &[(&str, Vec<f64>)]) -> std::path::PathBuf {
    series_csv_every(dir, name, 3600, series)
}

/// Series with a point every `step` seconds from 2026-09-01 in a CSV file.
fn series_csv_every(
    dir: &Path,
    name: &str,
    step: i64,
    series: &[(&str, Vec<f64>)],
) -> std::path::PathBuf {
    let mut text = String::from("series_id,ts,value\n");
    for (id, ys) in series {
        for (i, y) in ys.iter().enumerate() {
            let t = chrono::DateTime::from_timestamp(1_788_220_800 + i as i64 * step, 0).unwrap();
            text.push_str(&format!("{id},{},{y}\n", t.format("%Y-%m-%dT%H:%M:%SZ")));
        }
    }
    write(dir, name, &text)
}

/// Runs `detect --series INPUT --out flags.csv EXTRA...` (beside the input) and reads the
/// flags back.
fn detect_rows(input: &Path, extra: &[&str]) -> Vec<BTreeMap<String, String>> {
    let out = input.with_file_name("flags.csv");
    let mut args = vec![
        "detect",
        "--series",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args);
    csv_rows(&out)
}

/// A deterministic noisy series (LCG), level 100, spread ~10.
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            100.0 + ((x >> 33) % 2001) as f64 / 100.0 - 10.0
        })
        .collect()
}

#[test]
fn rolling_zscore_matches_a_fold_and_cooldown_zero_reports_every_flag() {
    let d = tempfile::tempdir().unwrap();
    let mut y = noise(300, 3);
    y[120] = 180.0;
    y[121] = 175.0;
    y[200] = 20.0;
    let input = series_csv(d.path(), "s.csv", &[("a", y.clone())]);
    let got = detect_rows(
        &input,
        &["--detectors", "zscore", "--window", "50", "--cooldown", "0"],
    );
    // The fold: mean and sample sd of the previous min(i, 50) points, from 30 points on.
    let mut want = BTreeMap::new();
    for i in 30..y.len() {
        let w = &y[i.saturating_sub(50)..i];
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let z = (y[i] - mean) / sd;
        if z.abs() > 3.0 {
            want.insert(i, (z.abs(), mean));
        }
    }
    assert!(
        want.contains_key(&120) && want.contains_key(&200),
        "{want:?}"
    );
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (row, (i, (z, mean))) in got.iter().zip(&want) {
        let t = chrono::DateTime::from_timestamp(1_788_220_800 + *i as i64 * 3600, 0).unwrap();
        assert_eq!(
            row["ts"],
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "{row:?} vs {i}"
        );
        let score: f64 = row["score"].parse().unwrap();
        let expected: f64 = row["expected"].parse().unwrap();
        assert!((score - z).abs() < 1e-6 * z, "{i}: {score} vs {z}");
        assert!(
            (expected - mean).abs() < 1e-9 * mean,
            "{i}: {expected} vs {mean}"
        );
        assert_eq!(row["detector"], "zscore");
        assert_eq!(row["value"].parse::<f64>().unwrap(), y[*i]);
    }
    // --since: the same flags from that instant on (earlier points still warm up).
    let since = detect_rows(
        &input,
        &[
            "--detectors",
            "zscore",
            "--window",
            "50",
            "--cooldown",
            "0",
            "--since",
            "2026-09-08",
        ],
    );
    let later: Vec<_> = got
        .iter()
        .filter(|r| r["ts"].as_str() >= "2026-09-08")
        .cloned()
        .collect();
    assert!(!since.is_empty() && since.len() < got.len());
    assert_eq!(since, later);
    // With the default cooldown the two spike hours are one incident, reported once.
    let got = detect_rows(&input, &["--detectors", "zscore", "--window", "50"]);
    assert!(got.len() < want.len(), "{got:?}");
    assert!(got.iter().all(|r| !r["incident"].is_empty()));
}

#[test]
fn velocity_spikes_need_volume_and_seasonal_peaks_are_not_anomalies() {
    let d = tempfile::tempdir().unwrap();
    // Three weeks of a weekday/weekend daily cycle: peaks at 14:00 UTC, quiet nights.
    let cycle = |i: usize| {
        let h = (i % 24) as f64;
        let weekend = matches!((i / 24 + 2) % 7, 5 | 6); // 2026-09-01 is a Tuesday
        let day = (-((h - 14.0) / 4.0).powi(2)).exp();
        (if weekend { 30.0 } else { 120.0 }) * day + 5.0
    };
    let n = 24 * 21;
    let base: Vec<f64> = (0..n)
        .map(|i| (cycle(i) + noise(n, 5)[i] / 20.0 - 5.0).round())
        .collect();
    let mut spiky = base.clone();
    spiky[24 * 18 + 3] = 400.0; // 03:00 on a weekday: normally ~5
    let mut tiny = vec![1.0; n];
    tiny[24 * 18 + 3] = 6.0; // 1 -> 6: below the minimum volume
    let mut dropped = base.clone();
    for v in &mut dropped[24 * 19 + 9..24 * 19 + 18] {
        *v = 0.0; // a weekday's working hours at zero
    }
    let input = series_csv(
        d.path(),
        "s.csv",
        &[
            ("base", base),
            ("spiky", spiky),
            ("tiny", tiny),
            ("dropped", dropped),
        ],
    );
    // Velocity is not among a plain series' defaults: asked for here.
    let rows = detect_rows(&input, &["--detectors", "seasonal,velocity"]);
    let of = |id: &str| {
        rows.iter()
            .filter(|r| r["series_id"] == id)
            .collect::<Vec<_>>()
    };
    // The daily and weekly cycle alone: no peak flagged, at most a stray low-severity
    // outlier of the noise (|z| just over 3 happens at 3σ).
    let base = of("base");
    assert!(
        base.len() <= 2 && base.iter().all(|r| r["severity"] == "low"),
        "{base:?}"
    );
    // 1 -> 6 calls is no velocity incident (a flat series' jump still is a z-score outlier
    // in a file; on the lake the event-count guard takes it out too).
    assert!(
        of("tiny")
            .iter()
            .all(|r| !r["detectors"].contains("velocity")),
        "{:?}",
        of("tiny")
    );
    let spiky = of("spiky");
    assert!(spiky.len() <= base.len() + 1, "{spiky:?}");
    let spike = spiky
        .iter()
        .find(|r| r["detectors"].contains("velocity_spike"))
        .unwrap();
    assert_eq!(spike["ts"], "2026-09-19T03:00:00Z");
    assert_eq!(spike["severity"], "critical");
    let dropped = of("dropped");
    assert!(
        dropped
            .iter()
            .any(|r| r["ts"] == "2026-09-20T09:00:00Z" && r["detectors"].contains("velocity_drop")),
        "{dropped:?}"
    );
}

/// Five-minute points of a daily cycle with noise (deterministic), `days` long.
fn five_minute_days(days: usize, seed: u64) -> Vec<f64> {
    let n = days * 288;
    let e = noise(n, seed);
    (0..n)
        .map(|i| 30.0 * (2.0 * std::f64::consts::PI * (i % 288) as f64 / 288.0).sin() + e[i])
        .collect()
}

#[test]
fn plain_series_defaults_skip_routine_jobs_keep_a_level_shift_to_one_incident_and_no_fraud() {
    let d = tempfile::tempdir().unwrap();
    // A nightly job at 03:00 whose start drifts by up to 25 minutes: routine.
    let mut job = five_minute_days(21, 3);
    for day in 0..21 {
        let start = day * 288 + 36 + (day * 7) % 6; // 03:00 + 0..25 min
        for v in &mut job[start..start + 3] {
            *v += 150.0;
        }
    }
    // A level shift: +80 % from day 14 on, for a week.
    let mut shift = five_minute_days(21, 4);
    for v in &mut shift[14 * 288..] {
        *v *= 1.8;
    }
    // One real spike on day 17 at noon.
    let mut spike = five_minute_days(21, 5);
    spike[17 * 288 + 144] += 200.0;
    let input = series_csv_every(
        d.path(),
        "five.csv",
        300,
        &[("job", job), ("shift", shift), ("spike", spike)],
    );
    let rows = detect_rows(&input, &[]);
    let of = |id: &str| {
        rows.iter()
            .filter(|r| r["series_id"] == id)
            .collect::<Vec<_>>()
    };
    // The spike is found, at its point.
    assert!(
        of("spike")
            .iter()
            .any(|r| r["ts"] == "2026-09-18T12:00:00Z"),
        "{rows:?}"
    );
    // The level shift is one incident: every reported row of it in one incident.
    let shift = of("shift");
    let incidents: std::collections::BTreeSet<&String> =
        shift.iter().map(|r| &r["incident"]).collect();
    assert!(!shift.is_empty() && incidents.len() == 1, "{shift:?}");
    assert!(
        shift[0]["ts"].as_str() >= "2026-09-15T00:00:00Z",
        "{shift:?}"
    );
    // With a margin of one robust standard deviation, the drifting job is not flagged once
    // the detector has seen it (warm-up: two days).
    let wide = detect_rows(&input, &["--seen-before", "1"]);
    assert!(
        wide.iter()
            .all(|r| r["series_id"] != "job" || r["ts"].as_str() < "2026-09-04"),
        "{wide:?}"
    );
    // Without the "seen before" rule the same job is flagged on later days.
    let strict = detect_rows(&input, &["--seen-before", "off"]);
    assert!(
        strict
            .iter()
            .any(|r| r["series_id"] == "job" && r["ts"].as_str() >= "2026-09-04"),
        "{strict:?}"
    );
    // Nothing on a plain series is a fraud suspect, and pattern detectors are refused there.
    assert!(
        rows.iter().all(|r| r["fraud_suspect"] == "false"),
        "{rows:?}"
    );
    let out = d.path().join("flags.csv");
    assert_rejected(
        "pattern detectors on a plain series",
        &[
            "detect",
            "--series",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--detectors",
            "seasonal,pattern",
        ],
        &["--detectors", "--lake"],
    );
}

#[test]
fn bad_parameters_and_input_are_named() {
    let d = tempfile::tempdir().unwrap();
    let input = series_csv(d.path(), "s.csv", &[("a", noise(50, 1))]);
    let out = d.path().join("o.csv");
    let no_value = write(d.path(), "bad.csv", "series_id,ts,amount\na,2026-01-01,1\n");
    let not_a_number = write(
        d.path(),
        "bad2.csv",
        "series_id,ts,value\na,2026-01-01,1\na,2026-01-02,x\n",
    );
    let (input, no_value, not_a_number) = (
        input.to_str().unwrap(),
        no_value.to_str().unwrap(),
        not_a_number.to_str().unwrap(),
    );
    let cases: [(&str, &str, Vec<&str>, &[&str]); 15] = [
        (
            "an unknown detector",
            input,
            vec!["--detectors", "zscore,magic"],
            &["--detectors"],
        ),
        (
            "a negative threshold",
            input,
            vec!["--threshold=-1"],
            &["--threshold"],
        ),
        (
            "a cooldown that is none",
            input,
            vec!["--cooldown", "soon"],
            &["--cooldown"],
        ),
        (
            "a likelihood that is no tail probability",
            input,
            vec!["--likelihood", "0.7"],
            &["--likelihood", "(0, 0.5)"],
        ),
        (
            "a likelihood that is no number",
            input,
            vec!["--likelihood", "rare"],
            &["--likelihood", "`rare`"],
        ),
        (
            "a likelihood mean of no points",
            input,
            vec!["--likelihood", "0.001", "--likelihood-points", "0"],
            &["--likelihood-points", "1 to 1,000"],
        ),
        (
            "likelihood points with the likelihood off",
            input,
            vec!["--likelihood", "off", "--likelihood-points", "5"],
            &["--likelihood-points", "--likelihood TAIL"],
        ),
        (
            "a negative seen-before margin",
            input,
            vec!["--seen-before=-1"],
            &["--seen-before", "≥ 0"],
        ),
        (
            "a seen-before margin that is no number",
            input,
            vec!["--seen-before", "wide"],
            &["--seen-before", "`wide`"],
        ),
        (
            "a level shift that is no duration",
            input,
            vec!["--level-shift", "long"],
            &["--level-shift"],
        ),
        // The flag the user typed and its range in the user's unit (percent).
        (
            "a drop over 100 %",
            input,
            vec!["--drop-percent", "120"],
            &["--drop-percent", "120", "(0, 100)"],
        ),
        (
            "a drop of 0 %",
            input,
            vec!["--drop-percent", "0"],
            &["--drop-percent", "(0, 100)"],
        ),
        (
            "a spike of 0 %",
            input,
            vec!["--spike-percent", "0"],
            &["--spike-percent"],
        ),
        (
            "a file without a value column",
            no_value,
            vec![],
            &["bad.csv", "value"],
        ),
        (
            "a value that is no number",
            not_a_number,
            vec![],
            &["line 3"],
        ),
    ];
    for (case, series, extra, want) in cases {
        let mut a = vec!["detect", "--series", series, "--out", out.to_str().unwrap()];
        a.extend(extra);
        assert_rejected(case, &a, want);
    }
}

#[test]
fn generated_anomalies_are_found_with_few_false_alarms() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("ev.ndjson");
    let labels = d.path().join("labels.csv");
    let lake = d.path().join("lake");
    ok(&[
        "generate",
        "-q",
        "--tenants",
        "24",
        "--days",
        "35",
        "--start",
        "2026-09-01",
        "--seed",
        "11",
        "--out",
        events.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    ok(&[
        "ingest",
        "-q",
        events.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_str(
        ok(&[
            "detect",
            "--lake",
            lake.to_str().unwrap(),
            "--output",
            "json",
        ])
        .trim(),
    )
    .unwrap();
    let inc = read_incidents(&lake);
    assert_eq!(summary["incidents"].as_u64().unwrap() as usize, inc.len());
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    };
    let labels: Vec<(String, String, i64, i64, String)> = csv_rows(&labels)
        .into_iter()
        .map(|r| {
            (
                r["tenant_id"].clone(),
                r["meter"].clone(),
                parse(&r["start"]),
                parse(&r["end"]),
                r["kind"].clone(),
            )
        })
        .collect();
    // Which detectors answer for which kind.
    let kind_of = |dets: &str, meter: &str| -> Vec<&'static str> {
        let d: Vec<&str> = dets.split('+').collect();
        let mut k = Vec::new();
        if meter == "storage_bytes" {
            if d.contains(&"seasonal") {
                k.push("leak");
            }
            return k;
        }
        if d.contains(&"velocity_spike") || d.contains(&"seasonal") {
            k.push("spike");
        }
        if d.contains(&"off_hours") || d.contains(&"user_burst") {
            k.push("night_burst");
        }
        if d.contains(&"bot") {
            k.push("bot");
        }
        if d.contains(&"velocity_drop") {
            k.push("drop");
        }
        k
    };
    let overlaps = |l: &(String, String, i64, i64, String), i: &IncidentRow| {
        l.0 == i.tenant && l.1 == i.meter && i.start < l.3 + HOUR && i.end > l.2 - HOUR
    };
    let mut report = BTreeMap::new();
    for kind in ["spike", "night_burst", "bot", "drop", "leak"] {
        let ls: Vec<_> = labels.iter().filter(|l| l.4 == kind).collect();
        let found = ls
            .iter()
            .filter(|l| {
                inc.iter()
                    .any(|i| kind_of(&i.detectors, &i.meter).contains(&kind) && overlaps(l, i))
            })
            .count();
        assert!(!ls.is_empty(), "{kind}: no label in the generated data");
        report.insert(kind, (found, ls.len()));
    }
    let serious: Vec<&IncidentRow> = inc
        .iter()
        .filter(|i| i.severity == "high" || i.severity == "critical")
        .collect();
    let true_serious = serious
        .iter()
        .filter(|i| labels.iter().any(|l| overlaps(l, i)))
        .count();
    let fraud: Vec<&IncidentRow> = serious.iter().copied().filter(|i| i.fraud).collect();
    let true_fraud = fraud
        .iter()
        .filter(|i| labels.iter().any(|l| overlaps(l, i)))
        .count();
    // False alarms: incidents on no label. At the default |z| > 3, Gaussian noise flags
    // 0.27 % of its points, and an incident holds at least one flagged point: detectors no
    // worse than their threshold raise at most 0.27 % of the points as false incidents. The
    // points are every series (tenant × meter) times the hours the events span, both
    // counted here from the lake's rows (138 series × 840 hours: at most 312).
    let rows = read_lake(&lake);
    let series: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.tenant.as_str(), r.meter.as_str()))
        .collect();
    let (first, last) = rows
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), r| (a.min(r.ts), b.max(r.ts)));
    let hours = last.div_euclid(HOUR) - first.div_euclid(HOUR) + 1;
    let allowed = (0.0027 * series.len() as f64 * hours as f64).floor() as usize;
    let false_alarms = inc
        .iter()
        .filter(|i| !labels.iter().any(|l| overlaps(l, i)))
        .count();
    eprintln!(
        "recall (found/labels) {report:?}; high or critical incidents {true_serious}/{} on a label; \
         fraud suspects {true_fraud}/{}; all incidents {}, {false_alarms} on no label (at most {allowed})",
        serious.len(),
        fraud.len(),
        inc.len()
    );
    assert!(
        false_alarms <= allowed,
        "{false_alarms} false alarms, more than 0.27 % of {} series × {hours} hours",
        series.len()
    );
    for kind in ["spike", "night_burst", "bot", "drop"] {
        let (f, n) = report[kind];
        assert!(f as f64 >= 0.9 * n as f64, "{kind}: found {f} of {n}");
    }
    let (f, n) = report["leak"];
    assert!(f as f64 >= 0.5 * n as f64, "leak: found {f} of {n}");
    assert!(
        true_serious as f64 >= 0.75 * serious.len() as f64,
        "{true_serious} of {}",
        serious.len()
    );
    assert!(
        !fraud.is_empty() && true_fraud as f64 >= 0.75 * fraud.len() as f64,
        "{true_fraud} of {}",
        fraud.len()
    );
    // Same input, same bytes.
    let first = std::fs::read(lake.join("anomalies/granularity=hour/incidents.parquet")).unwrap();
    ok(&["detect", "--lake", lake.to_str().unwrap()]);
    assert_eq!(
        first,
        std::fs::read(lake.join("anomalies/granularity=hour/incidents.parquet")).unwrap()
    );
}

/// The `--series` defaults' warm-up (seasonal detector with the anomaly likelihood): two
/// seasons + 30 residuals + the likelihood's 100 learned means, 144 points of a daily
/// series. A 10x spike inside it cannot be flagged, one after it is, and the summary says
/// how many points were inside the warm-up.
#[test]
fn the_series_defaults_state_their_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    for (spike, flagged) in [(143usize, false), (150, true)] {
        let mut ys = noise(170, 7);
        ys[spike] = 1000.0;
        let input = series_csv_every(dir.path(), "d.csv", 86_400, &[("d", ys)]);
        let rows = detect_rows(&input, &[]);
        assert_eq!(!rows.is_empty(), flagged, "spike at {spike}: {rows:?}");
        let out = dir.path().join("flags.csv");
        let s: serde_json::Value = serde_json::from_str(&ok(&[
            "detect",
            "--series",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--output",
            "json",
        ]))
        .unwrap();
        assert_eq!(s["warming"], 2 * 7 + 30 + 100, "{s}");
    }
    // Without the likelihood, 44 points.
    let input = dir.path().join("d.csv");
    let out = dir.path().join("flags.csv");
    let s: serde_json::Value = serde_json::from_str(&ok(&[
        "detect",
        "--series",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--likelihood",
        "off",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(s["warming"], 44, "{s}");
}
