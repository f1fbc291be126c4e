//! What the federated stages (stage1, stage2, baselines, tune) share: the partition
//! shards, the training spec and optimizer settings from the config, the params that key them, and
//! one call that runs FedAvg with round checkpoints in the stage's work folder.

use std::path::Path;

use serde_json::{json, Value};
use slora_federation::{
    run_fedavg, CheckpointStore, ClassifierLearner, FedAvgConfig, FedOutcome, FederationError, OptimSettings, Schedule, Shard,
};
use slora_model::optim::AdamWConfig;
use slora_model::{Classifier, EncoderConfig, InitReport, Mode, TrainSpec, Weights};

use crate::config::{self, Config};
use crate::error::PipelineError;
use crate::stage::StageCtx;
use crate::store::Artifact;

/// Rows of the test batch used for the switch check (decompose).
pub const SWITCH_CHECK_ROWS: usize = 32;

/// Params shared by every federated run: seed, model, `[federation]`, `[optim]`, `[adapter]`.
pub fn federated_params(cfg: &Config) -> Value {
    let (model, adapter) = super::base_model::model_and_adapter_params(cfg);
    let mut params = json!({
        "seed": cfg.run.seed,
        "model": model,
        "federation": cfg.federation,
        "optim": cfg.optim,
        "adapter": adapter,
    });
    if cfg.optim.precision == crate::config::Precision::Bf16 {
        params["bf16_numerics"] = json!(BF16_NUMERICS);
    }
    // Only when on, so that no key changes; with the σ the runs use (the accountant's choice for
    // a target ε).
    // Which rounds record (the same global rounds for every method of a seed), by revision.
    if cfg.federation.record_uploads > 0 {
        params["record_rounds_rule"] = json!(2);
    }
    if let Some(dp) = crate::privacy::client_dp(cfg) {
        params["privacy"] = json!({ "settings": cfg.privacy, "noise_multiplier": dp.noise_multiplier });
    }
    params
}

/// What `optim.precision = "bf16"` computes, by revision, in the training stages' keys (only when
/// bf16: fp32 keys do not change), so that artifacts of an earlier bf16 are not reused. 2: frozen
/// weights held in bf16 and LoRA's update summed beside the base instead of folded into it.
pub const BF16_NUMERICS: u32 = 2;

/// The partition artifact's client shards, test shard and label count.
pub struct Data {
    /// One shard per client.
    pub clients: Vec<Shard>,
    /// The rows every evaluated round is measured on (the test shard, or its stratified subsample of
    /// `federation.eval_max_rows`).
    pub test: Shard,
    /// The whole test shard when `test` is a subsample of it (the last round is measured on it).
    pub full_test: Option<Shard>,
    /// The validation rows carved from the clients' shards (`partition.validation_fraction`), if any.
    pub validation: Option<Shard>,
    /// The same rows by the client they were carved from (empty when the partition did not
    /// record it: written before it did, or without validation rows).
    pub validation_per_client: Vec<Shard>,
    /// Classifier size.
    pub num_labels: usize,
}

/// Reads the shards of the partition artifact.
pub fn load_data(ctx: &StageCtx, partition: &Artifact) -> Result<Data, PipelineError> {
    let labels = slora_data::LabelSet::read(&partition.file("labels.json"))?;
    let mut clients = Vec::new();
    // As many clients as the partition wrote (natural ids decide their own count).
    let count = (0..).take_while(|&i| partition.manifest.files.contains_key(&slora_data::shard::client_file_name(i))).count();
    for i in 0..count {
        let path = partition.file(&slora_data::shard::client_file_name(i));
        let s = slora_data::read_shard(&path)?;
        clients.push(Shard { input_ids: s.input_ids, labels: s.labels });
    }
    let (test, full_test) = load_test(ctx.config, &partition.dir)?;
    let validation_path = partition.file(super::partition::VALIDATION_FILE);
    let validation = if partition.manifest.files.contains_key(super::partition::VALIDATION_FILE) {
        let v = slora_data::read_shard(&validation_path)?;
        Some(Shard { input_ids: v.input_ids, labels: v.labels })
    } else {
        None
    };
    let mut per_client = <super::summaries::PartitionSummary as super::summaries::StageSummary>::of(partition)?.validation_rows_per_client;
    if per_client.is_empty() && validation.is_some() && ctx.config.baselines.methods.contains(&config::BaselineMethod::FedsaLora) {
        // A partition written before its summary recorded them: the same seeded carve, recomputed
        // from the data, and checked against the shards on disk.
        let (counts, train_rows) = super::partition::recompute_validation_rows_per_client(ctx.config)?;
        if train_rows == clients.iter().map(Shard::len).collect::<Vec<_>>() {
            per_client = counts;
        } else {
            tracing::warn!("partition {}: the recomputed carve does not match its shards; no per-client validation rows", partition.dir.display());
        }
    }
    let validation_per_client = match &validation {
        Some(v) if per_client.iter().sum::<usize>() == v.len() && per_client.len() == clients.len() => {
            let mut start = 0;
            per_client
                .iter()
                .map(|&n| {
                    let rows: Vec<usize> = (start..start + n).collect();
                    start += n;
                    v.select(&rows)
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Data { clients, test, full_test, validation, validation_per_client, num_labels: labels.num_labels })
}

/// The partition folder's test rows as every federated run measures them: the rows of each evaluated
/// round (the stratified subsample of `federation.eval_max_rows`, or all) and, when that is a
/// subsample, every row (the last round's). All a server needs besides `labels.json`.
pub fn load_test(cfg: &Config, dir: &Path) -> Result<(Shard, Option<Shard>), PipelineError> {
    let test = slora_data::read_shard(&dir.join("test.parquet"))?;
    let keep = slora_data::stratified_subsample(&test.labels, cfg.federation.eval_max_rows, cfg.run.seed);
    let full = Shard { input_ids: test.input_ids, labels: test.labels };
    Ok(if keep.len() < full.len() { (full.select(&keep), Some(full)) } else { (full, None) })
}

/// The training mode of a baseline method: LoRA with `[lora]` (`r`, `lora_alpha`, `lora_dropout`),
/// SFT with `stage1.density` (the same masks as Stage 1).
pub fn baseline_mode(cfg: &Config, method: config::BaselineMethod) -> Mode {
    match method {
        config::BaselineMethod::Fft => Mode::Full,
        config::BaselineMethod::Lora | config::BaselineMethod::FfaLora | config::BaselineMethod::FedexLora | config::BaselineMethod::LoraA2 | config::BaselineMethod::FlexLora
        | config::BaselineMethod::FedsaLora => {
            let mut lora = slora_model::LoraSpec::new(cfg.lora.r, cfg.lora.lora_alpha);
            lora.dropout = cfg.lora.lora_dropout;
            lora.freeze_a = method == config::BaselineMethod::FfaLora;
            Mode::Lora(lora)
        }
        config::BaselineMethod::Sft => Mode::Sparse(slora_model::SparseSpec::new(cfg.stage1.density)),
    }
}

/// `fedcfg` with the server step of `method`: FedEx-LoRA's exact aggregation, FedAvg otherwise.
pub fn with_aggregation(mut fedcfg: FedAvgConfig, cfg: &Config, method: config::BaselineMethod) -> FedAvgConfig {
    fedcfg.aggregation = match method {
        config::BaselineMethod::FedexLora => slora_federation::Aggregation::ExactLora { scale: cfg.lora.lora_alpha / cfg.lora.r as f64 },
        config::BaselineMethod::LoraA2 => slora_federation::Aggregation::Alternating,
        config::BaselineMethod::FlexLora => slora_federation::Aggregation::FlexLora { scale: cfg.lora.lora_alpha / cfg.lora.r as f64 },
        config::BaselineMethod::FedsaLora => slora_federation::Aggregation::SharedA,
        _ => slora_federation::Aggregation::Mean,
    };
    fedcfg
}

/// The client learner of a baseline `method` at rate `lr`: LoRA-A²'s alternating freeze and rank
/// budget where it is LoRA-A².
pub fn learner(cfg: &Config, method: config::BaselineMethod, model: Classifier, lr: f64) -> ClassifierLearner {
    let learner = ClassifierLearner::new(model, optim_settings(cfg, lr));
    match method {
        config::BaselineMethod::LoraA2 => learner.alternating(Some(cfg.lora.a2_budget())),
        _ => learner,
    }
}

/// A training spec in `mode` with the config's targets, `modules_to_save`, seed and dropout.
pub fn train_spec(cfg: &Config, mode: Mode, num_labels: usize) -> TrainSpec {
    let mut spec = TrainSpec::new(mode, num_labels, cfg.run.seed);
    spec.targets = cfg.adapter.targets();
    spec.modules_to_save = if cfg.adapter.freeze_head { Vec::new() } else { cfg.adapter.modules_to_save() };
    spec.dropout = (cfg.optim.dropout >= 0.0).then_some(cfg.optim.dropout);
    spec.precision = cfg.optim.precision.into();
    spec
}

/// Client optimizer settings from `[optim]` with learning rate `lr` (the head at `optim.head_lr`).
pub fn optim_settings(cfg: &Config, lr: f64) -> OptimSettings {
    let o = &cfg.optim;
    OptimSettings {
        adamw: AdamWConfig { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay },
        head_lr: Some(cfg.head_lr(lr)),
        lora_b_lr_ratio: o.lora_b_lr_ratio,
        schedule: match o.schedule {
            config::Schedule::Constant => Schedule::Constant,
            config::Schedule::Linear => Schedule::Linear { warmup_steps: o.warmup_steps as u64 },
        },
    }
}

/// The FedAvg settings of one run from `[federation]` and `[run]`.
pub fn fedavg_config(cfg: &Config, method: &str, rounds: usize, round_offset: u32, cum_bytes_up_start: u64) -> FedAvgConfig {
    let f = &cfg.federation;
    FedAvgConfig {
        method: method.to_string(),
        rounds: rounds as u32,
        round_offset,
        clients_per_round: f.clients_per_round,
        local_epochs: f.local_epochs as u32,
        batch_size: f.batch_size,
        eval_every: f.eval_every as u32,
        eval_batch_size: f.batch_size.max(64),
        seed: cfg.run.seed,
        cum_bytes_up_start,
        wall_seconds_start: 0.0,
        cum_bytes_down_start: 0,
        switch_bytes_per_client: 0,
        setup_server_seconds: 0.0,
        setup: slora_federation::SetupCosts::default(),
        final_full_test: true,
        full_test_last_k: f.full_test_last_k as u32,
        aggregation: slora_federation::Aggregation::Mean,
        client_ranks: f.client_ranks.clone(),
        max_update_norm: (f.max_update_norm > 0.0).then_some(f.max_update_norm),
        privacy: crate::privacy::client_dp(cfg),
        record_rounds: match f.record_uploads {
            0 => Default::default(),
            k => slora_federation::privacy::recorded_rounds(cfg.run.seed, (cfg.stage1.rounds + cfg.stage2.rounds) as u32, k as u32),
        },
    }
}

/// Builds the classifier and logs what the head initialisation did.
pub fn build_classifier(
    stage: &str,
    base: &EncoderConfig,
    weights: &Weights,
    spec: &TrainSpec,
) -> Result<(Classifier, InitReport), PipelineError> {
    let (model, report) = Classifier::new(base, weights, spec)?;
    tracing::info!(
        "{stage}: {} trainable parameters in {} tensors{}",
        model.num_trainable_params(),
        model.trainable_vars().len(),
        if report.initialised.is_empty() { String::new() } else { format!("; head initialised from the seed: {:?}", report.initialised) }
    );
    Ok((model, report))
}

/// The round-checkpoint store of `method` in the stage's work folder (a stage that is one run:
/// Stage 1, Stage 2).
pub fn checkpoint_store(ctx: &StageCtx, method: &str) -> Result<CheckpointStore, PipelineError> {
    let dir = ctx.work_dir.join(method);
    Ok(CheckpointStore::open(&dir, format!("{}:{}:{}", ctx.stage, ctx.key, method))?.strict(ctx.no_rebuild))
}

/// The round checkpoints of one run of a stage that holds several (a baseline method, a tune grid
/// point), in `artifacts/<stage>/.runs/<name>-<run key>/`, kept after the stage commits. The run key
/// hashes only what the run depends on (`run_params`, the `upstream` stages it reads, the stage's
/// code version), not the whole stage: a study that adds a method or a grid point re-keys the stage,
/// and its other runs resume here, finished or not, instead of training again. A run begun in the
/// stage's work folder (the layout before this cache) is moved here and resumed: the folder's name
/// now identifies the run, so a checkpoint written there under any of the stage's keys is this
/// run's (a study re-keys the stage after the move).
pub fn run_checkpoints(
    ctx: &StageCtx,
    code_version: u32,
    name: &str,
    run_params: &Value,
    upstream: &[&str],
) -> Result<CheckpointStore, PipelineError> {
    let mut keys = std::collections::BTreeMap::new();
    for dep in upstream {
        keys.insert(dep.to_string(), ctx.input(dep)?.key.clone());
    }
    let stage_dir = ctx.work_dir.parent().unwrap_or(&ctx.work_dir);
    let (dir, key) = run_dir(stage_dir, ctx.stage, code_version, name, run_params, &keys);
    let runs = stage_dir.join(RUNS_DIR);
    let legacy = ctx.work_dir.join(name);
    if !dir.exists() && legacy.is_dir() {
        std::fs::create_dir_all(&runs).map_err(|e| ctx.error(format!("{}: {e}", runs.display())))?;
        std::fs::rename(&legacy, &dir).map_err(|e| ctx.error(format!("moving {} to {}: {e}", legacy.display(), dir.display())))?;
        tracing::info!("{}: {name}: resuming the run begun in {}", ctx.stage, legacy.display());
    }
    Ok(CheckpointStore::open(&dir, format!("{}:{key}:{name}", ctx.stage))?
        .also_accepting(format!("{}:", ctx.stage), format!(":{name}"))
        .strict(ctx.no_rebuild))
}

/// The folder of a stage's per-run checkpoints ([`run_checkpoints`]).
pub const RUNS_DIR: &str = ".runs";

/// Where run `name` of `stage` keeps its checkpoints (`<stage_dir>/.runs/<name>-<key>/`) and its
/// run key, from what the run depends on (see [`run_checkpoints`]).
pub fn run_dir(
    stage_dir: &Path,
    stage: &str,
    code_version: u32,
    name: &str,
    run_params: &Value,
    upstream: &std::collections::BTreeMap<String, String>,
) -> (std::path::PathBuf, String) {
    let key = crate::hashing::stage_key(&format!("{stage}/{name}"), code_version, run_params, upstream);
    (stage_dir.join(RUNS_DIR).join(format!("{name}-{}", &key[..16])), key)
}

/// Whether the run whose checkpoints are in `dir` (see [`run_dir`]) finished its `rounds`.
/// Read-only: a folder that does not exist is a run not begun.
pub fn run_finished(dir: &Path, stage: &str, key: &str, name: &str, rounds: u32) -> bool {
    if !dir.is_dir() {
        return false;
    }
    CheckpointStore::open(dir, format!("{stage}:{key}:{name}"))
        .map(|s| s.also_accepting(format!("{stage}:"), format!(":{name}")))
        .ok()
        .and_then(|s| s.latest().ok().flatten())
        .is_some_and(|cp| cp.completed_rounds >= rounds)
}

/// Runs FedAvg for `learner` with round checkpoints in `store` (resumed when present).
/// `lr_key` names the learning-rate setting in a divergence error.
pub fn run_federated(
    ctx: &StageCtx,
    learner: &mut ClassifierLearner,
    data: &Data,
    fed: &FedAvgConfig,
    store: &CheckpointStore,
    lr_key: &str,
) -> Result<FedOutcome, PipelineError> {
    run_fedavg(learner, &data.clients, &data.test, data.full_test.as_ref(), fed, Some(store)).map_err(|e| match e {
        FederationError::NonFiniteLoss { .. } => {
            ctx.error(format!("{}: {e} ({lr_key} = {:e})", fed.method, learner.learning_rate()))
        }
        e => ctx.error(e.to_string()),
    })
}

/// [`run_federated`] for FedSA-LoRA: also each client's own model on its held-out rows, when the
/// partition carved them (else the global number alone, with a warning).
pub fn run_federated_personal(
    ctx: &StageCtx,
    learner: &mut ClassifierLearner,
    data: &Data,
    fed: &FedAvgConfig,
    store: &CheckpointStore,
    lr_key: &str,
) -> Result<(FedOutcome, Option<slora_federation::PersonalEvaluation>), PipelineError> {
    if data.validation_per_client.is_empty() {
        tracing::warn!(
            "{}: no personalised evaluation: it measures each client's own model on the client's held-out rows; set partition.validation_fraction > 0 (a partition written before this version records no per-client rows: rerun it with --force partition)",
            fed.method
        );
        return Ok((run_federated(ctx, learner, data, fed, store, lr_key)?, None));
    }
    let (outcome, personal) = slora_federation::run_fedavg_personal(learner, &data.clients, &data.test, data.full_test.as_ref(), fed, Some(store), &data.validation_per_client)
        .map_err(|e| match e {
            FederationError::NonFiniteLoss { .. } => ctx.error(format!("{}: {e} ({lr_key} = {:e})", fed.method, learner.learning_rate())),
            e => ctx.error(e.to_string()),
        })?;
    Ok((outcome, personal))
}

/// The summary of a finished run for the manifest.
pub fn run_summary(outcome: &FedOutcome, model: &Classifier) -> super::summaries::RunSummary {
    let last = outcome.metrics.last();
    let last_eval = outcome.metrics.iter().rev().find(|m| m.accuracy.is_some());
    super::summaries::RunSummary {
        rounds: outcome.metrics.len().saturating_sub(1),
        final_accuracy: last.and_then(|m| m.final_accuracy()),
        final_curve_accuracy: last_eval.and_then(|m| m.accuracy),
        final_loss: last_eval.and_then(|m| m.loss),
        initial_accuracy: outcome.metrics.first().and_then(|m| m.accuracy),
        trainable_params: model.num_trainable_params(),
        bytes_up_per_client: last.map(|m| m.bytes_up_per_client),
        bytes_down_per_client: last.map(|m| m.bytes_down_per_client),
        cum_bytes_up: last.map(|m| m.cum_bytes_up),
        wall_seconds: last.map(|m| m.wall_seconds),
        resumed_from_round: outcome.resumed_from,
    }
}

/// Writes `metrics.parquet` into `out`.
pub fn write_metrics(out: &Path, rows: &[slora_metrics::RoundMetrics]) -> Result<(), PipelineError> {
    Ok(slora_metrics::write_parquet(&out.join("metrics.parquet"), rows)?)
}

/// Whether a trainable tensor is the head's by its name alone (not an adapter tensor): for a
/// method without a learner at hand.
pub fn is_head_name(name: &str) -> bool {
    !name.ends_with(".sparse_delta") && !name.ends_with(".lora_A.weight") && !name.ends_with(".lora_B.weight")
}

/// The head tensors of a trainable state (everything that is not an adapter tensor).
pub fn head_tensors(state: &slora_federation::State) -> slora_federation::State {
    state
        .iter()
        .filter(|(k, _)| is_head_name(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `pipeline inspect` for stages whose output is a metrics table (stage2, baselines).
pub fn inspect_metrics(artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
    let rows = slora_metrics::read_parquet(&artifact.file("metrics.parquet"))?;
    let mut text = format!("{} {} at {}\n", artifact.stage, artifact.short_key(), artifact.dir.display());
    text.push_str(&slora_metrics::format_table(&rows));
    let value = json!({
        "stage": artifact.stage,
        "key": artifact.key,
        "dir": artifact.dir,
        "summary": artifact.manifest.summary,
        "metrics": slora_metrics::rows_json(&rows),
    });
    Ok((value, text))
}

/// The folder of an artifact that holds each method's recorded uploads (`federation.record_uploads`).
pub const UPLOADS_DIR: &str = "uploads";

/// Puts the uploads a run recorded in its checkpoint folder (`store`) into the stage's output as
/// `uploads/<method>/round-…/…` for `pipeline audit`: hard links (the checkpoint folder and the
/// output are on one disk), copies where linking fails. Nothing to do when the run recorded none.
pub fn publish_uploads(store: &CheckpointStore, out: &Path, method: &str) -> Result<(), PipelineError> {
    let from = store.dir().join(slora_federation::server::UPLOADS_DIR);
    if !from.is_dir() {
        return Ok(());
    }
    let to = out.join(UPLOADS_DIR).join(method);
    let rounds = std::fs::read_dir(&from).map_err(|e| PipelineError::stage("uploads", format!("{}: {e}", from.display())))?;
    for round in rounds.flatten().filter(|e| e.path().is_dir()) {
        let dest = to.join(round.file_name());
        std::fs::create_dir_all(&dest).map_err(|e| PipelineError::stage("uploads", format!("{}: {e}", dest.display())))?;
        for file in std::fs::read_dir(round.path()).map_err(|e| PipelineError::stage("uploads", format!("{}: {e}", round.path().display())))?.flatten() {
            let name = file.file_name();
            // A temporary file of an interrupted write is not a record.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let target = dest.join(&name);
            if std::fs::hard_link(file.path(), &target).is_err() {
                std::fs::copy(file.path(), &target).map_err(|e| PipelineError::stage("uploads", format!("{}: {e}", target.display())))?;
            }
        }
    }
    Ok(())
}
