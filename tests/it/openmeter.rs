//! OpenMeter's API and meter definitions: CloudEvents with nested `data` metered by
//! `value_property` in the batch path (ingest + rollup), and `meterlake serve`'s
//! `/api/v1/events` and `/api/v1/meters/{slug}/query` edges, each checked against a fold
//! over the events sent. (The official SDKs run against the server in tests/openmeter.sh.)

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{ingest, ok, read_lake, read_rollup, write};
use crate::serve::{Server, agent, call, declared_body, key};

const METERS: &str = r#"
[[meter]]
name = "tokens"
event = "prompt"
aggregation = "sum"
value_property = "$.usage.tokens"
group_by = { model = "$.model" }

[[meter]]
name = "peak_tokens"
event = "prompt"
aggregation = "max"
value_property = "$['usage']['tokens']"

[[meter]]
name = "prompts"
event = "prompt"
aggregation = "count"
"#;

/// One generated prompt: (id, tenant, µs, tokens, model).
type Prompt = (String, String, i64, i64, Option<&'static str>);

/// `n` prompts over the `hours` hours from `start` (µs), deterministic.
fn prompts(n: usize, start: i64, hours: i64) -> Vec<Prompt> {
    let models = [Some("gpt"), Some("claude"), None];
    (0..n)
        .map(|i| {
            let x = (i as i64 * 7919 + 13) % 100_003;
            (
                format!("p{i}"),
                ["acme-001", "globex-002"][i % 2].to_string(),
                start + (x * 36_000_000 * hours / 1000) % (hours * 3_600_000_000),
                1 + (x * 31) % 4000,
                models[i % 3],
            )
        })
        .collect()
}

fn cloudevent(p: &Prompt, with_time: bool) -> String {
    let model =
        p.4.map(|m| format!(r#","model":"{m}""#))
            .unwrap_or_default();
    let time = if with_time {
        format!(
            r#","time":"{}""#,
            chrono::DateTime::from_timestamp_micros(p.2)
                .unwrap()
                .to_rfc3339()
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"specversion":"1.0","id":"{}","source":"app","type":"prompt","subject":"{}"{time},"data":{{"usage":{{"tokens":{},"cache":{{"hit":false}}}}{model}}}}}"#,
        p.0, p.1, p.3
    )
}

#[test]
fn cloudevents_with_nested_data_meter_by_value_property_in_batch_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let meters = write(dir.path(), "meters.toml", METERS);
    // Three days of October 2026.
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-05T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    let ps = prompts(900, start, 72);
    let lines: Vec<String> = ps.iter().map(|p| cloudevent(p, true)).collect();
    let file = write(dir.path(), "events.ndjson", &(lines.join("\n") + "\n"));
    let r = ingest(&lake, &[&file], &[]);
    assert_eq!(r["accepted"], 900, "nested data is never refused: {r}");
    // The properties hold the flattened keys.
    let rows = read_lake(&lake);
    let p: serde_json::Value = serde_json::from_str(&rows[0].props).unwrap();
    assert!(p.get("usage.tokens").is_some() && p.get("usage.cache.hit").is_some());

    ok(&[
        "rollup",
        "--lake",
        lake.to_str().unwrap(),
        "--meters",
        meters.to_str().unwrap(),
        "--granularity",
        "day",
        "--quiet",
    ]);
    let got = read_rollup(
        &lake.join("rollups/granularity=day/by=none/tz=UTC"),
        &["tenant_id".to_string(), "meter".to_string()],
    );
    // The fold: per (tenant, meter, day).
    let mut want: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    let day = 86_400_000_000i64;
    for (_, t, ts, tokens, _) in &ps {
        let d = ts.div_euclid(day) * day;
        *want.entry((t.clone(), "tokens".into(), d)).or_default() += *tokens as f64;
        *want.entry((t.clone(), "prompts".into(), d)).or_default() += 1.0;
        let m = want
            .entry((t.clone(), "peak_tokens".into(), d))
            .or_default();
        *m = m.max(*tokens as f64);
    }
    let got: BTreeMap<(String, String, i64), f64> = got
        .into_iter()
        .map(|((k, ws), (_, v, _))| ((k[0].clone().unwrap(), k[1].clone().unwrap(), ws), v))
        .collect();
    assert_eq!(got, want);
}

/// (status, content type, JSON body, Retry-After) of a request with this content type.
fn send(
    method: &str,
    url: &str,
    key: Option<&str>,
    ctype: &str,
    body: &str,
) -> (u16, String, serde_json::Value, Option<String>) {
    let a = agent();
    let mut res = match method {
        "GET" => {
            let mut r = a.get(url);
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.call()
        }
        _ => {
            let mut r = a.post(url).header("Content-Type", ctype);
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.send(body)
        }
    }
    .unwrap();
    let status = res.status().as_u16();
    let header = |n: &str| {
        res.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (ct, retry) = (
        header("content-type").unwrap_or_default(),
        header("retry-after"),
    );
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        retry,
    )
}

/// Asserts a problem+json refusal: status, the field it names, and the RFC 9457 members.
fn assert_problem(r: (u16, String, serde_json::Value, Option<String>), status: u16, field: &str) {
    let (st, ct, body, _) = r;
    assert_eq!(st, status, "{body}");
    assert_eq!(ct, "application/problem+json", "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["field"].as_str(), Some(field), "{body}");
}

fn config(dir: &Path, lake: &Path) -> std::path::PathBuf {
    let meters = write(dir, "meters.toml", METERS);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    write(
        dir,
        "meterlake.toml",
        &format!(
            "[paths]\nlake = {:?}\nplans = {:?}\ntenants = {:?}\nmeters = {:?}\n",
            lake,
            repo.join("data/plans.toml"),
            repo.join("data/tenants.csv"),
            meters
        ),
    )
}

#[test]
fn openmeter_ingest_and_query_edges() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let cfg = config(dir.path(), &lake);
    let admin = key(&lake, None);
    let acme = key(&lake, Some("acme-001"));
    let s = Server::start(
        &lake,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--flush-ms",
            "600000",
            "--rate",
            "1000",
            "--burst",
            "1000",
            "--body-limit-mib",
            "1",
        ],
    );
    let events = format!("{}/api/v1/events", s.base);
    // Ten minutes of prompts, an hour ago, whole minutes apart from the query's bounds.
    let now = chrono::Utc::now().timestamp_micros();
    let start = (now - 3_600_000_000) / 60_000_000 * 60_000_000;
    let ps = prompts(300, start, 1)
        .into_iter()
        .map(|mut p| {
            p.2 = start + (p.2 - start) % 600_000_000;
            p
        })
        .collect::<Vec<_>>();
    let batch = |ps: &[Prompt]| {
        format!(
            "[{}]",
            ps.iter()
                .map(|p| cloudevent(p, true))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    // One event, a batch, a resend: 204 with an empty body each time.
    let one = cloudevent(&ps[0], true);
    for (ctype, body) in [
        ("application/cloudevents+json", one.clone()),
        ("application/cloudevents-batch+json", batch(&ps[1..150])),
        ("application/json", batch(&ps[150..])),
        ("application/json", batch(&ps[100..200])),
    ] {
        let (st, _, b, _) = send("POST", &events, Some(&admin), ctype, &body);
        assert_eq!((st, b), (204, serde_json::Value::String(String::new())));
    }
    // Refusals: problem+json naming the field; nothing stored.
    let e = &ps[0];
    for (ctype, body, status, field) in [
        ("text/plain", one.clone(), 400, "Content-Type"),
        ("application/cloudevents+json", batch(&ps[..2]), 400, "body"),
        (
            "application/cloudevents-batch+json",
            "[]".into(),
            400,
            "body",
        ),
        (
            "application/json",
            one.replace(r#""subject":"acme-001","#, "")
                .replace(r#""subject":"globex-002","#, ""),
            400,
            "subject",
        ),
        (
            "application/json",
            one.replace(r#""specversion":"1.0","#, ""),
            400,
            "specversion",
        ),
        (
            "application/json",
            format!(
                r#"[{},{{"specversion":"1.0","id":"bad","source":"app","type":"prompt","subject":"acme-001","data":"x"}}]"#,
                cloudevent(&("new-1".into(), e.1.clone(), e.2, 5, None), true),
            ),
            400,
            "data",
        ),
    ] {
        assert_problem(
            send("POST", &events, Some(&admin), ctype, &body),
            status,
            field,
        );
    }
    assert_problem(
        send("POST", &events, None, "application/json", &one),
        401,
        "authorization",
    );
    // A tenant key: its own subject only.
    let other = ps.iter().find(|p| p.1 != "acme-001").unwrap();
    assert_problem(
        send(
            "POST",
            &events,
            Some(&acme),
            "application/json",
            &cloudevent(other, true),
        ),
        403,
        "subject",
    );
    // Over the body limit, and over the rate: the same problem shape.
    let many = format!("[{}]", vec!["{}"; 10_001].join(","));
    assert_problem(
        send("POST", &events, Some(&admin), "application/json", &many),
        413,
        "body",
    );
    // A declared body over --body-limit-mib is refused before it is read, in the same shape.
    let answer = declared_body(&s.base, "/api/v1/events", &admin, 2 << 20);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains(r#""field":"body""#), "{answer}");
    let mine: Vec<Prompt> = (0..1100)
        .map(|i| {
            (
                "r".to_string() + &i.to_string(),
                "acme-001".into(),
                start,
                1,
                None,
            )
        })
        .collect();
    let r = send(
        "POST",
        &events,
        Some(&acme),
        "application/json",
        &batch(&mine),
    );
    assert!(r.3.is_some(), "Retry-After on a 429");
    assert_problem(r, 429, "rate");
    // Minute windows, from the log (nothing is flushed yet), against a fold.
    let q = |path: &str, k: &str| {
        let (st, ct, body, _) = send(
            "GET",
            &format!("{}/api/v1/meters/{path}", s.base),
            Some(k),
            "",
            "",
        );
        assert_eq!(st, 200, "{body}");
        assert!(ct.starts_with("application/json"));
        body
    };
    let rfc = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let range = format!(
        "from={}&to={}",
        rfc(start).replace('+', "%2B"),
        rfc(start + 3_600_000_000)
    );
    let minute_fold = |keep: &dyn Fn(&Prompt) -> bool| {
        let mut w: BTreeMap<(String, String, Option<String>), f64> = BTreeMap::new();
        for p in ps.iter().filter(|p| keep(p)) {
            let m = p.2 / 60_000_000 * 60_000_000;
            *w.entry((rfc(m), p.1.clone(), p.4.map(str::to_string)))
                .or_default() += p.3 as f64;
        }
        w
    };
    let rows = |v: &serde_json::Value| -> BTreeMap<(String, String, Option<String>), f64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (
                        r["windowStart"].as_str().unwrap().to_string(),
                        r["subject"].as_str().unwrap_or("").to_string(),
                        r["groupBy"]["model"].as_str().map(str::to_string),
                    ),
                    r["value"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let before = q(
        &format!("tokens/query?{range}&windowSize=MINUTE&groupBy=subject&groupBy=model"),
        &admin,
    );
    assert_eq!(rows(&before), minute_fold(&|_| true));
    for r in before["data"].as_array().unwrap() {
        let (ws, we) = (
            r["windowStart"].as_str().unwrap(),
            r["windowEnd"].as_str().unwrap(),
        );
        let len = chrono::DateTime::parse_from_rfc3339(we).unwrap()
            - chrono::DateTime::parse_from_rfc3339(ws).unwrap();
        assert_eq!(len.num_seconds(), 60);
    }
    // A tenant key sees its own subject, filtered to one model.
    let mine = q(
        &format!(
            "tokens/query?{range}&windowSize=MINUTE&filterGroupBy%5Bmodel%5D=gpt&groupBy=model"
        ),
        &acme,
    );
    assert_eq!(
        rows(&mine),
        minute_fold(&|p: &Prompt| p.1 == "acme-001" && p.4 == Some("gpt"))
    );
    // After the flush the lake holds every event once, and the answer is the same.
    let (st, v, _) = call(
        "POST",
        &format!("{}/api/v1/usage/admin/flush", s.base),
        Some(&admin),
        None,
    );
    assert_eq!(st, 200, "{v}");
    let lake_rows = read_lake(&lake);
    assert_eq!(lake_rows.len(), ps.len());
    let after = q(
        &format!("tokens/query?{range}&windowSize=MINUTE&groupBy=subject&groupBy=model"),
        &admin,
    );
    assert_eq!(after["data"], before["data"]);
    // Bad queries name their parameter.
    for (path, status, field) in [
        ("tokens/query?windowSize=MINUTE", 400, "windowSize"),
        ("tokens/query?windowSize=WEEKS", 400, "windowSize"),
        (
            "tokens/query?windowTimeZone=Mars/Base",
            400,
            "windowTimeZone",
        ),
        ("tokens/query?groupBy=region", 400, "groupBy"),
        // A filter on a group the meter lacks is about the filter (no groupBy was sent).
        (
            "tokens/query?filterGroupBy%5Bregion%5D=eu",
            400,
            "filterGroupBy[region]",
        ),
        ("tokens/query?color=red", 400, "color"),
        ("tokens/query?from=yesterday", 400, "from"),
        ("nothing/query", 404, "meterIdOrSlug"),
        ("nothing", 404, "meterIdOrSlug"),
    ] {
        assert_problem(
            send(
                "GET",
                &format!("{}/api/v1/meters/{path}", s.base),
                Some(&admin),
                "",
                "",
            ),
            status,
            field,
        );
    }
    // A POST body cut short is about the body, not the field it broke off in.
    assert_problem(
        send(
            "POST",
            &format!("{}/api/v1/meters/tokens/query", s.base),
            Some(&admin),
            "application/json",
            r#"{"windowSize":"#,
        ),
        400,
        "body",
    );
    let doc = q("tokens", &admin);
    assert_eq!(doc["valueProperty"], "$.usage.tokens");
    let (_, _, api, _) = send(
        "GET",
        &format!("{}/api/v1/openapi.json", s.base),
        None,
        "",
        "",
    );
    for p in [
        "/api/v1/events",
        "/api/v1/meters",
        "/api/v1/meters/{meterIdOrSlug}",
        "/api/v1/meters/{meterIdOrSlug}/query",
    ] {
        assert!(api["paths"].get(p).is_some(), "{p} in the OpenAPI document");
    }
}

/// A billed meter reading `$.usage.tokens`: the batch quota, the invoice and the server's
/// live counters (measured from the lake, then added to by `/api/v1/events`) all bill the
/// tokens the events carry, not their count.
#[test]
fn billed_meters_read_a_value_property() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let plans = write(
        dir.path(),
        "plans.toml",
        r#"currency = "EUR"
[meters.tokens]
event = "prompt"
usage = "sum"
unit = "tokens"
value_property = "$.usage.tokens"

[plans.basic]
name = "Basic"
base_fee = "0"
[plans.basic.meters.tokens]
included = 100000
overage = { per_unit = "0.001" }
"#,
    );
    let tenants = write(
        dir.path(),
        "tenants.csv",
        "tenant_id,plan,time_zone\nacme-001,basic,UTC\nglobex-002,basic,UTC\n",
    );
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    let ps = prompts(600, start, 24 * 18);
    let lines: Vec<String> = ps.iter().map(|p| cloudevent(p, true)).collect();
    let file = write(dir.path(), "events.ndjson", &(lines.join("\n") + "\n"));
    ingest(&lake, &[&file], &[]);
    let acme: f64 = ps
        .iter()
        .filter(|p| p.1 == "acme-001")
        .map(|p| p.3 as f64)
        .sum();
    let (l, pl, te) = (
        lake.to_str().unwrap(),
        plans.to_str().unwrap(),
        tenants.to_str().unwrap(),
    );
    let q: serde_json::Value = serde_json::from_str(&ok(&[
        "quota",
        "--lake",
        l,
        "--plans",
        pl,
        "--tenants",
        te,
        "--at",
        "2026-10-20T00:00:00Z",
        "--tenant",
        "acme-001",
        "--output",
        "json",
    ]))
    .unwrap();
    let row = &q["quotas"][0];
    assert_eq!(row["meter"], "tokens");
    assert_eq!(
        row["used"].as_str().unwrap().parse::<f64>().unwrap(),
        acme,
        "{row}"
    );
    let inv: serde_json::Value = serde_json::from_str(&ok(&[
        "invoice",
        "--lake",
        l,
        "--plans",
        pl,
        "--tenants",
        te,
        "--period",
        "2026-10",
        "--tenant",
        "acme-001",
        "--output",
        "json",
    ]))
    .unwrap();
    let line = &inv["invoices"][0]["lines"][0];
    let num = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    assert_eq!(num(&line["usage"]), acme, "{line}");
    let overage = ((acme - 100_000.0).max(0.0) * 0.001 * 100.0).round() / 100.0;
    assert!(overage > 0.0);
    assert_eq!(num(&line["amount"]), overage, "{line}");

    // The server: counters measured from the lake, then each event adds its tokens.
    let cfg = write(
        dir.path(),
        "meterlake.toml",
        &format!("[paths]\nlake = {l:?}\nplans = {pl:?}\ntenants = {te:?}\n"),
    );
    let k = key(&lake, Some("acme-001"));
    let s = Server::start_env(
        &lake,
        &["--config", cfg.to_str().unwrap()],
        &[("MLK_NOW", "2026-10-20T00:00:00Z")],
    );
    let used = || {
        let (st, v, _) = call(
            "GET",
            &format!("{}/api/v1/usage/check-quota/tokens?quantity=0", s.base),
            Some(&k),
            None,
        );
        assert_eq!(st, 200, "{v}");
        v["used"].as_str().unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(used(), acme);
    let more = [
        (
            "live-1".to_string(),
            "acme-001".to_string(),
            start + 86_400_000_000,
            1234,
            None,
        ),
        (
            "live-2".to_string(),
            "acme-001".to_string(),
            start + 86_400_000_000,
            766,
            Some("gpt"),
        ),
    ];
    let body = format!(
        "[{},{}]",
        cloudevent(&more[0], true),
        cloudevent(&more[1], true)
    );
    let (st, _, _, _) = send(
        "POST",
        &format!("{}/api/v1/events", s.base),
        Some(&k),
        "application/json",
        &body,
    );
    assert_eq!(st, 204);
    assert_eq!(used(), acme + 2000.0);
}
