//! The federation crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a federated run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] slora_model::ModelError),
    /// The training loss became NaN or infinite, or exceeded `config::DIVERGED_LOSS`: the learning rate
    /// is most likely too high.
    #[error(
        "training diverged in round {round}, client {client}, step {step}: loss is {loss} \
         (lower the learning rate); the last good checkpoint is kept"
    )]
    NonFiniteLoss {
        /// Round (as written in the metrics `round` column).
        round: u32,
        /// Client index (its partition shard number).
        client: usize,
        /// Local step within that client's round (0-based).
        step: usize,
        /// The offending loss value.
        loss: f64,
    },
    /// A stop was requested (see [`crate::interrupt`]); completed rounds stay checkpointed.
    #[error("interrupted in round {round}, client {client}, after step {step}; the completed rounds are checkpointed and the next run resumes after them")]
    Interrupted {
        /// The round that was open (dropped).
        round: u32,
        /// The client that was training.
        client: usize,
        /// Its last completed local step (0-based).
        step: usize,
    },
    /// A setting is out of range.
    #[error("invalid federation setting {key}: {message}")]
    InvalidConfig {
        /// The setting's name (config-style, e.g. `federation.clients_per_round`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A client shard has no rows.
    #[error("client {client} has no training rows")]
    EmptyClient {
        /// Client index.
        client: usize,
    },
    /// The test shard has no rows.
    #[error("the test shard has no rows")]
    EmptyTest,
    /// The server refused a client's reply (see `FedAvgServer::accept`); nothing changed.
    #[error("round {round}: refused the reply of client {client}: {reason}")]
    Refused {
        /// The round open when it arrived.
        round: u32,
        /// The client it came from.
        client: usize,
        /// Why.
        reason: String,
    },
    /// Writing or reading `metrics.parquet` failed.
    #[error(transparent)]
    Metrics(#[from] slora_metrics::MetricsError),
    /// Two trainable states do not line up (names, shapes or dtypes).
    #[error("trainable state mismatch: {0}")]
    StateMismatch(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint or metrics file is malformed.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing or reading Parquet failed.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

impl FederationError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = FederationError> = std::result::Result<T, E>;
