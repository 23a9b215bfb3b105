//! `meterlake serve` over a real socket on loopback: durability across kill -9, quotas and
//! hard caps from the live counters, rate limits, tenant isolation, bad input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{BIN, copy_dir, ok, parquet_batches, read_lake, sample, string_col, strings};

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(lake: &Path, extra: &[&str]) -> Server {
        Server::start_env(lake, extra, &[])
    }

    /// `start` with environment variables (`MLK_NOW` pins the server's clock,
    /// `MLK_FAULTS` names the fault-injection control file).
    pub(crate) fn start_env(lake: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--lake",
                lake.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .args(extra)
            // No analytics refresh in the background unless a test asks for one (it would
            // compete for the cores with what the test measures).
            .env("USAGE_ANALYTICS_INTERVAL", "off")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as an operator stops it: the server flushes its log, then exits.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "the server exits cleanly on SIGTERM: {st}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, JSON body, Retry-After).
pub(crate) fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let a = agent();
    let auth = key.map(|k| format!("Bearer {k}"));
    let res = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.call()
        }
        (m, b) => {
            let mut r = match m {
                "POST" => a.post(url),
                "PATCH" => a.patch(url),
                _ => unreachable!(),
            };
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r = r.header("Content-Type", "application/json");
            match b {
                Some(b) => r.send(b),
                None => r.send_empty(),
            }
        }
    };
    let mut res = res.unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        retry,
    )
}

/// The raw answer to a POST of `path` that declares a `bytes`-long body and sends none
/// (raw TCP: an HTTP client would stream the body and see the connection close).
pub(crate) fn declared_body(base: &str, path: &str, key: &str, bytes: u64) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {bytes}\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
}

pub(crate) fn key(lake: &Path, tenant: Option<&str>) -> String {
    let mut args = vec!["serve-keys", "add", "--lake", lake.to_str().unwrap()];
    match tenant {
        Some(t) => args.extend(["--tenant", t]),
        None => args.push("--admin"),
    }
    ok(&args).trim().to_string()
}

pub(crate) fn events(tenant: &str, meter: &str, prefix: &str, n: usize) -> String {
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{prefix}{i}","tenant_id":"{tenant}","user_id":"u{}","meter":"{meter}","ts":"{ts}"}}"#,
                i % 7
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

pub(crate) fn lake_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&sample().lake, &lake);
    // A new lake: its access log starts empty (the sample's records the other tests' reads).
    let _ = std::fs::remove_dir_all(lake.join("_audit"));
    (dir, lake)
}

/// serve and an `ingest` writing one lake at once: events the ingest committed after the
/// server loaded that day's dedup keys, then sent to `/track` too, are stored once. The
/// server's commit checks the keys of the commits it did not make.
#[test]
fn serve_and_a_concurrent_ingest_store_each_event_once() {
    let (dir, lake) = lake_copy();
    let k = key(&lake, Some("globex-002"));
    let admin = key(&lake, None);
    let before = read_lake(&lake).len();
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    let track = format!("{}/api/v1/usage/track", s.base);
    let flush = format!("{}/api/v1/usage/admin/flush", s.base);
    // The server loads the day's keys with its first batch.
    let (st, _, _) = call(
        "POST",
        &track,
        Some(&k),
        Some(&events("globex-002", "api_calls", "a-", 50)),
    );
    assert_eq!(st, 202);
    // An ingest commits 80 events meanwhile; 60 of them reach /track as well.
    let both: Vec<serde_json::Value> =
        serde_json::from_str(&events("globex-002", "api_calls", "b-", 80)).unwrap();
    let file = dir.path().join("b.ndjson");
    let lines: Vec<String> = both.iter().map(|e| e.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    ok(&[
        "ingest",
        file.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "-q",
    ]);
    let sent = serde_json::Value::Array(both[..60].to_vec()).to_string();
    let (st, v, _) = call("POST", &track, Some(&k), Some(&sent));
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(60)), "{v}");
    let (st, v, _) = call("POST", &flush, Some(&admin), None);
    assert_eq!((st, v["flushed"].as_u64()), (200, Some(50)), "{v}");
    // The flush taught the dedup index the ingest's keys: the rest are refused at once.
    let rest = serde_json::Value::Array(both[60..].to_vec()).to_string();
    let (st, v, _) = call("POST", &track, Some(&k), Some(&rest));
    assert_eq!(
        (st, v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (202, Some(0), Some(20)),
        "{v}"
    );
    let rows = read_lake(&lake);
    assert_eq!(rows.len(), before + 50 + 80);
    for prefix in ["a-", "b-"] {
        let mut ids: Vec<&str> = rows
            .iter()
            .filter(|r| r.id.starts_with(prefix))
            .map(|r| r.id.as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "an event of {prefix} stored twice");
    }
    // The commit accounts for them: read = accepted + duplicates.
    let stats = crate::common::lake_stats(&lake);
    let ing = &stats["ingested"];
    assert_eq!(
        ing["read"].as_u64().unwrap(),
        ing["accepted"].as_u64().unwrap()
            + ing["rejected"].as_u64().unwrap()
            + ing["duplicates"].as_u64().unwrap()
    );
    s.stop();
}

#[test]
fn tracked_events_survive_kill_9_exactly_once() {
    let (_d, lake) = lake_copy();
    let k = key(&lake, Some("globex-002"));
    let admin = key(&lake, None);
    let before = read_lake(&lake).len();
    // No timed flush: the events live only in the log when the process is killed.
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    let url = format!("{}/api/v1/usage/track", s.base);
    let (st, v, _) = call(
        "POST",
        &url,
        Some(&k),
        Some(&events("globex-002", "api_calls", "k9-", 500)),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["accepted"], 500);
    s.kill9();
    assert_eq!(
        read_lake(&lake).len(),
        before,
        "nothing flushed before the kill"
    );
    // The restart commits the log before it listens.
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    let rows = read_lake(&lake);
    assert_eq!(rows.len(), before + 500);
    assert_eq!(rows.iter().filter(|r| r.id.starts_with("k9-")).count(), 500);
    // Sending the same batch again accepts nothing.
    let url = format!("{}/api/v1/usage/track", s.base);
    let (st, v, _) = call(
        "POST",
        &url,
        Some(&k),
        Some(&events("globex-002", "api_calls", "k9-", 500)),
    );
    assert_eq!(
        (st, v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (202, Some(0), Some(500))
    );
    let (st, v, _) = call(
        "POST",
        &url,
        Some(&k),
        Some(&events("globex-002", "api_calls", "more-", 100)),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(100)));
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/admin/flush", s.base),
        Some(&admin),
        None,
    );
    assert_eq!((st, v["flushed"].as_u64()), (200, Some(100)));
    assert_eq!(read_lake(&lake).len(), before + 600);
    // The live counter equals the lake's measure (`check` reads the lake).
    let (_, q, _) = call(
        "GET",
        &format!("{}/api/v1/usage/check-quota/api_calls?quantity=0", s.base),
        Some(&k),
        None,
    );
    let cli: serde_json::Value = serde_json::from_str(&ok(&[
        "check",
        "--lake",
        lake.to_str().unwrap(),
        "--tenant",
        "globex-002",
        "--meter",
        "api_calls",
        "--quantity",
        "0",
    ]))
    .unwrap();
    assert_eq!(q["used"], cli["used"]);
    assert_eq!(q["used"].as_str(), Some("600"));
}

#[test]
fn hard_caps_rates_isolation_and_bad_input() {
    let (_d, lake) = lake_copy();
    let stark = key(&lake, Some("stark-006")); // free: 20 documents, hard cap
    let globex = key(&lake, Some("globex-002"));
    let admin = key(&lake, None);
    let s = Server::start(&lake, &["--rate", "1", "--burst", "30"]);
    let api = |p: &str| format!("{}/api/v1/usage{p}", s.base);
    // Hard cap: 20 documents fill the allowance; the next is refused.
    let (st, v, _) = call(
        "POST",
        &api("/track"),
        Some(&stark),
        Some(&events("stark-006", "documents", "d", 20)),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(20)), "{v}");
    let (st, v, _) = call(
        "GET",
        &api("/check-quota/documents?quantity=1"),
        Some(&stark),
        None,
    );
    assert_eq!((st, v["decision"].as_str()), (429, Some("blocked")), "{v}");
    assert_eq!(v["used"].as_str(), Some("20"));
    let (st, v, retry) = call(
        "POST",
        &api("/track"),
        Some(&stark),
        Some(&events("stark-006", "documents", "late", 1)),
    );
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["field"], "meter");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    let (_, q, _) = call("GET", &api("/quotas"), Some(&stark), None);
    let docs = q["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["meter"] == "documents")
        .unwrap()
        .clone();
    assert_eq!(
        (docs["status"].as_str(), docs["used"].as_str()),
        (Some("blocked"), Some("20"))
    );
    // Rate: 30 tokens refilled at 1/s, 21 spent; 30 more events must wait.
    let (st, v, retry) = call(
        "POST",
        &api("/track"),
        Some(&stark),
        Some(&events("stark-006", "api_calls", "r", 30)),
    );
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["field"], "rate");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_isolated(&api, &stark, &globex, &admin);
    // A CloudEvents batch: the dedup key is (source, id), so the same id from another
    // source is a different event.
    let ts = chrono::Utc::now().to_rfc3339();
    let ce = |src: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"ce-1","source":"{src}","type":"api_calls","subject":"globex-002","time":"{ts}","data":{{"value":1,"user_id":"u1"}}}}"#
        )
    };
    let batch = format!("[{},{}]", ce("/svc/a"), ce("/svc/b"));
    let res = agent()
        .post(&api("/track"))
        .header("Authorization", &format!("Bearer {globex}"))
        .header("Content-Type", "application/cloudevents-batch+json")
        .send(&batch)
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let (_, v, _) = call("POST", &api("/track"), Some(&globex), Some(&batch));
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );
    let (st, _, _) = call("GET", &api("/quotas"), None, None);
    assert_eq!(st, 401);
    let (st, _, _) = call("GET", &api("/quotas"), Some("mlk_not-a-key"), None);
    assert_eq!(st, 401);
    // Bad input names the field.
    let (st, v, _) = call("POST", &api("/track"), Some(&globex), Some("nope"));
    assert_eq!((st, v["field"].as_str()), (400, Some("body")));
    let (st, v, _) = call(
        "GET",
        &api("/check-quota/documents?quantity=-1"),
        Some(&globex),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (400, Some("quantity")));
    let (st, v, _) = call("GET", &api("/check-quota/bananas"), Some(&globex), None);
    assert_eq!((st, v["field"].as_str()), (404, Some("meter")));
    let big = format!("[{}]", vec!["{}"; 10_001].join(","));
    let (st, _, _) = call("POST", &api("/track"), Some(&globex), Some(&big));
    assert_eq!(st, 413);
    // A body over the limit is refused from its Content-Length, before it is read (a
    // client still sending would see the connection close: raw TCP sends headers only).
    let answer = declared_body(&s.base, "/api/v1/usage/track", &globex, 17 << 20);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Operations endpoints.
    let (st, _, _) = call("GET", &format!("{}/healthz", s.base), None, None);
    assert_eq!(st, 200);
    let (st, _, _) = call("GET", &format!("{}/readyz", s.base), None, None);
    assert_eq!(st, 200);
    let (_, prom, _) = call("GET", &format!("{}/prometheus", s.base), None, None);
    let prom = prom.as_str().unwrap().to_string();
    // 20 documents and 2 CloudEvents accepted, their resend counted as duplicates.
    assert!(
        prom.contains("meterlake_events_accepted_total 22"),
        "{prom}"
    );
    assert!(
        prom.contains("meterlake_events_duplicate_total 2"),
        "{prom}"
    );
    assert!(prom.contains("meterlake_request_duration_seconds_bucket{le=\"+Inf\"}"));
    let (st, doc, _) = call(
        "GET",
        &format!("{}/api/v1/openapi.json", s.base),
        None,
        None,
    );
    assert_eq!(st, 200);
    for p in [
        "/track",
        "/quotas",
        "/check-quota/{meter}",
        "/events",
        "/alerts/{id}/acknowledge",
    ] {
        assert!(
            doc["paths"].get(format!("/api/v1/usage{p}")).is_some(),
            "{p}"
        );
    }
    // An admin reset is audited.
    let (st, _, _) = call(
        "POST",
        &api("/admin/quotas/reset"),
        Some(&admin),
        Some(r#"{"tenant":"stark-006"}"#),
    );
    assert_eq!(st, 200);
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(lake.join("_api/audit.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The acknowledgement above recorded itself too, by its actor.
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    // The keys made for this test were audited first, by the CLI.
    let keys = actions
        .iter()
        .take_while(|a| a.0 == "serve-keys add")
        .count();
    assert!(actions[..keys].iter().all(|a| a.1 == "cli"), "{actions:?}");
    let actions = &actions[keys..];
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], ("acknowledge", "api:stark-006"));
    assert_eq!(actions[1].0, "quotas_reset");
}

/// Isolation: another tenant's key (globex-002's) reads and writes nothing of stark-006,
/// and cannot acknowledge its alerts, nor learn that they exist; stark-006's own key can.
fn assert_isolated(api: &dyn Fn(&str) -> String, stark: &str, globex: &str, admin: &str) {
    let (st, _, _) = call(
        "POST",
        &api("/track"),
        Some(globex),
        Some(&events("stark-006", "api_calls", "x", 1)),
    );
    assert_eq!(st, 403);
    for p in [
        "/quotas",
        "/summary",
        "/events",
        "/metrics",
        "/trends/api_calls",
        "/anomalies",
        "/alerts",
        "/check-quota/documents",
    ] {
        let sep = if p.contains('?') { '&' } else { '?' };
        let (st, v, _) = call(
            "GET",
            &api(&format!("{p}{sep}tenant=stark-006")),
            Some(globex),
            None,
        );
        assert_eq!(st, 403, "{p}: {v}");
    }
    let (st, _, _) = call(
        "POST",
        &api("/forecast"),
        Some(globex),
        Some(r#"{"meter":"api_calls","tenant":"stark-006"}"#),
    );
    assert_eq!(st, 403);
    // An alert of stark-006 (the sample's run raised its hard caps): another tenant's key
    // cannot acknowledge it, not even learn that it exists; its own key can.
    let unacknowledged = || -> Vec<serde_json::Value> {
        let (st, a, _) = call("GET", &api("/alerts?tenant=stark-006"), Some(admin), None);
        assert_eq!(st, 200, "{a}");
        a["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("no alert list: {a}"))
            .iter()
            .filter(|x| x["acknowledged_by"].is_null())
            .cloned()
            .collect()
    };
    let open = unacknowledged();
    let alert = open
        .first()
        .expect("stark-006 has open alerts: its hard caps are reached in the sample");
    assert_eq!(alert["tenant_id"], "stark-006", "{alert}");
    let id = alert["id"].as_str().unwrap();
    let (st, _, _) = call(
        "PATCH",
        &api(&format!("/alerts/{id}/acknowledge")),
        Some(globex),
        None,
    );
    assert_eq!(
        st, 404,
        "another tenant's alert does not exist for this key"
    );
    assert!(
        unacknowledged().iter().any(|x| x["id"] == id),
        "{id} is still open after another tenant's attempt"
    );
    let (st, v, _) = call(
        "PATCH",
        &api(&format!("/alerts/{id}/acknowledge")),
        Some(stark),
        None,
    );
    assert_eq!(
        (st, v["acknowledged_by"].as_str()),
        (200, Some("api:stark-006"))
    );
    assert_eq!(unacknowledged().len(), open.len() - 1);
    let (st, _, _) = call(
        "POST",
        &api("/reports/generate"),
        Some(globex),
        Some(r#"{"kind":"summary","format":"json","tenant":"stark-006"}"#),
    );
    assert_eq!(st, 403);
    // A report period cut inside a day is refused by its field, as on the command line.
    let (st, v, _) = call(
        "POST",
        &api("/reports/generate"),
        Some(globex),
        Some(
            r#"{"kind":"summary","format":"json","from":"2026-10-01T07:00:00Z","to":"2026-10-02"}"#,
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("from"), "{v}");
    let (st, _, _) = call("GET", &api("/reports?tenant=stark-006"), Some(globex), None);
    assert_eq!(st, 403);
    let (st, _, _) = call("GET", &api("/admin/metrics"), Some(globex), None);
    assert_eq!(st, 403);
    let (st, _, _) = call("POST", &api("/admin/flush"), Some(globex), None);
    assert_eq!(st, 403);
    let (st, _, _) = call(
        "POST",
        &api("/admin/quotas/reset"),
        Some(globex),
        Some(r#"{"tenant":"stark-006"}"#),
    );
    assert_eq!(st, 403);
}

#[test]
fn reading_endpoints_match_the_lake() {
    let (_d, lake) = lake_copy();
    let k = key(&lake, Some("globex-002"));
    let s = Server::start(&lake, &[]);
    let api = |p: &str| format!("{}/api/v1/usage{p}", s.base);
    let rows = read_lake(&lake);
    let mine = |from: &str, to: &str| -> Vec<&crate::common::Row> {
        let (a, b) = (
            chrono::DateTime::parse_from_rfc3339(&format!("{from}T00:00:00Z"))
                .unwrap()
                .timestamp_micros(),
            chrono::DateTime::parse_from_rfc3339(&format!("{to}T00:00:00Z"))
                .unwrap()
                .timestamp_micros(),
        );
        rows.iter()
            .filter(|r| r.tenant == "globex-002" && r.ts >= a && r.ts < b)
            .collect()
    };
    // Events, paged: every event of a day, once, in (ts, id) order.
    let want = mine("2026-10-01", "2026-10-02");
    let mut got: Vec<String> = Vec::new();
    let mut offset = 0;
    loop {
        let (st, v, _) = call(
            "GET",
            &api(&format!(
                "/events?from=2026-10-01&to=2026-10-02&limit=1000&offset={offset}"
            )),
            Some(&k),
            None,
        );
        assert_eq!(st, 200, "{v}");
        got.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
        match v["next_offset"].as_u64() {
            Some(n) => offset = n as usize,
            None => break,
        }
    }
    assert_eq!(got.len(), want.len());
    let mut ids: Vec<String> = want.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    got.sort();
    assert_eq!(got, ids);
    // Summary: API calls counted, AI tokens summed, against the fold.
    let (_, v, _) = call(
        "GET",
        &api("/summary?from=2026-10-01&to=2026-10-15"),
        Some(&k),
        None,
    );
    let period = mine("2026-10-01", "2026-10-15");
    let totals = v["totals"].as_array().unwrap_or_else(|| panic!("{v}"));
    let total = |m: &str| {
        totals.iter().find(|t| t["meter"] == m).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        total("api_calls"),
        period.iter().filter(|r| r.meter == "api_calls").count() as f64
    );
    let tokens: f64 = period
        .iter()
        .filter(|r| r.meter == "ai_tokens")
        .map(|r| r.value)
        .sum();
    assert!((total("ai_tokens") - tokens).abs() < 1e-6);
    // Trends and metrics from the day rollup.
    let (_, t, _) = call(
        "GET",
        &api("/trends/api_calls?days=7&to=2026-10-15"),
        Some(&k),
        None,
    );
    let week = mine("2026-10-08", "2026-10-15");
    assert_eq!(
        t["total"].as_f64().unwrap(),
        week.iter().filter(|r| r.meter == "api_calls").count() as f64
    );
    assert_eq!(t["daily"].as_array().unwrap().len(), 7);
    let (_, m, _) = call(
        "GET",
        &api("/metrics?granularity=day&meter=api_calls&from=2026-10-08&to=2026-10-15"),
        Some(&k),
        None,
    );
    let sum: f64 = m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, t["total"].as_f64().unwrap());
    // Forecast: the horizon asked for, each mean inside its interval.
    let (st, f, _) = call(
        "POST",
        &api("/forecast"),
        Some(&k),
        Some(r#"{"meter":"api_calls","horizon":7}"#),
    );
    assert_eq!(st, 200, "{f}");
    let pts = f["forecast"].as_array().unwrap();
    assert_eq!(pts.len(), 7);
    for p in pts {
        let (lo, y, hi) = (
            p["yhat_lower"].as_f64().unwrap(),
            p["yhat"].as_f64().unwrap(),
            p["yhat_upper"].as_f64().unwrap(),
        );
        assert!(lo <= y && y <= hi, "{p}");
    }
    // The same forecast as the lake pipeline's (`run` wrote it with data/meterlake.toml's
    // horizon 30 and level 95): anomalies cleaned, never below zero. wayne-007's bot days
    // are cleaned out of its api_calls; globex-002 is forecast as is.
    let wayne = key(&lake, Some("wayne-007"));
    for (tenant, k) in [("globex-002", &k), ("wayne-007", &wayne)] {
        let (st, f, _) = call(
            "POST",
            &api("/forecast"),
            Some(k),
            Some(r#"{"meter":"api_calls","horizon":30,"level":95}"#),
        );
        assert_eq!(st, 200, "{f}");
        let want = lake_forecast(&lake, tenant, "api_calls");
        let got: Vec<[f64; 3]> = f["forecast"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| ["yhat", "yhat_lower", "yhat_upper"].map(|c| p[c].as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{tenant}");
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{tenant}: {g:?} vs {w:?}"
                );
            }
        }
        if tenant == "wayne-007" {
            assert!(f["status"].as_str().unwrap().contains("replaced"), "{f}");
        }
    }
    // Anomalies: the tenant's incidents of the last detection.
    let (_, a, _) = call("GET", &api("/anomalies"), Some(&k), None);
    let n: usize = parquet_rows_of(
        &lake.join("anomalies/granularity=hour/incidents.parquet"),
        "globex-002",
    );
    assert_eq!(a["incidents"].as_array().unwrap().len(), n);
    // Reports: generated for the key's tenant only, then listed.
    let (st, r, _) = call(
        "POST",
        &api("/reports/generate"),
        Some(&k),
        Some(r#"{"kind":"summary","format":"html"}"#),
    );
    assert_eq!(st, 201, "{r}");
    let html = std::fs::read_to_string(lake.join("_api/reports/globex-002/summary.html")).unwrap();
    assert!(html.contains("Tenant globex-002"));
    assert!(
        !html.contains("acme-001"),
        "no other tenant in a tenant's report"
    );
    let (_, l, _) = call("GET", &api("/reports"), Some(&k), None);
    assert_eq!(l["reports"][0]["file"], "summary.html");
}

/// (yhat, yhat_lower, yhat_upper) of a tenant × meter in the lake's day forecast table, in
/// time order.
fn lake_forecast(lake: &Path, tenant: &str, meter: &str) -> Vec<[f64; 3]> {
    let path = lake.join("forecasts/granularity=day/forecast.parquet");
    let mut out = Vec::new();
    for b in parquet_batches(&path) {
        let (t, m) = (string_col(&b, "tenant_id"), string_col(&b, "meter"));
        let f = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap()
                .clone()
        };
        let (y, lo, hi) = (f("yhat"), f("yhat_lower"), f("yhat_upper"));
        for i in 0..b.num_rows() {
            if t[i].as_deref() == Some(tenant) && m[i].as_deref() == Some(meter) {
                out.push([y.value(i), lo.value(i), hi.value(i)]);
            }
        }
    }
    out
}

fn parquet_rows_of(path: &Path, tenant: &str) -> usize {
    strings(path, "tenant_id")
        .iter()
        .filter(|t| t.as_deref() == Some(tenant))
        .count()
}
