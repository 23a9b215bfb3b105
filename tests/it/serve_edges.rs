//! The edges of `meterlake serve`: `serve-keys list` and `revoke`, a running server
//! picking up added and revoked keys without a restart, concurrent `serve-keys add`
//! losing nothing; tenant ids that would name a path outside the lake refused everywhere
//! (`serve-keys add --tenant`, `?tenant=`, a body's `tenant`); malformed query strings
//! answered in the API's JSON error shape; NDJSON recognised whatever its content type.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{BIN, files_under, mlk};
use crate::serve::{Server, call, key};

fn list(lake: &Path) -> Vec<serde_json::Value> {
    let out = mlk(&[
        "serve-keys",
        "list",
        "--lake",
        lake.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `GET /quotas` with `k` until it answers `want` (at most 2 s); the wait.
fn until_status(base: &str, k: &str, want: u16) -> Duration {
    let t = Instant::now();
    loop {
        let (st, _, _) = call(
            "GET",
            &format!("{base}/api/v1/usage/summary"),
            Some(k),
            None,
        );
        if st == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still {st}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn keys_are_listed_revoked_and_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let admin = key(&lake, None);
    let s = Server::start(&lake, &[]);
    // A key made while the server runs works within a second.
    let k = key(&lake, Some("acme"));
    let waited = until_status(&s.base, &k, 200);
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    let keys = list(&lake);
    assert_eq!(keys.len(), 2);
    let acme = keys.iter().find(|k| k["tenant"] == "acme").unwrap();
    assert_eq!(acme["admin"], false);
    assert!(acme["revoked_at"].is_null());
    let text = serde_json::to_string(&keys).unwrap();
    assert!(!text.contains(&k[4..]), "the list never shows a key");
    assert!(!text.contains("hash"), "nor its hash");
    // Revoked: refused within a second, and listed as revoked; the audit log has both.
    let id = acme["id"].as_str().unwrap();
    let out = mlk(&["serve-keys", "revoke", "--lake", lake.to_str().unwrap(), id]);
    assert!(out.status.success());
    let waited = until_status(&s.base, &k, 401);
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert!(
        list(&lake)
            .iter()
            .any(|x| x["id"] == id && x["revoked_at"].is_string())
    );
    let (st, _, _) = call(
        "GET",
        &format!("{}/api/v1/usage/summary?tenant=acme", s.base),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200, "the other keys still work");
    let audit = std::fs::read_to_string(lake.join("_api/audit.ndjson")).unwrap();
    assert_eq!(audit.matches("serve-keys add").count(), 2);
    assert_eq!(audit.matches("serve-keys revoke").count(), 1);
    // Revoking it again, or an unknown id: exit 2 naming the id.
    for bad in [id, "nosuchid"] {
        let out = mlk(&[
            "serve-keys",
            "revoke",
            "--lake",
            lake.to_str().unwrap(),
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad));
    }
}

#[test]
fn concurrent_key_adds_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let procs: Vec<_> = (0..8)
        .map(|i| {
            std::process::Command::new(BIN)
                .args(["serve-keys", "add", "--lake", lake.to_str().unwrap()])
                .args(["--tenant", &format!("c{i}")])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in procs {
        assert!(p.wait_with_output().unwrap().status.success());
    }
    let keys = list(&lake);
    for i in 0..8 {
        let c = format!("c{i}");
        assert_eq!(
            keys.iter().filter(|k| k["tenant"] == c.as_str()).count(),
            1,
            "{c} in {keys:?}"
        );
    }
    assert_eq!(keys.len(), 8);
}

#[test]
fn tenant_ids_that_name_paths_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for bad in ["../../x", "..", ".", "a/b", "a\\b"] {
        let out = mlk(&[
            "serve-keys",
            "add",
            "--lake",
            lake.to_str().unwrap(),
            "--tenant",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--tenant"), "{bad}: {err}");
    }
    let admin = key(&lake, None);
    let s = Server::start(&lake, &[]);
    for bad in ["../../x", "..", "."] {
        let q = bad.replace('/', "%2F");
        let (st, v, _) = call(
            "GET",
            &format!("{}/api/v1/usage/summary?tenant={q}", s.base),
            Some(&admin),
            None,
        );
        assert_eq!(
            (st, v["field"].as_str()),
            (400, Some("tenant")),
            "{bad}: {v}"
        );
        let body = format!(r#"{{"kind":"summary","format":"json","tenant":"{bad}"}}"#);
        let (st, v, _) = call(
            "POST",
            &format!("{}/api/v1/usage/reports/generate", s.base),
            Some(&admin),
            Some(&body),
        );
        assert_eq!(
            (st, v["field"].as_str()),
            (400, Some("tenant")),
            "{bad}: {v}"
        );
    }
    // Nothing was written outside the lake's own directories.
    let outside: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&lake))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(!lake.join("_api/summary.json").exists());
}

#[test]
fn malformed_queries_get_json_errors_and_ndjson_needs_no_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let admin = key(&lake, None);
    let k = key(&lake, Some("acme"));
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    for (q, field) in [
        ("/check-quota/api_calls?quantity=abc", "quantity"),
        ("/check-quota/api_calls?quantity=1&quantity=2", "quantity"),
        ("/summary?from=2026-01-01&to=notadate", "to"),
        ("/events?limit=-1", "limit"),
        // Past i64: it once wrapped to a negative offset, paging from the end.
        ("/events?offset=18446744073709551615", "offset"),
    ] {
        let (st, v, _) = call(
            "GET",
            &format!("{}/api/v1/usage{q}", s.base),
            Some(&k),
            None,
        );
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["field"].as_str(), Some(field), "{q}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{q}: {v}"
        );
    }
    // Three JSON lines sent as application/json: three events, not one rejected record.
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let body: String = (0..3)
        .map(|i| {
            format!(r#"{{"id":"nd{i}","tenant_id":"acme","meter":"api_calls","ts":"{ts}"}}"#) + "\n"
        })
        .collect();
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&admin),
        Some(&body),
    );
    assert_eq!(
        (st, v["accepted"].as_u64(), v["rejected"].as_u64()),
        (202, Some(3), Some(0)),
        "{v}"
    );
    // One pretty-printed object over several lines is still one event.
    let pretty = format!(
        "{{\n  \"id\": \"p1\",\n  \"tenant_id\": \"acme\",\n  \"meter\": \"api_calls\",\n  \"ts\": \"{ts}\"\n}}"
    );
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&admin),
        Some(&pretty),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(1)), "{v}");
    // A bad line among good ones is rejected by its index.
    let mixed = format!(
        "{}\nnot json\n{}\n",
        format_args!(r#"{{"id":"m1","tenant_id":"acme","meter":"api_calls","ts":"{ts}"}}"#),
        format_args!(r#"{{"id":"m2","tenant_id":"acme","meter":"api_calls","ts":"{ts}"}}"#)
    );
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&admin),
        Some(&mixed),
    );
    assert_eq!(
        (st, v["accepted"].as_u64(), v["rejected"].as_u64()),
        (202, Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["errors"][0]["index"], 1);
}

#[test]
fn heavy_requests_are_limited_per_tenant_and_in_all_and_track_never_waits() {
    let (dir, lake) = crate::serve::lake_copy();
    let faults = dir.path().join("faults");
    let admin = key(&lake, None);
    let k = key(&lake, Some("globex-002"));
    let s = Server::start_env(
        &lake,
        &["--heavy-concurrency", "2", "--flush-ms", "600000"],
        &[("MLK_FAULTS", faults.to_str().unwrap())],
    );
    // Each heavy request now holds its slot for a second.
    std::fs::write(&faults, "serve.heavy=sleep").unwrap();
    let summary = |t: &str| format!("{}/api/v1/usage/summary?tenant={t}", s.base);
    let started = |url: String, key: String| {
        std::thread::spawn(move || call("GET", &url, Some(&key), None).0)
    };
    let first = started(summary("globex-002"), admin.clone());
    std::thread::sleep(Duration::from_millis(300));
    // The same tenant again: 429 with Retry-After, at once.
    let (st, v, retry) = call("GET", &summary("globex-002"), Some(&k), None);
    assert_eq!((st, v["field"].as_str()), (429, Some("tenant")), "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    let second = started(summary("stark-001"), admin.clone());
    std::thread::sleep(Duration::from_millis(300));
    // A third tenant while two run: 503 with Retry-After.
    let (st, v, retry) = call("GET", &summary("acme-003"), Some(&admin), None);
    assert_eq!(st, 503, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    // /track and /check-quota answer while both slots are held.
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&k),
        Some(&crate::serve::events("globex-002", "api_calls", "hv-", 10)),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(10)), "{v}");
    let (st, v, _) = call(
        "GET",
        &format!("{}/api/v1/usage/check-quota/api_calls?quantity=1", s.base),
        Some(&k),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        !first.is_finished() && !second.is_finished(),
        "both heavy requests were still running"
    );
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);
    std::fs::remove_file(&faults).unwrap();
    let (st, _, _) = call("GET", &summary("acme-003"), Some(&admin), None);
    assert_eq!(st, 200, "slots are given back");
    // Heavy work runs at nice 19 (its own pool and polars' pool), the request path at 0.
    let nice = |prefix: &str| -> Vec<i64> {
        std::fs::read_dir(format!("/proc/{}/task", s.pid()))
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
            .map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
                // Fields after the command's closing parenthesis; nice is field 19.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(16).unwrap().parse().unwrap()
            })
            .collect()
    };
    let (heavy, polars, tokio) = (nice("mlk-heavy"), nice("polars"), nice("tokio"));
    let streaming = nice("async-executor");
    assert!(streaming.iter().all(|n| *n == 19), "{streaming:?}");
    assert!(
        !heavy.is_empty() && heavy.iter().all(|n| *n == 19),
        "{heavy:?}"
    );
    assert!(
        !polars.is_empty() && polars.iter().all(|n| *n == 19),
        "{polars:?}"
    );
    assert!(
        !tokio.is_empty() && tokio.iter().all(|n| *n == 0),
        "{tokio:?}"
    );
}

#[test]
fn track_pushes_back_when_the_log_is_too_far_ahead_of_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let admin = key(&lake, None);
    let s = Server::start(&lake, &["--flush-ms", "600000", "--max-lag-events", "100"]);
    let track = |prefix: &str| {
        call(
            "POST",
            &format!("{}/api/v1/usage/track", s.base),
            Some(&admin),
            Some(&crate::serve::events("acme", "api_calls", prefix, 100)),
        )
    };
    let (st, v, _) = track("a-");
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(100)));
    // 100 events wait for their commit: the next batch is refused, nothing written.
    let (st, v, retry) = track("b-");
    assert_eq!(st, 503, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    let (st, _, _) = call(
        "POST",
        &format!("{}/api/v1/usage/admin/flush", s.base),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200);
    let (st, v, _) = track("b-");
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(100)), "{v}");
}

#[test]
fn sigterm_as_soon_as_the_server_listens_flushes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let admin = key(&lake, None);
    for i in 0..10 {
        let s = Server::start(&lake, &["--flush-ms", "600000"]);
        if i % 2 == 1 {
            let (st, _, _) = call(
                "POST",
                &format!("{}/api/v1/usage/track", s.base),
                Some(&admin),
                Some(&crate::serve::events(
                    "acme",
                    "api_calls",
                    &format!("r{i}-"),
                    5,
                )),
            );
            assert_eq!(st, 202);
        }
        // The signal handlers are in place before the address is printed.
        s.stop();
    }
    assert_eq!(
        crate::common::read_lake(&lake).len(),
        25,
        "each run's events flushed on the way out"
    );
}
