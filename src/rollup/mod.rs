//! Rollups: the lake's events aggregated per tenant, meter (and optionally user or
//! property) and window, with polars. Every later stage (forecasts, anomalies, quotas,
//! reports) reads these.
//!
//! ```text
//! LAKE/rollups/granularity=G/by=B/tz=Z/
//!   period=YYYY-MM-DD/part-0.parquet   one partition: a (local) day of hours, or one
//!                                      day, week or month window
//!   _state.json                        the lake commit the rollup is complete up to
//! ```
//! `B` is `none`, or the `--by` dimensions joined by `+` (`user`, `prop_endpoint`); `Z` is
//! the time zone with `/` written `%2F`. Columns: `tenant_id, meter, [user_id | dim_KEY]...,
//! window_start, window_end` (UTC timestamps, half-open windows)`, value, event_count`.
//!
//! **Complete series.** For meters whose empty window is 0 (`count`, `sum`, `duration`,
//! `unique_count`), every window between a series' first and last window has a row, with
//! value 0 where no event fell, so forecasts see zeros, not gaps. Gauges and statistics
//! (`latest`, `max`, `min`, `avg`, percentiles) have no value without events and get no row.
//!
//! **Incremental.** The lake's log records the UTC date partitions each commit touched. A
//! rollup recomputes only the partitions holding windows that overlap those dates (late
//! events included), plus those where a series' range grew and so gained zero rows;
//! everything else is left as it is. A full recompute (`--full`, new meter definitions,
//! or no state) gives the same rows.
//!
//! ```no_run
//! use std::path::Path;
//! use meterlake::rollup::{rollup, Granularity, Meters, RollupOptions, RollupSpec};
//! let lake = meterlake::lake::Lake::open(Path::new("out/lake"))?;
//! let spec = RollupSpec::new(Granularity::Day);
//! let s = rollup(&lake, &Meters::default(), &spec, &RollupOptions::default())?;
//! println!("{} rows in {} partitions", s.rows_written, s.partitions_written);
//! # Ok::<(), meterlake::Error>(())
//! ```

mod aggregate;
mod meters;
mod window;

pub use aggregate::{
    Dim, aggregate, aggregation_of, collect as collect_streaming, key_columns, property_expr,
};
pub use meters::{
    Aggregation, DEFAULT_METERS_FILE, DEFAULT_METERS_TOML, DurationUnit, Meter, Meters,
};
pub use window::{
    Calendar, Granularity, Zone, date_start_micros, parse_instant, truncate_all, utc_datetime,
    window_start_expr,
};

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::event::MICROS_PER_DAY;
use crate::lake::{DataFile, Lake};

/// Directory of the rollups, relative to the lake root.
pub const ROLLUPS_DIR: &str = "rollups";
const STATE_FILE: &str = "_state.json";
const PART_FILE: &str = "part-0.parquet";

/// Which rollup: window length, breakdown dimensions and time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupSpec {
    /// Window length.
    pub granularity: Granularity,
    /// Breakdown dimensions (`--by`), in the order given.
    pub by: Vec<Dim>,
    /// Time zone the windows are cut in.
    pub zone: Zone,
}

impl RollupSpec {
    /// Per tenant and meter, UTC windows.
    pub fn new(granularity: Granularity) -> RollupSpec {
        RollupSpec {
            granularity,
            by: Vec::new(),
            zone: Zone::UTC,
        }
    }

    /// With breakdown dimensions.
    pub fn with_by(mut self, by: Vec<Dim>) -> Self {
        self.by = by;
        self
    }

    /// In a time zone.
    pub fn with_zone(mut self, zone: Zone) -> Self {
        self.zone = zone;
        self
    }

    /// The rollup's directory, relative to the lake root.
    pub fn relative_dir(&self) -> String {
        let by = if self.by.is_empty() {
            "none".to_string()
        } else {
            self.by
                .iter()
                .map(|d| match d {
                    Dim::User => "user".to_string(),
                    Dim::Property(k) => format!("prop_{k}"),
                })
                .collect::<Vec<_>>()
                .join("+")
        };
        format!(
            "{ROLLUPS_DIR}/granularity={}/by={by}/tz={}",
            self.granularity,
            self.zone.name().replace('/', "%2F")
        )
    }

    /// The spec stored under `rel` (`rollups/granularity=G/by=B/tz=Z`, as
    /// [`RollupSpec::relative_dir`] writes it), if it is one.
    pub fn from_relative_dir(rel: &str) -> Option<RollupSpec> {
        let mut parts = rel.strip_prefix(&format!("{ROLLUPS_DIR}/"))?.split('/');
        let g = parts.next()?.strip_prefix("granularity=")?;
        let by = parts.next()?.strip_prefix("by=")?;
        let tz = parts.next()?.strip_prefix("tz=")?;
        let granularity = g.parse::<Granularity>().ok()?;
        let by = if by == "none" {
            Vec::new()
        } else {
            by.split('+')
                .map(|d| match d {
                    "user" => Some(Dim::User),
                    p => p
                        .strip_prefix("prop_")
                        .map(|k| Dim::Property(k.to_string())),
                })
                .collect::<Option<Vec<_>>>()?
        };
        let zone: Zone = tz.replace("%2F", "/").parse().ok()?;
        let spec = RollupSpec::new(granularity).with_by(by).with_zone(zone);
        (spec.relative_dir() == rel).then_some(spec)
    }

    /// The series key columns.
    pub fn key_columns(&self) -> Vec<String> {
        key_columns(&self.by)
    }
}

/// Options of [`rollup`].
#[derive(Debug, Clone, Default)]
pub struct RollupOptions {
    /// Recompute everything, whatever the state says.
    pub full: bool,
    /// Only recompute partitions overlapping `[from, to)` (UTC µs); the state is not
    /// advanced, and other partitions are left as they are.
    pub from: Option<i64>,
    /// End of that range.
    pub to: Option<i64>,
}

/// How a rollup ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollupMode {
    /// Everything recomputed.
    Full,
    /// Only partitions touched since the last run.
    Incremental,
    /// Only partitions in `--from`/`--to`.
    Range,
    /// Nothing new in the lake.
    UpToDate,
}

/// What a rollup did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupSummary {
    /// The rollup directory.
    pub dir: PathBuf,
    /// Full, incremental, range or up to date.
    pub mode: RollupMode,
    /// The lake commit the rollup now reflects.
    pub lake_seq: u64,
    /// Partitions (files) written.
    pub partitions_written: u64,
    /// Partitions deleted (no rows any more).
    pub partitions_removed: u64,
    /// Rows in the files written (zero rows included).
    pub rows_written: u64,
    /// Of those, rows with no events (gap fill).
    pub zero_rows: u64,
    /// Distinct series in the files written.
    pub series: u64,
    /// Event meters no definition reads (rolled up with `sum`).
    pub unconfigured_meters: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    seq: u64,
    fingerprint: String,
}

type Key = Vec<Option<String>>;
type Ranges = HashMap<Key, (i64, i64)>;

/// Brings the rollup `spec` of `lake` up to date (see the module docs).
pub fn rollup(
    lake: &Lake,
    meters: &Meters,
    spec: &RollupSpec,
    opts: &RollupOptions,
) -> Result<RollupSummary> {
    let dir = lake.root().join(spec.relative_dir());
    fs::create_dir_all(&dir).at(&dir)?;
    // One rollup of a spec at a time (two would race on the same files).
    let _lock = crate::lake::lock_exclusive(&dir.join("_lock"))?;

    let fingerprint = format!("{}|{}", meters.fingerprint(), spec.relative_dir());
    let state = read_state(&dir)?;
    let lake_seq = lake.commits().len() as u64;
    let state_now = State {
        seq: lake_seq,
        fingerprint: fingerprint.clone(),
    };
    let files = lake.data_files();
    let lake_dates: BTreeSet<&str> = files.iter().map(|f| f.date.as_str()).collect();
    let ranged = opts.from.is_some() || opts.to.is_some();
    let stale = state.as_ref().is_none_or(|s| s.fingerprint != fingerprint);
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
    let touched_dates: Vec<String> = match mode {
        RollupMode::Incremental => lake
            .partitions_since(state.as_ref().map_or(0, |s| s.seq))
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
    let mut summary = RollupSummary {
        dir: dir.clone(),
        mode,
        lake_seq,
        partitions_written: 0,
        partitions_removed: 0,
        rows_written: 0,
        zero_rows: 0,
        series: 0,
        unconfigured_meters: Vec::new(),
    };
    if touched_dates.is_empty() {
        finish(&dir, mode, &BTreeSet::new(), &state_now, &mut summary, spec)?;
        if mode == RollupMode::Incremental {
            summary.mode = RollupMode::UpToDate;
        }
        return Ok(summary);
    }

    let old_ranges = if mode == RollupMode::Full {
        Ranges::new()
    } else {
        existing_ranges(&dir, spec, meters)?
    };
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
    let part_of = |w: i64| -> i64 {
        let i = pcal.starts().partition_point(|&s| s <= w);
        pcal.starts()[i.saturating_sub(1)]
    };
    let mut scope: BTreeSet<i64> = BTreeSet::new();
    for d in &touched_dates {
        let s = date_micros(d);
        for i in cal.overlapping(s, s + MICROS_PER_DAY) {
            scope.insert(part_of(cal.starts()[i]));
        }
    }

    let clock = std::time::Instant::now();
    let (mut rows, unconfigured) = compute(lake, &files, meters, spec, &pcal, &scope)?;
    tracing::debug!(rows = rows.height(), elapsed = ?clock.elapsed(), "aggregated");
    summary.unconfigured_meters = unconfigured;
    let mut ranges = old_ranges.clone();
    for (k, (a, b)) in series_ranges(&rows, spec, meters)? {
        let r = ranges.entry(k).or_insert((a, b));
        *r = (r.0.min(a), r.1.max(b));
    }
    {
        // Partitions where a series' range grew (or, in a full run, days without any event
        // inside a range): they gain zero rows.
        let mut gaps = BTreeSet::new();
        for (k, &(a, b)) in &ranges {
            let old = old_ranges.get(k).copied();
            let (ia, ib) = (cal.index_of(a), cal.index_of(b));
            let (Some(ia), Some(ib)) = (ia, ib) else {
                continue;
            };
            for i in ia..=ib {
                let w = cal.starts()[i];
                if old.is_some_and(|(oa, ob)| w >= oa && w <= ob) {
                    continue;
                }
                let p = part_of(w);
                if !scope.contains(&p)
                    && (!ranged || (p < to && pcal.end_of(p).unwrap_or(i64::MAX) > from))
                {
                    gaps.insert(p);
                }
            }
        }
        if !gaps.is_empty() {
            let (more, _) = compute(lake, &files, meters, spec, &pcal, &gaps)?;
            rows.vstack_mut(&more)?;
            scope.extend(gaps);
        }
    }
    let out = complete(&rows, spec, &cal, &part_of, &scope, &ranges, &mut summary)?;
    tracing::debug!(rows = summary.rows_written, elapsed = ?clock.elapsed(), "completed");
    write_partitions(&dir, spec, out, &cal, &scope, &mut summary)?;
    tracing::debug!(elapsed = ?clock.elapsed(), "written");
    finish(&dir, mode, &scope, &state_now, &mut summary, spec)?;
    Ok(summary)
}

/// One tenant × meter series of a per-tenant-and-meter rollup, in time order.
#[derive(Debug, Clone)]
pub struct RollupSeries {
    /// The tenant.
    pub tenant_id: String,
    /// The meter.
    pub meter: String,
    /// Window starts (UTC µs).
    pub ts: Vec<i64>,
    /// The meter's value per window.
    pub values: Vec<f64>,
    /// Events per window.
    pub counts: Vec<f64>,
}

/// Every tenant × meter series of the stored rollup `spec` (no breakdown), sorted by
/// tenant, meter and window: what the forecast and anomaly stages read.
pub fn rollup_series(lake: &Lake, spec: &RollupSpec) -> Result<Vec<RollupSeries>> {
    let df = scan_rollup(lake, spec)?
        .select([
            col("tenant_id"),
            col("meter"),
            col("window_start").cast(DataType::Int64).alias("ts"),
            col("value"),
            col("event_count").cast(DataType::Float64),
        ])
        .sort(["tenant_id", "meter", "ts"], SortMultipleOptions::default())
        .collect()?;
    let (t, m, ts, v, n) = (
        df.column("tenant_id")?.str()?,
        df.column("meter")?.str()?,
        df.column("ts")?.i64()?,
        df.column("value")?.f64()?,
        df.column("event_count")?.f64()?,
    );
    let mut out: Vec<RollupSeries> = Vec::new();
    for i in 0..df.height() {
        let (tenant, meter) = (t.get(i).unwrap_or_default(), m.get(i).unwrap_or_default());
        let same = out
            .last()
            .is_some_and(|s| s.tenant_id == tenant && s.meter == meter);
        if !same {
            out.push(RollupSeries {
                tenant_id: tenant.to_string(),
                meter: meter.to_string(),
                ts: Vec::new(),
                values: Vec::new(),
                counts: Vec::new(),
            });
        }
        let s = out.last_mut().expect("just pushed");
        s.ts.push(ts.get(i).unwrap_or_default());
        s.values.push(v.get(i).unwrap_or_default());
        s.counts.push(n.get(i).unwrap_or_default());
    }
    Ok(out)
}

/// A lazy scan of a rollup's stored rows (no rows: an empty frame with the columns).
pub fn scan_rollup(lake: &Lake, spec: &RollupSpec) -> Result<LazyFrame> {
    let dir = lake.root().join(spec.relative_dir());
    let files = partition_files(&dir)?;
    if files.is_empty() {
        let mut df = aggregate::empty_rows(&spec.by)?;
        df.with_column(Column::new_empty("window_end".into(), &utc_datetime()))?;
        let lf = df
            .lazy()
            .with_column(col("window_start").cast(utc_datetime()));
        return Ok(lf.select(output_columns(spec)));
    }
    crate::lake::scan_paths(&files, false)
}

fn output_columns(spec: &RollupSpec) -> Vec<Expr> {
    let mut c: Vec<Expr> = spec.key_columns().into_iter().map(col).collect();
    c.extend([
        col("window_start"),
        col("window_end"),
        col("value"),
        col("event_count"),
    ]);
    c
}

fn date_micros(d: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .map(date_start_micros)
        .unwrap_or(0)
}

/// Events aggregated per batch: a batch is a run of consecutive partitions holding about
/// this many events, so memory stays bounded whatever the lake's size (windows never cross
/// partitions, so batches are independent).
pub const BATCH_EVENTS: u64 = 4_000_000;

/// Aggregated rows of the windows of the partitions in `scope`.
fn compute(
    lake: &Lake,
    files: &[DataFile],
    meters: &Meters,
    spec: &RollupSpec,
    pcal: &Calendar,
    scope: &BTreeSet<i64>,
) -> Result<(DataFrame, Vec<String>)> {
    let overlaps = |f: &DataFile, (a, b): (i64, i64)| {
        let s = date_micros(&f.date);
        s < b && s + MICROS_PER_DAY > a
    };
    // Batches of consecutive partitions of about BATCH_EVENTS events.
    let mut batches: Vec<Vec<i64>> = Vec::new();
    let mut current: Vec<i64> = Vec::new();
    let mut rows_in = 0u64;
    for &p in scope {
        let span = (p, pcal.end_of(p).unwrap_or(i64::MAX));
        let n: u64 = files
            .iter()
            .filter(|f| overlaps(f, span))
            .map(|f| f.rows)
            .sum();
        if !current.is_empty() && rows_in + n > BATCH_EVENTS {
            batches.push(std::mem::take(&mut current));
            rows_in = 0;
        }
        current.push(p);
        rows_in += n;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    let mut out = aggregate::empty_rows(&spec.by)?;
    let mut unconfigured: BTreeSet<String> = BTreeSet::new();
    for batch in batches {
        let spans: Vec<(i64, i64)> = batch
            .iter()
            .map(|&p| (p, pcal.end_of(p).unwrap_or(i64::MAX)))
            .collect();
        let wanted: Vec<DataFile> = files
            .iter()
            .filter(|f| spans.iter().any(|&sp| overlaps(f, sp)))
            .cloned()
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // Only events of this batch's partitions (a file's UTC date may overlap a
        // neighbouring partition when windows are cut in another time zone).
        let (lo, hi) = (spans[0].0, spans[spans.len() - 1].1);
        let parts = Series::new("p".into(), batch.clone());
        let ts = col("ts").cast(DataType::Int64);
        let events = crate::lake::scan_files(lake, &wanted)?.filter(
            ts.clone().gt_eq(lit(lo)).and(ts.lt(lit(hi))).and(
                window_start_expr(col("ts"), spec.granularity.partition(), spec.zone)?
                    .is_in(lit(parts).implode(true), false),
            ),
        );
        let window = window_start_expr(col("ts"), spec.granularity, spec.zone)?;
        let (df, u) = aggregate(events, meters, window, &spec.by)?;
        out.vstack_mut(&df.select(out.get_column_names().into_iter().cloned())?)?;
        unconfigured.extend(u);
    }
    Ok((out, unconfigured.into_iter().collect()))
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
fn existing_ranges(dir: &Path, spec: &RollupSpec, meters: &Meters) -> Result<Ranges> {
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

/// The rows to store, one frame per partition of `scope`: the aggregated rows, with zero
/// rows filling each zero-when-empty series over its range, and window ends.
///
/// Rows are walked once in (series, window) order; output key columns are gathered from
/// the input by row index, so no key string is copied one by one.
#[allow(clippy::too_many_arguments)]
fn complete(
    rows: &DataFrame,
    spec: &RollupSpec,
    cal: &Calendar,
    part_of: &dyn Fn(i64) -> i64,
    scope: &BTreeSet<i64>,
    ranges: &Ranges,
    summary: &mut RollupSummary,
) -> Result<Completed> {
    let keys = spec.key_columns();
    // Series known only from stored files get a placeholder row (flag set) so the walk
    // visits them too: they may need zero rows in the partitions recomputed now.
    let mut ex_keys: Vec<Vec<Option<&str>>> = vec![Vec::new(); keys.len()];
    for k in ranges.keys() {
        for (c, v) in ex_keys.iter_mut().zip(k) {
            c.push(v.as_deref());
        }
    }
    let n_ex = ranges.len();
    let mut ex_cols: Vec<Column> = keys
        .iter()
        .zip(ex_keys)
        .map(|(k, v)| Column::new(k.as_str().into(), v))
        .collect();
    ex_cols.push(Column::new("window_start".into(), vec![i64::MIN; n_ex]));
    ex_cols.push(Column::new("value".into(), vec![0.0f64; n_ex]));
    ex_cols.push(Column::new("event_count".into(), vec![0i64; n_ex]));
    let extras = DataFrame::new_infer_height(ex_cols)?;
    let mut all = rows.select(extras.get_column_names().into_iter().cloned())?;
    all.vstack_mut(&extras)?;
    all.rechunk_mut();
    let kc: Vec<&StringChunked> = keys
        .iter()
        .map(|k| all.column(k).and_then(|c| c.str()))
        .collect::<PolarsResult<_>>()?;
    let no_nulls = |name: &str| Error::InvalidParameter {
        name: "rollup",
        reason: format!("aggregated `{name}` has nulls"),
    };
    let ws = all.column("window_start")?.i64()?;
    let ws = ws.cont_slice().map_err(|_| no_nulls("window_start"))?;
    let vs = all.column("value")?.f64()?;
    let vs = vs.cont_slice().map_err(|_| no_nulls("value"))?;
    let ns = all.column("event_count")?.i64()?;
    let ns = ns.cont_slice().map_err(|_| no_nulls("event_count"))?;
    let t0 = std::time::Instant::now();
    let order = series_order(&kc, ws)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "ordered");
    // Each calendar window's partition, and the window's end, looked up by index.
    let win_part: Vec<i64> = cal.starts().iter().map(|&w| part_of(w)).collect();
    let in_scope: Vec<bool> = win_part.iter().map(|p| scope.contains(p)).collect();
    // Partitions are runs of consecutive windows: number them by window index.
    let mut part_starts: Vec<i64> = win_part.clone();
    part_starts.dedup();
    let win_slot: Vec<usize> = win_part
        .iter()
        .map(|p| part_starts.partition_point(|q| q < p))
        .collect();
    let mut parts: Vec<Out> = (0..part_starts.len()).map(|_| Out::default()).collect();
    let mut emit = |src: usize, wi: usize, v: f64, n: i64| {
        let o = &mut parts[win_slot[wi]];
        o.src.push(src as IdxSize);
        o.wi.push(wi as u32);
        o.v.push(v);
        o.n.push(n);
    };
    // `order` lists rows by (series, window); walk it one series at a time.
    let total = order.len();
    let key_at = |r: usize| kc.iter().map(move |c| c.get(r));
    let mut i = 0;
    while i < total {
        let (series, first) = (order[i].0, order[i].1 as usize);
        let mut j = i + 1;
        while j < total && order[j].0 == series {
            j += 1;
        }
        let owned: Key = key_at(first).map(|k| k.map(str::to_string)).collect();
        let range = ranges
            .get(&owned)
            .and_then(|&(a, b)| Some((cal.index_of(a)?, cal.index_of(b)?)));
        let before = summary.rows_written;
        let w_at = |k: usize| ws[order[k].1 as usize];
        // Placeholder rows sort first (window i64::MIN): skip them.
        let mut k = i;
        while k < j && w_at(k) == i64::MIN {
            k += 1;
        }
        match range {
            Some((ia, ib)) => {
                // Zero-when-empty series: every window of the range in scope.
                for (wi, &w) in cal.starts().iter().enumerate().take(ib + 1).skip(ia) {
                    while k < j && w_at(k) < w {
                        k += 1;
                    }
                    if k < j && w_at(k) == w {
                        let r = order[k].1 as usize;
                        emit(r, wi, vs[r], ns[r]);
                        summary.rows_written += 1;
                    } else if in_scope[wi] {
                        emit(first, wi, 0.0, 0);
                        summary.rows_written += 1;
                        summary.zero_rows += 1;
                    }
                }
            }
            None => {
                for &(_, r) in &order[k..j] {
                    let r = r as usize;
                    if let Some(wi) = cal.index_of(ws[r]) {
                        emit(r, wi, vs[r], ns[r]);
                        summary.rows_written += 1;
                    }
                }
            }
        }
        summary.series += u64::from(summary.rows_written > before);
        i = j;
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "walked");
    let key_frame = all.select(keys.iter().map(String::as_str))?;
    Ok(Completed {
        key_frame,
        parts: part_starts
            .into_iter()
            .zip(parts)
            .filter(|(_, o)| !o.src.is_empty())
            .collect(),
    })
}

/// One partition's rows: where each row's keys come from, its window, value and count.
#[derive(Default)]
struct Out {
    src: Vec<IdxSize>,
    wi: Vec<u32>,
    v: Vec<f64>,
    n: Vec<i64>,
}

/// The rows to store: key columns to gather from, and each partition's rows.
struct Completed {
    key_frame: DataFrame,
    parts: Vec<(i64, Out)>,
}

impl Out {
    /// The partition's frame: keys gathered by row index, windows looked up by index.
    fn frame(self, key_frame: &DataFrame, cal: &Calendar) -> Result<DataFrame> {
        let starts = cal.starts();
        let ws: Vec<i64> = self.wi.iter().map(|&i| starts[i as usize]).collect();
        let we: Vec<i64> = self
            .wi
            .iter()
            .map(|&i| starts.get(i as usize + 1).copied().unwrap_or(i64::MAX))
            .collect();
        let mut df = key_frame.take(&IdxCa::from_vec("idx".into(), self.src))?;
        df.with_column(Column::new("window_start".into(), ws).cast(&utc_datetime())?)?;
        df.with_column(Column::new("window_end".into(), we).cast(&utc_datetime())?)?;
        df.with_column(Column::new("value".into(), self.v))?;
        df.with_column(Column::new("event_count".into(), self.n))?;
        Ok(df)
    }
}

/// Rows ordered by (series key, window), each with its series' rank in key order: series
/// are numbered by a hash of their key and the few distinct keys sorted, so the many rows
/// are sorted on integers rather than on strings.
fn series_order(kc: &[&StringChunked], ws: &[i64]) -> Result<Vec<(u32, IdxSize)>> {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    let n = ws.len();
    let mut hashes = vec![0u64; n];
    for c in kc {
        for (h, v) in hashes.iter_mut().zip(c.iter()) {
            // The previous columns' hash seeds this one; a null hashes apart from "".
            *h = match v {
                Some(v) => xxh3_64_with_seed(v.as_bytes(), *h),
                None => h.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            };
        }
    }
    // Distinct series: hash -> (first row, id); a hash collision between different keys
    // is detected by comparing with the first row.
    let mut ids: HashMap<u64, (usize, u32)> = HashMap::new();
    let mut firsts: Vec<usize> = Vec::new();
    let mut row_series: Vec<u32> = Vec::with_capacity(n);
    for (r, &h) in hashes.iter().enumerate() {
        let (first, id) = *ids.entry(h).or_insert_with(|| {
            firsts.push(r);
            (r, (firsts.len() - 1) as u32)
        });
        if first != r && !kc.iter().all(|c| c.get(first) == c.get(r)) {
            return Err(Error::InvalidParameter {
                name: "rollup",
                reason: "two series keys share a 64-bit hash; please report this".into(),
            });
        }
        row_series.push(id);
    }
    let mut by_key: Vec<u32> = (0..firsts.len() as u32).collect();
    by_key.sort_by(|&a, &b| {
        let (ra, rb) = (firsts[a as usize], firsts[b as usize]);
        kc.iter()
            .map(|c| c.get(ra).cmp(&c.get(rb)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rank = vec![0u32; firsts.len()];
    for (i, &id) in by_key.iter().enumerate() {
        rank[id as usize] = i as u32;
    }
    let mut order: Vec<(u32, i64, IdxSize)> = (0..n)
        .map(|r| (rank[row_series[r] as usize], ws[r], r as IdxSize))
        .collect();
    order.sort_unstable();
    Ok(order.into_iter().map(|(s, _, r)| (s, r)).collect())
}

fn period_dir(spec: &RollupSpec, p: i64) -> String {
    format!("period={}", spec.zone.local_date(p).format("%Y-%m-%d"))
}

/// Writes one file per partition (in parallel; each atomically: temp file, fsync, rename)
/// and deletes the files of partitions in scope that have no rows any more.
fn write_partitions(
    dir: &Path,
    spec: &RollupSpec,
    done: Completed,
    cal: &Calendar,
    scope: &BTreeSet<i64>,
    summary: &mut RollupSummary,
) -> Result<()> {
    use rayon::prelude::*;
    let written: BTreeSet<i64> = done.parts.iter().map(|(p, _)| *p).collect();
    let key_frame = &done.key_frame;
    done.parts
        .into_par_iter()
        .map(|(p, o)| -> Result<()> {
            let mut part = o.frame(key_frame, cal)?;
            let pdir = dir.join(period_dir(spec, p));
            fs::create_dir_all(&pdir).at(&pdir)?;
            let path = pdir.join(PART_FILE);
            let tmp = pdir.join(format!(".{PART_FILE}.tmp"));
            let f = fs::File::create(&tmp).at(&tmp)?;
            ParquetWriter::new(&f)
                .with_compression(ParquetCompression::Zstd(None))
                .with_statistics(StatisticsOptions::full())
                .finish(&mut part)
                .map_err(|e| Error::BadInput {
                    path: tmp.clone(),
                    reason: format!("writing the rollup: {e}"),
                })?;
            f.sync_all().at(&tmp)?;
            fs::rename(&tmp, &path).at(&path)?;
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    summary.partitions_written += written.len() as u64;
    for &p in scope.difference(&written) {
        let path = dir.join(period_dir(spec, p)).join(PART_FILE);
        if path.is_file() {
            fs::remove_file(&path).at(&path)?;
            summary.partitions_removed += 1;
        }
    }
    crate::lake::sync_dir(dir)
}

fn partition_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for e in fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if p.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("period="))
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn partition_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(partition_dirs(dir)?
        .into_iter()
        .map(|d| d.join(PART_FILE))
        .filter(|p| p.is_file())
        .collect())
}

fn remove_partitions_except(dir: &Path, keep: &BTreeSet<String>) -> Result<u64> {
    let mut n = 0;
    for d in partition_dirs(dir)? {
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !keep.contains(name) {
            fs::remove_dir_all(&d).at(&d)?;
            n += 1;
        }
    }
    Ok(n)
}

/// After a run: a full run deletes the partitions it did not write; a run that covered the
/// whole lake records the commit it is now complete up to.
fn finish(
    dir: &Path,
    mode: RollupMode,
    scope: &BTreeSet<i64>,
    state: &State,
    summary: &mut RollupSummary,
    spec: &RollupSpec,
) -> Result<()> {
    if mode == RollupMode::Full {
        let keep: BTreeSet<String> = scope.iter().map(|&p| period_dir(spec, p)).collect();
        summary.partitions_removed += remove_partitions_except(dir, &keep)?;
    }
    if mode != RollupMode::Range {
        write_state(dir, state)?;
    }
    Ok(())
}

fn read_state(dir: &Path) -> Result<Option<State>> {
    let p = dir.join(STATE_FILE);
    if !p.is_file() {
        return Ok(None);
    }
    let text = fs::read(&p).at(&p)?;
    // A damaged state only costs a full recompute.
    Ok(serde_json::from_slice(&text).ok())
}

fn write_state(dir: &Path, s: &State) -> Result<()> {
    let p = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).at(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(s).expect("state serialises"))
        .at(&tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, &p).at(&p)?;
    crate::lake::sync_dir(dir)
}
