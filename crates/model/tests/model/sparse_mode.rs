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
