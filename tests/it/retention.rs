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
    let retention = |force: bool| -> serde_json::Value {
        let mut args = vec![
            "retention",
            "--lake",
            lake.to_str().unwrap(),
            "--events-days",
            "30",
            "--now",
            "2026-10-01",
            "--archive",
            archive.to_str().unwrap(),
            "--output",
            "json",
        ];
        if force {
            args.extend(["--force", "--rollups-days", "30"]);
        }
        serde_json::from_str(&ok(&args)).unwrap()
    };
    // The sample's lake issued September: its August was never invoiced, so its expired
    // days stay (named) unless forced.
    let v = retention(false);
    assert_eq!(v["event_rows"].as_u64(), Some(0), "{v}");
    let kept: Vec<&str> = v["kept_unbilled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        kept.contains(&"2026-08-24") && kept.iter().all(|d| *d < "2026-09-01"),
        "{v}"
    );
    assert_eq!(read_lake(&lake).len(), before.len());
    let v = retention(true);
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
    // The forced retention's record.
    let a = rows_of(&c, "audit")
        .iter()
        .rfind(|a| a["action"] == "retention")
        .unwrap();
    assert_eq!(a["rows"].as_u64(), Some(old));
    assert!(a["target"].as_str().unwrap().contains("2026-09-01"));
    let dropped = v["rollup_partitions"].as_u64().unwrap();
    assert!(dropped > 0);
    assert!(
        a["detail"].as_str().unwrap().ends_with(&format!(
            "; {dropped} rollup partitions; forced: 8 partitions of periods not invoiced yet"
        )),
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

/// Replaces the message of the first alert of `tenant` in the lake's alert store (read and
/// written with arrow-rs, the column types kept), for a message that names users.
fn set_alert_message(lake: &Path, tenant: &str, message: &str) {
    use arrow::array::{Array, ArrayRef, StringArray};
    use std::sync::Arc;
    let path = lake.join("alerts/alerts.parquet");
    let batches: Vec<_> = parquet_batches(&path).collect();
    let mut done = false;
    let out: Vec<arrow::record_batch::RecordBatch> = batches
        .into_iter()
        .map(|b| {
            let tenants = string_col(&b, "tenant_id");
            let mut msgs = string_col(&b, "message");
            for (i, t) in tenants.iter().enumerate() {
                if !done && t.as_deref() == Some(tenant) {
                    msgs[i] = Some(message.to_string());
                    done = true;
                }
            }
            let i = b.schema().index_of("message").unwrap();
            let ty = b.column(i).data_type().clone();
            let col: ArrayRef = Arc::new(StringArray::from(msgs));
            let mut cols = b.columns().to_vec();
            cols[i] = arrow::compute::cast(&col, &ty).unwrap();
            assert_eq!(cols[i].len(), b.num_rows());
            arrow::record_batch::RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    assert!(done, "{tenant} has an alert");
    write_parquet(&path, &out);
}

/// Forgetting `u1` strikes `u1` from alert messages and leaves `u12` whole (a plain string
/// replace made it "[forgotten user]2").
#[test]
fn forget_matches_whole_user_ids_in_alert_messages() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let tenant = "stark-006"; // its hard caps raised alerts in the sample's run
    set_alert_message(&lake, tenant, "burst by u1, then u12 and u1.");
    let other = strings(&lake.join("alerts/alerts.parquet"), "message");
    ok(&[
        "forget",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        tenant,
        "--user",
        "u1",
    ]);
    let path = lake.join("alerts/alerts.parquet");
    let after = strings(&path, "message");
    let tenants = strings(&path, "tenant_id");
    assert!(
        after
            .iter()
            .any(|m| m.as_deref()
                == Some("burst by [forgotten user], then u12 and [forgotten user].")),
        "{after:?}"
    );
    // Nothing else changed: the other messages are as they were.
    let changed = after
        .iter()
        .zip(&other)
        .zip(&tenants)
        .filter(|((a, b), _)| a != b)
        .count();
    assert_eq!(changed, 1);
}

/// The copies `forget` used to miss: events the server acknowledged but had not committed
/// (a log segment left by a kill -9, which the next start commits) and the reports the
/// server stored for the tenant. Also: while the log's lock is held (a server runs),
/// `forget` refuses and changes nothing.
#[test]
fn forget_reaches_the_servers_log_and_stored_reports() {
    use crate::serve::{Server, call, key, lake_copy};
    let (_d, lake) = lake_copy();
    let l = lake.to_str().unwrap();
    let tenant = "globex-002";
    let k = key(&lake, Some(tenant));
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    let api = |p: &str| format!("{}/api/v1/usage{p}", s.base);
    for body in [
        r#"{"kind":"summary","format":"json"}"#,
        r#"{"kind":"detailed","format":"html"}"#,
        r#"{"kind":"summary","format":"xlsx"}"#,
    ] {
        let (st, v, _) = call("POST", &api("/reports/generate"), Some(&k), Some(body));
        assert_eq!(st, 201, "{v}");
    }
    // Three events of wal-u1 and two of wal-u12, acknowledged, then the server killed:
    // they live only in the log.
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let batch: Vec<String> = [("a", "wal-u1"), ("b", "wal-u1"), ("c", "wal-u1"), ("d", "wal-u12"), ("e", "wal-u12")]
        .iter()
        .map(|(id, u)| {
            format!(r#"{{"id":"wal-{id}","tenant_id":"{tenant}","user_id":"{u}","meter":"api_calls","ts":"{ts}"}}"#)
        })
        .collect();
    let (st, v, _) = call(
        "POST",
        &api("/track"),
        Some(&k),
        Some(&format!("[{}]", batch.join(","))),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(5)), "{v}");
    s.kill9();
    let logged = |user: &str| -> usize {
        files_under(&lake.join("_wal"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .matches(&format!("\"user_id\":\"{user}\""))
                    .count()
            })
            .sum()
    };
    assert_eq!((logged("wal-u1"), logged("wal-u12")), (3, 2));
    // Stored reports: the server's, plus one that names wal-u1 and one that names only
    // wal-u12; another tenant's report naming wal-u1 is not this tenant's to clean.
    let reports = lake.join("_api/reports").join(tenant);
    write(
        &reports,
        "users.json",
        r#"{"top_users":["wal-u1","wal-u12"]}"#,
    );
    write(&reports, "others.json", r#"{"top_users":["wal-u12"]}"#);
    std::fs::create_dir_all(lake.join("_api/reports/acme-001")).unwrap();
    let foreign = write(
        &lake.join("_api/reports/acme-001"),
        "users.json",
        r#"["wal-u1"]"#,
    );
    // A whole-id mention, checked here independently of meterlake's matcher.
    let names_u1 = |p: &Path| {
        let t = String::from_utf8_lossy(&std::fs::read(p).unwrap()).replace("wal-u12", "");
        t.contains("wal-u1")
    };
    let kept: Vec<PathBuf> = files_under(&reports)
        .into_iter()
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "html")
            ) && !names_u1(p)
        })
        .collect();
    assert!(kept.iter().any(|p| p.ends_with("others.json")));

    // While a server holds the log's lock, forget refuses and changes nothing.
    let before = read_lake(&lake).len();
    {
        let held = std::fs::File::create(lake.join("_wal/_lock")).unwrap();
        held.try_lock().unwrap();
        assert_rejected(
            "a server holding the log",
            &[
                "forget", "--lake", l, "--tenant", tenant, "--user", "wal-u1",
            ],
            &[
                "a server is running on this lake",
                "_wal/_lock",
                "stop it first",
            ],
        );
    }
    assert_eq!(read_lake(&lake).len(), before);
    assert_eq!(logged("wal-u1"), 3);

    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "forget", "--lake", l, "--tenant", tenant, "--user", "wal-u1", "--output", "json",
    ]))
    .unwrap();
    assert_eq!(v["logged_events"].as_u64(), Some(3), "{v}");
    assert_eq!((logged("wal-u1"), logged("wal-u12")), (0, 2));
    // No stored report of the tenant names wal-u1; those that did not are kept.
    let left = files_under(&reports);
    assert!(left.iter().all(|p| !names_u1(p)), "{left:?}");
    for p in &kept {
        assert!(p.exists(), "{} was kept", p.display());
    }
    assert!(!left.iter().any(|p| p.ends_with("users.json")));
    assert!(
        !left
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "xlsx")),
        "an XLSX cannot be searched: removed"
    );
    assert!(foreign.exists());
    // The next start commits what is left of the log: wal-u12's events, not wal-u1's.
    Server::start(&lake, &["--flush-ms", "600000"]).stop();
    let rows = read_lake(&lake);
    let of = |u: &str| {
        rows.iter()
            .filter(|r| r.tenant == tenant && r.user.as_deref() == Some(u))
            .count()
    };
    assert_eq!((of("wal-u1"), of("wal-u12")), (0, 2));
    // Forgetting the whole tenant removes its stored reports folder.
    ok(&["forget", "--lake", l, "--tenant", tenant]);
    assert!(!reports.exists());
    assert!(foreign.exists());
}

/// Forgetting a user removes that user's derived rows only: rows with no user (a tenant's
/// storage readings) stay, and so does everything when the user is unknown. (A plain `eq`
/// on the null user id made the filter drop every tenant-level row with any user.)
#[test]
fn forget_of_a_user_keeps_the_tenants_rows_without_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "e.ndjson",
        concat!(
            r#"{"id":"1","ts":"2026-10-01T10:00:00Z","tenant_id":"acme","user_id":"u1","meter":"api_calls"}"#,
            "\n",
            r#"{"id":"3","ts":"2026-10-01T10:00:00Z","tenant_id":"acme","meter":"storage_bytes","value":5}"#,
            "\n",
            r#"{"id":"2","ts":"2026-10-02T10:00:00Z","tenant_id":"acme","user_id":"u2","meter":"api_calls"}"#,
            "\n",
        ),
    );
    let lake = dir.path().join("lake");
    let l = lake.to_str().unwrap();
    ingest(&lake, &[&input], &[]);
    ok(&[
        "rollup",
        "--lake",
        l,
        "--granularity",
        "day",
        "--by",
        "user",
    ]);
    // (user, meter, value) of every by-user rollup row.
    let rows = || {
        let mut all: Vec<(Option<String>, Option<String>, String)> = Vec::new();
        for f in files_under(&lake.join("rollups/granularity=day/by=user")) {
            if f.extension().is_some_and(|e| e == "parquet") {
                let users = strings(&f, "user_id");
                let meters = strings(&f, "meter");
                let values = parquet_batches(&f).flat_map(|b| {
                    let c = b.column_by_name("value").unwrap().clone();
                    let v = c.as_primitive::<arrow::datatypes::Float64Type>().clone();
                    v.iter().map(|x| format!("{:?}", x)).collect::<Vec<_>>()
                });
                all.extend(
                    users
                        .into_iter()
                        .zip(meters)
                        .zip(values)
                        .map(|((u, m), v)| (u, m, v)),
                );
            }
        }
        all.sort();
        all
    };
    let s = |x: &str| Some(x.to_string());
    let before = rows();
    assert_eq!(
        before,
        vec![
            (None, s("storage_bytes"), "Some(5.0)".into()),
            (s("u1"), s("api_calls"), "Some(1.0)".into()),
            (s("u2"), s("api_calls"), "Some(1.0)".into()),
        ]
    );
    let forget = |user: &str| -> serde_json::Value {
        let out = ok(&[
            "forget", "--lake", l, "--tenant", "acme", "--user", user, "--output", "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(forget("nosuchuser")["derived_rows"], 0);
    assert_eq!(rows(), before);
    assert_eq!(forget("u2")["derived_rows"], 1);
    assert_eq!(rows(), before[..2].to_vec());
}

/// Rollups keep their own history: after retention dropped old events, a full rollup (or a
/// `run` after a meters change) recomputes what the lake holds and keeps the partitions
/// from before its first event as they were (it deleted them).
#[test]
fn a_full_rollup_keeps_the_history_retention_left() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let l = lake.to_str().unwrap();
    let day = lake.join("rollups/granularity=day/by=none/tz=UTC");
    let keys = ["tenant_id".to_string(), "meter".to_string()];
    let before = read_rollup(&day, &keys);
    ok(&[
        "retention",
        "--lake",
        l,
        "--events-days",
        "30",
        "--now",
        "2026-10-10",
        "--force",
    ]);
    let first = read_lake(&lake)
        .iter()
        .map(|r| r.date.clone())
        .min()
        .unwrap();
    assert!(first.as_str() > "2026-09-01", "{first}");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "rollup",
        "--lake",
        l,
        "--granularity",
        "day",
        "--full",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["partitions_removed"], 0, "{v}");
    let after = read_rollup(&day, &keys);
    // Every row with events is the same, the dropped days' included (a series' zero rows
    // start at its first event the lake still holds, so a few zero rows after the dropped
    // days may go).
    let first_day = chrono::NaiveDate::parse_from_str(&first, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let differ: Vec<_> = before
        .iter()
        .filter(|((_, start), v)| v.2 > 0 || *start < first_day)
        .filter(|(k, v)| after.get(k) != Some(v))
        .map(|(k, v)| (k, v, after.get(k)))
        .take(5)
        .collect();
    assert!(differ.is_empty(), "changed rows: {differ:?}");
    assert!(
        before.keys().filter(|(_, s)| *s < first_day).count() > 0,
        "history before the first event was checked"
    );
}
