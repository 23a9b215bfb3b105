//! Gauges (`max` and `time_weighted` meters): their level at any instant, by one rule every
//! consumer shares (invoices, quotas, `check`, plan comparison and the server's live
//! counters): **a gauge's level at the start of a period is its last reading before the
//! period, however old**, and each reading holds until the next.
//!
//! - [`carry_in`]: that reading, per tenant × gauge meter, from the lake;
//! - [`peak`]: a `max` gauge's usage, the highest level the period saw (the carried level
//!   included: storage held on the period's first day counts);
//! - [`time_weighted`]: a `time_weighted` gauge's usage, the average of the levels over the
//!   period so far.
//!
//! Readings at one instant are ordered by value, the larger last (the rollups' `latest`
//! tie rule), so every consumer picks the same one.
//!
//! [`carry_in`] does not read the whole history when it need not: it walks the lake's date
//! partitions backwards from the period's start in growing batches (8 dates, then 32, 128,
//! ...), reading four columns of the gauge meters' rows, and stops once every tenant ×
//! meter asked for has its reading. Gauges report often, so the first batch usually
//! answers; a tenant that never had a reading costs one pass over the older partitions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use polars::prelude::*;

use super::measure::is_one_of;
use super::plans::{Catalog, UsageRule};
use crate::error::Result;
use crate::lake::{DataFile, Lake};

/// A reading: instant (UTC µs) and value (lake units).
pub type Reading = (i64, f64);

/// Dates of partitions read in the first backward batch; each next batch is 4× larger.
const FIRST_BATCH: usize = 8;

/// The order of readings: by instant, then by value (at one instant the larger is later).
pub fn order(a: &Reading, b: &Reading) -> Ordering {
    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
}

/// The later of two readings by [`order`].
pub fn later(a: Option<Reading>, b: Option<Reading>) -> Option<Reading> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if order(&x, &y) == Ordering::Less {
            y
        } else {
            x
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The lake meters read by the catalogue's gauges (`max` and `time_weighted` billed
/// meters), sorted, once each.
pub fn gauge_events(catalog: &Catalog) -> Vec<String> {
    let mut v: Vec<String> = catalog
        .meters
        .values()
        .filter(|m| matches!(m.usage, UsageRule::Max | UsageRule::TimeWeighted))
        .map(|m| m.source())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The last reading strictly before each tenant's start (`starts`: one per tenant), however
/// old, of each lake meter of `meters`: (tenant, lake meter) → reading. A tenant × meter
/// without a reading before its start has no entry.
pub fn carry_in(
    lake: &Lake,
    meters: &[String],
    starts: &[(&str, i64)],
) -> Result<HashMap<(String, String), Reading>> {
    let mut out = HashMap::new();
    let Some(latest) = starts.iter().map(|s| s.1).max() else {
        return Ok(out);
    };
    if meters.is_empty() {
        return Ok(out);
    }
    // Partitions that may hold a reading before some start, newest first.
    let last_date = crate::time::date_str(latest.saturating_sub(1));
    let mut by_date: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for f in lake.data_files() {
        if f.date <= last_date {
            by_date.entry(f.date.clone()).or_default().push(f);
        }
    }
    let dates: Vec<&String> = by_date.keys().rev().collect();
    let mut wanted: HashSet<(String, String)> = starts
        .iter()
        .flat_map(|(t, _)| meters.iter().map(|m| (t.to_string(), m.clone())))
        .collect();
    let win = df!(
        "tenant_id" => starts.iter().map(|s| s.0.to_string()).collect::<Vec<_>>(),
        "_start" => starts.iter().map(|s| s.1).collect::<Vec<_>>(),
    )?
    .lazy();
    let (mut next, mut batch) = (0, FIRST_BATCH);
    while next < dates.len() && !wanted.is_empty() {
        let chunk = &dates[next..(next + batch).min(dates.len())];
        next += chunk.len();
        batch = batch.saturating_mul(4);
        let files: Vec<DataFile> = chunk
            .iter()
            .flat_map(|d| by_date[*d].iter().cloned())
            .collect();
        let unique = |f: fn(&(String, String)) -> &String| -> Vec<String> {
            let set: HashSet<&String> = wanted.iter().map(f).collect();
            set.into_iter().cloned().collect()
        };
        let (tenants, lake_meters) = (unique(|k| &k.0), unique(|k| &k.1));
        let last = |c: &str, alias: &str| {
            col(c)
                .sort_by([col("_ts"), col("value")], SortMultipleOptions::default())
                .last()
                .alias(alias)
        };
        let scan = crate::lake::scan_files(lake, &files)?.filter(is_one_of("tenant_id", tenants));
        let df = super::measure::of_sources(scan, lake_meters)?
            .select([col("tenant_id"), col("meter"), col("_ts"), col("value")])
            .join(
                win.clone(),
                [col("tenant_id")],
                [col("tenant_id")],
                JoinArgs::new(JoinType::Inner),
            )
            .filter(col("_ts").lt(col("_start")))
            .group_by([col("tenant_id"), col("meter")])
            .agg([last("_ts", "_last_ts"), last("value", "_last")])
            .collect()?;
        let t = df.column("tenant_id")?.str()?;
        let m = df.column("meter")?.str()?;
        let ts = df.column("_last_ts")?.i64()?;
        let v = df.column("_last")?.cast(&DataType::Float64)?;
        let v = v.f64()?;
        for r in 0..df.height() {
            let key = (
                t.get(r).unwrap_or_default().to_string(),
                m.get(r).unwrap_or_default().to_string(),
            );
            if let (Some(ts), Some(v)) = (ts.get(r), v.get(r))
                && wanted.remove(&key)
            {
                out.insert(key, (ts, v));
            }
        }
    }
    Ok(out)
}

/// A `max` gauge's usage over a period: the highest of the level carried in (`carry`'s
/// value) and the readings inside (`inside`, their maximum); none without either.
pub fn peak(carry: Option<Reading>, inside: Option<f64>) -> Option<f64> {
    match (carry.map(|c| c.1), inside) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The time-weighted average of the level over [start, at): `carry` (the last reading
/// before `start`, see [`carry_in`]) holds from `start` until the first reading, each
/// reading until the next. `readings` are sorted by [`order`]; those before `start` may be
/// given too (the last of them and `carry` carry in alike), those from `at` on are ignored.
/// Time before the first known level is not counted; no level at all averages to 0.
pub fn time_weighted(carry: Option<Reading>, readings: &[Reading], start: i64, at: i64) -> f64 {
    let mut weighted = 0.0;
    let mut covered = 0i64;
    let mut current: Option<Reading> = None;
    for &(t, v) in carry.iter().chain(readings).filter(|r| r.0 < at) {
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

    const H: i64 = 3_600_000_000;
    const DAY: i64 = 24 * H;

    #[test]
    fn time_weighted_by_hand() {
        // 10 GB before the period, 30 GB from hour 6 of a 24 h window: (6·10 + 18·30)/24 = 25.
        assert_eq!(
            time_weighted(Some((-H, 10.0)), &[(6 * H, 30.0)], 0, 24 * H),
            25.0
        );
        // The same with the earlier reading among the readings.
        assert_eq!(
            time_weighted(None, &[(-H, 10.0), (6 * H, 30.0)], 0, 24 * H),
            25.0
        );
        // No reading before the period: only the covered 18 hours count.
        assert_eq!(time_weighted(None, &[(6 * H, 30.0)], 0, 24 * H), 30.0);
        assert_eq!(time_weighted(None, &[], 0, 24 * H), 0.0);
        // Only the carried level: it is the average, however old.
        assert_eq!(time_weighted(Some((-400 * DAY, 7.0)), &[], 0, 24 * H), 7.0);
    }

    #[test]
    fn the_issue_example_averages_to_320_over_31() {
        // 8 GB on Aug 2 (60 days before October), 2 GB on Oct 11, 20 GB on Oct 21:
        // (8·10 + 2·10 + 20·11)/31 = 10.3226.
        let avg = time_weighted(
            Some((-60 * DAY, 8.0)),
            &[(10 * DAY, 2.0), (20 * DAY, 20.0)],
            0,
            31 * DAY,
        );
        assert!((avg - 320.0 / 31.0).abs() < 1e-12, "{avg}");
    }

    #[test]
    fn peaks_count_the_carried_level() {
        assert_eq!(peak(Some((-DAY, 9.0)), Some(6.5)), Some(9.0));
        assert_eq!(peak(Some((-DAY, 4.5)), None), Some(4.5));
        assert_eq!(peak(None, Some(6.5)), Some(6.5));
        assert_eq!(peak(None, None), None);
    }

    #[test]
    fn the_larger_reading_of_an_instant_is_the_later() {
        assert_eq!(later(Some((5, 1.0)), Some((5, 2.0))), Some((5, 2.0)));
        assert_eq!(later(Some((6, 1.0)), Some((5, 2.0))), Some((6, 1.0)));
        assert_eq!(later(None, Some((5, 2.0))), Some((5, 2.0)));
    }
}
