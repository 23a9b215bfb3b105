//! `compact`: merges each partition's small files into one, and each day's dedup key
//! files into one, in one atomic commit.
//!
//! The merged file holds exactly the rows of the files it replaces (checked: same row
//! count and same value sum before the commit), sorted like every lake file; the merged
//! key file holds every key of the files it replaces. A server flushing every second adds
//! one data file and one key file per day touched per flush; compacting them in the
//! background keeps reads and the dedup index's loading from slowing down with uptime.
//! [`Compaction::small_bytes`] leaves large files alone, so the work per compaction does
//! not grow with the partition.

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
    /// Only data files smaller than this many bytes are merged (none: every file).
    pub small_bytes: Option<u64>,
}

/// Compacts every partition holding at least `min_files` files (or only `only` dates).
pub fn compact(lake: &mut Lake, min_files: usize, only: &[String]) -> Result<CompactSummary> {
    compact_with(
        lake,
        &Compaction {
            min_files,
            only: only.to_vec(),
            small_bytes: None,
        },
    )
}

/// Compacts as `how` says.
pub fn compact_with(lake: &mut Lake, how: &Compaction) -> Result<CompactSummary> {
    let (min_files, only) = (how.min_files, &how.only[..]);
    let files: Vec<DataFile> = lake.data_files();
    let mut by_date: std::collections::BTreeMap<&str, Vec<&DataFile>> = Default::default();
    for f in &files {
        if how.small_bytes.is_none_or(|b| f.bytes < b) {
            by_date.entry(f.date.as_str()).or_default().push(f);
        }
    }
    let seq = lake.next_seq();
    let targets: Vec<(&str, Vec<&DataFile>)> = by_date
        .into_iter()
        .filter(|(d, fs)| {
            fs.len() >= min_files.max(2) && (only.is_empty() || only.iter().any(|o| o == d))
        })
        .collect();
    let key_targets: Vec<(i32, Vec<std::path::PathBuf>)> = lake
        .key_files()
        .into_iter()
        .filter(|(d, fs)| {
            fs.len() >= min_files.max(2)
                && (only.is_empty() || only.iter().any(|o| *o == crate::time::day_to_string(*d)))
        })
        .collect();
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
