//! Shared helpers: fixture paths, expected tensors with their tolerances, tokenization.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use slora_model::{Batch, EncoderConfig, Weights};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// `../shared` next to the repository root.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A parity fixture folder.
pub fn fixture_dir(name: &str) -> PathBuf {
    shared().join("fixtures/parity").join(name)
}

/// Config and full weights of a parity fixture (bert-minilm-l3: the shared MiniLM-L3 encoder +
/// heads.safetensors).
pub fn fixture_model(name: &str) -> Result<(EncoderConfig, Weights)> {
    let dir = fixture_dir(name);
    let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
    let weights = if name == "bert-minilm-l3" {
        Weights::load_files(
            &[shared().join("models/paraphrase-MiniLM-L3-v2/model.safetensors"), dir.join("heads.safetensors")],
            &cfg,
        )?
    } else {
        Weights::load(&dir.join("model.safetensors"), &cfg)?
    };
    Ok((cfg, weights))
}

/// Stored reference tensors and their per-tensor tolerances.
pub struct Expected {
    pub tensors: BTreeMap<String, Tensor>,
    pub json: Value,
    tolerance_keys: String,
}

impl Expected {
    /// Reads `<stem>.safetensors` and `<stem>.json` from a fixture folder.
    pub fn load(dir: &Path, stem: &str) -> Result<Self> {
        let tensors = candle_core::safetensors::load(dir.join(format!("{stem}.safetensors")), &Device::Cpu)?
            .into_iter()
            .collect();
        let json_path = dir.join(format!("{stem}.json"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
        Ok(Self { tensors, json, tolerance_keys: format!("{stem}_safetensors") })
    }

    pub fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| anyhow!("expected tensor `{key}` missing"))
    }

    /// `(atol, rtol)` of a stored tensor.
    pub fn tolerance(&self, key: &str) -> Result<(f64, f64)> {
        let entry = &self.json[&self.tolerance_keys]["keys"][key];
        let atol = entry["atol"].as_f64().ok_or_else(|| anyhow!("no atol for `{key}`"))?;
        let rtol = entry["rtol"].as_f64().ok_or_else(|| anyhow!("no rtol for `{key}`"))?;
        Ok((atol, rtol))
    }

    /// Keys that carry a tolerance (the checked float tensors).
    pub fn checked_keys(&self) -> Vec<String> {
        self.json[&self.tolerance_keys]["keys"]
            .as_object()
            .map(|o| o.iter().filter(|(_, v)| v.get("atol").is_some()).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    pub fn sentences(&self) -> Vec<String> {
        self.json["inputs"]["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    pub fn labels(&self) -> Result<Vec<u32>> {
        Ok(self.get("labels")?.to_dtype(DType::U32)?.to_vec1::<u32>()?)
    }

    /// Asserts `|actual - expected| <= atol + rtol |expected|` elementwise; returns the max abs diff.
    pub fn assert_close(&self, key: &str, actual: &Tensor) -> Result<f64> {
        let expected = self.get(key)?;
        let (atol, rtol) = self.tolerance(key)?;
        assert_close(key, actual, expected, atol, rtol)
    }
}

/// Elementwise tolerance check with a message naming the worst element.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> Result<f64> {
    anyhow::ensure!(
        actual.dims() == expected.dims(),
        "{what}: shape {:?}, expected {:?}",
        actual.dims(),
        expected.dims()
    );
    let a = actual.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let e = expected.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut max_diff = 0f64;
    for (i, (&a, &e)) in a.iter().zip(&e).enumerate() {
        let diff = (f64::from(a) - f64::from(e)).abs();
        max_diff = max_diff.max(diff);
        anyhow::ensure!(
            diff <= atol + rtol * f64::from(e).abs(),
            "{what}: element {i}: got {a}, expected {e} (|diff| {diff:.3e} > atol {atol:.1e} + rtol {rtol:.1e}·|e|)"
        );
    }
    Ok(max_diff)
}

/// A tokenizer from a fixture/model folder with explicit truncation and no padding.
pub fn tokenizer(dir: &Path, max_len: usize, pad_batch_longest: bool) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| anyhow!("{e}"))?;
    tok.with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
        .map_err(|e| anyhow!("{e}"))?;
    tok.with_padding(pad_batch_longest.then(|| PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
    Ok(tok)
}

/// Unpadded token-id rows of `texts`.
pub fn encode_rows(tok: &Tokenizer, texts: &[String]) -> Result<Vec<Vec<u32>>> {
    let enc = tok.encode_batch(texts.to_vec(), true).map_err(|e| anyhow!("{e}"))?;
    Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
}

/// Tokenizes the fixture sentences (truncation 32, BatchLongest), checks ids / mask / types against
/// the stored ones, and returns the collated batch.
pub fn fixture_batch(name: &str, expected: &Expected) -> Result<Batch> {
    batch_in(&fixture_dir(name), expected)
}

/// [`fixture_batch`] for the fixture in `dir` (its tokenizer, sentences and stored ids).
pub fn batch_in(dir: &Path, expected: &Expected) -> Result<Batch> {
    let name = dir.display();
    let tok = tokenizer(dir, 32, true)?;
    let enc = tok.encode_batch(expected.sentences(), true).map_err(|e| anyhow!("{e}"))?;
    let as_i64 = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Vec<Vec<i64>> {
        enc.iter().map(|e| f(e).into_iter().map(i64::from).collect()).collect()
    };
    for (key, got) in [
        ("input_ids", as_i64(&|e| e.get_ids().to_vec())),
        ("attention_mask", as_i64(&|e| e.get_attention_mask().to_vec())),
        ("token_type_ids", as_i64(&|e| e.get_type_ids().to_vec())),
    ] {
        let want = expected.get(key)?.to_vec2::<i64>()?;
        anyhow::ensure!(got == want, "{name}: tokenized {key} differ from the fixture");
    }
    let rows: Vec<Vec<u32>> = enc
        .iter()
        .map(|e| {
            let n = e.get_attention_mask().iter().filter(|&&m| m == 1).count();
            e.get_ids()[..n].to_vec()
        })
        .collect();
    let batch = Batch::collate(&rows, &expected.labels()?, 0).context("collate")?;
    let stored = expected.get("input_ids")?.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    anyhow::ensure!(batch.input_ids.to_vec2::<u32>()? == stored, "{name}: collated ids differ from the fixture");
    let mask = expected.get("attention_mask")?.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    anyhow::ensure!(batch.attention_mask.to_vec2::<u32>()? == mask, "{name}: collated mask differs");
    Ok(batch)
}
