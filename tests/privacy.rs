//! Privacy end to end through the real binary on the tiny experiment, skewed to one label per
//! client (SST-2, 4 clients, 2 per round, 2 + 2 rounds): `federation.record_uploads` records what
//! the server receives, and `pipeline audit` recovers FFT's tokens exactly, finds none in any
//! method that keeps the embeddings frozen, and recovers labels above chance; under local DP
//! (σ chosen for ε = 8) the token attack's precision falls to what a guess of every row scores, and
//! the report states ε.

use std::path::Path;

use serde_json::Value;

use crate::common::tiny_toml;

fn run(dir: &Path, sets: &[&str], stage: &str) {
    std::fs::write(dir.join("tiny.toml"), tiny_toml(5, 200, 100, "[baselines]\nmethods = [\"fft\", \"lora\"]\n")).unwrap();
    let mut cmd = crate::common::pipeline_in(dir);
    cmd.arg("--config").arg(dir.join("tiny.toml"));
    for s in ["partition.scheme=\"pathological\"", "partition.classes_per_client=1", "federation.record_uploads=1"].iter().chain(sets) {
        cmd.args(["--set", s]);
    }
    let out = cmd.arg(stage).output().unwrap();
    assert!(out.status.success(), "pipeline {stage} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn audit(dir: &Path) -> Value {
    let lock: Value = serde_json::from_slice(&std::fs::read(dir.join("artifacts/pipeline.lock")).unwrap()).unwrap();
    let key = lock["stages"]["audit"]["key"].as_str().unwrap_or_else(|| panic!("no audit in {lock}")).to_string();
    serde_json::from_slice(&std::fs::read(dir.join("artifacts/audit").join(key).join("audit.json")).unwrap()).unwrap()
}

#[test]
fn the_audit_recovers_fft_tokens_exactly_none_from_lora_and_labels_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &[], "all");
    run(dir.path(), &[], "audit");
    let a = audit(dir.path());
    let uploads = a["uploads"].as_array().unwrap();
    // One recorded round of the 4, its 2 sampled clients: the same round and clients for every
    // method of the seed (SLoRA's in whichever stage it falls), so uploads compare one to one.
    let pairs = |f: &dyn Fn(&Value) -> bool| {
        let mut p: Vec<(u64, u64)> = uploads.iter().filter(|u| f(u)).map(|u| (u["round"].as_u64().unwrap(), u["client"].as_u64().unwrap())).collect();
        p.sort_unstable();
        p
    };
    let fft = pairs(&|u| u["method"] == "fft");
    assert_eq!(fft.len(), 2, "{fft:?}");
    assert_eq!(pairs(&|u| u["method"] == "lora"), fft);
    assert_eq!(pairs(&|u| u["method"].as_str().unwrap().starts_with("slora-")), fft);
    for u in uploads {
        let tokens = &u["tokens"];
        if u["method"] == "fft" {
            // Every token of the client's shard, and nothing else.
            assert!(tokens["truth"].as_u64().unwrap() > 100, "{u}");
            assert_eq!(tokens["hits"], tokens["truth"], "{u}");
            assert_eq!(tokens["recovered"], tokens["truth"], "{u}");
        } else {
            assert!(tokens.is_null(), "{} sends no embeddings: {u}", u["method"]);
        }
        // One label per client: the bias rule names it, against a chance precision of 1/2.
        let labels = &u["labels"];
        assert_eq!((labels["truth"].as_u64(), labels["hits"].as_u64()), (Some(1), Some(1)), "{u}");
    }
    for (m, l) in a["methods"].as_object().unwrap() {
        assert!(l["label_precision"].as_f64().unwrap() > l["label_precision_chance"].as_f64().unwrap(), "{m}: {l}");
    }
    assert_eq!(a["methods"]["fft"]["token_recall"], 1.0);
    // `status` lists the audit when the runs record their uploads (and only then: the other
    // suites check the plain list).
    let mut cmd = crate::common::pipeline_in(dir.path());
    cmd.arg("--config").arg(dir.path().join("tiny.toml"));
    for s in ["partition.scheme=\"pathological\"", "partition.classes_per_client=1", "federation.record_uploads=1"] {
        cmd.args(["--set", s]);
    }
    let out = cmd.args(["status", "--json"]).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let audit = status["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "audit").unwrap_or_else(|| panic!("{status}"));
    assert_eq!(audit["state"], "up-to-date", "{audit}");
}

#[test]
fn under_local_dp_the_token_attack_reads_noise_and_the_report_states_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let dp = ["privacy.clip_norm=0.5", "privacy.target_epsilon=8.0", "privacy.mode=\"local\""];
    run(dir.path(), &dp, "all");
    run(dir.path(), &dp, "audit");
    let a = audit(dir.path());
    let fft = &a["methods"]["fft"];
    // The noise moves every row: all tokens are "recovered", and so is the rest of the vocabulary.
    assert_eq!(fft["token_recall"], 1.0);
    assert!(fft["token_precision"].as_f64().unwrap() < 0.2, "{fft}");
    let report = std::fs::read_to_string(dir.path().join("reports/tiny/report.md")).unwrap();
    assert!(report.contains("## Privacy") && report.contains("local DP"), "{report}");
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.path().join("reports/tiny/summary.json")).unwrap()).unwrap();
    let p = &summary["privacy"];
    let eps = p["epsilon"].as_f64().unwrap();
    assert!(eps <= 8.0 && eps > 7.99, "{p}");
    assert_eq!(p["epsilon_against_server"].as_f64(), Some(eps), "local DP's ε is against the server: {p}");
    assert!(p["epsilon_at_strict_delta"].as_f64().unwrap() > eps, "{p}");
}
