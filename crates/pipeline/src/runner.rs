//! Runs stages: resolves upstream artifacts (building them when stale), skips a stage whose artifact
//! is up to date, rebuilds on `--force`, commits atomically and records `pipeline.lock` last.
//!
//! An artifact folder whose files do not match their manifest hashes (corrupted, truncated) is
//! rebuilt with a warning naming the file; stages downstream of it are keyed by its key, which the
//! rebuild does not change, so they are reused when intact and rebuilt when not. With `--no-rebuild`
//! ([`Runner::no_rebuild`]) the run stops with that error instead, and a corrupt round checkpoint
//! stops a resume rather than being skipped.

use crate::config::Config;
use crate::error::{IoContext, PipelineError};
use crate::hashing::stage_key;
use crate::stage::{Stage, StageCtx};
use crate::stages::{self, PLAN};
use crate::store::{input_hashes, Artifact, Lookup, Manifest, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Which stages `--force` rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    /// Nothing: up-to-date artifacts are reused.
    Nothing,
    /// Only these stages (the command's target); their upstream stages are reused when up to date.
    Stages(Vec<String>),
    /// Every stage (`pipeline --force all`).
    All,
}

impl Force {
    fn covers(&self, stage: &str) -> bool {
        match self {
            Force::Nothing => false,
            Force::Stages(s) => s.iter().any(|x| x == stage),
            Force::All => true,
        }
    }
}

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

/// Computes the identity of `stage` and (recursively) of its upstream stages without running anything.
pub fn plan_stage(cfg: &Config, stage: &dyn Stage) -> Result<PlannedStage, PipelineError> {
    let mut upstream = BTreeMap::new();
    for dep in stage.deps() {
        let dep_stage = lookup_stage(dep)?;
        upstream.insert(dep.to_string(), plan_stage(cfg, dep_stage.as_ref())?.key);
    }
    let params = stage.params(cfg);
    let key = stage_key(stage.name(), stage.code_version(), &params, &upstream);
    Ok(PlannedStage { stage: stage.name().to_string(), code_version: stage.code_version(), params, upstream, key })
}

/// The registered stage `name`; "not implemented yet" for planned stages without code.
pub fn lookup_stage(name: &str) -> Result<Box<dyn Stage>, PipelineError> {
    if let Some(s) = stages::find(name) {
        return Ok(s);
    }
    if PLAN.contains(&name) {
        Err(PipelineError::NotImplemented { stage: name.to_string() })
    } else {
        Err(PipelineError::UnknownTarget { name: name.to_string(), known: PLAN.join(", ") })
    }
}

/// Runs stages against one store, memoising artifacts within the process.
pub struct Runner<'a> {
    cfg: &'a Config,
    store: &'a Store,
    force: Force,
    no_rebuild: bool,
    done: BTreeMap<String, Artifact>,
}

impl<'a> Runner<'a> {
    /// A runner over a store opened with [`Store::open`].
    pub fn new(cfg: &'a Config, store: &'a Store, force: Force) -> Self {
        Self { cfg, store, force, no_rebuild: false, done: BTreeMap::new() }
    }

    /// `--no-rebuild`: a corrupt artifact or round checkpoint is an error instead of being rebuilt.
    pub fn no_rebuild(mut self, yes: bool) -> Self {
        self.no_rebuild = yes;
        self
    }

    /// Makes the artifact of `name` current: reuses it when up to date, else builds it (after its
    /// upstream stages), and records it in `pipeline.lock`.
    pub fn run(&mut self, name: &str) -> Result<Artifact, PipelineError> {
        if let Some(a) = self.done.get(name) {
            return Ok(a.clone());
        }
        let stage = lookup_stage(name)?;
        let mut inputs = BTreeMap::new();
        for dep in stage.deps() {
            inputs.insert(dep.to_string(), self.run(dep)?);
        }
        let upstream: BTreeMap<String, String> = inputs.iter().map(|(k, a)| (k.clone(), a.key.clone())).collect();
        let params = stage.params(self.cfg);
        let key = stage_key(name, stage.code_version(), &params, &upstream);
        let short = &key[..12];
        let force = self.force.covers(name);
        if !force {
            match self.store.check(name, &key) {
                Lookup::Found(artifact) => {
                    tracing::info!("{name}: up to date ({short}), nothing to do");
                    self.store.record(&artifact)?;
                    self.done.insert(name.to_string(), artifact.clone());
                    return Ok(artifact);
                }
                Lookup::Absent => {}
                Lookup::Invalid(e) if self.no_rebuild => {
                    return Err(PipelineError::stage(name, format!("{e} (not rebuilt: --no-rebuild)")));
                }
                Lookup::Invalid(e) => tracing::warn!("{e}; rebuilding {name}"),
            }
        }
        tracing::info!("{name}: running ({short}{})", if force { ", forced" } else { "" });
        let tmp = self.store.begin(name, &key)?;
        let work_dir = self.store.work_dir(name, &key);
        std::fs::create_dir_all(&work_dir).at(&work_dir)?;
        let ctx = StageCtx {
            config: self.cfg,
            store: self.store,
            force,
            no_rebuild: self.no_rebuild,
            stage: stage.name(),
            key: key.clone(),
            work_dir: work_dir.clone(),
            inputs,
        };
        let started = Instant::now();
        let summary = match stage.run(&ctx, &tmp) {
            Ok(s) => s,
            Err(e) => {
                // The temp folder is never reused; the work folder is kept (when not empty) so the
                // stage can resume.
                let _ = crate::fsutil::remove_dir_if_exists(&tmp);
                let _ = std::fs::remove_dir(&work_dir);
                self.store.remove_stage_dir_if_empty(name);
                // Every stage error starts with the stage's name.
                return Err(match e {
                    e @ PipelineError::Stage { .. } => e,
                    e if e.to_string().starts_with(&format!("{name}: ")) => e,
                    e => PipelineError::stage(name, e.to_string()),
                });
            }
        };
        let manifest = Manifest {
            stage: name.to_string(),
            key: key.clone(),
            code_version: stage.code_version(),
            inputs: input_hashes(&params),
            params,
            upstream,
            files: BTreeMap::new(),
            summary,
            created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            wall_seconds: started.elapsed().as_secs_f64(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let artifact = match self.store.commit(&tmp, manifest) {
            Ok(a) => a,
            Err(e) => {
                let _ = crate::fsutil::remove_dir_if_exists(&tmp);
                return Err(e);
            }
        };
        crate::fsutil::remove_dir_if_exists(&work_dir)?;
        self.store.record(&artifact)?;
        tracing::info!("{name}: done in {:.2} s -> {}", started.elapsed().as_secs_f64(), artifact.dir.display());
        self.done.insert(name.to_string(), artifact.clone());
        Ok(artifact)
    }
}
