//! Alerts: raised once per crossing from the hand-computed billing fixture, acknowledged,
//! delivered signed to a webhook; anomaly alerts from the sample's incidents; an
//! acknowledgement in the anomaly report's incident status and the audit log.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

#[test]
fn alerts_are_raised_once_acknowledged_and_delivered_signed() {
    let f = fixture();
    let raise = |at: &str| -> serde_json::Value {
        f.json(&["alerts", "raise", "--at", at, "--output", "json"])
    };
    // At Oct 21 (by hand from the fixture): t-steady documents 400/500 (80 %); t-basic
    // documents 80/100 (80 %), storage max 9/5 GB (September's last reading carried in) and
    // users 3/3 (hard cap); t-free documents 20/20 (hard cap). Over 100 %: 80, 90, 100 and
    // limit_exceeded.
    let first = raise("2026-10-21");
    let raised = first["raised"].as_array().unwrap();
    let keys = |v: &serde_json::Value| -> Vec<(String, String, String, String)> {
        let mut k: Vec<_> = v["raised"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap().to_string();
                (s("tenant_id"), s("meter"), s("kind"), s("threshold"))
            })
            .collect();
        k.sort();
        k
    };
    let full = |t: &str, m: &str| {
        vec![
            (t.into(), m.into(), "limit_exceeded".into(), "100".into()),
            (t.into(), m.into(), "threshold".into(), "100".into()),
            (t.into(), m.into(), "threshold".into(), "80".into()),
            (t.into(), m.into(), "threshold".into(), "90".into()),
        ]
    };
    let mut want: Vec<(String, String, String, String)> = Vec::new();
    want.push((
        "t-basic".into(),
        "documents".into(),
        "threshold".into(),
        "80".into(),
    ));
    want.extend(full("t-basic", "storage"));
    want.extend(full("t-basic", "users"));
    want.extend(full("t-free", "documents"));
    want.push((
        "t-steady".into(),
        "documents".into(),
        "threshold".into(),
        "80".into(),
    ));
    want.sort();
    assert_eq!(keys(&first), want);
    // Raising again in the same period adds nothing. By Oct 24 only the new crossings:
    // t-steady 460/500 (92 %), t-basic documents 3 × 23 + 21 = 90 (90 %), t-basic API
    // calls 36 × 23 + 3 = 831 (83.1 %), t-change 13 × 23 + 10 = 309 of its prorated 371
    // (83.3 %).
    assert_eq!(raise("2026-10-21")["raised"].as_array().unwrap().len(), 0);
    let later = raise("2026-10-24");
    let t = |a: &str, b: &str, c: &str| {
        (
            a.to_string(),
            b.to_string(),
            "threshold".to_string(),
            c.to_string(),
        )
    };
    let mut want = vec![
        t("t-basic", "api_calls", "80"),
        t("t-basic", "documents", "90"),
        t("t-change", "documents", "80"),
        t("t-steady", "documents", "90"),
    ];
    want.sort();
    assert_eq!(keys(&later), want);
    let raised_total = raised.len() + want.len();

    let lake = f.lake.to_str().unwrap();
    let list = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["alerts", "list", "--lake", lake, "--output", "json"];
        a.extend(extra);
        serde_json::from_str(&ok(&a)).unwrap()
    };
    let all = list(&[]);
    assert_eq!(all.len(), raised_total);
    let id = all[0]["id"].as_str().unwrap().to_string();
    ok(&["alerts", "ack", &id, "--lake", lake, "--by", "ops"]);
    assert_eq!(list(&[]).len(), all.len() - 1);
    let acked = list(&["--all"]);
    let a = acked.iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!(a["acknowledged_by"], "ops");
    let o = mlk(&["alerts", "ack", "nope", "--lake", lake]);
    assert_eq!(o.status.code(), Some(2));

    // A webhook that is down (nothing listens on its port): two alerts pay their retries,
    // the others are not tried in this run (each paid them: minutes for a `run`), and all
    // stay undelivered for the next.
    let n = all.len();
    assert!(n > 3, "{n} alerts");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{closed}/hook");
    let out = std::process::Command::new(BIN)
        .args([
            "alerts",
            "deliver",
            "--lake",
            lake,
            "--webhook",
            &down,
            "--retry-base-ms",
            "1",
        ])
        .env("MLK_WEBHOOK_SECRET", "s3cret")
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        (
            d["delivered"].as_u64(),
            d["failed"].as_u64(),
            d["skipped"].as_u64()
        ),
        (Some(0), Some(n as u64), Some(n as u64 - 2)),
        "{d}"
    );
    assert!(list(&["--all"]).iter().all(|a| a["delivered_at"].is_null()));
    let down_tries = d["requests"].as_u64().unwrap();
    // Webhook: the first request fails (500) and is retried; every alert arrives once,
    // signed; a second delivery run sends nothing.
    let mut statuses = vec![500];
    statuses.extend(std::iter::repeat_n(200, n));
    let server = Receiver::start("/hook", statuses);
    let url = server.url.clone();
    let out = std::process::Command::new(BIN)
        .args([
            "alerts",
            "deliver",
            "--lake",
            lake,
            "--webhook",
            &url,
            "--retry-base-ms",
            "10",
        ])
        .env("MLK_WEBHOOK_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            d["delivered"].as_u64(),
            d["failed"].as_u64(),
            d["requests"].as_u64()
        ),
        (Some(n as u64), Some(0), Some(n as u64 + 1))
    );
    let got: Vec<Request> = server.requests().into_iter().map(|r| r.1).collect();
    let mut ids = Vec::new();
    for r in &got {
        let h = |k: &str| header(r, k).unwrap();
        let hex = hmac_hex(
            b"s3cret",
            &format!("{}.{}", h("x-meterlake-timestamp"), r.1),
        );
        assert_eq!(h("x-meterlake-signature"), format!("sha256={hex}"));
        let v: serde_json::Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(v["id"].as_str().unwrap(), h("x-meterlake-delivery"));
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // The retried first alert came twice; after dedup every alert exactly once.
    assert_eq!(ids[0], ids[1]);
    ids.dedup();
    ids.sort();
    let mut want: Vec<String> = all
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(ids, want);
    let stored = list(&["--all"]);
    assert!(stored.iter().all(|a| !a["delivered_at"].is_null()));
    assert_eq!(
        stored
            .iter()
            .map(|a| a["attempts"].as_u64().unwrap())
            .sum::<u64>(),
        n as u64 + 1 + down_tries,
        "every try is counted, the down webhook's too"
    );
    // Nothing left to send: no request is made.
    let out = std::process::Command::new(BIN)
        .args(["alerts", "deliver", "--lake", lake, "--webhook", &url])
        .env("MLK_WEBHOOK_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["requests"], 0);
    assert_eq!(server.requests().len(), got.len());
}

/// On the sample's events: one anomaly alert per high or critical incident of
/// `detect --lake` that started in the 60 days before the instant, counted here from the
/// incidents file itself.
#[test]
fn anomaly_alerts_are_one_per_serious_incident_of_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(sample_events(), &lake);
    let l = lake.to_str().unwrap();
    ok(&["detect", "--lake", l, "--quiet"]);
    let incidents = lake.join("anomalies/granularity=hour/incidents.parquet");
    let at = 1_792_713_600_000_000i64; // 2026-10-23T00:00:00Z
    let mut want = BTreeSet::new();
    for b in parquet_batches(&incidents) {
        use arrow::array::AsArray;
        // polars writes strings as Utf8View.
        let s = |n: &str| b.column_by_name(n).unwrap().as_string_view().clone();
        let (t, m, sev) = (s("tenant_id"), s("meter"), s("severity"));
        let ws = b
            .column_by_name("window_start")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone();
        for i in 0..b.num_rows() {
            let start = ws.value(i);
            if ["high", "critical"].contains(&sev.value(i))
                && start >= at - 60 * 86_400_000_000
                && start < at
            {
                want.insert((t.value(i).to_string(), m.value(i).to_string(), start));
            }
        }
    }
    assert!(!want.is_empty(), "the sample has high-severity incidents");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "alerts",
        "raise",
        "--lake",
        l,
        "--plans",
        PLANS,
        "--tenants",
        TENANTS,
        "--at",
        "2026-10-23",
        "--anomaly-days",
        "60",
        "--output",
        "json",
    ]))
    .unwrap();
    let got: BTreeSet<(String, String, i64)> = v["raised"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "anomaly")
        .map(|a| {
            let start =
                chrono::DateTime::parse_from_rfc3339(a["period_start"].as_str().unwrap()).unwrap();
            (
                a["tenant_id"].as_str().unwrap().to_string(),
                a["meter"].as_str().unwrap().to_string(),
                start.timestamp_micros(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn incident_status_follows_alerts_and_acknowledgements_are_audited() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&s.lake, &lake);
    let l = lake.to_str().unwrap();
    // Raise anomaly alerts for every incident of the sample (the run only raises the last 7 days').
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "alerts",
        "raise",
        "--lake",
        l,
        "--at",
        "latest",
        "--anomaly-days",
        "90",
        "--output",
        "json",
    ]))
    .unwrap();
    let anomaly: Vec<&serde_json::Value> = v["raised"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "anomaly")
        .collect();
    assert!(!anomaly.is_empty());
    let acked = anomaly[0];
    ok(&[
        "alerts",
        "ack",
        acked["id"].as_str().unwrap(),
        "--lake",
        l,
        "--by",
        "ops@example.com",
    ]);
    let r = report_to(
        &lake,
        "anomaly",
        &dir.path().join("a.json"),
        &["--from", "2026-08-01"],
    );
    let mut seen = BTreeMap::new();
    for i in rows_of(&r, "incidents") {
        let high = matches!(i["severity"].as_str().unwrap(), "high" | "critical");
        let mine = i["tenant_id"] == acked["tenant_id"]
            && i["meter"] == acked["meter"]
            && i["start"] == acked["period_start"];
        let want = match (high, mine) {
            (true, true) => "acknowledged",
            (true, false) => "alerted",
            (false, _) => "open",
        };
        assert_eq!(i["status"], want, "{i}");
        *seen.entry(want).or_insert(0) += 1;
    }
    assert_eq!(seen.get("acknowledged"), Some(&1));
    assert_eq!(seen.get("alerted").copied().unwrap_or(0), anomaly.len() - 1);
    // The acknowledgement is in the audit log once: from its own entry, and (a lake
    // written before acknowledgements recorded themselves) from the alert store.
    let acks = |c: &serde_json::Value| -> Vec<serde_json::Value> {
        rows_of(c, "audit")
            .iter()
            .filter(|a| a["action"] == "acknowledge")
            .cloned()
            .collect()
    };
    let c = report_to(&lake, "compliance", &dir.path().join("c.json"), &[]);
    let own = acks(&c);
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["actor"], "ops@example.com");
    assert!(
        own[0]["target"]
            .as_str()
            .unwrap()
            .contains(acked["id"].as_str().unwrap())
    );
    let log = lake.join("_api/audit.ndjson");
    let entries = std::fs::read_to_string(&log).unwrap();
    assert_eq!(entries.lines().count(), 1, "{entries}");
    std::fs::remove_file(&log).unwrap();
    let old = report_to(&lake, "compliance", &dir.path().join("d.json"), &[]);
    assert_eq!(acks(&old), own);
}

/// The batch job notifies by its configuration's rules: a signed webhook channel in digest
/// mode gets one message per tenant with every limit_exceeded alert of that tenant, each
/// delivery is stored, and a second run sends nothing.
#[test]
fn run_notifies_by_rules_once() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start("/hook", Vec::new());
    let url = hook.url.clone();
    let root = env!("CARGO_MANIFEST_DIR");
    let conf = write(
        dir.path(),
        "meterlake.toml",
        &format!(
            "[paths]\ninputs = [\"{root}/data/events\"]\nplans = \"{root}/data/plans.toml\"\n\
             tenants = \"{root}/data/tenants.csv\"\nmeters = \"{root}/data/meters.toml\"\n\
             [reports]\nkinds = []\n\
             [notify.channels.hook]\nkind = \"webhook\"\nurl_env = \"MLK_TEST_HOOK\"\nsecret_env = \"MLK_TEST_SECRET\"\n\
             [[notify.rules]]\nname = \"limits\"\nchannels = [\"hook\"]\nkinds = [\"limit_exceeded\"]\ndigest = true\n"
        ),
    );
    let lake = dir.path().join("lake");
    let run = || -> serde_json::Value {
        let o = std::process::Command::new(BIN)
            .args([
                "run",
                "--config",
                conf.to_str().unwrap(),
                "--lake",
                lake.to_str().unwrap(),
            ])
            .args([
                "--out",
                dir.path().join("out").to_str().unwrap(),
                "--output",
                "json",
                "--quiet",
            ])
            .env("MLK_TEST_HOOK", &url)
            .env("MLK_TEST_SECRET", "hook-secret")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let first = run();
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&ok(&[
        "alerts",
        "list",
        "--lake",
        lake.to_str().unwrap(),
        "--all",
        "--output",
        "json",
    ]))
    .unwrap();
    // The fold: limit_exceeded alerts per tenant.
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| a["kind"] == "limit_exceeded") {
        want.entry(a["tenant_id"].as_str().unwrap().into())
            .or_default()
            .insert(a["id"].as_str().unwrap().into());
    }
    assert!(
        want.len() > 1,
        "the sample exceeds limits for several tenants"
    );
    let n: usize = want.values().map(BTreeSet::len).sum();
    assert_eq!(first["alerts_delivered"], n, "{first}");
    let posts = hook.accepted();
    assert_eq!(posts.len(), want.len(), "one digest per tenant");
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &posts {
        let h = |k: &str| header(r, k).unwrap();
        let hex = hmac_hex(
            b"hook-secret",
            &format!("{}.{}", h("x-meterlake-timestamp"), r.1),
        );
        assert_eq!(
            h("x-meterlake-signature"),
            format!("sha256={hex}"),
            "signed"
        );
        let v: serde_json::Value = serde_json::from_str(&r.1).unwrap();
        let ids = v["alerts"].as_array().unwrap().iter().map(|a| {
            assert_eq!(a["tenant_id"], v["tenant_id"]);
            a["id"].as_str().unwrap().to_string()
        });
        seen.entry(v["tenant_id"].as_str().unwrap().into())
            .or_default()
            .extend(ids);
    }
    assert_eq!(seen, want);
    // Stored with each alert; other kinds untouched.
    for a in &alerts {
        let d = a["deliveries"].as_array().unwrap();
        if a["kind"] == "limit_exceeded" {
            assert_eq!(d.len(), 1, "{a}");
            assert_eq!(d[0]["status"], "sent");
            assert_eq!(d[0]["channel"], "hook");
            assert_eq!(d[0]["level"], 0);
        } else {
            assert!(d.is_empty());
        }
    }
    // The next run: nothing new to send.
    let second = run();
    assert_eq!(second["alerts_delivered"], 0, "{second}");
    assert_eq!(hook.requests().len(), posts.len());
}
