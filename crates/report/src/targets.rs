//! Time-to-target: how many rounds, wall seconds and uploaded bytes each method needs to reach a
//! fraction (95 %, 99 %) of FFT's final accuracy: the "how much cheaper is it" number of the paper.

use serde::{Deserialize, Serialize};

use crate::metrics::{Curve, FFT};

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
    /// First evaluation at or above the target.
    pub hit: Option<TargetHit>,
}

/// The first point of `curve` whose accuracy is at least `target` (evaluations in round order).
pub fn first_hit(curve: &Curve, target: f64) -> Option<TargetHit> {
    curve.points.iter().find(|p| p.accuracy >= target).map(|p| TargetHit {
        round: p.round,
        wall_seconds: p.wall_seconds,
        cum_bytes_up: p.cum_bytes_up,
    })
}

/// Time-to-target for every curve and every fraction in `fractions`, measured against the final
/// accuracy of the `fft` curve. Empty when there is no FFT curve (no reference to aim at).
pub fn time_to_target(curves: &[Curve], fractions: &[f64]) -> Vec<TimeToTarget> {
    let Some(fft_final) = curves.iter().find(|c| c.method == FFT).and_then(Curve::last_evaluated).map(|r| r.accuracy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for curve in curves {
        for &fraction in fractions {
            let target_accuracy = fraction * fft_final;
            out.push(TimeToTarget {
                method: curve.method.clone(),
                fraction,
                target_accuracy,
                hit: first_hit(curve, target_accuracy),
            });
        }
    }
    out
}
