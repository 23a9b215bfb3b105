//! Integration tests: one binary (polars links once) driving the real `meterlake` CLI.
//! One file per topic; shared fixtures in `common/`.

mod access;
mod alerts;
mod billing;
mod checkpoint;
mod common;
mod crash;
mod dashboard;
mod detect;
mod entitlements;
mod export_data;
mod faults;
mod forecast;
mod formats;
mod gauges;
mod generate;
mod ingest;
mod insights;
mod layers;
mod notify;
mod openmeter;
mod privacy;
mod props;
mod refresh;
mod report;
mod restore;
mod retention;
mod rollup;
mod run;
mod serve;
mod serve_api;
mod serve_billing;
mod serve_edges;
mod sessions;
mod stripe;
mod usage;
