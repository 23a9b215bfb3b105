//! meterlake: an engine for SaaS usage analytics.
//!
//! Usage events (API calls, documents, storage, AI tokens, seats) are [`ingest`]ed from
//! NDJSON, CSV, CloudEvents or Parquet into a [`lake`] of Hive-partitioned Parquet files,
//! validated record by record: a bad record is quarantined with its reason, a duplicate is
//! dropped, and `read = accepted + rejected + duplicates` always holds. [`rollup`] aggregates
//! the lake per tenant, meter (and user or property) and window with polars, incrementally;
//! [`usage`] answers period queries (totals, breakdowns with shares, comparisons) and
//! engagement (active users, adoption). [`billing`] prices usage against plans. The
//! [`stage`]s over the lake run the pure models of [`forecast`] and [`detect`] on every
//! series, evaluate quotas and raise alerts, each writing a derived table
//! ([`stage::tables`]); [`report`] renders what they wrote; the [`job`]s (`run`, `retention`,
//! `forget`) drive them over a whole lake. [`time`] is the one home of time units and text;
//! [`http`] of outgoing requests with retries (webhooks, notification channels, Stripe).
//!
//! Imports run one way, down this list: error, time, http ← event, the pure models ← lake ←
//! ingest, rollup ← usage, series ← billing ← stage ← report ← config, job, serve ← cli
//! (checked by `tests/it/layers.rs`). The two faces, the command line ([`cli`]) and the
//! HTTP API ([`serve`]), are thin layers over this library.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use meterlake::ingest::{ingest, IngestOptions};
//!
//! let summary = ingest(Path::new("out/lake"), &[PathBuf::from("data/events/events.ndjson.gz")], &IngestOptions::default())?;
//! assert_eq!(summary.read, summary.accepted + summary.rejected + summary.duplicates);
//! let lake = meterlake::lake::Lake::open(Path::new("out/lake"))?;
//! println!("{} rows", meterlake::lake::stats(&lake)?.rows);
//! # Ok::<(), meterlake::Error>(())
//! ```
#![warn(missing_docs)]

pub mod billing;
pub mod cli;
pub mod config;
pub mod detect;
pub mod error;
pub mod event;
pub mod fault;
pub mod forecast;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod job;
pub mod lake;
pub mod memory;
pub mod report;
pub mod rollup;
pub mod series;
pub mod serve;
pub mod stage;
pub mod time;
pub mod usage;

pub use error::{Error, Result};

// Old paths, kept while the reshaping lands (removed in the same change).
pub use event::UsageEvent;
#[doc(hidden)]
pub use job::{retention, run};
#[doc(hidden)]
pub use stage::forecast as predict;
#[doc(hidden)]
pub use stage::{alerts, anomalies};
