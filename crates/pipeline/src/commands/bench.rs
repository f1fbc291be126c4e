//! `pipeline bench`: times full training steps (forward, loss, backward, AdamW) for FFT, LoRA (r = 8
//! on the six default linears) and SFT (density 1%), and forward-only evaluation, the way
//! `../shared/bench/pytorch_step.py` times PyTorch. Figures are printed, never asserted.

use std::path::PathBuf;

use clap::Args;
use slora_model::bench::{BenchConfig, BenchMode, BenchModel};
use slora_model::ModelFiles;

use crate::{Config, PipelineError};

/// `pipeline bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model folders or hub ids to time (repeatable); default: the config's `model.source`.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Batch × sequence shapes, comma separated.
    #[arg(long, default_value = "32x128,32x64")]
    pub shapes: String,
    /// Modes, comma separated: full, lora, sparse, eval.
    #[arg(long, default_value = "full,lora,sparse,eval")]
    pub modes: String,
    /// Timed steps per row (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed warm-up steps per row.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// One JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
    /// GEMM arithmetic: fp32 or bf16 (default: the config's `optim.precision`).
    #[arg(long, value_parser = ["fp32", "bf16"])]
    pub precision: Option<String>,
}

fn bad(message: String) -> PipelineError {
    PipelineError::stage("bench", message)
}

/// Runs the benchmark and prints one row per model × shape × mode.
pub fn run(cfg: &Config, args: &BenchArgs) -> Result<(), PipelineError> {
    let precision = match args.precision.as_deref() {
        Some("bf16") => crate::config::Precision::Bf16,
        Some(_) => crate::config::Precision::Fp32,
        None => cfg.optim.precision,
    };
    crate::preflight::warn_without_bf16(precision);
    if precision == crate::config::Precision::Bf16 {
        // On stderr with --json: stdout is then one JSON object per line, nothing else.
        let line = format!("precision bf16: kernel {}", slora_model::ops::bf16::kernel());
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    let sources = if args.models.is_empty() { vec![cfg.model.source.clone()] } else { args.models.clone() };
    let modes = args
        .modes
        .split(',')
        .map(|m| BenchMode::parse(m.trim()).ok_or_else(|| bad(format!("--modes: unknown mode `{m}` (full, lora, sparse, eval)"))))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes = args
        .shapes
        .split(',')
        .map(|s| {
            s.trim()
                .split_once('x')
                .and_then(|(b, t)| Some((b.parse::<usize>().ok()?, t.parse::<usize>().ok()?)))
                .ok_or_else(|| bad(format!("--shapes: `{s}` is not BATCHxSEQ (e.g. 32x128)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !args.json {
        println!(
            "{:<24} {:<7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>10} {:>12} {:>8}",
            "model", "mode", "shape", "median ms", "cpu ms", "tok/s", "GFLOP/s", "peak RSS", "trainable", "threads"
        );
    }
    for source in &sources {
        let files = ModelFiles::resolve(source, &cfg.model.revision).map_err(|e| bad(format!("{e}")))?;
        let model = BenchModel::load(&files.dir).map_err(|e| bad(format!("{e}")))?;
        let name = PathBuf::from(source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| source.clone());
        for &(batch, seq) in &shapes {
            let mut bc = BenchConfig::new(batch, seq);
            bc.steps = args.steps.max(1);
            bc.warmup = args.warmup;
            bc.precision = precision.into();
            for &mode in &modes {
                let r = model.run(mode, &bc).map_err(|e| bad(format!("{e}")))?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "model": name, "mode": r.mode.name(), "batch": r.batch, "seq": r.seq,
                            "median_ms": r.median_ms, "min_ms": r.min_ms, "max_ms": r.max_ms,
                            "cpu_ms_per_step": r.cpu_ms_per_step, "tokens_per_s": r.tokens_per_s,
                            "gflops": r.gflops, "peak_rss_mb": r.peak_rss_mb, "rss_per_mode": r.rss_per_mode,
                            "trainable_params": r.trainable_params, "threads": r.threads,
                            "precision": bc.precision.to_string(),
                            "bf16_kernel": (precision == crate::config::Precision::Bf16).then(|| slora_model::ops::bf16::kernel().to_string()),
                        })
                    );
                } else {
                    println!(
                        "{:<24} {:<7} {:>7} {:>10.1} {:>10.0} {:>9.0} {:>9.1} {:>7.0} MiB {:>12} {:>8}",
                        name,
                        r.mode.name(),
                        format!("{}x{}", r.batch, r.seq),
                        r.median_ms,
                        r.cpu_ms_per_step,
                        r.tokens_per_s,
                        r.gflops,
                        r.peak_rss_mb,
                        r.trainable_params,
                        r.threads
                    );
                }
            }
        }
    }
    if !args.json && sources.len() * shapes.len() * modes.len() > 1 {
        // The allocator keeps freed memory for reuse, so a row's peak includes what earlier rows left.
        println!("peak RSS is the process's, rows after the first included: time one mode per process (e.g. --modes lora) for its own");
    }
    Ok(())
}
