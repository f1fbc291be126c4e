//! The crate's error type: one `thiserror` enum whose messages name the file, tensor or key at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading, building, running or saving a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file is malformed or holds an unsupported value.
    #[error("{file}: {message}")]
    Config {
        /// The config file.
        file: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// `model_type` names an architecture this crate does not implement.
    #[error("{file}: unknown model_type `{model_type}` (supported: bert, distilbert, albert, roberta)")]
    UnknownModelType {
        /// The config file.
        file: PathBuf,
        /// The value found.
        model_type: String,
    },
    /// A required tensor is absent from a weight file.
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor {
        /// The weight file (or files) searched.
        file: PathBuf,
        /// The normalised tensor name.
        name: String,
    },
    /// A tensor has the wrong shape.
    #[error("{file}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Where the tensor came from.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A tensor has a dtype that cannot hold weights.
    #[error("{file}: tensor `{name}` has dtype {dtype}, expected a float type")]
    DType {
        /// Where the tensor came from.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A safetensors file could not be parsed or written.
    #[error("{file}: {message}")]
    Safetensors {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A model source could not be resolved (local folder or hub cache).
    #[error("model source `{source_id}`: {message}")]
    Source {
        /// The source as given.
        source_id: String,
        /// What is wrong.
        message: String,
    },
    /// A training spec, state map or batch is inconsistent with the model.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// A `ModelError::Invalid` from anything printable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ModelError::Invalid(message.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}
