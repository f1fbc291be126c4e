//! The committed studies (`configs/studies/*.toml`) at smoke size through the real binary: every
//! study goes through every code path and writes verdicts for the claims it tests; the density study
//! takes its 1 % point from the heterogeneity study's cache; and a study killed (-9) twice, then
//! rerun, finishes with the same accuracy tables and verdicts as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{repo, ScratchDir};

/// `pipeline --artifacts DIR/artifacts --set report.dir=DIR/reports study <study> --smoke`.
fn study_cmd(dir: &Path, study: &str) -> Command {
    let mut cmd = crate::common::pipeline_in(dir);
    cmd.arg("--artifacts")
        .arg(dir.join("artifacts"))
        .arg("--set")
        .arg(format!("report.dir={}", dir.join("reports").display()))
        .args(["--threads", "1", "study"])
        .arg(repo().join("configs/studies").join(format!("{study}.toml")))
        .arg("--smoke")
        .env("RUST_LOG", "info");
    cmd
}

fn run_study(dir: &Path, study: &str) -> (Value, String) {
    let out = study_cmd(dir, study).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "study {study} failed:\n{stderr}");
    let report = dir.join("reports/studies").join(format!("{study}-smoke"));
    let json: Value = serde_json::from_slice(&std::fs::read(report.join("study.json")).unwrap()).unwrap();
    (json, stderr)
}

fn report_dir(dir: &Path, study: &str) -> PathBuf {
    dir.join("reports/studies").join(format!("{study}-smoke"))
}

/// The claims a study file lists, as written.
fn claims(json: &Value) -> Vec<String> {
    json["settings"]["claims"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

fn check_study(json: &Value, dir: &Path, study: &str, points: usize, figures: &[&str]) {
    assert_eq!(json["points"].as_array().unwrap().len(), points, "{study}: points");
    let verdicts = json["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), claims(json).len(), "{study}: one verdict per claim");
    for v in verdicts {
        let verdict = v["verdict"].as_str().unwrap();
        assert!(["reproduced", "not-reproduced", "inconclusive"].contains(&verdict), "{study}: {v}");
        assert!(!v["evidence"].as_str().unwrap().is_empty());
    }
    for p in json["points"].as_array().unwrap() {
        let seeds = p["summary"]["seeds"].as_array().unwrap().len();
        assert_eq!(seeds, 2, "{study}: smoke runs two seeds");
        assert!(p["summary"]["methods"]["slora"]["accuracy_ci95"].is_number(), "{study}: a CI over seeds");
    }
    let md = std::fs::read_to_string(report_dir(dir, study).join("report.md")).unwrap();
    assert!(md.contains("Claims and verdicts") && md.contains("Final test accuracy"), "{study}: {md}");
    for f in figures {
        assert!(report_dir(dir, study).join("figures").join(format!("{f}.svg")).is_file(), "{study}: figure {f}");
    }
}

#[test]
fn heterogeneity_and_density_studies_run_and_share_the_cache() {
    let dir = ScratchDir::new("study-heterogeneity");
    let (json, _) = run_study(&dir, "heterogeneity");
    check_study(&json, &dir, "heterogeneity", 6, &["accuracy_vs_point", "gap_vs_point", "accuracy_vs_round-iid", "accuracy_vs_round-1-label-client"]);
    assert_eq!(claims(&json), ["gap-grows", "slora-closes-gap", "time-cut"]);
    assert!(json["points"][5]["extreme"].as_bool().unwrap());
    assert!(json["points"][0]["summary"]["methods"].get("ffa-lora").is_some(), "FFA-LoRA joins the heterogeneity table");
    // The newer methods at Dir α=0.1 and 1 label per client, not at the other points.
    for (point, with_new) in [(0, false), (3, true), (4, false), (5, true)] {
        for method in ["fedex-lora", "lora-a2", "flexlora", "fedsa-lora"] {
            let ran = json["points"][point]["summary"]["methods"].get(method).is_some();
            assert_eq!(ran, with_new, "{method} at point {point} ({})", json["points"][point]["label"]);
        }
    }
    // The density study's 1 % point is the heterogeneity study's two-labels point: only its report is new.
    let (json, stderr) = run_study(&dir, "density");
    check_study(&json, &dir, "density", 4, &["accuracy_vs_upload", "accuracy_vs_point", "gap_vs_point"]);
    let one = &json["points"][1];
    assert_eq!(one["label"], "1 %");
    assert_eq!(one["summary"]["methods"].as_object().unwrap().len(), 5, "FFT, LoRA, FFA-LoRA, SFT and SLoRA at 1 %");
    assert!(json["points"][0]["summary"]["methods"].get("fft").is_none(), "other densities run SLoRA and SFT only");
    let reused = stderr.matches("baselines: up to date").count();
    assert!(reused >= 2, "the 1 % point's baselines (two seeds) come from the heterogeneity study's cache:\n{stderr}");

    // The mask study's random point is the density study's 1 % point; its federated point learns a mask.
    let (json, stderr) = run_study(&dir, "mask");
    check_study(&json, &dir, "mask", 2, &["accuracy_vs_upload"]);
    assert!(stderr.matches("baselines: up to date").count() >= 2, "the random point is cached:\n{stderr}");
    assert!(stderr.contains("mask round: clients"), "{stderr}");
    let learned = &json["points"][1]["summary"]["methods"];
    let mut methods: Vec<&String> = learned.as_object().unwrap().keys().collect();
    methods.sort();
    assert_eq!(methods, ["sft", "slora"]);
    let random_up = json["points"][0]["summary"]["methods"]["slora"]["cum_bytes_up"].as_u64().unwrap();
    assert!(learned["slora"]["cum_bytes_up"].as_u64().unwrap() > random_up, "the mask round's uploads are charged");
    let md = std::fs::read_to_string(report_dir(&dir, "mask").join("report.md")).unwrap();
    assert!(md.contains("Against random mask") && md.contains("SLoRA: accuracy change (pp)"), "{md}");
}

#[test]
fn news_study_runs_with_rates_tuned_once() {
    let dir = ScratchDir::new("study-news");
    let (json, stderr) = run_study(&dir, "news");
    check_study(&json, &dir, "news", 1, &[]);
    assert!(stderr.contains("tune: done"), "{stderr}");
    // Tuned once: LoRA's choice (a one-point grid) is the LoRA baseline's and SLoRA Stage 2's rate,
    // SFT's choice comes from its two-point grid.
    let methods = &json["points"][0]["summary"]["methods"];
    assert_eq!((methods["lora"]["lr"].as_f64(), methods["slora"]["lr"].as_f64()), (Some(3e-4), Some(3e-4)), "{methods}");
    assert!([3e-3, 1e-2].contains(&methods["sft"]["lr"].as_f64().unwrap()), "{methods}");
}

/// The accuracy and gap tables of a study's report.md, and its verdicts other than claim 3's
/// (which rests on measured seconds).
fn tables(dir: &Path, study: &str) -> (Vec<String>, Value) {
    let md = std::fs::read_to_string(report_dir(dir, study).join("report.md")).unwrap();
    let keep = |title: &str| -> Vec<String> {
        let start = md.find(title).unwrap_or_else(|| panic!("{title} not in report.md"));
        md[start..].lines().skip(1).skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).map(String::from).collect()
    };
    let mut rows = keep("Final test accuracy (%).");
    rows.extend(keep("Gap to FFT (pp)."));
    let json: Value = serde_json::from_slice(&std::fs::read(report_dir(dir, study).join("study.json")).unwrap()).unwrap();
    let verdicts: Vec<Value> = json["verdicts"].as_array().unwrap().iter().filter(|v| v["claim"] != "time-cut").cloned().collect();
    (rows, Value::Array(verdicts))
}

/// Polls `cond` until it holds (true) or `child` exits (false).
fn wait_until(child: &mut Child, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("condition not reached in 600 s");
}

fn committed(artifacts: &Path, stage: &str) -> usize {
    std::fs::read_dir(artifacts.join(stage))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count()
}

#[test]
fn a_study_killed_twice_finishes_with_identical_tables() {
    let clean = ScratchDir::new("study-clean");
    let (json, _) = run_study(&clean, "homogeneous");
    check_study(&json, &clean, "homogeneous", 1, &["accuracy_vs_point", "gap_vs_point", "accuracy_vs_round-iid"]);

    let killed = ScratchDir::new("study-killed");
    let art = killed.join("artifacts");
    // Once inside tune (its first grid point checkpointed), then inside the second seed's Stage 1.
    for (stage, count) in [("tune", 0usize), ("stage1", 1usize)] {
        let mut child = study_cmd(&killed, "homogeneous").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let reached = wait_until(&mut child, || {
            let working = std::fs::read_dir(art.join(stage))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with('.'));
            working && committed(&art, stage) >= count
        });
        assert!(reached, "the study ended before {stage} started");
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
    }
    let (json, _) = run_study(&killed, "homogeneous");
    check_study(&json, &killed, "homogeneous", 1, &[]);
    assert_eq!(tables(&killed, "homogeneous"), tables(&clean, "homogeneous"));
}

/// `study convergence --smoke --plan --json` in `dir`: the plan, and no training run.
fn plan_json(dir: &Path) -> Value {
    let out = study_cmd(dir, "convergence").args(["--plan", "--json"]).output().unwrap();
    assert!(out.status.success(), "plan failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_plan_covers_every_run_and_prices_it_with_measured_step_times() {
    let dir = ScratchDir::new("study-plan");
    let plan = plan_json(&dir);
    let runs = plan["runs"].as_array().unwrap();
    // The smoke study: 6 points × 2 seeds; SLoRA's two stages plus the point's baselines
    // (FFA-LoRA at IID and α=0.01, LoRA-A² at α=0.1 and 0.01, FedEx-LoRA, FlexLoRA and FedSA-LoRA at
    // 0.01), and the tune grid (one rate for each of the eight tuned methods) at its point.
    let mut expected = std::collections::BTreeSet::new();
    for (point, methods) in [
        ("IID", &["fft", "lora", "ffa-lora"][..]),
        ("Dir α=0.5", &["fft", "lora"][..]),
        ("Dir α=0.1", &["fft", "lora", "lora-a2"][..]),
        ("Dir α=0.01", &["fft", "lora", "ffa-lora", "fedex-lora", "lora-a2", "flexlora", "fedsa-lora"][..]),
        ("Dir α=0.01 · 5 epochs", &["fft", "lora"][..]),
        ("Dir α=0.01 · LoRA-A² head", &["fft", "lora"][..]),
    ] {
        for seed in [1u64, 2] {
            for m in ["slora-stage1", "slora-stage2"].iter().chain(methods) {
                expected.insert((point.to_string(), seed, m.to_string()));
            }
        }
    }
    for m in ["tune-fft-1e-4", "tune-lora-1e-3", "tune-sft-3e-3", "tune-ffa-lora-3e-3", "tune-fedex-lora-1e-3", "tune-lora-a2-1e-3", "tune-flexlora-1e-3", "tune-fedsa-lora-1e-3"] {
        expected.insert(("tune".to_string(), 1, m.to_string()));
    }
    let got: std::collections::BTreeSet<(String, u64, String)> = runs
        .iter()
        .map(|r| (r["point"].as_str().unwrap().to_string(), r["seed"].as_u64().unwrap(), r["method"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), runs.len(), "each run once");
    for r in runs {
        assert!(r["train_steps"].as_u64().unwrap() > 0 && r["seconds"].as_f64().unwrap() > 0.0, "{r}");
        assert!(!r["cached"].as_bool().unwrap(), "nothing has trained: {r}");
    }
    // 5 local epochs do 5× the local steps per round of 1 epoch on the same partition.
    let per_round = |point: &str, seed: u64| {
        let r = runs.iter().find(|r| r["point"] == point && r["seed"] == seed && r["method"] == "fft").unwrap();
        r["train_steps"].as_f64().unwrap() / r["rounds"].as_f64().unwrap()
    };
    assert!(per_round("Dir α=0.01 · 5 epochs", 1) > 4.0 * per_round("Dir α=0.01", 1) * 0.8, "more epochs, more steps");
    // Only partitions were made: no stage trained.
    assert!(!dir.join("artifacts/stage1").exists() && !dir.join("artifacts/baselines").exists());

    // The estimate comes from the cached measurements: doubling every measured step time doubles it.
    let total = plan["total_seconds"].as_f64().unwrap();
    let bench = dir.join("artifacts/bench");
    let files: Vec<PathBuf> = std::fs::read_dir(&bench).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty(), "step times are cached in {}", bench.display());
    for f in &files {
        let mut t: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        for key in ["full_ms", "lora_ms", "sparse_ms", "eval_ms"] {
            t[key] = Value::from(2.0 * t[key].as_f64().unwrap());
        }
        std::fs::write(f, serde_json::to_vec(&t).unwrap()).unwrap();
    }
    let doubled = plan_json(&dir)["total_seconds"].as_f64().unwrap();
    assert!((doubled - 2.0 * total).abs() < 1e-6 * total, "{doubled} != 2 × {total}");
}

#[test]
fn drift_and_convergence_studies_run_and_show_their_plans() {
    let dir = ScratchDir::new("study-drift");
    let (json, _) = run_study(&dir, "drift");
    check_study(&json, &dir, "drift", 4, &[]);
    assert_eq!(claims(&json), ["drift-opens-gap"]);
    let evidence = json["verdicts"][0]["evidence"].as_str().unwrap();
    assert!(evidence.contains("IID · 5 epochs minus IID · 1 epoch") && evidence.contains("judged at Dir α=0.1 · 5 epochs"), "{evidence}");
    let plan = json["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 4 * 3, "FFT, LoRA and SLoRA at each point: {plan:?}");
    assert!(plan.iter().all(|r| r["measured_seconds"].as_f64().unwrap() > 0.0 && r["estimated_seconds"].as_f64().unwrap() > 0.0));
    let md = std::fs::read_to_string(report_dir(&dir, "drift").join("report.md")).unwrap();
    assert!(md.contains("Cost plan against measured time"), "{md}");

    let dir = ScratchDir::new("study-convergence");
    let (json, stderr) = run_study(&dir, "convergence");
    check_study(&json, &dir, "convergence", 6, &["accuracy_vs_point", "gap_vs_point"]);
    assert!(stderr.contains("tune: done"), "{stderr}");
    assert_eq!(claims(&json), ["gap-grows", "slora-closes-gap", "time-cut", "drift-opens-gap"]);
    assert_eq!(json["settings"]["gap_contrast"], "slope");
    // Judged on the mean of the last rounds measured on every test row (2 at smoke size).
    let fft = &json["points"][0]["summary"]["per_seed"]["1"]["fft"];
    assert!(fft["full_test_mean_accuracy"].is_number(), "{fft}");
    assert!(json["points"].as_array().unwrap().iter().all(|p| p["statistic"] == "last-k-full"));
    assert!(json["plan"].as_array().unwrap().iter().any(|r| r["method"] == "tune"));
    // The newer methods ran at the claim point, with their paired differences against LoRA.
    let at = |label: &str| json["points"].as_array().unwrap().iter().find(|p| p["label"] == label).unwrap().clone();
    let claim = at("Dir α=0.01");
    for m in ["fedex-lora", "lora-a2", "flexlora"] {
        assert!(claim["summary"]["methods"][m]["accuracy"].is_number(), "{m}: {}", claim["summary"]["methods"]);
        let pairs = claim["summary"]["paired_differences"].as_array().unwrap();
        assert!(pairs.iter().any(|d| d["a"] == m && d["b"] == "lora"), "{m} − LoRA: {pairs:?}");
    }
    // Under LoRA-A²'s head protocol FFT is the claim point's own run (the run cache; the head and
    // LoRA switches do not key it), LoRA is not.
    let head = at("Dir α=0.01 · LoRA-A² head");
    for seed in ["1", "2"] {
        let (a, b) = (&head["summary"]["per_seed"][seed], &claim["summary"]["per_seed"][seed]);
        assert_eq!(a["fft"]["final_accuracy"], b["fft"]["final_accuracy"], "seed {seed}: FFT");
        assert_eq!(a["fft"]["wall_seconds"], b["fft"]["wall_seconds"], "seed {seed}: FFT was not trained again");
    }
}

#[test]
fn ranks_study_runs_mixed_client_ranks_and_judges_them() {
    let dir = ScratchDir::new("study-ranks");
    let (json, _) = run_study(&dir, "ranks");
    check_study(&json, &dir, "ranks", 2, &[]);
    assert_eq!(claims(&json), ["flexlora-beats-zero-padding", "mixed-ranks-cost"]);
    let evidence: Vec<&str> = json["verdicts"].as_array().unwrap().iter().map(|v| v["evidence"].as_str().unwrap()).collect();
    assert!(evidence[0].contains("At ranks 4/8/16: FlexLoRA − LoRA (zero-padded)"), "{}", evidence[0]);
    assert!(evidence[1].contains("ranks 4/8/16 minus uniform r 8") && evidence[1].contains("FlexLoRA"), "{}", evidence[1]);
    // Zero-padding and FlexLoRA send the same shapes at each point (the exact counts are
    // tests/comparisons.rs's); SLoRA's Stage 2 ran at the mixed point too.
    let points = json["points"].as_array().unwrap();
    let up = |p: &Value, m: &str| p["summary"]["methods"][m]["bytes_up_per_client_total"].as_f64().unwrap_or_else(|| panic!("{m}: {}", p["summary"]["methods"][m]));
    for p in points {
        assert_eq!(up(p, "lora"), up(p, "flexlora"), "{}", p["label"]);
        assert!(up(p, "slora") > 0.0);
    }
}

#[test]
fn privacy_study_audits_every_point_and_judges_leakage_and_dp() {
    let dir = ScratchDir::new("study-privacy");
    let (json, _) = run_study(&dir, "privacy");
    check_study(&json, &dir, "privacy", 4, &["accuracy_vs_point"]);
    assert_eq!(claims(&json), ["slora-leaks-less", "slora-loses-less-under-dp"]);
    let points = json["points"].as_array().unwrap();
    for p in points {
        let leakage = &p["summary"]["leakage"];
        for m in ["fft", "lora", "slora-stage1", "slora-stage2"] {
            assert!(leakage[m]["uploads"].as_u64().unwrap() > 0, "{}: {m} audited", p["label"]);
        }
        // FFT's tokens leak without DP and under central DP (the server still sees each clipped
        // update); under local DP the noise moves every row.
        let fft_precision = leakage["fft"]["token_precision"].as_f64().unwrap();
        if p["label"] == "local ε=8" {
            assert!(fft_precision < 0.2, "{fft_precision}");
        } else {
            assert_eq!(fft_precision, 1.0, "{}", p["label"]);
        }
        assert!(leakage["lora"]["token_recall"].is_null());
    }
    assert!(points[0]["summary"]["privacy"].is_null(), "no DP at the first point");
    let eps: Vec<f64> = points[1..].iter().map(|p| p["summary"]["privacy"]["epsilon"].as_f64().unwrap()).collect();
    assert!((eps[0] - 8.0).abs() < 1e-3 && (eps[1] - 2.0).abs() < 1e-3 && (eps[2] - 8.0).abs() < 1e-3, "{eps:?}");
    let leaks = &json["verdicts"][0];
    assert!(leaks["evidence"].as_str().unwrap().contains("token recall: FFT 100.0 %, SLoRA 0.0 %"), "{leaks}");
    let md = std::fs::read_to_string(report_dir(&dir, "privacy").join("report.md")).unwrap();
    assert!(md.contains("What the server learns") && md.contains("Privacy per point"), "{md}");
    assert!(md.contains("The leakage attacks are the exception"), "the findings say which intervals are not over seeds");
}
