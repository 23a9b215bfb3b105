//! `retention` and `forget`: what goes, what stays (read back from the Parquet files), what
//! is archived and recomputed, and the audit record each leaves (as the compliance report
//! shows it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::AsArray;

use crate::common::*;

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
    for q in quarantine(&lake) {
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
    let c = report_to(
        &lake,
        "compliance",
        &dir.path().join("compliance.json"),
        &[],
    );
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
    let c = report_to(&lake, "compliance", &dir.path().join("c.json"), &[]);
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

/// `--events-days 0` keeps every event, as `retention_days = 0` does in the configuration
/// (it used to drop everything dated before today); `--rollups-days 0` keeps every rollup.
#[test]
fn a_retention_of_zero_days_keeps_everything() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let before = read_lake(&lake);
    let rollups_before = files_under(&lake.join("rollups")).len();
    // Every event of the sample is dated before this `--now`.
    assert!(before.iter().all(|r| r.date.as_str() < "2027-01-01"));
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "retention",
        "--lake",
        lake.to_str().unwrap(),
        "--events-days",
        "0",
        "--rollups-days",
        "0",
        "--now",
        "2027-01-01",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(0), "{v}");
    assert_eq!(v["rollup_partitions"].as_u64(), Some(0), "{v}");
    assert_eq!(read_lake(&lake).len(), before.len());
    assert_eq!(files_under(&lake.join("rollups")).len(), rollups_before);
}
