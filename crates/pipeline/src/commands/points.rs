//! The point loop a sweep and a study share: each point's stages run as `all` in one artifacts
//! folder, then the summary its report wrote is read back. A study is a sweep plus verdicts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use slora_report::Summary;

use crate::config::Config;
use crate::error::PipelineError;
use crate::planning::{lookup_stage, plan_stage};
use crate::runner::{run_stages_with, Force, RunOptions, RunOutputs};
use crate::stages::report::SUMMARY_FILE;
use crate::stages::ALL;

const AUDIT: &str = "audit";

/// Runs points one after another. Under `--force` every stage is rebuilt once: a stage whose key
/// an earlier point already rebuilt (points sharing a partition, or a run) is reused, not rebuilt
/// again.
#[derive(Debug)]
pub struct PointRunner {
    force: bool,
    no_rebuild: bool,
    /// (artifacts folder, stage, key) already rebuilt under `--force`.
    forced: HashSet<(PathBuf, &'static str, String)>,
}

impl PointRunner {
    /// A loop with the command's `--force` and `--no-rebuild`.
    pub fn new(force: bool, no_rebuild: bool) -> Self {
        Self { force, no_rebuild, forced: HashSet::new() }
    }

    /// Runs one point's stages (`all`) under `root` and returns what they left and the report's
    /// summary.
    pub fn run(&mut self, cfg: &Config, root: &Path) -> Result<(RunOutputs, Summary), PipelineError> {
        let force = if self.force {
            let mut stages = Vec::new();
            for &stage in ALL {
                let key = plan_stage(cfg, lookup_stage(stage)?.as_ref())?.key;
                if self.forced.insert((root.to_path_buf(), stage, key)) {
                    stages.push(stage.to_string());
                }
            }
            Force::Stages(stages)
        } else {
            Force::Nothing
        };
        let options = RunOptions { force, no_rebuild: self.no_rebuild };
        let outputs = run_stages_with(cfg, root, &options, ALL)?;
        let report = outputs.report_artifact.as_ref().ok_or_else(|| PipelineError::config("the point published no report"))?;
        let mut summary = Summary::read(&report.join(SUMMARY_FILE)).map_err(|e| PipelineError::config(e.to_string()))?;
        // A point whose runs record their uploads is audited too, and its leakage joins its summary.
        if cfg.federation.record_uploads > 0 {
            let audited = run_stages_with(cfg, root, &options, &[AUDIT])?;
            let dir = audited.stages.iter().find(|(s, _, _)| s == AUDIT).map(|(_, _, d)| d.clone()).ok_or_else(|| PipelineError::config("the point's audit left no artifact"))?;
            let path = dir.join(crate::stages::audit::AUDIT_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::stage(AUDIT, format!("{}: {e}", path.display())))?;
            let audit: crate::stages::audit::AuditSummary = serde_json::from_str(&text).map_err(|e| PipelineError::stage(AUDIT, format!("{}: {e}", path.display())))?;
            summary.leakage = audit.methods;
        }
        Ok((outputs, summary))
    }
}
