//! Time-to-target: how many rounds, client training seconds, server seconds and uploaded bytes each
//! method needs to reach a target accuracy (a fraction of FFT's mean final accuracy, or an absolute
//! value): the "how much cheaper is it" number of the paper. Training time here is the clients' local
//! training only (no evaluation), the paper's notion; wall time is kept for reference.

use crate::metrics::or_nan;
use serde::{Deserialize, Serialize};

use crate::metrics::{Curve, FFT};
use crate::replicates::SeedRun;

/// What a method must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// This fraction of FFT's mean final accuracy.
    FractionOfFft(f64),
    /// This accuracy.
    Absolute(f64),
}

/// Fractions of FFT's final accuracy the report asks every method to reach.
pub const TARGET_FRACTIONS: [f64; 2] = [0.95, 0.99];

/// When a method first reached one target (the first evaluated round with accuracy >= target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHit {
    /// Round of the first evaluation at or above the target (cumulative over SLoRA's two stages).
    pub round: u32,
    /// Cumulative wall seconds at that round.
    pub wall_seconds: f64,
    /// Cumulative bytes uploaded by all clients at that round.
    pub cum_bytes_up: u64,
    /// Clients' local training seconds up to that round (summed over clients; no evaluation).
    #[serde(default)]
    pub client_train_seconds: f64,
    /// Server seconds (aggregation, decomposition) up to that round.
    #[serde(default)]
    pub server_seconds: f64,
    /// Benchmarked client compute up to that round: the local steps of the rounds up to there ×
    /// the step time measured on a quiet machine (`pipeline study`'s cost plan). Unlike
    /// `client_train_seconds`, nothing else running on the machine inflates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark_seconds: Option<f64>,
}

/// One method's time to one target; `hit` is `None` when the method never reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeToTarget {
    /// Method id.
    pub method: String,
    /// Fraction of FFT's final accuracy (e.g. 0.95).
    pub fraction: f64,
    /// The accuracy threshold = fraction x FFT's final accuracy.
    pub target_accuracy: f64,
    /// First evaluation at or above the target (over seeds: the mean over the seeds that reached it).
    pub hit: Option<TargetHit>,
    /// Seeds that reached the target.
    #[serde(default)]
    pub reached: usize,
    /// Seeds run.
    #[serde(default)]
    pub seeds: usize,
    /// Per seed (seed order of the runs): its own first hit, `None` when that seed never reached it.
    #[serde(default)]
    pub per_seed: Vec<(u64, Option<TargetHit>)>,
}

/// The first point of `curve` whose accuracy is at least `target` (evaluations in round order).
pub fn first_hit(curve: &Curve, target: f64) -> Option<TargetHit> {
    let (mut train, mut server) = (0.0, 0.0);
    for p in &curve.points {
        train += p.train_seconds;
        server += p.server_seconds;
        if or_nan(p.accuracy) >= target {
            return Some(TargetHit {
                round: p.round,
                wall_seconds: p.wall_seconds,
                cum_bytes_up: p.cum_bytes_up,
                client_train_seconds: train,
                server_seconds: server,
                benchmark_seconds: None,
            });
        }
    }
    None
}

/// Time-to-`target` of every method over replicate runs: per seed the first hit on that seed's
/// curve; the reported hit is the mean over the seeds that reached it (rounds rounded up).
/// `fft_mean_final` is FFT's mean final accuracy (needed for [`Target::FractionOfFft`]; without it
/// the result is empty).
pub fn time_to_target_replicated(runs: &[SeedRun], target: &Target, fft_mean_final: Option<f64>) -> Vec<TimeToTarget> {
    let (fraction, target_accuracy) = match (*target, fft_mean_final) {
        (Target::FractionOfFft(f), Some(fft)) => (f, f * fft),
        (Target::FractionOfFft(_), None) => return Vec::new(),
        (Target::Absolute(a), _) => (0.0, a),
    };
    let mut methods: Vec<String> = runs.iter().flat_map(|r| r.curves.iter().map(|c| c.method.clone())).collect();
    methods.sort_by_key(|m| (crate::metrics::method_rank(m), m.clone()));
    methods.dedup();
    methods
        .into_iter()
        .map(|method| {
            let curves: Vec<(u64, &Curve)> =
                runs.iter().filter_map(|r| r.curves.iter().find(|c| c.method == method).map(|c| (r.seed, c))).collect();
            let per_seed: Vec<(u64, Option<TargetHit>)> = curves.iter().map(|(s, c)| (*s, first_hit(c, target_accuracy))).collect();
            let hits: Vec<TargetHit> = per_seed.iter().filter_map(|(_, h)| h.clone()).collect();
            let n = hits.len() as f64;
            let hit = (!hits.is_empty()).then(|| TargetHit {
                round: (hits.iter().map(|h| f64::from(h.round)).sum::<f64>() / n).ceil() as u32,
                wall_seconds: hits.iter().map(|h| h.wall_seconds).sum::<f64>() / n,
                cum_bytes_up: (hits.iter().map(|h| h.cum_bytes_up as f64).sum::<f64>() / n).round() as u64,
                client_train_seconds: hits.iter().map(|h| h.client_train_seconds).sum::<f64>() / n,
                server_seconds: hits.iter().map(|h| h.server_seconds).sum::<f64>() / n,
                benchmark_seconds: mean_if_all(hits.iter().map(|h| h.benchmark_seconds)),
            });
            TimeToTarget { method, fraction, target_accuracy, hit, reached: hits.len(), seeds: curves.len(), per_seed }
        })
        .collect()
}

/// The mean of values that are all present (`None` when any is missing or there are none).
pub fn mean_if_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = values.collect();
    v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// Time-to-target for every curve and every fraction in `fractions`, measured against the final
/// accuracy of the `fft` curve. Empty when there is no FFT curve (no reference to aim at).
pub fn time_to_target(curves: &[Curve], fractions: &[f64]) -> Vec<TimeToTarget> {
    let Some(fft_final) = curves.iter().find(|c| c.method == FFT).and_then(Curve::last_evaluated).map(|r| or_nan(r.accuracy)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for curve in curves {
        for &fraction in fractions {
            let target_accuracy = fraction * fft_final;
            let hit = first_hit(curve, target_accuracy);
            let reached = usize::from(hit.is_some());
            out.push(TimeToTarget {
                method: curve.method.clone(),
                fraction,
                target_accuracy,
                hit: hit.clone(),
                reached,
                seeds: 1,
                per_seed: vec![(0, hit)],
            });
        }
    }
    out
}
