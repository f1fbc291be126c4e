//! `pipeline.toml`: typed sections with defaults, loading with `--set` overrides, validation.
//!
//! Parsing is pure ([`Config::from_toml_str`]); [`Config::load`] reads the file, applies `--set`
//! overrides (each parsed with the type of its key) and resolves relative paths (values from the file
//! against the file's folder, values from `--set` against the current directory). [`Config::validate`]
//! checks ranges and names the key, the value and what is allowed.

mod load;
mod validate;

pub use load::{known_keys, parse_set, ConfigOverride};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use crate::error::PipelineError;

/// The whole configuration. Every section and key is optional; see `pipeline.toml` for the meaning
/// of each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[run]`.
    pub run: RunConfig,
    /// `[data]`.
    pub data: DataConfig,
    /// `[model]`.
    pub model: ModelConfig,
    /// `[partition]`.
    pub partition: PartitionConfig,
    /// `[federation]`.
    pub federation: FederationConfig,
    /// `[optim]`.
    pub optim: OptimConfig,
    /// `[adapter]`.
    pub adapter: AdapterConfig,
    /// `[lora]`.
    pub lora: LoraConfig,
    /// `[stage1]`.
    pub stage1: Stage1Config,
    /// `[decompose]`.
    pub decompose: DecomposeConfig,
    /// `[stage2]`.
    pub stage2: Stage2Config,
    /// `[baselines]`.
    pub baselines: BaselinesConfig,
    /// `[tune]`.
    pub tune: TuneConfig,
    /// `[report]`.
    pub report: ReportConfig,
    /// `[privacy]`: client-level differential privacy (off by default, and then left out of the
    /// serialised config, so that no cache key changes).
    #[serde(skip_serializing_if = "PrivacyConfig::is_off")]
    pub privacy: PrivacyConfig,
    /// The folder relative paths in the file were resolved against (the config file's folder, or the
    /// current directory without a file). Not a config key.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file read, if any. Not a config key.
    #[serde(skip)]
    pub config_path: Option<PathBuf>,
    /// The learning-rate keys that were `"tuned"` and now hold the tune stage's choice. Not a config key.
    #[serde(skip)]
    pub tuned_from: Vec<String>,
    /// The partition seed before [`Config::for_seed`] mixed a replicate seed into it, so a
    /// replicate's replicate is the same replicate. Not a config key.
    #[serde(skip)]
    pub partition_seed_base: Option<u64>,
}

/// `[run]`: experiment name, seed, threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Experiment name; the report goes to `<report.dir>/<name>/`.
    pub name: String,
    /// Seed for head init, masks, client sampling, shuffling, dropout.
    pub seed: u64,
    /// Compute threads (not part of any cache key).
    pub threads: usize,
    /// Replicates: every method runs once per seed (head init, masks, client sampling, data order,
    /// dropout). Empty = `[seed]`.
    pub seeds: Vec<u64>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { name: "news20-dirichlet0.1".into(), seed: 42, threads: 2, seeds: Vec::new() }
    }
}

impl RunConfig {
    /// The seeds the run replicates over (`seeds`, or `[seed]` when empty).
    pub fn replicate_seeds(&self) -> Vec<u64> {
        if self.seeds.is_empty() {
            vec![self.seed]
        } else {
            self.seeds.clone()
        }
    }
}

/// A learning rate: a number, or `"tuned"` (the rate `pipeline tune` selected for the method).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LearningRate {
    /// This rate.
    Value(f64),
    /// The tune stage's choice; resolved to a number before any stage is keyed.
    Tuned,
}

impl LearningRate {
    /// The rate; `"tuned"` must have been resolved ([`Config::resolve_tuned`]) before.
    pub fn value(&self) -> f64 {
        match self {
            LearningRate::Value(v) => *v,
            LearningRate::Tuned => panic!("a \"tuned\" learning rate was used before `pipeline tune` resolved it"),
        }
    }

    /// `baselines.ffa_lora_lr`'s default: B alone moves the update about half as fast as A and B
    /// together, so FFA-LoRA usually wants a larger rate than LoRA.
    pub const FFA_DEFAULT: LearningRate = LearningRate::Value(1e-3);

    /// Whether this is [`Self::FFA_DEFAULT`] (then it stays out of the keys).
    pub fn is_ffa_default(&self) -> bool {
        *self == Self::FFA_DEFAULT
    }

    /// `baselines.fedex_lora_lr`'s default: LoRA's (FedEx-LoRA trains exactly what LoRA trains).
    pub const FEDEX_DEFAULT: LearningRate = LearningRate::Value(1e-3);

    /// Whether this is [`Self::FEDEX_DEFAULT`] (then it stays out of the keys).
    pub fn is_fedex_default(&self) -> bool {
        *self == Self::FEDEX_DEFAULT
    }

    /// `baselines.flexlora_lr`'s default: LoRA's.
    pub const FLEXLORA_DEFAULT: LearningRate = LearningRate::Value(1e-3);

    /// Whether this is [`Self::FLEXLORA_DEFAULT`] (then it stays out of the keys).
    pub fn is_flexlora_default(&self) -> bool {
        *self == Self::FLEXLORA_DEFAULT
    }

    /// `baselines.fedsa_lora_lr`'s default: LoRA's.
    pub const FEDSA_DEFAULT: LearningRate = LearningRate::Value(1e-3);

    /// Whether this is [`Self::FEDSA_DEFAULT`] (then it stays out of the keys).
    pub fn is_fedsa_default(&self) -> bool {
        *self == Self::FEDSA_DEFAULT
    }

    /// `baselines.lora_a2_lr`'s default: LoRA's.
    pub const LORA_A2_DEFAULT: LearningRate = LearningRate::Value(1e-3);

    /// Whether this is [`Self::LORA_A2_DEFAULT`] (then it stays out of the keys).
    pub fn is_lora_a2_default(&self) -> bool {
        *self == Self::LORA_A2_DEFAULT
    }
}

impl Serialize for LearningRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LearningRate::Value(v) => s.serialize_f64(*v),
            LearningRate::Tuned => s.serialize_str("tuned"),
        }
    }
}

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(LearningRate::Value(v)),
            Raw::Text(t) if t == "tuned" => Ok(LearningRate::Tuned),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("a learning rate is a number or \"tuned\" (got {t:?})"))),
        }
    }
}

impl std::fmt::Display for LearningRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LearningRate::Value(v) => write!(f, "{v}"),
            LearningRate::Tuned => f.write_str("tuned"),
        }
    }
}

/// `[data]`: where the text-classification rows come from and how they are tokenized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A local .parquet / .jsonl / .jsonl.gz / .csv file (resolved to an absolute path), or a hub
    /// dataset id. Required (no default: the product names no data of its own).
    pub source: String,
    /// File inside a hub dataset repo (hub ids only).
    pub hub_file: String,
    /// File inside the hub dataset repo `test_source` (default: `hub_file`), e.g. `test.jsonl` next to
    /// `train.jsonl` in one repo.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub test_hub_file: String,
    /// Hub revision (hub ids only).
    pub revision: String,
    /// Optional second source holding the test rows.
    pub test_source: String,
    /// Column holding the split name (used when `test_source` is empty).
    pub split_column: String,
    /// Split value meaning train.
    pub train_split: String,
    /// Split value meaning test.
    pub test_split: String,
    /// In (0, 1): ignore `split_column` and hold out this fraction of the rows as the test set
    /// (seeded by `partition.seed`, stratified by label); 0 = use `split_column` / `test_source`.
    pub test_fraction: f64,
    /// Text column; `a+b` joins columns with ". ".
    pub text_column: String,
    /// Label column (integers, or strings mapped to ids in sorted order).
    pub label_column: String,
    /// Tokenizer truncation length (special tokens included).
    pub max_len: usize,
    /// Seeded stratified subsample of the train rows (0 = all).
    pub max_train: usize,
    /// Seeded stratified subsample of the test rows (0 = all).
    pub max_test: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: String::new(),
            hub_file: String::new(),
            test_hub_file: String::new(),
            revision: "main".into(),
            test_source: String::new(),
            split_column: "split".into(),
            train_split: "train".into(),
            test_split: "test".into(),
            test_fraction: 0.0,
            text_column: "text_clean".into(),
            label_column: "label".into(),
            max_len: 128,
            max_train: 0,
            max_test: 0,
        }
    }
}

/// `[model]`: the encoder checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A local Hugging Face-layout folder (resolved to an absolute path) or a hub id. Required.
    pub source: String,
    /// Hub revision (hub ids only).
    pub revision: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { source: String::new(), revision: "main".into() }
    }
}

/// How train rows are split among clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionScheme {
    /// Shuffle, then equal contiguous shards.
    Iid,
    /// Per-label Dirichlet(alpha) proportions (label skew).
    Dirichlet,
    /// Per-client Dirichlet(alpha) label mixes, equal client sizes (`dirichlet-client`): every client
    /// has rows at any alpha, e.g. 100 clients at alpha = 0.01.
    #[serde(rename = "dirichlet-client")]
    DirichletClient,
    /// Each client holds exactly `classes_per_client` labels.
    Pathological,
    /// One client per distinct value of `id_column` (a writer), at most `max_clients`.
    Natural,
}

/// `[partition]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionConfig {
    /// Number of clients (not read by `natural`: there the data decide).
    pub clients: usize,
    /// iid | dirichlet | pathological | natural.
    pub scheme: PartitionScheme,
    /// Dirichlet concentration (> 0).
    pub alpha: f64,
    /// Pathological: labels per client.
    pub classes_per_client: usize,
    /// Dirichlet: minimum rows per client.
    pub min_client_size: usize,
    /// Seed of the partition (and of the data subsampling).
    pub seed: u64,
    /// Replicates draw their own partition (seed mixed with the run seed) instead of sharing one.
    pub vary_with_seed: bool,
    /// In [0, 1): each client's shard gives this fraction of its rows (stratified by label, seeded) to
    /// a validation set that `pipeline tune` selects on; those rows never train. 0 = no validation set.
    pub validation_fraction: f64,
    /// Natural: the column naming each row's writer (e.g. News Category's `authors`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id_column: String,
    /// Natural: at most this many clients; the smallest ids are merged, whole, into the rest
    /// (seeded). 0 = one client per id.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_clients: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            clients: 20,
            scheme: PartitionScheme::Dirichlet,
            alpha: 0.1,
            classes_per_client: 2,
            min_client_size: 10,
            seed: 42,
            vary_with_seed: false,
            validation_fraction: 0.0,
            id_column: String::new(),
            max_clients: 0,
        }
    }
}

/// `[federation]`: FedAvg rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Clients sampled per round.
    pub clients_per_round: usize,
    /// Local epochs per round.
    pub local_epochs: usize,
    /// Local batch size.
    pub batch_size: usize,
    /// Evaluate every this many rounds (and after the last).
    pub eval_every: usize,
    /// Evaluate on at most this many test rows (0 = all).
    pub eval_max_rows: usize,
    /// Measure the last this many rounds on every test row (1: the last only). Left out of the
    /// cache keys at 1, so runs keyed before it existed keep their keys.
    #[serde(skip_serializing_if = "is_one")]
    pub full_test_last_k: usize,
    /// Each client's LoRA rank, cycled over clients (client c trains `client_ranks[c % len]`);
    /// the largest is `lora.r`, the global adapter's. Empty (the default, left out of the keys):
    /// every client trains `lora.r`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_ranks: Vec<usize>,
    /// Refuse a client update whose L2 distance from the state it downloaded exceeds this (0, the
    /// default: no bound; left out of the keys).
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub max_update_norm: f64,
    /// Record what the server receives in this many seeded rounds of every run (each sampled
    /// client's update, and the state the round sent), for `pipeline audit` (0, the default: off;
    /// left out of the keys).
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub record_uploads: usize,
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self { clients_per_round: 4, local_epochs: 1, batch_size: 32, eval_every: 1, eval_max_rows: 0, full_test_last_k: 1, client_ranks: Vec::new(), max_update_norm: 0.0, record_uploads: 0 }
    }
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Linear warm-up, then linear decay to 0 over one client's local steps.
    Linear,
}

/// The linear layers' GEMM arithmetic (`optim.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    Fp32,
    /// bf16 GEMM operands with f32 sums (mixed precision); everything else f32.
    Bf16,
}

impl Precision {
    /// Whether this is the default (kept out of serialisations, so that fp32 configs keep their
    /// cache keys).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }
}

impl From<Precision> for slora_model::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp32 => slora_model::Precision::Fp32,
            Precision::Bf16 => slora_model::Precision::Bf16,
        }
    }
}

/// `[optim]`: AdamW settings shared by every method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// constant | linear.
    pub schedule: Schedule,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Dropout during training (< 0: the model config's value).
    pub dropout: f64,
    /// Learning rate of the head (`adapter.modules_to_save`: pooler and classifier, freshly
    /// initialised) in every method, FFT included: its own parameter group, as peft trains
    /// `modules_to_save` at the task rate. 0 = each method's own rate.
    pub head_lr: f64,
    /// `fp32` or `bf16` (mixed precision; f32 where the CPU has no bf16 kernel).
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// LoRA+ (Hayou et al., 2024): B's rate is this multiple of A's (LoRA-A²'s protocol uses 5).
    /// 1 = one rate for both; left out of the keys at 1.
    #[serde(skip_serializing_if = "is_unit_ratio")]
    pub lora_b_lr_ratio: f64,
}

fn is_unit_ratio(v: &f64) -> bool {
    *v == 1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            dropout: -1.0,
            head_lr: 1e-3,
            precision: Precision::Fp32,
            lora_b_lr_ratio: 1.0,
        }
    }
}

/// `[adapter]`: which modules are adapted and which always train densely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// peft `target_modules`: exact name or `.`+name suffix match. Empty (the default) = the
    /// architecture's attention and feed-forward linears (peft's per-model mapping).
    pub target_modules: Vec<String>,
    /// peft `modules_to_save`. Empty (the default) = the architecture's pooler and classifier.
    pub modules_to_save: Vec<String>,
    /// Keep the head frozen at its seeded initialisation in every parameter-efficient method (LoRA,
    /// FFA-LoRA, FedEx-LoRA, SFT, SLoRA), as FFA-LoRA and LoRA-A² do: nothing of it trains or is
    /// uploaded. FFT trains every weight regardless. Left out of the keys when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub freeze_head: bool,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self { target_modules: Vec::new(), modules_to_save: Vec::new(), freeze_head: false }
    }
}

impl AdapterConfig {
    /// The model crate's target selection: the listed names, or the architecture's defaults.
    pub fn targets(&self) -> slora_model::TargetModules {
        if self.target_modules.is_empty() {
            slora_model::TargetModules::Default
        } else {
            slora_model::TargetModules::Names(self.target_modules.clone())
        }
    }

    /// `modules_to_save`, or every architecture's head names when unset (only the model's own match).
    pub fn modules_to_save(&self) -> Vec<String> {
        if self.modules_to_save.is_empty() {
            slora_model::default_modules_to_save()
        } else {
            self.modules_to_save.clone()
        }
    }
}

/// `[stage1]`: federated sparse fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage1Config {
    /// Rounds.
    pub rounds: usize,
    /// Mask density per adapted matrix, in (0, 1].
    pub density: f64,
    /// Learning rate (`"tuned"`: SFT's tuned rate, since Stage 1 is sparse fine-tuning).
    pub lr: LearningRate,
    /// Where the mask comes from: a seed (the paper), or the clients' data in a mask round.
    #[serde(skip_serializing_if = "StageOneMask::is_random")]
    pub mask: StageOneMask,
    /// `federated-importance`: batches each scoring client scores (of `federation.batch_size` rows).
    #[serde(skip_serializing_if = "is_default_mask_batches")]
    pub mask_batches: usize,
}

/// Default of `stage1.mask_batches`.
pub const DEFAULT_MASK_BATCHES: usize = 4;

fn is_default_mask_batches(n: &usize) -> bool {
    *n == DEFAULT_MASK_BATCHES
}

impl Default for Stage1Config {
    fn default() -> Self {
        Self {
            rounds: 3,
            density: 0.01,
            lr: LearningRate::Value(1e-3),
            mask: StageOneMask::Random,
            mask_batches: DEFAULT_MASK_BATCHES,
        }
    }
}

/// `stage1.mask`: how the Stage-1 (and SFT) mask is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageOneMask {
    /// Drawn from the run seed per matrix (SLoRA's choice): no communication.
    #[serde(rename = "random")]
    Random,
    /// Chosen by the clients' importance scores in a mask round (see `slora_federation::mask`).
    #[serde(rename = "federated-importance")]
    FederatedImportance,
}

impl StageOneMask {
    /// Whether this is the default (kept out of cache keys).
    pub fn is_random(&self) -> bool {
        *self == StageOneMask::Random
    }
}

/// LoRA initialisation from the stage-1 update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecomposeInit {
    /// Truncated SVD split symmetrically between A and B.
    #[serde(rename = "svd")]
    Svd,
    /// Truncated SVD with the singular values in B.
    #[serde(rename = "svd-b")]
    SvdB,
    /// Random A, zero B (ignores the stage-1 update).
    #[serde(rename = "random")]
    Random,
}

/// `[lora]`: the LoRA adapter of every LoRA method: SLoRA's decomposition and Stage 2, and the LoRA
/// and FFA-LoRA baselines (peft's `r`, `lora_alpha`, `lora_dropout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scaling numerator (scaling = lora_alpha / r).
    pub lora_alpha: f64,
    /// Dropout on the LoRA input while training, in [0, 1).
    pub lora_dropout: f64,
    /// LoRA-A²'s upload budget: rank components a client sends per module on average, chosen over
    /// the whole model by importance (1 ..= r; 0 = r / 2, at least 1). Left out of the keys at 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub a2_rank_budget: usize,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { r: 8, lora_alpha: 16.0, lora_dropout: 0.0, a2_rank_budget: 0 }
    }
}

impl LoraConfig {
    /// LoRA-A²'s budget as it applies: the set value, or `r / 2` (at least 1).
    pub fn a2_budget(&self) -> usize {
        if self.a2_rank_budget == 0 {
            (self.r / 2).max(1)
        } else {
            self.a2_rank_budget
        }
    }
}

/// `[decompose]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecomposeConfig {
    /// Deprecated: `lora.r` (read, with a warning, into it).
    #[serde(skip_serializing)]
    pub rank: Option<usize>,
    /// Deprecated: `lora.lora_alpha`.
    #[serde(skip_serializing)]
    pub lora_alpha: Option<f64>,
    /// svd | svd-b | random.
    pub init: DecomposeInit,
}

impl Default for DecomposeConfig {
    fn default() -> Self {
        Self { rank: None, lora_alpha: None, init: DecomposeInit::Svd }
    }
}

/// `[stage2]`: federated LoRA from the decomposed init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage2Config {
    /// Rounds.
    pub rounds: usize,
    /// Learning rate (`"tuned"`: LoRA's tuned rate, since Stage 2 is LoRA).
    pub lr: LearningRate,
    /// Deprecated: `lora.lora_dropout`.
    #[serde(skip_serializing)]
    pub lora_dropout: Option<f64>,
    /// FFA-LoRA in Stage 2: keep the SVD-initialised A frozen and train (and upload) only B.
    /// (Left out of the keys when false, so runs from before the option keep their cache.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub freeze_a: bool,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Self { rounds: 3, lr: LearningRate::Value(1e-3), lora_dropout: None, freeze_a: false }
    }
}

/// A baseline method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineMethod {
    /// Full fine-tuning.
    Fft,
    /// LoRA from random A, zero B.
    Lora,
    /// Sparse fine-tuning alone.
    Sft,
    /// FFA-LoRA: LoRA with A frozen at its random init; only B trains and is averaged.
    #[serde(rename = "ffa-lora")]
    FfaLora,
    /// FedEx-LoRA (Singhal et al., 2024): LoRA whose server folds the aggregation residual
    /// `mean(B·A) − mean(B)·mean(A)` into the frozen base, so the global model is the clients' average.
    #[serde(rename = "fedex-lora")]
    FedexLora,
    /// LoRA-A² (Koo et al., 2024): alternating freeze (B trains in odd rounds, A in even) and
    /// adaptive rank selection of the upload (`lora.a2_rank_budget`).
    #[serde(rename = "lora-a2")]
    LoraA2,
    /// FlexLoRA (Bai et al., 2024): the server averages the clients' full-size products Bᵢ·Aᵢ and
    /// sends the truncated SVD's top-r factors back.
    #[serde(rename = "flexlora")]
    FlexLora,
    /// FedSA-LoRA (Guo et al., ICLR 2025): only A is uploaded and averaged; B and the head stay
    /// on each client (a personalised method, evaluated both ways).
    #[serde(rename = "fedsa-lora")]
    FedsaLora,
}

/// `[baselines]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselinesConfig {
    /// Methods to run.
    pub methods: Vec<BaselineMethod>,
    /// FFT learning rate (backbone; the head uses `optim.head_lr`).
    pub fft_lr: LearningRate,
    /// LoRA learning rate.
    pub lora_lr: LearningRate,
    /// SFT learning rate.
    pub sft_lr: LearningRate,
    /// FFA-LoRA learning rate (B only). Left out of the keys at its default.
    #[serde(skip_serializing_if = "LearningRate::is_ffa_default")]
    pub ffa_lora_lr: LearningRate,
    /// FedEx-LoRA learning rate. Left out of the keys at its default.
    #[serde(skip_serializing_if = "LearningRate::is_fedex_default")]
    pub fedex_lora_lr: LearningRate,
    /// LoRA-A² learning rate (A's; B's is `optim.lora_b_lr_ratio` times it). Left out of the keys
    /// at its default.
    #[serde(skip_serializing_if = "LearningRate::is_lora_a2_default")]
    pub lora_a2_lr: LearningRate,
    /// FlexLoRA learning rate. Left out of the keys at its default.
    #[serde(skip_serializing_if = "LearningRate::is_flexlora_default")]
    pub flexlora_lr: LearningRate,
    /// FedSA-LoRA learning rate. Left out of the keys at its default.
    #[serde(skip_serializing_if = "LearningRate::is_fedsa_default")]
    pub fedsa_lora_lr: LearningRate,
    /// SFT's first `stage1.rounds` rounds are Stage 1 itself (same masks, sampling, seeds) when its
    /// rate equals `stage1.lr`: continue from Stage 1's state instead of recomputing them.
    pub sft_from_stage1: bool,
}

impl Default for BaselinesConfig {
    fn default() -> Self {
        Self {
            methods: vec![BaselineMethod::Fft, BaselineMethod::Lora, BaselineMethod::Sft],
            fft_lr: LearningRate::Value(1e-4),
            lora_lr: LearningRate::Value(1e-3),
            sft_lr: LearningRate::Value(1e-3),
            ffa_lora_lr: LearningRate::FFA_DEFAULT,
            fedex_lora_lr: LearningRate::FEDEX_DEFAULT,
            lora_a2_lr: LearningRate::LORA_A2_DEFAULT,
            flexlora_lr: LearningRate::FLEXLORA_DEFAULT,
            fedsa_lora_lr: LearningRate::FEDSA_DEFAULT,
            sft_from_stage1: true,
        }
    }
}

impl BaselinesConfig {
    /// The configured rate of `method`.
    pub fn lr(&self, method: BaselineMethod) -> LearningRate {
        match method {
            BaselineMethod::Fft => self.fft_lr,
            BaselineMethod::Lora => self.lora_lr,
            BaselineMethod::Sft => self.sft_lr,
            BaselineMethod::FfaLora => self.ffa_lora_lr,
            BaselineMethod::FedexLora => self.fedex_lora_lr,
            BaselineMethod::LoraA2 => self.lora_a2_lr,
            BaselineMethod::FlexLora => self.flexlora_lr,
            BaselineMethod::FedsaLora => self.fedsa_lora_lr,
        }
    }
}

/// `[tune]`: the learning-rate grid per method, run on the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuneConfig {
    /// FFT rates to try.
    pub fft: Vec<f64>,
    /// LoRA rates to try (also Stage 2's, with `stage2.lr = "tuned"`).
    pub lora: Vec<f64>,
    /// SFT rates to try (also Stage 1's, with `stage1.lr = "tuned"`).
    pub sft: Vec<f64>,
    /// FFA-LoRA rates to try (left out of the keys when empty).
    #[serde(rename = "ffa-lora", skip_serializing_if = "Vec::is_empty")]
    pub ffa_lora: Vec<f64>,
    /// FedEx-LoRA rates to try (left out of the keys when empty).
    #[serde(rename = "fedex-lora", skip_serializing_if = "Vec::is_empty")]
    pub fedex_lora: Vec<f64>,
    /// LoRA-A² rates to try (left out of the keys when empty).
    #[serde(rename = "lora-a2", skip_serializing_if = "Vec::is_empty")]
    pub lora_a2: Vec<f64>,
    /// FlexLoRA rates to try (left out of the keys when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flexlora: Vec<f64>,
    /// FedSA-LoRA rates to try (left out of the keys when empty).
    #[serde(rename = "fedsa-lora", skip_serializing_if = "Vec::is_empty")]
    pub fedsa_lora: Vec<f64>,
    /// Rounds per grid point (0 = the methods' budget, `stage1.rounds + stage2.rounds`).
    pub rounds: usize,
    /// A point's score: mean validation accuracy over its last this-many evaluated rounds.
    pub last_k: usize,
}

impl Default for TuneConfig {
    fn default() -> Self {
        Self {
            fft: vec![3e-5, 1e-4, 3e-4],
            lora: vec![3e-4, 1e-3, 3e-3],
            sft: vec![3e-4, 1e-3, 3e-3],
            ffa_lora: Vec::new(),
            fedex_lora: Vec::new(),
            lora_a2: Vec::new(),
            flexlora: Vec::new(),
            fedsa_lora: Vec::new(),
            rounds: 0,
            last_k: 3,
        }
    }
}

impl TuneConfig {
    /// The grid of `method`.
    pub fn grid(&self, method: BaselineMethod) -> &[f64] {
        match method {
            BaselineMethod::Fft => &self.fft,
            BaselineMethod::Lora => &self.lora,
            BaselineMethod::Sft => &self.sft,
            BaselineMethod::FfaLora => &self.ffa_lora,
            BaselineMethod::FedexLora => &self.fedex_lora,
            BaselineMethod::LoraA2 => &self.lora_a2,
            BaselineMethod::FlexLora => &self.flexlora,
            BaselineMethod::FedsaLora => &self.fedsa_lora,
        }
    }
}

/// `[privacy]`: DP-FedAvg (McMahan et al., 2018) with an RDP accountant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// `C`: each client's update (all uploaded tensors together) is clipped to this L2 norm
    /// (0, the default: privacy off).
    pub clip_norm: f64,
    /// `σ`: Gaussian noise of standard deviation `σ·C` per coordinate.
    pub noise_multiplier: f64,
    /// When > 0, `σ` is the smallest noise multiplier whose run (every round, at the sampling rate
    /// clients_per_round / clients) the accountant puts at this ε; `noise_multiplier` must be 0.
    pub target_epsilon: f64,
    /// `central` (noise once on the server's sum) or `local` (noise on every upload).
    pub mode: PrivacyMode,
    /// The δ of the accountant's (ε, δ) (0: 1 / partition.clients).
    pub delta: f64,
    /// Draw the noise from the operating system's entropy (a deployment must: seeded noise can be
    /// regenerated, and subtracted, by anyone who holds the config). Off: seeded, reproducible.
    pub secret_noise: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { clip_norm: 0.0, noise_multiplier: 0.0, target_epsilon: 0.0, mode: PrivacyMode::Central, delta: 0.0, secret_noise: false }
    }
}

impl PrivacyConfig {
    /// Privacy is off (no clipping, no noise).
    pub fn is_off(&self) -> bool {
        self.clip_norm == 0.0
    }
}

/// Where DP-FedAvg adds its noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyMode {
    /// On the server's sum of clipped updates (the released model is private).
    Central,
    /// On each client's clipped update (private against the server).
    Local,
}

/// `[report]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Reports go to `<dir>/<run.name>/` (resolved to an absolute path).
    pub dir: PathBuf,
    /// Next to the last round, report the mean accuracy of the last this-many evaluated rounds.
    pub last_k: usize,
    /// Time-to-target aims at this fraction of FFT's mean final accuracy ...
    pub target_fraction: f64,
    /// ... or, when > 0, at this absolute accuracy.
    pub target_accuracy: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("reports"), last_k: 3, target_fraction: 0.95, target_accuracy: 0.0 }
    }
}

macro_rules! display_as_serde_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
display_as_serde_name!(PartitionScheme, Schedule, DecomposeInit, BaselineMethod, StageOneMask, PrivacyMode);

impl Config {
    /// Every learning-rate key set to `"tuned"`, with the method whose tuned rate it takes.
    pub fn tuned_keys(&self) -> Vec<(&'static str, BaselineMethod)> {
        let b = &self.baselines;
        [
            ("stage1.lr", self.stage1.lr, BaselineMethod::Sft),
            ("stage2.lr", self.stage2.lr, BaselineMethod::Lora),
            ("baselines.fft_lr", b.fft_lr, BaselineMethod::Fft),
            ("baselines.lora_lr", b.lora_lr, BaselineMethod::Lora),
            ("baselines.sft_lr", b.sft_lr, BaselineMethod::Sft),
            ("baselines.ffa_lora_lr", b.ffa_lora_lr, BaselineMethod::FfaLora),
            ("baselines.fedex_lora_lr", b.fedex_lora_lr, BaselineMethod::FedexLora),
            ("baselines.lora_a2_lr", b.lora_a2_lr, BaselineMethod::LoraA2),
            ("baselines.flexlora_lr", b.flexlora_lr, BaselineMethod::FlexLora),
            ("baselines.fedsa_lora_lr", b.fedsa_lora_lr, BaselineMethod::FedsaLora),
        ]
        .into_iter()
        .filter(|(_, lr, _)| *lr == LearningRate::Tuned)
        .map(|(k, _, m)| (k, m))
        .collect()
    }

    /// Replaces every `"tuned"` rate with `chosen(method)`.
    pub fn resolve_tuned(&mut self, chosen: impl Fn(BaselineMethod) -> f64) {
        self.tuned_from = self.tuned_keys().into_iter().map(|(k, _)| k.to_string()).collect();
        let set = |lr: &mut LearningRate, m| {
            if *lr == LearningRate::Tuned {
                *lr = LearningRate::Value(chosen(m));
            }
        };
        set(&mut self.stage1.lr, BaselineMethod::Sft);
        set(&mut self.stage2.lr, BaselineMethod::Lora);
        set(&mut self.baselines.fft_lr, BaselineMethod::Fft);
        set(&mut self.baselines.lora_lr, BaselineMethod::Lora);
        set(&mut self.baselines.sft_lr, BaselineMethod::Sft);
        set(&mut self.baselines.ffa_lora_lr, BaselineMethod::FfaLora);
        set(&mut self.baselines.fedex_lora_lr, BaselineMethod::FedexLora);
        set(&mut self.baselines.lora_a2_lr, BaselineMethod::LoraA2);
        set(&mut self.baselines.flexlora_lr, BaselineMethod::FlexLora);
        set(&mut self.baselines.fedsa_lora_lr, BaselineMethod::FedsaLora);
    }

    /// The config of one replicate: `run.seed = seed`, and with `partition.vary_with_seed` a
    /// partition seed mixed from the two.
    /// Idempotent: `cfg.for_seed(a).for_seed(b) == cfg.for_seed(b)` (callers such as status and
    /// export pass a first replicate on to code that takes replicates again).
    pub fn for_seed(&self, seed: u64) -> Config {
        let mut c = self.clone();
        c.run.seed = seed;
        if c.partition.vary_with_seed {
            let base = self.partition_seed_base.unwrap_or(self.partition.seed);
            c.partition_seed_base = Some(base);
            c.partition.seed = base ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        }
        c
    }

    /// The head's rate for a method whose own rate is `method_lr`.
    pub fn head_lr(&self, method_lr: f64) -> f64 {
        if self.optim.head_lr > 0.0 {
            self.optim.head_lr
        } else {
            method_lr
        }
    }
}

#[cfg(test)]
mod tests;

impl Config {
    /// Moves the deprecated LoRA keys (`decompose.rank`, `decompose.lora_alpha`,
    /// `stage2.lora_dropout`) into `[lora]`, with a warning each; both spellings at once, with
    /// different values, is an error naming both.
    pub fn migrate_deprecated(&mut self) -> Result<(), PipelineError> {
        let d = LoraConfig::default();
        move_deprecated(&mut self.decompose.rank, &mut self.lora.r, d.r, "decompose.rank", "lora.r")?;
        move_deprecated(&mut self.decompose.lora_alpha, &mut self.lora.lora_alpha, d.lora_alpha, "decompose.lora_alpha", "lora.lora_alpha")?;
        move_deprecated(&mut self.stage2.lora_dropout, &mut self.lora.lora_dropout, d.lora_dropout, "stage2.lora_dropout", "lora.lora_dropout")
    }
}

/// Moves a deprecated key's value (if given) into its new key, warning; an error when the new key was
/// also set (away from its default) to another value.
fn move_deprecated<T: PartialEq + Copy + std::fmt::Display>(
    old: &mut Option<T>,
    new: &mut T,
    default: T,
    old_key: &str,
    new_key: &str,
) -> Result<(), PipelineError> {
    let Some(v) = old.take() else { return Ok(()) };
    if *new != default && *new != v {
        return Err(PipelineError::config(format!("{old_key} = {v} and {new_key} = {new} disagree: keep {new_key} ({old_key} is deprecated)")));
    }
    tracing::warn!("{old_key} is deprecated: use {new_key} (one [lora] section for every LoRA method)");
    *new = v;
    Ok(())
}
