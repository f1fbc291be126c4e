//! `summary.json`: the machine-readable end result of a run (final metrics per method), which
//! `pipeline compare` checks against a committed baseline and `pipeline sweep` tabulates.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::metrics::Curve;
use crate::targets::{time_to_target, TimeToTarget, TARGET_FRACTIONS};

/// Version of the summary layout; bumped when a field changes meaning.
pub const SUMMARY_SCHEMA: u32 = 1;

/// Final numbers of one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// Last evaluated round (cumulative over SLoRA's stages).
    pub rounds: u32,
    /// Test accuracy after the last round, in [0, 1].
    pub accuracy: f64,
    /// Highest test accuracy over all evaluations.
    pub best_accuracy: f64,
    /// Test loss after the last round.
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
}

/// The whole `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA`] of the writer.
    pub schema: u32,
    /// `run.name` of the run.
    pub run: String,
    /// Per method id (`fft`, `lora`, `sft`, `slora`, ...).
    pub methods: BTreeMap<String, MethodSummary>,
    /// Rounds / seconds / bytes each method needed to reach 95 % and 99 % of FFT's final accuracy.
    pub time_to_target: Vec<TimeToTarget>,
}

impl Summary {
    /// Summarises learning curves; `trainable_params` is keyed by method id.
    pub fn from_curves(run: &str, curves: &[Curve], trainable_params: &BTreeMap<String, u64>) -> Self {
        let methods = curves
            .iter()
            .filter_map(|c| {
                let last = c.last_evaluated()?;
                Some((
                    c.method.clone(),
                    MethodSummary {
                        rounds: last.round,
                        accuracy: last.accuracy,
                        best_accuracy: c.points.iter().map(|p| p.accuracy).fold(f64::NEG_INFINITY, f64::max),
                        loss: last.loss,
                        train_loss: last.train_loss.is_finite().then_some(last.train_loss),
                        bytes_up_per_client: last.bytes_up_per_client,
                        bytes_up_per_client_total: c.points.iter().map(|p| p.bytes_up_per_client).sum(),
                        cum_bytes_up: last.cum_bytes_up,
                        wall_seconds: last.wall_seconds,
                        trainable_params: crate::tables::trainable_for(&c.method, trainable_params).1,
                    },
                ))
            })
            .collect();
        Self {
            schema: SUMMARY_SCHEMA,
            run: run.to_string(),
            methods,
            time_to_target: time_to_target(curves, &TARGET_FRACTIONS),
        }
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
