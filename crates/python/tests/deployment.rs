//! Issue 12's core promise, without the network: clients that each hold one shard and their own
//! model (`slora::Client`), and a server (`slora::Server`) that samples, checks and averages their
//! replies, reproduce the in-process `pipeline` run's metrics rows bit for bit (every column but the
//! timings) — for LoRA and for SLoRA's two stages across the switch. The Flower app moves exactly
//! these calls over the network. (Needs ../shared: the CI config's data and model.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use slora_metrics::RoundMetrics;
use slora_pipeline::config::parse_set;
use slora_pipeline::runner::{Force, Runner};
use slora_pipeline::{Config, Store};

/// One method's run the way a deployment runs it: a fresh client per (round, client), as a Flower
/// ClientApp process per message, each opening only its own shard.
fn deployed(config: &Path, sets: &[String], method: &str, partition: &Path, stage1: Option<&slora::Server>) -> anyhow::Result<slora::Server> {
    let mut server = slora::Server::open(config, sets, method, partition, None, None, stage1)?;
    let stage1_state = stage1.map(|s| s.global().clone());
    while let Some(plan) = server.begin_round() {
        let global = server.global().clone();
        // What a client echoes: the digest of the state it trained from.
        let digest = slora_federation::state_digest(&global);
        for &c in &plan.chosen {
            let shard = partition.join(slora_data::shard::client_file_name(c));
            let mut client = slora::Client::open(config, sets, method, &shard, stage1_state.as_ref())?;
            let (update, losses) = client.fit(&global, plan.round, c)?;
            server.accept(c, plan.round, &digest, &update, client.rows() as u64, &losses, 0.0)?;
        }
        server.finish_round()?;
    }
    Ok(server)
}

/// The CI config with one `--set` override: its path, the override as the bindings take it, and
/// the config as the pipeline loads it.
fn ci_config(set: &str) -> anyhow::Result<(PathBuf, Vec<String>, Config)> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ci.toml");
    let sets = vec![set.to_string()];
    let overrides = sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
    let cfg = Config::load(Some(&config), &overrides)?;
    Ok((config, sets, cfg))
}

/// `stages` run in process on `cfg` in a fresh artifacts folder: the folder, the partition artifact
/// and every metrics row by method.
fn run_in_process(cfg: &Config, stages: &[&str]) -> anyhow::Result<(tempfile::TempDir, slora_pipeline::Artifact, BTreeMap<String, Vec<RoundMetrics>>)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut runner = Runner::new(cfg, &store, Force::Nothing);
    let partition = runner.run("partition")?;
    let mut rows: BTreeMap<String, Vec<RoundMetrics>> = BTreeMap::new();
    for stage in stages {
        for row in slora_metrics::read_parquet(&runner.run(stage)?.file("metrics.parquet"))? {
            rows.entry(row.method.clone()).or_default().push(row);
        }
    }
    Ok((dir, partition, rows))
}

fn assert_same_rows(deployed: &[RoundMetrics], in_process: &[RoundMetrics]) {
    assert_eq!(deployed.len(), in_process.len());
    for (d, p) in deployed.iter().zip(in_process) {
        assert!(d.same_results(p), "deployed {d:?}\nin-process {p:?}");
    }
}

#[test]
fn a_deployed_server_and_clients_reproduce_the_in_process_lora_and_slora_runs_bit_for_bit() -> anyhow::Result<()> {
    let (config, sets, cfg) = ci_config("baselines.methods=[\"lora\"]")?;
    let (dir, partition, in_process) = run_in_process(&cfg, &["baselines", "stage1", "stage2"])?;
    let store = Store::open(dir.path())?;
    let mut runner = Runner::new(&cfg, &store, Force::Nothing);

    let lora = deployed(&config, &sets, "lora", &partition.dir, None)?;
    assert_same_rows(lora.metrics(), &in_process["lora"]);
    let stage1 = deployed(&config, &sets, slora::STAGE1, &partition.dir, None)?;
    assert_same_rows(stage1.metrics(), &in_process[slora::STAGE1]);
    let stage2 = deployed(&config, &sets, slora::STAGE2, &partition.dir, Some(&stage1))?;
    assert_same_rows(stage2.metrics(), &in_process[slora::STAGE2]);
    let switch = stage2.switch().expect("stage 2 has a switch");
    assert_eq!(switch.bytes_per_client, slora_federation::state_bytes(&slora::switch_payload(stage1.global())));
    assert_eq!(stage2.metrics()[1].bytes_down_switch_per_client, switch.bytes_per_client);

    // `slora.decompose` is the decompose stage's output, bit for bit.
    let lora_init = slora_federation::read_safetensors(&runner.run("decompose")?.file(slora_pipeline::stages::decompose::LORA_INIT_FILE))?;
    let labels = slora_data::LabelSet::read(&partition.file("labels.json"))?;
    let mine = slora::decompose(&cfg, labels.num_labels, stage1.global())?;
    assert_eq!(mine.keys().collect::<Vec<_>>(), lora_init.keys().collect::<Vec<_>>());
    for (name, t) in &lora_init {
        assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, mine[name].flatten_all()?.to_vec1::<f32>()?, "{name}");
    }

    // A client-side evaluation of the final state scores what the server recorded, on every test row.
    for (server, method) in [(&lora, "lora"), (&stage2, slora::STAGE2)] {
        let last = server.metrics().last().expect("rounds");
        let shard = partition.file(&slora_data::shard::client_file_name(0));
        let mut client = slora::Client::open(&config, &sets, method, &shard, Some(stage1.global()))?;
        let eval = client.evaluate(server.global(), &partition.file("test.parquet"))?;
        assert_eq!((eval.accuracy, eval.rows), (last.final_accuracy().expect("final accuracy"), last.full_test_rows.max(last.eval_rows)));
        println!("{method} deployed: final accuracy {:.4} on {} rows", eval.accuracy, eval.rows);
    }

    // Malformed replies are refused with a reason and do not touch the round.
    let mut server = slora::Server::open(&config, &sets, "lora", &partition.dir, None, None, None)?;
    let plan = server.begin_round().expect("a round");
    let c = plan.chosen[0];
    let global = server.global().clone();
    let digest = slora_federation::state_digest(&global);
    let mut client = slora::Client::open(&config, &sets, "lora", &partition.file(&slora_data::shard::client_file_name(c)), None)?;
    let (mut bad, losses) = client.fit(&global, plan.round, c)?;
    let name = bad.keys().next().expect("tensors").clone();
    bad.insert(name.clone(), candle_core::Tensor::zeros(7, candle_core::DType::F32, &candle_core::Device::Cpu)?);
    let rows = client.rows() as u64;
    let e = server.accept(c, plan.round, &digest, &bad, rows, &losses, 0.0).unwrap_err().to_string();
    assert!(e.contains(&name), "{e}");
    // The weight is the server's: a claimed count other than the partition's is refused.
    let (update, _) = client.fit(&global, plan.round, c)?;
    let e = server.accept(c, plan.round, &digest, &update, 1_000_000_000, &losses, 0.0).unwrap_err().to_string();
    assert!(e.contains("claims 1000000000 examples"), "{e}");
    server.accept(c, plan.round, &digest, &update, rows, &losses, 0.0)?;
    assert_eq!(server.refusals().len(), 2);
    Ok(())
}

/// The newer LoRA methods deploy as they run in process, bit for bit: FedEx-LoRA's server folds
/// the residual and sends the base offsets (the clients apply them), LoRA-A²'s clients send one
/// factor's selected components and the server keeps the frozen one, FlexLoRA's server re-factors
/// the averaged products by SVD.
#[test]
fn fedex_lora_lora_a2_and_flexlora_deploy_bit_for_bit() -> anyhow::Result<()> {
    let (config, sets, cfg) = ci_config("baselines.methods=[\"fedex-lora\", \"lora-a2\", \"flexlora\"]")?;
    let (_dir, partition, in_process) = run_in_process(&cfg, &["baselines"])?;
    for method in ["fedex-lora", "lora-a2", "flexlora"] {
        let server = deployed(&config, &sets, method, &partition.dir, None)?;
        assert_same_rows(server.metrics(), &in_process[method]);
        let offsets = server.global().keys().filter(|k| k.ends_with(".base_offset")).count();
        assert_eq!(offsets > 0, method == "fedex-lora", "{method}: base offsets in the global state");
    }
    Ok(())
}

/// The linear probe trains the head alone; a state set is the state read back.
#[test]
fn the_frozen_probe_trains_only_the_head() -> anyhow::Result<()> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ci.toml");
    let dir = tempfile::tempdir()?;
    let cfg = slora::load_config(&config, &[])?;
    let store = Store::open(dir.path())?;
    let partition = Runner::new(&cfg, &store, Force::Nothing).run("partition")?;
    let shard = partition.file(&slora_data::shard::client_file_name(0));
    let mut client = slora::Client::open(&config, &[], slora::FROZEN, &shard, None)?;
    let before = client.state()?;
    // The head: the classifier and, for BERT, the pooler (`adapter.modules_to_save`'s default).
    assert!(before.keys().all(|k| k.starts_with("classifier.") || k.starts_with("bert.pooler.")), "{:?}", before.keys().collect::<Vec<_>>());
    let (after, losses) = client.fit(&before, 1, 0)?;
    assert_eq!(losses.len(), client.rows().div_ceil(cfg.federation.batch_size));
    let moved = (after["classifier.weight"].clone() - &before["classifier.weight"])?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(moved > 0.0);
    client.set_state(&before)?;
    assert_eq!(client.state()?["classifier.weight"].flatten_all()?.to_vec1::<f32>()?, before["classifier.weight"].flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

#[test]
fn stage2_without_stage1_and_unknown_methods_are_refused_by_name() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ci.toml");
    let e = slora::Method::parse("slora").unwrap_err().to_string();
    assert!(e.starts_with("method: unknown `slora`"), "{e}");
    let cfg = slora::load_config(&config, &[]).unwrap();
    let e = slora::build_learner(&cfg, slora::Method::Stage2, 20, None).err().unwrap().to_string();
    assert!(e.contains("needs Stage 1"), "{e}");
}

/// One method's run with every round taken as one secure aggregate, as the Flower app's SecAgg+
/// rounds hand it to the server: the replies' fields in the clear and only the weighted mean of
/// their uploads (here exact: what SecAgg+ unmasks, without its quantisation).
fn deployed_securely(config: &Path, sets: &[String], method: &str, partition: &Path) -> anyhow::Result<slora::Server> {
    let mut server = slora::Server::open(config, sets, method, partition, None, None, None)?;
    server.check_secure_aggregation()?;
    while let Some(plan) = server.begin_round() {
        let global = server.global().clone();
        let digest = slora_federation::state_digest(&global);
        let (mut uploads, mut fields) = (Vec::new(), Vec::new());
        for &c in &plan.chosen {
            let shard = partition.join(slora_data::shard::client_file_name(c));
            let mut client = slora::Client::open(config, sets, method, &shard, None)?;
            let (update, step_losses) = client.fit(&global, plan.round, c)?;
            let rows = client.rows() as u64;
            uploads.push((update, rows));
            fields.push(slora::ReplyFields { client: c, round: plan.round, base_digest: digest.clone(), samples: rows, step_losses, train_seconds: 0.0 });
        }
        let mean = slora::fedavg(&uploads)?;
        let total: u64 = uploads.iter().map(|(_, n)| n).sum();
        server.accept_aggregate(&fields, &mean, total)?;
        server.finish_round()?;
    }
    Ok(server)
}

/// Secure aggregation's server path without the network: every round taken as one aggregate
/// reproduces the in-process run bit for bit, plain and under local DP (each client clips and
/// noises its update before the sum, so local DP composes with the aggregate). A wrong total
/// weight is refused for every client of the aggregate, and the round stays open. Central DP (the
/// server clips each reply, which it cannot see) and FedEx-LoRA (its server sums each reply's
/// B·A) are refused by key.
#[test]
fn a_round_taken_as_one_secure_aggregate_is_the_in_process_round() -> anyhow::Result<()> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ci.toml");
    let local_dp = ["privacy.clip_norm=0.05", "privacy.noise_multiplier=0.5", "privacy.mode=\"local\""];
    for extra in [&[][..], &local_dp[..]] {
        let mut sets = vec!["baselines.methods=[\"lora\"]".to_string()];
        sets.extend(extra.iter().map(|s| s.to_string()));
        let overrides = sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
        let cfg = Config::load(Some(&config), &overrides)?;
        let (_dir, partition, in_process) = run_in_process(&cfg, &["baselines"])?;
        let server = deployed_securely(&config, &sets, "lora", &partition.dir)?;
        assert_same_rows(server.metrics(), &in_process["lora"]);
        println!("lora {extra:?} as secure aggregates: {} rounds bit for bit", server.metrics().len() - 1);
    }

    let (config, sets, cfg) = ci_config("baselines.methods=[\"lora\"]")?;
    let dir = tempfile::tempdir()?;
    let partition = Runner::new(&cfg, &Store::open(dir.path())?, Force::Nothing).run("partition")?;
    let mut server = slora::Server::open(&config, &sets, "lora", &partition.dir, None, None, None)?;
    let plan = server.begin_round().expect("a round");
    let global = server.global().clone();
    let digest = slora_federation::state_digest(&global);
    let c = plan.chosen[0];
    let mut client = slora::Client::open(&config, &sets, "lora", &partition.file(&slora_data::shard::client_file_name(c)), None)?;
    let (update, step_losses) = client.fit(&global, plan.round, c)?;
    let rows = client.rows() as u64;
    let fields = [slora::ReplyFields { client: c, round: plan.round, base_digest: digest, samples: rows, step_losses, train_seconds: 0.0 }];
    let e = server.accept_aggregate(&fields, &update, rows + 1).unwrap_err().to_string();
    assert!(e.contains("the secure aggregate of clients") && e.contains(&format!("weighted by {} rows", rows + 1)), "{e}");
    assert_eq!(server.refusals().len(), 1);
    server.accept_aggregate(&fields, &update, rows)?;
    assert_eq!(server.finish_round()?.clients, 1);

    for (set, key) in [("privacy.clip_norm=0.05", "privacy.mode"), ("baselines.methods=[\"fedex-lora\"]", "methods")] {
        let sets = vec![set.to_string()];
        let method = if key == "methods" { "fedex-lora" } else { "lora" };
        let server = slora::Server::open(&config, &sets, method, &partition.dir, None, None, None)?;
        let e = server.check_secure_aggregation().unwrap_err().to_string();
        assert!(e.starts_with(key) && e.contains("secure aggregation"), "{e}");
    }
    Ok(())
}
