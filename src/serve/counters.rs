//! In-memory usage counters per tenant × billed meter for the current period, so
//! `/check-quota` and the hard-cap check of `/track` answer without touching the lake.
//!
//! A counter is measured once from the lake plus the events logged but not yet committed
//! (while no flush runs, so nothing is counted twice or missed), then every tracked event
//! adds to it. A counter whose period has ended is measured afresh for the new one.
//!
//! Gauges follow billing's one rule ([`crate::billing::gauge`]): the level at the period's
//! start is the last reading before it, however old ([`gauge::carry_in`]), so a `max`
//! gauge's usage counts it ([`gauge::peak`]) and a `time_weighted` gauge keeps the
//! period's readings and averages them exactly as the invoice does
//! ([`gauge::time_weighted`]). Usage converts to decimals through the same saturating
//! conversion as billing ([`to_units`]): a value beyond the largest decimal (~7.9e28)
//! counts as [`Decimal::MAX`], never as 0, so it stays over every cap.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use polars::prelude::*;
use rust_decimal::Decimal;

use crate::billing::gauge::{self, Reading};
use crate::billing::measure::{Window, gauge_readings, round_qty, to_units, window_events};
use crate::billing::plans::{Tenant, UsageRule};
use crate::billing::quota::{CheckAnswer, Status, decide, overage, percent, status_of};
use crate::billing::{Billing, Terms};
use crate::error::Result;
use crate::lake::Lake;
use crate::serve::wal::Logged;
use crate::time::rfc3339;

/// One tenant × billed meter in one period.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// Period start (UTC µs).
    pub start: i64,
    /// Period end.
    pub end: i64,
    sum: f64,
    /// The highest reading inside the period.
    max: Option<f64>,
    /// The last reading before the period (its level at the start).
    carry: Option<Reading>,
    /// The last reading (inside the period, or else `carry`).
    latest: Option<Reading>,
    /// The period's readings, sorted by [`gauge::order`] (kept for `time_weighted` gauges).
    readings: Option<Vec<Reading>>,
    users: HashSet<String>,
}

impl Counter {
    fn new(start: i64, end: i64, rule: UsageRule) -> Counter {
        Counter {
            start,
            end,
            readings: (rule == UsageRule::TimeWeighted).then(Vec::new),
            ..Counter::default()
        }
    }

    fn add(&mut self, ts: i64, value: f64, user: Option<&str>) {
        self.latest = gauge::later(self.latest, Some((ts, value)));
        if ts < self.start {
            self.carry = gauge::later(self.carry, Some((ts, value)));
            return;
        }
        if ts >= self.end {
            return;
        }
        self.sum += value;
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        if let Some(r) = &mut self.readings {
            let at = r.partition_point(|x| gauge::order(x, &(ts, value)).is_le());
            r.insert(at, (ts, value));
        }
        if let Some(u) = user
            && !self.users.contains(u)
        {
            self.users.insert(u.to_string());
        }
    }
}

/// Counters of every tenant × billed meter (nested by tenant, so the hot paths look up by
/// borrowed names, without allocating).
#[derive(Debug, Default)]
pub struct Counters {
    map: HashMap<String, HashMap<String, Counter>>,
}

/// A quota line as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuotaLine {
    /// Billed meter.
    pub meter: String,
    /// Unit.
    pub unit: String,
    /// Usage so far.
    pub used: Decimal,
    /// Allowance (none: unlimited).
    pub included: Option<Decimal>,
    /// Percent of it.
    pub percent: Option<Decimal>,
    /// Status.
    pub status: Status,
    /// Whether a hard cap stops usage at the allowance.
    pub hard_cap: bool,
    /// Overage so far.
    pub overage_cost: Decimal,
    /// Period start (RFC 3339).
    pub period_start: String,
    /// Period end.
    pub period_end: String,
}

impl Counters {
    /// Whether the counters of `tenant` cover instant `at`.
    pub fn covers(&self, billing: &Billing, tenant: &str, at: i64) -> bool {
        let Some(t) = self.map.get(tenant) else {
            return false;
        };
        billing
            .catalog
            .meters
            .keys()
            .all(|m| t.get(m).is_some_and(|c| at >= c.start && at < c.end))
    }

    /// Measures the counters of `tenants` for the periods containing `at`, from the lake
    /// and the logged-but-uncommitted events. The caller holds the flush lock and the
    /// ingress lock, so the lake and `logged` do not change meanwhile.
    pub fn measure(
        &mut self,
        lake_dir: &Path,
        billing: &Billing,
        tenants: &[&Tenant],
        at: i64,
        logged: &[&Logged],
    ) -> Result<()> {
        let catalog = &billing.catalog;
        let mut fresh: HashMap<String, HashMap<String, Counter>> = HashMap::new();
        let mut windows = Vec::new();
        for t in tenants {
            let terms = Terms::at(catalog, t, at)?;
            let (start, end) = (terms.span.start, terms.span.end);
            let mine = fresh.entry(t.id.clone()).or_default();
            for (m, bm) in &catalog.meters {
                mine.insert(m.clone(), Counter::new(start, end, bm.usage));
            }
            windows.push(Window::new(&t.id, start, end));
        }
        if windows.is_empty() {
            return Ok(());
        }
        let lake = Lake::open(lake_dir)?;
        let mut events: Vec<String> = catalog.meters.values().map(|m| m.source()).collect();
        events.sort();
        events.dedup();
        // Each counter's lake meter, to set every counter reading it.
        let each = |fresh: &mut HashMap<String, HashMap<String, Counter>>,
                    tenant: &str,
                    lake_meter: &str,
                    f: &mut dyn FnMut(&mut Counter)| {
            for (name, bm) in &catalog.meters {
                if bm.source() == lake_meter
                    && let Some(c) = fresh.get_mut(tenant).and_then(|t| t.get_mut(name))
                {
                    f(c);
                }
            }
        };
        if let Some(joined) = window_events(&lake, None, events, &windows)? {
            let df = joined
                .clone()
                .group_by([col("tenant_id"), col("meter")])
                .agg([
                    col("value").sum().alias("sum"),
                    col("value").max().alias("max"),
                    col("value")
                        .sort_by([col("_ts"), col("value")], SortMultipleOptions::default())
                        .last()
                        .alias("last"),
                    col("_ts").max().alias("last_ts"),
                    col("user_id").drop_nulls().unique().alias("users"),
                ])
                .collect()?;
            let (t, m) = (df.column("tenant_id")?.str()?, df.column("meter")?.str()?);
            let f = |n: &str| -> Result<Float64Chunked> {
                Ok(df.column(n)?.cast(&DataType::Float64)?.f64()?.clone())
            };
            let (sum, max, last) = (f("sum")?, f("max")?, f("last")?);
            let last_ts = df.column("last_ts")?.cast(&DataType::Int64)?;
            let last_ts = last_ts.i64()?;
            let users = df.column("users")?.list()?;
            for i in 0..df.height() {
                let (tenant, meter) = (t.get(i).unwrap_or_default(), m.get(i).unwrap_or_default());
                let us: Vec<String> = users
                    .get_as_series(i)
                    .and_then(|s| {
                        s.str()
                            .ok()
                            .map(|c| c.iter().flatten().map(str::to_string).collect())
                    })
                    .unwrap_or_default();
                each(&mut fresh, tenant, meter, &mut |c| {
                    c.sum = sum.get(i).unwrap_or(0.0);
                    c.max = max.get(i);
                    c.latest = last_ts.get(i).zip(last.get(i));
                    c.users = us.iter().cloned().collect();
                });
            }
            for ((tenant, meter), r) in gauge_readings(&joined, catalog)? {
                each(&mut fresh, &tenant, &meter, &mut |c| {
                    if c.readings.is_some() {
                        c.readings = Some(r.clone());
                    }
                });
            }
        }
        // The level each gauge carries into the period, however old.
        let starts: Vec<(&str, i64)> = windows
            .iter()
            .map(|w| (w.tenant.as_str(), w.start))
            .collect();
        let carried = gauge::carry_in(&lake, &gauge::gauge_events(catalog), &starts)?;
        for ((tenant, meter), reading) in carried {
            each(&mut fresh, &tenant, &meter, &mut |c| {
                c.carry = Some(reading);
                c.latest = gauge::later(c.latest, Some(reading));
            });
        }
        for l in logged {
            add_to(&mut fresh, billing, l);
        }
        self.map.extend(fresh);
        Ok(())
    }

    /// Takes the counters of `tenants` from a fresh measurement.
    pub fn replace(&mut self, fresh: Counters, tenants: &[&Tenant]) {
        for t in tenants {
            self.map.remove(&t.id);
        }
        self.map.extend(fresh.map);
    }

    /// Adds logged events (to the counters of tenants measured).
    pub fn add_logged(&mut self, billing: &Billing, events: &[&Logged]) {
        for l in events {
            add_to(&mut self.map, billing, l);
        }
    }

    /// Adds tracked events.
    pub fn add(&mut self, billing: &Billing, events: &[Logged]) {
        for l in events {
            add_to(&mut self.map, billing, l);
        }
    }

    fn counter(&self, tenant: &str, meter: &str) -> Option<&Counter> {
        self.map.get(tenant)?.get(meter)
    }

    /// Billed usage so far at `at` and what a quantity adds to (the reading, for gauges).
    fn usage(&self, billing: &Billing, tenant: &str, meter: &str, at: i64) -> (Decimal, Decimal) {
        let bm = &billing.catalog.meters[meter];
        let Some(c) = self.counter(tenant, meter) else {
            return (Decimal::ZERO, Decimal::ZERO);
        };
        let units = |v: f64| to_units(v, bm.scale, bm.precision);
        let latest = units(c.latest.map_or(0.0, |l| l.1));
        match bm.usage {
            UsageRule::Sum => {
                let u = units(c.sum);
                (u, u)
            }
            UsageRule::Max => (
                gauge::peak(c.carry, c.max).map_or(Decimal::ZERO, units),
                latest,
            ),
            UsageRule::TimeWeighted => {
                let r = c.readings.as_deref().unwrap_or(&[]);
                (units(gauge::time_weighted(c.carry, r, c.start, at)), latest)
            }
            UsageRule::UniqueUsers => {
                let u = round_qty(Decimal::from(c.users.len() as u64) / bm.scale, bm.precision);
                (u, u)
            }
        }
    }

    /// May `tenant` consume `quantity` more of `meter` at `at`?
    pub fn check(
        &self,
        billing: &Billing,
        t: &Tenant,
        meter: &str,
        quantity: Decimal,
        at: i64,
    ) -> Result<CheckAnswer> {
        let tm = Terms::at(&billing.catalog, t, at)?;
        let (used, current) = self.usage(billing, &t.id, meter, at);
        decide(billing, &tm, t, meter, used, current, quantity)
    }

    /// Every billed meter's quota of `tenant` at `at`.
    pub fn quotas(&self, billing: &Billing, t: &Tenant, at: i64) -> Result<Vec<QuotaLine>> {
        let tm = Terms::at(&billing.catalog, t, at)?;
        let minor = billing.catalog.minor_units;
        Ok(billing
            .catalog
            .meters
            .iter()
            .map(|(name, bm)| {
                let (used, _) = self.usage(billing, &t.id, name, at);
                let a = tm.plan.allowance(name);
                let included = tm.included(name, bm.precision);
                let (_, cost) = overage(used, included, &a.limit, minor);
                QuotaLine {
                    meter: name.clone(),
                    unit: bm.unit.clone(),
                    used,
                    included,
                    percent: included
                        .filter(|i| *i > Decimal::ZERO)
                        .map(|i| round_qty(percent(used, i), 2)),
                    status: status_of(used, included, &a.limit, a.warning, a.critical),
                    hard_cap: matches!(a.limit, crate::billing::plans::Limit::HardCap),
                    overage_cost: cost,
                    period_start: rfc3339(tm.span.start),
                    period_end: rfc3339(tm.span.end),
                }
            })
            .collect())
    }
}

fn add_to(map: &mut HashMap<String, HashMap<String, Counter>>, billing: &Billing, l: &Logged) {
    let e = &l.event;
    let Some(t) = map.get_mut(&e.tenant_id) else {
        return;
    };
    for (name, bm) in &billing.catalog.meters {
        if let Some(v) = bm.value_of(e)
            && let Some(c) = t.get_mut(name)
        {
            c.add(e.ts, v, e.user_id.as_deref());
        }
    }
}
