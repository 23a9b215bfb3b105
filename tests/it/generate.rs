//! The generator's output is deterministic and its ground truth matches what ingest finds.

use std::fs;

use crate::common::*;

#[test]
fn same_seed_same_bytes_and_ingest_reproduces_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let gen_to = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let labels = dir.path().join(format!("{name}.labels.csv"));
        let s = ok(&[
            "generate",
            "--tenants",
            "12",
            "--days",
            "14",
            "--start",
            "2026-01-05",
            "--seed",
            seed,
            "--scale",
            "0.2",
            "--out",
            out.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--summary",
        ]);
        (
            out,
            labels,
            serde_json::from_str::<serde_json::Value>(&s).unwrap(),
        )
    };
    let (a, la, truth) = gen_to("a.ndjson", "5");
    let (b, lb, _) = gen_to("b.ndjson", "5");
    let (c, _, _) = gen_to("c.ndjson", "6");
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(fs::read(&la).unwrap(), fs::read(&lb).unwrap());
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());

    // Labels: the first tenants after the four tier representatives carry one anomaly of each kind.
    let labels = fs::read_to_string(&la).unwrap();
    for kind in ["spike", "night_burst", "bot", "drop", "leak"] {
        assert!(labels.lines().any(|l| l.ends_with(kind)), "{kind} labelled");
    }

    let lake = dir.path().join("lake");
    let v = ingest(&lake, &[&a], &[]);
    let n = |k: &str| truth[k].as_u64().unwrap();
    assert_eq!(v["read"].as_u64().unwrap(), n("lines"));
    assert_eq!(v["accepted"].as_u64().unwrap(), n("events"));
    assert_eq!(v["duplicates"].as_u64().unwrap(), n("duplicates"));
    assert_eq!(v["rejected"].as_u64().unwrap(), n("malformed"));
    assert!(n("late") > 0 && n("duplicates") > 0 && n("malformed") > 0);
    let rows = read_lake(&lake);
    let got = sums(&rows);
    for (meter, want) in truth["value_sums"].as_object().unwrap() {
        assert_close(got[meter], want.as_f64().unwrap(), meter);
    }
    // Realistic shape: every meter present, tenants of very different sizes.
    for m in meterlake::event::KNOWN_METERS {
        assert!(got.contains_key(m), "{m}");
    }
    let mut per_tenant = std::collections::BTreeMap::<&str, u64>::new();
    for r in &rows {
        *per_tenant.entry(&r.tenant).or_default() += 1;
    }
    let (min, max) = (
        per_tenant.values().min().unwrap(),
        per_tenant.values().max().unwrap(),
    );
    assert!(
        *max > 50 * *min,
        "tenant sizes differ by orders of magnitude: {min} .. {max}"
    );
}

#[test]
fn generator_rejects_bad_parameters_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.ndjson");
    for (case, flag, value) in [
        ("no tenant", "--tenants", "0"),
        ("a duplicate rate over the maximum", "--dup-rate", "0.9"),
    ] {
        assert_rejected(
            case,
            &["generate", flag, value, "--out", out.to_str().unwrap()],
            &[flag],
        );
    }
    // An output name that `ingest` would read as CSV or Parquet (it held NDJSON).
    for name in ["events.csv", "events.CSV.gz", "events.parquet"] {
        let out = dir.path().join(name);
        assert_rejected(
            name,
            &[
                "generate",
                "--tenants",
                "2",
                "--days",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
            &["--out", name, ".ndjson"],
        );
    }
    // Nothing is left behind: no output, no partial file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
