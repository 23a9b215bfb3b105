//! Gauges at a period's start, one rule for every consumer: a gauge's level at the start of
//! a period is its last reading before the period, however old. The issue's example,
//! through `invoice`, `quota`, `check`, `plans compare` and the server (`/quotas`,
//! `/check-quota`, its clock pinned with `MLK_NOW`), against figures computed by hand.
//!
//! Tenant `w` (overage plan): storage readings of 8 GB on Aug 2, 2 GB on Oct 11 and 20 GB
//! on Oct 21. October's time-weighted storage is (8·10 + 2·10 + 20·11)/31 = 320/31 =
//! 10.3226 GB (precision 4): the August reading, 60 days before October, holds for its
//! first 10 days. Its `max` is 20 GB.
//! Tenant `h` (hard caps of 5 GB): one reading of 4.5 GB on Sep 20. On Oct 5 its storage is
//! still 4.5 GB, so 1 GB more is blocked.

use std::path::PathBuf;

use crate::common::*;
use crate::serve::{Server, call, key};

const PLANS_TOML: &str = r#"
currency = "EUR"
[meters.storage]
event = "storage_bytes"
usage = "time_weighted"
unit = "GB"
scale = 1000000000
precision = 4
[meters.peak_storage]
event = "storage_bytes"
usage = "max"
unit = "GB"
scale = 1000000000
precision = 4
[plans.metered]
base_fee = "10"
[plans.metered.meters.storage]
included = 5
overage = { per_unit = "2" }
[plans.metered.meters.peak_storage]
included = "unlimited"
[plans.capped]
base_fee = "5"
[plans.capped.meters.storage]
included = 5
hard_cap = true
[plans.capped.meters.peak_storage]
included = 5
hard_cap = true
"#;

struct Setup {
    _dir: tempfile::TempDir,
    lake: PathBuf,
    plans: PathBuf,
    tenants: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = cmd.to_vec();
        a.extend([
            "--lake",
            self.lake.to_str().unwrap(),
            "--plans",
            self.plans.to_str().unwrap(),
            "--tenants",
            self.tenants.to_str().unwrap(),
        ]);
        a
    }

    fn json(&self, cmd: &[&str]) -> serde_json::Value {
        serde_json::from_str(&ok(&self.args(cmd))).unwrap()
    }

    /// `check` as JSON with its exit code.
    fn check(&self, tenant: &str, meter: &str, qty: &str, at: &str) -> (i32, serde_json::Value) {
        let o = mlk(&self.args(&[
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
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code().unwrap(), v)
    }

    /// `quota --at AT --no-projection`, one row.
    fn quota(&self, at: &str, tenant: &str, meter: &str) -> serde_json::Value {
        let q = self.json(&[
            "quota",
            "--at",
            at,
            "--tenant",
            tenant,
            "--no-projection",
            "--output",
            "json",
        ]);
        row(&q["quotas"], meter)
    }

    fn serve_at(&self, now: &str) -> Server {
        Server::start_env(
            &self.lake,
            &[
                "--config",
                self.config.to_str().unwrap(),
                "--flush-ms",
                "600000",
            ],
            &[("MLK_NOW", now)],
        )
    }
}

fn row(rows: &serde_json::Value, meter: &str) -> serde_json::Value {
    rows.as_array()
        .unwrap_or_else(|| panic!("no rows: {rows}"))
        .iter()
        .find(|r| r["meter"] == meter)
        .unwrap_or_else(|| panic!("no {meter} in {rows}"))
        .clone()
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let plans = write(dir.path(), "plans.toml", PLANS_TOML);
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan\nw,metered\nh,capped\n",
    );
    let config = write(
        dir.path(),
        "meterlake.toml",
        &format!(
            "[paths]\nplans = {:?}\ntenants = {:?}\n",
            plans.to_str().unwrap(),
            tenants.to_str().unwrap()
        ),
    );
    // The readings up to Oct 5 (a server's clock pinned there sees no later one).
    let mut s = String::new();
    ev(
        &mut s,
        "w-aug",
        "2026-08-02T00:00:00Z",
        "w",
        "storage_bytes",
        8e9,
        None,
    );
    ev(
        &mut s,
        "h-sep",
        "2026-09-20T00:00:00Z",
        "h",
        "storage_bytes",
        4.5e9,
        None,
    );
    let events = write(dir.path(), "events.ndjson", &s);
    let lake = dir.path().join("lake");
    ingest(&lake, &[&events], &[]);
    Setup {
        lake,
        plans,
        tenants,
        config,
        _dir: dir,
    }
}

/// The fields of a check answer the CLI and the server must agree on.
fn answer(v: &serde_json::Value) -> Vec<String> {
    [
        "decision",
        "used",
        "after",
        "included",
        "remaining",
        "overage_cost",
        "period_end",
    ]
    .iter()
    .map(|k| match &v[*k] {
        serde_json::Value::String(s) if k != &"decision" && k != &"period_end" => {
            d(s).normalize().to_string()
        }
        x => x.to_string(),
    })
    .collect()
}

fn get(base: &str, path: &str, key: &str) -> (u16, serde_json::Value) {
    let (st, v, _) = call(
        "GET",
        &format!("{base}/api/v1/usage{path}"),
        Some(key),
        None,
    );
    (st, v)
}

#[test]
fn every_consumer_carries_the_last_reading_into_a_period() {
    let f = setup();
    let kw = key(&f.lake, Some("w"));
    let kh = key(&f.lake, Some("h"));

    // Oct 5, no reading in October yet: w holds 8 GB (its Aug 2 reading, 64 days old), h
    // holds 4.5 GB of its 5 GB caps (90 %).
    let at = "2026-10-05T00:00:00Z";
    for meter in ["storage", "peak_storage"] {
        assert_eq!(dec(&f.quota(at, "w", meter)["used"]), d("8"), "w {meter}");
        let h = f.quota(at, "h", meter);
        assert_eq!(dec(&h["used"]), d("4.5"), "h {meter}");
        assert_eq!(h["status"], "critical", "h {meter}: {h}");
    }
    // 1 GB more takes h to 5.5 GB, over its hard cap: blocked (exit 3), not "allowed".
    let (code, cap) = f.check("h", "peak_storage", "1", at);
    assert_eq!(
        (code, cap["decision"].as_str()),
        (3, Some("blocked")),
        "{cap}"
    );
    assert_eq!(dec(&cap["used"]), d("4.5"));
    assert_eq!(dec(&cap["after"]), d("5.5"));
    let (_, level) = f.check("w", "storage", "0", at);
    assert_eq!(dec(&level["used"]), d("8"), "{level}");
    // The server, its clock at Oct 5, answers the same.
    let s = f.serve_at(at);
    let (st, v) = get(&s.base, "/check-quota/peak_storage?quantity=1", &kh);
    assert_eq!(st, 429, "{v}");
    assert_eq!(answer(&v), answer(&cap));
    let (st, v) = get(&s.base, "/check-quota/storage?quantity=0", &kw);
    assert_eq!(st, 200, "{v}");
    assert_eq!(answer(&v), answer(&level));
    let (_, q) = get(&s.base, "/quotas", &kh);
    for meter in ["storage", "peak_storage"] {
        let r = row(&q["quotas"], meter);
        assert_eq!(
            (dec(&r["used"]), r["status"].as_str()),
            (d("4.5"), Some("critical")),
            "{r}"
        );
    }
    let (_, q) = get(&s.base, "/quotas", &kw);
    assert_eq!(dec(&row(&q["quotas"], "storage")["used"]), d("8"));
    s.stop();

    // The last second of October: the 2 GB reading of Oct 11 ingested, the 20 GB one of
    // Oct 21 tracked live.
    let mut oct = String::new();
    ev(
        &mut oct,
        "w-oct11",
        "2026-10-11T00:00:00Z",
        "w",
        "storage_bytes",
        2e9,
        None,
    );
    ingest(&f.lake, &[&write(&f.lake, "../oct.ndjson", &oct)], &[]);
    let end = "2026-10-31T23:59:59Z";
    let s = f.serve_at(end);
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/track", s.base),
        Some(&kw),
        Some(
            r#"[{"id":"w-oct21","tenant_id":"w","meter":"storage_bytes","value":20000000000,"ts":"2026-10-21T00:00:00Z"}]"#,
        ),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(1)), "{v}");
    // By hand: (8·10 + 2·10 + 20·11)/31 = 10.32258…, 10.3226 at precision 4 (the second
    // missing from October's end moves it by 4e-6); the peak is 20 GB.
    let by_hand = d("10.3226");
    assert_eq!(
        d(&format!(
            "{:.4}",
            (8.0 * 10.0 + 2.0 * 10.0 + 20.0 * 11.0) / 31.0
        )),
        by_hand
    );
    let (_, q) = get(&s.base, "/quotas", &kw);
    let live = row(&q["quotas"], "storage");
    assert_eq!(dec(&live["used"]), by_hand, "{live}");
    assert_eq!(dec(&row(&q["quotas"], "peak_storage")["used"]), d("20"));
    let (st, served) = get(&s.base, "/check-quota/storage?quantity=1", &kw);
    assert_eq!(st, 200, "{served}");
    // SIGTERM flushes the tracked reading into the lake the CLI reads.
    s.stop();

    // invoice: 10.3226 GB, 5.3226 over × 2 = 10.6452 → 10.65; base 10 → 20.65.
    let inv = f.json(&["invoice", "--period", "2026-10", "--tenant", "w"]);
    let i = &inv["invoices"][0];
    let line = row(&i["lines"], "storage");
    assert_eq!(dec(&line["usage"]), by_hand, "{line}");
    assert_eq!(dec(&line["amount"]), d("10.65"));
    assert_eq!(dec(&row(&i["lines"], "peak_storage")["usage"]), d("20"));
    assert_eq!(dec(&i["total"]), d("20.65"));
    // quota, as of the server's instant.
    assert_eq!(dec(&f.quota(end, "w", "storage")["used"]), by_hand);
    assert_eq!(dec(&f.quota(end, "w", "peak_storage")["used"]), d("20"));
    // check: the same answer as the server's (the level now is 20 GB; 1 GB more costs 2).
    let (code, cli) = f.check("w", "storage", "1", end);
    assert_eq!(code, 0);
    assert_eq!(answer(&cli), answer(&served));
    assert_eq!(dec(&cli["used"]), d("20"));
    assert_eq!(dec(&cli["overage_cost"]), d("2.00"));
    // plans compare: October is the last complete period on Nov 15; September held 8 GB
    // all month (carried from August).
    let c = f.json(&[
        "plans",
        "compare",
        "--tenant",
        "w",
        "--at",
        "2026-11-15",
        "--output",
        "json",
    ]);
    let usage = &c["comparison"]["usage"];
    assert_eq!(
        c["comparison"]["periods"][2].as_str(),
        Some("2026-10-01"),
        "{c}"
    );
    assert_eq!(dec(&usage[2]["storage"]), by_hand, "{c}");
    assert_eq!(dec(&usage[1]["storage"]), d("8"), "{c}");
    assert_eq!(dec(&usage[2]["peak_storage"]), d("20"), "{c}");
}
