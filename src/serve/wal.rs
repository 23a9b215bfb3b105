//! The write-ahead log and the way into the lake for tracked events.
//!
//! `/track` validates a batch, drops duplicates (the lake's dedup index within the lookback,
//! plus every key tracked since), appends the rest to the current log segment
//! (`LAKE/_wal/NNNNNNNN.wal`, one JSON line per event with its dedup key) and fsyncs it
//! before answering 202. A flush (by size or time) closes the segment, writes its events
//! into the lake's date partitions with their key files, and commits them with the
//! segment's checksum as the commit's input: a flush interrupted at any point is redone on
//! the next start, and a segment already committed is recognised and skipped, so an
//! acknowledged event is stored exactly once.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::event::UsageEvent;
use crate::lake::keys::{KeySet, write_key_file};
use crate::lake::{Commit, CommitKind, Counts, DataFile, InputRecord, Lake, write_events};
use crate::time::day_of;
use crate::time::day_to_string;

/// The log's directory under the lake.
pub const WAL_DIR: &str = "_wal";

/// One logged event: the event and its dedup key (kept, so a CloudEvents key of
/// (source, id) survives the trip through the log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logged {
    /// The dedup key (hex).
    pub key: String,
    /// The event.
    #[serde(flatten)]
    pub event: UsageEvent,
}

impl Logged {
    /// From a validated event and its key.
    pub fn new(event: UsageEvent, key: u128) -> Logged {
        Logged {
            key: format!("{key:032x}"),
            event,
        }
    }

    fn key(&self) -> u128 {
        u128::from_str_radix(&self.key, 16).unwrap_or_default()
    }
}

/// The open log and the dedup state, behind one lock.
pub struct Ingress {
    dir: PathBuf,
    lake: PathBuf,
    seq: u64,
    file: fs::File,
    /// Events in the open segment.
    pub pending: Vec<Logged>,
    /// Events of closed segments not yet committed to the lake.
    pub flushing: Vec<Logged>,
    keys: KeySet,
    loaded: HashSet<i32>,
    lookback: i32,
}

fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.wal"))
}

/// Segments on disk, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        let seq = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(s) = seq {
            out.push((s, p));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a segment; a torn last line (a crash mid-append, never acknowledged) is dropped.
fn read_segment(path: &Path) -> Result<Vec<Logged>> {
    let text = fs::read_to_string(path).at(path)?;
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Logged>(line) {
            Ok(l) => out.push(l),
            Err(_) if i + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), "dropping a torn last line (never acknowledged)");
            }
            Err(e) => {
                return Err(Error::CorruptLake {
                    path: path.to_path_buf(),
                    reason: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(out)
}

/// Commits a closed segment's events to the lake (skipped if its checksum is already
/// there); returns the events committed.
pub fn commit_segment(lake_dir: &Path, path: &Path, events: &[Logged]) -> Result<usize> {
    let bytes = fs::read(path).at(path)?;
    let checksum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
    let mut lake = Lake::open_for_write(lake_dir)?;
    if events.is_empty() || lake.ingested_inputs().contains_key(checksum.as_str()) {
        return Ok(0);
    }
    let seq = lake.next_seq();
    let stage = lake.stage_dir(seq)?;
    let mut by_day: BTreeMap<i32, (Vec<UsageEvent>, Vec<u128>)> = BTreeMap::new();
    for l in events {
        let e = by_day.entry(day_of(l.event.ts)).or_default();
        e.0.push(l.event.clone());
        e.1.push(l.key());
    }
    let (mut added, mut keys, mut partitions) = (Vec::new(), Vec::new(), Vec::new());
    for (day, (evs, mut ks)) in by_day {
        let date = day_to_string(day);
        let rel = Lake::data_file_path(&date, seq, 0);
        let w = write_events(&stage.join(&rel), &evs)?;
        added.push(DataFile {
            path: rel,
            date: date.clone(),
            rows: w.rows,
            bytes: w.bytes,
            value_sum: w.value_sum,
        });
        let krel = Lake::key_file_path(&date, seq);
        write_key_file(&stage.join(&krel), &mut ks)?;
        keys.push(krel);
        partitions.push(date);
    }
    let n = events.len() as u64;
    let counts = Counts {
        read: n,
        accepted: n,
        rejected: 0,
        duplicates: 0,
    };
    lake.commit(Commit {
        inputs: vec![InputRecord {
            path: format!(
                "{WAL_DIR}/{}",
                path.file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default()
            ),
            checksum,
            bytes: bytes.len() as u64,
            format: "wal".into(),
            counts,
        }],
        added,
        keys,
        counts,
        partitions,
        ..Commit::new(seq, CommitKind::Ingest)
    })?;
    Ok(events.len())
}

impl Ingress {
    /// Opens the log of a lake: commits every segment left by an earlier process (so the
    /// lake holds everything acknowledged), then starts a new segment.
    pub fn open(lake_dir: &Path, lookback_days: u32) -> Result<Ingress> {
        let dir = lake_dir.join(WAL_DIR);
        fs::create_dir_all(&dir).at(&dir)?;
        drop(Lake::open_for_write(lake_dir)?);
        let mut last = 0;
        for (seq, path) in segments(&dir)? {
            let events = read_segment(&path)?;
            let n = commit_segment(lake_dir, &path, &events)?;
            tracing::info!(segment = seq, events = n, "recovered a log segment");
            fs::remove_file(&path).at(&path)?;
            last = seq;
        }
        crate::lake::log::sync_dir(&dir)?;
        let seq = last + 1;
        let path = segment(&dir, seq);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        Ok(Ingress {
            dir,
            lake: lake_dir.to_path_buf(),
            seq,
            file,
            pending: Vec::new(),
            flushing: Vec::new(),
            keys: KeySet::default(),
            loaded: HashSet::new(),
            lookback: lookback_days as i32,
        })
    }

    /// Loads the lake's key files of the days within the lookback of `day`, once each.
    fn load_days(&mut self, day: i32) -> Result<()> {
        let need: Vec<i32> = (day - self.lookback..=day + self.lookback)
            .filter(|d| !self.loaded.contains(d))
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let lake = Lake::open(&self.lake)?;
        let files = lake.key_files();
        for d in need {
            if let Some(fs) = files.get(&d) {
                for f in fs {
                    self.keys.load(f, d)?;
                }
            }
            self.loaded.insert(d);
        }
        Ok(())
    }

    /// Appends the new events (dropping duplicates) and fsyncs; returns those appended.
    pub fn append(&mut self, batch: Vec<(UsageEvent, u128)>) -> Result<Vec<Logged>> {
        let mut fresh = Vec::with_capacity(batch.len());
        for (e, key) in batch {
            let day = day_of(e.ts);
            self.load_days(day)?;
            if self.keys.insert_if_new(key, day, self.lookback)? {
                fresh.push(Logged::new(e, key));
            }
        }
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let mut buf = Vec::with_capacity(fresh.len() * 200);
        for l in &fresh {
            serde_json::to_writer(&mut buf, l).map_err(|e| Error::Render(e.to_string()))?;
            buf.push(b'\n');
        }
        let path = segment(&self.dir, self.seq);
        self.file.write_all(&buf).at(&path)?;
        self.file.sync_data().at(&path)?;
        self.pending.extend(fresh.iter().cloned());
        Ok(fresh)
    }

    /// Closes the open segment (its events move to `flushing`) and opens the next; returns
    /// the closed segment's path, if it held anything.
    pub fn rotate(&mut self) -> Result<Option<PathBuf>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let closed = segment(&self.dir, self.seq);
        self.seq += 1;
        let path = segment(&self.dir, self.seq);
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        crate::lake::log::sync_dir(&self.dir)?;
        self.flushing.append(&mut self.pending);
        Ok(Some(closed))
    }

    /// After a closed segment is committed: its events are in the lake now.
    pub fn committed(&mut self, path: &Path) -> Result<()> {
        self.flushing.clear();
        fs::remove_file(path).at(path)
    }
}
