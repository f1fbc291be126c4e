//! Regression check of a run's `summary.json` against a committed baseline, metric by metric,
//! each with its own tolerance: `|run − baseline| <= abs + rel·|baseline|`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::summary::{MethodSummary, Summary};

/// Allowed deviation of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Absolute slack.
    #[serde(default)]
    pub abs: f64,
    /// Slack relative to the baseline value.
    #[serde(default)]
    pub rel: f64,
}

impl Tolerance {
    /// Whether `run` is within tolerance of `baseline`.
    pub fn allows(&self, run: f64, baseline: f64) -> bool {
        (run - baseline).abs() <= self.abs + self.rel * baseline.abs() + 1e-12
    }
}

/// Tolerances used when a baseline names none: quality metrics get small slack (thread counts and CPU
/// kernels change the last bits), byte and parameter counts must match exactly, wall time is ignored.
pub fn default_tolerances() -> BTreeMap<String, Tolerance> {
    let t = |abs, rel| Tolerance { abs, rel };
    BTreeMap::from([
        ("accuracy".to_string(), t(0.02, 0.0)),
        ("best_accuracy".to_string(), t(0.02, 0.0)),
        ("loss".to_string(), t(0.02, 0.02)),
        ("train_loss".to_string(), t(0.02, 0.02)),
        ("rounds".to_string(), t(0.0, 0.0)),
        ("bytes_up_per_client".to_string(), t(0.0, 0.0)),
        ("bytes_up_per_client_total".to_string(), t(0.0, 0.0)),
        ("cum_bytes_up".to_string(), t(0.0, 0.0)),
        ("trainable_params".to_string(), t(0.0, 0.0)),
        ("last_k_accuracy".to_string(), t(0.02, 0.0)),
        ("cum_bytes_down".to_string(), t(0.0, 0.0)),
        ("bytes_down_switch_per_client".to_string(), t(0.0, 0.0)),
    ])
}

/// A committed baseline: a summary plus the tolerances to check it with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Per metric name (a [`MethodSummary`] field); metrics not listed are not checked.
    pub tolerances: BTreeMap<String, Tolerance>,
    /// The reference run's summary.
    #[serde(flatten)]
    pub summary: Summary,
}

impl Baseline {
    /// A baseline from a run's summary with [`default_tolerances`].
    pub fn from_summary(summary: Summary) -> Self {
        Self { tolerances: default_tolerances(), summary }
    }

    /// Reads a baseline JSON file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        let baseline: Self = serde_json::from_str(&text)
            .map_err(|e| ReportError::Json { path: path.to_path_buf(), message: e.to_string() })?;
        let known = metric_values(&sample_method()).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        if let Some(bad) = baseline.tolerances.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ReportError::Json {
                path: path.to_path_buf(),
                message: format!("tolerances: unknown metric `{bad}` (known: {})", known.join(", ")),
            });
        }
        Ok(baseline)
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("baseline serialises")
    }
}

fn sample_method() -> MethodSummary {
    MethodSummary::default()
}

/// Every comparable metric of a method summary, by field name.
fn metric_values(m: &MethodSummary) -> Vec<(&'static str, Option<f64>)> {
    vec![
        ("rounds", Some(f64::from(m.rounds))),
        ("accuracy", Some(m.accuracy)),
        ("best_accuracy", Some(m.best_accuracy)),
        ("loss", Some(m.loss)),
        ("train_loss", m.train_loss),
        ("bytes_up_per_client", Some(m.bytes_up_per_client as f64)),
        ("bytes_up_per_client_total", Some(m.bytes_up_per_client_total as f64)),
        ("cum_bytes_up", Some(m.cum_bytes_up as f64)),
        ("wall_seconds", Some(m.wall_seconds)),
        ("trainable_params", m.trainable_params.map(|v| v as f64)),
        ("last_k_accuracy", Some(m.last_k_accuracy)),
        ("cum_bytes_down", Some(m.costs.cum_bytes_down as f64)),
        ("bytes_down_switch_per_client", Some(m.costs.down_switch_per_client as f64)),
    ]
}

/// Outcome of one metric check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within tolerance.
    Ok,
    /// Outside tolerance, or present on one side only.
    Drift,
}

/// One compared metric.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// Method id.
    pub method: String,
    /// Metric name.
    pub metric: String,
    /// Baseline value (`None` = not recorded).
    pub baseline: Option<f64>,
    /// Run value (`None` = not recorded).
    pub run: Option<f64>,
    /// Tolerance applied.
    pub tolerance: Tolerance,
    /// Result.
    pub status: Status,
}

/// Result of comparing a run with a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// One row per (method, checked metric) of the baseline.
    pub rows: Vec<CheckRow>,
    /// Baseline methods the run lacks (always drift).
    pub missing_methods: Vec<String>,
    /// Run methods the baseline lacks (reported, not drift).
    pub new_methods: Vec<String>,
}

/// Checks every baseline method and every metric that has a tolerance.
pub fn compare(run: &Summary, baseline: &Baseline) -> Comparison {
    let mut rows = Vec::new();
    let mut missing_methods = Vec::new();
    for (method, base) in &baseline.summary.methods {
        let Some(got) = run.methods.get(method) else {
            missing_methods.push(method.clone());
            continue;
        };
        let got_values: BTreeMap<_, _> = metric_values(got).into_iter().collect();
        for (metric, base_value) in metric_values(base) {
            let Some(&tolerance) = baseline.tolerances.get(metric) else { continue };
            let run_value = got_values[metric];
            let status = match (run_value, base_value) {
                (Some(r), Some(b)) if tolerance.allows(r, b) => Status::Ok,
                (None, None) => Status::Ok,
                _ => Status::Drift,
            };
            rows.push(CheckRow {
                method: method.clone(),
                metric: metric.to_string(),
                baseline: base_value,
                run: run_value,
                tolerance,
                status,
            });
        }
    }
    let new_methods = run.methods.keys().filter(|m| !baseline.summary.methods.contains_key(*m)).cloned().collect();
    Comparison { rows, missing_methods, new_methods }
}

impl Comparison {
    /// True when any metric drifted or a baseline method is missing.
    pub fn has_drift(&self) -> bool {
        !self.missing_methods.is_empty() || self.rows.iter().any(|r| r.status == Status::Drift)
    }

    /// Number of drifted metrics.
    pub fn drift_count(&self) -> usize {
        self.rows.iter().filter(|r| r.status == Status::Drift).count() + self.missing_methods.len()
    }

    /// A fixed-width table of every check, drifted rows marked, followed by a one-line verdict.
    pub fn render_text(&self) -> String {
        let fmt = |v: Option<f64>| match v {
            None => "–".to_string(),
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
            Some(x) => format!("{x:.4}"),
        };
        let mut table: Vec<[String; 7]> = vec![[
            "method".into(),
            "metric".into(),
            "baseline".into(),
            "run".into(),
            "diff".into(),
            "allowed".into(),
            "status".into(),
        ]];
        for r in &self.rows {
            let diff = match (r.run, r.baseline) {
                (Some(a), Some(b)) => {
                    let d = a - b;
                    if d == 0.0 { "0".to_string() } else if d.fract() == 0.0 { format!("{d:+.0}") } else { format!("{d:+.4}") }
                }
                _ => "–".into(),
            };
            let allowed = match r.baseline {
                Some(b) => {
                    let slack = r.tolerance.abs + r.tolerance.rel * b.abs();
                    if slack == 0.0 { "exact".into() } else { format!("±{slack:.4}") }
                }
                None => "–".into(),
            };
            let status = if r.status == Status::Ok { "ok" } else { "DRIFT" };
            table.push([r.method.clone(), r.metric.clone(), fmt(r.baseline), fmt(r.run), diff, allowed, status.into()]);
        }
        let widths: Vec<usize> = (0..7).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for (i, row) in table.iter().enumerate() {
            let marker = if row[6] == "DRIFT" { "> " } else { "  " };
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| if c < 2 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) })
                .collect();
            let _ = writeln!(out, "{marker}{}", line.join("  ").trim_end());
            if i == 0 {
                let _ = writeln!(out, "  {}", "-".repeat(widths.iter().sum::<usize>() + 2 * 6));
            }
        }
        for m in &self.missing_methods {
            let _ = writeln!(out, "> method `{m}` is in the baseline but not in the run: DRIFT");
        }
        for m in &self.new_methods {
            let _ = writeln!(out, "  method `{m}` is in the run but not in the baseline (not checked)");
        }
        let checked = self.rows.len() + self.missing_methods.len();
        let drifted = self.drift_count();
        if self.has_drift() {
            let _ = writeln!(out, "DRIFT: {drifted} of {checked} checks outside tolerance");
        } else {
            let _ = writeln!(out, "OK: {checked} checks within tolerance");
        }
        // The plain closing line CI runners read.
        let _ = writeln!(out, "compare: {} passed, {drifted} failed", checked - drifted);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_absolute_plus_relative() {
        let t = Tolerance { abs: 0.02, rel: 0.1 };
        assert!(t.allows(1.12, 1.0)); // 0.12 <= 0.02 + 0.1
        assert!(!t.allows(1.13, 1.0));
        assert!(t.allows(0.88, 1.0));
        let exact = Tolerance { abs: 0.0, rel: 0.0 };
        assert!(exact.allows(834_512.0, 834_512.0) && !exact.allows(834_513.0, 834_512.0));
    }

    #[test]
    fn unknown_tolerance_metric_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, r#"{"tolerances": {"acuracy": {"abs": 0.1}}, "schema": 1, "run": "x", "methods": {}, "time_to_target": []}"#).unwrap();
        let err = Baseline::read(&path).unwrap_err().to_string();
        assert!(err.contains("unknown metric `acuracy`") && err.contains("b.json"), "{err}");
    }
}
