//! `--shard I/N`: N workers, run at once as separate processes, each compute their
//! tenants' part of the rollups, forecasts, anomalies and quotas; the union equals one
//! unsharded run's output exactly (rollup rows value for value, derived tables byte for
//! byte, quota rows field for field), first and incrementally, and when the layout changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

fn data(name: &str) -> String {
    format!("{}/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A generated lake of 24 tenants over two weeks, and its tenants file.
fn lake_in(dir: &Path) -> (PathBuf, PathBuf) {
    let input = dir.join("in.ndjson");
    let tenants = dir.join("tenants.csv");
    ok(&[
        "generate",
        "--tenants",
        "24",
        "--days",
        "14",
        "--start",
        "2026-10-01",
        "--seed",
        "5",
        "--scale",
        "0.02",
        "--out",
        input.to_str().unwrap(),
        "--tenants-out",
        tenants.to_str().unwrap(),
        "--quiet",
    ]);
    let lake = dir.join("lake");
    ingest(&lake, &[&input], &[]);
    (lake, tenants)
}

/// The stages sharded, as command lines over `lake`.
fn stages(lake: &Path) -> Vec<Vec<String>> {
    let l = lake.display().to_string();
    let m = data("meters.toml");
    [
        vec!["rollup", "--granularity", "day"],
        vec![
            "rollup",
            "--granularity",
            "hour",
            "--by",
            "user",
            "--tz",
            "Europe/Berlin",
        ],
        vec!["forecast", "--horizon", "7"],
        vec!["detect"],
    ]
    .into_iter()
    .map(|a| {
        let mut v: Vec<String> = a.into_iter().map(String::from).collect();
        v.extend(["--lake".into(), l.clone(), "--meters".into(), m.clone()]);
        v
    })
    .collect()
}

/// Runs every stage over `lake` as `n` workers at once (one process per shard), stage
/// after stage; `n` = 0 runs each stage once, unsharded.
fn run_stages(lake: &Path, n: u32) {
    for args in stages(lake) {
        if n == 0 {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&a);
            continue;
        }
        let workers: Vec<_> = (0..n)
            .map(|i| {
                Command::new(BIN)
                    .args(&args)
                    .args(["--shard", &format!("{i}/{n}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for w in workers {
            let o = w.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "{args:?} of {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

const ROLLUPS: [(&str, &[&str]); 2] = [
    (
        "rollups/granularity=day/by=none/tz=UTC",
        &["tenant_id", "meter"],
    ),
    (
        "rollups/granularity=hour/by=user/tz=Europe%2FBerlin",
        &["tenant_id", "meter", "user_id"],
    ),
];

const TABLES: [&str; 4] = [
    "forecasts/granularity=day/forecast.parquet",
    "forecasts/granularity=day/metrics.parquet",
    "anomalies/granularity=hour/points.parquet",
    "anomalies/granularity=hour/incidents.parquet",
];

/// The sharded lake's outputs equal the single run's: rollup rows exactly (and none in
/// two shards), derived tables byte for byte.
fn assert_same_outputs(single: &Path, sharded: &Path, what: &str) {
    for (rel, keys) in ROLLUPS {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let want = read_rollup(&single.join(rel), &keys);
        let got = read_rollup(&sharded.join(rel), &keys);
        assert!(want.len() > 100, "{what} {rel}: {} rows", want.len());
        let diff = want
            .iter()
            .find(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k:?}: {v:?} against {:?}", got.get(k)));
        assert!(
            got.len() == want.len() && diff.is_none(),
            "{what} {rel}: {} rows against {}; {diff:?}",
            got.len(),
            want.len()
        );
    }
    for rel in TABLES {
        assert!(
            fs::read(single.join(rel)).unwrap() == fs::read(sharded.join(rel)).unwrap(),
            "{what}: {rel} differs"
        );
    }
}

/// `quota --output json` rows, sorted by tenant and meter; with `n` > 0 the union of `n`
/// shards' outputs.
fn quota_rows(lake: &Path, tenants: &Path, n: u32) -> Vec<serde_json::Value> {
    let args = |shard: String| -> Vec<String> {
        let mut a: Vec<String> = ["quota", "--lake", lake.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        a.extend(["--plans".into(), data("plans.toml")]);
        a.extend(["--tenants".into(), tenants.display().to_string()]);
        a.extend(["--output".into(), "json".into(), "--shard".into(), shard]);
        a
    };
    let shards: Vec<String> = if n == 0 {
        vec!["0/1".into()]
    } else {
        (0..n).map(|i| format!("{i}/{n}")).collect()
    };
    let mut rows = Vec::new();
    for s in shards {
        let a = args(s);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let v: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        rows.extend(v["quotas"].as_array().unwrap().iter().cloned());
    }
    rows.sort_by_key(|r| (r["tenant_id"].to_string(), r["meter"].to_string()));
    rows
}

fn layout(lake: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(lake.join(rel).join("_layout.json")).ok()
}

#[test]
fn shard_workers_together_write_exactly_one_runs_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (single, tenants) = lake_in(dir.path());
    let copies: Vec<(u32, PathBuf)> = [1u32, 3, 7]
        .into_iter()
        .map(|n| {
            let l = dir.path().join(format!("lake-{n}"));
            copy_dir(&single, &l);
            (n, l)
        })
        .collect();
    run_stages(&single, 0);
    let quotas = quota_rows(&single, &tenants, 0);
    assert!(quotas.len() >= 24, "{} quota rows", quotas.len());
    for (n, lake) in &copies {
        run_stages(lake, *n);
        assert_same_outputs(&single, lake, &format!("{n} shards"));
        assert_eq!(
            quota_rows(lake, &tenants, *n),
            quotas,
            "quotas of {n} shards"
        );
        if *n > 1 {
            let day = ROLLUPS[0].0;
            assert_eq!(layout(lake, day).unwrap(), format!("{{\"shards\":{n}}}"));
            for i in 0..*n {
                assert!(
                    lake.join(day)
                        .join(format!("shard={i}-of-{n}/_state.json"))
                        .is_file()
                );
            }
            assert!(
                !lake.join(day).join("_state.json").exists(),
                "no unsharded state"
            );
        }
    }

    // A report across tenants, run once over the union, is the single lake's, and reading
    // does not change the layout.
    let report = |lake: &Path, kind: &str| -> Vec<u8> {
        let out = lake.with_extension(format!("{kind}.json"));
        let (plans, meters) = (data("plans.toml"), data("meters.toml"));
        let extra = ["-q", "--plans", &plans, "--meters", &meters];
        report_to(
            lake,
            kind,
            &out,
            &[&extra[..], &["--tenants", tenants.to_str().unwrap()]].concat(),
        );
        fs::read(out).unwrap()
    };
    for kind in ["summary", "forecast", "anomaly"] {
        assert!(
            report(&single, kind) == report(&copies[1].1, kind),
            "{kind} report over 3 shards"
        );
    }
    assert_eq!(
        layout(&copies[1].1, ROLLUPS[0].0).unwrap(),
        "{\"shards\":3}"
    );

    // New events (a late one, a new tenant): the workers' incremental runs still give the
    // single run's outputs.
    let tenant = fs::read_to_string(&tenants)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let more = write(
        dir.path(),
        "more.ndjson",
        &[
            (tenant.as_str(), "2026-10-03T05:00:00Z", "api_calls", 3.0),
            ("newco", "2026-10-13T10:00:00Z", "api_calls", 1.0),
            ("newco", "2026-10-14T10:00:00Z", "ai_tokens", 700.0),
        ]
        .iter()
        .enumerate()
        .map(|(i, (t, ts, m, v))| {
            format!(
                "{{\"id\":\"late-{i}\",\"tenant_id\":\"{t}\",\"ts\":\"{ts}\",\"meter\":\"{m}\",\"value\":{v}}}\n"
            )
        })
        .collect::<String>(),
    );
    for lake in std::iter::once(&single).chain(copies.iter().map(|(_, l)| l)) {
        ingest(lake, &[&more], &[]);
    }
    run_stages(&single, 0);
    let (n, three) = &copies[1];
    run_stages(three, *n);
    assert_same_outputs(&single, three, "3 shards, incremental");

    // Commands that name no shard (as `run` and `serve` do) on the 7-shard lake bring
    // every shard up to date in turn: the layout stays, the outputs are the single run's.
    let (_, seven) = &copies[2];
    run_stages(seven, 0);
    assert_same_outputs(&single, seven, "7 shards, then commands naming none");
    for (rel, _) in ROLLUPS {
        assert_eq!(layout(seven, rel).unwrap(), "{\"shards\":7}", "{rel}");
    }
    // `rollup --shard 0/1` switches back to one layout: the shards' folders go.
    for args in &stages(seven)[..2] {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["--shard", "0/1"]);
        ok(&a);
    }
    assert_same_outputs(&single, seven, "7 shards, then one");
    for (rel, _) in ROLLUPS {
        assert_eq!(layout(seven, rel).unwrap(), "{\"shards\":1}");
        let shard_dirs = fs::read_dir(seven.join(rel))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("shard=")
            })
            .count();
        assert_eq!(shard_dirs, 0, "{rel}");
    }

    // `forget` refreshes a sharded rollup shard by shard: it stays sharded, and equals the
    // single lake's after the same forget.
    for lake in [&single, three] {
        ok(&[
            "forget",
            "--lake",
            lake.to_str().unwrap(),
            "--tenant",
            &tenant,
            "--meters",
            &data("meters.toml"),
        ]);
    }
    for (rel, keys) in ROLLUPS {
        assert_eq!(layout(three, rel).unwrap(), "{\"shards\":3}", "{rel}");
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let got = read_rollup(&three.join(rel), &keys);
        assert!(
            got.keys()
                .all(|(k, _)| k[0].as_deref() != Some(tenant.as_str()))
        );
        assert!(
            got == read_rollup(&single.join(rel), &keys),
            "{rel} after forget"
        );
    }
}

#[test]
fn a_bad_shard_is_refused_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    for (case, shard) in [
        ("index past the count", "3/3"),
        ("no count", "2"),
        ("zero", "0/0"),
    ] {
        assert_rejected(
            case,
            &[
                "rollup",
                "--lake",
                &lake,
                "--granularity",
                "day",
                "--shard",
                shard,
            ],
            &["--shard", shard],
        );
    }
    assert_rejected(
        "shard of a series file",
        &[
            "forecast",
            "--series",
            "x.csv",
            "--horizon",
            "3",
            "--shard",
            "0/2",
        ],
        &["--shard", "--lake"],
    );
}
