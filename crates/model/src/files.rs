//! Where a model's files live: a local Hugging Face-layout folder or a hub id resolved from the
//! local cache (through `slora-hub`, offline-first).

use std::path::PathBuf;

use crate::error::{ModelError, Result};

/// The files of one encoder checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The folder holding them (a snapshot folder for hub ids).
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`, when the folder has one.
    pub tokenizer: Option<PathBuf>,
}

impl ModelFiles {
    /// Resolves `source` (a local folder, or a hub id `org/name` looked up in the Hugging Face cache
    /// at `revision`) to its `config.json` and `model.safetensors`.
    pub fn resolve(source: &str, revision: &str) -> Result<Self> {
        Self::resolve_with(&slora_hub::HubCache::from_env(), source, revision)
    }

    /// [`ModelFiles::resolve`] against an explicit hub cache.
    pub fn resolve_with(cache: &slora_hub::HubCache, source: &str, revision: &str) -> Result<Self> {
        let failed = |e: slora_hub::HubError| ModelError::Source { source_id: source.to_string(), message: e.to_string() };
        let dir = cache.resolve_model_dir(source, revision, &["config.json", "model.safetensors"]).map_err(failed)?;
        // A hub model's tokenizer comes with it (downloaded when missing); a repo without one says so later.
        if let slora_hub::Source::Hub(repo_id) = slora_hub::Source::parse(source) {
            match cache.resolve_file(&repo_id, slora_hub::RepoKind::Model, revision, "tokenizer.json") {
                Ok(_) | Err(slora_hub::HubError::NotFound { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(Self::in_dir(dir))
    }

    /// The standard file names inside `dir` (no existence check).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.exists());
        Self { config: dir.join("config.json"), weights: dir.join("model.safetensors"), tokenizer, dir }
    }
}
