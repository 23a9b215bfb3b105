//! What an ingest is asked to do and what it reports: [`IngestOptions`] with its
//! documented defaults, and the [`IngestSummary`] it returns (printed by `meterlake
//! ingest`, as a table or as JSON), whose counts satisfy `read = accepted + rejected +
//! duplicates` in total and per input.

use serde::Serialize;

use super::{Format, Limits};
use crate::lake::Counts;

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
            limits: Limits::relative_to(crate::time::now()),
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
