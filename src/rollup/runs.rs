//! The plain rollup's hot path: the number of events and the sum, min, max and mean of
//! `value` per (tenant, meter, window), computed over the batch's columns by hand instead of
//! by polars' `group_by`.
//!
//! Lake files are sorted by (tenant_id, meter, ts, id) (`lake::parquet_io`), so the rows of
//! one group come in runs. A row is compared with the row before (string views: equal views
//! are equal strings, and short ids are held whole in their view), and only where a run
//! starts is its group looked up in a hash map. polars' group_by on three keys row-encodes
//! every row's keys and hashes the bytes instead: on the hour rollup of 10 M events that
//! was about 40 % of the CPU.
//!
//! [`super::aggregate`] takes this path only without breakdown dimensions and when every
//! sum is exact whatever the order of its terms, so the rows equal polars' bit for bit
//! (min, max and counts do not depend on the order either).

use std::collections::BTreeSet;

use polars::prelude::*;

use super::meters::Aggregation;
use crate::error::Result;

/// One group's running figures.
#[derive(Clone, Copy)]
struct Acc {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    #[inline]
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Ids of distinct strings, in order of first appearance.
#[derive(Default)]
struct Interner<'a> {
    ids: PlHashMap<&'a str, u32>,
    names: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(s, i);
        self.names.push(s);
        i
    }
}

/// The rows of `frame` (columns `tenant_id`, `meter`, `window_start` Int64 and `value`
/// Float64, none null) per (tenant, meter, window): `tenant_id, meter, window_start,
/// event_count` and one column per aggregation of `needed` (Sum, Min, Max or Avg), named
/// by `column`. None when a column holds a null or another aggregation is asked (polars'
/// group_by then decides).
pub(super) fn aggregate(
    frame: &DataFrame,
    needed: &BTreeSet<Aggregation>,
    column: impl Fn(Aggregation) -> String,
) -> Result<Option<DataFrame>> {
    if !needed.iter().all(|a| super::aggregate::CHEAP.contains(a)) {
        return Ok(None);
    }
    let mut frame = frame.clone();
    if frame.should_rechunk() {
        frame.align_chunks_par();
    }
    let tenants = frame.column("tenant_id")?.str()?;
    let meters = frame.column("meter")?.str()?;
    let windows = frame.column("window_start")?.i64()?;
    let values = frame.column("value")?.f64()?;
    if tenants.null_count() + meters.null_count() + windows.null_count() + values.null_count() > 0 {
        return Ok(None);
    }
    let mut g = Groups::default();
    let chunks = tenants
        .downcast_iter()
        .zip(meters.downcast_iter())
        .zip(windows.downcast_iter().zip(values.downcast_iter()));
    for ((t, m), (w, v)) in chunks {
        let (tv, mv, w, v) = (t.views(), m.views(), w.values(), v.values());
        // Where a chunk starts, everything is looked up afresh (views of two chunks point
        // into different buffers).
        let (mut series, mut window, mut group) = (0u32, 0u32, 0usize);
        for i in 0..v.len() {
            let new_series = i == 0 || tv[i] != tv[i - 1] || mv[i] != mv[i - 1];
            if new_series {
                series = g.series(t.value(i), m.value(i));
            }
            if new_series || w[i] != w[i - 1] {
                window = g.window(w[i], window);
                group = g.group(series, window);
            }
            g.accs[group].add(v[i]);
        }
    }
    Ok(Some(rows(&g, needed, column)?))
}

/// The groups found so far: each a (series, window) pair, numbered in order of first
/// appearance, with the lookups that number them.
#[derive(Default)]
struct Groups<'a> {
    tenants: Interner<'a>,
    meters: Interner<'a>,
    /// Series ids by (tenant id, meter id), and each series' (tenant id, meter id).
    series_ids: PlHashMap<(u32, u32), u32>,
    series: Vec<(u32, u32)>,
    /// Window ids by window start, and each window id's start.
    window_ids: PlHashMap<i64, u32>,
    windows: Vec<i64>,
    /// Per series, its group of each window id (`u32::MAX`: none yet).
    table: Vec<Vec<u32>>,
    /// Each group's (series id, window id) and figures.
    keys: Vec<(u32, u32)>,
    accs: Vec<Acc>,
}

impl<'a> Groups<'a> {
    fn series(&mut self, tenant: &'a str, meter: &'a str) -> u32 {
        let key = (self.tenants.id(tenant), self.meters.id(meter));
        let n = self.series.len() as u32;
        let id = *self.series_ids.entry(key).or_insert(n);
        if id == n {
            self.series.push(key);
            self.table.push(Vec::new());
        }
        id
    }

    /// The id of window start `w`; a series' windows ascend, so after window id `before`
    /// usually comes the next id, which is checked first.
    fn window(&mut self, w: i64, before: u32) -> u32 {
        let next = before as usize + 1;
        if self.windows.get(next) == Some(&w) {
            return next as u32;
        }
        let n = self.windows.len() as u32;
        let id = *self.window_ids.entry(w).or_insert(n);
        if id == n {
            self.windows.push(w);
        }
        id
    }

    fn group(&mut self, series: u32, window: u32) -> usize {
        let row = &mut self.table[series as usize];
        if row.len() <= window as usize {
            row.resize(window as usize + 1, u32::MAX);
        }
        if row[window as usize] == u32::MAX {
            row[window as usize] = self.accs.len() as u32;
            self.keys.push((series, window));
            self.accs.push(Acc::new());
        }
        row[window as usize] as usize
    }
}

/// The groups as a frame.
fn rows(
    g: &Groups,
    needed: &BTreeSet<Aggregation>,
    column: impl Fn(Aggregation) -> String,
) -> Result<DataFrame> {
    let (keys, accs) = (&g.keys, &g.accs);
    let series = |k: &(u32, u32)| g.series[k.0 as usize];
    let tenant: Vec<&str> = keys
        .iter()
        .map(|k| g.tenants.names[series(k).0 as usize])
        .collect();
    let meter: Vec<&str> = keys
        .iter()
        .map(|k| g.meters.names[series(k).1 as usize])
        .collect();
    let window: Vec<i64> = keys.iter().map(|k| g.windows[k.1 as usize]).collect();
    let count: Vec<i64> = accs.iter().map(|a| a.count).collect();
    let mut cols = vec![
        Column::new("tenant_id".into(), tenant),
        Column::new("meter".into(), meter),
        Column::new("window_start".into(), window),
        Column::new("event_count".into(), count),
    ];
    for &a in needed {
        // Only these four reach here (checked by `aggregate`).
        let f: fn(&Acc) -> f64 = match a {
            Aggregation::Min => |a| a.min,
            Aggregation::Max => |a| a.max,
            Aggregation::Avg => |a| a.sum / a.count as f64,
            _ => |a| a.sum,
        };
        let x: Vec<f64> = accs.iter().map(f).collect();
        cols.push(Column::new(column(a).into(), x));
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> BTreeSet<Aggregation> {
        [
            Aggregation::Sum,
            Aggregation::Min,
            Aggregation::Max,
            Aggregation::Avg,
        ]
        .into()
    }

    fn name(a: Aggregation) -> String {
        format!("_{}", a.name())
    }

    fn sorted(df: DataFrame) -> DataFrame {
        df.sort(
            ["tenant_id", "meter", "window_start"],
            SortMultipleOptions::default(),
        )
        .unwrap()
    }

    /// The same figures from polars' group_by (an independent computation).
    fn by_polars(df: &DataFrame) -> DataFrame {
        let mut aggs = vec![len().cast(DataType::Int64).alias("event_count")];
        aggs.extend(all().into_iter().map(|a| {
            let v = col("value");
            match a {
                Aggregation::Min => v.min(),
                Aggregation::Max => v.max(),
                Aggregation::Avg => v.mean(),
                _ => v.sum(),
            }
            .alias(name(a))
        }));
        let out = df
            .clone()
            .lazy()
            .group_by([col("tenant_id"), col("meter"), col("window_start")])
            .agg(aggs)
            .collect()
            .unwrap();
        sorted(out)
    }

    proptest! {
        /// Rows in lake order or shuffled, ids short (held in the view) or long, split
        /// into chunks anywhere: the same rows as polars' group_by.
        #[test]
        fn runs_equal_polars_group_by(
            rows in prop::collection::vec((0usize..4, 0usize..3, 0i64..5, -1000i64..1000), 0..300),
            lake_order in any::<bool>(),
            cuts in prop::collection::vec(0usize..300, 0..3),
        ) {
            let tenants = ["t1", "tenant-with-a-long-name-1", "t2", "tenant-with-a-long-name-2"];
            let meters = ["api_calls", "a_meter_name_past_twelve_bytes", "m"];
            let mut rows = rows;
            if lake_order {
                rows.sort_by_key(|r| (tenants[r.0], meters[r.1], r.2));
            }
            let frame = |rows: &[(usize, usize, i64, i64)]| {
                df!(
                    "tenant_id" => rows.iter().map(|r| tenants[r.0]).collect::<Vec<_>>(),
                    "meter" => rows.iter().map(|r| meters[r.1]).collect::<Vec<_>>(),
                    "window_start" => rows.iter().map(|r| r.2 * 3_600_000_000).collect::<Vec<_>>(),
                    "value" => rows.iter().map(|r| r.3 as f64).collect::<Vec<_>>(),
                )
                .unwrap()
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
            cuts.sort_unstable();
            let mut df = frame(&[]);
            let mut from = 0;
            for c in cuts.into_iter().chain([rows.len()]) {
                df.vstack_mut(&frame(&rows[from..c])).unwrap();
                from = c;
            }
            let ours = sorted(aggregate(&df, &all(), name).unwrap().expect("no nulls"));
            let theirs = by_polars(&df);
            prop_assert!(ours.equals_missing(&theirs), "{:?}\n{:?}\n{:?}\n{:?}", ours.schema(), theirs.schema(), ours.columns(), theirs.columns());
        }
    }

    #[test]
    fn a_null_or_another_aggregation_is_left_to_polars() {
        let df = df!(
            "tenant_id" => ["a", "a"],
            "meter" => ["m", "m"],
            "window_start" => [0i64, 0],
            "value" => [Some(1.0), None],
        )
        .unwrap();
        assert!(aggregate(&df, &all(), name).unwrap().is_none());
        let clean = df.head(Some(1));
        assert!(aggregate(&clean, &all(), name).unwrap().is_some());
        let unique: BTreeSet<Aggregation> = [Aggregation::UniqueCount].into();
        assert!(aggregate(&clean, &unique, name).unwrap().is_none());
    }
}
