//! The lake on disk: Hive-partitioned Parquet, an append-only commit log, crash recovery.
//!
//! ```text
//! LAKE/
//!   events/date=YYYY-MM-DD/part-SSSSSSSS-NNNN.parquet   events, sorted by (tenant_id, meter, ts)
//!   quarantine/SSSSSSSS.ndjson                          rejected records, verbatim, with reasons
//!   _index/date=YYYY-MM-DD/SSSSSSSS.keys                dedup keys of the events a commit added
//!   _log/SSSSSSSS.json                                  one file per commit (the commit point)
//!   _log/SSSSSSSS.checkpoint.json                       the state up to a commit (every 200)
//!   _log/_history/SSSSSSSS.json                         commit files a checkpoint covers
//!   _staging/SSSSSSSS/...                               files of a commit being written
//!   _staging/SSSSSSSS/_dedup/run-NNNNNN.keys            an ingest's spilled dedup keys (never published)
//!   _lock                                               writers hold an exclusive lock on it
//!   _privacy.json                                       a pseudonymised lake's key id (see [`privacy`])
//! ```
//!
//! # Commit protocol
//! 1. A writer takes the lock, recovers (below), and picks `seq` = last commit + 1.
//! 2. It writes every new file under `_staging/SSSSSSSS/` (same relative paths), fsyncs each.
//! 3. It writes `_log/SSSSSSSS.json` through a temp file, fsync and rename, then fsyncs the
//!    directory. **This rename is the commit point.**
//! 4. It publishes: renames each staged file to its place (atomic per file), deletes the
//!    files the commit removes, fsyncs the directories and deletes the staging directory.
//!
//! Recovery, run by every writer before it starts and by readers when no writer runs:
//! a staging directory without a log file is an aborted commit and is deleted; a log file
//! whose files are still staged is finished (step 4 again, idempotent). A `kill -9` at any
//! instant therefore leaves either no trace of the commit or all of it, and a reader never
//! sees a half-written file: files appear by rename only.
//!
//! meterlake's own readers list files from the log ([`Lake::data_files`]); a glob reader
//! (DuckDB's `read_parquet('LAKE/events/**/*.parquet')`) sees the same set whenever no
//! commit is being published.

pub mod access;
pub mod audit;
mod checkpoint;
mod columns;
mod compact;
pub mod crypto;
pub(crate) mod keys;
pub(crate) mod log;
mod parquet_io;
pub mod privacy;
pub mod remote;
pub mod shard;
mod stats;

pub use columns::{EventBuf, Part, Row};
pub use compact::{CompactSummary, Compaction, compact, compact_with};
pub use keys::KeySet;
pub(crate) use keys::write_key_file_unsynced;
pub(crate) use log::sync_dir;
pub use log::{
    Audit, Commit, CommitKind, Counts, DataFile, EXACT, ExactSum, InputRecord, Subject,
    files_sum_exactly,
};
pub(crate) use parquet_io::write_parts_unsynced;
pub use parquet_io::{read_events, write_buf, write_events, write_parts};
pub use shard::Shard;
pub use stats::{
    LakeStats, MeterStats, events_between, files_between, scan_events, scan_files,
    scan_files_columns, scan_paths, stats, tenant_has_events,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Directory of the events table, relative to the lake root.
pub const EVENTS_DIR: &str = "events";
/// Directory of quarantined records.
pub const QUARANTINE_DIR: &str = "quarantine";
const INDEX_DIR: &str = "_index";
/// Takes the exclusive lock `_lock` in `dir` (both created if needed), blocking until it
/// is free ([`lock_exclusive`]); held until the returned file drops. For the small stores
/// beside the commit log that several processes append to (the access log, issued
/// invoices).
pub fn lock_dir(dir: &Path) -> Result<fs::File> {
    fs::create_dir_all(dir).at(dir)?;
    lock_exclusive(&dir.join(LOCK_FILE))
}

/// `n` random bytes from the operating system, as lowercase hex (keys, session and server
/// ids, staging tokens).
pub fn random_hex(n: usize) -> Result<String> {
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).map_err(|e| Error::Render(format!("random: {e}")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a small file (a marker beside the commit log, a sealed report) whole or not at
/// all: a synced temporary file renamed over it, the folder synced.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    // Unique per process, so two first writers never share a temporary file.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The lock every writer of files beside the events (rollups, derived tables, stored
/// reports) holds shared while it writes one, and `lake rekey` holds exclusively.
pub const DERIVED_LOCK: &str = "_derived.lock";

/// The lake a path lies in: its nearest ancestor folder holding a commit log.
pub fn lake_root_of(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| a.join(LOG_DIR).is_dir())
        .map(Path::to_path_buf)
}

/// Held while a file is written inside a lake beside its events: a shared lock on
/// [`DERIVED_LOCK`], which `lake rekey` holds exclusively, so no such file is written while
/// a rekey runs; once taken, the writer's key is checked against the lake's
/// ([`crypto::check_writer`]), so a writer that waited out a rekey with the old key is
/// refused. `None` for a path outside any lake.
pub fn derived_write(path: &Path) -> Result<Option<fs::File>> {
    let Some(root) = lake_root_of(path) else {
        return Ok(None);
    };
    let f = lock_shared(&root.join(DERIVED_LOCK))?;
    crypto::check_writer(&root)?;
    Ok(Some(f))
}

/// The server's write-ahead log folder (segments `*.wal`), under the lake root.
pub const SERVER_LOG_DIR: &str = "_wal";

/// Beside each server log segment (`NNNNNNNN.wal`), `NNNNNNNN.seen` holds the lake's last
/// commit the server knew when it opened the segment, so that a server restarted after a
/// kill knows which `forget`s its leftover events predate (`serve::wal`).
pub fn segment_seen_path(segment: &Path) -> PathBuf {
    segment.with_extension("seen")
}

/// The commit log folder, under the lake root.
pub const LOG_DIR: &str = "_log";
const STAGING_DIR: &str = "_staging";
const LOCK_FILE: &str = "_lock";

/// Refuses a lake location that is a URL (`s3://bucket/prefix`, `gs://...`, `file://...`)
/// where a local directory is opened: a URL taken as a path would silently become a
/// folder named after its scheme (`s3:`). An `s3://` lake is worked on through its local
/// mirror ([`remote::Mirror`]), which the command line sets up. `name` is the setting the
/// location came from.
pub fn check_location(root: &Path, name: &'static str) -> Result<()> {
    if let Some(url) = remote::parse_location(root, name)? {
        return Err(Error::InvalidParameter {
            name,
            reason: format!(
                "`{url}`: an s3:// lake is opened through the command line's mirror, not as a local directory"
            ),
        });
    }
    Ok(())
}

/// An open lake: its root and its committed state (the newest checkpoint and the commits
/// after it).
#[derive(Debug)]
pub struct Lake {
    root: PathBuf,
    base: checkpoint::Checkpoint,
    /// Commits after `base`, in order.
    commits: Vec<Commit>,
    /// Held by writers for the lake's lifetime (released on drop, or by the OS on kill).
    _lock: Option<fs::File>,
}

impl Lake {
    /// Opens (creating if needed) a lake for writing: takes the writer lock, waiting for
    /// another writer to finish, and recovers from any interrupted commit.
    pub fn open_for_write(root: &Path) -> Result<Lake> {
        let lake = Lake::open_for_write_any_key(root)?;
        crypto::check_writer(root)?;
        Ok(lake)
    }

    /// Checks, before a stage writes derived files into the lake, that it writes them with
    /// the lake's encryption key ([`crypto::check_writer`]).
    pub fn check_writer(&self) -> Result<()> {
        crypto::check_writer(&self.root)
    }

    /// [`Lake::open_for_write`] without checking the process's encryption key against the
    /// lake's (`lake rekey`, which changes it).
    pub fn open_for_write_any_key(root: &Path) -> Result<Lake> {
        check_location(root, "lake")?;
        for d in [LOG_DIR, STAGING_DIR, EVENTS_DIR] {
            fs::create_dir_all(root.join(d)).at(&root.join(d))?;
        }
        let lock = lock_exclusive(&root.join(LOCK_FILE))?;
        let (base, commits) = log::read_all(&root.join(LOG_DIR))?;
        let lake = Lake {
            root: root.to_path_buf(),
            base,
            commits,
            _lock: Some(lock),
        };
        lake.recover()?;
        Ok(lake)
    }

    /// Opens an existing lake for reading. If no writer holds the lock, interrupted commits
    /// are recovered first; otherwise the reader sees the last committed state.
    pub fn open(root: &Path) -> Result<Lake> {
        check_location(root, "lake")?;
        let log_dir = root.join(LOG_DIR);
        if !log_dir.is_dir() {
            return Err(Error::CorruptLake {
                path: root.to_path_buf(),
                reason: "is not a meterlake lake (no _log directory); create one with `meterlake ingest`".into(),
            });
        }
        let lock_path = root.join(LOCK_FILE);
        if let Ok(lock) = fs::OpenOptions::new().write(true).open(&lock_path)
            && lock.try_lock().is_ok()
        {
            let (base, commits) = log::read_all(&log_dir)?;
            let lake = Lake {
                root: root.to_path_buf(),
                base,
                commits,
                _lock: Some(lock),
            };
            lake.recover()?;
            return Ok(Lake {
                _lock: None,
                ..lake
            });
        }
        let (base, commits) = log::read_all(&log_dir)?;
        Ok(Lake {
            root: root.to_path_buf(),
            base,
            commits,
            _lock: None,
        })
    }

    /// The lake's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The commits after the newest checkpoint, oldest first. The whole history is
    /// [`Lake::history`]; what the older commits left is asked of the lake itself
    /// ([`Lake::data_files`], [`Lake::ingested_counts`], [`Lake::audited_commits`], ...).
    pub fn recent_commits(&self) -> &[Commit] {
        &self.commits
    }

    /// Whose data `forget` erased after commit `seq`, and when (UTC µs): the structured
    /// subject of each forget commit, or, for commits written before it was recorded, its
    /// `tenant=T[ user=U]` target. Events from before that instant stay erased; a later
    /// event of a reused id is not the forgotten person's. Reads the history only when
    /// `seq` lies before the newest checkpoint.
    pub fn forgotten_after(&self, seq: u64) -> Result<Vec<(Subject, i64)>> {
        let base = self.last_seq() - self.commits.len() as u64;
        let history;
        let commits: &[Commit] = if seq >= base {
            &self.commits
        } else {
            history = self.history()?;
            &history
        };
        Ok(commits
            .iter()
            .filter(|c| c.seq > seq)
            .filter_map(|c| {
                let a = c.audit.as_ref()?;
                if a.action != "forget" {
                    return None;
                }
                let at = crate::time::parse_ts(&c.committed_at).unwrap_or(i64::MAX);
                let subject = a.subject.clone().or_else(|| {
                    let t = a.target.strip_prefix("tenant=")?;
                    let (tenant, user) = match t.split_once(" user=") {
                        Some((t, u)) => (t, Some(u.into())),
                        None => (t, None),
                    };
                    Some(Subject {
                        tenant: tenant.into(),
                        user,
                    })
                })?;
                Some((subject, at))
            })
            .collect())
    }

    /// Every commit ever made, oldest first, read from the log and its history (slow on
    /// a lake with a long history: for reports that list commits).
    pub fn history(&self) -> Result<Vec<Commit>> {
        let dir = self.root.join(LOG_DIR);
        let mut tries = 0;
        loop {
            match checkpoint::history(&dir) {
                Err(Error::CorruptLake { .. } | Error::Io { .. }) if tries < 5 => tries += 1,
                other => return other,
            }
        }
    }

    /// The last commit's sequence number (0: none).
    pub fn last_seq(&self) -> u64 {
        self.base.seq + self.commits.len() as u64
    }

    /// Sequence number the next commit gets.
    pub fn next_seq(&self) -> u64 {
        self.last_seq() + 1
    }

    /// Paths removed by the commits after the checkpoint.
    fn removed_recently(&self) -> HashSet<&str> {
        self.commits
            .iter()
            .flat_map(|c| c.removed.iter().map(String::as_str))
            .collect()
    }

    /// Makes sure these data files are on local disk, for a reader of whole files: a
    /// mirror of an `s3://` lake that reads event files in place fetches those it lacks
    /// ([`remote::fetch_in_place`]); any other lake has them all.
    pub fn fetch(&self, files: &[DataFile]) -> Result<()> {
        let rels: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        remote::fetch_in_place(&self.root, &rels)
    }

    /// The live data files: added by a commit and not removed by a later one, in commit order.
    pub fn data_files(&self) -> Vec<DataFile> {
        let removed = self.removed_recently();
        self.base
            .data_files
            .iter()
            .chain(self.commits.iter().flat_map(|c| c.added.iter()))
            .filter(|f| !removed.contains(f.path.as_str()))
            .cloned()
            .collect()
    }

    /// Checksums of every input already ingested, with the commit that consumed it.
    pub fn ingested_inputs(&self) -> HashMap<&str, u64> {
        self.base
            .inputs
            .iter()
            .map(|i| (i.checksum.as_str(), i.seq))
            .chain(
                self.commits
                    .iter()
                    .flat_map(|c| c.inputs.iter().map(move |i| (i.checksum.as_str(), c.seq))),
            )
            .collect()
    }

    /// Sizes in bytes of the inputs already ingested: an input of another size cannot be
    /// one of them, so its checksum need not be known before it is read.
    pub fn ingested_sizes(&self) -> HashSet<u64> {
        self.base
            .inputs
            .iter()
            .map(|i| i.bytes)
            .chain(
                self.commits
                    .iter()
                    .flat_map(|c| c.inputs.iter().map(|i| i.bytes)),
            )
            .collect()
    }

    /// Counts of every commit, summed: what every ingest read, accepted, rejected and
    /// dropped.
    pub fn ingested_counts(&self) -> Counts {
        let mut out = self.base.counts;
        for c in &self.commits {
            out.add(&c.counts);
        }
        out
    }

    /// Every commit carrying an audit record (retention, forget), oldest first.
    pub fn audited_commits(&self) -> Vec<&Commit> {
        self.base
            .audited
            .iter()
            .chain(self.commits.iter().filter(|c| c.audit.is_some()))
            .collect()
    }

    /// Whether the lake holds any user's record yet: events, quarantined records, or
    /// events the server logged and has not committed (in `_wal`). What decides whether
    /// pseudonymisation may still be turned on.
    pub fn holds_records(&self) -> bool {
        !self.data_files().is_empty()
            || !self.quarantine_files().is_empty()
            || fs::read_dir(self.root.join(SERVER_LOG_DIR)).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.path().extension().is_some_and(|x| x == "wal")
                        && e.metadata().is_ok_and(|m| m.len() > 0)
                })
            })
    }

    /// Every quarantine file written, oldest first (relative paths).
    pub fn quarantine_files(&self) -> Vec<&str> {
        self.base
            .quarantine
            .iter()
            .map(String::as_str)
            .chain(self.commits.iter().filter_map(|c| c.quarantine.as_deref()))
            .collect()
    }

    /// Dedup key files per UTC day number.
    pub(crate) fn key_files(&self) -> BTreeMap<i32, Vec<PathBuf>> {
        let removed = self.removed_recently();
        let mut out: BTreeMap<i32, Vec<PathBuf>> = BTreeMap::new();
        let keys = self
            .base
            .key_files
            .iter()
            .chain(self.commits.iter().flat_map(|c| c.keys.iter()));
        for k in keys.filter(|k| !removed.contains(k.as_str())) {
            if let Some(day) = keys::day_of_key_file(k) {
                out.entry(day).or_default().push(self.root.join(k));
            }
        }
        out
    }

    /// Partitions touched by commits after `seq`: what a stage that last ran at `seq` must
    /// recompute.
    pub fn partitions_since(&self, seq: u64) -> Vec<String> {
        let mut set: Vec<String> = self
            .base
            .partitions
            .iter()
            .filter(|(_, last)| **last > seq)
            .map(|(p, _)| p.clone())
            .chain(
                self.commits
                    .iter()
                    .filter(|c| c.seq > seq)
                    .flat_map(|c| c.partitions.iter().cloned()),
            )
            .collect();
        set.sort();
        set.dedup();
        set
    }

    /// Staging directory of commit `seq` (created).
    pub(crate) fn stage_dir(&self, seq: u64) -> Result<PathBuf> {
        let d = self.root.join(STAGING_DIR).join(format!("{seq:08}"));
        if d.exists() {
            fs::remove_dir_all(&d).at(&d)?;
        }
        fs::create_dir_all(&d).at(&d)?;
        Ok(d)
    }

    /// Relative path of a new data file of commit `seq`.
    pub(crate) fn data_file_path(date: &str, seq: u64, n: u32) -> String {
        format!("{EVENTS_DIR}/date={date}/part-{seq:08}-{n:04}.parquet")
    }

    /// Relative path of the dedup key file of commit `seq` for a day.
    pub(crate) fn key_file_path(date: &str, seq: u64) -> String {
        format!("{INDEX_DIR}/date={date}/{seq:08}.keys")
    }

    /// Relative path of the quarantine file of commit `seq`.
    pub(crate) fn quarantine_path(seq: u64) -> String {
        format!("{QUARANTINE_DIR}/{seq:08}.ndjson")
    }

    /// Commits: writes the log file (the commit point), then publishes the staged files.
    /// The caller must hold the write lock and have staged every file of `commit`.
    pub(crate) fn commit(&mut self, commit: Commit) -> Result<()> {
        assert!(self._lock.is_some(), "commit on a read-only lake");
        assert_eq!(commit.seq, self.next_seq(), "commits are gap-free");
        let staged = self
            .root
            .join(STAGING_DIR)
            .join(format!("{:08}", commit.seq));
        crate::fault::check("lake.stage").at(&staged)?;
        for rel in commit.published_files() {
            let p = staged.join(rel);
            if !p.is_file() {
                return Err(Error::CorruptLake {
                    path: p,
                    reason: "staged file missing before commit".into(),
                });
            }
        }
        crash_point("staged");
        crate::fault::check("lake.log").at(&self.root.join(LOG_DIR))?;
        log::write(&self.root.join(LOG_DIR), &commit)?;
        crash_point("logged");
        self.commits.push(commit);
        crate::fault::check("lake.publish").at(&staged)?;
        self.publish(self.commits.last().expect("just pushed"))?;
        self.maybe_checkpoint()
    }

    /// Every [`checkpoint::every`] commits: folds the commits since the last checkpoint
    /// into a new one and moves their files out of the log directory. A failure here
    /// loses nothing (the commit is published; the log still holds every commit file).
    fn maybe_checkpoint(&mut self) -> Result<()> {
        let every = checkpoint::every();
        if every == 0 || !self.last_seq().is_multiple_of(every) {
            return Ok(());
        }
        let next = self.base.fold(&self.commits);
        if let Err(e) = checkpoint::write(&self.root.join(LOG_DIR), &next) {
            tracing::warn!("checkpoint at commit {} not written: {e}", next.seq);
            return Ok(());
        }
        self.base = next;
        self.commits.clear();
        Ok(())
    }

    /// Step 4 of the protocol; idempotent, so recovery calls it again after a crash.
    fn publish(&self, commit: &Commit) -> Result<()> {
        let staged = self
            .root
            .join(STAGING_DIR)
            .join(format!("{:08}", commit.seq));
        let mut dirs: Vec<PathBuf> = Vec::new();
        let half = commit.published_files().count() / 2;
        for (i, rel) in commit.published_files().enumerate() {
            if i == half {
                crash_point("published_half");
            }
            let target = self.root.join(rel);
            let parent = target
                .parent()
                .expect("relative paths have a parent")
                .to_path_buf();
            let source = staged.join(rel);
            if source.is_file() {
                fs::create_dir_all(&parent).at(&parent)?;
                fs::rename(&source, &target).at(&target)?;
            } else if !target.is_file() && !self.removed_later(commit.seq, rel) {
                return Err(Error::CorruptLake {
                    path: target,
                    reason: format!(
                        "file of commit {} is neither staged nor published",
                        commit.seq
                    ),
                });
            }
            if !dirs.contains(&parent) {
                dirs.push(parent);
            }
        }
        // A mirror of an s3:// lake keeps removed files aside until its push: an earlier
        // commit of the same push that added one still sends it ([`remote`]).
        let keep = self.root.join(remote::KEEP_REMOVED).exists();
        for rel in &commit.removed {
            let p = self.root.join(rel);
            let gone = if keep {
                let aside = self.root.join(remote::REMOVED_DIR).join(rel);
                if let Some(d) = aside.parent() {
                    fs::create_dir_all(d).at(d)?;
                }
                fs::rename(&p, &aside)
            } else {
                fs::remove_file(&p)
            };
            match gone {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(p, e)),
            }
            if let Some(parent) = p.parent()
                && !dirs.iter().any(|d| d == parent)
            {
                dirs.push(parent.to_path_buf());
            }
        }
        log::sync_dirs(&dirs)?;
        if staged.exists() {
            fs::remove_dir_all(&staged).at(&staged)?;
        }
        Ok(())
    }

    fn removed_later(&self, seq: u64, rel: &str) -> bool {
        self.commits
            .iter()
            .any(|c| c.seq > seq && c.removed.iter().any(|r| r == rel))
    }

    /// Finishes committed-but-unpublished commits and deletes aborted staging directories.
    fn recover(&self) -> Result<()> {
        let staging = self.root.join(STAGING_DIR);
        let mut leftovers = Vec::new();
        if staging.is_dir() {
            for e in fs::read_dir(&staging).at(&staging)? {
                leftovers.push(e.at(&staging)?.path());
            }
        }
        leftovers.sort();
        for dir in leftovers {
            let seq = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            // A staging directory of a commit the checkpoint covers was published
            // before the checkpoint was written: only its removal was cut short.
            let recent = seq
                .filter(|&s| s > self.base.seq)
                .and_then(|s| self.commits.get((s - self.base.seq) as usize - 1));
            match recent {
                Some(commit) => {
                    tracing::info!(
                        seq = commit.seq,
                        "finishing the publication of an interrupted commit"
                    );
                    self.publish(commit)?;
                }
                None => {
                    tracing::info!(dir = %dir.display(), "removing the staging files of an aborted commit");
                    if dir.is_dir() {
                        fs::remove_dir_all(&dir).at(&dir)?;
                    } else {
                        fs::remove_file(&dir).at(&dir)?;
                    }
                }
            }
        }
        // A crash between the log rename and the end of publish leaves removed files behind
        // only if their commit's staging dir is already gone: sweep them too.
        for c in self.commits.iter().filter(|c| !c.removed.is_empty()) {
            for rel in &c.removed {
                let p = self.root.join(rel);
                if p.is_file() {
                    fs::remove_file(&p).at(&p)?;
                }
            }
        }
        Ok(())
    }
}

/// Opens (creating) `path` and takes an exclusive lock on it, waiting for its holder; the
/// lock is released when the file is dropped, or by the OS when the process dies.
pub(crate) fn lock_exclusive(path: &Path) -> Result<fs::File> {
    let lock = open_lock_file(path)?;
    lock.lock().at(path)?;
    Ok(lock)
}

/// Takes a shared lock on the file at `path` (created if needed), blocking while someone
/// holds it exclusively; held until the returned file drops.
pub(crate) fn lock_shared(path: &Path) -> Result<fs::File> {
    let lock = open_lock_file(path)?;
    lock.lock_shared().at(path)?;
    Ok(lock)
}

/// Takes an exclusive lock on the file at `path` (created if needed) if no one holds it,
/// shared or exclusive; None, without waiting, if someone does.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<fs::File>> {
    let lock = open_lock_file(path)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e).at(path),
    }
}

fn open_lock_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)
}

/// Test hook: `MLK_CRASH_AT=staged|logged|published_half` aborts the process at that step of
/// the commit protocol, so the tests can check recovery from each one deterministically.
fn crash_point(name: &str) {
    if std::env::var_os("MLK_CRASH_AT").is_some_and(|v| v == name) {
        eprintln!("MLK_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}
