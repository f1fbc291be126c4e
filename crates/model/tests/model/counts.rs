//! Trainable parameter counts per mode for all-MiniLM-L6-v2 with a 20-label head, checked against
//! the closed-form counts.

use anyhow::Result;
use slora_model::{Classifier, EncoderConfig, LoraSpec, Mode, SparseSpec, TrainSpec, Weights};

use crate::common::shared;

#[test]
fn minilm_l6_trainable_parameter_counts() -> Result<()> {
    let dir = shared().join("models/all-MiniLM-L6-v2");
    let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&dir.join("model.safetensors"), &cfg)?;
    let (h, i, layers, labels) = (384usize, 1536usize, 6usize, 20usize);
    let head = (h * h + h) + (labels * h + labels);
    let count = |mode: Mode| -> Result<usize> {
        Ok(Classifier::new(&cfg, &weights, &TrainSpec::new(mode, labels, 0))?.0.num_trainable_params())
    };
    let full = count(Mode::Full)?;
    let embeddings = (30522 + 512 + 2) * h + 2 * h;
    let per_layer = 4 * (h * h + h) + (i * h + i) + (h * i + h) + 4 * h;
    assert_eq!(full, embeddings + layers * per_layer + head);

    let lora = count(Mode::Lora(LoraSpec::new(8, 16.0)))?;
    assert_eq!(lora, layers * (4 * 8 * (h + h) + 8 * (h + i) + 8 * (i + h)) + head);

    let sparse = count(Mode::Sparse(SparseSpec::new(0.01)))?;
    let r = |n: usize| ((n as f64) * 0.01).round() as usize;
    assert_eq!(sparse, layers * (4 * r(h * h) + 2 * r(h * i)) + head);

    let frozen = count(Mode::Frozen)?;
    assert_eq!(frozen, head);
    println!("all-MiniLM-L6-v2, 20 labels: full {full}, LoRA r=8 (6 linears/layer) {lora}, sparse 1% {sparse}, head only {frozen}");
    Ok(())
}
