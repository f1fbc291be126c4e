//! `decompose`: SLoRA's switch from the sparse update to LoRA.
//!
//! Per adapted matrix, ΔW = scatter(stage-1 values at their indices) is factored by
//! `svd_init::lora_from_delta` into rank-`lora.r` factors with scaling s = lora_alpha / rank
//! (`svd`: B = U_r√(S_r/s), A = √(S_r/s)V_rᵀ, base W0 + ΔW − s·BA; `svd-b`: singular values in B, base
//! W0; `random`: kaiming A, zero B, base W0 + ΔW). Outputs:
//! - `lora_init.safetensors`: `<module>.lora_A.weight` `[r, in]`, `<module>.lora_B.weight` `[out, r]`,
//!   the new base `<module>.weight`, and the stage-1 head tensors;
//! - `spectrum.parquet`: module, index, singular value, cumulative energy up to that index, and the
//!   energy kept at rank r.
//!
//! The manifest records the largest logit change across the switch on a test batch (the sparse model
//! of stage 1 against the LoRA-initialised model); with `svd` it must be ≤ [`SWITCH_TOLERANCE`] times
//! max(1, the largest |logit| before the switch).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};
use slora_model::svd_init::{lora_from_delta, InitMode};
use slora_model::{derive_seed, Batch, LoraFactors, LoraSpec, Mode, SparseSpec};

use super::federated as fed;
use crate::config::{Config, DecomposeInit};
use super::summaries::{DecomposeSummary, ModuleSpectrum, StageSummary, SwitchCheck};
use crate::error::PipelineError;
use crate::stage::{Stage, StageCtx};

/// The `decompose` stage.
pub struct Decompose;

/// The output holding the LoRA factors, the corrected base tensors and the head.
pub const LORA_INIT_FILE: &str = "lora_init.safetensors";
/// Largest logit change allowed across the switch with `decompose.init = svd`, per unit of the
/// largest |logit| (at least 1). Relative because the check is of fp32 algebra: W0 + ΔW and
/// (W0 + ΔW − s·BA) + s·BA round apart by about ε_fp32·|ΔW|, so the logits do by ε times their size.
/// Under local DP the noisy Stage 1 drives logits into the hundreds and an absolute 1e-4 fails on
/// rounding alone (1.9e-3 on the privacy study's local ε=8 point).
pub const SWITCH_TOLERANCE: f64 = 1e-4;

/// One factored matrix.
struct Factored {
    module: String,
    singular_values: Vec<f32>,
    energy_kept: f64,
}

impl Stage for Decompose {
    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        inspect(artifact)
    }

    fn name(&self) -> &'static str {
        "decompose"
    }

    fn code_version(&self) -> u32 {
        2 // records svd_seconds (server time of the switch)
    }

    fn deps(&self) -> &'static [&'static str] {
        &["partition", "stage1"]
    }

    fn params(&self, cfg: &Config) -> Value {
        let (model, adapter) = super::base_model::model_and_adapter_params(cfg);
        json!({
            "seed": cfg.run.seed,
            "model": model,
            "adapter": adapter,
            // The old `[decompose]` shape (rank, lora_alpha, init), so artifacts keep their keys.
            "decompose": { "rank": cfg.lora.r, "lora_alpha": cfg.lora.lora_alpha, "init": cfg.decompose.init },
            "switch_check_rows": fed::SWITCH_CHECK_ROWS,
        })
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let stage = ctx.stage;
        let (d, l) = (&cfg.decompose, &cfg.lora);
        let base = super::base_model::load_base_model(cfg)?;
        let stage1 = ctx.input("stage1")?;
        let sparse = slora_federation::read_safetensors(&stage1.file(super::stage1::SPARSE_DELTA_FILE))?;
        let bar = ctx.progress(sparse.keys().filter(|k| k.ends_with(".indices")).count() as u64, "svd");
        let Decomposition { lora_init, factors, masks, values, factored, head, svd_seconds } = decompose(cfg, &base.weights, &sparse, || bar.inc(1))?;
        bar.finish_and_clear();
        let mut lora_weights = base.weights.clone();
        for (name, t) in &lora_init {
            if !name.ends_with(".lora_A.weight") && !name.ends_with(".lora_B.weight") && !head.contains_key(name) {
                lora_weights.insert(name.clone(), t.clone());
            }
        }

        // Switch check: stage 1's sparse model against the LoRA-initialised model on one test batch.
        let partition = ctx.input("partition")?;
        let data_labels = slora_data::LabelSet::read(&partition.file("labels.json"))?;
        let test = slora_data::read_shard(&partition.file("test.parquet"))?;
        let n = test.len().min(fed::SWITCH_CHECK_ROWS);
        if n == 0 {
            return Err(ctx.error("the test shard is empty: no batch for the switch check"));
        }
        let batch = Batch::collate(&test.input_ids[..n], &test.labels[..n], base.config.pad_token_id)?;
        let mut sparse_weights = base.weights.clone();
        for (k, v) in &head {
            sparse_weights.insert(k.clone(), v.clone());
            lora_weights.insert(k.clone(), v.clone());
        }
        // In fp32 whatever `optim.precision` says: the check is of the decomposition's algebra, and
        // bf16 would round the two forms' different weights differently (2.6e-4 on the CI config).
        let fp32 = |mut spec: slora_model::TrainSpec| {
            spec.precision = slora_model::Precision::Fp32;
            spec
        };
        let sparse_spec = fp32(fed::train_spec(cfg, Mode::Sparse(SparseSpec::from_masks(masks, values)), data_labels.num_labels));
        let (sparse_model, _) = fed::build_classifier(stage, &base.config, &sparse_weights, &sparse_spec)?;
        let lora_spec = LoraSpec { r: l.r, lora_alpha: l.lora_alpha, dropout: 0.0, init: factors, freeze_a: false };
        let lora_spec = fp32(fed::train_spec(cfg, Mode::Lora(lora_spec), data_labels.num_labels));
        let (lora_model, _) = fed::build_classifier(stage, &base.config, &lora_weights, &lora_spec)?;
        let before = sparse_model.predict(&batch)?;
        let after = lora_model.predict(&batch)?;
        let largest_abs = |t: Tensor| t.abs().and_then(|t| t.max_all()).and_then(|t| t.to_scalar::<f32>()).map(f64::from);
        let largest_logit = largest_abs(before.clone())?;
        let max_change = largest_abs((before - after)?)?;
        let tolerance = switch_tolerance(largest_logit);
        let passed = max_change <= tolerance;
        tracing::info!(
            "{stage}: largest logit change across the switch {max_change:.3e} on {n} test rows ({} init; largest |logit| {largest_logit:.3e})",
            d.init
        );
        if d.init == DecomposeInit::Svd && !passed {
            return Err(ctx.error(format!(
                "switch check failed: the largest logit change across the switch is {max_change:.3e} > {tolerance:.3e} \
                 ({SWITCH_TOLERANCE:e} × the largest |logit| {largest_logit:.3e}, at least 1)"
            )));
        }

        slora_federation::write_safetensors(&out.join(LORA_INIT_FILE), &lora_init)?;
        write_spectrum(&out.join("spectrum.parquet"), &factored, l.r)?;
        let energies: Vec<f64> = factored.iter().map(|f| f.energy_kept).collect();
        let modules = factored
            .iter()
            .map(|f| {
                let top = f.singular_values[..f.singular_values.len().min(l.r)].iter().map(|&s| f64::from(s)).collect();
                (f.module.clone(), ModuleSpectrum { energy_kept: f.energy_kept, top_singular_values: top })
            })
            .collect();
        let summary = DecomposeSummary {
            rank: l.r,
            lora_alpha: l.lora_alpha,
            scale: l.lora_alpha / l.r as f64,
            init: d.init.to_string(),
            matrices: factored.len(),
            svd_seconds,
            energy_kept_mean: energies.iter().sum::<f64>() / energies.len() as f64,
            energy_kept_min: energies.iter().cloned().fold(f64::INFINITY, f64::min),
            energy_kept_max: energies.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            modules,
            switch_check: SwitchCheck {
                max_abs_logit_change: max_change,
                max_abs_logit: Some(largest_logit),
                rows: n,
                tolerance,
                passed,
                enforced: d.init == DecomposeInit::Svd,
            },
        };
        Ok(summary.to_value())
    }
}

/// The switch check's bound for logits whose largest |value| is `largest_logit`.
pub fn switch_tolerance(largest_logit: f64) -> f64 {
    SWITCH_TOLERANCE * largest_logit.max(1.0)
}

/// SLoRA's switch as arithmetic: Stage 1's sparse update (`sparse`, as in `sparse_delta.safetensors`:
/// `<module>.indices`, `<module>.values` and the head) factored per matrix into LoRA's init. The
/// `decompose` stage and a deployed client (which re-runs it from the ΔW the server sent, see
/// `stage2`) call this one function, so both get the same bits.
pub struct Decomposition {
    /// `lora_init.safetensors`: the factors, the corrected base tensors and the head.
    pub lora_init: BTreeMap<String, Tensor>,
    /// The factors per module.
    pub factors: BTreeMap<String, LoraFactors>,
    /// Stage 1's mask per module.
    pub masks: BTreeMap<String, Arc<Vec<u32>>>,
    /// Stage 1's values per module.
    pub values: BTreeMap<String, Tensor>,
    /// The spectrum per module.
    factored: Vec<Factored>,
    /// The head tensors.
    pub head: BTreeMap<String, Tensor>,
    /// Seconds the SVDs took.
    pub svd_seconds: f64,
}

/// See [`Decomposition`]. `on_matrix` is called after each matrix (progress).
pub fn decompose(
    cfg: &Config,
    base_weights: &slora_model::Weights,
    sparse: &BTreeMap<String, Tensor>,
    on_matrix: impl Fn() + Sync,
) -> Result<Decomposition, PipelineError> {
    let err = |m: String| PipelineError::stage("decompose", m);
    let (d, l) = (&cfg.decompose, &cfg.lora);
    let modules: Vec<String> = sparse.keys().filter_map(|k| k.strip_suffix(".indices")).map(str::to_string).collect();
    let head: BTreeMap<String, Tensor> =
        sparse.iter().filter(|(k, _)| !k.ends_with(".indices") && !k.ends_with(".values")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let scale = l.lora_alpha / l.r as f64;

    let svd_clock = std::time::Instant::now();
    let mut lora_init: BTreeMap<String, Tensor> = head.clone();
    let mut factors: BTreeMap<String, LoraFactors> = BTreeMap::new();
    let mut masks = BTreeMap::new();
    let mut values = BTreeMap::new();
    let mut factored = Vec::new();
    // Each matrix's SVD runs on one thread (the factors then do not depend on the thread
    // count); the matrices run in parallel, in a fixed order of results.
    let inits: Vec<_> = modules
        .par_iter()
        .map(|module| {
            let w_name = format!("{module}.weight");
            let w0 = base_weights.get(&w_name).ok_or_else(|| err(format!("base model has no `{w_name}`")))?;
            let (rows, cols) = w0.dims2()?;
            let idx = sparse[&format!("{module}.indices")].to_vec1::<u32>()?;
            let vals_t = sparse
                .get(&format!("{module}.values"))
                .ok_or_else(|| err(format!("{} lacks `{module}.values`", super::stage1::SPARSE_DELTA_FILE)))?;
            let vals = vals_t.to_vec1::<f32>()?;
            if vals.len() != idx.len() {
                return Err(err(format!("`{module}.values` has {} entries for {} indices", vals.len(), idx.len())));
            }
            let mut delta = vec![0f32; rows * cols];
            for (&i, &v) in idx.iter().zip(&vals) {
                *delta.get_mut(i as usize).ok_or_else(|| err(format!("`{module}.indices` has {i} >= {rows}x{cols}")))? = v;
            }
            let mode = match d.init {
                DecomposeInit::Svd => InitMode::Svd,
                DecomposeInit::SvdB => InitMode::SvdB,
                DecomposeInit::Random => InitMode::Random { seed: derive_seed(cfg.run.seed, &format!("{module}.lora_A")) },
            };
            let init = lora_from_delta(&delta, rows, cols, l.r, scale, mode).map_err(|e| err(format!("{module}: {e}")))?;
            on_matrix();
            Ok((module, w_name, w0, rows, cols, idx, vals_t, init))
        })
        .collect::<Result<_, PipelineError>>()?;
    for (module, w_name, w0, rows, cols, idx, vals_t, init) in inits {
        let dev = Device::Cpu;
        let a = Tensor::from_vec(init.a, (l.r, cols), &dev)?;
        let b = Tensor::from_vec(init.b, (rows, l.r), &dev)?;
        let correction = Tensor::from_vec(init.base_correction, (rows, cols), &dev)?;
        let new_base = (w0 + correction)?;
        lora_init.insert(format!("{module}.lora_A.weight"), a.clone());
        lora_init.insert(format!("{module}.lora_B.weight"), b.clone());
        lora_init.insert(w_name, new_base);
        factors.insert(module.clone(), LoraFactors { a, b });
        masks.insert(module.clone(), Arc::new(idx));
        values.insert(module.clone(), vals_t.clone());
        factored.push(Factored { module: module.clone(), singular_values: init.singular_values, energy_kept: init.energy_kept });
    }
    if factored.is_empty() {
        return Err(err(format!("{} holds no sparse matrices", super::stage1::SPARSE_DELTA_FILE)));
    }
    Ok(Decomposition { lora_init, factors, masks, values, factored, head, svd_seconds: svd_clock.elapsed().as_secs_f64() })
}

/// Writes `spectrum.parquet`: one row per (module, singular value index).
fn write_spectrum(path: &Path, factored: &[Factored], rank: usize) -> Result<(), PipelineError> {
    let (mut module, mut index, mut sv, mut cum, mut kept, mut ranks) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for f in factored {
        let total: f64 = f.singular_values.iter().map(|&s| (s as f64).powi(2)).sum();
        let mut acc = 0.0;
        for (i, &s) in f.singular_values.iter().enumerate() {
            acc += (s as f64).powi(2);
            module.push(f.module.clone());
            index.push(i as u32);
            sv.push(s as f64);
            cum.push(if total > 0.0 { acc / total } else { 1.0 });
            kept.push(f.energy_kept);
            ranks.push(rank as u32);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("module", DataType::Utf8, false),
        Field::new("index", DataType::UInt32, false),
        Field::new("singular_value", DataType::Float64, false),
        Field::new("cumulative_energy", DataType::Float64, false),
        Field::new("energy_kept", DataType::Float64, false),
        Field::new("rank", DataType::UInt32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(module)),
        Arc::new(UInt32Array::from(index)),
        Arc::new(Float64Array::from(sv)),
        Arc::new(Float64Array::from(cum)),
        Arc::new(Float64Array::from(kept)),
        Arc::new(UInt32Array::from(ranks)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    slora_fsio::write_atomic_with::<PipelineError>(path, |file| {
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        writer.write(&batch)?;
        Ok(writer.into_inner()?)
    })
}

/// `pipeline inspect decompose`: rank, energy kept per matrix, the switch check.
pub fn inspect(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    let s = DecomposeSummary::of(artifact)?;
    let sc = &s.switch_check;
    let mut text = format!(
        "decompose {} at {}\n  rank {} | lora_alpha {} | init {} | {} matrices\n  energy kept at rank {}: mean {:.4}, min {:.4}, max {:.4}\n  switch check: max |Δlogit| = {:.3e} on {} rows (tolerance {:e}{}) -> {}\n",
        artifact.short_key(),
        artifact.dir.display(),
        s.rank,
        format!("{:?}", s.lora_alpha), // as the JSON number reads: 16.0
        s.init,
        s.matrices,
        s.rank,
        s.energy_kept_mean,
        s.energy_kept_min,
        s.energy_kept_max,
        sc.max_abs_logit_change,
        sc.rows,
        SWITCH_TOLERANCE,
        if sc.enforced { ", enforced" } else { ", not enforced for this init" },
        if sc.passed { "ok" } else { "exceeded" },
    );
    text.push_str(&format!("  {:<58} {:>8}  top singular values\n", "matrix", "energy"));
    for (name, v) in &s.modules {
        let top: Vec<String> = v.top_singular_values.iter().take(4).map(|x| format!("{x:.4}")).collect();
        text.push_str(&format!("  {name:<58} {:>8.4}  {}\n", v.energy_kept, top.join(" ")));
    }
    let value = json!({ "stage": "decompose", "key": artifact.key, "dir": artifact.dir, "summary": artifact.manifest.summary });
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::summaries::SwitchCheck;

    /// The bound is absolute for logits up to 1 and grows with their size beyond (the privacy
    /// study's local-DP logits reach 118, where rounding alone moves them by 1.9e-3).
    #[test]
    fn switch_tolerance_scales_with_the_logits() {
        assert_eq!(switch_tolerance(0.0), SWITCH_TOLERANCE);
        assert_eq!(switch_tolerance(0.5), SWITCH_TOLERANCE);
        assert!((switch_tolerance(117.7) - 1.177e-2).abs() < 1e-12);
        assert!(1.915e-3 <= switch_tolerance(117.7) && 1.915e-3 > switch_tolerance(1.0));
    }

    /// A manifest from before the scale was recorded reads without it and writes nothing for it.
    #[test]
    fn old_switch_checks_render_as_recorded() {
        let old = json!({ "max_abs_logit_change": 5.4e-7, "rows": 32, "tolerance": 1e-4, "passed": true, "enforced": true });
        let check: SwitchCheck = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(check.max_abs_logit, None);
        assert_eq!(serde_json::to_value(&check).unwrap(), old);
    }
}
