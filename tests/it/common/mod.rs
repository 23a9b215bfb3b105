//! Shared fixtures of the integration tests. They run the real binary and read what it
//! wrote independently of the program (arrow-rs over the Parquet files, folds over the
//! rows), so a test compares the program with a second computation, not with itself.
//!
//! - `cli`: running `meterlake`, and bad invocations as tables of cases;
//! - `files`: inputs, gzip, copying and listing trees;
//! - `lakes`: a lake's rows straight from its Parquet files, derived tables' columns, a
//!   generated lake;
//! - `rollups`: rollup files read back as tables;
//! - `sample`: the bundled sample run once for every test, and its reports;
//! - `billing`: the hand-computed billing fixture and decimals;
//! - `http`: a recording HTTP receiver (webhooks, Slack, Stripe).

mod billing;
mod cli;
mod files;
mod http;
mod lakes;
mod rollups;
mod sample;

pub use billing::*;
pub use cli::*;
pub use files::*;
pub use http::*;
pub use lakes::*;
pub use rollups::*;
pub use sample::*;
