//! Plan comparison: what a tenant's last three complete periods and its projected current
//! period would cost on every plan, and which is cheapest among those whose hard caps the
//! usage fits; and, platform-wide, the tenants on the entry plans closest to their limits
//! (upgrade candidates).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::measure::{Window, measure, round_qty};
use super::plans::{Catalog, Limit, Plan};
use super::quota::{QuotaOptions, quotas};
use super::{Billing, Terms, round_money};
use crate::error::Result;
use crate::lake::Lake;

/// The cost of some usage on one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCost {
    /// The plan.
    pub plan: String,
    /// Cost per period (base fee + overage), in the order of [`Comparison::periods`].
    pub costs: Vec<Decimal>,
    /// Their sum.
    pub total: Decimal,
    /// Whether every period's usage fits the plan's hard caps.
    pub fits: bool,
    /// Meters whose usage would be over a hard cap on this plan.
    pub over_hard_cap: Vec<String>,
}

/// A tenant's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan now.
    pub current_plan: String,
    /// Currency.
    pub currency: String,
    /// Period labels: the start of each complete period, then `projected` for the current.
    pub periods: Vec<String>,
    /// Usage per period and billed meter.
    pub usage: Vec<BTreeMap<String, Decimal>>,
    /// One per plan, by plan id.
    pub plans: Vec<PlanCost>,
    /// The cheapest plan that fits, if any does.
    pub cheapest: Option<String>,
    /// What the cheapest saves against the current plan over these periods.
    pub saving: Decimal,
}

/// The cost of `usage` on `plan` (base fee + rounded overage per meter), and the meters over a
/// hard cap.
pub fn cost_on(
    catalog: &Catalog,
    plan: &Plan,
    usage: &BTreeMap<String, Decimal>,
) -> (Decimal, Vec<String>) {
    let mut cost = round_money(plan.base_fee, catalog.minor_units);
    let mut over = Vec::new();
    for (meter, &u) in usage {
        let a = plan.allowance(meter);
        let Some(inc) = a.included else { continue };
        match &a.limit {
            Limit::HardCap if u > inc => over.push(meter.clone()),
            Limit::HardCap => {}
            Limit::Overage(p) => {
                cost = cost.saturating_add(round_money(
                    p.cost((u - inc).max(Decimal::ZERO)),
                    catalog.minor_units,
                ))
            }
        }
    }
    (cost, over)
}

fn costs_of(catalog: &Catalog, usage: &[BTreeMap<String, Decimal>]) -> Vec<PlanCost> {
    catalog
        .plans
        .values()
        .map(|plan| {
            let mut costs = Vec::new();
            let mut over: Vec<String> = Vec::new();
            for u in usage {
                let (c, o) = cost_on(catalog, plan, u);
                costs.push(c);
                over.extend(o);
            }
            over.sort();
            over.dedup();
            PlanCost {
                plan: plan.id.clone(),
                total: super::saturating_sum(costs.iter().copied()),
                costs,
                fits: over.is_empty(),
                over_hard_cap: over,
            }
        })
        .collect()
}

fn cheapest(plans: &[PlanCost]) -> Option<&PlanCost> {
    plans
        .iter()
        .filter(|p| p.fits)
        .min_by(|a, b| a.total.cmp(&b.total).then_with(|| a.plan.cmp(&b.plan)))
}

/// Compares every plan for `tenant` at instant `at`.
pub fn compare(lake: &Lake, billing: &Billing, tenant: &str, at: i64) -> Result<Comparison> {
    let catalog = &billing.catalog;
    let t = billing.tenant(tenant)?;
    let now = Terms::at(catalog, t, at)?;
    let cycle = t.cycle(now.plan);
    let mut spans = vec![cycle.previous(&now.span)];
    for _ in 0..2 {
        let p = cycle.previous(spans.last().expect("one span"));
        spans.push(p);
    }
    spans.reverse();
    let mut usage: Vec<BTreeMap<String, Decimal>> = Vec::new();
    let mut labels = Vec::new();
    for s in &spans {
        let w = Window::new(&t.id, s.start, s.end);
        let m = measure(lake, catalog, &[w])?;
        usage.push(
            catalog
                .meters
                .keys()
                .map(|k| {
                    let u = m
                        .get(&(t.id.clone(), k.clone()))
                        .map(|x| x.used)
                        .unwrap_or_default();
                    (k.clone(), u)
                })
                .collect(),
        );
        labels.push(s.first_day.to_string());
    }
    let q = quotas(
        lake,
        billing,
        &QuotaOptions {
            at,
            tenant: Some(t.id.clone()),
            ..QuotaOptions::default()
        },
    )?;
    let mut projected: BTreeMap<String, Decimal> = catalog
        .meters
        .keys()
        .map(|k| (k.clone(), Decimal::ZERO))
        .collect();
    for r in &q {
        projected.insert(
            r.meter.clone(),
            r.projected.as_ref().map(|p| p.usage).unwrap_or(r.used),
        );
    }
    usage.push(projected);
    labels.push(format!("projected {}", now.span.first_day));
    let plans = costs_of(catalog, &usage);
    let best = cheapest(&plans);
    let current = plans.iter().find(|p| p.plan == now.plan.id);
    let saving = match (best, current) {
        (Some(b), Some(c)) => (c.total - b.total).max(Decimal::ZERO),
        _ => Decimal::ZERO,
    };
    Ok(Comparison {
        tenant_id: t.id.clone(),
        current_plan: now.plan.id.clone(),
        currency: catalog.currency.clone(),
        periods: labels,
        usage,
        cheapest: best.map(|b| b.plan.clone()),
        plans,
        saving,
    })
}

/// A tenant on an entry plan close to a limit.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: String,
    /// The meter closest to its limit (by projected use).
    pub meter: String,
    /// Percent used so far.
    pub percent: Decimal,
    /// Percent projected at the period's end.
    pub projected_percent: Decimal,
    /// The period's end.
    pub period_end: String,
    /// The cheapest plan for the projected usage that fits it.
    pub suggested_plan: Option<String>,
}

/// The tenants on entry plans (base fee at most the second-lowest in the catalogue: free
/// and basic by default) closest to a limit, by projected percent, at most `top`.
pub fn upgrade_candidates(
    lake: &Lake,
    billing: &Billing,
    at: i64,
    top: usize,
) -> Result<Vec<Candidate>> {
    let catalog = &billing.catalog;
    let mut fees: Vec<Decimal> = catalog.plans.values().map(|p| p.base_fee).collect();
    fees.sort();
    fees.dedup();
    let cutoff = fees.get(1).or(fees.first()).copied().unwrap_or_default();
    let q = quotas(
        lake,
        billing,
        &QuotaOptions {
            at,
            ..QuotaOptions::default()
        },
    )?;
    let mut by_tenant: BTreeMap<&str, Vec<&super::quota::QuotaRow>> = BTreeMap::new();
    for r in &q {
        if catalog.plan(&r.plan).is_some_and(|p| p.base_fee <= cutoff) {
            by_tenant.entry(&r.tenant_id).or_default().push(r);
        }
    }
    let pct = |u: Decimal, i: Decimal| round_qty(super::quota::percent(u, i), 2);
    let mut out = Vec::new();
    for (tenant, rows) in by_tenant {
        let mut best: Option<Candidate> = None;
        let mut usage = BTreeMap::new();
        for r in &rows {
            let proj = r.projected.as_ref().map(|p| p.usage).unwrap_or(r.used);
            usage.insert(r.meter.clone(), proj);
            let Some(inc) = r.included.filter(|i| !i.is_zero()) else {
                continue;
            };
            let c = Candidate {
                tenant_id: tenant.to_string(),
                plan: r.plan.clone(),
                meter: r.meter.clone(),
                percent: pct(r.used, inc),
                projected_percent: pct(proj, inc),
                period_end: r.period_end.clone(),
                suggested_plan: None,
            };
            if best
                .as_ref()
                .is_none_or(|b| c.projected_percent > b.projected_percent)
            {
                best = Some(c);
            }
        }
        if let Some(mut c) = best {
            let costs = costs_of(catalog, &[usage]);
            c.suggested_plan = cheapest(&costs).map(|p| p.plan.clone());
            out.push(c);
        }
    }
    out.sort_by(|a, b| {
        b.projected_percent
            .cmp(&a.projected_percent)
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
    });
    out.truncate(top);
    Ok(out)
}
