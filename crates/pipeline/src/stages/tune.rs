//! `tune`: a learning-rate grid per method (`tune.fft`, `tune.lora`, `tune.sft`), each point a
//! federated run of the method on the clients' training shards, scored on the validation rows carved
//! from those shards (`partition.validation_fraction`), never on the test set.
//!
//! A point's score is its mean validation accuracy over its last `tune.last_k` evaluated rounds; the
//! best score wins (ties: the smaller rate). A point that diverges scores nothing and is never
//! chosen. `lr = "tuned"` in `stage1.lr` (SFT's choice), `stage2.lr` (LoRA's) or `baselines.*_lr`
//! takes the choice (the runner resolves it before any other stage is keyed, so their keys hold the
//! number). Outputs: `metrics.parquet` (every point; method `tune-<method>-<lr>`, accuracy = validation
//! accuracy) and the summary with the grid, the scores and the choice. Each point keeps round
//! checkpoints, so a killed tune resumes inside the point it was in.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use slora_federation::{run_fedavg, FederationError};
use slora_metrics::RoundMetrics;

use super::federated as fed;
use super::summaries::{StageSummary, TunePoint, TuneSummary, TunedMethod};
use crate::config::{BaselineMethod, Config};
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `tune` stage.
pub struct Tune;

/// The methods tune knows, in order.
pub const METHODS: [BaselineMethod; 8] = [
    BaselineMethod::Fft,
    BaselineMethod::Lora,
    BaselineMethod::Sft,
    BaselineMethod::FfaLora,
    BaselineMethod::FedexLora,
    BaselineMethod::LoraA2,
    BaselineMethod::FlexLora,
    BaselineMethod::FedsaLora,
];

/// Rounds per grid point.
pub fn rounds(cfg: &Config) -> usize {
    if cfg.tune.rounds > 0 {
        cfg.tune.rounds
    } else {
        cfg.stage1.rounds + cfg.stage2.rounds
    }
}

/// The mean accuracy of the last `k` evaluated rounds after round 0 (`None` without any).
pub fn score(rows: &[RoundMetrics], k: usize) -> Option<f64> {
    let acc: Vec<f64> = rows.iter().filter(|r| r.round > 0).filter_map(|r| r.accuracy).collect();
    let tail = &acc[acc.len().saturating_sub(k)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}

/// The chosen rate of `method` in a tune summary.
pub fn chosen(summary: &TuneSummary, method: BaselineMethod) -> Option<f64> {
    summary.methods.get(&method.to_string()).map(|m| m.chosen)
}

impl Stage for Tune {
    fn keyed_by_rates(&self) -> bool {
        false
    }

    fn chooses_rates(&self) -> bool {
        true
    }

    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        inspect(artifact)
    }

    fn name(&self) -> &'static str {
        "tune"
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition"]
    }

    fn params(&self, cfg: &Config) -> Value {
        let mut p = fed::federated_params(cfg);
        p["tune"] = json!(cfg.tune);
        p["rounds"] = json!(rounds(cfg));
        p["stage1"] = json!({ "density": cfg.stage1.density });
        p["stage2"] = json!({ "lora_dropout": cfg.lora.lora_dropout });
        p["decompose"] = json!({ "rank": cfg.lora.r, "lora_alpha": cfg.lora.lora_alpha });
        p
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let stage = ctx.stage;
        let data = fed::load_data(ctx, ctx.input("partition")?)?;
        let Some(validation) = data.validation.clone() else {
            return Err(ctx.error(
                "partition.validation_fraction is 0: tune needs validation rows carved from the clients' training data (e.g. 0.1)",
            ));
        };
        let base = super::base_model::load_base_model(cfg)?;
        let rounds = rounds(cfg);
        let mut all_rows = Vec::new();
        let mut methods = BTreeMap::new();
        for method in METHODS {
            let grid = cfg.tune.grid(method);
            if grid.is_empty() {
                continue;
            }
            let mut points = Vec::new();
            let mut best: Option<(f64, f64)> = None;
            for &lr in grid {
                let spec = fed::train_spec(cfg, fed::baseline_mode(cfg, method), data.num_labels);
                let (model, _) = fed::build_classifier(stage, &base.config, &base.weights, &spec)?;
                let mut learner = fed::learner(cfg, method, model, lr);
                let name = format!("tune-{method}-{lr:e}");
                let fedcfg = fed::with_aggregation(fed::fedavg_config(cfg, &name, rounds, 0, 0), cfg, method);
                let store = fed::run_checkpoints(ctx, self.code_version(), &name, &run_params(cfg, method, lr), &["partition"])?;
                match run_fedavg(&mut learner, &data.clients, &validation, None, &fedcfg, Some(&store)) {
                    Ok(outcome) => {
                        let s = score(&outcome.metrics, cfg.tune.last_k);
                        let last = outcome.metrics.last().and_then(|m| m.accuracy);
                        tracing::info!("tune: {method} lr {lr:e}: validation score {:?}", s);
                        if let Some(s) = s {
                            if best.is_none_or(|(b, blr)| s > b || (s == b && lr < blr)) {
                                best = Some((s, lr));
                            }
                        }
                        points.push(TunePoint { lr, score: s, final_accuracy: last, diverged: false });
                        all_rows.extend(outcome.metrics);
                    }
                    Err(FederationError::NonFiniteLoss { round, .. }) => {
                        tracing::warn!("tune: {method} lr {lr:e} diverged in round {round}; not a candidate");
                        points.push(TunePoint { lr, score: None, final_accuracy: None, diverged: true });
                    }
                    Err(e) => return Err(ctx.error(format!("{name}: {e}"))),
                }
            }
            let Some((_, chosen)) = best else {
                return Err(ctx.error(format!("every rate of tune.{method} diverged: {grid:?}")));
            };
            methods.insert(method.to_string(), TunedMethod { points, chosen });
        }
        fed::write_metrics(out, &all_rows)?;
        Ok(TuneSummary { rounds, last_k: cfg.tune.last_k, seed: cfg.run.seed, validation_rows: validation.len(), methods }.to_value())
    }
}

/// What one grid point's run depends on: the stage's params with `[tune]` narrowed to this
/// method, rate and round budget (a grid that grows, or a scoring rule that changes, does not
/// re-key the runs already made).
pub(crate) fn run_params(cfg: &Config, method: BaselineMethod, lr: f64) -> Value {
    let mut p = Tune.params(cfg);
    p["tune"] = json!({ "method": method, "lr": lr, "rounds": cfg.tune.rounds });
    p
}

/// `pipeline inspect tune`: every grid point's validation score and the choice per method.
pub fn inspect(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    let s = TuneSummary::of(artifact)?;
    let mut text = format!(
        "tune {} at {}\n  {} rounds per point, score = mean validation accuracy of the last {} rounds, {} validation rows\n",
        artifact.short_key(),
        artifact.dir.display(),
        s.rounds,
        s.last_k,
        s.validation_rows
    );
    text.push_str(&format!("  {:<6} {:>10} {:>10} {:>10}\n", "method", "lr", "score", "final"));
    for (method, m) in &s.methods {
        for p in &m.points {
            let pct = |v: Option<f64>| v.map_or("diverged".to_string(), |x| format!("{:.2} %", 100.0 * x));
            text.push_str(&format!(
                "  {method:<6} {:>10e} {:>10} {:>10}{}\n",
                p.lr,
                pct(p.score),
                pct(p.final_accuracy),
                if m.chosen == p.lr { "  <- chosen" } else { "" }
            ));
        }
    }
    let value = json!({ "stage": "tune", "key": artifact.key, "dir": artifact.dir, "summary": artifact.manifest.summary });
    Ok((value, text))
}
