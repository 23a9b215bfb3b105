//! Plans, quotas, checks, invoices and plan comparison, end to end through the CLI, against
//! amounts computed by hand from the plan table (data/plans.toml) in the comments, and
//! the sample's invoices against a fold over its lake.

use rust_decimal::Decimal;

use crate::common::*;

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
    // of 10 × 0.01 = 0.02; storage max 9 GB: September's last reading (9 GB on Sep 25) is
    // the level October starts at, held until Oct 2's 4 GB (a gauge's level at a period's
    // start is its last reading before it), above October's own 6.5; 4 GB × 2.00 = 8.00;
    // 3 users, at the hard cap: 0; base 29.00 → 39.52.
    let b = invoice_of(&inv, "t-basic");
    assert_eq!(b["plan"], "basic");
    let expect = [
        ("documents", "105", "100", "5", "2.50"),
        ("api_calls", "1011", "1000", "11", "0.02"),
        ("storage", "9", "5", "4", "8.00"),
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
    assert_eq!(dec(&b["total"]), d("39.52"));

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
            .any(|l| l == "2026-10,EUR,t-basic,basic,total,,,,39.52"),
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
    let bad = write(&f.dir, "bad.csv", "tenant_id,plan\nx,gold\n");
    let cases: [(&str, Vec<&str>, &[&str]); 7] = [
        (
            "an unknown tenant",
            f.args(&["check", "--tenant", "nobody", "--meter", "documents"]),
            &["--tenant"],
        ),
        (
            "an unknown meter",
            f.args(&["check", "--tenant", "t-basic", "--meter", "pages"]),
            &["--meter"],
        ),
        (
            "a quantity that is no number",
            f.args(&[
                "check",
                "--tenant",
                "t-basic",
                "--meter",
                "documents",
                "--quantity",
                "x",
            ]),
            &["--quantity"],
        ),
        (
            // 105 documents used on Oct 29: 105 + the largest decimal overflows (it used to
            // panic, exit 101).
            "a quantity usage plus which is beyond the largest decimal",
            f.args(&[
                "check",
                "--tenant",
                "t-basic",
                "--meter",
                "documents",
                "--quantity",
                "79228162514264337593543950335",
                "--at",
                "2026-10-29",
            ]),
            &["--quantity", "largest"],
        ),
        (
            "a month 13",
            f.args(&["invoice", "--period", "2026-13"]),
            &["--period"],
        ),
        (
            "an instant that is none",
            f.args(&["quota", "--at", "yesterday"]),
            &["--at"],
        ),
        (
            "a tenants file naming an unknown plan",
            vec![
                "quota",
                "--lake",
                f.lake.to_str().unwrap(),
                "--plans",
                PLANS,
                "--tenants",
                bad.to_str().unwrap(),
            ],
            &["bad.csv", "line 2", "gold"],
        ),
    ];
    for (case, args, want) in cases {
        assert_rejected(case, &args, want);
    }
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

/// On the bundled sample (16 tenants in 11 time zones), September's invoice usage equals a
/// fold over the lake's rows with each tenant's local month computed here with chrono-tz,
/// and every amount follows from the plan table.
#[test]
fn sample_invoices_match_a_fold_over_the_lake() {
    use chrono::TimeZone;
    use std::collections::{BTreeMap, BTreeSet};
    let lake = sample_events();
    let tenants_csv = TENANTS;
    let inv: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        lake.to_str().unwrap(),
        "--plans",
        PLANS,
        "--tenants",
        tenants_csv,
        "--period",
        "2026-09",
    ]))
    .unwrap();
    let rows = read_lake(lake);
    let text = std::fs::read_to_string(tenants_csv).unwrap();
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
        // The storage level September starts at: the last reading before it, however old.
        let theirs: Vec<&Row> = rows.iter().filter(|r| r.tenant == tenant).collect();
        let mut storage_max = latest_reading(&theirs, "storage_bytes", start).unwrap_or(0.0);
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
}

fn json_in(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let o = mlk_in(dir, args);
    assert!(
        o.status.success(),
        "{args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn billing_commands_work_from_any_directory_as_of_the_lakes_data() {
    let lake = sample().lake.to_str().unwrap().to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let here = elsewhere.path();
    // No tenants file here: a clear error that says how to give one.
    let o = mlk_in(here, &["quota", "--lake", &lake, "--output", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--tenants") && err.contains("meterlake init"),
        "{err}"
    );
    // With a tenants file, the plan catalogue is the built-in one: the same quotas as with
    // data/plans.toml given explicitly, as of the lake's latest event by default.
    let built_in = json_in(
        here,
        &[
            "quota",
            "--lake",
            &lake,
            "--tenants",
            TENANTS,
            "--output",
            "json",
        ],
    );
    let explicit = json_in(
        here,
        &[
            "quota",
            "--lake",
            &lake,
            "--tenants",
            TENANTS,
            "--plans",
            PLANS,
            "--at",
            "latest",
            "--output",
            "json",
        ],
    );
    assert_eq!(built_in, explicit);
    let last = read_lake(&sample().lake)
        .iter()
        .map(|r| r.ts)
        .max()
        .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(built_in["at"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    assert_eq!(
        at / 1_000_000,
        (last + 1) / 1_000_000,
        "latest, not the wall clock"
    );
    let used: f64 = built_in["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["used"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(used > 0.0, "the lake's last period has usage");
    // `--at now` stays available: the present period (December 2026 or later) is empty.
    let now = json_in(
        here,
        &[
            "quota",
            "--lake",
            &lake,
            "--tenants",
            TENANTS,
            "--at",
            "now",
            "--output",
            "json",
        ],
    );
    assert_ne!(now["at"], built_in["at"]);
    // Check and plans compare say what instant they answer for.
    let check = json_in(
        here,
        &[
            "check",
            "--lake",
            &lake,
            "--tenants",
            TENANTS,
            "--tenant",
            "acme-001",
            "--meter",
            "api_calls",
        ],
    );
    assert_eq!(check["at"], built_in["at"]);

    // `init` writes editable copies; `run` in that directory reads them.
    let o = mlk_in(here, &["init", "proj"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let proj = here.join("proj");
    for f in ["meterlake.toml", "plans.toml", "meters.toml", "tenants.csv"] {
        let want = std::fs::read_to_string(format!("{}/data/{f}", env!("CARGO_MANIFEST_DIR")));
        assert_eq!(
            std::fs::read_to_string(proj.join("data").join(f)).unwrap(),
            want.unwrap(),
            "{f}"
        );
    }
    let o = mlk_in(here, &["init", "proj"]);
    assert_eq!(o.status.code(), Some(2), "never overwrites silently");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert!(mlk_in(here, &["init", "proj", "--force"]).status.success());
    let from_proj = json_in(&proj, &["quota", "--lake", &lake, "--output", "json"]);
    assert_eq!(from_proj, built_in);
}

/// Issued invoices are never rewritten (issue 24): `retention` keeps what is not invoiced
/// yet and the next `run` leaves September's file byte for byte (it used to recompute it
/// from the truncated events); a late event of September becomes an adjustment, billed once,
/// in October's invoice.
#[test]
fn an_issued_invoice_is_never_rewritten_and_late_events_become_adjustments() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    copy_dir(&s.lake, &lake);
    let l = lake.to_str().unwrap();
    let issued = std::fs::read(s.out.join("invoices/2026-09.json")).unwrap();
    assert_eq!(
        std::fs::read(lake.join("_invoices/2026-09.json")).unwrap(),
        issued,
        "the lake keeps what run wrote"
    );

    // A late event of September: 5,000 api_calls for initech-003 (basic: 1,000 included,
    // then 0.01 per package of 10).
    let late = dir.path().join("late.ndjson");
    std::fs::write(
        &late,
        r#"{"id":"late-1","ts":"2026-09-15T12:00:00Z","tenant_id":"initech-003","user_id":"u-1","meter":"api_calls","value":5000}
"#,
    )
    .unwrap();
    ingest(&lake, &[&late], &[]);
    let september = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["invoice", "--lake", l, "--period", "2026-09"];
        args.extend(["--tenant", "initech-003", "--output", "json"]);
        args.extend(extra);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let recomputed = september(&["--draft"]);
    let was: serde_json::Value = serde_json::from_slice(&issued).unwrap();
    // Without --draft, `invoice` shows the month as issued.
    let shown = september(&[]);
    assert_eq!(shown["invoices"][0], *invoice_of(&was, "initech-003"));
    let (old, new) = (
        line(invoice_of(&was, "initech-003"), "api_calls"),
        line(invoice_of(&recomputed, "initech-003"), "api_calls"),
    );
    assert_eq!(dec(&new["usage"]) - dec(&old["usage"]), d("5000"));
    let debit = dec(&new["amount"]) - dec(&old["amount"]);
    assert!(
        debit > Decimal::ZERO,
        "the late calls are over the allowance"
    );

    run_json(&lake, &out, &[]);
    assert_eq!(
        std::fs::read(out.join("invoices/2026-09.json")).unwrap(),
        issued,
        "September stays as issued"
    );
    let adj: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(lake.join("_invoices/adjustments.json")).unwrap())
            .unwrap();
    assert_eq!(adj.len(), 1, "{adj:?}");
    assert_eq!(
        (&adj[0]["tenant_id"], &adj[0]["item"], &adj[0]["period"]),
        (
            &serde_json::json!("initech-003"),
            &serde_json::json!("api_calls"),
            &serde_json::json!("2026-09")
        )
    );
    assert_eq!(
        (dec(&adj[0]["usage"]), dec(&adj[0]["amount"])),
        (d("5000"), debit)
    );
    // A second run finds nothing new.
    run_json(&lake, &out, &[]);
    let again: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(lake.join("_invoices/adjustments.json")).unwrap())
            .unwrap();
    assert_eq!(again, adj);
    // October is not issued yet: `invoice` shows it as issuing it now would, with the
    // adjustment billed (it showed the month without it).
    let october: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        l,
        "--period",
        "2026-10",
        "--tenant",
        "initech-003",
        "--output",
        "json",
    ]))
    .unwrap();
    let preview = &october["invoices"][0];
    assert_eq!(preview["adjustments"][0]["id"], adj[0]["id"], "{preview}");

    // November starts: October is closed, with the adjustment billed in it.
    let next = |id: &str, ts: &str| {
        let f = dir.path().join(format!("{id}.ndjson"));
        std::fs::write(
            &f,
            format!(
                "{{\"id\":\"{id}\",\"ts\":\"{ts}\",\"tenant_id\":\"globex-002\",\"user_id\":\"u-1\",\"meter\":\"api_calls\",\"value\":1}}\n"
            ),
        )
        .unwrap();
        ingest(&lake, &[&f], &[]);
        run_json(&lake, &out, &[]);
    };
    next("nov-1", "2026-11-01T08:00:00Z");
    let oct: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2026-10.json")).unwrap()).unwrap();
    let i = invoice_of(&oct, "initech-003");
    let billed = i["adjustments"].as_array().unwrap();
    assert_eq!(billed.len(), 1);
    assert_eq!(billed[0]["id"], adj[0]["id"]);
    assert_eq!(dec(&i["total"]), dec(&preview["total"]), "as previewed");
    let lines: Decimal = i["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| dec(&l["amount"]))
        .sum();
    assert_eq!(dec(&i["total"]), dec(&i["base_fee"]) + lines + debit);
    // Other tenants' invoices carry no adjustments.
    assert!(
        oct["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["tenant_id"] != "initech-003")
            .all(|i| i.get("adjustments").is_none())
    );
    // December: November's invoices do not bill it again.
    next("dec-1", "2026-12-01T08:00:00Z");
    let nov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2026-11.json")).unwrap()).unwrap();
    assert!(invoice_of(&nov, "initech-003").get("adjustments").is_none());

    // Retention after issue: what is invoiced goes, what may be of December's periods (not
    // invoiced yet: from the earliest end of November's periods, as a UTC day) stays.
    let before = read_lake(&lake);
    let unbilled_from = nov["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            chrono::DateTime::parse_from_rfc3339(i["period_end"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d")
                .to_string()
        })
        .min()
        .unwrap();
    let unbilled_from = unbilled_from.as_str();
    // ... and what is before the first issued month (September: the lake's August was
    // never invoiced) stays too: from the first UTC day wholly inside every tenant's
    // September on, it is billed.
    let sep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2026-09.json")).unwrap()).unwrap();
    let billed_from = sep["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let t = chrono::DateTime::parse_from_rfc3339(i["period_start"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
            let day = t.date_naive();
            if t.time() == chrono::NaiveTime::MIN {
                day
            } else {
                day.succ_opt().unwrap()
            }
        })
        .max()
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let billed_from = billed_from.as_str();
    let unbilled = |d: &str| d >= unbilled_from || d < billed_from;
    let r: serde_json::Value = serde_json::from_str(&ok(&[
        "retention",
        "--lake",
        l,
        "--events-days",
        "10",
        "--now",
        "2026-12-20",
        "--output",
        "json",
    ]))
    .unwrap();
    let after = read_lake(&lake);
    assert!(after.iter().all(|r| unbilled(&r.date)), "{r}");
    assert!(before.iter().any(|r| !unbilled(&r.date)));
    assert!(before.iter().any(|r| r.date.as_str() < billed_from));
    let kept: Vec<_> = before.iter().filter(|r| unbilled(&r.date)).collect();
    assert_eq!(after.len(), kept.len());
    assert!(!r["kept_unbilled"].as_array().unwrap().is_empty(), "{r}");
    run_json(&lake, &out, &[]);
    assert_eq!(
        std::fs::read(out.join("invoices/2026-09.json")).unwrap(),
        issued,
        "retention does not rewrite an issued invoice"
    );
    assert_eq!(
        std::fs::read(lake.join("_invoices/2026-11.json")).unwrap(),
        std::fs::read(out.join("invoices/2026-11.json")).unwrap()
    );
}

/// Issuing survives faults: a torn write of the issued file leaves no file (the run fails
/// naming it) and a crash after it is issued but before its state is recorded leaves the
/// whole file; the next run ends with exactly the invoices a clean run issues.
#[test]
fn issuing_invoices_survives_a_torn_write_and_a_crash() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    copy_dir(&s.lake, &lake);
    let reg = lake.join("_invoices");
    std::fs::remove_dir_all(&reg).unwrap();
    let faults = dir.path().join("faults");
    let run = || {
        std::process::Command::new(BIN)
            .args([
                "run",
                "--lake",
                lake.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--output", "json", "--quiet"])
            .env("MLK_FAULTS", &faults)
            .output()
            .unwrap()
    };
    std::fs::write(&faults, "invoice.write=partial").unwrap();
    let o = run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("_invoices"), "{err}");
    // (The lock file closing takes stays.)
    let left: Vec<_> = std::fs::read_dir(&reg)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != "_lock")
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing issued, no temporary left: {left:?}"
    );
    std::fs::write(&faults, "invoice.state=abort").unwrap();
    let o = run();
    assert!(!o.status.success(), "aborted");
    assert!(reg.join("2026-09.json").is_file() && !reg.join("2026-09.state.json").exists());
    std::fs::remove_file(&faults).unwrap();
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let issued = std::fs::read(s.out.join("invoices/2026-09.json")).unwrap();
    assert_eq!(std::fs::read(reg.join("2026-09.json")).unwrap(), issued);
    assert_eq!(
        std::fs::read(out.join("invoices/2026-09.json")).unwrap(),
        issued
    );
    assert!(reg.join("2026-09.state.json").is_file());
}

/// Seat projections: a seat is a distinct user of the period and users come back, so the
/// period's first days (where every user is new) are not extrapolated. Two enterprise
/// tenants since Aug 1: t-team, 8 users each active every 3rd day; t-grow, the same plus a
/// user who joins every 2nd day and then stays (active every 3rd day from joining). The
/// expected projection is folded here from the events, by the README's rule: used + users
/// active in the period-length span before `at` not back yet + new users per day (first
/// seen after a period-length warm-up of the 56-day history) × days left.
#[test]
fn seat_projections_count_returning_users_not_first_day_arrivals() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir().unwrap();
    let day =
        |n: i64| chrono::NaiveDate::from_ymd_opt(2026, 8, 1).unwrap() + chrono::Days::new(n as u64);
    // (tenant, user, day index from Aug 1)
    let mut acts: Vec<(&str, String, i64)> = Vec::new();
    for t in ["t-team", "t-grow"] {
        for u in 0..8 {
            for n in (u..92).step_by(3) {
                acts.push((t, format!("s{u}"), n));
            }
        }
    }
    for k in 0..46 {
        for n in (2 * k..92).step_by(3) {
            acts.push(("t-grow", format!("g{k}"), n));
        }
    }
    let mut s = String::new();
    for (i, (t, u, n)) in acts.iter().enumerate() {
        let ts = format!("{}T09:00:00Z", day(*n));
        crate::common::ev(
            &mut s,
            &format!("a{i}"),
            &ts,
            t,
            "active_users",
            1.0,
            Some(u),
        );
    }
    let events = write(dir.path(), "events.ndjson", &s);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan\nt-team,enterprise\nt-grow,enterprise\n",
    );
    let micros = |n: i64| {
        day(n)
            .and_hms_opt(9, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    const DAY: i64 = 86_400_000_000;
    for at_day in [62, 63, 70, 80] {
        // Oct 1 is day 61: at = Oct 2, Oct 3, Oct 10, Oct 20 (00:00 UTC).
        let at = day(at_day)
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let (start, end) = (
            micros(61) - 9 * 3600 * 1_000_000,
            micros(92) - 9 * 3600 * 1_000_000,
        );
        let at_s = format!("{}", day(at_day));
        let q: serde_json::Value = serde_json::from_str(&ok(&[
            "quota",
            "--lake",
            lake.to_str().unwrap(),
            "--plans",
            PLANS,
            "--tenants",
            tenants.to_str().unwrap(),
            "--at",
            &at_s,
            "--output",
            "json",
        ]))
        .unwrap();
        for t in ["t-team", "t-grow"] {
            let mine: Vec<(&String, i64)> = acts
                .iter()
                .filter(|a| a.0 == t)
                .map(|a| (&a.1, micros(a.2)))
                .filter(|a| a.1 < at && a.1 >= at - 56 * DAY)
                .collect();
            let inside: BTreeSet<&String> =
                mine.iter().filter(|a| a.1 >= start).map(|a| a.0).collect();
            let mut last_before: BTreeMap<&String, i64> = BTreeMap::new();
            let mut first: BTreeMap<&String, i64> = BTreeMap::new();
            for &(u, ts) in &mine {
                if ts < start {
                    let e = last_before.entry(u).or_insert(ts);
                    *e = (*e).max(ts);
                }
                let e = first.entry(u).or_insert(ts);
                *e = (*e).min(ts);
            }
            let lapsed: Vec<i64> = last_before
                .iter()
                .filter(|(u, _)| !inside.contains(*u))
                .map(|(_, &b)| b)
                .collect();
            let recent = lapsed.iter().filter(|&&b| b >= at - (end - start)).count() as f64;
            let warm = first.values().min().unwrap() + (end - start);
            let since = first.values().filter(|&&f| f >= warm).count() as f64;
            let rate = since / ((at - warm) as f64 / DAY as f64);
            let left = (end - at) as f64 / DAY as f64;
            let expected = inside.len() as f64 + recent + rate * left;
            let r = quota_row(&q, t, "users");
            assert_eq!(dec(&r["used"]), Decimal::from(inside.len()), "{t} {at_s}");
            assert_eq!(r["projected"]["model"], "seats", "{r}");
            let got: f64 = r["projected"]["usage"].as_str().unwrap().parse().unwrap();
            assert!(
                (got - expected).abs() <= 0.5,
                "{t} at {at_s}: {got} vs {expected}: {r}"
            );
            let lo = dec(&r["projected"]["usage_lower"]);
            let hi = dec(&r["projected"]["usage_upper"]);
            assert!(
                lo >= dec(&r["used"]) && lo <= dec(&r["projected"]["usage"]),
                "{r}"
            );
            assert!(hi >= Decimal::from(inside.len() + lapsed.len()), "{r}");
        }
        // The team: its 8 users, whatever day of the period (never 8 × 30).
        let r = quota_row(&q, "t-team", "users");
        assert_eq!(dec(&r["projected"]["usage"]), d("8"), "{r}");
    }
}
