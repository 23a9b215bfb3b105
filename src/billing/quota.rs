//! Quotas: usage so far in each tenant's current period against its allowance, with a
//! status, the overage cost so far, and a projection of the period's end from a forecast of
//! the tenant's daily usage; and the admission check (`check`) a platform calls before
//! letting a tenant consume more.
//!
//! Status, with `p` = used / included · 100:
//! `ok` below the warning threshold (or unlimited); `warning` from it; `critical` from the
//! critical threshold, and at exactly 100 % with overage allowed; `exceeded` above the
//! allowance with overage; `blocked` at or above a hard cap.
//!
//! Projection: the daily series (up to `history_days` days before `at`) is forecast with
//! `auto` (backtest-chosen model, season 7) to the period's end; the last, partial day
//! counts pro rata (seats are projected from who comes back instead: [`seat_paths`]).
//! Counters add the forecast to the usage so far; `max` gauges
//! take the larger of the usage so far and the forecast's highest step; `time_weighted`
//! gauges blend the average so far with the forecast by time. The interval adds up the
//! per-step bounds (floored at 0): a conservative band, as wide as if the daily errors
//! were perfectly correlated. The limit date is the first instant the projected usage
//! reaches the allowance inside the period (linear within a day).

use rayon::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use statrs::distribution::{DiscreteCDF, Poisson};

use super::measure::{Measured, SeatHistory, Window, measure, round_qty, saturating_decimal};
use super::plans::{BillingMeter, Limit, Tenant, UsageRule};
use super::{Billing, Terms, round_money};
use crate::error::{Error, Result};
use crate::forecast::{ModelKind, ModelOptions, forecast_one};
use crate::lake::Lake;
use crate::time::MICROS_PER_DAY;
use crate::time::rfc3339;

/// Where a tenant stands on a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Below the warning threshold, or unlimited.
    Ok,
    /// At or above the warning threshold.
    Warning,
    /// At or above the critical threshold.
    Critical,
    /// Above the allowance, billed as overage.
    Exceeded,
    /// At or above a hard cap.
    Blocked,
}

impl Status {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Exceeded => "exceeded",
            Status::Blocked => "blocked",
        }
    }
}

/// The status of `used` against an allowance.
pub fn status_of(
    used: Decimal,
    included: Option<Decimal>,
    limit: &Limit,
    warning: Decimal,
    critical: Decimal,
) -> Status {
    let Some(inc) = included else {
        return Status::Ok;
    };
    let hard = matches!(limit, Limit::HardCap);
    if inc.is_zero() {
        return match (hard, used.is_zero()) {
            (true, _) => Status::Blocked,
            (false, true) => Status::Ok,
            (false, false) => Status::Exceeded,
        };
    }
    if hard && used >= inc {
        return Status::Blocked;
    }
    if used > inc {
        return Status::Exceeded;
    }
    let p = percent(used, inc);
    if p >= critical {
        Status::Critical
    } else if p >= warning {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// `used` as a percent of `included` (> 0), unrounded; [`Decimal::MAX`] when beyond the
/// largest decimal.
pub fn percent(used: Decimal, included: Decimal) -> Decimal {
    let hundred = Decimal::ONE_HUNDRED;
    used.checked_mul(hundred)
        .and_then(|x| x.checked_div(included))
        .or_else(|| used.checked_div(included)?.checked_mul(hundred))
        .unwrap_or(Decimal::MAX)
}

/// Overage units and their rounded cost.
pub fn overage(
    used: Decimal,
    included: Option<Decimal>,
    limit: &Limit,
    minor: u32,
) -> (Decimal, Decimal) {
    let Some(inc) = included else {
        return (Decimal::ZERO, Decimal::ZERO);
    };
    let units = (used - inc).max(Decimal::ZERO);
    let cost = match limit {
        Limit::HardCap => Decimal::ZERO,
        Limit::Overage(p) => round_money(p.cost(units), minor),
    };
    (units, cost)
}

/// A projection of the period's end.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    /// Projected usage at the period's end.
    pub usage: Decimal,
    /// Lower bound of the interval.
    pub usage_lower: Decimal,
    /// Upper bound of the interval.
    pub usage_upper: Decimal,
    /// Projected overage cost at the period's end.
    pub cost: Decimal,
    /// Cost at the lower bound.
    pub cost_lower: Decimal,
    /// Cost at the upper bound.
    pub cost_upper: Decimal,
    /// When the allowance is projected to be reached inside the period (RFC 3339), if it is
    /// and has not been already.
    pub limit_at: Option<String>,
    /// The forecasting model (or `run_rate` for histories under 3 days).
    pub model: String,
}

/// One tenant × meter.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaRow {
    /// The tenant.
    pub tenant_id: String,
    /// Its plan at `at`.
    pub plan: String,
    /// The billed meter.
    pub meter: String,
    /// Billing unit.
    pub unit: String,
    /// The period (RFC 3339).
    pub period_start: String,
    /// The period's end (exclusive).
    pub period_end: String,
    /// Usage so far.
    pub used: Decimal,
    /// Allowance (prorated across a plan change); none: unlimited.
    pub included: Option<Decimal>,
    /// used / included, percent (2 places).
    pub percent: Option<Decimal>,
    /// included − used, at least 0.
    pub remaining: Option<Decimal>,
    /// Where it stands.
    pub status: Status,
    /// Whether usage stops at the allowance.
    pub hard_cap: bool,
    /// Units over the allowance so far.
    pub overage_units: Decimal,
    /// Their cost so far.
    pub overage_cost: Decimal,
    /// The period's end, projected (absent when asked not to project).
    pub projected: Option<Projection>,
}

/// What `quotas` computes.
#[derive(Debug, Clone)]
pub struct QuotaOptions {
    /// The instant (UTC µs).
    pub at: i64,
    /// One tenant, or all.
    pub tenant: Option<String>,
    /// Of those, only these (none: no further limit): how a caller with a memory budget
    /// takes the tenants in batches.
    pub among: Option<std::collections::BTreeSet<String>>,
    /// Whether to project the period's end.
    pub project: bool,
    /// Days of history the projection forecasts from.
    pub history_days: i64,
    /// Interval level of projections, in (0, 1).
    pub level: f64,
}

impl Default for QuotaOptions {
    fn default() -> Self {
        QuotaOptions {
            at: crate::time::now(),
            tenant: None,
            among: None,
            project: true,
            history_days: 56,
            level: 0.9,
        }
    }
}

/// Quotas of the selected tenants at `opts.at`, sorted by tenant and meter.
pub fn quotas(lake: &Lake, billing: &Billing, opts: &QuotaOptions) -> Result<Vec<QuotaRow>> {
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(Error::InvalidParameter {
            name: "--level",
            reason: format!("{} is not a percentage in (0, 100)", opts.level * 100.0),
        });
    }
    let mut tenants = billing.select(opts.tenant.as_deref())?;
    if let Some(among) = &opts.among {
        tenants.retain(|t| among.contains(&t.id));
    }
    let catalog = &billing.catalog;
    let terms: Vec<Terms> = tenants
        .iter()
        .map(|t| Terms::at(catalog, t, opts.at))
        .collect::<Result<_>>()?;
    let windows: Vec<Window> = tenants
        .iter()
        .zip(&terms)
        .map(|(t, tm)| {
            let w = Window::new(&t.id, tm.span.start, opts.at);
            if opts.project {
                w.with_history_from(opts.at - opts.history_days * MICROS_PER_DAY)
            } else {
                w
            }
        })
        .collect();
    let measured = measure(lake, catalog, &windows)?;
    let empty = Measured::default();
    let mut jobs: Vec<(&Tenant, &Terms, &String, &BillingMeter, &Measured)> = Vec::new();
    for (t, tm) in tenants.iter().zip(&terms) {
        for (name, bm) in &catalog.meters {
            if !tm.plan.meters.contains_key(name) {
                continue;
            }
            let m = measured
                .get(&(t.id.clone(), name.clone()))
                .unwrap_or(&empty);
            jobs.push((t, tm, name, bm, m));
        }
    }
    let rows = jobs
        .par_iter()
        .map(|&(t, tm, name, bm, m)| row(catalog, t, tm, name, bm, m, opts))
        .collect();
    Ok(rows)
}

fn row(
    catalog: &super::Catalog,
    t: &Tenant,
    tm: &Terms,
    name: &str,
    bm: &BillingMeter,
    m: &Measured,
    opts: &QuotaOptions,
) -> QuotaRow {
    let a = tm.plan.allowance(name);
    let included = tm.included(name, bm.precision);
    let used = m.used;
    let (ou, oc) = overage(used, included, &a.limit, catalog.minor_units);
    let projected = opts.project.then(|| {
        project(m, bm, tm, opts, included, &|u| {
            overage(u, included, &a.limit, catalog.minor_units).1
        })
    });
    QuotaRow {
        tenant_id: t.id.clone(),
        plan: tm.plan.id.clone(),
        meter: name.to_string(),
        unit: bm.unit.clone(),
        period_start: rfc3339(tm.span.start),
        period_end: rfc3339(tm.span.end),
        used,
        included,
        percent: included
            .filter(|i| !i.is_zero())
            .map(|i| round_qty(percent(used, i), 2)),
        remaining: included.map(|i| (i - used).max(Decimal::ZERO)),
        status: status_of(used, included, &a.limit, a.warning, a.critical),
        hard_cap: matches!(a.limit, Limit::HardCap),
        overage_units: ou,
        overage_cost: oc,
        projected,
    }
}

fn project(
    m: &Measured,
    bm: &BillingMeter,
    tm: &Terms,
    opts: &QuotaOptions,
    included: Option<Decimal>,
    cost: &dyn Fn(Decimal) -> Decimal,
) -> Projection {
    let used = m.used.to_f64().unwrap_or(0.0);
    let left = (tm.span.end - opts.at).max(0);
    let steps = left as f64 / MICROS_PER_DAY as f64;
    let h = steps.ceil() as usize;
    let weight = |i: usize| {
        if (i + 1) as f64 <= steps {
            1.0
        } else {
            steps - i as f64
        }
    };
    let (mean, lower, upper, model) = if h == 0 {
        (vec![], vec![], vec![], "none".to_string())
    } else if let (UsageRule::UniqueUsers, Some(seats)) = (bm.usage, &m.seats) {
        seat_paths(seats, tm, opts, steps, h)
    } else if m.daily.len() < 3 {
        // Too short to forecast: the period's daily rate so far.
        let elapsed = ((opts.at - tm.span.start).max(1)) as f64 / MICROS_PER_DAY as f64;
        let rate = if bm.usage.additive() {
            used / elapsed.max(1.0)
        } else {
            m.daily.last().copied().unwrap_or(used)
        };
        (
            vec![rate; h],
            vec![rate; h],
            vec![rate; h],
            "run_rate".to_string(),
        )
    } else {
        let opts_f = ModelOptions {
            season_length: 7,
            ..ModelOptions::default()
        };
        let f = forecast_one(&m.daily, h, opts.level, ModelKind::Auto, &opts_f);
        if f.forecast.mean.len() == h {
            (
                f.forecast.mean,
                f.forecast.lower,
                f.forecast.upper,
                f.model.unwrap_or("none").to_string(),
            )
        } else {
            let last = m.daily.last().copied().unwrap_or(0.0);
            (
                vec![last; h],
                vec![last; h],
                vec![last; h],
                "naive".to_string(),
            )
        }
    };
    let floor = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.max(0.0)).collect() };
    let (mean, lower, upper) = (floor(&mean), floor(&lower), floor(&upper));
    let inc = included.and_then(|i| i.to_f64());
    let mut limit_at = None;
    let end_of = |path: &[f64]| -> f64 {
        match bm.usage {
            UsageRule::Sum | UsageRule::UniqueUsers => {
                used + path
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * weight(i))
                    .sum::<f64>()
            }
            UsageRule::Max => path.iter().fold(used, |a, &b| a.max(b)),
            UsageRule::TimeWeighted => {
                let so_far = (opts.at - tm.span.start).max(0) as f64;
                let ahead: f64 = path
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * weight(i) * MICROS_PER_DAY as f64)
                    .sum();
                let total = so_far + left as f64;
                if total > 0.0 {
                    (used * so_far + ahead) / total
                } else {
                    used
                }
            }
        }
    };
    if let Some(inc) = inc
        && used < inc
    {
        let mut acc = used;
        for (i, &v) in mean.iter().enumerate() {
            let w = weight(i);
            let next = match bm.usage {
                UsageRule::Sum | UsageRule::UniqueUsers => acc + v * w,
                UsageRule::Max => acc.max(v),
                // An average reaches the allowance only when the projected end does.
                UsageRule::TimeWeighted => acc,
            };
            if next >= inc {
                let frac = match bm.usage {
                    UsageRule::Sum | UsageRule::UniqueUsers if v > 0.0 => (inc - acc) / v,
                    _ => 0.0,
                };
                let t = opts.at + ((i as f64 + frac.clamp(0.0, w)) * MICROS_PER_DAY as f64) as i64;
                limit_at = Some(rfc3339(t.min(tm.span.end - 1)));
                break;
            }
            acc = next;
        }
    }
    let q = |v: f64| round_qty(saturating_decimal(v), bm.precision);
    let (u, lo, hi) = (q(end_of(&mean)), q(end_of(&lower)), q(end_of(&upper)));
    Projection {
        usage: u,
        usage_lower: lo,
        usage_upper: hi,
        cost: cost(u),
        cost_lower: cost(lo),
        cost_upper: cost(hi),
        limit_at,
        model,
    }
}

/// Seats to come, per day ahead (`h` steps, the last one `steps - (h - 1)` long), with
/// their bounds: a seat is a distinct user of the period, and a user's activity recurs, so
/// new users per day are not extrapolated (on a period's first day every user is new).
///
/// - Expected: the users active in the period-length span before `at` who have not been
///   back this period yet (a seat used in the last month is expected to be used again),
///   plus new users at the rate they first appeared (`arrival_rate`).
/// - Lower: no one comes back, new users at the lower Poisson quantile of that rate.
/// - Upper: every user of the history comes back, new users at the upper quantile of the
///   highest rate the history allows.
///
/// The seats to come are spread evenly over the days left (the limit date follows).
fn seat_paths(
    seats: &SeatHistory,
    tm: &Terms,
    opts: &QuotaOptions,
    steps: f64,
    h: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, String) {
    let period = tm.span.end - tm.span.start;
    let recent = seats
        .lapsed
        .iter()
        .filter(|&&b| b >= opts.at - period)
        .count() as f64;
    let (rate, most) = arrival_rate(seats, period, opts.at);
    let arrivals = rate * steps;
    // Poisson quantile of new users over the days left at `rate` (none at rate 0).
    let quantile = |rate: f64, p: f64| -> f64 {
        match Poisson::new(rate * steps) {
            Ok(d) => d.inverse_cdf(p) as f64,
            Err(_) => 0.0,
        }
    };
    let lo = quantile(rate, (1.0 - opts.level) / 2.0);
    let hi = quantile(most, (1.0 + opts.level) / 2.0);
    let per_day = |total: f64| vec![total / steps; h];
    (
        per_day(recent + arrivals),
        per_day(lo),
        per_day(seats.lapsed.len() as f64 + hi),
        "seats".to_string(),
    )
}

/// New users per day, expected and at most: users first seen after a period-length
/// warm-up of the history (a user active once a period has shown up by then), over the
/// days since. With under a week of history past the warm-up, a user seen for the first
/// time may be a returning one, so none is expected, and at most the rate users were
/// first seen in the later half of the history (with under 2 days of it: every user seen
/// so far, per day).
fn arrival_rate(seats: &SeatHistory, period: i64, at: i64) -> (f64, f64) {
    let Some(&first) = seats.arrivals.first() else {
        return (0.0, 0.0);
    };
    let start = first.max(seats.from);
    let days = |from: i64| (at - from) as f64 / MICROS_PER_DAY as f64;
    let since = |from: i64| seats.arrivals.iter().filter(|&&a| a >= from).count() as f64;
    let warm = start + period;
    if days(warm) >= 7.0 {
        let rate = since(warm) / days(warm);
        (rate, rate)
    } else if days(start) >= 2.0 {
        let half = start + (at - start) / 2;
        (0.0, since(half) / days(half))
    } else {
        (0.0, seats.arrivals.len() as f64 / days(start).max(1.0))
    }
}

/// The answer of an admission check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckAnswer {
    /// `allowed`, `allowed_with_overage` or `blocked`.
    pub decision: &'static str,
    /// Why, in words with the numbers.
    pub reason: String,
    /// The tenant.
    pub tenant_id: String,
    /// Its plan.
    pub plan: String,
    /// The billed meter.
    pub meter: String,
    /// The quantity asked for.
    pub quantity: Decimal,
    /// Usage so far (gauges: the current reading).
    pub used: Decimal,
    /// Usage after consuming the quantity.
    pub after: Decimal,
    /// Allowance; none: unlimited.
    pub included: Option<Decimal>,
    /// Allowance left before consuming.
    pub remaining: Option<Decimal>,
    /// Extra overage cost the quantity adds.
    pub overage_cost: Decimal,
    /// The period's end.
    pub period_end: String,
}

impl CheckAnswer {
    /// Whether the quantity may be consumed.
    pub fn allowed(&self) -> bool {
        self.decision != "blocked"
    }
}

/// May `tenant` consume `quantity` more of `meter` at `at`? For `max`/`time_weighted`
/// gauges the quantity adds to the current reading (the new level is what is checked: the
/// last reading, or the one carried into the period when it has none yet); for seats it is
/// the number of new users. A quantity that usage plus it would take beyond the largest
/// decimal is refused, naming `--quantity` (see [`decide`]).
pub fn check(
    lake: &Lake,
    billing: &Billing,
    tenant: &str,
    meter: &str,
    quantity: Decimal,
    at: i64,
) -> Result<CheckAnswer> {
    if quantity.is_sign_negative() {
        return Err(Error::InvalidParameter {
            name: "--quantity",
            reason: format!("{quantity} is negative"),
        });
    }
    let catalog = &billing.catalog;
    let Some(bm) = catalog.meters.get(meter) else {
        return Err(Error::InvalidParameter {
            name: "--meter",
            reason: format!(
                "`{meter}` is not a billed meter in {} (meters: {})",
                catalog.path.display(),
                catalog
                    .meters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let t = billing.tenant(tenant)?;
    let tm = Terms::at(catalog, t, at)?;
    let w = Window::new(&t.id, tm.span.start, at);
    let m = measure(lake, catalog, &[w])?
        .remove(&(t.id.clone(), meter.to_string()))
        .unwrap_or_default();
    let current = match bm.usage {
        UsageRule::Max | UsageRule::TimeWeighted => {
            round_qty(saturating_decimal(m.latest.unwrap_or(0.0)), bm.precision)
        }
        _ => m.used,
    };
    decide(billing, &tm, t, meter, m.used, current, quantity)
}

/// The admission decision once usage is known: `used` is the period's billed usage so far,
/// `current` what the quantity adds to (the reading for gauges, `used` otherwise). The HTTP
/// server answers from its in-memory counters with this same function.
///
/// Usage saturates at [`Decimal::MAX`] (see [`super::measure::saturating_decimal`]): at it,
/// any quantity takes usage past every allowance (`after` stays at the maximum). Below
/// it, a quantity that would take usage beyond the largest decimal (~7.9e28) is no
/// quantity anyone consumes: an [`Error::InvalidParameter`] naming `--quantity` (the API
/// answers 400 `quantity`).
pub fn decide(
    billing: &Billing,
    tm: &Terms,
    t: &crate::billing::plans::Tenant,
    meter: &str,
    used: Decimal,
    current: Decimal,
    quantity: Decimal,
) -> Result<CheckAnswer> {
    let catalog = &billing.catalog;
    let bm = &catalog.meters[meter];
    let a = tm.plan.allowance(meter);
    let included = tm.included(meter, bm.precision);
    let after = match current.checked_add(quantity) {
        Some(a) => a,
        None if current == Decimal::MAX => Decimal::MAX,
        None => {
            return Err(Error::InvalidParameter {
                name: "--quantity",
                reason: format!(
                    "{quantity} on top of the {current} {} used is beyond the largest quantity meterlake counts ({})",
                    bm.unit,
                    Decimal::MAX
                ),
            });
        }
    };
    let minor = catalog.minor_units;
    let (_, before_cost) = overage(used.max(current), included, &a.limit, minor);
    let (_, after_cost) = overage(used.max(after), included, &a.limit, minor);
    let (decision, reason) = match (included, &a.limit) {
        (None, _) => ("allowed", "unlimited on this plan".to_string()),
        (Some(inc), _) if after <= inc => (
            "allowed",
            format!("{after} of {inc} {} after this", bm.unit),
        ),
        (Some(inc), Limit::HardCap) => (
            "blocked",
            format!(
                "hard cap: {current} used + {quantity} requested = {after} exceeds the {inc} {} included in plan {}",
                bm.unit, tm.plan.id
            ),
        ),
        (Some(inc), Limit::Overage(_)) => (
            "allowed_with_overage",
            format!(
                "{after} exceeds the {inc} {} included; overage costs {} {} more",
                bm.unit,
                after_cost - before_cost,
                catalog.currency
            ),
        ),
    };
    Ok(CheckAnswer {
        decision,
        reason,
        tenant_id: t.id.clone(),
        plan: tm.plan.id.clone(),
        meter: meter.to_string(),
        quantity,
        used: current,
        after,
        included,
        remaining: included.map(|i| (i - current).max(Decimal::ZERO)),
        overage_cost: after_cost - before_cost,
        period_end: rfc3339(tm.span.end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Pricing;

    #[test]
    fn statuses_at_the_boundaries() {
        let d = |v: i64| Decimal::from(v);
        let over = Limit::Overage(Pricing::PerUnit(Decimal::new(50, 2)));
        let s = |used, inc: Option<i64>, l: &Limit| status_of(d(used), inc.map(d), l, d(80), d(90));
        assert_eq!(s(79, Some(100), &over), Status::Ok);
        assert_eq!(s(80, Some(100), &over), Status::Warning);
        assert_eq!(s(90, Some(100), &over), Status::Critical);
        assert_eq!(s(100, Some(100), &over), Status::Critical);
        assert_eq!(s(101, Some(100), &over), Status::Exceeded);
        assert_eq!(s(99, Some(100), &Limit::HardCap), Status::Critical);
        assert_eq!(s(100, Some(100), &Limit::HardCap), Status::Blocked);
        assert_eq!(s(10_000, None, &Limit::HardCap), Status::Ok);
        assert_eq!(s(0, Some(0), &over), Status::Ok);
        // Exactly at the limit: no overage; one over: one unit at 0.50.
        assert_eq!(overage(d(100), Some(d(100)), &over, 2), (d(0), d(0)));
        assert_eq!(
            overage(d(101), Some(d(100)), &over, 2),
            (d(1), Decimal::new(50, 2))
        );
        assert_eq!(
            overage(d(150), Some(d(100)), &Limit::HardCap, 2),
            (d(50), d(0))
        );
    }
}
