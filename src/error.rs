//! The library's error type.
//!
//! Errors about *records* (a bad line in an input) are not errors here: a bad record is
//! rejected into quarantine and counted (see [`crate::ingest::Rejection`]). These are the
//! errors that stop a command: an unreadable input, a broken lake, a bad parameter.

use std::path::PathBuf;

/// Everything that can stop a meterlake operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input file or lake file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An input file is not in the format it claims to be (bad gzip, not Parquet, no CSV header).
    #[error("{path}: {reason}")]
    BadInput {
        /// The input file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A command-line or configuration parameter is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name, as the user wrote it (`--tenants`, `lookback_days`).
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The lake's commit log or a data file in it is damaged.
    #[error("lake {path}: {reason}")]
    CorruptLake {
        /// The file found damaged.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing or reading Parquet failed.
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Building Arrow arrays failed (a bug or an inconsistent batch).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A model cannot fit this history (the forecaster falls back to a simpler one).
    #[error("{model} needs {need} points, got {got}")]
    NotEnoughData {
        /// The model.
        model: &'static str,
        /// Points it needs.
        need: usize,
        /// Points there are.
        got: usize,
    },
    /// A model failed numerically (a singular design, a failed fit).
    #[error("{0}")]
    Model(String),
    /// Rendering a report (chart, workbook) failed.
    #[error("report: {0}")]
    Render(String),
    /// polars failed while scanning the lake.
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a Parquet error with the path it happened on.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }
}

/// Adds the path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
