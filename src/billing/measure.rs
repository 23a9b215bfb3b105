//! Measuring a billing period's usage from the lake's events, exactly at the period's
//! edges (each tenant's own period, cut at its local midnight), plus the daily history a
//! projection forecasts from.
//!
//! One polars query per call: the events of the billed lake meters between the earliest
//! history start and the latest measuring instant, joined to each tenant's window
//! ([`window_events`], also the join seat use counts from), grouped per (tenant, meter, day
//! before `at`, inside the period or not) ([`daily_buckets`]). Seats (`unique_users`) take a
//! second query (each user's first event in the period); time-weighted gauges a third (their
//! readings). Each (tenant, billed meter) is then folded by its usage rule ([`fold`]).

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

use super::plans::{BillingMeter, Catalog, UsageRule};
use crate::error::Result;
use crate::lake::Lake;
use crate::rollup::collect_streaming;
use crate::time::MICROS_PER_DAY;

/// What to measure for one tenant.
#[derive(Debug, Clone)]
pub struct Window {
    /// The tenant.
    pub tenant: String,
    /// Its period's first instant (UTC µs).
    pub start: i64,
    /// Measure up to (excluding) this instant.
    pub at: i64,
    /// Daily history is kept from here (≤ start for a projection, = start otherwise).
    pub history_from: i64,
}

impl Window {
    /// `tenant`'s period starting at `start`, measured up to (excluding) `at`, with daily
    /// history from the period's start; see [`Window::with_history_from`] for a longer one.
    pub fn new(tenant: &str, start: i64, at: i64) -> Self {
        Window {
            tenant: tenant.to_string(),
            start,
            at,
            history_from: start,
        }
    }

    /// The same window keeping daily history from `from` (the join reads from
    /// `min(from, start)`).
    pub fn with_history_from(self, from: i64) -> Self {
        Window {
            history_from: from,
            ..self
        }
    }
}

/// One tenant's usage of one billed meter.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Usage in the period so far, in billing units at the meter's precision.
    pub used: Decimal,
    /// The last reading (gauges), billing units.
    pub latest: Option<f64>,
    /// Daily amounts in billing units, oldest first; the last covers [at − 1 day, at).
    /// Counters: sums; `max`/`time_weighted` gauges: the day's highest reading (carried
    /// over days without one); seats: users first seen in the period that day.
    pub daily: Vec<f64>,
    /// Events counted.
    pub events: u64,
}

/// Rounds a quantity to `dp` places, half away from zero.
pub fn round_qty(q: Decimal, dp: u32) -> Decimal {
    q.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// Lake units → billing units at the meter's precision.
fn to_units(v: f64, scale: Decimal, dp: u32) -> Decimal {
    let d = Decimal::from_f64(v).unwrap_or(Decimal::MAX);
    round_qty(d / scale, dp)
}

fn to_f64(d: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or(f64::NAN)
}

/// Usage per (tenant, billed meter) for each window. Tenants without events get no entry.
pub fn measure(
    lake: &Lake,
    catalog: &Catalog,
    windows: &[Window],
) -> Result<HashMap<(String, String), Measured>> {
    let mut out = HashMap::new();
    let lake_meters: Vec<String> = {
        let mut v: Vec<String> = catalog.meters.values().map(|m| m.event.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let Some(joined) = window_events(lake, None, lake_meters, windows)? else {
        return Ok(out);
    };
    let by_key = daily_buckets(&joined)?;
    let wins: HashMap<&str, &Window> = windows.iter().map(|w| (w.tenant.as_str(), w)).collect();
    let seats = seat_firsts(&joined, catalog)?;
    let readings = gauge_readings(&joined, catalog)?;
    for (name, bm) in &catalog.meters {
        for ((tenant, lake_meter), buckets) in &by_key {
            if *lake_meter != bm.event {
                continue;
            }
            let Some(w) = wins.get(tenant.as_str()) else {
                continue;
            };
            let key = (tenant.clone(), lake_meter.clone());
            let firsts = seats.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
            let r = readings.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
            out.insert(
                (tenant.clone(), name.clone()),
                fold(bm, w, buckets, firsts, r),
            );
        }
    }
    Ok(out)
}

/// The lake events of `meters` (lake meter names) in [history_from, at) of each window's
/// tenant (`tenant` narrows the scan to one), with the window's columns: `tenant_id`,
/// `meter`, `_ts` (the event's instant, µs), `value`, `user_id`, `_start`, `_at` and `_hist`
/// (`min(history_from, start)`). An event matches every window of its tenant it falls in.
/// None when the windows span no time or the lake has no events in it.
pub(crate) fn window_events(
    lake: &Lake,
    tenant: Option<&str>,
    meters: Vec<String>,
    windows: &[Window],
) -> Result<Option<LazyFrame>> {
    let hist = |w: &Window| w.history_from.min(w.start);
    let from = windows.iter().map(hist).min().unwrap_or(0);
    let to = windows.iter().map(|w| w.at).max().unwrap_or(0);
    if from >= to {
        return Ok(None);
    }
    let Some(events) = crate::lake::events_between(lake, tenant, from, to)? else {
        return Ok(None);
    };
    let win = df!(
        "tenant_id" => windows.iter().map(|w| w.tenant.clone()).collect::<Vec<_>>(),
        "_start" => windows.iter().map(|w| w.start).collect::<Vec<_>>(),
        "_at" => windows.iter().map(|w| w.at).collect::<Vec<_>>(),
        "_hist" => windows.iter().map(hist).collect::<Vec<_>>(),
    )?
    .lazy();
    let ts = col("ts").cast(DataType::Int64);
    Ok(Some(
        events
            .filter(meter_in(meters))
            .select([
                col("tenant_id"),
                col("meter"),
                ts.alias("_ts"),
                col("value"),
                col("user_id"),
            ])
            .join(
                win,
                [col("tenant_id")],
                [col("tenant_id")],
                JoinArgs::new(JoinType::Inner),
            )
            .filter(
                col("_ts")
                    .gt_eq(col("_hist"))
                    .and(col("_ts").lt(col("_at"))),
            ),
    ))
}

/// One (tenant, lake meter, day before `at`, inside the period or not) group of events.
struct Bucket {
    back: i64,
    inside: bool,
    sum: f64,
    max: f64,
    last: f64,
    last_ts: i64,
    n: u64,
}

/// The daily aggregation of [`window_events`]: per (tenant, lake meter), its buckets (day
/// counted back from `at`, inside the period or not) with sum, max, last reading and count.
fn daily_buckets(joined: &LazyFrame) -> Result<BTreeMap<(String, String), Vec<Bucket>>> {
    let daily = joined
        .clone()
        .with_columns([
            ((col("_at") - col("_ts") - lit(1i64)) / lit(MICROS_PER_DAY)).alias("_back"),
            col("_ts").gt_eq(col("_start")).alias("_in"),
        ])
        .group_by([col("tenant_id"), col("meter"), col("_back"), col("_in")])
        .agg([
            col("value").sum().alias("_sum"),
            col("value").max().alias("_max"),
            col("value")
                .sort_by([col("_ts"), col("value")], SortMultipleOptions::default())
                .last()
                .alias("_last"),
            col("_ts").max().alias("_last_ts"),
            len().cast(DataType::UInt64).alias("_n"),
        ]);
    let daily = collect_streaming(daily)?;
    let mut by_key: BTreeMap<(String, String), Vec<Bucket>> = BTreeMap::new();
    let t = daily.column("tenant_id")?.str()?;
    let m = daily.column("meter")?.str()?;
    let b = daily.column("_back")?.i64()?;
    let i = daily.column("_in")?.bool()?;
    let s = daily.column("_sum")?.f64()?;
    let x = daily.column("_max")?.f64()?;
    let l = daily.column("_last")?.f64()?;
    let lt = daily.column("_last_ts")?.i64()?;
    let n = daily.column("_n")?.u64()?;
    for r in 0..daily.height() {
        by_key
            .entry((
                t.get(r).unwrap_or_default().to_string(),
                m.get(r).unwrap_or_default().to_string(),
            ))
            .or_default()
            .push(Bucket {
                back: b.get(r).unwrap_or(0),
                inside: i.get(r).unwrap_or(false),
                sum: s.get(r).unwrap_or(0.0),
                max: x.get(r).unwrap_or(f64::NAN),
                last: l.get(r).unwrap_or(f64::NAN),
                last_ts: lt.get(r).unwrap_or(i64::MIN),
                n: n.get(r).unwrap_or(0),
            });
    }
    Ok(by_key)
}

/// The days of a window's daily history: [min(history_from, start), at) in whole days.
struct Days(usize);

impl Days {
    fn of(w: &Window) -> Self {
        let n = ((w.at - w.history_from.min(w.start)) + MICROS_PER_DAY - 1) / MICROS_PER_DAY;
        Days(n.max(0) as usize)
    }

    /// The history slot of the day `back` days before `at` (clamped into the history).
    fn slot(&self, back: i64) -> usize {
        (self.0 as i64 - 1 - back).clamp(0, self.0 as i64 - 1) as usize
    }
}

/// Lake units → billing units, unrounded (daily history and readings).
fn unit(bm: &BillingMeter, v: f64) -> f64 {
    to_f64(Decimal::from_f64(v).unwrap_or_default() / bm.scale)
}

/// One (tenant, lake meter)'s buckets folded into a billed meter's usage by its rule:
/// the period's usage, the latest reading, the daily history (gauges carry their last
/// reading over days without one; the history starts at its first day with data, or at
/// the period's start for seats) and the events counted. `firsts` are the seat users'
/// first instants ([`seat_firsts`]), `readings` the gauge's readings ([`gauge_readings`]).
fn fold(
    bm: &BillingMeter,
    w: &Window,
    buckets: &[Bucket],
    firsts: &[i64],
    readings: &[(i64, f64)],
) -> Measured {
    let days = Days::of(w);
    let n_days = days.0;
    let events: u64 = buckets.iter().filter(|b| b.inside).map(|b| b.n).sum();
    let latest = buckets
        .iter()
        .filter(|b| b.last.is_finite())
        .max_by_key(|b| b.last_ts)
        .map(|b| unit(bm, b.last));
    let (used, mut daily) = match bm.usage {
        UsageRule::Sum => fold_sum(bm, &days, buckets),
        UsageRule::Max | UsageRule::TimeWeighted => fold_gauge(bm, w, &days, buckets, readings),
        UsageRule::UniqueUsers => fold_seats(bm, w, &days, firsts),
    };
    // Gauges: carry the last reading over days without one; before the first, drop.
    if !bm.usage.additive() {
        let mut last = f64::NAN;
        for d in daily.iter_mut() {
            if d.is_nan() {
                *d = last;
            } else {
                last = *d;
            }
        }
    }
    // History starts at the series' first day with data (a tenant that joined
    // recently has no zeros before it).
    let first = match bm.usage {
        UsageRule::UniqueUsers => {
            // Seats history is the period's days only.
            let in_period = ((w.at - w.start) + MICROS_PER_DAY - 1) / MICROS_PER_DAY;
            n_days.saturating_sub(in_period as usize)
        }
        _ => buckets
            .iter()
            .map(|b| days.slot(b.back))
            .min()
            .unwrap_or(n_days),
    };
    let daily: Vec<f64> = daily[first.min(n_days)..]
        .iter()
        .map(|v| if v.is_nan() { 0.0 } else { *v })
        .collect();
    Measured {
        used,
        latest,
        daily,
        events,
    }
}

/// `sum` rule: the period's total, and the daily sums (every day 0 without events).
fn fold_sum(bm: &BillingMeter, days: &Days, buckets: &[Bucket]) -> (Decimal, Vec<f64>) {
    let mut daily = vec![0.0; days.0];
    for b in buckets {
        if days.0 > 0 {
            daily[days.slot(b.back)] += unit(bm, b.sum);
        }
    }
    let total: f64 = buckets.iter().filter(|b| b.inside).map(|b| b.sum).sum();
    (to_units(total, bm.scale, bm.precision), daily)
}

/// `max` and `time_weighted` rules: the period's highest reading or time-weighted average
/// of `readings`, and each day's highest reading (NaN on days without one).
fn fold_gauge(
    bm: &BillingMeter,
    w: &Window,
    days: &Days,
    buckets: &[Bucket],
    readings: &[(i64, f64)],
) -> (Decimal, Vec<f64>) {
    let mut daily = vec![f64::NAN; days.0];
    for b in buckets {
        if days.0 > 0 && b.max.is_finite() {
            let d = &mut daily[days.slot(b.back)];
            *d = if d.is_nan() {
                unit(bm, b.max)
            } else {
                d.max(unit(bm, b.max))
            };
        }
    }
    let used = if bm.usage == UsageRule::Max {
        let m = buckets
            .iter()
            .filter(|b| b.inside)
            .map(|b| b.max)
            .fold(f64::NAN, f64::max);
        if m.is_finite() {
            to_units(m, bm.scale, bm.precision)
        } else {
            Decimal::ZERO
        }
    } else {
        let avg = time_weighted(readings, w.start, w.at);
        to_units(avg, bm.scale, bm.precision)
    };
    (used, daily)
}

/// `unique_users` rule: the period's distinct users, and the users first seen each day.
fn fold_seats(bm: &BillingMeter, w: &Window, days: &Days, firsts: &[i64]) -> (Decimal, Vec<f64>) {
    let mut daily = vec![0.0; days.0];
    for &f in firsts {
        if days.0 > 0 {
            daily[days.slot((w.at - f - 1) / MICROS_PER_DAY)] += 1.0;
        }
    }
    // Seats count before any scale: one user is one seat.
    let used = round_qty(Decimal::from(firsts.len() as u64) / bm.scale, bm.precision);
    (used, daily)
}

/// Whether an event's lake meter is one of `names`.
pub(crate) fn meter_in(names: Vec<String>) -> Expr {
    col("meter").is_in(lit(Series::new("m".into(), names)).implode(false), false)
}

/// The lake meters read by billed meters measured with `rule`.
fn events_measured_by(catalog: &Catalog, rule: UsageRule) -> Vec<String> {
    catalog
        .meters
        .values()
        .filter(|m| m.usage == rule)
        .map(|m| m.event.clone())
        .collect()
}

/// Each seat user's first event in its tenant's period: (tenant, lake meter) → instants.
fn seat_firsts(
    joined: &LazyFrame,
    catalog: &Catalog,
) -> Result<HashMap<(String, String), Vec<i64>>> {
    let metered = events_measured_by(catalog, UsageRule::UniqueUsers);
    let mut out: HashMap<(String, String), Vec<i64>> = HashMap::new();
    if metered.is_empty() {
        return Ok(out);
    }
    let df = joined
        .clone()
        .filter(
            meter_in(metered)
                .and(col("_ts").gt_eq(col("_start")))
                .and(col("user_id").is_not_null()),
        )
        .group_by([col("tenant_id"), col("meter"), col("user_id")])
        .agg([col("_ts").min().alias("_first")]);
    let df = collect_streaming(df)?;
    let t = df.column("tenant_id")?.str()?;
    let m = df.column("meter")?.str()?;
    let f = df.column("_first")?.i64()?;
    for r in 0..df.height() {
        out.entry((
            t.get(r).unwrap_or_default().to_string(),
            m.get(r).unwrap_or_default().to_string(),
        ))
        .or_default()
        .push(f.get(r).unwrap_or(0));
    }
    Ok(out)
}

/// (tenant, lake meter) → readings (ts, value), sorted by time.
type Readings = HashMap<(String, String), Vec<(i64, f64)>>;

/// Readings of time-weighted gauges, sorted by time.
fn gauge_readings(joined: &LazyFrame, catalog: &Catalog) -> Result<Readings> {
    let metered = events_measured_by(catalog, UsageRule::TimeWeighted);
    let mut out: Readings = HashMap::new();
    if metered.is_empty() {
        return Ok(out);
    }
    let df = joined.clone().filter(meter_in(metered)).select([
        col("tenant_id"),
        col("meter"),
        col("_ts"),
        col("value"),
    ]);
    let df = collect_streaming(df)?;
    let t = df.column("tenant_id")?.str()?;
    let m = df.column("meter")?.str()?;
    let ts = df.column("_ts")?.i64()?;
    let v = df.column("value")?.f64()?;
    for r in 0..df.height() {
        out.entry((
            t.get(r).unwrap_or_default().to_string(),
            m.get(r).unwrap_or_default().to_string(),
        ))
        .or_default()
        .push((ts.get(r).unwrap_or(0), v.get(r).unwrap_or(0.0)));
    }
    for r in out.values_mut() {
        r.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    }
    Ok(out)
}

/// The time-weighted average of a step function of readings over [start, at): each reading
/// holds until the next; the last reading before `start` carries into the period; time
/// before the first known reading is not counted.
pub fn time_weighted(readings: &[(i64, f64)], start: i64, at: i64) -> f64 {
    let mut weighted = 0.0;
    let mut covered = 0i64;
    let mut current: Option<(i64, f64)> = None;
    for &(t, v) in readings.iter().filter(|r| r.0 < at) {
        if let Some((ct, cv)) = current {
            let a = ct.max(start);
            if t > a {
                weighted += cv * (t - a) as f64;
                covered += t - a;
            }
        }
        current = Some((t, v));
    }
    if let Some((ct, cv)) = current {
        let a = ct.max(start);
        if at > a {
            weighted += cv * (at - a) as f64;
            covered += at - a;
        }
    }
    if covered > 0 {
        weighted / covered as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_weighted_by_hand() {
        let h = 3_600_000_000i64;
        // 10 GB before the period, 30 GB from hour 6 of a 24 h window: (6·10 + 18·30)/24 = 25.
        let r = [(-h, 10.0), (6 * h, 30.0)];
        assert_eq!(time_weighted(&r, 0, 24 * h), 25.0);
        // No reading before the period: only the covered 18 hours count.
        assert_eq!(time_weighted(&[(6 * h, 30.0)], 0, 24 * h), 30.0);
        assert_eq!(time_weighted(&[], 0, 24 * h), 0.0);
    }
}
