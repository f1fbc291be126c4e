//! `summary.json`: the machine-readable end result of a run (final metrics per method, means and 95 %
//! intervals over seeds, paired differences, the byte and time audit, time to target): every figure
//! of the report's tables. `pipeline compare` checks it against a committed baseline and
//! `pipeline sweep` tabulates it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::metrics::{Curve, FFT};
use crate::replicates::{mean_ci, paired, seed_figures, PairedDifference, SeedFigures, SeedRun};
use crate::targets::{time_to_target_replicated, Target, TimeToTarget};

/// Version of the summary layout; bumped when a field changes meaning (2: means over seeds, final
/// accuracy on every test row, confidence intervals, paired differences, the byte and time audit).
pub const SUMMARY_SCHEMA: u32 = 2;

/// Final numbers of one method: means over the replicate seeds (one seed: that seed's values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// Last evaluated round (cumulative over SLoRA's stages).
    pub rounds: u32,
    /// Test accuracy after the last round on every test row, in [0, 1] (mean over seeds).
    pub accuracy: f64,
    /// Highest curve accuracy over all evaluations (mean over seeds).
    pub best_accuracy: f64,
    /// Curve test loss after the last round.
    pub loss: f64,
    /// Mean client training loss of the last round (`None` when not recorded).
    pub train_loss: Option<f64>,
    /// Bytes one sampled client uploaded in the last round.
    pub bytes_up_per_client: u64,
    /// Bytes one client uploads over the whole run if sampled every round (sum of per-round uploads).
    pub bytes_up_per_client_total: u64,
    /// Bytes uploaded by all sampled clients over the run.
    pub cum_bytes_up: u64,
    /// Cumulative training + evaluation wall time, seconds (machine-dependent).
    pub wall_seconds: f64,
    /// Trainable parameters (what a client trains and uploads), when the stage recorded it.
    pub trainable_params: Option<u64>,
    /// Seeds behind the means.
    #[serde(default)]
    pub seeds: usize,
    /// Half-width of the 95 % Student-t interval of `accuracy` over seeds (`None`: one seed).
    #[serde(default)]
    pub accuracy_ci95: Option<f64>,
    /// `accuracy` per seed, in seed order.
    #[serde(default)]
    pub accuracy_per_seed: Vec<f64>,
    /// Mean curve accuracy over the last `last_k` evaluated rounds (mean over seeds).
    #[serde(default)]
    pub last_k_accuracy: f64,
    /// Its 95 % half-width over seeds.
    #[serde(default)]
    pub last_k_accuracy_ci95: Option<f64>,
    /// Slope of the curve accuracy over the last `last_k` evaluated rounds, per round (mean over
    /// seeds): how far from flat the curve still is at the end of the budget.
    #[serde(default)]
    pub last_k_slope: f64,
    /// Its 95 % half-width over seeds.
    #[serde(default)]
    pub last_k_slope_ci95: Option<f64>,
    /// Seed-level figures, averaged: bytes split into adapter / head / switch, all-client totals,
    /// client training and server seconds.
    #[serde(default)]
    pub costs: SeedFigures,
    /// The method's learning rate (backbone / adapter), when recorded.
    #[serde(default)]
    pub lr: Option<f64>,
    /// The head's learning rate, when recorded.
    #[serde(default)]
    pub head_lr: Option<f64>,
}

/// Learning rates of one method as the run used them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodRates {
    /// Backbone / adapter rate (SLoRA: Stage 2's).
    pub lr: Option<f64>,
    /// Head rate.
    pub head_lr: Option<f64>,
}

/// How the summary is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOptions {
    /// Mean over the last this-many evaluated rounds.
    pub last_k: usize,
    /// The time-to-target goal.
    pub target: Target,
    /// Per method id, the rates used.
    pub rates: BTreeMap<String, MethodRates>,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        Self { last_k: 3, target: Target::FractionOfFft(0.95), rates: BTreeMap::new() }
    }
}

/// The whole `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA`] of the writer.
    pub schema: u32,
    /// `run.name` of the run.
    pub run: String,
    /// Per method id (`fft`, `lora`, `sft`, `slora`, ...): means over seeds.
    pub methods: BTreeMap<String, MethodSummary>,
    /// Rounds / seconds / bytes each method needed to reach the target.
    pub time_to_target: Vec<TimeToTarget>,
    /// The replicate seeds.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// `last_k` of `last_k_accuracy`.
    #[serde(default)]
    pub last_k: usize,
    /// Paired differences of final accuracy (FFT − LoRA, SLoRA − LoRA, FFT − SLoRA, …) with verdicts.
    #[serde(default)]
    pub paired_differences: Vec<PairedDifference>,
    /// Per seed (as a string), per method: that seed's own figures.
    #[serde(default)]
    pub per_seed: BTreeMap<String, BTreeMap<String, SeedFigures>>,
    /// A personalised method's (FedSA-LoRA's) evaluation on each client's held-out rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<PersonalSummary>,
    /// DP-FedAvg's settings and the accountant's (ε, δ), when the run was private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::privacy::PrivacySummary>,
    /// What `pipeline audit` recovered from each method's recorded uploads (a study's point that
    /// records them; empty otherwise).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub leakage: BTreeMap<String, crate::privacy::MethodLeakage>,
}

/// One seed's personalised evaluation of a method (as its stage measured it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalRun {
    /// Replicate seed.
    pub seed: u64,
    /// Method id.
    pub method: String,
    /// Σ correct / Σ rows of each client's own model on its own held-out rows.
    pub personal_accuracy: f64,
    /// The global model on the same rows.
    pub global_accuracy_same_rows: f64,
}

/// A personalised method over seeds: each client's own model on its own held-out rows, the
/// global model on the same rows, and their paired difference (the personalisation's gain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalSummary {
    /// Method id.
    pub method: String,
    /// Seeds behind the means.
    pub seeds: usize,
    /// Mean personal accuracy, in [0, 1].
    pub personal_accuracy: f64,
    /// Its 95 % half-width (`None`: one seed).
    pub personal_accuracy_ci95: Option<f64>,
    /// Mean accuracy of the global model on the same rows.
    pub global_accuracy_same_rows: f64,
    /// Its 95 % half-width.
    pub global_accuracy_same_rows_ci95: Option<f64>,
    /// Mean of personal − global per seed (pp).
    pub gain_pp: f64,
    /// Its 95 % half-width (pp).
    pub gain_pp_ci95: Option<f64>,
}

/// Per method, the seeds' personalised evaluations summarised (methods in canonical order).
pub fn personal_summaries(runs: &[PersonalRun]) -> Vec<PersonalSummary> {
    let mut methods: Vec<&str> = runs.iter().map(|r| r.method.as_str()).collect();
    methods.sort_by_key(|m| (crate::metrics::method_rank(m), m.to_string()));
    methods.dedup();
    methods
        .into_iter()
        .map(|m| {
            let of: Vec<&PersonalRun> = runs.iter().filter(|r| r.method == m).collect();
            let own = mean_ci(&of.iter().map(|r| r.personal_accuracy).collect::<Vec<_>>());
            let global = mean_ci(&of.iter().map(|r| r.global_accuracy_same_rows).collect::<Vec<_>>());
            let gain = mean_ci(&of.iter().map(|r| 100.0 * (r.personal_accuracy - r.global_accuracy_same_rows)).collect::<Vec<_>>());
            PersonalSummary {
                method: m.to_string(),
                seeds: of.len(),
                personal_accuracy: own.mean,
                personal_accuracy_ci95: own.half_width,
                global_accuracy_same_rows: global.mean,
                global_accuracy_same_rows_ci95: global.half_width,
                gain_pp: gain.mean,
                gain_pp_ci95: gain.half_width,
            }
        })
        .collect()
}

/// The method pairs whose paired differences the report gives, first minus second.
pub const PAIRS: [(&str, &str); 14] = [
    ("fft", "lora"),
    ("slora", "lora"),
    ("fft", "slora"),
    ("slora", "sft"),
    ("ffa-lora", "lora"),
    ("slora", "ffa-lora"),
    ("fedex-lora", "lora"),
    ("slora", "fedex-lora"),
    ("lora-a2", "lora"),
    ("slora", "lora-a2"),
    ("flexlora", "lora"),
    ("slora", "flexlora"),
    ("fedsa-lora", "lora"),
    ("slora", "fedsa-lora"),
];

impl Summary {
    /// Summarises one seed's learning curves; `trainable_params` is keyed by method id.
    pub fn from_curves(run: &str, curves: &[Curve], trainable_params: &BTreeMap<String, u64>) -> Self {
        let runs = [SeedRun { seed: 0, curves: curves.to_vec() }];
        Self::from_replicates(run, &runs, trainable_params, &SummaryOptions::default())
    }

    /// Summarises replicate runs (one per seed).
    pub fn from_replicates(run: &str, runs: &[SeedRun], trainable_params: &BTreeMap<String, u64>, opts: &SummaryOptions) -> Self {
        let mut methods = BTreeMap::new();
        let mut per_seed: BTreeMap<String, BTreeMap<String, SeedFigures>> = BTreeMap::new();
        let mut finals: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        let mut names: Vec<String> = runs.iter().flat_map(|r| r.curves.iter().map(|c| c.method.clone())).collect();
        names.sort_by_key(|m| (crate::metrics::method_rank(m), m.clone()));
        names.dedup();
        for method in &names {
            let mut figs = Vec::new();
            let mut lasts = Vec::new();
            for r in runs {
                let Some(curve) = r.curves.iter().find(|c| &c.method == method) else { continue };
                let Some(f) = seed_figures(curve, opts.last_k) else { continue };
                let last = curve.last_evaluated().cloned().unwrap_or_default();
                finals.entry(method.clone()).or_default().insert(r.seed, f.final_accuracy);
                per_seed.entry(r.seed.to_string()).or_default().insert(method.clone(), f.clone());
                lasts.push((last, curve.points.iter().map(|p| p.bytes_up_per_client).sum::<u64>()));
                figs.push(f);
            }
            if figs.is_empty() {
                continue;
            }
            let acc = mean_ci(&figs.iter().map(|f| f.final_accuracy).collect::<Vec<_>>());
            let last_k = mean_ci(&figs.iter().map(|f| f.last_k_accuracy).collect::<Vec<_>>());
            let slope = mean_ci(&figs.iter().map(|f| f.last_k_slope).collect::<Vec<_>>());
            let mean = |g: &dyn Fn(&SeedFigures) -> f64| figs.iter().map(g).sum::<f64>() / figs.len() as f64;
            let mean_u = |g: &dyn Fn(&SeedFigures) -> u64| (figs.iter().map(g).sum::<u64>() as f64 / figs.len() as f64).round() as u64;
            let first = &lasts[0].0;
            let train_losses: Vec<f64> = lasts.iter().filter_map(|(l, _)| l.train_loss).filter(|v| v.is_finite()).collect();
            let rates = opts.rates.get(method).copied().unwrap_or_default();
            methods.insert(
                method.clone(),
                MethodSummary {
                    rounds: first.round,
                    accuracy: acc.mean,
                    best_accuracy: mean(&|f| f.best_accuracy),
                    loss: mean(&|f| f.loss),
                    train_loss: (!train_losses.is_empty()).then(|| train_losses.iter().sum::<f64>() / train_losses.len() as f64),
                    bytes_up_per_client: first.bytes_up_per_client,
                    bytes_up_per_client_total: lasts[0].1,
                    cum_bytes_up: mean_u(&|f| f.cum_bytes_up),
                    wall_seconds: mean(&|f| f.wall_seconds),
                    trainable_params: crate::metrics::trainable_for(method, trainable_params).1,
                    seeds: figs.len(),
                    accuracy_ci95: acc.half_width,
                    accuracy_per_seed: figs.iter().map(|f| f.final_accuracy).collect(),
                    last_k_accuracy: last_k.mean,
                    last_k_accuracy_ci95: last_k.half_width,
                    last_k_slope: slope.mean,
                    last_k_slope_ci95: slope.half_width,
                    costs: SeedFigures {
                        rounds: first.round,
                        final_accuracy: acc.mean,
                        last_k_accuracy: last_k.mean,
                        last_k_slope: slope.mean,
                        loss: mean(&|f| f.loss),
                        best_accuracy: mean(&|f| f.best_accuracy),
                        up_adapter_per_client: mean_u(&|f| f.up_adapter_per_client),
                        up_head_per_client: mean_u(&|f| f.up_head_per_client),
                        down_adapter_per_client: mean_u(&|f| f.down_adapter_per_client),
                        down_head_per_client: mean_u(&|f| f.down_head_per_client),
                        down_switch_per_client: mean_u(&|f| f.down_switch_per_client),
                        cum_bytes_up: mean_u(&|f| f.cum_bytes_up),
                        cum_bytes_down: mean_u(&|f| f.cum_bytes_down),
                        client_train_seconds: mean(&|f| f.client_train_seconds),
                        server_seconds: mean(&|f| f.server_seconds),
                        wall_seconds: mean(&|f| f.wall_seconds),
                        full_test_mean_accuracy: {
                            let full: Vec<f64> = figs.iter().filter_map(|f| f.full_test_mean_accuracy).collect();
                            (!full.is_empty() && full.len() == figs.len()).then(|| full.iter().sum::<f64>() / full.len() as f64)
                        },
                    },
                    lr: rates.lr,
                    head_lr: rates.head_lr,
                },
            );
        }
        let paired_differences = PAIRS.iter().filter_map(|(a, b)| paired(a, b, &finals)).collect();
        let fft_mean = methods.get(FFT).map(|m| m.accuracy);
        Self {
            schema: SUMMARY_SCHEMA,
            run: run.to_string(),
            methods,
            time_to_target: time_to_target_replicated(runs, &opts.target, fft_mean),
            seeds: runs.iter().map(|r| r.seed).collect(),
            last_k: opts.last_k,
            paired_differences,
            per_seed,
            personal: Vec::new(),
            privacy: None,
            leakage: BTreeMap::new(),
        }
    }

    /// Whether the means come from more than one seed.
    pub fn replicated(&self) -> bool {
        self.seeds.len() > 1
    }
    /// Reads a `summary.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ReportError::Json { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Pretty JSON text (stable key order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("summary serialises")
    }
}
