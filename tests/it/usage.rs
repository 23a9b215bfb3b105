//! `meterlake usage` and `meterlake engagement` against folds over the raw lake rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::NaiveDate;

use crate::common::*;

fn at(d: &str) -> i64 {
    NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn meters_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/meters.toml")
        .display()
        .to_string()
}

/// The built-in meters' value of `rows` (all of one tenant and event meter).
fn value_of(meter: &str, rows: &[&Row]) -> f64 {
    match meter {
        "api_calls" | "documents" => rows.len() as f64,
        "active_users" => rows
            .iter()
            .filter_map(|r| r.user.clone())
            .collect::<BTreeSet<_>>()
            .len() as f64,
        "storage_bytes" => {
            let t = rows.iter().map(|r| r.ts).max().unwrap();
            rows.iter()
                .filter(|r| r.ts == t)
                .map(|r| r.value)
                .fold(f64::MIN, f64::max)
        }
        _ => rows.iter().map(|r| r.value).sum(),
    }
}

fn fold_period(rows: &[Row], from: i64, to: i64) -> BTreeMap<(String, String), f64> {
    let mut g: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts >= from && r.ts < to) {
        g.entry((r.tenant.clone(), r.meter.clone()))
            .or_default()
            .push(r);
    }
    g.into_iter()
        .map(|(k, v)| (k.clone(), value_of(&k.1, &v)))
        .collect()
}

fn usage(lake: &Path, extra: &[&str]) -> serde_json::Value {
    let m = meters_file();
    let mut a = vec![
        "usage",
        "--lake",
        lake.to_str().unwrap(),
        "--meters",
        &m,
        "--output",
        "json",
    ];
    a.extend(extra);
    serde_json::from_str(&ok(&a)).unwrap()
}

#[test]
fn usage_totals_breakdowns_and_comparisons_match_a_fold() {
    let dir = tempfile::tempdir().unwrap();
    let lake = generated_lake(dir.path(), "2026-09-01", "28", "0.03");
    let rows = read_lake(&lake);
    let (from, to) = (at("2026-09-15"), at("2026-09-22"));
    let now = fold_period(&rows, from, to);
    let before = fold_period(&rows, at("2026-09-08"), from);
    let r = usage(
        &lake,
        &[
            "--from",
            "2026-09-15",
            "--to",
            "2026-09-22",
            "--compare",
            "previous",
        ],
    );
    assert_eq!(r["compared_with"]["from"], "2026-09-08T00:00:00.000000Z");
    let totals = r["totals"].as_array().unwrap();
    // Every pair of either period, but a `latest` meter (storage) with nothing now: it has
    // no value of an empty period.
    let pairs: BTreeSet<&(String, String)> = now
        .keys()
        .chain(before.keys().filter(|k| k.1 != "storage_bytes"))
        .collect();
    assert_eq!(totals.len(), pairs.len());
    for t in totals {
        let k = (
            t["tenant_id"].as_str().unwrap().to_string(),
            t["meter"].as_str().unwrap().to_string(),
        );
        let v = now.get(&k).copied().unwrap_or(0.0);
        assert_close(t["value"].as_f64().unwrap(), v, &format!("{k:?}"));
        let p = before[&k];
        assert_close(
            t["previous"].as_f64().unwrap(),
            p,
            &format!("{k:?} previous"),
        );
        assert_close(
            t["change"].as_f64().unwrap(),
            v - p,
            &format!("{k:?} change"),
        );
        assert_close(
            t["change_pct"].as_f64().unwrap(),
            (v - p) / p * 100.0,
            &format!("{k:?} pct"),
        );
    }

    // Breakdown of API calls by endpoint, top 2 + (other), compared with an explicit range.
    let r = usage(
        &lake,
        &[
            "--from",
            "2026-09-15",
            "--to",
            "2026-09-22",
            "--by",
            "property:endpoint",
            "--meter",
            "api_calls",
            "--top",
            "2",
            "--compare",
            "2026-09-01..2026-09-08",
        ],
    );
    let mut per: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut per_before: BTreeMap<(String, String), f64> = BTreeMap::new();
    let ep = |r: &Row| {
        let v: serde_json::Value = serde_json::from_str(&r.props).unwrap();
        v["endpoint"].as_str().unwrap_or("(none)").to_string()
    };
    for r in rows.iter().filter(|r| r.meter == "api_calls") {
        if r.ts >= from && r.ts < to {
            *per.entry((r.tenant.clone(), ep(r))).or_default() += 1.0;
        } else if r.ts >= at("2026-09-01") && r.ts < at("2026-09-08") {
            *per_before.entry((r.tenant.clone(), ep(r))).or_default() += 1.0;
        }
    }
    let parts = r["breakdown"].as_array().unwrap();
    let tenants: BTreeSet<&str> = parts
        .iter()
        .map(|p| p["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        r["totals"].as_array().unwrap().len(),
        tenants.len(),
        "only api_calls"
    );
    for t in tenants {
        let mine: Vec<&serde_json::Value> = parts.iter().filter(|p| p["tenant_id"] == t).collect();
        let total = now[&(t.to_string(), "api_calls".to_string())];
        let mut want: Vec<(f64, String)> = per
            .iter()
            .filter(|((tt, _), _)| tt == t)
            .map(|((_, e), v)| (*v, e.clone()))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(mine.len(), 3, "{t}: top 2 + other");
        for (p, (v, e)) in mine[..2].iter().zip(&want) {
            assert_eq!(p["key"], e.as_str());
            assert_close(p["value"].as_f64().unwrap(), *v, e);
            assert_close(p["share_pct"].as_f64().unwrap(), v / total * 100.0, e);
            let pb = per_before
                .get(&(t.to_string(), e.clone()))
                .copied()
                .unwrap_or(0.0);
            assert_close(p["previous"].as_f64().unwrap(), pb, e);
        }
        assert_eq!(mine[2]["key"], "(other)");
        let rest: f64 = want[2..].iter().map(|x| x.0).sum();
        assert_close(mine[2]["value"].as_f64().unwrap(), rest, "other");
        let shares: f64 = mine.iter().map(|p| p["share_pct"].as_f64().unwrap()).sum();
        assert_close(shares, 100.0, "shares add up to 100 %");
    }

    // CSV: a header and one line per total.
    let m = meters_file();
    let csv = ok(&[
        "usage",
        "--lake",
        lake.to_str().unwrap(),
        "--meters",
        &m,
        "--from",
        "2026-09-15",
        "--to",
        "2026-09-22",
        "--output",
        "csv",
    ]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("tenant_id,meter,aggregation,value,event_count,previous,change,change_pct")
    );
    assert_eq!(lines.count(), now.len());
    // Bad parameters name themselves.
    for (case, args, want) in [
        (
            "a period that ends before it starts",
            vec!["--from", "2026-09-15", "--to", "2026-09-01"],
            "--from",
        ),
        (
            "an unknown comparison",
            vec![
                "--from",
                "2026-09-15",
                "--to",
                "2026-09-22",
                "--compare",
                "last-year",
            ],
            "--compare",
        ),
        (
            "a dimension that is not one",
            vec![
                "--from",
                "2026-09-15",
                "--to",
                "2026-09-22",
                "--by",
                "endpoint",
            ],
            "--by",
        ),
        (
            "a meters file that does not exist",
            vec![
                "--from",
                "2026-09-15",
                "--to",
                "2026-09-22",
                "--meters",
                "/nonexistent/meters.toml",
            ],
            "/nonexistent/meters.toml",
        ),
        (
            "a tenant with no events at all (a typo)",
            vec![
                "--from",
                "2026-09-15",
                "--to",
                "2026-09-22",
                "--tenant",
                "acme-01",
            ],
            "--tenant acme-01",
        ),
    ] {
        let mut a = vec!["usage", "--lake", lake.to_str().unwrap()];
        a.extend(&args);
        assert_rejected(case, &a, &[want]);
    }
    assert_rejected(
        "engagement of a tenant with no events",
        &[
            "engagement",
            "--lake",
            lake.to_str().unwrap(),
            "--tenant",
            "acme-01",
        ],
        &["--tenant acme-01"],
    );
}

/// A tenant and meter used in the comparison period and not at all now is a fall to zero:
/// a row of 0, the previous value and -100 % (it was left out, so a churned tenant never
/// showed).
#[test]
fn a_fall_to_zero_is_shown_in_a_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "e.ndjson",
        concat!(
            r#"{"id":"d1","ts":"2026-10-05T10:00:00Z","tenant_id":"t80","meter":"documents"}"#,
            "\n",
            r#"{"id":"d2","ts":"2026-10-06T10:00:00Z","tenant_id":"t80","meter":"documents"}"#,
            "\n",
            r#"{"id":"s1","ts":"2026-10-06T10:00:00Z","tenant_id":"t80","meter":"storage_bytes","value":9}"#,
            "\n",
        ),
    );
    let lake = dir.path().join("lake");
    ingest(&lake, &[&input], &[]);
    let r = usage(
        &lake,
        &[
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "--compare",
            "2026-10-01..2026-11-01",
        ],
    );
    let totals = r["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "{r}");
    let t = &totals[0];
    assert_eq!(
        (t["tenant_id"].as_str(), t["meter"].as_str()),
        (Some("t80"), Some("documents"))
    );
    assert_eq!(
        (
            t["value"].as_f64(),
            t["previous"].as_f64(),
            t["change"].as_f64(),
            t["change_pct"].as_f64()
        ),
        (Some(0.0), Some(2.0), Some(-2.0), Some(-100.0)),
        "{t}"
    );
    // The same within a breakdown: /old called twice before and not at all now, /new once
    // in each period. Every key of either period has a row, and the rows' changes add up
    // to the total's (3 -> 1).
    let input = write(
        dir.path(),
        "b.ndjson",
        concat!(
            r#"{"id":"1","ts":"2026-10-01T10:00:00Z","tenant_id":"a","meter":"api_calls","properties":{"endpoint":"/old"}}"#,
            "\n",
            r#"{"id":"2","ts":"2026-10-01T10:00:01Z","tenant_id":"a","meter":"api_calls","properties":{"endpoint":"/old"}}"#,
            "\n",
            r#"{"id":"3","ts":"2026-10-01T10:00:02Z","tenant_id":"a","meter":"api_calls","properties":{"endpoint":"/new"}}"#,
            "\n",
            r#"{"id":"4","ts":"2026-10-02T10:00:00Z","tenant_id":"a","meter":"api_calls","properties":{"endpoint":"/new"}}"#,
            "\n",
        ),
    );
    let lake = dir.path().join("lake2");
    ingest(&lake, &[&input], &[]);
    let r = usage(
        &lake,
        &[
            "--from",
            "2026-10-02",
            "--to",
            "2026-10-03",
            "--compare",
            "previous",
            "--by",
            "property:endpoint",
        ],
    );
    let rows: Vec<(&str, f64, f64, f64)> = r["breakdown"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap(),
                b["value"].as_f64().unwrap(),
                b["previous"].as_f64().unwrap(),
                b["change"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("/new", 1.0, 1.0, 0.0), ("/old", 0.0, 2.0, -2.0)],
        "{r}"
    );
    let total = &r["totals"][0];
    let change: f64 = rows.iter().map(|r| r.3).sum();
    assert_eq!(total["change"].as_f64(), Some(change), "{total}");
}

#[test]
fn engagement_matches_a_fold() {
    let dir = tempfile::tempdir().unwrap();
    let lake = generated_lake(dir.path(), "2026-09-01", "40", "0.03");
    // A user seen only long ago (inactive), one seen only on the last day, and a tenant
    // with no user at all (storage only).
    let tenant = read_lake(&lake)[0].tenant.clone();
    let extra = write(
        dir.path(),
        "extra.ndjson",
        &format!(
            "{{\"id\":\"x1\",\"ts\":\"2026-09-02T10:00:00Z\",\"tenant_id\":\"{tenant}\",\"user_id\":\"zz-gone\",\"meter\":\"documents\",\"properties\":{{\"feature\":\"ocr\"}}}}\n\
             {{\"id\":\"x2\",\"ts\":\"2026-10-10T10:00:00Z\",\"tenant_id\":\"{tenant}\",\"user_id\":\"zz-new\",\"meter\":\"documents\",\"properties\":{{\"feature\":\"brand-new\"}}}}\n\
             {{\"id\":\"x3\",\"ts\":\"2026-09-20T10:00:00Z\",\"tenant_id\":\"solo\",\"meter\":\"storage_bytes\",\"value\":100}}\n\
             {{\"id\":\"x4\",\"ts\":\"2026-10-05T10:00:00Z\",\"tenant_id\":\"solo\",\"meter\":\"storage_bytes\",\"value\":250}}\n"
        ),
    );
    ingest(&lake, &[&extra], &[]);
    let rows = read_lake(&lake);
    let as_of = at("2026-10-11");
    let day = 86_400_000_000i64;
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "engagement",
        "--lake",
        lake.to_str().unwrap(),
        "--at",
        "2026-10-11",
        "--output",
        "json",
        "--list",
        "1000",
    ]))
    .unwrap();
    let list = v.as_array().unwrap();
    let tenants: BTreeSet<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    assert_eq!(list.len(), tenants.len());
    for e in list {
        let t = e["tenant_id"].as_str().unwrap();
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| r.tenant == t && r.ts < as_of)
            .collect();
        let users_since = |s: i64| -> BTreeSet<String> {
            mine.iter()
                .filter(|r| r.ts >= s)
                .filter_map(|r| r.user.clone())
                .collect()
        };
        let (dau, wau, mau) = (
            users_since(as_of - day),
            users_since(as_of - 7 * day),
            users_since(as_of - 30 * day),
        );
        let known = users_since(i64::MIN);
        let daily = e["daily_active_users"].as_array().unwrap();
        assert_eq!(daily.len(), 30, "{t}");
        for (k, d) in daily.iter().enumerate() {
            let start = as_of - (30 - k as i64) * day;
            let users: BTreeSet<&String> = mine
                .iter()
                .filter(|r| r.ts >= start && r.ts < start + day)
                .filter_map(|r| r.user.as_ref())
                .collect();
            assert_eq!(
                d["users"].as_u64().unwrap() as usize,
                users.len(),
                "{t} {d}"
            );
        }
        assert_eq!(daily[29]["date"], "2026-10-10");
        assert_eq!(e["dau"].as_u64().unwrap() as usize, dau.len(), "{t} dau");
        assert_eq!(e["wau"].as_u64().unwrap() as usize, wau.len(), "{t} wau");
        assert_eq!(e["mau"].as_u64().unwrap() as usize, mau.len(), "{t} mau");
        assert_eq!(
            e["known_users"].as_u64().unwrap() as usize,
            known.len(),
            "{t} known"
        );
        let inactive: Vec<String> = known.difference(&mau).cloned().collect();
        let got: Vec<String> = e["inactive_sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, inactive, "{t} inactive");
        // Feature adoption over the last 30 days.
        let mut feat: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in mine.iter().filter(|r| r.ts >= as_of - 30 * day) {
            let p: serde_json::Value = serde_json::from_str(&r.props).unwrap();
            if let (Some(f), Some(u)) = (p["feature"].as_str(), &r.user) {
                feat.entry(f.to_string()).or_default().insert(u.clone());
            }
        }
        let fa = e["feature_adoption"].as_array().unwrap();
        assert_eq!(fa.len(), feat.len(), "{t} features");
        for f in fa {
            let users = &feat[f["feature"].as_str().unwrap()];
            assert_eq!(f["users"].as_u64().unwrap() as usize, users.len());
            assert_close(
                f["adoption"].as_f64().unwrap(),
                users.len() as f64 / mau.len() as f64,
                "adoption",
            );
        }
        let docs = mine
            .iter()
            .filter(|r| r.meter == "documents" && r.ts >= as_of - 30 * day)
            .count();
        assert_eq!(
            e["documents"].as_u64().unwrap() as usize,
            docs,
            "{t} documents"
        );
        let last = |until: i64| latest_reading(&mine, "storage_bytes", until);
        let (n, b) = (last(as_of), last(as_of - 30 * day));
        assert_eq!(e["storage_now"].as_f64(), n, "{t} storage");
        assert_eq!(e["storage_30d_ago"].as_f64(), b, "{t} storage then");
        if let Some(n) = n {
            assert_close(
                e["storage_growth"].as_f64().unwrap(),
                n - b.unwrap_or(0.0),
                "growth",
            );
        }
    }
    let solo = list.iter().find(|e| e["tenant_id"] == "solo").unwrap();
    assert_eq!(
        (solo["mau"].as_u64(), solo["storage_growth"].as_f64()),
        (Some(0), Some(250.0))
    );
    let me = list
        .iter()
        .find(|e| e["tenant_id"] == tenant.as_str())
        .unwrap();
    assert!(
        me["inactive_sample"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("zz-gone"))
    );
}

/// A property that holds no finite number ("NaN", "inf", 1e999 as text) is no reading of
/// a meter that reads it, as a non-finite `value` is rejected at ingest: the sum and p50 of
/// {120, "NaN", "inf", "1e999", 80} are 200 and 100, in `usage` and in the stored rollup.
#[test]
fn a_property_that_is_no_finite_number_is_no_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for (i, ms) in [
        r#"120"#,
        r#""NaN""#,
        r#""inf""#,
        r#""1e999""#,
        r#"80"#,
        r#""-Infinity""#,
    ]
    .iter()
    .enumerate()
    {
        s.push_str(&format!(
            "{{\"id\":\"{i}\",\"ts\":\"2026-10-01T10:00:0{i}Z\",\"tenant_id\":\"a\",\"meter\":\"api_calls\",\"properties\":{{\"ms\":{ms}}}}}\n"
        ));
    }
    let events = write(dir.path(), "e.ndjson", &s);
    let meters = write(
        dir.path(),
        "meters.toml",
        "[[meter]]\nname = \"latency_p50\"\nevent = \"api_calls\"\naggregation = \"p50\"\nproperty = \"ms\"\n\
         [[meter]]\nname = \"latency_sum\"\nevent = \"api_calls\"\naggregation = \"sum\"\nproperty = \"ms\"\n\
         [[meter]]\nname = \"latency_max\"\nevent = \"api_calls\"\naggregation = \"max\"\nproperty = \"ms\"\n",
    );
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    let m = meters.to_str().unwrap();
    let l = lake.to_str().unwrap();
    let r: serde_json::Value = serde_json::from_str(&ok(&[
        "usage",
        "--lake",
        l,
        "--meters",
        m,
        "--from",
        "2026-10-01",
        "--to",
        "2026-10-02",
        "--output",
        "json",
    ]))
    .unwrap();
    let value = |meter: &str| {
        r["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["meter"] == meter)
            .and_then(|t| t["value"].as_f64())
    };
    assert_eq!(value("latency_sum"), Some(200.0), "{r}");
    assert_eq!(value("latency_p50"), Some(100.0), "{r}");
    assert_eq!(value("latency_max"), Some(120.0), "{r}");
    // The stored day rollup holds the same.
    ok(&["rollup", "--lake", l, "--meters", m, "--granularity", "day"]);
    let rows = read_rollup(
        &lake.join("rollups/granularity=day/by=none/tz=UTC"),
        &["tenant_id".into(), "meter".into()],
    );
    let got: Vec<(String, f64)> = rows
        .iter()
        .map(|((k, _), v)| (k[1].clone().unwrap(), v.1))
        .filter(|(m, _)| m.starts_with("latency"))
        .collect();
    assert_eq!(
        got,
        [
            ("latency_max".to_string(), 120.0),
            ("latency_p50".to_string(), 100.0),
            ("latency_sum".to_string(), 200.0)
        ]
    );
}
