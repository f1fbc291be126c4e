//! `stage1`: SLoRA's first stage, federated sparse fine-tuning.
//!
//! Every adapted matrix gets a mask of `stage1.density`: with `stage1.mask = "random"` (the paper's
//! choice) drawn by the model crate from `sparse::mask_seed(run.seed, module)`, so the server only ever
//! sends a seed; with `"federated-importance"` chosen by the clients in a mask round before round 1
//! (`slora_federation::mask`: sampled clients score `|∂L/∂W ⊙ W|` on their data, upload their top-k
//! indices and scores, the server merges them and every client downloads the indices; those bytes
//! and client seconds are charged in the round-0 row). Clients train the masked entries and the dense
//! head and upload only those values. Outputs:
//! - `sparse_delta.safetensors`: per adapted module `<module>.indices` (u32 flat indices `row·in + col`,
//!   sorted) and `<module>.values` (f32, the aggregated update ΔW at those positions), plus the head's
//!   `weight`/`bias` tensors under their own names;
//! - `metrics.parquet` (method `slora-stage1`).
//!
//! Round checkpoints live in the stage's work folder while it runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use serde_json::{json, Value};
use slora_federation::mask::{coverage, overlap};
use slora_federation::{comm, ClassifierLearner, MaskRoundConfig, MaskRoundOutcome, MaskTarget, SetupCosts};
use slora_model::{Adapter, Classifier, Mode, SparseSpec};

use super::federated as fed;
use super::summaries::{MaskSummary, MatrixSummary, Stage1Summary, StageSummary};
use crate::config::{Config, StageOneMask};
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `stage1` stage.
pub struct Stage1;

/// The metrics `method` of this stage.
pub const METHOD: &str = "slora-stage1";
/// The output holding the sparse update and the head.
pub const SPARSE_DELTA_FILE: &str = "sparse_delta.safetensors";

impl Stage for Stage1 {
    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        inspect(artifact)
    }

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
        let base = super::base_model::load_base_model(cfg)?;
        let mut sparse = SparseSpec::new(cfg.stage1.density);
        let spec = fed::train_spec(cfg, Mode::Sparse(sparse.clone()), data.num_labels);
        let (mut model, mut init) = fed::build_classifier(stage, &base.config, &base.weights, &spec)?;
        let random_masks = masks_of(&model);
        let mut fedcfg = fed::fedavg_config(cfg, METHOD, cfg.stage1.rounds, 0, 0);
        // Stage 1's end is no result: Stage 2 (and the SFT baseline) go on from it.
        fedcfg.final_full_test = false;
        let mut mask_round = None;
        if cfg.stage1.mask == StageOneMask::FederatedImportance {
            let (outcome, wall) = run_mask_round(ctx, &base, &data, &model)?;
            sparse.masks = outcome.masks.iter().map(|(tensor, m)| (module_of(tensor).to_string(), Arc::new(m.clone()))).collect();
            let spec = fed::train_spec(cfg, Mode::Sparse(sparse), data.num_labels);
            (model, init) = fed::build_classifier(stage, &base.config, &base.weights, &spec)?;
            fedcfg.setup = SetupCosts {
                clients: outcome.clients.len() as u32,
                bytes_up_per_client: outcome.bytes_up_per_client,
                bytes_down_per_client: outcome.bytes_down_per_client,
                train_seconds: outcome.train_seconds,
            };
            fedcfg.setup_server_seconds = outcome.server_seconds;
            fedcfg.wall_seconds_start = wall;
            mask_round = Some(outcome);
        }
        let mut learner = ClassifierLearner::new(model, fed::optim_settings(cfg, cfg.stage1.lr.value()));
        let store = fed::checkpoint_store(ctx, &fedcfg.method)?;
        let outcome = fed::run_federated(ctx, &mut learner, &data, &fedcfg, &store, "stage1.lr")?;
        fed::publish_uploads(&store, out, &fedcfg.method)?;
        let model = learner.model();

        // The sparse update: indices from the model's masks, values from the final global state.
        let mut matrices: BTreeMap<String, MatrixSummary> = BTreeMap::new();
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
            let norm = values.sqr().and_then(|t| t.sum_all()).and_then(|t| t.to_scalar::<f32>())?.sqrt();
            let (rows_covered, cols_covered) = coverage(&sparse.indices, rows, cols);
            let mut entry = MatrixSummary {
                shape: vec![rows, cols],
                nnz,
                density: nnz as f64 / (rows * cols) as f64,
                delta_norm: f64::from(norm),
                rows_covered: Some(rows_covered),
                cols_covered: Some(cols_covered),
                ..Default::default()
            };
            if mask_round.is_some() {
                // How far the learned mask is from the seed's: shared entries (a random pair shares
                // about density x nnz) and the random mask's coverage for comparison.
                let random = &random_masks[module];
                let (r_rows, r_cols) = coverage(random, rows, cols);
                entry.overlap_with_random = Some(overlap(&sparse.indices, random) as f64 / nnz.max(1) as f64);
                entry.random_rows_covered = Some(r_rows);
                entry.random_cols_covered = Some(r_cols);
            }
            matrices.insert(module.to_string(), entry);
            nnz_total += nnz;
            entries_total += rows * cols;
        }
        if matrices.is_empty() {
            return Err(ctx.error("no module matches adapter.target_modules: nothing to train sparsely"));
        }
        let head_bytes = comm::state_bytes(&fed::head_tensors(&outcome.state));
        let tensors = sparse_update(model, &outcome.state)?;
        slora_federation::write_safetensors(&out.join(SPARSE_DELTA_FILE), &tensors)?;
        fed::write_metrics(out, &outcome.metrics)?;

        let mask = match &mask_round {
            None => MaskSummary::default(),
            Some(m) => MaskSummary {
                kind: StageOneMask::FederatedImportance.to_string(),
                clients: Some(m.clients.clone()),
                batches: Some(cfg.stage1.mask_batches),
                bytes_up_per_client: Some(m.bytes_up_per_client),
                largest_upload: Some(m.largest_upload),
                bytes_down_per_client: Some(m.bytes_down_per_client),
                train_seconds: Some(m.train_seconds),
                server_seconds: Some(m.server_seconds),
            },
        };
        let summary = Stage1Summary {
            run: fed::run_summary(&outcome, model),
            method: METHOD.to_string(),
            density: cfg.stage1.density,
            lr: cfg.stage1.lr.value(),
            head_lr: learner.head_learning_rate(),
            adapted_matrices: matrices.len(),
            adapted_params: entries_total,
            nnz_total,
            head_bytes,
            matrices,
            head_initialised: init.initialised.clone(),
            num_labels: data.num_labels,
            mask,
        };
        Ok(summary.to_value())
    }
}

/// Stage 1's sparse update as `sparse_delta.safetensors` holds it: per sparse-adapted module of
/// `model` its mask (`<module>.indices`) and `state`'s values there (`<module>.values`), plus the
/// head. The stage writes it; a deployed client rebuilds it from the ΔW values the server sent at the
/// switch and its own seeded masks, then decomposes it as the server does.
pub fn sparse_update(model: &Classifier, state: &slora_federation::State) -> Result<BTreeMap<String, Tensor>, PipelineError> {
    let mut tensors = fed::head_tensors(state);
    for linear in model.linears() {
        let Adapter::Sparse(sparse) = linear.adapter() else { continue };
        let module = linear.module();
        let values = state
            .get(&format!("{module}.sparse_delta"))
            .ok_or_else(|| PipelineError::stage("stage1", format!("the state lacks `{module}.sparse_delta`")))?;
        if values.elem_count() != sparse.indices.len() {
            return Err(PipelineError::stage("stage1", format!("`{module}.sparse_delta` has {} values for a mask of {}", values.elem_count(), sparse.indices.len())));
        }
        let indices = Tensor::from_slice(sparse.indices.as_slice(), sparse.indices.len(), &candle_core::Device::Cpu)?;
        tensors.insert(format!("{module}.indices"), indices);
        tensors.insert(format!("{module}.values"), values.clone());
    }
    Ok(tensors)
}

/// Each sparse-adapted module's mask.
fn masks_of(model: &Classifier) -> BTreeMap<String, Arc<Vec<u32>>> {
    model
        .linears()
        .iter()
        .filter_map(|l| match l.adapter() {
            Adapter::Sparse(s) => Some((l.module().to_string(), s.indices.clone())),
            _ => None,
        })
        .collect()
}

/// `….query.weight` → `….query`.
fn module_of(tensor: &str) -> &str {
    tensor.strip_suffix(".weight").unwrap_or(tensor)
}

/// The federated mask round: scores on a full-mode twin of the Stage-1 model (the same base and head
/// initialisation), one target per matrix `sparse_model` adapts, with its mask size. Returns the
/// outcome and the round's wall seconds.
fn run_mask_round(
    ctx: &StageCtx,
    base: &super::base_model::BaseModel,
    data: &fed::Data,
    sparse_model: &Classifier,
) -> Result<(MaskRoundOutcome, f64), PipelineError> {
    let cfg = ctx.config;
    let start = Instant::now();
    let targets: Vec<MaskTarget> = masks_of(sparse_model)
        .into_iter()
        .map(|(module, mask)| MaskTarget { tensor: format!("{module}.weight"), k: mask.len() })
        .collect();
    let spec = fed::train_spec(cfg, Mode::Full, data.num_labels);
    let (full, _) = fed::build_classifier(ctx.stage, &base.config, &base.weights, &spec)?;
    let mut learner = ClassifierLearner::new(full, fed::optim_settings(cfg, cfg.stage1.lr.value()));
    let round = MaskRoundConfig {
        seed: cfg.run.seed,
        clients_per_round: cfg.federation.clients_per_round,
        batches: cfg.stage1.mask_batches,
        batch_size: cfg.federation.batch_size,
        targets,
    };
    let outcome = slora_federation::mask_round(&mut learner, &data.clients, &round).map_err(|e| ctx.error(format!("mask round: {e}")))?;
    tracing::info!(
        "{METHOD} mask round: clients {:?} scored {} matrices, up {} B/client, mask down {} B/client, {:.1} s",
        outcome.clients,
        outcome.masks.len(),
        outcome.bytes_up_per_client,
        outcome.bytes_down_per_client,
        outcome.train_seconds
    );
    Ok((outcome, start.elapsed().as_secs_f64()))
}

/// The masks Stage 1 trained (its `<module>.indices` tensors), for methods that reuse them (SFT).
pub fn trained_masks(artifact: &crate::store::Artifact) -> Result<BTreeMap<String, Arc<Vec<u32>>>, PipelineError> {
    let saved = slora_federation::read_safetensors(&artifact.file(SPARSE_DELTA_FILE))?;
    saved
        .iter()
        .filter_map(|(k, t)| k.strip_suffix(".indices").map(|m| (m, t)))
        .map(|(m, t)| Ok((m.to_string(), Arc::new(t.to_vec1::<u32>()?))))
        .collect()
}

/// `pipeline inspect stage1`: density, nnz and delta norm per matrix, the mask, and the metrics table.
pub fn inspect(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    let s = Stage1Summary::of(artifact)?;
    let mut text = format!(
        "stage1 {} at {}\n  density {} | {} matrices, {} of {} entries trained | head {} B | up {} B/client/round\n",
        artifact.short_key(),
        artifact.dir.display(),
        s.density,
        s.adapted_matrices,
        s.nnz_total,
        s.adapted_params,
        s.head_bytes,
        s.run.bytes_up_per_client.map_or("?".to_string(), |b| b.to_string()),
    );
    let learned = s.mask.is_learned();
    if learned {
        let m = &s.mask;
        text.push_str(&format!(
            "  mask: federated-importance, chosen by clients {:?} on {} batches each | up {} B/client (largest matrix {} B) | mask down {} B/client | {:.1} client s\n",
            m.clients.clone().unwrap_or_default(),
            m.batches.unwrap_or(0),
            m.bytes_up_per_client.unwrap_or(0),
            m.largest_upload.unwrap_or(0),
            m.bytes_down_per_client.unwrap_or(0),
            m.train_seconds.unwrap_or(0.0)
        ));
        text.push_str(&format!(
            "  {:<58} {:>12} {:>8} {:>10} {:>9} {:>15} {:>15}\n",
            "matrix", "shape", "nnz", "|ΔW|", "∩ random", "rows (random)", "cols (random)"
        ));
    } else {
        text.push_str(&format!(
            "  mask: random (from the run seed)\n  {:<58} {:>12} {:>8} {:>10} {:>6} {:>6}\n",
            "matrix", "shape", "nnz", "|ΔW|", "rows", "cols"
        ));
    }
    let pct = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{:.1}%", v * 100.0));
    for (name, v) in &s.matrices {
        let shape = v.shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
        let (nnz, norm) = (v.nnz, v.delta_norm);
        if learned {
            let rows = format!("{} ({})", pct(v.rows_covered), pct(v.random_rows_covered));
            let cols = format!("{} ({})", pct(v.cols_covered), pct(v.random_cols_covered));
            text.push_str(&format!(
                "  {name:<58} {shape:>12} {nnz:>8} {norm:>10.5} {:>9} {rows:>15} {cols:>15}\n",
                pct(v.overlap_with_random)
            ));
        } else {
            text.push_str(&format!(
                "  {name:<58} {shape:>12} {nnz:>8} {norm:>10.5} {:>6} {:>6}\n",
                pct(v.rows_covered),
                pct(v.cols_covered)
            ));
        }
    }
    let rows = slora_metrics::read_parquet(&artifact.file("metrics.parquet"))?;
    text.push_str(&slora_metrics::format_table(&rows));
    let value = json!({ "stage": "stage1", "key": artifact.key, "dir": artifact.dir, "summary": artifact.manifest.summary, "metrics": slora_metrics::rows_json(&rows) });
    Ok((value, text))
}
