//! `baselines`: FFT, LoRA (random A, zero B) and SFT alone, each a federated run on the same shards,
//! client sampling and total round budget (`stage1.rounds + stage2.rounds`) as SLoRA.
//!
//! Methods run in `baselines.methods` order; each keeps its own round checkpoints
//! (`<work>/<method>/`), so a killed run resumes inside the method it was in and does not redo finished
//! ones. LoRA uses `[lora]` (`r`, `lora_alpha`, `lora_dropout`), as SLoRA's Stage 2 does; SFT uses
//! `stage1.density` (the same masks as stage 1); FFA-LoRA is that LoRA with A frozen (only B trains,
//! is uploaded and averaged). Outputs: one `metrics.parquet` with a `method` column and, when LoRA /
//! FFA-LoRA ran, its final adapter in peft's format in `lora-adapter/` / `ffa-lora-adapter/`.
//!
//! SFT's first `stage1.rounds` rounds are Stage 1 itself (same masks, client sampling, data order and
//! dropout seeds) when `baselines.sft_lr` equals `stage1.lr`. With `baselines.sft_from_stage1` (the
//! default) SFT then starts from Stage 1's final state and metrics, written as the round checkpoint
//! the engine resumes from, and only trains the remaining rounds: the same metrics, bit for bit.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use slora_metrics::RoundMetrics;
use slora_model::peft::{save_adapter, PeftAdapter};

use super::federated as fed;
use super::summaries::{BaselineRun, BaselinesSummary, MaskSummary, Stage1Summary, StageSummary};
use crate::config::{BaselineMethod, Config};
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `baselines` stage.
pub struct Baselines;

/// Folder of the LoRA baseline's final adapter.
pub const LORA_ADAPTER_DIR: &str = "lora-adapter";
/// Folder of the FFA-LoRA baseline's final adapter (peft's layout, frozen A included).
pub const FFA_LORA_ADAPTER_DIR: &str = "ffa-lora-adapter";
/// Folder of the LoRA-A² baseline's final adapter (an ordinary peft LoRA adapter).
pub const LORA_A2_ADAPTER_DIR: &str = "lora-a2-adapter";
/// Folder of the FlexLoRA baseline's final adapter (the last round's SVD factors).
pub const FLEXLORA_ADAPTER_DIR: &str = "flexlora-adapter";

/// Where a LoRA-mode baseline keeps its final adapter (`None` for FFT and SFT).
pub fn adapter_dir(method: BaselineMethod) -> Option<&'static str> {
    match method {
        BaselineMethod::Lora => Some(LORA_ADAPTER_DIR),
        BaselineMethod::FfaLora => Some(FFA_LORA_ADAPTER_DIR),
        // FedEx-LoRA's base moved (its residual offsets): no peft adapter holds its model.
        BaselineMethod::Fft | BaselineMethod::Sft | BaselineMethod::FedexLora => None,
        // FedSA-LoRA's B and head differ per client: no one adapter is its model.
        BaselineMethod::FedsaLora => None,
        BaselineMethod::LoraA2 => Some(LORA_A2_ADAPTER_DIR),
        BaselineMethod::FlexLora => Some(FLEXLORA_ADAPTER_DIR),
    }
}

impl Stage for Baselines {
    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        fed::inspect_metrics(artifact)
    }

    fn name(&self) -> &'static str {
        "baselines"
    }

    fn code_version(&self) -> u32 {
        2 // head parameter group, full-test final evaluation, audit columns
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition", "stage1"]
    }

    fn params(&self, cfg: &Config) -> Value {
        let mut p = fed::federated_params(cfg);
        p["rounds"] = json!(cfg.stage1.rounds + cfg.stage2.rounds);
        p["stage1"] = json!({ "density": cfg.stage1.density });
        if !cfg.stage1.mask.is_random() {
            // SFT trains Stage 1's learned mask (read from the stage1 artifact).
            p["stage1"]["mask"] = json!(cfg.stage1.mask);
            p["stage1"]["mask_batches"] = json!(cfg.stage1.mask_batches);
        }
        p["stage2"] = json!({ "lora_dropout": cfg.lora.lora_dropout });
        p["decompose"] = json!({ "rank": cfg.lora.r, "lora_alpha": cfg.lora.lora_alpha });
        p["baselines"] = json!(cfg.baselines);
        p
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let stage = ctx.stage;
        if cfg.baselines.methods.is_empty() {
            return Err(ctx.error("baselines.methods is empty: nothing to run"));
        }
        let data = fed::load_data(ctx, ctx.input("partition")?)?;
        let base = super::base_model::load_base_model(cfg)?;
        let rounds = cfg.stage1.rounds + cfg.stage2.rounds;
        let mut all_rows: Vec<RoundMetrics> = Vec::new();
        let mut methods = BTreeMap::new();
        for method in &cfg.baselines.methods {
            let b = &cfg.baselines;
            let lr = b.lr(*method).value();
            let name = method.to_string();
            let mut mode = fed::baseline_mode(cfg, *method);
            let mut fedcfg = fed::with_aggregation(fed::fedavg_config(cfg, &name, rounds, 0, 0), cfg, *method);
            if let (slora_model::Mode::Sparse(sparse), false) = (&mut mode, cfg.stage1.mask.is_random()) {
                // The federation's learned mask, and what choosing it cost (charged to SFT as to SLoRA).
                let stage1 = ctx.input("stage1")?;
                sparse.masks = super::stage1::trained_masks(stage1)?;
                fedcfg = with_mask_round_costs(fedcfg, &Stage1Summary::of(stage1)?.mask);
            }
            let spec = fed::train_spec(cfg, mode, data.num_labels);
            let (model, _) = fed::build_classifier(stage, &base.config, &base.weights, &spec)?;
            let mut learner = fed::learner(cfg, *method, model, lr);
            let continued = *method == BaselineMethod::Sft && continues_stage1(cfg);
            let store = fed::run_checkpoints(ctx, self.code_version(), &name, &run_params(cfg, *method), run_upstream(*method))?;
            if continued {
                seed_from_stage1(ctx, &store, &name)?;
            }
            let lr_key = format!("baselines.{}_lr", name.replace('-', "_"));
            let (outcome, personal) = match method {
                BaselineMethod::FedsaLora => {
                    fed::run_federated_personal(ctx, &mut learner, &data, &fedcfg, &store, &lr_key)?
                }
                _ => (fed::run_federated(ctx, &mut learner, &data, &fedcfg, &store, &lr_key)?, None),
            };
            fed::publish_uploads(&store, out, &name)?;
            if let Some(dir) = adapter_dir(*method) {
                let adapter = PeftAdapter::from_classifier(learner.model(), Some(&cfg.model.source))?;
                save_adapter(&out.join(dir), &adapter)?;
            }
            let summary = BaselineRun {
                run: fed::run_summary(&outcome, learner.model()),
                lr,
                head_lr: learner.head_learning_rate(),
                continued_from_stage1: continued,
                personal,
            };
            methods.insert(name, summary);
            all_rows.extend(outcome.metrics);
        }
        fed::write_metrics(out, &all_rows)?;
        Ok(BaselinesSummary { rounds, methods }.to_value())
    }
}

/// What one method's run depends on: the stage's params with `[baselines]` narrowed to this
/// method (its rate; SFT's continuation switch), so another method joining the list, or another
/// method's rate changing, does not re-key it.
pub(crate) fn run_params(cfg: &Config, method: BaselineMethod) -> Value {
    let mut p = Baselines.params(cfg);
    p["baselines"] = json!({ "method": method, "lr": cfg.baselines.lr(method) });
    if method == BaselineMethod::Sft {
        p["baselines"]["sft_from_stage1"] = json!(cfg.baselines.sft_from_stage1);
    }
    if matches!(method, BaselineMethod::Fft | BaselineMethod::Sft) {
        // No rank: the client ranks do not touch FFT or SFT.
        if let Some(t) = p["federation"].as_object_mut() {
            t.remove("client_ranks");
        }
    }
    if method == BaselineMethod::Fft {
        // FFT trains every weight at one rate: the head and LoRA switches do not touch it.
        for (table, key) in [("adapter", "freeze_head"), ("optim", "lora_b_lr_ratio")] {
            if let Some(t) = p[table].as_object_mut() {
                t.remove(key);
            }
        }
    }
    p
}

/// The upstream stages one method's run reads: SFT reads Stage 1 (its continuation, a learned
/// mask); the others only the partition.
pub(crate) fn run_upstream(method: BaselineMethod) -> &'static [&'static str] {
    match method {
        BaselineMethod::Sft => &["partition", "stage1"],
        _ => &["partition"],
    }
}

/// `fedcfg` charged with Stage 1's mask round.
fn with_mask_round_costs(mut fedcfg: slora_federation::FedAvgConfig, mask: &MaskSummary) -> slora_federation::FedAvgConfig {
    fedcfg.setup = slora_federation::SetupCosts {
        clients: mask.clients.as_ref().map_or(0, |c| c.len() as u32),
        bytes_up_per_client: mask.bytes_up_per_client.unwrap_or(0),
        bytes_down_per_client: mask.bytes_down_per_client.unwrap_or(0),
        train_seconds: mask.train_seconds.unwrap_or(0.0),
    };
    fedcfg.setup_server_seconds = mask.server_seconds.unwrap_or(0.0);
    fedcfg
}

/// Whether SFT's first rounds are Stage 1's (the same rate) and may be taken from it.
pub(crate) fn continues_stage1(cfg: &Config) -> bool {
    cfg.baselines.sft_from_stage1 && cfg.baselines.sft_lr.value() == cfg.stage1.lr.value()
}

/// Writes Stage 1's final state and metrics (relabelled `method`) as the round checkpoint of
/// `stage1.rounds` completed rounds, unless the method already has a checkpoint (a resumed run).
fn seed_from_stage1(ctx: &StageCtx, store: &slora_federation::CheckpointStore, method: &str) -> Result<(), PipelineError> {
    let stage = ctx.stage;
    if store.latest()?.is_some() {
        return Ok(());
    }
    let stage1 = ctx.input("stage1")?;
    let saved = slora_federation::read_safetensors(&stage1.file(super::stage1::SPARSE_DELTA_FILE))?;
    let state: slora_federation::State = saved
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".indices"))
        .map(|(k, v)| match k.strip_suffix(".values") {
            Some(module) => (format!("{module}.sparse_delta"), v),
            None => (k, v),
        })
        .collect();
    let mut rows = slora_metrics::read_parquet(&stage1.file("metrics.parquet"))?;
    for r in &mut rows {
        r.method = method.to_string();
        // Only a run's own last round carries full-test figures (Stage 1 records none).
        (r.full_test_accuracy, r.full_test_loss, r.full_test_rows) = (None, None, 0);
    }
    let last = rows.last().ok_or_else(|| ctx.error("stage1 metrics.parquet has no rows"))?;
    tracing::info!("{stage}: {method} continues Stage 1 after round {} (same masks, sampling and seeds)", last.round);
    Ok(store.save(last.round, &state, &rows, last.wall_seconds)?)
}

