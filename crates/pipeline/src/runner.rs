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
use crate::planning::{lookup_stage, upstream_keys};
use crate::rates::Rates;
use crate::stage::{Replicate, Stage, StageCtx};
use crate::stages;
use crate::store::{input_hashes, Artifact, Lookup, Manifest, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// Runs stages against one store, memoising artifacts within the process.
pub struct Runner<'a> {
    cfg: &'a Config,
    store: &'a Store,
    force: Force,
    no_rebuild: bool,
    done: BTreeMap<String, Artifact>,
    tuning: Option<Artifact>,
}

impl<'a> Runner<'a> {
    /// A runner over a store opened with [`Store::open`].
    pub fn new(cfg: &'a Config, store: &'a Store, force: Force) -> Self {
        Self { cfg, store, force, no_rebuild: false, done: BTreeMap::new(), tuning: None }
    }

    /// Records the tune artifact this runner's `"tuned"` rates came from (shown by the report).
    pub fn with_tuning(mut self, tuning: Option<Artifact>) -> Self {
        self.tuning = tuning;
        self
    }

    /// The config this runner runs.
    pub fn config(&self) -> &Config {
        self.cfg
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
        let replicates = vec![Replicate { seed: self.cfg.run.seed, inputs }];
        self.build(stage.as_ref(), replicates)
    }

    /// Makes the artifact of a stage across seeds current: `runners` hold one replicate seed each
    /// (the first one builds it).
    pub fn run_across(runners: &mut [Runner<'a>], name: &str) -> Result<Artifact, PipelineError> {
        let stage = lookup_stage(name)?;
        if !stage.across_seeds() || runners.len() == 1 {
            let mut first = None;
            for r in runners.iter_mut() {
                let a = r.run(name)?;
                first.get_or_insert(a);
            }
            return first.ok_or_else(|| PipelineError::stage(name, "no replicate seed to run"));
        }
        let mut replicates = Vec::new();
        for r in runners.iter_mut() {
            let mut inputs = BTreeMap::new();
            for dep in stage.deps() {
                inputs.insert(dep.to_string(), r.run(dep)?);
            }
            replicates.push(Replicate { seed: r.cfg.run.seed, inputs });
        }
        runners[0].build(stage.as_ref(), replicates)
    }

    fn build(&mut self, stage: &dyn Stage, replicates: Vec<Replicate>) -> Result<Artifact, PipelineError> {
        let name = stage.name();
        let keyed: Vec<(u64, BTreeMap<String, String>)> = replicates
            .iter()
            .map(|r| (r.seed, r.inputs.iter().map(|(k, a)| (k.clone(), a.key.clone())).collect()))
            .collect();
        let upstream = upstream_keys(&keyed);
        let inputs = replicates[0].inputs.clone();
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
            no_rebuild: self.no_rebuild,
            stage: stage.name(),
            key: key.clone(),
            work_dir: work_dir.clone(),
            inputs,
            replicates,
            tuning: self.tuning.clone(),
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
                return Err(PipelineError::in_stage(name, e));
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


/// How [`run_stages_with`] treats existing artifacts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which stages to rebuild even when up to date.
    pub force: Force,
    /// Stop on a corrupt artifact or checkpoint instead of rebuilding it (`--no-rebuild`).
    pub no_rebuild: bool,
}

/// What [`run_stages_with`] left: the artifact of every stage it ran (or found up to date), per
/// replicate seed, and the published report.
#[derive(Debug, Clone)]
pub struct RunOutputs {
    /// The artifacts directory.
    pub artifacts: PathBuf,
    /// The seeds in order (`run.seed`, or `run.seeds`).
    pub seeds: Vec<u64>,
    /// `(stage, seed, artifact folder)`, stages in run order; a stage across seeds (the report) once,
    /// under the first seed.
    pub stages: Vec<(String, u64, PathBuf)>,
    /// `<report.dir>/<run.name>/`, when the report ran.
    pub report: Option<PathBuf>,
    /// The artifact folder the report was published from.
    pub report_artifact: Option<PathBuf>,
}

/// [`run_stages_with`] without `--no-rebuild`.
pub fn run_stages(cfg: &Config, root: &Path, force: Force, stages: &[&str]) -> Result<RunOutputs, PipelineError> {
    run_stages_with(cfg, root, &RunOptions { force, no_rebuild: false }, stages)
}

/// Runs `stages` in order under the store lock; stops at the first error (e.g. "not implemented
/// yet" for a planned stage without code). The model-dependent config checks
/// ([`crate::preflight::check`]) run first, before the artifacts directory is created or locked.
pub fn run_stages_with(cfg: &Config, root: &Path, opts: &RunOptions, stages: &[&str]) -> Result<RunOutputs, PipelineError> {
    crate::preflight::check(cfg)?;
    let store = Store::open(root)?;
    crate::hashing::load_cache(store.root());
    let result = run_in_store(cfg, &store, opts, stages);
    if let Err(e) = crate::hashing::save_cache(store.root()) {
        tracing::warn!("could not save the hash cache: {e}");
    }
    result
}

/// Runs `stages` for every replicate seed: `tune` first (on the first seed) when it is asked for or
/// a rate is `"tuned"`, whose choices then key every later stage; each per-seed stage once per seed;
/// a stage across seeds (the report) once over all of them.
fn run_in_store(cfg: &Config, store: &Store, opts: &RunOptions, stages: &[&str]) -> Result<RunOutputs, PipelineError> {
    let seeds = cfg.run.replicate_seeds();
    let asked: Vec<Box<dyn Stage>> = stages.iter().map(|s| lookup_stage(s)).collect::<Result<_, _>>()?;
    let mut outputs = RunOutputs { artifacts: store.root().to_path_buf(), seeds: seeds.clone(), stages: Vec::new(), report: None, report_artifact: None };
    // The stage that chooses "tuned" rates runs first, on the first seed, when it is asked for or
    // when a stage keyed by rates needs its choice; its choices key every later stage.
    let chooser = stages::registry().into_iter().find(|s| s.chooses_rates());
    let needs_choice = asked.iter().any(|s| s.keyed_by_rates()) && crate::rates::needs_tune(cfg);
    let mut rates = Rates::Given(cfg.clone());
    if let Some(chooser) = chooser.filter(|c| needs_choice || asked.iter().any(|s| s.name() == c.name())) {
        let tune_cfg = cfg.for_seed(seeds[0]);
        let artifact = Runner::new(&tune_cfg, store, opts.force.clone()).no_rebuild(opts.no_rebuild).run(chooser.name())?;
        outputs.stages.push((chooser.name().to_string(), seeds[0], artifact.dir.clone()));
        rates = Rates::from_tune(cfg, &artifact)?;
    }
    let resolved = rates.config()?;
    let seed_cfgs: Vec<Config> = seeds.iter().map(|s| resolved.for_seed(*s)).collect();
    let mut runners: Vec<Runner> = seed_cfgs
        .iter()
        .map(|c| Runner::new(c, store, opts.force.clone()).no_rebuild(opts.no_rebuild).with_tuning(rates.tune().cloned()))
        .collect();
    for stage in asked.iter().filter(|s| !s.chooses_rates()) {
        if seeds.len() > 1 {
            tracing::info!("{}: {} replicate seeds {seeds:?}", stage.name(), seeds.len());
        }
        let artifact = Runner::run_across(&mut runners, stage.name())?;
        // Published after every run, cached or not (the report: Stage::publish).
        if let Some(dir) = stage.publish(resolved, &artifact)? {
            outputs.report = Some(dir);
            outputs.report_artifact = Some(artifact.dir.clone());
        }
    }
    // Every stage each seed's runner made current (upstream stages included), in plan order.
    for stage in stages::registry().iter().filter(|s| !s.chooses_rates()) {
        let across = stage.across_seeds() && runners.len() > 1;
        for (seed, runner) in seeds.iter().zip(&runners) {
            if let Some(artifact) = runner.done.get(stage.name()) {
                outputs.stages.push((stage.name().to_string(), *seed, artifact.dir.clone()));
            }
            if across {
                break;
            }
        }
    }
    Ok(outputs)
}
