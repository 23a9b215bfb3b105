//! Plans, quotas, limits and usage-based billing.
//!
//! A [`Catalog`] of plans (`data/plans.toml`) and the tenants' subscriptions
//! (`data/tenants.csv`) turn the lake's events into:
//! - [`quota::quotas`]: per tenant × meter, usage so far in the current period against the
//!   allowance, a status, the overage cost so far, and a forecast-based projection of the
//!   period's end (usage, cost, interval, the date the limit is reached);
//! - [`quota::check`]: may a tenant consume Q more now (allowed, allowed with overage,
//!   blocked);
//! - [`invoice::invoices`]: a period's invoices, deterministic, in exact decimals;
//! - [`compare::compare`]: what a tenant's recent usage would cost on every plan, and the
//!   free/basic tenants closest to their limits;
//! - [`seats::seat_use`]: of the seats a tenant pays overage for, those used on one day only.
//!
//! Gauges (`max`, `time_weighted`) follow one rule everywhere ([`gauge`]): a gauge's level
//! at the start of a period is its last reading before the period, however old.
//!
//! Money never goes through f64: prices, fees and amounts are [`Decimal`]s. Usage is
//! measured in f64 from the events and converted once to a decimal at the meter's
//! precision. Quantities and amounts saturate at [`Decimal::MAX`] (~7.9e28) instead of
//! wrapping or panicking, so absurd usage stays over every allowance. Each invoice line's amount and the (prorated) base fee are rounded half away
//! from zero to the currency's minor unit; a total is the sum of its rounded parts.

pub mod compare;
pub mod entitlements;
pub mod gauge;
pub mod invoice;
pub mod measure;
pub mod period;
pub mod plans;
pub mod pricing;
pub mod quota;
pub mod seats;
pub mod stripe;

pub use plans::{
    Allowance, BillingMeter, Catalog, DEFAULT_PLANS_FILE, DEFAULT_PLANS_TOML, DEFAULT_TENANTS_FILE,
    EXAMPLE_TENANTS_CSV, Limit, Plan, Tenant, UsageRule, load_tenants,
};
pub use pricing::{Pricing, Tier};

use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::{Error, Result};
use period::Span;

/// Rounds money to `minor_units` places, half away from zero.
pub fn round_money(amount: Decimal, minor_units: u32) -> Decimal {
    amount.round_dp_with_strategy(minor_units, RoundingStrategy::MidpointAwayFromZero)
}

/// The sum of amounts (or quantities), saturating at [`Decimal::MAX`] instead of panicking:
/// what every total over tenants or lines goes through.
pub fn saturating_sum(items: impl IntoIterator<Item = Decimal>) -> Decimal {
    items
        .into_iter()
        .fold(Decimal::ZERO, |t, x| t.saturating_add(x))
}

/// A tenant's terms over one period: the plan in force (and the one before a change in
/// the period), the share of the period each covers, the prorated base fee and allowances.
#[derive(Debug, Clone)]
pub struct Terms<'a> {
    /// The plan in force at the measuring instant.
    pub plan: &'a Plan,
    /// The plan before a change inside the period, and the fraction of the period it
    /// covered.
    pub previous: Option<(&'a Plan, Decimal)>,
    /// The period.
    pub span: Span,
}

impl<'a> Terms<'a> {
    /// The terms of `tenant` for the period containing instant `at`.
    pub fn at(catalog: &'a Catalog, tenant: &Tenant, at: i64) -> Result<Terms<'a>> {
        let plan_of = |id: &str| {
            catalog.plan(id).ok_or_else(|| Error::InvalidParameter {
                name: "plan",
                reason: format!("tenant {}: unknown plan `{id}`", tenant.id),
            })
        };
        let plan = plan_of(tenant.plan_at(at))?;
        let span = tenant.cycle(plan).containing(at);
        let previous = match (tenant.plan_changed_at, &tenant.previous_plan) {
            (Some(c), Some(p)) if c > span.start && c < span.end && at >= c => {
                let f = Decimal::from(c - span.start) / Decimal::from(span.len());
                Some((plan_of(p)?, f))
            }
            _ => None,
        };
        Ok(Terms {
            plan,
            previous,
            span,
        })
    }

    /// The allowance for `meter` over the period: the plan's, prorated by time across a
    /// plan change (unlimited if either side is), at the meter's precision.
    pub fn included(&self, meter: &str, precision: u32) -> Option<Decimal> {
        let now = self.plan.allowance(meter).included?;
        match self.previous {
            None => Some(now),
            Some((prev, f)) => {
                let before = prev.allowance(meter).included?;
                Some(measure::round_qty(
                    (before * f).saturating_add(now * (Decimal::ONE - f)),
                    precision,
                ))
            }
        }
    }

    /// The period's base fee, prorated across a plan change, rounded.
    pub fn base_fee(&self, minor_units: u32) -> Decimal {
        let fee = match self.previous {
            None => self.plan.base_fee,
            Some((prev, f)) => {
                (prev.base_fee * f).saturating_add(self.plan.base_fee * (Decimal::ONE - f))
            }
        };
        round_money(fee, minor_units)
    }
}

/// The catalogue, the tenants and the lake meters' names, loaded together.
#[derive(Debug, Clone)]
pub struct Billing {
    /// Plans and billed meters.
    pub catalog: Catalog,
    /// Subscriptions, sorted by tenant id.
    pub tenants: Vec<Tenant>,
}

impl Billing {
    /// Loads a catalogue and the tenants assigned to its plans.
    pub fn load(plans: &std::path::Path, tenants: &std::path::Path) -> Result<Billing> {
        let catalog = Catalog::load(plans)?;
        let tenants = load_tenants(tenants, &catalog)?;
        Ok(Billing { catalog, tenants })
    }

    /// One tenant, or an error naming it.
    pub fn tenant(&self, id: &str) -> Result<&Tenant> {
        self.tenants
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::InvalidParameter {
                name: "--tenant",
                reason: format!("`{id}` is not in the tenants file"),
            })
    }

    /// The tenants selected by an optional `--tenant`.
    pub fn select(&self, tenant: Option<&str>) -> Result<Vec<&Tenant>> {
        match tenant {
            Some(t) => Ok(vec![self.tenant(t)?]),
            None => Ok(self.tenants.iter().collect()),
        }
    }
}

/// Parses an `--at` value: `now`, `latest` (just after the lake's last event), a date
/// (UTC midnight) or an RFC 3339 instant.
pub fn parse_at(lake: &crate::lake::Lake, s: &str) -> Result<i64> {
    match s {
        "now" => Ok(crate::time::now()),
        "latest" => {
            let files = lake.data_files();
            if files.is_empty() {
                return Ok(crate::time::now());
            }
            use polars::prelude::*;
            let m = crate::lake::scan_files(lake, &files)?
                .select([col("ts").max().cast(DataType::Int64)])
                .collect()?;
            Ok(m.column("ts")?
                .i64()?
                .get(0)
                .map_or_else(crate::time::now, |t| t + 1))
        }
        _ => crate::time::parse_instant("--at", s),
    }
}

/// Tenants with events in [from, to) that the tenants file does not list: they have no
/// plan, so quotas and invoices leave them out (the CLI warns).
pub fn unlisted_tenants(
    lake: &crate::lake::Lake,
    billing: &Billing,
    from: i64,
    to: i64,
) -> Result<Vec<String>> {
    use polars::prelude::*;
    let Some(lf) = crate::lake::events_between(lake, None, from, to)? else {
        return Ok(Vec::new());
    };
    let df = lf.group_by([col("tenant_id")]).agg([len()]).collect()?;
    let known: std::collections::HashSet<&str> =
        billing.tenants.iter().map(|t| t.id.as_str()).collect();
    let ids = df.column("tenant_id")?.str()?;
    let mut out: Vec<String> = (0..ids.len())
        .filter_map(|i| ids.get(i))
        .filter(|t| !known.contains(t))
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::Zone;
    use crate::time::parse_instant;
    use std::path::Path;

    #[test]
    fn a_mid_period_change_prorates_allowance_and_fee() {
        let catalog = Catalog::load(Path::new(DEFAULT_PLANS_FILE)).unwrap();
        // Basic → Professional on 2026-09-11 00:00 UTC: 10 of September's 30 days on Basic.
        let tenant = Tenant {
            id: "t".into(),
            plan: "professional".into(),
            anchor: None,
            zone: Zone::UTC,
            plan_changed_at: Some(parse_instant("c", "2026-09-11").unwrap()),
            previous_plan: Some("basic".into()),
            notify_email: Vec::new(),
        };
        let at = parse_instant("at", "2026-09-20").unwrap();
        let t = Terms::at(&catalog, &tenant, at).unwrap();
        // documents: 100 · 1/3 + 500 · 2/3 = 366.67 → 367 at precision 0.
        assert_eq!(t.included("documents", 0), Some(Decimal::from(367)));
        // base fee: 29 · 1/3 + 99 · 2/3 = 75.666… → 75.67.
        assert_eq!(t.base_fee(2), Decimal::new(7567, 2));
        // Before the change, Basic alone.
        let early = parse_instant("at", "2026-09-05").unwrap();
        let t = Terms::at(&catalog, &tenant, early).unwrap();
        assert_eq!(t.plan.id, "basic");
        assert_eq!(t.included("documents", 0), Some(Decimal::from(100)));
        assert_eq!(t.base_fee(2), Decimal::new(2900, 2));
    }
}
