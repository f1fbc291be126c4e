//! The metrics table every federated stage writes (`metrics.parquet`: one
//! [`slora_metrics::RoundMetrics`] per row), and the per-method learning curves the report draws
//! from it.
//!
//! SLoRA is reported as one method: its Stage-1 rows followed by its Stage-2 rows (whose first row is
//! the evaluation right after the switch, at Stage 1's last round). When Stage 2 counts its rounds,
//! bytes or seconds from zero again, they are shifted by Stage 1's totals so the combined curve is
//! cumulative over the whole run, like every baseline's.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;
pub use slora_metrics::RoundMetrics;

use crate::error::{ReportError, Result};

/// `method` value of SLoRA's sparse phase.
pub const SLORA_STAGE1: &str = "slora-stage1";
/// `method` value of SLoRA's LoRA phase.
pub const SLORA_STAGE2: &str = "slora-stage2";
/// Name of the combined SLoRA curve (Stage 1 then Stage 2).
pub const SLORA: &str = "slora";
/// The reference method for time-to-target and gap-to-FFT.
pub const FFT: &str = "fft";

/// A figure the report computes with: NaN where the row has none (not evaluated, not trained), which
/// the plots, the means and polars' null handling skip.
pub fn or_nan(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

/// The other way: a computed figure as a row holds it, `None` where it is not finite (a mean over
/// no evaluation).
pub fn measured(value: f64) -> Option<f64> {
    Some(value).filter(|v| v.is_finite())
}

/// All metric rows of a run (any number of methods, any order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// The rows as read.
    pub rows: Vec<RoundMetrics>,
}

impl Metrics {
    /// Reads and concatenates `metrics.parquet` files (one per federated stage).
    pub fn read_parquet_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let mut rows = Vec::new();
        for path in paths {
            rows.extend(read_metric_rows(path.as_ref())?);
        }
        Ok(Self { rows })
    }

    /// Methods present, in the report's canonical order (FFT, LoRA, SFT, SLoRA phases, then others).
    pub fn methods(&self) -> Vec<String> {
        let mut names: Vec<String> = self.rows.iter().map(|r| r.method.clone()).collect();
        names.sort_by_key(|m| (method_rank(m), m.clone()));
        names.dedup();
        names
    }

    /// The metrics as a polars table with the ARCHITECTURE.md column names and types.
    pub fn to_dataframe(&self) -> Result<DataFrame> {
        rows_to_dataframe(&self.rows)
    }

    /// One learning curve per reported method, sorted by round; the two SLoRA phases become one curve.
    pub fn curves(&self) -> Result<Vec<Curve>> {
        let mut by_method: BTreeMap<String, Vec<RoundMetrics>> = BTreeMap::new();
        for row in &self.rows {
            by_method.entry(row.method.clone()).or_default().push(row.clone());
        }
        for rows in by_method.values_mut() {
            rows.sort_by_key(|r| r.round);
            if let Some(w) = rows.windows(2).find(|w| w[0].round == w[1].round) {
                return Err(ReportError::Invalid(format!(
                    "method `{}` has two rows for round {}",
                    w[0].method, w[0].round
                )));
            }
        }
        let stage1 = by_method.remove(SLORA_STAGE1);
        let stage2 = by_method.remove(SLORA_STAGE2);
        let mut curves: Vec<Curve> = by_method
            .into_iter()
            .map(|(method, points)| Curve { method, points, switch_round: None })
            .collect();
        match (stage1, stage2) {
            (Some(s1), Some(s2)) => curves.push(combine_slora(s1, s2)),
            (Some(s1), None) => curves.push(Curve { method: SLORA_STAGE1.into(), points: s1, switch_round: None }),
            (None, Some(s2)) => curves.push(Curve { method: SLORA_STAGE2.into(), points: s2, switch_round: None }),
            (None, None) => {}
        }
        curves.sort_by_key(|c| (method_rank(&c.method), c.method.clone()));
        Ok(curves)
    }
}

/// A method's rows over the whole run, rounds ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Method id (`slora` for the combined SLoRA curve).
    pub method: String,
    /// Rows in round order; for SLoRA rounds, bytes and seconds are cumulative over both phases.
    pub points: Vec<RoundMetrics>,
    /// For SLoRA: the round at which Stage 2 took over (= Stage-1 rounds).
    pub switch_round: Option<u32>,
}

impl Curve {
    /// The last row.
    pub fn last(&self) -> Option<&RoundMetrics> {
        self.points.last()
    }

    /// The last row with an evaluation.
    pub fn last_evaluated(&self) -> Option<&RoundMetrics> {
        self.points.iter().rev().find(|p| p.accuracy.is_some())
    }

    /// Rows with an evaluation, in round order.
    pub fn evaluated(&self) -> impl Iterator<Item = &RoundMetrics> {
        self.points.iter().filter(|p| p.accuracy.is_some())
    }

    /// Human-readable method name for legends and tables.
    pub fn label(&self) -> String {
        method_label(&self.method)
    }
}

/// Legend / table name of a method id.
pub fn method_label(method: &str) -> String {
    match method {
        "fft" => "FFT".into(),
        "lora" => "LoRA".into(),
        "sft" => "SFT (sparse)".into(),
        "ffa-lora" => "FFA-LoRA".into(),
        "fedex-lora" => "FedEx-LoRA".into(),
        "lora-a2" => "LoRA-A²".into(),
        "flexlora" => "FlexLoRA".into(),
        "fedsa-lora" => "FedSA-LoRA".into(),
        SLORA => "SLoRA".into(),
        SLORA_STAGE1 => "SLoRA stage 1".into(),
        SLORA_STAGE2 => "SLoRA stage 2".into(),
        other => other.to_string(),
    }
}

/// Canonical ordering of methods in tables and legends.
pub fn method_rank(method: &str) -> u8 {
    match method {
        "fft" => 0,
        "lora" => 1,
        "ffa-lora" => 2,
        "fedex-lora" => 3,
        "lora-a2" => 4,
        "flexlora" => 5,
        "fedsa-lora" => 6,
        "sft" => 7,
        SLORA => 8,
        SLORA_STAGE1 => 9,
        SLORA_STAGE2 => 10,
        _ => 11,
    }
}

/// Stage 1 then Stage 2 as one curve; Stage 2's counters are shifted when they restart from zero.
fn combine_slora(stage1: Vec<RoundMetrics>, stage2: Vec<RoundMetrics>) -> Curve {
    let last1 = stage1.last().cloned();
    let first2 = stage2.first().cloned();
    let (round_shift, bytes_shift, wall_shift) = match (&last1, &first2) {
        (Some(l), Some(f)) => (
            // Stage 2 continuing Stage 1's numbering starts at Stage 1's last round (the post-switch
            // evaluation); a restart starts below it.
            l.round.saturating_sub(f.round),
            if f.cum_bytes_up < l.cum_bytes_up { l.cum_bytes_up } else { 0 },
            if f.wall_seconds < l.wall_seconds { l.wall_seconds } else { 0.0 },
        ),
        _ => (0, 0, 0.0),
    };
    let mut points = stage1;
    // Stage 1's end is not SLoRA's result (Stage 2 goes on from it): where its last round was
    // measured on every test row (no separate full test set), that pass must not count among
    // SLoRA's last rounds on every row.
    for p in &mut points {
        p.full_test_rows = 0;
        p.full_test_accuracy = None;
        p.full_test_loss = None;
    }
    points.extend(stage2.into_iter().map(|mut r| {
        r.round += round_shift;
        r.cum_bytes_up += bytes_shift;
        r.wall_seconds += wall_shift;
        r.method = SLORA.into();
        r
    }));
    for p in &mut points {
        p.method = SLORA.into();
    }
    Curve { method: SLORA.into(), points, switch_round: last1.map(|l| l.round) }
}

fn read_metric_rows(path: &Path) -> Result<Vec<RoundMetrics>> {
    Ok(slora_metrics::read_parquet(path)?)
}

/// Builds the polars table of `rows` (column names and dtypes as in `metrics.parquet`).
pub fn rows_to_dataframe(rows: &[RoundMetrics]) -> Result<DataFrame> {
    let col_f = |name: &str, f: fn(&RoundMetrics) -> f64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    // NaN (not evaluated / not trained) becomes null, which polars' aggregations skip.
    let col_opt = |name: &str, f: fn(&RoundMetrics) -> Option<f64>| {
        Column::new(name.into(), rows.iter().map(|r| f(r).filter(|v| v.is_finite())).collect::<Vec<_>>())
    };
    let col_u64 = |name: &str, f: fn(&RoundMetrics) -> u64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let col_u32 = |name: &str, f: fn(&RoundMetrics) -> u32| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let df = DataFrame::new_infer_height(vec![
        Column::new("method".into(), rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>()),
        col_u32("round", |r| r.round),
        col_opt("accuracy", |r| r.accuracy),
        col_opt("loss", |r| r.loss),
        col_opt("train_loss", |r| r.train_loss),
        col_u64("bytes_up_per_client", |r| r.bytes_up_per_client),
        col_u64("bytes_down_per_client", |r| r.bytes_down_per_client),
        col_u64("cum_bytes_up", |r| r.cum_bytes_up),
        col_f("wall_seconds", |r| r.wall_seconds),
        col_u32("clients", |r| r.clients),
    ])?;
    Ok(df)
}

/// Trainable parameters of `method` in its first and last phase: SLoRA trains the sparse set in
/// Stage 1 (`slora-stage1`) and LoRA in Stage 2 (`slora-stage2`); other methods have one phase.
pub fn trainable_for(method: &str, trainable: &BTreeMap<String, u64>) -> (Option<u64>, Option<u64>) {
    if method == SLORA {
        let last = trainable.get(SLORA).or_else(|| trainable.get(SLORA_STAGE2)).copied();
        let first = trainable.get(SLORA_STAGE1).copied().or(last);
        (first, last)
    } else {
        let v = trainable.get(method).copied();
        (v, v)
    }
}
