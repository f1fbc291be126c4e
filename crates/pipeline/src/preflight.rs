//! Checks of the config against the model, made before the artifacts directory is touched.
//!
//! [`crate::config::Config::validate`] checks each key on its own and reads no file. Some limits come
//! from the model: `data.max_len` may not exceed its position embeddings, and `decompose.rank` may not
//! exceed `min(in, out)` of the adapted matrices (every adapted matrix of BERT, DistilBERT and ALBERT
//! layers has `hidden_size` as its smaller side). These need only `config.json` (a few hundred bytes),
//! so every stage command checks them first: a bad value fails in milliseconds with a one-line error
//! naming the key, instead of after partition and stage 1 have run, and nothing is created.
//! `tokenizer.json` must exist too (partition reads it). The weights file itself is read, and its
//! names, shapes and dtypes checked, by the stages that load the model.

use crate::config::Config;
use crate::error::PipelineError;
use slora_model::{EncoderConfig, ModelFiles};

/// What the preflight read from the model (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// The largest LoRA rank: `min(in, out)` over the adapted matrices.
    pub max_rank: usize,
}

/// Resolves the model, reads its `config.json` and checks `data.max_len` and `decompose.rank`
/// against it, and that `tokenizer.json` exists.
pub fn check(cfg: &Config) -> Result<ModelLimits, PipelineError> {
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision)
        .map_err(|e| PipelineError::config(format!("model.source: {e}")))?;
    let model = EncoderConfig::from_file(&files.config).map_err(|e| PipelineError::config(format!("model.source: {e}")))?;
    if files.tokenizer.is_none() {
        return Err(PipelineError::config(format!(
            "model.source: {} has no tokenizer.json (needed to tokenize the data)",
            files.dir.display()
        )));
    }
    let limits = ModelLimits { max_positions: model.max_position_embeddings, max_rank: model.hidden_size };
    if cfg.data.max_len > limits.max_positions {
        return Err(PipelineError::config(format!(
            "data.max_len must be <= {} (max_position_embeddings of {}) (got {})",
            limits.max_positions,
            files.config.display(),
            cfg.data.max_len
        )));
    }
    if cfg.decompose.rank > limits.max_rank {
        return Err(PipelineError::config(format!(
            "decompose.rank must be <= {} (min(in, out) of the adapted matrices: hidden_size of {}) (got {})",
            limits.max_rank,
            files.config.display(),
            cfg.decompose.rank
        )));
    }
    Ok(limits)
}
