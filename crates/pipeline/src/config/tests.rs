//! Config parsing, `--set`, path resolution and validation messages.

use super::*;
use crate::config::load::ConfigOverride;

fn valid() -> Config {
    let mut c = Config::default();
    c.data.source = "/data/x.parquet".into();
    c.model.source = "org/model".into();
    c
}

fn set(key: &str, value: &str) -> ConfigOverride {
    ConfigOverride { key: key.into(), value: value.into() }
}

#[test]
fn repository_pipeline_toml_parses_with_every_section() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipeline.toml");
    let cfg = Config::load(Some(&path), &[]).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.partition.scheme, PartitionScheme::Dirichlet);
    assert_eq!(cfg.partition.alpha, 0.1);
    assert_eq!(cfg.data.text_column, "text_clean");
    assert!(std::path::Path::new(&cfg.data.source).is_absolute(), "resolved against the file's folder");
    assert!(cfg.data.source.ends_with("20newsgroups_bydate.parquet"));
    assert_eq!(cfg.baselines.methods, vec![BaselineMethod::Fft, BaselineMethod::Lora, BaselineMethod::Sft]);
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key() {
    let err = Config::from_toml_str("[partition]\nalphaa = 1.0\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: unknown config key `partition.alphaa`");
    let err = Config::from_toml_str("[nope]\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: unknown config key `nope`");
    let err = Config::from_toml_str("[partition]\nclients = \"many\"\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: partition.clients must be a non-negative integer (got \"many\")");
    let err = Config::from_toml_str("[partition]\nclients = -3\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: partition.clients must be a non-negative integer (got -3)");
    let err = Config::from_toml_str("[partition]\nscheme = \"random\"\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: partition.scheme must be one of iid, dirichlet, dirichlet-client, pathological, natural (got \"random\")");
    let err = Config::from_toml_str("[baselines]\nmethods = [\"fft\", \"x\"]\n", "p.toml").unwrap_err().to_string();
    assert!(err.contains("baselines.methods must be one of fft, lora, sft, ffa-lora, fedex-lora, lora-a2, flexlora, fedsa-lora (got \"x\")"), "{err}");
    let err = Config::from_toml_str("[partition\n", "p.toml").unwrap_err().to_string();
    assert!(err.starts_with("config file p.toml: line 1:"), "{err}");
    // An integer where a float is expected is fine.
    let cfg = Config::from_toml_str("[partition]\nalpha = 2\n", "p.toml").unwrap();
    assert_eq!(cfg.partition.alpha, 2.0);
}

#[test]
fn set_overrides_parse_with_the_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[data]\nsource = \"d.parquet\"\n[model]\nsource = \"org/m\"\n").unwrap();
    let cfg = Config::load(
        Some(&file),
        &[
            set("partition.alpha", "0.5"),
            set("partition.clients", "7"),
            set("partition.scheme", "iid"),
            set("baselines.methods", "lora,fft"),
            set("adapter.target_modules", "[\"query\", \"value\"]"),
            set("run.name", "x"),
        ],
    )
    .unwrap();
    assert_eq!((cfg.partition.alpha, cfg.partition.clients), (0.5, 7));
    assert_eq!(cfg.partition.scheme, PartitionScheme::Iid);
    assert_eq!(cfg.baselines.methods, vec![BaselineMethod::Lora, BaselineMethod::Fft]);
    assert_eq!(cfg.adapter.target_modules, vec!["query".to_string(), "value".into()]);
    assert_eq!(cfg.data.source, dir.path().join("d.parquet").to_string_lossy());
    assert_eq!(cfg.model.source, "org/m", "a hub id stays a hub id");
    assert_eq!(cfg.base_dir, dir.path());

    let err = |k: &str, v: &str| Config::load(Some(&file), &[set(k, v)]).unwrap_err().to_string();
    assert_eq!(err("partition.alhpa", "1"), "--set partition.alhpa=1: unknown config key `partition.alhpa`");
    assert_eq!(err("alpha", "1"), "--set alpha=1: unknown config key `alpha` (keys look like section.key)");
    assert_eq!(
        err("partition.clients", "2.5"),
        "--set partition.clients=2.5: partition.clients must be an integer (got \"2.5\")"
    );
    assert_eq!(err("partition.alpha", "abc"), "--set partition.alpha=abc: partition.alpha must be a finite number (got \"abc\")");
    assert!(err("partition.scheme", "x").contains("partition.scheme must be one of iid, dirichlet, dirichlet-client, pathological, natural"));
    assert!(parse_set("novalue").is_err());
    assert_eq!(parse_set("a.b=c=d").unwrap(), set("a.b", "c=d"));
}

#[test]
fn validation_names_key_value_and_rule() {
    let check = |f: &dyn Fn(&mut Config)| {
        let mut c = valid();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    valid().validate().unwrap();
    assert_eq!(check(&|c| c.partition.alpha = -1.0), "partition.alpha must be > 0 (got -1)");
    assert_eq!(check(&|c| c.partition.clients = 0), "partition.clients must be >= 1 (got 0)");
    assert_eq!(check(&|c| c.data.max_len = 1), "data.max_len must be >= 2 (got 1)");
    assert_eq!(check(&|c| c.stage1.density = 1.5), "stage1.density must be in (0, 1] (got 1.5)");
    assert_eq!(
        check(&|c| c.federation.clients_per_round = 30),
        "federation.clients_per_round must be <= partition.clients = 20 (got 30)"
    );
    assert!(check(&|c| c.data.source.clear()).starts_with("data.source is required"));
    assert!(check(&|c| c.model.source.clear()).starts_with("model.source is required"));
    assert_eq!(check(&|c| c.optim.beta2 = 1.0), "optim.beta2 must be in [0, 1) (got 1)");
    assert!(check(&|c| c.baselines.methods = vec![BaselineMethod::Fft, BaselineMethod::Fft]).starts_with("baselines.methods"));
}

#[test]
fn defaults_round_trip_through_toml() {
    let c = valid();
    let back = Config::from_toml_str(&c.to_toml(), "x").unwrap();
    assert_eq!(back.partition, c.partition);
    assert_eq!(back.decompose.init, DecomposeInit::Svd);
    assert_eq!(DecomposeInit::SvdB.to_string(), "svd-b");
}

#[test]
fn learning_rates_take_numbers_or_tuned() {
    let cfg = Config::from_toml_str("[stage1]\nlr = \"tuned\"\n[baselines]\nfft_lr = 3e-5\n", "p.toml").unwrap();
    assert_eq!(cfg.stage1.lr, LearningRate::Tuned);
    assert_eq!(cfg.baselines.fft_lr, LearningRate::Value(3e-5));
    let err = Config::from_toml_str("[stage1]\nlr = \"fast\"\n", "p.toml").unwrap_err().to_string();
    assert_eq!(err, "p.toml: stage1.lr must be a number or \"tuned\" (got \"fast\")");
    let err = Config::load(None, &[set("stage2.lr", "fast")]).unwrap_err().to_string();
    assert!(err.contains("stage2.lr must be a number or \"tuned\""), "{err}");
    let mut c = valid();
    c.baselines.lora_lr = LearningRate::Tuned;
    c.stage2.lr = LearningRate::Tuned;
    assert_eq!(c.tuned_keys(), vec![("stage2.lr", BaselineMethod::Lora), ("baselines.lora_lr", BaselineMethod::Lora)]);
    c.resolve_tuned(|m| if m == BaselineMethod::Lora { 3e-4 } else { 1.0 });
    assert_eq!((c.stage2.lr, c.baselines.lora_lr), (LearningRate::Value(3e-4), LearningRate::Value(3e-4)));
    assert_eq!(c.tuned_from, vec!["stage2.lr".to_string(), "baselines.lora_lr".to_string()]);
    // An empty grid cannot be "tuned".
    let mut c = valid();
    c.baselines.fft_lr = LearningRate::Tuned;
    c.tune.fft.clear();
    assert!(c.validate().unwrap_err().to_string().contains("baselines.fft_lr"));
    // Seeds: a list without repeats; for_seed changes the partition only with vary_with_seed.
    let mut c = valid();
    c.run.seeds = vec![1, 1];
    assert!(c.validate().unwrap_err().to_string().contains("run.seeds"));
    c.run.seeds = vec![1, 2];
    assert_eq!(c.for_seed(2).partition.seed, c.partition.seed);
    c.partition.vary_with_seed = true;
    assert_ne!(c.for_seed(2).partition.seed, c.for_seed(1).partition.seed);
    assert_eq!(c.for_seed(2).run.seed, 2);
    let c = Config::load(None, &[set("run.seeds", "4,5,6")]).unwrap();
    assert_eq!(c.run.replicate_seeds(), vec![4, 5, 6]);
}

#[test]
fn ffa_lora_options_parse_and_stay_out_of_keys_when_off() {
    let cfg = Config::from_toml_str(
        "[baselines]\nmethods = [\"ffa-lora\", \"lora\"]\nffa_lora_lr = \"tuned\"\n[stage2]\nfreeze_a = true\n[tune]\nffa-lora = [1e-3, 3e-3]\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(cfg.baselines.methods, vec![BaselineMethod::FfaLora, BaselineMethod::Lora]);
    assert_eq!(BaselineMethod::FfaLora.to_string(), "ffa-lora");
    assert!(cfg.stage2.freeze_a);
    assert_eq!(cfg.tune.grid(BaselineMethod::FfaLora), &[1e-3, 3e-3]);
    assert_eq!(cfg.tuned_keys(), vec![("baselines.ffa_lora_lr", BaselineMethod::FfaLora)]);
    let c = Config::load(None, &[set("baselines.methods", "fft,ffa-lora"), set("stage2.freeze_a", "true")]).unwrap();
    assert_eq!(c.baselines.methods, vec![BaselineMethod::Fft, BaselineMethod::FfaLora]);
    // Off (the defaults), the new options are absent from what keys are hashed from, so runs from
    // before they existed keep their cache; on, they are present.
    let off = serde_json::to_value(Config::default()).unwrap();
    assert!(off["stage2"].get("freeze_a").is_none() && off["baselines"].get("ffa_lora_lr").is_none());
    assert!(off["tune"].get("ffa-lora").is_none());
    let on = serde_json::to_value(&cfg).unwrap();
    assert_eq!(on["stage2"]["freeze_a"], true);
    assert_eq!(on["tune"]["ffa-lora"], serde_json::json!([1e-3, 3e-3]));
    let err = Config::from_toml_str("[baselines]\nmethods = [\"ffa\"]\n", "p.toml").unwrap_err().to_string();
    assert!(err.contains("baselines.methods") && err.contains("ffa-lora"), "{err}");
}

#[test]
fn natural_partition_and_federated_mask_options_parse_and_stay_out_of_keys_when_off() {
    let cfg = Config::from_toml_str(
        "[partition]\nscheme = \"natural\"\nid_column = \"authors\"\nmax_clients = 30\n[stage1]\nmask = \"federated-importance\"\nmask_batches = 2\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(cfg.partition.scheme, PartitionScheme::Natural);
    assert_eq!((cfg.partition.id_column.as_str(), cfg.partition.max_clients), ("authors", 30));
    assert_eq!(cfg.stage1.mask, super::StageOneMask::FederatedImportance);
    assert_eq!(cfg.stage1.mask.to_string(), "federated-importance");
    assert_eq!(cfg.stage1.mask_batches, 2);
    let mut cfg = { let mut v = valid(); v.partition = cfg.partition.clone(); v.stage1 = cfg.stage1.clone(); v };
    cfg.validate().unwrap();
    // Natural takes its client count from the data: clients_per_round is not held to partition.clients.
    let mut big = cfg.clone();
    big.federation.clients_per_round = 50;
    big.validate().unwrap();
    let mut missing = cfg.clone();
    missing.partition.id_column.clear();
    assert!(missing.validate().unwrap_err().to_string().contains("partition.id_column is required"));
    let mut zero = cfg.clone();
    zero.stage1.mask_batches = 0;
    assert!(zero.validate().unwrap_err().to_string().contains("stage1.mask_batches"));
    let off = serde_json::to_value(Config::default()).unwrap();
    for (section, key) in [("partition", "id_column"), ("partition", "max_clients"), ("stage1", "mask"), ("stage1", "mask_batches")] {
        assert!(off[section].get(key).is_none(), "{section}.{key} stays out of keys at its default");
    }
    cfg.partition.max_clients = 30;
    let on = serde_json::to_value(&cfg).unwrap();
    assert_eq!(on["partition"]["max_clients"], 30);
    assert_eq!(on["stage1"]["mask"], "federated-importance");
    assert_eq!(on["partition"]["id_column"], "authors");
    let c = Config::load(None, &[set("stage1.mask", "federated-importance"), set("partition.max_clients", "7")]).unwrap();
    assert_eq!((c.stage1.mask, c.partition.max_clients), (super::StageOneMask::FederatedImportance, 7));
    let err = Config::from_toml_str("[stage1]\nmask = \"importance\"\n", "p.toml").unwrap_err().to_string();
    assert!(err.contains("stage1.mask must be one of random, federated-importance"), "{err}");
}

#[test]
fn lora_section_takes_the_deprecated_keys_with_a_warning_and_keys_keep_their_shape() {
    let new = Config::from_toml_str("[lora]\nr = 4\nlora_alpha = 8.0\nlora_dropout = 0.1\n", "p.toml").unwrap();
    let old = Config::from_toml_str("[decompose]\nrank = 4\nlora_alpha = 8.0\n[stage2]\nlora_dropout = 0.1\n", "p.toml").unwrap();
    assert_eq!(new.lora, old.lora, "the old spelling reads into [lora]");
    assert_eq!((old.decompose.rank, old.decompose.lora_alpha, old.stage2.lora_dropout), (None, None, None));
    assert_eq!(new, old);
    let c = Config::load(None, &[set("decompose.rank", "16")]).unwrap();
    assert_eq!(c.lora.r, 16);
    let err = Config::from_toml_str("[lora]\nr = 4\n[decompose]\nrank = 16\n", "p.toml").unwrap_err().to_string();
    assert!(err.contains("decompose.rank = 16 and lora.r = 4 disagree"), "{err}");
    // The deprecated keys are never written back (nor hashed); [lora] is.
    let v = serde_json::to_value(&old).unwrap();
    assert!(v["decompose"].get("rank").is_none() && v["stage2"].get("lora_dropout").is_none());
    assert_eq!(v["lora"]["r"], 4);
    let mut bad = valid();
    bad.lora.lora_dropout = 1.0;
    assert_eq!(bad.validate().unwrap_err().to_string(), "lora.lora_dropout must be in [0, 1) (got 1)");
}

#[test]
fn paper_config_names_hub_ids_and_the_architecture_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/paper.toml");
    let cfg = Config::load(Some(&path), &[]).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.model.source, "distilbert-base-uncased", "hub ids are not resolved as paths");
    assert_eq!((cfg.data.source.as_str(), cfg.data.hub_file.as_str(), cfg.data.test_hub_file.as_str()), ("SetFit/20_newsgroups", "train.jsonl", "test.jsonl"));
    assert!(cfg.adapter.target_modules.is_empty() && cfg.adapter.modules_to_save.is_empty(), "DistilBERT's own linears and head");
    assert!(serde_json::to_value(Config::default()).unwrap()["data"].get("test_hub_file").is_none(), "off: not in keys");
}

/// Issue 17: `optim.precision` parses from TOML and `--set`, reaches the training spec, and stays
/// out of the cache keys at its default (fp32 runs keep their artifacts; bf16 ones get their own).
#[test]
fn precision_parses_and_enters_the_keys_only_when_bf16() {
    let cfg = Config::from_toml_str("[optim]\nprecision = \"bf16\"\n", "p.toml").unwrap();
    assert_eq!(cfg.optim.precision, Precision::Bf16);
    let spec = crate::stages::federated::train_spec(&cfg, slora_model::Mode::Full, 2);
    assert_eq!(spec.precision, slora_model::Precision::Bf16);
    let c = Config::load(None, &[set("optim.precision", "bf16")]).unwrap();
    assert_eq!(c.optim.precision, Precision::Bf16);
    let off = serde_json::to_value(Config::default()).unwrap();
    assert!(off["optim"].get("precision").is_none());
    assert_eq!(serde_json::to_value(&cfg).unwrap()["optim"]["precision"], "bf16");
    // The training stages' keys carry bf16's revision, and only in bf16.
    use crate::stages::federated::{federated_params, BF16_NUMERICS};
    assert_eq!(federated_params(&cfg)["bf16_numerics"], BF16_NUMERICS);
    assert!(federated_params(&Config::default()).get("bf16_numerics").is_none());
    let err = Config::from_toml_str("[optim]\nprecision = \"fp16\"\n", "p.toml").unwrap_err().to_string();
    assert!(err.contains("optim.precision") && err.contains("bf16"), "{err}");
}

#[test]
fn a_replicate_of_a_replicate_is_that_replicate() {
    let mut c = valid();
    c.partition.vary_with_seed = true;
    let (one, two) = (c.for_seed(1), c.for_seed(2));
    assert_ne!(one.partition.seed, two.partition.seed, "partitions vary with the seed");
    assert_eq!(one.for_seed(2).partition.seed, two.partition.seed);
    assert_eq!(one.for_seed(1).partition.seed, one.partition.seed);
    c.partition.vary_with_seed = false;
    assert_eq!(c.for_seed(3).partition.seed, c.partition.seed);
}

/// The newer methods' keys: each bad value is refused by its key; at their defaults they stay out
/// of the serialised config (so no existing cache key moves).
#[test]
fn newer_method_keys_are_checked_and_stay_out_of_the_keys_at_their_defaults() {
    let bad = |toml: &str| {
        let mut c = Config::from_toml_str(toml, "p.toml").unwrap();
        (c.data.source, c.model.source) = (valid().data.source, valid().model.source);
        c.validate().unwrap_err().to_string()
    };
    let e = bad("[lora]\nr = 4\na2_rank_budget = 5\n");
    assert!(e.contains("lora.a2_rank_budget must be at most lora.r = 4 (got 5)"), "{e}");
    let e = bad("[optim]\nlora_b_lr_ratio = 0.0\n");
    assert!(e.contains("optim.lora_b_lr_ratio must be a number > 0"), "{e}");
    let e = bad("[baselines]\nflexlora_lr = -1.0\n");
    assert!(e.contains("baselines.flexlora_lr"), "{e}");
    let e = bad("[tune]\nlora-a2 = [0.0]\n");
    assert!(e.contains("tune.lora-a2"), "{e}");
    let cfg = Config::from_toml_str("[adapter]\nfreeze_head = false\n[lora]\na2_rank_budget = 0\n", "p.toml").unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    for key in ["freeze_head", "a2_rank_budget", "lora_b_lr_ratio", "fedex_lora_lr", "lora_a2_lr", "flexlora_lr", "fedex-lora", "\"flexlora\""] {
        assert!(!json.contains(key), "{key} serialised at its default: {json}");
    }
    assert_eq!(cfg.lora.a2_budget(), 4, "0 = r / 2");
    let on = Config::from_toml_str("[adapter]\nfreeze_head = true\n[optim]\nlora_b_lr_ratio = 5.0\n", "p.toml").unwrap();
    let json = serde_json::to_string(&on).unwrap();
    assert!(json.contains("\"freeze_head\":true") && json.contains("\"lora_b_lr_ratio\":5.0"), "{json}");
}
