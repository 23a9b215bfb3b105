//! One ingest transaction ([`Txn`]): everything between the inputs and the commit.
//!
//! - [`Txn::read_input`] runs the parallel part for one input: reader thread, dispatcher,
//!   one parse task per chunk on the rayon pool (`super::convert`), results taken back in
//!   input order.
//! - [`Txn::consume`] is the sequential stage and the accounting: each record read is
//!   counted once as accepted, rejected (written to the staged quarantine) or a duplicate
//!   (the dedup index, [`KeySet`], loaded for the lookback window around each day).
//! - [`write`]: when a buffered day is written out, and the background writes.
//! - [`Txn::finish`] writes what is left, waits for every file to be durable and returns
//!   the [`Commit`] for the caller to make.

mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use serde::Serialize;

use super::convert::{Bad, Parsed, Piece, convert};
use super::{Format, IngestOptions, Limits, source};
use crate::error::{Error, IoContext, Result};
use crate::lake::{Commit, CommitKind, Counts, DataFile, InputRecord, KeySet, Lake};
use crate::time::day_to_string;
use write::Writes;

/// Events of one UTC day waiting to be flushed: the day's pieces of the chunks read.
#[derive(Default)]
struct DayBuffer {
    pieces: Vec<Piece>,
    bytes: usize,
    files: u32,
}

/// One ingest transaction: dedup state, buffers, staged files.
pub(super) struct Txn {
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
    pub(super) input_bytes: u64,
    sized: bool,
    quarantine: Option<BufWriter<fs::File>>,
    pub(super) counts: Counts,
    current_file: String,
}

impl Txn {
    pub(super) fn new(lake: &Lake, seq: u64, opts: &IngestOptions) -> Result<Self> {
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
    pub(super) fn read_input(
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
            record: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            withheld: Option<String>,
        }
        // Pseudonymised lakes keep no raw user id, in rejected records either.
        let scrubbed = self.limits.pseudonym.map(|p| b.scrubbed(p));
        let (record, field, reason, withheld) = match &scrubbed {
            None => (
                Some(b.raw.as_str()),
                b.rejection.field.as_str(),
                b.rejection.reason.as_str(),
                None,
            ),
            Some(s) if s.record.is_some() => (
                s.record.as_deref(),
                s.field.as_str(),
                s.reason.as_str(),
                None,
            ),
            Some(s) => (
                None,
                s.field.as_str(),
                s.reason.as_str(),
                Some(format!(
                    "{} bytes not kept: user ids are pseudonymised and the record's user id \
                     could not be read and replaced; see the input file at this line",
                    b.raw.len()
                )),
            ),
        };
        let q = Q {
            file: &self.current_file,
            line: b.line,
            field,
            reason,
            record,
            withheld,
        };
        let w = self.quarantine.as_mut().expect("just opened");
        let p = self.stage.join(Lake::quarantine_path(self.seq));
        let line = serde_json::to_vec(&q).map_err(|e| Error::io(&p, e.into()))?;
        // Sealed (AES-GCM, one line each) when a key is configured: lake::crypto.
        let line = crate::lake::crypto::seal_line(&line)?;
        w.write_all(&line).at(&p)?;
        w.write_all(b"\n").at(&p)
    }

    pub(super) fn finish(mut self, inputs: Vec<InputRecord>) -> Result<Commit> {
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
            inputs,
            added: self.added,
            keys: self.key_paths,
            quarantine,
            counts: self.counts,
            partitions: self.touched.iter().map(|d| day_to_string(*d)).collect(),
            ..Commit::new(self.seq, CommitKind::Ingest)
        })
    }
}
