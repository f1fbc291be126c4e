//! Statistics over replicate seeds: per-method figures of one seed, mean ± 95 % confidence intervals
//! (Student t over seeds), paired differences between methods (paired by seed) with a verdict, and
//! mean learning curves with a band.
//!
//! A single seed gives means without intervals: the report then says so and shows no ±.

use crate::metrics::or_nan;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::metrics::{method_label, Curve};

/// One seed's learning curves.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRun {
    /// `run.seed` of the replicate.
    pub seed: u64,
    /// Its curves (SLoRA's two stages combined).
    pub curves: Vec<Curve>,
}

/// Mean of a sample and the half-width of its two-sided 95 % Student-t interval (`None` below 2
/// values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Sample size.
    pub n: usize,
    /// Sample mean.
    pub mean: f64,
    /// t₀.₉₇₅,ₙ₋₁ · s / √n; `None` for n < 2.
    pub half_width: Option<f64>,
}

impl Interval {
    /// Lower and upper ends (`None` for n < 2).
    pub fn bounds(&self) -> Option<(f64, f64)> {
        self.half_width.map(|h| (self.mean - h, self.mean + h))
    }

    /// `12.34 ± 0.56` in percent points of a fraction (`12.34` alone for one seed).
    pub fn percent(&self) -> String {
        match self.half_width {
            Some(h) => format!("{:.2} ± {:.2}", 100.0 * self.mean, 100.0 * h),
            None => format!("{:.2}", 100.0 * self.mean),
        }
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom.
pub fn t_975(df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64).map(|t| t.inverse_cdf(0.975)).unwrap_or(f64::NAN)
}

/// Mean and 95 % t interval of `values`.
pub fn mean_ci(values: &[f64]) -> Interval {
    let n = values.len();
    let mean = if n == 0 { f64::NAN } else { values.iter().sum::<f64>() / n as f64 };
    let half_width = (n >= 2).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t_975(n - 1) * (var / n as f64).sqrt()
    });
    Interval { n, mean, half_width }
}

/// What one seed's run of one method cost and reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedFigures {
    /// Last round.
    pub rounds: u32,
    /// Accuracy after the last round on every test row (the curve's when the run had no full-test
    /// evaluation).
    pub final_accuracy: f64,
    /// Mean curve accuracy over the last `k` evaluated rounds.
    pub last_k_accuracy: f64,
    /// Mean accuracy over the rounds measured on every test row (the last
    /// `federation.full_test_last_k`), when any was.
    #[serde(default)]
    pub full_test_mean_accuracy: Option<f64>,
    /// Least-squares slope of the curve accuracy over the last `k` evaluated rounds, per round (0
    /// below two rounds): near 0 when the curve has flattened by the end of the budget.
    #[serde(default)]
    pub last_k_slope: f64,
    /// Test loss after the last round (curve rows).
    pub loss: f64,
    /// Best curve accuracy.
    pub best_accuracy: f64,
    /// One client's upload if sampled every round: adapter part (for FFT: the whole backbone).
    pub up_adapter_per_client: u64,
    /// ... and the head part.
    pub up_head_per_client: u64,
    /// One client's download if sampled every round, one-off payloads included: adapter part.
    pub down_adapter_per_client: u64,
    /// ... the head part.
    pub down_head_per_client: u64,
    /// ... and the one-off payload (SLoRA's switch).
    pub down_switch_per_client: u64,
    /// Upload over all clients.
    pub cum_bytes_up: u64,
    /// Download over all clients (the switch payload sent to every client included).
    pub cum_bytes_down: u64,
    /// Local training seconds over all rounds and clients (no evaluation).
    pub client_train_seconds: f64,
    /// Server seconds: aggregation, and SLoRA's decomposition.
    pub server_seconds: f64,
    /// Wall time, training and evaluation.
    pub wall_seconds: f64,
}

/// The figures of `curve`, with the last-`k` mean over its evaluated rounds.
pub fn seed_figures(curve: &Curve, k: usize) -> Option<SeedFigures> {
    let last = curve.last_evaluated()?;
    let evaluated: Vec<f64> = curve.evaluated().filter(|p| p.round > 0 || curve.points.len() == 1).map(|p| or_nan(p.accuracy)).collect();
    let tail = &evaluated[evaluated.len().saturating_sub(k.max(1))..];
    let trained = curve.points.iter().filter(|p| p.clients > 0);
    let mut f = SeedFigures {
        rounds: last.round,
        final_accuracy: or_nan(last.final_accuracy()),
        last_k_accuracy: if tail.is_empty() { or_nan(last.accuracy) } else { tail.iter().sum::<f64>() / tail.len() as f64 },
        last_k_slope: {
            let rounds: Vec<(f64, f64)> = curve.evaluated().filter(|p| p.round > 0).map(|p| (f64::from(p.round), or_nan(p.accuracy))).collect();
            // The switch round is evaluated twice (end of Stage 1, after the switch): keep the later.
            let mut dedup: Vec<(f64, f64)> = Vec::new();
            for (r, a) in rounds {
                match dedup.last_mut() {
                    Some(l) if l.0 == r => l.1 = a,
                    _ => dedup.push((r, a)),
                }
            }
            slope(&dedup[dedup.len().saturating_sub(k.max(2))..])
        },
        loss: or_nan(last.loss),
        best_accuracy: curve.evaluated().map(|p| or_nan(p.accuracy)).fold(f64::NEG_INFINITY, f64::max),
        cum_bytes_up: last.cum_bytes_up,
        cum_bytes_down: curve.last().map_or(0, |p| p.cum_bytes_down),
        wall_seconds: last.wall_seconds,
        full_test_mean_accuracy: {
            let full: Vec<f64> =
                curve.points.iter().filter(|p| p.full_test_rows > 0).filter_map(|p| p.full_test_accuracy.filter(|a| a.is_finite())).collect();
            (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
        },
        ..Default::default()
    };
    for p in trained {
        f.up_head_per_client += p.bytes_up_head_per_client;
        f.up_adapter_per_client += p.bytes_up_per_client - p.bytes_up_head_per_client.min(p.bytes_up_per_client);
        f.down_head_per_client += p.bytes_down_head_per_client;
        f.down_switch_per_client += p.bytes_down_switch_per_client;
        f.down_adapter_per_client +=
            p.bytes_down_per_client.saturating_sub(p.bytes_down_head_per_client + p.bytes_down_switch_per_client);
    }
    for p in &curve.points {
        f.client_train_seconds += p.train_seconds;
        f.server_seconds += p.server_seconds;
    }
    Some(f)
}

/// Least-squares slope of `y` on `x` (0 for fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx
}

/// A paired comparison of two methods over the seeds both ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// The first method (difference = a − b).
    pub a: String,
    /// The second method.
    pub b: String,
    /// Seeds paired.
    pub seeds: Vec<u64>,
    /// Per-seed a − b of the final accuracy.
    pub differences: Vec<f64>,
    /// Mean difference and its 95 % interval.
    pub interval: Interval,
    /// Whether the interval excludes 0.
    pub significant: bool,
    /// One sentence for the report.
    pub verdict: String,
}

/// The verdict sentence for a paired difference.
pub fn verdict(a: &str, b: &str, interval: &Interval) -> (bool, String) {
    let (la, lb) = (method_label(a), method_label(b));
    let diff = format!("{:+.2} pp", 100.0 * interval.mean);
    match interval.bounds() {
        None => (false, format!("{la} − {lb}: {diff} with one seed: no confidence interval, so no verdict")),
        Some((lo, hi)) => {
            let ci = format!("95 % CI [{:+.2}, {:+.2}] pp over {} seeds", 100.0 * lo, 100.0 * hi, interval.n);
            if lo > 0.0 {
                (true, format!("{la} beats {lb}: {diff}, {ci} excludes 0"))
            } else if hi < 0.0 {
                (true, format!("{lb} beats {la}: {la} − {lb} = {diff}, {ci} excludes 0"))
            } else {
                (false, format!("{la} − {lb}: {diff}, {ci}: no significant difference at this budget"))
            }
        }
    }
}

/// The paired difference of `a` − `b` in `values` (method → seed → final accuracy); `None` when the
/// two share no seed.
pub fn paired(a: &str, b: &str, values: &BTreeMap<String, BTreeMap<u64, f64>>) -> Option<PairedDifference> {
    let (va, vb) = (values.get(a)?, values.get(b)?);
    let seeds: Vec<u64> = va.keys().filter(|s| vb.contains_key(s)).copied().collect();
    if seeds.is_empty() {
        return None;
    }
    let differences: Vec<f64> = seeds.iter().map(|s| va[s] - vb[s]).collect();
    let interval = mean_ci(&differences);
    let (significant, verdict) = verdict(a, b, &interval);
    Some(PairedDifference { a: a.into(), b: b.into(), seeds, differences, interval, significant, verdict })
}

/// The mean curve of one method over seeds: per round that every seed evaluated, the mean accuracy
/// and its 95 % interval bounds (equal to the mean for one seed).
pub fn mean_curve(runs: &[SeedRun], method: &str) -> Vec<(u32, Interval)> {
    mean_curve_of(runs, method, |p| or_nan(p.accuracy))
}

/// [`mean_curve`] of any per-round value of the evaluated rows (accuracy, loss).
pub fn mean_curve_of(runs: &[SeedRun], method: &str, value: impl Fn(&crate::metrics::RoundMetrics) -> f64) -> Vec<(u32, Interval)> {
    let mut by_round: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    let mut present = 0;
    for run in runs {
        if let Some(c) = run.curves.iter().find(|c| c.method == method) {
            present += 1;
            // SLoRA's curve evaluates its switch round twice (end of Stage 1, right after the switch):
            // the later evaluation stands for the round.
            let per_round: BTreeMap<u32, f64> = c.evaluated().map(|p| (p.round, value(p))).collect();
            for (round, acc) in per_round {
                by_round.entry(round).or_default().push(acc);
            }
        }
    }
    by_round.into_iter().filter(|(_, v)| v.len() == present).map(|(r, v)| (r, mean_ci(&v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_table() {
        // Two-sided 95 % critical values from any t table.
        for (df, t) in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)] {
            assert!((t_975(df) - t).abs() < 1e-3, "df {df}: {}", t_975(df));
        }
    }

    #[test]
    fn slope_is_least_squares() {
        assert!((slope(&[(1.0, 0.2), (2.0, 0.3), (3.0, 0.4)]) - 0.1).abs() < 1e-12);
        assert!((slope(&[(8.0, 0.50), (9.0, 0.53), (10.0, 0.50)]) - 0.0).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 0.5)]), 0.0);
    }

    #[test]
    fn interval_and_verdicts() {
        let i = mean_ci(&[0.30, 0.34]);
        assert!((i.mean - 0.32).abs() < 1e-12);
        // s = 0.02·√2, se = 0.02, half-width = 12.706 · 0.02.
        assert!((i.half_width.unwrap() - 12.7062 * 0.02).abs() < 1e-4);
        assert_eq!(mean_ci(&[0.5]).half_width, None);
        let mut v: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        v.insert("fft".into(), [(1, 0.40), (2, 0.42), (3, 0.41)].into());
        v.insert("lora".into(), [(1, 0.30), (2, 0.31), (3, 0.305)].into());
        v.insert("sft".into(), [(1, 0.35), (2, 0.27), (3, 0.31)].into());
        let d = paired("fft", "lora", &v).unwrap();
        assert!(d.significant && d.verdict.starts_with("FFT beats LoRA"), "{}", d.verdict);
        let d = paired("lora", "fft", &v).unwrap();
        assert!(d.significant && d.verdict.starts_with("FFT beats LoRA"), "{}", d.verdict);
        let d = paired("sft", "lora", &v).unwrap();
        assert!(!d.significant && d.verdict.contains("no significant difference"), "{}", d.verdict);
        v.insert("one".into(), [(1, 0.5)].into());
        let d = paired("one", "lora", &v).unwrap();
        assert!(!d.significant && d.verdict.contains("one seed"), "{}", d.verdict);
        assert!(paired("fft", "missing", &v).is_none());
    }
}
