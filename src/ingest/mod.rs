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
//!
//! Layout, in the order a record flows through it:
//!
//! - `options`: [`IngestOptions`] and its defaults, the [`IngestSummary`] returned.
//! - `inputs`: directories expanded to input files; checksums that skip inputs the lake
//!   already holds.
//! - `source`: input file → chunks of raw records on a reader thread per input;
//!   `source/open.rs` decides the [`Format`] and opens the (maybe gzipped) bytes.
//! - `convert`: chunk → columnar pieces per UTC day plus rejects (one rayon task per chunk);
//!   CSV and Parquet rows are mapped to a draft here, JSON through `scan` or `record`.
//! - `scan`: the fast single-pass scanner for the common JSON event shape.
//! - [`record`]: one record → [`Accepted`] or [`Rejection`]: Draft → validate → Valid →
//!   Accepted, one file per step, and the field names and aliases.
//! - `txn`: the transaction: reading one input through the pool, the sequential stage
//!   (dedup, counts, quarantine), day buffers written in the background, the commit.
//! - this file: [`ingest`], which plans the inputs, reads each through one transaction
//!   and commits it.
//!
//! Imports run one way: this file → `txn` → `convert` → `source`, `scan`, `record`; `scan`
//! uses only `record`'s `draft`, `fields` and `validate`, which (with `accept`) import
//! nothing else of ingest. Only `record/json.rs` calls the scanner back, for the one step
//! that needs it (`grep -rn 'scan::' src/ingest/record/`).

mod convert;
mod inputs;
mod options;
pub(crate) mod record;
mod scan;
mod source;
pub(crate) use source::read_up_to;
mod txn;

pub use inputs::{checksum, expand_inputs};
pub use options::{
    DEFAULT_DEDUP_MEMORY_MB, DEFAULT_LOOKBACK_DAYS, DEFAULT_MEMORY_BUDGET_MB, IngestOptions,
    IngestSummary, InputSummary, Skipped,
};
pub use record::{
    Accepted, DEFAULT_MAX_FUTURE, DEFAULT_MIN_TS, Limits, MAX_ID_BYTES, MAX_RECORD_BYTES,
    Rejection, dedup_key,
};
pub use source::Format;

pub(crate) use record::fields::aliases as csv_aliases;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::lake::{InputRecord, Lake};
use inputs::finish_checksum;
use txn::Txn;

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
    // Raw and pseudonymised user ids never mix in one lake.
    crate::lake::privacy::check_writer(root, lake.holds_records(), opts.limits.pseudonym)?;
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
