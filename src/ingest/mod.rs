//! Ingest: input files → validated, deduplicated events committed to the lake.
//!
//! ```text
//! reader thread ──chunks (pooled buffers)──▶ dispatcher ──one rayon task per chunk──▶
//!   parse (scan → Draft → validate) into columnar pieces, one per UTC day (lake::EventBuf)
//!   ──in input order──▶ dedup (KeySet, lookback window) ──pieces──▶ per-day buffers
//!   ──days the input has passed, on the pool──▶ staged Parquet + key files ──▶ one commit
//!   rejects ──▶ staged quarantine NDJSON
//! ```
//!
//! A day is written once the input has moved past it by more than the largest lateness
//! seen, as a background task while later chunks are parsed; what is left (late events,
//! unordered input) is written when the memory budget is reached and at the end.
//!
//! Records are never held as owned structs: a chunk's accepted events are appended to the
//! string and scalar columns of its day's piece, the sequential stage only decides which
//! rows are duplicates, and a lake file is written from the day's pieces by one sort over
//! row references. The reader hashes a new input as it streams (see [`ingest`]).
//!
//! Every record read ends accepted, rejected (quarantined with file, line and reason) or a
//! duplicate, and `read = accepted + rejected + duplicates` holds for every ingest. An
//! unreadable input stops the ingest before its commit, so nothing is half-written. Inputs
//! whose checksum the lake has already committed are skipped, so re-running an ingest after
//! a crash finishes the job exactly once.
//!
//! Dedup key: the hash of (scope, id), where scope is the CloudEvents `source` or else the
//! tenant, so two tenants may reuse ids. A record without an id gets one derived from its
//! content (see [`record`]): re-ingesting the same data stays idempotent, but two distinct
//! events identical to the microsecond in every field count once.

mod convert;
pub(crate) mod record;
mod scan;
mod source;

pub use record::{
    Accepted, DEFAULT_MAX_FUTURE, DEFAULT_MIN_TS, Limits, MAX_ID_BYTES, MAX_RECORD_BYTES,
    Rejection, dedup_key,
};
pub use source::Format;

pub(crate) use record::fields::aliases as csv_aliases;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::event::day_to_string;
use crate::lake::log::Syncer;
use crate::lake::{Commit, CommitKind, Counts, DataFile, InputRecord, KeySet, Lake, Part};
use convert::{Bad, Parsed, Piece, convert};

/// Default dedup lookback: an event is a duplicate of one in the lake within this many days.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 35;
/// Default memory for buffered events before they are flushed to Parquet, in MiB.
pub const DEFAULT_MEMORY_BUDGET_MB: usize = 128;
/// Default memory for the in-memory part of the dedup index, in MiB (3.7 M keys); the
/// keys beyond it spill to disk at ~2 bytes each in memory.
pub const DEFAULT_DEDUP_MEMORY_MB: usize = 128;

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Input format, or `Auto` to detect per file.
    pub format: Format,
    /// Validation limits (timestamp range).
    pub limits: Limits,
    /// Dedup lookback in days.
    pub lookback_days: u32,
    /// Buffered-event budget in MiB; beyond it the largest partitions are flushed.
    pub memory_budget_mb: usize,
    /// Memory for the dedup keys held in memory, in MiB; beyond it they spill to sorted
    /// runs in the commit's staging directory, with a Bloom filter in memory.
    pub dedup_memory_mb: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: Format::Auto,
            limits: Limits::relative_to(chrono::Utc::now().timestamp_micros()),
            lookback_days: DEFAULT_LOOKBACK_DAYS,
            memory_budget_mb: DEFAULT_MEMORY_BUDGET_MB,
            dedup_memory_mb: DEFAULT_DEDUP_MEMORY_MB,
            progress: false,
        }
    }
}

/// An input skipped because the lake already holds it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skipped {
    /// The input path.
    pub path: String,
    /// The commit that ingested the same bytes.
    pub commit: u64,
}

/// Per-input accounting.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InputSummary {
    /// The input path.
    pub path: String,
    /// Format it was read as.
    pub format: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What an ingest did. `read = accepted + rejected + duplicates`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestSummary {
    /// Records read.
    pub read: u64,
    /// Events committed.
    pub accepted: u64,
    /// Records quarantined.
    pub rejected: u64,
    /// Records dropped as duplicates.
    pub duplicates: u64,
    /// Partitions (`YYYY-MM-DD`) that received events.
    pub partitions: Vec<String>,
    /// Quarantine file of this ingest, if any record was rejected.
    pub quarantine: Option<String>,
    /// The commit, if anything was committed.
    pub commit: Option<u64>,
    /// Per input.
    pub inputs: Vec<InputSummary>,
    /// Inputs already in the lake.
    pub skipped: Vec<Skipped>,
}

/// Expands directories into the input files they hold (sorted), keeps files as given.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = fs::read_dir(p)
                .at(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && source::is_input_file(f))
                .collect();
            found.sort();
            if found.is_empty() {
                tracing::warn!(dir = %p.display(), "no input files (.ndjson, .jsonl, .json, .csv, .parquet, optionally .gz) in this directory");
            }
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    Ok(out)
}

/// xxh3-128 of a file's bytes, hex, and its size.
pub fn checksum(path: &Path) -> Result<(String, u64)> {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    let n = hash_from(path, 0, &mut h)?;
    Ok((format!("{:032x}", h.digest128()), n))
}

/// Feeds the bytes of `path` from `offset` to its end into `h`; returns how many.
fn hash_from(path: &Path, offset: u64, h: &mut xxhash_rust::xxh3::Xxh3Default) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path).at(path)?;
    f.seek(SeekFrom::Start(offset)).at(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).at(path)?;
        if k == 0 {
            return Ok(n);
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Ingests `inputs` into the lake at `root` as one commit.
pub fn ingest(root: &Path, inputs: &[PathBuf], opts: &IngestOptions) -> Result<IngestSummary> {
    if opts.memory_budget_mb == 0 {
        return Err(Error::InvalidParameter {
            name: "memory budget",
            reason: "must be at least 1 MiB".into(),
        });
    }
    if opts.dedup_memory_mb == 0 {
        return Err(Error::InvalidParameter {
            name: "dedup memory",
            reason: "must be at least 1 MiB".into(),
        });
    }
    let inputs = expand_inputs(inputs)?;
    // Decide formats before touching the lake, so a missing or unreadable file fails the
    // command with nothing written.
    let mut plan = Vec::new();
    for p in &inputs {
        let decided = source::decide(p, opts.format)?;
        let bytes = fs::metadata(p).at(p)?.len();
        plan.push((p.clone(), decided, bytes));
    }
    let mut lake = Lake::open_for_write(root)?;
    let mut summary = IngestSummary::default();
    let done: std::collections::HashMap<String, u64> = lake
        .ingested_inputs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // An input can only repeat one already ingested (or another of this command) of the
    // same size: only those are hashed before reading, to be skipped when they repeat.
    // The others are hashed by the reader as they stream, which saves a pass over the file.
    let sizes = lake.ingested_sizes();
    let mut same_size: std::collections::HashMap<u64, usize> = Default::default();
    for (_, _, bytes) in &plan {
        *same_size.entry(*bytes).or_default() += 1;
    }
    let seq = lake.next_seq();
    let mut todo: Vec<(PathBuf, source::Decided, Option<String>, u64)> = Vec::new();
    for (p, d, bytes) in plan {
        let upfront =
            d.format == Format::Parquet || sizes.contains(&bytes) || same_size[&bytes] > 1;
        let sum = if upfront { Some(checksum(&p)?.0) } else { None };
        let seen_now = sum.is_some() && todo.iter().any(|t| t.2 == sum);
        match sum.as_ref().and_then(|s| done.get(s)) {
            Some(&commit) => summary.skipped.push(Skipped {
                path: p.display().to_string(),
                commit,
            }),
            None if seen_now => summary.skipped.push(Skipped {
                path: p.display().to_string(),
                commit: seq,
            }),
            None => todo.push((p, d, sum, bytes)),
        }
    }
    if todo.is_empty() {
        return Ok(summary);
    }
    let total_bytes: u64 = todo.iter().map(|t| t.3).sum();
    let bar = progress_bar(opts.progress, total_bytes);
    let mut txn = Txn::new(&lake, seq, opts)?;
    txn.input_bytes = total_bytes;
    let mut records = Vec::new();
    for (path, decided, sum, bytes) in todo {
        let before = txn.counts;
        let counter = Arc::new(AtomicU64::new(0));
        let hash = source::Hasher::default();
        let feed = sum.is_none().then(|| hash.clone());
        txn.read_input(&path, decided, counter.clone(), &bar, feed)?;
        let sum = match sum {
            Some(s) => s,
            None => finish_checksum(&path, hash, counter.load(Ordering::Relaxed))?,
        };
        let counts = txn.counts.since(&before);
        summary.inputs.push(InputSummary {
            path: path.display().to_string(),
            format: decided.format.name().to_string(),
            counts,
        });
        records.push(InputRecord {
            path: path.display().to_string(),
            checksum: sum,
            bytes,
            format: decided.format.name().to_string(),
            counts,
        });
    }
    bar.finish_and_clear();
    let commit = txn.finish(records)?;
    summary.read = commit.counts.read;
    summary.accepted = commit.counts.accepted;
    summary.rejected = commit.counts.rejected;
    summary.duplicates = commit.counts.duplicates;
    summary.partitions = commit.partitions.clone();
    summary.quarantine = commit
        .quarantine
        .as_ref()
        .map(|q| root.join(q).display().to_string());
    summary.commit = Some(commit.seq);
    lake.commit(commit)?;
    Ok(summary)
}

/// The checksum the reader computed over the first `read` bytes of `path`, completed
/// with whatever it did not read (a reader may stop early, e.g. on a blank input).
fn finish_checksum(path: &Path, hash: source::Hasher, read: u64) -> Result<String> {
    let mut h = match std::sync::Arc::try_unwrap(hash) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => shared
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone()),
    };
    hash_from(path, read, &mut h)?;
    Ok(format!("{:032x}", h.digest128()))
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ingest {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// Events of one UTC day waiting to be flushed: the day's pieces of the chunks read.
#[derive(Default)]
struct DayBuffer {
    pieces: Vec<Piece>,
    bytes: usize,
    files: u32,
}

/// One ingest transaction: dedup state, buffers, staged files.
struct Txn {
    seq: u64,
    stage: PathBuf,
    limits: Limits,
    cloudevents_only: bool,
    lookback: i32,
    budget: usize,
    keys: KeySet,
    key_files: BTreeMap<i32, Vec<PathBuf>>,
    loaded: Option<(i32, i32)>,
    days: BTreeMap<i32, DayBuffer>,
    buffered: usize,
    /// The latest day seen so far and the most any event arrived behind it, in days: a
    /// day this far behind the stream is written out (see [`Txn::flush_passed`]).
    high: Option<i32>,
    lateness: i32,
    writes: Writes,
    added: Vec<DataFile>,
    key_paths: Vec<String>,
    touched: BTreeSet<i32>,
    /// Bytes of all inputs, to size the dedup set from the first chunk's records per byte.
    input_bytes: u64,
    sized: bool,
    quarantine: Option<BufWriter<fs::File>>,
    counts: Counts,
    current_file: String,
}

impl Txn {
    fn new(lake: &Lake, seq: u64, opts: &IngestOptions) -> Result<Self> {
        let stage = lake.stage_dir(seq)?;
        let keys = KeySet::spilling(
            stage.join("_dedup"),
            opts.dedup_memory_mb.saturating_mul(1 << 20),
        );
        Ok(Txn {
            seq,
            stage,
            limits: opts.limits,
            cloudevents_only: opts.format == Format::Cloudevents,
            lookback: opts.lookback_days.min(20_000) as i32,
            budget: opts.memory_budget_mb.saturating_mul(1 << 20),
            keys,
            key_files: lake.key_files(),
            loaded: None,
            days: BTreeMap::new(),
            buffered: 0,
            high: None,
            lateness: 0,
            writes: Writes::new()?,
            added: vec![],
            key_paths: vec![],
            touched: BTreeSet::new(),
            input_bytes: 0,
            sized: false,
            quarantine: None,
            counts: Counts::default(),
            current_file: String::new(),
        })
    }

    /// Reads one input: a dispatcher thread hands each chunk from the reader to a parse
    /// task on the rayon pool as soon as it arrives; this thread takes the parsed chunks
    /// back in input order and consumes them. At most `4 × threads` chunks are between
    /// reader and consumer, which bounds memory, and no stage waits for a whole batch.
    fn read_input(
        &mut self,
        path: &Path,
        decided: source::Decided,
        counter: Arc<AtomicU64>,
        bar: &indicatif::ProgressBar,
        hash: Option<source::Hasher>,
    ) -> Result<()> {
        self.current_file = path.display().to_string();
        let (chunks, reader) =
            source::spawn_reader(path.to_path_buf(), decided, counter.clone(), hash);
        let in_flight = rayon::current_num_threads().max(1) * 4;
        let (limits, ce_only) = (
            self.limits,
            self.cloudevents_only || decided.format == Format::Cloudevents,
        );
        let (done_tx, done_rx) = mpsc::channel::<(u64, Result<Parsed>)>();
        // A slot is taken per chunk dispatched and given back when it has been consumed.
        let (slot_tx, slot_rx) = mpsc::sync_channel::<()>(in_flight);
        let dispatcher = std::thread::Builder::new()
            .name("meterlake-dispatch".into())
            .spawn(move || {
                for (seq, chunk) in (0u64..).zip(chunks.iter()) {
                    if slot_tx.send(()).is_err() {
                        return; // the consumer stopped
                    }
                    match chunk {
                        Ok(c) => {
                            let tx = done_tx.clone();
                            rayon::spawn(move || {
                                let _ = tx.send((seq, Ok(convert(c, &limits, ce_only))));
                            });
                        }
                        Err(e) => {
                            let _ = done_tx.send((seq, Err(e)));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::io(path, e))?;
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        let mut last = 0u64;
        let mut run = || -> Result<()> {
            // Ends when the dispatcher and every parse task have dropped their senders.
            for (seq, parsed) in done_rx.iter() {
                waiting.insert(seq, parsed);
                while let Some(parsed) = waiting.remove(&next) {
                    next += 1;
                    self.consume(parsed?)?;
                    let _ = slot_rx.try_recv();
                    let now = counter.load(Ordering::Relaxed);
                    bar.inc(now - last);
                    last = now;
                }
            }
            Ok(())
        };
        let result = run();
        // On an error, closing both channels stops the dispatcher, which stops the reader.
        drop(done_rx);
        drop(slot_rx);
        let _ = dispatcher.join();
        let _ = reader.join();
        result
    }

    /// Sequential stage: dedup in input order, hand each day's piece to its buffer,
    /// quarantine rejects. Events are not copied here: parsing already split them by day.
    fn consume(&mut self, mut parsed: Parsed) -> Result<()> {
        {
            if !self.sized && parsed.text_bytes > 0 {
                // Size the dedup set for the whole input from the first chunk: a growing set
                // holds its old and new tables at once while it rehashes, a peak of 1.5
                // times the final table. (A gzipped input is estimated low: it then grows.)
                self.sized = true;
                let per_byte = parsed.read() as f64 / parsed.text_bytes as f64;
                let estimate = (self.input_bytes as f64 * per_byte * 1.05) as usize;
                self.keys.reserve(estimate.min(1 << 30));
            }
            self.counts.read += parsed.read();
            self.counts.rejected += parsed.bad.len() as u64;
            for b in &parsed.bad {
                self.quarantine(b)?;
            }
            for &(p, r) in &parsed.order {
                let piece = &mut parsed.pieces[p as usize];
                self.ensure_loaded(piece.day)?;
                if self
                    .keys
                    .insert_if_new(piece.rows.key[r as usize], piece.day, self.lookback)?
                {
                    self.counts.accepted += 1;
                } else {
                    self.counts.duplicates += 1;
                    piece.dropped.push(r);
                }
            }
            self.watermark(&parsed.pieces);
            for mut piece in parsed.pieces {
                if piece.dropped.len() == piece.rows.len() {
                    continue;
                }
                piece.dropped.sort_unstable();
                let size = piece.rows.bytes();
                let buf = self.days.entry(piece.day).or_default();
                buf.bytes += size;
                self.buffered += size;
                self.touched.insert(piece.day);
                buf.pieces.push(piece);
            }
            self.flush_passed()?;
            if self.buffered > self.budget {
                self.flush(false)?;
            }
        }
        Ok(())
    }

    /// Moves the watermark: the latest day seen, and how far behind it any event arrived.
    /// A chunk spanning midnight counts as one day of lateness, so in-order input reads
    /// as lateness 1.
    fn watermark(&mut self, pieces: &[Piece]) {
        let Some(top) = pieces.iter().map(|p| p.day).max() else {
            return;
        };
        let high = self.high.map_or(top, |h| h.max(top));
        self.high = Some(high);
        for p in pieces {
            self.lateness = self.lateness.max(high - p.day);
        }
    }

    /// Writes out the days the input has moved past: those more than the largest
    /// lateness seen (plus a day) behind the latest day, not written before. Input in
    /// rough time order (nearly every export) then streams: a day's file is written while
    /// later days are parsed, and memory holds a few days instead of everything up to the
    /// budget (fewer fresh pages for the kernel to zero). A day written early that still
    /// gets late events gets a second file for them at the end; each such event raises the
    /// lateness, so later days wait longer. Unordered input never passes a day and is
    /// written by the memory budget and at the end, as before.
    fn flush_passed(&mut self) -> Result<()> {
        let Some(high) = self.high else {
            return Ok(());
        };
        let before = high.saturating_sub(self.lateness.saturating_add(1));
        let ready: Vec<i32> = self
            .days
            .range(..before)
            .filter(|(_, b)| b.files == 0 && !b.pieces.is_empty())
            .map(|(d, _)| *d)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        self.write_days(ready, false)
    }

    /// Loads the lake's dedup keys for every day within the lookback of `day`.
    fn ensure_loaded(&mut self, day: i32) -> Result<()> {
        let (lo, hi) = (day - self.lookback, day + self.lookback);
        let missing: Vec<(i32, i32)> = match self.loaded {
            Some((a, b)) if a <= lo && hi <= b => return Ok(()),
            Some((a, b)) => {
                let mut m = vec![];
                if lo < a {
                    m.push((lo, a - 1));
                }
                if hi > b {
                    m.push((b + 1, hi));
                }
                self.loaded = Some((a.min(lo), b.max(hi)));
                m
            }
            None => {
                self.loaded = Some((lo, hi));
                vec![(lo, hi)]
            }
        };
        let mut files = vec![];
        for (a, b) in missing {
            for (d, fs) in self.key_files.range(a..=b) {
                files.extend(fs.iter().map(|f| (f.clone(), *d)));
            }
        }
        self.keys.load_files(&files)
    }

    fn quarantine(&mut self, b: &Bad) -> Result<()> {
        if self.quarantine.is_none() {
            let p = self.stage.join(Lake::quarantine_path(self.seq));
            fs::create_dir_all(p.parent().expect("has parent")).at(&p)?;
            self.quarantine = Some(BufWriter::new(fs::File::create(&p).at(&p)?));
        }
        #[derive(Serialize)]
        struct Q<'a> {
            file: &'a str,
            line: u64,
            field: &'a str,
            reason: &'a str,
            record: &'a str,
        }
        let q = Q {
            file: &self.current_file,
            line: b.line,
            field: &b.rejection.field,
            reason: &b.rejection.reason,
            record: &b.raw,
        };
        let w = self.quarantine.as_mut().expect("just opened");
        let p = self.stage.join(Lake::quarantine_path(self.seq));
        serde_json::to_writer(&mut *w, &q).map_err(|e| Error::io(&p, e.into()))?;
        w.write_all(b"\n").at(&p)
    }

    /// Writes buffered days to staged Parquet + key files: all of them (`all`), or the
    /// largest until the buffer is under half the budget.
    fn flush(&mut self, all: bool) -> Result<()> {
        let mut chosen: Vec<i32> = self
            .days
            .iter()
            .filter(|(_, b)| !b.pieces.is_empty())
            .map(|(d, _)| *d)
            .collect();
        if !all {
            chosen.sort_by_key(|d| std::cmp::Reverse(self.days[d].bytes));
            let mut left = self.buffered;
            let mut keep = 0;
            for d in &chosen {
                if left <= self.budget / 2 {
                    break;
                }
                left -= self.days[d].bytes;
                keep += 1;
            }
            chosen.truncate(keep);
            chosen.sort_unstable();
        }
        self.write_days(chosen, true)
    }

    /// Writes the buffered events of `chosen` days, one file each, as tasks on the pool;
    /// with `wait`, returns once every write (these and earlier ones) is done, else goes
    /// on consuming while they run.
    fn write_days(&mut self, chosen: Vec<i32>, wait: bool) -> Result<()> {
        for day in chosen {
            let buf = self.days.get_mut(&day).expect("chosen from days");
            let taken = std::mem::take(buf);
            buf.files = taken.files + 1;
            self.buffered -= taken.bytes;
            let (stage, seq, tx) = (self.stage.clone(), self.seq, self.writes.tx.clone());
            let sync = self.writes.syncer.queue();
            self.writes.pending += 1;
            rayon::spawn(move || {
                let _ = tx.send(write_day(&stage, seq, day, taken, &sync));
            });
        }
        self.writes
            .collect(wait, &mut self.added, &mut self.key_paths)
    }

    fn finish(mut self, inputs: Vec<InputRecord>) -> Result<Commit> {
        self.flush(true)?;
        let quarantine = match self.quarantine.take() {
            Some(w) => {
                let p = self.stage.join(Lake::quarantine_path(self.seq));
                w.into_inner().map_err(|e| Error::io(&p, e.into_error()))?;
                let _ = self.writes.syncer.queue().send(p);
                Some(Lake::quarantine_path(self.seq))
            }
            None => None,
        };
        debug_assert_eq!(
            self.counts.read,
            self.counts.accepted + self.counts.rejected + self.counts.duplicates
        );
        // Every staged file is durable before the caller commits.
        self.writes.syncer.finish()?;
        self.added.sort_by(|a, b| a.path.cmp(&b.path));
        self.key_paths.sort();
        Ok(Commit {
            seq: self.seq,
            kind: CommitKind::Ingest,
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            inputs,
            added: self.added,
            removed: vec![],
            keys: self.key_paths,
            quarantine,
            counts: self.counts,
            partitions: self.touched.iter().map(|d| day_to_string(*d)).collect(),
            audit: None,
        })
    }
}

/// Writes one day's buffered events to a staged Parquet file and its key file, and queues
/// both on `sync` (the fsync waits there, not on a core of the pool); returns the file and
/// the key file's path, relative to the stage.
fn write_day(
    stage: &Path,
    seq: u64,
    day: i32,
    buf: DayBuffer,
    sync: &mpsc::Sender<PathBuf>,
) -> Result<(DataFile, String)> {
    let date = day_to_string(day);
    let rel = Lake::data_file_path(&date, seq, buf.files);
    let parts: Vec<Part> = buf
        .pieces
        .iter()
        .map(|p| Part {
            buf: &p.rows,
            skip: &p.dropped,
        })
        .collect();
    let key_rel = format!(
        "{}-{:04}.keys",
        Lake::key_file_path(&date, seq).trim_end_matches(".keys"),
        buf.files
    );
    // The key file (a sort and 16 bytes per event) is written beside the Parquet file, not
    // after it: the last days of an ingest are written while nothing else is left to do.
    let (w, k) = rayon::join(
        || crate::lake::write_parts_unsynced(&stage.join(&rel), &parts),
        || {
            let mut keys: Vec<u128> = parts
                .iter()
                .flat_map(|p| p.rows().map(|i| p.buf.key[i]))
                .collect();
            crate::lake::write_key_file_unsynced(&stage.join(&key_rel), &mut keys)
        },
    );
    let (w, _) = (w?, k?);
    // A closed syncer means the ingest is failing already; its error is reported there.
    let _ = sync.send(stage.join(&rel));
    let _ = sync.send(stage.join(&key_rel));
    Ok((
        DataFile {
            path: rel,
            date,
            rows: w.rows,
            bytes: w.bytes,
            value_sum: w.value_sum,
        },
        key_rel,
    ))
}

/// Days being written by background tasks, and what they wrote.
struct Writes {
    tx: mpsc::Sender<Result<(DataFile, String)>>,
    rx: mpsc::Receiver<Result<(DataFile, String)>>,
    pending: usize,
    /// Syncs the files written, off the pool (dropped after the writes are waited for).
    syncer: Syncer,
}

impl Writes {
    fn new() -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        Ok(Writes {
            tx,
            rx,
            pending: 0,
            syncer: Syncer::new()?,
        })
    }

    /// Takes the finished writes (all of them, waiting, when `wait`) into `added` and
    /// `keys`; the first failed write is the error.
    fn collect(
        &mut self,
        wait: bool,
        added: &mut Vec<DataFile>,
        keys: &mut Vec<String>,
    ) -> Result<()> {
        let mut first_err = None;
        while self.pending > 0 {
            let r = if wait {
                self.rx.recv().expect("Writes holds a sender")
            } else {
                match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            self.pending -= 1;
            match r {
                Ok((f, k)) => {
                    added.push(f);
                    keys.push(k);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Writes {
    /// An ingest that fails still waits for its background writes, so none of them
    /// writes into the stage after the caller has moved on (or cleaned it up). Every task
    /// sends its result (a panic in a rayon task aborts the process), so this returns.
    fn drop(&mut self) {
        while self.pending > 0 && self.rx.recv().is_ok() {
            self.pending -= 1;
        }
    }
}
