//! `meterlake report` on the sample: totals and tables against folds over the lake's rows
//! read independently (arrow-rs), the anomaly report against the incidents file, the
//! workbook through calamine and the PDF's own text, deterministic bytes, and bad
//! parameters named. The insights have their own file, insights.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xlsx, open_workbook};

use crate::common::*;

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
        let theirs = std::fs::read(
            s.out
                .join("reports")
                .join(kind)
                .join(format!("{kind}.{ext}")),
        )
        .unwrap();
        assert!(mine == theirs, "{kind}.{ext} differs between runs");
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[test]
fn summary_totals_and_events_match_a_fold_over_the_lake() {
    let s = sample();
    let rows = read_lake(&s.lake);
    let (from, to) = default_period(&rows);
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
    // Per feature: events, tenants, and users as (tenant, user) pairs (ids are per tenant).
    type Feature = (usize, BTreeSet<String>, BTreeSet<(String, String)>);
    let mut features: BTreeMap<String, Feature> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts >= from && r.ts < to) {
        let p: serde_json::Value = serde_json::from_str(&r.props).unwrap();
        if let Some(f) = p.get("feature").and_then(|f| f.as_str()) {
            let e = features.entry(f.to_string()).or_default();
            e.0 += 1;
            e.1.insert(r.tenant.clone());
            if let Some(u) = &r.user {
                e.2.insert((r.tenant.clone(), u.clone()));
            }
        }
    }
    let top = rows_of(&e, "top_features");
    assert_eq!(top.len(), features.len().min(10));
    for f in top {
        let name = f["feature"].as_str().unwrap();
        let (n, tenants, users) = &features[name];
        assert_eq!(f["events"].as_f64().unwrap(), *n as f64, "{name}");
        assert_eq!(
            f["tenants"].as_f64().unwrap(),
            tenants.len() as f64,
            "{name}"
        );
        assert_eq!(f["users"].as_f64().unwrap(), users.len() as f64, "{name}");
    }
    // Active users (distinct count): the platform's busiest UTC day, users of every tenant
    // together; the period before likewise.
    let busiest = |a: i64, b: i64| {
        let mut days: BTreeMap<i64, BTreeSet<(String, String)>> = BTreeMap::new();
        for r in rows
            .iter()
            .filter(|r| r.meter == "active_users" && r.ts >= a && r.ts < b)
        {
            if let Some(u) = &r.user {
                days.entry(r.ts.div_euclid(DAY))
                    .or_default()
                    .insert((r.tenant.clone(), u.clone()));
            }
        }
        days.values().map(BTreeSet::len).max().unwrap_or(0) as f64
    };
    let mut seen = 0;
    for k in rows_of(&e, "kpis") {
        let m = k["meter"].as_str().unwrap();
        if ["api_calls", "documents", "ai_tokens", "ingest_bytes"].contains(&m) {
            let want: f64 = cur.iter().filter(|(k, _)| k.1 == m).map(|(_, v)| v.0).sum();
            assert!((k["total"].as_f64().unwrap() - want).abs() < 0.01, "{m}");
            seen += 1;
        }
        if m == "active_users" {
            assert_eq!(k["total"].as_f64().unwrap(), busiest(from, to), "{k}");
            assert_eq!(k["previous"].as_f64().unwrap(), busiest(pfrom, pto), "{k}");
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
}

/// The anomaly report lists the incidents of `detect --lake` that overlap its period (read
/// back from the incidents file here), and only those.
#[test]
fn anomaly_report_lists_the_incidents_of_its_period() {
    let s = sample();
    let (from, to) = default_period(&read_lake(&s.lake));
    let all = read_incidents(&s.lake);
    let rfc = |t: i64| {
        chrono::DateTime::from_timestamp_micros(t)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let want: BTreeSet<(String, String, String)> = all
        .iter()
        .filter(|i| i.start < to && i.end > from)
        .map(|i| (i.tenant.clone(), i.meter.clone(), rfc(i.start)))
        .collect();
    // The period leaves some out, so the filter is exercised both ways.
    assert!(
        !want.is_empty() && want.len() < all.len(),
        "{} of {} incidents in the period",
        want.len(),
        all.len()
    );
    let a = report_json("anomaly");
    let got: Vec<(String, String, String)> = rows_of(&a, "incidents")
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap().to_string();
            (s("tenant_id"), s("meter"), s("start"))
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per incident");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
}

#[test]
fn xlsx_pdf_and_html_say_what_the_json_says() {
    let s = sample();
    let r = report_json("summary");
    // Workbook: an overview, then one sheet per table with the same numbers.
    let mut wb: Xlsx<_> = open_workbook(s.out.join("reports/summary/summary.xlsx")).unwrap();
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
    // Instants are Excel dates (the quotas' periods), figures are numbers.
    let sheet = wb.worksheet_range("quotas").unwrap();
    let header: Vec<String> = sheet
        .rows()
        .next()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let col = header.iter().position(|h| h == "period_start").unwrap();
    for (row, q) in sheet.rows().skip(1).zip(rows_of(&r, "quotas")) {
        let want = chrono::DateTime::parse_from_rfc3339(q["period_start"].as_str().unwrap())
            .unwrap()
            .naive_utc();
        match &row[col] {
            // Excel's serial: days since 1899-12-30.
            Data::DateTime(d) => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1899, 12, 30)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap();
                let serial = (want - epoch).num_milliseconds() as f64 / 86_400_000.0;
                assert!((d.as_f64() - serial).abs() < 1e-9, "{d:?} against {want}");
            }
            other => panic!("period_start is {other:?}, not a date"),
        }
    }
    let overview = wb.worksheet_range("overview").unwrap();
    let events = overview
        .rows()
        .find(|r| r[0] == Data::String("Events".into()))
        .expect("the Events figure");
    let want = r["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "Events")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse::<f64>()
        .unwrap();
    assert_eq!(events[1], Data::Float(want), "a number, not text");
    // PDF: standard fonts, text in the content streams (pdftotext reads it in tests/visual.sh).
    let pdf = std::fs::read(s.out.join("reports/summary/summary.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = String::from_utf8_lossy(&pdf);
    for t in rows_of(&r, "tenants") {
        assert!(text.contains(t["tenant_id"].as_str().unwrap()), "{t}");
    }
    assert!(text.contains("/Helvetica"));
    // HTML: self-contained, one SVG per chart, every tenant listed.
    let html = std::fs::read_to_string(s.out.join("reports/forecast/forecast.html")).unwrap();
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
    // The accuracy headline: the median MASE and the share of series beating the seasonal
    // naive, from the metrics table's own columns.
    let metrics = s.lake.join("forecasts/granularity=day/metrics.parquet");
    let num = |c: &str| -> Vec<Option<f64>> {
        parquet_batches(&metrics)
            .flat_map(|b| {
                use arrow::array::AsArray;
                let a = b.column_by_name(c).unwrap().clone();
                a.as_primitive::<arrow::datatypes::Float64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (mase, naive) = (num("mase"), num("naive_mase"));
    let mut m: Vec<f64> = mase
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    m.sort_by(f64::total_cmp);
    let median = if m.len() % 2 == 1 {
        m[m.len() / 2]
    } else {
        (m[m.len() / 2 - 1] + m[m.len() / 2]) / 2.0
    };
    let fig = |label: &str| {
        f["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["label"] == label)
            .unwrap_or_else(|| panic!("no figure {label}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(fig("Median backtest MASE"), format!("{median:.3}"));
    let pairs: Vec<(f64, f64)> = mase
        .iter()
        .zip(&naive)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .collect();
    assert!(
        !pairs.is_empty(),
        "every series with a backtest has the naive's"
    );
    let beats = pairs.iter().filter(|(a, b)| a < b).count();
    assert_eq!(
        fig("Series beating the seasonal naive"),
        format!("{:.0} %", 100.0 * beats as f64 / pairs.len() as f64)
    );
    let md = std::fs::read_to_string(s.out.join("reports/summary/summary.md")).unwrap();
    assert!(md.starts_with("# Usage summary"));
    assert!(md.contains("| tenant_id | plan | events |"));
}

#[test]
fn report_errors_name_the_parameter() {
    let sample = sample().lake.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("lake");
    ingest(
        &empty,
        &[&write(
            dir.path(),
            "e.ndjson",
            "{\"tenant_id\":\"a\",\"meter\":\"api_calls\",\"ts\":\"2026-10-01T00:00:00Z\"}\n",
        )],
        &[],
    );
    let empty = empty.to_str().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (docx, json) = (out("x.docx"), out("x.json"));
    let cases: [(&str, &str, Vec<&str>, &str); 6] = [
        (
            "a start inside a day (reports add up whole UTC days)",
            sample,
            vec![
                "--kind",
                "summary",
                "--out",
                &json,
                "--from",
                "2026-10-01T07:00:00Z",
            ],
            "--from",
        ),
        (
            "an end inside a day, as a local time",
            sample,
            vec![
                "--kind",
                "summary",
                "--out",
                &json,
                "--to",
                "2026-10-02T12:00:00+05:00",
            ],
            "--to",
        ),
        (
            "an output extension that is no format",
            sample,
            vec!["--kind", "summary", "--out", &docx],
            "--format",
        ),
        (
            "a period that ends before it starts",
            sample,
            vec![
                "--kind",
                "summary",
                "--out",
                &json,
                "--from",
                "2026-10-10",
                "--to",
                "2026-10-01",
            ],
            "--from",
        ),
        (
            "a tenant with no events",
            sample,
            vec!["--kind", "summary", "--tenant", "nobody", "--out", &json],
            "nobody has no events",
        ),
        (
            "a forecast report of a lake without forecasts",
            empty,
            vec!["--kind", "forecast", "--out", &json],
            "no forecasts",
        ),
    ];
    for (case, lake, extra, want) in cases {
        let mut args = vec!["report", "--lake", lake];
        args.extend(extra);
        assert_rejected(case, &args, &[want]);
    }
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
    let input = write(dir.path(), "e.ndjson", &ev);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&input], &[]);
    let tenants = write(dir.path(), "t.csv", "tenant_id,plan\nt1,professional\n");
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

/// Every file under a directory with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("_audit")))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// A report reads what the stages wrote and never writes (but the access log's record of
/// the read, `_audit/`): on a lake of events alone it computes the day series in memory
/// and leaves every file as it was, and what it says equals what it says once `rollup`
/// has stored the day rollup it reads instead.
#[test]
fn a_report_never_writes_and_computes_what_the_rollup_stores() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let before = contents(&lake);
    let meters = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");
    let args = ["--meters", meters];
    let in_memory = report_to(&lake, "summary", &dir.path().join("a.json"), &args);
    assert!(
        contents(&lake) == before,
        "the report changed the lake, e.g. {:?}",
        files_under(&lake)
            .into_iter()
            .filter(|p| !before.contains_key(p))
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(!lake.join("rollups").exists());
    ok(&[
        "rollup",
        "--lake",
        lake.to_str().unwrap(),
        "--granularity",
        "day",
        "--meters",
        meters,
    ]);
    let stored = report_to(&lake, "summary", &dir.path().join("b.json"), &args);
    assert!(!rows_of(&stored, "usage").is_empty());
    assert_eq!(in_memory, stored);
}

/// `meterlake ... | head`: a reader that goes away ends the command quietly (exit 0, no
/// panic), whichever command printed; its files are written all the same.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let l = lake.to_str().unwrap();
    let json = dir.path().join("s.json");
    let flags = dir.path().join("flags.csv");
    let series = write(
        dir.path(),
        "s.csv",
        &(0..60)
            .map(|i| {
                format!(
                    "a,2026-01-01T{:02}:{:02}:00Z,{}\n",
                    i / 60,
                    i % 60,
                    if i == 50 { 900 } else { 10 + i % 3 }
                )
            })
            .fold("series_id,ts,value\n".to_string(), |a, l| a + &l),
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["rollup", "--lake", l, "--granularity", "day"],
        vec![
            "report",
            "--lake",
            l,
            "--kind",
            "summary",
            "--out",
            json.to_str().unwrap(),
        ],
        vec!["lake", "stats", "--lake", l],
        vec![
            "detect",
            "--series",
            series.to_str().unwrap(),
            "--detectors",
            "zscore",
            "--threshold",
            "3",
            "--out",
            flags.to_str().unwrap(),
        ],
    ];
    for args in cases {
        let o = with_closed_stdout(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !err.contains("panicked"),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
    assert!(json.exists() && flags.exists());
}

/// A gauge or statistic without a reading in a period has no value there (never a fake 0
/// and -100 %), and the executive report combines tenants by the meter's rule: `max` the
/// highest tenant's, a percentile not at all, a count the sum.
#[test]
fn gauges_without_a_reading_have_no_value_and_tenants_combine_by_rule() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "ev.ndjson",
        r#"{"id":"1","ts":"2026-09-10T10:00:00Z","tenant_id":"a","meter":"storage_bytes","value":5000000000}
{"id":"2","ts":"2026-09-10T10:00:00Z","tenant_id":"a","meter":"api_calls"}
{"id":"3","ts":"2026-10-10T10:00:00Z","tenant_id":"a","meter":"api_calls"}
{"id":"4","ts":"2026-10-05T10:00:00Z","tenant_id":"a","user_id":"u-2","meter":"latency","value":10}
{"id":"5","ts":"2026-10-06T11:00:00Z","tenant_id":"b","user_id":"u-2","meter":"latency","value":20}
{"id":"6","ts":"2026-10-06T11:00:00Z","tenant_id":"b","meter":"api_calls"}
"#,
    );
    let meters = write(
        dir.path(),
        "meters.toml",
        "[[meter]]\nname = \"api_calls\"\naggregation = \"count\"\n\
         [[meter]]\nname = \"storage_bytes\"\naggregation = \"latest\"\n\
         [[meter]]\nname = \"latency\"\naggregation = \"max\"\n\
         [[meter]]\nname = \"latency_p95\"\nevent = \"latency\"\naggregation = \"p95\"\n",
    );
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    let m = meters.to_str().unwrap();
    let period = ["--meters", m, "--from", "2026-10-01", "--to", "2026-10-31"];
    let s = report_to(&lake, "summary", &dir.path().join("s.json"), &period);
    let row = |r: &serde_json::Value, table: &str, t: &str, meter: &str| {
        rows_of(r, table)
            .iter()
            .find(|u| u["tenant_id"] == t && u["meter"] == meter)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} {meter} in {table}"))
    };
    // Storage: read in September only: none in October, 5 GB before, no change.
    let st = row(&s, "usage", "a", "storage_bytes");
    assert!(st["total"].is_null() && st["change_pct"].is_null(), "{st}");
    assert_eq!(st["previous"].as_f64().unwrap(), 5e9, "{st}");
    // A gauge with no reading in the previous period: none there either.
    let lat = row(&s, "usage", "a", "latency");
    assert_eq!(lat["total"].as_f64().unwrap(), 10.0, "{lat}");
    assert!(lat["previous"].is_null(), "{lat}");
    // Counts: 1 now, 1 before.
    let calls = row(&s, "usage", "a", "api_calls");
    assert_eq!(
        (calls["total"].as_f64(), calls["previous"].as_f64()),
        (Some(1.0), Some(1.0))
    );
    let d = report_to(&lake, "detailed", &dir.path().join("d.json"), &period);
    let st = row(&d, "comparison", "a", "storage_bytes");
    assert!(st["total"].is_null() && st["trend"] != "down", "{st}");
    // No events of it in the period: no weekday or hour of the tenant's on its row.
    assert!(
        st["tenant_busiest_weekday"].is_null() && st["tenant_peak_hour_local"].is_null(),
        "{st}"
    );
    // Executive: latency max 20 (b's), p95 of two tenants is not a sum (none), calls 2.
    let e = report_to(&lake, "executive", &dir.path().join("e.json"), &period);
    let kpi = |meter: &str| {
        rows_of(&e, "kpis")
            .iter()
            .find(|k| k["meter"] == meter)
            .cloned()
            .unwrap_or_else(|| panic!("no kpi {meter}"))
    };
    assert_eq!(kpi("latency")["total"].as_f64(), Some(20.0));
    assert_eq!(kpi("latency")["tenants"].as_i64(), Some(2));
    assert!(kpi("latency")["previous"].is_null());
    assert!(kpi("latency_p95")["total"].is_null());
    assert_eq!(kpi("api_calls")["total"].as_f64(), Some(2.0));
    assert_eq!(kpi("api_calls")["previous"].as_f64(), Some(1.0));
    assert!(kpi("storage_bytes")["total"].is_null());
}

/// A report reads the tenants' time zones from the tenants file also where the directory
/// has no plan catalogue (the built-in one, as for the billing commands); a tenants or
/// plans file given that does not exist is an error naming its flag, not a report without
/// billing.
#[test]
fn reports_read_time_zones_without_a_plans_file_and_name_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    // 300 events at 00:30 UTC, 09:30 in Tokyo.
    let mut s = String::new();
    for i in 0..300 {
        s.push_str(&format!(
            "{{\"id\":\"{i}\",\"ts\":\"2026-10-{:02}T00:30:{:02}Z\",\"tenant_id\":\"a\",\"meter\":\"api_calls\"}}\n",
            1 + i % 28,
            i % 60
        ));
    }
    let events = write(dir.path(), "e.ndjson", &s);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    write(
        dir.path(),
        "t.csv",
        "tenant_id,plan,time_zone\na,basic,Asia/Tokyo\n",
    );
    let l = lake.to_str().unwrap();
    let args = |tenants: &'static str, plans: Option<&'static str>| {
        let mut v = vec![
            "report",
            "--lake",
            l,
            "--kind",
            "detailed",
            "--out",
            "d.json",
            "--tenants",
            tenants,
        ];
        v.extend(plans.map(|p| ["--plans", p]).into_iter().flatten());
        v
    };
    let o = mlk_in(dir.path(), &args("t.csv", None));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("d.json")).unwrap()).unwrap();
    let row = &rows_of(&d, "comparison")[0];
    assert_eq!(row["tenant_peak_hour_local"], "09:00 Asia/Tokyo", "{row}");
    for (case, flag) in [
        (args("nosuch.csv", None), "--tenants"),
        (args("t.csv", Some("nosuch.toml")), "--plans"),
    ] {
        let o = mlk_in(dir.path(), &case);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{case:?}: {err}");
        assert!(
            err.contains(flag) && err.contains("nosuch"),
            "{case:?}: {err}"
        );
    }
}

/// After the detection granularity changed (hour, then day), the anomaly report shows the
/// last detection's incidents, not the stale hourly ones left beside them.
#[test]
fn the_anomaly_report_reads_the_last_detection() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    ok(&[
        "detect",
        "--lake",
        lake.to_str().unwrap(),
        "--granularity",
        "day",
        "--quiet",
    ]);
    let (from, to) = default_period(&read_lake(&lake));
    let day = read_incidents_of(&lake, "day");
    let hour = read_incidents(&lake);
    let in_period = |v: &[IncidentRow]| v.iter().filter(|i| i.start < to && i.end > from).count();
    assert_ne!(
        in_period(&day),
        in_period(&hour),
        "the two detections differ"
    );
    let a = report_to(&lake, "anomaly", &dir.path().join("a.json"), &[]);
    assert_eq!(rows_of(&a, "incidents").len(), in_period(&day));
}
