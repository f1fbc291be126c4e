//! The `Stage` trait (DVC's deps + params + outs) and the context a stage runs in.

use crate::config::Config;
use crate::error::PipelineError;
use crate::store::Artifact;
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One pipeline stage. Its key hashes `{stage, code_version, params, upstream keys}`; see
/// [`crate::hashing::stage_key`].
pub trait Stage {
    /// "partition", "stage1", …
    fn name(&self) -> &'static str;
    /// Bump when outputs change meaning.
    fn code_version(&self) -> u32;
    /// Upstream stage names.
    fn deps(&self) -> &'static [&'static str];
    /// Only the keys it reads (+ input file hashes, under keys ending in `sha256`).
    fn params(&self, cfg: &Config) -> serde_json::Value;
    /// Writes the outputs into `out` (a fresh temporary folder); the returned summary goes into the
    /// manifest.
    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<serde_json::Value, PipelineError>;
    /// Whether one artifact covers every replicate seed (the report), reading each seed's upstream
    /// artifacts ([`StageCtx::replicates`]), instead of one artifact per seed.
    fn across_seeds(&self) -> bool {
        false
    }
    /// Whether its key holds learning rates, so that a `"tuned"` rate must be resolved (tune must
    /// have run) before it can be planned. Partition and tune themselves are keyed without them.
    fn keyed_by_rates(&self) -> bool {
        true
    }
    /// Whether it chooses the `"tuned"` rates (tune): it then runs once, on the first replicate seed,
    /// before every stage keyed by rates, and only when it is asked for or a rate is `"tuned"`.
    fn chooses_rates(&self) -> bool {
        false
    }
    /// Puts a finished artifact where a reader looks for it (the report: `<report.dir>/<run.name>/`),
    /// after every run, cached or not. Returns that folder; `None` (the default) for a stage whose
    /// artifact is its only output.
    fn publish(&self, _cfg: &Config, _artifact: &Artifact) -> Result<Option<std::path::PathBuf>, PipelineError> {
        Ok(None)
    }
    /// `pipeline inspect` of one of its artifacts: the JSON view and the text view. Default: the
    /// manifest summary and the files.
    fn inspect(&self, artifact: &Artifact) -> Result<(serde_json::Value, String), PipelineError> {
        Ok(generic_inspect(artifact))
    }
}

/// The view of a stage without its own ([`Stage::inspect`]'s default; here, below the commands, so
/// that no stage module imports a command): the manifest summary and the files.
pub fn generic_inspect(a: &Artifact) -> (serde_json::Value, String) {
    let files: serde_json::Map<String, serde_json::Value> =
        a.manifest.files.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.bytes))).collect();
    let value = serde_json::json!({
        "stage": a.stage, "key": a.key, "dir": a.dir, "summary": a.manifest.summary, "files": files,
    });
    let mut text = format!("{} {} at {}\n", a.stage, a.short_key(), a.dir.display());
    text.push_str(&serde_json::to_string_pretty(&a.manifest.summary).unwrap_or_default());
    text.push('\n');
    for (name, rec) in &a.manifest.files {
        text.push_str(&format!("  {name} ({} bytes)\n", rec.bytes));
    }
    (value, text)
}

/// One replicate seed's upstream artifacts.
#[derive(Debug, Clone)]
pub struct Replicate {
    /// `run.seed` of the replicate.
    pub seed: u64,
    /// Upstream artifacts by stage name.
    pub inputs: BTreeMap<String, Artifact>,
}

/// What a running stage can see.
pub struct StageCtx<'a> {
    /// The validated config.
    pub config: &'a Config,
    /// `--no-rebuild`: corrupt inputs (e.g. a round checkpoint whose hash does not match its record)
    /// are errors, not skipped.
    pub no_rebuild: bool,
    /// This run's stage name.
    pub stage: &'static str,
    /// This run's key.
    pub key: String,
    /// Persistent resume folder `artifacts/<stage>/.work-<key>/` (exists; removed after the commit).
    /// Write checkpoints there with [`crate::fsutil::write_atomic`] or temp-name + rename.
    pub work_dir: PathBuf,
    /// Upstream artifacts by stage name (the first replicate's, for a stage across seeds).
    pub inputs: BTreeMap<String, Artifact>,
    /// Every replicate's upstream artifacts (one entry unless the stage runs across seeds).
    pub replicates: Vec<Replicate>,
    /// The tune artifact the config's `"tuned"` rates were resolved from, if any.
    pub tuning: Option<Artifact>,
}

impl StageCtx<'_> {
    /// The upstream artifact of `stage` (which must be in `deps()`).
    pub fn input(&self, stage: &str) -> Result<&Artifact, PipelineError> {
        self.inputs
            .get(stage)
            .ok_or_else(|| PipelineError::MissingInput { stage: self.stage.to_string(), dep: stage.to_string() })
    }

    /// A progress bar labelled `<stage> <what>`.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        crate::progress::progress_bar(len, format!("{} {what}", self.stage))
    }

    /// A [`PipelineError::Stage`] of this stage.
    pub fn error(&self, message: impl Into<String>) -> PipelineError {
        PipelineError::stage(self.stage, message)
    }
}
