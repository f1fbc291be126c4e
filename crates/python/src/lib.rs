//! The Rust core as a deployed federation needs it (issue 12): one client's local round on its own
//! shard, and the server's seeded sampling and weighted average. A Flower ClientApp and ServerApp
//! call these through the `slora` Python module (`--features python`, built by maturin); the maths
//! is the in-process engine's own (`slora_federation::local_update`, `sample_clients`,
//! `WeightedAverage`), so a deployment computes what `pipeline` computes, round by round.
//!
//! Without the `python` feature this is a plain Rust library: the bindings are a thin layer over it.

#![warn(missing_docs)]

use std::path::Path;

use slora_federation::{local_update, ClassifierLearner, LocalRound, Shard, State, WeightedAverage};
use slora_pipeline::config::{parse_set, BaselineMethod};
use slora_pipeline::stages::{base_model, federated as fed};
use slora_pipeline::Config;

#[cfg(feature = "python")]
mod python;

/// What the bindings report: the core's errors, one line each.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// Config, model or stage error.
    #[error(transparent)]
    Pipeline(#[from] slora_pipeline::PipelineError),
    /// Training or aggregation error.
    #[error(transparent)]
    Federation(#[from] slora_federation::FederationError),
    /// Shard or label file error.
    #[error(transparent)]
    Data(#[from] slora_data::DataError),
    /// A bad argument, named.
    #[error("{0}")]
    Invalid(String),
}

/// Results of this crate.
pub type Result<T, E = BindingError> = std::result::Result<T, E>;

/// A baseline method by its config name (`fft`, `lora`, `ffa-lora`, `sft`), parsed as the config
/// parses `baselines.methods`.
pub fn method(name: &str) -> Result<BaselineMethod> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| BindingError::Invalid(format!("method: unknown `{name}` (fft, lora, ffa-lora, sft)")))
}

/// One data holder: the model of a method built from the config, as the pipeline builds it, and the
/// client's own shard (a client file of a partition artifact: `labels.json` beside it).
pub struct Client {
    learner: ClassifierLearner,
    shard: Shard,
    seed: u64,
    local_epochs: u32,
    batch_size: usize,
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
    pub fn open(config: &Path, overrides: &[String], method_name: &str, shard: &Path) -> Result<Self> {
        let overrides = overrides.iter().map(|s| parse_set(s)).collect::<Result<Vec<_>, _>>()?;
        let cfg = Config::load(Some(config), &overrides)?;
        let method = method(method_name)?;
        let labels_file = shard.parent().unwrap_or(Path::new(".")).join("labels.json");
        let labels = slora_data::LabelSet::read(&labels_file)?;
        let rows = slora_data::read_shard(shard)?;
        let base = base_model::load_base_model(&cfg)?;
        let spec = fed::train_spec(&cfg, fed::baseline_mode(&cfg, method), labels.num_labels);
        let (model, _) = fed::build_classifier(method_name, &base.config, &base.weights, &spec)?;
        let lr = match cfg.baselines.lr(method) {
            slora_pipeline::config::LearningRate::Value(v) => v,
            slora_pipeline::config::LearningRate::Tuned => {
                return Err(BindingError::Invalid(format!("baselines.{}_lr: \"tuned\" needs `pipeline tune` first; give a number", method_name.replace('-', "_"))))
            }
        };
        let learner = ClassifierLearner::new(model, fed::optim_settings(&cfg, lr));
        Ok(Self {
            learner,
            shard: Shard { input_ids: rows.input_ids, labels: rows.labels },
            seed: cfg.run.seed,
            local_epochs: cfg.federation.local_epochs as u32,
            batch_size: cfg.federation.batch_size,
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

    /// Rows in the shard (the client's FedAvg weight).
    pub fn rows(&self) -> usize {
        self.shard.len()
    }

    /// Trains from `global` for `round` as client `client` (its partition id): the update it sends
    /// and each step's `(mean loss, rows)`.
    pub fn fit(&mut self, global: &State, round: u32, client: usize) -> Result<(State, Vec<(f64, usize)>)> {
        let local = LocalRound { seed: self.seed, round, client, local_epochs: self.local_epochs, batch_size: self.batch_size };
        let update = local_update(&mut self.learner, &self.shard, global, &local, || {})?;
        Ok((update.state, update.step_losses))
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
