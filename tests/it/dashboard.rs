//! The browser dashboard of `meterlake serve`, over a real socket: sign-in and its cookie,
//! tenant isolation on every page, figures against a fold over the lake's rows, sign-out
//! and revocation ending sessions, acknowledgement from a page, and the live version.
//! (tests/dashboard.sh drives the same pages in headless Chromium.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{TENANTS, mlk, read_lake};
use crate::serve::{Server, call, key, lake_copy};

const PAGES: [&str; 5] = ["/", "/usage", "/forecasts", "/anomalies", "/billing"];
const PERIOD: &str = "from=2026-10-01&to=2026-10-15";

/// An HTTP answer: status, headers we look at, body.
struct Answer {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn answer(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut res = res.unwrap();
    let h = |n: &str| {
        res.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (location, set_cookie) = (h("location"), h("set-cookie"));
    Answer {
        status: res.status().as_u16(),
        location,
        set_cookie,
        body: res.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn get(url: &str, cookie: Option<&str>) -> Answer {
    let mut r = agent().get(url);
    if let Some(c) = cookie {
        r = r.header("Cookie", c);
    }
    answer(r.call())
}

fn post(url: &str, cookie: Option<&str>, form: &str) -> Answer {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header("Cookie", c);
    }
    answer(r.send(form))
}

/// Signs in with `key`; returns the cookie to send back.
fn sign_in(base: &str, key: &str) -> String {
    let a = post(&format!("{base}/login"), None, &format!("key={key}"));
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location.as_deref(), Some("/"));
    let c = a.set_cookie.expect("a session cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    assert!(!c.contains(&key[4..]), "the cookie is not the key");
    c.split(';').next().unwrap().to_string()
}

/// The value of the headline figure labelled `label` on a page.
fn figure(html: &str, label: &str) -> String {
    let marker = format!("<div class=\"l\">{label}</div><div class=\"v\">");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no figure {label:?}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('<').unwrap()].to_string()
}

fn tenants() -> Vec<String> {
    std::fs::read_to_string(TENANTS)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

fn micros(day: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&format!("{day}T00:00:00Z"))
        .unwrap()
        .timestamp_micros()
}

#[test]
fn sign_in_scopes_every_page_and_sign_out_ends_it() {
    let (_d, lake) = lake_copy();
    let admin = key(&lake, None);
    let globex = key(&lake, Some("globex-002"));
    let s = Server::start(&lake, &[]);
    let url = |p: &str| format!("{}{p}", s.base);

    // Without a session: the sign-in form on `/`, a redirect to it elsewhere.
    let home = get(&url("/"), None);
    assert_eq!(home.status, 200);
    assert!(home.body.contains("type=\"password\"") && home.body.contains("action=\"/login\""));
    assert!(
        !home.body.contains("globex-002"),
        "nothing is shown before sign-in"
    );
    for p in &PAGES[1..] {
        let a = get(&url(p), None);
        assert_eq!((a.status, a.location.as_deref()), (303, Some("/")), "{p}");
    }
    // A wrong key opens nothing, and a key is never taken from a URL.
    let bad = post(&url("/login"), None, "key=mlk_0000");
    assert_eq!(bad.status, 401);
    assert!(bad.set_cookie.is_none());
    assert_eq!(get(&url(&format!("/login?key={globex}")), None).status, 405);
    assert_eq!(post(&url("/login"), None, "nokey=1").status, 400);

    // A tenant key: every page answers, with its own tenant only.
    let rows = read_lake(&lake);
    let (from, to) = (micros("2026-10-01"), micros("2026-10-15"));
    let tc = sign_in(&s.base, &globex);
    let others: Vec<String> = tenants()
        .into_iter()
        .filter(|t| t != "globex-002")
        .collect();
    for p in PAGES {
        let a = get(&url(&format!("{p}?{PERIOD}")), Some(&tc));
        assert_eq!(a.status, 200, "{p}: {}", a.body);
        assert!(a.body.contains("globex-002"), "{p}");
        for o in &others {
            assert!(!a.body.contains(o.as_str()), "{p} shows {o}");
        }
        assert!(
            !a.body.contains("<option value=\"\">All tenants"),
            "{p}: no picker"
        );
        // Another tenant's view is refused.
        let a = get(&url(&format!("{p}?tenant=acme-001&{PERIOD}")), Some(&tc));
        assert_eq!(a.status, 403, "{p}");
        assert!(
            !a.body.contains("acme-001"),
            "{p}: the refusal names no data"
        );
    }
    // Its figures, against a fold over the lake's rows.
    let overview = get(&url(&format!("/?{PERIOD}")), Some(&tc)).body;
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.tenant == "globex-002" && r.ts >= from && r.ts < to)
        .collect();
    assert_eq!(figure(&overview, "Events"), grouped(mine.len()));
    let users: BTreeSet<&str> = mine.iter().filter_map(|r| r.user.as_deref()).collect();
    assert_eq!(figure(&overview, "Active users"), grouped(users.len()));
    // Every view shown is in the access log with the key's id; the refused ones are not.
    let views: Vec<serde_json::Value> = std::fs::read_to_string(lake.join("_audit/access.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let views: Vec<_> = views.into_iter().filter(|v| v["via"] != "cli").collect();
    assert_eq!(views.len(), PAGES.len() + 1, "{views:?}");
    assert!(
        views.iter().all(|v| v["via"] == "dashboard"
            && v["tenant"] == "globex-002"
            && v["actor"] == "tenant globex-002"
            && v["key_id"] == globex[4..12]),
        "{views:?}"
    );

    // An admin key: platform totals with a picker of every tenant, and any one tenant.
    let ac = sign_in(&s.base, &admin);
    let all = get(&url(&format!("/?{PERIOD}")), Some(&ac)).body;
    for t in tenants() {
        assert!(
            all.contains(&format!("<option>{t}</option>")),
            "{t} in the picker"
        );
    }
    let period = rows.iter().filter(|r| r.ts >= from && r.ts < to).count();
    assert_eq!(figure(&all, "Events"), grouped(period));
    let one = get(&url(&format!("/?tenant=globex-002&{PERIOD}")), Some(&ac)).body;
    assert_eq!(figure(&one, "Events"), grouped(mine.len()));
    // Bad parameters are refused with the parameter named.
    for (q, field) in [
        ("period=13d0", "period"),
        ("granularity=minute", "granularity"),
        ("from=yesterday", "from"),
        ("from=2026-10-15&to=2026-10-01", "from"),
        // Inside a day: refused as the client's (it failed as a 500).
        ("from=2026-10-05T10:00:00Z", "from"),
        ("from=2026-10-05&to=2026-10-06T12:00:00Z", "to"),
        ("tenant=bad%2Fid", "tenant"),
    ] {
        let a = get(&url(&format!("/usage?{q}")), Some(&ac));
        assert_eq!(a.status, 400, "{q}");
        assert!(a.body.contains(field), "{q}: {}", a.body);
    }
    let a = get(&url("/usage?tenant=nosuch-999"), Some(&ac));
    assert_eq!(a.status, 404);
    assert!(a.body.contains("nosuch-999"), "{}", a.body);

    // Sign-out ends the session; revoking a key ends its sessions.
    let out = post(&url("/logout"), Some(&tc), "");
    assert_eq!(out.status, 303);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(get(&url("/usage"), Some(&tc)).status, 303);
    assert_eq!(get(&url("/"), Some(&tc)).body, home.body);
    let id = &admin[4..12];
    assert!(
        mlk(&["serve-keys", "revoke", "--lake", lake.to_str().unwrap(), id])
            .status
            .success()
    );
    let t0 = Instant::now();
    while get(&url("/usage"), Some(&ac)).status != 303 {
        assert!(t0.elapsed() < Duration::from_secs(5), "still signed in");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `1234` → `1,234`, as the figures show counts.
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn alerts_are_acknowledged_from_the_page_and_new_data_shows_live() {
    let (_d, lake) = lake_copy();
    let admin = key(&lake, None);
    let s = Server::start(&lake, &[]);
    let url = |p: &str| format!("{}{p}", s.base);
    // The tenant with the most open alerts.
    let (_, v, _) = call(
        "GET",
        &url("/api/v1/usage/alerts?tenant=globex-002"),
        Some(&admin),
        None,
    );
    let open: Vec<String> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["acknowledged_at"].is_null())
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !open.is_empty(),
        "the sample has open alerts for globex-002"
    );
    let tk = key(&lake, Some("globex-002"));
    let tc = sign_in(&s.base, &tk);
    let page = get(&url("/anomalies"), Some(&tc)).body;
    let action = format!("/anomalies/alerts/{}/acknowledge", open[0]);
    assert!(
        page.contains(&action),
        "an Acknowledge button for {}",
        open[0]
    );
    let a = post(&url(&action), Some(&tc), "");
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/anomalies")));
    let (_, v, _) = call(
        "GET",
        &url("/api/v1/usage/alerts?tenant=globex-002"),
        Some(&admin),
        None,
    );
    let acked = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == open[0].as_str())
        .unwrap()
        .clone();
    assert_eq!(acked["acknowledged_by"], "dashboard:globex-002");
    let audit = std::fs::read_to_string(lake.join("_api/audit.ndjson")).unwrap();
    let entry = audit
        .lines()
        .find(|l| l.contains(&open[0]))
        .expect("the acknowledgement is in the audit log");
    assert!(
        entry.contains("\"actor\":\"dashboard:globex-002\""),
        "{entry}"
    );
    let page = get(&url("/anomalies"), Some(&tc)).body;
    assert!(!page.contains(&action), "acknowledged: no button any more");
    assert!(page.contains("by dashboard:globex-002"));
    // Another tenant's alert is missing for this key, as in the API.
    let (_, v, _) = call(
        "GET",
        &url("/api/v1/usage/alerts?tenant=acme-001"),
        Some(&admin),
        None,
    );
    if let Some(other) = v["alerts"].as_array().unwrap().first() {
        let id = other["id"].as_str().unwrap();
        let a = post(
            &url(&format!("/anomalies/alerts/{id}/acknowledge")),
            Some(&tc),
            "",
        );
        assert_eq!(a.status, 404);
    }

    // Live: the version moves when data arrives, and the page's main part has it.
    let live = |c: &str| -> serde_json::Value {
        serde_json::from_str(&get(&url("/live"), Some(c)).body).unwrap()
    };
    assert_eq!(get(&url("/live"), None).status, 401);
    let before = live(&tc);
    let ts = "2026-10-22T10:00:00Z";
    let body = format!(
        r#"[{{"id":"live-1","tenant_id":"globex-002","user_id":"u1","meter":"api_calls","ts":"{ts}"}}]"#
    );
    let (st, _, _) = call("POST", &url("/api/v1/usage/track"), Some(&tk), Some(&body));
    assert_eq!(st, 202);
    let (st, _, _) = call(
        "POST",
        &url("/api/v1/usage/admin/flush"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200);
    let after = live(&tc);
    assert_ne!(
        before["version"], after["version"],
        "a commit of this tenant's event moves the version, even one older than its latest"
    );
    // Another tenant's commit shows nothing through this tenant's /live: neither its
    // version nor its latest event moves; and /live answers for this tenant only.
    let other = r#"[{"id":"live-2","tenant_id":"acme-001","user_id":"u1","meter":"api_calls","ts":"2026-10-23T09:00:00Z"}]"#;
    let (st, _, _) = call(
        "POST",
        &url("/api/v1/usage/track"),
        Some(&admin),
        Some(other),
    );
    assert_eq!(st, 202);
    let (st, _, _) = call(
        "POST",
        &url("/api/v1/usage/admin/flush"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(
        live(&tc),
        after,
        "acme-001's event is not globex-002's business"
    );
    assert_eq!(get(&url("/live?tenant=acme-001"), Some(&tc)).status, 403);
    let q = "/?from=2026-10-22&to=2026-10-23";
    let mut r = agent().get(&url(q)).header("Cookie", &tc);
    r = r.header("X-Fragment", "1");
    let frag = answer(r.call());
    assert_eq!(frag.status, 200);
    assert!(!frag.body.contains("<html"), "only the main part");
    let n = read_lake(&lake)
        .iter()
        .filter(|r| {
            r.tenant == "globex-002" && r.ts >= micros("2026-10-22") && r.ts < micros("2026-10-23")
        })
        .count();
    assert_eq!(
        figure(&frag.body, "Events"),
        grouped(n),
        "the new event counts"
    );
}
