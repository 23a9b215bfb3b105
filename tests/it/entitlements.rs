//! Entitlements on the billing fixture: plan features (booleans and values), a plan
//! change taking effect at its instant, per-tenant overrides (grant and revoke, from an
//! instant), metered access from the allowance left (worked out by hand in
//! `common/billing.rs`), a feature nobody grants; through `check --feature` and
//! `GET /api/v1/usage/entitlements/{feature}` with tenant isolation. And
//! `check-quota?required_quantity=` as an alias of `quantity`.

use crate::common::*;
use crate::serve::{Server, call, key};

/// `check --tenant T --feature F --at AT [--entitlements FILE]`: (exit code, answer).
fn check(
    f: &Fixture,
    tenant: &str,
    feature: &str,
    at: &str,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let mut args = f.args(&[
        "check",
        "--tenant",
        tenant,
        "--feature",
        feature,
        "--at",
        at,
    ]);
    args.extend(extra);
    let o = mlk(&args);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v)
}

#[test]
fn entitlements_from_plans_overrides_and_allowances() {
    let f = fixture();
    let at = "2026-10-21";
    // Plan features (data/plans.toml): enterprise has SSO, basic does not; values are
    // grants with the value.
    let (code, e) = check(&f, "t-ent", "sso", at, &[]);
    assert_eq!(
        (code, &e["has_access"], &e["source"], &e["value"]),
        (0, &true.into(), &"plan".into(), &true.into()),
        "{e}"
    );
    let (code, e) = check(&f, "t-basic", "sso", at, &[]);
    assert_eq!((code, e["has_access"].as_bool()), (3, Some(false)), "{e}");
    // The reason says what the plan does (it said "grants it" for a denial too).
    assert_eq!(e["reason"], "plan `basic` denies it", "{e}");
    let (_, e) = check(&f, "t-ent", "sso", at, &[]);
    assert_eq!(e["reason"], "plan `enterprise` grants it", "{e}");
    let (_, e) = check(&f, "t-basic", "max_projects", at, &[]);
    assert_eq!(
        (e["has_access"].as_bool(), e["value"].as_i64()),
        (Some(true), Some(5))
    );
    // t-change moved from basic to professional at 2026-10-11 00:00 UTC.
    let (_, before) = check(&f, "t-change", "sso", "2026-10-10T23:59:59Z", &[]);
    let (_, after) = check(&f, "t-change", "sso", "2026-10-11T00:00:00Z", &[]);
    assert_eq!(
        (before["has_access"].as_bool(), before["plan"].as_str()),
        (Some(false), Some("basic"))
    );
    assert_eq!(
        (after["has_access"].as_bool(), after["plan"].as_str()),
        (Some(true), Some("professional"))
    );
    // Overrides: t-basic gets SSO from Oct 15; t-ent loses the audit log always.
    let ov = write(
        &f.dir,
        "entitlements.csv",
        "tenant_id,feature,value,from\nt-basic,sso,true,2026-10-15\nt-ent,audit_log,false,\nt-basic,max_projects,8,2026-10-01\nt-basic,max_projects,12,2026-10-20\n",
    );
    let o = ["--entitlements", ov.to_str().unwrap()];
    let (_, e) = check(&f, "t-basic", "sso", "2026-10-14", &o);
    assert_eq!(
        (e["has_access"].as_bool(), e["source"].as_str()),
        (Some(false), Some("plan"))
    );
    let (code, e) = check(&f, "t-basic", "sso", "2026-10-16", &o);
    assert_eq!(
        (code, e["has_access"].as_bool(), e["source"].as_str()),
        (0, Some(true), Some("override"))
    );
    let (code, e) = check(&f, "t-ent", "audit_log", at, &o);
    assert_eq!(
        (code, e["has_access"].as_bool(), e["source"].as_str()),
        (3, Some(false), Some("override"))
    );
    // The latest override at or before the instant decides.
    let (_, e) = check(&f, "t-basic", "max_projects", "2026-10-19", &o);
    assert_eq!(e["value"].as_i64(), Some(8));
    let (_, e) = check(&f, "t-basic", "max_projects", at, &o);
    assert_eq!(e["value"].as_i64(), Some(12));
    // Metered (by hand, Oct 21): t-basic documents 80 of 100, 20 left; t-free documents 20
    // of 20 with a hard cap: no access.
    let (code, e) = check(&f, "t-basic", "documents", at, &[]);
    assert_eq!(
        (
            code,
            e["source"].as_str(),
            e["balance"].as_str(),
            e["usage"].as_str()
        ),
        (0, Some("metered"), Some("20"), Some("80")),
        "{e}"
    );
    let (code, e) = check(&f, "t-free", "documents", at, &[]);
    assert_eq!(
        (code, e["has_access"].as_bool(), e["balance"].as_str()),
        (3, Some(false), Some("0")),
        "{e}"
    );
    // Nobody grants it.
    let (code, e) = check(&f, "t-ent", "teleport", at, &[]);
    assert_eq!((code, e["source"].as_str()), (3, Some("not_granted")));
    // Bad input names itself.
    let o = mlk(&f.args(&["check", "--tenant", "nobody", "--feature", "sso"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tenant"));
    let bad = write(&f.dir, "bad.csv", "tenant_id,feature\nt-basic,sso\n");
    let o = mlk(&f.args(&[
        "check",
        "--tenant",
        "t-basic",
        "--feature",
        "sso",
        "--entitlements",
        bad.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv") && err.contains("value"), "{err}");
    // A spreadsheet's FALSE revokes (it granted, as the text "FALSE"); an empty value is
    // refused naming its line (it granted, as the text "").
    let sheet = write(
        &f.dir,
        "sheet.csv",
        "tenant_id,feature,value,from\nt-ent,audit_log,FALSE,\n",
    );
    let (code, e) = check(
        &f,
        "t-ent",
        "audit_log",
        at,
        &["--entitlements", sheet.to_str().unwrap()],
    );
    assert_eq!((code, e["has_access"].as_bool()), (3, Some(false)), "{e}");
    let empty = write(
        &f.dir,
        "empty.csv",
        "tenant_id,feature,value,from\nt-ent,audit_log,,\n",
    );
    let o = mlk(&f.args(&[
        "check",
        "--tenant",
        "t-ent",
        "--feature",
        "audit_log",
        "--entitlements",
        empty.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && err.contains("line 2") && err.contains("empty"),
        "{err}"
    );

    // The API, its clock pinned to Oct 21.
    let config = write(
        &f.dir,
        "meterlake.toml",
        &format!(
            "[paths]\nplans = \"{PLANS}\"\ntenants = \"{}\"\nentitlements = \"{}\"\n",
            f.tenants.display(),
            ov.display()
        ),
    );
    let tk = key(&f.lake, Some("t-basic"));
    let admin = key(&f.lake, None);
    let server = Server::start_env(
        &f.lake,
        &["--config", config.to_str().unwrap()],
        &[("MLK_NOW", "2026-10-21T00:00:00Z")],
    );
    let url = |p: &str| format!("{}/api/v1/usage/{p}", server.base);
    let (s, e, _) = call("GET", &url("entitlements/sso"), Some(&tk), None);
    assert_eq!(
        (s, e["has_access"].as_bool(), e["source"].as_str()),
        (200, Some(true), Some("override")),
        "{e}"
    );
    // Metered through the live counters (they count the period's events in the lake,
    // all 105 of October): the same usage as /check-quota, past the allowance, billed as
    // overage on basic, so still accessible with a balance of 0.
    let (s, e, _) = call("GET", &url("entitlements/documents"), Some(&tk), None);
    let (_, q, _) = call(
        "GET",
        &url("check-quota/documents?quantity=0"),
        Some(&tk),
        None,
    );
    assert_eq!(s, 200, "{e}");
    assert_eq!(
        (&e["usage"], &e["included"]),
        (&q["used"], &q["included"]),
        "{e} {q}"
    );
    assert_eq!(
        (e["balance"].as_str(), e["has_access"].as_bool()),
        (Some("0"), Some(true))
    );
    let (s, _, _) = call(
        "GET",
        &url("entitlements/sso?tenant=t-ent"),
        Some(&tk),
        None,
    );
    assert_eq!(s, 403, "a tenant key asks about its own tenant only");
    let (s, e, _) = call(
        "GET",
        &url("entitlements/audit_log?tenant=t-ent"),
        Some(&admin),
        None,
    );
    assert_eq!((s, e["has_access"].as_bool()), (200, Some(false)), "{e}");
    // required_quantity is quantity.
    let (s1, a, _) = call(
        "GET",
        &url("check-quota/documents?quantity=25"),
        Some(&tk),
        None,
    );
    let (s2, b, _) = call(
        "GET",
        &url("check-quota/documents?required_quantity=25"),
        Some(&tk),
        None,
    );
    assert_eq!((s1, &a), (s2, &b));
    assert_eq!(a["quantity"].as_str(), Some("25"), "{a}");
}
