//! In-memory usage counters per tenant × billed meter for the current period, so
//! `/check-quota` and the hard-cap check of `/track` answer without touching the lake.
//!
//! A counter is measured once from the lake plus the events logged but not yet committed
//! (while no flush runs, so nothing is counted twice or missed), then every tracked event
//! adds to it. A counter whose period has ended is measured afresh for the new one.
//! Gauges billed as `time_weighted` are approximated by their latest reading here (the
//! invoice computes the exact average).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use polars::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

use crate::billing::measure::round_qty;
use crate::billing::plans::{Tenant, UsageRule};
use crate::billing::quota::{CheckAnswer, Status, decide, overage, status_of};
use crate::billing::{Billing, Terms};
use crate::error::Result;
use crate::lake::Lake;
use crate::serve::wal::Logged;
use crate::time::MICROS_PER_DAY;
use crate::time::rfc3339;

/// One tenant × billed meter in one period.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// Period start (UTC µs).
    pub start: i64,
    /// Period end.
    pub end: i64,
    sum: f64,
    max: Option<f64>,
    latest: Option<(i64, f64)>,
    users: HashSet<String>,
}

impl Counter {
    fn add(&mut self, ts: i64, value: f64, user: Option<&str>) {
        if self.latest.is_none_or(|(t, _)| ts >= t) {
            self.latest = Some((ts, value));
        }
        if ts < self.start || ts >= self.end {
            return;
        }
        self.sum += value;
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        if let Some(u) = user
            && !self.users.contains(u)
        {
            self.users.insert(u.to_string());
        }
    }
}

fn dec(v: f64) -> Decimal {
    Decimal::from_f64(v).unwrap_or_default()
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
        let (mut ids, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        for t in tenants {
            let terms = Terms::at(catalog, t, at)?;
            for m in catalog.meters.keys() {
                fresh.entry(t.id.clone()).or_default().insert(
                    m.clone(),
                    Counter {
                        start: terms.span.start,
                        end: terms.span.end,
                        ..Counter::default()
                    },
                );
            }
            ids.push(t.id.clone());
            starts.push(terms.span.start);
            ends.push(terms.span.end);
        }
        if ids.is_empty() {
            return Ok(());
        }
        let lake = Lake::open(lake_dir)?;
        let from = starts.iter().min().copied().unwrap_or(at) - 35 * MICROS_PER_DAY;
        let to = ends.iter().max().copied().unwrap_or(at);
        let events: Vec<String> = catalog.meters.values().map(|m| m.event.clone()).collect();
        if let Some(lf) = crate::lake::events_between(&lake, None, from, to)? {
            let win = df!("tenant_id" => ids, "_start" => starts, "_end" => ends)?.lazy();
            let ts = col("ts").cast(DataType::Int64);
            let inside = ts
                .clone()
                .gt_eq(col("_start"))
                .and(ts.clone().lt(col("_end")));
            let df = lf
                .filter(crate::billing::measure::meter_in(events))
                .join(
                    win,
                    [col("tenant_id")],
                    [col("tenant_id")],
                    JoinArgs::new(JoinType::Inner),
                )
                .with_columns([
                    when(inside.clone())
                        .then(col("value"))
                        .otherwise(lit(NULL))
                        .alias("_v"),
                    when(inside)
                        .then(col("user_id"))
                        .otherwise(lit(NULL).cast(DataType::String))
                        .alias("_u"),
                ])
                .sort(["ts"], SortMultipleOptions::default())
                .group_by([col("tenant_id"), col("meter")])
                .agg([
                    col("_v").sum().alias("sum"),
                    col("_v").max().alias("max"),
                    col("value").last().alias("last"),
                    ts.clone().last().alias("last_ts"),
                    col("_u").drop_nulls().unique().alias("users"),
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
                for (name, bm) in &catalog.meters {
                    if bm.event != meter {
                        continue;
                    }
                    if let Some(c) = fresh.get_mut(tenant).and_then(|t| t.get_mut(name)) {
                        c.sum = sum.get(i).unwrap_or(0.0);
                        c.max = max.get(i);
                        c.latest = last_ts.get(i).zip(last.get(i));
                        c.users = us.iter().cloned().collect();
                    }
                }
            }
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

    /// Billed usage so far and what a quantity adds to (the reading, for gauges).
    fn usage(&self, billing: &Billing, tenant: &str, meter: &str) -> (Decimal, Decimal) {
        let bm = &billing.catalog.meters[meter];
        let Some(c) = self.counter(tenant, meter) else {
            return (Decimal::ZERO, Decimal::ZERO);
        };
        let units = |v: f64| round_qty(dec(v) / bm.scale, bm.precision);
        let latest = units(c.latest.map_or(0.0, |l| l.1));
        match bm.usage {
            UsageRule::Sum => {
                let u = units(c.sum);
                (u, u)
            }
            UsageRule::Max => (units(c.max.unwrap_or(0.0)), latest),
            UsageRule::TimeWeighted => (latest, latest),
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
        let (used, current) = self.usage(billing, &t.id, meter);
        Ok(decide(billing, &tm, t, meter, used, current, quantity))
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
                let (used, _) = self.usage(billing, &t.id, name);
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
                        .map(|i| (used / i * Decimal::from(100)).round_dp(2)),
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
        if bm.event == e.meter
            && let Some(c) = t.get_mut(name)
        {
            c.add(e.ts, e.value, e.user_id.as_deref());
        }
    }
}
