//! Issue 12's deployment test: the Flower app (flower/) on a real local deployment — a
//! `flower-superlink` and one `flower-supernode` per client as separate OS processes on 127.0.0.1,
//! `flwr run` of the app — against the in-process `pipeline` run of the same config and seed.
//!
//! - plain: SLoRA (Stage 1, the switch, Stage 2) and LoRA give the in-process metrics rows bit for
//!   bit (every column but the timings), so the same final accuracies, and the same final global
//!   states (the last round checkpoint against the in-process adapter);
//! - TLS: LoRA over TLS (scripts/make_certs.sh) gives them too;
//! - SuperNode authentication with identities bound to partitions: the registered keys train, an
//!   unregistered key is refused by the SuperLink, a registered key outside the binding by the
//!   ServerApp (and flower/tests/test_nodes.py, Python unit tests of the partition claims);
//! - faults: a SuperNode killed after round 1 (round 2 goes on with the other reply), a malformed
//!   reply in round 3 (refused with its reason), the ServerApp stopped after round 3 and started
//!   again (it resumes from its checkpoint; the killed node, restarted, rejoins for round 4);
//! - bytes: every message as Flower serialised it against the pipeline's accounting.
//!
//! The CI config runs with 3 clients (one SuperNode each) and 2 sampled per round. Python: the
//! interpreter in `SLORA_TEST_PYTHON` when set, else a venv in the target folder with
//! tests/requirements.txt (pip, once). The `slora` module is the library this very build made
//! (target/debug/deps/libslora.so, as the `slora._native` of the package in crates/python/python). Needs ../shared.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use slora_metrics::RoundMetrics;
use slora_pipeline::config::parse_set;
use slora_pipeline::runner::{Force, Runner};
use slora_pipeline::{Config, Store};

mod support;
use support::{root, run};

/// Flower's side of the overrides (the methods come from the run config).
const OVERRIDES: [&str; 2] = ["partition.clients=3", "federation.clients_per_round=2"];

fn metrics_by_method(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<RoundMetrics>>> {
    let mut by = BTreeMap::new();
    for row in slora_metrics::read_parquet(path)? {
        by.entry(row.method.clone()).or_insert_with(Vec::new).push(row);
    }
    Ok(by)
}

fn assert_same_rows(what: &str, flower: &[RoundMetrics], in_process: &[RoundMetrics]) {
    assert_eq!(flower.len(), in_process.len(), "{what}: rounds");
    for (f, p) in flower.iter().zip(in_process) {
        assert!(f.same_results(p), "{what} round {}:\nflower     {f:?}\nin-process {p:?}", f.round);
    }
}

fn mean(values: &serde_json::Value) -> f64 {
    let v: Vec<f64> = values.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `flower/tests/deployment.py` on the CI config with `OVERRIDES`, three clients, SLoRA and LoRA,
/// its SuperLink and SuperNodes under `work/deploy` and its results under `out`; the caller adds
/// its options and scenarios.
fn deployment_script(python: &Path, module: &Path, config: &Path, partition_dir: &Path, work: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("flower/tests/deployment.py"))
        .arg("--python")
        .arg(python)
        .arg("--module-dir")
        .arg(module)
        .arg("--config")
        .arg(config)
        .args(["--overrides", &OVERRIDES.join(" ")])
        .arg("--partition-dir")
        .arg(partition_dir)
        .args(["--clients", "3", "--methods", "slora,lora"])
        .arg("--work")
        .arg(work.join("deploy"))
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn flower_deployment_reproduces_the_in_process_runs_and_survives_faults() -> anyhow::Result<()> {
    let root = root();
    let work = tempfile::tempdir()?;
    let (python, module) = support::python_and_package(work.path())?;
    // Who may hold a partition (the partition query, the node-partitions file, the registration
    // tool): Python unit tests against a scripted Grid and a scripted `flwr`.
    let unit = run(Command::new(&python).args(["-m", "unittest", "discover", "-s", "tests", "-p", "test_*.py"]).current_dir(root.join("flower")).env("PYTHONPATH", root.join("flower")));
    assert!(unit.is_ok(), "flower/tests/test_nodes.py: {unit:?}");

    // The in-process run: the pipeline's stages on the same config, overrides and seed.
    let config = root.join("configs/ci.toml");
    let mut sets: Vec<String> = OVERRIDES.iter().map(|s| s.to_string()).collect();
    sets.push("baselines.methods=[\"lora\"]".into());
    let cfg = Config::load(Some(&config), &sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?)?;
    let store = Store::open(&work.path().join("artifacts"))?;
    let mut runner = Runner::new(&cfg, &store, Force::Nothing);
    let partition = runner.run("partition")?;
    let clock = std::time::Instant::now();
    let mut in_process = BTreeMap::new();
    let mut artifacts = BTreeMap::new();
    for stage in ["stage1", "stage2", "baselines"] {
        let artifact = runner.run(stage)?;
        in_process.extend(metrics_by_method(&artifact.file("metrics.parquet"))?);
        artifacts.insert(stage, artifact);
    }
    let in_process_seconds = clock.elapsed().as_secs_f64();

    let out = work.path().join("out");
    let stdout = run(deployment_script(&python, &module, &config, &partition.dir, work.path(), &out)
        .args(["--tls-methods", "lora"])
        .args(["plain", "tls", "auth", "faults", "hostile"]))?;
    let results: Vec<serde_json::Value> = stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    println!("in-process SLoRA + LoRA: {in_process_seconds:.1} s; Flower: {results:?}");

    // SuperNode authentication with identities bound to partitions: the registered keys connect
    // and train, the unregistered key is refused by the SuperLink, the registered key outside the
    // binding (claiming partition 1) by the ServerApp.
    let auth = results.iter().find(|r| r["scenario"] == "auth").expect("the auth scenario");
    for key in ["registered", "registered_online", "stranger_refused"] {
        assert_eq!(auth[key], true, "auth: {key} ({auth})");
    }
    assert_eq!(auth["exit"], 0, "the bound run completed: {auth}");
    let lora = &metrics_by_method(&out.join("auth/metrics.parquet"))?["lora"];
    assert_eq!(lora.iter().map(|m| m.clients).collect::<Vec<_>>(), [0, 2, 2], "every sampled honest node trained");
    let deployment: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("auth/deployment.json"))?)?;
    assert!(deployment["node_partitions"].as_str().is_some_and(|p| p.ends_with("node-partitions.toml")), "{}", deployment["node_partitions"]);
    let rounds = deployment["rounds"].as_array().expect("rounds");
    let conflicts = rounds.last().unwrap()["partition_conflicts"].as_array().expect("conflicts").clone();
    assert_eq!(conflicts.len(), 1, "the impostor alone: {conflicts:?}");
    assert!(conflicts[0]["reason"].as_str().unwrap().contains("not in the node-partitions file"), "{conflicts:?}");

    // Plain and TLS: the in-process rows, bit for bit.
    let plain = metrics_by_method(&out.join("plain/metrics.parquet"))?;
    for method in ["slora-stage1", "slora-stage2", "lora"] {
        assert_same_rows(method, &plain[method], &in_process[method]);
    }
    // The final global states, bit for bit: Flower's last round checkpoint against the in-process
    // run's final adapter (peft's names: `base_model.model.` + the project's).
    use slora_pipeline::stages::{baselines, stage2};
    for (method, artifact, adapter, last_round) in [("lora", &artifacts["baselines"], baselines::LORA_ADAPTER_DIR, 4), ("slora-stage2", &artifacts["stage2"], stage2::ADAPTER_DIR, 2)] {
        let flower = slora_federation::read_safetensors(&out.join(format!("plain/checkpoints/{method}/round-{last_round:05}.safetensors")))?;
        let peft = slora_federation::read_safetensors(&artifact.dir.join(adapter).join(slora_model::peft::WEIGHTS_FILE))?;
        assert_eq!(flower.len(), peft.len(), "{method}: tensors");
        for (name, t) in &flower {
            let p = peft.get(&format!("base_model.model.{name}")).unwrap_or_else(|| panic!("{method}: the adapter lacks {name}"));
            assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, p.flatten_all()?.to_vec1::<f32>()?, "{method}: {name}");
        }
        println!("{method}: final global state = the in-process adapter, {} tensors bit for bit", flower.len());
    }

    // The pipeline's report of the Flower metrics.
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("plain/report/summary.json"))?)?;
    let html = std::fs::read_to_string(out.join("plain/report/index.html"))?;
    assert!(html.contains("Flower 1.42.0"), "the deployment line in the report");
    println!("report summary: {}", summary["methods"]);
    let tls = metrics_by_method(&out.join("tls/metrics.parquet"))?;
    assert_same_rows("lora over TLS", &tls["lora"], &in_process["lora"]);
    for method in ["slora-stage2", "lora"] {
        let (f, p) = (plain[method].last().unwrap(), in_process[method].last().unwrap());
        println!("{method}: final accuracy Flower {:?} = in-process {:?}; wall {:.1} s vs {:.1} s", f.final_accuracy(), p.final_accuracy(), f.wall_seconds, p.wall_seconds);
    }

    // Bytes: Flower's serialised messages against the accounting, per round.
    let deployment: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("plain/deployment.json"))?)?;
    for r in deployment["rounds"].as_array().expect("rounds") {
        if r.get("switch").is_some() {
            println!("{} switch: Flower {:.0} B per node; accounted {} B per client", r["method"], mean(&r["flower_bytes_down"]), plain["slora-stage2"][1].bytes_down_switch_per_client);
            continue;
        }
        let (down, up) = (mean(&r["flower_bytes_down"]), mean(&r["flower_bytes_up"]));
        let (acc_down, acc_up) = (r["accounted_bytes_down_per_client"].as_f64().unwrap(), r["accounted_bytes_up_per_client"].as_f64().unwrap());
        println!("{} round {}: down Flower {down:.0} / accounted {acc_down:.0}; up Flower {up:.0} / accounted {acc_up:.0} ({:+.2} %)", r["method"], r["round"], 100.0 * (up / acc_up - 1.0));
        // An upload is the whole state plus Flower's framing: a little more, never less.
        assert!(up > acc_up && up < acc_up * 1.05, "round {}: up {up} vs {acc_up}", r["round"]);
    }

    // Faults.
    let faults = metrics_by_method(&out.join("faults/metrics.parquet"))?;
    let lora = &faults["lora"];
    let deployment: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("faults/deployment.json"))?)?;
    let rounds: Vec<&serde_json::Value> = deployment["rounds"].as_array().expect("rounds").iter().collect();
    println!("faults: {}", serde_json::to_string(&rounds)?);
    assert_eq!(lora.iter().map(|m| m.clients).collect::<Vec<_>>(), [0, 2, 1, 1, 2], "replies averaged per round");
    assert!(lora[1].same_results(&in_process["lora"][1]), "round 1, before any fault, is the in-process round");
    assert_eq!(deployment["resumed_from"]["lora"], 3, "the restarted ServerApp resumed after round 3");
    assert_eq!(rounds.len(), 4, "the ledger of both ServerApp runs");
    assert_eq!((rounds[1]["sampled"].clone(), rounds[1]["accepted"].clone()), (serde_json::json!([0, 2]), serde_json::json!([2])), "the killed node's round");
    let refused = &rounds[2]["refused"][0];
    assert_eq!(refused["client"], 1);
    assert!(refused["reason"].as_str().unwrap().contains("should be F32 [8, 384]"), "{refused}");
    assert_eq!(rounds[3]["accepted"], serde_json::json!([0, 2]), "the restarted node rejoined");
    assert!(lora[4].final_accuracy().unwrap() > 1.5 / 20.0, "above chance after the faults");

    // A hostile SuperNode (partition 2), a garbled partition answer and a duplicate claim of
    // partition 0: the run finishes on the honest replies, and every refusal has its reason.
    let hostile = results.iter().find(|r| r["scenario"] == "hostile").expect("the hostile scenario");
    assert_eq!(hostile["exit"], 0, "the hostile run completed: {hostile}");
    let lora = &metrics_by_method(&out.join("hostile/metrics.parquet"))?["lora"];
    assert_eq!(lora.iter().map(|m| m.clients).collect::<Vec<_>>(), [0, 3, 2, 2, 2, 2, 2], "replies averaged per round");
    let deployment: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("hostile/deployment.json"))?)?;
    let rounds = deployment["rounds"].as_array().expect("rounds");
    println!("hostile: {}", serde_json::to_string(rounds)?);
    for (round, want) in [(2, "claims 1000000000 examples"), (3, "negative"), (4, "malformed reply"), (5, "for round 1"), (6, "above the bound")] {
        let r = &rounds[round - 1];
        assert_eq!(r["accepted"], serde_json::json!([0, 1]), "round {round}: {r}");
        let refused = &r["refused"][0];
        assert_eq!(refused["client"], 2, "round {round}: {r}");
        assert!(refused["reason"].as_str().unwrap().contains(want), "round {round}: want `{want}` in {refused}");
    }
    let conflicts = rounds.last().unwrap()["partition_conflicts"].as_array().expect("conflicts").clone();
    assert!(conflicts.iter().any(|c| c["reason"].as_str().unwrap().contains("malformed partition answer")), "{conflicts:?}");
    assert!(conflicts.iter().any(|c| c["reason"].as_str().unwrap().contains("claims partition 0")), "{conflicts:?}");
    assert!(lora[6].final_accuracy().unwrap() > 1.5 / 20.0, "above chance despite the hostile node");
    Ok(())
}

/// Secure aggregation on 127.0.0.1 (`flower/tests/deployment.py … secagg`): SLoRA (one Stage-1
/// round, the switch, one Stage-2 round) and LoRA (two rounds) under Flower's SecAgg+ with all
/// three clients every round.
///
/// - The aggregate is the plain run's to the quantisation: per round and coordinate, the state the
///   ServerApp handed `slora.Server` differs from the plain FedAvg of the uploads the clients kept
///   (`slora.fedavg`, the server's own weighted mean) by at most 2kc/Σqᵢ (k clients, clipping range
///   c, Σqᵢ the total weight the workflow unmasked: L·Σnᵢ) plus one float32 spacing and 1e-12; the
///   bound is recomputed here from the ledger, and Σqᵢ checked against the registered rows.
/// - The ServerApp never sees an individual update: every reply its code got back (the `Recorder`
///   around its Grid) carries no array at all; the collect stage's replies carry int64 masked
///   vectors, each of which, decoded as if it were alone, is uncorrelated with its client's update;
///   the legacy strategy saw the aggregate alone.
#[test]
fn flower_secure_aggregation_matches_the_plain_aggregate_and_never_shows_an_update() -> anyhow::Result<()> {
    let root = root();
    let work = tempfile::tempdir()?;
    let (python, module) = support::python_and_package(work.path())?;
    let config = root.join("configs/ci.toml");
    let sets: Vec<String> = OVERRIDES.iter().map(|s| s.to_string()).collect();
    let cfg = Config::load(Some(&config), &sets.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?)?;
    let store = Store::open(&work.path().join("artifacts"))?;
    let partition = Runner::new(&cfg, &store, Force::Nothing).run("partition")?;
    use slora_pipeline::stages::summaries::{PartitionSummary, StageSummary};
    let rows: Vec<u64> = PartitionSummary::of(&partition)?.rows_per_client.iter().map(|&r| r as u64).collect();

    let out = work.path().join("out");
    let stdout = run(deployment_script(&python, &module, &config, &partition.dir, work.path(), &out).arg("secagg"))?;
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    println!("secagg: {result}");
    assert_eq!(result["exit"], 0, "the SecAgg+ run completed: {result}");

    let ledger = std::fs::read_to_string(out.join("secagg/rounds.jsonl"))?;
    let rounds: Vec<serde_json::Value> = ledger.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let secure: Vec<&serde_json::Value> = rounds.iter().filter(|r| r.get("secagg").is_some()).collect();
    assert_eq!(secure.len(), 4, "slora-stage1 1, slora-stage2 1, lora 2 rounds: {ledger}");
    for r in &secure {
        let s = &r["secagg"];
        let what = format!("{} round {}", r["method"], r["round"]);
        let clients: Vec<usize> = serde_json::from_value(s["contributors"].clone())?;
        assert_eq!(clients, [0, 1, 2], "{what}: every client in the aggregate");
        assert_eq!(r["accepted"], s["contributors"], "{what}: the aggregate accepted");
        let (c, t, total) = (s["clipping_range"].as_f64().unwrap(), s["quantization_range"].as_u64().unwrap(), s["total_weight"].as_u64().unwrap());
        let max_rows = *rows[..3].iter().max().unwrap();
        let scale = 1u64 << (63 - (t / max_rows).leading_zeros());
        assert_eq!(s["weight_scale"].as_u64(), Some(scale), "{what}");
        assert_eq!(total, scale * rows[..3].iter().sum::<u64>(), "{what}: Σqᵢ = L·Σ registered rows");
        let bound = 2.0 * clients.len() as f64 * c / total as f64;
        assert!((s["bound_per_coordinate"].as_f64().unwrap() - bound).abs() <= 1e-15 * bound, "{what}: the bound 2kc/Σqᵢ");
        assert!(s["clipped"].as_object().unwrap().values().all(|v| v == 0), "{what}: no coordinate clipped to ±c: {}", s["clipped"]);
        assert_eq!(s["individual_parameters_seen"], 0, "{what}: the legacy strategy saw the aggregate alone");
        let received = s["received"].as_array().unwrap();
        for x in received {
            assert_eq!(x["arrays"], serde_json::json!([]), "{what}: a reply to the ServerApp carried arrays: {x}");
            assert_eq!(x["error"], false, "{what}: {x}");
        }
        let masked: Vec<&serde_json::Value> = received.iter().filter(|x| x["stage"] == "collect_masked_vectors").collect();
        assert_eq!(masked.len(), 3, "{what}: one masked vector per client");
        assert!(masked.iter().all(|x| x["masked"] == serde_json::json!(["int64"])), "{what}: {masked:?}");
        // Bytes: SecAgg+'s four exchanges against the pipeline's accounting of one upload.
        let (down, up) = (mean(&r["flower_bytes_down"]), mean(&r["flower_bytes_up"]));
        let (acc_down, acc_up) = (r["accounted_bytes_down_per_client"].as_f64().unwrap(), r["accounted_bytes_up_per_client"].as_f64().unwrap());
        println!("{what}: Flower bytes per client down {down:.0} (accounted {acc_down:.0}), up {up:.0} (accounted {acc_up:.0}, ×{:.2})", up / acc_up);
    }
    let checked = result["rounds"].as_array().expect("the checked rounds");
    assert_eq!(checked.len(), 4);
    for r in checked {
        let what = format!("{} round {}", r["method"], r["round"]);
        let (err, bound, ratio) = (r["max_error"].as_f64().unwrap(), r["bound"].as_f64().unwrap(), r["max_error_over_allowed"].as_f64().unwrap());
        println!("{what}: {} coordinates, largest update coordinate {:.3e}; max |secagg − plain| {err:.3e}, bound 2kc/Σq {bound:.3e} (+ float32 spacing): {ratio:.3} of the allowance", r["coordinates"], r["largest_update_coordinate"].as_f64().unwrap());
        assert!(ratio <= 1.0, "{what}: beyond the bound: {r}");
        assert!(r["largest_update_coordinate"].as_f64().unwrap() > 10.0 * bound, "{what}: the updates are far above the quantisation");
        assert_eq!(r["same_download"], true, "{what}: every client trained from the state the server sent");
        assert_eq!(r["chained"], true, "{what}: the next round started from this aggregate");
        assert!(r["max_abs_correlation"].as_f64().unwrap() < 0.05, "{what}: a masked vector resembles its update: {r}");
        assert!(r["min_decoded_relative_error"].as_f64().unwrap() > 10.0, "{what}: {r}");
    }
    let metrics = metrics_by_method(&out.join("secagg/metrics.parquet"))?;
    for method in ["slora-stage1", "slora-stage2", "lora"] {
        let m = &metrics[method];
        assert!(m[1..].iter().all(|row| row.clients == 3), "{method}: {:?}", m.iter().map(|r| r.clients).collect::<Vec<_>>());
        println!("{method} under SecAgg+: final accuracy {:?}", m.last().unwrap().final_accuracy());
    }
    let html = std::fs::read_to_string(out.join("secagg/report/index.html"))?;
    assert!(html.contains("SecAgg+"), "the deployment line in the report says so");
    Ok(())
}
