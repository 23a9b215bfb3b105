//! Usage queries: what each tenant used of each meter in a period, broken down by user or
//! property with shares, compared with another period; and engagement ([`engagement`]).
//!
//! A period is one window: its value is the meter's aggregation over all of the period's
//! events (the distinct users of a month, not the sum of daily distinct users; the last
//! storage reading, not a sum of readings), computed from the lake's events with polars.
//!
//! Shares: a breakdown row's share is its value over the tenant's total for the meter, in
//! percent (`share_pct`), as changes are (`change_pct`). For additive meters (count, sum,
//! duration) shares add up to 100 and the rows below the top N are summed into one
//! `(other)` row. For `unique_count` a share is "of the tenant's distinct users/values" (a
//! user can use several endpoints, so shares may add up to more than 100). Gauges and
//! statistics have no share.

pub mod engagement;
pub mod sessions;

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::rollup::{Dim, Meters, aggregate, aggregation_of};

pub use engagement::{
    DailyActive, Engagement, EngagementOptions, FeatureAdoption, UserCount, engagement,
};

/// The label of the row summing a breakdown's rows below the top N.
pub const OTHER: &str = "(other)";
/// Breakdown rows per tenant and meter by default.
pub const DEFAULT_TOP: usize = 10;

/// What to compare a period with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The period of the same length just before.
    Previous,
    /// An explicit period `[from, to)` (UTC µs).
    Range(i64, i64),
}

/// A usage query.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this meter (a configured meter's name, or an event meter's).
    pub meter: Option<String>,
    /// Period start (UTC µs, inclusive).
    pub from: i64,
    /// Period end (exclusive).
    pub to: i64,
    /// Break down by this dimension.
    pub by: Option<Dim>,
    /// Compare with another period.
    pub compare: Option<Compare>,
    /// Breakdown rows per tenant and meter (0: all).
    pub top: usize,
}

/// A period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// Start, RFC 3339 (UTC).
    pub from: String,
    /// End (exclusive).
    pub to: String,
}

impl Period {
    fn new(from: i64, to: i64) -> Period {
        Period {
            from: crate::time::rfc3339_micros(from),
            to: crate::time::rfc3339_micros(to),
        }
    }
}

/// One tenant × meter total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    /// Tenant.
    pub tenant_id: String,
    /// Meter.
    pub meter: String,
    /// Its aggregation (`count`, `sum`, ...).
    pub aggregation: String,
    /// Value over the period.
    pub value: f64,
    /// Events behind it.
    pub event_count: i64,
    /// Value over the comparison period (0 for zero-when-empty meters without events there).
    pub previous: Option<f64>,
    /// `value - previous`.
    pub change: Option<f64>,
    /// `change / previous * 100`, none when `previous` is 0 or missing.
    pub change_pct: Option<f64>,
}

/// One breakdown row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    /// Tenant.
    pub tenant_id: String,
    /// Meter.
    pub meter: String,
    /// The user or property value (`(none)` for events without one, `(other)` for the rest).
    pub key: String,
    /// Value over the period.
    pub value: f64,
    /// Events behind it.
    pub event_count: i64,
    /// Of the tenant's total for the meter, in percent (see the module docs).
    pub share_pct: Option<f64>,
    /// Value over the comparison period.
    pub previous: Option<f64>,
    /// `value - previous`.
    pub change: Option<f64>,
    /// In percent.
    pub change_pct: Option<f64>,
}

/// The answer to a [`UsageQuery`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// The period.
    pub period: Period,
    /// The comparison period, if any.
    pub compared_with: Option<Period>,
    /// The breakdown dimension (`user`, `property:KEY`), if any.
    pub by: Option<String>,
    /// Per tenant and meter, sorted.
    pub totals: Vec<Total>,
    /// Per tenant, meter and key: by value, largest first, top N then `(other)`.
    pub breakdown: Vec<Part>,
}

type Values = HashMap<(String, String, Option<String>), (f64, i64)>;
/// Breakdown rows of one tenant and meter: (key, value, events).
type Rows = Vec<(Option<String>, f64, i64)>;

/// Runs a usage query over the lake's events.
pub fn usage(lake: &Lake, meters: &Meters, q: &UsageQuery) -> Result<UsageReport> {
    let compared = comparison(q)?;
    let dims: Vec<Dim> = q.by.iter().cloned().collect();
    let totals_now = period_values(lake, meters, q, q.from, q.to, &[])?;
    let totals_before = compared
        .map(|(a, b)| period_values(lake, meters, q, a, b, &[]))
        .transpose()?;
    let totals = totals(meters, &totals_now, totals_before.as_ref());
    let breakdown = if dims.is_empty() {
        Vec::new()
    } else {
        let before = totals_before.as_ref();
        breakdown(lake, meters, q, &dims, compared, &totals, before)?
    };
    Ok(UsageReport {
        period: Period::new(q.from, q.to),
        compared_with: compared.map(|(from, to)| Period::new(from, to)),
        by: q.by.as_ref().map(Dim::spec),
        totals,
        breakdown,
    })
}

/// The comparison period of `q` (`[from, to)`, UTC µs), after checking both periods.
fn comparison(q: &UsageQuery) -> Result<Option<(i64, i64)>> {
    if q.from >= q.to {
        return Err(Error::InvalidParameter {
            name: "--from/--to",
            reason: "--from must be before --to".into(),
        });
    }
    Ok(match q.compare {
        None => None,
        Some(Compare::Previous) => Some((q.from - (q.to - q.from), q.from)),
        Some(Compare::Range(a, b)) if a < b => Some((a, b)),
        Some(Compare::Range(..)) => {
            return Err(Error::InvalidParameter {
                name: "--compare",
                reason: "the comparison period must end after it starts".into(),
            });
        }
    })
}

/// One total per tenant and meter, with its change from `before`, sorted.
fn totals(meters: &Meters, totals_now: &Values, totals_before: Option<&Values>) -> Vec<Total> {
    let mut totals: Vec<Total> = totals_now
        .iter()
        .map(|((t, m, _), &(v, n))| {
            let agg = aggregation_of(meters, m);
            let prev = totals_before.map(|b| {
                b.get(&(t.clone(), m.clone(), None))
                    .map(|p| p.0)
                    .unwrap_or(if agg.zero_when_empty() { 0.0 } else { f64::NAN })
            });
            let prev = prev.filter(|p| !p.is_nan());
            Total {
                tenant_id: t.clone(),
                meter: m.clone(),
                aggregation: agg.name().into(),
                value: v,
                event_count: n,
                previous: prev,
                change: prev.map(|p| v - p),
                change_pct: pct(v, prev),
            }
        })
        .collect();
    // What was used before and not at all now is a fall to zero (a churned tenant, a
    // retired meter): shown as 0, -100 %, where 0 is the value of an empty period.
    for ((t, m, k), &(p, _)) in totals_before.into_iter().flatten() {
        let agg = aggregation_of(meters, m);
        if k.is_none()
            && agg.zero_when_empty()
            && !totals_now.contains_key(&(t.clone(), m.clone(), None))
        {
            totals.push(Total {
                tenant_id: t.clone(),
                meter: m.clone(),
                aggregation: agg.name().into(),
                value: 0.0,
                event_count: 0,
                previous: Some(p),
                change: Some(-p),
                change_pct: pct(0.0, Some(p)),
            });
        }
    }
    totals.sort_by(|a, b| (&a.tenant_id, &a.meter).cmp(&(&b.tenant_id, &b.meter)));
    totals
}

/// The breakdown by `dims`: per tenant and meter (sorted), the top N keys, then `(other)`.
fn breakdown(
    lake: &Lake,
    meters: &Meters,
    q: &UsageQuery,
    dims: &[Dim],
    compared: Option<(i64, i64)>,
    totals: &[Total],
    totals_before: Option<&Values>,
) -> Result<Vec<Part>> {
    let now = period_values(lake, meters, q, q.from, q.to, dims)?;
    let before = compared
        .map(|(a, b)| period_values(lake, meters, q, a, b, dims))
        .transpose()?;
    let mut groups: BTreeMap<(String, String), Rows> = BTreeMap::new();
    for ((t, m, k), &(v, n)) in &now {
        groups
            .entry((t.clone(), m.clone()))
            .or_default()
            .push((k.clone(), v, n));
    }
    // A key used before and not at all now fell to zero (an endpoint no longer called):
    // a row of 0, -100 %, so the rows' changes add up to the total's.
    for (t, m, k) in before.iter().flat_map(|b| b.keys()) {
        if aggregation_of(meters, m).zero_when_empty()
            && !now.contains_key(&(t.clone(), m.clone(), k.clone()))
        {
            groups
                .entry((t.clone(), m.clone()))
                .or_default()
                .push((k.clone(), 0.0, 0));
        }
    }
    let mut breakdown = Vec::new();
    for ((t, m), rows) in groups {
        let agg = aggregation_of(meters, &m);
        let total = totals
            .iter()
            .find(|x| x.tenant_id == t && x.meter == m)
            .map(|x| x.value);
        let group = Group {
            shared: agg.additive() || agg == crate::rollup::Aggregation::UniqueCount,
            agg,
            total,
            before: before.as_ref(),
            t,
            m,
        };
        group.parts(rows, q.top, totals_before, &mut breakdown);
    }
    Ok(breakdown)
}

/// One tenant and meter of a breakdown.
struct Group<'a> {
    t: String,
    m: String,
    agg: crate::rollup::Aggregation,
    /// The tenant's total for the meter.
    total: Option<f64>,
    /// Whether its rows have shares.
    shared: bool,
    /// The comparison period's values per key.
    before: Option<&'a Values>,
}

impl Group<'_> {
    /// The value of key `k` over the comparison period (0 without events), if comparing.
    fn prev_of(&self, k: &Option<String>) -> Option<f64> {
        self.before.map(|b| {
            b.get(&(self.t.clone(), self.m.clone(), k.clone()))
                .map(|p| p.0)
                .unwrap_or(0.0)
        })
    }

    /// The share of `v` in the tenant's total, when the meter has shares.
    fn share(&self, v: f64) -> Option<f64> {
        match self.total {
            Some(tot) if self.shared && tot > 0.0 => Some(v / tot * 100.0),
            _ => None,
        }
    }

    /// Appends the group's rows to `out`: the top `top` by value (0: all), then `(other)`.
    fn parts(
        &self,
        mut rows: Rows,
        top: usize,
        totals_before: Option<&Values>,
        out: &mut Vec<Part>,
    ) {
        let (t, m, agg) = (&self.t, &self.m, self.agg);
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let keep = if top == 0 {
            rows.len()
        } else {
            top.min(rows.len())
        };
        for (k, v, n) in &rows[..keep] {
            let prev = if agg.zero_when_empty() {
                self.prev_of(k)
            } else {
                None
            };
            out.push(Part {
                tenant_id: t.clone(),
                meter: m.clone(),
                key: k.clone().unwrap_or_else(|| "(none)".into()),
                value: *v,
                event_count: *n,
                share_pct: self.share(*v),
                previous: prev,
                change: prev.map(|p| v - p),
                change_pct: pct(*v, prev),
            });
        }
        if keep < rows.len() && agg.additive() {
            let rest = &rows[keep..];
            let v: f64 = rest.iter().map(|r| r.1).sum();
            let prev = self.before.map(|_| {
                let all: f64 = totals_before
                    .and_then(|b| b.get(&(t.clone(), m.clone(), None)))
                    .map(|p| p.0)
                    .unwrap_or(0.0);
                let top: f64 = rows[..keep].iter().filter_map(|r| self.prev_of(&r.0)).sum();
                all - top
            });
            out.push(Part {
                tenant_id: t.clone(),
                meter: m.clone(),
                key: OTHER.into(),
                value: v,
                event_count: rest.iter().map(|r| r.2).sum(),
                share_pct: self.share(v),
                previous: prev,
                change: prev.map(|p| v - p),
                change_pct: pct(v, prev),
            });
        }
    }
}

fn pct(v: f64, prev: Option<f64>) -> Option<f64> {
    prev.filter(|p| *p != 0.0).map(|p| (v - p) / p * 100.0)
}

/// Values of one period per (tenant, meter, dimension value).
fn period_values(
    lake: &Lake,
    meters: &Meters,
    q: &UsageQuery,
    from: i64,
    to: i64,
    dims: &[Dim],
) -> Result<Values> {
    let Some(lf) = crate::lake::events_between(lake, q.tenant.as_deref(), from, to)? else {
        return Ok(Values::new());
    };
    let (df, _) = aggregate(lf, meters, lit(from), dims)?;
    let tenants = df.column("tenant_id")?.str()?;
    let ms = df.column("meter")?.str()?;
    let keys = match dims.first() {
        Some(d) => Some(df.column(&d.column())?.str()?.clone()),
        None => None,
    };
    let vs = df.column("value")?.f64()?;
    let ns = df.column("event_count")?.i64()?;
    let mut out = Values::new();
    for i in 0..df.height() {
        let m = ms.get(i).unwrap_or_default();
        if q.meter.as_deref().is_some_and(|want| want != m) {
            continue;
        }
        let k = keys.as_ref().and_then(|c| c.get(i).map(str::to_string));
        out.insert(
            (
                tenants.get(i).unwrap_or_default().to_string(),
                m.to_string(),
                k,
            ),
            (vs.get(i).unwrap_or(0.0), ns.get(i).unwrap_or(0)),
        );
    }
    Ok(out)
}
