//! Where a rollup lives on disk and how it is read and written: the folder layout (one
//! directory per [`RollupSpec`], one Parquet file per partition, a `_state.json`; when
//! sharded, the same per `shard=I-of-N` folder and a `_layout.json` with N), the layout's
//! locks and its switch to another shard count, atomic partition writes, the clean-up
//! after a full run, and the readers of the stored partitions of every shard
//! ([`with_rollup_scan`], `stored_partitions`).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::lake::{Lake, Shard};

use super::aggregate;
use super::complete::Completed;
use super::{
    Calendar, Dim, Granularity, RollupMode, RollupSpec, RollupSummary, Zone, utc_datetime,
};

/// Directory of the rollups, relative to the lake root.
pub const ROLLUPS_DIR: &str = "rollups";
const STATE_FILE: &str = "_state.json";
const PART_FILE: &str = "part-0.parquet";
/// The shard count a rollup is stored in (absent: 1, unsharded).
const LAYOUT_FILE: &str = "_layout.json";
/// Held shared by every run that writes the rollup, exclusively by one that changes its
/// layout (so no shard is written while another run wipes it).
const LAYOUT_LOCK: &str = "_layout.lock";

/// What `_state.json` records: the lake commit the rollup is complete up to, and the
/// meter definitions and spec it was computed with (another fingerprint: a full run).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) seq: u64,
    pub(super) fingerprint: String,
}

impl RollupSpec {
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
}

/// What `_layout.json` records: how many shards the rollup is stored in.
#[derive(Debug, Serialize, Deserialize)]
struct Layout {
    shards: u32,
}

/// The shard count the rollup at `dir` is stored in (1 without a `_layout.json`: the
/// unsharded layout every rollup had before shards).
pub(super) fn stored_shards(dir: &Path) -> Result<u32> {
    let p = dir.join(LAYOUT_FILE);
    if !p.is_file() {
        return Ok(1);
    }
    let text = fs::read(&p).at(&p)?;
    let layout: Layout = serde_json::from_slice(&text).map_err(|e| Error::CorruptLake {
        path: p.clone(),
        reason: format!("rollup layout: {e}"),
    })?;
    Ok(layout.shards.max(1))
}

/// The folder `shard`'s part of the rollup at `dir` lives in: `dir` itself unsharded,
/// else `dir/shard=I-of-N`.
pub(super) fn shard_dir(dir: &Path, shard: Shard) -> PathBuf {
    if shard.is_all() {
        dir.to_path_buf()
    } else {
        dir.join(shard.dir_name())
    }
}

/// Entries of the rollup at `dir` that belong to another layout than `shards`: for the
/// unsharded layout, every `shard=` folder; for a sharded one, the unsharded partitions
/// and state, and the folders of other shard counts.
fn foreign_entries(dir: &Path, shards: u32) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let foreign = match Shard::from_dir_name(name) {
            Some(s) => s.count != shards,
            None => shards > 1 && (name.starts_with("period=") || name == STATE_FILE),
        };
        if foreign {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Taken by a run that writes `shard` of the rollup at `dir`, held until it ends: a
/// shared lock when the rollup is stored in `shard.count` shards already. Otherwise the
/// run switches the layout under an exclusive lock: it records the new count, then
/// deletes the old layout's files (readers follow the record, so they never mix two
/// layouts; a crash in between leaves files no reader reads, deleted by the next switch or
/// run). The other shards of the new layout are then computed in full by their workers.
///
/// The exclusive lock is only tried, never waited for: a worker that finds the layout in
/// use (by the old layout's runs, or by workers of the new one that switched it first)
/// looks again under a shared lock a moment later. So the workers of a new layout that
/// start together compute their shards at the same time once one of them has switched,
/// instead of queueing for an exclusive lock behind each other's whole runs.
pub(super) fn enter_layout(dir: &Path, shard: Shard) -> Result<fs::File> {
    let path = dir.join(LAYOUT_LOCK);
    let in_layout = || -> Result<bool> {
        Ok(stored_shards(dir)? == shard.count && foreign_entries(dir, shard.count)?.is_empty())
    };
    loop {
        let lock = crate::lake::lock_shared(&path)?;
        if in_layout()? {
            return Ok(lock);
        }
        drop(lock);
        match crate::lake::try_lock_exclusive(&path)? {
            // Switched; the next turn takes the shared lock.
            Some(lock) => switch_layout(dir, shard, lock)?,
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Taken by a run that writes every shard of the rollup at `dir` in turn (no `--shard`):
/// a shared lock, and the shard count the rollup is stored in (1 for a new rollup).
pub(super) fn enter_stored_layout(dir: &Path) -> Result<(fs::File, u32)> {
    let lock = crate::lake::lock_shared(&dir.join(LAYOUT_LOCK))?;
    Ok((lock, stored_shards(dir)?))
}

/// Held by a reader of a rollup while it reads the layout and lists and reads the files:
/// a shared lock, so no run switches the layout under it. None when there is no rollup
/// yet, or when the lock file cannot be made (a lake mounted read-only, which no run can
/// switch either).
pub(super) fn reading(dir: &Path) -> Result<Option<fs::File>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    match crate::lake::lock_shared(&dir.join(LAYOUT_LOCK)) {
        Ok(lock) => Ok(Some(lock)),
        Err(e) => {
            tracing::debug!("reading {} without its layout lock: {e}", dir.display());
            Ok(None)
        }
    }
}

/// Switches the rollup at `dir` to `shard.count` shards, `_lock` (the exclusive layout
/// lock) held; it is released on return.
fn switch_layout(dir: &Path, shard: Shard, _lock: fs::File) -> Result<()> {
    let from = stored_shards(dir)?;
    if from != shard.count {
        tracing::info!(
            "rollup {}: stored in {from} shard(s), now in {}; the old layout is removed",
            dir.display(),
            shard.count
        );
        let layout = serde_json::to_vec(&Layout {
            shards: shard.count,
        })
        .expect("layout serialises");
        crate::lake::write_whole(&dir.join(LAYOUT_FILE), &layout)?;
    }
    for p in foreign_entries(dir, shard.count)? {
        if p.is_dir() {
            fs::remove_dir_all(&p).at(&p)?;
        } else {
            fs::remove_file(&p).at(&p)?;
        }
    }
    crate::lake::sync_dir(dir)
}

/// The stored partition files of the rollup at `dir`, one group per partition (period)
/// in time order: in a sharded layout, each shard's file of it, by shard index.
pub(super) fn stored_partitions(dir: &Path) -> Result<Vec<Vec<PathBuf>>> {
    let shards = stored_shards(dir)?;
    if shards == 1 {
        return Ok(partition_files(dir)?.into_iter().map(|f| vec![f]).collect());
    }
    let mut groups: std::collections::BTreeMap<std::ffi::OsString, Vec<PathBuf>> =
        Default::default();
    for shard in Shard::all(shards)? {
        for f in partition_files(&shard_dir(dir, shard))? {
            let period = f
                .parent()
                .and_then(Path::file_name)
                .unwrap_or_default()
                .to_os_string();
            groups.entry(period).or_default().push(f);
        }
    }
    Ok(groups.into_values().collect())
}

/// Whether every shard of the rollup at `dir` is complete up to lake commit `seq` under
/// `fingerprint`.
pub(super) fn all_shards_at(dir: &Path, seq: u64, fingerprint: &str) -> Result<bool> {
    for shard in Shard::all(stored_shards(dir)?)? {
        let sdir = shard_dir(dir, shard);
        if !read_state(&sdir)?.is_some_and(|s| s.seq == seq && s.fingerprint == fingerprint) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs `read` on a lazy scan of a rollup's stored rows, every shard's (no rows: an empty
/// frame with the columns), with the layout's shared lock held until it returns, so no
/// layout switch deletes files under the query: collect inside `read`.
pub fn with_rollup_scan<T>(
    lake: &Lake,
    spec: &RollupSpec,
    read: impl FnOnce(LazyFrame) -> Result<T>,
) -> Result<T> {
    let _layout = reading(&lake.root().join(spec.relative_dir()))?;
    read(scan_rollup(lake, spec)?)
}

fn scan_rollup(lake: &Lake, spec: &RollupSpec) -> Result<LazyFrame> {
    let dir = lake.root().join(spec.relative_dir());
    let files: Vec<PathBuf> = stored_partitions(&dir)?.into_iter().flatten().collect();
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

fn period_dir(spec: &RollupSpec, p: i64) -> String {
    format!("period={}", spec.zone.local_date(p).format("%Y-%m-%d"))
}

/// Writes one file per partition of a batch (in parallel; each atomically: temp file,
/// fsync, rename); returns the partitions written.
pub(super) fn write_partitions(
    dir: &Path,
    spec: &RollupSpec,
    done: Completed,
    cal: &Calendar,
) -> Result<BTreeSet<i64>> {
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
            // Not while a rekey runs, and only with the lake's key.
            let _guard = crate::lake::derived_write(&path)?;
            let f = fs::File::create(&tmp).at(&tmp)?;
            if crate::lake::crypto::write_key_id().is_some() {
                // Encrypted with the configured key (lake::crypto).
                crate::lake::crypto::write_frame(&f, &tmp, &mut part)?;
            } else {
                ParquetWriter::new(&f)
                    .with_compression(ParquetCompression::Zstd(None))
                    .with_statistics(StatisticsOptions::full())
                    .finish(&mut part)
                    .map_err(|e| Error::BadInput {
                        path: tmp.clone(),
                        reason: format!("writing the rollup: {e}"),
                    })?;
            }
            f.sync_all().at(&tmp)?;
            fs::rename(&tmp, &path).at(&path)?;
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    Ok(written)
}

/// After the batches are written: deletes the files of partitions in scope that have no
/// rows any more, and counts what was written and removed.
pub(super) fn remove_emptied(
    dir: &Path,
    spec: &RollupSpec,
    scope: &BTreeSet<i64>,
    written: &BTreeSet<i64>,
    summary: &mut RollupSummary,
) -> Result<()> {
    summary.partitions_written += written.len() as u64;
    for &p in scope.difference(written) {
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

pub(super) fn partition_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(partition_dirs(dir)?
        .into_iter()
        .map(|d| d.join(PART_FILE))
        .filter(|p| p.is_file())
        .collect())
}

/// Whether a partition (`period=YYYY-MM-DD`, its first local day in the rollup's zone)
/// ends by the instant `cut` (UTC µs): a day or hour partition is one local day, a week
/// seven, a month one month.
fn ends_by(spec: &RollupSpec, name: &str, cut: i64) -> bool {
    let Some(start) = name
        .strip_prefix("period=")
        .and_then(|p| chrono::NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
    else {
        return false;
    };
    let end = match spec.granularity {
        Granularity::Month => start.checked_add_months(chrono::Months::new(1)),
        Granularity::Week => start.checked_add_days(chrono::Days::new(7)),
        _ => start.checked_add_days(chrono::Days::new(1)),
    };
    end.is_some_and(|e| spec.zone.midnight_micros(e) <= cut)
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

/// After a run: a full run deletes the partitions it did not write, except those that end
/// by the UTC day of the lake's first event (`first_event`, `YYYY-MM-DD`): their events
/// were dropped by retention, and rollups keep their own history. A run that covered the
/// whole lake records the commit it is now complete up to.
pub(super) fn finish(
    dir: &Path,
    mode: RollupMode,
    scope: &BTreeSet<i64>,
    state: &State,
    summary: &mut RollupSummary,
    spec: &RollupSpec,
    first_event: Option<&str>,
) -> Result<()> {
    if mode == RollupMode::Full {
        let mut keep: BTreeSet<String> = scope.iter().map(|&p| period_dir(spec, p)).collect();
        // The first event's UTC day, as an instant.
        let first = first_event
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .map(|d| Zone::UTC.midnight_micros(d));
        if let Some(first) = first {
            let mut history = 0;
            for d in partition_dirs(dir)? {
                let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if !keep.contains(name) && ends_by(spec, name, first) {
                    keep.insert(name.to_string());
                    history += 1;
                }
            }
            if history > 0 {
                tracing::info!(
                    "kept {history} rollup partitions from before the lake's first event (their events are gone; they are not recomputed)"
                );
            }
        }
        summary.partitions_removed += remove_partitions_except(dir, &keep)?;
    }
    if mode != RollupMode::Range {
        write_state(dir, state)?;
    }
    Ok(())
}

pub(super) fn read_state(dir: &Path) -> Result<Option<State>> {
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
