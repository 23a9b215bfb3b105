//! The jobs: commands that drive the stages over a whole lake and change it as a unit.
//!
//! - [`run`]: the batch job a scheduler runs (ingest → retention → rollups → forecasts →
//!   anomalies → quotas and alerts → invoices → reports), one function per stage;
//! - [`retention`]: drop or archive expired partitions, recorded in the audit log;
//! - [`forget`]: remove a tenant's or a user's data from the lake and every derived table;
//! - [`export`]: write everything held about a tenant or a user (an access request);
//! - [`restore`]: bring archived partitions back into the lake;
//! - [`rekey`]: rewrite every Parquet file of the lake under a new encryption key.
//!
//! Layer: the top of the library, just under its two faces (the CLI and `serve`). Nothing
//! below imports a job.

pub mod export;
pub mod forget;
pub mod rekey;
pub mod restore;
pub mod retention;
pub mod run;
