//! Two `pipeline` processes on one artifacts folder, and determinism: the same config and seed give
//! bit-identical shards, masks, outputs and metrics (the running process of the lock test is that
//! second run); across thread counts the partition and stage 1 are identical too, while decompose's
//! SVD (faer, parallel) may differ in the last bits of near-zero factor entries.

use super::common::*;
use std::collections::BTreeMap;
use std::time::Instant;

#[test]
fn second_process_stops_at_once_naming_the_pid_and_nothing_is_corrupted() {
    reference();
    let tiny = Tiny::new();
    let art = tiny.artifacts();
    let mut first = tiny.spawn(&["stage2"]);
    let pid = first.id().to_string();
    let lock = art.join(".lock");
    assert!(wait_until(&mut first, || std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid)), "first run ended early");

    for (when, args) in [("while it starts", ["partition"]), ("while it trains", ["stage2"])] {
        if when == "while it trains" {
            // Mid-way through stage 1: a round checkpoint exists.
            assert!(
                wait_until(&mut first, || newest_checkpoint(&art, "stage1", "slora-stage1").is_some()),
                "first run ended before stage 1 trained"
            );
        }
        let started = Instant::now();
        let out = tiny.run_env(&args, &[("RUST_LOG", "off")]);
        let took = started.elapsed().as_secs_f64();
        assert_eq!(out.code, Some(2), "{when}: {}", out.stderr);
        let line = out.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{when}: {line}");
        assert!(line.contains(&format!("locked by pid {pid}")), "{when}: {line}");
        assert!(took < 5.0, "{when}: the second process took {took:.1} s to give up");
        assert!(first.try_wait().unwrap().is_none(), "{when}: the first run stopped");
    }
    // Read-only commands need no lock.
    let out = tiny.run(&["status"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let status = first.wait().unwrap();
    assert!(status.success(), "the first run failed after the second tried");
    assert_consistent(&art, true, false);
    // Same config and seed, same thread count, another folder: bit-identical to the reference.
    assert_same_as_reference(&art, "second run");
    let partition = current(&art, "partition");
    let shards: Vec<String> = output_hashes(&partition).into_keys().filter(|f| f.starts_with("client-")).collect();
    assert_eq!(shards.len(), 4);
}

/// Tensors of a safetensors file as f32 vectors.
fn tensors(path: &std::path::Path) -> BTreeMap<String, Vec<f32>> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    t.into_iter().map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn two_threads_give_the_same_partition_stage1_and_decompose() {
    let reference = reference().join("artifacts");
    let tiny = Tiny::new();
    tiny.run_ok(&["--threads", "2", "decompose"]);
    let art = tiny.artifacts();
    // decompose included: each SVD runs on one thread (matrices in parallel), so the LoRA factors
    // and corrected bases do not depend on the thread count either.
    for stage in ["partition", "stage1", "decompose"] {
        let (a, r) = (current(&art, stage), current(&reference, stage));
        assert_eq!(a.file_name(), r.file_name(), "the thread count is not part of the key");
        assert_eq!(output_hashes(&a), output_hashes(&r), "{stage} differs with 2 threads");
        if stage == "stage1" {
            assert_same_metrics(&metrics(&a), &metrics(&r), "stage1 with 2 threads");
        }
    }
    let (a, r) = (tensors(&current(&art, "decompose").join("lora_init.safetensors")), tensors(&current(&reference, "decompose").join("lora_init.safetensors")));
    assert!(a.keys().any(|k| k.contains(".lora_A")) && a == r);
}
