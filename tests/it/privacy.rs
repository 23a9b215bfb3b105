//! Pseudonymised user ids (`[privacy]`): no raw user id in any file of the lake (data,
//! quarantine, server log), the pseudonyms an independent HMAC gives, unique-user counts
//! unchanged, a lake that keeps one key for life, and `forget --user` with the raw id.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::serve::{Server, call, key};

/// The raw ids of this test all end so: no file of a pseudonymised lake may hold it.
const MARK: &str = "@example.org";
const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

fn pseudonym(user: &str) -> String {
    format!("pu-{}", &hmac_hex(&KEY, user)[..32])
}

/// The key file and a configuration that turns pseudonymisation on.
fn config(dir: &Path) -> PathBuf {
    use base64::Engine;
    let key = dir.join("pseudonym.key");
    std::fs::write(
        &key,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(KEY)
        ),
    )
    .unwrap();
    write(
        dir,
        "privacy.toml",
        &format!(
            "[privacy]\npseudonymise_users = true\npseudonym_key_file = {:?}\n",
            key.display().to_string()
        ),
    )
}

/// The sample's events with user `u-7` renamed `u-7@example.org`, and three bad records
/// naming users: one invalid (negative value), one unparseable, one CSV row.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/events/events.ndjson.gz"
        ))
        .unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.lines() {
        // The sample has malformed lines of its own: those stay as they are.
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(mut v) if v.is_object() => {
                if let Some(u) = v["user_id"].as_str() {
                    v["user_id"] = format!("{u}{MARK}").into();
                }
                out.push_str(&v.to_string());
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out.push_str(r#"{"id":"bad-1","ts":"2026-09-01T00:00:00Z","tenant_id":"acme-001","user_id":"zed@example.org","meter":"api_calls","value":-1}"#);
    out.push('\n');
    out.push_str(r#"{"id":"bad-2","ts":"2026-09-01T00:00:00Z","tenant_id":"acme-001","user_id":"yan@example.org","meter":"#);
    out.push('\n');
    vec![
        write(dir, "events.ndjson", &out),
        write(
            dir,
            "more.csv",
            "id,ts,tenant_id,user_id,meter,value\n\
             c-1,2026-09-01T01:00:00Z,acme-001,xia@example.org,api_calls,abc\n\
             c-2,2026-09-01T01:00:00Z,acme-001,xia@example.org,api_calls,2\n",
        ),
    ]
}

/// Files under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let b = std::fs::read(p).unwrap();
            b.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// Every string value of every Parquet file under `dir`, decoded (compressed pages hide
/// text from a byte search).
fn parquet_strings(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
    {
        for b in parquet_batches(&f) {
            for c in b.columns() {
                if let Ok(s) = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8) {
                    use arrow::array::AsArray;
                    out.extend(s.as_string::<i32>().iter().flatten().map(str::to_string));
                }
            }
        }
    }
    out
}

fn unique_users(lake: &Path) -> Table {
    let meters = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml"));
    let s = rollup_json(lake, meters, &["--granularity", "day"]);
    let all = read_rollup(
        Path::new(s["dir"].as_str().unwrap()),
        &["tenant_id".to_string(), "meter".to_string()],
    );
    all.into_iter()
        .filter(|((k, _), _)| k[1].as_deref() == Some("active_users"))
        .collect()
}

#[test]
fn a_pseudonymised_lake_holds_no_raw_user_id_and_counts_users_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let files = inputs(dir.path());
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (plain, private) = (dir.path().join("plain"), dir.path().join("private"));
    let a = ingest(&plain, &files, &[]);
    let b = ingest(&private, &files, &["--config", cfg.to_str().unwrap()]);
    for k in ["read", "accepted", "rejected", "duplicates"] {
        assert_eq!(a[k], b[k], "{k}: {a} vs {b}");
    }

    // No raw id anywhere: not in any file's bytes (quarantine, log, index, Parquet footers
    // and statistics), nor in any decoded Parquet value.
    assert!(
        !files_holding(&plain, MARK).is_empty(),
        "the check can fail"
    );
    assert_eq!(files_holding(&private, MARK), Vec::<PathBuf>::new());
    assert!(!parquet_strings(&private).iter().any(|s| s.contains(MARK)));

    // Each user id became the HMAC an independent implementation computes; nothing else
    // changed (events with a producer id keep it).
    let key = |r: &Row| (r.tenant.clone(), r.meter.clone(), r.ts, r.value.to_bits());
    let mut want: Vec<_> = read_lake(&plain)
        .iter()
        .map(|r| (key(r), r.user.as_deref().map(pseudonym)))
        .collect();
    let mut got: Vec<_> = read_lake(&private)
        .iter()
        .map(|r| (key(r), r.user.clone()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pseudonyms differ from HMAC-SHA256(key, id)");

    // The quarantine keeps what it can, with the pseudonym in place of the id.
    let q = quarantine(&private);
    let rec = |id: &str| {
        q.iter()
            .find(|r| r["record"].as_str().is_some_and(|s| s.contains(id)))
            .unwrap_or_else(|| panic!("{id} in {q:?}"))
            .clone()
    };
    assert!(
        rec("bad-1")["record"]
            .as_str()
            .unwrap()
            .contains(&pseudonym("zed@example.org"))
    );
    assert!(
        rec("c-1")["record"]
            .as_str()
            .unwrap()
            .contains(&pseudonym("xia@example.org"))
    );
    // The unparseable one (the input's last line) is withheld, with where to find it.
    let last = std::fs::read_to_string(files[0]).unwrap().lines().count() as u64;
    let w = q.iter().find(|r| r["line"] == last).unwrap();
    assert!(w["record"].is_null(), "{w}");
    assert!(w["withheld"].as_str().unwrap().contains("not kept"), "{w}");
    assert!(
        w["file"].as_str().unwrap().ends_with("events.ndjson"),
        "{w}"
    );
    // Records of the plain lake's quarantine are there too, one for one.
    assert_eq!(q.len(), quarantine(&plain).len());

    // Unique users per tenant and day: the same counts.
    let (u_plain, u_private) = (unique_users(&plain), unique_users(&private));
    assert!(!u_plain.is_empty());
    assert_tables_match(&u_private, &u_plain, "active_users");

    // One key for life: no key, another key, or a key on a plain lake is refused, naming it.
    let extra = write(
        dir.path(),
        "late.ndjson",
        r#"{"id":"late-1","ts":"2026-09-02T00:00:00Z","tenant_id":"acme-001","user_id":"late@example.org","meter":"api_calls"}"#,
    );
    let o = mlk(&[
        "ingest",
        extra.to_str().unwrap(),
        "--lake",
        private.to_str().unwrap(),
        "--quiet",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("pseudonym_key_file"),
        "{e}"
    );
    let o = Command::new(BIN)
        .args([
            "ingest",
            extra.to_str().unwrap(),
            "--lake",
            plain.to_str().unwrap(),
            "--quiet",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("raw user ids"), "{e}");
    let other = dir.path().join("other.key");
    std::fs::write(&other, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let o = Command::new(BIN)
        .args([
            "ingest",
            extra.to_str().unwrap(),
            "--lake",
            private.to_str().unwrap(),
            "--quiet",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .env("MLK_PSEUDONYM_KEY_FILE", &other)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("configured key is"),
        "{e}"
    );

    // forget takes the raw id and removes the pseudonymised rows.
    let victim = read_lake(&plain)
        .iter()
        .filter(|r| r.tenant == "acme-001")
        .find_map(|r| r.user.clone())
        .unwrap();
    let n = read_lake(&plain)
        .iter()
        .filter(|r| r.tenant == "acme-001" && r.user.as_deref() == Some(victim.as_str()))
        .count() as u64;
    // An access request takes the raw id too; the lake's access log records the pseudonym.
    let out = dir.path().join("export");
    let m: serde_json::Value = serde_json::from_str(&ok(&[
        "export",
        "data",
        "--lake",
        private.to_str().unwrap(),
        "--tenant",
        "acme-001",
        "--user",
        &victim,
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(m["events"].as_u64(), Some(n), "{m}");
    assert_eq!(
        m["user_in_lake"].as_str(),
        Some(pseudonym(&victim).as_str())
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "forget",
        "--lake",
        private.to_str().unwrap(),
        "--tenant",
        "acme-001",
        "--user",
        &victim,
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["event_rows"].as_u64(), Some(n), "{v}");
    assert!(
        !read_lake(&private)
            .iter()
            .any(|r| r.tenant == "acme-001"
                && r.user.as_deref() == Some(pseudonym(&victim).as_str()))
    );
    // Its audit record names the pseudonym, never the raw id.
    assert_eq!(files_holding(&private, MARK), Vec::<PathBuf>::new());
}

#[test]
fn the_server_logs_and_commits_pseudonyms_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let k = key(&lake, None);
    let s = Server::start(
        &lake,
        &["--flush-ms", "600000", "--config", cfg.to_str().unwrap()],
    );
    let body: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"id":"s-{i}","ts":"2026-09-01T00:00:{i:02}Z","tenant_id":"acme-001","user_id":"p{}{MARK}","meter":"api_calls"}}"#,
                i % 3
            )
        })
        .collect();
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&k),
        Some(&format!("[{}]", body.join(","))),
    );
    assert_eq!(st, 202, "{v}");
    // Acknowledged, so in the log: pseudonyms only.
    let wal: Vec<PathBuf> = files_under(&lake.join("_wal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    assert!(!wal.is_empty());
    let logged: String = wal
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(logged.contains(&pseudonym("p0@example.org")), "{logged}");
    assert_eq!(files_holding(&lake, MARK), Vec::<PathBuf>::new());
    s.stop();
    let users: BTreeMap<String, usize> =
        read_lake(&lake).iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.user.clone().unwrap()).or_default() += 1;
            m
        });
    let want: BTreeMap<String, usize> = (0..3)
        .map(|j| {
            (
                pseudonym(&format!("p{j}{MARK}")),
                (0..20).filter(|i| i % 3 == j).count(),
            )
        })
        .collect();
    assert_eq!(users, want);
    assert_eq!(files_holding(&lake, MARK), Vec::<PathBuf>::new());

    // A client filters by the raw id it knows; the server looks up its pseudonym.
    let s = Server::start(&lake, &["--config", cfg.to_str().unwrap()]);
    let (st, v, _) = call(
        "GET",
        &format!(
            "{}/api/v1/usage/events?tenant=acme-001&from=2026-09-01&to=2026-09-02&user_id=p1%40example.org",
            s.base
        ),
        Some(&k),
        None,
    );
    s.stop();
    assert_eq!(st, 200, "{v}");
    let got: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), want[&pseudonym(&format!("p1{MARK}"))], "{v}");
    assert!(got.iter().all(|u| *u == pseudonym(&format!("p1{MARK}"))));
}

use std::process::Command;

#[test]
fn an_archive_keeps_its_pseudonyms_key_and_restores_only_into_a_lake_of_that_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let files = inputs(dir.path());
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (plain, private) = (dir.path().join("plain"), dir.path().join("private"));
    ingest(&plain, &files, &[]);
    ingest(&private, &files, &["--config", cfg.to_str().unwrap()]);
    let archive = |lake: &Path, to: &Path| {
        let o = mlk(&[
            "retention",
            "--lake",
            lake.to_str().unwrap(),
            "--events-days",
            "30",
            "--now",
            "2026-10-01",
            "--archive",
            to.to_str().unwrap(),
            "--force",
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let a = dir.path().join("archive");
    assert!(archive(&private, &a).0);
    // The archive names its key, holds pseudonyms only, and goes back into its own lake.
    let marker = std::fs::read_to_string(a.join("_privacy.json")).unwrap();
    assert_eq!(
        marker,
        std::fs::read_to_string(private.join("_privacy.json")).unwrap()
    );
    assert_eq!(files_holding(&a, MARK), Vec::<PathBuf>::new());
    let restore = |lake: &Path| {
        mlk(&[
            "restore",
            "--lake",
            lake.to_str().unwrap(),
            "--archive",
            a.to_str().unwrap(),
        ])
    };
    let o = restore(&private);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Not into a lake of raw ids, and the plain lake's events do not go to that archive.
    let o = restore(&plain);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("--archive") && e.contains("raw ids"),
        "{e}"
    );
    let (ok, e) = archive(&plain, &a);
    assert!(!ok && e.contains("another folder"), "{e}");
}
