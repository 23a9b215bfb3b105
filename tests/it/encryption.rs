//! Encryption at rest: `run` on data/ with a key writes only encrypted Parquet and gives the
//! same reports and invoices as without; the files hold the same rows for a reader with
//! the key (arrow-rs here, independently of meterlake); without the key, or with another,
//! every read fails naming the file's key; a rekey killed midway leaves every file
//! readable with one of the two keys and is finished by running it again.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::common::*;

fn key_file(dir: &Path, name: &str, byte: u8, len: usize) -> (PathBuf, Vec<u8>) {
    let key = vec![byte; len];
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&key)
        ),
    )
    .unwrap();
    (p, key)
}

fn mlk_with(key: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args).env("NO_COLOR", "1");
    match key {
        Some(k) => c.env("MLK_ENCRYPTION_KEY_FILE", k),
        None => c.env_remove("MLK_ENCRYPTION_KEY_FILE"),
    };
    c.output().unwrap()
}

fn ok_with(key: Option<&Path>, args: &[&str]) -> String {
    let o = mlk_with(key, args);
    assert!(
        o.status.success(),
        "meterlake {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `export data` of tenant acme-001 (with the key, if any): its summary.
fn export_acme(lake: &Path, out: &Path, key: Option<&Path>) -> serde_json::Value {
    serde_json::from_str(&ok_with(
        key,
        &[
            "export",
            "data",
            "--lake",
            lake.to_str().unwrap(),
            "--tenant",
            "acme-001",
            "--out",
            out.to_str().unwrap(),
            "--output",
            "json",
        ],
    ))
    .unwrap()
}

fn parquet_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

fn footer_magic(p: &Path) -> Vec<u8> {
    let b = std::fs::read(p).unwrap();
    b[b.len() - 4..].to_vec()
}

#[test]
fn an_encrypted_run_gives_the_same_reports_and_invoices_and_nothing_reads_without_the_key() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let (key, k) = key_file(dir.path(), "lake.key", 7, 32);
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    ok_with(
        Some(&key),
        &[
            "run",
            "--lake",
            lake.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--output",
            "json",
        ],
    );

    // Every Parquet file written, in the lake and among the outputs, is encrypted.
    let files: Vec<PathBuf> = parquet_under(&lake)
        .into_iter()
        .chain(parquet_under(&out))
        .collect();
    assert!(files.len() > 20, "{}", files.len());
    for f in &files {
        assert_eq!(footer_magic(f), b"PARE", "{} is not encrypted", f.display());
    }

    // The same rows as the plain run's lake, for a reader with the key.
    let plain = rows_sorted(&read_lake(&s.lake));
    let enc = with_keys(std::slice::from_ref(&k), || rows_sorted(&read_lake(&lake)));
    assert_eq!(enc.len(), plain.len());
    assert!(enc == plain, "the encrypted lake holds other rows");
    // Without the key, arrow-rs cannot read a file (nor its statistics).
    assert!(try_parquet_batches(&files[0]).is_err());

    // The same reports (text formats; the compliance report records commit times) and
    // the same invoices.
    let mut compared = 0;
    for (p, bytes) in &s.bytes {
        let rel = p.strip_prefix(&s.out).unwrap();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(ext, "json" | "csv" | "md" | "html") || rel.starts_with("reports/compliance") {
            continue;
        }
        let mine = std::fs::read(out.join(rel)).unwrap();
        assert!(&mine == bytes, "{} differs with encryption", rel.display());
        compared += 1;
    }
    assert!(compared >= 20, "{compared}");
    for f in files_under(&s.out.join("invoices")) {
        let rel = f.strip_prefix(&s.out).unwrap();
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(&f).unwrap(),
            "{}",
            rel.display()
        );
    }

    // The quarantine holds sealed lines only, and they open: an access request finds the
    // tenant's rejected records as on the plain lake.
    let q = std::fs::read_to_string(lake.join("quarantine/00000001.ndjson")).unwrap();
    assert!(q.lines().count() > 100);
    assert!(
        q.lines()
            .all(|l| l.starts_with(&format!("mlk-aes-gcm:{}:", key_id(&k))))
    );
    assert!(!q.contains("acme-001"));
    let plain_lake = dir.path().join("plain-copy");
    copy_dir(&s.lake, &plain_lake);
    let (e1, e2) = (
        export_acme(&lake, &dir.path().join("x1"), Some(&key)),
        export_acme(&plain_lake, &dir.path().join("x2"), None),
    );
    for f in ["events", "quarantined"] {
        assert_eq!(e1[f], e2[f], "{f}");
    }
    assert!(e1["quarantined"].as_u64().unwrap() > 0);
    // A key on a lake whose events are in clear: refused (it would leave them in clear and
    // lock the plain writers out), pointing at `lake rekey`.
    let o = mlk_with(
        Some(&key),
        &[
            "rollup",
            "--lake",
            plain_lake.to_str().unwrap(),
            "--granularity",
            "day",
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("lake rekey") && e.contains("in clear"),
        "{e}"
    );
    assert!(!plain_lake.join("_encryption.json").exists());

    // Without the key, or with another: an error naming a file and the key it needs.
    let id = key_id(&k);
    let o = mlk_with(None, &["lake", "stats", "--lake", lake.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains(&id)
            && e.contains("no key is configured")
            && e.contains(".parquet"),
        "{e}"
    );
    let (other, ok2) = key_file(dir.path(), "other.key", 9, 16);
    let o = mlk_with(
        Some(&other),
        &[
            "usage",
            "--lake",
            lake.to_str().unwrap(),
            "--from",
            "2026-08-01",
            "--to",
            "2026-11-01",
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains(&id) && e.contains(&key_id(&ok2)),
        "{e}"
    );
    // A bad key file is named.
    std::fs::write(dir.path().join("bad.key"), "c2hvcnQ=\n").unwrap();
    let o = mlk_with(
        Some(&dir.path().join("bad.key")),
        &["lake", "stats", "--lake", lake.to_str().unwrap()],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.key") && e.contains("16 or 32"),
        "{e}"
    );

    // The lake records its key: a writer without it, or with another, is refused before it
    // writes anything (no file in clear, none under a second key).
    let files_before = parquet_under(&lake);
    let input = dir.path().join("late.ndjson");
    std::fs::write(
        &input,
        r#"{"id":"late-1","ts":"2026-09-30T10:00:00Z","tenant_id":"acme-001","meter":"api_calls"}"#,
    )
    .unwrap();
    let l = lake.to_str().unwrap();
    for key in [None, Some(other.as_path())] {
        for args in [
            vec!["ingest", input.to_str().unwrap(), "--lake", l],
            vec!["rollup", "--lake", l, "--granularity", "day"],
        ] {
            let o = mlk_with(key, &args);
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && e.contains("_encryption.json") && e.contains(&id),
                "{args:?} with {key:?}: {e}"
            );
        }
    }
    assert_eq!(parquet_under(&lake), files_before);
    ok_with(
        Some(&key),
        &["ingest", input.to_str().unwrap(), "--lake", l],
    );
}

/// (date, id, ts, tenant, user, meter, value bits, properties), sorted.
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

fn rows_sorted(rs: &[Row]) -> Vec<Full> {
    let mut v: Vec<Full> = rs
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

#[test]
fn a_rekey_killed_midway_leaves_every_file_readable_and_finishes_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let (k1f, k1) = key_file(dir.path(), "old.key", 1, 32);
    let (k2f, k2) = key_file(dir.path(), "new.key", 2, 32);
    let cfg = write(
        dir.path(),
        "m.toml",
        &format!(
            "[security]\nencryption_key_file = {:?}\n",
            k1f.display().to_string()
        ),
    );
    let lake = dir.path().join("lake");
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/data/events/events.ndjson.gz");
    let c = cfg.to_str().unwrap();
    ok_with(
        None,
        &[
            "ingest",
            events,
            "--lake",
            lake.to_str().unwrap(),
            "--config",
            c,
            "--quiet",
        ],
    );
    let meters = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");
    ok_with(
        Some(&k1f),
        &[
            "rollup",
            "--lake",
            lake.to_str().unwrap(),
            "--meters",
            meters,
            "--granularity",
            "day",
        ],
    );
    let before = with_keys(std::slice::from_ref(&k1), || rows_sorted(&read_lake(&lake)));
    let files = parquet_under(&lake);
    assert!(files.len() > 30);

    // Killed with a rewritten copy whole but not yet renamed over its file: the file is
    // untouched, the copy left beside it.
    let faults = dir.path().join("faults");
    // A rekey to the new key aborted at fault point `point`.
    let killed_at = |point: &str| {
        std::fs::write(&faults, format!("{point}=abort\n")).unwrap();
        let o = Command::new(BIN)
            .args([
                "lake",
                "rekey",
                "--lake",
                lake.to_str().unwrap(),
                "--new-key-file",
            ])
            .arg(&k2f)
            .args(["--config", c])
            .env("MLK_FAULTS", &faults)
            .output()
            .unwrap();
        assert!(!o.status.success());
    };
    killed_at("rekey.rename");
    assert!(
        files_under(&lake)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".rekey-tmp"))
    );
    for f in parquet_under(&lake) {
        let ok = with_keys(&[k1.clone(), k2.clone()], || try_parquet_batches(&f));
        assert!(ok.is_ok(), "{} reads with neither key", f.display());
    }

    // Killed after its first file.
    killed_at("rekey.file");
    let (mut old, mut new) = (0, 0);
    for f in parquet_under(&lake) {
        if with_keys(std::slice::from_ref(&k2), || try_parquet_batches(&f)).is_ok() {
            new += 1;
        } else {
            with_keys(std::slice::from_ref(&k1), || try_parquet_batches(&f))
                .unwrap_or_else(|e| panic!("{} reads with neither key: {e}", f.display()));
            old += 1;
        }
    }
    assert!(new >= 1 && old >= 1, "new {new}, old {old}");
    assert_eq!(old + new, files.len());
    // The configuration still names the old key until the rekey finishes, but the lake
    // already names the new one: a writer with the old key cannot add files the rekey passed.
    assert!(std::fs::read_to_string(&cfg).unwrap().contains("old.key"));
    let o = mlk_with(
        Some(&k1f),
        &[
            "rollup",
            "--lake",
            lake.to_str().unwrap(),
            "--meters",
            meters,
            "--granularity",
            "hour",
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("_encryption.json") && e.contains(&key_id(&k2)),
        "{e}"
    );
    assert_eq!(parquet_under(&lake).len(), files.len());

    std::fs::remove_file(&faults).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok_with(
        None,
        &[
            "lake",
            "rekey",
            "--lake",
            lake.to_str().unwrap(),
            "--new-key-file",
            k2f.to_str().unwrap(),
            "--config",
            c,
            "--output",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(v["already"].as_u64(), Some(new as u64), "{v}");
    assert_eq!(v["rewritten"].as_u64(), Some(old as u64), "{v}");
    assert_eq!(v["key_id"].as_str(), Some(key_id(&k2).as_str()));
    assert!(
        !files_under(&lake)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".rekey-tmp"))
    );
    // Every file under the new key, with the same rows; the configuration names it.
    for f in parquet_under(&lake) {
        assert!(with_keys(std::slice::from_ref(&k1), || try_parquet_batches(&f)).is_err());
    }
    assert_eq!(
        with_keys(std::slice::from_ref(&k2), || rows_sorted(&read_lake(&lake))),
        before
    );
    assert!(std::fs::read_to_string(&cfg).unwrap().contains("new.key"));
    // The quarantine was resealed under the new key.
    let q = std::fs::read_to_string(lake.join("quarantine/00000001.ndjson")).unwrap();
    assert!(q.lines().count() > 100);
    assert!(
        q.lines()
            .all(|l| l.starts_with(&format!("mlk-aes-gcm:{}:", key_id(&k2))))
    );
    ok_with(
        Some(&k2f),
        &[
            "usage",
            "--lake",
            lake.to_str().unwrap(),
            "--from",
            "2026-08-01",
            "--to",
            "2026-11-01",
        ],
    );
}

#[test]
fn the_servers_log_is_sealed_and_its_events_reach_the_lake_encrypted() {
    use crate::serve::{Server, call, key};
    let dir = tempfile::tempdir().unwrap();
    let (kf, k) = key_file(dir.path(), "lake.key", 5, 16);
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let admin = key(&lake, None);
    let s = Server::start_env(
        &lake,
        &["--flush-ms", "600000"],
        &[("MLK_ENCRYPTION_KEY_FILE", kf.to_str().unwrap())],
    );
    let body: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id":"w-{i}","ts":"2026-09-01T00:00:{i:02}Z","tenant_id":"acme-001","user_id":"u{}","meter":"api_calls"}}"#, i % 3))
        .collect();
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&admin),
        Some(&format!("[{}]", body.join(","))),
    );
    assert_eq!(st, 202, "{v}");
    let logged: String = files_under(&lake.join("_wal"))
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(logged.lines().count(), 20);
    assert!(
        logged
            .lines()
            .all(|l| l.starts_with(&format!("mlk-aes-gcm:{}:", key_id(&k))))
    );
    assert!(!logged.contains("acme-001"));
    s.stop();
    for f in parquet_under(&lake) {
        assert_eq!(footer_magic(&f), b"PARE", "{}", f.display());
    }
    let rows = with_keys(std::slice::from_ref(&k), || read_lake(&lake));
    assert_eq!(rows.len(), 20);

    // A report the API stores in the lake is sealed whole; an access request opens it.
    let s = Server::start_env(
        &lake,
        &[],
        &[("MLK_ENCRYPTION_KEY_FILE", kf.to_str().unwrap())],
    );
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/reports/generate", s.base),
        Some(&admin),
        Some(
            r#"{"kind":"summary","format":"json","tenant":"acme-001","from":"2026-09-01","to":"2026-09-02"}"#,
        ),
    );
    s.stop();
    assert_eq!(st, 201, "{v}");
    let stored = std::fs::read_to_string(lake.join("_api/reports/acme-001/summary.json")).unwrap();
    assert!(
        stored.starts_with(&format!("mlk-aes-gcm:{}:", key_id(&k))),
        "{stored}"
    );
    assert!(!stored.contains("acme-001"));
    let out = dir.path().join("export");
    export_acme(&lake, &out, Some(&kf));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reports/summary.json")).unwrap())
            .unwrap();
    assert!(report.to_string().contains("acme-001"), "{report}");
}
