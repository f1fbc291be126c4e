//! A stage's identity under a config, computed without running anything: its params, upstream
//! keys and key (what the runner looks up in the store, and `status` compares with the lock).

use crate::config::Config;
use crate::error::PipelineError;
use crate::hashing::stage_key;
use crate::stage::Stage;
use crate::stages::{self, PLAN};
use serde_json::Value;
use std::collections::BTreeMap;

/// A stage's identity under a config: its params, upstream keys and key.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStage {
    /// Stage name.
    pub stage: String,
    /// Code version.
    pub code_version: u32,
    /// Params.
    pub params: Value,
    /// Upstream stage -> planned key.
    pub upstream: BTreeMap<String, String>,
    /// The key.
    pub key: String,
}

/// The upstream keys of a stage: `{dep: key}` for one replicate, `{"seed-<s>/<dep>": key}` across
/// several.
pub fn upstream_keys(replicates: &[(u64, BTreeMap<String, String>)]) -> BTreeMap<String, String> {
    match replicates {
        [(_, one)] => one.clone(),
        many => many
            .iter()
            .flat_map(|(seed, deps)| deps.iter().map(move |(d, k)| (format!("seed-{seed}/{d}"), k.clone())))
            .collect(),
    }
}

/// Computes the identity of `stage` and (recursively) of its upstream stages without running anything.
/// `cfg` must have its `"tuned"` rates resolved.
pub fn plan_stage(cfg: &Config, stage: &dyn Stage) -> Result<PlannedStage, PipelineError> {
    let seeds = if stage.across_seeds() { cfg.run.replicate_seeds() } else { vec![cfg.run.seed] };
    let mut per_seed = Vec::new();
    for seed in seeds {
        let seed_cfg = if stage.across_seeds() { cfg.for_seed(seed) } else { cfg.clone() };
        let mut deps = BTreeMap::new();
        for dep in stage.deps() {
            let dep_stage = lookup_stage(dep)?;
            deps.insert(dep.to_string(), plan_stage(&seed_cfg, dep_stage.as_ref())?.key);
        }
        per_seed.push((seed, deps));
    }
    let upstream = upstream_keys(&per_seed);
    // A stage across seeds is built by the first replicate's runner (`Runner::run_across`), so its
    // params are that replicate's config's: with `partition.vary_with_seed` its partition seed
    // differs from the base config's.
    let params = if stage.across_seeds() { stage.params(&first_replicate(cfg)) } else { stage.params(cfg) };
    let key = stage_key(stage.name(), stage.code_version(), &params, &upstream);
    Ok(PlannedStage { stage: stage.name().to_string(), code_version: stage.code_version(), params, upstream, key })
}

/// The registered stage `name`.
pub fn lookup_stage(name: &str) -> Result<Box<dyn Stage>, PipelineError> {
    stages::find(name).ok_or_else(|| PipelineError::UnknownTarget { name: name.to_string(), known: PLAN.join(", ") })
}


/// The config of the first replicate seed (what status, inspect and export show).
pub fn first_replicate(cfg: &Config) -> Config {
    cfg.for_seed(cfg.run.replicate_seeds()[0])
}
