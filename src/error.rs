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
    /// The object store holding an `s3://` lake refused or failed a request.
    #[error("{location}: {reason}")]
    Remote {
        /// The object (or the lake's URL) the request was about.
        location: String,
        /// What the store answered.
        reason: String,
    },
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

/// The member of a closed set (a granularity, a model, a format) named `s`, ASCII case
/// ignored; else [`Error::InvalidParameter`] naming `what` and every valid name. The one
/// `FromStr` of the crate's named enums, shared by the command line, configuration and API.
pub(crate) fn parse_name<T: Copy>(
    what: &'static str,
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T> {
    all.iter()
        .copied()
        .find(|&v| name(v).eq_ignore_ascii_case(s))
        .ok_or_else(|| Error::InvalidParameter {
            name: what,
            reason: format!(
                "`{s}` is not one of {}",
                all.iter().map(|&v| name(v)).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// `FromStr` (through [`parse_name`], `what` naming the set in errors) and `Display` (the
/// name) for an enum with `const ALL` and `fn name(self) -> &'static str`: the plain API
/// the command line builds its value parsers on (`cli::values`).
macro_rules! named_enum {
    ($t:ty, $what:literal) => {
        impl std::str::FromStr for $t {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<$t> {
                $crate::error::parse_name($what, s, &<$t>::ALL, <$t>::name)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named_enum;

/// Adds the path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
