//! The commit log: one JSON file per commit under `LAKE/_log/`, written atomically.
//!
//! A commit is the unit of visibility. Its log file lists every file it adds or removes,
//! the inputs (by checksum) it consumed and what it counted. The log file's rename is the
//! commit point: before it the commit does not exist, after it recovery finishes it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use crate::error::{Error, IoContext, Result};

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitKind {
    /// New events from input files.
    Ingest,
    /// Small files of a partition merged into one (same rows).
    Compact,
    /// Expired partitions dropped (or archived) by `retention`.
    Retention,
    /// A tenant's or a user's events removed by `forget`.
    Forget,
    /// Archived events brought back by `restore`.
    Restore,
}

/// Who did what to the lake's data, recorded in the commit that did it (so the record and
/// the change land together, or neither does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// Who asked (`--actor`, else `$USER`).
    pub actor: String,
    /// `retention` or `forget`.
    pub action: String,
    /// What it applied to (`tenant=acme`, `tenant=acme user=u-1`, `events before 2026-07-01`).
    pub target: String,
    /// Event rows removed.
    pub rows: u64,
    /// What else was done (files rewritten, derived rows removed, archive location).
    pub detail: String,
    /// Whose data `forget` erased, as the lake names them (a pseudonym on a pseudonymised
    /// lake), so that `restore` keeps them erased. Absent on other actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
}

/// The tenant, or one user of it, whose data an action applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The tenant.
    pub tenant: String,
    /// One user of it (none: the whole tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Subject {
    /// Whether an event of this tenant and user falls under the subject.
    pub fn covers(&self, tenant: &str, user: Option<&str>) -> bool {
        self.tenant == tenant && self.user.as_deref().is_none_or(|u| Some(u) == user)
    }
}

/// Accounting of one ingest: `read = accepted + rejected + duplicates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read from the inputs.
    pub read: u64,
    /// Records written to the lake.
    pub accepted: u64,
    /// Records quarantined, each with its reason.
    pub rejected: u64,
    /// Records dropped because an event with the same key was already there.
    pub duplicates: u64,
}

impl Counts {
    /// What was counted after `earlier` (a snapshot of the same running counts).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            read: self.read - earlier.read,
            accepted: self.accepted - earlier.accepted,
            rejected: self.rejected - earlier.rejected,
            duplicates: self.duplicates - earlier.duplicates,
        }
    }

    /// Adds another ingest's counts.
    pub fn add(&mut self, o: &Counts) {
        self.read += o.read;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
    }
}

/// An input file consumed by an ingest commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// The path as given on the command line.
    pub path: String,
    /// xxh3-128 of the file's bytes, hex: a second ingest of the same bytes is skipped.
    pub checksum: String,
    /// File size in bytes.
    pub bytes: u64,
    /// The format it was read as.
    pub format: String,
    /// Its share of the commit's counts.
    pub counts: Counts,
}

/// A data file of the lake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the lake root (`events/date=2026-10-01/part-00000003-0000.parquet`).
    pub path: String,
    /// Its partition (`YYYY-MM-DD`, UTC).
    pub date: String,
    /// Rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Sum of `value` over the file's rows: a cheap check that compaction kept every row.
    /// Finite values can still overflow it (two events of 1e308): see [`any_f64`].
    #[serde(with = "any_f64")]
    pub value_sum: f64,
    /// Sum of `|value|` and whether every value is a whole number (absent in files written
    /// before they were recorded): a rollup that sums these files' values knows from them
    /// alone whether any order of addition gives the same bits (see `rollup::aggregate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactSum>,
}

/// What [`DataFile::exact`] records of a file's values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    /// Sum of `|value|` (infinite when it overflows: see [`any_f64`]).
    #[serde(with = "any_f64")]
    pub abs_sum: f64,
    /// Whether every value is a whole number.
    pub integral: bool,
}

impl ExactSum {
    /// Of a file just written.
    pub fn of(w: &super::parquet_io::WrittenFile) -> ExactSum {
        ExactSum {
            abs_sum: w.value_abs_sum,
            integral: w.values_integral,
        }
    }
}

/// A float of the log that need not be finite. JSON has no infinity or NaN, and serde_json
/// writes them as `null`, which it then refuses to read as a number: a sum that overflowed
/// made every later command fail on the log. They are written as the strings `"inf"`,
/// `"-inf"` and `"NaN"` instead; `null`, from logs written before, reads as NaN (unknown),
/// which every reader of these sums treats as "not exact" and "not comparable".
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Option::<Any>::deserialize(d)? {
            Some(Any::Number(v)) => v,
            None => f64::NAN,
            Some(Any::Text(t)) => match t.as_str() {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "expected a number, \"inf\", \"-inf\" or \"NaN\", found {t:?}"
                    )));
                }
            },
        })
    }
}

/// The largest absolute sum of whole numbers that adds exactly in f64, whatever the order.
pub const EXACT: f64 = 9_007_199_254_740_992.0;

/// Whether the values of `files` are whole numbers summing, in absolute value, to at most
/// [`EXACT`] (so every partial sum of every group is exact); `None` when a file has no
/// record of it.
pub fn files_sum_exactly(files: &[DataFile]) -> Option<bool> {
    let mut total = 0.0;
    for f in files {
        let e = f.exact?;
        if !e.integral {
            return Some(false);
        }
        total += e.abs_sum;
    }
    Some(total <= EXACT)
}

/// One commit of the lake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Commit sequence number, from 1, gap-free.
    pub seq: u64,
    /// Ingest or compaction.
    pub kind: CommitKind,
    /// Wall-clock time of the commit (RFC 3339, UTC): the audit trail of what arrived when.
    pub committed_at: String,
    /// Inputs consumed (ingest only).
    #[serde(default)]
    pub inputs: Vec<InputRecord>,
    /// Data files added.
    #[serde(default)]
    pub added: Vec<DataFile>,
    /// Data files removed (relative paths).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Dedup key files added (relative paths, `_index/date=D/NNNNNNNN.keys`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Quarantine file written (relative path), if any record was rejected.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Accounting of the whole commit (ingest only).
    #[serde(default)]
    pub counts: Counts,
    /// Partitions (`YYYY-MM-DD`) whose rows changed: later stages recompute only these.
    #[serde(default)]
    pub partitions: Vec<String>,
    /// The audit record of a retention, forget or restore commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

impl Commit {
    /// A commit `seq` of `kind` made now (`committed_at` is the wall clock), changing nothing
    /// yet: fill in the files, keys, accounting and audit record it carries.
    pub fn new(seq: u64, kind: CommitKind) -> Commit {
        Commit {
            seq,
            kind,
            committed_at: crate::time::now_rfc3339(),
            inputs: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
            keys: Vec::new(),
            quarantine: None,
            counts: Counts::default(),
            partitions: Vec::new(),
            audit: None,
        }
    }

    /// Every file the commit brings into the lake (data, keys, quarantine), relative paths.
    pub fn published_files(&self) -> impl Iterator<Item = &str> {
        self.added
            .iter()
            .map(|f| f.path.as_str())
            .chain(self.keys.iter().map(String::as_str))
            .chain(self.quarantine.as_deref())
    }
}

/// File name of commit `seq` in the log directory.
pub(crate) fn log_name(seq: u64) -> String {
    format!("{seq:08}.json")
}

/// Reads the lake's state: the newest checkpoint (none: the empty state) and every commit
/// after it, in order, checking that sequence numbers have no gaps. A commit file that
/// vanishes while it is read was moved by a checkpoint written meanwhile: the log is read
/// again.
pub(crate) fn read_all(dir: &Path) -> Result<(Checkpoint, Vec<Commit>)> {
    let mut tries = 0;
    loop {
        let attempt = (|| {
            let base = match super::checkpoint::newest(dir)? {
                Some((_, path)) => super::checkpoint::read(&path)?,
                None => Checkpoint::default(),
            };
            let tail = read_from(dir, base.seq + 1)?;
            Ok((base, tail))
        })();
        match attempt {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && tries < 5 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Reads the commit files of `dir` from `first` on, in order, checking that sequence
/// numbers have no gaps.
pub(crate) fn read_from(dir: &Path, first: u64) -> Result<Vec<Commit>> {
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if let Ok(seq) = stem.parse::<u64>()
            && seq >= first
        {
            names.push((seq, entry.path()));
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for (i, (seq, path)) in names.into_iter().enumerate() {
        let want = first + i as u64;
        if seq != want {
            return Err(Error::CorruptLake {
                path,
                reason: format!("commit {want} is missing"),
            });
        }
        let c = read_commit(&path)?;
        if c.seq != seq {
            return Err(Error::CorruptLake {
                path,
                reason: format!("holds seq {}", c.seq),
            });
        }
        out.push(c);
    }
    Ok(out)
}

/// Reads one commit file.
pub(crate) fn read_commit(path: &Path) -> Result<Commit> {
    let text = fs::read(path).at(path)?;
    serde_json::from_slice(&text).map_err(|e| Error::CorruptLake {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a commit atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write(dir: &Path, commit: &Commit) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{}", log_name(commit.seq)));
    let path = dir.join(log_name(commit.seq));
    let text = serde_json::to_vec_pretty(commit).expect("commits serialise");
    let mut f = fs::File::create(&tmp).at(&tmp)?;
    f.write_all(&text).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    drop(f);
    fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)
}

/// fsync of a directory, so a rename in it survives a power cut (or of a file).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// fsyncs of many directories (or files) at once, from a few threads. A sync mostly waits
/// for the disk, and the file system folds concurrent syncs into one journal commit, where
/// one after another each waits for its own (publishing a 30-day ingest syncs 60 dirs).
pub(crate) fn sync_dirs(dirs: &[PathBuf]) -> Result<()> {
    const THREADS: usize = 8;
    if dirs.len() <= 1 {
        return dirs.iter().try_for_each(|d| sync_dir(d));
    }
    std::thread::scope(|s| {
        let sync_some = |some: &[PathBuf]| some.iter().try_for_each(|d| sync_dir(d));
        let (mut workers, mut inline) = (Vec::new(), Ok(()));
        for some in dirs.chunks(dirs.len().div_ceil(THREADS)) {
            match std::thread::Builder::new().spawn_scoped(s, move || sync_some(some)) {
                Ok(w) => workers.push(w),
                // A thread that cannot be started leaves its share to this one.
                Err(_) => inline = inline.and(sync_some(some)),
            }
        }
        // Every worker is joined (scope would anyway); the first error is the result.
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .fold(inline, Result::and)
    })
}

/// Fsyncs files on a thread of its own, so the cores that wrote them go on computing while
/// the disk flushes. A writer that stages files through it waits for it ([`Syncer::finish`])
/// before it commits, so the commit point still comes after every file it names is durable.
pub(crate) struct Syncer {
    tx: Option<mpsc::Sender<PathBuf>>,
    worker: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Syncer {
    pub(crate) fn new() -> Result<Self> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let worker = std::thread::Builder::new()
            .name("meterlake-fsync".into())
            .spawn(move || {
                let mut result = Ok(());
                for path in rx {
                    if result.is_ok() {
                        result = sync_dir(&path);
                    }
                }
                result
            })
            .map_err(|e| Error::io("fsync thread", e))?;
        Ok(Syncer {
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    /// A handle that queues files to sync; each queued path is synced before
    /// [`Syncer::finish`] returns.
    pub(crate) fn queue(&self) -> mpsc::Sender<PathBuf> {
        self.tx.clone().expect("a syncer queues until it finishes")
    }

    /// Waits until every queued file is synced (and every handle from [`Syncer::queue`] is
    /// dropped); the first failed sync is the error.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.worker.take() {
            Some(w) => w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncer_syncs_what_is_queued_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("f{i}"))).collect();
        for f in &files {
            fs::write(f, b"x").unwrap();
        }
        let mut ok = Syncer::new().unwrap();
        let q = ok.queue();
        // Handles may outlive the queueing thread: finish waits for them to be dropped.
        std::thread::spawn(move || files.into_iter().for_each(|f| q.send(f).unwrap()));
        ok.finish().unwrap();

        let mut bad = Syncer::new().unwrap();
        bad.queue().send(dir.path().join("f0")).unwrap();
        bad.queue().send(dir.path().join("gone")).unwrap();
        bad.queue().send(dir.path().join("also-gone")).unwrap();
        let err = bad.finish().unwrap_err().to_string();
        assert!(err.contains("gone") && !err.contains("also-gone"), "{err}");

        let dirs: Vec<PathBuf> = (0..11).map(|i| dir.path().join(format!("d{i}"))).collect();
        dirs.iter().for_each(|d| fs::create_dir(d).unwrap());
        sync_dirs(&dirs).unwrap();
        fs::remove_dir(&dirs[7]).unwrap();
        let err = sync_dirs(&dirs).unwrap_err().to_string();
        assert!(err.contains("d7"), "{err}");
    }

    #[test]
    fn sums_that_are_not_finite_round_trip_and_old_nulls_read_as_unknown() {
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e308, -0.5, 0.0] {
            let f = DataFile {
                path: "events/date=2026-10-01/part-00000001-0000.parquet".into(),
                date: "2026-10-01".into(),
                rows: 2,
                bytes: 10,
                value_sum: v,
                exact: Some(ExactSum {
                    abs_sum: v.abs(),
                    integral: true,
                }),
            };
            let text = serde_json::to_string(&f).unwrap();
            assert!(!text.contains("null"), "{text}");
            let back: DataFile = serde_json::from_str(&text).unwrap();
            assert_eq!(back.value_sum.to_bits(), v.to_bits(), "{text}");
            assert_eq!(back.exact.unwrap().abs_sum.to_bits(), v.abs().to_bits());
        }
        // What serde_json wrote for an overflowed sum before: read, as unknown.
        let old = r#"{"path":"p","date":"2026-10-01","rows":2,"bytes":10,"value_sum":null,"exact":{"abs_sum":null,"integral":true}}"#;
        let f: DataFile = serde_json::from_str(old).unwrap();
        assert!(f.value_sum.is_nan() && f.exact.unwrap().abs_sum.is_nan());
        assert_eq!(files_sum_exactly(&[f]), Some(false));
        let bad = old.replace("null,\"exact", "\"lots\",\"exact");
        let err = serde_json::from_str::<DataFile>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"lots\""), "{err}");
    }
}
