//! The server's billing under absurd input, through the real binary: a value beyond the
//! largest decimal (~7.9e28) counts as that maximum, never as 0, so a hard cap stays shut;
//! a quantity that usage plus it would take beyond it is a 400 naming `quantity` (and
//! `check` exits 2 naming `--quantity`), never a panic.

use rust_decimal::Decimal;

use crate::common::*;
use crate::serve::{Server, call, events, key, lake_copy};

const HUGE: &str = "79228162514264337593543950335";

#[test]
fn a_value_beyond_the_largest_decimal_keeps_a_hard_cap_shut() {
    let (_d, lake) = lake_copy();
    let stark = key(&lake, Some("stark-006")); // free: 20 documents, hard cap
    let globex = key(&lake, Some("globex-002")); // professional: 500 documents, overage
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    let api = |p: &str| format!("{}/api/v1/usage{p}", s.base);
    // One event of 1e29 documents, accepted: the cap was not reached before it.
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let big = format!(
        r#"[{{"id":"huge","tenant_id":"stark-006","meter":"documents","value":1e29,"ts":"{ts}"}}]"#
    );
    let (st, v, _) = call("POST", &api("/track"), Some(&stark), Some(&big));
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(1)), "{v}");
    // It counts as the largest decimal, not as 0: the cap refuses from now on.
    let (st, v, _) = call(
        "GET",
        &api("/check-quota/documents?quantity=1"),
        Some(&stark),
        None,
    );
    assert_eq!((st, v["decision"].as_str()), (429, Some("blocked")), "{v}");
    assert_eq!(dec(&v["used"]), Decimal::MAX);
    let (st, v, _) = call(
        "POST",
        &api("/track"),
        Some(&stark),
        Some(&events("stark-006", "documents", "after-", 1)),
    );
    assert_eq!((st, v["field"].as_str()), (429, Some("meter")), "{v}");
    let (_, q, _) = call("GET", &api("/quotas"), Some(&stark), None);
    let docs = q["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["meter"] == "documents")
        .unwrap()
        .clone();
    assert_eq!(docs["status"], "blocked", "{docs}");
    assert_eq!(dec(&docs["used"]), Decimal::MAX);
    // A quantity that would take usage (3 documents) beyond the largest decimal: a 400
    // naming it, not a 500.
    let (st, v, _) = call(
        "POST",
        &api("/track"),
        Some(&globex),
        Some(&events("globex-002", "documents", "g-", 3)),
    );
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(3)), "{v}");
    let (st, v, _) = call(
        "GET",
        &api(&format!("/check-quota/documents?quantity={HUGE}")),
        Some(&globex),
        None,
    );
    assert_eq!((st, v["field"].as_str()), (400, Some("quantity")), "{v}");
    assert!(v["error"].as_str().unwrap().contains(HUGE), "{v}");
    // The server still answers.
    let (st, _, _) = call(
        "GET",
        &api("/check-quota/documents?quantity=1"),
        Some(&globex),
        None,
    );
    assert_eq!(st, 200);
    // From the lake, once flushed: `check` blocks stark-006, and refuses the quantity.
    s.stop();
    let l = lake.to_str().unwrap();
    let o = mlk(&[
        "check",
        "--lake",
        l,
        "--tenant",
        "stark-006",
        "--meter",
        "documents",
        "--quantity",
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (o.status.code(), v["decision"].as_str()),
        (Some(3), Some("blocked")),
        "{v}"
    );
    assert_eq!(dec(&v["used"]), Decimal::MAX);
    assert_rejected(
        "a quantity beyond the largest decimal",
        &[
            "check",
            "--lake",
            l,
            "--tenant",
            "globex-002",
            "--meter",
            "documents",
            "--quantity",
            HUGE,
        ],
        &["--quantity", HUGE],
    );
}
