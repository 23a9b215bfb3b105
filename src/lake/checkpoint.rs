//! Log checkpoints: the lake's state folded up to a commit, so opening a lake reads one
//! checkpoint and the commits after it, not every commit ever made.
//!
//! A server commits once a second; without checkpoints a lake would hold ~86k log files a
//! day, and every open (each flush, each read endpoint, each CLI command) would parse them
//! all. Every [`every`] commits (200; `MLK_CHECKPOINT_EVERY` in tests), the writer that
//! made the commit writes `_log/SSSSSSSS.checkpoint.json` (temp file, fsync, rename, fsync
//! of the directory, as a commit), then moves the commit files it covers to
//! `_log/_history/`, where only a full history ([`history`]: the compliance report) reads
//! them. A reader that races the move sees a file vanish and reads the log again.
//!
//! What a checkpoint keeps is what the readers of the lake ask of its commits: the live
//! data files (in commit order) and key files, the checksums of input files (and of the
//! last [`KEEP_WAL_INPUTS`] commits' WAL segments: older ones are never retried, and a
//! leftover segment is deduplicated by its events' keys anyway), each partition's last
//! changing commit (for `partitions_since`), the summed counts, the quarantine files, and
//! the commits that carry an audit record (retention, forget), whole.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::{Commit, Counts, DataFile, log_name, sync_dir};
use crate::error::{Error, IoContext, Result};

/// Where covered commit files go.
pub(crate) const HISTORY_DIR: &str = "_history";

/// WAL inputs of this many latest commits are kept by a checkpoint.
pub(crate) const KEEP_WAL_INPUTS: u64 = 10_000;

/// Commits between checkpoints: 200, or `MLK_CHECKPOINT_EVERY` (0: never).
pub(crate) fn every() -> u64 {
    static EVERY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("MLK_CHECKPOINT_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    })
}

/// An input consumed by a commit before the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InputRef {
    /// xxh3-128 of its bytes.
    pub checksum: String,
    /// Its size.
    pub bytes: u64,
    /// The commit that consumed it.
    pub seq: u64,
    /// Its format (`wal` for a server's log segment).
    pub format: String,
}

/// The state the commits up to `seq` left.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The last commit folded in (0: none).
    pub seq: u64,
    /// Live data files, in commit order.
    pub data_files: Vec<DataFile>,
    /// Live dedup key files.
    pub key_files: Vec<String>,
    /// Inputs consumed.
    pub inputs: Vec<InputRef>,
    /// Each partition's last changing commit.
    pub partitions: BTreeMap<String, u64>,
    /// Counts of every commit, summed.
    pub counts: Counts,
    /// Quarantine files written.
    pub quarantine: Vec<String>,
    /// Commits with an audit record, whole.
    pub audited: Vec<Commit>,
}

impl Checkpoint {
    /// Folds `commits` (the ones right after this checkpoint, in order) into it.
    pub(crate) fn fold(&self, commits: &[Commit]) -> Checkpoint {
        let removed: HashSet<&str> = commits
            .iter()
            .flat_map(|c| c.removed.iter().map(String::as_str))
            .collect();
        let mut next = Checkpoint {
            seq: commits.last().map_or(self.seq, |c| c.seq),
            data_files: self
                .data_files
                .iter()
                .chain(commits.iter().flat_map(|c| c.added.iter()))
                .filter(|f| !removed.contains(f.path.as_str()))
                .cloned()
                .collect(),
            key_files: self
                .key_files
                .iter()
                .chain(commits.iter().flat_map(|c| c.keys.iter()))
                .filter(|k| !removed.contains(k.as_str()))
                .cloned()
                .collect(),
            inputs: Vec::new(),
            partitions: self.partitions.clone(),
            counts: self.counts,
            quarantine: self.quarantine.clone(),
            audited: self.audited.clone(),
        };
        let keep_wal_after = next.seq.saturating_sub(KEEP_WAL_INPUTS);
        let inputs = self
            .inputs
            .iter()
            .cloned()
            .chain(commits.iter().flat_map(|c| {
                c.inputs.iter().map(|i| InputRef {
                    checksum: i.checksum.clone(),
                    bytes: i.bytes,
                    seq: c.seq,
                    format: i.format.clone(),
                })
            }));
        next.inputs = inputs
            .filter(|i| i.format != "wal" || i.seq > keep_wal_after)
            .collect();
        for c in commits {
            for p in &c.partitions {
                next.partitions.insert(p.clone(), c.seq);
            }
            next.counts.add(&c.counts);
            next.quarantine.extend(c.quarantine.iter().cloned());
            if c.audit.is_some() {
                next.audited.push(c.clone());
            }
        }
        next
    }
}

/// File name of the checkpoint at `seq`.
fn name(seq: u64) -> String {
    format!("{seq:08}.checkpoint.json")
}

/// The newest checkpoint in the log directory, if any.
pub(crate) fn newest(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".checkpoint.json"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|b| seq > b.0) {
            best = Some((seq, entry.path()));
        }
    }
    Ok(best)
}

/// Reads a checkpoint file.
pub(crate) fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = fs::read(path).at(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptLake {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes the checkpoint (atomically), then moves the commit files it covers, and older
/// checkpoints, out of the log directory. A crash between the two leaves files that the
/// next checkpoint moves; readers skip commit files a checkpoint covers.
pub(crate) fn write(dir: &Path, cp: &Checkpoint) -> Result<()> {
    let path = dir.join(name(cp.seq));
    let tmp = dir.join(format!(".tmp-{}", name(cp.seq)));
    let text = serde_json::to_vec(cp).map_err(|e| Error::Render(e.to_string()))?;
    let mut f = fs::File::create(&tmp).at(&tmp)?;
    f.write_all(&text).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    drop(f);
    fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)?;
    let history = dir.join(HISTORY_DIR);
    fs::create_dir_all(&history).at(&history)?;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".json")
            .and_then(|s| s.parse::<u64>().ok())
            && seq <= cp.seq
        {
            let to = history.join(log_name(seq));
            fs::rename(entry.path(), &to).at(&to)?;
        } else if let Some(seq) = name
            .strip_suffix(".checkpoint.json")
            .and_then(|s| s.parse::<u64>().ok())
            && seq < cp.seq
        {
            fs::remove_file(entry.path()).at(&entry.path())?;
        }
    }
    sync_dir(&history)?;
    sync_dir(dir)
}

/// Every commit ever made, from the history directory and the log, in order.
pub(crate) fn history(dir: &Path) -> Result<Vec<Commit>> {
    let mut all = Vec::new();
    let history = dir.join(HISTORY_DIR);
    if history.is_dir() {
        all.extend(super::log::read_from(&history, 1)?);
    }
    let next = all.last().map_or(1, |c: &Commit| c.seq + 1);
    all.extend(super::log::read_from(dir, next)?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::log::{CommitKind, InputRecord};

    /// A history of commits touching partitions, adding and removing files and keys.
    fn history(n: u64) -> Vec<Commit> {
        (1..=n)
            .map(|seq| {
                let date = format!("2026-03-{:02}", 1 + seq % 5);
                let file = |s: u64| format!("events/date={date}/part-{s:08}-0000.parquet");
                Commit {
                    added: vec![DataFile {
                        path: file(seq),
                        date: date.clone(),
                        rows: seq,
                        bytes: seq * 10,
                        value_sum: seq as f64,
                        exact: None,
                    }],
                    // Every 4th commit removes the file of three commits before.
                    removed: if seq % 4 == 0 {
                        vec![file(seq - 3)]
                    } else {
                        vec![]
                    },
                    keys: vec![format!("_index/date={date}/{seq:08}.keys")],
                    partitions: vec![date.clone()],
                    inputs: vec![InputRecord {
                        path: format!("f{seq}"),
                        checksum: format!("c{seq}"),
                        bytes: seq,
                        format: if seq % 2 == 0 {
                            "wal".into()
                        } else {
                            "ndjson".into()
                        },
                        counts: Counts {
                            read: seq,
                            accepted: seq,
                            rejected: 0,
                            duplicates: 0,
                        },
                    }],
                    counts: Counts {
                        read: seq,
                        accepted: seq,
                        rejected: 0,
                        duplicates: 0,
                    },
                    ..Commit::new(seq, CommitKind::Ingest)
                }
            })
            .collect()
    }

    #[test]
    fn folding_in_steps_equals_folding_at_once_and_keeps_what_readers_ask() {
        let all = history(40);
        let whole = Checkpoint::default().fold(&all);
        for cut in [1, 7, 13, 39] {
            let stepped = Checkpoint::default().fold(&all[..cut]).fold(&all[cut..]);
            assert_eq!(stepped, whole, "cut at {cut}");
        }
        // Live files: every added file but those removed.
        let removed: HashSet<String> = all.iter().flat_map(|c| c.removed.clone()).collect();
        let live: Vec<&str> = all
            .iter()
            .flat_map(|c| &c.added)
            .filter(|f| !removed.contains(&f.path))
            .map(|f| f.path.as_str())
            .collect();
        let got: Vec<&str> = whole.data_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(got, live);
        assert_eq!(whole.counts.read, (1..=40).sum::<u64>());
        // Each partition's last changing commit.
        for (p, last) in &whole.partitions {
            let want = all
                .iter()
                .filter(|c| c.partitions.contains(p))
                .map(|c| c.seq)
                .max();
            assert_eq!(Some(*last), want, "{p}");
        }
        assert_eq!(whole.inputs.len(), 40, "all recent enough to keep");
    }
}
