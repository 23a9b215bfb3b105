//! The rest of the usage API as clients of such services call it: `/limits` (the quotas
//! with their hard/soft kind, against the plan catalogue), `/analytics` (usage, trends and
//! engagement in one answer, each equal to its own endpoint or command), and
//! `POST /anomalies/detect` (detection on demand: the same incidents as `detect --lake`,
//! scoped to the caller, and nothing new the second time).

use std::collections::BTreeSet;

use crate::common::*;
use crate::serve::{Server, call, key};

/// A config naming the sample's plans and tenants.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "meterlake.toml",
        &format!("[paths]\nplans = \"{PLANS}\"\ntenants = \"{TENANTS}\"\n"),
    )
}

#[test]
fn limits_and_analytics_agree_with_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let tk = key(&lake, Some("acme-001"));
    let now = "2026-10-23T00:00:00Z";
    let conf = config(dir.path());
    let server = Server::start_env(
        &lake,
        &["--config", conf.to_str().unwrap()],
        &[("MLK_NOW", now)],
    );
    let url = |p: &str| format!("{}/api/v1/usage/{p}", server.base);
    // /limits: each billed meter of acme-001's plan (enterprise), its kind from plans.toml.
    let (s, l, _) = call("GET", &url("limits"), Some(&tk), None);
    assert_eq!(s, 200, "{l}");
    let plans: toml::Value = toml::from_str(&std::fs::read_to_string(PLANS).unwrap()).unwrap();
    let terms = &plans["plans"]["enterprise"]["meters"];
    let limits = l["limits"].as_array().unwrap();
    assert!(!limits.is_empty());
    for q in limits {
        let m = q["meter"].as_str().unwrap();
        let want = match terms.get(m) {
            None => "none",
            Some(t) if t.get("included").and_then(|i| i.as_str()) == Some("unlimited") => "none",
            Some(t) if t.get("hard_cap").and_then(|h| h.as_bool()) == Some(true) => "hard",
            Some(_) => "soft",
        };
        assert_eq!(q["limit_kind"], want, "{m}: {q}");
    }
    let (_, quotas, _) = call("GET", &url("quotas"), Some(&tk), None);
    assert_eq!(quotas["quotas"].as_array().unwrap().len(), limits.len());
    // /analytics over the last 7 days: each part equals its own endpoint or command.
    let (s, a, _) = call(
        "GET",
        &url("analytics?days=7&to=2026-10-23"),
        Some(&tk),
        None,
    );
    assert_eq!(s, 200, "{a}");
    let (_, summary, _) = call(
        "GET",
        &url("summary?from=2026-10-16&to=2026-10-23"),
        Some(&tk),
        None,
    );
    assert_eq!(a["usage"], summary, "usage = /summary");
    let trends = a["trends"].as_array().unwrap();
    assert!(trends.len() >= 3, "{a}");
    for tr in trends {
        let m = tr["meter"].as_str().unwrap();
        let (_, one, _) = call(
            "GET",
            &url(&format!("trends/{m}?days=7&to=2026-10-23")),
            Some(&tk),
            None,
        );
        assert_eq!(tr, &one, "trend of {m}");
    }
    // A typo is refused, naming it: an unknown meter (404), an unknown parameter (400; a
    // `?user=` for `?user_id=` returned every event unfiltered).
    let (s, e, _) = call("GET", &url("trends/api_cals?days=7"), Some(&tk), None);
    assert_eq!((s, e["field"].as_str()), (404, Some("meter")), "{e}");
    for path in [
        "events?user=u-1",
        "summary?form=2026-10-01",
        "check-quota/api_calls?qty=5",
    ] {
        let (s, e, _) = call("GET", &url(path), Some(&tk), None);
        let typo = path.split(['?', '=']).nth(1).unwrap();
        assert_eq!((s, e["field"].as_str()), (400, Some(typo)), "{path}: {e}");
    }
    let cli: serde_json::Value = serde_json::from_str(&ok(&[
        "engagement",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        "acme-001",
        "--at",
        "2026-10-23",
        "--tenants",
        TENANTS,
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(a["engagement"], cli[0], "engagement = the CLI's");
}

#[test]
fn detection_on_demand_finds_what_the_batch_detection_finds() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    // The independent run: `detect --lake` on another copy.
    let other = dir.path().join("other");
    copy_dir(sample_events(), &other);
    ok(&[
        "detect",
        "--lake",
        other.to_str().unwrap(),
        "--granularity",
        "hour",
        "--output",
        "json",
    ]);
    let want = read_incidents(&other);
    assert!(!want.is_empty());
    let conf = config(dir.path());
    let admin = key(&lake, None);
    let tk = key(&lake, Some("acme-001"));
    let server = Server::start(&lake, &["--config", conf.to_str().unwrap()]);
    let url = format!("{}/api/v1/usage/anomalies/detect", server.base);
    let ids = |v: &serde_json::Value| -> BTreeSet<(String, String, String)> {
        v["new_incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (s("tenant_id"), s("meter"), r["window_start"].to_string())
            })
            .collect()
    };
    // A tenant: its own incidents only, all new.
    let (s, v, _) = call("POST", &url, Some(&tk), Some("{}"));
    assert_eq!(s, 200, "{v}");
    let mine = ids(&v);
    let want_mine = want.iter().filter(|r| r.tenant == "acme-001").count();
    assert_eq!(mine.len(), want_mine, "{v}");
    assert!(mine.iter().all(|k| k.0 == "acme-001"));
    // Another tenant's: refused.
    let (s, _, _) = call("POST", &url, Some(&tk), Some(r#"{"tenant":"globex-002"}"#));
    assert_eq!(s, 403);
    // The admin, all tenants: nothing new now (the tables are already whole), and the
    // stored incidents equal the independent run's.
    let (s, v, _) = call("POST", &url, Some(&admin), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v).len(), 0, "{v}");
    assert_eq!(v["incidents_total"], want.len());
    let got = read_incidents(&lake);
    let key = |r: &IncidentRow| (r.tenant.clone(), r.meter.clone(), r.start);
    assert_eq!(
        got.iter().map(key).collect::<BTreeSet<_>>(),
        want.iter().map(key).collect::<BTreeSet<_>>()
    );
    let (s, v, _) = call(
        "POST",
        &url,
        Some(&admin),
        Some(r#"{"granularity":"week"}"#),
    );
    assert_eq!(s, 400, "{v}");
}

/// Per-user rate limits from the plan: one user throttled (429 `user_id`, Retry-After)
/// while another of the same tenant is not; a refused request stores nothing.
#[test]
fn one_user_is_throttled_while_another_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let mut plans = std::fs::read_to_string(PLANS).unwrap();
    plans.push_str("\n[plans.basic.limits]\nuser_rate = 0.01\nuser_burst = 3\n");
    let plans = write(dir.path(), "plans.toml", &plans);
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan\nt1,basic\nt2,free\n",
    );
    let conf = write(
        dir.path(),
        "meterlake.toml",
        &format!(
            "[paths]\nplans = \"{}\"\ntenants = \"{}\"\n",
            plans.display(),
            tenants.display()
        ),
    );
    let k1 = key(&lake, Some("t1"));
    let k2 = key(&lake, Some("t2"));
    let server = Server::start(&lake, &["--config", conf.to_str().unwrap()]);
    let track = |k: &str, evs: &[(&str, &str, &str)]| {
        let body: Vec<String> = evs
            .iter()
            .map(|(id, t, u)| {
                format!(
                    r#"{{"id":"{id}","ts":"2026-10-20T10:00:00Z","tenant_id":"{t}","meter":"api_calls","value":1,"user_id":"{u}"}}"#
                )
            })
            .collect();
        call(
            "POST",
            &format!("{}/api/v1/usage/track", server.base),
            Some(k),
            Some(&format!("[{}]", body.join(","))),
        )
    };
    // User a: a burst of 3, then refused (a refill takes 100 s), with the wait.
    let (s, v, _) = track(
        &k1,
        &[("a1", "t1", "a"), ("a2", "t1", "a"), ("a3", "t1", "a")],
    );
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(3)), "{v}");
    let (s, v, retry) = track(&k1, &[("a4", "t1", "a")]);
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["field"], "user_id");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // User b of the same tenant is not throttled; a request mixing a and b is refused
    // whole, and b's event in it was not stored (it is fresh when sent again alone).
    let (s, _, _) = track(&k1, &[("b1", "t1", "b"), ("a5", "t1", "a")]);
    assert_eq!(s, 429);
    let (s, v, _) = track(&k1, &[("b1", "t1", "b"), ("b2", "t1", "b")]);
    assert_eq!(
        (s, v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (202, Some(2), Some(0)),
        "{v}"
    );
    // A plan without [limits] has none.
    let many: Vec<(String, &str, &str)> = (0..20).map(|i| (format!("c{i}"), "t2", "c")).collect();
    let many: Vec<(&str, &str, &str)> = many.iter().map(|(i, t, u)| (i.as_str(), *t, *u)).collect();
    let (s, v, _) = track(&k2, &many);
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(20)), "{v}");
}
