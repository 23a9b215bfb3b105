//! `serve` keeps its analytics current on its own: events tracked through the API reach
//! the forecasts, anomalies and quotas within an interval, with no `run`, and the derived
//! tables then hold the same rows as a `meterlake run` on the same lake computes.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::common::*;
use crate::serve::{Server, call, key};

/// Every row of a Parquet file, its values formatted and joined (a table's content,
/// independent of how it was split into row groups).
fn rows(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for b in parquet_batches(path) {
        let opts = FormatOptions::default();
        // Instants as their µs (the formatter knows no named zones).
        let cols: Vec<arrow::array::ArrayRef> = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Timestamp(..) => {
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap()
                }
                _ => c.clone(),
            })
            .collect();
        let fs: Vec<ArrayFormatter> = cols
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                fs.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

/// The value of a Prometheus sample.
fn metric(base: &str, name: &str) -> f64 {
    let (_, text, _) = call("GET", &format!("{base}/prometheus"), None, None);
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `used` of a tenant × meter in the quota table.
fn used(lake: &Path, tenant: &str, meter: &str) -> f64 {
    let r = rows(&lake.join("quotas/quotas.parquet"));
    let head = parquet_batches(&lake.join("quotas/quotas.parquet"))
        .next()
        .unwrap();
    let cols: Vec<String> = head
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let at = |n: &str| cols.iter().position(|c| c == n).unwrap();
    let (ti, mi, ui) = (at("tenant_id"), at("meter"), at("used"));
    r.iter()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|f| f[ti] == tenant && f[mi] == meter)
        .map(|f| f[ui].parse().unwrap())
        .unwrap()
}

/// A copy of the sample lake in `dir`, and a meterlake.toml naming data/'s plans and
/// tenants, then `extra`.
fn sample_lake(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let lake = dir.join("lake");
    copy_dir(sample_events(), &lake);
    let conf = write(
        dir,
        "meterlake.toml",
        &format!("[paths]\nplans = \"{PLANS}\"\ntenants = \"{TENANTS}\"\n{extra}"),
    );
    (lake, conf)
}

/// The independent computation: `run --force` on a copy of `lake` recomputes every derived
/// table; serve's must hold the same rows, in the same order.
fn assert_tables_equal_a_run(dir: &Path, conf: &Path, lake: &Path) {
    let other = dir.join("other");
    copy_dir(lake, &other);
    ok(&[
        "run",
        "--config",
        conf.to_str().unwrap(),
        "--lake",
        other.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
        "--tracking",
        "false",
        "--force",
        "--quiet",
    ]);
    for table in [
        "forecasts/granularity=day/forecast.parquet",
        "forecasts/granularity=day/metrics.parquet",
        "anomalies/granularity=hour/incidents.parquet",
        "anomalies/granularity=hour/points.parquet",
        "quotas/quotas.parquet",
    ] {
        let (mine, theirs) = (rows(&lake.join(table)), rows(&other.join(table)));
        assert!(!theirs.is_empty(), "{table}");
        assert_eq!(mine.len(), theirs.len(), "{table}: rows");
        let diff: Vec<(&String, &String)> = mine
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert!(
            diff.is_empty(),
            "{table}: serve's refresh and run differ: {diff:?}"
        );
    }
}

#[test]
fn serve_refreshes_analytics_and_matches_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, conf) = sample_lake(dir.path(), "[analytics]\ninterval = \"1s\"\n");
    let admin = key(&lake, None);
    let tk = key(&lake, Some("acme-001"));
    let server = Server::start_env(
        &lake,
        &["--config", conf.to_str().unwrap()],
        &[("USAGE_ANALYTICS_INTERVAL", "1s")],
    );
    let b = server.base.clone();
    // The first refresh (at start) computes everything.
    wait_until("the first refresh", || {
        metric(&b, "meterlake_analytics_refreshes_total") >= 1.0
    });
    assert!(metric(&b, "meterlake_analytics_lag_seconds") >= 0.0);
    // The refresh runs on its own thread at the lowest priority.
    let refresh_nice: Vec<(i64, i64)> = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                == "mlk-refresh"
        })
        .map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            // Fields 19 (nice) and 41 (scheduling policy) of proc_pid_stat(5).
            let field = |n: usize| rest.split(' ').nth(n - 3).unwrap().parse().unwrap();
            (field(19), field(41))
        })
        .collect();
    // (Threads the refresh starts, its one-thread pools, inherit the name, the nice and
    // the class.)
    assert!(
        !refresh_nice.is_empty() && refresh_nice.iter().all(|n| *n == (19, 5)),
        "the refresh thread and its helpers at nice 19 in SCHED_IDLE (5): {refresh_nice:?}"
    );
    let before = used(&lake, "acme-001", "api_calls");
    // 40 API calls tracked through the API, on the lake's last day.
    let body: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"id":"r{i}","ts":"2026-10-22T12:{:02}:00Z","tenant_id":"acme-001","meter":"api_calls","value":1,"user_id":"u-1"}}"#,
                i % 60
            )
        })
        .collect();
    let (s, v, _) = call(
        "POST",
        &format!("{b}/api/v1/usage/track"),
        Some(&tk),
        Some(&format!("[{}]", body.join(","))),
    );
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(40)), "{v}");
    let (s, _, _) = call(
        "POST",
        &format!("{b}/api/v1/usage/admin/flush"),
        Some(&admin),
        None,
    );
    assert_eq!(s, 200);
    // Within an interval (or two: a refresh may be running), the quotas see them.
    wait_until("a refresh after the flush", || {
        metric(&b, "meterlake_analytics_refreshes_total") >= 2.0
    });
    assert_eq!(
        used(&lake, "acme-001", "api_calls") - before,
        40.0,
        "the tracked calls are in the quotas"
    );
    server.stop();
    assert_tables_equal_a_run(dir.path(), &conf, &lake);
}

/// Under a memory budget smaller than the sample lake's series (512 KiB), the refresh
/// takes the tenants in batches, and its tables still equal a run's (one pass over
/// everything).
#[test]
fn a_refresh_in_batches_matches_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, conf) = sample_lake(dir.path(), "");
    let server = Server::start_env(
        &lake,
        &["--config", conf.to_str().unwrap()],
        &[
            ("USAGE_ANALYTICS_INTERVAL", "1h"),
            ("USAGE_ANALYTICS_MAX_MEMORY", "512KiB"),
        ],
    );
    let b = server.base.clone();
    wait_until("the first refresh", || {
        metric(&b, "meterlake_analytics_refreshes_total") >= 1.0
    });
    let batches = metric(&b, "meterlake_analytics_last_refresh_batches");
    let tenants = std::fs::read_to_string(TENANTS).unwrap().lines().count() - 1;
    assert!(
        batches >= 2.0 && batches <= tenants as f64,
        "{batches} batches for {tenants} tenants"
    );
    server.stop();
    assert_tables_equal_a_run(dir.path(), &conf, &lake);
}

/// A refresh killed midway (an abort between its forecast and anomaly tables, the
/// fault point `refresh.tables`) loses nothing and doubles nothing: the next start redoes
/// it, and the tables equal a run's; every tracked event is in the lake once and every
/// alert id once.
#[test]
fn a_refresh_killed_midway_is_redone_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, conf) = sample_lake(dir.path(), "[analytics]\ninterval = \"1s\"\n");
    let faults = dir.path().join("faults");
    let env = [
        ("MLK_FAULTS", faults.to_str().unwrap()),
        ("USAGE_ANALYTICS_INTERVAL", "1s"),
    ];
    let admin = key(&lake, None);
    let tk = key(&lake, Some("globex-002"));
    let events_before = read_lake(&lake).len();
    let server = Server::start_env(&lake, &["--config", conf.to_str().unwrap()], &env);
    let b = server.base.clone();
    wait_until("the first refresh", || {
        metric(&b, "meterlake_analytics_refreshes_total") >= 1.0
    });
    let body: Vec<String> = (0..25)
        .map(|i| {
            format!(
                r#"{{"id":"k{i}","ts":"2026-10-22T09:{i:02}:00Z","tenant_id":"globex-002","meter":"documents","value":1,"user_id":"u-2"}}"#
            )
        })
        .collect();
    // Armed before the flush: the refresh that sees these events aborts the process.
    std::fs::write(&faults, "refresh.tables=abort\n").unwrap();
    let (s, v, _) = call(
        "POST",
        &format!("{b}/api/v1/usage/track"),
        Some(&tk),
        Some(&format!("[{}]", body.join(","))),
    );
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(25)), "{v}");
    let _ = call(
        "POST",
        &format!("{b}/api/v1/usage/admin/flush"),
        Some(&admin),
        None,
    );
    wait_until("the refresh to abort the server", || {
        std::net::TcpStream::connect(b.trim_start_matches("http://")).is_err()
    });
    drop(server);
    std::fs::remove_file(&faults).unwrap();
    // The next start redoes the refresh.
    let server = Server::start_env(&lake, &["--config", conf.to_str().unwrap()], &env);
    let b = server.base.clone();
    wait_until("the redone refresh", || {
        metric(&b, "meterlake_analytics_refreshes_total") >= 1.0
    });
    server.stop();
    assert_eq!(
        read_lake(&lake).len(),
        events_before + 25,
        "each tracked event once"
    );
    assert_tables_equal_a_run(dir.path(), &conf, &lake);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&ok(&[
        "alerts",
        "list",
        "--lake",
        lake.to_str().unwrap(),
        "--all",
        "--output",
        "json",
    ]))
    .unwrap()
    .iter()
    .map(|a| a["id"].as_str().unwrap().to_string())
    .collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no alert twice");
    assert!(!ids.is_empty());
}
