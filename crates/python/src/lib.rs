//! The Rust core as a deployed federation needs it (issue 12). A [`Client`] is one data holder: a
//! method's model built from the config as its pipeline stage builds it (SLoRA's Stage 2 from the
//! same decomposition the `decompose` stage runs) and its local round on its own shard
//! (`slora_federation::local_update`). A [`Server`] is the pipeline's FedAvg server
//! (`slora_federation::FedAvgServer`: seeded sampling, checked replies averaged in the sampled order,
//! evaluation, byte accounting, `metrics.parquet`, round checkpoints). The Flower app (flower/) calls
//! them through the `slora` Python module (the default `python` feature; maturin for a wheel), so a
//! deployment computes what `pipeline` computes, round by round.
//!
//! Without the `python` feature this is a plain Rust library: the bindings are a thin layer over it.

#![warn(missing_docs)]

use std::borrow::Cow;
use std::path::Path;

use slora_federation::{local_update, ClassifierLearner, FedAvgServer, LocalRound, RoundPlan, Shard, State, WeightedAverage};
use slora_metrics::RoundMetrics;
use slora_model::{Mode, SparseSpec};
use slora_pipeline::config::{parse_set, BaselineMethod, LearningRate, StageOneMask};
use slora_pipeline::stages::decompose::Decomposition;
use slora_pipeline::stages::{base_model, federated as fed};
use slora_pipeline::Config;

#[cfg(feature = "python")]
mod python;
pub mod research;

/// What the bindings report: the core's errors, one line each.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// Config, model or stage error.
    #[error(transparent)]
    Pipeline(#[from] slora_pipeline::PipelineError),
    /// Training or aggregation error.
    #[error(transparent)]
    Federation(#[from] slora_federation::FederationError),
    /// Metrics file error.
    #[error(transparent)]
    Metrics(#[from] slora_metrics::MetricsError),
    /// Shard or label file error.
    #[error(transparent)]
    Data(#[from] slora_data::DataError),
    /// A bad argument, named.
    #[error("{0}")]
    Invalid(String),
}

/// Results of this crate.
pub type Result<T, E = BindingError> = std::result::Result<T, E>;

/// A method a deployment runs: a baseline, or one of SLoRA's two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// FFT, LoRA, FFA-LoRA or SFT, as the `baselines` stage runs them.
    Baseline(BaselineMethod),
    /// SLoRA's Stage 1: sparse fine-tuning under the seeded random mask (`stage1`).
    Stage1,
    /// SLoRA's Stage 2: LoRA from the decomposition of Stage 1's final update (`stage2`).
    Stage2,
    /// A linear probe: the encoder frozen, only `adapter.modules_to_save` (the head) trains, at
    /// `optim.head_lr`. Not a pipeline method; for deployments that only need a head.
    Frozen,
}

/// The metrics `method` of SLoRA's stages.
pub const STAGE1: &str = slora_pipeline::stages::stage1::METHOD;
/// See [`STAGE1`].
pub const STAGE2: &str = slora_pipeline::stages::stage2::METHOD;
/// The metrics `method` of the linear probe.
pub const FROZEN: &str = "frozen";

impl Method {
    /// A method by its metrics name: `fft`, `lora`, `ffa-lora`, `sft` (parsed as the config parses
    /// `baselines.methods`), `slora-stage1`, `slora-stage2`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            STAGE1 => Ok(Self::Stage1),
            STAGE2 => Ok(Self::Stage2),
            FROZEN => Ok(Self::Frozen),
            _ => serde_json::from_value(serde_json::Value::String(name.to_string()))
                .map(Self::Baseline)
                .map_err(|_| BindingError::Invalid(format!("method: unknown `{name}` (fft, lora, ffa-lora, fedex-lora, lora-a2, flexlora, fedsa-lora, sft, {STAGE1}, {STAGE2}, {FROZEN})"))),
        }
    }

    /// The metrics name.
    pub fn name(&self) -> String {
        match self {
            Self::Baseline(b) => b.to_string(),
            Self::Stage1 => STAGE1.into(),
            Self::Stage2 => STAGE2.into(),
            Self::Frozen => FROZEN.into(),
        }
    }
}

/// What SLoRA's switch costs and took, for Stage 2's accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Switch {
    /// Bytes each client downloads once: Stage 1's sparse ΔW values (nnz f32), from which it
    /// rebuilds the corrected base by the same decomposition (the pipeline's accounting).
    pub bytes_per_client: u64,
    /// Seconds the decomposition took here.
    pub svd_seconds: f64,
}

/// The config with `KEY=VALUE` overrides, as `pipeline --config … --set …` loads it.
pub fn load_config(config: &Path, overrides: &[String]) -> Result<Config> {
    let overrides = overrides.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
    Ok(Config::load(Some(config), &overrides)?)
}

/// A method's learner, built as its pipeline stage builds it. Stage 2 decomposes `stage1` (Stage 1's
/// final global state) with the `decompose` stage's function and builds on the corrected base.
pub fn build_learner(cfg: &Config, method: Method, num_labels: usize, stage1: Option<&State>) -> Result<(ClassifierLearner, Option<Switch>)> {
    let base = base_model::load_base_model(cfg)?;
    match method {
        Method::Baseline(BaselineMethod::FedsaLora) => Err(BindingError::Invalid(
            "fedsa-lora: the deployment runs methods whose clients keep nothing between rounds; FedSA-LoRA's clients keep their own B and head, so it runs in process (`pipeline`) only".into(),
        )),
        Method::Baseline(b) => {
            let lr = match cfg.baselines.lr(b) {
                LearningRate::Value(v) => v,
                LearningRate::Tuned => {
                    return Err(BindingError::Invalid(format!("baselines.{}_lr: \"tuned\" needs `pipeline tune` first; give a number", b.to_string().replace('-', "_"))))
                }
            };
            let spec = fed::train_spec(cfg, fed::baseline_mode(cfg, b), num_labels);
            let (model, _) = fed::build_classifier(&b.to_string(), &base.config, &base.weights, &spec)?;
            Ok((fed::learner(cfg, b, model, lr), None))
        }
        Method::Stage1 => Ok((ClassifierLearner::new(stage1_model(cfg, &base, num_labels)?, fed::optim_settings(cfg, cfg.stage1.lr.value())), None)),
        Method::Stage2 => {
            let stage1 = stage1.ok_or_else(|| BindingError::Invalid(format!("{STAGE2} needs Stage 1's final global state")))?;
            let d = decompose_with(cfg, &base, &stage1_model(cfg, &base, num_labels)?, stage1)?;
            let (learner, _) = slora_pipeline::stages::stage2::learner_from_init(cfg, &base, &d.lora_init, num_labels)?;
            let bytes_per_client = slora_federation::state_bytes(&switch_payload(stage1));
            Ok((learner, Some(Switch { bytes_per_client, svd_seconds: d.svd_seconds })))
        }
        Method::Frozen => {
            if cfg.optim.head_lr <= 0.0 {
                return Err(BindingError::Invalid("optim.head_lr: the frozen probe trains the head alone, at this rate; give one > 0".into()));
            }
            let spec = fed::train_spec(cfg, Mode::Frozen, num_labels);
            let (model, _) = fed::build_classifier(FROZEN, &base.config, &base.weights, &spec)?;
            Ok((ClassifierLearner::new(model, fed::optim_settings(cfg, cfg.optim.head_lr)), None))
        }
    }
}

/// Stage 1's model: the sparse adapters under the seeded random masks (the deployable mask).
fn stage1_model(cfg: &Config, base: &base_model::BaseModel, num_labels: usize) -> Result<slora_model::Classifier> {
    if cfg.stage1.mask != StageOneMask::Random {
        return Err(BindingError::Invalid(format!(
            "stage1.mask: \"{}\" is not deployable (its mask round runs in-process only); use \"random\"",
            cfg.stage1.mask
        )));
    }
    let spec = fed::train_spec(cfg, Mode::Sparse(SparseSpec::new(cfg.stage1.density)), num_labels);
    Ok(fed::build_classifier(STAGE1, &base.config, &base.weights, &spec)?.0)
}

fn decompose_with(cfg: &Config, base: &base_model::BaseModel, stage1_model: &slora_model::Classifier, stage1: &State) -> Result<Decomposition> {
    let sparse = slora_pipeline::stages::stage1::sparse_update(stage1_model, stage1)?;
    Ok(slora_pipeline::stages::decompose::decompose(cfg, &base.weights, &sparse, || {})?)
}

/// SLoRA's switch as the `decompose` stage computes it: Stage 1's final global state (its sparse
/// ΔW values under the seeded masks, and the head) factored into Stage 2's init —
/// `<module>.lora_A.weight`, `<module>.lora_B.weight`, the corrected base `<module>.weight` (W0 + ΔW −
/// s·B·A) and the head — as `lora_init.safetensors` holds it.
pub fn decompose(cfg: &Config, num_labels: usize, stage1: &State) -> Result<State> {
    let base = base_model::load_base_model(cfg)?;
    Ok(decompose_with(cfg, &base, &stage1_model(cfg, &base, num_labels)?, stage1)?.lora_init)
}

/// The tensors of Stage 1's final global state that SLoRA's switch sends every client: the sparse
/// ΔW values (`<module>.sparse_delta`; the positions come from the mask seed).
pub fn switch_payload(stage1: &State) -> State {
    stage1.iter().filter(|(k, _)| k.ends_with(".sparse_delta")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// One data holder: the model of a method built from the config, as the pipeline builds it, and the
/// client's own shard (a client file of a partition artifact: `labels.json` beside it).
pub struct Client {
    learner: ClassifierLearner,
    shard: Shard,
    seed: u64,
    local_epochs: u32,
    batch_size: usize,
    /// DP-FedAvg's client half: clip what it sends (and under local DP noise it), as the
    /// in-process engine's clients do.
    privacy: Option<slora_federation::ClientDp>,
}

/// Accuracy and mean loss of a state on a shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Fraction of rows whose argmax is the label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Rows evaluated.
    pub rows: u64,
}

impl Client {
    /// Loads `config` (with `KEY=VALUE` overrides, as `pipeline --set`), the base model, and the shard.
    /// Stage 2 (`slora-stage2`) needs Stage 1's final global state: its sparse ΔW values (what the
    /// switch sends) and head; the client decomposes them as the server does.
    pub fn open(config: &Path, overrides: &[String], method_name: &str, shard: &Path, stage1: Option<&State>) -> Result<Self> {
        let cfg = load_config(config, overrides)?;
        let method = Method::parse(method_name)?;
        let labels_file = shard.parent().unwrap_or(Path::new(".")).join("labels.json");
        let labels = slora_data::LabelSet::read(&labels_file)?;
        let rows = slora_data::read_shard(shard)?;
        let (learner, _) = build_learner(&cfg, method, labels.num_labels, stage1)?;
        Ok(Self {
            learner,
            shard: Shard { input_ids: rows.input_ids, labels: rows.labels },
            seed: cfg.run.seed,
            local_epochs: cfg.federation.local_epochs as u32,
            batch_size: cfg.federation.batch_size,
            privacy: slora_pipeline::privacy::client_dp(&cfg),
        })
    }

    /// `state` evaluated on the shard at `path` (e.g. the partition's `test.parquet`), in the
    /// engine's batches (length-sorted, `max(batch_size, 64)` rows), so the numbers are the
    /// in-process run's.
    pub fn evaluate(&mut self, state: &State, path: &Path) -> Result<Evaluation> {
        use slora_federation::Learner;
        let rows = slora_data::read_shard(path)?;
        let shard = Shard { input_ids: rows.input_ids, labels: rows.labels };
        self.learner.set_trainable_state(state)?;
        let batches = slora_federation::length_sorted_batches(&shard, self.batch_size.max(64));
        let e = slora_federation::evaluate(&self.learner, &shard, &batches)?;
        Ok(Evaluation { accuracy: e.accuracy(), loss: e.mean_loss(), rows: e.rows() })
    }

    /// The trainable state (the model's initial one before any round: the server's round-0 state).
    pub fn state(&self) -> Result<State> {
        use slora_federation::Learner;
        Ok(self.learner.trainable_state()?)
    }

    /// Replaces the trainable state (names, shapes and dtype must match).
    pub fn set_state(&mut self, state: &State) -> Result<()> {
        use slora_federation::Learner;
        Ok(self.learner.set_trainable_state(state)?)
    }

    /// Rows in the shard (the client's FedAvg weight).
    pub fn rows(&self) -> usize {
        self.shard.len()
    }

    /// Trains from `global` for `round` as client `client` (its partition id): the update it sends
    /// and each step's `(mean loss, rows)`.
    pub fn fit(&mut self, global: &State, round: u32, client: usize) -> Result<(State, Vec<(f64, usize)>)> {
        let local = LocalRound { seed: self.seed, round, client, local_epochs: self.local_epochs, batch_size: self.batch_size };
        let update = local_update(&mut self.learner, &self.shard, global, &local, || {})?;
        let sent = match &self.privacy {
            Some(dp) => slora_federation::privacy::privatize_upload(&update.state, global, dp, self.seed, round, client)?,
            None => update.state,
        };
        Ok((sent, update.step_losses))
    }
}

/// The server of one method's run in a deployment: the pipeline's [`FedAvgServer`] (seeded sampling,
/// checked replies averaged in the sampled order, evaluation on the test rows, the byte accounting,
/// `metrics.parquet`, round checkpoints) around the method's model. It needs the partition's
/// `labels.json` and `test.parquet`, never a client's shard.
pub struct Server {
    learner: ClassifierLearner,
    run: FedAvgServer<'static>,
    switch: Option<Switch>,
    /// Each client's registered training rows (the partition's).
    rows: Vec<u64>,
}

/// A reply's fields in the clear under secure aggregation: everything but its update, which
/// reaches the server only inside the aggregate ([`Server::accept_aggregate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyFields {
    /// The replying client (partition id).
    pub client: usize,
    /// The round it says it trained.
    pub round: u32,
    /// The digest of the state it says it trained from.
    pub base_digest: String,
    /// The rows it says it trained on.
    pub samples: u64,
    /// Each local step's `(mean loss, rows)`.
    pub step_losses: Vec<(f64, usize)>,
    /// Seconds it says it trained.
    pub train_seconds: f64,
}

impl Server {
    /// A run of `method_name` over `num_clients` clients (default `partition.clients`), evaluated on
    /// `data_dir`'s test rows, checkpointed in `checkpoint_dir` (and resumed from it) when given.
    /// Stage 2 continues `stage1`'s run (its round numbers, byte totals and clock) from its final
    /// state, which this server decomposes.
    pub fn open(
        config: &Path,
        overrides: &[String],
        method_name: &str,
        data_dir: &Path,
        num_clients: Option<usize>,
        checkpoint_dir: Option<&Path>,
        stage1: Option<&Server>,
    ) -> Result<Self> {
        let cfg = load_config(config, overrides)?;
        if !cfg.privacy.is_off() && !cfg.privacy.secret_noise {
            tracing::warn!("privacy: the noise is drawn from the run seed, which anyone who holds the run config can regenerate and subtract; set privacy.secret_noise = true in a real deployment");
        }
        if !cfg.federation.client_ranks.is_empty() {
            // The ServerApp sends one global state to every node: per-rank downloads are not wired.
            return Err(BindingError::Invalid(format!(
                "federation.client_ranks = {:?}: the deployment sends every client the same global state; heterogeneous client ranks run in process (`pipeline`) only",
                cfg.federation.client_ranks
            )));
        }
        let method = Method::parse(method_name)?;
        let labels = slora_data::LabelSet::read(&data_dir.join("labels.json"))?;
        let (test, full_test) = fed::load_test(&cfg, data_dir)?;
        let stage1_state = stage1.map(|s| s.global());
        let (mut learner, switch) = build_learner(&cfg, method, labels.num_labels, stage1_state)?;
        let name = method.name();
        let mut fedcfg = match method {
            Method::Baseline(b) => fed::with_aggregation(fed::fedavg_config(&cfg, &name, cfg.stage1.rounds + cfg.stage2.rounds, 0, 0), &cfg, b),
            Method::Frozen => fed::fedavg_config(&cfg, &name, cfg.stage1.rounds + cfg.stage2.rounds, 0, 0),
            Method::Stage1 => {
                let mut f = fed::fedavg_config(&cfg, &name, cfg.stage1.rounds, 0, 0);
                f.final_full_test = false;
                f
            }
            Method::Stage2 => {
                let last = stage1.and_then(|s| s.metrics().last()).ok_or_else(|| BindingError::Invalid(format!("{STAGE2} needs Stage 1's server")))?;
                fed::fedavg_config(&cfg, &name, cfg.stage2.rounds, 0, 0).continue_after(last)
            }
        };
        if let Some(s) = switch {
            fedcfg.switch_bytes_per_client = s.bytes_per_client;
            fedcfg.setup_server_seconds = s.svd_seconds;
        }
        let store = match checkpoint_dir {
            // The run's identity: the method and every setting that shapes it (a changed config
            // starts afresh instead of resuming another run's rounds).
            Some(dir) => {
                let settings = serde_json::to_string(&cfg).map_err(|e| BindingError::Invalid(format!("config: {e}")))?;
                let fingerprint = format!("deployment:{name}:{}", slora_pipeline::hashing::sha256_hex(settings.as_bytes()));
                Some(slora_federation::CheckpointStore::open(&dir.join(&name), fingerprint)?)
            }
            None => None,
        };
        let clients = num_clients.unwrap_or(cfg.partition.clients);
        let mut run = FedAvgServer::start(&mut learner, clients, Cow::Owned(test), full_test.map(Cow::Owned), &fedcfg, store.as_ref())?;
        // The server partitioned the data, so it knows each shard's rows: a reply's weight is its
        // client's registered count, whatever the client claims (docs/flower.md).
        let partition = slora_pipeline::store::Artifact::load(data_dir)?;
        let rows = <slora_pipeline::stages::summaries::PartitionSummary as slora_pipeline::stages::summaries::StageSummary>::of(&partition)?.rows_per_client;
        if rows.len() < clients {
            return Err(BindingError::Invalid(format!(
                "num_clients = {clients}, but the partition in {} has {} clients: the server weights each reply by its client's registered rows",
                data_dir.display(),
                rows.len()
            )));
        }
        let rows: Vec<u64> = rows[..clients].iter().map(|&r| r as u64).collect();
        run.register_rows(rows.clone())?;
        // Every method a deployment runs moves what it uploads on every local step.
        run.refuse_unchanged_updates(true);
        Ok(Self { learner, run, switch, rows })
    }

    /// Each client's registered training rows (its FedAvg weight).
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Whether this run can take its rounds as secure aggregates ([`Self::accept_aggregate`]), or
    /// why not, by key: the server sees only the weighted mean of the uploads, so a method whose
    /// server needs each upload (FedEx-LoRA's and FlexLoRA's products, LoRA-A²'s selected
    /// components) and central DP (the server clips each reply) are refused.
    pub fn check_secure_aggregation(&self) -> Result<()> {
        let cfg = self.run.config();
        if cfg.privacy.is_some_and(|dp| dp.noise_at == slora_federation::NoiseAt::Server) {
            return Err(BindingError::Invalid(
                "privacy.mode = \"central\": the server clips each reply, but under secure aggregation (run-config `secagg`) it sees only their sum; \
                 use privacy.mode = \"local\" (each client clips and noises its update before it is masked) or secagg = false"
                    .into(),
            ));
        }
        if cfg.aggregation != slora_federation::Aggregation::Mean {
            return Err(BindingError::Invalid(format!(
                "methods: `{}` under secure aggregation (run-config `secagg`): its server needs each reply's upload ({:?}), not only their mean; secagg runs fft, lora, ffa-lora, sft and slora",
                cfg.method, cfg.aggregation
            )));
        }
        Ok(())
    }

    /// Adds a round's replies as secure aggregation delivers them: their fields in the clear and
    /// `mean`, the weighted mean of their uploads (all the server sees of them), weighted by
    /// `total_weight` rows in all. Every reply is screened with `mean` as its update; if any is
    /// refused, all are (see [`FedAvgServer::accept_aggregate`]).
    pub fn accept_aggregate(&mut self, replies: &[ReplyFields], mean: &State, total_weight: u64) -> Result<()> {
        self.check_secure_aggregation()?;
        let replies: Vec<slora_federation::Reply<'_>> = replies
            .iter()
            .map(|r| slora_federation::Reply {
                client: r.client,
                round: r.round,
                base_digest: &r.base_digest,
                update: mean,
                samples: r.samples,
                step_losses: &r.step_losses,
                train_seconds: r.train_seconds,
            })
            .collect();
        Ok(self.run.accept_aggregate(&self.learner, &replies, mean, total_weight)?)
    }

    /// The global state (the next round's start; the final state once every round ran).
    pub fn global(&self) -> &State {
        self.run.global()
    }

    /// The metrics rows so far, round 0 first.
    pub fn metrics(&self) -> &[RoundMetrics] {
        self.run.metrics()
    }

    /// The settings of this run.
    pub fn config(&self) -> &slora_federation::FedAvgConfig {
        self.run.config()
    }

    /// The local round this run resumed after, if it resumed from a checkpoint.
    pub fn resumed_from(&self) -> Option<u32> {
        self.run.resumed_from()
    }

    /// Local rounds completed so far.
    pub fn completed_rounds(&self) -> u32 {
        self.run.completed_rounds()
    }

    /// Clients in the federation.
    pub fn num_clients(&self) -> usize {
        self.run.num_clients()
    }

    /// SLoRA's switch, for a Stage-2 server.
    pub fn switch(&self) -> Option<Switch> {
        self.switch
    }

    /// Opens the next round, or `None` when every round has run.
    pub fn begin_round(&mut self) -> Option<RoundPlan> {
        self.run.begin_round()
    }

    /// Adds a client's reply to the open round, or says why it is refused (and leaves the round as
    /// it was): see [`FedAvgServer::accept`] for every check.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(&mut self, client: usize, round: u32, base_digest: &str, update: &State, samples: u64, step_losses: &[(f64, usize)], train_seconds: f64) -> Result<()> {
        let reply = slora_federation::Reply { client, round, base_digest, update, samples, step_losses, train_seconds };
        Ok(self.run.accept(&self.learner, &reply)?)
    }

    /// The replies refused so far, with their reasons.
    pub fn refusals(&self) -> &[slora_federation::Refusal] {
        self.run.refusals()
    }

    /// Refuses later replies farther than `bound` (L2) from their download.
    pub fn set_max_update_norm(&mut self, bound: Option<f64>) {
        self.run.set_max_update_norm(bound)
    }

    /// The L2 distance of `update` from what `client` downloaded this round.
    pub fn update_norm(&self, client: usize, update: &State) -> Result<f64> {
        Ok(self.run.update_norm(client, update)?)
    }

    /// Closes the open round: averages, evaluates, checkpoints; its metrics row.
    pub fn finish_round(&mut self) -> Result<RoundMetrics> {
        Ok(self.run.finish_round(&mut self.learner)?.clone())
    }

    /// Trainable parameters of the method's model.
    pub fn trainable_params(&self) -> usize {
        self.learner.model().num_trainable_params()
    }

    /// The method's learning rates: backbone (or adapter) and head.
    pub fn learning_rates(&self) -> (f64, f64) {
        (self.learner.learning_rate(), self.learner.head_learning_rate())
    }

    /// Writes `metrics.parquet` (the pipeline's schema) with `rows`.
    pub fn write_metrics(path: &Path, rows: &[RoundMetrics]) -> Result<()> {
        Ok(slora_metrics::write_parquet(path, rows)?)
    }
}

/// The clients of `round`, drawn as the in-process engine draws them.
pub fn sample_clients(num_clients: usize, per_round: usize, seed: u64, round: u32) -> Result<Vec<usize>> {
    if per_round == 0 || per_round > num_clients {
        return Err(BindingError::Invalid(format!("clients_per_round: {per_round} not in 1..={num_clients}")));
    }
    Ok(slora_federation::sampling::sample_clients(num_clients, per_round, seed, round))
}

/// The sample-weighted average of `updates`, added in the order given (the sampled order: the same
/// sum, bit for bit, as the in-process engine's).
pub fn fedavg(updates: &[(State, u64)]) -> Result<State> {
    let mut sum = WeightedAverage::new();
    for (state, samples) in updates {
        sum.add(state, *samples)?;
    }
    Ok(sum.finish()?)
}

/// The pipeline's report (`index.html`, `report.md`, `figures/`, `summary.json`) of a deployment's
/// run: `metrics_file` (written by [`Server::write_metrics`]) with what `servers` know of their
/// methods, the partition folder's counts, and `setup` facts about the deployment; into `out`.
pub fn render_report(
    config: &Path,
    overrides: &[String],
    partition_dir: &Path,
    metrics_file: &Path,
    servers: &[&Server],
    setup: Vec<(String, String)>,
    out: &Path,
) -> Result<()> {
    use slora_pipeline::stages::report::{render_external, ExternalRun};
    let cfg = load_config(config, overrides)?;
    let mut run = ExternalRun { setup, ..Default::default() };
    for server in servers {
        let method = server.config().method.clone();
        run.trainable_params.insert(method.clone(), server.trainable_params() as u64);
        let (lr, head_lr) = server.learning_rates();
        let rates = slora_report::MethodRates { lr: Some(lr), head_lr: Some(head_lr) };
        match method.as_str() {
            STAGE1 => {}
            STAGE2 => {
                run.rates.insert("slora".into(), rates);
            }
            _ => {
                run.rates.insert(method, rates);
            }
        }
        if let Some(switch) = server.switch() {
            run.switch_cost = Some(serde_json::json!({
                "charged_bytes_per_client": switch.bytes_per_client,
                "charged": "the sparse ΔW values (nnz f32) sent once to every client, which re-runs the deterministic SVD",
                "clients": server.num_clients(),
            }));
        }
    }
    Ok(render_external(&cfg, partition_dir, metrics_file, &run, out)?)
}
