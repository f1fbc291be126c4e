//! Bad input, one test per case: the binary exits with 2, prints exactly one line (`error: …`, logs
//! off) that names the problem (key, file, column), and leaves nothing partial in the artifacts
//! folder — only the lock and hash-cache files and, where a stage before the failing one finished, its
//! complete artifact. Run with `--nocapture` to see every message (`BAD-INPUT <case>: <line>`).

use super::common::*;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Runs `cmd` + `args` (logs off) and checks the failure; returns the error line.
fn fails(case: &str, mut cmd: Command, args: &[&str], artifacts: &Path, expect: &[&str], built: &[&str], allow_work: bool) -> String {
    let out = cmd.args(args).env("RUST_LOG", "off").output().expect("run pipeline");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{case}: expected exit 2\n{stderr}");
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{case}: the error is not one line:\n{line}");
    assert!(line.starts_with("error: "), "{case}: {line}");
    for e in expect {
        assert!(line.contains(e), "{case}: the error does not say `{e}`:\n{line}");
    }
    eprintln!("BAD-INPUT {case}: {line}");
    assert_consistent(artifacts, true, allow_work);
    let mut stages: Vec<String> = committed(artifacts)
        .iter()
        .map(|d| d.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    stages.sort();
    assert_eq!(stages, built, "{case}: complete artifacts left");
    line.to_string()
}

/// The tiny config with `args`; nothing but partition may be built.
fn tiny_fails(case: &str, args: &[&str], expect: &[&str]) -> String {
    let t = Tiny::new();
    fails(case, t.cmd(), args, &t.artifacts(), expect, &[], false)
}

fn set(kv: String) -> [String; 2] {
    ["--set".to_string(), kv]
}

/// Runs `pipeline --set data.source=FILE [extra…] partition` on a dataset fixture.
fn data_fails(case: &str, t: &Tiny, file: &Path, extra: &[&str], expect: &[&str]) {
    let mut args: Vec<String> = set(format!("data.source={}", file.display())).to_vec();
    args.extend(set("data.test_split=test".into()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("partition".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails(case, t.cmd(), &args, &t.artifacts(), expect, &[], false);
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A 40-row dataset (split column: 3/4 train, 1/4 test) with the given text and label columns.
fn dataset(t: &Tiny, name: &str, text: ArrayRef, label: ArrayRef) -> PathBuf {
    let n = text.len();
    let split: ArrayRef = Arc::new(StringArray::from((0..n).map(|i| if i % 4 == 3 { "test" } else { "train" }).collect::<Vec<_>>()));
    let path = t.dir.join(name);
    write_parquet(&path, vec![("text", text), ("label", label), ("split", split)]);
    path
}

fn texts(n: usize) -> ArrayRef {
    Arc::new(StringArray::from((0..n).map(|i| format!("a {} film number {i}", if i % 2 == 0 { "good" } else { "bad" })).collect::<Vec<_>>()))
}

fn int_labels(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

// ---------------------------------------------------------------- data files and columns

#[test]
fn missing_data_file() {
    let t = Tiny::new();
    data_fails("missing data file", &t, &t.dir.join("nope.parquet"), &[], &["data.source", "nope.parquet", "no such file"]);
}

#[test]
fn data_file_is_not_parquet() {
    let t = Tiny::new();
    let junk = t.dir.join("junk.parquet");
    std::fs::write(&junk, "text,label\nhello,1\n").unwrap();
    data_fails("not parquet", &t, &junk, &[], &["junk.parquet"]);
}

#[test]
fn missing_text_column() {
    tiny_fails("missing text column", &["--set", "data.text_column=review", "partition"], &["no column `review` (data.text_column)", "sst2.parquet"]);
}

#[test]
fn missing_label_column() {
    tiny_fails("missing label column", &["--set", "data.label_column=sentiment", "partition"], &["no column `sentiment` (data.label_column)"]);
}

#[test]
fn missing_split_column() {
    tiny_fails("missing split column", &["--set", "data.split_column=part", "partition"], &["no column `part` (data.split_column"]);
}

#[test]
fn text_column_of_integers() {
    let t = Tiny::new();
    let f = dataset(&t, "int_text.parquet", int_labels((0..40).collect()), int_labels((0..40).map(|i| i % 2).collect()));
    data_fails("text column wrong type", &t, &f, &[], &["int_text.parquet", "column `text` (data.text_column) has type Int64"]);
}

#[test]
fn float_labels_are_not_ids() {
    let t = Tiny::new();
    let f = dataset(&t, "float_labels.parquet", texts(40), Arc::new(Float64Array::from((0..40).map(|i| (i % 2) as f64).collect::<Vec<_>>())));
    data_fails("float labels", &t, &f, &[], &["column `label` (data.label_column) has type Float64", "integer ids or strings"]);
}

#[test]
fn boolean_labels_are_not_ids() {
    let t = Tiny::new();
    let f = dataset(&t, "bool_labels.parquet", texts(40), Arc::new(BooleanArray::from((0..40).map(|i| i % 2 == 0).collect::<Vec<_>>())));
    data_fails("boolean labels", &t, &f, &[], &["column `label` (data.label_column) has type Boolean"]);
}

#[test]
fn null_label() {
    let t = Tiny::new();
    let labels: Vec<Option<i64>> = (0..40).map(|i| if i == 6 { None } else { Some(i % 2) }).collect();
    let f = dataset(&t, "null_label.parquet", texts(40), Arc::new(Int64Array::from(labels)));
    data_fails("null label", &t, &f, &[], &["null_label.parquet", "row 6, column `label`: missing label"]);
}

#[test]
fn negative_label_id() {
    let t = Tiny::new();
    let f = dataset(&t, "negative.parquet", texts(40), int_labels((0..40).map(|i| if i == 5 { -1 } else { i % 2 }).collect()));
    data_fails("negative label", &t, &f, &[], &["row 5, column `label`", "(got -1)"]);
}

#[test]
fn empty_dataset() {
    let t = Tiny::new();
    let f = dataset(&t, "empty.parquet", texts(0), int_labels(vec![]));
    data_fails("empty dataset", &t, &f, &[], &["empty.parquet", "holds no rows"]);
}

#[test]
fn no_train_rows() {
    let t = Tiny::new();
    let f = dataset(&t, "no_train.parquet", texts(40), int_labels((0..40).map(|i| i % 2).collect()));
    data_fails("no train rows", &t, &f, &["--set", "data.train_split=training"], &["data.train_split `training` matches no row of column `split`"]);
}

#[test]
fn single_class() {
    let t = Tiny::new();
    let f = dataset(&t, "one_class.parquet", texts(40), int_labels(vec![3; 40]));
    data_fails("single class", &t, &f, &[], &["one_class.parquet", "data.label_column `label` holds a single label (`3`)"]);
}

#[test]
fn jsonl_line_that_is_not_json() {
    let t = Tiny::new();
    let f = t.dir.join("broken.jsonl");
    std::fs::write(&f, "{\"text\": \"fine\", \"label\": 1, \"split\": \"train\"}\n{\"text\": \"cut\n").unwrap();
    data_fails("broken jsonl", &t, &f, &[], &["broken.jsonl", "line 2: not a JSON object"]);
}

#[test]
fn jsonl_text_that_is_not_a_string() {
    let t = Tiny::new();
    let f = t.dir.join("numbers.jsonl");
    std::fs::write(&f, "{\"text\": \"fine\", \"label\": 1, \"split\": \"train\"}\n{\"text\": 42, \"label\": 0, \"split\": \"test\"}\n").unwrap();
    data_fails("jsonl text not a string", &t, &f, &[], &["numbers.jsonl", "row 1, column `text`", "must be a string (got 42)"]);
}

// ---------------------------------------------------------------- config ranges and keys

#[test]
fn clients_exceed_training_rows() {
    tiny_fails("clients > rows", &["--set", "partition.clients=500", "partition"], &["partition.clients = 500 exceeds the 120 train rows"]);
}

#[test]
fn test_fraction_out_of_range() {
    tiny_fails("test_fraction = 1", &["--set", "data.test_fraction=1", "partition"], &["data.test_fraction must be in [0, 1) (0 = use the split column) (got 1)"]);
}

#[test]
fn alpha_zero() {
    tiny_fails("alpha = 0", &["--set", "partition.scheme=dirichlet", "--set", "partition.alpha=0", "partition"], &["partition.alpha must be > 0 (got 0)"]);
}

#[test]
fn alpha_negative() {
    tiny_fails("alpha < 0", &["--set", "partition.alpha=-1", "partition"], &["partition.alpha must be > 0 (got -1)"]);
}

#[test]
fn classes_per_client_above_labels() {
    tiny_fails(
        "classes_per_client > labels",
        &["--set", "partition.scheme=pathological", "--set", "partition.classes_per_client=3", "partition"],
        &["partition.classes_per_client must be in 1 ..= 2", "(got 3)"],
    );
}

#[test]
fn density_zero() {
    tiny_fails("density = 0", &["--set", "stage1.density=0", "stage1"], &["stage1.density must be in (0, 1] (got 0)"]);
}

#[test]
fn density_above_one() {
    tiny_fails("density > 1", &["--set", "stage1.density=1.5", "stage1"], &["stage1.density must be in (0, 1] (got 1.5)"]);
}

#[test]
fn rank_zero() {
    tiny_fails("rank = 0", &["--set", "lora.r=0", "decompose"], &["lora.r must be >= 1 (got 0)"]);
}

#[test]
fn rank_above_min_in_out() {
    tiny_fails("rank > min(in, out)", &["--set", "lora.r=385", "all"], &["lora.r must be <= 384", "config.json", "(got 385)"]);
    // The deprecated spelling still reads (into lora.r), so its limits still apply.
    tiny_fails("deprecated rank > min(in, out)", &["--set", "decompose.rank=385", "all"], &["lora.r must be <= 384", "(got 385)"]);
}

#[test]
fn lora_alpha_not_positive() {
    tiny_fails("lora_alpha = 0", &["--set", "lora.lora_alpha=0", "stage2"], &["lora.lora_alpha must be > 0 (got 0)"]);
    tiny_fails("lora_alpha < 0", &["--set", "lora.lora_alpha=-16", "stage2"], &["lora.lora_alpha must be > 0 (got -16)"]);
}

#[test]
fn clients_per_round_above_clients() {
    tiny_fails("clients_per_round > clients", &["--set", "federation.clients_per_round=5", "stage1"], &["federation.clients_per_round must be <= partition.clients = 4 (got 5)"]);
}

#[test]
fn zero_rounds() {
    tiny_fails("stage1.rounds = 0", &["--set", "stage1.rounds=0", "stage1"], &["stage1.rounds must be >= 1 (got 0)"]);
    tiny_fails("stage2.rounds = 0", &["--set", "stage2.rounds=0", "stage2"], &["stage2.rounds must be >= 1 (got 0)"]);
}

#[test]
fn unknown_config_key() {
    tiny_fails("unknown key (--set)", &["--set", "stage1.epochs=3", "stage1"], &["stage1.epochs"]);
    let t = Tiny::new();
    let config = t.dir.join("typo.toml");
    std::fs::write(&config, tiny_toml("[baselines]\nfft_learning_rate = 1e-4\n")).unwrap();
    fails("unknown key (file)", t.cmd_with(&config, &t.artifacts()), &["partition"], &t.artifacts(), &["typo.toml", "baselines.fft_learning_rate"], &[], false);
}

#[test]
fn wrong_type_for_a_key() {
    tiny_fails("wrong type (--set)", &["--set", "stage1.rounds=three", "stage1"], &["stage1.rounds"]);
    let t = Tiny::new();
    let config = t.dir.join("types.toml");
    std::fs::write(&config, tiny_toml("").replace("rounds = 2\n[stage2]", "rounds = \"2\"\n[stage2]")).unwrap();
    fails("wrong type (file)", t.cmd_with(&config, &t.artifacts()), &["stage1"], &t.artifacts(), &["types.toml", "stage1.rounds"], &[], false);
}

#[test]
fn config_file_missing_or_not_toml() {
    let t = Tiny::new();
    let missing = t.dir.join("missing.toml");
    fails("config file missing", t.cmd_with(&missing, &t.artifacts()), &["partition"], &t.artifacts(), &["missing.toml"], &[], false);
    let broken = t.dir.join("broken.toml");
    std::fs::write(&broken, "[run\nname = 1\n").unwrap();
    fails("config not TOML", t.cmd_with(&broken, &t.artifacts()), &["partition"], &t.artifacts(), &["broken.toml"], &[], false);
}

// ---------------------------------------------------------------- model files

/// A model folder beside the tiny config: `config.json` (the real one unless given), the real
/// `tokenizer.json` when `tokenizer`, and `weights` bytes (the real file when `None`).
fn model_dir(t: &Tiny, config: Option<String>, weights: Option<Vec<u8>>, tokenizer: bool) -> PathBuf {
    let real = shared("models/paraphrase-MiniLM-L3-v2");
    let dir = t.dir.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    match config {
        Some(text) => std::fs::write(dir.join("config.json"), text).unwrap(),
        None => std::os::unix::fs::symlink(real.join("config.json"), dir.join("config.json")).unwrap(),
    }
    match weights {
        Some(bytes) => std::fs::write(dir.join("model.safetensors"), bytes).unwrap(),
        None => std::os::unix::fs::symlink(real.join("model.safetensors"), dir.join("model.safetensors")).unwrap(),
    }
    if tokenizer {
        std::os::unix::fs::symlink(real.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    }
    dir
}

/// safetensors bytes holding one tensor.
fn one_tensor(name: &str, dtype: safetensors::Dtype, shape: Vec<usize>, elem_bytes: usize) -> Vec<u8> {
    let data = vec![0u8; shape.iter().product::<usize>() * elem_bytes];
    let view = safetensors::tensor::TensorView::new(dtype, shape, &data).unwrap();
    safetensors::serialize([(name, view)], None).unwrap()
}

/// `pipeline --set model.source=DIR stage1`: partition (tokenizer only) may finish, stage 1 fails.
fn model_fails(case: &str, t: &Tiny, dir: &Path, expect: &[&str], built: &[&str]) {
    let src = format!("model.source={}", dir.display());
    fails(case, t.cmd(), &["--set", &src, "stage1"], &t.artifacts(), expect, built, false);
}

#[test]
fn unknown_model_type() {
    let t = Tiny::new();
    let real = std::fs::read_to_string(shared("models/paraphrase-MiniLM-L3-v2/config.json")).unwrap();
    let dir = model_dir(&t, Some(real.replace("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\"")), None, true);
    model_fails("unknown model_type", &t, &dir, &["model.source", "config.json", "unknown model_type `gpt2`"], &[]);
}

#[test]
fn weights_with_a_wrong_shape() {
    let t = Tiny::new();
    let dir = model_dir(&t, None, Some(one_tensor("embeddings.LayerNorm.weight", safetensors::Dtype::F32, vec![100], 4)), true);
    model_fails("wrong shape", &t, &dir, &["model.safetensors", "bert.embeddings.LayerNorm.weight", "[100]", "[384]"], &["partition"]);
}

#[test]
fn weights_with_a_wrong_dtype() {
    let t = Tiny::new();
    let dir = model_dir(&t, None, Some(one_tensor("embeddings.LayerNorm.weight", safetensors::Dtype::I64, vec![384], 8)), true);
    model_fails("wrong dtype", &t, &dir, &["model.safetensors", "bert.embeddings.LayerNorm.weight", "dtype I64"], &["partition"]);
}

#[test]
fn truncated_weights() {
    let t = Tiny::new();
    let mut bytes = std::fs::read(shared("models/paraphrase-MiniLM-L3-v2/model.safetensors")).unwrap();
    bytes.truncate(1 << 20);
    let dir = model_dir(&t, None, Some(bytes), true);
    model_fails("truncated safetensors", &t, &dir, &["model.safetensors"], &["partition"]);
}

#[test]
fn missing_tokenizer() {
    let t = Tiny::new();
    let dir = model_dir(&t, None, None, false);
    model_fails("missing tokenizer.json", &t, &dir, &["model.source", "tokenizer.json"], &[]);
}

#[test]
fn missing_model_folder() {
    let t = Tiny::new();
    model_fails("missing model folder", &t, &t.dir.join("no-model"), &["model.source", "no-model"], &[]);
}

#[test]
fn max_len_above_position_embeddings() {
    tiny_fails("max_len > positions", &["--set", "data.max_len=600", "partition"], &["data.max_len must be <= 512", "max_position_embeddings", "(got 600)"]);
}

// ---------------------------------------------------------------- environment and training

#[test]
fn artifacts_dir_that_cannot_be_written() {
    let t = Tiny::new();
    let file = t.dir.join("file");
    std::fs::write(&file, "a regular file").unwrap();
    let artifacts = file.join("artifacts");
    fails("unwritable artifacts dir", t.cmd_with(&t.dir.join("tiny.toml"), &artifacts), &["partition"], &artifacts, &["file/artifacts", "Not a directory"], &[], false);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a regular file");
}

#[test]
fn disk_full_mid_write() {
    let t = Tiny::new();
    let mut cmd = t.cmd();
    cmd.env(slora_data::fault::ENOSPC_AFTER_ENV, "3000");
    fails("disk full", cmd, &["partition"], &t.artifacts(), &["partition: ", ".parquet", "No space left on device"], &[], false);
    // The same run with room to write succeeds.
    t.run_ok(&["partition"]);
}

#[test]
fn disk_full_during_training_leaves_no_partial_checkpoint() {
    let t = Tiny::new();
    t.run_ok(&["partition"]);
    let mut cmd = t.cmd();
    // Room for the stage's manifests and logs, not for the first round checkpoint.
    cmd.env(slora_data::fault::ENOSPC_AFTER_ENV, "20000");
    fails("disk full in stage1", cmd, &["stage1"], &t.artifacts(), &["stage1: ", "round-", "No space left on device"], &["partition"], true);
    let mut stack = vec![t.artifacts()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "a half-written file is left: {}", e.path().display());
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    // With room to write, the same stage runs.
    t.run_ok(&["stage1"]);
}

#[test]
fn diverging_loss_stops_naming_round_and_client_and_keeps_the_last_checkpoint() {
    let t = Tiny::new();
    let line = fails(
        "NaN / diverging loss",
        t.cmd(),
        // The head at the method's rate too (optim.head_lr = 0), so the whole model diverges.
        &["--set", "stage1.lr=1e6", "--set", "optim.head_lr=0", "stage1"],
        &t.artifacts(),
        &["stage1: training diverged in round 1, client", "lower the learning rate", "last good checkpoint is kept"],
        &["partition"],
        true,
    );
    assert!(line.contains("step"), "{line}");
    let (round, json) = newest_checkpoint(&t.artifacts(), "stage1", "slora-stage1").expect("a checkpoint is kept");
    assert_eq!(round, 0, "the last good checkpoint is the state before round 1");
    assert!(json.with_extension("safetensors").exists());
}
