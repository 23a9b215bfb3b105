//! The billing fixture: seven tenants whose October 2026 is small enough to bill by hand
//! (the amounts are worked out in the comments of billing.rs and alerts.rs), and decimals.

use std::fmt::Write as _;
use std::path::PathBuf;

use rust_decimal::Decimal;

use super::{PLANS, ingest, ok, write};

/// One event line (NDJSON) appended to `out`.
pub fn ev(
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
pub fn day_of(out: &mut String, tenant: &str, meter: &str, day: &str, n: usize) {
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

/// The lake, tenants file and directory of [`fixture`] (plans: data/plans.toml).
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub lake: PathBuf,
    pub tenants: PathBuf,
    pub dir: PathBuf,
}

impl Fixture {
    /// `CMD... --lake --plans --tenants` of the fixture.
    pub fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
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

    /// `CMD...` of the fixture, its stdout as JSON.
    pub fn json(&self, cmd: &[&str]) -> serde_json::Value {
        serde_json::from_str(&ok(&self.args(cmd))).unwrap()
    }

    /// `quota --at AT --tenant T --output json`.
    pub fn quota_of(&self, at: &str, tenant: &str) -> serde_json::Value {
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
pub fn fixture() -> Fixture {
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

/// A decimal literal.
pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A decimal JSON string (amounts and quantities are strings, never floats).
pub fn dec(v: &serde_json::Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
}
