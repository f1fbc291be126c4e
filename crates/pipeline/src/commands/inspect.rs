//! `pipeline inspect TARGET`: what an artifact holds, for people and (`--json`) for machines.
//!
//! TARGET is a stage name (its artifact under the current config, else the one `pipeline.lock`
//! records) or an artifact folder. Each stage shows its artifacts its own way
//! ([`crate::stage::Stage::inspect`]); the default is the manifest summary and files
//! ([`crate::stage::generic_inspect`]).

use crate::config::Config;
use crate::error::PipelineError;
use crate::planning::{lookup_stage, plan_stage};
use crate::store::{Artifact, Store, MANIFEST_FILE};
use serde_json::Value;
use std::path::Path;

/// The artifact TARGET names.
pub fn resolve_target(cfg: &Config, store: &Store, target: &str) -> Result<Artifact, PipelineError> {
    let path = Path::new(target);
    if path.join(MANIFEST_FILE).is_file() {
        return Artifact::load(path);
    }
    let stage = lookup_stage(target)?;
    let plan = plan_stage(cfg, stage.as_ref())?;
    if let Some(a) = store.lookup(target, &plan.key) {
        return Ok(a);
    }
    if let Some(entry) = store.read_lock().stages.get(target) {
        if let Some(a) = store.lookup(target, &entry.key) {
            tracing::warn!("{target}: showing the artifact recorded in pipeline.lock (the config has changed since)");
            return Ok(a);
        }
    }
    Err(PipelineError::Stage {
        stage: target.to_string(),
        message: format!("no artifact in {} yet; run `pipeline {target}`", store.root().display()),
    })
}

/// The JSON view and the text view of an artifact: its stage's [`crate::stage::Stage::inspect`].
pub fn inspect(artifact: &Artifact) -> Result<(Value, String), PipelineError> {
    lookup_stage(&artifact.stage)?.inspect(artifact)
}
