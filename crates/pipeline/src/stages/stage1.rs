//! `stage1`: SLoRA's first stage, federated sparse fine-tuning.
//!
//! Every adapted matrix gets a random mask of `stage1.density` (drawn by the model crate from
//! `sparse::mask_seed(run.seed, module)`, so the server only ever sends a seed); clients train the masked
//! entries and the dense head and upload only those values. Outputs:
//! - `sparse_delta.safetensors`: per adapted module `<module>.indices` (u32 flat indices `row·in + col`,
//!   sorted) and `<module>.values` (f32, the aggregated update ΔW at those positions), plus the head's
//!   `weight`/`bias` tensors under their own names;
//! - `metrics.parquet` (method `slora-stage1`).
//!
//! Round checkpoints live in the stage's work folder while it runs.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{json, Value};
use slora_federation::{comm, ClassifierLearner};
use slora_model::{Adapter, Mode, SparseSpec};

use super::federated::{self as fed, OrStage};
use crate::config::Config;
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `stage1` stage.
pub struct Stage1;

/// The metrics `method` of this stage.
pub const METHOD: &str = "slora-stage1";
/// The output holding the sparse update and the head.
pub const SPARSE_DELTA_FILE: &str = "sparse_delta.safetensors";

impl Stage for Stage1 {
    fn name(&self) -> &'static str {
        "stage1"
    }

    fn code_version(&self) -> u32 {
        3 // no full-test pass at its last round (nothing ranks it)
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition"]
    }

    fn params(&self, cfg: &Config) -> Value {
        let mut p = fed::federated_params(cfg);
        p["stage1"] = json!(cfg.stage1);
        p
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let stage = ctx.stage;
        let data = fed::load_data(ctx, ctx.input("partition")?)?;
        let base = fed::load_base_model(cfg, stage)?;
        let spec = fed::train_spec(cfg, Mode::Sparse(SparseSpec::new(cfg.stage1.density)), data.num_labels);
        let (model, init) = fed::build_classifier(stage, &base.config, &base.weights, &spec)?;
        let mut learner = ClassifierLearner::new(model, fed::optim_settings(cfg, cfg.stage1.lr.value()));
        let mut fedcfg = fed::fedavg_config(cfg, METHOD, cfg.stage1.rounds, 0, 0);
        // Stage 1's end is no result: Stage 2 (and the SFT baseline) go on from it.
        fedcfg.final_full_test = false;
        let outcome = fed::run_federated(ctx, &mut learner, &data, &fedcfg, "stage1.lr")?;
        let model = learner.model();

        // The sparse update: indices from the model's masks, values from the final global state.
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut matrices = serde_json::Map::new();
        let (mut nnz_total, mut entries_total) = (0usize, 0usize);
        for linear in model.linears() {
            let Adapter::Sparse(sparse) = linear.adapter() else { continue };
            let module = linear.module();
            let values = outcome
                .state
                .get(&format!("{module}.sparse_delta"))
                .ok_or_else(|| ctx.error(format!("final state lacks `{module}.sparse_delta`")))?;
            let (rows, cols) = linear.shape();
            let nnz = sparse.indices.len();
            let norm = values.sqr().and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>()).or_stage(stage)?.sqrt();
            matrices.insert(
                module.to_string(),
                json!({ "shape": [rows, cols], "nnz": nnz, "density": nnz as f64 / (rows * cols) as f64, "delta_norm": norm }),
            );
            nnz_total += nnz;
            entries_total += rows * cols;
            let indices = Tensor::from_slice(sparse.indices.as_slice(), nnz, &candle_core::Device::Cpu).or_stage(stage)?;
            tensors.insert(format!("{module}.indices"), indices);
            tensors.insert(format!("{module}.values"), values.clone());
        }
        if matrices.is_empty() {
            return Err(ctx.error("no module matches adapter.target_modules: nothing to train sparsely"));
        }
        let head = fed::head_tensors(&outcome.state);
        let head_bytes = comm::state_bytes(&head);
        tensors.extend(head);
        slora_federation::write_safetensors(&out.join(SPARSE_DELTA_FILE), &tensors).or_stage(stage)?;
        fed::write_metrics(out, &outcome.metrics, stage)?;

        let mut summary = fed::run_summary(&outcome, model);
        summary["method"] = json!(METHOD);
        summary["density"] = json!(cfg.stage1.density);
        summary["lr"] = json!(cfg.stage1.lr.value());
        summary["head_lr"] = json!(learner.head_learning_rate());
        summary["adapted_matrices"] = json!(matrices.len());
        summary["adapted_params"] = json!(entries_total);
        summary["nnz_total"] = json!(nnz_total);
        summary["head_bytes"] = json!(head_bytes);
        summary["matrices"] = Value::Object(matrices);
        summary["head_initialised"] = json!(init.initialised);
        summary["num_labels"] = json!(data.num_labels);
        Ok(summary)
    }
}

/// `pipeline inspect stage1`: density, nnz and delta norm per matrix, and the metrics table.
pub fn inspect(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    let s = &artifact.manifest.summary;
    let mut text = format!(
        "stage1 {} at {}\n  density {} | {} matrices, {} of {} entries trained | head {} B | up {} B/client/round\n",
        artifact.short_key(),
        artifact.dir.display(),
        s["density"],
        s["adapted_matrices"],
        s["nnz_total"],
        s["adapted_params"],
        s["head_bytes"],
        s["bytes_up_per_client"],
    );
    text.push_str(&format!("  {:<58} {:>12} {:>8} {:>10}\n", "matrix", "shape", "nnz", "|ΔW|"));
    if let Some(m) = s["matrices"].as_object() {
        for (name, v) in m {
            let shape = format!("{}x{}", v["shape"][0], v["shape"][1]);
            let norm = v["delta_norm"].as_f64().unwrap_or(f64::NAN);
            let nnz = v["nnz"].as_u64().unwrap_or(0);
            text.push_str(&format!("  {name:<58} {shape:>12} {nnz:>8} {norm:>10.5}\n"));
        }
    }
    let rows = slora_federation::metrics::read_parquet(&artifact.file("metrics.parquet")).or_stage("stage1")?;
    text.push_str(&slora_federation::metrics::format_table(&rows));
    let value = json!({ "stage": "stage1", "key": artifact.key, "dir": artifact.dir, "summary": s, "metrics": slora_federation::metrics::rows_json(&rows) });
    Ok((value, text))
}
