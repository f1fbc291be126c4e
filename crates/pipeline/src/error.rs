//! The pipeline's error type: one enum, each variant naming what went wrong and where.

use std::path::PathBuf;

/// Everything that can stop a pipeline command.
///
/// Stages return it from [`crate::Stage::run`]; library errors convert with `?`, and
/// [`PipelineError::Stage`] is the catch-all for a stage's own checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A bad config value, unknown key, wrong type or bad `--set`; the message names the key.
    #[error("{0}")]
    Config(String),
    /// The config file cannot be read or is not TOML.
    #[error("config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (one line).
        message: String,
    },
    /// Another process holds the artifacts directory.
    #[error("artifacts dir {dir} locked by pid {pid}")]
    Locked {
        /// The artifacts directory.
        dir: PathBuf,
        /// The pid recorded in the lock file (`?` when unreadable).
        pid: String,
    },
    /// A name that is neither a stage nor an artifact path.
    #[error("unknown stage or artifact `{name}` (stages: {known})")]
    UnknownTarget {
        /// What was asked for.
        name: String,
        /// The known stage names, comma separated.
        known: String,
    },
    /// A stage asked for an upstream artifact it did not declare in `deps()`.
    #[error("{stage}: no upstream artifact `{dep}` (declare it in deps())")]
    MissingInput {
        /// The stage.
        stage: String,
        /// The upstream stage name.
        dep: String,
    },
    /// An artifact directory that cannot be used.
    #[error("artifact {dir}: {message}")]
    Artifact {
        /// The artifact directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stage's own error (the catch-all for stage code).
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: String,
        /// What went wrong (one line).
        message: String,
    },
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An I/O error without a path (prefer [`PipelineError::io`]).
    #[error(transparent)]
    IoBare(#[from] std::io::Error),
    /// Hub cache resolution.
    #[error(transparent)]
    Hub(#[from] slora_hub::HubError),
    /// Model files, weights, adapters.
    #[error(transparent)]
    Model(#[from] slora_model::ModelError),
    /// Federated runs, checkpoints.
    #[error(transparent)]
    Federation(#[from] slora_federation::FederationError),
    /// Metrics files.
    #[error(transparent)]
    Metrics(#[from] slora_metrics::MetricsError),
    /// An error inside a stage (or command): its name, then the error, kept as the source.
    #[error("{stage}: {source}")]
    InStage {
        /// The stage or command.
        stage: String,
        /// What went wrong.
        #[source]
        source: Box<PipelineError>,
    },
    /// Data loading, tokenization, partitioning, shards.
    #[error(transparent)]
    Data(#[from] slora_data::DataError),
    /// JSON (manifests, summaries).
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Arrow arrays and record batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet files.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Tensors.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// safetensors files.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
}

impl PipelineError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io { path: path.into(), source }
    }

    /// A stage's own error.
    /// `e` inside `stage`: left as it is when it already names the stage, else wrapped (its
    /// causes stay reachable through `source()`).
    pub fn in_stage(stage: &str, e: PipelineError) -> Self {
        match e {
            e @ (PipelineError::Stage { .. } | PipelineError::InStage { .. }) => e,
            e if e.to_string().starts_with(&format!("{stage}: ")) => e,
            e => PipelineError::InStage { stage: stage.to_string(), source: Box::new(e) },
        }
    }

    /// A stage's own error.
    pub fn stage(stage: &str, message: impl Into<String>) -> Self {
        PipelineError::Stage { stage: stage.to_string(), message: message.into() }
    }

    /// A config error (the message must name the key).
    pub fn config(message: impl Into<String>) -> Self {
        PipelineError::Config(message.into())
    }
}

/// Attaches a path to I/O errors: `fs::read(&p).at(&p)?`.
pub trait IoContext<T> {
    /// Maps an `io::Error` to [`PipelineError::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T, PipelineError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, PipelineError> {
        self.map_err(|e| PipelineError::io(path, e))
    }
}

/// An error and its causes on one line, as `pipeline` prints it after `error: ` (and the Python API
/// raises it): a cause already quoted by the message before it (an I/O error shown next to its path)
/// is not repeated, and line breaks inside library messages are folded.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
