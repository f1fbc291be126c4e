//! Corrupted artifacts and checkpoints: a flipped byte (size and mtime kept) or a truncation in a
//! client shard, a round checkpoint, the sparse delta (stage 1) and lora_init (decompose) is detected
//! from the recorded hashes and named; the pipeline rebuilds it (and the result matches the
//! uninterrupted run), or with `--no-rebuild` stops with a one-line error and touches nothing.

use super::common::*;
use std::path::Path;

/// `pipeline --no-rebuild stage2` fails with one error line naming `file`; nothing is rebuilt.
fn no_rebuild_names(tiny: &Tiny, file: &str, corrupt: &Path) {
    let before = sha256_file(corrupt);
    let out = tiny.run_env(&["--no-rebuild", "stage2"], &[("RUST_LOG", "off")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains(file) && line.contains("corrupt") && line.contains("--no-rebuild"), "{line}");
    assert_eq!(sha256_file(corrupt), before, "--no-rebuild touched the corrupt file");
}

/// `pipeline stage2` warns naming `file`, rebuilds `stage`, reuses the stages in `reused`, and ends
/// with the reference's outputs.
fn rebuilds(tiny: &Tiny, file: &str, stage: &str, reused: &[&str]) {
    let log = tiny.run_ok(&["stage2"]);
    let warning = log.lines().find(|l| l.contains("WARN") && l.contains(file)).unwrap_or_else(|| panic!("no warning names {file}:\n{log}"));
    assert!(warning.contains("corrupt") && warning.contains(&format!("rebuilding {stage}")), "{warning}");
    assert!(log.contains(&format!("{stage}: running")), "{stage} was not rebuilt:\n{log}");
    for r in reused {
        assert!(log.contains(&format!("{r}: up to date")), "{r} was not reused:\n{log}");
    }
    assert_consistent(&tiny.artifacts(), true, false);
    assert_same_as_reference(&tiny.artifacts(), &format!("after rebuilding {file}"));
}

#[test]
fn corrupt_client_shard_is_named_and_rebuilt() {
    let tiny = copy_of_reference();
    let shard = current(&tiny.artifacts(), "partition").join("client-00001.parquet");
    flip_byte(&shard);
    no_rebuild_names(&tiny, "client-00001.parquet", &shard);
    // `status` names it too.
    let out = tiny.run(&["status"]);
    assert!(out.stdout.contains("client-00001.parquet"), "{}", out.stdout);
    rebuilds(&tiny, "client-00001.parquet", "partition", &["stage1", "decompose", "stage2"]);

    // A truncated test shard: the size check catches it before any hashing.
    let test = current(&tiny.artifacts(), "partition").join("test.parquet");
    truncate_half(&test);
    no_rebuild_names(&tiny, "test.parquet", &test);
    rebuilds(&tiny, "test.parquet", "partition", &["stage1", "decompose", "stage2"]);
}

#[test]
fn corrupt_sparse_delta_is_named_and_stage1_rebuilt() {
    let tiny = copy_of_reference();
    let delta = current(&tiny.artifacts(), "stage1").join("sparse_delta.safetensors");
    truncate_half(&delta);
    no_rebuild_names(&tiny, "sparse_delta.safetensors", &delta);
    rebuilds(&tiny, "sparse_delta.safetensors", "stage1", &["partition", "decompose", "stage2"]);
}

#[test]
fn corrupt_lora_init_is_named_and_decompose_rebuilt() {
    let tiny = copy_of_reference();
    let init = current(&tiny.artifacts(), "decompose").join("lora_init.safetensors");
    flip_byte(&init);
    no_rebuild_names(&tiny, "lora_init.safetensors", &init);
    rebuilds(&tiny, "lora_init.safetensors", "decompose", &["partition", "stage1", "stage2"]);
}

#[test]
fn corrupt_round_checkpoint_is_named_and_skipped_or_fatal_with_no_rebuild() {
    reference();
    let tiny = Tiny::new();
    let art = tiny.artifacts();
    // Kill stage 1 right after its round-1 checkpoint.
    let mut child = tiny.spawn(&["stage1"]);
    assert!(
        wait_until(&mut child, || newest_checkpoint(&art, "stage1", "slora-stage1").is_some_and(|(r, _)| r >= 1)),
        "stage1 ended before its round-1 checkpoint"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let (round, json) = newest_checkpoint(&art, "stage1", "slora-stage1").unwrap();
    let state = json.with_extension("safetensors");
    let name = state.file_name().unwrap().to_string_lossy().into_owned();
    flip_byte(&state);

    let out = tiny.run_env(&["--no-rebuild", "stage1"], &[("RUST_LOG", "off")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains(&name) && line.contains("sha256 does not match"), "{line}");
    assert!(state.exists(), "the corrupt checkpoint is kept for inspection");
    assert_consistent(&art, true, true);

    let log = tiny.run_ok(&["stage1"]);
    let warning = log.lines().find(|l| l.contains("WARN") && l.contains(&name)).unwrap_or_else(|| panic!("no warning names {name}:\n{log}"));
    assert!(warning.contains(&format!("skipping checkpoint of round {round}")), "{warning}");
    assert!(log.contains(&format!("resuming after round {}", round - 1)), "did not resume from the previous checkpoint:\n{log}");
    let (a, r) = (current(&art, "stage1"), current(&reference().join("artifacts"), "stage1"));
    assert_eq!(output_hashes(&a), output_hashes(&r));
    assert_same_metrics(&metrics(&a), &metrics(&r), "stage1 after a corrupt checkpoint");
    assert_consistent(&art, true, false);
}
