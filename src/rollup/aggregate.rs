//! The aggregation engine: events of a lazy scan → one row per (tenant, meter, dimensions,
//! window) with the meter's value and the number of events behind it.
//!
//! Meters that aggregate `value` (or `user_id`) share one polars `group_by` over the scan;
//! each meter that reads a property gets its own (the property is parsed from the
//! `properties` JSON only for its events).
//!
//! Also how a period's value combines from its days' values ([`Aggregation::combine_days`]),
//! which reports use to compare periods.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use polars::prelude::*;

use super::meters::{Aggregation, Meter, Meters};
use crate::error::{Error, Result};

/// A breakdown dimension of a rollup (`--by`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Per `user_id` (events without one form their own null group).
    User,
    /// Per value of a property (`property:endpoint`), in column `dim_endpoint`.
    Property(String),
}

impl Dim {
    /// The output column.
    pub fn column(&self) -> String {
        match self {
            Dim::User => "user_id".into(),
            Dim::Property(k) => format!("dim_{k}"),
        }
    }

    /// Name in paths and on the command line (`user`, `property:endpoint`).
    pub fn spec(&self) -> String {
        match self {
            Dim::User => "user".into(),
            Dim::Property(k) => format!("property:{k}"),
        }
    }

    fn expr(&self) -> Expr {
        match self {
            Dim::User => col("user_id"),
            Dim::Property(k) => property_expr(k).alias(self.column()),
        }
    }
}

impl FromStr for Dim {
    type Err = Error;
    fn from_str(s: &str) -> Result<Dim> {
        if s == "user" {
            return Ok(Dim::User);
        }
        match s.strip_prefix("property:") {
            Some(k) if is_plain_key(k) => Ok(Dim::Property(k.to_string())),
            _ => Err(Error::InvalidParameter {
                name: "--by",
                reason: format!(
                    "`{s}`: expected `user` or `property:KEY` with KEY of letters, digits, `_`, `-` or `.` (nested data: `usage.model`)"
                ),
            }),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !k.starts_with('.')
        && !k.ends_with('.')
        && !k.contains("..")
}

/// A property of the event's `properties` JSON, as text (numbers and booleans as written).
pub fn property_expr(key: &str) -> Expr {
    col("properties")
        .str()
        .json_path_match(lit(format!("$['{key}']")))
}

/// The number a property holds, for a meter that reads one: its text cast to a float. A
/// value that is no finite number ("NaN", "inf", `1e999`, words) is no reading (null), as a
/// non-finite `value` is rejected at ingest: one "NaN" made a sum NaN and a p50 wrong.
pub fn property_number(key: &str) -> Expr {
    let x = property_expr(key).cast(DataType::Float64);
    when(x.clone().is_finite())
        .then(x)
        .otherwise(lit(Null {}).cast(DataType::Float64))
}

/// The columns identifying a series: tenant, meter, then the dimensions.
pub fn key_columns(dims: &[Dim]) -> Vec<String> {
    let mut k = vec!["tenant_id".to_string(), "meter".to_string()];
    k.extend(dims.iter().map(Dim::column));
    k
}

/// The value expression of an aggregation over `x` (numbers) within a group.
fn agg_expr(a: Aggregation, x: Expr, distinct_of: Expr) -> Expr {
    match a {
        Aggregation::Count => len().cast(DataType::Float64),
        Aggregation::Sum | Aggregation::Duration => x.sum(),
        Aggregation::Max => x.max(),
        Aggregation::Min => x.min(),
        Aggregation::Avg => x.mean(),
        Aggregation::UniqueCount => distinct_of.drop_nulls().n_unique().cast(DataType::Float64),
        // The last reading by time; of readings at the same instant, the largest.
        // The last reading by time; of readings at the same instant, the largest. Sorting
        // within each group is far faster in polars than a filter against the group's max.
        // Rows without a reading (a property meter's events lacking it) sort first.
        Aggregation::Latest => x
            .clone()
            .sort_by(
                [x.clone().is_not_null(), col("ts"), x],
                SortMultipleOptions::default(),
            )
            .last(),
        Aggregation::P50 | Aggregation::P95 | Aggregation::P99 => x.quantile(
            lit(a.quantile().expect("a percentile")),
            QuantileMethod::Linear,
        ),
    }
}

fn agg_column(a: Aggregation) -> String {
    format!("_{}", a.name())
}

/// Aggregates `events` (a lazy scan with the lake's columns) per tenant, meter, `dims` and
/// window (`window`: an Int64 expression of UTC µs). Returns the rows (columns
/// `tenant_id, meter, dims..., window_start, value, event_count`, unsorted) and the event
/// meters no definition reads (rolled up with `sum`).
pub fn aggregate(
    events: LazyFrame,
    meters: &Meters,
    window: Expr,
    dims: &[Dim],
) -> Result<(DataFrame, Vec<String>)> {
    aggregate_with(events, meters, window, dims, None)
}

/// The aggregations of `value` one group_by (or [`super::runs`]) serves for every plain
/// meter, beside the event count.
pub(super) const CHEAP: [Aggregation; 4] = [
    Aggregation::Sum,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::Avg,
];

/// [`aggregate`] told whether the events' values are whole numbers whose absolute sum
/// is within 2^53 (`exact`, known from the files' records in the commit log); `None`
/// checks by scanning the values (see `sums_exactly`).
pub(super) fn aggregate_with(
    events: LazyFrame,
    meters: &Meters,
    window: Expr,
    dims: &[Dim],
    exact: Option<bool>,
) -> Result<(DataFrame, Vec<String>)> {
    let mut keys: Vec<Expr> = vec![col("tenant_id"), col("meter")];
    keys.extend(dims.iter().map(|d| col(d.column())));
    let mut with: Vec<Expr> = vec![window.alias("window_start")];
    with.extend(dims.iter().filter(|d| **d != Dim::User).map(Dim::expr));
    let events = events.with_columns(with);
    let mut group_keys = keys.clone();
    group_keys.push(col("window_start"));

    // One plan, collected once: polars' common-subplan elimination scans the lake once and
    // shares it between the branches.
    // 1. Cheap aggregations (count, sum, min, max, mean) of every event meter in one
    //    group_by: they serve count/sum/duration/min/max/avg meters and unconfigured ones.
    let plain: Vec<&Meter> = meters.iter().filter(|m| m.property.is_none()).collect();
    let needed: BTreeSet<Aggregation> = plain
        .iter()
        .map(|m| match m.aggregation {
            Aggregation::Duration => Aggregation::Sum,
            a => a,
        })
        .filter(|a| CHEAP.contains(a))
        .chain([Aggregation::Sum])
        .collect();
    let mut aggs = vec![len().cast(DataType::Int64).alias("event_count")];
    aggs.extend(
        needed
            .iter()
            .map(|&a| agg_expr(a, col("value"), col("user_id")).alias(agg_column(a))),
    );
    // Without dimensions, and when sums are exact in any order, the cheap aggregations run
    // by hand over the sorted runs of the batch's four columns (`runs`). The other
    // branches (latest, distinct counts, percentiles, properties) scan for their own
    // meter's events.
    let exact = sums_exactly(&events, meters, exact)?;
    let mut by_hand = None;
    if dims.is_empty() && exact {
        let frame = collect(events.clone().select([
            col("tenant_id"),
            col("meter"),
            col("window_start"),
            col("value"),
        ]))?;
        by_hand = super::runs::aggregate(&frame, &needed, agg_column)?;
    }
    let cheap = match by_hand {
        Some(df) => df.lazy(),
        None => events.clone().group_by(group_keys.clone()).agg(aggs),
    };

    let select_value = |name: &str, value: Expr| -> Vec<Expr> {
        let mut s = keys.clone();
        s[1] = lit(name.to_string()).alias("meter");
        s.push(col("window_start"));
        s.push(value.cast(DataType::Float64).alias("value"));
        s.push(col("event_count"));
        s
    };
    let mut parts: Vec<LazyFrame> = Vec::new();
    for m in &plain {
        let of_meter = col("meter").eq(lit(m.event().to_string()));
        let part = match m.aggregation {
            Aggregation::Count => cheap
                .clone()
                .filter(of_meter)
                .select(select_value(&m.name, col("event_count"))),
            Aggregation::Duration => cheap.clone().filter(of_meter).select(select_value(
                &m.name,
                col(agg_column(Aggregation::Sum)) * lit(m.duration_unit.seconds()),
            )),
            a if CHEAP.contains(&a) => cheap
                .clone()
                .filter(of_meter)
                .select(select_value(&m.name, col(agg_column(a)))),
            // 2. Latest readings: the meter's events sorted by (ts, value), then the last
            //    of each group (a plain `last`, which polars computes in one pass).
            Aggregation::Latest => events
                .clone()
                .filter(of_meter)
                .sort_by_exprs(
                    [col("ts"), col("value")],
                    SortMultipleOptions::default().with_maintain_order(true),
                )
                .group_by_stable(group_keys.clone())
                .agg([
                    col("value").last().alias("_v"),
                    len().cast(DataType::Int64).alias("event_count"),
                ])
                .select(select_value(&m.name, col("_v"))),
            // 3. Distinct counts and percentiles: only over their meter's events (evaluated
            //    per group, so not for every group of the lake).
            a => events
                .clone()
                .filter(of_meter)
                .group_by(group_keys.clone())
                .agg([
                    agg_expr(a, col("value"), col("user_id")).alias("_v"),
                    len().cast(DataType::Int64).alias("event_count"),
                ])
                .select(select_value(&m.name, col("_v"))),
        };
        parts.push(part);
    }
    // 4. Event meters no definition reads: `sum`.
    let read: Vec<String> = meters.iter().map(|m| m.event().to_string()).collect();
    let read = Series::new("read".into(), read);
    let mut s = keys.clone();
    s.push(col("window_start"));
    s.push(col(agg_column(Aggregation::Sum)).alias("value"));
    s.push(col("event_count"));
    parts.push(
        cheap
            .clone()
            .filter(col("meter").is_in(lit(read).implode(true), false).not())
            .select(s),
    );

    // 5. Property meters: one group_by each, over their own events only.
    for m in meters.iter().filter(|m| m.property.is_some()) {
        let key = m.property.as_deref().expect("filtered");
        let p = property_expr(key);
        let x = if m.aggregation == Aggregation::Duration {
            property_number(key) * lit(m.duration_unit.seconds())
        } else {
            property_number(key)
        };
        parts.push(
            events
                .clone()
                .filter(col("meter").eq(lit(m.event().to_string())))
                .group_by(group_keys.clone())
                .agg([
                    agg_expr(m.aggregation, x, p).alias("_v"),
                    len().cast(DataType::Int64).alias("event_count"),
                ])
                .select(select_value(&m.name, col("_v"))),
        );
    }
    // A statistic over no readings (every event lacked the property) is no row at all.
    let plan = concat(parts, UnionArgs::default())?.filter(col("value").is_not_null());
    let df = if exact {
        collect(plan)?
    } else {
        plan.collect_with_engine(Engine::InMemory)?.unwrap_single()
    };
    let names: BTreeSet<&str> = meters.iter().map(|m| m.name.as_str()).collect();
    let unconfigured: Vec<String> = df
        .column("meter")?
        .unique()?
        .str()?
        .iter()
        .flatten()
        .filter(|m| !names.contains(m))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok((df, unconfigured))
}

/// Runs a plan on polars' streaming engine (morsel-driven, bounded memory, all cores).
pub fn collect(lf: LazyFrame) -> Result<DataFrame> {
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}

/// Whether every sum this aggregation takes is exact whatever the order of its terms:
/// no meter sums or averages a property, every event value is an integer, and the values'
/// absolute sum is at most 2^53, which bounds every partial sum of every group (integers
/// add exactly in f64 below it). polars' streaming engine adds partial sums in the order
/// its threads finish, so other values (0.25 GB-hours, costs, a month of bytes past 2^53)
/// could sum to a different last bit from one run to the next; those aggregations run on
/// the in-memory engine, which adds each group's values in row order. (On 4.9 M events it
/// is 1.2 s slower for the hour rollup than streaming, so streaming stays where it is
/// exact; the check itself is one more scan of the batch's `value` column.)
///
/// `exact` is what the files' records say of the values; the scan runs only without them
/// (files written before they were recorded). On 10 M events the scan took 0.13 s of a
/// 0.57 s day rollup.
fn sums_exactly(events: &LazyFrame, meters: &Meters, exact: Option<bool>) -> Result<bool> {
    let property_sums = meters.iter().any(|m| {
        m.property.is_some()
            && matches!(
                m.aggregation,
                Aggregation::Sum | Aggregation::Avg | Aggregation::Duration
            )
    });
    if property_sums {
        return Ok(false);
    }
    if let Some(known) = exact {
        return Ok(known);
    }
    // Not an integer: the Int64 round trip differs (NaN, infinities and values past i64
    // cast to null, counted as inexact too).
    let v = col("value");
    let inexact = v.clone().is_not_null().and(
        v.clone()
            .cast(DataType::Int64)
            .cast(DataType::Float64)
            .neq(v.clone())
            .fill_null(lit(true)),
    );
    let magnitude = when(v.clone().lt(lit(0.0)))
        .then(lit(0.0) - v.clone())
        .otherwise(v);
    let check = collect(
        events
            .clone()
            .select([inexact.any(true).alias("f"), magnitude.sum().alias("m")]),
    )?;
    let fractional = check.column("f")?.bool()?.get(0).unwrap_or(false);
    let total = check.column("m")?.f64()?.get(0).unwrap_or(0.0);
    Ok(!fractional && total <= crate::lake::EXACT)
}

/// An empty result with the right columns.
pub(crate) fn empty_rows(dims: &[Dim]) -> Result<DataFrame> {
    let mut cols: Vec<Column> = key_columns(dims)
        .into_iter()
        .map(|k| Column::new_empty(k.into(), &DataType::String))
        .collect();
    cols.push(Column::new_empty("window_start".into(), &DataType::Int64));
    cols.push(Column::new_empty("value".into(), &DataType::Float64));
    cols.push(Column::new_empty("event_count".into(), &DataType::Int64));
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Aggregations of meters by name (configured ones, and `sum` for the rest).
pub fn aggregation_of(meters: &Meters, meter: &str) -> Aggregation {
    meters
        .get(meter)
        .map(|m| m.aggregation)
        .unwrap_or(Aggregation::Sum)
}

/// A period's value from its days' values, by the meter's aggregation (reports compare
/// periods from day rollups).
impl Aggregation {
    /// Sums add, gauges take the last day, max and min their extreme, distinct counts
    /// their busiest day (a lower bound: distinct users do not add across days), averages
    /// and percentiles the mean of days. No days: 0 for sums and distinct counts (nothing
    /// happened), none for gauges and statistics (no reading: a fake 0 would be a lie).
    pub fn combine_days(self, days: &[f64]) -> Option<f64> {
        let Some(&last) = days.last() else {
            return self.zero_when_empty().then_some(0.0);
        };
        Some(match self {
            a if a.additive() => days.iter().sum(),
            Aggregation::Latest => last,
            Aggregation::Max | Aggregation::UniqueCount => {
                days.iter().copied().fold(f64::MIN, f64::max)
            }
            Aggregation::Min => days.iter().copied().fold(f64::MAX, f64::min),
            _ => days.iter().sum::<f64>() / days.len() as f64,
        })
    }

    /// How tenants' values of a period combine into the platform's: sums and gauge levels
    /// (`latest`: the tenants' storage together) add up, `max` and `min` take the extreme;
    /// averages and percentiles do not combine (none). Distinct counts add up day by day
    /// (a user belongs to one tenant) before the busiest day is taken: see
    /// [`Aggregation::combine_days`] over the platform's daily sums.
    pub fn combine_tenants(self, values: &[f64]) -> Option<f64> {
        match self {
            a if a.additive() => Some(values.iter().sum()),
            _ if values.is_empty() => None,
            Aggregation::Latest => Some(values.iter().sum()),
            Aggregation::Max => Some(values.iter().copied().fold(f64::MIN, f64::max)),
            Aggregation::Min => Some(values.iter().copied().fold(f64::MAX, f64::min)),
            _ => None,
        }
    }

    /// How [`Aggregation::combine_days`] reads a period's days, in words for a report column.
    pub fn combine_rule(self) -> &'static str {
        match self {
            a if a.additive() => "sum",
            Aggregation::Latest => "last day",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::UniqueCount => "busiest day",
            _ => "mean of days",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// What a written file records of its values (whole numbers, absolute sum) gives
        /// the same engine choice as the scan of its values it replaces.
        #[test]
        fn a_files_record_decides_as_the_scan_of_its_values(
            values in proptest::collection::vec(
                prop_oneof![
                    (-1000i64..1000).prop_map(|v| v as f64),
                    (-1000i64..1000).prop_map(|v| v as f64 + 0.5),
                    (0i64..4).prop_map(|v| 2f64.powi(51) + v as f64),
                    Just(0.1),
                ],
                1..12,
            ),
            split in 0usize..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            // Two files, so the record's totals add across files as the scan does.
            let split = split.min(values.len());
            let mut files = Vec::new();
            for (n, chunk) in [&values[..split], &values[split..]].into_iter().enumerate() {
                if chunk.is_empty() {
                    continue;
                }
                let mut buf = crate::lake::EventBuf::default();
                for (i, v) in chunk.iter().enumerate() {
                    buf.push(crate::lake::Row {
                        id: &format!("e{n}-{i}"),
                        ts: i as i64,
                        tenant: "t",
                        user: None,
                        meter: "m",
                        value: *v,
                        props: "{}",
                        key: 0,
                    });
                }
                let path = dir.path().join(format!("f{n}.parquet"));
                let w = crate::lake::write_buf(&path, &buf).unwrap();
                let folded: f64 = chunk.iter().map(|v| v.abs()).sum();
                prop_assert!((w.value_abs_sum - folded).abs() <= 1e-9 * folded.max(1.0));
                prop_assert_eq!(w.values_integral, chunk.iter().all(|v| v.fract() == 0.0));
                files.push((path, crate::lake::DataFile {
                    path: String::new(),
                    date: String::new(),
                    rows: w.rows,
                    bytes: w.bytes,
                    value_sum: w.value_sum,
                    exact: Some(crate::lake::ExactSum::of(&w)),
                }));
            }
            let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
            let records: Vec<_> = files.into_iter().map(|(_, f)| f).collect();
            let meters = Meters::default();
            let scan = crate::lake::scan_paths(&paths, false).unwrap();
            let by_scan = sums_exactly(&scan, &meters, None).unwrap();
            prop_assert_eq!(crate::lake::files_sum_exactly(&records), Some(by_scan));
        }
    }

    #[test]
    fn periods_combine_by_aggregation() {
        let v = [3.0, 7.0, 5.0];
        assert_eq!(Aggregation::Count.combine_days(&v), Some(15.0));
        assert_eq!(Aggregation::Sum.combine_days(&v), Some(15.0));
        assert_eq!(Aggregation::Latest.combine_days(&v), Some(5.0));
        assert_eq!(Aggregation::Max.combine_days(&v), Some(7.0));
        assert_eq!(Aggregation::Min.combine_days(&v), Some(3.0));
        assert_eq!(Aggregation::UniqueCount.combine_days(&v), Some(7.0));
        assert_eq!(Aggregation::Avg.combine_days(&v), Some(5.0));
        assert_eq!(Aggregation::Sum.combine_days(&[]), Some(0.0));
        assert_eq!(Aggregation::UniqueCount.combine_days(&[]), Some(0.0));
        assert_eq!(Aggregation::Latest.combine_days(&[]), None);
        assert_eq!(Aggregation::P95.combine_days(&[]), None);
        // Tenants: 3, 7 and 5 of a meter.
        assert_eq!(Aggregation::Sum.combine_tenants(&v), Some(15.0));
        assert_eq!(Aggregation::Latest.combine_tenants(&v), Some(15.0));
        assert_eq!(Aggregation::Max.combine_tenants(&v), Some(7.0));
        assert_eq!(Aggregation::Min.combine_tenants(&v), Some(3.0));
        assert_eq!(Aggregation::P95.combine_tenants(&v), None);
        assert_eq!(Aggregation::Max.combine_tenants(&[]), None);
        assert_eq!(Aggregation::Latest.combine_tenants(&[]), None);
        assert_eq!(Aggregation::Sum.combine_tenants(&[]), Some(0.0));
    }
}
