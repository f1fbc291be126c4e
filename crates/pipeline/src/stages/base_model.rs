//! The encoder every model-reading stage starts from: resolving and loading `model.source`, and the
//! params that key a stage by it.

use serde_json::{json, Value};
use slora_model::{EncoderConfig, ModelFiles, Weights};

use crate::config::Config;
use crate::error::PipelineError;

/// The encoder: its files, config and base weights.
pub struct BaseModel {
    /// Where the files are.
    pub files: ModelFiles,
    /// The architecture.
    pub config: EncoderConfig,
    /// Base weights (normalised names, f32).
    pub weights: Weights,
}

/// Resolves and loads `model.source` at `model.revision`.
pub fn load_base_model(cfg: &Config) -> Result<BaseModel, PipelineError> {
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision)?;
    let config = EncoderConfig::from_file(&files.config)?;
    let weights = Weights::load(&files.weights, &config)?;
    Ok(BaseModel { files, config, weights })
}

/// The params every model-reading stage is keyed by: model id, revision and file hashes.
pub fn model_params(cfg: &Config) -> Value {
    let (config_sha256, weights_sha256) = match ModelFiles::resolve(&cfg.model.source, &cfg.model.revision) {
        Ok(f) => (crate::hashing::input_hash(&f.config), crate::hashing::input_hash(&f.weights)),
        Err(e) => (format!("unresolved: {e}"), format!("unresolved: {e}")),
    };
    json!({
        "source": cfg.model.source,
        "revision": cfg.model.revision,
        "config_sha256": config_sha256,
        "weights_sha256": weights_sha256,
    })
}

