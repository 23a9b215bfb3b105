//! Invoices: for each tenant, the period that starts in a given month (its calendar month,
//! or the cycle anchored to its subscription day, in its time zone), one line per billed
//! meter of its plan, the (prorated) base fee and the total. Deterministic: the same lake,
//! catalogue and tenants give the same bytes.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::measure::{Window, measure};
use super::plans::Limit;
use super::quota::overage;
use super::{Billing, Terms};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::time::rfc3339;

/// One line: a meter's usage and its overage amount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// The billed meter.
    pub meter: String,
    /// Billing unit.
    pub unit: String,
    /// The period's usage.
    pub usage: Decimal,
    /// Allowance (prorated across a plan change); `unlimited` when none.
    #[serde(serialize_with = "unlimited", deserialize_with = "limited")]
    pub included: Option<Decimal>,
    /// Units over it.
    pub overage_units: Decimal,
    /// Their price (rounded).
    pub amount: Decimal,
    /// How overage is priced (`0.50 per unit`, `hard cap`).
    pub pricing: String,
}

fn unlimited<S: serde::Serializer>(
    v: &Option<Decimal>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_str("unlimited"),
    }
}

/// A correction of an issued invoice, billed in the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adjustment {
    /// `PERIOD/TENANT/ITEM/SEQ`: unique, and how an invoice names what it applied.
    pub id: String,
    /// The issued period it corrects (`YYYY-MM`).
    pub period: String,
    /// The tenant.
    pub tenant_id: String,
    /// The meter, or `base_fee`.
    pub item: String,
    /// Usage added (negative: removed) against what was billed.
    pub usage: Decimal,
    /// Amount added: a debit when positive, a credit when negative.
    pub amount: Decimal,
    /// Why.
    pub reason: String,
    /// The lake commit that showed it.
    pub lake_seq: u64,
}

/// Reads what [`unlimited`] wrote.
fn limited<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Decimal>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "unlimited" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// One tenant's invoice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoice {
    /// The tenant.
    pub tenant_id: String,
    /// The plan at the period's end.
    pub plan: String,
    /// The plan before a change inside the period, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_plan: Option<String>,
    /// The period, RFC 3339, half-open.
    pub period_start: String,
    /// Its end.
    pub period_end: String,
    /// Lines, by meter name.
    pub lines: Vec<Line>,
    /// The (prorated) base fee.
    pub base_fee: Decimal,
    /// base_fee + Σ line amounts + Σ adjustments (saturating at the largest decimal).
    pub total: Decimal,
    /// Corrections of invoices issued before (late events), billed here; see
    /// `stage::invoices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<Adjustment>,
}

/// A period's invoices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoices {
    /// `YYYY-MM`.
    pub period: String,
    /// Currency of every amount.
    pub currency: String,
    /// One per tenant, by tenant id.
    pub invoices: Vec<Invoice>,
}

/// Parses `YYYY-MM`, exactly: a month is also the name of its issued invoices, so `2026-9`
/// (which would miss the issued `2026-09` and show a recomputed month) is refused.
pub fn parse_month(s: &str) -> Result<(i32, u32)> {
    let bad = || Error::InvalidParameter {
        name: "--period",
        reason: format!("`{s}` is not a month YYYY-MM"),
    };
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) {
        return Err(bad());
    }
    Ok((y, m))
}

/// Invoices for the period starting in `month` (`YYYY-MM`), for one tenant or all.
pub fn invoices(
    lake: &Lake,
    billing: &Billing,
    month: &str,
    tenant: Option<&str>,
) -> Result<Invoices> {
    let (y, m) = parse_month(month)?;
    let catalog = &billing.catalog;
    let tenants = billing.select(tenant)?;
    let mut terms = Vec::new();
    for t in &tenants {
        // Periods are cut by the tenant's current plan's cycle; the terms are those at the
        // period's last instant (prorated if the plan changed inside it).
        let plan = catalog
            .plan(&t.plan)
            .ok_or_else(|| Error::InvalidParameter {
                name: "plan",
                reason: format!("tenant {}: unknown plan `{}`", t.id, t.plan),
            })?;
        let span = t.cycle(plan).starting_in(y, m);
        let tm = Terms::at(catalog, t, span.end - 1)?;
        terms.push(tm);
    }
    // Gauges carry their last reading before the period in, however old (`measure`
    // finds it: see `super::gauge`).
    let windows: Vec<Window> = tenants
        .iter()
        .zip(&terms)
        .map(|(t, tm)| Window::new(&t.id, tm.span.start, tm.span.end))
        .collect();
    let measured = measure(lake, catalog, &windows)?;
    let mut out = Vec::new();
    for (t, tm) in tenants.iter().zip(&terms) {
        let mut lines = Vec::new();
        for (name, bm) in &catalog.meters {
            let Some(a) = tm.plan.meters.get(name) else {
                continue;
            };
            let usage = measured
                .get(&(t.id.clone(), name.clone()))
                .map(|m| m.used)
                .unwrap_or(Decimal::ZERO);
            let included = tm.included(name, bm.precision);
            let (units, amount) = overage(usage, included, &a.limit, catalog.minor_units);
            lines.push(Line {
                meter: name.clone(),
                unit: bm.unit.clone(),
                usage,
                included,
                overage_units: units,
                amount,
                pricing: match &a.limit {
                    Limit::HardCap => "hard cap".into(),
                    Limit::Overage(p) => p.describe(),
                },
            });
        }
        let base_fee = tm.base_fee(catalog.minor_units);
        let total = base_fee.saturating_add(super::saturating_sum(lines.iter().map(|l| l.amount)));
        out.push(Invoice {
            tenant_id: t.id.clone(),
            plan: tm.plan.id.clone(),
            previous_plan: tm.previous.map(|(p, _)| p.id.clone()),
            period_start: rfc3339(tm.span.start),
            period_end: rfc3339(tm.span.end),
            lines,
            base_fee,
            total,
            adjustments: Vec::new(),
        });
    }
    Ok(Invoices {
        period: format!("{y:04}-{m:02}"),
        currency: catalog.currency.clone(),
        invoices: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        assert_eq!(parse_month("2026-10").unwrap(), (2026, 10));
        assert_eq!(parse_month("2026-09").unwrap(), (2026, 9));
        // `2026-9` is not the name of the issued `2026-09`.
        for bad in [
            "2026-13", "2026", "26-10", "2026-00", "2026-1x", "2026-9", "2026-+9", "+202-09",
        ] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }
}
