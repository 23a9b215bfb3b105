//! Plans, quotas, checks, invoices, plan comparison and alerts, end to end through the CLI,
//! against amounts computed by hand from the plan table (data/plans.toml) in the comments.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;

use crate::common::{ingest, mlk, ok, write};

const PLANS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/plans.toml");

fn ev(
    out: &mut String,
    id: &str,
    ts: &str,
    tenant: &str,
    meter: &str,
    value: f64,
    user: Option<&str>,
) {
    let user = user
        .map(|u| format!(",\"user_id\":\"{u}\""))
        .unwrap_or_default();
    writeln!(
        out,
        "{{\"id\":\"{id}\",\"ts\":\"{ts}\",\"tenant_id\":\"{tenant}\",\"meter\":\"{meter}\",\"value\":{value}{user}}}"
    )
    .unwrap();
}

/// `n` events of `meter` for `tenant` on `day` (YYYY-MM-DD), one per minute from 10:00 UTC.
fn day_of(out: &mut String, tenant: &str, meter: &str, day: &str, n: usize) {
    for i in 0..n {
        let ts = format!("{day}T{:02}:{:02}:00Z", 10 + i / 60, i % 60);
        ev(
            out,
            &format!("{tenant}-{meter}-{day}-{i}"),
            &ts,
            tenant,
            meter,
            1.0,
            None,
        );
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    lake: PathBuf,
    tenants: PathBuf,
    dir: PathBuf,
}

impl Fixture {
    fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = cmd.to_vec();
        a.extend([
            "--lake",
            self.lake.to_str().unwrap(),
            "--plans",
            PLANS,
            "--tenants",
            self.tenants.to_str().unwrap(),
        ]);
        a
    }

    fn json(&self, cmd: &[&str]) -> serde_json::Value {
        serde_json::from_str(&ok(&self.args(cmd))).unwrap()
    }

    /// `quota --at AT --tenant T --output json`.
    fn quota_of(&self, at: &str, tenant: &str) -> serde_json::Value {
        self.json(&["quota", "--at", at, "--tenant", tenant, "--output", "json"])
    }
}

/// The tenants and their October 2026:
/// - t-basic (basic, UTC): 105 documents, 1,011 API calls, storage readings up to 6.5 GB,
///   3 users.
/// - t-change (professional since 2026-10-11, basic before): 400 documents.
/// - t-tokyo (basic, Asia/Tokyo): 101 documents inside Tokyo's October, 2 more in UTC's
///   October but Tokyo's November, 1 in UTC's September but Tokyo's October.
/// - t-anchor (basic, anchored to the 31st): documents on Oct 30 and Oct 31.
/// - t-free (free): 25 documents (hard cap 20).
/// - t-ent (enterprise): nothing.
/// - t-steady (professional): 100 API calls and 20 documents every day from Sep 1.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for i in 0..105 {
        let ts = format!("2026-10-{:02}T12:00:00Z", 1 + i % 28);
        ev(
            &mut s,
            &format!("b-doc-{i}"),
            &ts,
            "t-basic",
            "documents",
            1.0,
            None,
        );
    }
    for i in 0..1011 {
        let ts = format!("2026-10-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60);
        ev(
            &mut s,
            &format!("b-api-{i}"),
            &ts,
            "t-basic",
            "api_calls",
            1.0,
            None,
        );
    }
    for (i, (ts, gb)) in [
        ("2026-09-25T00:00:00Z", 9.0), // September: not October's maximum
        ("2026-10-02T00:00:00Z", 4.0),
        ("2026-10-10T00:00:00Z", 6.5),
        ("2026-10-20T00:00:00Z", 5.5),
    ]
    .iter()
    .enumerate()
    {
        ev(
            &mut s,
            &format!("b-sto-{i}"),
            ts,
            "t-basic",
            "storage_bytes",
            gb * 1e9,
            None,
        );
    }
    for (i, u) in ["u1", "u2", "u3", "u1", "u2"].iter().enumerate() {
        let ts = format!("2026-10-0{}T09:00:00Z", i + 1);
        ev(
            &mut s,
            &format!("b-usr-{i}"),
            &ts,
            "t-basic",
            "active_users",
            1.0,
            Some(u),
        );
    }
    for i in 0..400 {
        let ts = format!("2026-10-{:02}T08:00:00Z", 1 + i % 30);
        ev(
            &mut s,
            &format!("c-doc-{i}"),
            &ts,
            "t-change",
            "documents",
            1.0,
            None,
        );
    }
    // Tokyo is UTC+9: its October is [2026-09-30T15:00Z, 2026-10-31T15:00Z).
    for i in 0..98 {
        let ts = format!("2026-10-{:02}T03:00:00Z", 1 + i % 30);
        ev(
            &mut s,
            &format!("k-doc-{i}"),
            &ts,
            "t-tokyo",
            "documents",
            1.0,
            None,
        );
    }
    for (i, ts) in [
        "2026-09-30T15:00:00Z", // Oct 1 00:00 in Tokyo: October
        "2026-09-30T16:00:00Z", // Oct 1 01:00: October
        "2026-10-31T14:59:59Z", // Oct 31 23:59:59: October
        "2026-10-31T15:00:00Z", // Nov 1 00:00: November
        "2026-10-31T20:00:00Z", // Nov 1 05:00: November
        "2026-09-30T14:59:59Z", // Sep 30 23:59:59: September
    ]
    .iter()
    .enumerate()
    {
        ev(
            &mut s,
            &format!("k-edge-{i}"),
            ts,
            "t-tokyo",
            "documents",
            1.0,
            None,
        );
    }
    // Anchored to Jan 31: periods [Sep 30, Oct 31) and [Oct 31, Nov 30).
    for i in 0..3 {
        ev(
            &mut s,
            &format!("a-30-{i}"),
            "2026-10-30T12:00:00Z",
            "t-anchor",
            "documents",
            1.0,
            None,
        );
    }
    for i in 0..2 {
        ev(
            &mut s,
            &format!("a-31-{i}"),
            "2026-10-31T12:00:00Z",
            "t-anchor",
            "documents",
            1.0,
            None,
        );
    }
    for i in 0..25 {
        let ts = format!("2026-10-{:02}T12:00:00Z", 1 + i);
        ev(
            &mut s,
            &format!("f-doc-{i}"),
            &ts,
            "t-free",
            "documents",
            1.0,
            None,
        );
    }
    for d in 1..=30 {
        day_of(
            &mut s,
            "t-steady",
            "api_calls",
            &format!("2026-09-{d:02}"),
            100,
        );
        day_of(
            &mut s,
            "t-steady",
            "documents",
            &format!("2026-09-{d:02}"),
            20,
        );
    }
    for d in 1..=31 {
        day_of(
            &mut s,
            "t-steady",
            "api_calls",
            &format!("2026-10-{d:02}"),
            100,
        );
        day_of(
            &mut s,
            "t-steady",
            "documents",
            &format!("2026-10-{d:02}"),
            20,
        );
    }
    // A tenant the tenants file does not list: left out, with a warning.
    ev(
        &mut s,
        "ghost-1",
        "2026-10-05T10:00:00Z",
        "t-ghost",
        "documents",
        1.0,
        None,
    );
    let events = write(dir.path(), "events.ndjson", &s);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan,period_anchor,time_zone,plan_changed_at,previous_plan\n\
         t-basic,basic,,UTC,,\n\
         t-change,professional,,,2026-10-11T00:00:00Z,basic\n\
         t-tokyo,basic,,Asia/Tokyo,,\n\
         t-anchor,basic,2026-01-31,UTC,,\n\
         t-free,free,,,,\n\
         t-ent,enterprise,,,,\n\
         t-steady,professional,,,,\n",
    );
    Fixture {
        lake,
        tenants,
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn dec(v: &serde_json::Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
}

fn invoice_of<'a>(inv: &'a serde_json::Value, tenant: &str) -> &'a serde_json::Value {
    inv["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tenant_id"] == tenant)
        .unwrap_or_else(|| panic!("no invoice for {tenant}"))
}

fn line<'a>(inv: &'a serde_json::Value, meter: &str) -> &'a serde_json::Value {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["meter"] == meter)
        .unwrap()
}

#[test]
fn invoices_match_the_plan_table_by_hand() {
    let f = fixture();
    let inv = f.json(&["invoice", "--period", "2026-10"]);
    assert_eq!(inv["period"], "2026-10");
    assert_eq!(inv["currency"], "EUR");

    // Basic: documents 105 − 100 = 5 × 0.50 = 2.50; API calls 11 over = 2 started packages
    // of 10 × 0.01 = 0.02; storage max 6.5 GB (not September's 9), 1.5 GB × 2.00 = 3.00;
    // 3 users, at the hard cap: 0; base 29.00 → 34.52.
    let b = invoice_of(&inv, "t-basic");
    assert_eq!(b["plan"], "basic");
    let expect = [
        ("documents", "105", "100", "5", "2.50"),
        ("api_calls", "1011", "1000", "11", "0.02"),
        ("storage", "6.5", "5", "1.5", "3.00"),
        ("users", "3", "3", "0", "0"),
    ];
    for (m, usage, inc, over, amount) in expect {
        let l = line(b, m);
        assert_eq!(dec(&l["usage"]), d(usage), "{m} usage");
        assert_eq!(dec(&l["included"]), d(inc), "{m} included");
        assert_eq!(dec(&l["overage_units"]), d(over), "{m} overage");
        assert_eq!(dec(&l["amount"]), d(amount), "{m} amount");
    }
    assert_eq!(dec(&b["base_fee"]), d("29.00"));
    assert_eq!(dec(&b["total"]), d("34.52"));

    // Plan change on Oct 11: 10 of 31 days on Basic. Documents included
    // 100·10/31 + 500·21/31 = 370.97 → 371; base 29·10/31 + 99·21/31 = 76.419… → 76.42;
    // 400 − 371 = 29 documents × 0.40 (Professional) = 11.60 → total 88.02.
    let c = invoice_of(&inv, "t-change");
    assert_eq!(c["previous_plan"], "basic");
    assert_eq!(dec(&line(c, "documents")["included"]), d("371"));
    assert_eq!(dec(&line(c, "documents")["amount"]), d("11.60"));
    assert_eq!(dec(&c["base_fee"]), d("76.42"));
    assert_eq!(dec(&c["total"]), d("88.02"));

    // Tokyo's October: 98 + 3 edge documents = 101 → 1 × 0.50; period starts at 15:00Z.
    let k = invoice_of(&inv, "t-tokyo");
    assert_eq!(k["period_start"], "2026-09-30T15:00:00Z");
    assert_eq!(k["period_end"], "2026-10-31T15:00:00Z");
    assert_eq!(dec(&line(k, "documents")["usage"]), d("101"));
    assert_eq!(dec(&k["total"]), d("29.50"));

    // Anchored to the 31st: the period starting in October is [Oct 31, Nov 30) and holds
    // Oct 31's 2 documents; September's [Sep 30, Oct 31) holds Oct 30's 3.
    let a = invoice_of(&inv, "t-anchor");
    assert_eq!(a["period_start"], "2026-10-31T00:00:00Z");
    assert_eq!(a["period_end"], "2026-11-30T00:00:00Z");
    assert_eq!(dec(&line(a, "documents")["usage"]), d("2"));
    let sep = f.json(&["invoice", "--period", "2026-09", "--tenant", "t-anchor"]);
    let a = invoice_of(&sep, "t-anchor");
    assert_eq!(a["period_start"], "2026-09-30T00:00:00Z");
    assert_eq!(dec(&line(a, "documents")["usage"]), d("3"));

    // Free: 25 documents over a hard cap of 20: 5 units over, nothing billed.
    let fr = invoice_of(&inv, "t-free");
    assert_eq!(dec(&line(fr, "documents")["overage_units"]), d("5"));
    assert_eq!(dec(&fr["total"]), d("0"));
    // Enterprise, zero usage: the base fee.
    let e = invoice_of(&inv, "t-ent");
    assert!(
        e["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| dec(&l["usage"]).is_zero())
    );
    assert_eq!(dec(&e["total"]), d("499.00"));

    // Every total is its base fee plus the sum of its lines.
    for i in inv["invoices"].as_array().unwrap() {
        let sum: Decimal = i["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| dec(&l["amount"]))
            .sum();
        assert_eq!(
            dec(&i["total"]),
            dec(&i["base_fee"]) + sum,
            "{}",
            i["tenant_id"]
        );
    }
    assert!(
        inv["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenant_id"] != "t-ghost")
    );
    let o = mlk(&f.args(&["invoice", "--period", "2026-10"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 tenant(s)") && err.contains("t-ghost"),
        "{err}"
    );
    // Deterministic bytes; CSV carries the same amounts.
    assert_eq!(
        ok(&f.args(&["invoice", "--period", "2026-10"])),
        ok(&f.args(&["invoice", "--period", "2026-10"]))
    );
    let csv = ok(&f.args(&["invoice", "--period", "2026-10", "--output", "csv"]));
    assert!(
        csv.lines()
            .any(|l| l == "2026-10,EUR,t-basic,basic,total,,,,34.52"),
        "{csv}"
    );
}

#[test]
fn graduated_volume_unlimited_and_time_weighted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let plans = write(
        dir.path(),
        "plans.toml",
        r#"
currency = "EUR"
[meters.documents]
usage = "sum"
[meters.tokens]
event = "ai_tokens"
usage = "sum"
[meters.storage]
event = "storage_bytes"
usage = "time_weighted"
scale = 1000000000
precision = 3
[plans.tiered]
base_fee = "10"
[plans.tiered.meters.documents]
included = 100
overage = { graduated = [ { up_to = 50, price = "1.00" }, { up_to = 150, price = "0.50", flat = "5" }, { price = "0.10" } ] }
[plans.tiered.meters.tokens]
included = "unlimited"
[plans.tiered.meters.storage]
included = 5
overage = { per_unit = "2" }
[plans.bulk]
base_fee = "10"
[plans.bulk.meters.documents]
included = 100
overage = { volume = [ { up_to = 50, price = "1.00" }, { up_to = 150, price = "0.50", flat = "5" }, { price = "0.10" } ] }
"#,
    );
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan\ng,tiered\nv,bulk\nw,bulk\n",
    );
    let mut s = String::new();
    for i in 0..300 {
        ev(
            &mut s,
            &format!("g{i}"),
            &format!("2026-10-{:02}T10:00:00Z", 1 + i % 31),
            "g",
            "documents",
            1.0,
            None,
        );
    }
    ev(
        &mut s,
        "gt",
        "2026-10-05T10:00:00Z",
        "g",
        "ai_tokens",
        1e6,
        None,
    );
    ev(
        &mut s,
        "gs1",
        "2026-09-20T00:00:00Z",
        "g",
        "storage_bytes",
        3e9,
        None,
    );
    ev(
        &mut s,
        "gs2",
        "2026-10-16T00:00:00Z",
        "g",
        "storage_bytes",
        9e9,
        None,
    );
    for i in 0..180 {
        ev(
            &mut s,
            &format!("v{i}"),
            &format!("2026-10-{:02}T10:00:00Z", 1 + i % 31),
            "v",
            "documents",
            1.0,
            None,
        );
    }
    for i in 0..150 {
        ev(
            &mut s,
            &format!("w{i}"),
            &format!("2026-10-{:02}T10:00:00Z", 1 + i % 31),
            "w",
            "documents",
            1.0,
            None,
        );
    }
    let events = write(dir.path(), "e.ndjson", &s);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    let inv: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        lake.to_str().unwrap(),
        "--plans",
        plans.to_str().unwrap(),
        "--tenants",
        tenants.to_str().unwrap(),
        "--period",
        "2026-10",
    ]))
    .unwrap();
    // Graduated, 200 over: 50 × 1.00 + 100 × 0.50 + 5 flat + 50 × 0.10 = 110.00.
    // Unlimited tokens: 0. Storage time-weighted over October's 31 days: 3 GB carried in for
    // 15 days, 9 GB for 16: 189/31 = 6.0968 → 6.097 GB, 1.097 × 2 = 2.194 → 2.19.
    let g = invoice_of(&inv, "g");
    assert_eq!(dec(&line(g, "documents")["amount"]), d("110.00"));
    assert_eq!(line(g, "tokens")["included"], "unlimited");
    assert_eq!(dec(&line(g, "tokens")["amount"]), d("0"));
    assert_eq!(dec(&line(g, "storage")["usage"]), d("6.097"));
    assert_eq!(dec(&line(g, "storage")["amount"]), d("2.19"));
    assert_eq!(dec(&g["total"]), d("122.19"));
    // Volume, 80 over: all in tier 2, 80 × 0.50 + 5 = 45.00. 50 over sits exactly on tier
    // 1's bound: 50 × 1.00 = 50.00.
    assert_eq!(
        dec(&line(invoice_of(&inv, "v"), "documents")["amount"]),
        d("45.00")
    );
    assert_eq!(
        dec(&line(invoice_of(&inv, "w"), "documents")["amount"]),
        d("50.00")
    );
}

fn quota_row<'a>(q: &'a serde_json::Value, tenant: &str, meter: &str) -> &'a serde_json::Value {
    q["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant_id"] == tenant && r["meter"] == meter)
        .unwrap_or_else(|| panic!("no quota {tenant} {meter}"))
}

#[test]
fn quotas_checks_and_projections() {
    let f = fixture();
    // t-steady at Oct 21 00:00: 20 days × 20 documents = 400 of 500 (80 %: warning); the
    // constant 20/day projects 400 + 11 × 20 = 620 at the end of October, and reaches 500
    // after 5 more days: Oct 26 00:00. API calls: 2,000 → 3,100, no limit date.
    let q = f.json(&["quota", "--at", "2026-10-21", "--output", "json"]);
    let r = quota_row(&q, "t-steady", "documents");
    assert_eq!(dec(&r["used"]), d("400"));
    assert_eq!(dec(&r["percent"]), d("80"));
    assert_eq!(r["status"], "warning");
    assert_eq!(dec(&r["projected"]["usage"]), d("620"));
    assert_eq!(r["projected"]["limit_at"], "2026-10-26T00:00:00Z");
    // 620 − 500 = 120 documents × 0.40 = 48.00 projected overage.
    assert_eq!(dec(&r["projected"]["cost"]), d("48.00"));
    let r = quota_row(&q, "t-steady", "api_calls");
    assert_eq!(dec(&r["used"]), d("2000"));
    assert_eq!(dec(&r["projected"]["usage"]), d("3100"));
    assert!(r["projected"]["limit_at"].is_null());
    let lo = dec(&r["projected"]["usage_lower"]);
    let hi = dec(&r["projected"]["usage_upper"]);
    assert!(lo <= d("3100") && d("3100") <= hi, "{r}");

    // t-basic on Oct 21 has the documents of Oct 1–20: 3 × 20 + 20 = 80 (warning); by
    // Oct 29 all 105, over 100: exceeded, 2.50 so far.
    assert_eq!(dec(&quota_row(&q, "t-basic", "documents")["used"]), d("80"));
    assert_eq!(quota_row(&q, "t-basic", "documents")["status"], "warning");
    let q29 = f.json(&["quota", "--at", "2026-10-29", "--output", "json"]);
    let r = quota_row(&q29, "t-basic", "documents");
    assert_eq!(r["status"], "exceeded");
    assert_eq!(dec(&r["overage_cost"]), d("2.50"));
    assert_eq!(dec(&r["remaining"]), d("0"));
    // Users at the hard cap: blocked.
    assert_eq!(quota_row(&q29, "t-basic", "users")["status"], "blocked");
    // CSV has the same rows.
    let csv = ok(&f.args(&[
        "quota",
        "--at",
        "2026-10-29",
        "--output",
        "csv",
        "--no-projection",
    ]));
    assert_eq!(
        csv.lines().count(),
        1 + q29["quotas"].as_array().unwrap().len()
    );
    // Zero usage: ok.
    let r = quota_row(&q, "t-ent", "documents");
    assert_eq!(
        (r["status"].as_str(), dec(&r["used"])),
        (Some("ok"), d("0"))
    );

    // t-free reaches its 20 documents on Oct 20 (one a day from Oct 1): at Oct 20 12:00:01
    // it is exactly at the cap (blocked), a moment before at 19 (critical, 95 %).
    let at_cap = f.quota_of("2026-10-20T12:00:01Z", "t-free");
    let r = quota_row(&at_cap, "t-free", "documents");
    assert_eq!(
        (dec(&r["used"]), r["status"].as_str()),
        (d("20"), Some("blocked"))
    );
    let before = f.quota_of("2026-10-20T12:00:00Z", "t-free");
    assert_eq!(
        quota_row(&before, "t-free", "documents")["status"],
        "critical"
    );

    // check: blocked at a hard cap (exit 3), allowed under it, overage priced past it.
    let check = |tenant: &str, meter: &str, qty: &str, at: &str| {
        let o = mlk(&f.args(&[
            "check",
            "--tenant",
            tenant,
            "--meter",
            meter,
            "--quantity",
            qty,
            "--at",
            at,
        ]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), v)
    };
    let (code, v) = check("t-free", "documents", "1", "2026-10-20T12:00:01Z");
    assert_eq!((code, v["decision"].as_str()), (Some(3), Some("blocked")));
    assert!(v["reason"].as_str().unwrap().contains("hard cap"));
    let (code, v) = check("t-free", "documents", "1", "2026-10-20T12:00:00Z");
    assert_eq!((code, v["decision"].as_str()), (Some(0), Some("allowed")));
    // t-basic has 105 documents: 3 more cost 3 × 0.50 = 1.50.
    let (code, v) = check("t-basic", "documents", "3", "2026-10-29");
    assert_eq!(
        (code, v["decision"].as_str()),
        (Some(0), Some("allowed_with_overage"))
    );
    assert_eq!(dec(&v["overage_cost"]), d("1.50"));
    // API calls: 1,011 used; 9 more stay inside the 2nd started package (0.00), 10 more
    // start a 3rd (0.01).
    let (_, v) = check("t-basic", "api_calls", "9", "2026-10-29");
    assert_eq!(dec(&v["overage_cost"]), d("0.00"));
    let (_, v) = check("t-basic", "api_calls", "10", "2026-10-29");
    assert_eq!(dec(&v["overage_cost"]), d("0.01"));

    // Bad input names the parameter; exit 2.
    for (args, needle) in [
        (
            vec!["check", "--tenant", "nobody", "--meter", "documents"],
            "--tenant",
        ),
        (
            vec!["check", "--tenant", "t-basic", "--meter", "pages"],
            "--meter",
        ),
        (
            vec![
                "check",
                "--tenant",
                "t-basic",
                "--meter",
                "documents",
                "--quantity",
                "x",
            ],
            "--quantity",
        ),
        (vec!["invoice", "--period", "2026-13"], "--period"),
        (vec!["quota", "--at", "yesterday"], "--at"),
    ] {
        let o = mlk(&f.args(&args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let bad = write(&f.dir, "bad.csv", "tenant_id,plan\nx,gold\n");
    let o = mlk(&[
        "quota",
        "--lake",
        f.lake.to_str().unwrap(),
        "--plans",
        PLANS,
        "--tenants",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.csv") && err.contains("line 2") && err.contains("gold"),
        "{err}"
    );
}

#[test]
fn plans_compare_prices_every_plan() {
    let f = fixture();
    // t-steady: September 600 documents and 3,000 calls; October (complete at Nov 1) 620 and
    // 3,100. At Nov 15 the last three complete periods are Aug, Sep, Oct.
    let v = f.json(&[
        "plans",
        "compare",
        "--tenant",
        "t-steady",
        "--at",
        "2026-11-15",
        "--output",
        "json",
    ]);
    let c = &v["comparison"];
    assert_eq!(c["periods"].as_array().unwrap().len(), 4);
    let cost = |plan: &str, i: usize| {
        let p = c["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plan"] == plan)
            .unwrap();
        (dec(&p["costs"][i]), p["fits"].as_bool().unwrap())
    };
    // September on Basic: 29 + 500 docs × 0.50 + 200 packages × 0.01 = 281.00; the users
    // meter has no usage, so Basic fits.
    assert_eq!(cost("basic", 1), (d("281.00"), true));
    // On Professional: 99 + 100 × 0.40 = 139.00. Enterprise: 499.00. Free: over its caps.
    assert_eq!(cost("professional", 1), (d("139.00"), true));
    assert_eq!(cost("enterprise", 2), (d("499.00"), true));
    assert!(!cost("free", 1).1);
    // October: 620 documents → Professional 99 + 120 × 0.40 = 147.00.
    assert_eq!(cost("professional", 2), (d("147.00"), true));
    assert_eq!(c["cheapest"], "professional");
    // Upgrade candidates: entry-plan tenants, the free one over its cap first.
    let cands = v["upgrade_candidates"].as_array().unwrap();
    assert!(
        cands
            .iter()
            .all(|c| c["plan"] == "free" || c["plan"] == "basic"),
        "{v}"
    );
}

/// A request the test server received: lower-cased headers and the body.
type Request = (Vec<(String, String)>, String);

/// A one-shot HTTP server on loopback: answers each request with the next status, records
/// (headers, body) of each.
fn serve(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        for status in statuses {
            let (mut sock, _) = listener.accept().unwrap();
            let mut r = BufReader::new(sock.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|h| h.0 == "content-length")
                .unwrap()
                .1
                .parse()
                .unwrap();
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            write!(
                sock,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            got.push((headers, String::from_utf8(body).unwrap()));
        }
        got
    });
    (url, h)
}

#[test]
fn alerts_are_raised_once_acknowledged_and_delivered_signed() {
    let f = fixture();
    let raise = |at: &str| -> serde_json::Value {
        f.json(&["alerts", "raise", "--at", at, "--output", "json"])
    };
    // At Oct 21 (by hand from the fixture): t-steady documents 400/500 (80 %); t-basic
    // documents 80/100 (80 %), storage max 6.5/5 GB and users 3/3 (hard cap); t-free
    // documents 20/20 (hard cap). Over 100 %: 80, 90, 100 and limit_exceeded.
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

    // Webhook: the first request fails (500) and is retried; every alert arrives once,
    // signed; a second delivery run sends nothing.
    let n = all.len();
    let mut statuses = vec![500];
    statuses.extend(std::iter::repeat_n(200, n));
    let (url, server) = serve(statuses);
    let out = std::process::Command::new(crate::common::BIN)
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
    let got = server.join().unwrap();
    let mut ids = Vec::new();
    for (headers, body) in &got {
        let h = |k: &str| {
            headers
                .iter()
                .find(|x| x.0 == k)
                .map(|x| x.1.clone())
                .unwrap()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{}.{}", h("x-meterlake-timestamp"), body).as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h("x-meterlake-signature"), format!("sha256={hex}"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
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
        n as u64 + 1
    );
    // Nothing left to send: no request is made (no server is listening now).
    let out = std::process::Command::new(crate::common::BIN)
        .args(["alerts", "deliver", "--lake", lake, "--webhook", &url])
        .env("MLK_WEBHOOK_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["requests"], 0);
}

/// On the bundled sample (16 tenants in 11 time zones), September's invoice usage equals a
/// fold over the lake's rows with each tenant's local month computed here with chrono-tz,
/// and every amount follows from the plan table.
#[test]
fn sample_invoices_match_a_fold_over_the_lake() {
    use chrono::TimeZone;
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let root = env!("CARGO_MANIFEST_DIR");
    ingest(
        &lake,
        &[Path::new(&format!("{root}/data/events/events.ndjson.gz"))],
        &[],
    );
    let tenants_csv = format!("{root}/data/tenants.csv");
    let inv: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        lake.to_str().unwrap(),
        "--plans",
        PLANS,
        "--tenants",
        &tenants_csv,
        "--period",
        "2026-09",
    ]))
    .unwrap();
    let rows = crate::common::read_lake(&lake);
    let text = std::fs::read_to_string(&tenants_csv).unwrap();
    let mut checked = 0;
    for row in text.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let (tenant, plan, zone) = (f[0], f[1], f[2]);
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let start = tz
            .with_ymd_and_hms(2026, 9, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros();
        let end = tz
            .with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros();
        let mine = rows
            .iter()
            .filter(|r| r.tenant == tenant && r.ts >= start && r.ts < end);
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        let mut storage_max = 0.0f64;
        let mut users = BTreeSet::new();
        for r in mine {
            *sums.entry(r.meter.as_str()).or_default() += r.value;
            if r.meter == "storage_bytes" {
                storage_max = storage_max.max(r.value);
            }
            if r.meter == "active_users"
                && let Some(u) = &r.user
            {
                users.insert(u.clone());
            }
        }
        let i = invoice_of(&inv, tenant);
        assert_eq!(i["plan"], plan);
        let want = [
            (
                "documents",
                d(&format!(
                    "{}",
                    sums.get("documents").copied().unwrap_or(0.0)
                )),
            ),
            (
                "api_calls",
                d(&format!(
                    "{}",
                    sums.get("api_calls").copied().unwrap_or(0.0)
                )),
            ),
            ("storage", d(&format!("{:.3}", storage_max / 1e9))),
            ("users", Decimal::from(users.len())),
        ];
        for (meter, usage) in want {
            assert_eq!(dec(&line(i, meter)["usage"]), usage, "{tenant} {meter}");
        }
        let sum: Decimal = i["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| dec(&l["amount"]))
            .sum();
        assert_eq!(dec(&i["total"]), dec(&i["base_fee"]) + sum, "{tenant}");
        checked += 1;
    }
    assert_eq!(checked, 16);

    // Anomaly alerts: one per high or critical incident of `detect --lake` that started in
    // the 60 days before the instant, counted here from the incidents file itself.
    let l = lake.to_str().unwrap();
    ok(&["detect", "--lake", l, "--quiet"]);
    let incidents = lake.join("anomalies/granularity=hour/incidents.parquet");
    let at = 1_792_713_600_000_000i64; // 2026-10-23T00:00:00Z
    let mut want = BTreeSet::new();
    for b in crate::common::parquet_batches(&incidents) {
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
        &tenants_csv,
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
