//! Insights: findings computed from the data, each with the numbers behind it. Nothing
//! here is canned text: a message is built from its evidence, and a finding appears only
//! when the data shows it.
//!
//! | kind | when |
//! |---|---|
//! | `fast_growth` | a tenant × meter grew ≥ 50 % against the previous period (both with ≥ 30 events) |
//! | `decline` | it fell ≥ 50 % (churn risk); `critical` when it stopped |
//! | `quota_reached` | the allowance is projected to be reached inside the period, or already was |
//! | `seasonality` | a tenant's busiest local hour carries ≥ 2× the mean hour, or weekdays ≥ 1.5× weekends |
//! | `anomalies` | high or critical incidents in the period (`critical` with fraud suspects) |
//! | `cheaper_plan` | another plan costs less for this period's projected usage and fits its caps |
//! | `cost_optimisation` | a dearer plan is cheaper in total than paying the overage |
//! | `unused_feature` | a feature used by under 10 % of monthly active users (≥ 10 MAU) |
//! | `inactive_users` | ≥ 20 % of known users inactive for 30 days (≥ 5 users) |
//! | `storage_growth` | storage grew ≥ 50 % in 30 days (≥ 1 GB now) |
//! | `idle_seats` | seat overage is paid for users active on a single day of the period |

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::{Insight, Severity};
use crate::billing::Billing;
use crate::billing::compare::cost_on;
use crate::billing::quota::{QuotaRow, Status};
use crate::usage::Engagement;

/// One tenant × meter over the report's period and the one before.
#[derive(Debug, Clone)]
pub struct Total {
    /// Tenant.
    pub tenant_id: String,
    /// Meter.
    pub meter: String,
    /// Unit of the meter.
    pub unit: String,
    /// Whether the meter's values add up over time (counts, sums).
    pub additive: bool,
    /// The period's value (none: a gauge or statistic without a reading in it).
    pub current: Option<f64>,
    /// The previous period's (likewise).
    pub previous: Option<f64>,
    /// Events in the period.
    pub events: f64,
    /// Events in the previous period.
    pub previous_events: f64,
}

impl Total {
    /// Change against the previous period, percent (none without a previous value).
    pub fn change_pct(&self) -> Option<f64> {
        let (c, p) = (self.current?, self.previous?);
        (p > 0.0).then(|| (c / p - 1.0) * 100.0)
    }
}

/// A tenant's activity by local hour of day and day of week (events).
#[derive(Debug, Clone)]
pub struct Rhythm {
    /// Tenant.
    pub tenant_id: String,
    /// The time zone the hours are in.
    pub zone: String,
    /// Events per local hour, 0-23.
    pub hours: [f64; 24],
    /// Events per local weekday, Monday first.
    pub days: [f64; 7],
    /// How much of each local weekday the period holds, in quarter hours (96 a whole day;
    /// a 30-day period has five of some weekdays and four of others, and part of a local
    /// day at each end). Whole numbers, so equal rates compare equal.
    pub exposure: [f64; 7],
}

impl Rhythm {
    /// The busiest hour and its ratio to the mean hour.
    pub fn peak_hour(&self) -> (usize, f64) {
        peak(&self.hours)
    }

    /// The busiest weekday (0 = Monday) by events per such day, and its ratio to the mean.
    pub fn peak_day(&self) -> (usize, f64) {
        peak(&self.per_day())
    }

    /// Events per day of each weekday (0 for a weekday the period does not hold).
    pub fn per_day(&self) -> [f64; 7] {
        std::array::from_fn(|i| {
            if self.exposure[i] > 0.0 {
                self.days[i] * 96.0 / self.exposure[i]
            } else {
                0.0
            }
        })
    }

    /// Events per weekday (Monday to Friday) over events per weekend day; none when the
    /// period holds no weekend day or no weekday, infinite without weekend events.
    pub fn weekday_weekend_ratio(&self) -> Option<f64> {
        let per = |r: std::ops::Range<usize>| {
            let days: f64 = self.exposure[r.clone()].iter().sum();
            (days > 0.0).then(|| self.days[r].iter().sum::<f64>() / days)
        };
        let (weekday, weekend) = (per(0..5)?, per(5..7)?);
        Some(if weekend > 0.0 {
            weekday / weekend
        } else {
            f64::INFINITY
        })
    }
}

fn peak(v: &[f64]) -> (usize, f64) {
    let total: f64 = v.iter().sum();
    let (i, max) = v
        .iter()
        .enumerate()
        .fold((0, f64::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a });
    let mean = total / v.len() as f64;
    (i, if mean > 0.0 { max / mean } else { 0.0 })
}

/// Weekday names, Monday first.
pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An anomaly incident, as insights need it.
#[derive(Debug, Clone)]
pub struct IncidentFact {
    /// Tenant.
    pub tenant_id: String,
    /// Meter.
    pub meter: String,
    /// `low` to `critical`.
    pub severity: String,
    /// Risk 0-100.
    pub risk: f64,
    /// Abuse patterns fired.
    pub fraud_suspect: bool,
}

pub use crate::billing::seats::SeatUse;

/// What insights are computed from; absent parts skip their kinds.
#[derive(Default)]
pub struct Facts<'a> {
    /// Period totals.
    pub totals: &'a [Total],
    /// Quotas (with projections for `quota_reached` dates).
    pub quotas: &'a [QuotaRow],
    /// Plans, for the plan comparisons.
    pub billing: Option<&'a Billing>,
    /// Activity rhythms.
    pub rhythms: &'a [Rhythm],
    /// Incidents in the period.
    pub incidents: &'a [IncidentFact],
    /// Engagement per tenant.
    pub engagement: &'a [Engagement],
    /// Seat use of tenants paying seat overage.
    pub seats: &'a [SeatUse],
}

/// Minimum events in both periods for a growth or decline finding.
pub const MIN_EVENTS: f64 = 30.0;

fn ev(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), super::round(*v, 4)))
        .collect()
}

fn insight(
    kind: &str,
    tenant: Option<&str>,
    meter: Option<&str>,
    severity: Severity,
    message: String,
    evidence: BTreeMap<String, f64>,
) -> Insight {
    Insight {
        kind: kind.into(),
        tenant_id: tenant.map(str::to_string),
        meter: meter.map(str::to_string),
        severity,
        message,
        evidence,
    }
}

fn dec(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// Every finding, most severe first (then by kind, tenant and meter: deterministic).
pub fn compute(f: &Facts) -> Vec<Insight> {
    let mut out = Vec::new();
    growth(f, &mut out);
    quotas(f, &mut out);
    seasonality(f, &mut out);
    anomalies(f, &mut out);
    plans(f, &mut out);
    engagement(f, &mut out);
    idle_seats(f, &mut out);
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.meter.cmp(&b.meter))
    });
    out
}

fn growth(f: &Facts, out: &mut Vec<Insight>) {
    for t in f.totals.iter().filter(|t| t.additive) {
        if t.previous_events < MIN_EVENTS {
            continue;
        }
        let Some(pct) = t.change_pct() else { continue };
        // Additive: both periods have a value (0 without events).
        let (current, previous) = (t.current.unwrap_or(0.0), t.previous.unwrap_or(0.0));
        let evidence = ev(&[
            ("current", current),
            ("previous", previous),
            ("change_pct", pct),
            ("events", t.events),
            ("previous_events", t.previous_events),
        ]);
        if pct >= 50.0 && t.events >= MIN_EVENTS {
            out.push(insight(
                "fast_growth",
                Some(&t.tenant_id),
                Some(&t.meter),
                if pct >= 100.0 {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                format!(
                    "{} {} grew {:.0} % against the previous period ({} → {})",
                    t.tenant_id,
                    t.meter,
                    pct,
                    amount(previous, &t.unit),
                    amount(current, &t.unit)
                ),
                evidence,
            ));
        } else if pct <= -50.0 {
            let stopped = current == 0.0;
            out.push(insight(
                "decline",
                Some(&t.tenant_id),
                Some(&t.meter),
                if stopped {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                if stopped {
                    format!(
                        "{} stopped using {} (previous period {}): churn risk",
                        t.tenant_id,
                        t.meter,
                        amount(previous, &t.unit)
                    )
                } else {
                    format!(
                        "{} {} fell {:.0} % against the previous period ({} → {}): churn risk",
                        t.tenant_id,
                        t.meter,
                        -pct,
                        amount(previous, &t.unit),
                        amount(current, &t.unit)
                    )
                },
                evidence,
            ));
        }
    }
}

/// A quantity and its unit for a sentence: bytes in KB to TB, else the whole number with
/// thousands grouped (`1,234 calls`).
fn amount(v: f64, unit: &str) -> String {
    if unit == "bytes" {
        return super::table::human_bytes(v);
    }
    let whole = format!("{:.0}", v.abs());
    let sign = if v < 0.0 && whole != "0" { "-" } else { "" };
    format!("{sign}{} {unit}", super::table::group_thousands(&whole))
        .trim_end()
        .to_string()
}

fn quotas(f: &Facts, out: &mut Vec<Insight>) {
    for q in f.quotas {
        let (Some(inc), Some(pct)) = (q.included, q.percent) else {
            continue;
        };
        let mut evidence = ev(&[
            ("used", dec(q.used)),
            ("included", dec(inc)),
            ("percent", dec(pct)),
            ("overage_cost", dec(q.overage_cost)),
        ]);
        if matches!(q.status, Status::Exceeded | Status::Blocked) {
            out.push(insight(
                "quota_reached",
                Some(&q.tenant_id),
                Some(&q.meter),
                Severity::Critical,
                format!(
                    "{} has used {} of {} {} included on {} ({} %){}",
                    q.tenant_id,
                    q.used,
                    inc,
                    q.unit,
                    q.plan,
                    pct,
                    if q.status == Status::Blocked {
                        ": further usage is blocked".to_string()
                    } else {
                        format!(", overage so far {}", q.overage_cost)
                    }
                ),
                evidence,
            ));
        } else if let Some(p) = &q.projected
            && let Some(at) = &p.limit_at
        {
            evidence.insert("projected_usage".into(), dec(p.usage));
            evidence.insert("projected_cost".into(), dec(p.cost));
            out.push(insight(
                "quota_reached",
                Some(&q.tenant_id),
                Some(&q.meter),
                Severity::Warning,
                format!(
                    "{} is projected to reach its {} allowance ({} {}) on {} ({} % used now, {} projected by the period's end)",
                    q.tenant_id,
                    q.meter,
                    inc,
                    q.unit,
                    &at[..10.min(at.len())],
                    pct,
                    p.usage.round_dp(0)
                ),
                evidence,
            ));
        }
    }
}

fn seasonality(f: &Facts, out: &mut Vec<Insight>) {
    for r in f.rhythms {
        let total: f64 = r.hours.iter().sum();
        if total < 24.0 * 10.0 {
            continue;
        }
        let (h, hratio) = r.peak_hour();
        let week_ratio = r.weekday_weekend_ratio().unwrap_or(1.0);
        if hratio >= 2.0 || week_ratio >= 1.5 {
            let (d, _) = r.peak_day();
            out.push(insight(
                "seasonality",
                Some(&r.tenant_id),
                None,
                Severity::Info,
                format!(
                    "{} peaks at {:02}:00 {} ({:.1}× the mean hour), busiest on {}; weekdays carry {} the weekend's daily volume",
                    r.tenant_id,
                    h,
                    r.zone,
                    hratio,
                    WEEKDAYS[d],
                    if week_ratio.is_finite() {
                        format!("{week_ratio:.1}×")
                    } else {
                        "all of".into()
                    }
                ),
                ev(&[
                    ("peak_hour", h as f64),
                    ("peak_hour_ratio", hratio),
                    ("peak_weekday", d as f64),
                    ("weekday_weekend_ratio", if week_ratio.is_finite() { week_ratio } else { -1.0 }),
                    ("events", total),
                ]),
            ));
        }
    }
}

fn anomalies(f: &Facts, out: &mut Vec<Insight>) {
    let mut by: BTreeMap<(&str, &str), (usize, usize, f64, bool)> = BTreeMap::new();
    for i in f.incidents {
        if !matches!(i.severity.as_str(), "high" | "critical") {
            continue;
        }
        let e = by.entry((&i.tenant_id, &i.meter)).or_default();
        e.0 += 1;
        e.1 += usize::from(i.severity == "critical");
        e.2 = e.2.max(i.risk);
        e.3 |= i.fraud_suspect;
    }
    for ((t, m), (n, crit, risk, fraud)) in by {
        out.push(insight(
            "anomalies",
            Some(t),
            Some(m),
            if fraud || crit > 0 { Severity::Critical } else { Severity::Warning },
            format!(
                "{t} {m}: {n} high or critical anomal{} ({crit} critical), highest risk {risk:.0}{}",
                if n == 1 { "y" } else { "ies" },
                if fraud { "; abuse patterns (fraud suspect)" } else { "" }
            ),
            ev(&[
                ("incidents", n as f64),
                ("critical", crit as f64),
                ("max_risk", risk),
                ("fraud_suspect", f64::from(u8::from(fraud))),
            ]),
        ));
    }
}

fn plans(f: &Facts, out: &mut Vec<Insight>) {
    let Some(b) = f.billing else { return };
    let mut by_tenant: BTreeMap<&str, Vec<&QuotaRow>> = BTreeMap::new();
    for q in f.quotas {
        by_tenant.entry(&q.tenant_id).or_default().push(q);
    }
    for (tenant, rows) in by_tenant {
        let plan_id = &rows[0].plan;
        let Some(current) = b.catalog.plan(plan_id) else {
            continue;
        };
        // The period's usage as projected to its end (what the invoice will bill).
        let usage: BTreeMap<String, Decimal> = rows
            .iter()
            .map(|q| {
                let u = q.projected.as_ref().map_or(q.used, |p| p.usage.max(q.used));
                (q.meter.clone(), u)
            })
            .collect();
        let (now_cost, _) = cost_on(&b.catalog, current, &usage);
        let mut best: Option<(&str, Decimal, Decimal)> = None;
        for p in b.catalog.plans.values().filter(|p| p.id != *plan_id) {
            let (c, over) = cost_on(&b.catalog, p, &usage);
            if over.is_empty() && c < now_cost && best.is_none_or(|x| c < x.1) {
                best = Some((&p.id, c, p.base_fee));
            }
        }
        let Some((other, cost, base)) = best else {
            continue;
        };
        let saving = now_cost - cost;
        let dearer = base > current.base_fee;
        let cur = &b.catalog.currency;
        out.push(insight(
            if dearer { "cost_optimisation" } else { "cheaper_plan" },
            Some(tenant),
            None,
            if dearer { Severity::Warning } else { Severity::Info },
            if dearer {
                format!(
                    "{tenant} pays overage on {plan_id}: {other} would cost {cost} {cur} instead of {now_cost} {cur} this period (saves {saving} {cur})"
                )
            } else {
                format!(
                    "{tenant} would pay {cost} {cur} on {other} instead of {now_cost} {cur} on {plan_id} for this period's projected usage (saves {saving} {cur})"
                )
            },
            ev(&[
                ("current_cost", dec(now_cost)),
                ("alternative_cost", dec(cost)),
                ("saving", dec(saving)),
            ]),
        ));
    }
}

fn engagement(f: &Facts, out: &mut Vec<Insight>) {
    for e in f.engagement {
        let t = e.tenant_id.as_str();
        if e.mau >= 10 {
            for fa in e.feature_adoption.iter().filter(|fa| fa.adoption < 0.1) {
                out.push(insight(
                    "unused_feature",
                    Some(t),
                    None,
                    Severity::Info,
                    format!(
                        "{t}: feature {} is used by {} of {} monthly active users ({:.0} %)",
                        fa.feature,
                        fa.users,
                        e.mau,
                        fa.adoption * 100.0
                    ),
                    ev(&[
                        ("users", fa.users as f64),
                        ("mau", e.mau as f64),
                        ("adoption", fa.adoption),
                    ]),
                ));
            }
        }
        if e.inactive_users >= 5 && e.inactive_users as f64 >= 0.2 * e.known_users as f64 {
            out.push(insight(
                "inactive_users",
                Some(t),
                None,
                Severity::Info,
                format!(
                    "{t}: {} of {} known users have been inactive for 30 days",
                    e.inactive_users, e.known_users
                ),
                ev(&[
                    ("inactive_users", e.inactive_users as f64),
                    ("known_users", e.known_users as f64),
                    ("mau", e.mau as f64),
                ]),
            ));
        }
        if let (Some(now), Some(before)) = (e.storage_now, e.storage_30d_ago)
            && now >= 1e9
            && before > 0.0
            && now >= 1.5 * before
        {
            out.push(insight(
                "storage_growth",
                Some(t),
                Some("storage_bytes"),
                if now >= 3.0 * before {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                format!(
                    "{t}: storage grew {:.0} % in 30 days, to {:.2} GB",
                    (now / before - 1.0) * 100.0,
                    now / 1e9
                ),
                ev(&[("storage_now", now), ("storage_30d_ago", before)]),
            ));
        }
    }
}

fn idle_seats(f: &Facts, out: &mut Vec<Insight>) {
    for s in f.seats {
        if s.one_day_users == 0 || s.over <= Decimal::ZERO || s.cost <= s.cost_without {
            continue;
        }
        let saving = s.cost - s.cost_without;
        out.push(insight(
            "idle_seats",
            Some(&s.tenant_id),
            Some(&s.meter),
            Severity::Info,
            format!(
                "{}: {} of the {} seats billed this period are users active on a single day; {} of overage ({} over the allowance) pays for them",
                s.tenant_id, s.one_day_users, s.billed, saving, s.over
            ),
            ev(&[
                ("billed_seats", s.billed as f64),
                ("one_day_users", s.one_day_users as f64),
                ("seats_over_allowance", dec(s.over)),
                ("overage_cost", dec(s.cost)),
                ("overage_cost_without_them", dec(s.cost_without)),
            ]),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(t: &str, current: f64, previous: f64, events: f64, previous_events: f64) -> Total {
        Total {
            tenant_id: t.into(),
            meter: "api_calls".into(),
            unit: "calls".into(),
            additive: true,
            current: Some(current),
            previous: Some(previous),
            events,
            previous_events,
        }
    }

    #[test]
    fn growth_and_decline_need_volume_and_size() {
        let totals = [
            total("grows", 300.0, 100.0, 300.0, 100.0),
            total("grows_a_little", 140.0, 100.0, 140.0, 100.0),
            total("falls", 40.0, 100.0, 40.0, 100.0),
            total("stopped", 0.0, 100.0, 0.0, 100.0),
            total("tiny", 50.0, 5.0, 50.0, 5.0),
        ];
        let out = compute(&Facts {
            totals: &totals,
            ..Facts::default()
        });
        let kinds: Vec<(&str, &str, Severity)> = out
            .iter()
            .map(|i| (i.kind.as_str(), i.tenant_id.as_deref().unwrap(), i.severity))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("decline", "stopped", Severity::Critical),
                ("decline", "falls", Severity::Warning),
                ("fast_growth", "grows", Severity::Warning),
            ]
        );
        let g = &out[2];
        assert_eq!(g.evidence["change_pct"], 200.0);
        assert!(g.message.contains("grew 200 %"), "{}", g.message);
    }

    #[test]
    fn seasonality_reads_the_local_rhythm() {
        let mut hours = [10.0; 24];
        hours[14] = 60.0;
        let days = [100.0, 100.0, 100.0, 100.0, 100.0, 20.0, 20.0];
        let r = Rhythm {
            tenant_id: "t".into(),
            zone: "Europe/Berlin".into(),
            hours,
            days,
            exposure: [96.0; 7],
        };
        let out = compute(&Facts {
            rhythms: std::slice::from_ref(&r),
            ..Facts::default()
        });
        assert_eq!(out.len(), 1);
        let i = &out[0];
        assert_eq!(i.evidence["peak_hour"], 14.0);
        // 60 / mean(23 × 10 + 60) / 24.
        assert!((i.evidence["peak_hour_ratio"] - 60.0 / (290.0 / 24.0)).abs() < 1e-3);
        assert_eq!(i.evidence["weekday_weekend_ratio"], 5.0);
        assert!(i.message.contains("14:00 Europe/Berlin"));
        // A flat rhythm says nothing.
        let flat = Rhythm {
            hours: [10.0; 24],
            days: [10.0; 7],
            ..r
        };
        assert!(
            compute(&Facts {
                rhythms: std::slice::from_ref(&flat),
                ..Facts::default()
            })
            .is_empty()
        );
        // Nine days from a Saturday: two Saturdays and Sundays, one of each weekday; 200
        // events a weekday, 100 a weekend day: weekdays carry 2x (not 1x, as counting 5
        // weekdays and 2 weekend days would say), and Monday's one day beats Saturday's two.
        let nine = Rhythm {
            days: [200.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0],
            exposure: [96.0, 96.0, 96.0, 96.0, 96.0, 192.0, 192.0],
            ..flat
        };
        assert_eq!(nine.weekday_weekend_ratio(), Some(2.0));
        assert_eq!(nine.peak_day().0, 0);
    }

    #[test]
    fn idle_seats_price_the_seats_of_one_day_users() {
        let seats = [SeatUse {
            tenant_id: "t".into(),
            meter: "users".into(),
            billed: 15,
            over: Decimal::from(5),
            one_day_users: 3,
            cost_without: Decimal::from(10),
            cost: Decimal::from(25),
        }];
        let out = compute(&Facts {
            seats: &seats,
            ..Facts::default()
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence["overage_cost_without_them"], 10.0);
        assert!(
            out[0].message.contains("3 of the 15 seats"),
            "{}",
            out[0].message
        );
        assert!(
            out[0].message.contains("15 of overage"),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn anomalies_group_per_series_and_fraud_is_critical() {
        let inc = |sev: &str, risk: f64, fraud: bool| IncidentFact {
            tenant_id: "t".into(),
            meter: "api_calls".into(),
            severity: sev.into(),
            risk,
            fraud_suspect: fraud,
        };
        let incs = [
            inc("high", 70.0, false),
            inc("low", 20.0, false),
            inc("high", 80.0, true),
        ];
        let out = compute(&Facts {
            incidents: &incs,
            ..Facts::default()
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::Critical);
        assert_eq!(out[0].evidence["incidents"], 2.0);
        assert_eq!(out[0].evidence["max_risk"], 80.0);
    }
}
