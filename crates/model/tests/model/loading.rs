//! Loading: local folders and hub ids, prefix normalisation, head initialisation report, and
//! one-line errors naming the file and the tensor or key.

use anyhow::Result;
use slora_model::{Classifier, EncoderConfig, ModelError, ModelFiles, ModelType, Mode, TrainSpec, Weights};

use crate::common::{fixture_dir, shared};

#[test]
fn minilm_without_prefix_loads_and_reports_new_head() -> Result<()> {
    let files = ModelFiles::resolve(shared().join("models/paraphrase-MiniLM-L3-v2").to_str().unwrap(), "main")?;
    let cfg = EncoderConfig::from_file(&files.config)?;
    assert_eq!(cfg.model_type, ModelType::Bert);
    let weights = Weights::load(&files.weights, &cfg)?;
    assert!(weights.get("bert.embeddings.word_embeddings.weight").is_some());
    assert!(weights.names().all(|n| n.starts_with("bert.") && !n.contains("position_ids")));
    let (model, report) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Frozen, 3, 9))?;
    assert_eq!(
        report.initialised,
        ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]
    );
    // N(0, 0.02) weights, zero biases, reproducible from the seed.
    let w = model.effective_weights()?;
    let std = w.get("classifier.weight").unwrap().sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()?;
    assert!((std - 0.02).abs() < 0.004, "classifier init std {std}");
    assert_eq!(w.get("classifier.bias").unwrap().abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    let (again, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Frozen, 3, 9))?;
    let a = again.effective_weights()?.get("bert.pooler.dense.weight").unwrap().flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a, w.get("bert.pooler.dense.weight").unwrap().flatten_all()?.to_vec1::<f32>()?);

    // A classifier for another label count is re-initialised and reported.
    let (cfg5, w5) = crate::common::fixture_model("bert-minilm-l3")?;
    let (_, report) = Classifier::new(&cfg5, &w5, &TrainSpec::new(Mode::Frozen, 2, 0))?;
    assert_eq!(report.mismatched, ["classifier.weight", "classifier.bias"]);
    assert!(report.initialised.is_empty());
    Ok(())
}

#[test]
fn all_minilm_l6_with_pooler_and_position_ids_loads() -> Result<()> {
    let files = ModelFiles::resolve(shared().join("models/all-MiniLM-L6-v2").to_str().unwrap(), "main")?;
    let cfg = EncoderConfig::from_file(&files.config)?;
    let weights = Weights::load(&files.weights, &cfg)?;
    assert!(weights.get("bert.pooler.dense.weight").is_some());
    let (_, report) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Frozen, 20, 0))?;
    assert_eq!(report.initialised, ["classifier.weight", "classifier.bias"]);
    Ok(())
}

#[test]
fn hub_id_resolves_from_an_offline_cache() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("models--sentence-transformers--paraphrase-MiniLM-L3-v2");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), commit)?;
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot)?;
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(shared().join("models/paraphrase-MiniLM-L3-v2").join(f), snapshot.join(f))?;
    }
    let cache = slora_hub::HubCache::new(tmp.path());
    let files = ModelFiles::resolve_with(&cache, "sentence-transformers/paraphrase-MiniLM-L3-v2", "main")?;
    assert_eq!(files.dir, snapshot);
    assert!(files.tokenizer.is_some());
    let cfg = EncoderConfig::from_file(&files.config)?;
    assert_eq!(Weights::load(&files.weights, &cfg)?.len(), 53);
    let err = ModelFiles::resolve_with(&cache, "sentence-transformers/absent-model", "main").unwrap_err();
    assert!(err.to_string().contains("absent-model"), "{err}");
    Ok(())
}

#[test]
fn errors_name_the_file_and_the_problem() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Unknown model_type.
    let cfg_path = tmp.path().join("config.json");
    std::fs::write(&cfg_path, r#"{"model_type": "xlnet", "hidden_size": 8}"#)?;
    let err = EncoderConfig::from_file(&cfg_path).unwrap_err();
    assert!(matches!(err, ModelError::UnknownModelType { .. }));
    let msg = err.to_string();
    assert!(msg.contains("xlnet") && msg.contains("config.json"), "{msg}");
    // Missing key.
    std::fs::write(&cfg_path, r#"{"model_type": "bert", "hidden_size": 8}"#)?;
    let msg = EncoderConfig::from_file(&cfg_path).unwrap_err().to_string();
    assert!(msg.contains("vocab_size") && msg.contains("config.json"), "{msg}");

    // Missing tensor and wrong shape, named with the file.
    let cfg = EncoderConfig::from_file(&fixture_dir("bert-tiny").join("config.json"))?;
    let full = Weights::load(&fixture_dir("bert-tiny").join("model.safetensors"), &cfg)?;
    let mut map = full.clone().into_map();
    map.remove("bert.encoder.layer.1.output.dense.weight");
    let path = tmp.path().join("broken.safetensors");
    Weights::from_map(map.clone()).save(&path)?;
    let msg = Weights::load(&path, &cfg).unwrap_err().to_string();
    assert!(msg.contains("bert.encoder.layer.1.output.dense.weight") && msg.contains("broken.safetensors"), "{msg}");
    map.insert("bert.encoder.layer.1.output.dense.weight".into(), candle_core::Tensor::zeros((3, 3), candle_core::DType::F32, &candle_core::Device::Cpu)?);
    Weights::from_map(map.clone()).save(&path)?;
    let msg = Weights::load(&path, &cfg).unwrap_err().to_string();
    assert!(msg.contains("output.dense.weight") && msg.contains("[3, 3]") && msg.contains("[64, 128]"), "{msg}");
    // Wrong dtype.
    map.insert("bert.encoder.layer.1.output.dense.weight".into(), candle_core::Tensor::zeros((64, 128), candle_core::DType::U32, &candle_core::Device::Cpu)?);
    Weights::from_map(map).save(&path)?;
    let msg = Weights::load(&path, &cfg).unwrap_err().to_string();
    assert!(msg.contains("dtype") && msg.contains("output.dense.weight"), "{msg}");
    // Saved weights reload identically; no temporary file is left.
    let ok = tmp.path().join("ok.safetensors");
    full.save(&ok)?;
    assert_eq!(Weights::load(&ok, &cfg)?.len(), full.len());
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 3);
    Ok(())
}
