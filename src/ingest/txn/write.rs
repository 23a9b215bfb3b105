//! When and how a [`Txn`]'s buffered days are written: a day the input has moved past
//! (the watermark), the largest days when the memory budget is reached, everything at
//! the end. Each day becomes a staged Parquet file and its key file, written as a task
//! on the rayon pool while parsing goes on; [`Writes`] collects what they wrote.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{DayBuffer, Txn};
use crate::error::Result;
use crate::ingest::convert::Piece;
use crate::lake::log::Syncer;
use crate::lake::{DataFile, Lake, Part};
use crate::time::day_to_string;

impl Txn {
    /// Moves the watermark: the latest day seen, and how far behind it any event arrived.
    /// A chunk spanning midnight counts as one day of lateness, so in-order input reads
    /// as lateness 1.
    pub(super) fn watermark(&mut self, pieces: &[Piece]) {
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
    pub(super) fn flush_passed(&mut self) -> Result<()> {
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

    /// Writes buffered days to staged Parquet + key files: all of them (`all`), or the
    /// largest until the buffer is under half the budget.
    pub(super) fn flush(&mut self, all: bool) -> Result<()> {
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
            exact: Some(crate::lake::ExactSum::of(&w)),
        },
        key_rel,
    ))
}

/// Days being written by background tasks, and what they wrote.
pub(super) struct Writes {
    tx: mpsc::Sender<Result<(DataFile, String)>>,
    rx: mpsc::Receiver<Result<(DataFile, String)>>,
    pending: usize,
    /// Syncs the files written, off the pool (dropped after the writes are waited for).
    pub(super) syncer: Syncer,
}

impl Writes {
    pub(super) fn new() -> Result<Self> {
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
