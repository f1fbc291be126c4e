//! The cost of a run before it runs: `pipeline study NAME --plan`.
//!
//! A plan counts, for every point, seed and method, the local optimizer steps its rounds take and the
//! rows its evaluations read, from the partition itself (each seed's shards, the seeded client sample
//! of every round), and prices them with step times that `pipeline bench` measured on this machine
//! for the run's model, batch shape, precision and thread count. Those times are cached per machine
//! in `<artifacts>/bench/<key>.json`, so a plan is exact about the work and only as good as the
//! measured step about the time; a study's report shows the estimate next to the measured time.
//!
//! Every step is priced as a full batch of `data.max_len` tokens (batches are padded to their
//! longest row, and 20 Newsgroups' documents mostly fill it), so a plan errs on the long side.
//! Not priced: model building, aggregation, checkpoints and the decompose stage's SVDs (seconds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use slora_federation::sampling::sample_clients;
use slora_model::bench::{BenchConfig, BenchMode, BenchModel};
use slora_model::ModelFiles;

use crate::config::{BaselineMethod, Config, Precision};
use crate::error::PipelineError;
use crate::planning::{lookup_stage, plan_stage};
use crate::runner::RunOptions;
use crate::stages::summaries::{PartitionSummary, StageSummary};
use crate::store::Store;

/// The folder under the artifacts directory that caches measured step times.
pub const BENCH_DIR: &str = "bench";

/// Bumped when what a cached measurement means changes.
const BENCH_CACHE_VERSION: u32 = 1;

/// Measured milliseconds per step on this machine for one model, shape, precision and thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// The model folder measured.
    pub model: String,
    /// Training rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Rows per evaluation batch.
    pub eval_batch: usize,
    /// `fp32` or `bf16`.
    pub precision: String,
    /// Compute threads.
    pub threads: usize,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// FFT step (forward, loss, backward, AdamW).
    pub full_ms: f64,
    /// LoRA step (also FFA-LoRA's, whose backward is a little shorter).
    pub lora_ms: f64,
    /// Sparse step (SFT, SLoRA's Stage 1).
    pub sparse_ms: f64,
    /// One forward-only evaluation batch of `eval_batch` rows.
    pub eval_ms: f64,
    /// CPU time over (threads × wall time) while measuring: near 1 on a quiet machine.
    pub cpu_share: f64,
    /// When it was measured (Unix seconds).
    pub measured_at: u64,
}

impl StepTimes {
    fn train_ms(&self, kind: StepKind) -> f64 {
        match kind {
            StepKind::Full => self.full_ms,
            StepKind::Lora => self.lora_ms,
            StepKind::Sparse => self.sparse_ms,
        }
    }
}

/// What one local step trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Every weight (FFT).
    Full,
    /// LoRA factors (LoRA, FFA-LoRA, SLoRA's Stage 2).
    Lora,
    /// Masked entries (SFT, SLoRA's Stage 1).
    Sparse,
}

/// One federated run of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The study point (or `tune`).
    pub point: String,
    /// Replicate seed.
    pub seed: u64,
    /// Method as the report names it (`fft`, `lora`, `slora-stage1`, `tune-lora-3e-4`, …).
    pub method: String,
    /// The stage whose artifact holds it.
    pub stage: String,
    /// What a step trains.
    pub kind: StepKind,
    /// Rounds.
    pub rounds: u32,
    /// Local optimizer steps over all rounds and sampled clients.
    pub train_steps: u64,
    /// Rows read by evaluations (curves, and the last round's pass over every test row).
    pub eval_rows: u64,
    /// Estimated seconds.
    pub seconds: f64,
    /// Its stage's artifact is already in the cache (costs nothing more).
    pub cached: bool,
    /// Global number of the round before the first one this run trains (Stage 2 continues Stage
    /// 1's numbering; SFT continuing Stage 1 starts after it).
    #[serde(default)]
    pub first_round_after: u32,
    /// Local steps over the sampled clients, per trained round in order.
    #[serde(default)]
    pub round_steps: Vec<u64>,
    /// The measured time of one of its training steps (ms).
    #[serde(default)]
    pub step_ms: f64,
    /// The same run (by its run key) as one earlier in the plan: another point's, whose result
    /// this point reuses from the run cache (FFT under a head protocol that does not touch it). It
    /// costs nothing more and is left out of the totals.
    #[serde(default)]
    pub shared: bool,
}

impl PlannedRun {
    /// Benchmarked client compute up to global round `round`: the local steps of its rounds up to
    /// there × the measured step time (seconds). Independent of what else ran on the machine.
    pub fn benchmarked_seconds_to(&self, round: u32) -> f64 {
        let rounds = round.saturating_sub(self.first_round_after) as usize;
        self.round_steps.iter().take(rounds).sum::<u64>() as f64 * self.step_ms / 1e3
    }
}

/// A whole plan: the runs and the step times that priced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Every run.
    pub runs: Vec<PlannedRun>,
    /// Step times per measured setting (key: the bench cache file).
    pub step_times: BTreeMap<String, StepTimes>,
    /// Sum of every run's estimate.
    pub total_seconds: f64,
    /// Sum over the runs not yet cached.
    pub remaining_seconds: f64,
}

fn bad(message: String) -> PipelineError {
    PipelineError::stage("plan", message)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The bench cache file for `cfg`'s model, shape, precision and threads on this machine, and the
/// settings it is keyed by.
fn bench_cache_file(cfg: &Config, root: &Path, model_dir: &Path, num_labels: usize) -> Result<(PathBuf, serde_json::Value), PipelineError> {
    let weights = ModelFiles::in_dir(model_dir).weights;
    let kernel = (cfg.optim.precision == Precision::Bf16).then(|| slora_model::ops::bf16::kernel().to_string());
    let id = serde_json::json!({
        "version": BENCH_CACHE_VERSION,
        "weights": crate::hashing::hash_file(&weights)?,
        "batch": cfg.federation.batch_size,
        "seq": cfg.data.max_len,
        "eval_batch": cfg.federation.batch_size.max(64),
        "precision": serde_json::to_value(cfg.optim.precision)?,
        "bf16_kernel": kernel,
        "threads": rayon::current_num_threads(),
        "cpu": cpu_name(),
        "num_labels": num_labels,
        "lora_r": cfg.lora.r,
        "density": cfg.stage1.density,
    });
    let key = crate::hashing::sha256_hex(crate::hashing::canonical_json(&id).as_bytes());
    Ok((root.join(BENCH_DIR).join(format!("{}.json", &key[..16])), id))
}

/// Step times for `cfg` on this machine: from the cache, else measured by `pipeline bench`'s code
/// (1 warm-up and 3 timed steps per mode) and cached.
pub fn step_times(cfg: &Config, root: &Path, num_labels: usize) -> Result<(PathBuf, StepTimes), PipelineError> {
    let files = ModelFiles::resolve(&cfg.model.source, &cfg.model.revision).map_err(|e| bad(format!("{e}")))?;
    let (path, id) = bench_cache_file(cfg, root, &files.dir, num_labels)?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<StepTimes>(&text) {
            Ok(t) => return Ok((path, t)),
            Err(e) => tracing::warn!("{}: {e}; measuring again", path.display()),
        }
    }
    tracing::info!(
        "plan: measuring step times for {} at {}x{} ({:?}) on this machine",
        files.dir.display(),
        cfg.federation.batch_size,
        cfg.data.max_len,
        cfg.optim.precision
    );
    let model = BenchModel::load(&files.dir).map_err(|e| bad(format!("{e}")))?;
    let measure = |mode: BenchMode, batch: usize| -> Result<(f64, f64), PipelineError> {
        let mut bc = BenchConfig::new(batch, cfg.data.max_len.max(2));
        bc.steps = 3;
        bc.warmup = 1;
        bc.num_labels = num_labels.max(2);
        bc.lora_rank = cfg.lora.r;
        bc.density = cfg.stage1.density;
        bc.precision = cfg.optim.precision.into();
        let r = model.run(mode, &bc).map_err(|e| bad(format!("{e}")))?;
        let share = r.cpu_ms_per_step / (r.median_ms * r.threads.max(1) as f64);
        Ok((r.median_ms, share))
    };
    let batch = cfg.federation.batch_size;
    let eval_batch = batch.max(64);
    let (full_ms, s1) = measure(BenchMode::Full, batch)?;
    let (lora_ms, s2) = measure(BenchMode::Lora, batch)?;
    let (sparse_ms, s3) = measure(BenchMode::Sparse, batch)?;
    let (eval_ms, s4) = measure(BenchMode::Eval, eval_batch)?;
    let times = StepTimes {
        model: files.dir.display().to_string(),
        batch,
        seq: cfg.data.max_len,
        eval_batch,
        precision: id["precision"].as_str().unwrap_or_default().to_string(),
        threads: rayon::current_num_threads(),
        cpu: cpu_name(),
        full_ms,
        lora_ms,
        sparse_ms,
        eval_ms,
        cpu_share: (s1 + s2 + s3 + s4) / 4.0,
        measured_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    let json = serde_json::to_vec_pretty(&times)?;
    std::fs::create_dir_all(path.parent().expect("bench dir")).map_err(|e| PipelineError::io(&path, e))?;
    slora_fsio::write_atomic(&path, &json).map_err(|e| PipelineError::io(&path, e))?;
    Ok((path, times))
}

/// The work of one federated run: local steps over its rounds and the rows its evaluations read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunWork {
    /// Local optimizer steps.
    pub train_steps: u64,
    /// Rows read by evaluations.
    pub eval_rows: u64,
}

/// Local steps over the sampled clients of each round `shape` trains, in order.
pub fn round_steps(shape: &RunShape) -> Vec<u64> {
    let per_client: Vec<u64> =
        shape.client_rows.iter().map(|&n| shape.local_epochs as u64 * n.div_ceil(shape.batch.max(1)) as u64).collect();
    (shape.resumed_after + 1..=shape.rounds)
        .map(|local| {
            let round = shape.round_offset + local;
            sample_clients(per_client.len(), shape.per_round.min(per_client.len()), shape.seed, round).iter().map(|&c| per_client[c]).sum()
        })
        .collect()
}

/// What a federated run is, as far as its cost goes.
#[derive(Debug, Clone, Copy)]
pub struct RunShape<'a> {
    /// Training rows per client.
    pub client_rows: &'a [usize],
    /// Clients per round.
    pub per_round: usize,
    /// Local epochs.
    pub local_epochs: u32,
    /// Batch size.
    pub batch: usize,
    /// Global number of the run's first round minus one (Stage 2 continues Stage 1's numbering).
    pub round_offset: u32,
    /// Rounds.
    pub rounds: u32,
    /// Rounds already done when the run starts (SFT continuing Stage 1 resumes from its
    /// checkpoint: no round-0 evaluation, and the rounds keep their numbers).
    pub resumed_after: u32,
    /// Evaluate every this many rounds (and after the last, and at round 0).
    pub eval_every: u32,
    /// Rows of a curve evaluation.
    pub curve_rows: usize,
    /// Rows of a pass over every test row in the last `full_last_k` rounds (0: none, as Stage 1).
    pub full_rows: usize,
    /// The last rounds measured on every test row.
    pub full_last_k: u32,
    /// Whether that pass is separate from the curve's (the curve is a subsample); when it is not,
    /// an evaluated round's curve is the full pass and only a round the curve skips costs one.
    pub separate_full: bool,
    /// The run seed (client sampling).
    pub seed: u64,
}

/// Counts a run's work, replaying its seeded client sample round by round.
pub fn run_work(shape: &RunShape) -> RunWork {
    let train_steps = round_steps(shape).iter().sum();
    // Round 0 is evaluated unless the run resumes.
    let mut eval_rows = if shape.resumed_after == 0 { shape.curve_rows as u64 } else { 0 };
    for local in shape.resumed_after + 1..=shape.rounds {
        let evaluated = local % shape.eval_every.max(1) == 0 || local == shape.rounds;
        if evaluated {
            eval_rows += shape.curve_rows as u64;
        }
        if shape.full_rows > 0 && local + shape.full_last_k.max(1) > shape.rounds && (shape.separate_full || !evaluated) {
            eval_rows += shape.full_rows as u64;
        }
    }
    RunWork { train_steps, eval_rows }
}

/// Seconds of a run's work at the measured step times.
pub fn seconds(work: &RunWork, kind: StepKind, times: &StepTimes) -> f64 {
    let eval_batches = work.eval_rows as f64 / times.eval_batch.max(1) as f64;
    (work.train_steps as f64 * times.train_ms(kind) + eval_batches * times.eval_ms) / 1e3
}

/// One point of a study to plan: its label and its config (rates may still be `"tuned"`).
pub struct PlanPoint<'a> {
    /// The point's label.
    pub label: &'a str,
    /// Its config.
    pub config: &'a Config,
}

fn partition_of(cfg: &Config, store: &Store) -> Result<PartitionSummary, PipelineError> {
    let key = plan_stage(cfg, lookup_stage("partition")?.as_ref())?.key;
    let artifact = store.lookup("partition", &key).ok_or_else(|| bad(format!("partition {key} missing after it ran")))?;
    PartitionSummary::of(&artifact)
}

fn cached(cfg: Option<&Config>, stage: &str, store: &Store) -> Result<bool, PipelineError> {
    let Some(cfg) = cfg else { return Ok(false) };
    let key = plan_stage(cfg, lookup_stage(stage)?.as_ref())?.key;
    Ok(store.artifact_dir(stage, &key).join("manifest.json").is_file())
}

/// Plans every run of `points` (each seed of each), and the tune grid at the point `tune` (its
/// first seed, as the study tunes) when a rate is `"tuned"`. Runs the partition stages it needs (cheap, and the study needs them anyway) and
/// measures step times not yet cached.
pub fn plan(points: &[PlanPoint], tune: Option<&Config>, root: &Path, opts: &RunOptions) -> Result<Plan, PipelineError> {
    let mut runs = Vec::new();
    let mut step_times = BTreeMap::new();
    if let Some(tune_point) = tune {
        crate::runner::run_stages_with(tune_point, root, opts, &["partition"])?;
        let tune_cfg = &crate::planning::first_replicate(tune_point);
        let store = Store::open_read_only(root);
        let part = partition_of(tune_cfg, &store)?;
        let done = cached(Some(tune_cfg), "tune", &store)?;
        let partition_key = plan_stage(tune_cfg, lookup_stage("partition")?.as_ref())?.key;
        let upstream: BTreeMap<String, String> = [("partition".to_string(), partition_key)].into();
        let code_version = lookup_stage("tune")?.code_version();
        let rounds = crate::stages::tune::rounds(tune_cfg) as u32;
        for method in crate::stages::tune::METHODS {
            for &lr in tune_cfg.tune.grid(method) {
                let shape = RunShape { curve_rows: part.validation_rows, full_rows: 0, ..shape_of(tune_cfg, &part, 0, rounds) };
                let work = run_work(&shape);
                let kind = kind_of(method);
                let (seconds, step_ms) = price(&mut step_times, tune_cfg, root, part.num_labels, work, kind)?;
                let name = format!("tune-{method}-{lr:e}");
                let params = crate::stages::tune::run_params(tune_cfg, method, lr);
                let (dir, key) = crate::stages::federated::run_dir(&store.stage_dir("tune"), "tune", code_version, &name, &params, &upstream);
                let done = done || crate::stages::federated::run_finished(&dir, "tune", &key, &name, rounds);
                runs.push(PlannedRun {
                    point: "tune".into(),
                    seed: tune_cfg.run.seed,
                    method: name,
                    stage: "tune".into(),
                    kind,
                    rounds,
                    train_steps: work.train_steps,
                    eval_rows: work.eval_rows,
                    seconds,
                    cached: done,
                    first_round_after: 0,
                    round_steps: round_steps(&shape),
                    step_ms,
                    shared: false,
                });
            }
        }
    }
    let mut seen_runs = std::collections::HashSet::new();
    for point in points {
        let cfg = point.config;
        crate::runner::run_stages_with(cfg, root, opts, &["partition"])?;
        let store = Store::open_read_only(root);
        let resolved = match tune {
            _ if !crate::rates::needs_tune(cfg) => Some(cfg.clone()),
            Some(t) => crate::rates::Rates::look_up(cfg, t, &store).and_then(|r| r.into_config()).ok(),
            None => None,
        };
        for seed in cfg.run.replicate_seeds() {
            let seed_cfg = cfg.for_seed(seed);
            let resolved_seed = resolved.as_ref().map(|c| c.for_seed(seed));
            let part = partition_of(&seed_cfg, &store)?;
            let (s1, s2) = (seed_cfg.stage1.rounds as u32, seed_cfg.stage2.rounds as u32);
            let mut add = |method: String, stage: &str, kind: StepKind, offset: u32, rounds: u32, resumed_after: u32, final_pass: bool| -> Result<(), PipelineError> {
                let mut shape = shape_of(&seed_cfg, &part, offset, rounds);
                shape.resumed_after = resumed_after;
                if !final_pass {
                    shape.full_rows = 0;
                }
                let work = run_work(&shape);
                let (seconds, step_ms) = price(&mut step_times, &seed_cfg, root, part.num_labels, work, kind)?;
                let mut cached = cached(resolved_seed.as_ref(), stage, &store)?;
                let mut shared = false;
                // A baseline's run is keyed by what it depends on, not by its point: another point
                // may hold the same run, and the run cache may hold it finished.
                if let (Some(r), "baselines", Ok(m)) = (resolved_seed.as_ref(), stage, serde_json::from_value::<BaselineMethod>(json!(method))) {
                    let mut upstream = BTreeMap::new();
                    for dep in crate::stages::baselines::run_upstream(m) {
                        upstream.insert(dep.to_string(), plan_stage(r, lookup_stage(dep)?.as_ref())?.key);
                    }
                    let params = crate::stages::baselines::run_params(r, m);
                    let code_version = lookup_stage("baselines")?.code_version();
                    let (dir, key) = crate::stages::federated::run_dir(&store.stage_dir("baselines"), "baselines", code_version, &method, &params, &upstream);
                    shared = !seen_runs.insert(key.clone());
                    cached = cached || crate::stages::federated::run_finished(&dir, "baselines", &key, &method, rounds);
                }
                runs.push(PlannedRun {
                    point: point.label.to_string(),
                    seed,
                    method,
                    stage: stage.to_string(),
                    kind,
                    rounds: rounds - resumed_after,
                    train_steps: work.train_steps,
                    eval_rows: work.eval_rows,
                    seconds,
                    cached,
                    first_round_after: offset + resumed_after,
                    round_steps: round_steps(&shape),
                    step_ms,
                    shared,
                });
                Ok(())
            };
            add("slora-stage1".into(), "stage1", StepKind::Sparse, 0, s1, 0, false)?;
            add("slora-stage2".into(), "stage2", StepKind::Lora, s1, s2, 0, true)?;
            for &method in &seed_cfg.baselines.methods {
                let continued = method == BaselineMethod::Sft
                    && match resolved_seed.as_ref() {
                        Some(r) => crate::stages::baselines::continues_stage1(r),
                        // Unresolved: both "tuned" means Stage 1 takes SFT's choice, so they are equal.
                        None => seed_cfg.baselines.sft_from_stage1 && seed_cfg.baselines.sft_lr == seed_cfg.stage1.lr,
                    };
                // Continuing SFT resumes Stage 1's checkpoint inside its own run of s1 + s2 rounds.
                add(method.to_string(), "baselines", kind_of(method), 0, s1 + s2, if continued { s1 } else { 0 }, true)?;
            }
        }
    }
    let total_seconds = runs.iter().filter(|r| !r.shared).map(|r| r.seconds).sum();
    let remaining_seconds = runs.iter().filter(|r| !r.cached && !r.shared).map(|r| r.seconds).sum();
    Ok(Plan { runs, step_times, total_seconds, remaining_seconds })
}

/// Seconds of `work` at the step times measured for `cfg`, remembering which times priced it.
fn price(
    used: &mut BTreeMap<String, StepTimes>,
    cfg: &Config,
    root: &Path,
    num_labels: usize,
    work: RunWork,
    kind: StepKind,
) -> Result<(f64, f64), PipelineError> {
    let (path, times) = step_times(cfg, root, num_labels)?;
    let s = seconds(&work, kind, &times);
    let step_ms = times.train_ms(kind);
    used.insert(path.display().to_string(), times);
    Ok((s, step_ms))
}

fn kind_of(method: BaselineMethod) -> StepKind {
    match method {
        BaselineMethod::Fft => StepKind::Full,
        BaselineMethod::Sft => StepKind::Sparse,
        _ => StepKind::Lora,
    }
}

fn shape_of<'a>(cfg: &Config, part: &'a PartitionSummary, round_offset: u32, rounds: u32) -> RunShape<'a> {
    let f = &cfg.federation;
    // As `federated::load_test`: a separate full test set only when the curve is a strict subsample.
    let separate_full = f.eval_max_rows > 0 && f.eval_max_rows < part.test_rows;
    let curve_rows = if separate_full { f.eval_max_rows } else { part.test_rows };
    RunShape {
        client_rows: &part.rows_per_client,
        per_round: f.clients_per_round,
        local_epochs: f.local_epochs as u32,
        batch: f.batch_size,
        round_offset,
        rounds,
        resumed_after: 0,
        eval_every: f.eval_every as u32,
        curve_rows,
        full_rows: part.test_rows,
        full_last_k: f.full_test_last_k as u32,
        separate_full,
        seed: cfg.run.seed,
    }
}

/// `1 h 02 min`, `3 min 20 s`, `12 s`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// The plan as a table: one row per point × method (seeds summed), the tune grid, the total.
pub fn render(plan: &Plan, name: &str) -> String {
    let mut out = format!("study {name}: cost plan\n");
    for (path, t) in &plan.step_times {
        out.push_str(&format!(
            "  step times ({path}): {} at {}x{} {} on {} threads, {}: FFT {:.0} ms, LoRA {:.0} ms, sparse {:.0} ms, eval {:.0} ms per {} rows{}\n",
            t.model,
            t.batch,
            t.seq,
            t.precision,
            t.threads,
            t.cpu,
            t.full_ms,
            t.lora_ms,
            t.sparse_ms,
            t.eval_ms,
            t.eval_batch,
            if t.cpu_share < 0.8 { format!(" (measured on a busy machine: {:.0} % of its threads)", 100.0 * t.cpu_share) } else { String::new() }
        ));
    }
    out.push_str(&format!(
        "{:<24} {:<16} {:>5} {:>6} {:>11} {:>12} {:>14} {:>12}  {}\n",
        "point", "method", "seeds", "rounds", "steps/round", "eval rows", "est. per seed", "est. total", "status"
    ));
    let mut groups: Vec<((String, String), Vec<&PlannedRun>)> = Vec::new();
    for r in &plan.runs {
        let key = (r.point.clone(), r.method.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    for ((point, method), rs) in &groups {
        let n = rs.len() as f64;
        let steps: f64 = rs.iter().map(|r| r.train_steps as f64 / r.rounds.max(1) as f64).sum::<f64>() / n;
        let eval: f64 = rs.iter().map(|r| r.eval_rows as f64).sum::<f64>() / n;
        let done = rs.iter().filter(|r| r.cached).count();
        let status = match done {
            _ if rs.iter().all(|r| r.shared) => "shared with an earlier point's run".to_string(),
            0 => "to run".to_string(),
            d if d == rs.len() => "cached".to_string(),
            d => format!("{d}/{} cached", rs.len()),
        };
        let total: f64 = rs.iter().filter(|r| !r.shared).map(|r| r.seconds).sum();
        out.push_str(&format!(
            "{:<24} {:<16} {:>5} {:>6} {:>11.1} {:>12.0} {:>14} {:>12}  {status}\n",
            point,
            method,
            rs.len(),
            rs[0].rounds,
            steps,
            eval,
            human(total / n),
            human(total)
        ));
    }
    out.push_str(&format!(
        "total: {} estimated ({:.0} s), {} of it not yet cached ({:.0} s)\n",
        human(plan.total_seconds),
        plan.total_seconds,
        human(plan.remaining_seconds),
        plan.remaining_seconds
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(scale: f64) -> StepTimes {
        StepTimes {
            model: "m".into(),
            batch: 32,
            seq: 64,
            eval_batch: 64,
            precision: "fp32".into(),
            threads: 2,
            cpu: "cpu".into(),
            full_ms: 400.0 * scale,
            lora_ms: 250.0 * scale,
            sparse_ms: 260.0 * scale,
            eval_ms: 80.0 * scale,
            cpu_share: 1.0,
            measured_at: 0,
        }
    }

    #[test]
    fn work_replays_the_seeded_sample() {
        let rows = [100, 33, 64, 1, 0];
        let shape = RunShape {
            client_rows: &rows,
            per_round: 2,
            local_epochs: 3,
            batch: 32,
            round_offset: 4,
            rounds: 5,
            resumed_after: 0,
            eval_every: 2,
            curve_rows: 50,
            full_rows: 500,
            full_last_k: 1,
            separate_full: true,
            seed: 9,
        };
        let steps_of = [4u64, 2, 2, 1, 0];
        let expected: u64 = (5..=9).flat_map(|r| sample_clients(5, 2, 9, r)).map(|c| 3 * steps_of[c]).sum();
        let w = run_work(&shape);
        assert_eq!(w.train_steps, expected);
        // Per round, in order: what claim 3's benchmarked compute to a target adds up.
        let per_round: Vec<u64> = (5..=9).map(|r| sample_clients(5, 2, 9, r).iter().map(|&c| 3 * steps_of[c]).sum()).collect();
        assert_eq!(round_steps(&shape), per_round);
        let run = PlannedRun {
            point: "p".into(),
            seed: 9,
            method: "lora".into(),
            stage: "baselines".into(),
            kind: StepKind::Lora,
            rounds: 5,
            train_steps: expected,
            eval_rows: w.eval_rows,
            seconds: 0.0,
            cached: false,
            first_round_after: 4,
            round_steps: per_round.clone(),
            step_ms: 250.0,
            shared: false,
        };
        // Global rounds 5..=7 are its first three; round 4 and before are not its own.
        assert_eq!(run.benchmarked_seconds_to(7), per_round[..3].iter().sum::<u64>() as f64 * 0.25);
        assert_eq!(run.benchmarked_seconds_to(4), 0.0);
        assert_eq!(run.benchmarked_seconds_to(99), expected as f64 * 0.25);
        // Round 0, rounds 2 and 4, and the last (5): four curve evaluations, plus the full pass.
        assert_eq!(w.eval_rows, 4 * 50 + 500);
        // The last 3 rounds on every row: three full passes.
        assert_eq!(run_work(&RunShape { full_last_k: 3, ..shape }).eval_rows, 4 * 50 + 3 * 500);
        // No separate full set (the curve is every row): only round 3, which the curve skips, costs one.
        let whole = RunShape { curve_rows: 500, separate_full: false, full_last_k: 3, ..shape };
        assert_eq!(run_work(&whole).eval_rows, 4 * 500 + 500);
        // Resumed after round 2 (SFT continuing Stage 1): no round-0 evaluation, rounds 3..=5 train.
        let resumed = RunShape { resumed_after: 2, ..shape };
        let expected: u64 = (7..=9).flat_map(|r| sample_clients(5, 2, 9, r)).map(|c| 3 * steps_of[c]).sum();
        assert_eq!(run_work(&resumed).train_steps, expected);
        assert_eq!(run_work(&resumed).eval_rows, 2 * 50 + 500);
        // All clients every round: every client's steps every round.
        let all = RunShape { per_round: 5, ..shape };
        assert_eq!(run_work(&all).train_steps, 5 * 3 * 9);
    }

    #[test]
    fn the_estimate_scales_with_the_measured_step_times() {
        let w = RunWork { train_steps: 1000, eval_rows: 6400 };
        let one = seconds(&w, StepKind::Full, &times(1.0));
        assert!((one - (1000.0 * 0.4 + 100.0 * 0.08)).abs() < 1e-9);
        let two = seconds(&w, StepKind::Full, &times(2.0));
        assert!((two - 2.0 * one).abs() < 1e-9);
        assert!(seconds(&w, StepKind::Lora, &times(1.0)) < one);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(12.4), "12 s");
        assert_eq!(human(200.0), "3 min 20 s");
        assert_eq!(human(3720.0), "1 h 02 min");
    }
}
