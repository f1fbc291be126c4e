//! `stage2`: SLoRA's second stage, federated LoRA from the decompose artifact.
//!
//! The base is the corrected base of `lora_init.safetensors`, the factors start from its A and B, and
//! the head continues from stage 1's head; clients train and upload A, B and the head, which the
//! server averages. Rounds continue stage 1's numbering (round `stage1.rounds + k`, so client
//! sampling matches a baseline's round of the same number) and its cumulative upload bytes and wall
//! time. Outputs: `metrics.parquet` (method `slora-stage2`, its first row the evaluation right after
//! the switch) and the final adapter in peft's format in `adapter/`.
//!
//! The adapter sits on the *corrected* base (W0 + ΔW − s·BA for `svd`, the adapted `<module>.weight`
//! tensors of decompose's `lora_init.safetensors`), not on the pretrained W0: the truncation residual of
//! stage 1 lives in the base. The manifest names that file (`adapter_base`).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{json, Value};
use slora_federation::ClassifierLearner;
use slora_model::peft::{save_adapter, PeftAdapter};
use slora_model::{LoraFactors, LoraSpec, Mode};

use super::federated as fed;
use super::summaries::{DecomposeSummary, Stage1Summary, Stage2Summary, StageSummary, SwitchSummary};
use crate::config::Config;
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `stage2` stage.
pub struct Stage2;

/// The metrics `method` of this stage.
pub const METHOD: &str = "slora-stage2";
/// Folder of the final adapter in peft's format.
pub const ADAPTER_DIR: &str = "adapter";

impl Stage for Stage2 {
    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        inspect(artifact)
    }

    fn name(&self) -> &'static str {
        "stage2"
    }

    fn code_version(&self) -> u32 {
        2 // head parameter group, switch cost, full-test final evaluation, audit columns
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition", "stage1", "decompose"]
    }

    fn params(&self, cfg: &Config) -> Value {
        let mut p = fed::federated_params(cfg);
        p["stage2"] = json!(cfg.stage2);
        // lora_dropout moved to `[lora]`; keyed where it always was, so artifacts keep their keys.
        p["stage2"]["lora_dropout"] = json!(cfg.lora.lora_dropout);
        p
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let data = fed::load_data(ctx, ctx.input("partition")?)?;
        let base = super::base_model::load_base_model(cfg)?;

        // Stage 1's last metrics row: where round numbers, upload bytes and wall time continue from.
        let stage1 = ctx.input("stage1")?;
        let stage1_rows = slora_metrics::read_parquet(&stage1.file("metrics.parquet"))?;
        let last = stage1_rows.last().ok_or_else(|| ctx.error("stage1 metrics.parquet has no rows"))?;

        let decompose = ctx.input("decompose")?;
        let init = slora_federation::read_safetensors(&decompose.file(super::decompose::LORA_INIT_FILE))?;
        let (mut learner, rank) = learner_from_init(cfg, &base, &init, data.num_labels)?;
        let mut fedcfg = fed::fedavg_config(cfg, METHOD, cfg.stage2.rounds, 0, 0).continue_after(last);
        // The switch's cost. Every client needs the corrected base W0 + ΔW − s·B·A before it can
        // train LoRA. It already holds W0 and the mask (from the seed). With the sparse ΔW values
        // (nnz f32) it runs the same deterministic SVD as the server, so ΔW is what is sent, once,
        // to every client. The dense alternative (every adapted matrix) is recorded for comparison.
        let switch = switch_cost(&Stage1Summary::of(stage1)?);
        fedcfg.switch_bytes_per_client = switch.sparse_bytes;
        fedcfg.setup_server_seconds = DecomposeSummary::of(decompose)?.svd_seconds;
        let store = fed::checkpoint_store(ctx, &fedcfg.method)?;
        let outcome = fed::run_federated(ctx, &mut learner, &data, &fedcfg, &store, "stage2.lr")?;
        fed::publish_uploads(&store, out, &fedcfg.method)?;

        let model = learner.model();
        let adapter = PeftAdapter::from_classifier(model, Some(&cfg.model.source))?;
        save_adapter(&out.join(ADAPTER_DIR), &adapter)?;
        fed::write_metrics(out, &outcome.metrics)?;
        let summary = Stage2Summary {
            run: fed::run_summary(&outcome, model),
            method: METHOD.to_string(),
            rank,
            lora_alpha: cfg.lora.lora_alpha,
            round_offset: last.round,
            lr: cfg.stage2.lr.value(),
            head_lr: learner.head_learning_rate(),
            switch: SwitchSummary {
                charged_bytes_per_client: switch.sparse_bytes,
                charged: "the sparse ΔW values (nnz f32) sent once to every client, which re-runs the deterministic SVD".into(),
                dense_correction_bytes_per_client: switch.dense_bytes,
                clients: data.clients.len(),
            },
            adapter_base: decompose.file(super::decompose::LORA_INIT_FILE).display().to_string(),
        };
        Ok(summary.to_value())
    }
}

/// Stage 2's learner from the decomposition's tensors (`lora_init.safetensors`: factors, corrected
/// base, head), and its rank. The stage and a deployed client build it with this one function.
pub fn learner_from_init(
    cfg: &Config,
    base: &super::base_model::BaseModel,
    init: &BTreeMap<String, Tensor>,
    num_labels: usize,
) -> Result<(ClassifierLearner, usize), PipelineError> {
    let err = |m: String| PipelineError::stage("stage2", m);
    let mut weights = base.weights.clone();
    let mut factors: BTreeMap<String, LoraFactors> = BTreeMap::new();
    for (name, t) in init {
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            let b = init.get(&format!("{module}.lora_B.weight")).ok_or_else(|| err(format!("lora_init lacks `{module}.lora_B.weight`")))?;
            factors.insert(module.to_string(), LoraFactors { a: t.clone(), b: b.clone() });
        } else if !name.ends_with(".lora_B.weight") {
            weights.insert(name.clone(), t.clone()); // corrected base tensors and the stage-1 head
        }
    }
    let rank = factors.values().next().map(|f| f.a.dims()[0]).ok_or_else(|| err("lora_init holds no LoRA factors".into()))?;
    let lora = LoraSpec { r: rank, lora_alpha: cfg.lora.lora_alpha, dropout: cfg.lora.lora_dropout, init: factors, freeze_a: cfg.stage2.freeze_a };
    let spec = fed::train_spec(cfg, Mode::Lora(lora), num_labels);
    let (model, _) = fed::build_classifier("stage2", &base.config, &weights, &spec)?;
    Ok((ClassifierLearner::new(model, fed::optim_settings(cfg, cfg.stage2.lr.value())), rank))
}

/// What the switch costs one client, from Stage 1's summary.
pub struct SwitchCost {
    /// The sparse ΔW values: `nnz_total` f32.
    pub sparse_bytes: u64,
    /// The dense alternative: every adapted matrix's correction, `adapted_params` f32.
    pub dense_bytes: u64,
}

/// The switch's cost per client (see [`Stage2::run`]).
pub fn switch_cost(stage1: &Stage1Summary) -> SwitchCost {
    SwitchCost { sparse_bytes: 4 * stage1.nnz_total as u64, dense_bytes: 4 * stage1.adapted_params as u64 }
}

/// `pipeline inspect stage2`: the metrics table.
pub fn inspect(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    fed::inspect_metrics(artifact)
}
