//! Notification rules on the sample's alerts, against a Slack stand-in: rules pick alerts
//! by severity, kind, tenant and plan (checked against a fold over the alert store and the
//! tenants file); quiet hours hold back a tenant's alerts by its own clock and release
//! them after; an alert two rules match goes out once per channel.
//! (E-mail, escalation and digests against a real SMTP server: `tests/notify.sh`.)

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

const CONFIG: &str = r#"
[notify.channels.chat]
kind = "slack"
url_env = "MLK_TEST_SLACK"

[[notify.rules]]
name = "enterprise-critical"
channels = ["chat"]
severities = ["critical"]
plans = ["enterprise"]

[[notify.rules]]
name = "pro-limits"
channels = ["chat"]
kinds = ["limit_exceeded"]
plans = ["professional"]
quiet_hours = "09:00-17:00"

[[notify.rules]]
name = "globex-limits"
channels = ["chat"]
kinds = ["limit_exceeded"]
tenants = ["globex-002"]
"#;

#[test]
fn rules_pick_alerts_quiet_hours_follow_the_tenant_and_overlaps_send_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&sample().lake, &lake);
    let l = lake.to_str().unwrap();
    let conf = write(dir.path(), "meterlake.toml", CONFIG);
    let slack = Receiver::start("/slack", Vec::new());
    let deliver = |at: &str| -> serde_json::Value {
        let o = std::process::Command::new(BIN)
            .args([
                "alerts",
                "deliver",
                "--lake",
                l,
                "--config",
                conf.to_str().unwrap(),
            ])
            .args(["--plans", PLANS, "--tenants", TENANTS, "--at", at])
            .env("MLK_TEST_SLACK", &slack.url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&ok(&[
        "alerts", "list", "--lake", l, "--all", "--output", "json",
    ]))
    .unwrap();
    // The fold: plans from the tenants file.
    let plans: BTreeMap<String, String> = std::fs::read_to_string(TENANTS)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    let pick = |pred: &dyn Fn(&serde_json::Value, &str) -> bool| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| pred(a, &plans[a["tenant_id"].as_str().unwrap()]))
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    let enterprise = pick(&|a, p| a["severity"] == "critical" && p == "enterprise");
    let pro = |t: &str| {
        pick(&|a, p| a["kind"] == "limit_exceeded" && p == "professional" && a["tenant_id"] == t)
    };
    assert!(!enterprise.is_empty());
    for t in ["globex-002", "wonka-008", "tyrell-009", "oscorp-012"] {
        assert!(!pro(t).is_empty(), "{t} has a limit alert in the sample");
    }
    // 20:00 UTC on Dec 1: globex-002 (UTC) 20:00, tyrell-009 (São Paulo, UTC−3) 17:00 (the
    // end is exclusive), oscorp-012 (Kolkata, UTC+5:30) 01:30 the next day: outside quiet
    // hours; wonka-008 (Bogotá, UTC−5) 15:00: inside, held back.
    let v = deliver("2026-12-01T20:00:00Z");
    let sent_now: BTreeSet<String> = enterprise
        .iter()
        .chain(&pro("globex-002"))
        .chain(&pro("tyrell-009"))
        .chain(&pro("oscorp-012"))
        .cloned()
        .collect();
    assert_eq!(v["sent"], sent_now.len(), "{v}");
    assert_eq!(v["deferred"], pro("wonka-008").len());
    // globex-002's limit alert matches pro-limits and globex-limits: one post.
    assert_eq!(v["covered"], pro("globex-002").len());
    let ids_in = |posts: &[Request]| -> BTreeSet<String> {
        let all: BTreeSet<String> = alerts
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        posts
            .iter()
            .flat_map(|r| {
                let body = r.1.clone();
                all.iter()
                    .filter(move |id| body.contains(id.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let posts = slack.accepted();
    assert_eq!(posts.len(), sent_now.len(), "one post per alert");
    assert_eq!(ids_in(&posts), sent_now);
    // 22:30 UTC: 17:30 in Bogotá, the quiet hours are over: wonka-008's alerts go out, and
    // nothing else.
    let v = deliver("2026-12-01T22:30:00Z");
    assert_eq!(v["sent"], pro("wonka-008").len(), "{v}");
    assert_eq!(v["deferred"], 0);
    assert_eq!(v["covered"], 0);
    let later = slack.accepted();
    assert_eq!(ids_in(&later[posts.len()..]), pro("wonka-008"));
}

/// The SMS channel against a stand-in for Twilio's Messages API (answering a 429 first):
/// critical alerts only, one text per alert and number with the alert's id, basic auth
/// with the account's SID and token, nothing texted twice.
#[test]
fn sms_texts_critical_alerts_once() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(&sample().lake, &lake);
    let l = lake.to_str().unwrap();
    let twilio = Receiver::start("", vec![429]);
    let conf = write(
        dir.path(),
        "meterlake.toml",
        &format!(
            "[notify.channels.pager]\nkind = \"sms\"\napi_url = \"{}\"\nto = [\"+15550001111\", \"+15550002222\"]\n\
             [[notify.rules]]\nname = \"page\"\nchannels = [\"pager\"]\ntenants = [\"acme-001\", \"globex-002\"]\n",
            twilio.url
        ),
    );
    let deliver = || -> serde_json::Value {
        let o = std::process::Command::new(BIN)
            .args([
                "alerts",
                "deliver",
                "--lake",
                l,
                "--config",
                conf.to_str().unwrap(),
            ])
            .args(["--plans", PLANS, "--tenants", TENANTS])
            .env("TWILIO_ACCOUNT_SID", "AC123")
            .env("TWILIO_AUTH_TOKEN", "tok")
            .env("TWILIO_FROM", "+15559990000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&ok(&[
        "alerts", "list", "--lake", l, "--all", "--output", "json",
    ]))
    .unwrap();
    // The fold: the two tenants' critical alerts (their warnings are not texted).
    let want: BTreeSet<String> = alerts
        .iter()
        .filter(|a| {
            a["severity"] == "critical"
                && ["acme-001", "globex-002"].contains(&a["tenant_id"].as_str().unwrap())
        })
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        alerts
            .iter()
            .any(|a| a["tenant_id"] == "acme-001" && a["severity"] == "warning")
    );
    let v = deliver();
    assert_eq!(v["sent"], want.len(), "{v}");
    let texts = twilio.accepted();
    assert_eq!(texts.len(), 2 * want.len(), "one text per alert and number");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:tok")
    );
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &texts {
        assert_eq!(
            header(r, ":request").unwrap(),
            "POST /2010-04-01/Accounts/AC123/Messages.json HTTP/1.1"
        );
        assert_eq!(header(r, "authorization").unwrap(), auth);
        let f: BTreeMap<String, String> = form_urlencoded::parse(r.1.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(f["From"], "+15559990000");
        assert!(f["Body"].chars().count() <= 320);
        let id = want
            .iter()
            .find(|id| f["Body"].contains(id.as_str()))
            .unwrap();
        got.entry(id.clone()).or_default().insert(f["To"].clone());
    }
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        got.values().all(|n| n.len() == 2),
        "both numbers, once each"
    );
    assert_eq!(
        twilio.requests().len(),
        texts.len() + 1,
        "the 429 was retried"
    );
    // A rerun texts nothing.
    let v = deliver();
    assert_eq!(v["sent"], 0, "{v}");
    assert_eq!(twilio.requests().len(), texts.len() + 1);
}
