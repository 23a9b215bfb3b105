//! The write-ahead log and the way into the lake for tracked events.
//!
//! `/track` validates a batch, drops duplicates (the lake's dedup index within the lookback,
//! plus every key tracked since), appends the rest to the current log segment
//! (`LAKE/_wal/NNNNNNNN.wal`, one JSON line per event with its dedup key) and fsyncs it
//! before answering 202. Its keys count as seen only once the bytes are durable; a failed
//! append is cut back to the last whole record (or the segment abandoned), so its retry is
//! not a duplicate. A flush (by size or time) closes the segment into a queue; each closed
//! segment is committed on its own, oldest first, with its checksum as the commit's input,
//! so a commit that fails before, at or after its commit point is retried under the same
//! checksum or recognised. Leftover segments are read back at the next start (torn lines,
//! never acknowledged, skipped), deduplicated and queued: an acknowledged event is stored
//! exactly once. The dedup index spills beyond its memory and is rebuilt to the days
//! around today when it holds older ones ([`rebuild_keys`], [`Ingress::swap_keys`]).
//!
//! Each segment records the lake's last commit the server knew when it opened it
//! (`NNNNNNNN.seen`): a `forget` made after that, which could not reach this log (from
//! another machine on an `s3://` lake, while the server was killed or cut off), still
//! applies to the segment's events at its commit ([`commit_segment`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::event::UsageEvent;
use crate::lake::keys::{KeySet, write_key_file};
use crate::lake::segment_seen_path as seen_path;
use crate::lake::{Commit, CommitKind, Counts, DataFile, EventBuf, InputRecord, Lake, write_buf};
use crate::time::day_of;
use crate::time::day_to_string;

/// The log's directory under the lake.
pub const WAL_DIR: &str = crate::lake::SERVER_LOG_DIR;

/// One logged event: the event and its dedup key (kept, so a CloudEvents key of
/// (source, id) survives the trip through the log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logged {
    /// The dedup key (32 hex digits on disk).
    #[serde(with = "hex_key")]
    pub key: u128,
    /// The event.
    #[serde(flatten)]
    pub event: UsageEvent,
}

impl Logged {
    /// From a validated event and its key.
    pub fn new(event: UsageEvent, key: u128) -> Logged {
        Logged { key, event }
    }

    fn key(&self) -> u128 {
        self.key
    }
}

/// A dedup key as 32 hex digits.
mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{k:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = <&str>::deserialize(d)?;
        u128::from_str_radix(text, 16).map_err(serde::de::Error::custom)
    }
}

/// A closed segment waiting for its commit: its file and the events acknowledged in it.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The segment file (its checksum identifies the commit).
    pub path: PathBuf,
    /// Its acknowledged events, deduplicated.
    pub events: Arc<[Logged]>,
    /// The lake's last commit the server knew when the segment was opened: a `forget`
    /// committed after it was not seen by the server while it logged these events (see
    /// [`commit_segment`]).
    pub seen: u64,
}

/// The open log and the dedup state, behind one lock.
///
/// Invariants, whatever fails: a key enters `keys` only once its event's bytes are durable
/// in a segment; the open segment's file holds whole records up to `len` and nothing after
/// (a failed append is cut back, or the segment is abandoned for a new one); each closed
/// segment is committed on its own, under its own checksum, oldest first.
pub struct Ingress {
    dir: PathBuf,
    lake: PathBuf,
    seq: u64,
    file: fs::File,
    /// Bytes of the open segment that hold whole, durable records.
    len: u64,
    /// The open segment's tail could not be cut back after a failed append: the next
    /// append starts a new segment, so no record is ever written after torn bytes.
    torn: bool,
    /// Events in the open segment.
    pub pending: Vec<Logged>,
    /// Closed segments not yet committed, oldest first.
    closed: VecDeque<Closed>,
    keys: KeySet,
    loaded: HashSet<i32>,
    lookback: i32,
    /// Memory for the in-memory part of `keys`; beyond it they spill under `_wal/_dedup`.
    memory: usize,
    /// Days of the events appended since the dedup index was last checked for days it no
    /// longer needs ([`Ingress::days_to_keep`]).
    active_days: HashSet<i32>,
    /// Rebuilds of `keys` so far (each spills into its own directory).
    rebuilds: u64,
    /// The lake's last commit when the log was opened ([`Ingress::opened_at`]).
    opened_at: u64,
    /// The lake's last commit known when the open segment was opened (its [`Closed::seen`]).
    seen: u64,
    /// The lake's last commit learnt ([`Ingress::learn`]): the next segment's `seen`.
    known: u64,
    /// Held for the server's lifetime: another server, or `forget`, cannot touch the log.
    _lock: fs::File,
}

/// Where the dedup index spills, under the log directory.
const DEDUP_DIR: &str = "_dedup";

/// The lock file of the log directory.
pub const WAL_LOCK: &str = "_lock";

fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.wal"))
}

/// Writes a segment's `seen` file (made durable by the caller's folder sync).
fn write_seen(segment: &Path, seen: u64) -> Result<()> {
    use std::io::Write;
    let path = seen_path(segment);
    let mut f = fs::File::create(&path).at(&path)?;
    f.write_all(format!("{seen}\n").as_bytes())
        .and_then(|()| f.sync_data())
        .at(&path)
}

/// A leftover segment's `seen`; 0 when its file is missing or unreadable (a segment of an
/// older version, or a crash between the two creates): every `forget` then applies.
fn read_seen(segment: &Path) -> u64 {
    let path = seen_path(segment);
    match fs::read_to_string(&path).map(|t| t.trim().parse::<u64>()) {
        Ok(Ok(n)) => n,
        other => {
            if !matches!(&other, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                tracing::warn!(path = %path.display(), "unreadable; every forget is applied to the segment's events");
            }
            0
        }
    }
}

/// Segments on disk, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
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

/// A segment as read back: its whole records, and how many lines were torn.
pub struct SegmentRead {
    /// The records, in order.
    pub records: Vec<Logged>,
    /// Lines that are not a whole record: bytes of a write that failed or was cut short by
    /// a crash, never acknowledged.
    pub torn: usize,
}

/// Reads a segment. A line that is not a whole record is the tail of an append that
/// failed or was cut short by a crash (never acknowledged, since the answer waits for the
/// fsync), wherever it sits: it is skipped with a warning, and the records around it kept.
pub fn read_segment(path: &Path) -> Result<SegmentRead> {
    let bytes = fs::read(path).at(path)?;
    let mut out = SegmentRead {
        records: Vec::new(),
        torn: 0,
    };
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Sealed when a key is configured; a sealed line that does not open is torn.
        let opened = crate::lake::crypto::open_line(path, line)?;
        let parsed = match &opened {
            Some(l) => serde_json::from_slice::<Logged>(l).map_err(|e| e.to_string()),
            None => Err("a sealed record that does not open".to_string()),
        };
        match parsed {
            Ok(l) => out.records.push(l),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, "skipping a torn record (never acknowledged): {e}");
                out.torn += 1;
            }
        }
    }
    Ok(out)
}

/// xxh3-128 of a file (hex), read in 1 MiB pieces, and its size.
fn file_checksum(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = fs::File::open(path).at(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("{:032x}", h.digest128()), size))
}

/// Commits a closed segment's events to the lake under the segment's checksum, or nothing
/// if the lake already holds that checksum (a commit that failed after its commit point,
/// or a file whose delete failed); returns the events committed.
///
/// Other writers (an `ingest`, another machine on an s3:// lake) may have committed some of
/// the segment's events after the server loaded those days' keys: the keys of every
/// commit after `others.since` that is not in `others.own` are checked under the lake's
/// lock, and the events they hold are counted as duplicates, not stored again.
///
/// A `forget` committed after the segment's [`Closed::seen`] could not reach the events
/// the server held meanwhile (a server on another machine, killed or cut off from the
/// bucket): its subject's events from before the forget are dropped here, as `forget`
/// would have dropped them from the log, and left out of the commit's accounting. Returns
/// the events stored and the commit made (none: nothing to commit).
pub fn commit_segment(
    lake_dir: &Path,
    closed: &Closed,
    others: &Others,
    lookback: i32,
) -> Result<(usize, Option<u64>)> {
    let (path, events) = (closed.path.as_path(), &closed.events[..]);
    let (checksum, size) = file_checksum(path)?;
    let mut lake = Lake::open_for_write(lake_dir)?;
    if events.is_empty() || lake.ingested_inputs().contains_key(checksum.as_str()) {
        return Ok((0, None));
    }
    let seq = lake.next_seq();
    let days: std::collections::BTreeSet<i32> = events.iter().map(|l| day_of(l.event.ts)).collect();
    let theirs = others.keys(&lake, &days, lookback)?;
    let forgotten = lake.forgotten_after(closed.seen)?;
    // Columns per day, borrowed from the logged events (no copy of each event).
    let mut by_day: BTreeMap<i32, EventBuf> = BTreeMap::new();
    let (mut duplicates, mut erased) = (0u64, 0u64);
    for l in events {
        let e = &l.event;
        if forgotten
            .iter()
            .any(|(s, at)| e.ts < *at && s.covers(&e.tenant_id, e.user_id.as_deref()))
        {
            erased += 1;
            continue;
        }
        let day = day_of(l.event.ts);
        if let Some(k) = &theirs
            && k.seen(l.key, day, lookback)?
        {
            duplicates += 1;
            continue;
        }
        by_day.entry(day).or_default().push_event(&l.event, l.key);
    }
    let stage = lake.stage_dir(seq)?;
    // The days' files are written (and fsynced) in parallel: a segment of late or
    // back-filled events touches many days, and concurrent fsyncs fold into few journal
    // commits where one after another each waits for its own.
    use rayon::prelude::*;
    let written: Vec<(DataFile, String, String)> = by_day
        .into_par_iter()
        .map(|(day, buf)| -> Result<(DataFile, String, String)> {
            let mut ks = buf.key.clone();
            let date = day_to_string(day);
            let rel = Lake::data_file_path(&date, seq, 0);
            let w = write_buf(&stage.join(&rel), &buf)?;
            drop(buf);
            let krel = Lake::key_file_path(&date, seq);
            write_key_file(&stage.join(&krel), &mut ks)?;
            let file = DataFile {
                path: rel,
                date: date.clone(),
                rows: w.rows,
                bytes: w.bytes,
                value_sum: w.value_sum,
                exact: Some(crate::lake::ExactSum::of(&w)),
            };
            Ok((file, krel, date))
        })
        .collect::<Result<_>>()?;
    let (mut added, mut keys, mut partitions) = (Vec::new(), Vec::new(), Vec::new());
    for (file, krel, date) in written {
        added.push(file);
        keys.push(krel);
        partitions.push(date);
    }
    if erased > 0 {
        tracing::warn!(
            segment = %path.display(),
            events = erased,
            "dropped logged events of a tenant or user forgotten after they were logged"
        );
    }
    let n = events.len() as u64 - erased;
    let counts = Counts {
        read: n,
        accepted: n - duplicates,
        rejected: 0,
        duplicates,
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
            bytes: size,
            format: "wal".into(),
            counts,
        }],
        added,
        keys,
        counts,
        partitions,
        ..Commit::new(seq, CommitKind::Ingest)
    })?;
    Ok(((n - duplicates) as usize, Some(seq)))
}

/// The commits the server's dedup index may not know: those after `since` it did not
/// make itself (`own`).
#[derive(Debug, Clone, Default)]
pub struct Others {
    /// Every commit up to this one is in the index (for the days it holds).
    pub since: u64,
    /// The server's own commits after `since`.
    pub own: std::collections::BTreeSet<u64>,
}

impl Others {
    /// The key files of the others' commits, with their days.
    fn key_files(&self, lake: &Lake) -> Result<Vec<(PathBuf, i32)>> {
        let recent = lake.recent_commits();
        let base = lake.last_seq() - recent.len() as u64;
        let history;
        let commits: &[Commit] = if self.since >= base {
            recent
        } else {
            history = lake.history()?;
            &history
        };
        // Only live files: a later commit (a compaction) may have merged and removed one,
        // and then holds its keys in a file of its own, which is listed instead.
        let live: HashSet<PathBuf> = lake.key_files().into_values().flatten().collect();
        Ok(commits
            .iter()
            .filter(|c| c.seq > self.since && !self.own.contains(&c.seq))
            .flat_map(|c| c.keys.iter())
            .filter_map(|rel| {
                crate::lake::keys::day_of_key_file(rel).map(|d| (lake.root().join(rel), d))
            })
            .filter(|(p, _)| live.contains(p))
            .collect())
    }

    /// The others' keys of the days within `lookback` of `days`; none if there are none.
    fn keys(
        &self,
        lake: &Lake,
        days: &std::collections::BTreeSet<i32>,
        lookback: i32,
    ) -> Result<Option<KeySet>> {
        let near = |d: i32| days.range(d - lookback..=d + lookback).next().is_some();
        let files: Vec<(PathBuf, i32)> = self
            .key_files(lake)?
            .into_iter()
            .filter(|(_, d)| near(*d))
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        let mut k = KeySet::default();
        k.load_files(&files)?;
        Ok(Some(k))
    }
}

impl Ingress {
    /// Opens the log of a lake. Every segment left by an earlier process is read back,
    /// deduplicated (a retried batch may sit in two segments if a failed append could not
    /// be cut back) and queued for commit, oldest first; a segment the lake already holds
    /// is recognised by its checksum when it is flushed. Then a new segment is started.
    /// The server's flush ([`crate::serve::App::flush`]) commits the leftovers.
    pub fn open(
        lake_dir: &Path,
        lookback_days: u32,
        dedup_memory: usize,
        pseudonym: Option<&crate::lake::privacy::Pseudonymiser>,
    ) -> Result<Ingress> {
        let dir = lake_dir.join(WAL_DIR);
        fs::create_dir_all(&dir).at(&dir)?;
        let lock_path = dir.join(WAL_LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(Error::io(
                &lock_path,
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another meterlake serve holds this lake's log; stop it first",
                ),
            ));
        }
        // With the log's lock held, and the lake's: opening for write checks the process's
        // encryption key against the lake's; raw and pseudonymised user ids never mix in one
        // lake (events waiting in the log count as held). Both before any event is taken.
        let lake = Lake::open_for_write(lake_dir)?;
        crate::lake::privacy::check_writer(lake_dir, lake.holds_records(), pseudonym)?;
        let opened_at = lake.last_seq();
        drop(lake);
        let spill = dir.join(DEDUP_DIR);
        if spill.exists() {
            fs::remove_dir_all(&spill).at(&spill)?;
        }
        let mut ing = Ingress {
            file: lock.try_clone().at(&lock_path)?,
            dir: dir.clone(),
            lake: lake_dir.to_path_buf(),
            seq: 0,
            len: 0,
            torn: false,
            pending: Vec::new(),
            closed: VecDeque::new(),
            keys: KeySet::spilling(spill.join("0"), dedup_memory),
            loaded: HashSet::new(),
            lookback: lookback_days.min(20_000) as i32,
            memory: dedup_memory,
            active_days: HashSet::new(),
            rebuilds: 0,
            opened_at,
            seen: opened_at,
            known: opened_at,
            _lock: lock,
        };
        for (seq, path) in segments(&dir)? {
            let read = read_segment(&path)?;
            let (n, torn) = (read.records.len(), read.torn);
            let mut events = Vec::with_capacity(n);
            for l in read.records {
                let day = day_of(l.event.ts);
                ing.load_days(day)?;
                if ing.keys.insert_if_new(l.key(), day, ing.lookback)? {
                    events.push(l);
                }
            }
            tracing::info!(
                segment = seq,
                records = n,
                fresh = events.len(),
                torn,
                "recovered a log segment"
            );
            let seen = read_seen(&path);
            ing.closed.push_back(Closed {
                path,
                events: events.into(),
                seen,
            });
            ing.seq = seq;
        }
        // A `seen` file whose segment went (a delete that failed after its commit).
        for e in fs::read_dir(&dir).at(&dir)? {
            let p = e.at(&dir)?.path();
            if p.extension().is_some_and(|x| x == "seen") && !p.with_extension("wal").exists() {
                let _ = fs::remove_file(&p);
            }
        }
        ing.seq += 1;
        let path = segment(&dir, ing.seq);
        ing.file = open_segment(&path)?;
        write_seen(&path, ing.seen)?;
        crate::lake::log::sync_dir(&dir)?;
        Ok(ing)
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

    /// Appends the new events (dropping duplicates) and fsyncs; returns how many were
    /// new (they are the last of [`Ingress::pending`]).
    ///
    /// Their keys are recorded only once the bytes are durable: if the write or the fsync
    /// fails, nothing of the batch counts as seen (a retry is not a duplicate), and the
    /// segment is cut back to its last whole record, or, if even that fails, abandoned
    /// for a new segment before the next append.
    pub fn append(&mut self, batch: Vec<(UsageEvent, u128)>) -> Result<usize> {
        let mut fresh = Vec::with_capacity(batch.len());
        let mut in_batch: HashMap<u128, Vec<i32>> = HashMap::new();
        for (e, key) in batch {
            let day = day_of(e.ts);
            self.load_days(day)?;
            self.active_days.insert(day);
            let twin = in_batch
                .get(&key)
                .is_some_and(|ds| ds.iter().any(|d| (d - day).abs() <= self.lookback));
            if !twin && !self.keys.seen(key, day, self.lookback)? {
                in_batch.entry(key).or_default().push(day);
                fresh.push(Logged::new(e, key));
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::with_capacity(fresh.len() * 200);
        for l in &fresh {
            let line = serde_json::to_vec(l).map_err(|e| Error::Render(e.to_string()))?;
            // Sealed (AES-GCM, one line each) when a key is configured: lake::crypto.
            buf.extend_from_slice(&crate::lake::crypto::seal_line(&line)?);
            buf.push(b'\n');
        }
        if self.torn {
            self.rotate()?;
        }
        let path = segment(&self.dir, self.seq);
        let written = crate::fault::write_all("wal.write", &mut self.file, &buf)
            .and_then(|()| crate::fault::check("wal.sync"))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.cut_back(&path);
            return Err(Error::io(&path, e));
        }
        self.len += buf.len() as u64;
        for l in &fresh {
            self.keys
                .insert_if_new(l.key(), day_of(l.event.ts), self.lookback)?;
        }
        let n = fresh.len();
        self.pending.extend(fresh);
        Ok(n)
    }

    /// After a failed append: cuts the open segment back to its whole records, or marks
    /// it torn so the next append starts a new one.
    fn cut_back(&mut self, path: &Path) {
        let cut = crate::fault::check("wal.cut")
            .and_then(|()| self.file.set_len(self.len))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = cut {
            tracing::error!(path = %path.display(), "cannot cut a failed append back ({e}); the segment is abandoned");
            self.torn = true;
        }
    }

    /// Closes the open segment (queued for commit with its events) and opens the next.
    /// An empty segment is kept open, unless its tail is torn.
    pub fn rotate(&mut self) -> Result<()> {
        if self.pending.is_empty() && !self.torn {
            return Ok(());
        }
        let next = segment(&self.dir, self.seq + 1);
        let file = open_segment(&next)?;
        write_seen(&next, self.known)?;
        crate::lake::log::sync_dir(&self.dir)?;
        let closed = segment(&self.dir, self.seq);
        self.file = file;
        self.seq += 1;
        self.len = 0;
        self.torn = false;
        let events: Arc<[Logged]> = std::mem::take(&mut self.pending).into();
        self.closed.push_back(Closed {
            path: closed,
            events,
            seen: std::mem::replace(&mut self.seen, self.known),
        });
        Ok(())
    }

    /// Adds the keys of the others' commits (see [`Others`]) of the days the index holds,
    /// so that events tracked from now on are checked against them; returns the last
    /// commit of the lake, which the index then knows (and the next segment's `seen`).
    pub fn learn(&mut self, others: &Others) -> Result<u64> {
        let lake = Lake::open(&self.lake)?;
        for (path, day) in others.key_files(&lake)? {
            if self.loaded.contains(&day) {
                self.keys.load(&path, day)?;
            }
        }
        self.known = self.known.max(lake.last_seq());
        Ok(lake.last_seq())
    }

    /// The lake's last commit when the log was opened: the index knows every commit up to
    /// it (recovered segments were checked against the lake's keys then).
    pub fn opened_at(&self) -> u64 {
        self.opened_at
    }

    /// The dedup window, days.
    pub fn lookback(&self) -> i32 {
        self.lookback
    }

    /// The oldest closed segment not yet committed.
    pub fn oldest_closed(&self) -> Option<Closed> {
        self.closed.front().cloned()
    }

    /// After the oldest closed segment is committed: its events are in the lake now, and
    /// its file goes (a file left by a failed delete is recognised by its checksum later).
    pub fn committed(&mut self, path: &Path) {
        if self.closed.front().is_some_and(|c| c.path == path) {
            self.closed.pop_front();
        }
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), "cannot delete a committed log segment: {e}");
        }
        let _ = fs::remove_file(seen_path(path));
    }

    /// The days the dedup index must hold now: within the lookback of today and of every
    /// day events were tracked for since the last call (which starts a new interval), if
    /// it holds any other day; `None` when it holds only needed days. A rebuild
    /// ([`rebuild_keys`], [`Ingress::swap_keys`]) then drops the others: the keys of a
    /// day change, or of a burst of long-past events, go again once traffic moves on,
    /// while traffic that keeps touching the last month keeps its month.
    pub fn days_to_keep(&mut self, today: i32) -> Option<Vec<i32>> {
        let mut active: Vec<i32> = self.active_days.drain().collect();
        active.push(today);
        let l = self.lookback;
        let needed = |d: i32| active.iter().any(|a| d >= a - l && d <= a + 1 + l);
        if self.loaded.iter().all(|d| needed(*d)) {
            return None;
        }
        let mut keep: Vec<i32> = active
            .iter()
            .flat_map(|a| a - l..=a + 1 + l)
            .collect::<HashSet<i32>>()
            .into_iter()
            .collect();
        keep.sort_unstable();
        Some(keep)
    }

    /// Phase two of a rebuild of the dedup index (phase one, [`rebuild_keys`], ran under
    /// the flush lock, so no commit happened since): adopts the rebuilt index, adding the
    /// keys of every event logged but not committed.
    pub fn swap_keys(&mut self, rebuilt: Rebuilt) -> Result<()> {
        let Rebuilt { mut keys, loaded } = rebuilt;
        for l in self.unflushed() {
            keys.insert_if_new(l.key(), day_of(l.event.ts), self.lookback)?;
        }
        self.keys = keys;
        self.loaded = loaded;
        self.rebuilds += 1;
        Ok(())
    }

    /// The dedup index's directory for the next rebuild, and its memory.
    pub fn rebuild_plan(&self) -> (PathBuf, usize) {
        (
            self.dir
                .join(DEDUP_DIR)
                .join((self.rebuilds + 1).to_string()),
            self.memory,
        )
    }

    /// Keys held by the dedup index (in memory and spilled).
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }

    /// Events acknowledged but not yet committed to the lake.
    pub fn unflushed(&self) -> impl Iterator<Item = &Logged> {
        self.closed
            .iter()
            .flat_map(|c| c.events.iter())
            .chain(&self.pending)
    }

    /// How many events are acknowledged but not yet committed.
    pub fn lag(&self) -> usize {
        self.closed.iter().map(|c| c.events.len()).sum::<usize>() + self.pending.len()
    }
}

/// A dedup index rebuilt for the days around today.
pub struct Rebuilt {
    keys: KeySet,
    loaded: HashSet<i32>,
}

/// Phase one of a rebuild of the dedup index, without the log's lock (the caller holds
/// the flush lock, so the lake's key files do not change): the lake's keys of `days`,
/// spilling under `dir` beyond `memory` bytes.
pub fn rebuild_keys(
    lake_dir: &Path,
    (dir, memory): (PathBuf, usize),
    days: Vec<i32>,
) -> Result<Rebuilt> {
    let lake = Lake::open(lake_dir)?;
    let files = lake.key_files();
    let mut keys = KeySet::spilling(dir, memory);
    let wanted: Vec<(PathBuf, i32)> = days
        .iter()
        .flat_map(|d| {
            files
                .get(d)
                .into_iter()
                .flatten()
                .map(move |p| (p.clone(), *d))
        })
        .collect();
    keys.load_files(&wanted)?;
    Ok(Rebuilt {
        keys,
        loaded: days.into_iter().collect(),
    })
}

fn open_segment(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, day: i32) -> (UsageEvent, u128) {
        let e = UsageEvent {
            id: id.into(),
            ts: i64::from(day) * crate::time::MICROS_PER_DAY + 3_600_000_000,
            tenant_id: "acme".into(),
            user_id: None,
            meter: "api_calls".into(),
            value: 1.0,
            properties: "{}".into(),
        };
        (e, xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
    }

    #[test]
    fn the_index_keeps_the_days_its_traffic_needs_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut ing = Ingress::open(&dir.path().join("lake"), 35, 1 << 20, None).unwrap();
        let today = 20_000;
        // Traffic over the last month: every day it touched stays needed.
        let month: Vec<_> = (0..30)
            .map(|i| event(&format!("m{i}"), today - i))
            .collect();
        assert_eq!(ing.append(month).unwrap(), 30);
        assert_eq!(ing.days_to_keep(today), None);
        // The next interval has only today's traffic: the older neighbourhoods go, and
        // what is kept is today's lookback window.
        assert_eq!(ing.append(vec![event("t", today)]).unwrap(), 1);
        let keep = ing.days_to_keep(today).expect("days to drop");
        assert_eq!(keep, (today - 35..=today + 36).collect::<Vec<_>>());
        // A long-past event: needed in its interval, dropped in the next.
        assert_eq!(ing.append(vec![event("old", 11_000)]).unwrap(), 1);
        let with_old = ing.days_to_keep(today).expect("the month's days go");
        assert!(
            with_old.contains(&11_000) && with_old.contains(&today),
            "{with_old:?}"
        );
        assert!(!with_old.contains(&(today - 40)), "{with_old:?}");
    }

    fn user_event(id: &str, user: &str, day: i32) -> (UsageEvent, u128) {
        let (mut e, k) = event(id, day);
        e.user_id = Some(user.into());
        (e, k)
    }

    /// What `forget` on another machine commits: the audit record, with no log to scrub.
    fn forget_elsewhere(lake_dir: &Path, user: &str) -> u64 {
        let mut lake = Lake::open_for_write(lake_dir).unwrap();
        let seq = lake.next_seq();
        lake.commit(Commit {
            audit: Some(crate::lake::Audit {
                actor: "t".into(),
                action: "forget".into(),
                target: format!("tenant=acme user={user}"),
                rows: 0,
                detail: String::new(),
                subject: Some(crate::lake::Subject {
                    tenant: "acme".into(),
                    user: Some(user.into()),
                }),
            }),
            ..Commit::new(seq, CommitKind::Forget)
        })
        .unwrap();
        seq
    }

    fn stored_ids(lake_dir: &Path) -> Vec<String> {
        let lake = Lake::open(lake_dir).unwrap();
        let mut ids: Vec<String> = lake
            .data_files()
            .iter()
            .flat_map(|f| crate::lake::read_events(&lake_dir.join(&f.path)).unwrap())
            .map(|e| e.id)
            .collect();
        ids.sort();
        ids
    }

    /// A server killed with a user's events in its log, restarted after a `forget` of that
    /// user that could not reach the log (another machine), commits none of the user's
    /// events from before the forget; a user's event logged once the forget was known is
    /// committed, as an ingest would.
    #[test]
    fn a_forget_the_log_did_not_see_drops_the_users_logged_events() {
        let dir = tempfile::tempdir().unwrap();
        let lake_dir = dir.path().join("lake");
        let past = 20_000; // 2024-10-04: before any forget made now
        let later = 40_000; // 2079: after it
        let mut ing = Ingress::open(&lake_dir, 35, 1 << 20, None).unwrap();
        let batch = vec![
            user_event("g0", "gone", past),
            user_event("g1", "gone", past),
            user_event("s0", "stay", past),
            user_event("g-late", "gone", later),
        ];
        assert_eq!(ing.append(batch).unwrap(), 4);
        drop(ing); // a kill: the segment stays, uncommitted
        forget_elsewhere(&lake_dir, "gone");
        let mut ing = Ingress::open(&lake_dir, 35, 1 << 20, None).unwrap();
        let closed = ing.oldest_closed().expect("the leftover segment");
        assert_eq!((closed.events.len(), closed.seen), (4, 0));
        let (stored, seq) = commit_segment(&lake_dir, &closed, &Others::default(), 35).unwrap();
        assert_eq!((stored, seq), (2, Some(2)));
        ing.committed(&closed.path);
        assert!(!seen_path(&closed.path).exists());
        assert_eq!(stored_ids(&lake_dir), ["g-late", "s0"]);
        let c = Lake::open(&lake_dir).unwrap().recent_commits()[1].counts;
        assert_eq!((c.read, c.accepted, c.duplicates), (2, 2, 0));

        // Logged once the forget is known (the segment opened after it): committed.
        assert_eq!(ing.append(vec![user_event("g2", "gone", past)]).unwrap(), 1);
        let others = Others {
            since: 2,
            ..Others::default()
        };
        assert_eq!(ing.learn(&others).unwrap(), 2);
        ing.rotate().unwrap();
        let first = ing.oldest_closed().unwrap();
        assert_eq!(first.seen, 1);
        assert_eq!(commit_segment(&lake_dir, &first, &others, 35).unwrap().0, 1);
        ing.committed(&first.path);
        // A forget that lands while the server runs but before it learns of it (cut off
        // from the bucket): the open segment predates it and loses the user's events; the
        // next segment is opened knowing it.
        assert_eq!(ing.append(vec![user_event("g3", "gone", past)]).unwrap(), 1);
        forget_elsewhere(&lake_dir, "gone");
        let others = Others {
            since: 3,
            ..Others::default()
        };
        assert_eq!(ing.learn(&others).unwrap(), 4);
        ing.rotate().unwrap();
        let next = segment(&ing.dir, ing.seq);
        assert_eq!(fs::read_to_string(seen_path(&next)).unwrap(), "4\n");
        let second = ing.oldest_closed().unwrap();
        assert_eq!(second.seen, 2);
        assert_eq!(
            commit_segment(&lake_dir, &second, &others, 35).unwrap(),
            (0, Some(5))
        );
        assert_eq!(stored_ids(&lake_dir), ["g-late", "g2", "s0"]);
    }
}
