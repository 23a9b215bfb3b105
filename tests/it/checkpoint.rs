//! Log checkpoints: a lake that checkpoints every few commits answers exactly as the same
//! lake with its whole log (stats, dedup of files and events, a usage query, the
//! compliance report's commit history, forget's audit), while its log directory holds only
//! the commits since the last checkpoint.

use std::path::Path;
use std::process::Command;

use crate::common::{BIN, write};

/// Runs meterlake with checkpoints every `every` commits (0: never); stdout.
fn run(every: &str, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(args)
        .env("MLK_CHECKPOINT_EVERY", every)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The same history of commits on a lake: 23 ingests (one with a rejected record, one a
/// file seen before, one with duplicate events), a compaction, a forget.
fn build(lake: &Path, dir: &Path, every: &str) {
    let l = lake.to_str().unwrap();
    for k in 0..23 {
        let text: String = (0..40)
            .map(|i| {
                format!(
                    r#"{{"id":"e{k}-{i}","ts":"2026-03-{:02}T{:02}:00:00Z","tenant_id":"t{}","user_id":"u{}","meter":"api_calls","value":{}}}"#,
                    1 + (k + i) % 9,
                    i % 24,
                    i % 3,
                    i % 7,
                    i + 1
                ) + "\n"
            })
            .collect::<String>()
            + if k == 5 { "not json\n" } else { "" };
        let f = write(dir, &format!("{every}-f{k}.ndjson"), &text);
        run(
            every,
            &["ingest", f.to_str().unwrap(), "--lake", l, "--quiet"],
        );
    }
    // The first file again (skipped by checksum), and its events in a new file (duplicates).
    let first = dir.join(format!("{every}-f0.ndjson"));
    let again = dir.join(format!("{every}-again.ndjson"));
    std::fs::copy(&first, &again).unwrap();
    std::fs::write(
        &again,
        std::fs::read_to_string(&first)
            .unwrap()
            .replace("\n", " \n"),
    )
    .unwrap();
    for f in [&first, &again] {
        run(
            every,
            &["ingest", f.to_str().unwrap(), "--lake", l, "--quiet"],
        );
    }
    run(every, &["compact", "--lake", l]);
    run(
        every,
        &[
            "forget", "--lake", l, "--tenant", "t1", "--user", "u3", "--actor", "dpo",
        ],
    );
}

fn json(every: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(every, args)).unwrap()
}

#[test]
fn a_checkpointed_lake_answers_as_its_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    build(&a, dir.path(), "4");
    build(&b, dir.path(), "0");
    // The log of `a` holds only what came after its last checkpoint.
    let top = |l: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(l.join("_log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    };
    let (ta, tb) = (top(&a), top(&b));
    // 23 ingests, the duplicates' file, the compaction, the forget (the file seen before
    // makes no commit).
    assert_eq!(tb.len(), 26, "{tb:?}");
    assert!(ta.len() <= 4, "{ta:?}");
    assert!(ta.iter().any(|n| n.ends_with(".checkpoint.json")), "{ta:?}");
    // Same answers.
    let stats = |l: &Path, every: &str| {
        json(
            every,
            &[
                "lake",
                "stats",
                "--lake",
                l.to_str().unwrap(),
                "--output",
                "json",
            ],
        )
    };
    let (sa, sb) = (stats(&a, "4"), stats(&b, "0"));
    assert_eq!(sa, sb);
    assert_eq!(sa["commits"], 26);
    let n = |k: &str| sa["ingested"][k].as_u64().unwrap();
    assert_eq!(
        (n("read"), n("rejected"), n("duplicates")),
        (23 * 40 + 1 + 40, 1, 40)
    );
    let usage = |l: &Path, every: &str| {
        json(
            every,
            &[
                "usage",
                "--lake",
                l.to_str().unwrap(),
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-10",
                "--by",
                "user",
                "--output",
                "json",
            ],
        )
    };
    assert_eq!(usage(&a, "4"), usage(&b, "0"));
    // The compliance report lists every commit, with the forget's audit record.
    let compliance = |l: &Path, every: &str| {
        let out = dir.path().join(format!("c-{every}.json"));
        run(
            every,
            &[
                "report",
                "--lake",
                l.to_str().unwrap(),
                "--kind",
                "compliance",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let rows = |name: &str| v["tables"][name].as_array().unwrap().len();
        (rows("commits"), rows("audit"))
    };
    assert_eq!(compliance(&a, "4"), (26, 1));
    assert_eq!(compliance(&b, "0"), (26, 1));
    // Dedup still knows every file and every event, after more checkpoints.
    let first = dir.path().join("4-f0.ndjson");
    let v = json(
        "4",
        &[
            "ingest",
            first.to_str().unwrap(),
            "--lake",
            a.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ],
    );
    assert_eq!(v["skipped"].as_array().map(Vec::len), Some(1), "{v}");
    let again = write(
        dir.path(),
        "late.ndjson",
        r#"{"id":"e7-3","ts":"2026-03-01T03:00:00Z","tenant_id":"t0","meter":"api_calls","value":1}"#,
    );
    let v = json(
        "4",
        &[
            "ingest",
            again.to_str().unwrap(),
            "--lake",
            a.to_str().unwrap(),
            "--output",
            "json",
            "--quiet",
        ],
    );
    assert_eq!(v["duplicates"], 1, "{v}");
}
