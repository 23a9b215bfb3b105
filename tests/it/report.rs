//! `run`, `report`, `retention` and `forget` end to end through the binary, checked against
//! folds over the lake's rows read independently (arrow-rs), calamine for the workbook and
//! the PDF's own text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::{Array, AsArray};
use calamine::{Data, Reader, Xlsx, open_workbook};

use crate::common::{mlk, ok, parquet_batches, read_lake};

const DAY: i64 = 86_400_000_000;

pub(crate) struct Sample {
    _dir: tempfile::TempDir,
    pub(crate) lake: PathBuf,
    out: PathBuf,
    first: serde_json::Value,
    second: serde_json::Value,
    /// Report bytes after the first run.
    bytes: BTreeMap<PathBuf, Vec<u8>>,
}

fn run_json(lake: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
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

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The README's main job on data/, run twice (once, for every test here).
pub(crate) fn sample() -> &'static Sample {
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

fn report_json(kind: &str) -> serde_json::Value {
    let p = sample().out.join("reports").join(format!("{kind}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn stage<'a>(s: &'a serde_json::Value, name: &str) -> &'a str {
    s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {s}"))["note"]
        .as_str()
        .unwrap()
}

#[test]
fn run_writes_every_report_and_a_second_run_only_checks() {
    let s = sample();
    let f = &s.first;
    let n = |k: &str| f[k].as_u64().unwrap();
    assert!(n("read") > 0);
    assert_eq!(n("read"), n("accepted") + n("rejected") + n("duplicates"));
    assert_eq!(n("events"), read_lake(&s.lake).len() as u64);
    // Every kind in every format (CSV and Parquet add one file per further table).
    for kind in [
        "summary",
        "detailed",
        "forecast",
        "anomaly",
        "executive",
        "compliance",
    ] {
        for ext in ["json", "csv", "md", "html", "xlsx", "pdf", "parquet"] {
            let p = s.out.join("reports").join(format!("{kind}.{ext}"));
            assert!(p.is_file(), "missing {}", p.display());
        }
    }
    assert!(f["reports"].as_array().unwrap().len() > 42);
    // The invoices file is September's, as `invoice` computes it.
    let inv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.out.join("invoices/2026-09.json")).unwrap())
            .unwrap();
    let direct: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        s.lake.to_str().unwrap(),
        "--period",
        "2026-09",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(inv, direct);
    assert!(s.lake.join("quotas/quotas.parquet").is_file());
    // The second run ingests nothing new and recomputes nothing.
    let g = &s.second;
    assert_eq!(g["accepted"], 0);
    assert_eq!(g["read"], 0, "the input is skipped by checksum");
    for st in ["forecast", "anomalies", "reports"] {
        assert_eq!(stage(g, st), "up to date", "{st}");
    }
    assert_eq!(g["alerts_raised"], 0, "alerts are raised once");
    assert_eq!(g["anomalies"], f["anomalies"]);
    for (p, b) in &s.bytes {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
}

#[test]
fn reports_are_deterministic_bytes() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    for (kind, ext) in [
        ("summary", "xlsx"),
        ("executive", "pdf"),
        ("forecast", "html"),
        ("anomaly", "json"),
    ] {
        let o = dir.path().join(format!("{kind}.{ext}"));
        ok(&[
            "report",
            "--lake",
            s.lake.to_str().unwrap(),
            "--kind",
            kind,
            "--out",
            o.to_str().unwrap(),
        ]);
        let mine = std::fs::read(&o).unwrap();
        let theirs = std::fs::read(s.out.join("reports").join(format!("{kind}.{ext}"))).unwrap();
        assert!(mine == theirs, "{kind}.{ext} differs between runs");
    }
}

fn rows_of<'a>(r: &'a serde_json::Value, table: &str) -> &'a Vec<serde_json::Value> {
    r["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("no table {table}"))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The default period: the 30 UTC days up to midnight after the last event.
fn period(rows: &[crate::common::Row]) -> (i64, i64) {
    let last = rows.iter().map(|r| r.ts).max().unwrap();
    let to = last.div_euclid(DAY) * DAY + DAY;
    (to - 30 * DAY, to)
}

#[test]
fn summary_totals_and_events_match_a_fold_over_the_lake() {
    let s = sample();
    let rows = read_lake(&s.lake);
    let (from, to) = period(&rows);
    let (pfrom, pto) = (from - 30 * DAY, from);
    // meters.toml: api_calls and documents count events, ai_tokens and ingest_bytes sum.
    let fold = |a: i64, b: i64| {
        let mut m: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.ts >= a && r.ts < b) {
            let e = m.entry((r.tenant.clone(), r.meter.clone())).or_default();
            e.0 += match r.meter.as_str() {
                "api_calls" | "documents" => 1.0,
                _ => r.value,
            };
            e.1 += 1.0;
        }
        m
    };
    let (cur, prev) = (fold(from, to), fold(pfrom, pto));
    let r = report_json("summary");
    let usage = rows_of(&r, "usage");
    let mut checked = 0;
    for u in usage {
        let key = (
            u["tenant_id"].as_str().unwrap().to_string(),
            u["meter"].as_str().unwrap().to_string(),
        );
        let (c, n) = cur.get(&key).copied().unwrap_or_default();
        assert_eq!(u["events"].as_f64().unwrap(), n, "{key:?} events");
        if ["api_calls", "documents", "ai_tokens", "ingest_bytes"].contains(&key.1.as_str()) {
            assert_eq!(u["total"].as_f64().unwrap(), round2(c), "{key:?} total");
            let p = prev.get(&key).map_or(0.0, |x| x.0);
            assert_eq!(
                u["previous"].as_f64().unwrap(),
                round2(p),
                "{key:?} previous"
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "checked {checked} additive series");
    // Every tenant × meter with events in either period has a row.
    let listed: BTreeSet<(String, String)> = usage
        .iter()
        .map(|u| {
            (
                u["tenant_id"].as_str().unwrap().into(),
                u["meter"].as_str().unwrap().into(),
            )
        })
        .collect();
    for k in cur.keys().chain(prev.keys()) {
        assert!(listed.contains(k), "{k:?} missing");
    }
    // Per tenant events.
    for t in rows_of(&r, "tenants") {
        let id = t["tenant_id"].as_str().unwrap();
        let n = rows
            .iter()
            .filter(|r| r.tenant == id && r.ts >= from && r.ts < to)
            .count();
        assert_eq!(t["events"].as_f64().unwrap(), n as f64, "{id}");
    }
    // Executive KPIs add the tenants up; its features are counted from the properties.
    let e = report_json("executive");
    let mut features: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts >= from && r.ts < to) {
        let p: serde_json::Value = serde_json::from_str(&r.props).unwrap();
        if let Some(f) = p.get("feature").and_then(|f| f.as_str()) {
            *features.entry(f.to_string()).or_default() += 1;
        }
    }
    let top = rows_of(&e, "top_features");
    assert_eq!(top.len(), features.len().min(10));
    for f in top {
        let name = f["feature"].as_str().unwrap();
        assert_eq!(
            f["events"].as_f64().unwrap(),
            features[name] as f64,
            "{name}"
        );
    }
    for k in rows_of(&e, "kpis") {
        let m = k["meter"].as_str().unwrap();
        if ["api_calls", "documents", "ai_tokens", "ingest_bytes"].contains(&m) {
            let want: f64 = cur.iter().filter(|(k, _)| k.1 == m).map(|(_, v)| v.0).sum();
            assert!((k["total"].as_f64().unwrap() - want).abs() < 0.01, "{m}");
        }
    }
}

#[test]
fn insights_are_computed_from_the_data() {
    let r = report_json("summary");
    let ins = r["insights"].as_array().unwrap();
    assert!(
        !ins.is_empty(),
        "the sample has growth, anomalies and quotas to report"
    );
    let usage = rows_of(&r, "usage");
    for i in ins {
        let ev = &i["evidence"];
        match i["kind"].as_str().unwrap() {
            "fast_growth" | "decline" => {
                let u = usage
                    .iter()
                    .find(|u| u["tenant_id"] == i["tenant_id"] && u["meter"] == i["meter"])
                    .unwrap();
                let (c, p) = (
                    ev["current"].as_f64().unwrap(),
                    ev["previous"].as_f64().unwrap(),
                );
                assert!((c - u["total"].as_f64().unwrap()).abs() < 0.01);
                assert!((p - u["previous"].as_f64().unwrap()).abs() < 0.01);
                let pct = (c / p - 1.0) * 100.0;
                if i["kind"] == "fast_growth" {
                    assert!(pct >= 50.0, "{i}");
                } else {
                    assert!(pct <= -50.0, "{i}");
                }
            }
            "quota_reached" => {
                let q = rows_of(&r, "quotas")
                    .iter()
                    .find(|q| q["tenant_id"] == i["tenant_id"] && q["meter"] == i["meter"])
                    .unwrap();
                assert_eq!(ev["used"].as_f64().unwrap(), q["used"].as_f64().unwrap());
            }
            _ => {}
        }
        assert!(
            i["message"]
                .as_str()
                .unwrap()
                .contains(i["tenant_id"].as_str().unwrap_or(""))
        );
    }
    // The anomaly report's incidents are those of `detect --lake`, read back.
    let a = report_json("anomaly");
    let path = sample()
        .lake
        .join("anomalies/granularity=hour/incidents.parquet");
    let n: usize = parquet_batches(&path).map(|b| b.num_rows()).sum();
    let rows = read_lake(&sample().lake);
    let (from, _) = period(&rows);
    let in_period: usize = parquet_batches(&path)
        .map(|b| {
            let end = b
                .column_by_name("window_end")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone();
            (0..b.num_rows()).filter(|&i| end.value(i) > from).count()
        })
        .sum();
    assert!(n >= in_period);
    assert_eq!(rows_of(&a, "incidents").len(), in_period);
}

#[test]
fn xlsx_pdf_and_html_say_what_the_json_says() {
    let s = sample();
    let r = report_json("summary");
    // Workbook: an overview, then one sheet per table with the same numbers.
    let mut wb: Xlsx<_> = open_workbook(s.out.join("reports/summary.xlsx")).unwrap();
    let names = wb.sheet_names();
    assert_eq!(names[0], "overview");
    for t in ["tenants", "usage", "quotas", "alerts", "insights"] {
        assert!(names.iter().any(|n| n == t), "sheet {t} in {names:?}");
    }
    let sheet = wb.worksheet_range("usage").unwrap();
    let header: Vec<String> = sheet
        .rows()
        .next()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let usage = rows_of(&r, "usage");
    assert_eq!(sheet.height(), usage.len() + 1);
    for (row, u) in sheet.rows().skip(1).zip(usage) {
        for (h, cell) in header.iter().zip(row) {
            match (&u[h.as_str()], cell) {
                (serde_json::Value::Null, Data::Empty) => {}
                (serde_json::Value::String(a), Data::String(b)) => assert_eq!(a, b),
                (serde_json::Value::Number(a), Data::Float(b)) => {
                    assert_eq!(a.as_f64().unwrap(), *b, "{h}")
                }
                (a, b) => panic!("{h}: json {a} vs xlsx {b:?}"),
            }
        }
    }
    // PDF: standard fonts, text in the content streams (pdftotext reads it in tests/visual.sh).
    let pdf = std::fs::read(s.out.join("reports/summary.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = String::from_utf8_lossy(&pdf);
    for t in rows_of(&r, "tenants") {
        assert!(text.contains(t["tenant_id"].as_str().unwrap()), "{t}");
    }
    assert!(text.contains("/Helvetica"));
    // HTML: self-contained, one SVG per chart, every tenant listed.
    let html = std::fs::read_to_string(s.out.join("reports/forecast.html")).unwrap();
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    let svgs = html.matches("<svg").count();
    assert!(svgs >= 1, "forecast charts");
    assert!(
        html.contains("forecast interval"),
        "the band is in the legend"
    );
    let f = report_json("forecast");
    assert_eq!(
        rows_of(&f, "forecast").len(),
        parquet_batches(&s.lake.join("forecasts/granularity=day/forecast.parquet"))
            .map(|b| b.num_rows())
            .sum::<usize>()
    );
    let md = std::fs::read_to_string(s.out.join("reports/summary.md")).unwrap();
    assert!(md.starts_with("# Usage summary"));
    assert!(md.contains("| tenant_id | plan | events |"));
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = crate::common::write(
        dir.path(),
        "m.toml",
        "[tracking]\nretention_days = 90\n[forecast]\nmodel = \"naive\"\nhorizon = 7\n[anomalies]\nthreshold = 4.0\n",
    );
    let o = std::process::Command::new(crate::common::BIN)
        .args([
            "run",
            "--config",
            conf.to_str().unwrap(),
            "--print-config",
            "--model",
            "ses",
        ])
        .env("USAGE_TRACKING_EVENTS_RETENTION_DAYS", "30")
        .env("ANALYTICS_FORECAST_MODEL", "holt")
        .env("LIMITS_NOTIFICATION_ENABLED", "false")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: toml::Value = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    assert_eq!(
        c["forecast"]["model"].as_str(),
        Some("ses"),
        "flag over environment"
    );
    assert_eq!(
        c["forecast"]["horizon"].as_integer(),
        Some(7),
        "file over default"
    );
    assert_eq!(
        c["tracking"]["events_retention_days"].as_integer(),
        Some(30),
        "environment over file"
    );
    assert_eq!(c["tracking"]["retention_days"].as_integer(), Some(90));
    assert_eq!(c["anomalies"]["threshold"].as_float(), Some(4.0));
    assert_eq!(c["limits"]["notification_enabled"].as_bool(), Some(false));
    // Bad values name their source.
    let o = std::process::Command::new(crate::common::BIN)
        .args(["run", "--config", conf.to_str().unwrap(), "--print-config"])
        .env("ANALYTICS_ANOMALY_DETECTION_THRESHOLD", "high")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ANALYTICS_ANOMALY_DETECTION_THRESHOLD"));
    let bad = crate::common::write(dir.path(), "bad.toml", "[forecast]\nhorizn = 3\n");
    let o = mlk(&["run", "--config", bad.to_str().unwrap(), "--print-config"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("horizn"), "{err}");
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    for f in files_under(from) {
        let dst = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dst).unwrap();
    }
}

/// Strings of a column of any derived Parquet file (Utf8 or Utf8View).
fn strings(path: &Path, col: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in parquet_batches(path) {
        let Some(c) = b.column_by_name(col) else {
            return out;
        };
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
    }
    out
}

fn derived(lake: &Path) -> Vec<PathBuf> {
    ["rollups", "forecasts", "anomalies", "alerts", "quotas"]
        .iter()
        .flat_map(|d| {
            let p = lake.join(d);
            if p.exists() {
                files_under(&p)
            } else {
                Vec::new()
            }
        })
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

#[test]
fn forget_removes_a_tenant_and_a_user_everywhere_with_an_audit_record() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let before = read_lake(&lake);
    // The tenant with the most anomaly incidents, so every derived output holds it.
    let inc = lake.join("anomalies/granularity=hour/incidents.parquet");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in strings(&inc, "tenant_id").into_iter().flatten() {
        *counts.entry(t).or_default() += 1;
    }
    let tenant = counts
        .iter()
        .max_by_key(|(t, n)| (**n, std::cmp::Reverse((*t).clone())))
        .unwrap()
        .0
        .clone();
    let n = before.iter().filter(|r| r.tenant == tenant).count() as u64;
    assert!(n > 0);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "forget",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        &tenant,
        "--actor",
        "dpo@example.com",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(n));
    let after = read_lake(&lake);
    assert_eq!(after.len() as u64, before.len() as u64 - n);
    assert!(after.iter().all(|r| r.tenant != tenant));
    let kept: Vec<_> = before
        .iter()
        .filter(|r| r.tenant != tenant)
        .map(|r| r.id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let now: Vec<_> = after
        .iter()
        .map(|r| r.id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(kept, now, "nobody else's events changed");
    for p in derived(&lake) {
        assert!(
            strings(&p, "tenant_id")
                .iter()
                .flatten()
                .all(|t| *t != tenant),
            "{} still names {tenant}",
            p.display()
        );
    }
    for q in crate::common::quarantine(&lake) {
        assert!(
            !q["record"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{tenant}\""))
        );
    }
    // Again: nothing left, but the request is recorded again.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "forget",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        &tenant,
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(0));
    // A user of another tenant: their rows go, and the day rollup is recomputed without them.
    let other = after
        .iter()
        .find(|r| r.user.is_some() && r.meter == "api_calls")
        .unwrap()
        .clone();
    let user = other.user.clone().unwrap();
    let m = after
        .iter()
        .filter(|r| r.tenant == other.tenant && r.user.as_deref() == Some(&user))
        .count() as u64;
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "forget",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        &other.tenant,
        "--user",
        &user,
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(m));
    let last = read_lake(&lake);
    assert!(
        !last
            .iter()
            .any(|r| r.tenant == other.tenant && r.user.as_deref() == Some(&user))
    );
    let calls = last
        .iter()
        .filter(|r| r.tenant == other.tenant && r.meter == "api_calls")
        .count() as f64;
    let mut rolled = 0.0;
    for p in files_under(&lake.join("rollups/granularity=day/by=none/tz=UTC")) {
        if p.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        for b in parquet_batches(&p) {
            let t = arrow::compute::cast(
                b.column_by_name("tenant_id").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let mt = arrow::compute::cast(
                b.column_by_name("meter").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let (t, mt) = (t.as_string::<i32>(), mt.as_string::<i32>());
            let v = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone();
            for i in 0..b.num_rows() {
                if t.value(i) == other.tenant && mt.value(i) == "api_calls" {
                    rolled += v.value(i);
                }
            }
        }
    }
    assert_eq!(rolled, calls, "the rollup was recomputed without the user");
    // The audit log, as the compliance report shows it.
    let out = dir.path().join("compliance.json");
    ok(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--kind",
        "compliance",
        "--out",
        out.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let audit = rows_of(&c, "audit");
    let forgets: Vec<_> = audit.iter().filter(|a| a["action"] == "forget").collect();
    assert_eq!(forgets.len(), 3);
    assert_eq!(forgets[0]["actor"], "dpo@example.com");
    assert_eq!(forgets[0]["target"], format!("tenant={tenant}"));
    assert_eq!(forgets[0]["rows"].as_u64(), Some(n));
    assert_eq!(forgets[2]["rows"].as_u64(), Some(m));
}

#[test]
fn retention_drops_and_archives_expired_partitions_atomically() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let archive = dir.path().join("archive");
    copy_dir(&s.lake, &lake);
    let before = read_lake(&lake);
    // Keep 30 days back from 2026-10-01: everything dated before 2026-09-01 goes.
    let old = before
        .iter()
        .filter(|r| r.date.as_str() < "2026-09-01")
        .count() as u64;
    assert!(old > 0);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "retention",
        "--lake",
        lake.to_str().unwrap(),
        "--events-days",
        "30",
        "--rollups-days",
        "30",
        "--now",
        "2026-10-01",
        "--archive",
        archive.to_str().unwrap(),
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(old));
    let after = read_lake(&lake);
    assert_eq!(after.len() as u64, before.len() as u64 - old);
    assert!(after.iter().all(|r| r.date.as_str() >= "2026-09-01"));
    let archived: usize = files_under(&archive)
        .iter()
        .flat_map(|f| parquet_batches(f))
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        archived as u64, old,
        "the archive holds exactly what was dropped"
    );
    for p in files_under(&lake.join("rollups")) {
        let name = p.to_string_lossy();
        if let Some(i) = name.find("period=") {
            assert!(&name[i + 7..i + 17] >= "2026-09-01", "{name}");
        }
    }
    let out = dir.path().join("c.json");
    ok(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--kind",
        "compliance",
        "--out",
        out.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let a = rows_of(&c, "audit")
        .iter()
        .find(|a| a["action"] == "retention")
        .unwrap();
    assert_eq!(a["rows"].as_u64(), Some(old));
    assert!(a["target"].as_str().unwrap().contains("2026-09-01"));
    let dropped = v["rollup_partitions"].as_u64().unwrap();
    assert!(dropped > 0);
    assert!(
        a["detail"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; {dropped} rollup partitions")),
        "{a}"
    );
}

#[test]
fn report_errors_name_the_parameter() {
    let s = sample();
    let lake = s.lake.to_str().unwrap();
    let o = mlk(&[
        "report",
        "--lake",
        lake,
        "--kind",
        "summary",
        "--out",
        "/tmp/x.docx",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format"));
    let o = mlk(&[
        "report",
        "--lake",
        lake,
        "--kind",
        "summary",
        "--out",
        "/tmp/x.json",
        "--from",
        "2026-10-10",
        "--to",
        "2026-10-01",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--from"));
    let o = mlk(&[
        "report",
        "--lake",
        lake,
        "--kind",
        "summary",
        "--tenant",
        "nobody",
        "--out",
        "/tmp/x.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nobody has no events"));
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("lake");
    crate::common::ingest(
        &empty,
        &[&crate::common::write(
            dir.path(),
            "e.ndjson",
            "{\"tenant_id\":\"a\",\"meter\":\"api_calls\",\"ts\":\"2026-10-01T00:00:00Z\"}\n",
        )],
        &[],
    );
    let o = mlk(&[
        "report",
        "--lake",
        empty.to_str().unwrap(),
        "--kind",
        "forecast",
        "--out",
        dir.path().join("f.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no forecasts"));
}

#[test]
fn switches_turn_ingest_enforcement_and_alerts_off() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let alerts_before = std::fs::read(lake.join("alerts/alerts.parquet")).unwrap();
    let o = std::process::Command::new(crate::common::BIN)
        .args([
            "run",
            "--lake",
            lake.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
            "--enforcement",
            "false",
            "--kinds",
            "summary",
            "--formats",
            "json",
            "--output",
            "json",
            "--quiet",
        ])
        .env("USAGE_TRACKING_ENABLED", "false")
        .env("LIMITS_NOTIFICATION_ENABLED", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(stage(&v, "ingest").contains("tracking disabled"));
    assert_eq!(stage(&v, "alerts"), "notifications disabled");
    assert_eq!(
        std::fs::read(lake.join("alerts/alerts.parquet")).unwrap(),
        alerts_before
    );
    // Hard caps reached are reported as exceeded, not blocked, and marked not enforced.
    let q = lake.join("quotas/quotas.parquet");
    let status = strings(&q, "status");
    assert!(!status.iter().flatten().any(|s| s == "blocked"));
    let enforced: Vec<bool> = parquet_batches(&q)
        .flat_map(|b| {
            let c = b.column_by_name("enforced").unwrap().as_boolean().clone();
            (0..c.len()).map(move |i| c.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert!(enforced.iter().all(|e| !e));
    let original = strings(&s.lake.join("quotas/quotas.parquet"), "status");
    let blocked = original
        .iter()
        .flatten()
        .filter(|s| *s == "blocked")
        .count();
    assert!(blocked > 0, "the sample has tenants at hard caps");
    let exceeded = |v: &[Option<String>]| v.iter().flatten().filter(|s| *s == "exceeded").count();
    assert_eq!(exceeded(&status), exceeded(&original) + blocked);
}

#[test]
fn incident_status_follows_alerts_and_acknowledgements_are_audited() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let l = lake.to_str().unwrap();
    // Raise anomaly alerts for every incident of the sample (the run only raises the last 7 days').
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "alerts",
        "raise",
        "--lake",
        l,
        "--at",
        "latest",
        "--anomaly-days",
        "90",
        "--output",
        "json",
    ]))
    .unwrap();
    let anomaly: Vec<&serde_json::Value> = v["raised"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "anomaly")
        .collect();
    assert!(!anomaly.is_empty());
    let acked = anomaly[0];
    ok(&[
        "alerts",
        "ack",
        acked["id"].as_str().unwrap(),
        "--lake",
        l,
        "--by",
        "ops@example.com",
    ]);
    let out = dir.path().join("a.json");
    ok(&[
        "report",
        "--lake",
        l,
        "--kind",
        "anomaly",
        "--from",
        "2026-08-01",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let mut seen = BTreeMap::new();
    for i in rows_of(&r, "incidents") {
        let high = matches!(i["severity"].as_str().unwrap(), "high" | "critical");
        let mine = i["tenant_id"] == acked["tenant_id"]
            && i["meter"] == acked["meter"]
            && i["start"] == acked["period_start"];
        let want = match (high, mine) {
            (true, true) => "acknowledged",
            (true, false) => "alerted",
            (false, _) => "open",
        };
        assert_eq!(i["status"], want, "{i}");
        *seen.entry(want).or_insert(0) += 1;
    }
    assert_eq!(seen.get("acknowledged"), Some(&1));
    assert_eq!(seen.get("alerted").copied().unwrap_or(0), anomaly.len() - 1);
    let out = dir.path().join("c.json");
    ok(&[
        "report",
        "--lake",
        l,
        "--kind",
        "compliance",
        "--out",
        out.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let ack = rows_of(&c, "audit")
        .iter()
        .find(|a| a["action"] == "acknowledge")
        .unwrap();
    assert_eq!(ack["actor"], "ops@example.com");
    assert!(
        ack["target"]
            .as_str()
            .unwrap()
            .contains(acked["id"].as_str().unwrap())
    );
}

#[test]
fn idle_seats_are_priced_from_the_events() {
    // Professional includes 10 users, 5.00 per user over. 12 users are billed; 3 of them
    // were active on one day only: without them the 2 seats over would cost nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut ev = String::new();
    for u in 0..12 {
        let days: &[u32] = if u < 3 { &[5] } else { &[5, 6] };
        for d in days {
            ev.push_str(&format!(
                "{{\"id\":\"e{u}-{d}\",\"tenant_id\":\"t1\",\"user_id\":\"u{u}\",\"meter\":\"active_users\",\"ts\":\"2026-10-{d:02}T10:00:00Z\"}}\n"
            ));
        }
    }
    // API calls of other users are not seats.
    ev.push_str("{\"id\":\"x\",\"tenant_id\":\"t1\",\"user_id\":\"api-only\",\"meter\":\"api_calls\",\"ts\":\"2026-10-05T11:00:00Z\"}\n");
    let input = crate::common::write(dir.path(), "e.ndjson", &ev);
    let lake = dir.path().join("lake");
    crate::common::ingest(&lake, &[&input], &[]);
    let tenants = crate::common::write(dir.path(), "t.csv", "tenant_id,plan\nt1,professional\n");
    let out = dir.path().join("s.json");
    ok(&[
        "report",
        "--lake",
        lake.to_str().unwrap(),
        "--kind",
        "summary",
        "--tenants",
        tenants.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let i = r["insights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "idle_seats")
        .unwrap_or_else(|| panic!("no idle_seats in {}", r["insights"]));
    let e = &i["evidence"];
    assert_eq!(e["billed_seats"], 12.0);
    assert_eq!(e["one_day_users"], 3.0);
    assert_eq!(e["seats_over_allowance"], 2.0);
    assert_eq!(e["overage_cost"], 10.0);
    assert_eq!(e["overage_cost_without_them"], 0.0);
}
