//! RoBERTa (issue 27 item 5) against transformers on tests/fixtures/roberta-tiny, made by
//! scripts/make_roberta_fixture.py (torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3): a random
//! `RobertaForSequenceClassification` (H=32, 2 layers, 4 heads, FFN 64, 64 positions, one token
//! type, 3 labels) with a byte-level BPE `tokenizer.json` (320 ids, `<s>` 0, `<pad>` 1, `</s>` 2).
//!
//! Checked: tokenisation (the `tokenizers` crate, also with slora-data's loader settings, gives
//! transformers' ids),
//! position ids (`pad_token_id + 1` onwards, pads at `pad_token_id`), hidden states, head input,
//! logits, loss and gradients in full mode, and LoRA on BERT's target names with the head in
//! `modules_to_save`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use slora_model::{
    block_linears, head_modules, position_ids_from_input_ids, Batch, Classifier, EncoderConfig, LoraFactors, LoraSpec,
    Mode, ModelType, TrainSpec, Weights,
};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::common::Expected;

/// Rows of the fixture's classifier.
pub const NUM_LABELS: usize = 3;
/// The fixture's truncation length (the third sentence is cut to it).
const MAX_LEN: usize = 40;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/roberta-tiny")
}

pub fn expected() -> Result<Expected> {
    Expected::load(&fixture_dir(), "expected")
}

pub fn fixture_model() -> Result<(EncoderConfig, Weights)> {
    let dir = fixture_dir();
    let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&dir.join("model.safetensors"), &cfg)?;
    Ok((cfg, weights))
}

/// The stored, padded batch (transformers' tokenisation), with the fixture's labels.
pub fn fixture_batch(expected: &Expected) -> Result<Batch> {
    Ok(Batch::from_parts(
        expected.get("input_ids")?.clone(),
        expected.get("attention_mask")?.clone(),
        expected.get("token_type_ids")?.clone(),
        &expected.labels()?,
    )?)
}

fn stored_u32(expected: &Expected, key: &str) -> Result<Vec<Vec<u32>>> {
    Ok(expected.get(key)?.to_dtype(DType::U32)?.to_vec2::<u32>()?)
}

/// The unpadded token ids of each stored row.
fn stored_rows(expected: &Expected) -> Result<Vec<Vec<u32>>> {
    let ids = stored_u32(expected, "input_ids")?;
    let mask = stored_u32(expected, "attention_mask")?;
    Ok(ids.iter().zip(&mask).map(|(r, m)| r[..m.iter().filter(|&&x| x == 1).count()].to_vec()).collect())
}

#[test]
fn config_reads_as_roberta() -> Result<()> {
    let (cfg, weights) = fixture_model()?;
    assert_eq!(cfg.model_type, ModelType::Roberta);
    assert_eq!((cfg.pad_token_id, cfg.type_vocab_size, cfg.layer_norm_eps), (1, 1, 1e-5));
    assert_eq!((cfg.first_position(), cfg.max_sequence_length()), (2, 62));
    assert_eq!(cfg.model_type.architecture(), "RobertaForSequenceClassification");
    // Encoder and head all loaded: 5 embedding tensors, 16 per layer, 4 in the head.
    assert_eq!(weights.len(), 5 + 16 * 2 + 4);
    assert!(weights.names().all(|n| n.starts_with("roberta.") || n.starts_with("classifier.")));
    assert_eq!(head_modules(ModelType::Roberta), ["classifier.dense", "classifier.out_proj"]);
    Ok(())
}

#[test]
fn tokenizer_json_gives_transformers_ids() -> Result<()> {
    let expected = expected()?;
    let sentences = expected.sentences();
    let path = fixture_dir().join("tokenizer.json");
    // The tokenizers crate with transformers' call: truncation 40, padded to the longest with <pad> = 1.
    let mut tok = Tokenizer::from_file(&path).map_err(|e| anyhow!("{e}"))?;
    tok.with_truncation(Some(TruncationParams { max_length: MAX_LEN, ..Default::default() })).map_err(|e| anyhow!("{e}"))?;
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id: 1,
        pad_token: "<pad>".into(),
        ..Default::default()
    }));
    let enc = tok.encode_batch(sentences.clone(), true).map_err(|e| anyhow!("{e}"))?;
    let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
    let mask: Vec<Vec<u32>> = enc.iter().map(|e| e.get_attention_mask().to_vec()).collect();
    assert_eq!(ids, stored_u32(&expected, "input_ids")?);
    assert_eq!(mask, stored_u32(&expected, "attention_mask")?);
    assert!(ids.iter().all(|r| r[0] == 0), "every row starts with <s>");

    // The pipeline's path: slora-data's `load_tokenizer` settings (truncation longest-first on the
    // right, padding off), then collation with the config's pad id.
    let mut unpadded = Tokenizer::from_file(&path).map_err(|e| anyhow!("{e}"))?;
    unpadded
        .with_truncation(Some(TruncationParams {
            max_length: MAX_LEN,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| anyhow!("{e}"))?;
    unpadded.with_padding(None);
    let enc = unpadded.encode_batch_fast(sentences, true).map_err(|e| anyhow!("{e}"))?;
    let rows: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
    assert_eq!(rows, stored_rows(&expected)?);
    assert_eq!(enc.iter().filter(|e| !e.get_overflowing().is_empty()).count(), 1, "the third sentence is cut at 40");
    assert!(rows.iter().all(|r| r.last() == Some(&2)), "every row ends with </s>, truncated or not");
    let (cfg, _) = fixture_model()?;
    let batch = Batch::collate(&rows, &expected.labels()?, cfg.pad_token_id)?;
    assert_eq!(batch.input_ids.to_vec2::<u32>()?, stored_u32(&expected, "input_ids")?);
    assert_eq!(batch.attention_mask.to_vec2::<u32>()?, stored_u32(&expected, "attention_mask")?);
    Ok(())
}

#[test]
fn position_ids_start_after_the_padding_row() -> Result<()> {
    let expected = expected()?;
    let ids = expected.get("input_ids")?;
    let positions = position_ids_from_input_ids(ids, 1)?.to_vec2::<u32>()?;
    assert_eq!(positions, stored_u32(&expected, "position_ids")?, "transformers' create_position_ids_from_input_ids");
    let mask = stored_u32(&expected, "attention_mask")?;
    for (row, m) in positions.iter().zip(&mask) {
        let n = m.iter().filter(|&&x| x == 1).count();
        assert_eq!(row[..n], (2..2 + n as u32).collect::<Vec<_>>()[..]);
        assert!(row[n..].iter().all(|&p| p == 1), "pads sit at padding_idx");
    }

    // Consequence in the model: a row's outputs do not depend on how much padding follows it, and
    // equal those of the row alone (positions counted from 2 in each).
    let (cfg, weights) = fixture_model()?;
    let (model, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Frozen, NUM_LABELS, 0))?;
    let rows = stored_rows(&expected)?;
    let labels = expected.labels()?;
    let batched = model.predict(&fixture_batch(&expected)?)?.to_vec2::<f32>()?;
    // A fourth row of 62 tokens pads the fixture's rows to 62.
    let mut wide = rows.clone();
    wide.push(vec![5; 62]);
    let wide_labels = [labels.clone(), vec![0]].concat();
    let wide = model.predict(&Batch::collate(&wide, &wide_labels, cfg.pad_token_id)?)?.to_vec2::<f32>()?;
    for (i, row) in rows.iter().enumerate() {
        let alone = model.predict(&Batch::collate(&[row], &labels[i..=i], cfg.pad_token_id)?)?.to_vec2::<f32>()?;
        for (a, (b, w)) in alone[0].iter().zip(batched[i].iter().zip(&wide[i])) {
            assert!((a - b).abs() < 1e-5 && (a - w).abs() < 1e-5, "row {i}: alone {a}, padded {b}, padded to 62 {w}");
        }
    }

    // 62 tokens fill rows 2..=63 of the 64-row table; a 63rd has no position.
    let long = vec![vec![5u32; 63]];
    let err = model.predict(&Batch::collate(&long, &[0], 1)?).unwrap_err().to_string();
    assert!(err.contains("63 tokens") && err.contains("62"), "{err}");
    Ok(())
}

#[test]
fn roberta_tiny_matches_transformers() -> Result<()> {
    let expected = expected()?;
    let batch = fixture_batch(&expected)?;
    let (cfg, weights) = fixture_model()?;
    let (model, report) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Full, NUM_LABELS, 0))?;
    assert!(report.initialised.is_empty() && report.mismatched.is_empty(), "{report:?}");

    let out = model.forward(&batch, None)?;
    let (loss, _) = model.loss(&batch, None)?;
    let mut checked = vec![
        ("last_hidden_state".to_string(), expected.assert_close("last_hidden_state", &out.last_hidden_state)?),
        ("classifier_input".to_string(), expected.assert_close("classifier_input", &out.classifier_input)?),
        ("logits".to_string(), expected.assert_close("logits", &out.logits)?),
        ("loss".to_string(), expected.assert_close("loss", &loss)?),
    ];
    let grads = loss.backward()?;
    let vars: BTreeMap<String, _> = model.trainable_vars().into_iter().collect();
    let grad_keys: Vec<String> = expected.checked_keys().into_iter().filter(|k| k.starts_with("grad.")).collect();
    assert_eq!(grad_keys.len(), expected.json["grad_params"].as_array().unwrap().len());
    for key in &grad_keys {
        let param = &key["grad.".len()..];
        let var = vars.get(param).ok_or_else(|| anyhow!("`{param}` is not trainable in full mode"))?;
        let grad = grads.get(var).ok_or_else(|| anyhow!("no gradient for `{param}`"))?;
        checked.push((param.to_string(), expected.assert_close(key, grad)?));
    }
    // Only padding reads position row 1, and padding is masked: its gradient is exactly zero, as
    // torch's padding_idx gives it.
    let position = grads.get(&vars["roberta.embeddings.position_embeddings.weight"]).unwrap();
    assert_eq!(position.get(1)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    for (what, diff) in &checked {
        println!("roberta-tiny: {what}: max |diff| {diff:.2e}");
    }
    Ok(())
}

/// The fixture's LoRA factors by module path.
fn lora_factors() -> Result<BTreeMap<String, LoraFactors>> {
    let tensors = candle_core::safetensors::load(fixture_dir().join("lora_factors.safetensors"), &Device::Cpu)?;
    let mut out = BTreeMap::new();
    for (name, a) in &tensors {
        let Some(module) = name.strip_suffix(".lora_A.weight") else { continue };
        let b = tensors.get(&format!("{module}.lora_B.weight")).ok_or_else(|| anyhow!("no lora_B for `{module}`"))?;
        out.insert(module.to_string(), LoraFactors { a: a.clone(), b: b.clone() });
    }
    Ok(out)
}

#[test]
fn lora_wraps_bert_target_modules_and_matches_merged_transformers() -> Result<()> {
    let expected = expected()?;
    let batch = fixture_batch(&expected)?;
    let (cfg, weights) = fixture_model()?;
    let factors = lora_factors()?;
    // The default targets and heads, and peft's own `modules_to_save = ["classifier"]` for RoBERTa.
    for modules_to_save in [None, Some(vec!["classifier".to_string()])] {
        let lora = LoraSpec { init: factors.clone(), ..LoraSpec::new(4, 8.0) };
        let mut spec = TrainSpec::new(Mode::Lora(lora), NUM_LABELS, 0);
        if let Some(m) = &modules_to_save {
            spec.modules_to_save = m.clone();
        }
        let (model, _) = Classifier::new(&cfg, &weights, &spec)?;
        // Every block linear (BERT's six names per layer), nothing else.
        let adapted = model.adapted_modules();
        assert_eq!(adapted, block_linears(&cfg));
        assert_eq!(adapted.len(), 12);
        let mut sorted = adapted.clone();
        sorted.sort();
        assert_eq!(sorted, factors.keys().cloned().collect::<Vec<_>>());
        // 24 factors + the head's two linears, which train densely.
        let vars = model.trainable_vars();
        let head: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).filter(|k| model.is_head_tensor(k)).collect();
        assert_eq!(head, ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias", "classifier.out_proj.weight"]);
        assert_eq!(vars.len(), 24 + 4, "{modules_to_save:?}");

        let (loss, logits) = model.loss(&batch, None)?;
        let d = expected.assert_close("lora_logits", &logits)?;
        expected.assert_close("lora_loss", &loss)?;
        println!("roberta-tiny lora ({modules_to_save:?}): logits max |diff| {d:.2e}");
        let grads = loss.backward()?;
        for (name, var) in &vars {
            let g = grads.get(var).ok_or_else(|| anyhow!("`{name}` got no gradient"))?;
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "`{name}`: zero gradient");
        }

        // peft's adapter file names: the head under its own paths.
        let adapter = slora_model::peft::PeftAdapter::from_classifier(&model, None)?;
        let saved: Vec<String> = adapter.saved_module_tensors().into_keys().collect();
        assert_eq!(saved, head);
        assert_eq!(adapter.lora_factors()?.len(), 12);
    }
    Ok(())
}

/// `roberta-base` as the Hub serves it (`RobertaForMaskedLM`): the encoder plus `lm_head.*`, here
/// also a pooler and a `position_ids` buffer (`RobertaModel` checkpoints). Those are skipped, and
/// the head the checkpoint lacks gets both linears from the seed, reported in init order.
#[test]
fn masked_lm_layout_loads_and_gets_a_new_head() -> Result<()> {
    let (cfg, weights) = fixture_model()?;
    let mut map = weights.into_map();
    map.retain(|k, _| !k.starts_with("classifier."));
    let encoder_tensors = map.len();
    let h = cfg.hidden_size;
    for (name, shape) in [
        ("lm_head.dense.weight", vec![h, h]),
        ("lm_head.dense.bias", vec![h]),
        ("lm_head.layer_norm.weight", vec![h]),
        ("lm_head.bias", vec![cfg.vocab_size]),
        ("roberta.pooler.dense.weight", vec![h, h]),
        ("roberta.pooler.dense.bias", vec![h]),
        ("roberta.embeddings.position_ids", vec![1, cfg.max_position_embeddings]),
    ] {
        map.insert(name.to_string(), Tensor::zeros(shape, DType::F32, &Device::Cpu)?);
    }
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("model.safetensors");
    Weights::from_map(map).save(&path)?;
    let loaded = Weights::load(&path, &cfg)?;
    assert_eq!(loaded.len(), encoder_tensors, "lm_head, pooler and position_ids skipped");
    assert!(loaded.names().all(|n| n.starts_with("roberta.embeddings.") || n.starts_with("roberta.encoder.")));
    let (_, report) = Classifier::new(&cfg, &loaded, &TrainSpec::new(Mode::Frozen, 5, 0))?;
    assert_eq!(
        report.initialised,
        ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"]
    );
    Ok(())
}
