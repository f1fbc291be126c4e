//! `pipeline status`: each stage up to date / stale (and why, against `pipeline.lock`) / missing,
//! like `dvc status`.

use crate::config::Config;
use crate::error::PipelineError;
use crate::planning::{lookup_stage, plan_stage};
use crate::stages::PLAN;
use crate::store::{flatten, Lookup, Store};
use serde::Serialize;

/// A stage's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// A verified artifact with the current key exists.
    UpToDate,
    /// It ran before, with other params/inputs/upstream, or its output is gone.
    Stale,
    /// It never ran here.
    Missing,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::UpToDate => "up to date",
            State::Stale => "stale",
            State::Missing => "missing",
        })
    }
}

/// One line of `pipeline status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// Stage name.
    pub stage: String,
    /// Its state.
    pub state: State,
    /// The key the current config gives it.
    pub key: Option<String>,
    /// Why it is stale or missing ("param changed: partition.alpha (0.1 -> 0.5)", …).
    pub reasons: Vec<String>,
}

/// The status of every planned stage.
pub fn status(cfg: &Config, store: &Store) -> Result<Vec<StageStatus>, PipelineError> {
    let lock = store.read_lock();
    let mut out = Vec::new();
    // `tune` is part of the plan only when a learning rate came from it, `audit` only when the runs
    // record what the server receives.
    for name in PLAN.iter().filter(|n| (**n != "tune" || !cfg.tuned_from.is_empty()) && (**n != "audit" || audits(cfg))) {
        out.push(stage_status(cfg, store, &lock, name)?);
    }
    Ok(out)
}

/// The status while a learning rate is `"tuned"` and `pipeline tune` has not run: partition and tune
/// as usual; every later stage is missing, since its key holds the rate tune will choose.
pub fn status_awaiting_tune(cfg: &Config, store: &Store, keys: &[&str]) -> Result<Vec<StageStatus>, PipelineError> {
    let lock = store.read_lock();
    let mut out = Vec::new();
    for name in PLAN.iter().filter(|n| **n != "audit" || audits(cfg)) {
        if !lookup_stage(name)?.keyed_by_rates() {
            out.push(stage_status(cfg, store, &lock, name)?);
        } else {
            let reason = format!("waits for `pipeline tune` ({} = \"tuned\")", keys.join(", "));
            out.push(StageStatus { stage: name.to_string(), state: State::Missing, key: None, reasons: vec![reason] });
        }
    }
    Ok(out)
}

/// Whether the config's runs record their uploads, so that `audit` is part of its plan.
fn audits(cfg: &Config) -> bool {
    cfg.federation.record_uploads > 0
}

fn stage_status(cfg: &Config, store: &Store, lock: &crate::store::PipelineLock, name: &str) -> Result<StageStatus, PipelineError> {
    let stage = lookup_stage(name)?;
    let plan = plan_stage(cfg, stage.as_ref())?;
    let found = store.check(name, &plan.key);
    let (state, reasons) = if let Lookup::Found(_) = found {
        (State::UpToDate, vec![])
    } else if let Some(entry) = lock.stages.get(name) {
        let mut reasons = Vec::new();
        if entry.key == plan.key {
            reasons.push(match &found {
                Lookup::Invalid(e) => format!("output corrupt or incomplete: {e}"),
                _ => "output missing".to_string(),
            });
        }
        if entry.code_version != plan.code_version {
            reasons.push(format!("code version changed ({} -> {})", entry.code_version, plan.code_version));
        }
        let (old, new) = (flatten(&entry.params), flatten(&plan.params));
        for (k, v) in &new {
            match old.get(k) {
                Some(o) if o == v => {}
                Some(_) if k.ends_with("sha256") => reasons.push(format!("input changed: {}", input_name(k))),
                Some(o) => reasons.push(format!("param changed: {k} ({o} -> {v})")),
                None => reasons.push(format!("param added: {k} = {v}")),
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            reasons.push(format!("param removed: {k}"));
        }
        for (dep, key) in &plan.upstream {
            if entry.upstream.get(dep) != Some(key) {
                reasons.push(format!("upstream changed: {dep}"));
            }
        }
        (State::Stale, reasons)
    } else {
        (State::Missing, vec!["never run".to_string()])
    };
    Ok(StageStatus { stage: name.to_string(), state, key: Some(plan.key), reasons })
}

/// `data.source_sha256` -> `data.source`.
fn input_name(key: &str) -> &str {
    key.strip_suffix("_sha256").or_else(|| key.strip_suffix(".sha256")).unwrap_or(key)
}

/// The human-readable table.
pub fn render(lines: &[StageStatus]) -> String {
    let mut s = String::new();
    for l in lines {
        let key = l.key.as_deref().map(|k| format!(" ({})", &k[..12])).unwrap_or_default();
        s.push_str(&format!("{:<10} {}{key}\n", l.stage, l.state));
        for r in &l.reasons {
            s.push_str(&format!("{:<10}   {r}\n", ""));
        }
    }
    s
}
