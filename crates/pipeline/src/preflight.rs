//! Checks of the config against the model, made before the artifacts directory is touched.
//!
//! [`crate::config::Config::validate`] checks each key on its own and reads no file. Some limits come
//! from the model: `data.max_len` may not exceed its position embeddings, and `lora.r` may not
//! exceed `min(in, out)` of the adapted matrices (every adapted matrix of BERT, DistilBERT and ALBERT
//! layers has `hidden_size` as its smaller side). These need only `config.json` (a few hundred bytes),
//! so every stage command checks them first: a bad value fails in milliseconds with a one-line error
//! naming the key, instead of after partition and stage 1 have run, and nothing is created.
//! `tokenizer.json` must exist too (partition reads it). The weights file itself is read, and its
//! names, shapes and dtypes checked, by the stages that load the model.
//!
//! The adapter settings are checked against the architecture too ([`adapter_coverage`]): a
//! `target_modules` list that matches none of its block linears is an error (BERT's names on
//! DistilBERT, say), one that covers only part of them is a warning naming what stays unadapted, and
//! so is a pooler that `modules_to_save` leaves frozen; a classifier it leaves out is an error.

use crate::config::Config;
use crate::error::PipelineError;
use slora_model::{module_matches, saves_module, EncoderConfig, ModelFiles, ModelType};

/// What the adapter settings select in one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterCoverage {
    /// The architecture.
    pub model_type: ModelType,
    /// Block linears that get an adapter (module paths).
    pub adapted: Vec<String>,
    /// Block linears that do not.
    pub not_adapted: Vec<String>,
    /// Head modules that train densely (`modules_to_save`).
    pub head_trained: Vec<String>,
    /// Head modules that stay as loaded (or as initialised, for a new head).
    pub head_frozen: Vec<String>,
}

/// Distinct in-block names of `modules` (`query`, `ffn_output`, …), in first-seen order.
fn kinds(modules: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for m in modules {
        let k = slora_model::within_block(m);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Which block linears and head modules `cfg.adapter` selects in `model`'s architecture.
pub fn adapter_coverage(cfg: &Config, model: &EncoderConfig) -> AdapterCoverage {
    let names = cfg.adapter.targets().names(model.model_type);
    let (adapted, not_adapted) = slora_model::block_linears(model).into_iter().partition(|m| module_matches(m, &names));
    let save = cfg.adapter.modules_to_save();
    let (head_trained, head_frozen) =
        slora_model::head_modules(model.model_type).iter().map(|m| m.to_string()).partition(|m| saves_module(m, &save));
    AdapterCoverage { model_type: model.model_type, adapted, not_adapted, head_trained, head_frozen }
}

/// Errors for adapter settings that cannot work on this architecture, warnings for partial ones.
fn check_adapter(cfg: &Config, model: &EncoderConfig, config_path: &std::path::Path) -> Result<AdapterCoverage, PipelineError> {
    let c = adapter_coverage(cfg, model);
    let arch = format!("{:?}", c.model_type);
    let defaults = slora_model::TargetModules::Default.names(model.model_type).join(", ");
    if c.adapted.is_empty() {
        return Err(PipelineError::config(format!(
            "adapter.target_modules = {:?} matches none of the linears of {} ({arch}: {}); remove the key to \
             use {arch}'s defaults [{defaults}]",
            cfg.adapter.target_modules,
            config_path.display(),
            kinds(&c.not_adapted).join(", "),
        )));
    }
    if !c.not_adapted.is_empty() {
        tracing::warn!(
            "adapter.target_modules adapts {} of the {} block linears of {arch}; not adapted: {} (defaults: [{defaults}])",
            c.adapted.len(),
            c.adapted.len() + c.not_adapted.len(),
            kinds(&c.not_adapted).join(", ")
        );
    }
    if let Some(classifier) = c.head_frozen.iter().find(|m| m.as_str() == "classifier") {
        return Err(PipelineError::config(format!(
            "adapter.modules_to_save = {:?} leaves `{classifier}` frozen: a new classification head must train \
             (remove the key to use {arch}'s pooler and classifier)",
            cfg.adapter.modules_to_save
        )));
    }
    for frozen in &c.head_frozen {
        tracing::warn!("adapter.modules_to_save does not include `{frozen}` of {arch}: it keeps its loaded values and never trains");
    }
    Ok(c)
}

/// What the preflight read from the model (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// The largest LoRA rank: `min(in, out)` over the adapted matrices.
    pub max_rank: usize,
}

/// Says once per process when `optim.precision = bf16` has no kernel on this CPU (the GEMMs then
/// run fp32).
pub fn warn_without_bf16(precision: crate::config::Precision) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if precision == crate::config::Precision::Bf16 && slora_model::ops::bf16::kernel() == slora_model::ops::bf16::Bf16Kernel::None {
        SAID.call_once(|| tracing::warn!("optim.precision = bf16: this CPU has no bf16 kernel that beats f32 (AMX-BF16, or AVX512-BF16 on AMD); the GEMMs run in fp32"));
    }
}

/// Resolves the model, reads its `config.json` and checks `data.max_len` and `lora.r`
/// against it, and that `tokenizer.json` exists.
pub fn check(cfg: &Config) -> Result<ModelLimits, PipelineError> {
    warn_without_bf16(cfg.optim.precision);
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision)
        .map_err(|e| PipelineError::config(format!("model.source: {e}")))?;
    let model = EncoderConfig::from_file(&files.config).map_err(|e| PipelineError::config(format!("model.source: {e}")))?;
    if files.tokenizer.is_none() {
        return Err(PipelineError::config(format!(
            "model.source: {} has no tokenizer.json (needed to tokenize the data)",
            files.dir.display()
        )));
    }
    check_adapter(cfg, &model, &files.config)?;
    let limits = ModelLimits { max_positions: model.max_sequence_length(), max_rank: model.hidden_size };
    if cfg.data.max_len > limits.max_positions {
        return Err(PipelineError::config(format!(
            "data.max_len must be <= {} (the positions max_position_embeddings of {} leaves) (got {})",
            limits.max_positions,
            files.config.display(),
            cfg.data.max_len
        )));
    }
    if cfg.lora.r > limits.max_rank {
        return Err(PipelineError::config(format!(
            "lora.r must be <= {} (min(in, out) of the adapted matrices: hidden_size of {}) (got {})",
            limits.max_rank,
            files.config.display(),
            cfg.lora.r
        )));
    }
    Ok(limits)
}

/// The head modules that train under `cfg` with its model (for the report), or `None` when the
/// model's `config.json` cannot be read.
pub fn trained_head(cfg: &Config) -> Option<Vec<String>> {
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision).ok()?;
    let model = EncoderConfig::from_file(&files.config).ok()?;
    Some(adapter_coverage(cfg, &model).head_trained)
}
