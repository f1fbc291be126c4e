//! Sparse mode: after several AdamW steps (weight decay on) every weight entry outside the mask is
//! bit-identical to the start, entries inside it moved, and only the masked values have state.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Result;
use slora_model::optim::{AdamW, AdamWConfig};
use slora_model::{Adapter, Classifier, Mode, SparseSpec, TrainSpec};

use crate::common::{fixture_batch, fixture_dir, fixture_model, Expected};

#[test]
fn sparse_steps_never_touch_entries_outside_the_mask() -> Result<()> {
    let name = "bert-tiny";
    let expected = Expected::load(&fixture_dir(name), "expected")?;
    let batch = fixture_batch(name, &expected)?;
    let (cfg, weights) = fixture_model(name)?;
    let spec = TrainSpec::new(Mode::Sparse(SparseSpec::new(0.02)), 5, 5);
    let (model, _) = Classifier::new(&cfg, &weights, &spec)?;
    let start = model.effective_weights()?;
    let vars = model.trainable_vars();
    let n_values: usize = vars.iter().filter(|(k, _)| k.ends_with(".sparse_delta")).map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(vars, AdamWConfig { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 })?;
    for step in 0..5u64 {
        let (loss, _) = model.loss(&batch, Some(step))?;
        opt.step(&loss.backward()?)?;
    }
    let end = model.effective_weights()?;

    let head: BTreeSet<&str> = ["bert.pooler.dense", "classifier"].into();
    let (mut changed_inside, mut inside) = (0usize, 0usize);
    for (tensor_name, before) in start.iter() {
        let module = tensor_name.rsplit_once('.').unwrap().0;
        if head.contains(module) {
            continue;
        }
        let a: Vec<u32> = before.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect();
        let b: Vec<u32> = end.get(tensor_name).unwrap().flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect();
        let mask: Arc<Vec<u32>> = match model.linear(module).map(|l| l.adapter()) {
            Some(Adapter::Sparse(s)) if tensor_name.ends_with(".weight") => s.indices.clone(),
            _ => Arc::new(Vec::new()),
        };
        let in_mask: BTreeSet<u32> = mask.iter().copied().collect();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if in_mask.contains(&(i as u32)) {
                inside += 1;
                changed_inside += usize::from(x != y);
            } else {
                assert_eq!(x, y, "{tensor_name}[{i}] outside the mask changed");
            }
        }
    }
    assert_eq!(inside, n_values);
    assert!(changed_inside * 10 >= inside * 9, "only {changed_inside} of {inside} masked entries moved");
    // Optimizer state exists only for trainable tensors: masked values + the head.
    let state_elems: usize = opt.state()?.values().map(|t| t.elem_count()).sum();
    let head_elems = 64 * 64 + 64 + 5 * 64 + 5;
    assert!(state_elems <= 2 * (n_values + head_elems) + 64, "optimizer state {state_elems} elements");
    println!("sparse: {inside} masked entries, {changed_inside} moved; everything else bit-identical");
    Ok(())
}

/// Stage-2 construction: LoRA from given factors on a replaced base (`W_eff - s B A`) computes the
/// same function as the sparse model it starts from; masks and values can be given explicitly too.
#[test]
fn lora_from_given_factors_and_corrected_base_continues_the_function() -> Result<()> {
    use slora_model::{LoraFactors, LoraSpec};
    let name = "bert-tiny";
    let expected = Expected::load(&fixture_dir(name), "expected")?;
    let batch = fixture_batch(name, &expected)?;
    let (cfg, weights) = fixture_model(name)?;

    // A sparse model with given masks and values for two modules, random masks elsewhere.
    let q = "bert.encoder.layer.0.attention.self.query";
    let o = "bert.encoder.layer.1.output.dense";
    let mut sparse = SparseSpec::new(0.05);
    sparse.masks.insert(q.into(), Arc::new((0..64u32 * 64).step_by(7).collect()));
    sparse.values.insert(q.into(), candle_core::Tensor::randn(0f32, 0.05, (64usize * 64).div_ceil(7), &candle_core::Device::Cpu)?);
    sparse.masks.insert(o.into(), Arc::new(vec![0, 5, 129, 8000]));
    let (stage1, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Sparse(sparse), 5, 1))?;
    let mut opt = AdamW::new(stage1.trainable_vars(), AdamWConfig { lr: 1e-2, ..Default::default() })?;
    opt.step(&stage1.loss(&batch, None)?.0.backward()?)?;
    let logits1 = stage1.predict(&batch)?;

    let mut base = stage1.effective_weights()?;
    let mut lora = LoraSpec::new(4, 8.0);
    for module in stage1.adapted_modules() {
        let l = stage1.linear(&module).unwrap();
        let (out, inp) = l.shape();
        let a = candle_core::Tensor::randn(0f32, 0.1, (4, inp), &candle_core::Device::Cpu)?;
        let b = candle_core::Tensor::randn(0f32, 0.1, (out, 4), &candle_core::Device::Cpu)?;
        let w = base.get(&format!("{module}.weight")).unwrap().clone();
        base.replace(&format!("{module}.weight"), (w - (b.matmul(&a)? * lora.scale())?)?)?;
        lora.init.insert(module, LoraFactors { a, b });
    }
    let (stage2, report) = Classifier::new(&cfg, &base, &TrainSpec::new(Mode::Lora(lora), 5, 1))?;
    assert!(report.initialised.is_empty());
    crate::common::assert_close("stage-2 logits", &stage2.predict(&batch)?, &logits1, 1e-5, 1e-4)?;

    // Factors for a module that is not adapted are an error naming it.
    let mut bad = LoraSpec::new(4, 8.0);
    let z = candle_core::Tensor::zeros((4, 64), candle_core::DType::F32, &candle_core::Device::Cpu)?;
    bad.init.insert("bert.pooler.dense".into(), LoraFactors { a: z.clone(), b: z.t()? });
    let err = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(bad), 5, 1)).unwrap_err();
    assert!(err.to_string().contains("bert.pooler.dense"), "{err}");
    Ok(())
}
