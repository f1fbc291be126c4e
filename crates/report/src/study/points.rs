//! What a study reads off its points: per-seed accuracies (by the point's [`Statistic`]), the
//! differences paired by seed that both the verdicts and the tables quote, which points the claims
//! are about, and which methods ran.

use std::collections::BTreeMap;

use crate::metrics::method_rank;
use crate::replicates::{mean_ci, Interval};

use super::schema::{Statistic, StudyPoint};

/// LoRA's method id.
pub(super) const LORA: &str = "lora";

/// Per-seed final accuracy of `method` at a point.
pub(super) fn finals(point: &StudyPoint, method: &str) -> BTreeMap<u64, f64> {
    point
        .summary
        .per_seed
        .iter()
        .filter_map(|(seed, m)| {
            let f = m.get(method)?;
            let v = match point.statistic {
                Statistic::Final => f.final_accuracy,
                Statistic::LastKFull => f.full_test_mean_accuracy.unwrap_or(f.final_accuracy),
            };
            Some((seed.parse().ok()?, v))
        })
        .collect()
}

/// Per-seed `a − b` at a point (seeds both ran).
pub(super) fn differences(point: &StudyPoint, a: &str, b: &str) -> BTreeMap<u64, f64> {
    let (fa, fb) = (finals(point, a), finals(point, b));
    fa.iter().filter_map(|(s, va)| Some((*s, va - fb.get(s)?))).collect()
}

/// Mean and interval of `a − b` at a point, in percentage points.
pub fn paired_pp(point: &StudyPoint, a: &str, b: &str) -> Interval {
    let d: Vec<f64> = differences(point, a, b).values().map(|v| 100.0 * v).collect();
    mean_ci(&d)
}

pub(super) fn fmt_interval(i: &Interval) -> String {
    match i.bounds() {
        Some((lo, hi)) => format!("{:+.2} pp [{:+.2}, {:+.2}]", i.mean, lo, hi),
        None if i.n == 0 => "–".into(),
        None => format!("{:+.2} pp (one seed)", i.mean),
    }
}

/// The points the claims are about, in order (extreme points left out).
pub(super) fn regular(points: &[StudyPoint]) -> Vec<&StudyPoint> {
    points.iter().filter(|p| !p.extreme).collect()
}

/// The point claims 2 and 3 are judged at.
pub fn claim_point<'a>(points: &'a [StudyPoint], label: Option<&str>) -> Option<&'a StudyPoint> {
    match label {
        Some(l) => points.iter().find(|p| p.label == l),
        None => regular(points).last().copied(),
    }
}

/// Per seed, `method` at `b` minus `method` at `a` (pp), for the seeds both ran.
pub(super) fn across_points(a: &StudyPoint, b: &StudyPoint, method: &str) -> Interval {
    let (fa, fb) = (finals(a, method), finals(b, method));
    let d: Vec<f64> = fb.iter().filter_map(|(s, v)| Some(100.0 * (v - fa.get(s)?))).collect();
    mean_ci(&d)
}

/// `method` at point `a` − at point `b`, paired by seed (pp).
pub fn across_points_pp(a: &StudyPoint, b: &StudyPoint, method: &str) -> Interval {
    let (fa, fb) = (finals(a, method), finals(b, method));
    let d: Vec<f64> = fa.iter().filter_map(|(s, va)| Some(100.0 * (va - fb.get(s)?))).collect();
    mean_ci(&d)
}

/// Methods present at any point, canonical order.
pub(super) fn study_methods(points: &[StudyPoint]) -> Vec<String> {
    let mut methods: Vec<String> = points.iter().flat_map(|p| p.summary.methods.keys().cloned()).collect();
    methods.sort_by_key(|m| (method_rank(m), m.clone()));
    methods.dedup();
    methods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::fixtures::point;

    #[test]
    fn last_k_full_statistic_judges_on_the_mean_of_the_full_rounds() {
        let mut p = point("p", &[("fft", &[0.70, 0.72, 0.71]), ("lora", &[0.70, 0.72, 0.71])], &[]);
        for m in p.summary.per_seed.values_mut() {
            m.get_mut("lora").unwrap().full_test_mean_accuracy = Some(0.60);
            m.get_mut("fft").unwrap().full_test_mean_accuracy = Some(0.65);
        }
        assert_eq!(paired_pp(&p, "fft", "lora").mean, 0.0);
        p.statistic = Statistic::LastKFull;
        assert!((paired_pp(&p, "fft", "lora").mean - 5.0).abs() < 1e-9);
    }
}
