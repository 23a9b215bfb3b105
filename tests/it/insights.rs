//! The insights of the sample's reports against folds over the lake's events (and, for
//! `anomalies`, over the detect stage's incidents file), with the rules of each kind
//! (src/report/insights.rs) restated here. Every finding a fold says is due must be in the
//! summary, with the same evidence and severity; every finding of any report must be due.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::common::*;

/// Every kind of insight there is; a report showing another one fails the test.
const KINDS: [&str; 11] = [
    "fast_growth",
    "decline",
    "quota_reached",
    "seasonality",
    "anomalies",
    "cheaper_plan",
    "cost_optimisation",
    "unused_feature",
    "inactive_users",
    "storage_growth",
    "idle_seats",
];

/// A finding the folds say is due: its severity and the evidence it must carry.
#[derive(Debug)]
struct Due {
    severity: &'static str,
    evidence: BTreeMap<&'static str, f64>,
}

/// (kind, tenant, meter or feature) -> the finding.
type Findings = BTreeMap<(&'static str, String, String), Due>;

fn due(severity: &'static str, evidence: &[(&'static str, f64)]) -> Due {
    Due {
        severity,
        evidence: evidence.iter().copied().collect(),
    }
}

/// data/tenants.csv: tenant -> (plan, zone).
fn tenants() -> BTreeMap<String, (String, Tz)> {
    std::fs::read_to_string(TENANTS)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect()
}

/// A billed meter of data/plans.toml: the lake meter it reads and how.
struct Billed {
    event: String,
    usage: String,
    scale: f64,
    precision: usize,
}

#[derive(Clone)]
enum Price {
    HardCap,
    PerUnit(Decimal),
    Package(Decimal, Decimal),
}

/// A plan's terms for one billed meter.
struct Terms {
    included: Decimal,
    price: Price,
}

fn money(v: &toml::Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

/// data/plans.toml, read here: billed meters, and (plan, meter) -> terms.
fn catalogue() -> (BTreeMap<String, Billed>, BTreeMap<(String, String), Terms>) {
    let t: toml::Value = toml::from_str(&std::fs::read_to_string(PLANS).unwrap()).unwrap();
    let meters = t["meters"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(name, m)| {
            let int = |k: &str, d: i64| m.get(k).and_then(|v| v.as_integer()).unwrap_or(d);
            let billed = Billed {
                event: m["event"].as_str().unwrap().to_string(),
                usage: m["usage"].as_str().unwrap().to_string(),
                scale: int("scale", 1) as f64,
                precision: int("precision", 0) as usize,
            };
            (name.clone(), billed)
        })
        .collect();
    let mut terms = BTreeMap::new();
    for (plan, p) in t["plans"].as_table().unwrap() {
        for (meter, m) in p["meters"].as_table().unwrap() {
            let price = if m.get("hard_cap").and_then(|h| h.as_bool()) == Some(true) {
                Price::HardCap
            } else if let Some(u) = m["overage"].get("per_unit") {
                Price::PerUnit(money(u))
            } else {
                let p = &m["overage"]["package"];
                Price::Package(
                    Decimal::from(p["size"].as_integer().unwrap()),
                    money(&p["price"]),
                )
            };
            let included = Decimal::from(m["included"].as_integer().unwrap());
            terms.insert((plan.clone(), meter.clone()), Terms { included, price });
        }
    }
    (meters, terms)
}

fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn num(d: Decimal) -> f64 {
    d.to_string().parse().unwrap()
}

/// A tenant × billed meter in the billing period holding `at`.
struct Quota {
    start: i64,
    used: Decimal,
    included: Decimal,
    /// Over the allowance, or at a hard cap.
    reached: bool,
    over: Decimal,
    cost: Decimal,
    price: Price,
}

/// Quotas at `at`, folded from the rows: calendar months of each tenant's zone (the
/// sample has no anchors and no plan changes), usage by the catalogue's rule.
fn quotas(rows: &[Row], at: i64) -> BTreeMap<(String, String), Quota> {
    let (meters, terms) = catalogue();
    let mut out = BTreeMap::new();
    for (tenant, (plan, tz)) in tenants() {
        let local = DateTime::<Utc>::from_timestamp_micros(at)
            .unwrap()
            .with_timezone(&tz);
        let start = tz
            .with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
            .earliest()
            .unwrap()
            .timestamp_micros();
        for (name, b) in &meters {
            let Some(t) = terms.get(&(plan.clone(), name.clone())) else {
                continue;
            };
            let ev: Vec<&Row> = rows
                .iter()
                .filter(|r| r.tenant == tenant && r.meter == b.event)
                .filter(|r| r.ts >= start && r.ts < at)
                .collect();
            let raw = match b.usage.as_str() {
                "sum" => ev.iter().map(|r| r.value).sum(),
                // The level the period starts at (the last reading before it, however
                // old) counts as well as the readings inside it.
                "max" => {
                    let theirs: Vec<&Row> = rows.iter().filter(|r| r.tenant == tenant).collect();
                    let carried = latest_reading(&theirs, &b.event, start).unwrap_or(0.0);
                    ev.iter().map(|r| r.value).fold(carried, f64::max)
                }
                "unique_users" => ev
                    .iter()
                    .filter_map(|r| r.user.as_ref())
                    .collect::<BTreeSet<_>>()
                    .len() as f64,
                other => panic!("usage rule {other} is not in the sample's catalogue"),
            };
            let used: Decimal = format!("{:.*}", b.precision, raw / b.scale)
                .parse()
                .unwrap();
            let over = (used - t.included).max(Decimal::ZERO);
            let (reached, cost) = match &t.price {
                Price::HardCap => (used >= t.included, Decimal::ZERO),
                Price::PerUnit(p) => (used > t.included, cents(over * p)),
                Price::Package(size, p) => (used > t.included, (over / size).ceil() * p),
            };
            out.insert(
                (tenant.clone(), name.clone()),
                Quota {
                    start,
                    used,
                    included: t.included,
                    reached,
                    over,
                    cost,
                    price: t.price.clone(),
                },
            );
        }
    }
    out
}

/// Value of a meter's events as data/meters.toml aggregates the additive ones.
fn additive(meter: &str, rows: &[&Row]) -> Option<f64> {
    match meter {
        "api_calls" | "documents" => Some(rows.len() as f64),
        "ai_tokens" | "ingest_bytes" => Some(rows.iter().map(|r| r.value).sum()),
        _ => None,
    }
}

/// fast_growth and decline: additive tenant × meter totals of the period against the one
/// before, both with at least 30 events.
fn growth(rows: &[Row], from: i64, to: i64, out: &mut Findings) {
    // (tenant, meter) -> (rows of the period, rows of the one before)
    let mut by: BTreeMap<(String, String), [Vec<&Row>; 2]> = BTreeMap::new();
    for r in rows {
        let e = by.entry((r.tenant.clone(), r.meter.clone())).or_default();
        if r.ts >= from && r.ts < to {
            e[0].push(r);
        } else if r.ts >= from - (to - from) && r.ts < from {
            e[1].push(r);
        }
    }
    for ((tenant, meter), [cur, prev]) in by {
        let (Some(c), Some(p)) = (additive(&meter, &cur), additive(&meter, &prev)) else {
            continue;
        };
        let (n, np) = (cur.len() as f64, prev.len() as f64);
        if np < 30.0 || p <= 0.0 {
            continue;
        }
        let pct = (c / p - 1.0) * 100.0;
        let evidence = [
            ("current", c),
            ("previous", p),
            ("change_pct", pct),
            ("events", n),
            ("previous_events", np),
        ];
        if pct >= 50.0 && n >= 30.0 {
            let sev = if pct >= 100.0 { "warning" } else { "info" };
            out.insert(("fast_growth", tenant, meter), due(sev, &evidence));
        } else if pct <= -50.0 {
            let sev = if c == 0.0 { "critical" } else { "warning" };
            out.insert(("decline", tenant, meter), due(sev, &evidence));
        }
    }
}

/// quota_reached, critical: over the allowance or at a hard cap (the warnings are
/// projections, checked apart).
fn reached(quotas: &BTreeMap<(String, String), Quota>, out: &mut Findings) {
    for ((tenant, meter), q) in quotas.iter().filter(|(_, q)| q.reached) {
        let evidence = [
            ("used", num(q.used)),
            ("included", num(q.included)),
            // Percent to 2 places, as quotas show it.
            (
                "percent",
                num(cents(q.used / q.included * Decimal::from(100))),
            ),
            ("overage_cost", num(q.cost)),
        ];
        out.insert(
            ("quota_reached", tenant.clone(), meter.clone()),
            due("critical", &evidence),
        );
    }
}

/// seasonality: each tenant's events of the period by local hour and weekday, weekdays per
/// day of that weekday the period holds in the tenant's zone (measured here by the minute).
fn seasonality(rows: &[Row], from: i64, to: i64, out: &mut Findings) {
    let zones = tenants();
    let mut by: BTreeMap<&str, ([f64; 24], [f64; 7])> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts >= from && r.ts < to) {
        let tz = zones.get(&r.tenant).map_or(Tz::UTC, |z| z.1);
        // The event's own local hour, also in a half-hour zone (oscorp-012, Asia/Kolkata).
        let local = DateTime::<Utc>::from_timestamp_micros(r.ts)
            .unwrap()
            .with_timezone(&tz);
        let e = by.entry(&r.tenant).or_insert(([0.0; 24], [0.0; 7]));
        e.0[local.hour() as usize] += 1.0;
        e.1[local.weekday().num_days_from_monday() as usize] += 1.0;
    }
    let exposure = |tz: Tz| {
        let mut days = [0.0; 7];
        let minute = 60_000_000;
        for t in (from..to).step_by(minute as usize) {
            let l = DateTime::<Utc>::from_timestamp_micros(t)
                .unwrap()
                .with_timezone(&tz);
            days[l.weekday().num_days_from_monday() as usize] += 1.0;
        }
        days
    };
    // The first busiest slot, and its ratio to the mean slot.
    let peak = |v: &[f64]| {
        let max = v.iter().copied().fold(f64::MIN, f64::max);
        let i = v.iter().position(|&x| x == max).unwrap();
        (i, max / (v.iter().sum::<f64>() / v.len() as f64))
    };
    for (tenant, (hours, days)) in by {
        let total: f64 = hours.iter().sum();
        if total < 240.0 {
            continue;
        }
        let (h, ratio) = peak(&hours);
        let ex = exposure(zones.get(tenant).map_or(Tz::UTC, |z| z.1));
        // Events per day (ex counts minutes): ties (wonka-008's 615 on 5 Wednesdays and 492
        // on 4 Fridays) go to the first weekday.
        let per_day: Vec<f64> = (0..7).map(|i| days[i] * 1440.0 / ex[i]).collect();
        let weekday = days[..5].iter().sum::<f64>() / ex[..5].iter().sum::<f64>();
        let weekend = days[5..].iter().sum::<f64>() / ex[5..].iter().sum::<f64>();
        let week = if weekend > 0.0 {
            weekday / weekend
        } else {
            f64::INFINITY
        };
        if ratio >= 2.0 || week >= 1.5 {
            let evidence = [
                ("peak_hour", h as f64),
                ("peak_hour_ratio", ratio),
                ("peak_weekday", peak(&per_day).0 as f64),
                (
                    "weekday_weekend_ratio",
                    if week.is_finite() { week } else { -1.0 },
                ),
                ("events", total),
            ];
            out.insert(
                ("seasonality", tenant.to_string(), String::new()),
                due("info", &evidence),
            );
        }
    }
}

/// anomalies: the detect stage's high and critical incidents overlapping the period, per
/// tenant × meter.
fn anomalies(incidents: &[IncidentRow], from: i64, to: i64, out: &mut Findings) {
    let mut by: BTreeMap<(&str, &str), (f64, f64, f64, bool)> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.start < to && i.end > from) {
        if i.severity != "high" && i.severity != "critical" {
            continue;
        }
        let e = by.entry((&i.tenant, &i.meter)).or_default();
        e.0 += 1.0;
        e.1 += f64::from(u8::from(i.severity == "critical"));
        e.2 = e.2.max(i.risk);
        e.3 |= i.fraud;
    }
    for ((t, m), (n, crit, risk, fraud)) in by {
        let sev = if fraud || crit > 0.0 {
            "critical"
        } else {
            "warning"
        };
        let evidence = [
            ("incidents", n),
            ("critical", crit),
            ("max_risk", risk),
            ("fraud_suspect", f64::from(u8::from(fraud))),
        ];
        out.insert(("anomalies", t.into(), m.into()), due(sev, &evidence));
    }
}

/// unused_feature, inactive_users and storage_growth: each tenant's users and storage as
/// of `at` (30 days back for activity and for the storage it is compared with).
fn engagement(rows: &[Row], at: i64, out: &mut Findings) {
    let mut by: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ts < at) {
        by.entry(&r.tenant).or_default().push(r);
    }
    for (t, mine) in by {
        let month = at - 30 * DAY;
        let users = |since: i64| -> BTreeSet<&str> {
            mine.iter()
                .filter(|r| r.ts >= since)
                .filter_map(|r| r.user.as_deref())
                .collect()
        };
        let (mau, known) = (users(month).len() as f64, users(i64::MIN).len() as f64);
        let mut features: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for r in mine.iter().filter(|r| r.ts >= month) {
            let p: serde_json::Value = serde_json::from_str(&r.props).unwrap();
            if let (Some(f), Some(u)) = (p["feature"].as_str(), &r.user) {
                features.entry(f.to_string()).or_default().insert(u);
            }
        }
        if mau >= 10.0 {
            for (f, u) in features {
                let adoption = u.len() as f64 / mau;
                if adoption < 0.1 {
                    let evidence = [
                        ("users", u.len() as f64),
                        ("mau", mau),
                        ("adoption", adoption),
                    ];
                    out.insert(("unused_feature", t.into(), f), due("info", &evidence));
                }
            }
        }
        let inactive = known - mau;
        if inactive >= 5.0 && inactive >= 0.2 * known {
            let evidence = [
                ("inactive_users", inactive),
                ("known_users", known),
                ("mau", mau),
            ];
            out.insert(
                ("inactive_users", t.into(), String::new()),
                due("info", &evidence),
            );
        }
        let storage = |until: i64| latest_reading(&mine, "storage_bytes", until);
        if let (Some(now), Some(before)) = (storage(at), storage(month))
            && now >= 1e9
            && before > 0.0
            && now >= 1.5 * before
        {
            let sev = if now >= 3.0 * before {
                "warning"
            } else {
                "info"
            };
            let evidence = [("storage_now", now), ("storage_30d_ago", before)];
            out.insert(
                ("storage_growth", t.into(), "storage_bytes".into()),
                due(sev, &evidence),
            );
        }
    }
}

/// idle_seats: tenants paying seat overage, and their users active on a single UTC day of
/// the billing period.
fn idle_seats(
    rows: &[Row],
    at: i64,
    quotas: &BTreeMap<(String, String), Quota>,
    out: &mut Findings,
) {
    for ((tenant, meter), q) in quotas {
        let &Price::PerUnit(price) = &q.price else {
            continue;
        };
        if meter != "users" || q.over <= Decimal::ZERO {
            continue;
        }
        let mut days: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for r in rows
            .iter()
            .filter(|r| &r.tenant == tenant && r.meter == "active_users")
        {
            if let Some(u) = &r.user
                && r.ts >= q.start
                && r.ts < at
            {
                days.entry(u).or_default().insert(r.ts.div_euclid(DAY));
            }
        }
        let one_day = days.values().filter(|d| d.len() == 1).count();
        let without = cents((q.over - Decimal::from(one_day)).max(Decimal::ZERO) * price);
        if one_day == 0 || q.cost <= without {
            continue;
        }
        let evidence = [
            ("billed_seats", days.len() as f64),
            ("one_day_users", one_day as f64),
            ("seats_over_allowance", num(q.over)),
            ("overage_cost", num(q.cost)),
            ("overage_cost_without_them", num(without)),
        ];
        out.insert(
            ("idle_seats", tenant.clone(), meter.clone()),
            due("info", &evidence),
        );
    }
}

/// Evidence is rounded to 4 decimals.
fn same(got: f64, want: f64) -> bool {
    (got - want).abs() <= 5e-5 + 1e-12 * want.abs()
}

/// The finding's key: its meter, or for unused_feature the feature its message names.
fn key(i: &serde_json::Value, due: &Findings) -> (&'static str, String, String) {
    let kind = KINDS
        .into_iter()
        .find(|k| i["kind"] == *k)
        .unwrap_or_else(|| panic!("an insight of an unknown kind: {i}"));
    let tenant = i["tenant_id"]
        .as_str()
        .unwrap_or_else(|| panic!("every insight names its tenant: {i}"))
        .to_string();
    let detail = match (kind, i["meter"].as_str()) {
        ("unused_feature", _) => due
            .keys()
            .filter(|k| k.0 == kind && k.1 == tenant)
            .map(|k| k.2.clone())
            .find(|f| {
                i["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("feature {f} "))
            })
            .unwrap_or_default(),
        (_, Some(m)) => m.to_string(),
        (_, None) => String::new(),
    };
    (kind, tenant, detail)
}

/// Checks one report's insights: each is due (or, for what no fold decides, consistent);
/// returns the keys it had.
fn check(
    report: &str,
    due: &Findings,
    quotas: &BTreeMap<(String, String), Quota>,
) -> BTreeSet<(&'static str, String, String)> {
    let r = report_json(report);
    let mut seen = BTreeSet::new();
    for i in r["insights"].as_array().unwrap() {
        let k = key(i, due);
        let what = format!("{report}: {i}");
        assert!(
            i["message"].as_str().unwrap().contains(&k.1),
            "{what}: the message names the tenant"
        );
        let ev = |name: &str| {
            i["evidence"][name]
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: no evidence {name}"))
        };
        match (k.0, i["severity"].as_str().unwrap()) {
            // A projection (the forecast's): the fold checks what it starts from.
            ("quota_reached", "warning") => {
                let q = &quotas[&(k.1.clone(), k.2.clone())];
                assert!(!q.reached, "{what}: the fold has it reached already");
                assert!(same(ev("used"), num(q.used)), "{what}: used {}", q.used);
                assert!(same(ev("included"), num(q.included)), "{what}");
                assert!(ev("projected_usage") >= num(q.included), "{what}");
            }
            // Plan comparisons price the projected usage: consistent, and saving.
            ("cheaper_plan" | "cost_optimisation", _) => {
                let saving = ev("current_cost") - ev("alternative_cost");
                assert!(saving > 0.0 && same(ev("saving"), saving), "{what}");
            }
            (kind, severity) => {
                let d = due
                    .get(&k)
                    .unwrap_or_else(|| panic!("{what}: not due by the fold ({kind})"));
                assert_eq!(severity, d.severity, "{what}: severity");
                for (name, want) in &d.evidence {
                    assert!(
                        same(ev(name), *want),
                        "{what}: {name} is {want} by the fold"
                    );
                }
            }
        }
        assert!(seen.insert(k), "{what}: twice");
    }
    seen
}

#[test]
fn insights_are_computed_from_the_data() {
    let s = sample();
    let rows = read_lake(&s.lake);
    let (from, to) = default_period(&rows);
    // Quotas and engagement are as of just after the last event.
    let at = rows.iter().map(|r| r.ts).max().unwrap() + 1;
    let quotas = quotas(&rows, at);
    let mut due = Findings::new();
    growth(&rows, from, to, &mut due);
    reached(&quotas, &mut due);
    seasonality(&rows, from, to, &mut due);
    anomalies(&read_incidents(&s.lake), from, to, &mut due);
    engagement(&rows, at, &mut due);
    idle_seats(&rows, at, &quotas, &mut due);
    // The sample shows most kinds, so most rules are exercised, not only their absence.
    let kinds: BTreeSet<&str> = due.keys().map(|k| k.0).collect();
    for k in [
        "fast_growth",
        "decline",
        "quota_reached",
        "seasonality",
        "anomalies",
        "unused_feature",
        "idle_seats",
    ] {
        assert!(kinds.contains(k), "the sample has {k} findings: {kinds:?}");
    }
    // The summary shows every finding that is due; the other reports a part of them.
    let summary = check("summary", &due, &quotas);
    let missing: Vec<_> = due.keys().filter(|k| !summary.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "due but not in the summary: {missing:?}"
    );
    for report in ["detailed", "forecast", "anomaly", "executive"] {
        check(report, &due, &quotas);
    }
}
