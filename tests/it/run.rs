//! `meterlake run`: the README's main job on the sample writes every report and a second
//! run only checks; its switches and the configuration's precedence (flag over environment
//! over file).

use arrow::array::AsArray;

use crate::common::*;

fn stage<'a>(s: &'a serde_json::Value, name: &str) -> &'a str {
    s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {s}"))["note"]
        .as_str()
        .unwrap()
}

#[test]
fn run_writes_every_report_and_a_second_run_only_checks() {
    let s = sample();
    let f = &s.first;
    let n = |k: &str| f[k].as_u64().unwrap();
    assert!(n("read") > 0);
    assert_eq!(n("read"), n("accepted") + n("rejected") + n("duplicates"));
    assert_eq!(n("events"), read_lake(&s.lake).len() as u64);
    // Every kind in every format (CSV and Parquet add one file per further table).
    for kind in [
        "summary",
        "detailed",
        "forecast",
        "anomaly",
        "executive",
        "compliance",
    ] {
        for ext in ["json", "csv", "md", "html", "xlsx", "pdf", "parquet"] {
            let p = s
                .out
                .join("reports")
                .join(kind)
                .join(format!("{kind}.{ext}"));
            assert!(p.is_file(), "missing {}", p.display());
        }
    }
    assert!(f["reports"].as_array().unwrap().len() > 42);
    // The invoices file is September's, as `invoice` computes it.
    let inv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.out.join("invoices/2026-09.json")).unwrap())
            .unwrap();
    let direct: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        s.lake.to_str().unwrap(),
        "--period",
        "2026-09",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(inv, direct);
    assert!(s.lake.join("quotas/quotas.parquet").is_file());
    // The second run ingests nothing new and recomputes nothing.
    let g = &s.second;
    assert_eq!(g["accepted"], 0);
    assert_eq!(g["read"], 0, "the input is skipped by checksum");
    for st in ["forecast", "anomalies", "reports"] {
        assert_eq!(stage(g, st), "up to date", "{st}");
    }
    assert_eq!(g["alerts_raised"], 0, "alerts are raised once");
    assert_eq!(g["anomalies"], f["anomalies"]);
    for (p, b) in &s.bytes {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
}

#[test]
fn switches_turn_ingest_enforcement_and_alerts_off() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let alerts_before = std::fs::read(lake.join("alerts/alerts.parquet")).unwrap();
    let o = std::process::Command::new(BIN)
        .args([
            "run",
            "--lake",
            lake.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
            "--enforcement",
            "false",
            "--kinds",
            "summary",
            "--formats",
            "json",
            "--output",
            "json",
            "--quiet",
        ])
        .env("USAGE_TRACKING_ENABLED", "false")
        .env("LIMITS_NOTIFICATION_ENABLED", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(stage(&v, "ingest").contains("tracking disabled"));
    assert_eq!(stage(&v, "alerts"), "notifications disabled");
    assert_eq!(
        std::fs::read(lake.join("alerts/alerts.parquet")).unwrap(),
        alerts_before
    );
    // Hard caps reached are reported as exceeded, not blocked, and marked not enforced.
    let q = lake.join("quotas/quotas.parquet");
    let status = strings(&q, "status");
    assert!(!status.iter().flatten().any(|s| s == "blocked"));
    let enforced: Vec<bool> = parquet_batches(&q)
        .flat_map(|b| {
            let c = b.column_by_name("enforced").unwrap().as_boolean().clone();
            (0..c.len()).map(move |i| c.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert!(enforced.iter().all(|e| !e));
    let original = strings(&s.lake.join("quotas/quotas.parquet"), "status");
    let blocked = original
        .iter()
        .flatten()
        .filter(|s| *s == "blocked")
        .count();
    assert!(blocked > 0, "the sample has tenants at hard caps");
    let exceeded = |v: &[Option<String>]| v.iter().flatten().filter(|s| *s == "exceeded").count();
    assert_eq!(exceeded(&status), exceeded(&original) + blocked);
    // The report says the same (it said blocked: the flag only reached the stored table).
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/reports/summary/summary.json")).unwrap(),
    )
    .unwrap();
    let rows = rows_of(&summary, "quotas");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["status"] != "blocked"), "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "exceeded").count(),
        exceeded(&status)
    );
}

/// Reports follow what they are made from: after a change of the forecast model (or the
/// anomaly threshold, the plans, the meters) a rerun on the same lake rewrites them; it
/// said "up to date" and left reports contradicting the lake's tables.
#[test]
fn reports_are_rebuilt_when_their_sources_settings_change() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    copy_dir(&s.lake, &lake);
    copy_dir(&s.out, &out);
    let v = run_json(
        &lake,
        &out,
        &[
            "--model",
            "naive",
            "--kinds",
            "forecast",
            "--formats",
            "json",
        ],
    );
    assert_ne!(stage(&v, "forecast"), "up to date", "{v}");
    assert_ne!(stage(&v, "reports"), "up to date", "{v}");
    let f: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("reports/forecast/forecast.json")).unwrap())
            .unwrap();
    // Every series of the forecast and accuracy tables by the new model (the quota
    // outlook's projections keep their own `auto`).
    for table in ["forecast", "accuracy"] {
        let rows = rows_of(&f, table);
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r["model"] == "naive"), "{table}");
    }
    // Nothing changed since: up to date.
    let v = run_json(
        &lake,
        &out,
        &[
            "--model",
            "naive",
            "--kinds",
            "forecast",
            "--formats",
            "json",
        ],
    );
    assert_eq!(stage(&v, "reports"), "up to date", "{v}");
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "m.toml",
        "[tracking]\nretention_days = 90\n[forecast]\nmodel = \"naive\"\nhorizon = 7\n[anomalies]\nthreshold = 4.0\n",
    );
    let o = std::process::Command::new(BIN)
        .args([
            "run",
            "--config",
            conf.to_str().unwrap(),
            "--print-config",
            "--model",
            "ses",
        ])
        .env("USAGE_TRACKING_EVENTS_RETENTION_DAYS", "30")
        .env("ANALYTICS_FORECAST_MODEL", "holt")
        .env("LIMITS_NOTIFICATION_ENABLED", "false")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: toml::Value = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    assert_eq!(
        c["forecast"]["model"].as_str(),
        Some("ses"),
        "flag over environment"
    );
    assert_eq!(
        c["forecast"]["horizon"].as_integer(),
        Some(7),
        "file over default"
    );
    assert_eq!(
        c["tracking"]["events_retention_days"].as_integer(),
        Some(30),
        "environment over file"
    );
    assert_eq!(c["tracking"]["retention_days"].as_integer(), Some(90));
    assert_eq!(c["anomalies"]["threshold"].as_float(), Some(4.0));
    assert_eq!(c["limits"]["notification_enabled"].as_bool(), Some(false));
    // Bad values name their source.
    let o = std::process::Command::new(BIN)
        .args(["run", "--config", conf.to_str().unwrap(), "--print-config"])
        .env("ANALYTICS_ANOMALY_DETECTION_THRESHOLD", "high")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ANALYTICS_ANOMALY_DETECTION_THRESHOLD"));
    let bad = write(dir.path(), "bad.toml", "[forecast]\nhorizn = 3\n");
    let o = mlk(&["run", "--config", bad.to_str().unwrap(), "--print-config"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("horizn"), "{err}");
}

/// The batch job hands its quota stage's rows to its reports; `meterlake report` on the
/// same lake evaluates them itself. Both must say the same, report by report.
#[test]
fn reports_of_the_run_equal_reports_built_alone() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let meters = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");
    let args = ["--plans", PLANS, "--tenants", TENANTS, "--meters", meters];
    for kind in ["summary", "forecast", "executive", "anomaly"] {
        let alone = report_to(
            &s.lake,
            kind,
            &dir.path().join(format!("{kind}.json")),
            &args,
        );
        let of_run = report_json(kind);
        assert!(!of_run["tables"].as_object().unwrap().is_empty(), "{kind}");
        assert_eq!(alone, of_run, "{kind}");
    }
}

/// Reports are written by a thread of their own while the next kind is built: a file it
/// cannot write still fails the run, with an error naming the path, and the reports
/// before it stay written.
#[test]
fn a_report_that_cannot_be_written_fails_the_run_naming_it() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let out = dir.path().join("out");
    // A file where the forecast report's folder must go.
    std::fs::create_dir_all(out.join("reports")).unwrap();
    let blocker = out.join("reports/forecast");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let o = std::process::Command::new(BIN)
        .args(["run", "--lake", lake.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--force", "--quiet"])
        .args([
            "--kinds",
            "summary,forecast,anomaly",
            "--formats",
            "json,csv",
        ])
        .env("USAGE_TRACKING_ENABLED", "false")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the run succeeded: {err}");
    assert!(err.contains("reports/forecast"), "{err}");
    assert!(out.join("reports/summary/summary.json").is_file());
    assert!(!out.join("reports/anomaly/anomaly.json").exists());
}

/// A plans, tenants or meters path set away from its default that does not exist stops the
/// job naming the setting (it skipped quotas, alerts and invoicing with exit 0: a cron job
/// with a typo stopped billing silently).
#[test]
fn a_configured_path_that_does_not_exist_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    let (l, o) = (lake.to_str().unwrap(), out.to_str().unwrap());
    for (flag, setting) in [("--plans", "paths.plans"), ("--tenants", "paths.tenants")] {
        assert_rejected(
            setting,
            &["run", "--lake", l, "--out", o, flag, "nope.file", "--quiet"],
            &[setting, "nope.file"],
        );
    }
    assert!(
        !lake.join("events").exists(),
        "nothing ingested before the refusal"
    );
}
