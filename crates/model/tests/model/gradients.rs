//! Every trainable parameter receives a nonzero gradient in every mode (full, LoRA, sparse,
//! frozen-head) and architecture, in fp32 and (where the CPU has a bf16 kernel) in bf16, where
//! frozen weights are held in bf16 and LoRA's update runs beside the base instead of inside it. This is what catches an op without backward (candle-nn's fused
//! LayerNorm / softmax silently stop the gradient).

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use candle_core::Tensor;
use slora_model::{Batch, Classifier, EncoderConfig, LoraSpec, Mode, Precision, SparseSpec, TrainSpec, Weights};

use crate::common::{fixture_batch, fixture_dir, fixture_model, Expected};

fn modes() -> Vec<(&'static str, Mode)> {
    vec![
        ("full", Mode::Full),
        ("lora", Mode::Lora(LoraSpec::new(4, 8.0))),
        ("ffa-lora", Mode::Lora(LoraSpec { freeze_a: true, ..LoraSpec::new(4, 8.0) })),
        ("sparse", Mode::Sparse(SparseSpec::new(0.05))),
        ("frozen", Mode::Frozen),
    ]
}

fn check_all_grads(name: &str) -> Result<()> {
    let expected = Expected::load(&fixture_dir(name), "expected")?;
    let batch = fixture_batch(name, &expected)?;
    let (cfg, weights) = fixture_model(name)?;
    check_grads_on(name, &cfg, &weights, &batch, 5)
}

/// Every mode and precision on one model and batch: each trainable variable gets a nonzero gradient.
fn check_grads_on(name: &str, cfg: &EncoderConfig, weights: &Weights, batch: &Batch, num_labels: usize) -> Result<()> {
    let mut precisions = vec![Precision::Fp32];
    if slora_model::ops::bf16::kernel() != slora_model::ops::bf16::Bf16Kernel::None {
        precisions.push(Precision::Bf16);
    }
    for (mode_name, mode, precision) in precisions.iter().flat_map(|&p| modes().into_iter().map(move |(n, m)| (n, m, p))) {
        let mut spec = TrainSpec::new(mode, num_labels, 3);
        spec.precision = precision;
        let (model, _) = Classifier::new(cfg, weights, &spec)?;
        if mode_name == "lora" || mode_name == "ffa-lora" {
            // peft starts B at zero, which makes A's gradient exactly zero: give B values first.
            let mut state = model.trainable_state()?;
            for (k, t) in state.iter_mut() {
                if k.ends_with("lora_B.weight") {
                    *t = (Tensor::randn(0f32, 0.02, t.dims(), t.device())?).to_dtype(t.dtype())?;
                }
            }
            model.set_trainable_state(&state)?;
        }
        let vars = model.trainable_vars();
        let expect_count = match mode_name {
            "full" => weights_count(&model)?,
            _ => vars.len(),
        };
        assert_eq!(vars.len(), expect_count, "{name}/{mode_name}: every parameter trains in full mode");
        let (loss, _) = model.loss(batch, Some(11))?;
        let grads = loss.backward()?;
        let mut zero = Vec::new();
        for (var_name, var) in &vars {
            let g = grads.get(var).ok_or_else(|| anyhow!("{name}/{mode_name}: `{var_name}` got no gradient"))?;
            if g.abs()?.sum_all()?.to_scalar::<f32>()? == 0.0 {
                zero.push(var_name.clone());
            }
        }
        assert!(zero.is_empty(), "{name}/{mode_name}: zero gradient for {zero:?}");
        let kinds: BTreeMap<&str, usize> = vars.iter().fold(BTreeMap::new(), |mut m, (k, _)| {
            let kind = if k.ends_with(".lora_A.weight") || k.ends_with(".lora_B.weight") {
                "lora"
            } else if k.ends_with(".sparse_delta") {
                "sparse"
            } else {
                "dense"
            };
            *m.entry(kind).or_default() += 1;
            m
        });
        println!("{name}/{mode_name}: {} trainable tensors {kinds:?}, all with nonzero gradients", vars.len());
        match mode_name {
            "lora" => assert!(kinds["lora"] > 0 && kinds["dense"] == 4),
            // FFA-LoRA: B only (A is frozen), one per adapted linear.
            "ffa-lora" => {
                assert!(kinds["lora"] > 0 && kinds["dense"] == 4);
                assert!(vars.iter().all(|(k, _)| !k.ends_with(".lora_A.weight")));
            }
            "sparse" => assert!(kinds["sparse"] > 0 && kinds["dense"] == 4),
            "frozen" => assert_eq!(vars.len(), 4),
            _ => {}
        }
    }
    Ok(())
}

/// Every weight of the model (encoder + head).
fn weights_count(model: &Classifier) -> Result<usize> {
    Ok(model.effective_weights()?.len())
}

#[test]
fn every_trainable_parameter_gets_a_gradient_bert() -> Result<()> {
    check_all_grads("bert-tiny")
}

#[test]
fn every_trainable_parameter_gets_a_gradient_distilbert() -> Result<()> {
    check_all_grads("distilbert-tiny")
}

#[test]
fn every_trainable_parameter_gets_a_gradient_albert() -> Result<()> {
    check_all_grads("albert-tiny")
}

/// RoBERTa's head (`classifier.dense`, `classifier.out_proj`) is the 4 dense tensors of the
/// adapter modes; its positions (from `pad_token_id + 1`) reach the position table's gradient.
#[test]
fn every_trainable_parameter_gets_a_gradient_roberta() -> Result<()> {
    use crate::roberta;
    let expected = roberta::expected()?;
    let batch = roberta::fixture_batch(&expected)?;
    let (cfg, weights) = roberta::fixture_model()?;
    check_grads_on("roberta-tiny", &cfg, &weights, &batch, roberta::NUM_LABELS)
}
