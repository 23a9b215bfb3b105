//! The access log (issue 24): every read of a tenant's data through the API, the dashboard
//! or a CLI command is recorded with who, what, which tenant and which key, tracking and
//! quota checks are not, and the hash chain catches a removed or altered line.

use crate::common::*;
use crate::serve::{Server, call, key, lake_copy};

fn access(lake: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(lake.join("_audit/access.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(lake: &std::path::Path) -> (bool, String) {
    let o = mlk(&["lake", "verify-audit", "--lake", lake.to_str().unwrap()]);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

#[test]
fn reads_are_logged_with_who_and_what_and_the_chain_catches_tampering() {
    let (_d, lake) = lake_copy();
    let l = lake.to_str().unwrap();
    let tk = key(&lake, Some("globex-002"));
    let admin = key(&lake, None);
    let s = Server::start(&lake, &[]);
    let url = |p: &str| format!("{}/api/v1/usage/{p}", s.base);
    let (st, _, _) = call(
        "GET",
        &url("summary?from=2026-10-01&to=2026-10-23"),
        Some(&tk),
        None,
    );
    assert_eq!(st, 200);
    let (st, _, _) = call(
        "GET",
        &url("check-quota/api_calls?quantity=1"),
        Some(&tk),
        None,
    );
    assert_eq!(st, 200);
    // Refused reads are not reads.
    let (st, _, _) = call("GET", &url("events?tenant=acme-001"), Some(&tk), None);
    assert_eq!(st, 403);
    let (st, _, _) = call(
        "GET",
        &url("events?tenant=acme-001&limit=5"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200);
    let (st, log, _) = call("GET", &url("admin/audit"), Some(&admin), None);
    assert_eq!(st, 200, "{log}");
    s.stop();
    let got = access(&lake);
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|a| {
            (
                a["via"].as_str().unwrap().to_string(),
                a["tenant"].as_str().unwrap().to_string(),
                a["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "api".to_string(),
                "globex-002".to_string(),
                "GET /api/v1/usage/summary".to_string()
            ),
            (
                "api".to_string(),
                "acme-001".to_string(),
                "GET /api/v1/usage/events".to_string()
            ),
        ],
        "one record per read, none for the quota check or the refused read"
    );
    assert_eq!(got[0]["actor"], "tenant globex-002");
    assert_eq!(got[1]["actor"], "admin");
    let ids: Vec<&str> = got.iter().map(|a| a["key_id"].as_str().unwrap()).collect();
    assert!(
        ids.iter().all(|i| !i.is_empty()) && ids[0] != ids[1],
        "{ids:?}"
    );
    assert_eq!(log["records"], 2);
    assert_eq!(log["chain_intact"], true);
    assert_eq!(log["access"].as_array().unwrap().len(), 2);

    // CLI reads, with --actor or the OS user.
    ok(&[
        "invoice", "--lake", l, "--period", "2026-09", "--tenant", "acme-001", "--actor", "alice",
    ]);
    ok(&["alerts", "list", "--lake", l, "--tenant", "initech-003"]);
    let got = access(&lake);
    assert_eq!(got.len(), 4);
    assert_eq!(
        (
            &got[2]["actor"],
            &got[2]["via"],
            &got[2]["tenant"],
            &got[2]["what"]
        ),
        (
            &serde_json::json!("alice"),
            &serde_json::json!("cli"),
            &serde_json::json!("acme-001"),
            &serde_json::json!("invoice --period 2026-09")
        )
    );
    assert_eq!(got[3]["what"], "alerts list");
    assert!(got[3].get("key_id").is_none());
    let (intact, out) = verify(&lake);
    assert!(intact && out.contains("4 records"), "{out}");
    // The compliance report lists them (its own read, of all tenants, included).
    let dir = tempfile::tempdir().unwrap();
    let c = report_to(&lake, "compliance", &dir.path().join("c.json"), &[]);
    let rows = rows_of(&c, "access");
    let reads = |tenant: &str, actor: &str, via: &str| {
        rows.iter()
            .find(|r| r["tenant"] == tenant && r["actor"] == actor && r["via"] == via)
            .map(|r| r["reads"].as_i64().unwrap())
    };
    assert_eq!(reads("acme-001", "alice", "cli"), Some(1), "{rows:?}");
    assert_eq!(reads("globex-002", "tenant globex-002", "api"), Some(1));
    assert_eq!(reads("acme-001", "admin", "api"), Some(1));
    assert_eq!(
        rows.iter()
            .map(|r| r["reads"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );
    let chain = c["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "Access log")
        .unwrap();
    assert_eq!(chain["value"], "5 records, chain intact");

    // Tampering: a line removed, then a line altered.
    let path = lake.join("_audit/access.jsonl");
    let good = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
    let (intact, out) = verify(&lake);
    assert!(!intact && out.contains("line 2"), "{out}");
    std::fs::write(&path, good.replacen("alice", "mallory", 1)).unwrap();
    let (intact, out) = verify(&lake);
    assert!(
        !intact && out.contains("line 3") && out.contains("altered"),
        "{out}"
    );
}
