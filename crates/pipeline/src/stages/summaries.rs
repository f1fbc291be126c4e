//! Typed stage summaries: what each stage's `run` produces, its manifest stores as `summary`, and
//! downstream stages, the report and `inspect` read back, by field rather than by string key.
//!
//! The JSON shape is the one manifests have always held. Every struct reads with defaults for
//! absent fields (`#[serde(default)]`), so an artifact written before a field existed still reads.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::PipelineError;
use crate::store::Artifact;

/// A stage summary: serialises into the manifest, reads back from an artifact.
pub trait StageSummary: Serialize + DeserializeOwned {
    /// The summary as manifest JSON.
    fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a stage summary serialises")
    }

    /// The summary of `artifact` (an error names the artifact when it does not read).
    fn of(artifact: &Artifact) -> Result<Self, PipelineError> {
        serde_json::from_value(artifact.manifest.summary.clone()).map_err(|e| PipelineError::Stage {
            stage: artifact.stage.clone(),
            message: format!("{}: manifest summary does not read: {e}", artifact.dir.display()),
        })
    }
}

/// Rows per split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitCounts {
    /// Train rows.
    pub train: usize,
    /// Test rows.
    pub test: usize,
}

/// What the natural-id partitioner made of its ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NaturalSummary {
    /// The id column.
    pub id_column: String,
    /// Distinct ids among the train rows.
    pub distinct_ids: usize,
    /// The cap (0 = none).
    pub max_clients: usize,
    /// Ids per client (1 unless small ids were merged into it).
    pub ids_per_client: Vec<usize>,
    /// The id each client was made for.
    pub first_id_per_client: Vec<String>,
}

/// `partition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionSummary {
    /// Client shards written.
    pub clients: usize,
    /// Train rows (after subsampling).
    pub train_rows: usize,
    /// Test rows (after subsampling).
    pub test_rows: usize,
    /// Classifier size.
    pub num_labels: usize,
    /// Label names by id.
    pub label_names: Vec<String>,
    /// Rows per client.
    pub rows_per_client: Vec<usize>,
    /// Rows carved out for validation.
    pub validation_rows: usize,
    /// Of `validation_rows`, each client's (`validation.parquet` holds them in client order): a
    /// personalised method measures each client's own model on its own. Empty in partitions
    /// written before it was recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_rows_per_client: Vec<usize>,
    /// `partition.validation_fraction`.
    pub validation_fraction: f64,
    /// Mean per-client label entropy (bits).
    pub mean_label_entropy_bits: f64,
    /// Empty texts per split.
    pub empty_texts: SplitCounts,
    /// Truncated texts per split.
    pub truncated: SplitCounts,
    /// Tokens per split.
    pub tokens: SplitCounts,
    /// The scheme's name.
    pub scheme: String,
    /// Natural ids only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub natural: Option<NaturalSummary>,
}

/// A federated run's end (every federated stage and baseline method).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSummary {
    /// Rounds run (round 0 excluded).
    pub rounds: usize,
    /// The last round's accuracy on every test row (or on the curve's rows).
    pub final_accuracy: Option<f64>,
    /// The last evaluated round's accuracy on the curve's rows.
    pub final_curve_accuracy: Option<f64>,
    /// The last evaluated round's loss.
    pub final_loss: Option<f64>,
    /// Round 0's accuracy.
    pub initial_accuracy: Option<f64>,
    /// Trainable scalars.
    pub trainable_params: usize,
    /// The last round's upload per client.
    pub bytes_up_per_client: Option<u64>,
    /// The last round's download per client.
    pub bytes_down_per_client: Option<u64>,
    /// Upload over all clients.
    pub cum_bytes_up: Option<u64>,
    /// Wall seconds.
    pub wall_seconds: Option<f64>,
    /// The round this run resumed after, if it did.
    pub resumed_from_round: Option<u32>,
}

/// One adapted matrix of Stage 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatrixSummary {
    /// `[rows, cols]`.
    pub shape: Vec<usize>,
    /// Entries trained.
    pub nnz: usize,
    /// nnz / entries.
    pub density: f64,
    /// ‖ΔW‖ at the end of Stage 1.
    pub delta_norm: f64,
    /// Share of rows the mask touches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_covered: Option<f64>,
    /// Share of columns the mask touches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cols_covered: Option<f64>,
    /// A learned mask: share of its entries the seed's random mask also has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_with_random: Option<f64>,
    /// A learned mask: the random mask's row coverage, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_rows_covered: Option<f64>,
    /// A learned mask: the random mask's column coverage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_cols_covered: Option<f64>,
}

/// How Stage 1's mask was chosen, and what the mask round cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskSummary {
    /// `random` or `federated-importance`.
    pub kind: String,
    /// The scoring clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<usize>>,
    /// Batches each scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<usize>,
    /// Upload of one scoring client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up_per_client: Option<u64>,
    /// The largest upload of one matrix by one client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_upload: Option<u64>,
    /// The mask's download, to every client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down_per_client: Option<u64>,
    /// Client seconds, summed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
    /// Server seconds (merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_seconds: Option<f64>,
}

impl Default for MaskSummary {
    fn default() -> Self {
        Self {
            kind: "random".into(),
            clients: None,
            batches: None,
            bytes_up_per_client: None,
            largest_upload: None,
            bytes_down_per_client: None,
            train_seconds: None,
            server_seconds: None,
        }
    }
}

impl MaskSummary {
    /// Whether the federation chose the mask.
    pub fn is_learned(&self) -> bool {
        self.kind == "federated-importance"
    }
}

/// `stage1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stage1Summary {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// `slora-stage1`.
    pub method: String,
    /// `stage1.density`.
    pub density: f64,
    /// Backbone rate.
    pub lr: f64,
    /// Head rate.
    pub head_lr: f64,
    /// Matrices with a sparse delta.
    pub adapted_matrices: usize,
    /// Their entries.
    pub adapted_params: usize,
    /// Entries trained.
    pub nnz_total: usize,
    /// The head's bytes.
    pub head_bytes: u64,
    /// Per matrix.
    pub matrices: BTreeMap<String, MatrixSummary>,
    /// Head tensors initialised from the seed.
    pub head_initialised: Vec<String>,
    /// Classifier size.
    pub num_labels: usize,
    /// The mask.
    pub mask: MaskSummary,
}

/// One matrix's decomposition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModuleSpectrum {
    /// Σ of the kept σ² / Σ σ².
    pub energy_kept: f64,
    /// The largest singular values (up to the rank).
    pub top_singular_values: Vec<f64>,
}

/// The switch check: logits before and after the switch on a few test rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchCheck {
    /// Largest |Δ logit|.
    pub max_abs_logit_change: f64,
    /// Largest |logit| before the switch, the tolerance's scale (absent from manifests older than
    /// it, whose tolerance was an absolute 1e-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_logit: Option<f64>,
    /// Rows checked.
    pub rows: usize,
    /// The tolerance applied: `SWITCH_TOLERANCE` × max(1, `max_abs_logit`).
    pub tolerance: f64,
    /// Within the tolerance.
    pub passed: bool,
    /// Whether a failure stops the stage (the `svd` init).
    pub enforced: bool,
}

/// `decompose`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecomposeSummary {
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub lora_alpha: f64,
    /// alpha / rank.
    pub scale: f64,
    /// `decompose.init`.
    pub init: String,
    /// Matrices decomposed.
    pub matrices: usize,
    /// Server seconds of the SVDs.
    pub svd_seconds: f64,
    /// Mean energy kept.
    pub energy_kept_mean: f64,
    /// Least energy kept.
    pub energy_kept_min: f64,
    /// Most energy kept.
    pub energy_kept_max: f64,
    /// Per matrix.
    pub modules: BTreeMap<String, ModuleSpectrum>,
    /// The switch check.
    pub switch_check: SwitchCheck,
}

/// What SLoRA's switch costs one client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchSummary {
    /// Charged: the sparse ΔW values.
    pub charged_bytes_per_client: u64,
    /// What is charged, in words.
    pub charged: String,
    /// The dense alternative.
    pub dense_correction_bytes_per_client: u64,
    /// Clients that receive it.
    pub clients: usize,
}

/// `stage2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stage2Summary {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// `slora-stage2`.
    pub method: String,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub lora_alpha: f64,
    /// Stage 1's last round.
    pub round_offset: u32,
    /// Adapter rate.
    pub lr: f64,
    /// Head rate.
    pub head_lr: f64,
    /// The switch's cost.
    pub switch: SwitchSummary,
    /// The corrected base the adapter sits on.
    pub adapter_base: String,
}

/// One baseline method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineRun {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Backbone or adapter rate.
    pub lr: f64,
    /// Head rate.
    pub head_lr: f64,
    /// SFT only: its first rounds are Stage 1's.
    pub continued_from_stage1: bool,
    /// FedSA-LoRA only: each client's own model, and the global one, on each client's held-out rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<slora_federation::PersonalEvaluation>,
}

/// `baselines`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselinesSummary {
    /// Rounds per method.
    pub rounds: usize,
    /// By method name.
    pub methods: BTreeMap<String, BaselineRun>,
}

/// One tuned rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TunePoint {
    /// The rate.
    pub lr: f64,
    /// Mean validation accuracy of the last k rounds (`None`: diverged).
    pub score: Option<f64>,
    /// The last round's validation accuracy.
    pub final_accuracy: Option<f64>,
    /// Whether the run diverged.
    pub diverged: bool,
}

/// One method's grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TunedMethod {
    /// Every rate of the grid.
    pub points: Vec<TunePoint>,
    /// The best-scoring rate.
    pub chosen: f64,
}

/// `tune`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuneSummary {
    /// Rounds per grid point.
    pub rounds: usize,
    /// Rounds the score averages.
    pub last_k: usize,
    /// The seed tuned on.
    pub seed: u64,
    /// Validation rows.
    pub validation_rows: usize,
    /// By method name.
    pub methods: BTreeMap<String, TunedMethod>,
}

/// One reported method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportedMethod {
    /// Mean final accuracy.
    pub accuracy: f64,
    /// Rounds.
    pub rounds: u32,
}

/// `report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportSummary {
    /// `run.name`.
    pub run_name: String,
    /// Figure ids.
    pub figures: Vec<String>,
    /// By method name.
    pub methods: BTreeMap<String, ReportedMethod>,
}

impl StageSummary for PartitionSummary {}
impl StageSummary for Stage1Summary {}
impl StageSummary for DecomposeSummary {}
impl StageSummary for Stage2Summary {}
impl StageSummary for BaselinesSummary {}
impl StageSummary for TuneSummary {}
impl StageSummary for ReportSummary {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest from before a field existed reads with its default; a summary round-trips.
    #[test]
    fn summaries_read_old_manifests_and_round_trip() {
        let old = serde_json::json!({
            "rounds": 8, "final_accuracy": null, "trainable_params": 10, "method": "slora-stage1", "density": 0.01,
            "nnz_total": 5, "adapted_params": 500,
            "matrices": { "m": { "shape": [2, 3], "nnz": 1, "density": 0.16, "delta_norm": 0.5 } },
        });
        let s: Stage1Summary = serde_json::from_value(old).unwrap();
        assert_eq!((s.run.rounds, s.nnz_total, s.run.trainable_params), (8, 5, 10));
        assert_eq!(s.mask.kind, "random", "no mask field: the paper's random mask");
        assert!(!s.mask.is_learned());
        assert_eq!(s.matrices["m"].rows_covered, None);
        let back: Stage1Summary = serde_json::from_value(s.to_value()).unwrap();
        assert_eq!(back, s);
        let v = s.to_value();
        assert_eq!(v["rounds"], 8, "the run's fields sit at the top level, as they always have");
        assert!(v["mask"].as_object().is_some_and(|m| !m.contains_key("clients")), "a random mask records no mask round");
    }
}
