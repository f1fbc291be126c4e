//! The data crate's error type.

use std::path::PathBuf;

/// Errors from reading, tokenizing, partitioning or writing data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Hub cache resolution failed.
    #[error(transparent)]
    Hub(#[from] slora_hub::HubError),
    /// A file that cannot be parsed in its format.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file whose extension names no supported format.
    #[error("{path}: unsupported data file (use .parquet, .jsonl, .jsonl.gz, .csv or .csv.gz)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A configured column is absent.
    #[error("{path}: no column `{column}` ({key}); columns: {available}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The config key that named it.
        key: &'static str,
        /// The columns present, comma separated.
        available: String,
    },
    /// A bad value in a row.
    #[error("{path}: row {row}, column `{column}`: {message}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 0-based row in the file.
        row: usize,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The train/test split cannot be made.
    #[error("{0}")]
    Split(String),
    /// The tokenizer cannot be loaded or fails.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// tokenizer.json.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A partition that cannot be made; the message names the config key to change.
    #[error("{0}")]
    Partition(String),
    /// Arrow arrays.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet files.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        DataError::Format { path: path.into(), message: message.to_string() }
    }
}
