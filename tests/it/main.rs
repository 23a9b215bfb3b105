//! Integration tests: one binary (polars links once) driving the real `meterlake` CLI.

mod billing;
mod common;
mod crash;
mod detect;
mod forecast;
mod formats;
mod generate;
mod ingest;
mod props;
mod report;
mod rollup;
mod serve;
mod usage;
