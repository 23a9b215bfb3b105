//! `export stripe`: the files' shapes, whole values against a fold over the events
//! (monthly totals exact, each window within one unit), identifiers stable across
//! re-exports and ranges, unmapped tenants named; `--push` against a local receiver that
//! mimics Stripe's v1 endpoint (429s included): each event accepted once, events outside
//! Stripe's window left out and named, a rerun sending nothing, late data sent as a
//! correction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;

const METERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/meters.toml");

/// October's events: (tenant, meter, day, value) per event.
fn events() -> Vec<(&'static str, &'static str, u32, f64)> {
    let mut v = Vec::new();
    for d in 1..=31u32 {
        for _ in 0..(d % 3 + 1) {
            v.push(("t1", "api_calls", d, 1.0));
        }
        // Fractional tokens: 0.4 × (d mod 4) (0, 0.4, 0.8, 1.2).
        if d % 4 != 0 {
            v.push(("t1", "ai_tokens", d, 0.4 * (d % 4) as f64));
        }
        if d % 2 == 0 {
            v.push(("t2", "api_calls", d, 1.0));
            v.push(("t2", "api_calls", d, 1.0));
        }
        v.push(("t2", "ai_tokens", d, 1.25));
        v.push(("t3", "api_calls", d, 1.0));
        v.push(("t1", "storage_bytes", d, 100.0 * d as f64));
    }
    v
}

fn ndjson(evs: &[(&str, &str, u32, f64)], prefix: &str) -> String {
    let mut s = String::new();
    for (i, (t, m, d, x)) in evs.iter().enumerate() {
        let ts = format!("2026-10-{d:02}T{:02}:{:02}:00Z", 8 + i % 10, i % 60);
        ev(&mut s, &format!("{prefix}{i}"), &ts, t, m, *x, Some("u1"));
    }
    s
}

/// October's events ingested into a lake under `dir`, and a customers file mapping
/// `customers` (`tenant=cus_id` pairs).
fn october(dir: &Path, customers: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let input = write(dir, "events.ndjson", &ndjson(&events(), "e"));
    let lake = dir.join("lake");
    ingest(&lake, &[&input], &[]);
    let mut csv = String::from("tenant_id,stripe_customer_id\n");
    for (t, c) in customers {
        csv.push_str(&format!("{t},{c}\n"));
    }
    (lake, write(dir, "customers.csv", &csv))
}

/// Form fields of a request body.
fn form(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn round_half_away(x: f64) -> i64 {
    x.round() as i64
}

/// Runs `export stripe` with `extra`; (exit code, JSON summary).
fn export(lake: &Path, customers: &Path, out: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "export",
        "stripe",
        "--lake",
        lake.to_str().unwrap(),
        "--customers",
        customers.to_str().unwrap(),
        "--meters",
        METERS,
        "--out",
        out.to_str().unwrap(),
        "--retry-base-ms",
        "1",
    ];
    args.extend(extra);
    let o = mlk(&args);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v)
}

/// The v2 file's events: identifier → (customer, event name, timestamp, value).
fn read_v2(path: &Path) -> BTreeMap<String, (String, String, String, i64)> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let batch: serde_json::Value = serde_json::from_str(line).unwrap();
        let evs = batch["events"].as_array().unwrap();
        assert!(!evs.is_empty() && evs.len() <= 100, "batches of 1 to 100");
        for e in evs {
            let p = &e["payload"];
            let value: i64 = p["value"].as_str().unwrap().parse().unwrap();
            let prev = out.insert(
                e["identifier"].as_str().unwrap().to_string(),
                (
                    p["stripe_customer_id"].as_str().unwrap().to_string(),
                    e["event_name"].as_str().unwrap().to_string(),
                    e["timestamp"].as_str().unwrap().to_string(),
                    value,
                ),
            );
            assert!(prev.is_none(), "identifiers are unique");
        }
    }
    out
}

#[test]
fn stripe_export_is_whole_stable_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let evs = events();
    let (lake, customers) = october(dir.path(), &[("t1", "cus_AAA"), ("t2", "cus_BBB")]);
    let out = dir.path().join("october.ndjson");
    let (code, v) = export(
        &lake,
        &customers,
        &out,
        &[
            "--period",
            "2026-10",
            "--event-name",
            "ai_tokens=tokens_used",
            "--at",
            "2026-11-20",
        ],
    );
    // t3 has usage and no customer: left out, named, exit 2.
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["export"]["unmapped_tenants"], serde_json::json!(["t3"]));
    assert_eq!(
        v["export"]["skipped_meters"],
        serde_json::json!(["storage_bytes"])
    );
    let got = read_v2(&out);
    // The fold: exact value per (tenant, meter, day).
    let mut exact: BTreeMap<(&str, &str, u32), f64> = BTreeMap::new();
    for (t, m, d, x) in &evs {
        if *t != "t3" && *m != "storage_bytes" {
            *exact.entry((t, m, *d)).or_default() += if *m == "api_calls" { 1.0 } else { *x };
        }
    }
    let mut by_series: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
    let mut windows = 0;
    for ((cus, name, ts, value), _) in got.values().zip(0..) {
        let tenant = if cus == "cus_AAA" { "t1" } else { "t2" };
        let meter = if name == "tokens_used" {
            "ai_tokens"
        } else {
            name.as_str()
        };
        assert_ne!(meter, "ai_tokens_used");
        let day: u32 = ts[8..10].parse().unwrap();
        assert!(
            ts.starts_with("2026-10-") && ts.ends_with("T00:00:00Z"),
            "{ts}"
        );
        let x = exact[&(tenant, meter, day)];
        assert!(
            (*value as f64 - x).abs() < 1.0,
            "{tenant} {meter} {day}: {value} vs {x}"
        );
        let e = by_series.entry((tenant.into(), meter.into())).or_default();
        e.0 += value;
        windows += 1;
    }
    for ((t, m, _), x) in &exact {
        by_series
            .entry((t.to_string(), m.to_string()))
            .or_default()
            .1 += x;
    }
    for ((t, m), (sent, x)) in &by_series {
        assert_eq!(*sent, round_half_away(*x), "{t} {m}: month total");
    }
    // Every window of at least one unit is sent (|value − exact| < 1 makes it positive);
    // none is sent with 0.
    assert!(got.values().all(|e| e.3 > 0));
    let sent: std::collections::BTreeSet<(&str, &str, u32)> = got
        .values()
        .map(|(cus, name, ts, _)| {
            let t = if cus == "cus_AAA" { "t1" } else { "t2" };
            let m = if name == "tokens_used" {
                "ai_tokens"
            } else {
                "api_calls"
            };
            (t, m, ts[8..10].parse().unwrap())
        })
        .collect();
    for (k, x) in &exact {
        if *x >= 1.0 {
            assert!(sent.contains(k), "{k:?} ({x}) was not sent");
        }
    }
    assert_eq!(v["export"]["event_count"], windows);

    // Same export again: the same bytes. A sub-range: the same identifiers and values.
    let bytes = std::fs::read(&out).unwrap();
    export(
        &lake,
        &customers,
        &out,
        &[
            "--period",
            "2026-10",
            "--event-name",
            "ai_tokens=tokens_used",
            "--at",
            "2026-11-20",
        ],
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes,
        "a re-export is identical"
    );
    let part = dir.path().join("part.ndjson");
    export(
        &lake,
        &customers,
        &part,
        &[
            "--from",
            "2026-10-10",
            "--to",
            "2026-10-20",
            "--event-name",
            "ai_tokens=tokens_used",
            "--at",
            "2026-11-20",
        ],
    );
    let sub = read_v2(&part);
    assert!(!sub.is_empty());
    for (id, e) in &sub {
        assert_eq!(got.get(id), Some(e), "a range's events are the month's");
        assert!(e.2.as_str() >= "2026-10-10" && e.2.as_str() < "2026-10-20");
    }

    // v1 rows: the same events as form fields.
    let csv_out = dir.path().join("october.csv");
    export(
        &lake,
        &customers,
        &csv_out,
        &[
            "--period",
            "2026-10",
            "--format",
            "v1",
            "--event-name",
            "ai_tokens=tokens_used",
            "--at",
            "2026-11-20",
        ],
    );
    let text = std::fs::read_to_string(&csv_out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "event_name,payload[stripe_customer_id],payload[value],identifier,timestamp"
    );
    let mut n = 0;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let e = &got[f[3]];
        assert_eq!(
            (f[0], f[1], f[2].parse::<i64>().unwrap()),
            (e.1.as_str(), e.0.as_str(), e.3)
        );
        let ts = chrono::DateTime::parse_from_rfc3339(&e.2)
            .unwrap()
            .timestamp();
        assert_eq!(f[4], ts.to_string(), "unix seconds");
        n += 1;
    }
    assert_eq!(n, got.len());

    // Bad input names the parameter.
    let o = mlk(&[
        "export",
        "stripe",
        "--lake",
        lake.to_str().unwrap(),
        "--customers",
        customers.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--period",
        "2026-13",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--period"));
    let bad = write(dir.path(), "bad.csv", "tenant,customer\nt1,cus\n");
    let o = mlk(&[
        "export",
        "stripe",
        "--lake",
        lake.to_str().unwrap(),
        "--customers",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--period",
        "2026-10",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.csv") && err.contains("stripe_customer_id"),
        "{err}"
    );
    // A name for a meter not exported (a typo of api_calls) is refused, naming it: its
    // usage went out under the default name.
    let o = mlk(&[
        "export",
        "stripe",
        "--lake",
        lake.to_str().unwrap(),
        "--customers",
        customers.to_str().unwrap(),
        "--meters",
        METERS,
        "--out",
        out.to_str().unwrap(),
        "--period",
        "2026-10",
        "--event-name",
        "api_call=api_requests",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--event-name") && err.contains("api_call"),
        "{err}"
    );
}

#[test]
fn stripe_push_sends_each_event_once_and_corrects_late_data() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, customers) = october(
        dir.path(),
        &[("t1", "cus_AAA"), ("t2", "cus_BBB"), ("t3", "cus_CCC")],
    );
    let out = dir.path().join("out.ndjson");
    // Two 429s first, then a 500: retried; everything else accepted.
    let stripe = Receiver::start("/v1/billing/meter_events", vec![429, 429, 500]);
    let url = stripe.url.clone();
    let push_by = |at: &str, granularity: &str| {
        let args = vec![
            "export",
            "stripe",
            "--lake",
            lake.to_str().unwrap(),
            "--customers",
            customers.to_str().unwrap(),
            "--meters",
            METERS,
            "--out",
            out.to_str().unwrap(),
            "--period",
            "2026-10",
            "--push",
            &url,
            "--at",
            at,
            "--retry-base-ms",
            "1",
            "--granularity",
            granularity,
        ];
        let o = std::process::Command::new(BIN)
            .args(&args)
            .env("STRIPE_API_KEY", "sk_test_123")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| serde_json::json!({"stderr": String::from_utf8_lossy(&o.stderr)}));
        (o.status.code().unwrap(), v)
    };
    let push = |at: &str| push_by(at, "day");
    // At Nov 20: Stripe takes events from Oct 16 00:00 on (35 days back).
    let (code, v) = push("2026-11-20T00:00:00Z");
    let all = read_v2(&out);
    let inside: Vec<&String> = all
        .iter()
        .filter(|(_, e)| e.2.as_str() >= "2026-10-16")
        .map(|(id, _)| id)
        .collect();
    let p = &v["push"];
    assert_eq!(
        code, 2,
        "events outside the window make the exit non-zero: {v}"
    );
    assert_eq!(p["sent"], inside.len(), "{p}");
    assert_eq!(
        p["outside_window"].as_array().unwrap().len(),
        all.len() - inside.len()
    );
    assert!(
        p["outside_window"][0]
            .as_str()
            .unwrap()
            .contains("2026-10-"),
        "named with their time"
    );
    assert_eq!(p["failed"].as_array().unwrap().len(), 0);
    let requests = stripe.requests();
    assert_eq!(
        requests.iter().filter(|r| r.0 != 200).count(),
        3,
        "the 429s and the 500 were retried"
    );
    let accepted: Vec<BTreeMap<String, String>> =
        stripe.accepted().iter().map(|r| form(&r.1)).collect();
    assert_eq!(accepted.len(), inside.len(), "each event accepted once");
    for f in &accepted {
        let e = &all[&f["identifier"]];
        assert_eq!(f["payload[stripe_customer_id]"], e.0);
        assert_eq!(f["payload[value]"], e.3.to_string());
        assert_eq!(f["event_name"], e.1);
    }
    assert!(
        requests
            .iter()
            .all(|r| header(&r.1, "authorization").as_deref() == Some("Bearer sk_test_123"))
    );
    // A rerun sends nothing.
    let before = requests.len();
    let (_, v) = push("2026-11-20T01:00:00Z");
    assert_eq!(v["push"]["sent"], 0, "{v}");
    assert_eq!(v["push"]["already_sent"], inside.len());
    assert_eq!(stripe.requests().len(), before, "no request");
    // A late event for t1 on Oct 20: the window grew by one call, sent as a correction.
    let late = write(
        dir.path(),
        "late.ndjson",
        &ndjson(&[("t1", "api_calls", 20, 1.0)], "late"),
    );
    ingest(&lake, &[&late], &[]);
    let (_, v) = push("2026-11-20T02:00:00Z");
    assert_eq!(v["push"]["sent"], 1, "{v}");
    assert_eq!(v["push"]["corrections"], 1);
    let last = form(&stripe.requests().last().unwrap().1.1);
    assert!(last["identifier"].ends_with("_2"), "{last:?}");
    assert_eq!(last["payload[value]"], "1");
    assert_eq!(last["payload[stripe_customer_id]"], "cus_AAA");
    // The same month by the hour: other identifiers, the same usage. Stripe would sum both,
    // so the push refuses before sending anything, naming the granularity already sent.
    let before = stripe.requests().len();
    let (code, v) = push_by("2026-11-20T03:00:00Z", "hour");
    let err = v["stderr"].as_str().unwrap_or_default();
    assert_eq!(code, 2, "{v}");
    assert!(
        err.contains("--granularity") && err.contains("pushed by day"),
        "{err}"
    );
    assert_eq!(stripe.requests().len(), before, "no request");
}

/// Late data in fractional usage: the rounding unit moves between windows, and the push
/// neither sends it twice nor loses it (Stripe's month total stays the exact total
/// rounded). A torn last ledger line is cut; a corrupt one elsewhere is an error naming
/// the file and line.
#[test]
fn stripe_push_keeps_the_month_total_through_late_fractions_and_torn_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let batch = |name: &str, evs: &[(&'static str, &'static str, u32, f64)]| {
        let f = write(dir.path(), name, &ndjson(evs, name));
        ingest(&lake, &[&f], &[]);
    };
    // Tokens 0.4 on Oct 20 and 0.4 on Oct 21: running 0.4 → 0, 0.8 → 1.
    batch(
        "a",
        &[("t1", "ai_tokens", 20, 0.4), ("t1", "ai_tokens", 21, 0.4)],
    );
    let customers = write(
        dir.path(),
        "c.csv",
        "tenant_id,stripe_customer_id\nt1,cus_1\n",
    );
    let out = dir.path().join("o.ndjson");
    let stripe = Receiver::start("/v1/billing/meter_events", Vec::new());
    // The push as a command (its output whatever the exit), and its JSON.
    let run = || {
        std::process::Command::new(BIN)
            .args([
                "export",
                "stripe",
                "--lake",
                lake.to_str().unwrap(),
                "--meters",
                METERS,
            ])
            .args([
                "--customers",
                customers.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args([
                "--period",
                "2026-10",
                "--push",
                &stripe.url,
                "--at",
                "2026-11-01",
            ])
            .env("STRIPE_API_KEY", "sk")
            .output()
            .unwrap()
    };
    let push = || -> (i32, serde_json::Value) {
        let o = run();
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code().unwrap(), v)
    };
    let total = || -> i64 {
        stripe
            .accepted()
            .iter()
            .map(|r| form(&r.1)["payload[value]"].parse::<i64>().unwrap())
            .sum()
    };
    let (code, v) = push();
    assert_eq!((code, v["push"]["sent"].as_u64()), (0, Some(1)), "{v}");
    assert_eq!(total(), 1);
    // +0.2 on Oct 20: 0.6 → 1, 1.0 → 1: the unit moved to Oct 20; the month is still 1.
    batch("b", &[("t1", "ai_tokens", 20, 0.2)]);
    let (code, v) = push();
    assert_eq!((code, v["push"]["sent"].as_u64()), (0, Some(0)), "{v}");
    assert_eq!(total(), 1, "not sent twice");
    // +0.6 on Oct 21: 1.6 in all → 2: one more unit goes out.
    batch("c", &[("t1", "ai_tokens", 21, 0.6)]);
    let (_, v) = push();
    assert_eq!(v["push"]["sent"], 1, "{v}");
    assert_eq!(total(), 2);
    // A crash mid-append leaves a torn last line: cut, and the push goes on.
    let ledger = lake.join("_exports/stripe/sent.ndjson");
    let good = std::fs::read(&ledger).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"window\":\"mlk_");
    std::fs::write(&ledger, &torn).unwrap();
    let (code, v) = push();
    assert_eq!((code, v["push"]["sent"].as_u64()), (0, Some(0)), "{v}");
    assert_eq!(
        std::fs::read(&ledger).unwrap(),
        good,
        "the torn line is cut"
    );
    // A corrupt line that is not the last: an error naming the file and the line.
    let mut bad = b"not json\n".to_vec();
    bad.extend_from_slice(&good);
    std::fs::write(&ledger, &bad).unwrap();
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("sent.ndjson") && err.contains("line 1"),
        "{err}"
    );
    let o = mlk(&[
        "export",
        "stripe",
        "--lake",
        lake.to_str().unwrap(),
        "--customers",
        customers.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--period",
        "2026-10",
    ]);
    assert!(o.status.success(), "a file export does not read the ledger");
}
