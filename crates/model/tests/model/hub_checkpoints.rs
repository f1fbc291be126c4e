//! The paper's models as the Hub serves them: `DistilBertForMaskedLM` and `AlbertForMaskedLM`
//! checkpoints in their real key layout (scripts/make-hub-checkpoints.py, small and random). The MLM
//! heads are skipped, ALBERT's shared layer group and embedding projection load, the encoder equals
//! transformers' on the same sentences, and the head the checkpoint lacks is initialised.

use std::path::PathBuf;

use anyhow::Result;
use slora_model::{Classifier, EncoderConfig, Mode, TrainSpec, Weights};

use crate::common::{batch_in, Expected};

fn checkpoint_dir(hub_id: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hub-checkpoints").join(hub_id)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn masked_lm_checkpoints_load_and_match_transformers() -> Result<()> {
    // (hub id, head tensors the checkpoint lacks)
    let cases = [
        ("distilbert-base-uncased", vec!["classifier.bias", "classifier.weight", "pre_classifier.bias", "pre_classifier.weight"]),
        ("albert-base-v2", vec!["albert.pooler.bias", "albert.pooler.weight", "classifier.bias", "classifier.weight"]),
    ];
    for (hub_id, fresh_head) in cases {
        let dir = checkpoint_dir(hub_id);
        let expected = Expected::load(&dir, "expected")?;
        let cfg = EncoderConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::load(&dir.join("model.safetensors"), &cfg)?;
        let all = strings(&expected.json["checkpoint_keys"]);
        let skipped = strings(&expected.json["not_encoder_keys"]);
        assert!(!skipped.is_empty(), "{hub_id}: the fixture holds an MLM head");
        assert_eq!(weights.len(), all.len() - skipped.len(), "{hub_id}: every encoder tensor loaded, the MLM head skipped");
        for key in &skipped {
            assert!(weights.names().all(|n| !n.ends_with(key.as_str())), "{hub_id}: `{key}` is not part of the classifier");
        }
        let (model, report) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Full, 4, 0))?;
        let mut initialised = report.initialised.clone();
        initialised.sort();
        assert_eq!(initialised, fresh_head, "{hub_id}");
        let batch = batch_in(&dir, &expected)?;
        let out = model.forward(&batch, None)?;
        let diff = expected.assert_close("last_hidden_state", &out.last_hidden_state)?;
        println!("{hub_id}: last_hidden_state max |diff| {diff:.2e}");
    }
    Ok(())
}
