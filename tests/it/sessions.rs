//! Sessions from hand-made events, checked against values worked out by hand in the
//! comments: a session crossing local midnight, one crossing the end of daylight saving
//! time in New York, an explicit login/logout pair holding an idle stretch together, lone
//! events, and a user whose UTC and local days differ. The same numbers through
//! `engagement`, the detailed and executive reports, and `GET /api/v1/usage/sessions`.

use std::path::Path;

use crate::common::*;
use crate::serve::{Server, call, key};

/// The events (New York is UTC−4 until 2026-11-01 06:00 UTC, UTC−5 after).
fn events() -> String {
    let mut s = String::new();
    let mut e = |id: &str, ts: &str, tenant: &str, meter: &str, user: &str| {
        ev(&mut s, id, ts, tenant, meter, 1.0, Some(user))
    };
    // t-ny, user a:
    // 1. 23:50, 00:10, 00:35 EDT across local midnight Oct 31 → Nov 1: gaps 20 and 25 min,
    //    one session of 45 min (2,700 s) on Oct 31 (local).
    e("a1", "2026-11-01T03:50:00Z", "t-ny", "api_calls", "a");
    e("a2", "2026-11-01T04:10:00Z", "t-ny", "api_calls", "a");
    e("a3", "2026-11-01T04:35:00Z", "t-ny", "documents", "a");
    // 2. 01:40 EDT, then 01:10 EST and 01:30 EST (the clocks went back at 02:00 EDT): 65 min
    //    after the last event, a new session; real gaps 30 and 20 min, one session of
    //    50 min (3,000 s; naive local times would say −10 min), on Nov 1.
    e("a4", "2026-11-01T05:40:00Z", "t-ny", "api_calls", "a");
    e("a5", "2026-11-01T06:10:00Z", "t-ny", "api_calls", "a");
    e("a6", "2026-11-01T06:30:00Z", "t-ny", "api_calls", "a");
    // 3. login 09:00 EST Nov 2, activity 09:05, 10:30 (85 min idle), logout 10:45: one
    //    explicit session of 105 min (6,300 s), on Nov 2.
    e("a7", "2026-11-02T14:00:00Z", "t-ny", "login", "a");
    e("a8", "2026-11-02T14:05:00Z", "t-ny", "api_calls", "a");
    e("a9", "2026-11-02T15:30:00Z", "t-ny", "api_calls", "a");
    e("a10", "2026-11-02T15:45:00Z", "t-ny", "logout", "a");
    // t-ny, user b: two lone events (0 s each): 23:59 EDT Oct 31 (Nov 1 in UTC) and
    // 23:30 EST Nov 1 (Nov 2 in UTC).
    e("b1", "2026-11-01T03:59:00Z", "t-ny", "api_calls", "b");
    e("b2", "2026-11-02T04:30:00Z", "t-ny", "api_calls", "b");
    // t-utc, user c: session_start 10:00, activity 10:20, session_end 10:50 (3,000 s);
    // then 11:30 and 11:45 (a 40 min gap after the end: a new session of 900 s).
    e("c1", "2026-11-02T10:00:00Z", "t-utc", "session_start", "c");
    e("c2", "2026-11-02T10:20:00Z", "t-utc", "api_calls", "c");
    e("c3", "2026-11-02T10:50:00Z", "t-utc", "session_end", "c");
    e("c4", "2026-11-02T11:30:00Z", "t-utc", "api_calls", "c");
    e("c5", "2026-11-02T11:45:00Z", "t-utc", "api_calls", "c");
    s
}

const TENANTS_CSV: &str =
    "tenant_id,plan,time_zone\nt-ny,basic,America/New_York\nt-utc,basic,UTC\n";

fn lake(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let input = write(dir, "events.ndjson", &events());
    let tenants = write(dir, "tenants.csv", TENANTS_CSV);
    let lake = dir.join("lake");
    ingest(&lake, &[&input], &[]);
    (lake, tenants)
}

/// t-ny by hand: durations 2,700, 3,000, 6,300 (a) and 0, 0 (b); sorted 0, 0, 2,700,
/// 3,000, 6,300: median 2,700, p95 at position 3.8: 3,000 + 0.8 × 3,300 = 5,640.
/// Local days: Oct 31 (a's first, b's first), Nov 1 (a's second, b's second), Nov 2.
fn check_ny(s: &serde_json::Value, days: u64) {
    assert_eq!(s["tenant_id"], "t-ny");
    assert_eq!(s["sessions"], 5, "{s}");
    assert_eq!(s["explicit_sessions"], 1);
    assert_eq!(s["active_users"], 2);
    assert_eq!(s["days"], days);
    assert_close(
        s["sessions_per_day"].as_f64().unwrap(),
        5.0 / days as f64,
        "per day",
    );
    assert_close(
        s["sessions_per_active_user"].as_f64().unwrap(),
        2.5,
        "per user",
    );
    assert_close(s["median_duration_s"].as_f64().unwrap(), 2700.0, "median");
    assert_close(s["p95_duration_s"].as_f64().unwrap(), 5640.0, "p95");
    let daily: Vec<(String, u64, u64)> = s["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["sessions"].as_u64().unwrap(),
                d["users"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        daily,
        vec![
            ("2026-10-31".into(), 2, 2),
            ("2026-11-01".into(), 2, 2),
            ("2026-11-02".into(), 1, 1)
        ]
    );
    // a: 2,700, 3,000, 6,300: median 3,000, p95 at 1.9: 3,000 + 0.9 × 3,300 = 5,970.
    let users = s["users"].as_array().unwrap();
    assert_eq!(users[0]["user_id"], "a");
    assert_eq!(users[0]["sessions"], 3);
    assert_close(
        users[0]["median_duration_s"].as_f64().unwrap(),
        3000.0,
        "a median",
    );
    assert_close(
        users[0]["p95_duration_s"].as_f64().unwrap(),
        5970.0,
        "a p95",
    );
    assert_close(
        users[0]["total_duration_s"].as_f64().unwrap(),
        12000.0,
        "a total",
    );
    assert_eq!(users[1]["user_id"], "b");
    assert_eq!(users[1]["sessions"], 2);
    assert_eq!(users[1]["median_duration_s"].as_f64().unwrap(), 0.0);
}

/// t-utc by hand: 3,000 s (explicit) and 900 s: median 1,950, p95 at 0.95: 900 + 0.95 ×
/// 2,100 = 2,895; one user, two sessions on Nov 2.
fn check_utc(s: &serde_json::Value) {
    assert_eq!(s["tenant_id"], "t-utc");
    assert_eq!(s["sessions"], 2, "{s}");
    assert_eq!(s["explicit_sessions"], 1);
    assert_close(s["median_duration_s"].as_f64().unwrap(), 1950.0, "median");
    assert_close(s["p95_duration_s"].as_f64().unwrap(), 2895.0, "p95");
    assert_close(
        s["sessions_per_active_user"].as_f64().unwrap(),
        2.0,
        "per user",
    );
}

/// `engagement --lake LAKE --at 2026-11-03 --output json EXTRA...`.
fn engagement(lake: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "engagement",
        "--lake",
        lake,
        "--at",
        "2026-11-03",
        "--output",
        "json",
    ];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn sessions_by_hand_in_engagement_reports_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, tenants) = lake(dir.path());
    let l = lake.to_str().unwrap();
    // engagement as of Nov 3 00:00 UTC: the 30 days from Oct 4 00:00 UTC, which in New
    // York are the local days Oct 3 to Nov 2 (31 days); in UTC Oct 4 to Nov 2 (30).
    let e = engagement(l, &["--tenants", tenants.to_str().unwrap()]);
    let of = |t: &str| {
        e.as_array()
            .unwrap()
            .iter()
            .find(|x| x["tenant_id"] == t)
            .unwrap()["sessions"]
            .clone()
    };
    check_ny(&of("t-ny"), 31);
    check_utc(&of("t-utc"));
    assert_eq!(of("t-utc")["days"], 30);
    // Without the tenants file, days are UTC: a's first two sessions and b's first event
    // start on Nov 1 (03:50, 05:40, 03:59 UTC); b's second and a's login on Nov 2.
    let e = engagement(l, &["--tenant", "t-ny"]);
    let daily = &e[0]["sessions"]["daily"];
    assert_eq!(daily[0]["date"], "2026-11-01", "{daily}");
    assert_eq!(daily[0]["sessions"], 3);
    assert_eq!(daily[1]["date"], "2026-11-02");
    assert_eq!(daily[1]["sessions"], 2);
    // A shorter gap splits a's DST session (its 30 min gap) and the first one (25 min).
    let e = engagement(l, &["--tenant", "t-ny", "--session-gap-minutes", "24"]);
    assert_eq!(e[0]["sessions"]["sessions"], 7, "{}", e[0]["sessions"]);

    // The detailed and executive reports over Oct 31 – Nov 3 (UTC).
    let range = ["--from", "2026-10-31", "--to", "2026-11-03"];
    let plans = PLANS;
    for kind in ["detailed", "executive"] {
        let out = dir.path().join(format!("{kind}.json"));
        let mut extra = vec!["--plans", plans, "--tenants", tenants.to_str().unwrap()];
        extra.extend(range);
        let r = report_to(&lake, kind, &out, &extra);
        let rows = rows_of(&r, "sessions");
        let ny = rows.iter().find(|x| x["tenant"] == "t-ny").unwrap();
        assert_eq!(ny["sessions"], 5, "{kind}: {ny}");
        assert_eq!(ny["active_users"], 2);
        assert_close(ny["median_duration_s"].as_f64().unwrap(), 2700.0, kind);
        assert_close(ny["p95_duration_s"].as_f64().unwrap(), 5640.0, kind);
        // 4 local days (Oct 30 20:00 EDT to Nov 2 19:00 EST): 5 / 4.
        assert_close(ny["per_day"].as_f64().unwrap(), 1.3, kind);
        let utc = rows.iter().find(|x| x["tenant"] == "t-utc").unwrap();
        assert_eq!(utc["sessions"], 2, "{kind}");
    }

    // The API, as t-ny sees it (the server knows the tenants' zones).
    let config = write(
        dir.path(),
        "meterlake.toml",
        &format!(
            "[paths]\nplans = \"{plans}\"\ntenants = \"{}\"\n",
            tenants.display()
        ),
    );
    let k = key(&lake, Some("t-ny"));
    let server = Server::start(&lake, &["--config", config.to_str().unwrap()]);
    let url = format!(
        "{}/api/v1/usage/sessions?from=2026-10-04&to=2026-11-03",
        server.base
    );
    let (status, body, _) = call("GET", &url, Some(&k), None);
    assert_eq!(status, 200, "{body}");
    check_ny(&body, 31);
    // A range ending mid-session (a's login at 14:00 UTC, logout 15:45): the session
    // counts whole, as it would with a later end.
    let cut = format!(
        "{}/api/v1/usage/sessions?from=2026-10-04&to=2026-11-02T14:30:00Z&user_id=a",
        server.base
    );
    let (status, body, _) = call("GET", &cut, Some(&k), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"], 3, "{body}");
    assert_eq!(body["explicit_sessions"], 1);
    assert_close(
        body["users"][0]["total_duration_s"].as_f64().unwrap(),
        12000.0,
        "cut",
    );
    let (status, body, _) = call("GET", &format!("{url}&user_id=b"), Some(&k), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"], 2);
    assert_eq!(body["active_users"], 1);
    let (status, body, _) = call("GET", &format!("{url}&gap_minutes=-1"), Some(&k), None);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("gap_minutes"), "{body}");
    // Another tenant's sessions are not t-ny's to read.
    let (status, _, _) = call("GET", &format!("{url}&tenant=t-utc"), Some(&k), None);
    assert_eq!(status, 403);
}
