//! The report crate's error type: every variant names the file or key it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading report inputs, rendering, or comparing runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be decoded.
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// What the parquet/arrow reader said.
        message: String,
    },
    /// A table lacks a column it must have, or holds it with an unusable type.
    #[error("{path}: column `{column}`: {problem}")]
    Column {
        /// The file (or in-memory table) the column was looked up in.
        path: PathBuf,
        /// Column name.
        column: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A JSON document (summary, baseline, manifest) could not be parsed or has the wrong shape.
    #[error("{path}: {message}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A `metrics.parquet` that cannot be read.
    #[error(transparent)]
    Metrics(#[from] slora_metrics::MetricsError),
    /// Input that is structurally valid but cannot be reported (no rows, inconsistent lengths, ...).
    #[error("invalid report input: {0}")]
    Invalid(String),
    /// polars failed on an in-memory table operation.
    #[error("table operation failed: {0}")]
    Table(#[from] polars::error::PolarsError),
    /// plotters failed to draw a figure.
    #[error("plot `{figure}` failed: {message}")]
    Plot {
        /// The figure's id.
        figure: String,
        /// What plotters said.
        message: String,
    },
}

impl ReportError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Wraps a plotters error for the figure `figure`.
    pub fn plot(figure: &str, err: impl std::fmt::Display) -> Self {
        Self::Plot { figure: figure.to_string(), message: err.to_string() }
    }
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, ReportError>;
