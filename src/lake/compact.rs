//! `compact`: merges each partition's small files into one, in one atomic commit.
//!
//! The merged file holds exactly the rows of the files it replaces (checked: same row
//! count and same value sum before the commit), sorted like every lake file.

use serde::Serialize;

use crate::error::{Error, Result};
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
}

/// Compacts every partition holding at least `min_files` files (or only `only` dates).
pub fn compact(lake: &mut Lake, min_files: usize, only: &[String]) -> Result<CompactSummary> {
    let files = lake.data_files();
    let mut by_date: std::collections::BTreeMap<&str, Vec<&DataFile>> = Default::default();
    for f in &files {
        by_date.entry(f.date.as_str()).or_default().push(f);
    }
    let seq = lake.next_seq();
    let targets: Vec<(&str, Vec<&DataFile>)> = by_date
        .into_iter()
        .filter(|(d, fs)| {
            fs.len() >= min_files.max(2) && (only.is_empty() || only.iter().any(|o| o == d))
        })
        .collect();
    let mut summary = CompactSummary {
        commit: None,
        partitions: vec![],
        files_before: files.len() as u64,
        files_after: files.len() as u64,
        rows: 0,
    };
    if targets.is_empty() {
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
    // Same rows: nothing downstream needs recomputing (no `partitions`).
    let commit = Commit {
        added,
        removed,
        ..Commit::new(seq, CommitKind::Compact)
    };
    lake.commit(commit)?;
    summary.commit = Some(seq);
    Ok(summary)
}
