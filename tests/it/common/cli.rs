//! Running the `meterlake` binary: plain runs, runs that must succeed, `ingest` and
//! `lake stats` as JSON, and bad invocations checked as tables of cases.

use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_meterlake");

pub fn mlk(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meterlake")
}

/// `meterlake ARGS` run in `dir`.
pub fn mlk_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meterlake")
}

/// Runs and expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = mlk(args);
    assert!(
        o.status.success(),
        "meterlake {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `ingest --output json` of the given files.
pub fn ingest(lake: &Path, files: &[&Path], extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec!["ingest".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend([
        "--lake".into(),
        lake.display().to_string(),
        "--output".into(),
        "json".into(),
        "--quiet".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n("read"),
        n("accepted") + n("rejected") + n("duplicates"),
        "accounting: {v}"
    );
    v
}

/// `lake stats --output json` (which also recovers an interrupted commit when no writer runs).
pub fn lake_stats(lake: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "lake",
        "stats",
        "--lake",
        lake.to_str().unwrap(),
        "--output",
        "json",
    ]))
    .unwrap()
}

/// Runs a bad invocation and expects exit 2 with each of `fragments` in its error message;
/// a failure names `case`, so a table of cases says which one broke.
pub fn assert_rejected(case: &str, args: &[&str], fragments: &[&str]) {
    let o = mlk(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{case}: meterlake {args:?} should exit 2: {err}"
    );
    for f in fragments {
        assert!(
            err.contains(f),
            "{case}: the error of meterlake {args:?} should contain `{f}`: {err}"
        );
    }
    // Each cause once: `FILE: No such file (os error 2): No such file (os error 2)` was not.
    if let Some(line) = err.lines().find(|l| l.starts_with("error: ")) {
        let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 12).collect();
        let once: std::collections::BTreeSet<&str> = parts.iter().copied().collect();
        assert_eq!(once.len(), parts.len(), "{case}: a cause repeated: {line}");
    }
}

/// Runs with stdout a pipe whose reader is already gone (`meterlake ... | head` after
/// head exited): every write to it fails with a broken pipe.
pub fn with_closed_stdout(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run meterlake");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for meterlake")
}
