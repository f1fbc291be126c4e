//! The federated engine end to end through the real `pipeline` binary on a tiny config (SST-2, 200 train
//! / 100 test rows, max_len 32, MiniLM-L3, 4 clients, 2 per round, 2 + 2 rounds): kill -9 during stage1
//! and stage2 resumes to bit-identical metrics and outputs, the switch check holds, a changed
//! `stage1.density` makes exactly stage1, decompose and stage2 stale, and stage 1's upload per client is
//! the masked values plus the head, 4 bytes each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::tiny_toml;
use serde_json::Value;
use slora_metrics::read_parquet;
use slora_metrics::RoundMetrics;

/// The tiny experiment in `dir/tiny.toml` (artifacts go to `dir/artifacts`): 200 train / 100 test rows.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, tiny_toml(7, 200, 100, "")).unwrap();
    path
}

fn pipeline(dir: &Path) -> Command {
    let mut cmd = crate::common::pipeline_in(dir);
    cmd.arg("--config").arg(dir.join("tiny.toml"));
    cmd
}

/// Runs `pipeline ARGS` to completion; panics with its stderr on failure; returns stderr.
fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = pipeline(dir).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pipeline {args:?} failed:\n{stderr}");
    stderr
}

/// The committed artifact folder of `stage` per `pipeline.lock`.
fn artifact(dir: &Path, stage: &str) -> PathBuf {
    let lock: Value = serde_json::from_slice(&std::fs::read(dir.join("artifacts/pipeline.lock")).unwrap()).unwrap();
    let key = lock["stages"][stage]["key"].as_str().unwrap_or_else(|| panic!("{stage} not in pipeline.lock"));
    dir.join("artifacts").join(stage).join(key)
}

fn manifest(dir: &Path, stage: &str) -> Value {
    serde_json::from_slice(&std::fs::read(artifact(dir, stage).join("manifest.json")).unwrap()).unwrap()
}

fn metrics(dir: &Path, stage: &str) -> Vec<RoundMetrics> {
    read_parquet(&artifact(dir, stage).join("metrics.parquet")).unwrap()
}

/// Every column but wall_seconds, bit for bit.
fn assert_same_metrics(a: &[RoundMetrics], b: &[RoundMetrics]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(x.same_results(y), "metrics differ:\n{x:?}\n{y:?}");
    }
}

/// One uninterrupted partition → stage1 → decompose → stage2 run, shared by the tests.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under cargo's per-target temp folder: replaced by the next test run, never piling up in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("federation-reference");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_config(&dir);
        run_ok(&dir, &["stage2"]);
        dir
    })
}

/// Waits until `stage`'s work folder holds the checkpoint of local round `round`.
fn wait_for_checkpoint(dir: &Path, stage: &str, method: &str, round: u32, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let name = format!("round-{round:05}.json");
    loop {
        let stage_dir = dir.join("artifacts").join(stage);
        let found = std::fs::read_dir(&stage_dir).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".work-") && e.path().join(method).join(&name).exists()
        });
        if found {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{stage} exited ({status}) before its round-{round} checkpoint appeared");
        }
        assert!(Instant::now() < deadline, "no {stage} checkpoint of round {round} after 600 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `pipeline STAGE`, SIGKILLs it once round 1's checkpoint exists, and checks it was still running.
fn kill_during(dir: &Path, stage: &str, method: &str) {
    let mut child = pipeline(dir).arg(stage).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_checkpoint(dir, stage, method, 1, &mut child);
    assert!(child.try_wait().unwrap().is_none(), "{stage} finished before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!dir.join("artifacts").join(stage).read_dir().unwrap().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        !n.starts_with('.')
    }), "a killed {stage} left a committed artifact");
}

#[test]
fn kill_9_during_stage1_and_stage2_resumes_to_identical_metrics() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_config(dir);

    kill_during(dir, "stage1", "slora-stage1");
    let log = run_ok(dir, &["stage1"]);
    assert!(log.contains("slora-stage1: resuming after round 1"), "stage1 did not resume:\n{log}");
    assert_same_metrics(&metrics(reference, "stage1"), &metrics(dir, "stage1"));
    assert_eq!(
        manifest(reference, "stage1")["files"]["sparse_delta.safetensors"],
        manifest(dir, "stage1")["files"]["sparse_delta.safetensors"],
        "the sparse update differs after resume"
    );

    run_ok(dir, &["decompose"]);
    kill_during(dir, "stage2", "slora-stage2");
    let log = run_ok(dir, &["stage2"]);
    assert!(log.contains("slora-stage2: resuming after round 3"), "stage2 did not resume:\n{log}");
    assert_same_metrics(&metrics(reference, "stage2"), &metrics(dir, "stage2"));
    let adapter = "adapter/adapter_model.safetensors";
    assert_eq!(manifest(reference, "stage2")["files"][adapter], manifest(dir, "stage2")["files"][adapter]);
    // Work folders are gone once the stages committed.
    for stage in ["stage1", "stage2"] {
        let left: Vec<_> = std::fs::read_dir(dir.join("artifacts").join(stage)).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "{stage}: {left:?}");
    }
}

#[test]
fn switch_from_sparse_to_lora_keeps_the_logits() {
    let m = manifest(reference(), "decompose");
    let check = &m["summary"]["switch_check"];
    let change = check["max_abs_logit_change"].as_f64().unwrap();
    assert!(change <= 1e-4, "largest logit change across the switch {change}");
    assert_eq!(check["passed"], true);
    assert_eq!(check["rows"], 32);
    assert_eq!(m["summary"]["matrices"], 18, "6 adapted linears x 3 layers");
    // Stage 2 starts where stage 1 ended: its round-0 evaluation equals stage 1's last.
    let s1 = metrics(reference(), "stage1");
    let s2 = metrics(reference(), "stage2");
    let (end1, start2) = (s1.last().unwrap(), &s2[0]);
    assert_eq!((start2.round, start2.cum_bytes_up), (end1.round, end1.cum_bytes_up));
    assert_eq!(start2.accuracy, end1.accuracy);
    assert!((start2.loss.unwrap() - end1.loss.unwrap()).abs() < 1e-5);
    assert_eq!(s2.iter().map(|m| m.round).collect::<Vec<_>>(), vec![2, 3, 4]);
}

#[test]
fn stage1_upload_is_masked_values_plus_head() {
    // MiniLM-L3: 3 layers x (4 linears 384x384 + 384x1536 + 1536x384); head = pooler 384x384 + bias,
    // classifier 2x384 + bias (SST-2 has 2 labels). nnz per matrix = round(density * entries).
    let (h, ffn, layers, labels, density) = (384usize, 1536usize, 3usize, 2usize, 0.01f64);
    let nnz = |rows: usize, cols: usize| ((density * (rows * cols) as f64).round() as usize).max(1);
    let masked = layers * (4 * nnz(h, h) + 2 * nnz(h, ffn));
    let head = h * h + h + labels * h + labels;
    let expected = ((masked + head) * 4) as u64;
    let rows = metrics(reference(), "stage1");
    assert_eq!(rows[0].bytes_up_per_client, 0, "round 0 exchanges nothing");
    for m in &rows[1..] {
        assert_eq!(m.bytes_up_per_client, expected, "round {}", m.round);
        assert_eq!(m.bytes_down_per_client, expected, "round {}", m.round);
        assert_eq!(m.clients, 2);
    }
    assert_eq!(rows.last().unwrap().cum_bytes_up, expected * 2 * 2);
    let summary = &manifest(reference(), "stage1")["summary"];
    assert_eq!(summary["nnz_total"], masked);
    assert_eq!(summary["head_bytes"], head * 4);
    // LoRA in stage 2: r = 8 factors per matrix + the head.
    let r = 8;
    let lora = layers * (4 * r * (h + h) + 2 * r * (h + ffn));
    let s2 = metrics(reference(), "stage2");
    assert_eq!(s2[1].bytes_up_per_client, ((lora + head) * 4) as u64);
    // The model learned something on 200 rows (chance is 0.5 on the balanced test subsample).
    assert!(s2.last().unwrap().accuracy.unwrap() > 0.55, "{:?}", s2.last());
}

#[test]
fn changed_density_makes_stage1_decompose_stage2_stale_but_not_partition() {
    let dir = reference();
    let out = pipeline(dir).args(["--set", "stage1.density=0.02", "status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |stage: &str| -> String {
        let s = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == stage).unwrap();
        s["state"].as_str().unwrap().to_string()
    };
    assert_eq!(state("partition"), "up-to-date");
    for stage in ["stage1", "decompose", "stage2"] {
        assert_eq!(state(stage), "stale", "{stage}: {status}");
    }
    let stage1 = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "stage1").unwrap();
    assert!(stage1["reasons"].to_string().contains("stage1.density"), "{stage1}");
    // With the original config everything that ran is up to date.
    let out = pipeline(dir).args(["status", "--json"]).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in status["stages"].as_array().unwrap().iter().filter(|s| s["stage"] != "baselines" && s["stage"] != "report") {
        assert_eq!(s["state"], "up-to-date", "{s}");
    }
}

#[test]
fn sft_baseline_repeats_stage1_on_the_same_clients_then_continues() {
    // SFT alone with stage 1's density and learning rate is stage 1 for its first rounds: same masks,
    // same client sampling, same shuffling and dropout seeds. It then runs the whole round budget.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_config(dir);
    let sft_only = ["--set", "baselines.methods=[\"sft\"]", "--set", "baselines.sft_lr=1e-3"];
    let log = run_ok(dir, &[sft_only[0], sft_only[1], sft_only[2], sft_only[3], "--set", "baselines.sft_from_stage1=false", "baselines"]);
    assert!(log.contains("sft round 1/4") && log.contains("sft round 4/4"), "recomputed from round 1:\n{log}");
    let sft = metrics(dir, "baselines");
    let stage1 = metrics(reference(), "stage1");
    assert_eq!(sft.len(), 5, "round 0 + stage1.rounds + stage2.rounds");
    assert!(sft.iter().all(|m| m.method == "sft"));
    for (a, b) in sft.iter().zip(&stage1) {
        // Stage 1's last round is its run's last, also measured on every test row; SFT's is not.
        let b = RoundMetrics { full_test_accuracy: None, full_test_loss: None, full_test_rows: 0, ..b.clone() };
        let relabelled = RoundMetrics { method: "slora-stage1".into(), ..a.clone() };
        assert!(relabelled.same_results(&b), "sft {a:?}\nstage1 {b:?}");
    }
    let summary = &manifest(dir, "baselines")["summary"]["methods"]["sft"];
    assert_eq!((summary["rounds"].as_u64(), summary["continued_from_stage1"].as_bool()), (Some(4), Some(false)));

    // By default SFT starts from Stage 1's state and trains only the remaining rounds: bit-identical.
    let log = run_ok(dir, &[sft_only[0], sft_only[1], sft_only[2], sft_only[3], "baselines"]);
    assert!(log.contains("sft continues Stage 1 after round 2") && !log.contains("sft round 1/4"), "{log}");
    assert!(log.contains("sft round 3/4") && log.contains("sft round 4/4"), "{log}");
    let continued = metrics(dir, "baselines");
    assert_same_metrics(&continued, &sft);
    assert_eq!(manifest(dir, "baselines")["summary"]["methods"]["sft"]["continued_from_stage1"], true);
}
