//! Foundation through the real `pipeline` binary: the issue's "Done when" commands on 20 Newsgroups,
//! config errors that leave nothing behind, cache hit / miss / invalidation, interrupted writes, the
//! process lock, `status` and `inspect`, and hub-id resolution offline from an HF cache built in a
//! temporary directory out of ../shared/models.

use crate::common::{repo, shared};
use serde_json::Value;
use slora_data::{read_shard, shard::client_file_name};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;


/// What a run of the binary gave.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `pipeline ARGS` from the repository root with `envs` set (HF_* cleared unless given).
fn pipeline_env(args: &[&str], envs: &[(&str, &Path)]) -> Out {
    let mut cmd = crate::common::pipeline_in(&repo());
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pipeline");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn pipeline(args: &[&str]) -> Out {
    pipeline_env(args, &[])
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The artifact folders of a stage (keys), sorted.
fn keys(artifacts: &Path, stage: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(artifacts.join(stage))
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|k| !k.starts_with('.'));
    v.sort();
    v
}

/// A small JSON-lines dataset: `n` rows, 5 string labels, 3/4 train and 1/4 test.
fn write_jsonl(path: &Path, n: usize, salt: &str) {
    let words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "market", "engine", "garden"];
    let labels = ["sports", "politics", "science", "arts", "travel"];
    let mut text = String::new();
    for i in 0..n {
        let body: Vec<&str> = (0..(5 + i % 40)).map(|j| words[(i * 7 + j * 3) % words.len()]).collect();
        let split = if i % 4 == 3 { "test" } else { "train" };
        text.push_str(&serde_json::json!({"text": format!("{salt} {}", body.join(" ")), "label": labels[i % 5], "split": split}).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// `--set` arguments for a small run on `data` with MiniLM.
fn small_args(data: &Path) -> Vec<String> {
    [
        format!("data.source={}", s(data)),
        "data.text_column=text".into(),
        format!("model.source={}", s(&shared("models/paraphrase-MiniLM-L3-v2"))),
        "data.max_len=32".into(),
        "partition.clients=4".into(),
        "partition.min_client_size=5".into(),
        "federation.clients_per_round=2".into(),
        "partition.validation_fraction=0".into(),
    ]
    .into_iter()
    .flat_map(|kv| ["--set".to_string(), kv])
    .collect()
}

fn run_small(artifacts: &Path, data: &Path, extra: &[&str], cmd: &[&str]) -> Out {
    let mut args = vec!["--artifacts".to_string(), s(artifacts)];
    args.extend(small_args(data));
    args.extend(extra.iter().map(|e| e.to_string()));
    args.extend(cmd.iter().map(|e| e.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pipeline(&refs)
}

const DONE_WHEN: &[&str] = &[
    "--set",
    "data.source=../shared/datasets/20newsgroups_bydate.parquet",
    "--set",
    "data.text_column=text_clean",
    "--set",
    "model.source=../shared/models/paraphrase-MiniLM-L3-v2",
    "--set",
    "partition.scheme=dirichlet",
    "--set",
    "partition.alpha=0.1",
    "--set",
    "partition.clients=20",
    // Issue 2's done-when: every training row in the 20 shards (pipeline.toml subsamples and carves
    // validation rows for its default experiment).
    "--set",
    "data.max_train=0",
    "--set",
    "partition.validation_fraction=0",
];

#[test]
fn done_when_news20_dirichlet_writes_20_shards_and_reruns_for_free() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let mut args = vec!["--artifacts", artifacts.to_str().unwrap()];
    args.extend_from_slice(DONE_WHEN);
    args.push("partition");
    let out = pipeline(&args);
    assert!(out.ok, "{}", out.stderr);
    let ks = keys(&artifacts, "partition");
    assert_eq!(ks.len(), 1);
    let dir = artifacts.join("partition").join(&ks[0]);

    let mut train_rows = 0;
    let mut row_ids = BTreeSet::new();
    let mut label_counts = vec![vec![0u64; 20]; 20];
    for c in 0..20 {
        let shard = read_shard(&dir.join(client_file_name(c))).unwrap();
        assert!(!shard.is_empty());
        assert!(shard.input_ids.iter().all(|ids| (2..=128).contains(&ids.len()) && ids[0] == 101));
        train_rows += shard.len();
        for (&l, &r) in shard.labels.iter().zip(&shard.row_ids) {
            label_counts[c][l as usize] += 1;
            assert!(row_ids.insert(r), "row {r} in two clients");
        }
    }
    assert!(!dir.join(client_file_name(20)).exists());
    assert_eq!(train_rows, 11_314);
    let test = read_shard(&dir.join("test.parquet")).unwrap();
    assert_eq!(test.len(), 7_532);
    assert!(test.row_ids.iter().all(|r| !row_ids.contains(r)), "test rows are not train rows");

    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stage"], "partition");
    assert_eq!(manifest["key"], ks[0].as_str());
    assert_eq!(manifest["summary"]["num_labels"], 20);
    assert_eq!(manifest["summary"]["label_names"][0], "alt.atheism");
    // shared/README.md: the dataset file's sha256 starts b77c1105 and ends 4a91.
    let data_hash = manifest["inputs"]["data.source_sha256"].as_str().unwrap();
    assert!(data_hash.starts_with("b77c1105") && data_hash.ends_with("4a91"), "{data_hash}");
    assert_eq!(manifest["files"].as_object().unwrap().len(), 23, "20 clients + test + stats + labels");
    let empty = &manifest["summary"]["empty_texts"];
    assert_eq!(empty["train"].as_u64().unwrap() + empty["test"].as_u64().unwrap(), 515);

    // inspect --json agrees with the shards.
    let mut inspect_args = vec!["--artifacts", artifacts.to_str().unwrap()];
    inspect_args.extend_from_slice(DONE_WHEN);
    inspect_args.extend(["inspect", "partition", "--json"]);
    let out = pipeline(&inspect_args);
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["clients"].as_u64(), v["train_rows"].as_u64(), v["test_rows"].as_u64()), (Some(20), Some(11_314), Some(7_532)));
    assert_eq!(v["label_histogram"], serde_json::json!(label_counts));
    let mean_entropy = v["mean_label_entropy_bits"].as_f64().unwrap();
    assert!(mean_entropy > 0.5 && mean_entropy < 3.5, "alpha 0.1 is skewed: {mean_entropy}");
    // The text view of the same artifact, addressed by path.
    let out = pipeline(&["inspect", dir.to_str().unwrap()]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("clients 20, train rows 11314") && out.stdout.contains("test rows 7532"), "{}", out.stdout);

    // Running again does no work.
    let before = std::fs::metadata(dir.join("manifest.json")).unwrap().modified().unwrap();
    args.pop();
    args.push("partition");
    let out = pipeline(&args);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("partition: up to date"), "{}", out.stderr);
    assert!(!out.stderr.contains("running"), "{}", out.stderr);
    assert_eq!(std::fs::metadata(dir.join("manifest.json")).unwrap().modified().unwrap(), before);
    assert_eq!(keys(&artifacts, "partition"), ks);
}

#[test]
fn alpha_minus_one_fails_naming_the_key_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let mut args = vec!["--artifacts", artifacts.to_str().unwrap()];
    args.extend_from_slice(DONE_WHEN);
    args.extend(["--set", "partition.alpha=-1", "partition"]);
    let out = pipeline(&args);
    assert!(!out.ok);
    assert!(out.stderr.contains("partition.alpha must be > 0 (got -1)"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(!artifacts.exists(), "nothing created");
    // An existing, empty artifacts dir stays empty.
    std::fs::create_dir(&artifacts).unwrap();
    assert!(!pipeline(&args).ok);
    assert_eq!(std::fs::read_dir(&artifacts).unwrap().count(), 0);
}

#[test]
fn config_errors_name_the_key_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let a = artifacts.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "partition.alphaa=1", "partition"], "unknown config key `partition.alphaa`"),
        (&["--set", "partition.clients=abc", "partition"], "partition.clients must be an integer (got \"abc\")"),
        (&["--set", "partition.scheme=uniform", "partition"], "partition.scheme must be one of iid, dirichlet, dirichlet-client, pathological, natural"),
        (&["--set", "stage1.density=0", "partition"], "stage1.density must be in (0, 1] (got 0)"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["--artifacts", a];
        args.extend_from_slice(extra);
        let out = pipeline(&args);
        assert!(!out.ok && out.stderr.contains(needle), "{extra:?}: {}", out.stderr);
    }
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[partition]\nclients = 4\nshuffle = true\n").unwrap();
    let out = pipeline(&["--config", bad.to_str().unwrap(), "--artifacts", a, "partition"]);
    assert!(!out.ok && out.stderr.contains("unknown config key `partition.shuffle`"), "{}", out.stderr);
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);
    let out = pipeline(&["--config", tmp.path().join("missing.toml").to_str().unwrap(), "partition"]);
    assert!(!out.ok && out.stderr.contains("missing.toml"), "{}", out.stderr);
    assert!(!artifacts.exists());
}

#[test]
fn cache_hits_misses_and_invalidation() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let data = tmp.path().join("d.jsonl");
    write_jsonl(&data, 400, "v1");

    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("partition: running"), "{}", out.stderr);
    let k1 = keys(&artifacts, "partition");
    assert_eq!(k1.len(), 1);
    let lock: Value = serde_json::from_slice(&std::fs::read(artifacts.join("pipeline.lock")).unwrap()).unwrap();
    assert_eq!(lock["stages"]["partition"]["key"], k1[0].as_str());

    // Hit: same config.
    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(out.ok && out.stderr.contains("up to date"), "{}", out.stderr);
    // threads are not part of the key.
    let out = run_small(&artifacts, &data, &["--threads", "1"], &["partition"]);
    assert!(out.ok && out.stderr.contains("up to date"), "{}", out.stderr);

    // A param change: status says which, then a run makes a second artifact.
    let status = run_small(&artifacts, &data, &["--set", "partition.alpha=0.5"], &["status"]);
    assert!(status.ok, "{}", status.stderr);
    assert!(status.stdout.contains("partition  stale"), "{}", status.stdout);
    assert!(status.stdout.contains("param changed: partition.alpha (0.1 -> 0.5)"), "{}", status.stdout);
    let out = run_small(&artifacts, &data, &["--set", "partition.alpha=0.5"], &["partition"]);
    assert!(out.ok && out.stderr.contains("running"), "{}", out.stderr);
    assert_eq!(keys(&artifacts, "partition").len(), 2);
    // Back to alpha 0.1: the first artifact is still there (content-addressed).
    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(out.ok && out.stderr.contains("up to date"), "{}", out.stderr);
    // A param the stage does not read (a later stage's) does not invalidate it.
    let out = run_small(&artifacts, &data, &["--set", "stage1.density=0.05"], &["partition"]);
    assert!(out.ok && out.stderr.contains("up to date"), "{}", out.stderr);

    // The same bytes under another name: still a hit (inputs are hashed by content).
    let copy = tmp.path().join("copy.jsonl");
    std::fs::copy(&data, &copy).unwrap();
    let out = run_small(&artifacts, &copy, &[], &["partition"]);
    assert!(out.ok && out.stderr.contains("up to date"), "{}", out.stderr);

    // An input file change: status names it, the run rebuilds under a new key.
    write_jsonl(&data, 400, "v2");
    let status = run_small(&artifacts, &data, &[], &["status", "--json"]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    let part = &v["stages"][0];
    assert_eq!((part["stage"].as_str(), part["state"].as_str()), (Some("partition"), Some("stale")));
    assert_eq!(part["reasons"], serde_json::json!(["input changed: data.source"]));
    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(out.ok && out.stderr.contains("running"), "{}", out.stderr);
    assert_eq!(keys(&artifacts, "partition").len(), 3);

    // --force rebuilds an up-to-date stage, to the same bytes (deterministic).
    let dir = artifacts.join("partition").join(&k1[0]);
    let shard_before = std::fs::read(dir.join("client-00000.parquet")).unwrap();
    let out = run_small(&artifacts, &copy, &["--force"], &["partition"]);
    assert!(out.ok && out.stderr.contains("forced"), "{}", out.stderr);
    assert_eq!(std::fs::read(dir.join("client-00000.parquet")).unwrap(), shard_before);

    // A tampered output makes the artifact a miss: warned about and rebuilt.
    std::fs::write(dir.join("client-00001.parquet"), b"garbage").unwrap();
    let out = run_small(&artifacts, &copy, &[], &["partition"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("`client-00001.parquet` is corrupt") && out.stderr.contains("running"), "{}", out.stderr);
    assert!(read_shard(&dir.join("client-00001.parquet")).is_ok());
}

#[test]
fn interrupted_write_is_not_taken_as_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let data = tmp.path().join("d.jsonl");
    write_jsonl(&data, 200, "x");
    assert!(run_small(&artifacts, &data, &[], &["partition"]).ok);
    let key = keys(&artifacts, "partition").remove(0);
    let stage_dir = artifacts.join("partition");
    let done = stage_dir.join(&key);
    // Simulate a writer killed before the rename: its temp folder holds every file, manifest included,
    // and the final folder is gone.
    let tmp_dir = stage_dir.join(format!(".tmp-{key}-999999"));
    std::fs::rename(&done, &tmp_dir).unwrap();
    // And a final-named folder whose manifest never got written.
    std::fs::create_dir(&done).unwrap();
    std::fs::copy(tmp_dir.join("client-00000.parquet"), done.join("client-00000.parquet")).unwrap();

    let status = run_small(&artifacts, &data, &[], &["status"]);
    assert!(status.stdout.contains("partition  stale") && status.stdout.contains("output corrupt or incomplete"), "{}", status.stdout);
    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("running"), "rebuilt: {}", out.stderr);
    assert!(!tmp_dir.exists(), "leftover temp folder removed");
    assert!(done.join("manifest.json").exists());
    assert_eq!(keys(&artifacts, "partition"), vec![key]);
}

#[test]
fn a_second_process_fails_at_once_on_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let data = tmp.path().join("d.jsonl");
    write_jsonl(&data, 100, "x");
    let held = slora_pipeline::Store::open(&artifacts).unwrap();
    let out = run_small(&artifacts, &data, &[], &["partition"]);
    assert!(!out.ok);
    let expected = format!("artifacts dir {} locked by pid {}", held.root().display(), std::process::id());
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    // Reading commands do not need the lock.
    assert!(run_small(&artifacts, &data, &[], &["status"]).ok);
    drop(held);
    assert!(run_small(&artifacts, &data, &[], &["partition"]).ok);
}

#[test]
fn pathological_and_iid_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let data = tmp.path().join("d.jsonl");
    write_jsonl(&data, 400, "x");
    let extra = ["--set", "partition.scheme=pathological", "--set", "partition.classes_per_client=2"];
    let out = run_small(&artifacts, &data, &extra, &["inspect", "partition"]);
    assert!(!out.ok && out.stderr.contains("run `pipeline partition`"), "{}", out.stderr);
    assert!(run_small(&artifacts, &data, &extra, &["partition"]).ok);
    let out = run_small(&artifacts, &data, &extra, &["inspect", "partition", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["label_names"], serde_json::json!(["arts", "politics", "science", "sports", "travel"]));
    for hist in v["label_histogram"].as_array().unwrap() {
        let held = hist.as_array().unwrap().iter().filter(|c| c.as_u64() > Some(0)).count();
        assert_eq!(held, 2, "{hist}");
    }
    assert_eq!(v["train_rows"], 300);
    assert_eq!(v["test_rows"], 100);

    let extra = ["--set", "partition.scheme=iid", "--set", "data.max_train=101", "--set", "data.max_test=10"];
    assert!(run_small(&artifacts, &data, &extra, &["partition"]).ok);
    let out = run_small(&artifacts, &data, &extra, &["inspect", "partition", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["rows_per_client"], serde_json::json!([26, 25, 25, 25]));
    assert_eq!(v["test_rows"], 10);
}

/// `models--ORG--NAME/{refs/main, snapshots/REV/...}` with symlinks into ../shared/models/NAME.
fn hf_cache_with(hf_home: &Path, kind: &str, repo_id: &str, files: &[(&str, PathBuf)]) -> PathBuf {
    let rev = "4f0c5e3d2b1a09876543210fedcba9876543210a";
    let repo = hf_home.join("hub").join(format!("{kind}--{}", repo_id.replace('/', "--")));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, target) in files {
        std::os::unix::fs::symlink(target.canonicalize().unwrap(), snap.join(name)).unwrap();
    }
    snap
}

#[test]
fn hub_ids_resolve_offline_from_an_hf_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf");
    let model = shared("models/paraphrase-MiniLM-L3-v2");
    let files: Vec<(&str, PathBuf)> =
        ["config.json", "tokenizer.json", "model.safetensors"].iter().map(|f| (*f, model.join(f))).collect();
    hf_cache_with(&hf_home, "models", "sentence-transformers/paraphrase-MiniLM-L3-v2", &files);
    let data = tmp.path().join("news.jsonl");
    write_jsonl(&data, 200, "hub");
    hf_cache_with(&hf_home, "datasets", "someone/tiny-news", &[("train.jsonl", data.clone())]);

    let artifacts = tmp.path().join("artifacts");
    let envs: &[(&str, &Path)] = &[("HF_HOME", &hf_home), ("HF_HUB_OFFLINE", Path::new("1"))];
    let args = |model_id: &str, data_id: &str| -> Vec<String> {
        vec![
            "--artifacts".into(),
            s(&artifacts),
            "--set".into(),
            format!("data.source={data_id}"),
            "--set".into(),
            "data.hub_file=train.jsonl".into(),
            "--set".into(),
            "data.text_column=text".into(),
            "--set".into(),
            format!("model.source={model_id}"),
            "--set".into(),
            "partition.clients=2".into(),
            "--set".into(),
            "federation.clients_per_round=1".into(),
            "--set".into(),
            "partition.scheme=iid".into(),
            "partition".into(),
        ]
    };
    let run = |model_id: &str, data_id: &str| {
        let a = args(model_id, data_id);
        pipeline_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), envs)
    };
    let out = run("sentence-transformers/paraphrase-MiniLM-L3-v2", "someone/tiny-news");
    assert!(out.ok, "{}", out.stderr);
    let key = keys(&artifacts, "partition").remove(0);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("partition").join(&key).join("manifest.json")).unwrap()).unwrap();
    let tok_hash = slora_pipeline::hashing::hash_file(&model.join("tokenizer.json")).unwrap();
    assert_eq!(manifest["inputs"]["tokenizer_sha256"], tok_hash.as_str());
    assert_eq!(manifest["inputs"]["data.source_sha256"], slora_pipeline::hashing::hash_file(&data).unwrap().as_str());
    assert_eq!(manifest["summary"]["train_rows"], 150);

    // The library API on the same cache.
    let cache = slora_hub::HubCache::new(hf_home.join("hub"));
    let dir = cache.resolve_model_dir("sentence-transformers/paraphrase-MiniLM-L3-v2", "main", &["config.json", "model.safetensors"]).unwrap();
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), std::fs::read(model.join("config.json")).unwrap());

    // A repo that is not in the cache: one line naming the repo, revision, file and cache dir.
    let out = run("sentence-transformers/all-MiniLM-L6-v2", "someone/tiny-news");
    assert!(!out.ok);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    let err = errors[0];
    // The model's config.json is read first (preflight: max_len and rank limits), so it is the file named.
    for needle in ["sentence-transformers/all-MiniLM-L6-v2", "revision `main`", "config.json", &s(&hf_home.join("hub")), "HF_HUB_OFFLINE=1"] {
        assert!(err.contains(needle), "{err} lacks {needle}");
    }
}

/// Issue 13: `partition.scheme = "natural"` on News Category v3's writers, through the CLI.
#[test]
fn natural_ids_one_client_per_writer_capped_by_max_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let art = s(&artifacts);
    let data = format!("data.source={}", s(&shared("datasets/news_category_v3_first9999.jsonl.gz")));
    let model = format!("model.source={}", s(&shared("models/paraphrase-MiniLM-L3-v2")));
    let base = [
        data.as_str(),
        "data.text_column=headline+short_description",
        "data.label_column=category",
        "data.test_fraction=0.2",
        "data.max_train=2000",
        "data.max_test=100",
        "data.max_len=32",
        model.as_str(),
        "partition.scheme=natural",
        "partition.validation_fraction=0",
        "federation.clients_per_round=2",
        "federation.eval_max_rows=50",
        "stage1.rounds=1",
    ];
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["--artifacts", art.as_str()];
        for kv in base.iter().chain(extra) {
            args.extend(["--set", kv]);
        }
        args.extend(cmd);
        pipeline(&args)
    };
    let out = run(&[], &["partition"]);
    assert!(!out.ok && out.stderr.contains("partition.id_column is required"), "{}", out.stderr);

    let capped = ["partition.id_column=authors", "partition.max_clients=25"];
    let out = run(&capped, &["partition"]);
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&run(&capped, &["inspect", "partition", "--json"]).stdout).unwrap();
    assert_eq!(v["clients"], 25);
    assert_eq!(v["train_rows"], 2000);
    assert_eq!(v["natural"]["id_column"], "authors");
    let distinct = v["natural"]["distinct_ids"].as_u64().unwrap();
    assert!(distinct > 25, "{distinct} writers among 2,000 rows");
    let held: u64 = v["natural"]["ids_per_client"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(held, distinct, "every writer in exactly one client");
    let text = run(&capped, &["inspect", "partition"]).stdout;
    assert!(text.contains("natural ids: one client per `authors` value") && text.contains("[Lee Moran]"), "{text}");
    // The federation trains on as many clients as the data made (not partition.clients = 20).
    let out = run(&capped, &["stage1"]);
    assert!(out.ok, "{}", out.stderr);

    // Uncapped: one client per writer; a cap below clients_per_round is an error naming both keys.
    let out = run(&["partition.id_column=authors"], &["partition"]);
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&run(&["partition.id_column=authors"], &["inspect", "partition", "--json"]).stdout).unwrap();
    assert_eq!(v["clients"].as_u64(), Some(distinct));
    let out = run(&["partition.id_column=authors", "partition.max_clients=1"], &["partition"]);
    assert!(!out.ok && out.stderr.contains("federation.clients_per_round = 2 exceeds the 1 clients"), "{}", out.stderr);
    let out = run(&["partition.id_column=writer"], &["partition"]);
    assert!(!out.ok && out.stderr.contains("`writer`") && out.stderr.contains("partition.id_column"), "{}", out.stderr);
}

/// Issue 14: the vendored candle-core is the crates.io release plus `backprop.patch`, nothing else.
#[test]
fn vendored_candle_core_is_the_release_plus_its_patch() {
    let out = Command::new("bash").arg(repo().join("scripts/vendor-candle-core.sh")).arg("--check").output().expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && (stderr.contains("curl") || stderr.contains("Could not resolve") || out.status.code() == Some(3)) {
        eprintln!("skipped: crates.io cannot be reached, or a tool is missing ({})", stderr.trim());
        return;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("vendor/candle-core = candle-core 0.11.1 + backprop.patch"), "{stdout}");
}

/// SST-2 (train / validation, 64 / 32 rows of 32 tokens), 2 iid clients, one Stage-1 round, and
/// the shipped pipeline.toml otherwise: only model.source changes, and each architecture takes its
/// own adapter targets and head (pipeline.toml leaves [adapter] unset).
const SST2_ONE_ROUND_OWN_ADAPTERS: &[&str] = &[
    "data.test_split=validation",
    "data.text_column=text",
    "data.max_len=32",
    "data.max_train=64",
    "data.max_test=32",
    "partition.scheme=iid",
    "partition.clients=2",
    "partition.validation_fraction=0",
    "federation.clients_per_round=2",
    "stage1.rounds=1",
];

/// Issue 16: without `[adapter]` keys each architecture adapts its own attention and feed-forward
/// linears and trains its own pooler and classifier; BERT's names on DistilBERT fail before training.
#[test]
fn adapter_defaults_follow_the_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let art = s(&tmp.path().join("artifacts"));
    let data = format!("data.source={}", s(&shared("datasets/sst2.parquet")));
    let run = |model: &str, extra: &[&str], cmd: &[&str]| {
        let model = format!("model.source={}", s(&shared(&format!("fixtures/parity/{model}"))));
        let mut args = vec!["--artifacts", art.as_str()];
        for kv in [data.as_str(), model.as_str()].iter().chain(SST2_ONE_ROUND_OWN_ADAPTERS).chain(extra) {
            args.extend(["--set", kv]);
        }
        args.extend(cmd);
        pipeline(&args)
    };
    for (model, per_layer, layers) in [("distilbert-tiny", 6, 2), ("albert-tiny", 6, 1)] {
        let out = run(model, &[], &["stage1"]);
        assert!(out.ok, "{model}: {}", out.stderr);
        let v: Value = serde_json::from_str(&run(model, &[], &["inspect", "stage1", "--json"]).stdout).unwrap();
        assert_eq!(v["summary"]["adapted_matrices"], per_layer * layers, "{model}: every block linear adapted");
        assert!(!out.stderr.contains("does not include"), "{model}: its own pooler trains: {}", out.stderr);
    }
    // BERT's list on DistilBERT: one line naming the key and DistilBERT's own names, nothing trained.
    let bert = "adapter.target_modules=[\"query\", \"value\"]";
    let out = run("distilbert-tiny", &[bert], &["stage1"]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("adapter.target_modules") && out.stderr.contains("q_lin"), "{}", out.stderr);
    // A partial list runs, warning which linears stay unadapted.
    let out = run("albert-tiny", &["adapter.target_modules=[\"query\", \"value\"]"], &["--force", "stage1"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("not adapted: attention.key, attention.dense, ffn, ffn_output"), "{}", out.stderr);
}

/// SST-2's train rows (in two shards) and validation rows as Parquet files, the way the Hub's
/// `refs/convert/parquet` branch lays a dataset out: `default/<split>/000N.parquet`.
fn sst2_converted_parquet(train_rows: usize, validation_rows: usize) -> Vec<(String, Vec<u8>)> {
    use arrow::array::{Array, BooleanArray, StringArray};
    use parquet::arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ArrowWriter};
    let file = std::fs::File::open(shared("datasets/sst2.parquet")).unwrap();
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let split = all.column_by_name("split").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    let rows_of = |name: &str, skip: usize, take: usize| -> Vec<u8> {
        let mut seen = 0;
        let keep: BooleanArray = (0..split.len())
            .map(|i| {
                let this = split.value(i) == name;
                let keep = this && seen >= skip && seen < skip + take;
                seen += usize::from(this);
                Some(keep)
            })
            .collect();
        let part = arrow::compute::filter_record_batch(&all, &keep).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), None).unwrap();
        writer.write(&part).unwrap();
        writer.close().unwrap();
        bytes
    };
    let half = train_rows / 2;
    vec![
        ("default/train/0000.parquet".into(), rows_of("train", 0, half)),
        ("default/train/0001.parquet".into(), rows_of("train", half, train_rows - half)),
        ("default/validation/0000.parquet".into(), rows_of("validation", 0, validation_rows)),
    ]
}

/// Issue 16: the paper's hub ids through a local Hub (`HF_ENDPOINT`): DistilBERT and ALBERT from
/// checkpoints in their real masked-LM key layout (tests/fixtures/hub-checkpoints) train with their
/// own adapter targets and heads; a dataset that names no file is read from its Parquet export
/// (`refs/convert/parquet`, train in two shards); a warm rerun downloads nothing; offline mode
/// makes no request at all.
#[test]
fn paper_models_and_a_parquet_dataset_from_a_local_hub() {
    use slora_hub::fake_hub::{FakeFile, FakeHub, FakeHubConfig};
    let mut files = vec![
        FakeFile::new("datasets/stanfordnlp/sst2", "README.md", b"# sst2".to_vec(), false),
        FakeFile::new("datasets/nobody/jsonl-only", "train.jsonl", b"{}".to_vec(), false),
    ];
    for (name, bytes) in sst2_converted_parquet(400, 100) {
        files.push(FakeFile::new("datasets/stanfordnlp/sst2", &name, bytes, true).on_branch(slora_hub::CONVERTED_REVISION));
    }
    for id in ["distilbert-base-uncased", "albert-base-v2"] {
        let dir = repo().join("tests/fixtures/hub-checkpoints").join(id);
        files.extend(FakeHub::folder_files(&dir, id).unwrap().into_iter().filter(|f| !f.name.starts_with("expected.")));
    }
    let hub = FakeHub::start(FakeHubConfig { files, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf-cache");
    let artifacts = s(&tmp.path().join("artifacts"));
    let run = |model: &str, offline: bool, cmd: &[&str]| {
        let model = format!("model.source={model}");
        let mut args = vec!["--artifacts", artifacts.as_str()];
        for kv in ["run.seeds=[1]", "data.source=stanfordnlp/sst2", model.as_str()].iter().chain(SST2_ONE_ROUND_OWN_ADAPTERS) {
            args.extend(["--set", kv]);
        }
        args.extend(cmd);
        let mut envs: Vec<(&str, &Path)> = vec![("HF_HUB_CACHE", &cache), ("HF_ENDPOINT", Path::new(&hub.url))];
        if offline {
            envs.push(("HF_HUB_OFFLINE", Path::new("1")));
        }
        let clock = std::time::Instant::now();
        let out = pipeline_env(&args, &envs);
        (out, clock.elapsed().as_secs_f64())
    };
    for (model, adapted) in [("distilbert-base-uncased", 12), ("albert-base-v2", 6)] {
        let (before, bytes_before) = (hub.count(), hub.bytes());
        let (cold, cold_s) = run(model, false, &["stage1"]);
        assert!(cold.ok, "{model}: {}", cold.stderr);
        let (requests, bytes) = (hub.count() - before, hub.bytes() - bytes_before);
        assert!(requests > 0 && bytes > 0, "{model}: the cold run downloads");
        assert!(cold.stderr.contains("refs/convert/parquet"), "{model}: the Parquet export is found: {}", cold.stderr);
        assert!(!cold.stderr.contains("does not include"), "{model}: its own head trains: {}", cold.stderr);
        let v: Value = serde_json::from_str(&run(model, false, &["inspect", "stage1", "--json"]).0.stdout).unwrap();
        assert_eq!(v["summary"]["adapted_matrices"], adapted, "{model}: every attention and FFN linear");
        let (before_warm, bytes_before_warm) = (hub.count(), hub.bytes());
        let (warm, warm_s) = run(model, false, &["--force", "stage1"]);
        assert!(warm.ok, "{}", warm.stderr);
        assert_eq!(hub.bytes() - bytes_before_warm, 0, "{model}: the warm run downloads nothing");
        let warm_requests = hub.count() - before_warm;
        eprintln!("{model}: cold {requests} requests, {bytes} bytes, {cold_s:.1} s; warm {warm_requests} requests (file lists), 0 bytes, {warm_s:.1} s");
        assert!(warm_requests <= 2, "{model}: a warm run asks only for the dataset's file lists (main, then the export), once each");
        let (offline, _) = run(model, true, &["--force", "stage1"]);
        assert!(offline.ok, "{}", offline.stderr);
        assert_eq!(hub.count() - before_warm, warm_requests, "{model}: offline makes no request");
    }
    // The dataset: 400 train rows from the two shards, the validation split as the 100 test rows.
    let all = ["--set", "data.max_train=100000", "--set", "data.max_test=100000"];
    let (out, _) = run("albert-base-v2", true, &[&all[..], &["partition"]].concat());
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&run("albert-base-v2", true, &[&all[..], &["inspect", "partition", "--json"]].concat()).0.stdout).unwrap();
    assert_eq!((v["train_rows"].as_u64(), v["test_rows"].as_u64()), (Some(400), Some(100)));
    // A dataset without Parquet files names the repo and says what to set.
    let (out, _) = run("albert-base-v2", false, &["--set", "data.source=nobody/jsonl-only", "partition"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("nobody/jsonl-only") && out.stderr.contains("data.hub_file"), "{}", out.stderr);
    // No such repo: the Hub's 404, naming it.
    let (out, _) = run("albert-base-v2", false, &["--set", "data.source=nobody/nothing", "partition"]);
    assert!(!out.ok && out.stderr.contains("nobody/nothing") && out.stderr.contains("404"), "{}", out.stderr);
}

/// Issue 29: pipeline.toml leaves `[adapter]` unset, and keys name the resolved lists, so a BERT
/// run keys exactly as it did when pipeline.toml spelled out BERT's lists (its cache survives), and
/// a DistilBERT run with the lists unset keys as one naming DistilBERT's own modules.
#[test]
fn unset_adapter_lists_key_as_the_lists_they_resolve_to() {
    use slora_pipeline::config::parse_set;
    use slora_pipeline::planning::plan_stage;
    use slora_pipeline::stages::{baselines::Baselines, decompose::Decompose, stage1::Stage1, stage2::Stage2};
    let keys = |sets: &[String]| -> Vec<String> {
        let sets: Vec<_> = sets.iter().map(|s| parse_set(s).unwrap()).collect();
        let cfg = slora_pipeline::Config::load(Some(&repo().join("pipeline.toml")), &sets).unwrap();
        let stages: [&dyn slora_pipeline::stage::Stage; 4] = [&Stage1, &Decompose, &Stage2, &Baselines];
        stages.iter().map(|s| plan_stage(&cfg, *s).unwrap().key).collect()
    };
    let bert_lists = [
        r#"adapter.target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]"#.to_string(),
        r#"adapter.modules_to_save=["pooler.dense", "pre_classifier", "classifier"]"#.to_string(),
    ];
    let shipped = slora_pipeline::Config::load(Some(&repo().join("pipeline.toml")), &[]).unwrap();
    assert!(shipped.adapter.target_modules.is_empty() && shipped.adapter.modules_to_save.is_empty(), "pipeline.toml leaves [adapter] unset");
    assert_eq!(keys(&[]), keys(&bert_lists), "BERT: unset lists key as the shipped explicit lists");
    let other = [r#"adapter.target_modules=["query", "value"]"#.to_string()];
    assert_ne!(keys(&[]), keys(&other), "a different list is a different key");
    let distil = format!("model.source={}", s(&shared("fixtures/parity/distilbert-tiny")));
    let distil_lists = [
        distil.clone(),
        r#"adapter.target_modules=["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]"#.to_string(),
        r#"adapter.modules_to_save=["pooler.dense", "pre_classifier", "classifier"]"#.to_string(),
    ];
    assert_eq!(keys(&[distil.clone()]), keys(&distil_lists), "DistilBERT: unset lists key as its own names");
    assert_ne!(keys(&[distil]), keys(&[]), "another model, another key");
}
