//! Which partitions a rollup recomputes. [`Plan::new`] picks the mode (full, incremental,
//! range) and the UTC dates to redo: in an incremental run, the dates the lake's commits
//! touched since the stored state (late events included). [`Windows`] holds the calendars
//! (windows, and the partitions that group them) and maps those dates to partitions; a
//! second pass adds the partitions where a series' range grew, which gain zero rows
//! (see the module docs of [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::time::MICROS_PER_DAY;

use super::store::{State, partition_files};
use super::{Calendar, Meters, RollupMode, RollupOptions, RollupSpec, aggregation_of, date_micros};

/// A series key: the values of the spec's key columns.
pub(super) type Key = Vec<Option<String>>;
/// First and last window start of each zero-when-empty series.
pub(super) type Ranges = HashMap<Key, (i64, i64)>;

/// What a run recomputes, before looking at any event.
pub(super) struct Plan {
    pub(super) mode: RollupMode,
    /// Limited to `--from`/`--to`.
    pub(super) ranged: bool,
    /// `--from`/`--to` (UTC µs), unbounded when not given.
    pub(super) from: i64,
    pub(super) to: i64,
    /// The lake's UTC dates whose windows are recomputed.
    pub(super) touched_dates: Vec<String>,
}

impl Plan {
    /// The plan for the lake `lake` (holding `lake_dates`) given the stored `state` and
    /// the `fingerprint` of the meters and spec now.
    pub(super) fn new(
        lake: &Lake,
        lake_dates: &BTreeSet<&str>,
        state: Option<&State>,
        fingerprint: &str,
        opts: &RollupOptions,
    ) -> Result<Plan> {
        let stale = state.is_none_or(|s| s.fingerprint != fingerprint);
        // A stored rollup made with other meter definitions is recomputed whole: a range
        // alone would leave its other partitions on the old definitions (and the old
        // meters' series zero-filled in the range).
        let redefined = state.is_some() && stale;
        let ranged = (opts.from.is_some() || opts.to.is_some()) && !redefined;
        if redefined && (opts.from.is_some() || opts.to.is_some()) {
            tracing::warn!(
                "the meter definitions changed since the stored rollup: recomputing every partition, not only --from/--to"
            );
        }
        let mode = if ranged {
            RollupMode::Range
        } else if opts.full || stale {
            RollupMode::Full
        } else {
            RollupMode::Incremental
        };
        let (from, to) = (opts.from.unwrap_or(i64::MIN), opts.to.unwrap_or(i64::MAX));
        if from >= to {
            return Err(Error::InvalidParameter {
                name: "--from/--to",
                reason: "--from must be before --to".into(),
            });
        }
        let (from, to) = if ranged {
            (from, to)
        } else {
            (i64::MIN, i64::MAX)
        };
        let touched_dates: Vec<String> = match mode {
            RollupMode::Incremental => lake
                .partitions_since(state.map_or(0, |s| s.seq))
                .into_iter()
                .filter(|d| lake_dates.contains(d.as_str()))
                .collect(),
            _ => lake_dates
                .iter()
                .filter(|d| {
                    let s = date_micros(d);
                    s < to && s + MICROS_PER_DAY > from
                })
                .map(|d| d.to_string())
                .collect(),
        };
        Ok(Plan {
            mode,
            ranged,
            from,
            to,
            touched_dates,
        })
    }
}

/// The calendars of a run: `cal` cuts the windows, `pcal` the partitions (a day of hours,
/// or one window of the longer granularities); both span the lake and any stored window.
pub(super) struct Windows {
    pub(super) cal: Calendar,
    pcal: Calendar,
}

impl Windows {
    /// `lake_dates` must not be empty.
    pub(super) fn new(
        spec: &RollupSpec,
        lake_dates: &BTreeSet<&str>,
        old_ranges: &Ranges,
    ) -> Result<Windows> {
        // The calendar spans the lake and any window already stored.
        let mut lo = date_micros(lake_dates.first().expect("non-empty"));
        let mut hi = date_micros(lake_dates.last().expect("non-empty")) + MICROS_PER_DAY;
        for &(a, b) in old_ranges.values() {
            lo = lo.min(a);
            hi = hi.max(b + 1);
        }
        let cal = Calendar::new(spec.granularity, spec.zone, lo, hi)?;
        let pcal = if spec.granularity.partition() == spec.granularity {
            cal.clone()
        } else {
            Calendar::new(spec.granularity.partition(), spec.zone, lo, hi)?
        };
        Ok(Windows { cal, pcal })
    }

    /// The partition calendar.
    pub(super) fn partitions(&self) -> &Calendar {
        &self.pcal
    }

    /// The start of the partition holding the window that starts at `w`.
    pub(super) fn part_of(&self, w: i64) -> i64 {
        let i = self.pcal.starts().partition_point(|&s| s <= w);
        self.pcal.starts()[i.saturating_sub(1)]
    }

    /// The partitions holding a window that overlaps one of `dates` (UTC days).
    pub(super) fn scope_of(&self, dates: &[String]) -> BTreeSet<i64> {
        let cal = &self.cal;
        let mut scope: BTreeSet<i64> = BTreeSet::new();
        for d in dates {
            let s = date_micros(d);
            for i in cal.overlapping(s, s + MICROS_PER_DAY) {
                scope.insert(self.part_of(cal.starts()[i]));
            }
        }
        scope
    }

    /// Partitions outside `scope` where a series' range grew (or, in a full run, days
    /// without any event inside a range): they gain zero rows. A ranged run only takes
    /// those inside its range.
    pub(super) fn gap_partitions(
        &self,
        plan: &Plan,
        ranges: &Ranges,
        old_ranges: &Ranges,
        scope: &BTreeSet<i64>,
    ) -> BTreeSet<i64> {
        let (cal, pcal) = (&self.cal, &self.pcal);
        let (ranged, from, to) = (plan.ranged, plan.from, plan.to);
        let mut gaps = BTreeSet::new();
        let starts = cal.starts();
        for (k, &(a, b)) in ranges {
            let old = old_ranges.get(k).copied();
            let (ia, ib) = (cal.index_of(a), cal.index_of(b));
            let (Some(ia), Some(ib)) = (ia, ib) else {
                continue;
            };
            // Partition by partition (not window by window: an hourly series of 90 days
            // has 2,160 windows in 90 partitions): the series' windows in partition `p`
            // are `i..=j`, and `p` is a gap when one of them lies outside the old range.
            let mut i = ia;
            while i <= ib {
                let p = self.part_of(starts[i]);
                let end = pcal.end_of(p).unwrap_or(i64::MAX);
                let j = (starts.partition_point(|&s| s < end) - 1).min(ib);
                let all_old = old.is_some_and(|(oa, ob)| starts[i] >= oa && starts[j] <= ob);
                if !all_old && !scope.contains(&p) && (!ranged || (p < to && end > from)) {
                    gaps.insert(p);
                }
                i = j + 1;
            }
        }
        gaps
    }
}

/// `old` widened by the ranges of the rows just aggregated.
pub(super) fn grown_ranges(
    old: &Ranges,
    rows: &DataFrame,
    spec: &RollupSpec,
    meters: &Meters,
) -> Result<Ranges> {
    let mut ranges = old.clone();
    for (k, (a, b)) in series_ranges(rows, spec, meters)? {
        let r = ranges.entry(k).or_insert((a, b));
        *r = (r.0.min(a), r.1.max(b));
    }
    Ok(ranges)
}

/// First and last window of every series whose meter is zero when empty.
fn series_ranges(rows: &DataFrame, spec: &RollupSpec, meters: &Meters) -> Result<Ranges> {
    let keys = spec.key_columns();
    let r = rows
        .clone()
        .lazy()
        .group_by(keys.iter().map(|k| col(k.as_str())).collect::<Vec<_>>())
        .agg([
            col("window_start").min().alias("a"),
            col("window_start").max().alias("b"),
        ])
        .collect()?;
    ranges_of(&r, &keys, meters)
}

fn ranges_of(r: &DataFrame, keys: &[String], meters: &Meters) -> Result<Ranges> {
    let kc: Vec<&StringChunked> = keys
        .iter()
        .map(|k| r.column(k).and_then(|c| c.str()))
        .collect::<PolarsResult<_>>()?;
    let (a, b) = (r.column("a")?.i64()?, r.column("b")?.i64()?);
    let mut out = Ranges::new();
    for i in 0..r.height() {
        let meter = kc[1].get(i).unwrap_or_default();
        if !aggregation_of(meters, meter).zero_when_empty() {
            continue;
        }
        let key: Key = kc.iter().map(|c| c.get(i).map(str::to_string)).collect();
        if let (Some(a), Some(b)) = (a.get(i), b.get(i)) {
            out.insert(key, (a, b));
        }
    }
    Ok(out)
}

/// Ranges of the series already stored.
pub(super) fn existing_ranges(dir: &Path, spec: &RollupSpec, meters: &Meters) -> Result<Ranges> {
    let files = partition_files(dir)?;
    if files.is_empty() {
        return Ok(Ranges::new());
    }
    let keys = spec.key_columns();
    let r = crate::lake::scan_paths(&files, false)?
        .group_by(keys.iter().map(|k| col(k.as_str())).collect::<Vec<_>>())
        .agg([
            col("window_start").min().cast(DataType::Int64).alias("a"),
            col("window_start").max().cast(DataType::Int64).alias("b"),
        ])
        .collect()?;
    ranges_of(&r, &keys, meters)
}
