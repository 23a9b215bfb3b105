//! Seat use: of the distinct users a tenant pays seat overage for in its current period,
//! how many were active on a single day only, and what the overage would cost without them.
//!
//! Reads the quota rows ([`super::quota::quotas`]) and the lake's events of each billed
//! seat meter since its period's start; the report's `idle_seats` insight is built from it.
//! A seat is a distinct `user_id` of the billed meter's lake event; a day is a UTC day.

use std::collections::HashMap;

use polars::prelude::*;
use rust_decimal::Decimal;

use super::measure::{Window, window_events};
use super::plans::{Limit, UsageRule};
use super::quota::QuotaRow;
use super::{Billing, round_money};
use crate::error::Result;
use crate::lake::Lake;
use crate::time::MICROS_PER_DAY;

/// Seats billed for a tenant's current period (a `unique_users` meter over its allowance),
/// and how many of those users were active on a single day only.
#[derive(Debug, Clone)]
pub struct SeatUse {
    /// Tenant.
    pub tenant_id: String,
    /// The billed seat meter.
    pub meter: String,
    /// Distinct users billed so far.
    pub billed: u64,
    /// Seats over the allowance (paid as overage).
    pub over: Decimal,
    /// Users active on exactly one day of the period.
    pub one_day_users: u64,
    /// What the overage would cost without them (currency), and with.
    pub cost_without: Decimal,
    /// The overage cost so far.
    pub cost: Decimal,
}

/// Seat use of every quota row paying seat overage (`quotas` evaluated at `at`; `tenant`
/// narrows the lake scan to one tenant): billed users, and those active on a single (UTC)
/// day from the row's period start to `at`.
pub fn seat_use(
    lake: &Lake,
    billing: &Billing,
    quotas: &[QuotaRow],
    tenant: Option<&str>,
    at: i64,
) -> Result<Vec<SeatUse>> {
    let rows: Vec<&QuotaRow> = quotas
        .iter()
        .filter(|q| q.overage_units > Decimal::ZERO)
        .filter(|q| {
            billing
                .catalog
                .meters
                .get(&q.meter)
                .is_some_and(|m| m.usage == UsageRule::UniqueUsers)
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let found = users_per_tenant(lake, billing, &rows, tenant, at)?;
    let mut out = Vec::new();
    for q in rows {
        let Some(&(billed, one_day)) = found.get(q.tenant_id.as_str()) else {
            continue;
        };
        let Some(plan) = billing.catalog.plan(&q.plan) else {
            continue;
        };
        let Limit::Overage(p) = &plan.allowance(&q.meter).limit else {
            continue;
        };
        let fewer = (q.overage_units - Decimal::from(one_day)).max(Decimal::ZERO);
        out.push(SeatUse {
            tenant_id: q.tenant_id.clone(),
            meter: q.meter.clone(),
            billed,
            over: q.overage_units,
            one_day_users: one_day,
            cost_without: round_money(p.cost(fewer), billing.catalog.minor_units),
            cost: q.overage_cost,
        });
    }
    Ok(out)
}

/// Per tenant of `rows`: (distinct users, users active on one UTC day only) of the row's
/// billed meter's lake events from its period start to `at`.
///
/// The events come from the billing join ([`window_events`], one window per row); a row's
/// window keeps only its own billed meter's lake event (an inner join on tenant, period
/// start and lake meter), so a tenant with two seat rows counts each from its own start.
fn users_per_tenant(
    lake: &Lake,
    billing: &Billing,
    rows: &[&QuotaRow],
    tenant: Option<&str>,
    at: i64,
) -> Result<HashMap<String, (u64, u64)>> {
    let start_of = |q: &QuotaRow| {
        chrono::DateTime::parse_from_rfc3339(&q.period_start)
            .map(|d| d.timestamp_micros())
            .unwrap_or(at)
    };
    // Seats are counted from the billed meter's lake events only.
    let event_of = |q: &QuotaRow| {
        billing
            .catalog
            .meters
            .get(&q.meter)
            .map_or(q.meter.clone(), |m| m.source())
    };
    let windows: Vec<Window> = rows
        .iter()
        .map(|q| Window::new(&q.tenant_id, start_of(q), at))
        .collect();
    let events: Vec<String> = {
        let mut v: Vec<String> = rows.iter().map(|q| event_of(q)).collect();
        v.sort();
        v.dedup();
        v
    };
    let Some(joined) = window_events(lake, tenant, events, &windows)? else {
        return Ok(HashMap::new());
    };
    let own = df!(
        "tenant_id" => rows.iter().map(|q| q.tenant_id.clone()).collect::<Vec<_>>(),
        "_start" => rows.iter().map(|q| start_of(q)).collect::<Vec<_>>(),
        "meter" => rows.iter().map(|q| event_of(q)).collect::<Vec<_>>(),
    )?
    .lazy()
    .unique(None, UniqueKeepStrategy::Any);
    let keys = [col("tenant_id"), col("_start"), col("meter")];
    let df = joined
        .filter(col("user_id").is_not_null())
        .join(own, keys.clone(), keys, JoinArgs::new(JoinType::Inner))
        .group_by([col("tenant_id"), col("user_id")])
        .agg([(col("_ts") / lit(MICROS_PER_DAY)).n_unique().alias("days")])
        .group_by([col("tenant_id")])
        .agg([
            len().alias("users"),
            col("days").eq(lit(1)).sum().alias("one_day"),
        ])
        .collect()?;
    let t = df.column("tenant_id")?.str()?;
    let one = df.column("one_day")?.cast(&DataType::UInt64)?;
    let one = one.u64()?;
    let users = df.column("users")?.cast(&DataType::UInt64)?;
    let users = users.u64()?;
    Ok((0..df.height())
        .map(|i| {
            (
                t.get(i).unwrap_or_default().to_string(),
                (users.get(i).unwrap_or(0), one.get(i).unwrap_or(0)),
            )
        })
        .collect())
}
