//! Comparisons a reviewer would accept, end to end on the tiny config (SST-2, MiniLM-L3, 4 clients):
//! the head's own learning rate reaches FFT's head, `tune` selects on validation rows and ignores the
//! test set, two seeds are two cached runs whose report CI matches one computed here from the two
//! runs' own `summary.json`, and the switch's cost appears in Stage 2's first-round download.

use std::path::{Path, PathBuf};

use serde_json::Value;
use slora_metrics::read_parquet;
use slora_federation::{ClassifierLearner, Learner, OptimSettings, Schedule};
use slora_model::optim::AdamWConfig;
use slora_model::{Classifier, EncoderConfig, Mode, ModelFiles, TrainSpec, Weights};

use crate::common::{shared, tiny_toml, ScratchDir};

/// Runs `pipeline --config dir/tiny.toml ARGS`; panics with stderr on failure; returns stderr.
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = crate::common::pipeline_in(dir)
        .arg("--config")
        .arg(dir.join("tiny.toml"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pipeline {args:?} failed:\n{stderr}");
    stderr
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The artifact folder `pipeline.lock` records for `stage`.
fn artifact(dir: &Path, stage: &str) -> PathBuf {
    let lock = json(&dir.join("artifacts/pipeline.lock"));
    let key = lock["stages"][stage]["key"].as_str().unwrap_or_else(|| panic!("{stage} not in pipeline.lock"));
    dir.join("artifacts").join(stage).join(key)
}

#[test]
fn head_learning_rate_reaches_fft_head_parameters() -> anyhow::Result<()> {
    let (cfg, weights) = minilm()?;
    let (model, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Full, 2, 7))?;
    let (lr, head_lr) = (1e-5, 1e-2);
    let adamw = AdamWConfig { lr, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut learner = ClassifierLearner::new(model, OptimSettings { adamw, head_lr: Some(head_lr), schedule: Schedule::Constant, lora_b_lr_ratio: 1.0 });
    let before = learner.trainable_state()?;
    learner.begin_local(1)?;
    assert_eq!(learner.optimizer().unwrap().lr_of("classifier.weight"), Some(head_lr));
    assert_eq!(learner.optimizer().unwrap().lr_of("bert.pooler.dense.weight"), Some(head_lr));
    assert_eq!(learner.optimizer().unwrap().lr_of("bert.encoder.layer.0.attention.self.query.weight"), Some(lr));
    let ids: Vec<&[u32]> = vec![&[101, 2023, 3185, 2003, 2307, 102], &[101, 6659, 1010, 4756, 102]];
    learner.train_step(&ids, &[0, 1], 3)?;
    let after = learner.trainable_state()?;
    // Adam's first step moves every entry by lr · g / (|g| + ε) ≈ lr: the largest move of a tensor
    // measures the rate its group trained at (to f32 rounding of the weight: ≤ 2.4e-7 at |w| ≤ 2).
    let (mut head_seen, mut body_max) = (0, 0f64);
    for (name, b) in &before {
        let moved = (after[name].to_dtype(candle_core::DType::F64)? - b.to_dtype(candle_core::DType::F64)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        if learner.model().is_head_tensor(name) {
            head_seen += 1;
            assert!((0.9 * head_lr..=1.01 * head_lr).contains(&moved), "{name} moved {moved:e}, head lr {head_lr:e}");
        } else {
            body_max = body_max.max(moved);
            assert!(moved <= 1.05 * lr, "{name} moved {moved:e} > backbone lr {lr:e}");
        }
    }
    assert_eq!(head_seen, 4, "pooler and classifier weight and bias");
    assert!(body_max > 0.9 * lr, "the backbone trained too: largest move {body_max:e}");
    Ok(())
}

/// Mean validation accuracy of the last `k` evaluated rounds (after round 0) of one tune point.
fn score(rows: &[slora_metrics::RoundMetrics], k: usize) -> f64 {
    let acc: Vec<f64> = rows.iter().filter(|r| r.round > 0).filter_map(|r| r.accuracy).collect();
    let tail = &acc[acc.len() - k..];
    tail.iter().sum::<f64>() / k as f64
}

#[test]
fn tune_selects_on_validation_rows_and_ignores_the_test_set() {
    let tune = "[tune]\nfft = []\nsft = []\nlora = [1e-5, 3e-3]\nrounds = 2\nlast_k = 2\n";
    let mut results = Vec::new();
    for (name, max_test) in [("tune-a", 100), ("tune-b", 60)] {
        let dir = ScratchDir::new(name);
        std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 200, max_test, tune)).unwrap();
        if name == "tune-a" {
            // Before tune has run, status says what waits for it instead of failing.
            let out = crate::common::pipeline_in(&dir)
                .args(["--config", "tiny.toml", "--set", "baselines.lora_lr=tuned", "status"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("tune       missing"), "{stdout}");
            assert!(stdout.contains("waits for `pipeline tune` (baselines.lora_lr = \"tuned\")"), "{stdout}");
        }
        run_ok(&dir, &["--set", "partition.validation_fraction=0.2", "tune"]);
        let tune_dir = artifact(&dir, "tune");
        let summary = json(&tune_dir.join("manifest.json"))["summary"].clone();
        let rows = read_parquet(&tune_dir.join("metrics.parquet")).unwrap();
        // Recompute each point's score from the metrics and check the choice is the best one.
        let mut best = (f64::NEG_INFINITY, 0.0);
        for p in summary["methods"]["lora"]["points"].as_array().unwrap() {
            let lr = p["lr"].as_f64().unwrap();
            let method = format!("tune-lora-{lr:e}");
            let point: Vec<_> = rows.iter().filter(|r| r.method == method).cloned().collect();
            assert_eq!(point.len(), 3, "{method}: round 0 + 2 rounds");
            assert!(point.iter().all(|r| r.eval_rows == summary["validation_rows"].as_u64().unwrap()), "scored on the validation rows");
            let s = score(&point, 2);
            assert_eq!(p["score"].as_f64().unwrap(), s, "{method}");
            if s > best.0 {
                best = (s, lr);
            }
        }
        assert_eq!(summary["methods"]["lora"]["chosen"].as_f64().unwrap(), best.1);
        assert_eq!(summary["validation_rows"].as_u64().unwrap(), 40, "20 % of 200 training rows");
        let partition = json(&artifact(&dir, "partition").join("manifest.json"))["key"].clone();
        results.push((summary, partition, dir));
    }
    let ((a, pa, dir), (b, pb, _)) = (&results[0], &results[1]);
    assert_ne!(pa, pb, "the test sets differ, so the partitions do");
    assert_eq!(a["methods"], b["methods"], "the grid's validation scores and the choice ignore the test set");

    // `"tuned"` takes the choice.
    let stderr = run_ok(
        dir,
        &["--set", "partition.validation_fraction=0.2", "--set", "baselines.methods=[\"lora\"]", "--set", "baselines.lora_lr=tuned", "baselines"],
    );
    assert!(stderr.contains("tune: up to date"), "{stderr}");
    let baselines = json(&artifact(dir, "baselines").join("manifest.json"));
    assert_eq!(baselines["summary"]["methods"]["lora"]["lr"], a["methods"]["lora"]["chosen"]);
}

#[test]
fn two_seeds_are_two_cached_runs_and_the_report_ci_is_the_t_interval() {
    let dir = ScratchDir::new("replicates");
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 100, "[baselines]\nmethods = [\"fft\", \"lora\"]\n")).unwrap();
    let sets = ["--set", "federation.eval_max_rows=50"];
    let summary_of = |seeds: &str| {
        let stderr = run_ok(&dir, &[sets[0], sets[1], "--set", &format!("run.seeds={seeds}"), "all"]);
        (json(&dir.join("reports/tiny/summary.json")), stderr)
    };
    let (one, _) = summary_of("[1]");
    // The switch's cost: Stage 2's first round downloads the sparse ΔW (nnz f32) on top of the state.
    let nnz = json(&artifact(&dir, "stage1").join("manifest.json"))["summary"]["nnz_total"].as_u64().unwrap();
    let stage2 = read_parquet(&artifact(&dir, "stage2").join("metrics.parquet")).unwrap();
    let (switch_row, next) = (&stage2[1], &stage2[2]);
    assert_eq!(switch_row.bytes_down_switch_per_client, 4 * nnz);
    assert_eq!(switch_row.bytes_down_per_client, switch_row.bytes_up_per_client + 4 * nnz, "state down = state up, plus ΔW");
    assert_eq!((next.bytes_down_switch_per_client, next.bytes_down_per_client), (0, next.bytes_up_per_client));
    assert_eq!(switch_row.cum_bytes_down - stage2[0].cum_bytes_down, 2 * switch_row.bytes_up_per_client + 4 * 4 * nnz, "2 sampled, ΔW to all 4");
    // Curves use 50 test rows; the last round is measured on all 100.
    let last = stage2.last().unwrap();
    assert_eq!((last.eval_rows, last.full_test_rows), (50, 100));
    assert!(one["methods"]["slora"]["accuracy_ci95"].is_null(), "one seed: no interval");

    let (two, _) = summary_of("[2]");
    let (both, stderr) = summary_of("[1, 2]");
    for stage in ["partition", "stage1", "decompose", "stage2", "baselines"] {
        assert!(!stderr.contains(&format!("{stage}: running")), "{stage} was cached for both seeds:\n{stderr}");
    }
    assert!(stderr.contains("report: running"), "{stderr}");
    assert_eq!(both["seeds"], serde_json::json!([1, 2]));

    // The interval, recomputed: mean ± t(0.975, 1) · s / √2 with s the sample standard deviation.
    let t = 12.706_204_736;
    let ci = |x: f64, y: f64| {
        let mean = (x + y) / 2.0;
        let s = ((x - mean).powi(2) + (y - mean).powi(2)).sqrt(); // / (n − 1) = 1
        (mean, t * s / 2f64.sqrt())
    };
    for m in ["fft", "lora", "sft", "slora"] {
        let Some(m1) = one["methods"].get(m) else { continue };
        let (x, y) = (m1["accuracy"].as_f64().unwrap(), two["methods"][m]["accuracy"].as_f64().unwrap());
        let (mean, half) = ci(x, y);
        let got = &both["methods"][m];
        assert!((got["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12, "{m}");
        assert!((got["accuracy_ci95"].as_f64().unwrap() - half).abs() < 1e-9, "{m}: {} vs {half}", got["accuracy_ci95"]);
    }
    let acc = |s: &Value, m: &str| s["methods"][m]["accuracy"].as_f64().unwrap();
    let (mean, half) = ci(acc(&one, "fft") - acc(&one, "lora"), acc(&two, "fft") - acc(&two, "lora"));
    let d = both["paired_differences"].as_array().unwrap().iter().find(|d| d["a"] == "fft" && d["b"] == "lora").unwrap();
    assert!((d["interval"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((d["interval"]["half_width"].as_f64().unwrap() - half).abs() < 1e-9);
    let significant = (mean - half > 0.0) || (mean + half < 0.0);
    assert_eq!(d["significant"].as_bool().unwrap(), significant);
    let report = std::fs::read_to_string(dir.join("reports/tiny/report.md")).unwrap();
    assert!(report.contains("2 seeds (1, 2)") && report.contains(" ± "), "the report shows intervals");
    if !significant {
        assert!(report.contains("no significant difference at this budget"));
    }
}

/// `method` and LoRA as the tiny config's baselines: the artifact, and each one's metrics rows
/// (the same rounds). The folder comes back too: the artifact lives as long as it does.
fn beside_lora(method: &str) -> (ScratchDir, PathBuf, Vec<slora_metrics::RoundMetrics>, Vec<slora_metrics::RoundMetrics>) {
    let dir = ScratchDir::new(method);
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 60, &format!("[baselines]\nmethods = [\"{method}\", \"lora\"]\n"))).unwrap();
    run_ok(&dir, &["baselines"]);
    let base = artifact(&dir, "baselines");
    let rows = slora_metrics::read_parquet(&base.join("metrics.parquet")).unwrap();
    let of = |m: &str| rows.iter().filter(|r| r.method == m).cloned().collect::<Vec<_>>();
    let (theirs, lora) = (of(method), of("lora"));
    assert!(theirs.len() >= 3 && theirs.len() == lora.len());
    (dir, base, theirs, lora)
}

/// MiniLM-L3's config and weights from ../shared.
fn minilm() -> anyhow::Result<(EncoderConfig, Weights)> {
    let files = ModelFiles::resolve(&shared("models/paraphrase-MiniLM-L3-v2").display().to_string(), "main")?;
    let cfg = EncoderConfig::from_file(&files.config)?;
    let weights = Weights::load(&files.weights, &cfg)?;
    Ok((cfg, weights))
}

/// The LoRA factors of every adapted linear: module → (A, B), detached copies.
fn factors(model: &Classifier) -> std::collections::BTreeMap<String, (candle_core::Tensor, candle_core::Tensor)> {
    model
        .linears()
        .iter()
        .filter_map(|l| match l.adapter() {
            slora_model::Adapter::Lora(f) => {
                Some((l.module().to_string(), (f.a.as_detached_tensor().copy().unwrap(), f.b.as_detached_tensor().copy().unwrap())))
            }
            _ => None,
        })
        .collect()
}

fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn ffa_lora_trains_b_only_and_its_average_is_exact() -> anyhow::Result<()> {
    let (cfg, weights) = minilm()?;
    let mut lora = slora_model::LoraSpec::new(4, 8.0);
    lora.freeze_a = true;
    let (model, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(lora), 2, 7))?;
    let scale = 8.0 / 4.0;
    let start = factors(&model);
    assert!(!start.is_empty());
    let adamw = AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut learner = ClassifierLearner::new(model, OptimSettings { adamw, head_lr: Some(1e-3), schedule: Schedule::Constant, lora_b_lr_ratio: 1.0 });
    let global = learner.trainable_state()?;
    assert!(global.keys().all(|k| !k.ends_with(".lora_A.weight")), "A is not trainable, so never uploaded");
    assert!(global.keys().any(|k| k.ends_with(".lora_B.weight")));

    // Two clients train from the same global state on different data; the server averages by size.
    let clients: [(&[&[u32]], &[u32], u64); 2] = [
        (&[&[101, 2023, 3185, 2003, 2307, 102], &[101, 6659, 1010, 4756, 102]], &[1, 0], 3),
        (&[&[101, 1037, 6919, 2143, 102], &[101, 2025, 2204, 2012, 2035, 102], &[101, 2307, 102]], &[0, 1, 1], 5),
    ];
    let mut sum = slora_federation::aggregate::WeightedAverage::new();
    let mut local = Vec::new();
    for (ids, labels, samples) in clients {
        learner.set_trainable_state(&global)?;
        learner.begin_local(3)?;
        for step in 0..3 {
            learner.train_step(ids, labels, step)?;
        }
        let state = learner.trainable_state()?;
        // A is bit-equal to its init after training: it never moves.
        for (module, (a, _)) in factors(learner.model()) {
            assert_eq!(bits(&a), bits(&start[&module].0), "{module}: A changed");
        }
        sum.add(&state, samples)?;
        local.push((state, samples as f64));
    }
    let averaged = sum.finish()?;
    learner.set_trainable_state(&averaged)?;
    let total: f64 = local.iter().map(|(_, w)| w).sum();
    for (module, (a, b)) in factors(learner.model()) {
        assert_eq!(bits(&a), bits(&start[&module].0), "{module}: A changed by aggregation");
        // The averaged update (mean B)·A equals the mean of the clients' updates B_i·A, to f32 rounding.
        let of_mean = (b.matmul(&a)? * scale)?;
        let mut mean_of = of_mean.zeros_like()?;
        for (state, w) in &local {
            let bi = &state[&format!("{module}.lora_B.weight")];
            mean_of = (mean_of + (bi.matmul(&a)? * (scale * w / total))?)?;
        }
        let err = (of_mean.clone() - &mean_of)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let size = mean_of.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(size > 0.0, "{module}: B trained");
        assert!(err <= 1e-5 * size.max(1e-3), "{module}: |(mean B)A − mean(BA)| = {err:e} vs {size:e}");
    }
    Ok(())
}

#[test]
fn ffa_lora_baseline_runs_exports_and_keeps_its_init() {
    let dir = ScratchDir::new("ffa-lora");
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"ffa-lora\", \"lora\"]\nffa_lora_lr = 3e-3\n"))
        .unwrap();
    run_ok(&dir, &["baselines"]);
    let base = artifact(&dir, "baselines");
    let summary = json(&base.join("manifest.json"))["summary"]["methods"].clone();
    assert_eq!(summary["ffa-lora"]["lr"].as_f64(), Some(3e-3));
    // B and the head only: LoRA's upload minus every A (r × in floats per adapted matrix).
    let (ffa, lora) = (summary["ffa-lora"]["bytes_up_per_client"].as_u64().unwrap(), summary["lora"]["bytes_up_per_client"].as_u64().unwrap());
    let (cfg, weights) = minilm().unwrap();
    let (fresh, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(8, 16.0)), 2, 7)).unwrap();
    let a_bytes: u64 = factors(&fresh).values().map(|(a, _)| 4 * a.elem_count() as u64).sum();
    assert_eq!(ffa, lora - a_bytes);
    // The exported adapter is an ordinary peft adapter whose A is the seed's init, bit for bit.
    let adapter = slora_model::peft::load_adapter(&base.join("ffa-lora-adapter")).unwrap();
    for (module, (a, _)) in factors(&fresh) {
        assert_eq!(bits(&adapter.tensors[&format!("{module}.lora_A.weight")]), bits(&a), "{module}");
    }
    let out = dir.join("export");
    run_ok(&dir, &["export", "--method", "ffa-lora", "--out", out.to_str().unwrap()]);
    assert!(out.join("adapter/adapter_model.safetensors").is_file());

    // SLoRA's Stage 2 with A frozen: the SVD-initialised A leaves Stage 2 as it came from decompose.
    run_ok(&dir, &["--set", "stage2.freeze_a=true", "stage2"]);
    let init = slora_federation::read_safetensors(&artifact(&dir, "decompose").join("lora_init.safetensors")).unwrap();
    let stage2 = slora_model::peft::load_adapter(&artifact(&dir, "stage2").join("adapter")).unwrap();
    let mut checked = 0;
    for (name, a) in init.iter().filter(|(n, _)| n.ends_with(".lora_A.weight")) {
        assert_eq!(bits(&stage2.tensors[name]), bits(a), "{name}");
        checked += 1;
    }
    assert!(checked > 0);
    let frozen = json(&artifact(&dir, "stage2").join("manifest.json"))["summary"]["bytes_up_per_client"].as_u64().unwrap();
    assert_eq!(frozen, lora - a_bytes, "Stage 2 uploads B and the head only");
}

/// FedEx-LoRA on the real model: after each of two rounds the global function, base offsets
/// included, is the sample-weighted average of the clients' models (every effective weight, to f32
/// rounding); FedAvg of the factors alone is not.
#[test]
fn fedex_lora_global_model_is_the_average_of_the_clients_models() -> anyhow::Result<()> {
    use slora_federation::exact::ProductSum;
    let (cfg, weights) = minilm()?;
    let (model, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(4, 8.0)), 2, 7))?;
    let scale = 8.0 / 4.0;
    let adamw = AdamWConfig { lr: 2e-2, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut learner = ClassifierLearner::new(model, OptimSettings { adamw, head_lr: Some(1e-3), schedule: Schedule::Constant, lora_b_lr_ratio: 1.0 });
    let mut global = learner.trainable_state()?;
    let clients: [(&[&[u32]], &[u32], u64); 3] = [
        (&[&[101, 2023, 3185, 2003, 2307, 102], &[101, 6659, 1010, 4756, 102]], &[1, 0], 3),
        (&[&[101, 1037, 6919, 2143, 102], &[101, 2025, 2204, 2012, 2035, 102], &[101, 2307, 102]], &[0, 1, 1], 5),
        (&[&[101, 4569, 2003, 102], &[101, 2919, 2143, 2003, 6659, 102]], &[0, 0], 2),
    ];
    let total: f64 = clients.iter().map(|c| c.2 as f64).sum();
    let adapted: Vec<String> = factors(learner.model()).into_keys().collect();
    for round in 0..2u64 {
        let (mut sum, mut products) = (slora_federation::aggregate::WeightedAverage::new(), ProductSum::new());
        let mut models = Vec::new();
        for (ids, labels, samples) in clients {
            learner.set_trainable_state(&global)?;
            learner.begin_local(3)?;
            for step in 0..3 {
                learner.train_step(ids, labels, 10 * round + step)?;
            }
            let upload = learner.trainable_state()?;
            assert!(upload.keys().all(|k| !k.ends_with(".base_offset")), "the offsets are never uploaded");
            sum.add(&upload, samples)?;
            products.add(&upload, samples)?;
            models.push((learner.model().effective_weights()?, samples as f64));
        }
        let mean = sum.finish()?;
        let exact = products.finish(mean.clone(), &global, scale)?;
        assert_eq!(exact.keys().filter(|k| k.ends_with(".base_offset")).count(), adapted.len());
        // The plain FedAvg model, for contrast (its offsets are the previous round's).
        let mut plain = mean.clone();
        plain.extend(global.iter().filter(|(k, _)| k.ends_with(".base_offset")).map(|(k, v)| (k.clone(), v.clone())));
        learner.set_trainable_state(&plain)?;
        let fedavg = learner.model().effective_weights()?;
        learner.set_trainable_state(&exact)?;
        let fedex = learner.model().effective_weights()?;
        let mut fedavg_miss = 0f32;
        for module in &adapted {
            let name = format!("{module}.weight");
            let mut want = fedex.get(&name).unwrap().zeros_like()?;
            for (w, n) in &models {
                want = (want + (w.get(&name).unwrap() * (n / total))?)?;
            }
            let size = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let err = (fedex.get(&name).unwrap() - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(err <= 2e-6 * size, "round {round} {module}: |global − mean of clients| = {err:e} (weights up to {size:e})");
            let miss = (fedavg.get(&name).unwrap() - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            fedavg_miss = fedavg_miss.max(miss / size);
        }
        assert!(fedavg_miss > 1e-5, "round {round}: FedAvg of the factors is already exact ({fedavg_miss:e}): nothing is tested");
        global = exact;
    }
    Ok(())
}

/// LoRA-A²'s protocol: the head frozen at its seeded init (nothing of it trains or is uploaded)
/// and B trained at 5× A's rate (LoRA+). One AdamW step moves every entry by about its rate, so
/// B's first step is 5× larger than at ratio 1 and A's is the same.
#[test]
fn frozen_head_uploads_no_head_and_b_trains_at_its_ratio() -> anyhow::Result<()> {
    let (cfg, weights) = minilm()?;
    let mut steps = Vec::new();
    for ratio in [1.0, 5.0] {
        let mut spec = TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(4, 8.0)), 2, 7);
        spec.modules_to_save = Vec::new(); // what `adapter.freeze_head` builds
        let (model, _) = Classifier::new(&cfg, &weights, &spec)?;
        let adamw = AdamWConfig { lr: 1e-3, weight_decay: 0.0, ..AdamWConfig::default() };
        let mut learner = ClassifierLearner::new(model, OptimSettings { adamw, head_lr: Some(1e-3), schedule: Schedule::Constant, lora_b_lr_ratio: ratio });
        let before = learner.trainable_state()?;
        assert!(before.keys().all(|k| k.contains(".lora_")), "only factors train: {:?}", before.keys().collect::<Vec<_>>());
        learner.begin_local(2)?;
        learner.train_step(&[&[101, 2023, 3185, 2003, 2307, 102], &[101, 6659, 1010, 4756, 102]], &[1, 0], 1)?;
        // A second step: B is zero at init, so A's first gradient is zero and only B moves.
        learner.train_step(&[&[101, 1037, 6919, 2143, 102]], &[0], 2)?;
        let after = learner.trainable_state()?;
        let moved = |suffix: &str| -> anyhow::Result<f32> {
            let mut m = 0f32;
            for (k, v) in after.iter().filter(|(k, _)| k.ends_with(suffix)) {
                m = m.max((v - &before[k])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
            }
            Ok(m)
        };
        steps.push((moved(".lora_A.weight")?, moved(".lora_B.weight")?));
    }
    let ((a1, b1), (a5, b5)) = (steps[0], steps[1]);
    assert!(b1 > 0.0 && a1 > 0.0, "{steps:?}");
    assert!((b5 / b1 - 5.0).abs() < 0.05, "B moved {b5:e} at ratio 5, {b1:e} at ratio 1");
    assert!((a5 / a1 - 1.0).abs() < 0.5, "A's step changed with B's ratio: {a5:e} vs {a1:e}");
    Ok(())
}

/// LoRA-A² on the real model, two rounds: round 1 freezes A (bit-equal after training, not sent)
/// and trains B, round 2 the reverse; the upload changes exactly `budget × modules` rank components
/// of the trained factor, the ones with the highest ‖ΔB[:, i]‖·‖A[i, :]‖ (resp. ‖B[:, i]‖·‖ΔA[i, :]‖)
/// recomputed here, and its bytes are those components plus an index each, and the head.
#[test]
fn lora_a2_alternates_the_frozen_factor_and_uploads_its_top_rank_components() -> anyhow::Result<()> {
    use slora_federation::{alternating, local_update, LocalRound, Shard};
    let (cfg, weights) = minilm()?;
    let (model, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(4, 8.0)), 2, 7))?;
    let adamw = AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..AdamWConfig::default() };
    let budget = 2;
    let mut learner = ClassifierLearner::new(model, OptimSettings { adamw, head_lr: Some(1e-3), schedule: Schedule::Constant, lora_b_lr_ratio: 1.0 })
        .alternating(Some(budget));
    let shard = Shard {
        input_ids: vec![vec![101, 2023, 3185, 2003, 2307, 102], vec![101, 6659, 1010, 4756, 102], vec![101, 1037, 6919, 2143, 102]],
        labels: vec![1, 0, 1],
    };
    let mut global = learner.trainable_state()?;
    let modules = global.keys().filter(|k| k.ends_with(".lora_A.weight")).count();
    assert!(modules > 0);
    for round in 1..=2u32 {
        let frozen = alternating::frozen_factor(round);
        let trained = frozen.other();
        assert_eq!(trained, if round == 1 { alternating::Factor::B } else { alternating::Factor::A });
        let local = LocalRound { seed: 3, round, client: 0, local_epochs: 2, batch_size: 2 };
        let update = local_update(&mut learner, &shard, &global, &local, || {})?;
        // The frozen factor did not move, bit for bit, and is not sent.
        let now = learner.trainable_state()?;
        for (name, t) in global.iter().filter(|(n, _)| frozen.holds(n)) {
            assert_eq!(bits(&now[name]), bits(t), "round {round}: {name} moved while frozen");
            assert!(!update.state.contains_key(name), "round {round}: {name} sent while frozen");
        }
        // Scores recomputed from the trained model and the global state.
        let mut scores: Vec<(f64, String, usize)> = Vec::new();
        for (name, t) in now.iter().filter(|(n, _)| trained.holds(n)) {
            let module = name.strip_suffix(trained.suffix()).unwrap();
            let other = &now[&format!("{module}{}", frozen.suffix())];
            let delta = (t - &global[name])?;
            let (d, o) = match trained {
                alternating::Factor::B => (delta.t()?.to_vec2::<f32>()?, other.to_vec2::<f32>()?),
                alternating::Factor::A => (delta.to_vec2::<f32>()?, other.t()?.to_vec2::<f32>()?),
            };
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            for i in 0..d.len() {
                scores.push((norm(&d[i]) * norm(&o[i]), name.clone(), i));
            }
        }
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        let keep: std::collections::BTreeSet<(String, usize)> = scores.iter().take(budget * modules).map(|(_, n, i)| (n.clone(), *i)).collect();
        assert!(scores[budget * modules - 1].0 > scores[budget * modules].0, "a tie at the cut: the test cannot tell");
        // The upload: kept components trained, the rest at the global value; bytes from the shapes.
        let mut want_bytes = 0u64;
        for (name, t) in update.state.iter() {
            if !trained.holds(name) {
                want_bytes += 4 * t.elem_count() as u64; // the head, dense
                continue;
            }
            let (up, g, tr) = match trained {
                alternating::Factor::B => (t.t()?.to_vec2::<f32>()?, global[name].t()?.to_vec2::<f32>()?, now[name].t()?.to_vec2::<f32>()?),
                alternating::Factor::A => (t.to_vec2::<f32>()?, global[name].to_vec2::<f32>()?, now[name].to_vec2::<f32>()?),
            };
            // Selected components plus a 4-byte index each, or the dense factor when smaller (a
            // module that kept all its components).
            let selected = (0..up.len()).filter(|i| keep.contains(&(name.clone(), *i))).count() as u64;
            want_bytes += (selected * (4 * up[0].len() as u64 + 4)).min(4 * t.elem_count() as u64);
            for i in 0..up.len() {
                if keep.contains(&(name.clone(), i)) {
                    assert_eq!(up[i], tr[i], "round {round}: {name} component {i} selected but not sent as trained");
                } else {
                    assert_eq!(up[i], g[i], "round {round}: {name} component {i} not selected but changed");
                }
            }
        }
        assert_eq!(alternating::upload_bytes(&update.state, &global, trained)?, want_bytes);
        // The server keeps the frozen factor and averages the sent one (one client: its upload).
        global.extend(update.state.clone());
    }
    Ok(())
}

/// LoRA-A² end to end: every round uploads one factor's selected components (less than LoRA's B
/// alone), the server keeps the frozen factor, and the run ends in an ordinary peft adapter.
#[test]
fn lora_a2_baseline_runs_and_uploads_less_than_half_of_lora() {
    let (_dir, base, a2, lora) = beside_lora("lora-a2");
    let (cfg, weights) = minilm().unwrap();
    let (fresh, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(8, 16.0)), 2, 7)).unwrap();
    let b_bytes: u64 = factors(&fresh).values().map(|(_, b)| 4 * b.elem_count() as u64).sum();
    for (x, l) in a2.iter().zip(&lora).skip(1) {
        // One factor at half the rank budget (r / 2 of r = 8), plus indices, and the same head.
        assert_eq!(x.bytes_up_head_per_client, l.bytes_up_head_per_client, "round {}", x.round);
        assert!(x.bytes_up_per_client < l.bytes_up_per_client - b_bytes, "round {}: {} vs LoRA {}", x.round, x.bytes_up_per_client, l.bytes_up_per_client);
        assert_eq!(x.bytes_down_per_client, l.bytes_down_per_client, "both factors and the head go down");
        assert!(x.train_loss.unwrap().is_finite());
    }
    assert!(base.join("lora-a2-adapter/adapter_model.safetensors").is_file());
}

/// FlexLoRA end to end: LoRA's bytes both ways (uniform rank), and the final factors are the
/// server's SVD split (A = Vᵀ has orthonormal rows; B = U·S / scale has orthogonal columns).
#[test]
fn flexlora_baseline_sends_svd_factors() {
    let (_dir, base, flex, lora) = beside_lora("flexlora");
    for (x, l) in flex.iter().zip(&lora).skip(1) {
        assert_eq!((x.bytes_up_per_client, x.bytes_down_per_client), (l.bytes_up_per_client, l.bytes_down_per_client), "round {}", x.round);
    }
    assert_eq!(flex[1].train_loss, lora[1].train_loss, "round 1 starts from the same state");
    let adapter = slora_model::peft::load_adapter(&base.join("flexlora-adapter")).unwrap();
    let mut checked = 0;
    for (name, a) in adapter.tensors.iter().filter(|(n, _)| n.ends_with(".lora_A.weight")) {
        let gram = a.matmul(&a.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in gram.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-4, "{name}: A·Aᵀ[{i}][{j}] = {v}");
            }
        }
        let b = &adapter.tensors[&name.replace("lora_A", "lora_B")];
        let bg = b.t().unwrap().matmul(b).unwrap().to_vec2::<f32>().unwrap();
        let scale = bg.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        for (i, row) in bg.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!(i == j || v.abs() <= 1e-4 * scale.max(1e-12), "{name}: BᵀB[{i}][{j}] = {v}");
            }
        }
        checked += 1;
    }
    assert!(checked > 0);
}

/// FedEx-LoRA end to end: uploads exactly LoRA's tensors, downloads LoRA's plus one dense
/// `[out, in]` offset per adapted matrix once a residual exists (round 2 on), counted from the shapes.
#[test]
fn fedex_lora_baseline_charges_its_dense_offsets_on_the_download() {
    let dir = ScratchDir::new("fedex-lora");
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"fedex-lora\", \"lora\"]\n")).unwrap();
    // LoRA alone first: adding FedEx-LoRA re-keys the stage, and LoRA's finished run is resumed from
    // its run cache instead of trained again.
    run_ok(&dir, &["--set", "baselines.methods=[\"lora\"]", "baselines"]);
    let alone = slora_metrics::read_parquet(&artifact(&dir, "baselines").join("metrics.parquet")).unwrap();
    let stderr = run_ok(&dir, &["baselines"]);
    assert!(stderr.contains(" lora: resuming after round"), "{stderr}");
    assert!(!stderr.contains(" lora round 1/"), "LoRA trained again:\n{stderr}");
    let base = artifact(&dir, "baselines");
    let rows = slora_metrics::read_parquet(&base.join("metrics.parquet")).unwrap();
    let of = |m: &str| rows.iter().filter(|r| r.method == m).cloned().collect::<Vec<_>>();
    let (fedex, lora) = (of("fedex-lora"), of("lora"));
    assert!(fedex.len() >= 3 && fedex.len() == lora.len());
    assert!(lora.iter().zip(&alone).all(|(a, b)| a.same_results(b)) && lora.len() == alone.len());
    let (cfg, weights) = minilm().unwrap();
    let (fresh, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(8, 16.0)), 2, 7)).unwrap();
    let dense: u64 = factors(&fresh).values().map(|(a, b)| 4 * (b.dims()[0] * a.dims()[1]) as u64).sum();
    for (x, l) in fedex.iter().zip(&lora).skip(1) {
        assert_eq!(x.bytes_up_per_client, l.bytes_up_per_client, "round {}", x.round);
        let extra = if x.round == 1 { 0 } else { dense };
        assert_eq!(x.bytes_down_per_client, l.bytes_down_per_client + extra, "round {}", x.round);
    }
    // Round 1 starts from the same state with the same clients: the same training loss.
    assert_eq!(fedex[1].train_loss, lora[1].train_loss);
    let summary = json(&base.join("manifest.json"));
    assert!(summary["summary"]["methods"]["fedex-lora"]["final_accuracy"].as_f64().unwrap() > 0.0);
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .current_dir(&dir)
        .args(["--config", "tiny.toml", "export", "--method", "fedex-lora", "--out", "x"])
        .output()
        .unwrap();
    assert!(!err.status.success());
}

/// Issue 13: `stage1.mask = "federated-importance"` end to end on the tiny config.
#[test]
fn federated_mask_has_the_random_masks_size_is_charged_and_is_reused_by_sft() {
    let dir = ScratchDir::new("federated-mask");
    std::fs::write(
        dir.join("tiny.toml"),
        tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"sft\"]\nsft_lr = 1e-3\n"),
    )
    .unwrap();
    run_ok(&dir, &["stage1"]);
    let random = json(&artifact(&dir, "stage1").join("manifest.json"))["summary"].clone();
    assert_eq!(random["mask"]["kind"], "random");
    let fed = ["--set", "stage1.mask=federated-importance", "--set", "stage1.mask_batches=2"];
    let log = run_ok(&dir, &[fed[0], fed[1], fed[2], fed[3], "stage1"]);
    assert!(log.contains("mask round: clients"), "{log}");
    let stage1 = artifact(&dir, "stage1");
    let learned = json(&stage1.join("manifest.json"))["summary"].clone();
    let mask = &learned["mask"];
    assert_eq!(mask["kind"], "federated-importance");
    assert_eq!(mask["clients"].as_array().unwrap().len(), 2, "federation.clients_per_round clients score");
    // Exactly the random mask's size per matrix, and a different choice of entries.
    let mut k_total = 0;
    for (module, m) in learned["matrices"].as_object().unwrap() {
        assert_eq!(m["nnz"], random["matrices"][module]["nnz"], "{module}");
        k_total += m["nnz"].as_u64().unwrap();
        let shared = m["overlap_with_random"].as_f64().unwrap();
        assert!(shared < 0.5, "{module}: the learned mask shares {shared} of its entries with the seed's");
    }
    // Every upload is at most k indices + k scores per matrix; the broadcast is k indices.
    assert_eq!(mask["bytes_up_per_client"].as_u64().unwrap(), 8 * k_total);
    assert_eq!(mask["bytes_down_per_client"].as_u64().unwrap(), 4 * k_total);
    let largest_k = learned["matrices"].as_object().unwrap().values().map(|m| m["nnz"].as_u64().unwrap()).max().unwrap();
    assert!(mask["largest_upload"].as_u64().unwrap() <= 8 * largest_k);
    // The round-0 row charges the mask round: uploads of the scoring clients, the mask to all 4.
    let rows = read_parquet(&stage1.join("metrics.parquet")).unwrap();
    let r0 = &rows[0];
    assert_eq!((r0.round, r0.clients), (0, 2));
    assert_eq!(r0.bytes_up_per_client, 8 * k_total);
    assert_eq!(r0.cum_bytes_up, 2 * 8 * k_total);
    assert_eq!(r0.bytes_down_switch_per_client, 4 * k_total);
    assert_eq!(r0.cum_bytes_down, 4 * 4 * k_total);
    assert!(r0.train_seconds > 0.0);
    assert_eq!(rows[1].cum_bytes_up, r0.cum_bytes_up + 2 * rows[1].bytes_up_per_client);
    // Deterministic: a fresh run elsewhere learns the same mask and the same metrics.
    let saved = slora_federation::read_safetensors(&stage1.join("sparse_delta.safetensors")).unwrap();
    let again_dir = ScratchDir::new("federated-mask-again");
    std::fs::copy(dir.join("tiny.toml"), again_dir.join("tiny.toml")).unwrap();
    run_ok(&again_dir, &[fed[0], fed[1], fed[2], fed[3], "stage1"]);
    let again = slora_federation::read_safetensors(&artifact(&again_dir, "stage1").join("sparse_delta.safetensors")).unwrap();
    for (name, t) in saved.iter().filter(|(n, _)| n.ends_with(".indices")) {
        assert_eq!(t.to_vec1::<u32>().unwrap(), again[name].to_vec1::<u32>().unwrap(), "{name}");
    }
    let rows_again = read_parquet(&artifact(&again_dir, "stage1").join("metrics.parquet")).unwrap();
    assert!(rows.iter().zip(&rows_again).all(|(a, b)| a.same_results(b)));
    // SFT trains the learned mask (continuing Stage 1) and carries the mask round's costs.
    run_ok(&dir, &[fed[0], fed[1], fed[2], fed[3], "baselines"]);
    let sft = read_parquet(&artifact(&dir, "baselines").join("metrics.parquet")).unwrap();
    assert_eq!((sft[0].clients, sft[0].bytes_up_per_client, sft[0].cum_bytes_down), (2, r0.bytes_up_per_client, r0.cum_bytes_down));
}

/// Heterogeneous client ranks on the real model: a rank-4 client held in a rank-8 model (the
/// download zero-padded) trains exactly a rank-4 LoRA: the components past 4 stay exactly zero,
/// and its upload, cut to rank 4, matches a rank-4 model's at the same scale to f32 rounding.
#[test]
fn a_low_rank_client_in_a_high_rank_model_trains_a_true_low_rank_lora() -> anyhow::Result<()> {
    let (cfg, weights) = minilm()?;
    let spec = |r: usize, alpha: f64| TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(r, alpha)), 2, 7);
    let settings = || OptimSettings {
        adamw: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..AdamWConfig::default() },
        head_lr: Some(1e-3),
        schedule: Schedule::Constant,
        lora_b_lr_ratio: 1.0,
    };
    let (wide, _) = Classifier::new(&cfg, &weights, &spec(8, 16.0))?;
    // Half the rank at half the alpha: the same scale alpha / r = 2.
    let (narrow, _) = Classifier::new(&cfg, &weights, &spec(4, 8.0))?;
    let mut wide = ClassifierLearner::new(wide, settings());
    let mut narrow = ClassifierLearner::new(narrow, settings());
    // A global state whose B is not zero, so every factor has a gradient from step 1.
    let mut global = wide.trainable_state()?;
    for (name, t) in global.iter_mut().filter(|(n, _)| n.ends_with(".lora_B.weight")) {
        *t = (t.ones_like()? * 1e-2)?;
        assert_eq!(t.dims()[1], 8, "{name}");
    }
    let download = slora_federation::ranks::truncate(&global, 4)?;
    let ids: &[&[u32]] = &[&[101, 2023, 3185, 2003, 2307, 102], &[101, 6659, 1010, 4756, 102]];
    let mut uploads = Vec::new();
    for learner in [&mut wide, &mut narrow] {
        learner.set_trainable_state(&download)?;
        learner.begin_local(3)?;
        for step in 0..3 {
            learner.train_step(ids, &[1, 0], step)?;
        }
        uploads.push(learner.upload_state()?);
    }
    for (module, (a, b)) in factors(wide.model()) {
        assert_eq!((a.dims()[0], b.dims()[1]), (8, 8));
        let tail = a.narrow(0, 4, 4)?.abs()?.max_all()?.to_scalar::<f32>()?.max(b.narrow(1, 4, 4)?.abs()?.max_all()?.to_scalar::<f32>()?);
        assert_eq!(tail, 0.0, "{module}: a component past the client's rank moved");
    }
    let (held, own) = (&uploads[0], &uploads[1]);
    assert_eq!(held.keys().collect::<Vec<_>>(), own.keys().collect::<Vec<_>>());
    let mut moved = 0;
    for (name, t) in held {
        assert_eq!(t.dims(), own[name].dims(), "{name}: the upload is cut to the client's rank");
        let err = (t - &own[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        let size = own[name].abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err <= 1e-5 * size.max(1e-3), "{name}: {err:e} vs {size:e}");
        if name.ends_with(".lora_A.weight") && (t - &download[name])?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0 {
            moved += 1;
        }
    }
    assert!(moved > 0, "A trained");
    Ok(())
}

/// `federation.client_ranks = [4, 8]` end to end (LoRA zero-padded, FlexLoRA, SLoRA's Stage 2):
/// every round's upload and download per client is the mean, over that round's sampled clients,
/// of the head plus each client's rank's factors, counted here from a fresh model's shapes.
#[test]
fn heterogeneous_client_ranks_charge_each_clients_rank_both_ways() {
    let dir = ScratchDir::new("client-ranks");
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"lora\", \"flexlora\"]\n")).unwrap();
    let ranks = ["--set", "federation.client_ranks=[4, 8]"];
    run_ok(&dir, &[ranks[0], ranks[1], "baselines"]);
    run_ok(&dir, &[ranks[0], ranks[1], "stage2"]);
    let (cfg, weights) = minilm().unwrap();
    let (fresh, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(8, 16.0)), 2, 7)).unwrap();
    let state = ClassifierLearner::new(fresh, OptimSettings {
        adamw: AdamWConfig::default(),
        head_lr: None,
        schedule: Schedule::Constant,
        lora_b_lr_ratio: 1.0,
    })
    .trainable_state()
    .unwrap();
    let per_rank: u64 = state.iter().filter(|(n, _)| n.ends_with(".lora_A.weight")).map(|(_, a)| 4 * a.dims()[1] as u64).sum::<u64>()
        + state.iter().filter(|(n, _)| n.ends_with(".lora_B.weight")).map(|(_, b)| 4 * b.dims()[0] as u64).sum::<u64>();
    let head: u64 = state.iter().filter(|(n, _)| !n.contains(".lora_")).map(|(_, t)| 4 * t.elem_count() as u64).sum();
    // Client c trains rank [4, 8][c % 2]; the tiny config: 4 clients, 2 per round, seed 7.
    let mean_bytes = |round: u32| {
        let chosen = slora_federation::sampling::sample_clients(4, 2, 7, round);
        chosen.iter().map(|c| head + per_rank * [4u64, 8][c % 2]).sum::<u64>() / chosen.len() as u64
    };
    let rows = |stage: &str| slora_metrics::read_parquet(&artifact(&dir, stage).join("metrics.parquet")).unwrap();
    let baselines = rows("baselines");
    let mut mixed = 0;
    for method in ["lora", "flexlora"] {
        for r in baselines.iter().filter(|r| r.method == method && r.round > 0) {
            let want = mean_bytes(r.round);
            assert_eq!((r.bytes_up_per_client, r.bytes_down_per_client), (want, want), "{method} round {}", r.round);
            mixed += usize::from(want != head + per_rank * 4 && want != head + per_rank * 8);
        }
    }
    assert!(mixed > 0, "no round sampled both ranks: the test does not test the mean");
    let stage2 = rows("stage2");
    let rounds: Vec<_> = stage2.iter().filter(|r| r.method == "slora-stage2" && r.round > 2).collect();
    assert!(rounds.len() >= 2);
    for r in rounds {
        assert_eq!(r.bytes_up_per_client, mean_bytes(r.round), "slora round {}", r.round);
        assert_eq!(r.bytes_down_per_client - r.bytes_down_switch_per_client, mean_bytes(r.round), "slora round {}", r.round);
    }
    // A rank above lora.r, and a method with one rank for every client, are refused by key.
    let out = crate::common::pipeline_in(&dir).args(["--config", "tiny.toml", "--set", "federation.client_ranks=[4, 16]", "baselines"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("federation.client_ranks must be a list whose largest rank is lora.r = 8"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = crate::common::pipeline_in(&dir)
        .args(["--config", "tiny.toml", "--set", "federation.client_ranks=[4, 8]", "--set", "baselines.methods=[\"ffa-lora\"]", "baselines"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("baselines.methods must be free of ffa-lora"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// FedSA-LoRA end to end: clients send and receive only the A factors (counted from the shapes);
/// each keeps its own B and head between rounds (the final checkpoint holds every client's, and
/// they differ); the report measures it both ways, and the personal numbers, recomputed from the
/// run cache's checkpoint after the stage is re-keyed, are bit-identical.
#[test]
fn fedsa_lora_shares_only_a_and_is_measured_on_each_clients_own_rows() {
    let dir = ScratchDir::new("fedsa-lora");
    std::fs::write(
        dir.join("tiny.toml"),
        tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"fedsa-lora\", \"lora\"]\n").replace("[partition]\n", "[partition]\nvalidation_fraction = 0.25\n"),
    )
    .unwrap();
    run_ok(&dir, &["all"]);
    let base = artifact(&dir, "baselines");
    let rows = slora_metrics::read_parquet(&base.join("metrics.parquet")).unwrap();
    let fedsa: Vec<_> = rows.iter().filter(|r| r.method == "fedsa-lora" && r.round > 0).collect();
    let (cfg, weights) = minilm().unwrap();
    let (fresh, _) = Classifier::new(&cfg, &weights, &TrainSpec::new(Mode::Lora(slora_model::LoraSpec::new(8, 16.0)), 2, 7)).unwrap();
    let a_bytes: u64 = factors(&fresh).values().map(|(a, _)| 4 * a.elem_count() as u64).sum();
    assert!(fedsa.len() >= 3);
    for r in &fedsa {
        assert_eq!((r.bytes_up_per_client, r.bytes_down_per_client), (a_bytes, a_bytes), "round {}", r.round);
        assert_eq!((r.bytes_up_head_per_client, r.bytes_down_head_per_client), (0, 0), "round {}", r.round);
    }
    let manifest = json(&base.join("manifest.json"));
    let personal = &manifest["summary"]["methods"]["fedsa-lora"]["personal"];
    let held_out: u64 = json(&artifact(&dir, "partition").join("manifest.json"))["summary"]["validation_rows_per_client"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!((personal["clients"].as_u64(), personal["rows"].as_u64()), (Some(4), Some(held_out)), "{personal}");
    // A partition written before the counts were recorded gets them recomputed from the data: the
    // same counts, and the shards' sizes.
    let cfg = slora_pipeline::config::Config::load(Some(&dir.join("tiny.toml")), &[]).unwrap();
    let (counts, train_rows) = slora_pipeline::stages::partition::recompute_validation_rows_per_client(&cfg).unwrap();
    let summary = json(&artifact(&dir, "partition").join("manifest.json"))["summary"].clone();
    assert_eq!(serde_json::to_value(&counts).unwrap(), summary["validation_rows_per_client"]);
    assert_eq!(serde_json::to_value(&train_rows).unwrap(), summary["rows_per_client"]);
    for key in ["personal_accuracy", "global_accuracy_same_rows"] {
        assert!((0.0..=1.0).contains(&personal[key].as_f64().unwrap()), "{personal}");
    }
    assert!(manifest["summary"]["methods"]["lora"]["personal"].is_null(), "a global method has no personal evaluation");
    // Every client that trained keeps its own B and head; two of them differ.
    let runs = base.parent().unwrap().join(".runs");
    let run = std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("fedsa-lora-")).unwrap();
    let mut checkpoints: Vec<_> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    checkpoints.sort();
    let state = slora_federation::read_safetensors(checkpoints.last().unwrap()).unwrap();
    let kept = |client: usize| -> Vec<(String, Vec<u32>)> {
        state.iter().filter_map(|(n, t)| n.strip_prefix(&format!("client-kept.{client}.")).filter(|n| *n != "rows").map(|n| (n.to_string(), bits(t)))).collect()
    };
    let trained: Vec<_> = (0..4).map(kept).filter(|k| !k.is_empty()).collect();
    assert!(trained.len() >= 2, "clients that trained keep their state");
    assert!(trained[0].iter().all(|(n, _)| n.ends_with(".lora_B.weight") || !n.contains(".lora_")), "only B and the head are kept");
    assert_ne!(trained[0], trained[1], "two clients keep different B and heads");
    let report: Value = json(&dir.join("reports/tiny/summary.json"));
    assert_eq!(report["personal"][0]["method"], "fedsa-lora", "{}", report["personal"]);
    let md = std::fs::read_to_string(dir.join("reports/tiny/report.md")).unwrap();
    assert!(md.contains("Personalised evaluation"), "{md}");
    // Re-keyed (LoRA dropped): FedSA-LoRA resumes its finished run and measures it again from the checkpoint.
    let stderr = run_ok(&dir, &["--set", "baselines.methods=[\"fedsa-lora\"]", "baselines"]);
    assert!(!stderr.contains("fedsa-lora round 1/"), "trained again:\n{stderr}");
    let again = json(&artifact(&dir, "baselines").join("manifest.json"));
    assert_eq!(&again["summary"]["methods"]["fedsa-lora"]["personal"], personal);
    // Without per-client held-out rows: the global number alone, and a warning that says what to set.
    let stderr = run_ok(&dir, &["--set", "partition.validation_fraction=0", "baselines"]);
    assert!(stderr.contains("no personalised evaluation") && stderr.contains("set partition.validation_fraction > 0"), "{stderr}");
    let without = json(&artifact(&dir, "baselines").join("manifest.json"));
    assert!(without["summary"]["methods"]["fedsa-lora"]["personal"].is_null() && without["summary"]["methods"]["fedsa-lora"]["final_accuracy"].is_number());
}

/// RoBERTa (issue 27): the tiny random checkpoint saved by transformers (tests/fixtures/roberta-tiny,
/// byte-level BPE through its tokenizer.json) through the whole pipeline on the tiny config with
/// nothing but `model.source` changed: the per-architecture defaults adapt BERT's six linears and
/// train the head `classifier.dense` → `classifier.out_proj`; every federated round runs, and
/// LoRA uploads exactly its factors and that head, counted from the checkpoint's shapes.
#[test]
fn roberta_runs_the_pipeline_with_only_the_model_source_changed() {
    let dir = ScratchDir::new("roberta");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roberta-tiny");
    std::fs::write(dir.join("tiny.toml"), tiny_toml(7, 120, 60, "[baselines]\nmethods = [\"lora\", \"flexlora\"]\n")).unwrap();
    let source = format!("model.source={}", fixture.display());
    run_ok(&dir, &["--set", &source, "all"]);
    let rows = slora_metrics::read_parquet(&artifact(&dir, "baselines").join("metrics.parquet")).unwrap();
    let lora: Vec<_> = rows.iter().filter(|r| r.method == "lora").collect();
    assert_eq!(lora.len(), 5, "round 0 and 4 rounds");
    let cfg: Value = json(&fixture.join("config.json"));
    let (h, i, labels) = (cfg["hidden_size"].as_u64().unwrap(), cfg["intermediate_size"].as_u64().unwrap(), 2u64);
    let layers = cfg["num_hidden_layers"].as_u64().unwrap();
    // Per layer at r = 8: q, k, v, attention.output.dense (h→h), intermediate (h→i), output (i→h).
    let factors = layers * 8 * (4 * 2 * h + 2 * (h + i));
    let head = h * h + h + labels * h + labels;
    for r in lora.iter().skip(1) {
        assert_eq!(r.bytes_up_per_client, 4 * (factors + head), "round {}", r.round);
        assert_eq!(r.bytes_up_head_per_client, 4 * head, "round {}", r.round);
        assert!(r.train_loss.is_some_and(f64::is_finite));
    }
    assert!(lora.last().unwrap().final_accuracy().is_some());
    let summary: Value = json(&dir.join("reports/tiny/summary.json"));
    for m in ["lora", "flexlora", "slora", "fft", "sft"].iter().filter(|m| summary["methods"][**m].is_object()) {
        assert!(summary["methods"][*m]["accuracy"].is_number(), "{m}");
    }
    assert!(summary["methods"]["slora"]["accuracy"].is_number(), "SLoRA ran on RoBERTa");
}
