//! LoRA against peft: the fixture adapter reproduces lora_expected's outputs and LoRA gradients;
//! merge/unmerge; the adapter survives a load/save round trip bit for bit.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use candle_core::Tensor;
use slora_model::peft::{self, PeftAdapter};
use slora_model::{Adapter, Classifier};

use crate::common::{fixture_batch, fixture_dir, fixture_model, Expected};

fn adapter_dir() -> std::path::PathBuf {
    fixture_dir("bert-minilm-l3").join("lora-adapter")
}

fn lora_model() -> Result<(Classifier, PeftAdapter)> {
    let (cfg, mut weights) = fixture_model("bert-minilm-l3")?;
    let adapter = peft::load_adapter(&adapter_dir())?;
    adapter.apply_saved_modules(&mut weights);
    let (model, report) = Classifier::new(&cfg, &weights, &adapter.train_spec(5, 0)?)?;
    assert!(report.initialised.is_empty());
    Ok((model, adapter))
}

#[test]
fn peft_adapter_matches_peft() -> Result<()> {
    let expected = Expected::load(&fixture_dir("bert-minilm-l3"), "lora_expected")?;
    // Inputs are those of expected.json.
    let batch = fixture_batch("bert-minilm-l3", &Expected::load(&fixture_dir("bert-minilm-l3"), "expected")?)?;
    let (model, _) = lora_model()?;
    assert_eq!(model.adapted_modules().len(), 18);
    // 36 LoRA factors + the classifier copy; nothing else trains.
    assert_eq!(model.trainable_vars().len(), 38);

    let out = model.forward(&batch, None)?;
    let (loss, _) = model.loss(&batch, None)?;
    for (key, t) in [
        ("last_hidden_state", &out.last_hidden_state),
        ("classifier_input", &out.classifier_input),
        ("logits", &out.logits),
        ("loss", &loss),
    ] {
        let d = expected.assert_close(key, t)?;
        println!("lora: {key}: max |diff| {d:.2e}");
    }
    let grads = loss.backward()?;
    let vars: BTreeMap<String, _> = model.trainable_vars().into_iter().collect();
    let keys: Vec<String> = expected.checked_keys().into_iter().filter(|k| k.starts_with("grad.")).collect();
    assert_eq!(keys.len(), 4);
    for key in keys {
        let name = key.strip_prefix("grad.base_model.model.").unwrap();
        let var = vars.get(name).ok_or_else(|| anyhow!("`{name}` is not trainable"))?;
        let grad = grads.get(var).ok_or_else(|| anyhow!("no gradient for `{name}`"))?;
        let d = expected.assert_close(&key, grad)?;
        println!("lora: grad {name}: max |diff| {d:.2e}");
    }
    Ok(())
}

#[test]
fn merge_then_unmerge_returns_base_weights() -> Result<()> {
    let expected = Expected::load(&fixture_dir("bert-minilm-l3"), "lora_expected")?;
    // Inputs are those of expected.json.
    let batch = fixture_batch("bert-minilm-l3", &Expected::load(&fixture_dir("bert-minilm-l3"), "expected")?)?;
    let (mut model, _) = lora_model()?;
    let before: BTreeMap<String, Tensor> =
        model.linears().iter().map(|l| (l.module().to_string(), l.weight().value())).collect();
    let effective = model.effective_weights()?;
    let logits = model.predict(&batch)?;

    model.merge_adapters()?;
    for l in model.linears() {
        if let Adapter::Lora(lora) = l.adapter() {
            assert!(l.is_merged());
            // Merged base = W + 2.0 * B @ A (scaling lora_alpha / r = 8 / 4).
            let want = (&before[l.module()] + (lora.b.as_tensor().matmul(lora.a.as_tensor())? * 2.0)?)?;
            crate::common::assert_close(l.module(), &l.weight().value(), &want, 1e-7, 1e-6)?;
            let eff = effective.get(&format!("{}.weight", l.module())).unwrap();
            crate::common::assert_close(l.module(), &l.weight().value(), eff, 0.0, 0.0)?;
        }
    }
    crate::common::assert_close("merged logits", &model.predict(&batch)?, &logits, 1e-5, 1e-4)?;
    expected.assert_close("logits", &model.predict(&batch)?)?;

    model.unmerge_adapters()?;
    for l in model.linears() {
        let d = crate::common::assert_close(l.module(), &l.weight().value(), &before[l.module()], 1e-6, 0.0)?;
        assert!(!l.is_merged() && d <= 1e-6);
    }
    crate::common::assert_close("unmerged logits", &model.predict(&batch)?, &logits, 1e-6, 0.0)?;
    Ok(())
}

/// Shape and raw bytes of every tensor in a safetensors file, by key.
type RawTensors = BTreeMap<String, (Vec<usize>, Vec<u8>)>;

fn raw_tensors(path: &std::path::Path) -> Result<RawTensors> {
    let bytes = std::fs::read(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    Ok(st.tensors().into_iter().map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec()))).collect())
}

#[test]
fn peft_adapter_round_trip_is_bit_identical() -> Result<()> {
    let original = raw_tensors(&adapter_dir().join(peft::WEIGHTS_FILE))?;
    let adapter = peft::load_adapter(&adapter_dir())?;
    let tmp = tempfile::tempdir()?;

    // Load then save.
    peft::save_adapter(tmp.path(), &adapter)?;
    assert_eq!(raw_tensors(&tmp.path().join(peft::WEIGHTS_FILE))?, original);
    let again = peft::load_adapter(tmp.path())?;
    assert_eq!(again.config, adapter.config);

    // Through a model: its trainable state is the adapter, saved under peft's names.
    let (model, _) = lora_model()?;
    let exported = PeftAdapter::from_classifier(&model, adapter.config.base_model_name_or_path.as_deref())?;
    let out = tmp.path().join("from-model");
    peft::save_adapter(&out, &exported)?;
    assert_eq!(raw_tensors(&out.join(peft::WEIGHTS_FILE))?, original);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(peft::CONFIG_FILE))?)?;
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8);
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["classifier", "score"]));
    assert_eq!(cfg["base_model_name_or_path"], "sentence-transformers/paraphrase-MiniLM-L3-v2");
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 6);
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&out)?.count(), 2);
    Ok(())
}
