//! `export data`: an access request's answer holds exactly the tenant's (or user's) events,
//! quarantined records and derived rows, with a manifest whose checksums match; the same
//! lake gives the same bytes; after `forget` it holds nothing; every export is in the
//! access log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::common::*;

const METERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");

/// A known set: three tenants, four users each, two meters; one bad record per user.
fn known_events(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for t in ["t-a", "t-b", "t-c"] {
        for i in 0..240 {
            let user = format!("user-{}", i % 4);
            let meter = if i % 3 == 0 { "ai_tokens" } else { "api_calls" };
            let user_field = if i % 10 == 9 {
                String::new()
            } else {
                format!(r#","user_id":"{user}""#)
            };
            text.push_str(&format!(
                r#"{{"id":"{t}-{i}","ts":"2026-09-{:02}T{:02}:{:02}:07.123456Z","tenant_id":"{t}"{user_field},"meter":"{meter}","value":{},"properties":{{"n":{i}}}}}"#,
                1 + i % 20,
                i % 24,
                i % 60,
                1 + i % 7
            ));
            text.push('\n');
        }
        for u in 0..4 {
            text.push_str(&format!(
                r#"{{"id":"{t}-bad-{u}","ts":"2026-09-01T00:00:00Z","tenant_id":"{t}","user_id":"user-{u}","meter":"api_calls","value":-5}}"#
            ));
            text.push('\n');
        }
    }
    write(dir, "known.ndjson", &text)
}

fn export(
    lake: &Path,
    out: &Path,
    tenant: &str,
    user: Option<&str>,
    format: &str,
) -> serde_json::Value {
    let mut args = vec![
        "export",
        "data",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        tenant,
        "--out",
        out.to_str().unwrap(),
        "--format",
        format,
        "--output",
        "json",
        "--actor",
        "dpo@example.com",
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    serde_json::from_str(&ok(&args)).unwrap()
}

fn ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (id, ts µs, tenant, user, meter, value, properties) of a row.
type Ev = (String, i64, String, Option<String>, String, u64, String);

fn from_lake(r: &Row) -> Ev {
    (
        r.id.clone(),
        r.ts,
        r.tenant.clone(),
        r.user.clone(),
        r.meter.clone(),
        r.value.to_bits(),
        r.props.clone(),
    )
}

fn from_json(v: &serde_json::Value) -> Ev {
    let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    (
        v["id"].as_str().unwrap().into(),
        ts,
        v["tenant_id"].as_str().unwrap().into(),
        v["user_id"].as_str().map(str::to_string),
        v["meter"].as_str().unwrap().into(),
        v["value"].as_f64().unwrap().to_bits(),
        v["properties"].as_str().unwrap().into(),
    )
}

/// Every file the manifest lists has the bytes and SHA-256 it says; nothing else is there.
fn check_manifest(out: &Path, m: &serde_json::Value) {
    let on_disk: BTreeSet<String> = files_under(out)
        .iter()
        .map(|p| p.strip_prefix(out).unwrap().to_string_lossy().to_string())
        .filter(|p| p != "manifest.json")
        .collect();
    let listed: BTreeSet<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_disk, listed);
    for f in m["files"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64));
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(f["sha256"].as_str(), Some(sha.as_str()), "{}", f["path"]);
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(&written, m);
}

#[test]
fn an_export_holds_exactly_the_tenants_or_users_data_and_nothing_after_forget() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let input = known_events(dir.path());
    ingest(&lake, &[&input], &[]);
    // Rollups by user, so there are derived rows of a user to find.
    rollup_json(
        &lake,
        Path::new(METERS),
        &["--granularity", "day", "--by", "user"],
    );
    // One event the server acknowledged and has not committed yet (its log).
    std::fs::create_dir_all(lake.join("_wal")).unwrap();
    std::fs::write(
        lake.join("_wal/00000001.wal"),
        "{\"key\":\"0000000000000000000000000000000a\",\"id\":\"logged-1\",\"ts\":1788220800000000,\"tenant_id\":\"t-b\",\"user_id\":\"user-2\",\"meter\":\"api_calls\",\"value\":1.0,\"properties\":\"{}\"}\n{\"key\":\"00",
    )
    .unwrap();
    let all = read_lake(&lake);

    // The tenant: every event of it, no other; in both text and Parquet form.
    let out = dir.path().join("t-b");
    let m = export(&lake, &out, "t-b", None, "json");
    check_manifest(&out, &m);
    let mut want: Vec<Ev> = all
        .iter()
        .filter(|r| r.tenant == "t-b")
        .map(from_lake)
        .collect();
    want.push((
        "logged-1".into(),
        1788220800000000,
        "t-b".into(),
        Some("user-2".into()),
        "api_calls".into(),
        1f64.to_bits(),
        "{}".into(),
    ));
    want.sort();
    let mut got: Vec<Ev> = ndjson(&out.join("events.ndjson"))
        .iter()
        .map(from_json)
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(m["events"], 240);
    assert_eq!(m["logged_events"], 1);
    assert_eq!(m["quarantined"], 4);
    let q = ndjson(&out.join("quarantine.ndjson"));
    assert!(
        q.iter()
            .all(|r| r["record"].as_str().unwrap().contains("\"t-b\"")),
        "{q:?}"
    );
    // Derived rows: the tenant's rollup rows, as many as the rollup holds for it.
    let derived: Vec<serde_json::Value> = files_under(&out.join("derived"))
        .iter()
        .flat_map(|p| ndjson(p))
        .collect();
    assert!(!derived.is_empty());
    assert!(derived.iter().all(|r| r["tenant_id"] == "t-b"));
    assert_eq!(m["derived_rows"].as_u64(), Some(derived.len() as u64));

    let pq = dir.path().join("t-b-parquet");
    let mp = export(&lake, &pq, "t-b", None, "parquet");
    check_manifest(&pq, &mp);
    let mut got: Vec<Ev> = parquet_batches(&pq.join("events.parquet"))
        .flat_map(|b| {
            use arrow::array::AsArray;
            let s = |n: &str| string_col(&b, n);
            let (id, t, u, me, p) = (
                s("id"),
                s("tenant_id"),
                s("user_id"),
                s("meter"),
                s("properties"),
            );
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone();
            let v = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone();
            (0..b.num_rows())
                .map(|i| {
                    (
                        id[i].clone().unwrap(),
                        ts.value(i),
                        t[i].clone().unwrap(),
                        u[i].clone(),
                        me[i].clone().unwrap(),
                        v.value(i).to_bits(),
                        p[i].clone().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    assert_eq!(got, want);

    // The same lake, the same bytes.
    let again = dir.path().join("t-b-again");
    let m2 = export(&lake, &again, "t-b", None, "json");
    assert_eq!(m, m2);

    // One user: their events, quarantined record and rollup rows, nobody else's.
    let uo = dir.path().join("user");
    let mu = export(&lake, &uo, "t-a", Some("user-1"), "csv");
    check_manifest(&uo, &mu);
    let n_user = all
        .iter()
        .filter(|r| r.tenant == "t-a" && r.user.as_deref() == Some("user-1"))
        .count();
    assert_eq!(mu["events"].as_u64(), Some(n_user as u64));
    let text = std::fs::read_to_string(uo.join("events.csv")).unwrap();
    let ids: BTreeSet<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let want_ids: BTreeSet<String> = all
        .iter()
        .filter(|r| r.tenant == "t-a" && r.user.as_deref() == Some("user-1"))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, want_ids);
    assert_eq!(mu["quarantined"], 1);
    assert!(mu["derived_rows"].as_u64().unwrap() > 0);
    for f in files_under(&uo.join("derived")) {
        let t = std::fs::read_to_string(&f).unwrap();
        let mut lines = t.lines();
        let head: Vec<&str> = lines.next().unwrap().split(',').collect();
        let (ti, ui) = (
            head.iter().position(|h| *h == "tenant_id").unwrap(),
            head.iter().position(|h| *h == "user_id").unwrap(),
        );
        for l in lines {
            let c: Vec<&str> = l.split(',').collect();
            assert_eq!((c[ti], c[ui]), ("t-a", "user-1"), "{}", f.display());
        }
    }

    // Every export is in the access log, with its actor.
    let log = std::fs::read_to_string(lake.join("_audit/access.jsonl")).unwrap();
    let exports: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["what"].as_str().unwrap().starts_with("export data"))
        .collect();
    assert_eq!(exports.len(), 4);
    assert!(exports.iter().all(|v| v["actor"] == "dpo@example.com"));
    assert_eq!(exports[3]["what"], "export data user=user-1");
    assert_eq!(exports[3]["tenant"], "t-a");

    // An export goes to a new folder.
    let o = mlk(&[
        "export",
        "data",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        "t-a",
        "--out",
        uo.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));

    // After forget, nothing of the user is left to export.
    ok(&[
        "forget",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        "t-a",
        "--user",
        "user-1",
        "--meters",
        METERS,
    ]);
    let gone = dir.path().join("gone");
    let mg = export(&lake, &gone, "t-a", Some("user-1"), "json");
    for k in [
        "events",
        "logged_events",
        "quarantined",
        "derived_rows",
        "alerts",
    ] {
        assert_eq!(mg[k], 0, "{k}: {mg}");
    }
    assert_eq!(
        std::fs::read_to_string(gone.join("events.ndjson")).unwrap(),
        ""
    );
    // ... and the tenant's other users are still there.
    let rest = dir.path().join("rest");
    let mr = export(&lake, &rest, "t-a", None, "json");
    assert_eq!(mr["events"].as_u64(), Some(240 - n_user as u64));
}

/// The manifest's `alerts` counts the tenant's alerts, not also the rows of the other
/// tables in the alerts directory (the deliveries of those alerts were added to it).
#[test]
fn the_manifest_counts_alerts_only() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    // A second table beside the alerts, with the same tenants (as deliveries.parquet is).
    std::fs::copy(
        lake.join("alerts/alerts.parquet"),
        lake.join("alerts/deliveries.parquet"),
    )
    .unwrap();
    let tenant = "stark-006"; // its hard caps raised alerts in the sample's run
    let out = dir.path().join("x");
    let m = export(&lake, &out, tenant, None, "json");
    let alerts = ndjson(&out.join("derived/alerts/alerts.ndjson")).len();
    assert!(alerts > 0);
    assert_eq!(m["alerts"].as_u64(), Some(alerts as u64), "{m}");
    assert_eq!(
        ndjson(&out.join("derived/alerts/deliveries.ndjson")).len(),
        alerts
    );
}
