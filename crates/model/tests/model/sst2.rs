//! Learning on real data: LoRA (r=8, alpha=16 on the six linears per layer, head dense) on
//! paraphrase-MiniLM-L3-v2 over a seeded 2,000-row sample of SST-2's train split reaches >= 80%
//! accuracy on its validation split (872 rows).
//!
//! The sample is drawn from train rows of at least 15 words: SST-2's train split is mostly short
//! phrases (mean 9.4 words) while validation holds full sentences (mean 19.5 words); on a sample of
//! phrases the model plateaus near 78%. max_len 64, batch 16 (length-bucketed), AdamW lr 1e-3 with
//! linear warm-up over half an epoch and linear decay over 4 epochs; stops at the first epoch
//! that reaches 80% (measured here: 77.2% after epoch 1, 80.5% after epoch 2 = 250 steps; epochs 3
//! and 4 would give 81.1% / 81.0%).
use std::fs::File;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slora_model::optim::{AdamW, AdamWConfig, LrSchedule};
use slora_model::{evaluate, Batch, Classifier, EncoderConfig, LoraSpec, Mode, TrainSpec, Weights};

use crate::common::{encode_rows, shared, tokenizer};

/// Shortest train row (in words) the sample draws from.
const MIN_WORDS: usize = 15;
/// Rows per training batch.
const BATCH: usize = 16;
/// Planned epochs (the schedule's length); training stops earlier once 80% is reached.
const MAX_EPOCHS: usize = 4;

/// `(text, label)` rows of one split.
fn read_split(split: &str) -> Result<Vec<(String, u32)>> {
    let path = shared().join("datasets/sst2.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).context("sst2.parquet")?)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| -> Result<std::sync::Arc<dyn Array>> {
            let c = batch.column_by_name(name).with_context(|| format!("column {name}"))?;
            Ok(arrow::compute::cast(c, &DataType::Utf8)?)
        };
        let (text, splits) = (col("text")?, col("split")?);
        let labels = arrow::compute::cast(batch.column_by_name("label").context("label")?, &DataType::Int64)?;
        let (text, splits, labels) = (text.as_string::<i32>(), splits.as_string::<i32>(), labels.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            if splits.value(i) == split {
                rows.push((text.value(i).to_string(), labels.value(i) as u32));
            }
        }
    }
    Ok(rows)
}

fn batches(tok: &tokenizers::Tokenizer, rows: &[(String, u32)], size: usize) -> Result<Vec<Batch>> {
    rows.chunks(size)
        .map(|chunk| {
            let texts: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
            let labels: Vec<u32> = chunk.iter().map(|(_, l)| *l).collect();
            Ok(Batch::collate(&encode_rows(tok, &texts)?, &labels, 0)?)
        })
        .collect()
}

/// Shuffles, then sorts each window of 8 batches by length (less padding), then shuffles batches.
fn length_bucketed_batches(tok: &tokenizers::Tokenizer, rows: &mut [(String, u32)], size: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Batch>> {
    rows.shuffle(rng);
    let texts: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
    let ids = encode_rows(tok, &texts)?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    for window in order.chunks_mut(size * 8) {
        window.sort_by_key(|&i| ids[i].len());
    }
    let mut out: Vec<Batch> = order
        .chunks(size)
        .map(|chunk| {
            let r: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let l: Vec<u32> = chunk.iter().map(|&i| rows[i].1).collect();
            Ok(Batch::collate(&r, &l, 0)?)
        })
        .collect::<Result<_>>()?;
    out.shuffle(rng);
    Ok(out)
}

#[test]
fn minilm_l3_adapter_learns_sst2() -> Result<()> {
    let dir = shared().join("models/paraphrase-MiniLM-L3-v2");
    let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&dir.join("model.safetensors"), &cfg)?;
    let tok = tokenizer(&dir, 64, false)?;

    let mut train = read_split("train")?;
    let validation = read_split("validation")?;
    assert_eq!(validation.len(), 872);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    train.retain(|(t, _)| t.split_whitespace().count() >= MIN_WORDS);
    train.shuffle(&mut rng);
    train.truncate(2000);
    assert_eq!(train.len(), 2000);
    let val_batches = batches(&tok, &validation, 64)?;

    let spec = TrainSpec::new(Mode::Lora(LoraSpec::new(8, 16.0)), 2, 0);
    let (model, _) = Classifier::new(&cfg, &weights, &spec)?;
    let before = evaluate(&model, &val_batches)?;
    let lr = 1e-3;
    let mut opt =
        AdamW::new(model.trainable_vars(), AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 })?;
    let steps_per_epoch = train.len().div_ceil(BATCH) as u64;
    let schedule =
        LrSchedule::LinearWarmupDecay { warmup_steps: steps_per_epoch / 2, total_steps: steps_per_epoch * MAX_EPOCHS as u64 };
    let started = Instant::now();
    let (mut steps, mut metrics) = (0u64, before);
    for epoch in 1..=MAX_EPOCHS {
        let mut train_loss = 0.0;
        for batch in length_bucketed_batches(&tok, &mut train, BATCH, &mut rng)? {
            opt.set_lr(schedule.lr(lr, steps));
            let (loss, _) = model.loss(&batch, Some(steps))?;
            train_loss += f64::from(loss.to_scalar::<f32>()?);
            opt.step(&loss.backward()?)?;
            steps += 1;
        }
        metrics = evaluate(&model, &val_batches)?;
        println!(
            "sst2 LoRA epoch {epoch}: {steps} steps, train loss {:.4}, validation accuracy {:.4} loss {:.4} ({} rows), {:.1}s",
            train_loss / steps_per_epoch as f64,
            metrics.accuracy,
            metrics.loss,
            metrics.rows,
            started.elapsed().as_secs_f64()
        );
        if metrics.accuracy >= 0.80 {
            break;
        }
    }
    println!("sst2 before training: accuracy {:.4}", before.accuracy);
    assert!(before.accuracy < 0.6, "an untrained head should be near chance");
    assert_eq!(metrics.rows, 872);
    assert!(metrics.accuracy >= 0.80, "validation accuracy {:.4} after {steps} steps", metrics.accuracy);
    Ok(())
}
