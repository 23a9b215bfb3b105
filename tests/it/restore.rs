//! `restore`: archive, restore and re-archive give back the same rows; a second restore
//! adds nothing; the rollups of the restored days are recomputed to what they were; the
//! commit is audited; a day range restores only those days.

use std::path::Path;

use crate::common::*;

const METERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");

/// (date, id, ts, tenant, user, meter, value bits, properties).
type Full = (
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
    u64,
    String,
);

/// Every column of every row, sorted: what "the same rows" means.
fn rows(rs: &[Row]) -> Vec<Full> {
    let mut v: Vec<_> = rs
        .iter()
        .map(|r| {
            (
                r.date.clone(),
                r.id.clone(),
                r.ts,
                r.tenant.clone(),
                r.user.clone(),
                r.meter.clone(),
                r.value.to_bits(),
                r.props.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

fn retention(lake: &Path, archive: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "retention",
        "--lake",
        lake.to_str().unwrap(),
        "--events-days",
        "30",
        "--now",
        "2026-10-01",
        "--archive",
        archive.to_str().unwrap(),
        "--force",
        "--output",
        "json",
    ]))
    .unwrap()
}

fn restore(lake: &Path, archive: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "restore",
        "--lake",
        lake.to_str().unwrap(),
        "--archive",
        archive.to_str().unwrap(),
        "--meters",
        METERS,
        "--actor",
        "ops@example.com",
        "--output",
        "json",
    ];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

fn day_rollup(lake: &Path) -> Table {
    read_rollup(
        &lake.join("rollups/granularity=day/by=none/tz=UTC"),
        &["tenant_id".to_string(), "meter".to_string()],
    )
}

#[test]
fn archive_restore_and_rearchive_round_trip_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    rollup_json(&lake, Path::new(METERS), &["--granularity", "day"]);
    let before = read_lake(&lake);
    let rollup_before = day_rollup(&lake);

    let (a1, a2) = (dir.path().join("a1"), dir.path().join("a2"));
    let r = retention(&lake, &a1);
    let archived = r["event_rows"].as_u64().unwrap();
    assert!(archived > 0, "{r}");
    let in_a1 = rows(&read_lake(&a1));
    assert_eq!(in_a1.len() as u64, archived);

    let s = restore(&lake, &a1, &[]);
    assert_eq!(s["restored"].as_u64(), Some(archived), "{s}");
    assert_eq!(s["duplicates"], 0);
    assert!(s["rollups_refreshed"].as_u64().unwrap() >= 1);
    assert_eq!(
        rows(&read_lake(&lake)),
        rows(&before),
        "the lake holds its rows again"
    );
    assert_tables_match(
        &day_rollup(&lake),
        &rollup_before,
        "day rollup after restore",
    );

    // Again: everything is already there, nothing is committed.
    let again = restore(&lake, &a1, &[]);
    assert_eq!(again["restored"], 0);
    assert_eq!(again["duplicates"].as_u64(), Some(archived));
    assert!(again["commit"].is_null());
    assert_eq!(rows(&read_lake(&lake)), rows(&before));

    // Re-archive: the same rows leave again.
    let r2 = retention(&lake, &a2);
    assert_eq!(r2["event_rows"].as_u64(), Some(archived));
    let in_a2 = rows(&read_lake(&a2));
    assert_eq!(
        in_a2, in_a1,
        "archive -> restore -> archive keeps every row"
    );

    // A day range restores those days only.
    let s = restore(&lake, &a2, &["--from", "2026-08-25", "--to", "2026-08-26"]);
    let want = in_a2
        .iter()
        .filter(|r| r.0.as_str() >= "2026-08-25" && r.0.as_str() <= "2026-08-26")
        .count() as u64;
    assert!(want > 0);
    assert_eq!(s["restored"].as_u64(), Some(want), "{s}");
    assert_eq!(
        s["partitions"],
        serde_json::json!(["2026-08-25", "2026-08-26"])
    );

    // Audited, with its actor, as the compliance report shows it.
    let c = report_to(&lake, "compliance", &dir.path().join("c.json"), &[]);
    let audits: Vec<&serde_json::Value> = rows_of(&c, "audit")
        .iter()
        .filter(|a| a["action"] == "restore")
        .collect();
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert_eq!(audits[0]["rows"].as_u64(), Some(archived));
    assert_eq!(audits[0]["actor"], "ops@example.com");

    // Bad parameters are named.
    assert_rejected(
        "no archive",
        &[
            "restore",
            "--lake",
            lake.to_str().unwrap(),
            "--archive",
            dir.path().to_str().unwrap(),
        ],
        &["--archive", "no archived events"],
    );
    assert_rejected(
        "bad day",
        &[
            "restore",
            "--lake",
            lake.to_str().unwrap(),
            "--archive",
            a2.to_str().unwrap(),
            "--from",
            "Aug 25",
        ],
        &["--from", "Aug 25"],
    );
}

#[test]
fn a_restore_killed_before_or_after_its_commit_point_is_none_or_all() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let before = read_lake(&lake);
    let archive = dir.path().join("a");
    retention(&lake, &archive);
    let after_retention = rows(&read_lake(&lake));
    let crash = |at: &str| {
        let o = std::process::Command::new(BIN)
            .args(["restore", "--lake", lake.to_str().unwrap(), "--archive"])
            .arg(&archive)
            .args(["--meters", METERS])
            .env("MLK_CRASH_AT", at)
            .output()
            .unwrap();
        assert!(!o.status.success(), "the crash point {at} was reached");
        lake_stats(&lake); // recovers, as the next reader or writer would
    };
    crash("staged");
    assert_eq!(
        rows(&read_lake(&lake)),
        after_retention,
        "before the commit point: nothing"
    );
    crash("published_half");
    assert_eq!(
        rows(&read_lake(&lake)),
        rows(&before),
        "after it: everything"
    );
    let s = restore(&lake, &archive, &[]);
    assert_eq!(s["restored"], 0, "{s}");
}

#[test]
fn a_restore_keeps_what_forget_erased_out() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let a = dir.path().join("a");
    retention(&lake, &a);
    let archived = rows(&read_lake(&a));
    // A tenant and a user of another tenant, both with archived events, are forgotten.
    let tenant = archived[0].3.clone();
    let (user_tenant, user) = archived
        .iter()
        .find(|r| r.3 != tenant && r.4.is_some())
        .map(|r| (r.3.clone(), r.4.clone().unwrap()))
        .unwrap();
    let forget = |extra: &[&str]| {
        let mut args = vec![
            "forget",
            "--lake",
            lake.to_str().unwrap(),
            "--output",
            "json",
        ];
        args.extend(extra);
        ok(&args);
    };
    forget(&["--tenant", &tenant]);
    forget(&["--tenant", &user_tenant, "--user", &user]);

    let s = restore(&lake, &a, &[]);
    let erased = |r: &Full| r.3 == tenant || (r.3 == user_tenant && r.4.as_deref() == Some(&user));
    let gone = archived.iter().filter(|r| erased(r)).count() as u64;
    assert!(gone > 0);
    assert_eq!(s["forgotten"].as_u64(), Some(gone), "{s}");
    assert_eq!(
        s["restored"].as_u64(),
        Some(archived.len() as u64 - gone),
        "{s}"
    );
    let now = rows(&read_lake(&lake));
    assert!(
        !now.iter().any(erased),
        "a forgotten tenant or user came back"
    );
    let want: Vec<&Full> = archived.iter().filter(|r| !erased(r)).collect();
    assert!(want.iter().all(|r| now.contains(r)));
}
