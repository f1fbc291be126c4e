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

/// The params every model-reading stage is keyed by: model id, revision and file hashes; and
/// `[adapter]` with its unset lists resolved ([`adapter_params`]), from one resolution of the model.
pub fn model_and_adapter_params(cfg: &Config) -> (Value, Value) {
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision);
    let (config_sha256, weights_sha256) = match &files {
        Ok(f) => (crate::hashing::input_hash(&f.config), crate::hashing::input_hash(&f.weights)),
        Err(e) => (format!("unresolved: {e}"), format!("unresolved: {e}")),
    };
    let model = json!({
        "source": cfg.model.source,
        "revision": cfg.model.revision,
        "config_sha256": config_sha256,
        "weights_sha256": weights_sha256,
    });
    (model, resolved_adapter(cfg, files.ok().as_ref()))
}

/// `[adapter]` as the training stages are keyed by it: unset lists resolved for `model.source`'s
/// architecture, so a key names the modules that train, not whether the config spelled them out.
/// A BERT run with the lists unset keys as the shipped pipeline.toml's explicit BERT lists did:
/// the attention and feed-forward linears, and `["pooler.dense", "pre_classifier", "classifier"]`
/// (BERT's pooler and every classifier; the same modules as the runtime's every-head default).
/// Left as written when the model cannot be read (the stage then fails on loading it anyway).
pub fn adapter_params(cfg: &Config) -> Value {
    resolved_adapter(cfg, ModelFiles::resolve(&cfg.model.source, &cfg.model.revision).ok().as_ref())
}

fn resolved_adapter(cfg: &Config, files: Option<&ModelFiles>) -> Value {
    let mut adapter = cfg.adapter.clone();
    if let Some(ty) = files.and_then(|f| EncoderConfig::from_file(&f.config).ok()).map(|c| c.model_type) {
        if adapter.target_modules.is_empty() {
            adapter.target_modules = adapter.targets().names(ty);
        }
        if adapter.modules_to_save.is_empty() {
            adapter.modules_to_save = keyed_modules_to_save(ty);
        }
    }
    json!(adapter)
}

/// The unset `modules_to_save` of an architecture, as keys name it: BERT-like heads (BERT's
/// `pooler.dense`, DistilBERT's `pre_classifier`, every `classifier`, RoBERTa's inside it) by the
/// list pipeline.toml shipped with, ALBERT's by its `pooler`.
fn keyed_modules_to_save(ty: slora_model::ModelType) -> Vec<String> {
    let names: &[&str] = match ty {
        slora_model::ModelType::Albert => &["pooler", "classifier"],
        _ => &["pooler.dense", "pre_classifier", "classifier"],
    };
    names.iter().map(|s| s.to_string()).collect()
}
