//! Rollups: the lake's events aggregated per tenant, meter (and optionally user or
//! property) and window, with polars. Every later stage (forecasts, anomalies, quotas,
//! reports) reads these.
//!
//! ```text
//! LAKE/rollups/granularity=G/by=B/tz=Z/
//!   period=YYYY-MM-DD/part-0.parquet   one partition: a (local) day of hours, or one
//!                                      day, week or month window
//!   _state.json                        the lake commit the rollup is complete up to
//!   _layout.json                       sharded: `{"shards":N}` (absent: unsharded)
//!   shard=I-of-N/period=.../part-0.parquet, shard=I-of-N/_state.json
//!                                      sharded: shard I's tenants (`--shard I/N`,
//!                                      [`crate::lake::shard`]); readers read the union
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
//! ```text
//! rollup/
//!   mod.rs        RollupSpec, RollupOptions, RollupSummary; `rollup`, the driver:
//!                 plan, aggregate, complete, store; `rollup_series`, the stages' reader
//!   plan.rs       which partitions a run recomputes (mode, touched dates, calendars,
//!                 series ranges and the partitions where they grew)
//!   compute.rs    the lake's events of those partitions, aggregated in bounded batches
//!   complete.rs   zero rows over each series' range, window ends, rows per partition
//!   store.rs      the folder layout (and the shard layout's switch), atomic partition
//!                 writes, `_state.json`, `with_rollup_scan`
//!   series.rs     a rollup folded into tenant × meter series, one partition at a time
//!   aggregate.rs  one aggregation per meter as a polars expression, breakdown dimensions
//!   meters.rs     meter definitions (`meters.toml`) and their aggregations
//!   query.rs      one meter queried from events (OpenMeter's meter query): any window
//!                 down to minutes, by subject and group, with the rollups' aggregations
//!   window.rs     granularities, time zones, window starts and calendars
//! ```
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
mod complete;
mod compute;
mod meters;
mod plan;
pub mod query;
mod runs;
mod series;
mod store;
mod window;

pub use aggregate::{
    Dim, aggregate, aggregation_of, collect as collect_streaming, key_columns, property_expr,
    property_number,
};
pub use compute::BATCH_EVENTS;
pub use meters::{
    Aggregation, DEFAULT_METERS_FILE, DEFAULT_METERS_TOML, DurationUnit, Meter, Meters,
    json_path_key, value_property_key,
};
pub use store::{ROLLUPS_DIR, with_rollup_scan};
pub use window::{Calendar, Granularity, Zone, truncate_all, utc_datetime, window_start_expr};

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use polars::prelude::*;
use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::lake::{Lake, Shard};

use plan::{Plan, Windows};
use store::State;

/// Which rollup: window length, breakdown dimensions and time zone. Where it is stored
/// ([`RollupSpec::relative_dir`]) is defined with the layout, in `store.rs`.
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
    /// Only this shard's tenants (`--shard I/N`), stored in the rollup's `shard=I-of-N`
    /// folder (the layout switched to N shards first if it has another count); readers
    /// read the union of the N shards. None: every shard of the layout the rollup is
    /// stored in, one after the other, so a command that names no shard (`run`, `serve`,
    /// `forget`) keeps a sharded rollup sharded.
    pub shard: Option<Shard>,
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
    /// The shards computed (`I/N`, or `all N` for every shard in turn), when the rollup
    /// is sharded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

impl RollupSummary {
    /// The summary of runs of several shards, one after the other: the counts added, the
    /// mode the one with most work (full, range, incremental, up to date).
    fn absorb(&mut self, other: RollupSummary) {
        let rank = |m: RollupMode| match m {
            RollupMode::Full => 3,
            RollupMode::Range => 2,
            RollupMode::Incremental => 1,
            RollupMode::UpToDate => 0,
        };
        if rank(other.mode) > rank(self.mode) {
            self.mode = other.mode;
        }
        self.partitions_written += other.partitions_written;
        self.partitions_removed += other.partitions_removed;
        self.rows_written += other.rows_written;
        self.zero_rows += other.zero_rows;
        self.series += other.series;
        for m in other.unconfigured_meters {
            if !self.unconfigured_meters.contains(&m) {
                self.unconfigured_meters.push(m);
            }
        }
        self.unconfigured_meters.sort();
    }
}

/// Brings the rollup `spec` of `lake` up to date (see the module docs).
pub fn rollup(
    lake: &Lake,
    meters: &Meters,
    spec: &RollupSpec,
    opts: &RollupOptions,
) -> Result<RollupSummary> {
    lake.check_writer()?;
    let spec_dir = lake.root().join(spec.relative_dir());
    fs::create_dir_all(&spec_dir).at(&spec_dir)?;
    // The layout (shard count) stays as this run needs it while the run writes.
    let (_layout, shards) = match opts.shard {
        Some(s) => (store::enter_layout(&spec_dir, s)?, vec![s]),
        None => {
            let (lock, n) = store::enter_stored_layout(&spec_dir)?;
            (lock, Shard::all(n)?)
        }
    };
    // The lake's tenants, read once for every shard this call computes.
    let tenants = LakeTenants::default();
    let mut out: Option<RollupSummary> = None;
    for &shard in &shards {
        let s = rollup_shard(lake, meters, spec, opts, &spec_dir, shard, &tenants)?;
        match out.as_mut() {
            Some(o) => o.absorb(s),
            None => out = Some(s),
        }
    }
    let mut out = out.expect("a layout has at least one shard");
    if opts.shard.is_none() && shards.len() > 1 {
        out.dir = spec_dir;
        out.shard = Some(format!("all {}", shards.len()));
    }
    Ok(out)
}

/// [`rollup`] of one shard (the whole rollup when unsharded), the layout lock held.
fn rollup_shard(
    lake: &Lake,
    meters: &Meters,
    spec: &RollupSpec,
    opts: &RollupOptions,
    spec_dir: &std::path::Path,
    shard: Shard,
    tenants: &LakeTenants,
) -> Result<RollupSummary> {
    let dir = store::shard_dir(spec_dir, shard);
    fs::create_dir_all(&dir).at(&dir)?;
    // One rollup of a spec (and shard) at a time (two would race on the same files).
    let _lock = crate::lake::lock_exclusive(&dir.join("_lock"))?;

    let fingerprint = format!("{}|{}", meters.fingerprint(), spec.relative_dir());
    let state = store::read_state(&dir)?;
    let lake_seq = lake.last_seq();
    let state_now = State {
        seq: lake_seq,
        fingerprint: fingerprint.clone(),
    };
    let files = lake.data_files();
    let lake_dates: BTreeSet<&str> = files.iter().map(|f| f.date.as_str()).collect();
    let plan = Plan::new(lake, &lake_dates, state.as_ref(), &fingerprint, opts)?;
    let mode = plan.mode;
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
        shard: (!shard.is_all()).then(|| shard.to_string()),
    };
    if plan.touched_dates.is_empty() {
        store::finish(
            &dir,
            mode,
            &BTreeSet::new(),
            &state_now,
            &mut summary,
            spec,
            lake_dates.first().copied(),
        )?;
        if mode == RollupMode::Incremental {
            summary.mode = RollupMode::UpToDate;
        }
        return Ok(summary);
    }

    let old_ranges = if mode == RollupMode::Full {
        plan::Ranges::new()
    } else {
        plan::existing_ranges(&dir, spec, meters)?
    };
    let windows = Windows::new(spec, &lake_dates, &old_ranges)?;
    let clock = std::time::Instant::now();
    // Each batch of completed partitions is written before the next is built.
    let mut written = BTreeSet::new();
    let mut sink = |done: complete::Completed| -> Result<()> {
        written.extend(store::write_partitions(&dir, spec, done, &windows.cal)?);
        Ok(())
    };
    let scope = computed(
        lake,
        meters,
        spec,
        shard,
        tenants,
        &plan,
        &windows,
        &old_ranges,
        &mut summary,
        &mut sink,
    )?;
    tracing::debug!(rows = summary.rows_written, elapsed = ?clock.elapsed(), "written");
    store::remove_emptied(&dir, spec, &scope, &written, &mut summary)?;
    store::finish(
        &dir,
        mode,
        &scope,
        &state_now,
        &mut summary,
        spec,
        lake_dates.first().copied(),
    )?;
    Ok(summary)
}

/// The windows of the plan's touched dates aggregated and completed (gap-filled), handed
/// to `sink` in batches of partitions; returns the partitions they cover. What [`rollup`]
/// stores and [`current_series`] reads in memory.
#[allow(clippy::too_many_arguments)]
fn computed(
    lake: &Lake,
    meters: &Meters,
    spec: &RollupSpec,
    shard: Shard,
    tenants: &LakeTenants,
    plan: &Plan,
    windows: &Windows,
    old_ranges: &plan::Ranges,
    summary: &mut RollupSummary,
    sink: &mut dyn FnMut(complete::Completed) -> Result<()>,
) -> Result<BTreeSet<i64>> {
    let files = lake.data_files();
    let mut scope = windows.scope_of(&plan.touched_dates);
    let pcal = windows.partitions();
    let tenants = shard_tenants(lake, &files, shard, tenants)?;
    let tenants = tenants.as_ref();
    let (mut rows, unconfigured) =
        compute::compute(lake, &files, meters, spec, pcal, &scope, tenants)?;
    tracing::debug!(rows = rows.height(), "aggregated");
    summary.unconfigured_meters = unconfigured;
    let ranges = plan::grown_ranges(old_ranges, &rows, spec, meters)?;
    let gaps = windows.gap_partitions(plan, &ranges, old_ranges, &scope);
    if !gaps.is_empty() {
        let (more, _) = compute::compute(lake, &files, meters, spec, pcal, &gaps, tenants)?;
        rows.vstack_mut(&more)?;
        scope.extend(gaps);
    }
    complete::complete(rows, spec, windows, &scope, &ranges, summary, sink)?;
    Ok(scope)
}

/// The lake's distinct tenants, read at most once per [`rollup`] call however many shards
/// it computes (each sharded run needs them; an unsharded one never reads them).
type LakeTenants = std::cell::OnceCell<Vec<String>>;

/// The lake's tenants that `shard` holds (none when it holds them all): read from the
/// events' `tenant_id` column alone, once per `cache`.
fn shard_tenants(
    lake: &Lake,
    files: &[crate::lake::DataFile],
    shard: Shard,
    cache: &LakeTenants,
) -> Result<Option<polars::prelude::Series>> {
    if shard.is_all() || files.is_empty() {
        return Ok(None);
    }
    if cache.get().is_none() {
        let all = crate::lake::scan_files_columns(lake, files, &["tenant_id"])?
            .select([col("tenant_id").unique()])
            .collect()?;
        let all: Vec<String> = all
            .column("tenant_id")?
            .str()?
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let _ = cache.set(all);
    }
    let mine: Vec<&str> = cache
        .get()
        .into_iter()
        .flatten()
        .map(String::as_str)
        .filter(|t| shard.holds(t))
        .collect();
    Ok(Some(polars::prelude::Series::new("tenant_id".into(), mine)))
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
    rollup_series_where(lake, spec, &|_, _| true)
}

/// The series of [`rollup_series`] that `keep` accepts (tenant, meter); the others are
/// skipped as they are read.
pub fn rollup_series_where(
    lake: &Lake,
    spec: &RollupSpec,
    keep: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<RollupSeries>> {
    rollup_series_of(lake, spec, Shard::ALL, keep)
}

/// The series of [`rollup_series_where`] of one shard's tenants: a sharded worker reads
/// its own shard's files only (stored in `shard`'s layout, as its rollup run left them).
pub fn rollup_series_of(
    lake: &Lake,
    spec: &RollupSpec,
    shard: Shard,
    keep: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<RollupSeries>> {
    let dir = lake.root().join(spec.relative_dir());
    // No layout switch while the files are read.
    let _layout = store::reading(&dir)?;
    let groups = if shard.is_all() {
        store::stored_partitions(&dir)?
    } else {
        let stored = store::stored_shards(&dir)?;
        if stored != shard.count {
            return Err(crate::error::Error::InvalidParameter {
                name: "--shard",
                reason: format!(
                    "{shard}: the rollup {} is stored in {stored} shard(s) now (another run changed its layout); run this worker again",
                    dir.display()
                ),
            });
        }
        store::partition_files(&store::shard_dir(&dir, shard))?
            .into_iter()
            .map(|f| vec![f])
            .collect()
    };
    let keep = |t: &str, m: &str| shard.holds(t) && keep(t, m);
    let mut fold = series::SeriesFold::new(&keep);
    for (i, group) in groups.iter().enumerate() {
        let df = crate::lake::scan_paths(group, false)?
            .select(series::columns())
            .collect()?;
        fold.add(df, groups.len() - i)?;
    }
    Ok(fold.finish())
}

/// Per tenant × meter of the stored rollup `spec`: its rows and its events, read one
/// partition at a time. What a stage that holds series in memory can size its work by.
pub fn series_sizes(
    lake: &Lake,
    spec: &RollupSpec,
) -> Result<std::collections::BTreeMap<(String, String), (u64, u64)>> {
    let mut sizes = std::collections::BTreeMap::new();
    let dir = lake.root().join(spec.relative_dir());
    // No layout switch while the files are read.
    let _layout = store::reading(&dir)?;
    let groups = store::stored_partitions(&dir)?;
    for f in groups.into_iter().flatten() {
        series::add_sizes(
            crate::lake::scan_paths(std::slice::from_ref(&f), false)?,
            &mut sizes,
        )?;
    }
    Ok(sizes)
}

/// Whether the stored rollup `spec` reflects the lake as it is now (its last commit) under
/// these meter definitions: reading it then gives what a recomputation would.
pub fn is_current(lake: &Lake, meters: &Meters, spec: &RollupSpec) -> Result<bool> {
    let dir = lake.root().join(spec.relative_dir());
    let fingerprint = format!("{}|{}", meters.fingerprint(), spec.relative_dir());
    store::all_shards_at(&dir, lake.last_seq(), &fingerprint)
}

/// The tenant × meter series of rollup `spec` as the lake is now, without writing
/// anything: the stored rollup when it is current, else the whole rollup computed in memory
/// (the same computation [`rollup`] stores). For readers that must not change the lake,
/// such as reports.
pub fn current_series(
    lake: &Lake,
    meters: &Meters,
    spec: &RollupSpec,
) -> Result<Vec<RollupSeries>> {
    {
        // No layout switch between the check and the read (shared locks nest).
        let _layout = store::reading(&lake.root().join(spec.relative_dir()))?;
        if is_current(lake, meters, spec)? {
            return rollup_series(lake, spec);
        }
    }
    let files = lake.data_files();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let lake_dates: BTreeSet<&str> = files.iter().map(|f| f.date.as_str()).collect();
    let fingerprint = format!("{}|{}", meters.fingerprint(), spec.relative_dir());
    let plan = Plan::new(
        lake,
        &lake_dates,
        None,
        &fingerprint,
        &RollupOptions::default(),
    )?;
    let none = plan::Ranges::new();
    let windows = Windows::new(spec, &lake_dates, &none)?;
    let mut ignored = RollupSummary {
        dir: PathBuf::new(),
        mode: plan.mode,
        lake_seq: 0,
        partitions_written: 0,
        partitions_removed: 0,
        rows_written: 0,
        zero_rows: 0,
        series: 0,
        unconfigured_meters: Vec::new(),
        shard: None,
    };
    let mut fold = series::SeriesFold::new(&|_, _| true);
    // Partitions still to come, for the fold's sizing: at most the lake's windows.
    let mut left = windows.partitions().starts().len();
    let mut sink = |done: complete::Completed| -> Result<()> {
        for (_, o) in done.parts {
            let df = o
                .frame(&done.key_frame, &windows.cal)?
                .lazy()
                .select(series::columns())
                .collect()?;
            fold.add(df, left)?;
            left = left.saturating_sub(1);
        }
        Ok(())
    };
    computed(
        lake,
        meters,
        spec,
        Shard::ALL,
        &LakeTenants::default(),
        &plan,
        &windows,
        &none,
        &mut ignored,
        &mut sink,
    )?;
    Ok(fold.finish())
}

/// Start (UTC µs) of a lake partition's date (`YYYY-MM-DD`); 0 if it is not one.
fn date_micros(d: &str) -> i64 {
    crate::time::date_str_start(d).unwrap_or(0)
}
