//! `compact`: merges each partition's small files into one, and each day's dedup key
//! files into one, in one atomic commit.
//!
//! The merged file holds exactly the rows of the files it replaces (checked: same row
//! count and same value sum before the commit), sorted like every lake file; the merged
//! key file holds every key of the files it replaces. A server flushing every second adds
//! one data file and one key file per day touched per flush; compacting them in the
//! background keeps reads and the dedup index's loading from slowing down with uptime.
//! [`Compaction::small_rows`] leaves large files alone and [`Compaction::max_rows`] bounds
//! one merge, so the work and memory of a compaction do not grow with the partition.

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::lake::keys::write_key_file;
use crate::lake::{Commit, CommitKind, DataFile, Lake, read_events, write_events};

/// What a compaction did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompactSummary {
    /// The commit, if any partition needed compacting.
    pub commit: Option<u64>,
    /// Partitions compacted.
    pub partitions: Vec<String>,
    /// Files before and after.
    pub files_before: u64,
    /// Files after.
    pub files_after: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Dedup key files merged into one per day.
    pub key_files_merged: u64,
}

/// The first of `files` (oldest first) whose rows add up to at most `cap` (at least one).
fn capped<T>(files: Vec<T>, rows: impl Fn(&T) -> u64, cap: u64) -> Vec<T> {
    let mut total = 0u64;
    files
        .into_iter()
        .take_while(|f| {
            let first = total == 0;
            total = total.saturating_add(rows(f));
            first || total <= cap
        })
        .collect()
}

/// The keys of a key file.
fn read_keys(path: &std::path::Path) -> Result<Vec<u128>> {
    let bytes = std::fs::read(path).at(path)?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect())
}

/// What to compact.
#[derive(Debug, Clone, Default)]
pub struct Compaction {
    /// A partition (or a day's key files) is compacted when it holds at least this many
    /// files (at least 2).
    pub min_files: usize,
    /// Only these dates (none: all).
    pub only: Vec<String>,
    /// Only files of fewer rows (keys, for key files) than this are merged (none: all).
    pub small_rows: Option<u64>,
    /// At most this many rows (keys) go into one merged file; the oldest files first
    /// (none: no limit).
    pub max_rows: Option<u64>,
}

/// Compacts every partition holding at least `min_files` files (or only `only` dates).
pub fn compact(lake: &mut Lake, min_files: usize, only: &[String]) -> Result<CompactSummary> {
    compact_with(
        lake,
        &Compaction {
            min_files,
            only: only.to_vec(),
            small_rows: None,
            max_rows: None,
        },
    )
}

/// Compacts as `how` says.
pub fn compact_with(lake: &mut Lake, how: &Compaction) -> Result<CompactSummary> {
    let (min_files, only) = (how.min_files, &how.only[..]);
    let files: Vec<DataFile> = lake.data_files();
    let mut by_date: std::collections::BTreeMap<&str, Vec<&DataFile>> = Default::default();
    for f in &files {
        if how.small_rows.is_none_or(|r| f.rows < r) {
            by_date.entry(f.date.as_str()).or_default().push(f);
        }
    }
    let seq = lake.next_seq();
    let cap = how.max_rows.unwrap_or(u64::MAX);
    let targets: Vec<(&str, Vec<&DataFile>)> = by_date
        .into_iter()
        .filter(|(d, _)| only.is_empty() || only.iter().any(|o| o == d))
        .map(|(d, fs)| (d, capped(fs, |f| f.rows, cap)))
        .filter(|(_, fs)| fs.len() >= min_files.max(2))
        .collect();
    let mut key_targets: Vec<(i32, Vec<std::path::PathBuf>)> = Vec::new();
    for (d, fs) in lake.key_files() {
        if !only.is_empty() && !only.iter().any(|o| *o == crate::time::day_to_string(d)) {
            continue;
        }
        let mut sized = Vec::with_capacity(fs.len());
        for p in fs {
            let keys = std::fs::metadata(&p).at(&p)?.len() / 16;
            if how.small_rows.is_none_or(|r| keys < r) {
                sized.push((p, keys));
            }
        }
        let picked = capped(sized, |f| f.1, cap);
        if picked.len() >= min_files.max(2) {
            key_targets.push((d, picked.into_iter().map(|f| f.0).collect()));
        }
    }
    let mut summary = CompactSummary {
        commit: None,
        partitions: vec![],
        files_before: files.len() as u64,
        files_after: files.len() as u64,
        rows: 0,
        key_files_merged: 0,
    };
    if targets.is_empty() && key_targets.is_empty() {
        return Ok(summary);
    }
    let stage = lake.stage_dir(seq)?;
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let whole: Vec<DataFile> = targets
        .iter()
        .flat_map(|(_, fs)| fs.iter().map(|f| (*f).clone()))
        .collect();
    lake.fetch(&whole)?;
    for (date, old) in &targets {
        let mut events = Vec::new();
        for f in old {
            events.extend(read_events(&lake.root().join(&f.path))?);
        }
        let rel = Lake::data_file_path(date, seq, 0);
        let w = write_events(&stage.join(&rel), &events)?;
        let (rows, sum): (u64, f64) = (
            old.iter().map(|f| f.rows).sum(),
            old.iter().map(|f| f.value_sum).sum(),
        );
        if w.rows != rows || (w.value_sum - sum).abs() > 1e-9 * sum.abs().max(1.0) {
            return Err(Error::CorruptLake {
                path: lake.root().join(&rel),
                reason: format!(
                    "compaction of {date} changed the data: {} rows / sum {} vs {rows} / {sum}",
                    w.rows, w.value_sum
                ),
            });
        }
        summary.rows += w.rows;
        summary.partitions.push(date.to_string());
        added.push(DataFile {
            path: rel,
            date: date.to_string(),
            rows: w.rows,
            bytes: w.bytes,
            value_sum: w.value_sum,
            exact: Some(crate::lake::ExactSum::of(&w)),
        });
        removed.extend(old.iter().map(|f| f.path.clone()));
    }
    summary.files_after = summary.files_before - removed.len() as u64 + added.len() as u64;
    crate::fault::check("compact.write").at(&stage)?;
    let mut keys = Vec::new();
    for (day, old) in &key_targets {
        let mut all: Vec<u128> = Vec::new();
        for p in old {
            all.extend(read_keys(p)?);
        }
        all.sort_unstable();
        all.dedup();
        let rel = Lake::key_file_path(&crate::time::day_to_string(*day), seq);
        write_key_file(&stage.join(&rel), &mut all)?;
        keys.push(rel);
        summary.key_files_merged += old.len() as u64;
        for p in old {
            let rel = p
                .strip_prefix(lake.root())
                .map_err(|_| Error::CorruptLake {
                    path: p.clone(),
                    reason: "key file outside the lake".into(),
                })?;
            removed.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    // Same rows: nothing downstream needs recomputing (no `partitions`).
    let commit = Commit {
        added,
        removed,
        keys,
        ..Commit::new(seq, CommitKind::Compact)
    };
    lake.commit(commit)?;
    summary.commit = Some(seq);
    Ok(summary)
}
