//! Training-step benchmark: times full steps (forward, loss, backward, AdamW) of a real encoder
//! checkpoint in each training mode, and forward-only evaluation, the way
//! `../shared/bench/pytorch_step.py` times PyTorch (random ids without padding, dropout on,
//! weight decay 0, median over the timed steps after warm-up).
//!
//! Figures are for printing (`pipeline bench`); nothing here asserts a speed.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::error::{ModelError, Result};
use crate::optim::{AdamW, AdamWConfig};
use crate::{Batch, Classifier, EncoderConfig, LoraSpec, Mode, ModelFiles, SparseSpec, TrainSpec, Weights};

/// What one benchmark row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Every parameter trains (FFT).
    Full,
    /// LoRA r=8, alpha=16 on the six default linears per layer; head dense.
    Lora,
    /// Sparse deltas at density 1% on the six default linears per layer; head dense.
    Sparse,
    /// Forward pass without a gradient graph (evaluation).
    Eval,
}

impl BenchMode {
    /// Short name: `full`, `lora`, `sparse`, `eval`.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Full => "full",
            BenchMode::Lora => "lora",
            BenchMode::Sparse => "sparse",
            BenchMode::Eval => "eval",
        }
    }

    /// Parses [`BenchMode::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [BenchMode::Full, BenchMode::Lora, BenchMode::Sparse, BenchMode::Eval].into_iter().find(|m| m.name() == s)
    }
}

/// Benchmark settings (pytorch_step.py's defaults via [`BenchConfig::new`]).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row (no padding).
    pub seq: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Classifier labels.
    pub num_labels: usize,
    /// Seed of ids, labels, head init, masks and dropout.
    pub seed: u64,
    /// Sparse density for [`BenchMode::Sparse`].
    pub density: f64,
    /// LoRA rank for [`BenchMode::Lora`] (alpha = 2 r).
    pub lora_rank: usize,
    /// The GEMMs' arithmetic.
    pub precision: crate::Precision,
}

impl BenchConfig {
    /// Batch × seq with 2 warm-up and 5 timed steps, 20 labels, density 1%, r = 8.
    pub fn new(batch: usize, seq: usize) -> Self {
        Self { batch, seq, warmup: 2, steps: 5, num_labels: 20, seed: 0, density: 0.01, lora_rank: 8, precision: crate::Precision::Fp32 }
    }
}

/// One benchmark row.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// The mode.
    pub mode: BenchMode,
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Median milliseconds per step.
    pub median_ms: f64,
    /// Fastest step.
    pub min_ms: f64,
    /// Slowest step.
    pub max_ms: f64,
    /// `batch * seq / median`.
    pub tokens_per_s: f64,
    /// Matrix-product floating-point operations one step performs (see [`step_flops`]).
    pub flops_per_step: f64,
    /// `flops_per_step / median`, in GFLOP/s.
    pub gflops: f64,
    /// Peak resident set size during this mode (process-wide if the peak could not be reset), MiB.
    pub peak_rss_mb: f64,
    /// Whether `peak_rss_mb` covers only this mode (the kernel allowed resetting the peak).
    pub rss_per_mode: bool,
    /// Trainable parameters (sparse: the masked entries plus the head).
    pub trainable_params: usize,
    /// CPU time (user + system, all threads) per timed step, ms: with `median_ms` it shows how much
    /// of the machine the run got (a loaded machine inflates wall time, not this).
    pub cpu_ms_per_step: f64,
    /// Loss of the last timed step.
    pub last_loss: f32,
    /// Threads candle and rayon use (`RAYON_NUM_THREADS`).
    pub threads: usize,
}

/// A loaded checkpoint to benchmark.
pub struct BenchModel {
    cfg: EncoderConfig,
    weights: Weights,
}

impl BenchModel {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face-layout folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let files = ModelFiles::in_dir(dir);
        let cfg = EncoderConfig::from_file(&files.config)?;
        let weights = Weights::load(&files.weights, &cfg)?;
        Ok(Self { cfg, weights })
    }

    /// The encoder config.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Times `mode` under `bc`.
    pub fn run(&self, mode: BenchMode, bc: &BenchConfig) -> Result<BenchResult> {
        if bc.steps == 0 || bc.batch == 0 || bc.seq < 2 {
            return Err(ModelError::invalid("bench: steps and batch must be positive and seq at least 2".to_string()));
        }
        let rss_per_mode = reset_peak_rss();
        let (train_mode, lr) = match mode {
            BenchMode::Full => (Mode::Full, 1e-4),
            BenchMode::Lora => (Mode::Lora(LoraSpec::new(bc.lora_rank, 2.0 * bc.lora_rank as f64)), 1e-3),
            BenchMode::Sparse => (Mode::Sparse(SparseSpec::new(bc.density)), 1e-3),
            BenchMode::Eval => (Mode::Frozen, 0.0),
        };
        let mut spec = TrainSpec::new(train_mode, bc.num_labels, bc.seed);
        spec.precision = bc.precision;
        let (model, _) = Classifier::new(&self.cfg, &self.weights, &spec)?;
        let batch = random_batch(&self.cfg, bc)?;
        let vars = model.trainable_vars();
        let trainable_params = model.num_trainable_params();
        let mut opt = AdamW::new(vars, AdamWConfig { lr, weight_decay: 0.0, ..AdamWConfig::default() })?;

        let mut times = Vec::with_capacity(bc.steps);
        let mut last_loss = f32::NAN;
        let mut cpu_start = 0.0;
        for step in 0..bc.warmup + bc.steps {
            if step == bc.warmup {
                cpu_start = process_cpu_seconds().unwrap_or(f64::NAN);
            }
            let start = Instant::now();
            let loss = if mode == BenchMode::Eval {
                model.eval_loss(&batch)?.0
            } else {
                let (loss, _) = model.loss(&batch, Some(bc.seed ^ step as u64))?;
                let grads = loss.backward()?;
                opt.step(&grads)?;
                loss
            };
            let loss = loss.to_scalar::<f32>()?;
            let elapsed = start.elapsed().as_secs_f64();
            if step >= bc.warmup {
                times.push(elapsed);
                last_loss = loss;
            }
        }
        let cpu_ms_per_step = (process_cpu_seconds().unwrap_or(f64::NAN) - cpu_start) * 1e3 / bc.steps as f64;
        let peak_rss_mb = peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64);
        times.sort_by(|a, b| a.total_cmp(b));
        let median = if times.len() % 2 == 1 {
            times[times.len() / 2]
        } else {
            0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
        };
        let flops_per_step = step_flops(&self.cfg, mode, bc, &model);
        let result = BenchResult {
            mode,
            batch: bc.batch,
            seq: bc.seq,
            median_ms: median * 1e3,
            min_ms: times[0] * 1e3,
            max_ms: times[times.len() - 1] * 1e3,
            tokens_per_s: (bc.batch * bc.seq) as f64 / median,
            flops_per_step,
            gflops: flops_per_step / median / 1e9,
            peak_rss_mb,
            rss_per_mode,
            trainable_params,
            cpu_ms_per_step,
            last_loss,
            threads: candle_core::utils::get_num_threads(),
        };
        tracing::info!(mode = mode.name(), batch = bc.batch, seq = bc.seq, ms = result.median_ms, gflops = result.gflops, "bench");
        Ok(result)
    }
}

/// Random ids in [1000, vocab) with [CLS] first and [SEP] last, no padding; random labels.
fn random_batch(cfg: &EncoderConfig, bc: &BenchConfig) -> Result<Batch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(bc.seed ^ 0xba7c);
    let low = 1000.min(cfg.vocab_size as u32 - 1);
    let rows: Vec<Vec<u32>> = (0..bc.batch)
        .map(|_| {
            let mut row: Vec<u32> = (0..bc.seq).map(|_| rng.random_range(low..cfg.vocab_size as u32)).collect();
            row[0] = 101.min(cfg.vocab_size as u32 - 1);
            row[bc.seq - 1] = 102.min(cfg.vocab_size as u32 - 1);
            row
        })
        .collect();
    let labels: Vec<u32> = (0..bc.batch).map(|_| rng.random_range(0..bc.num_labels as u32)).collect();
    Batch::collate(&rows, &labels, cfg.pad_token_id)
}

/// Floating-point operations of the matrix products one step performs (2 per multiply-add):
/// forward GEMMs of every encoder linear and of attention (QKᵀ, PV); a full step adds both
/// backward GEMMs (3× forward); LoRA and sparse steps add only the input-gradient GEMM of the
/// frozen linears, plus the adapters' own work (LoRA's two thin GEMMs ×3, sparse's nnz × tokens
/// sampled products); attention always needs both of its backward products. Head, embeddings and
/// element-wise ops are not counted.
pub fn step_flops(cfg: &EncoderConfig, mode: BenchMode, bc: &BenchConfig, model: &Classifier) -> f64 {
    let tokens = (bc.batch * bc.seq) as f64;
    let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let layers = cfg.num_layers as f64;
    let linear = 2.0 * tokens * (4.0 * h * h + 2.0 * h * i) * layers;
    let attention = 2.0 * 2.0 * bc.batch as f64 * (bc.seq * bc.seq) as f64 * h * layers;
    match mode {
        BenchMode::Eval => linear + attention,
        BenchMode::Full => 3.0 * (linear + attention),
        BenchMode::Lora => {
            let r = bc.lora_rank as f64;
            let lora = 2.0 * tokens * r * (4.0 * (h + h) + (h + i) + (i + h)) * layers;
            2.0 * linear + 3.0 * attention + 3.0 * lora
        }
        BenchMode::Sparse => {
            let nnz: usize = model
                .linears()
                .iter()
                .filter_map(|l| match l.adapter() {
                    crate::Adapter::Sparse(s) => Some(s.indices.len()),
                    _ => None,
                })
                .sum();
            2.0 * linear + 3.0 * attention + 2.0 * tokens * nnz as f64
        }
    }
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, clock ticks of 1/100 s).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resets the kernel's peak-RSS mark of this process (`/proc/self/clear_refs` = 5); false when
/// that is not possible (the peak then covers the whole process so far).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process in bytes (`VmHWM`, what getrusage's ru_maxrss reports
/// on Linux, but resettable).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints benchmark rows (not a check: run on demand).
    /// `SLORA_BENCH_MODEL=dir SLORA_BENCH_MODES=full,lora,sparse,eval SLORA_BENCH_SHAPES=32x128,32x64
    /// cargo test -p slora-model --lib bench_print -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints timings, run explicitly"]
    fn bench_print() -> Result<()> {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let dir = env("SLORA_BENCH_MODEL", concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/all-MiniLM-L6-v2"));
        let model = BenchModel::load(Path::new(&dir))?;
        let steps: usize = env("SLORA_BENCH_STEPS", "5").parse().unwrap();
        for shape in env("SLORA_BENCH_SHAPES", "32x128").split(',') {
            let (b, s) = shape.split_once('x').expect("shape like 32x128");
            let mut bc = BenchConfig::new(b.parse().unwrap(), s.parse().unwrap());
            bc.steps = steps;
            for m in env("SLORA_BENCH_MODES", "full,lora,sparse,eval").split(',') {
                let r = model.run(BenchMode::parse(m).expect("mode"), &bc)?;
                println!(
                    "{:<6} {}x{} median {:>8.1} ms (min {:.1} max {:.1})  {:>6.0} tok/s  {:>6.1} GFLOP/s  peak RSS {:.0} MiB{}  cpu {:.0} ms/step  trainable {}  loss {:.4}  threads {}",
                    r.mode.name(), r.batch, r.seq, r.median_ms, r.min_ms, r.max_ms, r.tokens_per_s, r.gflops,
                    r.peak_rss_mb, if r.rss_per_mode { "" } else { " (process)" }, r.cpu_ms_per_step, r.trainable_params, r.last_loss, r.threads
                );
            }
        }
        Ok(())
    }
}
